"""How a toy run is scored: avg@k / pass@k on the test and OOD splits (or held-out training questions when tuning),
the accuracy curve measured while it trains, and the cheap validation accuracy early stopping reads."""

from __future__ import annotations

from transformers import TrainerCallback

from prefix_rft.eval.harness import EvalResult, evaluate
from prefix_rft.recipes.early_stopping import evaluating
from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy_task import completion_budget, eval_rows, validation_rows
from prefix_rft.tasks import is_correct


def evaluate_split(model, tokenizer, split: str, seed: int, k: int, n: int, desc: str) -> EvalResult:
    """k samples on each of `n` problems of `split` drawn for `seed` (`evaluate_rows`)."""
    return evaluate_rows(model, tokenizer, eval_rows(split, n, seed), seed, k, desc)


def evaluate_rows(model, tokenizer, rows: list[dict], seed: int, k: int, desc: str) -> EvalResult:
    """k samples on each row (T 0.6, top-p 0.95, as the paper); returns the harness's `EvalResult` (metrics and
    per-sample completions)."""
    return evaluate(
        model,
        tokenizer,
        rows,
        lambda c, a: float(is_correct(c, a)),
        k=k,
        max_new_tokens=completion_budget(),
        batch_size=64,
        seed=seed,
        desc=desc,
    )


def evaluate_splits(model, tokenizer, seed: int, k: int, n: int, desc: str) -> dict[str, dict]:
    """avg@k / pass@k on the in-distribution test split and the harder OOD split (`evaluate_split`)."""
    return {
        split: evaluate_split(model, tokenizer, split, seed, k, n, f"{desc} {split}").metrics
        for split in ("test", "ood")
    }


def score_run(model, tokenizer, settings: RunSettings, seed: int, k: int, n: int, desc: str) -> dict[str, dict]:
    """`evaluate_splits`, or with `evaluate_on="validation"` avg@k / pass@k on `n` held-out training questions
    (`validation_rows` after the early-stopping ones) under the key "validation"."""
    if settings.evaluate_on == "test":
        return evaluate_splits(model, tokenizer, seed, k, n, desc)
    held_out = settings.sft_val_problems  # `sft_best_rft` stops on these: score on the next ones, unseen by it
    rows = validation_rows(settings, seed, held_out + n)[held_out:]
    return {"validation": evaluate_rows(model, tokenizer, rows, seed, k, f"{desc} validation").metrics}


def validation_accuracy(model, tokenizer, rows: list[dict], seed: int) -> float:
    """avg@1 on held-out training-split questions (`validation_rows`): one sample each, to keep it cheap."""
    with evaluating(model):
        return evaluate_rows(model, tokenizer, rows, seed, k=1, desc="validation").metrics["avg@1"]


def accuracy_callback(tokenizer, settings: RunSettings, seed: int, points: list[dict], offset: int = 0):
    """A TrainerCallback appending {"step", "test", "ood"} (avg@1) to `points` at every multiple of `curve_every`
    steps of the whole run (`offset` = steps trained before this trainer) and at the trainer's last step.

    Counting from the start of the run keeps every seed on one grid when a first stage ends at a step that varies
    by seed (`sft_best_rft`).
    """

    class AccuracyCurve(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = offset + state.global_step
            if step % settings.curve_every == 0 or state.global_step == state.max_steps:
                measure_point(model, tokenizer, settings, seed, points, step)

    return AccuracyCurve()


def measure_point(model, tokenizer, settings: RunSettings, seed: int, points: list[dict], step: int) -> None:
    """Append the accuracy curve's point at `step` (avg@1 on `curve_problems` of each scored split) to `points`."""
    with evaluating(model):
        metrics = score_run(model, tokenizer, settings, seed, k=1, n=settings.curve_problems, desc=f"step {step}")
    points.append({"step": step, **{split: m["avg@1"] for split, m in metrics.items()}})
