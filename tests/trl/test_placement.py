"""`prefix_placement='prompt'`: the revealed demo is a hint in the hybrid row's prompt (QuestA), not its completion.

Hand-derived expectations (tests/helpers.py: groups of 8, the hybrid in slot 7, 20-character demos, one token per
character): at step 0 the prefix ratio is 0.95, so the hint shows floor(0.95 * 20) = 19 demo characters after the
label "\\n\\n## Hint.\\n" (11 characters).
"""

import math

import pytest
from datasets import Dataset

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.placement import hint_prompts, with_hint
from tests.helpers import FixedRewards, generate_batch, make_dataset, text_of, train_args


def prompt_trainer(tmp_path, model, tokenizer, rewards, chat=True, **overrides) -> PrefixRFTTrainer:
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[rewards],
        args=train_args(tmp_path, prefix_placement="prompt", **overrides),
        train_dataset=make_dataset(chat=chat),
        processing_class=tokenizer,
    )


def prompt_text(tokenizer, out, row: int) -> str:
    """The row's prompt ids as the trainer stored them (left padding removed), decoded with special tokens."""
    ids = out["prompt_ids"][row][out["prompt_mask"][row].bool()].tolist()
    return tokenizer.decode(ids)


def question(batch, row: int) -> str:
    return text_of(batch[row]["prompt"])


def test_text_prompt_ids_end_with_the_hint_tokens(tmp_path, model, tokenizer):
    trainer = prompt_trainer(tmp_path, model, tokenizer, FixedRewards([0.0]), chat=False)
    batch, out = generate_batch(trainer)
    demo = batch[7]["demos"][0]
    # text prompt "<bos>12+30=" then the label's 11 tokens and the first 19 demo tokens, appended as they are
    hint = tokenizer.convert_tokens_to_ids(list("\n\n## Hint.\n" + demo[:19]))
    ids = out["prompt_ids"][7][out["prompt_mask"][7].bool()].tolist()
    assert ids[-len(hint) :] == hint
    assert prompt_text(tokenizer, out, 7) == "<bos>" + question(batch, 7) + "\n\n## Hint.\n" + demo[:19]
    assert prompt_text(tokenizer, out, 0) == "<bos>" + question(batch, 0)  # on-policy rows: the bare question


def test_chat_hint_ends_the_user_message_before_the_generation_prompt(tmp_path, model, tokenizer):
    trainer = prompt_trainer(tmp_path, model, tokenizer, FixedRewards([0.0]))
    batch, out = generate_batch(trainer)
    demo = batch[7]["demos"][0]
    # template: <bos><user>{content}<eos><assistant>, the hint at the end of the user's content
    expected = f"<bos><user>{question(batch, 7)}\n\n## Hint.\n{demo[:19]}<eos><assistant>"
    assert prompt_text(tokenizer, out, 7) == expected
    assert prompt_text(tokenizer, out, 6) == f"<bos><user>{question(batch, 6)}<eos><assistant>"


def test_hint_rows_have_no_prefix_tokens_and_generate_their_own_completion(tmp_path, model, tokenizer):
    trainer = prompt_trainer(tmp_path, model, tokenizer, FixedRewards([0.0]))
    batch, out = generate_batch(trainer)
    assert not out["prefix_mask"].any()  # nothing in any completion is a demo token
    for row in (7, 15):
        completion = tokenizer.decode(out["completion_ids"][row][out["completion_mask"][row].bool()].tolist())
        assert not completion.startswith(batch[row]["demos"][0][:19])
    # the revealed share is still logged: 19 of 20 demo tokens, shown in the prompt
    assert trainer._metrics["train"]["prefix/ratio_mean"][-1] == pytest.approx(19 / 20)
    assert trainer._metrics["train"]["prefix/token_fraction"][-1] == 0.0


def test_hint_row_gets_the_hybrid_continuation_advantage(tmp_path, model, tokenizer):
    # docs/fidelity.md#hint-placement with prefix_advantage="reference": on-policy rewards [1,0,0,1,0,0,0] ->
    # baseline 2/7 (the hint row's reward 1 stays out: 3/8 if it leaked in); the hint row gets the hybrid's
    # continuation advantage, r minus its singleton prefix group's mean 0 = 1.0, on every completion token; on-policy
    # rows 5/7 and -2/7
    trainer = prompt_trainer(tmp_path, model, tokenizer, FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1]))
    _, out = generate_batch(trainer)
    adv = out["advantages"]
    assert adv[7].unique().tolist() == pytest.approx([1.0])
    assert adv[0].unique().tolist() == pytest.approx([5 / 7])
    assert adv[1].unique().tolist() == pytest.approx([-2 / 7])


def test_paper_advantage_gives_the_hint_row_r_minus_the_group_mean(tmp_path, model, tokenizer):
    # prefix_advantage="paper": r - mean of all 8 rewards = 1 - 3/8 = 5/8 on every token
    trainer = prompt_trainer(
        tmp_path, model, tokenizer, FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1]), prefix_advantage="paper"
    )
    _, out = generate_batch(trainer)
    assert out["advantages"][7].unique().tolist() == pytest.approx([5 / 8])


def test_reward_functions_see_the_bare_question_and_the_models_own_completion(tmp_path, model, tokenizer):
    seen = {}

    def recording_reward(prompts, completions, **kwargs):
        seen.update(prompts=prompts, completions=completions)
        return [0.0] * len(completions)

    trainer = prompt_trainer(tmp_path, model, tokenizer, recording_reward)
    batch, out = generate_batch(trainer)
    ids = out["completion_ids"][7][out["completion_mask"][7].bool()].tolist()
    assert text_of(seen["completions"][7]) == tokenizer.decode(ids, skip_special_tokens=True)
    assert seen["prompts"][7] == batch[7]["prompt"]  # the dataset's prompt: no hint


def test_prompt_budget_cuts_the_hint_not_the_question(tmp_path, model, tokenizer):
    # chat prompt "<bos><user>12+30=<eos><assistant>" = 10 tokens; the hint adds 11 label + 19 demo tokens = 30.
    # max_prompt_length 30 leaves 20 for the hint: 11 label + 9 demo tokens, 10 demo tokens cut per hint row
    trainer = prompt_trainer(tmp_path, model, tokenizer, FixedRewards([0.0]), max_prompt_length=30)
    batch, out = generate_batch(trainer)
    demo = batch[7]["demos"][0]
    assert prompt_text(tokenizer, out, 7) == f"<bos><user>{question(batch, 7)}\n\n## Hint.\n{demo[:9]}<eos><assistant>"
    assert trainer._metrics["train"]["prefix/truncated_tokens"][-1] == 2 * 10


def test_config_refuses_an_unknown_placement(tmp_path):
    with pytest.raises(ValueError, match="prefix_placement='completion' is not supported"):
        train_args(tmp_path, prefix_placement="completion")


def test_with_hint_appends_to_the_last_user_message_and_refuses_other_roles():
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "1+2="}]
    assert with_hint(chat, " h") == [{"role": "system", "content": "s"}, {"role": "user", "content": "1+2= h"}]
    assert chat[1]["content"] == "1+2="  # the dataset's messages are not modified
    assert with_hint("1+2=", " h") == "1+2= h"
    with pytest.raises(ValueError, match="must end with a user message"):
        with_hint([{"role": "assistant", "content": "x"}], " h")


def test_default_placement_is_the_papers(tmp_path):
    assert train_args(tmp_path).prefix_placement == "response"


def test_completions_table_shows_the_hint_row_prompt_with_its_hint(tmp_path, model, tokenizer):
    trainer = prompt_trainer(tmp_path, model, tokenizer, FixedRewards([0.0]))
    batch, _ = generate_batch(trainer)
    logged = list(trainer._logs["prompt"])[-16:]
    demo = batch[7]["demos"][0]
    # the hybrid slot 7: the question, the label and the 19 demo characters the model was shown
    assert logged[7] == [{"role": "user", "content": question(batch, 7) + "\n\n## Hint.\n" + demo[:19]}]
    assert logged[6] == [{"role": "user", "content": question(batch, 6)}]  # on-policy rows as they were


def test_hint_prompts_add_each_hint_and_count_the_demo_tokens_cut():
    # A stand-in renderer appends a 0 label and at most 2 hint tokens (as if the prompt budget allowed 2). Row 0 has
    # no hint and keeps its ids; row 1 shows 2 of its 3 tokens (1 cut); row 2 shows its single token.
    seen = []

    def hinted_prompt(prompt, ids, hint):
        seen.append(prompt)
        return ids + [0] + hint[:2], len(hint[:2])

    prompt_ids, shown, cut = hint_prompts(["a", "b", "c"], [[1, 2], [3], [4, 5]], [[], [7, 8, 9], [6]], hinted_prompt)
    assert prompt_ids == [[1, 2], [3, 0, 7, 8], [4, 5, 0, 6]]
    assert (shown, cut) == ([0, 2, 1], 1)
    assert seen == ["b", "c"]  # only hint rows are rendered


def test_a_guided_group_hints_every_row_and_takes_grpo_advantages_over_it(tmp_path, model, tokenizer):
    # SEELE's and QuestA's hinted groups: num_hybrid = num_generations, prefix_advantage="paper". Rewards [1,0,0,1,0,0,
    # 0,1] -> group mean 3/8: rows 0, 3, 7 get 5/8, the others -3/8; every row's prompt ends with the 19-character hint
    trainer = prompt_trainer(
        tmp_path, model, tokenizer, FixedRewards([1.0, 0, 0, 1, 0, 0, 0, 1]), num_hybrid=8, prefix_advantage="paper"
    )
    batch, out = generate_batch(trainer)
    for row in (0, 7, 8):
        demo = batch[row]["demos"][0]
        assert prompt_text(tokenizer, out, row).endswith(f"\n\n## Hint.\n{demo[:19]}<eos><assistant>")
    adv = out["advantages"]
    assert [adv[r].unique().item() for r in (0, 1, 7, 8, 9)] == pytest.approx([5 / 8, -3 / 8, 5 / 8, 5 / 8, -3 / 8])
    metrics = trainer._metrics["train"]
    assert metrics["prefix/hybrid_rows"] == [16.0]
    assert "reward/on_policy" not in metrics  # no on-policy row to report (a NaN before)
    assert metrics["reward/hybrid"] == [pytest.approx(3 / 8)]


def test_a_guided_group_steers_its_questions_ratio_by_its_guided_rows(tmp_path, model, tokenizer):
    # SEELE's loop on a hinted group: every row solved, the step-0 ratio 0.95 -> 0.95 + 0.2 * (0.5 - 1) = 0.85 for
    # each of the batch's two questions; no on-policy success to record
    trainer = prompt_trainer(
        tmp_path,
        model,
        tokenizer,
        FixedRewards([1.0]),
        num_hybrid=8,
        prefix_advantage="paper",
        prefix_success_target=0.5,
        prefix_success_rows="hybrid",
    )
    batch, _ = generate_batch(trainer)
    assert len({question(batch, 0), question(batch, 8)}) == 2
    records = trainer._questions.records
    assert [(r.success, r.ratio, r.visits) for r in records.values()] == [(None, pytest.approx(0.85), 1)] * 2
    assert trainer._metrics["train"]["prefix/questions_seen"] == [2.0]


def test_a_guided_group_trains_a_step(tmp_path, model, tokenizer):
    trainer = prompt_trainer(
        tmp_path, model, tokenizer, FixedRewards([1.0, 0.0]), num_hybrid=8, prefix_advantage="paper"
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_hint_is_cut_from_the_demo_after_its_reasoning_trace(tmp_path, model, tokenizer):
    # prefix_demo_part="after_think" (QuestA): question 12+30's demo "<think>...</think>" + 20 characters shows
    # floor(0.95 * 20) = 19 of them; question 17+18's demo has 4 characters after its trace (under 10): no hint, the
    # slot runs unguided (a no_demo row, its prompt the bare question)
    after = "12+30 is 42. ans: 42"
    demos = {"12+30=": f"<think>add tens, then ones</think>{after}", "17+18=": "<think>35</think>= 35"}
    rows = [{"prompt": [{"role": "user", "content": q}], "demos": [d], "answer": d[-2:]} for q, d in demos.items()]
    trainer = PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([0.0])],
        args=train_args(tmp_path, prefix_placement="prompt", prefix_demo_part="after_think"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch, out = generate_batch(trainer)
    for row in (7, 15):
        if question(batch, row) == "12+30=":
            assert prompt_text(tokenizer, out, row) == f"<bos><user>12+30=\n\n## Hint.\n{after[:19]}<eos><assistant>"
        else:
            assert prompt_text(tokenizer, out, row) == "<bos><user>17+18=<eos><assistant>"
    assert {question(batch, 7), question(batch, 15)} == {"12+30=", "17+18="}
    assert trainer._metrics["train"]["prefix/no_demo_rows"] == [1.0]
    assert trainer._metrics["train"]["prefix/hybrid_rows"] == [1.0]
