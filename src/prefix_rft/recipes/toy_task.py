"""The embedded task of a toy run: its base model, its training, validation and evaluation rows.

Every method gets the same base model and the same training prompts (seeded); only a data variant
(`toy_methods.VARIANTS`) drops some of their demos.
"""

from __future__ import annotations

import dataclasses

from transformers import AutoModelForCausalLM, AutoTokenizer

from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy_methods import demos_every
from prefix_rft.tasks import BaseModelConfig, TaskConfig, load_or_pretrain_base, make_rows
from prefix_rft.tasks.model import MAX_POSITIONS


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
    """The same prompts for every method; a data variant keeps the demos of every `demos_every`-th prompt only
    (`prefix_rft_demos50`: every other one). The trainers reshuffle them at each pass (`question_epochs`)."""
    rows = make_rows("train", question_pool(settings), seed=seed, config=task_config(settings))
    every = demos_every(method)
    if every > 1:
        rows = [{**row, "demos": row["demos"] if i % every == 0 else []} for i, row in enumerate(rows)]
    return rows


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


def load_base(settings: RunSettings):
    """(path, model, tokenizer) of the run's base model, pretrained into the cache on first use."""
    config = BaseModelConfig(**{**settings.base_overrides, "task": task_config(settings)})
    path = load_or_pretrain_base(config, cache_dir=settings.cache_dir, rebuild=settings.rebuild_base)
    return path, AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
