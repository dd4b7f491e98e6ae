"""Two gloo ranks where generate and forward are collectives (as under ZeRO-3/FSDP): every layout finishes.

The worker (collective_worker.py) checks at every call that both ranks are at the same generate and forward call; a
mismatch raises there (on GPUs it would hang). Expected counts are worked out from each layout by hand.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("collective_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("collective")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    result = subprocess.run([*cmd, str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_world_size_is_two(ranks):
    assert [r["world_size"] for r in ranks] == [2, 2]


# (layout, generate calls per rank, stand-in calls on rank 0 and rank 1, hybrid rows logged per optimizer step)
# Demo prefixes are forced inside the on-policy rows' call (one call per generation, no stand-in): prompts of
# 5 characters + the chat template, prefixes of 19 tokens, budget 24: the shared call and separate calls hold the same
# padded tokens, and the shared one decodes fewer steps (core.prefer_shared_call).
# rank0_no_hybrid: 2 steps x 1 call.
# rank0_no_hint: 2 steps x (on-policy call + hint call); rank 0 has no hint row, so it stands in twice.
# groups_span_ranks: hybrids at global rows 3, 7 (rank 0: 0-5, rank 1: 6-11) and 11: 2 steps x 1 call.
# steps_per_generation_2: one generation for the 2 steps: 1 call.
# accumulation_2_step_scope: steps_per_generation = accumulation = 2, so one generation per optimizer step.
# trapo_in_step: every reward 0, so each step escalates fully: micro-group 1 (rank 0; rank 1 stands in), 2 (25%
# prefixes forced, rank 1; rank 0 stands in), 3 (50%, likewise), 4 (the whole demo: nothing generated, no call):
# 2 steps x 3 calls; stand-ins 2 x 2 on rank 0, 2 x 1 on rank 1; rows 4-7 hybrid.
CASES = [
    ("rank0_no_hybrid", 2, [0, 0], [1.0, 1.0]),
    ("rank0_no_hint", 4, [2, 0], [1.0, 1.0]),
    ("groups_span_ranks", 2, [0, 0], [3.0, 3.0]),
    ("steps_per_generation_2", 1, [0, 0], [1.0]),
    ("accumulation_2_step_scope", 2, [0, 0], [1.0, 1.0]),
    ("trapo_in_step", 6, [4, 2], [4.0, 4.0]),
]


@pytest.mark.slow
@pytest.mark.parametrize("layout, calls, stand_ins, hybrid_rows", CASES)
def test_equal_collective_calls(ranks, layout, calls, stand_ins, hybrid_rows):
    runs = [r["layouts"][layout] for r in ranks]
    assert [run["steps"] for run in runs] == [2, 2]
    assert [run["generate_calls"] for run in runs] == [calls, calls]
    assert [run["stand_in_generate_calls"] for run in runs] == stand_ins
    assert runs[0]["forward_calls"] == runs[1]["forward_calls"]
    assert [h for h in runs[0]["hybrid_rows"] if h is not None] == hybrid_rows
