"""Multi-statement programs: checking, evaluation, and the chain rule in reverse order."""

from __future__ import annotations

import numpy as np
import pytest

import einderiv
from tests.helpers import assert_matches_fd

rng = np.random.default_rng(11)

LEAST_SQUARES = "e_n = y_n - Phi_nd theta_d; L = e_n e_n"
LOGISTIC = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))"


def data(N=7, D=3):
    return {"y": rng.normal(size=N), "Phi": rng.normal(size=(N, D)), "theta": rng.normal(size=D)}


def test_program_value_and_of():
    arrays = data()
    e = arrays["y"] - arrays["Phi"] @ arrays["theta"]
    np.testing.assert_allclose(einderiv.evaluate(LEAST_SQUARES, **arrays), e @ e)
    np.testing.assert_allclose(einderiv.evaluate(LEAST_SQUARES, of="e", **arrays), e)
    assert einderiv.parse("a_i = x_i + 1\nf = a_j a_j").output.name == "f"


def test_least_squares_through_the_intermediate():
    arrays = data()
    g = einderiv.grad(LEAST_SQUARES, "theta")
    text = str(g).splitlines()
    assert text[0] == "e_n = y_n - Phi_nd theta_d"
    assert text[-1].startswith("dL/dtheta_")
    assert len(g.expr.terms) == 1 and g.expr.terms[0].coeff == -2  # -2 e^T Phi
    e = arrays["y"] - arrays["Phi"] @ arrays["theta"]
    np.testing.assert_allclose(g(**arrays), -2 * e @ arrays["Phi"])
    assert_matches_fd(g, einderiv.compile(LEAST_SQUARES), arrays, "theta")
    h = einderiv.hessian(LEAST_SQUARES, "theta")
    np.testing.assert_allclose(h(**arrays), 2 * arrays["Phi"].T @ arrays["Phi"])
    assert_matches_fd(h, g, arrays, "theta")


def test_gradient_of_a_scalar_builds_no_jacobian():
    g = einderiv.grad(LEAST_SQUARES, "theta")
    sizes = {d.name: len(d.indices) for d in g.definitions}
    assert max(sizes.values()) == 1  # e_n and the gradient: nothing of size N x D
    N, D = 400, 5
    arrays = {"y": rng.normal(size=N), "Phi": rng.normal(size=(N, D)), "theta": rng.normal(size=D)}
    assert g.shape_for(**{k: v.shape for k, v in arrays.items()}) == (D,)


def test_logistic_regression_program_gradient_and_hessian():
    N, D = 9, 3
    X, w = rng.normal(size=(N, D)), rng.normal(size=D)
    y = (rng.random(N) > 0.5).astype(float)
    arrays = {"X": X, "w": w, "y": y}
    s = 1 / (1 + np.exp(-X @ w))
    g = einderiv.grad(LOGISTIC, "w")
    np.testing.assert_allclose(g(**arrays), X.T @ (s - y))
    assert_matches_fd(g, einderiv.compile(LOGISTIC), arrays, "w")
    h = einderiv.hessian(LOGISTIC, "w")
    np.testing.assert_allclose(h(**arrays), X.T @ np.diag(s * (1 - s)) @ X)
    assert_matches_fd(h, g, arrays, "w")


def test_chain_rule_example_of_the_notes():
    source = "x1 = t cos(t); x2 = t sin(t); h = exp(x1 x2^2)"
    d = einderiv.grad(source, "t")
    for t in (0.3, 1.1, -0.7):
        x1, x2 = t * np.cos(t), t * np.sin(t)
        expected = np.exp(x1 * x2**2) * (
            x2**2 * (np.cos(t) - t * np.sin(t)) + 2 * x1 * x2 * (np.sin(t) + t * np.cos(t))
        )
        assert float(d(t=t)) == pytest.approx(expected, rel=1e-12)
        assert_matches_fd(d, einderiv.compile(source), {"t": np.array(t)}, "t")


def test_an_intermediate_used_twice_is_differentiated_once():
    depth = 12
    lines = ["x1 = x x"] + [f"x{k + 1} = x{k} x{k}" for k in range(1, depth)]
    source = "; ".join(lines)
    d = einderiv.grad(source, "x")
    assert len(d.definitions) <= 2 * depth + 1
    assert all(len(defn.poly.terms) <= 2 for defn in d.definitions)
    x = np.array(1.0001)
    expected = 2**depth * x ** (2**depth - 1)
    assert float(d(x=x)) == pytest.approx(expected, rel=1e-9)
    h = einderiv.hessian(source, "x")
    assert float(h(x=x)) == pytest.approx(2**depth * (2**depth - 1) * x ** (2**depth - 2), rel=1e-9)


def test_each_call_is_evaluated_once_per_evaluation(monkeypatch):
    import einderiv.runtime as ev

    calls = []
    original = ev.apply_function
    monkeypatch.setattr(ev, "apply_function", lambda f, p, x: calls.append((f, x.tobytes())) or original(f, p, x))
    h = einderiv.hessian(LOGISTIC, "w")
    N, D = 6, 2
    h(X=rng.normal(size=(N, D)), w=rng.normal(size=D), y=np.ones(N))
    assert len(set(calls)) == len(calls)  # no call twice on one array
    # sigmoid(z) and sigmoid(-z): the Hessian's s (1 - s) is evaluated as s sigmoid(-z)
    assert [f for f, _ in calls].count("sigmoid") == 2


def test_printed_program_derivative_reads_back():
    from einderiv.lower import normalize
    from einderiv.normal import equivalent

    for source, wrt in [(LEAST_SQUARES, "theta"), (LOGISTIC, "w")]:
        for order in (1, 2):
            d = einderiv.diff(source, [wrt] * order)
            reread = einderiv.compile(str(d))
            assert equivalent(normalize(reread.program.source.output.rhs, d.indices), d.expr)


@pytest.mark.parametrize(
    "source, message",
    [
        ("a = x; a = y", "'a' is defined twice"),
        ("f = a x; a = y", "'a' is used in statement 1 before its definition in statement 2"),
        ("e_n = y_n; L = e_nm", "'e' is defined with 1 indices but used with 2"),
        ("x_i + 1; f = x_i x_i", "needs a left-hand side"),
        ("a_i = x_i; f_k = a_i", "left-hand side index 'k' appears in no term"),
        ("a_i = x_i; f = X_ij x_i; g = x_ij", "input 'x' is used with 1 indices and with 2"),
    ],
)
def test_program_errors(source, message):
    with pytest.raises(einderiv.EinderivError) as info:
        einderiv.compile(source)
    assert message in str(info.value)


def test_of_and_wrt_errors():
    with pytest.raises(einderiv.IndexRuleError, match="of='q' names no statement"):
        einderiv.compile(LEAST_SQUARES, of="q")
    with pytest.raises(einderiv.DifferentiationError, match="'e' is an intermediate"):
        einderiv.diff(LEAST_SQUARES, "e")


def test_index_letters_are_local_to_a_statement():
    x = rng.normal(size=4)
    value = einderiv.evaluate("a_i = x_i + 1; b_j = a_j a_j; f = b_k x_k", x=x)
    np.testing.assert_allclose(value, ((x + 1) ** 2) @ x)
