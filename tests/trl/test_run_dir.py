"""A run refuses an unwritable output_dir, and another run's checkpoints, before its first step."""

import contextlib
import json
import logging
import os
import re
import subprocess

import pytest
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.run_dir import (
    RUN_RECORD,
    claim_output_dir,
    is_complete_checkpoint,
    newest_complete_checkpoint,
    prepare_output_dir,
    resolve_resume,
    resume_request,
)
from tests.helpers import make_dataset, train_args


def build(out, model, tokenizer, **overrides):
    args = train_args(out.parent, **overrides)
    args.output_dir = str(out)
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


@contextlib.contextmanager
def read_only(path):
    """`path` made read-only for this process: immutable for root (permission bits do not stop root), else 0o555."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("root, and the file system has no immutable attribute")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


def test_read_only_output_dir_is_refused_before_the_first_step(tmp_path, model, tokenizer):
    # refused before the first step, not at the final save after every step has trained
    out = tmp_path / "out"
    out.mkdir()
    trainer = build(out, model, tokenizer)
    with read_only(out), pytest.raises(ValueError) as refused:
        trainer.train()
    assert re.fullmatch(
        rf"output_dir '{re.escape(str(out))}' is not writable \((Operation not permitted|Permission denied)\): "
        "the run would train and then fail to save; choose another output_dir or make it writable",
        str(refused.value),
    )
    assert trainer.state.global_step == 0


def finished_run(out):
    """What a finished 6-step run leaves: its checkpoints (their contents do not matter here)."""
    for step in (5, 6):
        (out / f"checkpoint-{step}").mkdir(parents=True)


def test_new_run_in_a_folder_with_another_runs_checkpoints_is_refused(tmp_path, model, tokenizer):
    out = tmp_path / "out"
    finished_run(out)
    trainer = build(out, model, tokenizer)
    message = (
        f"output_dir '{out}' holds another run's checkpoints (checkpoint-5, checkpoint-6); pass "
        "resume_from_checkpoint=True to continue that run, overwrite_output_dir=True to delete them and start anew, "
        "or choose another output_dir"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_overwrite_deletes_the_old_checkpoints_so_a_resume_finds_only_the_new_runs(tmp_path, model, tokenizer):
    # a crash of the new run after its checkpoint-1 resumes from that checkpoint, not from the old run's checkpoint-6
    out = tmp_path / "out"
    finished_run(out)
    trainer = build(out, model, tokenizer, overwrite_output_dir=True, save_strategy="steps", save_steps=1)
    trainer.train()
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-1")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]


def test_resume_with_changed_settings_is_pointed_out(tmp_path, caplog):
    claim_output_dir(str(tmp_path), resuming=False, overwrite=False, settings={"learning_rate": 1e-6, "seed": 0})
    assert (tmp_path / RUN_RECORD).exists()
    with caplog.at_level(logging.WARNING, logger="prefix_rft.trl.run_dir"):
        claim_output_dir(str(tmp_path), resuming=True, overwrite=False, settings={"learning_rate": 1e-5, "seed": 0})
    assert "resuming with settings that differ from the run's start: learning_rate" in caplog.text


def test_prepare_output_dir_creates_the_folder_and_records_the_arguments(tmp_path):
    out = tmp_path / "a" / "out"
    args = TrainingArguments(output_dir=str(out), learning_rate=3e-4, seed=7, report_to="none")
    prepare_output_dir(args, resuming=False, overwrite=False)
    assert os.listdir(out) == [RUN_RECORD]  # the write probe is gone
    recorded = json.loads((out / RUN_RECORD).read_text())
    assert (recorded["learning_rate"], recorded["seed"], recorded["output_dir"]) == (3e-4, 7, str(out))


def test_prepare_output_dir_refuses_or_overwrites_another_runs_checkpoints(tmp_path):
    out = tmp_path / "out"
    finished_run(out)
    (out / "stage" / "checkpoint-7").mkdir(parents=True)  # a leftover named by the caller
    args = TrainingArguments(output_dir=str(out), report_to="none")
    with pytest.raises(ValueError, match=r"holds another run's checkpoints \(checkpoint-5, checkpoint-6\)"):
        prepare_output_dir(args, resuming=False, overwrite=False, leftovers=("stage",))
    assert sorted(os.listdir(out)) == ["checkpoint-5", "checkpoint-6", "stage"]
    prepare_output_dir(args, resuming=False, overwrite=True, leftovers=("stage",))
    assert os.listdir(out) == [RUN_RECORD]


def checkpoints(out, complete=(), cut_off=()):
    """`checkpoint-N` folders: complete ones hold trainer_state.json, cut-off ones only the weights."""
    for step in (*complete, *cut_off):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
        if step in complete:
            (folder / "trainer_state.json").write_text("{}")


def test_a_checkpoint_is_complete_once_it_holds_its_trainer_state(tmp_path):
    checkpoints(tmp_path, complete=(1,), cut_off=(2,))
    assert is_complete_checkpoint(str(tmp_path / "checkpoint-1"))
    assert not is_complete_checkpoint(str(tmp_path / "checkpoint-2"))
    assert not is_complete_checkpoint(str(tmp_path / "checkpoint-3"))  # no such folder


def test_newest_complete_checkpoint_goes_by_step_and_skips_cut_off_ones(tmp_path):
    # by step, not by name: checkpoint-10 sorts before checkpoint-9 as text
    checkpoints(tmp_path, complete=(9, 10), cut_off=(11,))
    (tmp_path / "checkpoint-12").write_text("")  # a file, not a checkpoint
    assert newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")


def test_no_complete_checkpoint_is_none(tmp_path):
    checkpoints(tmp_path, cut_off=(3,))
    assert newest_complete_checkpoint(str(tmp_path)) is None
    assert newest_complete_checkpoint(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("value", "asked"),
    [
        (None, None),
        (False, None),
        ("FALSE", None),
        (True, True),
        ("True", True),
        ("out/checkpoint-3", "out/checkpoint-3"),
    ],
)
def test_resume_request_reads_yaml_bools_and_any_case(value, asked):
    assert resume_request(value) == asked


def test_a_stage_resumes_afresh_only_from_a_folder_without_checkpoints(tmp_path):
    # a stage that has not checkpointed yet starts afresh; one whose only checkpoint was cut off is refused
    assert resolve_resume("true", str(tmp_path), fresh_if_none=True) is None
    checkpoints(tmp_path, cut_off=(3,))
    with pytest.raises(ValueError, match="holds no complete checkpoint-N"):
        resolve_resume("true", str(tmp_path), fresh_if_none=True)
    checkpoints(tmp_path, complete=(2,))
    assert resolve_resume(True, str(tmp_path), fresh_if_none=True) == str(tmp_path / "checkpoint-2")
