"""Step time, breakdown, forward passes and peak RSS: Prefix-RFT vs stock TRL Dr. GRPO vs a hand-written floor.

Every variant trains the same tiny model (same seed and init) on the same prompts with the same batch (16 prompts x 8
rollouts) for a few steps, each in its own fresh process so that peak RSS is its own. Variants alternate within each
repeat, the first step of every run is a warm-up and is dropped, and the median over repeats is reported.

    python benchmarks/step_time.py --repeats 5 --out docs/benchmarks/step_time.json
    git worktree add /tmp/base 181b0b5 && python benchmarks/step_time.py --baseline-src /tmp/base/src \
        --variants stock_dr_grpo,prefix_rft,prefix_rft@baseline,prefix_rft_no_hybrid \
        --out docs/benchmarks/step_time_vs_181b0b5.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import build

VARIANTS = (
    "stock_dr_grpo",
    "prefix_rft",
    "prefix_rft_no_hybrid",
    "floor",
    # vLLM colocate mode on the HF-backed vllm.LLM double of tests/trl/doubles (TRL's real vLLM code path on CPU)
    "stock_dr_grpo_vllm_double",
    "prefix_rft_vllm_double",
    # 2 micro-batches per optimizer step: the paper's entropy scope (a no-grad pass over the step) vs per micro-batch
    "prefix_rft_accum2_step_scope",
    "prefix_rft_accum2_micro_scope",
    # plain-text prompts (median 19 tokens) with demos ~9x as long (median 167) and a 192-token budget: padding
    # every row to prompt + prefix would cost here (docs/performance.md)
    "stock_dr_grpo_long_prefix",
    "prefix_rft_long_prefix",
)
LONG_PREFIX_BUDGET = 192
REPO_ROOT = Path(__file__).resolve().parent.parent


def common_kwargs(args) -> dict:
    """common.py's settings written out: `--baseline-src` runs this file on older checkouts, which lack trl/cpu.py."""
    return dict(
        output_dir="/tmp/bench_step_time",
        per_device_train_batch_size=8 * args.prompts,
        num_generations=8,
        max_completion_length=args.max_completion,
        learning_rate=1e-5,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        log_completions=False,
        seed=0,
        temperature=1.0,
    )


class Timers:
    """Accumulates wall time, CPU time ("STAGE cpu") and call counts per stage by wrapping bound methods of one
    object. CPU time is this process's: on a shared machine it leaves out the time spent waiting for a core."""

    def __init__(self):
        self.seconds, self.calls = defaultdict(float), defaultdict(int)

    def wrap(self, obj, name: str, stage: str, when=None):
        original = getattr(obj, name)

        def wrapped(*a, **kw):
            if when is not None and not when():
                return original(*a, **kw)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return original(*a, **kw)
            finally:
                self.seconds[stage] += time.perf_counter() - t0
                self.seconds[f"{stage} cpu"] += time.process_time() - c0
                self.calls[stage] += 1

        setattr(obj, name, wrapped)


def run_trainer(variant: str, args) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
    from prefix_rft.tasks import task_reward

    model, tokenizer, dataset = build(args)
    kwargs = common_kwargs(args)
    if variant.endswith("_long_prefix"):
        dataset = dataset.map(long_prefix_row)
        kwargs["max_completion_length"] = LONG_PREFIX_BUDGET
    engines = install_vllm_double(model, tokenizer, kwargs) if variant.endswith("_vllm_double") else []
    if variant.startswith("prefix_rft_accum2"):
        kwargs.update(per_device_train_batch_size=4 * args.prompts, gradient_accumulation_steps=2)
        kwargs["prefix_entropy_scope"] = "optimizer_step" if variant.endswith("step_scope") else "global_micro_batch"
    if variant.startswith("stock_dr_grpo"):
        config = GRPOConfig(**kwargs, loss_type="dr_grpo", scale_rewards="none")
        cls = GRPOTrainer
    else:
        hybrids = 0 if variant == "prefix_rft_no_hybrid" else 1
        # Demos longer than the budget are cut (counted) rather than refused, so any --max-completion works.
        config = PrefixRFTConfig(**kwargs, num_hybrid=hybrids, prefix_truncate_long_demos=True)
        cls = PrefixRFTTrainer
    trainer = cls(
        model=model, reward_funcs=[task_reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    timers = Timers()
    timers.wrap(trainer, "_generate_single_turn", "generation")
    timers.wrap(trainer, "_calculate_rewards", "reward")
    timers.wrap(
        trainer,
        "_get_per_token_logps_and_entropies",
        "no-grad log-prob forwards",
        when=lambda: not torch.is_grad_enabled(),
    )
    timers.wrap(trainer, "_get_per_token_logps_and_entropies", "loss forward", when=torch.is_grad_enabled)
    timers.wrap(trainer.accelerator, "backward", "backward")
    steps, marks = [], {}

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            marks["step"], marks["cpu"] = time.perf_counter(), time.process_time()

        def on_pre_optimizer_step(self, a, state, control, **kw):
            marks["opt"] = time.perf_counter()

        def on_optimizer_step(self, a, state, control, **kw):
            timers.seconds["optimizer"] += time.perf_counter() - marks["opt"]

        def on_step_end(self, a, state, control, **kw):
            total = {"total": time.perf_counter() - marks["step"], "total cpu": time.process_time() - marks["cpu"]}
            steps.append({**total, **dict(timers.seconds)})
            timers.seconds.clear()

    trainer.add_callback(Clock())
    trainer.train()
    result = {"steps": steps, "forward_calls": dict(timers.calls)}
    if engines:  # tokens the engine decoded per step (a hybrid decodes only the budget left after its prefix)
        calls = engines[0].generate_calls
        result["decoded_tokens_per_step"] = statistics.median(
            sum(len(c) for request in call for c in request.completion_ids) for call in calls
        )
    return result


def long_prefix_row(row: dict) -> dict:
    """The row with its question as a plain-text prompt and its demo written 3 times (~9x the prompt's tokens)."""
    demo = row["demos"][0]
    return {"prompt": row["prompt"][0]["content"] + "\n", "demos": ["\n".join([demo] * 3)]}


def install_vllm_double(model, tokenizer, kwargs: dict) -> list:
    """Colocate vLLM on the test double: the model is saved where TRL's engine loads it from."""
    import pytest

    sys.path.insert(0, str(REPO_ROOT))  # the doubles live with the tests, not in the package
    from tests.trl.doubles.vllm_colocate import install_colocate_double

    path = Path(kwargs["output_dir"]) / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    model.name_or_path = str(path)
    kwargs.update(use_vllm=True, vllm_mode="colocate")
    return install_colocate_double(pytest.MonkeyPatch())


def run_floor(args) -> dict:
    """The same step by hand: one batched generate, one forward, one backward, one AdamW step."""
    import torch

    from prefix_rft.core import aggregate_dr_grpo, dr_grpo_advantages, ppo_clip_token_loss
    from prefix_rft.tasks import task_reward

    model, tokenizer, dataset = build(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    steps = []
    for step in range(args.steps):
        t = {}
        t0, c0 = time.perf_counter(), time.process_time()
        rows = [dataset[step * args.prompts + i] for i in range(args.prompts) for _ in range(8)]
        texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.max_completion,
                pad_token_id=tokenizer.pad_token_id,
            )
        t["generation"] = time.perf_counter() - t0
        prompt_len = batch["input_ids"].size(1)
        completion = out[:, prompt_len:]
        is_eos = completion == tokenizer.eos_token_id
        first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion.size(1))
        mask = (torch.arange(completion.size(1)) <= first_eos.unsqueeze(1)).long()
        t1 = time.perf_counter()
        texts = tokenizer.batch_decode(
            completion * mask + tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True
        )
        rewards = torch.tensor(task_reward(texts, answer=[r["answer"] for r in rows]))
        adv = dr_grpo_advantages(rewards, 8).unsqueeze(1)
        t["reward"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        attention = torch.cat([batch["attention_mask"], mask], dim=1)
        logits = model(input_ids=out, attention_mask=attention).logits[:, prompt_len - 1 : -1].float()
        logps = torch.log_softmax(logits, -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
        loss_tokens, _ = ppo_clip_token_loss(logps, logps.detach(), adv)
        loss = aggregate_dr_grpo(loss_tokens, mask, args.max_completion)
        t["loss forward"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        loss.backward()
        t["backward"] = time.perf_counter() - t3
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        t["optimizer"] = time.perf_counter() - t4
        t["total"] = time.perf_counter() - t0
        t["total cpu"] = time.process_time() - c0
        steps.append(t)
    return {"steps": steps, "forward_calls": {"loss forward": args.steps}}


def child(args) -> None:
    result = run_floor(args) if args.variant == "floor" else run_trainer(args.variant, args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def median_breakdown(runs: list[dict]) -> dict:
    """Median over repeats of each run's median per-step time (first step dropped as warm-up)."""
    keys = sorted({k for r in runs for s in r["steps"][1:] for k in s})
    per_run = [{k: statistics.median(s.get(k, 0.0) for s in r["steps"][1:]) for k in keys} for r in runs]
    return {k: statistics.median(p[k] for p in per_run) for k in keys}


RATIOS = {  # name: (numerator variant, denominator variant, quantity)
    "prefix_rft / stock step time": ("prefix_rft", "stock_dr_grpo", "total"),
    "prefix_rft / stock step CPU time": ("prefix_rft", "stock_dr_grpo", "total cpu"),
    "prefix_rft(no hybrid) / stock step time": ("prefix_rft_no_hybrid", "stock_dr_grpo", "total"),
    "prefix_rft(no hybrid) / stock step CPU time": ("prefix_rft_no_hybrid", "stock_dr_grpo", "total cpu"),
    "prefix_rft / floor step time": ("prefix_rft", "floor", "total"),
    "stock / floor step time": ("stock_dr_grpo", "floor", "total"),
    "prefix_rft / stock peak RSS": ("prefix_rft", "stock_dr_grpo", "peak_rss_mb"),
    "prefix_rft / prefix_rft at the baseline commit step time": ("prefix_rft", "prefix_rft@baseline", "total"),
    "prefix_rft / prefix_rft at the baseline commit step CPU time": ("prefix_rft", "prefix_rft@baseline", "total cpu"),
    "long prefix: prefix_rft / stock step time": ("prefix_rft_long_prefix", "stock_dr_grpo_long_prefix", "total"),
    "long prefix: prefix_rft / prefix_rft at the baseline commit step time": (
        "prefix_rft_long_prefix",
        "prefix_rft_long_prefix@baseline",
        "total",
    ),
    "long prefix: prefix_rft / prefix_rft at the baseline commit step CPU time": (
        "prefix_rft_long_prefix",
        "prefix_rft_long_prefix@baseline",
        "total cpu",
    ),
    "long prefix: prefix_rft / stock step CPU time": (
        "prefix_rft_long_prefix",
        "stock_dr_grpo_long_prefix",
        "total cpu",
    ),
    "vLLM double: prefix_rft / stock step time": ("prefix_rft_vllm_double", "stock_dr_grpo_vllm_double", "total"),
    "vLLM double: prefix_rft / stock decoded tokens": (
        "prefix_rft_vllm_double",
        "stock_dr_grpo_vllm_double",
        "decoded_tokens_per_step",
    ),
    "accumulation 2: step scope / micro-batch scope step time": (
        "prefix_rft_accum2_step_scope",
        "prefix_rft_accum2_micro_scope",
        "total",
    ),
}


def ratios_of(summary: dict, runs: dict) -> dict[str, float]:
    """The ratios whose two variants ran."""

    def value(variant: str, quantity: str) -> float:
        if quantity in ("total", "total cpu"):
            return summary[variant]["step_s"][quantity]
        if quantity == "peak_rss_mb":
            return summary[variant]["peak_rss_mb"]
        return statistics.median(r[quantity] for r in runs[variant])

    return {name: value(a, q) / value(b, q) for name, (a, b, q) in RATIOS.items() if a in summary and b in summary}


def parent(args) -> None:
    runs = defaultdict(list)
    for repeat in range(args.repeats):
        variants = args.variants
        order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]  # alternate who goes first
        for variant in order:
            cmd = [sys.executable, __file__, "--child", "--variant", variant.split("@")[0], *args.passthrough]
            env = dict(os.environ)
            if variant.endswith("@baseline"):  # the same variant on the code of --baseline-src
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.baseline_src, env.get("PYTHONPATH")]))
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            runs[variant].append(json.loads(out.split("RESULT ", 1)[1]))
            print(f"repeat {repeat}: {variant} done", flush=True)
    summary = {}
    for variant, rs in runs.items():
        summary[variant] = {
            "step_s": median_breakdown(rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "forward_calls_per_step": {k: v / args.steps for k, v in rs[0]["forward_calls"].items()},
        }
    ratios = ratios_of(summary, runs)
    report = {"settings": vars(args), "summary": summary, "ratios": ratios, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({"ratios": ratios, "summary": summary}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is dropped)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-completion", type=int, default=64)
    p.add_argument("--model-size", default="1m")
    p.add_argument("--out", default="docs/benchmarks/step_time.json")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated; VARIANT@baseline runs VARIANT on --baseline-src",
    )
    p.add_argument(
        "--baseline-src", default=None, help="src/ of another checkout, e.g. a worktree of the last release"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    args.variants = args.variants.split(",")
    args.passthrough = [
        f"--steps={args.steps}",
        f"--prompts={args.prompts}",
        f"--max-completion={args.max_completion}",
        f"--model-size={args.model_size}",
    ]
    parent(args)


if __name__ == "__main__":
    main()
