"""Real DeepSpeed ZeRO-2/3 on 2 CPU processes (DS_ACCELERATOR=cpu, gloo), against DDP and one process.

Each engine is launched once (deepspeed_worker.py runs several scenarios per launch) and the tests compare the records:
the layouts of test_collective_generate.py, TRAPO's escalation, the non-finite step guard, ReLIFT's SFT step, save and
resume under ZeRO-3, LoRA and bf16. Expected values come from the scenario: step counts, hybrid rows per step (worked
out in test_collective_generate.py), TRAPO's guided rows per level, weights before and after a skipped step.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("deepspeed_worker.py")
# ZeRO-3 reduces and averages gradients in another order than DDP's all-reduce, so fp32 weights after 2 AdamW steps
# differ in their last bits, and AdamW's normalisation amplifies that where a weight's gradient is near 0: measured
# 1.7e-5 on one host, and 1.16e-4 on another (2026-12-07, TRAPO under ZeRO-3: one weight of 23968, whose second step
# nearly cancelled its first, all others below 1e-5). One step moves a weight by up to lr = 1e-2 (median 1.3e-2
# after 2 steps), so a real difference (a step taken or skipped, another batch, another learning rate) moves nearly
# every weight by ~20x this tolerance.
WEIGHT_TOLERANCE = 5e-4
# ReLIFT's SFT step (lr 1e-3) on 2 ranks vs one process: summing per-rank gradients changes the last bits of the
# gradient, which AdamW's first step (~lr * g / |g|) turns into ~2e-7 where |g| is near eps; 1% of one step.
SFT_TOLERANCE = 1e-5
LAYOUT_HYBRID_ROWS = {  # hybrid rows logged per optimizer step (test_collective_generate.py works them out)
    "rank0_no_hybrid": [1.0, 1.0],
    "groups_span_ranks": [3.0, 3.0],
    "steps_per_generation_2": [1.0],
    "accumulation_2_step_scope": [1.0, 1.0],
}
# TRAPO in_step, one group of 8 per step, rank 0 holding positions 0-3 (micro-group 1) and rank 1 positions 4-7, so
# rank 1 guides from rank 0's gathered rewards. The seed-0 sampler draws 12+30 in step 1, 17+18 in step 2; reward 1 on
# 17+18 and on a completion starting with 12+30's 25% prefix. Step 1: 0 of positions 0-3 solved (< 2) -> 4-5 get 25%
# (reward 1); 2 of 0-5 (< 4) -> 6 gets 50% (1); 3 of 0-6 (< 7) -> 7 the whole demo (1): rows guided 2, 1, 1, rewards
# 0, 0, 0, 0, 1, 1, 1, 1 (mean 0.5). Step 2: 4 of 4, 6 of 6, 7 of 7 solved -> none guided, mean reward 1. A lost or
# NaN gather of rank 0's rewards would read as unsolved and guide 17+18 too.
TRAPO_GUIDED_ROWS = {"partial25": [2.0, 0.0], "partial50": [1.0, 0.0], "full": [1.0, 0.0]}
TRAPO_REWARDS = [0.5, 1.0]
# previous_visit on one question, every reward 0: step 1 is its first visit (unguided), whose 8 unsolved rows set the
# levels 25%, 50%, full for step 2.
TRAPO_PREVIOUS_VISIT_GUIDED_ROWS = {"partial25": [0.0, 2.0], "partial50": [0.0, 1.0], "full": [0.0, 1.0]}
LAUNCHES = {  # engine -> scenarios run in its launch
    "ddp": ["layouts", "guard", "relift", "guard_verdict", "relift_uneven", "trapo"],
    "zero2": ["layouts", "guard", "relift", "lora", "bf16", "trapo", "hpt_skip"],
    "zero3": ["layouts", "guard", "resume", "lora", "bf16", "relift", "trapo", "trapo_previous_visit"],
}


def launch(out: Path, engine: str, scenarios: list[str], processes: int = 2) -> list[dict]:
    """Run the worker (torchrun for 2 processes, plain python for 1) and return each rank's record."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.fail("DeepSpeed is not installed: `make setup` installs it (README, 'Install by hand')")
    # With ACCELERATE_USE_CPU=true accelerate drops the DeepSpeed config and runs DDP.
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env |= {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    runner = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if processes == 2 else []
    cmd = [sys.executable, *runner, str(WORKER), str(out), engine, *scenarios]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """engine -> [rank 0 record, rank 1 record]; `one` is a single process (no torchrun)."""
    records = {"one": launch(tmp_path_factory.mktemp("one"), "ddp", ["guard", "relift"], processes=1)}
    for engine, scenarios in LAUNCHES.items():
        records[engine] = launch(tmp_path_factory.mktemp(engine), engine, scenarios)
    return records


def run_of(runs, engine: str, scenario: str, layout: str | None = None) -> list[dict]:
    ranks = [r[scenario] if layout is None else r[scenario][layout] for r in runs[engine]]
    for record in ranks:
        assert "error" not in record, record.get("error")
    return ranks


def assert_ranks_equal(ranks: list[dict]) -> None:
    assert [r["steps"] for r in ranks] == [ranks[0]["steps"]] * len(ranks)
    assert all(r["losses"] == ranks[0]["losses"] for r in ranks)
    assert all(r["final"] == ranks[0]["final"] for r in ranks)


@pytest.mark.slow
@pytest.mark.parametrize("engine, kind", [("ddp", "MULTI_CPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")])
def test_two_processes_under_the_named_engine(runs, engine, kind):
    for scenario in ("layouts", "guard"):
        records = run_of(runs, engine, scenario, "rank0_no_hybrid" if scenario == "layouts" else None)
        assert [r["world_size"] for r in records] == [2, 2]
        assert [r["distributed_type"] for r in records] == [f"DistributedType.{kind}"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
@pytest.mark.parametrize("layout", list(LAYOUT_HYBRID_ROWS))
def test_layouts_finish_on_both_ranks_and_match_ddp(runs, engine, layout):
    ranks = run_of(runs, engine, "layouts", layout)
    assert [r["steps"] for r in ranks] == [2, 2]
    assert_ranks_equal(ranks)
    assert ranks[0]["hybrid_rows"] == LAYOUT_HYBRID_ROWS[layout]
    assert_matches_ddp(ranks[0], run_of(runs, "ddp", "layouts", layout)[0])


def assert_matches_ddp(record: dict, ddp: dict) -> None:
    """Losses as DDP's, final weights within WEIGHT_TOLERANCE of DDP's, and moved well beyond it."""
    assert record["losses"] == pytest.approx(ddp["losses"], rel=1e-6)
    assert np.abs(np.array(record["final"]) - np.array(ddp["final"])).max() < WEIGHT_TOLERANCE
    assert np.abs(np.array(record["final"]) - np.array(record["initial"])).max() > 10 * WEIGHT_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("engine, kind", [("ddp", "MULTI_CPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")])
def test_trapo_in_step_escalates_a_group_split_between_ranks_and_matches_ddp(runs, engine, kind):
    ranks = run_of(runs, engine, "trapo", "trapo_in_step")
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["distributed_type"] for r in ranks] == [f"DistributedType.{kind}"] * 2
    assert [r["steps"] for r in ranks] == [2, 2]
    assert_ranks_equal(ranks)
    assert [(r["guided_rows"], r["rewards"]) for r in ranks] == [(TRAPO_GUIDED_ROWS, TRAPO_REWARDS)] * 2
    if engine == "ddp":  # the reference the DeepSpeed engines are compared with: it trained
        assert np.abs(np.array(ranks[0]["final"]) - np.array(ranks[0]["initial"])).max() > 10 * WEIGHT_TOLERANCE
    else:
        assert_matches_ddp(ranks[0], run_of(runs, "ddp", "trapo", "trapo_in_step")[0])


@pytest.mark.slow
def test_trapo_previous_visit_under_zero3_guides_the_second_visit_alike_on_both_ranks(runs):
    ranks = run_of(runs, "zero3", "trapo_previous_visit")
    assert [r["steps"] for r in ranks] == [2, 2]
    assert_ranks_equal(ranks)
    assert [r["guided_rows"] for r in ranks] == [TRAPO_PREVIOUS_VISIT_GUIDED_ROWS] * 2
    assert np.abs(np.array(ranks[0]["final"]) - np.array(ranks[0]["initial"])).max() > 10 * WEIGHT_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["one", "ddp", "zero2", "zero3"])
def test_non_finite_step_is_skipped_counted_and_leaves_the_weights(runs, engine):
    # Step 1's rewards of +-3e38 overflow float32: that step must change no weight, bit for bit; step 2 trains.
    ranks = run_of(runs, engine, "guard")
    for r in ranks:
        assert r["steps"] == 2
        assert r["skipped"] == 1
        assert r["after_step"][0] == r["initial"]
        assert r["after_step"][1] != r["initial"]
    assert_ranks_equal(ranks)
    if engine in ("zero2", "zero3"):  # DeepSpeed's skip leaves the learning-rate schedule where DDP's guard does
        ddp = run_of(runs, "ddp", "guard")[0]
        assert np.abs(np.array(ranks[0]["final"]) - np.array(ddp["final"])).max() < WEIGHT_TOLERANCE


@pytest.mark.slow
def test_guard_skips_on_every_rank_when_one_rank_has_a_non_finite_gradient(runs):
    assert [r["guard_verdict"] for r in runs["ddp"]] == [{"skipped": 1, "gradients_left": 0}] * 2


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "zero2"])
def test_relift_sft_step_keeps_ranks_identical_and_equal_to_one_process(runs, engine):
    ranks = run_of(runs, engine, "relift")
    one = run_of(runs, "one", "relift")[0]
    assert [r["sft_steps"] for r in ranks] == [1, 1] and one["sft_steps"] == 1
    assert ranks[0]["final"] == ranks[1]["final"]
    # RL advantages are all 0, so only the SFT step (lr 1e-3) moved the weights
    assert np.abs(np.array(one["final"]) - np.array(one["initial"])).max() > 10 * SFT_TOLERANCE
    assert np.abs(np.array(ranks[0]["final"]) - np.array(one["final"])).max() < SFT_TOLERANCE


@pytest.mark.slow
def test_relift_sft_step_runs_when_the_failures_of_all_ranks_fill_the_batch(runs):
    # only rank 0's question failed: the one buffer holds it, which is relift_sft_batch=1, as one process would
    ranks = run_of(runs, "ddp", "relift_uneven")
    assert [(r["steps"], r["sft_steps"]) for r in ranks] == [(1, 1), (1, 1)]
    assert ranks[0]["final"] == ranks[1]["final"]


@pytest.mark.slow
def test_relift_refuses_zero3_by_name(runs):
    assert [r["relift"]["error"] for r in runs["zero3"]] == [
        "ValueError: ReliftTrainer does not support DeepSpeed ZeRO-3: its SFT step needs every rank to hold all "
        "weights; use ZeRO-2 or DDP"
    ] * 2


@pytest.mark.slow
def test_hpt_refuses_its_gradient_norm_skip_under_deepspeed_by_name(runs):
    assert [r["hpt_skip"]["error"] for r in runs["zero2"]] == [
        "ValueError: hpt_skip_grad_norm is not supported under DeepSpeed: its engine applies the step inside "
        "backward, before the trainer sees the gradient norm; use DDP or FSDP, or leave it null"
    ] * 2


@pytest.mark.slow
def test_zero3_resumed_run_ends_with_the_uninterrupted_runs_weights(runs):
    for record in run_of(runs, "zero3", "resume"):
        whole, resumed = record["whole"], record["resumed"]
        assert (whole["steps"], resumed["steps"]) == (2, 2)
        assert len(resumed["after_step"]) == 1  # only step 2 was trained after resuming from checkpoint-1
        assert resumed["losses"] == whole["losses"]  # the log history comes back with the checkpoint
        assert resumed["final"] == whole["final"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_lora_trains_only_the_adapters_on_both_ranks(runs, engine):
    ranks = run_of(runs, engine, "lora")
    assert_ranks_equal(ranks)
    assert ranks[0]["steps"] == 2
    assert ranks[0]["trainable"] and all("lora_" in name for name in ranks[0]["trainable"])
    assert ranks[0]["after_step"][1] != ranks[0]["after_step"][0]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_bf16_trains_bf16_weights_on_both_ranks(runs, engine):
    ranks = run_of(runs, engine, "bf16")
    assert_ranks_equal(ranks)
    assert ranks[0]["steps"] == 2 and ranks[0]["dtype"] == "torch.bfloat16"
    assert all(np.isfinite(ranks[0]["losses"]))
    assert ranks[0]["final"] != ranks[0]["initial"]
