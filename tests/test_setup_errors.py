"""The one wrapper of bad input at setup: a library's exception named by option or file, printed without a
traceback unless the user asks for it."""

import pytest

from prefix_rft.setup_errors import (
    DEBUG_ENV,
    SetupError,
    blame,
    check_output_dir,
    check_output_file,
    reports_setup_errors,
    setup_stage,
    vllm_installed,
)


def test_blame_names_where_what_and_the_library_reason():
    with pytest.raises(SetupError) as error, blame("--x FILE", "cannot be read", OSError, advice="give another"):
        raise OSError("disk\n  full")
    assert str(error.value) == "--x FILE: cannot be read (disk full); give another"


def test_blame_leaves_other_exceptions_alone():
    with pytest.raises(TypeError), blame("--x", "cannot be read", OSError):
        raise TypeError("a bug, not bad input")


@reports_setup_errors("prefix-rft thing")
def command(error: Exception | None) -> int:
    with setup_stage():
        if error is not None:
            raise error
    return 0


def test_a_value_error_at_setup_is_printed_with_exit_2(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert command(ValueError("row 3: field 'answer' is missing")) == 2
    assert capsys.readouterr().err == "prefix-rft thing: row 3: field 'answer' is missing\n"
    assert command(None) == 0


def test_the_debug_variable_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(SetupError, match="row 3"):
        command(ValueError("row 3"))


def test_an_error_outside_setup_is_not_bad_input():
    @reports_setup_errors("prefix-rft thing")
    def training() -> int:
        raise ValueError("reward of row 0 is not finite")

    with pytest.raises(ValueError, match="not finite"):
        training()


def test_output_paths(tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    check_output_dir("--out", tmp_path / "new" / "deeper")  # creatable: nothing is created
    assert not (tmp_path / "new").exists()
    check_output_file("--out", tmp_path / "new.jsonl")
    with pytest.raises(SetupError, match=f"^--out {file}: is a file, not a folder"):
        check_output_dir("--out", file)
    with pytest.raises(SetupError, match=f"^--out {file / 'x'}: cannot be created, {file} is a file, not a folder$"):
        check_output_dir("--out", file / "x")
    with pytest.raises(SetupError, match=f"^--out {tmp_path}: is a folder; give the path of a file to write$"):
        check_output_file("--out", tmp_path)


def test_vllm_installed_asks_for_the_vllm_package_only(monkeypatch):
    import importlib.util

    asked = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: asked.append(name))  # None: not found
    assert vllm_installed() is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: asked.append(name) or object())
    assert vllm_installed() is True
    assert asked == ["vllm", "vllm"]
