"""The reports of `prefix-rft protocol`: the tuning table (tuning.md, from selection.json), and the finals' results
table, paired-difference plot and results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefix_rft.recipes.compare import plot, summarize
from prefix_rft.recipes.protocol_rules import REFERENCE
from prefix_rft.recipes.toy import BASE


def results_table(summary: dict[str, dict[str, Any]], chosen: dict[str, dict], k: int, used: dict[str, dict]) -> str:
    """Finals, best test mean first: accuracy (mean ± sd), paired differences (mean [95% interval]), tuned value,
    labelled questions and demo tokens offered, in rows and trained (`used`: a run's `inputs` per method)."""

    def diff(s: dict, key: str) -> str:
        d = s.get(key)
        if d is None:
            return ""
        half = d["ci95"] or 0.0
        return f"{d['mean']:+.1f} [{d['mean'] - half:+.1f}, {d['mean'] + half:+.1f}]"

    lines = [
        f"| method | tuned | test avg@{k} (%) | OOD avg@{k} (%) | test vs base | OOD vs base | test vs prefix_rft "
        "| OOD vs prefix_rft | seeds | labelled questions | demo tokens offered | demo tokens in rows "
        "| demo tokens trained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in sorted(summary.items(), key=lambda kv: -kv[1]["test"]["mean"]):
        c = chosen.get(method)
        tuned = f"{c['field']}={c['value']:g}" if c else ""
        lines.append(
            f"| {method} | {tuned} | {s['test']['mean']:.1f} ± {s['test']['sd']:.1f} | {s['ood']['mean']:.1f} ± "
            f"{s['ood']['sd']:.1f} | {diff(s, 'test_vs_base')} | {diff(s, 'ood_vs_base')} | "
            f"{diff(s, f'test_vs_{REFERENCE}')} | {diff(s, f'ood_vs_{REFERENCE}')} | {len(s['test']['values'])} | "
            f"{used.get(method, {}).get('labelled_questions', '')} | "
            f"{used.get(method, {}).get('demo_tokens_offered', '')} | "
            f"{used.get(method, {}).get('demo_tokens_in_rows', '')} | "
            f"{used.get(method, {}).get('demo_tokens_trained', '')} |"
        )
    return "\n".join(lines)


def tuning_table(selection: dict[str, Any], k: int) -> str:
    """The tuning stage as selection.json records it, best validation mean first: each grid value's mean over the
    tuning seeds (the chosen one in bold), the per-seed scores at the chosen value, the grid's edge status and the
    cut's verdict; then the spread, the cut and the budget."""
    lines = [
        f"| method | grid field | validation avg@{k} (%) per grid value, mean of the tuning seeds | chosen | per seed "
        "at the chosen value | grid | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, c in sorted(selection["chosen"].items(), key=lambda kv: -kv[1]["validation"]):
        chosen = f"{c['value']:g}"
        sft_only = {f"{v:g}" for v in c.get("sft_only_values", [])}
        cells = []
        for value, mean in c["grid"].items():
            cell = f"**{value}: {mean:.1f}**" if value == chosen else f"{value}: {mean:.1f}"
            cells.append(f"{cell} (SFT only)" if value in sft_only else cell)
        grid = ", ".join(cells)
        seeds = ", ".join(f"{seed}: {score:.1f}" for seed, score in c["per_seed"].items())
        note = " (SFT only)" if c.get("sft_only") else ""
        lines.append(
            f"| {method} | {c['field']} | {grid} | {chosen}{note} | {seeds} | {c.get('edge') or 'bracketed'} | "
            f"{selection['verdict'][method]} |"
        )
    lines.append("")
    lines.append(
        f"Spread of paired differences to {REFERENCE} over the tuning seeds: sigma = {selection['sigma']:.2f} points; "
        f"cut {selection['threshold']:.2f} points behind the best; the budget pays for "
        f"{selection['finalists_affordable']} finalists; tuning spent {selection['spent_hours']:.1f} CPU-hours."
    )
    return "\n".join(lines)


def has_grids(selection: dict[str, Any]) -> bool:
    """Whether selection.json records the grids a tuning table shows (v2; v1 kept only the chosen values)."""
    return "sigma" in selection and all("grid" in c for c in selection["chosen"].values())


def tuning_markdown(selection: dict[str, Any], k: int) -> str:
    """tuning.md: the tuning table under its title."""
    return f"# prefix-rft protocol: tuning\n\n{tuning_table(selection, k)}\n"


def plot_differences(summary: dict[str, dict[str, Any]], path: Path) -> None:
    """Paired differences with their 95% intervals: against the base and against Prefix-RFT, test and OOD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (f"{split}_vs_{ref}", f"{split.upper() if split == 'ood' else split} vs {ref}")
        for ref in (BASE, REFERENCE)
        for split in ("test", "ood")
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 0.5 * len(summary) + 1.5), sharey=True)
    names = sorted(summary, key=lambda m: summary[m]["test"]["mean"])
    for ax, (key, title) in zip(axes, panels, strict=True):
        for y, method in enumerate(names):
            d = summary[method].get(key)
            if d is not None:
                ax.errorbar(d["mean"], y, xerr=d["ci95"] or 0.0, fmt="o", capsize=3, color="tab:blue")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set(title=title, xlabel="points (mean, 95% interval over seeds)")
    axes[0].set_yticks(range(len(names)), names)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def inputs_by_method(runs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{method: each `inputs` count, its mean over the method's runs (seeds), rounded}; runs without `inputs` (v1's,
    docs/benchmarks/protocol) are left out."""
    by_method: dict[str, list[dict[str, int]]] = {}
    for r in runs:
        if "inputs" in r:
            by_method.setdefault(r["method"], []).append(r["inputs"])
    return {m: {key: round(sum(i[key] for i in seen) / len(seen)) for key in seen[0]} for m, seen in by_method.items()}


def report(results: list[dict[str, Any]], selection: dict[str, dict], k: int, out: Path) -> str:
    """Write the finals' summary (results.json, results.md and the two plots) to `out`; returns the table."""
    summary = summarize(results, k, references=(BASE, REFERENCE))
    table = results_table(summary, selection["chosen"], k, inputs_by_method(results))
    write_json(out / "results.json", {"summary": summary, "selection": selection})
    (out / "results.md").write_text(
        f"# prefix-rft protocol\n\n{table}\n\n![results](results.png)\n\n![differences](differences.png)\n"
    )
    plot(results, summary, out / "results.png")
    plot_differences(summary, out / "differences.png")
    return table
