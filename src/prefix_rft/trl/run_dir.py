"""A run's `output_dir`: writable before the first step, and never shared by two runs unless the user says which.

transformers 5 has no `overwrite_output_dir`, and `resume_from_checkpoint=True` takes the highest `checkpoint-N` in
the folder whichever run wrote it: a new run that crashes at step 3 in a finished 6-step run's folder resumes from
the old run's checkpoint-6. So a fresh start refuses a folder holding checkpoints unless `overwrite_output_dir`
(which deletes them), and each run records its settings so that a resume with different ones is pointed out.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME

logger = logging.getLogger(__name__)
RUN_RECORD = "prefix_rft_run.json"  # the settings of the run that owns the folder
FINAL_MODEL_MARK = "training_args.bin"  # written by Trainer.save_model next to the final weights
STATE_FILE = TRAINER_STATE_NAME  # Trainer._save_checkpoint writes it last: a checkpoint without it was cut off
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_UNCOMPARED = {"output_dir", "logging_dir", "resume_from_checkpoint", "overwrite_output_dir"}


def check_writable(output_dir: str) -> None:
    """Create `output_dir` if needed and write a file into it, so an unwritable folder fails now, not at the save."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=output_dir, prefix=".write-probe-")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"output_dir {output_dir!r} is not writable ({error.strerror or error}): the run would train and then "
            "fail to save; choose another output_dir or make it writable"
        ) from None


def prepare_output_dir(
    args: TrainingArguments, *, resuming: bool, overwrite: bool, leftovers: tuple[str, ...] = ()
) -> None:
    """On the process that saves: `check_writable`, then `claim_output_dir` recording `args` (as JSON) as the
    run's settings. `overwrite` is passed apart: transformers 5's TrainingArguments has no `overwrite_output_dir`."""
    if not args.should_save:
        return
    check_writable(args.output_dir)
    claim_output_dir(
        args.output_dir,
        resuming=resuming,
        overwrite=overwrite,
        settings=json.loads(args.to_json_string()),
        leftovers=leftovers,
    )


def checkpoints_in(output_dir: str) -> list[str]:
    """Names of the `checkpoint-N` folders in `output_dir`, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = [
        (int(match[1]), name)
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT.fullmatch(name)) and os.path.isdir(os.path.join(output_dir, name))
    ]
    return [name for _, name in sorted(found)]


def is_complete_checkpoint(folder: str) -> bool:
    """`folder` is a checkpoint transformers finished writing (it holds the trainer state, written last)."""
    return os.path.isfile(os.path.join(folder, STATE_FILE))


def newest_complete_checkpoint(output_dir: str) -> str | None:
    """The path of the highest complete `checkpoint-N` of `output_dir` (a resume's starting point), or None."""
    complete = [name for name in checkpoints_in(output_dir) if is_complete_checkpoint(os.path.join(output_dir, name))]
    return os.path.join(output_dir, complete[-1]) if complete else None


def resume_request(value: str | bool | None) -> str | bool | None:
    """What a `resume_from_checkpoint` value asks for: None to start afresh (unset, or false: YAML's or any case of
    'false'), True for the newest complete checkpoint of output_dir (YAML's true or any case of 'true'), else the
    checkpoint folder it names."""
    if value is None or str(value).lower() == "false":
        return None
    return True if str(value).lower() == "true" else value


def resolve_resume(value: str | bool | None, output_dir: str, *, fresh_if_none: bool = False) -> str | None:
    """`resume_from_checkpoint` as Trainer.train takes it: a checkpoint folder, or None (`resume_request`); true is
    the newest complete checkpoint of `output_dir`, refused if it holds none. `fresh_if_none`: a folder holding no
    `checkpoint-N` at all starts afresh instead (a stage of a staged method that has not checkpointed yet)."""
    request = resume_request(value)
    if request is not True:
        return request
    newest = newest_complete_checkpoint(output_dir)
    if newest is None and not (fresh_if_none and not checkpoints_in(output_dir)):
        raise ValueError(
            f"resume_from_checkpoint={value} resumes the newest checkpoint of output_dir {output_dir!r}, but it holds "
            "no complete checkpoint-N; start without resume_from_checkpoint or point it at a checkpoint folder"
        )
    return newest


def refuse_other_run(output_dir: str, *, resuming: bool, overwrite: bool) -> None:
    """Refuse a fresh start in a folder holding another run's checkpoints, unless `overwrite` (they are deleted)."""
    checkpoints = checkpoints_in(output_dir)
    if checkpoints and not resuming and not overwrite:
        raise ValueError(
            f"output_dir {output_dir!r} holds another run's checkpoints ({', '.join(checkpoints)}); pass "
            "resume_from_checkpoint=True to continue that run, overwrite_output_dir=True to delete them and start "
            "anew, or choose another output_dir"
        )


def claim_output_dir(
    output_dir: str, *, resuming: bool, overwrite: bool, settings: dict[str, Any], leftovers: tuple[str, ...] = ()
) -> None:
    """Make `output_dir` this run's, or refuse to mix two runs in it.

    Args:
        resuming: the run continues from a checkpoint (the user said so).
        overwrite: the user allows deleting another run's checkpoints (and `leftovers`, e.g. a staging folder).
        settings: this run's settings (JSON), recorded; on resume, compared with the recorded ones.
    """
    record = os.path.join(output_dir, RUN_RECORD)
    checkpoints = checkpoints_in(output_dir)
    refuse_other_run(output_dir, resuming=resuming, overwrite=overwrite)
    if resuming:
        _warn_on_changed_settings(record, settings)
    elif checkpoints:
        for name in [*checkpoints, *leftovers]:
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
        logger.warning("overwrite_output_dir: deleted the previous run's %s in %s", ", ".join(checkpoints), output_dir)
    elif os.path.exists(os.path.join(output_dir, FINAL_MODEL_MARK)):
        logger.warning(
            "output_dir %s holds a saved model of an earlier run; this run's final save replaces it", output_dir
        )
    if not (resuming and os.path.exists(record)):
        with open(record, "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=1, sort_keys=True)


def _warn_on_changed_settings(record: str, settings: dict[str, Any]) -> None:
    if not os.path.exists(record):
        return
    with open(record, encoding="utf-8") as f:
        recorded = json.load(f)
    changed = sorted(k for k in settings.keys() - _UNCOMPARED if recorded.get(k) != settings[k])
    if changed:
        logger.warning("resuming with settings that differ from the run's start: %s", ", ".join(changed))


@dataclass(frozen=True)
class RankState:
    """Trainer-side state every rank holds alike (a trainer's `_rank_states`), saved as `<rank>_<file>` JSON beside
    each checkpoint's RNG state and restored from rank 0's copy, so a run resumed on more ranks than it saved from
    gets it too. `what` names it in the warning when a checkpoint lacks it (one written before it existed)."""

    file: str
    what: str
    state_dict: Callable[[], dict[str, Any]]
    load_state_dict: Callable[[dict[str, Any]], None]


def save_rank_state(output_dir: str, rank: int, name: str, state: dict[str, Any]) -> None:
    """Write one rank's trainer-side state as `<rank>_<name>` JSON beside the RNG state of a checkpoint."""
    with open(os.path.join(output_dir, f"{rank}_{name}"), "w") as f:
        json.dump(state, f)


def load_rank_state(checkpoint: str, rank: int, name: str, what: str) -> dict[str, Any] | None:
    """The state `save_rank_state` wrote, or None with a warning naming `what` starts empty (an older checkpoint)."""
    path = os.path.join(checkpoint, f"{rank}_{name}")
    if not os.path.exists(path):
        logger.warning("%s has no %s (%s): it starts empty", checkpoint, what, path)
        return None
    with open(path) as f:
        return json.load(f)
