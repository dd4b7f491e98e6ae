"""Run `prefix-rft demo` over several seeds and report base vs trained accuracy, mean and sd (docs/tasks.md).

Each seed changes the training prompts' order, the sampling and the prefix draws; the base model is the same cached
one. The evaluation problems are drawn per seed too, so base and trained are compared on the same problems.

Run: python benchmarks/demo_seeds.py [--seeds 3] [--out runs/demo_seeds/summary.json] [demo flags, e.g. --steps]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import write_report

from prefix_rft.recipes.compare import stats
from prefix_rft.recipes.demo import run
from prefix_rft.recipes.settings import parse_settings


@dataclass
class SeedArguments:
    seeds: int = field(default=3, metadata={"help": "seeds 0..N-1"})
    output_dir: str = field(default="runs/demo_seeds", metadata={"help": "one demo output dir per seed goes here"})
    out: str = field(default="runs/demo_seeds/summary.json", metadata={"help": "where the summary JSON goes"})


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean and sample sd of fractions, in percent, rounded for the JSON."""
    s = stats([100 * v for v in values])
    return {"mean": round(s["mean"], 2), "sd": round(s["sd"], 2)}


def main() -> None:
    settings, args = parse_settings(None, SeedArguments, prog="benchmarks/demo_seeds.py")
    k = settings.eval_k

    per_seed = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        report = run(settings, seed, Path(args.output_dir) / f"seed{seed}")
        row = {"seed": seed, "seconds": round(time.perf_counter() - start, 1)}
        for split in ("test", "ood"):
            row[f"{split}_base"] = report["before"][split][f"avg@{k}"]
            row[f"{split}_trained"] = report["after"][split][f"avg@{k}"]
        per_seed.append(row)
        print(json.dumps(row), flush=True)

    summary = {}
    for key in ("test_base", "test_trained", "ood_base", "ood_trained"):
        summary[key] = mean_sd([r[key] for r in per_seed])
    for split in ("test", "ood"):
        gains = [r[f"{split}_trained"] - r[f"{split}_base"] for r in per_seed]  # paired: same problems per seed
        summary[f"{split}_gain"] = mean_sd(gains)
        summary[f"{split}_trained_beats_base_seeds"] = sum(g > 0 for g in gains)
    result = {"metric": f"avg@{k} (%)", "settings": vars(settings), "per_seed": per_seed, "summary": summary}
    write_report(args.out, result)

    print(f"\n| split | base avg@{k} | Prefix-RFT avg@{k} | gain, paired by seed | seeds where trained > base |")
    print("|---|---|---|---|---|")
    for split in ("test", "ood"):
        b, t, g = (summary[f"{split}_{key}"] for key in ("base", "trained", "gain"))
        wins = summary[f"{split}_trained_beats_base_seeds"]
        row = f"{b['mean']} ± {b['sd']} | {t['mean']} ± {t['sd']} | {g['mean']:+} ± {g['sd']} | {wins}/{args.seeds}"
        print(f"| {split} | {row} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
