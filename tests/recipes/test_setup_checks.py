"""`prefix-rft train` names the option or file behind bad input found at setup, before the model loads, and exits 2.

Each case is caught before PyYAML, TRL's parser, transformers or datasets meet it, which would raise a traceback or a
message naming neither the option nor the file.
"""

import json

import pytest

from prefix_rft import cli
from prefix_rft.recipes.train import main
from tests.helpers import SMALL, write_jsonl

ROWS = [{"prompt": "1+1=", "demos": ["1+1 is 2. answer: 2"], "answer": "2"}]
LUFFY_ROWS = [{"prompt": [{"role": "user", "content": "1+1="}], "target": "2", "reward_model": {"ground_truth": "2"}}]


def recipe(tmp_path, extra: str = "") -> str:
    path = tmp_path / "run.yaml"
    path.write_text(SMALL.format(out=tmp_path / "out") + "max_steps: 1\n" + extra)
    return str(path)


def refused(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"prefix-rft train: {message}"
    assert "Traceback" not in err


def test_missing_config_file(tmp_path, capsys):
    refused(capsys, ["--config", str(tmp_path / "nope.yaml")], f"--config {tmp_path / 'nope.yaml'}: no such file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "output_dir: out\n\tmax_steps: 1\n",
            "line 2, column 1: not valid YAML (while scanning for the next token; found character '\\t' that cannot "
            "start any token); YAML indents with spaces, never tabs",
        ),
        (
            "output_dir: out\n  max_steps: 1\n",  # the ':' of the indented line is its 12th character
            "line 2, column 12: not valid YAML (mapping values are not allowed here); check the indentation: an "
            "option of the recipe starts in column 1",
        ),
    ],
    ids=["tab", "indent"],
)
def test_yaml_that_does_not_parse_names_file_line_and_column(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    refused(capsys, ["--config", str(path)], f"--config {path}, {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping of 'option: value' lines, got list ['a', 'b']"),
        (
            "max_step: 1\n",
            "unknown option(s) 'max_step' (did you mean 'max_steps'?); prefix-rft train --help lists them",
        ),
        ("1: 2\n", "key 1 (int) is not an option name"),
    ],
    ids=["list", "unknown-key", "int-key"],
)
def test_yaml_that_is_no_recipe_names_the_file(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    refused(capsys, ["--config", str(path)], f"--config {path}: {message}")


def test_yaml_value_of_a_script_field_of_the_wrong_type(tmp_path, capsys):
    # reached os.path.splitext(5) inside the dataset loader
    path = tmp_path / "typed.yaml"
    path.write_text(SMALL.format(out=tmp_path / "out").replace("dataset_name: embedded", "dataset_name: 5"))
    refused(capsys, ["--config", str(path)], "dataset_name must be str or None, got 5 (int)")


def test_missing_local_model_folder_is_not_called_a_bad_hub_id(tmp_path, capsys):
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--model_name_or_path", "./models/nothere"],
        "--model_name_or_path ./models/nothere: no such folder; give a saved model's folder or a hub id of the form "
        "org/name",
    )


def test_missing_checkpoint_lists_the_ones_there(tmp_path, capsys):
    complete = tmp_path / "out" / "checkpoint-2"
    complete.mkdir(parents=True)
    (complete / "trainer_state.json").write_text("{}")
    wanted = tmp_path / "out" / "checkpoint-5"
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--resume_from_checkpoint", str(wanted)],
        f"--resume_from_checkpoint {wanted}: no such checkpoint folder (output_dir {tmp_path / 'out'} holds "
        "checkpoint-2); give a checkpoint folder, or true for the newest",
    )


def test_checkpoint_cut_off_before_its_trainer_state_is_refused(tmp_path, capsys):
    cut_off = tmp_path / "out" / "checkpoint-3"
    cut_off.mkdir(parents=True)
    (cut_off / "model.safetensors").write_bytes(b"")
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--resume_from_checkpoint", str(cut_off)],
        f"--resume_from_checkpoint {cut_off}: not a complete checkpoint, it holds no trainer_state.json (output_dir "
        f"{tmp_path / 'out'} holds checkpoint-3)",
    )


def test_dataset_folder_without_data_files(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.md").write_text("rows to come\n")
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--dataset_name", str(folder)],
        f"--dataset_name {folder}: the folder holds no data files (.jsonl, .json, .parquet or .csv)",
    )


def test_dataset_folder_with_a_broken_line_names_file_and_line(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    # '{"prompt": "b", ' is 16 characters: the unquoted name starts in column 17
    (folder / "train.jsonl").write_text(json.dumps(ROWS[0]) + '\n{"prompt": "b", answer\n')
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--dataset_name", str(folder)],
        f"{folder / 'train.jsonl'}, line 2, column 17: not valid JSON (Expecting property name enclosed in double "
        "quotes); each line must hold one complete JSON object",
    )


def test_dataset_file_of_a_format_not_read(tmp_path, capsys):
    path = tmp_path / "rows.txt"
    path.write_text("1+1=2\n")
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--dataset_name", str(path)],
        f"--dataset_name {path}: a .txt file is not read; give a .jsonl, .json, .parquet or .csv file, a folder of "
        "them, or a hub dataset id",
    )


def test_json_option_with_a_syntax_error_is_named(tmp_path, capsys):
    # '{"num_cycles": 2,}': the '}' at character 17 (column 18) is where a name was expected
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--lr_scheduler_kwargs", '{"num_cycles": 2,}'],
        "--lr_scheduler_kwargs: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 18 "
        '(char 17)); write a mapping such as {"key": 1}',
    )


def test_json_option_in_the_yaml_with_a_syntax_error_is_named(tmp_path, capsys):
    # '{"dtype": float32}': the unquoted value starts at character 10 (column 11)
    refused(
        capsys,
        ["--config", recipe(tmp_path, "model_init_kwargs: '{\"dtype\": float32}'\n")],
        "--model_init_kwargs: not valid JSON (Expecting value: line 1 column 11 (char 10)); write a mapping such as "
        '{"key": 1}',
    )


@pytest.mark.parametrize(
    ("rows", "fmt", "message"),
    [
        (
            ROWS,
            "luffy",
            "--dataset_format luffy expects fields prompt, target, reward_model in every row, but the first row of "
            "{path} has prompt, demos, answer (no target, reward_model); it fits --dataset_format prefix_rft",
        ),
        (
            LUFFY_ROWS,
            "prefix_rft",
            "--dataset_format prefix_rft expects fields prompt, answer in every row, but the first row of {path} has "
            "prompt, target, reward_model (no answer); it fits --dataset_format luffy",
        ),
    ],
    ids=["luffy-on-prefix-rft-rows", "prefix-rft-on-luffy-rows"],
)
def test_dataset_format_that_does_not_fit_the_rows(tmp_path, capsys, rows, fmt, message):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    argv = ["--config", recipe(tmp_path), "--dataset_name", str(path), "--dataset_format", fmt]
    refused(capsys, argv, message.format(path=path))


def test_output_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "taken"
    path.write_text("")
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--output_dir", str(path)],
        f"--output_dir {path}: is a file, not a folder; give a folder for the outputs",
    )


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    from prefix_rft.setup_errors import DEBUG_ENV, SetupError

    monkeypatch.setenv(DEBUG_ENV, "0")  # restored afterwards; `--debug` sets it to 1
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(SetupError, match="no such file"):
        cli.main(["--debug", "train", "--config", missing])


@pytest.mark.parametrize("command", ["demo", "compare", "protocol"])
def test_run_commands_refuse_an_output_dir_that_is_a_file_before_any_run(tmp_path, capsys, command):
    import importlib

    taken = tmp_path / "taken"
    taken.write_text("")
    module = importlib.import_module(f"prefix_rft.recipes.{command}")
    assert (
        module.main(["--output_dir", str(taken), "--methods", "base,prefix_rft"][: 4 if command != "demo" else 2]) == 2
    )
    assert capsys.readouterr().err == (
        f"prefix-rft {command}: --output_dir {taken}: is a file, not a folder; give a folder for the outputs\n"
    )


def test_protocol_refuses_zero_jobs(tmp_path, capsys):
    from prefix_rft.recipes.protocol import main as protocol

    assert protocol(["--output_dir", str(tmp_path / "p"), "--jobs", "0"]) == 2
    assert capsys.readouterr().err == "prefix-rft protocol: --jobs must be at least 1 (runs side by side), got 0\n"
    assert not (tmp_path / "p").exists()  # nothing written


def test_an_empty_yaml_value_of_a_field_that_needs_one(tmp_path, capsys):
    # found by tests/recipes/test_config_property.py: TRL multiplied None by the number of processes
    refused(
        capsys,
        ["--config", recipe(tmp_path, "per_device_train_batch_size:\n")],
        "per_device_train_batch_size must be int, got null (an empty value); give one or leave it out",
    )


def test_model_path_that_is_a_file(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--model_name_or_path", str(weights)],
        f"--model_name_or_path {weights}: is a file; give the folder of a saved model (config.json and weights)",
    )


def test_scheduler_kwargs_the_schedule_does_not_take(tmp_path, capsys):
    # transformers' cosine schedule takes num_cycles and last_epoch besides what the Trainer passes itself
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"cycles": 2}'],
        "--lr_scheduler_kwargs: the cosine schedule takes no 'cycles'; it takes num_cycles, last_epoch",
    )


def test_model_init_kwargs_with_a_dtype_torch_lacks(tmp_path, capsys):
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--model_init_kwargs", '{"dtype": "float33"}'],
        "--model_init_kwargs: dtype 'float33' is not a torch dtype; use auto, float32, bfloat16 or float16",
    )


def test_mixture_file_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "gone.jsonl"
    text = SMALL.format(out=tmp_path / "out").replace("dataset_name: embedded\n", "")
    path = tmp_path / "mix.yaml"
    path.write_text(text + f"datasets:\n  - path: json\n    data_files: {missing}\n")
    refused(capsys, ["--config", str(path)], f"datasets item 0: data_files {missing}: no such file")


def test_protocol_grid_that_is_no_list_of_numbers_names_its_option(tmp_path, capsys):
    from prefix_rft.recipes.protocol import main as protocol

    assert protocol(["--output_dir", str(tmp_path / "p"), "--rl_grid", "3e-5,fast"]) == 2
    assert capsys.readouterr().err == (
        "prefix-rft protocol: --rl_grid: expected comma-separated positive numbers, got '3e-5,fast'\n"
    )


def test_a_finished_run_record_that_cannot_be_read_is_named(tmp_path, capsys):
    from prefix_rft.recipes.compare import main as compare

    record = tmp_path / "runs" / "base" / "seed0.json"
    record.parent.mkdir(parents=True)
    record.write_text("")  # a record cut to nothing
    assert compare(["--output_dir", str(tmp_path), "--methods", "base", "--seeds", "1"]) == 2
    assert capsys.readouterr().err == (
        f"prefix-rft compare: {record}: a finished run's record cannot be read (Expecting value: line 1 column 1 "
        "(char 0)); delete it to redo the run\n"
    )


def test_hub_model_that_does_not_load_is_named_with_the_library_reason(tmp_path, capsys, monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--model_name_or_path", "org/nothere"],
        "--model_name_or_path org/nothere: no such local folder, and it cannot be loaded from the hub (We couldn't "
        "connect to 'https://huggingface.co' to load the files)",
    )


def test_model_folder_without_a_tokenizer(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    refused(
        capsys,
        ["--config", recipe(tmp_path), "--model_name_or_path", str(folder)],
        f"--model_name_or_path {folder}: the folder holds no tokenizer (tokenizer.json, tokenizer_config.json); save "
        "the tokenizer with the model (tokenizer.save_pretrained)",
    )


def test_model_folder_whose_config_does_not_load(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": ')  # cut off
    (folder / "tokenizer.json").write_text("{}")
    assert main(["--config", recipe(tmp_path), "--model_name_or_path", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(
        f"prefix-rft train: --model_name_or_path {folder}: its config.json cannot be loaded ("
    )
    assert "Traceback" not in err
