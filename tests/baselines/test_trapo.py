"""TRAPO: in-step escalation (a failed question's later micro-groups guided in the same step; each row scored once,
a non-deterministic reward trained as first given, failing reward functions named with their row), escalation from a
question's previous group into its next plan (`previous_visit`), the token loss by hand, the state in checkpoints,
refusals, and training steps end to end."""

import math
from types import SimpleNamespace

import pytest
import torch

from prefix_rft.baselines import TrapoConfig, TrapoTrainer
from prefix_rft.baselines.trapo import stage_rows
from prefix_rft.trl.questions import question_key
from tests.helpers import (
    DEMOS,
    base_kwargs,
    baseline_trainer,
    dataset_prompt_ids,
    generate_batch,
    loss_batch,
    make_dataset,
    needs_requests,
    prefix_or_easy,
    text_of,
)
from tests.trl.doubles.vllm_colocate import install_colocate_double
from tests.trl.doubles.vllm_server import run_two_ranks_with_server


def trapo(tmp_path, model, tokenizer, rewards=(0.0,), **overrides):
    return baseline_trainer(TrapoTrainer, TrapoConfig, tmp_path, model, tokenizer, list(rewards), **overrides)


def trapo_with(tmp_path, model, tokenizer, reward, **overrides):
    """A TRAPO trainer on the four DEMOS questions (two per batch of 16) with the reward function `reward`."""
    return TrapoTrainer(
        model=model,
        reward_funcs=[reward],
        args=TrapoConfig(**base_kwargs(tmp_path, **overrides)),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("divisor, divided_rows", [("rows_x_length", 2), ("length", 1)])
def test_trapo_sums_the_token_losses_over_rows_and_length_or_length_alone(
    tmp_path, model, tokenizer, divisor, divided_rows
):
    trainer = trapo(tmp_path, model, tokenizer, rl_loss_divisor=divisor)
    token_loss = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # a TrSFT prefix token's loss is one of them, as any other
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # (1 + 2 + 3) over 2 rows x 24 (Dr. GRPO), or over 24 alone (the authors' loss_remove_token_mean)
    loss = trainer._aggregate(token_loss, token_loss, loss_batch(torch.tensor([[True, False], [False, False]]), mask))
    assert loss.item() == pytest.approx(6 / (divided_rows * 24))


def test_stage_rows_counts_a_micro_groups_rows_in_a_ranks_slice():
    # 4 rows per rank: rank 0 holds positions 0-3 (micro-group 1), rank 1 positions 4-7 (micro-groups 2, 3, 4)
    assert [stage_rows(stage, 0, 4) for stage in (1, 2, 3, 4)] == [4, 0, 0, 0]
    assert [stage_rows(stage, 4, 4) for stage in (1, 2, 3, 4)] == [0, 2, 1, 1]
    assert [stage_rows(stage, 0, 16) for stage in (1, 2, 3, 4)] == [8, 4, 2, 2]  # two whole groups
    assert [stage_rows(stage, 6, 6) for stage in (1, 2, 3, 4)] == [4, 0, 1, 1]  # positions 6, 7, 0-3


def test_in_step_guides_a_failed_question_in_the_same_step(tmp_path, model, tokenizer):
    trainer = trapo_with(tmp_path, model, tokenizer, prefix_or_easy)  # trapo_escalation="in_step" by default
    batch, out = generate_batch(trainer)
    assert [x["answer"] for x in batch[::8]] == ["42", "35"]  # the batch holds 12+30 (hard) and 17+18 (easy)
    # 12+30: positions 0-3 fail (0 of 4 < 2) -> 25% (5 tokens) at 4-5, which solve it; 2 of 6 < 4 -> 50% (10) at 6;
    # 3 of 7 < 7 -> the whole demo and its EOS (21) at 7. 17+18: 4 of 4, 6 of 6, 7 of 7 solved -> never guided.
    assert out["prefix_mask"].sum(dim=1).tolist() == [0, 0, 0, 0, 5, 5, 10, 21] + [0] * 8
    assert out["trapo_sft_rows"].tolist() == [False] * 5 + [True] * 3 + [False] * 8
    # TRL trained on the rewards the escalation saw: 12+30's are [0] * 4 + [1] * 4, A = r - 0.5; 17+18's all 1, A = 0
    assert out["advantages"][:, 0].tolist() == [-0.5] * 4 + [0.5] * 4 + [0.0] * 8
    assert trainer._rollout is None and trainer.escalation.levels == {}  # no state carried to the next visit
    metrics = trainer._metrics["train"]
    assert [metrics[f"trapo/guided_rows_{n}"] for n in ("partial25", "partial50", "full")] == [[2.0], [1.0], [1.0]]


def test_in_step_trains_with_the_guided_rows_of_its_first_step(tmp_path, model, tokenizer):
    trainer = trapo_with(tmp_path, model, tokenizer, prefix_or_easy)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()  # one step: 12+30 and 17+18, as above
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    (logged,) = [h for h in trainer.state.log_history if "loss" in h]
    assert (logged["prefix/hybrid_rows"], logged["trapo/guided_rows_partial25"], logged["prefix/generate_calls"]) == (
        4.0,
        2.0,
        4.0,  # one generate call per micro-group, its prefixed rows forced in the on-policy rows' call
    )


def test_previous_visit_leaves_a_failed_question_unguided_in_its_first_step(tmp_path, model, tokenizer):
    trainer = trapo_with(tmp_path, model, tokenizer, prefix_or_easy, trapo_escalation="previous_visit")
    _, out = generate_batch(trainer)
    assert out["prefix_mask"].sum().item() == 0  # unseen questions: unguided, whatever their rewards
    hard, easy = (question_key(row) for row in make_dataset().select([0, 1]))
    assert trainer.escalation.levels == {hard: (1, 2, 3), easy: (0, 0, 0)}  # guidance waits for the next visit


class CountingReward:
    """`score` (a reward function), counting the rows of each call and logging the call's number per row
    (`log_extra` column `call`)."""

    def __init__(self, score, name: str):
        self.score, self.__name__, self.rows = score, name, []

    def __call__(self, completions, log_extra, **kwargs):
        self.rows.append(len(completions))
        log_extra("call", [len(self.rows)] * len(completions))
        return self.score(completions=completions, **kwargs)


def test_in_step_scores_each_row_once(tmp_path, model, tokenizer):
    reward = CountingReward(prefix_or_easy, "counted")
    trainer = trapo_with(tmp_path, model, tokenizer, reward)
    _, out = generate_batch(trainer)
    # two groups of 8: positions 0-3 (8 rows), 4-5 (4), 6 (2) as their micro-groups come, position 7 (2) with the
    # batch: 16 row-scorings, where scoring the batch again made 30
    assert reward.rows == [8, 4, 2, 2]
    # the completions table's reward column comes from the pass that scored each row, in row order
    assert list(trainer._logs["extra"]["call"]) == [1, 1, 1, 1, 2, 2, 3, 4] * 2
    assert out["prefix_mask"].sum(dim=1).tolist() == [0, 0, 0, 0, 5, 5, 10, 21] + [0] * 8  # escalated as before


class Alternating:
    """1 for every row of its odd calls, 0 of its even calls: a judge whose verdict on a completion depends on when
    it is asked."""

    __name__ = "alternating"

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [float(self.calls % 2)] * len(completions)


def test_in_step_trains_a_non_deterministic_reward_as_first_given(tmp_path, model, tokenizer):
    trainer = trapo_with(tmp_path, model, tokenizer, Alternating())
    _, out = generate_batch(trainer)
    # per group: positions 0-3 get 1 (call 1), 4-5 get 0 (call 2), 6 gets 1 (call 3), 7 gets 0 (call 4, the batch).
    # 4 of 4 solved -> 4-5 unguided; 5 of 6 -> 6 unguided; 5 of 7 < 7 -> the whole demo (21 tokens) at 7
    assert out["prefix_mask"].sum(dim=1).tolist() == ([0] * 7 + [21]) * 2
    # A = r - mean of the group's 8 rewards, 5/8
    assert out["advantages"][:, 0].tolist() == ([0.375] * 4 + [-0.625] * 2 + [0.375, -0.625]) * 2
    metrics = trainer._metrics["train"]
    assert (metrics["rewards/alternating/mean"], metrics["reward"]) == ([0.625], [0.625])


def only_easy(completions, answer, **kwargs):
    """2 for the easy question 17+18 (answer 35), None (not scored by this function) for the others."""
    return [2.0 if a == "35" else None for a in answer]


def test_in_step_logs_each_reward_functions_rewards_over_the_rows_it_scored(tmp_path, model, tokenizer):
    first, second = CountingReward(prefix_or_easy, "first"), CountingReward(only_easy, "second")
    trainer = TrapoTrainer(
        model=model,
        reward_funcs=[first, second],
        args=TrapoConfig(**base_kwargs(tmp_path, reward_weights=[1.0, 0.5])),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )
    _, out = generate_batch(trainer)
    assert first.rows == second.rows == [8, 4, 2, 2]
    metrics = trainer._metrics["train"]
    # first: 12+30's 0, 0, 0, 0, 1, 1, 1, 1 (positions 4-7 start with its demo's 25%, 50% or whole prefix) and
    # 17+18's eight 1s; second: 2 on 17+18's 8 rows, None on 12+30's
    assert metrics["rewards/second/mean"] == [2.0]
    assert metrics["rewards/first/mean"] == [12 / 16]
    # weighted: 12+30's rows 0 or 1 (the second function does not score them), 17+18's 1 + 0.5 * 2 = 2
    assert metrics["reward"] == [(4 + 8 * 2) / 16]
    assert metrics["reward/partial_rows/second"] == [8.0]
    assert out["advantages"][:, 0].tolist() == [-0.5] * 4 + [0.5] * 4 + [0.0] * 8


def logs_prefixed_fraction(completions, answer, log_metric, **kwargs):
    """`prefix_or_easy`, logging the fraction of its completions that start with their demo's 25% prefix."""
    demos = {demo.split(": ")[1]: demo for demo in DEMOS}
    prefixed = [text_of(c).startswith(demos[a][:5]) for c, a in zip(completions, answer, strict=True)]
    log_metric("prefixed_fraction", sum(prefixed) / len(prefixed))
    return prefix_or_easy(completions, answer)


def test_in_step_logs_a_reward_functions_metric_as_over_the_whole_batch(tmp_path, model, tokenizer):
    trainer = trapo_with(tmp_path, model, tokenizer, logs_prefixed_fraction)
    _, out = generate_batch(trainer)
    assert out["prefix_mask"].sum(dim=1).tolist() == [0, 0, 0, 0, 5, 5, 10, 21] + [0] * 8  # 12+30 guided at 4-7
    # calls of 8, 4, 2, 2 rows log 0/8, 2/4 (12+30's 4-5), 1/2 (its 6), 1/2 (its 7): one value, the fraction of the
    # batch's 16 completions, 4/16 (the mean of the four values would be 0.375)
    assert trainer._metrics["train"]["prefixed_fraction"] == [4 / 16]


class FailsOn42FromCall:
    """0 for every row until call `first`, then int(a) // (int(a) - 42): the rows answering 42 fail."""

    __name__ = "fails_on_42"

    def __init__(self, first: int):
        self.calls, self.first = 0, first

    def __call__(self, completions, answer, **kwargs):
        self.calls += 1
        return [0.0 if self.calls < self.first else float(int(a) // (int(a) - 42)) for a in answer]


@pytest.mark.parametrize(
    "first, position",
    [
        (2, 4),  # micro-group 2 (positions 4, 5), scored in the step: its first row is position 4
        (4, 7),  # the batch's scoring, which scores position 7 alone
    ],
)
def test_in_step_names_the_reward_function_and_row_that_fail(tmp_path, model, tokenizer, first, position):
    # micro-groups unsolved -> each is guided and scored; the question answering 42 is dataset row 0
    trainer = TrapoTrainer(
        model=model,
        reward_funcs=[FailsOn42FromCall(first)],
        args=TrapoConfig(**base_kwargs(tmp_path)),
        train_dataset=make_dataset().select([0, 1]),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    row = next(i for i, example in enumerate(batch) if example["answer"] == "42") + position
    trainer.model.train()
    with pytest.raises(RuntimeError) as error:
        trainer._generate_and_score_completions(batch)
    assert str(error.value).startswith(
        f"reward function 'fails_on_42' failed on row 0 of the training dataset (row {row} of this rank's batch): "
        "ZeroDivisionError('integer division or modulo by zero')"
    )


def test_trapo_escalates_a_failed_question_on_its_next_visit(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer, trapo_escalation="previous_visit")  # every reward 0
    _, first = generate_batch(trainer)
    assert first["prefix_mask"].sum().item() == 0  # unseen questions: 8 unguided rollouts each
    assert not first["trapo_sft_rows"].any()
    assert set(trainer.escalation.levels.values()) == {(1, 2, 3)}  # nothing solved: every stage escalates
    _, second = generate_batch(trainer)  # the same two questions again
    # 20-token demos: 25% -> 5 tokens at positions 4-5, 50% -> 10 at 6, the whole demo and its EOS (21) at 7
    assert second["prefix_mask"].sum(dim=1).tolist() == [0, 0, 0, 0, 5, 5, 10, 21] * 2
    # the first row of the 25% pair trains no prefix (it is imitated once, through the second)
    assert second["trapo_sft_rows"].tolist() == [False] * 5 + [True] * 3 + [False] * 5 + [True] * 3


def test_trapo_cuts_partial_prefixes_from_the_first_demo_and_guides_the_whole_row_with_the_second(
    tmp_path, model, tokenizer
):
    # the authors read two demos per question: the first for the 25% and 50% rows, the second for the whole-demo row
    trainer = trapo(tmp_path, model, tokenizer, trapo_escalation="previous_visit")
    first, second = "12+30 is 42. ans: 42", "30+12 makes 42, ans: 42"
    example = {"prompt": [{"role": "user", "content": "12+30="}], "demos": [first, second], "answer": "42"}
    trainer.escalation.levels = {question_key(example): (1, 2, 3)}
    rows = trainer._plan_rows([example] * 8).rows
    ids = [tokenizer(demo, add_special_tokens=False)["input_ids"] for demo in (first, second)]
    assert [row.revealed_ids for row in rows] == [[]] * 4 + [ids[0][:5], ids[0][:5], ids[0][:10], ids[1]]


def test_trapo_leaves_a_solved_question_unguided(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer, [1.0], trapo_escalation="previous_visit")
    generate_batch(trainer)
    _, second = generate_batch(trainer)
    assert second["prefix_mask"].sum().item() == 0


def test_trapo_token_loss_by_hand(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)
    logps = torch.tensor([[0.5], [math.log(0.05)], [math.log(0.05)]])
    prefix_mask = torch.tensor([[False], [True], [True]])
    batch = loss_batch(prefix_mask, trapo_sft_rows=torch.tensor([False, True, False]))
    loss, _ = trainer._token_loss(logps, torch.zeros(3, 1), torch.ones(3, 1), batch)
    # generated token: -A rho = -exp(0.5), no clip; TrSFT prefix token: -0.05 / max(0.05, 0.1) = -0.5; the prefix
    # of a row that trains none: 0
    assert loss.flatten().tolist() == pytest.approx([-math.exp(0.5), -0.5, 0.0])


def test_trapo_levels_round_trip_through_checkpoints(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)
    trainer.escalation.levels = {"id:q": (1, 0, 3)}
    saved = tmp_path / "saved"
    saved.mkdir()
    trainer._save_rng_state(str(saved))
    trainer.escalation.levels = {}
    trainer._load_rng_state(str(saved))
    assert trainer.escalation.levels == {"id:q": (1, 0, 3)}


def test_a_rank_the_checkpoint_has_no_file_for_restores_rank_0s_levels(tmp_path, model, tokenizer):
    trainer = trapo(tmp_path, model, tokenizer)
    trainer.escalation.levels = {"id:q": (1, 0, 3)}
    saved = tmp_path / "saved"
    saved.mkdir()
    trainer._save_rng_state(str(saved))  # one process saved: only rank 0's file
    trainer.escalation.levels = {}
    trainer.accelerator = SimpleNamespace(process_index=1)  # rank 1 of a run resumed on two processes
    trainer._load_rng_state(str(saved))
    assert trainer.escalation.levels == {"id:q": (1, 0, 3)}


def test_trapo_trains_and_guides_questions_on_their_second_pass(tmp_path, model, tokenizer):
    # 4 questions, 2 per step: step 3 revisits the first two, which all failed
    trainer = trapo(tmp_path, model, tokenizer, max_steps=3, trapo_escalation="previous_visit")
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    hybrid_rows = [h["prefix/hybrid_rows"] for h in trainer.state.log_history if "loss" in h]
    assert hybrid_rows == [0.0, 0.0, 8.0]  # 4 guided rows per question on its second visit


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"num_generations": 4, "per_device_train_batch_size": 8},
            "num_generations=4 is not supported by TrapoConfig",
        ),
        ({"num_hybrid": 2}, "num_hybrid=2 is not used by TrapoConfig"),
        ({"epsilon": 0.1}, "epsilon=0.1 is not used by TrapoConfig"),
        (
            {"prefix_ratio_floor_end": 0.1},
            r"prefix_ratio_floor_end=0.1 is not used by TrapoConfig: its prefixes are fixed shares of the demo \(25%",
        ),
        ({"trapo_trust_region_alpha": 0.0}, r"trapo_trust_region_alpha must be in \(0, 1\]"),
        ({"trapo_escalation": "next_step"}, "trapo_escalation='next_step' is not supported"),
    ],
)
def test_trapo_refuses_options_it_has_no_use_for(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        TrapoConfig(**base_kwargs(tmp_path, **overrides))


def test_in_step_refuses_a_reward_model(tmp_path, model, tokenizer):
    with pytest.raises(ValueError, match="trapo_escalation='in_step' does not support reward models"):
        TrapoTrainer(
            model=model,
            reward_funcs=[model],
            args=TrapoConfig(**base_kwargs(tmp_path)),
            train_dataset=make_dataset(),
            processing_class=tokenizer,
            reward_processing_classes=[tokenizer],
        )


def test_in_step_sends_each_micro_group_to_vllm_after_the_one_before(tmp_path, monkeypatch, model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    engines = install_colocate_double(monkeypatch)
    model = AutoModelForCausalLM.from_pretrained(model_dir)  # colocate mode loads name_or_path = model_dir
    trainer = trapo_with(tmp_path, model, tokenizer, prefix_or_easy, use_vllm=True, vllm_mode="colocate")
    _, out = generate_batch(trainer)
    assert out["prefix_mask"].sum(dim=1).tolist() == [0, 0, 0, 0, 5, 5, 10, 21] + [0] * 8  # as with transformers
    (engine,) = engines
    hard, easy = dataset_prompt_ids(tokenizer)[:2]
    five = tokenizer.convert_tokens_to_ids(list(DEMOS[0][:5]))
    ten = tokenizer.convert_tokens_to_ids(list(DEMOS[0][:10]))
    # per call (micro-group), per request: prompt + prefix, max_tokens (budget 24 less the prefix; 1 for the whole
    # demo, whose one sampled token is discarded, asked after the prompt alone)
    assert [[(r.prompt_token_ids, r.max_tokens) for r in call] for call in engine.generate_calls] == [
        [(hard, 24)] * 4 + [(easy, 24)] * 4,
        [(hard + five, 19)] * 2 + [(easy, 24)] * 2,
        [(hard + ten, 14), (easy, 24)],
        [(hard, 1), (easy, 24)],
    ]


@pytest.mark.slow
@needs_requests
def test_in_step_on_two_ranks_sends_a_split_groups_micro_groups_to_the_server(tmp_path, model_dir, tokenizer):
    ranks, events, _ = run_two_ranks_with_server(tmp_path, model_dir, "tests.baselines.trapo_vllm_worker")
    assert [r["world_size"] for r in ranks] == [2, 2]
    questions = [b["question"] for b in ranks[0]["batches"]]
    assert questions == [b["question"] for b in ranks[1]["batches"]]
    assert any(q != "17+18=" for q in questions)  # precondition: a hard question was drawn
    for question, batch0, batch1 in zip(questions, ranks[0]["batches"], ranks[1]["batches"], strict=True):
        assert batch0["prefix_lens"] == [0] * 4  # positions 0-3, rank 0
        # positions 4-7 on rank 1, decided from rank 0's rewards: the hard questions' 0 of 4 -> 25%, 50%, whole
        assert batch1["prefix_lens"] == ([0] * 4 if question == "17+18=" else [5, 5, 10, 21]), question
    # rank 1's 25% pair reached the server as one request of prompt + its 5-token prefix, n=2
    hard = [q for q in questions if q != "17+18="][0]
    prompt = dataset_prompt_ids(tokenizer)[[d.split(" is ")[0] + "=" for d in DEMOS].index(hard)]
    prefix = tokenizer.convert_tokens_to_ids(list(hard[:5]))
    requests = [e for e in events if e["event"] == "completions"]
    assert any(r["n"] == 2 and prompt + prefix in r["prompts"] for r in requests)
