import asyncio
import logging
import threading
import time

import pytest

import prefix_rft.verify.verifier as verifier_module
from prefix_rft.verify import MathVerifier, math_reward

HOSTILE_TIMEOUT = 2.0
# Each is graded against gold "1". The first three and the long sum hang math-verify/sympy (measured: > 15 s).
HOSTILE = {
    "exponent tower": r"\boxed{" + "2^{" * 12 + "2" + "}" * 12 + "}",
    "power tower of nines": r"\boxed{9^{9^{9^{9^{9}}}}}",
    "10k nested braces": r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "1 MB sum": "$" + "1+" * 500_000 + "1$",
    "1 MB of text, then the answer": "x" * 1_000_000 + r" \boxed{1}",
    "unbalanced braces": r"\boxed{\frac{1}{2}" + "{" * 50,
    "empty": "",
    "non-ASCII": "答案是 \\boxed{½} ∑ 🙂 \\boxed{π}",
}


@pytest.fixture(scope="module")
def quick():
    """A verifier with a short timeout, for the inputs that hang."""
    with MathVerifier(timeout=HOSTILE_TIMEOUT) as short:
        yield short


def test_equivalent_answers_score_one(verifier):
    assert verifier.score(r"so the answer is $\boxed{\frac{1}{3}}$", "1/3") == 1.0
    assert verifier.score(r"\boxed{0.5}", r"\frac12") == 1.0
    assert verifier.score(r"\boxed{25}", "025") == 1.0  # aime24 stores "025"
    assert verifier.score(r"\boxed{142}", 142.0) == 1.0  # amc stores floats


def test_wrong_or_missing_answer_scores_zero(verifier):
    assert verifier.score(r"\boxed{2}", "3") == 0.0
    assert verifier.score("no answer here", "3") == 0.0


def test_last_boxed_answer_wins(verifier):
    assert verifier.score(r"first \boxed{2}, corrected: \boxed{3}", "3") == 1.0
    assert verifier.score(r"first \boxed{3}, corrected: \boxed{2}", "3") == 0.0


def test_multi_part_answer_is_compared_as_a_set(verifier):
    # olympiadbench gold "$69$,$84$": both boxes, in any order, are right; one of them alone is not
    assert verifier.score(r"so \boxed{84}, \boxed{69}", "$69$,$84$") == 1.0
    assert verifier.score(r"\boxed{69, 84}", "$69$,$84$") == 1.0
    assert verifier.score(r"\boxed{84}", "$69$,$84$") == 0.0


def test_after_think_grades_only_the_final_answer():
    with MathVerifier(after_think=True, num_workers=1) as verifier:
        assert verifier.score(r"<think>\boxed{1}</think> so \boxed{2}", "2") == 1.0
        assert verifier.score(r"<think>\boxed{1}</think> so \boxed{2}", "1") == 0.0
        assert verifier.score(r"<think>\boxed{2} and still thinking", "2") == 0.0


def test_oat_mode_needs_a_box_and_matches_normalised_strings():
    with MathVerifier(mode="oat", num_workers=1) as verifier:
        assert verifier.score(r"\boxed{\dfrac{1}{2}}", "0.5") == 1.0  # mathd stage
        assert verifier.score(r"\boxed{1,000}", "1000") == 1.0  # sympy stage
        assert verifier.score(r"\boxed{\frac{2}{6}}", r"\frac{1}{3}") == 1.0  # sympy stage
        assert verifier.score("the answer is 0.5", "0.5") == 0.0  # no box, no answer


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        MathVerifier(mode="strict")


@pytest.mark.parametrize("gold", [None, ""])
def test_bad_gold_raises(verifier, gold):
    with pytest.raises(ValueError):
        verifier.score(r"\boxed{1}", gold)


def test_unparsable_gold_is_an_error_counted_and_logged(verifier, caplog):
    before = verifier.stats["errors"]
    with caplog.at_level(logging.WARNING, logger="prefix_rft.verify.verifier"):
        assert verifier.score(r"\boxed{1}", r"\boxed{}") == 0.0
    assert verifier.stats["errors"] == before + 1
    assert "GoldParseError" in caplog.text


def test_score_batch_keeps_order(verifier):
    predictions = [rf"\boxed{{{n}}}" for n in range(6)]
    assert verifier.score_batch(predictions, ["0", "5", "2", "2", "4", "4"]) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_score_batch_names_the_bad_row(verifier):
    with pytest.raises(ValueError, match="row 1"):
        verifier.score_batch([r"\boxed{1}", r"\boxed{2}"], ["1", None])


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_returns_within_timeout_and_pool_keeps_serving(quick, name, caplog):
    quick.score(r"\boxed{1}", "1")  # replacement workers from an earlier timeout have started
    before = quick.stats
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="prefix_rft.verify.verifier"):
        score = quick.score(HOSTILE[name], "1")
    elapsed = time.monotonic() - start
    assert elapsed < HOSTILE_TIMEOUT + 1.0, f"{name}: {elapsed:.2f}s"
    assert score in (0.0, 1.0)
    after = quick.stats
    if after["timeouts"] > before["timeouts"]:
        assert score == 0.0 and "timed out" in caplog.text
    assert quick.score_batch([r"\boxed{2}"] * 3, ["2"] * 3) == [1.0] * 3


def test_hang_is_counted_as_timeout(quick):
    before = quick.stats["timeouts"]
    assert quick.score(HOSTILE["exponent tower"], "1") == 0.0
    assert quick.stats["timeouts"] == before + 1


def test_killed_worker_is_counted_as_crash_and_replaced():
    with MathVerifier(timeout=30.0, num_workers=1) as verifier:
        verifier.score(r"\boxed{1}", "1")
        (worker,) = verifier._pool._workers
        result = []
        hung = threading.Thread(target=lambda: result.append(verifier.score(HOSTILE["exponent tower"], "1")))
        hung.start()
        time.sleep(0.5)
        worker.process.kill()
        hung.join(timeout=10)
        assert result == [0.0]
        assert verifier.stats["crashes"] == 1
        assert verifier.score(r"\boxed{1}", "1") == 1.0


def test_works_from_a_thread(verifier):
    # math-verify's own signal-based timeout raises off the main thread; the workers run it on theirs
    results = []
    thread = threading.Thread(target=lambda: results.append(verifier.score(r"\boxed{4}", "4")))
    thread.start()
    thread.join()
    assert results == [1.0]


def test_works_inside_an_asyncio_loop(verifier):
    async def grade_both():
        direct = verifier.score(r"\boxed{4}", "4")
        offloaded = await asyncio.to_thread(verifier.score, r"\boxed{5}", "5")
        return direct, offloaded

    assert asyncio.run(grade_both()) == (1.0, 1.0)


@pytest.fixture
def default_with_short_timeout(monkeypatch):
    with MathVerifier(timeout=HOSTILE_TIMEOUT) as short:
        monkeypatch.setattr(verifier_module, "_default", short)
        yield short


def test_math_reward_reads_strings_and_chat_messages(default_with_short_timeout):
    completions = [r"so \boxed{\frac{1}{3}}", [{"role": "assistant", "content": r"\boxed{2}"}]]
    assert math_reward(completions, answer=["1/3", "3"]) == [1.0, 0.0]


def test_math_reward_reports_timeouts_through_log_metric(default_with_short_timeout):
    logged = []
    completions = [r"\boxed{1}", HOSTILE["exponent tower"]]
    scores = math_reward(completions, answer=["1", "1"], log_metric=lambda name, value: logged.append((name, value)))
    assert scores == [1.0, 0.0]
    # fractions of the call's 2 completions
    assert ("verifier/timeout_fraction", 0.5) in logged and ("verifier/crash_fraction", 0.0) in logged


@pytest.mark.parametrize("bad", [None, " "])
def test_math_reward_names_row_and_field_of_bad_gold(bad):
    with pytest.raises(ValueError, match=r"row 2: field 'answer'"):
        math_reward(["a", "b", "c"], answer=["1", "2", bad])


def test_unparsable_gold_is_counted_per_pair_and_warned_once(caplog):
    # r"\boxed{}" holds no expression: both pairs score 0 and count; the second pair of the same gold logs nothing
    with MathVerifier(num_workers=1) as fresh, caplog.at_level(logging.WARNING, logger="prefix_rft.verify.verifier"):
        assert fresh.score_batch([r"\boxed{1}", r"\boxed{2}"], [r"\boxed{}", r"\boxed{}"]) == [0.0, 0.0]
        stats = fresh.stats
    assert (stats["gold_parse_failures"], stats["errors"], stats["prediction_parse_failures"]) == (2, 2, 0)
    assert caplog.text.count("GoldParseError") == 1


def test_prediction_without_an_answer_is_counted(verifier):
    # an empty answer region (nothing after </think> here, as with after_think) and text with no expression
    before = verifier.stats["prediction_parse_failures"]
    assert verifier.score_batch(["", "no answer here"], ["3", "3"]) == [0.0, 0.0]
    assert verifier.stats["prediction_parse_failures"] == before + 2


def test_math_reward_reports_parse_failures_through_log_metric(default_with_short_timeout):
    # row 0 right, row 1 has no answer, row 2's gold has no expression
    logged = []
    completions = [r"\boxed{1}", "no answer here", r"\boxed{1}"]
    scores = math_reward(completions, answer=["1", "1", r"\boxed{}"], log_metric=lambda *item: logged.append(item))
    assert scores == [1.0, 0.0, 0.0]
    assert ("verifier/gold_parse_failure_fraction", 1 / 3) in logged  # of the call's 3 completions
    assert ("verifier/prediction_parse_failure_fraction", 1 / 3) in logged


def test_math_reward_names_the_row_of_a_gold_that_is_not_text_or_a_number():
    with pytest.raises(ValueError, match=r"^row 1: field 'answer': gold answer must be text or a number, got dict$"):
        math_reward(["a", "b"], answer=["1", {"value": 2}])
