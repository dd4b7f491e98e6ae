"""What a recipe prints while it trains: one compact line per logging step; every logged metric goes to a file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import ProgressCallback

# Shown on the compact line, in this order: (logged key, label).
COMPACT_FIELDS = (("reward", "reward"), ("reward/hybrid", "hybrid reward"), ("prefix/ratio_mean", "prefix ratio"))


def compact_line(step: int, max_steps: int, logs: dict[str, Any], accuracy: dict[str, float] | None) -> str:
    """`step s/n  reward r  hybrid reward h  prefix ratio p  [acc test a, ood o]` from one log of a training step;
    a field the log lacks or that is NaN (no hybrid row) is left out. `accuracy`: split -> avg@1 measured at this
    step, if any."""
    parts = [f"step {step}/{max_steps}"]
    for key, label in COMPACT_FIELDS:
        value = logs.get(key)
        if isinstance(value, int | float) and not math.isnan(value):
            parts.append(f"{label} {value:.3f}")
    if accuracy:
        parts.append("acc " + ", ".join(f"{split} {value:.3f}" for split, value in accuracy.items()))
    return "  ".join(parts)


class CompactProgress(ProgressCallback):
    """transformers' progress bars, with a `compact_line` per training log instead of the whole metrics dict.

    Every log (training steps, the end-of-training summary) is appended in full to `log_path` as one JSON line.
    `points` is the run's accuracy curve ({"step", split: avg@1}), read for the point measured at the logged step.
    """

    def __init__(self, log_path: Path, points: list[dict[str, Any]]):
        super().__init__()
        self.log_path = Path(log_path)
        self.points = points

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as file:
            file.write(json.dumps({**logs, "step": state.global_step}) + "\n")
        if "reward" not in logs and "loss" not in logs:
            return  # the summary at the end of training: in the file only
        point = next((p for p in reversed(self.points) if p["step"] == state.global_step), None)
        accuracy = {k: v for k, v in point.items() if k != "step"} if point else None
        line = compact_line(state.global_step, state.max_steps, logs, accuracy)
        if self.training_bar is not None:
            self.training_bar.write(line)
        else:
            print(line)
