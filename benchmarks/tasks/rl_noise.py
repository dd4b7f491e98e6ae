"""How much of an RL update on the embedded base is signal: RFT with the verifier's reward against a shuffled control.

The control shuffles the rewards inside each group of rollouts of one question (a fresh permutation per group and
step), so every group keeps its rewards, its mean and its advantages, but which completion earned them is random. What
the control does to the model is the noise part of an update of that size; what the true reward does beyond it is
the signal. Both arms share the seed, the prompts and the evaluation problems. Its run on the first default base is in
docs/LOG.md (2026-11-22 12:17).

Run: python benchmarks/tasks/rl_noise.py [--learning-rates 1e-5,3e-5,1e-4] [--out runs/rl_noise.json] [run flags of
     prefix-rft demo, e.g. --steps 60 --base-set FIELD=VALUE]
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prefix_rft.recipes.settings import parse_settings
from prefix_rft.recipes.toy import evaluate_splits, load_base, train_rl
from prefix_rft.tasks import task_reward


@dataclass
class NoiseArguments:
    learning_rates: str = field(default="1e-5,3e-5,1e-4", metadata={"help": "comma-separated RL learning rates"})
    seed: int = field(default=0, metadata={"help": "seed of the prompts, sampling and evaluation problems"})
    output_dir: str = field(default="runs/rl_noise", metadata={"help": "trainer output dirs go here"})
    out: str = field(default="runs/rl_noise.json", metadata={"help": "where the summary JSON goes"})


def shuffled_reward(seed: int, group_size: int):
    """A TRL reward function returning the task reward with each group's rewards shuffled among its rollouts.

    TRL passes the `group_size` rollouts of a question as consecutive rows, so groups are consecutive blocks.
    """
    rng = random.Random(seed)

    def reward(completions: list, answer: list[str], **kwargs) -> list[float]:
        scores = task_reward(completions, answer)
        if len(scores) % group_size:
            raise ValueError(f"{len(scores)} completions do not split into groups of {group_size}")
        shuffled = []
        for start in range(0, len(scores), group_size):
            group = scores[start : start + group_size]
            rng.shuffle(group)
            shuffled += group
        return shuffled

    reward.__name__ = "shuffled_task_reward"  # TRL names the reward's metrics after the function
    return reward


def main() -> None:
    settings, args = parse_settings(None, NoiseArguments, prog="benchmarks/tasks/rl_noise.py")
    seed = args.seed

    _, base, tokenizer = load_base(settings)
    start_all = time.perf_counter()
    results = {"base": evaluate_splits(base.eval(), tokenizer, seed, settings.eval_k, settings.eval_problems, "base")}
    key = f"avg@{settings.eval_k}"
    print(f"base: test {results['base']['test'][key]:.3f} ood {results['base']['ood'][key]:.3f}", flush=True)
    learning_rates = [float(x) for x in args.learning_rates.split(",")]
    for lr in learning_rates:
        for arm in ("true", "shuffled"):
            start = time.perf_counter()
            # No accuracy curve: only the final evaluation is reported.
            run_settings = dataclasses.replace(settings, learning_rate=lr, curve_every=settings.steps + 1)
            torch.manual_seed(seed)
            _, model, _ = load_base(run_settings)
            reward_fn = shuffled_reward(seed, settings.num_generations) if arm == "shuffled" else None
            out = Path(args.output_dir) / f"lr{lr:g}_{arm}"
            train_rl("rft", model, tokenizer, run_settings, seed, out, [], reward_fn=reward_fn)
            final = evaluate_splits(model.eval(), tokenizer, seed, settings.eval_k, settings.eval_problems, arm)
            results[f"lr={lr:g} {arm}"] = {**final, "seconds": round(time.perf_counter() - start, 1)}
            print(f"lr {lr:g} {arm}: test {final['test'][key]:.3f} ood {final['ood'][key]:.3f}", flush=True)

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    run = {**dataclasses.asdict(settings), "learning_rate": learning_rates}  # each arm ran at one of these
    report = {"metric": key, "settings": run, "seed": seed, "results": results}
    report["seconds"] = round(time.perf_counter() - start_all, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**report, "commit": commit}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
