"""Per-question guidance through the trainer: the adaptive prefix ratio and rescue-only hybrid rows (trl/questions.py).

`generate_batch` re-reads the first batch each time, so each call is the next visit of the same two questions (groups
of 8, slot 7 hybrid, 20-token demos). At optimizer step 0 the schedule's window is [0.95, 0.95].
"""

from types import SimpleNamespace

import pytest

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.questions import question_key
from tests.helpers import FixedRewards, generate_batch, make_dataset, train_args

SOLVED = [1.0] * 8  # every on-policy row succeeds: success 1
FAILED = [0.0] * 8  # every row fails: success 0


def guided_trainer(tmp_path, model, tokenizer, rewards, **overrides):
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[rewards],
        args=train_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def prefix_lens(out) -> list[int]:
    return out["prefix_mask"].sum(dim=1).tolist()


def last(trainer, name):
    return trainer._metrics["train"][name][-1]


def test_failed_question_gets_more_of_its_demo_next_time(tmp_path, model, tokenizer):
    rewards = FixedRewards(SOLVED)
    trainer = guided_trainer(tmp_path, model, tokenizer, rewards, prefix_success_target=0.5)
    # visit 1: unseen, the schedule's 0.95 -> floor(0.95 * 20) = 19 tokens. All solved: 0.95 + 0.2 * (0.5 - 1) = 0.85
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [19] + [0] * 7 + [19]
    assert last(trainer, "prefix/question_success_mean") == 1.0
    assert last(trainer, "prefix/adaptive_rows") == 0
    # visit 2: 0.85 -> floor(17.0) = 17 tokens; all failed: 0.85 + 0.2 * (0.5 - 0) = 0.95
    rewards.pattern = FAILED
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [17] + [0] * 7 + [17]
    assert last(trainer, "prefix/adaptive_rows") == 2
    assert last(trainer, "prefix/adaptive_ratio_mean") == pytest.approx(0.85)
    assert (last(trainer, "prefix/adaptive_ratio_min"), last(trainer, "prefix/adaptive_ratio_max")) == pytest.approx(
        (0.85, 0.85)
    )
    assert last(trainer, "prefix/question_success_mean") == 0.0
    # visit 3: raised by exactly 0.2 * 0.5 = 0.1 -> 0.95 -> 19 tokens
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [19] + [0] * 7 + [19]
    assert last(trainer, "prefix/adaptive_ratio_mean") == pytest.approx(0.95)
    assert last(trainer, "prefix/questions_seen") == 2


def test_hybrid_steering_shows_less_of_the_demo_once_the_guided_row_solves_it(tmp_path, model, tokenizer):
    # every on-policy row fails, every guided row (position 7) solves its question
    rewards = FixedRewards([0.0] * 7 + [1.0])
    overrides = dict(prefix_success_target=0.5, prefix_success_rows="hybrid")
    trainer = guided_trainer(tmp_path, model, tokenizer, rewards, **overrides)
    # visit 1: the schedule's 0.95 -> 19 tokens; guided success 1: 0.95 + 0.2 * (0.5 - 1) = 0.85 -> 17 tokens
    # (steered by the on-policy rows' 0 it would rise to the 0.95 ceiling again)
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [19] + [0] * 7 + [19]
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [17] + [0] * 7 + [17]


def test_solved_question_runs_its_hybrid_slot_on_policy(tmp_path, model, tokenizer):
    rewards = FixedRewards(SOLVED)
    trainer = guided_trainer(tmp_path, model, tokenizer, rewards, prefix_rescue_max_success=0.0)
    _, out = generate_batch(trainer)  # visit 1: unseen questions are rescued as the paper would
    assert prefix_lens(out) == [0] * 7 + [19] + [0] * 7 + [19]
    assert last(trainer, "prefix/solved_rows") == 0
    # visit 2: both solved, so slot 7 is an on-policy row: no prefix, and it joins the Dr. GRPO mean of all 8.
    # Rewards [1,0,0,0,0,0,0,1]: mean 2/8, so rows 0 and 7 get 1 - 1/4 = 0.75 and row 1 gets -0.25.
    rewards.pattern = [1.0, 0, 0, 0, 0, 0, 0, 1]
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 16
    assert (last(trainer, "prefix/solved_rows"), last(trainer, "prefix/hybrid_rows")) == (2, 0)
    assert out["advantages"][7].unique().tolist() == pytest.approx([0.75])
    assert out["advantages"][1].unique().tolist() == pytest.approx([-0.25])
    # visit 3: success 2/8 > 0 kept them solved; this time the whole group fails
    rewards.pattern = FAILED
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 16
    # visit 4: an all-zero group gets its hybrid back
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [19] + [0] * 7 + [19]
    assert last(trainer, "prefix/solved_rows") == 0


def test_rescue_threshold_keeps_hybrids_while_success_is_low(tmp_path, model, tokenizer):
    # on-policy [1,0,0,0,0,0,0]: success 1/7 = 0.143 <= 0.25, so the hybrid stays
    rewards = FixedRewards([1.0, 0, 0, 0, 0, 0, 0, 1])
    trainer = guided_trainer(tmp_path, model, tokenizer, rewards, prefix_rescue_max_success=0.25)
    generate_batch(trainer)
    _, out = generate_batch(trainer)
    assert prefix_lens(out) == [0] * 7 + [19] + [0] * 7 + [19]


def test_defaults_keep_no_question_state(tmp_path, model, tokenizer):
    trainer = guided_trainer(tmp_path, model, tokenizer, FixedRewards(FAILED))
    generate_batch(trainer)
    assert trainer._questions is None
    assert not any(
        name.startswith(("prefix/question", "prefix/adaptive", "prefix/solved")) for name in trainer._metrics["train"]
    )


def test_question_state_is_saved_and_loaded_with_the_rng_state(tmp_path, model, tokenizer):
    trainer = guided_trainer(tmp_path, model, tokenizer, FixedRewards(SOLVED), prefix_success_target=0.5)
    generate_batch(trainer)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    trainer._save_rng_state(str(checkpoint))
    restored = guided_trainer(tmp_path, model, tokenizer, FixedRewards(SOLVED), prefix_success_target=0.5)
    restored._load_rng_state(str(checkpoint))
    assert restored._questions.records == trainer._questions.records
    assert len(restored._questions.records) == 2


def test_a_rank_the_checkpoint_has_no_file_for_restores_rank_0s_question_state(tmp_path, model, tokenizer):
    trainer = guided_trainer(tmp_path, model, tokenizer, FixedRewards(SOLVED), prefix_success_target=0.5)
    generate_batch(trainer)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    trainer._save_rng_state(str(checkpoint))  # one process saved: only 0_<file>
    restored = guided_trainer(tmp_path, model, tokenizer, FixedRewards(SOLVED), prefix_success_target=0.5)
    restored.accelerator = SimpleNamespace(process_index=1)  # rank 1 of a run resumed on two processes
    restored._load_rng_state(str(checkpoint))
    assert len(restored._questions.records) == 2
    assert restored._questions.records == trainer._questions.records


def test_question_key_prefers_the_id_column_and_else_hashes_the_prompt():
    chat = [{"role": "user", "content": "1+2="}]
    assert question_key({"id": 7, "prompt": chat}) == "id:7"
    # the same prompt gives the same key whatever the order of a message's fields; another prompt another key
    same = [{"content": "1+2=", "role": "user"}]
    assert question_key({"prompt": chat}) == question_key({"prompt": same, "id": None})
    assert question_key({"prompt": chat}) != question_key({"prompt": "1+2="})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"num_hybrid": 0, "prefix_success_target": 0.5},
            "prefix_success_target=0.5 is not used by PrefixRFTConfig: num_hybrid=0 has no hybrid rows",
        ),
        ({"prefix_ratio_step": 0.1}, "prefix_ratio_step acts only with prefix_success_target"),
        ({"prefix_success_rows": "hybrid"}, "prefix_success_rows acts only with prefix_success_target"),
        (
            {"prefix_success_target": 0.5, "prefix_success_rows": "all"},
            r"prefix_success_rows='all' is not supported; expected one of \('on_policy', 'hybrid'\)",
        ),
        ({"prefix_success_target": 1.5}, r"prefix_success_target=1.5 is out of range; expected \[0, 1\]"),
        ({"prefix_rescue_max_success": -0.1}, "prefix_rescue_max_success=-0.1 is out of range"),
        ({"prefix_success_target": 0.5, "prefix_ratio_step": 0.0}, r"prefix_ratio_step=0.0 is out of range"),
    ],
)
def test_per_question_settings_without_effect_or_out_of_range_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_args(tmp_path, **overrides)
