"""ReLIFT: the SFT step's prompts as RL rendered them, its failure buffer keyed per question, options it refuses."""

import json
import math
import re

import pytest
import torch

from prefix_rft.baselines import ReliftConfig, ReliftTrainer
from prefix_rft.baselines.relift import BUFFER_FILE
from prefix_rft.tasks.tokenizer import CHAT_TEMPLATE, build_tokenizer
from prefix_rft.trl.rollouts import Rollout, RowPlan
from tests.helpers import FixedRewards, base_kwargs, baseline_trainer, make_dataset

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
    _, tokens, entropy = trainer._sft_nll([{"prompt": [{"role": "user", "content": "2+2="}], "demo": "4"}])
    # <bos><user>2+2=<eos> then the generation prompt as TRL renders it with enable_thinking=False: <assistant>N;
    # then the demo and its EOS, the 2 tokens trained
    expected = ["<bos>", "<user>", "2", "+", "2", "=", "<eos>", "<assistant>", "N", "4", "<eos>"]
    assert seen == [[tokenizer.convert_tokens_to_ids(expected)]]
    assert tokens.item() == 2
    assert entropy.item() == 0  # no entropy bonus by default: not computed


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


def test_sft_entropy_is_summed_over_the_demo_tokens_when_its_bonus_is_on(tmp_path, model, tokenizer):
    # every logit 0: a uniform policy over V tokens, so each of the 2 trained tokens ("4", EOS) has entropy ln V and
    # NLL ln V
    trainer = baseline_trainer(
        ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0], relift_sft_entropy_coef=0.001
    )

    def uniform(module, args, output):
        output.logits = torch.zeros_like(output.logits)
        return output

    model.register_forward_hook(uniform)
    nll, tokens, entropy = trainer._sft_nll([{"prompt": [{"role": "user", "content": "2+2="}], "demo": "4"}])
    ln_v = math.log(model.config.vocab_size)
    assert tokens.item() == 2
    assert entropy.item() == pytest.approx(2 * ln_v) and nll.item() == pytest.approx(2 * ln_v)


def test_newest_first_buffer_puts_each_steps_failures_in_front_and_repeats_enter_again(tmp_path, model, tokenizer):
    # step 1 fails a then b; step 2 fails c then a again
    first, second = [("1+1=", "a"), ("2+2=", "b")], [("3+3=", "c"), ("1+1=", "a")]
    demos = {"a": "1+1 is 2", "b": "2+2 is 4", "c": "3+3 is 6"}
    expected = {(False, False): ["a", "b", "c"], (True, False): ["c", "a", "b"], (True, True): ["c", "a", "a", "b"]}
    for (newest, repeats), order in expected.items():
        options = {
            "relift_buffer_order": "newest_first" if newest else "oldest_first",
            "relift_buffer_repeats": repeats,
        }
        trainer = baseline_trainer(ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0], **options)
        for step in (first, second):
            trainer._after_rollout(*failed_batch(step, [demos[row_id] for _, row_id in step]))
        assert [item["key"] for item in trainer.relift_buffer] == [f"id:{q}" for q in order]


def load_buffer(trainer, tmp_path, buffer: list[dict]) -> None:
    """Resume `trainer` from a checkpoint holding only `buffer` as its ReLIFT state."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / f"0_{BUFFER_FILE}").write_text(json.dumps({"buffer": buffer, "sft_steps": 0}))
    trainer._load_rng_state(str(checkpoint))


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_buffer_keyed_by_prompt_json_is_rekeyed_so_its_question_is_not_buffered_twice(tmp_path, model, tokenizer):
    # a checkpoint from before question_key keyed "12+30=" by its prompt's JSON; an item keyed "id:b" (the current
    # form) is kept as it is, though the item holds no id
    trainer = baseline_trainer(ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0])
    old = {"key": '[{"role": "user", "content": "12+30="}]', "prompt": chat("12+30="), "demo": "12+30 is 42"}
    current = {"key": "id:b", "prompt": chat("1+1="), "demo": "1+1 is 2"}
    load_buffer(trainer, tmp_path, [old, current])
    # the same two questions fail again: neither enters a second time
    trainer._after_rollout(*failed_batch([("12+30=", None), ("1+1=", "b")], ["12+30 is 42", "1+1 is 2"]))
    assert [item["demo"] for item in trainer.relift_buffer] == ["12+30 is 42", "1+1 is 2"]
    assert trainer.relift_buffer[1]["key"] == "id:b"


def test_a_resumed_buffer_keeps_its_repeats(tmp_path, model, tokenizer):
    # relift_buffer_repeats buffered question a twice; the checkpoint's buffer is restored as it was
    trainer = baseline_trainer(
        ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0], relift_buffer_repeats=True
    )
    item = {"key": "id:a", "prompt": chat("1+1="), "demo": "1+1 is 2"}
    other = {"key": "id:b", "prompt": chat("2+2="), "demo": "2+2 is 4"}
    load_buffer(trainer, tmp_path, [item, other, item])
    assert [entry["key"] for entry in trainer.relift_buffer] == ["id:a", "id:b", "id:a"]


def test_a_buffer_keyed_by_prompt_json_takes_the_id_of_its_training_row(tmp_path, model, tokenizer):
    # the training rows have ids q0..q3; the old item of "17+18=" (row q1) becomes question q1
    args = ReliftConfig(**base_kwargs(tmp_path))
    dataset = make_dataset().add_column("id", ["q0", "q1", "q2", "q3"])
    trainer = ReliftTrainer(
        model=model, reward_funcs=[FixedRewards([0.0])], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    old = {"key": '[{"role": "user", "content": "17+18="}]', "prompt": chat("17+18="), "demo": "17+18 is 35"}
    load_buffer(trainer, tmp_path, [old])
    assert trainer.relift_buffer[0]["key"] == "id:q1"
    trainer._after_rollout(*failed_batch([("17+18=", "q1"), ("12+30=", "q0")], ["17+18 is 35", "12+30 is 42"]))
    assert [item["demo"] for item in trainer.relift_buffer] == ["17+18 is 35", "12+30 is 42"]


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


def test_relift_refuses_a_negative_sft_entropy_bonus(tmp_path):
    with pytest.raises(ValueError, match=re.escape("relift_sft_entropy_coef must be >= 0 (a bonus), got -0.001")):
        ReliftConfig(**base_kwargs(tmp_path, relift_sft_entropy_coef=-0.001))


def test_sft_step_subtracts_the_weighted_entropy_from_the_nll(tmp_path, model, tokenizer):
    # With w the first weight: NLL sum 2 sum(w), entropy sum sum(w), 4 tokens, coefficient 0.5, so the objective is
    # (2 - 0.5) sum(w) / 4 and every element of w gets the gradient 0.375 (0.625 if the bonus were added, 0.25
    # without its coefficient); no clipping at 1e9
    options = {"relift_sft_entropy_coef": 0.5, "relift_sft_max_grad_norm": 1e9}
    trainer = baseline_trainer(ReliftTrainer, ReliftConfig, tmp_path, model, tokenizer, [0.0], **options)
    weight = next(p for p in model.parameters() if p.requires_grad)
    trainer._sft_nll = lambda share: (2 * weight.sum(), torch.tensor(4.0), weight.sum())
    seen = []

    class Recorder:  # stands in for the SFT optimizer: records the gradient it would step with
        def step(self):
            seen.append(weight.grad.clone())

        def zero_grad(self, set_to_none=True):
            pass

    trainer._relift_optimizer = Recorder
    trainer._sft_step([{"prompt": chat("1+1="), "demo": "1+1 is 2"}])
    assert torch.allclose(seen[0], torch.full_like(weight, 0.375))
