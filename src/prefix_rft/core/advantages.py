"""Group-relative advantages without std scaling (Dr. GRPO), with a separate advantage for prefix tokens (spec §3.7).

Two readings of the hybrid's advantage are offered:

* ``reference`` (default): the authors' ``dr_grpo_prefix`` with one rollout per prefix. The on-policy baseline is the
  mean reward of the group's on-policy rows (the hybrid is excluded). On-policy rows get r - baseline. A hybrid's
  continuation tokens get r minus the mean of its own prefix group, which is a singleton, and a singleton's mean is 0
  in the reference, so they get the raw r. Its prefix tokens get r - on-policy baseline, computed from the raw r (the
  reference subtracts from the already centred value, which is only harmless for one rollout per prefix).
* ``paper``: one trajectory advantage r_i - mean(all rewards of the group) shared by prefix and continuation (Eq. 3).

With no hybrid rows both reduce to Dr. GRPO: r - group mean.
"""

from __future__ import annotations

from typing import Literal

import torch

AdvantageMode = Literal["reference", "paper"]


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r - mean of the group, no division by the std (Dr. GRPO, arXiv 2503.20783 §3.2).

    Args:
        rewards: (N,) rewards, groups contiguous, N divisible by `group_size`.
    Returns:
        (N,) advantages.
    """
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    return (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)


def _reference_baseline(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `members` per group, 0 for groups with fewer than two members (reference rule).

    Args:
        values, members: (N/G, G) rewards and bool membership.
    Returns:
        (N/G, 1) baseline.
    """
    count = members.sum(dim=1, keepdim=True)
    total = (values * members).sum(dim=1, keepdim=True)
    return torch.where(count >= 2, total / count.clamp(min=1), torch.zeros_like(total))


def hybrid_advantages(
    rewards: torch.Tensor, is_hybrid: torch.Tensor, group_size: int, mode: AdvantageMode = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages for continuation tokens and for prefix tokens of each row.

    Args:
        rewards: (N,) rewards, groups of `group_size` contiguous.
        is_hybrid: (N,) bool, True for rows that start from a demo prefix.
        mode: ``reference`` or ``paper`` (module docstring).
    Returns:
        (continuation_advantages (N,), prefix_advantages (N,)). For on-policy rows both equal the row's advantage.
    """
    if not bool(is_hybrid.any()):
        adv = dr_grpo_advantages(rewards, group_size)
        return adv, adv
    if mode == "paper":
        adv = dr_grpo_advantages(rewards, group_size)
        return adv, adv
    if mode != "reference":
        raise ValueError(f"unknown advantage mode {mode!r}; expected 'reference' or 'paper'")
    r = rewards.view(-1, group_size)  # (N/G, G)
    hybrid = is_hybrid.view(-1, group_size)
    on_policy_baseline = _reference_baseline(r, ~hybrid)  # (N/G, 1)
    on_policy_adv = r - on_policy_baseline
    # Each hybrid row has its own prefix, so its prefix group is a singleton whose reference mean is 0.
    continuation = torch.where(hybrid, r, on_policy_adv)
    prefix = torch.where(hybrid, r - on_policy_baseline, on_policy_adv)
    return continuation.view(-1), prefix.view(-1)


def per_token_advantages(
    continuation_adv: torch.Tensor, prefix_adv: torch.Tensor, prefix_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T) advantages: `prefix_adv` on prefix tokens, `continuation_adv` elsewhere.

    Args:
        continuation_adv, prefix_adv: (B,).
        prefix_mask: (B, T) bool.
    """
    return torch.where(prefix_mask, prefix_adv.unsqueeze(1), continuation_adv.unsqueeze(1))
