"""Matrix notation as input (``f = x^T A x``, ``x' * A * x``): each expression evaluated and
differentiated by einderiv, against NumPy closed forms written here and central finite differences
of those closed forms; the reading shown; rank inference and its errors; the CLI's --notation/--rank."""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
import pytest

import einderiv
from einderiv.errors import EinderivError, EvaluationError, IndexRuleError, ParseError
from einderiv.matrix.reading import detect, matrix_marks
from tests.helpers import run_cli as run

N, M = 4, 5
RNG = np.random.default_rng(12)
_G = RNG.normal(size=(N, N))
BASE = {
    "x": RNG.normal(size=N),
    "w": RNG.normal(size=N),
    "a": RNG.normal(size=N),
    "b": RNG.normal(size=N),
    "v": RNG.uniform(0.5, 1.5, size=N),
    "A": RNG.normal(size=(N, N)),
    "B": RNG.normal(size=(N, N)),
    "S": _G @ _G.T + N * np.eye(N),  # positive definite
    "X": RNG.normal(size=(N, N)) + 3 * np.eye(N),  # square, invertible, positive determinant
    "lam": 0.7,
}
TALL = {"X": RNG.normal(size=(M, N)), "y": RNG.normal(size=M)}  # least squares: X is M x N


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


inv, det, tr = np.linalg.inv, np.linalg.det, np.trace

# (source, arrays beyond BASE, value by hand, wrt, derivative by hand) with d(out)/d(wrt) in the
# numerator layout: out.shape + wrt.shape
CASES = [
    ("f = x^T A x", {}, lambda x, A: x @ A @ x, "x", lambda x, A: (A + A.T) @ x),
    ("f = x' * A * x", {}, lambda x, A: x @ A @ x, "x", lambda x, A: (A + A.T) @ x),
    ("f = xᵀ A x", {}, lambda x, A: x @ A @ x, "x", lambda x, A: (A + A.T) @ x),
    ("f = aᵀ X⁻¹ b + (aᵀ b)²", {}, lambda a, X, b: a @ inv(X) @ b + (a @ b) ** 2, "X",
     lambda a, X, b: -inv(X).T @ np.outer(a, b) @ inv(X).T),
    ("f = aᵀ X⁻ᵀ b", {}, lambda a, X, b: a @ inv(X).T @ b, "a", lambda a, X, b: inv(X).T @ b),
    ("x^T A x", {}, lambda x, A: x @ A @ x, "A", lambda x, A: np.outer(x, x)),
    ("L = (y - X w)^T (y - X w)", TALL, lambda y, X, w: (y - X @ w) @ (y - X @ w), "w",
     lambda y, X, w: -2 * X.T @ (y - X @ w)),
    ("L = (y - X*w)'*(y - X*w)", TALL, lambda y, X, w: (y - X @ w) @ (y - X @ w), "X",
     lambda y, X, w: -2 * np.outer(y - X @ w, w)),
    ("e = y - X w\nL = e^T e", TALL, lambda y, X, w: (y - X @ w) @ (y - X @ w), "w",
     lambda y, X, w: -2 * X.T @ (y - X @ w)),
    ("L = norm2(X w - y)^2 + lam w^T w", TALL, lambda X, w, y, lam: np.sum((X @ w - y) ** 2) + lam * w @ w, "w",
     lambda X, w, y, lam: 2 * X.T @ (X @ w - y) + 2 * lam * w),
    ("f = tr(A X B)", {}, lambda A, X, B: tr(A @ X @ B), "X", lambda A, X, B: A.T @ B.T),
    ("f = logdet(X)", {}, lambda X: np.log(det(X)), "X", lambda X: inv(X).T),
    ("f = logdet(S)", {}, lambda S: np.log(det(S)), "S", lambda S: inv(S).T),
    ("f = det(X)", {}, lambda X: det(X), "X", lambda X: det(X) * inv(X).T),
    ("f = a^T inv(X) b", {}, lambda a, X, b: a @ inv(X) @ b, "X",
     lambda a, X, b: -inv(X).T @ np.outer(a, b) @ inv(X).T),
    ("f = a^T X^-1 b", {}, lambda a, X, b: a @ inv(X) @ b, "b", lambda a, X, b: inv(X).T @ a),
    ("f = a' * inv(S) * b", {}, lambda a, S, b: a @ inv(S) @ b, "S",
     lambda a, S, b: -inv(S).T @ np.outer(a, b) @ inv(S).T),
    ("f = logdet(X^T X)", TALL, lambda X: np.log(det(X.T @ X)), "X", lambda X: 2 * X @ inv(X.T @ X)),
    ("f = tr(inv(S + A))", {}, lambda S, A: tr(inv(S + A)), "A", lambda S, A: -(inv(S + A) @ inv(S + A)).T),
    ("f = det(A X B)", {}, lambda A, X, B: det(A @ X @ B), "X",
     lambda A, X, B: det(A @ X @ B) * A.T @ inv(A @ X @ B).T @ B.T),
    ("f = tr(x^T w)", {}, lambda x, w: x @ w, "x", lambda x, w: w),
    ("g = (x^T w) a", {}, lambda x, w, a: (x @ w) * a, "w", lambda x, w, a: np.outer(a, x)),
    ("f = lam x^T x", {}, lambda lam, x: lam * x @ x, "x", lambda lam, x: 2 * lam * x),
    ("f = lam x^T x", {}, lambda lam, x: lam * x @ x, "lam", lambda lam, x: x @ x),
    ("y = A x", {}, lambda A, x: A @ x, "x", lambda A, x: A),
    ("y = A x", {}, lambda A, x: A @ x, "A", lambda A, x: np.einsum("ik,l->ikl", np.eye(N), x)),
    ("F = A X B", {}, lambda A, X, B: A @ X @ B, "X", lambda A, X, B: np.einsum("ik,lj->ijkl", A, B)),
    ("F = A^T diag(x) A", {}, lambda A, x: A.T @ np.diag(x) @ A, "x", lambda A, x: np.einsum("ki,kj->ijk", A, A)),
    ("f = sum(exp(x))", {}, lambda x: np.exp(x).sum(), "x", lambda x: np.exp(x)),
    ("f = sum(log(sigmoid(X w)))", TALL, lambda X, w: np.log(sigmoid(X @ w)).sum(), "w",
     lambda X, w: X.T @ (1 - sigmoid(X @ w))),
    ("L = -y' * log(sigmoid(X * w)) - (1 - y)' * log(1 - sigmoid(X * w))", TALL,
     lambda y, X, w: -y @ np.log(sigmoid(X @ w)) - (1 - y) @ np.log(1 - sigmoid(X @ w)), "w",
     lambda y, X, w: X.T @ (sigmoid(X @ w) - y)),
    ("s = sigmoid(X w)", TALL, lambda X, w: sigmoid(X @ w), "w",
     lambda X, w: (sigmoid(X @ w) * (1 - sigmoid(X @ w)))[:, None] * X),
    ("f = norm2(A x - b)", {}, lambda A, x, b: np.linalg.norm(A @ x - b), "x",
     lambda A, x, b: A.T @ (A @ x - b) / np.linalg.norm(A @ x - b)),
    ("z = x .* w", {}, lambda x, w: x * w, "x", lambda x, w: np.diag(w)),
    ("z = x ⊙ w + b", {}, lambda x, w, b: x * w + b, "w", lambda x, w, b: np.diag(x)),
    ("z = x ./ v", {}, lambda x, v: x / v, "v", lambda x, v: np.diag(-x / v**2)),
    ("z = x.^3", {}, lambda x: x**3, "x", lambda x: np.diag(3 * x**2)),
    ("f = a^T (x .* w + b)", {}, lambda a, x, w, b: a @ (x * w + b), "x", lambda a, x, w, b: a * w),
    ("f = a^T (-(x .* w) + b)", {}, lambda a, x, w, b: a @ (b - x * w), "x", lambda a, x, w, b: -a * w),
    ("f = a^T exp(x .* w)", {}, lambda a, x, w: a @ np.exp(x * w), "x", lambda a, x, w: a * np.exp(x * w) * w),
    ("f = x^T diag(v) x", {}, lambda x, v: x @ np.diag(v) @ x, "x", lambda x, v: 2 * v * x),
    ("f = x^T (diag(v) + A) x", {}, lambda x, v, A: x @ (np.diag(v) + A) @ x, "x",
     lambda x, v, A: (2 * np.diag(v) + A + A.T) @ x),
    ("f = sum(1 ./ (1 + exp(-x)))", {}, lambda x: sigmoid(x).sum(), "x", lambda x: sigmoid(x) * (1 - sigmoid(x))),
    ("f = tr(X^T X)", {}, lambda X: tr(X.T @ X), "X", lambda X: 2 * X),
    ("f = sum(A .* B)", {}, lambda A, B: (A * B).sum(), "A", lambda A, B: B),
    ("f = tr(A^3)", {}, lambda A: tr(A @ A @ A), "A", lambda A: 3 * (A @ A).T),
    ("f = (x^T w)^2", {}, lambda x, w: (x @ w) ** 2, "x", lambda x, w: 2 * (x @ w) * w),
    ("f = -(x^T x) + 2 a' * x", {}, lambda x, a: -(x @ x) + 2 * a @ x, "x", lambda x, a: -2 * x + 2 * a),
    ("f = (1 - x)^T (1 + w)", {}, lambda x, w: (1 - x) @ (1 + w), "x", lambda x, w: -(1 + w)),
    ("f = 1 - x^T x / (1 + lam)", {}, lambda x, lam: 1 - x @ x / (1 + lam), "x", lambda x, lam: -2 * x / (1 + lam)),
    ("f = logdet(S) - tr(inv(S) A)", {}, lambda S, A: np.log(det(S)) - tr(inv(S) @ A), "S",
     lambda S, A: inv(S).T + inv(S).T @ A.T @ inv(S).T),
    ("f = exp(-0.5 * x' * inv(S) * x)", {}, lambda x, S: np.exp(-0.5 * x @ inv(S) @ x), "x",
     lambda x, S: -np.exp(-0.5 * x @ inv(S) @ x) * 0.5 * (inv(S) + inv(S).T) @ x),
    ("f = x^T A^T A x - 2 b^T A x", {}, lambda x, A, b: x @ A.T @ A @ x - 2 * b @ A @ x, "x",
     lambda x, A, b: 2 * A.T @ A @ x - 2 * A.T @ b),
    # '@' as NumPy means it: a vector on its left is a row; '∘' is the Matrix Cookbook's Hadamard product
    ("f = x @ A @ x", {}, lambda x, A: x @ A @ x, "x", lambda x, A: (A + A.T) @ x),
    ("f = a @ b", {}, lambda a, b: a @ b, "a", lambda a, b: b),
    ("g = x @ A", {}, lambda x, A: x @ A, "x", lambda x, A: A.T),
    ("L = (y - X @ w) @ (y - X @ w)", TALL, lambda y, X, w: (y - X @ w) @ (y - X @ w), "w",
     lambda y, X, w: -2 * X.T @ (y - X @ w)),
    ("F = X^T @ X", TALL, lambda X: X.T @ X, "X",
     lambda X: np.einsum("kj,il->ijkl", X, np.eye(N)) + np.einsum("ki,jl->ijkl", X, np.eye(N))),
    ("z = x ∘ w", {}, lambda x, w: x * w, "w", lambda x, w: np.diag(x)),
]  # fmt: skip


def _arrays(case) -> dict:
    extra, value = case[1], case[2]
    names = inspect.signature(value).parameters
    return {name: {**BASE, **extra}[name] for name in names}


def _call(function, arrays):
    return np.asarray(function(**arrays), dtype=np.float64)


def _finite_differences(value, arrays, wrt, h=1e-6):
    """Central differences of the hand-written value, in float64: out.shape + wrt.shape."""
    base = {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}
    out = _call(value, base)
    result = np.zeros(out.shape + base[wrt].shape)
    for position in np.ndindex(*base[wrt].shape):
        plus, minus = dict(base), dict(base)
        plus[wrt], minus[wrt] = base[wrt].copy(), base[wrt].copy()
        plus[wrt][position] += h
        minus[wrt][position] -= h
        result[(Ellipsis, *position)] = (_call(value, plus) - _call(value, minus)) / (2 * h)
    return result


IDS = [f"{c[0]} d/d{c[3]}".replace("\n", "; ") for c in CASES]


def test_at_least_thirty_distinct_inputs():
    assert len({c[0] for c in CASES}) >= 30


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_matches_the_closed_form(case):
    source, _, value = case[:3]
    arrays = _arrays(case)
    expected = _call(value, arrays)
    got = einderiv.evaluate(source, notation="matrix", **arrays)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    compiled = einderiv.compile(source, notation="matrix")  # ranks inferred from the text alone
    assert compiled.reading.notation == "matrix"
    assert dict(compiled.reading.ranks) == {k: np.ndim(v) for k, v in arrays.items()}
    np.testing.assert_allclose(compiled(**arrays), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_derivative_matches_the_closed_form_and_finite_differences(case):
    source, _, value, wrt, derivative = case
    arrays = _arrays(case)
    d = einderiv.jacobian(source, wrt, notation="matrix")
    got = np.asarray(d(**arrays))
    expected = _call(derivative, arrays)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)
    numeric = _finite_differences(value, arrays, wrt)
    np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [c for c in CASES if "^T" in c[0] or "'" in c[0] or "tr(" in c[0]], ids=str)
def test_auto_reads_text_with_matrix_marks_as_matrix_notation(case):
    arrays = _arrays(case)
    compiled = einderiv.compile(case[0])
    assert compiled.reading.notation == "matrix"
    np.testing.assert_allclose(compiled(**arrays), _call(case[2], arrays), rtol=1e-10, atol=1e-12)


# -- the seed results through grad and hessian ---------------------------------------------------------


def test_grad_and_hessian_of_the_seed_examples():
    x, A = BASE["x"], BASE["A"]
    np.testing.assert_allclose(einderiv.grad("f = x^T A x", "x")(x=x, A=A), (A + A.T) @ x, rtol=1e-12)
    np.testing.assert_allclose(einderiv.hessian("f = x^T A x", "x")(x=x, A=A), A + A.T, rtol=1e-12)
    X, y, w = TALL["X"], TALL["y"], BASE["w"]
    H = einderiv.hessian("L = (y - X w)^T (y - X w)", "w")
    np.testing.assert_allclose(H(y=y, X=X, w=w), 2 * X.T @ X, rtol=1e-12)
    assert H.matrix() == "d2L/dw dw = 2 X^T X"


def test_the_reading_is_shown_and_the_derivative_has_both_notations():
    d = einderiv.grad("f = x^T A x", "x")
    assert d.read_as == "f = x_i A_ij x_j"
    assert d.reading.notation == "matrix" and dict(d.reading.ranks) == {"x": 1, "A": 2}
    assert str(d) == "df/dx_k = A_kj x_j + x_i A_ik"
    assert d.matrix() == "df/dx = (A + A^T) x"
    assert einderiv.compile("y = A x", notation="matrix").read_as == "y_i = A_ij x_j"
    assert einderiv.compile("F = A X B", notation="matrix").read_as == "F_ij = A_ik X_kl B_lj"
    assert einderiv.compile("f = tr(A X B)").read_as == "f = sum_i(A_ij X_jk B_ki)"
    index = einderiv.compile("f = x_i A_ij x_j")
    assert index.reading.notation == "index" and index.read_as == "f = x_i A_ij x_j"


def test_parse_translates_matrix_notation():
    assert einderiv.parse("f = x^T A x") == einderiv.parse("f = x_i A_ij x_j")
    assert einderiv.parse("f = x' * A * x", notation="matrix") == einderiv.parse("f = x_i A_ij x_j")
    assert "notation" in inspect.signature(einderiv.diff).parameters
    assert "ranks" in inspect.signature(einderiv.evaluate).parameters


def test_matrix_functions_of_expressions_become_statements_with_fresh_names():
    compiled = einderiv.compile("f = logdet(X^T X)")
    assert compiled.read_as == "M1_ij = X_ki X_kj; f = logdet(M1)"
    taken = einderiv.compile("f = logdet(X^T X) + tr(M1)")  # M1 is an input here: the statement is M2
    assert taken.read_as.startswith("M2_ij = X_ki X_kj; f = logdet(M2) + ")
    X, M1 = TALL["X"], BASE["A"]
    np.testing.assert_allclose(taken(X=X, M1=M1), np.log(det(X.T @ X)) + tr(M1), rtol=1e-12)


def test_a_one_by_one_product_is_a_scalar_where_a_scalar_fits():
    x, w, a = BASE["x"], BASE["w"], BASE["a"]
    assert einderiv.compile("f = tr(x^T w)").read_as == "f = x_i w_i"
    np.testing.assert_allclose(einderiv.evaluate("f = inv(x^T x) x", x=x), x / (x @ x), rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("f = logdet(x^T x)", x=x), np.log(x @ x), rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("g = (x^T w) a", notation="matrix", x=x, w=w, a=a), (x @ w) * a)


def test_elementwise_products_inside_groups_keep_their_meaning():
    """a^T (x ⊙ w + b) must not read as a^T ((x^T w) + b): the product becomes a statement."""
    compiled = einderiv.compile("f = a^T (x .* w + b)")
    assert compiled.read_as == "v1_i = x_i w_i; f = a_i (v1_i + b_i)"


# -- notation: auto ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, marked",
    [
        ("f = x^T A x", True),
        ("f = x' * A * x", True),
        ("z = x .* y", True),
        ("z = x ⊙ y", True),
        ("z = x ./ y", True),
        ("z = x.^2", True),
        ("f = tr(A)", True),
        ("f = sum(x)", True),
        ("f = a^T X^-T b", True),
        ("F = inv(X)", True),
        ("f = det(A B)", True),
        ("f = x_i A_ij x_j", False),
        ("H_pq = inv(M)_pq", False),
        ("f = logdet(S)", False),
        ("f = sum_i(exp(x_i))", False),
        ("y = A x", False),
        ("f = x^2  # it's a comment", False),
    ],
)
def test_matrix_marks(text, marked):
    assert matrix_marks(text) is marked
    assert detect(text) == ("matrix" if marked else "index")


def test_text_without_marks_is_index_notation_and_the_evaluation_error_says_so():
    A, x = BASE["A"], BASE["x"]
    compiled = einderiv.compile("y = A x")
    assert compiled.reading.notation == "index"
    np.testing.assert_allclose(compiled(A=2.0, x=3.0), 6.0)  # a product of scalars
    with pytest.raises(EvaluationError) as caught:
        compiled(A=A, x=x)
    message = str(caught.value)
    assert "input 'A' has 2 axes" in message and "uses it as a scalar" in message
    assert "notation='matrix'" in message and "A_ij" in message
    with pytest.raises(EvaluationError, match="notation='matrix'"):
        einderiv.evaluate("y = A x", A=A, x=x)
    np.testing.assert_allclose(einderiv.evaluate("y = A x", notation="matrix", A=A, x=x), A @ x, rtol=1e-12)
    with pytest.raises(EvaluationError) as caught:  # text with indices: matrix notation would not read it
        einderiv.evaluate("y_i = A x_i", A=A, x=x)
    assert "uses it as a scalar" in str(caught.value) and "notation=" not in str(caught.value)


def test_declared_ranks_choose_matrix_notation_for_text_without_indices():
    A, x = BASE["A"], BASE["x"]
    compiled = einderiv.compile("y = A x", ranks={"A": 2, "x": 1})
    assert compiled.reading.notation == "matrix"
    np.testing.assert_allclose(compiled(A=A, x=x), A @ x, rtol=1e-12)
    with pytest.raises(IndexRuleError, match=r"'A' is declared with rank 2 \(ranks= or --rank\)"):
        einderiv.compile("y = A x", notation="index", ranks={"A": 2})
    with pytest.raises(IndexRuleError, match="'A' is declared with rank 1"):
        einderiv.compile("y_i = A_ij x_j", ranks={"A": 1})
    assert einderiv.compile("y_i = A_ij x_j", ranks={"A": 2, "x": 1}).reading.notation == "index"


def test_index_notation_is_unchanged():
    d = einderiv.grad("f = x_i A_ij x_j", "x")
    x, A = BASE["x"], BASE["A"]
    np.testing.assert_allclose(d(x=x, A=A), (A + A.T) @ x, rtol=1e-12)
    with pytest.raises(ParseError):
        einderiv.compile("f = x^T A x", notation="index")


# -- ranks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ranks",
    [
        ("f = x^T A x", {"x": 1, "A": 2}),
        ("f = lam x^T x", {"lam": 0, "x": 1}),  # lam x^T would be an outer product multiplied further
        ("y = lam x", {"lam": 0, "x": 1}),  # a lower-case name is a vector, else a scalar, else a matrix
        ("f = a b", {"a": 0, "b": 1}),  # the scalar comes first
        ("f = tr(x^T w)", {"x": 1, "w": 1}),  # a 1x1 product where a scalar fits
        ("f = tr(x)", {"x": 2}),  # a trace needs a matrix
        ("f = logdet(s)", {"s": 2}),
        ("f = x^T x", {"x": 1}),
        ("K = R^T R", {"R": 2}),
        ("P = x x^T", {"x": 1}),
        ("f = t^2 + x^T x", {"t": 0, "x": 1}),  # a power applies to a scalar
        ("f = exp(t) a^T b", {"t": 0, "a": 1, "b": 1}),
        ("y = x - mean(x)", {"x": 1}),  # a reduction of a scalar is unlikely: x was a scalar, y = x - x
        ("f = norm2(x - mean(x))^2", {"x": 1}),  # the centred norm's gradient printed 0
        ("f = sum(s)", {"s": 1}),
        ("f = x^T x + mean(s) + s", {"x": 1, "s": 0}),  # not a matrix s (a review found it)
        ("y = x / sum(x)", {"x": 1}),  # a reduction broadcast onto its vector costs nothing
        # x x^T y was the outer product x x^T times a scalar y, u u^T x a matrix u: a helper's hunt
        ("f = x x^T y", {"x": 1, "y": 1}),
        ("f = (x x^T) y", {"x": 1, "y": 1}),
        ("f = x y^T x", {"x": 1, "y": 1}),
        ("f = x - u u^T x", {"x": 1, "u": 1}),
        ("f = sum(x x^T y)", {"x": 1, "y": 1}),
        ("f = tr(x x^T A)", {"x": 1, "A": 2}),
        ("y = A x x^T b", {"A": 2, "x": 1, "b": 1}),
        ("f = lam x^T y", {"lam": 0, "x": 1, "y": 1}),
    ],
)
def test_rank_inference(text, ranks):
    assert dict(einderiv.compile(text, notation="matrix").reading.ranks) == ranks


def test_a_projection_and_a_rank_one_product_mean_what_numpy_computes():
    """With the ranks inferred, the Jacobian of x (y^T x) is (y^T x) I + x y^T and the projection
    residual x - u (u^T x) is NumPy's, where x x^T y read y as a scalar and u u^T x u as a matrix."""
    x, y, u = RNG.normal(size=3), RNG.normal(size=3), RNG.normal(size=3)
    jacobian = einderiv.jacobian("f = x y^T x", "x")
    assert str(jacobian.matrix()) == "df/dx = (y^T x) I + x y^T"
    np.testing.assert_allclose(jacobian(x=x, y=y), (y @ x) * np.eye(3) + np.outer(x, y), rtol=1e-14)
    projection = einderiv.compile("f = x - u u^T x")
    np.testing.assert_allclose(projection(x=x, u=u), x - u * (u @ x), rtol=1e-14)
    np.testing.assert_allclose(einderiv.evaluate("f = x x^T y", x=x, y=y), x * (x @ y), rtol=1e-14)


def test_declared_ranks_win_over_the_conventions():
    compiled = einderiv.compile("F = x^T x", notation="matrix", ranks={"x": 2})
    assert compiled.read_as == "F_ij = x_ki x_kj"
    X = BASE["A"]
    np.testing.assert_allclose(compiled(x=X), X.T @ X, rtol=1e-12)


def test_an_ambiguity_asks_for_ranks():
    """In A a b either a or b is the scalar: nothing settles which."""
    with pytest.raises(EinderivError, match=r"ambiguous \('a' could be a scalar or a vector; 'b' could be.*ranks=\{"):
        einderiv.compile("y = A a b", notation="matrix")
    A, x = BASE["A"], BASE["x"]
    compiled = einderiv.compile("y = A a b", notation="matrix", ranks={"a": 0})
    np.testing.assert_allclose(compiled(A=A, a=2.0, b=x), 2 * A @ x, rtol=1e-12)
    by_arrays = einderiv.evaluate("y = A a b", notation="matrix", A=A, a=x, b=2.0)  # the arrays settle it
    np.testing.assert_allclose(by_arrays, 2 * A @ x, rtol=1e-12)


@pytest.mark.parametrize(
    "text, ranks, message",
    [
        ("f = x A", {"x": 1, "A": 2}, "a column vector times a matrix"),
        ("f = tr(x)", {"x": 1}, "a trace needs a matrix"),
        ("f = logdet(x)", {"x": 1}, "logdet(...) of a column vector"),
        ("f = T x", {"T": 3}, "'T' has 3 indices"),
        ("f = norm2(A)", {"A": 2}, "norm2(...) of a matrix"),
        ("f = x ⊙ A", {"A": 2, "x": 1}, "needs operands of the same shape"),
        ("f = delta x", {}, "'delta' is reserved"),
        ("e = x\ne = y", {}, "'e' is defined twice"),
        ("f = e^T e\ne = x", {}, "'e' is used before its definition"),
        ("x = x + 1", {}, "'x' is defined in terms of itself"),
        ("x^T x; f = x", {}, "only the last statement may be a bare expression"),
        ("f = 2^3^2", {}, "a power of a power needs brackets"),  # was (2^3)^2 = 64; NumPy's 2**3**2 is 512
        ("f = s²²", {}, "a power of a power needs brackets"),  # was (s²)²; index notation reads s^22
        ("f = s⁻¹²", {"s": 0}, "a power of a power needs brackets"),
        ("f = x.^2.^3", {"x": 1}, "a power of a power needs brackets"),
        ("y = exp (x)", {}, "'exp' is a function: write exp(...)"),  # was a tensor named exp times x
        ("f = sigmoid (w^T x)", {}, "'sigmoid' is a function"),
        ("f = log det(S)", {}, "'log' is a function"),
        ("f = tr A", {}, "'tr' is a function"),
        ("f = tr(A^9)", {"A": 2}, "matrix powers go from A^-8 to A^8"),  # said 'powers apply to scalars only'
    ],
)
def test_matrix_input_errors(text, ranks, message):
    with pytest.raises(EinderivError, match=re.escape(message)):
        einderiv.compile(text, notation="matrix", ranks=ranks)


def test_bad_arguments_are_einderiv_errors():
    with pytest.raises(EinderivError, match="notation must be one of auto, index, matrix"):
        einderiv.compile("f = x^T x", notation="latex")
    with pytest.raises(EinderivError, match="is not a rank"):
        einderiv.compile("f = x^T x", ranks={"x": -1})
    with pytest.raises(EinderivError, match="ranks must map names"):
        einderiv.compile("f = x^T x", ranks=[("x", 1)])


def test_syntax_errors_carry_the_line_and_column():
    with pytest.raises(ParseError) as caught:
        einderiv.compile("f = x^T A x\ng = (x", notation="matrix")
    assert (caught.value.line, caught.value.column) == (2, 7)
    with pytest.raises(ParseError) as caught:
        einderiv.compile("f = x^T A x; g = x ) x", notation="matrix")
    assert (caught.value.line, caught.value.column) == (1, 20)


def test_a_program_in_matrix_notation_differentiates_through_its_statements():
    X, y, w = TALL["X"], TALL["y"], BASE["w"]
    d = einderiv.grad("e = y - X w; L = e^T e", "w")
    assert d.read_as == "e_i = y_i - X_ij w_j; L = e_i e_i"
    np.testing.assert_allclose(d(X=X, y=y, w=w), -2 * X.T @ (y - X @ w), rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate(d.reading, of="e", X=X, y=y, w=w), y - X @ w, rtol=1e-12)


# -- the CLI --------------------------------------------------------------------------------------------


def test_cli_diff_prints_the_reading_and_both_notations():
    result = run("diff", "f = x^T A x", "--wrt", "x")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "read as: f = x_i A_ij x_j"
    assert lines[1] == "df/dx_k = A_kj x_j + x_i A_ik"
    assert lines[-1] == "  matrix: (A + A^T) x"


def test_cli_other_formats_keep_stdout_clean():
    result = run("diff", "L = (y - X w)^T (y - X w)", "--wrt", "w", "--wrt", "w", "--format", "matrix")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "d2L/dw dw = 2 X^T X\n"
    assert result.stderr == "read as: L = (y_i - X_ij w_j) (y_i - X_ik w_k)\n"


def test_cli_eval_with_notation_and_the_index_error():
    result = run("eval", "y = A x", "--notation", "matrix", "--random", "A=3x2", "--random", "x=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ["read as: y_i = A_ij x_j", "y_i = A_ij x_j", "shape (3,)"]
    auto = run("eval", "y = A x", "--random", "A=3x2", "--random", "x=2")
    assert auto.returncode == 2 and auto.stdout == ""
    assert len(auto.stderr.splitlines()) == 1
    assert auto.stderr.startswith("error: input 'A' has 2 axes") and "--notation matrix" in auto.stderr


def test_cli_rank_settles_an_ambiguity():
    ambiguous = run("check", "y = A a b", "--wrt", "a", "--notation", "matrix")
    assert ambiguous.returncode == 2 and "--rank a=0 --rank b=1" in ambiguous.stderr
    assert len(ambiguous.stderr.splitlines()) == 1
    result = run("check", "y = A a b", "--wrt", "a", "--rank", "a=0", "--rank", "b=1")  # ranks: matrix notation
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "read as: y_i = A_ij a b_j"
    assert "finite differences" in lines[-1] and lines[-1].endswith(": ok")


def test_cli_check_with_a_matrix_claim_on_matrix_input():
    result = run("check", "f = tr(A X B)", "--wrt", "X", "--expect", "A^T B^T")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == "read as: f = sum_i(A_ij X_jk B_ki)"
    assert "matches" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["diff", "f = x^T A x", "--wrt", "x", "--rank", "x=one"], "error: --rank takes NAME=N"),
        (["diff", "f = x^T A x", "--wrt", "x", "--notation", "index"], "error: syntax error"),
        (["diff", "f = x A", "--wrt", "x", "--rank", "x=1", "--rank", "A=2"], "error: matrix notation"),
        (["diff", "f = x^T A x", "--wrt", "x", "--rank", "A=2", "--rank", "A=1"], "error: --rank 'A=1': 'A' is given"),
    ],
)
def test_cli_errors_print_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr


# -- random expressions against a NumPy interpreter of the matrix notation --------------------------

RANDOM_RANKS = {"x": 1, "w": 1, "A": 2, "B": 2, "lam": 0}
_N3 = 3


def _random_expression(rng, depth=0) -> str:
    if depth > 3 or rng.random() < 0.3:
        return str(rng.choice(["x", "w", "A", "B", "lam", "2", "0.5", "I", "-2", "-0.5"]))
    left, right = _random_expression(rng, depth + 1), _random_expression(rng, depth + 1)
    forms = [
        f"{left} {right}", f"{left}^T", f"{left}'", f"{left} * {right}", f"({left} + {right})",
        f"({left} - {right})", f"{left} .* {right}", f"{left} ⊙ {right}", f"{left} ./ (2 + {right} .* {right})",
        f"tr({left})", f"inv(I + {left} {left}^T)", f"logdet(I + {left} {left}^T)", f"det({left})",
        f"exp({left})", f"tanh({left})", f"sigmoid({left})", f"norm2({left})", f"sum({left})",
        f"-({left})", f"({left})^2", f"{left}.^3", f"diag({left})", f"{left} / (1 + lam^2)",
        f"{left} @ {right}", f"{left} ∘ {right}", f"{left} ({right})", f"({left})^3",
    ]  # fmt: skip
    return forms[int(rng.integers(len(forms)))]


def _interpret(node, arrays):
    """The value of a parsed matrix-notation node, by NumPy, every value a 2-d array: a scalar is
    1x1, a vector a column or a row (the notation's own semantics, independent of index notation)."""
    from einderiv.matrix import syntax as ms

    def go(n):
        if isinstance(n, ms.Number):
            return np.array([[float(n.text)]])
        if isinstance(n, ms.Name):
            return np.eye(_N3) if n.name == "I" else arrays[n.name]
        if isinstance(n, ms.Sum):
            total = 0
            for term, sign in zip(n.terms, n.signs):
                total = total + sign * go(term)
            return total
        if isinstance(n, ms.Neg):
            return -go(n.operand)
        if isinstance(n, ms.MatMul):  # NumPy's @: a vector on the left is a row
            a, b = go(n.left), go(n.right)
            return (a.T if a.shape[1] == 1 and a.shape[0] > 1 else a) @ b
        if isinstance(n, ms.Product):
            a, b = go(n.left), go(n.right)
            return a * b if 1 in (a.size, b.size) else a @ b
        if isinstance(n, ms.Hadamard):
            return go(n.left) * go(n.right)
        if isinstance(n, (ms.ElementwiseDivide, ms.Divide)):
            return go(n.numerator) / go(n.denominator)
        if isinstance(n, ms.Transpose):
            return go(n.operand).T
        if isinstance(n, ms.Inverse):
            return np.linalg.inv(go(n.operand)).T if n.transposed else np.linalg.inv(go(n.operand))
        if isinstance(n, ms.Power):
            base = go(n.base)
            if not n.elementwise and base.shape[0] > 1 and base.shape[1] > 1:  # A^2: the matrix power
                return np.linalg.inv(base) if n.exponent == "-1" else np.linalg.matrix_power(base, int(n.exponent))
            return base ** float(n.exponent)
        arg = go(n.arg)
        table = {
            "exp": np.exp, "tanh": np.tanh, "sigmoid": sigmoid, "inv": np.linalg.inv,
            "tr": lambda m: np.array([[np.trace(m)]]), "det": lambda m: np.array([[det(m)]]),
            "logdet": lambda m: np.array([[np.log(det(m))]]), "sum": lambda m: np.array([[m.sum()]]),
            "norm2": lambda m: np.array([[np.sqrt((m**2).sum())]]), "diag": lambda m: np.diag(m.ravel()),
        }  # fmt: skip
        return table[n.function](arg)

    return go(node)


def _random_cases(count: int, seed: int):
    """Random well-typed expressions (ill-typed ones are refused by einderiv, and skipped)."""
    from einderiv.matrix.syntax import parse_matrix

    rng = np.random.default_rng(seed)
    arrays = {
        "x": rng.normal(size=(_N3, 1)),
        "w": rng.normal(size=(_N3, 1)),
        "A": rng.normal(size=(_N3, _N3)) / 2,
        "B": rng.normal(size=(_N3, _N3)) / 2,
        "lam": np.array([[0.8]]),
    }
    cases = []
    while len(cases) < count:
        text = _random_expression(rng)
        try:
            compiled = einderiv.compile("f = " + text, notation="matrix", ranks=RANDOM_RANKS)
        except EinderivError:
            continue
        cases.append((text, compiled, parse_matrix(text), arrays))
    return cases


def _flat(value):
    return value.reshape(-1) if 1 in value.shape else value


@pytest.mark.parametrize("seed", range(4))
def test_random_expressions_keep_their_matrix_meaning(seed):
    """einderiv's reading of random expressions against a NumPy interpreter of the notation, the
    value and the gradient (by central differences of the interpreter) wrt the first input."""
    checked = 0
    for text, compiled, node, arrays in _random_cases(50, seed):
        given = {k: (v.reshape(-1) if RANDOM_RANKS[k] == 1 else v.reshape(()) if not RANDOM_RANKS[k] else v)
                 for k, v in arrays.items() if k in compiled.ranks}  # fmt: skip
        with np.errstate(all="ignore"):
            expected = _interpret(node, arrays)
        if not np.all(np.isfinite(expected)) or np.abs(expected).max() > 1e6:
            continue
        try:
            got = np.asarray(compiled(**given))
        except EvaluationError:  # a singular matrix, a logdet of a non-positive determinant
            continue
        out = expected.reshape(()) if expected.size == 1 else _flat(expected)
        np.testing.assert_allclose(got, out, rtol=1e-8, atol=1e-8, err_msg=f"{text} read as {compiled.read_as}")
        if not given:
            continue
        wrt = next(iter(given))
        try:
            d = np.asarray(einderiv.diff(compiled.reading, wrt)(**given))
        except EvaluationError:  # an axis sized by deltas alone (I.^3, a sum of a constant): no size to evaluate
            continue
        numeric = np.zeros(out.shape + given[wrt].shape)
        for k in range(arrays[wrt].size):  # the 2-d array's entries, in the order of the given array's
            shifted = []
            for h in (1e-6, -1e-6):
                moved = {name: v.copy() for name, v in arrays.items()}
                moved[wrt].flat[k] += h
                value = _interpret(node, moved)
                shifted.append(value.reshape(()) if value.size == 1 else _flat(value))
            numeric.reshape(out.shape + (-1,))[..., k] = (shifted[0] - shifted[1]) / 2e-6
        np.testing.assert_allclose(d, numeric, rtol=1e-4, atol=1e-5, err_msg=f"{text} read as {compiled.read_as}")
        checked += 1
    assert checked >= 15


_SOUP = ["x", "w", "A", "B", "lam", "I", " ", "^T", "'", "ᵀ", "⁻¹", "*", ".*", "./", ".^2", "^-1", "^2", "(", ")", "+",
         "-", "/", "tr(", "inv(", "det(", "logdet(", "exp(", "norm2(", "sum(", "diag(", "softmax(", "2", "0.5", "=",
         "f", ";", "\n", "⊙", "_i", "#", "delta", "foo("]  # fmt: skip


def test_fuzzed_text_gives_a_value_or_an_einderiv_error():
    rng = np.random.default_rng(3)
    compiled_count = 0
    for _ in range(400):
        text = "".join(str(t) for t in rng.choice(_SOUP, size=int(rng.integers(1, 16))))
        for notation in ("matrix", "auto"):
            try:
                compiled = einderiv.compile(text, notation=notation)
                compiled_count += 1
                if compiled.inputs:
                    einderiv.diff(compiled.reading, compiled.inputs[0])
            except EinderivError:
                pass
    assert compiled_count >= 10  # some of the soup is valid text


def test_cli_json_says_how_the_input_was_read():
    import json

    result = run("diff", "f = x^T A x", "--wrt", "x", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["notation"], data["read_as"]) == ("matrix", "f = x_i A_ij x_j")
    data = json.loads(run("diff", "f = x_i x_i", "--wrt", "x", "--format", "json").stdout)
    assert (data["notation"], data["read_as"]) == ("index", "f = x_i x_i")


def test_a_sum_does_not_broadcast_a_scalar_expression_onto_a_vector_name():
    # w^T x + c: c is read as a scalar (it used to be a vector, making f a vector)
    reading = einderiv.compile("f = sigmoid(w^T x + c)", notation="matrix").read_as
    assert reading == "f = sigmoid(w_i x_i + c)"
    w, x = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    expected = 1 / (1 + np.exp(-(w @ x + 0.3)))
    assert float(einderiv.evaluate("f = sigmoid(w^T x + c)", w=w, x=x, c=0.3)) == pytest.approx(expected)


def test_matrix_notation_lines_continue_after_an_operator_and_refuse_a_leading_sign():
    # 'f = x^T A x' then '  + b^T x' compiled to the second line alone (f2 = b_i x_i)
    rng = np.random.default_rng(5)
    A, x, b = rng.normal(size=(3, 3)), rng.normal(size=3), rng.normal(size=3)
    for source in ("f = x^T A x +\n  b^T x", "f = (x^T A x\n  + b^T x)"):
        got = einderiv.compile(source, notation="matrix")(A=A, x=x, b=b)
        np.testing.assert_allclose(got, x @ A @ x + b @ x, rtol=1e-13)
    with pytest.raises(einderiv.ParseError, match="starts with '\\+'") as caught:
        einderiv.compile("f = x^T A x\n  + b^T x", notation="matrix")
    assert (caught.value.line, caught.value.column) == (2, 3)


def test_brackets_settle_a_power_of_a_power():
    assert float(einderiv.evaluate("f = (2^3)^2", notation="matrix")) == 64.0
    assert float(einderiv.evaluate("f = (s²)²", notation="matrix", s=2.0)) == 16.0
    with pytest.raises(einderiv.ParseError) as caught:
        einderiv.compile("f = 2^3^2", notation="matrix")
    assert caught.value.column == 8  # under the second ^


def test_a_guessed_vector_that_makes_a_loss_a_vector_is_named_in_the_error():
    """``lam (w^T w)`` reads lam as a vector (a vector times a scalar type-checks); grad's error
    says what was guessed and how to declare a scalar."""
    with pytest.raises(einderiv.DifferentiationError, match=r"read it as 'f_i = lam_i w_j w_j'.*ranks=\{'lam': 0\}"):
        einderiv.grad("f = lam (w^T w)", "w")
    w = np.array([1.0, -2.0, 0.5])
    gradient = einderiv.grad("f = lam (w^T w)", "w", ranks={"lam": 0})
    np.testing.assert_allclose(gradient(lam=0.3, w=w), 2 * 0.3 * w, rtol=1e-12)


@pytest.mark.parametrize("source", ["f = x^T x lam / 2", "f = x^T x * lam / 2", "f = w^T w lam"])
def test_the_error_names_the_guessed_vector_that_carries_the_output_index(source):
    """``x^T x lam / 2`` reads lam as a vector (``f_i = x_j x_j lam_i / 2``): the hint names lam,
    the name written with the output's index, not x, whose rank 0 would not type-check."""
    wrt = source.split("^")[0][-1]
    with pytest.raises(einderiv.DifferentiationError, match=r"ranks=\{'lam': 0\} \(CLI: --rank lam=0\)"):
        einderiv.grad(source, wrt)
    x = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(
        einderiv.grad(source, wrt, ranks={"lam": 0})(lam=0.3, **{wrt: x}),
        x * (0.3 if "/ 2" in source else 0.6),
        rtol=1e-12,
    )


def test_a_centred_vector_is_a_vector():
    x = np.array([1.0, 2.0, 4.0])
    gradient = einderiv.grad("f = norm2(x - mean(x))^2", "x", notation="matrix")
    np.testing.assert_allclose(gradient(x=x), 2 * (x - x.mean()), rtol=1e-12)  # the centring's own term sums to 0


def test_a_syntax_error_on_a_continued_line_points_into_that_line():
    """A statement continued after '(' or an operator is joined into one line to parse; its errors
    pointed past the end of the first line (hypothesis found '(\\n0ᵀ' at line 1, column 5)."""
    for text, where in [("f = x^T A x +\n   b^T x $", (2, 10)), ("(\n0ᵀ", (2, 3)), ("f = 1 +\n2 +\n  3 ?", (3, 5))]:
        with pytest.raises(einderiv.ParseError) as caught:
            einderiv.parse(text, notation="matrix")
        assert (caught.value.line, caught.value.column) == where, text


@pytest.mark.parametrize(
    "text, message, column",
    [
        ("f = s @ x", "'@' takes vectors and matrices, not a scalar (as NumPy does)", 5),
        ("f = x @ 2", "'@' takes vectors and matrices, not a scalar", 9),
    ],
)
def test_matmul_refuses_a_scalar_as_numpy_does(text, message, column):
    with pytest.raises(EinderivError, match=re.escape(message)) as caught:
        einderiv.compile(text, notation="matrix", ranks={"s": 0, "x": 1})
    assert f"column {column}" in str(caught.value)


@pytest.mark.parametrize(
    "text, message, column",
    [
        ("f = ‖x‖^2", "write a Euclidean norm as norm2(x)", 5),
        ("f = |x|", "write abs(x) for an absolute value", 5),
        ("f = A \\ b", "there is no left division: write inv(A) b", 7),
        ("f = <x, y>", "write an inner product as x^T y", 5),
        ("f = ⟨x, y⟩", "write an inner product as x^T y", 5),
        ("f = x^T y ≥ 0", "there are no comparisons", 11),
        ("f = ∇g", "name the variable", 5),
        ("f = x^T · y", "in matrix notation write a matrix product by juxtaposition", 9),
    ],
)
def test_notations_from_other_places_get_an_error_that_says_what_to_write(text, message, column):
    with pytest.raises(ParseError, match=re.escape(message)) as caught:
        einderiv.compile(text)
    assert (caught.value.line, caught.value.column) == (1, column)


@pytest.mark.parametrize(
    "text, message",
    [
        ("f = X.T @ X", "write a transpose as X^T (or X'), not NumPy's X.T"),
        ("f = λ x^T x", "matrix notation spells Greek letters by name: write lambda"),
        ("f = √(x^T x)", "write a square root as sqrt(...)"),
        ("f = σ(w^T x)", "write the logistic function as sigmoid(...)"),
        ("f = x / w", "division only by a scalar, not by a column vector: write ./ to divide elementwise"),
        ("f = x^T A x / x^T x", "a denominator of more than one factor needs brackets, as in x / (x^T x)"),
        ("F = diag(A)", "it takes a vector (a matrix's diagonal is A_ii in index notation)"),
    ],
)
def test_matrix_notation_errors_say_what_to_write(text, message):
    with pytest.raises(EinderivError, match=re.escape(message)):
        einderiv.compile(text, notation="matrix", ranks={"x": 1, "w": 1, "A": 2, "X": 2})


def test_a_typeset_minus_sign_is_a_minus_in_matrix_notation():
    x, A = BASE["x"], BASE["A"]
    got = einderiv.evaluate("f = x^T A x − 2 x^T x", x=x, A=A)  # U+2212, as PDFs print it
    assert got == pytest.approx(x @ A @ x - 2 * x @ x, rel=1e-12)


def test_indices_in_text_read_as_matrix_notation_say_that_it_has_none():
    with pytest.raises(ParseError, match="matrix notation has no indices") as caught:
        einderiv.compile("f = x_i @ y", notation="matrix")
    assert (caught.value.line, caught.value.column) == (1, 6)


def test_matmul_and_the_hadamard_circle_mark_matrix_notation():
    assert detect("f = x @ A @ x") == "matrix" and detect("z = x ∘ w") == "matrix"
    x, A = BASE["x"], BASE["A"]
    assert einderiv.evaluate("f = x @ A @ x", x=x, A=A) == pytest.approx(x @ A @ x, rel=1e-12)
    # an operator at the end of a line continues the statement, as '*' does
    np.testing.assert_allclose(einderiv.evaluate("g = A @\n x", A=A, x=x), A @ x, rtol=1e-12)


@pytest.mark.parametrize(
    "text, arrays, message",
    [
        ("G = B + I", {"B": np.ones((3, 4))}, "read the text as G_ij = B_ij + delta_ij; I is square"),
        ("M = B; G = I", {"B": np.ones((3, 4))}, "read the text as M_ij = B_ij; G_ij = delta_ij; I is square"),
        ("f = x^T A x", {"x": np.ones(3), "A": np.ones((4, 4))}, "read the text as f = x_i A_ij x_j)"),
    ],
)
@pytest.mark.parametrize("backend", [None, "torch"])
def test_a_size_error_in_matrix_notation_shows_the_letters_it_names(text, arrays, message, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    compiled = einderiv.compile(text, notation="matrix")
    with pytest.raises(EvaluationError, match=re.escape(message)):
        compiled.call(arrays, backend=backend)
    with pytest.raises(EvaluationError, match=re.escape(message)):
        compiled.shape_for({k: v.shape for k, v in arrays.items()})


NEGATED_FACTORS = [  # (text, NumPy by hand); x, y, w vectors, A, B square, s, lam scalars
    ("f = x^T (-2 A) x", lambda x, A: -2 * x @ A @ x),
    ("f = x' * (-2*A) * x", lambda x, A: -2 * x @ A @ x),
    ("f = x @ (-2 * A) @ x", lambda x, A: -2 * x @ A @ x),
    ("f = x^T (-2 x)", lambda x: -2 * x @ x),
    ("f = x^T (-1/2 x)", lambda x: -0.5 * x @ x),
    ("f = lam (-2 lam)", lambda lam: -2 * lam * lam),
    ("F = A (-2 B)", lambda A, B: -2 * A @ B),
    ("z = x ∘ (-2 w)", lambda x, w: -2 * x * w),
    ("z = (-2 x) ∘ (-3 w)", lambda x, w: 6 * x * w),
    ("f = (-2 x)^T A (-2 x)", lambda x, A: 4 * x @ A @ x),
    ("F = diag(-2 x)", lambda x: np.diag(-2 * x)),
    ("f = tr(A (-2 B))", lambda A, B: -2 * np.trace(A @ B)),
    ("F = (-2 A)^3", lambda A: -8 * A @ A @ A),
    ("f = x^T (-A)^2 x", lambda x, A: x @ A @ A @ x),
    ("F = A (-A)^2", lambda A: A @ A @ A),
    ("F = ((-A)^3)^2", lambda A: np.linalg.matrix_power(A, 6)),
]


@pytest.mark.parametrize("text, value", NEGATED_FACTORS, ids=[c[0] for c in NEGATED_FACTORS])
def test_a_factor_starting_with_a_negative_number_is_a_factor_not_a_subtraction(text, value):
    """``x^T (-2 A) x`` was read as ``x_i - 2 A_ij x_j`` (a subtraction: found by a probe,
    2026-12-03); every negated factor after another keeps its brackets in the reading."""
    arrays = {name: BASE[name] for name in inspect.signature(value).parameters}
    got = einderiv.evaluate(text, notation="matrix", **arrays)
    np.testing.assert_allclose(got, value(**arrays), rtol=1e-10, atol=1e-12)


def test_the_gradient_through_a_negated_factor_is_the_closed_form():
    X, y, w = TALL["X"], TALL["y"], BASE["w"]
    g = einderiv.grad("L = (y - X w)^T (-1/2 (y - X w))", "w", notation="matrix")
    np.testing.assert_allclose(g(X=X, y=y, w=w), X.T @ (y - X @ w), rtol=1e-10)
    g = einderiv.grad("f = x^T (-2 A) x", "x", notation="matrix")
    np.testing.assert_allclose(g(x=BASE["x"], A=BASE["A"]), -2 * (BASE["A"] + BASE["A"].T) @ BASE["x"], rtol=1e-10)


NUMPY_BIAS = [
    ("y = x @ W + b", lambda x, X, W, b, c: x @ W + b),
    ("y = b + x @ W", lambda x, X, W, b, c: b + x @ W),
    ("y = -(x @ W) + b", lambda x, X, W, b, c: -(x @ W) + b),
    ("Y = X @ W + b", lambda x, X, W, b, c: X @ W + b),
    ("Y = b - X @ W", lambda x, X, W, b, c: b - X @ W),
    ("y = X @ W @ b + c", lambda x, X, W, b, c: X @ W @ b + c),
    ("y = tanh(x @ W + b)", lambda x, X, W, b, c: np.tanh(x @ W + b)),
    ("f = sum(tanh(X @ W + b))", lambda x, X, W, b, c: np.tanh(X @ W + b).sum()),
    ("Y = X @ W @ W^T + X", lambda x, X, W, b, c: X @ W @ W.T + X),
    ("y = X @ W @ b + c", lambda x, X, W, b, c: X @ W @ b + c),
    ("Y = tanh(X @ W) + b", lambda x, X, W, b, c: np.tanh(X @ W) + b),
    ("Y = 2 (X @ W) - b", lambda x, X, W, b, c: 2 * (X @ W) - b),
    ("Y = (X @ W) / 2 + b", lambda x, X, W, b, c: (X @ W) / 2 + b),
    ("y = W @ (x @ W + b)", lambda x, X, W, b, c: W @ (x @ W + b)),
    ("f = (x @ W + b) @ (x @ W + b)", lambda x, X, W, b, c: (x @ W + b) @ (x @ W + b)),
    # a sum that '@' is applied to (a hunt's find: "cannot add a column vector and a matrix")
    ("Y = X @ (W + b)", lambda x, X, W, b, c: X @ (W + b)),
    ("y = x @ (W - b)", lambda x, X, W, b, c: x @ (W - b)),
    ("y = (W + b) @ b", lambda x, X, W, b, c: (W + b) @ b),
    ("f = sum(tanh(X @ (W + b)))", lambda x, X, W, b, c: np.tanh(X @ (W + b)).sum()),
]


@pytest.mark.parametrize("text, numpy", NUMPY_BIAS, ids=[t for t, _ in NUMPY_BIAS])
def test_a_vector_beside_a_matmul_is_a_numpy_1d_array(text, numpy):
    """``x @ W + b`` is NumPy's: x @ W is 1-D and so is b (it read x and b as matrices, and 1-D
    arrays then failed with a rank error); ``X @ W + b`` broadcasts b along X @ W's rows, in
    any expression that writes '@'; a vector on the right of '@' is a column, as in NumPy."""
    rng = np.random.default_rng(7)
    x, X, W = rng.normal(size=3), rng.normal(size=(5, 3)), rng.normal(size=(3, 2))
    b, c = rng.normal(size=2), rng.normal(size=5)
    arrays = {"x": x, "X": X, "W": W, "b": b, "c": c}
    compiled = einderiv.compile(text)
    assert compiled.reading.notation == "matrix"
    used = {k: v for k, v in arrays.items() if k in compiled.ranks}
    assert compiled.ranks == {k: v.ndim for k, v in used.items()}
    np.testing.assert_allclose(compiled(**used), numpy(x, X, W, b, c), rtol=1e-13)
    if text.startswith("Y") and text.endswith("+ b"):  # the gradient by the bias sums over the rows
        gradient = einderiv.diff(f"f = sum(({text.split(' = ', 1)[1]}) .^ 2)", "b")
        np.testing.assert_allclose(gradient(**used), 2 * numpy(x, X, W, b, c).sum(axis=0), rtol=1e-12)


def test_a_vector_beside_a_product_without_matmul_is_still_a_column():
    """Matrix notation as mathematicians write it keeps its rule: a row plus a column is an error
    or another reading, never NumPy broadcasting, unless '@' says NumPy."""
    assert einderiv.compile("y = W^T x + b").reading.text == "y_i = W_ji x_j + b_i"
    with pytest.raises(EinderivError, match="cannot add") as info:
        einderiv.compile("f = x^T W + b", ranks={"x": 1, "W": 2, "b": 1})
    # the message says what to write instead, in both conventions
    assert "write b^T to add it as a row" in str(info.value) and "x @ W + b" in str(info.value)
    with pytest.raises(EinderivError, match="write b\\^T to add it as a row") as info:
        einderiv.compile("f = b + x^T W", ranks={"x": 1, "W": 2, "b": 1})  # either order
    with pytest.raises(EinderivError, match="write b\\^T to add it as a row") as info:
        einderiv.compile("f = x^T + b", ranks={"x": 1, "b": 1})
    assert "@" not in str(info.value)  # no product to write with '@'
    assert einderiv.compile("f = x^T W + b^T", ranks={"x": 1, "W": 2, "b": 1}).reading.text == "f_i = x_j W_ji + b_i"


def test_a_transpose_glued_to_the_next_name_is_matrix_notation():
    x, A = rng_glued.normal(size=3), rng_glued.normal(size=(3, 3))
    assert float(einderiv.evaluate("f = x^Tx", x=x)) == pytest.approx(x @ x, rel=1e-14)
    assert float(einderiv.evaluate("f = x^T(A x)", x=x, A=A)) == pytest.approx(x @ A @ x, rel=1e-14)
    with pytest.raises(einderiv.ParseError, match=r"\^T followed by a space or a bracket: \^T x, as in x\^T x"):
        einderiv.compile("f = x^Tx", notation="index")


rng_glued = np.random.default_rng(11)


@pytest.mark.parametrize(
    "source, reading",
    [
        # a scalar beside a sum of a vector is a scalar: these were read as f_i with c_i, lam_i, a_i
        ("f = sum(q) + c", "f = sum_i(q_i) + c"),
        ("f = sigmoid(sum(q) + c)", "f = sigmoid(sum_i(q_i) + c)"),
        ("f = mean((y - X w) .^ 2) + lam sum(abs(w))", "f = mean_i((y_i - X_ij w_j)^2) + lam sum_k(abs(w_k))"),
        ("f = sum(x) - lam sum(log(x))", "f = sum_i(x_i) - lam sum_j(log(x_j))"),
        ("f = norm2(x) + a norm2(y)", "f = sqrt(x_i x_i) + a sqrt(y_j y_j)"),
        ("f = sum(x) + c tr(B)", "f = sum_i(x_i) + c sum_j(B_jj)"),
        # a reduction of what the sum's vector holds still centres it
        ("y = x - mean(x)", "y_i = x_i - mean_j(x_j)"),
        ("y = X w - mean(X w)", "y_i = X_ij w_j - mean_k(X_kl w_l)"),
        ("y = x + sum(x)", "y_i = x_i + sum_j(x_j)"),
        ("y = log(x) - logsumexp(log(x))", "y_i = log(x_i) - logsumexp_j(log(x_j))"),
        # and so does any other reduction beside it (a review's find: these read y = x - x - mean_i(z_i))
        ("y = x - mean(x) - mean(z)", "y_i = x_i - mean_j(x_j) - mean_k(z_k)"),
        ("y = x - sum(x) - sum(z)", "y_i = x_i - sum_j(x_j) - sum_k(z_k)"),
        ("y = exp(x) / sum(exp(x)) + mean(z)", "y_i = exp(x_i) / (sum_j(exp(x_j))) + mean_k(z_k)"),
        ("f = sum(x - mean(x) - mean(z))", "f = sum_i(x_i - mean_j(x_j) - mean_k(z_k))"),
    ],
)
def test_a_name_beside_a_reduction_of_other_names_is_a_scalar(source, reading):
    assert einderiv.compile(source, notation="matrix").read_as == reading


def test_a_lasso_written_in_matrix_notation_has_a_gradient():
    # grad refused it: lam was read as a vector, so f was one too
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
    gradient = einderiv.grad("f = mean((y - X w) .^ 2) + lam sum(w .^ 2)", "w", notation="matrix")
    expected = -2 / 5 * X.T @ (y - X @ w) + 2 * 0.3 * w
    np.testing.assert_allclose(gradient(X=X, y=y, w=w, lam=0.3), expected, rtol=1e-13)


@pytest.mark.parametrize(
    "text",
    [
        "f = x A x",
        "y = exp(A x)",
        "L = (y - X w)^2",
        # a hunt's finds: an upper-case name under a power, a call or a division bar said nothing
        # (y = A^-1 b is b / A, where y = A⁻¹ b is matrix notation's inv(A) b)
        "y = A^-1 b",
        "y = A^(-1) b",
        "f = A^2 x",
        "F = A B^-1",
        "f = exp(A) x",
        "c = a × b",
        # and a sum beside one: A^-1 (b + c) said nothing (a hunt's find, 2026-12-07)
        "y = A^-1 (b + c)",
        "y = (A + B) x",
    ],
)
def test_an_index_free_product_with_an_upper_case_name_warns_that_all_are_scalars(text):
    """A helper's hunt: ``einderiv diff "f = x A x" --wrt x`` printed ``df/dx = 2 A x`` (index
    notation, every name a scalar) with nothing saying so, where (A + A^T) x is the matrix
    derivative.  It now warns, on the command line too; the derivative is the scalars' still."""
    with pytest.warns(einderiv.EinderivWarning, match="every name is a scalar"):
        einderiv.compile(text)
    wrt = next(n for n in ("x", "w", "b", "a", "B") if re.search(rf"\b{n}\b", text.split("=")[1]))
    result = run("diff", text, "--wrt", wrt)
    assert result.returncode == 0 and "warning: no index is written" in result.stderr


@pytest.mark.parametrize("text", ["f = x·y", "f = x ⋅ y", "f = a + u·v"])
def test_a_dot_between_names_without_indices_warns_that_it_multiplies_scalars(text):
    """``f = x·y`` is the dot product in vector notation; without an index it is index notation's
    product of two scalars, and said nothing (with vectors, evaluation then failed)."""
    dot = "⋅" if "⋅" in text else "·"  # the glyph written is named
    with pytest.warns(
        einderiv.EinderivWarning, match=f"'{dot}' is a product of scalars here: a dot product is x\\^T y"
    ):
        einderiv.compile(text)


@pytest.mark.parametrize(
    "text, keywords",
    [
        ("f = x_i A_ij x_j", {}),
        ("f = x_i·y_i", {}),  # indices written
        ("E = m·c^2", {}),  # a dot before a power: no product of two names
        ("L = 0.5 N s^2 + log(s)", {}),  # no product of two names
        ("f = b^2 c + exp(s) t", {}),  # no upper-case name
        ("f = s (a + b) + (c + d) (e - g)", {}),  # sums, no upper-case name
        ("mu = S / N + exp(-E / T)", {}),  # divided by scalars (a review's find: these warned)
        ("f = x A x", {"notation": "index"}),  # asked for
        ("f = x A x", {"ranks": {"A": 0, "x": 0}}),  # declared
    ],
)
def test_no_all_scalars_warning_where_the_reading_is_asked_for_or_has_no_such_product(text, keywords):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        einderiv.compile(text, **keywords)


def test_no_all_scalars_warning_where_arrays_say_the_ranks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert einderiv.evaluate("f = x A x", x=np.float64(2.0), A=np.float64(3.0)) == 12.0


@pytest.mark.parametrize(
    "source, ranks, advice",
    [
        ("f = x^T A x + B", None, "read with B a scalar, it is a scalar: declare ranks={'B': 0}"),
        ("f = x^T x", {"x": 2}, "read with x a vector, it is a scalar: declare ranks={'x': 1}"),
        ("f = x^T A B", None, "no one name declared a scalar or a vector makes it a scalar"),
    ],
)
def test_the_ranks_the_error_advises_make_the_output_a_scalar(source, ranks, advice):
    """A hunt's find: ``x^T A x + B`` (x read as a matrix so that B could be one) advised
    ranks={'x': 0}, which does not make f a scalar; the advice is now a declaration tried."""
    with pytest.raises(einderiv.DifferentiationError, match=re.escape(advice)):
        einderiv.grad(source, "x", ranks=ranks)
    if "declare ranks=" in advice:
        name, rank = advice.split("ranks={'")[1][0], int(advice.rsplit(": ", 1)[1][0])
        x, A = np.array([1.0, -2.0, 0.5]), np.diag([1.0, 2.0, 3.0])
        arrays = {"x": x, "A": A, "B": np.array(4.0)}
        gradient = einderiv.grad(source, "x", ranks={name: rank})
        np.testing.assert_allclose(
            gradient(**{n: arrays[n] for n in gradient.ranks}), 2 * A @ x if "A" in source else 2 * x
        )
