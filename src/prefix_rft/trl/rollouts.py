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
from typing import Any, Literal

import torch

Role = Literal["on_policy", "hybrid", "no_demo", "solved", "full_demo"]
"""A row's role in its group. on_policy: not a hybrid slot (`core.is_hybrid_row`), generated from its prompt alone.
hybrid: a hybrid slot whose prompt has a demo; it continues the demo's first `len(revealed_ids)` tokens. no_demo: a
hybrid slot whose prompt has no demo, or whose demo has no part to reveal (`prefix_demo_part`), run on-policy. solved:
a hybrid slot run on-policy because its question passed `prefix_rescue_max_success` last time. full_demo: a hybrid slot
whose completion is the whole demo and its EOS, nothing generated (LUFFY, RL+SFT, TRAPO's last level;
`baselines.demo_rows.FullDemoRows` plans it and adds the EOS)."""


@dataclass
class RowPlan:
    """What one local row of a generation batch does.

    `hybrid` (role hybrid or full_demo) is the only definition of "hybrid" the trainer uses (baseline membership,
    advantages, metrics). A hybrid whose prefix rounds to 0 tokens, or whose completion is truncated, stays hybrid.
    `generates` is all generation knows of a role: whether the model samples any of the row's completion.
    `adapted` is not a role: it says where a hybrid's ratio came from.
    """

    role: Role = "on_policy"
    revealed_ids: list[int] = field(default_factory=list)  # demo tokens revealed (before fitting the prompt budget)
    demo_len: int = 0  # tokens of the demo part it reveals a share of (the whole demo unless `prefix_demo_part`)
    ratio: float = 0.0  # the prefix ratio: the schedule's draw, or the question's adapted one
    adapted: bool = False  # `ratio` is its question's adapted one (prefix_success_target), not a draw

    @property
    def hybrid(self) -> bool:
        return self.role in ("hybrid", "full_demo")

    @property
    def generates(self) -> bool:
        """False when the row's completion is given whole (its prefix), so nothing is sampled for it."""
        return self.role != "full_demo"


@dataclass
class Rollout:
    """One generation batch's record, carried from planning through generation and scoring to the loss inputs.

    Created by `_generate_and_score_completions` for a training batch and dropped when it returns; what the loss needs
    (`prefix_mask`, per-token advantages) is written into the batch itself.
    """

    rows: list[RowPlan]  # this rank's rows, in order
    prompts: list[Any]  # this rank's prompts as TRL received them (text or chat messages)
    schedule_step: int  # the step the prefix-ratio schedule was read at
    # per row, the demo tokens that start its completion: `revealed_ids` as rendered after the prompt, fitted to the
    # prompt budget (a full-demo row's followed by EOS: its whole completion)
    prefix_ids: list[list[int]] = field(default_factory=list)
    completion_lens: list[int] = field(default_factory=list)  # per row, prefix included, before any masking
    hint_lens: list[int] = field(default_factory=list)  # per row, demo tokens shown in the prompt (placement 'prompt')
    truncated_tokens: int = 0
    rewards: torch.Tensor | None = None  # (N,) weighted rewards of the whole batch, all ranks, process-major
    is_hybrid: torch.Tensor | None = None  # (N,) bool, `hybrid` of the whole batch, gathered once when it is scored
    # local row -> its (F,) per-function rewards (NaN: None), for rows scored while the batch is generated
    # (`_score_rows`); the batch's scoring keeps them and calls the reward functions on the other rows only
    early_rewards: dict[int, torch.Tensor] = field(default_factory=dict)
    # completions-table columns the reward functions logged (`log_extra`) in those passes, one value per local row
    extra_logs: dict[str, list] = field(default_factory=dict)
    # per metric name, (value, rows of the call) of each `log_metric` call of the batch's scoring passes; the batch's
    # scoring logs their row-weighted mean once (`table_logs.row_weighted_mean`)
    metric_logs: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def hybrid(self) -> list[bool]:
        return [row.hybrid for row in self.rows]

    def local(self, rank: int) -> slice:
        """This rank's rows within the gathered (N,) tensors (`rewards`, `is_hybrid`): process-major."""
        n = len(self.rows)
        return slice(rank * n, (rank + 1) * n)


BUDGET_BUCKETS = 4  # server mode: hybrid budgets are rounded up to one of this many evenly spaced values


def bucket_budget(budget: int, max_budget: int, buckets: int = BUDGET_BUCKETS) -> int:
    """The smallest of the `buckets` budgets ceil(max_budget / buckets) * k (k = 1, 2, ..., capped at `max_budget`)
    that is at least `budget`; a budget of 1 (the discarded sample of a row that generates nothing) stays 1. A row
    sampled with its bucket and cut back to its budget decodes at most ceil(max_budget / buckets) - 1 tokens more than
    it keeps, and only when it has not stopped earlier."""
    if budget <= 1:
        return budget
    width = -(-max_budget // buckets)
    return min(max_budget, -(-budget // width) * width)


def fit_to_context(prompt_len: int, budget: int, max_model_len: int | None, row: int) -> int:
    """`budget` cut so that prompt + new tokens fit the engine's `max_model_len` (vLLM refuses a request whose
    prompt + max_tokens exceeds it). A row cut here ends without EOS, as one that reached its budget."""
    if max_model_len is None:
        return budget
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"generation row {row}: its request (prompt, plus any demo prefix or hint) is {prompt_len} tokens, which "
            f"leaves no room under the engine's max_model_len={max_model_len}; set max_prompt_length below "
            f"max_model_len or raise vllm_max_model_length"
        )
    return min(budget, room)


def per_request_params(base: Any, budgets: list[int]) -> list[Any]:
    """One copy of vLLM `SamplingParams` per request, each with its own `max_tokens`."""
    params = []
    for budget in budgets:
        p = copy.copy(base)
        p.max_tokens = budget
        params.append(p)
    return params


def _prompt_len(prompt: Any) -> int:
    """Tokens of a colocate request: TRL sends `{"prompt_token_ids": ids}` (with images, more keys)."""
    return len(prompt["prompt_token_ids"] if isinstance(prompt, dict) else prompt)


class BudgetedLLM:
    """Wraps a colocated `vllm.LLM` so the next `generate` call gives request i the token budget `budgets[i]`, cut to
    the engine's `max_model_len`.

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
            limit = self._llm.llm_engine.model_config.max_model_len
            budgets = [
                fit_to_context(_prompt_len(p), b, limit, i)
                for i, (p, b) in enumerate(zip(prompts, budgets, strict=True))
            ]
            sampling_params = per_request_params(sampling_params, budgets)
        return self._llm.generate(prompts, sampling_params=sampling_params, **kwargs)


class BudgetedClient:
    """Wraps TRL's `VLLMClient` (main process, server mode) so each prompt is sampled with its own budget.

    TRL calls `generate(prompts, n=1, max_tokens=M, ...)` with every row of every rank. Runs of identical consecutive
    (prompt, budget) pairs (the on-policy rows of a group) are sent once with n = run length. A budget below M is
    rounded up to its bucket (`bucket_budget`: one of 4 evenly spaced values, M among them), and requests that share
    (bucket, n) go in one HTTP call; every call of the step is in flight at once, so the server batches them all. Each
    completion and its logprobs are then cut to the row's own budget: sampling is autoregressive, so a completion cut
    at b tokens has the distribution of one sampled with max_tokens=b, and a cut one has no EOS, as one that reached
    b. The cost is decoding: a row whose sample runs past its budget decodes up to ceil(M/4) - 1 tokens it does not
    keep (docs/scale.md). Budgets are also cut to the server's `max_model_len` (`fit_to_context`), which `/v1/models`
    reports.
    """

    def __init__(self, client: Any, max_model_len: int | None = None, buckets: int = BUDGET_BUCKETS) -> None:
        self._client = client
        self._max_model_len = max_model_len
        self._buckets = buckets
        self.budgets: list[int] | None = None  # every rank's budgets, process-major; set before TRL's call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def max_model_len(self) -> int | None:
        """The served model's context (`/v1/models`, as vLLM reports it), read once."""
        if self._max_model_len is None:
            cards = self._client._get(f"{self._client.base_url}/v1/models")["data"]
            self._max_model_len = cards[0].get("max_model_len")
        return self._max_model_len

    def generate(self, prompts: list, n: int = 1, max_tokens: int = 16, **kwargs: Any) -> dict[str, list]:
        budgets, self.budgets = self.budgets, None
        if budgets is None or kwargs.get("features") is not None:
            return self._client.generate(prompts=prompts, n=n, max_tokens=max_tokens, **kwargs)
        if n != 1 or len(budgets) != len(prompts):
            raise RuntimeError(f"per-row budgets need n=1 and a budget per prompt: n={n}, {len(budgets)} budgets")
        limit = self.max_model_len()
        budgets = [fit_to_context(len(p), b, limit, i) for i, (p, b) in enumerate(zip(prompts, budgets, strict=True))]
        runs = prompt_runs(prompts, budgets)
        calls: dict[tuple[int, int], list[int]] = {}
        for index, (start, length) in enumerate(runs):
            room = max_tokens if limit is None else limit - len(prompts[start])
            bucket = min(bucket_budget(budgets[start], max_tokens, self._buckets), room)
            calls.setdefault((bucket, length), []).append(index)
        results = run_concurrently(
            [
                (
                    lambda key=key, members=members: self._client.generate(
                        prompts=[prompts[runs[m][0]] for m in members], n=key[1], max_tokens=key[0], **kwargs
                    )
                )
                for key, members in calls.items()
            ]
        )
        out = reassemble(runs, list(calls.values()), [key[1] for key in calls], results)
        return cut_to_budgets(out, budgets)


def cut_to_budgets(out: dict[str, list], budgets: list[int]) -> dict[str, list]:
    """Each row's completion ids, logprobs and logprob token ids cut to its budget (`VLLMClient.generate` format)."""
    for key in ("completion_ids", "logprobs", "logprob_token_ids"):
        if out.get(key) is not None:
            out[key] = [list(values)[:budget] for values, budget in zip(out[key], budgets, strict=True)]
    return out


def prompt_runs(prompts: list[list[int]], budgets: list[int]) -> list[tuple[int, int]]:
    """(start, length) of each maximal run of identical consecutive (prompt, budget) pairs."""
    runs: list[tuple[int, int]] = []
    for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
        if runs and prompts[runs[-1][0]] == prompt and budgets[runs[-1][0]] == budget:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


MAX_CONCURRENT_CALLS = 64  # TRL's VLLMClient keeps a pool of 64 connections (_DEFAULT_GENERATION_CONCURRENCY)


def run_concurrently(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Results of `tasks` in order, all running at once (up to TRL's 64 connections) so the server batches them.

    A step makes a few calls (4 buckets x the distinct n); more only when many rows are cut to distinct context rooms.
    """
    if len(tasks) == 1:
        return [tasks[0]()]
    with ThreadPoolExecutor(max_workers=min(len(tasks), MAX_CONCURRENT_CALLS)) as pool:
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
