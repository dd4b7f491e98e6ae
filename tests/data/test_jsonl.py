"""JSONL errors name the file, the line as an editor numbers it (blank lines count) and the fix."""

import re

import pytest

from prefix_rft.data.jsonl import JsonlError, iter_jsonl, read_jsonl


def refused(path, message):
    with pytest.raises(JsonlError, match=f"^{re.escape(message)}$"):
        read_jsonl(path)


def test_objects_come_with_their_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}')  # a blank line 2, no line end after line 3
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_malformed_line_is_named_by_its_own_line_number(tmp_path):
    # json.loads on one line says "line 1" whatever line it was; here it is line 3 (line 2 is blank).
    # '{"a": 1,}': the 9th character '}' is where a property name was expected.
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 1,}\n')
    refused(
        path,
        f"{path}, line 3, column 9: not valid JSON (Expecting property name enclosed in double quotes); "
        "each line must hold one complete JSON object",
    )


def test_truncated_last_line_says_the_file_looks_cut_off(tmp_path):
    # '{"a": "b' ends inside the string that starts at column 7, and has no line end
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": "x"}\n{"a": "b')
    refused(
        path,
        f"{path}, line 2, column 7: not valid JSON (Unterminated string starting at); the line has no line end, so "
        "the file looks cut off: re-create it or delete that line",
    )


def test_non_utf8_byte_is_named_with_line_and_position(tmp_path):
    # b'{"a": "\xff"}': bytes 1-7 are '{"a": "', the 8th is 0xff (Latin-1 'ÿ')
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": "x"}\n{"a": "\xff"}\n')
    refused(path, f"{path}, line 2: not valid UTF-8 (byte 0xff at byte 8 of the line); save the file as UTF-8")


def test_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    refused(path, f"{path}, line 2: expected a JSON object {{...}}, got list")


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.jsonl", f"{tmp_path / 'nope.jsonl'}: no such file")


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_file_without_rows(tmp_path, text):
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    refused(path, f"{path} has no rows: the file is empty or holds only blank lines")


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert read_jsonl(path) == [{"a": 1}]
