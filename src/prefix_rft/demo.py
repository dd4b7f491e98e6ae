"""`prefix-rft demo`: Prefix-RFT on the embedded arithmetic task, on a CPU, in minutes, with no download.

Builds (or loads from the cache) a tiny base model that knows the answer format but not the demonstrator's
step-by-step strategy, evaluates it, trains it with Prefix-RFT (8 rollouts with 1 hybrid, cosine prefix floor over the
run, top-20% entropy selection of prefix tokens), evaluates again, prints a table and writes
`<output-dir>/report.md` with a PNG of the training curves.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_STEPS = 60


@dataclass
class DemoSettings:
    steps: int = DEMO_STEPS
    seed: int = 0
    output_dir: str = "runs/demo"
    prompts_per_step: int = 16
    eval_problems: int = 128
    eval_k: int = 4
    curve_every: int = 10
    learning_rate: float = 1e-4
    cache_dir: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefix-rft demo",
        description="Train the embedded tiny model with Prefix-RFT on CPU, evaluate it before and after, and write a "
        "report (table, curves). The base model is pretrained once (a few minutes) and cached.",
    )
    d = DemoSettings()
    parser.add_argument("--steps", type=int, default=d.steps, help="Prefix-RFT optimizer steps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of data, sampling and prefixes")
    parser.add_argument("--output-dir", default=d.output_dir, help="where the report, curves and model go")
    parser.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step, help="questions per step (x 8)")
    parser.add_argument("--eval-problems", type=int, default=d.eval_problems, help="problems per split evaluated")
    parser.add_argument("--eval-k", type=int, default=d.eval_k, help="samples per problem (avg@k, pass@k)")
    parser.add_argument("--curve-every", type=int, default=d.curve_every, help="steps between accuracy points")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate, help="Prefix-RFT learning rate")
    parser.add_argument("--cache-dir", default=None, help="base-model cache (default $PREFIX_RFT_CACHE or ~/.cache)")
    return parser


def evaluate_splits(model, tokenizer, settings: DemoSettings, k: int, n: int, desc: str) -> dict[str, dict]:
    """avg@k / pass@k on the in-distribution test split and the harder OOD split (T 0.6, top-p 0.95, as the paper)."""
    from prefix_rft.eval.harness import evaluate
    from prefix_rft.tasks import is_correct, make_rows

    results = {}
    for split in ("test", "ood"):
        rows = make_rows(split, n, seed=settings.seed + 10_000)
        result = evaluate(
            model,
            tokenizer,
            rows,
            lambda c, a: float(is_correct(c, a)),
            k=k,
            max_new_tokens=_budget(),
            batch_size=64,
            seed=settings.seed,
            desc=f"{desc} {split}",
        )
        results[split] = result.metrics
    return results


def _budget() -> int:
    from prefix_rft.tasks.model import MAX_POSITIONS

    return MAX_POSITIONS - 64  # the longest prompt is under 64 tokens


class AccuracyCurve:
    """A TrainerCallback that measures test accuracy (avg@1) every `every` steps."""

    def __init__(self, tokenizer, settings: DemoSettings) -> None:
        self.tokenizer, self.settings, self.points = tokenizer, settings, []

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % outer.settings.curve_every == 0 or state.global_step == state.max_steps:
                    outer.measure(model, state.global_step)

        return _Callback()

    def measure(self, model, step: int) -> None:
        was_training = model.training
        model.eval()
        n = max(self.settings.eval_problems // 2, 16)
        metrics = evaluate_splits(model, self.tokenizer, self.settings, k=1, n=n, desc=f"step {step}")
        self.points.append({"step": step, **{split: m["avg@1"] for split, m in metrics.items()}})
        model.train(was_training)


def train(settings: DemoSettings, base_path: str, curve: AccuracyCurve):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
    from prefix_rft.tasks import make_rows, task_reward

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    rows = make_rows("train", settings.steps * settings.prompts_per_step, seed=settings.seed)
    args = PrefixRFTConfig(
        output_dir=str(Path(settings.output_dir) / "trainer"),
        # Paper settings scaled to the task: G = 8 with 1 hybrid, cosine floor 0.95 -> 0.05 over the whole run.
        num_generations=8,
        num_hybrid=1,
        per_device_train_batch_size=8 * settings.prompts_per_step,
        max_completion_length=_budget(),
        prefix_ratio_decay_steps=settings.steps,
        prefix_entropy_keep_fraction=0.2,
        temperature=1.0,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        max_steps=settings.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=settings.seed,
        log_completions=False,
        disable_tqdm=False,
    )
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[task_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[curve.callback()],
    )
    trainer.train()
    return trainer


def run(settings: DemoSettings) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefix_rft.tasks import load_or_pretrain_base

    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    base_path = load_or_pretrain_base(cache_dir=settings.cache_dir)
    timings["base model (build or load)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    before = evaluate_splits(base, tokenizer, settings, settings.eval_k, settings.eval_problems, "base")
    timings["evaluate base"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    curve = AccuracyCurve(tokenizer, settings)
    curve.measure(base, 0)
    trainer = train(settings, base_path, curve)
    timings["Prefix-RFT training"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    after = evaluate_splits(
        trainer.model.eval(), tokenizer, settings, settings.eval_k, settings.eval_problems, "after"
    )
    timings["evaluate trained"] = time.perf_counter() - t0
    trainer.save_model(str(out / "model"))
    result = {
        "settings": settings.__dict__,
        "before": before,
        "after": after,
        "curve": curve.points,
        "log_history": trainer.state.log_history,
        "timings_s": timings,
        "base_model": base_path,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    from prefix_rft.report import plot_training_curves, write_demo_report

    plot_training_curves(result, out / "curves.png")
    table = write_demo_report(result, out / "report.md")
    print(table)
    print(f"\nreport: {out / 'report.md'}  curves: {out / 'curves.png'}")
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    settings = DemoSettings(
        steps=args.steps,
        seed=args.seed,
        output_dir=args.output_dir,
        prompts_per_step=args.prompts_per_step,
        eval_problems=args.eval_problems,
        eval_k=args.eval_k,
        curve_every=args.curve_every,
        learning_rate=args.learning_rate,
        cache_dir=args.cache_dir,
    )
    run(settings)
    return 0
