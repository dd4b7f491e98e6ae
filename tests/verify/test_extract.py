import pytest

from prefix_rft.verify.extract import answer_region, delimit_gold, final_boxed_group, gold_text, last_boxed


def test_last_boxed_takes_the_last_one_with_nested_braces():
    assert last_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}} end") == r"\frac{1}{2}"


def test_last_boxed_reads_fbox_and_unbraced_argument():
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"so \boxed 5$.") == "5"


def test_last_boxed_is_none_without_box_or_when_unclosed():
    assert last_boxed("the answer is 5") is None
    assert last_boxed(r"\boxed{\frac{1}{2}") is None
    assert last_boxed("\\boxed") is None


def test_last_boxed_handles_ten_thousand_nested_braces():
    assert last_boxed("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001) == "{" * 10_000 + "1" + "}" * 10_000


def test_final_boxed_group_drops_boxes_before_a_correction():
    assert final_boxed_group(r"first \boxed{2}, corrected: \boxed{3}.") == r"\boxed{3}."
    assert final_boxed_group(r"\boxed{2}. Wait, \boxed{3}") == r"\boxed{3}"


def test_final_boxed_group_keeps_a_multi_part_answer():
    text = r"pairs \boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}$$"
    assert final_boxed_group(text) == text[len("pairs ") :]
    assert final_boxed_group(r"\boxed{1},\boxed{2} and \boxed{3}") == r"\boxed{1},\boxed{2} and \boxed{3}"


def test_final_boxed_group_keeps_an_equation_head_on_the_same_line():
    assert final_boxed_group("so\n\\( y_1 = \\boxed{5} \\)") == "\\( y_1 = \\boxed{5} \\)"


def test_final_boxed_group_without_box_is_the_whole_text():
    assert final_boxed_group("the answer is 5") == "the answer is 5"


def test_answer_region_after_think_keeps_text_after_last_close_tag():
    text = r"<think>maybe \boxed{1}</think> wait </think> final \boxed{2}"
    assert answer_region(text, after_think=True) == r" final \boxed{2}"
    assert answer_region(text, after_think=False) == text


def test_answer_region_is_empty_when_thinking_never_closes():
    assert answer_region(r"<think>\boxed{2}", after_think=True) == ""


def test_bare_gold_is_boxed_and_delimited_gold_is_kept():
    assert delimit_gold("3, 5") == r"\boxed{3, 5}"
    assert delimit_gold("$x=2$") == "$x=2$"
    assert delimit_gold(r"\(x\)") == r"\(x\)"


def test_escaped_dollar_in_gold_is_not_a_delimiter():
    # MATH-500 answer "\$18.90": without the lookbehind it would be parsed as an unclosed $...$ and fail
    assert delimit_gold(r"\$18.90") == r"\boxed{\$18.90}"


def test_gold_text_writes_integral_floats_as_integers():
    # AMC stores answers as floats: 142.0 must match a completion's "142"
    assert gold_text(142.0) == "142"
    assert gold_text(0.5) == "0.5"
    assert gold_text(" 7 ") == "7"


@pytest.mark.parametrize("gold", [None, "", "   "])
def test_gold_text_rejects_missing_gold(gold):
    with pytest.raises(ValueError):
        gold_text(gold)
