import pytest
import torch

from prefix_rft.core.entropy import kept_in_pool, num_dropped, select_over_span, select_prefix_tokens

# One row: 10 prefix tokens with entropies 0.1..1.0, then 2 continuation tokens with entropy 0.0.
ENTROPY = torch.tensor([[0.5, 0.1, 0.9, 0.3, 1.0, 0.2, 0.8, 0.4, 0.7, 0.6, 0.0, 0.0]])
PREFIX = torch.tensor([[True] * 10 + [False] * 2])

# Tie fixture: a single row of 5 prefix tokens, three of them tied at 0.5.
TIED = torch.tensor([[0.1, 0.5, 0.5, 0.5, 0.9]])
TIED_PREFIX = torch.ones(1, 5, dtype=torch.bool)


def kept_positions(keep: torch.Tensor) -> list[int]:
    return keep[0].nonzero().flatten().tolist()


def test_reference_count_drops_floor_of_complement():
    # keep 0.2 of 10 -> drop floor(0.8 * 10) = 8; of 7 -> drop floor(5.6) = 5 (keeps 2 = ceil(1.4))
    assert num_dropped(10, 0.2) == 8
    assert num_dropped(7, 0.2) == 5


def test_top_keeps_the_two_highest_entropy_prefix_tokens():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="top")
    # top-2 entropies are 1.0 (index 4) and 0.9 (index 2); continuation tokens (10, 11) always kept
    assert kept_positions(keep) == [2, 4, 10, 11]


def test_continuation_tokens_are_never_masked_even_with_low_entropy():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="none")
    assert keep[0, 10:].all()
    assert not keep[0, :10].any()


def test_lowest_keeps_the_two_lowest():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="lowest")
    # lowest prefix entropies 0.1 (index 1) and 0.2 (index 5)
    assert kept_positions(keep) == [1, 5, 10, 11]


def test_all_keeps_every_token():
    assert select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="all").all()


def test_random_keeps_two_prefix_tokens():
    gen = torch.Generator().manual_seed(0)
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="random", generator=gen)
    assert keep[0, :10].sum().item() == 2
    assert keep[0, 10:].all()


def test_random_is_deterministic_given_the_generator_seed():
    first = select_prefix_tokens(
        ENTROPY, PREFIX, keep_fraction=0.2, mode="random", generator=torch.Generator().manual_seed(3)
    )
    second = select_prefix_tokens(
        ENTROPY, PREFIX, keep_fraction=0.2, mode="random", generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(first, second)


def test_random_count_is_local_even_with_a_pool():
    # local: 3 prefix tokens = pool[4:7]; keep 0.5 of the 3 local ones -> drop floor(0.5 * 3) = 1, keep 2
    pool = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    entropy = torch.tensor([[0.5, 0.6, 0.7]])
    gen = torch.Generator().manual_seed(0)
    keep = select_prefix_tokens(
        entropy, torch.ones(1, 3, dtype=torch.bool), 0.5, mode="random", pool=pool, pool_offset=4, generator=gen
    )
    assert keep.sum().item() == 2


def test_pool_decision_applies_to_the_local_slice():
    # pool of 10 values 0.1..1.0 (as if gathered from two ranks); the local tokens are pool[4:7] = 0.5, 0.6, 0.7.
    # keep 0.5 -> drop floor(0.5 * 10) = 5 -> pool indices 0..4 (0.1..0.5) dropped, so local 0.5 is dropped.
    pool = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    entropy = torch.tensor([[0.5, 0.6, 0.7]])
    prefix = torch.tensor([[True, True, True]])
    keep = select_prefix_tokens(entropy, prefix, keep_fraction=0.5, mode="top", pool=pool, pool_offset=4)
    assert keep.tolist() == [[False, True, True]]


def test_keep_fraction_one_keeps_all_prefix_tokens():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=1.0, mode="top")
    assert keep.all()


def test_no_prefix_tokens_keeps_everything():
    keep = select_prefix_tokens(ENTROPY, torch.zeros_like(PREFIX), keep_fraction=0.2, mode="top")
    assert keep.all()


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown selection mode"):
        select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="middle")


# ---------------------------------------------------------------- exact count with ties


def test_all_equal_entropies_keep_exactly_the_reference_count():
    # N = 10, keep 0.2 -> n_drop = floor(0.8 * 10) = 8, n_keep = 10 - 8 = 2.
    # All equal: the stable order is pool positions 0..9; top drops the first 8 -> keeps positions 8 and 9.
    entropy = torch.full((1, 10), 0.7)
    keep = select_prefix_tokens(entropy, torch.ones(1, 10, dtype=torch.bool), keep_fraction=0.2, mode="top")
    assert kept_positions(keep) == [8, 9]


def test_ties_at_the_threshold_keep_the_latest_tied_token():
    # [0.1, 0.5, 0.5, 0.5, 0.9], keep 0.4 -> n_drop = floor(0.6 * 5) = 3, n_keep = 2.
    # Stable ascending order: 0 (0.1), 1 (0.5), 2 (0.5), 3 (0.5), 4 (0.9); drop 0, 1, 2 -> keep 3 and 4.
    keep = select_prefix_tokens(TIED, TIED_PREFIX, keep_fraction=0.4, mode="top")
    assert kept_positions(keep) == [3, 4]


def test_lowest_with_ties_keeps_the_earliest_tied_token():
    # Same row, keep 0.4 -> n_keep = 5 - floor(0.6 * 5) = 2; lowest keeps the first 2 of order 0, 1, 2, 3, 4 -> 0, 1.
    keep = select_prefix_tokens(TIED, TIED_PREFIX, keep_fraction=0.4, mode="lowest")
    assert kept_positions(keep) == [0, 1]


def test_lowest_with_all_equal_entropies_keeps_the_first_positions():
    # N = 10, keep 0.2 -> n_keep = 10 - 8 = 2; all equal, order 0..9 -> lowest keeps positions 0 and 1.
    entropy = torch.full((1, 10), 0.7)
    keep = select_prefix_tokens(entropy, torch.ones(1, 10, dtype=torch.bool), keep_fraction=0.2, mode="lowest")
    assert kept_positions(keep) == [0, 1]


def test_bf16_rounding_ties_keep_the_reference_count():
    # bf16 has spacing 2**-7 = 0.0078125 in [1, 2): 1.001, 1.002 and 1.003 all round to 1.0.
    entropy = torch.tensor([[1.003, 0.25, 1.001, 3.0, 1.002, 0.75]]).to(torch.bfloat16)
    assert entropy.float().tolist() == [[1.0, 0.25, 1.0, 3.0, 1.0, 0.75]]  # the fixture really is tied
    # N = 6, keep 0.5 -> n_drop = floor(0.5 * 6) = 3, n_keep = 3.
    # Stable ascending order: 1 (0.25), 5 (0.75), 0 (1.0), 2 (1.0), 4 (1.0), 3 (3.0); drop 1, 5, 0 -> keep 2, 3, 4.
    keep = select_prefix_tokens(entropy, torch.ones(1, 6, dtype=torch.bool), keep_fraction=0.5, mode="top")
    assert kept_positions(keep) == [2, 3, 4]


def test_pool_across_two_ranks_keeps_exactly_the_global_count():
    # Rank 0: two rows; prefix tokens in row-major order (0,0)=0.3, (0,1)=0.7, (1,0)=0.7, (1,1)=0.2 -> pool[0:4].
    rank0_entropy = torch.tensor([[0.3, 0.7, 0.9], [0.7, 0.2, 0.0]])
    rank0_prefix = torch.tensor([[True, True, False], [True, True, False]])
    # Rank 1: one row; prefix tokens (0,0)=0.7, (0,1)=0.1, (0,2)=0.7 -> pool[4:7].
    rank1_entropy = torch.tensor([[0.7, 0.1, 0.7, 0.4]])
    rank1_prefix = torch.tensor([[True, True, True, False]])
    pool = torch.tensor([0.3, 0.7, 0.7, 0.2, 0.7, 0.1, 0.7])
    # M = 7, keep 0.3 -> n_drop = floor(0.7 * 7) = floor(4.9) = 4, n_keep = 3.
    # Stable ascending order of pool indices: 5 (0.1), 3 (0.2), 0 (0.3), 1, 2, 4, 6 (all 0.7).
    # Drop 5, 3, 0, 1 -> keep pool indices 2, 4, 6: rank 0 keeps (1,0); rank 1 keeps (0,0) and (0,2).
    keep0 = select_prefix_tokens(rank0_entropy, rank0_prefix, 0.3, mode="top", pool=pool, pool_offset=0)
    keep1 = select_prefix_tokens(rank1_entropy, rank1_prefix, 0.3, mode="top", pool=pool, pool_offset=4)
    assert keep0.tolist() == [[False, False, True], [True, False, True]]  # column 2 is continuation
    assert keep1.tolist() == [[True, False, True, True]]  # column 3 is continuation
    kept_prefix = (keep0 & rank0_prefix).sum() + (keep1 & rank1_prefix).sum()
    assert kept_prefix.item() == 3  # 1 + 2 = the global count 7 - 4


def test_kept_in_pool_exact_count_with_ties():
    # M = 4 equal values, keep 0.5 -> n_drop = floor(0.5 * 4) = 2; order 0, 1, 2, 3.
    # top drops 0, 1 -> keeps 2, 3; lowest keeps 0, 1.
    values = torch.tensor([0.2, 0.2, 0.2, 0.2])
    assert kept_in_pool(values, 0.5, "top").tolist() == [False, False, True, True]
    assert kept_in_pool(values, 0.5, "lowest").tolist() == [True, True, False, False]


def test_kept_in_pool_rejects_other_modes():
    with pytest.raises(ValueError, match="'top' or 'lowest'"):
        kept_in_pool(torch.tensor([0.1, 0.2]), 0.5, "random")


# ---------------------------------------------------------------- pool slice validation


POOL = torch.tensor([0.3, 0.7, 0.7, 0.2, 0.7, 0.1, 0.7])
RANK0_ENTROPY = torch.tensor([[0.3, 0.7, 0.9], [0.7, 0.2, 0.0]])
RANK0_PREFIX = torch.tensor([[True, True, False], [True, True, False]])


def test_pool_slice_past_the_end_is_rejected():
    # 4 local prefix tokens at offset 5 need pool[5:9], but the pool has 7 entries.
    with pytest.raises(ValueError, match="does not fit"):
        select_prefix_tokens(RANK0_ENTROPY, RANK0_PREFIX, 0.3, mode="top", pool=POOL, pool_offset=5)


def test_negative_pool_offset_is_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        select_prefix_tokens(RANK0_ENTROPY, RANK0_PREFIX, 0.3, mode="top", pool=POOL, pool_offset=-1)


def test_pool_slice_with_other_values_is_rejected():
    # offset 1 gives pool[1:5] = 0.7, 0.7, 0.2, 0.7, but the local tokens are 0.3, 0.7, 0.7, 0.2.
    with pytest.raises(ValueError, match="differs from the local prefix entropies"):
        select_prefix_tokens(RANK0_ENTROPY, RANK0_PREFIX, 0.3, mode="top", pool=POOL, pool_offset=1)


def test_pool_without_offset_when_local_is_not_first_is_rejected():
    # Rank 1's tokens (0.7, 0.1, 0.7) are pool[4:7]; the default offset 0 points at 0.3, 0.7, 0.7.
    with pytest.raises(ValueError, match="differs"):
        select_prefix_tokens(
            torch.tensor([[0.7, 0.1, 0.7]]), torch.ones(1, 3, dtype=torch.bool), 0.3, mode="top", pool=POOL
        )


def test_non_integer_pool_offset_is_rejected():
    with pytest.raises(ValueError, match="pool_offset must be an int"):
        select_prefix_tokens(RANK0_ENTROPY, RANK0_PREFIX, 0.3, mode="top", pool=POOL, pool_offset=0.0)


def test_tensor_pool_offset_is_accepted():
    # Same as rank 1 of the two-rank test, with the offset as a 0-d tensor (e.g. a sum of gathered counts).
    keep = select_prefix_tokens(
        torch.tensor([[0.7, 0.1, 0.7]]),
        torch.ones(1, 3, dtype=torch.bool),
        0.3,
        pool=POOL,
        pool_offset=torch.tensor(4),
    )
    assert keep.tolist() == [[True, False, True]]


# ---------------------------------------------------------------- one span of micro-batches per scope

# Micro-batch 1: prefix tokens (0,0)=0.4, (0,1)=0.9; column 2 is continuation.
MB1_ENTROPY, MB1_PREFIX = torch.tensor([[0.4, 0.9, 0.1]]), torch.tensor([[True, True, False]])
# Micro-batch 2: prefix tokens (0,0)=0.6, (1,0)=0.8, (1,1)=0.3; (0,1) is continuation.
MB2_ENTROPY, MB2_PREFIX = torch.tensor([[0.6, 0.2], [0.8, 0.3]]), torch.tensor([[True, False], [True, True]])


def rank1_of_two(calls: list):
    """A gather as rank 1 sees it: rank 0 holds prefix entropies 0.5, 0.7, so this rank's start at index 2."""

    def gather(local: torch.Tensor) -> tuple[torch.Tensor, int]:
        calls.append(local)
        return torch.cat([torch.tensor([0.5, 0.7]), local]), 2

    return gather


def test_optimizer_step_pools_the_prefix_tokens_of_every_micro_batch():
    # Pool [0.4, 0.9 | 0.6, 0.8, 0.3], M = 5, keep 0.4 -> drop floor(0.6 * 5) = 3: ascending 0.3, 0.4, 0.6 dropped,
    # 0.9 (micro-batch 1 at (0,1)) and 0.8 (micro-batch 2 at (1,0)) kept: 2 of 5.
    keep1, keep2 = select_over_span("optimizer_step", [MB1_ENTROPY, MB2_ENTROPY], [MB1_PREFIX, MB2_PREFIX], 0.4)
    assert keep1.tolist() == [[False, True, True]]
    assert keep2.tolist() == [[False, True], [True, False]]


def test_local_micro_batch_selects_within_its_micro_batch_and_never_gathers():
    # Micro-batch 2 alone: M = 3, drop floor(0.6 * 3) = 1 -> 0.3 dropped, 0.6 and 0.8 kept (2 of 3, where the step
    # scope above kept 1 of them).
    calls = []
    (keep,) = select_over_span("local_micro_batch", [MB2_ENTROPY], [MB2_PREFIX], 0.4, gather=rank1_of_two(calls))
    assert keep.tolist() == [[True, True], [True, False]]
    assert calls == []


def test_global_micro_batch_selects_over_the_micro_batch_on_every_rank():
    # Pool [0.5, 0.7 (rank 0) | 0.6, 0.8, 0.3], M = 5, drop 3: 0.3, 0.5, 0.6 dropped; 0.7 (rank 0) and 0.8 kept.
    calls = []
    (keep,) = select_over_span("global_micro_batch", [MB2_ENTROPY], [MB2_PREFIX], 0.4, gather=rank1_of_two(calls))
    assert keep.tolist() == [[False, True], [True, False]]
    assert len(calls) == 1 and torch.equal(calls[0], torch.tensor([0.6, 0.8, 0.3]))


def test_optimizer_step_on_two_ranks_advances_the_offset_per_micro_batch():
    # Pool [0.5, 0.7 (rank 0) | 0.4, 0.9 (mb 1) | 0.6, 0.8, 0.3 (mb 2)], M = 7, keep 0.4 -> drop floor(4.2) = 4:
    # 0.3, 0.4, 0.5, 0.6 dropped; 0.7 (rank 0), 0.9 (mb 1 at (0,1)) and 0.8 (mb 2 at (1,0)) kept.
    calls = []
    keep1, keep2 = select_over_span(
        "optimizer_step", [MB1_ENTROPY, MB2_ENTROPY], [MB1_PREFIX, MB2_PREFIX], 0.4, gather=rank1_of_two(calls)
    )
    assert keep1.tolist() == [[False, True, True]]
    assert keep2.tolist() == [[False, True], [True, False]]
    assert len(calls) == 1 and torch.equal(calls[0], torch.tensor([0.4, 0.9, 0.6, 0.8, 0.3]))  # one per step


def test_span_without_prefix_tokens_keeps_every_token():
    none = torch.zeros(2, 2, dtype=torch.bool)
    (keep,) = select_over_span("optimizer_step", [torch.zeros(2, 2)], [none], 0.2)
    assert keep.all()


def test_per_micro_batch_scope_over_two_micro_batches_is_refused():
    with pytest.raises(ValueError, match="'global_micro_batch' spans one micro-batch, got 2"):
        select_over_span("global_micro_batch", [MB1_ENTROPY, MB2_ENTROPY], [MB1_PREFIX, MB2_PREFIX], 0.4)


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="unknown entropy scope 'batch'"):
        select_over_span("batch", [MB1_ENTROPY], [MB1_PREFIX], 0.4)


@pytest.mark.parametrize("mode", ["all", "none", "random"])
def test_modes_that_compare_no_tokens_across_ranks_never_gather(mode):
    # 'all' keeps every token, 'none' drops every prefix token, 'random' keeps 3 - floor(0.6 * 3) = 2 of its own 3:
    # none of them reads another rank's entropies, so the scope's gather is not made.
    calls = []
    (keep,) = select_over_span(
        "global_micro_batch",
        [MB2_ENTROPY],
        [MB2_PREFIX],
        0.4,
        mode,
        gather=rank1_of_two(calls),
        generator=torch.Generator().manual_seed(0),
    )
    assert calls == []
    assert int(keep[MB2_PREFIX].sum()) == {"all": 3, "none": 0, "random": 2}[mode]
