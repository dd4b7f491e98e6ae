"""Check a training dataset before any compute is spent on it; errors name the row and the field."""

from __future__ import annotations

import inspect
import logging
from collections import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints

from prefix_rft.data.annotations import is_instance, runtime_types, type_names
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
ROLES = ("system", "user", "assistant", "tool")  # chat roles a prompt message may have


@dataclass
class ValidationReport:
    rows: int
    rows_without_demos: int
    demos_over_budget: int  # demos longer than the completion budget (truncated when allowed)
    demos_without_part: int = 0  # demos of no tokens as measured (`prefix_demo_part`): their slots run unguided


def _is_empty(value: Any) -> bool:
    """None, [], or text that is blank (a blank answer can never be matched, so it would only score 0)."""
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def _check_prompt(i: int, prompt: Any) -> None:
    if _is_empty(prompt):
        raise ValueError(f"row {i}: field 'prompt' is missing or empty")
    if isinstance(prompt, list):
        for j, message in enumerate(prompt):
            _check_message(i, j, message)
    elif not isinstance(prompt, str):
        raise ValueError(f"row {i}: field 'prompt' must be text or chat messages, got {type(prompt).__name__}")


def _check_message(i: int, j: int, message: Any) -> None:
    """A chat message the template can render: a known role and text content (checked here, not by Jinja mid-run)."""
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ValueError(f"row {i}: field 'prompt' must be text or a list of {{role, content}} messages")
    role, content = message["role"], message["content"]
    if not isinstance(role, str) or role not in ROLES:
        raise ValueError(f"row {i}: field 'prompt' message {j} has role {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise ValueError(f"row {i}: field 'prompt' message {j} has content {content!r:.40}; expected text")


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


@dataclass
class RewardNeeds:
    """The dataset columns a reward function takes by name, and the row types it declares for them."""

    name: str
    columns: set[str]
    row_types: dict[str, tuple[type, ...]]  # column -> classes a row's value may have (from `list[T]` annotations)


def reward_needs(reward_funcs: Sequence[Callable]) -> list[RewardNeeds]:
    """What each reward function asks of the dataset: parameters TRL does not supply itself are columns, and a
    `list[T]` or `Sequence[T]` annotation on one declares the type T of each row's value."""
    needs = []
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
        name = getattr(func, "__name__", type(func).__name__)
        needs.append(RewardNeeds(name, names, _declared_row_types(func, names)))
    return needs


def _declared_row_types(func: Callable, columns: set[str]) -> dict[str, tuple[type, ...]]:
    try:
        hints = get_type_hints(func if inspect.isroutine(func) else type(func).__call__)
    except (NameError, TypeError, AttributeError):  # an annotation that does not resolve declares nothing
        return {}
    declared = {}
    for column in columns & set(hints):
        annotation = hints[column]
        if get_origin(annotation) in (list, abc.Sequence) and get_args(annotation):
            allowed = runtime_types(get_args(annotation)[0])
            if allowed is not None:
                declared[column] = allowed
    return declared


def _check_reward_types(i: int, row: dict[str, Any], needs: list[RewardNeeds]) -> None:
    """A value the reward function cannot grade would score 0 on every completion without an error."""
    for need in needs:
        for column, allowed in need.row_types.items():
            value = row.get(column)
            if value is not None and not is_instance(value, allowed):
                raise ValueError(
                    f"row {i}: field {column!r} is of type {type(value).__name__}, but reward function "
                    f"{need.name!r} grades {type_names(allowed)}"
                )


def _rendered_length(i: int, prompt_length: Callable[[Any], int], prompt: Any) -> int:
    try:
        return prompt_length(prompt)
    except Exception as error:  # the tokenizer's chat template (Jinja) names no row; re-raised with it
        raise ValueError(f"row {i}: field 'prompt' cannot be rendered by the chat template: {error}") from error


@dataclass
class PromptBudgets:
    """Token limits on a rendered prompt; `length` gives a prompt's tokens as the trainer renders it."""

    length: Callable[[Any], int]
    limit: int  # no prompt may be longer: the model's context left after the completion budget
    limit_source: str  # where `limit` comes from, for the error message
    max_prompt_length: int | None = None  # prompt + minimum demo prefix of rows with demos
    min_prefix_len: int = 0


def _check_prompt_budget(i: int, prompt: Any, has_demos: bool, budgets: PromptBudgets) -> None:
    length = _rendered_length(i, budgets.length, prompt)
    if length > budgets.limit:
        raise ValueError(
            f"row {i}: field 'prompt' has {length} tokens, more than {budgets.limit} ({budgets.limit_source}); "
            "shorten the prompt or drop the row"
        )
    need = length + budgets.min_prefix_len
    if has_demos and budgets.max_prompt_length is not None and need > budgets.max_prompt_length:
        raise ValueError(
            f"row {i}: field 'prompt' needs {need} tokens with the minimum prefix, "
            f"more than max_prompt_length={budgets.max_prompt_length}"
        )


def _columns(rows: Sequence[dict[str, Any]]) -> set[str]:
    names = getattr(rows, "column_names", None)  # a datasets.Dataset knows them; a list of dicts may vary by row
    return set(names) if names is not None else {key for row in rows for key in row}


def validate_rows(
    rows: Sequence[dict[str, Any]],
    *,
    reward_funcs: Sequence[Callable] = (),
    prompt_budgets: PromptBudgets | None = None,
    demo_length: Callable[[str], int] | None = None,
    max_completion_length: int | None = None,
    truncate_long_demos: bool = False,
    id_column: str = "id",
) -> ValidationReport:
    """Raise ValueError naming the first bad row and field; count rows without demos and over-long demos.

    Args:
        prompt_budgets: how to measure a rendered prompt and its limits; enables the prompt checks.
        demo_length: tokens of a demo; enables the completion-budget check.
        truncate_long_demos: count demos longer than `max_completion_length` instead of failing.
    """
    if len(rows) == 0:
        raise ValueError("the training dataset has no rows")
    columns = _columns(rows)
    needs = reward_needs(reward_funcs)
    for need in needs:
        missing = sorted(need.columns - columns)
        if missing:
            raise ValueError(f"reward function {need.name!r} needs column(s) {missing}, absent from the dataset")
    seen_ids: dict[Any, int] = {}
    without_demos = over_budget = without_part = 0
    for i, row in enumerate(rows):
        _check_prompt(i, row.get("prompt"))
        if "answer" in columns and _is_empty(row.get("answer")):
            raise ValueError(f"row {i}: field 'answer' is missing or empty")
        _check_reward_types(i, row, needs)
        identifier = row.get(id_column)
        if identifier is not None:  # rows without an id cannot collide
            if identifier in seen_ids:
                raise ValueError(f"row {i}: field '{id_column}' duplicates row {seen_ids[identifier]}")
            seen_ids[identifier] = i
        demos = _check_demos(i, row)
        without_demos += not demos
        if prompt_budgets is not None:
            _check_prompt_budget(i, row["prompt"], bool(demos), prompt_budgets)
        if demo_length is not None and max_completion_length is not None:
            lengths = [demo_length(demo) for demo in demos]
            over_budget += _count_long_demos(i, lengths, max_completion_length, truncate_long_demos)
            without_part += lengths.count(0)
    report = ValidationReport(len(rows), without_demos, over_budget, without_part)
    if without_demos:
        logger.warning("%d of %d prompts have no demo and train on-policy only", without_demos, len(rows))
    if over_budget:
        logger.warning("%d demos are longer than the completion budget and will be truncated", over_budget)
    if without_part:
        logger.warning(
            "%d demos have no part to reveal (prefix_demo_part): their hybrid slots run unguided", without_part
        )
    return report


def _count_long_demos(i: int, lengths: list[int], max_completion_length: int, truncate: bool) -> int:
    """Demos of row `i` (their token `lengths`) longer than `max_completion_length`; refused unless `truncate`."""
    count = 0
    for j, length in enumerate(lengths):
        if length > max_completion_length:
            if not truncate:
                raise ValueError(
                    f"row {i}: field 'demos' item {j} has {length} tokens, more than "
                    f"max_completion_length={max_completion_length} (set prefix_truncate_long_demos to cut)"
                )
            count += 1
    return count
