"""The pass criteria of one `benchmarks/gpu_check.sh` run, read from what the run left on disk.

    python benchmarks/gpu_checks.py --run-dir RUN --data TRAIN.jsonl --max-steps 3 [--vllm] [--stand-in]

RUN is the training `output_dir`: its last `checkpoint-*/trainer_state.json` (every logged step's metrics) and
`completions/completions_*.parquet` (TRL's completions tables, `log_completions=true`). A run passes only if:

- it reached `--max-steps`, and planned hybrid rows (`prefix/hybrid_rows` > 0);
- every logged step trained demo tokens (`prefix/token_fraction` > 0) and has a finite `grad_norm`;
- every logged completion of a hybrid row (`prefix_len` > 0) starts with its demo prefix: the trainer marks where the
  prefix ends (`PREFIX_MARK`, only when the completion starts with the prefix's text), and the text before the mark
  must begin one of that prompt's demos in TRAIN.jsonl;
- with `--vllm`: TRL's `sampling/sampling_logp_difference/mean` (mean |trainer - sampler| log-prob of sampled tokens)
  is below `--max-logp-gap` (0.1 nats) on every step. A continuation sampled from the bare prompt, or stale or
  misnamed weights on the engine, puts it far above; bf16 kernels on both sides keep it at a few hundredths;
- with `--stand-in`: some step logged `prefix/stand_in_generate_calls` (a rank joined a generate call it had no rows
  for: the layout where rank 0 has no hybrid under ZeRO-3), or every step made one shared generate call
  (`prefix/generate_calls` 1: hybrids decode in the on-policy rows' call, so there is no call to stand in for).

Prints one line per check and exits 1 if any fails. Standard library only, plus pandas for the parquet tables.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys

PREFIX_MARK = " ⟦/prefix⟧ "  # src/prefix_rft/trl/table_logs.py
MAX_LOGP_GAP = 0.1


def last_state(run_dir: str) -> dict:
    paths = glob.glob(os.path.join(run_dir, "checkpoint-*", "trainer_state.json"))
    if not paths:
        raise SystemExit(f"FAIL no checkpoint-*/trainer_state.json under {run_dir}")
    newest = max(paths, key=lambda p: int(re.search(r"checkpoint-(\d+)", p).group(1)))
    with open(newest) as f:
        return json.load(f)


def demos_by_question(data_path: str) -> dict[str, list[str]]:
    """The user message of each training row -> its demos."""
    table = {}
    with open(data_path) as f:
        for line in f:
            row = json.loads(line)
            table[question_of(row["prompt"])] = row["demos"]
    return table


def question_of(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def completion_text(completion) -> str:
    return completion if isinstance(completion, str) else completion[0]["content"]


def check_steps(history: list[dict], max_steps: int, global_step: int, vllm: bool, stand_in: bool, gap: float):
    """(name, ok, detail) for each metric check over the logged training steps."""
    steps = [entry for entry in history if "prefix/token_fraction" in entry]

    def values(key):
        return [entry.get(key) for entry in steps]

    fractions, grads = values("prefix/token_fraction"), values("grad_norm")
    checks = [
        ("steps", global_step >= max_steps and len(steps) >= 1, f"global_step {global_step} of {max_steps}"),
        ("hybrid_rows", any((v or 0) > 0 for v in values("prefix/hybrid_rows")), f"{values('prefix/hybrid_rows')}"),
        ("token_fraction", bool(steps) and all(v is not None and v > 0 for v in fractions), f"{fractions}"),
        ("grad_norm", bool(steps) and all(v is not None and math.isfinite(v) for v in grads), f"{grads}"),
    ]
    if vllm:
        gaps = values("sampling/sampling_logp_difference/mean")
        ok = bool(steps) and all(v is not None and v < gap for v in gaps)
        checks.append(("sampler_logp_gap", ok, f"{gaps} (< {gap})"))
    if stand_in:
        # One shared generate call per generation leaves no call for a rank to stand in for (docs/performance.md)
        calls, shared = values("prefix/stand_in_generate_calls"), values("prefix/generate_calls")
        ok = any((v or 0) > 0 for v in calls) or (bool(steps) and all(v == 1 for v in shared))
        checks.append(("stand_in_calls", ok, f"stand-ins {calls}, generate calls {shared}"))
    return checks


def check_completions(run_dir: str, demos: dict[str, list[str]]):
    """(name, ok, detail): every logged hybrid completion starts with a prefix of one of its question's demos."""
    paths = sorted(glob.glob(os.path.join(run_dir, "completions", "completions_*.parquet")))
    if not paths:
        return ("hybrid_completions", False, "no completions tables (log_completions=true?)")
    import pandas as pd

    hybrid, bad = 0, []
    for path in paths:
        table = pd.read_parquet(path)
        for row in table.itertuples(index=False):
            if not row.prefix_len or row.prefix_len <= 0:
                continue
            hybrid += 1
            text = completion_text(row.completion)
            prefix = text.split(PREFIX_MARK, 1)[0] if PREFIX_MARK in text else None
            row_demos = demos.get(question_of(row.prompt), [])
            if not prefix or not any(demo.startswith(prefix) for demo in row_demos):
                bad.append(f"{os.path.basename(path)} step {row.step}: {text[:80]!r}")
    ok = hybrid > 0 and not bad
    return ("hybrid_completions", ok, f"{hybrid} hybrid rows logged, {len(bad)} without their demo prefix {bad[:3]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--data", required=True, help="the training JSONL (prompt, demos)")
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--vllm", action="store_true", help="check TRL's sampler log-prob gap")
    parser.add_argument("--stand-in", action="store_true", help="require stand-in generate calls")
    parser.add_argument("--max-logp-gap", type=float, default=MAX_LOGP_GAP)
    args = parser.parse_args(argv)
    state = last_state(args.run_dir)
    checks = check_steps(
        state["log_history"], args.max_steps, state["global_step"], args.vllm, args.stand_in, args.max_logp_gap
    )
    checks.append(check_completions(args.run_dir, demos_by_question(args.data)))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
