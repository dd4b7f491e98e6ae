"""HPT, Hybrid Post-Training (Lv et al. 2025, arXiv 2509.04419; authors' code TsinghuaC3I/Unify-Post-Training).

Each question switches between SFT and RL by how well the policy does on it now. Per group: G - 1 on-policy rollouts
and the question's full demonstration in the G-th slot. Once the group is scored, with s = rollouts that solved it
(reward > 0): s <= `hpt_switch_gate` (paper: 0) -> the rollouts are dropped and the demo is trained with SFT
(token-mean NLL x `hpt_sft_loss_coef`), and so when s <= `hpt_switch_gate_off`, as the authors' released
`offline_loss_type=sft` trains that band; otherwise -> the demo is dropped and
the rollouts are trained with GRPO (advantages from their own rewards, -A * rho without clip, as the authors' script).
The decision is made from the gathered rewards, so every rank takes the same one; docs/fidelity.md#hpt lists the
departures.
"""

from __future__ import annotations

import math
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
from prefix_rft.core import aggregate_token_sum, demo_nll, hpt_group_modes, unclipped_token_loss
from prefix_rft.core.entropy import SelectionMode
from prefix_rft.core.questions import HPT_MODES
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.guards import on_any_rank
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.rollouts import Rollout
from prefix_rft.trl.trainer import PrefixRFTTrainer

NO_CLIP = "HPT's RL loss has no clip (-A * rho, the authors' loss_remove_clip=True)"


@dataclass
class HptConfig(WholeDemoSlots, RlLossDivisor, PrefixRFTConfig):
    prefix_entropy_selection: SelectionMode = field(
        default="all", metadata={"help": "Every demo token is in the SFT loss."}
    )
    dual_clip: float | None = field(default=None, metadata={"help": "HPT has no clip: must stay null."})
    entropy_coef: float = field(default=0.001, metadata={"help": "Entropy bonus (the authors' script: 0.001)."})
    hpt_switch_gate: int = field(
        default=0, metadata={"help": "A question whose rollouts solved it at most this often is trained with SFT."}
    )
    hpt_switch_gate_off: int = field(
        default=0, metadata={"help": "Above the gate and at most this: SFT too, as the authors' code (paper: 0)."}
    )
    hpt_sft_loss_coef: float = field(
        default=1.0, metadata={"help": "Weight of the SFT loss (the authors: 1.0 at 7B, 0.3 at 1.5B)."}
    )
    hpt_skip_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Skip the optimizer step when the gradient norm before clipping exceeds this (the authors' "
            "MAX_GRAD_NORM: 80); null: never. Not under DeepSpeed, whose engine steps before the norm is seen."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_prefix_options(self)
        refuse_unused(
            self,
            {
                "prefix_entropy_selection": "demo tokens get the SFT loss, never an advantage",
                "prefix_advantage": "the demo is out of the rollouts' baseline, which is the G - 1 rollouts' mean",
            },
        )
        refuse_clip_options(self, NO_CLIP)
        refuse_unused(
            self, {"loss_type": "the RL part is summed over a constant (rl_loss_divisor), the NLL token-averaged"}
        )
        if self.hpt_skip_grad_norm is not None and not self.hpt_skip_grad_norm > 0:
            raise ValueError(f"hpt_skip_grad_norm must be > 0 or null, got {self.hpt_skip_grad_norm}")
        if self.hpt_switch_gate < 0 or self.hpt_sft_loss_coef < 0:
            raise ValueError(
                f"hpt_switch_gate and hpt_sft_loss_coef must be >= 0, got {self.hpt_switch_gate}, "
                f"{self.hpt_sft_loss_coef}"
            )
        if self.hpt_switch_gate_off != 0 and self.hpt_switch_gate_off <= self.hpt_switch_gate:
            raise ValueError(  # s <= gate is SFT first, so gate < s <= gate_off is empty
                f"hpt_switch_gate_off={self.hpt_switch_gate_off} has no effect: it must be above "
                f"hpt_switch_gate={self.hpt_switch_gate} (questions solved more often than the gate and at most "
                "gate_off times are trained with SFT, as the authors' released code does)"
            )


class HptTrainer(FullDemoRows, PrefixRFTTrainer):
    """`PrefixRFTTrainer` that trains each question's group with SFT on its demo or RL on its rollouts, not both."""

    sft_rows_key = "hpt_sft_rows"  # the SFT questions' rows: their demo tokens are the ones trained

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.args.hpt_skip_grad_norm is not None and self.is_deepspeed_enabled:
            raise ValueError(
                "hpt_skip_grad_norm is not supported under DeepSpeed: its engine applies the step inside backward, "
                "before the trainer sees the gradient norm; use DDP or FSDP, or leave it null"
            )

    def _get_grad_norm(self, model, grad_norm=None):
        """The step's gradient norm before clipping (the Trainer's); above `hpt_skip_grad_norm`, the gradients are
        dropped so AdamW leaves every weight as it is (the authors zero them instead of stepping; the learning-rate
        schedule moves on, as theirs does). Every rank takes the verdict of any rank (a max over ranks), so all skip
        together."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        limit = self.args.hpt_skip_grad_norm
        if limit is not None:
            norm = float(grad_norm)
            # a non-finite norm is the step guard's; one verdict, should the ranks' norms differ in the last bit
            skip = on_any_rank(self.accelerator, math.isfinite(norm) and norm > limit)
            if skip:
                for p in model.parameters():
                    p.grad = None
            self._metrics["train"]["hpt/skipped_step_fraction"].append(float(skip))
        return grad_norm

    def _add_prefix_fields(self, output: dict[str, Any], rollout: Rollout) -> None:
        """Add `hpt_sft_rows` and `hpt_rl_rows` (B,) bool: which local rows the loss trains, and how."""
        super()._add_prefix_fields(output, rollout)
        device = output["completion_ids"].device
        is_hybrid = rollout.is_hybrid  # (N,), gathered by the parent
        args, group_size = self.args, self.num_generations
        modes = hpt_group_modes(rollout.rewards, is_hybrid, group_size, args.hpt_switch_gate, args.hpt_switch_gate_off)
        group_mode = torch.tensor([HPT_MODES.index(m) for m in modes], device=device)
        row_mode = group_mode.repeat_interleave(group_size)  # (N,)
        sft, rl = HPT_MODES.index("sft"), HPT_MODES.index("rl")
        sft_rows, rl_rows = (row_mode == sft) & is_hybrid, (row_mode == rl) & ~is_hybrid
        local = rollout.local(self.accelerator.process_index)
        output["hpt_sft_rows"], output["hpt_rl_rows"] = sft_rows[local], rl_rows[local]
        metrics = self._metrics["train"]
        for code, name in enumerate(HPT_MODES):
            metrics[f"hpt/{name}_questions"].append(float((group_mode == code).sum()))

    def _token_loss(self, logps, old_logps, advantages, batch: LossBatch):
        ratio = torch.exp(logps - old_logps).detach()
        return unclipped_token_loss(logps, old_logps, advantages), ratio

    def _aggregate(self, token_loss, logps, batch: LossBatch) -> torch.Tensor:
        """The RL rows' token sum over `rl_loss_divisor` + coef x token-mean NLL over the SFT rows' demo tokens."""
        on_policy, demo, inputs = batch.on_policy, batch.prefix_mask, batch.inputs
        if self.sft_rows_key in inputs:  # evaluation batches carry no switch: their rollouts are all on-policy
            on_policy, demo = on_policy * inputs["hpt_rl_rows"].unsqueeze(1), batch.demo_of_rows(self.sft_rows_key)
        pg = aggregate_token_sum(token_loss, on_policy, self.max_completion_length, self.args.rl_loss_divisor)
        return pg + self.args.hpt_sft_loss_coef * demo_nll(logps, demo)
