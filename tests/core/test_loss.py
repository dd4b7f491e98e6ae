import math

import pytest
import torch

from prefix_rft.core.loss import (
    aggregate_dr_grpo,
    aggregate_token_loss,
    aggregate_token_sum,
    chord_phi,
    demo_nll,
    masked_mean,
    masked_row_mean,
    ppo_clip_token_loss,
    sampler_ratio_on_continuation,
    sequence_level_old_logp,
    shaped_off_policy_token_loss,
    srft_self_token_loss,
    srft_weights,
    unclipped_token_loss,
)


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


@pytest.mark.parametrize("divisor, expected", [("rows_x_length", 6 / 20), ("length", 6 / 10)])
def test_token_sum_is_divided_by_rows_and_length_or_by_length_alone(divisor, expected):
    # masked sum 1 + 2 + 3 = 6; 2 rows, constant 10: Dr. GRPO 6 / 20, the verl forks' loss_remove_token_mean 6 / 10
    token_loss = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate_token_sum(token_loss, mask, 10, divisor).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown divisor 'rows'"):
        aggregate_token_sum(token_loss, mask, 10, "rows")


def test_masked_mean_of_empty_mask_is_zero():
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


def test_shaped_loss_value_at_half_probability():
    # p = 0.5, gamma = 0.1: f = 0.5 / 0.6 = 0.8333; A = 2 -> loss -1.6667
    loss = shaped_off_policy_token_loss(torch.log(torch.tensor([[0.5]])), torch.tensor([[2.0]]), gamma=0.1)
    assert loss.item() == pytest.approx(-5 / 3)


def test_shaped_loss_gradient_is_gamma_over_p_plus_gamma_squared():
    # d(-A f(p))/dp = -A * gamma / (p + gamma)^2; p = 0.1, gamma = 0.1, A = 1 -> -0.1 / 0.04 = -2.5
    p = torch.tensor([[0.1]], requires_grad=True)
    shaped_off_policy_token_loss(torch.log(p), torch.ones(1, 1), gamma=0.1).sum().backward()
    assert p.grad.item() == pytest.approx(-2.5)


def test_shaped_gradient_favours_low_probability_tokens_relative_to_log_likelihood():
    # w.r.t. log p: gamma * p / (p + gamma)^2 = [gamma / (p + gamma)] * f. p = 0.01 -> 0.1*0.01/0.0121 = 0.0826;
    # p = 0.9 -> 0.1*0.9/1.0 = 0.09. Relative to log-likelihood's own weight (1 per token) the ratio of the two
    # gradient weights is 0.0826/0.09 = 0.918, whereas plain p-weighted (IS with behaviour 1) gives 0.01/0.9.
    logp = torch.log(torch.tensor([[0.01, 0.9]])).requires_grad_(True)
    shaped_off_policy_token_loss(logp, -torch.ones(1, 2), gamma=0.1).sum().backward()
    assert logp.grad.tolist()[0] == pytest.approx([0.0826446, 0.09], abs=1e-6)


def test_unclipped_loss_keeps_large_ratio():
    # ratio exp(0.5) = 1.6487 is not clipped: loss = -1.6487 for A = 1
    loss = unclipped_token_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-math.exp(0.5))


def test_two_sided_clip_caps_negative_advantage_loss_at_delta():
    # TRL's delta (INTELLECT-2): ratio exp(2) = 7.389, A = -1: -min(min(7.389, 4) * -1, 1.2 * -1) = max(4, 1.2) = 4
    loss, ratio = ppo_clip_token_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), -torch.ones(1, 1), delta=4.0)
    assert loss.item() == pytest.approx(4.0)
    assert ratio.item() == pytest.approx(math.exp(2))  # the ratio itself is returned unclipped


def test_two_sided_clip_leaves_positive_advantage_at_the_ppo_clip():
    # A = 1, ratio 7.389: -min(min(7.389, 4), 1.2) = -1.2, as without delta
    loss, _ = ppo_clip_token_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), torch.ones(1, 1), delta=4.0)
    assert loss.item() == pytest.approx(-1.2)


def test_sequence_level_old_logp_gives_every_token_the_mean_log_ratio():
    # log-ratios 0.2 and 0.4 on the two trained tokens (the third is padding): mean 0.3 on every token
    logp = torch.tensor([[0.2, 0.4, 9.0]], requires_grad=True)
    old = sequence_level_old_logp(logp, torch.zeros(1, 3), torch.tensor([[1, 1, 0]]))
    assert (logp - old).tolist()[0] == pytest.approx([0.3, 0.3, 0.3])
    # GSPO's gradient: d(mean log-ratio)/d logp_t = 1/2 on each trained token, 0 on padding
    (logp - old)[0, 0].backward()
    assert logp.grad.tolist() == [[0.5, 0.5, 0.0]]


# token losses 1, 2 (row 0) and 3 (row 1) are trained; the 9s are padding
TOKEN_LOSS = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
LOSS_MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", 2.25),  # row means 3/2 and 3/1 -> (1.5 + 3) / 2
        ("bnpo", 2.0),  # (1 + 2 + 3) / 3 tokens
        ("dapo", 0.5),  # 6 / 12 tokens per micro-batch (given)
        ("luspo", 3.0),  # row sums 3 and 3 -> mean 3
        ("dr_grpo", 0.3),  # 6 / (2 rows * 10)
    ],
)
def test_aggregation_follows_trl_loss_type(loss_type, expected):
    loss = aggregate_token_loss(TOKEN_LOSS, LOSS_MASK, loss_type, loss_normalizer=10, tokens_per_micro_batch=12.0)
    assert loss.item() == pytest.approx(expected)


def test_dapo_aggregation_needs_the_token_count():
    with pytest.raises(ValueError, match="tokens_per_micro_batch"):
        aggregate_token_loss(TOKEN_LOSS, LOSS_MASK, "dapo", loss_normalizer=10)


def test_chord_phi_is_p_times_one_minus_p_and_carries_no_gradient():
    logp = torch.tensor([[math.log(0.5), math.log(0.9), math.log(1.0)]], requires_grad=True)
    phi = chord_phi(logp)
    assert phi.tolist()[0] == pytest.approx([0.25, 0.09, 0.0])
    assert not phi.requires_grad


def test_demo_nll_is_the_token_mean_of_weighted_nll_over_the_mask():
    logp = torch.tensor([[math.log(0.5), math.log(0.9), -7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])  # the third token is not a demo token
    weights = torch.tensor([[0.25, 0.09, 1.0]])
    loss = demo_nll(logp, mask, weights)
    # (0.25 * ln 2 + 0.09 * ln(1/0.9)) / 2 tokens
    assert loss.item() == pytest.approx((0.25 * math.log(2) + 0.09 * math.log(1 / 0.9)) / 2)
    loss.backward()
    assert logp.grad.tolist()[0] == pytest.approx([-0.125, -0.045, 0.0])  # -w / 2 on each masked token


def test_demo_nll_without_weights_is_plain_nll_and_zero_on_an_empty_mask():
    logp = torch.tensor([[-1.0, -3.0]])
    assert demo_nll(logp, torch.tensor([[True, True]])).item() == pytest.approx(2.0)
    assert demo_nll(logp, torch.tensor([[False, False]])).item() == 0.0


def test_masked_row_mean_averages_each_row_over_its_mask():
    values = torch.tensor([[1.0, 3.0, 100.0], [5.0, 100.0, 100.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    assert masked_row_mean(values, mask).tolist() == [2.0, 5.0, 0.0]


def test_srft_weights_trade_demo_imitation_against_own_successes_by_entropy():
    w_sft, w_rl = srft_weights(torch.tensor([0.0, math.log(2)]))
    assert w_sft.tolist() == pytest.approx([0.5, 0.25])  # 0.5 e^-H: 0.5, 0.5 / 2
    assert w_rl.tolist() == pytest.approx([0.1, 0.2])  # 0.1 e^H: 0.1, 0.1 * 2


def test_srft_self_loss_imitates_solved_rows_and_pushes_failed_ones_down():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    loss = srft_self_token_loss(logp, torch.tensor([True, False]), torch.tensor([0.2, 0.2]))
    assert loss.flatten().tolist() == pytest.approx([0.2, 0.4, -1.0, -2.0])  # -0.2 log p; +log p
    loss.sum().backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.2, -0.2, 1.0, 1.0])


def test_sampler_ratio_on_continuation_keeps_demo_tokens_at_one():
    # Row 0: 2 demo tokens, then 2 sampled; row 1: on-policy. Sequence weights (B, 1): row 0 masked out (0), row 1
    # truncated at 2; token weights (B, T) pass through except on demo tokens.
    prefix_mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    sequence = sampler_ratio_on_continuation(torch.tensor([[0.0], [2.0]]), prefix_mask)
    assert sequence.tolist() == [[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]]
    token = sampler_ratio_on_continuation(torch.tensor([[0.5, 3.0, 1.5, 0.0], [0.5, 3.0, 1.5, 0.0]]), prefix_mask)
    assert token.tolist() == [[1.0, 1.0, 1.5, 0.0], [0.5, 3.0, 1.5, 0.0]]
