"""Tests for download.py and preprocess.py (through dataloader.py): docs/method.md §1.2 preprocessing, GroupLens conversion, downloads over real HTTP.

    python -m pytest -q tests/test_data_prep.py
"""
import contextlib
import errno
import hashlib
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

import catalog
import dataloader
import download
import preprocess
from helpers import ML100K_RAW, ROOT, FixtureServer, closed_port, find_data_dir
from catalog import ITEM, RATING, USER

HEADER = f"{USER}\t{ITEM}\t{RATING}\ttimestamp:float\n"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No test here reaches the network: every URL default points at a closed local port, and
    pip (the recbole-wheel source) sees no package index and no user configuration. The published
    logs that `download` fetches too would go to a temporary folder."""
    closed = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setattr(download, "PUBLISHED_DIR", tmp_path_factory.mktemp("published"))
    # in this process, `download` leaves the logs alone (tests/test_data_published.py tests that part)
    monkeypatch.setattr(download, "download_published_logs", lambda *args: None)
    for variable in ("REFINE_RECBOLE_URL", "REFINE_GROUPLENS_URL", "REFINE_REFINED_URL", "REFINE_GENRES_URL",
                     "REFINE_PUBLISHED_URL"):
        monkeypatch.setenv(variable, closed)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for variable in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "REFINE_PIP_ARGS"):
        monkeypatch.delenv(variable, raising=False)
    return closed


def frame(rows):
    return pd.DataFrame(rows, columns=[USER, ITEM, RATING])


def write_inter(path, rows, header=HEADER):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")


def run_main(argv, capsys):
    code = dataloader.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------
# Reproduction of the published splits

def test_ml100k_preprocess_reproduces_published_splits(ml100k_with_raw, tmp_path, capsys):
    published = ml100k_with_raw / "ML-100K"
    (tmp_path / "ML-100K").mkdir()
    for name in ("ml-100k.inter", "ml-100k.item"):
        shutil.copy(published / name, tmp_path / "ML-100K" / name)
    code, out, err = run_main(["preprocess", "ML-100K", "--data_dir", tmp_path], capsys)
    assert code == 0, err
    for split, rows in (("train_original", 79683), ("validation", 5018), ("test", 10514)):
        ours = (tmp_path / "ML-100K" / f"ML-100K_{split}.csv").read_bytes()
        theirs = (published / f"ML-100K_{split}.csv").read_bytes()
        assert ours.count(b"\n") == rows + 1
        assert ours == theirs, f"{split} differs from the published file"


# ---------------------------------------------------------------------------------------------
# docs/method.md §1.2 on synthetic data

# Hand-worked 2-core example (threshold 4). Row numbers are 1-based file order.
#  pass 1, positives {1,2,3,4,5,6,7,13,14,15,16}: items all >= 2; user d has 1 -> drop row 7.
#          all = 10 positives + negatives {8,9,10,11,12,17}: item z has only row 6 -> drop it;
#          then c (row 5) and d (row 8) have 1 row each -> dropped. 17 -> 13 rows.
#  pass 2, positives {1,2,3,4,13,14,15,16} all survive, all keeps 13 rows -> converged.
#  step 3: negatives 9,10 (item w), 11,12 (user e) are not in the positives; only 17 remains.
HAND_ROWS = [("a", "x", 5), ("a", "y", 4), ("b", "x", 4), ("b", "y", 5), ("c", "y", 5),
             ("c", "z", 4), ("d", "z", 5), ("d", "x", 1), ("a", "w", 1), ("b", "w", 2),
             ("e", "x", 1), ("e", "y", 2), ("a", "u", 4), ("b", "u", 5), ("f", "x", 5),
             ("f", "y", 4), ("f", "u", 2)]


def test_k_core_converges_to_hand_computed_result():
    positives, negatives = preprocess.k_core(frame(HAND_ROWS), threshold=4, min_user=2, min_item=2)
    assert list(positives.index + 1) == [1, 2, 3, 4, 13, 14, 15, 16]
    assert list(negatives.index + 1) == [17]


def naive_k_core(rows, threshold, k):
    """Independent loop over plain lists: same docs/method.md §1.2 procedure, no pandas."""
    current = list(range(len(rows)))
    while True:
        pos = [r for r in current if rows[r][2] >= threshold]
        neg = [r for r in current if rows[r][2] < threshold]

        def keep(ids):
            items = {}
            for r in ids:
                items[rows[r][1]] = items.get(rows[r][1], 0) + 1
            ids = [r for r in ids if items[rows[r][1]] >= k]
            users = {}
            for r in ids:
                users[rows[r][0]] = users.get(rows[r][0], 0) + 1
            return [r for r in ids if users[rows[r][0]] >= k]

        pos = keep(pos)
        new = keep(pos + neg)
        if len(new) == len(current):
            break
        current = new
    kept_users = {rows[r][0] for r in pos}
    kept_items = {rows[r][1] for r in pos}
    return pos, [r for r in neg if rows[r][0] in kept_users and rows[r][1] in kept_items]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_core_matches_naive_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(60) for i in range(40) if rng.random() < 0.4]
    rows = [(u, i, int(rng.integers(1, 6))) for u, i in pairs]
    rng.shuffle(rows)
    positives, negatives = preprocess.k_core(frame(rows), threshold=4, min_user=5, min_item=5)
    expected_pos, expected_neg = naive_k_core(rows, 4, 5)
    assert list(positives.index) == expected_pos
    assert list(negatives.index) == expected_neg
    assert len(expected_pos) > 0 and len(expected_neg) > 0  # the data exercises both parts


def test_split_positives_per_user_order_and_small_users():
    # user 2 (10 rows) comes first in the file, user 1 has 5, user 3 has 3 (goes to train whole).
    rows = [(2, 100 + k, 5) for k in range(10)] + [(1, 200 + k, 4) for k in range(5)] \
        + [(3, 300 + k, 4) for k in range(3)]
    train, valid, test = preprocess.split_positives(frame(rows), seed=2024)
    rng = np.random.RandomState(2024)
    perm_user1 = rng.permutation(5)      # users in ascending id order, one RNG seeded once
    perm_user2 = rng.permutation(10)
    assert list(test[ITEM]) == [200 + perm_user1[0]] + sorted(100 + perm_user2[:2])
    assert list(valid[ITEM]) == [] + sorted(100 + perm_user2[2:3])
    assert list(train[USER]) == [1] * 4 + [2] * 7 + [3] * 3
    assert list(train[ITEM][train[USER] == 2]) == sorted(100 + perm_user2[3:])  # file order kept
    assert list(train[ITEM][train[USER] == 3]) == [300, 301, 302]


def test_negatives_restricted_to_kept_users_and_items(tmp_path, capsys):
    folder = tmp_path / "toy"
    write_inter(folder / "toy.inter", [(*r, 880000000 + n) for n, r in enumerate(HAND_ROWS)])
    code, out, err = run_main(["preprocess", "toy", "--data_dir", tmp_path, "--min_user", 2,
                               "--min_item", 2], capsys)
    assert code == 0, err
    train = pd.read_csv(folder / "toy_train_original.csv")
    negatives = train[train[RATING] < 4]
    assert negatives.values.tolist() == [["f", "u", 2]]
    everything = pd.concat([train, pd.read_csv(folder / "toy_validation.csv"),
                            pd.read_csv(folder / "toy_test.csv")])
    assert set(everything[USER]) == {"a", "b", "f"} and set(everything[ITEM]) == {"x", "y", "u"}


def test_item_file_drop_and_integer_rating_format(tmp_path, capsys):
    # Items 3 has an empty year and 4 is absent from the item file: their rows are dropped.
    folder = tmp_path / "ML-100K"
    rows = [(u, i, 5 if (u + i) % 4 else 2, 1) for u in range(1, 11) for i in range(1, 11)]
    write_inter(folder / "ml-100k.inter", rows)
    items = "".join(f"{i}\tTitle {i}\t{'' if i == 3 else 1990 + i}\tDrama\n" for i in range(1, 11) if i != 4)
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + items)
    code, out, err = run_main(["preprocess", "ML-100K", "--data_dir", tmp_path], capsys)
    assert code == 0, err
    text = (folder / "ML-100K_train_original.csv").read_text()
    assert text.startswith("user_id:token,item_id:token,rating:float\n")
    assert re.search(r",5\n", text) and ".0" not in text
    items_out = set(pd.read_csv(folder / "ML-100K_train_original.csv")[ITEM])
    assert 3 not in items_out and 4 not in items_out


def test_drop_unseen_eval_items_removes_only_items_without_train_positive():
    # every user has 9 shared items and one item nobody else rated (min_item=1 keeps it)
    rows = [(u, i, 5) for u in range(10) for i in list(range(9)) + [100 + u]]
    kept = preprocess.make_splits(frame(rows), min_user=5, min_item=1, drop_unseen_eval_items=False)
    dropped = preprocess.make_splits(frame(rows), min_user=5, min_item=1, drop_unseen_eval_items=True)
    train_items = set(kept[0][ITEM])
    assert dropped[0].equals(kept[0])
    for full, filtered in zip(kept[1:], dropped[1:]):
        assert filtered.equals(full[full[ITEM].isin(train_items)])
    removed = sum(len(f) - len(d) for f, d in zip(kept[1:], dropped[1:]))
    assert removed > 0


# ---------------------------------------------------------------------------------------------
# Netflix specifics

def test_netflix_titles_commas_and_latin1(tmp_path):
    path = tmp_path / "movie_titles.csv"
    path.write_bytes("1,2003,Dinosaur Planet\r\n2,NULL,Character, The\n3,1997,Caf\u00e9, Cr\u00e8me, Br\u00fbl\u00e9e\n"
                     .encode("ISO-8859-1"))
    titles = preprocess.read_movie_titles(path)
    assert titles.values.tolist() == [[1, "2003", "Dinosaur Planet"], [2, "NULL", "Character, The"],
                                      [3, "1997", "Caf\u00e9, Cr\u00e8me, Br\u00fbl\u00e9e"]]


def test_netflix_titles_blank_lines_skipped_titles_kept_as_written(tmp_path):
    path = tmp_path / "movie_titles.csv"
    path.write_bytes(b"1,2003,Dinosaur Planet \r\n\n   \r\n2,2004,Isle of Man TT 2004 Review\n\n")
    assert preprocess.read_movie_titles(path).values.tolist() == [
        [1, "2003", "Dinosaur Planet "], [2, "2004", "Isle of Man TT 2004 Review"]]


@pytest.mark.parametrize("text, message", [
    ("1,2003,A\n2,2004\n", "line 2: expected 'id,year,title'"),
    ("x,2003,A\n", "line 1: movie id 'x' is not an integer"),
    ("\n\n", "is empty"),
])
def test_netflix_titles_damaged_lines_are_named(tmp_path, text, message):
    path = tmp_path / "movie_titles.csv"
    path.write_text(text)
    with pytest.raises(preprocess.InputError, match=re.escape(message)):
        preprocess.read_movie_titles(path)


def test_netflix_genres_reader(tmp_path):
    path = tmp_path / "netflix_genres.csv"
    path.write_text("movieId,genres\n1,Documentary|Animation\n3,Drama\n")
    assert preprocess.read_netflix_genres(path).values.tolist() == [[1, "Documentary|Animation"], [3, "Drama"]]
    path.write_text("movieId,genres,extra\n1,Drama,x\n")
    with pytest.raises(preprocess.InputError, match="expected 2 columns .* found 3"):
        preprocess.read_netflix_genres(path)
    path.write_text("")
    with pytest.raises(preprocess.InputError, match="is empty"):
        preprocess.read_netflix_genres(path)


@pytest.mark.parametrize("reader", ["read_movie_titles", "read_netflix_genres"])
def test_netflix_readers_name_a_directory_or_missing_file(tmp_path, reader):
    (tmp_path / "folder").mkdir()
    with pytest.raises(preprocess.InputError, match="folder is a folder, not a file"):
        getattr(preprocess, reader)(tmp_path / "folder")
    with pytest.raises(preprocess.InputError, match=r"missing .*absent \(.*https://"):
        getattr(preprocess, reader)(tmp_path / "absent")


def test_netflix_merge_sample_and_unseen_eval_items(tmp_path, capsys):
    folder = tmp_path / "Netflix-1M"
    rng = np.random.default_rng(7)
    rows = [(u, i, int(rng.choice([1, 2, 3, 4, 5, 5, 5])), 0) for u in range(1, 41)
            for i in range(1, 31) if rng.random() < 0.8]
    write_inter(folder / "netflix.inter", rows)
    # item 5: year NULL (kept); item 6: no title line; item 7: no genres -> rows of 6 and 7 dropped
    titles = "".join(f"{i},{'NULL' if i == 5 else 2000},Movie, number {i}\n" for i in range(1, 31) if i != 6)
    (folder / "movie_titles.csv").write_bytes(titles.encode("ISO-8859-1"))
    (folder / "netflix_genres.csv").write_text(
        "movieId,genres\n" + "".join(f"{i},Drama|Comedy\n" for i in range(1, 31) if i != 7))
    code, out, err = run_main(["preprocess", "Netflix-1M", "--data_dir", tmp_path,
                               "--sample_users", 25], capsys)
    assert code == 0, err
    train = pd.read_csv(folder / "Netflix-1M_train_original.csv")
    valid = pd.read_csv(folder / "Netflix-1M_validation.csv")
    test = pd.read_csv(folder / "Netflix-1M_test.csv")
    users = pd.concat([train, valid, test])[USER].unique()
    expected_users = np.random.RandomState(2024).choice(np.arange(1, 41), size=25, replace=False)
    assert set(users) == set(expected_users)
    items = set(pd.concat([train, valid, test])[ITEM])
    assert 5 in items and not items & {6, 7}
    train_pos_items = set(train[train[RATING] >= 4][ITEM])
    assert set(valid[ITEM]) <= train_pos_items and set(test[ITEM]) <= train_pos_items


# ---------------------------------------------------------------------------------------------
# GroupLens fallback conversion

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def month_numbers(text):
    """The change present in shared/.../grouplens/u.item: month names -> numbers, case-insensitive."""
    for number, month in enumerate(MONTHS, 1):
        text = re.sub(month, f"{number:02d}", text, flags=re.IGNORECASE)
    return text


def test_grouplens_conversion_matches_recbole_files(tmp_path, capsys):
    """Needs the GroupLens originals beside the RecBole files: ML-100K/grouplens/u.data and u.item in
    $REFINE_DATA_DIR or dataset/ (a copy of the GroupLens archive's files)."""
    source = find_data_dir("ML-100K", ("grouplens/u.data", "grouplens/u.item") + ML100K_RAW,
                           how="copy u.data and u.item of the GroupLens ml-100k archive into ML-100K/grouplens/") / "ML-100K"
    folder = tmp_path / "ML-100K"
    folder.mkdir()
    for name in ("u.data", "u.item"):
        shutil.copy(source / "grouplens" / name, folder / name)
    download.convert_grouplens(folder, "ML-100K")
    assert (folder / "ml-100k.inter").read_bytes() == (source / "ml-100k.inter").read_bytes()

    ours = pd.read_csv(folder / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    theirs = pd.read_csv(source / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    assert list(ours.columns) == list(theirs.columns)
    merged = theirs.merge(ours, on=ITEM, how="left", suffixes=("_recbole", "_ours"), indicator=True)
    # Difference 1: this copy of u.item has no line for item 267 (RecBole: 'unkonwn' x2, 'unknown').
    assert merged.loc[merged["_merge"] == "left_only", ITEM].tolist() == ["267"]
    both = merged[merged["_merge"] == "both"]
    # ('... (1995) (V)' keeps the last parenthesis as the year, as RecBole did for item 1412)
    assert both.loc[both[ITEM] == "1412", "release_year:token_ours"].tolist() == ["V"]
    for column in ("release_year:token", "class:token_seq"):
        assert (both[f"{column}_recbole"] == both[f"{column}_ours"]).all(), column
    # Difference 2: titles that contain a month name were altered in this copy (the official
    # archive has dates like 01-Jan-1995; this copy has 01-01-1995 and '03ried' for 'Married').
    title_diff = both[both["movie_title:token_seq_recbole"] != both["movie_title:token_seq_ours"]]
    assert len(title_diff) == 48
    assert (title_diff["movie_title:token_seq_recbole"].map(month_numbers)
            == title_diff["movie_title:token_seq_ours"]).all()

    # With item 267's line back (as in the official archive), the converted files give the
    # published splits: titles do not enter preprocessing, only their presence does.
    with open(folder / "u.item", "a", encoding="latin-1") as handle:
        handle.write("267|unknown||||1" + "|0" * 18 + "\n")
    download.convert_grouplens(folder, "ML-100K")
    assert run_main(["preprocess", "ML-100K", "--data_dir", tmp_path], capsys)[0] == 0
    for split in ("train_original", "validation", "test"):
        assert (folder / f"ML-100K_{split}.csv").read_bytes() == \
            (source / f"ML-100K_{split}.csv").read_bytes()


def test_grouplens_ml1m_conversion(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n")
    (tmp_path / "movies.dat").write_bytes("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                          "661::Cit\u00e9 des enfants perdus, La (1995)::Adventure|Sci-Fi\n"
                                          .encode("latin-1"))
    download.convert_grouplens(tmp_path, "ML-1M")
    assert (tmp_path / "ml-1m.inter").read_text() == HEADER + "1\t1193\t5\t978300760\n2\t661\t3\t978302109\n"
    assert (tmp_path / "ml-1m.item").read_text(encoding="utf-8") == (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
        "1193\tOne Flew Over the Cuckoo's Nest\t1975\tDrama\n"
        "661\tCit\u00e9 des enfants perdus, La\t1995\tAdventure Sci-Fi\n")


# ---------------------------------------------------------------------------------------------
# Downloads over a real local HTTP server


def split_fixtures(name):
    rng = np.random.default_rng(3)
    files = {}
    for split in catalog.REFINED_SPLITS:
        lines = "".join(f"{u},{int(rng.integers(1, 500))},{int(rng.integers(1, 6))}\n" for u in range(1, 3000))
        files[f"{name}_{split}.csv"] = ("user_id:token,item_id:token,rating:float\n" + lines).encode()
    return files


@contextlib.contextmanager
def serving_refined_splits(name, monkeypatch):
    """A FixtureServer with `name`'s four refined splits under /dataset/<name>/, their sha256 known."""
    fixtures = split_fixtures(name)
    for base, body in fixtures.items():
        monkeypatch.setitem(catalog.EXPECTED_SHA256, base, hashlib.sha256(body).hexdigest())
    with FixtureServer() as server:
        server.files = {f"/dataset/{name}/{base}": body for base, body in fixtures.items()}
        yield server, fixtures


@pytest.fixture
def refined_server(monkeypatch):
    with serving_refined_splits("ML-100K", monkeypatch) as served:
        yield served


def test_download_refined_verifies_and_skips_present_files(refined_server, tmp_path, capsys):
    server, fixtures = refined_server
    argv = ["download", "ML-100K", "--refined", "--data_dir", tmp_path,
            "--refined_url", server.url + "dataset/", "--no_progress"]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    for base, body in fixtures.items():
        assert (tmp_path / "ML-100K" / base).read_bytes() == body
        assert f"sha256 {hashlib.sha256(body).hexdigest()} (verified)" in out
    assert not list((tmp_path / "ML-100K").glob("*.part"))
    before = len(server.requests)
    code, out, err = run_main(argv, capsys)
    assert code == 0 and len(server.requests) == before and out.count("already present") == 4


def test_download_checksum_mismatch_leaves_nothing(refined_server, tmp_path, capsys):
    server, fixtures = refined_server
    path = "/dataset/ML-100K/ML-100K_test.csv"
    server.files[path] = server.files[path].replace(b",5\n", b",4\n", 1)  # one corrupted byte
    code, out, err = run_main(["download", "ML-100K", "--refined", "--data_dir", tmp_path,
                               "--refined_url", server.url + "dataset/", "--no_progress"], capsys)
    assert code == 2
    assert err.startswith("error: checksum mismatch for ") and err.count("\n") == 1
    assert not (tmp_path / "ML-100K" / "ML-100K_test.csv").exists()
    assert not (tmp_path / "ML-100K" / "ML-100K_test.csv.part").exists()


@pytest.mark.parametrize("honor_range", [True, False], ids=["resume", "restart"])
def test_download_interrupted_then_rerun(refined_server, tmp_path, capsys, honor_range):
    server, fixtures = refined_server
    path = "/dataset/ML-100K/ML-100K_train_original.csv"
    server.truncate_once.add(path)
    argv = ["download", "ML-100K", "--refined", "--data_dir", tmp_path,
            "--refined_url", server.url + "dataset/", "--no_progress"]
    code, out, err = run_main(argv, capsys)
    final = tmp_path / "ML-100K" / "ML-100K_train_original.csv"
    body = fixtures[final.name]
    assert code == 2 and "rerun the same command to resume" in err
    assert not final.exists()
    part = final.with_name(final.name + ".part")
    assert part.read_bytes() == body[:len(body) // 2]

    server.honor_range = honor_range
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    assert final.read_bytes() == body and not part.exists()
    assert (path, f"bytes={len(body) // 2}-") in server.requests


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def test_download_raw_recbole_zip(tmp_path, capsys, monkeypatch):
    monkeypatch.delitem(catalog.EXPECTED_SHA256, "ml-100k.inter")
    monkeypatch.delitem(catalog.EXPECTED_SHA256, "ml-100k.item")
    inter, item = HEADER + "1\t2\t5\t0\n", "item_id:token\tmovie_title:token_seq\n2\tA\n"
    with FixtureServer() as server:
        server.files["/MovieLens/ml-100k.zip"] = zip_bytes({"ml-100k/ml-100k.inter": inter,
                                                             "ml-100k/ml-100k.item": item})
        code, out, err = run_main(["download", "ML-100K", "--data_dir", tmp_path, "--source", "recbole-zip",
                                   "--recbole_url", server.url, "--no_progress"], capsys)
    assert code == 0, err
    assert "pip" not in out  # --source recbole-zip: the wheel is not tried
    assert (tmp_path / "ML-100K" / "ml-100k.inter").read_text() == inter
    assert (tmp_path / "ML-100K" / "ml-100k.item").read_text() == item
    assert sorted(p.name for p in (tmp_path / "ML-100K").iterdir()) == ["ml-100k.inter", "ml-100k.item"]


def test_download_falls_back_to_grouplens_when_recbole_denies(tmp_path, capsys, monkeypatch):
    monkeypatch.delitem(catalog.EXPECTED_SHA256, "ml-100k.item")
    u_item = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1" + "|0" * 13 + "\n"
    with FixtureServer() as server:
        server.status["/MovieLens/ml-100k.zip"] = 403
        server.files["/movielens/ml-100k.zip"] = zip_bytes({"ml-100k/u.data": "196\t242\t3\t881250949\n",
                                                             "ml-100k/u.item": u_item})
        code, out, err = run_main(["download", "ML-100K", "--data_dir", tmp_path, "--no_progress",
                                   "--recbole_url", server.url, "--grouplens_url", server.url + "movielens/"],
                                  capsys)
    assert code == 0, err
    assert "recbole-wheel failed: pip could not download" in out and "recbole-zip failed" in out and "HTTP 403" in out
    folder = tmp_path / "ML-100K"
    assert (folder / "ml-100k.inter").read_text() == HEADER + "196\t242\t3\t881250949\n"
    assert (folder / "ml-100k.item").read_text() == (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n")


def test_download_netflix_fetches_genres_and_names_manual_file(tmp_path, capsys):
    with FixtureServer() as server:
        server.files["/Netflix/netflix.zip"] = zip_bytes({"netflix.inter": HEADER + "1\t1\t5\t0\n"})
        server.files["/genres.csv"] = b"movieId,genres\n1,Drama\n"
        code, out, err = run_main(["download", "Netflix-1M", "--data_dir", tmp_path, "--no_progress",
                                   "--recbole_url", server.url, "--genres_url", server.url + "genres.csv"],
                                  capsys)
    assert code == 0, err
    assert (tmp_path / "Netflix-1M" / "netflix_genres.csv").read_bytes() == b"movieId,genres\n1,Drama\n"
    assert "movie_titles.csv" in out and "kaggle.com" in out


def test_download_offline_says_where_to_put_files(tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = run_main(["download", "ML-1M", "--data_dir", tmp_path, "--no_progress",
                               "--recbole_url", f"http://127.0.0.1:{port}/"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "cannot reach" in err and "by hand" in err and str(tmp_path / "ML-1M") in err
    # the manual GroupLens route named in that message works without the network
    (tmp_path / "ML-1M" / "ratings.dat").write_text("1::1193::5::978300760\n")
    (tmp_path / "ML-1M" / "movies.dat").write_text("1193::Heat (1995)::Action|Crime\n")
    code, out, err = run_main(["download", "ML-1M", "--data_dir", tmp_path, "--no_progress",
                               "--recbole_url", f"http://127.0.0.1:{port}/"], capsys)
    assert code == 0, err
    assert (tmp_path / "ML-1M" / "ml-1m.item").read_text().endswith("1193\tHeat\t1995\tAction Crime\n")


# ---------------------------------------------------------------------------------------------
# The recbole wheel as a source (pip against a local find-links folder, never the network)

def write_recbole_wheel(folder, inter, item, version="1.2.1"):
    """A minimal wheel pip accepts as recbole==VERSION, carrying the two raw files where the real
    wheel has them (recbole/dataset_example/ml-100k/)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"recbole-{version}.dist-info"
    members = {
        "recbole/__init__.py": b"",
        "recbole/dataset_example/ml-100k/ml-100k.inter": inter,
        "recbole/dataset_example/ml-100k/ml-100k.item": item,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: recbole\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in members) + f"{dist_info}/RECORD,,\n"
    path = folder / f"recbole-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist_info}/RECORD", record)
    return path


def wheel_argv(data_dir, links, *extra):
    """`download ML-100K` with pip pointed at the local folder only (the offline fixture closes
    every other source)."""
    return ["download", "ML-100K", "--data_dir", str(data_dir), "--no_progress",
            f"--pip_args=--no-index --find-links {links}", *extra]


SYNTHETIC_INTER = (HEADER + "1\t2\t5\t0\n").encode()
SYNTHETIC_ITEM = b"item_id:token\tmovie_title:token_seq\n2\tA\n"


@pytest.fixture
def synthetic_sums(monkeypatch):
    """Pretend the synthetic raw files are the published ones."""
    monkeypatch.setitem(catalog.EXPECTED_SHA256, "ml-100k.inter", hashlib.sha256(SYNTHETIC_INTER).hexdigest())
    monkeypatch.setitem(catalog.EXPECTED_SHA256, "ml-100k.item", hashlib.sha256(SYNTHETIC_ITEM).hexdigest())


def test_download_from_recbole_wheel_with_other_sources_closed(tmp_path, capsys, synthetic_sums):
    write_recbole_wheel(tmp_path / "links", SYNTHETIC_INTER, SYNTHETIC_ITEM)
    code, out, err = run_main(wheel_argv(tmp_path / "data", tmp_path / "links"), capsys)
    assert code == 0, err
    folder = tmp_path / "data" / "ML-100K"
    assert (folder / "ml-100k.inter").read_bytes() == SYNTHETIC_INTER
    assert (folder / "ml-100k.item").read_bytes() == SYNTHETIC_ITEM
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item"]  # only those two
    assert out.count("(verified)") == 2 and "recbole-zip" not in out  # the first source sufficed


def test_recbole_wheel_with_a_changed_member_is_refused(tmp_path, capsys, synthetic_sums):
    write_recbole_wheel(tmp_path / "links", SYNTHETIC_INTER, SYNTHETIC_ITEM.replace(b"A", b"B"))
    code, out, err = run_main(wheel_argv(tmp_path / "data", tmp_path / "links"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: recbole/dataset_example/ml-100k/ml-100k.item in recbole-1.2.1-py3-none-any.whl: "
                          "sha256 ") and "refused, nothing was written" in err
    assert list((tmp_path / "data" / "ML-100K").iterdir()) == []  # not even the verified .inter


def test_source_flag_forces_one_source(tmp_path, capsys, offline):
    code, out, err = run_main(["download", "ML-1M", "--data_dir", tmp_path, "--source", "recbole-wheel"], capsys)
    assert (code, err) == (2, "error: --source recbole-wheel: no such source for ML-1M "
                              "(its sources: recbole-zip, grouplens)\n")
    code, out, err = run_main(["download", "ML-100K", "--data_dir", tmp_path, "--no_progress",
                               "--source", "grouplens"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"grouplens: cannot reach {offline}ml-100k.zip" in err
    assert "pip" not in out + err and "recbole-zip" not in out + err


def real_wheel_files(data_dir):
    folder = data_dir / "ML-100K"
    return (folder / "ml-100k.inter").read_bytes(), (folder / "ml-100k.item").read_bytes()


def test_real_entry_point_gets_the_published_raw_files_from_a_wheel(ml100k_with_raw, tmp_path):
    inter, item = real_wheel_files(ml100k_with_raw)
    write_recbole_wheel(tmp_path / "links", inter, item)
    process = subprocess.run([sys.executable, str(ROOT / "dataloader.py"), *wheel_argv(tmp_path / "data",
                              tmp_path / "links")], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    folder = tmp_path / "data" / "ML-100K"
    assert (folder / "ml-100k.inter").read_bytes() == inter and (folder / "ml-100k.item").read_bytes() == item
    assert process.stdout.count("(verified)") == 2


def test_real_entry_point_refuses_a_tampered_wheel(ml100k_with_raw, tmp_path):
    inter, item = real_wheel_files(ml100k_with_raw)
    write_recbole_wheel(tmp_path / "links", inter.replace(b"\t5\t", b"\t4\t", 1), item)
    process = subprocess.run([sys.executable, str(ROOT / "dataloader.py"), *wheel_argv(tmp_path / "data",
                              tmp_path / "links")], capture_output=True, text=True, timeout=300)
    assert process.returncode == 2
    assert process.stderr.startswith("error: recbole/dataset_example/ml-100k/ml-100k.inter in ")
    assert process.stderr.count("\n") == 1 and "Traceback" not in process.stderr
    assert list((tmp_path / "data" / "ML-100K").iterdir()) == []


def test_refined_unreachable_falls_back_to_raw_files_and_preprocess(ml100k_with_raw, tmp_path):
    """The published original splits, byte for byte, from the raw files; train_augment named."""
    write_recbole_wheel(tmp_path / "links", *real_wheel_files(ml100k_with_raw))
    data_dir = tmp_path / "data"
    process = subprocess.run([sys.executable, str(ROOT / "dataloader.py"), *wheel_argv(data_dir, tmp_path / "links",
                              "--refined")], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    folder, published = data_dir / "ML-100K", ml100k_with_raw / "ML-100K"
    for split in ("train_original", "validation", "test"):
        assert (folder / f"ML-100K_{split}.csv").read_bytes() == (published / f"ML-100K_{split}.csv").read_bytes()
    assert (folder / "ml-100k.item").read_bytes() == (published / "ml-100k.item").read_bytes()  # for the LLM step
    assert not (folder / "ML-100K_train_augment.csv").exists()
    note = "".join(line for line in process.stderr.splitlines(True) if not line.startswith("note: the published logs"))
    assert note.startswith(f"note: {folder / 'ML-100K_train_augment.csv'} is still missing: the authors' "
                           f"LLM-refined train split could not be fetched (cannot reach ")
    assert f"python dataloader.py download ML-100K --refined --data_dir {data_dir}\n" in note
    assert f"python refine_llm.py run ML-100K --data_dir {data_dir}\n" in note
    command = f"python main.py --dataset ML-100K --data_dir {data_dir} --r 100 --dataset_augment 0 --threads 1 " \
              f"--path_name refine_original"
    assert note.endswith(f"    {command}\n")
    # the file itself (raw), not its GitHub page
    assert ("save https://raw.githubusercontent.com/Chanwoo-Jeong-2000/ReFINe_plus/main/dataset/ML-100K/"
            f"ML-100K_train_augment.csv into {folder}/") in note
    # the printed training command runs as printed (one epoch, on the CPU) on the splits just built
    script, *flags = shlex.split(command)[1:]  # python main.py FLAGS: main.py of this repository, from tmp_path
    trained = subprocess.run([sys.executable, str(ROOT / script), *flags, "--epochs", "1", "--device", "cpu"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert "Final Test Results" in trained.stdout and (tmp_path / "result/ML-100K/refine_original.out").is_file()
    # a rerun (still offline) checks what is there, rebuilds nothing and names the same gap
    before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    rerun = subprocess.run(process.args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "wrote" not in rerun.stdout
    rerun_note = "".join(line for line in rerun.stderr.splitlines(True) if not line.startswith("note: the published logs"))
    assert rerun_note.startswith(note.split(" (cannot reach")[0]) and rerun_note.endswith(note.split("\n", 1)[1])
    assert rerun.stdout.count("sha256 verified") == 5  # three splits, two raw files
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == before
    assert "Traceback" not in note


def test_refined_fallback_keeps_present_splits_and_names_nothing_missing(tmp_path, capsys, synthetic_sums):
    """With all four splits present (no checksum known for these), nothing is fetched or rebuilt."""
    folder = tmp_path / "data" / "ML-100K"
    folder.mkdir(parents=True)
    for split in catalog.REFINED_SPLITS:
        (folder / f"ML-100K_{split}.csv").write_text(f"{split}\n")
    write_recbole_wheel(tmp_path / "links", SYNTHETIC_INTER, SYNTHETIC_ITEM)
    code, out, err = run_main(wheel_argv(tmp_path / "data", tmp_path / "links", "--refined", "--accept_changed"),
                              capsys)
    assert code == 0, err
    assert err == "" and out.count("differs from the published file; kept (--accept_changed)") == 4
    for split in catalog.REFINED_SPLITS:
        assert (folder / f"ML-100K_{split}.csv").read_text() == f"{split}\n"
    assert (folder / "ml-100k.item").read_bytes() == SYNTHETIC_ITEM


def test_refined_netflix_fetches_titles_side_not_the_large_archive(tmp_path, capsys, monkeypatch):
    with serving_refined_splits("Netflix-1M", monkeypatch) as (server, fixtures):
        server.files["/genres.csv"] = b"movieId,genres\n1,Drama\n"
        code, out, err = run_main(["download", "Netflix-1M", "--refined", "--data_dir", tmp_path, "--no_progress",
                                   "--refined_url", server.url + "dataset/", "--recbole_url", server.url,
                                   "--genres_url", server.url + "genres.csv"], capsys)
    assert code == 0, err
    assert sorted(path for path, _ in server.requests) == sorted(server.files)  # not /Netflix/netflix.zip
    assert "movie_titles.csv" in out and "kaggle.com" in out  # named, to be fetched by hand


# ---------------------------------------------------------------------------------------------
# Files already present are checked against the published sha256

@pytest.mark.parametrize("refined", [True, False], ids=["split", "raw"])
def test_changed_present_file_is_reported_and_kept(refined_server, tmp_path, capsys, refined, synthetic_sums):
    server, fixtures = refined_server
    folder = tmp_path / "ML-100K"
    folder.mkdir()
    name = "ML-100K_test.csv" if refined else "ml-100k.inter"
    changed = (fixtures[name] if refined else SYNTHETIC_INTER).replace(b"\n", b"\r\n")
    (folder / name).write_bytes(changed)
    argv = ["download", "ML-100K", "--data_dir", tmp_path, "--refined_url", server.url + "dataset/", "--no_progress"]
    argv += ["--refined"] if refined else []
    code, out, err = run_main(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {folder / name} is already present but differs from the published file "
                          f"(sha256 {hashlib.sha256(changed).hexdigest()}, published ")
    assert "--accept_changed" in err
    assert sorted(p.name for p in folder.iterdir()) == [name] and (folder / name).read_bytes() == changed
    assert server.requests == []  # checked before any download


def test_verified_present_files_are_not_fetched_again(tmp_path, capsys, synthetic_sums):
    folder = tmp_path / "ML-100K"
    folder.mkdir()
    (folder / "ml-100k.inter").write_bytes(SYNTHETIC_INTER)
    (folder / "ml-100k.item").write_bytes(SYNTHETIC_ITEM)
    code, out, err = run_main(["download", "ML-100K", "--data_dir", tmp_path], capsys)
    assert code == 0, err
    assert out.count("already present, sha256 verified") == 2 and "pip" not in out


# ---------------------------------------------------------------------------------------------
# Bad input: one-line errors, exit code 2

@pytest.mark.parametrize("content, message", [
    (f"{USER}\t{ITEM}\ttimestamp:float\n1\t2\t3\n", "header lacks rating:float"),
    (HEADER + "1\t2\t5\t0\n1\t3\tfive\t0\n", "line 3: rating:float value 'five' is not a number"),
    ("", "is empty"),
    (HEADER, "has a header but no rows"),
    (HEADER + "1\t2\t5\t0\n1\t3\t4\t0\n1\t2\t3\t1\n", "1 duplicate (user, item) rows, e.g. user 1 item 2"),
])
def test_bad_input_is_one_line_error(tmp_path, capsys, content, message):
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "own.inter").write_text(content)
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def toy_inter(tmp_path, name="own"):
    """A raw file that preprocesses into three non-empty splits (6 users x 10 items, all positive)."""
    write_inter(tmp_path / name / f"{name}.inter", [(u, i, 5, 0) for u in range(1, 7) for i in range(1, 11)])
    return tmp_path / name


@pytest.mark.parametrize("flags, message", [
    (["--test_ratio", "1.5"], "--test_ratio 1.5: must be a fraction strictly between 0 and 1"),
    (["--valid_ratio", "-0.5"], "--valid_ratio -0.5: must be a fraction strictly between 0 and 1"),
    (["--valid_ratio", "nan"], "--valid_ratio nan: must be a fraction strictly between 0 and 1"),
    (["--test_ratio", "0"], "--test_ratio 0.0: must be a fraction strictly between 0 and 1"),
    (["--test_ratio", "0.6", "--valid_ratio", "0.4"], "--test_ratio 0.6 + --valid_ratio 0.4 leaves no train rows: "
                                                      "their sum must be below 1"),
    (["--min_user", "-1"], "--min_user -1: must be 0 or more"),
    (["--min_item", "-5"], "--min_item -5: must be 0 or more"),
    (["--sample_users", "-2"], "--sample_users -2: must be 0 or more"),
    (["--positive_threshold", "inf"], "--positive_threshold inf: must be a finite number"),
    (["--seed", "-1"], "--seed -1: must be between 0 and 2**32 - 1 (numpy's seed range)"),
])
def test_preprocess_refuses_impossible_options_before_reading(tmp_path, capsys, monkeypatch, flags, message):
    folder = toy_inter(tmp_path)

    def must_not_read(*args, **kwargs):
        raise AssertionError("data read before the options were checked")

    monkeypatch.setattr(preprocess, "load_interactions", must_not_read)
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path, *flags], capsys)
    assert (code, err) == (2, f"error: {message}\n")
    assert sorted(p.name for p in folder.iterdir()) == ["own.inter"]


@pytest.mark.parametrize("blocked", ["train_original", "validation", "test"])
def test_preprocess_output_that_is_a_directory_stops_before_anything(tmp_path, capsys, blocked):
    folder = toy_inter(tmp_path)
    (folder / f"own_{blocked}.csv").mkdir()
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path], capsys)
    assert (code, err) == (2, f"error: preprocess output {folder / f'own_{blocked}.csv'} is a directory; "
                              f"move it away or write elsewhere\n")
    assert "reading" not in out  # refused before the raw files were read
    assert sorted(p.name for p in folder.iterdir()) == ["own.inter", f"own_{blocked}.csv"]


def interrupt():
    raise KeyboardInterrupt


def disk_full():
    raise OSError(errno.ENOSPC, "No space left on device")  # as a real write error: no file name


@pytest.mark.parametrize("failure, at, line", [
    (interrupt, 3, "error: interrupted; no split file was written or replaced"),
    (disk_full, 2, "error: {folder}/own_validation.csv: No space left on device (free space); no split file was "
                   "written or replaced"),
], ids=["ctrl-c", "disk-full"])
def test_preprocess_writes_all_three_splits_or_none(tmp_path, capsys, monkeypatch, failure, at, line):
    """A failure (Ctrl-C, a full disk) while a split is written leaves the old three in place, and the
    line names the file being written."""
    folder = toy_inter(tmp_path)
    old = {split: f"old {split}\n" for split in catalog.SPLITS}
    for split, text in old.items():
        (folder / f"own_{split}.csv").write_text(text)
    real_to_csv, written = pd.DataFrame.to_csv, []

    def to_csv_then_fail(self, handle, **kwargs):
        written.append(handle.name)
        real_to_csv(self, handle, **kwargs)
        if len(written) == at:
            failure()

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_then_fail)
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path], capsys)
    assert code == 2 and err.startswith(line.format(folder=folder))
    assert err.count("\n") == 1 and len(written) == at and "Traceback" not in err
    assert {split: (folder / f"own_{split}.csv").read_text() for split in catalog.SPLITS} == old
    assert sorted(p.name for p in folder.iterdir()) == sorted(["own.inter"] + [f"own_{s}.csv" for s in old])


@pytest.mark.parametrize("raw", ["own.inter", "own.item"])
def test_preprocess_raw_file_that_is_a_directory_is_named(tmp_path, capsys, raw):
    folder = toy_inter(tmp_path)
    if raw == "own.inter":
        (folder / raw).unlink()
    (folder / raw).mkdir()
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path, "--item_columns", "title:token"], capsys)
    assert (code, err) == (2, f"error: {folder / raw} is a folder, not a file: move it away and put the file there\n")
    assert not list(folder.glob("own_*.csv"))


def test_preprocess_unreadable_raw_file_is_named(tmp_path, capsys, monkeypatch):
    """Simulated (the tests may run as root, who reads anything): the library's error lacks the path."""
    folder = toy_inter(tmp_path)

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd, "read_csv", no_permission)
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path], capsys)
    assert (code, err) == (2, f"error: {folder / 'own.inter'}: cannot read it (Permission denied); "
                              f"check its permissions\n")


def test_preprocess_subprocess_bad_option_is_one_line(tmp_path):
    toy_inter(tmp_path)
    process = subprocess.run([sys.executable, "dataloader.py", "preprocess", "own", "--data_dir", str(tmp_path),
                              "--test_ratio", "1.5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (process.returncode, process.stderr) == (
        2, "error: --test_ratio 1.5: must be a fraction strictly between 0 and 1\n")


def test_ctrl_c_during_download_names_what_resumes(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "fetch", interrupted)
    code, out, err = run_main(["download", "ML-1M", "--data_dir", tmp_path, "--no_progress"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: interrupted; partial downloads are kept as <file>.part and resume")


def test_duplicates_first_keeps_first_row(tmp_path, capsys):
    rows = [(u, i, 5, 0) for u in range(1, 7) for i in range(1, 7)] + [(1, 1, 2, 9)]
    write_inter(tmp_path / "own" / "own.inter", rows)
    code, out, err = run_main(["preprocess", "own", "--data_dir", tmp_path, "--duplicates", "first"], capsys)
    assert code == 0, err
    train = pd.read_csv(tmp_path / "own" / "own_train_original.csv")
    assert (train[RATING] == 5).all()  # the later (1, 1, 2) row was dropped


def test_unknown_dataset_errors(tmp_path, capsys):
    code, out, err = run_main(["download", "Nope", "--data_dir", tmp_path], capsys)
    assert code == 2 and "no known source for dataset 'Nope'" in err
    code, out, err = run_main(["preprocess", "Nope", "--data_dir", tmp_path], capsys)
    assert code == 2 and "no raw files for dataset 'Nope'" in err


def test_cli_subprocess_reports_error_and_exit_code(tmp_path):
    (tmp_path / "ML-1M").mkdir()
    (tmp_path / "ML-1M" / "ml-1m.inter").write_text(HEADER + "1\t2\tabc\t0\n")
    result = subprocess.run([sys.executable, "dataloader.py", "preprocess", "ML-1M", "--data_dir",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'ML-1M' / 'ml-1m.inter'} line 2: rating:float value 'abc' is not a number\n"


def test_missing_split_message_names_commands_with_the_users_data_dir(tmp_path):
    data_dir = tmp_path / "my data"  # a space: the commands quote it
    message = catalog.missing_split_message(data_dir, "ML-1M")
    assert f"{data_dir}/ML-1M/ML-1M_train_augment.csv" in message
    commands = re.findall(r"`([^`]*)`", message)
    assert commands == [f"python dataloader.py download ML-1M --refined --data_dir '{data_dir}'",
                        f"python dataloader.py download ML-1M --data_dir '{data_dir}'",
                        f"python dataloader.py preprocess ML-1M --data_dir '{data_dir}'",
                        f"python refine_llm.py run ML-1M --data_dir '{data_dir}'"]
    assert "--dataset_augment 0" not in message  # no original split to train on yet
    for split in catalog.REFINED_SPLITS:
        (data_dir / "ML-1M").mkdir(parents=True, exist_ok=True)
        (data_dir / "ML-1M" / f"ML-1M_{split}.csv").write_text("x")
    assert catalog.missing_split_message(data_dir, "ML-1M") is None


def test_missing_augment_split_suggests_the_original_split(tmp_path):
    for split in ("train_original", "validation", "test"):
        (tmp_path / "ML-1M").mkdir(exist_ok=True)
        (tmp_path / "ML-1M" / f"ML-1M_{split}.csv").write_text("x")
    message = catalog.missing_split_message(tmp_path, "ML-1M")
    assert message.startswith(f"missing {tmp_path}/ML-1M/ML-1M_train_augment.csv: ")
    assert re.findall(r"`([^`]*)`", message) == [
        f"python main.py --dataset ML-1M --data_dir {tmp_path} --r 250 --dataset_augment 0 --threads 1 "
        "--path_name refine_original",
        f"python refine_llm.py run ML-1M --data_dir {tmp_path}",
        f"python dataloader.py download ML-1M --refined --data_dir {tmp_path}"]


# ---------------------------------------------------------------------------------------------
# ReFINe++'s Amazon datasets

def test_amazon_refined_splits_come_from_the_refined_repository_and_nothing_else(tmp_path, capsys, monkeypatch):
    with serving_refined_splits("Amazon_Digital_Music", monkeypatch) as (server, fixtures):
        code, out, err = run_main(["download", "Amazon_Digital_Music", "--refined", "--data_dir", tmp_path,
                                   "--refined_url", server.url + "dataset/", "--no_progress"], capsys)
    assert code == 0, err
    for base, body in fixtures.items():
        assert (tmp_path / "Amazon_Digital_Music" / base).read_bytes() == body
    # no item side to fetch: the four splits were the only requests
    assert sorted(path for path, _ in server.requests) == sorted(f"/dataset/Amazon_Digital_Music/{b}" for b in fixtures)


def test_amazon_known_checksums_are_the_published_ones():
    known = {name for name in catalog.EXPECTED_SHA256 if name.startswith("Amazon_")}
    assert known == {f"Amazon_Digital_Music_{split}.csv" for split in catalog.REFINED_SPLITS} | {
        "Amazon_Books_validation.csv"}
    assert catalog.EXPECTED_SHA256["Amazon_Digital_Music_test.csv"].startswith("bfb54456fe442f82")


def test_amazon_raw_ratings_from_recbole_bucket_then_preprocess(tmp_path, capsys):
    rng = np.random.default_rng(5)
    rows = [(f"A{u:03d}", f"B{i:04d}", int(rng.choice([1, 2, 4, 5, 5])), 0)
            for u in range(30) for i in range(25) if rng.random() < 0.7]
    inter = HEADER + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    with FixtureServer() as server:
        server.files["/Amazon_ratings/Amazon_Books.zip"] = zip_bytes({"Amazon_Books/Amazon_Books.inter": inter})
        code, out, err = run_main(["download", "Amazon_Books", "--data_dir", tmp_path, "--no_progress",
                                   "--recbole_url", server.url], capsys)
    assert code == 0, err
    assert (tmp_path / "Amazon_Books" / "Amazon_Books.inter").read_text() == inter
    assert not (tmp_path / "Amazon_Books" / "Amazon_Books.zip").exists()
    code, out, err = run_main(["preprocess", "Amazon_Books", "--data_dir", tmp_path], capsys)
    assert code == 0, err
    train, valid, test = (pd.read_csv(tmp_path / "Amazon_Books" / f"Amazon_Books_{s}.csv") for s in catalog.SPLITS)
    # string ids stay strings; every input row that survives the 5-core is in exactly one split
    expected = preprocess.make_splits(frame([r[:3] for r in rows]))
    assert [len(train), len(valid), len(test)] == [len(part) for part in expected]
    assert set(train[USER]) >= set(valid[USER]) and train[USER].str.startswith("A").all()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_preprocess_stopped_by_a_signal_is_one_line_exit_2(tmp_path, signum):
    """Issue 20 cause 7: the stop handlers are installed before any work, so a stop while preprocess
    reads is the one-line stop (not 'killed by signal 2'), and no split file is written."""
    from helpers import ctrl_c_enabled

    rng = np.random.default_rng(0)
    rows = zip(rng.integers(1, 3000, 200000), rng.integers(1, 2000, 200000), rng.integers(1, 6, 200000), [0] * 200000)
    write_inter(tmp_path / "own" / "own.inter", rows)
    process = subprocess.Popen([sys.executable, str(ROOT / "dataloader.py"), "preprocess", "own", "--data_dir",
                                str(tmp_path), "--duplicates", "first"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=ctrl_c_enabled)
    assert process.stdout.readline().startswith("reading ")  # the work has begun: pandas is loading, then reading
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert err == ("error: interrupted; no split file was written or replaced (the three are renamed into place "
                   "together at the end); rerun the same command\n")
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["own.inter"]


def test_pip_args_with_an_unbalanced_quote_is_one_line_before_any_download(tmp_path):
    """Through the real entry point: the flag is checked before anything is fetched or written."""
    process = subprocess.run([sys.executable, str(ROOT / "dataloader.py"), "download", "ML-100K", "--data_dir",
                              str(tmp_path / "data"), "--pip_args", '--index-url "http://example.invalid'],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert process.stderr.count("\n") == 1 and process.stderr.startswith("error: --pip_args ")
    assert "No closing quotation" in process.stderr and not (tmp_path / "data").exists()
