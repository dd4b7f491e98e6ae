import pytest
import torch

from .tiny_model import save_tiny_model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The 2 CPU cores are shared with the verifier workers and other jobs; two intra-op threads then run ~10x
    slower than one (measured), so these tests use one and restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))
