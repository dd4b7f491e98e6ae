"""Plot what each measured base gives up: its share of test problems out of reach against what the demo gains on it.

Reads pairs of recorded JSONs from docs/benchmarks/ (made by `tasks_difficulty.py` and `demo_seeds.py`; the
commands are in docs/tasks.md), prints a markdown table and writes a PNG with one point per base: x is the share
of in-distribution test problems at pass@8 = 0 (the issue asks for at least 30%), y is the 3-seed gain of 60
Prefix-RFT steps over the base, mean and sd, in distribution and out of distribution.

Run: python benchmarks/base_tradeoff.py [--docs docs] [--out docs/base_tradeoff.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# label -> suffix of the pair of JSONs (tasks_difficulty<suffix>.json, demo_seeds<suffix>.json)
BASES = {
    "first default (coarse up to 4 terms)": "",
    "rewrite demonstrator": "_rewrite",
    "slips 0.25": "_slips",
    "coarse up to 6 terms": "_6_terms",
    "all lengths": "_all_lengths",
    "all lengths, 800 steps": "_all_lengths_800",
    "all lengths, slips 0.35": "_all_lengths_slips",
    "all lengths, sloppy coarse lines, exact steps (default)": "_sloppy",
}
TARGET = 0.30  # the least share of test problems at pass@8 = 0


def load_rows(docs: Path) -> list[dict]:
    """One row per base whose two JSONs are both recorded."""
    rows = []
    for label, suffix in BASES.items():
        difficulty, seeds = docs / f"tasks_difficulty{suffix}.json", docs / f"demo_seeds{suffix}.json"
        if not (difficulty.exists() and seeds.exists()):
            continue
        hard = json.loads(difficulty.read_text())
        summary = json.loads(seeds.read_text())["summary"]
        rows.append(
            {
                "base": label,
                "train_pass1": 100 * hard["train"]["pass@1"],
                "out_of_reach": 100 * hard["test"]["frac_pass@8=0"],
                "test_gain": summary["test_gain"],
                "ood_gain": summary["ood_gain"],
                "test_seeds": summary["test_trained_beats_base_seeds"],
                "ood_seeds": summary["ood_trained_beats_base_seeds"],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| base | train pass@1 (%) | test pass@8 = 0 (%) | test gain | OOD gain | seeds > base (test, OOD) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["out_of_reach"]):
        t, o = r["test_gain"], r["ood_gain"]
        lines.append(
            f"| {r['base']} | {r['train_pass1']:.1f} | {r['out_of_reach']:.1f} | {t['mean']:+.1f} ± {t['sd']:.1f} "
            f"| {o['mean']:+.1f} ± {o['sd']:.1f} | {r['test_seeds']}/3, {r['ood_seeds']}/3 |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True)
    for ax, key, title in zip(
        axes, ("test_gain", "ood_gain"), ("in-distribution test", "out of distribution"), strict=True
    ):
        for r in rows:
            ax.errorbar(r["out_of_reach"], r[key]["mean"], yerr=r[key]["sd"], fmt="o", capsize=3, label=r["base"])
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvspan(100 * TARGET, 50, color="tab:green", alpha=0.08, label="meets the 30% target")
        ax.set_xlim(0, 50)
        ax.set_xlabel("test problems at pass@8 = 0 in the base (%)")
        ax.set_ylabel("gain of 60 Prefix-RFT steps (points, 3 seeds)")
        ax.set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.16, 1, 1))  # room for the legend below the panels
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"), help="where the JSONs are")
    parser.add_argument("--out", type=Path, default=Path("docs/base_tradeoff.png"), help="the PNG to write")
    args = parser.parse_args()
    rows = load_rows(args.docs)
    if not rows:
        raise SystemExit(f"no pair of tasks_difficulty*/demo_seeds* JSONs in {args.docs}")
    print(table(rows))
    plot(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
