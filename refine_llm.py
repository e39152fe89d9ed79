"""LLM refinement (SPEC section 2): `<NAME>_train_original.csv` -> `<NAME>_train_augment.csv`.

An LLM reads each user's 5-star titles and a few-shot example, then picks which of the user's
ambiguous (2/3-star) titles were really liked; those become 4.5, the rest 0.5.

    python refine_llm.py run ML-100K --backend hf --model meta-llama/Llama-2-7b-hf --batch_size 16
    python refine_llm.py prompts ML-100K                      # writes dataset/ML-100K/llm/prompts.jsonl
    python refine_llm.py generate ML-100K --backend openai --base_url http://127.0.0.1:8000/v1
    python refine_llm.py apply ML-100K --answers dataset/ML-100K/llm/llama_distinguish_answer.txt

Stages: `prompts` builds the published prompts, `generate` asks a backend (Hugging Face
transformers, an OpenAI-compatible completions server, or a replay of saved answers) and appends
every answer to a JSONL cache as it arrives (a rerun resumes), `apply` parses the answers and
relabels. `run` does all three.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep import ITEM as ITEM_COL, RATING as RATING_COL, USER as USER_COL
from utils import InputError, atomic_write

SEPARATOR = "-" * 45
ANSWER_HEADER = "LLaMA's cut recommendation for user {user}:"
DEFAULT_MODEL = "meta-llama/Llama-2-7b-hf"
SEED = 2024
INSTRUCTIONS = (
    "Based on the User's Positively Rated Movie List, analyze the user's preferences and patterns.\n"
    "You will be provided with Candidate List, which includes movie titles and genres that the user "
    "has rated both positively and negatively.\n"
    "Your task is to strictly select movies and provide only the movie titles from Candidate List "
    "that the user is most likely to have rated positively."
)


@dataclass(frozen=True)
class DatasetPreset:
    """What differs between the three published refinement notebooks."""
    label: str              # dataset name inside the prompt
    chunk_size: int         # real candidates per prompt
    reseed_per_user: bool   # Netflix re-seeds numpy with 2024 for every user
    prompt2_header: str     # "Candidate list:" in ML-100K's prompt 2, "Candidate List:" elsewhere
    title_col: str
    genre_col: str


PRESETS = {
    "ML-100K": DatasetPreset("MovieLens-100K", 5, False, "Candidate list:",
                             "movie_title:token_seq", "class:token_seq"),
    "ML-1M": DatasetPreset("MovieLens-1M", 5, False, "Candidate List:",
                           "movie_title:token_seq", "genre:token_seq"),
    "Netflix-1M": DatasetPreset("Netflix", 10, True, "Candidate List:", "title:token", "genres:token"),
}


def get_preset(name):
    if name not in PRESETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------
# Data: train_original joined with titles and genres


def read_csv_checked(path, columns, **read_kwargs):
    """Read a CSV and check it has `columns`; missing file or column -> one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        frame = pd.read_csv(path, **read_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def read_item_titles(dataset_dir, name, preset):
    """Item id -> title, genre from the raw item file(s) of SPEC 1.1."""
    dataset_dir = Path(dataset_dir)
    if name == "Netflix-1M":
        titles_path, genres_path = dataset_dir / "movie_titles.csv", dataset_dir / "netflix_genres.csv"
        if not titles_path.is_file():
            raise InputError(f"file not found: {titles_path}")
        rows = []
        # Titles contain commas: split on the first two only (id, year, title).
        with open(titles_path, encoding="ISO-8859-1") as handle:
            for line_no, line in enumerate(handle, 1):
                parts = line.rstrip("\r\n").split(",", 2)
                if len(parts) != 3:
                    raise InputError(f"{titles_path}:{line_no}: expected 'id,year,title'")
                try:
                    rows.append((int(parts[0]), parts[2]))
                except ValueError:
                    raise InputError(f"{titles_path}:{line_no}: item id {parts[0]!r} is not an integer") from None
        titles = pd.DataFrame(rows, columns=[ITEM_COL, preset.title_col])
        genres = read_csv_checked(genres_path, [])
        if genres.shape[1] < 2:
            raise InputError(f"{genres_path}: expected two columns (item id, genres)")
        genres = genres.iloc[:, :2]
        genres.columns = [ITEM_COL, preset.genre_col]
        items = titles.merge(genres, on=ITEM_COL, how="left")
    else:
        item_path = dataset_dir / f"{name.lower()}.item"
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


def read_skip_users(path):
    """One user id per line; blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"skip list not found: {path}")
    users = set()
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                users.add(int(line))
            except ValueError:
                raise InputError(f"{path}:{line_no}: {line.strip()!r} is not a user id") from None
    return users


# ----------------------------------------------------------------------------------------------
# Prompts (pure)


def render_list(entries):
    """Render like numpy prints a 1-D object array with unlimited line width (the notebooks' str.format)."""
    with np.printoptions(linewidth=sys.maxsize):
        return str(np.array(list(entries), dtype=object))


def title_only(entry):
    """`<Title (genre: X)>` -> `<Title>`, as the notebooks' few-shot answer rewrite."""
    return re.sub(r"\s*\(genre:.*$", ">", entry)


def prompt1_text(label, pos5, example, few_shot, chunk):
    """Prompt 1 of SPEC 2 with already rendered lists."""
    block = f"{INSTRUCTIONS}\n\nCandidate List:\n"
    return (f"\nThis dataset is from the {label} dataset.\n\n"
            f"User's Positively Rated Movie List:\n"
            f"The following list includes movie titles and genres that the user has rated positively:\n"
            f"{pos5}\n\n{SEPARATOR}\n\n"
            f"{block}{example}\n\nOutput (Answer):\n{few_shot}\n\n{SEPARATOR}\n\n"
            f"{block}{chunk}\n\nOutput (Answer):\n")


def prompt2_text(label, header, pos5, example, few_shot, chunk):
    """Prompt 2 (fallback): dataset line and instructions before each block, positives repeated."""
    intro = (f"This dataset is from the {label} dataset.\n{INSTRUCTIONS}\n\n"
             f"User's Positively Rated Movie List:\n{pos5}\n\n{header}\n")
    return (f"\n{intro}{example}\n\nOutput (Answer):\n{few_shot}\n\n{SEPARATOR}\n\n"
            f"{intro}{chunk}\n\nOutput (Answer):\n")


@dataclass(frozen=True)
class PromptJob:
    user: int
    chunk: int
    prompt1: str
    prompt2: str


def user_prompts(user, rows, preset, rng):
    """Prompts of one user. `rows`: (rating, title, genre) in popularity order; `rng` a RandomState.

    Mirrors the notebooks: the example list is shuffled before the real list, both with the same
    global RNG; the few-shot answer keeps example entries whose text equals a 4-star entry.
    """
    entries = {r: [] for r in (5, 4, 3, 2, 1)}
    ratings = []
    for rating, title, genre in rows:
        ratings.append(rating)
        if rating in entries:
            entries[rating].append(f"<{title} (genre: {genre})>")
    mean_rating = np.mean(np.asarray(ratings, dtype=float))
    if mean_rating >= 3:
        example, real = entries[4] + entries[2] + entries[1], list(entries[3])
    else:
        example, real = entries[4] + entries[1], entries[3] + entries[2]
    example, real = np.array(example, dtype=object), np.array(real, dtype=object)
    rng.shuffle(example)  # draws depend only on the length, so dtype is irrelevant
    rng.shuffle(real)
    pos4 = set(entries[4])
    few_shot = [title_only(e) for e in example if e in pos4]
    size = preset.chunk_size
    # The notebooks ask an empty list `[]` when a user has no real candidates (users 34, 225, 583,
    # 688 of ML-100K were relabelled this way).
    chunks = [real[i:i + size] for i in range(0, len(real), size)] if len(real) > size else [real]
    pos5_s, example_s, few_s = render_list(entries[5]), render_list(example), render_list(few_shot)
    jobs = []
    for index, chunk in enumerate(chunks):
        chunk_s = render_list(chunk)
        jobs.append(PromptJob(
            int(user), index,
            prompt1_text(preset.label, pos5_s, example_s, few_s, chunk_s),
            prompt2_text(preset.label, preset.prompt2_header, pos5_s, example_s, few_s, chunk_s)))
    return jobs


def build_prompts(joined, name, skip_users=()):
    """Every prompt of the dataset, users ascending; skipped users draw nothing from the RNG."""
    preset = get_preset(name)
    users = joined[USER_COL].to_numpy()
    items = joined[ITEM_COL].to_numpy()
    counts = pd.Series(items).map(pd.Series(items).value_counts()).to_numpy()
    # Stable sort by (user asc, popularity desc): ties keep the file order, like pandas' lexsort.
    order = np.lexsort((-counts, users))
    rows = joined.iloc[order]
    rng = np.random.RandomState(SEED)
    skip = set(int(u) for u in skip_users)
    jobs = []
    for user, group in rows.groupby(USER_COL, sort=True):
        if int(user) in skip:
            continue
        if preset.reseed_per_user:
            rng = np.random.RandomState(SEED)
        triples = zip(group[RATING_COL].to_numpy(), group["title"].to_numpy(), group["genre"].to_numpy())
        jobs.extend(user_prompts(user, triples, preset, rng))
    return jobs


def prompt_hash(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Length rule, cut rule (pure)


def budget_text(prompt):
    """Text from the second "Candidate List:" on, whose token count is the generation budget.

    Upstream searched the exact string; ML-100K's prompt 2 spells it "Candidate list:", so upstream
    found no second match there and crashed (UnboundLocalError). We match case-insensitively.
    """
    starts = [m.start() for m in re.finditer("candidate list:", prompt, flags=re.IGNORECASE)]
    if len(starts) < 2:
        raise ValueError("prompt has no second 'Candidate List:'")
    return prompt[starts[1]:]


def cut_response(full_text, prompt, prompt_no):
    """Published cut: keep lines up to the 3rd (prompt 1) / 2nd (prompt 2) separator line, strip.

    Returns (response, answer): `response` is what the `]` check looks at, `answer` the part
    written to the answers file (`response[len(prompt)-1:]`, the prompt's leading newline being
    stripped).
    """
    max_separators = 2 if prompt_no == 1 else 1
    kept, seen = [], 0
    for line in full_text.split("\n"):
        if SEPARATOR in line:
            seen += 1
            if seen > max_separators:
                break
        kept.append(line)
    response = "\n".join(kept).strip()
    return response, response[len(prompt) - 1:]


# ----------------------------------------------------------------------------------------------
# Backends: token_lengths(requests) -> [(prompt_tokens, budget_tokens)]; generate(requests) yields
# (request, full_text or None) as answers arrive.


@dataclass(frozen=True)
class Request:
    user: int
    chunk: int
    prompt_no: int
    prompt: str
    key: str            # prompt hash
    max_new_tokens: int = 0


class TransformersBackend:
    """Any local causal-LM folder or hub id, greedy, batched with left padding."""

    def __init__(self, model, device="auto", dtype="float32", batch_size=8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model_id = str(model)
        self.batch_size = max(1, int(batch_size))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        try:
            torch_dtype = getattr(torch, dtype)
        except AttributeError:
            raise InputError(f"unknown --dtype {dtype!r}") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(device)
        except Exception as err:  # noqa: BLE001 - any loader failure is a user-facing input problem
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"cannot load model {model!r}: {message}") from None
        self.model.eval()
        self.device = device
        self.tokenizer.padding_side = "left"
        # Upstream passed pad_token_id = eos when the tokenizer has no pad token (Llama-2).
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def token_lengths(self, requests):
        prompts = [r.prompt for r in requests]
        full = self.tokenizer(prompts)["input_ids"]
        sub = self.tokenizer([budget_text(p) for p in prompts])["input_ids"]
        return [(len(a), len(b)) for a, b in zip(full, sub)]

    def generate(self, requests):
        torch = self.torch
        # Similar lengths share a batch, so little padding.
        ordered = sorted(requests, key=lambda r: len(r.prompt))
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start:start + self.batch_size]
            enc = self.tokenizer([r.prompt for r in batch], return_tensors="pt", padding=True).to(self.device)
            width = enc["input_ids"].shape[1]
            stop = _SeparatorStop(self.tokenizer, width, [r.max_new_tokens for r in batch])
            with torch.no_grad():
                out = self.model.generate(
                    **enc, max_new_tokens=max(r.max_new_tokens for r in batch),
                    do_sample=False, num_beams=1, pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=[stop])
            for row, request in enumerate(batch):
                prompt_ids = enc["input_ids"][row][enc["attention_mask"][row].bool()]
                new_ids = out[row, width:width + stop.finished_at(row, out.shape[1] - width)]
                # Decode prompt + answer together, as upstream did, so the len(prompt) slice matches.
                text = self.tokenizer.decode(torch.cat([prompt_ids, new_ids]), skip_special_tokens=True)
                yield request, text


class _SeparatorStop:
    """Per-sequence stop: after its own token budget, or once its new text holds the separator.

    Stopping at the separator is exact: the cut rule drops that line and everything after it.
    """

    def __init__(self, tokenizer, prompt_width, limits):
        self.tokenizer, self.width, self.limits = tokenizer, prompt_width, limits
        self.done_at = [None] * len(limits)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        n_new = input_ids.shape[1] - self.width
        for row, limit in enumerate(self.limits):
            if self.done_at[row] is not None:
                continue
            # The separator is 45 characters, so it lies within the last 64 tokens.
            tail = input_ids[row, max(self.width, input_ids.shape[1] - 64):]
            if n_new >= limit or SEPARATOR in self.tokenizer.decode(tail, skip_special_tokens=True):
                self.done_at[row] = n_new
        return torch.tensor([d is not None for d in self.done_at], device=input_ids.device)

    def finished_at(self, row, generated):
        return self.done_at[row] if self.done_at[row] is not None else generated


class OpenAIBackend:
    """Any OpenAI-compatible /v1/completions server (vLLM, llama.cpp server, Ollama)."""

    def __init__(self, base_url, model, tokenizer=None, concurrency=16, timeout=600.0, stop=True):
        self.base_url = base_url.rstrip("/")
        self.model_id = str(model)
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout
        self.stop = stop
        self.tokenizer = None
        if tokenizer != "server":
            name = tokenizer or model
            try:
                from transformers import AutoTokenizer
                self.tokenizer = AutoTokenizer.from_pretrained(name)
            except Exception as err:  # noqa: BLE001
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"cannot load tokenizer {name!r} (or pass --tokenizer server): {message}") from None

    def _post(self, url, payload):
        data = json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            body = err.read().decode("utf-8", "replace").strip().replace("\n", " ")[:200]
            raise InputError(f"server at {url} answered HTTP {err.code}: {body}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise InputError(f"cannot reach completions server at {url}: {reason}") from None
        except json.JSONDecodeError:
            raise InputError(f"server at {url} did not answer JSON") from None

    def _count_on_server(self, text):
        root = re.sub(r"/v1$", "", self.base_url)
        # vLLM reads model/prompt/add_special_tokens, llama.cpp reads content/add_special.
        body = self._post(f"{root}/tokenize", {"model": self.model_id, "prompt": text, "content": text,
                                               "add_special_tokens": True, "add_special": True})
        if "count" in body:
            return int(body["count"])
        if "tokens" in body:
            return len(body["tokens"])
        raise InputError(f"{root}/tokenize answered without 'count' or 'tokens'")

    def token_lengths(self, requests):
        prompts = [r.prompt for r in requests]
        subs = [budget_text(p) for p in prompts]
        if self.tokenizer is not None:
            full = self.tokenizer(prompts)["input_ids"]
            sub = self.tokenizer(subs)["input_ids"]
            return [(len(a), len(b)) for a, b in zip(full, sub)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            full = list(pool.map(self._count_on_server, prompts))
            sub = list(pool.map(self._count_on_server, subs))
        return list(zip(full, sub))

    def _complete(self, request):
        payload = {"model": self.model_id, "prompt": request.prompt, "max_tokens": request.max_new_tokens,
                   "temperature": 0, "top_p": 1, "n": 1}
        if self.stop:
            payload.update(stop=[SEPARATOR], include_stop_str_in_output=True)
        body = self._post(f"{self.base_url}/completions", payload)
        try:
            choice = body["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise InputError(f"{self.base_url}/completions answered without choices[0].text") from None
        if self.stop and SEPARATOR not in text and choice.get("stop_reason") == SEPARATOR:
            # Server stopped on the separator but left it out: put it back so the cut drops its line.
            text += SEPARATOR
        return request, request.prompt + text

    def generate(self, requests):
        first_error = None
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._complete, r) for r in requests]
            try:
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except InputError as err:
                        # Stop sending, but still hand over answers already in flight, so a
                        # rerun does not ask them again.
                        if first_error is None:
                            first_error = err
                            for pending in futures:
                                pending.cancel()
                        continue
                    except CancelledError:
                        continue
                    yield result
            finally:
                for future in futures:
                    future.cancel()
        if first_error is not None:
            raise first_error


class ReplayBackend:
    """Answers from a saved JSONL cache (exact, by prompt hash) or a published answers file.

    In a published answers file a user's k-th block is taken as the answer to chunk k.
    """

    def __init__(self, path):
        self.model_id = f"replay:{Path(path).name}"
        self.records, self.blocks = {}, {}
        if is_jsonl(path):
            for rec in read_cache_records(path):
                self.records[(rec["user"], rec["chunk"], rec["prompt"], rec["hash"])] = rec
        else:
            for user, text in read_answer_blocks(path):
                self.blocks.setdefault(user, []).append(text)

    def _record(self, r):
        return self.records.get((r.user, r.chunk, r.prompt_no, r.key))

    def token_lengths(self, requests):
        out = []
        for r in requests:
            rec = self._record(r)
            out.append((rec.get("prompt_tokens", 0), rec.get("budget_tokens", 0)) if rec else (0, 0))
        return out

    def generate(self, requests):
        for r in requests:
            rec = self._record(r)
            if rec is not None:
                yield r, r.prompt + rec["answer"]
            elif not self.records and r.prompt_no == 1 and r.chunk < len(self.blocks.get(r.user, [])):
                yield r, r.prompt + self.blocks[r.user][r.chunk]
            else:
                yield r, None


# ----------------------------------------------------------------------------------------------
# Answer files


def is_jsonl(path):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"answers file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def read_cache_records(path):
    """Records of a JSONL cache; a torn last line (killed mid-write) is ignored."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and {"user", "chunk", "prompt", "hash", "status"} <= rec.keys():
                records.append(rec)
    return records


def read_answer_blocks(path):
    """(user, text) per block of a published answers file."""
    blocks, user, lines = [], None, []
    pattern = re.compile(r"^LLaMA's cut recommendation for user (\d+):\s*$")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = pattern.match(line.strip())
            if match:
                if user is not None:
                    blocks.append((user, "\n".join(lines).strip("\n")))
                user, lines = int(match.group(1)), []
            elif user is not None:
                lines.append(line.rstrip("\n"))
    if user is not None:
        blocks.append((user, "\n".join(lines).strip("\n")))
    return blocks


def format_answer_block(user, answer):
    """One block of the published answers file (`llama_distinguish_answer.txt`)."""
    return ANSWER_HEADER.format(user=user) + "\n" + answer + "\n" * 6


def clean_title(title):
    return re.sub(r"\s\(genre:.*\)", "", title).strip()


def parse_answer_lines(lines, user, liked):
    """Published parsing: every line starting with `[` adds its `<...>` titles (maybe none) for `user`."""
    for line in lines:
        line = line.strip()
        if line.startswith("["):
            # setdefault even for `[]`: upstream's defaultdict made such users count as answered.
            liked.setdefault(user, set()).update(clean_title(t) for t in re.findall(r"<([^>]+)>", line))


def parse_answers(path):
    """user -> set of titles the LLM called positive, from an answers file or a JSONL cache."""
    liked = {}
    if is_jsonl(path):
        latest = {}
        for rec in read_cache_records(path):
            if rec["status"] == "answered":
                latest[(rec["user"], rec["chunk"])] = rec
        for (user, _), rec in sorted(latest.items()):
            parse_answer_lines(rec["answer"].split("\n"), int(user), liked)
        return liked
    header = "LLaMA's cut recommendation for user"
    current = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            stripped = line.strip()
            if stripped.startswith(header):
                current = int(re.search(r"user (\d+)", stripped).group(1))
            elif current is not None:
                parse_answer_lines([stripped], current, liked)
    return liked


def relabel(train, titles, liked):
    """2/3-star rows of answered users -> 4.5 if the title was picked, else 0.5 (SPEC 2)."""
    out = train.copy()
    out[RATING_COL] = out[RATING_COL].astype(float)
    users = out[USER_COL].to_numpy()
    picked = np.array([t in liked.get(int(u), ()) for u, t in zip(users, titles)], dtype=bool)
    target = np.isin(users, np.array(list(liked), dtype=users.dtype)) & out[RATING_COL].isin([2, 3]).to_numpy()
    out.loc[target & picked, RATING_COL] = 4.5
    out.loc[target & ~picked, RATING_COL] = 0.5
    return out


# ----------------------------------------------------------------------------------------------
# Generation with cache


class AnswerCache:
    """JSONL cache plus the published answers file, both appended as answers arrive."""

    def __init__(self, out_dir, model_id):
        self.path = Path(out_dir) / "answers_cache.jsonl"
        self.txt_path = Path(out_dir) / "llama_distinguish_answer.txt"
        self.model_id = model_id
        self.records, self.ignored = {}, 0
        if self.path.is_file():
            for rec in read_cache_records(self.path):
                if rec.get("model") != model_id:
                    self.ignored += 1
                    continue
                self.records[(rec["user"], rec["chunk"], rec["prompt"], rec["hash"])] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A run killed mid-write leaves a torn last line; start ours on a fresh line.
        torn = self.path.is_file() and self.path.stat().st_size > 0 and not self.path.read_bytes().endswith(b"\n")
        self._handle = open(self.path, "a", encoding="utf-8")
        if torn:
            self._handle.write("\n")
        self._txt = None

    def get(self, request):
        return self.records.get((request.user, request.chunk, request.prompt_no, request.key))

    def add(self, rec):
        self.records[(rec["user"], rec["chunk"], rec["prompt"], rec["hash"])] = rec
        self._handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._handle.flush()
        if rec["status"] == "answered" and self._txt is not None:
            self._txt.write(format_answer_block(rec["user"], rec["answer"]))
            self._txt.flush()

    def start_answers_file(self, answered):
        """Rewrite the answers file from finished answers, then keep appending to it."""
        with atomic_write(self.txt_path, encoding="utf-8") as handle:
            for rec in answered:
                handle.write(format_answer_block(rec["user"], rec["answer"]))
        self._txt = open(self.txt_path, "a", encoding="utf-8")

    def write_answers_file(self, answered):
        if self._txt is not None:
            self._txt.close()
            self._txt = None
        with atomic_write(self.txt_path, encoding="utf-8") as handle:
            for rec in answered:
                handle.write(format_answer_block(rec["user"], rec["answer"]))

    def close(self):
        self._handle.close()
        if self._txt is not None:
            self._txt.close()


def make_record(request, status, answer, lengths, model_id):
    return {"user": request.user, "chunk": request.chunk, "prompt": request.prompt_no, "hash": request.key,
            "model": model_id, "status": status, "prompt_tokens": lengths[0], "budget_tokens": lengths[1],
            "answer": answer}


def generate_answers(jobs, backend, cache, max_total_tokens=5000, progress=True):
    """Ask every prompt not yet in the cache; prompt 2 for answers not ending in `]`.

    Returns (final record per (user, chunk) or None when replay had no answer, counts).
    """
    from tqdm import tqdm

    final, counts = {}, Counter()
    bar = tqdm(total=len(jobs), desc="LLM prompts", unit="prompt", disable=not progress, dynamic_ncols=True)

    def finish(job, rec, cached):
        final[(job.user, job.chunk)] = rec
        status = rec["status"] if rec is not None else "missing"
        counts[{"answered": "answered", "too_long": "skipped_too_long",
                "no_bracket": "hallucinated", "missing": "missing"}[status]] += 1
        counts["from_cache" if cached else "asked"] += 1
        if rec is not None and rec["status"] == "answered" and rec["prompt"] == 2:
            counts["answered_with_prompt2"] += 1
        bar.update(1)
        bar.set_postfix(answered=counts["answered"], skipped=counts["skipped_too_long"],
                        hallucinated=counts["hallucinated"], refresh=False)

    cache.start_answers_file(answered_records(jobs, cache))
    pending = [(job, 1) for job in jobs]
    try:
        for prompt_no in (1, 2):
            retry, asking = [], []
            for job, _ in pending:
                text = job.prompt1 if prompt_no == 1 else job.prompt2
                request = Request(job.user, job.chunk, prompt_no, text, prompt_hash(text))
                rec = cache.get(request)
                if rec is None:
                    asking.append((job, request))
                elif prompt_no == 1 and rec["status"] == "no_bracket":
                    retry.append((job, 2))
                else:
                    finish(job, rec, cached=True)
            job_of = {}
            lengths = backend.token_lengths([r for _, r in asking]) if asking else []
            requests = []
            for (job, request), (n_prompt, n_budget) in zip(asking, lengths):
                if n_prompt + n_budget > max_total_tokens:
                    rec = make_record(request, "too_long", "", (n_prompt, n_budget), cache.model_id)
                    cache.add(rec)
                    finish(job, rec, cached=False)
                    continue
                # Upstream: max_length = prompt tokens + budget tokens, so budget new tokens.
                request = Request(request.user, request.chunk, prompt_no, request.prompt, request.key, n_budget)
                job_of[request] = (job, (n_prompt, n_budget))
                requests.append(request)
            for request, full_text in backend.generate(requests):
                job, lens = job_of[request]
                if full_text is None:
                    finish(job, None, cached=False)
                    continue
                response, answer = cut_response(full_text, request.prompt, prompt_no)
                status = "answered" if response.endswith("]") else "no_bracket"
                rec = make_record(request, status, answer, lens, cache.model_id)
                cache.add(rec)
                if status == "no_bracket" and prompt_no == 1:
                    retry.append((job, 2))
                else:
                    finish(job, rec, cached=False)
            pending = retry
    finally:
        bar.close()
        # Also after an interruption: every finished answer of these prompts, in (user, chunk) order.
        cache.write_answers_file(answered_records(jobs, cache))
    return final, counts


def answered_records(jobs, cache):
    """The answered record of each job (prompt 1, else prompt 2 after a missing `]`), job order."""
    out = []
    for job in jobs:
        rec1 = cache.get(Request(job.user, job.chunk, 1, job.prompt1, prompt_hash(job.prompt1)))
        if rec1 is not None and rec1["status"] == "answered":
            out.append(rec1)
        elif rec1 is not None and rec1["status"] == "no_bracket":
            rec2 = cache.get(Request(job.user, job.chunk, 2, job.prompt2, prompt_hash(job.prompt2)))
            if rec2 is not None and rec2["status"] == "answered":
                out.append(rec2)
    return out


# ----------------------------------------------------------------------------------------------
# CLI


def default_data_dir():
    return os.environ.get("REFINE_DATA_DIR", "dataset")


def build_parser():
    parser = argparse.ArgumentParser(description="ReFINe LLM refinement: train_original -> train_augment.")
    sub = parser.add_subparsers(dest="stage", required=True)

    def common(p):
        p.add_argument("name", help="ML-100K, ML-1M or Netflix-1M")
        p.add_argument("--data_dir", default=default_data_dir(),
                       help="folder holding NAME/ (default ./dataset or $REFINE_DATA_DIR)")
        p.add_argument("--out_dir", default=None, help="cache, answers file and report (default DATA_DIR/NAME/llm)")
        p.add_argument("--skip_users", default=None,
                       help="file of user ids not to ask (default DATA_DIR/NAME/llm_skip_users.txt if present; "
                            "'none' for no skip list)")
        p.add_argument("--max_prompts", type=int, default=None, help="only the first N prompts (trial runs)")

    def gen(p):
        p.add_argument("--backend", default="hf", choices=["hf", "transformers", "openai", "http", "replay"])
        p.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder (hf), model name (openai)")
        p.add_argument("--device", default="auto", help="hf: auto, cpu, cuda, cuda:1, ...")
        p.add_argument("--dtype", default="float32",
                       help="hf: float32 (as published), bfloat16, float16, float64 or auto")
        p.add_argument("--batch_size", type=int, default=8, help="hf: prompts per generate call")
        p.add_argument("--base_url", default="http://127.0.0.1:8000/v1", help="openai: server base URL")
        p.add_argument("--concurrency", type=int, default=16, help="openai: requests in flight")
        p.add_argument("--tokenizer", default=None,
                       help="openai: tokenizer for the length rule (default --model; 'server' uses /tokenize)")
        p.add_argument("--timeout", type=float, default=600.0, help="openai: seconds per request")
        p.add_argument("--no_stop", action="store_true",
                       help="openai: do not stop at the separator (slower; exact on servers without stop_reason)")
        p.add_argument("--replay", default=None, help="replay: answers file or JSONL cache to replay")
        p.add_argument("--max_total_tokens", type=int, default=5000,
                       help="skip a prompt whose prompt+budget tokens exceed this (published 5000)")
        p.add_argument("--no_progress", action="store_true")

    def app(p):
        p.add_argument("--output", default=None, help="default DATA_DIR/NAME/NAME_train_augment.csv")

    p = sub.add_parser("prompts", help="build the prompts into OUT_DIR/prompts.jsonl")
    common(p)
    p = sub.add_parser("generate", help="ask the LLM; answers cached in OUT_DIR")
    common(p)
    gen(p)
    p = sub.add_parser("apply", help="parse answers and write NAME_train_augment.csv")
    common(p)
    app(p)
    p.add_argument("--answers", default=None,
                   help="answers file or JSONL cache (default OUT_DIR/llama_distinguish_answer.txt)")
    p = sub.add_parser("run", help="prompts + generate + apply")
    common(p)
    gen(p)
    app(p)
    return parser


def resolve_paths(args):
    dataset_dir = Path(args.data_dir) / args.name
    out_dir = Path(args.out_dir) if args.out_dir else dataset_dir / "llm"
    if args.skip_users is None:
        default = dataset_dir / "llm_skip_users.txt"
        skip = read_skip_users(default) if default.is_file() else set()
    elif args.skip_users.lower() == "none":
        skip = set()
    else:
        skip = read_skip_users(args.skip_users)
    return dataset_dir, out_dir, skip


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
        with atomic_write(out_dir / "prompts.jsonl", encoding="utf-8") as handle:
            for job in jobs:
                handle.write(json.dumps({"user": job.user, "chunk": job.chunk, "hash": prompt_hash(job.prompt1),
                                         "prompt1": job.prompt1, "prompt2": job.prompt2}, ensure_ascii=False) + "\n")
        print(f"{len(jobs)} prompts for {len({j.user for j in jobs})} users "
              f"({len(skip)} users in the skip list) -> {out_dir / 'prompts.jsonl'}")
    return train, joined, jobs, out_dir


def make_backend(args):
    if args.backend in ("hf", "transformers"):
        return TransformersBackend(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    if args.backend in ("openai", "http"):
        return OpenAIBackend(args.base_url, args.model, tokenizer=args.tokenizer, concurrency=args.concurrency,
                             timeout=args.timeout, stop=not args.no_stop)
    if not args.replay:
        raise InputError("--backend replay needs --replay FILE")
    return ReplayBackend(args.replay)


def stage_generate(args, jobs, out_dir):
    backend = make_backend(args)
    cache = AnswerCache(out_dir, backend.model_id)
    if cache.ignored:
        print(f"note: {cache.ignored} cached answer(s) from another model ignored", file=sys.stderr)
    started = time.time()
    try:
        final, counts = generate_answers(jobs, backend, cache, args.max_total_tokens, progress=not args.no_progress)
    finally:
        cache.close()
    seconds = time.time() - started
    report = {"dataset": args.name, "backend": args.backend, "model": backend.model_id,
              "prompts": len(jobs), "users": len({j.user for j in jobs}),
              "answered": counts["answered"], "answered_with_prompt2": counts["answered_with_prompt2"],
              "skipped_too_long": counts["skipped_too_long"], "hallucinated": counts["hallucinated"],
              "missing": counts["missing"], "from_cache": counts["from_cache"], "asked": counts["asked"],
              "users_answered": len({k[0] for k, r in final.items() if r is not None and r["status"] == "answered"}),
              "seconds": round(seconds, 3),
              "prompts_per_second": round(counts["asked"] / seconds, 3) if seconds > 0 else None,
              "answers_file": str(cache.txt_path), "cache_file": str(cache.path)}
    with atomic_write(out_dir / "report.json", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(f"{report['prompts']} prompts: {report['answered']} answered "
          f"({report['answered_with_prompt2']} with prompt 2), {report['skipped_too_long']} skipped (too long), "
          f"{report['hallucinated']} hallucinated (no ']'), {report['missing']} missing; "
          f"{report['from_cache']} from cache, {report['asked']} asked in {seconds:.1f} s")
    return report


def stage_apply(args, train, joined, answers_path):
    liked = parse_answers(answers_path)
    augmented = relabel(train, joined["title"].to_numpy(), liked)
    output = Path(args.output) if args.output else Path(args.data_dir) / args.name / f"{args.name}_train_augment.csv"
    with atomic_write(output, encoding="utf-8", newline="") as handle:
        augmented.to_csv(handle, index=False)
    counts = augmented[RATING_COL].value_counts()
    print(f"{len(liked)} users answered; {int(counts.get(4.5, 0))} rows -> 4.5, {int(counts.get(0.5, 0))} rows -> 0.5, "
          f"{int(augmented[RATING_COL].isin([2, 3]).sum())} left 2/3 -> {output}")
    return output


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.stage == "prompts":
            stage_prompts(args)
        elif args.stage == "apply":
            get_preset(args.name)
            _, out_dir, _ = resolve_paths(args)
            train, joined = load_train(args.data_dir, args.name)
            answers = Path(args.answers) if args.answers else out_dir / "llama_distinguish_answer.txt"
            if not answers.is_file():
                raise InputError(f"answers file not found: {answers}")
            stage_apply(args, train, joined, answers)
        else:
            train, joined, jobs, out_dir = stage_prompts(args, write=False)
            stage_generate(args, jobs, out_dir)
            if args.stage == "run":
                stage_apply(args, train, joined, out_dir / "llama_distinguish_answer.txt")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Exit code 2 like every other stop on the user's side (main.py does the same).
        print("error: interrupted; finished answers are in the cache; rerun the same command to resume",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
