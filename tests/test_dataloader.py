"""Id encoding, the three train masks (positive / confirmed negative / neutral) and input errors."""
import pytest
import torch

import splits
from utils import InputError

HEADER = "user_id:token,item_id:token,rating:float\n"


def write_splits(folder, train, validation=None, test=None, name="T"):
    """The three split files; validation and test default to the first train row (a positive)."""
    first_row = train.splitlines(keepends=True)[0]
    validation, test = first_row if validation is None else validation, first_row if test is None else test
    (folder / name).mkdir(exist_ok=True)
    (folder / name / f"{name}_train_augment.csv").write_text(HEADER + train)
    (folder / name / f"{name}_validation.csv").write_text(HEADER + validation)
    (folder / name / f"{name}_test.csv").write_text(HEADER + test)


def test_encoding_and_masks(tmp_path):
    # Positive users {10, 30}, items {5, 7, 9, 11}: encoded by sorted raw id.
    write_splits(tmp_path,
                 "30,9,5\n10,7,4.5\n10,11,0.5\n30,7,2\n10,9,3\n30,5,1\n10,5,4\n30,11,5\n",
                 validation="10,9,4\n30,5,2\n",  # the 2-star row is not a validation positive
                 test="30,5,5\n")
    data = splits.load_splits(tmp_path, "T")
    assert (data.num_users, data.num_items) == (2, 4)
    assert data.user_ids.tolist() == [10, 30] and data.item_ids.tolist() == [5, 7, 9, 11]
    assert data.train_pos.tolist() == [[1, 0, 0, 1], [2, 1, 0, 3]]       # file order kept
    assert data.train_neg.tolist() == [[0, 1], [3, 0]]                   # 0.5 and 1
    assert data.train_neutral.tolist() == [[1, 0], [1, 2]]               # 2 and 3
    assert data.valid.tolist() == [[0], [2]]
    assert data.test.tolist() == [[1], [0]]
    assert data.graph_edge_index().tolist() == [[1, 0, 0, 1, 4, 3, 2, 5], [4, 3, 2, 5, 1, 0, 0, 1]]


def test_original_split_is_read_with_augment_zero(tmp_path):
    write_splits(tmp_path, "1,1,4\n")
    (tmp_path / "T" / "T_train_original.csv").write_text(HEADER + "1,1,4\n2,1,5\n")
    assert splits.load_splits(tmp_path, "T", augment=False).num_users == 2


def test_unrankable_eval_rows_are_dropped_with_a_counted_note(tmp_path, capsys):
    # train positives: users {1, 2}, items {1, 2}
    write_splits(tmp_path, "1,1,4\n2,2,5\n",
                 validation="1,2,5\n1,99,4\n7,1,5\n2,1,4\n",  # lines 3 and 4: unknown item, unknown user
                 test="2,3,5\n1,2,4\n")                          # line 2: item 3 is no positive
    data = splits.load_splits(tmp_path, "T")
    assert data.valid.tolist() == [[0, 1], [1, 0]] and data.test.tolist() == [[0], [1]]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"note: {tmp_path / 'T' / 'T_validation.csv'}: 2 row(s) whose item or user has no train row to "
                   f"embed, dropped (e.g. line 3, item 99)",
                   f"note: {tmp_path / 'T' / 'T_test.csv'}: 1 row(s) whose item or user has no train row to "
                   f"embed, dropped (e.g. line 2, item 3)"]
    # ReFINe++ embeds the confirmed negatives too: with item 3 a negative of user 2, it is rankable there
    (tmp_path / "T" / "T_train_augment.csv").write_text(HEADER + "1,1,4\n2,2,5\n2,3,1\n")
    plus = splits.load_splits(tmp_path, "T", encode_negatives=True)
    assert plus.test.tolist() == [[1, 0], [2, 1]]
    assert "T_test.csv" not in capsys.readouterr().err


def test_eval_split_with_nothing_rankable_is_refused(tmp_path):
    write_splits(tmp_path, "1,1,4\n", test="1,99,5\n5,1,4\n")
    with pytest.raises(InputError, match=r"T_test.csv: none of its test positives has a user and an item"):
        splits.load_splits(tmp_path, "T")


def test_split_file_that_is_a_directory_is_named(tmp_path):
    write_splits(tmp_path, "1,1,4\n")
    test_file = tmp_path / "T" / "T_test.csv"
    test_file.unlink()
    test_file.mkdir()
    with pytest.raises(InputError, match=f"{test_file} is a folder, not a file"):
        splits.load_splits(tmp_path, "T")


def test_unreadable_split_file_is_named(tmp_path, monkeypatch):
    """A permission error (simulated: the tests may run as root, who reads anything) names the file."""
    write_splits(tmp_path, "1,1,4\n")

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied")  # as a library may raise it, without the path

    monkeypatch.setattr(splits.pd, "read_csv", no_permission)
    with pytest.raises(InputError, match=r"T_train_augment.csv: cannot read it \(Permission denied\); check its"):
        splits.load_splits(tmp_path, "T")


def test_missing_file_names_it_and_the_command(tmp_path):
    with pytest.raises(InputError) as error:
        splits.load_splits(tmp_path, "ML-100K")
    message = str(error.value)
    assert "ML-100K_train_augment.csv" in message and "ML-100K_test.csv" in message
    assert f"python dataloader.py download ML-100K --refined --data_dir {tmp_path}" in message


def test_missing_column(tmp_path):
    write_splits(tmp_path, "1,1,4\n")
    (tmp_path / "T" / "T_test.csv").write_text("user_id:token,item_id:token\n1,1\n")
    with pytest.raises(InputError, match=r"T_test.csv: missing column\(s\) rating:float"):
        splits.load_splits(tmp_path, "T")


def test_string_ids_are_tokens(tmp_path):
    write_splits(tmp_path, "u2,A,4\nu1,B,5\nu1,A,1\n", test="u2,B,4\n")
    data = splits.load_splits(tmp_path, "T")
    assert data.user_ids.tolist() == ["u1", "u2"] and data.item_ids.tolist() == ["A", "B"]
    assert torch.equal(data.test, torch.tensor([[1], [1]]))


def test_published_ml100k_counts(ml100k_splits):
    data = splits.load_splits(ml100k_splits, "ML-100K")
    assert (data.num_users, data.num_items) == (938, 1008)
    assert (data.train_pos.size(1), data.valid.size(1), data.test.size(1)) == (52984, 5018, 10514)
