"""The small synthetic split files of the tests and of bench/host_syncs.py (no pytest needed).

    python -c "from bench import toy; toy.write_synthetic_dataset('/tmp/d')"     # from the repository root
"""
from pathlib import Path


def write_synthetic_dataset(data_dir, name="TOY", num_users=40, num_items=60, seed=0):
    """Split CSVs in the published format: every user and item has train positives.

    Ratings in train: 4/5 positives, 2/3 neutrals, 0.5/1 confirmed negatives; validation and
    test hold positives only. Returns the folder written.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    header = "user_id:token,item_id:token,rating:float\n"
    rows = {"train": [], "validation": [], "test": []}
    for user in range(1, num_users + 1):
        items = rng.permutation(np.arange(1, num_items + 1))[:20]
        # Item ids user..user+3 (mod) guarantee every item has a train positive.
        guaranteed = [(user + offset - 1) % num_items + 1 for offset in range(3)]
        items = [i for i in items if i not in guaranteed]
        for item in guaranteed + items[:6]:
            rows["train"].append((user, item, rng.choice([4, 5])))
        for item in items[6:10]:
            rows["train"].append((user, item, rng.choice([2, 3])))
        for item in items[10:13]:
            rows["train"].append((user, item, rng.choice([0.5, 1])))
        rows["validation"] += [(user, item, 4) for item in items[13:15]]
        rows["test"] += [(user, item, 5) for item in items[15:18]]
    positive_items = {item for _, item, rating in rows["train"] if rating >= 4}
    for split in ("validation", "test"):
        rows[split] = [row for row in rows[split] if row[1] in positive_items]
    folder = Path(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, filename in (("train", f"{name}_train_augment.csv"), ("validation", f"{name}_validation.csv"),
                            ("test", f"{name}_test.csv")):
        lines = "".join(f"{u},{i},{r}\n" for u, i, r in rows[split])
        (folder / filename).write_text(header + lines)
    return folder
