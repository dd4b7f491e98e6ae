"""The compact line a recipe prints per logging step."""

from prefix_rft.recipes.console import compact_line


def test_compact_line_shows_reward_hybrid_reward_prefix_ratio_and_accuracy():
    logs = {"loss": 0.1, "reward": 0.4375, "reward/hybrid": 1.0, "prefix/ratio_mean": 0.95, "kl": 0.0}
    line = compact_line(3, 100, logs, {"test": 0.25, "ood": 0.125})
    assert line == "step 3/100  reward 0.438  hybrid reward 1.000  prefix ratio 0.950  acc test 0.250, ood 0.125"


def test_compact_line_leaves_out_what_the_step_did_not_measure():
    # no hybrid row this step (NaN), no accuracy point, an SFT log without rewards
    assert compact_line(2, 4, {"reward": 0.5, "reward/hybrid": float("nan")}, None) == "step 2/4  reward 0.500"
    assert compact_line(1, 4, {"loss": 2.0}, {"test": 0.5}) == "step 1/4  acc test 0.500"
