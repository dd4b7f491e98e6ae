"""Loading datasets in our schema and in the paper's training-set schema (LUFFY / OpenR1-Math-46k)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from prefix_rft.data.jsonl import decode_line, iter_jsonl
from prefix_rft.setup_errors import blame

LUFFY_HUB_NAME = "Elliott/Openr1-Math-46k-8192"
_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_FORMAT_NAMES = "a .jsonl, .json, .parquet or .csv file, a folder of them, or a hub dataset id"


def row_demos(row: dict[str, Any]) -> list[str]:
    """The demonstrations of a row: its `demos` list, or its single `demo`, or none."""
    demos = row.get("demos")
    if demos is None:
        demo = row.get("demo")
        return [demo] if demo else []
    return list(demos)


def _load(path_or_name: str, split: str, name: str | None = None):
    """A local file in one of `_LOCAL_FORMATS` (checked first, so errors name the file and line) or a hub dataset
    (or local folder) with its subset `name`."""
    # Deferred: `import prefix_rft.data` stays light (`prefix-rft verify` reads JSONL through this package).
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError
    from pyarrow import ArrowException

    check_local_source(path_or_name)
    ext = os.path.splitext(path_or_name)[1].lower()
    if ext not in _LOCAL_FORMATS:
        folder = os.path.isdir(path_or_name)
        for file in _folder_files(path_or_name) if folder else []:
            _check_local_file(file, os.path.splitext(file)[1].lower())  # a bad line named by its file and line
        problem = "cannot be read as a dataset folder" if folder else "no local file or folder, nor a hub dataset"
        with blame(path_or_name, problem):
            dataset = load_dataset(path_or_name, name=name, split=split)
        return require_rows(dataset, path_or_name)
    if name is not None:
        raise ValueError(f"dataset_config={name!r} names a subset of a hub dataset, but {path_or_name} is a file")
    _check_local_file(path_or_name, ext)
    try:
        dataset = load_dataset(_LOCAL_FORMATS[ext], data_files={split: path_or_name}, split=split)
    except (DatasetGenerationError, ArrowException) as error:  # these name neither a row nor a field
        raise ValueError(
            f"{path_or_name}: cannot be read as a table ({error.__cause__ or error}); every row needs the same "
            "fields with values of the same type"
        ) from error
    return require_rows(dataset, path_or_name)


def check_local_source(path_or_name: str) -> None:
    """Refuse, before anything is read, a dataset path that cannot be one: a missing local file or folder (a name
    with a file extension, or one that `looks_local`: hub ids are neither), a file of a format not read, or a folder
    without data files."""
    ext = os.path.splitext(path_or_name)[1].lower()
    if os.path.isfile(path_or_name):
        if ext not in _LOCAL_FORMATS:
            raise ValueError(f"{path_or_name}: a {ext or 'extensionless'} file is not read; give {_FORMAT_NAMES}")
    elif os.path.isdir(path_or_name):
        if not _folder_files(path_or_name):
            raise ValueError(f"{path_or_name}: the folder holds no data files (.jsonl, .json, .parquet or .csv)")
    elif ext in _LOCAL_FORMATS:
        raise ValueError(f"{path_or_name}: no such file")
    elif looks_local(path_or_name):
        raise ValueError(f"{path_or_name}: no such file or folder")


def looks_local(name: str) -> bool:
    """A name meant as a local path, not a hub id `org/name`: it starts like a path, holds a backslash, or has more
    than one '/' (`datasets` and transformers look for such a name on disk only). A URL (`hf://datasets/...`) and
    `buckets/...` are read from the hub by `datasets`, whatever their '/'s."""
    if "://" in name or name.startswith("buckets/"):
        return False
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _folder_files(folder: str) -> list[str]:
    """The data files `datasets` reads from a folder (hidden ones left out), in a fixed order."""
    return [
        os.path.join(root, file)
        for root, _, files in sorted(os.walk(folder))
        for file in sorted(files)
        if os.path.splitext(file)[1].lower() in _LOCAL_FORMATS and not file.startswith(".")
    ]


def _check_local_file(path: str, ext: str) -> None:
    """Refuse an unreadable or empty local file before `datasets` reports it without a line or row."""
    if ext == ".parquet":
        import pyarrow.parquet as pq
        from pyarrow import ArrowException

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except ArrowException as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
        if rows == 0:
            raise ValueError(f"{path} has no rows: write at least one row")
    elif ext == ".csv":
        _check_csv(path)
    elif ext == ".json" and _is_json_array(path):
        _check_field_types(path, _json_array_items(path), unit="item")
    else:
        _check_field_types(path, iter_jsonl(path))


def _check_csv(path: str) -> None:
    """UTF-8 on every line (named with its byte) and a header plus at least one row."""
    with open(path, "rb") as f:  # streamed: only the count of non-blank lines is kept
        filled = sum(1 for number, raw in enumerate(f, 1) if decode_line(path, number, raw).strip())
    if filled < 2:
        raise ValueError(f"{path} has no rows: a header line and at least one row are needed")


def _json_array_items(path: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """(item number from 1, object) of a file holding one JSON array; names the line and column of a syntax error
    and the item that is not an object."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        items = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{raw[error.start]:02x}); save it as UTF-8"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})") from None
    if not items:
        raise ValueError(f"{path} has no rows: the array is empty")
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ValueError(f"{path}, item {number}: expected a JSON object {{...}}, got {type(item).__name__}")
        yield number, item


def _is_json_array(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {str: "text", list: "a list", dict: "an object"}[type(value)]


def _check_field_types(path: str, lines: Iterable[tuple[int, dict[str, Any]]], unit: str = "line") -> None:
    """Each field of one JSON type on every line (or array item, `unit`): a table column has one type."""
    first: dict[str, tuple[str, int]] = {}  # field -> (kind, line it was first seen on)
    for number, row in lines:
        for field, value in row.items():
            if value is None:
                continue
            kind = _json_kind(value)
            seen = first.setdefault(field, (kind, number))
            if seen[0] != kind:
                raise ValueError(
                    f"{path}, {unit} {number}: field {field!r} is {kind} here but {seen[0]} on {unit} {seen[1]}; "
                    f"a field must hold one type on every {unit}"
                )


def require_rows(dataset, source: str):
    """`dataset` itself; refuses one without rows, which would otherwise fail later without saying why."""
    if len(dataset) == 0:
        raise ValueError(f"{source} has no rows: nothing to train on")
    return dataset


def first_rows(dataset, limit: int | None):
    """The first `limit` rows of `dataset` (all of them for None)."""
    if limit is None:
        return dataset
    if limit < 1:
        raise ValueError(f"dataset_limit={limit} leaves no rows to train on; give a positive number or leave it unset")
    return dataset.select(range(min(limit, len(dataset))))


def load_prefix_rft_dataset(path_or_name: str, split: str = "train", name: str | None = None):
    """Load a dataset in our schema from a local .jsonl/.json/.parquet/.csv file or a hub name (subset `name`)."""
    return _load(path_or_name, split, name)


def _luffy_row(row: dict[str, Any], index: int) -> dict[str, Any]:
    reward_model = row.get("reward_model")
    if "prompt" not in row or not isinstance(reward_model, dict) or reward_model.get("ground_truth") is None:
        raise ValueError(
            f"row {index}: the luffy format needs fields 'prompt' and 'reward_model' holding 'ground_truth'; the row "
            f"has {sorted(row)}" + (f", reward_model {reward_model!r:.80}" if "reward_model" in row else "")
        )
    target = row.get("target")
    if isinstance(target, list):  # list of {role, content} messages; the reference takes target[0]["content"]
        demos = [m["content"] for m in target[:1] if m.get("content")]
    else:
        demos = [target] if target else []
    return {"prompt": row["prompt"], "demos": demos, "answer": str(row["reward_model"]["ground_truth"])}


def load_luffy_openr1(
    path_or_name: str = LUFFY_HUB_NAME, split: str = "train", limit: int | None = None, name: str | None = None
):
    """Load the paper's training set (OpenR1-Math-46k as prepared by LUFFY) and map it to our schema."""
    return from_luffy(first_rows(_load(path_or_name, split, name), limit))


def from_luffy(dataset):
    """Map rows of LUFFY's schema to ours.

    Source columns: chat `prompt`, `target` (the DeepSeek-R1 demonstration), `reward_model.ground_truth`.
    Result columns: `prompt`, `demos` (one demonstration), `answer`.
    """
    return dataset.map(_luffy_row, with_indices=True, remove_columns=dataset.column_names)
