"""SRFT (Fu et al. 2025, arXiv 2506.19767): one stage of SFT and RL on demos and rollouts, weighted by entropy.

Per group: G - 1 on-policy rollouts and the question's full demonstration in the G-th slot. Four terms, summed:
* SFT on the demo: token-mean NLL weighted by w_SFT = 0.5 exp(-H), H the policy's mean entropy on the demo (detached);
* off-policy RL on the demo: -A * pi_theta(token) (behaviour policy taken as 1), A = r - mean of all G rewards;
* the rollouts: a solved one (reward > 0) imitated with -w_RL log p, w_RL = 0.1 exp(H) of its own tokens; a failed
  one pushed down with +log p. No group baseline, no importance ratio.
The RL terms are summed over tokens and divided by rows x `max_completion_length` (Dr. GRPO), or with
`rl_loss_divisor="length"` by `max_completion_length` alone, as the reimplementation. The authors released no
training code; facts are from the paper and the reimplementation in TsinghuaC3I/Unify-Post-Training
(`offline_loss_type=srft`). docs/fidelity.md#srft lists the departures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from prefix_rft.baselines.demo_rows import (
    FullDemoRows,
    RlLossDivisor,
    WholeDemoSlots,
    refuse_clip_options,
    refuse_prefix_options,
)
from prefix_rft.core import (
    aggregate_token_sum,
    demo_nll,
    masked_row_mean,
    shaped_off_policy_token_loss,
    srft_self_token_loss,
    srft_weights,
    unclipped_token_loss,
)
from prefix_rft.core.advantages import AdvantageMode
from prefix_rft.core.entropy import SelectionMode
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.rollouts import Rollout
from prefix_rft.trl.trainer import PrefixRFTTrainer

NO_RATIO = "SRFT's losses use log p and pi_theta directly: there is no importance ratio to clip"


@dataclass
class SrftConfig(WholeDemoSlots, RlLossDivisor, PrefixRFTConfig):
    prefix_advantage: AdvantageMode = field(
        default="paper", metadata={"help": "The demo's A: r - mean of all G rewards."}
    )
    prefix_entropy_selection: SelectionMode = field(default="all", metadata={"help": "Every demo token is trained."})
    dual_clip: float | None = field(default=None, metadata={"help": "SRFT has no clip: must stay null."})
    entropy_coef: float = field(default=0.001, metadata={"help": "Entropy bonus (the reimplementation's 0.001)."})
    srft_sft_scale: float = field(default=0.5, metadata={"help": "w_SFT = scale x exp(-H)."})
    srft_rl_scale: float = field(default=0.1, metadata={"help": "w_RL = scale x exp(H)."})
    srft_off_policy_gamma: float | None = field(
        default=None,
        metadata={
            "help": "Demo RL term: null -> -A * p (the paper's behaviour policy of 1); a number g -> LUFFY's "
            "-A * p / (p + g) (the reimplementation's 0.1)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_prefix_options(self)
        refuse_unused(
            self,
            {
                "prefix_entropy_selection": "every demo token is in the SFT and off-policy terms",
                "prefix_advantage": "the demo is an off-policy member of its group (LUFFY's advantage)",
                "loss_type": "the RL terms are summed over a constant (rl_loss_divisor), the NLL token-averaged",
            },
        )
        refuse_clip_options(self, NO_RATIO, "num_iterations")
        for name in ("srft_sft_scale", "srft_rl_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.srft_off_policy_gamma is not None and self.srft_off_policy_gamma <= 0:
            raise ValueError(  # p / (p + 0) is 1: the demo's RL term would have no gradient
                f"srft_off_policy_gamma must be > 0 (or null for -A * p), got {self.srft_off_policy_gamma}"
            )


class SrftTrainer(FullDemoRows, PrefixRFTTrainer):
    """`PrefixRFTTrainer` with SRFT's four entropy-weighted terms on the demo slot and the rollouts."""

    sft_on_every_demo_token = True

    def _add_prefix_fields(self, output: dict[str, Any], rollout: Rollout) -> None:
        """Add `srft_solved` and `srft_scored` (B,) bool: whether each local row's reward is > 0, and exists."""
        super()._add_prefix_fields(output, rollout)
        local = rollout.rewards[rollout.local(self.accelerator.process_index)].to(output["completion_ids"].device)
        output["srft_solved"], output["srft_scored"] = local > 0, ~torch.isnan(local)

    def _srft_weights(self, batch: LossBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) w_SFT and w_RL of each row, from the policy's mean entropy over the row's own tokens."""
        row_entropy = masked_row_mean(batch.entropies, batch.mask)
        return srft_weights(row_entropy, self.args.srft_sft_scale, self.args.srft_rl_scale)

    def _token_loss(self, logps, old_logps, advantages, batch: LossBatch):
        """(B, T): -A * p (or LUFFY's shaping) on demo tokens, `srft_self_token_loss` on the rollouts' tokens."""
        args, inputs = self.args, batch.inputs
        if "srft_solved" in inputs:
            _, w_rl = self._srft_weights(batch)
            own = srft_self_token_loss(logps, inputs["srft_solved"], w_rl) * inputs["srft_scored"].unsqueeze(1)
        else:  # evaluation batches: no rewards per row here, so the rollouts' term is left out
            own = torch.zeros_like(logps)
        if args.srft_off_policy_gamma is None:
            demo = unclipped_token_loss(logps, torch.zeros_like(logps), advantages)  # -A * p
        else:
            demo = shaped_off_policy_token_loss(logps, advantages, args.srft_off_policy_gamma)
        return torch.where(batch.prefix_mask, demo, own), torch.ones_like(logps)

    def _aggregate(self, token_loss, logps, batch: LossBatch) -> torch.Tensor:
        """RL terms' token sum over `rl_loss_divisor` + w_SFT-weighted token-mean NLL of the demo tokens."""
        w_sft, _ = self._srft_weights(batch)
        sft = demo_nll(logps, batch.prefix_mask, w_sft.unsqueeze(1))
        if self.model.training:
            self._log_sft_weight(w_sft, batch.prefix_mask.any(dim=1))
        divisor = self.args.rl_loss_divisor
        return aggregate_token_sum(token_loss, batch.mask, self.max_completion_length, divisor) + sft

    def _log_sft_weight(self, w_sft: torch.Tensor, demo_rows: torch.Tensor) -> None:
        """`srft/w_sft`: mean w_SFT over the micro-batch's demo rows on all ranks (absent when there are none)."""
        total = self.accelerator.reduce(torch.stack([(w_sft * demo_rows).sum(), demo_rows.sum()]).float(), "sum")
        if total[1] > 0:
            self._metrics["train"]["srft/w_sft"].append((total[0] / total[1]).item())
