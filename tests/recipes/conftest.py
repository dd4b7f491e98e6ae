"""`user_module`: a user's reward module importable from the working directory, as under `trl grpo`."""

from pathlib import Path

import pytest

USER_CODE = Path(__file__).with_name("user_code")


@pytest.fixture
def user_module(monkeypatch):
    """`my_module` importable, as a user's module in the working directory is under `trl grpo`."""
    monkeypatch.syspath_prepend(str(USER_CODE))
    import my_module

    my_module.CALLS.clear()
    return my_module
