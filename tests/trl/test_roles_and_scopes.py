"""A row's planned role decides its advantage; the prefix-ratio schedule unit; the entropy-selection scopes."""

import pytest
import torch

from prefix_rft import PrefixRFTTrainer
from tests.helpers import FixedRewards, generate_batch, make_dataset, train_args

PATTERN = [1.0, 0, 0, 1, 0, 0, 0, 1]


def trainer_for(tmp_path, model, tokenizer, trainer_cls=PrefixRFTTrainer, **overrides):
    return trainer_cls(
        model=model,
        reward_funcs=[FixedRewards(PATTERN)],
        args=train_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def test_truncated_hybrid_stays_out_of_the_on_policy_baseline(tmp_path, model, tokenizer):
    # Budget 20: the hybrid reveals floor(0.95 * 20) = 19 demo tokens and may sample 1 more; here it is not EOS, so
    # the row is truncated and TRL masks it. It is still the hybrid: on-policy row 0 gets 1 - 2/7 = 5/7, not the
    # 1 - 3/8 of a group with 8 on-policy rows.
    trainer = trainer_for(tmp_path, model, tokenizer, max_completion_length=20, mask_truncated_completions=True)
    _, out = generate_batch(trainer)
    assert out["completion_mask"][7].sum().item() == 0  # precondition: the hybrid was truncated and masked
    assert out["prefix_mask"][7].sum().item() == 19
    assert out["advantages"][0].unique().tolist() == pytest.approx([5 / 7])
    assert out["advantages"][7, 19:].unique().tolist() == pytest.approx([1.0])  # continuation: raw r (reference)


def test_hybrid_whose_prefix_rounds_to_zero_stays_hybrid(tmp_path, model, tokenizer):
    # l in [0.01, 0.02] of a 20-token demo: floor(0.2..0.4) = 0 prefix tokens. The slot is still the hybrid.
    trainer = trainer_for(
        tmp_path,
        model,
        tokenizer,
        prefix_ratio_schedule="constant",
        prefix_ratio_floor_start=0.01,
        prefix_ratio_floor_end=0.01,
        prefix_ratio_ceiling=0.02,
    )
    _, out = generate_batch(trainer)
    assert out["prefix_mask"].sum().item() == 0
    assert out["advantages"][0].unique().tolist() == pytest.approx([5 / 7])
    assert out["advantages"][1].unique().tolist() == pytest.approx([-2 / 7])
    assert out["advantages"][7].unique().tolist() == pytest.approx([1.0])
    assert trainer._rollout is None  # the per-batch record is dropped once the batch is scored


@pytest.mark.parametrize(
    "unit, schedule_steps, floors",
    [
        # generations at optimizer steps 0 and 2 (one generation batch serves 2 steps): rollout batches 0 and 1.
        # floor_t = 0.05 + 0.9 * (1 + cos(pi t / 500)) / 2: t=1 -> 0.94999112, t=2 -> 0.94996447
        ("rollout_batch", [0.0, 1.0], [0.95, 0.94999112]),
        ("optimizer_step", [0.0, 2.0], [0.95, 0.94996447]),
    ],
)
def test_schedule_unit(tmp_path, model, tokenizer, unit, schedule_steps, floors):
    trainer = trainer_for(
        tmp_path,
        model,
        tokenizer,
        max_steps=4,
        per_device_train_batch_size=8,
        steps_per_generation=2,
        prefix_schedule_unit=unit,
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "prefix/schedule_step" in h]
    assert [h["prefix/schedule_step"] for h in logged] == schedule_steps
    assert [h["prefix/ratio_floor"] for h in logged] == pytest.approx(floors, abs=1e-7)


class ScopeRecorder(PrefixRFTTrainer):
    """Records, per micro-batch, the entropies of the prefix tokens in the loss and which of them kept advantage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _prefix_keep_mask(self, entropies, prefix_mask, inputs):
        keep = super()._prefix_keep_mask(entropies, prefix_mask, inputs)
        self.records.append((entropies[prefix_mask].float(), keep[prefix_mask], prefix_mask.any(dim=1).sum().item()))
        return keep


def kept_by_rule(values: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Oracle: drop the floor((1 - keep) N) lowest, the earlier position first among ties."""
    n_drop = int((1 - keep_fraction) * values.numel() + 1e-9)
    order = sorted(range(values.numel()), key=lambda i: (values[i].item(), i))
    kept = torch.ones(values.numel(), dtype=torch.bool)
    kept[order[:n_drop]] = False
    return kept


@pytest.mark.parametrize("scope, kept_total", [("optimizer_step", 19), ("global_micro_batch", 20)])
def test_entropy_scopes_differ_over_accumulated_micro_batches(tmp_path, model, tokenizer, scope, kept_total):
    # 2 micro-batches of 8 per optimizer step, one hybrid each (19 prefix tokens), keep 0.5:
    # optimizer_step: 38 tokens, drop floor(0.5 * 38) = 19, keep 19; per micro-batch: 2 x (19 - floor(9.5)) = 20.
    trainer = trainer_for(
        tmp_path,
        model,
        tokenizer,
        trainer_cls=ScopeRecorder,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        prefix_entropy_keep_fraction=0.5,
        prefix_entropy_scope=scope,
        seed=2,  # TRL shuffles the generation batch before splitting it; with this seed each half gets one hybrid
    )
    trainer.train()
    (e1, k1, rows1), (e2, k2, rows2) = trainer.records
    assert (rows1, rows2, e1.numel(), e2.numel()) == (1, 1, 19, 19)  # precondition: one hybrid per micro-batch
    assert int(k1.sum() + k2.sum()) == kept_total
    if scope == "optimizer_step":
        assert torch.equal(torch.cat([k1, k2]), kept_by_rule(torch.cat([e1, e2]), 0.5))
    else:
        assert torch.equal(k1, kept_by_rule(e1, 0.5)) and torch.equal(k2, kept_by_rule(e2, 0.5))


def test_old_scope_names_are_refused_with_their_new_names(tmp_path):
    with pytest.raises(ValueError, match="'batch' was renamed: use 'global_micro_batch'"):
        train_args(tmp_path, prefix_entropy_scope="batch")
    with pytest.raises(ValueError, match="'micro_batch' was renamed: use 'local_micro_batch'"):
        train_args(tmp_path, prefix_entropy_scope="micro_batch")


def test_explicit_step_scope_needs_whole_optimizer_steps_per_generation(tmp_path):
    with pytest.raises(ValueError, match=r"steps_per_generation \(3\) must be a multiple of gradient_accumulation"):
        train_args(
            tmp_path,
            per_device_train_batch_size=8,
            steps_per_generation=3,
            gradient_accumulation_steps=2,
            prefix_entropy_scope="optimizer_step",
        )


@pytest.mark.parametrize(
    "steps_per_generation, accumulation, scope, fallback",
    [(4, 2, "optimizer_step", False), (2, 2, "optimizer_step", False), (3, 2, "global_micro_batch", True)],
)
def test_default_scope_is_the_papers_where_the_layout_allows_it(
    tmp_path, steps_per_generation, accumulation, scope, fallback
):
    args = train_args(
        tmp_path,
        per_device_train_batch_size=8,
        steps_per_generation=steps_per_generation,
        gradient_accumulation_steps=accumulation,
    )
    assert (args.prefix_entropy_scope, args.entropy_scope_fallback) == (scope, fallback)


def test_trl_layout_with_steps_across_generations_trains_and_says_so(tmp_path, model, tokenizer, caplog):
    # TRL's test_prepare_input_called_with_correct_data: 4 micro-batches per generation, 3 per optimizer step, so
    # optimizer step 2 spans generation batches 1 and 2. Stock TRL trains it; so must the default scope.
    trainer = trainer_for(
        tmp_path,
        model,
        tokenizer,
        per_device_train_batch_size=8,
        steps_per_generation=4,
        gradient_accumulation_steps=3,
        max_steps=2,
        logging_steps=1,
    )
    assert trainer.args.prefix_entropy_scope == "global_micro_batch"
    with caplog.at_level("WARNING", logger="prefix_rft.trl.trainer"):
        trainer.train()
    warnings = [r.getMessage() for r in caplog.records if "entropy_scope_fallback" in r.getMessage()]
    assert len(warnings) == 1 and "'global_micro_batch'" in warnings[0]
    logged = [
        h["prefix/entropy_scope_fallback"] for h in trainer.state.log_history if "prefix/entropy_scope_fallback" in h
    ]
    # One epoch is 4 micro-batches: step 1 = micro-batches 0-2, step 2 = micro-batch 3 (the epoch's remainder), so
    # one generation batch, logged at step 1.
    assert logged == [1.0]


def test_lora_trains_only_adapter_weights_with_hybrid_rows(tmp_path, model, tokenizer):
    from peft import LoraConfig

    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards(PATTERN)],
        args=train_args(tmp_path),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    # LoRA's B starts at 0, so the first step moves B (A's gradient is B^T times something, i.e. 0).
    assert changed and all(".lora_B." in name for name in changed)
    assert [h["prefix/hybrid_rows"] for h in trainer.state.log_history if "prefix/hybrid_rows" in h] == [2.0]


def test_bf16_autocast_step_keeps_hybrid_rows(tmp_path, model, tokenizer):
    trainer = trainer_for(tmp_path, model, tokenizer, bf16=True)
    trainer.train()
    (logged,) = [h for h in trainer.state.log_history if "prefix/hybrid_rows" in h]
    assert logged["prefix/hybrid_rows"] == 2.0 and logged["prefix/token_fraction"] > 0
    assert torch.isfinite(torch.tensor(logged["loss"]))
