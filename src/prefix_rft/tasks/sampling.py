"""Sample completions of task prompts with HF `generate` (used to measure the base model)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Completion(NamedTuple):
    text: str
    """decoded completion, special tokens removed"""
    finished: bool
    """True if the model emitted `<eos>` within the budget"""
    length: int
    """generated tokens, `<eos>` included"""


def render_prompt(tokenizer: PreTrainedTokenizerBase, chat: list[dict]) -> str:
    """A chat as generation-prompt text; a final assistant message is continued (a demo prefix), not closed."""
    if chat[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(chat, continue_final_message=True, tokenize=False)
    return tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict]],
    n: int,
    max_new_tokens: int = 160,
    temperature: float = 1.0,
    batch_size: int = 256,
    progress: bool = False,
) -> list[list[Completion]]:
    """`n` sampled completions for each chat prompt (plain sampling: no top-k, no top-p).

    A prompt ending with an assistant message is continued, and its completion excludes that message.
    """
    flat = [prompt for prompt in prompts for _ in range(n)]
    out: list[Completion] = []
    for start in tqdm(range(0, len(flat), batch_size), desc="sampling", disable=not progress):
        out += _sample_batch(model, tokenizer, flat[start : start + batch_size], max_new_tokens, temperature)
    return [out[i * n : (i + 1) * n] for i in range(len(prompts))]


def _sample_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict]],
    max_new_tokens: int,
    temperature: float,
) -> list[Completion]:
    texts = [render_prompt(tokenizer, p) for p in prompts]
    inputs = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    generated = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_k=0,
        top_p=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
    completions = []
    for row in new_tokens.tolist():
        finished = tokenizer.eos_token_id in row
        ids = row[: row.index(tokenizer.eos_token_id) + 1] if finished else row
        completions.append(Completion(tokenizer.decode(ids, skip_special_tokens=True), finished, len(ids)))
    return completions
