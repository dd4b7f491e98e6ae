"""Generation (trl/generation.py): `plan_rows` gives each row its role and demo prefix; transformers generation forces
demo prefixes inside the on-policy rows' `generate` call."""

import pytest
from transformers import GenerationMixin
from trl import GRPOTrainer

from prefix_rft import PrefixRFTTrainer
from prefix_rft.trl.generation import plan_rows
from prefix_rft.trl.rollouts import RowPlan
from tests.helpers import FixedRewards, budget_rollout, generate_batch, make_dataset, train_args


@pytest.fixture
def generate_calls(monkeypatch):
    """The (rows, prompt width, max_new_tokens) of every `generate` call."""
    calls, original = [], GenerationMixin.generate

    def generate(self, *args, **kwargs):
        config = kwargs["generation_config"]
        calls.append((*kwargs["input_ids"].shape, config.max_new_tokens))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", generate)
    return calls


def trainer_for(tmp_path, model, tokenizer, **overrides):
    return PrefixRFTTrainer(
        model=model,
        reward_funcs=[FixedRewards([0.0])],
        args=train_args(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def test_hybrids_share_one_call_and_stay_within_their_budget(tmp_path, model, tokenizer, generate_calls):
    # Budget 20, demos of 20 tokens: step 0 reveals floor(0.95 * 20) = 19 demo tokens, leaving 1 to sample. The two
    # hybrids (rows 7 and 15) decode with the 14 on-policy rows in one call of 20 new tokens whose width is the
    # longest prompt: the chat template around "17+18=" (6 characters), the same as without any hybrid.
    trainer = trainer_for(tmp_path, model, tokenizer, max_completion_length=20)
    batch, out = generate_batch(trainer)
    on_policy_width = generate_calls[0][1]
    assert generate_calls == [(16, on_policy_width, 20)]
    assert trainer._metrics["train"]["prefix/generate_calls"] == [1.0]
    lengths = out["completion_mask"].sum(dim=1).tolist()
    for row in (7, 15):
        ids = out["completion_ids"][row, : lengths[row]].tolist()
        assert tokenizer.decode(ids[:19]) == batch[row]["demos"][0][:19]
        assert len(ids) == 20 or ids[-1] == tokenizer.eos_token_id  # 19 demo tokens + 1 sampled, or EOS
    assert max(lengths) <= 20


def test_no_hybrid_generation_is_one_plain_call(tmp_path, model, tokenizer, generate_calls):
    trainer = trainer_for(tmp_path, model, tokenizer, num_hybrid=0)
    generate_batch(trainer)
    assert [(rows, new) for rows, _, new in generate_calls] == [(16, 24)]


def test_forced_prefix_continues_as_the_prefix_in_the_prompt(tmp_path, model, tokenizer):
    # Greedy decoding is deterministic: forcing the prefix during decoding must give the continuation that decoding
    # after a prompt ending with the prefix gives (same positions, same attention), as the second call did.
    trainer = trainer_for(tmp_path, model, tokenizer, generation_kwargs={"do_sample": False})
    batch = next(iter(trainer.get_train_dataloader()))
    prompt_ids = [
        tokenizer.apply_chat_template(x["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        for x in batch
    ]
    prefix_ids = [[] for _ in batch]
    for row, n in ((7, 19), (15, 5)):
        prefix_ids[row] = tokenizer(batch[row]["demos"][0][:n], add_special_tokens=False)["input_ids"]
    group = list(range(16))
    forced, _ = trainer._generate_forced(group, prompt_ids, prefix_ids, None, {})
    for row, n in ((7, 19), (15, 5)):
        with trainer._max_new_tokens(24 - n):
            prompt = [prompt_ids[row] + prefix_ids[row]]
            (expected,), _ = GRPOTrainer._generate_single_turn(trainer, prompt, None, {}, 1)
        assert forced[row] == expected
        assert len(prefix_ids[row]) + len(forced[row]) <= 24


def plan(inputs, **overrides):
    """`plan_rows` for rank 1 of a batch of groups of 4 with 2 hybrid slots, every hook a plain stand-in."""
    hooks = dict(
        step=7,
        schedule_step=3,
        rank_offset=4,
        group_size=4,
        num_hybrid=2,
        seed=0,
        draw_ratio=lambda schedule_step, rng: 0.5,
        demo_ids=lambda demo: [ord(c) for c in demo],
        choose_demo=lambda demos, position, rng: demos[0],
        row_plan=lambda ids, ratio: RowPlan(role="hybrid", revealed_ids=ids[:2], demo_len=len(ids), ratio=ratio),
        rescues=lambda example: True,
        question_ratio=lambda example, drawn: (drawn, False),
    )
    return plan_rows(inputs, **(hooks | overrides))


def test_plan_rows_gives_the_last_slots_of_each_group_their_demo_prefix():
    # Global rows 4-7 are positions 0-3 of the second group: positions 2 and 3 are hybrid slots.
    inputs = [{"prompt": f"q{i}", "demo": "abcd"} for i in range(4)]
    rollout = plan(inputs)
    assert rollout.prompts == ["q0", "q1", "q2", "q3"]
    assert rollout.schedule_step == 3
    assert rollout.rows[:2] == [RowPlan(), RowPlan()]
    hybrid = RowPlan(role="hybrid", revealed_ids=[97, 98], demo_len=4, ratio=0.5)
    assert rollout.rows[2:] == [hybrid, hybrid]


def test_plan_rows_marks_no_demo_solved_and_adapted_hybrid_slots():
    inputs = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}, {"prompt": "d", "demos": ["xyz"]}]
    rows = plan(inputs, rescues=lambda x: x["prompt"] != "c").rows
    assert rows[2] == RowPlan(role="no_demo")
    assert rows[3].role == "hybrid" and rows[3].revealed_ids == [120, 121]
    inputs[2] = {"prompt": "c", "demo": "uv"}
    rows = plan(inputs, rescues=lambda x: x["prompt"] != "c", question_ratio=lambda x, drawn: (0.25, True)).rows
    assert rows[2] == RowPlan(role="solved")  # its question was solved last time: on-policy, no prefix spent
    assert rows[3] == RowPlan(role="hybrid", revealed_ids=[120, 121], demo_len=3, ratio=0.25, adapted=True)


def test_plan_rows_reads_the_schedule_at_the_schedule_step():
    seen = []
    plan([{"prompt": "q", "demo": "ab"}] * 4, draw_ratio=lambda s, rng: seen.append(s) or 0.5, schedule_step=11)
    assert seen == [11, 11]


def test_plan_rows_takes_each_slots_demo_from_the_choose_demo_hook():
    # hybrid slots are positions 2 and 3 of the group; the hook picks the demo at index position - 2
    seen = []

    def choose(demos, position, rng):
        seen.append((list(demos), position))
        return demos[position - 2]

    rows = plan([{"prompt": "q", "demos": ["ab", "cde"]}] * 4, choose_demo=choose).rows
    assert seen == [(["ab", "cde"], 2), (["ab", "cde"], 3)]
    assert [(row.revealed_ids, row.demo_len) for row in rows[2:]] == [([97, 98], 2), ([99, 100], 3)]


def test_fit_prefixes_hook_returns_the_cut_and_adds_no_eos(tmp_path, model, tokenizer):
    # prompts of 8 tokens, budget 10: the hybrid keeps 2 of its 4 tokens (2 cut), the full demo's 2 fit. The base
    # trainer plans no full-demo row and ends no prefix with EOS; the record is left as it was.
    trainer = trainer_for(tmp_path, model, tokenizer, max_prompt_length=10)
    rollout = budget_rollout()
    prefix_ids, cut = trainer._fit_prefixes(rollout, [[1] * 8] * 3)
    assert (prefix_ids, cut) == ([[], [5, 6], [5, 6]], 2)
    assert (rollout.prefix_ids, rollout.truncated_tokens) == ([], 0)
