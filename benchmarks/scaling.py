"""Scaling: Prefix-RFT with 1 process (2 threads) vs 2 processes (1 thread each) on CPU at the same global batch.

Both runs train the same model on the same prompts with 16 prompts x 8 rollouts per optimizer step: the 2-process run
gives each rank 64 rows. The 2-process run is `torchrun --standalone --nproc_per_node 2` with `use_cpu=True`,
`ACCELERATE_USE_CPU=true` and `OMP_NUM_THREADS=1`; each worker asserts its world size and destroys the process group
at exit. Reported: throughput (rows/s, median step time, first step dropped), and what
is equal between the two runs (the prompts of every step, hybrid rows, prefix ratios and lengths) and what is not (the
rollouts, hence rewards and parameters, because the ranks draw from their own sampling RNG streams).

    python benchmarks/scaling.py --steps 6 --out runs/benchmarks/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import base_model_path, build, common_kwargs, load_model, write_report


def worker(args) -> None:
    """One training run (one rank of it under torchrun); rank 0 writes the results to `args.result`."""
    import torch
    from accelerate.utils import DistributedType, gather_object
    from transformers import TrainerCallback

    from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
    from prefix_rft.tasks import task_reward

    model, tokenizer, dataset = build(args)
    if args.base_path:
        model, tokenizer = load_model(args.base_path)
    global_rows = 8 * args.prompts
    kwargs = common_kwargs(args) | {
        "output_dir": tempfile.mkdtemp(prefix="bench_scaling_"),
        "per_device_train_batch_size": global_rows // args.world,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "constant",
    }
    config = PrefixRFTConfig(
        **kwargs, num_hybrid=1, prefix_ratio_decay_steps=args.steps, prefix_truncate_long_demos=True
    )
    trainer = PrefixRFTTrainer(
        model=model, reward_funcs=[task_reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    acc = trainer.accelerator
    assert acc.num_processes == args.world, f"expected world {args.world}, got {acc.num_processes}"
    if args.world > 1:
        assert acc.distributed_type == DistributedType.MULTI_CPU, acc.distributed_type
    threads = gather_object([torch.get_num_threads()])

    plans, step_times, marks = [], [], {}
    original_add = trainer._add_prefix_fields
    original_generate = trainer._generate_and_score_completions

    def generate_and_score(inputs):
        marks["answers"] = [x["answer"] for x in inputs]
        return original_generate(inputs)

    def add_prefix_fields(output, plan):
        original_add(output, plan)
        prefix = [len(p) for p in plan.prefix_ids] if plan.prefix_ids else [0] * len(plan.rows)
        local = [
            {"answer": a, "prefix": n, "ratio": round(r.ratio, 6), "demo_len": r.demo_len}
            for a, n, r in zip(marks["answers"], prefix, plan.rows, strict=True)
        ]
        plans.append(gather_object(local))  # process-major: the global row order of the rewards

    trainer._generate_and_score_completions = generate_and_score
    trainer._add_prefix_fields = add_prefix_fields

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            marks["t0"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            step_times.append(time.perf_counter() - marks["t0"])

    trainer.add_callback(Clock())
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0

    # DDP keeps the ranks' parameters identical: check it, then keep rank 0's for the comparison between runs.
    flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    checksums = gather_object([float(flat.double().sum())])
    if acc.is_main_process:
        torch.save(flat, args.result + ".params.pt")
        history = trainer.state.log_history
        result = {
            "world": acc.num_processes,
            "distributed_type": str(acc.distributed_type),
            "torch_threads_per_rank": threads,
            "param_checksum_per_rank": checksums,
            "step_s": step_times,
            "train_wall_s": wall,
            "reward": [h["reward"] for h in history if "reward" in h],
            "reward_hybrid": [h.get("reward/hybrid") for h in history if "reward" in h],
            "reward_on_policy": [h.get("reward/on_policy") for h in history if "reward" in h],
            "completion_mean_length": [h.get("completions/mean_length") for h in history if "reward" in h],
            "plans": plans,
        }
        Path(args.result).write_text(json.dumps(result))
    acc.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launch(world: int, args, result: str) -> float:
    """Run one training run as a subprocess; returns its wall time including start-up."""
    env = dict(os.environ)
    script = [
        __file__,
        "--worker",
        f"--world={world}",
        f"--result={result}",
        f"--steps={args.steps}",
        f"--prompts={args.prompts}",
        f"--max-completion={args.max_completion}",
        f"--model-size={args.model_size}",
        f"--learning-rate={args.learning_rate}",
        f"--base-path={args.base_path or ''}",
    ]
    if world == 1:
        env["OMP_NUM_THREADS"] = "2"
        cmd = [sys.executable, *script]
    else:
        env.update(OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *script]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"run with world {world} failed (exit code {proc.returncode})")
    return time.perf_counter() - t0


def compare(one: dict, two: dict, params_one, params_two) -> dict:
    """What is equal between the 1- and 2-process runs, step by step."""
    steps = min(len(one["plans"]), len(two["plans"]))
    same = {"prompts": [], "hybrid_rows": [], "prefix_ratios": [], "prefix_lengths": []}
    for s in range(steps):
        a, b = one["plans"][s], two["plans"][s]
        same["prompts"].append([r["answer"] for r in a] == [r["answer"] for r in b])
        same["hybrid_rows"].append([r["prefix"] > 0 for r in a] == [r["prefix"] > 0 for r in b])
        same["prefix_ratios"].append([r["ratio"] for r in a] == [r["ratio"] for r in b])
        same["prefix_lengths"].append([r["prefix"] for r in a] == [r["prefix"] for r in b])
    diff = (params_one - params_two).abs()
    return {
        "equal_every_step": {k: all(v) for k, v in same.items()},
        "equal_per_step": same,
        "rewards_equal_per_step": [x == y for x, y in zip(one["reward"], two["reward"], strict=False)],
        "params_max_abs_diff": float(diff.max()),
        "params_rel_l2_diff": float((params_one - params_two).norm() / params_one.norm()),
        "ddp_ranks_identical": len(set(two["param_checksum_per_rank"])) == 1,
    }


def summarize(run: dict, rows: int) -> dict:
    timed = run["step_s"][1:] or run["step_s"]  # first step is a warm-up
    median = statistics.median(timed)
    return {
        "world": run["world"],
        "distributed_type": run["distributed_type"],
        "torch_threads_per_rank": run["torch_threads_per_rank"],
        "median_step_s": round(median, 3),
        "rows_per_s": round(rows / median, 2),
        "train_wall_s": round(run["train_wall_s"], 1),
        "launch_wall_s": round(run["launch_wall_s"], 1),
        "step_s": [round(t, 3) for t in run["step_s"]],
        "reward": run["reward"],
        "reward_hybrid": run["reward_hybrid"],
        "reward_on_policy": run["reward_on_policy"],
        "completion_mean_length": run["completion_mean_length"],
    }


def parent(args) -> None:
    import torch

    args.base_path = base_model_path(args.model)
    print(f"model: {args.base_path or 'random ' + args.model_size}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for world in (1, 2) if repeat % 2 == 0 else (2, 1):  # alternate who goes first
            result = str(tmp / f"world{world}_repeat{repeat}.json")
            wall = launch(world, args, result)
            run = json.loads(Path(result).read_text()) | {"launch_wall_s": wall, "params": result + ".params.pt"}
            runs[world].append(run)
            print(f"repeat {repeat}: world {world}: median step {statistics.median(run['step_s'][1:]):.2f}s")
    rows = 8 * args.prompts
    one, two = runs[1][0], runs[2][0]
    params = {w: torch.load(runs[w][0]["params"]) for w in (1, 2)}
    equality = compare(one, two, params[1], params[2])
    if args.repeats > 1:  # the same run twice: is each setting deterministic on its own?
        equality["rerun_identical"] = {
            w: runs[w][0]["reward"] == runs[w][1]["reward"]
            and bool(torch.equal(params[w], torch.load(runs[w][1]["params"])))
            for w in (1, 2)
        }
    summary = {w: [summarize(r, rows) for r in rs] for w, rs in runs.items()}
    medians = {w: statistics.median(s["median_step_s"] for s in summary[w]) for w in (1, 2)}
    throughput = {
        "global_rows_per_step": rows,
        "median_step_s": medians,
        "rows_per_s": {w: round(rows / m, 2) for w, m in medians.items()},
        "speedup_2_over_1": round(medians[1] / medians[2], 3),
    }
    report = {
        "settings": {k: v for k, v in vars(args).items()},
        "throughput": throughput,
        "equality": equality,
        "runs": summary,
    }
    print(json.dumps({"throughput": throughput, "equality": equality["equal_every_step"]}, indent=1))
    print("step  reward(1 proc)  reward(2 procs)")
    for s, (a, b) in enumerate(zip(one["reward"], two["reward"], strict=False)):
        print(f"{s:>4}  {a:14.3f}  {b:15.3f}")
    write_report(args.out, report)
    print(f"wrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is a warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per global batch (x 8 rollouts)")
    p.add_argument("--max-completion", type=int, default=192)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=1, help="runs per setting; 2 also checks that reruns are identical")
    p.add_argument("--model", choices=("base", "random"), default="base", help="the default base or a random model")
    p.add_argument("--model-size", default="1m")
    p.add_argument("--out", default="runs/benchmarks/scaling.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--base-path", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
