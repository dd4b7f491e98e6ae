"""Type annotations read as the classes a value may be an instance of, for refusing wrong types by name up front."""

from __future__ import annotations

import functools
import types
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


def runtime_types(annotation: Any) -> tuple[type, ...] | None:
    """Classes an instance of `annotation` may have (`int | None` -> (int, NoneType), `list[str]` -> (list,)).

    A `Literal` gives the classes of its values (`Literal["a", "b"]` -> (str,)); which value is allowed is checked by
    its user. None when the annotation admits anything or cannot be checked with `isinstance` (Any, object, TypeVar).
    """
    if annotation is Any or annotation is object:
        return None
    origin = get_origin(annotation)
    if origin is Literal:
        return tuple(dict.fromkeys(type(value) for value in get_args(annotation)))
    if origin in (Union, types.UnionType):
        parts = [runtime_types(arg) for arg in get_args(annotation)]
        return None if any(part is None for part in parts) else tuple(t for part in parts for t in part)
    if annotation is None:
        return (type(None),)
    checked = origin if origin is not None else annotation
    return (checked,) if isinstance(checked, type) else None


def is_instance(value: Any, allowed: tuple[type, ...]) -> bool:
    """`isinstance` as a config or a column means it: an int passes for a float, a bool never passes for a number."""
    if isinstance(value, bool) and bool not in allowed:
        return False
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def type_names(allowed: tuple[type, ...]) -> str:
    """`(int, NoneType)` -> "int or None"."""
    return " or ".join("None" if t is type(None) else t.__name__ for t in allowed)


@functools.cache
def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Field of the dataclass `cls` -> classes its value may have, for every field whose annotation `isinstance` can
    check."""
    hints = get_type_hints(cls)
    checked = {f.name: runtime_types(hints[f.name]) for f in fields(cls) if f.name in hints}
    return {name: allowed for name, allowed in checked.items() if allowed is not None}


@functools.cache
def field_choices(cls: type) -> dict[str, tuple]:
    """Field of `cls` -> its allowed values, for every field typed `Literal[...]` (or `Literal[...] | None`: None
    allowed)."""
    choices = {}
    for name, hint in get_type_hints(cls).items():
        parts = get_args(hint) if get_origin(hint) is Union else (hint,)
        literals = [p for p in parts if get_origin(p) is Literal]
        if literals and all(get_origin(p) is Literal or p is type(None) for p in parts):
            choices[name] = tuple(v for p in literals for v in get_args(p)) + ((None,) if type(None) in parts else ())
    return choices
