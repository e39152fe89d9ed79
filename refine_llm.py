"""LLM refinement (docs/method.md §2): `<NAME>_train_original.csv` -> `<NAME>_train_augment.csv`.

An LLM reads each user's 5-star titles and a few-shot example, then picks which of the user's
ambiguous (2/3-star) titles were really liked; those become 4.5, the rest 0.5.

    python refine_llm.py run ML-100K --backend hf --model meta-llama/Llama-2-7b-hf --batch_size 16
    python refine_llm.py prompts ML-100K                      # writes dataset/ML-100K/llm/prompts.jsonl
    python refine_llm.py generate ML-100K --backend openai --base_url http://127.0.0.1:8000/v1
    python refine_llm.py apply ML-100K --answers dataset/ML-100K/llm/llama_distinguish_answer.txt
    python refine_llm.py diff mine.csv dataset/ML-100K/ML-100K_train_augment.csv
    python refine_llm.py relabel ML-100K --rule random-matched --out_dir dataset-relabel/random-matched

Stages: `prompts` builds the published prompts, `generate` asks a backend (Hugging Face
transformers, any OpenAI-compatible server through the official `openai` client, completions or
chat, or a replay of saved answers) and appends every answer to a JSONL cache as it arrives (a
rerun resumes), `apply` parses the answers and relabels. `run` does all three; `diff` compares two
augment files; `relabel` relabels the 2/3-star rows by a rule without an LLM (docs/relabel.md).
The work is done by the llm/ package; this file is its command line. The reference is docs/llm.md.
"""
import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import entry
from catalog import SPLITS, default_data_dir, missing_split_message, split_path
from llm.answers import AnswerCache, apply_labels, parse_answers, relabel
from llm.backends import DEFAULT_MODEL, ReplayBackend, TransformersBackend
from llm.data import (ITEM_COL, PRESETS, RATING_COL, USER_COL, get_preset, load_train, naming, output_folder,
                      read_csv_checked, default_skip_users, read_skip_users, user_id)
from llm.generate import generate_answers
from llm.openai_backend import DEFAULT_BASE_URL, DEFAULT_KEY_ENV, OpenAIBackend
from llm.prompts import build_prompts, prompt_hash
from llm.relabel_rules import (RULES, SCOPES, SEEDED, RuleOptions, at_scope, check_scope, default_scope,
                               labels_from_answers, labels_from_augment, per_user_counts)
from utils import ArgumentParser, HelpFormatter, InputError, atomic_write, regular_file

# numpy, pandas, asyncio, openai and transformers are imported inside the functions that need them
# (here and in llm/), so that --help and flag errors answer at once.


def checked(kind, low, low_ok, what):
    """An argparse type: a finite `kind` number above `low` (or equal to it when `low_ok`)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < low or (value == low and not low_ok):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


positive_int = checked(int, 1, True, "a whole number of at least 1")
non_negative_int = checked(int, 0, True, "a whole number of at least 0")
positive_seconds = checked(float, 0, False, "a number of seconds above 0")


def seed_int(text):
    """An argparse type: a seed numpy and torch both take, 0 .. 2**32 - 1."""
    value = non_negative_int(text)
    if value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed from 0 to 2**32 - 1")
    return value

OUTPUTS = ("outputs: OUT_DIR (default DATA_DIR/NAME/llm/) holds prompts.jsonl (prompts stage),\n"
           "answers_cache.jsonl and llama_distinguish_answer.txt (appended as answers arrive) and\n"
           "report.json; apply and run write DATA_DIR/NAME/NAME_train_augment.csv (or --output).\n"
           "Rerunning generate or run resumes: only prompts without a cached answer are asked.\n"
           "Reference: docs/llm.md.")
EXAMPLES = {
    "prompts": "  python refine_llm.py prompts ML-100K --data_dir dataset",
    "generate": ("  python refine_llm.py generate ML-100K --backend hf --model meta-llama/Llama-2-7b-hf --device cuda\n"
                 "  python refine_llm.py generate ML-100K --backend openai --base_url http://127.0.0.1:8000/v1 "
                 "--concurrency 64\n"
                 "  python refine_llm.py generate ML-100K --backend openai --api chat "
                 "--model Qwen/Qwen2.5-7B-Instruct --out_dir dataset/ML-100K/llm-qwen"),
    "apply": "  python refine_llm.py apply ML-100K --answers dataset/ML-100K/llm/llama_distinguish_answer.txt",
    "run": ("  python refine_llm.py run ML-100K --backend openai --base_url https://api.example.com/v1 --api chat \\\n"
            "      --model some-model --api_key_env EXAMPLE_API_KEY --out_dir dataset/ML-100K/llm-some-model \\\n"
            "      --output dataset/ML-100K/some-model_train_augment.csv\n"
            "  python refine_llm.py run ML-100K --backend replay --replay answers_cache.jsonl --out_dir /tmp/replay"),
    "diff": ("  python refine_llm.py diff dataset-qwen/ML-100K/ML-100K_train_augment.csv \\\n"
             "      dataset/ML-100K/ML-100K_train_augment.csv"),
    "relabel": ("  python refine_llm.py relabel ML-100K --rule random-matched \\\n"
                "      --out_dir dataset-relabel/random-matched\n"
                "  python refine_llm.py relabel ML-100K --rule star-threshold --scope all "
                "--out_dir dataset-relabel/star-threshold-all\n"
                "  python refine_llm.py relabel ML-100K --rule collaborative --out_dir dataset-relabel/collaborative "
                "--llm dataset/ML-100K/llm/answers_cache.jsonl\n"
                "  python main.py --dataset ML-100K --data_dir dataset-relabel/random-matched --model lightgcn"),
}
RELABEL_OUTPUTS = ("outputs: OUT_DIR/NAME/ holds NAME_train_augment.csv (the relabelled train file), copies of\n"
                   "NAME_train_original.csv, NAME_validation.csv and NAME_test.csv (so main.py --data_dir OUT_DIR\n"
                   "trains on it), relabel_report.json (totals, agreement with the LLM) and relabel_users.csv\n"
                   "(per user with candidates: candidates, the LLM's 4.5 count, the rule's 4.5 and 0.5 counts,\n"
                   "rows labelled as the LLM labelled them; the LLM's columns empty for users it did not answer).\n"
                   "Each file is written whole or not at all; the train file last, so its presence marks a whole set.\n"
                   "Reference: docs/relabel.md.")


def build_parser():
    parser = ArgumentParser(
        prog="python refine_llm.py", formatter_class=HelpFormatter,
        description="ReFINe LLM refinement: NAME_train_original.csv -> NAME_train_augment.csv.",
        epilog="examples:\n" + "\n".join(EXAMPLES.values()) + "\n\n" + OUTPUTS)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name, help_text, outputs=OUTPUTS):
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                              epilog=f"examples:\n{EXAMPLES[name]}\n\n{outputs}")

    def common(p):
        p.add_argument("name", help="dataset: ML-100K, ML-1M or Netflix-1M")
        p.add_argument("--data_dir", default=default_data_dir(),
                       help="folder holding NAME/ (default: ./dataset, or $REFINE_DATA_DIR when set)")
        p.add_argument("--out_dir", default=None, help="cache, answers file and report (default: DATA_DIR/NAME/llm)")
        p.add_argument("--skip_users", default=None,
                       help="file of user ids not to ask, one a line (default: DATA_DIR/NAME/llm_skip_users.txt "
                            "if present, else the published list for NAME that comes with refine_llm; 'none' "
                            "asks every user)")
        p.add_argument("--max_prompts", type=non_negative_int, default=None,
                       help="only the first N prompts, for trial runs (default: all)")

    def gen(p):
        p.add_argument("--backend", default="hf", choices=["hf", "transformers", "openai", "http", "replay"],
                       help="hf (alias transformers): a local model; openai (alias http): any OpenAI-compatible "
                            "server; replay: saved answers")
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help="hub id or local folder (hf), the server's model name (openai)")
        p.add_argument("--max_total_tokens", type=positive_int, default=5000,
                       help="skip a prompt whose prompt + answer-budget tokens exceed this "
                            "(default: %(default)s, as published)")
        p.add_argument("--no_progress", action="store_true", help="no progress bar")
        hf = p.add_argument_group("hf backend")
        hf.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        hf.add_argument("--dtype", default="float32",
                        help="float32 (as published), bfloat16, float16, float64 or auto")
        hf.add_argument("--batch_size", type=positive_int, default=8, help="prompts per generate call")
        api = p.add_argument_group("openai backend")
        api.add_argument("--base_url", default=DEFAULT_BASE_URL, help="the server's API root, usually ending in /v1")
        api.add_argument("--api", default="completions", choices=["completions", "chat"],
                         help="completions (published: the prompt as is) or chat (the prompt as one user message)")
        api.add_argument("--system", default=None, help="chat: a system message before the prompt (default: none)")
        api.add_argument("--api_key_env", default=DEFAULT_KEY_ENV, metavar="NAME",
                         help="environment variable holding the API key; it is never printed or written "
                              f"(unset {DEFAULT_KEY_ENV}: no key, for local servers)")
        api.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                         help="extra HTTP header for the server, repeatable; values are never written, nor "
                              "sent on after a redirect to another origin (default: none)")
        api.add_argument("--header_env", action="append", default=[], metavar="'NAME: VARIABLE'",
                         help="extra HTTP header whose value is read from environment variable VARIABLE, "
                              "repeatable; keeps the value out of ps and the shell history (default: none)")
        api.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight at most")
        api.add_argument("--timeout", type=positive_seconds, default=600.0, help="seconds per request")
        api.add_argument("--max_retries", type=non_negative_int, default=5,
                         help="retries per request after 408/409/429/5xx, a dropped connection or a timeout, "
                              "with exponential backoff and jitter (Retry-After honoured)")
        api.add_argument("--tokenizer", default=None,
                         help="token counts for the length rule: a tokenizer name or folder, 'server' (the "
                              "server's /tokenize: vLLM, llama.cpp) or 'usage' (the server's usage counts) "
                              "(default: --model's tokenizer with --api completions, usage with --api chat)")
        api.add_argument("--stop", default="vllm", choices=["vllm", "plain", "none"],
                         help="stop at the separator: vllm (with vLLM's include_stop_str_in_output, exact), "
                              "plain (stop only, for servers that refuse unknown fields) or none")
        api.add_argument("--no_stop", dest="stop", action="store_const", const="none",
                         help="same as --stop none (default: off)")
        replay = p.add_argument_group("replay backend")
        replay.add_argument("--replay", default=None,
                            help="answers file or JSONL cache to replay (default: none; needed with --backend replay)")

    def app(p):
        p.add_argument("--output", default=None,
                       help="augment file to write (default: DATA_DIR/NAME/NAME_train_augment.csv)")

    p = stage("prompts", "build the prompts into OUT_DIR/prompts.jsonl")
    common(p)
    p = stage("generate", "ask the LLM; answers cached in OUT_DIR (a rerun resumes)")
    common(p)
    gen(p)
    p = stage("apply", "parse answers and write NAME_train_augment.csv")
    common(p)
    app(p)
    p.add_argument("--answers", default=None,
                   help="answers file or JSONL cache (default: OUT_DIR/llama_distinguish_answer.txt)")
    p = stage("run", "prompts + generate + apply")
    common(p)
    gen(p)
    app(p)
    p = stage("diff", "compare two augment files of the same train_original (relabel counts, agreement)",
              "outputs: a table on stdout; nothing is written.")
    p.add_argument("first", metavar="A.csv", help="an augment file")
    p.add_argument("second", metavar="B.csv", help="another augment file of the same train_original")
    p = stage("relabel", "relabel the 2/3-star train rows by a rule without an LLM, into a data folder of its own",
              RELABEL_OUTPUTS)
    p.add_argument("name", help="dataset, as in DATA_DIR/NAME/")
    p.add_argument("--data_dir", default=default_data_dir(),
                   help="folder holding NAME/ with the three split files (default: ./dataset, or $REFINE_DATA_DIR "
                        "when set)")
    p.add_argument("--rule", required=True, choices=list(RULES),
                   help="random-matched: the LLM's count per user, drawn at random; user-mean: rating >= the "
                        "user's mean; collaborative: the LLM's count per user, LightGCN's top; all-positive, "
                        "all-negative: the bounds; star-threshold: 3 -> 4.5, 2 -> 0.5; llm: the LLM's own "
                        "labels; llm+star-threshold: the LLM's labels on its users, star-threshold on the others")
    p.add_argument("--scope", choices=SCOPES, default=None,
                   help="whose 2/3 rows are candidates: answered (the users the LLM answered) or all (every "
                        "user; not with random-matched, collaborative or llm, which need the LLM's answer) "
                        "(default: answered; all for llm+star-threshold, which refuses answered)")
    p.add_argument("--out_dir", required=True,
                   help="data folder to write NAME/ into; train on it with main.py --data_dir OUT_DIR")
    p.add_argument("--llm", default=None, metavar="FILE",
                   help="the LLM's labels: an augment file (.csv: its 4.5/0.5 rows), or an answers file or JSONL "
                        "cache read as the apply stage reads it (default: DATA_DIR/NAME/NAME_train_augment.csv)")
    p.add_argument("--seed", type=seed_int, default=2024, help="random-matched and collaborative: the seed")
    p.add_argument("--epochs", type=positive_int, default=350,
                   help="collaborative: LightGCN's training epochs (about the mean best epoch of LightGCN on "
                        "ML-100K's original ratings)")
    p.add_argument("--threads", type=positive_int, default=1, help="collaborative: torch threads")
    p.add_argument("--device", default="cpu", help="collaborative: cpu, cuda, cuda:1, auto")
    return parser


def resolve_paths(args):
    """(dataset folder, output folder, the set of user ids not to ask).

    The skip list: --skip_users FILE ("none": nobody), else llm.data.default_skip_users.
    """
    dataset_dir = Path(args.data_dir) / args.name
    out_dir = Path(args.out_dir) if args.out_dir else dataset_dir / "llm"
    if args.skip_users is None:
        skip = default_skip_users(args.data_dir, args.name)
    elif args.skip_users.lower() == "none":
        skip = set()
    else:
        skip = read_skip_users(args.skip_users)
    return dataset_dir, out_dir, skip


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def stage_prompts(args, write=True):
    get_preset(args.name)
    dataset_dir, out_dir, skip = resolve_paths(args)
    train, joined = load_train(args.data_dir, args.name)
    if not joined[RATING_COL].isin([2, 3]).any():
        raise InputError(f"{dataset_dir}/{args.name}_train_original.csv has no 2- or 3-star rows: nothing to refine")
    jobs = build_prompts(joined, args.name, skip)
    if args.max_prompts is not None:
        jobs = jobs[:args.max_prompts]
    if write:
        with naming(out_dir / "prompts.jsonl"), atomic_write(out_dir / "prompts.jsonl", encoding="utf-8") as handle:
            for job in jobs:
                handle.write(json.dumps({"user": job.user, "chunk": job.chunk, "hash": prompt_hash(job.prompt1),
                                         "prompt1": job.prompt1, "prompt2": job.prompt2}, ensure_ascii=False) + "\n")
        print(f"{plural(len(jobs), 'prompt')} for {plural(len({j.user for j in jobs}), 'user')} "
              f"({plural(len(skip), 'user')} in the skip list) -> {out_dir / 'prompts.jsonl'}")
    return train, joined, jobs, out_dir


def make_backend(args):
    if args.backend in ("hf", "transformers"):
        return TransformersBackend(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    if args.backend in ("openai", "http"):
        parts = urlsplit(args.base_url)
        try:
            valid = parts.scheme in ("http", "https") and parts.hostname and (parts.port or True)
        except ValueError:  # a port that is not a number
            valid = False
        if not valid:  # not echoed: a URL may carry a password
            raise InputError(f"--base_url: expected http(s)://HOST[:PORT]/PATH, such as {DEFAULT_BASE_URL}")
        if args.system and args.api != "chat":
            raise InputError("--system needs --api chat (the completions API has no system message)")
        return OpenAIBackend(args.base_url, args.model, api=args.api, system=args.system,
                             api_key_env=args.api_key_env, headers=args.header,
                             header_env=args.header_env, tokenizer=args.tokenizer,
                             concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                             stop=args.stop)
    if not args.replay:
        raise InputError("--backend replay needs --replay FILE")
    return ReplayBackend(args.replay)


def stage_generate(args, jobs, out_dir, stop):
    backend = make_backend(args)
    cache = AnswerCache(out_dir, backend.model_id, getattr(backend, "api_tag", "completions"))
    if cache.ignored:
        print(f"note: {cache.ignored} cached answer(s) from another model or API kind ignored", file=sys.stderr)
    stop.set(f"every answer received is in {cache.path}; rerun the same command to resume "
             f"(it asks only prompts without an answer)")
    started = time.time()
    try:
        final, tally = generate_answers(jobs, backend, cache, args.max_total_tokens, progress=not args.no_progress)
    except InputError as err:
        raise InputError(f"{err}; every answer received so far is in {cache.path}: rerun the same command "
                         f"to resume") from None
    finally:
        cache.close()
    seconds = time.time() - started
    with_usage = tally.with_usage > 0
    report = {"dataset": args.name, "backend": args.backend, "model": backend.model_id,
              "api": getattr(backend, "api_tag", None), "base_url": getattr(backend, "shown_url", None),
              "prompts": len(jobs), "users": len({j.user for j in jobs}),
              "answered": tally.answered, "answered_with_prompt2": tally.answered_with_prompt2,
              "skipped_too_long": tally.skipped_too_long, "hallucinated": tally.hallucinated,
              "missing": tally.missing, "from_cache": tally.from_cache, "asked": tally.asked,
              "users_answered": len({k[0] for k, r in final.items() if r is not None and r["status"] == "answered"}),
              "prompt_tokens": tally.usage_prompt_tokens if with_usage else None,
              "completion_tokens": tally.usage_completion_tokens if with_usage else None,
              "requests_retried": tally.requests_retried, "retries": tally.retries,
              "seconds": round(seconds, 3),
              "prompts_per_second": round(tally.asked / seconds, 3) if seconds > 0 else None,
              "answers_file": str(cache.txt_path), "cache_file": str(cache.path)}
    with naming(out_dir / "report.json"), atomic_write(out_dir / "report.json", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    tokens = (f"; {report['prompt_tokens']:,} prompt + {report['completion_tokens']:,} completion tokens"
              if with_usage else "")
    print(f"{report['prompts']} prompts: {report['answered']} answered "
          f"({report['answered_with_prompt2']} with prompt 2), {report['skipped_too_long']} skipped (too long), "
          f"{report['hallucinated']} hallucinated (no ']'), {report['missing']} missing; "
          f"{report['from_cache']} from cache, {report['asked']} asked in {seconds:.1f} s"
          f" ({plural(report['requests_retried'], 'request')} retried){tokens}")
    return report


def augment_path(args):
    return Path(args.output) if args.output else Path(args.data_dir) / args.name / f"{args.name}_train_augment.csv"


def write_augment(path, augmented):
    """An augment file as the published ones are written (the bytes the reproduction tests compare)."""
    with naming(path), atomic_write(path, encoding="utf-8", newline="") as handle:
        augmented.to_csv(handle, index=False)


def stage_apply(args, train, joined, answers_path):
    output = augment_path(args)
    liked = parse_answers(answers_path)
    if not liked:
        raise InputError(f"{answers_path} holds no parsable answer (no answer line starting with '['); "
                         f"{output} was left unchanged")
    liked = answered_train_users(liked, train, answers_path, split_path(args.data_dir, args.name, "train_original"),
                                 output)
    augmented = relabel(train, joined["title"].to_numpy(), liked)
    write_augment(output, augmented)
    counts = augmented[RATING_COL].value_counts()
    print(f"{plural(len(liked), 'user')} answered; {int(counts.get(4.5, 0))} rows -> 4.5, "
          f"{int(counts.get(0.5, 0))} rows -> 0.5, {int(augmented[RATING_COL].isin([2, 3]).sum())} left 2/3 "
          f"-> {output}")
    return output


def answered_train_users(liked, train, answers_path, train_path, output):
    """The answers of users the train file has: none of them there is an InputError (answers of another
    dataset or split, which would relabel nothing), some missing a note naming them; the count printed
    is then the users whose rows were relabelled."""
    users = {user_id(user) for user in train[USER_COL].to_numpy()}
    absent = [user for user in liked if user not in users]
    if len(absent) == len(liked):
        raise InputError(f"{answers_path}: none of its {plural(len(liked), 'answered user')} ({few(absent)}) is in "
                         f"{train_path}; give the answers made from this dataset's train file; {output} was "
                         f"left unchanged")
    if absent:
        print(f"note: {plural(len(absent), 'answered user')} of {answers_path} not in {train_path}, their answers "
              f"unused: {few(absent)}", file=sys.stderr)
    return {user: titles for user, titles in liked.items() if user in users}


def few(users, shown=10) -> str:
    """'7, 8, 9' or '7, 8, ... (12 in all)': users named in a message without flooding it."""
    names = ", ".join(str(user) for user in list(users)[:shown])
    return names if len(users) <= shown else f"{names}, ... ({len(users)} in all)"


def compare_augments(frames, names):
    """Relabel counts of two augment files of one train_original and how far they agree, as a dict;
    InputError if they differ in a way a relabel cannot explain. `names` name them in messages."""
    import numpy as np

    first, second = frames
    keys = [frame[[USER_COL, ITEM_COL]].to_numpy() for frame in frames]
    if keys[0].shape != keys[1].shape or not (keys[0] == keys[1]).all():
        raise InputError(f"{names[0]} and {names[1]} do not list the same (user, item) rows in the same "
                         f"order: compare augment files made from one train_original")
    ratings = [frame[RATING_COL].to_numpy(dtype=float) for frame in frames]
    relabelled = [np.isin(r, (0.5, 4.5)) for r in ratings]
    # Outside the relabelled rows both must hold train_original's rating; a relabel replaces a 2 or 3.
    clash = np.where(relabelled[0] & relabelled[1], False,
                     np.where(relabelled[0], ~np.isin(ratings[1], (2, 3)),
                              np.where(relabelled[1], ~np.isin(ratings[0], (2, 3)), ratings[0] != ratings[1])))
    if clash.any():
        line = int(np.flatnonzero(clash)[0]) + 2
        raise InputError(f"{names[0]} and {names[1]} differ at line {line} in a way a relabel cannot "
                         f"explain: compare augment files made from one train_original")
    both = relabelled[0] & relabelled[1]
    return {"users relabelled": [len(np.unique(f[USER_COL].to_numpy()[m])) for f, m in zip(frames, relabelled)],
            "rows -> 4.5": [int((r == 4.5).sum()) for r in ratings],
            "rows -> 0.5": [int((r == 0.5).sum()) for r in ratings],
            "2/3 rows left": [int(np.isin(r, (2, 3)).sum()) for r in ratings],
            "relabelled in both": int(both.sum()),
            "same label": int((both & (ratings[0] == ratings[1])).sum()),
            "A 4.5 / B 0.5": int((both & (ratings[0] == 4.5) & (ratings[1] == 0.5)).sum()),
            "A 0.5 / B 4.5": int((both & (ratings[0] == 0.5) & (ratings[1] == 4.5)).sum()),
            "relabelled in A only": int((relabelled[0] & ~relabelled[1]).sum()),
            "relabelled in B only": int((relabelled[1] & ~relabelled[0]).sum())}


def print_comparison(names, result):
    """compare_augments' result as the diff stage's table."""
    print(f"A: {names[0]}\nB: {names[1]}")
    print(f"{'':18} {'A':>8} {'B':>8}")
    for label in ("users relabelled", "rows -> 4.5", "rows -> 0.5", "2/3 rows left"):
        a, b = result[label]
        print(f"{label:18} {a:>8} {b:>8}")
    both, same = result["relabelled in both"], result["same label"]
    share = f"{100 * same / both:.1f}%" if both else "-"
    print(f"rows relabelled in both: {both}, same label {same} ({share}); "
          f"A 4.5 / B 0.5: {result['A 4.5 / B 0.5']}, A 0.5 / B 4.5: {result['A 0.5 / B 4.5']}")
    print(f"rows relabelled in A only: {result['relabelled in A only']}, "
          f"in B only: {result['relabelled in B only']}")


def stage_diff(args):
    """Relabel counts of two augment files of one train_original, and how far they agree."""
    names = (args.first, args.second)
    frames = [read_csv_checked(path, [USER_COL, ITEM_COL, RATING_COL]) for path in names]
    print_comparison(names, compare_augments(frames, names))


def relabel_input(args, scope):
    """The LLM's labels (llm.relabel_rules.RelabelInput) from --llm with the candidates of `scope`,
    after the checks of the inputs."""
    source = Path(args.data_dir) / args.name
    message = missing_split_message(args.data_dir, args.name, SPLITS)
    if message:  # the validation and test files are copied beside the relabelled train file
        raise InputError(message)
    llm_path = Path(args.llm) if args.llm else split_path(args.data_dir, args.name, "train_augment")
    regular_file(llm_path, f"the LLM's labels not found: {llm_path}: give --llm, an augment file made by the "
                           f"apply stage (or the published one), an answers file or a JSONL cache")
    if llm_path.suffix.lower() == ".csv":
        train_path = split_path(args.data_dir, args.name, "train_original")
        train = read_csv_checked(train_path, [USER_COL, ITEM_COL, RATING_COL])
        if train.empty:  # else blamed on the augment file, whose rows it then lacks
            raise InputError(f"{train_path} has a header and no rows: give the dataset's train_original split "
                             f"(python dataloader.py download {args.name} --refined)")
        data = labels_from_augment(train, llm_path)
    elif args.name not in PRESETS:  # apply's titles: only the datasets with an item file have them
        raise InputError(f"--llm {llm_path}: an answers file (or cache) is read against item titles, which this "
                         f"project has for {', '.join(PRESETS)} only, not {args.name}; give --llm the augment file "
                         f"made from the answers instead ({split_path(args.data_dir, args.name, 'train_augment')})")
    else:
        data = labels_from_answers(args.data_dir, args.name, llm_path)
    data = at_scope(data, scope)
    if not data.candidates.any():
        whose = "no answered user has" if scope == "answered" else "no user has"
        raise InputError(f"{llm_path}: {whose} a 2 or 3 star row in {source}: nothing to relabel")
    return data, llm_path


def stage_relabel(args, stop, show=True):
    """A rule's choice among the candidates of --scope -> OUT_DIR/NAME/, a data folder main.py trains
    on; its report as a dict. `show`: print the summary and the table against the LLM's labels."""
    import shutil

    scope = args.scope or default_scope(args.rule)
    check_scope(args.rule, scope)
    target = Path(args.out_dir) / args.name
    output_folder(target, "--out_dir")
    if target.resolve() == (Path(args.data_dir) / args.name).resolve():
        raise InputError(f"--out_dir {args.out_dir} is --data_dir: the relabelled file would replace the "
                         f"LLM's; give a folder of its own (such as dataset-relabel/{args.rule})")
    if args.rule == "collaborative":
        import devices  # torch: only for the rule that trains

        devices.resolve_device(args.device)  # an unusable --device now, not after loading
    data, llm_path = relabel_input(args, scope)
    options = RuleOptions(seed=args.seed, epochs=args.epochs, threads=args.threads, device=args.device,
                          data_dir=Path(args.data_dir), name=args.name)
    picked = RULES[args.rule](data, options)
    ours = apply_labels(data.train, data.candidates, picked)
    llm = apply_labels(data.train, data.llm_candidates, data.llm_picked)
    names = (f"{args.rule}, scope {scope} ({target / (args.name + '_train_augment.csv')})",
             f"the LLM's labels ({llm_path})")
    agreement = compare_augments([ours, llm], names)

    stop.set(f"each file in {target} is whole or absent (written atomically); rerun the same command")
    for split in ("train_original", "validation", "test"):
        path = split_path(args.out_dir, args.name, split)
        with naming(path), atomic_write(path, "wb") as handle, \
                open(split_path(args.data_dir, args.name, split), "rb") as original:
            shutil.copyfileobj(original, handle)
    users = per_user_counts(data, picked)
    with naming(target / "relabel_users.csv"), \
            atomic_write(target / "relabel_users.csv", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "candidates", "llm_4.5", "rule_4.5", "rule_0.5", "same_as_llm"])
        writer.writerows(users)
    report = {"rule": args.rule, "scope": scope, "dataset": args.name, "llm_labels": str(llm_path),
              "seed": args.seed if args.rule in SEEDED else None,
              "epochs": args.epochs if args.rule == "collaborative" else None,
              "users_relabelled": len(users), "candidates": int(data.candidates.sum()),
              "llm_users": sum(row[2] != "" for row in users), "llm_candidates": int(data.llm_candidates.sum()),
              # agreement is counted on the rows both labelled; these the LLM left as 2/3
              "relabelled_without_llm_label": agreement["relabelled in A only"],
              "rows_4.5": agreement["rows -> 4.5"][0], "rows_0.5": agreement["rows -> 0.5"][0],
              "llm_rows_4.5": agreement["rows -> 4.5"][1], "llm_rows_0.5": agreement["rows -> 0.5"][1],
              "same_label_as_llm": agreement["same label"],
              "rule_4.5_llm_0.5": agreement["A 4.5 / B 0.5"], "rule_0.5_llm_4.5": agreement["A 0.5 / B 4.5"]}
    with naming(target / "relabel_report.json"), \
            atomic_write(target / "relabel_report.json", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    # Last: the train file's presence marks a whole set (experiments.py makes a set when it is missing).
    write_augment(split_path(args.out_dir, args.name, "train_augment"), ours)
    if show:
        print(f"{args.rule} (scope {scope}): {plural(len(users), 'user')} relabelled; {report['rows_4.5']} rows "
              f"-> 4.5, {report['rows_0.5']} rows -> 0.5 -> {split_path(args.out_dir, args.name, 'train_augment')}")
        print_comparison(names, agreement)
        print(f"train on it: python main.py --dataset {args.name} --data_dir {args.out_dir}")
    return report


def run_stage(args, stop):
    """The stage's work; `stop` says, as it goes, what a Ctrl-C or SIGTERM leaves behind."""
    if args.stage == "diff":
        stage_diff(args)
        return
    if args.stage == "relabel":
        stage_relabel(args, stop)
        return
    # A file where an output folder must go: said now, not at the first write.
    if args.stage != "apply":
        output_folder(resolve_paths(args)[1], "--out_dir")
    if args.stage in ("apply", "run"):
        output_folder(augment_path(args).parent, "--output")
    if args.stage == "prompts":
        stop.set("prompts.jsonl is written only when complete; rerun the same command")
        stage_prompts(args)
    elif args.stage == "apply":
        stop.set(f"{augment_path(args)} is replaced only when complete; rerun the same command")
        get_preset(args.name)
        _, out_dir, _ = resolve_paths(args)
        train, joined = load_train(args.data_dir, args.name)
        answers = Path(args.answers) if args.answers else out_dir / "llama_distinguish_answer.txt"
        regular_file(answers, f"answers file not found: {answers}")
        stage_apply(args, train, joined, answers)
    else:
        stop.set("nothing was asked yet; rerun the same command")
        train, joined, jobs, out_dir = stage_prompts(args, write=False)
        stage_generate(args, jobs, out_dir, stop)
        if args.stage == "run":
            stop.set(f"every answer is in {out_dir / 'answers_cache.jsonl'} and {augment_path(args)} is replaced "
                     f"only when complete; rerun the same command (it asks nothing more)")
            stage_apply(args, train, joined, out_dir / "llama_distinguish_answer.txt")


def main(argv=None):
    args = build_parser().parse_args(argv)
    stop = entry.Stop("nothing was written; rerun the same command")
    return entry.run_script(lambda: run_stage(args, stop), stop)


if __name__ == "__main__":
    entry.check_packages()
    entry.install_stop_handlers()
    sys.exit(main())
