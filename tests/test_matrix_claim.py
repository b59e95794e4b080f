"""Matrix-notation claims (``einderiv check --expect "A x + A^T x"``): their reading as index
notation, checked numerically against hand-written NumPy, and the CLI's verdicts and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einderiv
from einderiv.checking import claim_value
from einderiv.errors import EinderivError, ParseError
from einderiv.matrix.translate import translate
from tests.helpers import run_cli as run

RANKS = {"A": 2, "B": 2, "M": 2, "X": 2, "x": 1, "y": 1, "u": 1, "s": 0}
RNG = np.random.default_rng(7)
N, K = 4, 3
ARRAYS = {
    "A": RNG.normal(size=(N, N)),
    "B": RNG.normal(size=(N, N)),
    "M": RNG.normal(size=(N, K)),
    "x": RNG.normal(size=N),
    "y": RNG.normal(size=N),
    "u": RNG.normal(size=K),
    "s": np.float64(RNG.normal()),
}
_G = RNG.normal(size=(N, N))
ARRAYS["X"] = _G @ _G.T + N * np.eye(N)  # positive definite: det > 0 for logdet


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def evaluate(rhs: str, indices: str | tuple[str, ...], shape: tuple[int, ...], arrays: dict = ARRAYS) -> np.ndarray:
    """``c_{indices} = rhs`` compiled and evaluated by einderiv as ``einderiv check`` does, for a
    result of the given shape (it fixes the sizes of indices that only deltas carry)."""
    return np.asarray(claim_value(rhs, tuple(indices), dict(arrays), shape))


def read(text: str, indices: str, shape: tuple[int, ...]) -> np.ndarray:
    return evaluate(translate(text, RANKS, tuple(indices)).rhs, indices, shape)


A, B, M, X, x, y, u, s = (ARRAYS[k] for k in "A B M X x y u s".split())
Xinv = np.linalg.inv(X)

CONSTRUCTS = [
    ("A x", "k", lambda: A @ x),
    ("A^T x", "k", lambda: A.T @ x),
    ("x^T A", "k", lambda: x @ A),  # a row vector claim: the same array
    ("A B", "kl", lambda: A @ B),
    ("(A B)^T", "kl", lambda: (A @ B).T),
    ("A^T B^T", "kl", lambda: A.T @ B.T),
    ("A B x", "k", lambda: A @ B @ x),
    ("M u", "k", lambda: M @ u),
    ("M^T x", "k", lambda: M.T @ x),
    ("M^T A M", "kl", lambda: M.T @ A @ M),
    ("x u^T", "kl", lambda: np.outer(x, u)),
    ("x^T y", "", lambda: x @ y),
    ("x^T A y", "", lambda: x @ A @ y),
    ("(x^T y) x", "k", lambda: (x @ y) * x),
    ("x (x^T y)", "k", lambda: (x @ y) * x),
    ("2 A x - 0.5 x", "k", lambda: 2 * A @ x - 0.5 * x),
    ("-2 A^T (y - A x)", "k", lambda: -2 * A.T @ (y - A @ x)),
    ("-x", "k", lambda: -x),
    ("A x + A^T x", "k", lambda: A @ x + A.T @ x),
    ("(A + A^T) x", "k", lambda: (A + A.T) @ x),
    ("x / (x^T x)", "k", lambda: x / (x @ x)),
    ("A x / 2", "k", lambda: A @ x / 2),
    ("x ⊙ y", "k", lambda: x * y),
    ("x .* y", "k", lambda: x * y),
    ("A B ⊙ A", "kl", lambda: (A @ B) * A),
    ("A ⊙ B + A", "kl", lambda: A * B + A),
    ("exp(A x)", "k", lambda: np.exp(A @ x)),
    ("sigmoid(A x) - y", "k", lambda: sigmoid(A @ x) - y),
    ("A^T (sigmoid(A x) - y)", "k", lambda: A.T @ (sigmoid(A @ x) - y)),
    ("tanh(A) B", "kl", lambda: np.tanh(A) @ B),
    ("tr(A B)", "", lambda: np.trace(A @ B)),
    ("tr(exp(A))", "", lambda: np.trace(np.exp(A))),
    ("tr(A X^-1 B)", "", lambda: np.trace(A @ Xinv @ B)),
    ("det(X)", "", lambda: np.linalg.det(X)),
    ("logdet(X)", "", lambda: np.log(np.linalg.det(X))),
    ("det(X) X^-T", "kl", lambda: np.linalg.det(X) * Xinv.T),
    ("X^-1", "kl", lambda: Xinv),
    ("X^-T", "kl", lambda: Xinv.T),
    ("inv(X)", "kl", lambda: Xinv),
    ("inv(X)^T", "kl", lambda: Xinv.T),
    ("X^{-1} x", "k", lambda: Xinv @ x),
    ("x^T X^-1 y", "", lambda: x @ Xinv @ y),
    ("diag(x)", "kl", lambda: np.diag(x)),
    ("diag(x) A", "kl", lambda: np.diag(x) @ A),
    ("diag(x^T)", "kl", lambda: np.diag(x)),
    ("tr(diag(x))", "", lambda: x.sum()),
    ("A^T diag(sigmoid(A x) ⊙ (1 - sigmoid(A x))) A", "kl",
     lambda: A.T @ np.diag(sigmoid(A @ x) * (1 - sigmoid(A @ x))) @ A),
    ("sum(x)", "", lambda: x.sum()),
    ("sum(A)", "", lambda: A.sum()),
    ("sum(exp(x))", "", lambda: np.exp(x).sum()),
    ("softmax(x)", "k", lambda: np.exp(x) / np.exp(x).sum()),
    ("A softmax(x)", "k", lambda: A @ (np.exp(x) / np.exp(x).sum())),
    ("logsumexp(x)", "", lambda: np.log(np.exp(x).sum())),
    ("logsumexp(A x)", "", lambda: np.log(np.exp(A @ x).sum())),
    ("I + A", "kl", lambda: np.eye(N) + A),
    ("(I - A) x", "k", lambda: x - A @ x),
    ("s x", "k", lambda: s * x),
    ("s^2 x", "k", lambda: s**2 * x),
    ("(x^T x)^-1 x", "k", lambda: x / (x @ x)),
    ("(x^T x)^0.5", "", lambda: np.sqrt(x @ x)),
    ("1 - x", "k", lambda: 1 - x),
    ("(1 - x)^T (1 + y)", "", lambda: (1 - x) @ (1 + y)),
    ("(1 + A) (1 + x)", "k", lambda: (1 + A) @ (1 + x)),
    ("(1 - x) (1 + y)^T", "kl", lambda: np.outer(1 - x, 1 + y)),
    ("tr(1 + A)", "", lambda: np.trace(1 + A)),
    ("sum(1 + x)", "", lambda: (1 + x).sum()),
    ("A(x + y)", "k", lambda: A @ (x + y)),
    ("A^Tx", "k", lambda: A.T @ x),
    ("x^T (A + A^T) x", "", lambda: x @ (A + A.T) @ x),
]  # fmt: skip


@pytest.mark.parametrize("text, indices, expected", CONSTRUCTS, ids=[c[0] for c in CONSTRUCTS])
def test_each_construct_reads_as_index_notation_with_the_same_value(text, indices, expected):
    value = np.asarray(expected(), dtype=np.float64)
    np.testing.assert_allclose(read(text, indices, value.shape), value, rtol=1e-10, atol=1e-12)


def test_readings_are_the_expected_index_notation():
    assert translate("A x + A^T x", RANKS, ("k",)).rhs == "A_ki x_i + A_jk x_j"
    assert translate("a b^T", {"a": 1, "b": 1}, ("k", "l")).rhs == "a_k b_l"
    assert translate("X^-T", RANKS, ("i", "j")).rhs == "inv(X)_ji"
    assert translate("I", {}, ("i", "j")).rhs == "delta_ij"
    assert translate("tr(A B)", RANKS, ()).rhs == "sum_i(A_ij B_ji)"


def test_summed_indices_are_fresh():
    """Contraction letters avoid the free indices and each other; long index names are braced."""
    translation = translate("A B A x", RANKS, ("i",))
    subscripts = "".join(t.split("_")[1] for t in translation.rhs.split())
    assert subscripts.count("i") == 1  # the free index, once
    assert all(subscripts.count(letter) == 2 for letter in set(subscripts) - {"i"})  # each summed one, twice
    assert len(set(subscripts)) == 4
    np.testing.assert_allclose(evaluate(translation.rhs, "i", (N,)), A @ B @ A @ x, rtol=1e-10)
    braced = translate("A B", RANKS, ("row", "col"))
    assert braced.rhs.startswith("A_{row,")
    np.testing.assert_allclose(evaluate(braced.rhs, ("row", "col"), (N, N)), A @ B, rtol=1e-10)


@pytest.mark.parametrize(
    "text, indices, expected",
    [
        # inv, det and logdet of an expression: once an error, now statements before the claim
        ("det(A B)", "", lambda: np.linalg.det(A @ B)),
        ("(A B)^-1", "kl", lambda: np.linalg.inv(A @ B)),
        ("inv(X^T)", "kl", lambda: np.linalg.inv(X.T)),
        ("-inv(X^T) x y^T inv(X^T)", "kl", lambda: -np.linalg.inv(X.T) @ np.outer(x, y) @ np.linalg.inv(X.T)),
        (
            "logdet(X + X^T) + tr(inv(A B) A)",
            "",
            lambda: np.linalg.slogdet(X + X.T)[1] + np.trace(np.linalg.inv(A @ B) @ A),
        ),
    ],
)
def test_matrix_functions_of_expressions_become_statements_before_the_claim(text, indices, expected):
    translation = translate(text, RANKS, tuple(indices))
    assert ";" in translation.rhs  # the statements, then the claim
    shape = (N,) * len(indices)
    np.testing.assert_allclose(evaluate(translation.rhs, indices, shape), expected(), rtol=1e-9)


def test_the_identity_is_an_input_when_one_is_named_I():
    ranks = {"I": 1, "x": 1}
    np.testing.assert_allclose(
        evaluate(translate("I + x", ranks, ("k",)).rhs, "k", (N,), {"I": y, "x": x}), y + x, rtol=1e-12
    )


@pytest.mark.parametrize(
    "text, indices, message",
    [
        ("Q x", "k", "column 1: unknown name 'Q'"),
        ("x A", "k", "column 3: a column vector times a matrix"),
        ("x y", "k", "a column vector times a column vector"),
        ("x ⊙ A", "k", "'⊙' needs operands of the same shape, not a column vector and a matrix"),
        ("x + A", "k", "cannot add a column vector and a matrix"),
        ("tr(x)", "", "a trace needs a matrix"),
        ("det(x)", "", "det(...) of a column vector: it takes a square matrix"),
        ("x^-1", "k", "an inverse of a column vector: it takes a square matrix"),
        ("A^0.5", "kl", "powers apply to scalars only"),
        ("x^2", "k", "powers apply to scalars only"),
        ("x / y", "k", "division only by a scalar"),
        ("diag(A)", "kl", "it takes a vector"),
        ("foo(x)", "k", "unknown function 'foo'"),
        ("exp x", "k", "'exp' is a function"),
        ("T", "kl", "'T' has 3 indices: matrix notation covers ranks 0, 1 and 2"),
        ("x^T x", "k", "is a scalar, but the derivative is a column vector or a row vector (index k)"),
        ("A x", "", "is a column vector, but the derivative is a scalar"),
        ("A", "pqij", "4 free indices"),
    ],
)
def test_shape_and_name_errors_are_clear(text, indices, message):
    with pytest.raises(EinderivError, match=r".*" + _escaped(message)) as caught:
        translate(text, {**RANKS, "T": 3}, tuple(indices))
    assert not isinstance(caught.value, ParseError)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("text, column", [("A x +", 6), ("A ) x", 3), ("A x_k", 4), ("2 ** x", 4)])
def test_syntax_errors_carry_the_column(text, column):
    with pytest.raises(ParseError) as caught:
        translate(text, RANKS, ("k",))
    assert caught.value.column == column
    assert caught.value.caret.splitlines()[1] == "  " + " " * (column - 1) + "^"


# -- against einderiv's own derivatives, in both layouts -------------------------------------


def test_claims_follow_the_layout():
    arrays = {"A": M, "x": u}  # A: 4x3, so the Jacobian of A x is 4x3 (numerator) or 3x4 (denominator)
    numerator = einderiv.jacobian("y_i = A_ij x_j", "x")
    denominator = einderiv.jacobian("y_i = A_ij x_j", "x", layout="denominator")
    for derivative, claim in ((numerator, "A"), (denominator, "A^T")):
        translation = translate(claim, derivative.ranks, derivative.indices)
        value = derivative(**arrays)
        np.testing.assert_allclose(evaluate(translation.rhs, derivative.indices, value.shape, arrays), value)
    square = {"A": A, "x": x}
    wrong = evaluate(translate("A", denominator.ranks, denominator.indices).rhs, denominator.indices, (N, N), square)
    assert not np.allclose(wrong, denominator(**square))  # the numerator layout's claim, in the other layout


# -- the CLI ------------------------------------------------------------------------------------


LOGISTIC = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))"
SEED_CLAIMS = [
    (["f = x_i A_ij x_j", "--wrt", "x"], "A x + A^T x", "A_ki x_i + A_jk x_j"),
    (["f = x_i A_ij x_j", "--wrt", "x"], "(A + A^T) x", "(A_ki + A_ik) x_i"),
    (["f = x_i A_ij x_j", "--wrt", "x"], "x^T (A + A^T)", None),  # a row vector for a one-index result
    (["f = x_i A_ij x_j", "--wrt", "x", "--wrt", "x"], "A + A^T", "A_kl + A_lk"),
    (["e_n = y_n - Phi_nd theta_d; L = e_n e_n", "--wrt", "theta", "--shape", "Phi=5x3", "--shape", "y=5"],
     "-2 Phi^T (y - Phi theta)", None),
    (["e_n = y_n - Phi_nd theta_d; L = e_n e_n", "--wrt", "theta", "--shape", "Phi=5x3", "--shape", "y=5"],
     "2 Phi^T Phi theta - 2 Phi^T y", None),
    (["f = a_i X_ij b_j", "--wrt", "X", "--shape", "X=3x4", "--shape", "b=4"], "a b^T", "a_k b_l"),
    (["f = logdet(X)", "--wrt", "X", "--shape", "X=3x3"], "X^-T", "inv(X)_ji"),
    (["f = A_ij X_jk B_ki", "--wrt", "X", "--shape", "A=2x3", "--shape", "X=3x4", "--shape", "B=4x2"],
     "A^T B^T", None),
    ([LOGISTIC, "--wrt", "w", "--shape", "X=5x3", "--shape", "y=5"], "X^T (sigmoid(X w) - y)", None),
    ([LOGISTIC, "--wrt", "w", "--wrt", "w", "--shape", "X=5x3", "--shape", "y=5"],
     "X^T diag(sigmoid(X w) ⊙ (1 - sigmoid(X w))) X", None),
    (["y_i = x_i", "--wrt", "x", "--shape", "x=4"], "I", "delta_ij"),
]  # fmt: skip


@pytest.mark.parametrize("args, claim, reading", SEED_CLAIMS, ids=[c[1] for c in SEED_CLAIMS])
def test_seed_results_as_matrix_claims_match(args, claim, reading):
    result = run("check", *args, "--expect", claim)
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = result.stdout.splitlines()[-1]
    assert verdict.startswith("your claim (matrix notation, read as "), verdict
    assert ": matches (max absolute difference" in verdict
    if reading is not None:
        assert verdict.startswith(f"your claim (matrix notation, read as {reading}): matches")


def test_a_wrong_matrix_claim_differs_with_exit_1():
    result = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "2 A x")
    assert result.returncode == 1
    assert "your claim (matrix notation, read as 2 A_ki x_i): DIFFERS: max absolute difference" in result.stdout
    assert "at k=" in result.stdout
    wrong_layout = run("check", "y_i = A_ij x_j", "--wrt", "x", "--shape", "A=3x3", "--expect", "A^T")
    assert wrong_layout.returncode == 1 and "DIFFERS" in wrong_layout.stdout


def test_index_claims_keep_their_output():
    result = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "A_kj x_j + A_jk x_j")
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("your claim: matches")
    identity = run("check", "y_i = x_i", "--wrt", "x", "--expect", "delta_ij")  # sizes only from deltas
    assert identity.returncode == 0 and identity.stdout.splitlines()[-1].startswith("your claim: matches")


@pytest.mark.parametrize(
    "args, claim, message",
    [
        (["f = x_i A_ij x_j", "--wrt", "x"], "B x", "error: matrix claim 'B x', column 1: unknown name 'B'"),
        (["f = x_i A_ij x_j", "--wrt", "x"], "x A", "error: matrix claim 'x A', column 3: a column vector times"),
        (["f = x_i A_ij x_j", "--wrt", "x"], "x ⊙ A", "error: matrix claim 'x ⊙ A', column 1: '⊙' needs operands"),
        (["f = x_i A_ij x_j", "--wrt", "x"], "x^T A x", "error: matrix claim 'x^T A x' is a scalar, but the"),
        (["K_pq = R_mp R_mq", "--wrt", "R"], "R^T R", "error: the derivative has 4 free indices (p, q, i, j)"),
        (
            ["f = x_i A_ij y_j", "--wrt", "x", "--shape", "A=3x4", "--shape", "y=4"],
            "A^T x",
            "error: --expect: the claim does not fit the derivative's shape (3,): index 'k' has two sizes",
        ),
        (["f = x_i x_i", "--wrt", "x"], " " + "-" * 70 + "x", "error: the matrix claim is nested deeper than 64"),
    ],
)
def test_cli_claim_errors_print_one_line_and_exit_2(args, claim, message):
    result = run("check", *args, "--expect", claim)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(message), lines
    assert len(lines) == 1


def test_text_without_subscripts_falls_back_to_index_notation_when_matrix_syntax_fails():
    result = run("check", "f = s s s", "--wrt", "s", "--expect", "3 s^2  # by hand")  # comments are index notation only
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("your claim: matches")
    both_fail = run("check", "f = s s s", "--wrt", "s", "--expect", "3 s^")
    assert both_fail.returncode == 2 and both_fail.stderr.startswith("error: syntax error: the input ends too early")


def test_cli_claim_syntax_error_has_a_caret():
    result = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "A x + ")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: syntax error: the input ends too early") and "column 7" in lines[0]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert lines[1] == "  A x + " and lines[2] == "  " + " " * 6 + "^"


# -- property: random well-shaped trees read as index notation keep their value ----------------

SCALAR, COLUMN, ROW, MATRIX = "scalar", "column", "row", "matrix"
LEAVES = {
    MATRIX: [("A", lambda e: e["A"]), ("B", lambda e: e["B"])],
    COLUMN: [("x", lambda e: e["x"][:, None]), ("y", lambda e: e["y"][:, None])],
    ROW: [("x^T", lambda e: e["x"][None, :]), ("y^T", lambda e: e["y"][None, :])],
    SCALAR: [("2", lambda e: np.full((1, 1), 2.0)), ("0.5", lambda e: np.full((1, 1), 0.5))],
}
#: (left shape, right shape) of a juxtaposition product giving each shape
PRODUCTS = {
    MATRIX: [(MATRIX, MATRIX), (COLUMN, ROW), (SCALAR, MATRIX)],
    COLUMN: [(MATRIX, COLUMN), (SCALAR, COLUMN), (COLUMN, SCALAR)],
    ROW: [(ROW, MATRIX), (SCALAR, ROW)],
    SCALAR: [(ROW, COLUMN), (SCALAR, SCALAR)],
}
TRANSPOSED = {MATRIX: MATRIX, COLUMN: ROW, ROW: COLUMN, SCALAR: SCALAR}


def _times(left, right):
    """Juxtaposition: a matrix product, or a product with a 1x1 scalar."""
    return left * right if (1, 1) in (left.shape, right.shape) else left @ right


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _logsumexp(v):
    return np.full((1, 1), v.max() + np.log(np.exp(v - v.max()).sum()))


#: calls giving each shape: (function, argument shape, NumPy on the 2-d argument)
CALLS = {
    MATRIX: [("tanh", MATRIX, np.tanh)],
    COLUMN: [("tanh", COLUMN, np.tanh), ("softmax", COLUMN, _softmax)],
    ROW: [("softmax", ROW, _softmax)],
    SCALAR: [
        ("tr", MATRIX, lambda m: np.full((1, 1), np.trace(m))),
        ("sum", MATRIX, lambda m: np.full((1, 1), m.sum())),
        ("sum", COLUMN, lambda v: np.full((1, 1), v.sum())),
        ("logsumexp", COLUMN, _logsumexp),
    ],
}


@st.composite
def trees(draw, shape: str, depth: int):
    """(matrix-notation text, NumPy evaluation over 2-d arrays) of a random tree of that shape."""
    kinds = ["leaf"] if depth == 0 else ["leaf", "product", "product", "transpose", "sum", "hadamard", "call"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(st.sampled_from(LEAVES[shape]))
    if kind == "product":
        left_shape, right_shape = draw(st.sampled_from(PRODUCTS[shape]))
        (lt, lf), (rt, rf) = draw(trees(left_shape, depth - 1)), draw(trees(right_shape, depth - 1))
        return f"({lt}) ({rt})", lambda e: _times(lf(e), rf(e))
    if kind == "transpose":
        text, f = draw(trees(TRANSPOSED[shape], depth - 1))
        if text in ("2", "0.5"):  # a number has no transpose: an error (tests/test_what_people_type.py)
            return text, f
        return f"({text})^T", lambda e: f(e).T
    if kind == "call":
        name, arg_shape, numpy_call = draw(st.sampled_from(CALLS[shape]))
        text, f = draw(trees(arg_shape, depth - 1))
        return f"{name}({text})", lambda e: numpy_call(f(e))
    (lt, lf), (rt, rf) = draw(trees(shape, depth - 1)), draw(trees(shape, depth - 1))
    if kind == "hadamard":
        return f"({lt}) ⊙ ({rt})", lambda e: lf(e) * rf(e)
    if draw(st.booleans()):  # (3 rt, not rt: a difference that cancels to 0 inside tanh hits a runtime limit)
        return f"{lt} - 3 ({rt})", lambda e: lf(e) - 3 * rf(e)
    constant = draw(st.sampled_from(["1", "3"]))  # a scalar added to a vector or matrix: broadcast
    if shape != SCALAR and draw(st.booleans()):
        return f"{constant} + ({lt})", lambda e: float(constant) + lf(e)
    return f"({lt}) + ({rt})", lambda e: lf(e) + rf(e)


FREE = {MATRIX: ("i", "j"), COLUMN: ("i",), ROW: ("i",), SCALAR: ()}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([MATRIX, COLUMN, ROW, SCALAR]).flatmap(lambda shape: st.tuples(st.just(shape), trees(shape, 3))))
def test_random_matrix_expressions_read_as_index_notation_keep_their_value(case):
    shape, (text, numpy_value) = case
    ranks = {"A": 2, "B": 2, "x": 1, "y": 1}
    translation = translate(text, ranks, FREE[shape])
    arrays = {"A": A, "B": B, "x": x, "y": y}
    expected = numpy_value(arrays)
    expected = expected.item() if shape == SCALAR else expected.reshape(-1) if shape in (COLUMN, ROW) else expected
    got = evaluate(translation.rhs, FREE[shape], np.shape(expected), arrays)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * max(1.0, float(np.max(np.abs(expected)))))


@pytest.mark.parametrize(
    "args, claim, verdict",
    [
        (["f = sum_i(x_i)", "--wrt", "x"], "1", "matches"),
        (["y_i = x_i - x_i", "--wrt", "x"], "0", "matches"),
        (["f = sum_i(x_i / 3 + 0.25 x_i)", "--wrt", "x"], "(7/12)", "matches"),
        (["f = sum_i(x_i)", "--wrt", "x"], "2", "DIFFERS"),
        (["f = x_i A_ij x_j", "--wrt", "x"], "df/dx = (A + A^T) x", "matches"),  # as --format matrix prints it
        (["f = x_i A_ij x_j", "--wrt", "x"], "df/dx = 2 A x", "DIFFERS"),
    ],
)
def test_constant_and_whole_line_matrix_claims(args, claim, verdict):
    """Every constant form the printer writes (``df/dx = 1``) and every whole line it prints
    reads back as a claim."""
    result = run("check", *args, "--expect", claim)
    assert result.returncode == (0 if verdict == "matches" else 1), result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("your claim (matrix notation, read as ")
    assert f": {verdict}" in result.stdout.splitlines()[-1]


def test_a_non_constant_scalar_is_no_claim_for_a_vector():
    result = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "x^T x")
    assert result.returncode == 2
    assert result.stderr.startswith("error: matrix claim 'x^T x' is a scalar, but the derivative is a column vector")
