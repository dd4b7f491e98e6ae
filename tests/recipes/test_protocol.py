"""`prefix-rft protocol`: tuning never touches test or OOD, the choice and the cut rule, the intervals, resuming."""

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prefix_rft.recipes import protocol, toy_scoring, toy_task
from prefix_rft.recipes.compare import config_mismatch, stats, summarize, t95
from prefix_rft.recipes.protocol import (
    affordable_finalists,
    choose,
    cut_threshold,
    extension_round,
    finals_reserve,
    grid_extension,
    inputs,
    median_seconds,
    plan_mismatch,
    select_finalists,
    sft_only_values,
    sft_steps_run,
    tuning_jobs,
)
from prefix_rft.recipes.settings import RunSettings
from prefix_rft.recipes.toy import train_rows, validation_rows

ROOT = Path(__file__).resolve().parents[2]


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
    monkeypatch.setattr(toy_scoring, "evaluate_rows", lambda model, tok, rows, *rest: seen.append(rows) or _metrics())
    monkeypatch.setattr(toy_scoring, "eval_rows", lambda *a: pytest.fail("tuning touched the test or OOD split"))
    settings = RunSettings(steps=4, prompts_per_step=2, evaluate_on="validation", sft_val_problems=3)
    scores = toy_scoring.score_run(None, None, settings, seed=0, k=2, n=4, desc="t")
    assert list(scores) == ["validation"]
    # the 8 training questions, then 3 for early stopping, then the 4 scored: questions 12-15 of the seeded stream
    stream = toy_task.make_rows("train", 15, seed=0, config=toy_task.task_config(settings))
    assert seen == [stream[11:15]]


def _metrics():
    class Result:
        metrics = {"avg@2": 0.5}

    return Result()


def test_tuning_runs_every_grid_value_at_every_tuning_seed_at_the_finals_settings(tmp_path):
    settings = RunSettings(steps=100, curve_every=20)
    jobs = tuning_jobs("sft_best_rft", [3e-4, 6e-4], [100, 101], settings, tmp_path)
    assert [(j.seed, j.settings.sft_learning_rate, j.settings.learning_rate) for j in jobs] == [
        (100, 3e-4, 3e-5),
        (101, 3e-4, 3e-5),
        (100, 6e-4, 3e-5),
        (101, 6e-4, 3e-5),
    ]
    # the finals' horizon and curve points, scored on validation, selecting the best weights like every run
    assert {
        (j.settings.steps, j.settings.curve_every, j.settings.evaluate_on, j.settings.select_best) for j in jobs
    } == {(100, 20, "validation", True)}
    assert jobs[1].path == tmp_path / "tune" / "sft_best_rft" / "sft_learning_rate=0.0003" / "seed101.json"


def _tuned(method, field, value, accuracy, seed=100):
    return {"method": method, "seed": seed, "settings": {field: value}, "final": {"validation": {"avg@4": accuracy}}}


def test_each_method_keeps_its_best_mean_over_seeds_and_the_smaller_on_a_tie():
    tuned = [
        _tuned("prefix_rft", "learning_rate", 1e-5, 0.30),
        _tuned("prefix_rft", "learning_rate", 1e-5, 0.50, seed=101),  # mean 40
        _tuned("prefix_rft", "learning_rate", 2e-5, 0.44),
        _tuned("prefix_rft", "learning_rate", 2e-5, 0.36, seed=101),  # mean 40: a tie, the smaller value wins
        _tuned("prefix_rft", "learning_rate", 4e-5, 0.45),
        _tuned("prefix_rft", "learning_rate", 4e-5, 0.33, seed=101),  # mean 39
        _tuned("sft", "sft_learning_rate", 1e-4, 0.25),
    ]
    chosen = choose(tuned, k=4)
    assert chosen["prefix_rft"]["value"] == 1e-5
    assert chosen["prefix_rft"]["validation"] == pytest.approx(40.0)
    assert chosen["prefix_rft"]["per_seed"] == {100: pytest.approx(30.0), 101: pytest.approx(50.0)}
    assert chosen["prefix_rft"]["bracketed"] is False  # 1e-5 is the grid's lowest value
    assert chosen["sft"]["value"] == 1e-4


def test_grid_extends_beyond_the_edge_holding_the_best_until_bracketed_or_the_limit():
    upper = {1.5e-5: {0: 27.0}, 3e-5: {0: 42.0}, 6e-5: {0: 46.0}}
    assert grid_extension(upper, extended=0, limit=2) == pytest.approx(1.2e-4)  # best at the top: doubled
    lower = {2.5e-4: {0: 46.0, 1: 40.0}, 5e-4: {0: 38.0, 1: 37.0}, 1e-3: {0: 25.0, 1: 30.0}}
    assert grid_extension(lower, extended=0, limit=2) == pytest.approx(1.25e-4)  # best mean 43 at the bottom: halved
    inside = {1.5e-5: {0: 27.0}, 3e-5: {0: 38.0}, 6e-5: {0: 35.0}}
    assert grid_extension(inside, extended=0, limit=2) is None  # bracketed
    assert grid_extension(upper, extended=2, limit=2) is None  # the limit reached


def test_cut_threshold_is_a_multiple_of_the_tuning_seeds_spread_of_paired_differences():
    chosen = {
        "prefix_rft": {"per_seed": {100: 30.0, 101: 32.0}},
        "a": {"per_seed": {100: 40.0, 101: 38.0}},  # differences 10, 6: variance 8
        "b": {"per_seed": {100: 35.0, 101: 35.0}},  # differences 5, 3: variance 2
    }
    sigma, threshold = cut_threshold(chosen, multiple=2.0)
    # sigma = sqrt((8 + 2) / 2) = sqrt(5) = 2.2361; T = 2 x sigma x sqrt(2 / 2) = 4.4721
    assert sigma == pytest.approx(2.2361, abs=1e-4)
    assert threshold == pytest.approx(4.4721, abs=1e-4)
    chosen["prefix_rft"]["per_seed"][102] = 31.0
    chosen["a"]["per_seed"][102] = 41.0  # differences 10, 6, 10: variance 5.3333
    chosen["b"]["per_seed"][102] = 35.0  # differences 5, 3, 4: variance 1
    # sigma = sqrt(6.3333 / 2) = 1.7795; T = 2 x 1.7795 x sqrt(2 / 3) = 2.9059
    assert cut_threshold(chosen, multiple=2.0)[1] == pytest.approx(2.9059, abs=1e-4)


def test_cut_rule_keeps_prefix_rft_as_the_reference_drops_the_far_behind_and_caps_the_rest():
    scores = {"prefix_rft": 30.0, "a": 40.0, "b": 36.0, "c": 35.5, "d": 34.0}
    chosen = {m: {"validation": v} for m, v in scores.items()}
    verdict = select_finalists(chosen, cut_points=5.0, max_finalists=3)
    # best 40: prefix_rft is 10 behind but is the reference; d is 6 behind (dropped); a, b (4 behind), c (4.5) pass
    assert verdict["prefix_rft"] == "reference"
    assert verdict["d"] == "dropped: 6.0 points behind the best (> 5.0)"
    assert [m for m, v in verdict.items() if v == "final"] == ["a", "b", "c"]
    verdict = select_finalists(chosen, cut_points=5.0, max_finalists=2)
    # the budget's cap takes the best two by score: a (40) and b (36); c (35.5) falls to it
    assert {m for m, v in verdict.items() if v == "final"} == {"a", "b"}
    assert verdict["c"] == "cut by budget: beyond the 2 finalists it pays for"
    # the same cap set by --max_finalists while the budget pays for more: not a budget cut
    verdict = select_finalists(chosen, cut_points=5.0, max_finalists=2, budget_bound=False)
    assert verdict["c"] == "beyond the cap of 2 finalists (--max_finalists)"


def test_sft_only_values_are_those_where_every_tuning_run_left_rl_no_step():
    def run(value, rl_steps, method="sft_best_rft"):
        return {"method": method, "settings": {"sft_learning_rate": value}, "sft_selection": {"rl_steps": rl_steps}}

    runs = [run(2.5e-4, 0), run(2.5e-4, 0), run(5e-4, 0), run(5e-4, 30), run(1e-3, 60), run(1e-3, 0, "other")]
    # 2.5e-4: both seeds SFT only; 5e-4: one seed reached RL; 1e-3: RL ran
    assert sft_only_values("sft_best_rft", runs) == [2.5e-4]
    assert sft_only_values("prefix_rft", runs) == []  # no early-stopped SFT stage


def test_a_later_command_must_replay_the_plan_its_runs_were_made_for():
    def plan(args, settings):  # as plan.json holds it
        return json.loads(json.dumps({"arguments": vars(args), "settings": dataclasses.asdict(settings)}))

    args, settings = protocol.ProtocolArguments(), RunSettings()
    stored = plan(args, settings)
    assert plan_mismatch(stored, plan(protocol.ProtocolArguments(stage="tuning", jobs=2), settings)) == {}
    changed = protocol.ProtocolArguments(budget_hours=30.0, max_finalists=3)
    assert plan_mismatch(stored, plan(changed, dataclasses.replace(settings, steps=50))) == {
        "budget_hours": (24.0, 30.0),
        "max_finalists": (6, 3),
        "steps": (100, 50),
    }


def test_budget_takes_extensions_best_method_first_until_one_does_not_fit():
    chosen = {"a": {"validation": 40.0}, "b": {"validation": 45.0}, "c": {"validation": 30.0}}
    proposals = {"a": 1.2e-4, "b": 1.2e-4, "c": 7.5e-6}
    cost = {"a": 1000.0, "b": 1200.0, "c": 100.0}
    # b (45) first: 1200 of 2500; a (40): 1000 more, 300 left; c's 100 would fit but comes after: taken too
    assert extension_round(proposals, chosen, cost, left=2500.0) == (["b", "a", "c"], False)
    # 2000: b (1200), then a's 1000 > 800 left ends every extension, c's included
    assert extension_round(proposals, chosen, cost, left=2000.0) == (["b"], True)


def test_budget_pays_for_the_largest_number_of_finalists_that_fits():
    # 5 seeds x 600 s per run, base 5 x 30 = 150 s: K others cost 5 x 600 x (K + 1) + 150
    assert affordable_finalists(21150.0, 600.0, n_seeds=5, max_finalists=6) == 6  # 5 x 600 x 7 + 150
    assert affordable_finalists(21149.0, 600.0, n_seeds=5, max_finalists=6) == 5
    assert affordable_finalists(9150.0, 600.0, n_seeds=5, max_finalists=6) == 2  # 5 x 600 x 3 + 150
    assert affordable_finalists(99999.0, 600.0, n_seeds=5, max_finalists=6) == 6  # the cap
    assert affordable_finalists(1000.0, 600.0, n_seeds=5, max_finalists=6) == 0


def _fake_runs(score):
    """`run_jobs` without training: every run takes 100 s and scores `score(method, learning_rate)`."""

    def run_jobs(jobs, n_jobs, stage):
        return [
            {
                "method": j.method,
                "seed": j.seed,
                "settings": {"learning_rate": j.settings.learning_rate},
                "final": {"validation": {"avg@4": score(j.method, j.settings.learning_rate)}},
                "seconds": 100.0,
            }
            for j in jobs
        ]

    return run_jobs


@pytest.mark.parametrize(
    ("budget_seconds", "runs", "a_values", "status"),
    [
        # ample: a (better at every larger rate) is doubled twice, 6e-5 -> 1.2e-4 -> 2.4e-4, and stays at the edge
        (86400.0, 16, [1.5e-5, 3e-5, 6e-5, 1.2e-4, 2.4e-4], {}),
        # 2600 s: 12 grid runs (1200 s) and the finals' reserve 5 x ((1 + 1) x 100 + 30) = 1150 s leave 250 s for
        # round 1's 2 runs (200 s); round 2 has 50 s left and ends the extensions
        (2600.0, 14, [1.5e-5, 3e-5, 6e-5, 1.2e-4], {"a": "at an edge: extensions stopped by budget in round 2"}),
    ],
)
def test_tuning_extends_a_grid_at_its_edge_until_the_limit_or_the_budget(
    tmp_path, monkeypatch, budget_seconds, runs, a_values, status
):
    # prefix_rft peaks inside its grid (3e-5) and is never extended
    monkeypatch.setattr(
        protocol, "run_jobs", _fake_runs(lambda m, lr: 1000 * lr if m == "a" else 0.3 - abs(lr - 3e-5))
    )
    args = protocol.ProtocolArguments(extensions=2, max_finalists=1, budget_hours=budget_seconds / 3600)
    done, why = protocol.tuning_stage(["prefix_rft", "a"], args, RunSettings(), tmp_path, k=4)
    assert len(done) == runs
    assert sorted({r["settings"]["learning_rate"] for r in done if r["method"] == "a"}) == pytest.approx(a_values)
    assert {r["settings"]["learning_rate"] for r in done if r["method"] == "prefix_rft"} == {1.5e-5, 3e-5, 6e-5}
    assert why == status


def test_finals_reserve_and_run_costs_use_the_measured_medians():
    runs = [{"method": "a", "seconds": 100.0}, {"method": "a", "seconds": 300.0}, {"method": "b", "seconds": 500.0}]
    assert median_seconds(runs, "a") == 200.0 and median_seconds(runs, "c") == 300.0  # c unmeasured: all runs
    # 5 seeds x ((1 + 2) x 300 + 30) = 4650
    assert finals_reserve(runs, n_seeds=5, max_finalists=2) == 4650.0


def test_inputs_count_labelled_questions_and_demo_tokens_offered_in_rows_and_trained():
    settings = RunSettings(steps=8, prompts_per_step=4, question_epochs=2, sft_val_problems=5, select_best=True)
    # 8 x 4 / 2 = 16 questions; 5 selection questions; demos of 3 + 4 tokens offered at both passes: 14; the RL
    # stages logged 9.0 demo tokens in their rows, of which the loss trained 6.0
    assert inputs("rl_sft", settings, [3, 4], rl_demo_tokens=9.0, rl_trained=6.0, sft_steps=0) == {
        "training_questions": 16,
        "question_visits": 32,
        "selection_questions": 5,
        "labelled_questions": 21,
        "demo_tokens_offered": 14,
        "demo_tokens_in_rows": 9,
        "demo_tokens_trained": 6,
    }
    assert inputs("rft", settings, [3, 4], 0.0, 0.0, 0)["demo_tokens_offered"] == 0
    # SFT for 4 of the 8 steps trains whole demos: half of the 14 offered, 7, plus its RFT stage's logged 0
    sft_rft = inputs("sft_rft", settings, [3, 4], 0.0, 0.0, sft_steps=4)
    assert (sft_rft["demo_tokens_in_rows"], sft_rft["demo_tokens_trained"]) == (7, 7)
    assert set(inputs("base", settings, [3, 4], 0.0, 0.0, 0).values()) == {0}
    plain = RunSettings(steps=8, prompts_per_step=4, question_epochs=2, sft_val_problems=5)
    assert inputs("prefix_rft", plain, [3], 0.0, 0.0, 0)["selection_questions"] == 0
    assert inputs("sft_best_rft", plain, [3], 0.0, 0.0, 0)["labelled_questions"] == 21  # its early stopping's 5
    assert sft_steps_run("sft_rft", {"settings": {"steps": 9}}) == 4
    assert sft_steps_run("sft_best_rft", {"settings": {"steps": 9}, "sft_selection": {"sft_steps": 6}}) == 6
    assert sft_steps_run("luffy", {"settings": {"steps": 9}}) == 0


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
def test_tiny_protocol_tunes_extends_selects_runs_finals_and_resumes(tmp_path, capsys):
    argv = ["--methods", "prefix_rft,sft", "--rl_grid", "3e-5", "--sft_grid", "5e-4,1e-3", "--tune_seeds", "100,101"]
    argv += ["--extensions", "1"]
    argv += ["--steps", "2", "--prompts_per_step", "2", "--question_epochs", "2", "--eval_problems", "4"]
    argv += ["--eval_k", "2", "--curve_problems", "2", "--curve_every", "2", "--sft_val_problems", "2"]
    argv += ["--seeds", "1,2", "--jobs", "2", "--spread_multiple", "1000", "--output_dir", str(tmp_path)]
    assert protocol.main(argv) == 0
    tuned = sorted(str(p.relative_to(tmp_path / "tune")) for p in (tmp_path / "tune").glob("*/*/*.json"))
    # Prefix-RFT's one value (nothing to extend) and SFT's two x 2 seeds, then one extension round for SFT: with
    # two values its best is at an edge, so 2.5e-4 or 2e-3 is run at both seeds
    assert {p.split("/")[1] for p in tuned if p.startswith("prefix_rft/")} == {"learning_rate=3e-05"}
    sft_values = {p.split("/")[1] for p in tuned if p.startswith("sft/")}
    assert len(sft_values) == 3 and sft_values - {"sft_learning_rate=0.0005", "sft_learning_rate=0.001"} in (
        {"sft_learning_rate=0.00025"},
        {"sft_learning_rate=0.002"},
    )
    assert len(tuned) == 8
    run = json.loads((tmp_path / "tune" / "prefix_rft" / "learning_rate=3e-05" / "seed101.json").read_text())
    assert list(run["final"]) == ["validation"] and run["settings"]["steps"] == 2
    assert set(run["final"]["validation"]) >= {"avg@2", "pass@1", "pass@2"}
    # 2 x 2 / 2 = 2 training questions, 2 selection questions; demo tokens of 2 questions at 2 passes
    tokens = ("demo_tokens_offered", "demo_tokens_in_rows", "demo_tokens_trained")
    assert {k: v for k, v in run["inputs"].items() if k not in tokens} == {
        "training_questions": 2,
        "question_visits": 4,
        "selection_questions": 2,
        "labelled_questions": 4,
    }
    assert run["inputs"]["demo_tokens_offered"] > 0 and run["inputs"]["demo_tokens_offered"] % 2 == 0
    # one hybrid row per question visit, each a drawn prefix (at most 95%) of its demo: fewer tokens than offered
    logged = sum(h.get("prefix/demo_tokens", 0) for h in run["log_history"])
    assert 0 < run["inputs"]["demo_tokens_in_rows"] == round(logged) <= run["inputs"]["demo_tokens_offered"]
    # the loss trains the prefix tokens entropy selection keeps (20%): fewer than the rows hold
    trained = sum(h.get("demo/trained_tokens", 0) for h in run["log_history"])
    assert 0 < run["inputs"]["demo_tokens_trained"] == round(trained) < run["inputs"]["demo_tokens_in_rows"]
    assert [e["step"] for e in run["model_selection"]["evaluations"]] == [0, 2]
    finals = sorted(str(p.relative_to(tmp_path / "final")) for p in (tmp_path / "final").glob("*/*.json"))
    assert finals == [f"{m}/seed{s}.json" for m in ("base", "prefix_rft", "sft") for s in (1, 2)]
    final = json.loads((tmp_path / "final" / "sft" / "seed1.json").read_text())
    assert list(final["final"]) == ["test", "ood"] and "pass@2" in final["final"]["ood"]
    assert final["inputs"]["labelled_questions"] == 4 and final["model_selection"]["best_step"] in (0, 2)
    demo_tokens = [final["inputs"][f"demo_tokens_{k}"] for k in ("offered", "in_rows", "trained")]
    assert demo_tokens[0] > 0 and len(set(demo_tokens)) == 1  # SFT: whole demos, every token trained
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["verdict"] == {"prefix_rft": "reference", "sft": "final"}
    assert (tmp_path / "results.png").exists() and (tmp_path / "differences.png").exists()
    capsys.readouterr()
    assert protocol.main(argv) == 0  # everything done: nothing is rerun
    out = capsys.readouterr().out
    assert "== tuning: 6 runs, 6 already done" in out and "== extension 1: 2 runs, 2 already done" in out
    assert "== finals: 6 runs, 6 already done" in out
    # the records exported into the repository (log histories thinned) resume on another machine: nothing is rerun
    exported = tmp_path / "exported"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "export_protocol.py"), str(tmp_path), str(exported)]
    subprocess.run([*cmd, "--plots-prefix", str(exported / "plot")], check=True, timeout=120)
    thin = json.loads((exported / "tune" / "sft" / "sft_learning_rate=0.001" / "seed100.json").read_text())
    assert thin["log_history"] and all(set(e) <= {"step", "reward", "loss"} for e in thin["log_history"])
    assert protocol.main([*argv[:-1], str(exported)]) == 0
    out = capsys.readouterr().out
    assert "== tuning: 6 runs, 6 already done" in out and "== finals: 6 runs, 6 already done" in out
    # a reviewer's re-run of the finals at unseen seeds: the tuning records alone (no plan.json, no finals) in a new
    # folder, other --seeds: the tuning and its extension are replayed from the records, only the finals run
    rerun = tmp_path / "rerun"
    shutil.copytree(exported / "tune", rerun / "tune")
    seeds_at = argv.index("--seeds") + 1
    assert protocol.main([*argv[:seeds_at], "3,4", *argv[seeds_at + 1 : -1], str(rerun)]) == 0
    out = capsys.readouterr().out
    assert "== tuning: 6 runs, 6 already done" in out and "== extension 1: 2 runs, 2 already done" in out
    assert "== finals: 6 runs, 0 already done" in out
    finals = sorted(str(p.relative_to(rerun / "final")) for p in (rerun / "final").glob("*/*.json"))
    assert finals == [f"{m}/seed{s}.json" for m in ("base", "prefix_rft", "sft") for s in (3, 4)]
    assert json.loads((rerun / "selection.json").read_text())["chosen"] == selection["chosen"]


@pytest.mark.parametrize("command", ["demo", "compare", "protocol"])
def test_commands_refuse_validation_scoring_which_only_the_protocol_sets_per_stage(command, capsys):
    import importlib

    module = importlib.import_module(f"prefix_rft.recipes.{command}")
    message = f"prefix-rft {command} scores the test and OOD splits; --evaluate_on validation is prefix-rft protocol's"
    assert module.main(["--evaluate_on", "validation", "--output_dir", "/nonexistent/never-written"]) == 2
    assert capsys.readouterr().err == message + "\n"


def test_run_cost_is_cpu_time_so_waiting_is_not_charged():
    before = protocol.process_cpu_seconds()
    time.sleep(0.3)  # waiting, as a run does while another process has the core
    assert protocol.process_cpu_seconds() - before < 0.05
    # busy work is charged, however long a loaded machine takes to give it 0.1 s of CPU
    busy_from, deadline = protocol.process_cpu_seconds(), time.monotonic() + 60
    while protocol.process_cpu_seconds() - busy_from < 0.1 and time.monotonic() < deadline:
        pass
    assert protocol.process_cpu_seconds() - busy_from >= 0.1


def test_a_run_uses_one_thread_whatever_the_cores_and_records_it(tmp_path, monkeypatch):
    threads = []

    def fake_run(method, settings, seed, output_dir):
        threads.append(torch.get_num_threads())
        return {"base_model": "unused", "log_history": [], "settings": {"steps": settings.steps}}

    monkeypatch.setattr(protocol, "run_method", fake_run)
    job = protocol.Job("rft", 0, RunSettings(steps=4), tmp_path / "seed0.json")
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as a process on 2 cores starts
    try:
        _, result = protocol.run_job(job)
    finally:
        torch.set_num_threads(before)
    assert threads == [1] and result["threads"] == 1
    assert json.loads(job.path.read_text())["threads"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget_hours", "0"], "--budget_hours must be a positive number of CPU-hours, got 0"),
        (["--budget_hours", "-1"], "--budget_hours must be a positive number of CPU-hours, got -1"),
        (["--extensions", "-1"], "--extensions must be a finite number at least 0, got -1"),
        (["--max_finalists", "-2"], "--max_finalists must be a finite number at least 0, got -2"),
        (["--spread_multiple", "-0.5"], "--spread_multiple must be a finite number at least 0, got -0.5"),
        (["--spread_multiple", "nan"], "--spread_multiple must be a finite number at least 0, got nan"),
        (["--spread_multiple", "inf"], "--spread_multiple must be a finite number at least 0, got inf"),
        (["--budget_hours", "nan"], "--budget_hours must be a positive number of CPU-hours, got nan"),
        (["--rl_grid", "1e-5,inf"], "--rl_grid: expected comma-separated positive numbers, got '1e-5,inf'"),
        (["--sft_grid", "5e-4,x"], "--sft_grid: expected comma-separated positive numbers, got '5e-4,x'"),
    ],
)
def test_protocol_arguments_no_plan_could_use_are_refused_before_any_run(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(protocol, "tuning_stage", lambda *a: pytest.fail("started tuning on bad arguments"))
    out = tmp_path / "out"
    assert protocol.main([*argv, "--output_dir", str(out)]) == 2
    assert capsys.readouterr().err == f"prefix-rft protocol: {message}\n"
    assert not out.exists()


def test_every_committed_protocol_v2_run_resumes_at_this_commit():
    # The finals command replays the tuning runs from their records and refuses one whose trainer configs differ
    # from what this code builds (`config_mismatch`): a default changed, or an option added at another default than
    # what the runs did, would stop protocol v2 from finishing.
    records = sorted((ROOT / "docs" / "benchmarks" / "protocol_v2").glob("*/*/*/seed*.json"))
    assert records  # the tuning records exported while v2 runs (docs/results.md)
    init_fields = {f.name for f in dataclasses.fields(RunSettings) if f.init}
    refused = {}
    for path in records:
        record = json.loads(path.read_text())
        settings = RunSettings(**{k: v for k, v in record["settings"].items() if k in init_fields})
        mismatch = config_mismatch(record, record["method"], record["seed"], settings)
        if mismatch:
            refused[str(path.relative_to(ROOT))] = mismatch
    assert refused == {}
