"""Inputs as people type them, each against what Einstein notation and NumPy mean by it.

Every row is evaluated and compared with a NumPy expression written by hand; where the output
is a scalar and the input differentiable, the gradient is checked against central finite
differences of that NumPy expression (an independent reference: einderiv is not involved).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import einderiv
from tests.helpers import assert_printed_reads_back, central_difference, run_cli

rng = np.random.default_rng(12)
N, D, K = 5, 3, 4
ARRAYS = {
    "x": rng.normal(size=D),
    "y": rng.normal(size=D),
    "z": rng.normal(size=D),
    "a": rng.uniform(0.5, 2.0, size=N),
    "b": rng.normal(size=D),
    "mu": rng.normal(size=D),
    "w": rng.normal(size=D),
    "yn": rng.normal(size=N),
    "t": rng.normal(size=N),
    "A": rng.normal(size=(D, D)),
    "B": rng.normal(size=(D, D)),
    "X": rng.normal(size=(N, D)),
    "W": rng.normal(size=(D, K)),
    "T": rng.normal(size=(K, D)),
    "R": rng.normal(size=(N, D)),
    "Z": rng.normal(size=(N, K)),
    "v": rng.normal(size=K),
    "onehot": np.eye(K)[1],
    "lam": np.float64(0.3),
    "s": np.float64(0.7),
}


def sigmoid(u):
    return 1 / (1 + np.exp(-u))


def softmax(u, axis=-1):
    e = np.exp(u - u.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logsumexp(u, axis=-1):
    m = u.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(u - m).sum(axis=axis))


# (source, inputs renamed from ARRAYS as {name in source: name in ARRAYS}, NumPy reference)
CASES = [
    # -- the examples of the issue: these used to mean something else ------------------------
    ("f = x_i^2", {"x": "x"}, lambda x: (x**2).sum()),
    ("L = (y_n - X_nd w_d)^2", {"y": "yn", "X": "X", "w": "w"}, lambda y, X, w: ((y - X @ w) ** 2).sum()),
    ("f = exp(x_i)", {"x": "x"}, lambda x: np.exp(x).sum()),
    ("f = log(a_n)", {"a": "a"}, lambda a: np.log(a).sum()),
    (
        "L = (y_n - X_ni w_i)(y_n - X_ni w_i)",
        {"y": "yn", "X": "X", "w": "w"},
        lambda y, X, w: ((y - X @ w) ** 2).sum(),
    ),
    ("f = (x_i + 1)(y_i + 1)", {"x": "x", "y": "y"}, lambda x, y: ((x + 1) * (y + 1)).sum()),
    ("p_k = softmax_k(T_kj x_j)", {"T": "T", "x": "x"}, lambda T, x: softmax(T @ x)),
    ("l_n = logsumexp_k(X_nd W_dk)", {"X": "X", "W": "W"}, lambda X, W: logsumexp(X @ W, axis=1)),
    ("f = logsumexp_k(X_nd W_dk)", {"X": "X", "W": "W"}, lambda X, W: logsumexp(X @ W, axis=1).sum()),
    # a cross-entropy written with the softmax's argument inline: positive for a one-hot y
    (
        "L = -y_k log(softmax_k(T_kj x_j))",
        {"y": "onehot", "T": "T", "x": "x"},
        lambda y, T, x: -(y * np.log(softmax(T @ x))).sum(),
    ),
    ("f = logsumexp_k(z_k)", {"z": "x"}, lambda z: logsumexp(z)),
    ("f = log(sum_k(exp(z_k)))", {"z": "x"}, lambda z: logsumexp(z)),
    ("f = x_i A_{ij} x_j", {"x": "x", "A": "A"}, lambda x, A: x @ A @ x),
    ("f = (x_i x_i)(y_i y_i)", {"x": "x", "y": "y"}, lambda x, y: (x @ x) * (y @ y)),
    ("f = exp(x_i x_i)", {"x": "x"}, lambda x: np.exp(x @ x)),
    ("f = x_i / x_j", {"x": "a"}, lambda x: (x[:, None] / x[None, :]).sum()),
    ("f = x_i / sum_j(x_j)", {"x": "a"}, lambda x: (x / x.sum()).sum()),
    ("f = (x_n - mu_d)(x_n - mu_d)", {"x": "t", "mu": "mu"}, lambda x, mu: ((x[:, None] - mu[None, :]) ** 2).sum()),
    ("f = sum_i(x_i + 1)", {"x": "x"}, lambda x: (x + 1).sum()),
    ("f = x_i A_ij x_j + b_i x_i", {"x": "x", "A": "A", "b": "b"}, lambda x, A, b: x @ A @ x + b @ x),
    (
        "L = (y_n - X_nd w_d)^2 + lam w_d w_d",
        {"y": "yn", "X": "X", "w": "w", "lam": "lam"},
        lambda y, X, w, lam: ((y - X @ w) ** 2).sum() + lam * w @ w,
    ),
    (
        "L = sum_n(log(sigmoid(y_n X_nd w_d)))",
        {"y": "yn", "X": "X", "w": "w"},
        lambda y, X, w: np.log(sigmoid(y * (X @ w))).sum(),
    ),
    # -- everyday forms ----------------------------------------------------------------------
    ("f = a_i x_i", {"a": "b", "x": "x"}, lambda a, x: a @ x),
    ("y_i = A_ij x_j", {"A": "A", "x": "x"}, lambda A, x: A @ x),
    ("C_ik = A_ij B_jk", {"A": "A", "B": "B"}, lambda A, B: A @ B),
    ("t = A_ii", {"A": "A"}, lambda A: np.trace(A)),
    ("d_i = A_ii", {"A": "A"}, lambda A: np.diag(A)),
    ("c_i = a_i b_i", {"a": "x", "b": "y"}, lambda a, b: a * b),
    ("C_ij = a_i b_j", {"a": "x", "b": "y"}, lambda a, b: np.outer(a, b)),
    ("C_ij = a_i + b_j", {"a": "x", "b": "y"}, lambda a, b: a[:, None] + b[None, :]),
    ("f = A_ij A_ij", {"A": "A"}, lambda A: (A * A).sum()),
    ("f = A_ij A_ji", {"A": "A"}, lambda A: np.trace(A @ A)),
    ("f = sqrt(x_i x_i)", {"x": "x"}, lambda x: np.linalg.norm(x)),
    ("f = sqrt(x_i^2)", {"x": "x"}, lambda x: np.abs(x).sum()),  # i is free inside sqrt: sum_i |x_i|
    ("f = sqrt(sum_i(x_i^2))", {"x": "x"}, lambda x: np.linalg.norm(x)),
    ("p_k = exp(z_k) / sum_j(exp(z_j))", {"z": "v"}, lambda z: softmax(z)),
    ("s_n = sigmoid(X_nd w_d)", {"X": "X", "w": "w"}, lambda X, w: sigmoid(X @ w)),
    (
        "L = -y_n log(sigmoid(X_nd w_d)) - (1 - y_n) log(1 - sigmoid(X_nd w_d))",
        {"y": "yn", "X": "X", "w": "w"},
        lambda y, X, w: -(y * np.log(sigmoid(X @ w)) + (1 - y) * np.log(1 - sigmoid(X @ w))).sum(),
    ),
    ("H_nk = tanh(X_nd W_dk + v_k)", {"X": "X", "W": "W", "v": "v"}, lambda X, W, v: np.tanh(X @ W + v)),
    ("f = v_k tanh(W_dk x_d)", {"v": "v", "W": "W", "x": "x"}, lambda v, W, x: v @ np.tanh(W.T @ x)),
    ("f = relu(x_i)", {"x": "x"}, lambda x: np.maximum(x, 0).sum()),
    ("K_pq = R_mp R_mq", {"R": "R"}, lambda R: R.T @ R),
    ("f = (x_i - mu_i)(x_i - mu_i)", {"x": "x", "mu": "mu"}, lambda x, mu: ((x - mu) ** 2).sum()),
    ("f = x_i x_i x_j x_j", {"x": "x"}, lambda x: (x @ x) ** 2),
    # scaling a sum standing alone by a scalar scales each of its terms: f / 2 is half of f
    ("f = 2 (x_i + 1)", {"x": "x"}, lambda x: 2 * (x.sum() + 1)),
    ("f = (x_i + 1) / 2", {"x": "x"}, lambda x: (x.sum() + 1) / 2),
    ("f = -1 (x_i + 1)", {"x": "x"}, lambda x: -x.sum() - 1),
    ("f = 2 (3 (x_i + 1) - y_j) / 6", {"x": "x", "y": "y"}, lambda x, y: (3 * (x.sum() + 1) - y.sum()) / 3),
    ("f = (x_i + 1) / sum_n(a_n)", {"x": "x", "a": "a"}, lambda x, a: (x.sum() + 1) / a.sum()),
    ("f = (x_j x_j) (x_i + 1)", {"x": "x"}, lambda x: (x @ x) * (x.sum() + 1)),
    ("f = 2 (y_i + (x_i + 1))", {"x": "x", "y": "y"}, lambda x, y: 2 * (y.sum() + x.sum() + 1)),
    ("f = (y_i - (x_i + 1)) / 2", {"x": "x", "y": "y"}, lambda x, y: (y.sum() - x.sum() - 1) / 2),
    ("f = 2 (y_i + 3 (x_i + 1))", {"x": "x", "y": "y"}, lambda x, y: 2 * (y.sum() + 3 * x.sum() + 3)),
    (
        "L = ((y_n - X_nd w_d)^2 + lam w_d w_d) / 2",
        {"y": "yn", "X": "X", "w": "w", "lam": "lam"},
        lambda y, X, w, lam: ((y - X @ w) ** 2).sum() / 2 + lam * w @ w / 2,
    ),
    (
        "L = 0.5 ((y_n - X_nd w_d)^2 + lam w_d w_d)",
        {"y": "yn", "X": "X", "w": "w", "lam": "lam"},
        lambda y, X, w, lam: ((y - X @ w) ** 2).sum() / 2 + lam * w @ w / 2,
    ),
    (
        "L = -(y_n log(sigmoid(X_nd w_d)) + (1 - y_n) log(1 - sigmoid(X_nd w_d))) / N + lam w_d w_d",
        {"y": "yn", "X": "X", "w": "w", "N": "s", "lam": "lam"},
        lambda y, X, w, N, lam: (
            -(y * np.log(sigmoid(X @ w)) + (1 - y) * np.log(1 - sigmoid(X @ w))).sum() / N + lam * w @ w
        ),
    ),
    # ... while a sum that is an operand of anything with an index, a power or a reduction broadcasts
    ("f = 2 (x_i + 1)^2", {"x": "x"}, lambda x: 2 * ((x + 1) ** 2).sum()),
    ("f = b_i (x_i + 1)", {"b": "b", "x": "x"}, lambda b, x: (b * (x + 1)).sum()),
    ("f = 2 sum_i(x_i + 1)", {"x": "x"}, lambda x: 2 * (x + 1).sum()),
    ("f = b_j (x_i + 1)", {"b": "b", "x": "x"}, lambda b, x: b.sum() * (x + 1).sum()),
    ("f = (x_i + 1)", {"x": "x"}, lambda x: x.sum() + 1),  # parentheses around the right-hand side change nothing
    ("f = -(x_i + 1)", {"x": "x"}, lambda x: -x.sum() - 1),  # a negated sum standing alone: terms one by one
    ("f = x_i / 2", {"x": "x"}, lambda x: x.sum() / 2),
    ("f = (A_ij x_j)(A_ik x_k)", {"A": "A", "x": "x"}, lambda A, x: (A @ x) @ (A @ x)),
    ("f = (A_ij x_j)^2", {"A": "A", "x": "x"}, lambda A, x: ((A @ x) ** 2).sum()),
    ("f = exp(-0.5 (x_i - mu_i)^2)", {"x": "x", "mu": "mu"}, lambda x, mu: np.exp(-0.5 * (x - mu) ** 2).sum()),
    (
        "f = exp(-0.5 (x_i - mu_i)(x_i - mu_i))",
        {"x": "x", "mu": "mu"},
        lambda x, mu: np.exp(-0.5 * (x - mu) @ (x - mu)),
    ),
    ("f = log(1 + exp(x_i))", {"x": "x"}, lambda x: np.log1p(np.exp(x)).sum()),
    ("f = s x_i x_i", {"s": "s", "x": "x"}, lambda s, x: s * x @ x),
    ("f = x_i (A_ij + A_ji) x_j / 2", {"x": "x", "A": "A"}, lambda x, A: x @ (A + A.T) @ x / 2),
    ("f_n = sum_k(Z_nk)", {"Z": "Z"}, lambda Z: Z.sum(axis=1)),
    ("f = Z_nk", {"Z": "Z"}, lambda Z: Z.sum()),
    ("P_nk = softmax_k(Z_nk)", {"Z": "Z"}, lambda Z: softmax(Z, axis=1)),
    (
        "f = -Z_nk onehot_k + logsumexp_k(Z_nk)",
        {"Z": "Z", "onehot": "onehot"},
        lambda Z, y: -(Z @ y).sum() + logsumexp(Z, 1).sum(),
    ),
    ("f = θ_i θ_i", {"theta": "x"}, lambda x: x @ x),
    ("f = x_i²", {"x": "x"}, lambda x: (x**2).sum()),  # a superscript after a subscript is a power
    ("r_i = x_i³ − 2 x_i", {"x": "x"}, lambda x: x**3 - 2 * x),
    ("f = x_i · x_i − 2 x_i", {"x": "x"}, lambda x: x @ x - 2 * x.sum()),
    ("y_i = arctan(x_i) + cosh(x_i)", {"x": "x"}, lambda x: np.arctan(x) + np.cosh(x)),
    ("f = (x_i x_i) / (y_j y_j)", {"x": "x", "y": "y"}, lambda x, y: (x @ x) / (y @ y)),
    ("E_nk = exp(Z_nk) / sum_j(exp(Z_nj))", {"Z": "Z"}, lambda Z: softmax(Z, axis=1)),
    ("f = x_i A_ij (B_jk x_k)", {"x": "x", "A": "A", "B": "B"}, lambda x, A, B: x @ A @ B @ x),
    # mean_i: the sum over i divided by i's size
    ("L = mean_n((y_n - X_nd w_d)^2)", {"y": "yn", "X": "X", "w": "w"}, lambda y, X, w: ((y - X @ w) ** 2).mean()),
    ("m_d = mean_n(X_nd)", {"X": "X"}, lambda X: X.mean(axis=0)),
    ("f = mean_{nd}(X_nd)", {"X": "X"}, lambda X: X.mean()),
    ("f = mean_n(X_nd w_d) + mean_d(w_d)", {"X": "X", "w": "w"}, lambda X, w: (X @ w).mean() + w.mean()),
    ("f = mean_n(a_n) mean_m(a_m)", {"a": "a"}, lambda a: a.mean() ** 2),
    ("f = mean_i(x_i + 1)", {"x": "x"}, lambda x: (x + 1).mean()),  # the mean of a constant is the constant
    ("f = mean_i(x_i) + mean_i(s)", {"x": "x", "s": "s"}, lambda x, s: x.mean() + s),
    (
        "L = mean_n((y_n - X_nd w_d - s)^2)",
        {"s": "s", "y": "yn", "X": "X", "w": "w"},
        lambda s, y, X, w: ((y - X @ w - s) ** 2).mean(),
    ),
]


def _arrays(names: dict) -> dict:
    return {inside: np.asarray(ARRAYS[outside], dtype=np.float64) for inside, outside in names.items()}


@pytest.mark.parametrize("source, names, expected", CASES, ids=[c[0] for c in CASES])
def test_value_is_what_numpy_means(source, names, expected):
    arrays = _arrays(names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)  # none of these is a slip
        value = einderiv.evaluate(source, arrays)
    np.testing.assert_allclose(value, expected(*arrays.values()), rtol=1e-10, atol=1e-12)


def _differentiable(case) -> bool:
    source, names, _ = case
    return "relu" not in source and "onehot" not in names


@pytest.mark.parametrize(
    "source, names, expected", [c for c in CASES if _differentiable(c)], ids=[c[0] for c in CASES if _differentiable(c)]
)
def test_first_derivative_matches_finite_differences_of_the_numpy_form(source, names, expected):
    arrays = _arrays(names)
    wrt = next(iter(names))  # the first input, a scalar too (the bias of a mean squared error)
    derivative = einderiv.jacobian(source, wrt)
    analytic = derivative(arrays)

    def reference(**kw):
        return expected(*(kw[n] for n in names))

    numeric = central_difference(reference, arrays, wrt)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(numeric).max())))


def test_the_least_squares_hessian_is_two_xtx_in_every_spelling():
    X, y, w = ARRAYS["X"], ARRAYS["yn"], ARRAYS["w"]
    for source in ("L = (y_n - X_nd w_d)^2", "L = (y_n - X_ni w_i)(y_n - X_ni w_i)", "L = sum_n((y_n - X_nd w_d)^2)"):
        h = einderiv.hessian(source, "w")(X=X, y=y, w=w)
        np.testing.assert_allclose(h, 2 * X.T @ X, rtol=1e-12)


def test_the_inline_softmax_cross_entropy_is_positive_and_its_gradient_is_softmax_minus_y():
    T, x, y = ARRAYS["T"], ARRAYS["x"], ARRAYS["onehot"]
    source = "L = -y_k log(softmax_k(T_kj x_j))"
    assert einderiv.evaluate(source, T=T, x=x, y=y) > 0
    g = einderiv.grad(source, "T")(T=T, x=x, y=y)
    np.testing.assert_allclose(g, np.outer(softmax(T @ x) - y, x), rtol=1e-10, atol=1e-12)


# -- the slip warning (rule 6) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, letter, group",
    [
        ("f = exp(x_i y_i) z_i", "i", "exp(x_i y_i)"),
        ("f = softmax_k(T_kj x_j) y_j", "j", "softmax_k(T_kj x_j)"),
        ("f = (a_i b_i) c_i", "i", "a_i b_i"),
        ("f = exp(M_ii + a_i)", "i", "M_ii"),  # a term of a sum that is an operand, and its siblings
        ("f = exp(sum_j(M_ii + A_ij))", "i", "M_ii"),
        ("f = tanh(x_i x_i + b_i) c", "i", "x_i x_i"),
    ],
)
def test_a_letter_summed_inside_a_group_and_free_outside_warns(source, letter, group):
    with pytest.warns(einderiv.EinderivWarning) as caught:
        einderiv.compile(source)
    message = str(caught[0].message)
    assert f"index {letter!r}" in message and repr(group) in message
    assert f"sum_{letter}(" in message  # the elementwise spelling is given


def test_the_two_spellings_the_warning_gives_mean_what_they_say():
    x, y, z = ARRAYS["x"], ARRAYS["y"], ARRAYS["z"]
    with pytest.warns(einderiv.EinderivWarning):
        as_written = einderiv.evaluate("f = exp(x_i y_i) z_i", x=x, y=y, z=z)
    np.testing.assert_allclose(as_written, np.exp(x @ y) * z.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        elementwise = einderiv.evaluate("f = sum_i(exp(x_i y_i) z_i)", x=x, y=y, z=z)
        separate = einderiv.evaluate("f = exp(x_j y_j) z_i", x=x, y=y, z=z)
    np.testing.assert_allclose(elementwise, (np.exp(x * y) * z).sum())
    np.testing.assert_allclose(separate, as_written)


def test_the_spellings_the_warning_gives_for_a_sum_mean_what_they_say():
    """``exp(M_ii + a_i)`` is exp(tr(M) + a_i) summed over i (rule 3: M_ii is contracted in the
    smallest product that holds i twice); ``sum_i(...)`` makes i elementwise, M's diagonal."""
    rng = np.random.default_rng(4)
    M, a = rng.normal(size=(3, 3)), rng.normal(size=3)
    with pytest.warns(einderiv.EinderivWarning, match="sum's other terms"):
        as_written = einderiv.evaluate("f = exp(M_ii + a_i)", M=M, a=a)
    np.testing.assert_allclose(as_written, np.exp(np.trace(M) + a).sum(), rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        elementwise = einderiv.evaluate("f = sum_i(exp(M_ii + a_i))", M=M, a=a)
        separate = einderiv.evaluate("f = exp(M_jj + a_i)", M=M, a=a)
        einderiv.compile("f = M_ii + a_i")  # a sum that stands alone: each term is summed on its own
        einderiv.compile("g_i = exp(M_ii + a_i)")  # i on the left: elementwise throughout
    np.testing.assert_allclose(elementwise, np.exp(np.diag(M) + a).sum(), rtol=1e-12)
    np.testing.assert_allclose(separate, as_written, rtol=1e-12)


def test_no_warning_for_groups_that_keep_to_themselves():
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        einderiv.compile("f = (x_i x_i)(y_i y_i)")
        einderiv.compile("L = (y_n - X_ni w_i)(y_n - X_ni w_i)")
        einderiv.compile("c_i = exp(x_i y_i) z_i")  # i is on the left-hand side: elementwise throughout
        einderiv.grad("L = (y_n - X_nd w_d)^2", "w")


def test_the_cli_prints_the_warning_as_one_line_and_keeps_the_exit_status():
    done = subprocess.run(
        [sys.executable, "-m", "einderiv", "eval", "f = exp(x_i y_i) z_i", "--random", "x=3", "--random", "y=3"]
        + ["--random", "z=3"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "Traceback" not in done.stderr


# -- printing reads back with the same meaning ---------------------------------------------------------


@pytest.mark.parametrize("source, names, expected", CASES, ids=[c[0] for c in CASES])
def test_printed_statement_and_derivative_read_back(source, names, expected):
    arrays = _arrays(names)
    compiled = einderiv.compile(source)
    again = einderiv.compile(str(compiled))
    np.testing.assert_allclose(again(arrays), expected(*arrays.values()), rtol=1e-10, atol=1e-12)
    if not _differentiable((source, names, expected)):
        return
    wrt = next(n for n in names if arrays[n].ndim > 0)
    derivative = einderiv.jacobian(source, wrt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)  # einderiv's own text is no slip
        einderiv.parse(str(derivative))
        assert_printed_reads_back(derivative, arrays)


def test_mean_in_generated_code_and_on_torch():
    from einderiv.codegen import generate

    X, y, w = ARRAYS["X"], ARRAYS["yn"], ARRAYS["w"]
    source = "L = mean_n((y_n - X_nd w_d)^2)"
    compiled, gradient = einderiv.compile(source), einderiv.grad(source, "w")
    namespace: dict = {}
    exec(compile(generate([compiled, gradient], "python"), "<generated>", "exec"), namespace)  # our own code
    expected = -2 * X.T @ (y - X @ w) / len(y)
    np.testing.assert_allclose(namespace["dL_dw"](y=y, X=X, w=w), expected, rtol=1e-12)
    np.testing.assert_allclose(namespace["L"](y=y, X=X, w=w), ((y - X @ w) ** 2).mean(), rtol=1e-12)
    torch = pytest.importorskip("torch")
    got = gradient(X=torch.tensor(X), y=torch.tensor(y), w=torch.tensor(w))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_the_mean_of_a_constant_needs_no_size():
    # mean_n(s) is s whatever n's size; nothing sizes n here, and nothing has to
    value = einderiv.evaluate("f = mean_n(s) + x_i", s=np.float64(2.0), x=ARRAYS["x"])
    assert float(value) == pytest.approx(2.0 + ARRAYS["x"].sum())


@pytest.mark.parametrize("source", ["f = (x_i x_i)(y_i y_i)", "f = (a_i / b_i) c_j", "f = (a_i b_i) / c_j + s"])
def test_pretty_and_latex_keep_the_parentheses_that_make_groups(source):
    compiled = einderiv.compile(source)
    assert einderiv.parse(compiled.pretty()) == einderiv.parse(source)
    assert compiled.latex().count(r"\left(") >= 1


@pytest.mark.parametrize(
    "source, message",
    [
        ("f = exp (x_i)", "'exp' is a function: write exp(...), the name directly followed by '('"),
        ("f = x_i exp*(x_i)", "'exp' is a function: write exp(...)"),
        ("f = mean((X w - y).^2) + ln(s)", "unknown function 'ln'; did you mean log?"),
        ("f = trace(A^T A)", "unknown function 'trace'; did you mean tr?"),
        ("f = sigmod(X w)^T y", "unknown function 'sigmod'; did you mean sigmoid?"),
    ],
)
def test_a_function_name_never_becomes_a_tensor(source, message):
    with pytest.raises(einderiv.EinderivError, match=re.escape(message)):
        einderiv.compile(source)


def test_mean_in_matrix_notation_is_the_mean_of_all_entries():
    X, w, y = ARRAYS["X"], ARRAYS["w"], ARRAYS["yn"]
    source = "L = mean((X w - y).^2)"
    assert float(einderiv.evaluate(source, X=X, w=w, y=y)) == pytest.approx(((X @ w - y) ** 2).mean(), rel=1e-12)
    np.testing.assert_allclose(einderiv.grad(source, "w")(X=X, w=w, y=y), 2 * X.T @ (X @ w - y) / len(y), rtol=1e-12)
    assert einderiv.compile(source, ranks={"X": 2, "w": 1, "y": 1}).read_as.startswith("L = mean_")


def test_a_matrix_name_before_parentheses_is_still_a_product():
    A, x, y, z = ARRAYS["A"], ARRAYS["x"], ARRAYS["y"], ARRAYS["z"]
    assert float(einderiv.evaluate("f = z^T A(x + y)", A=A, x=x, y=y, z=z)) == pytest.approx(z @ A @ (x + y))


# -- line breaks, numbers and reduced left-hand indices --------------------------------------------


def test_a_statement_continues_after_an_operator_and_inside_parentheses():
    X, w, yv = rng.normal(size=(N, D)), rng.normal(size=D), rng.normal(size=N)
    lam = np.float64(0.3)
    expected = ((yv - X @ w) ** 2).sum() + lam * w @ w
    for source in (
        "L = (y_n - X_nd w_d)^2 +\n    lam w_d w_d",
        "L = ((y_n - X_nd w_d)^2\n    + lam w_d w_d)",
        "L =\n (y_n -\n X_nd w_d)^2 + lam w_d w_d  # a comment\n",
    ):
        got = einderiv.evaluate(source, y=yv, X=X, w=w, lam=lam)
        np.testing.assert_allclose(got, expected, rtol=1e-13)
        gradient = einderiv.grad(source, "w")(y=yv, X=X, w=w, lam=lam)
        np.testing.assert_allclose(gradient, -2 * X.T @ (yv - X @ w) + 2 * lam * w, rtol=1e-12)


@pytest.mark.parametrize(
    "source, line, column",
    [
        ("L = (y_n - X_nd w_d)^2\n    + lam w_d w_d", 2, 5),  # was the output on its own: lam w w
        ("f = x_i x_i\n- 2 x_i", 2, 1),  # was the vector -2 x_i
        ("z_n = X_nd w_d\n\n# the loss\n-sum_n(z_n)", 4, 1),
    ],
)
def test_a_line_starting_with_plus_or_minus_is_refused_not_a_new_output(source, line, column):
    with pytest.raises(einderiv.ParseError, match="starts with") as caught:
        einderiv.compile(source)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert "parentheses" in str(caught.value)
    # after an explicit ';' a bare last statement may start with a sign, as before
    assert einderiv.evaluate("f = x_i x_i;\n-x_i x_i", x=np.array([1.0, 2.0])) == -5.0


@pytest.mark.parametrize(
    "source, message",
    [
        ("f = 1.2.3", "two numbers run together"),  # was 1.2 times 0.3
        ("f = 1..2", "two numbers run together"),
        ("f = 1e-3.5", "two numbers run together"),
        ("f = a^2.5.3", "two numbers run together"),
        ("f = x_i2", "x_{i2}"),  # was 2 x_i
        ("f = inv(M)_ij2 x_i y_j", "straight after the index list"),
    ],
)
def test_numbers_run_together_are_a_syntax_error(source, message):
    with pytest.raises(einderiv.ParseError, match=re.escape(message)):
        einderiv.compile(source)


def test_a_number_after_a_space_or_before_a_name_is_still_a_product():
    x = np.array([1.0, 2.0, 3.0])
    assert einderiv.evaluate("f = x_i 2", x=x) == 12.0
    assert einderiv.evaluate("f = 2x_i", x=x) == 12.0
    assert einderiv.evaluate("f = x_{i2} x_{i2}", x=x) == 14.0


@pytest.mark.parametrize(
    "source",
    ["y_i = sum_i(x_i)", "y_j = sum_j(A_ij)", "y_i = mean_i(x_i)", "y_i = logsumexp_i(x_i)", "y_i = sum_i(x_i x_i)"],
)
def test_a_left_hand_index_that_a_reduction_binds_is_an_error(source):
    # y_i = sum_i(x_i) broadcast the total along i ([6, 6, 6] for x = [1, 2, 3]); y_j = sum_j(A_ij)
    # gave the grand total, not the row sums
    with pytest.raises(einderiv.IndexRuleError, match="summed away on the right-hand side"):
        einderiv.compile(source)


def test_a_left_hand_index_free_in_some_term_still_broadcasts_the_others():
    x, A = np.array([1.0, 2.0, 3.0]), rng.normal(size=(3, 4))
    np.testing.assert_allclose(einderiv.evaluate("y_i = sum_i(x_i) + x_i", x=x), x.sum() + x)
    np.testing.assert_allclose(einderiv.evaluate("y_i = sum_j(A_ij)", A=A), A.sum(axis=1))
    p = einderiv.evaluate("p_i = softmax_i(x_i)", x=x)
    np.testing.assert_allclose(p, np.exp(x) / np.exp(x).sum())


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("f = sum_j(x_i)", "sum_j(...): 'j' does not occur in its argument", 5),  # failed at evaluation
        ("f = sum_j(x_i) y_i", "'j' does not occur in its argument", 5),
        ("f = sum_i (x_i^2)", "'sum' is a reduction: write sum_i(...)", 5),  # was 'missing array for sum'
        ("p_k = softmax_k (T_kj x_j)", "write softmax_k(...)", 7),
        ("f = det A", "'det' is a matrix function: write det(M)", 5),
        ("f = x_i(1 - x_i)", "put a space or '*' before '('", 5),
        ("f = A^T_ij x_j", "a transpose in index notation swaps the indices", 7),
        ("f = x_i**2", "a power is written with '^'", 9),
        ("f = xᵢ yᵢ", "indices follow an underscore", 6),
        ("f = max_i(x_i)", "max is not supported", 5),
        ("f = x_i^(a + 1)", "an exponent is a number", 10),
        ("f = A^{-1}_ij x_j", "an inverse is inv(A)_ij", 7),
        ("f = x_i^(1/0)", "divides by zero", 12),
        ("f = s⁻¹⁻¹", "a superscript exponent has one sign, at its start", 8),  # was s^-1 - 1
        ("f = s – s", "a dash is not a minus sign: write '-'", 7),
        ("f = x^TAx", "a transpose is ^T followed by a space or a bracket: ^T Ax", 7),  # not a variable exponent
        ("f = s — s", "a dash is not a minus sign: write '-'", 7),
        ("f = 2^x", "for a variable exponent write exp(x log(2)) for 2^x", 7),
        # the advice is in the user's own base and exponent, its sign kept (it said exp(b log(b)) for a^-b)
        ("f = a^-b", "for a variable exponent write exp(-b log(a)) for a^-b", 8),
        ("f = (x_i + 1)^t", "write exp(t log(x_i + 1)) for (x_i + 1)^t", 15),
        ("f = s^(t + 1)", "write exp((t + 1) log(s)) for s^(t + 1)", 8),
        ("f = e^(-x_i)", "for e^(-x_i) write exp(-x_i)", 9),
        ("f = e^(x_i y_i)", "for e^(x_i y_i) write exp(x_i y_i)", 8),
        ("f = sum_i(x_i)^(y)", "write exp(y log(sum_i(x_i))) for sum_i(x_i)^(y)", 17),  # it said log(i(x_i))
        ("f = x_i inverse(A)_ij x_j", "an inverse's entries are inv(A)_ij", 19),
        ("f = 2 ∂s", "∂ names a derivative on a left-hand side (∂f/∂x_k = ...)", 7),  # was a name ds
        ("f = x_i transpose(A)_ij x_j", "A_ji for the transpose's ij entry", 21),
        ("f = s^(2+1)", "an exponent is one number or one fraction", 9),
        ("f = s^+2", "an exponent is a number with no '+' sign", 7),
        ("f = x_i A⁻¹_ij x_j", "an inverse's entries are inv(A)_ij or (A⁻¹)_ij", 12),
        ("f = x_i A^-1_ij x_j", "an inverse's entries are inv(A)_ij or (A⁻¹)_ij", 13),
        # a hunt's finds: bare "unexpected character" (or the power hint for a doubled product sign)
        ("f = x' A³ x", "write other powers with '^'", 9),
        ("f = tr(A⁻²)", "write other powers with '^'", 9),
        ("f = x^⊤ A x", "a transpose is x' (an ASCII apostrophe) or x^T", 7),
        ("f = x’ A x", "a transpose is x' (an ASCII apostrophe) or x^T", 6),
        ("f = sum(A′ B)", "write a transpose as x' (an ASCII apostrophe) or x^T", 10),
        ("f = x_i ·· y_i", "two product signs in a row; write one (·) or none", 10),
        ("f = x_i * * y_i", "two product signs in a row; write one (*) or none", 11),
    ],
)
def test_near_miss_spellings_get_an_error_that_says_what_to_write(source, message, column):
    with pytest.raises(einderiv.ParseError, match=re.escape(message)) as caught:
        einderiv.compile(source)
    assert (caught.value.line, caught.value.column) == (1, column)


def test_a_reduction_over_a_letter_its_argument_lacks_needs_the_statement_to_size_it():
    x, c = np.array([1.0, 2.0, 3.0]), np.array(0.7)
    assert einderiv.evaluate("f = mean_j(c)", c=c) == pytest.approx(0.7)  # the mean of a constant is it
    assert einderiv.evaluate("f = mean_k(c) x_k", c=c, x=x) == pytest.approx(0.7 * 6.0)
    # one letter, one length in a statement: the sum of a constant counts the length x gives i
    assert einderiv.evaluate("f = sum_i(c) + sum_i(x_i)", c=c, x=x) == pytest.approx(3 * 0.7 + 6.0)


@pytest.mark.parametrize("p, q", [(1, 2), (-1, 2), (2, 3), (-2, 3), (5, 4)])
def test_a_rational_exponent_in_parentheses_is_exact_and_reads_back(p, q):
    x = np.array([0.5, 1.7, 3.0])
    source = f"f = x_i^({p}/{q})"
    np.testing.assert_allclose(einderiv.evaluate(source, x=x), (x ** (p / q)).sum(), rtol=1e-14)
    gradient = einderiv.grad(source, "x")
    np.testing.assert_allclose(gradient(x=x), p / q * x ** (p / q - 1), rtol=1e-13)
    numeric = central_difference(lambda x: (x ** (p / q)).sum(), {"x": x}, "x")
    np.testing.assert_allclose(numeric, gradient(x=x), rtol=1e-7)
    np.testing.assert_allclose(einderiv.compile(str(gradient))(x=x), gradient(x=x), rtol=1e-14)


@pytest.mark.parametrize("scale", ["0.5", "1 / 3", "-2", "lam", "sum_n(a_n)"])
@pytest.mark.parametrize(
    "body",
    [
        "(y_n - X_nd w_d)^2 + lam w_d w_d",
        "x_i + 1",
        "x_i A_ij x_j - b_i x_i + s",
        "sum_n(a_n) - x_i y_i + y_j",
        "y_i - (x_i + 1)",  # a bracketed sum standing alone inside: its 1 is not counted n times
        "y_j + 3 (x_i + 1) - lam",
    ],
)
def test_a_statement_times_a_scalar_is_the_scalar_times_the_statement(scale, body):
    arrays = {**_arrays({"y": "yn", "X": "X", "w": "w", "lam": "lam", "x": "x", "A": "A", "b": "b", "s": "s"})}
    arrays["a"], arrays["y"] = ARRAYS["a"], ARRAYS["yn"] if "y_n" in body else ARRAYS["y"]
    factor = {"0.5": 0.5, "1 / 3": 1 / 3, "-2": -2.0, "lam": float(ARRAYS["lam"]), "sum_n(a_n)": ARRAYS["a"].sum()}
    plain = einderiv.compile(f"f = {body}")
    used = {k: v for k, v in arrays.items() if k in plain.inputs}
    for text in (f"f = {scale} ({body})", f"f = ({body}) * {scale}", f"f = ({body}) / (1 / ({scale}))"):
        scaled = einderiv.compile(text)
        inputs = {k: v for k, v in arrays.items() if k in scaled.inputs}
        np.testing.assert_allclose(scaled(**inputs), factor[scale] * plain(**used), rtol=1e-12, err_msg=text)
        wrt = "w" if "w_d" in body else "x"
        np.testing.assert_allclose(
            einderiv.grad(text, wrt)(**inputs), factor[scale] * einderiv.grad(f"f = {body}", wrt)(**used), rtol=1e-11
        )
    np.testing.assert_allclose(einderiv.evaluate(f"f = -({body})", used), -plain(**used), rtol=1e-12)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = -(A_ii / 2) (A_ii + A_ij)", lambda A, x: -(np.trace(A) / 2) * (np.trace(A) + A.sum())),
        # j is free in the group, so the group is no scalar and the sum is an operand, broadcast
        ("f = -(A_ii x_j) (A_ii + x_i)", lambda A, x: -np.trace(A) * x.sum() * (len(x) * np.trace(A) + x.sum())),
        ("f = -(x_i x_i / 2) (x_i + A_ij)", lambda A, x: -(x @ x / 2) * (x.sum() + A.sum())),
        # two minus signs cancel and leave the group a group (a reviewer's find)
        ("f = -(-(A_ii / 2)) (A_ii + A_ij)", lambda A, x: (np.trace(A) / 2) * (np.trace(A) + A.sum())),
        ("f = ---(A_ii / 2) (A_ii + A_ij)", lambda A, x: -(np.trace(A) / 2) * (np.trace(A) + A.sum())),
    ],
)
def test_a_group_under_a_minus_keeps_its_own_sums_when_it_scales_a_sum(source, expected):
    """A scalar group under a leading minus scales each term of the sum after it (rule 4), and
    its own summed letter stays its own (rule 3): ``-(A_ii / 2) (A_ii + A_ij)`` is
    -(tr A / 2)(tr A + sum A).  It was -(tr A)^2 / 2 - sum_i A_ii sum_j A_ij / 2: once the sign
    was taken out, the rebuilt product continued into the group (found by the property tests)."""
    A, x = ARRAYS["A"], ARRAYS["x"]
    inputs = {k: v for k, v in {"A": A, "x": x}.items() if f"{k}_" in source}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)  # rule 6: a letter reused, as written
        value = einderiv.evaluate(source, inputs)
        bare = source.replace("-(-(A_ii / 2))", "(A_ii / 2)").lstrip("f =-")
        plus = einderiv.evaluate("f = " + bare, inputs)
        printed = einderiv.evaluate(str(einderiv.parse(source)), inputs)
    np.testing.assert_allclose(value, expected(A, x), rtol=1e-12)
    np.testing.assert_allclose(value, (-1) ** (source.count("-") % 2) * plus, rtol=1e-12)
    np.testing.assert_allclose(printed, value, rtol=1e-12)


def test_the_ridge_loss_halved_has_the_textbook_gradient_and_reads_back():
    X, y, w, lam = ARRAYS["X"], ARRAYS["yn"], ARRAYS["w"], float(ARRAYS["lam"])
    gradient = einderiv.grad("L = ((y_n - X_nd w_d)^2 + lam w_d w_d) / 2", "w")
    expected = X.T @ (X @ w - y) + lam * w  # Deisenroth et al., ch. 9: the ridge gradient
    np.testing.assert_allclose(gradient(X=X, y=y, w=w, lam=lam), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate(str(gradient), X=X, y=y, w=w, lam=lam), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("f = 1e5000 a", "beyond float64's range", 5),
        ("f = a^1e99999999", "beyond float64's range", 7),
        ("f = a^(1/1e5000)", "beyond float64's range", 10),
        ("f = 1e-99999999 a", "below float64's smallest", 5),
        ("f = " + "1" * 150 + " a", "more than 100 significant digits", 5),
        ("f = 0." + "3" * 150 + " a", "more than 100 significant digits", 5),
    ],
)
def test_a_number_a_float_cannot_hold_is_a_parse_error_not_a_hang(source, message, column):
    with pytest.raises(einderiv.ParseError, match=re.escape(message)) as caught:
        einderiv.compile(source)
    assert caught.value.column == column


@pytest.mark.parametrize(
    "source, expected, value",
    [
        ("f = (1e300)^15 a", "(10^4500)", np.inf),
        ("f = 2^1000 a", "1.0715086071862673e301", float(2**1000)),
        ("f = (1e-300)^20 a", "(10^-6000)", 0.0),
        ("f = 1e308 a * 20", "(2 * 10^309)", np.inf),
    ],
)
def test_a_constant_products_build_prints_in_scientific_notation(source, expected, value):
    """Beyond float64's range, where a literal is refused, a power of ten (``1e4500`` printed,
    and did not read back: a meaning hunt's find)."""
    gradient = einderiv.grad(source, "a")
    assert str(gradient) == f"df/da = {expected}"
    with np.errstate(over="ignore"):
        assert float(einderiv.compile(str(gradient))(a=np.array(1.0))) == value  # it reads back
    with np.errstate(over="ignore"):
        assert float(gradient(a=np.array(1.0))) == value
    result = subprocess.run(
        [sys.executable, "-m", "einderiv", "diff", source, "--wrt", "a"], capture_output=True, text=True
    )
    assert result.returncode == 0 and expected in result.stdout, result.stderr


def test_an_upper_case_inverse_reads_matrix_notation_and_a_lower_case_one_a_reciprocal():
    A, x = ARRAYS["A"] + 3 * np.eye(D), ARRAYS["x"]
    assert einderiv.compile("z = A⁻¹ x", ranks={"A": 2, "x": 1}).read_as == "z_i = inv(A)_ij x_j"
    np.testing.assert_allclose(einderiv.evaluate("z = A⁻¹ x", A=A, x=x), np.linalg.solve(A, x), rtol=1e-12)
    assert str(einderiv.diff("z = A⁻¹ x", "x")).startswith("dz_i/dx_k = inv(A)_ik")
    assert einderiv.evaluate("f = a⁻¹ b", a=np.array(2.0), b=np.array(3.0)) == pytest.approx(1.5)


@pytest.mark.parametrize(
    "source", ["f = 1^T x", "f = (1)' x", "f = x^T 1", "f = x^T A 1", "f = x^T x 1", "f = (2)^T x"]
)
def test_matrix_notation_has_no_ones_vector_and_says_so(source):
    with pytest.raises(einderiv.EinderivError, match=r"einderiv has no ones vector, so write sum\(x\)"):
        einderiv.compile(source, ranks={"x": 1, "A": 2})
    assert einderiv.evaluate("f = sum(x)", notation="matrix", x=ARRAYS["x"]) == pytest.approx(ARRAYS["x"].sum())


def test_powers_in_parentheses_in_both_notations():
    x, A = ARRAYS["a"], np.abs(ARRAYS["A"]) + 0.1
    assert einderiv.evaluate("f = x_i^(2)", x=x) == pytest.approx((x**2).sum())
    assert einderiv.evaluate("f = x_i^(-2)", x=x) == pytest.approx((x**-2.0).sum())
    np.testing.assert_allclose(einderiv.evaluate("Z = A .^ (1/2)", A=A), np.sqrt(A), rtol=1e-14)
    np.testing.assert_allclose(einderiv.evaluate("Z = A .^ (-1/2)", A=A), A**-0.5, rtol=1e-14)


def test_a_printed_gradient_keeps_the_statements_its_printed_intermediates_use():
    z, y = ARRAYS["v"], ARRAYS["onehot"]
    source = "e_k = exp(z_k); p_k = e_k / sum_j(e_j); L = -y_k log(p_k)"
    gradient = einderiv.grad(source, "z")
    assert str(gradient).splitlines()[0] == "e_k = exp(z_k)"
    expected = softmax(z) * y.sum() - y
    np.testing.assert_allclose(gradient(z=z, y=y), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate(str(gradient), z=z, y=y), expected, rtol=1e-12)
    # printed, but not computed: p is evaluated as a softmax of z
    assert [step.target for step in gradient.steps][0] == "p"


@pytest.mark.parametrize(
    "source, value, gradient",
    [
        # the sum of a constant over k counts the length the statement gives k (x's), K c sum(x)
        ("f = sum_k(c) x_k", lambda c, x: len(x) * c * x.sum(), lambda c, x: len(x) * c * np.ones_like(x)),
        ("f = mean_k(c) x_k", lambda c, x: c * x.sum(), lambda c, x: c * np.ones_like(x)),
        ("f = sum_k(sum_k(c)) x_k", lambda c, x: len(x) ** 2 * c * x.sum(), lambda c, x: len(x) ** 2 * c + 0 * x),
        (
            "f = exp(sum_k(c) x_k / 10)",
            lambda c, x: np.exp(len(x) * c * x / 10).sum(),
            lambda c, x: len(x) * c / 10 * np.exp(len(x) * c * x / 10),
        ),
        ("f = sum_i(sum_i(sum_i(x_i)))", lambda c, x: len(x) ** 2 * x.sum(), lambda c, x: len(x) ** 2 + 0 * x),
    ],
)
def test_a_sum_of_a_constant_counts_its_letter_however_the_product_renames_it(source, value, gradient):
    c, x = np.array(0.7), ARRAYS["x"]
    arrays = {"c": c, "x": x} if "c" in source else {"x": x}
    np.testing.assert_allclose(einderiv.evaluate(source, **arrays), value(c, x), rtol=1e-12)
    derivative = einderiv.grad(source, "x")
    np.testing.assert_allclose(derivative(**arrays), gradient(c, x), rtol=1e-12)
    numeric = central_difference(lambda x: value(c, x), {"x": x}, "x")
    np.testing.assert_allclose(derivative(**arrays), numeric, rtol=1e-7)


@pytest.mark.parametrize(
    "source, column",
    [
        ("R = x_i A_ij x_j / x_k x_k", 20),  # a Rayleigh quotient: was N x^T A x
        ("f = x_i y_i / z_j z_j", 15),  # was N x.y
        ("f = x_i y_i / -z_j^2 z_j", 16),
        ("f = 2 / x_k x_k + 1", 9),
        ("f = sum_k(2 / w_k * w_k)", 15),
    ],
)
def test_a_sum_split_by_a_division_is_an_error_naming_both_bracketings(source, column):
    """As written, '/' takes the factor after it alone, so the sum over k multiplied 1/x_k by x_k:
    N times the numerator, exit status 0, where the text looks like a division by x.x."""
    with pytest.raises(einderiv.ParseError, match=r"summed, only in a factor after it") as caught:
        einderiv.compile(source)
    assert caught.value.column == column
    assert "/ (" in str(caught.value) and "(... /" in str(caught.value)


def test_the_bracketings_and_the_documented_chain_mean_what_they_say():
    gen = np.random.default_rng(0)
    x, y, c, A, a = gen.normal(size=4), gen.normal(size=4), gen.normal(size=4), gen.normal(size=(4, 4)), 1.7
    rayleigh = einderiv.evaluate("R = x_i A_ij x_j / (x_k x_k)", x=x, A=A)
    np.testing.assert_allclose(rayleigh, x @ A @ x / (x @ x), rtol=1e-13)
    # the index in the numerator too: the chain of the README, sum_i x_i y_i / c_i
    np.testing.assert_allclose(einderiv.evaluate("f = x_i / c_i y_i", x=x, y=y, c=c), np.sum(x * y / c), rtol=1e-13)
    # an index of the result: elementwise, a y_k / x_k
    np.testing.assert_allclose(einderiv.evaluate("f_k = a / x_k y_k", a=a, x=x, y=y), a * y / x, rtol=1e-13)
    # another tensor after the denominator: as written (a reviewer's list of false positives)
    np.testing.assert_allclose(einderiv.evaluate("H_ij = 1 / x_k A_ik A_jk", x=x, A=A), A @ np.diag(1 / x) @ A.T)
    np.testing.assert_allclose(einderiv.evaluate("f = 1 / x_k * y_k", x=x, y=y), np.sum(y / x), rtol=1e-13)
    np.testing.assert_allclose(einderiv.evaluate("f = 1 / x_i A_ij y_j", x=x, A=A, y=y), (1 / x) @ A @ y, rtol=1e-13)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "einderiv",
            "eval",
            "R = x_i A_ij x_j / x_k x_k",
            "--random",
            "x=3",
            "--random",
            "A=3x3",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and result.stderr.startswith("error: '/ x_k ... x_k'")
    assert "Traceback" not in result.stderr


def test_a_scalar_intermediate_is_its_value_beside_a_tensor():
    """A meaning hunter's question: the README said scaling by a scalar intermediate means its
    text in place, which ``t y_j`` does not (the text in place, ``(x_i + 1) y_j``, broadcasts the
    sum).  The program means the number its statement computes; the README now says so."""
    gen = np.random.default_rng(5)
    x, y = gen.normal(size=4), gen.normal(size=3)
    np.testing.assert_allclose(einderiv.evaluate("t = x_i + 1; f = t y_j", x=x, y=y), (x.sum() + 1) * y.sum())
    np.testing.assert_allclose(einderiv.evaluate("f = (x_i + 1) y_j", x=x, y=y), (x.sum() + 4) * y.sum())
    np.testing.assert_allclose(einderiv.evaluate("t = x_i + 1; f = 2 t", x=x), 2 * x.sum() + 2)
    gradient = einderiv.grad("t = x_i + 1; f = t y_j", "x")(x=x, y=y)
    np.testing.assert_allclose(gradient, np.full(4, y.sum()))


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "f = sum_i(x_i x_i sum_k(1 + delta_ik)) + sum_k(w_k)",
            lambda x, w: (len(x) + 1) * (x @ x) + w.sum(),
        ),
        ("f = w_k + x_i (1 + delta_ik)", lambda x, w: w.sum() + (len(x) + 1) * x.sum()),
        # the same with the sum written out: a term that is a reduction has its own free letters
        ("f = w_k + sum_i(x_i (1 + delta_ik))", lambda x, w: w.sum() + (len(x) + 1) * x.sum()),
        ("f = sum_k(w_k^2) - sum_i(x_i mean_k(1 + 2 delta_ik))", lambda x, w: w @ w - (1 + 2 / len(x)) * x.sum()),
        (
            "u = sum_i(x_i^2 sum_k(3 + delta_ki)); f = u sum_k(w_k)",
            lambda x, w: (3 * len(x) + 1) * (x @ x) * w.sum(),
        ),
    ],
)
def test_a_letter_only_a_delta_sizes_in_one_sum_keeps_that_size_where_another_sum_writes_it(source, expected):
    """Each sum binds its own letter: in ``sum_i(x_i x_i sum_k(1 + delta_ik)) + sum_k(w_k)`` the
    first k runs over x's length (the delta joins it to i), the second over w's.  The count of
    the first k took w's length when x and w differed, silently (a meaning hunt's find)."""
    rng = np.random.default_rng(7)
    arrays = {"x": rng.normal(size=3), "w": rng.normal(size=5)}
    value = einderiv.evaluate(source, arrays)
    np.testing.assert_allclose(value, expected(**arrays), rtol=1e-12)
    for wrt in ("x", "w"):
        gradient = einderiv.grad(source, wrt)
        numeric = central_difference(lambda **a: expected(**a), arrays, wrt)
        np.testing.assert_allclose(gradient(**arrays), numeric, rtol=1e-7, atol=1e-8)
        printed = einderiv.compile(str(gradient))
        read_back = printed(**{name: arrays[name] for name in printed.inputs})
        np.testing.assert_allclose(read_back, numeric, rtol=1e-7, atol=1e-8)
    hessian = einderiv.hessian(source, "x")
    numeric = central_difference(lambda **a: einderiv.grad(source, "x")(**a), arrays, "x")
    np.testing.assert_allclose(hessian(**arrays), numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = sum_n(v_n + m)^2 - sum_n(u_n - m)^3", lambda v, u, m: np.sum(v + m) ** 2 - np.sum(u - m) ** 3),
        ("f = mean_n(v_n - m) mean_n(u_n + m)", lambda v, u, m: np.mean(v - m) * np.mean(u + m)),
        ("f = sum_n((v_n - m)^2) + sum_n(u_n m)", lambda v, u, m: np.sum((v - m) ** 2) + m * u.sum()),
        # a reduction inside one over the same letter binds its own (renaming both looped forever)
        ("f = sum_n(v_n + m sum_n(u_n - m))", lambda v, u, m: v.sum() + len(v) * m * (u - m).sum()),
        ("f = sum_n(v_n + mean_n(u_n m))", lambda v, u, m: v.sum() + len(v) * (u * m).mean()),
        (
            "f = log(mean_k(exp(v_k m)) + mean_k(exp(u_k)))",
            lambda v, u, m: np.log(np.exp(v * m).mean() + np.exp(u).mean()),
        ),
    ],
)
def test_one_letter_in_two_sums_over_two_lengths_counts_each_at_its_own(source, expected):
    """Each reduction binds its own letter, so ``sum_n(v_n + m)^2 - sum_n(u_n - m)^3`` with v and
    u of two lengths is valid: the count in each sum (N m) is of its own tensor's length.  It
    stopped with "index 'n' has two sizes" (a meaning hunt's find).  Checked against NumPy, with
    the gradient and Hessian by m against central differences, printed and read back."""
    rng = np.random.default_rng(11)
    arrays = {"v": rng.normal(size=5), "u": rng.normal(size=4), "m": np.float64(0.3)}
    np.testing.assert_allclose(einderiv.evaluate(source, arrays), expected(**arrays), rtol=1e-12)
    for order in (1, 2):
        derivative = einderiv.diff(source, ["m"] * order)
        if order == 1:
            numeric = central_difference(lambda **a: expected(**a), arrays, "m")
        else:
            numeric = central_difference(lambda **a: einderiv.grad(source, "m")(**a), arrays, "m")
        np.testing.assert_allclose(derivative(**arrays), numeric, rtol=1e-6, atol=1e-8)
        printed = einderiv.compile(str(derivative))
        read_back = printed(**{name: arrays[name] for name in printed.inputs})
        np.testing.assert_allclose(read_back, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = exp(delta_ii + x_i)", lambda x, z, D, w: np.exp(len(x) + x).sum()),
        ("f = (delta_ii + x_i)^2", lambda x, z, D, w: ((len(x) + x) ** 2).sum()),
        ("f = z_k (delta_ii + x_i)", lambda x, z, D, w: z.sum() * (len(x) ** 2 + x.sum())),
        ("f = (D_ik - delta_kk) x_i", lambda x, z, D, w: ((D - D.shape[1]) * x[:, None]).sum()),
        (
            "f = (D_ik - w_j delta_kk) x_i",
            lambda x, z, D, w: np.einsum("ikj,i->", D[:, :, None] - D.shape[1] * w[None, None, :], x),
        ),
    ],
)
def test_a_count_beside_a_tensor_of_its_letter_in_one_sum_is_that_letters_length(source, expected):
    """``exp(delta_ii + x_i)`` stopped with "the size of index 'j' cannot be inferred", a letter
    the text never wrote (a meaning hunt's find): the delta's i, summed in its own term, was
    renamed apart to a bare j that nothing sized.  It is the count of i, sized as the statement
    sizes i (x's length), as in ``x_i exp(delta_ii)``: sum_i(exp(3 + x_i)) for a 3-vector x.
    NumPy references; the gradient by x against central differences, printed and read back."""
    rng = np.random.default_rng(12)
    arrays = {"x": rng.normal(size=3), "z": rng.normal(size=4), "D": rng.normal(size=(3, 5)), "w": rng.normal(size=4)}
    with pytest.warns(einderiv.EinderivWarning, match="is summed inside"):
        compiled = einderiv.compile(source)
    given = {name: arrays[name] for name in compiled.inputs}
    np.testing.assert_allclose(compiled(**given), expected(**arrays), rtol=1e-12)
    gradient = einderiv.grad(source, "x")
    numeric = central_difference(lambda **a: expected(**{**arrays, **a}), given, "x")
    np.testing.assert_allclose(gradient(**given), numeric, rtol=1e-6, atol=1e-8)
    printed = einderiv.compile(str(gradient))
    np.testing.assert_allclose(printed(**{n: given[n] for n in printed.inputs}), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("source, suggested", [("f = x_i sum_i(x_j)", "sum_j"), ("f = x_i mean_i(y_j)", "mean_j")])
def test_a_reduction_whose_argument_lacks_its_letter_is_not_told_to_rename_it(source, suggested):
    """The warning offered sum_k(x_j) "to say that they differ", which is itself an error."""
    with pytest.warns(einderiv.EinderivWarning) as caught:
        einderiv.compile(source)
    message = str(caught[0].message)
    assert "whose argument does not write it" in message and f"{suggested}(...)" in message
    assert "to say that they differ" not in message
    with pytest.raises(einderiv.ParseError, match="does not occur in its argument"):
        einderiv.compile(source.replace(suggested[:-1] + "i(", suggested[:-1] + "k("))  # sum_k(x_j)


@pytest.mark.parametrize(
    "source", ["f = sum_i(sum_i(x_i))", "f = sum_i(exp(sum_i(x_i)))", "f = sum_i(logsumexp_i(x_i))"]
)
def test_a_sum_over_a_letter_its_argument_writes_only_inside_its_own_sum_is_warned_of(source):
    """N times one value (one letter, one length), as numpy reads it, and almost always a slip."""
    with pytest.warns(einderiv.EinderivWarning, match="writes only inside a reduction over 'i' of its own"):
        value = einderiv.evaluate(source, x=ARRAYS["x"])
    assert np.isfinite(value)


def test_a_mean_of_a_mean_over_one_letter_is_the_mean():
    x = np.array([1.0, 2.0, 6.0])
    assert float(einderiv.evaluate("f = mean_i(mean_i(x_i))", x=x)) == 3.0


@pytest.mark.parametrize("source, column", [("f = (x - mu)^T Σ^-1 (x - mu)", 16), ("f = logdet(Σ)", 12)])
def test_a_covariance_written_sigma_in_matrix_notation_is_told_its_name(source, column):
    """It was told 'write a sum of all entries as sum(...)'."""
    with pytest.raises(einderiv.ParseError, match="write Sigma for a matrix") as caught:
        einderiv.compile(source, notation="matrix")
    assert (caught.value.line, caught.value.column) == (1, column)


@pytest.mark.parametrize(
    "source", ["f = sum_i(sum_j(x_j)) x_i", "f = sum_i(mean_j(x_j)) x_i", "f = sum_i(exp(x_j y_j)) x_i"]
)
def test_a_reduction_of_an_argument_that_sums_its_letters_is_not_told_to_reduce_over_them(source):
    """A review's find: sum_j(sum_j(x_j)) was suggested, which the nested-sum warning flags, and
    sum_j(exp(x_j y_j)), which makes the dot product elementwise."""
    with pytest.warns(einderiv.EinderivWarning) as caught:
        einderiv.compile(source)
    message = str(caught[0].message)
    assert "whose argument does not write it" in message and "over the argument's" not in message


@pytest.mark.parametrize(
    "source, advice",
    [("P = inverse(A)", "did you mean inv?"), ("f = x^T transpose(A) x", "did you mean ^T after the matrix (A^T)?")],
)
def test_matrix_notation_names_the_spelling_of_an_inverse_and_a_transpose(source, advice):
    # "for a product write 'inverse (...)'", which read inverse as an input
    with pytest.raises(einderiv.EinderivError, match=re.escape(advice)):
        einderiv.compile(source, notation="matrix")


@pytest.mark.parametrize(
    "source, advice",
    [
        ("f = x^T A_1 x", "write A1 for A_1"),
        ("f = x^T A_inv x", "write Ainv for A_inv"),
        ("f = (x - x_0)^T A (x - x_0)", "write x0 for x_0"),
        ("f = x^T A_ij x", "write the whole text in index notation"),  # an index list, not a name
    ],
)
def test_matrix_notation_says_a_subscripted_name_is_one_name(source, advice):
    # it said only "matrix notation has no indices", which does not say to rename A_1
    with pytest.raises(einderiv.ParseError, match=re.escape(advice)):
        einderiv.compile(source, notation="matrix")


@pytest.mark.parametrize(
    "source, how, want",
    [
        ("p_i = softmax_k(A_ik x_k)", "rule 5", 1.0),
        ("p_i = softmax_k(A_ik + x_k)", "rule 5", 1.0),
        ("f = softmax_k(x_k)", "rule 5", 1.0),
        ("f = sum_k(softmax_k(x_k))", "by sum_k", 1.0),
        ("f = 2 - mean_k(softmax_k(x_k))", "by mean_k", 2 - 1 / D),
    ],
)
def test_a_softmax_summed_over_its_own_letter_is_warned_of(source, how, want):
    """A hunt's find: ``p_i = softmax_k(A_ik x_k)`` was all ones, silently (k is summed at the
    top, and a softmax sums to 1 over its letter), where ``softmax_i(A_ik x_k)`` (the softmax of
    A x) or ``P_ik = ...`` is meant.  The numbers stay what the rules say."""
    A, x = ARRAYS["A"], ARRAYS["x"]
    with pytest.warns(einderiv.EinderivWarning, match="a softmax sums to 1 over its own letter") as caught:
        value = einderiv.evaluate(source, A=A[:, : x.size], x=x) if "A" in source else einderiv.evaluate(source, x=x)
    assert how in str(caught[0].message)
    assert np.allclose(value, want)


@pytest.mark.parametrize(
    "source",
    [
        "L = y_k softmax_k(z_k)",
        "p_k = softmax_k(z_k)",
        "P_ik = softmax_k(A_ik z_k)",
        "L = -sum_n(Y_nk log(softmax_k(Z_nk)))",
        "q_i = softmax_i(A_ik z_k)",
        "f = sum_k(softmax_k(z_k) z_k)",
    ],
)
def test_a_softmax_read_against_its_letter_is_not_warned_of(source):
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        einderiv.compile(source)


@pytest.mark.parametrize("power", [-2, -3])
def test_a_negative_matrix_power_is_the_power_of_the_inverse(power):
    """A hunt's find: ``x^T A^-2 x`` read A as a scalar, silently (df/dx printed ``2 x / A^2``),
    because a matrix had no power but -1 and 1..8.  It is NumPy's ``matrix_power(A, -2)``."""
    rng = np.random.default_rng(3)
    A, B, x = rng.normal(size=(D, D)) + 3 * np.eye(D), rng.normal(size=(D, D)), rng.normal(size=D)
    M = np.linalg.matrix_power(A, power)
    source = f"f = x^T A^{power} x"
    assert einderiv.compile(source).read_as.count("inv(A)") == -power
    assert einderiv.evaluate(source, A=A, x=x) == pytest.approx(x @ M @ x, rel=1e-12)
    np.testing.assert_allclose(einderiv.grad(source, "x")(A=A, x=x), (M + M.T) @ x, rtol=1e-11)
    trace = f"f = tr(A^{power} B)"
    gradient = einderiv.grad(trace, "A")(A=A, B=B)
    numeric = central_difference(lambda A, B: np.trace(np.linalg.matrix_power(A, power) @ B), {"A": A, "B": B}, "A")
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("source", ["f = x^T A^(1/2) x", "f = x^T A^2.5 x", "f = x^T A^9 x", "f = tr(A^(-1/2))"])
def test_a_power_no_matrix_has_is_an_error_not_a_scalar_reading(source):
    """These type-checked only with A a scalar, and were read so silently."""
    with pytest.raises(einderiv.EinderivError, match=r"of a matrix.*declare ranks=\{'A': 0\} if that is meant"):
        einderiv.compile(source)
    assert einderiv.compile(source, ranks={"A": 0}).read_as.startswith("f = ")


@pytest.mark.parametrize(
    "source, declared",
    [
        ("f = x^T (A + B)^(1/2) x", "ranks={'A': 0, 'B': 0}"),
        ("Y = (X^T X)^(1/2)", "ranks={'X': 1}"),
        ("f = tr((X^T X)^0.5)", "ranks={'X': 1}"),
        ("f = x^T x^-2", "ranks={'x': 2}"),
        ("f = x^T A x^2", "ranks={'x': 2}"),
        ("f = tr(m^3)", "ranks={'m': 2}"),
        ("f = x^T diag(A) x", "ranks={'A': 1}"),
        ("f = diag(A)^T diag(A)", "ranks={'A': 1}"),
    ],
)
def test_a_power_or_call_no_matrix_or_vector_takes_is_not_repaired_by_a_rank(source, declared):
    """A hunt's find: the power of a bracket was repaired silently: ``x^T (A + B)^(1/2) x`` was
    ``x^T x`` times a scalar root, ``(X^T X)^(1/2)`` the norm of a vector X, ``x^T x^-2`` and
    ``x^T A x^2`` matrix products with x a matrix; and ``diag(A)`` of a matrix (MATLAB's diagonal
    of A) read A as a vector."""
    with pytest.raises(einderiv.EinderivError, match=re.escape(f"declare {declared} if that is meant")):
        einderiv.compile(source)


@pytest.mark.parametrize(
    "source, read_as",
    [
        ("f = x^T x / (N - M)^(1/2)", "f = x_i x_i / ((N - M)^(1/2))"),
        ("f = x^T x / (N^2 + 1)^(1/2)", "f = x_i x_i / ((N^2 + 1)^(1/2))"),
        ("f = x^T x / (1 + N)^(1/2)", "f = x_i x_i / ((1 + N)^(1/2))"),
        ("f = tr(m m)", "f = sum_i(m_ij m_ji)"),
        ("s = x^T x; f = tr(s^2)", "s = x_i x_i; f = s^2"),  # a statement's shape is its own text's
        ("s = x^T x; f = tr(s s)", "s = x_i x_i; f = s s"),
    ],
)
def test_scalars_in_a_denominator_and_a_trace_of_names_keep_their_reading(source, read_as):
    """A denominator is a scalar in matrix notation, whatever case its names have; and the trace
    of a product of names is of a matrix (``tr(m m)`` was ``m m`` with m a scalar)."""
    assert einderiv.compile(source).read_as == read_as


def test_a_power_of_an_upper_case_divisor_is_still_a_scalar():
    x = ARRAYS["x"]
    assert einderiv.compile("f = x^T x / N^(1/2)").read_as == "f = x_i x_i / (N^(1/2))"
    assert einderiv.evaluate("f = x^T x / N^(1/2)", x=x, N=np.array(4.0)) == pytest.approx(x @ x / 2, rel=1e-14)


@pytest.mark.parametrize("source, name", [("f = tr X", "tr"), ("f = tr A B", "tr"), ("f = diag x", "diag")])
def test_a_matrix_function_without_its_bracket_is_an_error_in_auto_notation(source, name):
    """A hunt's find: ``f = tr X`` was index notation, a scalar named tr times X (with the
    all-scalars warning), where ``det X`` and ``--notation matrix`` give the error below."""
    with pytest.raises(einderiv.ParseError, match=f"'{name}' is a function: write {name}\\(...\\)"):
        einderiv.compile(source)
    assert einderiv.compile("f = tr_i x_i").inputs == ("tr", "x")  # a tensor named tr, with indices


def test_a_name_in_det_and_bare_without_indices_reads_as_matrix_notation():
    """A hunt's find: ``Y = X / det(X)`` was index notation (no mark of matrix notation), where X
    is a scalar as written and a matrix in det(X): "tensor 'X' is used with 0 indices (X) and
    with 2 (X_??)".  Text that index notation refuses so is read as matrix notation."""
    X = np.random.default_rng(4).normal(size=(3, 3)) + 3 * np.eye(3)
    assert einderiv.compile("Y = X / det(X)").read_as == "Y_ij = X_ij / (det(X))"
    np.testing.assert_allclose(einderiv.evaluate("Y = X / det(X)", X=X), X / np.linalg.det(X), rtol=1e-13)
    jacobian = einderiv.jacobian("Y = X / det(X)", "X")(X=X)
    numeric = central_difference(lambda X: X / np.linalg.det(X), {"X": X}, "X")
    np.testing.assert_allclose(jacobian, numeric, rtol=1e-6, atol=1e-9)
    with pytest.raises(einderiv.IndexRuleError, match="used with 0 indices"):
        einderiv.compile("Y = X / det(X)", notation="index")


@pytest.mark.parametrize(
    "source, printed",
    [
        (
            "f = sum_n(sigmoid(X_ni w_i) sigmoid(X_nd w_d))",
            "df/dw_j = 2 sigmoid(X_ni w_i)^2 (1 - sigmoid(X_ni w_i)) X_nj",
        ),
        (
            "f = sum_n(sigmoid(X_ni w_i) tanh(X_nk v_k) sigmoid(X_nd w_d))",
            "df/dw_j = 2 sigmoid(X_ni w_i)^2 (1 - sigmoid(X_ni w_i)) X_nj tanh(X_nk v_k)",
        ),
    ],
)
def test_one_call_written_with_other_summed_letters_is_one_base(source, printed):
    """``sigmoid(X_ni w_i)`` and ``sigmoid(X_nd w_d)`` are one array: their product is its square,
    and terms of its powers are like terms (a GRU's one-statement gradient printed
    ``-4 sigmoid(X_ni w_i) tanh(X_nk v_k) sigmoid(X_nd w_d) X_nj c0_n`` beside ``-2 c0_n
    sigmoid(X_ni w_i)^2 X_nj tanh(X_nk v_k)``, never collected).  Against a NumPy closed form and
    central differences."""
    X, w, v = rng.normal(size=(N, D)), rng.normal(size=D), rng.normal(size=D)
    gradient = einderiv.grad(source, "w")
    assert str(gradient) == printed
    s, t = 1 / (1 + np.exp(-X @ w)), np.tanh(X @ v)
    weight = t if "tanh" in source else np.ones(N)
    expected = X.T @ (2 * s**2 * (1 - s) * weight)
    arrays = {"X": X, "w": w, "v": v}
    got = gradient(**{k: arrays[k] for k in gradient.inputs})
    np.testing.assert_allclose(got, expected, rtol=1e-12)

    def f(w):
        return np.sum(1 / (1 + np.exp(-X @ w)) ** 2 * weight)

    np.testing.assert_allclose(got, central_difference(f, {"w": w}, "w"), rtol=1e-6)


@pytest.mark.parametrize("source", ["y_n = σ (X_nd w_d)", "f = log(σ (z))", "y = σ\t(z)", "y = σ (X w)"])
def test_a_sigma_glyph_with_a_space_before_its_bracket_is_an_error(source):
    """A hunt's find: ``σ (z)``, as a PDF pastes it, was a scalar named sigma times z (the
    gradient of ``σ (X_nd w_d)`` printed ``sigma X_ni``), where ``σ(z)`` is the sigmoid and
    ``sigmoid (z)`` an error; now an error with the caret at σ, which names both readings."""
    with pytest.raises(einderiv.ParseError, match=r"σ\(\.\.\.\) for sigmoid.*sigma \(\.\.\.\)") as caught:
        einderiv.compile(source)
    assert caught.value.column == source.index("σ") + 1
    assert str(einderiv.compile("f = σ z").program.out.poly) == "sigma z"  # a scale named σ, as before
    done = run_cli("diff", source, "--wrt", "w" if "w" in source else "z")
    assert done.returncode != 0 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "source, written, wrt", [("L = (y_pred - y_true)^2", "y_pred", "y"), ("f = λ_max x_i x_i", "lambda_max", "x")]
)
def test_an_index_list_that_spells_a_word_warns_that_each_letter_is_an_index(source, written, wrt):
    """A hunt's find: ``y_pred - y_true`` is one tensor y with the indices p, r, e, d and t, r,
    u, e (each letter after '_' an index, as the README says), and its gradient printed as if
    y_pred were a name, with nothing said.  Index lists that are letters (R_mnpq) say nothing."""
    with pytest.warns(einderiv.EinderivWarning, match=f"'{written}' is the tensor .* with the indices"):
        einderiv.compile(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        einderiv.compile("f = R_mnpq R_mnpq + x_ijk x_ijk")
    done = run_cli("diff", source, "--wrt", wrt)
    assert done.returncode == 0 and f"warning: '{written}' is the tensor" in done.stderr


@pytest.mark.parametrize(
    "source, arrays, expected", [("f = x√(x)", {"x": 4.0}, 8.0), ("f = aσ(z)", {"a": 2.0, "z": 0.0}, 1.0)]
)
def test_a_call_glyph_after_a_name_multiplies_it(source, arrays, expected):
    """A hunt's find: ``x√(x)`` said "unknown function 'xsqrt'" (the glyph's name was glued to
    x); it is x times √(x), as ``2√(x)`` is 2 √(x)."""
    assert float(einderiv.compile(source)(**{k: np.array(v) for k, v in arrays.items()})) == pytest.approx(expected)


def test_a_call_glyph_after_an_index_multiplies_as_after_a_name():
    """A hunt's find: ``x_iσ(z_i)`` read σ as a second index letter and said "put a space or '*'
    before '(' for a product (x_{i,sigma} (...))", advice that did not say what was meant; it is
    x_i σ(z_i), as ``aσ(z)`` is a σ(z).  Against NumPy."""
    x, z = np.array([1.0, -2.0, 0.5]), np.array([0.3, -1.0, 2.0])
    sigmoid = 1 / (1 + np.exp(-z))
    assert float(einderiv.compile("f = x_iσ(z_i)")(x=x, z=z)) == pytest.approx(float(x @ sigmoid))
    np.testing.assert_allclose(einderiv.compile("f_i = x_i√(z_i^2)")(x=x, z=z), x * np.abs(z))
    np.testing.assert_allclose(einderiv.compile("f_μ = x_μσ(z_μ)")(x=x, z=z), x * sigmoid)
    assert einderiv.compile("f_σ = x_σ").ranks == {"x": 1}  # σ an index where no '(' follows


@pytest.mark.parametrize(
    "source, called", [("f_i = x_iexp(z_i)", "x_i times exp"), ("f = x_ijlog(A_ij)", "x_ij times log")]
)
def test_a_function_name_written_onto_indices_is_told_to_take_a_space(source, called):
    """``x_iexp(z_i)``: the letters of exp read as indices of x, and x is no function; the error
    names the product meant, with the caret at x."""
    with pytest.raises(einderiv.ParseError, match=f"for {called}\\(\\.\\.\\.\\), put a space") as caught:
        einderiv.compile(source)
    assert caught.value.column == source.index("x_") + 1


def test_a_comment_is_never_read_as_notation():
    """A review's find: ``# σ (z) is the sigmoid`` in a comment made the text an error (the glyph
    check ran before comments were removed), and so did ``# Σ_i x_i``."""
    for source in [
        "f = x_i x_i  # σ (z) is the sigmoid",
        "f = x_i x_i  # Σ_i x_i, ∑, x²",
        "f = x_i x_i # aσ(z)\ng = f + 1",
    ]:
        compiled = einderiv.compile(source)
        assert float(compiled(x=np.array([1.0, 2.0]))) == (6.0 if "g =" in source else 5.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: einderiv.compile("f = y_pred y_pred"),
        lambda: einderiv.grad("L = y_pred y_pred", "y"),
        lambda: einderiv.compile("f = x A x"),
        lambda: einderiv.compile("f = x_i A_ij x_j\nx_j"),
    ],
)
def test_a_warning_points_at_the_users_line_not_into_einderiv(call):
    """A review's find: the word-index and all-scalars warnings were attributed to a line of
    einderiv's reader (``reading.py:207``), so Python's once-per-line filters and a user's
    ``filterwarnings(module=...)`` saw einderiv, not the call that wrote the text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    ours = [w for w in caught if issubclass(w.category, einderiv.EinderivWarning)]
    assert ours and all(w.filename == __file__ for w in ours), [(w.filename, w.lineno) for w in ours]


@pytest.mark.parametrize(
    "source, message",
    [
        ("f = x_i_j", "an index list is written once, after the name: x_ij (or x_{i,j}), not x_i_j"),
        ("f = x_{ij}_k y_ijk", "x_ijk (or x_{i,j,k}), not x_{ij}_k"),
        ("f = x^2^3", "write (x^2)^3, that is x^6 (MATLAB's reading), or x^8 (NumPy's)"),
        ("f = x_i^2^2", "write (x_i^2)^2 or x_i^4"),
        ("f = (a + b)^2^-1", "write ((a + b)^2)^-1, that is (a + b)^-2 (MATLAB's reading), or (a + b)^(1/2)"),
        (r"f = \{x_i\}", "LaTeX's braces: group with plain brackets"),
    ],
)
def test_an_error_for_a_common_slip_names_the_users_own_fix(source, message):
    """A hunt's finds: ``x_i_j`` got the parser's generic list of expected tokens, a power of a
    power the fix for an ``x_i^2^3`` the user never wrote, and LaTeX's ``\\{`` "there is no left
    division".  Each suggested text reads (``test_the_suggested_fixes_read``)."""
    with pytest.raises(einderiv.ParseError) as caught:
        einderiv.compile(source)
    assert message in str(caught.value)


def test_the_suggested_fixes_read():
    for text in ["f = x_ij", "f = x_{i,j}", "f = (x^2)^3", "f = x^8", "f = ((a + b)^2)^-1", "f = (a + b)^(1/2)"]:
        einderiv.compile(text)


def test_a_reduction_keeps_a_greek_index_before_its_bracket():
    """A review's find: reading σ( after an index as the sigmoid cut a reduction's index list,
    ``sum_iσ(x_iσ)`` (summing over i and σ) became an error."""
    x = np.arange(6.0).reshape(2, 3)
    assert float(einderiv.compile("f = sum_iσ(x_iσ)")(x=x)) == 15.0


@pytest.mark.parametrize(
    "source, message",
    [
        ("f = x^-2^2", "write (x^-2)^2 or x^-4"),  # NumPy's x**-2**2 is x**-(2**2)
        ("f = x^-0.5^-2", "that is x^1 (MATLAB's reading), or x^-4 (NumPy's)"),
        ("f = x^2^-1", "or x^(1/2) (NumPy's)"),
        ("f = x_{i, j}_k", "x_ijk (or x_{i,j,k})"),
    ],
)
def test_the_readings_a_slip_names_are_numpys_and_matlabs(source, message):
    with pytest.raises(einderiv.ParseError) as caught:
        einderiv.compile(source)
    assert message in str(caught.value)
