"""The authors' logs, fetched and verified like the data: compare.py published:NAME / published-plus:NAME,
and `dataloader.py download NAME`, against the published layout served on 127.0.0.1.

    python -m pytest -q tests/test_data_published.py
"""
import hashlib
import os
import subprocess
import sys

import pytest

import catalog
import compare
import dataloader
import download
from helpers import FixtureServer, closed_port, find_published_log


def tiny_log(dataset, recall):
    """A finished run in the published layout: one epoch and the final test block."""
    rule = "#" * 77
    metrics = f"Precision@20: 0.1000, Recall@20: {recall:.4f}, NDCG@20: 0.2000"
    return "\n".join([rule, f"dataset: {dataset}", "top_k: [20]", rule, "", "Epoch: 001, Loss: 0.5000",
                      metrics, f"Save: result/{dataset}/nothing.pt", "", rule, "Final Test Results", metrics,
                      rule]).encode() + b"\n"


@pytest.fixture
def published(tmp_path, monkeypatch):
    """The two ML-1M logs served at <base>/ReFINe/... and <base>/ReFINe_plus/...; the cache in tmp_path.
    The ReFINe log is the real one where $REFINE_LOG_DIR or results4comparison/published/ has it (its
    published sha256 is then checked as is)."""
    real = find_published_log("ReFINe_ML-1M.out")
    monkeypatch.setattr(download, "PUBLISHED_DIR", tmp_path / "published")
    bodies = {"ReFINe_ML-1M.out": real.read_bytes() if real and real.is_file() else tiny_log("ML-1M", 0.3053),
              "ML-1M.log": tiny_log("ML-1M", 0.3111)}
    for name, body in bodies.items():
        if hashlib.sha256(body).hexdigest() != catalog.PUBLISHED_LOG_SHA256[name]:
            monkeypatch.setitem(catalog.PUBLISHED_LOG_SHA256, name, hashlib.sha256(body).hexdigest())
    with FixtureServer() as server:
        server.files["/ReFINe/main/results4comparison/ReFINe_ML-1M.out"] = bodies["ReFINe_ML-1M.out"]
        server.files["/ReFINe_plus/main/results4comparison/ML-1M.log"] = bodies["ML-1M.log"]
        monkeypatch.setenv("REFINE_PUBLISHED_URL", server.url.rstrip("/"))
        yield server, bodies


@pytest.mark.parametrize("name", ["ReFINe_ML-100K.out", "ReFINe_ML-1M.out", "ReFINe_Netflix-1M.out"])
def test_real_reference_logs_have_the_published_sha256(published_log, name):
    body = published_log(name).read_bytes()
    assert hashlib.sha256(body).hexdigest() == catalog.PUBLISHED_LOG_SHA256[name]


def test_compare_fetches_checks_and_caches_both_logs(published, capsys):
    server, bodies = published
    assert compare.main(["published:ML-1M", "published-plus:ML-1M"]) == 0
    out = capsys.readouterr().out
    assert "published:ML-1M" in out and "published-plus:ML-1M" in out and "0.3111" in out
    assert sorted(path for path, _ in server.requests) == [
        "/ReFINe/main/results4comparison/ReFINe_ML-1M.out", "/ReFINe_plus/main/results4comparison/ML-1M.log"]
    for name, body in bodies.items():  # kept under the published name, so that diff works on it
        assert (download.PUBLISHED_DIR / name).read_bytes() == body
    server.requests.clear()
    assert compare.main(["published:ML-1M", "published-plus:ML-1M"]) == 0
    assert server.requests == []  # the second call fetches nothing


def test_a_changed_download_is_refused_and_not_kept(published, capsys):
    server, bodies = published
    server.files["/ReFINe_plus/main/results4comparison/ML-1M.log"] = bodies["ML-1M.log"] + b"tampered\n"
    assert compare.main(["published-plus:ML-1M"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: checksum mismatch") and "ML-1M.log" in err
    assert not download.PUBLISHED_DIR.exists() or list(download.PUBLISHED_DIR.iterdir()) == []


def test_a_changed_cached_log_is_refused(published, capsys):
    assert compare.main(["published:ML-1M"]) == 0
    cached = download.PUBLISHED_DIR / "ReFINe_ML-1M.out"
    cached.write_bytes(cached.read_bytes().replace(b"0.30", b"0.40", 1))
    capsys.readouterr()
    assert compare.main(["published:ML-1M"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{cached} differs from the published log" in err and "delete it" in err


def test_a_folder_in_place_of_a_kept_log_is_one_line(published, capsys):
    server, _ = published
    (download.PUBLISHED_DIR / "ReFINe_ML-1M.out").mkdir(parents=True)
    assert compare.main(["published:ML-1M"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {download.PUBLISHED_DIR / 'ReFINe_ML-1M.out'} is a folder, not a file: move it away "
                   f"and rerun to fetch the published log\n")
    assert server.requests == []


def test_unreachable_is_one_line_naming_the_url_and_the_place(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "PUBLISHED_DIR", tmp_path / "published")
    base = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("REFINE_PUBLISHED_URL", base)
    assert compare.main(["published-plus:ML-1M", "x.out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot reach")
    assert f"fetch {base}/ReFINe_plus/main/results4comparison/ML-1M.log by hand" in err
    assert f"save it as {tmp_path / 'published' / 'ML-1M.log'}" in err
    assert f"mkdir -p {tmp_path / 'published'})" in err  # the folder is not there yet: the fix says to make it


def test_unknown_published_name_lists_the_known_ones(capsys):
    assert compare.main(["published:Amazon_Books"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such published log" in err and "published-plus:ML-1M" in err


def test_download_fetches_the_datasets_published_logs(published, tmp_path, capsys):
    server, bodies = published
    folder = tmp_path / "data" / "ML-1M"
    folder.mkdir(parents=True)
    # the raw files are present: the command only checks them, then fetches the logs
    (folder / "ml-1m.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t1\t5\n")
    (folder / "ml-1m.item").write_text("item_id:token\tmovie_title:token_seq\n1\tA\n")
    code = dataloader.main(["download", "ML-1M", "--data_dir", str(tmp_path / "data"), "--no_progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name, body in bodies.items():
        assert (download.PUBLISHED_DIR / name).read_bytes() == body
    assert "compare.py published-plus:ML-1M" in captured.out


def test_download_without_the_logs_is_a_note_not_a_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "PUBLISHED_DIR", tmp_path / "published")
    folder = tmp_path / "data" / "ML-1M"
    folder.mkdir(parents=True)
    (folder / "ml-1m.inter").write_text("x\n")
    (folder / "ml-1m.item").write_text("x\n")
    code = dataloader.main(["download", "ML-1M", "--data_dir", str(tmp_path / "data"), "--no_progress",
                            "--published_url", f"http://127.0.0.1:{closed_port()}"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("\n") == 1 and "note: the published logs published:ML-1M, published-plus:ML-1M are not" in err
    assert "by hand" in err and not download.PUBLISHED_DIR.exists()
    # each log with its own URL and place, and the command that makes the place
    base = "/ReFINe/main/results4comparison/ReFINe_ML-1M.out", "/ReFINe_plus/main/results4comparison/ML-1M.log"
    for url, name in zip(base, ("ReFINe_ML-1M.out", "ML-1M.log")):
        assert f"{url} by hand and save it as {download.PUBLISHED_DIR / name}" in err
    assert err.count(f"mkdir -p {download.PUBLISHED_DIR}") == 2 and "the same for the other" not in err


def test_compare_script_unreachable_is_one_line_and_leaves_nothing(tmp_path):
    """The real script (its own process, its default cache folder): nothing is written when the
    server cannot be reached."""
    from helpers import ROOT

    before = download.PUBLISHED_DIR.exists() and sorted(download.PUBLISHED_DIR.iterdir())
    base = f"http://127.0.0.1:{closed_port()}"
    process = subprocess.run([sys.executable, str(ROOT / "compare.py"), "published:Netflix-1M", "x.out"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "REFINE_PUBLISHED_URL": base})
    assert process.returncode == 2 and process.stderr.count("\n") == 1, process.stderr
    assert process.stderr.startswith(f"error: cannot reach {base}/ReFINe/main/results4comparison/ReFINe_Netflix-1M.out")
    assert (download.PUBLISHED_DIR.exists() and sorted(download.PUBLISHED_DIR.iterdir())) == before
