import numpy as np
import pytest

from prefix_rft.core.schedule import (
    Constant,
    CosineDecay,
    Delay,
    LinearDecay,
    PrefixRatioSampler,
    make_controller,
    row_rng,
    warmup_cosine_weight,
)

PAPER_FLOOR = CosineDecay(init=0.95, target=0.05, decay_steps=500)


def test_cosine_floor_starts_at_init():
    # d = 0.5 * (1 + cos 0) = 1 -> 0.05 + 1 * 0.9 = 0.95
    assert PAPER_FLOOR.value(0) == pytest.approx(0.95)


def test_cosine_floor_is_midway_at_half_schedule():
    # d = 0.5 * (1 + cos(pi/2)) = 0.5 -> 0.05 + 0.5 * 0.9 = 0.50
    assert PAPER_FLOOR.value(250) == pytest.approx(0.50)


def test_cosine_floor_at_quarter_schedule():
    # d = 0.5 * (1 + cos(pi/4)) = 0.5 * (1 + 0.70711) = 0.853553 -> 0.05 + 0.853553 * 0.9 = 0.818198
    assert PAPER_FLOOR.value(125) == pytest.approx(0.818198, abs=1e-6)


def test_cosine_floor_holds_target_after_schedule():
    assert PAPER_FLOOR.value(500) == pytest.approx(0.05)
    assert PAPER_FLOOR.value(10_000) == pytest.approx(0.05)


def test_cosine_warmup_rises_linearly_to_init():
    # warmup_steps = floor(0.1 * 100) = 10; step 5 -> 5/10 * 0.8 = 0.4; step 10 starts the cosine at init
    ctrl = CosineDecay(init=0.8, target=0.0, decay_steps=100, warmup_ratio=0.1)
    assert ctrl.value(5) == pytest.approx(0.4)
    assert ctrl.value(10) == pytest.approx(0.8)


def test_cosine_rejects_equal_init_and_target():
    with pytest.raises(ValueError, match="init != target"):
        CosineDecay(init=0.5, target=0.5, decay_steps=10)


def test_linear_decay_midpoint_and_end():
    # 1.0 -> 0.0 over 100 steps: step 25 -> 0.75; step 100 and later -> 0.0
    ctrl = LinearDecay(init=1.0, target=0.0, decay_steps=100)
    assert ctrl.value(25) == pytest.approx(0.75)
    assert ctrl.value(100) == 0.0
    assert ctrl.value(150) == 0.0


def test_delay_holds_value_then_runs_inner_from_zero():
    ctrl = Delay(PAPER_FLOOR, delay_steps=10, delay_value=1.0)
    assert ctrl.value(9) == 1.0
    assert ctrl.value(10) == pytest.approx(0.95)  # inner step 0
    assert ctrl.value(260) == pytest.approx(0.50)  # inner step 250


def test_make_controller_constant_uses_init():
    assert make_controller("constant", 0.95, 0.0, 1).value(123) == 0.95
    with pytest.raises(ValueError, match="unknown schedule"):
        make_controller("exponential", 1.0, 0.0, 1)


def test_sampler_at_step_zero_always_gives_ceiling():
    # floor(0) = 0.95 = ceiling, so the window has zero width
    sampler = PrefixRatioSampler(PAPER_FLOOR, Constant(0.95))
    rng = np.random.default_rng(0)
    assert all(sampler.sample(0, rng) == pytest.approx(0.95) for _ in range(20))


def test_sampler_after_schedule_is_uniform_on_window():
    # from step 500 the window is [0.05, 0.95]: uniform mean 0.5, sd 0.9/sqrt(12) = 0.2598
    sampler = PrefixRatioSampler(PAPER_FLOOR, Constant(0.95))
    rng = np.random.default_rng(1)
    draws = np.array([sampler.sample(600, rng) for _ in range(20_000)])
    assert draws.min() >= 0.05 and draws.max() <= 0.95
    assert draws.mean() == pytest.approx(0.5, abs=0.01)
    assert draws.std() == pytest.approx(0.2598, abs=0.01)


def test_sampler_beta_shape_skews_towards_ceiling():
    # Beta(4, 1) has mean 4/5 -> 0.05 + 0.8 * 0.9 = 0.77
    sampler = PrefixRatioSampler(Constant(0.05), Constant(0.95), alpha=4.0, beta=1.0)
    rng = np.random.default_rng(2)
    draws = np.array([sampler.sample(0, rng) for _ in range(20_000)])
    assert draws.mean() == pytest.approx(0.77, abs=0.01)


def test_sampler_swaps_bounds_when_floor_exceeds_ceiling():
    assert PrefixRatioSampler(Constant(0.9), Constant(0.3)).bounds(0) == (0.3, 0.9)


def test_row_rng_is_a_pure_function_of_its_key():
    a = row_rng(7, 3, 5, 7).uniform()
    b = row_rng(7, 3, 5, 7).uniform()
    c = row_rng(7, 4, 5, 7).uniform()
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),  # warm-up starts at 0
        (2, 0.45),  # 2 / 4 * 0.9
        (4, 0.9),  # peak once the warm-up is over
        (9, 0.5),  # half way through the decay: 0.1 + 0.8 * (1 + cos(pi / 2)) / 2
        (14, 0.1),  # decay over: the valley
        (100, 0.1),
    ],
)
def test_chord_mu_warms_up_then_cosine_decays_to_the_valley(step, expected):
    assert warmup_cosine_weight(step, 4, 10, 0.9, 0.1) == pytest.approx(expected)


def test_chord_mu_without_warmup_or_decay_is_the_valley_from_the_start():
    assert warmup_cosine_weight(0, 0, 0, 0.9, 0.1) == 0.1
