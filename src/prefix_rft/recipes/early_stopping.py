"""Early stopping on a validation score, keeping the best weights in memory (the SFT half of `sft_best_rft`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import TrainerCallback


@contextmanager
def evaluating(model) -> Iterator[None]:
    """`model` in eval mode inside the block, then back in the mode it was in (evaluations run mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class EarlyStopping(TrainerCallback):
    """Score the model before the first step and every `every` optimizer steps; stop after `patience` scores in a
    row without a strict improvement; `restore` puts back the weights of the best score.

    The score before training takes part: if training never beats the starting model, `restore` returns to it. A tie
    is no improvement, so of equal scores the earliest (fewest steps) is kept. The final step is scored too when it
    falls between two scheduled ones.
    """

    def __init__(self, score: Callable[[Any], float], every: int, patience: int) -> None:
        if every < 1 or patience < 1:
            raise ValueError(
                f"early stopping needs every >= 1 and patience >= 1, got every={every}, patience={patience}"
            )
        self.score, self.every, self.patience = score, every, patience
        self.history: list[dict[str, float]] = []  # {"step", "score"} per evaluation, in order
        self.best_step, self.best_score, self.stale = 0, -math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._evaluate(model, state.global_step)
            if self.stale >= self.patience:
                control.should_training_stop = True

    def _evaluate(self, model: Any, step: int) -> None:
        score = float(self.score(model))
        self.history.append({"step": step, "score": score})
        if score > self.best_score:
            self.best_step, self.best_score, self.stale = step, score, 0
            # A copy, not a reference: the optimizer updates the parameters in place.
            self.best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        else:
            self.stale += 1

    def restore(self, model: Any) -> None:
        """Load the best-scoring weights into `model` (the model this callback scored)."""
        if self.best_state is None:
            raise RuntimeError("EarlyStopping.restore before any evaluation")
        model.load_state_dict(self.best_state)

    def record(self) -> dict[str, Any]:
        """What was chosen, for a run's JSON: the best step and score, and every evaluation."""
        return {"best_step": self.best_step, "best_score": self.best_score, "evaluations": self.history}
