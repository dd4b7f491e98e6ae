"""CHORD: the mixed loss worked by hand, mu's schedule over the run, refusals, and one training step end to end."""

import math

import pytest
import torch

from prefix_rft.baselines import ChordConfig, ChordTrainer
from tests.helpers import base_kwargs, baseline_trainer, generate_batch, loss_batch


def chord(tmp_path, model, tokenizer, rewards=(0.0,), **overrides):
    return baseline_trainer(ChordTrainer, ChordConfig, tmp_path, model, tokenizer, list(rewards), **overrides)


def test_chord_loss_mixes_grpo_and_phi_weighted_sft_by_mu(tmp_path, model, tokenizer):
    trainer = chord(tmp_path, model, tokenizer, chord_mu_peak=0.8, chord_mu_valley=0.0, chord_mu_decay_steps=10)
    token_loss = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    logps = torch.tensor([[-1.0, -2.0], [math.log(0.5), math.log(0.5)]])
    prefix_mask = torch.tensor([[False, False], [True, True]])
    loss = trainer._aggregate(token_loss, logps, loss_batch(prefix_mask))
    # GRPO (Dr. GRPO) over the on-policy row: (1 + 2) / (2 rows * 24) = 0.0625; SFT: phi(0.5) = 0.25 on -ln 0.5 per
    # demo token, token mean 0.25 ln 2; mu at step 0 = peak 0.8 (no warm-up): 0.2 * 0.0625 + 0.8 * 0.25 ln 2
    assert loss.item() == pytest.approx(0.2 * 0.0625 + 0.8 * 0.25 * math.log(2))


def test_chord_without_phi_takes_the_plain_nll(tmp_path, model, tokenizer):
    overrides = dict(chord_phi=False, chord_mu_peak=0.5, chord_mu_valley=0.5, chord_mu_decay_steps=0)
    trainer = chord(tmp_path, model, tokenizer, **overrides)
    logps = torch.tensor([[-1.0, -3.0]])
    loss = trainer._aggregate(torch.zeros(1, 2), logps, loss_batch(torch.ones(1, 2, dtype=torch.bool)))
    assert loss.item() == pytest.approx(0.5 * 2.0)  # GRPO term 0; mu 0.5 x NLL token mean (1 + 3) / 2


def test_chord_defaults_to_chord_phi_a_constant_mu_of_0_1_with_phi(tmp_path, model, tokenizer):
    trainer = chord(tmp_path, model, tokenizer)
    trainer.state.max_steps = 10
    assert [trainer.chord_mu(step) for step in (0, 5, 10)] == pytest.approx([0.1, 0.1, 0.1])
    assert trainer.args.chord_phi


def test_chord_mu_decays_over_the_whole_run_unless_given_a_length(tmp_path, model, tokenizer):
    trainer = chord(tmp_path, model, tokenizer, chord_mu_peak=0.9, chord_mu_valley=0.05, chord_phi=False)
    trainer.state.max_steps = 10
    # CHORD-mu's peak 0.9 -> valley 0.05 over 10 steps: at step 5, 0.05 + 0.85 * (1 + cos(pi / 2)) / 2
    assert trainer.chord_mu(0) == pytest.approx(0.9)
    assert trainer.chord_mu(5) == pytest.approx(0.05 + 0.85 / 2)
    assert trainer.chord_mu(10) == pytest.approx(0.05)


def test_chord_demo_is_out_of_the_grpo_baseline_and_a_step_trains(tmp_path, model, tokenizer):
    trainer = chord(tmp_path, model, tokenizer, [1.0, 0, 0, 1, 0, 0, 0, 1])
    _, out = generate_batch(trainer)
    # slot 7 is the demo (20 tokens + EOS); the on-policy baseline is the mean of the 7 others: 2/7
    assert out["prefix_mask"][7].sum().item() == 21
    assert out["advantages"][0].unique().tolist() == pytest.approx([5 / 7])
    assert out["advantages"][1].unique().tolist() == pytest.approx([-2 / 7])
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    logged = trainer.state.log_history[0]
    assert logged["chord/mu"] == pytest.approx(0.1)  # CHORD-phi's constant mu
    assert logged["chord/sft_loss"] > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prefix_ratio_floor_end": 0.1}, "prefix_ratio_floor_end=0.1 is not used by ChordConfig"),
        ({"prefix_entropy_selection": "top"}, "prefix_entropy_selection='top' is not used by ChordConfig"),
        ({"prefix_advantage": "paper"}, "prefix_advantage='paper' is not used by ChordConfig"),
        ({"loss_type": "dapo"}, "loss_type='dapo' is not supported by ChordConfig"),
        ({"chord_mu_peak": 1.5}, r"chord_mu_peak must be in \[0, 1\]"),
        ({"chord_mu_decay_steps": -1}, "chord_mu_decay_steps must be >= 0"),
    ],
)
def test_chord_refuses_options_it_has_no_use_for(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        ChordConfig(**base_kwargs(tmp_path, **overrides))
