"""Property-based: any row, however malformed, either passes the trainer's validation and can then be rendered and
graded, or is refused before the first step with a message naming its row and field.

Never a traceback from inside a library (Jinja, numpy, tokenizers), never a hang, never a silent zero reward: a row
that passes is graded 1.0 when a completion states its answer. Fixed seed and a bounded number of examples, so the
default test run stays deterministic and short.
"""

import re
from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefix_rft import PrefixRFTTrainer
from prefix_rft.data.jsonl import JsonlError, iter_jsonl
from prefix_rft.tasks import task_reward
from prefix_rft.tasks.model import build_model
from tests.helpers import make_dataset, train_args

ROW_AND_FIELD = re.compile(r"row (\d+): field '(prompt|demos|demo|answer|id)'")
MISSING_COLUMN = re.compile(r"reward function 'task_reward' needs column\(s\) \['answer'\], absent from the dataset")
FILE_AND_LINE = re.compile(r".+\.jsonl(, line (\d+)(, column \d+)?: .+| has no rows: .+)")
HARNESS = settings(
    max_examples=200,
    derandomize=True,  # a fixed seed: CI stays deterministic
    database=None,
    deadline=timedelta(seconds=5),  # a hang fails the example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text of every kind the issue names: empty, blank, ordinary, non-ASCII, longer than the model's context (232 prompt
# tokens: 256 positions - 24 completion tokens).
texts = st.one_of(st.just(""), st.just("   "), st.text(max_size=12), st.just("x" * 5_000))
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
roles = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "robot", "", "USER"]), wrong_types)
messages = st.one_of(
    st.fixed_dictionaries({"role": roles, "content": st.one_of(texts, wrong_types)}),
    st.fixed_dictionaries({}, optional={"role": roles, "content": texts, "text": texts}),
    texts,
)
prompts = st.one_of(texts, st.lists(messages, max_size=3), wrong_types)
demos = st.one_of(st.lists(st.one_of(texts, wrong_types), max_size=3), texts, wrong_types)
# String answers are integers: the task grades `answer: N`, so other text is a content error no type check can see.
answers = st.one_of(
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.lists(st.just("4"), max_size=2),
    wrong_types,
    texts.filter(lambda t: not t.strip()),
)
FIELDS = {
    "prompt": prompts,
    "demos": demos,
    "demo": st.one_of(texts, wrong_types),
    "answer": answers,
    "id": st.integers(0, 2),
}
GOOD_ROW = {"prompt": [{"role": "user", "content": "12+30="}], "demos": ["12+30 is 42. answer: 42"], "answer": "42"}


@st.composite
def rows(draw) -> dict:
    """A good row with up to three faults: a field dropped or replaced by a malformed value, an extra field, or a chat
    message of any shape."""
    row = dict(GOOD_ROW)
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from([*FIELDS, "extra", "message"]))
        if field == "message":  # one more chat message, of any shape
            row["prompt"] = [*GOOD_ROW["prompt"], draw(messages)]
        elif draw(st.booleans()):
            row.pop(field, None)
        else:
            row[field] = draw(FIELDS.get(field, wrong_types))
    return row


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return PrefixRFTTrainer(
        model=build_model(tokenizer, "test"),
        reward_funcs=[task_reward],
        args=train_args(tmp_path_factory.mktemp("harness")),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def assert_trains_or_is_refused_by_name(trainer, batch: list[dict]) -> None:
    try:
        trainer._validate_rows(batch)
    except ValueError as error:
        message = str(error)
        named = ROW_AND_FIELD.match(message)
        assert named or MISSING_COLUMN.fullmatch(message), message
        if named:
            assert int(named[1]) < len(batch), message
        return
    for row in batch:
        trainer._prompt_length(row["prompt"])  # the chat template renders it, as generation will
        assert task_reward([f"the sum\nanswer: {row['answer']}"], answer=[row["answer"]]) == [1.0], row


@HARNESS
@given(batch=st.lists(rows(), min_size=1, max_size=3))
def test_any_row_trains_or_is_refused_naming_row_and_field(trainer, batch):
    assert_trains_or_is_refused_by_name(trainer, batch)


GOOD_LINE = b'{"prompt": [{"role": "user", "content": "1+2="}], "demos": ["1+2=3. answer: 3"], "answer": "3"}'
lines = st.one_of(
    st.just(GOOD_LINE), st.just(b""), st.binary(max_size=16), st.just(b"[1, 2]"), st.just(GOOD_LINE[:40])
)


@HARNESS
@given(content=st.lists(lines, max_size=4).map(b"\n".join))
def test_any_file_is_read_or_refused_naming_file_and_line(trainer, tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "harness.jsonl"
    path.write_bytes(content)
    try:
        records = [row for _, row in iter_jsonl(path)]
    except JsonlError as error:
        assert FILE_AND_LINE.fullmatch(str(error)), str(error)
        return
    assert_trains_or_is_refused_by_name(trainer, records)
