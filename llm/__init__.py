"""The LLM stage (docs/llm.md): train_original -> train_augment through an LLM's picks.

    python refine_llm.py run ML-100K --backend hf --model meta-llama/Llama-2-7b-hf

data (inputs, skip lists) -> prompts (published prompts, length and cut rules) -> backends /
openai_backend (who answers) -> generate (the loop with the cache) -> answers (cache, parsing,
relabelling). `refine_llm.py` is the command line over them.
"""
