"""What main.py's per-epoch writes cost against an epoch: the training state and the log file, before
(state written and log rewritten after every epoch) and after (state snapshot every epoch, written at
new bests, the last epoch and every --save_every_s seconds; log appended).

    python -m bench.bench_saving --data_dir dataset --dataset ML-100K --threads 1
    python -m bench.bench_saving --synthetic ml-100k --threads 1     # no data needed

One process: a few real epochs (training + validation, main.py's functions) give the epoch time; then
each write is timed --repeats times (medians). The log is replayed from a real ML-100K log
(results4comparison/ReFINe_ML-100K.out): its text up to each epoch, rewritten whole per epoch (before)
or appended (after); its share of new-best epochs (`Save:` lines) sets how often the state is still
written. Prints the machine, threads and load average, and the shares of the epoch.
"""
import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import checkpoint
import main
import metrics
import training
from utils import EarlyStopping, RunLog, atomic_write

ROOT = Path(__file__).resolve().parents[1]

LOG = ROOT / "results4comparison" / "ReFINe_ML-100K.out"


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_blocks(text):
    """The log as (header, [each epoch's text]) split before each `\\nEpoch: `."""
    pieces = re.split(r"(?=\nEpoch: \d+)", text)
    return pieces[0], pieces[1:]


def main_(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--dataset", default="ML-100K")
    parser.add_argument("--synthetic", default=None, help="a bench/synthetic.py preset instead of --data_dir")
    parser.add_argument("--epochs", type=int, default=3, help="real epochs timed (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file of the numbers")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    load_before = os.getloadavg()
    if opts.synthetic:
        from bench import synthetic
        data, name = synthetic.generate(opts.synthetic, scale=1.0, seed=0), opts.synthetic
    else:
        import splits
        data, name = splits.load_splits(opts.data_dir, opts.dataset, True), opts.dataset
    args = main.build_parser().parse_args(["--dataset", name, "--device", "cpu"])  # as the state records them
    config = training.TrainConfig()
    torch.manual_seed(0)
    model, negatives, train_epoch = training.build_model(config, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    early_stopping = EarlyStopping(args.early_stopping_step)
    exclude = data.train_interactions()
    epoch_seconds = []
    for epoch in range(1, opts.epochs + 2):
        start = time.perf_counter()
        loss = train_epoch(model, optimizer, data, negatives, epoch, config)
        results = metrics.evaluate(model, data, data.valid, exclude, args.top_k, args.test_batch_size)
        early_stopping.update(epoch, results[-1][1], results)
        if epoch > 1:
            epoch_seconds.append(time.perf_counter() - start)
    epoch_s = statistics.median(epoch_seconds)

    text = LOG.read_text()
    header, blocks = epoch_blocks(text)
    bests = sum("\nSave: " in block for block in blocks) / len(blocks)
    history = [{"epoch": i, "loss": loss, "log": block} for i, block in enumerate(blocks[:200], 1)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)

        def state():
            return checkpoint.training_state(model, optimizer, len(history), early_stopping, history, 1.0, args,
                                             {"a": "b"}, torch.device("cpu"))
        write_state = median_seconds(lambda: checkpoint.save(state(), folder / "s.last.pt"), opts.repeats)
        snapshot = median_seconds(lambda: checkpoint.snapshot(state()), opts.repeats)

        # The log of a whole run, replayed: before, each epoch rewrote the whole text so far; after, appended.
        def rewrite_all():
            so_far = header
            for block in blocks:
                so_far += block
                with atomic_write(folder / "old.out") as handle:
                    handle.write(so_far)

        def append_all():
            log = RunLog(None, folder / "new.out")
            log.write(header)
            for block in blocks:
                log.write(block)
                log.save()
            log.close()
        rewrite = median_seconds(rewrite_all, 3) / len(blocks)
        append = median_seconds(append_all, 3) / len(blocks)
        assert (folder / "old.out").read_bytes() == (folder / "new.out").read_bytes()  # the same file

    before = write_state + rewrite
    after_writes = bests + epoch_s / main.DEFAULT_SAVE_EVERY_S  # state writes per epoch, ML-100K's rate of bests
    after = snapshot + after_writes * write_state + append
    result = {"data": name, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": opts.threads,
              "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0],
              "torch": torch.__version__, "epoch_seconds": epoch_s, "state_write_seconds": write_state,
              "state_snapshot_seconds": snapshot, "log_rewrite_seconds_per_epoch": rewrite,
              "log_append_seconds_per_epoch": append, "new_best_share": bests,
              "before_seconds_per_epoch": before, "after_seconds_per_epoch": after,
              "before_share_of_epoch": before / (epoch_s + before), "after_share_of_epoch": after / (epoch_s + after),
              "ratio_before_over_after": before / after}
    print(f"{name}, {result['machine']}, torch {torch.__version__}, {opts.threads} thread(s), load average "
          f"{load_before[0]:.1f} before, {result['load_average_after']:.1f} after")
    print(f"epoch (train + validation, median of {opts.epochs}): {epoch_s:.3f} s")
    print(f"state: write {write_state * 1e3:.2f} ms, snapshot {snapshot * 1e3:.2f} ms (medians of {opts.repeats}); "
          f"log per epoch over a {len(blocks)}-epoch run: rewrite {rewrite * 1e3:.3f} ms, append {append * 1e3:.3f} ms")
    print(f"before: {before * 1e3:.2f} ms per epoch ({result['before_share_of_epoch']:.2%} of the epoch); "
          f"after: {after * 1e3:.2f} ms ({result['after_share_of_epoch']:.2%}; state written at "
          f"{after_writes:.1%} of epochs: new bests {bests:.1%} of the published-size run, plus one per "
          f"{main.DEFAULT_SAVE_EVERY_S:g} s); ratio {before / after:.2f}x")
    for seconds in (0.1, 1.0):
        b = write_state + rewrite
        a = snapshot + (bests + seconds / main.DEFAULT_SAVE_EVERY_S) * write_state + append
        print(f"  for a {seconds:g} s epoch (e.g. a GPU's): before {b / (seconds + b):.2%}, "
              f"after {a / (seconds + a):.2%}")
    if opts.out:
        Path(opts.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
