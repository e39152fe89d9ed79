"""Time ReFINe epochs (train, similarity refinement, evaluation) against the published design.

    python -m bench.bench_epoch --data_dir dataset --dataset ML-100K --out bench/ml100k.json
    python -m bench.bench_epoch --synthetic amazon-book --impls sparse --epochs 1 --t 1   # scale run

Implementations (--impls, run interleaved in one process, order alternating per epoch, so
machine load hits all of them alike): `published` is bench/baseline.py; `dense` and `sparse`
are main.py's own training.train_bpr_epoch and evaluate with that --sampler. Each epoch is timed as
weights (the epoch's W: clone or refinement), train (all batches) and eval (validation ranking).
Epochs >= --t refine W by item similarity. Ratios are published / ours on the median epoch.
Peak memory: the process's peak RSS on CPU, read after each phase (run one implementation alone
to attribute it),
on GPU per implementation: what its state holds (torch.cuda.memory_allocated after building it)
plus the largest torch.cuda.max_memory_allocated rise during one of its epochs.
"""
import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch

import cli
import entry
import metrics
import sampler
import splits
import training
from bench import synthetic
from bench.baseline import PublishedDesign
from catalog import default_data_dir
from model import LightGCN
from utils import atomic_write

IMPLS = ("published", "dense", "sparse")


class FixedWeights:
    """A sampler stand-in whose base() is a given epoch's weights: training.train_bpr_epoch then
    trains on weights refined (and timed) outside it."""

    def __init__(self, weights):
        self.weights = weights

    def base(self):
        return self.weights


class OursDesign:
    """main.py's model, sampler and loop functions with one --sampler (config.sampler)."""

    def __init__(self, data, config: training.TrainConfig, test_batch_size: int):
        self.data, self.config, self.test_batch_size = data, config, test_batch_size
        self.model = LightGCN(data.num_users + data.num_items, config.embedding_dim, config.layers,
                              data.graph_edge_index())
        self.model.to(data.train_pos.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.negative_sampler = sampler.build_negative_sampler(
            config.sampler, data.num_users, data.num_items, data.train_pos, data.train_neg, config.real_neg_samp_prob,
            s=config.s, r=config.r, q=config.q, p=config.p)
        self.exclude = data.train_interactions()

    def epoch_weights(self, refine: bool):
        if not refine:
            return self.negative_sampler.base()
        with torch.no_grad():
            item_emb = self.model.propagate_embeddings()[self.data.num_users:]
        return self.negative_sampler.refine(item_emb)

    def train_batches(self, weights) -> float:
        no_refine = dataclasses.replace(self.config, t=float("inf"))
        return training.train_bpr_epoch(self.model, self.optimizer, self.data, FixedWeights(weights), 1, no_refine)

    def evaluate(self, ground_truth, ks):
        return metrics.evaluate(self.model, self.data, ground_truth, self.exclude, ks, self.test_batch_size)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib():
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / 2**20


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_data(opts):
    if opts.synthetic:
        data = synthetic.generate(opts.synthetic, opts.scale, opts.seed)
        name = f"synthetic {opts.synthetic} x{opts.scale:g}"
    else:
        data = splits.load_splits(opts.data_dir, opts.dataset, True)
        name = opts.dataset
    return name, data


def build(impl, data, config: training.TrainConfig, test_batch_size: int):
    if impl == "published":
        return PublishedDesign(data, config.embedding_dim, config.layers, config.learning_rate,
                               config.real_neg_samp_prob, config.s, config.r, config.q, config.p, config.batch_size,
                               test_batch_size)
    return OursDesign(data, dataclasses.replace(config, sampler=impl), test_batch_size)


def time_epoch(design, epoch, opts, device):
    """Seconds of the epoch's weights, training and evaluation; the final loss."""
    times = {}
    sync(device)
    start = time.perf_counter()
    weights = design.epoch_weights(refine=epoch >= opts.t)
    sync(device)
    times["weights"] = time.perf_counter() - start
    times["peak_rss_mib_after_weights"] = peak_rss_mib()
    start = time.perf_counter()
    loss = design.train_batches(weights)
    sync(device)
    times["train"] = time.perf_counter() - start
    times["peak_rss_mib_after_train"] = peak_rss_mib()
    del weights
    start = time.perf_counter()
    design.evaluate(design.data.valid, opts.top_k)
    sync(device)
    times["eval"] = time.perf_counter() - start
    times["peak_rss_mib_after_eval"] = peak_rss_mib()
    return times, loss


def summarize(records, impls, t):
    """Median seconds per phase per implementation; epochs before t and from t apart."""
    summary = {}
    for impl in impls:
        rows = [r for r in records if r["impl"] == impl]
        plain = [r for r in rows if r["epoch"] < t] or rows
        refined = [r for r in rows if r["epoch"] >= t]
        timings = {"train": statistics.median(r["train"] for r in plain),
                   "eval": statistics.median(r["eval"] for r in plain),
                   "epoch": statistics.median(r["weights"] + r["train"] + r["eval"] for r in plain)}
        if refined:
            timings["refine"] = statistics.median(r["weights"] for r in refined)
            timings["epoch_refined"] = statistics.median(r["weights"] + r["train"] + r["eval"] for r in refined)
        summary[impl] = timings
    return summary


def parse_args(argv):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--synthetic", choices=sorted(synthetic.PRESETS), help="a generated graph of this size")
    parser.add_argument("--data_dir", default=default_data_dir())
    parser.add_argument("--dataset", default="ML-100K")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink a synthetic preset (users, items, edges)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impls", default="published,dense",
                        help=f"comma-separated, from {', '.join(IMPLS)}; the first is the ratios' reference")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--t", type=int, default=3, help="epochs >= t refine W (published default 50)")
    parser.add_argument("--r", type=int, default=None, help="default: the preset's, else 100")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (set explicitly; printed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    opts = parser.parse_args(argv)
    opts.impls = opts.impls.split(",")
    unknown = [impl for impl in opts.impls if impl not in IMPLS]
    if unknown:
        parser.error(f"unknown --impls {','.join(unknown)} (choose from {', '.join(IMPLS)})")
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, cpus {os.cpu_count()}")

    start = time.perf_counter()
    name, data = load_data(opts)
    data = data.to(device)
    if opts.r is None:  # the preset's r, at most num_items - 1 on shrunk graphs
        opts.r = min(synthetic.PRESETS[opts.synthetic].r if opts.synthetic else 100, data.num_items - 1)
    config = training.TrainConfig(r=opts.r, t=opts.t)
    defaults = cli.build_parser()  # main.py's evaluation: the published cut-offs and batch of users
    opts.top_k, test_batch_size = defaults.get_default("top_k"), defaults.get_default("test_batch_size")
    print(f"{name}: {data.num_users} users x {data.num_items} items, {data.train_pos.size(1)} train positives, "
          f"{data.train_neg.size(1)} confirmed negatives, r {opts.r} ({time.perf_counter() - start:.1f} s to load)")

    # GPU memory per implementation: what its built state holds (resident) plus the most an epoch
    # allocates on top of everything already allocated (the other implementations' state included).
    designs, setup, gpu_resident, gpu_epoch_extra = {}, {}, {}, {}
    for impl in opts.impls:
        torch.manual_seed(opts.seed)
        allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        start = time.perf_counter()
        designs[impl] = build(impl, data, config, test_batch_size)
        sync(device)
        setup[impl] = time.perf_counter() - start
        if device.type == "cuda":
            gpu_resident[impl] = (torch.cuda.memory_allocated(device) - allocated) / 2**20
        gpu_epoch_extra[impl] = 0.0

    records = []
    for epoch in range(1, opts.epochs + 1):
        order = opts.impls if epoch % 2 else opts.impls[::-1]
        for impl in order:
            if device.type == "cuda":
                allocated = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            times, loss = time_epoch(designs[impl], epoch, opts, device)
            if device.type == "cuda":
                extra = (torch.cuda.max_memory_allocated(device) - allocated) / 2**20
                gpu_epoch_extra[impl] = max(gpu_epoch_extra[impl], extra)
            records.append({"impl": impl, "epoch": epoch, "loss": loss, **times})
            print(f"epoch {epoch} {impl:>9}: weights {times['weights']:8.3f} s  train {times['train']:8.3f} s  "
                  f"eval {times['eval']:7.3f} s  loss {loss:.4f}  peak RSS after weights/train/eval "
                  f"{times['peak_rss_mib_after_weights']:.0f}/{times['peak_rss_mib_after_train']:.0f}/"
                  f"{times['peak_rss_mib_after_eval']:.0f} MiB", flush=True)

    summary = summarize(records, opts.impls, opts.t)
    reference = opts.impls[0]
    print(f"\nmedian seconds (epochs < t: weights+train+eval; refined: epochs >= t); ratio = {reference} / impl")
    ratios = {}
    for impl, timings in summary.items():
        ratios[impl] = {phase: summary[reference][phase] / value for phase, value in timings.items()
                        if phase in summary[reference] and value > 0}
        cells = "  ".join(f"{phase} {value:.3f} s (x{ratios[impl].get(phase, float('nan')):.1f})"
                          for phase, value in timings.items())
        print(f"{impl:>9}: {cells}")
    load_after = os.getloadavg()
    memory = {"peak_rss_mib": peak_rss_mib(), "rss_mib_now": current_rss_mib()}
    if device.type == "cuda":
        memory["cuda_resident_mib"], memory["cuda_epoch_extra_mib"] = gpu_resident, gpu_epoch_extra
        memory["cuda_total_mib"] = {impl: gpu_resident[impl] + gpu_epoch_extra[impl] for impl in opts.impls}
    print(f"peak RSS {memory['peak_rss_mib']:.0f} MiB (whole process)"
          + ("; CUDA MiB per impl, resident + epoch peak: "
             + ", ".join(f"{impl} {gpu_resident[impl]:.0f} + {gpu_epoch_extra[impl]:.0f}" for impl in opts.impls)
             if device.type == "cuda" else "")
          + f"; load average now {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")

    result = {"dataset": name, "num_users": data.num_users, "num_items": data.num_items,
              "train_positives": data.train_pos.size(1), "confirmed_negatives": data.train_neg.size(1),
              "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "loadavg_before": load_before, "loadavg_after": load_after, "epochs": opts.epochs, "t": opts.t,
              "r": opts.r, "setup_s": setup, "records": records, "median_s": summary, "ratio_vs_" + reference: ratios,
              "memory": memory}
    if opts.out:
        with atomic_write(opts.out) as handle:
            json.dump(result, handle, indent=1)
        print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(entry.run_script(main, entry.Stop("nothing was saved: rerun it")))
