"""With no hybrid rows, one optimizer step equals stock TRL Dr. GRPO from the same seed and data."""

import copy

import torch
from trl import GRPOConfig, GRPOTrainer

from prefix_rft import PrefixRFTTrainer

from .conftest import base_kwargs, make_dataset, train_args


def length_reward(completions, **kwargs):
    # Varies across rollouts so the advantages, and hence the update, are non-zero.
    return [float(len(c[0]["content"]) % 3) for c in completions]


def test_no_hybrid_step_matches_stock_dr_grpo(tmp_path, model, tokenizer):
    ours_args = train_args(tmp_path, num_hybrid=0, output_dir=str(tmp_path / "ours"))
    stock_args = GRPOConfig(
        **base_kwargs(tmp_path, output_dir=str(tmp_path / "stock")), loss_type="dr_grpo", scale_rewards="none"
    )

    stock_model, ours_model = copy.deepcopy(model), copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    GRPOTrainer(
        model=stock_model,
        reward_funcs=[length_reward],
        args=stock_args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    ).train()
    PrefixRFTTrainer(
        model=ours_model,
        reward_funcs=[length_reward],
        args=ours_args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    ).train()
    moved = [not torch.equal(a, b) for a, b in zip(before, stock_model.parameters())]
    assert any(moved), "the stock step must change the parameters for the comparison to mean anything"
    for p_stock, p_ours in zip(stock_model.parameters(), ours_model.parameters()):
        assert torch.equal(p_stock, p_ours)
