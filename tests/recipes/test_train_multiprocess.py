"""Two-process runs of the smoke recipe under torchrun and accelerate launch: both ranks exit 0 with the process group
torn down, and the main process alone saves the model."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
PROBE = Path(__file__).with_name("exit_probe")
# `accelerate launch --cpu` would silently start one process; ACCELERATE_USE_CPU=true with --multi_gpu starts two.
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"],
    "accelerate": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"],
}
TIMEOUT = 600  # a run takes ~30 s; one that never tears its process group down can hang at exit for 10 minutes


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a launcher; on timeout kill it with its workers (its process group), so that none outlives the test."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, start_new_session=True, **pipes) as process:
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"{cmd[0]} did not end within {TIMEOUT} s:\n{(out + err)[-4000:]}")
    return subprocess.CompletedProcess(cmd, process.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_process_smoke_run_exits_cleanly_and_saves_the_model_once(tmp_path, launcher):
    out = tmp_path / "out"
    # 4 rows per process x 2 processes = one group of num_generations=8 per step
    overrides = ["--max_steps", "2", "--output_dir", str(out), "--per_device_train_batch_size", "4"]
    # info on every rank, so that a save by the second process would show in the log too
    overrides += ["--embedded_train_rows", "32", "--log_level", "info", "--log_level_replica", "info"]
    cmd = [*LAUNCHERS[launcher], "-m", "prefix_rft.cli", "train", "--config", "configs/smoke_cpu.yaml", *overrides]
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")])),
        "PREFIX_RFT_EXIT_PROBE": str(tmp_path),
    }
    result = run(cmd, env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    exits = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("exit-rank*.json"))]
    assert exits == [{"rank": 0, "process_group_alive": False}, {"rank": 1, "process_group_alive": False}]
    assert "prefix-rft train: 2 process(es), DistributedType.MULTI_CPU" in result.stdout
    assert log.count("***** Running training *****") == 2  # both ranks' info lines reach the log
    assert log.count(f"Saving model checkpoint to {out}\n") == 1  # ... and only one process wrote the model
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "state_file", "extra"),
    [
        ("relift", "relift_buffer.json", ["--relift_sft_batch", "1"]),
        ("prefix_rft_adaptive", "prefix_questions.json", []),
    ],
)
def test_two_process_method_with_extra_state_checkpoints_it_per_rank_and_resumes(tmp_path, method, state_file, extra):
    out = tmp_path / "out"
    cmd = [*LAUNCHERS["torchrun"], "-m", "prefix_rft.cli", "train", "--config", "configs/smoke_cpu.yaml"]
    # ReLIFT needs whole groups on each rank: one question x 8 rollouts per process
    cmd += ["--method", method, *extra, "--output_dir", str(out), "--per_device_train_batch_size", "8"]
    cmd += ["--embedded_train_rows", "32", "--max_completion_length", "48", "--prefix_truncate_long_demos", "true"]
    cmd += ["--save_strategy", "steps", "--save_steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = run([*cmd, "--max_steps", "1"], env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    # each rank wrote its own state beside its RNG state
    assert sorted(p.name for p in (out / "checkpoint-1").glob(f"*_{state_file}")) == [
        f"0_{state_file}",
        f"1_{state_file}",
    ]
    resumed = run([*cmd, "--max_steps", "2", "--resume_from_checkpoint", "true"], env)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert "starts empty" not in log  # both ranks found their state in checkpoint-1
    assert (out / "checkpoint-2" / f"1_{state_file}").is_file()
