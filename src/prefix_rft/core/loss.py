"""PPO-clip token loss and Dr. GRPO aggregation (spec §3.9)."""

from __future__ import annotations

import torch


def ppo_clip_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss max(-A*rho, -A*clip(rho, 1-eps_low, 1+eps_high)), optionally capped at -c*A where A < 0.

    Args:
        logp, old_logp: (B, T) log-probs of the taken tokens under the current and the rollout policy.
        advantages: (B, T) or (B, 1).
        dual_clip: c of dual-clip PPO (reference: 3.0); None disables it.
    Returns:
        ((B, T) loss, (B, T) ratio rho).
    """
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
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
