"""`prefix-rft compare`: baselines and Prefix-RFT at equal budgets on the embedded task, over several seeds.

Each (method, seed) run writes `<output-dir>/runs/<method>/seed<k>.json`; finished runs are not redone, so an
interrupted comparison continues where it stopped; one made with other settings, or whose recorded trainer config of
a stage (`config`) differs from what this code builds for it (but in fields that acted on neither, `inert_fields`,
and in options added since, built at their default, `predated_fields`), is refused. The summary goes to `results.md`,
`results.json` and `results.png` (accuracy against step per method, and final accuracy with error bars).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefix_rft.recipes.settings import RunSettings, check_run_paths, parse_settings, require_test_scoring
from prefix_rft.recipes.toy import (
    BASE,
    METHODS,
    PAPER_MATH_AVG,
    built_configs,
    config_record,
    method_budgets,
    recorded_sft_steps,
    run_method,
)
from prefix_rft.setup_errors import SetupError, blame, reports_setup_errors, setup_stage
from prefix_rft.trl.fields import NO_HYBRID_PREFIX_FIELDS


@dataclass
class CompareArguments:
    methods: str = field(
        default="base,prefix_rft,rft,sft,sft_rft,rl_sft,luffy,relift",
        metadata={"help": f"comma-separated, from: {', '.join(METHODS)}"},
    )
    seeds: str = field(default="3", metadata={"help": "N (seeds 0..N-1) or a comma-separated list, e.g. 11,12,13"})
    output_dir: str = field(default="runs/compare", metadata={"help": "results and per-run JSON"})


def seed_list(text: str) -> list[int]:
    """`3` -> [0, 1, 2]; `11,12,13` -> [11, 12, 13]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: expected N or a comma-separated list of integers, got {text!r}") from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise SystemExit(f"--seeds: expected at least 1 seed, got {text!r}")
        return list(range(values[0]))
    if len(set(values)) != len(values) or not values:
        raise SystemExit(f"--seeds: expected distinct seeds, got {text!r}")
    return values


def settings_mismatch(stored: dict[str, Any], settings: RunSettings) -> dict[str, tuple[Any, Any]]:
    """{field: (stored, current)} for every setting a finished run differs in; a field it predates counts as its
    default.

    `cache_dir` and `rebuild_base` are left out: where the base model comes from does not change its config.
    """
    current = json.loads(json.dumps(dataclasses.asdict(settings)))
    defaults = json.loads(json.dumps(dataclasses.asdict(RunSettings())))
    return {
        key: (stored.get(key, defaults[key]), value)
        for key, value in current.items()
        if key not in ("cache_dir", "rebuild_base") and stored.get(key, defaults[key]) != value
    }


def read_run(path: Path) -> dict[str, Any]:
    """A finished run's JSON; a file that cannot be read is named, with how to redo that run."""
    with blame(
        str(path), "a finished run's record cannot be read", OSError, ValueError, advice="delete it to redo the run"
    ):
        result = json.loads(path.read_text())
    if not isinstance(result, dict):
        raise SetupError(f"{path}: a finished run's record holds {type(result).__name__}; delete it to redo the run")
    return result


ABSENT = "<absent>"  # a config field one side has and the other does not


def config_mismatch(result: dict[str, Any], method: str, seed: int, settings: RunSettings) -> dict[str, Any]:
    """{stage.field: (recorded, now)} for every field of a finished run's recorded trainer configs (`config`) that
    differs from what this code builds for the same job (`built_configs`); a stage run or built on one side only
    counts as one field, `<stage>`. The caller checks that `result` has a record."""
    built = built_configs(method, settings, seed, recorded_sft_steps(result))
    recorded, now = result["config"], {stage: config_record(config) for stage, config in built.items()}
    mismatch = {}
    for stage in sorted(recorded.keys() | now.keys()):
        if stage not in recorded or stage not in now:
            mismatch[stage] = tuple("run" if stage in configs else "not run" for configs in (recorded, now))
            continue
        then_config, now_config = recorded[stage], now[stage]
        ignored = inert_fields(then_config, now_config) | predated_fields(
            then_config, now_config, config_defaults(built[stage])
        )
        for name in sorted((then_config.keys() | now_config.keys()) - ignored):
            then, current = then_config.get(name, ABSENT), now_config.get(name, ABSENT)
            if then != current:
                mismatch[f"{stage}.{name}"] = (then, current)
    return mismatch


def inert_fields(then_config: dict[str, Any], now_config: dict[str, Any]) -> set[str]:
    """Fields of a stage's recorded and current configs that acted on neither run: with num_hybrid=0 on both sides,
    the `prefix_*` fields but those that still act (`NO_HYBRID_PREFIX_FIELDS`). Runs of rft, sft_rft, sft_best_rft
    and relift recorded before e32d74f hold prefix_ratio_decay_steps=<steps>, now built as the default 500,
    though neither value ever acted; comparing them would refuse to resume a run that trained the same."""
    if then_config.get("num_hybrid") != 0 or now_config.get("num_hybrid") != 0:
        return set()
    names = then_config.keys() | now_config.keys()
    return {n for n in names if n.startswith("prefix_") and n not in NO_HYBRID_PREFIX_FIELDS}


def config_defaults(config) -> dict[str, Any]:
    """{field: its declared default, as JSON} for the fields this project's config classes declare (TRL's and
    transformers' fields are left out: their defaults carry no promise to keep what earlier versions did); a field
    without a default is left out too."""
    own = {
        name
        for cls in type(config).__mro__
        if cls.__module__.startswith("prefix_rft.")
        for name in vars(cls).get("__annotations__", {})
    }
    defaults = {}
    for spec in dataclasses.fields(config):
        if spec.name not in own:
            continue
        if spec.default is not dataclasses.MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            defaults[spec.name] = spec.default_factory()
    return json.loads(json.dumps(defaults, default=str))


def predated_fields(then_config: dict[str, Any], now_config: dict[str, Any], defaults: dict[str, Any]) -> set[str]:
    """Fields a recorded config predates (absent from it) that are built now at their declared `defaults`
    (`config_defaults`: this project's own options only): this project adds an option with a default that keeps what
    the trainer did before it, so the run trained as this code would (as `settings_mismatch` counts a setting a run
    predates as its default). Built at another value, or a field of TRL or transformers, the field is compared, and
    refused."""
    added = now_config.keys() - then_config.keys()
    return {name for name in added if name in defaults and now_config[name] == defaults[name]}


def finished_run(path: Path, method: str, seed: int, settings: RunSettings, advice: str = "") -> dict[str, Any] | None:
    """The finished run of (`method`, `seed`) recorded at `path`, or None if there is none; refuses one made with other
    settings or other trainer configs. A run recorded before its configs were (no `config`) is accepted on its
    settings alone, with a note."""
    if not path.exists():
        return None
    result = read_run(path)
    mismatch = settings_mismatch(result.get("settings", {}), settings)
    if mismatch:
        raise SystemExit(f"{path} was run with other settings, {{field: (then, now)}}: {mismatch}{advice}")
    if "config" not in result:
        print(f"note: {path} has no record of its trainer configs; only its settings were checked", flush=True)
        return result
    mismatch = config_mismatch(result, method, seed, settings)
    if mismatch:
        raise SystemExit(
            f"{path} was run with other trainer configs, {{stage.field: (then, now)}}: {mismatch}{advice}"
        )
    return result


def save_run(path: Path, result: dict[str, Any]) -> None:
    """Write a finished run's JSON through a temporary file: a kill mid-write leaves no half result."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


def run_all(methods: list[str], seeds: list[int], settings: RunSettings, out: Path) -> list[dict[str, Any]]:
    results = []
    # Seeds outermost, so a run stopped early has every method at the same number of seeds.
    for seed in seeds:
        for method in methods:
            path = out / "runs" / method / f"seed{seed}.json"
            # resumable: a finished run is never redone, but never mixed with other settings either
            result = finished_run(
                path, method, seed, settings, advice="; pass another --output-dir or delete the old runs"
            )
            if result is not None:
                results.append(result)
                continue
            print(f"== {method}, seed {seed}")
            result = run_method(method, settings, seed, out / "work" / method / f"seed{seed}")
            path.parent.mkdir(parents=True, exist_ok=True)
            save_run(path, result)
            results.append(result)
    return results


# Two-sided 95% quantiles of Student's t by degrees of freedom (standard tables); above 30, the normal's 1.96.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
T95 |= {11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    """Student's t two-sided 95% quantile for `df` degrees of freedom (the table's next lower df between its rows:
    a slightly wider interval)."""
    return T95[max(d for d in T95 if d <= df)] if df <= 30 else 1.96


def stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd (0 for one value), the 95% t-interval's half-width (None for one value) and the values."""
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    return {
        "mean": statistics.fmean(values),
        "sd": sd,
        "ci95": t95(n - 1) * sd / n**0.5 if n > 1 else None,
        "values": values,
    }


def summarize(results: list[dict[str, Any]], k: int, references: tuple[str, ...] = (BASE,)) -> dict[str, dict]:
    """Per method: mean and sd over seeds of avg@k (%) on each split scored (test and OOD), and, for each reference
    method that was run (default: the base model), the difference to it paired by seed under `<split>_vs_<ref>`
    (each seed evaluates on its own problems, so pairing removes the spread between problem sets)."""
    by_method: dict[str, dict[int, dict[str, float]]] = {}
    budgets = {}
    for r in results:
        by_method.setdefault(r["method"], {})[r["seed"]] = {
            split: 100 * metrics[f"avg@{k}"] for split, metrics in r["final"].items()
        }
        budgets[r["method"]] = r["budget"]
    summary: dict[str, dict[str, Any]] = {}
    for method, seeds in by_method.items():
        s = summary[method] = {"budget": budgets[method]}
        for split in next(iter(seeds.values())):
            s[split] = stats([acc[split] for acc in seeds.values()])
            for ref in references:
                other = by_method.get(ref, {})
                paired = [acc[split] - other[seed][split] for seed, acc in seeds.items() if seed in other]
                if paired and ref != method:
                    s[f"{split}_vs_{ref}"] = stats(paired)
    return summary


def _delta(s: dict[str, Any], split: str) -> str:
    d = s.get(f"{split}_vs_base")
    return "" if d is None else f"{d['mean']:+.1f} ± {d['sd']:.1f}"


def results_table(summary: dict[str, dict[str, Any]], k: int) -> str:
    lines = [
        f"| method | test avg@{k} (%) | OOD avg@{k} (%) | test vs base | OOD vs base | seeds | steps | rollouts/step "
        "| paper math avg (7B) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in sorted(summary.items(), key=lambda kv: -kv[1]["test"]["mean"]):
        paper = PAPER_MATH_AVG.get(method, "")
        lines.append(
            f"| {method} | {s['test']['mean']:.1f} ± {s['test']['sd']:.1f} | {s['ood']['mean']:.1f} ± "
            f"{s['ood']['sd']:.1f} | {_delta(s, 'test')} | {_delta(s, 'ood')} | {len(s['test']['values'])} | "
            f"{s['budget']['optimizer_steps']} | {s['budget']['rollouts_per_step']} | {paper} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(15, 4.5))
    colors = plt.cm.tab20.colors  # 20 distinct colours: the default cycle repeats after 10 of the 17 methods
    for i, method in enumerate(summary):
        runs = [r["curve"] for r in results if r["method"] == method]
        steps = [p["step"] for p in runs[0]]
        mean = [statistics.fmean(run[j]["test"] for run in runs) * 100 for j in range(len(steps))]
        if method == BASE:  # one point at step 0: draw it as a level to compare against
            ax_curve.axhline(mean[0], color="black", linestyle="--", linewidth=1, label=method)
        else:
            ax_curve.plot(steps, mean, marker=".", color=colors[i % len(colors)], label=method)
    ax_curve.set(title="test accuracy (avg@1, mean over seeds)", xlabel="step", ylabel="%")
    ax_curve.legend(fontsize=7)
    names = list(summary)
    x = range(len(names))
    for offset, split in ((-0.2, "test"), (0.2, "ood")):
        ax_bar.bar(
            [i + offset for i in x],
            [summary[n][split]["mean"] for n in names],
            width=0.4,
            yerr=[summary[n][split]["sd"] for n in names],
            capsize=3,
            label=split,
        )
    ax_bar.set_xticks(list(x), names, rotation=40, ha="right", fontsize=7)
    ax_bar.set(title="final accuracy (mean ± sd over seeds)", ylabel="%")
    ax_bar.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@reports_setup_errors("prefix-rft compare")
def main(argv: list[str] | None = None) -> int:
    settings, args = parse_settings(argv, CompareArguments, prog="prefix-rft compare")
    require_test_scoring(settings, "prefix-rft compare")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    with setup_stage():
        check_run_paths(settings, args.output_dir)
        budgets = method_budgets(methods, settings)
    if len(set(budgets.values())) > 1:  # a comparison at unequal budgets would be meaningless: refuse it
        raise SystemExit(f"methods would train for unequal numbers of optimizer steps: {budgets}")
    out = Path(args.output_dir)
    results = run_all(methods, seed_list(args.seeds), settings, out)
    summary = summarize(results, settings.eval_k)
    table = results_table(summary, settings.eval_k)
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": results}))
    note = (
        "Accuracy in %, mean ± sd over seeds; 'vs base': paired by seed, in points. "
        f"Arguments: {dataclasses.asdict(args)}; settings: {dataclasses.asdict(settings)}"
    )
    (out / "results.md").write_text(f"# prefix-rft compare\n\n{table}\n\n{note}\n\n![results](results.png)\n")
    plot(results, summary, out / "results.png")
    print(table)
    print(f"\nresults: {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")
    return 0
