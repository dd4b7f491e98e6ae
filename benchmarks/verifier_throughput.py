"""Verifier throughput: `MathVerifier` calls per second on MATH-500 (reference solution vs its answer).

For each worker count and grading mode, a fresh verifier (fresh worker processes) grades all 500 reference solutions
against their gold answers; the timed pass starts once every worker has started. `cold` is that first pass (each gold
parsed for the first time in its worker); `warm` grades the same pairs again on the same verifier (golds cached per
worker, as for the 8 rollouts of a group in training). Median of `--repeats` fresh verifiers.

    python benchmarks/verifier_throughput.py --workers 1 2 --repeats 3 --out runs/benchmarks/verifier_throughput.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import write_report

from prefix_rft.eval.benchmarks import BENCHMARKS, DATA_DIR, read_records


def load_pairs(limit: int | None) -> tuple[list[str], list[str]]:
    """MATH-500's reference solutions and gold answers, from the copy that ships with prefix_rft.eval."""
    rows = read_records(DATA_DIR / BENCHMARKS["math500"][0])
    rows = rows[:limit] if limit else rows
    return [r["solution"] for r in rows], [r["answer"] for r in rows]


def measure(workers: int, mode: str, predictions: list[str], golds: list[str]) -> dict:
    from prefix_rft.verify import MathVerifier

    t0 = time.perf_counter()
    with MathVerifier(num_workers=workers, mode=mode) as verifier:
        verifier.score_batch([r"\boxed{1}"] * workers, ["1"] * workers)  # returns once every worker has started
        startup = time.perf_counter() - t0
        passes = {}
        for name in ("cold", "warm"):
            t1 = time.perf_counter()
            scores = verifier.score_batch(predictions, golds)
            seconds = time.perf_counter() - t1
            passes[name] = {"seconds": seconds, "calls_per_s": len(scores) / seconds, "correct": int(sum(scores))}
        stats = verifier.stats
    return {"startup_s": startup, **passes, "stats": stats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--modes", nargs="+", default=["math_verify", "oat"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="grade only the first N problems")
    p.add_argument("--out", default="runs/benchmarks/verifier_throughput.json")
    args = p.parse_args()
    predictions, golds = load_pairs(args.limit)
    results = []
    print(f"{'mode':<12} {'workers':>7} {'start s':>8} {'cold calls/s':>13} {'warm calls/s':>13} {'correct':>8}")
    for mode in args.modes:
        for workers in args.workers:
            runs = [measure(workers, mode, predictions, golds) for _ in range(args.repeats)]
            row = {
                "mode": mode,
                "workers": workers,
                "calls": len(predictions),
                "startup_s": statistics.median(r["startup_s"] for r in runs),
                "cold_calls_per_s": statistics.median(r["cold"]["calls_per_s"] for r in runs),
                "warm_calls_per_s": statistics.median(r["warm"]["calls_per_s"] for r in runs),
                "correct": runs[0]["cold"]["correct"],
                "runs": runs,
            }
            results.append(row)
            print(
                f"{mode:<12} {workers:>7} {row['startup_s']:8.2f} {row['cold_calls_per_s']:13.1f} "
                f"{row['warm_calls_per_s']:13.1f} {row['correct']:>5}/{len(predictions)}",
                flush=True,
            )
    write_report(args.out, {"settings": vars(args), "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
