"""Raw RecBole atomic files -> the three split CSVs (docs/method.md §1.2), and the readers of raw files.

    python dataloader.py preprocess ML-100K                # raw files -> the three split CSVs

Reproduces the published ML-100K splits byte for byte. docs/data.md is the reference (the
preprocessing, own datasets). numpy, pandas and tqdm are imported inside the functions that use
them, so that `--help` and flag errors answer at once.
"""
import argparse
import contextlib
import math
import sys
from pathlib import Path

from catalog import (DATASETS, GENRES_PAGE, ITEM, MOVIE_TITLES_PAGE, NETFLIX_GENRES, NETFLIX_TITLES, RATING,
                     SPLIT_COLUMNS, SPLITS, USER, DatasetInfo, split_path)
from utils import InputError, atomic_write, check_output_path, regular_file

# What to do when something other than a file stands where an input file belongs.
INPUT_IN_THE_WAY = "move it away and put the file there"

# The published settings (docs/method.md §1.2): the defaults of the `preprocess` flags.
DEFAULTS = dict(positive_threshold=4, min_user=5, min_item=5, test_ratio=0.2, valid_ratio=0.1, seed=2024,
                sample_users=None, drop_unseen_eval_items=None, duplicates="error", item_file=None,
                item_columns=None)


def default_options(**changes):
    """The options `preprocess` reads, as the command line gives them with no flags (plus `changes`)."""
    return argparse.Namespace(**{**DEFAULTS, **changes})

# ----------------------------------------------------------------------------------------------
# Reading raw files

def read_atomic(path, required, usecols=None):
    """Read a tab-separated RecBole atomic file, checking the header has the `required` fields.

    pandas' default type inference and NA handling are kept on purpose: the published splits were
    made with a plain pd.read_csv(sep='\\t'), and ids' dtype decides the per-user order.
    """
    import pandas as pd

    path = regular_file(path, f"missing {path}", INPUT_IN_THE_WAY)
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
    if not header.strip():
        raise InputError(f"{path} is empty (expected a header line like {USER}\\t{ITEM}\\t{RATING})")
    fields = header.split("\t")
    absent = [f for f in required if f not in fields]
    if absent:
        raise InputError(f"{path}: header lacks {', '.join(absent)} (found: {', '.join(fields)})")
    columns = list(dict.fromkeys(usecols or fields))
    try:
        return pd.read_csv(path, sep="\t", usecols=columns, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: cannot parse ({str(error).splitlines()[0]})") from None
    except OSError as exc:  # e.g. no permission; the library's message need not name the file
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc}); check its permissions") from None


def check_ratings(frame, path, rating=RATING):
    """Ratings must be finite numbers (missing ones are allowed: docs/method.md §1.2 drops those rows)."""
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(frame[rating]):
        numeric = pd.to_numeric(frame[rating], errors="coerce")
        bad = numeric.isna() & frame[rating].notna()
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path} line {row + 2}: {rating} value {frame[rating].iloc[row]!r} is not a number")
    infinite = np.isinf(frame[rating].to_numpy(dtype=float))
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise InputError(f"{path} line {row + 2}: {rating} value {frame[rating].iloc[row]} is not a finite number")


def read_movie_titles(path):
    """Netflix movie_titles.csv (ISO-8859-1): one 'id,year,title' a line, split on the first two
    commas only (titles contain commas) -> DataFrame [item id (int), year:token, title:token].

    The one reader of this file, for preprocessing and the LLM stage. Titles are kept as written
    (only the line end is cut): the LLM's prompts show them. 'NULL' years stay the string 'NULL'
    (the published pipeline did not treat them as missing). Blank lines name no movie and are
    skipped; any other line must have the three fields and an integer id, else an InputError
    names the line (a damaged file is not silently thinned out).
    """
    import pandas as pd

    path = regular_file(path, f"missing {path} (Netflix Prize data, {MOVIE_TITLES_PAGE})", INPUT_IN_THE_WAY)
    rows = []
    with open(path, encoding="ISO-8859-1") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(",", 2)
            if len(parts) != 3:
                raise InputError(f"{path} line {number}: expected 'id,year,title', found {line!r}")
            try:
                parts[0] = int(parts[0])
            except ValueError:
                raise InputError(f"{path} line {number}: movie id {parts[0]!r} is not an integer") from None
            rows.append(parts)
    if not rows:
        raise InputError(f"{path} is empty")
    return pd.DataFrame(rows, columns=[ITEM, "year:token", "title:token"])


def read_netflix_genres(path):
    """netflix_genres.csv: a header, then two columns (movie id, genres) -> DataFrame [item id,
    genres:token]. The one reader of this file, for preprocessing and the LLM stage."""
    import pandas as pd

    path = regular_file(path, f"missing {path} ({GENRES_PAGE})", INPUT_IN_THE_WAY)
    try:
        genres = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a valid CSV file ({str(error).splitlines()[0]})") from None
    if genres.shape[1] != 2:
        raise InputError(f"{path}: expected 2 columns (movie id, genres), found {genres.shape[1]}")
    genres.columns = [ITEM, "genres:token"]
    return genres


def filter_by_items(inter, item_tables, path):
    """docs/method.md §1.2 step 1 without materialising the merge: a left merge on item id followed by
    dropna over the item columns keeps each interaction once per complete matching item row
    (normally 0 or 1 times), in the interactions' order."""
    import pandas as pd

    inter = inter.dropna(subset=[USER, ITEM, RATING])
    multiplicity = pd.Series(1, index=inter.index)
    for table, columns in item_tables:
        if pd.api.types.is_numeric_dtype(table[ITEM]) != pd.api.types.is_numeric_dtype(inter[ITEM]):
            raise InputError(f"{path}: item ids are numbers in one file and text in the other")
        complete = table.dropna(subset=list(columns))[ITEM].value_counts()
        multiplicity *= inter[ITEM].map(complete).fillna(0).astype("int64")
    return inter.loc[inter.index.repeat(multiplicity.to_numpy())]


def load_interactions(name, folder, info):
    """Raw files of `name` -> interactions (user, item, rating) after the item-field drop."""
    inter_path = folder / info.inter_file
    inter = read_atomic(inter_path, [USER, ITEM, RATING], usecols=[USER, ITEM, RATING])
    if inter.empty:
        raise InputError(f"{inter_path} has a header but no rows")
    check_ratings(inter, inter_path)
    if info.extra_files:  # Netflix-1M
        titles = read_movie_titles(folder / NETFLIX_TITLES)
        genres = read_netflix_genres(folder / NETFLIX_GENRES)
        tables = [(titles, ("year:token", "title:token")), (genres, ("genres:token",))]
    elif info.item_file:
        item_path = folder / info.item_file
        item = read_atomic(item_path, [ITEM, *info.item_columns], usecols=[ITEM, *info.item_columns])
        tables = [(item, info.item_columns)]
    else:
        tables = []
    return filter_by_items(inter, tables, inter_path)[SPLIT_COLUMNS]


# ----------------------------------------------------------------------------------------------
# docs/method.md §1.2: pure functions on DataFrames

def sample_users(frame, size, seed):
    """Keep the rows of `size` users drawn without replacement from the sorted unique user ids,
    as np.random.seed(seed); np.random.choice(ids, size, replace=False) does."""
    import numpy as np

    user_ids = np.unique(frame[USER].to_numpy())
    if size > len(user_ids):
        raise InputError(f"cannot sample {size} users: only {len(user_ids)} have complete rows")
    chosen = np.random.RandomState(seed).choice(user_ids, size=size, replace=False)
    return frame[frame[USER].isin(chosen)]


def filter_min_counts(rows, min_user, min_item):
    """Drop items with fewer than `min_item` rows, then users with fewer than `min_user` rows."""
    if min_item > 0:
        counts = rows[ITEM].value_counts()
        rows = rows[rows[ITEM].isin(counts.index[counts >= min_item])]
    if min_user > 0:
        counts = rows[USER].value_counts()
        rows = rows[rows[USER].isin(counts.index[counts >= min_user])]
    return rows


def k_core(frame, threshold=4, min_user=5, min_item=5):
    """docs/method.md §1.2 steps 2-3: iterate until the row count stops changing; returns (positives,
    negatives restricted to the users and items of the final positives)."""
    import pandas as pd

    previous, current = -1, len(frame)
    while current != previous:
        positives = frame[frame[RATING] >= threshold]
        negatives = frame[frame[RATING] < threshold]
        previous = current
        positives = filter_min_counts(positives, min_user, min_item)
        frame = filter_min_counts(pd.concat([positives, negatives]), min_user, min_item)
        current = len(frame)
    negatives = negatives[negatives[USER].isin(positives[USER].unique())
                          & negatives[ITEM].isin(positives[ITEM].unique())]
    return positives, negatives


def split_positives(positives, seed=2024, test_ratio=0.2, valid_ratio=0.1, min_rows=5):
    """docs/method.md §1.2 step 4: per user in ascending id order, perm = permutation(n) from one RNG seeded
    once; test = perm[:int(0.2 n)], validation = next int(0.1 n), train = rest. Rows keep their
    order inside each user. Users with fewer than `min_rows` rows go to train whole."""
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    codes, _ = pd.factorize(positives[USER], sort=True)
    order = np.argsort(codes, kind="stable")           # groupby order, stable inside a user
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    part = np.zeros(len(order), dtype=np.int8)          # 0 train, 1 validation, 2 test (sorted order)
    rng = np.random.RandomState(seed)
    for start, end in tqdm(zip(starts, ends), total=len(starts), desc="split users",
                           disable=len(starts) < 20000, file=sys.stderr):
        n = end - start
        if n < min_rows:
            continue
        perm = rng.permutation(n)
        test_size, valid_size = int(test_ratio * n), int(valid_ratio * n)
        part[start + perm[:test_size]] = 2
        part[start + perm[test_size:test_size + valid_size]] = 1
    in_order = positives.iloc[order]
    return in_order[part == 0], in_order[part == 1], in_order[part == 2]


def make_splits(frame, threshold=4, min_user=5, min_item=5, seed=2024, test_ratio=0.2,
                valid_ratio=0.1, drop_unseen_eval_items=False):
    """Interactions -> (train_original, validation, test) DataFrames, docs/method.md §1.2 steps 2-5."""
    import pandas as pd

    positives, negatives = k_core(frame, threshold, min_user, min_item)
    if positives.empty:
        raise InputError(f"no interactions left after the {min_user}/{min_item}-core filter")
    train, valid, test = split_positives(positives, seed, test_ratio, valid_ratio, min_rows=5)
    if drop_unseen_eval_items:
        seen = train[ITEM].unique()
        valid, test = valid[valid[ITEM].isin(seen)], test[test[ITEM].isin(seen)]
    return pd.concat([train, negatives], ignore_index=True), valid, test


def write_tables_together(tables):
    """Write {path: DataFrame} as split CSVs. Each goes to a temporary name beside its path; all
    are renamed into place once every one is complete, so a failure or Ctrl-C leaves none."""
    with contextlib.ExitStack() as renamed_together:
        for path, table in tables.items():
            handle = renamed_together.enter_context(atomic_write(path, "w", encoding="utf-8", newline=""))
            try:
                table[SPLIT_COLUMNS].to_csv(handle, index=False, lineterminator="\n")
            except OSError as exc:
                if exc.filename is not None:
                    raise
                # a write error (a full disk) does not say where: name the file for the error line
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def check_preprocess_options(options):
    """Refuse option values that cannot give three usable splits, before any data is read."""
    for flag in ("test_ratio", "valid_ratio"):
        value = getattr(options, flag)
        if not (math.isfinite(value) and 0 < value < 1):
            raise InputError(f"--{flag} {value}: must be a fraction strictly between 0 and 1")
    if options.test_ratio + options.valid_ratio >= 1:
        raise InputError(f"--test_ratio {options.test_ratio} + --valid_ratio {options.valid_ratio} leaves no "
                         f"train rows: their sum must be below 1")
    for flag in ("min_user", "min_item", "sample_users"):
        value = getattr(options, flag)
        if value is not None and value < 0:
            raise InputError(f"--{flag} {value}: must be 0 or more")
    if not math.isfinite(options.positive_threshold):
        raise InputError(f"--positive_threshold {options.positive_threshold}: must be a finite number")
    if not 0 <= options.seed < 2 ** 32:
        raise InputError(f"--seed {options.seed}: must be between 0 and 2**32 - 1 (numpy's seed range)")


def preprocess(name, data_dir, options, log=print, keep_present=False):
    """Read <data_dir>/<name>/ raw files, write the three split CSVs beside them (together).

    Options and output paths are checked before any data is read. With keep_present, split
    files that already exist are left as they are and only the others are written.
    """
    check_preprocess_options(options)
    outputs = [split_path(data_dir, name, split) for split in SPLITS]
    for path in outputs:
        check_output_path(path, "preprocess output")
    folder = Path(data_dir) / name
    info = DATASETS.get(name) or DatasetInfo(f"{name}.inter", options.item_file,
                                             tuple(options.item_columns or ()), None)
    if name not in DATASETS and not (folder / info.inter_file).exists():
        raise InputError(f"no raw files for dataset {name!r}: expected {folder / info.inter_file} "
                         f"(known datasets: {', '.join(DATASETS)})")
    log(f"reading {folder}/ ...")
    frame = load_interactions(name, folder, info)
    size = info.sample_users if options.sample_users is None else options.sample_users
    if size:
        # before the duplicate check: it is per (user, item), so the order does not matter,
        # and Netflix has 100M rows before sampling
        frame = sample_users(frame, size, options.seed)
    duplicated = frame.duplicated(subset=[USER, ITEM])
    if duplicated.any() and options.duplicates == "error":
        first = frame[duplicated].iloc[0]
        raise InputError(f"{folder / info.inter_file}: {int(duplicated.sum())} duplicate (user, item) rows, "
                         f"e.g. user {first[USER]} item {first[ITEM]}; pass --duplicates keep|first|last")
    if options.duplicates in ("first", "last"):
        frame = frame.drop_duplicates(subset=[USER, ITEM], keep=options.duplicates)
    drop_unseen = (info.drop_unseen_eval_items if options.drop_unseen_eval_items is None
                   else options.drop_unseen_eval_items)
    splits = make_splits(frame, options.positive_threshold, options.min_user, options.min_item,
                         options.seed, options.test_ratio, options.valid_ratio, drop_unseen)
    for split, table in zip(SPLITS[1:], splits[1:]):
        if table.empty:  # valid docs/method.md §1.2 output, but main.py refuses to train on it: say so now
            flag = "--valid_ratio" if split == "validation" else "--test_ratio"
            print(f"warning: the {split} split is empty ({flag} {getattr(options, flag[2:])} of each user's "
                  f"positives rounds down to 0, or no user has 5 positives); main.py cannot evaluate on it",
                  file=sys.stderr)
    tables = {path: table for path, table in zip(outputs, splits) if not (keep_present and path.exists())}
    write_tables_together(tables)
    for path, table in tables.items():
        log(f"wrote {path} ({len(table)} rows)")
    return splits
