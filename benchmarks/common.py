"""Helpers the benchmark scripts share: the tiny training setup of the step-time family, the model a benchmark runs
on, and the JSON report with the commit and versions it was measured at.

The scripts run as `python benchmarks/NAME.py`, so `benchmarks/` is on `sys.path` and `import common` finds this file.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def build(args):
    """The random tiny model (`args.model_size`), its tokenizer and enough train rows for `args.steps` + 1 steps of
    `args.prompts` prompts: the same for every variant of `step_time.py`, `decode_savings.py` and `scaling.py`."""
    import torch
    from datasets import Dataset

    from prefix_rft.tasks import build_model, build_tokenizer, make_rows

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, args.model_size)
    rows = make_rows("train", args.prompts * (args.steps + 1), seed=0)
    return model, tokenizer, Dataset.from_list(rows)


def common_kwargs(args) -> dict:
    """GRPOConfig / PrefixRFTConfig fields shared by those benchmarks: 8 rollouts per prompt, one CPU process."""
    from prefix_rft.trl.cpu import cpu_trainer_kwargs

    return cpu_trainer_kwargs("/tmp/bench_step_time", seed=0, max_steps=args.steps) | dict(
        per_device_train_batch_size=8 * args.prompts,
        num_generations=8,
        max_completion_length=args.max_completion,
        learning_rate=1e-5,
        disable_tqdm=True,
        log_completions=False,
        temperature=1.0,
    )


def base_model_path(model: str) -> str | None:
    """Directory of the default base model for "base" (the shipped one, else cached, else pretrained: minutes), None
    for "random" (the caller keeps `build`'s random model)."""
    if model == "random":
        return None
    from prefix_rft.tasks import load_or_pretrain_base

    return load_or_pretrain_base()


def load_model(name: str):
    """(model, tokenizer) of "base" (the default base model) or of a saved model directory such as runs/demo/model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_model_path("base") if name == "base" else name
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def provenance() -> dict[str, Any]:
    """The commit and package versions a measurement was taken at."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT).stdout
    packages = ("torch", "transformers", "trl", "accelerate")
    return {
        "commit": commit.strip(),
        "versions": {"python": platform.python_version(), **{name: version(name) for name in packages}},
        "machine": platform.machine(),
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write `report` as JSON with its provenance, creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, **provenance()}, indent=1, default=str) + "\n")
