"""Helpers shared by the tests: the four-question dataset and settings of the tiny-model runs, reward functions with
fixed patterns, one generation batch, trainers built in one call, and the recipe tests' files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import yaml
from datasets import Dataset

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.cpu import cpu_trainer_kwargs
from prefix_rft.trl.loss import LossBatch
from prefix_rft.trl.rollouts import Rollout, RowPlan

if TYPE_CHECKING:
    from tests.trl.doubles.ddp_vllm_worker import WeightSnapshots


# Four questions, each with one 20-character demo (one token per character).
DEMOS = ["12+30 is 42. ans: 42", "17+18 is 35. ans: 35", "40+20 is 60. ans: 60", "25+25 is 50. ans: 50"]


def make_dataset(chat: bool = True) -> Dataset:
    """The four DEMOS questions (`12+30=`, ...) as rows: prompt (a chat, or text), demos, answer."""
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
    """`PrefixRFTConfig` of `base_kwargs`."""
    from prefix_rft import PrefixRFTConfig

    return PrefixRFTConfig(**base_kwargs(tmp_path, **overrides))


def text_of(completion):
    """A completion's text, whether a chat (one assistant message) or a string."""
    return completion[0]["content"] if isinstance(completion, list) else completion


class FixedRewards:
    """Reward function returning a fixed reward pattern per group of 8 (row order of the generation batch)."""

    __name__ = "fixed"

    def __init__(self, pattern):
        self.pattern = pattern

    def __call__(self, completions, **kwargs):
        return [self.pattern[i % len(self.pattern)] for i in range(len(completions))]


def prefix_or_easy(completions, answer, **kwargs):
    """1 for a completion that starts with its question's 25% demo prefix (5 characters, e.g. `12+30`), which the
    untrained model never writes by itself; 1 for every completion of the easy question 17+18 (answer 35)."""
    demos = {demo.split(": ")[1]: demo for demo in DEMOS}
    return [float(a == "35" or text_of(c).startswith(demos[a][:5])) for c, a in zip(completions, answer, strict=True)]


def generate_batch(trainer):
    """One generation batch, as the trainer would produce it for the first optimizer step."""
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    return batch, trainer._generate_and_score_completions(batch)


def baseline_trainer(trainer_cls, config_cls, tmp_path, model, tokenizer, rewards, **overrides):
    """A baseline's trainer on `make_dataset()` with `base_kwargs` settings and the `rewards` pattern."""
    args = config_cls(**base_kwargs(tmp_path, **overrides))
    return trainer_cls(
        model=model,
        reward_funcs=[FixedRewards(rewards)],
        args=args,
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def budget_rollout() -> Rollout:
    """Three text-prompt rows to fit to a prompt budget: on-policy, a hybrid revealing 4 tokens, a full demo of 2."""
    rows = [
        RowPlan(),
        RowPlan(role="hybrid", revealed_ids=[5, 6, 7, 8], demo_len=8, ratio=0.5),
        RowPlan(role="full_demo", revealed_ids=[5, 6], demo_len=2, ratio=1.0),
    ]
    return Rollout(rows=rows, prompts=["q", "q", "q"], schedule_step=0)


def make_trainer(tmp_path, model, tokenizer, rewards=(0.0,), **overrides):
    """A `PrefixRFTTrainer` on `make_dataset()` with `train_args` settings and the `rewards` pattern."""
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards(list(rewards))],
        args=train_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def fix_forward(trainer, logps, entropies=None) -> None:
    """The policy forward returns these (B, T) log-probs and entropies, and no MoE aux loss."""
    logps = torch.tensor(logps, requires_grad=True)
    entropies = torch.zeros_like(logps) if entropies is None else torch.tensor(entropies)
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logps, entropies, None)


def loss_inputs(advantages, mask=None, **extra) -> dict:
    """A micro-batch with these (B, T) advantages; the token ids do not matter once the forward is fixed."""
    advantages = torch.tensor(advantages)
    mask = torch.ones_like(advantages, dtype=torch.long) if mask is None else torch.tensor(mask)
    rows = advantages.size(0)
    return {
        "prompt_ids": torch.ones(rows, 1, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.ones_like(mask),
        "completion_mask": mask,
        "advantages": advantages,
        **{key: torch.tensor(value) for key, value in extra.items()},
    }


def loss_batch(prefix_mask, mask=None, entropies=None, **inputs) -> LossBatch:
    """What the loss hooks see of a micro-batch with this (B, T) `prefix_mask`: every token in the loss unless `mask`
    says otherwise, zero entropies unless given, `inputs` the method's row fields (tensors), no DAPO divisor."""
    mask = torch.ones(prefix_mask.shape) if mask is None else mask
    entropies = torch.zeros(prefix_mask.shape) if entropies is None else entropies
    return LossBatch(inputs, mask, prefix_mask, entropies)


def train_loss(trainer, inputs) -> float:
    """The loss of one training micro-batch (no gradient accumulation)."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which these tests skip
    return trainer._compute_loss(trainer.model, inputs).item()


# TRL's VLLMClient needs `requests`, which neither TRL's nor this project's dependencies install.
needs_requests = pytest.mark.skipif(
    importlib.util.find_spec("requests") is None, reason="TRL's VLLMClient needs `requests` (pip install requests)"
)


def dataset_prompt_ids(tokenizer) -> list[list[int]]:
    """The chat template by hand: `<bos><user>{question}<eos><assistant>`, one token per character."""
    ids = tokenizer.convert_tokens_to_ids
    questions = [demo.split(" is ")[0] + "=" for demo in DEMOS]
    return [
        [tokenizer.bos_token_id, ids("<user>"), *ids(list(q)), tokenizer.eos_token_id, ids("<assistant>")]
        for q in questions
    ]


def colocate_trainer(tmp_path, model_dir, tokenizer, **overrides) -> tuple[PrefixRFTTrainer, WeightSnapshots]:
    """A trainer generating with the colocated vLLM double (install it first), recording the weights it syncs."""
    from transformers import AutoModelForCausalLM

    # imported here: the double's worker script imports this module
    from tests.trl.doubles.ddp_vllm_worker import WeightSnapshots, length_reward

    snapshots = WeightSnapshots()
    trainer = PrefixRFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),  # colocate mode loads name_or_path = model_dir
        reward_funcs=[length_reward],
        args=train_args(tmp_path, max_steps=2, use_vllm=True, vllm_mode="colocate", **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
        callbacks=[snapshots],
    )
    return trainer, snapshots


# A `prefix-rft train` recipe of one short embedded-task run; format it with `out`.
SMALL = """\
model_name_or_path: embedded-random
model_size: test
dataset_name: embedded
embedded_train_rows: 16
output_dir: {out}
use_cpu: true
report_to: none
save_strategy: "no"
per_device_train_batch_size: 8
num_generations: 8
max_completion_length: 8
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """`rows` as JSON lines at `path`."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def short_rows(n: int) -> list[dict]:
    """`n` rows (prompt as a chat, one 20-token demo, answer) cycling through the adapter tests' four questions."""
    demos = [DEMOS[i % len(DEMOS)] for i in range(n)]
    return [{"prompt": [{"role": "user", "content": d[:6]}], "demos": [d], "answer": d[-2:]} for d in demos]


def write_yaml(path: Path, fields: dict) -> Path:
    """`fields` as a YAML recipe at `path`, in the given order."""
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path
