"""Prompt fidelity (docs/method.md §2): hand-made users against prompt texts written out in full.

    .venv/bin/python -m pytest -q tests/test_refine_prompts.py
"""
import json
import re
import shutil

import numpy as np
import pandas as pd

from llm.data import ITEM_COL, RATING_COL, USER_COL, read_skip_users
from llm.prompts import budget_text, build_prompts, cut_response, prompt1_text, render_list
import refine_llm as R
from helpers import ROOT

COLS = [USER_COL, ITEM_COL, RATING_COL, "title", "genre"]
INSTR = (
    "Based on the User's Positively Rated Movie List, analyze the user's preferences and patterns.\n"
    "You will be provided with Candidate List, which includes movie titles and genres that the user has rated both positively and negatively.\n"
    "Your task is to strictly select movies and provide only the movie titles from Candidate List that the user is most likely to have rated positively.\n"
)


def frame(rows):
    return pd.DataFrame(rows, columns=COLS)


# User 1, mean 24/7 >= 3. Item 2 and item 4 are also rated by user 2, so they come first.
# Example candidates before the shuffle (4-star, 2-star, 1-star, popularity order):
# Delta, Gamma, Zeta, Eta; numpy RandomState(2024).shuffle gives Gamma, Eta, Zeta, Delta.
HIGH_MEAN = frame([
    (1, 1, 5, "Alpha", "Drama"),
    (1, 2, 5, "Schindler's List", "Drama War"),
    (1, 3, 4, "Gamma", "Comedy"),
    (1, 4, 4, "Delta", "Action Thriller"),
    (1, 5, 3, "Epsilon", "Horror"),
    (1, 6, 2, "Zeta", "Romance"),
    (1, 7, 1, "Eta", "Sci-Fi"),
    (2, 2, 5, "Schindler's List", "Drama War"),
    (2, 4, 4, "Delta", "Action Thriller"),
    (2, 8, 3, "Theta", "Western"),
])

HIGH_MEAN_PROMPT1 = """
This dataset is from the MovieLens-100K dataset.

User's Positively Rated Movie List:
The following list includes movie titles and genres that the user has rated positively:
["<Schindler's List (genre: Drama War)>" '<Alpha (genre: Drama)>']

---------------------------------------------

""" + INSTR + """
Candidate List:
['<Gamma (genre: Comedy)>' '<Eta (genre: Sci-Fi)>' '<Zeta (genre: Romance)>' '<Delta (genre: Action Thriller)>']

Output (Answer):
['<Gamma>' '<Delta>']

---------------------------------------------

""" + INSTR + """
Candidate List:
['<Epsilon (genre: Horror)>']

Output (Answer):
"""

HIGH_MEAN_PROMPT2 = """
This dataset is from the MovieLens-100K dataset.
""" + INSTR + """
User's Positively Rated Movie List:
["<Schindler's List (genre: Drama War)>" '<Alpha (genre: Drama)>']

Candidate list:
['<Gamma (genre: Comedy)>' '<Eta (genre: Sci-Fi)>' '<Zeta (genre: Romance)>' '<Delta (genre: Action Thriller)>']

Output (Answer):
['<Gamma>' '<Delta>']

---------------------------------------------

This dataset is from the MovieLens-100K dataset.
""" + INSTR + """
User's Positively Rated Movie List:
["<Schindler's List (genre: Drama War)>" '<Alpha (genre: Drama)>']

Candidate list:
['<Epsilon (genre: Horror)>']

Output (Answer):
"""

# User 7, mean 18/7 < 3: examples = 4-star + 1-star (Gamma, Eta, Kappa), real = 3-star + 2-star
# (Epsilon, Zeta, Iota). RandomState(2024) shuffles them to Eta, Kappa, Gamma and Zeta, Iota, Epsilon.
LOW_MEAN = frame([
    (7, 1, 5, "Alpha", "Drama"),
    (7, 3, 4, "Gamma", "Comedy"),
    (7, 5, 3, "Epsilon", "Horror"),
    (7, 6, 2, "Zeta", "Romance"),
    (7, 9, 2, "Iota", "Animation Children's"),
    (7, 7, 1, "Eta", "Sci-Fi"),
    (7, 10, 1, "Kappa", "Documentary"),
])

LOW_MEAN_PROMPT1 = """
This dataset is from the MovieLens-1M dataset.

User's Positively Rated Movie List:
The following list includes movie titles and genres that the user has rated positively:
['<Alpha (genre: Drama)>']

---------------------------------------------

""" + INSTR + """
Candidate List:
['<Eta (genre: Sci-Fi)>' '<Kappa (genre: Documentary)>' '<Gamma (genre: Comedy)>']

Output (Answer):
['<Gamma>']

---------------------------------------------

""" + INSTR + """
Candidate List:
['<Zeta (genre: Romance)>' "<Iota (genre: Animation Children's)>" '<Epsilon (genre: Horror)>']

Output (Answer):
"""

# ML-1M's prompt 2 keeps the capital L of "Candidate List:" (only ML-100K's notebook lower-cases it).
LOW_MEAN_PROMPT2 = """
This dataset is from the MovieLens-1M dataset.
""" + INSTR + """
User's Positively Rated Movie List:
['<Alpha (genre: Drama)>']

Candidate List:
['<Eta (genre: Sci-Fi)>' '<Kappa (genre: Documentary)>' '<Gamma (genre: Comedy)>']

Output (Answer):
['<Gamma>']

---------------------------------------------

This dataset is from the MovieLens-1M dataset.
""" + INSTR + """
User's Positively Rated Movie List:
['<Alpha (genre: Drama)>']

Candidate List:
['<Zeta (genre: Romance)>' "<Iota (genre: Animation Children's)>" '<Epsilon (genre: Horror)>']

Output (Answer):
"""


def test_high_mean_user_prompts_match_published_text():
    jobs = [j for j in build_prompts(HIGH_MEAN, "ML-100K") if j.user == 1]
    assert len(jobs) == 1 and jobs[0].chunk == 0
    assert jobs[0].prompt1 == HIGH_MEAN_PROMPT1
    assert jobs[0].prompt2 == HIGH_MEAN_PROMPT2


def test_low_mean_user_prompts_match_published_text():
    jobs = build_prompts(LOW_MEAN, "ML-1M")
    assert len(jobs) == 1
    assert jobs[0].prompt1 == LOW_MEAN_PROMPT1
    assert jobs[0].prompt2 == LOW_MEAN_PROMPT2


def chunk_titles(prompt):
    last_list = prompt.rstrip("\n").split("\n")[-3]
    return re.findall(r"<([^ ]+) \(genre", last_list)


def test_chunks_of_five_and_ten_cover_the_shuffled_candidates():
    # One user with 12 three-star rows and mean 3: all 12 are real candidates.
    rows = [(1, i, 3, f"T{i}", "Drama") for i in range(12)]
    data = frame(rows)
    ml = build_prompts(data, "ML-100K")
    assert [j.chunk for j in ml] == [0, 1, 2]
    titles = [t for j in ml for t in chunk_titles(j.prompt1)]
    assert [len(chunk_titles(j.prompt1)) for j in ml] == [5, 5, 2]
    # Example list is empty (no draws), so the real list gets the first shuffle of RandomState(2024).
    expected = np.array([f"T{i}" for i in range(12)], dtype=object)
    np.random.RandomState(2024).shuffle(expected)
    assert titles == list(expected)
    netflix = build_prompts(data, "Netflix-1M")
    assert [len(chunk_titles(j.prompt1)) for j in netflix] == [10, 2]
    assert netflix[0].prompt1.startswith("\nThis dataset is from the Netflix dataset.\n")
    # Exactly chunk-size candidates stay one chunk.
    assert len(build_prompts(frame(rows[:5]), "ML-100K")) == 1


def test_user_without_candidates_is_asked_with_an_empty_list():
    # Published behaviour (ML-100K users 34, 225, 583, 688): an empty chunk is still asked.
    data = frame([(1, 1, 5, "A", "Drama"), (1, 2, 4, "B", "Drama"), (1, 3, 2, "C", "Drama")])
    jobs = build_prompts(data, "ML-100K")
    assert len(jobs) == 1
    assert jobs[0].prompt1.endswith("Candidate List:\n[]\n\nOutput (Answer):\n")


def two_user_data():
    rows = []
    for user in (1, 2):
        rows += [(user, 1, 5, "A", "Drama"), (user, 2, 4, "B", "Drama"), (user, 3, 4, "C", "Drama"),
                 (user, 4, 3, "D", "Drama"), (user, 5, 3, "E", "Drama"), (user, 6, 3, "F", "Drama")]
    return frame(rows)


def test_global_seed_runs_on_across_users_and_skipped_users_draw_nothing():
    data = two_user_data()
    both = build_prompts(data, "ML-100K")
    # User 2 continues user 1's RNG stream, so its shuffles differ from a fresh seed ...
    alone = build_prompts(data[data[USER_COL] == 2], "ML-100K")
    assert both[1].prompt1 != alone[0].prompt1
    # ... unless user 1 is skipped: then user 2 gets the fresh stream.
    skipped = build_prompts(data, "ML-100K", skip_users={1})
    assert [j.user for j in skipped] == [2]
    assert skipped[0].prompt1 == alone[0].prompt1


def test_netflix_reseeds_for_every_user():
    data = two_user_data()
    jobs = build_prompts(data, "Netflix-1M")
    assert jobs[0].prompt1 == jobs[1].prompt1  # identical histories, identical shuffles


def test_render_list_matches_numpy_printing():
    entries = ["<A 'quoted' (genre: X)>", '<B "double" (genre: Y)>', "<C\\D (genre: Z)>"]
    with np.printoptions(linewidth=np.inf):
        assert render_list(entries) == str(np.array(entries, dtype=object))
    assert render_list([]) == "[]"


def test_cut_rule_and_bracket_check():
    prompt = HIGH_MEAN_PROMPT1
    generated = "['<Epsilon>']\n\n---------------------------------------------\n\nBased on more text"
    response, answer = cut_response(prompt + generated, prompt, 1)
    assert answer == "['<Epsilon>']" and response.endswith("]")
    # A line that merely contains the separator is dropped whole, with all that follows.
    response, answer = cut_response(prompt + "['<A>']\nnoise ---------------------------------------------x", prompt, 1)
    assert answer == "['<A>']"
    # Nothing generated: the response ends with the prompt's colon, so no `]`.
    response, answer = cut_response(prompt + "\n\n", prompt, 1)
    assert answer == "" and response.endswith("Output (Answer):")
    # Prompt 2 holds one separator, so its answer stops at the first new one.
    response, answer = cut_response(HIGH_MEAN_PROMPT2 + "[]\n---------------------------------------------\n[x]",
                                      HIGH_MEAN_PROMPT2, 2)
    assert answer == "[]"


def test_budget_text_finds_second_candidate_list_in_both_prompts():
    assert budget_text(HIGH_MEAN_PROMPT1) == "Candidate List:\n['<Epsilon (genre: Horror)>']\n\nOutput (Answer):\n"
    # ML-100K prompt 2 spells it "Candidate list:"; upstream's exact search found nothing there.
    assert budget_text(HIGH_MEAN_PROMPT2) == "Candidate list:\n['<Epsilon (genre: Horror)>']\n\nOutput (Answer):\n"


def notebook_style_prompt_lists(train, item, skip, max_prompts=None):
    """Independent re-derivation of the ML-100K notebook's lists, written with pandas/np.random."""
    train = train.merge(item, on="item_id:token", how="left")
    counts = train.groupby("item_id:token")["user_id:token"].count().rename("interaction_count")
    train = train.join(counts, on="item_id:token")
    train["title_genre"] = "<" + train["movie_title:token_seq"] + " (genre: " + train["class:token_seq"] + ")>"
    train = train.sort_values(by=["user_id:token", "interaction_count"], ascending=[True, False])
    np.random.seed(2024)
    out = []
    for user in np.setdiff1d(np.unique(train["user_id:token"]), np.array(sorted(skip))):
        d = train[train["user_id:token"] == user]
        by = {r: d[d["rating:float"] == r]["title_genre"].to_numpy(dtype=object) for r in (5, 4, 3, 2, 1)}
        if np.mean(d["rating:float"].to_numpy()) >= 3:
            example, real = np.array(list(by[4]) + list(by[2]) + list(by[1]), dtype=object), by[3].copy()
        else:
            example, real = (np.array(list(by[4]) + list(by[1]), dtype=object),
                             np.array(list(by[3]) + list(by[2]), dtype=object))
        np.random.shuffle(example)
        np.random.shuffle(real)
        few = example[np.isin(example, by[4])]
        few = np.array([re.sub(r"\s*\(genre:.*$", ">", x) for x in few], dtype=object)
        chunks = [real[i:i + 5] for i in range(0, len(real), 5)] if len(real) > 5 else [real]
        with np.printoptions(linewidth=np.inf):
            out += [(int(user), i, str(by[5]), str(example), str(few), str(c)) for i, c in enumerate(chunks)]
        if max_prompts is not None and len(out) >= max_prompts:
            return out[:max_prompts]
    return out


SHIPPED_SKIP_LIST = ROOT / "llm" / "skip_users" / "ML-100K.txt"


def test_ml100k_prompts_equal_notebook_style_derivation(ml100k_with_raw):
    folder = ml100k_with_raw / "ML-100K"
    train = pd.read_csv(folder / "ML-100K_train_original.csv")
    item = pd.read_csv(folder / "ml-100k.item", sep="\t")
    skip = read_skip_users(SHIPPED_SKIP_LIST)  # the published notebook's list, shipped with llm/
    expected = notebook_style_prompt_lists(train, item, skip)
    joined = train.merge(item, on=ITEM_COL, how="left").rename(
        columns={"movie_title:token_seq": "title", "class:token_seq": "genre"})
    jobs = build_prompts(joined, "ML-100K", skip)
    assert len(jobs) == len(expected) == 3789
    for job, (user, chunk, pos5, example, few, real) in zip(jobs, expected):
        assert (job.user, job.chunk) == (user, chunk)
        assert job.prompt1 == prompt1_text("MovieLens-100K", pos5, example, few, real)


# The first ids of the `skip` array in the published ML-100K notebook (2_augmenting_LLM_llama.ipynb),
# and its length.
NOTEBOOK_SKIP_HEAD = [1, 6, 7, 10, 13, 18, 59, 85, 90, 92]
NOTEBOOK_SKIP_COUNT = 116


def test_shipped_ml100k_skip_list_gives_the_published_prompts(ml100k_with_raw, tmp_path):
    """`prompts` with no skip list of the user's reads the shipped one: the first users' prompts are
    the notebook's; asking everyone instead changes them from the first user on (user 1 is skipped)."""
    source = ml100k_with_raw / "ML-100K"
    shipped = read_skip_users(SHIPPED_SKIP_LIST)
    assert sorted(shipped)[:10] == NOTEBOOK_SKIP_HEAD and len(shipped) == NOTEBOOK_SKIP_COUNT
    folder = tmp_path / "ML-100K"
    folder.mkdir()
    for name in ("ML-100K_train_original.csv", "ml-100k.item"):
        shutil.copy(source / name, folder / name)
    train = pd.read_csv(folder / "ML-100K_train_original.csv")
    item = pd.read_csv(folder / "ml-100k.item", sep="\t")
    expected = notebook_style_prompt_lists(train, item, set(shipped), max_prompts=200)

    def prompts(*extra):
        assert R.main(["prompts", "ML-100K", "--data_dir", str(tmp_path), "--max_prompts", "200", *extra]) == 0
        return [json.loads(line) for line in (folder / "llm" / "prompts.jsonl").read_text().splitlines()]

    records = prompts()
    assert len(records) == len(expected) == 200
    for rec, (user, chunk, pos5, example, few, real) in zip(records, expected):
        assert (rec["user"], rec["chunk"]) == (user, chunk)
        assert rec["prompt1"] == prompt1_text("MovieLens-100K", pos5, example, few, real)
    assert prompts("--skip_users", "none")[0]["user"] == 1 != records[0]["user"]
