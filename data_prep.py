"""Raw data -> split CSVs: the `download` and `preprocess` commands behind dataloader.py.

    python dataloader.py download ML-100K --refined        # published splits, ready to train
    python dataloader.py download ML-100K                  # raw RecBole atomic files
    python dataloader.py preprocess ML-100K                # raw files -> the three split CSVs

Files go to <data_dir>/<NAME>/ (data_dir: --data_dir, else $REFINE_DATA_DIR, else ./dataset).
Preprocessing follows SPEC 1.1-1.2 and reproduces the published ML-100K splits byte for byte.
docs/data.md is the reference (sources, checksums, preprocessing, own datasets).

numpy, pandas and tqdm are imported inside the functions that use them, so that `--help`, a
flag error and refine_llm.py's import of the column names answer without loading them.
"""
import argparse
import contextlib
import hashlib
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from catalog import (DATASETS, EXPECTED_SHA256, GENRES_URL, GROUPLENS_URL, ITEM, MOVIE_TITLES_PAGE, RATING,
                     RAW_SOURCES, RECBOLE_URL, RECBOLE_WHEEL, REFINED_FILE_PAGE, REFINED_PAGE, REFINED_SPLITS,
                     REFINED_URL, SPLIT_COLUMNS, SPLITS, USER, DatasetInfo, default_data_dir, split_path)
from utils import ArgumentParser, HelpFormatter, InputError, atomic_write, check_output_path

# GroupLens u.genre, in flag order (u.item carries 19 0/1 genre flags).
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


# ----------------------------------------------------------------------------------------------
# Download

def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DownloadError(InputError):
    """A download that failed on the network side (the user may retry or fetch by hand)."""


class DownloadInterrupted(DownloadError):
    """A transfer that broke off midway; its .part file is kept and the same command resumes it."""


def fetch(url, dest, expected_sha256=None, progress=True, timeout=60):
    """Download `url` to `dest` via `dest.part`; resume a previous .part with an HTTP Range request.

    Returns the sha256 of the file. Raises DownloadError when the server cannot be reached or
    refuses, DownloadInterrupted when a transfer breaks off (the .part is kept so a rerun
    resumes), InputError on a checksum mismatch (the .part is removed). Nothing is ever left
    under `dest` unless it is complete and, when `expected_sha256` is given, verified.
    """
    import http.client  # here, not at the top: with urllib they cost 0.1 s of every `--help`
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "refine-repro"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The .part is already as long as the file (or longer): start over.
            part.unlink()
            return fetch(url, dest, expected_sha256, progress, timeout)
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot reach {url} ({reason})") from None

    with response:
        resumed = offset and response.status == 206
        if not resumed:
            offset = 0  # server ignored Range (200): restart from byte 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        digest = hashlib.sha256()
        if resumed:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name, disable=not progress, file=sys.stderr)
        try:
            with open(part, "ab" if resumed else "wb") as handle:
                while True:
                    block = response.read(1 << 16)
                    if not block:
                        break
                    handle.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        except (http.client.IncompleteRead, OSError, socket.timeout) as error:
            raise DownloadInterrupted(f"download of {url} interrupted after {received} bytes ({error!r}); "
                                      f"partial file kept at {part}, rerun the same command to resume") from None
        finally:
            bar.close()
    if total is not None and received != total:
        raise DownloadInterrupted(f"download of {url} stopped at {received} of {total} bytes; partial file "
                                  f"kept at {part}, rerun the same command to resume")
    got = digest.hexdigest()
    if expected_sha256 and got != expected_sha256:
        part.unlink()
        raise InputError(f"checksum mismatch for {url}: expected sha256 {expected_sha256}, got {got}; "
                         f"the corrupted download was deleted, rerun to try again")
    os.replace(part, dest)
    return got


def _join(base, path):
    return base.rstrip("/") + "/" + path


def _report(dest, sha, log):
    known = EXPECTED_SHA256.get(Path(dest).name)
    note = "verified" if known == sha else "no recorded checksum" if known is None else "MISMATCH"
    log(f"  {dest}  sha256 {sha} ({note})")


def check_present(paths, accept_changed, log):
    """Check the files of `paths` that already exist against their published sha256 (where one
    is known). A changed file is an InputError naming it, and nothing is touched, unless
    `accept_changed`. Paths where no file can be written are refused too."""
    for path in map(Path, paths):
        check_output_path(path, "download target")
        if not path.exists():
            continue
        sha, known = sha256_of(path), EXPECTED_SHA256.get(path.name)
        if known is None:
            log(f"  {path} already present (no published checksum), kept")
        elif sha == known:
            log(f"  {path} already present, sha256 verified")
        elif accept_changed:
            log(f"  {path} already present and differs from the published file; kept (--accept_changed)")
        else:
            raise InputError(f"{path} is already present but differs from the published file (sha256 {sha}, "
                             f"published {known}); nothing was changed: move it away and rerun to download "
                             f"it again, or pass --accept_changed to keep it")


def download_refined(name, args, log):
    """Fetch the missing <name>_{train_original,train_augment,validation,test}.csv from
    ReFINe_plus. Returns None, or the DownloadError that made the source unusable (the caller
    falls back to raw files + preprocess). A transfer that broke off is raised: it resumes."""
    for dest in [split_path(args.data_dir, name, split) for split in REFINED_SPLITS]:
        if dest.exists():
            continue
        url = _join(args.refined_url, f"{name}/{dest.name}")
        try:
            sha = fetch(url, dest, EXPECTED_SHA256.get(dest.name), not args.no_progress)
        except DownloadInterrupted:
            raise
        except DownloadError as error:
            return error
        _report(dest, sha, log)
    return None


def extract_members(archive, wanted, folder, log, prefix=None):
    """Write the zip members `wanted` (base names; with `prefix`, the members prefix + name,
    else any member of that base name) into `folder`. All are written together or none is: a
    member whose sha256 differs from the published one is refused before anything is renamed."""
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = [m for m in zipped.namelist() if not m.endswith("/")]
            if prefix:
                members = {base: prefix + base for base in wanted if prefix + base in names}
            else:
                members = {Path(m).name: m for m in names}
            absent = [w for w in wanted if w not in members]
            if absent:
                where = f" under {prefix}" if prefix else f" (it has: {', '.join(sorted(members))})"
                raise InputError(f"{archive.name} lacks {', '.join(absent)}{where}")
            shas = {}
            with contextlib.ExitStack() as renamed_together:
                for base in wanted:
                    target = renamed_together.enter_context(atomic_write(Path(folder) / base, "wb"))
                    digest = hashlib.sha256()
                    with zipped.open(members[base]) as source:
                        for block in iter(lambda: source.read(1 << 20), b""):
                            target.write(block)
                            digest.update(block)
                    shas[base], known = digest.hexdigest(), EXPECTED_SHA256.get(base)
                    if known and shas[base] != known:
                        raise InputError(f"{members[base]} in {archive.name}: sha256 {shas[base]} differs from "
                                         f"the published {base}'s {known}; refused, nothing was written")
    except zipfile.BadZipFile:
        archive.unlink()
        raise InputError(f"{archive} is not a valid zip archive (deleted it; rerun to fetch it again)") from None
    for base in wanted:
        _report(Path(folder) / base, shas[base], log)


def fetch_zip(url, archive, wanted, folder, progress, log):
    fetch(url, archive, None, progress)
    extract_members(archive, wanted, folder, log)
    archive.unlink()


def _pip_failure(result):
    """The line of pip's output that says why it failed."""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [f"exit code {result.returncode}"])[-1]


def fetch_recbole_wheel(name, folder, wanted, args, log):
    """The raw files from the recbole wheel, fetched by `pip download` so that the user's pip
    configuration (index URL, proxy, certificates) applies; --pip_args adds pip options."""
    info = DATASETS[name]
    log(f"  pip download {RECBOLE_WHEEL} (the raw files are inside the wheel) ...")
    with tempfile.TemporaryDirectory(prefix="refine-recbole-wheel-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", "--dest", scratch, *shlex.split(args.pip_args), RECBOLE_WHEEL]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode:
            raise DownloadError(f"pip could not download {RECBOLE_WHEEL}: {_pip_failure(result)}")
        wheels = sorted(Path(scratch).glob("recbole-*.whl"))
        if not wheels:
            raise DownloadError(f"pip download {RECBOLE_WHEEL} left no recbole wheel (found: "
                                f"{', '.join(p.name for p in Path(scratch).iterdir()) or 'nothing'})")
        extract_members(wheels[0], wanted, folder, log, prefix=info.wheel_folder)


def fetch_recbole_zip(name, folder, wanted, args, log):
    url = _join(args.recbole_url, DATASETS[name].recbole_zip)
    fetch_zip(url, folder / Path(DATASETS[name].recbole_zip).name, wanted, folder, not args.no_progress, log)


def fetch_grouplens(name, folder, wanted, args, log):
    url = _join(args.grouplens_url, DATASETS[name].grouplens_zip)
    fetch_zip(url, folder / ("grouplens-" + DATASETS[name].grouplens_zip), DATASETS[name].grouplens_files, folder,
              not args.no_progress, log)
    convert_grouplens(folder, name, log)


FETCHERS = {"recbole-wheel": fetch_recbole_wheel, "recbole-zip": fetch_recbole_zip, "grouplens": fetch_grouplens}


def raw_sources(name, source):
    """The sources to try for `name`'s raw files, in order (RAW_SOURCES explains the order)."""
    info = DATASETS[name]
    offered = {"recbole-wheel": info.wheel_folder, "recbole-zip": info.recbole_zip, "grouplens": info.grouplens_zip}
    available = [s for s in RAW_SOURCES if offered[s]]
    if source == "auto":
        return available
    if source not in available:
        raise InputError(f"--source {source}: no such source for {name} (its sources: {', '.join(available)})")
    return [source]


def raw_files(name):
    info = DATASETS[name]
    return [f for f in (info.inter_file, info.item_file) if f]


def fetch_from_sources(name, folder, wanted, args, log):
    """Try the sources of --source in order until one gives the `wanted` raw files."""
    failures = []
    for source in raw_sources(name, args.source):
        try:
            return FETCHERS[source](name, folder, wanted, args, log)
        except DownloadError as error:
            failures.append(f"{source}: {error}")
            log(f"  {source} failed: {error}")
    info = DATASETS[name]
    grouplens_files = info.grouplens_files
    recbole = _join(args.recbole_url, info.recbole_zip)
    alternative = (f" (or put GroupLens's {' and '.join(grouplens_files)} from "
                   f"{_join(GROUPLENS_URL, info.grouplens_zip)} there and rerun)" if grouplens_files else "")
    raise DownloadError(f"no source gave {', '.join(wanted)} ({'; '.join(failures)}). Download {recbole} "
                        f"by hand and unzip {', '.join(wanted)} into {folder}/{alternative}")


def download_raw(name, args, log):
    """Fetch the raw files SPEC 1.1 names for `name` into <data_dir>/<name>/; files present are
    kept (check_present has vetted them), GroupLens files present are converted."""
    folder = Path(args.data_dir) / name
    wanted = raw_files(name)
    grouplens_files = DATASETS[name].grouplens_files
    if all((folder / f).exists() for f in wanted):
        pass  # nothing to fetch
    elif grouplens_files and all((folder / f).exists() for f in grouplens_files):
        log(f"  converting GroupLens {', '.join(grouplens_files)} found in {folder}")
        convert_grouplens(folder, name, log)
    else:
        fetch_from_sources(name, folder, wanted, args, log)
    if name == "Netflix-1M":
        download_netflix_items(folder, args, log)


def download_netflix_items(folder, args, log):
    """Netflix-1M's item side (SPEC 1.1): netflix_genres.csv, and movie_titles.csv from a mirror
    when one is given (the original needs a Kaggle login)."""
    genres = folder / "netflix_genres.csv"
    if genres.exists():
        log(f"  {genres} already present, skipped")
    else:
        try:
            _report(genres, fetch(args.genres_url, genres, None, not args.no_progress), log)
        except DownloadError as error:
            raise DownloadError(f"{error}. Download netflix_genres.csv by hand from "
                                f"https://github.com/tommasocarraro/netflix-prize-with-genres into {folder}/") from None
    titles = folder / "movie_titles.csv"
    if titles.exists():
        log(f"  {titles} already present, skipped")
    elif args.movie_titles_url:
        _report(titles, fetch(args.movie_titles_url, titles, None, not args.no_progress), log)
    else:
        log(f"  still needed: movie_titles.csv from the Netflix Prize data ({MOVIE_TITLES_PAGE}, "
            f"needs a Kaggle login); put it in {folder}/")


def convert_grouplens(folder, name, log=None):
    """Turn GroupLens files in `folder` (ml-100k: u.data, u.item; ml-1m: ratings.dat, movies.dat)
    into RecBole atomic files <inter_file>, <item_file>, both renamed into place together.
    Differences from RecBole's own files are listed in docs/data.md."""
    folder = Path(folder)
    info = DATASETS[name]
    if name == "ML-100K":
        ratings = [line.split("\t") for line in _read_lines(folder / "u.data", "latin-1")]
        items = []
        for parts in (line.split("|") for line in _read_lines(folder / "u.item", "latin-1")):
            if len(parts) < 5 + len(ML100K_GENRES):
                raise InputError(f"{folder / 'u.item'}: item {parts[0]!r} has {len(parts)} fields, expected 24")
            genres = [g for g, flag in zip(ML100K_GENRES, parts[5:]) if flag.strip() == "1"]
            items.append((parts[0], parts[1], genres))
    else:
        ratings = [line.split("::") for line in _read_lines(folder / "ratings.dat", "latin-1")]
        items = [(p[0], p[1], p[2].split("|")) for p in
                 (line.split("::") for line in _read_lines(folder / "movies.dat", "latin-1"))]
    title_col, year_col, genre_col = info.item_columns
    with contextlib.ExitStack() as renamed_together:
        out = renamed_together.enter_context(atomic_write(folder / info.inter_file, "w", encoding="utf-8", newline=""))
        out.write(f"{USER}\t{ITEM}\t{RATING}\ttimestamp:float\n")
        for row in ratings:
            out.write("\t".join(value.strip() for value in row) + "\n")
        out = renamed_together.enter_context(atomic_write(folder / info.item_file, "w", encoding="utf-8", newline=""))
        out.write(f"{ITEM}\t{title_col}\t{year_col}\t{genre_col}\n")
        for item_id, full_title, genres in items:
            title, year = split_title_year(full_title)
            out.write(f"{item_id}\t{title}\t{year}\t{' '.join(genres)}\n")
    for base in (info.inter_file, info.item_file):
        if log:
            log(f"  {folder / base}  sha256 {sha256_of(folder / base)} (converted from GroupLens)")


def split_title_year(full_title):
    """'Toy Story (1995)' -> ('Toy Story', '1995'): RecBole keeps the last parenthesised group as
    the year ('... (1995) (V)' -> year 'V'). A title without one keeps 'unknown' as its year, so
    the item is not dropped by SPEC 1.2 step 1 (RecBole writes 'unkonwn' for ML-100K item 267)."""
    full_title = full_title.strip()
    match = re.fullmatch(r"(.*) \(([^()]*)\)", full_title)
    if match:
        return match.group(1), match.group(2)
    return full_title, "unknown"


def _read_lines(path, encoding):
    if not path.exists():
        raise InputError(f"missing {path}")
    with open(path, encoding=encoding) as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


# ----------------------------------------------------------------------------------------------
# Reading raw files

def read_atomic(path, required, usecols=None):
    """Read a tab-separated RecBole atomic file, checking the header has the `required` fields.

    pandas' default type inference and NA handling are kept on purpose: the published splits were
    made with a plain pd.read_csv(sep='\\t'), and ids' dtype decides the per-user order.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(f"missing {path}")
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


def check_ratings(frame, path, rating=RATING):
    """Ratings must be finite numbers (missing ones are allowed: SPEC 1.2 drops those rows)."""
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


def parse_movie_titles(path):
    """Netflix movie_titles.csv (ISO-8859-1): 'id,year,title', split on the first two commas only.

    'NULL' years stay the string 'NULL' (the published pipeline did not treat them as missing).
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(f"missing {path} (Netflix Prize data, {MOVIE_TITLES_PAGE})")
    rows = []
    with open(path, encoding="ISO-8859-1") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",", 2)
            try:
                parts[0] = int(parts[0])
            except ValueError:
                raise InputError(f"{path} line {number}: movie id {parts[0]!r} is not an integer") from None
            rows.append(parts + [None] * (3 - len(parts)))
    if not rows:
        raise InputError(f"{path} is empty")
    return pd.DataFrame(rows, columns=[ITEM, "year:token", "title:token"])


def read_netflix_genres(path):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(f"missing {path} (https://github.com/tommasocarraro/netflix-prize-with-genres)")
    try:
        genres = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty") from None
    if genres.shape[1] != 2:
        raise InputError(f"{path}: expected 2 columns (movie id, genres), found {genres.shape[1]}")
    genres.columns = [ITEM, "genres:token"]
    return genres


def filter_by_items(inter, item_tables, path):
    """SPEC 1.2 step 1 without materialising the merge: a left merge on item id followed by
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
        titles = parse_movie_titles(folder / "movie_titles.csv")
        genres = read_netflix_genres(folder / "netflix_genres.csv")
        tables = [(titles, ("year:token", "title:token")), (genres, ("genres:token",))]
    elif info.item_file:
        item_path = folder / info.item_file
        item = read_atomic(item_path, [ITEM, *info.item_columns], usecols=[ITEM, *info.item_columns])
        tables = [(item, info.item_columns)]
    else:
        tables = []
    return filter_by_items(inter, tables, inter_path)[SPLIT_COLUMNS]


# ----------------------------------------------------------------------------------------------
# SPEC 1.2: pure functions on DataFrames

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
    """SPEC 1.2 steps 2-3: iterate until the row count stops changing; returns (positives,
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
    """SPEC 1.2 step 4: per user in ascending id order, perm = permutation(n) from one RNG seeded
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
    """Interactions -> (train_original, validation, test) DataFrames, SPEC 1.2 steps 2-5."""
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
            table[SPLIT_COLUMNS].to_csv(handle, index=False, lineterminator="\n")


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
        if table.empty:  # valid SPEC 1.2 output, but main.py refuses to train on it: say so now
            flag = "--valid_ratio" if split == "validation" else "--test_ratio"
            print(f"warning: the {split} split is empty ({flag} {getattr(options, flag[2:])} of each user's "
                  f"positives rounds down to 0, or no user has 5 positives); main.py cannot evaluate on it",
                  file=sys.stderr)
    tables = {path: table for path, table in zip(outputs, splits) if not (keep_present and path.exists())}
    write_tables_together(tables)
    for path, table in tables.items():
        log(f"wrote {path} ({len(table)} rows)")
    return splits


# ----------------------------------------------------------------------------------------------
# The download command

def download(args, log, warn):
    """`download NAME [--refined]`: present files are checked first (before any network), then
    the missing ones fetched. --refined falls back to raw files + preprocess when the refined
    splits cannot be fetched, and names what is still missing."""
    name = args.name
    if name not in DATASETS:
        raise InputError(f"no known source for dataset {name!r} (known: {', '.join(DATASETS)}); "
                         f"put its RecBole files in {Path(args.data_dir) / name}/ by hand")
    shlex.split(args.pip_args)  # an unbalanced quote fails here, not after the first download
    raw_sources(name, args.source)
    folder = Path(args.data_dir) / name
    log(f"{name} -> {folder}/")
    raw_targets = [folder / f for f in raw_files(name)]
    grouplens_files = DATASETS[name].grouplens_files
    if grouplens_files and all((folder / f).exists() for f in grouplens_files):
        log(f"  GroupLens {', '.join(grouplens_files)} present: the raw files are (or will be) converted "
            f"from them, not RecBole's bytes, so no published checksum applies")
        raw_targets = []
    if args.refined:
        split_targets = [split_path(args.data_dir, name, split) for split in REFINED_SPLITS]
        check_present(split_targets + raw_targets, args.accept_changed, log)
        unusable = download_refined(name, args, log)
    else:
        check_present(raw_targets, args.accept_changed, log)
        download_raw(name, args, log)
        return
    # --refined: also what the LLM stage (refine_llm.py) reads: the item file, which comes with the
    # interactions in one archive, or Netflix-1M's titles and genres alone (its archive is large);
    # with the splits unreachable, preprocess needs the interactions in any case.
    try:
        if unusable or DATASETS[name].item_file:
            download_raw(name, args, log)
        else:
            download_netflix_items(folder, args, log)
    except DownloadError as error:
        if unusable:
            raise DownloadError(f"neither the refined splits ({unusable}; they are at {REFINED_PAGE}{name}) "
                                f"nor the raw files could be fetched: {error}") from None
        warn(f"note: the splits are complete, but not the raw files that refine_llm.py reads: {error}")
        return
    if not unusable:
        return
    if not all(split_path(args.data_dir, name, split).exists() for split in SPLITS):
        log(f"  the refined splits cannot be fetched ({unusable}); building the original splits from the raw "
            f"files instead (SPEC 1.2; for ML-100K byte-identical to the published ones)")
        options = build_parser().parse_args(["preprocess", name, "--data_dir", str(args.data_dir)])
        try:
            preprocess(name, args.data_dir, options, log, keep_present=True)
        except InputError as error:
            raise InputError(f"the refined splits cannot be fetched ({unusable}) and preprocessing the raw "
                             f"files failed: {error}") from None
        for split in SPLITS:
            _report(split_path(args.data_dir, name, split), sha256_of(split_path(args.data_dir, name, split)), log)
    augment = split_path(args.data_dir, name, "train_augment")
    if not augment.exists():
        quoted, dir_flag = shlex.quote(name), f"--data_dir {shlex.quote(str(args.data_dir))}"
        warn(f"note: {augment} is still missing: the authors' LLM-refined train split could not be fetched "
             f"({unusable}); the original splits are there. Either\n"
             f"  save {REFINED_FILE_PAGE}{name}/{augment.name} into {folder}/ and check it with\n"
             f"    python dataloader.py download {quoted} --refined {dir_flag}\n"
             f"  or make it with the LLM step (SPEC 2, needs an LLM backend):\n"
             f"    python refine_llm.py run {quoted} {dir_flag}\n"
             f"  To train on the original split now:\n"
             f"    python main.py --dataset {quoted} {dir_flag} --dataset_augment 0")


# ----------------------------------------------------------------------------------------------
# CLI

EPILOG = """examples:
  python dataloader.py download ML-100K --refined     # the four published split CSVs (+ raw files)
  python dataloader.py download ML-100K               # raw ml-100k.inter / ml-100k.item
  python dataloader.py download ML-100K --source recbole-wheel
  python dataloader.py preprocess ML-100K             # raw files -> the three original splits
  python dataloader.py preprocess MyData --min_user 10

outputs: everything goes to DATA_DIR/NAME/ (DATA_DIR: --data_dir, else $REFINE_DATA_DIR, else
./dataset): downloads as <file>.part until complete and verified, split CSVs renamed into place
together. Reference: docs/data.md; the rules for bad input: docs/bad-input.md."""


def build_parser():
    parser = ArgumentParser(prog="python dataloader.py", formatter_class=HelpFormatter, epilog=EPILOG,
                                     description="Fetch raw or published data; make split CSVs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{download,preprocess}")

    data_dir_help = "folder holding NAME/ (default: $REFINE_DATA_DIR, else ./dataset)"
    down = commands.add_parser(
        "download", formatter_class=HelpFormatter, help="fetch raw RecBole files, or with --refined the published splits",
        description="Fetch the raw files of NAME, or with --refined the authors' split CSVs, into DATA_DIR/NAME/.\n"
                    "Files already there are checked against their published sha256 and kept.",
        epilog="examples:\n  python dataloader.py download ML-100K --refined --data_dir dataset\n"
               "  python dataloader.py download ML-100K --source recbole-wheel --pip_args=\"--index-url URL\"")
    down.add_argument("name", help=f"dataset ({', '.join(DATASETS)})")
    down.add_argument("--refined", action="store_true",
                      help="fetch the authors' split CSVs (train_original/augment, validation, test) and the raw "
                           "files; when the splits cannot be fetched, build the original ones from the raw files")
    down.add_argument("--data_dir", default=default_data_dir(), help=data_dir_help)
    down.add_argument("--source", choices=["auto", *RAW_SOURCES], default="auto",
                      help="where the raw files come from: recbole-wheel (ML-100K: the recbole 1.2.1 wheel via pip), "
                           "recbole-zip (RecBole's bucket), grouplens (converted); auto tries them in that order")
    down.add_argument("--pip_args", default=os.environ.get("REFINE_PIP_ARGS", ""),
                      help="extra options for the `pip download` of --source recbole-wheel, as one string: "
                           "--pip_args=\"--index-url URL\" (your pip configuration applies anyway; "
                           "default: $REFINE_PIP_ARGS, else none)")
    down.add_argument("--accept_changed", action="store_true",
                      help="keep files already present whose sha256 differs from the published file "
                           "(without it that is an error and nothing is changed)")
    down.add_argument("--recbole_url", default=os.environ.get("REFINE_RECBOLE_URL", RECBOLE_URL),
                      help="base URL of RecBole's dataset bucket ($REFINE_RECBOLE_URL)")
    down.add_argument("--grouplens_url", default=os.environ.get("REFINE_GROUPLENS_URL", GROUPLENS_URL),
                      help="base URL of the GroupLens archives ($REFINE_GROUPLENS_URL)")
    down.add_argument("--refined_url", default=os.environ.get("REFINE_REFINED_URL", REFINED_URL),
                      help="base URL of the authors' split CSVs ($REFINE_REFINED_URL)")
    down.add_argument("--genres_url", default=os.environ.get("REFINE_GENRES_URL", GENRES_URL),
                      help="URL of netflix_genres.csv, Netflix-1M only ($REFINE_GENRES_URL)")
    down.add_argument("--movie_titles_url", default=os.environ.get("REFINE_MOVIE_TITLES_URL"),
                      help="a mirror of Netflix movie_titles.csv, if you have one (default: none, "
                           "$REFINE_MOVIE_TITLES_URL)")
    down.add_argument("--no_progress", action="store_true", help="no progress bars on stderr")

    prep = commands.add_parser(
        "preprocess", formatter_class=HelpFormatter, help="raw files in DATA_DIR/NAME/ -> the three split CSVs",
        description="SPEC 1.2: raw files in DATA_DIR/NAME/ -> NAME_train_original.csv, NAME_validation.csv and\n"
                    "NAME_test.csv beside them (written together, or none). The defaults are the published\n"
                    "settings; they reproduce the published ML-100K splits byte for byte.",
        epilog="examples:\n  python dataloader.py preprocess ML-100K\n"
               "  python dataloader.py preprocess MyData --item_file MyData.item --item_columns title:token")
    prep.add_argument("name", help="dataset; another name reads DATA_DIR/NAME/NAME.inter")
    prep.add_argument("--data_dir", default=default_data_dir(), help=data_dir_help)
    prep.add_argument("--positive_threshold", type=float, default=4, help="positive: rating >= this")
    prep.add_argument("--min_user", type=int, default=5, help="k-core: min rows per user")
    prep.add_argument("--min_item", type=int, default=5, help="k-core: min rows per item")
    prep.add_argument("--test_ratio", type=float, default=0.2, help="share of each user's positives in test")
    prep.add_argument("--valid_ratio", type=float, default=0.1, help="share of each user's positives in validation")
    prep.add_argument("--seed", type=int, default=2024, help="numpy seed of the user sample and the split")
    prep.add_argument("--sample_users", type=int, default=None,
                      help="keep N randomly drawn users (default: 5000 for Netflix-1M, else all)")
    prep.add_argument("--drop_unseen_eval_items", type=_yes_no, default=None, metavar="{yes,no}",
                      help="drop validation/test rows whose item has no train positive "
                           "(default: yes for Netflix-1M, as published; no otherwise)")
    prep.add_argument("--duplicates", choices=["error", "keep", "first", "last"], default="error",
                      help="repeated (user, item) rows: error, keep all, or keep the first / last")
    prep.add_argument("--item_file", default=None,
                      help="for other datasets: a RecBole .item file in DATA_DIR/NAME/ to merge "
                           "(default: NAME.item when --item_columns is given, else none)")
    prep.add_argument("--item_columns", nargs="+", default=None,
                      help="for other datasets: item fields that must be present, rows without them are "
                           "dropped (default: none)")
    return parser


def _yes_no(text):
    if text.lower() in ("yes", "true", "1"):
        return True
    if text.lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def main(argv=None):
    args = build_parser().parse_args(argv)

    def warn(message):
        print(message, file=sys.stderr)

    try:
        if args.command == "download":
            download(args, print, warn)
        else:
            if args.item_columns and not args.item_file and args.name not in DATASETS:
                args.item_file = f"{args.name}.item"
            preprocess(args.name, args.data_dir, args, print)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "download":
            what = ("partial downloads are kept as <file>.part and resume when you rerun the same command; "
                    "every file under its final name is complete")
        else:
            what = ("no split file was written or replaced (the three are renamed into place together at "
                    "the end); rerun the same command")
        print(f"error: interrupted; {what}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
