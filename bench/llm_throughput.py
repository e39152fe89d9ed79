"""Prompts per second of refine_llm's transformers backend: one prompt at a time vs batched.

Runs a tiny random Llama (bench/tiny_llm.py) on CPU, so it measures the engine (padding, stopping,
decoding), not a real LLM. With --count it instead counts a dataset's prompts and characters,
the basis of the README's estimate for a real run.

    python -m bench.llm_throughput --prompts 8 --batch_size 8
    python -m bench.llm_throughput --count ML-100K --data_dir dataset
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import entry
from llm.backends import Request, TransformersBackend
from llm.data import default_skip_users, load_train
from llm.prompts import budget_text, build_prompts, prompt_hash
from bench.tiny_llm import build_tiny_llm, synthetic_joined


def time_generation(model_dir, jobs, batch_size, device):
    """Seconds to answer prompt 1 of every job; returns (seconds, answers)."""
    backend = TransformersBackend(str(model_dir), device=device, dtype="float32", batch_size=batch_size)
    requests = [Request(j.user, j.chunk, 1, j.prompt1, prompt_hash(j.prompt1)) for j in jobs]
    lengths = backend.token_lengths(requests)
    requests = [Request(r.user, r.chunk, 1, r.prompt, r.key, budget) for r, (_, budget) in zip(requests, lengths)]
    backend.generate(requests[:1]).__next__()  # warm-up
    started = time.perf_counter()
    answers = {r.key: reply.text for r, reply in backend.generate(requests)}
    return time.perf_counter() - started, answers


def count(name, data_dir):
    """Prompt and character counts of a dataset's refinement run (chars ~ 3.5 per Llama token)."""
    _, joined = load_train(data_dir, name)
    skip = default_skip_users(data_dir, name)
    jobs = build_prompts(joined, name, skip)
    chars1 = [len(j.prompt1) for j in jobs]
    budget = [len(budget_text(j.prompt1)) for j in jobs]
    # Chunks of one user share everything before the last candidate list (prefix caching).
    prefixes = {}
    for j in jobs:
        prefixes[j.user] = len(j.prompt1[:j.prompt1.rfind("Candidate List:")])
    unique = sum(prefixes.values()) + sum(len(j.prompt1) - j.prompt1.rfind("Candidate List:") for j in jobs)
    print(f"{name}: {len(jobs)} prompts for {len(prefixes)} users ({len(skip)} skipped users)")
    print(f"prompt 1 characters: total {sum(chars1):,}, mean {sum(chars1) / len(jobs):,.0f}, max {max(chars1):,}")
    print(f"budget (max new tokens) text: mean {sum(budget) / len(jobs):,.0f} characters")
    print(f"characters left after sharing each user's prefix: {unique:,}")


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count", default=None, help="dataset name: count prompts instead of timing")
    parser.add_argument("--data_dir", default="dataset")
    args = parser.parse_args(argv)
    if args.count:
        count(args.count, args.data_dir)
        return 0
    jobs = build_prompts(synthetic_joined(n_users=args.prompts), "ML-100K")[:args.prompts]
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_tiny_llm(Path(folder) / "model", [j.prompt1 for j in jobs], vocab_size=1500)
        single, answers1 = time_generation(model_dir, jobs, 1, args.device)
        batched, answers8 = time_generation(model_dir, jobs, args.batch_size, args.device)
    same = sum(answers1[k] == answers8[k] for k in answers1)
    print(f"{len(jobs)} prompts on {args.device}, tiny random Llama (float32)")
    print(f"one at a time : {len(jobs) / single:7.2f} prompts/s ({single:.2f} s)")
    print(f"batch of {args.batch_size:<4} : {len(jobs) / batched:7.2f} prompts/s ({batched:.2f} s), "
          f"{single / batched:.1f}x faster; {same}/{len(jobs)} answers identical")
    return 0


if __name__ == "__main__":
    sys.exit(entry.run_script(main, entry.Stop("nothing was saved: rerun it")))
