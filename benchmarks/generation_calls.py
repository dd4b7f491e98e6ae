"""Generation alone, in one process: hybrid prefixes forced in the on-policy call vs a second call vs no hybrids.

For one planned generation batch of `step_time.py`'s setup (16 prompts x 8 rollouts, one hybrid per group), times
`_generate_transformers` three ways, alternating within each repeat so that a shared machine's load falls on all
three alike: `shared` (the prefixes forced inside the on-policy rows' call, what the cost model picks here),
`separate` (the cost model overridden to two calls: the prefixed rows in a second call with the prefix in the prompt,
the path of 65b3085) and `plain` (the same rows without prefixes: stock TRL's single call). Reports the median CPU and
wall seconds per call and their ratios; `--layout long_prefix` uses `step_time.py`'s long-prefix rows (plain-text
prompts, demos ~9x as long, 192-token budget).

    python benchmarks/generation_calls.py --repeats 7 --out docs/benchmarks/generation_calls.json
    python benchmarks/generation_calls.py --repeats 7 --layout long_prefix --prompts 4 \
        --out docs/benchmarks/generation_calls_long_prefix.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

from common import build, write_report
from step_time import LONG_PREFIX_BUDGET, long_prefix_row

MODES = ("shared", "separate", "plain")


def setup(args):
    """(trainer, prompt ids, prefix ids) of the first generation batch."""
    from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
    from prefix_rft.tasks import task_reward
    from prefix_rft.trl.cpu import cpu_trainer_kwargs

    model, tokenizer, dataset = build(args)
    budget = args.max_completion
    if args.layout == "long_prefix":
        dataset, budget = dataset.map(long_prefix_row), LONG_PREFIX_BUDGET
    config = PrefixRFTConfig(
        **cpu_trainer_kwargs("/tmp/bench_generation_calls", seed=0, max_steps=1),
        per_device_train_batch_size=8 * args.prompts,
        num_generations=8,
        max_completion_length=budget,
        temperature=1.0,
        prefix_truncate_long_demos=True,
        disable_tqdm=True,
    )
    trainer = PrefixRFTTrainer(
        model=model, reward_funcs=[task_reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    inputs = [dataset[i] for i in range(args.prompts) for _ in range(8)]
    trainer._rollout = trainer._plan_rows(inputs)
    prompt_ids = [
        tokenizer.apply_chat_template(x["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        if isinstance(x["prompt"], list)
        else tokenizer(x["prompt"], add_special_tokens=False)["input_ids"]
        for x in inputs
    ]
    prefix_ids, _ = trainer._fit_prefixes(trainer._rollout, prompt_ids)
    return trainer, prompt_ids, prefix_ids


def time_call(trainer, prompt_ids, prefix_ids, mode: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `_generate_transformers` in `mode`."""
    prefixes = [[] for _ in prefix_ids] if mode == "plain" else prefix_ids
    choice = mock.patch("prefix_rft.trl.generation.prefer_shared_call", return_value=mode != "separate")
    with choice:
        c0, t0 = time.process_time(), time.perf_counter()
        trainer._generate_transformers(prompt_ids, prefixes, None, {})
        return time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-completion", type=int, default=64)
    p.add_argument("--model-size", default="1m")
    p.add_argument("--layout", choices=("benchmark", "long_prefix"), default="benchmark")
    p.add_argument("--out", default="docs/benchmarks/generation_calls.json")
    args = p.parse_args()
    args.steps = 1
    trainer, prompt_ids, prefix_ids = setup(args)
    time_call(trainer, prompt_ids, prefix_ids, "plain")  # warm-up
    times = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES[repeat % 3 :] + MODES[: repeat % 3]:
            times[mode].append(time_call(trainer, prompt_ids, prefix_ids, mode))
    median = {
        m: {"cpu_s": statistics.median(c for c, _ in t), "wall_s": statistics.median(w for _, w in t)}
        for m, t in times.items()
    }
    ratios = {
        f"{a} / {b} {kind}": median[a][f"{kind}_s"] / median[b][f"{kind}_s"]
        for a, b in (("shared", "plain"), ("separate", "plain"), ("shared", "separate"))
        for kind in ("cpu", "wall")
    }
    hybrid = [i for i, p in enumerate(prefix_ids) if p]
    shapes = {
        "rows": len(prompt_ids),
        "hybrid_rows": len(hybrid),
        "prompt_tokens_max": max(map(len, prompt_ids)),
        "prefix_tokens": sorted(len(prefix_ids[i]) for i in hybrid),
        "budget": trainer.max_completion_length,
    }
    print({"median": median, "ratios": ratios, "shapes": shapes})
    write_report(
        args.out, {"settings": vars(args), "shapes": shapes, "median": median, "ratios": ratios, "runs": times}
    )


if __name__ == "__main__":
    main()
