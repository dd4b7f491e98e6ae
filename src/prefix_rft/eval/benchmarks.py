"""The seven math benchmarks shipped with the package, read into rows {"id", "problem", "answer"}.

Each benchmark keeps its upstream file format (eval/data/README.md); a small function per format maps a record
to a row, so a user's copy of the same upstream file loads the same way. A benchmark may also come from any local
JSONL/JSON/Parquet file or a Hugging Face hub dataset with `problem`/`question` and `answer` fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from prefix_rft.verify.extract import gold_text, last_boxed

DATA_DIR = Path(__file__).resolve().parent / "data"  # the test sets ship with the evaluation component
Row = dict[str, object]


def _generic(record: dict, index: int) -> Row:
    problem = record.get("problem", record.get("question"))
    if problem is None or record.get("answer") is None:
        raise ValueError(f"record {index} needs a 'problem' (or 'question') and an 'answer' field: {sorted(record)}")
    identifier = record.get("id", record.get("unique_id", index))
    return {"id": identifier, "problem": problem, "answer": gold_text(record["answer"])}


def _boxed_solution(record: dict, index: int) -> Row:
    """aime25 and minerva have no answer field: the gold is the last \\boxed{} of the solution."""
    answer = last_boxed(record["solution"])
    if answer is None:
        raise ValueError(f"record {index}: no \\boxed{{}} answer in its solution")
    return {"id": record.get("idx", index), "problem": record["problem"], "answer": answer}


def _olympiadbench(record: dict, index: int) -> Row:
    # final_answer is a list of one string; for the 94 multi-answer problems it holds them all ("$69$,$84$"), which
    # math-verify reads as a set
    return {"id": record["id"], "problem": record["question"], "answer": ", ".join(record["final_answer"])}


def _gsm8k(record: dict, index: int) -> Row:
    answer = record["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
    return {"id": index, "problem": record["question"], "answer": answer}


# name -> (file under DATA_DIR, record -> row)
BENCHMARKS: dict[str, tuple[str, Callable[[dict, int], Row]]] = {
    "aime24": ("aime24/test.jsonl", _generic),
    "aime25": ("aime25/test.jsonl", _boxed_solution),
    "amc": ("amc/test.json", _generic),
    "math500": ("math500/test.jsonl", _generic),
    "minerva": ("minerva/test.jsonl", _boxed_solution),
    "olympiadbench": ("olympiadbench/test.jsonl", _olympiadbench),
    "gsm8k": ("gsm8k/test.jsonl", _gsm8k),
}


def load_benchmark(spec: str, limit: int | None = None) -> tuple[str, list[Row]]:
    """Rows of a benchmark given as `NAME` (shipped), `NAME=PATH` (local file) or `NAME=HUB_ID[:SPLIT]`.

    A shipped NAME with another source keeps that benchmark's record format; any other name expects
    `problem`/`question` and `answer` fields. Returns (name, rows), at most `limit` rows.
    """
    name, _, source = spec.partition("=")
    if not source and name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; shipped: {', '.join(BENCHMARKS)} (or NAME=PATH_OR_HUB_ID)")
    file, to_row = BENCHMARKS.get(name, ("", _generic))
    if not source:
        records = read_records(DATA_DIR / file)
    elif Path(source).exists():
        records = read_records(Path(source))
    else:
        records = _hub_records(source)
    records = records[:limit] if limit is not None else records
    return name, [to_row(record, index) for index, record in enumerate(records)]


def read_records(path: Path) -> list[dict]:
    """Records of a .jsonl, .json (a list) or .parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _hub_records(source: str) -> list[dict]:
    """A hub dataset `ID` or `ID:SPLIT` (default split "test"); needs network access or a local HF cache."""
    from datasets import load_dataset

    dataset_id, _, split = source.partition(":")
    return list(load_dataset(dataset_id, split=split or "test"))
