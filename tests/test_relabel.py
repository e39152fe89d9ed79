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

import dataloader
import experiments
import refine_llm as R
import sweep
from llm import relabel_rules
from conftest import ROOT
from llm.data import ITEM_COL, RATING_COL, USER_COL
from refine_fixtures import make_dataset
from test_refine_apply import write_published_answers

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
    data = dataloader.load_splits(tmp_path / "out", "ML-100K", augment=True)
    assert data.train_pos.size(1) == 8 + 1  # the eight >= 4 rows and user 2's item 3
    assert data.train_neg.size(1) == 1 + 4  # user 2's 1-star row and the four 0.5 rows


def fake_llm_dataset(root, seed=0):
    """A random train_original (refine_fixtures) with splits and an LLM augment file: users 1-5
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


def test_the_committed_relabel_sweep_is_the_whole_preset_with_5_seeds_each():
    """results4comparison/ML-100K-relabel holds every config of --preset relabel with its flags, 5 seeds
    each, tested against the LLM's labels of its own model (its summary is checked against its runs in
    test_experiments)."""
    folder = Path(__file__).resolve().parent.parent / "results4comparison" / "ML-100K-relabel"
    summary = json.loads((folder / "summary.json").read_text())
    manifest = json.loads((folder / sweep.MANIFEST).read_text())
    preset = experiments.PRESETS["relabel"]
    assert sorted(entry["name"] for entry in summary["configs"]) == sorted(preset)
    for entry in manifest["configs"]:
        assert entry["flags"] == ["--dataset", "ML-100K", "--r", "100"] + preset[entry["name"]] + ["--sampler", "sparse"]
    assert summary["baselines"] == ["lightgcn-llm", "refine-llm"]
    for entry in summary["configs"]:
        assert [run["seed"] for run in entry["runs"]] == list(range(2024, 2029)), entry["name"]
        if entry["name"] not in summary["baselines"]:
            assert entry["vs_baseline"]["baseline"] == entry["name"].split("-")[0] + "-llm"


def test_relabel_preset_names_the_command_for_a_missing_set(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFINE_DATA_DIR", str(data))
    for rule in ("random-matched", "user-mean", "all-positive", "all-negative"):
        relabelled(data, tmp_path / "dataset-relabel" / rule, rule)
    capsys.readouterr()
    argv = ["--dataset", "ML-100K", "--preset", "relabel", "--out", str(tmp_path / "sweep")]
    assert experiments.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: config lightgcn-collaborative: dataset-relabel/collaborative/ML-100K/ML-100K_train_augment.csv "
        "not found; make it with `python refine_llm.py relabel ML-100K --rule collaborative --out_dir "
        "dataset-relabel/collaborative` (docs/relabel.md)\n")
    assert not (tmp_path / "sweep").exists()
    # every set present: the sweep's own check of each config's split files passes
    shutil.copytree(tmp_path / "dataset-relabel" / "random-matched", tmp_path / "dataset-relabel" / "collaborative")
    configs = experiments.resolve_configs(experiments.parse_args(argv).args)
    experiments.check_relabelled_sets("ML-100K", configs)
    sweep.check_split_files([(name, ["--dataset", "ML-100K"] + flags) for name, flags in configs])


def test_relabel_preset_refuses_one_data_dir_for_all(capsys):
    with pytest.raises(SystemExit) as exc:
        experiments.parse_args(["--dataset", "ML-100K", "--preset", "relabel", "--out", "x", "--", "--data_dir", "d"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --data_dir after -- with --preset relabel: each config has")


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
    monkeypatch.setattr(R, "write_augment", interrupted)  # after the copies, before the train file
    assert R.main(argv) == 2
    assert capsys.readouterr().err == (f"error: interrupted; each file in {tmp_path / 'out' / 'ML-100K'} is whole or "
                                       f"absent (written atomically); rerun the same command\n")
    assert sorted(p.name for p in (tmp_path / "out" / "ML-100K").iterdir()) == [
        "ML-100K_test.csv", "ML-100K_train_original.csv", "ML-100K_validation.csv"]


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
    data = tmp_path / "data"
    write_hand_dataset(data)
    monkeypatch.chdir(tmp_path)
    for rule in ("random-matched", "user-mean", "all-positive", "all-negative", "collaborative"):
        relabelled(data, tmp_path / "dataset-relabel" / rule, "all-positive")
    (tmp_path / "dataset-relabel" / "user-mean" / "ML-100K" / "ML-100K_validation.csv").unlink()
    done = subprocess.run([sys.executable, str(ROOT / "experiments.py"), "--dataset", "ML-100K", "--preset",
                           "relabel", "--out", "sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "REFINE_DATA_DIR": str(data)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: config lightgcn-user-mean: dataset-relabel/user-mean/ML-100K/"
                                  "ML-100K_validation.csv not found; make it with `python refine_llm.py relabel "
                                  "ML-100K --rule user-mean --out_dir dataset-relabel/user-mean`")
    assert "download" not in done.stderr and not (tmp_path / "sweep").exists()
