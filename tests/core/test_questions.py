"""Per-question evidence (core/questions.py): success rate, ratio controller, rescue rule, batch update, state."""

import json
import math

import pytest
import torch

from prefix_rft.core import (
    QuestionRecord,
    QuestionStats,
    hpt_group_modes,
    hpt_mode,
    needs_rescue,
    next_prefix_ratio,
    on_policy_solved,
    on_policy_success,
)

NAN = math.nan


def stats(**overrides) -> QuestionStats:
    # SEELE's 50% target; step 0.2; the paper's schedule window [0.05, 0.95]
    settings = dict(target=0.5, step=0.2, low=0.05, high=0.95, max_success=None)
    return QuestionStats(**{**settings, **overrides})


def test_success_rate_counts_on_policy_rows_only():
    # on-policy rewards [1,0,0,1,0,0,0] -> 2 of 7 succeed; the hybrid's 1 is not the question's own success
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1])
    assert on_policy_success(rewards, torch.arange(8) == 7) == pytest.approx(2 / 7)


def test_success_rate_skips_unscored_rows_and_counts_any_positive_reward():
    # scored on-policy rows: 0.5, 0, 0 -> 1 of 3 has reward > 0; the NaN row is no evidence
    rewards = torch.tensor([0.5, NAN, 0, 0, 1])
    assert on_policy_success(rewards, torch.tensor([False, False, False, False, True])) == pytest.approx(1 / 3)


def test_success_rate_without_a_scored_on_policy_row_is_no_evidence():
    assert on_policy_success(torch.tensor([NAN, NAN, 1.0]), torch.tensor([False, False, True])) is None


@pytest.mark.parametrize(
    ("ratio", "success", "expected"),
    [
        (0.5, 0.0, 0.6),  # all failed: 0.5 + 0.2 * (0.5 - 0) = 0.6
        (0.5, 1.0, 0.4),  # all solved: 0.5 + 0.2 * (0.5 - 1) = 0.4
        (0.5, 0.5, 0.5),  # on target: unchanged
        (0.3, 2 / 7, 0.3 + 0.2 * (0.5 - 2 / 7)),  # 0.3 + 0.2 * 3/14 = 0.342857...
        (0.9, 0.0, 0.95),  # 1.0 is clipped to the ceiling
        (0.1, 1.0, 0.05),  # 0.0 is clipped to the floor
    ],
)
def test_ratio_moves_by_step_times_success_error_within_bounds(ratio, success, expected):
    assert next_prefix_ratio(ratio, success, target=0.5, step=0.2, low=0.05, high=0.95) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("success", "max_success", "expected"),
    [
        (1.0, None, True),  # no threshold: every question is rescued (paper)
        (None, 0.0, True),  # unseen: rescued
        (0.0, 0.0, True),  # its last group all failed
        (1 / 7, 0.0, False),  # one success of 7 is no longer "all failed"
        (2 / 7, 0.25, False),  # 0.2857 > 0.25
        (1 / 7, 0.25, True),  # 0.1429 <= 0.25
        (0.25, 0.25, True),  # "at most": the threshold itself is rescued
    ],
)
def test_rescue_while_success_is_at_most_the_threshold(success, max_success, expected):
    assert needs_rescue(success, max_success) is expected


def test_first_visit_starts_the_controller_from_the_ratio_it_was_given():
    questions = stats()
    assert questions.ratio("q") is None  # unseen: the schedule decides
    questions.observe("q", success=0.0, ratio_used=0.7)  # 0.7 + 0.2 * 0.5 = 0.8
    assert questions.ratio("q") == pytest.approx(0.8)
    questions.observe("q", success=1.0, ratio_used=0.123)  # the adapted 0.8 was used: 0.8 - 0.1 = 0.7
    assert questions.records["q"] == QuestionRecord(success=1.0, ratio=pytest.approx(0.7), visits=2)


def test_without_a_target_the_ratio_stays_the_schedules_and_only_rescue_reads_the_record():
    questions = stats(target=None, max_success=0.0)
    questions.observe("q", success=3 / 7, ratio_used=0.6)
    assert questions.ratio("q") is None and not questions.rescues("q")
    assert questions.rescues("unseen")


def test_batch_update_reads_each_group_in_order():
    # G = 4, last row of each group hybrid. Group "a": on-policy 0,0,0 -> success 0; ratio 0.6 + 0.2 * 0.5 = 0.7.
    # Group "b": on-policy 1,1,0 -> success 2/3; ratio 0.3 + 0.2 * (0.5 - 2/3) = 0.3 - 1/30 = 0.26667
    questions = stats()
    keys = ["a"] * 4 + ["b"] * 4
    rewards = torch.tensor([0.0, 0, 0, 1, 1, 1, 0, 0])
    is_hybrid = torch.tensor([False, False, False, True] * 2)
    ratios = torch.tensor([NAN, NAN, NAN, 0.6, NAN, NAN, NAN, 0.3], dtype=torch.float64)
    assert questions.observe_groups(keys, rewards, is_hybrid, ratios, 4) == pytest.approx([0.0, 2 / 3])
    assert questions.ratio("a") == pytest.approx(0.7)
    assert questions.ratio("b") == pytest.approx(0.3 - 1 / 30)


def test_hybrid_steering_moves_the_ratio_by_the_guided_rows_success():
    # G = 4, last row hybrid with ratio 0.6: the on-policy rows all fail, the guided row solves it. Steered by the
    # guided rows (SEELE's loop): success 1 -> 0.6 + 0.2 * (0.5 - 1) = 0.5; the record keeps the on-policy success 0
    questions = stats(steer_rows="hybrid")
    ratios = torch.tensor([NAN, NAN, NAN, 0.6], dtype=torch.float64)
    hybrid = torch.tensor([False, False, False, True])
    questions.observe_groups(["q"] * 4, torch.tensor([0.0, 0, 0, 1]), hybrid, ratios, 4)
    assert questions.records["q"] == QuestionRecord(success=0.0, ratio=pytest.approx(0.5), visits=1)
    # a visit whose hybrid slot carried no prefix (no planned ratio) is no evidence for the ratio: it stays 0.5
    questions.observe_groups(["q"] * 4, torch.zeros(4), hybrid, torch.full((4,), NAN, dtype=torch.float64), 4)
    assert questions.records["q"] == QuestionRecord(success=0.0, ratio=pytest.approx(0.5), visits=2)


def test_a_guided_group_is_steered_by_its_guided_rows_and_kept_through_a_checkpoint():
    # every row hybrid (SEELE's hinted group), ratios 0.6, one of 4 solved: no on-policy evidence, the guided success
    # 1/4 steers 0.6 + 0.2 * (0.5 - 0.25) = 0.65; the record has no on-policy success, and no list entry
    questions = stats(steer_rows="hybrid")
    hybrid, ratios = torch.ones(4, dtype=torch.bool), torch.full((4,), 0.6, dtype=torch.float64)
    assert questions.observe_groups(["q"] * 4, torch.tensor([0.0, 1, 0, 0]), hybrid, ratios, 4) == []
    assert questions.records["q"] == QuestionRecord(success=None, ratio=pytest.approx(0.65), visits=1)
    restored = stats(steer_rows="hybrid")
    restored.load_state_dict(json.loads(json.dumps(questions.state_dict())))
    assert restored.records == questions.records
    # steered by the on-policy rows, the same group is no evidence
    on_policy = stats()
    on_policy.observe_groups(["q"] * 4, torch.tensor([0.0, 1, 0, 0]), hybrid, ratios, 4)
    assert "q" not in on_policy.records


def test_group_without_hybrid_rows_still_moves_an_adapted_ratio():
    # a rescued-off question ran all 4 rows on-policy and solved them all: 0.5 + 0.2 * (0.5 - 1) = 0.4
    questions = stats()
    questions.records["q"] = QuestionRecord(success=1.0, ratio=0.5, visits=1)
    no_ratio = torch.full((4,), NAN, dtype=torch.float64)
    questions.observe_groups(["q"] * 4, torch.ones(4), torch.zeros(4, dtype=torch.bool), no_ratio, 4)
    assert questions.records["q"] == QuestionRecord(success=1.0, ratio=pytest.approx(0.4), visits=2)


def test_question_twice_in_a_batch_is_updated_twice():
    # both groups all fail: 0.5 -> 0.6 -> 0.7
    questions = stats()
    ratios = torch.tensor([NAN, 0.5, NAN, 0.5], dtype=torch.float64)
    hybrid = torch.tensor([False, True, False, True])
    questions.observe_groups(["q"] * 4, torch.zeros(4), hybrid, ratios, 2)
    assert questions.records["q"] == QuestionRecord(success=0.0, ratio=pytest.approx(0.7), visits=2)


def test_group_without_evidence_leaves_the_record_unchanged():
    questions = stats()
    questions.observe_groups(["q"] * 2, torch.tensor([NAN, 1.0]), torch.tensor([False, True]), torch.ones(2), 2)
    assert "q" not in questions.records


def test_group_holding_two_questions_is_refused():
    with pytest.raises(ValueError, match="rows 0..1 form one group but hold different questions"):
        stats().observe_groups(["a", "b"], torch.zeros(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2), 2)


def test_state_round_trips_exactly_through_json():
    questions = stats()
    questions.observe("a", success=2 / 7, ratio_used=0.1 + 0.2)  # values with long binary expansions
    questions.observe("b", success=1 / 3, ratio_used=None)
    restored = stats()
    restored.load_state_dict(json.loads(json.dumps(questions.state_dict())))
    assert restored.records == questions.records  # exact equality, not approx
    assert restored.records["b"].ratio is None


def test_solved_counts_scored_on_policy_rows_with_positive_reward():
    # rows: solved, failed, unscored (NaN: neither), solved hybrid (not on-policy)
    rewards = torch.tensor([1.0, 0.0, NAN, 1.0])
    assert on_policy_solved(rewards, torch.tensor([False, False, False, True])) == (1, 2)


@pytest.mark.parametrize(
    ("solved", "has_demo", "gate", "gate_off", "mode"),
    [
        (0, True, 0, 0, "sft"),  # the paper's switch: no rollout solved it -> SFT on the demo
        (1, True, 0, 0, "rl"),
        (0, False, 0, 0, "rl"),  # no demo to learn from: RL whatever the count
        (2, True, 2, 3, "sft"),  # at the gate
        (3, True, 2, 3, "sft"),  # in (gate, gate_off]: the authors' off-flagged demo, which their SFT loss trains
        (4, True, 2, 3, "rl"),
    ],
)
def test_hpt_mode_switches_on_solved_count(solved, has_demo, gate, gate_off, mode):
    assert hpt_mode(solved, has_demo, gate, gate_off) == mode


def test_hpt_group_modes_read_each_group_of_the_gathered_batch():
    # groups of 4, last row the demo: [0,0,0 | d] all fail -> sft; [0,1,0 | d] one solved -> rl;
    # [1,1,1,1] no demo row (every row on-policy) -> rl
    rewards = torch.tensor([0.0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1])
    hybrid = torch.tensor([False, False, False, True] * 2 + [False] * 4)
    assert hpt_group_modes(rewards, hybrid, 4, gate=0, gate_off=0) == ["sft", "rl", "rl"]
