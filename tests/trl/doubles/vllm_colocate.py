"""A `vllm.LLM` double for TRL's colocate mode: the real `VLLMGeneration` code runs, HF generation stands in for vLLM.

Public API:

- `SamplingParams(**fields)`: vLLM's field names and defaults; `StructuredOutputsParams(regex=...)`.
- `FakeLLM(model, **engine_kwargs)`: accepts `vllm.LLM`'s constructor kwargs (recorded in `init_kwargs`) and offers
  `generate(prompts, sampling_params=None, use_tqdm=True)`, `reset_prefix_cache()`, `sleep(level)`, `wake_up(tags)`,
  `llm_engine.model_config.max_model_len` and
  `llm_engine.model_executor.driver_worker.model_runner.model.load_weights([(name, tensor)])`.
  Records: `generate_calls` (one list of `RecordedRequest` per call: prompt token ids, n, max_tokens, completions),
  `loaded_weights` (a copy of the last tensor loaded under each name), `load_weights_calls`,
  `reset_prefix_cache_calls`, `sleep_calls`, `wake_up_calls`.
- `install_colocate_double(monkeypatch, dtype=None) -> list[FakeLLM]`: the engines TRL builds, in creation order;
  `dtype=torch.bfloat16` makes them sample a bf16 copy of the trained weights (TRL's importance ratios are then not 1).

What the installer patches, all in `trl.generation.vllm_generation` (vllm is not installed, so these names are absent
or answer "no"):

- `is_vllm_available`: `VLLMGeneration._init_vllm` raises ImportError without vLLM. The double answers as vLLM
  0.31.0 would. (`trl.import_utils.is_vllm_available` itself is left alone: nothing on this path calls it at run
  time; `GRPOTrainer` makes no availability check of its own in TRL 1.16.)
- `LLM`, `SamplingParams`, `StructuredOutputsParams`: imported from vllm only when it is installed; TRL builds its
  engine and per-call sampling parameters from them. The doubles take their place; everything TRL does around them
  (engine kwargs, `n=1` per row, sleep/wake, weight names, prefix-cache resets) is TRL's own code.
- The environment variables TRL sets for vLLM's external launcher (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
  MASTER_PORT) are restored when the test ends.

What only a GPU run with vLLM can confirm: that vLLM's Llama `load_weights` accepts these names (it fuses q/k/v and
gate/up, which HF's model does not), the sampler's numerics, tensor-parallel groups and the `external_launcher`
executor, sleep mode's real memory release (a level-2 sleep here only marks the weights as discarded and refuses to
generate until every one is reloaded), bitsandbytes quantisation, multimodal prompts and structured outputs.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import pytest
import torch

from .availability import patch_is_vllm_available
from .sampler import Engine, Sample, SamplingSpec

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class StructuredOutputsParams:
    """vLLM's guided-decoding settings; the double accepts them but cannot honour them (generate raises)."""

    json: Any = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None


@dataclass
class SamplingParams:
    """vLLM's `SamplingParams` fields and defaults. Settings the double cannot honour raise NotImplementedError."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputsParams | None = None
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    extra_args: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._spec(room=1).validate()  # vLLM validates the ranges on construction too

    def to_spec(self, room: int) -> SamplingSpec:
        """The engine's settings (`room`: max_model_len less the prompt, what max_tokens=None means); raises
        NotImplementedError for any non-default setting the double ignores."""
        unsupported = [f.name for f in fields(self) if f.name in _UNSUPPORTED and getattr(self, f.name) != f.default]
        if unsupported:
            raise NotImplementedError(f"the vLLM double does not implement {unsupported}")
        return self._spec(room)

    def _spec(self, room: int) -> SamplingSpec:
        return SamplingSpec(
            n=self.n,
            max_tokens=room if self.max_tokens is None else self.max_tokens,  # None: up to the context end
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            logprobs=self.logprobs,
            seed=self.seed,
        )


_UNSUPPORTED = {
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "min_tokens",
    "prompt_logprobs",
    "structured_outputs",
    "logit_bias",
    "allowed_token_ids",
    "bad_words",
}


@dataclass(frozen=True)
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class RecordedRequest:
    """What one prompt of a `generate` call asked for, and the completions it got."""

    prompt_token_ids: list[int]
    n: int
    max_tokens: int | None
    completion_ids: list[list[int]]


@dataclass
class _ModelConfig:
    model: str
    max_model_len: int
    logprobs_mode: str


class _WorkerModel:
    """`model_runner.model`: the only call TRL makes on it is `load_weights`."""

    def __init__(self, llm: FakeLLM):
        self._llm = llm

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        weights = list(weights)
        if "weights" in self._llm.sleeping:
            # vLLM would write into unmapped memory (trl#5142); TRL must wake the weights first.
            raise RuntimeError("load_weights called while the engine's weights sleep")
        loaded = self._llm.engine.load_weights(weights)
        self._llm.load_weights_calls += 1
        for name, tensor in weights:
            self._llm.loaded_weights[name] = tensor.detach().clone()
            self._llm.discarded.discard(name)
        return loaded


@dataclass
class _Chain:
    """Attribute chains TRL walks: `llm_engine.model_executor.driver_worker.model_runner.model`."""

    model_config: Any = None
    model_executor: Any = None
    driver_worker: Any = None
    model_runner: Any = None
    model: Any = None


class FakeLLM:
    """`vllm.LLM` for one process on CPU, backed by an HF model loaded from `model` (a local directory)."""

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        seed: int | None = 0,
        max_model_len: int | None = None,
        enable_sleep_mode: bool = False,
        logprobs_mode: str = "raw_logprobs",
        skip_tokenizer_init: bool = False,
        dtype: torch.dtype | None = None,
        **engine_kwargs: Any,
    ):
        if tensor_parallel_size != 1:
            raise NotImplementedError("the vLLM double runs one engine per process (tensor_parallel_size=1)")
        self.init_kwargs = dict(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            max_model_len=max_model_len,
            enable_sleep_mode=enable_sleep_mode,
            logprobs_mode=logprobs_mode,
            skip_tokenizer_init=skip_tokenizer_init,
            **engine_kwargs,
        )
        self.engine = Engine(
            model,
            seed=seed or 0,
            max_model_len=max_model_len,
            logprobs_mode=logprobs_mode,
            load_tokenizer=not skip_tokenizer_init,
            dtype=dtype,
        )
        self.enable_sleep_mode = enable_sleep_mode
        runner = _Chain(model=_WorkerModel(self))
        self.llm_engine = _Chain(
            model_config=_ModelConfig(model, self.engine.max_model_len, logprobs_mode),
            model_executor=_Chain(driver_worker=_Chain(model_runner=runner)),
        )
        self.generate_calls: list[list[RecordedRequest]] = []
        self.loaded_weights: dict[str, torch.Tensor] = {}
        self.load_weights_calls = 0
        self.reset_prefix_cache_calls = 0
        self.sleep_calls: list[int] = []
        self.wake_up_calls: list[list[str] | None] = []
        self.sleeping: set[str] = set()
        self.discarded: set[str] = set()  # weights a level-2 sleep threw away and no load_weights has restored
        self._request_ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        **kwargs: Any,
    ) -> list[RequestOutput]:
        """Complete each prompt under its own (or the shared) sampling parameters; outputs in prompt order."""
        if lora_request is not None:
            raise NotImplementedError("LoRA requests are not implemented by the vLLM double")
        if self.sleeping or self.discarded:
            raise RuntimeError(
                f"generate on a sleeping engine: asleep {sorted(self.sleeping)}, "
                f"{len(self.discarded)} weights discarded and not reloaded"
            )
        prompts = prompts if isinstance(prompts, list) else [prompts]
        if isinstance(sampling_params, Sequence):
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError("The lengths of prompts and sampling_params must be the same.")
        else:
            params = [sampling_params or SamplingParams()] * len(prompts)
        prompt_ids = [self._prompt_ids(prompt) for prompt in prompts]
        specs = [p.to_spec(self.engine.max_model_len - len(ids)) for p, ids in zip(params, prompt_ids)]
        samples = self.engine.generate(list(zip(prompt_ids, specs)))
        self.generate_calls.append(
            [
                RecordedRequest(ids, p.n, p.max_tokens, [s.token_ids for s in group])
                for ids, p, group in zip(prompt_ids, params, samples)
            ]
        )
        return [self._request_output(ids, p, group) for ids, p, group in zip(prompt_ids, params, samples)]

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, dict):
            if prompt.get("multi_modal_data") is not None:
                raise NotImplementedError("multimodal prompts are not implemented by the vLLM double")
            return list(prompt["prompt_token_ids"])
        if isinstance(prompt, str) and self.engine.tokenizer is not None:
            return self.engine.tokenizer(prompt)["input_ids"]
        raise TypeError(f"unsupported prompt {prompt!r}: pass {{'prompt_token_ids': [...]}}")

    def _request_output(self, prompt_ids: list[int], params: SamplingParams, group: list[Sample]) -> RequestOutput:
        outputs = [self._completion_output(index, sample, params) for index, sample in enumerate(group)]
        return RequestOutput(str(next(self._request_ids)), None, prompt_ids, None, outputs)

    def _completion_output(self, index: int, sample: Sample, params: SamplingParams) -> CompletionOutput:
        logprobs = None
        if sample.logprobs is not None:
            decode = self._decode_token if params.detokenize else lambda token_id: None
            # Insertion order as vLLM's: the sampled token first, then the top-N by rank.
            logprobs = [
                {e.token_id: Logprob(e.logprob, e.rank, decode(e.token_id)) for e in position}
                for position in sample.logprobs
            ]
        cumulative = None if sample.logprobs is None else sum(position[0].logprob for position in sample.logprobs)
        text = self.engine.decode(sample.token_ids) if params.detokenize else ""
        return CompletionOutput(index, text, list(sample.token_ids), cumulative, logprobs, sample.finish_reason)

    def _decode_token(self, token_id: int) -> str | None:
        tokenizer = self.engine.tokenizer
        return None if tokenizer is None else tokenizer.decode([token_id])

    def reset_prefix_cache(self) -> bool:
        self.reset_prefix_cache_calls += 1
        return True

    def sleep(self, level: int = 1) -> None:
        """Level 1 offloads the weights (kept), level 2 discards them; both drop the KV cache."""
        if not self.enable_sleep_mode:
            raise RuntimeError("Sleep mode is not enabled: build the engine with enable_sleep_mode=True")
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level}")
        self.sleep_calls.append(level)
        self.sleeping = {"weights", "kv_cache"}
        if level == 2:
            self.discarded = {name for name, _ in self.engine.model.named_parameters()}

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.wake_up_calls.append(None if tags is None else list(tags))
        self.sleeping -= {"weights", "kv_cache"} if tags is None else set(tags)


def install_colocate_double(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype | None = None) -> list[FakeLLM]:
    """Make TRL's colocate mode build `FakeLLM`s; returns the list the engines are appended to as they are built.

    `dtype` (e.g. torch.bfloat16) makes every engine sample in that dtype: a sampler that is not the trained policy.
    """
    from trl.generation import vllm_generation

    created: list[FakeLLM] = []

    def build_llm(*args: Any, **kwargs: Any) -> FakeLLM:
        llm = FakeLLM(*args, dtype=dtype, **kwargs)
        created.append(llm)
        return llm

    patch_is_vllm_available(monkeypatch, [vllm_generation])
    monkeypatch.setattr(vllm_generation, "LLM", build_llm, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", SamplingParams, raising=False)
    monkeypatch.setattr(vllm_generation, "StructuredOutputsParams", StructuredOutputsParams, raising=False)
    restore_env_on_exit(monkeypatch, LAUNCHER_ENV)
    return created


def restore_env_on_exit(monkeypatch: pytest.MonkeyPatch, names: Iterable[str]) -> None:
    """Have monkeypatch put these variables back as they are now, even if the code under test sets them directly."""
    for name in names:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:  # set then delete, so that undoing deletes whatever was set in between
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
