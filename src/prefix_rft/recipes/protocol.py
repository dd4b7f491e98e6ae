"""`prefix-rft protocol` (v2, docs/results.md): the family compared fairly on the embedded task, in two stages.

1. Tuning: every method trains at every value of its learning-rate grid at every tuning seed, at the finals'
   horizon and schedules, scored on held-out training questions (`evaluate_on="validation"`; test and OOD are not
   touched). While a method's best mean is at an edge of its grid, the value beyond it (halved or doubled) is run,
   up to `extensions` per method and while the budget allows (`extension_round`).
2. Finals: the reference Prefix-RFT, the base and the methods that pass the cut (`cut_threshold`, from the tuning
   seeds' spread of paired differences) and that the budget pays for (`affordable_finalists`), at their tuned
   values over the final seeds, scored on test and OOD; paired differences against the base and Prefix-RFT.

Every run selects its best weights on the same held-out questions (`select_best`) and records its inputs
(`inputs`). Runs go to `<output-dir>/tune/<method>/<field>=<value>/seed<k>.json` and
`<output-dir>/final/<method>/seed<k>.json`; a finished run is never redone (resumable); `--jobs 2` runs two processes
side by side, each on one thread (`THREADS`) whatever the number of cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefix_rft.recipes.compare import finished_run, save_run, seed_list
from prefix_rft.recipes.protocol_report import report, tuning_markdown, write_json
from prefix_rft.recipes.protocol_rules import (
    REFERENCE,
    affordable_finalists,
    choose,
    cut_threshold,
    extension_round,
    finals_reserve,
    grid_extension,
    grid_field,
    grid_scores,
    median_seconds,
    plan_mismatch,
    select_finalists,
    sft_only_values,
)
from prefix_rft.recipes.settings import RunSettings, check_run_paths, parse_settings, require_test_scoring
from prefix_rft.recipes.toy import (
    BASE,
    METHODS,
    method_budgets,
    question_pool,
    recorded_sft_steps,
    run_method,
    train_rows,
)
from prefix_rft.recipes.toy_methods import fixed_sft_steps, stages_of, uses_demos
from prefix_rft.setup_errors import reports_setup_errors, setup_stage

THREADS = 1  # threads of every run: the budget (docs/results.md) is stated in one-thread runs

SCREEN = (
    "prefix_rft,rft,sft,sft_rft,sft_best_rft,rl_sft,luffy,relift,chord,hpt,srft,trapo,"
    "prefix_rft_adaptive,prefix_rft_rescue,prefix_rft_prompt_hint"
)


@dataclass
class ProtocolArguments:
    methods: str = field(
        default=SCREEN,
        metadata={"help": f"methods to tune, comma-separated, from: {', '.join(m for m in METHODS if m != BASE)}"},
    )
    rl_grid: str = field(default="1.5e-5,3e-5,6e-5", metadata={"help": "learning_rate values of RL methods"})
    sft_grid: str = field(default="2.5e-4,5e-4,1e-3", metadata={"help": "sft_learning_rate values of SFT methods"})
    tune_seeds: str = field(default="100,101", metadata={"help": "tuning seeds (at least 2; never final seeds)"})
    extensions: int = field(default=2, metadata={"help": "at most this many x2 grid extensions per method"})
    spread_multiple: float = field(
        default=2.0, metadata={"help": "cut: drop methods this many standard errors of a difference behind the best"}
    )
    seeds: str = field(default="31,32,33,34,35", metadata={"help": "final seeds: N (0..N-1) or a list"})
    max_finalists: int = field(default=6, metadata={"help": "at most this many methods beside Prefix-RFT"})
    budget_hours: float = field(default=24.0, metadata={"help": "CPU-hours of all runs (one thread each)"})
    jobs: int = field(
        default=1, metadata={"help": "runs side by side; each run uses one thread, as the budget assumes"}
    )
    stage: str = field(default="all", metadata={"help": "`tuning`: stop after it", "choices": ["all", "tuning"]})
    output_dir: str = field(default="runs/protocol", metadata={"help": "per-run JSON, plan, results"})


@dataclass(frozen=True)
class Job:
    """One training run of the protocol: where its JSON goes and everything it needs."""

    method: str
    seed: int
    settings: RunSettings
    path: Path


def floats(text: str, option: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise SystemExit(f"{option}: expected comma-separated positive numbers, got {text!r}")
    return values


def grid_values(method: str, args: ProtocolArguments) -> list[float]:
    """The values a method's grid starts from: `sft_grid` for SFT methods, `rl_grid` for the others."""
    if grid_field(method) == "sft_learning_rate":
        return floats(args.sft_grid, "--sft_grid")
    return floats(args.rl_grid, "--rl_grid")


def tuning_settings(settings: RunSettings) -> RunSettings:
    """The finals' settings (steps, schedules, curve points) scored on held-out training questions."""
    return dataclasses.replace(settings, evaluate_on="validation", select_best=True)


def tuning_jobs(method: str, values: list[float], seeds: list[int], settings: RunSettings, out: Path) -> list[Job]:
    """`method` at each of `values` and each tuning seed, with `tuning_settings`."""
    name, tune = grid_field(method), tuning_settings(settings)
    return [
        Job(
            method,
            seed,
            dataclasses.replace(tune, **{name: value}),
            out / "tune" / method / f"{name}={value:g}" / f"seed{seed}.json",
        )
        for value in values
        for seed in seeds
    ]


def final_jobs(finalists: dict[str, dict], seeds: list[int], settings: RunSettings, out: Path) -> list[Job]:
    """Seeds outermost (a stopped protocol has every method at the same number of seeds): the base, then each
    finalist with its tuned value."""
    settings = dataclasses.replace(settings, select_best=True)
    jobs = []
    for seed in seeds:
        jobs.append(Job(BASE, seed, settings, out / "final" / BASE / f"seed{seed}.json"))
        for method, c in finalists.items():
            tuned = dataclasses.replace(settings, **{c["field"]: c["value"]})
            jobs.append(Job(method, seed, tuned, out / "final" / method / f"seed{seed}.json"))
    return jobs


def inputs(
    method: str,
    settings: RunSettings,
    demo_lengths: list[int],
    rl_demo_tokens: float,
    rl_trained: float,
    sft_steps: int,
) -> dict[str, int]:
    """What a run used beside the base: distinct training questions, question visits, held-out questions it selected
    on, labelled questions in all, demo tokens offered, demo tokens in its training rows and demo tokens trained.

    `demo_lengths`: tokens of each training question's demo; every visit offers the whole demo to a method that reads
    demos (an upper bound for those that train a part). `rl_demo_tokens`: the RL stages' logged `prefix/demo_tokens`,
    summed; `rl_trained`: their logged demo tokens the loss trained (`demo/trained_tokens`, `relift/sft_demo_tokens`),
    summed; `sft_steps`: SFT steps run, whose rows are whole demos, all trained: their share of the offered tokens is
    added to both.
    """
    keys = ("training_questions", "question_visits", "selection_questions", "labelled_questions")
    demo_keys = ("demo_tokens_offered", "demo_tokens_in_rows", "demo_tokens_trained")
    if method == BASE:
        return dict.fromkeys((*keys, *demo_keys), 0)
    selects = settings.select_best or "sft_best" in stages_of(method)
    selection = settings.sft_val_problems if selects else 0
    pool = question_pool(settings)
    offered = settings.question_epochs * sum(demo_lengths) if uses_demos(method) else 0
    sft = offered * sft_steps / settings.steps
    return {
        "training_questions": pool,
        "question_visits": settings.steps * settings.prompts_per_step,
        "selection_questions": selection,
        "labelled_questions": pool + selection,
        "demo_tokens_offered": offered,
        "demo_tokens_in_rows": round(rl_demo_tokens + sft),
        "demo_tokens_trained": round(rl_trained + sft),
    }


def sft_steps_run(method: str, result: dict[str, Any]) -> int:
    """SFT steps a finished run took: a fixed-length SFT stage's (all of `sft`'s, half of `sft_rft`'s), else the
    recorded split of an early-stopped one (`sft_best_rft`)."""
    return fixed_sft_steps(method, result["settings"]["steps"]) or recorded_sft_steps(result)


def demo_lengths(method: str, settings: RunSettings, seed: int, base_path: str) -> list[int]:
    """Tokens of each training question's first demo (none for a question without one)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    rows = train_rows(method, settings, seed)
    return [
        len(tokenizer(row["demos"][0], add_special_tokens=False)["input_ids"]) if row["demos"] else 0 for row in rows
    ]


def process_cpu_seconds() -> float:
    """User plus system CPU seconds this process has used so far, all its threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_job(job: Job) -> tuple[Job, dict[str, Any]]:
    """Run `job` in this process on `THREADS` threads, its output to `<path>.log`; write its JSON atomically and
    return it. `seconds` is the run's CPU time, what the budget charges: a run slowed by other work on the machine
    is not charged for the wait (`wall_seconds` beside it); `threads` the threads it ran on."""
    import torch

    torch.set_num_threads(THREADS)
    job.path.parent.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.monotonic(), process_cpu_seconds()
    with open(job.path.with_suffix(".log"), "w") as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            result = run_method(job.method, job.settings, job.seed, job.path.with_suffix("") / "work")
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    result["seconds"] = process_cpu_seconds() - cpu_start
    result["wall_seconds"] = time.monotonic() - start
    result["threads"] = torch.get_num_threads()
    lengths = demo_lengths(job.method, job.settings, job.seed, result["base_model"]) if uses_demos(job.method) else []
    history = result["log_history"]
    rl_demo_tokens = sum(h.get("prefix/demo_tokens", 0.0) for h in history)
    # logged every step (logging_steps=1), each value its step's total
    rl_trained = sum(h.get("demo/trained_tokens", 0.0) + h.get("relift/sft_demo_tokens", 0.0) for h in history)
    sft_steps = sft_steps_run(job.method, result)
    result["inputs"] = inputs(job.method, job.settings, lengths, rl_demo_tokens, rl_trained, sft_steps)
    save_run(job.path, result)
    return job, result


def run_jobs(jobs: list[Job], n_jobs: int, stage: str) -> list[dict[str, Any]]:
    """Run the unfinished `jobs`, `n_jobs` at a time in fresh processes, printing progress; all results in order."""
    # read once: None for the runs still to do
    results = {job.path: finished_run(job.path, job.method, job.seed, job.settings) for job in jobs}
    todo = [job for job in jobs if results[job.path] is None]
    print(f"== {stage}: {len(jobs)} runs, {len(jobs) - len(todo)} already done", flush=True)
    start = time.monotonic()
    if todo:
        context = multiprocessing.get_context("spawn")  # no forked torch state; each process sets one thread
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=context) as pool:
            futures = [pool.submit(run_job, job) for job in todo]
            for done, future in enumerate(as_completed(futures), 1):
                job, result = future.result()
                results[job.path], seconds = result, result["seconds"]
                elapsed = time.monotonic() - start
                eta = elapsed / done * (len(todo) - done)
                print(
                    f"[{stage} {done}/{len(todo)}] {job.method} seed {job.seed} {job.path.name}: {seconds:.0f} CPU s; "
                    f"elapsed {elapsed / 60:.1f} min, about {eta / 60:.0f} min left",
                    flush=True,
                )
    return [results[job.path] for job in jobs]


def tuning_stage(methods: list[str], args: ProtocolArguments, settings: RunSettings, out: Path, k: int):
    """The grids at every tuning seed, then extension rounds while a best value sits at an edge and the budget
    allows; returns (every tuning run, {method: why its grid stopped growing})."""
    tune_seeds, budget = seed_list(args.tune_seeds), 3600 * args.budget_hours
    grids = {m: grid_values(m, args) for m in methods}
    jobs = [job for m in methods for job in tuning_jobs(m, grids[m], tune_seeds, settings, out)]
    runs = run_jobs(jobs, args.jobs, "tuning")
    status: dict[str, str] = {}
    for round_ in range(1, args.extensions + 1):
        scores, chosen = grid_scores(runs, k), choose(runs, k)
        proposals = {}
        for m in methods:
            value = grid_extension(scores[m], len(scores[m]) - len(grids[m]), args.extensions)
            if value is not None:
                proposals[m] = value
        if not proposals:
            break
        left = (
            budget
            - sum(r["seconds"] for r in runs)
            - finals_reserve(runs, len(seed_list(args.seeds)), args.max_finalists)
        )
        cost = {m: len(tune_seeds) * median_seconds(runs, m) for m in proposals}
        taken, bound = extension_round(proposals, chosen, cost, left)
        print(
            f"extension round {round_}: {len(proposals)} methods at an edge, {len(taken)} paid for "
            f"({left / 3600:.1f} CPU-hours left beside the finals' reserve)",
            flush=True,
        )
        for m in set(proposals) - set(taken):
            status[m] = f"at an edge: extensions stopped by budget in round {round_}"
        jobs = [job for m in taken for job in tuning_jobs(m, [proposals[m]], tune_seeds, settings, out)]
        runs += run_jobs(jobs, args.jobs, f"extension {round_}")
        if bound:  # the budget ended every extension: a method still at an edge was cut, not exhausted
            for m, c in choose(runs, k).items():
                if not c["bracketed"] and len(c["grid"]) - len(grids[m]) < args.extensions:
                    status.setdefault(m, f"at an edge: extensions stopped by budget in round {round_}")
            break
    return runs, status


def check_protocol_arguments(args: ProtocolArguments) -> None:
    """Refuse what no run could go by: fewer than 1 job, grids that are no positive numbers, a budget that is not a
    positive number of hours, negative or non-finite counts or multiples."""
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1 (runs side by side), got {args.jobs}")
    floats(args.rl_grid, "--rl_grid")
    floats(args.sft_grid, "--sft_grid")
    if not (math.isfinite(args.budget_hours) and args.budget_hours > 0):
        raise ValueError(f"--budget_hours must be a positive number of CPU-hours, got {args.budget_hours:g}")
    for name in ("extensions", "max_finalists", "spread_multiple"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):  # nan passed `value < 0`
            raise ValueError(f"--{name} must be a finite number at least 0, got {value:g}")


@reports_setup_errors("prefix-rft protocol")
def main(argv: list[str] | None = None) -> int:
    settings, args = parse_settings(argv, ProtocolArguments, prog="prefix-rft protocol")
    require_test_scoring(settings, "prefix-rft protocol")
    with setup_stage():
        check_run_paths(settings, args.output_dir)
        check_protocol_arguments(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS) | ({BASE} & set(methods)))
    if unknown:
        raise SystemExit(f"--methods: cannot tune {unknown}; choose from {', '.join(m for m in METHODS if m != BASE)}")
    if REFERENCE not in methods:
        raise SystemExit(f"--methods must include {REFERENCE}: every finalist is paired against it")
    out, seeds, tune_seeds = Path(args.output_dir), seed_list(args.seeds), seed_list(args.tune_seeds)
    if len(tune_seeds) < 2:
        raise SystemExit(f"--tune_seeds: the cut needs the spread of at least 2 seeds, got {args.tune_seeds!r}")
    if set(tune_seeds) & set(seeds):
        raise SystemExit(
            f"--tune_seeds {sorted(set(tune_seeds) & set(seeds))} are also final seeds: finals must be unseen"
        )
    with setup_stage():
        method_budgets(methods, settings)  # refuses settings a method's trainer config would, before any run
    plan = json.loads(json.dumps({"arguments": dataclasses.asdict(args), "settings": dataclasses.asdict(settings)}))
    if (out / "plan.json").exists():  # a later command (the finals) must replay the plan its runs were made for
        mismatch = plan_mismatch(json.loads((out / "plan.json").read_text()), plan)
        if mismatch:
            raise SystemExit(f"{out / 'plan.json'} was written for another plan, {{name: (then, now)}}: {mismatch}")
    write_json(out / "plan.json", plan)
    grid_runs = sum(len(grid_values(m, args)) for m in methods)
    print(
        f"plan: {grid_runs * len(tune_seeds)} tuning runs of {settings.steps} steps ({len(tune_seeds)} seeds), up to "
        f"{args.extensions} x2 extensions per method, then the finals: {len(seeds)} seeds x (the base, {REFERENCE} "
        f"and at most {min(len(methods) - 1, args.max_finalists)} others); budget {args.budget_hours:g} CPU-hours",
        flush=True,
    )
    k = settings.eval_k
    runs, status = tuning_stage(methods, args, settings, out, k)
    chosen = choose(runs, k)
    sigma, threshold = cut_threshold(chosen, args.spread_multiple)
    left = 3600 * args.budget_hours - sum(r["seconds"] for r in runs)
    affordable = affordable_finalists(left, median_seconds(runs), len(seeds), args.max_finalists)
    verdict = select_finalists(chosen, threshold, affordable, budget_bound=affordable < args.max_finalists)
    for m, c in chosen.items():
        c["edge"] = status.get(m, "" if c["bracketed"] else "at an edge after every extension")
        c["sft_only_values"] = sft_only_values(m, runs)
        c["sft_only"] = c["value"] in c["sft_only_values"]
    selection = {
        "chosen": chosen,
        "verdict": verdict,
        "sigma": sigma,
        "threshold": threshold,
        "finalists_affordable": affordable,
        "spent_hours": sum(r["seconds"] for r in runs) / 3600,
    }
    write_json(out / "selection.json", selection)
    (out / "tuning.md").write_text(tuning_markdown(selection, k))
    print(
        f"tuning spent {selection['spent_hours']:.1f} of {args.budget_hours:g} CPU-hours; spread of paired "
        f"differences {sigma:.2f} points: cut {threshold:.2f}; the budget pays for {affordable} finalists",
        flush=True,
    )
    for m, c in chosen.items():
        print(f"{m}: {c['field']}={c['value']:g}, validation {c['validation']:.1f}% {c['edge']} -> {verdict[m]}")
    if args.stage == "tuning":
        return 0
    finalists = {m: chosen[m] for m in methods if verdict[m] in ("reference", "final")}
    results = run_jobs(final_jobs(finalists, seeds, settings, out), args.jobs, "finals")
    print(report(results, selection, k, out))
    return 0
