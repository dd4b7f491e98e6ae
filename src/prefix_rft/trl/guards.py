"""Training guards: skip optimizer steps with non-finite gradients, stop after too many in a row."""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class NonFiniteStepGuard(TrainerCallback):
    """Drops the gradients of a step whose loss or gradients are NaN/inf, so the optimizer leaves the weights alone.

    A NaN loss makes NaN gradients, so checking gradients catches both. After `max_consecutive` skipped steps in a row
    the run stops with an error; checkpoints written before stay loadable.
    """

    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if finite:
            self.consecutive = 0
            return control
        for p in model.parameters():
            p.grad = None  # AdamW skips parameters without a gradient: the weights stay as they were
        self.consecutive += 1
        self.skipped += 1
        logger.warning("step %d: non-finite loss or gradient, optimizer step skipped", state.global_step + 1)
        if self.consecutive >= self.max_consecutive:
            raise RuntimeError(
                f"{self.consecutive} consecutive steps had non-finite loss or gradients (up to step "
                f"{state.global_step + 1}); stopping. The last checkpoint in {args.output_dir} is intact."
            )
        return control
