"""`--resume_from_checkpoint True` (any case) continues from the newest complete checkpoint of output_dir."""

import json
from pathlib import Path

import pytest

from prefix_rft.recipes.train import main, parse_args
from prefix_rft.trl.run_dir import resolve_resume
from tests.helpers import write_yaml

RUN = {
    "model_name_or_path": "embedded-random",
    "model_size": "test",
    "embedded_train_rows": 16,
    "use_cpu": True,
    "report_to": "none",
    "logging_steps": 1,
    "disable_tqdm": True,
    "per_device_train_batch_size": 8,
    "num_generations": 8,
    "max_completion_length": 8,
    "prefix_truncate_long_demos": True,
    "save_strategy": "steps",
    "save_steps": 1,
}


def state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())


@pytest.mark.parametrize("flag", ["True", "true"])
def test_resume_true_continues_from_the_newest_checkpoint(tmp_path, flag):
    out = tmp_path / "out"
    recipe = write_yaml(tmp_path / "run.yaml", {**RUN, "output_dir": str(out)})
    assert main(["--config", str(recipe), "--max_steps", "2"]) == 0
    first = state(out / "checkpoint-2")["log_history"]
    assert main(["--config", str(recipe), "--max_steps", "3", "--resume_from_checkpoint", flag]) == 0
    resumed = state(out / "checkpoint-3")
    steps = [entry["step"] for entry in resumed["log_history"] if "loss" in entry]
    # steps 1 and 2 come from checkpoint-2, unchanged; only step 3 was trained by the second run
    assert resumed["global_step"] == 3 and steps == [1, 2, 3]
    assert [e for e in resumed["log_history"] if e["step"] <= 2 and "loss" in e] == [e for e in first if "loss" in e]


def test_yaml_true_resumes_the_newest_complete_checkpoint(tmp_path):
    out = tmp_path / "out"
    for step, complete in ((1, True), (2, True), (10, False)):  # checkpoint-10 was cut off before its state file
        (out / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    recipe = write_yaml(tmp_path / "run.yaml", {**RUN, "output_dir": str(out), "resume_from_checkpoint": True})
    assert parse_args(["--config", str(recipe)]).config.resume_from_checkpoint == str(out / "checkpoint-2")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("false", None), ("False", None), ("ckpt", "ckpt")])
def test_resume_value_that_is_not_true_passes_through(value, expected):
    assert resolve_resume(value, "/nonexistent") == expected


def test_resume_true_without_a_checkpoint_is_refused(tmp_path, capsys):
    recipe = write_yaml(tmp_path / "run.yaml", {**RUN, "output_dir": str(tmp_path / "out")})
    assert main(["--config", str(recipe), "--max_steps", "1", "--resume_from_checkpoint", "True"]) == 2
    assert capsys.readouterr().err == (
        f"prefix-rft train: resume_from_checkpoint=True resumes the newest checkpoint of output_dir "
        f"'{tmp_path / 'out'}', but it holds no complete checkpoint-N; start without resume_from_checkpoint or point "
        "it at a checkpoint folder\n"
    )
