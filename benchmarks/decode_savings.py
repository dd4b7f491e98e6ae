"""Decode savings: tokens decoded per step with and without hybrid rows as the prefix ratio falls over the schedule.

Runs `PrefixRFTTrainer` for `--steps` steps with `prefix_ratio_decay_steps` equal to the run length (the cosine floor
falls from 0.95 to 0.05 over the run), then the same run with `num_hybrid=0` (same seed, same prompts). For every
step and every row it records what the generator decoded (up to and including EOS, before the completion budget
cuts it), the demo prefix the row was given for free, and the tokens that survive into the completion.

The model is the embedded task's default base model (`--model base`, the default) or the random tiny model of
`step_time.py` (`--model random`).

    python benchmarks/decode_savings.py --steps 12 --out runs/benchmarks/decode_savings.json

HF `generate` pads a batch to its longest row: every row occupies a decoding slot until the last row of the batch
has finished, so fewer tokens for hybrid rows only turn into wall time with vLLM or continuous batching. The token
counts below are the savings such a generator would see; `batch_decode_iterations` (decoding steps, summed over
the step's generate calls) and `padded_decode_slots` (rows x decoding steps) are what HF `generate` pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

from common import base_model_path, build, common_kwargs, load_model, write_report


class DecodeRecorder:
    """Records, per generation call, the raw rollouts of TRL's generator and the rows Prefix-RFT built from them.

    TRL's `GRPOTrainer._generate_single_turn` (what `PrefixRFTTrainer` calls through `super()`, once or in several
    calls) is wrapped at class level, in this process only, to see each row's decoded length before the completion
    budget cuts it. A hybrid row is decoded either with its prefix in the prompt, or from the bare prompt with the
    prefix forced as its first tokens (`ForcedPrefix`, the call it shares with the on-policy rows): each decoded row
    is recorded under its call prompt and the length of its forced prefix, and rows are matched to it by the same
    key; rows with equal keys are interchangeable for these counts. Forced tokens are not counted as decoded (the
    demo gives them), but they lengthen the call (`iterations`).
    """

    def __init__(self):
        self.calls: list[tuple[list[tuple[tuple[int, ...], int]], list[int]]] = []
        self.steps: list[dict] = []

    @staticmethod
    def forced_lengths(trainer, rows: int) -> list[int]:
        """Tokens forced at the start of each row of the `generate` call being made (all 0 outside a forced call)."""
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        generate = vars(model).get("generate")  # `_forcing` puts a partial with the ForcedPrefix processor there
        if generate is None:
            return [0] * rows
        (processor,) = generate.keywords["logits_processor"]
        return (processor.forced >= 0).sum(dim=1).tolist()

    def install_class_hook(self):
        from trl import GRPOTrainer

        original = getattr(GRPOTrainer._generate_single_turn, "__wrapped__", GRPOTrainer._generate_single_turn)
        recorder = self

        def wrapped(trainer, prompt_ids, *args, **kwargs):
            forced = recorder.forced_lengths(trainer, len(prompt_ids))
            completion_ids, logprobs = original(trainer, prompt_ids, *args, **kwargs)
            keys = [(tuple(p), f) for p, f in zip(prompt_ids, forced, strict=True)]
            recorder.calls.append((keys, [len(c) for c in completion_ids]))
            return completion_ids, logprobs

        wrapped.__wrapped__ = original  # a second recorder replaces this hook instead of stacking on it
        GRPOTrainer._generate_single_turn = wrapped

    def wrap_trainer(self, trainer):
        original = trainer._generate_single_turn
        recorder = self

        def wrapped(prompt_ids, *args, **kwargs):
            recorder.calls.clear()
            t0 = time.perf_counter()
            completion_ids, logprobs = original(prompt_ids, *args, **kwargs)
            seconds = time.perf_counter() - t0
            recorder.steps.append(recorder.rows_of(trainer, prompt_ids, completion_ids, seconds))
            return completion_ids, logprobs

        trainer._generate_single_turn = wrapped

    def rows_of(self, trainer, prompt_ids, completion_ids, seconds: float) -> dict:
        """One step: per row, group, prefix tokens, decoded tokens, kept continuation tokens, discarded tokens."""
        plan = trainer._rollout
        prefix_ids = plan.prefix_ids or [[] for _ in plan.rows]
        decoded_by_key = defaultdict(list)
        for keys, lengths in self.calls:
            for key, n in zip(keys, lengths, strict=True):
                decoded_by_key[key].append(n - key[1])  # forced prefix tokens are given, not decoded
        rows = []
        for i, (prompt, prefix, completion) in enumerate(zip(prompt_ids, prefix_ids, completion_ids, strict=True)):
            generated = plan.rows[i].generates
            in_prompt = (tuple(prompt) + tuple(prefix), 0)
            key = in_prompt if decoded_by_key[in_prompt] else (tuple(prompt), len(prefix))
            n_decoded = decoded_by_key[key].pop(0) if generated else 0
            kept = max(0, len(completion) - len(prefix))
            rows.append(
                {
                    "group": i // trainer.num_generations,
                    "hybrid": len(prefix) > 0,
                    "prefix": len(prefix),
                    "decoded": n_decoded,
                    "kept": kept,
                    "discarded": n_decoded - kept,
                }
            )
        low, high = trainer._prefix_sampler.bounds(trainer.state.global_step)
        return {
            "step": trainer.state.global_step,
            "ratio_floor": low,
            "ratio_ceiling": high,
            "generate_s": seconds,
            # What HF generate pays: each call runs until its longest row stops, over its widest prompt.
            "calls": [
                {"rows": len(lengths), "iterations": max(lengths), "prompt_width": max(len(p) for p, _ in keys)}
                for keys, lengths in self.calls
            ],
            "rows": rows,
        }


def mean(values) -> float:
    values = list(values)
    return statistics.mean(values) if values else float("nan")


def summarize_step(step: dict) -> dict:
    """Per-step totals and the hybrid-vs-on-policy comparison within each group."""
    rows = step["rows"]
    hybrids = [r for r in rows if r["hybrid"]]
    on_policy = [r for r in rows if not r["hybrid"]]
    # A hybrid against the mean on-policy row of its own group: what it would have decoded without its prefix.
    same_group = []
    for h in hybrids:
        peers = [r["decoded"] for r in on_policy if r["group"] == h["group"]]
        if peers:
            same_group.append(mean(peers) - h["decoded"])
    return {
        "step": step["step"],
        "ratio_floor": round(step["ratio_floor"], 4),
        "hybrid_rows": len(hybrids),
        "hybrid_prefix_tokens_mean": mean(r["prefix"] for r in hybrids),
        "hybrid_decoded_mean": mean(r["decoded"] for r in hybrids),
        "hybrid_kept_mean": mean(r["kept"] for r in hybrids),
        "hybrid_discarded_mean": mean(r["discarded"] for r in hybrids),
        "on_policy_decoded_mean": mean(r["decoded"] for r in on_policy),
        "decoded_saved_per_hybrid_vs_own_group": mean(same_group),
        "decoded_total": sum(r["decoded"] for r in rows),
        "discarded_total": sum(r["discarded"] for r in rows),
        "prefix_total": sum(r["prefix"] for r in rows),
        "generate_calls": len(step["calls"]),
        "batch_decode_iterations": sum(c["iterations"] for c in step["calls"]),
        "padded_decode_slots": sum(c["rows"] * c["iterations"] for c in step["calls"]),
        "max_prompt_width": max(c["prompt_width"] for c in step["calls"]),
        "generate_s": round(step["generate_s"], 3),
    }


def run(num_hybrid: int, args, base_path: str | None) -> list[dict]:
    from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
    from prefix_rft.tasks import task_reward

    model, tokenizer, dataset = build(args)
    if base_path is not None:
        model, tokenizer = load_model(base_path)
    kwargs = common_kwargs(args) | {
        "output_dir": "/tmp/bench_decode_savings",
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "constant",
    }
    schedule = {"prefix_ratio_decay_steps": args.steps} if num_hybrid else {}  # refused without hybrid rows
    config = PrefixRFTConfig(**kwargs, num_hybrid=num_hybrid, prefix_truncate_long_demos=True, **schedule)
    trainer = PrefixRFTTrainer(
        model=model, reward_funcs=[task_reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    recorder = DecodeRecorder()
    recorder.install_class_hook()
    recorder.wrap_trainer(trainer)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    steps = [summarize_step(s) | {"reward": r} for s, r in zip(recorder.steps, rewards, strict=True)]
    return steps


def print_table(hybrid: list[dict], plain: list[dict]) -> None:
    columns = [
        ("step", "step", "d"),
        ("floor", "ratio_floor", ".2f"),
        ("prefix", "hybrid_prefix_tokens_mean", ".1f"),
        ("hyb.decoded", "hybrid_decoded_mean", ".1f"),
        ("hyb.kept", "hybrid_kept_mean", ".1f"),
        ("hyb.discarded", "hybrid_discarded_mean", ".1f"),
        ("onpol.decoded", "on_policy_decoded_mean", ".1f"),
        ("saved/hybrid", "decoded_saved_per_hybrid_vs_own_group", ".1f"),
        ("step.decoded", "decoded_total", "d"),
        ("iters", "batch_decode_iterations", "d"),
        ("width", "max_prompt_width", "d"),
    ]
    plain_columns = [("no-hyb.decoded", "decoded_total", "d"), ("no-hyb.iters", "batch_decode_iterations", "d")]
    print("  ".join(name for name, _, _ in columns + plain_columns))
    for h, p in zip(hybrid, plain, strict=True):
        cells = [f"{h[key]:>{len(name)}{fmt}}" for name, key, fmt in columns]
        cells += [f"{p[key]:>{len(name)}{fmt}}" for name, key, fmt in plain_columns]
        print("  ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="optimizer steps; the prefix floor decays over all of them")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-completion", type=int, default=192, help="completion budget (the demo's rollouts: 128)")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="learning rate (the demo's: 3e-5)")
    p.add_argument("--model", choices=("base", "random"), default="base", help="the default base or a random model")
    p.add_argument("--model-size", default="1m", help="size of the random model (the base model has its own)")
    p.add_argument("--out", default="runs/benchmarks/decode_savings.json")
    args = p.parse_args()

    base_path = base_model_path(args.model)
    print(f"model: {base_path or 'random ' + args.model_size}", flush=True)
    t0 = time.perf_counter()
    hybrid = run(1, args, base_path)
    plain = run(0, args, base_path)
    seconds = time.perf_counter() - t0
    print_table(hybrid, plain)

    def total(steps, key):
        return sum(s[key] for s in steps)

    totals = {
        "decoded_with_hybrid": total(hybrid, "decoded_total"),
        "decoded_without_hybrid": total(plain, "decoded_total"),
        "prefix_tokens_supplied": total(hybrid, "prefix_total"),
        "discarded_with_hybrid": total(hybrid, "discarded_total"),
        "batch_decode_iterations_with_hybrid": total(hybrid, "batch_decode_iterations"),
        "batch_decode_iterations_without_hybrid": total(plain, "batch_decode_iterations"),
        "padded_decode_slots_with_hybrid": total(hybrid, "padded_decode_slots"),
        "padded_decode_slots_without_hybrid": total(plain, "padded_decode_slots"),
        "generate_s_with_hybrid": round(total(hybrid, "generate_s"), 2),
        "generate_s_without_hybrid": round(total(plain, "generate_s"), 2),
    }
    totals["decoded_ratio"] = totals["decoded_with_hybrid"] / max(totals["decoded_without_hybrid"], 1)
    print(json.dumps(totals, indent=1))
    report = {
        "settings": {k: v for k, v in vars(args).items()},
        "model": base_path or f"random {args.model_size}",
        "wall_s": round(seconds, 1),
        "totals": totals,
        "with_hybrid": hybrid,
        "without_hybrid": plain,
    }
    write_report(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
