"""The seven math benchmarks shipped with the package, read into rows {"id", "problem", "answer"}.

Each benchmark keeps its upstream file format (eval/data/README.md); a small function per format maps a record
to a row, so a user's copy of the same upstream file loads the same way. A benchmark may also come from any local
JSONL/JSON/Parquet file or a Hugging Face hub dataset with `problem`/`question` and `answer` fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from prefix_rft.data.loading import looks_local
from prefix_rft.setup_errors import blame
from prefix_rft.verify.extract import gold_text, last_boxed

DATA_DIR = Path(__file__).resolve().parent / "data"  # the test sets ship with the evaluation component
Row = dict[str, object]


def _generic(record: dict, index: int) -> Row:
    problem = record.get("problem", record.get("question"))
    if problem is None or record.get("answer") is None:
        raise ValueError(f"needs a 'problem' (or 'question') and an 'answer' field; the record has {sorted(record)}")
    identifier = record.get("id", record.get("unique_id", index))
    return {"id": identifier, "problem": problem, "answer": gold_text(record["answer"])}


def _boxed_solution(record: dict, index: int) -> Row:
    """aime25 and minerva have no answer field: the gold is the last \\boxed{} of the solution."""
    answer = last_boxed(record["solution"])
    if answer is None:
        raise ValueError("no \\boxed{} answer in its solution")
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


# The fields each shipped format reads (named when a user's file for that benchmark lacks one).
_FIELDS = {
    _boxed_solution: ("problem", "solution"),
    _olympiadbench: ("id", "question", "final_answer"),
    _gsm8k: ("question", "answer"),
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
    where = f"benchmark {name!r} ({source or DATA_DIR / file})"
    if not source:
        records = read_records(DATA_DIR / file)
    elif Path(source).is_file():
        if Path(source).suffix not in (".jsonl", ".json", ".parquet"):
            raise ValueError(
                f"{where}: a {Path(source).suffix or 'extensionless'} file is not read; give a .jsonl, "
                ".json or .parquet file"
            )
        with blame(where, "cannot be read", OSError, ValueError):
            records = read_records(Path(source))
    elif Path(source).exists() or Path(source).suffix in (".jsonl", ".json", ".parquet") or looks_local(source):
        problem = "is a folder" if Path(source).is_dir() else "no such file"  # a path, not a hub id `org/name`
        raise ValueError(f"benchmark {name!r}: {source}: {problem}; give a .jsonl, .json or .parquet file")
    else:
        with blame(where, "no such local file, and it cannot be loaded from the hub"):
            records = _hub_records(source)
    records = records[:limit] if limit is not None else records
    return name, [_to_row(where, name, to_row, record, index) for index, record in enumerate(records)]


def _to_row(where: str, name: str, to_row: Callable[[dict, int], Row], record: dict, index: int) -> Row:
    """`to_row(record, index)`, its failures named by benchmark, file and record, with the fields the record has."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}, record {index}: expected an object of fields, got {type(record).__name__}")
    try:
        return to_row(record, index)
    except KeyError as error:
        needs = ", ".join(map(repr, _FIELDS.get(to_row, error.args)))
        raise ValueError(
            f"{where}, record {index}: no field {error.args[0]!r}; the {name} format reads {needs} and the record "
            f"has {sorted(record)} (give the file another name, e.g. mine=PATH, to read 'problem' and 'answer')"
        ) from None
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{where}, record {index}: {error}") from None


def read_records(path: Path) -> list[dict]:
    """Records of a .jsonl, .json (a list) or .parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        records = json.loads(text)
        if not isinstance(records, list):
            raise ValueError(f"expected a JSON list of records, got {type(records).__name__}")
        return records
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _hub_records(source: str) -> list[dict]:
    """A hub dataset `ID` or `ID:SPLIT` (default split "test"); needs network access or a local HF cache."""
    from datasets import load_dataset

    dataset_id, _, split = source.partition(":")
    return list(load_dataset(dataset_id, split=split or "test"))
