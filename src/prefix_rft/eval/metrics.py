"""avg@k and the unbiased pass@k estimator, per benchmark and averaged as in the paper's Table 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import comb

# Table 1's "Math avg" is the unweighted mean of these six (avg@32 on the first three, pass@1 on the rest).
TABLE1_BENCHMARKS = ("aime24", "aime25", "amc", "math500", "minerva", "olympiadbench")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct.

    1 - C(n-c, k) / C(n, k), the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def reported_ks(n: int) -> list[int]:
    """pass@k is reported for k = 1, 2, 4, ... up to n, and for n itself."""
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    return ks if ks[-1] == n else [*ks, n]


def summarize(scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """Metrics of one benchmark from its (problems, n) scores; a sample is correct when its score is 1.

    avg@n is the mean score over all samples (the paper's avg@32). pass@1 equals it for 0/1 scores.
    """
    if not scores:
        raise ValueError("no problems to summarize")
    n = len(scores[0])
    if n == 0 or any(len(row) != n for row in scores):
        raise ValueError("every problem needs the same, non-zero number of samples")
    metrics: dict[str, float] = {"problems": len(scores), "samples_per_problem": n}
    metrics[f"avg@{n}"] = sum(map(sum, scores)) / (len(scores) * n)
    correct = [sum(score >= 1.0 for score in row) for row in scores]
    for k in reported_ks(n):
        metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(scores)
    return metrics


def average(per_benchmark: Mapping[str, Mapping[str, float]]) -> dict[str, object]:
    """Unweighted mean of each metric over Table 1's benchmarks that were evaluated (all of them if none were).

    GSM8K is not in Table 1, so it is left out of the average whenever a Table 1 benchmark is present.
    """
    names = [name for name in per_benchmark if name in TABLE1_BENCHMARKS] or list(per_benchmark)
    shared = set.intersection(*(set(per_benchmark[name]) for name in names)) if names else set()
    keys = [key for key in next(iter(per_benchmark.values()), {}) if key in shared and "@" in key]
    return {"benchmarks": names, **{key: sum(per_benchmark[n][key] for n in names) / len(names) for key in keys}}
