"""A run SIGKILLed during generation, backward or checkpoint writing, then resumed, ends like an uninterrupted run."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("resume_worker.py")
# Wall-clock keys differ between runs. `train_loss` is transformers' end-of-run summary, averaged over the steps run
# by this process only, so a resumed process reports the mean of its own steps; every per-step `loss` is compared.
SUMMARY_KEYS = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}
# Kill points drawn once at random (seeded, so a failure reproduces): a step in 1..4 for each phase.
_rng = random.Random(2026)
KILLS = [f"{phase}:{_rng.randint(1, 4)}" for phase in ("generate", "backward", "save")]


def run(out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), str(out_dir), *extra], capture_output=True, text=True, timeout=600
    )


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in SUMMARY_KEYS} for h in history]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kill", KILLS)
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, reference, kill):
    killed = run(tmp_path, "--kill", kill)
    assert killed.returncode == -9, "the worker must have been killed"
    assert not (tmp_path / "final.json").exists()
    resumed = run(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((tmp_path / "final.json").read_text())
    phase, step = kill.split(":")
    # The latest complete checkpoint: killed at step s (0-based) during generation or backward -> checkpoint-s;
    # killed while writing checkpoint-(s+1) -> still checkpoint-s.
    assert final["resumed_from"].endswith(f"checkpoint-{int(step)}")
    assert final["params"] == reference["params"]
    assert comparable(final["log_history"]) == comparable(reference["log_history"])


@pytest.mark.slow
def test_resumed_run_plans_from_the_saved_per_question_state(tmp_path_factory):
    # Killed while generating step 3, resumed from checkpoint-3: steps 3-5 revisit the questions of steps 0-2, so every
    # remaining plan (adapted ratios, a solved slot run on-policy) reads the state that checkpoint-3 carried.
    reference_dir, out = tmp_path_factory.mktemp("guided"), tmp_path_factory.mktemp("guided_killed")
    assert run(reference_dir, "--guided").returncode == 0
    reference = json.loads((reference_dir / "final.json").read_text())
    after_kill = [h for h in reference["log_history"] if "loss" in h][3:]
    # precondition: those plans read the state (2, 2, 1 adapted ratios and 0, 0, 1 solved slots)
    assert sum(h["prefix/adaptive_rows"] for h in after_kill) > 0 and sum(h["prefix/solved_rows"] for h in after_kill)
    assert run(out, "--guided", "--kill", "generate:3").returncode == -9
    resumed = run(out, "--guided", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((out / "final.json").read_text())
    assert final["resumed_from"].endswith("checkpoint-3")
    assert final["params"] == reference["params"]
    assert comparable(final["log_history"]) == comparable(reference["log_history"])


@pytest.mark.slow
def test_run_killed_after_its_last_checkpoint_ends_there(tmp_path_factory):
    # 6 questions x 8 rollouts / 16 rows per step = 3 steps per epoch, so a 5-step run ends inside epoch 1. Resumed
    # from checkpoint-5, transformers restarted that epoch at its 3rd step and trained it (checkpoint-6) before it
    # checked max_steps; the run must end as it was, with the uninterrupted run's parameters.
    reference_dir, out = tmp_path_factory.mktemp("five_steps"), tmp_path_factory.mktemp("killed_at_the_end")
    assert run(reference_dir, "--max-steps", "5").returncode == 0
    reference = json.loads((reference_dir / "final.json").read_text())
    assert run(out, "--max-steps", "5", "--kill", "saved:5").returncode == -9
    resumed = run(out, "--max-steps", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((out / "final.json").read_text())
    assert final["resumed_from"].endswith("checkpoint-5")
    assert not (out / "checkpoint-6").exists()
    assert final["params"] == reference["params"]
    assert comparable(final["log_history"]) == comparable(reference["log_history"])
