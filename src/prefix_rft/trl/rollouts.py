"""The per-rollout record and the generation plumbing that gives every row its own prompt and token budget.

A hybrid row is generated from prompt + demo prefix and may add only `max_completion_length - len(prefix)` tokens.
Stock TRL sends one prompt list with one `max_tokens` to vLLM, and in server mode keeps only every G-th prompt. The
two proxies below sit between TRL's `VLLMGeneration` and the engine (colocate: `vllm.LLM`; server: `VLLMClient`) and
turn that single request into per-row requests, so everything else (weight sync, sleep mode, tensor parallelism,
logprob extraction, the gather/broadcast between ranks) stays TRL's own code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RowPlan:
    """What one local row of a generation batch does.

    `hybrid` is the row's planned role, and the only definition of "hybrid" the trainer uses (baseline membership,
    advantages, metrics): a hybrid slot (`core.is_hybrid_row`) whose prompt has a demo. A hybrid whose prefix rounds
    to 0 tokens, or whose completion is truncated, stays hybrid.
    """

    demo_ids: list[int] = field(default_factory=list)  # demo tokens revealed (before fitting the prompt budget)
    demo_len: int = 0
    sampled_ratio: float = 0.0
    hybrid: bool = False
    no_demo: bool = False  # a hybrid slot whose prompt has no demo, so it runs on-policy
    full_demo: bool = False  # the whole demo (+ EOS) is the completion and nothing is generated (LUFFY, RL+SFT)
    adapted: bool = False  # its prefix ratio is its question's adapted one (prefix_success_target), not a draw
    solved: bool = False  # a hybrid slot run on-policy: its question passed prefix_rescue_max_success last time


@dataclass
class Rollout:
    """One generation batch's record, carried from planning through generation and scoring to the loss inputs.

    Created by `_generate_and_score_completions` for a training batch and dropped when it returns; what the loss needs
    (`prefix_mask`, per-token advantages) is written into the batch itself.
    """

    rows: list[RowPlan]  # this rank's rows, in order
    prompts: list[Any]  # this rank's prompts as TRL received them (text or chat messages)
    schedule_step: int  # the step the prefix-ratio schedule was read at
    prefix_ids: list[list[int]] = field(default_factory=list)  # per row, after fitting the prompt budget
    completion_lens: list[int] = field(default_factory=list)  # per row, prefix included, before any masking
    hint_lens: list[int] = field(default_factory=list)  # per row, demo tokens shown in the prompt (placement 'prompt')
    truncated_tokens: int = 0
    rewards: torch.Tensor | None = None  # (N,) weighted rewards of the whole batch, all ranks, process-major

    @property
    def hybrid(self) -> list[bool]:
        return [row.hybrid for row in self.rows]


def per_request_params(base: Any, budgets: list[int]) -> list[Any]:
    """One copy of vLLM `SamplingParams` per request, each with its own `max_tokens`."""
    params = []
    for budget in budgets:
        p = copy.copy(base)
        p.max_tokens = budget
        params.append(p)
    return params


class BudgetedLLM:
    """Wraps a colocated `vllm.LLM` so the next `generate` call gives request i the token budget `budgets[i]`.

    TRL's colocate path builds one `SamplingParams` for every request; vLLM accepts a list, one per request.
    """

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.budgets: list[int] | None = None  # set just before TRL's generate call, cleared by it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def generate(self, prompts: list, sampling_params: Any = None, **kwargs: Any) -> Any:
        budgets, self.budgets = self.budgets, None
        if budgets is not None:
            if len(budgets) != len(prompts):
                raise RuntimeError(f"{len(budgets)} token budgets for {len(prompts)} vLLM requests")
            sampling_params = per_request_params(sampling_params, budgets)
        return self._llm.generate(prompts, sampling_params=sampling_params, **kwargs)


class BudgetedClient:
    """Wraps TRL's `VLLMClient` (main process, server mode) so each prompt is sampled with its own budget.

    TRL calls `generate(prompts, n=1, max_tokens=M, ...)` with every row of every rank. Runs of identical consecutive
    (prompt, budget) pairs (the on-policy rows of a group) are sent once with n = run length; requests that share
    (budget, n) go in one HTTP call, and the calls run concurrently so the server batches them.
    """

    def __init__(self, client: Any, max_workers: int = 8) -> None:
        self._client = client
        self._max_workers = max_workers
        self.budgets: list[int] | None = None  # every rank's budgets, process-major; set before TRL's call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def generate(self, prompts: list, n: int = 1, max_tokens: int = 16, **kwargs: Any) -> dict[str, list]:
        budgets, self.budgets = self.budgets, None
        if budgets is None or kwargs.get("features") is not None:
            return self._client.generate(prompts=prompts, n=n, max_tokens=max_tokens, **kwargs)
        if n != 1 or len(budgets) != len(prompts):
            raise RuntimeError(f"per-row budgets need n=1 and a budget per prompt: n={n}, {len(budgets)} budgets")
        runs = prompt_runs(prompts, budgets)
        calls: dict[tuple[int, int], list[int]] = {}
        for index, (start, length) in enumerate(runs):
            calls.setdefault((budgets[start], length), []).append(index)
        results = run_concurrently(
            [
                (
                    lambda key=key, members=members: self._client.generate(
                        prompts=[prompts[runs[m][0]] for m in members], n=key[1], max_tokens=key[0], **kwargs
                    )
                )
                for key, members in calls.items()
            ],
            self._max_workers,
        )
        return reassemble(runs, list(calls.values()), [key[1] for key in calls], results)


def prompt_runs(prompts: list[list[int]], budgets: list[int]) -> list[tuple[int, int]]:
    """(start, length) of each maximal run of identical consecutive (prompt, budget) pairs."""
    runs: list[tuple[int, int]] = []
    for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
        if runs and prompts[runs[-1][0]] == prompt and budgets[runs[-1][0]] == budget:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def run_concurrently(tasks: list[Callable[[], Any]], max_workers: int) -> list[Any]:
    """Results of `tasks` in order; several at once so the server can batch them."""
    if len(tasks) == 1:
        return [tasks[0]()]
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(tasks)))) as pool:
        return list(pool.map(lambda task: task(), tasks))


def reassemble(
    runs: list[tuple[int, int]], members: list[list[int]], ns: list[int], results: list[dict[str, list]]
) -> dict[str, list]:
    """Put the completions of grouped calls back in row order, in `VLLMClient.generate`'s output format."""
    total = sum(length for _, length in runs)
    out: dict[str, list] = {"prompt_ids": [None] * total, "completion_ids": [None] * total}
    for key in ("logprobs", "logprob_token_ids"):
        out[key] = [None] * total if all(r.get(key) is not None for r in results) else None
    for run_indices, n, result in zip(members, ns, results, strict=True):
        for j, run_index in enumerate(run_indices):
            start, length = runs[run_index]
            for k in range(length):
                row, choice = start + k, j * n + k
                out["prompt_ids"][row] = result["prompt_ids"][j]
                out["completion_ids"][row] = result["completion_ids"][choice]
                for key in ("logprobs", "logprob_token_ids"):
                    if out[key] is not None:
                        out[key][row] = result[key][choice]
    return out
