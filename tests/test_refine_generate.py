"""Generate stage: HTTP backend against a local server, resume, replay, tiny transformers model, bad input.

    .venv/bin/python -m pytest -q tests/test_refine_generate.py
"""
import json

import pandas as pd
import pytest

from llm.answers import format_answer_block, read_cache_records
from llm.backends import TransformersBackend, _SeparatorStop
from llm.data import ITEM_COL, RATING_COL, USER_COL
from llm.prompts import SEPARATOR, budget_text
import refine_llm as R
from helpers import FakeServer, api_args, expected_augment, expected_outcome, load_jobs, make_dataset, word_tokens


def http_args(root, url, *extra):
    return api_args(root, url, "--tokenizer", "server", *extra)


def test_http_backend_run_matches_hand_worked_answers(tmp_path):
    make_dataset(tmp_path, n_users=6)
    joined, jobs = load_jobs(tmp_path)
    totals = sorted(word_tokens(j.prompt1) + word_tokens(budget_text(j.prompt1)) for j in jobs)
    limit = totals[-1] - 1  # the longest prompts 1 (and longer prompt-2 retries) are too long
    assert totals[-1] > limit
    outcomes = [expected_outcome(j, limit) for j in jobs]
    with FakeServer() as server:
        code = R.main(http_args(tmp_path, server.url, "--concurrency", "4", "--max_total_tokens", str(limit)))
    assert code == 0
    report = json.loads((tmp_path / "ML-100K" / "llm" / "report.json").read_text())
    statuses = [o[0] for o in outcomes]
    assert report["prompts"] == len(jobs)
    assert report["answered"] == statuses.count("answered") > 0
    assert report["skipped_too_long"] == statuses.count("too_long") > 0
    assert report["answered_with_prompt2"] == sum(o[:2] == ("answered", 2) for o in outcomes) > 0
    assert report["hallucinated"] == statuses.count("hallucinated")
    # Each prompt asked once: prompt 1 for all not too long, prompt 2 only after a missing `]`.
    assert len(server.asked) == len(set(server.asked))
    # Published answers-file format, in (user, chunk) order.
    expected_txt = "".join(format_answer_block(j.user, o[2]) for j, o in zip(jobs, outcomes) if o[0] == "answered")
    assert (tmp_path / "ML-100K" / "llm" / "llama_distinguish_answer.txt").read_text() == expected_txt
    augment = pd.read_csv(tmp_path / "ML-100K" / "ML-100K_train_augment.csv")
    assert augment[RATING_COL].tolist() == expected_augment(tmp_path, jobs, outcomes)


def test_string_user_ids_go_through_prompts_generate_and_apply(tmp_path):
    """Amazon-style user ids (`A1B2C3`): every stage keeps them as text, and the skip list names them."""
    folder = make_dataset(tmp_path, n_users=4, seed=4)
    train_path = folder / "ML-100K_train_original.csv"
    train = pd.read_csv(train_path)
    train[USER_COL] = train[USER_COL].map(lambda u: f"A{u}X{u * 7}Q")
    train.to_csv(train_path, index=False)
    (folder / "llm_skip_users.txt").write_text("A2X14Q\n")
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (folder / "llm" / "prompts.jsonl").read_text().splitlines()]
    assert {r["user"] for r in records} == {"A1X7Q", "A3X21Q", "A4X28Q"}
    _, jobs = load_jobs(tmp_path)
    assert {j.user for j in jobs} == set(train[USER_COL])
    outcomes = [expected_outcome(j, 5000) for j in jobs]
    assert "answered" in {o[0] for o in outcomes}
    with FakeServer() as server:
        assert R.main(http_args(tmp_path, server.url)) == 0
    augment = pd.read_csv(folder / "ML-100K_train_augment.csv")
    assert augment[USER_COL].tolist() == train[USER_COL].tolist()
    assert augment[RATING_COL].tolist() == expected_augment(tmp_path, jobs, outcomes)
    # apply from the published answers format and from the cache: the same file.
    answers_txt = (folder / "llm" / "llama_distinguish_answer.txt").read_text()
    assert "LLaMA's cut recommendation for user A1X7Q:" in answers_txt
    for answers in ("llama_distinguish_answer.txt", "answers_cache.jsonl"):
        out = tmp_path / f"{answers}.csv"
        assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(folder / "llm" / answers),
                       "--output", str(out)]) == 0
        assert out.read_bytes() == (folder / "ML-100K_train_augment.csv").read_bytes()


@pytest.mark.parametrize("api", [["--tokenizer", "server"], ["--api", "chat"]])
def test_failing_server_stops_run_and_rerun_asks_only_the_rest(tmp_path, capsys, api):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    for root in (straight, broken):
        make_dataset(root, n_users=8, seed=3)
    with FakeServer() as server:
        assert R.main(api_args(straight, server.url, *api, "--concurrency", "3")) == 0
        total_asked = len(server.asked)
    capsys.readouterr()
    with FakeServer(fail_after=7) as server:
        assert R.main(api_args(broken, server.url, *api, "--concurrency", "3", "--max_retries", "2")) == 2
        first = list(server.asked)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answered HTTP 500 injected 500, still after 2 retries" in err
    assert len(first) == 7
    cache_path = broken / "ML-100K" / "llm" / "answers_cache.jsonl"
    assert len(read_cache_records(cache_path)) == 7  # every answer the server gave is kept
    with open(cache_path, "a") as handle:
        handle.write('{"user": 1, "chunk": 0, "pro')  # as if killed in the middle of a write
    with FakeServer() as server:
        assert R.main(api_args(broken, server.url, *api, "--concurrency", "3")) == 0
        second = list(server.asked)
    assert not set(first) & set(second)
    assert len(first) + len(second) == total_asked
    for name in ("llm/llama_distinguish_answer.txt", "ML-100K_train_augment.csv"):
        assert (broken / "ML-100K" / name).read_bytes() == (straight / "ML-100K" / name).read_bytes()
    # A third run asks nothing at all.
    with FakeServer() as server:
        assert R.main(api_args(broken, server.url, *api)) == 0
        assert server.asked == []


def test_replay_of_cache_and_answers_file(tmp_path):
    make_dataset(tmp_path, n_users=4, seed=5)
    with FakeServer() as server:
        assert R.main(http_args(tmp_path, server.url)) == 0
    llm = tmp_path / "ML-100K" / "llm"
    augment = (tmp_path / "ML-100K" / "ML-100K_train_augment.csv").read_bytes()
    for source in ("answers_cache.jsonl", "llama_distinguish_answer.txt"):
        out = tmp_path / f"replay-{source}"
        argv = ["run", "ML-100K", "--data_dir", str(tmp_path), "--backend", "replay", "--replay", str(llm / source),
                "--out_dir", str(out), "--output", str(out / "augment.csv"), "--no_progress", "--skip_users", "none"]
        assert R.main(argv) == 0
        assert (out / "augment.csv").read_bytes() == augment
        # apply straight from either file gives the same.
        assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(llm / source),
                       "--output", str(out / "applied.csv")]) == 0
        assert (out / "applied.csv").read_bytes() == augment


def test_unreachable_server_is_one_line_error_and_keeps_answers(tmp_path, capsys):
    make_dataset(tmp_path, n_users=3, seed=1)
    with FakeServer(fail_after=2) as server:
        assert R.main(http_args(tmp_path, server.url, "--concurrency", "1")) == 2
    cache = tmp_path / "ML-100K" / "llm" / "answers_cache.jsonl"
    before = cache.read_text()
    assert len(before.splitlines()) == 2
    capsys.readouterr()
    # The server is gone now: nothing listens on that port.
    assert R.main(http_args(tmp_path, server.url, "--max_retries", "0")) == 2
    err = capsys.readouterr().err.strip()
    root = server.url.removesuffix("/v1")
    assert err.startswith(f"error: cannot reach {root}/tokenize: ") and "\n" not in err
    assert cache.read_text() == before


@pytest.mark.parametrize("drop, message", [("class:token_seq", "missing column(s) class:token_seq"),
                                           ("movie_title:token_seq", "missing column(s) movie_title:token_seq")])
def test_item_file_without_title_or_genre_column(tmp_path, capsys, drop, message):
    folder = make_dataset(tmp_path, n_users=2)
    items = pd.read_csv(folder / "ml-100k.item", sep="\t").drop(columns=[drop])
    items.to_csv(folder / "ml-100k.item", sep="\t", index=False)
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_other_bad_inputs_exit_2(tmp_path, capsys):
    folder = make_dataset(tmp_path, n_users=2)
    cases = [
        (["prompts", "ML-20M", "--data_dir", str(tmp_path)], "unknown dataset 'ML-20M'"),
        (["prompts", "ML-100K", "--data_dir", str(tmp_path / "nowhere")],
         f"ML-100K_train_original.csv: get the published splits with `python dataloader.py download ML-100K "
         f"--refined --data_dir {tmp_path / 'nowhere'}`"),
        (["prompts", "ML-100K", "--data_dir", str(tmp_path), "--skip_users", str(tmp_path / "x.txt")],
         "skip list not found"),
        (["generate", "ML-100K", "--data_dir", str(tmp_path), "--backend", "hf", "--model", str(tmp_path / "no-model")],
         "cannot load model"),
        (["apply", "ML-100K", "--data_dir", str(tmp_path)], "answers file not found"),
    ]
    for argv, message in cases:
        assert R.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    # An item missing from the item file.
    items = pd.read_csv(folder / "ml-100k.item", sep="\t")
    items.iloc[1:].to_csv(folder / "ml-100k.item", sep="\t", index=False)
    train = pd.read_csv(folder / "ML-100K_train_original.csv")
    train.loc[0, ITEM_COL] = 1
    train.to_csv(folder / "ML-100K_train_original.csv", index=False)
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path)]) == 2
    assert "have no title or genre" in capsys.readouterr().err
    # No 2/3-star rows anywhere: nothing for the LLM to refine.
    train[RATING_COL] = 5
    train.to_csv(folder / "ML-100K_train_original.csv", index=False)
    items.to_csv(folder / "ml-100k.item", sep="\t", index=False)
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path)]) == 2
    assert "no 2- or 3-star rows" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from bench.tiny_llm import build_tiny_llm

    root = tmp_path_factory.mktemp("tiny")
    make_dataset(root, per_user=[4, 6, 12], seed=2)
    _, jobs = load_jobs(root)
    texts = [j.prompt1 for j in jobs] + [j.prompt2 for j in jobs]
    # A vocabulary fitted to these prompts keeps them short (~280 tokens), so CPU generation is quick.
    return root, build_tiny_llm(root / "model", texts, vocab_size=1500), jobs


def test_transformers_backend_tiny_model_batched_equals_one_at_a_time(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    root, model_dir, jobs = tiny_model
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    def total(prompt):
        return len(tokenizer(prompt)["input_ids"]) + len(tokenizer(budget_text(prompt))["input_ids"])

    limit = max(total(j.prompt1) for j in jobs) - 1  # the longest prompt 1 is skipped ...
    assert min(total(j.prompt2) for j in jobs) <= limit  # ... and some prompt 2 fits
    reports, caches = [], []
    for batch in (1, 3):
        out = tmp_path / f"b{batch}"
        argv = ["generate", "ML-100K", "--data_dir", str(root), "--backend", "hf", "--model", str(model_dir),
                "--device", "cpu", "--dtype", "float64", "--batch_size", str(batch), "--out_dir", str(out),
                "--max_total_tokens", str(limit), "--no_progress", "--skip_users", "none"]
        assert R.main(argv) == 0
        reports.append(json.loads((out / "report.json").read_text()))
        caches.append(sorted((r["user"], r["chunk"], r["prompt"], r["status"], r["answer"], r["budget_tokens"])
                             for r in read_cache_records(out / "answers_cache.jsonl")))
    report = reports[0]
    assert report["prompts"] == len(jobs)
    assert report["answered"] + report["skipped_too_long"] + report["hallucinated"] == len(jobs)
    assert report["skipped_too_long"] >= 1 and report["hallucinated"] >= 1
    # Gibberish answers: prompt 1 missed its `]`, so prompt 2 was tried for them.
    assert any(rec[2] == 2 for rec in caches[0])
    # Left padding and per-sequence stopping change nothing in greedy answers (float64).
    assert caches[0] == caches[1]
    assert {k: v for k, v in reports[1].items() if k not in ("seconds", "prompts_per_second")} == \
           {k: v for k, v in report.items() if k not in ("seconds", "prompts_per_second")} | \
           {"answers_file": reports[1]["answers_file"], "cache_file": reports[1]["cache_file"]}


def test_transformers_backend_stops_at_separator(tiny_model):
    # Force the model to emit the separator: the criterion must stop that row only.
    import torch

    _, model_dir, _ = tiny_model
    backend = TransformersBackend(str(model_dir), device="cpu", dtype="float64", batch_size=2)
    sep_ids = backend.tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    stop = _SeparatorStop(backend.tokenizer, prompt_width=2, limits=[50, 50])
    ids = torch.tensor([[1, 5] + sep_ids + [7], [1, 5] + [9] * (len(sep_ids) + 1)])
    assert stop(ids, None).tolist() == [True, False]
    assert stop.finished_at(0, 99) == len(sep_ids) + 1 and stop.finished_at(1, 99) == 99
    # The token budget stops a row too (upstream's max_length = prompt + budget tokens).
    budget = _SeparatorStop(backend.tokenizer, prompt_width=2, limits=[3, 4])
    assert budget(torch.tensor([[1, 5, 9, 9, 9], [1, 5, 9, 9, 9]]), None).tolist() == [True, False]
    assert budget.finished_at(0, 3) == 3
