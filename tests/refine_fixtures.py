"""Small synthetic ML-100K-shaped data and a deterministic /v1/completions server for refine tests."""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler

import numpy as np
import pandas as pd

import refine_llm as R
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
    pd.DataFrame(rows, columns=[R.USER_COL, R.ITEM_COL, R.RATING_COL]).to_csv(
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
    prompt2 = prompt.count(R.SEPARATOR) == 1
    if titles and not prompt2 and int(re.search(r"\d+", titles[0]).group()) % 3 == 0:
        body = body[:-1] + " and also"
    return body + "\n\n" + R.SEPARATOR + "\n\nBased on the User's Positively Rated Movie List, more"


class FakeServer(LocalHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 with /v1/completions and /tokenize (vLLM-like).

    Tokens are whitespace-separated words plus one BOS. `fail_after` makes completions answer
    HTTP 500 after that many successful ones (an interrupted run).
    """

    def __init__(self, fail_after=None):
        self.asked = []
        self.fail_after = fail_after
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    self.reply(200, {"count": len(body["prompt"].split()) + 1})
                elif self.path == "/v1/completions":
                    with server.lock:
                        if server.fail_after is not None and len(server.asked) >= server.fail_after:
                            self.reply(500, {"error": "injected failure"})
                            return
                        server.asked.append(body["prompt"])
                    text = fake_answer(body["prompt"])
                    stop = (body.get("stop") or [None])[0]
                    if stop and stop in text:
                        keep = body.get("include_stop_str_in_output")
                        text = text[:text.index(stop) + (len(stop) if keep else 0)]
                    self.reply(200, {"choices": [{"text": text, "finish_reason": "stop"}]})
                else:
                    self.reply(404, {"error": "no such path"})

            def reply(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler, "/v1")
