"""`sft_best_rft`: SFT to its best validation accuracy (early stopping), then RFT for the rest of the step budget."""

from types import SimpleNamespace

import pytest
import torch

from prefix_rft.recipes import toy, toy_scoring
from prefix_rft.recipes.early_stopping import EarlyStopping
from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy import eval_rows, method_budget, train_rows, validation_rows
from prefix_rft.tasks import TaskConfig
from prefix_rft.tasks.arithmetic import in_test_split, problem_of_prompt


def questions(rows: list[dict]) -> set[str]:
    return {row["prompt"][0]["content"] for row in rows}


def test_validation_questions_are_held_out_of_training_and_apart_from_test_and_ood():
    # 3 steps x 2 questions = 6 training rows (ids train-0-0 .. train-0-5); 4 validation questions follow them in the
    # same seeded stream: train-0-6 .. train-0-9, none of them a training question
    settings = RunSettings(steps=3, prompts_per_step=2, sft_val_problems=4)
    train, val = train_rows("sft", settings, seed=0), validation_rows(settings, seed=0)
    assert [r["id"] for r in train] == [f"train-0-{i}" for i in range(6)]
    assert [r["id"] for r in val] == [f"train-0-{i}" for i in range(6, 10)]
    assert len(questions(val)) == 4 and not questions(val) & questions(train)
    assert train_rows("rft", settings, seed=0) == train  # the RFT stage trains on the same questions as SFT
    # never a test or OOD question: test problems are kept out of the train split by hash, OOD ones have 9-10 terms
    assert not questions(val) & (questions(eval_rows("test", 256, seed=0)) | questions(eval_rows("ood", 256, seed=0)))
    for problem in map(problem_of_prompt, questions(val)):
        assert not in_test_split(problem, TaskConfig()) and len(problem.terms) <= 8


def test_sft_stops_after_patience_and_restores_the_best_weights(tmp_path, monkeypatch, model, tokenizer):
    # scores every 2 steps, from step 0: [0.1, 0.3, 0.2, 0.2] at steps 0, 2, 4, 6. Best 0.3 at step 2, then two
    # evaluations without improvement = patience 2: SFT stops after step 6 of 8 and the step-2 weights come back
    scores, snapshots = iter([0.1, 0.3, 0.2, 0.2]), []

    def scripted_validation(m, tokenizer, rows, seed):
        snapshots.append({name: t.detach().clone() for name, t in m.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(toy_scoring, "validation_accuracy", scripted_validation)
    settings = RunSettings(steps=8, prompts_per_step=2, sft_eval_every=2, sft_patience=2, curve_every=100)
    trainer, record = toy.train_sft_to_best(model, tokenizer, settings, 0, tmp_path, points=[])
    assert trainer.state.global_step == 6
    assert (record["best_step"], record["best_score"]) == (2, 0.3)
    assert [e["step"] for e in record["evaluations"]] == [0, 2, 4, 6]
    final = model.state_dict()
    assert all(torch.equal(final[name], snapshots[1][name]) for name in final)
    # and that is not the start nor the end of SFT: training moved the weights before and after step 2
    assert any(not torch.equal(snapshots[0][name], snapshots[1][name]) for name in final)
    assert any(not torch.equal(snapshots[3][name], snapshots[1][name]) for name in final)


def test_sft_best_rft_gives_rft_the_steps_sft_did_not_run(tmp_path, monkeypatch, model, tokenizer):
    # budget 8; the scores above stop SFT after step 6, so RFT trains 8 - 6 = 2 steps, counted from step 6
    scores = iter([0.1, 0.3, 0.2, 0.2])
    monkeypatch.setattr(toy_scoring, "validation_accuracy", lambda *args: next(scores))
    monkeypatch.setattr(
        toy_scoring, "evaluate_splits", lambda *args, **kwargs: {"test": {"avg@1": 0.0}, "ood": {"avg@1": 0.0}}
    )
    rl_calls = []

    def fake_rl(
        method,
        model,
        tokenizer,
        settings,
        seed,
        output_dir,
        points,
        steps=None,
        offset=0,
        reward_fn=None,
        callbacks=(),
    ):
        rl_calls.append((method, steps, offset))
        return SimpleNamespace(state=SimpleNamespace(log_history=[]))

    monkeypatch.setattr(toy, "train_rl", fake_rl)
    settings = RunSettings(steps=8, prompts_per_step=2, sft_eval_every=2, sft_patience=2, curve_every=4)
    result = toy.run_method("sft_best_rft", settings, 0, tmp_path, base=("tiny", model, tokenizer))
    assert rl_calls == [("rft", 2, 6)]
    assert [c["max_steps"] for c in result["config"].values()] == [8, 2]  # the record: SFT over 8 steps, RFT 2
    selection = result["sft_selection"]
    assert selection["sft_steps"] + selection["rl_steps"] == result["budget"]["optimizer_steps"] == 8
    assert result["budget"] == method_budget("rft", settings)
    # curve points on the run's grid of 4 steps: the start, then step 4 during SFT (RFT, stubbed here, adds none)
    assert [p["step"] for p in result["curve"]] == [0, 4]


def test_early_stopping_keeps_the_starting_weights_when_training_never_beats_them():
    # scores [0.5, 0.5, 0.4]: a tie is no improvement, so the step-0 weights stay the best after patience 2
    model = torch.nn.Linear(1, 1)
    start = {name: t.clone() for name, t in model.state_dict().items()}
    scores = iter([0.5, 0.5, 0.4])
    stopper = EarlyStopping(lambda m: next(scores), every=1, patience=2)
    control = SimpleNamespace(should_training_stop=False)
    stopper.on_train_begin(None, SimpleNamespace(global_step=0), control, model=model)
    for step in (1, 2):
        with torch.no_grad():
            model.weight.add_(1.0)
        stopper.on_step_end(None, SimpleNamespace(global_step=step, max_steps=10), control, model=model)
    assert control.should_training_stop and stopper.best_step == 0
    stopper.restore(model)
    assert all(torch.equal(model.state_dict()[name], start[name]) for name in start)


def test_early_stopping_refuses_a_patience_of_zero():
    with pytest.raises(ValueError, match="patience >= 1"):
        EarlyStopping(lambda m: 0.0, every=1, patience=0)


def test_select_best_restores_the_weights_that_scored_best_on_the_selection_questions(
    tmp_path, monkeypatch, model, tokenizer
):
    # `select_best` (every protocol run): scores at steps 0, 2, 4 of a 4-step SFT run (curve every 2) are 0.1, 0.4,
    # 0.3; the step-2 weights are the ones evaluated at the end, and the run records the choice
    scores, snapshots = iter([0.1, 0.4, 0.3]), []

    def scripted_validation(m, tokenizer, rows, seed):
        snapshots.append({name: t.detach().clone() for name, t in m.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(toy_scoring, "validation_accuracy", scripted_validation)
    monkeypatch.setattr(toy_scoring, "score_run", lambda *args, **kwargs: {"test": {"avg@1": 0.0}})
    settings = RunSettings(steps=4, prompts_per_step=2, curve_every=2, select_best=True)
    result = toy.run_method("sft", settings, 0, tmp_path, base=("tiny", model, tokenizer))
    assert (result["model_selection"]["best_step"], result["model_selection"]["best_score"]) == (2, 0.4)
    assert [e["step"] for e in result["model_selection"]["evaluations"]] == [0, 2, 4]
    final = model.state_dict()
    assert all(torch.equal(final[name], snapshots[1][name]) for name in final)
    assert any(not torch.equal(snapshots[2][name], snapshots[1][name]) for name in final)  # training went on after
