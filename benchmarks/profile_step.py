"""Where a training step's time goes: py-spy samples of `step_time.py`'s child runs, summed by function.

Runs `benchmarks/step_time.py --child --variant V` under `py-spy record` (`pip install py-spy`) for each variant and
reports, for a fixed list of functions, the share of the process's samples spent inside them (inclusive), so that
variants can be compared stage by stage. The raw collapsed stacks (megabytes) go to `--stacks-dir`, for flame graphs.

    python benchmarks/profile_step.py --variants stock_dr_grpo prefix_rft --out runs/benchmarks/profile_step.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import write_report

STEP_TIME = Path(__file__).resolve().parent / "step_time.py"
# label -> regex on a py-spy frame "Class.function (file:line)"; a sample counts once per label however deep the match.
FRAMES = {
    "train loop": r"(^|\.)_inner_training_loop \(",
    "generation (_generate_single_turn)": r"(^|\.)_generate_single_turn \(",
    "  HF generate": r"^GenerationMixin\.generate \(",
    "    prefill": r"^GenerationMixin\._prefill \(",
    "    attention (sdpa)": r"(^|\.)sdpa_attention_forward \(",
    "    attention masks": r"(^|\.)(create_causal_mask|sdpa_mask|_preprocess_mask_arguments) \(",
    "  prefix rendering (_prefix_token_ids)": r"(^|\.)_prefix_token_ids \(",
    "row plan (_plan_rows)": r"(^|\.)_plan_rows \(",
    "rewards (_calculate_rewards)": r"(^|\.)_calculate_rewards \(",
    "prefix fields and metrics (_add_prefix_fields)": r"(^|\.)_add_prefix_fields \(",
    "loss (compute_loss)": r"(^|\.)compute_loss \(",
    "  log-prob forward (_get_per_token_logps_and_entropies)": r"(^|\.)_get_per_token_logps_and_entropies \(",
    "  prefix token selection (_prefix_keep_mask)": r"(^|\.)_prefix_keep_mask \(",
    "  loss metrics (_log_loss_metrics)": r"(^|\.)_log_loss_metrics \(",
    "backward": r"(^|\.)backward \(torch/_tensor",
    "optimizer step": r"(^|\.)step \(torch/optim",
}


def py_spy() -> str:
    """py-spy on PATH, else next to this interpreter (a venv used without activating it)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def profile(variant: str, args, raw_path: Path) -> dict:
    cmd = [
        py_spy(),
        "record",
        "--format",
        "raw",
        "--rate",
        str(args.rate),
        "--output",
        str(raw_path),
        "--",
        sys.executable,
        str(STEP_TIME),
        "--child",
        "--variant",
        variant,
        f"--steps={args.steps}",
        f"--prompts={args.prompts}",
        f"--max-completion={args.max_completion}",
        f"--model-size={args.model_size}",
    ]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"profiling {variant} failed")
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    return {"shares": shares(raw_path), "step_time_result": result}


def shares(raw_path: Path) -> dict:
    """Inclusive sample counts per label, and as a share of all samples and of the training loop's samples."""
    patterns = {label: re.compile(rx) for label, rx in FRAMES.items()}
    counts, total = Counter(), 0
    for line in raw_path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        for label, pattern in patterns.items():
            if any(pattern.search(f) for f in frames):
                counts[label] += n
    loop = counts["train loop"] or 1
    return {
        "samples": total,
        "per_function": {
            label: {"samples": counts[label], "share_of_train_loop": round(counts[label] / loop, 4)}
            for label in FRAMES
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["stock_dr_grpo", "prefix_rft"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-completion", type=int, default=64)
    p.add_argument("--model-size", default="1m")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--out", default="runs/benchmarks/profile_step.json")
    p.add_argument("--stacks-dir", default=str(Path(tempfile.gettempdir()) / "prefix_rft_profile"))
    args = p.parse_args()
    py_spy()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(args.stacks_dir).mkdir(parents=True, exist_ok=True)
    report = {"settings": vars(args), "variants": {}}
    for variant in args.variants:
        raw = Path(args.stacks_dir) / f"{out.stem}.{variant}.stacks.txt"
        report["variants"][variant] = profile(variant, args, raw) | {"stacks": str(raw)}
    labels = list(FRAMES)
    print(f"{'share of the training loop':<58}" + "".join(f"{v:>22}" for v in args.variants))
    for label in labels[1:]:
        cells = [report["variants"][v]["shares"]["per_function"][label]["share_of_train_loop"] for v in args.variants]
        print(f"{label:<58}" + "".join(f"{c:>22.1%}" for c in cells))
    seconds = [report["variants"][v]["step_time_result"]["steps"] for v in args.variants]
    print(f"{'train loop seconds (all steps)':<58}" + "".join(f"{sum(s['total'] for s in x):>22.2f}" for x in seconds))
    write_report(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
