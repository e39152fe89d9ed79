"""Security, silent wrong results and wording: each cause on the real scripts (a subprocess of each).

    python -m pytest -q tests/test_reliability.py
"""
import os
import subprocess
import sys
import time

import pytest

from helpers import ROOT, SMALL, LocalHTTPServer, write_synthetic_dataset

PY = sys.executable


def script(*argv, cwd=None, env=None, stdout=subprocess.PIPE, timeout=300):
    return subprocess.run([PY, *map(str, argv)], cwd=cwd, env={**os.environ, **(env or {})}, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def one_error_line(done, *words):
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


# --- no script takes an abbreviated long flag -----------------------------------------------------------

@pytest.mark.parametrize("argv,flag", [
    (["main.py", "--epoch", "1"], "--epoch"),
    (["experiments.py", "--datas", "ML-100K", "--out", "o"], "--datas"),
    (["compare.py", "a.out", "b.out", "--mark"], "--mark"),
    (["dataloader.py", "download", "ML-100K", "--refin"], "--refin"),
    (["refine_llm.py", "prompts", "ML-100K", "--max_prompt", "3"], "--max_prompt"),
    (["-m", "bench.synthetic", "ml-100k", "--sca", "0.1", "--out", "o"], "--sca"),
])
def test_an_abbreviated_flag_is_refused_by_each_script(tmp_path, argv, flag):
    command = argv[:2] if argv[0] == "-m" else [ROOT / argv[0]]  # a bench script runs as a module
    done = script(*command, *argv[len(command):], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and flag in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_abbreviated_data_dir_after_the_dashes_is_refused(tmp_path):
    """`-- --data_d X` with --preset relabel: it would have put every config on one data folder."""
    done = script(ROOT / "experiments.py", "--dataset", "ML-100K", "--preset", "relabel", "--out", "o", "--",
                  "--data_d", "X", cwd=tmp_path)
    one_error_line(done, "--data_d after --: not a main.py flag")
    assert list(tmp_path.iterdir()) == []


# --- a failed write to standard output is named -------------------------------------------------------

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
@pytest.mark.parametrize("argv", [
    ["compare.py", "results4comparison/ReFINe_ML-100K.out", "results4comparison/LightGCN_ML-100K.out"],
    ["main.py", "--data_dir", "{data}", "--device", "cpu", "--epochs", "1",
     "--result_dir", "{tmp}/result", *SMALL],
])
def test_standard_output_on_a_full_device_is_named(tmp_path, argv):
    write_synthetic_dataset(tmp_path / "data", "TOY")
    argv = [arg.format(data=tmp_path / "data", tmp=tmp_path) for arg in argv]
    with open("/dev/full", "w") as full:
        done = script(ROOT / argv[0], *argv[1:], cwd=ROOT, stdout=full)
    one_error_line(done, "error: standard output: No space left on device")


# --- the run's lock file does not follow a link -------------------------------------------------------

def test_a_link_planted_at_the_lock_is_refused_and_its_target_untouched(tmp_path):
    write_synthetic_dataset(tmp_path / "data", "TOY")
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (tmp_path / "result").mkdir()
    (tmp_path / "result" / "run.lock").symlink_to(victim)
    done = script(ROOT / "main.py", "--data_dir", tmp_path / "data", "--device", "cpu",
                  "--epochs", "1", "--result_dir", tmp_path / "result", "--path_name", "run", *SMALL)
    one_error_line(done, "run.lock (the run's lock file) is a link or not a regular file")
    assert victim.read_text() == "keep me\n"
    assert sorted(path.name for path in (tmp_path / "result").iterdir()) == ["run.lock"]


# --- a password in a URL is never printed, nor sent ---------------------------------------------------

SECRET = "s3cretPW"


@pytest.mark.parametrize("how", ["env", "flag"])
def test_a_password_in_the_published_url_is_refused_unprinted(tmp_path, how):
    url = f"http://bob:{SECRET}@127.0.0.1:9/logs"
    flags, env = (["--published_url", url], {}) if how == "flag" else ([], {"REFINE_PUBLISHED_URL": url})
    done = script(ROOT / "dataloader.py", "download", "ML-1M", "--data_dir", tmp_path / "data", "--no_progress",
                  *flags, cwd=tmp_path, env=env)
    one_error_line(done, "http://bob:***@127.0.0.1:9/logs", "a user name or password in a URL is not used")
    assert SECRET not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_compare_never_prints_the_password_of_the_published_url(tmp_path):
    import download

    if (download.PUBLISHED_DIR / "ReFINe_Netflix-1M.out").exists():
        pytest.skip("the published Netflix-1M log is cached: compare.py would fetch nothing")
    done = script(ROOT / "compare.py", "published:Netflix-1M", "x.out", cwd=tmp_path,
                  env={"REFINE_PUBLISHED_URL": f"http://bob:{SECRET}@127.0.0.1:9"})
    one_error_line(done, "http://bob:***@127.0.0.1:9/")
    assert SECRET not in done.stdout + done.stderr
    assert not any(SECRET in path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file())


# --- downloads: write errors, redirect loops, endless answers, two fetches of one file -----------------

class Server(LocalHTTPServer):
    """A threading HTTP server on 127.0.0.1: `routes` {path: (kind, bytes)}; kinds: file (sent in
    slow chunks when `slow`), loop (a redirect to itself), endless (bytes without end, no length)."""

    def __init__(self, routes, slow=0.0):
        import http.server

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                kind, body = server.routes.get(self.path, ("missing", b""))
                if kind == "loop":
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.end_headers()
                elif kind == "endless":
                    self.send_response(200)
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"1,2,3\n" * 10000)
                    except OSError:
                        pass
                elif kind == "file":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for start in range(0, len(body), 1 << 16):
                        self.wfile.write(body[start:start + (1 << 16)])
                        time.sleep(server.slow)
                else:
                    self.send_error(404)

        self.routes, self.slow = routes, slow
        super().__init__(Handler, path="")


def download_refined(data, server, *flags):
    return ["dataloader.py", "download", "ML-100K", "--refined", "--data_dir", data, "--no_progress",
            "--refined_url", server.url, "--published_url", server.url, *flags]


def test_a_write_error_of_the_part_file_is_the_write_error(tmp_path):
    folder = tmp_path / "data" / "ML-100K"
    folder.mkdir(parents=True)
    part = folder / "ML-100K_train_original.csv.part"
    part.symlink_to("/dev/full")  # every write: no space left on device
    with Server({"/ML-100K/ML-100K_train_original.csv": ("file", b"u,i,r\n" * 1000)}) as server:
        done = script(ROOT / "dataloader.py", *download_refined(tmp_path / "data", server)[1:], cwd=tmp_path)
    one_error_line(done, f"error: {part}: No space left on device while writing the download of "
                         f"{server.url}/ML-100K/ML-100K_train_original.csv; free space and rerun")
    assert "interrupted" not in done.stderr and "resume" not in done.stderr
    assert list(folder.iterdir()) == []


def test_a_redirect_loop_is_one_line(tmp_path):
    import download

    if (download.PUBLISHED_DIR / "ReFINe_Netflix-1M.out").exists():
        pytest.skip("the published Netflix-1M log is cached: compare.py would fetch nothing")
    with Server({"/ReFINe/main/results4comparison/ReFINe_Netflix-1M.out": ("loop", b"")}) as server:
        done = script(ROOT / "compare.py", "published:Netflix-1M", "x.out", cwd=tmp_path,
                      env={"REFINE_PUBLISHED_URL": server.url})
    one_error_line(done, "the server redirects in a loop (HTTP 302, too many redirects)")


def test_an_endless_answer_stops_at_the_files_known_size(tmp_path):
    with Server({"/ML-100K/ML-100K_train_original.csv": ("endless", b"")}) as server:
        done = script(ROOT / "dataloader.py", *download_refined(tmp_path / "data", server)[1:], cwd=tmp_path)
    one_error_line(done, "the server sends more than the 778150 bytes ML-100K_train_original.csv can have")
    assert list((tmp_path / "data" / "ML-100K").iterdir()) == []


def test_two_fetches_of_one_file_at_once_both_succeed(tmp_path, ml100k_with_raw):
    """Two downloads into one folder take turns; the second finds the files the first fetched."""
    import shutil

    source = ml100k_with_raw / "ML-100K"
    folder = tmp_path / "data" / "ML-100K"
    folder.mkdir(parents=True)
    for raw in ("ml-100k.inter", "ml-100k.item"):  # present and verified: only the splits are fetched
        shutil.copy(source / raw, folder / raw)
    splits = [f"ML-100K_{split}.csv" for split in ("train_original", "train_augment", "validation", "test")]
    routes = {f"/ML-100K/{name}": ("file", (source / name).read_bytes()) for name in splits}
    with Server(routes, slow=0.05) as server:
        command = [PY, str(ROOT / "dataloader.py"), *map(str, download_refined(tmp_path / "data", server)[1:])]
        both = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        results = [(process.communicate(timeout=300)[1], process.returncode) for process in both]
    for err, code in results:
        assert code == 0, err
    for name in splits:
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert not list(folder.glob("*.part"))
