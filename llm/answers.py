"""Answers: the published answers file and the JSONL cache, parsing, and the relabelling.

    python -c "from llm.answers import parse_answers; print(parse_answers('dataset/ML-100K/llm/answers_cache.jsonl'))"
"""
import json
import re
from pathlib import Path

from llm.data import RATING_COL, USER_COL, naming, user_id
from utils import InputError, atomic_write, regular_file

ANSWER_HEADER = "LLaMA's cut recommendation for user {user}:"
ANSWER_HEADER_PREFIX = "LLaMA's cut recommendation for user"


# ----------------------------------------------------------------------------------------------
# Answer files

CACHE_STATUSES = ("answered", "no_bracket", "too_long")


def read_text_lines(path):
    """Lines of a UTF-8 text file (universal newlines); not UTF-8 -> InputError naming the line."""
    path = regular_file(path, f"answers file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text; expected an answers file "
                         f"(llama_distinguish_answer.txt) or a JSONL answers cache") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def is_jsonl(path):
    for line in read_text_lines(path):
        if line.strip():
            return line.lstrip().startswith("{")
    return False


def cache_record_problem(rec):
    """What is wrong with one parsed cache line, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    missing = [k for k in ("user", "chunk", "prompt", "hash", "status", "answer") if k not in rec]
    if missing:
        return f"record without {', '.join(missing)}"
    user = rec["user"]
    if isinstance(user, bool) or not isinstance(user, (int, str)) or len(str(user).split()) != 1:
        return f"user {json.dumps(user)} is not a user id (a whole number or a text without spaces)"
    if not isinstance(rec["chunk"], int) or isinstance(rec["chunk"], bool):
        return f"chunk {json.dumps(rec['chunk'])} is not an integer"
    if rec["prompt"] not in (1, 2):
        return f"prompt {json.dumps(rec['prompt'])} is not 1 or 2"
    if rec["status"] not in CACHE_STATUSES:
        return f"status {json.dumps(rec['status'])} is not one of {', '.join(CACHE_STATUSES)}"
    if not isinstance(rec["answer"], str) or not isinstance(rec["hash"], str):
        field = "answer" if not isinstance(rec["answer"], str) else "hash"
        return f"{field} {json.dumps(rec[field])} is not text"
    return None


def read_cache_records(path):
    """Records of a JSONL cache. A line that is not JSON is a write cut short by a kill and is
    skipped; a JSON record with wrong fields is an InputError naming file and line."""
    records = []
    for line_no, line in enumerate(read_text_lines(path), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        problem = cache_record_problem(rec)
        if problem:
            raise InputError(f"{path}:{line_no}: {problem}; fix or delete that line")
        rec["user"] = user_id(rec["user"])
        records.append(rec)
    return records


def read_answer_blocks(path):
    """(user, text) per block of a published answers file; a header without a user id -> InputError."""
    blocks, user, lines = [], None, []
    for line_no, line in enumerate(read_text_lines(path), 1):
        stripped = line.strip()
        if stripped.startswith(ANSWER_HEADER_PREFIX):
            match = re.fullmatch(r"(\S+):", stripped[len(ANSWER_HEADER_PREFIX):].strip())
            if not match:
                raise InputError(f"{path}:{line_no}: expected \"{ANSWER_HEADER.format(user='N')}\" with a "
                                 f"user id N, got {stripped[:80]!r}")
            if user is not None:
                blocks.append((user, "\n".join(lines).strip("\n")))
            user, lines = user_id(match.group(1)), []
        elif user is not None:
            lines.append(line)
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
        for (user, _), rec in sorted(latest.items(), key=lambda item: (str(item[0][0]), item[0][1])):
            parse_answer_lines(rec["answer"].split("\n"), user, liked)
        return liked
    for user, text in read_answer_blocks(path):
        parse_answer_lines(text.split("\n"), user, liked)
    return liked


def candidate_rows(train, answered):
    """Boolean mask of the rows a relabel rewrites: the 2/3-star rows of the users in `answered`
    (docs/method.md §2). Users without an answer (skipped, too long, missing) keep theirs."""
    import numpy as np

    users = np.array([user_id(u) in answered for u in train[USER_COL].to_numpy()], dtype=bool)
    return users & train[RATING_COL].isin([2, 3]).to_numpy()


def apply_labels(train, candidates, picked):
    """train with its `candidates` rows set to 4.5 where `picked`, else 0.5; the other rows as they are.

    The one place the apply rule is written: the LLM's answers (relabel) and the non-LLM rules of
    llm/relabel_rules.py both end here."""
    out = train.copy()
    out[RATING_COL] = out[RATING_COL].astype(float)
    out.loc[candidates & picked, RATING_COL] = 4.5
    out.loc[candidates & ~picked, RATING_COL] = 0.5
    return out


def picked_by_title(train, titles, liked):
    """Boolean mask of the rows whose title the row's user's answer named."""
    import numpy as np

    users = [user_id(u) for u in train[USER_COL].to_numpy()]
    return np.array([t in liked.get(u, ()) for u, t in zip(users, titles)], dtype=bool)


def relabel(train, titles, liked):
    """2/3-star rows of answered users -> 4.5 if the title was picked, else 0.5 (docs/method.md §2)."""
    return apply_labels(train, candidate_rows(train, liked), picked_by_title(train, titles, liked))


# ----------------------------------------------------------------------------------------------
# Generation with cache


class AnswerCache:
    """JSONL cache plus the published answers file, both appended as answers arrive.

    A cached answer counts for a run with the same model and API kind (`api`: completions, chat or
    chat+system:<hash>); records written before API kinds existed are completions.
    """

    def __init__(self, out_dir, model_id, api="completions"):
        self.path = Path(out_dir) / "answers_cache.jsonl"
        self.txt_path = Path(out_dir) / "llama_distinguish_answer.txt"
        self.model_id, self.api = model_id, api
        self.records, self.ignored = {}, 0
        if self.path.is_file():
            for rec in read_cache_records(self.path):
                if rec.get("model") != model_id or rec.get("api", "completions") != api:
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

    def record(self, request, status, answer, lengths):
        return {"user": request.user, "chunk": request.chunk, "prompt": request.prompt_no, "hash": request.key,
                "model": self.model_id, "api": self.api, "status": status, "prompt_tokens": lengths[0],
                "budget_tokens": lengths[1], "answer": answer}

    def add(self, rec):
        with naming(self.path):
            self._handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._handle.flush()
        # Known only once on disk, so the answers file written after a failed write holds no more.
        self.records[(rec["user"], rec["chunk"], rec["prompt"], rec["hash"])] = rec
        if rec["status"] == "answered" and self._txt is not None:
            with naming(self.txt_path):
                self._txt.write(format_answer_block(rec["user"], rec["answer"]))
                self._txt.flush()

    def start_answers_file(self, answered):
        """Rewrite the answers file from finished answers, then keep appending to it."""
        with naming(self.txt_path), atomic_write(self.txt_path, encoding="utf-8") as handle:
            for rec in answered:
                handle.write(format_answer_block(rec["user"], rec["answer"]))
        self._txt = open(self.txt_path, "a", encoding="utf-8")

    def write_answers_file(self, answered):
        if self._txt is not None:
            with naming(self.txt_path):
                self._txt.close()
            self._txt = None
        with naming(self.txt_path), atomic_write(self.txt_path, encoding="utf-8") as handle:
            for rec in answered:
                handle.write(format_answer_block(rec["user"], rec["answer"]))

    def close(self):
        with naming(self.path):
            self._handle.close()
        if self._txt is not None:
            with naming(self.txt_path):
                self._txt.close()
