"""Setup checks of `prefix-rft train`: every path, file and structured option, before the model loads.

`read_yaml` and `check_command_line` run before TRL's parser (the YAML recipe, the types of its values, the options
holding JSON or a mapping), `check_paths` after it (model, checkpoint, dataset and output paths; scheduler and
model-loading keys), `check_hub_model` when the model is to load, `check_dataset_format` on the first row once the
data is read. Each raises `SetupError` naming the option or file; `prefix-rft train` prints it
(prefix_rft/setup_errors.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from prefix_rft.data.annotations import is_instance, runtime_types, type_names
from prefix_rft.data.loading import check_local_source, looks_local
from prefix_rft.setup_errors import SetupError, blame, check_output_dir
from prefix_rft.trl.run_dir import (
    STATE_FILE,
    checkpoints_in,
    is_complete_checkpoint,
    refuse_other_run,
    resume_request,
)

# Options whose value is a mapping, given inline as JSON (transformers' `_VALID_DICT_FIELDS` of the config); those
# of PATH_OR_JSON may name a JSON file instead.
PATH_OR_JSON = ("accelerator_config", "fsdp_config", "deepspeed")
# Fields each `dataset_format` reads from a row (`data.from_luffy` and `data.validate_rows`).
FORMAT_FIELDS = {"prefix_rft": ("prompt", "answer"), "luffy": ("prompt", "target", "reward_model")}
# A saved tokenizer writes one of these; TRL loads it from the model's folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def read_yaml(argv: list[str]) -> dict[str, Any]:
    """The mapping of the `--config FILE` YAML of `argv`, or {} without one; read once, by `prefix-rft train`, for
    the method (recipes/method_choice.py), `check_command_line` and the parser (train_setup.parse_recipe)."""
    if "--config" not in argv:
        return {}
    at = argv.index("--config")
    if at + 1 >= len(argv):
        raise SetupError("--config: give the path of a YAML file")
    return read_config(argv[at + 1])


def check_command_line(parser, argv: list[str], checked_by_config: type, config: dict[str, Any]) -> None:
    """The YAML `config` of `--config` (`read_yaml`: keys are known options, values of the fields' types) and every
    option holding JSON, as `parser` (a TrlParser) will see them; the fields of `checked_by_config` check their own
    types."""
    if "--config" in argv:
        check_keys(f"--config {argv[argv.index('--config') + 1]}", config, parser)
        check_value_types(config, parser, checked_by_config)
    check_structured_options(parser, options(argv), config)


def options(argv: list[str]) -> list[str]:
    """`argv` without its `--config FILE` (the first, as TrlParser takes it): the options given on the command line."""
    if "--config" not in argv:
        return argv
    at = argv.index("--config")
    return argv[:at] + argv[at + 2 :]


def read_config(path: str) -> dict[str, Any]:
    """The mapping of a YAML recipe; refuses a missing file, bad YAML (with PyYAML's line and column) and anything
    but a mapping (`check_keys` checks its keys)."""
    where = f"--config {path}"
    file = Path(path)
    if not file.exists():
        raise SetupError(f"{where}: no such file")
    if file.is_dir():
        raise SetupError(f"{where}: is a folder; give a YAML file")
    with blame(where, "cannot be read as UTF-8 text", OSError, UnicodeDecodeError):
        text = file.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        raise SetupError(yaml_error(where, error, text)) from error
    except yaml.YAMLError as error:
        raise SetupError(f"{where}: not valid YAML ({error})") from error
    if not isinstance(config, dict):
        got = "nothing (the file is empty)" if config is None else f"{type(config).__name__} {config!r:.60}"
        raise SetupError(f"{where}: expected a mapping of 'option: value' lines, got {got}")
    return config


def yaml_error(where: str, error: yaml.MarkedYAMLError, text: str) -> str:
    """`WHERE, line L, column C: not valid YAML (PROBLEM)`, from PyYAML's mark (0-based), with a hint for tabs."""
    mark = error.problem_mark or error.context_mark
    problem = "; ".join(part for part in (error.context, error.problem) if part) or "cannot be parsed"
    location = f"{where}, line {mark.line + 1}, column {mark.column + 1}" if mark else where
    line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
    if "\t" in line[: (mark.column + 1) if mark else 0]:
        hint = "; YAML indents with spaces, never tabs"
    elif line[:1].isspace() and "mapping values" in problem:
        hint = "; check the indentation: an option of the recipe starts in column 1"
    else:
        hint = ""
    return f"{location}: not valid YAML ({problem}){hint}"


def check_keys(where: str, config: dict, parser) -> None:
    """Every key names an option of `parser` (or is `env`, a mapping of environment variables)."""
    known = {action.dest for action in parser._actions} - {"help"}
    for key in config:
        if not isinstance(key, str):
            raise SetupError(f"{where}: key {key!r} ({type(key).__name__}) is not an option name")
    unknown = [key for key in config if key not in known and key != "env"]
    if unknown:
        close = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
        hints = [f"{key!r} (did you mean {match[0]!r}?)" if match else repr(key) for key, match in close.items()]
        raise SetupError(f"{where}: unknown option(s) {', '.join(hints)}; prefix-rft train --help lists them")
    env = config.get("env", {})
    if not isinstance(env, dict):
        raise SetupError(f"{where}: env must be a mapping of VARIABLE: value, got {type(env).__name__}")
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name or "\0" in str(value):
            raise SetupError(f"{where}: env entry {name!r}: {value!r} is not an environment variable")


def check_value_types(config: dict, parser, checked_by_config: type) -> None:
    """A YAML value reaches the dataclass unconverted unless it is text (argparse converts text): refuse one whose
    type the field does not take. The fields of `checked_by_config` check their own types (PrefixRFTConfig), but take
    None as unset, so `null` (an empty value) is refused here for every field that needs a value."""
    own = {f.name for f in dataclasses.fields(checked_by_config)}
    for cls in parser.dataclass_types:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in config or f.name not in hints:
                continue
            allowed = runtime_types(hints[f.name])
            if config[f.name] is None and allowed and type(None) not in allowed and f.default is not None:
                raise SetupError(
                    f"{f.name} must be {type_names(allowed)}, got null (an empty value); give one or leave it out"
                )
            if cls is not checked_by_config and f.name not in own:
                check_value(f.name, config[f.name], hints[f.name])


def check_value(name: str, value: Any, annotation: Any) -> None:
    """`name must be T, got V (type)` for a value, or a list item, of a type the annotation does not allow."""
    allowed = runtime_types(annotation)
    if value is None or allowed is None:
        return
    if isinstance(value, str) and str not in allowed:
        return  # argparse converts text (and names the option if it cannot)
    if not is_instance(value, allowed):
        raise SetupError(f"{name} must be {type_names(allowed)}, got {value!r:.80} ({type(value).__name__})")
    lists = [a for a in (annotation, *get_args(annotation)) if get_origin(a) is list and get_args(a)]
    item_types = runtime_types(get_args(lists[0])[0]) if lists else None
    # A list of dataclasses (a mixture's `datasets`) is given as mappings: check_mixture checks those.
    if isinstance(value, list) and item_types and set(item_types) <= {str, int, float, bool}:
        for i, item in enumerate(value):
            if not is_instance(item, item_types):
                raise SetupError(
                    f"{name} item {i} must be {type_names(item_types)}, got {item!r:.80} ({type(item).__name__})"
                )


def check_structured_options(parser, argv: list[str], config: dict) -> None:
    """Every option whose value is a mapping: a mapping, JSON text of one, or (PATH_OR_JSON) a JSON file."""
    parser.set_defaults_with_config(**{k: v for k, v in config.items() if k != "env"})
    namespace, _ = parser.parse_known_args(argv)  # argparse refuses values of the wrong type by option name
    structured = {name for cls in parser.dataclass_types for name in getattr(cls, "_VALID_DICT_FIELDS", ())}
    for name in sorted(structured):
        value = getattr(namespace, name, None)
        if value is None or isinstance(value, dict):
            continue
        if not isinstance(value, str):
            raise SetupError(f"--{name}: expected a mapping, got {value!r:.80} ({type(value).__name__})")
        if name in PATH_OR_JSON and not value.lstrip().startswith("{"):
            check_json_file(f"--{name} {value}", value)
        else:
            parse_json_mapping(f"--{name}", value)
    check_mixture(namespace)


def parse_json_mapping(where: str, text: str) -> dict:
    """The mapping `text` holds as JSON; refuses bad JSON with json's own reason, or JSON that is not an object."""
    with blame(where, "not valid JSON", json.JSONDecodeError, advice='write a mapping such as {"key": 1}'):
        value = json.loads(text)
    if not isinstance(value, dict):
        raise SetupError(f"{where}: expected a JSON object {{...}}, got {type(value).__name__}")
    return value


def check_json_file(where: str, path: str) -> None:
    if not os.path.isfile(path):
        raise SetupError(f"{where}: no such file; give a JSON file or an inline JSON object")
    if path.endswith(".json"):
        with blame(where, "cannot be read as JSON", OSError, ValueError):
            parse_json_mapping(where, Path(path).read_text(encoding="utf-8"))


def check_mixture(namespace) -> None:
    """The `datasets` of a mixture: mappings of DatasetConfig's fields."""
    from trl.scripts.utils import DatasetConfig

    known = {f.name for f in dataclasses.fields(DatasetConfig)}
    for i, entry in enumerate(getattr(namespace, "datasets", None) or []):
        if not isinstance(entry, dict):
            raise SetupError(
                f"datasets item {i}: expected a mapping such as {{path: ..., split: train}}, got {entry!r:.80}"
            )
        unknown = sorted(set(map(str, entry)) - known)
        if unknown or "path" not in entry:
            raise SetupError(f"datasets item {i}: needs `path` and only fields of {sorted(known)}, has {list(entry)}")


def check_mixture_files(datasets: list) -> None:
    """The local data files a mixture's entries name (those read by a builder such as `json`; others are relative
    to a hub repo or folder) exist."""
    for i, entry in enumerate(datasets):
        builder = entry.path in ("json", "csv", "parquet", "arrow", "text")
        for file in local_files(entry.data_files) if builder else []:
            if not os.path.exists(file):
                raise SetupError(f"datasets item {i}: data_files {file}: no such file")


def local_files(data_files: Any) -> list[str]:
    """The plain local paths among a mixture entry's `data_files` (text, a list, or split -> either); patterns and
    URLs are left to `datasets`."""
    if isinstance(data_files, dict):
        return [f for value in data_files.values() for f in local_files(value)]
    files = data_files if isinstance(data_files, list) else [data_files]
    return [f for f in files if isinstance(f, str) and not any(c in f for c in "*?[") and "://" not in f]


def check_model_path(name: str) -> None:
    """A model meant as a local path exists and holds a saved model's config; hub ids are checked by
    `check_hub_model` when the model is to load."""
    where = f"--model_name_or_path {name}"
    path = Path(name).expanduser()
    if path.is_file():
        raise SetupError(f"{where}: is a file; give the folder of a saved model (config.json and weights)")
    if path.exists():
        if not (path / "config.json").is_file():
            raise SetupError(f"{where}: the folder holds no config.json, so it is no saved model")
        if not any((path / file).is_file() for file in TOKENIZER_FILES):
            raise SetupError(
                f"{where}: the folder holds no tokenizer ({', '.join(TOKENIZER_FILES[:2])}); save the tokenizer with "
                "the model (tokenizer.save_pretrained)"
            )
    elif looks_local(name):
        raise SetupError(f"{where}: no such folder; give a saved model's folder or a hub id of the form org/name")


def check_hub_model(name: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """The model's config loads (a hub id's from the cache when offline): a name that does not exist, or a broken
    config.json, is refused by option, not as transformers' traceback once the trainer is being built."""
    from transformers import AutoConfig

    local = Path(name).exists()
    problem = (
        "its config.json cannot be loaded" if local else "no such local folder, and it cannot be loaded from the hub"
    )
    with blame(f"--model_name_or_path {name}", problem):
        AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)


def check_resume(checkpoint: str | None, output_dir: str) -> None:
    """A checkpoint to resume from is a complete checkpoint folder (one holding its trainer_state.json)."""
    if not isinstance(resume_request(checkpoint), str):
        return  # unset, false, or true, which `resolve_resume` resolves (per stage for a method with an SFT stage)
    where = f"--resume_from_checkpoint {checkpoint}"
    found = checkpoints_in(output_dir)
    listing = f"output_dir {output_dir} holds {', '.join(found)}" if found else f"output_dir {output_dir} holds none"
    if not os.path.isdir(checkpoint):
        raise SetupError(
            f"{where}: no such checkpoint folder ({listing}); give a checkpoint folder, or true for the newest"
        )
    if not is_complete_checkpoint(checkpoint):
        raise SetupError(f"{where}: not a complete checkpoint, it holds no {STATE_FILE} ({listing})")


def check_dataset_source(name: str | None) -> None:
    """A local dataset path exists, has a format we read and (a folder) holds data files; hub ids are left to load."""
    if name is None or name == "embedded":
        return
    try:
        check_local_source(name)
    except ValueError as error:
        raise SetupError(f"--dataset_name {error}") from error


def check_scheduler_kwargs(scheduler: str, kwargs: dict | None) -> None:
    """`lr_scheduler_kwargs` names only arguments its scheduler takes (else a TypeError at the first step)."""
    import inspect

    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    if not kwargs or str(scheduler) not in {t.value for t in SchedulerType}:
        return
    parameters = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(scheduler)]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    settable = [name for name in parameters if name not in ("optimizer", "num_warmup_steps", "num_training_steps")]
    unknown = sorted(set(kwargs) - set(settable))
    if unknown:
        raise SetupError(
            f"--lr_scheduler_kwargs: the {scheduler} schedule takes no {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(settable) or 'nothing'}"
        )


def check_model_dtype(kwargs: dict | None) -> None:
    """A `dtype` in `model_init_kwargs` is one torch has (or 'auto'), refused now rather than when the model loads."""
    import torch

    dtype = (kwargs or {}).get("dtype")
    if isinstance(dtype, str) and dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise SetupError(
            f"--model_init_kwargs: dtype {dtype!r} is not a torch dtype; use auto, float32, bfloat16 or float16"
        )


def check_paths(args) -> None:
    """Every path of a parsed `prefix-rft train` (a TrainArguments): model, checkpoint, dataset, output folder; and
    the mappings whose keys only the first step would refuse."""
    model, config, script = args.model, args.config, args.script
    check_scheduler_kwargs(
        getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type), config.lr_scheduler_kwargs
    )
    check_model_dtype(config.model_init_kwargs if isinstance(config.model_init_kwargs, dict) else None)
    if model.model_name_or_path not in ("embedded-base", "embedded-random"):
        check_model_path(model.model_name_or_path)
    check_resume(config.resume_from_checkpoint, config.output_dir)
    check_dataset_source(script.dataset_name)
    check_mixture_files(args.mixture.datasets)
    check_output_dir("--output_dir", config.output_dir)
    refuse_other_run(
        config.output_dir, resuming=config.resume_from_checkpoint is not None, overwrite=config.overwrite_output_dir
    )


def check_dataset_format(dataset, fmt: str, source: str) -> None:
    """Refuse a `dataset_format` whose fields the first row lacks, saying which format the row fits."""
    if len(dataset) == 0 or fmt not in FORMAT_FIELDS:
        return
    row = dataset[0]
    missing = [f for f in FORMAT_FIELDS[fmt] if f not in row]
    if fmt == "luffy" and not missing and not isinstance(row["reward_model"], dict):
        missing = ["reward_model.ground_truth"]
    if not missing:
        return
    fits = [other for other, fields in FORMAT_FIELDS.items() if all(f in row for f in fields)]
    advice = (
        f"it fits --dataset_format {fits[0]}"
        if fits
        else "it fits no format: "
        + "; ".join(f"{other} reads {', '.join(fields)}" for other, fields in FORMAT_FIELDS.items())
    )
    raise SetupError(
        f"--dataset_format {fmt} expects fields {', '.join(FORMAT_FIELDS[fmt])} in every row, but the first row of "
        f"{source} has {', '.join(map(str, row))} (no {', '.join(missing)}); {advice}"
    )
