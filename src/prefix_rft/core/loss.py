"""PPO-clip token loss and Dr. GRPO aggregation (docs/fidelity.md#prefix-clip-range to #loss-aggregation)."""

from __future__ import annotations

from typing import Literal, get_args

import torch

LossType = Literal["dr_grpo", "grpo", "bnpo", "dapo", "luspo"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)
TokenSumDivisor = Literal["rows_x_length", "length"]


def ppo_clip_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    dual_clip: float | None = None,
    delta: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss max(-A*rho, -A*clip(rho, 1-eps_low, 1+eps_high)), optionally capped at -c*A where A < 0.

    Args:
        logp, old_logp: (B, T) log-probs of the taken tokens under the current and the rollout policy.
        advantages: (B, T) or (B, 1).
        dual_clip: c of dual-clip PPO (reference: 3.0); None disables it.
        delta: two-sided clip (TRL's `delta`, INTELLECT-2, arXiv 2505.07291): the unclipped branch uses
            min(rho, delta); None disables it.
    Returns:
        ((B, T) loss, (B, T) ratio rho, before any clipping).
    """
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    # Two-sided clip: with A < 0 the unclipped branch alone would let a large ratio grow the loss without bound.
    unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)
    loss = -torch.min(unclipped * advantages, clipped * advantages)
    if dual_clip is not None:
        # Dual clip: a negative advantage with a huge ratio would otherwise give an unbounded loss.
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    return loss, ratio


def aggregate_dr_grpo(token_loss: torch.Tensor, mask: torch.Tensor, loss_normalizer: int) -> torch.Tensor:
    """Sum of the masked token losses over rows and tokens, divided by (rows * `loss_normalizer`).

    A constant divisor instead of each sequence's length removes GRPO's length bias (Dr. GRPO, arXiv 2503.20783):
    the per-sequence sum over a constant, averaged over the B sequences. This is TRL's ``loss_type="dr_grpo"``.

    Args:
        token_loss: (B, T) per-token loss.
        mask: (B, T) 0/1, tokens that are trained.
        loss_normalizer: usually `max_completion_length`.
    """
    return (token_loss * mask).sum() / (token_loss.size(0) * loss_normalizer)


def aggregate_token_sum(
    token_loss: torch.Tensor, mask: torch.Tensor, loss_normalizer: int, divisor: TokenSumDivisor
) -> torch.Tensor:
    """The masked token sum over a constant: rows x `loss_normalizer` (``rows_x_length``, Dr. GRPO) or
    `loss_normalizer` alone (``length``, the verl forks' ``loss_remove_token_mean=True`` of LUFFY, HPT, TRAPO and the
    SRFT reimplementation), under which a micro-batch's loss grows with its rows.

    Args:
        token_loss: (B, T) per-token loss.
        mask: (B, T) 0/1, tokens that are trained.
        loss_normalizer: usually `max_completion_length`.
        divisor: ``rows_x_length`` or ``length``.
    """
    if divisor == "rows_x_length":
        return aggregate_dr_grpo(token_loss, mask, loss_normalizer)
    if divisor == "length":
        return (token_loss * mask).sum() / loss_normalizer
    raise ValueError(f"unknown divisor {divisor!r}; expected one of {get_args(TokenSumDivisor)}")


def aggregate_token_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    loss_normalizer: int,
    tokens_per_micro_batch: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Scalar loss of one micro-batch, before gradient-accumulation scaling, as TRL's `loss_type` aggregates it.

    Prefix tokens are ordinary trained tokens here: they count in every token mean, including those whose advantage
    entropy selection zeroed (the reference keeps them in its loss mask too).

    Args:
        token_loss: (B, T) per-token loss.
        mask: (B, T) 0/1, tokens that are trained.
        loss_type: ``dr_grpo`` sum / (B * `loss_normalizer`); ``grpo`` mean over rows of each row's token mean;
            ``bnpo`` mean over the micro-batch's tokens; ``dapo`` sum / `tokens_per_micro_batch`; ``luspo`` sum / B.
        loss_normalizer: Dr. GRPO's constant, usually `max_completion_length`.
        tokens_per_micro_batch: DAPO's divisor, the trained tokens of the whole generation batch (all ranks) per
            rank and micro-batch, so every token of the optimizer step weighs the same.
    """
    masked = token_loss * mask
    if loss_type == "dr_grpo":
        return aggregate_dr_grpo(token_loss, mask, loss_normalizer)
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1)
    if loss_type == "dapo":
        if tokens_per_micro_batch is None:
            raise ValueError("loss_type='dapo' needs tokens_per_micro_batch")
        return masked.sum() / tokens_per_micro_batch
    if loss_type == "luspo":
        return masked.sum(dim=1).mean()
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def sequence_level_old_logp(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Old log-probs that give every token of a row the row's sequence-level ratio (GSPO, arXiv 2507.18071).

    logp - result = s, the row's mean log-ratio over `mask`, on every token; any token loss written in terms of
    exp(logp - old_logp) then uses the sequence ratio exp(s), and the gradient flows through s as in GSPO.

    Args:
        logp, old_logp: (B, T) log-probs of the taken tokens under the current and the rollout policy.
        mask: (B, T) 0/1, tokens that are trained.
    Returns:
        (B, T) old log-probs.
    """
    tokens = mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    sequence_log_ratio = ((logp - old_logp) * mask).sum(dim=1, keepdim=True) / tokens  # (B, 1)
    return logp - sequence_log_ratio


def sampler_ratio_on_continuation(ratio: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
    """A sampler importance-sampling weight that leaves demo tokens alone: 1 on them, `ratio` on every other token.

    Demo tokens were not sampled, so the sampler/trainer mismatch the weight corrects (TRL's vLLM correction, truncated
    or masked) does not apply to them, and a masked-out continuation does not take its demo prefix with it.

    Args:
        ratio: (B, T) per-token or (B, 1) per-sequence weights.
        prefix_mask: (B, T) bool, demo tokens.
    Returns:
        (B, T) weights.
    """
    return torch.where(prefix_mask, torch.ones_like(ratio), ratio.expand_as(prefix_mask).to(ratio.dtype))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is set (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def shaped_off_policy_token_loss(logp: torch.Tensor, advantages: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """LUFFY's loss on demonstration tokens: -A * f(p) with f(p) = p / (p + gamma), p = pi_theta(token).

    The behaviour policy is taken as 1 and nothing is clipped. d f / d log p = gamma * p / (p + gamma)^2, so
    low-probability demo tokens get a larger share of the gradient than under plain log-likelihood ("policy
    shaping", arXiv 2504.14945).

    Args:
        logp: (B, T) log-probs of the demo tokens under the current policy.
        advantages: (B, T) or (B, 1).
    """
    p = torch.exp(logp)
    return -advantages * p / (p + gamma)


def unclipped_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-A * rho without clipping (LUFFY's on-policy loss with `loss_remove_clip=True`)."""
    return -advantages * torch.exp(logp - old_logp)


def demo_nll(logp: torch.Tensor, mask: torch.Tensor, token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SFT loss on demonstration tokens: the token mean over `mask` of -w * log p (w = 1 without `token_weights`).

    The one SFT-on-demos loss of the family (RL with SFT loss, CHORD, HPT, SRFT); methods differ only in the weights.

    Args:
        logp: (B, T) log-probs of the demo tokens under the current policy.
        mask: (B, T) 0/1 or bool, the demo tokens in the loss.
        token_weights: (B, T) or (B, 1) weights, used as given (detach them when they must carry no gradient).
    Returns:
        Scalar; 0 when `mask` is empty.
    """
    nll = -logp if token_weights is None else -logp * token_weights
    return masked_mean(nll, mask)


def chord_phi(logp: torch.Tensor) -> torch.Tensor:
    """CHORD-phi's token weight phi = p (1 - p), p = exp(logp), detached (arXiv 2508.11408, Eq. for CHORD-phi).

    Largest (1/4) at p = 1/2: tokens the policy is unsure of weigh most; near-certain (p -> 1) and near-impossible
    (p -> 0) demo tokens weigh little, which keeps the SFT term from collapsing entropy or dragging the policy to
    far-off tokens. A weight, not part of the gradient path: d loss / d logp = -phi per token.

    Args:
        logp: (B, T) log-probs of the demo tokens.
    Returns:
        (B, T) weights in [0, 1/4].
    """
    p = torch.exp(logp.detach())
    return p * (1 - p)


def masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean of each row of `values` (B, T) over its `mask` (0 for a row with an empty mask)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def srft_weights(
    row_entropy: torch.Tensor, sft_scale: float = 0.5, rl_scale: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """SRFT's entropy-aware weights (arXiv 2506.19767): w_SFT = 0.5 exp(-H) and w_RL = 0.1 exp(H), H detached.

    A confident policy (low H) learns more from the demos; an uncertain one leans on its own successes.

    Args:
        row_entropy: (B,) mean policy entropy over each row's trained tokens.
    Returns:
        ((B,) w_SFT, (B,) w_RL).
    """
    h = row_entropy.detach()
    return sft_scale * torch.exp(-h), rl_scale * torch.exp(h)


def srft_self_token_loss(logp: torch.Tensor, solved: torch.Tensor, rl_weight: torch.Tensor) -> torch.Tensor:
    """SRFT's loss on the policy's own rollouts: -w_RL log p on a solved row, +log p on a failed one.

    Positive rollouts are imitated with the entropy weight w_RL; negative ones have their likelihood pushed down with
    weight 1. No group baseline and no importance ratio.

    Args:
        logp: (B, T) log-probs of the rollout tokens.
        solved: (B,) bool, the row's reward is > 0.
        rl_weight: (B,) w_RL.
    Returns:
        (B, T) per-token loss.
    """
    sign = torch.where(solved, rl_weight, -torch.ones_like(rl_weight))  # (B,)
    return -sign.unsqueeze(1) * logp


def trust_region_sft_token_loss(logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """TRAPO's trust-region SFT on demo tokens: -p / max(sg(p), alpha), p = exp(logp) (arXiv 2512.17636).

    Its gradient is -grad log p while p >= alpha (plain SFT inside the trust region) and -(p / alpha) grad log p below
    it: a demo token the policy finds very unlikely pulls with at most p / alpha of SFT's force, which keeps SFT from
    large unstable steps (mode-seeking rather than mode-covering).

    Args:
        logp: (B, T) log-probs of the demo tokens.
    Returns:
        (B, T) per-token loss; its value is -1 inside the region.
    """
    p = torch.exp(logp)
    return -p / torch.clamp(p.detach(), min=alpha)
