"""The dataset vocabulary, each fact defined once: names, split columns and files, sources, checksums.

    python -c "import catalog; print(list(catalog.DATASETS))"

Imported by download.py, preprocess.py, dataloader.py, splits.py, main.py, refine_llm.py and
experiments.py. It imports nothing heavy, so that `--help` and flag errors of every script answer
at once. (Not named datasets.py: that would shadow Hugging Face's `datasets` package, which
transformers probes for and then imports.)
"""
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Columns of the split CSVs and of RecBole's atomic files (docs/method.md §1.1).
USER, ITEM, RATING = "user_id:token", "item_id:token", "rating:float"
SPLIT_COLUMNS = [USER, ITEM, RATING]
SPLITS = ("train_original", "validation", "test")
REFINED_SPLITS = ("train_original", "train_augment", "validation", "test")

RECBOLE_URL = "https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets/"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
REFINED_URL = "https://raw.githubusercontent.com/Chanwoo-Jeong-2000/ReFINe_plus/main/dataset/"
# HEAD resolves to the repository's default branch on raw.githubusercontent.com.
GENRES_URL = ("https://raw.githubusercontent.com/tommasocarraro/netflix-prize-with-genres/HEAD/"
              "netflix_genres.csv")
GENRES_PAGE = "https://github.com/tommasocarraro/netflix-prize-with-genres"
REFINED_PAGE = "https://github.com/Chanwoo-Jeong-2000/ReFINe_plus/tree/main/dataset/"
MOVIE_TITLES_PAGE = "https://www.kaggle.com/datasets/netflix-inc/netflix-prize-data"
# The authors' training logs: <base>/ReFINe/main/results4comparison/ReFINe_<NAME>.out (ReFINe) and
# <base>/ReFINe_plus/main/results4comparison/<NAME>.log (ReFINe++).
PUBLISHED_URL = "https://raw.githubusercontent.com/Chanwoo-Jeong-2000"
# sha256 of files whose published bytes we know (measured on the published files). Other
# downloads are not checked, only their sha256 is printed.
EXPECTED_SHA256 = {
    "ML-100K_train_original.csv": "95cdb054ed18553543fc3cc265388087fb99307a44e54d759dfaaa331913002e",
    "ML-100K_train_augment.csv": "b50f8938679dbba9f570714c816c21ba92e90cfa264295b47d0900b8769d71bf",
    "ML-100K_validation.csv": "7cfd6f78cfade304e7c8e1d1c1fde9150f06262ba98dc092c0eef0cf90cf4b6a",
    "ML-100K_test.csv": "a9fddd2989c4fa7fd0d1c5fd7d308472eda4c44d8472d814dcbbebb45f8eb69b",
    "ML-1M_validation.csv": "e71400059ba92a017bab25114321621c6bc07889c78788b195402a02f44908dc",
    "ML-1M_test.csv": "827ff3ec5c2544f8ddba7c00d19488d4d6b6a41c96aeb6778916d15ce509bd79",
    "Netflix-1M_validation.csv": "70a3ea4011b304d4e5fa3967e8af5fabcff27247e5e101b0516fb761efb2e34f",
    "Netflix-1M_test.csv": "267129901366d86f77e90312c37a85bb74c3bf283aa51ce0f1cacbfdff06cb45",
    "Amazon_Digital_Music_train_augment.csv": "1d55dfa2c803d610f45e09e95901e8a09ef7f1d02537c1ec8d4b52cdf19f37e0",
    "Amazon_Digital_Music_train_original.csv": "20ee22c48d0f8f8ab90ff65b7db34c0e2df6876675e0c83aaeb635b6fa39508b",
    "Amazon_Digital_Music_validation.csv": "3154ffd6188684d0b05da52f9b1d0b9c6f04b235d5139cf3c9987db56ecc2e82",
    "Amazon_Digital_Music_test.csv": "bfb54456fe442f82278cda02ef77a3e399facf613da8642288c71dda744fbcd1",
    "Amazon_Books_validation.csv": "4cfda9d651a1148f93ff5f7882ff948fcfd502e649216221191b5db50cd05fc8",
    # members of RecBole's ml-100k.zip (the raw files the published ML-100K splits come from)
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}

# Sizes in bytes of the files above whose published bytes we hold: a download of one stops as soon
# as it is longer (a server sending without end). Every other file with a known sha256 stops at
# MAX_CHECKED_BYTES, far above any of them (docs/data.md).
EXPECTED_SIZE = {
    "ML-100K_train_original.csv": 778150, "ML-100K_train_augment.csv": 937516, "ML-100K_validation.csv": 48833,
    "ML-100K_test.csv": 102327, "ml-100k.inter": 1979230, "ml-100k.item": 66632,
    "Amazon_Digital_Music_train_original.csv": 1004410, "Amazon_Digital_Music_train_augment.csv": 1004410,
    "Amazon_Digital_Music_validation.csv": 58717, "Amazon_Digital_Music_test.csv": 188095,
}
MAX_CHECKED_BYTES = 512 * 2 ** 20

# The authors' logs, by file name (docs/compare.md).
PUBLISHED_LOG_SHA256 = {
    "ReFINe_ML-100K.out": "9a8699e1e918ae278f99946288871dccf9acc2351140b333eee8e2f05e8178e5",
    "ReFINe_ML-1M.out": "f80c9886960a9c8a5313d0cb198a4cfb1f46975ce91ed1ae07f326b081fdf66c",
    "ReFINe_Netflix-1M.out": "eee00352cd226fab4d58be900d3150f0b296f73b5774dec555132d7eda4a9896",
    "ML-100K.log": "469370c41c098a17f7aa44765b340c41410f571261c8426a844feacfffa8a5e5",
    "ML-1M.log": "aa068ca51459980a15709bfe4bfa2ab85a7702a50c2e3028877c7fa9be1100aa",
    "Netflix-1M.log": "43836d8605235322c5e93c13ffddc4571dd56ab8da4901bc15a9689f79d2e252",
    "Amazon-Music.log": "dd948cb0ca01d6d135c5bebf5e13436721041c4adfa70d0e90ccd06be8a9b3ad",
    "Amazon-Book.log": "96a903658a0bd85a8a122b1dbd27c5bde4f72ae68e9491d82df407b82e1c8637",
}

# The recbole wheel on the package index carries RecBole's ml-100k.inter and ml-100k.item,
# byte-identical to the members of its ml-100k.zip (same sha256 as above).
RECBOLE_WHEEL = "recbole==1.2.1"

# Where raw files come from. Default order, for the datasets each source has:
# 1. recbole-wheel: the package index is the one source every user of this tool has reached
#    (requirements.txt installs from it), pip applies the user's index, proxy and certificate
#    settings, and the two files are checked against the published sha256;
# 2. recbole-zip: RecBole's own bucket, the source docs/method.md §1.1 names; it has answered
#    "Access Denied" before (RecBole issue 2218);
# 3. grouplens: the original archive, converted here; last because the converted .item differs
#    from RecBole's in a few titles (docs/data.md), which no checksum can vouch for.
RAW_SOURCES = ("recbole-wheel", "recbole-zip", "grouplens")

# Netflix-1M's item side: not RecBole files, read by preprocess.read_movie_titles / read_netflix_genres.
NETFLIX_TITLES, NETFLIX_GENRES = "movie_titles.csv", "netflix_genres.csv"


@dataclass(frozen=True)
class PromptPreset:
    """What differs between the three published refinement notebooks (docs/method.md §2)."""
    label: str              # dataset name inside the prompt
    chunk_size: int         # real candidates per prompt
    reseed_per_user: bool   # Netflix re-seeds numpy with 2024 for every user
    prompt2_header: str     # "Candidate list:" in ML-100K's prompt 2, "Candidate List:" elsewhere
    title_col: str
    genre_col: str


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset's raw files come from, how docs/method.md §1.2 reads them, and its published runs."""
    inter_file: str
    item_file: str | None          # RecBole .item file merged on item id (None: Netflix, Amazon)
    item_columns: tuple            # item fields that must be present (§1.2 step 1)
    recbole_zip: str | None        # path under the RecBole bucket
    grouplens_zip: str | None = None
    grouplens_files: tuple = ()    # the GroupLens archive's ratings and item files, converted
    sample_users: int = 0          # §1.1: Netflix-1M keeps 5,000 sampled users
    drop_unseen_eval_items: bool = False
    extra_files: tuple = field(default_factory=tuple)
    wheel_folder: str | None = None  # folder of the raw files inside the recbole wheel
    published_r: int | None = None   # ReFINe's `--r` in the published runs
    refine_log: bool = False         # the authors published ReFINe_<NAME>.out
    plus_log: str | None = None      # name of the authors' ReFINe++ log, <plus_log>.log
    prompts: PromptPreset | None = None  # the LLM stage's prompt facts (None: no published prompts)


DATASETS = {
    "ML-100K": DatasetInfo("ml-100k.inter", "ml-100k.item",
                           ("movie_title:token_seq", "release_year:token", "class:token_seq"),
                           "MovieLens/ml-100k.zip", grouplens_zip="ml-100k.zip",
                           grouplens_files=("u.data", "u.item"),
                           wheel_folder="recbole/dataset_example/ml-100k/",
                           published_r=100, refine_log=True, plus_log="ML-100K",
                           prompts=PromptPreset("MovieLens-100K", 5, False, "Candidate list:",
                                                "movie_title:token_seq", "class:token_seq")),
    "ML-1M": DatasetInfo("ml-1m.inter", "ml-1m.item",
                         ("movie_title:token_seq", "release_year:token", "genre:token_seq"),
                         "MovieLens/ml-1m.zip", grouplens_zip="ml-1m.zip",
                         grouplens_files=("ratings.dat", "movies.dat"),
                         published_r=250, refine_log=True, plus_log="ML-1M",
                         prompts=PromptPreset("MovieLens-1M", 5, False, "Candidate List:",
                                              "movie_title:token_seq", "genre:token_seq")),
    # The authors' Netflix notebook also drops validation/test rows whose item has no train
    # positive; docs/method.md §1.2 step 6. The published Netflix-1M files were made that way.
    "Netflix-1M": DatasetInfo("netflix.inter", None,
                              ("year:token", "title:token", "genres:token"),
                              "Netflix/netflix.zip", sample_users=5000,
                              drop_unseen_eval_items=True,
                              extra_files=(NETFLIX_TITLES, NETFLIX_GENRES),
                              published_r=300, refine_log=True, plus_log="Netflix-1M",
                              prompts=PromptPreset("Netflix", 10, True, "Candidate List:",
                                                   "title:token", "genres:token")),
    # ReFINe++ only: ratings without titles, so the LLM stage cannot run on them here; the
    # authors' refined splits are fetched with --refined.
    "Amazon_Digital_Music": DatasetInfo("Amazon_Digital_Music.inter", None, (),
                                        "Amazon_ratings/Amazon_Digital_Music.zip", plus_log="Amazon-Music"),
    "Amazon_Books": DatasetInfo("Amazon_Books.inter", None, (),
                                "Amazon_ratings/Amazon_Books.zip", plus_log="Amazon-Book"),
}

# Views of DATASETS: the published `--r` per dataset (experiments.py passes it), and the datasets
# whose published LLM prompts the LLM stage can rebuild.
PUBLISHED_R = {name: info.published_r for name, info in DATASETS.items() if info.published_r}
PROMPT_PRESETS = {name: info.prompts for name, info in DATASETS.items() if info.prompts}


def default_data_dir():
    """--data_dir's default everywhere: $REFINE_DATA_DIR, else ./dataset."""
    return os.environ.get("REFINE_DATA_DIR", "dataset")


def run_splits(augment: bool) -> tuple[str, str, str]:
    """The three splits a run reads: the LLM-refined train split (--dataset_augment 1) or the original
    one, then validation and test."""
    return ("train_augment" if augment else "train_original", "validation", "test")


def split_path(data_dir, name, split):
    """<data_dir>/<name>/<name>_<split>.csv, the one file-name rule for split CSVs."""
    return Path(data_dir) / name / f"{name}_{split}.csv"


# What to do when a folder or a special file stands where a split file belongs (utils.regular_file's fix).
SPLIT_IN_THE_WAY = "put the split file there, or give the folder that holds it with --data_dir"


def original_ratings_command(name, dir_flag=""):
    """The main.py command that trains ReFINe on the original ratings (no LLM-refined train file), as
    the README's reference run of it: `--r` as published, one thread, the shipped log's --path_name."""
    r = f" --r {PUBLISHED_R[name]}" if name in PUBLISHED_R else ""
    return (f"python main.py --dataset {shlex.quote(name)}{' ' + dir_flag if dir_flag else ''}{r} "
            f"--dataset_augment 0 --threads 1 --path_name refine_original")


def missing_split_message(data_dir, name, splits=REFINED_SPLITS):
    """One-line message naming missing split files and the commands that create them, each with
    the user's --data_dir; None if all of `splits` exist. load_splits raises it for main.py."""
    missing = [split_path(data_dir, name, s) for s in splits if not split_path(data_dir, name, s).exists()]
    if not missing:
        return None
    quoted, dir_flag = shlex.quote(name), f"--data_dir {shlex.quote(str(data_dir))}"
    refined = f"`python dataloader.py download {quoted} --refined {dir_flag}`"
    augment_only = [p.name for p in missing] == [f"{name}_train_augment.csv"]
    if augment_only and split_path(data_dir, name, "train_original").exists():
        how = (f"train on the original split now with `{original_ratings_command(name, dir_flag)}`, "
               f"or make it with the LLM step `python refine_llm.py run {quoted} {dir_flag}`, "
               f"or fetch the authors' file with {refined}")
    else:
        how = (f"get the published splits with {refined}, or build them from raw RecBole files with "
               f"`python dataloader.py download {quoted} {dir_flag}` then "
               f"`python dataloader.py preprocess {quoted} {dir_flag}`")
        if any(p.name.endswith("_train_augment.csv") for p in missing):
            how += f" and `python refine_llm.py run {quoted} {dir_flag}` (makes _train_augment.csv)"
    return f"missing {', '.join(str(p) for p in missing)}: {how}"


def published_logs(name):
    """The authors' logs of dataset `name` (or of a ReFINe++ log name such as Amazon-Music):
    {"published": file name, "published-plus": file name}, each where it exists."""
    for dataset, info in DATASETS.items():
        if name in (dataset, info.plus_log):
            logs = {"published": f"ReFINe_{dataset}.out"} if info.refine_log else {}
            if info.plus_log:
                logs["published-plus"] = f"{info.plus_log}.log"
            return logs
    return {}


def published_log_url(base, file_name):
    """Where the authors keep a log: ReFINe's under ReFINe/, ReFINe++'s under ReFINe_plus/."""
    repository = "ReFINe" if file_name.endswith(".out") else "ReFINe_plus"
    return f"{base.rstrip('/')}/{repository}/main/results4comparison/{file_name}"
