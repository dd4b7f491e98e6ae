"""Sampling n completions per prompt with transformers `generate` (batched, left padding, KV cache) or vLLM."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn. Defaults follow the paper's evaluation (docs/eval.md): T = 0.6, top-p 0.95."""

    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 8192
    greedy: bool = False
    seed: int = 0


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """A chat (list of messages) through the tokenizer's chat template; a string is used as it is (no BOS added)."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def is_vllm_model(model: Any) -> bool:
    vllm = sys.modules.get("vllm")  # a vLLM engine can only exist if vllm was imported
    return vllm is not None and isinstance(model, vllm.LLM)


def generate(model: Any, tokenizer: Any, prompts: list[str], sampling: Sampling, batch_size: int, desc: str) -> list:
    """`sampling.n` completions (strings) for each rendered prompt, in prompt order."""
    if is_vllm_model(model):
        return _generate_vllm(model, prompts, sampling)
    return _generate_hf(model, tokenizer, prompts, sampling, batch_size, desc)


@torch.no_grad()
def _generate_hf(model: Any, tokenizer: Any, prompts: list[str], sampling: Sampling, batch_size: int, desc: str):
    # Seeded for reproducible evaluation, on a forked generator: an evaluation in the middle of training (the
    # demo's accuracy curve) must not reseed the training's own sampling.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sampling.seed)
        return _sample_hf(model, tokenizer, prompts, sampling, batch_size, desc)


def _sample_hf(model: Any, tokenizer: Any, prompts: list[str], sampling: Sampling, batch_size: int, desc: str):
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens must follow every prompt
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    completions: list[list[str]] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch"):
            # Special tokens are already in the rendered chat; a raw string prompt is used verbatim.
            chunk = prompts[start : start + batch_size]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(model.device)
            output = model.generate(**batch, **_hf_sampling_kwargs(sampling), pad_token_id=pad_id, use_cache=True)
            texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            completions += [texts[i : i + sampling.n] for i in range(0, len(texts), sampling.n)]
    finally:
        tokenizer.padding_side = padding_side
    return completions


def _hf_sampling_kwargs(sampling: Sampling) -> dict[str, Any]:
    # top_k=0 and repetition_penalty=1 override a checkpoint's generation_config (Qwen ships top_k=20 and a
    # repetition penalty), so sampling is exactly T / top-p, as with vLLM's defaults that the paper used.
    common = {"max_new_tokens": sampling.max_new_tokens, "num_return_sequences": sampling.n, "repetition_penalty": 1.0}
    if sampling.greedy:
        return {**common, "do_sample": False}
    return {**common, "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}


def _generate_vllm(llm: Any, prompts: list[str], sampling: Sampling) -> list[list[str]]:
    from vllm import SamplingParams

    params = SamplingParams(
        n=sampling.n,
        temperature=0.0 if sampling.greedy else sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        seed=sampling.seed,
    )
    return [[choice.text for choice in output.outputs] for output in llm.generate(prompts, params)]
