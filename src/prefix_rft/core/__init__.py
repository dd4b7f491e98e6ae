"""The method as pure functions on tensors and ids. Imports only torch, numpy and the standard library."""

from prefix_rft.core.advantages import dr_grpo_advantages, hybrid_advantages, per_token_advantages
from prefix_rft.core.entropy import num_dropped, select_prefix_tokens
from prefix_rft.core.loss import (
    aggregate_dr_grpo,
    masked_mean,
    ppo_clip_token_loss,
    shaped_off_policy_token_loss,
    unclipped_token_loss,
)
from prefix_rft.core.prefix import (
    build_prefix_mask,
    fit_prefix_to_prompt,
    hybrid_positions,
    is_hybrid_row,
    prefix_length,
)
from prefix_rft.core.schedule import (
    Constant,
    CosineDecay,
    Delay,
    LinearDecay,
    PrefixRatioSampler,
    make_controller,
    rollout_index,
    row_rng,
)

__all__ = [
    "Constant",
    "CosineDecay",
    "Delay",
    "LinearDecay",
    "PrefixRatioSampler",
    "aggregate_dr_grpo",
    "build_prefix_mask",
    "dr_grpo_advantages",
    "fit_prefix_to_prompt",
    "hybrid_advantages",
    "hybrid_positions",
    "is_hybrid_row",
    "make_controller",
    "masked_mean",
    "num_dropped",
    "per_token_advantages",
    "ppo_clip_token_loss",
    "prefix_length",
    "rollout_index",
    "row_rng",
    "select_prefix_tokens",
    "shaped_off_policy_token_loss",
    "unclipped_token_loss",
]
