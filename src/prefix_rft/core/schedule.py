"""Prefix-ratio schedules (docs/fidelity.md#schedule-step and #uniform-schedule).

The share of a demonstration revealed to a hybrid rollout is drawn as
``prefix_ratio = floor_t + (ceiling_t - floor_t) * Beta(a, b)``. Paper (App. A.2): the floor cosine-decays 0.95 -> 0.05
over 500 optimizer steps, the ceiling is a constant 0.95 and a = b = 1 (uniform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

ScheduleKind = Literal["cosine", "linear", "constant"]


class Controller(Protocol):
    def value(self, step: int) -> float: ...


def _warmup(step: int, init: float, decay_steps: int, warmup_ratio: float) -> tuple[float | None, int]:
    """(value during the linear warm-up from 0 to `init`, else None; step counted after the warm-up)."""
    warmup_steps = math.floor(warmup_ratio * decay_steps)
    if step < warmup_steps:
        return step / warmup_steps * init, 0
    return None, step - warmup_steps


@dataclass(frozen=True)
class Constant:
    """A value that never changes."""

    value_: float

    def value(self, step: int) -> float:
        return self.value_


@dataclass(frozen=True)
class CosineDecay:
    """Cosine from `init` to `target` over `decay_steps`, after an optional linear warm-up from 0 to `init`.

    Matches the reference `CosineDecayController`: warmup_steps = floor(warmup_ratio * decay_steps), the cosine runs on
    the step counted after the warm-up, and the value holds at `target` once `decay_steps` have passed.
    """

    init: float
    target: float
    decay_steps: int
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.init == self.target:
            raise ValueError("CosineDecay needs init != target (use Constant for a fixed value)")
        if self.decay_steps <= 0:
            raise ValueError(f"CosineDecay needs decay_steps > 0, got {self.decay_steps}")

    def value(self, step: int) -> float:
        warm, s = _warmup(step, self.init, self.decay_steps, self.warmup_ratio)
        if warm is not None:
            return warm
        if s > self.decay_steps:
            return self.target
        d = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return self.target + d * (self.init - self.target)


@dataclass(frozen=True)
class LinearDecay:
    """Linear warm-up from 0 to `init`, then `init` -> `target` linearly over `decay_steps`, then `target`."""

    init: float
    target: float
    decay_steps: int
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.decay_steps <= 0:
            raise ValueError(f"LinearDecay needs decay_steps > 0, got {self.decay_steps}")

    def value(self, step: int) -> float:
        warm, s = _warmup(step, self.init, self.decay_steps, self.warmup_ratio)
        if warm is not None:
            return warm
        if s >= self.decay_steps:
            return self.target
        return self.init + (self.target - self.init) * s / self.decay_steps


@dataclass(frozen=True)
class Delay:
    """Hold `delay_value` for the first `delay_steps`, then run `inner` on the step counted after the delay."""

    inner: Controller
    delay_steps: int
    delay_value: float = 1.0

    def value(self, step: int) -> float:
        if step < self.delay_steps:
            return self.delay_value
        return self.inner.value(step - self.delay_steps)


def make_controller(
    kind: ScheduleKind, init: float, target: float, decay_steps: int, warmup_ratio: float = 0.0
) -> Controller:
    """Build a controller by name: ``cosine``, ``linear`` or ``constant`` (which uses `init`)."""
    if kind == "cosine":
        return CosineDecay(init, target, decay_steps, warmup_ratio)
    if kind == "linear":
        return LinearDecay(init, target, decay_steps, warmup_ratio)
    if kind == "constant":
        return Constant(init)
    raise ValueError(f"unknown schedule {kind!r}; expected 'cosine', 'linear' or 'constant'")


@dataclass(frozen=True)
class PrefixRatioSampler:
    """Draws prefix ratios in [floor_t, ceiling_t] with a Beta(alpha, beta) shape (alpha = beta = 1 is uniform)."""

    floor: Controller
    ceiling: Controller
    alpha: float = 1.0
    beta: float = 1.0

    def bounds(self, step: int) -> tuple[float, float]:
        """(low, high) at `step`; like the reference, the two are swapped if the floor rises above the ceiling."""
        a, b = self.floor.value(step), self.ceiling.value(step)
        return min(a, b), max(a, b)

    def sample(self, step: int, rng: np.random.Generator) -> float:
        low, high = self.bounds(step)
        u = rng.uniform() if self.alpha == 1.0 and self.beta == 1.0 else rng.beta(self.alpha, self.beta)
        return low + (high - low) * float(u)


def row_rng(seed: int, step: int, group: int, position: int) -> np.random.Generator:
    """A generator keyed by (seed, optimizer step, group index, position in group).

    Every rank derives the same draws for the same row without communication, and a resumed run draws exactly what
    the uninterrupted run drew.
    """
    return np.random.default_rng([seed, step, group, position])


def rollout_index(optimizer_step: int, micro_step: int, accumulation: int, micro_steps_per_rollout: int) -> int:
    """Index of the rollout (generation) batch that starts at this point of training: the reference's schedule step.

    Args:
        optimizer_step: optimizer steps completed (`state.global_step`; restored on resume).
        micro_step: micro-batches already taken inside the current optimizer step, in [0, accumulation).
        accumulation: micro-batches per optimizer step (gradient accumulation).
        micro_steps_per_rollout: micro-batches trained on one generation batch (steps_per_generation x iterations).
    """
    return (optimizer_step * accumulation + micro_step) // micro_steps_per_rollout


def warmup_cosine_weight(step: int, warmup_steps: int, decay_steps: int, peak: float, valley: float) -> float:
    """CHORD's global SFT weight mu at an optimizer step (arXiv 2508.11408; Trinity-RFT's `mu_schedule_function`).

    Linear from 0 to `peak` over `warmup_steps` (step / warmup_steps * peak), then cosine from `peak` to `valley` over
    `decay_steps`, then `valley` for good. With no warm-up and no decay it is `valley` from step 0 (a constant mu).
    """
    if step < warmup_steps:
        return step / warmup_steps * peak
    if step >= warmup_steps + decay_steps:
        return valley
    progress = (step - warmup_steps) / decay_steps
    return valley + (peak - valley) * 0.5 * (1 + math.cos(math.pi * progress))
