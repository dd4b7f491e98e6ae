"""Tiny Llama decoders built from a config (random init), sized for CPU training.

Llama rather than Qwen2: transformers 5 maps the `qwen2` model type to `Qwen2Tokenizer`, so `AutoTokenizer` on a
saved Qwen2 checkpoint replaces our character-level pre-tokenizer with byte-level BPE rules and drops spaces.
"""

from __future__ import annotations

from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

# size -> (hidden, layers, attention heads, FFN width)
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "test": (32, 2, 2, 64),  # ~25k parameters: unit tests only
    "1m": (128, 4, 4, 512),
    "3m": (192, 6, 6, 768),
}
# Prompt (< 40 tokens) plus completion budget (<= 160) with room to spare.
MAX_POSITIONS = 256


def build_model(tokenizer: PreTrainedTokenizerBase, size: str = "1m") -> PreTrainedModel:
    """A randomly initialised `LlamaForCausalLM` of `size` (see `MODEL_SIZES`) over `tokenizer`'s vocabulary."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}")
    hidden, layers, heads, ffn = MODEL_SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    # Plain sampling by default: transformers' top_k=50 would silently truncate the policy's distribution.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    return model
