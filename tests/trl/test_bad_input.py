"""The trainer refuses bad training rows when it is built, naming row and field, before any step is spent."""

import re

import pytest
from datasets import Dataset

from prefix_rft import PrefixRFTTrainer
from prefix_rft.tasks import task_reward
from prefix_rft.verify import math_reward
from tests.helpers import make_dataset, train_args


def build(tmp_path, model, tokenizer, rows, reward=task_reward, **overrides):
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[reward],
        args=train_args(tmp_path, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def refused(message, *args, **kwargs):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build(*args, **kwargs)


def rows_with(index, **changes):
    rows = make_dataset().to_list()
    rows[index] = {**rows[index], **changes}
    return rows


def test_unknown_chat_role_is_refused_before_the_template_sees_it(tmp_path, model, tokenizer):
    # refused at validation, before the embedded template raises "unknown role: robot" from Jinja at the first step
    rows = rows_with(2, prompt=[{"role": "robot", "content": "2+2="}])
    refused(
        "row 2: field 'prompt' message 0 has role 'robot'; expected one of system, user, assistant, tool",
        tmp_path,
        model,
        tokenizer,
        rows,
    )


def test_message_content_none_is_refused(tmp_path, model, tokenizer):
    rows = rows_with(1, prompt=[{"role": "user", "content": None}])
    refused("row 1: field 'prompt' message 0 has content None; expected text", tmp_path, model, tokenizer, rows)


def test_prompt_longer_than_the_model_context_is_refused_with_max_prompt_length_unset(tmp_path, model, tokenizer):
    # <bos><user> + 1,000,000 characters (one token each) + <eos><assistant> = 1,000,004 tokens; the test model has
    # 256 positions (tokenizer: 512), so 256 - max_completion_length 24 = 232 are left for a prompt
    rows = rows_with(3, prompt=[{"role": "user", "content": "x" * 1_000_000}])
    refused(
        "row 3: field 'prompt' has 1000004 tokens, more than 232 (the model's context of 256 positions less "
        "max_completion_length=24); shorten the prompt or drop the row",
        tmp_path,
        model,
        tokenizer,
        rows,
    )


def test_prompt_over_max_prompt_length_is_refused_for_rows_without_demos_too(tmp_path, model, tokenizer):
    # fit_prefix_to_prompt raises for any prompt over max_prompt_length at the step that draws it; "12+30=" renders as
    # <bos><user>12+30=<eos><assistant>: 10 tokens > 8
    rows = rows_with(0, demos=[])
    refused(
        "row 0: field 'prompt' has 10 tokens, more than 8 (max_prompt_length=8); shorten the prompt or drop the row",
        tmp_path,
        model,
        tokenizer,
        rows,
        max_prompt_length=8,
    )


def test_list_answer_is_refused_for_the_task_reward(tmp_path, model, tokenizer):
    # task_reward(answer: list[str]) compares str(answer): ['42'] never equals "42", so every reward would be 0
    rows = [{**row, "answer": [row["answer"]]} for row in make_dataset().to_list()]
    refused(
        "row 0: field 'answer' is of type list, but reward function 'task_reward' grades str",
        tmp_path,
        model,
        tokenizer,
        rows,
    )


def test_dict_answer_is_refused_for_the_math_reward(tmp_path, model, tokenizer):
    rows = [{**row, "answer": {"value": row["answer"]}} for row in make_dataset().to_list()]
    refused(
        "row 0: field 'answer' is of type dict, but reward function 'math_reward' grades str or int or float",
        tmp_path,
        model,
        tokenizer,
        rows,
        reward=math_reward,
    )


@pytest.mark.parametrize("column", ["image", "images"])
def test_image_prompts_are_refused_rather_than_trained_without_their_images(tmp_path, model, tokenizer, column):
    rows = [{**row, column: None} for row in make_dataset().to_list()]
    refused(
        f"PrefixRFTTrainer does not support image prompts (train_dataset has an {column!r} column): its prefix "
        "generation and loss pass no image inputs to the model; use trl's GRPOTrainer",
        tmp_path,
        model,
        tokenizer,
        rows,
    )


def test_fsdp_that_accelerate_leaves_off_is_refused_not_trained_unsharded(tmp_path, model, tokenizer, monkeypatch):
    # accelerate turns FSDP on only for GPU-like devices: on CPU the run would silently train unsharded
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    message = (
        "FSDP was requested (--fsdp / ACCELERATE_USE_FSDP=true) but accelerate runs DistributedType.NO: it enables "
        "FSDP only on GPUs and other accelerators, so this run would train unsharded weights on every rank. On CPU "
        "use DeepSpeed ZeRO-3 (--deepspeed, with DS_ACCELERATOR=cpu; docs/scale.md) or drop --fsdp"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        PrefixRFTTrainer(
            model=model,
            reward_funcs=[task_reward],
            args=train_args(tmp_path),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
        )
