"""What the whole-demonstration methods share: the G-th slot of a group holds the full demo (+ EOS) as its completion.

RL with SFT loss, LUFFY, CHORD, HPT and SRFT train that slot as an off-policy member (LUFFY) or with an SFT loss on it
(the others); no prefix is drawn, so the prefix-ratio schedule, its per-question variants and prefix entropy
selection have no meaning there and are refused by name (`refuse_prefix_options`; LUFFY and RL with SFT loss keep
prefix entropy selection, which picks among the whole demo's tokens). LUFFY, HPT, SRFT and TRAPO train without a
clipped importance ratio and refuse its options (`refuse_clip_options`); the four take their authors' divisor of
the token sum as an option (`RlLossDivisor`, `TokenSumAggregate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefix_rft.core.loss import TokenSumDivisor, aggregate_token_sum
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.rollouts import Rollout, RowPlan

# Options of a drawn prefix: a full-demo slot has none.
PREFIX_OPTIONS = (
    "prefix_ratio_schedule",
    "prefix_ratio_floor_start",
    "prefix_ratio_floor_end",
    "prefix_ratio_decay_steps",
    "prefix_ratio_warmup_ratio",
    "prefix_ratio_delay_steps",
    "prefix_ratio_ceiling",
    "prefix_ratio_alpha",
    "prefix_ratio_beta",
    "prefix_min_len",
    "prefix_success_target",
    "prefix_success_rows",
    "prefix_rescue_max_success",
    "prefix_placement",
    "prefix_demo_part",
    "prefix_entropy_keep_fraction",
)


WHOLE_DEMO = "its demo slot holds the whole demonstration, so no prefix is drawn"


class WholeDemoSlots:
    """Config mixin of the methods whose hybrid slot holds a whole demonstration (LUFFY, RL+SFT, CHORD, HPT, SRFT):
    a group needs rollouts beside it (`trl.fields.check_hybrid_count` reads the flag)."""

    WHOLE_DEMO_SLOTS = True


def refuse_prefix_options(config: PrefixRFTConfig, allowed: tuple[str, ...] = (), reason: str = WHOLE_DEMO) -> None:
    """Refuse every drawn-prefix option but `allowed` set away from its default, for `reason` (by default: the
    method's demo slot is the whole demo)."""
    refuse_unused(config, dict.fromkeys((o for o in PREFIX_OPTIONS if o not in allowed), reason))


# Options of PPO's clipped importance ratio.
CLIP_OPTIONS = ("epsilon", "epsilon_high", "delta", "dual_clip")


def refuse_clip_options(config: PrefixRFTConfig, why: str, *more: str) -> None:
    """Refuse the clip options, and the options `more`, set away from their defaults: `why` says what the method's
    loss has instead of a clipped ratio."""
    refuse_unused(config, dict.fromkeys((*CLIP_OPTIONS, *more), why))


@dataclass
class RlLossDivisor:
    """The `rl_loss_divisor` field of the methods whose authors' verl forks sum the token losses over the response
    length alone: HPT's and SRFT's RL terms (beside a token-mean SFT term, whose weight against them it sets), and
    LUFFY's and TRAPO's whole loss (whose scale it sets, which matters where `max_grad_norm` clips)."""

    rl_loss_divisor: TokenSumDivisor = field(
        default="rows_x_length",
        metadata={
            "help": "The RL token losses' sum over 'rows_x_length' (the micro-batch's rows x max_completion_length, "
            "Dr. GRPO) or 'length' (max_completion_length alone, the authors' verl loss_remove_token_mean=True: "
            "the RL terms then weigh per_device_train_batch_size times more, against an SFT term and under gradient "
            "clipping; set that to their typical rows per micro-batch to match them)."
        },
    )


class TokenSumAggregate:
    """`_aggregate` of a trainer whose whole loss is one token sum (LUFFY, TRAPO): with `rl_loss_divisor="length"`
    the sum over `max_completion_length` alone, else the parent's (`loss_type`, Dr. GRPO by default)."""

    def _aggregate(self, token_loss: torch.Tensor, logps: torch.Tensor, batch: LossBatch) -> torch.Tensor:
        if self.args.rl_loss_divisor == "length":
            return aggregate_token_sum(token_loss, batch.mask, self.max_completion_length, "length")
        return super()._aggregate(token_loss, logps, batch)


def refuse_loss_type_with_length_divisor(config: PrefixRFTConfig) -> None:
    """`rl_loss_divisor="length"` replaces `loss_type`'s aggregation: refuse both set."""
    if config.rl_loss_divisor == "length" and config.loss_type != "dr_grpo":
        raise ValueError(
            f"loss_type={config.loss_type!r} is not used with rl_loss_divisor='length', which sums the token losses "
            "over max_completion_length; leave loss_type at 'dr_grpo'"
        )


class FullDemoRows:
    """`_row_plan` and `_fit_prefixes` of a trainer whose hybrid slots hold the whole demo and its EOS, nothing
    generated (role `full_demo`, `RowPlan.generates` False)."""

    def _row_plan(self, demo_ids: list[int], ratio: float) -> RowPlan:
        return RowPlan(role="full_demo", revealed_ids=list(demo_ids), demo_len=len(demo_ids), ratio=1.0)

    def _fit_prefixes(self, rollout: Rollout, prompt_ids: list[list[int]]) -> tuple[list[list[int]], int]:
        """The parent's fitted prefixes and cut, a full-demo row's prefix followed by EOS: its completion is the demo
        and its EOS, all of it demo tokens (`prefix_mask`). The EOS is not counted against the prompt budget."""
        prefix_ids, cut = super()._fit_prefixes(rollout, prompt_ids)
        eos = [self._tokenizer.eos_token_id]
        ended = [p + eos if row.role == "full_demo" else p for p, row in zip(prefix_ids, rollout.rows, strict=True)]
        return ended, cut
