"""Scoring (trl/scoring.py). Rows a reward function leaves unscored (None): unscorable rows train with advantage 0,
partly scored rows sum the functions that scored them (TRL's contract) unless `strict_rewards`, and both are counted.
`scale_rewards` divides every advantage by the group's or the batch's reward std."""

import re

import pytest
import torch

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.rollouts import Rollout, RowPlan
from prefix_rft.trl.scoring import prefix_fields
from tests.helpers import FixedRewards, generate_batch, make_dataset, make_trainer, train_args


def build(tmp_path, model, tokenizer, reward_funcs, **overrides):
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=train_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    trainer.model.train()
    return trainer, next(iter(trainer.get_train_dataloader()))


def parity(completions, **kwargs):
    """1 for a completion of even length, else 0: deterministic given the completions."""
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def test_row_no_function_scores_gets_advantage_zero_and_leaves_the_baseline(tmp_path, model, tokenizer):
    recorded = []

    def parity_but_row_0(completions, **kwargs):
        rewards = parity(completions)
        rewards[0] = None  # row 0 of the batch: every reward function (this one) leaves it unscored
        recorded.extend(rewards)
        return rewards

    trainer, batch = build(tmp_path, model, tokenizer, [parity_but_row_0])
    output = trainer._generate_and_score_completions(batch)  # no error: the row is left out of the baseline
    # group 0 = rows 0..7, row 7 the hybrid (num_hybrid=1, last slot). Spec §3.7 reference rule over the scored
    # on-policy rows 1..6 only: baseline b = mean(r1..r6); on-policy advantage r_i - b; hybrid continuation r7
    r = recorded[:8]
    b = sum(r[1:7]) / 6
    advantages = output["advantages"]  # (B, T)
    assert advantages[0].abs().sum().item() == 0.0
    for i in range(1, 7):
        assert advantages[i, 0].item() == pytest.approx(r[i] - b)
    assert advantages[7, -1].item() == pytest.approx(r[7])  # last token: continuation (the prefix comes first)
    assert trainer._metrics["train"]["reward/unscored_rows"] == [1.0]


def test_row_one_of_two_functions_leaves_unscored_is_refused_when_strict(tmp_path, model, tokenizer):
    def parity_but_row_3(completions, **kwargs):
        return [None if i == 3 else r for i, r in enumerate(parity(completions))]

    trainer, batch = build(tmp_path, model, tokenizer, [parity, parity_but_row_3], strict_rewards=True)
    message = (
        "reward function 'parity_but_row_3' returned None for row 3 (of the gathered batch), which ['parity'] "
        "scored: the row's reward would leave 'parity_but_row_3' out. Return a number for every row, or unset "
        "strict_rewards to sum the functions that score it (TRL's contract)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        trainer._generate_and_score_completions(batch)


def test_partly_scored_rows_sum_the_functions_that_scored_them_by_default(tmp_path, model, tokenizer):
    # TRL's multi-task pattern: `task_b` does not apply to rows 3 and 5 and returns None there.
    def task_a(completions, **kwargs):
        return [1.0] * len(completions)

    def task_b(completions, **kwargs):
        return [None if i in (3, 5) else 2.0 for i in range(len(completions))]

    trainer, batch = build(tmp_path, model, tokenizer, [task_a, task_b])
    output = trainer._generate_and_score_completions(batch)
    # Group 0 = rows 0..7, row 7 the hybrid. On-policy rewards: rows 3, 5 -> 1 (task_a alone), rows 0,1,2,4,6 -> 3.
    # Reference baseline over on-policy rows: (5 * 3 + 2 * 1) / 7 = 17/7.
    advantages = output["advantages"]  # (B, T)
    assert advantages[3, 0].item() == pytest.approx(1 - 17 / 7)
    assert advantages[0, 0].item() == pytest.approx(3 - 17 / 7)
    metrics = trainer._metrics["train"]
    assert metrics["reward/partial_rows/task_b"] == [2.0]
    assert metrics["reward/partial_rows/task_a"] == [0.0]
    assert metrics["reward/unscored_rows"] == [0.0]


def test_old_partial_rewards_option_is_refused_with_its_new_name(tmp_path):
    with pytest.raises(ValueError, match="allow_partial_rewards was renamed: .* set strict_rewards=True"):
        train_args(tmp_path, allow_partial_rewards=True)


@pytest.mark.parametrize(
    ("scale_rewards", "std"),
    [
        # one group of 8 rewards [1,0,0,1,0,0,0,1]: mean 3/8, squared deviations 3 * 25/64 + 5 * 9/64 = 1.875,
        # Bessel variance 1.875 / 7 = 0.267857, std 0.517549
        ("group", 0.517549),
        # both groups of the batch (16 rewards): 2 * 1.875 / 15 = 0.25, std 0.5
        ("batch", 0.5),
    ],
)
def test_std_scaling_divides_every_advantage_of_the_group(tmp_path, model, tokenizer, scale_rewards, std):
    # reference advantages (spec §3.7): on-policy baseline 2/7 -> rows 5/7 and -2/7; hybrid continuation 1, its prefix
    # 5/7 (before entropy selection); each divided by std + 1e-4
    trainer = make_trainer(tmp_path, model, tokenizer, rewards=[1.0, 0, 0, 1, 0, 0, 0, 1], scale_rewards=scale_rewards)
    _, out = generate_batch(trainer)
    adv, prefix_mask, divisor = out["advantages"], out["prefix_mask"], std + 1e-4
    assert adv[0].unique().tolist() == pytest.approx([5 / 7 / divisor], rel=1e-5)
    assert adv[1].unique().tolist() == pytest.approx([-2 / 7 / divisor], rel=1e-5)
    assert adv[7][~prefix_mask[7]].unique().tolist() == pytest.approx([1 / divisor], rel=1e-5)
    assert adv[7][prefix_mask[7]].unique().tolist() == pytest.approx([5 / 7 / divisor], rel=1e-5)


def scored_rollout() -> Rollout:
    """Rank 1's two rows of one group of 4: an on-policy row and a hybrid with a 3-token prefix cut to 2 by its
    2-token completion. Rewards of the group: [1, 0, 1, 1], the hybrid last."""
    rollout = Rollout(rows=[RowPlan(), RowPlan(role="hybrid")], prompts=["q", "q"], schedule_step=0)
    rollout.prefix_ids, rollout.completion_lens = [[], [5, 6, 7]], [4, 2]
    rollout.rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    return rollout


def test_prefix_fields_give_the_hybrid_prefix_its_own_advantage():
    is_hybrid = torch.tensor([False, False, False, True])
    fields = prefix_fields(
        scored_rollout(), 4, is_hybrid, rank=1, group_size=4, prefix_advantage="reference", scale_rewards="none"
    )
    # On-policy baseline: mean(1, 0, 1) = 2/3. The hybrid's continuation keeps its reward, its prefix r - 2/3.
    third = 1 / 3
    assert fields.prefix_lens.tolist() == [0, 2]
    assert fields.prefix_mask.tolist() == [[False] * 4, [True, True, False, False]]
    torch.testing.assert_close(fields.cont_adv, torch.tensor([third, -2 * third, third, 1.0]))
    torch.testing.assert_close(fields.prefix_adv, torch.tensor([third, -2 * third, third, third]))
    torch.testing.assert_close(fields.advantages, torch.tensor([[third] * 4, [third, third, 1.0, 1.0]]))


def test_prefix_fields_divide_by_the_group_reward_std():
    is_hybrid = torch.tensor([False, False, False, True])
    fields = prefix_fields(
        scored_rollout(), 4, is_hybrid, rank=1, group_size=4, prefix_advantage="reference", scale_rewards="group"
    )
    # std of [1, 0, 1, 1] (Bessel): sqrt(0.75 / 3) = 0.5, plus 1e-4.
    std = 0.5001
    torch.testing.assert_close(fields.advantages[1], torch.tensor([1 / 3, 1 / 3, 1.0, 1.0]) / std)


def test_a_guided_group_starts_every_completion_with_a_prefix(tmp_path, model, tokenizer):
    # num_hybrid = num_generations with the prefix in the completion: at step 0 every row starts with
    # floor(0.95 * 20) = 19 demo tokens; "paper" advantages r - 3/8 (rewards [1,0,0,1,0,0,0,1]) on each row
    trainer, batch = build(
        tmp_path, model, tokenizer, [FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1])], num_hybrid=8, prefix_advantage="paper"
    )
    out = trainer._generate_and_score_completions(batch)
    assert out["prefix_mask"].sum(dim=1).tolist() == [19] * 16
    first = out["advantages"][:, 0].tolist()  # a prefix token's advantage, as each row's
    assert first == pytest.approx([5 / 8, -3 / 8, -3 / 8, 5 / 8, -3 / 8, -3 / 8, -3 / 8, 5 / 8] * 2)
