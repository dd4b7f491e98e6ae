"""`RunSettings`: every setting of a run on the embedded task, defined once; its fields are the flags of
`prefix-rft demo` and `prefix-rft compare`, parsed by TRL's parser (as `prefix-rft train` parses its config)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from trl import TrlParser

from prefix_rft.setup_errors import check_output_dir
from prefix_rft.tasks import BaseModelConfig
from prefix_rft.tasks.arithmetic import DEMO_STYLES
from prefix_rft.trl.config import PrefixRFTConfig


def _opt(default: Any, help_: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help_, **metadata})


@dataclass
class RunSettings:
    """Settings shared by every method of a run; `extra` and `base_overrides` are derived from `rl_set`/`base_set`."""

    steps: int = _opt(100, "optimizer steps of every method")
    prompts_per_step: int = _opt(16, "questions per optimizer step (each with num_generations rollouts)")
    num_generations: int = _opt(8, "rollouts per question")
    # Below the evaluation budget on purpose: the longest train demo is 100 tokens with EOS, and one rollout that
    # rambles on to the full budget stalls its whole batch. Dr. GRPO divides the loss by it, so it scales the loss.
    max_completion_length: int = _opt(128, "RL rollout cap in tokens (evaluation always allows the full budget)")
    learning_rate: float = _opt(3e-5, "RL learning rate (1e-4 cost RFT and Prefix-RFT 7-10 test points)")
    sft_learning_rate: float = _opt(5e-4, "SFT learning rate")
    eval_problems: int = _opt(256, "evaluation problems per split at the end")
    eval_k: int = _opt(4, "samples per evaluation problem (avg@k, pass@k)")
    curve_every: int = _opt(20, "optimizer steps between accuracy-curve points")
    curve_problems: int = _opt(64, "problems per split at each accuracy-curve point")
    relift_sft_batch: int = _opt(16, "ReLIFT: buffered questions per SFT step")
    sft_eval_every: int = _opt(5, "sft_best_rft: SFT steps between validation evaluations (avg@1)")
    sft_patience: int = _opt(3, "sft_best_rft: evaluations without improvement before SFT stops")
    sft_val_problems: int = _opt(128, "sft_best_rft: held-out training-split questions it validates on")
    select_best: bool = _opt(
        False,
        "model selection: score avg@1 on the `sft_val_problems` held-out questions at the start of each training "
        "stage and every `curve_every` of its steps, and restore the best weights before the final evaluation "
        "(prefix-rft protocol sets it for every method)",
    )
    question_epochs: int = _opt(
        1,
        "passes over the training questions: steps * prompts_per_step / question_epochs distinct ones, each seen "
        "that many times (per-question guidance acts from a question's second visit)",
    )
    evaluate_on: str = _opt(
        "test",
        "what curves and the final evaluation score: the test and OOD splits, or held-out training "
        "questions (`validation`, for tuning: it never touches test or OOD)",
        choices=("test", "validation"),
    )
    demo_style: str = _opt("steps", "demonstrator of the training rows and the base's corpus", choices=DEMO_STYLES)
    rl_set: list[str] = field(
        default_factory=list,
        metadata={"help": "FIELD=VALUE overrides of PrefixRFTConfig for every RL method", "action": "extend"},
    )
    base_set: list[str] = field(
        default_factory=list,
        metadata={
            "help": "FIELD=VALUE overrides of the base model's BaseModelConfig (its own cache)",
            "action": "extend",
        },
    )
    base_size: str | None = _opt(None, "base model size (default: the embedded task's)")
    base_steps: int | None = _opt(None, "base pretraining steps (default: the task's)")
    cache_dir: str | None = _opt(None, "base-model cache (default $PREFIX_RFT_CACHE or ~/.cache/prefix_rft)")
    rebuild_base: bool = _opt(False, "pretrain the base model anew (minutes) instead of using the shipped one")
    extra: dict[str, Any] = field(default_factory=dict, init=False)  # PrefixRFTConfig overrides, from rl_set
    base_overrides: dict[str, Any] = field(default_factory=dict, init=False)  # BaseModelConfig fields, from base_set

    def __post_init__(self) -> None:
        check_counts(self)
        if self.question_epochs < 1 or self.steps % self.question_epochs:
            raise SystemExit(f"question_epochs must divide steps ({self.steps}), got {self.question_epochs}")
        if self.evaluate_on not in ("test", "validation"):
            raise SystemExit(f"evaluate_on must be 'test' or 'validation', got {self.evaluate_on!r}")
        rl_pairs = [field_setting(text) for text in self.rl_set]
        check_fields("--rl-set", rl_pairs, PrefixRFTConfig)
        self.extra = dict(rl_pairs)
        base_pairs = [field_setting(text) for text in self.base_set]
        self.base_overrides = base_overrides(base_pairs, model_size=self.base_size, steps=self.base_steps)


# Counts that must be at least 1 (0 or a negative number would train, score or stop on nothing), and rates that must
# be positive: refused when parsed, before the base model loads.
COUNTS = (
    "steps",
    "prompts_per_step",
    "num_generations",
    "eval_problems",
    "eval_k",
    "curve_every",
    "curve_problems",
    "relift_sft_batch",
    "sft_eval_every",
    "sft_patience",
    "sft_val_problems",
)
RATES = ("learning_rate", "sft_learning_rate")


def check_counts(settings: RunSettings) -> None:
    """Exit naming the first count below 1 (`COUNTS`, and `base_steps` when given) or rate not above 0 (`RATES`)."""
    counts = [(name, getattr(settings, name)) for name in COUNTS]
    if settings.base_steps is not None:
        counts.append(("base_steps", settings.base_steps))
    for name, value in counts:
        if value < 1:
            raise SystemExit(f"--{name} must be a positive integer, got {value}")
    for name in RATES:
        value = getattr(settings, name)
        if not 0 < value < float("inf"):
            raise SystemExit(f"--{name} must be a positive number, got {value:g}")


def parse_settings(argv: list[str] | None, *others: type, prog: str) -> tuple:
    """(RunSettings, *others) from the command line; `others` are the command's own dataclasses."""
    parser = TrlParser((*others, RunSettings), prog=prog)
    parsed = parser.parse_args_into_dataclasses(argv)
    return (parsed[-1], *parsed[:-1])


def check_run_paths(settings: RunSettings, output_dir: str) -> None:
    """The output folder and the base-model cache can be written, before any run starts."""
    check_output_dir("--output_dir", output_dir)
    if settings.cache_dir is not None:
        check_output_dir("--cache_dir", settings.cache_dir)


def require_test_scoring(settings: RunSettings, prog: str) -> None:
    """Exit unless `settings` score the test and OOD splits: only `prefix-rft protocol` sets validation, per stage."""
    if settings.evaluate_on != "test":
        raise SystemExit(f"{prog} scores the test and OOD splits; --evaluate_on validation is prefix-rft protocol's")


def field_setting(text: str) -> tuple[str, Any]:
    """`FIELD=VALUE` -> (FIELD, VALUE), VALUE read as JSON when it parses (numbers, true, null), else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"expected FIELD=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def check_fields(flag: str, settings: list[tuple[str, Any]], config_cls: type) -> None:
    """Exit naming the fields of `settings` that `config_cls` does not have."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = [name for name, _ in settings if name not in known]
    if unknown:
        raise SystemExit(f"{flag}: {config_cls.__name__} has no settable field(s) {unknown}")


def base_overrides(pairs: list[tuple[str, Any]], **explicit: Any) -> dict[str, Any]:
    """BaseModelConfig overrides from `--base-set` pairs, then `explicit` ones (None = not given), each cast to its
    field's type (`8.0` -> 8, so equal values name the same cache) and dropped when equal to the default (so a run
    that sets a default matches one that does not)."""
    if any(name == "task" for name, _ in pairs):
        raise SystemExit("--base-set: the base's task is set by --demo-style, not by --base-set task=...")
    check_fields("--base-set", pairs, BaseModelConfig)
    defaults = BaseModelConfig()
    merged = {**dict(pairs), **{k: v for k, v in explicit.items() if v is not None}}
    result = {}
    for name, value in merged.items():
        default = getattr(defaults, name)
        kind = type(default)
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise SystemExit(f"--base-set: {name} must be a {kind.__name__} like {default!r}, got {value!r}")
        if value != default:
            result[name] = value
    try:
        BaseModelConfig(**result)
    except ValueError as error:
        raise SystemExit(f"base model: {error}") from error
    return result
