"""Bad input found while a command sets up: named by the option or file that caused it, printed without a traceback.

Every command (train, demo, compare, protocol, eval, verify) marks its setup (parsing, checking paths, reading files,
everything before the model loads or the first step) with `setup_stage`, and its `main` with `reports_setup_errors`:
a ValueError raised in setup, a library's exception that `blame` turned into a `SetupError`, or a refusal raised as
`SystemExit("message")`, is printed as `prefix-rft CMD: MESSAGE` and the command exits 2. `PREFIX_RFT_DEBUG=1`
(or `prefix-rft --debug CMD ...`) keeps the traceback for bug reports. Errors after setup (during training) keep
their traceback: they are not bad input.

A neutral module: components (eval, verify, data, trl) and recipes import it alike.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

DEBUG_ENV = "PREFIX_RFT_DEBUG"
_REASON_CHARS = 300  # a library's reason is quoted up to this length: some quote a whole file or traceback
F = TypeVar("F", bound=Callable[..., Any])


class SetupError(ValueError):
    """Bad input found at setup; the message names the option or file and what is wrong."""


def debugging() -> bool:
    """The user asked for tracebacks: `PREFIX_RFT_DEBUG` set to anything but '', '0' or 'false'."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false")


def reason(error: BaseException) -> str:
    """A library exception in one line: its own message (first line, shortened), or its class name if it has none."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


@contextmanager
def blame(where: str, what: str, *errors: type[BaseException], advice: str = "") -> Iterator[None]:
    """Inside, an exception of `errors` (any Exception by default) becomes
    `SetupError("WHERE: WHAT (REASON); ADVICE")`, REASON being the library's own message. A `SetupError` passes."""
    caught = errors or (Exception,)
    try:
        yield
    except SetupError:
        raise
    except caught as error:
        raise SetupError(f"{where}: {what} ({reason(error)})" + (f"; {advice}" if advice else "")) from error


@contextmanager
def setup_stage() -> Iterator[None]:
    """Marks the setup part of a command: a ValueError raised inside is bad input (our checks raise ValueError with the
    row, field or option named), reported by `reports_setup_errors` without a traceback."""
    try:
        yield
    except SetupError:
        raise
    except ValueError as error:
        raise SetupError(str(error)) from error


def reports_setup_errors(prog: str) -> Callable[[F], F]:
    """Decorate a command's `main`: a `SetupError`, or a `SystemExit` carrying a message, is printed as
    `PROG: MESSAGE` on stderr and `main` returns 2, unless `debugging()`, which re-raises it with its traceback."""

    def decorate(main: F) -> F:
        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return main(*args, **kwargs)
            except SetupError as error:
                if debugging():
                    raise
                message = str(error)
            except SystemExit as exit_:  # a refusal raised as SystemExit("message") (argparse's carry a number)
                if not isinstance(exit_.code, str) or debugging():
                    raise
                message = exit_.code
            print(message if message.startswith(f"{prog} ") else f"{prog}: {message}", file=sys.stderr)
            return 2

        return wrapper  # type: ignore[return-value]

    return decorate


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or a negative count would do nothing, or silently less)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _creatable(option: str, path: Path) -> Path:
    """The nearest existing folder above `path` (which does not exist), refusing a file in the way."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SetupError(f"{option} {path}: cannot be created, {parent} is a file, not a folder")
    return parent


def _require_writable(option: str, path: Path, folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SetupError(f"{option} {path}: cannot be written (no write permission in {folder}); choose another path")


def check_output_dir(option: str, path: str | Path) -> None:
    """Refuse an output folder that is a file or cannot be written or created, before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SetupError(f"{option} {path}: is a file, not a folder; give a folder for the outputs")
    _require_writable(option, path, path if path.exists() else _creatable(option, path))


def check_output_file(option: str, path: str | Path) -> None:
    """Refuse an output file that is a folder, or that cannot be written or created, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise SetupError(f"{option} {path}: is a folder; give the path of a file to write")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise SetupError(f"{option} {path}: cannot be written (no write permission); choose another path")
        return
    _require_writable(option, path, _creatable(option, path))


def vllm_installed() -> bool:
    """Whether the vllm package can be imported (found without importing it, which is slow and needs a GPU)."""
    return importlib.util.find_spec("vllm") is not None
