"""`prefix-rft demo`: Prefix-RFT on the embedded arithmetic task, on a CPU, in minutes, with no download.

Builds (or loads from the cache) a tiny base model that knows the answer format but not the demonstrator's
step-by-step strategy, evaluates it, trains it with Prefix-RFT (8 rollouts with 1 hybrid, cosine prefix floor over the
run, top-20% entropy selection of prefix tokens), evaluates again, prints a table and writes
`<output-dir>/report.md` with a PNG of the training curves; the trained model is saved in `<output-dir>/model`.
While it trains it prints one line per step (reward, hybrid reward, prefix ratio, accuracy where measured); every
logged metric goes to `<output-dir>/train_log.jsonl`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefix_rft.recipes.console import CompactProgress
from prefix_rft.recipes.report import plot_training_curves, write_demo_report
from prefix_rft.recipes.settings import RunSettings, check_run_paths, parse_settings, require_test_scoring
from prefix_rft.recipes.toy import evaluate_splits, load_base, method_budgets, run_method
from prefix_rft.setup_errors import reports_setup_errors, setup_stage


@dataclass
class DemoArguments:
    seed: int = field(default=0, metadata={"help": "seed of data, sampling and prefixes"})
    output_dir: str = field(default="runs/demo", metadata={"help": "where the report, curves and model go"})


def run(settings: RunSettings, seed: int, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    base_path, base, tokenizer = load_base(settings)
    timings["base model (build or load)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    before = evaluate_splits(base.eval(), tokenizer, seed, settings.eval_k, settings.eval_problems, "base")
    timings["evaluate base"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model_dir = out / "model"
    base_model = (base_path, base, tokenizer)  # trained in place from here on
    points: list[dict] = []
    log_path = out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)  # a rerun into the same directory starts a new log
    progress = CompactProgress(log_path, points)  # a line per step on screen, every metric in the file
    result = run_method(
        "prefix_rft",
        settings,
        seed,
        out / "trainer",
        save_to=model_dir,
        base=base_model,
        callbacks=(progress,),
        points=points,
    )
    timings["Prefix-RFT training + final evaluation"] = time.perf_counter() - t0

    report = {
        "settings": {**result["settings"], "seed": seed},
        "before": before,
        "after": result["final"],
        "curve": result["curve"],
        "log_history": result["log_history"],
        "timings_s": timings,
        "base_model": base_path,
        "trained_model": str(model_dir),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    plot_training_curves(report, out / "curves.png")
    table = write_demo_report(report, out / "report.md")
    print(table)
    print(f"\nreport: {out / 'report.md'}  curves: {out / 'curves.png'}  trained model: {model_dir}")
    print(f"every logged metric, one JSON line per step: {log_path}")
    return report


@reports_setup_errors("prefix-rft demo")
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    settings, args = parse_settings(argv, DemoArguments, prog="prefix-rft demo")
    require_test_scoring(settings, "prefix-rft demo")
    with setup_stage():
        check_run_paths(settings, args.output_dir)
        method_budgets(["prefix_rft"], settings)  # refuses settings its trainer config would, before the base loads
    run(settings, args.seed, Path(args.output_dir))
    return 0
