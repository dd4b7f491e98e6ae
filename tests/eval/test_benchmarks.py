import json

import pytest

from prefix_rft.eval.benchmarks import load_benchmark
from prefix_rft.eval.prompts import BOXED_INSTRUCTION, build_messages

# (problems, first answer, last answer), read off the shipped files by hand
SHIPPED = {
    "aime24": (30, "204", "902"),
    "aime25": (30, "70", "240"),  # the \boxed{} of `solution`
    "amc": (83, "142", "8"),  # 142.0 in the file
    "math500": (500, r"\left( 3, \frac{\pi}{2} \right)", r"106^\circ"),
    "minerva": (272, "1.6", "10.1"),  # last \boxed{} of `solution`
    "olympiadbench": (675, "2", "11"),  # final_answer ["2"]
    "gsm8k": (1319, "18", "14"),  # after "####"
}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_benchmark_loads_every_problem(name):
    problems, first, last = SHIPPED[name]
    loaded_name, rows = load_benchmark(name)
    assert loaded_name == name and len(rows) == problems
    assert (rows[0]["answer"], rows[-1]["answer"]) == (first, last)
    assert all(row["problem"] and row["answer"] for row in rows)


def test_limit_takes_the_first_problems():
    _, rows = load_benchmark("aime24", limit=2)
    assert [row["answer"] for row in rows] == ["204", "113"]


def test_olympiadbench_keeps_several_answers_in_one_gold():
    _, rows = load_benchmark("olympiadbench")
    assert "$69$,$84$" in {row["answer"] for row in rows}  # final_answer ["$69$,$84$"]


def test_gsm8k_answer_drops_thousands_separators(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "work\n#### 1,200"}) + "\n")
    assert load_benchmark(f"gsm8k={path}")[1] == [{"id": 0, "problem": "q", "answer": "1200"}]


def test_local_file_with_generic_fields(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"question": "1+1?", "answer": 2}, {"problem": "2+2?", "answer": "4", "id": "b"}]))
    name, rows = load_benchmark(f"mine={path}")
    assert name == "mine"
    assert rows == [{"id": 0, "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"}]


def test_local_file_without_answer_is_rejected(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(ValueError, match="record 0"):
        load_benchmark(f"bad={path}")


@pytest.mark.parametrize("source", ["runs/eval/mine", "C:\\bench\\mine"])
def test_missing_local_path_is_named_without_asking_the_hub(tmp_path, monkeypatch, source):
    # more '/'s than a hub id `org/name` has, or a backslash: a path (data.looks_local), never looked up on the hub
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as error:
        load_benchmark(f"mine={source}")
    assert str(error.value) == f"benchmark 'mine': {source}: no such file; give a .jsonl, .json or .parquet file"


def test_unknown_name_without_source_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("aime26")


def test_paper_prompt_has_no_system_and_ends_with_the_instruction():
    assert build_messages("What is 1+1?", "no_system") == [
        {
            "role": "user",
            "content": "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}",
        }
    ]


def test_system_prompt_templates():
    sys_wo_format = build_messages("Q", "sys_wo_format")
    assert sys_wo_format[0]["role"] == "system" and sys_wo_format[0]["content"].startswith("Your task is to follow")
    assert sys_wo_format[1] == {"role": "user", "content": "Q"}
    assert build_messages("Q", "qwen_math_cot")[0] == {"role": "system", "content": BOXED_INSTRUCTION + "."}


def test_unknown_template_is_rejected():
    with pytest.raises(ValueError, match="template"):
        build_messages("Q", "luffy")
