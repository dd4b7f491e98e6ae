"""The methods of `prefix-rft train --method` that have an SFT stage: `sft`, `sft_rft` and `sft_best_rft`.

Stage 1 trains TRL's SFTTrainer on the demonstrations into `<output_dir>/sft` and marks it finished there
(`STAGE_DONE`); stage 2 trains RFT from that model in `<output_dir>`. A run started again (with or without
`resume_from_checkpoint`) reuses a finished stage 1 instead of training it again, unless `overwrite_output_dir`;
`resume_from_checkpoint: true` resumes the stage that was running from its newest checkpoint, and a checkpoint folder
resumes the stage whose folder holds it (docs/methods.md).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainingArguments
from trl import SFTConfig, get_peft_config, get_quantization_config

from prefix_rft.baselines.methods import METHODS
from prefix_rft.baselines.sft import build_sft_trainer, demo_completion_rows
from prefix_rft.eval.generate import Sampling, generate, render_prompt
from prefix_rft.recipes.early_stopping import EarlyStopping, evaluating
from prefix_rft.recipes.rewards import reward_functions
from prefix_rft.recipes.train_setup import (
    TrainArguments,
    build_rl_trainer,
    end_run,
    is_embedded,
    load_datasets,
    load_model,
    model_init_kwargs,
)
from prefix_rft.setup_errors import setup_stage
from prefix_rft.trl.run_dir import prepare_output_dir, resolve_resume, resume_request

logger = logging.getLogger(__name__)
SFT_DIR = "sft"
STAGE_DONE = "stage_done.json"  # written into the stage's folder once its model is saved


def run(args: TrainArguments) -> bool:
    """Run the stages of `args.script.method` in order; True on the main process. Each stage's setup (data, model,
    trainer) is bad input if it raises a ValueError (`setup_stage`); its training is not, and keeps its traceback."""
    method = METHODS[args.script.method]
    config, out = args.config, Path(args.config.output_dir)
    resume, sft_dir = args.config.resume_from_checkpoint, out / SFT_DIR
    with setup_stage():
        if method.stages != ("sft",):
            check_stage_checkpoint(resume, (sft_dir, out))
        train_dataset, eval_dataset = load_datasets(args)
        held_out = []
        if method.stages[0] == "sft_best":
            train_dataset, held_out = split_validation(train_dataset, config.sft_validation_rows)
    datasets = (train_dataset, eval_dataset)
    if method.stages == ("sft",):  # SFT is the whole method: it trains in output_dir
        trainer, _ = sft_stage(args, datasets, out, resume, staged=False)
        trainer.save_model(str(out))
        end_run(trainer)
        return trainer.accelerator.is_main_process
    if (sft_dir / STAGE_DONE).is_file() and not config.overwrite_output_dir:
        logger.warning("stage 1 (SFT) finished earlier in %s: stage 2 starts from its model", sft_dir)
    else:
        stage_resume = resume_in(resume, sft_dir)
        trainer, stopper = sft_stage(args, datasets, sft_dir, stage_resume, staged=True, held_out=held_out)
        finish_sft_stage(trainer, sft_dir, stopper)
    return rl_stage(args, str(sft_dir), train_dataset, eval_dataset, resume_in(resume, out))


def check_stage_checkpoint(resume: str | bool | None, stage_dirs: Sequence[Path]) -> None:
    """Refuse a checkpoint folder that is in none of the stages' folders: no stage could resume it."""
    request = resume_request(resume)
    if not isinstance(request, str) or any(resume_in(request, d) for d in stage_dirs):
        return
    raise ValueError(
        f"resume_from_checkpoint={request!r} is not a checkpoint of either stage: a staged method resumes a "
        f"checkpoint-N of {' or '.join(map(str, stage_dirs))}, or pass resume_from_checkpoint=true for the newest"
    )


def resume_in(resume: str | bool | None, stage_dir: Path) -> str | bool | None:
    """What a stage in `stage_dir` resumes: `true` (its own newest checkpoint), a checkpoint folder only if it is one
    of this stage's (the other stage's optimizer and step count must not load into this one), else nothing."""
    request = resume_request(resume)
    if request in (None, True) or Path(request).resolve().parent == stage_dir.resolve():
        return request
    return None


def split_validation(dataset, n: int):
    """(training rows, the last `n` rows held out for validation); refuses a dataset with no row left to train on."""
    if len(dataset) <= n:
        raise ValueError(f"sft_validation_rows={n} holds out every one of the {len(dataset)} training rows; lower it")
    return dataset.select(range(len(dataset) - n)), dataset.select(range(len(dataset) - n, len(dataset))).to_list()


def sft_config(config, output_dir: Path, resume, staged: bool, checkpoints: bool = True) -> SFTConfig:
    """SFTConfig from the TrainingArguments fields of `config`; in stage 1 of a two-stage method its `sft_*` fields
    set the learning rate, steps and batch size (the others are stage 2's). `checkpoints=False`: saves none."""
    kwargs = {f.name: getattr(config, f.name) for f in fields(TrainingArguments) if f.init}
    kwargs.update(output_dir=str(output_dir), max_length=None, model_init_kwargs=config.model_init_kwargs)
    kwargs.pop("gradient_checkpointing", None)  # deprecated alias of activation_checkpointing, which carries it
    if staged:
        questions = max(1, config.per_device_train_batch_size // config.num_generations)
        kwargs.update(
            learning_rate=config.sft_learning_rate,
            max_steps=config.sft_max_steps,
            num_train_epochs=config.sft_num_train_epochs,
            per_device_train_batch_size=config.sft_per_device_train_batch_size or questions,
        )
    if not checkpoints:
        kwargs["save_strategy"] = "no"
    kwargs["resume_from_checkpoint"] = resolve_resume(resume, str(output_dir), fresh_if_none=True)
    return SFTConfig(**kwargs)


def sft_stage(args: TrainArguments, datasets, output_dir: Path, resume, staged: bool, held_out: Sequence[dict] = ()):
    """Train SFTTrainer in `output_dir` on the demonstrations of `datasets` (train, eval or None): stage 1 of a
    two-stage method (`staged`) or the whole `sft` method. With `held_out` rows it stops early on them and saves no
    checkpoint: early stopping keeps its best weights in memory, so an interrupted stage starts again. Returns
    (the trainer, its `EarlyStopping` or None)."""
    with setup_stage():
        model, tokenizer = load_model(args.model, args.config)  # sets the model_init_kwargs that sft_config copies
        config = sft_config(args.config, output_dir, None if held_out else resume, staged, checkpoints=not held_out)
        trainer, stopper = build_sft_stage(args, model, tokenizer, datasets, config, held_out)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    return trainer, stopper


def build_sft_stage(args: TrainArguments, model, tokenizer, datasets, config: SFTConfig, held_out: Sequence[dict]):
    """SFTTrainer on the demonstrations of `datasets`, with early stopping on `held_out` rows if any; returns
    (the trainer, its `EarlyStopping` or None)."""
    dataset, eval_dataset = datasets
    prepare_output_dir(
        config, resuming=config.resume_from_checkpoint is not None, overwrite=args.config.overwrite_output_dir
    )
    rows = dataset.to_list()
    if not any(row.get("demos") or row.get("demo") for row in rows):
        raise ValueError(f"method {args.script.method!r} trains on demonstrations, but no training row has any")
    trainer = build_sft_trainer(
        model,
        tokenizer,
        rows,
        config,
        eval_dataset=None if eval_dataset is None else Dataset.from_list(demo_completion_rows(eval_dataset.to_list())),
        peft_config=get_peft_config(args.model),
        quantization_config=get_quantization_config(args.model),
    )
    stopper = None
    if held_out:
        stopper = validation_stopping(args, trainer.processing_class, held_out)
        trainer.add_callback(stopper)
    return trainer, stopper


def finish_sft_stage(trainer, sft_dir: Path, stopper: EarlyStopping | None) -> None:
    """Save stage 1's model (the best one with early stopping; LoRA merged, so stage 2 loads a whole model), then
    mark the stage finished."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if stopper is not None:
        stopper.restore(model)
    if hasattr(model, "merge_and_unload"):  # PEFT: stage 2 puts its own adapter on the merged weights
        if trainer.accelerator.is_main_process:
            model.merge_and_unload().save_pretrained(sft_dir)
            trainer.processing_class.save_pretrained(sft_dir)
    else:
        trainer.save_model(str(sft_dir))
    record = {"sft_steps": trainer.state.global_step, **(stopper.record() if stopper else {})}
    if trainer.accelerator.is_main_process:
        (sft_dir / STAGE_DONE).write_text(json.dumps(record, indent=1))
    trainer.accelerator.wait_for_everyone()


def validation_stopping(args: TrainArguments, tokenizer, rows: list[dict]) -> EarlyStopping:
    """Early stopping on the mean reward of one greedy completion of each held-out row."""
    config = args.config
    funcs = reward_functions(args.script, embedded=is_embedded(args))
    if any(not callable(f) or isinstance(f, torch.nn.Module) for f in funcs):
        raise ValueError("method 'sft_best_rft' validates with reward functions; a reward model is not supported")
    weights = config.reward_weights or [1.0] * len(funcs)

    def score(model) -> float:
        with evaluating(model):
            return validation_reward(model, tokenizer, rows, funcs, weights, config.max_completion_length)

    return EarlyStopping(score, config.sft_eval_steps, config.sft_patience)


def validation_reward(model, tokenizer, rows: list[dict], funcs, weights, max_new_tokens: int) -> float:
    """Mean over `rows` of the weighted sum of `funcs` (None-skipping, as TRL) on one greedy completion each."""
    prompts = [row["prompt"] for row in rows]
    rendered = [render_prompt(tokenizer, p) for p in prompts]
    sampling = Sampling(n=1, max_new_tokens=max_new_tokens, greedy=True)
    texts = [c[0] for c in generate(model, tokenizer, rendered, sampling, batch_size=8, desc="sft validation")]
    completions = [
        [{"role": "assistant", "content": t}] if isinstance(p, list) else t
        for p, t in zip(prompts, texts, strict=True)
    ]
    columns = {k: [row[k] for row in rows] for k in rows[0] if k != "prompt"}
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    totals = [0.0] * len(rows)
    for func, weight in zip(funcs, weights, strict=True):
        scores = func(
            prompts=prompts,
            completions=completions,
            completion_ids=ids,
            trainer_state=None,
            log_extra=lambda *a: None,
            log_metric=lambda *a: None,
            **columns,
        )
        for i, value in enumerate(scores):
            if value is not None and not math.isnan(value):
                totals[i] += weight * value
    return sum(totals) / len(totals)


def rl_stage(args: TrainArguments, model_path: str, train_dataset, eval_dataset, resume: Any) -> bool:
    """Stage 2: RFT from the stage-1 model in `output_dir`, resuming its own newest checkpoint if asked to; True on
    the main process."""
    config = args.config
    with setup_stage():  # e.g. demos longer than the completion budget, refused by the trainer
        config.model_init_kwargs = model_init_kwargs(args.model, config)
        config.resume_from_checkpoint = resolve_resume(resume, config.output_dir, fresh_if_none=True)
        trainer = build_rl_trainer(args, model_path, None, train_dataset, eval_dataset)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    end_run(trainer)
    return trainer.accelerator.is_main_process
