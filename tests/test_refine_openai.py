"""The openai backend (official `openai` client) against a small OpenAI-compatible server on 127.0.0.1:
both endpoints, keys, retries, hard errors, resume, Ctrl-C with requests in flight.

    .venv/bin/python -m pytest -q tests/test_refine_openai.py
"""
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import pandas as pd
import pytest

from llm.answers import read_cache_records
from llm.data import RATING_COL
from llm.prompts import SEPARATOR, budget_text
import refine_llm as R
from helpers import (CHAT_TEMPLATE_TOKENS, ROOT, FakeServer, LocalHTTPServer, api_args, ctrl_c_enabled,
                     expected_augment, expected_outcome, load_jobs, make_dataset, word_tokens)

KEY = "sk-test-7f3a9c1e5b2d4086"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """The client's first retry waits 0.5 s and doubles; 10 ms here keeps the tests fast."""
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.01)


def generation_requests(server):
    return [r for r in server.requests if r["body"].get("max_tokens") != 1]


@pytest.mark.parametrize("api, tokenizer", [("completions", "server"), ("completions", "usage"), ("chat", None)])
def test_both_endpoints_give_the_hand_worked_answers(tmp_path, monkeypatch, api, tokenizer):
    make_dataset(tmp_path, n_users=5, seed=4)
    _, jobs = load_jobs(tmp_path)
    # Chat counts the template too (the fake server adds CHAT_TEMPLATE_TOKENS to each count).
    overhead = CHAT_TEMPLATE_TOKENS if api == "chat" else 0
    totals = sorted(word_tokens(j.prompt1) + word_tokens(budget_text(j.prompt1)) + 2 * overhead for j in jobs)
    limit = totals[-1] - 1  # the longest prompt 1 is too long
    outcomes = [expected_outcome(j, limit, overhead) for j in jobs]
    statuses = [o[0] for o in outcomes]
    assert statuses.count("too_long") >= 1 and statuses.count("answered") >= 2
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    extra = ["--api", api, "--max_total_tokens", str(limit), "--concurrency", "3"]
    extra += ["--tokenizer", tokenizer] if tokenizer else []
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, *extra)) == 0
    augment = pd.read_csv(tmp_path / "ML-100K" / "ML-100K_train_augment.csv")
    assert augment[RATING_COL].tolist() == expected_augment(tmp_path, jobs, outcomes)
    report = json.loads((tmp_path / "ML-100K" / "llm" / "report.json").read_text())
    assert (report["answered"], report["skipped_too_long"]) == (statuses.count("answered"), statuses.count("too_long"))
    assert (report["prompt_tokens"], report["completion_tokens"]) == tuple(server.usage)
    assert report["api"] == api and report["requests_retried"] == report["retries"] == 0
    asked = generation_requests(server)
    for request in asked:
        body = request["body"]
        assert request["headers"]["authorization"] == f"Bearer {KEY}"
        assert (body["temperature"], body["top_p"], body["n"], body["stop"]) == (0, 1, 1, [SEPARATOR])
        prompt = body["messages"][0]["content"] if api == "chat" else body["prompt"]
        if api == "chat":
            # The published prompt, unchanged, as the only (user) message.
            assert body["messages"] == [{"role": "user", "content": prompt}]
        assert body["max_tokens"] == word_tokens(budget_text(prompt)) + overhead
    # A too-long prompt is never asked when counted first (/tokenize); with usage counts it is asked
    # once, then recorded as too long.
    asked_prompts = {r["body"].get("prompt") or r["body"]["messages"][0]["content"] for r in asked}
    too_long = {j.prompt1 if o[1] == 1 else j.prompt2 for j, o in zip(jobs, outcomes) if o[0] == "too_long"}
    assert bool(too_long & asked_prompts) == (tokenizer != "server")
    assert len(asked) == len(asked_prompts)


def test_chat_system_message_goes_first_and_is_part_of_the_cache_key(tmp_path):
    make_dataset(tmp_path, n_users=2, seed=1)
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, "--api", "chat", "--system", "You are a film critic.")) == 0
        first = generation_requests(server)
        assert first and all(r["body"]["messages"][0] == {"role": "system", "content": "You are a film critic."}
                             and r["body"]["messages"][1]["role"] == "user" for r in first)
        count_requests = [r for r in server.requests if r["body"].get("max_tokens") == 1]
        assert all(len(r["body"]["messages"]) == 1 for r in count_requests)  # the budget alone
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, "--api", "chat", "--system", "Be brief.")) == 0
        assert len(server.asked) == len(first)  # another system message: other answers
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server")) == 0
        assert len(server.asked) >= len(load_jobs(tmp_path)[1])  # completions: not the chat answers
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, "--api", "chat", "--system", "Be brief.")) == 0
        assert server.asked == []


def test_429_with_retry_after_then_503_then_success_answers_once(tmp_path):
    make_dataset(tmp_path, n_users=1, seed=2)
    script = [(429, {"Retry-After": "0.3"}), (503, {"retry-after-ms": "1"})]
    with FakeServer(script=script) as server:
        assert R.main(api_args(tmp_path, server.url, "--api", "chat", "--max_prompts", "1",
                               "--concurrency", "1")) == 0
    first_prompt = [r for r in generation_requests(server) if r["body"] == generation_requests(server)[0]["body"]]
    assert len(first_prompt) == 3  # 429, 503, answer
    assert first_prompt[1]["time"] - first_prompt[0]["time"] >= 0.3  # Retry-After honoured
    records = read_cache_records(tmp_path / "ML-100K" / "llm" / "answers_cache.jsonl")
    assert [r["prompt"] for r in records] in ([1], [1, 2])  # answered once, cached once
    report = json.loads((tmp_path / "ML-100K" / "llm" / "report.json").read_text())
    assert (report["requests_retried"], report["retries"]) == (1, 2)


def test_dropped_connection_body_cut_short_and_timeout_are_retried(tmp_path):
    make_dataset(tmp_path, n_users=1, seed=2)
    with FakeServer(script=["drop", "cut", "hold"]) as server:
        assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server", "--max_prompts", "1",
                               "--concurrency", "1", "--timeout", "0.5")) == 0
    first_prompt = [r for r in generation_requests(server) if r["body"] == generation_requests(server)[0]["body"]]
    assert len(first_prompt) == 4 and server.asked[0] == first_prompt[0]["body"]["prompt"]
    records = read_cache_records(tmp_path / "ML-100K" / "llm" / "answers_cache.jsonl")
    assert [r["prompt"] for r in records] in ([1], [1, 2])
    report = json.loads((tmp_path / "ML-100K" / "llm" / "report.json").read_text())
    assert (report["requests_retried"], report["retries"]) == (1, 3)


@pytest.mark.parametrize("failure, message", [
    ((401, {}), "answered HTTP 401: injected 401; check the key in $OPENAI_API_KEY"),
    ((404, {}), "answered HTTP 404: injected 404; unknown model 'fake'"),
    ("badutf", "answered a body that is not UTF-8 JSON"),
])
def test_hard_failures_stop_at_once_with_one_line(tmp_path, capsys, failure, message):
    make_dataset(tmp_path, n_users=3, seed=1)
    with FakeServer(script=[failure] * 50) as server:
        assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server", "--concurrency", "1")) == 2
    assert len(generation_requests(server)) == 1  # not retried, nothing else sent
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert "rerun the same command to resume" in err


def test_key_and_header_values_appear_in_no_file_and_no_message(tmp_path, monkeypatch, capsys):
    make_dataset(tmp_path, n_users=2, seed=1)
    monkeypatch.setenv("MY_HOST_KEY", KEY)
    header = "X-Team-Token: tok-5e1d0c77aa"
    args = ["--api", "chat", "--api_key_env", "MY_HOST_KEY", "--header", header]
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, *args)) == 0
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" and r["headers"]["x-team-token"] == "tok-5e1d0c77aa"
               for r in server.requests)
    # A server that echoes the key in its error message: masked on the way out.
    echo = (401, {})
    with FakeServer(script=[echo]) as server:
        server.error_message = f"Incorrect API key provided: {KEY}"
        assert R.main(api_args(tmp_path, server.url, *args, "--out_dir", str(tmp_path / "second"))) == 2
    out = capsys.readouterr()
    assert "***" in out.err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 6
    for path in written:
        data = path.read_bytes()
        assert KEY.encode() not in data and b"tok-5e1d0c77aa" not in data, path
    assert KEY not in out.out + out.err and "tok-5e1d0c77aa" not in out.out + out.err
    monkeypatch.delenv("MY_HOST_KEY")
    assert R.main(api_args(tmp_path, "http://127.0.0.1:9/v1", *args)) == 2
    assert "--api_key_env MY_HOST_KEY: that environment variable is not set" in capsys.readouterr().err


class Redirector(LocalHTTPServer):
    """Answers every POST with a 307 to the same path on `target` (another port: another origin),
    recording the headers it received."""

    def __init__(self, target):
        self.headers = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.headers.append({name.lower(): value for name, value in self.headers.items()})
                self.send_response(307)
                self.send_header("Location", target.rstrip("/").removesuffix("/v1") + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler, "/v1")


def test_a_redirect_to_another_origin_gets_neither_key_nor_header_values(tmp_path, monkeypatch):
    """--header and --header_env values, and the key, go to the named origin only; the run still works."""
    make_dataset(tmp_path, n_users=2, seed=1)
    monkeypatch.setenv("MY_HOST_KEY", KEY)
    monkeypatch.setenv("MY_TEAM_TOKEN", "tok-env-41c2aa90")
    args = ["--tokenizer", "server", "--api_key_env", "MY_HOST_KEY", "--header", "X-Team: tok-5e1d0c77aa",
            "--header_env", "X-Env-Team: MY_TEAM_TOKEN"]
    with FakeServer() as elsewhere, Redirector(elsewhere.url) as home:
        assert R.main(api_args(tmp_path, home.url, *args)) == 0
    assert home.headers and all(h["authorization"] == f"Bearer {KEY}" and h["x-team"] == "tok-5e1d0c77aa"
                                and h["x-env-team"] == "tok-env-41c2aa90" for h in home.headers)
    arrived = [r["headers"] for r in elsewhere.requests]
    assert arrived  # the redirect was followed: every answer came from there
    for headers in arrived:
        assert not {"authorization", "x-team", "x-env-team"} & set(headers), headers
    assert (tmp_path / "ML-100K" / "ML-100K_train_augment.csv").is_file()


def test_header_env_with_an_unset_variable_is_one_line(tmp_path, capsys):
    make_dataset(tmp_path, n_users=1)
    assert R.main(api_args(tmp_path, "http://127.0.0.1:9/v1", "--header_env", "X-Team: NO_SUCH_VAR_7A")) == 2
    err = capsys.readouterr().err
    assert err == "error: --header_env X-Team: environment variable 'NO_SUCH_VAR_7A' is not set\n"


def test_stop_modes_and_the_vllm_field_hint(tmp_path, capsys):
    make_dataset(tmp_path, n_users=1, seed=2)
    for mode, stop, field in (("vllm", [SEPARATOR], True), ("plain", [SEPARATOR], False), ("none", None, False)):
        with FakeServer() as server:
            assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server", "--stop", mode,
                                   "--out_dir", str(tmp_path / mode))) == 0
        body = generation_requests(server)[0]["body"]
        assert body.get("stop") == stop and ("include_stop_str_in_output" in body) == field
    # The three modes give the same answers (the cut drops the separator line in each).
    answers = {mode: (tmp_path / mode / "llama_distinguish_answer.txt").read_text()
               for mode in ("vllm", "plain", "none")}
    assert answers["vllm"] == answers["plain"] == answers["none"] != ""
    with FakeServer(script=[(400, {})]) as server:
        server.error_message = "Unrecognized request argument supplied: include_stop_str_in_output"
        assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server", "--out_dir", str(tmp_path / "x"))) == 2
    assert "pass --stop plain" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--timeout", "-1"), ("--timeout", "nan"), ("--timeout", "0"),
                                         ("--concurrency", "0"), ("--max_retries", "-1")])
def test_bad_flag_values_are_refused_before_any_work(tmp_path, flag, value):
    result = subprocess.run([sys.executable, "refine_llm.py", "generate", "ML-100K", "--backend", "openai",
                             "--data_dir", str(tmp_path), flag, value],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: argument {flag}: {value!r} is not")
    assert result.stderr.endswith("(see python refine_llm.py generate --help)\n")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_with_requests_in_flight_keeps_what_arrived_and_does_not_wait(tmp_path, signum):
    """Ctrl-C, and SIGTERM (a scheduler's stop) the same way."""
    make_dataset(tmp_path, n_users=6, seed=3)
    _, jobs = load_jobs(tmp_path)
    argv = [sys.executable, "refine_llm.py", *api_args(tmp_path, "URL", "--tokenizer", "server",
                                                       "--concurrency", "3", "--timeout", "300")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with FakeServer(script=["ok", "ok"] + ["hold"] * 100) as server:
        argv[argv.index("URL")] = server.url
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=ctrl_c_enabled)
        deadline = time.monotonic() + 60
        while (len(server.asked) < 2 or server.holding < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.asked) == 2 and server.holding == 3  # two answered, three in flight
        time.sleep(0.3)  # let the two answers reach the client
        interrupted = time.monotonic()
        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
        # The held requests are dropped at once, not waited for (the server never answers them).
        assert time.monotonic() - interrupted < 10
        first = list(server.asked)
    assert process.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: interrupted; every answer received is in ")
    assert err.strip().endswith("rerun the same command to resume (it asks only prompts without an answer)")
    records = read_cache_records(tmp_path / "ML-100K" / "llm" / "answers_cache.jsonl")
    assert len(records) == 2  # both answers that arrived are cached
    with FakeServer() as server:
        assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server")) == 0
        second = list(server.asked)
    assert not set(first) & set(second) and len(second) >= len(jobs) - 2


def test_flag_values_that_may_hold_secrets_are_not_echoed(tmp_path, capsys):
    make_dataset(tmp_path, n_users=1)
    for url, extra, message in (("http://me:pw-9f8e7d@host:port/v1", [], "--base_url: expected http(s)://"),
                                ("http://127.0.0.1:9/v1", ["--header", "pw-9f8e7d"], "--header number 1: expected")):
        assert R.main(api_args(tmp_path, url, *extra)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "pw-9f8e7d" not in err


def test_retry_after_longer_than_the_client_waits_stops_with_that_reason(tmp_path, capsys):
    make_dataset(tmp_path, n_users=1)
    with FakeServer(script=[(429, {"Retry-After": "500"})]) as server:
        assert R.main(api_args(tmp_path, server.url, "--tokenizer", "server", "--max_prompts", "1")) == 2
    assert len(generation_requests(server)) == 1
    err = capsys.readouterr().err
    assert "answered HTTP 429 injected 429 and asks to wait 500 s (Retry-After)" in err and err.count("\n") == 1
