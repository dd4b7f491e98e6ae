"""Pretrain the BASE model of the embedded task from scratch on CPU, cached by a hash of its config.

The corpus solves train problems of every length with a coarser strategy than the demonstrator's: several
operations per line (`38+7-9+6=42`), no check, and a line of several operations slips (its result off by 1 or 10)
40% of the time. Single steps (`45-9=36`) are drilled too, and they never slip; 6% of the solutions are
demonstrator traces. So the base model knows the problems and the format, solves 2-term chains, can finish a demo
it is shown, but by itself writes the sloppy coarse solution and gets longer chains wrong: the demonstrator's
one-step lines are the better strategy it has the skills for but does not use. It stands to the demos as
Qwen2.5-Math-7B stands to R1 traces. See docs/tasks.md for the measured numbers.

The default base is shipped with the package (`tasks/base/`, with its config hash and the sha256 of its weights), so
every machine starts from the same weights: float kernels differ between hosts, and a base pretrained elsewhere is not
bit-identical. Other configs, or `rebuild=True`, pretrain into the cache.

Run: python -m prefix_rft.tasks.pretrain [--cache-dir DIR] [--force] [--ship]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prefix_rft.tasks.arithmetic import (
    Problem,
    TaskConfig,
    coarse_solution,
    demonstrate,
    in_test_split,
    prompt_text,
    sample_split_problem,
)
from prefix_rft.tasks.model import MODEL_SIZES, build_model
from prefix_rft.tasks.tokenizer import build_tokenizer

# Part of the cache key: bump it when the generator, demonstrator, tokenizer or model code changes what is trained.
CORPUS_VERSION = 2  # 2: Llama architecture (see tasks/model.py)
CACHE_ENV = "PREFIX_RFT_CACHE"
SHIPPED_DIR = Path(__file__).with_name("base")  # the default base, package data
SHIPPED_INFO = "shipped.json"  # {"hash": config hash, "sha256": of model.safetensors, "config": ...}
# Batches are cut from a pool this many batches deep, sorted by length, so that short direct answers are not padded
# to the length of a long demo.
POOL_BATCHES = 16


@dataclass(frozen=True)
class BaseModelConfig:
    """Pretraining settings of the base model; their hash names the cache directory."""

    model_size: str = "1m"
    """a key of `prefix_rft.tasks.model.MODEL_SIZES`"""
    task: TaskConfig = field(default_factory=TaskConfig)
    """the task whose train split makes the corpus"""
    ops_per_line: int = 3
    """operations per line of the corpus's coarse solutions (the demonstrator does one)"""
    corpus_max_terms: int = 8
    """longest train problem posed whole in the corpus; longer ones only lend their single steps"""
    demo_fraction: float = 0.06
    """share of the corpus that is train problems solved by the demonstrator"""
    slip_rate: float = 0.4
    """chance that a line of a coarse solution slips by 1 or 10, so its answer is wrong unless two slips cancel;
    the demonstrator never slips"""
    slip_min_ops: int = 2
    """fewest operations in a line that can slip: 2 keeps single steps exact, so only the coarse strategy is
    sloppy (1: steps slip too)"""
    step_fraction: float = 0.2
    """share of the corpus that is single steps of train problems (`45-9`); the rest are train problems solved
    coarsely"""
    steps: int = 1500
    """optimizer steps"""
    batch_size: int = 64
    """sequences per step"""
    lr: float = 1e-3
    """peak learning rate (AdamW)"""
    warmup_steps: int = 100
    """linear warm-up steps before the cosine decay"""
    final_lr_ratio: float = 0.05
    """learning rate at the last step as a share of `lr`; a constant rate makes training collapse"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    bf16: bool = False
    """train under bf16 autocast (faster from ~3M parameters on CPUs with AVX-512 bf16)"""
    seed: int = 0
    """seeds the initialisation and the corpus"""

    def __post_init__(self) -> None:
        """Refuse, naming the field, a config that pretraining would fail on, or silently train nothing of."""
        sizes = sorted(MODEL_SIZES)
        if self.model_size not in sizes:
            raise ValueError(f"BaseModelConfig.model_size must be one of {sizes}, got {self.model_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"BaseModelConfig.lr must be a finite positive number, got {self.lr}")
        lowest = dict(ops_per_line=1, slip_min_ops=1, steps=1, batch_size=1, warmup_steps=0, weight_decay=0)
        lowest["corpus_max_terms"] = self.task.min_terms  # a corpus problem has at least the task's fewest terms
        for name, low in lowest.items():
            if getattr(self, name) < low:
                raise ValueError(f"BaseModelConfig.{name} must be at least {low}, got {getattr(self, name)}")
        if not math.isfinite(self.weight_decay):  # the only float above: nan and inf pass `< low`
            raise ValueError(f"BaseModelConfig.weight_decay must be a finite number, got {self.weight_decay}")
        for name in ("demo_fraction", "slip_rate", "step_fraction", "final_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"BaseModelConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.demo_fraction + self.step_fraction > 1:
            raise ValueError(
                f"BaseModelConfig.demo_fraction + step_fraction must be at most 1 (the rest is coarse solutions), got "
                f"{self.demo_fraction} + {self.step_fraction}"
            )


def config_hash(config: BaseModelConfig) -> str:
    """A short, stable hash of `config` and `CORPUS_VERSION`."""
    settings = dataclasses.asdict(config)
    if settings["slip_rate"] == 0:  # without slips, slip_min_ops trains nothing different
        settings["slip_min_ops"] = 1
    payload = json.dumps({"config": settings, "version": CORPUS_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $PREFIX_RFT_CACHE, else $XDG_CACHE_HOME/prefix_rft (default ~/.cache/prefix_rft)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prefix_rft"


def base_model_dir(config: BaseModelConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the base model of `config` is (or will be) cached."""
    return cache_root(cache_dir) / f"base-{config_hash(config)}"


def sample_step(rng: random.Random, task: TaskConfig) -> Problem:
    """One step of a train problem's solution (`45-9`), as a problem of its own; never a test problem."""
    while True:
        problem = sample_split_problem(rng, "train", task)
        i = rng.randrange(len(problem.signs))
        step = Problem((problem.running_totals()[i], problem.terms[i + 1]), (problem.signs[i],))
        if not in_test_split(step, task):
            return step


def corpus_text(rng: random.Random, config: BaseModelConfig) -> tuple[Problem, str]:
    """One (problem, solution) of the pretraining corpus."""
    draw = rng.random()
    if draw < config.step_fraction:
        step = sample_step(rng, config.task)
        return step, coarse_solution(step, config.ops_per_line, config.slip_rate, rng, config.slip_min_ops)
    problem = sample_split_problem(rng, "train", config.task, max_terms=config.corpus_max_terms)
    if draw < config.step_fraction + config.demo_fraction:
        return problem, demonstrate(problem, config.task.demo_style)
    return problem, coarse_solution(problem, config.ops_per_line, config.slip_rate, rng, config.slip_min_ops)


def corpus_example(
    rng: random.Random, config: BaseModelConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[int]]:
    """One (prompt ids, completion ids) pair of the pretraining corpus."""
    problem, solution = corpus_text(rng, config)
    chat = [{"role": "user", "content": prompt_text(problem)}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(solution + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids, completion_ids


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; the loss covers completion tokens only."""
    width = max(len(p) + len(c) for p, c in examples)
    input_ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (prompt_ids, completion_ids) in enumerate(examples):
        ids = prompt_ids + completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, len(prompt_ids) : len(ids)] = torch.tensor(completion_ids)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def corpus_batches(config: BaseModelConfig, tokenizer: PreTrainedTokenizerBase) -> Iterator[dict[str, torch.Tensor]]:
    """An endless, seeded stream of length-bucketed training batches."""
    rng = random.Random(f"pretrain-{config.seed}")
    while True:
        pool = [corpus_example(rng, config, tokenizer) for _ in range(POOL_BATCHES * config.batch_size)]
        pool.sort(key=lambda pair: len(pair[0]) + len(pair[1]))
        batches = [pool[i : i + config.batch_size] for i in range(0, len(pool), config.batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield collate(batch, tokenizer.pad_token_id)


def lr_factor(step: int, config: BaseModelConfig) -> float:
    """Linear warm-up to 1, then cosine decay to `final_lr_ratio` at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# Pretraining always runs on one thread. The thread count changes the order of floating-point reductions, so with
# a count chosen by the machine's load the same config hash cached different weights (measured: test avg@4 29.7 vs
# 29.5, OOD 6.4 vs 3.1 for 2 threads vs 1). One thread is also the fast choice on a busy machine: 0.27 s/step
# against 1.73 s with 2 threads, measured on 2 cores next to another torch job.
PRETRAIN_THREADS = 1


def pretrain(config: BaseModelConfig, progress: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """Train a fresh model on the corpus of `config`; returns it, its tokenizer and a summary of the run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain(config, progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(config: BaseModelConfig, progress: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    torch.manual_seed(config.seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, config.model_size)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    batches = corpus_batches(config, tokenizer)
    start, tokens, ema_loss = time.perf_counter(), 0, None
    bar = tqdm(range(config.steps), desc="pretraining base model", disable=not progress, unit="step")
    for _ in bar:
        batch = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        ema_loss = loss.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.3f}")
    model.eval()
    seconds = time.perf_counter() - start
    summary = {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_second": round(tokens / seconds)}
    summary["threads"] = torch.get_num_threads()
    summary["final_loss_ema"] = round(ema_loss, 4) if ema_loss is not None else None
    return model, tokenizer, summary


def _save_atomically(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, info: dict, target: Path) -> Path:
    """Write into a temporary sibling directory, then rename it: readers never see a half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "pretrain.json").write_text(json.dumps(info, indent=2) + "\n")
    try:
        os.rename(tmp, target)
    except OSError:
        # Another process finished the same config first: theirs is as good as ours.
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_base(config: BaseModelConfig) -> Path | None:
    """The shipped base directory when it was built from `config`, else None.

    Raises:
        RuntimeError: when the shipped weights do not match their recorded sha256 (a damaged install).
    """
    info_path = SHIPPED_DIR / SHIPPED_INFO
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    if info["hash"] != config_hash(config):
        return None
    actual = file_sha256(SHIPPED_DIR / "model.safetensors")
    if actual != info["sha256"]:
        raise RuntimeError(
            f"the shipped base model {SHIPPED_DIR} is damaged (sha256 {actual[:12]}, recorded {info['sha256'][:12]}); "
            "reinstall prefix-rft, or pass --rebuild-base to pretrain one into the cache"
        )
    return SHIPPED_DIR


def load_or_pretrain_base(
    config: BaseModelConfig | None = None, cache_dir: str | None = None, progress: bool = True, rebuild: bool = False
) -> str:
    """Path of a `save_pretrained` directory (model + tokenizer) of the base model: the shipped one for its config,
    else the cached one, pretraining on a cache miss. `rebuild` pretrains anew into the cache."""
    config = config or BaseModelConfig()
    shipped = None if rebuild else shipped_base(config)
    if shipped is not None:
        return str(shipped)
    target = base_model_dir(config, cache_dir)
    if rebuild and target.is_dir():
        shutil.rmtree(target)
    if target.is_dir():
        return str(target)
    model, tokenizer, summary = pretrain(config, progress=progress)
    info = {"config": dataclasses.asdict(config), "hash": config_hash(config), "version": CORPUS_VERSION, **summary}
    return str(_save_atomically(model, tokenizer, info, target))


def ship(source: Path, config: BaseModelConfig) -> Path:
    """Copy a pretrained base of `config` into the package (`SHIPPED_DIR`) with its hash and weights' sha256."""
    if SHIPPED_DIR.exists():
        shutil.rmtree(SHIPPED_DIR)
    SHIPPED_DIR.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, SHIPPED_DIR / item.name)
    info = {
        "hash": config_hash(config),
        "sha256": file_sha256(SHIPPED_DIR / "model.safetensors"),
        "config": dataclasses.asdict(config),
        "version": CORPUS_VERSION,
    }
    (SHIPPED_DIR / SHIPPED_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return SHIPPED_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or find in the cache) the base model of the embedded task.")
    parser.add_argument("--cache-dir", default=None, help=f"cache root (default: ${CACHE_ENV} or ~/.cache/prefix_rft)")
    parser.add_argument("--force", action="store_true", help="pretrain anew even if the cache holds this config")
    parser.add_argument("--ship", action="store_true", help="then copy it into the package (maintainers)")
    args = parser.parse_args(argv)
    config = BaseModelConfig()
    cached = base_model_dir(config, args.cache_dir)
    if args.ship and cached.is_dir() and not args.force:  # ship what the cache holds; never the shipped copy itself
        path = cached
    else:
        path = Path(load_or_pretrain_base(config, args.cache_dir, rebuild=args.force or args.ship))
    print(f"base model: {path}")
    if args.ship:
        print(f"shipped: {ship(path, config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
