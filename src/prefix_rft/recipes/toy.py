"""Training runs on the embedded task, shared by `prefix-rft demo` and `prefix-rft compare`.

Every method gets the same base model, the same training prompts (seeded), the same number of optimizer steps and,
for the RL methods, the same group of 8 rollouts per prompt; `method_budget` reports it so tests can check it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback, TrainerCallback
from trl import SFTConfig

from prefix_rft.baselines import ReliftTrainer
from prefix_rft.baselines.demo_rows import FullDemoRows
from prefix_rft.baselines.methods import METHODS as REGISTRY
from prefix_rft.baselines.methods import Method
from prefix_rft.baselines.sft import build_sft_trainer
from prefix_rft.eval.harness import EvalResult, evaluate
from prefix_rft.recipes.early_stopping import EarlyStopping
from prefix_rft.recipes.settings import RunSettings
from prefix_rft.tasks import BaseModelConfig, TaskConfig, is_correct, load_or_pretrain_base, make_rows, task_reward
from prefix_rft.tasks.model import MAX_POSITIONS
from prefix_rft.trl.cpu import cpu_trainer_kwargs

# The RL methods of the registry (baselines/methods.py), plus one that differs only in its data: half the training
# prompts keep their demo (see train_rows).
RL_METHODS: dict[str, Method] = {name: m for name, m in REGISTRY.items() if m.stages == ("rl",)}
RL_METHODS["prefix_rft_demos50"] = REGISTRY["prefix_rft"]
# sft_best_rft: SFT to its best validation accuracy, then RFT for the rest of the budget (arXiv 2604.23747)
SFT_METHODS = ("sft", "sft_rft", "sft_best_rft")
BASE = "base"  # the untrained base model, evaluated like every method: the reference row of the comparison
METHODS = (BASE, *RL_METHODS, *SFT_METHODS)
# Paper's math averages on Qwen2.5-Math-7B (paper Tables 1 and 8), for orientation only.
PAPER_MATH_AVG = {
    "prefix_rft": 51.8,
    "luffy": 50.1,
    "sft_rft": 48.2,
    "relift": 47.8,
    "rft": 45.5,
    "sft": 44.1,
    "rl_sft": 40.1,
    "prefix_rft_freeze_prefix": 45.4,
    "prefix_rft_select_all": 45.7,
}


def completion_budget() -> int:
    """Tokens an evaluation completion may take: all the model's positions but the longest prompt's."""
    return MAX_POSITIONS - 64  # the longest task prompt is under 64 tokens


def task_config(settings: RunSettings):
    """The task of the base's corpus and of the training rows: the base override's (or the default), in the chosen
    demo style."""
    return dataclasses.replace(settings.base_overrides.get("task", TaskConfig()), demo_style=settings.demo_style)


def question_pool(settings: RunSettings) -> int:
    """Distinct training questions of a run: its steps' questions over `question_epochs` passes."""
    return settings.steps * settings.prompts_per_step // settings.question_epochs


def train_rows(method: str, settings: RunSettings, seed: int) -> list[dict]:
    """The same prompts for every method; `prefix_rft_demos50` drops the demos of every other prompt. The trainers
    reshuffle them at each pass (`question_epochs`)."""
    rows = make_rows("train", question_pool(settings), seed=seed, config=task_config(settings))
    if method == "prefix_rft_demos50":
        rows = [{**row, "demos": row["demos"] if i % 2 == 0 else []} for i, row in enumerate(rows)]
    return rows


def rl_config(method: str, settings: RunSettings, seed: int, output_dir: Path, steps: int | None = None):
    """The config of an RL method: paper settings scaled to the task, plus the method's overrides."""
    spec = RL_METHODS[method]
    steps = settings.steps if steps is None else steps
    kwargs = dict(
        **cpu_trainer_kwargs(output_dir, seed, steps),
        num_generations=settings.num_generations,
        per_device_train_batch_size=settings.num_generations * settings.prompts_per_step,
        max_completion_length=settings.max_completion_length,
        temperature=1.0,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        log_completions=False,
    )
    if not issubclass(spec.trainer, FullDemoRows):  # a whole-demo slot draws no prefix (CHORD refuses the option)
        kwargs["prefix_ratio_decay_steps"] = max(steps, 1)  # the paper's cosine floor, over the whole run
    if spec.trainer is ReliftTrainer:
        kwargs.update(relift_sft_batch=settings.relift_sft_batch, relift_sft_learning_rate=settings.sft_learning_rate)
    kwargs.update(spec.presets)
    kwargs.update(settings.extra)
    cap, budget = kwargs["max_completion_length"], completion_budget()  # after `--rl-set`, which may set it too
    if not 1 <= cap <= budget:
        raise ValueError(f"max_completion_length must be between 1 and {budget}, got {cap}")
    return spec.config(**kwargs)


def sft_config(settings: RunSettings, seed: int, output_dir: Path, steps: int):
    return SFTConfig(
        **cpu_trainer_kwargs(output_dir, seed, steps),
        per_device_train_batch_size=settings.prompts_per_step,
        learning_rate=settings.sft_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 10),  # 10% linear warm-up, then cosine (the paper's SFT schedule)
        max_length=None,
    )


def method_budget(method: str, settings: RunSettings) -> dict[str, int]:
    """Optimizer steps and rollouts (generated or demonstrated) per step of a method; equal across methods."""
    if method == "sft_best_rft":
        # Early stopping splits the steps at run time, and RFT gets all the SFT did not run (`train_sft_best_rft`):
        # the total is RFT's budget whatever the split; the run's record states the split.
        return method_budget("rft", settings)
    if method == BASE:
        return {"optimizer_steps": 0, "rollouts_per_step": 0, "prompts_per_step": 0}
    if method == "sft":
        return {
            "optimizer_steps": settings.steps,
            "rollouts_per_step": 0,
            "prompts_per_step": settings.prompts_per_step,
        }
    if method == "sft_rft":
        sft_steps = settings.steps // 2
        rl = rl_config("rft", settings, 0, Path("unused"), steps=settings.steps - sft_steps)
        return {
            "optimizer_steps": sft_steps + rl.max_steps,
            "rollouts_per_step": rl.per_device_train_batch_size,
            "prompts_per_step": settings.prompts_per_step,
        }
    config = rl_config(method, settings, 0, Path("unused"))
    return {
        "optimizer_steps": config.max_steps,
        "rollouts_per_step": config.per_device_train_batch_size,
        "prompts_per_step": config.per_device_train_batch_size // config.num_generations,
    }


def eval_rows(split: str, n: int, seed: int) -> list[dict]:
    """The `n` evaluation problems of `split` for a run of `seed`: the same for the base and every trained model."""
    return make_rows(split, n, seed=10_000 + seed)


def validation_rows(settings: RunSettings, seed: int, n: int | None = None) -> list[dict]:
    """`n` (default `sft_val_problems`) training-split questions held out of training: `sft_best_rft`'s early
    stopping scores on the first `sft_val_problems`, tuning (`evaluate_on="validation"`) on the ones after them.

    They are the next questions of the training rows' own seeded stream (`make_rows` draws in order and never repeats
    a problem), so every method keeps the same training questions and none of these is one of them; the train split
    holds no test problem (salted hash) and no OOD one (OOD problems have more terms).
    """
    pool, n = question_pool(settings), settings.sft_val_problems if n is None else n
    return make_rows("train", pool + n, seed=seed, config=task_config(settings))[pool:]


def evaluate_split(model, tokenizer, split: str, seed: int, k: int, n: int, desc: str) -> EvalResult:
    """k samples on each of `n` problems of `split` drawn for `seed` (`evaluate_rows`)."""
    return evaluate_rows(model, tokenizer, eval_rows(split, n, seed), seed, k, desc)


def evaluate_rows(model, tokenizer, rows: list[dict], seed: int, k: int, desc: str) -> EvalResult:
    """k samples on each row (T 0.6, top-p 0.95, as the paper); returns the harness's `EvalResult` (metrics and
    per-sample completions)."""
    return evaluate(
        model,
        tokenizer,
        rows,
        lambda c, a: float(is_correct(c, a)),
        k=k,
        max_new_tokens=completion_budget(),
        batch_size=64,
        seed=seed,
        desc=desc,
    )


def evaluate_splits(model, tokenizer, seed: int, k: int, n: int, desc: str) -> dict[str, dict]:
    """avg@k / pass@k on the in-distribution test split and the harder OOD split (`evaluate_split`)."""
    return {
        split: evaluate_split(model, tokenizer, split, seed, k, n, f"{desc} {split}").metrics
        for split in ("test", "ood")
    }


def score_run(model, tokenizer, settings: RunSettings, seed: int, k: int, n: int, desc: str) -> dict[str, dict]:
    """`evaluate_splits`, or with `evaluate_on="validation"` avg@k / pass@k on `n` held-out training questions
    (`validation_rows` after the early-stopping ones) under the key "validation"."""
    if settings.evaluate_on == "test":
        return evaluate_splits(model, tokenizer, seed, k, n, desc)
    held_out = settings.sft_val_problems  # `sft_best_rft` stops on these: score on the next ones, unseen by it
    rows = validation_rows(settings, seed, held_out + n)[held_out:]
    return {"validation": evaluate_rows(model, tokenizer, rows, seed, k, f"{desc} validation").metrics}


def validation_accuracy(model, tokenizer, rows: list[dict], seed: int) -> float:
    """avg@1 on held-out training-split questions (`validation_rows`): one sample each, to keep it cheap."""
    with evaluating(model):
        return evaluate_rows(model, tokenizer, rows, seed, k=1, desc="validation").metrics["avg@1"]


def accuracy_callback(tokenizer, settings: RunSettings, seed: int, points: list[dict], offset: int = 0):
    """A TrainerCallback appending {"step", "test", "ood"} (avg@1) to `points` at every multiple of `curve_every`
    steps of the whole run (`offset` = steps trained before this trainer) and at the trainer's last step.

    Counting from the start of the run keeps every seed on one grid when a first stage ends at a step that varies
    by seed (`sft_best_rft`).
    """

    class AccuracyCurve(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = offset + state.global_step
            if step % settings.curve_every == 0 or state.global_step == state.max_steps:
                measure_point(model, tokenizer, settings, seed, points, step)

    return AccuracyCurve()


@contextmanager
def evaluating(model) -> Iterator[None]:
    """`model` in eval mode inside the block, then back in the mode it was in (evaluations run mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def measure_point(model, tokenizer, settings: RunSettings, seed: int, points: list[dict], step: int) -> None:
    with evaluating(model):
        metrics = score_run(model, tokenizer, settings, seed, k=1, n=settings.curve_problems, desc=f"step {step}")
    points.append({"step": step, **{split: m["avg@1"] for split, m in metrics.items()}})


def load_base(settings: RunSettings):

    config = BaseModelConfig(**{**settings.base_overrides, "task": task_config(settings)})
    path = load_or_pretrain_base(config, cache_dir=settings.cache_dir, rebuild=settings.rebuild_base)
    return path, AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def attach(trainer, callbacks) -> None:
    """Add `callbacks` to `trainer`; a `ProgressCallback` among them replaces the trainer's own progress printer."""
    for callback in callbacks:
        if isinstance(callback, ProgressCallback):
            trainer.pop_callback(ProgressCallback)
            trainer.pop_callback(PrinterCallback)
        trainer.add_callback(callback)


def train_rl(
    method, model, tokenizer, settings, seed, output_dir, points, steps=None, offset=0, reward_fn=None, callbacks=()
):
    """Train `model` in place with an RL method (reward: `reward_fn`, default the task's verifier); returns the
    trainer. `callbacks` are added to the trainer (`attach`)."""

    trainer = RL_METHODS[method].trainer(
        model=model,
        reward_funcs=[reward_fn or task_reward],
        args=rl_config(method, settings, seed, output_dir, steps),
        train_dataset=Dataset.from_list(train_rows(method, settings, seed)),
        processing_class=tokenizer,
        callbacks=[accuracy_callback(tokenizer, settings, seed, points, offset)],
    )
    attach(trainer, callbacks)
    trainer.train()
    return trainer


def train_sft(model, tokenizer, settings, seed, output_dir, points, steps, callbacks: tuple = ()):
    trainer = build_sft_trainer(
        model, tokenizer, train_rows("sft", settings, seed), sft_config(settings, seed, output_dir, steps)
    )
    attach(trainer, (accuracy_callback(tokenizer, settings, seed, points), *callbacks))
    trainer.train()
    return trainer


def best_weights(tokenizer, settings: RunSettings, seed: int) -> EarlyStopping:
    """`select_best`'s selector: an `EarlyStopping` that never stops, scoring avg@1 on `validation_rows` (the
    questions `sft_best_rft` stops on, the same for every method) every `curve_every` steps of each stage."""
    rows = validation_rows(settings, seed)
    return EarlyStopping(
        lambda m: validation_accuracy(m, tokenizer, rows, seed), settings.curve_every, patience=sys.maxsize
    )


def train_sft_to_best(model, tokenizer, settings: RunSettings, seed: int, output_dir: Path, points, callbacks=()):
    """SFT with early stopping on `validation_rows` (avg@1 every `sft_eval_every` steps, `sft_patience`), then the
    best weights restored into `model`; returns (the SFT trainer, the `EarlyStopping` record).

    The schedule is `sft`'s over the whole budget, so up to its stop this is the `sft` run itself.
    """
    rows = validation_rows(settings, seed)
    stopper = EarlyStopping(
        lambda m: validation_accuracy(m, tokenizer, rows, seed), settings.sft_eval_every, settings.sft_patience
    )
    trainer = train_sft(
        model, tokenizer, settings, seed, output_dir, points, settings.steps, callbacks=(stopper, *callbacks)
    )
    stopper.restore(model)
    return trainer, stopper.record()


def train_rft_after_sft(model, tokenizer, settings, seed, output_dir: Path, points, sft_steps: int, callbacks=()):
    """RFT (`num_hybrid=0`) in `output_dir/rft` for the steps of the budget an SFT stage of `sft_steps` left."""
    steps, rft_dir = settings.steps - sft_steps, output_dir / "rft"
    return train_rl(
        "rft", model, tokenizer, settings, seed, rft_dir, points, steps=steps, offset=sft_steps, callbacks=callbacks
    )


def train_sft_best_rft(model, tokenizer, settings: RunSettings, seed: int, output_dir: Path, points, callbacks=()):
    """`train_sft_to_best`, then RFT (`num_hybrid=0`) for the steps SFT did not run; returns (log history, record).

    Every SFT step run counts, those after the best one too: they were spent choosing it.
    """
    sft, record = train_sft_to_best(model, tokenizer, settings, seed, output_dir / "sft", points, callbacks)
    sft_steps = sft.state.global_step
    history = list(sft.state.log_history)
    rl_steps = settings.steps - sft_steps
    if rl_steps:  # none left when SFT kept improving to the end of the budget
        rl = train_rft_after_sft(model, tokenizer, settings, seed, output_dir, points, sft_steps, callbacks)
        history += rl.state.log_history
    return history, {**record, "sft_steps": sft_steps, "rl_steps": rl_steps}


def run_method(
    method: str,
    settings: RunSettings,
    seed: int,
    output_dir: Path,
    save_to: Path | None = None,
    base=None,
    callbacks: tuple = (),
    points: list[dict] | None = None,
) -> dict[str, Any]:
    """Train one method from the base model and evaluate it; returns curves and final metrics. With `save_to`, the
    trained model and its tokenizer are saved there (`from_pretrained` loads them). `base`: (path, model, tokenizer)
    of `load_base(settings)` when the caller has loaded it already; the model is trained in place. `callbacks` join
    every trainer of the run (`attach`); `points`, if given, is the list the accuracy curve is appended to as it is
    measured (a callback may read it)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    torch.manual_seed(seed)
    base_path, model, tokenizer = base or load_base(settings)
    points = [] if points is None else points
    measure_point(model, tokenizer, settings, seed, points, 0)
    history: list[dict] = []
    extra: dict[str, Any] = {}
    selector = best_weights(tokenizer, settings, seed) if settings.select_best and method != BASE else None
    callbacks = callbacks if selector is None else (*callbacks, selector)
    if method == "sft":
        sft = train_sft(model, tokenizer, settings, seed, output_dir, points, settings.steps, callbacks)
        history += sft.state.log_history
    elif method == "sft_rft":
        sft_steps = settings.steps // 2
        sft = train_sft(model, tokenizer, settings, seed, output_dir / "sft", points, sft_steps, callbacks)
        history += sft.state.log_history
        rl = train_rft_after_sft(model, tokenizer, settings, seed, output_dir, points, sft_steps, callbacks)
        history += rl.state.log_history
    elif method == "sft_best_rft":
        logs, extra["sft_selection"] = train_sft_best_rft(
            model, tokenizer, settings, seed, output_dir, points, callbacks
        )
        history += logs
    elif method != BASE:  # the base row is evaluated untrained
        rl = train_rl(method, model, tokenizer, settings, seed, output_dir, points, callbacks=callbacks)
        history += rl.state.log_history
    if selector is not None:
        selector.restore(model)
        extra["model_selection"] = selector.record()
    k, n = settings.eval_k, settings.eval_problems
    final = score_run(model.eval(), tokenizer, settings, seed, k, n, f"{method} final")
    if save_to is not None:
        model.save_pretrained(save_to)
        tokenizer.save_pretrained(save_to)
    return {
        "method": method,
        "seed": seed,
        "base_model": base_path,
        "settings": dataclasses.asdict(settings),
        "budget": method_budget(method, settings),
        "curve": points,
        "final": final,
        "log_history": history,
        **extra,
    }
