import dataclasses
import json
import random
import re
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefix_rft.tasks import BaseModelConfig, build_model, build_tokenizer, load_or_pretrain_base
from prefix_rft.tasks import pretrain as pretrain_module
from prefix_rft.tasks.arithmetic import in_test_split
from prefix_rft.tasks.pretrain import base_model_dir, cache_root, collate, config_hash, corpus_text, lr_factor

TINY = BaseModelConfig(model_size="test", steps=3, batch_size=4, warmup_steps=1)


def test_tiny_pretraining_writes_a_loadable_dir_and_a_second_call_hits_the_cache(tmp_path, monkeypatch):
    path = load_or_pretrain_base(TINY, cache_dir=str(tmp_path), progress=False)
    assert Path(path) == tmp_path / f"base-{config_hash(TINY)}"
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == len(tokenizer)
    # Next to a model config, AutoTokenizer may pick a model-specific class (for qwen2 it rewrote our pre-tokenizer
    # and dropped spaces): the loaded tokenizer must still split characters one by one.
    assert tokenizer.convert_ids_to_tokens(tokenizer("a b")["input_ids"]) == ["<bos>", "a", " ", "b"]
    info = json.loads((Path(path) / "pretrain.json").read_text())
    assert info["config"]["steps"] == 3 and info["hash"] == config_hash(TINY)
    # Only the final directory is left behind: the temporary one was renamed.
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]

    def fail(*args, **kwargs):
        raise AssertionError("the cache was missed: pretraining ran again")

    monkeypatch.setattr(pretrain_module, "pretrain", fail)
    assert load_or_pretrain_base(TINY, cache_dir=str(tmp_path), progress=False) == path


def test_pretraining_runs_on_one_thread_whatever_the_load_and_restores_the_callers_count(monkeypatch):
    # The thread count changes float reduction order: a count chosen by load made one hash cache different weights.
    import torch

    monkeypatch.setattr(pretrain_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle: would pick 2 threads
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, _, summary = pretrain_module.pretrain(TINY, progress=False)
        assert summary["threads"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cache_root_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFIX_RFT_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("PREFIX_RFT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "prefix_rft"


def test_config_hash_depends_on_every_setting_including_the_task():
    from prefix_rft.tasks import TaskConfig

    assert config_hash(TINY) == config_hash(BaseModelConfig(model_size="test", steps=3, batch_size=4, warmup_steps=1))
    assert config_hash(TINY) != config_hash(BaseModelConfig(model_size="test", steps=4, batch_size=4, warmup_steps=1))
    harder = BaseModelConfig(model_size="test", steps=3, batch_size=4, warmup_steps=1, task=TaskConfig(max_terms=6))
    assert config_hash(TINY) != config_hash(harder)
    assert base_model_dir(TINY, "/c") != base_model_dir(harder, "/c")


def test_default_corpus_solves_every_train_length_sloppily_with_a_few_demos_and_exact_steps():
    # defaults: steps 20%, demos 6%, the rest coarse solutions of 3 operations per line, whole problems of 2-8
    # terms; a line of 2 or more operations slips by 1 or 10 40% of the time, a 1-operation line never does.
    config = BaseModelConfig()
    rng = random.Random(0)
    demos, steps, multi, slipped, lengths = 0, 0, 0, 0, set()
    for _ in range(3000):
        problem, solution = corpus_text(rng, config)
        assert not in_test_split(problem, config.task)
        lengths.add(len(problem.terms))
        steps += not 10 <= problem.terms[0] <= 99  # only a step starts outside 10-99 (at a running total)
        lines = solution.split("\n")
        if "check" in solution:
            demos += 1
            assert lines[-1] == f"answer: {problem.answer}"  # the demonstrator never slips
            continue
        # Follow the solution by hand: each line starts from the value the previous one wrote.
        value, operands, any_slip = problem.terms[0], list(problem.terms[1:]), False
        for line in lines[:-1]:
            text, written = line.split("=")
            numbers = [int(n) for n in re.findall(r"[+-]?\d+", text)]  # a running total may be negative: -10+7
            assert numbers[0] == value
            assert [abs(n) for n in numbers[1:]] == operands[: len(numbers) - 1]
            operands = operands[len(numbers) - 1 :]
            exact, ops = sum(numbers), len(numbers) - 1
            assert ops <= 3
            if ops == 1:
                assert int(written) == exact
            else:
                multi += 1
                slipped += int(written) != exact
                any_slip |= int(written) != exact
                assert int(written) - exact in (0, -10, -1, 1, 10)
            value = int(written)
        assert operands == [] and lines[-1] == f"answer: {value}"
        if not any_slip:
            assert value == problem.answer
    assert lengths == {2, 3, 4, 5, 6, 7, 8}
    assert 120 < demos < 240  # 6% of 3000 = 180
    assert steps > 0
    assert 0.35 < slipped / multi < 0.45


def test_slips_change_coarse_answers_and_steps_but_never_demos():
    config = BaseModelConfig(corpus_max_terms=4, demo_fraction=0.03, slip_rate=0.5, slip_min_ops=1)
    rng = random.Random(0)
    wrong = {"demo": 0, "other": 0}
    for _ in range(2000):
        problem, solution = corpus_text(rng, config)
        kind = "demo" if "check" in solution else "other"
        wrong[kind] += solution.split("\n")[-1] != f"answer: {problem.answer}"
    # every non-demo solution is one line here (at most 4 terms: 3 operations, 3 a line), slipping half the time:
    # about 0.5 * 97% * 2000 = 970 wrong answers
    assert wrong["demo"] == 0
    assert 880 < wrong["other"] < 1060


def test_default_base_hash_is_the_shipped_name_and_slip_min_ops_is_moot_without_slips():
    assert config_hash(BaseModelConfig()) == "2a6d2666ec22"  # tasks/base/shipped.json and the docs name it
    no_slips = BaseModelConfig(slip_rate=0.0, slip_min_ops=1)
    assert config_hash(dataclasses.replace(no_slips, slip_min_ops=2)) == config_hash(no_slips)
    slips = BaseModelConfig(slip_rate=0.25, slip_min_ops=1)
    assert config_hash(dataclasses.replace(slips, slip_min_ops=2)) != config_hash(slips)


def test_corpus_demos_follow_the_task_demo_style():
    from prefix_rft.tasks import TaskConfig

    config = BaseModelConfig(task=TaskConfig(demo_style="rewrite"), step_fraction=0.0, demo_fraction=1.0)
    rng = random.Random(0)
    for _ in range(50):
        problem, solution = corpus_text(rng, config)
        lines = solution.split("\n")
        # rewrite: the first line is the total after one step, then the operations left (`45-9+6`), never `38+7=45`
        assert "=" not in lines[0] and lines[-2].startswith("check") and lines[-1] == f"answer: {problem.answer}"


def test_lr_warms_up_linearly_then_decays_to_the_final_ratio():
    config = BaseModelConfig(steps=110, warmup_steps=10, final_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)  # (0+1)/10
    assert lr_factor(9, config) == pytest.approx(1.0)
    # halfway through the decay (step 10 + 50): 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert lr_factor(60, config) == pytest.approx(0.55)
    assert lr_factor(110, config) == pytest.approx(0.1)


def test_collate_masks_the_prompt_and_right_pads():
    batch = collate([([5, 6], [7, 1]), ([5], [8, 9, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1], [5, 8, 9, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 1], [-100, 8, 9, 1]]
    short = collate([([5], [7]), ([5], [8, 9, 1])], pad_id=0)
    assert short["input_ids"][0].tolist() == [5, 7, 0, 0]
    assert short["labels"][0].tolist() == [-100, 7, -100, -100]
    assert short["attention_mask"][0].tolist() == [1, 1, 0, 0]


def test_1m_model_has_the_parameter_count_worked_out_by_hand():
    # vocab 7 specials + 97 characters = 104; hidden 128, 4 layers, FFN 512, tied embeddings, no biases.
    # embedding 104*128 = 13,312; per layer: q,k,v,o 4*128*128 = 65,536, MLP 3*128*512 = 196,608,
    # two RMSNorms 256 -> 262,400; 4 layers 1,049,600; final norm 128. Total 1,063,040.
    model = build_model(build_tokenizer(), "1m")
    assert sum(p.numel() for p in model.parameters()) == 1_063_040


def test_unknown_model_size_is_rejected():
    with pytest.raises(ValueError, match="unknown model size"):
        build_model(build_tokenizer(), "huge")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_size": "9m"}, "BaseModelConfig.model_size must be one of ['1m', '3m', 'test'], got '9m'"),
        ({"corpus_max_terms": 1}, "BaseModelConfig.corpus_max_terms must be at least 2, got 1"),  # the task's fewest
        ({"steps": 0}, "BaseModelConfig.steps must be at least 1, got 0"),
        ({"slip_rate": 1.5}, "BaseModelConfig.slip_rate must be in [0, 1], got 1.5"),
        ({"demo_fraction": 0.9}, "BaseModelConfig.demo_fraction + step_fraction must be at most 1"),  # + 0.2
        ({"lr": 0.0}, "BaseModelConfig.lr must be a finite positive number, got 0.0"),
        ({"lr": float("inf")}, "BaseModelConfig.lr must be a finite positive number, got inf"),
        ({"lr": float("nan")}, "BaseModelConfig.lr must be a finite positive number, got nan"),
        ({"weight_decay": float("nan")}, "BaseModelConfig.weight_decay must be a finite number, got nan"),
        ({"weight_decay": float("inf")}, "BaseModelConfig.weight_decay must be a finite number, got inf"),
    ],
)
def test_a_config_pretraining_cannot_use_is_refused_by_its_field(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        BaseModelConfig(**fields)
