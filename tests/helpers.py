"""Helpers the test modules share, in one place: conftest.py holds only pytest's hooks and fixtures,
and no test module imports another.

    from helpers import ROOT, SMALL, run_main, write_synthetic_dataset

- DEVICES: the cpu and cuda cases of a test that runs on both (the cuda one marked cuda);
- paths and the published data: ROOT, ORACLE_DIR, find_data_dir, find_published_log (conftest.py's
  docstring says where they look);
- main.py on synthetic data: write_synthetic_dataset (its one home is bench/toy.py, which
  bench/host_syncs.py uses without pytest), SMALL, run_main, without_timing, snapshot,
  assert_one_error_line; TINY, the sweeps' small flags;
- subprocesses and servers: ctrl_c_enabled, LocalHTTPServer, closed_port, FixtureServer (downloads);
- the LLM stage: write_published_answers, make_dataset, FakeServer (an OpenAI-compatible server) and
  what it answers.
"""
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.toy import write_synthetic_dataset  # noqa: F401  (the tests import it from here)
from llm.answers import format_answer_block
from llm.data import ITEM_COL, RATING_COL, USER_COL, load_train
from llm.prompts import SEPARATOR, build_prompts

ROOT = Path(__file__).resolve().parents[1]
ORACLE_DIR = ROOT / "results4comparison" / "published-code-on-cpu"
PUBLISHED_DIR = ROOT / "results4comparison" / "published"
ML100K_SPLITS = tuple(f"ML-100K_{split}.csv" for split in ("train_augment", "train_original", "validation", "test"))
ML100K_RAW = ("ml-100k.inter", "ml-100k.item")
# Every skip for missing published data carries this text, so that the summary can group them.
MISSING_DATA = "published data not found"
GET_DATA = "python dataloader.py download ML-100K --refined"


def ctrl_c_enabled():
    """preexec_fn for a subprocess that a test interrupts with SIGINT: a suite run as a background job
    has SIGINT ignored, and children inherit that; the real command then sees Ctrl-C as a terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def data_dirs():
    """Candidate data folders (each holds <NAME>/ subfolders), in the order they are searched."""
    dirs = [Path(os.environ["REFINE_DATA_DIR"])] if os.environ.get("REFINE_DATA_DIR") else []
    return dirs + [ROOT / "dataset"]


def log_dirs():
    """Candidate folders of the authors' logs, in the order they are searched."""
    dirs = [Path(os.environ["REFINE_LOG_DIR"])] if os.environ.get("REFINE_LOG_DIR") else []
    return dirs + [PUBLISHED_DIR]


def find_data_dir(name, files, how=GET_DATA):
    """The first candidate data folder whose <name>/ holds every file named; skips the test if none does
    (`how`: the command that provides the files)."""
    for folder in data_dirs():
        if all((folder / name / file).is_file() for file in files):
            return folder
    pytest.skip(f"{MISSING_DATA}: {name}/ with {', '.join(files)} in none of "
                f"{', '.join(str(d) for d in data_dirs())}; run: {how}")


def find_published_log(name):
    """Path of the authors' log `name` (e.g. ReFINe_ML-100K.out), or None."""
    for folder in log_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


def fetch_log_command(name):
    """The command that puts the authors' log `name` into results4comparison/published/."""
    match = re.fullmatch(r"ReFINe_(.+)\.out", name)
    return f"python compare.py published:{match.group(1)}" if match else f"python compare.py published-plus:{name[:-4]}"


class LocalHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving `handler`; use it with `with`.

    Subclasses build their handler class in __init__ and call super().__init__(handler, path).
    """

    def __init__(self, handler, path="/"):
        import threading
        from http.server import ThreadingHTTPServer

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # A client that stops (a failed run cancelling its other requests) closes sockets the
                # server still writes to; socketserver would print that traceback into the test's stderr.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# A test that runs on both devices: parametrize it over DEVICES; its cuda case carries the cuda marker
# (conftest.py skips it where torch sees no GPU; `pytest -m cuda` selects every CUDA test).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


# --- main.py on synthetic data ---------------------------------------------------------------------------

SMALL = ["--dataset", "TOY", "--batch_size", "64", "--top_k", "1", "5", "10", "--r", "5", "--s", "2", "--t", "3",
         "--embedding_dim", "16", "--layers", "2", "--learning_rate", "0.01"]


def run_main(argv, capsys):
    """main.main(argv): (exit code, stdout, stderr)."""
    import main  # here: a test module that needs no run imports no torch through this file

    code = main.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def without_timing(log):
    """The log with its training time written as S (two runs' logs compare equal)."""
    return re.sub(r"Training completed in [\d.]+ seconds", "Training completed in S seconds", log)


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under folder: equal snapshots = nothing written or replaced."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_one_error_line(err: str, *culprits: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for culprit in culprits:
        assert culprit in err, (culprit, err)


TINY = ["--batch_size", "64", "--top_k", "5", "20", "--r", "5", "--s", "2", "--t", "2",
        "--embedding_dim", "8", "--layers", "1", "--learning_rate", "0.01"]


# --- downloads -------------------------------------------------------------------------------------------

def closed_port():
    """A 127.0.0.1 port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FixtureServer(LocalHTTPServer):
    """http.server on 127.0.0.1 serving `files` {url path: bytes}; can fail on purpose."""

    def __init__(self):
        self.files, self.status, self.truncate_once = {}, {}, set()
        self.honor_range = True
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path in server.status:
                    self.send_error(server.status[self.path], "Access Denied")
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start, code = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honor_range:
                    start, code = int(match.group(1)), 206
                    if start >= len(body):
                        self.send_error(416)
                        return
                self.send_response(code)
                self.send_header("Content-Length", str(len(body) - start))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if self.path in server.truncate_once:
                    server.truncate_once.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True  # short body: fewer bytes than Content-Length
                    return
                self.wfile.write(body[start:])

        super().__init__(Handler, "/")


# --- the LLM stage: published answers, small ML-100K-shaped data, an OpenAI-compatible server ------------

def published_answers(original, augment, titles):
    """Per user, an answers block naming the titles the published file relabelled to 4.5.

    Users with 0.5 rows but no 4.5 row (ML-100K: 34, 225, 583, 688, asked with an empty list)
    get `[]`: upstream's defaultdict made a parsed empty list count as an answer.
    """
    frame = pd.DataFrame({"user": original[USER_COL], "title": titles, "new": augment[RATING_COL]})
    blocks = []
    for user, rows in frame.groupby("user", sort=True):
        if not rows["new"].isin([0.5, 4.5]).any():
            continue
        picked = sorted(set(rows.loc[rows["new"] == 4.5, "title"]))
        with np.printoptions(linewidth=np.inf):
            line = str(np.array([f"<{t}>" for t in picked], dtype=object))
        blocks.append(format_answer_block(int(user), line))
    return "".join(blocks)


def write_published_answers(source, path):
    """Write to `path` the answers file that gives source/ML-100K_train_augment.csv (the published
    ML-100K folder, with its raw item file)."""
    original = pd.read_csv(source / "ML-100K_train_original.csv")
    augment = pd.read_csv(source / "ML-100K_train_augment.csv")
    item = pd.read_csv(source / "ml-100k.item", sep="\t")
    titles = original.merge(item, on=ITEM_COL, how="left")["movie_title:token_seq"].to_numpy()
    path.write_text(published_answers(original, augment, titles), encoding="utf-8")


def make_dataset(root, n_users=6, n_items=30, per_user=14, seed=0):
    """Write root/ML-100K/{ML-100K_train_original.csv, ml-100k.item}; return the folder.

    `per_user`: rows per user, one number for all or a list (its length is the user count).
    """
    rng = np.random.default_rng(seed)
    folder = root / "ML-100K"
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["Drama", "Comedy", "Action Thriller", "Animation Children's", "Horror"]
    items = pd.DataFrame({"item_id:token": np.arange(1, n_items + 1),
                          "movie_title:token_seq": [f"Movie {i}" if i % 7 else f"Movie's {i}, The"
                                                    for i in range(1, n_items + 1)],
                          "release_year:token": 1990,
                          "class:token_seq": [genres[i % len(genres)] for i in range(n_items)]})
    items.to_csv(folder / "ml-100k.item", sep="\t", index=False)
    rows = []
    sizes = per_user if isinstance(per_user, (list, tuple)) else [per_user] * n_users
    for user, size in enumerate(sizes, 1):
        chosen = rng.choice(np.arange(1, n_items + 1), size=size, replace=False)
        ratings = rng.choice([1, 2, 3, 3, 3, 4, 5], size=size)
        rows += [(user, int(i), int(r)) for i, r in zip(chosen, ratings)]
    pd.DataFrame(rows, columns=[USER_COL, ITEM_COL, RATING_COL]).to_csv(
        folder / "ML-100K_train_original.csv", index=False)
    return folder


def last_candidates(prompt):
    """Titles of the last candidate list of a prompt."""
    lists = re.findall(r"(?:Candidate List|Candidate list):\n(.*)\n", prompt)
    return [t for t in re.findall(r"<([^>]+)>", lists[-1])]


def fake_answer(prompt):
    """Deterministic stand-in for the LLM: picks every other candidate.

    Prompt 1 whose first candidate has an id divisible by 3 gets an answer without the closing
    bracket, so the prompt-2 fallback is exercised.
    """
    titles = [re.sub(r" \(genre:.*\)$", "", t) for t in last_candidates(prompt)]
    picked = titles[::2]
    body = "[" + " ".join(f"'<{t}>'" for t in picked) + "]"
    prompt2 = prompt.count(SEPARATOR) == 1
    if titles and not prompt2 and int(re.search(r"\d+", titles[0]).group()) % 3 == 0:
        body = body[:-1] + " and also"
    return body + "\n\n" + SEPARATOR + "\n\nBased on the User's Positively Rated Movie List, more"


CHAT_TEMPLATE_TOKENS = 7  # what the fake chat template adds to a prompt's token count


def word_tokens(text):
    """The fake server's tokenizer: whitespace-separated words plus one BOS token."""
    return len(text.split()) + 1


def load_jobs(root):
    _, joined = load_train(root, "ML-100K")
    return joined, build_prompts(joined, "ML-100K")


def api_args(root, url, *extra):
    """`run` through --backend openai against a FakeServer at `url`."""
    return ["run", "ML-100K", "--data_dir", str(root), "--backend", "openai", "--base_url", url,
            "--model", "fake", "--no_progress", "--skip_users", "none", *extra]


def expected_outcome(job, limit, overhead=0):
    """(status, prompt used, answer) worked out from fake_answer and the server's word counts, by
    hand, independently of refine_llm's engine; `overhead`: tokens a chat template adds per count."""
    for prompt_no, prompt in ((1, job.prompt1), (2, job.prompt2)):
        budget = re.split(r"(?i)(?=candidate list:)", prompt)[-1]
        if word_tokens(prompt) + word_tokens(budget) + 2 * overhead > limit:
            return "too_long", prompt_no, None
        answer = fake_answer(prompt).split("\n")[0]
        if answer.endswith("]"):
            return "answered", prompt_no, answer
    return "hallucinated", 2, None


def expected_augment(root, jobs, outcomes):
    """Relabel by hand: union of picked titles per answered user."""
    liked = {}
    for job, (status, _, answer) in zip(jobs, outcomes):
        if status == "answered":
            liked.setdefault(job.user, set()).update(re.findall(r"<([^>]+)>", answer))
    train, joined = load_train(root, "ML-100K")
    return [(4.5 if title in liked[user] else 0.5) if user in liked and rating in (2, 3) else float(rating)
            for user, rating, title in zip(train[USER_COL], train[RATING_COL], joined["title"])]


class FakeServer(LocalHTTPServer):
    """An OpenAI-compatible server on 127.0.0.1 like vLLM: /v1/completions, /v1/chat/completions and
    /tokenize, answering `fake_answer` with usage counts (word_tokens; chat adds CHAT_TEMPLATE_TOKENS).

    `fail_after`: generation requests answer HTTP 500 after that many successful ones (an
    interrupted run). `script`: what to do with the next generation requests, one entry each, in
    arrival order, then "ok": "ok", (status, headers), "drop" (close without a response), "cut"
    (a body shorter than its Content-Length), "badutf" (a body that is not UTF-8) or "hold" (no
    answer until the server stops). Requests with max_tokens 1 count tokens (--tokenizer usage).
    """

    def __init__(self, fail_after=None, script=()):
        self.asked, self.counted, self.requests = [], [], []
        self.usage = [0, 0]
        self.fail_after, self.script = fail_after, list(script)
        self.holding = 0
        self.error_message = None  # the text of injected errors (default "injected <status>")
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client hung up mid-request: a stopped run cancels the rest
                    return
                body = json.loads(raw)
                if self.path == "/tokenize":
                    self.reply(200, {"count": word_tokens(body["prompt"])})
                    return
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    self.reply(404, {"error": {"message": "no such path"}})
                    return
                chat = self.path.endswith("chat/completions")
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                with server.lock:
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    server.requests.append({"path": self.path, "headers": headers, "body": body,
                                            "time": time.monotonic()})
                    counting = body.get("max_tokens") == 1
                    action = server.script.pop(0) if server.script and not counting else "ok"
                    if server.fail_after is not None and len(server.asked) >= server.fail_after:
                        action = (500, {"retry-after-ms": "1"})
                    if action == "ok":
                        (server.counted if counting else server.asked).append(prompt)
                if action == "hold":
                    with server.lock:
                        server.holding += 1
                    server.stopping.wait()
                    self.close_connection = True
                    return
                if action == "drop":
                    self.close_connection = True
                    return
                if isinstance(action, tuple):
                    status, headers = action
                    message = server.error_message or f"injected {status}"
                    self.reply(status, {"error": {"message": message}}, headers)
                    return
                text = "x" if counting else fake_answer(prompt)
                stop = (body.get("stop") or [None])[0]
                stop_reason = None
                if stop and stop in text:
                    keep = body.get("include_stop_str_in_output")
                    text, stop_reason = text[:text.index(stop) + (len(stop) if keep else 0)], stop
                n_prompt = sum(word_tokens(m["content"]) for m in body["messages"]) + CHAT_TEMPLATE_TOKENS \
                    if chat else word_tokens(prompt)
                usage = {"prompt_tokens": n_prompt, "completion_tokens": len(text.split()),
                         "total_tokens": n_prompt + len(text.split())}
                with server.lock:
                    server.usage[0] += usage["prompt_tokens"]
                    server.usage[1] += usage["completion_tokens"]
                choice = {"index": 0, "finish_reason": "stop", "stop_reason": stop_reason}
                choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                payload = {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
                           "model": body["model"], "choices": [choice], "usage": usage}
                data = json.dumps(payload).encode()
                if action == "badutf":
                    data = data.replace(b'"index"', b'"\xff\xfeindex"')
                if action == "cut":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data) + 50))
                    self.end_headers()
                    self.wfile.write(data)
                    self.close_connection = True
                    return
                self.send_bytes(200, data)

            def reply(self, code, payload, headers=None):
                self.send_bytes(code, json.dumps(payload).encode(), headers)

            def send_bytes(self, code, data, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler, "/v1")

    def __exit__(self, *exc):
        self.stopping.set()  # releases held requests
        super().__exit__(*exc)
