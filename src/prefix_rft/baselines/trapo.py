"""TRAPO, Trust-Region Adaptive Policy Optimization (Su et al. 2025, arXiv 2512.17636; authors' code Su-my/TRAPO).

A question's 8 rollouts are four micro-groups (positions 0-3, 4-5, 6, 7). Positions 0-3 are always the policy's own;
each later micro-group is guided by a demo prefix only when the question needs it (`core.escalation`): 25% of the
demo for 4-5, 50% for 6, the whole demo for 7, escalating none -> partial -> full. Guided rows train their prefix
with trust-region SFT (-p / max(sg(p), alpha): SFT while p >= alpha, damped below), except position 4 whose prefix
is trained once through position 5; every generated token gets -A * rho without clip, A = r - mean of all 8 rewards
(prefixed rows' rewards score prefix + continuation). The levels of a question's visit come from its previous group
(the authors decide them inside the step); the state is updated from gathered rewards on every rank and saved in
checkpoints. docs/fidelity.md#trapo lists the departures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object

from prefix_rft.baselines.demo_rows import FullDemoRows, refuse_prefix_options
from prefix_rft.core import (
    EscalationState,
    level_at,
    prefix_end,
    trains_prefix,
    trust_region_sft_token_loss,
    unclipped_token_loss,
)
from prefix_rft.core.advantages import AdvantageMode
from prefix_rft.core.entropy import SelectionMode
from prefix_rft.core.escalation import GROUP_SIZE, LEVEL_RATIOS
from prefix_rft.trl.config import PrefixRFTConfig, refuse_unused
from prefix_rft.trl.questions import question_key
from prefix_rft.trl.rollouts import Rollout, RowPlan
from prefix_rft.trl.run_dir import load_rank_state, save_rank_state
from prefix_rft.trl.trainer import PrefixRFTTrainer

LEVELS_FILE = "trapo_levels.json"
NO_CLIP = "TRAPO's losses have no clip (-A * rho on generated tokens, the authors' loss_remove_clip=True)"


@dataclass
class TrapoConfig(PrefixRFTConfig):
    num_hybrid: int = field(default=4, metadata={"help": "Positions 4-7 of each group may be guided (TRAPO: 4)."})
    prefix_advantage: AdvantageMode = field(default="paper", metadata={"help": "A = r - mean of all 8 rewards."})
    prefix_entropy_selection: SelectionMode = field(
        default="all", metadata={"help": "Every prefix token is in TrSFT."}
    )
    dual_clip: float | None = field(default=None, metadata={"help": "TRAPO has no clip: must stay null."})
    entropy_coef: float = field(default=0.001, metadata={"help": "Entropy bonus (the authors' script: 0.001)."})
    trapo_trust_region_alpha: float = field(
        default=0.1, metadata={"help": "TrSFT's probability floor: below it a demo token's pull is damped by p/alpha."}
    )

    def __post_init__(self) -> None:
        if self.num_generations != GROUP_SIZE:  # first: the parent would refuse num_hybrid for smaller groups
            raise ValueError(
                f"num_generations={self.num_generations} is not supported by TrapoConfig: TRAPO's micro-groups "
                f"(4, 2, 1, 1 rollouts) need groups of {GROUP_SIZE}"
            )
        super().__post_init__()
        refuse_prefix_options(self)
        fixed = "TRAPO's micro-groups fix it"
        refuse_unused(
            self,
            {
                "num_hybrid": fixed,
                "prefix_advantage": fixed,
                "prefix_entropy_selection": "every prefix token of a guided row is in the trust-region SFT loss",
                "loss_type": "the loss is summed over a constant (Dr. GRPO)",
                **dict.fromkeys(("epsilon", "epsilon_high", "delta", "dual_clip"), NO_CLIP),
            },
        )
        if not 0.0 < self.trapo_trust_region_alpha <= 1.0:
            raise ValueError(f"trapo_trust_region_alpha must be in (0, 1], got {self.trapo_trust_region_alpha}")


class TrapoTrainer(FullDemoRows, PrefixRFTTrainer):
    """`PrefixRFTTrainer` with TRAPO's escalating micro-groups and trust-region SFT on the revealed prefixes."""

    _trapo_rows: torch.Tensor | None = None  # (B,) rows of the micro-batch in the loss whose prefix gets TrSFT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.escalation = EscalationState()
        self._train_prefix: list[bool] = []  # per local row of the batch being planned
        vocab = self._tokenizer.get_vocab()
        # The authors cut a partial prefix after a paragraph break: a token holding a blank line.
        self._boundary_ids = frozenset(i for token, i in vocab.items() if "\n\n" in token or "ĊĊ" in token)

    def _plan_rows(self, inputs: list[dict[str, Any]]) -> Rollout:
        """The parent's plan, whose guided slots hold whole demos, cut to each position's level (0: on-policy)."""
        rollout = super()._plan_rows(inputs)
        offset = self.accelerator.process_index * len(inputs)
        self._train_prefix = []
        for i, (example, row) in enumerate(zip(inputs, rollout.rows, strict=True)):
            position = (offset + i) % self.num_generations
            level = level_at(position, self.escalation.of(question_key(example))) if row.hybrid else 0
            if level == 0:
                rollout.rows[i] = RowPlan(role="no_demo" if row.role == "no_demo" else "on_policy")
                self._train_prefix.append(False)
                continue
            ratio = LEVEL_RATIOS[level]
            n = prefix_end(row.revealed_ids, ratio, self._boundary_ids)
            rollout.rows[i] = RowPlan(
                role="full_demo" if level == 3 else "hybrid",
                revealed_ids=row.revealed_ids[:n],
                demo_len=row.demo_len,
                ratio=ratio,
            )
            self._train_prefix.append(trains_prefix(position))
        return rollout

    def _add_prefix_fields(self, output: dict[str, Any], rollout: Rollout) -> None:
        """Add `trapo_sft_rows` (B,) bool: the local rows whose prefix tokens get trust-region SFT."""
        super()._add_prefix_fields(output, rollout)
        output["trapo_sft_rows"] = torch.tensor(self._train_prefix, device=output["completion_ids"].device)

    def _after_rollout(self, inputs: list[dict[str, Any]], rollout: Rollout) -> None:
        """Set every question's next levels from its group, from the gathered keys and rewards (same on all ranks)."""
        keys = gather_object([question_key(x) for x in inputs])
        self.escalation.observe_groups(list(keys), rollout.rewards.cpu())
        levels = [self.escalation.of(k) for k in keys[:: self.num_generations]]
        metrics = self._metrics["train"]
        for stage, name in enumerate(("partial25", "partial50", "full")):
            metrics[f"trapo/next_{name}_questions"].append(float(sum(lv[stage] > 0 for lv in levels)))

    def _compute_loss(self, model, inputs):
        self._trapo_rows = inputs.get("trapo_sft_rows")
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._trapo_rows = None

    def _token_loss(self, logps, old_logps, advantages, prefix_mask):
        """(B, T): trust-region SFT on prefix tokens of TrSFT rows, 0 on other prefix tokens, -A * rho elsewhere."""
        own = unclipped_token_loss(logps, old_logps, advantages)
        rows = self._trapo_rows
        sft_rows = torch.zeros_like(prefix_mask[:, 0]) if rows is None else rows
        sft = trust_region_sft_token_loss(logps, self.args.trapo_trust_region_alpha) * sft_rows.unsqueeze(1)
        ratio = torch.where(prefix_mask, torch.ones_like(logps), torch.exp(logps - old_logps)).detach()
        return torch.where(prefix_mask, sft, own), ratio

    # The levels ride along with the RNG state, which every checkpoint writes and reads on every rank.
    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        save_rank_state(output_dir, self.accelerator.process_index, LEVELS_FILE, self.escalation.state_dict())

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        if checkpoint is None:
            return
        # Every rank holds the same levels, so rank 0's copy restores a run resumed on more ranks than it saved from.
        state = load_rank_state(checkpoint, 0, LEVELS_FILE, "TRAPO escalation state")
        if state is not None:
            self.escalation.load_state_dict(state)
