"""Every GRPOConfig field is supported or refused by name; trl/fields.py holds the classification."""

import dataclasses
import re

import pytest
from transformers import TrainingArguments
from trl import GRPOConfig

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.fields import (
    REFUSED_GRPO_FIELDS,
    REFUSED_LOSS_TYPES,
    SUPPORTED_GRPO_FIELDS,
    SUPPORTED_GRPO_OWN_FIELDS,
)
from tests.helpers import FixedRewards, make_dataset, train_args

GRPO_FIELDS = {f.name for f in dataclasses.fields(GRPOConfig)}
# GRPOConfig's own fields: fixed by the pinned TRL minor (TrainingArguments' vary with transformers).
GRPO_OWN_FIELDS = GRPO_FIELDS - {f.name for f in dataclasses.fields(TrainingArguments)}

# A value other than GRPOConfig's default for each refused field.
NON_DEFAULT = {
    "off_policy_mask_threshold": 0.5,
    "multi_objective_aggregation": "normalize_then_sum",
    "top_entropy_quantile": 0.2,
    "max_tool_calling_iterations": 3,
    "vllm_structured_outputs_regex": r"\d+",
    "sapo_temperature_neg": 2.0,
    "sapo_temperature_pos": 2.0,
    "vespo_k_pos": 5.0,
    "vespo_lambda_pos": 5.0,
    "vespo_k_neg": 5.0,
    "vespo_lambda_neg": 5.0,
    "remove_unused_columns": True,
    "auto_find_batch_size": True,
    "label_smoothing_factor": 0.1,
    "train_sampling_strategy": "group_by_length",
    "length_column_name": "n_tokens",
}


def test_every_grpo_config_field_is_supported_or_refused():
    unclassified = GRPO_FIELDS - SUPPORTED_GRPO_FIELDS - REFUSED_GRPO_FIELDS.keys()
    assert not unclassified, f"classify these new TRL fields in src/prefix_rft/trl/fields.py: {sorted(unclassified)}"
    assert not SUPPORTED_GRPO_FIELDS & REFUSED_GRPO_FIELDS.keys(), "a field is both supported and refused"


def test_classification_names_only_fields_trl_has():
    own = SUPPORTED_GRPO_OWN_FIELDS | (REFUSED_GRPO_FIELDS.keys() & GRPO_OWN_FIELDS)
    assert own == GRPO_OWN_FIELDS, f"fields TRL no longer has: {sorted(own - GRPO_OWN_FIELDS)}"
    assert REFUSED_GRPO_FIELDS.keys() <= GRPO_FIELDS


def test_every_refused_field_has_a_test_value():
    assert NON_DEFAULT.keys() == REFUSED_GRPO_FIELDS.keys()


@pytest.mark.parametrize("name", sorted(REFUSED_GRPO_FIELDS))
def test_refused_field_is_refused_by_name_with_its_reason(tmp_path, name):
    value = NON_DEFAULT[name]
    message = f"{name}={value!r} is not supported by PrefixRFTTrainer: {REFUSED_GRPO_FIELDS[name]}"
    with pytest.raises(ValueError, match=re.escape(message)):
        train_args(tmp_path, **{name: value})


@pytest.mark.parametrize("loss_type", sorted(REFUSED_LOSS_TYPES))
def test_loss_type_without_prefix_meaning_is_refused_with_its_reason(tmp_path, loss_type):
    message = f"loss_type={loss_type!r} is not supported by PrefixRFTTrainer: {REFUSED_LOSS_TYPES[loss_type]}"
    with pytest.raises(ValueError, match=re.escape(message)):
        train_args(tmp_path, loss_type=loss_type)


@pytest.mark.parametrize(
    "settings",
    [
        {"loss_type": "grpo"},
        {"loss_type": "dapo"},
        {"loss_type": "bnpo"},
        {"loss_type": "luspo", "importance_sampling_level": "sequence"},
        {"scale_rewards": "group"},
        {"scale_rewards": "batch"},
        {"use_adaptive_entropy": True},
    ],
)
def test_supported_loss_settings_are_accepted(tmp_path, settings):
    args = train_args(tmp_path, **settings)
    assert all(getattr(args, name) == value for name, value in settings.items())


@pytest.mark.parametrize("value, meaning", [(True, "group"), (False, "none")])
def test_boolean_reward_scaling_means_what_it_means_in_trl(tmp_path, value, meaning):
    # TRL's GRPOConfig maps True to its per-group std scaling and False to none.
    assert train_args(tmp_path, scale_rewards=value).scale_rewards == meaning


@pytest.mark.parametrize("argument", ["tools", "rollout_func", "environment_factory"])
def test_trainer_arguments_that_bypass_prefix_rollouts_are_refused(tmp_path, model, tokenizer, argument):
    value = [len] if argument == "tools" else len
    with pytest.raises(ValueError, match=f"PrefixRFTTrainer does not support `{argument}`"):
        PrefixRFTTrainer(
            model=model,
            reward_funcs=[FixedRewards([0.0])],
            args=train_args(tmp_path),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            **{argument: value},
        )
