"""Print, from an exported protocol folder's final runs, the per-seed numbers docs/results.md quotes beside its table:
paired differences per seed, pass@k means, each run's model-selection step and SFT/RL split, and run time.

    python benchmarks/protocol_facts.py docs/benchmarks/protocol_v2

Every value is read from `<folder>/final/<method>/seed<k>.json`; nothing is run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from prefix_rft.recipes.compare import summarize

SPLITS = ("test", "ood")
REFERENCES = ("base", "prefix_rft")


def load_finals(folder: Path) -> dict[str, dict[int, dict]]:
    """{method: {seed: run record}} of the folder's final stage."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted((folder / "final").glob("*/*.json")):
        run = json.loads(path.read_text())
        runs.setdefault(run["method"], {})[run["seed"]] = run
    return runs


def points(run: dict, split: str, metric: str = "avg@4") -> float:
    """A final score of `run` in points (%)."""
    return 100.0 * run["final"][split][metric]


def signed(values: list[float]) -> str:
    return ", ".join(f"{v:+.1f}" for v in values)


def method_lines(method: str, runs: dict[int, dict], summary: dict) -> list[str]:
    """The lines printed for one method; `summary` is `compare.summarize`'s, whose paired differences are per seed."""
    seeds = sorted(runs)
    lines = [f"## {method} (seeds {', '.join(map(str, seeds))})"]
    for split in SPLITS:
        scores = ", ".join(f"{points(runs[s], split):.1f}" for s in seeds)
        lines.append(f"{split} avg@4 per seed: {scores}")
        for ref in REFERENCES:
            if f"{split}_vs_{ref}" in summary:
                lines.append(f"  {split} vs {ref} per seed: {signed(summary[f'{split}_vs_{ref}']['values'])}")
        for k in ("pass@1", "pass@2", "pass@4"):
            if all(k in runs[s]["final"][split] for s in seeds):
                lines.append(f"  {split} {k} mean: {mean(points(runs[s], split, k) for s in seeds):.1f}")
    steps = [runs[s].get("model_selection", {}).get("best_step") for s in seeds]
    if any(step is not None for step in steps):
        lines.append(f"model selection: best step per seed {steps}")
    splits = [
        (runs[s]["sft_selection"]["sft_steps"], runs[s]["sft_selection"].get("rl_steps"))
        for s in seeds
        if "sft_selection" in runs[s]
    ]
    if splits:
        lines.append(f"SFT / RL steps per seed: {splits}")
    seconds = [runs[s]["seconds"] for s in seeds]
    lines.append(f"CPU seconds per run: {min(seconds):.0f}-{max(seconds):.0f}, sum {sum(seconds):.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    all_runs = load_finals(args.folder)
    k = json.loads((args.folder / "plan.json").read_text())["settings"]["eval_k"]
    summary = summarize([r for runs in all_runs.values() for r in runs.values()], k, references=REFERENCES)
    for method in sorted(all_runs):
        print("\n".join(method_lines(method, all_runs[method], summary[method])), end="\n\n")
    total = sum(r["seconds"] for runs in all_runs.values() for r in runs.values())
    print(f"all final runs: {sum(map(len, all_runs.values()))}, {total / 3600:.2f} CPU-hours")


if __name__ == "__main__":
    main()
