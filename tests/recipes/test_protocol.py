"""`prefix-rft protocol`: tuning never touches test or OOD, the choice and the cut rule, the intervals, resuming."""

import json

import pytest

from prefix_rft.recipes import protocol, toy
from prefix_rft.recipes.compare import stats, summarize, t95
from prefix_rft.recipes.protocol import ProtocolArguments, choose, select_finalists, tuning_jobs
from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy import train_rows, validation_rows


def test_question_epochs_draw_a_pool_that_the_run_passes_over():
    settings = RunSettings(steps=8, prompts_per_step=4, question_epochs=4, sft_val_problems=5)
    rows = train_rows("prefix_rft", settings, seed=0)
    assert len(rows) == 8  # 8 steps x 4 questions / 4 passes
    held_out = validation_rows(settings, seed=0, n=7)
    assert len(held_out) == 7
    assert not {r["prompt"][-1]["content"] for r in rows} & {r["prompt"][-1]["content"] for r in held_out}


def test_question_epochs_must_divide_the_steps():
    with pytest.raises(SystemExit, match="question_epochs must divide steps"):
        RunSettings(steps=10, question_epochs=4)


def test_tuning_scores_held_out_training_questions_after_the_early_stopping_ones(monkeypatch):
    seen = []
    monkeypatch.setattr(toy, "evaluate_rows", lambda model, tok, rows, seed, k, desc: seen.append(rows) or _metrics())
    monkeypatch.setattr(toy, "eval_rows", lambda *a: pytest.fail("tuning touched the test or OOD split"))
    settings = RunSettings(steps=4, prompts_per_step=2, evaluate_on="validation", sft_val_problems=3)
    scores = toy.score_run(None, None, settings, seed=0, k=2, n=4, desc="t")
    assert list(scores) == ["validation"]
    # the 8 training questions, then 3 for early stopping, then the 4 scored: questions 12-15 of the seeded stream
    stream = toy.make_rows("train", 15, seed=0, config=toy.task_config(settings))
    assert seen == [stream[11:15]]


def _metrics():
    class Result:
        metrics = {"avg@2": 0.5}

    return Result()


def test_tuning_gives_every_method_its_grid_at_the_same_steps_and_seed(tmp_path):
    args = ProtocolArguments(methods="prefix_rft,sft_best_rft", rl_grid="1e-5,2e-5", sft_grid="3e-4,6e-4")
    jobs = tuning_jobs(["prefix_rft", "sft_best_rft"], args, RunSettings(), tmp_path)
    assert [(j.method, j.settings.learning_rate, j.settings.sft_learning_rate) for j in jobs] == [
        ("prefix_rft", 1e-5, 5e-4),
        ("prefix_rft", 2e-5, 5e-4),
        ("sft_best_rft", 3e-5, 3e-4),
        ("sft_best_rft", 3e-5, 6e-4),
    ]
    assert {(j.seed, j.settings.steps, j.settings.evaluate_on) for j in jobs} == {(100, 40, "validation")}


def _tuned(method, field, value, accuracy):
    return {"method": method, "settings": {field: value}, "final": {"validation": {"avg@4": accuracy}}}


def test_each_method_keeps_its_best_value_and_the_first_on_a_tie():
    tuned = [
        _tuned("prefix_rft", "learning_rate", 1e-5, 0.30),
        _tuned("prefix_rft", "learning_rate", 2e-5, 0.40),
        _tuned("prefix_rft", "learning_rate", 4e-5, 0.40),
        _tuned("sft", "sft_learning_rate", 1e-4, 0.25),
    ]
    chosen = choose(tuned, k=4)
    assert chosen["prefix_rft"] == {"field": "learning_rate", "value": 2e-5, "validation": pytest.approx(40.0)}
    assert chosen["sft"]["value"] == 1e-4


def test_cut_rule_keeps_prefix_rft_as_the_reference_drops_the_far_behind_and_caps_the_rest():
    scores = {"prefix_rft": 30.0, "a": 40.0, "b": 36.0, "c": 35.5, "d": 34.0}
    chosen = {m: {"validation": v} for m, v in scores.items()}
    verdict = select_finalists(chosen, cut_points=5.0, max_finalists=3)
    # best 40: prefix_rft is 10 behind but is the reference; d is 6 behind (dropped); a, b (4 behind), c (4.5) pass
    assert verdict["prefix_rft"] == "reference"
    assert verdict["d"] == "dropped: 6.0 points behind the best (> 5)"
    assert [m for m, v in verdict.items() if v == "final"] == ["a", "b", "c"]
    verdict = select_finalists(chosen, cut_points=5.0, max_finalists=2)
    # the cap takes the best two by score: a (40) and b (36); c (35.5) falls to it
    assert {m for m, v in verdict.items() if v == "final"} == {"a", "b"}
    assert verdict["c"] == "dropped: beyond the 2 finalists"


def test_95_percent_interval_uses_student_t():
    # [1, 2, 3]: mean 2, sd 1, t(2 df) = 4.303 -> half-width 4.303 / sqrt(3) = 2.4843
    assert stats([1.0, 2.0, 3.0])["ci95"] == pytest.approx(2.4843, abs=1e-4)
    assert stats([5.0])["ci95"] is None
    assert t95(4) == 2.776 and t95(17) == 2.131 and t95(40) == 1.96


def _final(method, seed, test):
    return {"method": method, "seed": seed, "budget": {}, "final": {"test": {"avg@4": test}}}


def test_finals_pair_each_method_with_prefix_rft_of_the_same_seed():
    results = [_final("prefix_rft", 0, 0.40), _final("prefix_rft", 1, 0.30)]
    results += [_final("m", 0, 0.45), _final("m", 1, 0.31), _final("base", 0, 0.2), _final("base", 1, 0.2)]
    summary = summarize(results, k=4, references=("base", "prefix_rft"))
    assert summary["m"]["test_vs_prefix_rft"]["values"] == pytest.approx([5.0, 1.0])
    assert summary["m"]["test_vs_base"]["values"] == pytest.approx([25.0, 11.0])
    assert "test_vs_prefix_rft" not in summary["prefix_rft"]


@pytest.mark.slow
def test_tiny_protocol_tunes_selects_runs_finals_and_resumes(tmp_path, capsys):
    argv = ["--methods", "prefix_rft,rft", "--rl_grid", "1e-5,3e-5", "--tune_steps", "2", "--steps", "2"]
    argv += ["--prompts_per_step", "2", "--question_epochs", "2", "--eval_problems", "4", "--eval_k", "1"]
    argv += ["--curve_problems", "2", "--seeds", "1,2", "--jobs", "2", "--cut_points", "100"]
    argv += ["--output_dir", str(tmp_path)]
    assert protocol.main(argv) == 0
    tuned = sorted(p.name for p in (tmp_path / "tune").glob("*/*.json"))
    assert tuned == ["learning_rate=1e-05.json"] * 2 + ["learning_rate=3e-05.json"] * 2  # 2 methods x 2 values
    run = json.loads((tmp_path / "tune" / "rft" / "learning_rate=3e-05.json").read_text())
    assert list(run["final"]) == ["validation"] and run["settings"]["steps"] == 2
    finals = sorted(str(p.relative_to(tmp_path / "final")) for p in (tmp_path / "final").glob("*/*.json"))
    assert finals == [f"{m}/seed{s}.json" for m in ("base", "prefix_rft", "rft") for s in (1, 2)]
    assert list(json.loads((tmp_path / "final" / "rft" / "seed1.json").read_text())["final"]) == ["test", "ood"]
    assert (tmp_path / "results.png").exists() and (tmp_path / "differences.png").exists()
    capsys.readouterr()
    assert protocol.main(argv) == 0  # everything done: nothing is rerun
    out = capsys.readouterr().out
    assert "== tuning: 4 runs, 4 already done" in out and "== finals: 6 runs, 6 already done" in out


@pytest.mark.parametrize("command", ["demo", "compare", "protocol"])
def test_commands_refuse_validation_scoring_which_only_the_protocol_sets_per_stage(command, capsys):
    import importlib

    module = importlib.import_module(f"prefix_rft.recipes.{command}")
    message = f"prefix-rft {command} scores the test and OOD splits; --evaluate_on validation is prefix-rft protocol's"
    assert module.main(["--evaluate_on", "validation", "--output_dir", "/nonexistent/never-written"]) == 2
    assert capsys.readouterr().err == message + "\n"
