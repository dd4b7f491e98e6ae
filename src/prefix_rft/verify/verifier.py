"""`MathVerifier`: math-verify behind a process pool with a hard timeout; timeouts and crashes are counted, logged
and scored 0, never silent. `math_reward` is the TRL reward function built on a shared default verifier.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, get_args

from prefix_rft.verify.extract import answer_region, gold_text
from prefix_rft.verify.pool import WorkerPool

logger = logging.getLogger(__name__)

Completion = str | list[dict[str, Any]]
Mode = Literal["math_verify", "oat"]
# How a pair was scored: a pool status, or a parse failure (scored 0 and counted).
Outcome = Literal["ok", "no_answer", "gold_unparsable", "timeout", "crash", "error"]
GOLD_PARSE_ERROR = "GoldParseError"  # grade.GoldParseError's name, as the worker reports it (grade imports sympy)
_PREVIEW_CHARS = 120


class MathVerifier:
    """Grades a completion's final answer against a gold answer: 1.0 if equivalent, else 0.0.

    Args:
        timeout: hard wall-clock limit per call in seconds; an overrunning worker is killed and replaced.
        num_workers: worker processes (spawn context).
        mode: "math_verify" (extraction and comparison by math-verify, boxed answers first) or "oat" (the
            Dr. GRPO / OAT grader: last boxed answer, normalised string, sympy, then math-verify).
        after_think: grade only the text after the last `</think>`; without one the completion scores 0.

    `stats` counts calls, timeouts, crashes (worker died), errors (grading raised), and among the pairs scored 0 for
    a parse failure: gold_parse_failures (math-verify finds no expression in the gold; also an error) and
    prediction_parse_failures (no answer found in the prediction).
    """

    def __init__(
        self,
        timeout: float = 5.0,
        num_workers: int = 2,
        mode: Mode = "math_verify",
        after_think: bool = False,
    ) -> None:
        if mode not in get_args(Mode):
            raise ValueError(f"mode must be one of {get_args(Mode)}, got {mode!r}")
        # Imported here, not at module level, so that importing prefix_rft.verify stays free of sympy.
        from prefix_rft.verify.grade import grade, init_worker

        self.mode, self.after_think, self.timeout = mode, after_think, timeout
        self._pool = WorkerPool(grade, num_workers, timeout, initializer=init_worker)
        self._stats: Counter[str] = Counter(
            calls=0, timeouts=0, crashes=0, errors=0, gold_parse_failures=0, prediction_parse_failures=0
        )
        self._stats_lock = threading.Lock()
        self._unparsable_golds: set[str] = set()  # warned about once each, counted every time

    @property
    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def score(self, prediction: str, gold: object) -> float:
        """1.0 if `prediction`'s final answer equals `gold`, else 0.0 (also on timeout, crash or error).

        Raises:
            ValueError: if `gold` is None or empty.
        """
        return self._score(prediction, gold_text(gold))[0]

    def score_batch(self, predictions: Sequence[str], golds: Sequence[object]) -> list[float]:
        """`score` over pairs, using all workers at once. Raises ValueError naming the first bad gold's index."""
        return [score for score, _ in self._score_batch(predictions, golds)]

    def _score_batch(self, predictions: Sequence[str], golds: Sequence[object]) -> list[tuple[float, Outcome]]:
        if len(predictions) != len(golds):
            raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
        checked = [_checked_gold(gold, i, "gold") for i, gold in enumerate(golds)]
        # One thread per worker keeps every worker busy; each thread blocks on its own worker's pipe.
        with ThreadPoolExecutor(max_workers=self._pool.num_workers) as threads:
            return list(threads.map(self._score, predictions, checked))

    def _score(self, prediction: str, gold: str) -> tuple[float, Outcome]:
        self._count("calls")
        region = answer_region(prediction, self.after_think)
        if not region.strip():
            self._count("prediction_parse_failures")
            return 0.0, "no_answer"
        status, value = self._pool.call(region, gold, self.mode)
        if status == "ok":
            score, found = value
            if not found:
                self._count("prediction_parse_failures")
            return score, "ok" if found else "no_answer"
        if status == "error" and value.startswith(f"{GOLD_PARSE_ERROR}:"):
            self._count("gold_parse_failures")
            status = "gold_unparsable"
        self._report(status, value, region, gold)
        return 0.0, status

    def _report(self, status: Outcome, detail: Any, region: str, gold: str) -> None:
        key = {"timeout": "timeouts", "crash": "crashes", "error": "errors", "gold_unparsable": "errors"}[status]
        total = self._count(key)
        if status == "gold_unparsable":
            with self._stats_lock:
                seen = gold in self._unparsable_golds
                self._unparsable_golds.add(gold)
            if seen:  # one warning per gold, not one per completion of its group; every one is counted
                return
        reason = {
            "timeout": f"timed out after {self.timeout:g}s; worker killed and replaced",
            "crash": f"worker died (exit code {detail}); replaced",
            "error": f"raised {detail}",
            "gold_unparsable": f"raised {detail} (warned once per gold, counted in gold_parse_failures)",
        }[status]
        logger.warning(
            "math verifier %s, scored 0 (%s so far: %d). gold=%r prediction[-%d:]=%r",
            reason,
            key,
            total,
            gold[:_PREVIEW_CHARS],
            _PREVIEW_CHARS,
            region[-_PREVIEW_CHARS:],
        )

    def _count(self, key: str) -> int:
        with self._stats_lock:
            self._stats[key] += 1
            return self._stats[key]

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.close()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide `MathVerifier()`, created on first use (each accelerate rank gets its own)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
            atexit.register(_default.close)
        return _default


def math_reward(
    completions: Sequence[Completion],
    answer: Sequence[str | int | float],
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float]:
    r"""TRL reward function: 1.0 for a completion whose final answer equals the row's `answer`, else 0.0.

    Completions are strings or chat messages (the last message's content is graded). TRL's `log_metric`, when
    given, receives the fractions of this call's completions whose grading timed out, crashed the verifier, or could
    not parse the gold answer or the completion's answer: fractions, so the value means the same however the batch is
    split into calls (TRAPO's in-step scoring merges its calls by a row-weighted mean).

    Example:
        >>> math_reward([r"so \boxed{\frac{1}{3}}", [{"role": "assistant", "content": r"\boxed{2}"}]], ["1/3", "3"])
        [1.0, 0.0]

    Raises:
        ValueError: naming the row whose `answer` is None or empty.
    """
    golds = [_checked_gold(gold, i, "answer") for i, gold in enumerate(answer)]
    texts = [_completion_text(completion) for completion in completions]
    results = default_verifier()._score_batch(texts, golds)
    if log_metric is not None:
        outcomes, n = Counter(outcome for _, outcome in results), max(len(results), 1)
        log_metric("verifier/timeout_fraction", outcomes["timeout"] / n)
        log_metric("verifier/crash_fraction", outcomes["crash"] / n)
        log_metric("verifier/gold_parse_failure_fraction", outcomes["gold_unparsable"] / n)
        log_metric("verifier/prediction_parse_failure_fraction", outcomes["no_answer"] / n)
    return [score for score, _ in results]


def _completion_text(completion: Completion) -> str:
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""


def _checked_gold(gold: object, index: int, field: str) -> str:
    try:
        return gold_text(gold)
    except ValueError as exc:
        raise ValueError(f"row {index}: field {field!r}: {exc}") from None
