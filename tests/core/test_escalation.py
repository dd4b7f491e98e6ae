"""TRAPO's escalation (core/escalation.py): stage levels from cumulative counts, positions, prefix cut, state."""

import json
import math

import pytest
import torch

from prefix_rft.core import (
    EscalationState,
    level_at,
    prefix_end,
    trains_prefix,
    trapo_levels,
    trust_region_sft_token_loss,
)
from prefix_rft.core.escalation import demo_index, stage_level

NAN = math.nan


@pytest.mark.parametrize(
    ("solved", "levels"),
    [
        ([0, 0, 0, 0, 0, 0, 0, 0], (1, 2, 3)),  # nothing solved: every stage escalates
        ([1, 1, 0, 0, 0, 0, 0, 0], (0, 2, 3)),  # 2 of 4: stage 2 unguided; 2 of 6 < 4: stage 3 at 50%
        ([1, 1, 0, 0, 1, 1, 0, 0], (0, 0, 3)),  # 4 of 6: stage 3 unguided; 4 of 7 < 7: the whole demo
        ([1, 1, 1, 1, 1, 1, 1, 0], (0, 0, 0)),  # 7 of 7: stage 4 unguided (position 7 does not count)
        ([1, 0, 0, 0, 1, 1, 1, 1], (1, 2, 3)),  # 1 of 4 < 2; 3 of 6 < 4; 4 of 7 < 7
    ],
)
def test_levels_follow_the_cumulative_thresholds(solved, levels):
    assert trapo_levels([bool(s) for s in solved]) == levels


@pytest.mark.parametrize(
    ("stage", "solved", "level"),
    [
        (2, [0, 0, 0, 0], 1),  # none of the 4 unguided rollouts solved it: 25% of the demo at positions 4-5
        (2, [0, 1, 0, 0], 1),  # 1 of 4 < 2: still guided
        (2, [1, 0, 0, 1], 0),  # 2 of 4: positions 4-5 stay unguided
        (3, [0, 0, 0, 0, 1, 1], 2),  # the two 25%-guided rows solved it, 2 of 6 < 4: 50% at position 6
        (3, [1, 1, 0, 0, 1, 1], 0),  # 4 of 6: position 6 unguided
        (3, [1, 1, 1, 0, 0, 0], 2),  # 3 of 6 < 4
        (4, [1, 1, 1, 1, 1, 1, 0], 3),  # 6 of 7 < 7: the whole demo at position 7
        (4, [1, 1, 1, 1, 1, 1, 1], 0),  # 7 of 7: position 7 unguided
        (4, [0, 0, 0, 0, 0, 0, 0], 3),
    ],
)
def test_a_stage_is_decided_from_the_rollouts_before_it(stage, solved, level):
    assert stage_level(stage, [bool(s) for s in solved]) == level


@pytest.mark.parametrize(("stage", "rows"), [(1, 0), (2, 6), (3, 4), (4, 8)])
def test_a_stage_refuses_other_than_the_rollouts_before_it(stage, rows):
    with pytest.raises(ValueError, match=f"stage {stage}"):
        stage_level(stage, [False] * rows)


def test_levels_refuse_a_group_that_is_not_eight():
    with pytest.raises(ValueError, match="groups of 8 rows, got 4"):
        trapo_levels([True] * 4)


def test_positions_map_to_stages_and_the_first_stage_two_row_trains_no_prefix():
    levels = (1, 2, 3)
    assert [level_at(p, levels) for p in range(8)] == [0, 0, 0, 0, 1, 1, 2, 3]
    assert [level_at(p, (0, 2, 0)) for p in range(8)] == [0, 0, 0, 0, 0, 0, 2, 0]
    assert [trains_prefix(p) for p in range(4, 8)] == [False, True, True, True]


def test_the_whole_demo_row_takes_the_second_demo_and_the_partial_rows_the_first():
    assert [demo_index(position, 2) for position in range(4, 8)] == [0, 0, 0, 1]
    assert [demo_index(position, 1) for position in range(4, 8)] == [0, 0, 0, 0]  # one demo: it guides every row


def test_prefix_end_cuts_after_a_boundary_near_the_ratio_or_at_the_ratio():
    ids = list(range(20))
    assert prefix_end(ids, 1.0) == 20  # the whole demo
    assert prefix_end(ids, 0.25) == 5  # no boundary: floor(0.25 * 20)
    assert prefix_end(ids, 0.25, frozenset({7})) == 8  # boundary at index 7 > 5 and < 0.55 * 20 = 11: cut after it
    assert prefix_end(ids, 0.25, frozenset({12})) == 5  # first boundary past 5 is at 12 >= 11: the ratio's cut
    assert prefix_end(ids, 0.5, frozenset({3, 14})) == 15  # index 3 is before floor(0.5 * 20) = 10; 14 < 16


def test_trust_region_sft_is_sft_inside_the_region_and_damped_below_it():
    logp = torch.tensor([[math.log(0.5), math.log(0.05)]], requires_grad=True)
    loss = trust_region_sft_token_loss(logp, alpha=0.1)
    assert loss.flatten().tolist() == pytest.approx([-1.0, -0.5])  # -0.5/0.5; -0.05/0.1
    loss.sum().backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-1.0, -0.5])  # SFT's -1; p/alpha = 0.5 of it


def test_state_reads_each_group_and_round_trips_through_json():
    state = EscalationState()
    assert state.of("q") == (0, 0, 0)  # unseen: unguided
    rewards = torch.tensor([0.0, 0, 0, 0, 0, 0, 0, 0] + [1.0, 1, NAN, 0, 1, 1, 1, 0])
    state.observe_groups(["a"] * 8 + ["b"] * 8, rewards)
    assert state.of("a") == (1, 2, 3)
    assert state.of("b") == (0, 0, 3)  # NaN is not solved: 2 of 4, 4 of 6, 5 of 7
    restored = EscalationState()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored.levels == state.levels
    with pytest.raises(ValueError, match="rows 0..7 form one group"):
        state.observe_groups(["a"] * 4 + ["b"] * 4, torch.zeros(8))
