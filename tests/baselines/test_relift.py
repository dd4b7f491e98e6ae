"""ReLIFT: the SFT step's prompts as RL rendered them, its failure buffer keyed per question, options it refuses."""

import re

import pytest
import torch

from prefix_rft.baselines import ReliftConfig, ReliftTrainer
from prefix_rft.tasks.tokenizer import CHAT_TEMPLATE, build_tokenizer
from prefix_rft.trl.rollouts import Rollout, RowPlan
from tests.helpers import base_kwargs, baseline_trainer

# The task template, except that the generation prompt ends in `N` when `enable_thinking` is passed as False.
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if add_generation_prompt %}{{- '<assistant>' }}{%- endif %}",
    "{%- if add_generation_prompt %}{{- '<assistant>' }}"
    "{%- if enable_thinking is defined and not enable_thinking %}{{- 'N' }}{%- endif %}{%- endif %}",
)


def test_sft_step_renders_prompts_with_the_chat_template_kwargs(tmp_path, model):
    tokenizer = build_tokenizer()  # not the session fixture: its template is changed here
    tokenizer.chat_template = THINKING_TEMPLATE
    trainer = baseline_trainer(
        ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0], chat_template_kwargs={"enable_thinking": False}
    )
    seen = []  # the input ids of every forward

    def record(module, args, kwargs):
        seen.append(kwargs["input_ids"].tolist())

    model.register_forward_pre_hook(record, with_kwargs=True)
    _, tokens = trainer._sft_nll([{"prompt": [{"role": "user", "content": "2+2="}], "demo": "4"}])
    # <bos><user>2+2=<eos> then the generation prompt as TRL renders it with enable_thinking=False: <assistant>N;
    # then the demo and its EOS, the 2 tokens trained
    expected = ["<bos>", "<user>", "2", "+", "2", "=", "<eos>", "<assistant>", "N", "4", "<eos>"]
    assert seen == [[tokenizer.convert_tokens_to_ids(expected)]]
    assert tokens.item() == 2


def failed_batch(prompts_and_ids: list[tuple[str, str | None]], demos: list[str]) -> tuple[list[dict], Rollout]:
    """Groups of 8 rows, one per (prompt, id), each with its demo; every reward 0, so every group failed."""
    inputs = []
    for (prompt, row_id), demo in zip(prompts_and_ids, demos, strict=True):
        inputs += [{"prompt": [{"role": "user", "content": prompt}], "demos": [demo], "id": row_id}] * 8
    rollout = Rollout(rows=[RowPlan() for _ in inputs], prompts=[x["prompt"] for x in inputs], schedule_step=0)
    rollout.rewards = torch.zeros(len(inputs))
    return inputs, rollout


def test_two_questions_with_equal_prompts_both_enter_the_buffer(tmp_path, model, tokenizer):
    # rows with ids 'a' and 'b' ask the same text with different demos: two questions, as the per-question state has
    # them (question_key), so both failures are buffered; the same question failing again is not added twice
    trainer = baseline_trainer(ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0])
    trainer._after_rollout(*failed_batch([("1+1=", "a"), ("1+1=", "b")], ["1+1 is 2", "one and one: 2"]))
    trainer._after_rollout(*failed_batch([("1+1=", "a"), ("2+2=", None)], ["1+1 is 2", "2+2 is 4"]))
    assert [item["demo"] for item in trainer.relift_buffer] == ["1+1 is 2", "one and one: 2", "2+2 is 4"]


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("num_hybrid", 1, "ReLIFT's RL rollouts are all on-policy"),
        # PrefixRFTConfig's rule for num_hybrid=0
        ("prefix_ratio_decay_steps", 5, "num_hybrid=0 has no hybrid rows"),
        ("prefix_placement", "prompt", "num_hybrid=0 has no hybrid rows"),
        ("prefix_success_target", 0.5, "num_hybrid=0 has no hybrid rows"),
        ("prefix_entropy_keep_fraction", 0.5, "num_hybrid=0 has no hybrid rows"),
        ("prefix_advantage", "paper", "num_hybrid=0 has no hybrid rows"),
        ("prefix_seed", 3, "num_hybrid=0 has no hybrid rows"),
    ],
)
def test_relift_refuses_options_of_hybrid_rows_by_name(tmp_path, name, value, reason):
    message = f"{name}={value!r} is not used by ReliftConfig: {reason}"
    with pytest.raises(ValueError, match=re.escape(message)):
        ReliftConfig(**base_kwargs(tmp_path, **{name: value}))
