"""experiments.py --executor ray on a local two-node Ray cluster (nodes on 127.0.0.1): what a local sweep
does, a Ray sweep does (stops through each run's own stop path, truthful counts, retries of a lost run,
paths resolved in the driver, the run's real start, host and pid).

    python -m pytest -q -m slow tests/test_ray_sweep.py     # a few minutes: Ray and tiny training runs

The address checks need no cluster and run in the fast suite.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT, TINY, closed_port, ctrl_c_enabled, write_synthetic_dataset

ray = pytest.importorskip("ray")


EPOCHS = 60
# The stop test's runs: long enough that the test can pause each one (SIGSTOP) after its first saved
# state, well before its last epoch, whatever the machine's load.
STOP_EPOCHS = 1000


def sweep_command(data, out, address, *extra, seeds=("2024", "2025"), epochs=EPOCHS):
    """Runs of `epochs` epochs without early stopping: long enough to be stopped in flight."""
    return [sys.executable, str(ROOT / "experiments.py"), "--dataset", "TOY", "--configs", "refine", "--seeds",
            *seeds, "--out", str(out), "--executor", "ray", "--ray_address", address, *extra,
            "--", "--data_dir", str(data), "--epochs", str(epochs), "--early_stopping_step", str(epochs)] + TINY


# --- the address: one line within --ray_timeout, never a hang ----------------------------------------

def test_an_address_where_nothing_listens_is_one_line_at_once(tmp_path):
    write_synthetic_dataset(tmp_path / "data", "TOY", num_users=30, num_items=40)
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    done = subprocess.run(sweep_command(tmp_path / "data", "out", address), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: --ray_address {address}: no Ray cluster answers there")
    assert not (tmp_path / "out").exists()


def test_an_address_that_never_answers_gives_up_within_the_timeout(tmp_path):
    """Something listens but is no Ray cluster: ray.init would wait forever."""
    write_synthetic_dataset(tmp_path / "data", "TOY", num_users=30, num_items=40)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        done = subprocess.run(sweep_command(tmp_path / "data", "out", address, "--ray_timeout", "5"), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 45  # 5 s, plus imports on a busy machine
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: --ray_address {address}: Ray did not connect within 5 s (--ray_timeout); check the "
                     f"address and that the cluster is up; no run was started"]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


# --- a two-node cluster ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A head and one more node, one CPU each, on 127.0.0.1. The variable keeps Ray (here and in the
    sweep's driver) from replacing 127.0.0.1 by this machine's outward address."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                          "include_dashboard": False})
    nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()
    if saved is None:
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    else:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved


def wait_for(condition, seconds=300):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def records(out):
    return {path.parent.name: json.loads(path.read_text()) for path in out.glob("refine/seed*/run.json")}


def term_pending(pid) -> bool:
    """Whether SIGTERM waits to be delivered to the (stopped) process: /proc/<pid>/status's masks."""
    masks = [int(line.split()[1], 16) for line in open(f"/proc/{pid}/status") if line.startswith(("SigPnd", "ShdPnd"))]
    return any(mask & (1 << (signal.SIGTERM - 1)) for mask in masks)


def paused_in_flight(out, seeds):
    """Each run's main.py paused (SIGSTOP) as soon as it has saved a state: both are then in flight,
    however slowly the other one started. {seed: its run.json record}."""
    paused, deadline = {}, time.time() + 300
    while len(paused) < len(seeds):
        assert time.time() < deadline, "timed out"
        for seed in seeds:
            record = records(out).get(seed, {})
            if seed not in paused and "pid" in record and (out / "refine" / seed / "run.last.pt").exists():
                os.kill(record["pid"], signal.SIGSTOP)  # a child of the test's own sweep
                paused[seed] = record
        time.sleep(0.05)
    return paused


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_reaches_each_run_through_its_own_stop_path(cluster, tmp_path, stop):
    """Both runs in flight (one per node), a relative --out: the stop saves each run's state, writes its stop
    line, the driver exits 2 saying what finished, and the rerun resumes both."""
    data = tmp_path / "data"
    write_synthetic_dataset(data, "TOY", num_users=30, num_items=40)
    out = tmp_path / "out"
    command = sweep_command(data, "out", cluster.address, epochs=STOP_EPOCHS)  # relative --out: resolved in the driver
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=ctrl_c_enabled)
    started = {}
    try:
        started = paused_in_flight(out, ("seed2024", "seed2025"))
        driver.send_signal(stop)
        # The sweep passes the stop on to each run as SIGTERM; once it waits in both, they go on and take it.
        wait_for(lambda: all(term_pending(record["pid"]) for record in started.values()), seconds=120)
        for record in started.values():
            os.kill(record["pid"], signal.SIGCONT)
        _, err = driver.communicate(timeout=300)
    finally:
        for record in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGCONT)
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 2, err
    assert err.rstrip().splitlines()[-1] == ("error: interrupted: 0 of 2 runs finished; rerun the same command to "
                                             "continue the others from their last finished epoch")
    assert "Traceback" not in err and "failed:" not in err
    assert err.count("stopped: refine seed") == 2
    for seed in ("seed2024", "seed2025"):
        record = started[seed]
        assert record["host"] == socket.gethostname() and record["pid"] > 0 and record["attempt"] == 1
        assert record["cwd"] == str(tmp_path) and record["command"][-1] != "--resume"
        last = (out / "refine" / seed / "run.err").read_text().strip().splitlines()[-1]
        assert last.startswith("error: interrupted") and "--resume" in last, last
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    for seed, record in records(out).items():
        assert record["resumed"] is True and record["command"][-1] == "--resume", seed
        assert (out / "refine" / seed / "run.out").read_text().count("\nEpoch: ") == STOP_EPOCHS


@pytest.mark.slow
def test_a_run_lost_with_its_worker_is_started_again_and_resumes(cluster, tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, "TOY", num_users=30, num_items=40)
    out = tmp_path / "out"
    command = sweep_command(data, out, cluster.address, seeds=("2024,",))
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "refine/seed2024/run.last.pt").exists())
        first = records(out)["seed2024"]
        os.kill(first["worker_pid"], signal.SIGKILL)  # the Ray worker running the task: lost
        _, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err
    assert "done: refine seed 2024" in err and "could not start" not in err
    record = records(out)["seed2024"]
    assert record["attempt"] == 2 and record["resumed"] is True and record["worker_pid"] != first["worker_pid"]
    assert (out / "refine/seed2024/run.err").read_text().startswith(
        "attempt 2: the one before was lost with its worker or node")
    assert "interrupted" not in (out / "refine/seed2024/run.err").read_text()
    assert (out / "refine/seed2024/run.out").read_text().count("\nEpoch: ") == EPOCHS
