"""With no hybrid rows, one optimizer step equals stock TRL (Dr. GRPO, and the other supported loss settings)."""

import copy

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from prefix_rft import PrefixRFTTrainer
from tests.helpers import base_kwargs, make_dataset, train_args


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


@pytest.mark.parametrize(
    "settings",
    [
        {"loss_type": "grpo", "scale_rewards": "group"},
        {"loss_type": "dapo", "scale_rewards": "batch"},
        {"loss_type": "bnpo", "scale_rewards": "group", "delta": 1.5},
        {"loss_type": "luspo", "importance_sampling_level": "sequence"},
        {"loss_type": "dr_grpo", "entropy_coef": 0.01, "gradient_accumulation_steps": 2},
    ],
    ids=lambda settings: "-".join(str(v) for v in settings.values()),
)
def test_no_hybrid_step_matches_stock_loss_settings(tmp_path, model, tokenizer, settings):
    # Same arithmetic in another order (advantages, std, ratios), so equal up to rounding, not bit for bit. SGD, since
    # Adam's first step is +-lr for any gradient, so it turns rounding noise on a near-zero gradient into 2 * lr.
    settings = {"optim": "sgd", "scale_rewards": "none", **settings}  # stock defaults to "group"
    stock_model, ours_model = copy.deepcopy(model), copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    common = dict(reward_funcs=[length_reward], train_dataset=make_dataset(), processing_class=tokenizer)
    stock_args = GRPOConfig(**base_kwargs(tmp_path, output_dir=str(tmp_path / "stock"), **settings))
    GRPOTrainer(model=stock_model, args=stock_args, **common).train()
    ours_args = train_args(tmp_path, num_hybrid=0, output_dir=str(tmp_path / "ours"), **settings)
    PrefixRFTTrainer(model=ours_model, args=ours_args, **common).train()
    assert any(not torch.equal(a, b) for a, b in zip(before, stock_model.parameters()))
    for p_stock, p_ours, p_before in zip(stock_model.parameters(), ours_model.parameters(), before):
        torch.testing.assert_close(p_ours - p_before, p_stock - p_before, rtol=1e-4, atol=1e-9)
