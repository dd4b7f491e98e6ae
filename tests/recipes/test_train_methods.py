"""`prefix-rft train --method NAME`: every method of the project from one command, its options checked by name."""

import json
import re
from pathlib import Path

import pytest
from trl import SFTTrainer

from prefix_rft.baselines import LuffyConfig, LuffyTrainer, ReliftConfig
from prefix_rft.baselines.methods import METHODS, SFTBestThenRFTConfig, own_options
from prefix_rft.recipes.train import main, parse_args
from prefix_rft.setup_errors import DEBUG_ENV
from tests.helpers import write_yaml

DOCS = Path(__file__).parents[2] / "docs" / "methods.md"
# One step on the shipped base model, 2 questions x 8 rollouts; demos longer than the budget are cut for RL.
RECIPE = {
    "model_name_or_path": "embedded-base",
    "dataset_name": "embedded",
    "embedded_train_rows": 16,
    "use_cpu": True,
    "bf16": False,
    "gradient_checkpointing": False,
    "seed": 0,
    "report_to": "none",
    "save_strategy": "no",
    "per_device_train_batch_size": 16,
    "max_steps": 1,
    "disable_tqdm": True,
}
RL_SETTINGS = {"num_generations": 8, "max_completion_length": 24, "prefix_truncate_long_demos": True}


def recipe(tmp_path, method: str, **fields) -> Path:
    settings = {**RECIPE, "output_dir": str(tmp_path / "out"), "method": method}
    if "rl" in METHODS[method].stages:
        settings |= RL_SETTINGS
    return write_yaml(tmp_path / "run.yaml", settings | fields)


def test_method_from_yaml_or_command_line_chooses_the_config_class(tmp_path):
    config = recipe(tmp_path, "relift")
    assert type(parse_args(["--config", str(config)]).config) is ReliftConfig
    args = parse_args(["--config", str(config), "--method", "luffy", "--luffy_gamma", "0.3"])
    assert (type(args.config), args.config.luffy_gamma, args.script.method) == (LuffyConfig, 0.3, "luffy")
    assert METHODS["luffy"].trainer is LuffyTrainer


@pytest.mark.parametrize(("method", "staged"), [("sft", True), ("sft_best_rft", True), ("luffy", False)])
def test_methods_with_an_sft_stage_leave_resume_true_to_their_stages(tmp_path, method, staged):
    # output_dir holds no checkpoint: a one-stage RL method refuses `true` here, a staged one resolves it per stage
    argv = ["--config", str(recipe(tmp_path, method, resume_from_checkpoint="true"))]
    if staged:
        args = parse_args(argv)
        assert (args.staged, args.config.resume_from_checkpoint) == (True, "true")
    else:
        with pytest.raises(ValueError, match="holds no complete checkpoint-N"):
            parse_args(argv)


def test_preset_methods_fix_their_settings(tmp_path):
    config = recipe(tmp_path, "prefix_rft_select_all")
    assert parse_args(["--config", str(config)]).config.prefix_entropy_selection == "all"
    assert parse_args(["--config", str(config), "--method", "rft"]).config.num_hybrid == 0


@pytest.mark.parametrize(
    ("method", "extra", "message"),
    [
        ("prefix_rft", ["--luffy_gamma", "0.2"], "method 'prefix_rft' refuses luffy_gamma: options of method 'luffy'"),
        ("luffy", ["--sft-loss-coef=2"], "method 'luffy' refuses sft_loss_coef: options of method 'rl_sft'"),
        (
            "sft_rft",
            ["--sft_patience", "2", "--relift_sft_batch=4"],
            "method 'sft_rft' refuses relift_sft_batch: options of method 'relift'; sft_patience: options of method "
            "'sft_best_rft'",
        ),
        ("sft", [], "method 'sft' refuses max_completion_length, num_generations, prefix_truncate_long_demos: RL"),
        ("rft", ["--num_hybrid", "1"], "method 'rft' sets num_hybrid=0; got num_hybrid=1"),
        (
            "rft",
            ["--prefix_ratio_decay_steps", "7"],
            "prefix_ratio_decay_steps=7 is not used by PrefixRFTConfig: num_hybrid=0 has no hybrid rows",
        ),
        (
            "sft_best_rft",
            ["--prefix_placement", "prompt"],
            "prefix_placement='prompt' is not used by SFTBestThenRFTConfig: num_hybrid=0 has no hybrid rows",
        ),
        ("grpo", [], "method='grpo' is not a method of prefix-rft; choose one of prefix_rft, rft, sft, "),
    ],
)
def test_options_of_other_methods_are_refused_by_name(tmp_path, capsys, method, extra, message):
    config = recipe(tmp_path, "prefix_rft", **RL_SETTINGS)
    assert main(["--config", str(config), "--method", method, *extra]) == 2
    assert capsys.readouterr().err.startswith(f"prefix-rft train: {message}")


def test_docs_table_names_every_method_and_its_own_options():
    rows = {line.split("|")[1].strip(" `"): line for line in DOCS.read_text().splitlines() if line.startswith("| `")}
    assert set(METHODS) <= set(rows)
    for name in METHODS:
        for option in own_options(name):
            assert f"`{option}`" in rows[name], (name, option)


# `option` (value...) in a row of the table: the default it states, up to the first `:`, `,` or `;`
_STATED_DEFAULT = re.compile(r"`([a-z_0-9]+)` \(`?'?([^`':,;)]+)")


def stated(text: str):
    """A default as the docs write it: null, true/false, a number, else the text."""
    words = {"null": None, "true": True, "false": False}
    if text in words:
        return words[text]
    try:
        return float(text)
    except ValueError:
        return text


def test_stated_defaults_parse_as_written():
    pairs = _STATED_DEFAULT.findall("`a` (5e-5), `b` (null: all), `c` (`in_step`, the paper), `d` (-1: epochs)")
    assert [(name, stated(text)) for name, text in pairs] == [("a", 5e-5), ("b", None), ("c", "in_step"), ("d", -1)]


def test_docs_table_states_each_methods_defaults(tmp_path):
    rows = {line.split("|")[1].strip(" `"): line for line in DOCS.read_text().splitlines() if line.startswith("| `")}
    checked = 0
    for name, spec in METHODS.items():
        config = spec.config(output_dir=str(tmp_path), use_cpu=True)
        for option, text in _STATED_DEFAULT.findall(rows[name].split("|")[3]):
            assert stated(text) == getattr(config, option), (name, option, text)
            checked += 1
    assert checked >= 28  # the own options of 9 methods with their stated defaults, and the entropy bonus of 3


def test_best_sft_stage_validation_counts_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"sft_patience=0 is out of range; expected >= 1"):
        SFTBestThenRFTConfig(output_dir=str(tmp_path), use_cpu=True, sft_patience=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_from_the_command_line_on_the_shipped_base(tmp_path, method):
    two_stages = len(METHODS[method].stages) == 2
    stage_steps = {"sft_max_steps": 1} if two_stages else {}
    if method == "sft_best_rft":
        stage_steps |= {"sft_eval_steps": 1, "sft_validation_rows": 2, "sft_patience": 1}
    assert main(["--config", str(recipe(tmp_path, method, **stage_steps))]) == 0
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file()
    if two_stages:
        assert json.loads((out / "sft" / "stage_done.json").read_text())["sft_steps"] == 1


@pytest.mark.slow
def test_finished_sft_stage_is_not_trained_again(tmp_path, capsys, caplog):
    # Stage 2 refuses the demos, 35 tokens against a budget of 8, after stage 1 has finished.
    config = recipe(tmp_path, "sft_rft", sft_max_steps=2, max_completion_length=8, prefix_truncate_long_demos=False)
    assert main(["--config", str(config)]) == 2
    assert re.search(r"has \d+ tokens, more than max_completion_length=8", capsys.readouterr().err)
    sft_dir = tmp_path / "out" / "sft"
    weights = (sft_dir / "model.safetensors").read_bytes()
    assert json.loads((sft_dir / "stage_done.json").read_text()) == {"sft_steps": 2}
    # The run again, with the budget fixed: stage 2 trains from stage 1's model, which stays as it was.
    assert main(["--config", str(config), "--prefix_truncate_long_demos", "true"]) == 0
    assert "stage 1 (SFT) finished earlier" in caplog.text
    assert (sft_dir / "model.safetensors").read_bytes() == weights
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_checkpoint_of_stage_1_resumes_stage_1_and_stage_2_starts_afresh(tmp_path):
    # Run 1: stage 1 saves checkpoint-1 and -2, then stage 2 refuses the demos (35 tokens, budget 8): exit 2.
    saves = {"save_strategy": "steps", "save_steps": 1, "logging_steps": 1}
    config = recipe(tmp_path, "sft_rft", sft_max_steps=2, max_completion_length=8, **saves)
    assert main(["--config", str(config), "--prefix_truncate_long_demos", "false"]) == 2
    sft_dir, out = tmp_path / "out" / "sft", tmp_path / "out"
    (sft_dir / "stage_done.json").unlink()  # as if stage 1 had been interrupted after its first checkpoint
    # Run 2 from stage 1's checkpoint-1: stage 1 trains its step 2, then stage 2 trains its one step from step 0
    # (resuming stage 1's checkpoint there would load SFT's step count, 1 = max_steps, and train nothing).
    assert main(["--config", str(config), "--resume_from_checkpoint", str(sft_dir / "checkpoint-1")]) == 0
    assert json.loads((sft_dir / "stage_done.json").read_text()) == {"sft_steps": 2}
    history = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "reward" in h] == [1]


def test_a_checkpoint_of_neither_stage_is_refused_before_training(tmp_path, capsys):
    other = tmp_path / "elsewhere" / "checkpoint-3"
    other.mkdir(parents=True)
    (other / "trainer_state.json").write_text("{}")  # a checkpoint, only in no stage's folder
    config = recipe(tmp_path, "sft_rft", resume_from_checkpoint=str(other))
    assert main(["--config", str(config)]) == 2
    assert f"resume_from_checkpoint={str(other)!r} is not a checkpoint of either stage" in capsys.readouterr().err
    assert not (tmp_path / "out" / "sft").exists()


@pytest.mark.slow
def test_sft_evaluates_on_the_demonstrations_of_the_eval_split(tmp_path, capsys):
    config = recipe(tmp_path, "sft", eval_strategy="steps", eval_steps=1, embedded_eval_rows=4)
    assert main(["--config", str(config)]) == 0
    assert "'eval_loss'" in capsys.readouterr().out  # SFTTrainer's loss on the eval split's demonstrations


@pytest.mark.slow
def test_lora_sft_stage_is_merged_for_the_rft_stage_to_adapt(tmp_path):
    config = recipe(tmp_path, "sft_rft", sft_max_steps=1, use_peft=True, lora_target_modules=["q_proj", "v_proj"])
    assert main(["--config", str(config)]) == 0
    out = tmp_path / "out"
    # stage 1 saved whole weights (its adapter merged), stage 2 an adapter on top of them
    assert (out / "sft" / "model.safetensors").is_file() and not (out / "sft" / "adapter_config.json").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == out / "sft"


# A bug while a stage trains (step 1 here) is not bad input: it keeps its traceback instead of being printed as
# "prefix-rft train: MESSAGE" with exit 2, as the single-stage run already did.
@pytest.mark.slow
def test_an_error_while_the_rl_stage_trains_keeps_its_traceback(tmp_path, capsys, monkeypatch, user_module):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    tiny = {"model_name_or_path": "embedded-random", "model_size": "test", "sft_max_steps": 1}
    config = recipe(tmp_path, "sft_rft", reward_funcs=["my_module.infinite_reward"], **tiny)
    with pytest.raises(
        ValueError, match=r"^reward of row 0 \(of the gathered batch\) is not finite: \{'infinite_reward': inf\}$"
    ):
        main(["--config", str(config)])
    assert "prefix-rft train:" not in capsys.readouterr().err
    assert (tmp_path / "out" / "sft" / "stage_done.json").is_file()  # stage 1 trained; stage 2 broke at its step


@pytest.mark.slow
def test_an_error_while_the_sft_stage_trains_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def broken_loss(*args, **kwargs):
        raise ValueError("loss: not finite at step 1")

    monkeypatch.setattr(SFTTrainer, "compute_loss", broken_loss)
    config = recipe(tmp_path, "sft", model_name_or_path="embedded-random", model_size="test")
    with pytest.raises(ValueError, match="^loss: not finite at step 1$"):
        main(["--config", str(config)])
    assert "prefix-rft train:" not in capsys.readouterr().err
