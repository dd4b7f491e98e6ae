"""Check a training dataset before any compute is spent on it; errors name the row and the field."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefix_rft.data.loading import row_demos

logger = logging.getLogger(__name__)
# Arguments TRL passes to every reward function itself; any other named parameter must be a dataset column.
_TRL_REWARD_ARGS = {
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
}


@dataclass
class ValidationReport:
    rows: int
    rows_without_demos: int
    demos_over_budget: int  # demos longer than the completion budget (truncated when allowed)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list) and len(value) == 0)


def _check_prompt(i: int, prompt: Any) -> None:
    if _is_empty(prompt):
        raise ValueError(f"row {i}: field 'prompt' is missing or empty")
    if isinstance(prompt, list):
        for message in prompt:
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"row {i}: field 'prompt' must be text or a list of {{role, content}} messages")
    elif not isinstance(prompt, str):
        raise ValueError(f"row {i}: field 'prompt' must be text or chat messages, got {type(prompt).__name__}")


def _check_demos(i: int, row: dict[str, Any]) -> list[str]:
    field = "demos" if row.get("demos") is not None else "demo"
    raw = row.get(field)
    if field == "demos" and not isinstance(raw, list):
        raise ValueError(f"row {i}: field 'demos' must be a list of strings, got {type(raw).__name__}")
    demos = row_demos(row)
    for j, demo in enumerate(demos):
        if not isinstance(demo, str) or not demo.strip():
            raise ValueError(f"row {i}: field '{field}' item {j} must be a non-empty string, got {demo!r:.60}")
    return demos


def reward_columns(reward_funcs: Sequence[Callable]) -> dict[str, set[str]]:
    """Dataset columns each reward function asks for by name (parameters TRL does not supply itself)."""
    needed = {}
    for func in reward_funcs:
        if not callable(func) or isinstance(func, str):
            continue
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            continue
        names = {
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
        } - _TRL_REWARD_ARGS
        needed[getattr(func, "__name__", type(func).__name__)] = names
    return needed


def validate_rows(
    rows: Sequence[dict[str, Any]],
    *,
    reward_funcs: Sequence[Callable] = (),
    prompt_length: Callable[[Any], int] | None = None,
    demo_length: Callable[[str], int] | None = None,
    max_prompt_length: int | None = None,
    min_prefix_len: int = 0,
    max_completion_length: int | None = None,
    truncate_long_demos: bool = False,
    id_column: str = "id",
) -> ValidationReport:
    """Raise ValueError naming the first bad row and field; count rows without demos and over-long demos.

    Args:
        prompt_length: tokens of a prompt as the trainer renders it; enables the prompt-budget check.
        demo_length: tokens of a demo; enables the completion-budget check.
        truncate_long_demos: count demos longer than `max_completion_length` instead of failing.
    """
    columns = set(rows[0]) if len(rows) else set()
    for func_name, names in reward_columns(reward_funcs).items():
        missing = sorted(names - columns)
        if missing:
            raise ValueError(f"reward function {func_name!r} needs column(s) {missing}, absent from the dataset")
    seen_ids: dict[Any, int] = {}
    without_demos = over_budget = 0
    for i, row in enumerate(rows):
        _check_prompt(i, row.get("prompt"))
        if "answer" in columns and _is_empty(row.get("answer")):
            raise ValueError(f"row {i}: field 'answer' is missing or empty")
        if id_column in columns:
            if row[id_column] in seen_ids:
                raise ValueError(f"row {i}: field '{id_column}' duplicates row {seen_ids[row[id_column]]}")
            seen_ids[row[id_column]] = i
        demos = _check_demos(i, row)
        without_demos += not demos
        if prompt_length is not None and max_prompt_length is not None and demos:
            need = prompt_length(row["prompt"]) + min_prefix_len
            if need > max_prompt_length:
                raise ValueError(
                    f"row {i}: field 'prompt' needs {need} tokens with the minimum prefix, "
                    f"more than max_prompt_length={max_prompt_length}"
                )
        if demo_length is not None and max_completion_length is not None:
            for j, demo in enumerate(demos):
                if demo_length(demo) > max_completion_length:
                    if not truncate_long_demos:
                        raise ValueError(
                            f"row {i}: field 'demos' item {j} has {demo_length(demo)} tokens, more than "
                            f"max_completion_length={max_completion_length} (set prefix_truncate_long_demos to cut)"
                        )
                    over_budget += 1
    report = ValidationReport(rows=len(rows), rows_without_demos=without_demos, demos_over_budget=over_budget)
    if without_demos:
        logger.warning("%d of %d prompts have no demo and train on-policy only", without_demos, len(rows))
    if over_budget:
        logger.warning("%d demos are longer than the completion budget and will be truncated", over_budget)
    return report
