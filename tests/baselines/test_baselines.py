"""Baselines: hand-worked losses, full-demo rows, ReLIFT's buffer trigger."""

import math

import pytest
import torch

from prefix_rft.baselines import (
    ChordConfig,
    HptConfig,
    LuffyConfig,
    LuffyTrainer,
    ReliftConfig,
    ReliftTrainer,
    RLWithSFTConfig,
    RLWithSFTTrainer,
    SrftConfig,
)
from prefix_rft.baselines.relift import add_to_buffer, all_failed_groups, take_sft_batch
from prefix_rft.baselines.sft import demo_completion_rows
from tests.helpers import base_kwargs, baseline_trainer, budget_rollout, generate_batch, loss_batch


def test_luffy_demo_row_is_the_whole_demo_and_eos(tmp_path, model, tokenizer):
    trainer = baseline_trainer(LuffyTrainer, LuffyConfig, tmp_path, model, tokenizer, [1.0, 0, 0, 1, 0, 0, 0, 1])
    batch, out = generate_batch(trainer)
    # 20 demo tokens + EOS, all marked as demo tokens; nothing generated after them
    assert out["prefix_mask"][7].sum().item() == 21
    assert out["completion_mask"][7].sum().item() == 21
    ids = out["completion_ids"][7, :21].tolist()
    assert tokenizer.decode(ids[:20]) == batch[7]["demos"][0] and ids[20] == tokenizer.eos_token_id
    # group mean over all 8 = 3/8 -> the demo row gets 5/8 on every token, an on-policy failure -3/8
    assert out["advantages"][7].unique().tolist() == pytest.approx([5 / 8])
    assert out["advantages"][1].unique().tolist() == pytest.approx([-3 / 8])


def test_luffy_ends_a_full_demo_prefix_with_eos_outside_the_prompt_budget(tmp_path, model, tokenizer):
    # prompts of 8 tokens, budget 10: the hybrid keeps 2 of its 4 tokens (2 cut); the full demo's 2 tokens fit, and
    # its EOS follows them although 8 + 2 + 1 = 11 is over the budget. Only the full-demo row gets an EOS.
    trainer = baseline_trainer(LuffyTrainer, LuffyConfig, tmp_path, model, tokenizer, [0.0], max_prompt_length=10)
    prefix_ids, cut = trainer._fit_prefixes(budget_rollout(), [[1] * 8] * 3)
    assert (prefix_ids, cut) == ([[], [5, 6], [5, 6, tokenizer.eos_token_id]], 2)


def test_luffy_token_loss_shapes_demo_tokens_and_leaves_on_policy_unclipped(tmp_path, model, tokenizer):
    trainer = baseline_trainer(LuffyTrainer, LuffyConfig, tmp_path, model, tokenizer, [0.0])
    logps = torch.tensor([[math.log(0.5), 0.5]])
    old = torch.tensor([[math.log(0.9), 0.0]])
    loss, _ = trainer._token_loss(logps, old, torch.ones(1, 2), loss_batch(torch.tensor([[True, False]])))
    # demo token: -p/(p+0.1) = -0.5/0.6 (old log-prob ignored); on-policy: -exp(0.5 - 0) = -1.6487, no clip at 1.2
    assert loss.tolist()[0] == pytest.approx([-5 / 6, -math.exp(0.5)])


@pytest.mark.parametrize("divisor, divided_rows", [("rows_x_length", 2), ("length", 1)])
def test_luffy_sums_the_token_losses_over_rows_and_length_or_length_alone(
    tmp_path, model, tokenizer, divisor, divided_rows
):
    trainer = baseline_trainer(LuffyTrainer, LuffyConfig, tmp_path, model, tokenizer, [0.0], rl_loss_divisor=divisor)
    token_loss = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # (1 + 2 + 3) over 2 rows x 24 (Dr. GRPO), or over 24 alone (the authors' loss_remove_token_mean)
    loss = trainer._aggregate(token_loss, token_loss, loss_batch(torch.zeros(2, 2, dtype=torch.bool), mask))
    assert loss.item() == pytest.approx(6 / (divided_rows * 24))


def test_luffy_refuses_a_loss_type_with_the_length_divisor(tmp_path):
    with pytest.raises(ValueError, match="loss_type='grpo' is not used with rl_loss_divisor='length'"):
        LuffyConfig(**base_kwargs(tmp_path, rl_loss_divisor="length", loss_type="grpo"))


def test_rl_with_sft_loss_adds_token_mean_nll_of_demo_rows(tmp_path, model, tokenizer):
    trainer = baseline_trainer(RLWithSFTTrainer, RLWithSFTConfig, tmp_path, model, tokenizer, [0.0])
    token_loss = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    logps = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    prefix_mask = torch.tensor([[False, False], [True, True]])
    # pg over on-policy tokens: (1 + 2) / (2 rows * 24) = 0.0625; NLL token mean over the demo row: (3 + 4) / 2
    loss = trainer._aggregate(token_loss, logps, loss_batch(prefix_mask))
    assert loss.item() == pytest.approx(0.0625 + 3.5)


@pytest.mark.parametrize(
    ("config_cls", "expected"),
    [
        (LuffyConfig, {"entropy_coef": 0.001}),  # ElliottYan/LUFFY exp_scripts/train.sh: entropy_coeff=0.001
        # TheRoadQaQ/ReLIFT examples/math-7b/train.sh: entropy_coeff=0.001, sft lr 1e-6; relift_trainer.yaml:
        # sft_grad_clip 1.0
        (ReliftConfig, {"entropy_coef": 0.001, "relift_sft_learning_rate": 1e-6, "relift_sft_max_grad_norm": 1.0}),
    ],
)
def test_luffy_and_relift_default_to_their_authors_scripts(tmp_path, config_cls, expected):
    config = config_cls(**base_kwargs(tmp_path))
    assert {name: getattr(config, name) for name in expected} == expected


def test_all_failed_groups():
    # groups of 4: [0,0,0,0] fails, [0,1,0,0] does not, [0,0,0,0] fails
    rewards = torch.tensor([0.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert all_failed_groups(rewards, 4) == [0, 2]


def test_unscored_rows_are_no_success():
    # [nan,nan,nan,nan] and [0,nan,0,nan] solve nothing; [nan,1,nan,nan] solves one
    nan = float("nan")
    rewards = torch.tensor([nan, nan, nan, nan, 0, nan, 0, nan, nan, 1, nan, nan])
    assert all_failed_groups(rewards, 4) == [0, 1]


def test_buffer_takes_each_question_once_and_triggers_at_size():
    buffer = []
    add_to_buffer(buffer, [{"key": "a"}, {"key": "b"}, {"key": "a"}])
    assert [b["key"] for b in buffer] == ["a", "b"]
    assert take_sft_batch(buffer, 3) is None  # 2 < 3: no SFT step yet
    add_to_buffer(buffer, [{"key": "b"}, {"key": "c"}, {"key": "d"}])
    assert [b["key"] for b in take_sft_batch(buffer, 3)] == ["a", "b", "c"]
    assert [b["key"] for b in buffer] == ["d"]  # the remainder carries over


def test_relift_runs_an_sft_step_once_two_questions_failed(tmp_path, model, tokenizer):
    # all rewards 0: both questions of the first step fail -> buffer of 2 reaches relift_sft_batch=2 -> one SFT step
    trainer = baseline_trainer(
        ReliftTrainer,
        ReliftConfig,
        tmp_path,
        model,
        tokenizer,
        [0.0],
        relift_sft_batch=2,
        relift_sft_learning_rate=1e-2,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()  # one step; with zero advantages the RL step leaves the weights alone
    assert trainer.sft_steps == 1 and trainer.relift_buffer == []
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sft_rows_pair_each_prompt_with_each_demo():
    rows = [{"prompt": "1+1=", "demos": ["2", "two"]}, {"prompt": "2+2=", "demos": []}]
    assert demo_completion_rows(rows) == [
        {"prompt": "1+1=", "completion": "2"},
        {"prompt": "1+1=", "completion": "two"},
    ]


@pytest.mark.parametrize(
    ("config_cls", "name", "value"),
    [
        (LuffyConfig, "delta", 2.0),
        (LuffyConfig, "dual_clip", 3.0),
        (LuffyConfig, "epsilon", 0.1),
        (LuffyConfig, "epsilon_high", 0.28),
        (RLWithSFTConfig, "loss_type", "grpo"),
    ],
)
def test_baselines_refuse_options_their_objective_ignores(tmp_path, config_cls, name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r} is not used by {config_cls.__name__}"):
        config_cls(**base_kwargs(tmp_path, **{name: value}))


def test_relift_state_round_trips_and_a_checkpoint_without_it_warns(tmp_path, model, tokenizer, caplog):
    trainer = baseline_trainer(ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0])
    item = {"key": "id:q1", "prompt": "1+1=", "demo": "2"}
    trainer.relift_buffer, trainer.sft_steps = [item], 3
    saved, empty = tmp_path / "saved", tmp_path / "empty"
    saved.mkdir(), empty.mkdir()
    trainer._save_rng_state(str(saved))
    trainer.relift_buffer, trainer.sft_steps = [], 0
    trainer._load_rng_state(str(saved))
    assert trainer.relift_buffer == [item] and trainer.sft_steps == 3
    with caplog.at_level("WARNING", logger="prefix_rft.trl.run_dir"):
        trainer._load_rng_state(str(empty))
    assert f"{empty} has no ReLIFT buffer ({empty}/0_" in caplog.text and "it starts empty" in caplog.text
    assert trainer.relift_buffer == [item]  # left as it was


@pytest.mark.parametrize("config_class", [LuffyConfig, RLWithSFTConfig])
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prefix_ratio_schedule": "constant"}, "prefix_ratio_schedule='constant' is not used by "),
        ({"prefix_min_len": 3}, "prefix_min_len=3 is not used by "),
        ({"prefix_placement": "prompt"}, "prefix_placement='prompt' is not used by "),
        ({"prefix_demo_part": "after_think"}, "prefix_demo_part='after_think' is not used by "),
    ],
)
def test_whole_demo_methods_refuse_prefix_options(tmp_path, config_class, overrides, message):
    with pytest.raises(ValueError, match=message + config_class.__name__ + ": its demo slot holds the whole"):
        config_class(**base_kwargs(tmp_path, **overrides))


@pytest.mark.parametrize("config_class", [LuffyConfig, RLWithSFTConfig, ChordConfig, HptConfig, SrftConfig])
@pytest.mark.parametrize("num_hybrid", [8, 9])
def test_whole_demo_methods_refuse_a_group_with_no_rollout(tmp_path, config_class, num_hybrid):
    # a guided group (every row hybrid) would make every slot a whole demo: nothing generated, nothing to learn from;
    # refused first, not with advice (prefix_advantage) that only leads to this refusal
    message = f"num_hybrid={num_hybrid} leaves {config_class.__name__} no rollout: .* at most 7"
    with pytest.raises(ValueError, match=message):
        config_class(**base_kwargs(tmp_path, num_hybrid=num_hybrid))


@pytest.mark.parametrize("config_class", [LuffyConfig, RLWithSFTConfig])
def test_whole_demo_methods_keep_entropy_selection_among_demo_tokens(tmp_path, config_class):
    args = config_class(**base_kwargs(tmp_path, prefix_entropy_selection="top", prefix_entropy_keep_fraction=0.5))
    assert (args.prefix_entropy_selection, args.prefix_entropy_keep_fraction) == ("top", 0.5)
