"""Wall time of `prefix-rft demo` by stage, from the `results.json` it writes.

    python benchmarks/demo_stages.py [runs/demo/results.json] [--json runs/benchmarks/demo_stages.json]

Besides the demo's own stages (`timings_s`), the training stage is split with the trainer's log: TRL's per-step
`step_time` (generation, rewards, loss forward and backward of each step, summed) and the rest (optimizer steps,
accuracy-curve evaluations, the final evaluation, set-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import write_report

TRAIN_STAGE = "Prefix-RFT training + final evaluation"


def stages(report: dict) -> dict:
    timings = dict(report["timings_s"])
    steps = [h["step_time"] for h in report.get("log_history", []) if "step_time" in h]
    out = {"stages_s": timings, "total_s": sum(timings.values())}
    if steps:
        out["train_steps"] = len(steps)
        out["train_steps_s"] = sum(steps)
        out["median_step_s"] = statistics.median(steps)
        if TRAIN_STAGE in timings:
            out["train_stage_other_s"] = timings[TRAIN_STAGE] - sum(steps)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default="runs/demo/results.json")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args()
    report = json.loads(Path(args.results).read_text())
    s = stages(report)
    total = s["total_s"]
    print(f"{'stage':<45} {'seconds':>9} {'share':>7}")
    for name, seconds in s["stages_s"].items():
        print(f"{name:<45} {seconds:9.1f} {seconds / total:7.1%}")
    if "train_steps" in s:
        label = f"  of which training steps ({s['train_steps']}, step_time)"
        print(f"{label:<45} {s['train_steps_s']:9.1f}")
        if "train_stage_other_s" in s:
            print(f"{'  of which optimizer, evaluations, set-up':<45} {s['train_stage_other_s']:9.1f}")
        print(f"{'  median step_time':<45} {s['median_step_s']:9.2f}")
    print(f"{'total':<45} {total:9.1f}")
    if args.json:
        write_report(args.json, {"results": args.results, "settings": report.get("settings", {}), **s})


if __name__ == "__main__":
    main()
