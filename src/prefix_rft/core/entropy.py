"""Entropy-based selection of prefix tokens (docs/fidelity.md#entropy-scope to #lowest-ablation; paper §3, App. A.2).

Only the prefix tokens on which the current policy is most uncertain keep their advantage; the others get advantage 0.
Continuation tokens are never touched. The reference code zeroes the lowest floor((1 - keep) * N) of the N prefix
tokens by entropy, so it keeps exactly N - floor((1 - keep) * N) of them; the same exact count is kept here.

Ties: entropies computed in bf16 are often exactly equal, so a threshold rule ("keep entropy > the n_drop-th smallest")
would drop every token tied at the threshold and keep fewer than the reference count (none at all when every entropy is
equal). Instead the N tokens of the selection pool are ordered by a stable ascending sort on (entropy, pool position):
``top`` drops the first n_drop of that order, so among equal entropies the earlier pool position is dropped first;
``lowest`` keeps the first N - n_drop, so among equal entropies the earlier pool position is kept first.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch

SelectionMode = Literal["top", "all", "none", "random", "lowest"]
_MODES: tuple[str, ...] = get_args(SelectionMode)
EntropyScope = Literal["optimizer_step", "global_micro_batch", "local_micro_batch"]
_SCOPES: tuple[str, ...] = get_args(EntropyScope)
# (n,) local prefix entropies -> (M,) every rank's in rank order, and the index where this rank's start.
Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]
_EPS = 1e-9


def num_dropped(num_prefix_tokens: int, keep_fraction: float) -> int:
    """floor((1 - keep) * N): the reference's count of prefix tokens whose advantage is zeroed."""
    # The epsilon absorbs float error such as (1 - 0.9) * 10 = 0.9999999999999998, which must count as 1.
    return math.floor((1.0 - keep_fraction) * num_prefix_tokens + _EPS)


def kept_in_pool(values: torch.Tensor, keep_fraction: float, mode: Literal["top", "lowest"] = "top") -> torch.Tensor:
    """Which entries of a selection pool keep their advantage, with the reference's exact count.

    Exactly ``M - num_dropped(M, keep_fraction)`` entries are kept. Entries are ordered by a stable ascending sort on
    (value, index); ``top`` drops the first ``num_dropped`` of that order (among equal values the lower index is
    dropped first), ``lowest`` keeps the first ``M - num_dropped`` (among equal values the lower index is kept first).

    Args:
        values: (M,) entropies of every prefix token in the selection scope, any float dtype.
        keep_fraction: share of entries kept, in [0, 1].
        mode: ``top`` keeps the highest values, ``lowest`` the lowest.
    Returns:
        (M,) bool on the device of ``values``.
    """
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D (M,), got shape {tuple(values.shape)}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    if mode not in ("top", "lowest"):
        raise ValueError(f"kept_in_pool mode must be 'top' or 'lowest', got {mode!r}")
    n = values.numel()
    n_drop = num_dropped(n, keep_fraction)
    # Stable sort: equal values stay in index order, which makes the tie break deterministic and rank-independent.
    order = torch.sort(values, stable=True).indices
    chosen = order[n_drop:] if mode == "top" else order[: n - n_drop]
    kept = torch.zeros(n, dtype=torch.bool, device=values.device)
    kept[chosen] = True
    return kept


def select_prefix_tokens(
    entropy: torch.Tensor,
    prefix_mask: torch.Tensor,
    keep_fraction: float,
    mode: SelectionMode = "top",
    pool: torch.Tensor | None = None,
    *,
    pool_offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask of tokens that keep their advantage: all non-prefix tokens plus the selected prefix tokens.

    The local prefix tokens are ``entropy[prefix_mask]`` in row-major (row, position) order; call their count n_local.
    For ``top`` and ``lowest`` the keep decision is taken over the whole pool by :func:`kept_in_pool` (exact count,
    stable tie break, see the module docstring) and each local token gets the decision of its pool entry.

    Args:
        entropy: (B, T) per-token entropy of the current policy (detached).
        prefix_mask: (B, T) bool, True on demo-prefix tokens.
        keep_fraction: share of prefix tokens kept (paper: 0.2), in [0, 1].
        mode: ``top`` keeps the highest-entropy ones (the method), ``lowest`` the lowest (ablation), ``random`` a
            random subset of the local prefix tokens with the same count rule, ``all`` keeps every token, ``none``
            freezes the prefix.
        pool: (M,) entropies of every prefix token in the selection scope (e.g. gathered across ranks or
            micro-batches), such that ``pool[pool_offset : pool_offset + n_local]`` are exactly the local prefix
            tokens in row-major order. Defaults to the local prefix tokens (with offset 0).
        pool_offset: index in ``pool`` of the first local prefix token (e.g. the number of prefix tokens on lower
            ranks). Keyword-only, like ``generator``, so that neither can be bound by position to the other.
        generator: RNG for ``random``; the same generator state gives the same subset.
    Returns:
        (B, T) bool.
    Raises:
        ValueError: unknown mode, or a pool slice that is not the local prefix tokens.
    """
    if mode not in _MODES:
        raise ValueError(f"unknown selection mode {mode!r}; expected one of {', '.join(_MODES)}")
    keep = ~prefix_mask
    if mode == "all":
        return torch.ones_like(prefix_mask)
    if mode == "none":
        return keep
    local = entropy[prefix_mask]
    if pool is None:
        pool, pool_offset = local, 0
    else:
        pool_offset = _check_pool_slice(pool, pool_offset, local)
    if local.numel() == 0:
        return keep
    if mode == "random":
        n_keep = local.numel() - num_dropped(local.numel(), keep_fraction)
        return keep | _random_subset(prefix_mask, n_keep, generator)
    kept_pool = kept_in_pool(pool, keep_fraction, mode)
    keep[prefix_mask] = kept_pool[pool_offset : pool_offset + local.numel()].to(keep.device)
    return keep


def select_over_span(
    scope: EntropyScope,
    entropies: Sequence[torch.Tensor],
    prefix_masks: Sequence[torch.Tensor],
    keep_fraction: float,
    mode: SelectionMode = "top",
    *,
    gather: Gather | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Keep masks of the micro-batches one entropy scope spans, by :func:`select_prefix_tokens` over one pool.

    The pool is every prefix token of the span, micro-batch after micro-batch in row-major order; with ``scope``
    other than ``local_micro_batch`` it is extended by ``gather`` to the same span on every rank. ``local_micro_batch``
    and ``global_micro_batch`` span one micro-batch; ``optimizer_step`` spans the optimizer step's micro-batches.
    ``random`` draws the reference count of each micro-batch's own prefix tokens (one ``generator`` in turn).

    Args:
        scope: the entropy scope (`prefix_entropy_scope`).
        entropies: one (B_i, T_i) entropy tensor per micro-batch of the span (detached).
        prefix_masks: one (B_i, T_i) bool tensor per micro-batch, True on the prefix tokens that are trained.
        keep_fraction, mode: as in :func:`select_prefix_tokens`.
        gather: maps this rank's (n,) pool to every rank's (M,) pool and this rank's offset in it; None on one
            process (the pool is this rank's). Called, on every rank alike, for ``top`` and ``lowest`` unless
            ``scope`` is ``local_micro_batch``.
        generator: RNG for ``random``.
    Returns:
        One (B_i, T_i) bool keep mask per micro-batch.
    Raises:
        ValueError: an unknown scope, a per-micro-batch scope over several micro-batches, or an empty span.
    """
    if scope not in _SCOPES:
        raise ValueError(f"unknown entropy scope {scope!r}; expected one of {', '.join(_SCOPES)}")
    if len(entropies) != len(prefix_masks) or not entropies:
        raise ValueError(f"a span needs >= 1 micro-batch, one prefix mask each: {len(entropies)}, {len(prefix_masks)}")
    if scope != "optimizer_step" and len(entropies) != 1:
        raise ValueError(f"scope {scope!r} spans one micro-batch, got {len(entropies)}")
    pool = torch.cat([e[m].float() for e, m in zip(entropies, prefix_masks, strict=True)])
    offset = 0
    # only 'top' and 'lowest' compare tokens across the scope; 'random' counts the local ones, 'all'/'none' none
    if scope != "local_micro_batch" and gather is not None and mode in ("top", "lowest"):
        pool, offset = gather(pool)
    keeps = []
    for entropy, prefix_mask in zip(entropies, prefix_masks, strict=True):
        keeps.append(
            select_prefix_tokens(
                entropy, prefix_mask, keep_fraction, mode, pool, pool_offset=offset, generator=generator
            )
        )
        offset += int(prefix_mask.sum())
    return keeps


def _check_pool_slice(pool: torch.Tensor, pool_offset: int, local: torch.Tensor) -> int:
    """Raise ValueError unless ``pool[pool_offset : pool_offset + n_local]`` holds exactly the (n_local,) ``local``.

    Returns the offset as a Python int.
    """
    if pool.dim() != 1:
        raise ValueError(f"pool must be 1-D (M,), got shape {tuple(pool.shape)}")
    # operator.index accepts Python, NumPy and 0-d tensor integers but not floats, None or a Generator.
    try:
        pool_offset = operator.index(pool_offset)
    except TypeError:
        raise ValueError(f"pool_offset must be an int, got {type(pool_offset).__name__}") from None
    n_local = local.numel()
    if pool_offset < 0 or pool_offset + n_local > pool.numel():
        raise ValueError(
            f"pool slice [{pool_offset}:{pool_offset + n_local}] for {n_local} local prefix tokens does not fit "
            f"in a pool of {pool.numel()} entries"
        )
    # Cheap guard against a wrong offset or a different gather order: compare in the pool's dtype, so a bf16 local
    # tensor matches a pool gathered as float32 (bf16 -> float32 is exact).
    window = pool[pool_offset : pool_offset + n_local]
    local = local.to(device=pool.device, dtype=pool.dtype)
    same = (local == window) | (local.isnan() & window.isnan())  # a NaN entropy is a model bug, not a wrong offset
    if not bool(same.all()):
        raise ValueError(
            f"pool[{pool_offset}:{pool_offset + n_local}] differs from the local prefix entropies "
            "(entropy[prefix_mask] in row-major order); check pool_offset and the gather order"
        )
    return pool_offset


def _random_subset(prefix_mask: torch.Tensor, n_keep: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, T) bool with `n_keep` prefix positions chosen uniformly at random."""
    flat = prefix_mask.flatten().nonzero(as_tuple=True)[0]
    # randperm on CPU: a CPU generator is what callers seed, and the draw is then device independent.
    order = torch.randperm(flat.numel(), generator=generator, device="cpu").to(flat.device)
    chosen = torch.zeros(prefix_mask.numel(), dtype=torch.bool, device=prefix_mask.device)
    chosen[flat[order[:n_keep]]] = True
    return chosen.view_as(prefix_mask)
