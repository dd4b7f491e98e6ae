"""Loading datasets in our schema and in the paper's training-set schema (LUFFY / OpenR1-Math-46k)."""

from __future__ import annotations

import os
from typing import Any

LUFFY_HUB_NAME = "Elliott/Openr1-Math-46k-8192"
_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def row_demos(row: dict[str, Any]) -> list[str]:
    """The demonstrations of a row: its `demos` list, or its single `demo`, or none."""
    demos = row.get("demos")
    if demos is None:
        demo = row.get("demo")
        return [demo] if demo else []
    return list(demos)


def _load(path_or_name: str, split: str):
    from datasets import load_dataset  # deferred: keeps `import prefix_rft.data` light

    ext = os.path.splitext(path_or_name)[1].lower()
    if os.path.isfile(path_or_name) and ext in _LOCAL_FORMATS:
        return load_dataset(_LOCAL_FORMATS[ext], data_files={split: path_or_name}, split=split)
    return load_dataset(path_or_name, split=split)


def load_prefix_rft_dataset(path_or_name: str, split: str = "train"):
    """Load a dataset in our schema from a local .jsonl/.json/.parquet/.csv file or a hub name."""
    return _load(path_or_name, split)


def _luffy_row(row: dict[str, Any]) -> dict[str, Any]:
    target = row.get("target")
    if isinstance(target, list):  # list of {role, content} messages; the reference takes target[0]["content"]
        demos = [m["content"] for m in target[:1] if m.get("content")]
    else:
        demos = [target] if target else []
    return {"prompt": row["prompt"], "demos": demos, "answer": str(row["reward_model"]["ground_truth"])}


def load_luffy_openr1(path_or_name: str = LUFFY_HUB_NAME, split: str = "train", limit: int | None = None):
    """Load the paper's training set (OpenR1-Math-46k as prepared by LUFFY) and map it to our schema.

    Source columns: chat `prompt`, `target` (the DeepSeek-R1 demonstration), `reward_model.ground_truth`.
    Result columns: `prompt`, `demos` (one demonstration), `answer`.
    """
    dataset = _load(path_or_name, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.map(_luffy_row, remove_columns=dataset.column_names)
