"""Synthetic rating graphs at the sizes of the ReFINe datasets, for scale and speed runs.

    python -m bench.synthetic amazon-book --out /tmp/synth         # writes /tmp/synth/amazon-book/*.csv
    python main.py --data_dir /tmp/synth --dataset amazon-book --epochs 1 --sampler sparse

Users and items get long-tailed activity and popularity (log-normal weights), so degrees look
like real rating data. Every user and item has at least one train positive, so the label
encoder of splits.py sees exactly num_users x num_items. Confirmed negatives (rating 1),
neutrals (rating 3), validation and test positives (rating 5) are distinct pairs that are not
train positives. `scale` shrinks users, items and edge counts together (for quick checks).
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catalog import PUBLISHED_R, SPLIT_COLUMNS
import entry
from splits import RecData


@dataclass(frozen=True)
class Preset:
    num_users: int
    num_items: int
    train_pos: int
    neg_ratio: float      # confirmed negatives per train positive
    neutral_ratio: float  # neutrals per train positive
    r: int                # --r of the published runs (ML-100K/ML-1M/Netflix-1M logs); 100 elsewhere


# Counts: ML-100K from its splits, ML-1M and Netflix-1M from the published logs' user/item counts
# (ML-1M's train positives as the task states, ~575k), Amazon-Book as LightGCN's split
# (1.17M train edges). The ML-100K augment split has 0.24 negatives and 0.26 neutrals per positive;
# Amazon-Book has fewer 1-star ratings, so 0.1 there.
PRESETS = {
    "ml-100k": Preset(938, 1008, 52_984, 0.24, 0.26, PUBLISHED_R["ML-100K"]),
    "ml-1m": Preset(6_038, 3_533, 575_000, 0.24, 0.26, PUBLISHED_R["ML-1M"]),
    "netflix-1m": Preset(4_803, 5_575, 419_376, 0.24, 0.26, PUBLISHED_R["Netflix-1M"]),
    "amazon-book": Preset(28_623, 29_948, 1_170_000, 0.10, 0.10, 100),
}


def _unique_new_pairs(rng, user_weight, item_weight, count, taken_keys, num_items):
    """`count` distinct user*num_items+item keys drawn by activity x popularity, none in taken_keys."""
    keys = np.empty(0, dtype=np.int64)
    while keys.size < count:
        need = int((count - keys.size) * 1.3) + 16
        users = rng.choice(user_weight.size, size=need, p=user_weight)
        items = rng.choice(item_weight.size, size=need, p=item_weight)
        fresh = np.unique(users.astype(np.int64) * num_items + items)
        fresh = fresh[~np.isin(fresh, taken_keys) & ~np.isin(fresh, keys)]
        keys = np.concatenate([keys, rng.permutation(fresh)[:count - keys.size]])
    return keys


def generate(preset: str = "ml-1m", scale: float = 1.0, seed: int = 0) -> RecData:
    """A RecData of the preset's size times `scale` (users, items and edges), deterministic in seed."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    spec = PRESETS[preset]
    rng = np.random.default_rng(seed)
    num_users = max(2, round(spec.num_users * scale))
    num_items = max(2, round(spec.num_items * scale))
    num_pos = min(max(num_users, num_items, round(spec.train_pos * scale)), num_users * num_items // 2)
    user_weight = rng.lognormal(0.0, 1.0, num_users)
    item_weight = rng.lognormal(0.0, 1.5, num_items)
    user_weight, item_weight = user_weight / user_weight.sum(), item_weight / item_weight.sum()

    # Coverage first: user u gets one item, item i one user; then fill to num_pos.
    cover = np.concatenate([np.arange(num_users) * num_items + rng.integers(0, num_items, num_users),
                            rng.integers(0, num_users, num_items) * num_items + np.arange(num_items)])
    pos_keys = np.unique(cover.astype(np.int64))
    pos_keys = np.concatenate([pos_keys, _unique_new_pairs(rng, user_weight, item_weight,
                                                           max(0, num_pos - pos_keys.size), pos_keys, num_items)])
    taken = np.sort(pos_keys)
    splits = {}
    for name, count in (("neg", round(num_pos * spec.neg_ratio)), ("neutral", round(num_pos * spec.neutral_ratio)),
                        ("valid", round(num_pos * 0.1)), ("test", round(num_pos * 0.2))):
        splits[name] = _unique_new_pairs(rng, user_weight, item_weight, count, taken, num_items)
        taken = np.sort(np.concatenate([taken, splits[name]]))

    def pairs(keys):
        keys = np.asarray(keys, dtype=np.int64)
        return torch.from_numpy(np.stack([keys // num_items, keys % num_items]))

    train_pos = pairs(rng.permutation(pos_keys))
    return RecData(num_users=num_users, num_items=num_items, train_pos=train_pos, graph_edges=train_pos,
                   graph_ratings=torch.full((train_pos.size(1),), 4.0), train_neg=pairs(splits["neg"]),
                   train_neutral=pairs(splits["neutral"]),
                   valid=pairs(splits["valid"]), test=pairs(splits["test"]),
                   user_ids=np.arange(num_users), item_ids=np.arange(num_items))


def write_splits(data: RecData, out_dir, name: str) -> Path:
    """The published split CSVs (<name>_train_augment/_train_original/_validation/_test.csv) of data."""
    import pandas as pd

    from utils import atomic_write

    folder = Path(out_dir) / name
    columns = SPLIT_COLUMNS

    def frame(*parts):
        rows = [np.column_stack([edges[0].numpy(), edges[1].numpy(), np.full(edges.size(1), rating)])
                for edges, rating in parts]
        return pd.DataFrame(np.concatenate(rows), columns=columns).astype({columns[0]: "int64", columns[1]: "int64"})

    train = frame((data.train_pos, 4.0), (data.train_neg, 1.0), (data.train_neutral, 3.0))
    files = {"train_augment": train, "train_original": train, "validation": frame((data.valid, 5.0)),
             "test": frame((data.test, 5.0))}
    for split, table in files.items():
        with atomic_write(folder / f"{name}_{split}.csv") as handle:
            table.to_csv(handle, index=False)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="writes OUT/<preset>/<preset>_*.csv")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink factor for users, items and edges")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = generate(args.preset, args.scale, args.seed)
    folder = write_splits(data, args.out, args.preset)
    print(f"{folder}: {data.num_users} users, {data.num_items} items, {data.train_pos.size(1)} train positives, "
          f"{data.train_neg.size(1)} negatives, {data.train_neutral.size(1)} neutrals, "
          f"{data.valid.size(1)} validation, {data.test.size(1)} test")
    return 0


if __name__ == "__main__":
    sys.exit(entry.run_script(main, entry.Stop("the splits are written together or not at all: rerun it")))
