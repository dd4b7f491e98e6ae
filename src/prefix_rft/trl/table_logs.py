"""What scoring adds to TRL's logs: the completions table (trained advantages, demo prefix marks, hints) and the
`log_extra` / `log_metric` values of reward functions called on part of a batch (TRAPO's in-step escalation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import gather_object

from prefix_rft.trl.placement import HINT_LABEL, with_hint
from prefix_rft.trl.rollouts import Rollout

PREFIX_MARK = " ⟦/prefix⟧ "  # shown in completions tables where a hybrid's demo prefix ends


def row_weighted_mean(calls: list[tuple[float, int]]) -> float:
    """The mean of `log_metric` values logged by scoring calls over n_i rows each, weighted by n_i: (value, n_i) per
    call. A fraction or mean over a call's completions comes out as the same fraction or mean over all the calls'."""
    return sum(value * n for value, n in calls) / sum(n for _, n in calls)


def mark_prefix(completion: str | list[dict[str, Any]], prefix: str) -> str | list[dict[str, Any]]:
    """`completion` as logged (text, or chat: [{"role": "assistant", "content": ...}]) with `PREFIX_MARK` after
    `prefix`; unchanged if its text does not start with `prefix` (decoding can merge tokens across the boundary)."""
    if isinstance(completion, list):
        content = completion[0]["content"]
        if content.startswith(prefix):
            return [{**completion[0], "content": prefix + PREFIX_MARK + content[len(prefix) :]}]
        return completion
    if completion.startswith(prefix):
        return prefix + PREFIX_MARK + completion[len(prefix) :]
    return completion


class TableLogsMixin:
    """Logging hooks of `PrefixScoringMixin` (over TRL's `GRPOTrainer`, whose `_logs` they edit)."""

    def _row_logger(self, rows: list[int]) -> Callable[[str, list], None]:
        """`log_extra` for a pass over local `rows`: each value is kept at its row's place in the batch's column."""
        logs, size = self._rollout.extra_logs, len(self._rollout.rows)

        def log_extra(column: str, values: list) -> None:
            if len(values) != len(rows):
                raise ValueError(f"log_extra({column!r}) got {len(values)} values for {len(rows)} completions")
            logged = logs.setdefault(column, [None] * size)
            for i, value in zip(rows, values, strict=True):
                logged[i] = value

        return log_extra

    def _metric_logger(self, n: int) -> Callable[[str, float], None]:
        """`log_metric` for a pass over n rows: each value is kept with n, for `_complete_rewards` to merge."""
        logs = self._rollout.metric_logs

        def log_metric(name: str, value: float) -> None:
            logs.setdefault(name, []).append((float(value), n))

        return log_metric

    def _replace_logged_advantages(self, cont_adv: torch.Tensor) -> None:
        """The completions table shows the advantage each row trained with (continuation tokens for hybrids)."""
        logged = self._logs["advantages"]
        for _ in range(min(len(cont_adv), len(logged))):
            logged.pop()
        logged.extend(cont_adv.tolist())

    def _mark_logged_prefixes(self, rollout: Rollout, prefix_lens: torch.Tensor) -> None:
        """Completions tables: a `prefix_len` column, and `PREFIX_MARK` where the demo prefix ends in the text."""
        self._logs["extra"]["prefix_len"].extend(gather_object(prefix_lens.tolist()))
        prefix_texts = [
            self._tokenizer.decode(ids[:n], skip_special_tokens=True) if n else None
            for ids, n in zip(rollout.prefix_ids, prefix_lens.tolist(), strict=True)
        ]
        prefix_texts = gather_object(prefix_texts)
        self._show_logged_hints(rollout)
        logged = self._logs["completion"]
        start = len(logged) - len(prefix_texts)
        for i, prefix in enumerate(prefix_texts):
            if prefix is not None and start + i >= 0:
                logged[start + i] = mark_prefix(logged[start + i], prefix)

    def _show_logged_hints(self, rollout: Rollout) -> None:
        """Completions tables: a hint row's prompt as the model saw it, with its hint (`prefix_placement='prompt'`)."""
        if self.args.prefix_placement != "prompt":  # the same on every rank: no rank skips a gather the others make
            return
        hints = [
            HINT_LABEL + self._tokenizer.decode(row.revealed_ids[:n], skip_special_tokens=True) if n else None
            for row, n in zip(rollout.rows, rollout.hint_lens or [0] * len(rollout.rows), strict=True)
        ]
        hints = gather_object(hints)
        logged = self._logs["prompt"]
        start = len(logged) - len(hints)
        for i, hint in enumerate(hints):
            if hint is not None and start + i >= 0:
                logged[start + i] = with_hint(logged[start + i], hint)
