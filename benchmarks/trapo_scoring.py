"""TRAPO in_step's reward calls and batch time with a costly reward: a baseline commit's source vs this tree's.

At 5cddbbb `trapo_escalation="in_step"` scored positions 0-6 of each group as their micro-group came and then again
with the whole batch; since then each row is scored once. The reward here spins 2 ms of CPU per row (a stand-in for
a verifier or judge with a fixed cost) and returns 0, so every question escalates fully, alike in both trees
(`trapo_escalation.py`'s setup: 16 prompts x 8 rollouts, the tiny model). Each side runs in its own process with its
`src/` on PYTHONPATH (the baseline's extracted with `git archive`), times `_generate_and_score_completions` of the
same batch `--repeats` times after a warm-up, and counts the rows the reward function is called on. Sides alternate
over `--rounds` processes each; medians of all repeats of a side.

    python benchmarks/trapo_scoring.py --baseline 5cddbbb --rounds 3 --repeats 3 \
        --out docs/benchmarks/trapo_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, write_report

RESULT = "RESULT "  # marks the worker's one line of output among the libraries' logs


class SpinReward:
    """0 for every row after spinning `ms` of this thread's CPU time per row; counts the rows it scores."""

    __name__ = "spin"

    def __init__(self, ms: float):
        self.seconds, self.rows = ms / 1000, 0

    def __call__(self, completions, **kwargs):
        for _ in completions:
            end = time.thread_time() + self.seconds
            while time.thread_time() < end:
                pass
        self.rows += len(completions)
        return [0.0] * len(completions)


def worker(args) -> None:
    """Time `args.repeats` generation batches of the tree on PYTHONPATH; print them as one JSON line."""
    from trapo_escalation import setup, time_batch

    args.steps = 1
    reward = SpinReward(args.reward_ms)
    trainer, batch = setup(args, "in_step", reward)
    prefixes = time_batch(trainer, batch)[2]  # warm-up
    runs = []
    for _ in range(args.repeats):
        reward.rows = 0
        cpu, wall, _ = time_batch(trainer, batch)
        runs.append({"cpu_s": cpu, "wall_s": wall, "rows_scored": reward.rows})
    print(RESULT + json.dumps({"runs": runs, "prefix_tokens_per_group": prefixes[:8]}))


def run_side(args, src: Path) -> dict:
    """One worker process on the source tree `src`."""
    command = [sys.executable, __file__, "--worker", *forwarded(args)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith(RESULT)]
    return json.loads(line[len(RESULT) :])


def forwarded(args) -> list[str]:
    return [
        f"--repeats={args.repeats}",
        f"--prompts={args.prompts}",
        f"--max-completion={args.max_completion}",
        f"--model-size={args.model_size}",
        f"--reward-ms={args.reward_ms}",
    ]


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in ("cpu_s", "wall_s", "rows_scored")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="5cddbbb", help="commit whose src/ is the baseline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-completion", type=int, default=64)
    p.add_argument("--model-size", default="1m")
    p.add_argument("--reward-ms", type=float, default=2.0)
    p.add_argument("--out", default="docs/benchmarks/trapo_scoring.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", args.baseline, "src"], cwd=REPO_ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        sides = {args.baseline: Path(tmp) / "src", "this tree": REPO_ROOT / "src"}
        results = {name: [] for name in sides}
        for round_ in range(args.rounds):  # alternating, so a drift in the machine's load hits both alike
            for name in list(sides)[round_ % 2 :] + list(sides)[: round_ % 2]:
                results[name].append(run_side(args, sides[name]))
    prefixes = {name: [r["prefix_tokens_per_group"] for r in rs] for name, rs in results.items()}
    if len({json.dumps(p) for ps in prefixes.values() for p in ps}) != 1:
        raise RuntimeError(f"the two trees guided different rows: {prefixes}")
    runs = {name: [run for r in rs for run in r["runs"]] for name, rs in results.items()}
    median = {name: median_of(rs) for name, rs in runs.items()}
    old, new = median[args.baseline], median["this tree"]
    ratios = {f"this tree / {args.baseline} {key}": new[key] / old[key] for key in ("cpu_s", "wall_s", "rows_scored")}
    shapes = {"rows": 8 * args.prompts, "prefix_tokens_per_group": prefixes["this tree"][0]}
    print(json.dumps({"median": median, "ratios": ratios, "shapes": shapes}, indent=1))
    write_report(
        args.out, {"settings": vars(args), "shapes": shapes, "median": median, "ratios": ratios, "runs": runs}
    )


if __name__ == "__main__":
    main()
