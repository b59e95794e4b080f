"""The catalogue of stable rewrites (einderiv.rewrites): every rule is recognised, right at extreme
inputs against mpmath (50 digits) as the independent reference, right at ordinary inputs against
central finite differences, and as stable written through an intermediate as in one statement."""

from __future__ import annotations

import inspect
import re
import warnings

import mpmath
import numpy as np
import pytest

import einderiv
from einderiv import rewrites
from tests.helpers import assert_matches_fd

mpmath.mp.dps = 50

#: Logits from -1000 to 1000: exp overflows beyond 709, sigmoid rounds to 1 beyond 37.
EXTREME = np.array([-1000.0, -700.0, -40.0, -37.0, -3.5, 0.0, 0.25, 36.0, 40.0, 700.0, 1000.0])


def mp(values) -> list:
    return [mpmath.mpf(float(v)) for v in np.ravel(values)]


def close(actual, expected, rtol=1e-12, atol=1e-300):
    actual = np.asarray(actual, dtype=np.float64)
    assert np.all(np.isfinite(actual)), actual
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def compiled_text(source: str) -> str:
    """The simplified right-hand side of the output, as einderiv lowered it."""
    return str(einderiv.compile(source).expr)


def mp_sigmoid(u):
    return 1 / (1 + mpmath.exp(-u))


# -- elementwise rules: y_i = f(z_i), reference value and derivative in mpmath ----------------------

ELEMENTWISE = {
    # rule: (one statement, two-statement program, stable call, value(u), derivative(u))
    "log_sigmoid": (
        "y_i = log(sigmoid(z_i))",
        "s_i = sigmoid(z_i); y_i = log(s_i)",
        "softplus",
        lambda u: -mpmath.log(1 + mpmath.exp(-u)),
        lambda u: mp_sigmoid(-u),
    ),
    "log_one_minus_sigmoid": (
        "y_i = log(1 - sigmoid(z_i))",
        "s_i = sigmoid(z_i); y_i = log(1 - s_i)",
        "softplus",
        lambda u: -mpmath.log(1 + mpmath.exp(u)),
        lambda u: -mp_sigmoid(u),
    ),
    "log_one_plus_exp": (
        "y_i = log(1 + exp(z_i))",
        "e_i = exp(z_i); y_i = log(1 + e_i)",
        "softplus",
        lambda u: mpmath.log(1 + mpmath.exp(u)),
        mp_sigmoid,
    ),
    "log_cosh": (
        "y_i = log(cosh(z_i))",
        "c_i = cosh(z_i); y_i = log(c_i)",
        "softplus",
        lambda u: mpmath.log(mpmath.cosh(u)),
        mpmath.tanh,
    ),
    "log_one_minus_tanh_squared": (
        "y_i = log(1 - tanh(z_i)^2)",
        "t_i = tanh(z_i); y_i = log(1 - t_i^2)",
        "softplus",
        lambda u: 2 * mpmath.log(1 / mpmath.cosh(u)),
        lambda u: -2 * mpmath.tanh(u),
    ),
    "log_add_exp, cosh by hand": (
        "y_i = log((exp(z_i) + exp(-z_i)) / 2)",
        "c_i = (exp(z_i) + exp(-z_i)) / 2; y_i = log(c_i)",
        "softplus",
        lambda u: mpmath.log(mpmath.cosh(u)),
        mpmath.tanh,
    ),
    "log_add_exp, three terms": (  # inf at z = 1000 and NaN in the gradient before
        "y_i = log(1 + exp(z_i) + exp(2 z_i))",
        "e_i = exp(z_i); y_i = log(1 + e_i + e_i^2)",
        "softplus",
        lambda u: mpmath.log(1 + mpmath.exp(u) + mpmath.exp(2 * u)),
        lambda u: (mpmath.exp(u) + 2 * mpmath.exp(2 * u)) / (1 + mpmath.exp(u) + mpmath.exp(2 * u)),
    ),
    "log1p_exp": (
        "y_i = log1p(exp(z_i))",
        "e_i = exp(z_i); y_i = log1p(e_i)",
        "softplus",
        lambda u: mpmath.log(1 + mpmath.exp(u)),
        mp_sigmoid,
    ),
    "reciprocal_one_plus_exp": (
        "y_i = 1 / (1 + exp(-z_i))",
        "e_i = exp(-z_i); y_i = 1 / (1 + e_i)",
        "sigmoid",
        mp_sigmoid,
        lambda u: mp_sigmoid(u) * mp_sigmoid(-u),
    ),
    "reciprocal_one_plus_exp, scaled": (  # the gradient was inf / inf = NaN from z = 710
        "y_i = 1 / (2 + 3 exp(z_i))",
        "e_i = exp(z_i); y_i = 1 / (2 + 3 e_i)",
        "sigmoid",
        lambda u: 1 / (2 + 3 * mpmath.exp(u)),
        lambda u: -3 * mpmath.exp(u) / (2 + 3 * mpmath.exp(u)) ** 2,
    ),
    "exp_times_sigmoid": (
        "y_i = exp(z_i) / (1 + exp(z_i))",
        "e_i = exp(z_i); d_i = 1 + e_i; y_i = e_i / d_i",
        "sigmoid",
        mp_sigmoid,
        lambda u: mp_sigmoid(u) * mp_sigmoid(-u),
    ),
    "log_of_product": (
        "y_i = log(2 sigmoid(z_i) exp(z_i))",
        "s_i = sigmoid(z_i); e_i = exp(z_i); y_i = log(2 s_i e_i)",
        "softplus",
        lambda u: mpmath.log(2) + u - mpmath.log(1 + mpmath.exp(-u)),
        lambda u: 1 + mp_sigmoid(-u),
    ),
    "log_of_sigmoid_polynomial": (  # the log of sigmoid's derivative: -inf from z = 37 before
        "y_i = log(sigmoid(z_i) (1 - sigmoid(z_i)))",
        "s_i = sigmoid(z_i); y_i = log(s_i (1 - s_i))",
        "softplus",
        lambda u: -mpmath.log(1 + mpmath.exp(-u)) - mpmath.log(1 + mpmath.exp(u)),
        lambda u: mp_sigmoid(-u) - mp_sigmoid(u),
    ),
    "log_of_sigmoid_polynomial, log-odds": (
        "y_i = log(sigmoid(z_i) / (1 - sigmoid(z_i)))",
        "s_i = sigmoid(z_i); y_i = log(s_i / (1 - s_i))",
        None,
        lambda u: u,
        lambda u: mpmath.mpf(1),
    ),
    "log_of_sigmoid_polynomial, 1 - s^2": (
        "y_i = log(1 - sigmoid(z_i)^2)",
        "s_i = sigmoid(z_i); y_i = log(1 - s_i^2)",
        "softplus",
        lambda u: -mpmath.log(1 + mpmath.exp(u)) + mpmath.log(1 + mp_sigmoid(u)),
        lambda u: -2 * mp_sigmoid(u) ** 2 / (1 + mp_sigmoid(u)),
    ),
    "log_one_plus_tanh": (
        "y_i = log(1 + tanh(z_i))",
        "t_i = tanh(z_i); y_i = log(1 + t_i)",
        "softplus",
        lambda u: mpmath.log(2) - mpmath.log(1 + mpmath.exp(-2 * u)),
        lambda u: 2 * mp_sigmoid(-2 * u),
    ),
    "log_one_plus_tanh, minus": (
        "y_i = log(1 - tanh(z_i))",
        "t_i = tanh(z_i); y_i = log(1 - t_i)",
        "softplus",
        lambda u: mpmath.log(2) - mpmath.log(1 + mpmath.exp(2 * u)),
        lambda u: -2 * mp_sigmoid(2 * u),
    ),
    "sinh_over_cosh": (  # the program's gradient was 1 at z = 480, where sech^2 is 1e-417
        "y_i = sinh(z_i) / cosh(z_i)",
        "s_i = sinh(z_i); c_i = cosh(z_i); y_i = s_i / c_i",
        "tanh",
        mpmath.tanh,
        lambda u: mpmath.sech(u) ** 2,
    ),
    "log_exp": (
        "y_i = log(exp(z_i))",
        "e_i = exp(z_i); y_i = log(e_i)",
        None,
        lambda u: u,
        lambda u: mpmath.mpf(1),
    ),
}


def _elementwise_points(rule):
    # log(cosh): near 0 the value has an absolute error of an ulp of 1 (as log(cosh(z)) has):
    # compared at points where that is within the relative tolerance, and near 0 separately
    return (
        EXTREME[np.abs(EXTREME) > 1]
        if rule in ("log_cosh", "log_add_exp, cosh by hand", "log_one_minus_tanh_squared")
        else EXTREME
    )


@pytest.mark.parametrize("form", [0, 1], ids=["statement", "program"])
@pytest.mark.parametrize("rule", sorted(ELEMENTWISE))
def test_elementwise_rule_is_recognised_and_right_at_extreme_inputs(rule, form):
    source, call = ELEMENTWISE[rule][form], ELEMENTWISE[rule][2]
    value_of, slope_of = ELEMENTWISE[rule][3], ELEMENTWISE[rule][4]
    text = compiled_text(source)
    assert "log(" not in re.sub(r"log\([0-9.]+\)", "", text), text  # the log is gone (a number's may stay)
    assert "exp(" not in text or rule == "log_exp", text  # and the exp that overflows
    if call is not None:
        assert call in text, text
    z = _elementwise_points(rule)
    # log(1 - s^2) below u = -37 is -s^2 (1e-35 at u = -40) as -softplus(u) + log1p(s): two terms
    # of 4e-18 that cancel, exact to an ulp of s, not relatively
    atol = 1e-30 if rule == "log_of_sigmoid_polynomial, 1 - s^2" else 1e-300
    close(einderiv.evaluate(source, z=z), [value_of(u) for u in mp(z)], atol=atol)
    jacobian = einderiv.jacobian(source, "z")(z=z)
    close(np.diag(jacobian), [slope_of(u) for u in mp(z)], atol=1e-300)


def test_log_cosh_near_zero_has_an_absolute_error_of_an_ulp_and_a_smooth_hessian():
    z = np.array([-0.5, -1e-3, 0.0, 1e-3, 0.5])
    close(einderiv.evaluate("y_i = log(cosh(z_i))", z=z), [mpmath.log(mpmath.cosh(u)) for u in mp(z)], atol=1e-15)
    close(np.diag(einderiv.jacobian("y_i = log(cosh(z_i))", "z")(z=z)), [mpmath.tanh(u) for u in mp(z)], atol=1e-15)
    hessian = einderiv.hessian("f = log(cosh(z_i))", "z")(z=z)  # 1 - tanh^2, 1 at 0 (no |z| kink)
    close(np.diag(hessian), [1 / mpmath.cosh(u) ** 2 for u in mp(z)], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("form", ["y_i = log(1 + z_i)", "u_i = 1 + z_i; y_i = log(u_i)"])
def test_log_one_plus_is_log1p(form):
    assert "log1p(z_i)" in compiled_text(form)
    z = np.array([-0.75, -1e-12, 1e-300, 3e-17, 1e-10, 0.5, 1e300])
    close(einderiv.evaluate(form, z=z), [mpmath.log(1 + u) for u in mp(z)])
    close(np.diag(einderiv.jacobian(form, "z")(z=z)), [1 / (1 + u) for u in mp(z)])


# -- forms with a domain or an exp that stays: value, gradient and Hessian at z = ±1000 ------------

#: the points the rows below are checked at (where in the row's domain)
POINTS = np.array([-1000.0, -800.0, -40.0, -1.0, 0.0, 1e-10, 1e-6, 1.0, 40.0, 800.0, 1000.0])


def mp_power_of_a_plus_b_exp(a, b, s, p):
    """mpmath's (a + b exp(s u))^p and its first two derivatives in u:
    p b s e (a + b e)^(p - 1) and p b s^2 e (a + b e)^(p - 1) + p (p - 1) b^2 s^2 e^2 (a + b e)^(p - 2)."""
    a, b, s, p = (mpmath.mpf(v) for v in (a, b, s, p))

    def base(u):
        return a + b * mpmath.exp(s * u)

    return (
        lambda u: base(u) ** p,
        lambda u: p * b * s * mpmath.exp(s * u) * base(u) ** (p - 1),
        lambda u: (
            p * b * s**2 * mpmath.exp(s * u) * base(u) ** (p - 1)
            + p * (p - 1) * b**2 * s**2 * mpmath.exp(2 * s * u) * base(u) ** (p - 2)
        ),
    )


STABLE_FORMS = {
    # rule: (one statement, program, stable call, value(u), derivative(u), second derivative(u), domain)
    "log_exp_minus_one": (  # softplus's inverse: inf at z = 710 and NaN in every derivative before
        "y_i = log(exp(z_i) - 1)",
        "e_i = exp(z_i); y_i = log(e_i - 1)",
        "expm1",
        lambda u: mpmath.log(mpmath.exp(u) - 1),
        lambda u: 1 / (1 - mpmath.exp(-u)),
        lambda u: -mpmath.exp(-u) / (1 - mpmath.exp(-u)) ** 2,
        lambda u: u > 0,
    ),
    "log_exp_minus_one, expm1": (  # the same function written with expm1: inf from z = 710 before
        "y_i = log(expm1(z_i))",
        "e_i = expm1(z_i); y_i = log(e_i)",
        "expm1",
        lambda u: mpmath.log(mpmath.expm1(u)),
        lambda u: 1 / (1 - mpmath.exp(-u)),
        lambda u: -mpmath.exp(-u) / (1 - mpmath.exp(-u)) ** 2,
        lambda u: u > 0,
    ),
    "log_exp_minus_one, scaled": (
        "y_i = log(3 exp(z_i) - 2)",
        "e_i = exp(z_i); y_i = log(3 e_i - 2)",
        "expm1",
        lambda u: mpmath.log(3 * mpmath.exp(u) - 2),
        lambda u: 3 * mpmath.exp(u) / (3 * mpmath.exp(u) - 2),
        lambda u: -6 * mpmath.exp(u) / (3 * mpmath.exp(u) - 2) ** 2,
        lambda u: u >= 1,  # near 0 the value is log(1 + 3z), which 3 exp(z) - 2 rounds as the form does
    ),
    "power_of_exp": (  # the sigmoid as 1 / (1 + 1 / exp(z)): a NaN derivative at z = -800 before
        "y_i = 1 / (1 + 1 / exp(z_i))",
        "e_i = exp(z_i); y_i = 1 / (1 + 1 / e_i)",
        "sigmoid",
        lambda u: 1 / (1 + mpmath.exp(-u)),
        lambda u: mpmath.exp(-u) / (1 + mpmath.exp(-u)) ** 2,
        lambda u: mpmath.exp(-u) * (mpmath.exp(-u) - 1) / (1 + mpmath.exp(-u)) ** 3,
        lambda u: True,
    ),
    "log_of_scaled_sum": (  # a probit-like 0.5 (1 + tanh(z)): -inf from z = -19 before
        "y_i = log(0.5 (1 + tanh(z_i)))",
        "p_i = 0.5 (1 + tanh(z_i)); y_i = log(p_i)",
        "softplus",
        lambda u: -mpmath.log1p(mpmath.exp(-2 * u)),  # log((1 + tanh(u)) / 2), without tanh's rounding to -1
        lambda u: 2 / (1 + mpmath.exp(2 * u)),
        lambda u: -(mpmath.sech(u) ** 2),
        lambda u: True,
    ),
    "log_of_scaled_sum, minus": (  # the probit-like 1 - p = 0.5 (1 - tanh(z)): -inf from z = 19 before
        "y_i = log(0.5 (1 - tanh(z_i)))",
        "p_i = 0.5 (1 + tanh(z_i)); y_i = log(1 - p_i)",
        "softplus",
        lambda u: -mpmath.log1p(mpmath.exp(2 * u)),  # log((1 - tanh(u)) / 2), without tanh's rounding to 1
        lambda u: -2 / (1 + mpmath.exp(-2 * u)),
        lambda u: -(mpmath.sech(u) ** 2),
        lambda u: True,
    ),
    "log_of_common_factor": (  # sigmoid(-z)^-2 is (1 + exp(z))^2: NaN at |z| = 1000 before
        "y_i = log(sigmoid(z_i) / sigmoid(-z_i)^2)",
        "p_i = sigmoid(z_i); q_i = sigmoid(-z_i); y_i = log(p_i / q_i^2)",
        "softplus",
        lambda u: u + mpmath.log1p(mpmath.exp(u)),
        lambda u: 1 + mp_sigmoid(u),
        lambda u: mp_sigmoid(u) * mp_sigmoid(-u),
        lambda u: True,
    ),
    "log_sinh": (  # inf at z = 711 and NaN in every derivative before
        "y_i = log(sinh(z_i))",
        "s_i = sinh(z_i); y_i = log(s_i)",
        "expm1",
        lambda u: mpmath.log(mpmath.sinh(u)),
        mpmath.coth,
        lambda u: -1 / mpmath.sinh(u) ** 2,
        lambda u: u > 0,
    ),
    "reciprocal_one_plus_exp, fractional": (  # a NaN gradient from z = 710 before
        "y_i = (2 + exp(z_i))^-0.5",
        "e_i = exp(z_i); y_i = (2 + e_i)^-0.5",
        "softplus",
        *mp_power_of_a_plus_b_exp(2, 1, 1, -0.5),
        lambda u: True,
    ),
    "reciprocal_one_plus_exp, fractional, a = 1": (  # sigmoid(-z)^0.5: 0 for e^-400 at z = 800 before
        "y_i = (1 + exp(z_i))^-0.5",
        "e_i = exp(z_i); y_i = (1 + e_i)^(-1/2)",
        "softplus",
        *mp_power_of_a_plus_b_exp(1, 1, 1, -0.5),
        lambda u: True,
    ),
    "reciprocal_one_plus_exp, fractional, scaled": (
        "y_i = (0.5 + 3 exp(-z_i))^-1.5",
        "e_i = exp(-z_i); y_i = (0.5 + 3 e_i)^-1.5",
        "softplus",
        *mp_power_of_a_plus_b_exp(0.5, 3, -1, -1.5),
        lambda u: True,
    ),
}


def summed(source: str) -> str:
    """The program with its last statement ``y_i = rhs`` summed: ``f = sum_i(rhs)``."""
    *before, last = source.split("; ")
    return "; ".join([*before, f"f = sum_i({last.split('=', 1)[1].strip()})"])


@pytest.mark.parametrize("form", [0, 1], ids=["statement", "program"])
@pytest.mark.parametrize("rule", sorted(STABLE_FORMS))
def test_stable_form_is_right_to_its_second_derivative_at_extreme_inputs(rule, form):
    """Value, derivative and second derivative against mpmath at z = ±1000, ±800, ±40, ±1, 0
    (where in the domain), in one statement and through an intermediate, which must give the
    same numbers.  The exp these forms keep is one that only underflows there (``exp(-z)``), or
    one of a softplus, whose exponent is never large and positive."""
    source, call, value_of, slope_of, curve_of, inside = STABLE_FORMS[rule][form], *STABLE_FORMS[rule][2:]
    text = compiled_text(source)
    assert call in text and "log(" not in re.sub(r"log\([0-9.]+\)|log\(-expm1\(", "", text), text
    assert "sinh(" not in text and "(1 + " not in text and "(2 + " not in text and "- 1)" not in text, text
    z = np.array([u for u in POINTS if inside(u)])
    close(einderiv.evaluate(source, z=z), [value_of(u) for u in mp(z)], atol=1e-300)
    close(np.diag(einderiv.jacobian(source, "z")(z=z)), [slope_of(u) for u in mp(z)], atol=1e-300)
    close(einderiv.hessian_diag(summed(source), "z")(z=z), [curve_of(u) for u in mp(z)], atol=1e-300)
    other = STABLE_FORMS[rule][1 - form]
    np.testing.assert_array_equal(einderiv.evaluate(source, z=z), einderiv.evaluate(other, z=z))


# -- log(exp(a) + exp(b)) ---------------------------------------------------------------------------

LOG_ADD_EXP = ["y_i = log(exp(a_i) + exp(b_i))", "e_i = exp(a_i) + exp(b_i); y_i = log(e_i)"]
PAIRS = [(-1000.0, 1000.0), (1000.0, 1000.0), (-1000.0, -1000.0), (1000.0, -1000.0), (-40.0, 20.0), (0.5, 0.25)]


@pytest.mark.parametrize("source", LOG_ADD_EXP, ids=["statement", "program"])
def test_log_add_exp_is_softplus_of_the_difference_and_right_at_extreme_inputs(source):
    text = compiled_text(source)
    assert "softplus(" in text and "exp(" not in text, text
    a, b = (np.array(column) for column in zip(*PAIRS))
    expected = [mpmath.log(mpmath.exp(p) + mpmath.exp(q)) for p, q in zip(mp(a), mp(b))]
    close(einderiv.evaluate(source, a=a, b=b), expected)
    for wrt, own, other in (("a", a, b), ("b", b, a)):
        slope = np.diag(einderiv.jacobian(source, wrt)(a=a, b=b))
        close(slope, [mp_sigmoid(p - q) for p, q in zip(mp(own), mp(other))])  # sigmoid(a - b): no 1 - s


# -- softmax, log-softmax, log-sum-exp --------------------------------------------------------------

LOGITS = np.array([1000.0, -1000.0, 999.0, 0.5])
WEIGHTS = np.array([0.25, 0.5, 0.125, 0.125])


def mp_logsumexp(z):
    return mpmath.log(mpmath.fsum(mpmath.exp(u) for u in z))


def mp_softmax(z):
    lse = mp_logsumexp(z)
    return [mpmath.exp(u - lse) for u in z]


SOFTMAX = [
    "p_k = exp(z_k) / sum_j(exp(z_j))",
    "e_k = exp(z_k); p_k = e_k / sum_j(e_j)",
    "e_k = exp(z_k); s = sum_j(e_j); p_k = e_k / s",
]


@pytest.mark.parametrize(
    "kind, source, wrt, text",
    [
        ("grad", "L = logsumexp_k(z_k)", "z", "dL/dz_i = softmax_i(z_i)"),
        ("hessian", "L = logsumexp_k(z_k)", "z", "d2L/dz_i dz_j = (delta_ij - softmax_j(z_j)) softmax_i(z_i)"),
        ("grad", "L = sum_n(logsumexp_k(Z_nk))", "Z", "dL/dZ_ij = softmax_j(Z_ij)"),
        ("grad", "L = -Y_nk log(softmax_k(X_nd W_dk))", "W", "dL/dW_ij = -Y_nj X_ni + Y_nk softmax_j(X_nd W_dj) X_ni"),
    ],
)
def test_a_derivative_prints_a_softmax_as_the_softmax_it_is(kind, source, wrt, text):
    """The derivative of a logsumexp is a softmax, exp(z_i - logsumexp_k(z_k)) in the normal form,
    and it printed as that exp; it prints as ``softmax_i(z_i)``, as a textbook writes it, and the
    text read back gives the same numbers (against NumPy's max-shifted softmax)."""
    derivative = getattr(einderiv, kind)(source, wrt)
    assert str(derivative) == text
    rng = np.random.default_rng(4)
    z, Z, X, W = rng.normal(size=4), 3 * rng.normal(size=(5, 4)), rng.normal(size=(5, 2)), rng.normal(size=(2, 4))
    Y = np.eye(4)[[0, 3, 1, 1, 2]]
    arrays = {name: value for name, value in {"z": z, "Z": Z, "X": X, "W": W, "Y": Y}.items() if f"{name}_" in source}
    again = einderiv.compile(text)
    np.testing.assert_allclose(again(**arrays), derivative(**arrays), rtol=1e-13)

    def softmax(v):
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    if source == "L = logsumexp_k(z_k)":
        expected = softmax(z) if kind == "grad" else np.diag(softmax(z)) - np.outer(softmax(z), softmax(z))
        np.testing.assert_allclose(derivative(z=z), expected, rtol=1e-13)


@pytest.mark.parametrize("source", SOFTMAX, ids=["statement", "program", "program with the sum named"])
def test_hand_written_softmax_is_the_max_shifted_softmax(source):
    # exp(z_k - logsumexp_j(z_j)), which a softmax is lowered to, printed as the softmax it is
    assert compiled_text(source) == "softmax_k(z_k)"
    for z in (LOGITS, -LOGITS):
        p = mp_softmax(mp(z))
        close(einderiv.evaluate(source, z=z), p, atol=1e-300)
        expected = [[p[k] * ((k == i) - p[i]) for i in range(len(z))] for k in range(len(z))]
        close(einderiv.jacobian(source, "z")(z=z), expected, atol=1e-300)


LOG_SOFTMAX = {
    "log_softmax": ["f = -y_k log(softmax_k(z_k))", "p_k = softmax_k(z_k); f = -y_k log(p_k)"],
    "log_of_hand_written_softmax": [
        "f = -y_k log(exp(z_k) / sum_j(exp(z_j)))",
        "e_k = exp(z_k); p_k = e_k / sum_j(e_j); f = -y_k log(p_k)",
    ],
    "log_sum_exp": ["f = log(sum_j(exp(z_j)))", "e_j = exp(z_j); f = log(sum_j(e_j))"],
}


@pytest.mark.parametrize("form", [0, 1], ids=["statement", "program"])
@pytest.mark.parametrize("case", sorted(LOG_SOFTMAX))
def test_log_softmax_and_log_sum_exp_are_right_at_extreme_inputs(case, form):
    source = LOG_SOFTMAX[case][form]
    text = compiled_text(source)
    assert "logsumexp_" in text and "exp(z" not in text.replace("logsumexp_", ""), text
    for z in (LOGITS, -LOGITS):
        p, lse = mp_softmax(mp(z)), mp_logsumexp(mp(z))
        if case == "log_sum_exp":
            value, gradient = lse, p
        else:
            y = mp(WEIGHTS)
            value = -mpmath.fsum(w * (u - lse) for w, u in zip(y, mp(z)))
            gradient = [-w + mpmath.fsum(y) * q for w, q in zip(y, p)]
        close(einderiv.evaluate(source, z=z, y=WEIGHTS) if "y_" in source else einderiv.evaluate(source, z=z), [value])
        arrays = {"z": z, "y": WEIGHTS} if "y_" in source else {"z": z}
        close(einderiv.grad(source, "z")(**arrays), gradient, atol=1e-300)


#: log of a sum whose parts are exps, positive constants and sums of exps (a logsumexp's exp):
#: a softmax with a reference class, with a background logit, both directions.  Each was inf (or
#: -inf) with a NaN gradient at logits of 800 before 2026-12-05 (found by a meaning hunt).
LOG_OF_SUMS_OF_EXPS = {
    "reference class": (
        ["f = log(1 + sum_k(exp(z_k)))", "e_k = exp(z_k); f = log(1 + sum_k(e_k))", "f = log1p(sum_k(exp(z_k)))"],
        lambda z, b: mpmath.log(1 + mpmath.fsum(mpmath.exp(u) for u in z)),
    ),
    "background logit": (
        ["f = log(sum_k(exp(z_k)) + exp(b))", "s = sum_k(exp(z_k)); f = log(s + exp(b))"],
        lambda z, b: mpmath.log(mpmath.fsum(mpmath.exp(u) for u in z) + mpmath.exp(b)),
    ),
    "a mean, reference class": (  # (a reviewer's find: still inf after the sums were read)
        ["f = log(1 + mean_k(exp(z_k)))", "e_k = exp(z_k); f = log1p(mean_k(e_k))"],
        lambda z, b: mpmath.log(1 + mpmath.fsum(mpmath.exp(u) for u in z) / len(z)),
    ),
    "both directions, scaled": (
        ["f = log(sum_k(exp(z_k)) + 2 sum_k(exp(-z_k)))", "e_k = exp(z_k); f = log(sum_k(e_k) + 2 sum_k(1 / e_k))"],
        lambda z, b: mpmath.log(mpmath.fsum(mpmath.exp(u) + 2 * mpmath.exp(-u) for u in z)),
    ),
}


@pytest.mark.parametrize(
    "case, source", [(case, source) for case, (forms, _) in LOG_OF_SUMS_OF_EXPS.items() for source in forms]
)
@pytest.mark.parametrize(
    "z, b", [([800.0, 0.0, -800.0], 1.0), ([-800.0, -805.0, -790.0], -795.0), ([0.3, -1.2, 2.0], 0.5)]
)
def test_a_log_of_exps_and_sums_of_exps_is_right_to_its_hessian_at_extreme_logits(case, source, z, b):
    exact = LOG_OF_SUMS_OF_EXPS[case][1]
    z = np.array(z)
    arrays = {"z": z, "b": np.float64(b)} if "b)" in source else {"z": z}
    at = mp(z)

    def f(*u):
        return exact(list(u), mpmath.mpf(b))

    value = f(*at)
    gradient = [mpmath.diff(f, at, tuple(int(k == j) for k in range(3))) for j in range(3)]
    orders = [[tuple(int(k == i) + int(k == j) for k in range(3)) for j in range(3)] for i in range(3)]
    hessian = [[mpmath.diff(f, at, order) for order in row] for row in orders]
    close(einderiv.evaluate(source, arrays), [value], rtol=1e-13)
    close(einderiv.grad(source, "z")(arrays), gradient, rtol=1e-12, atol=1e-300)
    close(einderiv.hessian(source, "z")(arrays), hessian, rtol=1e-10, atol=1e-15)


def test_a_log_of_sums_of_exps_at_complex_inputs_is_an_error_not_a_value_off_by_2_pi_i():
    """The rewritten forms are softplus of logsumexp differences, which hold for complex values
    only up to 2 pi i (``log(exp(a) + exp(b)) = a + softplus(b - a)`` is log 2 + 4i at a = b = 4i,
    where the principal log is log 2 + (4 - 2 pi)i): softplus refuses complex values, so these
    stop with einderiv's error rather than give a value on another branch."""
    z = np.array([0.3 + 0.2j, -1 + 0.5j, 0.1 - 0.3j])
    for source, arrays in [
        ("f = log(1 + sum_k(exp(z_k)))", {"z": z}),
        ("f = log(sum_k(exp(z_k)) + exp(b))", {"z": z, "b": 0.2 + 4j}),
        ("f = log(exp(a) + exp(b))", {"a": 4j, "b": 4j}),
    ]:
        # refused by softplus or, first, by the logsumexp it reads (defined there only up to 2 pi i)
        with pytest.raises(einderiv.EvaluationError, match="(softplus|logsumexp) cannot be evaluated at complex128"):
            einderiv.evaluate(source, arrays)


# -- sigmoid(-q) stays as written -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["y_i = sigmoid(-q_i)", "m_i = -q_i; y_i = sigmoid(m_i)"])
def test_sigmoid_of_a_negated_argument_is_right_to_1e_12_relative(form):
    # (sigmoid's derivative is written sigmoid(u) - sigmoid(u)^2, which is 0 for u > 37: at
    # q = -37 here; the value is right there too)
    q = np.array([36.0, 37.0, 38.0, 100.0, 700.0, 0.5, -3.0])
    close(einderiv.evaluate(form, q=q), [mp_sigmoid(-u) for u in mp(q)], rtol=1e-12, atol=0)
    both = np.array([-700.0, -38.0, -37.0, -36.0])
    close(einderiv.evaluate(form, q=both), [mp_sigmoid(-u) for u in mp(both)], rtol=1e-12, atol=0)
    slope = np.diag(einderiv.jacobian(form, "q")(q=q))
    close(slope, [-mp_sigmoid(u) * mp_sigmoid(-u) for u in mp(q)], rtol=1e-12, atol=0)


def test_sigmoid_of_a_negated_argument_prints_as_written():
    assert compiled_text("y_i = sigmoid(-q_i)") == "sigmoid(-q_i)"
    assert str(einderiv.grad("f = softplus(q)", "q")) == "df/dq = sigmoid(q)"
    assert str(einderiv.grad("f = softplus(-q)", "q")) == "df/dq = -sigmoid(-q)"


def test_logistic_gradient_still_collects_to_sigmoid_minus_y():
    source = "L = -y_n log(sigmoid(X_nd w_d)) - (1 - y_n) log(1 - sigmoid(X_nd w_d))"
    assert str(einderiv.grad(source, "w")) == "dL/dw_i = (sigmoid(X_nd w_d) - y_n) X_ni"


# -- sigmoid's implementation -----------------------------------------------------------------------


def test_sigmoid_is_accurate_to_a_few_ulp_everywhere():
    rng = np.random.default_rng(1)
    x = np.concatenate([[-745.0, -700.0, -40.0, -37.0, -33.28, -20.0, -1e-300, 0.0, 20.0, 40.0, 700.0],
                        rng.normal(0, 30, 500)])  # fmt: skip
    value = einderiv.evaluate("y_i = sigmoid(x_i)", x=x)
    reference = np.array([float(mp_sigmoid(u)) for u in mp(x)])
    ulps = np.abs(value - reference) / np.spacing(reference)
    assert ulps.max() <= 4, (ulps.max(), x[ulps.argmax()])
    special = einderiv.evaluate("y_i = sigmoid(x_i)", x=np.array([np.inf, -np.inf, -800.0, 800.0, np.nan]))
    assert special[0] == 1 and special[1] == 0 and special[2] == 0 and special[3] == 1 and np.isnan(special[4])


# -- ordinary inputs: central finite differences ----------------------------------------------------

SCALED_LOG_SUM_EXP = [
    "y = log(sum_k(0.25 exp(z_k)))",
    "y = log(sum_k(exp(z_k)) / 4)",
    "e_k = exp(z_k); y = log(sum_k(e_k) / 4)",
    "y = log(mean_k(exp(z_k)))",
    "e_k = exp(z_k); y = log(mean_k(e_k))",
]


@pytest.mark.parametrize("source", SCALED_LOG_SUM_EXP)
@pytest.mark.parametrize("shift", [0.0, -800.0, 800.0])
def test_a_log_of_a_scaled_sum_of_exps_is_a_log_sum_exp(source, shift):
    """log_of_scaled_exp_sum: the value, gradient and Hessian diagonal of log((1/4) sum exp(z))
    against mpmath where exp(z) overflows or underflows (inf, -inf and NaN before); a mean's 1/4
    too, as the log of a count (inf and NaN at z = ±800 before)."""
    z = np.array([0.3, -1.1, 2.0, 0.7]) + shift
    zs = mp(z)
    p = mp_softmax(zs)
    close(einderiv.evaluate(source, z=z), mp_logsumexp(zs) - mpmath.log(4))
    close(einderiv.grad(source, "z")(z=z), p)
    close(einderiv.hessian_diag(source, "z")(z=z), [u * (1 - u) for u in p])
    assert "exp(z" not in compiled_text(source).replace("logsumexp", "")


MEANS = {
    # source: the count each output's mean divides by (N = 3, K = 5: of different lengths)
    "y = log(mean_n(mean_k(exp(L_nk))))": "all",
    "e_nk = exp(L_nk); y = log(mean_n(mean_k(e_nk)))": "all",
    "y = log(sum_k(mean_n(exp(L_nk))))": "n",
    "y_n = log(mean_k(exp(L_nk)))": "k",
    "e_nk = exp(L_nk); y_n = log(mean_k(e_nk))": "k",
}

#: the rows with an output per n, summed for their gradient
SUMMED_MEANS = {
    "y_n = log(mean_k(exp(L_nk)))": "y = sum_n(log(mean_k(exp(L_nk))))",
    "e_nk = exp(L_nk); y_n = log(mean_k(e_nk))": "e_nk = exp(L_nk); y = sum_n(log(mean_k(e_nk)))",
}


@pytest.mark.parametrize("source", sorted(MEANS))
@pytest.mark.parametrize("shift", [-800.0, 0.0, 800.0])
def test_a_log_of_a_mean_of_exps_is_a_log_sum_exp_less_the_log_of_its_count(source, shift):
    """log_of_scaled_exp_sum with a mean: ``log(mean_k(exp(l_k)))`` is ``logsumexp_k(l_k) -
    log(K)``, K named as the length of the axis the exponent writes k at, so that nested means
    over axes of different lengths each subtract their own count (a first version, which moved
    the count into the exponent by its letter, left it unsized there).  Value and gradient
    against mpmath at l = ±800 (inf and NaN before)."""
    rng = np.random.default_rng(3)
    L = rng.normal(size=(3, 5)) + shift
    rows = [mp(row) for row in L]
    if MEANS[source] == "k":
        lse = [mp_logsumexp(row) for row in rows]
        close(einderiv.evaluate(source, L=L), [u - mpmath.log(5) for u in lse])
        summed_source = SUMMED_MEANS[source]
        weights = [[mpmath.exp(u - m) for u in row] for row, m in zip(rows, lse)]
    else:
        lse = mp_logsumexp([u for row in rows for u in row])
        count = 15 if MEANS[source] == "all" else 3
        close(einderiv.evaluate(source, L=L), lse - mpmath.log(count))
        summed_source = source
        weights = [[mpmath.exp(u - lse) for u in row] for row in rows]
    close(einderiv.grad(summed_source, "L")(L=L), weights, atol=1e-300)
    assert "exp(L" not in compiled_text(source).replace("logsumexp", ""), compiled_text(source)


ORDINARY = [
    *(ELEMENTWISE[rule][form] for rule in sorted(ELEMENTWISE) for form in (0, 1)),
    *SCALED_LOG_SUM_EXP,
    *(STABLE_FORMS[rule][form] for rule in sorted(STABLE_FORMS) if "reciprocal" in rule for form in (0, 1)),
    "y_i = log(1 + z_i)",
    "u_i = 1 + z_i; y_i = log(u_i)",
    "y_i = log(exp(z_i) + exp(b_i))",
    "e_i = exp(z_i) + exp(b_i); y_i = log(e_i)",
    *SOFTMAX,
    *(source.replace("y_k", "b_k") for pair in LOG_SOFTMAX.values() for source in pair),
]


@pytest.mark.parametrize("source", ORDINARY)
def test_rule_matches_finite_differences_at_ordinary_inputs(source):
    rng = np.random.default_rng(7)
    arrays = {"z": rng.uniform(0.05, 0.9, 4) * rng.choice([-1, 1], 4), "b": rng.normal(size=4)}
    compiled = einderiv.compile(source)
    arrays = {k: v for k, v in arrays.items() if k in compiled.inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert_matches_fd(einderiv.jacobian(source, "z"), compiled, arrays, "z", rtol=1e-6, atol=1e-8)


# -- the catalogue itself ---------------------------------------------------------------------------


def test_every_rule_says_what_it_rewrites_why_it_is_stable_and_why_it_ends():
    assert rewrites.CATALOGUE
    for name, rule in rewrites.CATALOGUE.items():
        doc = inspect.getdoc(rule) or ""
        assert "Stable:" in doc, name
        assert "Terminates:" in doc, name
        assert "=" in doc.splitlines()[0] or "log(" in doc.splitlines()[0], name


def test_the_catalogue_covers_the_documented_rules():
    expected = {
        "log_det", "log_exp", "log_sigmoid", "log_one_minus_sigmoid", "log_one_plus_exp", "log_add_exp",
        "log_cosh", "log_one_plus", "exp_over_sum_exp", "sigmoid_pair", "one_minus_sigmoid", "logsumexp_parts",
        "log1p_exp", "reciprocal_one_plus_exp", "exp_times_sigmoid", "log_of_product", "log_one_minus_tanh_squared",
        "log_of_exp_products", "log_of_scaled_exp_sum", "log_of_sigmoid_polynomial", "log_one_plus_tanh",
        "log_exp_minus_one", "log_sinh", "log_of_scaled_sum", "power_of_exp", "sinh_over_cosh",
        "reciprocal_sigmoid", "log_of_common_factor", "expm1_of_softplus", "sigmoid_difference",
        "log_sigmoid_difference", "exp_times_exp", "log_of_sigmoid_weights", "softmax_sums_to_one",
        "log_one_minus_exp",
    }  # fmt: skip
    assert set(rewrites.CATALOGUE) == expected
    readme = (__import__("pathlib").Path(__file__).parent.parent / "README.md").read_text()
    for name in expected:
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize(
    "source", ["f = sum_i(log(sigmoid(z_i) (1 - sigmoid(z_i))))", "s_i = sigmoid(z_i); f = sum_i(log(s_i (1 - s_i)))"]
)
def test_the_log_of_sigmoids_derivative_has_a_right_hessian_at_extreme_logits(source):
    """A meaning hunter's find: the Hessian diagonal was 3x off at z = -40, 0 at z = 40 and NaN
    at 1000 (the value -inf there).  d^2/dz^2 log(s (1 - s)) = -2 s (1 - s), against mpmath."""
    z = EXTREME
    close(einderiv.hessian_diag(source, "z")(z=z), [-2 * mp_sigmoid(u) * mp_sigmoid(-u) for u in mp(z)], atol=1e-300)
    close(einderiv.grad(source, "z")(z=z), [mp_sigmoid(-u) - mp_sigmoid(u) for u in mp(z)], atol=1e-300)


@pytest.mark.parametrize(
    "source, a, b, p",
    [
        ("y_i = (1e-8 + exp(z_i))^-30", "1e-8", 1, -30),
        ("y_i = (0.001 + exp(z_i))^-120", "0.001", 1, -120),
        ("y_i = (1e-300 + exp(z_i))^-2", "1e-300", 1, -2),
        ("y_i = (2 + 3 exp(z_i))^-2", 2, 3, -2),
    ],
)
def test_a_scaled_reciprocal_never_splits_into_factors_that_overflow_apart(source, a, b, p):
    """A reviewer's find on a first version of the scaled rule: a^p sigmoid(...)^-p split
    (1e-8 + exp(z))^-30 into 1e240 times a power that underflowed (0 for 5.9e-105 at z = 8).
    Against mpmath at moderate z."""
    z = np.array([-3.0, 0.0, 5.0, 8.0, 10.0])
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    close(einderiv.evaluate(source, z=z), [(a + b * mpmath.exp(u)) ** p for u in mp(z)], rtol=1e-12)


@pytest.mark.parametrize(
    "source, exact",
    [
        (
            "y_i = log(sigmoid(z_i)^3 (1 - sigmoid(z_i))^2 (1 + sigmoid(z_i)^2))",
            lambda s: s**3 * (1 - s) ** 2 * (1 + s**2),
        ),
        ("y_i = log(sigmoid(z_i) (1 - sigmoid(z_i)) / (1 + exp(z_i)))", lambda s: s * (1 - s) ** 2),
        ("s_i = sigmoid(z_i); y_i = log(s_i - s_i^3)", lambda s: s - s**3),
    ],
)
def test_a_log_of_a_product_of_sigmoid_polynomials_is_split_when_multiplied_out(source, exact):
    """A reviewer's find on a first version: the rule read only a sum of powers of one sigmoid,
    so these, expanded into products with 1 - s and sigmoid(-z), stayed NaN at z = +-800.
    Value and derivative against mpmath at 1200 digits (1 - sigmoid(800) needs them)."""
    z = np.array([-800.0, -40.0, 0.7, 40.0, 800.0])
    with mpmath.workdps(1200):
        value = [mpmath.log(exact(mp_sigmoid(u))) for u in mp(z)]
        slope = [mpmath.diff(lambda v: mpmath.log(exact(mp_sigmoid(v))), u) for u in mp(z)]
        close(einderiv.evaluate(source, z=z), [float(v) for v in value], rtol=1e-12)
        close(np.diag(einderiv.jacobian(source, "z")(z=z)), [float(v) for v in slope], rtol=1e-10, atol=1e-300)


# -- a power of an exp under a log's sum -------------------------------------------------------------

EXP_POWERS = [
    # (source, its exponent per element as a function of (x, y), for the mpmath reference)
    ("f = log(sum_i(exp(x_i)^2))", lambda x, y: 2 * x),
    ("f = log(sum_i(exp(x_i) exp(x_i)))", lambda x, y: 2 * x),
    ("f = log(exp(x_i) exp(x_i))", lambda x, y: 2 * x),
    ("e_i = exp(x_i); f = log(sum_i(e_i e_i))", lambda x, y: 2 * x),
    ("e_i = exp(x_i); f = log(sum_i(e_i^3))", lambda x, y: 3 * x),
    ("f = log(sum_i(exp(x_i)^0.5))", lambda x, y: x / 2),
    ("f = log(sum_i(sqrt(exp(x_i))))", lambda x, y: x / 2),
    ("f = log(sum_i(exp(x_i) / exp(y_i)))", lambda x, y: x - y),
    ("f = log(sum_i(exp(x_i)^-2))", lambda x, y: -2 * x),
]


@pytest.mark.parametrize("source, exponent", EXP_POWERS, ids=[s for s, _ in EXP_POWERS])
@pytest.mark.parametrize("scale", [1.0, 800.0, -800.0])
def test_a_power_of_an_exp_in_a_log_sum_is_one_exp(source, exponent, scale):
    """A meaning hunter's find: ``log(sum_i(exp(x_i)^2))`` was inf at x = 800 (its gradient NaN)
    where ``log(sum_i(exp(2 x_i)))`` was 1600: the rule that merges a term's exps into one did
    not read a power of an exp (or a product of one with itself, which is a power by then).
    Value and gradient against mpmath, in one statement and through an intermediate."""
    gen = np.random.default_rng(3)
    x, y = scale * np.array([1.0, 0.999, 0.5]) + gen.normal(size=3), gen.normal(size=3)
    mpmath.mp.dps = 60
    try:
        terms = [mpmath.exp(exponent(mpmath.mpf(a), mpmath.mpf(b))) for a, b in zip(x, y)]
        slope = [exponent(1, 0) * t / sum(terms) for t in terms]
        value = float(mpmath.log(sum(terms)))
        slope = [float(s) for s in slope]
    finally:
        mpmath.mp.dps = 15
    arrays = {"x": x, "y": y} if "y_" in source else {"x": x}
    np.testing.assert_allclose(einderiv.evaluate(source, **arrays), value, rtol=1e-14)
    np.testing.assert_allclose(einderiv.grad(source, "x")(**arrays), slope, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(
    "source", ["y_i = log1p(expm1(x_i))", "y_i = log(1 + expm1(x_i))", "e_i = expm1(x_i); y_i = log1p(e_i)"]
)
def test_log1p_of_expm1_is_its_argument(source):
    """A meaning hunter's find: ``log1p(expm1(x))`` was -inf at x = -40 (expm1 rounds to -1) and
    ``log(1 + expm1(x))`` -inf at -1000 with a NaN derivative; each is x."""
    x = np.array([-1000.0, -40.0, -1.0, 1e-8, 1.0, 40.0, 700.0])
    np.testing.assert_array_equal(einderiv.evaluate(source, x=x), x)
    np.testing.assert_array_equal(einderiv.jacobian(source, "x")(x=x), np.eye(len(x)))


@pytest.mark.parametrize(
    "source, value, slope, curve",
    [
        (  # half a log-likelihood: -inf at z = -800 before, where log(sigmoid(z)^0.5) was right
            "y_i = log(sqrt(sigmoid(z_i)))",
            lambda u: mpmath.log(1 / (1 + mpmath.exp(-u))) / 2,
            lambda u: 1 / (2 * (1 + mpmath.exp(u))),
            lambda u: -mpmath.exp(u) / (2 * (1 + mpmath.exp(u)) ** 2),
        ),
        (
            "s_i = sigmoid(z_i); y_i = log(sqrt(s_i))",
            lambda u: mpmath.log(1 / (1 + mpmath.exp(-u))) / 2,
            lambda u: 1 / (2 * (1 + mpmath.exp(u))),
            lambda u: -mpmath.exp(u) / (2 * (1 + mpmath.exp(u)) ** 2),
        ),
        (  # inf at z = 800 before
            "y_i = log(sqrt(1 + exp(z_i)))",
            lambda u: mpmath.log(1 + mpmath.exp(u)) / 2,
            lambda u: 1 / (2 * (1 + mpmath.exp(-u))),
            lambda u: mpmath.exp(-u) / (2 * (1 + mpmath.exp(-u)) ** 2),
        ),
        (  # derivatives NaN (0 / 0) at z = -800 before; the value is 0 there, as sigmoid(-800) is
            "y_i = sqrt(sigmoid(z_i))",
            lambda u: mpmath.sqrt(1 / (1 + mpmath.exp(-u))),
            lambda u: mpmath.sqrt(1 / (1 + mpmath.exp(-u))) / (2 * (1 + mpmath.exp(u))),
            lambda u: mpmath.diff(lambda t: mpmath.sqrt(1 / (1 + mpmath.exp(-t))), u, 2),
        ),
    ],
)
def test_a_square_root_is_a_half_power_in_a_log_and_beside_its_argument(source, value, slope, curve):
    """A meaning hunter's find: ``sqrt(u)`` was not read as ``u^0.5`` by the log rules nor
    merged with u in a product, so the spelling users write most (``log(sqrt(...))``,
    ``sqrt(sigmoid(z))``) was -inf, inf or NaN where ``^0.5`` was right.  Against mpmath."""
    z = np.array([-800.0, -30.0, -1.0, 0.5, 30.0, 800.0])
    # (sqrt(sigmoid(-800)) is e^-400; sigmoid(-800) underflows to 0 and so does its root: 1e-150)
    floor = 1e-150 if source == "y_i = sqrt(sigmoid(z_i))" else 1e-300
    with mpmath.workdps(60):
        close(einderiv.evaluate(source, z=z), [value(u) for u in mp(z)], rtol=1e-11, atol=floor)
        close(np.diag(einderiv.jacobian(source, "z")(z=z)), [slope(u) for u in mp(z)], rtol=1e-11, atol=floor)
        close(einderiv.hessian_diag(summed(source), "z")(z=z), [curve(u) for u in mp(z)], rtol=1e-9, atol=floor)


def test_a_root_merges_only_with_an_argument_that_is_never_negative():
    """A reviewer's find: merging sqrt(x) sqrt(x) with x into x^2 made NaN (x < 0, NaN inputs)
    finite; NumPy's numbers are the reference, derivatives included."""
    x = np.array([-2.0, 0.0, np.nan, 3.0])
    with np.errstate(all="ignore"):
        for source, expected in (
            ("f_i = x_i sqrt(x_i) sqrt(x_i)", x * np.sqrt(x) * np.sqrt(x)),
            ("f_i = x_i^2 / sqrt(x_i)^4", x**2 / np.sqrt(x) ** 4),
            ("f_i = sqrt(x_i)^4 / x_i", np.sqrt(x) ** 4 / x),
        ):
            np.testing.assert_allclose(einderiv.evaluate(source, x=x), expected, rtol=1e-14)
        gradient = einderiv.grad("f = sum_i(x_i sqrt(x_i) sqrt(x_i))", "x")(x=np.array([-2.0, 3.0]))
    assert np.isnan(gradient[0]) and gradient[1] == pytest.approx(6.0, rel=1e-14)


@pytest.mark.parametrize(
    "source, reference",
    [
        ("f_i = exp(z_i)^0.5", lambda z: np.exp(z) ** 0.5),  # the principal root, not exp(z / 2)
        ("f_i = exp(z_i)^1.5", lambda z: np.exp(z) ** 1.5),
        ("e_i = exp(z_i); f_i = e_i^-0.25", lambda z: np.exp(z) ** -0.25),
        ("f_i = 1 / exp(z_i)^2", lambda z: np.exp(-2 * z)),
        ("f_i = sqrt(sigmoid(z_i))", lambda z: np.sqrt(1 / (1 + np.exp(-z)))),
    ],
)
def test_powers_of_exps_and_sigmoids_keep_their_complex_values(source, reference):
    """A reviewer's find: exp(u)^p as exp(p u) took the wrong branch for a complex u with
    |Im u| > pi at a fractional p (the sign flipped), and sqrt(sigmoid(u)) written as an exp of
    a softplus could not be evaluated at complex numbers at all."""
    z = np.array([0.3 + 4j, -1.2 - 3.5j, 0.5 + 0.1j])
    np.testing.assert_allclose(einderiv.evaluate(source, z=z), reference(z), rtol=1e-13)


@pytest.mark.parametrize("program", [False, True], ids=["statement", "program"])
def test_the_sigmoids_higher_derivatives_keep_their_digits_near_zero_and_at_saturation(program):
    """sigmoid'' = s (1 - s) (1 - 2 s) was evaluated with 1 - 2 s as it reads, which cancels near
    u = 0 (8e-8 relative at u = 1e-10); it is s sigmoid(-u) tanh(-u/2).  Against mpmath, second
    and third derivatives, from u = 1e-12 to the saturated 40 and 800."""
    source = "s_i = sigmoid(z_i); f = sum_i(s_i)" if program else "f = sum_i(sigmoid(z_i))"
    z = np.array([1e-12, -1e-10, 1e-6, -0.3, 2.0, 40.0, -40.0, 800.0])
    with mpmath.workdps(50):
        sigmoid = lambda t: 1 / (1 + mpmath.exp(-t))  # noqa: E731
        second = [mpmath.diff(sigmoid, u, 2) for u in mp(z)]
        third = [mpmath.diff(sigmoid, u, 3) for u in mp(z)]
    close(einderiv.hessian_diag(source, "z")(z=z), second, rtol=1e-13)
    close(np.einsum("iii->i", einderiv.diff(source, ["z", "z", "z"])(z=z)), third, rtol=1e-12)


NEAR_ZERO = np.array([-1e-9, 1e-10, 3e-7, -0.5, 40.0, -1000.0, 1000.0])


@pytest.mark.parametrize(
    "source", ["y = sum_i(log(sigmoid(z_i) (1 - sigmoid(z_i))))", "s_i = sigmoid(z_i); y = sum_i(log(s_i (1 - s_i)))"]
)
def test_the_slope_of_the_log_of_sigmoids_slope_keeps_its_relative_accuracy_near_zero(source):
    """The slope of ``log(s (1 - s))`` is ``sigmoid(-z) - sigmoid(z)``, two numbers near 1/2 whose
    difference kept an ulp of 1/2 (1e-8 off relatively at z = 1e-9); it is ``-tanh(z / 2)``
    (``sigmoid_difference``).  Against mpmath at 50 digits."""
    with mpmath.workdps(50):
        value = mpmath.fsum(-mpmath.log1p(mpmath.exp(-u)) - mpmath.log1p(mpmath.exp(u)) for u in mp(NEAR_ZERO))
        slope = [-mpmath.tanh(u / 2) for u in mp(NEAR_ZERO)]
    assert float(einderiv.evaluate(source, z=NEAR_ZERO)) == pytest.approx(float(value), rel=1e-14)
    close(einderiv.grad(source, "z")(z=NEAR_ZERO), slope)


@pytest.mark.parametrize(
    "source",
    [
        "y_i = log(sigmoid(z_i) / (1 - sigmoid(z_i)))",
        "s_i = sigmoid(z_i); y_i = log(s_i / (1 - s_i))",
        "y_i = log(sigmoid(z_i) / sigmoid(-z_i))",
    ],
)
def test_the_log_odds_is_the_logit_itself(source):
    """``log(s / (1 - s))`` is z; it was ``softplus(z) - softplus(-z)``, z to an ulp of log 2
    (8e-8 off relatively at z = 1e-10)."""
    close(einderiv.evaluate(source, z=NEAR_ZERO), NEAR_ZERO, rtol=1e-15)
    close(np.diag(einderiv.jacobian(source, "z")(z=NEAR_ZERO)), np.ones(NEAR_ZERO.size), rtol=1e-15)


def test_exps_merge_only_as_a_quotient():
    """``exp_times_exp`` merges a quotient of exps (NaN at 800 / 800 as a product); a review found
    that merging every product lost digits: two exps of one sign at exact inputs in [300, 350]
    (``exp(fl(a + b))``: 5.7e-14 relative, the product 3e-16) and two softmaxes, whose steps it
    removed.  Those stay products."""
    assert compiled_text("f_i = exp(a_i) / exp(b_i)") == "exp(a_i - b_i)"
    assert compiled_text("f_i = exp(a_i) exp(b_i)") == "exp(a_i) exp(b_i)"
    # a number in an exponent has no sign that counts, and a merged pair merges again (a review's
    # find: exp(a_i - 1) / exp(b_i) and exp(a_i) exp(-b_i) exp(-c_i) stayed NaN at 800 / 800)
    a, b = np.array([800.0, 3.0]), np.array([800.0, 1.0])
    close(einderiv.evaluate("f_i = exp(a_i - 1) / exp(b_i)", a=a, b=b), [mpmath.exp(-1), mpmath.exp(1)])
    close(einderiv.evaluate("f_i = exp(a_i) / exp(b_i - 1)", a=a, b=b), [mpmath.exp(1), mpmath.exp(3)])
    triple = einderiv.evaluate("f_i = exp(a_i) exp(-b_i) exp(-c_i)", a=2 * a, b=b, c=a)
    close(triple, [1, mpmath.exp(2)])
    softmaxes = einderiv.compile("f = sum_k(softmax_k(z_k) softmax_k(w_k + z_k))")
    assert [step.kind for step in softmaxes.line.steps].count("softmax") == 2
    gen = np.random.default_rng(0)
    a, b = gen.uniform(300, 350, 6), gen.uniform(300, 350, 6)
    want = [mpmath.exp(mpmath.mpf(x) + mpmath.mpf(y)) for x, y in zip(a, b)]
    close(einderiv.evaluate("f_i = exp(a_i) exp(b_i)", a=a, b=b), want, rtol=1e-15)


# -- softmax_sums_to_one: a softmax's chain rule drops what is constant along its letter ----------


def mp_entropy_gradient(z) -> list:
    """The gradient of the entropy -sum_k(p_k log(p_k)) of p = softmax(z): -p_i (log(p_i) + H)."""
    z = [v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v)) for v in z]
    top = max(z)
    log_p = [v - top - mpmath.log(sum(mpmath.exp(w - top) for w in z)) for v in z]
    entropy = -sum(mpmath.exp(lp) * lp for lp in log_p)
    return [-mpmath.exp(lp) * (lp + entropy) for lp in log_p]


@pytest.mark.parametrize(
    "source", ["f = -softmax_k(z_k) log(softmax_k(z_k))", "p_k = softmax_k(z_k); f = -p_k log(p_k)"]
)
def test_the_entropy_gradient_is_exact_at_saturated_logits(source):
    """The chain rule p_i (g_i - sum_k(g_k p_k)) of g = -log(p) - 1 left c p_i - c sum_k(p_k) p_i
    for the 1: zero up to rounding, which swamped the true gradient from logits about 30 (1e-5
    off relatively at [30, 0, 1]; 0 for -3.7e-42 at [100, 0, -50]).  With sum_k(p_k) = 1 the two
    terms are gone."""
    gradient, hessian = einderiv.grad(source, "z"), einderiv.hessian(source, "z")
    assert str(gradient).splitlines()[-1].replace("dfdp", "dfdr").replace("p_", "r_") == (
        "df/dz_i = (dfdr_i - dfdr_k r_k) r_i"
    )
    for z in ([30.0, 0.0, 1.0], [100.0, 0.0, -50.0], [700.0, 0.0, 3.0], [-3.0, 0.5, 2.0]):
        close(gradient(z=np.array(z)), mp_entropy_gradient(z), rtol=1e-13)
        for j in range(3):  # a column of the Hessian: d/dt of the gradient along e_j, in mpmath

            def along(t, j=j, z=z):
                return mp_entropy_gradient([mpmath.mpf(v) + (t if k == j else 0) for k, v in enumerate(z)])

            column = [mpmath.diff(lambda t, i=i: along(t)[i], 0) for i in range(3)]
            got = hessian(z=np.array(z))[:, j]
            # (the Hessian's diagonal keeps p_i - p_i^2 for the top class: rounding of p_i ~ 1,
            # 1e-16 absolute, as jax has it)
            np.testing.assert_allclose(got, np.array(column, dtype=float), rtol=1e-9, atol=1e-15)


def test_a_softmax_summed_over_its_letter_is_one_in_a_derivative():
    z, Z, c = np.array([3.0, -1.0, 700.0]), np.random.default_rng(0).normal(size=(4, 3)), 2.5
    assert str(einderiv.diff("f = softmax_k(z_k)", "z")) == "df/dz_i = 0"
    assert np.all(einderiv.grad("f = softmax_k(z_k)", "z")(z=z) == 0)  # 1e-16s before
    # a batch index summed with it counts its rows: sum_n(sum_k(P_nk)) = N, exactly
    assert einderiv.grad("P_nk = softmax_k(Z_nk); f = c P_nk", "c")(Z=Z, c=c) == 4.0
    assert np.all(einderiv.grad("f = softmax_k(Z_nk) a_n", "a")(Z=Z, a=np.ones(4)) == 1.0)


@pytest.mark.parametrize(
    ("source", "reference"),
    [
        # s_k sums the N rows' softmaxes (rule 5): it sums to N over k, not to 1 (a review's find)
        ("s_k = softmax_k(Z_nk)\nf = w s_k a_k + w^2 s_k", lambda P, a, w: P.sum(0) @ a + 2 * w * P.sum()),
        ("s_k = softmax_k(Z_nk)\nf = w s_k", lambda P, a, w: P.sum()),
        # P_kk is the diagonal, which sums to tr(P), not to 1
        ("P_nk = softmax_k(Z_nk)\nf = w^2 P_kk", lambda P, a, w: 2 * w * np.trace(P)),
        # (a softmax of the diagonal itself sums to 1)
        ("f = w^2 softmax_k(Z_kk)", lambda P, a, w: 2 * w),
        # a softmax statement whose letter rule 5 sums: a number, t = 1 (a ValueError before)
        ("t = softmax_k(Z_nk)\nf = w t", lambda P, a, w: P.sum()),
    ],
)
def test_a_softmax_is_one_only_summed_over_its_own_letter_alone(source, reference):
    Z = np.random.default_rng(2).normal(size=(4, 4))
    a, w = np.arange(1.0, 5.0), 0.7
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)  # a softmax summed over its letter
        gradient = einderiv.diff(source, "w")
    arrays = {k: v for k, v in {"Z": Z, "a": a, "w": w}.items() if k in gradient.ranks}
    np.testing.assert_allclose(gradient(**arrays), reference(P, a, w), rtol=1e-13)
