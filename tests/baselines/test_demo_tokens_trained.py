"""`demo/trained_tokens`: the demo tokens each method's loss trains (the protocol's `inputs.demo_tokens_trained`)."""

import pytest
import torch

from prefix_rft.baselines import (
    ChordTrainer,
    HptConfig,
    HptTrainer,
    LuffyConfig,
    LuffyTrainer,
    ReliftConfig,
    ReliftTrainer,
    RLWithSFTTrainer,
    SrftTrainer,
    TrapoTrainer,
)
from prefix_rft.trl import PrefixRFTTrainer
from tests.helpers import baseline_trainer, loss_batch

# Three rows of 4 tokens: row 0 starts with 2 demo tokens, row 1 with 3, row 2 is a rollout. Entropy selection kept
# the first demo token of row 0 and the last two of row 1 (keep is True on every non-demo token).
PREFIX = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]).bool()
KEEP = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]).bool()


def trained(trainer_cls, **rows) -> list[list[int]]:
    trainer = object.__new__(trainer_cls)  # the hook reads only class attributes and the batch
    return trainer._trained_demo_mask(loss_batch(PREFIX, **rows), KEEP).int().tolist()


@pytest.mark.parametrize("trainer_cls", [PrefixRFTTrainer, LuffyTrainer])
def test_an_advantage_weighted_demo_trains_the_tokens_entropy_selection_keeps(trainer_cls):
    assert trained(trainer_cls) == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]  # 3 of the 5 demo tokens


@pytest.mark.parametrize("trainer_cls", [RLWithSFTTrainer, ChordTrainer, SrftTrainer])
def test_an_sft_term_over_the_demo_trains_every_demo_token(trainer_cls):
    assert trained(trainer_cls) == PREFIX.int().tolist()  # all 5, whatever entropy selection kept


def test_hpt_trains_the_demo_tokens_of_its_sft_questions_only():
    rows = {"hpt_sft_rows": torch.tensor([False, True, False]), "hpt_rl_rows": torch.tensor([False, False, True])}
    assert trained(HptTrainer, **rows) == [[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert sum(map(sum, trained(HptTrainer))) == 0  # evaluation batches: no switch, no demo trained


def test_trapo_trains_the_prefix_tokens_of_its_trust_region_sft_rows_only():
    assert trained(TrapoTrainer, trapo_sft_rows=torch.tensor([True, False, False])) == [
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def test_hpt_logs_no_trained_demo_token_for_solved_questions(tmp_path, model, tokenizer):
    # every rollout scores 1: both questions are RL, so their demo slots are in the rows but not trained
    trainer = baseline_trainer(HptTrainer, HptConfig, tmp_path, model, tokenizer, [1.0])
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["hpt/rl_questions"] == 2.0 and log["prefix/demo_tokens"] > 0
    assert log["demo/trained_tokens"] == 0.0


def test_relift_logs_the_demo_tokens_of_its_sft_step(tmp_path, model, tokenizer):
    trainer = baseline_trainer(ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0], relift_sft_batch=2)
    prompt = [{"role": "user", "content": "2+2="}]
    trainer.relift_buffer = [{"key": "a", "prompt": prompt, "demo": "4"}, {"key": "b", "prompt": prompt, "demo": "12"}]
    trainer.maybe_sft_step()
    # "4" and its EOS, then "1", "2" and its EOS: 5 tokens trained
    assert trainer._metrics["train"]["relift/sft_demo_tokens"] == [5.0]


def test_a_steps_trained_demo_tokens_are_logged_whole_under_gradient_accumulation(tmp_path, model, tokenizer):
    # 2 micro-batches of 16 rows (2 groups each) per optimizer step: the 4 questions' whole demos, 20 tokens and the
    # EOS each, all trained by LUFFY: 4 x 21 = 84 for the step (TRL averages the micro-batches' logged values)
    overrides = dict(gradient_accumulation_steps=2)
    trainer = baseline_trainer(LuffyTrainer, LuffyConfig, tmp_path, model, tokenizer, [0.0], **overrides)
    trainer.train()
    assert trainer.state.log_history[0]["demo/trained_tokens"] == 84.0
