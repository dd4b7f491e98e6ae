"""`prefix-rft <command> ...`: one entry point, each command implemented in the module that owns it.

Commands are imported lazily so that `prefix-rft verify` does not pay for importing trl.
"""

from __future__ import annotations

import importlib
import os
import sys

from prefix_rft.setup_errors import DEBUG_ENV

# command -> (module with a `main(argv: list[str]) -> int | None`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("prefix_rft.recipes.demo", "train the embedded tiny model with Prefix-RFT on CPU and write a report"),
    "train": ("prefix_rft.recipes.train", "train from a YAML recipe (TrlParser: --config FILE.yaml [--key value])"),
    "eval": ("prefix_rft.eval.cli", "evaluate a model on math benchmarks or the embedded task (avg@k, pass@k)"),
    "verify": ("prefix_rft.verify.cli", "grade a JSONL file of (gold, prediction) pairs"),
    "compare": ("prefix_rft.recipes.compare", "run baselines and Prefix-RFT at equal budgets and compare them"),
    "protocol": ("prefix_rft.recipes.protocol", "tune each method on held-out questions, then compare over seeds"),
}


def _usage() -> str:
    lines = ["usage: prefix-rft [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`prefix-rft <command> --help` explains a command's options."]
    lines += [f"--debug (or {DEBUG_ENV}=1) shows the traceback of bad input refused at setup, for bug reports."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--debug"]:
        os.environ[DEBUG_ENV] = "1"
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"prefix-rft: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
