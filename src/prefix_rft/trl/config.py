"""`PrefixRFTConfig`: GRPOConfig plus the `prefix_*` fields of Prefix-RFT, with the paper's defaults (fidelity.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from trl import GRPOConfig

from prefix_rft.core.advantages import AdvantageMode, ScaleRewards
from prefix_rft.core.entropy import EntropyScope, SelectionMode
from prefix_rft.core.loss import LOSS_TYPES, LossType
from prefix_rft.core.prefix import DemoPart
from prefix_rft.core.schedule import Constant, Delay, PrefixRatioSampler, ScheduleKind, make_controller
from prefix_rft.data.annotations import field_choices, field_types, is_instance, type_names
from prefix_rft.trl.fields import (
    REFUSED_GRPO_FIELDS,
    REFUSED_LOSS_TYPES,
    RENAMED_FIELDS,
    RENAMED_SCOPES,
    check_hybrid_count,
    refuse_hybrid_options,
)

# The choices of the string fields: each field is typed with its Literal, which `--help` lists and
# `_check_choices` enforces (core's Literals for the options core reads).
Placement = Literal["response", "prompt"]
SamplerCorrection = Literal["continuation", "row"]
ScheduleUnit = Literal["rollout_batch", "optimizer_step"]
BonusScope = Literal["all", "continuation"]
SteerRows = Literal["on_policy", "hybrid"]
GRPO_DEFAULTS = {f.name: f.default for f in fields(GRPOConfig)}
DEFAULT_RATIO_STEP = 0.2  # per-question controller: 0 successes at a target of 0.5 raise the ratio by 0.1


# Allowed ranges (low, high, as the error states it) of the prefix_* fields and the TRL fields the trainer relies on.
_INF = float("inf")
RANGES: dict[str, tuple[float, float, str]] = {
    "num_generations": (2, _INF, ">= 2 (advantages compare the rollouts of a group)"),
    "max_completion_length": (1, _INF, ">= 1"),
    "max_prompt_length": (1, _INF, ">= 1, or null for the model's context"),
    "per_device_train_batch_size": (1, _INF, ">= 1"),
    "gradient_accumulation_steps": (1, _INF, ">= 1"),
    "steps_per_generation": (1, _INF, ">= 1"),
    "num_iterations": (1, _INF, ">= 1"),
    "temperature": (1e-8, _INF, "> 0"),
    "learning_rate": (0, _INF, ">= 0"),
    "beta": (0, _INF, ">= 0"),
    "epsilon": (0, _INF, ">= 0"),
    "epsilon_high": (0, _INF, ">= 0"),
    "prefix_ratio_floor_start": (0, 1, "[0, 1]"),
    "prefix_ratio_floor_end": (0, 1, "[0, 1]"),
    "prefix_ratio_ceiling": (0, 1, "[0, 1]"),
    "prefix_ratio_decay_steps": (1, _INF, ">= 1"),
    "prefix_ratio_warmup_ratio": (0, 1 - 1e-12, "[0, 1)"),
    "prefix_ratio_delay_steps": (0, _INF, ">= 0"),
    "prefix_ratio_alpha": (1e-12, _INF, "> 0 (a Beta distribution shape)"),
    "prefix_ratio_beta": (1e-12, _INF, "> 0 (a Beta distribution shape)"),
    "prefix_min_len": (0, _INF, ">= 0"),
    "prefix_entropy_keep_fraction": (1e-12, 1, "(0, 1]"),
    "prefix_success_target": (0, 1, "[0, 1], or null for the schedule"),
    "prefix_ratio_step": (1e-12, 1, "(0, 1]"),
    "prefix_rescue_max_success": (0, 1, "[0, 1], or null to rescue every question"),
    "dual_clip": (1 + 1e-12, _INF, "> 1 (dual-clip PPO), or null to disable"),
    "max_consecutive_nonfinite_steps": (1, _INF, ">= 1"),
}


@dataclass
class PrefixRFTConfig(GRPOConfig):
    """Configuration for `PrefixRFTTrainer`.

    Inherits every GRPOConfig option. Two defaults differ from GRPOConfig's, because Prefix-RFT trains with Dr. GRPO:
    `loss_type="dr_grpo"` and `scale_rewards="none"`. The fields it adds, by section (each field's `help` says what
    it does; `RANGES` and the Literal annotations give the values it takes):

    > Schedule: how many rows of a group are hybrids, and the prefix ratio each draws
        num_hybrid, prefix_ratio_schedule, prefix_ratio_floor_start, prefix_ratio_floor_end, prefix_ratio_decay_steps,
        prefix_ratio_warmup_ratio, prefix_ratio_delay_steps, prefix_ratio_ceiling, prefix_ratio_alpha,
        prefix_ratio_beta, prefix_min_len, prefix_schedule_unit, prefix_seed
    > Selection: the advantage of prefix tokens, which of them keep it, and their loss
        prefix_advantage, prefix_entropy_keep_fraction, prefix_entropy_selection, prefix_entropy_scope,
        dual_clip, prefix_entropy_bonus_scope
    > Per-question guidance: a prefix ratio per question, or a prefix only for questions the policy fails
        prefix_success_target, prefix_ratio_step, prefix_success_rows, prefix_rescue_max_success
    > Placement: where the prefix goes, and prefixes or demos longer than their token budget
        prefix_placement, prefix_demo_part, prefix_sampler_correction, prefix_truncate_long_demos, max_prompt_length
    > Robustness: bad data, non-finite steps, partly scored rows, an output folder holding another run
        validate_dataset, max_consecutive_nonfinite_steps, strict_rewards, overwrite_output_dir
    > Renamed: refused, the error names the field that replaces it
        allow_partial_rewards, prefix_dual_clip
    """

    # ---- GRPOConfig fields with Prefix-RFT's defaults
    # Dr. GRPO (fidelity.md#hybrid-advantage, #loss-aggregation): no std scaling, token sum over a constant.
    loss_type: LossType = field(
        default="dr_grpo",
        metadata={"help": "'dr_grpo' (paper), 'grpo', 'dapo', 'bnpo' or 'luspo'; prefix tokens count as trained."},
    )
    scale_rewards: ScaleRewards = field(
        default="none",
        metadata={"help": "'none' (paper, Dr. GRPO), or divide every advantage by the std of the 'group' or 'batch'."},
    )

    # ---- Schedule: how many hybrid rows, and the prefix ratio each draws
    num_hybrid: int = field(
        default=1, metadata={"help": "Rollouts per group guided by a demo prefix (paper: 1; all: SEELE, QuestA)."}
    )
    prefix_ratio_schedule: ScheduleKind = field(
        default="cosine",
        metadata={
            "help": "Floor schedule: 'cosine', 'linear', or 'constant' (floor = end from step 0: uniform ablation)."
        },
    )
    prefix_ratio_floor_start: float = field(default=0.95, metadata={"help": "Floor of the prefix ratio at step 0."})
    prefix_ratio_floor_end: float = field(default=0.05, metadata={"help": "Floor once the schedule has decayed."})
    prefix_ratio_decay_steps: int = field(
        default=500, metadata={"help": "Schedule steps (prefix_schedule_unit) over which the floor decays."}
    )
    prefix_ratio_warmup_ratio: float = field(default=0.0, metadata={"help": "Warm-up share of the decay steps."})
    prefix_ratio_delay_steps: int = field(default=0, metadata={"help": "Steps to hold the floor at its start value."})
    prefix_ratio_ceiling: float = field(default=0.95, metadata={"help": "Upper bound of the prefix ratio."})
    prefix_ratio_alpha: float = field(
        default=1.0,
        metadata={
            "help": "a of the Beta(a, b) the ratio is drawn from within [floor, ceiling]; a > b leans to the "
            "ceiling (longer prefixes); a = b = 1 is uniform."
        },
    )
    prefix_ratio_beta: float = field(
        default=1.0,
        metadata={
            "help": "b of the Beta(a, b) the ratio is drawn from within [floor, ceiling]; b > a leans to the "
            "floor (shorter prefixes); a = b = 1 is uniform."
        },
    )
    prefix_min_len: int = field(
        default=0, metadata={"help": "Minimum prefix length in tokens (reference min_prefix_len)."}
    )
    prefix_schedule_unit: ScheduleUnit = field(
        default="rollout_batch",
        metadata={
            "help": "What advances the prefix-ratio floor: 'rollout_batch' (once per generation batch, as the "
            "reference) or 'optimizer_step'. They agree when steps_per_generation == gradient_accumulation_steps "
            "and num_iterations == 1."
        },
    )
    prefix_seed: int | None = field(
        default=None, metadata={"help": "Seed of prefix draws (ratio, demo choice); defaults to `seed`."}
    )

    # ---- Selection: the advantage and loss of prefix tokens
    prefix_advantage: AdvantageMode = field(
        default="reference",
        metadata={"help": "'reference' (authors' dr_grpo_prefix, n=1) or 'paper' (one shared advantage, Eq. 3)."},
    )
    prefix_entropy_keep_fraction: float = field(
        default=0.2, metadata={"help": "Share of prefix tokens, by highest entropy, that keep their advantage."}
    )
    prefix_entropy_selection: SelectionMode = field(
        default="top", metadata={"help": "'top' (method), or ablations 'all', 'none', 'random', 'lowest'."}
    )
    prefix_entropy_scope: EntropyScope | None = field(
        default=None,
        metadata={
            "help": "Prefix tokens the top-entropy share is taken over: 'optimizer_step' (every micro-batch of the "
            "optimizer step on all ranks: the paper's mini-batch), 'global_micro_batch' (one accumulation "
            "micro-batch on all ranks) or 'local_micro_batch' (one micro-batch of one rank: the reference code). "
            "null: 'optimizer_step' where steps_per_generation is a multiple of gradient_accumulation_steps, else "
            "'global_micro_batch' (warned, and logged as prefix/entropy_scope_fallback=1)."
        },
    )
    dual_clip: float | None = field(
        default=3.0,
        metadata={
            "help": "Dual-clip c: the loss of every token with a negative advantage, prefix or continuation, is "
            "bounded at c x its advantage (reference 3.0); null disables it."
        },
    )
    prefix_entropy_bonus_scope: BonusScope = field(
        default="all", metadata={"help": "Tokens the entropy bonus (entropy_coef) acts on: 'all' or 'continuation'."}
    )

    # ---- Per-question guidance (docs/fidelity.md#per-question-ratio, #per-question-rescue). A question's evidence is
    # the on-policy success rate of its latest group, kept per `id` column (else per prompt hash) and checkpointed; an
    # unseen question follows the paper.
    prefix_success_target: float | None = field(
        default=None,
        metadata={
            "help": "Adaptive prefix ratio (after SEELE): after each visit a question's ratio moves by "
            "prefix_ratio_step * (target - its on-policy success), within [floor_end, ceiling]; null: the schedule."
        },
    )
    prefix_ratio_step: float = field(
        default=DEFAULT_RATIO_STEP, metadata={"help": "Change of a question's prefix ratio per unit of success error."}
    )
    prefix_success_rows: SteerRows = field(  # 'on_policy': rows the ratio does not act on; 'hybrid': a closed loop
        default="on_policy", metadata={"help": "Rows whose success moves the adaptive ratio: 'on_policy' or 'hybrid'."}
    )
    prefix_rescue_max_success: float | None = field(
        default=None,
        metadata={
            "help": "Rescue (after BREAD): a question's hybrid slots carry a prefix only while its last on-policy "
            "success is at most this (0: only after a group that all failed), else run on-policy; null: always."
        },
    )

    # ---- Placement: where the prefix goes, and prefixes or demos longer than their token budget
    prefix_placement: Placement = field(
        default="response",
        metadata={
            "help": "Where a hybrid row's demo prefix goes: 'response' (Prefix-RFT: it starts the completion and is "
            "trained) or 'prompt' (QuestA: a hint appended to the question, never trained; "
            "docs/fidelity.md#hint-placement)."
        },
    )
    prefix_demo_part: DemoPart = field(
        default="whole",
        metadata={
            "help": "The demo text a hybrid row reveals a share of: 'whole', or 'after_think' (QuestA: after the last "
            "</think>, the reasoning trace dropped; under 10 characters, no prefix and the row runs unguided)."
        },
    )
    prefix_sampler_correction: SamplerCorrection = field(
        default="continuation",
        metadata={
            "help": "How TRL's vLLM importance-sampling correction (vllm_importance_sampling_mode) treats a hybrid's "
            "demo tokens: 'continuation' (ratio 1, never masked; the ratio is the sampled continuation's) or 'row' "
            "(TRL's own: a sequence ratio, or its mask, weights the whole row; docs/fidelity.md#sampler-correction)."
        },
    )
    prefix_truncate_long_demos: bool = field(
        default=False,
        metadata={"help": "Cut demos longer than max_completion_length (counted) instead of refusing the dataset."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Token budget for prompt + demo prefix; longer prefixes are cut (counted), never the prompt."
        },
    )

    # ---- Robustness: bad data, non-finite steps, rewards, output folder
    validate_dataset: bool = field(default=True, metadata={"help": "Check every training row before training."})
    max_consecutive_nonfinite_steps: int = field(
        default=3, metadata={"help": "Stop after this many optimizer steps in a row with NaN/inf loss or gradients."}
    )
    strict_rewards: bool = field(
        default=False,
        metadata={
            "help": "Stop the run, naming the function, when a reward function returns None for a row another "
            "function scored. By default (TRL's contract) such a row's reward sums the functions that scored it."
        },
    )
    allow_partial_rewards: bool | None = field(
        default=None, metadata={"help": "Refused (renamed): partly scored rows train by default; see strict_rewards."}
    )
    prefix_dual_clip: float | None = field(
        default=None, metadata={"help": "Refused (renamed dual_clip: it bounds every token, not only prefix tokens)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an output_dir holding another run's checkpoints (they are deleted)."},
    )

    def __post_init__(self) -> None:
        # TRL's booleans: True is its default per-group std scaling, False none (GRPOConfig.__post_init__)
        if isinstance(self.scale_rewards, bool):
            self.scale_rewards = "group" if self.scale_rewards else "none"
        self._check_ranges()  # first: a wrong type or range would otherwise fail inside TRL or numpy, unnamed
        refuse_hybrid_options(self)  # before `prefix_seed` and `prefix_entropy_scope` are filled in from other fields
        self._refuse_unsupported()  # before TRL's checks, so these errors give our reason
        super().__post_init__()
        self._check_choices()
        check_hybrid_count(self)  # no on-policy row is left only where the settings need none
        self._check_question_guidance()
        if self.prefix_seed is None:
            self.prefix_seed = self.seed

    def _check_ranges(self) -> None:
        """Refuse a field of the wrong type (a YAML value reaches the dataclass unconverted) or out of its range."""
        for name, allowed in field_types(type(self)).items():
            value = getattr(self, name)
            # None means unset: argparse gives it to fields whose annotation omits None (e.g. `debug`).
            if name == "resume_from_checkpoint" and isinstance(value, bool):
                continue  # transformers' annotation says str, but True (the latest checkpoint) is how users pass it
            if value is not None and not is_instance(value, allowed):
                raise ValueError(f"{name} must be {type_names(allowed)}, got {value!r} ({type(value).__name__})")
        for name, (low, high, allowed_range) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not (low <= value <= high):
                raise ValueError(f"{name}={value!r} is out of range; expected {allowed_range}")
        # The floors the schedule reaches: 'constant' starts at the end value unless a delay holds the start one.
        floors = ["prefix_ratio_floor_end"]
        if self.prefix_ratio_schedule != "constant" or self.prefix_ratio_delay_steps:
            floors.insert(0, "prefix_ratio_floor_start")
        floor = max(getattr(self, name) for name in floors)
        if self.prefix_ratio_ceiling < floor:
            raise ValueError(
                f"prefix_ratio_ceiling={self.prefix_ratio_ceiling!r} is below the floor ({floor!r}); expected "
                f"prefix_ratio_ceiling >= {' and >= '.join(floors)}"
            )
        if self.max_steps == 0:
            raise ValueError("max_steps=0 trains nothing; expected a positive number of steps, or -1 for epochs")

    def _refuse_unsupported(self) -> None:
        """Refuse GRPOConfig options that have no Prefix-RFT meaning (trl/fields.py gives each reason)."""
        for name, reason in REFUSED_GRPO_FIELDS.items():
            value = getattr(self, name, GRPO_DEFAULTS.get(name))  # an older transformers may lack the field
            if value != GRPO_DEFAULTS.get(name):
                raise ValueError(f"{name}={value!r} is not supported by PrefixRFTTrainer: {reason}")
        if self.loss_type in REFUSED_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} is not supported by PrefixRFTTrainer: "
                f"{REFUSED_LOSS_TYPES[self.loss_type]}; use one of {LOSS_TYPES}"
            )

    def _check_choices(self) -> None:
        for name, advice in RENAMED_FIELDS.items():
            if getattr(self, name) is not None:
                raise ValueError(f"{name} was renamed: {advice}")
        if self.prefix_entropy_scope in RENAMED_SCOPES:
            raise ValueError(
                f"prefix_entropy_scope={self.prefix_entropy_scope!r} was renamed: use "
                f"{RENAMED_SCOPES[self.prefix_entropy_scope]!r} for the same behaviour, or 'optimizer_step' for the "
                "paper's mini-batch (docs/fidelity.md#entropy-scope)"
            )
        for name, allowed in field_choices(type(self)).items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; expected one of {allowed}")
        self._choose_entropy_scope()

    def _choose_entropy_scope(self) -> None:
        """Resolve an unset `prefix_entropy_scope`: the paper's 'optimizer_step' where every optimizer step lies
        inside one generation batch, else 'global_micro_batch' (`entropy_scope_fallback`); refuse an explicit
        'optimizer_step' the layout cannot give."""
        whole_steps = self.steps_per_generation % self.gradient_accumulation_steps == 0
        self.entropy_scope_fallback = self.prefix_entropy_scope is None and not whole_steps
        if self.prefix_entropy_scope is None:
            self.prefix_entropy_scope = "optimizer_step" if whole_steps else "global_micro_batch"
        if self.prefix_entropy_scope == "optimizer_step" and not whole_steps:
            raise ValueError(
                f"prefix_entropy_scope='optimizer_step' needs every optimizer step inside one generation batch: "
                f"steps_per_generation ({self.steps_per_generation}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}); or use 'global_micro_batch'"
            )

    def _check_question_guidance(self) -> None:
        """Refuse per-question settings that would have no effect (with num_hybrid=0: `refuse_hybrid_options`)."""
        for name, default in (("prefix_ratio_step", DEFAULT_RATIO_STEP), ("prefix_success_rows", "on_policy")):
            if self.prefix_success_target is None and getattr(self, name) != default:
                raise ValueError(f"{name} acts only with prefix_success_target (the adaptive prefix ratio)")
        self._check_sampler_correction()

    def _check_sampler_correction(self) -> None:
        """Refuse `prefix_sampler_correction` away from its default where TRL applies no vLLM correction to weigh."""
        if self.prefix_sampler_correction != "continuation" and not (
            self.use_vllm and self.vllm_importance_sampling_correction
        ):
            raise ValueError(
                f"prefix_sampler_correction={self.prefix_sampler_correction!r} has no effect: it says how TRL's vLLM "
                "importance-sampling weight treats demo tokens, and there is none without use_vllm=True and "
                "vllm_importance_sampling_correction=True"
            )

    def micro_steps_per_rollout(self) -> int:
        """Micro-batches trained on one generation batch (TRL regenerates after this many)."""
        return self.steps_per_generation * self.num_iterations

    def prefix_sampler(self) -> PrefixRatioSampler:
        """The prefix-ratio sampler these settings describe."""
        # 'constant' holds the floor at its end value from step 0: the uniform-window ablation U[end, ceiling].
        start = (
            self.prefix_ratio_floor_end if self.prefix_ratio_schedule == "constant" else self.prefix_ratio_floor_start
        )
        floor = make_controller(
            self.prefix_ratio_schedule,
            start,
            self.prefix_ratio_floor_end,
            self.prefix_ratio_decay_steps,
            self.prefix_ratio_warmup_ratio,
        )
        if self.prefix_ratio_delay_steps:
            floor = Delay(floor, self.prefix_ratio_delay_steps, self.prefix_ratio_floor_start)
        return PrefixRatioSampler(
            floor, Constant(self.prefix_ratio_ceiling), self.prefix_ratio_alpha, self.prefix_ratio_beta
        )
