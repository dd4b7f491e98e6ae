"""Group-relative advantages (Dr. GRPO), with a separate advantage for prefix tokens.

docs/fidelity.md#hybrid-advantage, #prefix-advantage-several-rollouts and #single-on-policy-row say where they follow
the paper and the reference code.

Two readings of the hybrid's advantage are offered:

* ``reference`` (default): the authors' ``dr_grpo_prefix`` with one rollout per prefix. The on-policy baseline is the
  mean reward of the group's on-policy rows (the hybrid is excluded). On-policy rows get r - baseline. A hybrid's
  continuation tokens get r minus the mean of its own prefix group, which is a singleton, and a singleton's mean is 0
  in the reference, so they get the raw r. Its prefix tokens get r - on-policy baseline, computed from the raw r (the
  reference subtracts from the already centred value, which is only harmless for one rollout per prefix).
* ``paper``: one trajectory advantage r_i - mean(all rewards of the group) shared by prefix and continuation (Eq. 3).

With no hybrid rows both reduce to Dr. GRPO: r - group mean. `reward_std_divisor` adds TRL's `scale_rewards`.
"""

from __future__ import annotations

from typing import Literal

import torch

AdvantageMode = Literal["reference", "paper"]
ScaleRewards = Literal["none", "group", "batch"]
STD_EPSILON = 1e-4  # TRL's GRPO adds it to the std before dividing


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r - mean of the group, no division by the std (Dr. GRPO, arXiv 2503.20783 §3.2).

    Args:
        rewards: (N,) rewards, groups contiguous, N divisible by `group_size`; NaN marks an unscored row.
    Returns:
        (N,) advantages; 0 for unscored rows, which are left out of their group's mean.
    """
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    scored = ~torch.isnan(grouped)
    mean = _group_mean(grouped, scored)
    return torch.where(scored, grouped - mean, 0.0).view(-1)


def _group_mean(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(N/G, 1) mean of `values` over `members` per group (0 for a group without members); NaN outside members is
    ignored."""
    count = members.sum(dim=1, keepdim=True)
    return torch.where(members, values, 0.0).sum(dim=1, keepdim=True) / count.clamp(min=1)


def _reference_baseline(values: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `members` per group, 0 for groups with fewer than two members (reference rule).

    Args:
        values, members: (N/G, G) rewards and bool membership.
    Returns:
        (N/G, 1) baseline.
    """
    count = members.sum(dim=1, keepdim=True)
    mean = _group_mean(values, members)
    return torch.where(count >= 2, mean, torch.zeros_like(mean))


def hybrid_advantages(
    rewards: torch.Tensor, is_hybrid: torch.Tensor, group_size: int, mode: AdvantageMode = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages for continuation tokens and for prefix tokens of each row.

    Args:
        rewards: (N,) rewards, groups of `group_size` contiguous. NaN marks an unscored row (every reward function
            returned None): as in TRL's GRPOTrainer, its advantages are 0 and it is left out of every baseline.
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
    scored = ~torch.isnan(r)
    on_policy_baseline = _reference_baseline(r, ~hybrid & scored)  # (N/G, 1)
    on_policy_adv = r - on_policy_baseline
    # Each hybrid row has its own prefix, so its prefix group is a singleton whose reference mean is 0.
    continuation = torch.where(hybrid, r, on_policy_adv)
    prefix = torch.where(hybrid, r - on_policy_baseline, on_policy_adv)
    return torch.where(scored, continuation, 0.0).view(-1), torch.where(scored, prefix, 0.0).view(-1)


def per_token_advantages(
    continuation_adv: torch.Tensor, prefix_adv: torch.Tensor, prefix_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T) advantages: `prefix_adv` on prefix tokens, `continuation_adv` elsewhere.

    Args:
        continuation_adv, prefix_adv: (B,).
        prefix_mask: (B, T) bool.
    """
    return torch.where(prefix_mask, prefix_adv.unsqueeze(1), continuation_adv.unsqueeze(1))


def reward_std_divisor(rewards: torch.Tensor, group_size: int, scale_rewards: ScaleRewards) -> torch.Tensor:
    """What every advantage of each row is divided by under TRL's `scale_rewards` (GRPO's std normalisation).

    ``none``: 1 (Dr. GRPO). ``group``: std of the row's G rewards + 1e-4. ``batch``: std of all N rewards + 1e-4.
    The std is Bessel-corrected, as TRL's, and taken over the hybrid rows too: one divisor for the on-policy rows, the
    hybrid's continuation and its prefix, so their ratios stay those of the unscaled estimator. (The reference's
    `grpo_prefix` divides only the on-policy rows by their own std; dividing a prefix advantage by the on-policy std
    instead would give it 1/1e-4 whenever the on-policy rewards tie.) NaN rewards (unscored rows) are left out; a
    group with fewer than two scored rewards is not scaled.

    Args:
        rewards: (N,) rewards, groups of `group_size` contiguous.
    Returns:
        (N,) divisor.
    """
    if scale_rewards == "none":
        return torch.ones_like(rewards)
    if scale_rewards not in ("group", "batch"):
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; expected 'none', 'group' or 'batch'")
    values = rewards.view(-1, group_size) if scale_rewards == "group" else rewards.view(1, -1)  # (groups, size)
    scored = ~torch.isnan(values)
    count = scored.sum(dim=1, keepdim=True)
    mean = _group_mean(values, scored)
    variance = torch.where(scored, values - mean, 0.0).pow(2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    divisor = torch.where(count >= 2, variance.sqrt() + STD_EPSILON, torch.ones_like(variance))
    return divisor.expand_as(values).reshape(-1)
