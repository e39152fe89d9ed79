"""Small synthetic ML-100K-shaped data and a deterministic OpenAI-compatible server for refine tests."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pandas as pd

from llm.data import ITEM_COL, RATING_COL, USER_COL, load_train
from llm.prompts import SEPARATOR, build_prompts
from conftest import LocalHTTPServer


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
