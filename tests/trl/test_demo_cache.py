"""The demo token cache is bounded: least recently used demos are evicted and tokenized again when drawn."""

import pytest

from tests.helpers import make_trainer


def digits_ids(text: str) -> list[int]:
    """The task tokenizer's ids of a string of digits: '0' is id 7, '1' id 8, ... '9' id 16."""
    return [7 + int(c) for c in text]


def test_trainer_cache_stays_bounded_over_many_distinct_demos(tmp_path, model, tokenizer):
    # 16 rows per generation, budget 24 tokens: the cache holds 2 x 16 x 24 = 768 tokens, i.e. 38 demos of 20.
    trainer = make_trainer(tmp_path, model, tokenizer)
    demos = [f"{i:020d}" for i in range(500)]
    for demo in demos:
        assert trainer._demo_ids(demo) == digits_ids(demo)
    assert len(trainer._demo_ids_cache) == 38
    assert trainer._demo_ids(demos[0]) == digits_ids(demos[0])  # evicted long ago: tokenized again, same ids
    assert trainer._demo_ids("0123456789" * 3) == digits_ids(("0123456789" * 3)[:24])  # cut to the budget
    assert len(trainer._demo_ids_cache) == 38


def test_least_recently_used_demo_goes_first():
    from prefix_rft.trl.demo_cache import DemoIdsCache  # imported here: the trainer test above also runs on old code

    cache = DemoIdsCache(max_tokens=6)
    cache.put("a", [1, 2])
    cache.put("b", [3, 4])
    cache.put("c", [5, 6])
    assert cache.get("a") == [1, 2]  # now the most recent: "b" is the oldest
    cache.put("d", [7])
    assert ("a" in cache, "b" in cache, "c" in cache, "d" in cache) == (True, False, True, True)
    assert cache.tokens == 5
    cache.put("e", [8, 9, 10, 11, 12, 13, 14])  # alone over the bound: everything else goes, it stays
    assert (len(cache), cache.tokens, cache.get("e")) == (1, 7, [8, 9, 10, 11, 12, 13, 14])


def test_cache_refuses_a_zero_bound():
    from prefix_rft.trl.demo_cache import DemoIdsCache

    with pytest.raises(ValueError, match="max_tokens must be >= 1, got 0"):
        DemoIdsCache(max_tokens=0)
