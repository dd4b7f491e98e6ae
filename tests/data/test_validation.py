"""Every bad input named in the reliability issue gets an error naming the row and the field, or a count."""

import pytest

from prefix_rft.data import validate_rows
from prefix_rft.data.validation import PromptBudgets


def good_row(i=0, **changes):
    row = {
        "id": f"q{i}",
        "prompt": [{"role": "user", "content": "2+2="}],
        "demos": ["2+2=4. answer: 4"],
        "answer": "4",
    }
    row.update(changes)
    return row


def reward_needing_answer(completions, answer, **kwargs):
    return [0.0] * len(completions)


def reward_needing_solution(completions, solution, **kwargs):
    return [0.0] * len(completions)


def test_good_rows_pass_and_are_counted():
    report = validate_rows([good_row(0), good_row(1)], reward_funcs=[reward_needing_answer])
    assert (report.rows, report.rows_without_demos, report.demos_over_budget) == (2, 0, 0)


@pytest.mark.parametrize("prompt", [None, "", []])
def test_missing_or_empty_prompt(prompt):
    with pytest.raises(ValueError, match=r"row 1: field 'prompt' is missing or empty"):
        validate_rows([good_row(0), good_row(1, prompt=prompt)])


def test_prompt_of_wrong_shape():
    with pytest.raises(ValueError, match=r"row 0: field 'prompt' must be text or a list of \{role, content\}"):
        validate_rows([good_row(0, prompt=[{"text": "2+2="}])])


@pytest.mark.parametrize("answer", [None, ""])
def test_missing_or_empty_answer(answer):
    with pytest.raises(ValueError, match=r"row 0: field 'answer' is missing or empty"):
        validate_rows([good_row(0, answer=answer)])


def test_demos_that_are_not_strings():
    with pytest.raises(ValueError, match=r"row 0: field 'demos' item 1 must be a non-empty string"):
        validate_rows([good_row(0, demos=["ok", 42])])


def test_demos_that_are_not_a_list():
    with pytest.raises(ValueError, match=r"row 0: field 'demos' must be a list of strings"):
        validate_rows([good_row(0, demos="one string")])


def test_empty_demo():
    with pytest.raises(ValueError, match=r"row 0: field 'demos' item 0 must be a non-empty string"):
        validate_rows([good_row(0, demos=["   "])])


def test_prompt_plus_min_prefix_over_budget():
    # prompt of 12 tokens + min prefix 5 = 17 > 16
    with pytest.raises(ValueError, match=r"row 0: field 'prompt' needs 17 tokens .* max_prompt_length=16"):
        budgets = PromptBudgets(lambda p: 12, limit=100, limit_source="", max_prompt_length=16, min_prefix_len=5)
        validate_rows([good_row(0)], prompt_budgets=budgets)


def test_demo_over_completion_budget_is_an_error_by_default():
    # the demo "2+2=4. answer: 4" has 16 characters (one token each) > 10
    with pytest.raises(ValueError, match=r"row 0: field 'demos' item 0 has 16 tokens, more than max_completion"):
        validate_rows([good_row(0)], demo_length=len, max_completion_length=10)


def test_demo_over_completion_budget_is_counted_when_truncation_allowed():
    report = validate_rows(
        [good_row(0), good_row(1)], demo_length=len, max_completion_length=10, truncate_long_demos=True
    )
    assert report.demos_over_budget == 2


def test_demos_with_no_part_to_reveal_are_counted_and_logged(caplog):
    # prefix_demo_part measures the part after the reasoning trace: a demo measured at 0 tokens runs its slots unguided
    rows = [good_row(0), good_row(1, demos=["<think>4</think>4", "2+2=4. answer: 4"])]
    measured = {"2+2=4. answer: 4": 16, "<think>4</think>4": 0}
    with caplog.at_level("WARNING"):
        report = validate_rows(rows, demo_length=measured.__getitem__, max_completion_length=20)
    assert (report.demos_without_part, report.demos_over_budget) == (1, 0)
    assert "1 demos have no part to reveal (prefix_demo_part): their hybrid slots run unguided" in caplog.text


def test_duplicate_ids():
    with pytest.raises(ValueError, match=r"row 2: field 'id' duplicates row 0"):
        validate_rows([good_row(0), good_row(1), good_row(0)])


def test_reward_function_needs_a_missing_column():
    with pytest.raises(ValueError, match=r"'reward_needing_solution' needs column\(s\) \['solution'\]"):
        validate_rows([good_row(0)], reward_funcs=[reward_needing_solution])


def test_prompts_without_demos_are_counted_not_refused():
    report = validate_rows([good_row(0, demos=[]), good_row(1), good_row(2, demos=[])])
    assert report.rows_without_demos == 2


def test_single_demo_column_is_checked_too():
    row = good_row(0)
    del row["demos"]
    row["demo"] = 7
    with pytest.raises(ValueError, match=r"row 0: field 'demo' item 0 must be a non-empty string"):
        validate_rows([row])


# ---- message structure: an unknown role or non-text content would crash the chat template (Jinja) mid-run


def test_chat_message_with_unknown_role():
    prompt = [{"role": "user", "content": "2+2="}, {"role": "robot", "content": "beep"}]
    with pytest.raises(
        ValueError,
        match=r"^row 1: field 'prompt' message 1 has role 'robot'; expected one of "
        r"system, user, assistant, tool$",
    ):
        validate_rows([good_row(0), good_row(1, prompt=prompt)])


def test_chat_message_with_content_none():
    with pytest.raises(ValueError, match=r"^row 0: field 'prompt' message 0 has content None; expected text$"):
        validate_rows([good_row(0, prompt=[{"role": "user", "content": None}])])


# ---- prompt length: with max_prompt_length=None, the model's context bounds prompt + completion


def test_prompt_longer_than_the_context_names_row_and_length():
    # one token per character: 1,000,004 characters -> 1,000,004 tokens > 232 = 256 positions - 24 completion tokens
    budgets = PromptBudgets(len, limit=232, limit_source="the model's context of 256 positions less 24")
    rows = [good_row(0, prompt="2+2="), good_row(1, prompt="x" * 1_000_000 + "2+2=")]
    with pytest.raises(
        ValueError,
        match=r"^row 1: field 'prompt' has 1000004 tokens, more than 232 \(the model's "
        r"context of 256 positions less 24\); shorten the prompt or drop the row$",
    ):
        validate_rows(rows, prompt_budgets=budgets)


def test_prompt_that_the_chat_template_cannot_render_names_the_row():
    def failing_template(prompt):
        raise RuntimeError("template error")

    budgets = PromptBudgets(failing_template, limit=100, limit_source="")
    with pytest.raises(
        ValueError,
        match=r"^row 0: field 'prompt' cannot be rendered by the chat template: "
        r"template error$",
    ):
        validate_rows([good_row(0)], prompt_budgets=budgets)


# ---- answer types: a reward function's `list[T]` annotation declares what it can grade


def grades_text(completions, answer: list[str], **kwargs):
    return [0.0] * len(completions)


def grades_text_or_numbers(completions, answer: list[str | int | float], **kwargs):
    return [0.0] * len(completions)


def test_answer_type_the_reward_function_cannot_grade_is_refused():
    with pytest.raises(
        ValueError,
        match=r"^row 1: field 'answer' is of type list, but reward function "
        r"'grades_text' grades str$",
    ):
        validate_rows([good_row(0), good_row(1, answer=["4"])], reward_funcs=[grades_text])


def test_dict_answer_is_refused_for_a_reward_grading_text_or_numbers():
    with pytest.raises(
        ValueError,
        match=r"^row 0: field 'answer' is of type dict, but reward function "
        r"'grades_text_or_numbers' grades str or int or float$",
    ):
        validate_rows([good_row(0, answer={"value": 4})], reward_funcs=[grades_text_or_numbers])


def test_declared_answer_types_pass():
    rows = [good_row(0, answer="4"), good_row(1, answer=4), good_row(2, answer=4.5)]
    assert validate_rows(rows, reward_funcs=[grades_text_or_numbers]).rows == 3


def test_dataset_without_rows():
    # a limit of 0 or an empty file is named as such, not as a missing 'answer' column
    with pytest.raises(ValueError, match=r"^the training dataset has no rows$"):
        validate_rows([], reward_funcs=[reward_needing_answer])
