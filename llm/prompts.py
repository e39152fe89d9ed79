"""The published prompts (docs/method.md §2): per-user lists, shuffles, chunks, and the length and cut rules.

    python -c "from llm.prompts import render_list; print(render_list(['<A (genre: X)>']))"
"""
import hashlib
import re
import sys
from dataclasses import dataclass

from llm.data import ITEM_COL, RATING_COL, USER_COL, get_preset, user_id

SEPARATOR = "-" * 45
SEED = 2024
INSTRUCTIONS = (
    "Based on the User's Positively Rated Movie List, analyze the user's preferences and patterns.\n"
    "You will be provided with Candidate List, which includes movie titles and genres that the user "
    "has rated both positively and negatively.\n"
    "Your task is to strictly select movies and provide only the movie titles from Candidate List "
    "that the user is most likely to have rated positively."
)


# ----------------------------------------------------------------------------------------------
# Prompts (pure)


def render_list(entries):
    """Render like numpy prints a 1-D object array with unlimited line width (the notebooks' str.format)."""
    import numpy as np

    with np.printoptions(linewidth=sys.maxsize):
        return str(np.array(list(entries), dtype=object))


def title_only(entry):
    """`<Title (genre: X)>` -> `<Title>`, as the notebooks' few-shot answer rewrite."""
    return re.sub(r"\s*\(genre:.*$", ">", entry)


def prompt1_text(label, pos5, example, few_shot, chunk):
    """Prompt 1 of docs/method.md §2 with already rendered lists."""
    block = f"{INSTRUCTIONS}\n\nCandidate List:\n"
    return (f"\nThis dataset is from the {label} dataset.\n\n"
            f"User's Positively Rated Movie List:\n"
            f"The following list includes movie titles and genres that the user has rated positively:\n"
            f"{pos5}\n\n{SEPARATOR}\n\n"
            f"{block}{example}\n\nOutput (Answer):\n{few_shot}\n\n{SEPARATOR}\n\n"
            f"{block}{chunk}\n\nOutput (Answer):\n")


def prompt2_text(label, header, pos5, example, few_shot, chunk):
    """Prompt 2 (fallback): dataset line and instructions before each block, positives repeated."""
    intro = (f"This dataset is from the {label} dataset.\n{INSTRUCTIONS}\n\n"
             f"User's Positively Rated Movie List:\n{pos5}\n\n{header}\n")
    return (f"\n{intro}{example}\n\nOutput (Answer):\n{few_shot}\n\n{SEPARATOR}\n\n"
            f"{intro}{chunk}\n\nOutput (Answer):\n")


@dataclass(frozen=True)
class PromptJob:
    user: int | str   # llm.data.user_id
    chunk: int
    prompt1: str
    prompt2: str


def user_prompts(user, rows, preset, rng):
    """Prompts of one user. `rows`: (rating, title, genre) in popularity order; `rng` a RandomState.

    Mirrors the notebooks: the example list is shuffled before the real list, both with the same
    global RNG; the few-shot answer keeps example entries whose text equals a 4-star entry.
    """
    import numpy as np

    entries = {r: [] for r in (5, 4, 3, 2, 1)}
    ratings = []
    for rating, title, genre in rows:
        ratings.append(rating)
        if rating in entries:
            entries[rating].append(f"<{title} (genre: {genre})>")
    mean_rating = np.mean(np.asarray(ratings, dtype=float))
    if mean_rating >= 3:
        example, real = entries[4] + entries[2] + entries[1], list(entries[3])
    else:
        example, real = entries[4] + entries[1], entries[3] + entries[2]
    example, real = np.array(example, dtype=object), np.array(real, dtype=object)
    rng.shuffle(example)  # draws depend only on the length, so dtype is irrelevant
    rng.shuffle(real)
    pos4 = set(entries[4])
    few_shot = [title_only(e) for e in example if e in pos4]
    size = preset.chunk_size
    # The notebooks ask an empty list `[]` when a user has no real candidates (users 34, 225, 583,
    # 688 of ML-100K were relabelled this way).
    chunks = [real[i:i + size] for i in range(0, len(real), size)] if len(real) > size else [real]
    pos5_s, example_s, few_s = render_list(entries[5]), render_list(example), render_list(few_shot)
    jobs = []
    for index, chunk in enumerate(chunks):
        chunk_s = render_list(chunk)
        jobs.append(PromptJob(
            user_id(user), index,
            prompt1_text(preset.label, pos5_s, example_s, few_s, chunk_s),
            prompt2_text(preset.label, preset.prompt2_header, pos5_s, example_s, few_s, chunk_s)))
    return jobs


def build_prompts(joined, name, skip_users=()):
    """Every prompt of the dataset, users ascending; skipped users draw nothing from the RNG."""
    import numpy as np
    import pandas as pd

    preset = get_preset(name)
    users = joined[USER_COL].to_numpy()
    items = joined[ITEM_COL].to_numpy()
    counts = pd.Series(items).map(pd.Series(items).value_counts()).to_numpy()
    # Stable sort by (user asc, popularity desc): ties keep the file order, like pandas' lexsort.
    order = np.lexsort((-counts, users))
    rows = joined.iloc[order]
    rng = np.random.RandomState(SEED)
    skip = {user_id(u) for u in skip_users}
    jobs = []
    for user, group in rows.groupby(USER_COL, sort=True):
        if user_id(user) in skip:
            continue
        if preset.reseed_per_user:
            rng = np.random.RandomState(SEED)
        triples = zip(group[RATING_COL].to_numpy(), group["title"].to_numpy(), group["genre"].to_numpy())
        jobs.extend(user_prompts(user, triples, preset, rng))
    return jobs


def prompt_hash(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Length rule, cut rule (pure)


def budget_text(prompt):
    """Text from the second "Candidate List:" on, whose token count is the generation budget.

    Upstream searched the exact string; ML-100K's prompt 2 spells it "Candidate list:", so upstream
    found no second match there and crashed (UnboundLocalError). We match case-insensitively.
    """
    starts = [m.start() for m in re.finditer("candidate list:", prompt, flags=re.IGNORECASE)]
    if len(starts) < 2:
        raise ValueError("prompt has no second 'Candidate List:'")
    return prompt[starts[1]:]


def cut_response(full_text, prompt, prompt_no):
    """Published cut: keep lines up to the 3rd (prompt 1) / 2nd (prompt 2) separator line, strip.

    Returns (response, answer): `response` is what the `]` check looks at, `answer` the part
    written to the answers file (`response[len(prompt)-1:]`, the prompt's leading newline being
    stripped).
    """
    max_separators = 2 if prompt_no == 1 else 1
    kept, seen = [], 0
    for line in full_text.split("\n"):
        if SEPARATOR in line:
            seen += 1
            if seen > max_separators:
                break
        kept.append(line)
    response = "\n".join(kept).strip()
    return response, response[len(prompt) - 1:]
