"""Elementwise functions, powers, division and reductions: values, derivatives, scoping, stability."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import einderiv
from einderiv.functions import FUNCTIONS
from tests.helpers import assert_matches_fd

rng = np.random.default_rng(3)

# Points away from kinks and inside each domain.
DOMAINS = {
    "exp": (-2, 2),
    "log": (0.5, 3),
    "log1p": (-0.5, 2),
    "expm1": (-2, 2),
    "sin": (-3, 3),
    "cos": (-3, 3),
    "tan": (-1, 1),
    "tanh": (-2, 2),
    "cosh": (-2, 2),
    "sinh": (-2, 2),
    "arcsin": (-0.8, 0.8),
    "arccos": (-0.8, 0.8),
    "arctan": (-3, 3),
    "sigmoid": (-4, 4),
    "sqrt": (0.5, 3),
    "abs": (0.2, 2),
    "relu": (0.2, 2),
    "softplus": (-3, 3),
    "sign": (0.2, 2),
    "step": (0.2, 2),
}


def test_every_function_has_a_domain_here():
    assert set(DOMAINS) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_value_and_first_and_second_derivative(name):
    low, high = DOMAINS[name]
    x = rng.uniform(low, high, size=4)
    if name in ("abs", "relu", "sign", "step"):
        x = x * np.array([1, -1, 1, -1])  # both sides of the kink
    source = f"y_i = {name}(x_i)"
    compiled = einderiv.compile(source)
    first = einderiv.jacobian(source, "x")
    second = einderiv.diff(source, ["x", "x"])
    assert_matches_fd(first, compiled, {"x": x}, "x")
    assert_matches_fd(second, first, {"x": x}, "x", atol=1e-5)
    scalar = f"f = sum_i({name}(x_i) x_i)"
    g = einderiv.grad(scalar, "x")
    assert_matches_fd(g, einderiv.compile(scalar), {"x": x}, "x")
    assert_matches_fd(einderiv.hessian(scalar, "x"), g, {"x": x}, "x", atol=1e-5)


def test_reference_values():
    x = np.array([-1.5, 0.3, 2.0])
    np.testing.assert_allclose(einderiv.evaluate("y_i = sigmoid(x_i)", x=x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(einderiv.evaluate("y_i = softplus(x_i)", x=x), np.log1p(np.exp(x)))
    np.testing.assert_allclose(einderiv.evaluate("y_i = relu(x_i)", x=x), np.maximum(x, 0))


def test_subderivatives_at_kinks_are_zero():
    zero = np.zeros(3)
    for name in ("abs", "relu", "sign", "step"):
        d = einderiv.jacobian(f"y_i = {name}(x_i)", "x")
        np.testing.assert_array_equal(d(x=zero), np.zeros((3, 3)))


def test_derivative_formulas_print_as_expected():
    assert str(einderiv.diff("y = sigmoid(x)", "x").expr) == "sigmoid(x) - sigmoid(x)^2"
    assert str(einderiv.diff("y = tanh(x)", "x").expr) == "1 - tanh(x)^2"
    assert str(einderiv.diff("y = log(x)", "x").expr) == "1 / x"
    assert str(einderiv.diff("y = relu(x)", "x").expr) == "step(x)"


@pytest.mark.parametrize(
    "source, point",
    [
        ("y = x^2", 0.7),
        ("y = (2*x + 1)^4", 0.3),
        ("y = x^-0.5", 1.3),
        ("y = x^1.5", 1.3),
        ("y = x^-2 + 3 / x", 0.9),
        ("y = exp(-0.5 * x)", 0.4),
        ("y = sqrt(x^2 + 1)", -0.4),
    ],
)
def test_powers_and_division_first_and_second_order(source, point):
    x = np.array(point)
    d1 = einderiv.diff(source, "x")
    d2 = einderiv.diff(source, ["x", "x"])
    assert_matches_fd(d1, einderiv.compile(source), {"x": x}, "x")
    assert_matches_fd(d2, d1, {"x": x}, "x", atol=1e-5)


def test_power_values_are_exact_where_they_can_be():
    assert float(einderiv.evaluate("y = 2^3 x", x=1.0)) == 8.0
    assert str(einderiv.diff("y = x^3", "x").expr) == "3 x^2"
    assert str(einderiv.diff("y = x^2", "x").expr) == "2 x"


def test_division_broadcasts_over_missing_indices():
    e, s = rng.uniform(1, 2, size=4), np.array(2.5)
    np.testing.assert_allclose(einderiv.evaluate("p_i = e_i / s", e=e, s=s), e / s)
    E, S = rng.uniform(1, 2, size=(3, 4)), rng.uniform(1, 2, size=3)
    np.testing.assert_allclose(einderiv.evaluate("P_nk = E_nk / S_n", E=E, S=S), E / S[:, None])
    d = einderiv.jacobian("P_nk = E_nk / S_n", "S")
    assert_matches_fd(d, einderiv.compile("P_nk = E_nk / S_n"), {"E": E, "S": S}, "S")


def test_index_scoping_of_calls_and_reductions():
    X, w = rng.normal(size=(5, 3)), rng.normal(size=3)
    np.testing.assert_allclose(einderiv.evaluate("s_n = sigmoid(X_nd w_d)", X=X, w=w), 1 / (1 + np.exp(-X @ w)))
    x, y = rng.normal(size=4), rng.normal(size=4)
    np.testing.assert_allclose(einderiv.evaluate("f = sum_i(exp(x_i))", x=x), np.exp(x).sum())
    np.testing.assert_allclose(einderiv.evaluate("f = exp(x_i x_i)", x=x), np.exp(x @ x))
    np.testing.assert_allclose(einderiv.evaluate("f = exp(x_i) y_i", x=x, y=y), np.exp(x) @ y)
    # Einstein scoping, bottom-up: i occurs once inside exp, so it is free there and summed at
    # the top; this used to read exp(sum_i x_i) + sum_i y_i
    np.testing.assert_allclose(einderiv.evaluate("f = exp(x_i) + y_i", x=x, y=y), np.exp(x).sum() + y.sum())
    np.testing.assert_allclose(einderiv.evaluate("f = exp(sum_i(x_i)) + y_i", x=x, y=y), np.exp(x.sum()) + y.sum())
    np.testing.assert_allclose(einderiv.evaluate("f = (1 - y_n) log(2 + x_n)", x=x, y=y), (1 - y) @ np.log(2 + x))
    np.testing.assert_allclose(einderiv.evaluate("f = sum_i(x_i) sum_i(y_i)", x=x, y=y), x.sum() * y.sum())
    np.testing.assert_allclose(einderiv.evaluate("f_i = sum_i(x_i) y_i", x=x, y=y), x.sum() * y)


@pytest.mark.parametrize(
    "source",
    [
        "s_n = sigmoid(X_nd w_d)",
        "f = sum_i(exp(x_i))",
        "f = exp(-0.5 z)",
        "f = log(1 - s_n) + (2 x + 1)^4 + s^-0.5",
        "P_nk = E_nk / S_n",
        "f = sum_{in,out}(W_{in,out} tanh(V_{out,}))",
    ],
)
def test_printing_round_trips_with_functions(source):
    program = einderiv.parse(source)
    assert einderiv.parse(str(program)) == program


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f = sum_i(exp(x_i))", "x"),
        ("f = exp(x_i x_i)", "x"),
        ("p_i = exp(z_i) / sum_j(exp(z_j))", "z"),
        ("L = -(y_n log(sigmoid(X_nd w_d)) + (1 - y_n) log(1 - sigmoid(X_nd w_d)))", "w"),
        ("f = sum_i(tanh(A_ij x_j)) + log(x_k x_k)", "x"),
    ],
)
def test_printed_derivatives_read_back_to_the_same_expression(source, wrt):
    from einderiv.lower import normalize
    from einderiv.normal import equivalent

    for order in (1, 2):
        d = einderiv.diff(source, [wrt] * order)
        statement = einderiv.parse(str(d)).output
        assert equivalent(normalize(statement.rhs, d.indices), d.expr)


def test_unknown_function_lists_the_known_ones():
    with pytest.raises(einderiv.ParseError) as info:
        einderiv.parse("f = squish(x_i)")
    assert "unknown function 'squish'" in str(info.value)
    assert "sigmoid" in str(info.value) and "tanh" in str(info.value)


# -- numerical stability ---------------------------------------------------------------------------

EXTREME = np.array([-1000.0, -700.0, -50.0, -1e-12, 0.0, 1e-12, 50.0, 700.0, 1000.0])


def _reference(function, points):
    mpmath.mp.dps = 50
    return np.array([float(function(mpmath.mpf(float(p)))) for p in points])


@pytest.mark.parametrize(
    "source, reference",
    [
        ("y_i = log(sigmoid(z_i))", lambda z: -mpmath.log(1 + mpmath.exp(-z))),
        ("y_i = log(1 - sigmoid(z_i))", lambda z: -mpmath.log(1 + mpmath.exp(z))),
        ("y_i = softplus(z_i)", lambda z: mpmath.log(1 + mpmath.exp(z))),
        ("y_i = sigmoid(z_i)", lambda z: 1 / (1 + mpmath.exp(-z))),
    ],
)
def test_stable_forms_stay_finite_and_accurate(source, reference):
    value = einderiv.evaluate(source, z=EXTREME)
    assert np.all(np.isfinite(value))
    np.testing.assert_allclose(value, _reference(reference, EXTREME), rtol=1e-12, atol=1e-300)
    gradient = einderiv.jacobian(source, "z")(z=EXTREME)
    assert np.all(np.isfinite(gradient))


def test_log_of_one_plus_small_values_uses_log1p():
    z = np.array([1e-15, -1e-12, 3e-10])
    value = einderiv.evaluate("y_i = log(1 + z_i)", z=z)
    np.testing.assert_allclose(value, _reference(lambda t: mpmath.log(1 + t), z), rtol=1e-12)


def test_logistic_loss_is_finite_for_large_margins():
    X = np.array([[1000.0], [-1000.0]])
    w = np.array([1.0])
    y = np.array([0.0, 1.0])
    source = "L = -(y_n log(sigmoid(X_nd w_d)) + (1 - y_n) log(1 - sigmoid(X_nd w_d)))"
    loss = einderiv.evaluate(source, X=X, w=w, y=y)
    assert float(loss) == pytest.approx(2000.0)
    assert np.all(np.isfinite(einderiv.grad(source, "w")(X=X, w=w, y=y)))
    assert np.all(np.isfinite(einderiv.hessian(source, "w")(X=X, w=w, y=y)))


def test_nan_and_inf_propagate_as_ieee_values():
    value = einderiv.evaluate("y_i = log(x_i)", x=np.array([-1.0, 0.0, np.inf, np.nan]))
    assert np.isnan(value[0]) and value[1] == -np.inf and value[2] == np.inf and np.isnan(value[3])
