"""Copy a `prefix-rft protocol` output folder's records into the repository, small enough to keep in git.

Every run's JSON keeps everything but its trainer log history, which is cut to step, reward and loss per logged step;
the plan, selection and results JSON are copied as they are, tuning.md is rendered from a v2 selection.json (so a
run whose code predates the tuning table gets one; v1's selection holds no grid), and the two plots go beside
docs/results.md. Runs sit in
`<stage>/<method>/` (v1) or `<stage>/<method>/<field>=<value>/` (v2 tuning); both layouts are kept as they are.

    python benchmarks/export_protocol.py runs/protocol docs/benchmarks/protocol --plots-prefix docs/protocol
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from prefix_rft.recipes.protocol_report import has_grids, tuning_markdown

KEPT_LOG_KEYS = ("step", "reward", "loss")


def thin(run: dict) -> dict:
    """`run` with each log-history entry cut to `KEPT_LOG_KEYS` (SFT entries: step and loss)."""
    history = [{k: e[k] for k in KEPT_LOG_KEYS if k in e} for e in run.get("log_history", [])]
    return {**run, "log_history": [e for e in history if len(e) > 1]}


def run_records(stage_dir: Path) -> list[Path]:
    """The run records of a stage: `<method>/*.json` and `<method>/<field>=<value>/*.json`, not the files a run
    writes into its own working folder (`seed<k>/...`)."""
    return sorted([*stage_dir.glob("*/*.json"), *stage_dir.glob("*/*=*/*.json")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--plots-prefix", type=Path, required=True)
    args = parser.parse_args()
    for stage in ("tune", "final"):
        for path in run_records(args.source / stage):
            target = args.dest / path.relative_to(args.source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(thin(json.loads(path.read_text())), indent=1))
    for name in ("plan.json", "selection.json", "results.json", "results.md"):
        if (args.source / name).exists():
            shutil.copy(args.source / name, args.dest / name)
    selection_path = args.source / "selection.json"
    selection = json.loads(selection_path.read_text()) if selection_path.exists() else None
    if selection is not None and has_grids(selection):
        k = json.loads((args.source / "plan.json").read_text())["settings"]["eval_k"]
        (args.dest / "tuning.md").write_text(tuning_markdown(selection, k))
    for name in ("results", "differences"):
        if (args.source / f"{name}.png").exists():
            shutil.copy(args.source / f"{name}.png", f"{args.plots_prefix}_{name}.png")


if __name__ == "__main__":
    main()
