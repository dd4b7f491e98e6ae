"""TRAPO's per-question prefix escalation (arXiv 2512.17636; authors' code Su-my/TRAPO), as pure functions and state.

A question's 8 rollouts form four micro-groups in order: 4 rollouts, 2, 1, 1 (stages 1-4). TRAPO counts the solved
rollouts cumulatively: fewer than 2 of the first 4 -> stage 2 is guided by 25% of the demo (level 1); fewer than 4 of
the first 6 -> stage 3 by 50% (level 2); fewer than 7 of the first 7 -> stage 4 is the whole demo (level 3); otherwise
that stage is unguided (level 0). The authors decide each stage from the ones before it inside the step
(`stage_level`, `trapo_escalation="in_step"`); the option "previous_visit" reads the levels of a question's next visit
from its previous group (`EscalationState`), so planning needs no extra generation pass (docs/fidelity.md#trapo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

GROUP_SIZE = 8
STAGE_OF_POSITION = (1, 1, 1, 1, 2, 2, 3, 4)  # micro-group of each position in a group of 8
LEVEL_RATIOS = {1: 0.25, 2: 0.5, 3: 1.0}  # share of the demo a level reveals
THRESHOLDS = (2, 4, 7)  # solved rollouts of stages 1..k needed for stage k + 1 to stay unguided
STAGE_STARTS = (0, 4, 6, 7)  # first position of stages 1-4


def solved(rewards: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the rows that solved their question (reward > 0); a NaN (unscored) row did not."""
    return rewards > 0


def stage_level(stage: int, solved: list[bool]) -> int:
    """The guidance level of stage 2, 3 or 4 from the solved flags (reward > 0) of the positions before it.

    Cumulative counts as the authors' trainer keeps them: stage 2 gets level 1 when fewer than 2 of positions 0-3
    solved it, stage 3 level 2 when fewer than 4 of 0-5 did, stage 4 level 3 when fewer than 7 of 0-6 did (guided
    rows count as any other); otherwise 0, unguided.
    """
    if stage not in (2, 3, 4):
        raise ValueError(f"stage {stage}: only stages 2, 3 and 4 may be guided")
    if len(solved) != STAGE_STARTS[stage - 1]:
        raise ValueError(f"stage {stage} is decided from positions 0-{STAGE_STARTS[stage - 1] - 1}, got {len(solved)}")
    return stage - 1 if sum(solved) < THRESHOLDS[stage - 2] else 0


def trapo_levels(solved: list[bool]) -> tuple[int, int, int]:
    """Guidance levels of stages 2, 3 and 4 from one group's 8 rows in position order (True: reward > 0)."""
    if len(solved) != GROUP_SIZE:
        raise ValueError(f"TRAPO's micro-groups need groups of {GROUP_SIZE} rows, got {len(solved)}")
    return tuple(stage_level(stage, solved[: STAGE_STARTS[stage - 1]]) for stage in (2, 3, 4))


def level_at(position: int, levels: tuple[int, int, int]) -> int:
    """The guidance level of a group position (0-7) under a question's stage levels; stage 1 is never guided."""
    stage = STAGE_OF_POSITION[position]
    return 0 if stage == 1 else levels[stage - 2]


def trains_prefix(position: int) -> bool:
    """Whether a guided row's prefix gets the trust-region SFT loss: every guided row but the first of stage 2.

    The authors' level-1 micro-group has two rollouts from the same 25% prefix and trains the prefix of the second
    only (its `off_seq_loss_mask` [0, 1]), so the prefix is imitated once.
    """
    return position != 4


def demo_index(position: int, n_demos: int) -> int:
    """Which of a question's `n_demos` demos guides a group position, as the authors read two per question: the first
    for the partial prefixes (positions 4-6, so the 25% pair shares its prefix), the second, when there is one, for
    the whole-demo row (position 7)."""
    return 1 if position == GROUP_SIZE - 1 and n_demos > 1 else 0


def prefix_end(demo_ids: list[int], ratio: float, boundary_ids: frozenset[int] = frozenset()) -> int:
    """Demo tokens a level reveals: all of them at ratio 1; else up to and including the first boundary token past
    floor(ratio * n) when it lies before (ratio + 0.3) * n, else floor(ratio * n) (the authors cut at a paragraph
    break, a token holding a blank line).
    """
    n = len(demo_ids)
    if ratio >= 1.0:
        return n
    threshold = int(n * ratio)
    for i, token in enumerate(demo_ids):
        if i > threshold and token in boundary_ids:
            return i + 1 if i < n * (ratio + 0.3) else threshold
    return threshold


@dataclass
class EscalationState:
    """Stage levels per question key, from its latest scored group; plain data that round-trips through JSON."""

    levels: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def of(self, key: str) -> tuple[int, int, int]:
        """The levels of `key`'s next visit: unguided (0, 0, 0) until it has been seen."""
        return self.levels.get(key, (0, 0, 0))

    def observe_groups(self, keys: list[str], rewards: torch.Tensor) -> None:
        """Record every group of a gathered batch in order (a question twice in a batch keeps its last group).

        Args:
            keys: (N,) question key of each row; the 8 rows of a group share one.
            rewards: (N,) rewards, groups contiguous; NaN (unscored) counts as not solved.
        """
        flags = solved(rewards).tolist()
        for start in range(0, len(keys), GROUP_SIZE):
            group = slice(start, start + GROUP_SIZE)
            if len(set(keys[group])) != 1:
                raise ValueError(f"rows {start}..{start + GROUP_SIZE - 1} form one group but hold different questions")
            self.levels[keys[start]] = trapo_levels(flags[group])

    def state_dict(self) -> dict[str, Any]:
        return {"levels": {key: list(levels) for key, levels in self.levels.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.levels = {key: tuple(levels) for key, levels in state["levels"].items()}
