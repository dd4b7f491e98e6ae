"""PrefixRFTTrainer on a tiny random model: hybrid rollouts, advantages reaching the loss, logged metrics."""

import pytest
import torch

from prefix_rft import PrefixRFTConfig, PrefixRFTTrainer
from tests.helpers import DEMOS, FixedRewards, generate_batch, make_dataset, make_trainer, train_args


def first_batch_of(tmp_path, model, tokenizer, dataset):
    """(trainer, its first generation batch) on `dataset`, every reward 0."""
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([0.0])],
        args=train_args(tmp_path),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    return trainer, generate_batch(trainer)[1]


def test_hybrid_completion_starts_with_demo_prefix(tmp_path, model, tokenizer):
    # step 0: floor = ceiling = 0.95, so l = 0.95 and prefix_len = floor(0.95 * 20) = 19 demo tokens
    trainer = make_trainer(tmp_path, model, tokenizer)
    batch, out = generate_batch(trainer)
    prefix_mask = out["prefix_mask"]
    assert prefix_mask.sum(dim=1).tolist() == [0] * 7 + [19] + [0] * 7 + [19]
    for row in (7, 15):
        demo = batch[row]["demos"][0]
        prefix_ids = out["completion_ids"][row, :19].tolist()
        assert tokenizer.decode(prefix_ids) == demo[:19]


def test_advantages_follow_reference_estimator(tmp_path, model, tokenizer):
    # spec §3.7: on-policy rewards [1,0,0,1,0,0,0] -> baseline 2/7; hybrid r = 1:
    # prefix tokens 5/7 before entropy selection, continuation tokens 1.0, on-policy rows 5/7 and -2/7
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1])],
        args=train_args(tmp_path),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    _, out = generate_batch(trainer)
    adv, prefix_mask = out["advantages"], out["prefix_mask"]
    assert adv.shape == out["completion_ids"].shape
    assert adv[7][prefix_mask[7]].unique().tolist() == pytest.approx([5 / 7])
    assert adv[7][~prefix_mask[7]].unique().tolist() == pytest.approx([1.0])
    assert adv[0].unique().tolist() == pytest.approx([5 / 7])
    assert adv[1].unique().tolist() == pytest.approx([-2 / 7])


def test_paper_advantage_shares_group_mean(tmp_path, model, tokenizer):
    # mean of all 8 = 3/8: hybrid row gets 5/8 on every token
    args = train_args(tmp_path, prefix_advantage="paper")
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1])],
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    _, out = generate_batch(trainer)
    assert out["advantages"][7].unique().tolist() == pytest.approx([5 / 8])


def test_plain_text_prompts_get_demo_tokens_appended(tmp_path, model, tokenizer):
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([0.0])],
        args=train_args(tmp_path),
        train_dataset=make_dataset(chat=False),
        processing_class=tokenizer,
    )
    batch, out = generate_batch(trainer)
    assert tokenizer.decode(out["completion_ids"][7, :19].tolist()) == batch[7]["demos"][0][:19]


def test_prompt_budget_cuts_prefix_not_question(tmp_path, model, tokenizer):
    # chat prompt "<bos><user>12+30=<eos><assistant>" = 1 + 1 + 6 + 1 + 1 = 10 tokens; budget 20 leaves 10 of 19
    args = train_args(tmp_path, max_prompt_length=20)
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([0.0])],
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    _, out = generate_batch(trainer)
    assert out["prefix_mask"][7].sum().item() == 10
    assert trainer._metrics["train"]["prefix/truncated_tokens"][-1] == 2 * 9


def test_rows_without_demos_run_on_policy_and_are_counted(tmp_path, model, tokenizer):
    dataset = make_dataset().map(lambda row: {"demos": []})
    trainer, out = first_batch_of(tmp_path, model, tokenizer, dataset)
    assert not out["prefix_mask"].any()
    assert trainer._metrics["train"]["prefix/no_demo_rows"][-1] == 2


def test_non_finite_reward_names_the_row(tmp_path, model, tokenizer):
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([0.0, float("inf")])],
        args=train_args(tmp_path),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="reward of row 1 .* not finite"):
        generate_batch(trainer)


def test_training_logs_prefix_metrics_and_updates_parameters(tmp_path, model, tokenizer):
    before = [p.detach().clone() for p in model.parameters()]
    args = train_args(tmp_path, max_steps=2)
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1])],
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    trainer.train()
    logs = trainer.state.log_history[0]
    assert logs["prefix/ratio_floor"] == pytest.approx(0.95)
    assert logs["prefix/hybrid_rows"] == 2
    # 2 hybrids x 19 prefix tokens; top 20% kept: ceil(0.2 * 38) = 8 of 38 (drop floor(0.8 * 38) = 30)
    assert logs["prefix/kept_fraction"] == pytest.approx(8 / 38)
    assert logs["prefix/demo_tokens"] == 38  # the demo tokens put in the step's rows, whether trained or not
    assert logs["reward/hybrid"] == 1.0 and logs["reward/on_policy"] == pytest.approx(2 / 7)
    # step 1's floor follows the cosine over 500 steps: 0.05 + 0.5 * (1 + cos(pi / 500)) * 0.9
    assert trainer.state.log_history[1]["prefix/ratio_floor"] == pytest.approx(0.949991, abs=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_config_rejects_group_without_on_policy_row(tmp_path):
    with pytest.raises(ValueError, match="num_hybrid"):
        train_args(tmp_path, num_hybrid=8)


def test_config_rejects_unknown_reward_scaling(tmp_path):
    with pytest.raises(ValueError, match="scale_rewards='rank' is not supported"):
        train_args(tmp_path, scale_rewards="rank")


def test_config_defaults_are_the_papers():
    args = PrefixRFTConfig(output_dir="unused", use_cpu=True)
    assert (args.num_hybrid, args.num_generations, args.loss_type, args.scale_rewards) == (1, 8, "dr_grpo", "none")
    sampler = args.prefix_sampler()
    assert sampler.bounds(0) == pytest.approx((0.95, 0.95))
    assert sampler.bounds(250) == pytest.approx((0.50, 0.95))
    assert sampler.bounds(500) == pytest.approx((0.05, 0.95))
    assert args.prefix_entropy_keep_fraction == 0.2 and args.beta == 0.0


def test_demo_column_accepts_single_string(tmp_path, model, tokenizer):
    dataset = make_dataset().map(lambda row: {"demo": row["demos"][0]}, remove_columns=["demos"])
    _, out = first_batch_of(tmp_path, model, tokenizer, dataset)
    assert out["prefix_mask"][7].sum().item() == 19
    # the hybrid row starts with the first 19 characters (one token each) of one of the 20-character demos
    assert tokenizer.decode(out["completion_ids"][7, :19].tolist()) in {demo[:19] for demo in DEMOS}
