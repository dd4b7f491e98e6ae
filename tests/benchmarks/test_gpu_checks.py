"""benchmarks/gpu_checks.py, the pass criteria of benchmarks/gpu_check.sh, run as a script on good and broken logs.

The logs are written here in the layout a run leaves: `checkpoint-3/trainer_state.json` and TRL's completions table
`completions/completions_00003.parquet` (step, prompt, completion, prefix_len, advantage), for 3 steps of 2 rows of
the question "12+30=", whose demo is "12+30 is 42. ans: 42".
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from prefix_rft.trl.table_logs import PREFIX_MARK

CHECKER = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_checks.py"
PROMPT = [{"role": "user", "content": "12+30="}]
DEMO = "12+30 is 42. ans: 42"
GOOD_STEP = {
    "prefix/hybrid_rows": 1.0,
    "prefix/token_fraction": 0.3,
    "grad_norm": 1.5,
    "sampling/sampling_logp_difference/mean": 0.02,
    "prefix/stand_in_generate_calls": 1.0,
}
GOOD_HYBRID = "12+30 is" + PREFIX_MARK + " 42. ans: 42"


def write_run(tmp_path: Path, steps: list[dict], hybrid_completion: str, global_step: int = 3) -> Path:
    run = tmp_path / "run"
    (run / "checkpoint-3").mkdir(parents=True)
    history = [{"step": i + 1, "loss": 0.1, **step} for i, step in enumerate(steps)]
    state = {"global_step": global_step, "log_history": history}
    (run / "checkpoint-3" / "trainer_state.json").write_text(json.dumps(state))  # inf is written as Infinity
    (run / "completions").mkdir()
    table = pd.DataFrame(
        {
            "step": [3, 3],
            "prompt": [PROMPT, PROMPT],
            "completion": [
                [{"role": "assistant", "content": "7"}],
                [{"role": "assistant", "content": hybrid_completion}],
            ],
            "prefix_len": [0, 8],
            "advantage": [0.5, -0.5],
        }
    )
    table.to_parquet(run / "completions" / "completions_00003.parquet")
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": PROMPT, "demos": [DEMO], "answer": "42"}) + "\n")
    return run


def check(tmp_path: Path, run: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(CHECKER), "--run-dir", str(run), "--data", str(tmp_path / "train.jsonl")]
    return subprocess.run([*command, "--max-steps", "3", *flags], capture_output=True, text=True, timeout=120)


def test_a_good_run_passes_every_check(tmp_path):
    result = check(tmp_path, write_run(tmp_path, [GOOD_STEP] * 3, GOOD_HYBRID), "--vllm", "--stand-in")
    assert result.returncode == 0, result.stdout + result.stderr
    names = [line.split()[1].rstrip(":") for line in result.stdout.splitlines()]
    assert names == [
        "steps",
        "hybrid_rows",
        "token_fraction",
        "grad_norm",
        "sampler_logp_gap",
        "stand_in_calls",
        "hybrid_completions",
    ]
    assert "1 hybrid rows logged, 0 without" in result.stdout


@pytest.mark.slow  # a subprocess each (pandas and pyarrow import in ~2 s)
@pytest.mark.parametrize(("generate_calls", "passes"), [(1.0, True), (2.0, False)])
def test_one_shared_generate_call_needs_no_stand_in(tmp_path, generate_calls, passes):
    step = {**GOOD_STEP, "prefix/stand_in_generate_calls": 0.0, "prefix/generate_calls": generate_calls}
    result = check(tmp_path, write_run(tmp_path, [step] * 3, GOOD_HYBRID), "--vllm", "--stand-in")
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    assert ("FAIL stand_in_calls:" in result.stdout) is not passes


@pytest.mark.slow  # a subprocess each (pandas and pyarrow import in ~2 s)
@pytest.mark.parametrize(
    ("failing", "step", "hybrid", "global_step"),
    [
        # the continuation does not start with the prefix: no mark was set
        ("hybrid_completions", {}, "12+30 is 42. ans: 42", 3),
        # a prefix, but not from this question's demo
        ("hybrid_completions", {}, "17+18 is" + PREFIX_MARK + " 35", 3),
        ("token_fraction", {"prefix/token_fraction": 0.0}, GOOD_HYBRID, 3),
        ("grad_norm", {"grad_norm": float("inf")}, GOOD_HYBRID, 3),
        ("grad_norm", {"grad_norm": float("nan")}, GOOD_HYBRID, 3),
        ("sampler_logp_gap", {"sampling/sampling_logp_difference/mean": 0.8}, GOOD_HYBRID, 3),
        # these two need one step that has them: the override goes on every step
        ("stand_in_calls", {"prefix/stand_in_generate_calls": None}, GOOD_HYBRID, 3),
        ("hybrid_rows", {"prefix/hybrid_rows": 0.0}, GOOD_HYBRID, 3),
        ("steps", {}, GOOD_HYBRID, 2),
    ],
)
def test_a_broken_run_fails_the_check_that_names_it(tmp_path, failing, step, hybrid, global_step):
    broken = {**GOOD_STEP, **step}
    steps = [broken] * 3 if failing in ("stand_in_calls", "hybrid_rows") else [GOOD_STEP, broken, GOOD_STEP]
    run = write_run(tmp_path, steps, hybrid, global_step)
    result = check(tmp_path, run, "--vllm", "--stand-in")
    assert result.returncode == 1
    failed = [line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == [failing]


def test_checks_a_layout_asks_for_are_skipped_otherwise(tmp_path):
    # transformers generation, no stand-in layout: no sampler gap is logged and no stand-in is required
    step = {k: v for k, v in GOOD_STEP.items() if k.startswith(("prefix/h", "prefix/t", "grad"))}
    result = check(tmp_path, write_run(tmp_path, [step] * 3, GOOD_HYBRID))
    assert result.returncode == 0, result.stdout
    assert "sampler_logp_gap" not in result.stdout and "stand_in_calls" not in result.stdout
