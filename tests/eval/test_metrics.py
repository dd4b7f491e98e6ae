import pytest

from prefix_rft.eval.metrics import average, pass_at_k, reported_ks, summarize


def test_pass_at_k_worked_example():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_pass_at_1_is_the_fraction_correct():
    # k=1: 1 - C(n-c,1)/C(n,1) = 1 - (n-c)/n = c/n; n=8, c=3 -> 0.375
    assert pass_at_k(8, 3, 1) == pytest.approx(0.375)


def test_pass_at_k_larger_example():
    # n=10, c=3, k=4: 1 - C(7,4)/C(10,4) = 1 - 35/210 = 5/6
    assert pass_at_k(10, 3, 4) == pytest.approx(5 / 6)


def test_pass_at_k_is_one_when_every_subset_holds_a_correct_sample():
    # n=4, c=3, k=2: only one wrong sample, so any 2 include a correct one
    assert pass_at_k(4, 3, 2) == 1.0
    assert pass_at_k(4, 0, 4) == 0.0


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 2)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_reported_ks_are_powers_of_two_and_n():
    assert reported_ks(1) == [1]
    assert reported_ks(8) == [1, 2, 4, 8]
    assert reported_ks(6) == [1, 2, 4, 6]


def test_summarize_two_problems_four_samples():
    # problem A: 1 of 4 correct, problem B: 4 of 4
    # avg@4 = (1 + 4) / 8 = 0.625
    # pass@1 = (1/4 + 1) / 2 = 0.625; pass@2 = (0.5 + 1) / 2 = 0.75; pass@4 = (1 + 1) / 2 = 1
    metrics = summarize([[0, 1, 0, 0], [1, 1, 1, 1]])
    assert metrics == pytest.approx(
        {"problems": 2, "samples_per_problem": 4, "avg@4": 0.625, "pass@1": 0.625, "pass@2": 0.75, "pass@4": 1.0}
    )


def test_summarize_counts_only_full_scores_as_correct():
    # a 0.5 score adds to avg@2 = (0.5 + 1) / 2 = 0.75, but only one sample is correct: pass@1 = c/n = 1/2
    metrics = summarize([[0.5, 1.0]])
    assert metrics["avg@2"] == pytest.approx(0.75)
    assert metrics["pass@1"] == pytest.approx(0.5)


def test_summarize_rejects_ragged_samples():
    with pytest.raises(ValueError):
        summarize([[1, 0], [1]])


def test_average_is_table1_mean_without_gsm8k():
    # Table 1 averages its six benchmarks unweighted; gsm8k is not one of them
    per_benchmark = {
        "aime24": {"problems": 30, "avg@2": 0.2, "pass@2": 0.3},
        "math500": {"problems": 500, "avg@2": 0.6, "pass@2": 0.7},
        "gsm8k": {"problems": 1319, "avg@2": 0.9, "pass@2": 0.95},
    }
    mean = average(per_benchmark)
    assert mean.pop("benchmarks") == ["aime24", "math500"]
    assert mean == pytest.approx({"avg@2": 0.4, "pass@2": 0.5})  # (0.2 + 0.6) / 2, (0.3 + 0.7) / 2


def test_average_of_other_benchmarks_uses_all_of_them():
    per_benchmark = {"gsm8k": {"avg@1": 0.5, "pass@1": 0.5}, "mine": {"avg@1": 0.1, "pass@1": 0.1}}
    mean = average(per_benchmark)
    assert mean.pop("benchmarks") == ["gsm8k", "mine"]
    assert mean == pytest.approx({"avg@1": 0.3, "pass@1": 0.3})
