"""The language: accepted forms, printing round trips, and every error with its message."""

from __future__ import annotations

from fractions import Fraction

import pytest

import einderiv
from einderiv.ir import Add, Delta, Div, Mul, Neg, Number, Statement, Tensor


def rhs(source: str):
    return einderiv.parse(source).output.rhs


def test_compact_and_braced_references():
    assert rhs("R_mp") == Tensor("R", ("m", "p"))
    assert rhs("theta_j") == Tensor("theta", ("j",))
    assert rhs("x2") == Tensor("x2", ())
    assert rhs("W_{in,out}") == Tensor("W", ("in", "out"))
    assert rhs("x_{n}") == Tensor("x", ("n",))
    assert rhs("W_{ in , out }") == Tensor("W", ("in", "out"))
    assert rhs("A_{ij}") == Tensor("A", ("i", "j"))  # as in LaTeX, not one index named ij
    assert rhs("x_{in,}") == Tensor("x", ("in",))
    assert rhs("delta_ij") == Delta("i", "j")


def test_statement_forms():
    statement = einderiv.parse("K_pq = R_mp R_mq").output
    assert statement == Statement(Tensor("K", ("p", "q")), Mul((Tensor("R", ("m", "p")), Tensor("R", ("m", "q")))))
    assert einderiv.parse("a_i b_i").output.target is None
    derivative = einderiv.parse("dK_pq/dR_ij = delta_jp R_iq").output
    assert derivative.target == Tensor("dK", ("p", "q")) and derivative.wrt == (Tensor("dR", ("i", "j")),)
    hessian = einderiv.parse("d2f/dx_k dx_l = A_kl + A_lk").output
    assert [w.indices for w in hessian.wrt] == [("k",), ("l",)]


def test_numbers_products_and_signs():
    assert rhs("2") == Number(Fraction(2))
    assert rhs("0.5") == Number(Fraction(1, 2))
    assert rhs("x_i / 2") == Div(Tensor("x", ("i",)), Number(Fraction(2)))
    assert rhs("a * b") == rhs("a b") == Mul((Tensor("a"), Tensor("b")))
    assert rhs("a - b") == Add((Tensor("a"), Neg(Tensor("b"))))
    assert rhs("-a") == Neg(Tensor("a"))
    assert rhs("(a + b) c") == Mul((Add((Tensor("a"), Tensor("b"))), Tensor("c")))
    assert rhs("a b c") == Mul((Tensor("a"), Tensor("b"), Tensor("c")))


def test_comments_and_separators():
    program = einderiv.parse("# a comment\nf = x_i x_i  # trailing\n")
    assert len(program.statements) == 1
    assert len(einderiv.parse("a; b\nc").statements) == 3


@pytest.mark.parametrize(
    "source",
    [
        "K_pq = R_mp R_mq",
        "f = x_i A_ij x_j / 2",
        "f = -(a_i + b_i) c_i - 2 x",
        "W_{in,out} x_{in,}",
        "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq",
        "d2f/dx_k dx_l = A_kl + A_lk",
        "a - -b",
        "-a_i b_i",
        "-(a b)",
        "a (b / 2) c",
        "x_i / (2 * 3)",
        "(a - b) - (c - d)",
        "a / b / 2",
        "0.125 x + 3 (y - 1.5)",
        "f = x_i x_i\ng = f f",
    ],
)
def test_printing_round_trips(source):
    program = einderiv.parse(source)
    assert einderiv.parse(str(program)) == program


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("K_pq = R_mp +", "the input ends too early", 14),
        ("f = a_i ++ * b", "unexpected '*'", 12),
        ("f = (a", "expected ')'", 7),
        ("a = = b", "unexpected '='", 5),
        ("x_1", "unexpected character '_'", 2),
        ("f = a $ b", "unexpected character '$'", 7),
        ("delta_i", "delta takes exactly two indices", 1),
        ("x_{}", "empty index list", 1),
        ("f = x_{i,2}", "bad index name '2'", 5),
        ("f = foo(x)", "unknown function 'foo'; known functions: abs, arccos, arcsin, arctan, cos", 5),
    ],
)
def test_syntax_errors_have_message_and_caret(source, message, column):
    with pytest.raises(einderiv.ParseError) as info:
        einderiv.parse(source)
    err = info.value
    assert message in err.message
    assert err.column == column
    caret_line = str(err).splitlines()[-1]
    assert caret_line.index("^") - 2 == column - 1


def test_empty_input_is_an_error():
    for source in ["", "   ", "# only a comment", ";;"]:
        with pytest.raises(einderiv.ParseError, match="empty input"):
            einderiv.parse(source)


@pytest.mark.parametrize(
    "source, message",
    [
        ("K_pp = R_mp R_mp", "index 'p' is repeated on the left-hand side"),
        ("K_pq = R_mp R_mp", "left-hand side index 'q' appears in no term"),
        ("f = X_ij X_i", "tensor 'X' is used with 2 indices (X_ij) and with 1 (X_i)"),
        ("a b = c", "must be a tensor with its indices"),
        ("delta_ij = a_i b_j", "delta is reserved"),
        ("f = f x", "cannot also appear on its right-hand side"),
        ("a_i + b_i c_i", "output indices are ambiguous"),
    ],
)
def test_index_rule_errors(source, message):
    with pytest.raises(einderiv.IndexRuleError) as info:
        einderiv.compile(source)
    assert message in str(info.value)


def test_implicit_output_indices_follow_numpy():
    assert einderiv.compile("A_ij x_j").indices == ("i",)
    assert einderiv.compile("A_ji B_ik").indices == ("j", "k")
    assert einderiv.compile("x_i x_i").indices == ()


def test_all_errors_share_the_base_class():
    for cls in (einderiv.ParseError, einderiv.IndexRuleError, einderiv.DifferentiationError, einderiv.EvaluationError):
        assert issubclass(cls, einderiv.EinderivError)
