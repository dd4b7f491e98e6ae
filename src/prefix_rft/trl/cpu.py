"""TrainingArguments for a run on a CPU: what the recipes, the tests and a laptop trial share."""

from __future__ import annotations

from typing import Any


def cpu_trainer_kwargs(output_dir, seed: int, max_steps: int) -> dict[str, Any]:
    """fp32, no checkpoints, no trackers, a log line per step; pass them to `PrefixRFTConfig(**kwargs, ...)`."""
    return dict(
        output_dir=str(output_dir),
        max_steps=max_steps,
        seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
    )
