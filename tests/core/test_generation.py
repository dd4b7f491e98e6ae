"""The call-choice cost model and prefix forcing of transformers generation (core/generation.py)."""

import pytest
import torch

from prefix_rft.core import CallShapes, force_prefix_scores, prefer_shared_call
from prefix_rft.core.generation import call_costs

INF = float("-inf")


# (rows per rank, budget, (shared tokens, steps), (separate tokens, steps), shared chosen)
CASES = {
    # 112 on-policy rows, 16 hybrids, prompts <= 51 tokens, prefixes 33..88 (longest prompt + prefix 139), budget
    # 64. shared: 128 x (51 + 64) = 14720 tokens, 64 steps; separate: 112 x 115 + 16 x (139 + 64 - 33) = 12880 +
    # 2720 = 15600 tokens, 64 + 31 = 95 steps.
    "benchmark layout": ([CallShapes(112, 51, 16, 51, 139, 33)], 64, (14720, 64), (15600, 95), True),
    # 4 plain rows with 100-token prompts, 4 hybrids with 10-token prompts and 50..60-token prefixes, budget 64.
    # shared: 8 x (100 + 64) = 1312; separate: 4 x 164 + 4 x (70 + 64 - 50) = 656 + 336 = 992, 64 + 14 steps.
    "long plain prompts": ([CallShapes(4, 100, 4, 10, 70, 50)], 64, (1312, 64), (992, 78), False),
    # rank 0: 4 plain rows, 38-token prompts; rank 1: 3 plain + 1 hybrid with a 19-token prefix; budget 24. shared:
    # 4 x 62 + 4 x 62 = 496 tokens, 24 steps; separate: 4 x 62 + 3 x 62 + 1 x (57 + 5) = 496, 24 + 5 = 29 steps.
    "equal tokens, two ranks": (
        [CallShapes(4, 38, 0, 0, 0, 0), CallShapes(3, 38, 1, 38, 57, 19)],
        24,
        (496, 24),
        (496, 29),
        True,
    ),
    # 2 hybrids, 10-token prompts, 40-token prefixes, budget 64: 2 x 74 = 148 tokens either way, but the prompt call
    # prefills the prefix and decodes 24 steps where forcing decodes 64.
    "no plain rows": ([CallShapes(0, 0, 2, 10, 50, 40)], 64, (148, 64), (148, 24), False),
    # no prefix rows: one plain call either way.
    "no prefix rows": ([CallShapes(8, 40, 0, 0, 0, 0)], 10, (400, 10), (400, 10), True),
}


@pytest.mark.parametrize("ranks, budget, shared, separate, chosen", CASES.values(), ids=CASES.keys())
def test_call_choice(ranks, budget, shared, separate, chosen):
    assert call_costs(ranks, budget) == (shared, separate)
    assert prefer_shared_call(ranks, budget) is chosen


def test_forced_rows_put_all_mass_on_their_prefix_token():
    scores = torch.zeros(3, 5)
    forced = torch.tensor([[2, 4], [-1, -1], [1, -1]])
    step0 = force_prefix_scores(scores, forced, 0)
    assert step0.tolist() == [[INF, INF, 0, INF, INF], [0] * 5, [INF, 0, INF, INF, INF]]
    step1 = force_prefix_scores(scores, forced, 1)
    assert step1.tolist() == [[INF, INF, INF, INF, 0], [0] * 5, [0] * 5]
    assert force_prefix_scores(scores, forced, 2).tolist() == [[0] * 5] * 3
    assert scores.tolist() == [[0] * 5] * 3  # the input is left as it was
    # temperature and softmax keep the whole probability on the forced token
    assert torch.softmax(step0 / 0.7, dim=-1)[0].tolist() == [0, 0, 1, 0, 0]
