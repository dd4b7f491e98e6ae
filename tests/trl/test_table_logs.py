"""What scoring adds to TRL's logs (trl/table_logs.py): demo prefix marks in the completions table, and the
`log_extra` / `log_metric` values of reward functions called on part of a batch, merged once per batch."""

from types import SimpleNamespace

import pytest

from prefix_rft.trl.table_logs import TableLogsMixin, mark_prefix, row_weighted_mean


def test_row_weighted_mean_weighs_each_call_by_its_rows():
    # calls of 8, 4, 2 and 2 rows (TRAPO's in-step micro-groups of a batch of two groups): (4 + 4 + 0 + 2) / 16
    assert row_weighted_mean([(0.5, 8), (1.0, 4), (0.0, 2), (1.0, 2)]) == 0.625


def test_mark_prefix_marks_text_and_chat_completions_that_start_with_the_prefix():
    assert mark_prefix("12+30 is 42", "12+30 is") == "12+30 is ⟦/prefix⟧  42"
    chat = [{"role": "assistant", "content": "ab cd"}]
    assert mark_prefix(chat, "ab") == [{"role": "assistant", "content": "ab ⟦/prefix⟧  cd"}]
    assert chat[0]["content"] == "ab cd"  # the logged message is replaced, not edited
    # decoding can merge tokens across the prefix's end: then the text is left as it was
    assert mark_prefix("abc", "abd") == "abc"
    assert mark_prefix([{"role": "assistant", "content": "abc"}], "abd") == [{"role": "assistant", "content": "abc"}]


def part_of_a_batch(rows: int) -> SimpleNamespace:
    """A stand-in trainer whose rollout holds a batch of `rows` local rows, nothing logged yet."""
    return SimpleNamespace(_rollout=SimpleNamespace(rows=[None] * rows, extra_logs={}, metric_logs={}))


def test_log_extra_of_a_pass_over_some_rows_lands_at_their_places():
    trainer = part_of_a_batch(4)
    log_extra = TableLogsMixin._row_logger(trainer, [1, 3])
    log_extra("judge", ["x", "y"])
    TableLogsMixin._row_logger(trainer, [0])("judge", ["w"])
    assert trainer._rollout.extra_logs == {"judge": ["w", "x", None, "y"]}
    with pytest.raises(ValueError, match=r"log_extra\('judge'\) got 1 values for 2 completions"):
        log_extra("judge", ["x"])


def test_log_metric_of_a_pass_keeps_each_value_with_the_pass_rows():
    trainer = part_of_a_batch(4)
    TableLogsMixin._metric_logger(trainer, 3)("acc", 1)
    TableLogsMixin._metric_logger(trainer, 1)("acc", 0.5)
    assert trainer._rollout.metric_logs == {"acc": [(1.0, 3), (0.5, 1)]}
