"""`prefix-rft verify FILE.jsonl`: grade (gold, prediction) pairs, print accuracy and verifier stats."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from prefix_rft.data.jsonl import iter_jsonl
from prefix_rft.setup_errors import (
    check_output_file,
    positive_float,
    positive_int,
    reports_setup_errors,
    setup_stage,
)
from prefix_rft.verify.extract import gold_text
from prefix_rft.verify.verifier import MathVerifier


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefix-rft verify", description=__doc__)
    parser.add_argument("path", type=Path, help="JSONL file, one object per line")
    parser.add_argument("--gold-field", default="gold", help="field holding the gold answer")
    parser.add_argument("--prediction-field", default="prediction", help="field holding the model output")
    parser.add_argument("--mode", choices=("math_verify", "oat"), default="math_verify")
    parser.add_argument("--after-think", action="store_true", help="grade only the text after </think>")
    parser.add_argument("--timeout", type=positive_float, default=5.0, help="seconds per pair before it scores 0")
    parser.add_argument("--workers", type=positive_int, default=2, help="verifier worker processes")
    parser.add_argument("--scores-out", type=Path, help="write the input rows with a `score` field added")
    return parser


def read_pairs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(rows, predictions, golds) of the input file.

    Raises:
        ValueError: naming file and line (and row and field) of the first row that cannot be graded.
    """
    rows, predictions, golds = [], [], []
    for i, (number, row) in enumerate(iter_jsonl(args.path)):
        where = f"{args.path}, line {number}: row {i}"
        for field in (args.prediction_field, args.gold_field):
            if field not in row:
                raise ValueError(f"{where}: field {field!r} is missing")
        prediction = row[args.prediction_field]
        if isinstance(prediction, bool) or not isinstance(prediction, str | int | float):
            raise ValueError(
                f"{where}: field {args.prediction_field!r} must be text or a number, got {type(prediction).__name__}"
            )
        try:
            golds.append(gold_text(row[args.gold_field]))
        except ValueError as exc:
            raise ValueError(f"{where}: field {args.gold_field!r}: {exc}") from None
        rows.append(row)
        predictions.append(str(prediction))
    return rows, predictions, golds


@reports_setup_errors("prefix-rft verify")
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with setup_stage():  # JsonlError included: file, line, and how to fix it; the output before any grading
        if args.scores_out is not None:
            check_output_file("--scores-out", args.scores_out)
        rows, predictions, golds = read_pairs(args)
    with MathVerifier(args.timeout, args.workers, args.mode, args.after_think) as verifier:
        scores = verifier.score_batch(predictions, golds)
        stats = verifier.stats
    correct = sum(scores)
    accuracy = correct / len(scores)  # read_pairs refuses a file without rows
    print(f"accuracy: {accuracy:.4f} ({correct:g}/{len(scores)})")
    print("stats: " + json.dumps(stats))
    if args.scores_out is not None:
        lines = [
            json.dumps({**row, "score": score}, ensure_ascii=False) for row, score in zip(rows, scores, strict=True)
        ]
        args.scores_out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0
