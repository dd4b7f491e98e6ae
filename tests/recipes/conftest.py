"""Share the tiny model fixtures of the adapter tests, and write small training sets and recipes for the CLI tests."""

import json
from pathlib import Path

import pytest
import yaml

from ..trl.conftest import DEMOS, model, model_dir, tokenizer  # noqa: F401

USER_CODE = Path(__file__).with_name("user_code")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def short_rows(n: int) -> list[dict]:
    """`n` rows (prompt as a chat, one 20-token demo, answer) cycling through the adapter tests' four questions."""
    demos = [DEMOS[i % len(DEMOS)] for i in range(n)]
    return [{"prompt": [{"role": "user", "content": d[:6]}], "demos": [d], "answer": d[-2:]} for d in demos]


def write_yaml(path: Path, fields: dict) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


@pytest.fixture
def user_module(monkeypatch):
    """`my_module` importable, as a user's module in the working directory is under `trl grpo`."""
    monkeypatch.syspath_prepend(str(USER_CODE))
    import my_module

    my_module.CALLS.clear()
    return my_module
