"""Tables and plots of training runs (PNG via matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CURVE_KEYS = {
    "reward": [("reward/on_policy", "on-policy rows"), ("reward/hybrid", "hybrid rows")],
    "prefix ratio": [("prefix/ratio_floor", "floor"), ("prefix/ratio_mean", "mean of hybrids")],
    "entropy": [("entropy/continuation", "generated tokens"), ("entropy/prefix", "demo-prefix tokens")],
}


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(result: dict[str, Any], path: Path) -> None:
    """Four panels: rewards of hybrid and on-policy rows, accuracy, prefix-ratio floor and mean, entropy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    history = result["log_history"]
    for ax, (title, keys) in zip([axes[0], axes[2], axes[3]], CURVE_KEYS.items(), strict=True):
        for key, label in keys:
            ax.plot(*_series(history, key), label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    curve = result["curve"]
    for split in ("test", "ood"):
        axes[1].plot([p["step"] for p in curve], [p[split] for p in curve], marker="o", label=f"{split} avg@1")
    axes[1].set_title("accuracy (T 0.6, top-p 0.95)")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_table(result: dict[str, Any]) -> str:
    k = result["settings"]["eval_k"]
    rows = ["| split | metric | base | Prefix-RFT |", "|---|---|---|---|"]
    for split, name in (("test", "in-distribution test"), ("ood", "out-of-distribution")):
        for metric in (f"avg@{k}", f"pass@{k}"):
            b, a = result["before"][split][metric], result["after"][split][metric]
            rows.append(f"| {name} | {metric} | {100 * b:.1f} | {100 * a:.1f} |")
    return "\n".join(rows)


def write_demo_report(result: dict[str, Any], path: Path) -> str:
    """Markdown report with the before/after table, timings and the curves; returns the table."""
    settings = result["settings"]
    table = demo_table(result)
    timings = "\n".join(f"| {stage} | {seconds:.0f} |" for stage, seconds in result["timings_s"].items())
    text = f"""# Prefix-RFT demo

Embedded arithmetic task, tiny base model `{result["base_model"]}`, {settings["steps"]} Prefix-RFT steps of
{settings["prompts_per_step"]} questions x 8 rollouts (1 hybrid), seed {settings["seed"]}. Accuracy in %,
{settings["eval_problems"]} problems per split, sampled at temperature 0.6, top-p 0.95.

{table}

![training curves](curves.png)

| stage | seconds |
|---|---|
{timings}
"""
    path.write_text(text)
    return table
