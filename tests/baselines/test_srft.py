"""SRFT: the four terms worked by hand, the rows' flags on a scored batch, refusals, one training step."""

import math

import pytest
import torch

from prefix_rft.baselines import SrftConfig, SrftTrainer
from tests.helpers import base_kwargs, baseline_trainer, generate_batch, loss_batch


def srft(tmp_path, model, tokenizer, rewards=(0.0,), **overrides):
    return baseline_trainer(SrftTrainer, SrftConfig, tmp_path, model, tokenizer, list(rewards), **overrides)


@pytest.mark.parametrize("divisor, divided_rows", [("rows_x_length", 3), ("length", 1)])
def test_srft_loss_by_hand(tmp_path, model, tokenizer, divisor, divided_rows):
    trainer = srft(tmp_path, model, tokenizer, rl_loss_divisor=divisor)
    # row 0: a solved rollout (entropy 0 -> w_RL 0.1); row 1: a failed rollout; row 2: the demo (entropy ln 2 ->
    # w_SFT 0.5 / 2 = 0.25), advantage 0.5, p = 0.5 on both tokens
    logps = torch.tensor([[-1.0, -2.0], [-1.0, -1.0], [math.log(0.5), math.log(0.5)]])
    entropies = torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.log(2), math.log(2)]])
    prefix_mask = torch.tensor([[False, False], [False, False], [True, True]])
    mask = torch.ones(3, 2)
    rows = {"srft_solved": torch.tensor([True, False, False]), "srft_scored": torch.tensor([True, True, True])}
    batch = loss_batch(prefix_mask, mask, entropies, **rows)
    advantages = torch.tensor([[9.0], [9.0], [0.5]])  # the rollouts' advantages are not used
    token_loss, _ = trainer._token_loss(logps, logps, advantages, batch)
    # solved: -0.1 log p = 0.1, 0.2; failed: +log p = -1, -1; demo: -A p = -0.25, -0.25
    assert token_loss.flatten().tolist() == pytest.approx([0.1, 0.2, -1.0, -1.0, -0.25, -0.25])
    loss = trainer._aggregate(token_loss, logps, batch)
    # Dr. GRPO: (0.1 + 0.2 - 1 - 1 - 0.25 - 0.25) / (3 rows * 24), or / 24 alone as the reimplementation;
    # SFT: 0.25 * ln 2 on each demo token, token mean
    assert loss.item() == pytest.approx(-2.2 / (divided_rows * 24) + 0.25 * math.log(2))


def test_srft_demo_is_an_off_policy_group_member_and_a_step_trains(tmp_path, model, tokenizer):
    trainer = srft(tmp_path, model, tokenizer, [1.0, 0, 0, 1, 0, 0, 0, 1])
    _, out = generate_batch(trainer)
    # the demo (slot 7, reward 1) against the mean of all 8 rewards, 3/8
    assert out["advantages"][7].unique().tolist() == pytest.approx([5 / 8])
    assert out["srft_solved"].tolist() == [True, False, False, True, False, False, False, True] * 2
    assert out["srft_scored"].all()
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert 0 < trainer.state.log_history[0]["srft/w_sft"] <= 0.5  # 0.5 exp(-H), H >= 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_iterations": 2}, "num_iterations=2 is not used by SrftConfig"),
        ({"epsilon": 0.1}, "epsilon=0.1 is not used by SrftConfig"),
        ({"prefix_advantage": "reference"}, "prefix_advantage='reference' is not used by SrftConfig"),
        ({"srft_rl_scale": -1.0}, "srft_rl_scale must be >= 0"),
        ({"srft_off_policy_gamma": 0.0}, r"srft_off_policy_gamma must be > 0 \(or null for -A \* p\), got 0.0"),
    ],
)
def test_srft_refuses_options_it_has_no_use_for(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        SrftConfig(**base_kwargs(tmp_path, **overrides))
