"""`prefix-rft eval` end to end: the tiny random model on all seven shipped benchmarks (accuracy ~0)."""

import json

from prefix_rft.eval.cli import main

SEVEN = ["aime24", "aime25", "amc", "math500", "minerva", "olympiadbench", "gsm8k"]


def test_eval_runs_all_seven_benchmarks_and_writes_table_json_and_samples(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = [
        "--model",
        str(tiny_model_dir),
        "--k",
        "2",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0

    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["benchmark", "problems", "avg@2", "pass@1", "pass@2"]
    assert [line.split()[0] for line in table.splitlines()[1:8]] == SEVEN
    assert "average (6)" in table  # Table 1's six, without gsm8k

    report = json.loads((out / "results.json").read_text())
    assert list(report["benchmarks"]) == SEVEN
    assert all(metrics["problems"] == 2 and "pass@2" in metrics for metrics in report["benchmarks"].values())
    assert report["average"]["benchmarks"] == SEVEN[:6]
    assert report["config"]["temperature"] == 0.6 and report["config"]["top_p"] == 0.95
    assert report["verifier"]["calls"] == 7 * 2 * 2 and report["verifier"]["timeouts"] == 0

    for name in SEVEN:
        samples = [json.loads(line) for line in (out / f"{name}.samples.jsonl").read_text().splitlines()]
        assert len(samples) == 2 * 2  # 2 problems x 2 samples
        assert set(samples[0]) == {"id", "sample", "prompt", "completion", "extracted", "answer", "score"}
        assert samples[0]["prompt"].endswith("within \\boxed{}<|im_end|>\n<|im_start|>assistant\n")


def test_eval_greedy_on_a_local_file_with_a_system_template(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"question": f"{n}+{n}?", "answer": 2 * n}) + "\n" for n in range(3)))
    out = tmp_path / "eval"
    argv = ["--model", str(tiny_model_dir), "--benchmarks", f"mine={data}", "--greedy", "--template", "qwen_math_cot"]
    assert main([*argv, "--max-new-tokens", "4", "--output-dir", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["config"]["k"] == 1
    assert report["benchmarks"]["mine"]["problems"] == 3 and "avg@1" in report["benchmarks"]["mine"]
    first = json.loads((out / "mine.samples.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|im_start|>system\nPlease reason step by step")
