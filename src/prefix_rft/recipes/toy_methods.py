"""The methods `prefix-rft compare`, `demo` and `protocol` train on the embedded task: every entry of the registry
(baselines/methods.py), the untrained base, and variants that differ from a registry method only in their data.

Every per-method fact the recipes act on is read from the registry entry here (its stages, trainer, presets,
`uses_demos`), so a new method is one registry entry and a new data variant one `VARIANTS` entry.
"""

from __future__ import annotations

from typing import NamedTuple

from prefix_rft.baselines.methods import METHODS as REGISTRY
from prefix_rft.baselines.methods import Method

BASE = "base"  # the untrained base model, evaluated like every method: the reference row of the comparison


class Variant(NamedTuple):
    """Registry method `of` trained on rows of which only every `demos_every`-th keeps its demos."""

    of: str
    demos_every: int


VARIANTS = {"prefix_rft_demos50": Variant("prefix_rft", demos_every=2)}  # half the training questions keep a demo


def method_spec(method: str) -> Method:
    """The registry entry `method` trains as (a variant's: the method it varies)."""
    return REGISTRY[VARIANTS[method].of if method in VARIANTS else method]


def stages_of(method: str) -> tuple[str, ...]:
    """The stages of `method` in order ("rl", "sft", "sft_best"); none for the base."""
    return () if method == BASE else method_spec(method).stages


def has_sft_stage(method: str) -> bool:
    """Whether `method` trains on the demonstrations with SFT in a stage of its own."""
    return bool({"sft", "sft_best"} & set(stages_of(method)))


# Registry order, RL-only methods first; sft_best_rft: SFT to its best validation accuracy, then RFT for the rest of
# the budget (arXiv 2604.23747).
RL_METHODS = tuple(m for m in (*REGISTRY, *VARIANTS) if stages_of(m) == ("rl",))
SFT_METHODS = tuple(m for m in REGISTRY if has_sft_stage(m))
METHODS = (BASE, *RL_METHODS, *SFT_METHODS)
# Paper's math averages on Qwen2.5-Math-7B (paper Tables 1 and 8), for orientation only.
PAPER_MATH_AVG = {
    "prefix_rft": 51.8,
    "luffy": 50.1,
    "sft_rft": 48.2,
    "relift": 47.8,
    "rft": 45.5,
    "sft": 44.1,
    "rl_sft": 40.1,
    "prefix_rft_freeze_prefix": 45.4,
    "prefix_rft_select_all": 45.7,
}


def uses_demos(method: str) -> bool:
    """Whether `method` trains on or shows any demonstration (the base and `rft` do not)."""
    return method != BASE and method_spec(method).uses_demos


def demos_every(method: str) -> int:
    """Every how many training rows one keeps its demos: 1 but for a `VARIANTS` entry."""
    return VARIANTS[method].demos_every if method in VARIANTS else 1


def rl_stage_method(method: str) -> str:
    """The RL-only method whose trainer, config class and presets train `method`'s RL stage: `method` itself if RL is
    its only stage, else the first RL-only registry method of the same trainer and presets (sft_rft -> rft)."""
    stages = stages_of(method)
    if "rl" not in stages:
        raise ValueError(f"method {method!r} has no RL stage (stages {stages})")
    if stages == ("rl",):
        return method
    spec = method_spec(method)
    for name, other in REGISTRY.items():
        if other.stages == ("rl",) and (other.trainer, other.presets) == (spec.trainer, spec.presets):
            return name
    raise ValueError(
        f"method {method!r}: no RL-only method has its trainer and presets {spec.presets} for its RL stage"
    )


def fixed_sft_steps(method: str, steps: int) -> int:
    """Steps of `method`'s fixed-length "sft" stage in a budget of `steps`: an equal share (all of them alone, half
    before an RL stage), the rounding left to the stage after it; 0 without one ("sft_best" stops at run time)."""
    stages = stages_of(method)
    return steps // len(stages) if "sft" in stages else 0
