"""Local training files that cannot be trained on are refused naming the file, the line (or row) and the fix."""

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefix_rft.data import load_prefix_rft_dataset
from prefix_rft.data.loading import check_local_source, looks_local

ROW = '{"prompt": "1+1=", "demos": ["2"], "answer": "2"}\n'


def refused(path, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        load_prefix_rft_dataset(str(path))


def refused_text(path, text, message):
    """`text` written to `path` is refused with `message` ({path} filled in)."""
    path.write_text(text)
    refused(path, message.format(path=path))


def test_good_file_loads(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(ROW * 3)
    assert len(load_prefix_rft_dataset(str(path))) == 3


def test_non_utf8_file_names_line_and_byte(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(ROW.encode() + b'{"prompt": "caf\xe9"}\n')  # Latin-1 e-acute, byte 16 of line 2
    refused(path, f"{path}, line 2: not valid UTF-8 (byte 0xe9 at byte 16 of the line); save the file as UTF-8")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(  # '{"prompt": "1+1' : the string opens at column 12, and the line has no line end
            ROW + '{"prompt": "1+1',
            "{path}, line 2, column 12: not valid JSON (Unterminated string starting at); the line has no line end, "
            "so the file looks cut off: re-create it or delete that line",
            id="truncated last line",
        ),
        pytest.param("", "{path} has no rows: the file is empty or holds only blank lines", id="no rows"),
        pytest.param(
            ROW + '{"prompt": "1+2=", "demos": ["3"], "answer": ["3"]}\n',
            "{path}, line 2: field 'answer' is a list here but text on line 1; a field must hold one type on every "
            "line",
            id="field type changes",
        ),
    ],
)
def test_jsonl_file_that_cannot_be_a_table_names_file_and_line(tmp_path, text, message):
    refused_text(tmp_path / "train.jsonl", text, message)


def test_parquet_file_without_rows(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path)
    refused(path, f"{path} has no rows: write at least one row")


def test_missing_local_file(tmp_path):
    refused(tmp_path / "train.jsonl", f"{tmp_path / 'train.jsonl'}: no such file")


def test_non_utf8_csv_names_line_and_byte(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"prompt,answer\n1+1=,2\ncaf\xe9,3\n")  # Latin-1 e-acute: byte 4 of line 3
    refused(path, f"{path}, line 3: not valid UTF-8 (byte 0xe9 at byte 4 of the line); save the file as UTF-8")


def test_csv_with_a_header_only(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("prompt,answer\n")
    refused(path, f"{path} has no rows: a header line and at least one row are needed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[\n {"prompt": "1+1=", "answer": "2"},\n {"prompt": "1+2=" "answer": "3"}\n]',
            # line 3 ' {"prompt": "1+2=" "answer"': the comma is missing before column 20
            "{path}, line 3, column 20: not valid JSON (Expecting ',' delimiter)",
            id="syntax error",
        ),
        pytest.param("[]", "{path} has no rows: the array is empty", id="empty array"),
        pytest.param(
            '[{"prompt": "1+1=", "answer": "2"}, "3"]',
            "{path}, item 2: expected a JSON object {{...}}, got str",
            id="not an object",
        ),
        pytest.param(
            '[{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+2=", "answer": 3}]',
            "{path}, item 2: field 'answer' is a number here but text on item 1; a field must hold one type on every "
            "item",
            id="field type changes",
        ),
    ],
)
def test_json_array_file_that_cannot_be_a_table_names_the_line_or_item(tmp_path, text, message):
    refused_text(tmp_path / "train.json", text, message)


def test_good_json_array_and_csv_load(tmp_path):
    array, table = tmp_path / "train.json", tmp_path / "train.csv"
    array.write_text('[{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+2=", "answer": "3"}]')
    table.write_text("prompt,answer\n1+1=,2\n1+2=,3\n1+3=,4\n")
    assert len(load_prefix_rft_dataset(str(array))) == 2
    assert len(load_prefix_rft_dataset(str(table))) == 3


def test_luffy_row_without_a_ground_truth_is_named():
    from datasets import Dataset

    from prefix_rft.data import from_luffy

    prompt = [{"role": "user", "content": "1+1="}]
    rows = [
        {"prompt": prompt, "target": "2", "reward_model": {"ground_truth": "2"}},
        {"prompt": prompt, "target": "2", "reward_model": None},
    ]
    with pytest.raises(ValueError) as error:
        from_luffy(Dataset.from_list(rows))
    assert str(error.value) == (
        "row 1: the luffy format needs fields 'prompt' and 'reward_model' holding 'ground_truth'; the row has "
        "['prompt', 'reward_model', 'target'], reward_model None"
    )


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("org/name", False),  # a hub id
        ("gpt2", False),
        ("./data", True),
        ("/abs/data", True),
        ("~/data", True),
        ("data/train/rows", True),  # more '/'s than a hub id has
        ("C:\\data", True),
        ("hf://datasets/org/name/data", False),  # read from the hub by `datasets`
        ("buckets/org/bucket/dir", False),
    ],
)
def test_looks_local(name, local):
    assert looks_local(name) is local


def test_missing_nested_dataset_path_is_refused_before_datasets_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused("data/train/rows", "data/train/rows: no such file or folder")


@pytest.mark.parametrize("name", ["org/name", "hf://datasets/org/name/data", "buckets/org/bucket/dir"])
def test_hub_dataset_names_are_left_to_datasets(name):
    check_local_source(name)  # no error: `datasets` reads these from the hub
