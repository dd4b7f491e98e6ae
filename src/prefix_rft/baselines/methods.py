"""Every method the project trains, by name: `METHODS[name] = Method(config class, trainer class, stages, presets,
uses_demos)`.

`prefix-rft train --method NAME` (recipes/train.py) parses the method's config class and runs its stages in order:
`"rl"` trains its trainer class on the prompts (and demos), `"sft"` trains TRL's SFTTrainer on the demonstrations,
`"sft_best"` the same with early stopping on held-out rows. A method's own options are the fields its config class
adds to `PrefixRFTConfig`; `presets` are settings the method fixes. `prefix-rft compare` and `protocol`
(recipes/toy_methods.py) read the same entries. A new method is one entry here (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from transformers import TrainingArguments

from prefix_rft.baselines.chord import ChordConfig, ChordTrainer
from prefix_rft.baselines.demo_rows import FullDemoRows
from prefix_rft.baselines.hpt import HptConfig, HptTrainer
from prefix_rft.baselines.luffy import LuffyConfig, LuffyTrainer
from prefix_rft.baselines.relift import ReliftConfig, ReliftTrainer
from prefix_rft.baselines.rl_sft import RLWithSFTConfig, RLWithSFTTrainer
from prefix_rft.baselines.srft import SrftConfig, SrftTrainer
from prefix_rft.baselines.trapo import TrapoConfig, TrapoTrainer
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.trainer import PrefixRFTTrainer

STAGES = ("rl", "sft", "sft_best")
# PrefixRFTConfig fields an SFT-only run has a use for although TrainingArguments lacks them.
_SFT_USES = {"model_init_kwargs", "trust_remote_code", "overwrite_output_dir", "validate_dataset"}
# Fields PrefixRFTConfig.__post_init__ derives from others: set away from their declared defaults in every config.
_DERIVED = {"prefix_seed", "prefix_entropy_scope", "steps_per_generation", "generation_batch_size"}


def rl_only_fields() -> list[str]:
    """Fields of PrefixRFTConfig that only act on RL training (rollouts, rewards, prefixes, the policy loss)."""
    trainer_fields = {f.name for f in fields(TrainingArguments)}
    return [f.name for f in fields(PrefixRFTConfig) if f.name not in trainer_fields | _SFT_USES | _DERIVED]


@dataclass
class SFTMethodConfig(PrefixRFTConfig):
    """SFT on the demonstrations: TrainingArguments' fields (learning_rate, max_steps, batch size, ...) apply to it;
    the RL fields of PrefixRFTConfig have no use (`refused_options`)."""

    learning_rate: float = field(default=5e-5, metadata={"help": "SFT learning rate (the paper's SFT: 5e-5)."})
    # Unused by SFT; chosen so that GRPOConfig's batch checks pass for any batch size.
    num_generations: int = field(default=2, metadata={"help": "Unused: method 'sft' generates nothing."})
    steps_per_generation: int | None = field(default=2, metadata={"help": "Unused: method 'sft' generates nothing."})


@dataclass
class SFTThenRFTConfig(PrefixRFTConfig):
    """SFT on the demonstrations (stage 1: the `sft_*` fields), then RFT from its model (stage 2: the others)."""

    num_hybrid: int = field(default=0, metadata={"help": "Stage 2 is plain on-policy RFT (Dr. GRPO): must stay 0."})
    sft_learning_rate: float = field(default=5e-5, metadata={"help": "Stage 1 (SFT) learning rate."})
    sft_max_steps: int = field(
        default=-1, metadata={"help": "Stage 1 optimizer steps; -1: sft_num_train_epochs over the demonstrations."}
    )
    sft_num_train_epochs: float = field(default=1.0, metadata={"help": "Stage 1 epochs when sft_max_steps is -1."})
    sft_per_device_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Stage 1 demonstrations per device and step; null: the questions per device of stage 2."},
    )


@dataclass
class SFTBestThenRFTConfig(SFTThenRFTConfig):
    """SFT stopped at its best validation reward (arXiv 2604.23747), then RFT."""

    sft_eval_steps: int = field(default=50, metadata={"help": "Stage 1 steps between validation scores."})
    sft_patience: int = field(default=3, metadata={"help": "Validation scores without improvement before it stops."})
    sft_validation_rows: int = field(
        default=64,
        metadata={
            "help": "Training rows held out of both stages (the last ones); scored by the reward functions on one "
            "greedy completion each."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("sft_eval_steps", "sft_patience", "sft_validation_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range; expected >= 1")


class Method(NamedTuple):
    """A trainable method: its config class, the trainer class of its RL stage, its stages in order, the settings it
    fixes (a config that sets them otherwise is refused), and whether it trains on or shows any demonstration."""

    config: type[PrefixRFTConfig]
    trainer: type | None
    stages: tuple[str, ...]
    presets: dict[str, Any] = {}
    uses_demos: bool = True

    @property
    def num_hybrid(self) -> int:
        """Hybrid slots per group of its RL stage: its preset, else its config class's default."""
        return self.presets.get("num_hybrid", next(f.default for f in fields(self.config) if f.name == "num_hybrid"))

    def draws_prefix(self, num_hybrid: int | None = None) -> bool:
        """Its RL stage draws a demo prefix for its hybrid slots, so the prefix-ratio schedule acts on it; a
        whole-demo slot (`FullDemoRows`) draws none, and with no hybrid slot (num_hybrid=0: rft, sft_rft, sft_best_rft,
        relift) there is none to draw for: both refuse the schedule's options. `num_hybrid`: the run's, after any
        override (None: the method's own)."""
        num_hybrid = self.num_hybrid if num_hybrid is None else num_hybrid
        return self.trainer is not None and not issubclass(self.trainer, FullDemoRows) and num_hybrid > 0

    def conflicts(self, settings: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """{option: (preset, setting)} for each option of `settings` that the method fixes to another value."""
        return {o: (v, settings[o]) for o, v in self.presets.items() if o in settings and settings[o] != v}


def _preset(**settings: Any) -> Method:
    """A Prefix-RFT option preset (paper §6 ablations, compare's variants)."""
    return Method(PrefixRFTConfig, PrefixRFTTrainer, ("rl",), settings)


METHODS: dict[str, Method] = {
    "prefix_rft": Method(PrefixRFTConfig, PrefixRFTTrainer, ("rl",)),
    "rft": Method(PrefixRFTConfig, PrefixRFTTrainer, ("rl",), {"num_hybrid": 0}, uses_demos=False),
    "sft": Method(SFTMethodConfig, None, ("sft",)),
    "sft_rft": Method(SFTThenRFTConfig, PrefixRFTTrainer, ("sft", "rl"), {"num_hybrid": 0}),
    "sft_best_rft": Method(SFTBestThenRFTConfig, PrefixRFTTrainer, ("sft_best", "rl"), {"num_hybrid": 0}),
    "rl_sft": Method(RLWithSFTConfig, RLWithSFTTrainer, ("rl",)),
    "luffy": Method(LuffyConfig, LuffyTrainer, ("rl",)),
    "relift": Method(ReliftConfig, ReliftTrainer, ("rl",)),
    # The family's leading methods (docs/fidelity.md#chord to #trapo); CHORD is CHORD-phi (mu constant 0.1, phi on)
    "chord": Method(ChordConfig, ChordTrainer, ("rl",)),
    "hpt": Method(HptConfig, HptTrainer, ("rl",)),
    "srft": Method(SrftConfig, SrftTrainer, ("rl",)),
    # TRAPO guides a question's later micro-groups in the step its first rollouts fail (trapo_escalation=in_step)
    "trapo": Method(TrapoConfig, TrapoTrainer, ("rl",)),
    # Prefix-RFT ablations (paper §6, Table 8)
    "prefix_rft_select_all": _preset(prefix_entropy_selection="all"),
    "prefix_rft_freeze_prefix": _preset(prefix_entropy_selection="none"),
    "prefix_rft_random": _preset(prefix_entropy_selection="random"),
    "prefix_rft_lowest": _preset(prefix_entropy_selection="lowest"),
    "prefix_rft_keep0.5": _preset(prefix_entropy_keep_fraction=0.5),
    "prefix_rft_keep0.8": _preset(prefix_entropy_keep_fraction=0.8),
    "prefix_rft_uniform": _preset(prefix_ratio_schedule="constant"),
    "prefix_rft_paper_adv": _preset(prefix_advantage="paper"),
    # The demo prefix as a hint in the prompt, never trained (QuestA; docs/fidelity.md#hint-placement)
    "prefix_rft_prompt_hint": _preset(prefix_placement="prompt"),
    # Per-question guidance: SEELE's adaptive ratio, BREAD's rescue
    # (docs/fidelity.md#per-question-ratio, #per-question-rescue)
    "prefix_rft_adaptive": _preset(prefix_success_target=0.5),
    "prefix_rft_rescue": _preset(prefix_rescue_max_success=0.0),
}


def own_options(name: str) -> set[str]:
    """The fields method `name`'s config class adds to PrefixRFTConfig."""
    base = {f.name for f in fields(PrefixRFTConfig)}
    return {f.name for f in fields(METHODS[name].config)} - base


def refused_options(name: str) -> dict[str, str]:
    """Option -> why method `name` refuses it: other methods' own option, or an RL option of an SFT-only method."""
    mine = {f.name for f in fields(METHODS[name].config)}
    owners: dict[str, list[str]] = {}
    for other in METHODS:
        for option in sorted(own_options(other) - mine):
            owners.setdefault(option, []).append(repr(other))
    refused = {option: f"options of method {', '.join(names)}" for option, names in owners.items()}
    if "rl" not in METHODS[name].stages:
        refused |= dict.fromkeys(rl_only_fields(), "RL options, and this method generates nothing")
    return refused


def check_presets(name: str, config: PrefixRFTConfig) -> None:
    """Refuse a config that sets a field method `name` fixes to another value."""
    presets = METHODS[name].presets
    for option, (value, got) in METHODS[name].conflicts({o: getattr(config, o) for o in presets}).items():
        raise ValueError(f"method {name!r} sets {option}={value!r}; got {option}={got!r}")
