"""The tiny model and its tokenizer, shared by every test that trains (tests/helpers.py builds their data)."""

import pytest
import torch

from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    return build_model(tokenizer, "test")


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    """The tiny model and tokenizer saved where vLLM (or its double) loads them from."""
    torch.manual_seed(0)
    path = tmp_path / "model"
    build_model(tokenizer, "test").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
