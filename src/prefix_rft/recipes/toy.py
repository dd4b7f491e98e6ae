"""Training runs on the embedded task, shared by `prefix-rft demo`, `compare` and `protocol`: `run_method` trains a
method from the base model through the stages its registry entry names (`toy_methods`), then scores it.

Every method gets the same base model, the same training prompts (seeded), the same number of optimizer steps and,
for the RL methods, the same group of 8 rollouts per prompt; `method_budget` reports it so tests can check it. The
task's rows and base model are in `toy_task`, scoring in `toy_scoring`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PrinterCallback, ProgressCallback
from trl import SFTConfig

from prefix_rft.baselines.methods import Method
from prefix_rft.baselines.sft import build_sft_trainer
from prefix_rft.recipes import toy_scoring
from prefix_rft.recipes.early_stopping import EarlyStopping
from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy_methods import (
    BASE,
    METHODS,
    PAPER_MATH_AVG,
    SFT_METHODS,
    fixed_sft_steps,
    method_spec,
    rl_stage_method,
    stages_of,
)
from prefix_rft.recipes.toy_scoring import evaluate_split, evaluate_splits
from prefix_rft.recipes.toy_task import (
    completion_budget,
    eval_rows,
    load_base,
    question_pool,
    train_rows,
    validation_rows,
)
from prefix_rft.tasks import task_reward
from prefix_rft.trl.cpu import cpu_trainer_kwargs

# What other modules import from here, some of it defined in toy_methods, toy_task and toy_scoring.
__all__ = [
    "BASE",
    "METHODS",
    "PAPER_MATH_AVG",
    "SFT_METHODS",
    "built_configs",
    "config_record",
    "eval_rows",
    "evaluate_split",
    "evaluate_splits",
    "load_base",
    "method_budget",
    "method_budgets",
    "question_pool",
    "rl_config",
    "stage_configs",
    "run_method",
    "train_rl",
    "train_rows",
    "train_sft_to_best",
    "validation_rows",
]


def config_settings(spec: Method, settings: RunSettings) -> dict[str, Any]:
    """The run settings a method's config class takes, by field name (ReLIFT's SFT batch and learning rate)."""
    offered = {"relift_sft_batch": settings.relift_sft_batch, "relift_sft_learning_rate": settings.sft_learning_rate}
    names = {f.name for f in dataclasses.fields(spec.config)}
    return {name: value for name, value in offered.items() if name in names}


def rl_config(method: str, settings: RunSettings, seed: int, output_dir: Path, steps: int | None = None):
    """The config of `method`'s RL stage (`build_rl_config`). A ValueError names the method, since a run of several
    methods (compare, protocol) builds each one's config in setup: `method 'rft': prefix_advantage='paper' is not
    used by ...`."""
    try:
        return build_rl_config(method, settings, seed, output_dir, steps)
    except ValueError as error:
        raise ValueError(f"method {method!r}: {error}") from error


def build_rl_config(method: str, settings: RunSettings, seed: int, output_dir: Path, steps: int | None = None):
    """The config of `method`'s RL stage (`rl_stage_method`): paper settings scaled to the task, the run settings its
    config class takes, then its presets and `--rl-set`, which may not change a preset (the run would train another
    method under this one's name)."""
    spec = method_spec(rl_stage_method(method))
    for option, (preset, value) in spec.conflicts(settings.extra).items():
        raise ValueError(
            f"--rl-set {option}={value!r} changes what the method fixes ({option}={preset!r}): it would train "
            "another method under this name"
        )
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
    kwargs.update(config_settings(spec, settings))
    kwargs.update(spec.presets)
    kwargs.update(settings.extra)
    # Only a method that draws prefixes takes the schedule: a whole-demo slot (rl_sft, luffy, chord, hpt, srft, trapo)
    # or no hybrid slot (num_hybrid=0: rft, relift, or `--rl-set num_hybrid=0`) has none, and its config refuses it.
    if spec.draws_prefix(kwargs.get("num_hybrid")):
        kwargs.setdefault("prefix_ratio_decay_steps", max(steps, 1))  # the paper's cosine floor, over the whole run
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


RUN_PATHS = ("output_dir", "logging_dir", "run_name")  # where a run writes: not part of what it trains


def config_record(config) -> dict[str, Any]:
    """A trainer config as JSON, without the fields naming where the run writes (`RUN_PATHS`)."""
    fields = json.loads(json.dumps(config.to_dict(), default=str))
    return {name: value for name, value in fields.items() if name not in RUN_PATHS}


def stage_configs(method: str, settings: RunSettings, seed: int, sft_steps: int = 0) -> dict[str, dict[str, Any]]:
    """{stage: `config_record` of its trainer config} for each stage of a run of `method` (`built_configs`)."""
    return {stage: config_record(config) for stage, config in built_configs(method, settings, seed, sft_steps).items()}


def built_configs(method: str, settings: RunSettings, seed: int, sft_steps: int = 0) -> dict[str, Any]:
    """{stage: its trainer config} for each training stage of a run of `method`, as `run_method` builds them; nothing
    is trained or loaded. `sft_steps`: the steps an "sft_best" stage stopped after (its record's `sft_selection`),
    which the RL stage after it does not get; an RL stage left no step is not run, so not listed."""
    unused = Path("unused")  # the paths are left out of the record
    configs, done = {}, 0
    for stage in stages_of(method):
        if stage == "sft":
            steps = fixed_sft_steps(method, settings.steps)
            configs[stage], done = sft_config(settings, seed, unused, steps), done + steps
        elif stage == "sft_best":  # the schedule is over the whole budget (`train_sft_to_best`)
            configs[stage], done = sft_config(settings, seed, unused, settings.steps), done + sft_steps
        elif settings.steps > done:
            configs[stage] = rl_config(method, settings, seed, unused, settings.steps - done)
    return configs


def method_budget(method: str, settings: RunSettings) -> dict[str, int]:
    """Optimizer steps and rollouts (generated or demonstrated) per step of a method; equal across methods.

    A fixed-length SFT stage runs `fixed_sft_steps` and the RL stage the rest. An "sft_best" stage's early stopping
    splits the steps at run time and RL gets all it did not run (`rl_stage`): the total is the RL stage's over the
    whole budget whatever the split; the run's record states the split.
    """
    stages = stages_of(method)
    if not stages:  # the base, evaluated untrained
        return {"optimizer_steps": 0, "rollouts_per_step": 0, "prompts_per_step": 0}
    sft_steps = fixed_sft_steps(method, settings.steps)
    if "rl" not in stages:
        return {"optimizer_steps": sft_steps, "rollouts_per_step": 0, "prompts_per_step": settings.prompts_per_step}
    rl = rl_config(method, settings, 0, Path("unused"), steps=settings.steps - sft_steps)
    rl_prompts = rl.per_device_train_batch_size // rl.num_generations
    return {
        "optimizer_steps": sft_steps + rl.max_steps,
        "rollouts_per_step": rl.per_device_train_batch_size,
        # a fixed-length SFT stage counts its own questions per step
        "prompts_per_step": settings.prompts_per_step if "sft" in stages else rl_prompts,
    }


def method_budgets(methods: list[str], settings: RunSettings) -> dict[str, int]:
    """{method: optimizer steps} of every trained method in `methods` (`method_budget`). Building each one's trainer
    configs refuses, by a ValueError naming the method and the field, settings a run would fail on (`--rl-set
    num_hybrid=9`) or that would train another method under its name (`rft` with `--rl-set num_hybrid=1`), so a
    command calls it in its setup, before the base model loads."""
    return {m: method_budget(m, settings)["optimizer_steps"] for m in methods if m != BASE}


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
    """Train `model` in place with the RL stage of `method` (reward: `reward_fn`, default the task's verifier);
    returns the trainer. `callbacks` are added to the trainer (`attach`)."""

    trainer = method_spec(rl_stage_method(method)).trainer(
        model=model,
        reward_funcs=[reward_fn or task_reward],
        args=rl_config(method, settings, seed, output_dir, steps),
        train_dataset=Dataset.from_list(train_rows(method, settings, seed)),
        processing_class=tokenizer,
        callbacks=[toy_scoring.accuracy_callback(tokenizer, settings, seed, points, offset)],
    )
    attach(trainer, callbacks)
    trainer.train()
    return trainer


def train_sft(model, tokenizer, settings, seed, output_dir, points, steps, callbacks: tuple = ()):
    """Train `model` in place with SFT on the training rows' demos for `steps`; returns the trainer."""
    trainer = build_sft_trainer(
        model, tokenizer, train_rows("sft", settings, seed), sft_config(settings, seed, output_dir, steps)
    )
    attach(trainer, (toy_scoring.accuracy_callback(tokenizer, settings, seed, points), *callbacks))
    trainer.train()
    return trainer


def best_weights(tokenizer, settings: RunSettings, seed: int) -> EarlyStopping:
    """`select_best`'s selector: an `EarlyStopping` that never stops, scoring avg@1 on `validation_rows` (the
    questions `sft_best_rft` stops on, the same for every method) every `curve_every` steps of each stage."""
    return validation_stopper(tokenizer, settings, seed, settings.curve_every, sys.maxsize)


def validation_stopper(tokenizer, settings: RunSettings, seed: int, every: int, patience: int) -> EarlyStopping:
    """An `EarlyStopping` on avg@1 over `validation_rows`, scored every `every` steps."""
    rows = validation_rows(settings, seed)
    return EarlyStopping(lambda m: toy_scoring.validation_accuracy(m, tokenizer, rows, seed), every, patience)


def recorded_sft_steps(result: dict[str, Any]) -> int:
    """The SFT steps an early-stopped SFT stage took in a finished run (its `sft_selection`), else 0."""
    return result.get("sft_selection", {}).get("sft_steps", 0)


def train_sft_to_best(model, tokenizer, settings: RunSettings, seed: int, output_dir: Path, points, callbacks=()):
    """SFT with early stopping on `validation_rows` (avg@1 every `sft_eval_every` steps, `sft_patience`), then the
    best weights restored into `model`; returns (the SFT trainer, the `EarlyStopping` record).

    The schedule is `sft`'s over the whole budget, so up to its stop this is the `sft` run itself.
    """
    stopper = validation_stopper(tokenizer, settings, seed, settings.sft_eval_every, settings.sft_patience)
    trainer = train_sft(
        model, tokenizer, settings, seed, output_dir, points, settings.steps, callbacks=(stopper, *callbacks)
    )
    stopper.restore(model)
    return trainer, stopper.record()


@dataclasses.dataclass
class StageRun:
    """What the stages of one run share; each stage adds its log history, and the steps it trained to `done`."""

    method: str
    model: Any
    tokenizer: Any
    settings: RunSettings
    seed: int
    output_dir: Path
    points: list[dict]
    callbacks: tuple
    done: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    def folder(self, name: str) -> Path:
        """Where a stage trains: `output_dir/name` when the method has several stages, else `output_dir`."""
        return self.output_dir / name if len(stages_of(self.method)) > 1 else self.output_dir


def sft_stage(run: StageRun) -> None:
    """SFT for the method's `fixed_sft_steps`, in `sft/`."""
    steps = fixed_sft_steps(run.method, run.settings.steps)
    trainer = train_sft(
        run.model, run.tokenizer, run.settings, run.seed, run.folder("sft"), run.points, steps, run.callbacks
    )
    run.history += trainer.state.log_history
    run.done += steps


def sft_best_stage(run: StageRun) -> None:
    """`train_sft_to_best` in `sft/`; records the split of the steps (`sft_selection`). Every SFT step run counts,
    those after the best one too: they were spent choosing it."""
    model, tokenizer, settings = run.model, run.tokenizer, run.settings
    trainer, record = train_sft_to_best(
        model, tokenizer, settings, run.seed, run.folder("sft"), run.points, run.callbacks
    )
    sft_steps = trainer.state.global_step
    run.history += trainer.state.log_history
    run.record["sft_selection"] = {**record, "sft_steps": sft_steps, "rl_steps": settings.steps - sft_steps}
    run.done += sft_steps


def rl_stage(run: StageRun) -> None:
    """The RL stage (`rl_stage_method`, e.g. RFT in `rft/` after SFT) for the steps the stages before it left, its
    curve counted after theirs."""
    name, steps = rl_stage_method(run.method), run.settings.steps - run.done
    if not steps:  # none left when SFT kept improving to the end of the budget
        return
    rl = train_rl(
        name,
        run.model,
        run.tokenizer,
        run.settings,
        run.seed,
        run.folder(name),
        run.points,
        steps=steps,
        offset=run.done,
        callbacks=run.callbacks,
    )
    run.history += rl.state.log_history
    run.done += steps


STAGE_RUNNERS = {"sft": sft_stage, "sft_best": sft_best_stage, "rl": rl_stage}  # the registry's stages


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
    toy_scoring.measure_point(model, tokenizer, settings, seed, points, 0)
    selector = best_weights(tokenizer, settings, seed) if settings.select_best and method != BASE else None
    callbacks = callbacks if selector is None else (*callbacks, selector)
    run = StageRun(method, model, tokenizer, settings, seed, output_dir, points, callbacks)
    for stage in stages_of(method):  # none for the base, evaluated untrained
        STAGE_RUNNERS[stage](run)
    extra = run.record
    if selector is not None:
        selector.restore(model)
        extra["model_selection"] = selector.record()
    k, n = settings.eval_k, settings.eval_problems
    final = toy_scoring.score_run(model.eval(), tokenizer, settings, seed, k, n, f"{method} final")
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
        "log_history": run.history,
        "config": stage_configs(method, settings, seed, recorded_sft_steps(extra)),
        **extra,
    }
