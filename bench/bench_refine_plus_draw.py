"""Time ReFINe++ training epochs with the published negative draw against --refine_plus_negatives shared_fast.

    python -m bench.bench_refine_plus_draw --data_dir dataset --dataset ML-100K --epochs 4 \
        --out bench/results/refine_plus_draw_cpu.json

`shared` (the default) draws a row of I // 10 negatives for every positive of a batch and keeps the
second positive's row, as the published code does; `shared_fast` draws that row alone (same
distribution, tests/test_refine_plus.py). Both modes train their own model from the same start,
interleaved epoch by epoch with alternating order, so machine load hits both alike. Prints the
median epoch time of each and the ratio, with thread count and load average.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

import entry
import splits
import training
from catalog import default_data_dir
from utils import atomic_write, set_seed

MODES = ("shared", "shared_fast")


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=default_data_dir())
    parser.add_argument("--dataset", default="ML-100K")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--flush_denormal", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file of the timings")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    torch.set_flush_denormal(opts.flush_denormal)

    data = splits.load_splits(opts.data_dir, opts.dataset, True, encode_negatives=True)
    runs = {}
    for mode in MODES:
        set_seed(2024)
        config = training.TrainConfig(model="refine_plus", refine_plus_negatives=mode)
        model, weights, train_epoch = training.build_model(config, data)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        runs[mode] = (model, optimizer, weights, train_epoch, config)

    load_before = os.getloadavg()
    seconds = {mode: [] for mode in MODES}
    for epoch in range(1, opts.epochs + 1):
        for mode in (MODES if epoch % 2 else MODES[::-1]):
            model, optimizer, weights, train_epoch, config = runs[mode]
            start = time.perf_counter()
            train_epoch(model, optimizer, data, weights, epoch, config)
            seconds[mode].append(time.perf_counter() - start)
    load_after = os.getloadavg()

    median = {mode: statistics.median(values) for mode, values in seconds.items()}
    ratio = median["shared"] / median["shared_fast"]
    print(f"{opts.dataset}, {opts.epochs} epochs per mode, {torch.get_num_threads()} thread(s), "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for mode in MODES:
        print(f"  {mode:12s} median training epoch {median[mode]:.2f} s  (all: "
              + ", ".join(f"{value:.2f}" for value in seconds[mode]) + ")")
    print(f"  shared / shared_fast: {ratio:.2f}x")
    if opts.out:
        with atomic_write(opts.out) as handle:
            json.dump({"dataset": opts.dataset, "threads": torch.get_num_threads(), "epochs": opts.epochs,
                       "load_average_before": load_before, "load_average_after": load_after,
                       "machine": platform.processor() or platform.machine(), "seconds": seconds,
                       "median": median, "ratio": ratio}, handle, indent=1)


if __name__ == "__main__":
    sys.exit(entry.run_script(main, entry.Stop("nothing was saved: rerun it")))
