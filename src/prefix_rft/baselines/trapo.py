"""TRAPO, Trust-Region Adaptive Policy Optimization (Su et al. 2025, arXiv 2512.17636; authors' code Su-my/TRAPO).

A question's 8 rollouts are four micro-groups (positions 0-3, 4-5, 6, 7). Positions 0-3 are always the policy's own;
each later micro-group is guided by a demo prefix only when the question needs it (`core.escalation`): 25% of the
demo for 4-5, 50% for 6, the whole demo for 7, escalating none -> partial -> full. Guided rows train their prefix
with trust-region SFT (-p / max(sg(p), alpha): SFT while p >= alpha, damped below), except position 4 whose prefix
is trained once through position 5; every generated token gets -A * rho without clip, A = r - mean of all 8 rewards
(prefixed rows' rewards score prefix + continuation).

`trapo_escalation="in_step"` (the paper): the micro-groups are generated one after another inside the step, each
decided from the gathered rewards of the ones before it, identically on every rank. "previous_visit": a question's
levels come from its previous group (unguided on its first visit), one generation pass; that state is saved in
checkpoints. docs/fidelity.md#trapo lists the departures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from accelerate.utils import gather_object

from prefix_rft.baselines.demo_rows import (
    FullDemoRows,
    RlLossDivisor,
    TokenSumAggregate,
    refuse_clip_options,
    refuse_prefix_options,
)
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
from prefix_rft.core.escalation import (
    GROUP_SIZE,
    LEVEL_RATIOS,
    STAGE_OF_POSITION,
    STAGE_STARTS,
    demo_index,
    solved,
    stage_level,
)
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.fields import refuse_unused
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.questions import question_key
from prefix_rft.trl.rollouts import Rollout, RowPlan
from prefix_rft.trl.run_dir import RankState
from prefix_rft.trl.trainer import PrefixRFTTrainer

if TYPE_CHECKING:
    import numpy as np

LEVELS_FILE = "trapo_levels.json"
NO_CLIP = "TRAPO's losses have no clip (-A * rho on generated tokens, the authors' loss_remove_clip=True)"
LEVEL_NAMES = {1: "partial25", 2: "partial50", 3: "full"}  # metric names of the guidance levels
Escalation = Literal["in_step", "previous_visit"]


@dataclass
class TrapoConfig(RlLossDivisor, PrefixRFTConfig):
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
    trapo_escalation: Escalation = field(
        default="in_step",
        metadata={
            "help": "in_step (the paper): each micro-group's guidance from the rewards of the ones before it in the "
            "same step; previous_visit: from the question's previous group, unguided on its first visit"
        },
    )

    def __post_init__(self) -> None:
        if self.num_generations != GROUP_SIZE:  # first: the parent would refuse num_hybrid for smaller groups
            raise ValueError(
                f"num_generations={self.num_generations} is not supported by TrapoConfig: TRAPO's micro-groups "
                f"(4, 2, 1, 1 rollouts) need groups of {GROUP_SIZE}"
            )
        super().__post_init__()
        refuse_prefix_options(self, reason="its prefixes are fixed shares of the demo (25%, 50%, all) by position")
        fixed = "TRAPO's micro-groups fix it"
        refuse_unused(
            self,
            {
                "num_hybrid": fixed,
                "prefix_advantage": fixed,
                "prefix_entropy_selection": "every prefix token of a guided row is in the trust-region SFT loss",
                "loss_type": "the loss is summed over a constant (rl_loss_divisor)",
            },
        )
        refuse_clip_options(self, NO_CLIP)
        if not 0.0 < self.trapo_trust_region_alpha <= 1.0:
            raise ValueError(f"trapo_trust_region_alpha must be in (0, 1], got {self.trapo_trust_region_alpha}")


def stage_rows(stage: int, offset: int, n: int) -> int:
    """How many of the n rows from global row `offset` on belong to micro-group `stage` (groups contiguous)."""
    return sum(STAGE_OF_POSITION[(offset + i) % GROUP_SIZE] == stage for i in range(n))


class TrapoTrainer(TokenSumAggregate, FullDemoRows, PrefixRFTTrainer):
    """`PrefixRFTTrainer` with TRAPO's escalating micro-groups and trust-region SFT on the revealed prefixes."""

    sft_rows_key = "trapo_sft_rows"  # the TrSFT rows: their prefix tokens are the demo tokens trained

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.escalation = EscalationState()
        # Per local row of the batch being generated: its example, the plan of its demo slot (the whole demo, or an
        # on-policy row), its group position, and whether its prefix gets TrSFT.
        self._inputs: list[dict[str, Any]] = []
        self._demo_plans: list[RowPlan] = []
        self._positions: list[int] = []
        self._train_prefix: list[bool] = []
        vocab = self._tokenizer.get_vocab()
        # The authors cut a partial prefix after a paragraph break: a token holding a blank line.
        self._boundary_ids = frozenset(i for token, i in vocab.items() if "\n\n" in token or "ĊĊ" in token)
        if self.args.trapo_escalation == "in_step":
            self._refuse_reward_models()

    def _refuse_reward_models(self) -> None:
        """In-step escalation scores micro-groups as they are generated, with the reward functions only."""
        for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True):
            if isinstance(func, torch.nn.Module):
                raise ValueError(
                    f"trapo_escalation='in_step' does not support reward models ({name!r}): it scores each "
                    "micro-group as it is generated with callable reward functions; use a reward function, or "
                    "trapo_escalation='previous_visit'"
                )

    def _plan_rows(self, inputs: list[dict[str, Any]]) -> Rollout:
        """The parent's plan, whose guided slots hold whole demos, cut to each position's level (0: on-policy).

        previous_visit: the levels of the question's last group; in_step: every row starts on-policy, and
        `_generate_single_turn` guides the later micro-groups as their turn comes.
        """
        rollout = super()._plan_rows(inputs)
        offset = self.accelerator.process_index * len(inputs)
        self._inputs, self._demo_plans = inputs, list(rollout.rows)
        self._positions = [(offset + i) % self.num_generations for i in range(len(inputs))]
        self._train_prefix = [False] * len(inputs)
        in_step = self.args.trapo_escalation == "in_step"
        for i, example in enumerate(inputs):
            levels = (0, 0, 0) if in_step else self.escalation.of(question_key(example))
            self._guide(rollout, i, level_at(self._positions[i], levels))
        return rollout

    def _choose_demo(self, demos: list[str], position: int, rng: np.random.Generator) -> str:
        """The authors' demo for a group position, not a draw (`demo_index`)."""
        return demos[demo_index(position, len(demos))]

    def _guide(self, rollout: Rollout, i: int, level: int) -> None:
        """Plan local row i at guidance `level` (0: the policy's own rollout; a row without demo stays one)."""
        row = self._demo_plans[i]
        if level == 0 or not row.hybrid:
            rollout.rows[i] = RowPlan(role="no_demo" if row.role == "no_demo" else "on_policy")
            self._train_prefix[i] = False
            return
        ratio = LEVEL_RATIOS[level]
        n = prefix_end(row.revealed_ids, ratio, self._boundary_ids)
        rollout.rows[i] = RowPlan(
            role="full_demo" if level == 3 else "hybrid",
            revealed_ids=row.revealed_ids[:n],
            demo_len=row.demo_len,
            ratio=ratio,
        )
        self._train_prefix[i] = trains_prefix(self._positions[i])

    # ---------------------------------------------------------------- in-step escalation
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """in_step: micro-groups 1-4 generated one after another, each guided by the rewards of those before it.

        Every rank makes the same generate calls in the same order (`_generate_stage`) and takes the same decisions
        from the gathered rewards (`_guide_stage`). Micro-groups 1-3 are scored as they come (`_score_rows`), and
        the batch's scoring keeps those rewards, so every row is scored once and trains with the reward its
        escalation saw. The trainer refuses image datasets, so there are no images.
        """
        rollout = self._rollout
        if rollout is None or self.args.trapo_escalation != "in_step":
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images=has_tool_images
            )
        n = len(rollout.rows)
        rewards = torch.full((n,), torch.nan)  # (B,) NaN until scored; position 7 is scored with the batch
        completion_ids, logprobs, prefix_ids, lens = [[]] * n, [[]] * n, [[]] * n, [0] * n
        has_logprobs = True
        calls = self._metrics["train"]["prefix/generate_calls"]
        logged = len(calls)
        for stage in (1, 2, 3, 4):
            if stage > 1:
                self._guide_stage(stage, rollout, rewards)
            rows = [i for i, p in enumerate(self._positions) if STAGE_OF_POSITION[p] == stage]
            ids, lps, sub = self._generate_stage(stage, rows, prompt_ids)
            has_logprobs = has_logprobs and lps is not None
            for j, i in enumerate(rows):
                completion_ids[i], prefix_ids[i], lens[i] = ids[j], sub.prefix_ids[j], sub.completion_lens[j]
                logprobs[i] = lps[j] if lps is not None else []
            rollout.truncated_tokens += sub.truncated_tokens
            if stage < 4 and rows:
                rewards[rows] = self._score_rows(
                    [self._inputs[i] for i in rows],
                    [rollout.prompts[i] for i in rows],
                    [prompt_ids[i] for i in rows],
                    ids[: len(rows)],
                    rows,
                )
        if len(calls) > logged:  # transformers generation: one value per generation batch, as without escalation
            calls[logged:] = [sum(calls[logged:])]
        rollout.prefix_ids, rollout.completion_lens = prefix_ids, lens
        return completion_ids, (logprobs if has_logprobs else None)

    def _guide_stage(self, stage: int, rollout: Rollout, rewards: torch.Tensor) -> None:
        """Plan this rank's rows of micro-group `stage` from the gathered (N,) rewards of each group's earlier ones."""
        gathered = self.accelerator.gather(rewards.to(self.accelerator.device)).cpu()
        flags = solved(gathered).view(-1, GROUP_SIZE).tolist()
        levels = [stage_level(stage, group[: STAGE_STARTS[stage - 1]]) for group in flags]
        offset = rollout.local(self.accelerator.process_index).start
        for i, position in enumerate(self._positions):
            if STAGE_OF_POSITION[position] == stage:
                self._guide(rollout, i, levels[(offset + i) // GROUP_SIZE])

    def _generate_stage(self, stage: int, rows: list[int], prompt_ids) -> tuple[list, list | None, Rollout]:
        """Generate local `rows` (one micro-group) through the parent's generation, as a batch of their own.

        A group may span ranks, so ranks hold different numbers of a micro-group's rows; each pads its call to the
        most any rank holds with stand-in rows (a whole-demo row with no demo: vLLM samples one discarded token after
        the prompt, transformers generates nothing but keeps the collectives in step), so every rank sends the same
        number of requests. Returns the completions and logprobs (padded rows last) and the sub-rollout.
        """
        rollout = self._rollout
        n = len(rollout.rows)
        pad = max(stage_rows(stage, rank * n, n) for rank in range(self.accelerator.num_processes)) - len(rows)
        sub = Rollout(
            rows=[rollout.rows[i] for i in rows] + [RowPlan(role="full_demo")] * pad,
            prompts=[rollout.prompts[i] for i in rows] + [rollout.prompts[0]] * pad,
            schedule_step=rollout.schedule_step,
        )
        self._rollout = sub
        try:
            ids, lps = super()._generate_single_turn(
                [prompt_ids[i] for i in rows] + [prompt_ids[0]] * pad, None, {}, 1
            )
        finally:
            self._rollout = rollout
        return ids, lps, sub

    def _add_prefix_fields(self, output: dict[str, Any], rollout: Rollout) -> None:
        """Add `trapo_sft_rows` (B,) bool: the local rows whose prefix tokens get trust-region SFT."""
        super()._add_prefix_fields(output, rollout)
        output["trapo_sft_rows"] = torch.tensor(self._train_prefix, device=output["completion_ids"].device)

    def _after_rollout(self, inputs: list[dict[str, Any]], rollout: Rollout) -> None:
        """Log the guided rows per level; previous_visit: set every question's next levels from its group (gathered
        keys, same on all ranks)."""
        metrics = self._metrics["train"]
        local = [sum(row.hybrid and row.ratio == LEVEL_RATIOS[level] for row in rollout.rows) for level in (1, 2, 3)]
        guided = self.accelerator.reduce(torch.tensor(local, device=self.accelerator.device), "sum").tolist()
        for level, count in zip((1, 2, 3), guided, strict=True):
            metrics[f"trapo/guided_rows_{LEVEL_NAMES[level]}"].append(float(count))
        if self.args.trapo_escalation == "in_step":
            return
        keys = gather_object([question_key(x) for x in inputs])
        self.escalation.observe_groups(list(keys), rollout.rewards.cpu())
        levels = [self.escalation.of(k) for k in keys[:: self.num_generations]]
        for stage, name in enumerate(LEVEL_NAMES.values()):
            metrics[f"trapo/next_{name}_questions"].append(float(sum(lv[stage] > 0 for lv in levels)))

    def _token_loss(self, logps, old_logps, advantages, batch: LossBatch):
        """(B, T): trust-region SFT on prefix tokens of TrSFT rows, 0 on other prefix tokens, -A * rho elsewhere."""
        own, prefix_mask = unclipped_token_loss(logps, old_logps, advantages), batch.prefix_mask
        sft_demo = batch.demo_of_rows(self.sft_rows_key)  # (B, T); none in evaluation batches
        sft = trust_region_sft_token_loss(logps, self.args.trapo_trust_region_alpha) * sft_demo
        ratio = torch.where(prefix_mask, torch.ones_like(logps), torch.exp(logps - old_logps)).detach()
        return torch.where(prefix_mask, sft, own), ratio

    def _rank_states(self) -> list[RankState]:
        """The parent's states and the escalation levels (the same on every rank)."""
        escalation = RankState(
            LEVELS_FILE, "TRAPO escalation state", self.escalation.state_dict, self.escalation.load_state_dict
        )
        return [*super()._rank_states(), escalation]
