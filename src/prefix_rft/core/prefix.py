"""Prefix cutting and hybrid-row choice (docs/fidelity.md#demo-tokenization to #prompt-budget, #hybrid-slots)."""

from __future__ import annotations

import math
from typing import Literal

import torch

# Guards float products such as 0.29 * 100 = 28.999999999999996 so they floor to 29, not 28.
_FLOOR_EPS = 1e-9
DemoPart = Literal["whole", "after_think"]
THINK_END = "</think>"
MIN_HINT_CHARS = 10  # QuestA adds no hint when the part after the reasoning trace is shorter


def prefix_length(prefix_ratio: float, demo_len: int, min_prefix_len: int = 0) -> int:
    """Number of demo tokens revealed: floor(ratio * len), raised to `min_prefix_len`, at most len - 1.

    The last guard (reference `_get_prefix`) withholds at least one demo token so the policy always generates.
    A ratio of 0 or an empty demo reveals nothing.
    """
    if prefix_ratio <= 0.0 or demo_len <= 0:
        return 0
    n = math.floor(prefix_ratio * demo_len + _FLOOR_EPS)
    n = max(n, min_prefix_len)
    return min(n, demo_len - 1)


def fit_prefix_to_prompt(
    prompt_len: int, prefix_len: int, max_prompt_length: int | None, min_prefix_len: int = 0
) -> tuple[int, int]:
    """Shorten a prefix so that prompt + prefix fits in `max_prompt_length`; never cut the question.

    Returns:
        (kept prefix length, tokens cut from the prefix).

    Raises:
        ValueError: when the question alone does not fit, or fitting would leave fewer than `min_prefix_len` tokens.
    """
    if max_prompt_length is None or prompt_len + prefix_len <= max_prompt_length:
        return prefix_len, 0
    if prompt_len > max_prompt_length:
        raise ValueError(f"prompt has {prompt_len} tokens, more than max_prompt_length={max_prompt_length}")
    kept = max_prompt_length - prompt_len
    if kept < min_prefix_len:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + min_prefix_len ({min_prefix_len}) exceeds "
            f"max_prompt_length={max_prompt_length}"
        )
    return kept, prefix_len - kept


def fit_prefixes(
    prompt_lens: list[int], prefixes: list[list[int]], *, max_prompt_length: int | None, min_len: int
) -> tuple[list[list[int]], int]:
    """Each row's prefix cut so that prompt + prefix fits the prompt budget (`fit_prefix_to_prompt`: the question is
    never cut), and the prefix tokens cut over all rows.

    Args:
        prompt_lens: per row, the prompt's tokens (a hint included).
        prefixes: per row, the tokens that follow the prompt ([] for a row without a prefix).
        max_prompt_length: the prompt budget; None: no limit.
        min_len: the fewest tokens a cut may leave of a prefix (`prefix_min_len`); fewer is refused.
    """
    fitted, cut = [], 0
    for prompt_len, prefix in zip(prompt_lens, prefixes, strict=True):
        kept, row_cut = fit_prefix_to_prompt(prompt_len, len(prefix), max_prompt_length, min_len)
        fitted.append(prefix[:kept])
        cut += row_cut
    return fitted, cut


def hybrid_positions(group_size: int, num_hybrid: int, allow_all: bool = False) -> list[int]:
    """Positions inside a group whose role is hybrid (`is_hybrid_row` applied to one group).

    `allow_all`: every row may be hybrid (a guided group with no on-policy row, SEELE's and QuestA's hinted groups).

    Raises:
        ValueError: when no on-policy row would remain (unless `allow_all`), or `num_hybrid` is negative.
    """
    top = group_size if allow_all else group_size - 1
    if not 0 <= num_hybrid <= top:
        raise ValueError(f"num_hybrid must be in [0, {top}] for groups of {group_size}, got {num_hybrid}")
    return [p for p in range(group_size) if is_hybrid_row(p, group_size, num_hybrid)]


def is_hybrid_row(global_row: int, group_size: int, num_hybrid: int) -> bool:
    """The one rule for a row's planned role: the last `num_hybrid` positions of each group are hybrid slots.

    Rows are numbered in the step's process-major generation batch, as the reference orders its variants. Which
    position is hybrid does not change any advantage (they are computed per group), so a fixed choice keeps every rank
    in agreement without communication.
    """
    return global_row % group_size >= group_size - num_hybrid


def build_prefix_mask(prefix_lens: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool mask, True on the first `prefix_lens[i]` completion tokens of row i.

    Args:
        prefix_lens: (B,) int, prefix tokens at the start of each completion (0 for on-policy rows).
        width: padded completion length T.
    """
    positions = torch.arange(width, device=prefix_lens.device).unsqueeze(0)  # (1, T)
    return positions < prefix_lens.unsqueeze(1)  # (B, T)


def demo_part(demo: str, part: DemoPart) -> str:
    """The text of `demo` a hybrid row reveals a share of: the whole demo, or (``after_think``, QuestA) the part after
    its last `THINK_END`, the reasoning trace dropped; "" (no hint) when that part has fewer than `MIN_HINT_CHARS`
    characters. A demo without `THINK_END` is all after it."""
    if part == "whole":
        return demo
    if part != "after_think":
        raise ValueError(f"unknown demo part {part!r}; expected 'whole' or 'after_think'")
    after = demo.rsplit(THINK_END, 1)[-1]
    return after if len(after) >= MIN_HINT_CHARS else ""
