"""Apply fidelity: answers -> train_augment, checked by hand and against the published ML-100K file.

    .venv/bin/python -m pytest -q tests/test_refine_apply.py
"""
import json
import shutil

import pandas as pd
import pytest

from llm.answers import format_answer_block, parse_answers
from llm.data import ITEM_COL, RATING_COL, USER_COL, load_train
from llm.prompts import prompt_hash
import refine_llm as R
from helpers import write_published_answers


def write_small_dataset(root, train_rows, item_rows):
    folder = root / "ML-100K"
    folder.mkdir(parents=True)
    pd.DataFrame(train_rows, columns=[USER_COL, ITEM_COL, RATING_COL]).to_csv(
        folder / "ML-100K_train_original.csv", index=False)
    pd.DataFrame(item_rows, columns=["item_id:token", "movie_title:token_seq", "release_year:token",
                                     "class:token_seq"]).to_csv(folder / "ml-100k.item", sep="\t", index=False)
    return folder


def test_parse_published_answers_file(tmp_path):
    path = tmp_path / "answers.txt"
    path.write_text(
        format_answer_block(3, "['<Heat (genre: Action)>' '<Up>']")
        + format_answer_block(3, "some chatter\n[\"<Ulee's Gold>\"]")
        + format_answer_block(5, "[]")
        + format_answer_block(9, "no list here <Ignored>"))
    liked = parse_answers(path)
    # User 5's `[]` counts as answered (empty set); user 9 has no `[` line, so no entry.
    assert liked == {3: {"Heat", "Up", "Ulee's Gold"}, 5: set()}


def test_apply_relabels_by_hand(tmp_path):
    items = [(1, "Heat", 1995, "Action"), (2, "Up", 2009, "Animation"), (3, "Ran", 1985, "Drama"),
             (4, "Big", 1988, "Comedy")]
    # user 1: answered [Heat]; user 2: answered []; user 3: no answer.
    train = [(1, 1, 3), (1, 2, 2), (1, 3, 5), (1, 4, 1), (2, 1, 2), (2, 3, 4), (3, 2, 3), (3, 4, 2)]
    folder = write_small_dataset(tmp_path, train, items)
    answers = tmp_path / "answers.txt"
    answers.write_text(format_answer_block(1, "['<Heat>']") + format_answer_block(2, "[]"))
    assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(answers)]) == 0
    text = (folder / "ML-100K_train_augment.csv").read_text()
    assert text == ("user_id:token,item_id:token,rating:float\n"
                    "1,1,4.5\n1,2,0.5\n1,3,5.0\n1,4,1.0\n"
                    "2,1,0.5\n2,3,4.0\n"
                    "3,2,3.0\n3,4,2.0\n")


def test_apply_reproduces_published_ml100k_augment(ml100k_with_raw, tmp_path):
    source = ml100k_with_raw / "ML-100K"
    folder = tmp_path / "ML-100K"
    folder.mkdir()
    for name in ("ML-100K_train_original.csv", "ml-100k.item"):
        shutil.copy(source / name, folder / name)
    answers = tmp_path / "llama_distinguish_answer.txt"
    write_published_answers(source, answers)
    assert answers.read_text().count("LLaMA's cut recommendation for user") == 819
    assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(answers)]) == 0
    ours = (folder / "ML-100K_train_augment.csv").read_bytes()
    assert ours == (source / "ML-100K_train_augment.csv").read_bytes()


def test_empty_answer_rule_is_what_reproduces_the_published_file(ml100k_splits):
    # Counter-check: were `[]` answers ignored, the four users asked with an empty list would keep
    # their 2-star rows, and the published file shows 0.5 there.
    source = ml100k_splits / "ML-100K"
    augment = pd.read_csv(source / "ML-100K_train_augment.csv")
    for user in (34, 225, 583, 688):
        ratings = augment.loc[augment[USER_COL] == user, RATING_COL]
        assert (ratings == 0.5).any() and not ratings.isin([2, 3, 4.5]).any()


def test_netflix_titles_split_on_first_two_commas(tmp_path):
    folder = tmp_path / "Netflix-1M"
    folder.mkdir()
    (folder / "movie_titles.csv").write_bytes(
        "1,2003,Dinosaur Planet\n2,NULL,Good, Bad and Ugly, The\n3,1999,Caf\u00e9 Lumi\u00e8re\n".encode("ISO-8859-1"))
    (folder / "netflix_genres.csv").write_text("movieId,genres\n1,Documentary|Animation\n2,Western\n3,Drama\n")
    pd.DataFrame({USER_COL: [7, 7, 7], ITEM_COL: [2, 3, 1], RATING_COL: [3, 5, 2]}).to_csv(
        folder / "Netflix-1M_train_original.csv", index=False)
    _, joined = load_train(tmp_path, "Netflix-1M")
    assert joined["title"].tolist() == ["Good, Bad and Ugly, The", "Caf\u00e9 Lumi\u00e8re", "Dinosaur Planet"]
    assert joined["genre"].tolist() == ["Western", "Drama", "Documentary|Animation"]
    answers = tmp_path / "a.txt"
    answers.write_text(format_answer_block(7, "['<Good, Bad and Ugly, The>']"))
    assert R.main(["apply", "Netflix-1M", "--data_dir", str(tmp_path), "--answers", str(answers)]) == 0
    out = pd.read_csv(folder / "Netflix-1M_train_augment.csv")
    assert out[RATING_COL].tolist() == [4.5, 5.0, 0.5]


def test_prompts_stage_writes_every_prompt(tmp_path, capsys):
    items = [(i, f"Film {i}", 1990, "Drama") for i in range(1, 9)]
    train = [(1, i, r) for i, r in zip(range(1, 9), [5, 4, 3, 3, 3, 3, 3, 3])] + [(2, 1, 5), (2, 2, 2)]
    folder = write_small_dataset(tmp_path, train, items)
    (folder / "llm_skip_users.txt").write_text("2\n")
    assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path)]) == 0
    lines = (folder / "llm" / "prompts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # User 1 has six 3-star rows -> chunks of 5 and 1; user 2 is on the default skip list.
    assert [(r["user"], r["chunk"]) for r in records] == [(1, 0), (1, 1)]
    assert all(r["hash"] == prompt_hash(r["prompt1"]) for r in records)
    assert "2 prompts for 1 user (1 user in the skip list)" in capsys.readouterr().out


def small_answered_dataset(root):
    items = [(1, "Heat", 1995, "Action"), (2, "Up", 2009, "Animation"), (3, "Ran", 1985, "Drama")]
    folder = write_small_dataset(root, [(1, 1, 3), (1, 2, 2), (1, 3, 5), (2, 1, 2)], items)
    augment = folder / "ML-100K_train_augment.csv"
    augment.write_text("an earlier augment file\n")
    return folder, augment


GOOD_RECORD = {"user": 1, "chunk": 0, "prompt": 1, "hash": "0123456789abcdef", "model": "m",
               "status": "answered", "prompt_tokens": 9, "budget_tokens": 3, "answer": "['<Heat>']"}


@pytest.mark.parametrize("name, content, where, message", [
    ("cache.jsonl", [GOOD_RECORD, dict(GOOD_RECORD, user="a b")], 2, 'user "a b" is not a user id'),
    ("cache.jsonl", [dict(GOOD_RECORD, user=1.5)], 1, "user 1.5 is not a user id"),
    ("cache.jsonl", [dict(GOOD_RECORD, answer=None)], 1, "answer null is not text"),
    ("cache.jsonl", [dict(GOOD_RECORD, status="done")], 1, 'status "done" is not one of'),
    ("cache.jsonl", [{"user": 1, "chunk": 0}], 1, "record without prompt, hash, status, answer"),
    ("answers.txt", format_answer_block(1, "['<Heat>']") + "LLaMA's cut recommendation for user :\n[]\n",
     8, "with a user id N, got \"LLaMA's cut recommendation for user :\""),
    ("answers.bin", b"PNG\r\n\x1a\n\x00\xff\xfe binary", 3, "not UTF-8 text"),
])
def test_malformed_answers_file_is_one_line_naming_file_and_line(tmp_path, capsys, name, content, where, message):
    _, augment = small_answered_dataset(tmp_path)
    answers = tmp_path / name
    if isinstance(content, list):
        answers.write_text("".join(json.dumps(rec) + "\n" for rec in content))
    elif isinstance(content, bytes):
        answers.write_bytes(content)
    else:
        answers.write_text(content)
    assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(answers)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {answers}:{where}: ") and message in err
    assert augment.read_text() == "an earlier augment file\n"


@pytest.mark.parametrize("name, content", [
    ("answers.txt", format_answer_block(1, "I cannot tell which films") + format_answer_block(2, "no list")),
    ("answers.txt", ""),
    ("cache.jsonl", json.dumps(dict(GOOD_RECORD, status="no_bracket", answer="['<Heat>'")) + "\n"),
])
def test_answers_file_without_a_parsable_answer_leaves_augment_alone(tmp_path, capsys, name, content):
    _, augment = small_answered_dataset(tmp_path)
    answers = tmp_path / name
    answers.write_text(content)
    assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(answers)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{answers} holds no parsable answer" in err
    assert f"{augment} was left unchanged" in err
    assert augment.read_text() == "an earlier augment file\n"


def test_torn_last_cache_line_is_still_skipped_by_apply(tmp_path):
    folder, _ = small_answered_dataset(tmp_path)
    answers = tmp_path / "cache.jsonl"
    answers.write_text(json.dumps(GOOD_RECORD) + "\n" + json.dumps(GOOD_RECORD)[:40])  # killed mid-write
    assert R.main(["apply", "ML-100K", "--data_dir", str(tmp_path), "--answers", str(answers)]) == 0
    assert pd.read_csv(folder / "ML-100K_train_augment.csv")[RATING_COL].tolist() == [4.5, 0.5, 5.0, 2.0]


def test_answers_only_for_users_absent_from_train_are_refused(tmp_path):
    """The users counted are those of the train file: answers of another dataset relabel nothing."""
    import subprocess
    import sys

    from helpers import ROOT

    folder, augment = small_answered_dataset(tmp_path)
    answers = tmp_path / "answers.txt"
    answers.write_text(format_answer_block(701, "['<Heat>']") + format_answer_block(702, "[]"))
    command = [sys.executable, str(ROOT / "refine_llm.py"), "apply", "ML-100K", "--data_dir", str(tmp_path),
               "--answers", str(answers)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {answers}: none of its 2 answered users (701, 702) is in "
                                  f"{folder / 'ML-100K_train_original.csv'}")
    assert augment.read_text() == "an earlier augment file\n"
    # Some users there: the others are named, and only those found are counted.
    answers.write_text(format_answer_block(1, "['<Heat>']") + format_answer_block(702, "[]"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "note: 1 answered user of" in done.stderr and done.stderr.rstrip().endswith("unused: 702")
    assert done.stdout.startswith("1 user answered;")
