"""Plain-text answer handling: what part of a completion is graded, and how a gold answer is delimited.

Pure string functions (no sympy), cheap enough to run in the trainer process on any input.
"""

from __future__ import annotations

import re

THINK_END = "</think>"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
# Between two boxes of one multi-part answer (`\boxed{1}, \boxed{2}`, `\boxed{a} \quad \text{and} \quad \boxed{b}`,
# `y_1 = \boxed{..} \) and \( y_2 = \boxed{..}`) only spacing, delimiters and these words may stand.
_GAP_NOISE = re.compile(r"\\(?:text|mathrm|textbf)\{|\\q?quad|\\[,;:! ()\[\]]|\\\\|[{}$~&,;]")
_GAP_WORD = re.compile(r"and|or|for|parts?|\(?[a-z0-9]\)?|[a-zA-Z](?:_\w+)?=?|=", re.IGNORECASE)
_MAX_GAP = 80
# A gold answer already inside one of these is handed to math-verify as written. An escaped `\$` (MATH-500's
# `\$18.90`) is a dollar sign, not a delimiter.
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")


def answer_region(completion: str, after_think: bool) -> str:
    """The part of a completion the grader looks at.

    With `after_think`, only the text after the last `</think>`; a completion that never closes its thinking has no
    final answer yet, so its region is empty (scored 0), as DeepScaleR's grader does.
    """
    if not after_think:
        return completion
    head, sep, tail = completion.rpartition(THINK_END)
    return tail if sep else ""


def last_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` (or `\fbox{...}`), braces matched; None if there is none or it is unclosed.

    `\boxed 5` (no braces) yields the following token, as LaTeX reads it.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    if start >= len(text):
        return None
    if text[start] != "{":
        token = re.match(r"[^\s$]+", text[start:])
        return token.group(0) if token else None
    return _braced_content(text, start)


def final_boxed_group(text: str) -> str:
    r"""`text` from the first box of its final multi-part answer on: `\boxed{2}. Wait: \boxed{3}` -> `\boxed{3}`,
    but `\boxed{1}, \boxed{2}` stays whole so math-verify reads the set {1, 2}. `text` itself if it has no box.

    Without this, math-verify would merge every box of a self-correcting answer into one set.
    """
    matches = list(_BOXED.finditer(text))
    group_start = matches[-1].start() if matches else 0
    for previous in reversed(matches[:-1]):
        content = _braced_content(text, previous.end()) if text[previous.end() : previous.end() + 1] == "{" else None
        if content is None:
            break
        gap = text[previous.end() + len(content) + 2 : group_start]
        if not _is_connective(gap):
            break
        group_start = previous.start()
    # Keep a leading `y_1 = ` (or `\(`) on the same line: the answer may be an equation.
    line_start = text.rfind("\n", 0, group_start) + 1
    if _is_connective(text[line_start:group_start]):
        group_start = line_start
    return text[group_start:]


def _is_connective(gap: str) -> bool:
    if len(gap) > _MAX_GAP or "\n\n" in gap:
        return False
    return all(_GAP_WORD.fullmatch(word) for word in _GAP_NOISE.sub(" ", gap).split())


def _braced_content(text: str, open_index: int) -> str | None:
    """Text between `text[open_index]` == '{' and its matching '}'; None if unbalanced."""
    depth = 0
    for i in range(open_index, len(text)):
        char = text[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
    return None


def gold_text(gold: object) -> str:
    """A gold answer as a non-empty string; numbers (AMC stores floats such as 27.0) are written out.

    Raises:
        ValueError: for None, empty or whitespace-only gold, which would silently score every completion 0, and for
            a gold that is neither text nor a number (a list or dict would be graded as its Python repr).
    """
    if gold is None:
        raise ValueError("gold answer is None")
    if isinstance(gold, bool) or not isinstance(gold, str | int | float):
        raise ValueError(f"gold answer must be text or a number, got {type(gold).__name__}")
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    text = str(gold).strip()
    if not text:
        raise ValueError("gold answer is empty")
    return text


def delimit_gold(gold: str) -> str:
    r"""Wrap a bare gold answer in `\boxed{}` so math-verify's LaTeX extraction sees all of it (verl does the same).

    A bare `3, 5` or `\frac12` may otherwise be parsed piecemeal or not at all.
    """
    return gold if _DELIMITED.search(gold) else f"\\boxed{{{gold}}}"
