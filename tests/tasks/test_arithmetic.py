import random

import pytest

from prefix_rft.tasks import TaskConfig, demonstrate, is_correct, make_rows, task_reward
from prefix_rft.tasks.arithmetic import coarse_solution, first_error, parse_problem, problem_of_prompt


def test_make_rows_is_deterministic_given_seed():
    assert make_rows("train", 50, seed=3) == make_rows("train", 50, seed=3)


def test_make_rows_differs_across_seeds():
    first = [r["prompt"][0]["content"] for r in make_rows("train", 50, seed=3)]
    second = [r["prompt"][0]["content"] for r in make_rows("train", 50, seed=4)]
    assert first != second


def test_make_rows_gives_distinct_problems_with_unique_ids():
    rows = make_rows("test", 300, seed=0)
    assert len({r["prompt"][0]["content"] for r in rows}) == 300
    assert len({r["id"] for r in rows}) == 300


def test_train_and_test_splits_are_disjoint():
    # Different seeds on purpose: the partition must not depend on the seed of the draw.
    train = {r["prompt"][0]["content"] for seed in range(3) for r in make_rows("train", 2000, seed=seed)}
    test = {r["prompt"][0]["content"] for seed in range(3) for r in make_rows("test", 500, seed=seed)}
    assert train.isdisjoint(test)


def test_split_salt_changes_the_partition():
    default = {r["prompt"][0]["content"] for r in make_rows("test", 200, seed=0)}
    salted = {r["prompt"][0]["content"] for r in make_rows("test", 200, seed=0, config=TaskConfig(split_seed=1))}
    assert default != salted


def test_ood_problems_have_more_terms_than_in_distribution_ones():
    # TaskConfig defaults: in-distribution 2-8 terms, ood 9-10 terms.
    def terms(rows):
        return {len(problem_of_prompt(r["prompt"][0]["content"]).terms) for r in rows}

    assert terms(make_rows("train", 300, seed=0)) == {2, 3, 4, 5, 6, 7, 8}
    assert terms(make_rows("ood", 300, seed=0)) == {9, 10}


def test_row_has_the_documented_fields():
    row = make_rows("train", 1, seed=0)[0]
    assert set(row) == {"id", "prompt", "demos", "answer"}
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith("compute ")
    assert isinstance(row["demos"], list) and len(row["demos"]) == 1
    assert row["answer"].isdigit()


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        make_rows("validation", 1, seed=0)


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_every_demo_verifies(split):
    for seed in range(10):
        for row in make_rows(split, 200, seed=seed):
            assert is_correct(row["demos"][0], row["answer"]), row


def test_no_running_total_goes_below_zero_and_numbers_stay_in_range():
    for split in ("train", "ood"):
        for row in make_rows(split, 500, seed=1):
            problem = problem_of_prompt(row["prompt"][0]["content"])
            assert min(problem.running_totals()) >= 0
            assert 10 <= problem.terms[0] <= 99
            assert all(1 <= t <= 9 for t in problem.terms[1:])


def test_demo_takes_one_step_per_line_then_checks_the_last_step():
    # 38+7=45, 45-9=36, 36+6=42; the check undoes the last step: 42-6=36.
    expected = "38+7=45\n45-9=36\n36+6=42\ncheck 42-6=36 ok\nanswer: 42"
    assert demonstrate("38+7-9+6") == expected


def test_demo_crosses_a_hundred():
    # 97+8=105, 105-9=96; check 96+9=105.
    assert demonstrate("97+8-9") == "97+8=105\n105-9=96\ncheck 96+9=105 ok\nanswer: 96"


def test_demo_of_a_single_addition():
    # 25+9=34; check 34-9=25.
    assert demonstrate("25+9") == "25+9=34\ncheck 34-9=25 ok\nanswer: 34"


def test_demo_of_a_subtraction_reaching_zero():
    # 12-3=9, 9-9=0; check 0+9=9.
    assert demonstrate("12-3-9") == "12-3=9\n9-9=0\ncheck 0+9=9 ok\nanswer: 0"


def test_demonstrate_refuses_an_unknown_style_instead_of_writing_steps():
    with pytest.raises(ValueError, match="unknown demo style 'rewrites'; choose from steps, rewrite"):
        demonstrate("38+7", style="rewrites")


def test_coarse_solution_does_several_operations_per_line_and_no_check():
    # 38+7-9+6 = 42 in one line of three operations, then 42-2 = 40 with the one operation left.
    assert coarse_solution(parse_problem("38+7-9+6-2"), ops_per_line=3) == "38+7-9+6=42\n42-2=40\nanswer: 40"
    # two operations per line: 38+7-9 = 36, then 36+6-2 = 40
    assert coarse_solution(parse_problem("38+7-9+6-2"), ops_per_line=2) == "38+7-9=36\n36+6-2=40\nanswer: 40"


def test_coarse_solution_of_a_single_step_is_the_demo_without_its_check():
    assert coarse_solution(parse_problem("25+9"), ops_per_line=3) == "25+9=34\nanswer: 34"


def test_coarse_solution_with_slips_goes_on_from_the_wrong_value():
    # slip_rate 1: both lines slip. 38+7-9+6 is 42, written 42+d1; the next line starts there: (42+d1)-2 = 40+d1,
    # written 40+d1+d2, and that is the answer.
    for seed in range(20):
        lines = coarse_solution(parse_problem("38+7-9+6-2"), 3, slip_rate=1.0, rng=random.Random(seed)).split("\n")
        first = int(lines[0].removeprefix("38+7-9+6="))
        assert first - 42 in (-10, -1, 1, 10)
        assert lines[1].startswith(f"{first}-2=")
        second = int(lines[1].split("=")[1])
        assert second - (first - 2) in (-10, -1, 1, 10)
        assert lines[2] == f"answer: {second}"


def test_slip_min_ops_keeps_single_operation_lines_exact():
    # slip_min_ops 2: the 3-operation line 38+7-9+6 (42) always slips to 42+d; the 1-operation line 42+d-2 never
    # does, so the answer is 40+d. A single step never slips.
    for seed in range(20):
        rng = random.Random(seed)
        lines = coarse_solution(parse_problem("38+7-9+6-2"), 3, 1.0, rng, slip_min_ops=2).split("\n")
        first = int(lines[0].removeprefix("38+7-9+6="))
        assert first - 42 in (-10, -1, 1, 10)
        assert lines[1:] == [f"{first}-2={first - 2}", f"answer: {first - 2}"]
        assert coarse_solution(parse_problem("25+9"), 3, 1.0, rng, slip_min_ops=2) == "25+9=34\nanswer: 34"


def test_coarse_solution_slips_about_as_often_as_asked_and_never_without_a_rate():
    rng = random.Random(0)
    slipped = sum(
        coarse_solution(parse_problem("25+9"), 3, slip_rate=0.25, rng=rng) != "25+9=34\nanswer: 34"
        for _ in range(2000)
    )
    assert 400 < slipped < 600  # 25% of 2000 = 500
    assert coarse_solution(parse_problem("25+9"), 3, slip_rate=0.0, rng=rng) == "25+9=34\nanswer: 34"
    with pytest.raises(ValueError, match="needs an rng"):
        coarse_solution(parse_problem("25+9"), 3, slip_rate=0.5)


def test_parse_problem_reads_terms_and_signs():
    problem = parse_problem("38+7-9")
    assert problem.terms == (38, 7, 9)
    assert problem.signs == ("+", "-")
    assert problem.running_totals() == [38, 45, 36]
    assert problem.answer == 36
    assert problem.text == "38+7-9"


@pytest.mark.parametrize("text", ["7*8", "38+-4", "", "38+", " 38+4"])
def test_parse_problem_rejects_other_expressions(text):
    with pytest.raises(ValueError, match="not a chain"):
        parse_problem(text)


@pytest.mark.parametrize(
    "completion",
    [
        "answer: 75",
        "answer:75",
        "56+19=75\nanswer: 12\nwait\nanswer: 75",  # the last answer counts
        "56+19=75\ncheck 75-19=56 ok\nanswer: 75\n",
    ],
)
def test_verifier_accepts_right_answers(completion):
    assert is_correct(completion, "75")


@pytest.mark.parametrize(
    "completion",
    [
        "answer: 76",
        "answer: 750",  # the whole number is read, not a prefix of it
        "answer: 7",
        "answer: 75\nanswer: 74",  # a later answer overrides an earlier right one
        "answer: -75",
    ],
)
def test_verifier_rejects_wrong_answers(completion):
    assert not is_correct(completion, "75")


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "75",  # no `answer:` marker
        "56+19=75",
        "answer is 75",
        "answer: seventy-five",
        "Answer: 75",  # the marker is lower case
        "answer: 075",  # not canonical
    ],
)
def test_verifier_rejects_malformed_answers(completion):
    assert not is_correct(completion, "75")


def test_task_reward_grades_strings_and_conversations():
    completions = [
        "answer: 7",
        [{"role": "assistant", "content": "3+4=7\nanswer: 7"}],
        [{"role": "assistant", "content": "answer: 8"}],
        "no answer",
    ]
    assert task_reward(completions, answer=["7", "7", "7", "7"], prompts=None) == [1.0, 1.0, 0.0, 0.0]


def test_rewrite_demo_writes_the_chain_left_after_each_step():
    # 38+7=45 leaves 45-9+6; 45-9=36 leaves 36+6; 36+6=42 leaves 42; the check undoes the last step: 42-6=36.
    assert demonstrate("38+7-9+6", style="rewrite") == "45-9+6\n36+6\n42\ncheck 42-6=36 ok\nanswer: 42"
    # 97+8=105 leaves 105-9; 105-9=96; check 96+9=105.
    assert demonstrate("97+8-9", style="rewrite") == "105-9\n96\ncheck 96+9=105 ok\nanswer: 96"


def test_rewrite_style_reaches_the_rows_and_every_demo_verifies():
    config = TaskConfig(demo_style="rewrite")
    for row in make_rows("train", 200, seed=0, config=config):
        assert "=" not in row["demos"][0].split("\n")[0]  # a rewritten chain, not `a+b=c`
        assert is_correct(row["demos"][0], row["answer"]), row


def test_unknown_demo_style_is_refused():
    with pytest.raises(ValueError, match="demo_style"):
        TaskConfig(demo_style="fast")


# first_error on 38+7-9+6 (running totals 45, 36, 42; operations +7, -9, +6), each case by hand.
@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("38+7=45\n45-9=36\n36+6=42\ncheck 42-6=36 ok\nanswer: 42", ("complete", 0)),
        ("38+7=45\n45-9=37\n37+6=43\nanswer: 43", ("slip", 2)),  # 45-9 is 36
        ("38+7=45\n45+6=51\nanswer: 51", ("skipped_term", 2)),  # -9 skipped, +6 taken
        ("38+7=45\n45+7=52\nanswer: 52", ("repeated_term", 2)),  # +7 again
        ("38-7=31\nanswer: 31", ("wrong_term", 1)),  # the sign of +7 flipped
        ("38+7=45\n44-9=35\nanswer: 35", ("wrong_value", 2)),  # starts from 44, not 45
        ("38+7=45\n45-9=36\nanswer: 36", ("stopped", 3)),  # +6 never applied
        ("38+7=45\n45-9=36\n36+6=42\n42+1=43\nanswer: 43", ("extra_step", 4)),
        ("38+7-9+6=42\nanswer: 42", ("not_steps", 1)),  # a coarse line
        ("answer: 42", ("stopped", 1)),
        ("", ("stopped", 1)),
        (" 38+7=45\n\n 45-9=36 \n answer: 36", ("stopped", 3)),  # blank lines and spaces are not steps
        ("38+7=45\n45-9+6=42\nanswer: 42", ("not_steps", 2)),  # a coarse line after a good step
        ("38+6=44\nanswer: 44", ("wrong_term", 1)),  # two terms skipped: +6 is the third operation
        ("38+7=45\n45-9=36\n36-6=30\nanswer: 30", ("wrong_term", 3)),  # the last term's sign flipped
        ("-38+7=-31\nanswer: -31", ("wrong_value", 1)),  # starts from -38, not 38
    ],
)
def test_first_error_names_the_first_mistake_and_its_step(completion, expected):
    assert first_error(completion, parse_problem("38+7-9+6")) == expected
