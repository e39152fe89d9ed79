"""The split CSVs of a dataset read, checked and encoded into index tensors (load_splits -> RecData).

    python -c "import splits; print(splits.load_splits('dataset', 'ML-100K').num_users)"

Reads `<data_dir>/<NAME>/<NAME>_{train_augment|train_original,validation,test}.csv` (docs/method.md §3):
ids are encoded with a label encoder (sorted unique raw ids -> 0..n-1) fitted on the train
POSITIVES (rating >= 4); confirmed negatives (rating <= 1), neutrals (2 or 3), validation and
test positives are mapped with it. Users are nodes 0..U-1 and items U..U+I-1 in the graph.
The rules for bad rows (ratings, classes, repeated pairs, empty splits) are in docs/bad-input.md.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from catalog import ITEM, RATING, SPLIT_IN_THE_WAY, USER, missing_split_message, run_splits, split_path
from utils import InputError, regular_file

ROLES = ("train", "validation", "test")  # the three files load_splits reads, by role


@dataclass
class RecData:
    """Encoded splits; every (2, E) tensor holds (user index, item index) pairs in file order."""

    num_users: int
    num_items: int
    train_pos: torch.Tensor      # rating >= 4
    graph_edges: torch.Tensor    # the graph's edges: train_pos, or (ReFINe++) positives and negatives
    graph_ratings: torch.Tensor  # (E,) rating of each graph edge
    train_neg: torch.Tensor      # rating <= 1: confirmed negatives
    train_neutral: torch.Tensor  # rating 2 or 3
    valid: torch.Tensor          # validation positives
    test: torch.Tensor           # test positives
    user_ids: np.ndarray         # raw id of each user index
    item_ids: np.ndarray         # raw id of each item index

    def graph_edge_index(self) -> torch.Tensor:
        """(2, 2E) homogeneous edge_index of graph_edges, both directions, items offset by U."""
        users, items = self.graph_edges[0], self.graph_edges[1] + self.num_users
        return torch.cat([torch.stack([users, items]), torch.stack([items, users])], dim=1)

    def train_interactions(self) -> torch.Tensor:
        """(2, E) every train interaction of every user: the pairs masked out of rankings."""
        return torch.cat([self.train_pos, self.train_neg, self.train_neutral], dim=1)

    def to(self, device) -> "RecData":
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


# The rating rules (docs/bad-input.md). Valid: a finite number in RATING_RANGE, which covers the
# 5-star scale and the 0.5 / 4.5 relabels of the LLM step. Classes in train: positive >= 4,
# confirmed negative <= 1, neutral exactly 2 or 3 (as published); any other valid rating (1.5,
# 2.5, 3.5) is in no class: such rows are counted on stderr and otherwise ignored, as published.
# Validation and test: rows >= 4 are the ground truth, others are counted and ignored.
RATING_RANGE = (0.0, 5.0)
POSITIVE_MIN, NEGATIVE_MAX, NEUTRAL_RATINGS = 4, 1, (2, 3)


def first_line(mask) -> int:
    """File line of the first True row of a boolean Series over a frame read with a header."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2


def read_split(path: Path) -> pd.DataFrame:
    """One split CSV with numeric user, item and rating columns, or an InputError naming the file
    (and the line); ratings must lie in RATING_RANGE."""
    path = regular_file(path, f"missing {path}", SPLIT_IN_THE_WAY)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except OSError as exc:  # e.g. no permission; the library's message need not name the file
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc}); check its permissions") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid CSV file ({str(exc).splitlines()[0]})") from None
    missing = [column for column in (USER, ITEM, RATING) if column not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} "
                         f"(found: {', '.join(map(str, frame.columns))})")
    if frame.empty:  # header only: no rows to type
        return frame.astype({USER: "int64", ITEM: "int64", RATING: "float64"})
    for column in (USER, ITEM, RATING):
        if frame[column].isna().any():
            raise InputError(f"{path}: empty value in column {column} at line {first_line(frame[column].isna())}")
    if not pd.api.types.is_numeric_dtype(frame[RATING]):
        not_number = pd.to_numeric(frame[RATING], errors="coerce").isna()
        line = first_line(not_number)
        raise InputError(f"{path} line {line}: {RATING} value {frame[RATING].iloc[line - 2]!r} is not a number")
    low, high = RATING_RANGE
    ratings = frame[RATING].to_numpy(dtype=float)
    invalid = ~np.isfinite(ratings) | (ratings < low) | (ratings > high)
    if invalid.any():
        line = first_line(invalid)
        raise InputError(f"{path} line {line}: rating {ratings[line - 2]:g} is not a valid rating (a number from "
                         f"{low:g} to {high:g}); {int(invalid.sum())} such row(s) in this file")
    return frame


def check_duplicate_pairs(frame: pd.DataFrame, path: Path, rule: str) -> pd.DataFrame:
    """Rows that repeat a (user, item) pair: an InputError with their lines (rule "error"), or
    the pair's first / last row kept in file order (rule "first" / "last")."""
    repeated = frame.duplicated(subset=[USER, ITEM], keep=False)
    if not repeated.any():
        return frame
    if rule == "error":
        pairs = frame[repeated].groupby([USER, ITEM], sort=False)
        (user, item), rows = next(iter(pairs))
        ratings = rows[RATING].to_numpy()
        kind = ("a positive and a confirmed negative rating"
                if (ratings >= POSITIVE_MIN).any() and (ratings <= NEGATIVE_MAX).any() else "repeated rows")
        lines = ", ".join(str(index + 2) for index in rows.index)
        raise InputError(f"{path}: {pairs.ngroups} (user, item) pair(s) on more than one row, e.g. user {user} "
                         f"item {item} on lines {lines} ({kind}: {', '.join(f'{r:g}' for r in ratings)}); "
                         f"fix the file, or pass --duplicate_pairs first|last to keep one row of each pair")
    return frame[~frame.duplicated(subset=[USER, ITEM], keep=rule)]


def report_unclassed(frame: pd.DataFrame, classified, path: Path, what: str) -> None:
    """One stderr line counting the rows of no class (they are ignored, but not silently)."""
    unclassed = ~np.asarray(classified)
    if unclassed.any():
        line = first_line(unclassed)
        print(f"note: {path}: {int(unclassed.sum())} row(s) {what}, ignored (e.g. line {line}, rating "
              f"{frame[RATING].iloc[line - 2]:g})", file=sys.stderr)


def drop_unrankable(frame: pd.DataFrame, user_ids, item_ids, path: Path) -> pd.DataFrame:
    """Validation / test rows whose user or item has no embedding (never in the encoded train rows)
    cannot be ranked: dropped with one counted note (docs/data.md), as rows of no class are."""
    known_user, known_item = np.isin(frame[USER].to_numpy(), user_ids), np.isin(frame[ITEM].to_numpy(), item_ids)
    known = known_user & known_item
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        kind, column = ("item", ITEM) if not known_item[row] else ("user", USER)
        print(f"note: {path}: {int((~known).sum())} row(s) whose item or user has no train row to embed, dropped "
              f"(e.g. line {frame.index[row] + 2}, {kind} {frame[column].iloc[row]})", file=sys.stderr)
    return frame[known]


def encode(frame: pd.DataFrame, user_ids, item_ids, path: Path) -> torch.Tensor:
    """(2, len(frame)) indices of the frame's users and items, or an InputError for an unseen id."""
    pairs = []
    for column, classes, kind in ((USER, user_ids, "user"), (ITEM, item_ids, "item")):
        raw = frame[column].to_numpy()
        index = np.searchsorted(classes, raw).clip(max=len(classes) - 1)
        unseen = classes[index] != raw
        if unseen.any():
            row = int(np.flatnonzero(unseen)[0])
            raise InputError(f"{path}: {kind} id {raw[row]} (line {frame.index[row] + 2}) never occurs "
                             f"in the train positives, so it has no embedding")
        pairs.append(index)
    return torch.from_numpy(np.stack(pairs).astype(np.int64))


def load_splits(data_dir, name: str, augment: bool = True, encode_negatives: bool = False,
                duplicate_pairs: str = "error") -> RecData:
    """Read, check and encode the three split files of dataset `name` under data_dir.

    The label encoder is fitted on the train positives (ReFINe), or with encode_negatives on the
    positives and the confirmed negatives together (ReFINe++, whose graph holds both).
    duplicate_pairs: "error" refuses rows repeating a (user, item) pair; "first" / "last" keep
    one row of each. docs/bad-input.md lists every rule.
    """
    train_split = run_splits(augment)[0]
    message = missing_split_message(data_dir, name, run_splits(augment))
    if message:
        raise InputError(message)
    paths = {"train": split_path(data_dir, name, train_split),
             "validation": split_path(data_dir, name, "validation"), "test": split_path(data_dir, name, "test")}
    train, validation, test = frames = [check_duplicate_pairs(read_split(paths[split]), paths[split], duplicate_pairs)
                                        for split in ROLES]
    for column in (USER, ITEM):
        # Numeric ids sort as numbers (as the published label encoder sees them); ids that are
        # tokens anywhere are compared as strings everywhere.
        if not all(pd.api.types.is_numeric_dtype(frame[column]) for frame in frames):
            for frame in frames:
                frame[column] = frame[column].astype(str).to_numpy(dtype=object)

    is_positive, is_negative = train[RATING] >= POSITIVE_MIN, train[RATING] <= NEGATIVE_MAX
    is_neutral = train[RATING].isin(NEUTRAL_RATINGS)
    report_unclassed(train, is_positive | is_negative | is_neutral, paths["train"],
                     f"with a rating in no class (positive >= {POSITIVE_MIN}, confirmed negative <= "
                     f"{NEGATIVE_MAX}, neutral {' or '.join(map(str, NEUTRAL_RATINGS))})")
    positives = train[is_positive]
    if positives.empty:
        raise InputError(f"{paths['train']}: no train positives (rating >= {POSITIVE_MIN})")
    encoded_rows = train[is_positive | is_negative] if encode_negatives else positives
    user_ids = np.unique(encoded_rows[USER].to_numpy())
    item_ids = np.unique(encoded_rows[ITEM].to_numpy())
    ground_truth = {}
    for split, frame in (("validation", validation), ("test", test)):
        is_truth = frame[RATING] >= POSITIVE_MIN
        if not is_truth.any():
            content = "no rows" if frame.empty else f"only ratings below {POSITIVE_MIN}"
            raise InputError(f"{paths[split]}: no {split} positives (rating >= {POSITIVE_MIN}), the file has "
                             f"{content}: every {split} metric would be undefined")
        report_unclassed(frame, is_truth, paths[split], f"below {POSITIVE_MIN}, not {split} positives")
        ground_truth[split] = drop_unrankable(frame[is_truth], user_ids, item_ids, paths[split])
        if ground_truth[split].empty:
            raise InputError(f"{paths[split]}: none of its {split} positives has a user and an item that occur in "
                             f"the train rows, so none can be ranked: every {split} metric would be undefined")
    graph_rows = encoded_rows  # file order, as upstream builds its edge_index
    return RecData(
        num_users=len(user_ids),
        num_items=len(item_ids),
        train_pos=encode(positives, user_ids, item_ids, paths["train"]),
        graph_edges=encode(graph_rows, user_ids, item_ids, paths["train"]),
        graph_ratings=torch.tensor(graph_rows[RATING].to_numpy(), dtype=torch.float32),
        train_neg=encode(train[is_negative], user_ids, item_ids, paths["train"]),
        train_neutral=encode(train[is_neutral], user_ids, item_ids, paths["train"]),
        valid=encode(ground_truth["validation"], user_ids, item_ids, paths["validation"]),
        test=encode(ground_truth["test"], user_ids, item_ids, paths["test"]),
        user_ids=user_ids,
        item_ids=item_ids,
    )


def negative_candidate_counts(data: RecData) -> torch.Tensor:
    """(num_users,) items each user can be given as a negative, those with W[u, j] > 0: every item
    but the user's train positives, except positives that are also confirmed negatives (W is
    written 0 at positives, then real_neg_samp_prob at negatives). The same for all three models."""
    num_items = data.num_items
    positive = torch.unique(data.train_pos[0] * num_items + data.train_pos[1])
    blocked = positive[~torch.isin(positive, data.train_neg[0] * num_items + data.train_neg[1])]
    return num_items - torch.bincount(torch.div(blocked, num_items, rounding_mode="floor"), minlength=data.num_users)


def check_trainable(data: RecData, config, top_k, train_path) -> None:
    """Flag values that do not fit the data (they would fail deep inside torch), and users no negative
    can be drawn for, stop here. config: a training.TrainConfig (its model, r and s); train_path: the
    train split file, named in the messages."""
    if max(top_k) > data.num_items:
        raise InputError(f"--top_k {max(top_k)} is larger than the item count ({data.num_items})")
    for flag in ("r", "s"):
        value = getattr(config, flag)
        if not 0 < value < data.num_items:
            raise InputError(f"--{flag} {value} must be between 1 and the item count - 1 ({data.num_items - 1})")
    # ReFINe and LightGCN draw one negative per positive; ReFINe++ draws I // 10 without replacement.
    needed = data.num_items // 10 if config.model == "refine_plus" else 1
    if needed < 1:
        raise InputError(f"ReFINe++ draws item count // 10 negatives per positive, but {train_path} "
                         f"has only {data.num_items} items (it needs 10 or more)")
    candidates = negative_candidate_counts(data)
    short = torch.nonzero(candidates < needed).flatten()
    if short.numel():
        user = int(short[0])
        if needed == 1:
            raise InputError(f"{train_path}: user {data.user_ids[user]} rated every one of the {data.num_items} "
                             f"items positive, so no negative can be drawn for it: remove some of its positive "
                             f"rows, or the user")
        raise InputError(f"{train_path}: user {data.user_ids[user]} has only {int(candidates[user])} items that are "
                         f"not its train positives, but ReFINe++ draws {needed} (item count // 10) negatives per "
                         f"positive without replacement: remove some of its positive rows, or the user")
