"""The measuring steps of bench/gpu_check.sh, one subcommand each; every step prints one JSON object.

    python -m bench.gpu_check versions
    python -m bench.gpu_check equivalence --device cuda     # a short CPU-against-GPU run
    python -m bench.gpu_check product --device cuda
    python -m bench.gpu_check epochs --model refine_plus --data_dir bench/data --dataset ML-100K --device cuda
    python -m bench.gpu_check summary STEP_DIR OUT/summary.json     # gathers the steps' JSON

bench/gpu_check.sh runs them with time limits and rewrites the summary after each; see bench/README.md.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PUBLISHED_A6000_SECONDS = 183.93  # `Training completed in` of the published ML-100K log (RTX A6000)
PUBLISHED_TEST_AT_20 = {"recall": 0.4296, "ndcg": 0.3661}


def emit(result: dict) -> int:
    print(json.dumps(result, indent=1))
    return 0


def synchronize(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions(opts) -> int:
    import torch
    import torch_geometric
    result = {"python": sys.version.split()[0], "torch": torch.__version__,
              "torch_geometric": torch_geometric.__version__, "cuda_build": torch.version.cuda,
              "cuda_available": torch.cuda.is_available(), "gpus": []}
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        result["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                               "multiprocessors": props.multi_processor_count})
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        result["driver"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        result["driver"] = None
    return emit(result)


def equivalence(opts) -> int:
    """A short CPU-against-device run on whatever torch is installed: the toy data's ReFINe model built
    from one seed on both, three Adam steps on one fixed batch (fixed negatives: CUDA draws other random
    numbers), then the validation metrics; losses and weights to 1e-5, metrics to 1e-3 (near-ties may
    swap ranks)."""
    import torch

    from bench import host_syncs
    import metrics
    import training
    from model import bpr_loss
    device = torch.device(opts.device)
    runs = {}
    for on in (torch.device("cpu"), device):
        data = host_syncs.toy_data(on)
        config = training.TrainConfig(r=5, s=2, t=1, embedding_dim=16, layers=2)
        torch.manual_seed(0)
        model = training.build_model(config, data)[0].to(on)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        generator = torch.Generator().manual_seed(1)
        users, items = data.train_pos[:, :256]
        negatives = torch.randint(0, data.num_items, (users.numel(),), generator=generator).to(on)
        pairs = torch.stack([torch.cat([users, users]), torch.cat([items, negatives]) + data.num_users])
        losses = []
        for _ in range(3):
            optimizer.zero_grad()
            positive, negative = model.score_pairs(pairs).chunk(2)
            loss = bpr_loss(positive, negative, model.embedding.weight, pairs)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        validation = metrics.evaluate(model, data, data.valid, data.train_interactions(), [5, 10], 8192)
        runs[on] = (torch.tensor(losses), model.embedding.weight.detach().cpu(), torch.tensor(validation))
    (cpu_loss, cpu_weight, cpu_metrics), (loss, weight, validation) = runs[torch.device("cpu")], runs[device]
    result = {"device": str(device), "torch": torch.__version__,
              "max_abs_diff_loss": float((loss - cpu_loss).abs().max()),
              "max_abs_diff_weights": float((weight - cpu_weight).abs().max()),
              "max_abs_diff_metrics": float((validation - cpu_metrics).abs().max())}
    result["equal"] = (result["max_abs_diff_loss"] <= 1e-5 and result["max_abs_diff_weights"] <= 1e-5
                       and result["max_abs_diff_metrics"] <= 1e-3)
    emit(result)
    return 0 if result["equal"] else 1


def product(opts) -> int:
    """The normalised-adjacency product and its gradient on the device against the CPU (to 1e-5),
    and whether two device runs give the same bits."""
    import torch

    import model
    device = torch.device(opts.device)
    generator = torch.Generator().manual_seed(0)
    num_users, num_items, num_edges = opts.users, opts.items, opts.edges
    users = torch.randint(0, num_users, (num_edges,), generator=generator)
    items = torch.randint(0, num_items, (num_edges,), generator=generator) + num_users
    edge_index = torch.cat([torch.stack([users, items]), torch.stack([items, users])], dim=1)
    x = torch.randn(num_users + num_items, 64, generator=generator)

    def run(on):
        lightgcn = model.LightGCN(num_users + num_items, 64, 4, edge_index.to(on)).to(on)
        with torch.no_grad():
            lightgcn.embedding.weight.copy_(x)
        out = lightgcn.propagate_embeddings()
        (out * out).sum().backward()
        return out.detach().cpu(), lightgcn.embedding.weight.grad.cpu()

    cpu_out, cpu_grad = run(torch.device("cpu"))
    (out_a, grad_a), (out_b, grad_b) = run(device), run(device)
    return emit({"device": str(device), "nodes": num_users + num_items, "edges": 2 * num_edges,
                 "max_abs_diff_forward": float((out_a - cpu_out).abs().max()),
                 "max_abs_diff_gradient": float((grad_a - cpu_grad).abs().max()),
                 "equal_to_1e-5": bool(torch.allclose(out_a, cpu_out, atol=1e-5)
                                       and torch.allclose(grad_a, cpu_grad, atol=1e-5, rtol=1e-5)),
                 "two_runs_bit_identical": bool(torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b))})


def syncs(opts) -> int:
    import torch

    from bench import host_syncs
    device = torch.device(opts.device)
    counter = host_syncs.CudaSyncCounter if device.type == "cuda" else host_syncs.HostReadCounter
    data = host_syncs.toy_data(device)
    cases = [tuple(case.split("/")) for case in opts.cases.split(",")] if opts.cases else host_syncs.CASES
    result = {"device": str(device), "counted": counter.__name__, "per_batch": {}, "per_epoch": {}}
    for model_name, mode in cases:
        per_batch, per_epoch = host_syncs.reads_per_batch(model_name, mode, data, counter)
        result["per_batch"][f"{model_name}/{mode}"] = per_batch
        result["per_epoch"][f"{model_name}/{mode}"] = per_epoch
    return emit(result)


def run_summary(opts) -> int:
    """What the full run's log and test.json say (the run may have been stopped by its time limit)."""
    log = Path(opts.log).read_text() if Path(opts.log).is_file() else ""
    result = {"epochs_run": len(re.findall(r"^Epoch: \d+", log, flags=re.M)), "wall_seconds": opts.wall,
              "finished": Path(opts.test_json).is_file(), "published_a6000_train_seconds": PUBLISHED_A6000_SECONDS,
              "published_test_at_20": PUBLISHED_TEST_AT_20}
    device = re.search(r"^device: (.+)$", log, flags=re.M)
    result["device"] = device.group(1) if device else None
    stopped = re.search(r"^Early stopping at epoch (\d+)", log, flags=re.M)
    result["best_epoch"] = int(stopped.group(1)) if stopped else None
    if result["finished"]:
        test = json.loads(Path(opts.test_json).read_text())
        result["train_seconds"] = test["train_seconds"]
        result["test_at_20"] = {name: test["test"].get("20", {}).get(name) for name in ("recall", "ndcg")}
        result["speedup_vs_published_a6000"] = PUBLISHED_A6000_SECONDS / test["train_seconds"]
    return emit(result)


def load_data(opts):
    import splits
    from bench import synthetic
    if opts.synthetic:
        return synthetic.generate(opts.synthetic, scale=opts.scale, seed=0), opts.synthetic
    return splits.load_splits(opts.data_dir, opts.dataset, True, encode_negatives=opts.model == "refine_plus"), \
        opts.dataset


def epochs(opts) -> int:
    """Seconds of training and validation per epoch: one warm-up epoch, then --epochs timed (median).
    ReFINe's epochs are timed from epoch --t on (W refined each epoch, as in most of a run's epochs)."""
    import torch

    import cli
    import metrics
    import training
    device = torch.device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    data, name = load_data(opts)
    data = data.to(device)
    config = training.TrainConfig(model=opts.model, t=1, r=min(opts.r, data.num_items - 1),
                                  s=min(5, data.num_items - 1))
    torch.manual_seed(0)
    model, negatives, train_epoch = training.build_model(config, data)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    defaults = cli.build_parser()  # main.py's evaluation: the published cut-offs and batch of users
    top_k, test_batch_size = defaults.get_default("top_k"), defaults.get_default("test_batch_size")
    exclude = data.train_interactions()
    train_seconds, eval_seconds = [], []
    ready, start_file = opts.ready, opts.start
    for epoch in range(1, opts.epochs + 2):
        if epoch == 2 and ready:  # after the warm-up: tell the parent, wait until all runs are ready
            Path(ready).touch()
            while not Path(start_file).exists():
                time.sleep(0.05)
            started = time.perf_counter()
        synchronize(device)
        start = time.perf_counter()
        model.train()
        train_epoch(model, optimizer, data, negatives, epoch, config)
        synchronize(device)
        middle = time.perf_counter()
        metrics.evaluate(model, data, data.valid, exclude, top_k, test_batch_size)
        synchronize(device)
        if epoch > 1:
            train_seconds.append(middle - start)
            eval_seconds.append(time.perf_counter() - middle)
    result = {"data": name, "model": opts.model, "device": str(device), "users": data.num_users,
              "items": data.num_items, "train_edges": int(data.train_pos.size(1)),
              "timed_epochs": opts.epochs, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
              "median_epoch_seconds": statistics.median(t + e for t, e in zip(train_seconds, eval_seconds))}
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if ready:
        result["timed_seconds"] = time.perf_counter() - started
    return emit(result)


def throughput(opts) -> int:
    """--runs training processes at once on one device: epochs per second of all of them together."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        command = [sys.executable, "-m", "bench.gpu_check", "epochs", "--model", "refine", "--device",
                   opts.device, "--epochs", str(opts.epochs), "--threads", "1", "--start", str(folder / "start")]
        command += ["--synthetic", opts.synthetic, "--scale", str(opts.scale)] if opts.synthetic else \
            ["--data_dir", opts.data_dir, "--dataset", opts.dataset]
        # bench.gpu_check as a module: the repository root on the path, whatever the working directory.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        processes = [subprocess.Popen(command + ["--ready", str(folder / f"ready{index}")], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env) for index in range(opts.runs)]
        while sum((folder / f"ready{index}").exists() for index in range(opts.runs)) < opts.runs:
            if any(process.poll() not in (None, 0) for process in processes):
                break
            time.sleep(0.1)
        (folder / "start").touch()
        outputs = [json.loads(process.communicate()[0]) for process in processes]
    wall = max(output["timed_seconds"] for output in outputs)
    return emit({"runs": opts.runs, "epochs_each": opts.epochs, "wall_seconds": wall,
                 "epochs_per_second": opts.runs * opts.epochs / wall,
                 "median_epoch_seconds_per_run": [output["median_epoch_seconds"] for output in outputs]})


def summary(opts) -> int:
    """OUT/summary.json from the step folder: each step's status line and JSON; printed when --print."""
    step_dir = Path(opts.step_dir)
    steps = {}
    order = (step_dir / "order").read_text().split() if (step_dir / "order").is_file() else []
    for name in order:
        status, seconds = (step_dir / f"{name}.status").read_text().split()
        step = {"status": status, "seconds": int(seconds)}
        result_file = step_dir / f"{name}.json"
        if result_file.is_file() and result_file.stat().st_size:
            try:
                step["result"] = json.loads(result_file.read_text())
            except json.JSONDecodeError:
                step["result_unreadable"] = result_file.read_text()[-500:]
        steps[name] = step
    result = {"dry_run": os.environ.get("DRY_RUN") == "1", "elapsed_seconds": opts.elapsed,
              "budget_seconds": opts.budget, "steps": steps}
    text = json.dumps(result, indent=1)
    Path(opts.out).write_text(text + "\n")
    if opts.print:
        print(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions", allow_abbrev=False)
    commands.add_parser("equivalence", allow_abbrev=False).add_argument("--device", default="cuda")
    command = commands.add_parser("product", allow_abbrev=False)
    command.add_argument("--device", default="cuda")
    command.add_argument("--users", type=int, default=6040)
    command.add_argument("--items", type=int, default=3706)
    command.add_argument("--edges", type=int, default=500_000)
    command = commands.add_parser("syncs", allow_abbrev=False)
    command.add_argument("--device", default="cuda")
    command.add_argument("--cases", default=None, help="model/mode,... (default: every case)")
    command = commands.add_parser("run-summary", allow_abbrev=False)
    command.add_argument("log")
    command.add_argument("test_json")
    command.add_argument("--wall", type=int, required=True)
    for name in ("epochs", "throughput"):
        command = commands.add_parser(name, allow_abbrev=False)
        command.add_argument("--device", default="cuda")
        command.add_argument("--data_dir", default=str(ROOT / "bench/data"))
        command.add_argument("--dataset", default="ML-100K")
        command.add_argument("--synthetic", default=None, help="a bench/synthetic.py preset instead of --dataset")
        command.add_argument("--scale", type=float, default=1.0)
        command.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up")
        command.add_argument("--threads", type=int, default=None)
        if name == "epochs":
            command.add_argument("--model", default="refine", choices=["refine", "refine_plus", "lightgcn"])
            command.add_argument("--r", type=int, default=100)
            command.add_argument("--ready", default=None, help=argparse.SUPPRESS)
            command.add_argument("--start", default=None, help=argparse.SUPPRESS)
        else:
            command.add_argument("--runs", type=int, required=True)
    command = commands.add_parser("summary", allow_abbrev=False)
    command.add_argument("step_dir")
    command.add_argument("out")
    command.add_argument("--elapsed", type=int, default=0)
    command.add_argument("--budget", type=int, default=0)
    command.add_argument("--print", action="store_true")
    opts = parser.parse_args(argv)
    return {"versions": versions, "equivalence": equivalence, "product": product, "syncs": syncs,
            "run-summary": run_summary, "epochs": epochs, "throughput": throughput,
            "summary": summary}[opts.command](opts)


if __name__ == "__main__":
    import entry
    entry.install_stop_handlers()
    sys.exit(entry.run_script(main, entry.Stop("this step saved nothing: rerun it")))
