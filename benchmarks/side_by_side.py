"""Two protocol runs one after the other on all cores, against the same two side by side with the cores shared out.

`prefix-rft protocol --jobs N` runs N fresh processes at once with cpu_count // N threads each. This measures which
is faster for the protocol's own runs on this machine: the wall time of a pair of identical short tuning-style runs
(`prefix_rft`, the protocol's settings, fewer steps), `--jobs 1` then `--jobs 2`, alternating, median over repeats.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/side_by_side.py --steps 12 --repeats 3 \
        --out docs/benchmarks/side_by_side.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from prefix_rft.recipes.protocol import Job, run_jobs
from prefix_rft.recipes.settings import RunSettings


def pair(settings: RunSettings, root: Path) -> list[Job]:
    """Two identical runs (same method, seed and settings) writing to different files."""
    return [Job("prefix_rft", 100, settings, root / f"run{i}.json") for i in range(2)]


def wall_time(settings: RunSettings, n_jobs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        run_jobs(pair(settings, Path(tmp)), n_jobs, f"jobs={n_jobs}")
        return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    # The protocol's tuning settings (question_epochs 4, 256 validation problems x 4 samples), fewer steps.
    settings = RunSettings(steps=args.steps, question_epochs=4, evaluate_on="validation", curve_every=args.steps)
    times: dict[str, list[float]] = {"jobs=1": [], "jobs=2": []}
    for _ in range(args.repeats):  # alternating, so a drift in the machine's load hits both alike
        for n_jobs in (1, 2):
            times[f"jobs={n_jobs}"].append(wall_time(settings, n_jobs))
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    result = {
        "what": "wall seconds of two identical prefix_rft runs: one after the other (jobs=1), side by side (jobs=2)",
        "settings": dataclasses.asdict(settings),
        "seconds": times,
        "median_seconds": medians,
        "ratio_side_by_side_over_sequential": medians["jobs=2"] / medians["jobs=1"],
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("median_seconds", "ratio_side_by_side_over_sequential")}))


if __name__ == "__main__":
    main()
