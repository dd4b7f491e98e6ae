"""The Dr. GRPO / OAT grader's first two stages, written from its description (docs/verify.md, "oat mode").

Stage 1 ("mathd"): normalise both strings the way the MATH benchmark's reference grader does (Hendrycks et al.) and
compare them exactly. Stage 2 ("sympy"): a looser normalisation (units, thousands separators, `x=`), element-wise
for tuples and intervals, integers compared as integers and everything else by `sympy.simplify(a - b) == 0`.
Stage 3, math-verify, lives in `grade.py`. These run inside the verifier's worker processes, which bound their time.
"""

from __future__ import annotations

import re

import sympy
from latex2sympy2_extended import latex2sympy

_TEXT_WRAPPER = re.compile(r"^\\text\{(?P<inner>.*)\}$", re.DOTALL)
_SQRT_BARE = re.compile(r"\\sqrt(?P<arg>[^{\s\\])")
_FRAC_BARE = re.compile(r"\\frac(?P<num>[^{\s\\])(?P<den>[^{\s\\])")
_FRAC_HALF_BARE = re.compile(r"\\frac\{(?P<num>[^{}]*)\}(?P<den>[^{\s\\])")
_INT_SLASH = re.compile(r"^(?P<num>-?\d+)/(?P<den>\d+)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SCALE_WORDS = {"trillion": "*10^12", "billion": "*10^9", "million": "*10^6", "thousand": "*10^3"}
# Unit words dropped at the end of an answer ("5 cm", "12 \text{ inches}"); plural and singular.
_UNITS = (
    "degrees?|cm|centimeters?|meters?|m|km|kilometers?|mm|inch(?:es)?|in|feet|foot|ft|yards?|miles?|"
    "seconds?|sec|minutes?|min|hours?|hr|days?|weeks?|months?|years?|dollars?|cents?|units?|square|sq|cubic|mph"
)
_TRAILING_UNIT = re.compile(rf"(?:\s*(?:{_UNITS})\b\.?)+$")


def mathd_normalize(answer: str) -> str:
    """Normalise an answer string as the MATH reference grader does, so equal-looking answers compare equal."""
    text = _unwrap_text(answer.strip())
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac")):
        text = text.replace(old, new)
    for noise in ("\\left", "\\right", "^{\\circ}", "^\\circ", "\\$", "$", "\\%", "%"):
        text = text.replace(noise, "")
    text = text.split("\\text{ ")[0]  # a trailing "\text{ units}" block
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if text.startswith("."):
        text = "0" + text
    text = _drop_short_lhs(text)
    text = _SQRT_BARE.sub(r"\\sqrt{\g<arg>}", text)
    text = text.replace(" ", "")
    text = _FRAC_BARE.sub(r"\\frac{\g<num>}{\g<den>}", text)
    text = _FRAC_HALF_BARE.sub(r"\\frac{\g<num>}{\g<den>}", text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    slash = _INT_SLASH.match(text)
    if slash:
        text = f"\\frac{{{slash['num']}}}{{{slash['den']}}}"
    return text


def mathd_equal(answer: str, gold: str) -> bool:
    """Stage 1: exact match after MATH-style normalisation."""
    normalized = mathd_normalize(answer)
    return bool(normalized) and normalized == mathd_normalize(gold)


def sympy_normalize(answer: str) -> str:
    """A looser normalisation for stage 2: text wrappers, units, scale words, separators and case."""
    text = _unwrap_text(answer.strip())
    text = re.sub(r"\\text\{\s*(?P<inner>[^{}]*)\}", r" \g<inner>", text)
    for noise in ("\\!", "\\,", "\\;", "\\left", "\\right", "\\$", "$", "\\%", "%", "^{\\circ}", "^\\circ", "\\circ"):
        text = text.replace(noise, "")
    text = text.replace("\\{", "{").replace("\\}", "}").replace(" or ", ",").replace(" and ", ",")
    for word, power in _SCALE_WORDS.items():
        text = text.replace(word, power)
    text = _TRAILING_UNIT.sub("", text.strip().rstrip("."))
    text = _drop_short_lhs(text).strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return text.replace(" ", "").lower()


def sympy_equal(answer: str, gold: str) -> bool:
    """Stage 2: element-wise equality of tuples/intervals; integers exactly, the rest by sympy simplification."""
    answer, gold = sympy_normalize(answer), sympy_normalize(gold)
    if not answer or not gold:
        return False
    if answer == gold:
        return True
    answer_split, gold_split = _split_elements(answer), _split_elements(gold)
    if answer_split is None or gold_split is None:
        return False
    (answer_brackets, answer_items), (gold_brackets, gold_items) = answer_split, gold_split
    if answer_brackets != gold_brackets or len(answer_items) != len(gold_items):
        return False
    return all(_element_equal(a, g) for a, g in zip(answer_items, gold_items, strict=True))


def _element_equal(answer: str, gold: str) -> bool:
    if answer == gold:
        return True
    answer_int, gold_int = _as_int(answer), _as_int(gold)
    if gold_int is not None or answer_int is not None:
        # An integer gold admits only that integer: "sqrt(16)" is not accepted for 4 without a symbolic detour.
        return answer_int is not None and answer_int == gold_int
    try:
        return sympy.simplify(latex2sympy(answer) - latex2sympy(gold)) == 0
    except Exception:  # any unparsable or incomparable pair is simply "not equal" at this stage
        return False


def _split_elements(text: str) -> tuple[str, list[str]] | None:
    """Outer brackets (so `(1,2]` differs from `(1,2)`) and the top-level comma-separated items.

    `(1,2),(3,4)` has no outer pair; None when the brackets are unbalanced.
    """
    if text[0] in "([" and text[-1] in ")]" and "," in text:
        items = _top_level_items(text[1:-1])
        if items is not None:
            return text[0] + text[-1], items
    items = _top_level_items(text)
    return None if items is None else ("", items)


def _top_level_items(text: str) -> list[str] | None:
    items, depth, current = [], 0, []
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0:
            return None
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items if depth == 0 else None


def _as_int(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _unwrap_text(text: str) -> str:
    match = _TEXT_WRAPPER.match(text)
    return match["inner"] if match else text


def _drop_short_lhs(text: str) -> str:
    """`x = 5` -> `5` and `k=2` -> `2`: a one- or two-character variable name before a single '='."""
    parts = text.split("=")
    if len(parts) == 2 and 0 < len(parts[0].strip()) <= 2:
        return parts[1].strip()
    return text
