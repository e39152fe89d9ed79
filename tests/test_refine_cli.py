"""refine_llm's command line: --help, fast flag errors, hints for missing inputs, the skip
lists, Ctrl-C in each stage, and the diff command.

    .venv/bin/python -m pytest -q tests/test_refine_cli.py
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm.answers import format_answer_block
import refine_llm as R
from helpers import ROOT, make_dataset

STAGES = ["prompts", "generate", "apply", "run", "diff"]


def stage_parsers():
    parser = R.build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [(name, choices[name]) for name in STAGES]


@pytest.mark.parametrize("name, parser", stage_parsers())
def test_every_flag_has_help_and_its_default(name, parser):
    formatter = R.HelpFormatter("prog")
    for action in parser._actions:
        assert action.help, action.dest
        if action.option_strings and action.dest != "help":
            assert "default" in formatter._get_help_string(action), action.option_strings
    text = parser.format_help()
    assert "examples:\n  python refine_llm.py " + name in text and "outputs:" in text


def test_help_and_flag_errors_load_no_heavy_module():
    # What --help and a bad flag import decides how fast they answer (pandas, numpy, openai, torch: seconds).
    probe = ("import sys, refine_llm\n"
             "for argv in (['--help'], ['run', '--help'], ['run', 'ML-100K', '--timeout', '-1']):\n"
             "    try:\n        refine_llm.main(argv)\n"
             "    except SystemExit as stop:\n        assert stop.code in (0, 2)\n"
             "heavy = [m for m in ('pandas', 'numpy', 'openai', 'torch', 'transformers') if m in sys.modules]\n"
             "print('HEAVY', heavy, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr
    assert "usage: python refine_llm.py" in result.stdout


def test_missing_item_file_says_where_it_comes_from(tmp_path, capsys):
    folder = make_dataset(tmp_path / "my data", n_users=2)
    (folder / "ml-100k.item").unlink()
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path / "my data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"file not found: {folder / 'ml-100k.item'}: the item file comes with" in err
    assert f"`python dataloader.py download ML-100K --data_dir {tmp_path / 'my data'}` fetches" in err
    netflix = tmp_path / "Netflix-1M"
    netflix.mkdir()
    (netflix / "Netflix-1M_train_original.csv").write_text("user_id:token,item_id:token,rating:float\n1,1,3\n")
    assert R.main(["prompts", "Netflix-1M", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "movie_titles.csv: it is part of the Netflix Prize data" in err and "Kaggle" in err


def test_skip_list_default_is_the_shipped_one_and_a_user_file_overrides_it(tmp_path, capsys):
    # ML-100K's published list skips users 1, 6 and 7 of users 1..8 (docs/llm.md, skip lists).
    folder = make_dataset(tmp_path, n_users=8)
    cases = [([], None, [2, 3, 4, 5, 8], "(116 users in the skip list)"),
             ([], "2\n# a comment\n\n5\n", [1, 3, 4, 6, 7, 8], "(2 users in the skip list)"),
             (["--skip_users", str(tmp_path / "mine.txt")], None, [1, 2, 3, 4, 5, 6, 7], "(1 user in the skip list)"),
             (["--skip_users", "none"], None, [1, 2, 3, 4, 5, 6, 7, 8], "(0 users in the skip list)")]
    (tmp_path / "mine.txt").write_text("8\n")
    for extra, content, asked, note in cases:
        if content:
            (folder / "llm_skip_users.txt").write_text(content)
        assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path), *extra]) == 0
        captured = capsys.readouterr()
        assert captured.err == "" and note in captured.out
        lines = (folder / "llm" / "prompts.jsonl").read_text().splitlines()
        assert sorted({json.loads(line)["user"] for line in lines}) == asked


@pytest.mark.parametrize("stage, target, note", [
    ("prompts", "build_prompts", "prompts.jsonl is written only when complete; rerun the same command"),
    ("apply", "relabel", "ML-100K_train_augment.csv is replaced only when complete; rerun the same command"),
    ("generate", "ReplayBackend", "nothing was asked yet; rerun the same command"),
    ("generate", "generate_answers", "every answer received is in "),
    ("run", "stage_apply", "ML-100K_train_augment.csv is replaced only when complete; rerun the same command "
                           "(it asks nothing more)"),
    ("diff", "read_csv_checked", "nothing was written; rerun the same command"),
])
def test_ctrl_c_in_each_stage_is_one_truthful_line(tmp_path, monkeypatch, capsys, stage, target, note):
    folder = make_dataset(tmp_path, n_users=2)
    answers = tmp_path / "answers.txt"
    answers.write_text(format_answer_block(1, "[]"))
    augment = folder / "ML-100K_train_augment.csv"
    augment.write_text("earlier\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, target, interrupted)
    argv = {"diff": ["diff", str(augment), str(augment)],
            "apply": ["apply", "ML-100K", "--answers", str(answers)]}.get(stage, [stage, "ML-100K"])
    if stage in ("generate", "run"):
        argv += ["--backend", "replay", "--replay", str(answers), "--no_progress"]
    assert R.main(argv + ([] if stage == "diff" else ["--data_dir", str(tmp_path), "--skip_users", "none"])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: interrupted; ") and note in err
    assert augment.read_text() == "earlier\n"


def write_augment(path, ratings):
    rows = "".join(f"{user},{item},{rating}\n" for (user, item), rating in zip(DIFF_KEYS, ratings))
    path.write_text("user_id:token,item_id:token,rating:float\n" + rows)
    return path


DIFF_KEYS = [(1, 10), (1, 11), (1, 12), (2, 10), (2, 13), (3, 11), (3, 12)]


def test_diff_counts_relabels_and_agreement(tmp_path, capsys):
    # Original ratings: 3, 2, 5, 3, 3, 2, 4. A relabels users 1 and 2, B users 1 and 3.
    first = write_augment(tmp_path / "a.csv", [4.5, 0.5, 5, 4.5, 0.5, 2, 4])
    second = write_augment(tmp_path / "b.csv", [4.5, 4.5, 5, 3, 3, 0.5, 4])
    assert R.main(["diff", str(first), str(second)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line[:18].strip(): line[18:].split() for line in lines[3:7]}
    assert table == {"users relabelled": ["2", "2"], "rows -> 4.5": ["2", "2"], "rows -> 0.5": ["2", "1"],
                     "2/3 rows left": ["1", "2"]}
    # Rows relabelled in both: (1,10) 4.5/4.5 and (1,11) 0.5/4.5.
    assert lines[7] == "rows relabelled in both: 2, same label 1 (50.0%); A 4.5 / B 0.5: 0, A 0.5 / B 4.5: 1"
    assert lines[8] == "rows relabelled in A only: 2, in B only: 1"


@pytest.mark.parametrize("ratings, keys, message", [
    ([4.5, 0.5, 5, 4.5, 0.5, 2, 5], DIFF_KEYS, "differ at line 8 in a way a relabel cannot explain"),
    ([4.5, 0.5, 5, 4.5, 0.5, 2, 4], DIFF_KEYS[::-1], "do not list the same (user, item) rows"),
])
def test_diff_refuses_files_of_different_train_originals(tmp_path, capsys, ratings, keys, message):
    first = write_augment(tmp_path / "a.csv", [4.5, 0.5, 5, 4.5, 0.5, 2, 4])
    second = tmp_path / "b.csv"
    second.write_text("user_id:token,item_id:token,rating:float\n"
                      + "".join(f"{u},{i},{r}\n" for (u, i), r in zip(keys, ratings)))
    assert R.main(["diff", str(first), str(second)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize("stage, what", [("prompts", "train"), ("prompts", "item"), ("prompts", "skip"),
                                         ("apply", "answers")])
def test_an_input_that_is_a_folder_is_one_line_naming_it(tmp_path, capsys, stage, what):
    folder = make_dataset(tmp_path, n_users=2)
    culprit = {"train": folder / "ML-100K_train_original.csv", "item": folder / "ml-100k.item",
               "skip": tmp_path / "skip", "answers": tmp_path / "answers"}[what]
    if culprit.exists():
        culprit.unlink()
    culprit.mkdir()
    argv = [stage, "ML-100K", "--data_dir", str(tmp_path), "--skip_users", str(tmp_path / "skip")
            if what == "skip" else "none"] + (["--answers", str(culprit)] if stage == "apply" else [])
    assert R.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {culprit} is a folder, not a file: give the file itself\n"
    assert not (folder / "llm").exists() and not (folder / "ML-100K_train_augment.csv").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_train_file_is_one_line_naming_it(tmp_path, capsys):
    folder = make_dataset(tmp_path, n_users=2)
    (folder / "ML-100K_train_original.csv").chmod(0)
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path), "--skip_users", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / 'ML-100K_train_original.csv'}: Permission denied") and err.count("\n") == 1


@pytest.mark.parametrize("stage, flag", [("prompts", "--out_dir"), ("apply", "--output"), ("run", "--out_dir")])
def test_an_output_path_under_a_file_is_one_line_and_nothing_is_written(tmp_path, capsys, stage, flag):
    make_dataset(tmp_path, n_users=2)
    answers = tmp_path / "answers.txt"
    answers.write_text(format_answer_block(1, "['<Movie 3>']"))
    blocker = tmp_path / "a-file"
    blocker.write_text("mine\n")
    target = blocker / "sub" / ("out.csv" if flag == "--output" else "llm")
    argv = [stage, "ML-100K", "--data_dir", str(tmp_path), "--skip_users", "none", flag, str(target)]
    argv += {"apply": ["--answers", str(answers)], "run": ["--backend", "replay", "--replay", str(answers)]}.get(stage, [])
    before = sorted(p for p in tmp_path.rglob("*"))
    assert R.main(argv) == 2
    folder_of = target.parent if flag == "--output" else target
    assert capsys.readouterr().err == (f"error: {flag} {folder_of}: {blocker} is a file, not a folder; move it or "
                                       f"choose another path\n")
    assert sorted(p for p in tmp_path.rglob("*")) == before and blocker.read_text() == "mine\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_while_caching_answers_is_one_line_and_keeps_the_answers_file_whole(tmp_path, capsys):
    folder = make_dataset(tmp_path, n_users=2)
    answers = tmp_path / "answers.txt"
    answers.write_text(format_answer_block(1, "['<Movie 3>']") + format_answer_block(2, "[]"))
    out = folder / "llm"
    out.mkdir()
    (out / "answers_cache.jsonl").symlink_to("/dev/full")  # every write to the cache: no space left
    argv = ["generate", "ML-100K", "--data_dir", str(tmp_path), "--skip_users", "none", "--backend", "replay",
            "--replay", str(answers), "--no_progress"]
    assert R.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {out / 'answers_cache.jsonl'}: No space left on device "
                                                  f"(free space); every answer received is in ")
    # Nothing the cache does not hold: the answers file is whole, and empty.
    assert (out / "llama_distinguish_answer.txt").read_text() == ""
    assert sorted(p.name for p in out.iterdir()) == ["answers_cache.jsonl", "llama_distinguish_answer.txt"]
