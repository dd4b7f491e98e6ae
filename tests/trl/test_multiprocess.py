"""Two gloo processes (the multi-GPU code path on CPU): hybrid rows and parameters agree across ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_two_ranks(out_dir: Path, *extra: str) -> tuple[dict, dict]:
    # torchrun, not `accelerate launch --cpu`, which silently starts one process (cpu_feasibility.md §3)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    result = subprocess.run([*cmd, str(out_dir), *extra], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out_dir / "rank0.json").read_text()), json.loads((out_dir / "rank1.json").read_text())


@pytest.mark.slow
def test_two_processes_agree_on_hybrids_and_parameters(tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["distributed_type"] == "DistributedType.MULTI_CPU"
    # One group of 8 per rank per step; the hybrid is global row 7 (rank 0) and 15 (rank 1) of 20-token demos.
    # Step 0: l = 0.95 -> floor(19.0) = 19. Step 1: floor_1 = 0.949991, l in [0.949991, 0.95) -> floor(18.9998..) = 18.
    expected = [[0] * 7 + [19], [0] * 7 + [18]]
    assert rank0["local_prefix_lens"] == expected
    assert rank1["local_prefix_lens"] == expected
    assert rank0["logged_prefix_lens"] == rank1["logged_prefix_lens"]
    # Entropy selection over the batch of both ranks: 38 prefix tokens keep 38 - floor(0.8 * 38) = 8; 36 keep 8.
    assert rank0["kept_fraction"] == pytest.approx([8 / 38, 8 / 36])
    assert rank0["params"] == rank1["params"]


@pytest.mark.slow
def test_two_processes_hold_one_per_question_state(tmp_path):
    # Each rank plans its own group from its copy of the state, updated from the gathered rewards and keys: the copies,
    # the roles (same prefix lengths logged) and the parameters must agree.
    rank0, rank1 = run_two_ranks(tmp_path, "--guided")
    assert rank0["questions"] == rank1["questions"]
    assert len(rank0["questions"]["records"]) == 4
    assert rank0["guided_rows"] == rank1["guided_rows"]
    assert sum(a + s for a, s in rank0["guided_rows"][2:]) > 0  # precondition: steps 2-3 were planned from the state
    assert rank0["logged_prefix_lens"] == rank1["logged_prefix_lens"]
    assert rank0["params"] == rank1["params"]


@pytest.mark.slow
def test_two_processes_hint_every_rollout_of_a_group_split_between_them(tmp_path):
    # num_hybrid = num_generations, the group of 8 split 4 + 4: each rank's 4 hinted rows, one state steered by the
    # group's guided rows on both ranks. 4 questions, 8 steps of one group: steps 1-4 visit each question once (the
    # schedule's draw), steps 5-8 again, every row then at its question's adapted ratio (8 rows a step).
    rank0, rank1 = run_two_ranks(tmp_path, "--hinted")
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["questions"] == rank1["questions"]
    records = rank0["questions"]["records"]
    assert len(records) == 4
    assert all(success is None and visits == 2 for success, _, visits in records.values())  # no on-policy row
    assert rank0["adaptive_rows"] == rank1["adaptive_rows"] == [0.0] * 4 + [8.0] * 4
    assert rank0["params"] == rank1["params"]


@pytest.mark.slow
def test_fsdp_on_cpu_is_refused_instead_of_training_as_ddp(tmp_path):
    # accelerate enables FSDP only on GPU-like devices; on 2 CPU processes `--fsdp` would otherwise train DDP silently
    config = Path(__file__).parents[2] / "configs" / "smoke_cpu.yaml"
    train = ["-m", "prefix_rft.cli", "train", "--config", str(config), "--output_dir", str(tmp_path / "run")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*cmd, "--fsdp", "full_shard auto_wrap"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert (
        "FSDP was requested (--fsdp / ACCELERATE_USE_FSDP=true) but accelerate runs DistributedType.MULTI_CPU"
        in result.stderr
    )
