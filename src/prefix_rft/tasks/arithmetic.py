"""Multi-step arithmetic: problems, the expert demonstrator, and the exact verifier.

A problem is a two-digit number followed by a chain of one-digit additions and subtractions, such as `38+7-9+6`.
The demonstrator solves it one step at a time (`38+7=45`, `45-9=36`, `36+6=42`), checks the last step by its
inverse, and ends with `answer: 42`. One step is easy; several at once are not (the last digit alone is a sum modulo
10 over every term), so the fine-grained strategy is what separates easy problems from hard ones.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal, get_args

Split = Literal["train", "test", "ood"]
DemoStyle = Literal["steps", "rewrite"]
DEMO_STYLES: tuple[str, ...] = get_args(DemoStyle)

_ANSWER_RE = re.compile(r"answer:[ ]*(-?\d+)")
_PROBLEM_RE = re.compile(r"\d+([+-]\d+)*")
_STEP_RE = re.compile(r"(-?\d+)([+-])(\d+)=(-?\d+)")
# A carry slip in a sloppy coarse line: the result off by one in its last or its tens digit.
SLIPS = (-10, -1, 1, 10)


@dataclass(frozen=True)
class TaskConfig:
    """Difficulty knobs of the arithmetic task and the salt of the train/test partition."""

    min_terms: int = 2
    """fewest numbers in an in-distribution (train/test) problem"""
    max_terms: int = 8
    """most numbers in an in-distribution problem"""
    ood_min_terms: int = 9
    """fewest numbers in an out-of-distribution problem (harder: more steps)"""
    ood_max_terms: int = 10
    """most numbers in an out-of-distribution problem"""
    min_first: int = 10
    """smallest first number"""
    max_first: int = 99
    """largest first number"""
    min_number: int = 1
    """smallest number added or subtracted after the first"""
    max_number: int = 9
    """largest number added or subtracted after the first"""
    test_percent: int = 10
    """share (in %) of in-distribution problems that belong to the test split"""
    split_seed: int = 0
    """salts the hash that assigns each in-distribution problem to train or test"""
    demo_style: DemoStyle = "steps"
    """how the demonstrator writes a step: `steps` (`45-9=36`, the next term looked up in the problem) or `rewrite`
    (`36+6`: the chain left after the step, so the next operation is always at the start of the line)"""

    def __post_init__(self) -> None:
        if self.demo_style not in DEMO_STYLES:
            raise ValueError(f"TaskConfig.demo_style must be one of {DEMO_STYLES}, got {self.demo_style!r}")


@dataclass(frozen=True)
class Problem:
    """`terms[0] signs[0] terms[1] ...`, where `signs[i]` (`+` or `-`) joins terms i and i+1."""

    terms: tuple[int, ...]
    signs: tuple[str, ...]

    @property
    def text(self) -> str:
        return str(self.terms[0]) + "".join(f"{s}{t}" for s, t in zip(self.signs, self.terms[1:], strict=True))

    def running_totals(self) -> list[int]:
        """The value after each term: `[terms[0], terms[0] ± terms[1], ...]`."""
        totals = [self.terms[0]]
        for sign, term in zip(self.signs, self.terms[1:], strict=True):
            totals.append(totals[-1] + term if sign == "+" else totals[-1] - term)
        return totals

    @property
    def answer(self) -> int:
        return self.running_totals()[-1]


def parse_problem(text: str) -> Problem:
    """Parse `38+7-9` (the inverse of `Problem.text`)."""
    if not _PROBLEM_RE.fullmatch(text):
        raise ValueError(f"not a chain of additions and subtractions: {text!r}")
    return Problem(tuple(int(t) for t in re.split(r"[+-]", text)), tuple(re.findall(r"[+-]", text)))


def prompt_text(problem: Problem) -> str:
    """The user message that poses a problem."""
    return f"compute {problem.text}"


def problem_of_prompt(prompt: str) -> Problem:
    """The problem posed by a user message written by `prompt_text`."""
    return parse_problem(prompt.removeprefix("compute "))


def demonstrate(problem: Problem | str, style: DemoStyle = "steps") -> str:
    """The expert trace: one step per line, a check of the last step by its inverse, then the answer.

    >>> print(demonstrate("38+7-9+6"))
    38+7=45
    45-9=36
    36+6=42
    check 42-6=36 ok
    answer: 42
    >>> print(demonstrate("38+7-9+6", style="rewrite"))
    45-9+6
    36+6
    42
    check 42-6=36 ok
    answer: 42
    """
    if style not in DEMO_STYLES:
        raise ValueError(f"unknown demo style {style!r}; choose from {', '.join(DEMO_STYLES)}")
    if isinstance(problem, str):
        problem = parse_problem(problem)
    totals = problem.running_totals()
    steps = list(zip(totals[:-1], problem.signs, problem.terms[1:], totals[1:], strict=True))
    if style == "rewrite":
        # After step i the line is the running total followed by the operations not yet done.
        ops = [f"{s}{t}" for s, t in zip(problem.signs, problem.terms[1:], strict=True)]
        lines = [f"{totals[i + 1]}{''.join(ops[i + 1 :])}" for i in range(len(ops))]
    else:
        lines = [f"{before}{sign}{term}={after}" for before, sign, term, after in steps]
    if steps:
        before, sign, term, after = steps[-1]
        # Undo the last step: recompute the previous running total from the final one.
        lines.append(f"check {after}{'-' if sign == '+' else '+'}{term}={before} ok")
    lines.append(f"answer: {problem.answer}")
    return "\n".join(lines)


def coarse_solution(
    problem: Problem,
    ops_per_line: int,
    slip_rate: float = 0.0,
    rng: random.Random | None = None,
    slip_min_ops: int = 1,
) -> str:
    """The weaker strategy the base model is pretrained on: up to `ops_per_line` operations per line, no check.

    With `slip_rate` > 0 each line of at least `slip_min_ops` operations has, with that probability, its result off
    by 1 or 10 either way (a carry slip), and the next line goes on from the wrong value, so the answer is wrong too
    unless two slips cancel. `rng` draws the slips.

    >>> print(coarse_solution(parse_problem("38+7-9+6-2"), ops_per_line=3))
    38+7-9+6=42
    42-2=40
    answer: 40
    """
    if slip_rate > 0 and rng is None:
        raise ValueError("coarse_solution: slip_rate > 0 needs an rng to draw the slips")
    value, lines = problem.terms[0], []
    for start in range(0, len(problem.signs), ops_per_line):
        end = min(start + ops_per_line, len(problem.signs))
        line = Problem((value, *problem.terms[start + 1 : end + 1]), problem.signs[start:end])  # from what was written
        result = line.answer
        if slip_rate > 0 and end - start >= slip_min_ops and rng.random() < slip_rate:
            result += rng.choice(SLIPS)
        lines.append(f"{line.text}={result}")
        value = result
    lines.append(f"answer: {value}")
    return "\n".join(lines)


# What `first_error` reports: a mistake (in the order it checks a line), or none before the lines or the chain end.
STEP_OUTCOMES = (
    "not_steps",
    "wrong_value",
    "extra_step",
    "skipped_term",
    "repeated_term",
    "wrong_term",
    "slip",
    "stopped",
    "complete",
)


def first_error(completion: str, problem: Problem) -> tuple[str, int]:
    """The first mistake in a steps-style solution (`45-9=36` per line), as `(kind, step)`; step counts from 1.

    Each non-blank line before `check`/`answer:` must start from the previous line's result (`wrong_value` if not),
    apply the problem's next operation (`skipped_term` if it applies the one after, `repeated_term` the one before,
    `wrong_term` any other; `extra_step` once the chain is done) and compute it exactly (`slip`). A line of any other
    form is `not_steps`: a coarse line of several operations, a line cut off, a rewrite-style line. With no mistake:
    `("stopped", step)` if the lines end before the chain does (`step` is the first step not written), else
    `("complete", 0)`. The check and answer lines are not judged, so `complete` is not the same as correct.

    >>> first_error("38+7=45\\n45-9=37\\nanswer: 37", parse_problem("38+7-9+6"))
    ('slip', 2)
    """
    ops = [f"{sign}{term}" for sign, term in zip(problem.signs, problem.terms[1:], strict=True)]
    value, step = problem.terms[0], 0
    for line in (raw.strip() for raw in completion.split("\n")):
        if not line:
            continue
        if line.startswith(("check", "answer:")):
            break
        step += 1
        match = _STEP_RE.fullmatch(line)
        if match is None:
            return "not_steps", step
        before, sign, term, after = int(match[1]), match[2], int(match[3]), int(match[4])
        op = f"{sign}{term}"
        if before != value:
            return "wrong_value", step
        if step > len(ops):
            return "extra_step", step
        if op != ops[step - 1]:
            if step < len(ops) and op == ops[step]:
                return "skipped_term", step
            if step >= 2 and op == ops[step - 2]:
                return "repeated_term", step
            return "wrong_term", step
        if after != Problem((before, term), (sign,)).answer:
            return "slip", step
        value = after
    return ("stopped", step + 1) if step < len(ops) else ("complete", 0)


def extract_answer(completion: str) -> str | None:
    """The number after the last `answer:`, or None when there is none."""
    found = _ANSWER_RE.findall(completion)
    return found[-1] if found else None


def is_correct(completion: str, answer: str) -> bool:
    """Exact match of the last `answer: N` against the gold integer written canonically (no sign `+`, no zero pad)."""
    return extract_answer(completion) == str(answer).strip()


def task_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """TRL reward function: 1.0 for a correct final answer, else 0.0.

    Completions may be strings or conversations (`[{"role": "assistant", "content": ...}]`); for a conversation
    the last message is graded.

    >>> task_reward(["3+4=7\\nanswer: 7", [{"role": "assistant", "content": "answer: 8"}]], answer=["7", "7"])
    [1.0, 0.0]
    """
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(is_correct(text, gold)) for text, gold in zip(texts, answer, strict=True)]


def _term_range(config: TaskConfig, split: Split) -> tuple[int, int]:
    if split == "ood":
        return config.ood_min_terms, config.ood_max_terms
    return config.min_terms, config.max_terms


def sample_problem(rng: random.Random, n_terms: int, config: TaskConfig) -> Problem:
    """Draw a chain of `n_terms` numbers whose running total never goes below zero."""
    terms = [rng.randint(config.min_first, config.max_first)]
    terms += [rng.randint(config.min_number, config.max_number) for _ in range(n_terms - 1)]
    signs, total = [], terms[0]
    for term in terms[1:]:
        # Subtract only what the total can afford: every intermediate result stays a plain natural number.
        sign = "-" if term <= total and rng.random() < 0.5 else "+"
        total = total + term if sign == "+" else total - term
        signs.append(sign)
    return Problem(tuple(terms), tuple(signs))


def in_test_split(problem: Problem, config: TaskConfig) -> bool:
    """Whether an in-distribution problem belongs to the test split (a salted hash, so the same for every seed)."""
    digest = hashlib.blake2b(f"{config.split_seed}:{problem.text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < config.test_percent


def sample_split_problem(
    rng: random.Random, split: Split, config: TaskConfig, max_terms: int | None = None
) -> Problem:
    """Draw one problem of `split`, at most `max_terms` long if given; train and test draw from the same distribution
    and are told apart by `in_test_split`."""
    lo, hi = _term_range(config, split)
    hi = hi if max_terms is None else min(hi, max_terms)
    while True:
        problem = sample_problem(rng, rng.randint(lo, hi), config)
        if split == "ood" or in_test_split(problem, config) == (split == "test"):
            return problem


def make_rows(split: Split, n: int, seed: int, config: TaskConfig | None = None) -> list[dict]:
    """`n` distinct problems of `split` as dataset rows (prompt as a chat, one demo, the gold answer).

    Deterministic given (`split`, `n`, `seed`, `config`); train and test never share a problem.
    """
    if split not in ("train", "test", "ood"):
        raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'ood'")
    config = config or TaskConfig()
    rng = random.Random(f"{split}-{seed}")
    seen: set[str] = set()
    rows = []
    while len(rows) < n:
        problem = sample_split_problem(rng, split, config)
        if problem.text in seen:
            continue
        seen.add(problem.text)
        rows.append(
            {
                "id": f"{split}-{seed}-{len(rows)}",
                "prompt": [{"role": "user", "content": prompt_text(problem)}],
                "demos": [demonstrate(problem, config.demo_style)],
                "answer": str(problem.answer),
            }
        )
    return rows
