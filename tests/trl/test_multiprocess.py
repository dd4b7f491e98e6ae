"""Two gloo processes (the multi-GPU code path on CPU): hybrid rows and parameters agree across ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_processes_agree_on_hybrids_and_parameters(tmp_path):
    # torchrun, not `accelerate launch --cpu`, which silently starts one process (cpu_feasibility.md §3)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    result = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
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
