"""Local backends: Hugging Face transformers and the replay of saved answers, and the request/reply types.

    python -c "from llm.backends import ReplayBackend; print(ReplayBackend('answers_cache.jsonl').model_id)"

Every backend has token_lengths(requests) -> [(prompt_tokens, budget_tokens)] (None where the backend
learns the count while asking) and generate(requests), which yields (request, Reply or None) as
answers arrive.
"""
from dataclasses import dataclass
from pathlib import Path

from llm.answers import is_jsonl, read_answer_blocks, read_cache_records
from llm.prompts import SEPARATOR, budget_text
from utils import InputError

DEFAULT_MODEL = "meta-llama/Llama-2-7b-hf"


@dataclass(frozen=True)
class Request:
    user: int
    chunk: int
    prompt_no: int
    prompt: str
    key: str                          # prompt hash
    max_new_tokens: int | None = 0    # None: the backend counts the budget itself (--tokenizer usage)


@dataclass(frozen=True)
class Reply:
    """One answer. `text` is the prompt plus the generated text, which the published cut reads."""
    text: str
    rule_tokens: tuple | None = None  # (prompt, budget) tokens learned while asking (--tokenizer usage)
    usage: tuple | None = None        # (prompt, completion) tokens of every request made for it
    retries: int = 0                  # requests repeated after a transient failure


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
                yield request, Reply(text, usage=(len(prompt_ids), len(new_ids)))


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
                yield r, Reply(r.prompt + rec["answer"])
            elif not self.records and r.prompt_no == 1 and r.chunk < len(self.blocks.get(r.user, [])):
                yield r, Reply(r.prompt + self.blocks[r.user][r.chunk])
            else:
                yield r, None
