"""Per-question guidance of `PrefixRFTTrainer`: an adaptive prefix ratio and rescue-only hybrid rows.

Both read one `core.QuestionStats`. Every rank plans its rows from the same state, and the state is updated after
scoring from the gathered rewards and the gathered question keys (one `gather_object` per batch), in the same order on
every rank, so roles and ratios agree across ranks with no further communication. The state rides along with the RNG
state in checkpoints (as ReLIFT's buffer does), so a resumed run plans exactly what the uninterrupted run planned.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch
from accelerate.utils import gather_object

from prefix_rft.core import QuestionStats
from prefix_rft.trl.rollouts import Rollout
from prefix_rft.trl.run_dir import RankState

QUESTIONS_FILE = "prefix_questions.json"


def question_key(row: dict[str, Any]) -> str:
    """A stable key for a dataset row's question: its `id` column when present, else a hash of its prompt.

    Python's `hash` is salted per process, so ranks and resumed runs would disagree; sha256 of the prompt's canonical
    JSON does not.
    """
    if row.get("id") is not None:
        return f"id:{row['id']}"
    text = json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)
    return "prompt:" + hashlib.sha256(text.encode()).hexdigest()[:16]


class QuestionGuidanceMixin:
    """Planning, update and checkpoint hooks of the per-question options (a mixin over TRL's `GRPOTrainer`)."""

    _questions: QuestionStats | None = None  # None unless prefix_success_target or prefix_rescue_max_success is set

    def _init_question_stats(self) -> None:
        args = self.args
        if args.prefix_success_target is None and args.prefix_rescue_max_success is None:
            return
        # An adapted ratio stays inside the schedule's widest window: the floor it decays to, and the ceiling.
        self._questions = QuestionStats(
            target=args.prefix_success_target,
            step=args.prefix_ratio_step,
            low=args.prefix_ratio_floor_end,
            high=args.prefix_ratio_ceiling,
            max_success=args.prefix_rescue_max_success,
            steer_rows=args.prefix_success_rows,
        )

    def _rescues(self, example: dict[str, Any]) -> bool:
        """Whether this question's hybrid slots carry a prefix (`prefix_rescue_max_success`)."""
        return self._questions is None or self._questions.rescues(question_key(example))

    def _question_ratio(self, example: dict[str, Any], drawn: float) -> tuple[float, bool]:
        """(prefix ratio, whether it is the question's adapted one): the schedule's draw until the question has one."""
        ratio = None if self._questions is None else self._questions.ratio(question_key(example))
        return (drawn, False) if ratio is None else (ratio, True)

    def _observe_questions(self, inputs: list[dict[str, Any]], rollout: Rollout) -> None:
        """Update the per-question state from the whole batch (all ranks), identically on every rank, and log it."""
        if self._questions is None:
            return
        local = [
            (question_key(x), row.ratio if row.hybrid else math.nan, row.adapted, row.role == "solved")
            for x, row in zip(inputs, rollout.rows, strict=True)
        ]
        keys, ratios, adapted, solved = zip(*gather_object(local), strict=True)  # (N,) each, process-major
        successes = self._questions.observe_groups(
            list(keys),
            rollout.rewards.cpu(),
            rollout.is_hybrid.cpu(),  # gathered once for the advantages
            torch.tensor(ratios, dtype=torch.float64),  # float64: the ratio that starts a question's controller
            self.num_generations,
        )
        adapted_ratios = [r for r, a in zip(ratios, adapted, strict=True) if a]
        self._log_question_metrics(successes, adapted_ratios, sum(solved))

    def _log_question_metrics(self, successes: list[float], adapted_ratios: list[float], solved_rows: int) -> None:
        """Global metrics (computed from gathered data, so equal on every rank); docs/metrics.md lists them."""
        metrics = self._metrics["train"]
        metrics["prefix/questions_seen"].append(float(len(self._questions.records)))
        if successes:
            metrics["prefix/question_success_mean"].append(sum(successes) / len(successes))
        if self.args.prefix_success_target is not None:
            metrics["prefix/adaptive_rows"].append(float(len(adapted_ratios)))
            if adapted_ratios:
                metrics["prefix/adaptive_ratio_mean"].append(sum(adapted_ratios) / len(adapted_ratios))
                metrics["prefix/adaptive_ratio_min"].append(min(adapted_ratios))
                metrics["prefix/adaptive_ratio_max"].append(max(adapted_ratios))
        if self.args.prefix_rescue_max_success is not None:
            metrics["prefix/solved_rows"].append(float(solved_rows))

    def _question_rank_states(self) -> list[RankState]:
        """The per-question state, as a checkpointed `RankState`, when an option keeps one (`_rank_states`)."""
        questions = self._questions
        if questions is None:
            return []
        return [RankState(QUESTIONS_FILE, "per-question state", questions.state_dict, questions.load_state_dict)]
