"""`PrefixRFTConfig` refuses a field of the wrong type or out of range when it is built, naming field and range."""

import re

import pytest

from tests.helpers import train_args


def refused(tmp_path, message, **overrides):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        train_args(tmp_path, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # YAML hands these to the dataclass unconverted; they are refused by name before any use of them
        ({"max_steps": 2.5}, "max_steps must be int, got 2.5 (float)"),
        ({"num_hybrid": [1]}, "num_hybrid must be int, got [1] (list)"),
        ({"prefix_ratio_ceiling": "high"}, "prefix_ratio_ceiling must be float, got 'high' (str)"),
        ({"dual_clip": True}, "dual_clip must be float or None, got True (bool)"),
        ({"prefix_placement": 5}, "prefix_placement must be str, got 5 (int)"),
        ({"prefix_entropy_scope": 1.0}, "prefix_entropy_scope must be str or None, got 1.0 (float)"),
    ],
)
def test_wrong_type_names_field_and_type(tmp_path, overrides, message):
    refused(tmp_path, message, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prefix_ratio_floor_start": 2.0}, "prefix_ratio_floor_start=2.0 is out of range; expected [0, 1]"),
        ({"prefix_ratio_ceiling": -0.5}, "prefix_ratio_ceiling=-0.5 is out of range; expected [0, 1]"),
        (
            {"num_generations": 0, "per_device_train_batch_size": 8},
            "num_generations=0 is out of range; expected >= 2 (advantages compare the rollouts of a group)",
        ),
        ({"prefix_ratio_alpha": 0}, "prefix_ratio_alpha=0 is out of range; expected > 0 (a Beta distribution shape)"),
        ({"prefix_entropy_keep_fraction": 0.0}, "prefix_entropy_keep_fraction=0.0 is out of range; expected (0, 1]"),
        ({"prefix_entropy_keep_fraction": 1.5}, "prefix_entropy_keep_fraction=1.5 is out of range; expected (0, 1]"),
        (
            {"prefix_ratio_beta": -1.0},
            "prefix_ratio_beta=-1.0 is out of range; expected > 0 (a Beta distribution shape)",
        ),
        ({"prefix_ratio_decay_steps": 0}, "prefix_ratio_decay_steps=0 is out of range; expected >= 1"),
        ({"prefix_ratio_warmup_ratio": 1.0}, "prefix_ratio_warmup_ratio=1.0 is out of range; expected [0, 1)"),
        ({"prefix_min_len": -1}, "prefix_min_len=-1 is out of range; expected >= 0"),
        (
            {"dual_clip": 0.5},
            "dual_clip=0.5 is out of range; expected > 1 (dual-clip PPO), or null to disable",
        ),
        ({"max_consecutive_nonfinite_steps": 0}, "max_consecutive_nonfinite_steps=0 is out of range; expected >= 1"),
        ({"max_completion_length": 0}, "max_completion_length=0 is out of range; expected >= 1"),
        ({"temperature": 0.0}, "temperature=0.0 is out of range; expected > 0"),
        ({"max_steps": 0}, "max_steps=0 trains nothing; expected a positive number of steps, or -1 for epochs"),
    ],
)
def test_out_of_range_names_field_and_allowed_range(tmp_path, overrides, message):
    refused(tmp_path, message, **overrides)


def test_ceiling_below_the_floor_is_refused(tmp_path):
    # floor_start 0.95 (default) > ceiling 0.5: the sampling window [floor, ceiling] would be empty
    refused(
        tmp_path,
        "prefix_ratio_ceiling=0.5 is below the floor (0.95); expected prefix_ratio_ceiling >= "
        "prefix_ratio_floor_start and >= prefix_ratio_floor_end",
        prefix_ratio_ceiling=0.5,
    )


def test_defaults_and_edges_of_the_ranges_are_accepted(tmp_path):
    config = train_args(
        tmp_path, prefix_ratio_floor_start=1.0, prefix_ratio_ceiling=1.0, prefix_ratio_floor_end=0.0, prefix_min_len=0
    )
    assert (config.prefix_ratio_floor_start, config.prefix_ratio_ceiling) == (1.0, 1.0)


def test_constant_schedule_compares_the_ceiling_with_the_end_floor_only(tmp_path):
    # 'constant' holds the floor at prefix_ratio_floor_end from step 0; floor_start (0.95) is never reached
    config = train_args(
        tmp_path, prefix_ratio_schedule="constant", prefix_ratio_floor_end=0.01, prefix_ratio_ceiling=0.02
    )
    assert config.prefix_sampler().bounds(0) == pytest.approx((0.01, 0.02))
    refused(
        tmp_path,
        "prefix_ratio_ceiling=0.02 is below the floor (0.05); expected prefix_ratio_ceiling >= prefix_ratio_floor_end",
        prefix_ratio_schedule="constant",
        prefix_ratio_ceiling=0.02,
    )


def test_resume_from_checkpoint_true_is_accepted_as_transformers_users_pass_it(tmp_path):
    assert train_args(tmp_path, resume_from_checkpoint=True).resume_from_checkpoint is True


def choices_in_help(config_cls) -> dict[str, list]:
    """Field -> the choices `prefix-rft train --help` lists for it (HfArgumentParser reads them off the Literal)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_cls)
    return {action.dest: list(action.choices) for action in parser._actions if action.choices is not None}


def test_help_lists_the_choices_of_every_string_option():
    from prefix_rft import PrefixRFTConfig

    choices = choices_in_help(PrefixRFTConfig)
    assert choices["loss_type"] == ["dr_grpo", "grpo", "bnpo", "dapo", "luspo"]
    assert choices["scale_rewards"] == ["none", "group", "batch"]
    assert choices["prefix_ratio_schedule"] == ["cosine", "linear", "constant"]
    assert choices["prefix_advantage"] == ["reference", "paper"]
    assert choices["prefix_placement"] == ["response", "prompt"]
    assert choices["prefix_sampler_correction"] == ["continuation", "row"]
    assert choices["prefix_entropy_selection"] == ["top", "all", "none", "random", "lowest"]
    assert choices["prefix_entropy_scope"] == ["optimizer_step", "global_micro_batch", "local_micro_batch"]
    assert choices["prefix_schedule_unit"] == ["rollout_batch", "optimizer_step"]
    assert choices["prefix_entropy_bonus_scope"] == ["all", "continuation"]


def test_a_baseline_that_sets_a_default_keeps_the_choices():
    from prefix_rft.baselines import LuffyConfig

    choices = choices_in_help(LuffyConfig)
    assert choices["prefix_advantage"] == ["reference", "paper"]
    assert choices["prefix_entropy_selection"] == ["top", "all", "none", "random", "lowest"]


def test_the_class_docstring_names_each_added_field_in_one_section():
    import re
    from dataclasses import fields

    from trl import GRPOConfig

    from prefix_rft import PrefixRFTConfig

    added = {f.name for f in fields(PrefixRFTConfig)} - {f.name for f in fields(GRPOConfig)}
    named = re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", PrefixRFTConfig.__doc__.split("> ", 1)[1])
    assert sorted(named) == sorted(added)


def test_the_old_name_of_dual_clip_is_refused_with_the_new_one(tmp_path):
    refused(
        tmp_path,
        "prefix_dual_clip was renamed: set dual_clip to the same value (it bounds every token with a negative "
        "advantage, not only prefix tokens)",
        prefix_dual_clip=2.0,
    )
    assert train_args(tmp_path, dual_clip=2.0).dual_clip == 2.0


NO_HYBRID = "is not used by PrefixRFTConfig: num_hybrid=0 has no hybrid rows, and the option acts only on hybrid rows"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("prefix_ratio_decay_steps", 7),
        ("prefix_schedule_unit", "optimizer_step"),
        ("prefix_seed", 3),
        ("prefix_advantage", "paper"),
        ("prefix_entropy_scope", "local_micro_batch"),
        ("prefix_entropy_bonus_scope", "continuation"),
        ("prefix_placement", "prompt"),
        ("prefix_sampler_correction", "row"),
        ("prefix_rescue_max_success", 0.0),
    ],
)
def test_without_hybrid_rows_an_option_of_hybrid_rows_is_refused_by_name(tmp_path, name, value):
    with pytest.raises(ValueError, match=f"^{re.escape(f'{name}={value!r} {NO_HYBRID}')}"):
        train_args(tmp_path, num_hybrid=0, **{name: value})


def test_the_options_refused_without_hybrid_rows_include_a_new_prefix_field(tmp_path):
    from dataclasses import dataclass

    from prefix_rft import PrefixRFTConfig

    @dataclass
    class WithNewOption(PrefixRFTConfig):
        prefix_new_option: int = 0

    message = f"prefix_new_option=1 {NO_HYBRID}".replace("PrefixRFTConfig", "WithNewOption")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        WithNewOption(output_dir=str(tmp_path), use_cpu=True, num_hybrid=0, prefix_new_option=1)


def test_without_hybrid_rows_demo_truncation_and_the_derived_prefix_fields_are_accepted(tmp_path):
    # demo lengths are still checked at validation; prefix_seed and the entropy scope are filled in after the check
    config = train_args(tmp_path, num_hybrid=0, seed=5, prefix_truncate_long_demos=True)
    assert (config.prefix_truncate_long_demos, config.prefix_seed, config.prefix_entropy_scope) == (
        True,
        5,
        "optimizer_step",
    )
    # with a hybrid row the same option is used, so accepted
    assert train_args(tmp_path, num_hybrid=1, prefix_ratio_decay_steps=7).prefix_ratio_decay_steps == 7


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, "prefix_advantage must be 'paper' .the 'reference' advantage's baseline is the on-policy rows' mean"),
        ({"prefix_advantage": "paper", "prefix_rescue_max_success": 0.0}, "prefix_rescue_max_success must be None"),
        (
            {"prefix_advantage": "paper", "prefix_success_target": 0.5},
            "prefix_success_rows must be 'hybrid' .the adaptive ratio would read the on-policy rows' success",
        ),
    ],
)
def test_a_group_with_every_row_hybrid_refuses_what_reads_on_policy_rows(tmp_path, overrides, message):
    with pytest.raises(ValueError, match="num_hybrid=8 = num_generations leaves no on-policy row: " + message):
        train_args(tmp_path, num_hybrid=8, **overrides)


def test_a_group_with_every_row_hybrid_is_accepted_with_the_groups_own_advantage(tmp_path):
    config = train_args(
        tmp_path, num_hybrid=8, prefix_advantage="paper", prefix_success_target=0.5, prefix_success_rows="hybrid"
    )
    assert config.num_hybrid == config.num_generations == 8
    with pytest.raises(ValueError, match=r"num_hybrid must be in \[0, 8\] for groups of 8, got 9"):
        train_args(tmp_path, num_hybrid=9, prefix_advantage="paper")
