import json

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
