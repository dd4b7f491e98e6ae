"""`prefix-rft train` reports a bad config field or dataset by name, without a traceback, and exits 2."""

import os

import pytest
import yaml

from prefix_rft.recipes.train import main, parse_args
from tests.helpers import SMALL


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_steps: 2.5", "max_steps must be int, got 2.5 (float)"),
        ("num_hybrid: [1]", "num_hybrid must be int, got [1] (list)"),
    ],
)
def test_yaml_value_of_the_wrong_type_names_the_field(tmp_path, capsys, line, message):
    config = tmp_path / "run.yaml"
    config.write_text(SMALL.format(out=tmp_path / "out") + line + "\n")
    assert main(["--config", str(config)]) == 2
    assert capsys.readouterr().err == f"prefix-rft train: {message}\n"


def test_dataset_limit_zero_says_so(tmp_path, capsys):
    # refused by name before validation, which on 0 rows would report a missing 'answer' column instead
    config = tmp_path / "run.yaml"
    config.write_text(SMALL.format(out=tmp_path / "out") + "max_steps: 1\ndataset_limit: 0\n")
    assert main(["--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "prefix-rft train: dataset_limit=0 leaves no rows to train on; give a positive number or leave it unset\n"
    )


def test_use_vllm_without_vllm_names_the_install_before_the_model_loads(tmp_path, monkeypatch, capsys):
    # it was TRL's ImportError, with a traceback, once the trainer was being built around the loaded model
    import importlib.util

    from prefix_rft.recipes import train_setup

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    monkeypatch.setattr(train_setup, "load_model", lambda *a: pytest.fail("loaded the model"))
    config = tmp_path / "run.yaml"
    config.write_text(SMALL.format(out=tmp_path / "out") + "use_vllm: true\n")
    assert main(["--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "prefix-rft train: use_vllm=True needs the vllm package, which is not installed: pip install "
        "'prefix-rft[vllm]' (on a GPU machine), or set use_vllm: false\n"
    )


def test_the_yaml_recipe_is_read_once_and_sets_its_env(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(SMALL.format(out=tmp_path / "out") + "max_steps: 3\nenv:\n  PREFIX_RFT_TEST_VAR: 7\n")
    monkeypatch.setenv("PREFIX_RFT_TEST_VAR", "unset")
    loads = []
    load = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda stream: loads.append(stream) or load(stream))
    args = parse_args(["--config", str(config), "--num_generations", "4"])
    assert len(loads) == 1  # TRL's parser is handed the mapping, not the file to read again
    assert (args.config.max_steps, args.config.num_generations, args.model.model_size) == (3, 4, "test")
    assert os.environ["PREFIX_RFT_TEST_VAR"] == "7"
