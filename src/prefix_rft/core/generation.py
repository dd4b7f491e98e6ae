"""How transformers generation batches hybrid rows (docs/performance.md): the call-choice cost model and the forcing
of demo-prefix tokens inside a shared call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class CallShapes(NamedTuple):
    """One rank's rows of a generation batch, as the cost model sees them (widths in tokens, 0 without rows)."""

    plain_rows: int  # rows generated from their prompt alone (on-policy rows)
    plain_width: int  # their longest prompt
    prefix_rows: int  # rows that continue a demo prefix
    prefix_prompt_width: int  # their longest prompt, without the prefix
    prefix_total_width: int  # their longest prompt + prefix
    min_prefix: int  # their shortest prefix


def padded_tokens(rows: int, width: int, new_tokens: int) -> int:
    """Token positions one `generate` call holds: every row is left-padded to `width` and runs `new_tokens` steps."""
    return rows * (width + new_tokens) if rows else 0


def call_costs(ranks: Sequence[CallShapes], max_new_tokens: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(padded tokens summed over ranks, decoding steps) of a shared call, then of separate calls.

    Shared: prefix rows join the plain rows' call, left-padded to the longest prompt only; their prefix tokens are
    forced during the first decoding steps, so prefix + continuation fits the same `max_new_tokens`. Separate: prefix
    rows go in a second call with the prefix in the prompt (padded to the longest prompt + prefix), which decodes up
    to `max_new_tokens` minus its shortest prefix. Stand-in rows (one token) are left out.
    """
    shared = separate = 0
    any_plain = any(r.plain_rows for r in ranks)
    prefix_steps = max((max(1, max_new_tokens - r.min_prefix) for r in ranks if r.prefix_rows), default=0)
    for r in ranks:
        width = max(r.plain_width, r.prefix_prompt_width)
        shared += padded_tokens(r.plain_rows + r.prefix_rows, width, max_new_tokens)
        separate += padded_tokens(r.plain_rows, r.plain_width, max_new_tokens)
        separate += padded_tokens(r.prefix_rows, r.prefix_total_width, max(1, max_new_tokens - r.min_prefix))
    shared_steps = max_new_tokens if any_plain or prefix_steps else 0
    separate_steps = (max_new_tokens if any_plain else 0) + prefix_steps
    return (shared, shared_steps), (separate, separate_steps)


def prefer_shared_call(ranks: Sequence[CallShapes], max_new_tokens: int) -> bool:
    """Whether prefix rows should join the plain rows' `generate` call: fewer padded tokens, then fewer decoding
    steps (each step is a forward over the whole batch, and under ZeRO-3 a collective)."""
    shared, separate = call_costs(ranks, max_new_tokens)
    return shared <= separate


def force_prefix_scores(scores: torch.Tensor, forced: torch.Tensor, step: int) -> torch.Tensor:
    """Make each row whose prefix reaches decoding step `step` sample exactly its prefix token there.

    scores [rows, vocab] are the logits of step `step`; forced [rows, longest prefix] holds each row's prefix token
    ids, -1 past its end. A forced row keeps 0 at its token and -inf elsewhere, which temperature, top-k/p and
    min-p leave as a distribution with all its mass on that token.
    """
    if step >= forced.size(1):
        return scores
    tokens = forced[:, step].to(scores.device)
    rows = tokens >= 0
    if not bool(rows.any()):
        return scores
    scores = scores.clone()
    scores[rows] = float("-inf")
    scores[rows, tokens[rows]] = 0.0
    return scores
