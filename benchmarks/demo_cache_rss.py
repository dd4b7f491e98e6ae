"""Host memory of the demo token cache over a long synthetic run: many distinct long demos through `_demo_ids`.

Each variant runs in its own process: `current` on this checkout's trainer, `baseline` on `--baseline-src` (e.g.
/work/main/src at 65b3085, whose cache was an unbounded dict). A run builds the trainer (tiny model, 16 rows per
generation, budget 4096 tokens), then draws `--demos` distinct demos of `--demo-tokens` characters (one token
each with the task tokenizer, ids shifted as a large vocabulary's) through the real `_demo_ids`, as the hybrid rows
of a long run would, and reports the resident set size before and after, and what the cache holds.

    python benchmarks/demo_cache_rss.py --baseline-src /work/main/src --out docs/benchmarks/demo_cache_rss.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

from common import write_report

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class WideVocabulary:
    """The task tokenizer with every id shifted by 1000, as ids from a 150k-token vocabulary would be: CPython shares
    one object for each int up to 256, so the task tokenizer's 104 ids would understate what a list of ids costs."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str, **kwargs) -> dict:
        return {"input_ids": [i + 1000 for i in self.tokenizer(text, **kwargs)["input_ids"]]}


def child(args) -> dict:
    import torch
    from datasets import Dataset

    from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
    from prefix_rft.tasks import build_model, build_tokenizer, make_rows, task_reward
    from prefix_rft.trl.cpu import cpu_trainer_kwargs

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = PrefixRFTConfig(
        **cpu_trainer_kwargs("/tmp/bench_demo_cache", seed=0, max_steps=1),
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=args.demo_tokens,
        disable_tqdm=True,
    )
    model = build_model(tokenizer, "test")
    # Nothing is generated: the context only has to admit the budget at validation.
    model.config.max_position_embeddings = tokenizer.model_max_length = args.demo_tokens + 256
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[task_reward],
        args=config,
        train_dataset=Dataset.from_list(make_rows("train", 16, seed=0)),
        processing_class=tokenizer,
    )
    trainer._tokenizer = WideVocabulary(trainer._tokenizer)  # after validation, which measures prompts with it
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    for i in range(args.demos):
        digits = str(i).zfill(8)
        demo = (digits + "+") * (args.demo_tokens // 9) + digits[: args.demo_tokens % 9]  # distinct, demo-tokens long
        ids = trainer._demo_ids(demo)
        assert len(ids) == args.demo_tokens
    seconds = time.perf_counter() - start
    gc.collect()
    return {
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - before,
        "cache_entries": len(trainer._demo_ids_cache),
        "demo_ids_ms_per_call": 1000 * seconds / args.demos,
    }


def parent(args) -> None:
    results = {}
    for variant in ("current", "baseline") if args.baseline_src else ("current",):
        env = dict(os.environ)
        if variant == "baseline":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.baseline_src, env.get("PYTHONPATH")]))
        cmd = [sys.executable, __file__, "--child", f"--demos={args.demos}", f"--demo-tokens={args.demo_tokens}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        results[variant] = json.loads(out.split("RESULT ", 1)[1])
        print(variant, results[variant], flush=True)
    write_report(args.out, {"settings": vars(args), "results": results})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demos", type=int, default=4000, help="distinct demos drawn over the run")
    p.add_argument("--demo-tokens", type=int, default=4096)
    p.add_argument("--baseline-src", default=None, help="src/ of another checkout, run side by side")
    p.add_argument("--out", default="docs/benchmarks/demo_cache_rss.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return
    parent(args)


if __name__ == "__main__":
    main()
