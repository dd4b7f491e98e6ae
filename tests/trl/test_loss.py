"""The loss of PrefixRFTTrainer (trl/loss.py) under each TRL option it implements, as worked out by hand.

The tests fix the policy's per-token log-probs and entropies (the forward is replaced by constants), so every
expected value is arithmetic on the numbers in the test. base_kwargs: max_completion_length 24 (Dr. GRPO's constant),
one micro-batch per generation batch, epsilon 0.2, dual_clip 3.
"""

import math

import pytest
import torch

from tests.helpers import fix_forward, loss_batch, loss_inputs, make_trainer, train_loss


def test_delta_caps_a_negative_advantage_tokens_ratio(tmp_path, model, tokenizer):
    # ratio exp(2) = 7.389, A = -1: two-sided clip delta = 2 -> -min(2 * -1, 1.2 * -1) = 2 (dual clip 3 does not
    # bind; without delta it would cap 7.389 at 3); Dr. GRPO: 2 / (1 row * 24)
    trainer = make_trainer(tmp_path, model, tokenizer, delta=2.0)
    fix_forward(trainer, [[2.0]])
    assert train_loss(trainer, loss_inputs([[-1.0]], old_per_token_logps=[[0.0]])) == pytest.approx(2 / 24)


def test_sequence_level_importance_sampling_gives_a_row_one_ratio(tmp_path, model, tokenizer):
    # log-ratios 0.1 and 0.5 -> sequence ratio exp(0.3) = 1.3499, clipped at 1.2 on both tokens with A = 1:
    # (-1.2 - 1.2) / 24 = -0.1. (Token level: -(exp(0.1) + 1.2) / 24 = -0.09605.)
    trainer = make_trainer(tmp_path, model, tokenizer, importance_sampling_level="sequence")
    fix_forward(trainer, [[0.1, 0.5]])
    loss = train_loss(trainer, loss_inputs([[1.0, 1.0]], old_per_token_logps=[[0.0, 0.0]]))
    assert loss == pytest.approx(-0.1)


@pytest.mark.parametrize(
    ("bias_correction", "kl"),
    [
        # k3 at log pi = 0.5, log pi_ref = 0: exp(-0.5) + 0.5 - 1 = 0.106531; times ratio exp(0.5) = 0.175639
        (True, 0.106531 * math.exp(0.5)),
        (False, 0.106531),
    ],
)
def test_kl_term_follows_use_bias_correction_kl(tmp_path, model_dir, tokenizer, bias_correction, kl):
    # A = 0, so the loss is beta * kl / 24 with beta = 0.1 (a saved model: TRL loads the reference from its path)
    trainer = make_trainer(tmp_path, str(model_dir), tokenizer, beta=0.1, use_bias_correction_kl=bias_correction)
    fix_forward(trainer, [[0.5]])
    inputs = loss_inputs([[0.0]], old_per_token_logps=[[0.0]], ref_per_token_logps=[[0.0]])
    assert train_loss(trainer, inputs) == pytest.approx(0.1 * kl / 24, rel=1e-5)
    assert trainer._metrics["train"]["kl"] == pytest.approx([kl], rel=1e-5)


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", -2.25),  # row means (-1 - 2) / 2 and -3 / 1 -> (-1.5 - 3) / 2
        ("bnpo", -2.0),  # -6 / 3 tokens
        ("dapo", -0.5),  # -6 / (12 tokens in the generation batch / 1 rank / 1 micro-batch)
        ("luspo", -3.0),  # row sums -3 and -3 -> mean -3
    ],
)
def test_loss_type_counts_prefix_tokens_as_trained_tokens(tmp_path, model, tokenizer, loss_type, expected):
    # ratio 1, so each token's loss is -A: -1 (a prefix token, kept: selection 'all'), -2, -3; one padding token
    trainer = make_trainer(tmp_path, model, tokenizer, loss_type=loss_type, prefix_entropy_selection="all")
    fix_forward(trainer, [[0.0, 0.0], [0.0, 0.0]])
    inputs = loss_inputs(
        [[1.0, 2.0], [3.0, 9.0]],
        mask=[[1, 1], [1, 0]],
        prefix_mask=[[True, False], [False, False]],
        num_items_in_batch=12.0,
    )
    assert train_loss(trainer, inputs) == pytest.approx(expected)


def test_adaptive_entropy_coefficient_moves_towards_the_target(tmp_path, model, tokenizer):
    # step 1: no entropy measured yet (TRL starts at +inf > target), so no bonus; the step's entropy 0.3 <= target 0.5
    # raises the coefficient 0.1 -> 0.15. Step 2 applies 0.15: loss = 0 - 0.15 * 0.3 = -0.045 (A = 0); 0.15 -> 0.2.
    trainer = make_trainer(
        tmp_path,
        model,
        tokenizer,
        use_adaptive_entropy=True,
        entropy_coef=0.1,
        entropy_target=0.5,
        entropy_coef_delta=0.05,
    )
    fix_forward(trainer, [[0.0, 0.0]], entropies=[[0.2, 0.4]])
    assert train_loss(trainer, loss_inputs([[0.0, 0.0]])) == pytest.approx(0.0)
    assert train_loss(trainer, loss_inputs([[0.0, 0.0]])) == pytest.approx(-0.045)
    assert trainer._metrics["train"]["entropy_coef"] == pytest.approx([0.15, 0.2])


def test_policy_loss_and_entropy_coef_are_logged(tmp_path, model, tokenizer):
    # ratio 1, A = 1 on two tokens: policy loss -2 / 24; the bonus 0.01 * mean entropy 0.5 is not part of it
    trainer = make_trainer(tmp_path, model, tokenizer, entropy_coef=0.01)
    fix_forward(trainer, [[0.0, 0.0]], entropies=[[0.5, 0.5]])
    assert train_loss(trainer, loss_inputs([[1.0, 1.0]])) == pytest.approx(-2 / 24 - 0.01 * 0.5)
    assert trainer._metrics["train"]["policy_loss"] == pytest.approx([-2 / 24])
    assert trainer._metrics["train"]["entropy_coef"] == [0.01]


def test_demo_of_rows_keeps_the_marked_rows_demo_tokens_and_none_without_the_field():
    # rows 0 and 2 marked; row 0 has demo tokens at 0-1, row 1 at 0, row 2 none -> only row 0's two tokens
    prefix = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]]).bool()
    batch = loss_batch(prefix, sft=torch.tensor([True, False, True]))
    assert batch.demo_of_rows("sft").int().tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert batch.demo_of_rows("absent").int().tolist() == [[0, 0, 0]] * 3  # evaluation batches: no row field
