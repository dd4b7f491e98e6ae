"""Two gloo processes: a per-question method takes the same decision for every question on every rank, and each rank
applies it to its own rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("method_worker.py")
SOLVED_QUESTIONS = {"12+30", "25+25"}  # answers 42 and 50: reward 1 on every row (method_worker.SOLVED)


def run_two_ranks(out_dir: Path, method: str) -> tuple[dict, dict]:
    # torchrun, not `accelerate launch --cpu`, which silently starts one process (cpu_feasibility.md §3)
    root = str(Path(__file__).parents[2])  # the worker imports the test settings (tests.helpers)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    result = subprocess.run([*cmd, str(out_dir), method], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out_dir / "rank0.json").read_text()), json.loads((out_dir / "rank1.json").read_text())


@pytest.mark.slow
def test_hpt_switches_each_ranks_own_questions(tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, "hpt")
    assert rank0["world_size"] == 2
    for record in (rank0, rank1):
        for batch in record["seen"]:  # one question (a group of 8, slot 7 its demo) per rank and step
            (question,) = batch["questions"]
            if question in SOLVED_QUESTIONS:  # RL on the 7 rollouts, the demo dropped
                assert (batch["hpt_rl_rows"], batch["hpt_sft_rows"]) == ([True] * 7 + [False], [False] * 8), question
            else:  # no rollout solved it: SFT on the demo, the rollouts dropped
                assert (batch["hpt_rl_rows"], batch["hpt_sft_rows"]) == ([False] * 8, [False] * 7 + [True]), question
    # precondition: in some step the two ranks held questions that were switched differently
    kinds = [[b["questions"][0] in SOLVED_QUESTIONS for b in r["seen"]] for r in (rank0, rank1)]
    assert any(a != b for a, b in zip(*kinds, strict=True))
    assert rank0["params"] == rank1["params"]


@pytest.mark.slow
def test_hpt_ranks_skip_together_when_one_ranks_norm_is_above_the_limit(tmp_path):
    # rank 1 reads every step's gradient norm x 1e6, over hpt_skip_grad_norm=1e3; rank 0 reads the true one, under it
    rank0, rank1 = run_two_ranks(tmp_path, "hpt_skip")
    assert rank0["world_size"] == 2
    assert rank0["params"] == rank1["params"] == rank0["initial"]  # both ranks skipped both steps


@pytest.mark.slow
def test_trapo_ranks_hold_one_escalation_state_and_guide_their_own_questions(tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, "trapo")
    # every question seen once in steps 0-1 (unguided), again in steps 2-3 with the levels its first group set
    assert rank0["levels"] == rank1["levels"]
    assert len(rank0["levels"]["levels"]) == 4
    for record in (rank0, rank1):
        for step, batch in enumerate(record["seen"]):
            (question,) = batch["questions"]
            guided = step >= 2 and question not in SOLVED_QUESTIONS  # an unsolved question on its second visit
            # 20-token demos: 25% (5 tokens) at positions 4-5, 50% (10) at 6, the whole demo and EOS (21) at 7
            assert batch["prefix_lens"] == ([0] * 4 + [5, 5, 10, 21] if guided else [0] * 8), (step, question)
            assert batch["trapo_sft_rows"] == ([False] * 5 + [True] * 3 if guided else [False] * 8)
    # precondition: in some step of the second pass the two ranks held questions guided differently
    kinds = [[b["questions"][0] in SOLVED_QUESTIONS for b in r["seen"][2:]] for r in (rank0, rank1)]
    assert any(a != b for a, b in zip(*kinds, strict=True))
    assert rank0["params"] == rank1["params"]


@pytest.mark.slow
def test_trapo_ranks_escalate_a_group_split_between_them_in_the_same_step(tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, "trapo_in_step")
    assert rank0["levels"] == rank1["levels"] == {"levels": {}}  # in_step keeps no state between visits
    questions = [b["questions"] for b in rank0["seen"]]
    assert questions == [b["questions"] for b in rank1["seen"]]  # one question per step, positions 0-3 on rank 0
    assert sorted(q for (q,) in questions) == ["12+30", "17+18", "25+25", "40+20"]  # every question, first visit
    for batch0, batch1 in zip(rank0["seen"], rank1["seen"], strict=True):
        (question,) = batch0["questions"]
        assert batch0["prefix_lens"] == [0] * 4  # micro-group 1: the policy's own rollouts
        if question in SOLVED_QUESTIONS:  # 4 of 4, 6 of 6, 7 of 7 solved: never guided
            assert (batch1["prefix_lens"], batch1["trapo_sft_rows"]) == ([0] * 4, [False] * 4), question
        else:  # rank 1 read rank 0's 0 of 4: 25% (5 tokens) at 4-5, then 50% (10) at 6, the whole demo (21) at 7
            assert (batch1["prefix_lens"], batch1["trapo_sft_rows"]) == ([5, 5, 10, 21], [False] + [True] * 3)
    assert rank0["params"] == rank1["params"]
