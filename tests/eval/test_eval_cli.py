"""`prefix-rft eval` end to end: the tiny random model on all seven shipped benchmarks (accuracy ~0)."""

import json

import pytest

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


def three_problems(tmp_path):
    data = tmp_path / "three.jsonl"
    data.write_text("".join(json.dumps({"question": f"{n}+{n}?", "answer": 2 * n}) + "\n" for n in range(3)))
    return data


@pytest.mark.parametrize(
    ("flag", "value"), [("--limit", "-1"), ("--limit", "0"), ("--k", "0"), ("--k", "-1"), ("--batch-size", "0")]
)
def test_counts_below_one_are_refused_by_name(tiny_model_dir, tmp_path, capsys, flag, value):
    # refused by name: --limit -1 would slice [:-1] (2 of 3 problems); --k 0 and --batch-size 0 would crash in range()
    argv = ["--model", str(tiny_model_dir), "--benchmarks", f"three={three_problems(tmp_path)}", flag, value]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--max-new-tokens", "2", "--output-dir", str(tmp_path / "eval")])
    assert exit_info.value.code == 2
    assert (
        f"prefix-rft eval: error: argument {flag}: must be a positive integer, got {value}" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--temperature", "0", "must be a positive number (for greedy decoding use --greedy), got 0"),
        ("--temperature", "-1", "must be a positive number (for greedy decoding use --greedy), got -1"),
        ("--temperature", "nan", "must be a positive number (for greedy decoding use --greedy), got nan"),
        ("--top-p", "0", "must be in (0, 1], got 0"),
        ("--top-p", "2", "must be in (0, 1], got 2"),
    ],
)
def test_sampling_values_out_of_range_are_refused_by_name(tmp_path, capsys, flag, value, reason):
    # --temperature 0 crashed in generate after the model loaded; --top-p 2 filtered nothing, silently
    argv = ["--model", str(tmp_path / "never-loaded"), f"{flag}={value}", "--output-dir", str(tmp_path / "eval")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"prefix-rft eval: error: argument {flag}: {reason}" in capsys.readouterr().err


def test_greedy_decoding_takes_any_temperature(tmp_path, capsys):
    # --greedy --temperature 0 was refused by --temperature although greedy decoding never reads it; the run goes on
    # to the next check, here a --model that does not exist
    model = tmp_path / "never-loaded"
    argv = ["--model", str(model), "--greedy", "--temperature", "0", "--output-dir", str(tmp_path / "eval")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"prefix-rft eval: --model {model}: no such file or directory, and not a hub id of the form org/name\n"
    )


def test_vllm_backend_without_vllm_is_refused_by_its_option(tmp_path, monkeypatch, capsys):
    # it was blamed on --model ("cannot be loaded (No module named 'vllm')"), after the benchmarks were read
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    argv = ["--model", str(tmp_path / "never-loaded"), "--backend", "vllm", "--output-dir", str(tmp_path / "eval")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "prefix-rft eval: --backend vllm: vLLM is not installed; pip install 'prefix-rft[vllm]' on a GPU machine, "
        "or use --backend hf\n"
    )


def test_malformed_benchmark_line_is_named_by_its_line(tiny_model_dir, tmp_path, capsys):
    # line 2 '{"question": "q", "answer": 1' stops at column 30 (29 characters); json.loads alone says "line 1"
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "q", "answer": 1}\n{"question": "q", "answer": 1\n')
    argv = ["--model", str(tiny_model_dir), "--benchmarks", f"mine={data}", "--output-dir", str(tmp_path / "eval")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"prefix-rft eval: {data}, line 2, column 30: not valid JSON (Expecting ',' delimiter); each line must hold "
        "one complete JSON object\n"
    )


def test_missing_model_path_is_named(tmp_path, capsys):
    missing = tmp_path / "no" / "model"
    assert main(["--model", str(missing), "--benchmarks", "aime24", "--output-dir", str(tmp_path / "eval")]) == 2
    assert capsys.readouterr().err == (
        f"prefix-rft eval: --model {missing}: no such file or directory, and not a hub id of the form org/name\n"
    )


def eval_refused(tmp_path, capsys, benchmarks: str, message: str, output_dir=None) -> None:
    # "org/model" is a well-formed hub id that is never loaded: the bad input is found first
    out = output_dir or tmp_path / "eval"
    assert main(["--model", "org/model", "--benchmarks", benchmarks, "--output-dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"prefix-rft eval: {message}\n"
    assert captured.out == ""


def test_user_benchmark_without_an_answer_names_benchmark_file_and_record(tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "1+1", "answer": 2}\n{"question": "2+2", "solution": "4"}\n')
    eval_refused(
        tmp_path,
        capsys,
        f"mine={data}",
        f"benchmark 'mine' ({data}), record 1: needs a 'problem' (or 'question') and an 'answer' field; the record "
        "has ['question', 'solution']",
    )


def test_shipped_benchmark_name_on_a_file_of_another_format_names_the_fields_it_reads(tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')  # gsm8k's format reads question and answer
    eval_refused(
        tmp_path,
        capsys,
        f"gsm8k={data}",
        f"benchmark 'gsm8k' ({data}), record 0: no field 'question'; the gsm8k format reads 'question', 'answer' and "
        "the record has ['answer', 'problem'] (give the file another name, e.g. mine=PATH, to read 'problem' and "
        "'answer')",
    )


def test_benchmark_path_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    eval_refused(
        tmp_path,
        capsys,
        f"mine={missing}",
        f"benchmark 'mine': {missing}: no such file; give a .jsonl, .json or .parquet file",
    )


def test_output_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    eval_refused(
        tmp_path,
        capsys,
        "aime24",
        f"--output-dir {taken}: is a file, not a folder; give a folder for the outputs",
        output_dir=taken,
    )


def test_benchmark_file_of_a_format_not_read(tmp_path, capsys):
    data = tmp_path / "mine.csv"
    data.write_text("problem,answer\n1+1,2\n")
    eval_refused(
        tmp_path,
        capsys,
        f"mine={data}",
        f"benchmark 'mine' ({data}): a .csv file is not read; give a .jsonl, .json or .parquet file",
    )


def test_model_folder_that_does_not_load_is_named(tmp_path, capsys):
    empty = tmp_path / "model"
    empty.mkdir()  # exists, so it passes as a path, but holds no model
    three = three_problems(tmp_path)
    assert main(["--model", str(empty), "--benchmarks", f"three={three}", "--output-dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prefix-rft eval: --model {empty}: cannot be loaded (") and "Traceback" not in err
