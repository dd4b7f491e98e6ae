"""CHORD (Zhang et al. 2025, arXiv 2508.11408): GRPO plus an SFT loss on demos, weighted globally and per token.

loss = (1 - mu_t) * L_GRPO + mu_t * L_SFT. Per group: G - 1 on-policy rollouts (their advantages from their own
rewards: the demo is not in the baseline) and the question's full demonstration in the G-th slot, the SFT data.
mu_t follows a linear warm-up then a cosine decay from `chord_mu_peak` to `chord_mu_valley`; with `chord_phi` each
demo token's NLL is weighted by phi = p (1 - p), p its probability under the policy. The paper's two variants:
CHORD-phi (the default: mu constant 0.1, phi on) and CHORD-mu (peak 0.9 decayed to 0.05 over 200 steps, phi off).
L_SFT is the token mean over the micro-batch's demo tokens; L_GRPO is the clipped objective of the on-policy tokens,
aggregated as `loss_type` says. docs/fidelity.md (CHORD row) lists where this departs from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefix_rft.baselines.demo_rows import FullDemoRows, WholeDemoSlots, refuse_prefix_options
from prefix_rft.core import aggregate_token_loss, chord_phi, demo_nll, warmup_cosine_weight
from prefix_rft.core.entropy import SelectionMode
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.trainer import PrefixRFTTrainer


@dataclass
class ChordConfig(WholeDemoSlots, PrefixRFTConfig):
    prefix_entropy_selection: SelectionMode = field(
        default="all", metadata={"help": "Every demo token is in the SFT loss."}
    )
    # CHORD-phi, the paper's full method, by default: mu constant 0.1 and phi on. CHORD-mu is peak 0.9, valley 0.05,
    # decay 200 steps, phi off (the authors' examples/mix_chord/mix_chord.yaml gives both settings).
    chord_mu_peak: float = field(default=0.1, metadata={"help": "mu after the warm-up (SFT weight at its largest)."})
    chord_mu_valley: float = field(default=0.1, metadata={"help": "mu once the cosine decay is over."})
    chord_mu_warmup_steps: int = field(default=0, metadata={"help": "Optimizer steps of mu's linear rise 0 -> peak."})
    chord_mu_decay_steps: int | None = field(
        default=None,
        metadata={"help": "Optimizer steps of mu's cosine decay peak -> valley; null: the rest of the run."},
    )
    chord_phi: bool = field(default=True, metadata={"help": "Weight each demo token's NLL by p (1 - p) (CHORD-phi)."})

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
        if self.loss_type == "dapo":
            raise ValueError(
                "loss_type='dapo' is not supported by ChordConfig: its divisor counts the demo tokens, which are in "
                "the SFT term and not in L_GRPO"
            )
        for name in ("chord_mu_peak", "chord_mu_valley"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (mu weighs SFT against GRPO), got {getattr(self, name)}")
        for name in ("chord_mu_warmup_steps", "chord_mu_decay_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


class ChordTrainer(FullDemoRows, PrefixRFTTrainer):
    """`PrefixRFTTrainer` whose demo slot carries CHORD's weighted SFT loss, mixed with GRPO by mu."""

    sft_on_every_demo_token = True

    def chord_mu(self, step: int) -> float:
        """mu at optimizer step `step`; a null decay length spans the run after the warm-up."""
        args = self.args
        decay = args.chord_mu_decay_steps
        if decay is None:
            decay = max(self.state.max_steps - args.chord_mu_warmup_steps, 0)
        return warmup_cosine_weight(step, args.chord_mu_warmup_steps, decay, args.chord_mu_peak, args.chord_mu_valley)

    def _aggregate(self, token_loss, logps, batch: LossBatch) -> torch.Tensor:
        on_policy, dapo_tokens = batch.on_policy, batch.dapo_tokens
        pg = aggregate_token_loss(token_loss, on_policy, self.loss_type, self.max_completion_length, dapo_tokens)
        weights = chord_phi(logps) if self.args.chord_phi else None
        sft = demo_nll(logps, batch.prefix_mask, weights)
        mu = self.chord_mu(self.state.global_step)
        if self.model.training:
            metrics = self._metrics["train"]
            metrics["chord/mu"].append(mu)
            metrics["chord/sft_loss"].append(self.accelerator.gather(sft.detach()).mean().item())
        return (1 - mu) * pg + mu * sft
