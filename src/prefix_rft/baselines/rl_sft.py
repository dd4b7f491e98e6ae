"""RL with an SFT loss (LUFFY's "RL w/ SFT loss" row; docs/results.md).

G - 1 on-policy rollouts trained with Dr. GRPO (baseline: the on-policy rows), plus a token-mean NLL on the full
demonstration in the G-th slot: loss = pg_loss + sft_loss_coef * nll.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefix_rft.baselines.demo_rows import FullDemoRows, WholeDemoSlots, refuse_prefix_options
from prefix_rft.core import aggregate_dr_grpo, demo_nll
from prefix_rft.core.entropy import SelectionMode
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.trainer import PrefixRFTTrainer


@dataclass
class RLWithSFTConfig(WholeDemoSlots, PrefixRFTConfig):
    prefix_entropy_selection: SelectionMode = field(
        default="all", metadata={"help": "Every demo token is in the NLL."}
    )
    sft_loss_coef: float = field(default=1.0, metadata={"help": "Weight of the demonstration NLL (LUFFY: 1.0)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_unused(self, {"loss_type": "the RL part is summed over a constant (Dr. GRPO), the NLL token-averaged"})
        refuse_prefix_options(self, allowed=("prefix_entropy_keep_fraction",))


class RLWithSFTTrainer(FullDemoRows, PrefixRFTTrainer):
    """Demonstration rows carry a plain NLL; on-policy rows the usual clipped Dr. GRPO objective."""

    sft_on_every_demo_token = True

    def _aggregate(self, token_loss, logps, batch: LossBatch) -> torch.Tensor:
        pg = aggregate_dr_grpo(token_loss, batch.on_policy, self.max_completion_length)
        return pg + self.args.sft_loss_coef * demo_nll(logps, batch.prefix_mask)
