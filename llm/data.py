"""The LLM stage's inputs: train_original joined with item titles and genres, the skip lists.

    python -c "from llm.data import load_train; print(load_train('dataset', 'ML-100K')[1].head())"
"""
import contextlib
import re
from pathlib import Path

from catalog import (ITEM, MOVIE_TITLES_PAGE, NETFLIX_GENRES, NETFLIX_TITLES, PROMPT_PRESETS, RATING, USER,
                     missing_split_message)
from utils import InputError, regular_file

# The dataset vocabulary lives in catalog.py; these are the LLM stage's names for it.
USER_COL, ITEM_COL, RATING_COL = USER, ITEM, RATING
PRESETS = PROMPT_PRESETS


def get_preset(name):
    if name not in PRESETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------
# Data: train_original joined with titles and genres


def output_folder(folder, what):
    """InputError if a file stands where `folder` or one of its parents must be a folder; else `folder`.

    Checked before any work, so a run does not fail at its first write.
    """
    folder = Path(folder)
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                raise InputError(f"{what} {folder}: {place} is a file, not a folder; move it or choose another path")
            break
    return folder


@contextlib.contextmanager
def naming(path):
    """An OSError inside that the OS did not tie to a file (a failed flush: disk full) names `path`."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def read_csv_checked(path, columns, **read_kwargs):
    """Read a CSV and check it has `columns`; missing file or column -> one-line InputError."""
    import pandas as pd

    path = regular_file(path, f"file not found: {path}")
    try:
        frame = pd.read_csv(path, **read_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def missing_item_file_message(path, name, data_dir):
    """A missing item file: where it comes from, with the user's own --data_dir in the command."""
    fetch = f"`python dataloader.py download {name} --data_dir {data_dir}`"
    if Path(path).name == NETFLIX_TITLES:
        return (f"file not found: {path}: it is part of the Netflix Prize data ({MOVIE_TITLES_PAGE}, needs a "
                f"Kaggle login); put it in {Path(path).parent}/ ({fetch} says the same and fetches the genres)")
    return (f"file not found: {path}: the item file comes with the raw data; {fetch} fetches the raw files, "
            f"the item file among them (the split CSVs are left alone)")


def read_item_titles(dataset_dir, name, preset):
    """Item id -> title, genre from the raw item file(s) of docs/method.md §1.1."""
    dataset_dir = Path(dataset_dir)
    if name == "Netflix-1M":
        titles_path, genres_path = dataset_dir / NETFLIX_TITLES, dataset_dir / NETFLIX_GENRES
        for path in (titles_path, genres_path):
            regular_file(path, missing_item_file_message(path, name, dataset_dir.parent))
        from preprocess import read_movie_titles, read_netflix_genres  # the one reader of each file

        titles = read_movie_titles(titles_path)[[ITEM_COL, preset.title_col]]
        genres = read_netflix_genres(genres_path).rename(columns={"genres:token": preset.genre_col})
        items = titles.merge(genres, on=ITEM_COL, how="left")
    else:
        item_path = dataset_dir / f"{name.lower()}.item"
        regular_file(item_path, missing_item_file_message(item_path, name, dataset_dir.parent))
        items = read_csv_checked(item_path, [ITEM_COL, preset.title_col, preset.genre_col], sep="\t")
        items = items[[ITEM_COL, preset.title_col, preset.genre_col]]
    if items[ITEM_COL].duplicated().any():
        dup = items.loc[items[ITEM_COL].duplicated(), ITEM_COL].iloc[0]
        raise InputError(f"item file(s) in {dataset_dir} list item {dup} more than once")
    return items


def load_train(data_dir, name):
    """Return (train_original as read, same rows with `title` and `genre` columns)."""
    preset = get_preset(name)
    dataset_dir = Path(data_dir) / name
    train_path = dataset_dir / f"{name}_train_original.csv"
    if not train_path.exists():
        raise InputError(missing_split_message(data_dir, name, ("train_original",)))
    train = read_csv_checked(train_path, [USER_COL, ITEM_COL, RATING_COL])
    if preset.title_col in train.columns and preset.genre_col in train.columns:
        # The notebooks' own train_original already carried the item columns.
        joined = train.copy()
    else:
        items = read_item_titles(dataset_dir, name, preset)
        joined = train.merge(items, on=ITEM_COL, how="left")
    joined = joined.rename(columns={preset.title_col: "title", preset.genre_col: "genre"})
    missing = joined["title"].isna() | joined["genre"].isna()
    if missing.any():
        item = joined.loc[missing, ITEM_COL].iloc[0]
        raise InputError(f"{missing.sum()} train row(s) have no title or genre in the item file(s) "
                         f"of {dataset_dir} (first: item {item})")
    joined["title"] = joined["title"].astype(str)
    joined["genre"] = joined["genre"].astype(str)
    return train, joined


def user_id(value):
    """A user id as the LLM stage keeps it: an int when it is all digits (MovieLens, Netflix), else
    its text (Amazon's `A1B2C3`), so ids from the train file, a skip list and an answers file compare
    equal whatever file they came from."""
    text = str(value).strip()
    return int(text) if re.fullmatch(r"\d+", text) else text


def shipped_skip_list(name):
    """The published skip list that comes with this package for dataset `name`, or None."""
    path = Path(__file__).parent / "skip_users" / f"{name}.txt"
    return path if path.is_file() else None


def default_skip_users(data_dir, name):
    """The users not to ask when the user names no list: DATA_DIR/NAME/llm_skip_users.txt, else the
    published one shipped in llm/skip_users/ (without it the prompts after the first skipped user
    differ from the published ones, as one random stream shuffles every user's lists in turn)."""
    user_file = Path(data_dir) / name / "llm_skip_users.txt"
    path = user_file if user_file.exists() else shipped_skip_list(name)
    return read_skip_users(path) if path else set()


def read_skip_users(path):
    """One user id per line; blank lines and `#` comment lines ignored."""
    path = regular_file(path, f"skip list not found: {path}")
    users = set()
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text and not text.startswith("#"):
            if len(text.split()) > 1:
                raise InputError(f"{path}:{line_no}: {text[:80]!r} is not one user id (one id per line)")
            users.add(user_id(text))
    return users
