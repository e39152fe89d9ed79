"""A tiny randomly initialised Llama and a byte-level BPE tokenizer, saved like a hub model folder.

Used by the tests and bench/llm_throughput.py to drive refine_llm's transformers backend through
the same from_pretrained path a user takes, without downloads.

    python -m bench.tiny_llm /tmp/tiny-llm
"""
import sys
from pathlib import Path

from catalog import SPLIT_COLUMNS


def build_tiny_llm(folder, texts, vocab_size=400, hidden=64, layers=2, seed=0):
    """Train a tokenizer on `texts`, build a random LlamaForCausalLM, save both into `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    tokenizer = Tokenizer(models.BPE())
    # Byte-level pieces decode back to the exact text, as Llama's tokenizer does for these prompts.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    # Like Llama: a BOS token in front of every encoded text.
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return folder


def synthetic_joined(n_users=8, n_items=60, per_user=12, seed=0):
    """A train_original-like frame with title/genre columns, ready for refine_llm.build_prompts."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    genres = ["Drama", "Comedy", "Action Thriller", "Animation Children's", "Horror", "Sci-Fi War"]
    rows = []
    for user in range(1, n_users + 1):
        for item in rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False):
            rows.append((user, int(item), int(rng.choice([1, 2, 3, 3, 3, 4, 5])),
                         f"Movie Number {item}", genres[item % len(genres)]))
    return pd.DataFrame(rows, columns=[*SPLIT_COLUMNS, "title", "genre"])


if __name__ == "__main__":
    from llm.prompts import INSTRUCTIONS

    print(build_tiny_llm(sys.argv[1] if len(sys.argv) > 1 else "tiny-llm", [INSTRUCTIONS] * 10))
