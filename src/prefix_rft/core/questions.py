"""Per-question evidence for guidance that adapts to each question.

docs/fidelity.md#per-question-ratio, #per-question-rescue and #hpt give the methods that read it.

A question's evidence is the on-policy success rate of its latest group: the share of its scored on-policy rows whose
reward is > 0 (a group "all fails" when none is, ReLIFT's `solve_none`). Two options read it:

* adaptive prefix ratio (after SEELE, arXiv 2509.06923, which keeps accuracy near 50%): after each visit the
  question's ratio moves by ``step * (target - success)``, clipped to [low, high], so a failing question is shown more
  of its demo next time and a solved one less. The first visit uses the ratio the schedule drew.
* rescue (after BREAD, arXiv 2506.17211, which adds expert prefixes only when a whole group fails): the question's
  hybrid slots carry a prefix only while its success is <= `max_success`; a question not seen yet is rescued.

HPT (arXiv 2509.04419) reads the same count in the question's current group instead of a stored record: SFT on the
demo when at most `gate` rollouts solved it, RL otherwise (`hpt_mode`).

The state is plain data (str keys, floats, ints), so it round-trips exactly through JSON, and it is updated only from
gathered (all-rank) rewards in a fixed order, so every rank holds the same state without further communication.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class QuestionRecord:
    """What is known about one question after its latest visit."""

    success: float | None  # on-policy success rate of its latest scored group, in [0, 1]; None: no on-policy row
    ratio: float | None  # prefix ratio its next hybrid rows get; None until a visit carried a prefix (or no target)
    visits: int  # scored groups seen


def on_policy_success(rewards: torch.Tensor, is_hybrid: torch.Tensor) -> float | None:
    """Share of a group's scored on-policy rows whose reward is > 0.

    Args:
        rewards: (G,) rewards of one group; NaN marks a row no reward function scored.
        is_hybrid: (G,) bool, the planned role (a hybrid slot that ran on-policy counts as on-policy).
    Returns:
        The success rate, or None when no on-policy row was scored (no evidence).
    """
    solved, scored = on_policy_solved(rewards, is_hybrid)
    return None if scored == 0 else solved / scored


def on_policy_solved(rewards: torch.Tensor, is_hybrid: torch.Tensor) -> tuple[int, int]:
    """(solved, scored): a group's scored on-policy rows whose reward is > 0, and its scored on-policy rows.

    Args:
        rewards: (G,) rewards of one group; NaN marks a row no reward function scored (neither solved nor scored).
        is_hybrid: (G,) bool, the planned role.
    """
    scored = ~is_hybrid & ~torch.isnan(rewards)  # (G,)
    return int((rewards[scored] > 0).sum()), int(scored.sum())


def guided_success(rewards: torch.Tensor, is_hybrid: torch.Tensor, ratios: torch.Tensor) -> float | None:
    """Share of a group's scored guided rows (hybrid rows that carried a prefix, `ratios` not NaN) whose reward is > 0.

    Args:
        rewards: (G,) rewards of one group; NaN marks an unscored row.
        is_hybrid: (G,) bool planned roles.
        ratios: (G,) float prefix ratio planned for each hybrid row, NaN for the others.
    Returns:
        The success rate of the guided rows, or None when none was scored.
    """
    guided = is_hybrid & ~torch.isnan(ratios) & ~torch.isnan(rewards)  # (G,)
    return None if not guided.any() else float((rewards[guided] > 0).float().mean())


HPT_MODES = ("sft", "rl")


def hpt_mode(solved: int, has_demo: bool, gate: int, gate_off: int) -> str:
    """How HPT (arXiv 2509.04419, `unify_strategy='switch'`) trains a question from its current group.

    'sft' (the demo's NLL, the rollouts dropped) when at most `gate` rollouts solved it, and when at most `gate_off`
    (the authors' code adds the demo there with an off-policy flag that their released SFT loss ignores, so it
    trains as SFT); 'rl' (GRPO on the rollouts, the demo dropped) otherwise, and always for a question without a demo.
    """
    if not has_demo:
        return "rl"
    return "sft" if solved <= max(gate, gate_off) else "rl"


def hpt_group_modes(
    rewards: torch.Tensor, is_hybrid: torch.Tensor, group_size: int, gate: int, gate_off: int
) -> list[str]:
    """`hpt_mode` of every group of a gathered batch; a group has a demo when one of its rows is hybrid.

    Args:
        rewards: (N,) rewards, groups contiguous; NaN marks an unscored row.
        is_hybrid: (N,) bool planned roles (a hybrid row holds the question's demo).
        group_size: G.
    """
    modes = []
    for start in range(0, len(rewards), group_size):
        group = slice(start, start + group_size)
        solved, _ = on_policy_solved(rewards[group], is_hybrid[group])
        modes.append(hpt_mode(solved, bool(is_hybrid[group].any()), gate, gate_off))
    return modes


def next_prefix_ratio(ratio: float, success: float, target: float, step: float, low: float, high: float) -> float:
    """One step of the per-question controller: ``clip(ratio + step * (target - success), low, high)``.

    A proportional step on the success error: below the target the question is shown more of its demo, above it less,
    and a question exactly at the target keeps its ratio.
    """
    return min(high, max(low, ratio + step * (target - success)))


def needs_rescue(success: float | None, max_success: float | None) -> bool:
    """Whether a question's hybrid slots carry a prefix: always without a threshold (paper) or without evidence yet,
    otherwise while its latest on-policy success is at most `max_success` (0 means: only after a group that all
    failed)."""
    return max_success is None or success is None or success <= max_success


@dataclass
class QuestionStats:
    """Evidence and prefix ratio per question key, with the settings that read them.

    Attributes:
        target: success rate the adaptive ratio aims at; None keeps the schedule's ratio (no adaptation).
        step: ratio change per unit of success error.
        low, high: bounds of an adapted ratio.
        max_success: rescue threshold (`needs_rescue`); None gives every question its hybrid rows.
        steer_rows: whose success moves the ratio: "on_policy" (the unaided rows, which the ratio does not act on)
            or "hybrid" (the guided rows, `guided_success`: a closed loop, as SEELE aims its hinted rollouts).
        records: question key -> `QuestionRecord`.
    """

    target: float | None
    step: float
    low: float
    high: float
    max_success: float | None = None
    steer_rows: str = "on_policy"
    records: dict[str, QuestionRecord] = field(default_factory=dict)

    def ratio(self, key: str) -> float | None:
        """The adapted prefix ratio of `key`, or None when the schedule decides (no target, or no record yet)."""
        record = self.records.get(key)
        return None if record is None else record.ratio

    def rescues(self, key: str) -> bool:
        """Whether `key`'s hybrid slots carry a prefix in the next batch."""
        record = self.records.get(key)
        return needs_rescue(None if record is None else record.success, self.max_success)

    def observe(self, key: str, success: float | None, ratio_used: float | None, steer: float | None = None) -> None:
        """Record one scored group of `key`.

        Args:
            success: its on-policy success rate; None for a guided group (no on-policy row).
            ratio_used: mean prefix ratio planned for its hybrid rows, None if it had none; it starts the controller
                when the question has no adapted ratio yet (otherwise the adapted ratio is what was used).
            steer: the success that moves the ratio when `steer_rows` is "hybrid" (its guided rows'); None leaves
                the ratio where it was.
        """
        record = self.records.get(key)
        base = record.ratio if record is not None and record.ratio is not None else ratio_used
        evidence = success if self.steer_rows == "on_policy" else steer
        ratio = base if self.target is not None else None
        if self.target is not None and base is not None and evidence is not None:
            ratio = next_prefix_ratio(base, evidence, self.target, self.step, self.low, self.high)
        visits = 1 if record is None else record.visits + 1
        self.records[key] = QuestionRecord(success=success, ratio=ratio, visits=visits)

    def observe_groups(
        self, keys: list[str], rewards: torch.Tensor, is_hybrid: torch.Tensor, ratios: torch.Tensor, group_size: int
    ) -> list[float]:
        """Record every scored group of a gathered batch, in order (a question twice in a batch is updated twice).

        Args:
            keys: (N,) question key of each row; the G rows of a group share one.
            rewards: (N,) rewards, groups contiguous; NaN marks an unscored row.
            is_hybrid: (N,) bool planned roles.
            ratios: (N,) float64 prefix ratio planned for each hybrid row, NaN for the other rows.
            group_size: G.
        Returns:
            The on-policy success rate of each group that had on-policy evidence, in order (a guided group, every
            row hybrid, is recorded from its guided rows' success when `steer_rows` is "hybrid", and not listed).
        """
        successes = []
        for start in range(0, len(keys), group_size):
            group = slice(start, start + group_size)
            if len(set(keys[group])) != 1:
                raise ValueError(f"rows {start}..{start + group_size - 1} form one group but hold different questions")
            success = on_policy_success(rewards[group], is_hybrid[group])
            steer = guided_success(rewards[group], is_hybrid[group], ratios[group])
            # a guided group (every row hybrid) has no on-policy evidence: its guided rows' success may steer
            if success is None and (self.steer_rows == "on_policy" or steer is None):
                continue
            planned = ratios[group][is_hybrid[group] & ~torch.isnan(ratios[group])]  # (H,)
            ratio_used = float(planned.mean()) if len(planned) else None
            self.observe(keys[start], success, ratio_used, steer)
            if success is not None:
                successes.append(success)
        return successes

    def state_dict(self) -> dict[str, Any]:
        """The records as JSON-ready data (floats survive a JSON round trip exactly)."""
        return {"records": {key: [r.success, r.ratio, r.visits] for key, r in self.records.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the records with those of `state_dict()`; the settings stay this object's own."""
        self.records = {
            key: QuestionRecord(
                success=None if success is None else float(success),
                ratio=None if ratio is None else float(ratio),
                visits=visits,
            )
            for key, (success, ratio, visits) in state["records"].items()
        }
