"""`prefix-rft demo` end to end with a tiny config: 2 Prefix-RFT steps on a 3-step test base."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefix_rft.recipes import compare, demo
from prefix_rft.recipes.settings import RunSettings, parse_settings


def test_two_step_demo_writes_report_curves_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--steps", "2", "--prompts-per-step", "2", "--eval-problems", "4", "--eval-k", "2"]
    argv += ["--curve-every", "1", "--curve-problems", "4", "--base-size", "test", "--base-steps", "3"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out), "--seed", "3"]
    assert demo.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["seed"] == 3
    assert [p["step"] for p in results["curve"]] == [0, 1, 2]
    steps = [h for h in results["log_history"] if "reward/hybrid" in h]
    assert [h["step"] for h in steps] == [1, 2]
    # 2 prompts x 8 rollouts, the last row of each group hybrid
    assert [h["prefix/hybrid_rows"] for h in steps] == [2, 2]
    # cosine floor over the 2-step run: 0.95 at step 0, then 0.05 + 0.45 * (1 + cos(pi / 2)) = 0.5 at step 1
    assert abs(steps[0]["prefix/ratio_floor"] - 0.95) < 1e-9
    assert abs(steps[1]["prefix/ratio_floor"] - 0.5) < 1e-9
    for when in ("before", "after"):
        for split in ("test", "ood"):
            metrics = results[when][split]
            assert metrics["problems"] == 4 and metrics["samples_per_problem"] == 2
            assert 0.0 <= metrics["avg@2"] <= metrics["pass@2"] <= 1.0

    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The trained model is kept, with its tokenizer, in the base's architecture.
    trained = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(results["base_model"])
    assert AutoTokenizer.from_pretrained(out / "model").chat_template
    assert {n: p.shape for n, p in trained.named_parameters()} == {n: p.shape for n, p in base.named_parameters()}
    report = (out / "report.md").read_text()
    assert "| in-distribution test | avg@2 |" in report and "curves.png" in report
    printed = capsys.readouterr().out
    assert "| out-of-distribution | avg@2 |" in printed
    # One compact line per step instead of the trainer's metrics dictionaries; every metric in train_log.jsonl.
    assert "{'loss'" not in printed and "'reward/hybrid'" not in printed
    for i, step in enumerate(steps, start=1):
        point = results["curve"][i]
        line = (
            f"step {i}/2  reward {step['reward']:.3f}  hybrid reward {step['reward/hybrid']:.3f}  prefix ratio "
            f"{step['prefix/ratio_mean']:.3f}  acc test {point['test']:.3f}, ood {point['ood']:.3f}"
        )
        assert line in printed.splitlines()
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [h for h in logged if "reward/hybrid" in h] == steps
    assert "train_runtime" in logged[-1]


def test_demo_and_compare_share_one_definition_of_the_run_settings():
    settings, demo_args = parse_settings([], demo.DemoArguments, prog="prefix-rft demo")
    compare_settings, compare_args = parse_settings([], compare.CompareArguments, prog="prefix-rft compare")
    assert settings == compare_settings == RunSettings()
    assert (settings.steps, settings.eval_problems, settings.curve_every) == (100, 256, 20)
    assert (demo_args.output_dir, compare_args.output_dir) == ("runs/demo", "runs/compare")


def test_compare_takes_any_list_of_seeds():
    assert compare.seed_list("3") == [0, 1, 2]
    assert compare.seed_list("11,12,13") == [11, 12, 13]
    for bad in ("0", "1,1", "a,b"):
        with pytest.raises(SystemExit, match="--seeds"):
            compare.seed_list(bad)


# What each command runs first once its setup is done: reaching it means the bad setting was not refused in setup.
FIRST_WORK = {"demo": "load_base", "compare": "run_all", "protocol": "tuning_stage"}


@pytest.mark.parametrize("command", sorted(FIRST_WORK))
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be a positive integer, got 0"),
        (["--steps", "-1"], "--steps must be a positive integer, got -1"),
        (["--eval_k", "0"], "--eval_k must be a positive integer, got 0"),
        (["--learning_rate=-1e-5"], "--learning_rate must be a positive number, got -1e-05"),
        (["--rl_set", "num_hybrid=9"], "method 'prefix_rft': num_hybrid must be in [0, 8] for groups of 8, got 9"),
        (
            ["--base_size", "9m"],
            "base model: BaseModelConfig.model_size must be one of ['1m', '3m', 'test'], got '9m'",
        ),
        (
            ["--base_set", "corpus_max_terms=0"],
            "base model: BaseModelConfig.corpus_max_terms must be at least 2, got 0",
        ),
    ],
)
def test_settings_no_run_could_use_are_refused_before_any_work(command, argv, message, tmp_path, monkeypatch, capsys):
    assert refused_before_work(command, argv, tmp_path, monkeypatch, capsys) == f"prefix-rft {command}: {message}\n"


def refused_before_work(command, argv, tmp_path, monkeypatch, capsys) -> str:
    """What `prefix-rft COMMAND ARGV` prints on stderr, checking it exits 2 before any work or output folder."""
    import importlib

    module = importlib.import_module(f"prefix_rft.recipes.{command}")
    monkeypatch.setattr(module, FIRST_WORK[command], lambda *a, **k: pytest.fail("started work on bad settings"))
    out = tmp_path / "out"
    assert module.main([*argv, "--output_dir", str(out)]) == 2
    assert not out.exists()
    return capsys.readouterr().err


NO_HYBRID = "is not used by PrefixRFTConfig: num_hybrid=0 has no hybrid rows, and the option acts only on hybrid rows"


@pytest.mark.parametrize("command", ["compare", "protocol"])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # the default methods run prefix_rft, then rft, which fixes num_hybrid=0 and so has no use for prefix options
        (
            ["--rl_set", "num_hybrid=1"],
            "method 'rft': --rl-set num_hybrid=1 changes what the method fixes (num_hybrid=0): it would train another "
            "method under this name",
        ),
        (["--rl_set", "prefix_advantage=paper"], f"method 'rft': prefix_advantage='paper' {NO_HYBRID}"),
    ],
)
def test_rl_set_a_method_cannot_take_is_refused_naming_the_method_before_any_work(
    command, argv, message, tmp_path, monkeypatch, capsys
):
    err = refused_before_work(command, argv, tmp_path, monkeypatch, capsys)
    assert err.startswith(f"prefix-rft {command}: {message}")
