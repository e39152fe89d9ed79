"""The generation loop: ask every prompt without a cached answer, prompt 2 where prompt 1 gave no `]`.

    python -c "import llm.generate"   # driven by `python refine_llm.py generate NAME ...`
"""
from collections import Counter

from llm.prompts import prompt_hash, cut_response
from llm.backends import Request

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
                        hallucinated=counts["hallucinated"], retries=counts["retries"], refresh=False)

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
                if n_prompt is not None and n_budget is not None and n_prompt + n_budget > max_total_tokens:
                    rec = cache.record(request, "too_long", "", (n_prompt, n_budget))
                    cache.add(rec)
                    finish(job, rec, cached=False)
                    continue
                # Upstream: max_length = prompt tokens + budget tokens, so budget new tokens.
                request = Request(request.user, request.chunk, prompt_no, request.prompt, request.key, n_budget)
                job_of[request] = (job, (n_prompt, n_budget))
                requests.append(request)

            def handle(request, reply):
                job, lens = job_of[request]
                if reply is None:
                    finish(job, None, cached=False)
                    return
                counts["retries"] += reply.retries
                counts["requests_retried"] += reply.retries > 0
                if reply.usage is not None:
                    counts["usage_prompt_tokens"] += reply.usage[0]
                    counts["usage_completion_tokens"] += reply.usage[1]
                    counts["with_usage"] += 1
                if reply.rule_tokens is not None:
                    # --tokenizer usage: the rule is applied once the server has counted the prompt.
                    lens = reply.rule_tokens
                    if lens[0] + lens[1] > max_total_tokens:
                        rec = cache.record(request, "too_long", "", lens)
                        cache.add(rec)
                        finish(job, rec, cached=False)
                        return
                response, answer = cut_response(reply.text, request.prompt, prompt_no)
                status = "answered" if response.endswith("]") else "no_bracket"
                rec = cache.record(request, status, answer, lens)
                cache.add(rec)
                if status == "no_bracket" and prompt_no == 1:
                    retry.append((job, 2))
                else:
                    finish(job, rec, cached=False)

            consume(backend.generate(requests), handle)
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
