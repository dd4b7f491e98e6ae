"""`prefix-rft protocol`: the family compared fairly on the embedded task, in two stages.

1. Tuning: every method trains once per value of its learning-rate grid (the same number of runs, steps and seed for
   each), scored on held-out training questions (`evaluate_on="validation"`); the test and OOD splits are not
   touched. Each method keeps its best value.
2. Finals: the methods that pass the cut rule (`select_finalists`, fixed before any final run), with their tuned
   values, plus the untrained base, over the final seeds at the full budget, scored on test and OOD; paired
   differences against the base and against Prefix-RFT with 95% t-intervals.

Runs go to `<output-dir>/tune/<method>/<field>=<value>.json` and `<output-dir>/final/<method>/seed<k>.json`; a
finished run is never redone (resumable); `--jobs 2` runs two processes side by side with the cores shared out.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefix_rft.recipes.compare import plot, read_run, seed_list, settings_mismatch, summarize
from prefix_rft.recipes.settings import RunSettings, check_run_paths, parse_settings, require_test_scoring
from prefix_rft.recipes.toy import BASE, METHODS, SFT_METHODS, run_method
from prefix_rft.setup_errors import reports_setup_errors, setup_stage

REFERENCE = "prefix_rft"  # the paper's method: every finalist is also paired against it


@dataclass
class ProtocolArguments:
    methods: str = field(
        default="prefix_rft,rl_sft,sft_best_rft,prefix_rft_adaptive,prefix_rft_rescue,prefix_rft_prompt_hint",
        metadata={"help": f"methods to tune, comma-separated, from: {', '.join(m for m in METHODS if m != BASE)}"},
    )
    rl_grid: str = field(default="1.5e-5,3e-5,6e-5", metadata={"help": "learning_rate values of RL methods"})
    sft_grid: str = field(default="2.5e-4,5e-4,1e-3", metadata={"help": "sft_learning_rate values of SFT methods"})
    tune_steps: int = field(default=40, metadata={"help": "optimizer steps of each tuning run"})
    tune_seed: int = field(default=100, metadata={"help": "seed of the tuning runs (not a final seed)"})
    seeds: str = field(default="21,22,23,24,25", metadata={"help": "final seeds: N (0..N-1) or a list"})
    cut_points: float = field(default=5.0, metadata={"help": "finals drop methods this far behind the best tuned"})
    max_finalists: int = field(default=4, metadata={"help": "at most this many methods beside Prefix-RFT"})
    jobs: int = field(default=1, metadata={"help": "runs side by side, sharing the cores out"})
    stage: str = field(default="all", metadata={"help": "`tuning`: stop after it", "choices": ["all", "tuning"]})
    output_dir: str = field(default="runs/protocol", metadata={"help": "per-run JSON, plan, results"})


@dataclass(frozen=True)
class Job:
    """One training run of the protocol: where its JSON goes and everything it needs."""

    method: str
    seed: int
    settings: RunSettings
    path: Path


def grid_field(method: str) -> str:
    """The setting a method's grid varies: SFT methods' SFT learning rate (their RFT stage keeps the RL default),
    the learning rate of every other method."""
    return "sft_learning_rate" if method in SFT_METHODS else "learning_rate"


def floats(text: str, option: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v < float("inf") for v in values):
        raise SystemExit(f"{option}: expected comma-separated positive numbers, got {text!r}")
    return values


def tuning_jobs(methods: list[str], args: ProtocolArguments, settings: RunSettings, out: Path) -> list[Job]:
    """Every method at every value of its grid: `tune_steps` steps, seed `tune_seed`, scored on validation."""
    tune = dataclasses.replace(settings, steps=args.tune_steps, evaluate_on="validation", curve_every=args.tune_steps)
    jobs = []
    for method in methods:
        name = grid_field(method)
        grid = ("--sft_grid", args.sft_grid) if name == "sft_learning_rate" else ("--rl_grid", args.rl_grid)
        for value in floats(grid[1], grid[0]):
            path = out / "tune" / method / f"{name}={value:g}.json"
            jobs.append(Job(method, args.tune_seed, dataclasses.replace(tune, **{name: value}), path))
    return jobs


def choose(tuned: list[dict[str, Any]], k: int) -> dict[str, dict[str, Any]]:
    """Per method, the grid value with the best validation avg@k (the first in grid order on a tie) and its score
    in %."""
    best: dict[str, dict[str, Any]] = {}
    for run in tuned:
        method, name = run["method"], grid_field(run["method"])
        score = 100 * run["final"]["validation"][f"avg@{k}"]
        if method not in best or score > best[method]["validation"]:
            best[method] = {"field": name, "value": run["settings"][name], "validation": score}
    return best


def select_finalists(chosen: dict[str, dict[str, Any]], cut_points: float, max_finalists: int) -> dict[str, str]:
    """The cut rule: {method: "reference", "final" or why it is dropped}.

    Prefix-RFT is the reference every finalist is paired against, so it runs in the finals whatever its score, like
    the base. Of the others, a method more than `cut_points` behind the best tuned validation score is dropped, and
    the best of the rest by score go to the finals, up to `max_finalists` (the machine's budget).
    """
    best = max(c["validation"] for c in chosen.values())
    verdict, finalists = {REFERENCE: "reference"}, 0
    ranked = sorted((m for m in chosen if m != REFERENCE), key=lambda m: -chosen[m]["validation"])
    for method in ranked:
        behind = best - chosen[method]["validation"]
        if behind > cut_points:
            verdict[method] = f"dropped: {behind:.1f} points behind the best (> {cut_points:g})"
        elif finalists < max_finalists:
            verdict[method], finalists = "final", finalists + 1
        else:
            verdict[method] = f"dropped: beyond the {max_finalists} finalists"
    return verdict


def final_jobs(finalists: dict[str, dict], seeds: list[int], settings: RunSettings, out: Path) -> list[Job]:
    """Seeds outermost (a stopped protocol has every method at the same number of seeds): the base, then each
    finalist with its tuned value."""
    jobs = []
    for seed in seeds:
        jobs.append(Job(BASE, seed, settings, out / "final" / BASE / f"seed{seed}.json"))
        for method, c in finalists.items():
            tuned = dataclasses.replace(settings, **{c["field"]: c["value"]})
            jobs.append(Job(method, seed, tuned, out / "final" / method / f"seed{seed}.json"))
    return jobs


def run_job(job: Job, threads: int) -> tuple[Job, dict[str, Any]]:
    """Run `job` in this process on `threads` threads, its output to `<path>.log`; write its JSON atomically and
    return it."""
    import torch

    torch.set_num_threads(threads)
    job.path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(job.path.with_suffix(".log"), "w") as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            result = run_method(job.method, job.settings, job.seed, job.path.with_suffix("") / "work")
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    result["seconds"] = time.monotonic() - start
    tmp = job.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(job.path)  # a kill mid-write leaves no half result
    return job, result


def load_done(job: Job) -> dict[str, Any] | None:
    """The finished run of `job`, or None; refuses one made with other settings."""
    if not job.path.exists():
        return None
    result = read_run(job.path)
    mismatch = settings_mismatch(result.get("settings", {}), job.settings)
    if mismatch:
        raise SystemExit(f"{job.path} was run with other settings, {{field: (then, now)}}: {mismatch}")
    return result


def run_jobs(jobs: list[Job], n_jobs: int, stage: str) -> list[dict[str, Any]]:
    """Run the unfinished `jobs`, `n_jobs` at a time in fresh processes, printing progress; all results in order."""
    results = {job.path: load_done(job) for job in jobs}  # read once: None for the runs still to do
    todo = [job for job in jobs if results[job.path] is None]
    print(f"== {stage}: {len(jobs)} runs, {len(jobs) - len(todo)} already done", flush=True)
    start = time.monotonic()
    if todo:
        context = multiprocessing.get_context("spawn")  # no forked torch state; each process sets one thread
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=context) as pool:
            threads = max(1, (os.cpu_count() or 1) // n_jobs)  # the cores shared out, one thread each at least
            futures = [pool.submit(run_job, job, threads) for job in todo]
            for done, future in enumerate(as_completed(futures), 1):
                job, result = future.result()
                results[job.path], seconds = result, result["seconds"]
                elapsed = time.monotonic() - start
                eta = elapsed / done * (len(todo) - done)
                print(
                    f"[{stage} {done}/{len(todo)}] {job.method} seed {job.seed} {job.path.name}: {seconds:.0f} s; "
                    f"elapsed {elapsed / 60:.1f} min, about {eta / 60:.0f} min left",
                    flush=True,
                )
    return [results[job.path] for job in jobs]


def results_table(summary: dict[str, dict[str, Any]], chosen: dict[str, dict], k: int) -> str:
    """Finals, best test mean first: accuracy (mean ± sd), paired differences (mean [95% interval]), tuned value."""

    def diff(s: dict, key: str) -> str:
        d = s.get(key)
        if d is None:
            return ""
        half = d["ci95"] or 0.0
        return f"{d['mean']:+.1f} [{d['mean'] - half:+.1f}, {d['mean'] + half:+.1f}]"

    lines = [
        f"| method | tuned | test avg@{k} (%) | OOD avg@{k} (%) | test vs base | OOD vs base | test vs prefix_rft "
        "| OOD vs prefix_rft | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in sorted(summary.items(), key=lambda kv: -kv[1]["test"]["mean"]):
        c = chosen.get(method)
        tuned = f"{c['field']}={c['value']:g}" if c else ""
        lines.append(
            f"| {method} | {tuned} | {s['test']['mean']:.1f} ± {s['test']['sd']:.1f} | {s['ood']['mean']:.1f} ± "
            f"{s['ood']['sd']:.1f} | {diff(s, 'test_vs_base')} | {diff(s, 'ood_vs_base')} | "
            f"{diff(s, f'test_vs_{REFERENCE}')} | {diff(s, f'ood_vs_{REFERENCE}')} | {len(s['test']['values'])} |"
        )
    return "\n".join(lines)


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


@reports_setup_errors("prefix-rft protocol")
def main(argv: list[str] | None = None) -> int:
    settings, args = parse_settings(argv, ProtocolArguments, prog="prefix-rft protocol")
    require_test_scoring(settings, "prefix-rft protocol")
    with setup_stage():
        check_run_paths(settings, args.output_dir)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1 (runs side by side), got {args.jobs}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS) | ({BASE} & set(methods)))
    if unknown:
        raise SystemExit(f"--methods: cannot tune {unknown}; choose from {', '.join(m for m in METHODS if m != BASE)}")
    if REFERENCE not in methods:
        raise SystemExit(f"--methods must include {REFERENCE}: every finalist is paired against it")
    out, seeds = Path(args.output_dir), seed_list(args.seeds)
    if args.tune_seed in seeds:
        raise SystemExit(f"--tune_seed {args.tune_seed} is also a final seed: the finals must be unseen seeds")
    tune = tuning_jobs(methods, args, settings, out)
    write_json(out / "plan.json", {"arguments": dataclasses.asdict(args), "settings": dataclasses.asdict(settings)})
    others = min(len(methods) - 1, args.max_finalists)
    print(
        f"plan: {len(tune)} tuning runs of {args.tune_steps} steps, then at most {len(seeds) * (others + 2)} final "
        f"runs of {settings.steps} steps ({len(seeds)} seeds: the base, {REFERENCE} and at most {others} others)",
        flush=True,
    )
    chosen = choose(run_jobs(tune, args.jobs, "tuning"), settings.eval_k)
    verdict = select_finalists(chosen, args.cut_points, args.max_finalists)
    write_json(out / "selection.json", {"chosen": chosen, "verdict": verdict})
    for method, c in chosen.items():
        print(f"{method}: {c['field']}={c['value']:g}, validation {c['validation']:.1f}% -> {verdict[method]}")
    if args.stage == "tuning":
        return 0
    finalists = {m: chosen[m] for m in methods if verdict[m] in ("reference", "final")}
    results = run_jobs(final_jobs(finalists, seeds, settings, out), args.jobs, "finals")
    print(report(results, {"chosen": chosen, "verdict": verdict}, settings.eval_k, out))
    return 0


def report(results: list[dict[str, Any]], selection: dict[str, dict], k: int, out: Path) -> str:
    """Write the finals' summary (results.json, results.md and the two plots) to `out`; returns the table."""
    summary = summarize(results, k, references=(BASE, REFERENCE))
    table = results_table(summary, selection["chosen"], k)
    write_json(out / "results.json", {"summary": summary, "selection": selection})
    (out / "results.md").write_text(
        f"# prefix-rft protocol\n\n{table}\n\n![results](results.png)\n\n![differences](differences.png)\n"
    )
    plot(results, summary, out / "results.png")
    plot_differences(summary, out / "differences.png")
    return table
