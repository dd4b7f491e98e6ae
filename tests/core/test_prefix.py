import pytest
import torch

from prefix_rft.core.prefix import (
    build_prefix_mask,
    demo_part,
    fit_prefix_to_prompt,
    fit_prefixes,
    hybrid_positions,
    is_hybrid_row,
    prefix_length,
)


def test_prefix_length_floors_ratio_times_length():
    # floor(0.5 * 11) = floor(5.5) = 5
    assert prefix_length(0.5, 11) == 5


def test_prefix_length_is_not_lowered_by_float_rounding():
    # 0.29 * 100 = 28.999999999999996 in floating point; the spec's floor(l * |y*|) means 29
    assert prefix_length(0.29, 100) == 29


def test_ratio_one_never_reveals_whole_demo():
    # spec §3.4 step 4: prefix_len >= demo_len -> demo_len - 1
    assert prefix_length(1.0, 40) == 39


def test_ratio_zero_or_empty_demo_reveals_nothing():
    assert prefix_length(0.0, 40) == 0
    assert prefix_length(0.7, 0) == 0


def test_min_prefix_len_raises_short_prefix_but_keeps_guard():
    # floor(0.05 * 40) = 2 -> raised to 8; with a 5-token demo the guard caps it at 4
    assert prefix_length(0.05, 40, min_prefix_len=8) == 8
    assert prefix_length(0.05, 5, min_prefix_len=8) == 4


def test_fit_prefix_keeps_prefix_that_fits():
    assert fit_prefix_to_prompt(prompt_len=20, prefix_len=30, max_prompt_length=50) == (30, 0)


def test_fit_prefix_cuts_prefix_not_question():
    # 20 + 40 = 60 > 50: keep 30 prefix tokens, 10 cut
    assert fit_prefix_to_prompt(prompt_len=20, prefix_len=40, max_prompt_length=50) == (30, 10)


def test_fit_prefix_errors_when_question_alone_is_too_long():
    with pytest.raises(ValueError, match="prompt has 60 tokens"):
        fit_prefix_to_prompt(prompt_len=60, prefix_len=5, max_prompt_length=50)


def test_fit_prefix_errors_below_min_prefix_len():
    with pytest.raises(ValueError, match="min_prefix_len"):
        fit_prefix_to_prompt(prompt_len=48, prefix_len=10, max_prompt_length=50, min_prefix_len=5)


def test_one_hybrid_of_eight_is_the_last_position():
    assert hybrid_positions(8, 1) == [7]
    flags = [is_hybrid_row(i, 8, 1) for i in range(16)]
    assert flags == [False] * 7 + [True] + [False] * 7 + [True]


def test_hybrid_count_must_leave_an_on_policy_row():
    # reference: a group with no on-policy row has no baseline (KeyError in dr_grpo_prefix)
    with pytest.raises(ValueError, match=r"num_hybrid must be in \[0, 7\] for groups of 8, got 8"):
        hybrid_positions(8, 8)


def test_a_guided_group_may_have_every_row_hybrid_but_no_more():
    assert hybrid_positions(8, 8, allow_all=True) == list(range(8))
    assert all(is_hybrid_row(i, 8, 8) for i in range(16))
    with pytest.raises(ValueError, match=r"num_hybrid must be in \[0, 8\] for groups of 8, got 9"):
        hybrid_positions(8, 9, allow_all=True)


def test_prefix_mask_marks_leading_tokens():
    mask = build_prefix_mask(torch.tensor([0, 2, 4]), width=4)
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_fit_prefixes_cuts_each_prefix_to_the_prompt_budget_and_counts_the_cut():
    # budget 8: row 0 has no prefix; row 1: 5 + 4 = 9, so 3 tokens are kept and 1 is cut; row 2: 4 + 2 = 6 fits
    fitted, cut = fit_prefixes([3, 5, 4], [[], [1, 2, 3, 4], [5, 6]], max_prompt_length=8, min_len=0)
    assert (fitted, cut) == ([[], [1, 2, 3], [5, 6]], 1)
    assert fit_prefixes([9, 5], [[1], [1, 2, 3, 4]], max_prompt_length=None, min_len=0) == ([[1], [1, 2, 3, 4]], 0)
    # row 1 would keep 8 - 7 = 1 token, below prefix_min_len 2
    with pytest.raises(ValueError, match=r"prompt \(7 tokens\) \+ min_prefix_len \(2\)"):
        fit_prefixes([3, 7], [[1], [1, 2, 3]], max_prompt_length=8, min_len=2)


@pytest.mark.parametrize(
    "demo, part, expected",
    [
        ("<think>a</think>12+30 is 42.", "whole", "<think>a</think>12+30 is 42."),
        ("<think>a</think>12+30 is 42.", "after_think", "12+30 is 42."),  # 12 characters after the trace
        ("<think>a</think>x</think>12+30 is 42.", "after_think", "12+30 is 42."),  # after the last one
        ("<think>a</think>ans: 42", "after_think", ""),  # 7 characters: under QuestA's 10, no hint
        ("12+30 is 42. ans: 42", "after_think", "12+30 is 42. ans: 42"),  # no trace: the whole demo
    ],
)
def test_demo_part_drops_the_reasoning_trace_as_questa(demo, part, expected):
    assert demo_part(demo, part) == expected
