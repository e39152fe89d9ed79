"""The generation loop: ask every prompt without a cached answer, prompt 2 where prompt 1 gave no `]`.

    python -c "import llm.generate"   # driven by `python refine_llm.py generate NAME ...`
"""
import enum
from dataclasses import dataclass

from llm.backends import Request
from llm.prompts import PromptJob, cut_response, prompt_hash


def consume(stream, handle):
    """handle(request, reply) for every answer of `stream`, also on Ctrl-C for those that arrived."""
    try:
        for request, reply in stream:
            handle(request, reply)
    except KeyboardInterrupt:
        # Ctrl-C while an answer was being handled: the stream may hold more that arrived meanwhile.
        try:
            request, reply = stream.throw(KeyboardInterrupt)
            while True:
                handle(request, reply)
                request, reply = next(stream)
        except (KeyboardInterrupt, StopIteration):
            pass
        raise


class Status(str, enum.Enum):
    """A cache record's `status` (the file's vocabulary)."""
    ANSWERED = "answered"
    NO_BRACKET = "no_bracket"   # the answer lacks the closing `]`: prompt 2 next, or hallucinated after it
    TOO_LONG = "too_long"       # over the token rule: not asked


@dataclass
class Tally:
    """How the prompts of one run ended, and what asking them cost; the report's numbers."""
    answered: int = 0
    answered_with_prompt2: int = 0
    skipped_too_long: int = 0
    hallucinated: int = 0       # no `]` even after prompt 2
    missing: int = 0            # replay only: no saved answer
    from_cache: int = 0
    asked: int = 0
    retries: int = 0
    requests_retried: int = 0
    usage_prompt_tokens: int = 0
    usage_completion_tokens: int = 0
    with_usage: int = 0         # replies that reported usage

    def count(self, rec, cached):
        """One prompt finished with cache record `rec` (None: replay had no answer)."""
        if rec is None:
            self.missing += 1
        elif rec["status"] == Status.ANSWERED:
            self.answered += 1
            self.answered_with_prompt2 += rec["prompt"] == 2
        elif rec["status"] == Status.TOO_LONG:
            self.skipped_too_long += 1
        else:
            self.hallucinated += 1
        if cached:
            self.from_cache += 1
        else:
            self.asked += 1

    def add_reply(self, reply):
        self.retries += reply.retries
        self.requests_retried += reply.retries > 0
        if reply.usage is not None:
            self.usage_prompt_tokens += reply.usage[0]
            self.usage_completion_tokens += reply.usage[1]
            self.with_usage += 1


@dataclass
class Asked:
    """A request on its way to the backend: whose prompt it is and its token counts for the rule."""
    job: PromptJob
    lengths: tuple


class Generation:
    """One run over `jobs`: prompt 1 for all, then prompt 2 for the answers that lacked `]`."""

    def __init__(self, jobs, backend, cache, max_total_tokens, bar):
        self.jobs, self.backend, self.cache, self.max_total_tokens, self.bar = (
            jobs, backend, cache, max_total_tokens, bar)
        self.final = {}          # (user, chunk) -> final record, None when replay had no answer
        self.tally = Tally()

    def run(self):
        pending = list(self.jobs)
        for prompt_no in (1, 2):
            pending = self.ask_round(pending, prompt_no)

    def ask_round(self, jobs, prompt_no):
        """Ask `jobs` with prompt `prompt_no`; return the jobs that need prompt 2."""
        need_prompt2, to_count = [], []
        for job in jobs:
            text = job.prompt1 if prompt_no == 1 else job.prompt2
            request = Request(job.user, job.chunk, prompt_no, text, prompt_hash(text))
            rec = self.cache.get(request)
            if rec is None:
                to_count.append((job, request))
            elif prompt_no == 1 and rec["status"] == Status.NO_BRACKET:
                need_prompt2.append(job)
            else:
                self.finish(job, rec, cached=True)
        lengths = self.backend.token_lengths([r for _, r in to_count]) if to_count else []
        asked = {}
        for (job, request), (n_prompt, n_budget) in zip(to_count, lengths):
            if n_prompt is not None and n_budget is not None and n_prompt + n_budget > self.max_total_tokens:
                self.finish(job, self.store(request, Status.TOO_LONG, "", (n_prompt, n_budget)), cached=False)
                continue
            # Upstream: max_length = prompt tokens + budget tokens, so budget new tokens.
            request = Request(request.user, request.chunk, prompt_no, request.prompt, request.key, n_budget)
            asked[request] = Asked(job, (n_prompt, n_budget))

        def on_reply(request, reply):
            if self.take_reply(request, reply, asked[request]):
                need_prompt2.append(asked[request].job)

        consume(self.backend.generate(list(asked)), on_reply)
        return need_prompt2

    def take_reply(self, request, reply, asked):
        """Cache one reply; True when it lacks `]` and prompt 2 is still to come."""
        if reply is None:
            self.finish(asked.job, None, cached=False)
            return False
        self.tally.add_reply(reply)
        lengths = asked.lengths
        if reply.rule_tokens is not None:
            # --tokenizer usage: the rule is applied once the server has counted the prompt.
            lengths = reply.rule_tokens
            if lengths[0] + lengths[1] > self.max_total_tokens:
                self.finish(asked.job, self.store(request, Status.TOO_LONG, "", lengths), cached=False)
                return False
        response, answer = cut_response(reply.text, request.prompt, request.prompt_no)
        status = Status.ANSWERED if response.endswith("]") else Status.NO_BRACKET
        rec = self.store(request, status, answer, lengths)
        if status == Status.NO_BRACKET and request.prompt_no == 1:
            return True
        self.finish(asked.job, rec, cached=False)
        return False

    def store(self, request, status, answer, lengths):
        rec = self.cache.record(request, status.value, answer, lengths)
        self.cache.add(rec)
        return rec

    def finish(self, job, rec, cached):
        self.final[(job.user, job.chunk)] = rec
        self.tally.count(rec, cached)
        self.bar.update(1)
        self.bar.set_postfix(answered=self.tally.answered, skipped=self.tally.skipped_too_long,
                             hallucinated=self.tally.hallucinated, retries=self.tally.retries, refresh=False)


def generate_answers(jobs, backend, cache, max_total_tokens=5000, progress=True):
    """Ask every prompt not yet in the cache; prompt 2 for answers not ending in `]`.

    Returns (final record per (user, chunk) or None when replay had no answer, a Tally).
    """
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="LLM prompts", unit="prompt", disable=not progress, dynamic_ncols=True)
    generation = Generation(jobs, backend, cache, max_total_tokens, bar)
    cache.start_answers_file(answered_records(jobs, cache))
    try:
        generation.run()
    finally:
        bar.close()
        # Also after an interruption: every finished answer of these prompts, in (user, chunk) order.
        cache.write_answers_file(answered_records(jobs, cache))
    return generation.final, generation.tally


def answered_records(jobs, cache):
    """The answered record of each job (prompt 1, else prompt 2 after a missing `]`), job order."""
    out = []
    for job in jobs:
        rec1 = cache.get(Request(job.user, job.chunk, 1, job.prompt1, prompt_hash(job.prompt1)))
        if rec1 is not None and rec1["status"] == Status.ANSWERED:
            out.append(rec1)
        elif rec1 is not None and rec1["status"] == Status.NO_BRACKET:
            rec2 = cache.get(Request(job.user, job.chunk, 2, job.prompt2, prompt_hash(job.prompt2)))
            if rec2 is not None and rec2["status"] == Status.ANSWERED:
                out.append(rec2)
    return out
