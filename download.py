"""Raw and published data from the network: the sources, the `download` command and the authors' logs
(each file fetched by http_fetch.py, with resume and sha256).

    python dataloader.py download ML-100K --refined        # published splits, ready to train
    python dataloader.py download ML-100K                  # raw RecBole atomic files

Files go to <data_dir>/<NAME>/ (data_dir: --data_dir, else $REFINE_DATA_DIR, else ./dataset).
Every file whose published sha256 is known (catalog.EXPECTED_SHA256) is checked, files already
present included. docs/data.md is the reference (sources, checksums).
"""
import contextlib
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from catalog import (DATASETS, EXPECTED_SHA256, GENRES_PAGE, GROUPLENS_URL, ITEM, MOVIE_TITLES_PAGE, NETFLIX_GENRES,
                     NETFLIX_TITLES, PUBLISHED_LOG_SHA256, PUBLISHED_URL, RATING, RAW_SOURCES, RECBOLE_WHEEL,
                     REFINED_PAGE, REFINED_SPLITS, REFINED_URL, SPLITS, USER, original_ratings_command,
                     published_log_url, published_logs, split_path)
from http_fetch import DownloadError, DownloadInterrupted, fetch
from utils import InputError, atomic_write, check_output_path, regular_file, sha256_of

# GroupLens u.genre, in flag order (u.item carries 19 0/1 genre flags).
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


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
    """Fetch the raw files docs/method.md §1.1 names for `name` into <data_dir>/<name>/; files present are
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
    """Netflix-1M's item side (docs/method.md §1.1): netflix_genres.csv, and movie_titles.csv from a mirror
    when one is given (the original needs a Kaggle login)."""
    genres = folder / NETFLIX_GENRES
    if genres.exists():
        log(f"  {genres} already present, skipped")
    else:
        try:
            _report(genres, fetch(args.genres_url, genres, None, not args.no_progress), log)
        except DownloadError as error:
            raise DownloadError(f"{error}. Download {NETFLIX_GENRES} by hand from {GENRES_PAGE} "
                                f"into {folder}/") from None
    titles = folder / NETFLIX_TITLES
    if titles.exists():
        log(f"  {titles} already present, skipped")
    elif args.movie_titles_url:
        _report(titles, fetch(args.movie_titles_url, titles, None, not args.no_progress), log)
    else:
        log(f"  still needed: {NETFLIX_TITLES} from the Netflix Prize data ({MOVIE_TITLES_PAGE}, "
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
    the item is not dropped by docs/method.md §1.2 step 1 (RecBole writes 'unkonwn' for ML-100K item 267)."""
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
# The download command

def download(args, log, warn):
    """`download NAME [--refined]`: present files are checked first (before any network), then
    the missing ones fetched. --refined falls back to raw files + preprocess when the refined
    splits cannot be fetched, and names what is still missing."""
    name = args.name
    if name not in DATASETS:
        raise InputError(f"no known source for dataset {name!r} (known: {', '.join(DATASETS)}); "
                         f"put its RecBole files in {Path(args.data_dir) / name}/ by hand")
    try:  # an unbalanced quote fails here, not after the first download
        shlex.split(args.pip_args)
    except ValueError as exc:
        raise InputError(f"--pip_args {args.pip_args!r}: cannot split it into pip's arguments ({exc}); "
                         f"check its quotes") from None
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
    # with the splits unreachable, preprocess needs the interactions in any case. The Amazon
    # datasets have no item side: with their splits fetched, nothing else is needed.
    try:
        if unusable or DATASETS[name].item_file:
            download_raw(name, args, log)
        elif DATASETS[name].extra_files:
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
            f"files instead (docs/method.md §1.2; for ML-100K byte-identical to the published ones)")
        import preprocess

        try:
            preprocess.preprocess(name, args.data_dir, preprocess.default_options(), log, keep_present=True)
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
             f"  save {REFINED_URL}{name}/{augment.name} into {folder}/ and check it with\n"
             f"    python dataloader.py download {quoted} --refined {dir_flag}\n"
             f"  or make it with the LLM step (docs/method.md §2, needs an LLM backend):\n"
             f"    python refine_llm.py run {quoted} {dir_flag}\n"
             f"  To train on the original split now:\n"
             f"    {original_ratings_command(name, dir_flag)}")


# ----------------------------------------------------------------------------------------------
# The authors' logs

# Kept here once fetched (git-ignored), so that `diff` works on them too.
PUBLISHED_DIR = Path(__file__).resolve().parent / "results4comparison" / "published"
LOG_KINDS = ("published", "published-plus")  # compare.py's published:NAME (ReFINe), published-plus:NAME


def published_log(file_name, base_url=None, progress=False):
    """Path of the authors' log `file_name` under PUBLISHED_DIR, fetched on first use and checked
    by sha256 every time: a changed file is refused (a download that differs is not kept)."""
    known, dest = PUBLISHED_LOG_SHA256[file_name], PUBLISHED_DIR / file_name
    if dest.exists():
        regular_file(dest, "", "move it away and rerun to fetch the published log")
        sha = sha256_of(dest)
        if sha != known:
            raise InputError(f"{dest} differs from the published log (sha256 {sha}, published {known}); "
                             f"delete it and rerun to fetch it again")
        return dest
    url = published_log_url(base_url or os.environ.get("REFINE_PUBLISHED_URL", PUBLISHED_URL), file_name)
    try:
        fetch(url, dest, known, progress)
    except DownloadInterrupted:
        raise
    except DownloadError as error:
        with contextlib.suppress(OSError):
            PUBLISHED_DIR.rmdir()  # leave no empty folder behind (only removed if empty)
        raise DownloadError(f"{error}; fetch {url} by hand and save it as {dest} "
                            f"(create its folder first: mkdir -p {shlex.quote(str(PUBLISHED_DIR))})") from None
    return dest


def published_log_for(kind, name, base_url=None):
    """compare.py's `published:NAME` / `published-plus:NAME` -> the path of that log (fetched once)."""
    logs = published_logs(name)
    if kind not in logs:
        known = [f"{k}:{n}" for n in DATASETS for k in published_logs(n)]
        raise InputError(f"{kind}:{name}: no such published log (known: {', '.join(known)})")
    return published_log(logs[kind], base_url)


def download_published_logs(name, base_url, log, warn):
    """`download NAME` also fetches NAME's published logs; one that cannot be had is a note, not a
    failure (the data is what the command is for): one note names them all."""
    failed = []
    for kind, file_name in published_logs(name).items():
        try:
            path = published_log(file_name, base_url)
        except DownloadInterrupted:
            raise
        except InputError as error:
            failed.append((f"{kind}:{name}", error))
        else:
            log(f"  {path}  sha256 verified (published log; `python compare.py {kind}:{name} LOG`)")
    if failed:
        warn(f"note: the published logs {', '.join(label for label, _ in failed)} are not there: "
             + "; ".join(str(error) for _, error in failed))
