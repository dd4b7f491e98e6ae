"""Every bad input named in the reliability issue gets an error naming the row and the field, or a count."""

import pytest

from prefix_rft.data import validate_rows


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
        validate_rows([good_row(0)], prompt_length=lambda p: 12, max_prompt_length=16, min_prefix_len=5)


def test_demo_over_completion_budget_is_an_error_by_default():
    # the demo "2+2=4. answer: 4" has 16 characters (one token each) > 10
    with pytest.raises(ValueError, match=r"row 0: field 'demos' item 0 has 16 tokens, more than max_completion"):
        validate_rows([good_row(0)], demo_length=len, max_completion_length=10)


def test_demo_over_completion_budget_is_counted_when_truncation_allowed():
    report = validate_rows(
        [good_row(0), good_row(1)], demo_length=len, max_completion_length=10, truncate_long_demos=True
    )
    assert report.demos_over_budget == 2


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
