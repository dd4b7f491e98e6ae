"""`prefix-rft train` takes what `trl grpo` takes for model, PEFT, dataset and reward functions (local files only)."""

import pytest

from prefix_rft.recipes.train import build_trainer, load_datasets, main, parse_args
from tests.helpers import short_rows, write_jsonl, write_yaml

TINY = {
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
    "per_device_train_batch_size": 8,
    "num_generations": 8,
    "max_completion_length": 24,  # the demos are 20 tokens
    "learning_rate": 1e-2,
    "max_steps": 1,
}


def argv(tmp_path, **fields) -> list[str]:
    """`--config` of a recipe with TINY settings, `fields` and output_dir in tmp_path."""
    return [
        "--config",
        str(write_yaml(tmp_path / "run.yaml", {**TINY, "output_dir": str(tmp_path / "out"), **fields})),
    ]


def test_use_peft_trains_only_lora_weights(tmp_path, model_dir, user_module):
    data = write_jsonl(tmp_path / "train.jsonl", short_rows(8))
    args = parse_args(
        [*argv(tmp_path, model_name_or_path=str(model_dir), dataset_name=str(data))]
        + ["--reward_funcs", "my_module.my_reward"]
        + ["--use_peft", "--lora_r", "8", "--lora_target_modules", "q_proj", "v_proj"]
    )
    trainer = build_trainer(args)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not p.equal(before[name])}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    # lora_A (8 x 32) and lora_B (32 x 8) in q_proj and v_proj of each of the 2 layers (hidden 32): 8 tensors
    shapes = sorted(tuple(p.shape) for p in trainer.model.parameters() if p.requires_grad)
    assert shapes == [(8, 32)] * 4 + [(32, 8)] * 4
    assert all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert changed and changed <= trainable


@pytest.mark.parametrize(
    "fields",
    [{"dtype": "bfloat16"}, {"model_init_kwargs": {"dtype": "bfloat16"}}],
    ids=["ModelConfig", "model_init_kwargs"],
)
def test_model_loading_options_reach_the_model(tmp_path, model_dir, fields):
    import torch

    data = write_jsonl(tmp_path / "train.jsonl", short_rows(8))
    args = parse_args(
        argv(tmp_path, model_name_or_path=str(model_dir), dataset_name=str(data), reward="task", **fields)
    )
    # model_dir holds float32 weights and float32 is TRL's default dtype: bfloat16 can only come from the option
    assert build_trainer(args).model.dtype == torch.bfloat16


def test_model_init_kwargs_override_model_config():
    from prefix_rft.recipes.train import ModelArguments, model_init_kwargs
    from prefix_rft.trl.config import PrefixRFTConfig

    model_args = ModelArguments(dtype="float32", attn_implementation="sdpa")
    config = PrefixRFTConfig(output_dir="unused", use_cpu=True, model_init_kwargs={"dtype": "bfloat16"})
    kwargs = model_init_kwargs(model_args, config)
    assert (kwargs["dtype"], kwargs["attn_implementation"], kwargs["revision"]) == ("bfloat16", "sdpa", "main")


def test_reward_funcs_loads_a_users_function_by_dotted_path(tmp_path, model_dir, user_module):
    data = write_jsonl(tmp_path / "train.jsonl", short_rows(8))
    args = parse_args(
        [*argv(tmp_path, model_name_or_path=str(model_dir), dataset_name=str(data))]
        + ["--reward_funcs", "my_module.my_reward"]
    )
    trainer = build_trainer(args)
    assert trainer.reward_funcs == [user_module.my_reward]
    trainer.train()
    assert user_module.CALLS == [8]  # one generation batch of one group of 8
    assert "rewards/my_reward/mean" in trainer.state.log_history[0]


def test_trl_reward_name_resolves_to_trls_function():
    from trl.rewards import think_format_reward

    from prefix_rft.recipes.rewards import load_reward_func

    assert load_reward_func("think_format_reward") is think_format_reward


def test_soft_overlong_punishment_gets_trl_grpos_fixed_lengths():
    from prefix_rft.recipes.rewards import load_reward_func

    # DAPO Eq. 13 with L_max = 1280, L_cache = 256 (trl/scripts/grpo.py): |y| = 1088 is past 1280 - 256 = 1024, so
    # the reward is (1024 - 1088) / 256 = -0.25; |y| = 1000 is within 1024: 0
    punishment = load_reward_func("get_soft_overlong_punishment")
    assert punishment(completion_ids=[[1] * 1088, [1] * 1000]) == [-0.25, 0.0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_reward", "reward_funcs: 'no_such_reward' is not one of TRL's rewards"),
        ("no_such_module.f", "reward_funcs: cannot import 'no_such_module' for 'no_such_module.f'"),
        ("my_module.no_such_function", "reward_funcs: module 'my_module' has no function 'no_such_function'"),
    ],
)
def test_reward_func_that_cannot_be_loaded_is_named(tmp_path, capsys, user_module, name, message):
    assert (
        main([*argv(tmp_path, model_name_or_path="embedded-random", model_size="test"), "--reward_funcs", name]) == 2
    )
    assert capsys.readouterr().err.startswith(f"prefix-rft train: {message}")


def test_reward_and_reward_funcs_together_are_refused(tmp_path, capsys, user_module):
    assert main([*argv(tmp_path, reward="math"), "--reward_funcs", "my_module.my_reward"]) == 2
    assert capsys.readouterr().err.startswith(
        "prefix-rft train: reward='math' and reward_funcs/reward_model_name_or_path both choose the reward: give one"
    )


def test_yaml_written_for_trl_grpo_runs_with_num_hybrid_and_demos_added(tmp_path, model_dir, user_module):
    from trl.scripts.grpo import main as trl_grpo
    from trl.scripts.grpo import make_parser

    # A `trl grpo` recipe (ScriptArguments, GRPOConfig and ModelConfig fields) on a local folder of JSONL files.
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": row["prompt"], "answer": row["answer"]} for row in short_rows(8)]
    write_jsonl(data / "train.jsonl", rows)
    trl_recipe = {
        **TINY,
        "output_dir": str(tmp_path / "trl_out"),
        "model_name_or_path": str(model_dir),
        "dtype": "float32",
        "attn_implementation": "eager",
        "model_init_kwargs": {"low_cpu_mem_usage": True},
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_target_modules": ["q_proj", "v_proj"],
        "dataset_name": str(data),
        "dataset_train_split": "train",
        "reward_funcs": ["my_module.my_reward"],
    }
    trl_grpo(*make_parser().parse_args_and_config(["--config", str(write_yaml(tmp_path / "trl.yaml", trl_recipe))]))
    assert (tmp_path / "trl_out" / "adapter_config.json").is_file()  # `trl grpo` ran it
    # What a user adds: num_hybrid, and a demos column next to prompt and answer.
    write_jsonl(data / "train.jsonl", [{**row, "demos": [f"{row['answer']} is the answer"]} for row in rows])
    recipe = {**trl_recipe, "output_dir": str(tmp_path / "out"), "num_hybrid": 1}
    user_module.CALLS.clear()
    assert main(["--config", str(write_yaml(tmp_path / "prefix_rft.yaml", recipe))]) == 0
    assert (tmp_path / "out" / "adapter_config.json").is_file()  # use_peft: the run saved a LoRA adapter
    assert user_module.CALLS == [8]


def test_eval_split_of_a_local_folder_is_evaluated(tmp_path, model_dir):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", short_rows(8))
    write_jsonl(folder / "test.jsonl", short_rows(8))
    args = parse_args(
        argv(tmp_path, model_name_or_path=str(model_dir), dataset_name=str(folder), reward="task")
        + ["--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "8"]
    )
    trainer = build_trainer(args)
    assert len(trainer.eval_dataset) == 8
    trainer.train()
    assert any("eval_reward" in entry for entry in trainer.state.log_history)


def test_eval_dataset_is_loaded_only_when_evaluating(tmp_path):
    args = parse_args(argv(tmp_path, model_name_or_path="embedded-random", embedded_train_rows=16))
    assert load_datasets(args)[1] is None


def test_dataset_config_selects_the_hub_subset(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(short_rows(2))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    args = parse_args(argv(tmp_path, dataset_name="org/math", dataset_config="hard", eval_strategy="steps"))
    train, test = load_datasets(args)
    assert calls == [("org/math", "hard", "train"), ("org/math", "hard", "test")]
    assert len(train) == len(test) == 2


def test_dataset_mixture_of_local_files_is_loaded(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", short_rows(3))
    second = write_jsonl(tmp_path / "b.jsonl", short_rows(2))
    mixture = [{"path": "json", "data_files": str(path)} for path in (first, second)]
    train, _ = load_datasets(parse_args(argv(tmp_path, datasets=mixture)))
    assert len(train) == 3 + 2 and set(train.column_names) >= {"prompt", "demos", "answer"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset_streaming": True}, "streaming datasets are not supported"),
        (
            {"dataset_name": "x.jsonl", "datasets": [{"path": "json", "data_files": "x.jsonl"}]},
            "both dataset_name and datasets choose the training data",
        ),
    ],
)
def test_dataset_choice_that_cannot_work_is_refused(tmp_path, capsys, fields, message):
    assert main(argv(tmp_path, **fields)) == 2
    assert capsys.readouterr().err.startswith(f"prefix-rft train: {message}")


def test_from_trl_doc_names_every_refused_option():
    from pathlib import Path

    from prefix_rft.trl.fields import REFUSED_GRPO_FIELDS, REFUSED_LOSS_TYPES
    from prefix_rft.trl.trainer import REFUSED_TRAINER_ARGUMENTS

    doc = (Path(__file__).parents[2] / "docs" / "from_trl.md").read_text()
    refused = [*REFUSED_GRPO_FIELDS, *REFUSED_LOSS_TYPES, *REFUSED_TRAINER_ARGUMENTS]
    assert [name for name in refused if f"`{name}`" not in doc] == []
