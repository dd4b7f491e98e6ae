import pytest
import torch

from prefix_rft.core.entropy import num_dropped, select_prefix_tokens

# One row: 10 prefix tokens with entropies 0.1..1.0, then 2 continuation tokens with entropy 0.0.
ENTROPY = torch.tensor([[0.5, 0.1, 0.9, 0.3, 1.0, 0.2, 0.8, 0.4, 0.7, 0.6, 0.0, 0.0]])
PREFIX = torch.tensor([[True] * 10 + [False] * 2])


def test_reference_count_drops_floor_of_complement():
    # keep 0.2 of 10 -> drop floor(0.8 * 10) = 8; of 7 -> drop floor(5.6) = 5 (keeps 2 = ceil(1.4))
    assert num_dropped(10, 0.2) == 8
    assert num_dropped(7, 0.2) == 5


def test_top_keeps_the_two_highest_entropy_prefix_tokens():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="top")
    # top-2 entropies are 1.0 (index 4) and 0.9 (index 2); continuation tokens (10, 11) always kept
    assert keep[0].nonzero().flatten().tolist() == [2, 4, 10, 11]


def test_continuation_tokens_are_never_masked_even_with_low_entropy():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="none")
    assert keep[0, 10:].all()
    assert not keep[0, :10].any()


def test_lowest_keeps_the_two_lowest():
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="lowest")
    # lowest prefix entropies 0.1 (index 1) and 0.2 (index 5)
    assert keep[0].nonzero().flatten().tolist() == [1, 5, 10, 11]


def test_all_keeps_every_token():
    assert select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="all").all()


def test_random_keeps_two_prefix_tokens():
    gen = torch.Generator().manual_seed(0)
    keep = select_prefix_tokens(ENTROPY, PREFIX, keep_fraction=0.2, mode="random", generator=gen)
    assert keep[0, :10].sum().item() == 2
    assert keep[0, 10:].all()


def test_pool_threshold_applies_to_local_tokens():
    # pool of 10 values 0.1..1.0 (as if gathered from two ranks); keep 0.5 -> drop 5, threshold = 5th smallest 0.5
    pool = torch.arange(1, 11, dtype=torch.float) / 10
    entropy = torch.tensor([[0.5, 0.55, 0.9]])
    prefix = torch.tensor([[True, True, True]])
    keep = select_prefix_tokens(entropy, prefix, keep_fraction=0.5, mode="top", pool=pool)
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
