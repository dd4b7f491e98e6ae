import math

import pytest
import torch

from prefix_rft.core.loss import aggregate_dr_grpo, masked_mean, ppo_clip_token_loss


def test_ratio_one_gives_minus_advantage():
    loss, ratio = ppo_clip_token_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, -2.0]]))
    assert ratio.tolist() == [[1.0, 1.0]]
    assert loss.tolist() == [[-1.0, 2.0]]


def test_positive_advantage_is_clipped_above():
    # ratio = exp(0.5) = 1.6487 > 1 + 0.2, A = 1: min(1.6487, 1.2) = 1.2 -> loss -1.2
    loss, _ = ppo_clip_token_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-1.2)


def test_negative_advantage_is_clipped_below():
    # ratio = exp(-0.5) = 0.6065 < 0.8, A = -1: -min(-0.6065, -0.8) = 0.8
    loss, _ = ppo_clip_token_loss(torch.tensor([[-0.5]]), torch.zeros(1, 1), -torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.8)


def test_asymmetric_clip_uses_epsilon_high():
    # ratio 1.6487, eps_high 0.28 -> 1.28
    loss, _ = ppo_clip_token_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1), epsilon_high=0.28)
    assert loss.item() == pytest.approx(-1.28)


def test_dual_clip_caps_negative_advantage_loss():
    # ratio = exp(2) = 7.389, A = -1: plain loss max(7.389, 1.2) = 7.389; dual clip c=3 caps at 3
    loss, _ = ppo_clip_token_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), -torch.ones(1, 1), dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0)
    plain, _ = ppo_clip_token_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), -torch.ones(1, 1))
    assert plain.item() == pytest.approx(math.exp(2))


def test_dr_grpo_divides_by_rows_times_constant_not_token_count():
    # masked sum = 1 + 2 + 3 = 6 over B=2 rows, normalizer 10 -> 6 / 20 = 0.3 (token-mean would give 2.0)
    token_loss = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate_dr_grpo(token_loss, mask, loss_normalizer=10).item() == pytest.approx(0.3)


def test_masked_mean_of_empty_mask_is_zero():
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0
