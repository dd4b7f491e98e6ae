"""HPT: the per-question switch on a scored batch, the loss of each kind of row by hand, refusals, a training step."""

import math

import pytest
import torch

from prefix_rft.baselines import HptConfig, HptTrainer
from tests.helpers import base_kwargs, baseline_trainer, generate_batch, loss_batch


def hpt(tmp_path, model, tokenizer, rewards=(0.0,), **overrides):
    return baseline_trainer(HptTrainer, HptConfig, tmp_path, model, tokenizer, list(rewards), **overrides)


def test_hpt_trains_the_demo_of_a_failed_question_and_the_rollouts_of_a_solved_one(tmp_path, model, tokenizer):
    # two groups of 8 (slot 7 the demo): the first group's rollouts all score 0 -> SFT; the second's row 8 scores 1
    trainer = hpt(tmp_path, model, tokenizer, [0.0] * 8 + [1.0] + [0.0] * 7)
    _, out = generate_batch(trainer)
    assert out["hpt_sft_rows"].tolist() == [False] * 7 + [True] + [False] * 8
    assert out["hpt_rl_rows"].tolist() == [False] * 8 + [True] * 7 + [False]
    metrics = trainer._metrics["train"]
    assert (metrics["hpt/sft_questions"], metrics["hpt/rl_questions"]) == ([1.0], [1.0])


def test_hpt_trains_the_demo_of_a_question_in_the_gate_off_band_with_sft(tmp_path, model, tokenizer):
    # gate 0, gate_off 1: the second group's one solved rollout puts it in (gate, gate_off], where the authors' code
    # adds the demo (off-flagged, which their released SFT loss ignores): its demo is trained with SFT, no rollout
    trainer = hpt(tmp_path, model, tokenizer, [0.0] * 8 + [1.0] + [0.0] * 7, hpt_switch_gate_off=1)
    _, out = generate_batch(trainer)
    assert out["hpt_sft_rows"].tolist() == ([False] * 7 + [True]) * 2
    assert not out["hpt_rl_rows"].any()
    assert trainer._metrics["train"]["hpt/sft_questions"] == [2.0]


@pytest.mark.parametrize("divisor, divided_rows", [("rows_x_length", 3), ("length", 1)])
def test_hpt_loss_sums_grpo_of_rl_rows_and_nll_of_sft_demos(tmp_path, model, tokenizer, divisor, divided_rows):
    trainer = hpt(tmp_path, model, tokenizer, hpt_sft_loss_coef=0.5, rl_loss_divisor=divisor)
    token_loss = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    logps = torch.tensor([[-9.0, -9.0], [-9.0, -9.0], [-1.0, -3.0]])
    prefix_mask = torch.tensor([[False, False], [False, False], [True, True]])
    # row 0: a rollout of an RL question; row 1: a rollout of an SFT question (dropped); row 2: that question's demo
    rows = {"hpt_sft_rows": torch.tensor([False, False, True]), "hpt_rl_rows": torch.tensor([True, False, False])}
    loss = trainer._aggregate(token_loss, logps, loss_batch(prefix_mask, **rows))
    # Dr. GRPO: (1 + 2) / (3 rows * 24) = 1/24, or over the length alone (1 + 2) / 24 = 1/8 as the authors' verl;
    # NLL token mean of the demo (1 + 3) / 2 = 2, x 0.5
    assert loss.item() == pytest.approx(3 / (divided_rows * 24) + 0.5 * 2.0)


def test_hpt_rl_tokens_are_not_clipped(tmp_path, model, tokenizer):
    trainer = hpt(tmp_path, model, tokenizer)
    batch = loss_batch(torch.zeros(1, 1).bool())
    loss, _ = trainer._token_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1), batch)
    assert loss.item() == pytest.approx(-math.exp(0.5))  # -A * rho, rho = exp(0.5) above 1 + 0.2


def test_hpt_step_on_failed_questions_is_sft(tmp_path, model, tokenizer):
    trainer = hpt(tmp_path, model, tokenizer, [0.0])  # every question fails: both groups train their demo
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert trainer.state.log_history[0]["hpt/sft_questions"] == 2.0


@pytest.mark.parametrize(("limit", "skipped"), [(1e-3, True), (1e9, False)])
def test_hpt_skips_a_step_whose_gradient_norm_exceeds_the_limit(tmp_path, model, tokenizer, limit, skipped):
    # every question fails: an SFT step whose gradient norm before clipping is above 1e-3 and far below 1e9; clipped
    # at 1e-6 it is below 1e-3, so a skip at 1e-3 shows the norm compared is the one before clipping
    trainer = hpt(tmp_path, model, tokenizer, [0.0], hpt_skip_grad_norm=limit, max_grad_norm=1e-6)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    log = trainer.state.log_history[0]
    assert 1e-3 < log["grad_norm"] < 1e9
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed is not skipped
    assert log["hpt/skipped_step_fraction"] == float(skipped)


@pytest.mark.parametrize(("norm", "skipped"), [(100.0, True), (80.0, False), (float("inf"), False)])
def test_hpt_skip_leaves_a_non_finite_norm_to_the_step_guard(tmp_path, model, tokenizer, norm, skipped):
    # limit 80: 100 drops the gradients; 80 is not above it; inf is the non-finite step guard's to skip and count
    trainer = hpt(tmp_path, model, tokenizer, hpt_skip_grad_norm=80.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert trainer._get_grad_norm(model, grad_norm=torch.tensor(norm)).item() == norm
    assert all((p.grad is None) is skipped for p in model.parameters())
    assert trainer._metrics["train"]["hpt/skipped_step_fraction"] == [float(skipped)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epsilon": 0.1}, "epsilon=0.1 is not used by HptConfig"),
        ({"dual_clip": 3.0}, "dual_clip=3.0 is not used by HptConfig"),
        ({"prefix_advantage": "paper"}, "prefix_advantage='paper' is not used by HptConfig"),
        ({"loss_type": "grpo"}, "loss_type='grpo' is not used by HptConfig"),
        ({"prefix_ratio_floor_end": 0.1}, "prefix_ratio_floor_end=0.1 is not used by HptConfig"),
        ({"hpt_switch_gate": -1}, "hpt_switch_gate and hpt_sft_loss_coef must be >= 0"),
        ({"hpt_switch_gate": 2, "hpt_switch_gate_off": 1}, "hpt_switch_gate_off=1 has no effect: .*_gate=2 "),
        ({"hpt_switch_gate_off": -1}, "hpt_switch_gate_off=-1 has no effect: .*_gate=0 "),
        ({"hpt_skip_grad_norm": 0.0}, "hpt_skip_grad_norm must be > 0 or null, got 0.0"),
        ({"rl_loss_divisor": "rows"}, "rl_loss_divisor='rows' is not supported; expected one of"),
    ],
)
def test_hpt_refuses_options_it_has_no_use_for(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        HptConfig(**base_kwargs(tmp_path, **overrides))
