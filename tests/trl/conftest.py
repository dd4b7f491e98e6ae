import pytest
import torch
from datasets import Dataset

from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer
from prefix_rft.trl.cpu import cpu_trainer_kwargs

# Four questions, each with one 20-character demo (one token per character).
DEMOS = ["12+30 is 42. ans: 42", "17+18 is 35. ans: 35", "40+20 is 60. ans: 60", "25+25 is 50. ans: 50"]


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


def make_dataset(chat: bool = True) -> Dataset:
    rows = []
    for demo in DEMOS:
        question = demo.split(" is ")[0] + "="
        prompt = [{"role": "user", "content": question}] if chat else question
        rows.append({"prompt": prompt, "demos": [demo], "answer": demo.split(": ")[1]})
    return Dataset.from_list(rows)


def base_kwargs(tmp_path, **overrides) -> dict:
    """Settings shared by our trainer and stock GRPOTrainer in these tests."""
    kwargs = dict(
        **cpu_trainer_kwargs(tmp_path / "out", seed=0, max_steps=1),
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=24,
        learning_rate=1e-2,
        disable_tqdm=True,
        log_completions=False,
    )
    kwargs.update(overrides)
    return kwargs


def train_args(tmp_path, **overrides):
    from prefix_rft import PrefixRFTConfig

    return PrefixRFTConfig(**base_kwargs(tmp_path, **overrides))
