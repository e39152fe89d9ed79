"""The data commands: `download` (raw or published files) and `preprocess` (raw files -> split CSVs).

    python dataloader.py download ML-100K --refined      # fetch the published refined splits
    python dataloader.py preprocess ML-100K              # raw RecBole files -> split CSVs

The commands' work is in download.py and preprocess.py, and the reading of split CSVs into tensors
in splits.py; this file keeps the published entry point.
"""
import sys

if __name__ == "__main__":
    # first, before any other import: a Ctrl-C or SIGTERM from here on ends in one line (entry.run_script)
    import entry

    entry.install_stop_handlers()
    entry.check_packages()

import argparse  # noqa: E402
import os  # noqa: E402

import download  # noqa: E402
import entry  # noqa: E402
import http_fetch  # noqa: E402
import preprocess  # noqa: E402
from catalog import (DATASETS, GENRES_URL, GROUPLENS_URL, PUBLISHED_URL, RAW_SOURCES, RECBOLE_URL, REFINED_URL,
                     default_data_dir)
from utils import ArgumentParser, HelpFormatter  # noqa: E402

# ----------------------------------------------------------------------------------------------
# The command line. It comes before the imports of numpy, pandas and torch below, so that --help
# and a flag error answer at once.

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
        "download", formatter_class=HelpFormatter,
        help="fetch raw RecBole files, or with --refined the published splits",
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
    down.add_argument("--published_url", default=os.environ.get("REFINE_PUBLISHED_URL", PUBLISHED_URL),
                      help="base URL of the authors' repositories, for their logs (kept in "
                           "results4comparison/published/; $REFINE_PUBLISHED_URL)")
    down.add_argument("--no_progress", action="store_true", help="no progress bars on stderr")

    prep = commands.add_parser(
        "preprocess", formatter_class=HelpFormatter, help="raw files in DATA_DIR/NAME/ -> the three split CSVs",
        description="docs/method.md §1.2: raw files in DATA_DIR/NAME/ -> NAME_train_original.csv, "
                    "NAME_validation.csv and\n"
                    "NAME_test.csv beside them (written together, or none). The defaults are the published\n"
                    "settings; they reproduce the published ML-100K splits byte for byte.",
        epilog="examples:\n  python dataloader.py preprocess ML-100K\n"
               "  python dataloader.py preprocess MyData --item_file MyData.item --item_columns title:token")
    prep.add_argument("name", help="dataset; another name reads DATA_DIR/NAME/NAME.inter")
    prep.add_argument("--data_dir", default=default_data_dir(), help=data_dir_help)
    prep.add_argument("--positive_threshold", type=float, help="positive: rating >= this")
    prep.add_argument("--min_user", type=int, help="k-core: min rows per user")
    prep.add_argument("--min_item", type=int, help="k-core: min rows per item")
    prep.add_argument("--test_ratio", type=float, help="share of each user's positives in test")
    prep.add_argument("--valid_ratio", type=float, help="share of each user's positives in validation")
    prep.add_argument("--seed", type=int, help="numpy seed of the user sample and the split")
    prep.add_argument("--sample_users", type=int,
                      help="keep N randomly drawn users (default: 5000 for Netflix-1M, else all)")
    prep.add_argument("--drop_unseen_eval_items", type=_yes_no, metavar="{yes,no}",
                      help="drop validation/test rows whose item has no train positive "
                           "(default: yes for Netflix-1M, as published; no otherwise)")
    prep.add_argument("--duplicates", choices=["error", "keep", "first", "last"],
                      help="repeated (user, item) rows: error, keep all, or keep the first / last")
    prep.add_argument("--item_file",
                      help="for other datasets: a RecBole .item file in DATA_DIR/NAME/ to merge "
                           "(default: NAME.item when --item_columns is given, else none)")
    prep.add_argument("--item_columns", nargs="+",
                      help="for other datasets: item fields that must be present, rows without them are "
                           "dropped (default: none)")
    prep.set_defaults(**preprocess.DEFAULTS)  # the published settings, defined in preprocess.py
    return parser


def _yes_no(text):
    if text.lower() in ("yes", "true", "1"):
        return True
    if text.lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def download_command(args):
    def warn(message):
        print(message, file=sys.stderr)

    for flag in ("recbole_url", "grouplens_url", "refined_url", "genres_url", "movie_titles_url", "published_url"):
        # before any work; the variable is named too, the value may come from there
        http_fetch.refuse_credentials(getattr(args, flag), f"--{flag} (or ${('REFINE_' + flag).upper()})")
    download.download(args, print, warn)
    download.download_published_logs(args.name, args.published_url, print, warn)


def preprocess_command(args):
    if args.item_columns and not args.item_file and args.name not in DATASETS:
        args.item_file = f"{args.name}.item"
    preprocess.preprocess(args.name, args.data_dir, args, print)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "download":
        stop = entry.Stop("partial downloads are kept as <file>.part and resume when you rerun the same command; "
                          "every file under its final name is complete")
        return entry.run_script(lambda: download_command(args), stop)
    stop = entry.Stop("no split file was written or replaced (the three are renamed into place together at "
                      "the end); rerun the same command")
    return entry.run_script(lambda: preprocess_command(args), stop)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
