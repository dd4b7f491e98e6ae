"""The method as pure functions on tensors and ids. Imports only torch, numpy and the standard library."""

from prefix_rft.core.advantages import (
    dr_grpo_advantages,
    hybrid_advantages,
    per_token_advantages,
    reward_std_divisor,
)
from prefix_rft.core.entropy import num_dropped, select_prefix_tokens
from prefix_rft.core.generation import CallShapes, force_prefix_scores, prefer_shared_call
from prefix_rft.core.loss import (
    aggregate_dr_grpo,
    aggregate_token_loss,
    masked_mean,
    ppo_clip_token_loss,
    sequence_level_old_logp,
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
from prefix_rft.core.questions import (
    QuestionRecord,
    QuestionStats,
    needs_rescue,
    next_prefix_ratio,
    on_policy_success,
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
    "CallShapes",
    "Constant",
    "CosineDecay",
    "Delay",
    "LinearDecay",
    "PrefixRatioSampler",
    "QuestionRecord",
    "QuestionStats",
    "aggregate_dr_grpo",
    "aggregate_token_loss",
    "build_prefix_mask",
    "dr_grpo_advantages",
    "fit_prefix_to_prompt",
    "force_prefix_scores",
    "hybrid_advantages",
    "hybrid_positions",
    "is_hybrid_row",
    "make_controller",
    "prefer_shared_call",
    "masked_mean",
    "needs_rescue",
    "next_prefix_ratio",
    "num_dropped",
    "on_policy_success",
    "per_token_advantages",
    "ppo_clip_token_loss",
    "prefix_length",
    "reward_std_divisor",
    "rollout_index",
    "row_rng",
    "select_prefix_tokens",
    "sequence_level_old_logp",
    "shaped_off_policy_token_loss",
    "unclipped_token_loss",
]
