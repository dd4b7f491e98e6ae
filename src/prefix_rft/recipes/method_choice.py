"""Which method a `prefix-rft train` command asks for (`--method` or the YAML's `method:`), read before its options
are parsed, since the method decides the config class that parses them; and the options it refuses."""

from __future__ import annotations

from typing import Any

from prefix_rft.baselines.methods import METHODS, refused_options

DEFAULT_METHOD = "prefix_rft"


def command_line_options(argv: list[str]) -> dict[str, str | None]:
    """`--name value` / `--name=value` pairs of the command line, names with `_` (value None when the next token is
    an option)."""
    options: dict[str, str | None] = {}
    for i, token in enumerate(argv):
        if not token.startswith("--") or token == "--config":
            continue
        name, sep, value = token[2:].partition("=")
        following = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        options[name.replace("-", "_")] = value if sep else following  # HfArgumentParser takes both spellings
    return options


def requested_method(argv: list[str], settings: dict[str, Any]) -> str:
    """The method asked for by the command line `argv` or its YAML's mapping `settings`; refuses an unknown method and
    the options either sets that the method refuses (`refused_options`), naming each."""
    options = command_line_options(argv)
    method = options.get("method") or settings.get("method") or DEFAULT_METHOD
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a method of prefix-rft; choose one of {', '.join(METHODS)}")
    given = set(settings) | set(options)
    refused = refused_options(method)
    by_reason: dict[str, list[str]] = {}
    for option in sorted(given & set(refused)):
        by_reason.setdefault(refused[option], []).append(option)
    if by_reason:
        problems = [f"{', '.join(options)}: {reason}" for reason, options in by_reason.items()]
        raise ValueError(f"method {method!r} refuses " + "; ".join(problems) + " (docs/methods.md)")
    return method
