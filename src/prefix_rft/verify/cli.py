"""`prefix-rft verify FILE.jsonl`: grade (gold, prediction) pairs, print accuracy and verifier stats."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from prefix_rft.verify.extract import gold_text
from prefix_rft.verify.verifier import MathVerifier


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefix-rft verify", description=__doc__)
    parser.add_argument("path", type=Path, help="JSONL file, one object per line")
    parser.add_argument("--gold-field", default="gold", help="field holding the gold answer")
    parser.add_argument("--prediction-field", default="prediction", help="field holding the model output")
    parser.add_argument("--mode", choices=("math_verify", "oat"), default="math_verify")
    parser.add_argument("--after-think", action="store_true", help="grade only the text after </think>")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per pair before it scores 0")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    parser.add_argument("--scores-out", type=Path, help="write the input rows with a `score` field added")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = [json.loads(line) for line in args.path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        predictions = [str(row[args.prediction_field]) for row in rows]
        golds = [row[args.gold_field] for row in rows]
    except KeyError as exc:
        print(f"prefix-rft verify: a row has no field {exc}", file=sys.stderr)
        return 2
    for index, gold in enumerate(golds):
        try:
            gold_text(gold)
        except ValueError as exc:
            print(f"prefix-rft verify: row {index}: field {args.gold_field!r}: {exc}", file=sys.stderr)
            return 2
    with MathVerifier(args.timeout, args.workers, args.mode, args.after_think) as verifier:
        scores = verifier.score_batch(predictions, golds)
        stats = verifier.stats
    correct = sum(scores)
    accuracy = correct / len(scores) if scores else 0.0
    print(f"accuracy: {accuracy:.4f} ({correct:g}/{len(scores)})")
    print("stats: " + json.dumps(stats))
    if args.scores_out is not None:
        lines = [
            json.dumps({**row, "score": score}, ensure_ascii=False) for row, score in zip(rows, scores, strict=True)
        ]
        args.scores_out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0
