"""Data: split CSVs -> encoded index tensors; `download` and `preprocess` commands for raw files.

    python dataloader.py download ML-100K --refined      # fetch the published refined splits
    python dataloader.py preprocess ML-100K              # raw RecBole files -> split CSVs

Reads `<data_dir>/<NAME>/<NAME>_{train_augment|train_original,validation,test}.csv` (SPEC 3):
ids are encoded with a label encoder (sorted unique raw ids -> 0..n-1) fitted on the train
POSITIVES (rating >= 4); confirmed negatives (rating <= 1), neutrals (2 or 3), validation and
test positives are mapped with it. Users are nodes 0..U-1 and items U..U+I-1 in the graph.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_prep import ITEM, RATING, USER, missing_split_message, split_path
from utils import InputError

SPLITS = ("train", "validation", "test")


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


def read_split(path: Path) -> pd.DataFrame:
    """One split CSV with numeric user, item and rating columns, or an InputError naming the file."""
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid CSV file ({str(exc).splitlines()[0]})") from None
    missing = [column for column in (USER, ITEM, RATING) if column not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} "
                         f"(found: {', '.join(map(str, frame.columns))})")
    if frame.empty:  # header only: no rows to type
        return frame.astype({USER: "int64", ITEM: "int64", RATING: "float64"})
    if not pd.api.types.is_numeric_dtype(frame[RATING]):
        raise InputError(f"{path}: column {RATING} must be numeric")
    for column in (USER, ITEM, RATING):
        if frame[column].isna().any():
            row = int(frame[column].isna().to_numpy().argmax()) + 2
            raise InputError(f"{path}: empty value in column {column} at line {row}")
    return frame


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


def load_splits(data_dir, name: str, augment: bool = True, encode_negatives: bool = False) -> RecData:
    """Read and encode the three split files of dataset `name` under data_dir.

    The label encoder is fitted on the train positives (ReFINe), or with encode_negatives on the
    positives and the confirmed negatives together (ReFINe++, whose graph holds both).
    """
    train_split = "train_augment" if augment else "train_original"
    message = missing_split_message(data_dir, name, (train_split, "validation", "test"))
    if message:
        raise InputError(message)
    paths = {"train": split_path(data_dir, name, train_split),
             "validation": split_path(data_dir, name, "validation"), "test": split_path(data_dir, name, "test")}
    train, validation, test = frames = [read_split(paths[split]) for split in SPLITS]
    for column in (USER, ITEM):
        # Numeric ids sort as numbers (as the published label encoder sees them); ids that are
        # tokens anywhere are compared as strings everywhere.
        if not all(pd.api.types.is_numeric_dtype(frame[column]) for frame in frames):
            for frame in frames:
                frame[column] = frame[column].astype(str).to_numpy(dtype=object)

    positives = train[train[RATING] >= 4]
    if positives.empty:
        raise InputError(f"{paths['train']}: no train positives (rating >= 4)")
    encoded_rows = train[(train[RATING] >= 4) | (train[RATING] <= 1)] if encode_negatives else positives
    user_ids = np.unique(encoded_rows[USER].to_numpy())
    item_ids = np.unique(encoded_rows[ITEM].to_numpy())
    graph_rows = encoded_rows  # file order, as upstream builds its edge_index
    return RecData(
        num_users=len(user_ids),
        num_items=len(item_ids),
        train_pos=encode(positives, user_ids, item_ids, paths["train"]),
        graph_edges=encode(graph_rows, user_ids, item_ids, paths["train"]),
        graph_ratings=torch.tensor(graph_rows[RATING].to_numpy(), dtype=torch.float32),
        train_neg=encode(train[train[RATING] <= 1], user_ids, item_ids, paths["train"]),
        train_neutral=encode(train[train[RATING].isin([2, 3])], user_ids, item_ids, paths["train"]),
        valid=encode(validation[validation[RATING] >= 4], user_ids, item_ids, paths["validation"]),
        test=encode(test[test[RATING] >= 4], user_ids, item_ids, paths["test"]),
        user_ids=user_ids,
        item_ids=item_ids,
    )


if __name__ == "__main__":
    # The raw-data commands live in data_prep.py; this keeps the published entry point name.
    import data_prep

    sys.exit(data_prep.main(sys.argv[1:]))
