"""The rules of `prefix-rft protocol` v2 (docs/results.md) as functions of finished runs: each method's best grid
value, the grid's extension beyond an edge, the cut threshold from the tuning seeds' spread of paired differences,
the finalists, and what the CPU-hour budget pays for."""

from __future__ import annotations

import math
import statistics
from typing import Any

from prefix_rft.recipes.toy import SFT_METHODS
from prefix_rft.recipes.toy_methods import stages_of

REFERENCE = "prefix_rft"  # the paper's method: every finalist is also paired against it
BASE_SECONDS = 30.0  # cost of a base run (evaluation only; 19-24 s measured in v1) in the finals' reserve


def grid_field(method: str) -> str:
    """The setting a method's grid varies: SFT methods' SFT learning rate (their RFT stage keeps the RL default),
    the learning rate of every other method."""
    return "sft_learning_rate" if method in SFT_METHODS else "learning_rate"


def grid_scores(tuned: list[dict[str, Any]], k: int) -> dict[str, dict[float, dict[int, float]]]:
    """{method: {grid value: {tuning seed: validation avg@k in %}}}."""
    scores: dict[str, dict[float, dict[int, float]]] = {}
    for run in tuned:
        value = run["settings"][grid_field(run["method"])]
        scores.setdefault(run["method"], {}).setdefault(value, {})[run["seed"]] = (
            100 * run["final"]["validation"][f"avg@{k}"]
        )
    return scores


def best_value(values: dict[float, dict[int, float]]) -> float:
    """The value of the best mean score over seeds; the smaller value on a tie."""
    best = None
    for value in sorted(values):
        if best is None or statistics.fmean(values[value].values()) > statistics.fmean(values[best].values()):
            best = value
    return best


def grid_extension(values: dict[float, dict[int, float]], extended: int, limit: int) -> float | None:
    """The next value to run for a method: its lowest value halved when the best mean is there, its highest doubled
    when the best is there; None when the best is inside the grid or `extended` has reached `limit`."""
    if extended >= limit or len(values) < 2:
        return None
    best = best_value(values)
    if best == min(values):
        return best / 2
    if best == max(values):
        return best * 2
    return None


def choose(tuned: list[dict[str, Any]], k: int) -> dict[str, dict[str, Any]]:
    """Per method, the grid value with the best mean validation avg@k over the tuning seeds (`best_value`), that
    mean in %, the per-seed scores there and whether the value is inside the grid (bracketed)."""
    chosen = {}
    for method, values in grid_scores(tuned, k).items():
        value = best_value(values)
        chosen[method] = {
            "field": grid_field(method),
            "value": value,
            "validation": statistics.fmean(values[value].values()),
            "per_seed": values[value],
            "bracketed": min(values) < value < max(values),
            "grid": {f"{v:g}": statistics.fmean(s.values()) for v, s in sorted(values.items())},
        }
    return chosen


def cut_threshold(chosen: dict[str, dict[str, Any]], multiple: float) -> tuple[float, float]:
    """(sigma, T): sigma is the root mean over methods of the sample variance over tuning seeds of each method's
    paired difference to Prefix-RFT (both at their chosen values); T = multiple x sigma x sqrt(2 / n), n seeds: that
    many standard errors of a difference between two n-seed means."""
    reference = chosen[REFERENCE]["per_seed"]
    variances = []
    for method, c in chosen.items():
        paired = [score - reference[seed] for seed, score in c["per_seed"].items() if seed in reference]
        if method != REFERENCE and len(paired) > 1:
            variances.append(statistics.variance(paired))
    if not variances:
        raise SystemExit("the cut needs at least 2 tuning seeds and one method beside the reference")
    sigma = math.sqrt(statistics.fmean(variances))
    n = len(reference)
    return sigma, multiple * sigma * math.sqrt(2 / n)


def select_finalists(
    chosen: dict[str, dict[str, Any]], cut_points: float, max_finalists: int, budget_bound: bool = True
) -> dict[str, str]:
    """The cut rule: {method: "reference", "final" or why it is dropped}.

    Prefix-RFT is the reference every finalist is paired against, so it runs in the finals whatever its score, like
    the base. Of the others, a method more than `cut_points` behind the best tuned validation score is dropped, and
    the best of the rest by score go to the finals, up to `max_finalists`: what the budget pays for when
    `budget_bound`, else the cap `--max_finalists` sets.
    """
    best = max(c["validation"] for c in chosen.values())
    verdict, finalists = {REFERENCE: "reference"}, 0
    ranked = sorted((m for m in chosen if m != REFERENCE), key=lambda m: -chosen[m]["validation"])
    for method in ranked:
        behind = best - chosen[method]["validation"]
        if behind > cut_points:
            verdict[method] = f"dropped: {behind:.1f} points behind the best (> {cut_points:.1f})"
        elif finalists < max_finalists:
            verdict[method], finalists = "final", finalists + 1
        else:
            verdict[method] = (
                f"cut by budget: beyond the {max_finalists} finalists it pays for"
                if budget_bound
                else f"beyond the cap of {max_finalists} finalists (--max_finalists)"
            )
    return verdict


def median_seconds(runs: list[dict[str, Any]], method: str | None = None) -> float:
    """Median seconds of the finished runs (of `method` when given, falling back to all of them)."""
    own = [r["seconds"] for r in runs if method is None or r["method"] == method]
    return statistics.median(own or [r["seconds"] for r in runs])


def finals_reserve(runs: list[dict[str, Any]], n_seeds: int, max_finalists: int) -> float:
    """Seconds kept for the finals while extending grids: `n_seeds` x (1 + `max_finalists`) runs at the median
    tuning run, plus the base."""
    return n_seeds * ((1 + max_finalists) * median_seconds(runs) + BASE_SECONDS)


def extension_round(
    proposals: dict[str, float], chosen: dict[str, dict[str, Any]], cost: dict[str, float], left: float
) -> tuple[list[str], bool]:
    """The budget's cut of one extension round: of the methods proposing a value, best tuned mean first, those whose
    runs (`cost`, seconds) fit in `left`; the first that does not fit ends all extensions. Returns (methods taken,
    whether the budget bound)."""
    taken = []
    for method in sorted(proposals, key=lambda m: -chosen[m]["validation"]):
        if cost[method] > left:
            return taken, True
        taken.append(method)
        left -= cost[method]
    return taken, False


def affordable_finalists(left: float, per_run: float, n_seeds: int, max_finalists: int) -> int:
    """The largest K <= `max_finalists` whose finals (`n_seeds` x (K others + Prefix-RFT) runs of `per_run`
    seconds, plus the base) fit in `left` seconds; 0 when not even the reference's fit."""
    room = (left - n_seeds * BASE_SECONDS) / (n_seeds * per_run) - 1
    return max(0, min(max_finalists, math.floor(room + 1e-9)))


def sft_only_values(method: str, runs: list[dict[str, Any]]) -> list[float]:
    """The grid values of an early-stopped SFT-then-RL method at which every tuning run left RL no step (SFT ran the
    whole budget): the "SFT only" values; none for other methods."""
    if "sft_best" not in stages_of(method):
        return []
    by_value: dict[float, list[bool]] = {}
    for r in runs:
        if r["method"] == method:
            by_value.setdefault(r["settings"]["sft_learning_rate"], []).append(r["sft_selection"]["rl_steps"] == 0)
    return sorted(value for value, sft_only in by_value.items() if all(sft_only))


FREE_PLAN_FIELDS = {"stage", "jobs", "output_dir", "cache_dir", "rebuild_base"}  # they change no decision


def plan_mismatch(stored: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple]:
    """{name: (then, now)} for every protocol argument or run setting in which the plan `now` ({"arguments": ...,
    "settings": ...}, as JSON holds them) differs from the one an earlier command wrote (`plan.json`), but
    `FREE_PLAN_FIELDS`; a name the stored plan lacks is not compared."""
    return {
        name: (stored[part][name], value)
        for part in ("arguments", "settings")
        for name, value in now[part].items()
        if name not in FREE_PLAN_FIELDS and name in stored.get(part, {}) and stored[part][name] != value
    }
