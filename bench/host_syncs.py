"""Count the reads from the device (host synchronisations) per training batch of each model.

    python -m bench.host_syncs                 # on the CPU: calls that would wait for a GPU, counted
    python -m bench.host_syncs --device cuda   # on a GPU: the synchronisations CUDA itself reports
    python -m bench.host_syncs --resumed       # the same, in an epoch after a save and resume (checkpoint.py)

A read from the GPU (`.item()`, `.tolist()`, a boolean mask, `nonzero`, `unique`, torch.multinomial's
validity check, ...) makes the host wait until the GPU has finished all queued work; in a batch loop
that is launch-bound (ML-100K) it costs a large share of each step. An epoch has a few reads that do
not depend on its batch count (the shuffle seed, the loss read once); the number per batch is found
by training the same epoch with two batch sizes: (reads(small) - reads(large)) / (batches(small) -
batches(large)).

On a CPU nothing waits, so `HostReadCounter` counts the Python-level calls that would wait on a GPU;
on CUDA `torch.cuda.set_sync_debug_mode("warn")` warns at every synchronisation, and the warnings
are counted.

`--resumed` counts the epoch after the model and optimizer were saved and read back as main.py's
--resume does (checkpoint.save, then checkpoint._read and checkpoint.restore_model_and_optimizer into a
new model and optimizer): a resumed run must wait no more per batch than a fresh one (an Adam `step`
counter put on the GPU by the resume would add a read per batch).
"""
import argparse
import contextlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import checkpoint
import model as model_module
import splits
import training

# Calls that read a device tensor back to the host (or size their output by its values).
READING_METHODS = ("item", "tolist", "nonzero", "unique", "unique_consecutive", "masked_select", "argwhere",
                   "__bool__", "__int__", "__float__", "__index__")
READING_FUNCTIONS = ("nonzero", "unique", "unique_consecutive", "masked_select", "argwhere", "multinomial")
CPU_DISTINCT_ROWS = model_module.distinct_rows
CASES = (("refine", "dense"), ("refine", "sparse"), ("lightgcn", "dense"),
         ("refine_plus", "shared"), ("refine_plus", "shared_fast"), ("refine_plus", "per_positive"))


def _is_mask(index) -> bool:
    indices = index if isinstance(index, tuple) else (index,)
    return any(isinstance(item, torch.Tensor) and item.dtype == torch.bool for item in indices)


class HostReadCounter:
    """While active, counts calls that would read a device tensor back to the host: READING_METHODS
    and READING_FUNCTIONS, and indexing or assigning through a boolean mask. `paused()` stops counting
    (for the optimizer step: Adam keeps its step counters on the host, where reading them is free)."""

    def __init__(self):
        self.count, self._paused, self._saved = 0, 0, []

    def _wrap(self, owner, name):
        original = getattr(owner, name)
        counter = self

        def counted(*args, **kwargs):
            if not counter._paused:
                counter.count += 1
            return original(*args, **kwargs)
        self._saved.append((owner, name, original))
        setattr(owner, name, counted)

    def _wrap_indexing(self, name):
        original = getattr(torch.Tensor, name)
        counter = self

        def indexing(tensor, index, *value):
            if not counter._paused and _is_mask(index):
                counter.count += 1
            return original(tensor, index, *value)
        self._saved.append((torch.Tensor, name, original))
        setattr(torch.Tensor, name, indexing)

    def __enter__(self):
        for name in READING_METHODS:
            self._wrap(torch.Tensor, name)
        for name in READING_FUNCTIONS:
            self._wrap(torch, name)
        self._wrap_indexing("__getitem__")
        self._wrap_indexing("__setitem__")
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    @contextlib.contextmanager
    def paused(self):
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1


class CudaSyncCounter:
    """Counts the synchronisations CUDA reports (torch.cuda.set_sync_debug_mode) while active."""

    def __init__(self):
        self.count, self._records, self._catch = 0, [], None

    def __enter__(self):
        torch.cuda.synchronize()
        # Switched on before recording starts: the first switch in a process was seen to report one
        # synchronisation of its own (torch 2.11 on an H200), which is no part of the epoch.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.cuda.set_sync_debug_mode("warn")
        self._catch = warnings.catch_warnings(record=True)
        self._records = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self.count = sum("synchroniz" in str(record.message) for record in self._records)
        self._catch.__exit__(*exc)

    @contextlib.contextmanager
    def paused(self):
        yield  # Adam's host-side step counters cause no CUDA synchronisation


def toy_data(device, num_users=40, num_items=60):
    """A small synthetic split (bench/toy.py, the tests' generator), loaded as main.py loads it."""
    from bench.toy import write_synthetic_dataset
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_dataset(Path(folder), "TOY", num_users=num_users, num_items=num_items)
        return splits.load_splits(folder, "TOY", True, encode_negatives=True).to(device)


def resumed(model, optimizer, build):
    """(model, optimizer) as a resumed run has them: saved as main.py saves its state, read back onto the
    CPU and restored into a new model and optimizer by checkpoint.py's own functions."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.pt"
        checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
        state = checkpoint._read(path, "a training state", "")
    model, optimizer = build()
    checkpoint.restore_model_and_optimizer(state, model, optimizer, path)
    return model, optimizer


def reads_in_epoch(model_name, mode, data, batch_size, counter_type, epoch=3, resume=False):
    """Host reads counted during one training epoch (epoch >= t, so ReFINe refines), and its batch count;
    with `resume`, the model and optimizer are saved and restored (as by --resume) before that epoch."""
    sampler_flag = mode if model_name != "refine_plus" else "dense"
    negatives_flag = mode if model_name == "refine_plus" else "shared"
    config = training.TrainConfig(model=model_name, sampler=sampler_flag, refine_plus_negatives=negatives_flag,
                                  batch_size=batch_size, t=2, r=5, s=2, embedding_dim=16, layers=2)
    torch.manual_seed(0)
    model, negatives, train_epoch = training.build_model(config, data)

    def build():
        built = training.build_model(config, data)[0].to(data.train_pos.device)
        return built, torch.optim.Adam(built.parameters(), lr=0.01)
    model = model.to(data.train_pos.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_epoch(model, optimizer, data, negatives, epoch, config)  # warm-up: lazy initialisations read once
    if resume:
        model, optimizer = resumed(model, optimizer, build)
        train_epoch(model, optimizer, data, negatives, epoch, config)  # and the restored model's own
    counter = counter_type()
    if data.train_pos.device.type == "cpu":  # CPU tensors stand in for GPU ones: take the GPU's code path
        model_module.distinct_rows = model_module.padded_distinct_rows
    step = optimizer.step
    optimizer.step = lambda *a, **k: _paused_call(counter, step, *a, **k)
    try:
        with counter:
            train_epoch(model, optimizer, data, negatives, epoch, config)
    finally:
        model_module.distinct_rows = CPU_DISTINCT_ROWS
    edges = data.graph_edges.size(1) if model_name == "refine_plus" else data.train_pos.size(1)
    return counter.count, -(-edges // batch_size)


def _paused_call(counter, function, *args, **kwargs):
    with counter.paused():
        return function(*args, **kwargs)


def reads_per_batch(model_name, mode, data, counter_type, batch_sizes=(64, 16), resume=False):
    """(reads per batch, reads per epoch besides): from epochs of two batch sizes."""
    (reads_few, few), (reads_many, many) = (reads_in_epoch(model_name, mode, data, size, counter_type, resume=resume)
                                            for size in batch_sizes)
    per_batch = (reads_many - reads_few) / (many - few)
    return per_batch, reads_few - per_batch * few


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (count calls) or cuda (CUDA's own report)")
    parser.add_argument("--out", default=None, help="JSON file of the counts")
    parser.add_argument("--resumed", action="store_true", help="count the epoch after a save and resume")
    opts = parser.parse_args(argv)
    device = torch.device(opts.device)
    counter_type = CudaSyncCounter if device.type == "cuda" else HostReadCounter
    data = toy_data(device)
    results = {}
    for model_name, mode in CASES:
        per_batch, per_epoch = reads_per_batch(model_name, mode, data, counter_type, resume=opts.resumed)
        results[f"{model_name}/{mode}"] = {"per_batch": per_batch, "per_epoch": per_epoch}
        print(f"{model_name:12s} {mode:13s} {per_batch:5.2f} per batch, {per_epoch:5.1f} per epoch besides")
    if opts.out:
        Path(opts.out).write_text(json.dumps({"device": str(device), "counted": counter_type.__name__,
                                              "resumed": opts.resumed, "cases": results}, indent=1))
    return 0


if __name__ == "__main__":
    import entry
    entry.install_stop_handlers()
    sys.exit(entry.run_script(main, entry.Stop("nothing was saved: rerun it")))
