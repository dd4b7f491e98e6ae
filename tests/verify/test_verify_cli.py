import json

import pytest

from prefix_rft.verify.cli import main


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_cli_prints_accuracy_and_writes_scores(tmp_path, capsys):
    data, out = tmp_path / "pairs.jsonl", tmp_path / "scores.jsonl"
    write_jsonl(
        data,
        [
            {"answer": "1/2", "completion": r"\boxed{0.5}"},
            {"answer": "3", "completion": r"\boxed{4}"},
            {"answer": "x+1", "completion": r"so $\boxed{1+x}$"},
            {"answer": "7", "completion": "no box"},
        ],
    )
    code = main([str(data), "--gold-field", "answer", "--prediction-field", "completion", "--scores-out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "accuracy: 0.5000 (2/4)" in printed  # rows 0 and 2 are right
    assert '"calls": 4' in printed and '"timeouts": 0' in printed
    assert [json.loads(line)["score"] for line in out.read_text().splitlines()] == [1.0, 0.0, 1.0, 0.0]


def test_cli_rejects_a_missing_gold_naming_the_row(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"gold": "1", "prediction": "1"}, {"gold": "", "prediction": "2"}])
    assert main([str(data)]) == 2
    assert "row 1: field 'gold'" in capsys.readouterr().err


def refused(path, capsys, message):
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"prefix-rft verify: {message}\n"
    assert "Traceback" not in captured.err and captured.out == ""


def test_missing_file_is_named(tmp_path, capsys):
    refused(tmp_path / "nope.jsonl", capsys, f"{tmp_path / 'nope.jsonl'}: no such file")


def test_malformed_line_is_reported_with_its_own_line_number(tmp_path, capsys):
    # the file's line, 2 (json.loads on the line alone says 1); '{"gold": "1", "prediction": "1"' ends at column 31
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"gold": "1", "prediction": "1"}\n{"gold": "1", "prediction": "1"\n')
    refused(
        data,
        capsys,
        f"{data}, line 2, column 32: not valid JSON (Expecting ',' delimiter); each line must hold one complete JSON "
        "object",
    )


def test_non_utf8_file_is_named_with_line(tmp_path, capsys):
    # '{"gold": "' is 10 bytes, so the Latin-1 byte 0xe9 is byte 11 of line 1
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b'{"gold": "\xe9", "prediction": "1"}\n')
    refused(
        data, capsys, f"{data}, line 1: not valid UTF-8 (byte 0xe9 at byte 11 of the line); save the file as UTF-8"
    )


def test_line_that_is_not_an_object(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"gold": "1", "prediction": "1"}\n["1", "1"]\n')
    refused(data, capsys, f"{data}, line 2: expected a JSON object {{...}}, got list")


def test_empty_file_is_an_error_not_an_accuracy(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n")
    refused(data, capsys, f"{data} has no rows: the file is empty or holds only blank lines")


def test_dict_gold_is_refused_naming_line_row_and_field(tmp_path, capsys):
    # refused, rather than graded as the text "{'value': 1}" for a silent 0
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"gold": "1", "prediction": "1"}, {"gold": {"value": 1}, "prediction": "1"}])
    refused(data, capsys, f"{data}, line 2: row 1: field 'gold': gold answer must be text or a number, got dict")


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--workers", "0", "must be a positive integer, got 0"),
        ("--timeout", "0", "must be a positive number, got 0"),
        ("--timeout", "nan", "must be a positive number, got nan"),
    ],
)
def test_counts_and_timeouts_that_cannot_work_are_refused_by_option(tmp_path, capsys, flag, value, problem):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"gold": "1", "prediction": "1"}])
    with pytest.raises(SystemExit) as exit_info:
        main([str(data), flag, value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"prefix-rft verify: error: argument {flag}: {problem}"


def test_scores_out_that_is_a_folder_is_refused_before_grading(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"gold": "1", "prediction": "1"}])
    assert main([str(data), "--scores-out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"prefix-rft verify: --scores-out {tmp_path}: is a folder; give the path of a file to write\n"
    )
    assert captured.out == ""  # no accuracy line: nothing was graded


def test_scores_out_below_a_file_is_refused_before_grading(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"gold": "1", "prediction": "1"}])
    target = data / "scores.jsonl"
    assert main([str(data), "--scores-out", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"prefix-rft verify: --scores-out {target}: cannot be created, {data} is a file, not a folder\n"
    )


def test_a_folder_given_as_the_file(tmp_path, capsys):
    refused(tmp_path, capsys, f"{tmp_path}: is a folder; give a JSONL file")
