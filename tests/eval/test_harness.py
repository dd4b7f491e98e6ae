import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefix_rft.eval import evaluate

# Three rows; the scorer ignores the completion and marks rows whose answer is "yes" correct.
ROWS = [
    {"id": "a", "prompt": [{"role": "user", "content": "first?"}], "answer": "yes"},
    {"id": "b", "prompt": [{"role": "user", "content": "second?"}], "answer": "no"},
    {"prompt": "a raw prompt, used verbatim: ", "answer": "yes"},
]


def answer_is_yes(completion: str, answer: str) -> float:
    return float(answer == "yes")


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def run(model_and_tokenizer, **kwargs):
    model, tokenizer = model_and_tokenizer
    return evaluate(model, tokenizer, ROWS, answer_is_yes, max_new_tokens=6, batch_size=2, **kwargs)


def test_metrics_follow_the_scores(model_and_tokenizer):
    # rows 0 and 2 score 1 on both samples, row 1 scores 0: avg@2 = 4/6, pass@1 = pass@2 = 2/3
    result = run(model_and_tokenizer, k=2)
    assert result.metrics == pytest.approx(
        {"problems": 3, "samples_per_problem": 2, "avg@2": 2 / 3, "pass@1": 2 / 3, "pass@2": 2 / 3}
    )


def test_samples_hold_prompt_completion_and_score(model_and_tokenizer):
    result = run(model_and_tokenizer, k=2, extract_fn=lambda completion: completion[:3])
    assert [(s["id"], s["sample"], s["score"]) for s in result.samples] == [
        ("a", 0, 1.0), ("a", 1, 1.0), ("b", 0, 0.0), ("b", 1, 0.0), (2, 0, 1.0), (2, 1, 1.0)
    ]  # fmt: skip
    first = result.samples[0]
    assert first["prompt"] == "<|im_start|>user\nfirst?<|im_end|>\n<|im_start|>assistant\n"  # chat template
    assert result.samples[4]["prompt"] == "a raw prompt, used verbatim: "
    assert first["extracted"] == first["completion"][:3] and first["answer"] == "yes"


def test_same_seed_gives_same_samples_and_greedy_is_deterministic(model_and_tokenizer):
    completions = [[s["completion"] for s in run(model_and_tokenizer, k=2, seed=3).samples] for _ in range(2)]
    assert completions[0] == completions[1]
    greedy = [[s["completion"] for s in run(model_and_tokenizer, greedy=True).samples] for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_greedy_with_several_samples_is_rejected(model_and_tokenizer):
    with pytest.raises(ValueError, match="greedy"):
        run(model_and_tokenizer, k=2, greedy=True)


def test_tokenizer_padding_side_is_restored(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tokenizer.padding_side = "right"
    run(model_and_tokenizer, k=1)
    assert tokenizer.padding_side == "right"


def test_evaluation_leaves_the_callers_random_stream_alone(model_and_tokenizer):
    # Training evaluates between steps (the demo's accuracy curve); its own sampling must go on as if it had not.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(model_and_tokenizer, k=2, seed=7)
    assert torch.equal(torch.rand(3), expected)
    # ... while the evaluation itself stays seeded: the same seed, the same completions.
    first = [s["completion"] for s in run(model_and_tokenizer, k=2, seed=7).samples]
    torch.manual_seed(999)
    assert [s["completion"] for s in run(model_and_tokenizer, k=2, seed=7).samples] == first
