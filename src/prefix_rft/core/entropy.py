"""Entropy-based selection of prefix tokens (spec §3.10; paper §3, App. A.2).

Only the prefix tokens on which the current policy is most uncertain keep their advantage; the others get advantage 0.
Continuation tokens are never touched. The reference code zeroes the lowest floor((1 - keep) * N) of the N prefix
tokens by entropy, so at least ceil(keep * N) are kept; the same count rule is used here.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

SelectionMode = Literal["top", "all", "none", "random", "lowest"]
_EPS = 1e-9


def num_dropped(num_prefix_tokens: int, keep_fraction: float) -> int:
    """floor((1 - keep) * N): the reference's count of prefix tokens whose advantage is zeroed."""
    return math.floor((1.0 - keep_fraction) * num_prefix_tokens + _EPS)


def select_prefix_tokens(
    entropy: torch.Tensor,
    prefix_mask: torch.Tensor,
    keep_fraction: float,
    mode: SelectionMode = "top",
    pool: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask of tokens that keep their advantage: all non-prefix tokens plus the selected prefix tokens.

    Args:
        entropy: (B, T) per-token entropy of the current policy (detached).
        prefix_mask: (B, T) bool, True on demo-prefix tokens.
        keep_fraction: share of prefix tokens kept (paper: 0.2).
        mode: ``top`` keeps the highest-entropy ones (the method), ``lowest`` the lowest (ablation), ``random`` a
            random subset of the same size, ``all`` keeps every prefix token, ``none`` freezes the prefix.
        pool: (M,) entropies of every prefix token in the selection scope (e.g. gathered across ranks); defaults to
            the local prefix tokens. The threshold is taken from the pool and applied to the local tokens.
        generator: RNG for ``random``.
    Returns:
        (B, T) bool.
    """
    keep = ~prefix_mask
    if mode == "all":
        return torch.ones_like(prefix_mask)
    if mode == "none":
        return keep
    local = entropy[prefix_mask].float()
    values = local if pool is None else pool.float()
    n = values.numel()
    if n == 0:
        return keep
    n_drop = num_dropped(n, keep_fraction)
    if mode == "random":
        return keep | _random_subset(prefix_mask, local.numel() - num_dropped(local.numel(), keep_fraction), generator)
    if mode == "top":
        if n_drop == 0:
            return keep | prefix_mask
        # The n_drop-th smallest entropy is the last one dropped; strictly higher ones are kept.
        threshold = torch.kthvalue(values, n_drop).values
        return keep | (prefix_mask & (entropy > threshold))
    if mode == "lowest":
        n_keep = n - n_drop
        if n_keep == 0:
            return keep
        threshold = torch.kthvalue(values, n_keep).values
        return keep | (prefix_mask & (entropy <= threshold))
    raise ValueError(f"unknown selection mode {mode!r}; expected one of top, lowest, random, all, none")


def _random_subset(prefix_mask: torch.Tensor, n_keep: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, T) bool with `n_keep` prefix positions chosen uniformly at random."""
    flat = prefix_mask.flatten().nonzero(as_tuple=True)[0]
    order = torch.randperm(flat.numel(), generator=generator, device="cpu").to(flat.device)
    chosen = torch.zeros(prefix_mask.numel(), dtype=torch.bool, device=prefix_mask.device)
    chosen[flat[order[:n_keep]]] = True
    return chosen.view_as(prefix_mask)
