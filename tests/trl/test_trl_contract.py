"""The TRL internals PrefixRFTTrainer relies on still exist with the signatures it expects.

TRL has no public hook for per-row prompts, per-token advantages or a custom loss, so the trainer overrides private
GRPOTrainer/Trainer methods and reads private attributes. pyproject pins `trl>=1.16,<1.17`; when a new TRL is tried,
these tests say what changed and which override to adapt, instead of a run failing (or silently training wrong).
The same holds for the private attributes of accelerate and of TRL's vLLM client that we read or write.
"""

import inspect
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import transformers
from trl import GRPOTrainer
from trl.chat_template_utils import parse_response
from trl.generation import vllm_client, vllm_generation

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.rollouts import BudgetedClient
from tests.helpers import make_dataset, make_trainer, train_args

OVERRIDDEN = {
    "_generate_single_turn": (
        ("prompt_ids", "images", "multimodal_fields", "num_generations", "has_tool_images"),
        "starts each hybrid row from its demo prefix and gives it the budget left after the prefix",
    ),
    "_tokenize_prompts": (
        ("prompts",),
        "adds the demo hint to hybrid rows' prompt ids under prefix_placement='prompt' (TRL trains on those ids)",
    ),
    "_calculate_rewards": (
        ("inputs", "prompts", "completions", "completion_ids_list"),
        "keeps the weighted rewards for the prefix advantages and names the row of a failing reward function",
    ),
    "_generate_and_score_completions": (
        ("inputs",),
        "plans the hybrid rows before TRL generates and adds prefix_mask and per-token advantages after it scores",
    ),
    "_compute_loss": (("model", "inputs"), "the Prefix-RFT loss (entropy-selected prefix tokens, dual clip)"),
    "_get_train_sampler": (("dataset",), "reseeds the RepeatSampler per epoch so a resumed run keeps its order"),
    "_save_checkpoint": (("model", "trial"), "writes checkpoints into a staging folder, then renames them"),
    "_get_output_dir": (("trial",), "points TRL's checkpoint writer at the staging folder"),
    "_prepare_inputs": (("generation_batch",), "selects prefix tokens over a whole optimizer step"),
    "_save_rng_state": (("output_dir",), "saves each rank's trainer-side states (`_rank_states`) with the RNG state"),
    "_load_rng_state": (("checkpoint",), "restores the trainer-side states (`_rank_states`) on resume"),
    "_get_grad_norm": (("model", "grad_norm"), "HptTrainer skips a step whose norm exceeds hpt_skip_grad_norm"),
}

# name -> (leading parameters after self that we pass by name or position)
CALLED = {
    "__init__": ("model", "reward_funcs", "args", "train_dataset"),
    "_get_per_token_logps_and_entropies": (
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ),
}

# Trainer attributes read or written by trl/trainer.py, trl/rollouts.py and the baselines.
ATTRIBUTES = (
    "_logs",
    "_metrics",
    "_step",
    "_tokenizer",
    "_buffered_inputs",
    "_entropy_bonus_enabled",
    "_last_world_entropy",
    "_entropy_window_stats",
    "_log_completion_extra",  # the batch's scoring logs the kept reward passes' `log_extra` columns through it
    "_log_metric",
    "aux_loss_enabled",
    "router_aux_loss_coef",
    "beta",
    "chat_template_kwargs",
    "entropy_coef",
    "epsilon_high",
    "epsilon_low",
    "generation_config",
    "importance_sampling_level",
    "loss_type",
    "max_completion_length",
    "num_generations",
    "reward_func_names",
    "reward_funcs",
    "reward_weights",
    "scale_rewards",
    "tools",
    "use_adaptive_entropy",
    "use_transformers_continuous_batching",
    "use_vllm",
    "vllm_importance_sampling_correction",
)

# VLLMGeneration attributes the vLLM paths of trl/trainer.py use (set in __init__/_init_vllm; vLLM is not installed).
VLLM_GENERATION_ATTRIBUTES = ("mode", "llm", "vllm_client", "tensor_parallel_size", "tp_group")


def parameters(function) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(function).parameters if name != "self")


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_trl_method_keeps_its_signature(name):
    expected, role = OVERRIDDEN[name]
    found = parameters(getattr(GRPOTrainer, name))
    assert found == expected, (
        f"TRL's GRPOTrainer.{name} now takes {found}, not {expected}. PrefixRFTTrainer.{name} (or a baseline's) "
        f"overrides it to {role}: adapt the override to the new signature and to what TRL now does there."
    )


@pytest.mark.parametrize("name", sorted(CALLED))
def test_called_trl_method_keeps_its_leading_parameters(name):
    expected = CALLED[name]
    found = parameters(getattr(GRPOTrainer, name))
    assert found[: len(expected)] == expected, (
        f"TRL's GRPOTrainer.{name} now starts with {found[: len(expected)]}, not {expected}: adapt the calls in "
        "src/prefix_rft/trl/trainer.py."
    )


def test_trainer_refusals_name_arguments_trl_still_takes():
    init = parameters(GRPOTrainer.__init__)
    for name in ("tools", "rollout_func", "environment_factory"):
        assert name in init, f"GRPOTrainer no longer takes `{name}`: update REFUSED_TRAINER_ARGUMENTS in trainer.py"


def test_trl_attributes_the_trainer_reads_exist(tmp_path, model, tokenizer):
    trainer = make_trainer(tmp_path, model, tokenizer)
    missing = [name for name in ATTRIBUTES if not hasattr(trainer, name)]
    assert not missing, f"GRPOTrainer no longer sets {missing}: adapt src/prefix_rft/trl/trainer.py, which reads them"
    assert {"completion", "advantages", "extra"} <= trainer._logs.keys(), "TRL's completions log changed shape"
    assert {"train", "eval"} <= trainer._metrics.keys(), "TRL's metrics store changed shape"


async def async_reward(completions, **kwargs):
    return [0.0] * len(completions)


def test_trl_calls_reward_functions_as_the_in_step_scoring_does(tmp_path, model, tokenizer):
    # `_reward_columns` (trl/scoring.py) calls the reward functions outside TRL's `_calculate_rewards`, as TRL does:
    # the same extra arguments, async functions on TRL's event loop, completions parsed with TRL's `tools`.
    source = inspect.getsource(GRPOTrainer._calculate_rewards)
    for key in ("trainer_state", "log_extra", "log_metric"):
        assert f'reward_kwargs["{key}"]' in source, (
            f"TRL no longer passes `{key}` to reward functions: adapt _reward_columns"
        )
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[async_reward],
        args=train_args(tmp_path),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    assert trainer.async_loop.is_running(), "TRL no longer runs async reward functions on `async_loop`"
    assert parameters(parse_response)[:4] == ("tokenizer", "ids", "prefix", "tools")


def test_vllm_generation_attributes_the_trainer_reads_exist():
    trainer_source = inspect.getsource(GRPOTrainer)
    assert "self.vllm_generation = VLLMGeneration(" in trainer_source, "GRPOTrainer no longer sets vllm_generation"
    generation = vllm_generation.VLLMGeneration
    source = inspect.getsource(generation.__init__) + inspect.getsource(generation._init_vllm)
    missing = [name for name in VLLM_GENERATION_ATTRIBUTES if f"self.{name}" not in source]
    assert not missing, f"VLLMGeneration no longer sets {missing}: adapt PrefixRFTTrainer._generate_vllm"


GUARDS = "src/prefix_rft/trl/guards.py (NonFiniteStepGuard._mark_skipped)"
ROLLOUTS = "src/prefix_rft/trl/rollouts.py (BudgetedClient.max_model_len)"


def test_accelerate_reports_the_private_overflow_flag_as_a_skipped_step(tmp_path, model, tokenizer):
    # The guard skips a non-finite step by setting `_is_overflow` on each optimizer without a gradient scaler, so
    # that the Trainer holds the learning-rate schedule back as on an fp16 overflow.
    accelerator = make_trainer(tmp_path, model, tokenizer).accelerator
    optimizer = accelerator.prepare(torch.optim.SGD(model.parameters(), lr=0.1))
    assert any(o is optimizer for o in getattr(accelerator, "_optimizers", [])), (
        f"accelerate's Accelerator no longer lists the optimizers it prepared in the private `_optimizers`: {GUARDS} "
        "reads it to mark a skipped step, and would now mark none"
    )
    assert optimizer.scaler is None and getattr(optimizer, "_is_overflow", None) is False, (
        "accelerate's AcceleratedOptimizer no longer starts with the private `_is_overflow = False` (fp32, no "
        f"scaler): {GUARDS} writes it"
    )
    for skipped in (True, False):
        optimizer._is_overflow = skipped
        optimizer.step()  # without a scaler, step() leaves the flag as it was: the Trainer reads it after the step
        assert accelerator.optimizer_step_was_skipped is skipped, (
            f"accelerate's optimizer_step_was_skipped no longer reports the private `_is_overflow={skipped}` set "
            f"before an unscaled step: {GUARDS} sets it so the learning-rate schedule waits on a skipped step"
        )
    assert "if not self.accelerator.optimizer_step_was_skipped:" in inspect.getsource(transformers.Trainer), (
        "transformers' Trainer no longer holds back lr_scheduler.step() when accelerator.optimizer_step_was_skipped: "
        f"{GUARDS} marks skipped steps through it"
    )


class ModelsEndpoint(BaseHTTPRequestHandler):
    """`/health` and vLLM's `/v1/models` for one served model of 20 positions; anything else is 404."""

    def do_GET(self):
        bodies = {"/health": {}, "/v1/models": {"data": [{"id": "tiny", "max_model_len": 20}]}}
        body = json.dumps(bodies.get(self.path, {"error": "not found"})).encode()
        self.send_response(200 if self.path in bodies else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_vllm_client_private_get_returns_the_servers_json(monkeypatch):
    method = getattr(vllm_client.VLLMClient, "_get", None)
    assert callable(method) and parameters(method)[:1] == ("url",), (
        "TRL's VLLMClient no longer has the private `_get(url, **kwargs)`: "
        f"{ROLLOUTS} calls it to read the server's /v1/models; read it through `client.session` instead"
    )
    monkeypatch.setattr(vllm_client, "is_vllm_available", lambda *args, **kwargs: True)  # only the HTTP side runs
    server = ThreadingHTTPServer(("127.0.0.1", 0), ModelsEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = vllm_client.VLLMClient(base_url=f"http://127.0.0.1:{server.server_port}")
        cards = client._get(f"{client.base_url}/v1/models")
        assert cards == {"data": [{"id": "tiny", "max_model_len": 20}]}, (
            f"TRL's private VLLMClient._get no longer returns the response's JSON: {ROLLOUTS} reads it"
        )
        with pytest.raises(Exception, match="404"):
            client._get(f"{client.base_url}/nothing")
        assert BudgetedClient(client).max_model_len() == 20
    finally:
        server.shutdown()
        server.server_close()
