"""`prefix-rft train --config FILE.yaml [--key value ...]`: Prefix-RFT from a YAML recipe, as `trl grpo` takes one.

The arguments, model, datasets and trainer come from recipes/train_setup.py; a method with an SFT stage runs through
recipes/methods.py, which builds on the same module, so the three import in one direction only. The names of
train_setup are exported here too (`from prefix_rft.recipes.train import parse_args`). Multi-process runs:
`torchrun ... -m prefix_rft.cli train` or
`accelerate launch --config_file configs/accelerate/zero3.yaml -m prefix_rft.cli train --config ...`.
"""

from __future__ import annotations

from prefix_rft.recipes import methods
from prefix_rft.recipes.train_setup import (
    EMBEDDED,
    TRACKER_INSTALL,
    ModelArguments,
    TrainArguments,
    TrainScriptArguments,
    build_rl_trainer,
    build_trainer,
    check_trackers,
    check_vllm,
    end_run,
    is_embedded,
    load_datasets,
    load_model,
    model_init_kwargs,
    parse_args,
)
from prefix_rft.setup_errors import reports_setup_errors, setup_stage

__all__ = [
    "EMBEDDED",
    "TRACKER_INSTALL",
    "ModelArguments",
    "TrainArguments",
    "TrainScriptArguments",
    "build_rl_trainer",
    "build_trainer",
    "check_trackers",
    "check_vllm",
    "end_run",
    "is_embedded",
    "load_datasets",
    "load_model",
    "main",
    "model_init_kwargs",
    "parse_args",
    "run_staged",
]


def run_staged(args: TrainArguments) -> int:
    """A method with an SFT stage (recipes/methods.py)."""
    if methods.run(args):
        print(f"prefix-rft train: saved the model to {args.config.output_dir}")
    return 0


@reports_setup_errors("prefix-rft train")
def main(argv: list[str] | None = None) -> int:
    with setup_stage():  # a config field, a path or a training row, named in the message: no traceback needed
        args = parse_args(argv)
        check_vllm(args.config.use_vllm)  # here, not in parse_args: GPU recipes parse on any machine
    if args.staged:
        return run_staged(args)  # marks each stage's setup itself: its training is outside `setup_stage` too
    with setup_stage():
        trainer = build_trainer(args)
    accelerator = trainer.accelerator
    accelerator.print(f"prefix-rft train: {accelerator.num_processes} process(es), {accelerator.distributed_type}")
    trainer.train(resume_from_checkpoint=args.config.resume_from_checkpoint)
    trainer.save_model(args.config.output_dir)
    accelerator.print(f"prefix-rft train: saved the model to {args.config.output_dir}")
    end_run(trainer)
    return 0
