"""TRAPO: escalation from a question's previous group into the next plan, the token loss by hand, the state in
checkpoints, refusals, and training steps end to end."""

import math
from types import SimpleNamespace

import pytest
import torch

from prefix_rft.baselines import TrapoConfig, TrapoTrainer
from tests.helpers import base_kwargs, baseline_trainer, generate_batch


def trapo(tmp_path, model, tokenizer, rewards=(0.0,), **overrides):
    return baseline_trainer(TrapoTrainer, TrapoConfig, tmp_path, model, tokenizer, list(rewards), **overrides)


def test_trapo_escalates_a_failed_question_on_its_next_visit(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)  # every reward 0
    _, first = generate_batch(trainer)
    assert first["prefix_mask"].sum().item() == 0  # unseen questions: 8 unguided rollouts each
    assert not first["trapo_sft_rows"].any()
    assert set(trainer.escalation.levels.values()) == {(1, 2, 3)}  # nothing solved: every stage escalates
    _, second = generate_batch(trainer)  # the same two questions again
    # 20-token demos: 25% -> 5 tokens at positions 4-5, 50% -> 10 at 6, the whole demo and its EOS (21) at 7
    assert second["prefix_mask"].sum(dim=1).tolist() == [0, 0, 0, 0, 5, 5, 10, 21] * 2
    # the first row of the 25% pair trains no prefix (it is imitated once, through the second)
    assert second["trapo_sft_rows"].tolist() == [False] * 5 + [True] * 3 + [False] * 5 + [True] * 3


def test_trapo_leaves_a_solved_question_unguided(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer, [1.0])
    generate_batch(trainer)
    _, second = generate_batch(trainer)
    assert second["prefix_mask"].sum().item() == 0


def test_trapo_token_loss_by_hand(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)
    trainer._trapo_rows = torch.tensor([False, True, False])
    logps = torch.tensor([[0.5], [math.log(0.05)], [math.log(0.05)]])
    prefix_mask = torch.tensor([[False], [True], [True]])
    loss, _ = trainer._token_loss(logps, torch.zeros(3, 1), torch.ones(3, 1), prefix_mask)
    # generated token: -A rho = -exp(0.5), no clip; TrSFT prefix token: -0.05 / max(0.05, 0.1) = -0.5; the prefix
    # of a row that trains none: 0
    assert loss.flatten().tolist() == pytest.approx([-math.exp(0.5), -0.5, 0.0])


def test_trapo_levels_round_trip_through_checkpoints(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)
    trainer.escalation.levels = {"id:q": (1, 0, 3)}
    saved = tmp_path / "saved"
    saved.mkdir()
    trainer._save_rng_state(str(saved))
    trainer.escalation.levels = {}
    trainer._load_rng_state(str(saved))
    assert trainer.escalation.levels == {"id:q": (1, 0, 3)}


def test_a_rank_the_checkpoint_has_no_file_for_restores_rank_0s_levels(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)
    trainer.escalation.levels = {"id:q": (1, 0, 3)}
    saved = tmp_path / "saved"
    saved.mkdir()
    trainer._save_rng_state(str(saved))  # one process saved: only rank 0's file
    trainer.escalation.levels = {}
    trainer.accelerator = SimpleNamespace(process_index=1)  # rank 1 of a run resumed on two processes
    trainer._load_rng_state(str(saved))
    assert trainer.escalation.levels == {"id:q": (1, 0, 3)}


def test_trapo_trains_and_guides_questions_on_their_second_pass(tmp_path, model, tokenizer):
    # 4 questions, 2 per step: step 3 revisits the first two, which all failed
    trainer = trapo(tmp_path, model, tokenizer, max_steps=3)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    hybrid_rows = [h["prefix/hybrid_rows"] for h in trainer.state.log_history if "loss" in h]
    assert hybrid_rows == [0.0, 0.0, 8.0]  # 4 guided rows per question on its second visit


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"num_generations": 4, "per_device_train_batch_size": 8},
            "num_generations=4 is not supported by TrapoConfig",
        ),
        ({"num_hybrid": 2}, "num_hybrid=2 is not used by TrapoConfig"),
        ({"epsilon": 0.1}, "epsilon=0.1 is not used by TrapoConfig"),
        ({"trapo_trust_region_alpha": 0.0}, r"trapo_trust_region_alpha must be in \(0, 1\]"),
    ],
)
def test_trapo_refuses_options_it_has_no_use_for(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        TrapoConfig(**base_kwargs(tmp_path, **overrides))
