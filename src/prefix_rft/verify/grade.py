"""Grading of one (answer region, gold) pair; runs inside the verifier's worker processes.

math-verify's own timeouts are switched off here: they use `signal.alarm`, cannot interrupt long C-level work
(a big-integer power), and on expiry return False after only a log line, which is the silent zero we must avoid.
The pool's wall-clock limit, which kills the worker and is counted, is the single timeout instead.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from prefix_rft.verify.extract import delimit_gold, final_boxed_group, last_boxed
from prefix_rft.verify.oat import mathd_equal, sympy_equal

# boxed_match_priority=0: a \boxed{} answer wins over "the answer is ..." phrases and bare LaTeX (as in TRL). Given
# several boxes math-verify returns the set of all of them, so it only sees the final group (`final_boxed_group`).
_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


class GoldParseError(ValueError):
    """The gold answer yields no expression, so every completion would score 0."""


def init_worker() -> None:
    """Worker start-up: drop math-verify's warning that its timeouts are off, since that is deliberate here."""
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith("Timeout is disabled"))


def grade(region: str, gold: str, mode: str) -> tuple[float, bool]:
    """(1.0 if the answer in `region` equals `gold` else 0.0, whether an answer was found in `region` at all);
    `mode` is "math_verify" or "oat".

    Raises:
        GoldParseError: if math-verify finds nothing in the gold answer.
    """
    if mode == "oat":
        return _grade_oat(region, gold)
    gold_parsed = parse_gold(gold)  # first: an unparsable gold is the error to report, whatever the prediction
    answer = _parse(final_boxed_group(region))
    return float(verify(gold_parsed, answer, timeout_seconds=None)), bool(answer)


@lru_cache(maxsize=8192)
def parse_gold(gold: str) -> list:
    """Parse a gold answer once per worker; a group of G completions shares one gold."""
    # A gold with stray dollars inside (a Minerva answer reads "x_{0} \cos (\omega t)+$ $\dot{x}_{0} ...") is not
    # valid $..$ math; boxed whole, math-verify drops the dollars and parses it.
    for text in dict.fromkeys((delimit_gold(gold), f"\\boxed{{{gold}}}")):
        parsed = _parse(text)
        if parsed:
            return parsed
    raise GoldParseError(f"math-verify cannot parse the gold answer {gold[:200]!r}")


def _parse(text: str) -> list:
    return parse(text, list(_EXTRACTION), parsing_timeout=None)


def _grade_oat(region: str, gold: str) -> tuple[float, bool]:
    """Dr. GRPO / OAT: last boxed answer only, then mathd string match, sympy equality, math-verify."""
    answer = last_boxed(region)
    if answer is None:
        return 0.0, False
    if mathd_equal(answer, gold) or sympy_equal(answer, gold):
        return 1.0, True
    return float(verify(parse_gold(gold), _parse(f"\\boxed{{{answer}}}"), timeout_seconds=None)), True
