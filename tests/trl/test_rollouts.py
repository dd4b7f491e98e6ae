"""The pure pieces of trl/rollouts.py, with hand-worked values: which roles are hybrid, budget buckets, budgets cut
to the context, runs of identical requests, per-request sampling params, and grouped call results put back in row
order."""

from types import SimpleNamespace

import pytest

from prefix_rft.trl.rollouts import (
    Rollout,
    RowPlan,
    bucket_budget,
    cut_to_budgets,
    fit_to_context,
    per_request_params,
    prompt_runs,
    reassemble,
)


@pytest.mark.parametrize(
    ("budget", "max_budget", "bucket"),
    [
        (1, 24, 1),
        (2, 24, 6),
        (6, 24, 6),
        (7, 24, 12),
        (13, 24, 18),
        (19, 24, 24),
        (24, 24, 24),
        (4, 10, 6),
        (8, 10, 9),
        (10, 10, 10),
    ],
)
def test_budget_rounds_up_to_one_of_four_evenly_spaced_buckets(budget, max_budget, bucket):
    # widths: ceil(24 / 4) = 6 -> buckets 6, 12, 18, 24; ceil(10 / 4) = 3 -> 3, 6, 9, 10 (capped); 1 stays 1
    assert bucket_budget(budget, max_budget) == bucket


def test_cut_to_budgets_cuts_ids_and_logprobs_of_each_row():
    out = {
        "prompt_ids": [[1], [2]],
        "completion_ids": [[5, 6, 7, 8], [9, 3]],
        "logprobs": [[[-0.1], [-0.2], [-0.3], [-0.4]], [[-0.5], [-0.6]]],
        "logprob_token_ids": [[[5], [6], [7], [8]], [[9], [3]]],
    }
    cut = cut_to_budgets(out, [2, 5])
    assert cut["completion_ids"] == [[5, 6], [9, 3]]
    assert cut["logprobs"] == [[[-0.1], [-0.2]], [[-0.5], [-0.6]]]
    assert cut["logprob_token_ids"] == [[[5], [6]], [[9], [3]]]
    assert cut["prompt_ids"] == [[1], [2]]


def test_fit_to_context_cuts_the_budget_and_names_a_row_with_no_room():
    assert fit_to_context(10, 24, 30, row=0) == 20  # 10 + 20 = 30 = max_model_len
    assert fit_to_context(10, 5, 30, row=0) == 5
    assert fit_to_context(10, 24, None, row=0) == 24
    with pytest.raises(ValueError, match="generation row 3: .* 30 tokens, .* max_model_len=30"):
        fit_to_context(30, 1, 30, row=3)


def test_prompt_runs_join_consecutive_rows_with_the_same_prompt_and_budget():
    prompts = [[1, 2], [1, 2], [1, 2], [3], [3], [1, 2]]
    budgets = [5, 5, 3, 5, 5, 5]
    # rows 0-1: same prompt and budget; row 2: another budget; rows 3-4: another prompt; row 5 repeats row 0's
    # request but not next to it, so it starts a run of its own
    assert prompt_runs(prompts, budgets) == [(0, 2), (2, 1), (3, 2), (5, 1)]
    assert prompt_runs([], []) == []


def test_reassemble_puts_each_calls_samples_back_on_its_rows():
    runs = [(0, 2), (2, 1), (3, 2)]  # rows 0-1, row 2, rows 3-4
    members = [[0, 2], [1]]  # call A: runs 0 and 2 with n=2; call B: run 1 with n=1
    call_a = {"prompt_ids": [[10], [30]], "completion_ids": [[1], [2], [3], [4]], "logprobs": [[-1], [-2], [-3], [-4]]}
    call_b = {"prompt_ids": [[20]], "completion_ids": [[5]], "logprobs": [[-5]]}
    out = reassemble(runs, members, [2, 1], [call_a, call_b])
    # call A's samples j * n + k: run 0 (j=0) takes samples 0, 1 -> rows 0, 1; run 2 (j=1) takes 2, 3 -> rows 3, 4
    assert out["prompt_ids"] == [[10], [10], [20], [30], [30]]
    assert out["completion_ids"] == [[1], [2], [5], [3], [4]]
    assert out["logprobs"] == [[-1], [-2], [-5], [-3], [-4]]
    assert out["logprob_token_ids"] is None  # no call returned them


def test_reassemble_drops_logprobs_that_some_call_lacks():
    with_logprobs = {"prompt_ids": [[1]], "completion_ids": [[7]], "logprobs": [[-1.0]]}
    without = {"prompt_ids": [[2]], "completion_ids": [[8]], "logprobs": None}
    out = reassemble([(0, 1), (1, 1)], [[0], [1]], [1, 1], [with_logprobs, without])
    assert out["completion_ids"] == [[7], [8]]
    assert out["logprobs"] is None


def test_per_request_params_copies_the_params_once_per_budget():
    base = SimpleNamespace(max_tokens=24, temperature=0.7)
    params = per_request_params(base, [24, 6, 1])
    assert [(p.max_tokens, p.temperature) for p in params] == [(24, 0.7), (6, 0.7), (1, 0.7)]
    assert base.max_tokens == 24  # the shared params are left as they were


def test_hybrid_and_full_demo_rows_are_the_hybrids_of_a_rollout():
    roles = ["on_policy", "hybrid", "no_demo", "solved", "full_demo"]
    rollout = Rollout(rows=[RowPlan(role=role) for role in roles], prompts=["q"] * 5, schedule_step=0)
    assert rollout.hybrid == [False, True, False, False, True]


def test_only_full_demo_rows_generate_nothing():
    roles = ["on_policy", "hybrid", "no_demo", "solved", "full_demo"]
    assert [RowPlan(role=role).generates for role in roles] == [True, True, True, True, False]
