"""The CUDA paths: training, resume, checkpoints read on a CPU, the sparse product, no syncs per batch.

    python -m pytest -q -m cuda tests/test_cuda.py      # skipped where torch sees no GPU

Each test runs a few epochs of the toy data (helpers.write_synthetic_dataset) on cuda:0.
"""

import shutil

import pytest
import torch

import bench.host_syncs as host_syncs
import model as model_module
from helpers import SMALL, run_main, without_timing, write_synthetic_dataset

pytestmark = pytest.mark.cuda  # skipped where torch sees no GPU (conftest.py)

MODELS = {"refine": [], "lightgcn": ["--dataset_augment", "0"], "refine_plus": ["--model", "refine_plus"],
          "refine_sparse": ["--sampler", "sparse"]}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    folder = write_synthetic_dataset(tmp_path / "data", "TOY")
    # LightGCN's --dataset_augment 0 reads the original ratings; any split file serves the CUDA paths.
    shutil.copy(folder / "TOY_train_augment.csv", folder / "TOY_train_original.csv")
    monkeypatch.chdir(tmp_path)
    return ["--data_dir", str(tmp_path / "data")] + SMALL


@pytest.mark.parametrize("name", list(MODELS))
def test_trains_resumes_and_the_checkpoint_loads_on_the_cpu(name, toy, tmp_path, capsys):
    extra = (["--model", "lightgcn"] if name == "lightgcn" else []) + MODELS[name]
    # --deterministic: the resumed run must equal the uninterrupted one on the GPU too.
    argv = toy + extra + ["--device", "cuda:0", "--early_stopping_step", "100", "--deterministic"]
    code, whole, err = run_main(argv + ["--epochs", "4"], capsys)
    assert code == 0 and whole.count("\nEpoch: ") == 4, err
    # Stopped after 2 epochs and resumed: the same run, on the GPU as on a CPU.
    code, _, err = run_main(argv + ["--epochs", "2", "--path_name", "cut"], capsys)
    assert code == 0, err
    code, resumed, err = run_main(argv + ["--epochs", "4", "--path_name", "cut", "--resume"], capsys)
    assert code == 0 and "resumed after epoch 2" in err, err
    assert without_timing(resumed) == without_timing(whole.replace("nothing", "cut"))
    # The best checkpoint holds tensors a CPU-only machine reads into the model built there.
    state = torch.load(tmp_path / "result/TOY/nothing.pt", map_location="cpu", weights_only=True)
    assert all(value.device.type == "cpu" for value in state.values())
    # Resumed with the run's own flags (a resume refuses others), on the CPU.
    on_cpu = [arg if arg != "cuda:0" else "cpu" for arg in argv]
    code, out, err = run_main(on_cpu + ["--epochs", "4", "--resume"], capsys)
    assert code == 0 and "Final Test Results" in out, err


def test_sparse_product_equals_the_cpu_one():
    generator = torch.Generator().manual_seed(0)
    num_users, num_items = 300, 500
    users = torch.randint(0, num_users, (5000,), generator=generator)
    items = torch.randint(0, num_items, (5000,), generator=generator) + num_users
    edge_index = torch.cat([torch.stack([users, items]), torch.stack([items, users])], dim=1)
    x = torch.randn(num_users + num_items, 64, generator=generator)
    on_cpu = model_module.normalized_adjacency(edge_index, num_users + num_items) @ x
    on_gpu = model_module.normalized_adjacency(edge_index.cuda(), num_users + num_items) @ x.cuda()
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-5)


@pytest.mark.parametrize("model_name,mode", host_syncs.CASES)
def test_no_synchronisation_per_batch(model_name, mode):
    """CUDA's own report (torch.cuda.set_sync_debug_mode): ReFINe and LightGCN 0 per batch, ReFINe++ 1."""
    data = host_syncs.toy_data("cuda:0")
    per_batch, _ = host_syncs.reads_per_batch(model_name, mode, data, host_syncs.CudaSyncCounter)
    assert per_batch <= (1 if model_name == "refine_plus" else 0)


@pytest.mark.parametrize("model_name,mode", [("refine", "dense"), ("refine_plus", "shared")])
def test_no_more_synchronisations_per_batch_after_a_resume(model_name, mode):
    """The epoch after a save and resume (checkpoint.py's functions, as --resume runs them): CUDA's own
    count per batch is the fresh run's bound, and Adam's step counters came back on the CPU."""
    data = host_syncs.toy_data("cuda:0")
    per_batch, _ = host_syncs.reads_per_batch(model_name, mode, data, host_syncs.CudaSyncCounter, resume=True)
    assert per_batch <= (1 if model_name == "refine_plus" else 0)
    model = torch.nn.Linear(3, 4, bias=False, device="cuda:0")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(2, 3, device="cuda:0")).sum().backward()
    optimizer.step()

    def build():
        fresh = torch.nn.Linear(3, 4, bias=False, device="cuda:0")
        return fresh, torch.optim.Adam(fresh.parameters(), lr=0.01)
    model, optimizer = host_syncs.resumed(model, optimizer, build)
    devices = {key: value.device.type for key, value in optimizer.state[model.weight].items()}
    assert devices == {"step": "cpu", "exp_avg": "cuda", "exp_avg_sq": "cuda"}
