"""Measure how hard the embedded task is for a base model (docs/tasks.md quotes its output for the default base).

For each split it samples `--k` completions per problem at temperature 1.0 and reports pass@1 (mean reward),
the share of problems with pass@k = 0, how often the model ends with `<eos>` within the budget, how often it writes
a demo-style solution by itself, and pass@1 per number of terms. It also continues demo prefixes (the hybrid
rollouts of Prefix-RFT) to show how much of a demo the base model needs before it can finish the solution. Sampling
is plain (no top-k, no top-p), unlike the demo's evaluation (T 0.6, top-p 0.95).

Run: python benchmarks/tasks/tasks_difficulty.py [--problems 256] [--k 8] [--base-set FIELD=VALUE ...]
     [--demo-style rewrite] [--out runs/tasks_difficulty.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from prefix_rft.recipes.settings import base_overrides, field_setting
from prefix_rft.tasks import BaseModelConfig, TaskConfig, is_correct, load_or_pretrain_base, make_rows
from prefix_rft.tasks.arithmetic import DEMO_STYLES, problem_of_prompt

PREFIX_RATIOS = (0.25, 0.5, 0.75)


class Completion(NamedTuple):
    text: str
    """decoded completion, special tokens removed"""
    finished: bool
    """True if the model emitted `<eos>` within the budget"""
    length: int
    """generated tokens, `<eos>` included"""


def render_prompt(tokenizer: PreTrainedTokenizerBase, chat: list[dict]) -> str:
    """A chat as generation-prompt text; a final assistant message is continued (a demo prefix), not closed."""
    if chat[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(chat, continue_final_message=True, tokenize=False)
    return tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict]],
    n: int,
    max_new_tokens: int = 160,
    batch_size: int = 256,
    progress: bool = False,
) -> list[list[Completion]]:
    """`n` completions for each chat prompt, sampled at temperature 1.0 (no top-k, no top-p) from torch's global
    generator. A prompt ending with an assistant message is continued, and its completion excludes that message."""
    flat = [prompt for prompt in prompts for _ in range(n)]
    out: list[Completion] = []
    for start in tqdm(range(0, len(flat), batch_size), desc="sampling", disable=not progress):
        out += _sample_batch(model, tokenizer, flat[start : start + batch_size], max_new_tokens)
    return [out[i * n : (i + 1) * n] for i in range(len(prompts))]


def _sample_batch(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[Completion]:
    texts = [render_prompt(tokenizer, p) for p in prompts]
    inputs = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    generated = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    completions = []
    for row in generated[:, inputs["input_ids"].shape[1] :].tolist():
        finished = tokenizer.eos_token_id in row
        ids = row[: row.index(tokenizer.eos_token_id) + 1] if finished else row
        completions.append(Completion(tokenizer.decode(ids, skip_special_tokens=True), finished, len(ids)))
    return completions


def cpu_threads() -> int:
    """Torch's default thread count on an idle machine, one thread when other processes keep the cores busy.

    A tiny model runs thousands of small ops per step, and OpenMP threads that share cores with another process wait
    for each other at every op: measured on 2 cores next to another torch job, 1.73 s/step with 2 threads against
    0.27 s/step with 1.
    """
    return 1 if os.getloadavg()[0] >= 1.0 else torch.get_num_threads()


def n_terms(row: dict) -> int:
    return len(problem_of_prompt(row["prompt"][0]["content"]).terms)


def is_demo_style(completion: str) -> bool:
    """Whether a completion checks its work like the demonstrator (the base corpus's coarse solutions never do)."""
    return "check" in completion


def measure_split(model, tokenizer, rows: list[dict], k: int, max_new_tokens: int) -> dict:
    """pass@1, pass@k = 0 share, eos rate, step-by-step rate and length, overall and per term count."""
    samples = sample_completions(model, tokenizer, [r["prompt"] for r in rows], k, max_new_tokens, progress=True)
    rewards = [[float(is_correct(c.text, r["answer"])) for c in group] for r, group in zip(rows, samples, strict=True)]
    flat = [c for group in samples for c in group]
    by_terms = defaultdict(list)
    for row, group_rewards in zip(rows, rewards, strict=True):
        by_terms[n_terms(row)].append(statistics.mean(group_rewards))
    return {
        "problems": len(rows),
        "pass@1": statistics.mean(statistics.mean(g) for g in rewards),
        f"frac_pass@{k}=0": statistics.mean(float(max(g) == 0) for g in rewards),
        "eos_rate": statistics.mean(float(c.finished) for c in flat),
        "demo_style_rate": statistics.mean(float(is_demo_style(c.text)) for c in flat),
        "mean_length": statistics.mean(c.length for c in flat),
        "pass@1_by_terms": {t: round(statistics.mean(v), 3) for t, v in sorted(by_terms.items())},
    }


def measure_prefixes(model, tokenizer, rows: list[dict], k: int, max_new_tokens: int) -> dict:
    """pass@1 of continuations of the first `ratio` of each demo's tokens (the answer scored on prefix + rest)."""
    results = {}
    for ratio in PREFIX_RATIOS:
        prefixes = []
        for row in rows:
            ids = tokenizer(row["demos"][0], add_special_tokens=False)["input_ids"]
            prefixes.append(tokenizer.decode(ids[: int(ratio * len(ids))]))
        prompts = [r["prompt"] + [{"role": "assistant", "content": p}] for r, p in zip(rows, prefixes, strict=True)]
        samples = sample_completions(model, tokenizer, prompts, k, max_new_tokens)
        scores = [
            is_correct(p + c.text, r["answer"]) for r, p, g in zip(rows, prefixes, samples, strict=True) for c in g
        ]
        results[str(ratio)] = statistics.mean(float(s) for s in scores)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=256, help="problems per split")
    parser.add_argument("--k", type=int, default=8, help="samples per problem")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="completion budget")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the problems and of sampling")
    parser.add_argument("--cache-dir", default=None, help="cache root of the base model")
    parser.add_argument("--out", default="runs/tasks_difficulty.json", help="where to write the JSON report")
    parser.add_argument(
        "--demo-style", default="steps", choices=DEMO_STYLES, help="the demonstrator of the base's corpus and prefixes"
    )
    parser.add_argument(
        "--base-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a BaseModelConfig field of the base, e.g. corpus_max_terms=4 (repeatable; its own cache)",
    )
    args = parser.parse_args()
    overrides = base_overrides([field_setting(text) for text in args.base_set])

    start = time.perf_counter()
    task = TaskConfig(demo_style=args.demo_style)
    path = load_or_pretrain_base(BaseModelConfig(task=task, **overrides), args.cache_dir)
    pretrain_info = json.loads((Path(path) / "pretrain.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    torch.set_num_threads(cpu_threads())
    report = {
        "base_model": path,
        "demo_style": args.demo_style,
        "base_set": overrides,
        "pretrain": pretrain_info,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
    }
    for split in ("train", "test", "ood"):
        rows = make_rows(split, args.problems, seed=args.seed, config=task)
        report[split] = measure_split(model, tokenizer, rows, args.k, args.max_new_tokens)
        report[split]["prefix_pass@1"] = measure_prefixes(model, tokenizer, rows[:64], args.k, args.max_new_tokens)
        print(split, json.dumps(report[split]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    report.update(
        commit=commit,
        torch=torch.__version__,
        machine=platform.machine(),
        threads=torch.get_num_threads(),
        seconds=round(time.perf_counter() - start, 1),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
