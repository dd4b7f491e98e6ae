"""`prefix-rft compare`: equal budgets, and a test-sized run that resumes without redoing finished runs."""

import dataclasses
import json

import pytest

from prefix_rft.recipes import compare, toy_task
from prefix_rft.recipes.settings import RunSettings, parse_settings
from prefix_rft.recipes.toy import (
    BASE,
    METHODS,
    SFT_METHODS,
    load_base,
    method_budget,
    rl_config,
    stage_configs,
    train_rows,
)
from prefix_rft.tasks.arithmetic import demonstrate, parse_problem
from prefix_rft.tasks.tokenizer import build_tokenizer

TRAINED = [m for m in METHODS if m != BASE]


def test_every_method_gets_the_same_optimizer_steps_and_prompts():
    settings = RunSettings(steps=10, prompts_per_step=4)
    budgets = {m: method_budget(m, settings) for m in TRAINED}
    assert {b["optimizer_steps"] for b in budgets.values()} == {10}
    assert {b["prompts_per_step"] for b in budgets.values()} == {4}


def test_rl_methods_get_eight_rollouts_per_prompt():
    # 4 prompts x 8 rollouts (LUFFY and RL+SFT: 7 generated + 1 demonstration in the group) = 32 per step
    settings = RunSettings(steps=10, prompts_per_step=4)
    for method in TRAINED:
        if method != "sft":
            assert method_budget(method, settings)["rollouts_per_step"] == 32, method


def test_the_base_row_is_untrained():
    assert method_budget(BASE, RunSettings(steps=10)) == {
        "optimizer_steps": 0,
        "rollouts_per_step": 0,
        "prompts_per_step": 0,
    }


def _run(method, seed, test, ood):
    return {
        "method": method,
        "seed": seed,
        "budget": {"optimizer_steps": 40, "rollouts_per_step": 64},
        "final": {"test": {"avg@4": test}, "ood": {"avg@4": ood}},
    }


def test_summary_pairs_each_method_with_the_base_of_the_same_seed():
    results = [_run("base", 0, 0.30, 0.05), _run("base", 1, 0.20, 0.10)]
    results += [_run("m", 0, 0.32, 0.08), _run("m", 1, 0.25, 0.10)]
    summary = compare.summarize(results, k=4)
    assert summary["m"]["test"]["mean"] == pytest.approx(28.5)  # (32 + 25) / 2
    # paired: test 32-30 = 2 and 25-20 = 5 -> 3.5, sd |5-2|/sqrt(2) = 2.1213; OOD 8-5 = 3 and 10-10 = 0 -> 1.5
    assert summary["m"]["test_vs_base"]["values"] == pytest.approx([2.0, 5.0])
    assert summary["m"]["test_vs_base"]["mean"] == pytest.approx(3.5)
    assert summary["m"]["test_vs_base"]["sd"] == pytest.approx(2.1213, abs=1e-4)
    assert summary["m"]["ood_vs_base"]["mean"] == pytest.approx(1.5)
    assert "| m | 28.5 ± 4.9 | 9.0 ± 1.4 | +3.5 ± 2.1 | +1.5 ± 2.1 | 2 |" in compare.results_table(summary, k=4)


def parse(argv: list[str]) -> tuple:
    return parse_settings(argv, prog="test")


def test_demo_style_flag_reaches_the_training_demos():
    (settings,) = parse(["--steps", "1", "--prompts-per-step", "4", "--demo-style", "rewrite"])
    for row in train_rows("prefix_rft", settings, seed=0):
        first_line = row["demos"][0].split("\n")[0]
        assert "=" not in first_line  # `45-9+6`, the chain left after one step, not `38+7=45`
    with pytest.raises(SystemExit):  # argparse's usage error
        parse(["--demo-style", "fast"])


def test_rl_set_overrides_reach_every_rl_config_and_unknown_fields_are_refused():
    (settings,) = parse(["--rl-set", "prefix_advantage=paper", "--rl-set", "prefix_entropy_keep_fraction=0.5"])
    assert settings.extra == {"prefix_advantage": "paper", "prefix_entropy_keep_fraction": 0.5}  # 0.5 read as a number
    config = rl_config("prefix_rft", settings, seed=0, output_dir="unused")
    assert (config.prefix_advantage, config.prefix_entropy_keep_fraction) == ("paper", 0.5)
    with pytest.raises(SystemExit, match="no_such_field"):
        parse(["--rl-set", "no_such_field=1"])
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        parse(["--rl-set", "prefix_advantage"])


def test_rollout_cap_reaches_every_rl_config_and_fits_the_longest_train_demo():
    (settings,) = parse(["--max-completion-length", "110"])
    for method in TRAINED:
        if method not in SFT_METHODS:
            assert rl_config(method, settings, seed=0, output_dir="unused").max_completion_length == 110, method
    # The longest train demo, by hand: 99 then seven +9 (8 terms, the most) runs 108, 117, ..., 162. Seven lines
    # `AAA+9=BBB` of at most 9 characters plus a newline (99+9=108 has 8), `check 162-9=153 ok` (18) plus a newline,
    # `answer: 162` (11): 69 + 19 + 11 = 99 characters, one token each, plus EOS = 100 tokens.
    tokenizer = build_tokenizer()
    demo = demonstrate(parse_problem("99+9+9+9+9+9+9+9"))
    assert len(tokenizer(demo + tokenizer.eos_token, add_special_tokens=False)["input_ids"]) == 100
    assert RunSettings().max_completion_length >= 100
    with pytest.raises(ValueError, match="between 1 and 192"):
        rl_config("prefix_rft", RunSettings(max_completion_length=193), seed=0, output_dir="unused")
    with pytest.raises(ValueError, match="between 1 and 192"):  # the --rl-set route is checked too
        rl_config("prefix_rft", RunSettings(rl_set=["max_completion_length=200"]), seed=0, output_dir="unused")


def test_base_model_is_built_with_the_demo_style(monkeypatch):
    seen = []

    def capture(config, cache_dir=None, rebuild=False):
        seen.append(config)
        raise KeyboardInterrupt  # stop before anything is loaded

    monkeypatch.setattr(toy_task, "load_or_pretrain_base", capture)
    with pytest.raises(KeyboardInterrupt):
        load_base(RunSettings(demo_style="rewrite", base_size="test"))
    assert seen[0].task.demo_style == "rewrite" and seen[0].model_size == "test"


def test_resuming_refuses_finished_runs_made_with_other_settings(tmp_path, monkeypatch):
    stored = {"method": "rft", "seed": 0, "settings": {"steps": 5, "prompts_per_step": 16}}
    path = tmp_path / "runs" / "rft" / "seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(stored))
    monkeypatch.setattr(compare, "run_method", lambda *a: pytest.fail("a finished run was redone"))
    # same settings (fields the stored run does not name count as defaults): reused as is
    assert compare.run_all(["rft"], [0], RunSettings(steps=5), tmp_path) == [stored]
    assert compare.run_all(["rft"], [0], RunSettings(steps=5, rebuild_base=True), tmp_path) == [stored]
    with pytest.raises(SystemExit, match="steps"):  # stored run: 5 steps; asked: 6
        compare.run_all(["rft"], [0], RunSettings(steps=6), tmp_path)
    with pytest.raises(SystemExit, match="max_completion_length"):  # stored run: the default 128; asked: 192
        compare.run_all(["rft"], [0], RunSettings(steps=5, max_completion_length=192), tmp_path)


def write_run(tmp_path, record):
    path = tmp_path / "runs" / record["method"] / f"seed{record['seed']}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path


def test_stage_configs_hold_each_stage_steps_and_no_run_paths():
    # 8 steps: sft_rft trains SFT 8 // 2 = 4, then RFT 4; sft_best_rft stopped after 3 SFT steps leaves RFT 5
    settings = RunSettings(steps=8)
    configs = stage_configs("sft_rft", settings, seed=7)
    assert list(configs) == ["sft", "rl"] and [c["max_steps"] for c in configs.values()] == [4, 4]
    assert configs["sft"]["seed"] == 7 and "output_dir" not in configs["sft"] and "run_name" not in configs["rl"]
    configs = stage_configs("sft_best_rft", settings, seed=0, sft_steps=3)
    assert [c["max_steps"] for c in configs.values()] == [8, 5]
    assert list(stage_configs("sft_best_rft", settings, seed=0, sft_steps=8)) == ["sft_best"]  # no RL step left
    assert stage_configs(BASE, settings, seed=0) == {}


def test_resuming_checks_a_finished_run_recorded_trainer_configs(tmp_path, monkeypatch, capsys):
    settings = RunSettings(steps=5)
    monkeypatch.setattr(compare, "run_method", lambda *a: pytest.fail("a finished run was redone"))
    record = {"method": "trapo", "seed": 0, "settings": {"steps": 5}, "config": stage_configs("trapo", settings, 0)}
    assert record["config"]["rl"]["trapo_escalation"] == "in_step" and record["config"]["rl"]["max_steps"] == 5
    path = write_run(tmp_path, record)
    assert compare.run_all(["trapo"], [0], settings, tmp_path) == [record]  # the same configs: reused
    record["config"]["rl"]["trapo_escalation"] = "previous_visit"  # a run made before the default changed
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"'rl.trapo_escalation': \('previous_visit', 'in_step'\)") as refused:
        compare.run_all(["trapo"], [0], settings, tmp_path)
    assert "rl.max_steps" not in str(refused.value)  # only the field that differs is named
    del record["config"]  # a run made before configs were recorded: accepted on its settings, with a note
    path.write_text(json.dumps(record))
    assert compare.run_all(["trapo"], [0], settings, tmp_path) == [record]
    assert (
        capsys.readouterr().out
        == f"note: {path} has no record of its trainer configs; only its settings were checked\n"
    )


def test_resuming_ignores_prefix_fields_that_acted_on_neither_run_without_hybrid_rows(tmp_path, monkeypatch):
    settings = RunSettings(steps=5)
    monkeypatch.setattr(compare, "run_method", lambda *a: pytest.fail("a finished run was redone"))
    record = {"method": "rft", "seed": 0, "settings": {"steps": 5}, "config": stage_configs("rft", settings, 0)}
    assert record["config"]["rl"]["prefix_ratio_decay_steps"] == 500  # the default: no schedule acts on rft
    record["config"]["rl"]["prefix_ratio_decay_steps"] = 5  # as recorded when it was built as the run's steps
    path = write_run(tmp_path, record)
    assert compare.run_all(["rft"], [0], settings, tmp_path) == [record]  # num_hybrid=0 then and now: reused
    record["config"]["rl"]["prefix_truncate_long_demos"] = True  # acts without hybrid rows: still compared
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"\{'rl.prefix_truncate_long_demos': \(True, False\)\}"):
        compare.run_all(["rft"], [0], settings, tmp_path)
    # prefix_rft has hybrid rows: its schedule acted, so a recorded 7 against the 5 built now is refused
    record = {
        "method": "prefix_rft",
        "seed": 0,
        "settings": {"steps": 5},
        "config": stage_configs("prefix_rft", settings, 0),
    }
    record["config"]["rl"]["prefix_ratio_decay_steps"] = 7
    write_run(tmp_path, record)
    with pytest.raises(SystemExit, match=r"\{'rl.prefix_ratio_decay_steps': \(7, 5\)\}"):
        compare.run_all(["prefix_rft"], [0], settings, tmp_path)


def test_resuming_takes_an_option_a_record_predates_as_its_default(tmp_path, monkeypatch):
    # prefix_success_rows was added (default "on_policy", the behaviour before it) after runs had been recorded
    settings = RunSettings(steps=5)
    monkeypatch.setattr(compare, "run_method", lambda *a: pytest.fail("a finished run was redone"))
    record = {
        "method": "prefix_rft",
        "seed": 0,
        "settings": {"steps": 5},
        "config": stage_configs("prefix_rft", settings, 0),
    }
    del record["config"]["rl"]["prefix_success_rows"]
    path = write_run(tmp_path, record)
    assert compare.run_all(["prefix_rft"], [0], settings, tmp_path) == [record]  # built at its default: reused
    # built now at another value (what the run never did) it is compared, and refused
    (tuned,) = parse(["--steps", "5", "--rl-set", "prefix_seed=3"])
    record["settings"] = dataclasses.asdict(tuned)  # the run's settings as they are now: only the config differs
    del record["config"]["rl"]["prefix_seed"]
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"\{'rl.prefix_seed': \('<absent>', 3\)\}"):
        compare.run_all(["prefix_rft"], [0], tuned, tmp_path)
    # a TRL field at its default is no project option: its default may change what a newer TRL trains
    record["settings"], record["config"] = {"steps": 5}, stage_configs("prefix_rft", settings, 0)
    del record["config"]["rl"]["top_p"]
    path.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"\{'rl.top_p': \('<absent>', 1.0\)\}"):
        compare.run_all(["prefix_rft"], [0], settings, tmp_path)


def test_resuming_refuses_a_finished_run_whose_rl_stage_was_not_run(tmp_path, monkeypatch):
    # sft_best_rft stopped SFT after 4 of 5 steps: its RL stage had 1 step, but the record holds none
    settings = RunSettings(steps=5)
    config = {"sft_best": stage_configs("sft_best_rft", settings, 0, sft_steps=5)["sft_best"]}
    selection = {"sft_steps": 4, "rl_steps": 1}
    record = {
        "method": "sft_best_rft",
        "seed": 0,
        "settings": {"steps": 5},
        "config": config,
        "sft_selection": selection,
    }
    write_run(tmp_path, record)
    with pytest.raises(SystemExit, match=r"'rl': \('not run', 'run'\)"):
        compare.run_all(["sft_best_rft"], [0], settings, tmp_path)


def test_unequal_budgets_are_refused_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr(compare, "method_budgets", lambda methods, s: {"rft": 10, "prefix_rft": 20})
    monkeypatch.setattr(compare, "run_all", lambda *a: pytest.fail("ran despite unequal budgets"))
    assert compare.main(["--methods", "rft,prefix_rft", "--seeds", "1"]) == 2
    assert capsys.readouterr().err.startswith("prefix-rft compare: methods would train for unequal numbers")


def test_sft_then_rft_splits_the_steps():
    # 11 steps: 5 of SFT, then 6 of RFT
    assert method_budget("sft_rft", RunSettings(steps=11))["optimizer_steps"] == 11


@pytest.mark.slow
def test_tiny_compare_runs_and_resumes(tmp_path, monkeypatch):
    argv = [
        "--methods",
        "base,prefix_rft,rft,sft,sft_rft,rl_sft,luffy,relift,sft_best_rft,prefix_rft_prompt_hint",
        "--seeds",
        "1",
        "--sft-eval-every",
        "1",
        "--sft-patience",
        "1",
        "--sft-val-problems",
        "4",
        "--steps",
        "2",
        "--prompts-per-step",
        "2",
        "--eval-problems",
        "4",
        "--eval-k",
        "1",
        "--curve-every",
        "2",
        "--curve-problems",
        "4",
        "--base-size",
        "test",
        "--base-steps",
        "3",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert compare.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    methods = ["base", "luffy", "prefix_rft", "prefix_rft_prompt_hint", "relift", "rft", "rl_sft", "sft"]
    methods += ["sft_best_rft", "sft_rft"]
    assert sorted(r["method"] for r in results["runs"]) == methods
    runs = {r["method"]: r for r in results["runs"]}
    assert [p["step"] for p in runs["base"]["curve"]] == [0]  # untrained: one point
    assert [p["step"] for p in runs["prefix_rft"]["curve"]] == [0, 2]
    # SFT then RFT: 1 SFT step, then 1 RFT step counted after it (points at 0, 1 from SFT's end, and 2)
    assert [p["step"] for p in runs["sft_rft"]["curve"]] == [0, 1, 2]
    # SFT to its best: wherever it stops (step 1 or 2), the curve keeps the run's grid of 2 steps
    selection = runs["sft_best_rft"]["sft_selection"]
    assert selection["sft_steps"] + selection["rl_steps"] == 2
    assert [p["step"] for p in runs["sft_best_rft"]["curve"]] == [0, 2]
    assert (tmp_path / "out" / "results.png").stat().st_size > 0
    assert "| prefix_rft |" in (tmp_path / "out" / "results.md").read_text()
    assert "| base |" in (tmp_path / "out" / "results.md").read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(compare, "run_method", must_not_run)
    assert compare.main(argv) == 0


def test_base_set_overrides_reach_the_base_config_cast_to_the_field_type(monkeypatch):
    # 4.0 names the same base as 4 (int field); 0.06 is demo_fraction's default, so it is dropped
    (settings,) = parse(
        ["--base-set", "corpus_max_terms=4.0", "--base-set", "demo_fraction=0.06", "--base-set", "lr=1"]
    )
    assert settings.base_overrides == {"corpus_max_terms": 4, "lr": 1.0}
    assert type(settings.base_overrides["corpus_max_terms"]) is int and type(settings.base_overrides["lr"]) is float

    seen = []

    def fake_pretrain(config, cache_dir=None, rebuild=False):
        seen.append(config)
        raise RuntimeError("stop before loading weights")

    monkeypatch.setattr(toy_task, "load_or_pretrain_base", fake_pretrain)
    with pytest.raises(RuntimeError, match="stop"):
        load_base(settings)
    assert (seen[0].corpus_max_terms, seen[0].demo_fraction, seen[0].lr) == (4, 0.06, 1.0)

    # an explicit --base-steps wins over --base-set steps=...
    assert parse(["--base-set", "steps=9", "--base-steps", "7"])[0].base_overrides == {"steps": 7}
    assert parse(["--base-set", "steps=9"])[0].base_overrides == {"steps": 9}
    for bad, message in [("no_such_field=1", "no_such_field"), ("task=x", "--demo-style"), ("steps=1.5", "int")]:
        with pytest.raises(SystemExit, match=message):
            parse(["--base-set", bad])
