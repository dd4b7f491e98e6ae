"""Every recipe in configs/ parses into the script arguments and a PrefixRFTConfig with the values it states, and one
whose tracker is not installed is refused with the command that installs it."""

import tomllib
from pathlib import Path

import pytest
import yaml

from prefix_rft.baselines.methods import METHODS
from prefix_rft.recipes.train import TRACKER_INSTALL, main, parse_args
from prefix_rft.tasks.arithmetic import demonstrate, parse_problem
from prefix_rft.tasks.tokenizer import build_tokenizer

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
SFT_SMOKE = Path(__file__).parents[2] / "configs" / "smoke_cpu_sft.yaml"
RL_RECIPES = [p for p in CONFIGS if p != SFT_SMOKE]


def parse(path: Path):
    # GPU recipes ask for bf16, which transformers refuses on a machine without a GPU unless told to use the CPU.
    return parse_args(["--config", str(path), "--use_cpu", "true"])


def trackers(path: Path) -> list[str]:
    report_to = yaml.safe_load(path.read_text()).get("report_to", "none")
    return [name for name in ([report_to] if isinstance(report_to, str) else report_to) if name != "none"]


@pytest.fixture
def every_tracker_installed(monkeypatch):
    monkeypatch.setattr(
        "transformers.integrations.get_available_reporting_integrations", lambda: list(TRACKER_INSTALL)
    )


@pytest.mark.parametrize("path", RL_RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path, every_tracker_installed):
    script, config, model, mixture = parse(path)
    assert config.num_generations == 8 and config.num_hybrid == 1
    assert config.loss_type == "dr_grpo" and config.scale_rewards == "none"


@pytest.mark.parametrize("path", [p for p in CONFIGS if trackers(p)], ids=lambda p: p.name)
def test_recipe_with_a_tracker_that_is_not_installed_names_the_install_command(path, monkeypatch, capsys):
    monkeypatch.setattr("transformers.integrations.get_available_reporting_integrations", lambda: [])
    name = trackers(path)[0]
    assert main(["--config", str(path), "--use_cpu", "true"]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"prefix-rft train: report_to={name!r} needs the {name} package, which is not installed")
    assert TRACKER_INSTALL[name] in message


def test_every_extra_a_refusal_names_installs_that_tracker():
    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = {name: command.split("[")[1].split("]")[0] for name, command in TRACKER_INSTALL.items() if "[" in command}
    assert set(named) >= {"trackio", "tensorboard"}
    for name, extra in named.items():
        assert any(requirement.startswith(name) for requirement in extras[extra]), (name, extras.get(extra))


def test_paper_recipe_states_the_paper_settings(every_tracker_installed):
    script, config, model, mixture = parse(next(p for p in CONFIGS if p.name == "paper_qwen25_math_7b.yaml"))
    assert script.dataset_format == "luffy" and script.reward == "math" and model.dtype == "bfloat16"
    # 8 GPUs x micro-batch x accumulation = 1024 rows = 128 questions x 8 rollouts, one generation batch per optimizer
    # step; lr 1e-6 constant; 500 steps (spec §4)
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 128 * 8
    assert config.steps_per_generation == config.gradient_accumulation_steps
    assert (config.prefix_entropy_scope, config.prefix_schedule_unit) == ("optimizer_step", "rollout_batch")
    assert (config.learning_rate, config.lr_scheduler_type, config.max_steps) == (1e-6, "constant", 500)
    assert config.prefix_sampler().bounds(250) == pytest.approx((0.5, 0.95))
    assert config.prefix_entropy_keep_fraction == 0.2 and config.beta == 0.0


@pytest.mark.parametrize("path", [p for p in RL_RECIPES if "--num_hybrid 0" in p.read_text()], ids=lambda p: p.name)
def test_the_documented_no_hybrid_override_parses(path, every_tracker_installed):
    # the recipe's header names `--num_hybrid 0` (the RFT baseline): the file sets no option of hybrid rows
    config = parse_args(["--config", str(path), "--use_cpu", "true", "--num_hybrid", "0"]).config
    assert (config.num_hybrid, config.prefix_ratio_decay_steps) == (0, 500)


@pytest.mark.slow
def test_smoke_recipe_learns_something(tmp_path):
    # 2 steps of the smoke recipe from the shipped base: some rollouts are right, so rewards and gradients are not 0
    from prefix_rft.recipes.train import build_trainer

    args = parse(next(p for p in CONFIGS if p.name == "smoke_cpu.yaml"))
    args.config.max_steps, args.config.output_dir = 2, str(tmp_path)
    trainer = build_trainer(args)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2 and max(h["reward"] for h in logged) > 0 and max(h["grad_norm"] for h in logged) > 0
    assert any(not p.equal(b) for p, b in zip(trainer.model.parameters(), before))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_takes_its_shipped_smoke_recipe(method):
    # docs/methods.md: `prefix-rft train --config configs/smoke_cpu.yaml --method NAME`; sft has a recipe of its own
    recipe = SFT_SMOKE if method == "sft" else next(p for p in CONFIGS if p.name == "smoke_cpu.yaml")
    script, config, _, _ = parse_args(["--config", str(recipe), "--method", method])
    assert script.method == method and type(config) is METHODS[method].config
    assert config.max_steps == 5


def test_the_smoke_recipes_rollout_cap_holds_the_longest_demo_of_any_seed():
    # `--seed` or `--embedded_train_rows` draws other rows, so the cap must hold every train demo, not only seed 0's.
    # The longest, 99 then seven +9 (8 terms, the most), is 100 tokens with EOS (worked out in test_compare.py).
    tokenizer = build_tokenizer()
    longest = demonstrate(parse_problem("99+9+9+9+9+9+9+9")) + tokenizer.eos_token
    _, config, _, _ = parse(next(p for p in CONFIGS if p.name == "smoke_cpu.yaml"))
    assert config.max_completion_length >= len(tokenizer(longest, add_special_tokens=False)["input_ids"]) == 100


def test_the_sft_smoke_recipe_chooses_sft():
    script, config, model, _ = parse_args(["--config", str(SFT_SMOKE)])
    assert (script.method, script.dataset_name, model.model_name_or_path) == ("sft", "embedded", "embedded-base")


def test_embedded_random_draws_its_weights_from_the_seed():
    from prefix_rft.recipes.train import ModelArguments, load_model
    from prefix_rft.trl.config import PrefixRFTConfig

    model_args = ModelArguments(model_name_or_path="embedded-random", model_size="test")
    configs = [PrefixRFTConfig(output_dir="unused", seed=seed, use_cpu=True) for seed in (0, 0, 1)]
    first, second, other = (load_model(model_args, config)[0] for config in configs)
    weights = [next(m.parameters()).detach() for m in (first, second, other)]
    assert weights[0].equal(weights[1]) and not weights[0].equal(weights[2])
