"""Every recipe in configs/ parses into the script arguments and a PrefixRFTConfig with the values it states."""

from pathlib import Path

import pytest
from trl import TrlParser

from prefix_rft.recipes.train import TrainScriptArguments
from prefix_rft.trl.config import PrefixRFTConfig

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def parse(path: Path):
    # GPU recipes ask for bf16, which transformers refuses on a machine without a GPU unless told to use the CPU.
    parser = TrlParser((TrainScriptArguments, PrefixRFTConfig))
    return parser.parse_args_and_config(["--config", str(path), "--use_cpu", "true"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_parses(path):
    script, config = parse(path)
    assert config.num_generations == 8 and config.num_hybrid == 1
    assert config.loss_type == "dr_grpo" and config.scale_rewards == "none"


def test_paper_recipe_states_the_paper_settings():
    script, config = parse(next(p for p in CONFIGS if p.name == "paper_qwen25_math_7b.yaml"))
    assert script.dataset_format == "luffy" and script.reward == "math"
    # 8 GPUs x micro-batch x accumulation = 1024 rows = 128 questions x 8 rollouts, one generation batch per optimizer
    # step; lr 1e-6 constant; 500 steps (spec §4)
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 128 * 8
    assert config.steps_per_generation == config.gradient_accumulation_steps
    assert (config.prefix_entropy_scope, config.prefix_schedule_unit) == ("optimizer_step", "rollout_batch")
    assert (config.learning_rate, config.lr_scheduler_type, config.max_steps) == (1e-6, "constant", 500)
    assert config.prefix_sampler().bounds(250) == pytest.approx((0.5, 0.95))
    assert config.prefix_entropy_keep_fraction == 0.2 and config.beta == 0.0


@pytest.mark.slow
def test_smoke_recipe_learns_something(tmp_path):
    # 2 steps of the smoke recipe from the shipped base: some rollouts are right, so rewards and gradients are not 0
    from prefix_rft.recipes.train import build_trainer

    script, config = parse(next(p for p in CONFIGS if p.name == "smoke_cpu.yaml"))
    config.max_steps, config.output_dir = 2, str(tmp_path)
    trainer = build_trainer(script, config)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2 and max(h["reward"] for h in logged) > 0 and max(h["grad_norm"] for h in logged) > 0
    assert any(not p.equal(b) for p, b in zip(trainer.model.parameters(), before))


def test_embedded_random_draws_its_weights_from_the_seed():
    from prefix_rft.recipes.train import load_model_and_tokenizer

    script = TrainScriptArguments(model_name_or_path="embedded-random", model_size="test")
    first, second, other = (load_model_and_tokenizer(script, seed)[0] for seed in (0, 0, 1))
    weights = [next(m.parameters()).detach() for m in (first, second, other)]
    assert weights[0].equal(weights[1]) and not weights[0].equal(weights[2])
