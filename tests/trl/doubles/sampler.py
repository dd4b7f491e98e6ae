"""The generation engine behind both vLLM doubles: an HF causal LM on CPU, sampled the way vLLM's v1 sampler does.

What is mirrored from vLLM, because TRL's code depends on it:

- per request: `n` samples, at most `max_tokens` new tokens, `temperature` (below
  1e-5 means greedy), `top_k` (0 or -1 disables it), `top_p`, `min_p`, `repetition_penalty`, an optional `seed`;
- the processing order: repetition penalty (over prompt and output tokens), temperature, min-p, top-k, top-p;
- a sample stops at the first EOS token, which stays in its `token_ids` (finish reason "stop"), else after its token
  budget (finish reason "length");
- logprobs: the sampled token's logprob and rank (the number of tokens at least as likely, so 1 for the argmax), then
  the top-N others, under `logprobs_mode` "processed_logprobs" (log-softmax of the logits after every step above;
  greedy rows after the penalty only) or "raw_logprobs" (log-softmax of the model's logits);
- a request whose prompt + `max_tokens` exceeds `max_model_len` is refused (ValueError, vLLM's server message) rather
  than capped, so a caller that would overrun a real engine fails a test;
- `load_weights` takes checkpoint names, skips `lm_head.weight` of a tied model and rejects unknown names (KeyError)
  or shapes (ValueError), as vLLM's model loaders do.

What is not: vLLM's kernels, batching (the server double batches, `vllm_server.Batcher`), prefix cache, CUDA graphs.
The double keeps the checkpoint's dtype, so weights it receives compare exactly, unless built with `dtype` (e.g.
`torch.bfloat16`, vLLM's down-cast of an fp32 checkpoint): then it samples a policy that differs from the trained one,
and received weights are cast on load, so TRL's importance-sampling ratios are not 1.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")
GREEDY_EPS = 1e-5  # vLLM samples greedily below this temperature


@dataclass(frozen=True)
class SamplingSpec:
    """One request's sampling settings, with vLLM's names and defaults (top_k=0: disabled)."""

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    seed: int | None = None

    def validate(self) -> None:
        """Raise ValueError on settings vLLM's SamplingParams rejects."""
        checks = {
            "n must be at least 1": self.n >= 1,
            "max_tokens must be at least 1": self.max_tokens >= 1,
            "temperature must be non-negative": self.temperature >= 0,
            "top_p must be in (0, 1]": 0 < self.top_p <= 1,
            "top_k must be -1 (disable), 0 (disable) or at least 1": self.top_k >= -1,
            "min_p must be in [0, 1]": 0 <= self.min_p <= 1,
            "repetition_penalty must be positive": self.repetition_penalty > 0,
            "logprobs must be None, -1 (whole vocabulary) or at least 0": self.logprobs is None or self.logprobs >= -1,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid sampling parameters {self}: {'; '.join(failed)}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_EPS


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    rank: int


@dataclass
class Sample:
    """One completion: its token ids and, when asked, per position the sampled token's logprob then the top-N."""

    token_ids: list[int]
    logprobs: list[list[TokenLogprob]] | None
    finish_reason: str = "length"


@dataclass
class _RowParams:
    """Per-row settings as (rows, 1) tensors; disabled steps hold values that make them no-ops."""

    temperature: torch.Tensor
    min_p: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    repetition_penalty: torch.Tensor

    @classmethod
    def of(cls, specs: Sequence[SamplingSpec], vocab_size: int) -> _RowParams:
        def column(values: list, kind: type = float) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long if kind is int else torch.float32).unsqueeze(1)

        # Greedy rows skip temperature and truncation, as vLLM's all-greedy path does.
        return cls(
            temperature=column([1.0 if s.greedy else s.temperature for s in specs]),
            min_p=column([0.0 if s.greedy else s.min_p for s in specs]),
            top_k=column([vocab_size if s.greedy or s.top_k <= 0 else min(s.top_k, vocab_size) for s in specs], int),
            # inf rather than 1.0: a cumulative sum that rounds up to 1 must not drop the tail when top-p is off.
            top_p=column([float("inf") if s.greedy or s.top_p >= 1 else s.top_p for s in specs]),
            repetition_penalty=column([s.repetition_penalty for s in specs]),
        )


def process_logits(logits: torch.Tensor, params: _RowParams, seen: torch.Tensor) -> torch.Tensor:
    """vLLM's order: repetition penalty, temperature, min-p, top-k, top-p. Masked tokens get -inf."""
    if (params.repetition_penalty != 1).any():
        penalised = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    logits = logits / params.temperature
    if (params.min_p > 0).any():
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < params.min_p * probs.amax(-1, keepdim=True), float("-inf"))
    if (params.top_k < logits.shape[-1]).any():
        kth = logits.sort(-1, descending=True).values.gather(-1, params.top_k - 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if torch.isfinite(params.top_p).any():
        sorted_logits, order = logits.sort(-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # the argmax always has 0 before it, so it stays
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before >= params.top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def token_logprobs(row_logprobs: torch.Tensor, token: int, top_n: int | None) -> list[TokenLogprob]:
    """The sampled token first (rank = tokens at least as likely), then the top-N others by rank."""
    value = row_logprobs[token]
    entries = [TokenLogprob(token, float(value), int((row_logprobs >= value).sum()))]
    if top_n:
        count = row_logprobs.numel() if top_n == -1 else min(top_n, row_logprobs.numel())
        values, ids = row_logprobs.topk(count)
        entries += [
            TokenLogprob(int(t), float(v), rank)
            for rank, (v, t) in enumerate(zip(values, ids), start=1)
            if int(t) != token
        ]
    return entries


class Engine:
    """An HF causal LM loaded from `model_path` that serves vLLM-style sampling requests, thread-safe."""

    def __init__(
        self,
        model_path: str,
        *,
        seed: int = 0,
        max_model_len: int | None = None,
        logprobs_mode: str = "processed_logprobs",
        load_tokenizer: bool = True,
        dtype: torch.dtype | None = None,
    ):
        if logprobs_mode not in LOGPROBS_MODES:
            raise NotImplementedError(f"logprobs_mode {logprobs_mode!r}: the double implements {LOGPROBS_MODES}")
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        if (
            dtype is not None
        ):  # e.g. bf16, as vLLM down-casts an fp32 checkpoint: a policy that differs from the trained
            self.model = self.model.to(dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path) if load_tokenizer else None
        self.logprobs_mode = logprobs_mode
        self.max_model_len = max_model_len or self.model.config.max_position_embeddings
        self.eos_token_ids = self._eos_token_ids()
        self.pad_token_id = self.model.config.pad_token_id or 0
        self.generator = torch.Generator().manual_seed(seed)  # private: sampling never touches the caller's RNG
        self.lock = threading.Lock()

    def _eos_token_ids(self) -> set[int]:
        # vLLM stops on the tokenizer's EOS plus the generation config's eos ids (added as stop_token_ids).
        candidates = [self.model.config.eos_token_id, self.model.generation_config.eos_token_id]
        if self.tokenizer is not None:
            candidates.append(self.tokenizer.eos_token_id)
        ids = set()
        for value in candidates:
            ids.update(value if isinstance(value, list) else [] if value is None else [value])
        return ids

    def decode(self, token_ids: list[int]) -> str:
        return "" if self.tokenizer is None else self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def generate(self, requests: Sequence[tuple[list[int], SamplingSpec]]) -> list[list[Sample]]:
        """Samples for each (prompt token ids, spec) request: `spec.n` per request, in request order."""
        self.check(requests)
        rows = []
        for prompt, spec in requests:
            generator = self.generator if spec.seed is None else torch.Generator().manual_seed(spec.seed)
            rows += [(list(prompt), spec, generator)] * spec.n
        with self.lock, torch.no_grad():
            samples = self._decode(rows) if rows else []
        grouped, start = [], 0
        for _, spec in requests:
            grouped.append(samples[start : start + spec.n])
            start += spec.n
        return grouped

    def check(self, requests: Sequence[tuple[list[int], SamplingSpec]]) -> None:
        """Raise ValueError on a request vLLM refuses: bad settings, bad token ids, or prompt + max_tokens over
        `max_model_len` (vLLM's server answers 400 with this message; the double never caps a request silently)."""
        for prompt, spec in requests:
            spec.validate()
            self._check_prompt(prompt)
            if len(prompt) + spec.max_tokens > self.max_model_len:
                raise ValueError(
                    f"'max_tokens' or 'max_completion_tokens' is too large: {spec.max_tokens}. This model's maximum "
                    f"context length is {self.max_model_len} tokens and your request has {len(prompt)} input tokens "
                    f"({spec.max_tokens} > {self.max_model_len} - {len(prompt)})."
                )

    def _check_prompt(self, prompt: list[int]) -> None:
        vocab_size = self.model.config.vocab_size
        if not prompt or not all(isinstance(t, int) and 0 <= t < vocab_size for t in prompt):
            raise ValueError(f"a prompt must be a non-empty list of token ids below {vocab_size}, got {prompt!r}")
        if len(prompt) >= self.max_model_len:
            raise ValueError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your request has "
                f"{len(prompt)} input tokens. Please reduce the length of the input."
            )

    def _decode(self, rows: list[tuple[list[int], SamplingSpec, torch.Generator]]) -> list[Sample]:
        prompts, specs, generators = zip(*rows)
        budgets = [spec.max_tokens for spec in specs]  # within max_model_len: `check` refused any request beyond it
        input_ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
        vocab_size = out.logits.shape[-1]
        seen = torch.zeros(len(rows), vocab_size, dtype=torch.bool)  # prompt and output tokens, for the penalty
        for row, prompt in enumerate(prompts):
            seen[row, prompt] = True
        params = _RowParams.of(specs, vocab_size)
        samples = [Sample([], None if spec.logprobs is None else []) for spec in specs]
        active = list(range(len(rows)))
        while active:
            raw = out.logits[:, -1, :].float()
            processed = process_logits(raw, params, seen)
            logprobs = (processed if self.logprobs_mode == "processed_logprobs" else raw).log_softmax(-1)
            next_ids = torch.full((len(rows),), self.pad_token_id, dtype=torch.long)
            for row in active:
                token = self._sample(processed[row], specs[row], generators[row])
                self._append(samples[row], token, logprobs[row], specs[row].logprobs)
                seen[row, token] = True
                next_ids[row] = token
            active = [row for row in active if not self._finished(samples[row], budgets[row])]
            if active:  # finished rows keep being fed padding; their outputs are ignored
                mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype)], dim=1)
                positions = positions[:, -1:] + 1
                out = self.model(
                    input_ids=next_ids[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **_cache_kwargs(out),
                )
        return samples

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        return input_ids, mask

    @staticmethod
    def _sample(row_logits: torch.Tensor, spec: SamplingSpec, generator: torch.Generator) -> int:
        if spec.greedy:
            return int(row_logits.argmax())
        return int(torch.multinomial(row_logits.softmax(-1), 1, generator=generator))

    @staticmethod
    def _append(sample: Sample, token: int, row_logprobs: torch.Tensor, top_n: int | None) -> None:
        sample.token_ids.append(token)
        if sample.logprobs is not None:
            sample.logprobs.append(token_logprobs(row_logprobs, token, top_n))

    def _finished(self, sample: Sample, budget: int) -> bool:
        if sample.token_ids[-1] in self.eos_token_ids:
            sample.finish_reason = "stop"
            return True
        return len(sample.token_ids) >= budget

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy checkpoint-named tensors into the model; returns the names loaded."""
        params = dict(self.model.named_parameters())
        tied = getattr(self.model.config, "tie_word_embeddings", False)
        loaded = set()
        with self.lock, torch.no_grad():
            for name, tensor in weights:
                if tied and name == "lm_head.weight":
                    continue  # vLLM skips it too: the head is the embedding
                if name not in params:
                    raise KeyError(f"{name!r} is not a parameter of the served model")
                param = params[name]
                if param.shape != tensor.shape:
                    raise ValueError(f"{name}: got shape {tuple(tensor.shape)}, the model has {tuple(param.shape)}")
                param.copy_(tensor.to(dtype=param.dtype, device=param.device))
                loaded.add(name)
        return loaded

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the current parameters, by checkpoint name (tied weights once)."""
        with self.lock:
            return {name: p.detach().clone() for name, p in self.model.named_parameters()}


def _cache_kwargs(output) -> dict:
    """The KV cache of a forward, passed back the way this transformers names it (5.20+: `cache`, before:
    `past_key_values`)."""
    if hasattr(output, "cache"):
        return {"cache": output.cache}
    return {"past_key_values": output.past_key_values}
