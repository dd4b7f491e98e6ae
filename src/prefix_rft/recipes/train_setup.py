"""What `prefix-rft train` sets up before training: its arguments, the model, the datasets and the RL trainer.

The parser holds what `trl grpo` parses (ScriptArguments + `reward_funcs`, GRPOConfig, ModelConfig, a dataset
mixture), with `PrefixRFTConfig` in place of GRPOConfig and a few fields of ours: `dataset_format`, `dataset_limit`,
`reward` and the embedded task's (docs/from_trl.md). Both the one-stage run (recipes/train.py) and the methods with
an SFT stage (recipes/methods.py) build on it, so it imports neither.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import transformers
from packaging.version import Version
from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from prefix_rft.baselines.methods import METHODS, check_presets
from prefix_rft.recipes.method_choice import DEFAULT_METHOD, requested_method
from prefix_rft.recipes.rewards import reward_functions, uses_trl_rewards
from prefix_rft.recipes.setup_checks import (
    check_command_line,
    check_dataset_format,
    check_hub_model,
    check_paths,
    options,
    read_yaml,
)
from prefix_rft.setup_errors import vllm_installed
from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.run_dir import resolve_resume
from prefix_rft.trl.trainer import PrefixRFTTrainer

EMBEDDED = "embedded"
_TRAINER_HAS_END = Version(transformers.__version__) >= Version("5.18.0")  # Trainer.end() appeared in 5.18
# Trackers a `report_to` may name, and how to install each: ours as extras, the rest as transformers names them.
TRACKER_INSTALL = {
    "trackio": "pip install 'prefix-rft[trackio]'",
    "tensorboard": "pip install 'prefix-rft[tensorboard]'",
    "wandb": "pip install 'prefix-rft[wandb]'",
    "mlflow": "pip install mlflow",
    "comet_ml": "pip install comet-ml",
    "neptune": "pip install neptune",
    "clearml": "pip install clearml",
    "dagshub": "pip install dagshub",
    "dvclive": "pip install dvclive",
    "codecarbon": "pip install codecarbon",
    "swanlab": "pip install swanlab",
}


@dataclass
class TrainScriptArguments(ScriptArguments):
    """What to train on: data and reward (TRL's ScriptArguments and `trl grpo`'s reward fields, plus ours)."""

    method: str = field(
        default=DEFAULT_METHOD,
        metadata={"help": f"The method to train (docs/methods.md): {', '.join(METHODS)}."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "'embedded' (synthetic task; the default without `datasets`), a local file or folder, or a "
            "hub name."
        },
    )
    dataset_format: str = field(
        default="prefix_rft", metadata={"help": "'prefix_rft' (prompt, demos, answer) or 'luffy' (OpenR1-Math-46k)."}
    )
    dataset_limit: int | None = field(default=None, metadata={"help": "Use only the first N rows of each split."})
    embedded_train_rows: int = field(default=2000, metadata={"help": "Rows generated for the embedded task."})
    embedded_eval_rows: int = field(default=64, metadata={"help": "Eval rows of the embedded task (eval_strategy)."})
    reward: str | None = field(
        default=None,
        metadata={"help": "'task' (embedded), 'math' (math-verify) or 'auto' (the default without reward_funcs)."},
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "As `trl grpo`: TRL reward names (accuracy_reward, think_format_reward, ...) or dotted "
            "import paths (my_lib.rewards.my_reward)."
        },
    )
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "As `trl grpo`: a sequence-classification reward model (hub name or path)."}
    )


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ModelConfig (loading options, PEFT, quantization) with our embedded models."""

    model_name_or_path: str | None = field(
        default="embedded-base",
        metadata={"help": "Hub name or local path; 'embedded-base' (pretrained tiny model) or 'embedded-random'."},
    )
    model_size: str = field(default="1m", metadata={"help": "Size of an 'embedded-random' model (tasks.MODEL_SIZES)."})


class TrainArguments(NamedTuple):
    """Everything `prefix-rft train` parses."""

    script: TrainScriptArguments
    config: PrefixRFTConfig
    model: ModelArguments
    mixture: DatasetMixtureConfig

    @property
    def staged(self) -> bool:
        """The method has an SFT stage: recipes/methods.py runs it, resolving `resume_from_checkpoint` per stage."""
        return METHODS[self.script.method].stages != ("rl",)


def parse_args(argv: list[str] | None = None) -> TrainArguments:
    """Parse the YAML and command line, and refuse what could only fail later (trackers, rewards, streaming)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    yaml_config = read_yaml(argv)  # read once: for the method, the checks and the parser
    method = requested_method(argv, yaml_config)  # its config class parses the options
    config_cls = METHODS[method].config
    parser = TrlParser(
        (TrainScriptArguments, config_cls, ModelArguments, DatasetMixtureConfig), prog="prefix-rft train"
    )
    check_command_line(parser, argv, config_cls, yaml_config)  # the YAML's keys and value types, JSON options
    parser.set_defaults(**METHODS[method].presets)  # the YAML and the command line may set them again, to the same
    args = TrainArguments(*parse_recipe(parser, argv, yaml_config))
    check_presets(method, args.config)
    check_trackers(args.config.report_to)
    uses_trl_rewards(args.script)  # refuses `reward` given together with reward_funcs
    if args.script.dataset_streaming or args.mixture.streaming:
        raise ValueError(
            "streaming datasets are not supported: every row is checked before training, which needs the whole "
            "dataset; set dataset_streaming (and streaming) to false"
        )
    if args.mixture.datasets and args.script.dataset_name is not None:
        raise ValueError("both dataset_name and datasets choose the training data: give one of them")
    if not args.staged:
        args.config.resume_from_checkpoint = resolve_resume(args.config.resume_from_checkpoint, args.config.output_dir)
    check_paths(args)  # model, checkpoint, dataset and output folder, before the model loads
    return args


def parse_recipe(parser: TrlParser, argv: list[str], config: dict[str, Any]) -> tuple:
    """What `parser.parse_args_and_config(argv)` returns, from the YAML `config` that `read_yaml` read: TrlParser
    would open the file again, and takes no mapping, so its steps are taken here through its public methods: the
    YAML's `env` set, its values made the defaults, the command line (without `--config FILE`) parsed over them."""
    for name, value in config.get("env", {}).items():
        os.environ[name] = str(value)
    parser.set_defaults_with_config(**{key: value for key, value in config.items() if key != "env"})
    return parser.parse_args_into_dataclasses(args=options(argv))


def check_trackers(report_to: list[str]) -> None:
    """Refuse a tracker whose package is missing now, rather than with a RuntimeError once the model is loaded."""
    from transformers.integrations import get_available_reporting_integrations

    available = set(get_available_reporting_integrations())
    for name in report_to:
        if name in TRACKER_INSTALL and name not in available:
            raise ValueError(
                f"report_to={name!r} needs the {name} package, which is not installed: {TRACKER_INSTALL[name]}, or "
                "set report_to: none"
            )


def check_vllm(use_vllm: bool) -> None:
    """Refuse `use_vllm` without vLLM now, rather than with TRL's ImportError once the model is loaded."""
    if use_vllm and not vllm_installed():
        raise ValueError(
            "use_vllm=True needs the vllm package, which is not installed: pip install 'prefix-rft[vllm]' (on a GPU "
            "machine), or set use_vllm: false"
        )


def load_model(model_args: ModelArguments, config: PrefixRFTConfig):
    """(model or path, tokenizer or None) for the trainer.

    A path or hub name is left to TRL to load, tokenizer included, with the `model_init_kwargs` set here from
    ModelConfig as `trl grpo` sets them; `embedded-random` is built here, its weights drawn from the run's seed.
    """
    if model_args.model_name_or_path == "embedded-random":
        import torch

        from prefix_rft.tasks import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        torch.manual_seed(config.seed)  # the run's seed decides the initial weights, so two runs of one seed match
        return build_model(tokenizer, model_args.model_size), tokenizer
    path = model_args.model_name_or_path
    if path == "embedded-base":
        from prefix_rft.tasks import load_or_pretrain_base

        path = load_or_pretrain_base()
    else:
        check_hub_model(path, model_args.model_revision, config.trust_remote_code)
    config.model_init_kwargs = model_init_kwargs(model_args, config)
    return path, None


def model_init_kwargs(model_args: ModelArguments, config: PrefixRFTConfig) -> dict[str, Any]:
    """ModelConfig's loading options, overridden by the config's own `model_init_kwargs` (as `trl grpo`)."""
    kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=config.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    kwargs.update(config.model_init_kwargs or {})
    return kwargs


def is_embedded(args: TrainArguments) -> bool:
    """The run trains on the embedded task: `dataset_name: embedded`, or neither dataset_name nor `datasets`."""
    return args.script.dataset_name == EMBEDDED or (args.script.dataset_name is None and not args.mixture.datasets)


def load_datasets(args: TrainArguments):
    """(train, eval) datasets in our schema; eval is None unless `eval_strategy` asks for evaluation."""
    from prefix_rft.data import first_rows, from_luffy

    script, wants_eval = args.script, args.config.eval_strategy != "no"
    if script.dataset_format not in ("prefix_rft", "luffy"):
        raise ValueError(f"dataset_format={script.dataset_format!r}; expected 'prefix_rft' or 'luffy'")
    if is_embedded(args):
        return _embedded_splits(script, args.config.seed, wants_eval)
    splits = [script.dataset_train_split, *([script.dataset_test_split] if wants_eval else [])]
    datasets = [first_rows(dataset, script.dataset_limit) for dataset in _load_splits(args, splits)]
    check_dataset_format(datasets[0], script.dataset_format, script.dataset_name or "the datasets mixture")
    if script.dataset_format == "luffy":
        datasets = [from_luffy(dataset) for dataset in datasets]
    return datasets[0], (datasets[1] if wants_eval else None)


def _load_splits(args: TrainArguments, splits: list[str]) -> list:
    """`splits` of the `datasets` mixture, or of `dataset_name` (a file, folder or hub dataset, with its
    `dataset_config` subset)."""
    if not args.mixture.datasets:
        from prefix_rft.data import load_prefix_rft_dataset

        return [
            load_prefix_rft_dataset(args.script.dataset_name, split, args.script.dataset_config) for split in splits
        ]
    from trl import get_dataset

    mixture = get_dataset(args.mixture)
    for split in splits:
        if split not in mixture:
            raise ValueError(
                f"the datasets mixture has no split {split!r} (it has {list(mixture)}); see test_split_size"
            )
    return [mixture[split] for split in splits]


def _embedded_splits(script: TrainScriptArguments, seed: int, wants_eval: bool):
    from datasets import Dataset

    from prefix_rft.data import first_rows
    from prefix_rft.tasks import make_rows

    train = Dataset.from_list(make_rows(script.dataset_train_split, script.embedded_train_rows, seed=seed))
    if not wants_eval:
        return first_rows(train, script.dataset_limit), None
    test = Dataset.from_list(make_rows(script.dataset_test_split, script.embedded_eval_rows, seed=seed))
    return first_rows(train, script.dataset_limit), first_rows(test, script.dataset_limit)


def build_trainer(args: TrainArguments) -> PrefixRFTTrainer:
    """The trainer `trl grpo` would build from these arguments, with the method's trainer (a PrefixRFTTrainer) in
    place of GRPOTrainer."""
    model, tokenizer = load_model(args.model, args.config)
    train_dataset, eval_dataset = load_datasets(args)
    return build_rl_trainer(args, model, tokenizer, train_dataset, eval_dataset)


def build_rl_trainer(args: TrainArguments, model, tokenizer, train_dataset, eval_dataset) -> PrefixRFTTrainer:
    """The RL trainer of `args.script.method` on these datasets."""
    return METHODS[args.script.method].trainer(
        model=model,
        reward_funcs=reward_functions(args.script, embedded=is_embedded(args)),
        args=args.config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        quantization_config=get_quantization_config(args.model),
        peft_config=get_peft_config(args.model),
    )


def end_run(trainer: PrefixRFTTrainer) -> None:
    """Finish the trackers and destroy the process group once every process is done.

    Without it the processes exit with the group alive while the main one may still write the model: under torchrun
    a rank aborted ("terminate called without an active exception", exit 1), or both hung at exit for minutes.
    """
    trainer.accelerator.wait_for_everyone()  # only the main process saves; the others wait for it here
    if _TRAINER_HAS_END:
        trainer.end()
    else:  # transformers 5.17 (which vLLM 0.31 needs): what Trainer.end does in later versions
        trainer.accelerator.end_training()
