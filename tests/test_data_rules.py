"""The split-file rules of docs/bad-input.md, through the real entry point (main.py): bad rows stop
the run with one error line before any epoch; the published splits load exactly as before.

    python -m pytest -q tests/test_data_rules.py
"""
import numpy as np
import pandas as pd
import pytest
import torch

import splits
import main
from helpers import write_synthetic_dataset
from catalog import ITEM, RATING, USER

SMALL = ["--dataset", "TOY", "--epochs", "1", "--batch_size", "64", "--top_k", "5", "--r", "5", "--s", "2",
         "--embedding_dim", "8", "--layers", "1", "--device", "cpu"]


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A synthetic dataset; the working directory (for result/) is tmp_path."""
    folder = write_synthetic_dataset(tmp_path / "data", "TOY")
    monkeypatch.chdir(tmp_path)
    return folder


def run_main(argv, capsys):
    code = main.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def append_rows(path, rows):
    """Append CSV rows; returns the file line number of the first appended row."""
    first_line = len(path.read_text().splitlines()) + 1
    with open(path, "a") as handle:
        handle.writelines(f"{row}\n" for row in rows)
    return first_line


def assert_refused_before_training(code, out, err, tmp_path, *fragments):
    """Exit code 2, one error line naming the culprit, no traceback, no epoch, no output file."""
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err
    assert "Epoch:" not in out
    assert not (tmp_path / "result").exists() or not any((tmp_path / "result").rglob("*.*"))


# Cause 10: ratings that are not valid (a number from 0 to 5) are refused with file and line.
@pytest.mark.parametrize("split", ["train_augment", "validation", "test"])
@pytest.mark.parametrize("rating, shown", [("7", "7"), ("-3", "-3"), ("inf", "inf"), ("5.5", "5.5")])
def test_invalid_rating_is_refused_with_file_and_line(toy, tmp_path, capsys, split, rating, shown):
    path = toy / f"TOY_{split}.csv"
    line = append_rows(path, [f"1,1,{rating}"])
    code, out, err = run_main(["--data_dir", str(tmp_path / "data")] + SMALL, capsys)
    assert_refused_before_training(code, out, err, tmp_path,
                                   f"{path} line {line}: rating {shown} is not a valid rating (a number from 0 to 5)")


def test_non_numeric_rating_names_the_line(toy, tmp_path, capsys):
    path = toy / "TOY_test.csv"
    line = append_rows(path, ["1,1,five"])
    code, out, err = run_main(["--data_dir", str(tmp_path / "data")] + SMALL, capsys)
    assert_refused_before_training(code, out, err, tmp_path, f"{path} line {line}: rating:float value 'five' "
                                                              f"is not a number")


# Cause 8: no validation or test positives -> refused (no NaN metrics can arise).
@pytest.mark.parametrize("split", ["validation", "test"])
@pytest.mark.parametrize("content, kind", [
    ("", "file is empty"),
    ("user_id:token,item_id:token,rating:float\n", "the file has no rows"),
    ("user_id:token,item_id:token,rating:float\n1,1,3\n2,2,1\n", "the file has only ratings below 4"),
])
def test_no_ground_truth_positives_is_refused(toy, tmp_path, capsys, split, content, kind):
    path = toy / f"TOY_{split}.csv"
    path.write_text(content)
    code, out, err = run_main(["--data_dir", str(tmp_path / "data")] + SMALL, capsys)
    assert_refused_before_training(code, out, err, tmp_path, str(path), kind)
    if content:
        assert f"no {split} positives (rating >= 4)" in err


# Cause 9: a (user, item) pair on more than one row is refused with its lines, or one row kept.
def first_train_row(folder):
    train = pd.read_csv(folder / "TOY_train_augment.csv")
    return train.iloc[0]


@pytest.mark.parametrize("rating, kind", [(None, "repeated rows"), (0.5, "a positive and a confirmed negative")])
def test_repeated_pair_is_refused_with_its_lines(toy, tmp_path, capsys, rating, kind):
    row = first_train_row(toy)  # a positive (the synthetic data starts each user with positives)
    path = toy / "TOY_train_augment.csv"
    line = append_rows(path, [f"{row[USER]},{row[ITEM]},{row[RATING] if rating is None else rating}"])
    code, out, err = run_main(["--data_dir", str(tmp_path / "data")] + SMALL, capsys)
    assert_refused_before_training(code, out, err, tmp_path,
                                   f"{path}: 1 (user, item) pair(s) on more than one row, e.g. user {row[USER]} "
                                   f"item {row[ITEM]} on lines 2, {line} ({kind}", "--duplicate_pairs first|last")


@pytest.mark.parametrize("rule, kept_class", [("first", "positive"), ("last", "negative")])
def test_duplicate_pairs_flag_keeps_one_row(toy, tmp_path, capsys, rule, kept_class):
    row = first_train_row(toy)
    append_rows(toy / "TOY_train_augment.csv", [f"{row[USER]},{row[ITEM]},0.5"])
    data = splits.load_splits(tmp_path / "data", "TOY", duplicate_pairs=rule)
    pair = torch.tensor([[int(np.searchsorted(data.user_ids, row[USER]))],
                         [int(np.searchsorted(data.item_ids, row[ITEM]))]])
    in_positives = (data.train_pos == pair).all(dim=0).any().item()
    in_negatives = (data.train_neg == pair).all(dim=0).any().item()
    assert (in_positives, in_negatives) == ((True, False) if kept_class == "positive" else (False, True))
    # and main.py trains with the flag
    code, out, err = run_main(["--data_dir", str(tmp_path / "data"), "--duplicate_pairs", rule] + SMALL, capsys)
    assert code == 0 and "Epoch: 001" in out


# Rows of no class are counted on stderr, not silently ignored; the run goes on.
def unrated_item(folder, user):
    """An item that `user` has no row for in any split."""
    rated = set()
    for split in ("train_augment", "validation", "test"):
        frame = pd.read_csv(folder / f"TOY_{split}.csv")
        rated |= set(frame.loc[frame[USER] == user, ITEM])
    return min(set(pd.read_csv(folder / "TOY_train_augment.csv")[ITEM]) - rated)


def test_rows_of_no_class_are_reported(toy, tmp_path, capsys):
    path = toy / "TOY_train_augment.csv"
    line = append_rows(path, [f"{user},{unrated_item(toy, user)},{rating}"
                              for user, rating in ((1, 3.5), (2, 1.5), (3, 2.5))])
    valid_line = append_rows(toy / "TOY_validation.csv", [f"4,{unrated_item(toy, 4)},2"])
    code, out, err = run_main(["--data_dir", str(tmp_path / "data")] + SMALL, capsys)
    assert code == 0 and "Epoch: 001" in out
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {path}: 3 row(s) with a rating in no class (positive >= 4, confirmed negative <= 1, neutral 2 or 3), "
        f"ignored (e.g. line {line}, rating 3.5)",
        f"note: {toy / 'TOY_validation.csv'}: 1 row(s) below 4, not validation positives, ignored "
        f"(e.g. line {valid_line}, rating 2)"]


# The published splits: same tensors as the published rules computed independently with pandas.
def published_rules(folder, name, augment, encode_negatives):
    """The pre-rules loader, written again: label encoder on train positives (or positives and
    negatives), masks by rating, ground truth = validation/test rows >= 4, file order."""
    train = pd.read_csv(folder / f"{name}_train_{'augment' if augment else 'original'}.csv")
    valid, test = pd.read_csv(folder / f"{name}_validation.csv"), pd.read_csv(folder / f"{name}_test.csv")
    ratings = train[RATING]
    encoded = train[(ratings >= 4) | (ratings <= 1)] if encode_negatives else train[ratings >= 4]
    users, items = sorted(set(encoded[USER])), sorted(set(encoded[ITEM]))
    user_index, item_index = {u: n for n, u in enumerate(users)}, {i: n for n, i in enumerate(items)}

    def pairs(frame):
        return [[user_index[u] for u in frame[USER]], [item_index[i] for i in frame[ITEM]]]

    return {"train_pos": pairs(train[ratings >= 4]), "graph_edges": pairs(encoded),
            "train_neg": pairs(train[ratings <= 1]), "train_neutral": pairs(train[(ratings == 2) | (ratings == 3)]),
            "valid": pairs(valid[valid[RATING] >= 4]), "test": pairs(test[test[RATING] >= 4]),
            "graph_ratings": encoded[RATING].tolist(), "user_ids": users, "item_ids": items}


@pytest.mark.parametrize("augment, encode_negatives", [(True, False), (False, False), (True, True)],
                         ids=["augment", "original", "refine_plus"])
def test_published_ml100k_loads_as_before(ml100k_splits, capsys, augment, encode_negatives):
    folder = ml100k_splits / "ML-100K"
    data = splits.load_splits(ml100k_splits, "ML-100K", augment, encode_negatives)
    assert capsys.readouterr().err == ""  # no rows of no class, nothing to report
    expected = published_rules(folder, "ML-100K", augment, encode_negatives)
    for key, value in expected.items():
        got = getattr(data, key)
        assert (got.tolist() if hasattr(got, "tolist") else list(got)) == value, key


def test_split_file_that_is_a_directory_is_one_line_exit_2(toy, capsys):
    """Issue 20 cause 2 through main.py: a directory in place of a split file."""
    (toy / "TOY_validation.csv").unlink()
    (toy / "TOY_validation.csv").mkdir()
    code, out, err = run_main(SMALL + ["--data_dir", str(toy.parent)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    # main.py checks the split files before loading them; splits.read_split is tested there.
    assert err.startswith(f"error: {toy / 'TOY_validation.csv'} is a folder, not a file")
