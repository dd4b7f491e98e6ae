"""JSON Lines files read one line at a time; every error names the file, its 1-based line and how to fix it.

`json.loads` on a single line reports "line 1" whatever line of the file it came from, and a byte that is not UTF-8
surfaces as a bare `UnicodeDecodeError`; training data, `prefix-rft verify` and `prefix-rft eval` all read JSONL
through here so that a bad line is reported once, the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A JSON Lines file that cannot be read; the message names the file and the line."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of `path`, line numbers counted from 1 over all lines.

    Raises:
        JsonlError: the file is missing, a line is not UTF-8, not one complete JSON value, or not an object; or
            the file holds no object at all (raised once every line has been read).
    """
    path = Path(path)
    if path.is_dir():
        raise JsonlError(f"{path}: is a folder; give a JSONL file")
    if not path.is_file():
        raise JsonlError(f"{path}: no such file")
    rows = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            text = decode_line(path, number, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw)
            if not text.strip():
                continue
            rows += 1
            yield number, _parse(path, number, text, cut_off=not raw.endswith(b"\n"))
    if rows == 0:
        raise JsonlError(f"{path} has no rows: the file is empty or holds only blank lines")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every object of a JSON Lines file, in order; raises `JsonlError` as `iter_jsonl` does."""
    return [row for _, row in iter_jsonl(path)]


def decode_line(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JsonlError(
            f"{path}, line {number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the "
            "line); save the file as UTF-8"
        ) from None


def _parse(path: Path, number: int, text: str, cut_off: bool) -> dict[str, Any]:
    try:
        value = json.loads(text.rstrip("\r\n"))  # an error at the line end is then in this line, not "line 2"
    except json.JSONDecodeError as error:
        hint = (
            "the line has no line end, so the file looks cut off: re-create it or delete that line"
            if cut_off
            else "each line must hold one complete JSON object"
        )
        raise JsonlError(
            f"{path}, line {number}, column {error.colno}: not valid JSON ({error.msg}); {hint}"
        ) from None
    if not isinstance(value, dict):
        raise JsonlError(f"{path}, line {number}: expected a JSON object {{...}}, got {type(value).__name__}")
    return value
