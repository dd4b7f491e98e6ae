"""TRAPO's generation batch with the paper's in-step escalation vs levels read from the previous visit, same rows.

One process, `step_time.py`'s setup (16 prompts x 8 rollouts, the tiny model, the task's reward). The reward runs the
task's verifier (its cost is paid) and then returns 0, so every question escalates fully either way: positions 4-5 get
25% of the demo, 6 half, 7 the whole demo. `in_step` decides this inside the batch (four micro-groups one after
another, 3 generate calls as position 7's whole demo generates nothing; rows 0-6 scored as their micro-group comes and
again with the batch); `previous_visit` gets the same levels from a state set beforehand (one generation pass). Times
`_generate_and_score_completions` of the same batch in both modes, alternating within each repeat, and reports median
CPU and wall seconds and their ratios. `--whole-step` also times the loss and backward pass over the batch (the rest
of an optimizer step with steps_per_generation=1; the optimizer's update itself is the same in both modes).

    python benchmarks/trapo_escalation.py --repeats 5 --out docs/benchmarks/trapo_escalation.json
    python benchmarks/trapo_escalation.py --repeats 5 --whole-step --out docs/benchmarks/trapo_escalation_step.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import build, write_report

MODES = ("in_step", "previous_visit")


def verified_zero(completions, **kwargs):
    """The task's reward, computed and then replaced by 0: its cost with every question escalated fully."""
    from prefix_rft.tasks import task_reward

    task_reward(completions, **kwargs)
    return [0.0] * len(completions)


def setup(args, mode: str, reward=verified_zero):
    """(trainer, batch) of `mode` scored by `reward`, the batch the first of `args.prompts` questions x 8 rollouts."""
    from prefix_rft.baselines import TrapoConfig, TrapoTrainer
    from prefix_rft.trl.cpu import cpu_trainer_kwargs
    from prefix_rft.trl.questions import question_key

    model, tokenizer, dataset = build(args)
    config = TrapoConfig(
        **cpu_trainer_kwargs(f"/tmp/bench_trapo_{mode}", seed=0, max_steps=1),
        per_device_train_batch_size=8 * args.prompts,
        max_completion_length=args.max_completion,
        temperature=1.0,
        disable_tqdm=True,
        trapo_escalation=mode,
        prefix_truncate_long_demos=True,  # as step_time.py: demos longer than the budget are cut, not refused
    )
    trainer = TrapoTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    batch = [dataset[i] for i in range(args.prompts) for _ in range(8)]
    trainer.escalation.levels = {question_key(x): (1, 2, 3) for x in batch}  # read by previous_visit only
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by TRL's training loop, which --whole-step bypasses
    return trainer, batch


def time_batch(trainer, batch, whole_step: bool = False) -> tuple[float, float, list[int]]:
    """(CPU seconds, wall seconds, prefix tokens per row) of one generation batch, and with `whole_step` of the loss
    and backward pass over it."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = trainer._generate_and_score_completions(batch)
    if whole_step:
        trainer.compute_loss(trainer.model, out).backward()
        trainer.model.zero_grad(set_to_none=True)
    return time.process_time() - c0, time.perf_counter() - t0, out["prefix_mask"].sum(dim=1).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-completion", type=int, default=64)
    p.add_argument("--model-size", default="1m")
    p.add_argument("--whole-step", action="store_true", help="also time the loss and backward over the batch")
    p.add_argument("--out", default="docs/benchmarks/trapo_escalation.json")
    args = p.parse_args()
    args.steps = 1
    trainers = {mode: setup(args, mode) for mode in MODES}
    prefixes = {mode: time_batch(*trainers[mode])[2] for mode in MODES}  # warm-up
    if prefixes["in_step"] != prefixes["previous_visit"]:
        raise RuntimeError(f"the two modes guided different rows: {prefixes}")
    times = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES[repeat % 2 :] + MODES[: repeat % 2]:
            times[mode].append(time_batch(*trainers[mode], whole_step=args.whole_step)[:2])
    median = {
        m: {"cpu_s": statistics.median(c for c, _ in t), "wall_s": statistics.median(w for _, w in t)}
        for m, t in times.items()
    }
    ratios = {
        f"in_step / previous_visit {k}": median["in_step"][f"{k}_s"] / median["previous_visit"][f"{k}_s"]
        for k in ("cpu", "wall")
    }
    shapes = {"rows": 8 * args.prompts, "prefix_tokens_per_group": prefixes["in_step"][:8]}
    print({"median": median, "ratios": ratios, "shapes": shapes})
    write_report(
        args.out, {"settings": vars(args), "shapes": shapes, "median": median, "ratios": ratios, "runs": times}
    )


if __name__ == "__main__":
    main()
