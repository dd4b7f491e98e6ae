"""The per-method facts `compare` and `protocol` read from the method registry, checked against what each method is
(docs/methods.md): which methods use demonstrations, their stages and how the steps split, which draw a prefix."""

import pytest

from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy import rl_config
from prefix_rft.recipes.toy_methods import (
    METHODS,
    RL_METHODS,
    SFT_METHODS,
    fixed_sft_steps,
    method_spec,
    rl_stage_method,
    stages_of,
    uses_demos,
)
from prefix_rft.recipes.toy_task import train_rows


def test_only_the_base_and_rft_train_without_demonstrations():
    # rft is Dr. GRPO with num_hybrid=0: no slot ever holds a demo; every other method trains on or shows them (the
    # SFT stages on whole demos, TRAPO in the later micro-groups of a question its first rollouts fail, the prompt hint
    # as a hint)
    assert [m for m in METHODS if not uses_demos(m)] == ["base", "rft"]
    assert all(uses_demos(m) for m in ("sft", "sft_best_rft", "trapo", "prefix_rft_prompt_hint", "prefix_rft_demos50"))


def test_stages_and_the_method_each_rl_stage_trains_as():
    assert stages_of("base") == ()
    assert stages_of("sft") == ("sft",)
    assert stages_of("sft_rft") == ("sft", "rl") and stages_of("sft_best_rft") == ("sft_best", "rl")
    assert stages_of("prefix_rft_demos50") == ("rl",)  # a data variant of prefix_rft
    assert SFT_METHODS == ("sft", "sft_rft", "sft_best_rft")
    assert "prefix_rft_demos50" in RL_METHODS and not set(SFT_METHODS) & set(RL_METHODS)
    # SFT then RFT: stage 2 is RFT's trainer, config class and num_hybrid=0
    assert rl_stage_method("sft_rft") == "rft" and rl_stage_method("sft_best_rft") == "rft"
    assert rl_stage_method("luffy") == "luffy" and rl_stage_method("prefix_rft_demos50") == "prefix_rft_demos50"
    with pytest.raises(ValueError, match="'sft' has no RL stage"):
        rl_stage_method("sft")


def test_a_fixed_sft_stage_takes_the_whole_budget_alone_and_half_before_rl():
    # 9 steps: `sft` trains all 9; `sft_rft` 9 // 2 = 4 of SFT, leaving 5 to RFT; early-stopped SFT, RL-only: none
    assert [fixed_sft_steps(m, 9) for m in ("sft", "sft_rft", "sft_best_rft", "prefix_rft", "base")] == [9, 4, 0, 0, 0]


def test_whole_demo_methods_draw_no_prefix_and_get_no_prefix_schedule():
    # the whole demo fills the hybrid slot of RL with SFT loss, LUFFY, CHORD, HPT, SRFT and TRAPO (FullDemoRows);
    # ReLIFT and RFT have no hybrid slot (num_hybrid=0), nor has sft_rft's RL stage
    assert sorted(m for m in RL_METHODS if not method_spec(m).draws_prefix()) == [
        "chord",
        "hpt",
        "luffy",
        "relift",
        "rft",
        "rl_sft",
        "srft",
        "trapo",
    ]
    assert not method_spec("sft").draws_prefix() and not method_spec("sft_rft").draws_prefix()
    settings = RunSettings(steps=7)
    assert rl_config("prefix_rft", settings, seed=0, output_dir="unused").prefix_ratio_decay_steps == 7  # the run
    for method in ("rl_sft", "rft", "sft_rft"):
        assert rl_config(method, settings, seed=0, output_dir="unused").prefix_ratio_decay_steps == 500  # the default


def test_a_run_set_to_no_hybrid_rows_gets_no_prefix_schedule():
    settings = RunSettings(steps=7, rl_set=["num_hybrid=0"])
    config = rl_config("prefix_rft", settings, seed=0, output_dir="unused")
    assert (config.num_hybrid, config.prefix_ratio_decay_steps) == (0, 500)


FIXED = "changes what the method fixes ({}): it would train another method under this name"


@pytest.mark.parametrize(
    ("method", "same", "other", "message"),
    [
        ("rft", "num_hybrid=0", "num_hybrid=1", "method 'rft': --rl-set num_hybrid=1 " + FIXED.format("num_hybrid=0")),
        (
            "sft_rft",
            "num_hybrid=0",
            "num_hybrid=2",
            "method 'sft_rft': --rl-set num_hybrid=2 " + FIXED.format("num_hybrid=0"),
        ),
        (
            "prefix_rft_select_all",
            "prefix_entropy_selection=all",
            "prefix_entropy_selection=top",
            "method 'prefix_rft_select_all': --rl-set prefix_entropy_selection='top' "
            + FIXED.format("prefix_entropy_selection='all'"),
        ),
    ],
)
def test_rl_set_may_repeat_but_not_change_a_setting_the_method_fixes(method, same, other, message):
    name, value = same.split("=")
    config = rl_config(method, RunSettings(rl_set=[same]), seed=0, output_dir="unused")
    assert str(getattr(config, name)) == value
    with pytest.raises(ValueError) as refused:
        rl_config(method, RunSettings(rl_set=[other]), seed=0, output_dir="unused")
    assert str(refused.value) == message


def test_a_config_error_names_the_method_it_is_for():
    with pytest.raises(ValueError) as refused:
        rl_config("rft", RunSettings(rl_set=["prefix_advantage=paper"]), seed=0, output_dir="unused")
    assert str(refused.value).startswith(
        "method 'rft': prefix_advantage='paper' is not used by PrefixRFTConfig: num_hybrid=0 has no hybrid rows"
    )


def test_relift_alone_takes_the_runs_sft_batch_and_learning_rate():
    settings = RunSettings(relift_sft_batch=3, sft_learning_rate=2e-5)
    config = rl_config("relift", settings, seed=0, output_dir="unused")
    assert (config.relift_sft_batch, config.relift_sft_learning_rate) == (3, 2e-5)
    assert not hasattr(rl_config("prefix_rft", settings, seed=0, output_dir="unused"), "relift_sft_batch")


def test_the_demos50_variant_keeps_the_demos_of_every_other_question():
    settings = RunSettings(steps=3, prompts_per_step=2)
    full, half = train_rows("prefix_rft", settings, seed=0), train_rows("prefix_rft_demos50", settings, seed=0)
    assert [r["prompt"] for r in half] == [r["prompt"] for r in full]
    assert [bool(r["demos"]) for r in half] == [True, False, True, False, True, False]
    assert all(r["demos"] for r in full)
