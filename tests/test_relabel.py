"""The relabel stage (refine_llm.py relabel, llm/relabel_rules.py): each rule's rows worked out by hand.

    python -m pytest -q tests/test_relabel.py

The hand dataset: users 1 and 2 answered by the LLM, user 3 not (skipped), user 4 without 2/3 rows.
Candidates are the 2/3 rows of users 1 and 2; the LLM chose one of each user's: user 1 item 2, user 2 item 2.
"""
import json
import os
import subprocess
import sys
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import compare
import splits
import experiments
import refine_llm as R
import run_files
import sweep
import utils
from llm import relabel_rules
from helpers import ROOT, TINY, make_dataset, write_published_answers
from llm.data import ITEM_COL, RATING_COL, USER_COL

COLUMNS = [USER_COL, ITEM_COL, RATING_COL]
TRAIN = [(1, 1, 5), (1, 2, 3), (1, 3, 2), (1, 4, 3), (1, 5, 4),
         (2, 1, 4), (2, 2, 2), (2, 3, 3), (2, 6, 1),
         (3, 2, 3), (3, 4, 2), (3, 5, 5),
         (4, 2, 5), (4, 3, 4), (4, 4, 5), (4, 6, 4)]  # user 4: no candidates; every item a positive somewhere
LLM = {(1, 2): 4.5, (1, 3): 0.5, (1, 4): 0.5, (2, 2): 4.5, (2, 3): 0.5}


def write_hand_dataset(root):
    """root/ML-100K/ with the three splits and the LLM's augment file; returns the folder."""
    folder = root / "ML-100K"
    folder.mkdir(parents=True)
    train = pd.DataFrame(TRAIN, columns=COLUMNS)
    train.to_csv(folder / "ML-100K_train_original.csv", index=False)
    augment = train.astype({RATING_COL: float})
    augment[RATING_COL] = [LLM.get((u, i), r) for u, i, r in TRAIN]
    augment.to_csv(folder / "ML-100K_train_augment.csv", index=False)
    for split, rows in (("validation", [(1, 6, 5), (2, 5, 4), (3, 1, 4)]), ("test", [(1, 6, 4), (2, 4, 5), (3, 3, 5)])):
        pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / f"ML-100K_{split}.csv", index=False)
    return folder


def relabelled(root, out, rule, *flags):
    """{(user, item): rating} of the rule's output, through the command."""
    assert R.main(["relabel", "ML-100K", "--data_dir", str(root), "--rule", rule, "--out_dir", str(out), *flags]) == 0
    frame = pd.read_csv(out / "ML-100K" / "ML-100K_train_augment.csv")
    return {(u, i): r for u, i, r in frame[COLUMNS].itertuples(index=False)}


def rows_of(ratings, user):
    return {item: rating for (u, item), rating in ratings.items() if u == user}


UNTOUCHED_3 = {2: 3.0, 4: 2.0, 5: 5.0}  # user 3 has no answer: its 2/3 rows stay


@pytest.mark.parametrize("rule, user1, user2, flags", [
    # the LLM's own labels
    ("llm", {2: 4.5, 3: 0.5, 4: 0.5}, {2: 4.5, 3: 0.5}, []),
    # user 1's mean (5+3+2+3+4)/5 = 3.4: no candidate reaches it; user 2's (4+2+3+1)/4 = 2.5: the 3 does
    ("user-mean", {2: 0.5, 3: 0.5, 4: 0.5}, {2: 0.5, 3: 4.5}, []),
    ("all-positive", {2: 4.5, 3: 4.5, 4: 4.5}, {2: 4.5, 3: 4.5}, []),
    ("all-negative", {2: 0.5, 3: 0.5, 4: 0.5}, {2: 0.5, 3: 0.5}, []),
    # default_rng(7).random(5) = 0.6251 0.8972 0.7757 | 0.2252 0.3002 over the candidate rows in
    # file order (user 1: items 2 3 4, user 2: items 2 3); one positive each, as the LLM chose.
    ("random-matched", {2: 0.5, 3: 4.5, 4: 0.5}, {2: 0.5, 3: 4.5}, ["--seed", "7"]),
    # default_rng(2024).random(5) = 0.6758 0.2143 0.3095 | 0.7995 0.9958
    ("random-matched", {2: 4.5, 3: 0.5, 4: 0.5}, {2: 0.5, 3: 4.5}, ["--seed", "2024"]),
])
def test_each_rule_by_hand(tmp_path, rule, user1, user2, flags):
    write_hand_dataset(tmp_path / "data")
    ratings = relabelled(tmp_path / "data", tmp_path / "out", rule, *flags)
    assert rows_of(ratings, 1) == {1: 5.0, 5: 4.0, **user1}
    assert rows_of(ratings, 2) == {1: 4.0, 6: 1.0, **user2}
    assert rows_of(ratings, 3) == UNTOUCHED_3


# User 3 (not answered) has item 2 at 3 stars and item 4 at 2: at scope all they are candidates too.
@pytest.mark.parametrize("rule, flags, user1, user2, user3", [
    # 3 -> 4.5, 2 -> 0.5: user 1 has 3 2 3 on items 2 3 4, user 2 has 2 3 on items 2 3
    ("star-threshold", [], {2: 4.5, 3: 0.5, 4: 4.5}, {2: 0.5, 3: 4.5}, UNTOUCHED_3),
    ("star-threshold", ["--scope", "answered"], {2: 4.5, 3: 0.5, 4: 4.5}, {2: 0.5, 3: 4.5}, UNTOUCHED_3),
    ("star-threshold", ["--scope", "all"], {2: 4.5, 3: 0.5, 4: 4.5}, {2: 0.5, 3: 4.5}, {2: 4.5, 4: 0.5, 5: 5.0}),
    ("all-positive", ["--scope", "all"], {2: 4.5, 3: 4.5, 4: 4.5}, {2: 4.5, 3: 4.5}, {2: 4.5, 4: 4.5, 5: 5.0}),
    ("all-negative", ["--scope", "all"], {2: 0.5, 3: 0.5, 4: 0.5}, {2: 0.5, 3: 0.5}, {2: 0.5, 4: 0.5, 5: 5.0}),
    # the LLM's on users 1 and 2 (item 2 each), star-threshold on user 3; scope all is its default
    ("llm+star-threshold", [], {2: 4.5, 3: 0.5, 4: 0.5}, {2: 4.5, 3: 0.5}, {2: 4.5, 4: 0.5, 5: 5.0}),
    ("llm+star-threshold", ["--scope", "all"], {2: 4.5, 3: 0.5, 4: 0.5}, {2: 4.5, 3: 0.5}, {2: 4.5, 4: 0.5, 5: 5.0}),
])
def test_star_threshold_scope_all_and_combined_by_hand(tmp_path, rule, flags, user1, user2, user3):
    write_hand_dataset(tmp_path / "data")
    ratings = relabelled(tmp_path / "data", tmp_path / "out", rule, *flags)
    assert rows_of(ratings, 1) == {1: 5.0, 5: 4.0, **user1}
    assert rows_of(ratings, 2) == {1: 4.0, 6: 1.0, **user2}
    assert rows_of(ratings, 3) == user3
    assert rows_of(ratings, 4) == {2: 5.0, 3: 4.0, 4: 5.0, 6: 4.0}


def test_report_at_scope_all_counts_the_llm_only_where_it_labelled_by_hand(tmp_path, capsys):
    write_hand_dataset(tmp_path / "data")
    relabelled(tmp_path / "data", tmp_path / "out", "star-threshold", "--scope", "all")
    folder = tmp_path / "out" / "ML-100K"
    # user 1: 3 candidates, LLM 4.5 on item 2, rule on items 2 and 4 -> same on items 2 and 3;
    # user 2: LLM item 2, rule item 3 -> none alike; user 3: no LLM label, rule item 2 -> 4.5, item 4 -> 0.5.
    assert (folder / "relabel_users.csv").read_text() == (
        "user_id,candidates,llm_4.5,rule_4.5,rule_0.5,same_as_llm\n1,3,1,2,1,2\n2,2,1,1,1,0\n3,2,,1,1,\n")
    report = json.loads((folder / "relabel_report.json").read_text())
    assert report["scope"] == "all" and report["rule"] == "star-threshold"
    assert (report["users_relabelled"], report["candidates"], report["llm_users"], report["llm_candidates"]) == (3, 7, 2, 5)
    assert (report["rows_4.5"], report["rows_0.5"], report["llm_rows_4.5"], report["llm_rows_0.5"]) == (4, 3, 2, 3)
    # agreement over the 5 rows the LLM labelled; user 3's 2 rows have no LLM label to agree with
    assert (report["same_label_as_llm"], report["rule_4.5_llm_0.5"], report["rule_0.5_llm_4.5"]) == (2, 2, 1)
    assert report["relabelled_without_llm_label"] == 2
    out = capsys.readouterr().out
    assert "rows relabelled in both: 5, same label 2 (40.0%)" in out and "rows relabelled in A only: 2, in B only: 0" in out
    relabelled(tmp_path / "data", tmp_path / "answered", "star-threshold")
    assert json.loads((tmp_path / "answered" / "ML-100K" / "relabel_report.json").read_text())["scope"] == "answered"


def test_combined_rule_is_the_llm_on_its_users_and_star_threshold_elsewhere(tmp_path):
    _, train, llm = fake_llm_dataset(tmp_path / "data")
    outputs = {}
    for rule, flags in (("llm", []), ("star-threshold", ["--scope", "all"]), ("llm+star-threshold", [])):
        relabelled(tmp_path / "data", tmp_path / rule, rule, *flags)
        outputs[rule] = pd.read_csv(tmp_path / rule / "ML-100K" / "ML-100K_train_augment.csv")[RATING_COL]
    answered = (train[USER_COL] <= 5).to_numpy()
    assert train.loc[~answered, RATING_COL].isin([2, 3]).any()  # user 6 has candidates of its own
    combined = outputs["llm+star-threshold"].to_numpy()
    assert (combined[answered] == outputs["llm"].to_numpy()[answered]).all()
    assert (combined[~answered] == outputs["star-threshold"].to_numpy()[~answered]).all()
    assert not np.isin(combined, [2, 3]).any()


def test_collaborative_takes_the_llm_count_of_highest_scores_by_hand(tmp_path, monkeypatch):
    # Rows 1-3 are user 1's candidates (items 2 3 4), rows 6-7 user 2's (items 2 3); one positive each.
    # User 1: items 3 and 4 tie at 0.9 -> the earlier row, item 3. User 2: item 3 (2.0 > -1.0).
    scores = np.array([0, 0.1, 0.9, 0.9, 0, 0, -1.0, 2.0] + [0] * 8)
    monkeypatch.setattr(relabel_rules, "collaborative_scores", lambda data, options: scores)
    write_hand_dataset(tmp_path / "data")
    ratings = relabelled(tmp_path / "data", tmp_path / "out", "collaborative")
    assert rows_of(ratings, 1) == {1: 5.0, 5: 4.0, 2: 0.5, 3: 4.5, 4: 0.5}
    assert rows_of(ratings, 2) == {1: 4.0, 6: 1.0, 2: 0.5, 3: 4.5}
    assert rows_of(ratings, 3) == UNTOUCHED_3


def test_report_counts_per_user_and_agreement_by_hand(tmp_path, capsys):
    write_hand_dataset(tmp_path / "data")
    relabelled(tmp_path / "data", tmp_path / "out", "user-mean")
    folder = tmp_path / "out" / "ML-100K"
    users = pd.read_csv(folder / "relabel_users.csv")
    # user 1: 3 candidates, LLM 1 positive, rule 0 -> 3 negatives, same label on items 3 and 4;
    # user 2: 2 candidates, LLM item 2, rule item 3 -> no row alike.
    assert users.values.tolist() == [[1, 3, 1, 0, 3, 2], [2, 2, 1, 1, 1, 0]]
    report = json.loads((folder / "relabel_report.json").read_text())
    assert (report["rows_4.5"], report["rows_0.5"], report["llm_rows_4.5"], report["llm_rows_0.5"]) == (1, 4, 2, 3)
    assert (report["same_label_as_llm"], report["rule_4.5_llm_0.5"], report["rule_0.5_llm_4.5"]) == (2, 1, 2)
    assert report["seed"] is None and report["epochs"] is None
    out = capsys.readouterr().out
    assert "rows relabelled in both: 5, same label 2 (40.0%); A 4.5 / B 0.5: 1, A 0.5 / B 4.5: 2" in out
    # the other three files are copies, so main.py --data_dir OUT trains on it
    for split in ("train_original", "validation", "test"):
        name = f"ML-100K_{split}.csv"
        assert (folder / name).read_bytes() == (tmp_path / "data" / "ML-100K" / name).read_bytes()
    data = splits.load_splits(tmp_path / "out", "ML-100K", augment=True)
    assert data.train_pos.size(1) == 8 + 1  # the eight >= 4 rows and user 2's item 3
    assert data.train_neg.size(1) == 1 + 4  # user 2's 1-star row and the four 0.5 rows


def fake_llm_dataset(root, seed=0):
    """A random train_original (helpers.make_dataset) with splits and an LLM augment file: users 1-5
    answered, each candidate picked with probability one half; user 6 not answered."""
    folder = make_dataset(root, n_users=6, n_items=40, per_user=20, seed=seed)
    train = pd.read_csv(folder / "ML-100K_train_original.csv")
    # users 7 and 8 like every item between them, so that each has a train positive (an embedding) as
    # main.py needs, and each has items left to draw as negatives
    liking = pd.DataFrame({USER_COL: [8] + [7] * 39, ITEM_COL: range(1, 41), RATING_COL: 5})
    train = pd.concat([train, liking], ignore_index=True)
    train.to_csv(folder / "ML-100K_train_original.csv", index=False)
    rng = np.random.default_rng(seed + 1)
    candidate = train[RATING_COL].isin([2, 3]) & (train[USER_COL] <= 5)
    augment = train.astype({RATING_COL: float})
    augment.loc[candidate, RATING_COL] = np.where(rng.random(int(candidate.sum())) < 0.5, 4.5, 0.5)
    augment.to_csv(folder / "ML-100K_train_augment.csv", index=False)
    for split in ("validation", "test"):
        train[train[RATING_COL] >= 4].groupby(USER_COL).head(1).to_csv(folder / f"ML-100K_{split}.csv", index=False)
    return folder, train, augment


def positives_per_user(frame):
    return frame[frame[RATING_COL] == 4.5].groupby(USER_COL).size().to_dict()


def test_random_matched_keeps_each_users_count_and_changes_with_the_seed(tmp_path):
    _, train, llm = fake_llm_dataset(tmp_path / "data")
    outputs = []
    for seed in (1, 2):
        relabelled(tmp_path / "data", tmp_path / f"out{seed}", "random-matched", "--seed", str(seed))
        outputs.append(pd.read_csv(tmp_path / f"out{seed}" / "ML-100K" / "ML-100K_train_augment.csv"))
        assert positives_per_user(outputs[-1]) == positives_per_user(llm)
        # the same candidates relabelled as the LLM's; everything else as train_original
        assert (outputs[-1][RATING_COL].isin([0.5, 4.5]) == llm[RATING_COL].isin([0.5, 4.5])).all()
    assert not outputs[0].equals(outputs[1])
    relabelled(tmp_path / "data", tmp_path / "again", "random-matched", "--seed", "1")
    assert (tmp_path / "again" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() == \
        (tmp_path / "out1" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes()


@pytest.mark.parametrize("rule, label", [("all-positive", 4.5), ("all-negative", 0.5)])
def test_bounds_leave_no_2_or_3_for_answered_users(tmp_path, rule, label):
    _, train, llm = fake_llm_dataset(tmp_path / "data")
    relabelled(tmp_path / "data", tmp_path / "out", rule)
    out = pd.read_csv(tmp_path / "out" / "ML-100K" / "ML-100K_train_augment.csv")
    answered = out[USER_COL] <= 5
    assert train.loc[~answered, RATING_COL].isin([2, 3]).any()  # user 6 has some to keep
    assert not out.loc[answered, RATING_COL].isin([2, 3]).any()
    assert (out.loc[answered & train[RATING_COL].isin([2, 3]), RATING_COL] == label).all()
    assert out.loc[~answered, RATING_COL].tolist() == train.loc[~answered, RATING_COL].astype(float).tolist()


def test_collaborative_trains_lightgcn_keeps_counts_and_is_seeded(tmp_path):
    _, train, llm = fake_llm_dataset(tmp_path / "data")
    files = []
    for out in ("a", "b"):
        relabelled(tmp_path / "data", tmp_path / out, "collaborative", "--epochs", "2", "--seed", "5", "--device", "cpu")
        files.append((tmp_path / out / "ML-100K" / "ML-100K_train_augment.csv").read_bytes())
    assert files[0] == files[1]
    out = pd.read_csv(tmp_path / "a" / "ML-100K" / "ML-100K_train_augment.csv")
    assert positives_per_user(out) == positives_per_user(llm)
    report = json.loads((tmp_path / "a" / "ML-100K" / "relabel_report.json").read_text())
    assert (report["seed"], report["epochs"]) == (5, 2)


def test_llm_answers_through_the_relabel_path_reproduce_the_published_ml100k_augment(ml100k_with_raw, tmp_path):
    source = ml100k_with_raw / "ML-100K"
    folder = tmp_path / "data" / "ML-100K"
    folder.mkdir(parents=True)
    for name in ("ML-100K_train_original.csv", "ML-100K_validation.csv", "ML-100K_test.csv", "ml-100k.item"):
        shutil.copy(source / name, folder / name)
    answers = tmp_path / "llama_distinguish_answer.txt"
    write_published_answers(source, answers)
    published = (source / "ML-100K_train_augment.csv").read_bytes()
    # from the answers, as the apply stage reads them
    relabelled(tmp_path / "data", tmp_path / "from-answers", "llm", "--llm", str(answers))
    assert (tmp_path / "from-answers" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() == published
    # from the published augment file as the LLM's labels
    relabelled(tmp_path / "data", tmp_path / "from-augment", "llm", "--llm", str(source / "ML-100K_train_augment.csv"))
    assert (tmp_path / "from-augment" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() == published
    # and random-matched on it keeps the published per-user positive counts
    relabelled(tmp_path / "data", tmp_path / "random", "random-matched", "--llm",
               str(source / "ML-100K_train_augment.csv"))
    ours = pd.read_csv(tmp_path / "random" / "ML-100K" / "ML-100K_train_augment.csv")
    assert positives_per_user(ours) == positives_per_user(pd.read_csv(source / "ML-100K_train_augment.csv"))


def exit_code(argv):
    """refine_llm's exit code, whether argparse (a bad flag) or the stage (bad input) refused."""
    try:
        return R.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("flags, message", [
    (["--out_dir", "{data}"], "is --data_dir: the relabelled file would replace the LLM's"),
    (["--llm", "{tmp}/nowhere.csv"], "the LLM's labels not found: "),
    (["--seed", "-1"], "argument --seed: '-1' is not"),
    (["--seed", str(2 ** 32)], "is not a seed from 0 to 2**32 - 1"),
    (["--epochs", "0"], "argument --epochs: '0' is not a whole number of at least 1"),
    (["--rule", "coin"], "argument --rule: invalid choice: 'coin'"),
    (["--out_dir", "{tmp}/file/below"], "is a file, not a folder"),
    (["--rule", "collaborative", "--device", "cuda:99"], "error: --device cuda:99: "),
    (["--rule", "collaborative", "--device", "tpu"], "--device tpu: unknown device"),
    (["--rule", "random-matched", "--scope", "all"], "error: --rule random-matched --scope all: it takes the "
                                                     "LLM's count of positives per user, which only answered "
                                                     "users have; use --scope answered"),
    (["--rule", "collaborative", "--scope", "all"], "error: --rule collaborative --scope all: it takes the LLM's"),
    (["--rule", "llm", "--scope", "all"], "error: --rule llm --scope all: the LLM labelled only the users it "
                                          "answered; use --scope answered"),
    (["--rule", "llm+star-threshold", "--scope", "answered"], "error: --rule llm+star-threshold --scope answered: "
                                                              "it labels the users the LLM did not answer"),
    (["--scope", "some"], "argument --scope: invalid choice: 'some'"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, flags, message):
    write_hand_dataset(tmp_path / "data")
    (tmp_path / "file").write_text("")
    argv = ["relabel", "ML-100K", "--data_dir", str(tmp_path / "data"), "--rule", "all-positive",
            "--out_dir", str(tmp_path / "out")]
    argv += [flag.format(data=tmp_path / "data", tmp=tmp_path) for flag in flags]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_augment_not_made_by_the_apply_rule_is_refused(tmp_path, capsys):
    folder = write_hand_dataset(tmp_path / "data")
    augment = pd.read_csv(folder / "ML-100K_train_augment.csv")
    augment.loc[3, RATING_COL] = 3.0  # user 1's item 4 left a 3 while its other candidates are relabelled
    augment.to_csv(folder / "ML-100K_train_augment.csv", index=False)
    assert R.main(["relabel", "ML-100K", "--data_dir", str(tmp_path / "data"), "--rule", "all-positive",
                   "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ML-100K_train_augment.csv:5: rating 3 where train_original has 3" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# experiments.py --preset relabel


def test_relabel_preset_trains_both_models_on_each_set():
    configs = experiments.PRESETS["relabel"]
    assert list(configs)[:4] == ["lightgcn-llm", "refine-llm", "lightgcn-original", "refine-original"]
    assert configs["lightgcn-llm"] == ["--model", "lightgcn"] and configs["refine-llm"] == []
    for rule in ("random-matched", "user-mean", "collaborative", "all-positive", "all-negative"):
        assert configs[f"lightgcn-{rule}"] == ["--model", "lightgcn", "--data_dir", f"dataset-relabel/{rule}"]
        assert configs[f"refine-{rule}"] == ["--data_dir", f"dataset-relabel/{rule}"]
    assert len(configs) == 14


def test_the_committed_relabel_sweep_holds_both_studies_with_their_seeds():
    """results4comparison/ML-100K-relabel holds every config of --preset relabel (5 seeds, 2024-2028) and
    of --preset llm-need (10 seeds, 2024-2033) with their flags, each tested against the LLM's labels of its
    own model (its summary is checked against its runs in test_experiments)."""
    folder = ROOT / "results4comparison" / "ML-100K-relabel"
    summary = json.loads((folder / "summary.json").read_text())
    manifest = json.loads((folder / run_files.MANIFEST).read_text())
    earlier, study = experiments.PRESETS["relabel"], experiments.preset_configs("llm-need", "ML-100K")
    assert all(earlier[name] == flags for name, flags in study.items() if name in earlier)
    configs = {**earlier, **study}
    assert sorted(entry["name"] for entry in summary["configs"]) == sorted(configs)
    assert sorted(entry["name"] for entry in manifest["configs"]) == sorted(configs)
    for entry in manifest["configs"]:
        assert entry["flags"] == ["--dataset", "ML-100K", "--r", "100"] + configs[entry["name"]] + ["--sampler", "sparse"]
    assert summary["baselines"] == ["lightgcn-llm", "refine-llm"]
    for entry in summary["configs"]:
        seeds = range(2024, 2034) if entry["name"] in study else range(2024, 2029)
        assert [run["seed"] for run in entry["runs"]] == list(seeds), entry["name"]
        if entry["name"] not in summary["baselines"]:
            assert entry["vs_baseline"]["baseline"] == entry["name"].split("-")[0] + "-llm"


# The decisive study's sweeps: main.py's flags before each arm's own (what experiments.py puts there for the
# dataset) and after them (the study's `-- ...`); Amazon's --r is the grid's validation choice.
STUDY_FLAGS = {
    "ML-100K": (["--dataset", "ML-100K", "--r", "100"], ["--sampler", "sparse"]),
    "Amazon_Digital_Music": (["--dataset", "Amazon_Digital_Music"], ["--sampler", "sparse", "--r", "300"]),
}


# Runs of the decisive study in each dataset's folder: 160 planned on ML-100K, 30 of them reused from the
# earlier 5-seed study; 100 on Amazon Digital Music.
STUDY_RUNS = {"ML-100K": 130, "Amazon_Digital_Music": 100}


@pytest.mark.parametrize("dataset", sorted(STUDY_FLAGS))
def test_the_decisive_studys_runs_are_the_planned_ones_and_print_what_they_say(dataset):
    """The study's runs in results4comparison/<dataset>-relabel: every run --preset llm-need plans and no
    other (its config's flags, the run's seed put in, the study's command around them, `--resume` when it
    went on from a saved state), kept without checkpoints, its test file holding what its log printed."""
    results = ROOT / "results4comparison"
    final = results / f"{dataset}-relabel"
    assert not (results / f"{dataset}-relabel.in-progress").exists(), "the study is complete"
    before, after = STUDY_FLAGS[dataset]
    planned = experiments.preset_configs("llm-need", dataset)
    earlier = experiments.PRESETS["relabel"] if dataset == "ML-100K" else {}
    # The earlier study's seeds 2024-2028 of the configs both share are not the study's own.
    runs = [(config, seed, run) for config in planned for seed, run in run_files.seed_folders(final / config).items()
            if config not in earlier or seed >= 2029]
    if not earlier:  # a folder of this study alone: its planned configs, nothing else
        assert {path.name for path in final.iterdir() if path.is_dir()} == set(planned)
    assert sorted((config, seed) for config, seed, _ in runs) == sorted(
        (config, seed) for config in planned for seed in range(2024, 2034) if config not in earlier or seed >= 2029)
    assert len(runs) == STUDY_RUNS[dataset]
    manifest = {entry["name"]: entry["flags"] for entry in json.loads((final / run_files.MANIFEST).read_text())["configs"]}
    for config, seed, run in runs:
        assert manifest[config] == before + planned[config] + after
        assert sorted(path.name for path in run.iterdir()) == [
            "run.err", "run.json", "run.out", "run.test.json", "run.test_users.csv"], run
        record = json.loads((run / "run.json").read_text())
        assert (record["config"], record["seed"], record["device"]) == (config, seed, "cpu")
        assert record["command"] == ["python", "main.py"] + sweep.with_seed(manifest[config], seed) + [
            "--random_seed", str(seed), "--path_name", "run",
            "--result_dir", f"results4comparison/{dataset}-relabel/{config}/seed{seed}", "--device", "cpu"] + (
            ["--resume"] if record["resumed"] else []), run
        test = json.loads((run / "run.test.json").read_text())["test"]
        printed = compare.parse_log(run / "run.out").final_test[20]
        assert printed == tuple(float(f"{test['20'][metric]:.4f}") for metric in utils.METRICS), run


STUDY_SECTIONS = {"ML-100K": "## ML-100K over seeds: does the gain need an LLM?\n",
                  "Amazon_Digital_Music": "## Amazon Digital Music over seeds: does the gain need an LLM?\n"}


@pytest.mark.parametrize("dataset", sorted(STUDY_SECTIONS))
def test_the_published_tables_of_each_study_are_rows_of_its_report(dataset):
    """results4comparison/README.md shows the report's comparison rows as they are: every row of the
    dataset's relabel section is a row of the committed summary.md, and every comparison of it is shown
    (each planned config but the two baselines, on two metrics)."""
    section = (ROOT / "results4comparison" / "README.md").read_text().split(STUDY_SECTIONS[dataset])[1].split("\n## ")[0]
    folder = ROOT / "results4comparison" / f"{dataset}-relabel"
    report = (folder / "summary.md").read_text().splitlines()
    shown = [line for line in section.splitlines() if line.startswith(("| lightgcn-", "| refine-"))]
    compared = [line for line in report if line.startswith(("| lightgcn-", "| refine-"))
                and line.split(" | ")[1] in ("Recall@20", "NDCG@20")]
    # Its configs, from the presets alone: the study's arms, and on ML-100K the earlier study's besides.
    configs = set(experiments.preset_configs("llm-need", dataset)) | (
        set(experiments.PRESETS["relabel"]) if dataset == "ML-100K" else set())
    assert len(compared) == 2 * (len(configs) - 2)
    assert sorted(shown) == sorted(compared)


PLAN_HEADING = "## The decisive study: analysis plan"


def decisive_study_runs() -> list:
    """The run folders of the decisive study: its --r grid, its Amazon sweep, and in the ML-100K folder
    its arms' runs but those of the earlier 5-seed study it reuses."""
    results = ROOT / "results4comparison"
    runs = [run for folder in ("Amazon_Digital_Music-r-grid", "Amazon_Digital_Music-relabel")
            for config in (results / folder).glob("*")
            for run in run_files.seed_folders(config).values()]
    earlier = experiments.PRESETS["relabel"]
    for config in experiments.preset_configs("llm-need", "ML-100K"):
        runs += [run for seed, run in run_files.seed_folders(results / "ML-100K-relabel" / config).items()
                 if config not in earlier or seed >= 2029]
    return sorted(runs)


def test_the_decisive_studys_plan_is_older_in_git_than_its_runs():
    """The commit that wrote the analysis plan into docs/relabel.md comes before (is an ancestor of) each
    commit that added one of the study's runs, and each run that was not resumed started after it (its
    run.json's start time, written in UTC)."""
    from datetime import datetime, timezone

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    found = git("log", "--format=%H %cI", "-S", PLAN_HEADING, "--", "docs/relabel.md")
    if found.returncode or not found.stdout.strip():
        pytest.skip("this copy holds no git history of docs/relabel.md (a shallow clone or an export)")
    plan, planned_at = found.stdout.split("\n")[-2].split()  # the oldest: the commit that added the heading
    planned_at = datetime.fromisoformat(planned_at)
    added = {}  # path -> the commit that added it
    log = git("log", "--no-renames", "--diff-filter=A", "--format=commit %H", "--name-only", "--",
              "results4comparison").stdout
    for line in log.splitlines():
        if line.startswith("commit "):
            commit = line.split()[1]
        elif line:
            added.setdefault(line, commit)
    runs = decisive_study_runs()
    assert len(runs) >= 12 + 30
    for run in runs:
        path = str((run / "run.test.json").relative_to(ROOT))
        assert path in added, f"{path} is not committed: this test reads the study's committed runs"
        assert git("merge-base", "--is-ancestor", plan, added[path]).returncode == 0, path
        record = json.loads((run / "run.json").read_text())
        if not record["resumed"]:
            started = datetime.fromisoformat(record["started"]).replace(tzinfo=timezone.utc)
            assert started > planned_at, run


def no_runs(monkeypatch):
    """experiments.main up to the runs: the runs planned are kept, none is started, no report."""
    planned = []
    monkeypatch.setattr(sweep, "execute_local", lambda runs, *rest: planned.extend(runs))
    monkeypatch.setattr(experiments.report, "report", lambda *args, **kwargs: None)
    return planned


def test_relabel_preset_makes_a_missing_set_with_the_relabel_command(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    for rule in ("random-matched", "user-mean", "all-positive", "all-negative"):
        relabelled(data, tmp_path / "dataset-relabel" / rule, rule)
    made = {rule: (tmp_path / "dataset-relabel" / rule / "ML-100K" / "ML-100K_train_augment.csv").read_bytes()
            for rule in ("random-matched", "user-mean", "all-positive", "all-negative")}
    # LightGCN's scores, as in the hand test above: the collaborative set without 350 epochs
    scores = np.array([0, 0.1, 0.9, 0.9, 0, 0, -1.0, 2.0] + [0] * 8)
    monkeypatch.setattr(relabel_rules, "collaborative_scores", lambda data, options: scores)
    planned = no_runs(monkeypatch)
    capsys.readouterr()
    argv = ["--dataset", "ML-100K", "--preset", "relabel", "--seeds", "1", "--devices", "cpu",
            "--out", str(tmp_path / "sweep")]
    assert experiments.main(argv) == 0
    err = capsys.readouterr().err
    # only the missing set is made, with the command it names
    assert f"relabelled set 1/1: python refine_llm.py relabel ML-100K --data_dir {data} --rule collaborative " \
           f"--scope answered --out_dir dataset-relabel/collaborative\n" in err and "relabelled set 2/" not in err
    assert len(planned) == 14
    collaborative = pd.read_csv(tmp_path / "dataset-relabel/collaborative/ML-100K/ML-100K_train_augment.csv")
    ratings = {(u, i): r for u, i, r in collaborative[COLUMNS].itertuples(index=False)}
    assert rows_of(ratings, 1) == {1: 5.0, 5: 4.0, 2: 0.5, 3: 4.5, 4: 0.5}
    for rule, before in made.items():  # the sets present are left as they are
        assert (tmp_path / "dataset-relabel" / rule / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() == before
    assert experiments.main(argv) == 0  # every set present: nothing is made
    assert "relabelled set" not in capsys.readouterr().err


def test_a_set_the_sweep_cannot_make_stops_it_before_anything_is_written(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    planned = no_runs(monkeypatch)
    argv = ["--dataset", "ML-100K", "--configs", "own", "--seeds", "1", "--devices", "cpu", "--out",
            str(tmp_path / "sweep"), "--config"]
    assert experiments.main(argv + ["own=--data_dir dataset-relabel/coin"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config own: dataset-relabel/coin/ML-100K/ML-100K_train_augment.csv not found, and "
                          "dataset-relabel/coin is not a set experiments.py makes") and err.count("\n") == 1
    (data / "ML-100K" / "ML-100K_train_augment.csv").unlink()  # no LLM labels to make the set from
    assert experiments.main(argv + ["own=--data_dir dataset-relabel/star-threshold"]) == 2
    assert capsys.readouterr().err == (f"error: config own: to make dataset-relabel/star-threshold: "
                                       f"{data / 'ML-100K' / 'ML-100K_train_augment.csv'} not found: the LLM's "
                                       f"labels that dataset-relabel/star-threshold is made from\n")
    assert planned == [] and not (tmp_path / "sweep").exists() and not (tmp_path / "dataset-relabel").exists()


def test_a_stop_while_a_set_is_made_leaves_no_train_file_and_the_rerun_makes_it(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    planned = no_runs(monkeypatch)
    argv = ["--dataset", "ML-100K", "--preset", "llm-need", "--configs", "refine-star-threshold", "--seeds", "1",
            "--devices", "cpu", "--out", str(tmp_path / "sweep")]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "write_augment", interrupted)  # the set's last file
    assert experiments.main(argv) == 2
    assert capsys.readouterr().err.endswith("\nerror: interrupted; nothing was lost: rerun the same command\n")
    folder = tmp_path / "dataset-relabel" / "star-threshold" / "ML-100K"
    assert not (folder / "ML-100K_train_augment.csv").exists() and not (tmp_path / "sweep").exists()
    assert planned == []
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    planned = no_runs(monkeypatch)
    assert experiments.main(argv) == 0
    ratings = pd.read_csv(folder / "ML-100K_train_augment.csv")
    assert ratings[RATING_COL].tolist()[:5] == [5.0, 4.5, 0.5, 4.5, 4.0]  # user 1: 5 3 2 3 4
    assert [run.config for run in planned] == ["refine-star-threshold"]


def test_fresh_draws_are_made_per_run_with_the_runs_seed(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    fake_llm_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    planned = no_runs(monkeypatch)
    out = tmp_path / "sweep"
    argv = ["--dataset", "ML-100K", "--preset", "llm-need", "--configs", "lightgcn-random-matched-fresh",
            "refine-random-matched-fresh", "--seeds", "7", "8", "--devices", "cpu", "--out", str(out)]
    assert experiments.main(argv) == 0
    assert capsys.readouterr().err.count("relabelled set ") == 2  # one per seed, shared by both models
    fresh = tmp_path / "dataset-relabel" / "random-matched-fresh"
    files = {seed: (fresh / f"seed{seed}" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() for seed in (7, 8)}
    assert files[7] != files[8]  # different seeds, different draws
    for seed in (7, 8):  # each the relabel command's random-matched with the run's seed, byte for byte
        relabelled(data, tmp_path / f"by-hand{seed}", "random-matched", "--seed", str(seed))
        assert (tmp_path / f"by-hand{seed}" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() == files[seed]
        report = json.loads((fresh / f"seed{seed}" / "ML-100K" / "relabel_report.json").read_text())
        assert (report["rule"], report["scope"], report["seed"]) == ("random-matched", "answered", seed)
    assert sorted((run.config, run.seed, run.flags[run.flags.index("--data_dir") + 1]) for run in planned) == [
        (f"{model}-random-matched-fresh", seed, f"dataset-relabel/random-matched-fresh/seed{seed}")
        for model in ("lightgcn", "refine") for seed in (7, 8)]
    # the manifest keeps the placeholder, so another seed later is the same config
    manifest = json.loads((out / run_files.MANIFEST).read_text())
    assert [entry["flags"][-2:] for entry in manifest["configs"]] == [
        ["--data_dir", "dataset-relabel/random-matched-fresh/seed{seed}"]] * 2
    shutil.rmtree(fresh / "seed7")  # the same seed again: the same file
    assert experiments.main(argv[:-7] + ["--seeds", "7", "9"] + argv[-4:]) == 0
    assert (fresh / "seed7" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() == files[7]
    assert (fresh / "seed9" / "ML-100K" / "ML-100K_train_augment.csv").read_bytes() not in files.values()


@pytest.mark.slow
def test_a_real_sweep_trains_each_seed_on_its_own_fresh_draw(tmp_path):
    """experiments.py itself, main.py's runs included (one epoch on a tiny set): each run's set is made
    with its seed before it starts, and the run reads that set."""
    data = tmp_path / "data"
    fake_llm_dataset(data)
    out = tmp_path / "sweep"
    command = [sys.executable, str(ROOT / "experiments.py"), "--dataset", "ML-100K", "--preset", "llm-need",
               "--configs", "lightgcn-random-matched-fresh", "--seeds", "2", "--jobs", "2", "--devices", "cpu",
               "--out", str(out), "--", "--epochs", "1", *TINY]
    result = subprocess.run(command, cwd=tmp_path, env=dict(os.environ, REFINE_DATA_DIR=str(data)),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "2 runs (1 configs x 2 seeds): 0 finished, 0 to resume, 2 to start" in result.stderr
    for seed in (2024, 2025):
        folder = f"dataset-relabel/random-matched-fresh/seed{seed}"
        assert f"relabel ML-100K --data_dir {data} --rule random-matched --scope answered --out_dir {folder} " \
               f"--seed {seed}\n" in result.stderr
        assert json.loads((tmp_path / folder / "ML-100K" / "relabel_report.json").read_text())["seed"] == seed
        run = out / "lightgcn-random-matched-fresh" / f"seed{seed}"
        command_run = json.loads((run / "run.json").read_text())["command"]
        assert command_run[command_run.index("--data_dir") + 1] == folder
        assert (run / "run.test.json").is_file() and f"data_dir: {folder}\n" in (run / "run.out").read_text()
    manifest = json.loads((out / run_files.MANIFEST).read_text())
    assert "dataset-relabel/random-matched-fresh/seed{seed}" in manifest["configs"][0]["flags"]
    summary = json.loads((out / "summary.json").read_text())  # the report reads the templated manifest
    assert [run["seed"] for run in summary["configs"][0]["runs"]] == [2024, 2025]


def test_llm_need_preset_arms_per_dataset():
    relabel = experiments.PRESETS["relabel"]
    ml = experiments.resolve_configs(experiments.parse_args(
        ["--dataset", "ML-100K", "--preset", "llm-need", "--out", "o"]).args)
    arms = ["llm", "original", "all-positive", "all-positive-all", "star-threshold", "star-threshold-all",
            "llm+star-threshold", "random-matched-fresh"]
    assert [name for name, _ in ml] == [f"{model}-{arm}" for arm in arms for model in ("lightgcn", "refine")]
    ml = dict(ml)
    for name in ("lightgcn-llm", "refine-llm", "lightgcn-original", "refine-original", "lightgcn-all-positive",
                 "refine-all-positive"):  # the committed relabel sweep's configs: their runs count here
        assert ml[name] == relabel[name]
    assert ml["lightgcn-original"] == ["--model", "lightgcn", "--dataset_augment", "0"]
    assert ml["refine-all-positive"] == ["--data_dir", "dataset-relabel/all-positive"]
    for arm in ("all-positive-all", "star-threshold", "star-threshold-all", "llm+star-threshold"):
        assert ml[f"lightgcn-{arm}"] == ["--model", "lightgcn", "--data_dir", f"dataset-relabel/{arm}"]
        assert ml[f"refine-{arm}"] == ["--data_dir", f"dataset-relabel/{arm}"]
    assert ml["refine-random-matched-fresh"] == ["--data_dir", "dataset-relabel/random-matched-fresh/seed{seed}"]
    amazon = dict(experiments.resolve_configs(experiments.parse_args(
        ["--dataset", "Amazon_Digital_Music", "--preset", "llm-need", "--out", "o"]).args))
    assert list(amazon) == [f"{model}-{arm}" for arm in ("llm", "original", "all-positive-all", "star-threshold-all",
                                                         "random-matched-fresh") for model in ("lightgcn", "refine")]
    assert all(amazon[name] == ml[name] for name in amazon)
    # every set of the preset is one the sweep makes
    for flags in ml.values():
        if "--data_dir" in flags:
            assert relabel_rules.relabel_set(flags[-1].replace("{seed}", "2024")) is not None


def test_llm_need_plans_every_run_and_makes_its_sets_first(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    planned = no_runs(monkeypatch)
    assert experiments.main(["--dataset", "ML-100K", "--preset", "llm-need", "--seeds", "2024", "2025", "--jobs", "2",
                             "--devices", "cpu", "--out", str(tmp_path / "x"), "--", "--sampler", "sparse"]) == 0
    err = capsys.readouterr().err
    made = ["all-positive", "all-positive-all", "star-threshold", "star-threshold-all", "llm+star-threshold",
            "random-matched-fresh/seed2024", "random-matched-fresh/seed2025"]
    for number, folder in enumerate(made, 1):
        assert f"relabelled set {number}/7: python refine_llm.py relabel ML-100K --data_dir {data} " in err
        assert f"--out_dir dataset-relabel/{folder}" in err.splitlines()[number - 1]
        assert (tmp_path / "dataset-relabel" / folder / "ML-100K" / "ML-100K_train_augment.csv").is_file()
    assert "32 runs (16 configs x 2 seeds): 0 finished, 0 to resume, 32 to start" in err
    configs = dict(experiments.resolve_configs(experiments.parse_args(
        ["--dataset", "ML-100K", "--preset", "llm-need", "--out", "o"]).args))
    assert sorted((run.config, run.seed, tuple(run.flags)) for run in planned) == sorted(
        (name, seed, tuple(["--dataset", "ML-100K", "--r", "100"] + sweep.with_seed(flags, seed) + ["--sampler", "sparse"]))
        for name, flags in configs.items() for seed in (2024, 2025))


def test_llm_need_adds_to_the_committed_relabel_sweep(tmp_path):
    """Its ML-100K configs merge into results4comparison/ML-100K-relabel's manifest (same flags for the
    six it shares), so that the sweep adds seeds there; checked on a copy of the manifest."""
    committed = Path(__file__).resolve().parent.parent / "results4comparison" / "ML-100K-relabel"
    (tmp_path / "out").mkdir()
    shutil.copy(committed / run_files.MANIFEST, tmp_path / "out" / run_files.MANIFEST)
    configs = experiments.resolve_configs(experiments.parse_args(
        ["--dataset", "ML-100K", "--preset", "llm-need", "--out", "o"]).args)
    runs, manifest = sweep.plan_runs(tmp_path / "out", "ML-100K", configs, [2029], ["--sampler", "sparse"],
                                     made_later=lambda flags: True)
    names = [entry["name"] for entry in manifest["configs"]]
    assert len(names) == 14 + 10 and set(names) >= set(dict(configs))
    assert len(runs) == 16


@pytest.mark.parametrize("preset", ["relabel", "llm-need"])
def test_relabel_presets_refuse_one_data_dir_for_all(capsys, preset):
    with pytest.raises(SystemExit) as exc:
        experiments.parse_args(["--dataset", "ML-100K", "--preset", preset, "--out", "x", "--", "--data_dir", "d"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: --data_dir after -- with --preset {preset}: each config has")


def test_ctrl_c_says_what_was_written(tmp_path, monkeypatch, capsys):
    write_hand_dataset(tmp_path / "data")
    argv = ["relabel", "ML-100K", "--data_dir", str(tmp_path / "data"), "--rule", "all-positive",
            "--out_dir", str(tmp_path / "out")]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(R.RULES, "all-positive", interrupted)  # while the rule chooses
    assert R.main(argv) == 2
    assert capsys.readouterr().err == "error: interrupted; nothing was written; rerun the same command\n"
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    monkeypatch.setattr(R, "write_augment", interrupted)  # the train file, written last
    assert R.main(argv) == 2
    assert capsys.readouterr().err == (f"error: interrupted; each file in {tmp_path / 'out' / 'ML-100K'} is whole or "
                                       f"absent (written atomically); rerun the same command\n")
    # no train file: the set reads as missing, and experiments.py makes it again
    assert sorted(p.name for p in (tmp_path / "out" / "ML-100K").iterdir()) == [
        "ML-100K_test.csv", "ML-100K_train_original.csv", "ML-100K_validation.csv", "relabel_report.json",
        "relabel_users.csv"]



# --- remedies that name the right file and command --------------------------------------------------

def test_answers_for_a_dataset_without_titles_say_to_give_the_augment_file(tmp_path, capsys):
    folder = write_hand_dataset(tmp_path / "data")
    amazon = folder.parent / "Amazon_Digital_Music"
    amazon.mkdir()
    for path in folder.glob("ML-100K_*.csv"):
        shutil.copy(path, amazon / path.name.replace("ML-100K", "Amazon_Digital_Music"))
    (tmp_path / "answers.txt").write_text("user 1\n['<Heat>']\n")
    assert exit_code(["relabel", "Amazon_Digital_Music", "--data_dir", str(tmp_path / "data"), "--rule",
                      "all-positive", "--llm", str(tmp_path / "answers.txt"), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset" not in err
    assert "is read against item titles" in err and "give --llm the augment file" in err
    assert not (tmp_path / "out").exists()


def test_a_header_only_train_original_is_named_not_the_augment_file(tmp_path, capsys):
    folder = write_hand_dataset(tmp_path / "data")
    (folder / "ML-100K_train_original.csv").write_text(",".join(COLUMNS) + "\n")
    assert exit_code(["relabel", "ML-100K", "--data_dir", str(tmp_path / "data"), "--rule", "all-positive",
                      "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {folder / 'ML-100K_train_original.csv'} has a header and no rows: give the dataset's " \
                  f"train_original split (python dataloader.py download ML-100K --refined)\n"


def test_a_relabel_set_missing_its_validation_file_is_made_again_not_downloaded(tmp_path, monkeypatch):
    """The sweep treats a set without one of the files a run reads as missing, and makes it again."""
    import experiments

    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    relabelled(data, tmp_path / "dataset-relabel" / "user-mean", "user-mean")
    validation = tmp_path / "dataset-relabel" / "user-mean" / "ML-100K" / "ML-100K_validation.csv"
    validation.unlink()
    sets = experiments.RelabelledSets()
    flags = ["--dataset", "ML-100K", "--data_dir", "dataset-relabel/user-mean"]
    need = sets.pending(flags)
    assert need == (Path("dataset-relabel/user-mean"), "ML-100K")
    sets.make({need: None}, lambda line: None)
    assert validation.read_bytes() == (data / "ML-100K" / "ML-100K_validation.csv").read_bytes()
    assert sets.pending(flags) is None
