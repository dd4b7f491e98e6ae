"""PrefixRFTTrainer through TRL's real vLLM paths, with only vLLM replaced by the doubles in tests/trl/doubles.

Hand-derived expectations (base_kwargs: groups of 8, one hybrid in the last slot, 20-token demos, budget 24): at
step 0 the floor is 0.95, so l = 0.95 and the hybrid reveals floor(0.95 * 20) = 19 demo tokens and may sample
24 - 19 = 5 more; at step 1 the floor is 0.949991 and l < 0.95, so 18 tokens and 6 more. On-policy rows sample 24.
"""

import pytest
import torch

from tests.helpers import DEMOS, colocate_trainer, dataset_prompt_ids, generate_batch, needs_requests

from .doubles.vllm_colocate import install_colocate_double
from .doubles.vllm_server import run_two_ranks_with_server

PREFIX_BY_STEP = {0: 19, 1: 18}


def demo_ids(tokenizer, prompt_ids: list[int], n: int) -> list[int]:
    """The first n tokens of the demo of the question whose prompt is `prompt_ids` (one token per character)."""
    demo = DEMOS[dataset_prompt_ids(tokenizer).index(prompt_ids)]
    return tokenizer.convert_tokens_to_ids(list(demo[:n]))


def split_prompt(tokenizer, ids: list[int]) -> tuple[list[int], list[int]]:
    """(the dataset prompt that `ids` starts with, the tokens after it)."""
    for prompt in dataset_prompt_ids(tokenizer):
        if ids[: len(prompt)] == prompt:
            return prompt, ids[len(prompt) :]
    raise AssertionError(f"request {ids} does not start with a dataset prompt")


def test_colocate_requests_carry_each_hybrids_prefix_and_budget(tmp_path, monkeypatch, model_dir, tokenizer):
    engines = install_colocate_double(monkeypatch)
    trainer, snapshots = colocate_trainer(tmp_path, model_dir, tokenizer)
    trainer.train()
    (engine,) = engines
    assert len(engine.generate_calls) == 2  # one call per step, every row its own request
    for step, call in enumerate(engine.generate_calls):
        assert len(call) == 16 and all(r.n == 1 for r in call)
        for row, request in enumerate(call):
            prompt, prefix = split_prompt(tokenizer, request.prompt_token_ids)
            if row % 8 == 7:  # the hybrid: prompt + its own demo prefix, and only the budget left after it
                assert prefix == demo_ids(tokenizer, prompt, PREFIX_BY_STEP[step])
                assert request.max_tokens == 24 - PREFIX_BY_STEP[step]
            else:
                assert prefix == [] and request.max_tokens == 24
    # The engine that generated step 2 was loaded with the weights at the end of step 1.
    loaded = engine.loaded_weights
    for name, tensor in snapshots.by_step[1].items():
        if name in loaded:
            assert torch.equal(loaded[name], tensor), name
    assert set(snapshots.by_step[1]) - set(loaded) <= {"lm_head.weight"}  # tied to the embeddings


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_colocate_prefix_tokens_get_importance_ratio_one(tmp_path, monkeypatch, model_dir, tokenizer, mode):
    install_colocate_double(monkeypatch)
    trainer, _ = colocate_trainer(tmp_path, model_dir, tokenizer, vllm_importance_sampling_mode=mode)
    _, out = generate_batch(trainer)
    ratio = out["importance_sampling_ratio"]
    assert out["prefix_mask"].sum(dim=1).tolist() == [0] * 7 + [19] + [0] * 7 + [19]
    if mode == "token_truncate":  # (B, T): demo tokens were not sampled, so no correction at all
        assert ratio[7, :19].tolist() == [1.0] * 19 and ratio[15, :19].tolist() == [1.0] * 19
    else:  # (B, 1): the sequence ratio is the continuation's alone; the double samples the trained policy itself
        assert ratio.shape == (16, 1)
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)


def test_colocate_hint_rows_send_the_hint_in_the_prompt_with_the_full_budget(
    tmp_path, monkeypatch, model_dir, tokenizer
):
    # prefix_placement="prompt": the hybrid's 19 demo tokens end its user message (trl/placement.py); nothing is
    # prefixed to its completion, so it may sample the whole budget of 24, and every token it keeps was sampled
    engines = install_colocate_double(monkeypatch)
    trainer, _ = colocate_trainer(tmp_path, model_dir, tokenizer, prefix_placement="prompt")
    batch, out = generate_batch(trainer)
    (engine,) = engines
    (call,) = engine.generate_calls
    assert len(call) == 16
    for row, request in enumerate(call):
        question = batch[row]["prompt"][0]["content"]
        hint = "\n\n## Hint.\n" + batch[row]["demos"][0][:19] if row % 8 == 7 else ""
        assert tokenizer.decode(request.prompt_token_ids) == f"<bos><user>{question}{hint}<eos><assistant>"
        assert request.max_tokens == 24
    assert not out["prefix_mask"].any()
    sampled = out["sampling_per_token_logps"][out["completion_mask"].bool()]
    assert not torch.isnan(sampled).any()  # no demo token, so no NaN: the importance ratio covers every token


@pytest.mark.slow
@needs_requests
def test_server_mode_rank0_without_hybrid_sends_every_hybrid_its_prefix(tmp_path, model_dir, tokenizer):
    ranks, events, _ = run_two_ranks_with_server(tmp_path, model_dir, "tests.trl.doubles.prefix_vllm_worker")
    requests = [e for e in events if e["event"] == "completions"]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [b["prefix_lens"] for b in ranks[0]["batches"]] == [[0, 0, 0, 0]] * 2  # rank 0: rows 0-3, on-policy
    assert [b["prefix_lens"] for b in ranks[1]["batches"]] == [[0, 0, 0, 19], [0, 0, 0, 18]]
    # Per step: the 7 on-policy rows (4 on rank 0, 3 on rank 1) are one prompt sent once with n=7 and the full
    # budget; the hybrid is prompt + its prefix with n=1 and the budget left after the prefix (5, then 6) rounded up
    # to its bucket (width ceil(24 / 4) = 6: 6), its completion cut back to that budget. Never the bare prompt for
    # the hybrid, which rank 0's n=8 deduplication would send. Both calls of a step are in flight together.
    assert len(requests) == 4
    for step in (0, 1):
        on_policy, hybrid = sorted(requests[2 * step : 2 * step + 2], key=lambda r: r["n"], reverse=True)
        assert (on_policy["n"], on_policy["max_tokens"], len(on_policy["prompts"])) == (7, 24, 1)
        assert (hybrid["n"], hybrid["max_tokens"], len(hybrid["prompts"])) == (1, 6, 1)
        assert (on_policy["batch_requests"], hybrid["batch_requests"]) == (2, 2)
        prompt, prefix = split_prompt(tokenizer, hybrid["prompts"][0])
        assert on_policy["prompts"][0] == prompt
        assert prefix == demo_ids(tokenizer, prompt, PREFIX_BY_STEP[step])
        # Rank 1's hybrid completion is exactly its prefix followed by what the server generated after it.
        completion = ranks[1]["batches"][step]["completions"][3]
        assert completion == prefix + hybrid["completion_ids"][0][: 24 - PREFIX_BY_STEP[step]]
