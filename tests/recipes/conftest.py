"""Share the tiny model and tokenizer fixtures of the adapter tests."""

from ..trl.conftest import model, tokenizer  # noqa: F401
