import pytest

from prefix_rft.verify.oat import mathd_equal, mathd_normalize, sympy_equal


@pytest.mark.parametrize(
    "raw, normalized",
    [
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),  # dfrac -> frac
        ("0.5", r"\frac{1}{2}"),  # the grader's one special decimal
        ("3/4", r"\frac{3}{4}"),  # integer slash fraction
        (r"\frac12", r"\frac{1}{2}"),  # unbraced arguments
        (r"\sqrt3", r"\sqrt{3}"),
        (r"x = 5", "5"),  # short left-hand side dropped
        (r"10\%", "10"),
        (r"90^\circ", "90"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\text{(B)}", "(B)"),
        (".5", r"\frac{1}{2}"),  # leading zero added, then 0.5 rewritten
    ],
)
def test_mathd_normalize(raw, normalized):
    assert mathd_normalize(raw) == normalized


def test_mathd_equal_needs_identical_normal_forms():
    assert mathd_equal(r"\dfrac{1}{2}", "0.5")
    assert not mathd_equal(r"\frac{2}{4}", r"\frac{1}{2}")  # no arithmetic at this stage


def test_sympy_equal_simplifies_non_integers():
    # sqrt(2)/2 - 1/sqrt(2) simplifies to 0
    assert sympy_equal(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}")
    assert sympy_equal(r"\frac{2}{4}", r"\frac{1}{2}")


def test_sympy_equal_integer_gold_needs_integer_answer():
    assert not sympy_equal(r"\sqrt{16}", "4")
    assert sympy_equal("4.0", "4")


def test_sympy_equal_drops_units_and_thousands_separators():
    assert sympy_equal("5 cm", "5")
    assert sympy_equal("1,000", "1000")
    assert sympy_equal(r"12\text{ inches}", "12")


def test_sympy_equal_compares_tuples_and_intervals_element_wise():
    assert sympy_equal(r"(\frac{1}{2}, 3)", "(0.5,3)")
    assert not sympy_equal("(1,2]", "(1,2)")  # interval ends differ
    assert not sympy_equal("(1,2,3)", "(1,2)")


def test_sympy_equal_rejects_empty_and_unbalanced():
    assert not sympy_equal("", "1")
    assert not sympy_equal("(1,2", "(1,2)")
