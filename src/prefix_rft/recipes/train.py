"""`prefix-rft train --config FILE.yaml [--key value ...]`: Prefix-RFT from a YAML recipe (TrlParser conventions).

The YAML holds `PrefixRFTConfig` fields (all of GRPOConfig and the `prefix_*` fields) and the script fields below.
Launch multi-GPU runs with accelerate, e.g.
`accelerate launch --config_file configs/accelerate/zero3.yaml -m prefix_rft.cli train --config ...`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from trl import TrlParser

from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.trainer import PrefixRFTTrainer

logger = logging.getLogger(__name__)
EMBEDDED = "embedded"


@dataclass
class TrainScriptArguments:
    """What to train on: model, data and reward."""

    model_name_or_path: str = field(
        default="embedded-base",
        metadata={"help": "Hub name or local path; 'embedded-base' (pretrained tiny model) or 'embedded-random'."},
    )
    model_size: str = field(default="1m", metadata={"help": "Size of an 'embedded-random' model (tasks.MODEL_SIZES)."})
    dataset_name: str = field(
        default=EMBEDDED, metadata={"help": "'embedded' (synthetic task), a local .jsonl/.parquet file or a hub name."}
    )
    dataset_format: str = field(
        default="prefix_rft", metadata={"help": "'prefix_rft' (prompt, demos, answer) or 'luffy' (OpenR1-Math-46k)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to load from a hub dataset."})
    dataset_limit: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    embedded_train_rows: int = field(default=2000, metadata={"help": "Rows generated for the embedded task."})
    reward: str = field(default="auto", metadata={"help": "'task' (embedded), 'math' (math-verify) or 'auto'."})


def load_model_and_tokenizer(script: TrainScriptArguments, seed: int):
    """(model, tokenizer) for the trainer; `embedded-random` draws its weights from `seed`."""
    if script.model_name_or_path == "embedded-random":
        import torch

        from prefix_rft.tasks import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        torch.manual_seed(seed)  # the run's seed decides the initial weights, so two runs of one seed match
        return build_model(tokenizer, script.model_size), tokenizer
    path = script.model_name_or_path
    if path == "embedded-base":
        from prefix_rft.tasks import load_or_pretrain_base

        path = load_or_pretrain_base()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def load_train_dataset(script: TrainScriptArguments, seed: int):
    from datasets import Dataset

    from prefix_rft.data import first_rows, load_luffy_openr1, load_prefix_rft_dataset

    if script.dataset_name == EMBEDDED:
        from prefix_rft.tasks import make_rows

        dataset = Dataset.from_list(make_rows("train", script.embedded_train_rows, seed=seed))
    elif script.dataset_format == "luffy":
        dataset = load_luffy_openr1(script.dataset_name, script.dataset_split)
    elif script.dataset_format == "prefix_rft":
        dataset = load_prefix_rft_dataset(script.dataset_name, script.dataset_split)
    else:
        raise ValueError(f"dataset_format={script.dataset_format!r}; expected 'prefix_rft' or 'luffy'")
    return first_rows(dataset, script.dataset_limit)


def reward_function(script: TrainScriptArguments):
    kind = script.reward
    if kind == "auto":
        kind = "task" if script.dataset_name == EMBEDDED else "math"
    if kind == "task":
        from prefix_rft.tasks import task_reward

        return task_reward
    if kind == "math":
        from prefix_rft.verify import math_reward

        return math_reward
    raise ValueError(f"reward={script.reward!r}; expected 'task', 'math' or 'auto'")


def build_trainer(script: TrainScriptArguments, config: PrefixRFTConfig) -> PrefixRFTTrainer:
    model, tokenizer = load_model_and_tokenizer(script, config.seed)
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[reward_function(script)],
        args=config,
        train_dataset=load_train_dataset(script, config.seed),
        processing_class=tokenizer,
    )


def main(argv: list[str] | None = None) -> int:
    parser = TrlParser((TrainScriptArguments, PrefixRFTConfig), prog="prefix-rft train")
    try:
        script, config = parser.parse_args_and_config(argv)
        trainer = build_trainer(script, config)
    except ValueError as error:  # a config field or a training row, named in the message: no traceback needed
        logger.debug("refused before training", exc_info=True)
        print(f"prefix-rft train: {error}", file=sys.stderr)
        return 2
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    logger.info("saved the trained model to %s", config.output_dir)
    return 0
