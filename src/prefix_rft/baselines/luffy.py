"""LUFFY (Yan et al. 2025, arXiv 2504.14945) in the Prefix-RFT trainer (docs/results.md).

Per group: G - 1 on-policy rollouts plus the full demonstration as one off-policy member. Advantages: r - mean over
all G rewards, no std (the demonstration included). On-policy tokens: -A * rho with no clip. Demonstration tokens:
-A * p / (p + gamma) (policy shaping), no clip, no importance weight. Dr. GRPO aggregation (`rl_loss_divisor="length"`:
the authors' sum over the response length alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefix_rft.baselines.demo_rows import (
    FullDemoRows,
    RlLossDivisor,
    TokenSumAggregate,
    WholeDemoSlots,
    refuse_clip_options,
    refuse_loss_type_with_length_divisor,
    refuse_prefix_options,
)
from prefix_rft.core import shaped_off_policy_token_loss, unclipped_token_loss
from prefix_rft.core.advantages import AdvantageMode
from prefix_rft.core.entropy import SelectionMode
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.trainer import PrefixRFTTrainer


@dataclass
class LuffyConfig(WholeDemoSlots, RlLossDivisor, PrefixRFTConfig):
    prefix_advantage: AdvantageMode = field(default="paper", metadata={"help": "LUFFY: group mean over all members."})
    prefix_entropy_selection: SelectionMode = field(default="all", metadata={"help": "LUFFY trains every demo token."})
    dual_clip: float | None = field(default=None, metadata={"help": "LUFFY has no clip: must stay null."})
    luffy_gamma: float = field(default=0.1, metadata={"help": "gamma of the shaping f(p) = p / (p + gamma)."})
    entropy_coef: float = field(default=0.001, metadata={"help": "Entropy bonus (the authors' script: 0.001)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        no_clip = "LUFFY's objective has no clip (on-policy tokens -A * rho, demonstration tokens policy-shaped)"
        refuse_clip_options(self, no_clip)
        refuse_prefix_options(self, allowed=("prefix_entropy_keep_fraction",))
        refuse_loss_type_with_length_divisor(self)


class LuffyTrainer(TokenSumAggregate, FullDemoRows, PrefixRFTTrainer):
    """`PrefixRFTTrainer` whose hybrid rows are whole demonstrations trained with LUFFY's shaped objective."""

    def _token_loss(self, logps, old_logps, advantages, batch: LossBatch):
        prefix_mask = batch.prefix_mask
        on_policy = unclipped_token_loss(logps, old_logps, advantages)
        off_policy = shaped_off_policy_token_loss(logps, advantages, self.args.luffy_gamma)
        ratio = torch.where(prefix_mask, torch.ones_like(logps), torch.exp(logps - old_logps)).detach()
        return torch.where(prefix_mask, off_policy, on_policy), ratio
