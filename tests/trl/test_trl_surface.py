"""What a TRL user gets from GRPOTrainer, PrefixRFTTrainer gives too: default config, model card, MoE."""

import copy

import pytest
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from trl import GRPOTrainer

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from prefix_rft.tasks.model import build_model
from tests.helpers import FixedRewards, make_dataset, make_trainer


def test_trainer_builds_a_default_config_without_args(tmp_path, monkeypatch, tokenizer):
    # GRPOConfig's defaults (max_completion_length 512) need a context over 512 positions: save a test model with 2048
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = 2048
    model = build_model(tokenizer, "test")
    model.config.max_position_embeddings = 2048
    model.save_pretrained(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    # The defaults train in bf16, which transformers refuses on a CPU-only machine unless told it is supported
    monkeypatch.setattr("transformers.training_args.is_torch_bf16_gpu_available", lambda: True)
    trainer = PrefixRFTTrainer(
        model="model", reward_funcs=[FixedRewards([0.0])], train_dataset=make_dataset(), processing_class=tokenizer
    )
    # GRPOTrainer names its default output_dir "<model>-GRPO"
    assert isinstance(trainer.args, PrefixRFTConfig)
    assert trainer.args.output_dir == "model-Prefix-RFT"
    assert (trainer.args.loss_type, trainer.args.num_hybrid) == ("dr_grpo", 1)


def test_model_card_names_prefix_rft_and_cites_its_paper(tmp_path, model, tokenizer):
    trainer = make_trainer(tmp_path, model, tokenizer)
    trainer.create_model_card(model_name="tiny")
    card = (tmp_path / "out" / "README.md").read_text()
    header = card.split("---")[1]  # the YAML metadata block
    assert "- prefix-rft" in header and "- grpo" not in header
    assert "Prefix-RFT" in card and "2507.01679" in card
    assert "Blending Supervised and Reinforcement Fine-Tuning with Prefix Sampling" in card
    assert "DeepSeekMath" not in card


def test_evaluation_generation_passes_has_tool_images_to_trl(tmp_path, model, tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", lambda self, *args, **kwargs: calls.append(kwargs))
    trainer = make_trainer(tmp_path, model, tokenizer)
    trainer._generate_single_turn([[1, 2]], None, None, 1, has_tool_images=True)  # no rollout in flight: stock path
    assert calls == [{"has_tool_images": True}]


def tiny_moe(tokenizer, router_aux_loss_coef: float = 0.5) -> Qwen3MoeForCausalLM:
    """A two-layer, four-expert Qwen3-MoE over the test tokenizer that returns its router logits."""
    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        output_router_logits=True,
        router_aux_loss_coef=router_aux_loss_coef,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3MoeForCausalLM(config)


def test_moe_router_aux_loss_reaches_the_loss_and_is_logged(tmp_path, tokenizer):
    moe = tiny_moe(tokenizer)
    trainer = make_trainer(tmp_path, moe, tokenizer)
    torch.manual_seed(1)
    prompt_ids, completion_ids = torch.randint(3, len(tokenizer), (2, 4)), torch.randint(3, len(tokenizer), (2, 5))
    completion_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.zeros(2, 5),  # no policy term: the loss is the aux term alone
    }
    moe.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    loss = trainer._compute_loss(moe, inputs)
    # the model's own load-balancing loss on the same tokens, weighted by its config's coefficient 0.5
    attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
    aux = moe(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=attention_mask,
        output_router_logits=True,
    ).aux_loss
    assert aux.item() > 0
    assert loss.item() == pytest.approx(0.5 * aux.item(), rel=1e-5)
    assert trainer._metrics["train"]["aux_loss"] == pytest.approx([aux.item()], rel=1e-5)


def test_moe_training_step_logs_aux_loss(tmp_path, tokenizer):
    trainer = make_trainer(tmp_path, tiny_moe(tokenizer), tokenizer, rewards=[1.0, 0, 0, 1, 0, 0, 0, 1])
    trainer.train()
    assert trainer.state.log_history[0]["aux_loss"] > 0
