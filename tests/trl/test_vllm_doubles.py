"""The vLLM doubles against stock TRL: GRPOTrainer's real vLLM code paths, with only vLLM itself replaced.

Hand-derivable expectations, from base_kwargs (16 rows per step, 8 generations, max_completion_length 24) and the
4-question dataset: each step's generation batch is 2 questions x 8; over 2 steps the shuffled sampler visits all 4
questions once. A weight sync happens before each step's generation, so the engine generating step 2 holds the
weights at the end of step 1, and nothing syncs after the last step.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer
from trl.generation.vllm_generation import extract_logprobs

from tests.helpers import base_kwargs, dataset_prompt_ids, make_dataset, needs_requests

from .doubles.ddp_vllm_worker import WeightSnapshots, length_reward
from .doubles.vllm_colocate import FakeLLM, SamplingParams, install_colocate_double
from .doubles.vllm_server import (
    free_port,
    install_server_client_double,
    run_two_ranks_with_server,
    running_server,
)

MAX_TOKENS = 24  # base_kwargs' max_completion_length
GENERATIONS = 8  # base_kwargs' num_generations
ROWS = 16  # base_kwargs' per_device_train_batch_size
LOGP_DIFFERENCE = "sampling/sampling_logp_difference/max"


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_vllm_completion(ids: list[int], max_tokens: int, eos: int) -> None:
    """At most max_tokens tokens; a shorter one ended on EOS, which is kept and is its only EOS."""
    assert 1 <= len(ids) <= max_tokens
    assert eos not in ids[:-1]
    if len(ids) < max_tokens:
        assert ids[-1] == eos


def assert_weights_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def train_stock_grpo(tmp_path, model_dir, tokenizer, **overrides) -> tuple[GRPOTrainer, WeightSnapshots, dict]:
    model = AutoModelForCausalLM.from_pretrained(model_dir)  # name_or_path = model_dir, which colocate mode loads
    initial = weights_of(model)
    snapshots = WeightSnapshots()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[length_reward],
        args=GRPOConfig(**base_kwargs(tmp_path, max_steps=2, use_vllm=True, **overrides)),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        callbacks=[snapshots],
    )
    trainer.train()
    moved = [name for name in initial if not torch.equal(initial[name], snapshots.by_step[1][name])]
    assert moved, "step 1 must change the weights for the sync checks to mean anything"
    return trainer, snapshots, initial


def logp_differences(trainer) -> list[float]:
    return [h[LOGP_DIFFERENCE] for h in trainer.state.log_history if LOGP_DIFFERENCE in h]


# ---------------------------------------------------------------------------------------------------------------------
# The colocate double on its own
# ---------------------------------------------------------------------------------------------------------------------


def test_fake_llm_takes_one_sampling_params_per_prompt(model_dir, tokenizer):
    llm = FakeLLM(str(model_dir), logprobs_mode="processed_logprobs")
    prompts = [{"prompt_token_ids": ids} for ids in dataset_prompt_ids(tokenizer)[:2]]
    params = [SamplingParams(n=3, max_tokens=5, logprobs=0), SamplingParams(n=2, max_tokens=9, logprobs=2)]
    outputs = llm.generate(prompts, params, use_tqdm=False)

    assert [len(o.outputs) for o in outputs] == [3, 2]
    assert [o.prompt_token_ids for o in outputs] == [p["prompt_token_ids"] for p in prompts]
    for output, max_tokens in zip(outputs, [5, 9]):
        for completion in output.outputs:
            assert_vllm_completion(completion.token_ids, max_tokens, tokenizer.eos_token_id)
    (call,) = llm.generate_calls
    assert [(r.prompt_token_ids, r.n, r.max_tokens) for r in call] == [
        (prompts[0]["prompt_token_ids"], 3, 5),
        (prompts[1]["prompt_token_ids"], 2, 9),
    ]
    # Read back with TRL's own reader, which sorts every position's entries by rank.
    logprobs, token_ids = extract_logprobs(outputs)
    completions = [c for o in outputs for c in o.outputs]
    top_ns = [0] * 3 + [2] * 2  # the `logprobs` each completion's request asked for
    for seq_logprobs, seq_ids, completion, top_n in zip(logprobs, token_ids, completions, top_ns):
        assert len(seq_ids) == len(completion.token_ids)
        for position, (values, ids) in enumerate(zip(seq_logprobs, seq_ids)):
            token = completion.token_ids[position]
            rank = completion.logprobs[position][token].rank
            assert values == sorted(values, reverse=True)
            # The sampled token is always there: at its rank inside the top-N, else as one extra, last entry.
            if rank <= top_n:
                assert len(ids) == top_n and ids.index(token) == rank - 1
            else:
                assert len(ids) == top_n + 1 and ids[-1] == token


@pytest.mark.parametrize("mode", ["processed_logprobs", "raw_logprobs"])
def test_fake_llm_logprobs_follow_the_logprobs_mode(model_dir, tokenizer, mode):
    # Processed: after temperature 0.5 and top-k 5, what TRL's importance sampling compares with; raw: the model's.
    llm = FakeLLM(str(model_dir), logprobs_mode=mode)
    prompt = dataset_prompt_ids(tokenizer)[0]
    (output,) = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0.5, top_k=5, logprobs=0))
    (completion,) = output.outputs
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1]
    if mode == "processed_logprobs":
        logits = logits / 0.5
        logits = logits.masked_fill(logits < logits.topk(5).values[:, -1:], float("-inf"))
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(1)
    got = torch.tensor([position[t].logprob for position, t in zip(completion.logprobs, completion.token_ids)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_fake_llm_stops_at_eos_and_keeps_it(model_dir, tokenizer):
    llm = FakeLLM(str(model_dir))
    prompt = {"prompt_token_ids": dataset_prompt_ids(tokenizer)[0]}
    (greedy,) = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=3))
    first = greedy.outputs[0].token_ids[0]
    llm.engine.eos_token_ids = {first}  # make the greedy first token the stop token
    (stopped,) = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=3))
    assert (stopped.outputs[0].token_ids, stopped.outputs[0].finish_reason) == ([first], "stop")
    assert greedy.outputs[0].finish_reason == "length" and len(greedy.outputs[0].token_ids) == 3


def test_fake_llm_load_weights_copies_checkpoint_names(model_dir):
    llm = FakeLLM(str(model_dir))
    loader = llm.llm_engine.model_executor.driver_worker.model_runner.model
    new = torch.ones_like(llm.engine.model.model.norm.weight) * 3
    assert loader.load_weights([("model.norm.weight", new)]) == {"model.norm.weight"}
    new.zero_()  # a copy, not an alias of the trainer's tensor
    assert torch.equal(llm.engine.model.model.norm.weight, torch.full_like(new, 3))
    assert torch.equal(llm.loaded_weights["model.norm.weight"], torch.full_like(new, 3))
    embedding = llm.engine.model.model.embed_tokens.weight
    assert loader.load_weights([("lm_head.weight", torch.zeros_like(embedding))]) == set()  # tied: skipped
    assert embedding.abs().sum() > 0
    with pytest.raises(KeyError):
        loader.load_weights([("base_model.model.model.norm.weight", new)])  # a PEFT name TRL must strip first


def test_sampling_params_double_rejects_what_it_cannot_honour():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(NotImplementedError):
        SamplingParams(stop=["\n"]).to_spec(room=256)


# ---------------------------------------------------------------------------------------------------------------------
# Stock GRPOTrainer, colocate mode
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sleep_mode", [False, True])
def test_stock_grpo_colocate_mode_on_the_llm_double(tmp_path, monkeypatch, model_dir, tokenizer, sleep_mode):
    engines = install_colocate_double(monkeypatch)
    trainer, snapshots, initial = train_stock_grpo(
        tmp_path, model_dir, tokenizer, vllm_mode="colocate", vllm_enable_sleep_mode=sleep_mode
    )
    (llm,) = engines
    assert llm is trainer.vllm_generation.llm
    built_with = {k: llm.init_kwargs[k] for k in ("model", "logprobs_mode", "seed", "max_num_seqs")}
    assert built_with == {
        "model": str(model_dir),
        "logprobs_mode": "processed_logprobs",
        "seed": 0,
        "max_num_seqs": 16,
    }

    # One generate call per step, one request per row with n=1: question a x 8, then question b x 8.
    assert len(llm.generate_calls) == 2
    visited = []
    for call in llm.generate_calls:
        assert [(r.n, r.max_tokens) for r in call] == [(1, MAX_TOKENS)] * ROWS
        first, second = call[0].prompt_token_ids, call[GENERATIONS].prompt_token_ids
        assert [r.prompt_token_ids for r in call] == [first] * GENERATIONS + [second] * GENERATIONS
        visited += [first, second]
        for request in call:
            (completion,) = request.completion_ids
            assert_vllm_completion(completion, MAX_TOKENS, tokenizer.eos_token_id)
    assert sorted(visited) == sorted(dataset_prompt_ids(tokenizer))

    # Weight sync before each step: one load_weights per tensor, then a prefix-cache reset; step 2 used step 1's.
    assert llm.load_weights_calls == 2 * len(initial)
    assert llm.reset_prefix_cache_calls == 2
    assert_weights_equal(llm.loaded_weights, snapshots.by_step[1])
    assert_weights_equal(llm.engine.weights(), snapshots.by_step[1])
    # The engine generated with the trainer's weights: its processed logprobs match the trainer's recomputation.
    differences = logp_differences(trainer)
    assert len(differences) == 2 and max(differences) < 1e-4
    if sleep_mode:  # level-2 sleep at start and after each generation; weights woken to sync, KV cache to generate
        assert llm.sleep_calls == [2, 2, 2]
        assert llm.wake_up_calls == [["weights"], ["kv_cache"]] * 2
    else:
        assert llm.sleep_calls == [] and llm.wake_up_calls == []


# ---------------------------------------------------------------------------------------------------------------------
# Stock TRL, server mode
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_requests
@pytest.mark.parametrize("vllm_version", ["0.31.0", "0.27.0"])
def test_trl_client_speaks_to_the_server_double(tmp_path, monkeypatch, model_dir, tokenizer, vllm_version):
    # 0.27 exercises TRL's pre-0.28 transfer branch (NCCLWeightTransferEngine) and its empty prefix-cache reply.
    from trl.generation.vllm_client import VLLMClient

    prompts = dataset_prompt_ids(tokenizer)[:2]
    with running_server(model_dir, tmp_path / "server.jsonl", extra_args=["--vllm-version", vllm_version]) as server:
        install_server_client_double(monkeypatch, vllm_version)
        client = VLLMClient(base_url=server.url, group_port=free_port(), connection_timeout=30)
        out = client.generate(prompts, n=3, max_tokens=5, logprobs=2)
        client.init_communicator(device=torch.device("cpu"))
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(-2)
        client.update_model_params(model)
        client.reset_prefix_cache()
        served = server.weights()
        events = server.events()

    assert out["prompt_ids"] == prompts
    assert len(out["completion_ids"]) == 6
    for ids, logprobs, logprob_ids in zip(out["completion_ids"], out["logprobs"], out["logprob_token_ids"]):
        assert_vllm_completion(ids, 5, tokenizer.eos_token_id)
        for token, values, candidates in zip(ids, logprobs, logprob_ids):
            assert token in candidates and 2 <= len(candidates) <= 3 and values == sorted(values, reverse=True)
    assert_weights_equal(served, weights_of(model))
    (request,) = [e for e in events if e["event"] == "completions"]
    assert (request["prompts"], request["n"], request["max_tokens"], request["logprobs"]) == (prompts, 3, 5, 2)
    (init,) = [e for e in events if e["event"] == "init_weight_transfer_engine"]
    (update,) = [e for e in events if e["event"] == "update_weights"]
    assert (init["init_info"]["world_size"], init["init_info"]["rank_offset"]) == (2, 1)
    stateful = vllm_version == "0.31.0"  # where TRL puts `packed`: init_info from 0.28 on, update_info before
    assert (init["init_info"].get("packed"), update["packed"]) == ((True, None) if stateful else (None, True))
    assert update["names"] == list(weights_of(model)) and set(update["dtype_names"]) == {"float32"}


@pytest.mark.slow
@needs_requests
def test_trl_client_names_a_server_without_weight_transfer(tmp_path, monkeypatch, model_dir):
    from trl.generation.vllm_client import VLLMClient

    with running_server(model_dir, tmp_path / "server.jsonl", extra_args=["--no-weight-transfer"]) as server:
        install_server_client_double(monkeypatch)
        client = VLLMClient(base_url=server.url, group_port=free_port(), connection_timeout=30)
        with pytest.raises(RuntimeError, match="no weight-transfer engine"):
            client.init_communicator(device="cpu")


@pytest.mark.slow
@needs_requests
def test_stock_grpo_server_mode_on_the_server_double(tmp_path, monkeypatch, model_dir, tokenizer):
    with running_server(model_dir, tmp_path / "server.jsonl") as server:
        install_server_client_double(monkeypatch)
        trainer, snapshots, initial = train_stock_grpo(
            tmp_path,
            model_dir,
            tokenizer,
            vllm_mode="server",
            vllm_server_base_url=server.url,
            vllm_group_port=free_port(),
            vllm_server_timeout=30,
        )
        served = server.weights()
        events = server.events()

    # The protocol, in order: one rendezvous, then per step a bracketed update, a cache reset and a generation.
    per_step = ["start_weight_update", "update_weights", "finish_weight_update", "reset_prefix_cache", "completions"]
    assert [e["event"] for e in events] == ["init_weight_transfer_engine", *per_step * 2]
    for update in (e for e in events if e["event"] == "update_weights"):
        assert update["names"] == list(initial)
        assert update["shapes"] == [list(t.shape) for t in initial.values()]
    # One request per step: the 2 unique questions of the 16 rows, n=8, max_tokens=max_completion_length.
    requests = [e for e in events if e["event"] == "completions"]
    visited = []
    for request in requests:
        assert (request["n"], request["max_tokens"], request["temperature"], request["logprobs"]) == (8, 24, 1.0, 0)
        assert len(request["prompts"]) == ROWS // GENERATIONS and request["prompts"][0] != request["prompts"][1]
        visited += request["prompts"]
        assert len(request["completion_ids"]) == ROWS
        for completion in request["completion_ids"]:
            assert_vllm_completion(completion, MAX_TOKENS, tokenizer.eos_token_id)
    assert sorted(visited) == sorted(dataset_prompt_ids(tokenizer))
    # The server holds the trainer's weights after step 1, and generated step 2 with them.
    assert_weights_equal(served, snapshots.by_step[1])
    differences = logp_differences(trainer)
    assert len(differences) == 2 and max(differences) < 1e-4


@pytest.mark.slow
@needs_requests
def test_stock_grpo_server_mode_on_two_processes(tmp_path, model_dir, tokenizer):
    ranks, events, served = run_two_ranks_with_server(tmp_path, model_dir, "tests.trl.doubles.ddp_vllm_worker")
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["distributed_type"] == "DistributedType.MULTI_CPU"
    assert [r["has_client"] for r in ranks] == [True, False]  # only the main process talks to the server
    # Rank 0 sends both ranks' prompts, deduplicated: 2 questions x n=8 per step.
    requests = [e for e in events if e["event"] == "completions"]
    assert len(requests) == 2
    assert all((r["n"], r["max_tokens"], len(r["prompts"])) == (8, 24, 2) for r in requests)
    assert sorted(p for r in requests for p in r["prompts"]) == sorted(dataset_prompt_ids(tokenizer))
    assert len([e for e in events if e["event"] == "init_weight_transfer_engine"]) == 1
    after_step_1 = {name: torch.tensor(values) for name, values in ranks[0]["after_step_1"].items()}
    assert ranks[1]["after_step_1"] == ranks[0]["after_step_1"]
    assert_weights_equal(served, after_step_1)
    assert all(len(r["logp_difference_max"]) == 2 and max(r["logp_difference_max"]) < 1e-4 for r in ranks)
