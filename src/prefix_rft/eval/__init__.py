"""Evaluation: `evaluate` (any rows + score function), the seven math benchmarks, avg@k and pass@k (docs/eval.md)."""

from prefix_rft.eval.benchmarks import BENCHMARKS, load_benchmark
from prefix_rft.eval.harness import EvalResult, evaluate, write_samples
from prefix_rft.eval.metrics import average, pass_at_k, summarize
from prefix_rft.eval.prompts import TEMPLATES, build_messages

__all__ = [
    "BENCHMARKS",
    "TEMPLATES",
    "EvalResult",
    "average",
    "build_messages",
    "evaluate",
    "load_benchmark",
    "pass_at_k",
    "summarize",
    "write_samples",
]
