"""What the trainer asks of a vLLM engine: server calls in flight together, budget buckets cut back exactly, and no
request beyond the engine's `max_model_len` (the doubles refuse one, as vLLM does)."""

import pytest
from transformers import AutoModelForCausalLM

from prefix_rft.baselines import LuffyConfig, LuffyTrainer
from prefix_rft.trl.rollouts import BudgetedClient
from tests.helpers import (
    base_kwargs,
    colocate_trainer,
    dataset_prompt_ids,
    generate_batch,
    make_dataset,
    needs_requests,
)

from .doubles.ddp_vllm_worker import length_reward
from .doubles.vllm_colocate import FakeLLM, SamplingParams, install_colocate_double
from .doubles.vllm_server import free_port, install_server_client_double, running_server


class RecordingClient:
    """A `VLLMClient` stand-in serving a model of `max_model_len` 20 positions: records each call, returns
    `max_tokens` tokens (ids 100, 101, ...) per sample."""

    base_url = "http://stand-in"

    def __init__(self):
        self.calls = []

    def _get(self, url):
        assert url == "http://stand-in/v1/models"
        return {"data": [{"id": "m", "max_model_len": 20}]}

    def generate(self, prompts, n=1, max_tokens=16, **kwargs):
        self.calls.append((prompts, n, max_tokens))
        completions = [list(range(100, 100 + max_tokens)) for _ in prompts for _ in range(n)]
        logprobs = [[[-1.0]] * len(c) for c in completions]
        return {"prompt_ids": prompts, "completion_ids": completions, "logprobs": logprobs, "logprob_token_ids": None}


def test_server_client_cuts_budgets_to_the_servers_max_model_len():
    # max_model_len 20 (from /v1/models), M = 8. Row 0: 10-token prompt, budget 8, room 10 -> 8. Row 1: 15-token
    # prompt, budget 8, room 5 -> 5, and its bucket (6) is cut to the room too: max_tokens 5.
    client = BudgetedClient(RecordingClient())
    client.budgets = [8, 8]
    out = client.generate(prompts=[[1] * 10, [2] * 15], n=1, max_tokens=8)
    assert sorted((p, n, m) for p, n, m in client._client.calls) == [([[1] * 10], 1, 8), ([[2] * 15], 1, 5)]
    assert out["completion_ids"] == [list(range(100, 108)), list(range(100, 105))]
    assert [len(lp) for lp in out["logprobs"]] == [8, 5] and out["logprob_token_ids"] is None
    client.budgets = [8]
    with pytest.raises(ValueError, match="generation row 0: .* 20 tokens"):
        client.generate(prompts=[[3] * 20], n=1, max_tokens=8)


@pytest.mark.slow
@needs_requests
def test_server_client_puts_every_call_of_a_step_in_flight_together(tmp_path, monkeypatch, model_dir, tokenizer):
    # 12 rows, each its own prompt with its own budget 1..12 under M = 12: 12 distinct (budget, n) pairs. Buckets of
    # width ceil(12 / 4) = 3: budget 1 stays 1, 2-3 -> 3, 4-6 -> 6, 7-9 -> 9, 10-12 -> 12: five calls, and the batching
    # server must see all five in flight together and decode them as one batch.
    from trl.generation.vllm_client import VLLMClient

    base = dataset_prompt_ids(tokenizer)[0]
    prompts = [base + [tokenizer.convert_tokens_to_ids(str(k % 10))] * (k // 10 + 1) for k in range(12)]
    assert len({tuple(p) for p in prompts}) == 12
    budgets = list(range(1, 13))
    with running_server(model_dir, tmp_path / "server.jsonl", extra_args=["--batch-window", "0.5"]) as server:
        install_server_client_double(monkeypatch)
        client = BudgetedClient(VLLMClient(base_url=server.url, group_port=free_port(), connection_timeout=30))
        client.budgets = budgets
        out = client.generate(prompts=prompts, n=1, max_tokens=12, logprobs=0)
        requests = server.completion_requests()

    # Every call in flight at once and decoded in one batch (a client that serialises its calls shows < 5 here).
    assert [(r["batch_requests"], r["in_flight"]) for r in requests] == [(len(requests), len(requests))] * len(
        requests
    )
    assert sorted(r["max_tokens"] for r in requests) == [1, 3, 6, 9, 12]
    served = {tuple(p): (r["max_tokens"], c) for r in requests for p, c in zip(r["prompts"], r["completion_ids"])}
    buckets = [1, 3, 3, 6, 6, 6, 9, 9, 9, 12, 12, 12]
    rows = zip(prompts, budgets, buckets, out["completion_ids"], out["logprobs"], strict=True)
    for prompt, budget, bucket, completion, logprobs in rows:
        assert served[tuple(prompt)][0] == bucket
        sampled = served[tuple(prompt)][1]
        assert completion == sampled[:budget]  # cut exactly to the row's own budget
        assert len(logprobs) == len(completion)
    assert out["prompt_ids"] == prompts


# ---------------------------------------------------------------------------------------------------------------------
# The engine's context limit
# ---------------------------------------------------------------------------------------------------------------------


def test_colocate_double_refuses_a_request_beyond_max_model_len(model_dir, tokenizer):
    llm = FakeLLM(str(model_dir), max_model_len=20)
    prompt = {"prompt_token_ids": dataset_prompt_ids(tokenizer)[0]}  # 10 tokens
    (output,) = llm.generate([prompt], SamplingParams(max_tokens=10))  # 10 + 10 = 20: allowed
    assert len(output.outputs[0].token_ids) <= 10
    with pytest.raises(ValueError, match=r"too large: 11\. .* context length is 20 tokens .* 10 input tokens"):
        llm.generate([prompt], SamplingParams(max_tokens=11))
    (output,) = llm.generate([prompt], SamplingParams(max_tokens=None))  # None: up to the end of the context
    assert len(output.outputs[0].token_ids) <= 10


@pytest.mark.slow
@needs_requests
def test_server_double_answers_400_to_a_request_beyond_max_model_len(tmp_path, model_dir, tokenizer):
    import requests

    prompt = dataset_prompt_ids(tokenizer)[0]  # 10 tokens
    with running_server(model_dir, tmp_path / "server.jsonl", extra_args=["--max-model-len", "20"]) as server:
        body = {"model": str(model_dir), "prompt": [prompt], "max_tokens": 11, "return_token_ids": True}
        response = requests.post(f"{server.url}/v1/completions", json=body, timeout=30)
        (record,) = server.completion_requests()
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("'max_tokens' or 'max_completion_tokens' is too large: 11.")
    assert "(11 > 20 - 10)" in message and record["error"] == message


def test_colocate_full_demo_rows_fit_the_engine(tmp_path, monkeypatch, model_dir, tokenizer):
    # LUFFY: the demo row's completion is the 20-token demo + EOS, and its discarded one-token sample is asked for
    # after the 10-token prompt alone (10 + 1), where prompt + demo + EOS + 1 = 32 is over max_model_len 31.
    engines = install_colocate_double(monkeypatch)
    overrides = dict(use_vllm=True, vllm_mode="colocate", vllm_max_model_length=31, max_completion_length=21)
    args = LuffyConfig(**base_kwargs(tmp_path, **overrides))  # on-policy rows: 10 + 21 = 31
    trainer = LuffyTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=[length_reward],
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    batch, out = generate_batch(trainer)
    (call,) = engines[0].generate_calls
    hybrid = call[7]
    assert (len(hybrid.prompt_token_ids), hybrid.max_tokens) == (10, 1)
    assert all(len(r.prompt_token_ids) + r.max_tokens <= 31 for r in call)
    assert out["completion_mask"][7].sum().item() == 21  # still the whole demo and its EOS
    assert tokenizer.decode(out["completion_ids"][7, :20].tolist()) == batch[7]["demos"][0]


def test_colocate_hint_rows_without_max_prompt_length_fit_the_engine(tmp_path, monkeypatch, model_dir, tokenizer):
    # prefix_placement="prompt", max_prompt_length None: the hint row's prompt is the 10-token prompt plus the hint
    # (11 label + 19 demo tokens) = 40 tokens, so prompt + 24 would pass max_model_len 50; its budget is cut to the
    # 10 positions left.
    engines = install_colocate_double(monkeypatch)
    trainer, _ = colocate_trainer(
        tmp_path, model_dir, tokenizer, prefix_placement="prompt", max_prompt_length=None, vllm_max_model_length=50
    )
    generate_batch(trainer)
    (call,) = engines[0].generate_calls
    for row, request in enumerate(call):
        length = len(request.prompt_token_ids)
        if row % 8 == 7:
            assert (length, request.max_tokens) == (40, 10)
        else:
            assert (length, request.max_tokens) == (10, 24)
