"""Property-based: any YAML recipe, however malformed, either parses through `prefix-rft train`'s real parser and setup
checks, or is refused with one clean `prefix-rft train: ...` line and exit 2; never a traceback.

Keys are real option names, unknown text and non-text keys; values of every YAML type (null, booleans, numbers with
NaN and infinities, text that looks like JSON, paths or options, lists, mappings); and the text itself is mutated
(tabs, indents, stray YAML syntax, cut files). The harness stops where the model would load (`parse_args`: the YAML,
TRL's parser, the config's own checks and the path checks), so it loads nothing and stays fast.
"""

import os
import re
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trl import DatasetMixtureConfig, TrlParser

from prefix_rft.recipes.train import ModelArguments, TrainScriptArguments, parse_args
from prefix_rft.setup_errors import DEBUG_ENV, reports_setup_errors, setup_stage
from prefix_rft.trl.config import PrefixRFTConfig
from tests.helpers import SMALL

HARNESS = settings(
    max_examples=60,
    derandomize=True,  # a fixed seed: CI stays deterministic
    database=None,
    deadline=timedelta(seconds=5),  # a hang fails the example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Options whose value starts more than parsing: `env` writes the process environment, `deepspeed`, `fsdp`,
# `fsdp_config` and `accelerator_config` set up distributed back ends; their values are checked by name elsewhere.
SIDE_EFFECTS = {"env", "deepspeed", "fsdp", "fsdp_config", "accelerator_config", "local_rank", "ddp_backend"}
OPTIONS = sorted(
    {
        action.dest
        for action in TrlParser((TrainScriptArguments, PrefixRFTConfig, ModelArguments, DatasetMixtureConfig))._actions
    }
    - SIDE_EFFECTS
    - {"help"}
)
CLEAN = re.compile(r"prefix-rft train: (error: )?\S.*")

texts = st.one_of(
    st.text(max_size=10),
    st.sampled_from(['{"a": 1,}', '{"a": 1}', "[1, 2]", "./nope", "org/name", "true", "none", "-1", "1e-3", "auto"]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True), texts
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=5,
)
odd_keys = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())


@st.composite
def mappings(draw) -> dict:
    """Up to four real options with values of any type, and now and then a key that is no option."""
    mapping = draw(st.dictionaries(st.sampled_from(OPTIONS), values, max_size=4))
    if draw(st.integers(0, 9)) == 0:
        mapping[draw(odd_keys)] = draw(values)
    return mapping


@reports_setup_errors("prefix-rft train")
def check_only(argv: list[str]) -> int:
    """`prefix-rft train` up to the model load: everything that reads the recipe."""
    with setup_stage():
        parse_args(argv)
    return 0


def parses_or_is_refused_cleanly(tmp_path, capsys, text: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    environ = dict(os.environ)
    try:
        code = check_only(["--config", str(path)])
    except SystemExit as exit_:  # argparse refuses a value it cannot convert, by option name
        code = exit_.code
    finally:
        os.environ.clear()
        os.environ.update(environ)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert code == 2
        assert CLEAN.fullmatch(err.strip().splitlines()[-1]), err


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


@HARNESS
@given(overrides=mappings())
def test_any_yaml_values_parse_or_are_refused_by_name(tmp_path, capsys, overrides):
    recipe = yaml.safe_load(SMALL.format(out=tmp_path / "out"))
    recipe.update(overrides)
    parses_or_is_refused_cleanly(tmp_path, capsys, yaml.safe_dump(recipe, allow_unicode=True))


@st.composite
def mutated_recipes(draw) -> str:
    """The small recipe with up to three edits: a tab or spaces before a line, a stray YAML character, a cut."""
    lines = SMALL.format(out="OUT").splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["tab", "indent", "char", "cut"]))
        if edit == "tab":
            lines[i] = "\t" + lines[i]
        elif edit == "indent":
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
        elif edit == "char":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?\t"))) + lines[i][at:]
        else:
            lines = lines[:i] + [lines[i][: draw(st.integers(0, len(lines[i])))]]
    return "".join(lines)


@HARNESS
@given(text=mutated_recipes())
def test_any_broken_yaml_text_is_refused_with_file_and_line(tmp_path, capsys, text):
    parses_or_is_refused_cleanly(tmp_path, capsys, text.replace("OUT", str(tmp_path / "out")))
