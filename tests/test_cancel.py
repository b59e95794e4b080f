"""Cancelling a power of a one-variable sum against the numerator (einderiv.cancel).

Differentiating a quotient expands its numerator, so ``d/du (s / (1 - s))`` (s = sigmoid(u), the
function e^u) was four terms over (1 - s) and (1 - s)^2, printed ``s ((1 - s) / (1 - s) + ...)``
and NaN from u = 37 on, where 1 - s rounds to 0 in the expanded terms.  The references here are
mpmath at 50 digits and NumPy evaluations of the rational functions from their coefficients."""

from __future__ import annotations

import os
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einderiv
from einderiv.cancel import cancel_common_factors
from einderiv.ir import Tensor
from einderiv.normal import Apply, Poly, Term, simplify

mpmath.mp.dps = 50
EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "60"))
U = np.array([-700.0, -300.0, -40.0, -2.5, 0.0, 0.75, 36.0, 40.0, 300.0, 700.0])


def mp_values(function, order: int) -> np.ndarray:
    return np.array([float(mpmath.diff(function, mpmath.mpf(float(u)), order)) for u in U])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_the_derivatives_of_s_over_one_minus_s_are_e_to_the_u(order):
    """s / (1 - s) is e^u, and so is each derivative: one term ``sigmoid(u) / (1 - sigmoid(u))``,
    finite and right to 1e-12 up to u = 700 (it was NaN from u = 37 on at order 1)."""
    derivative = einderiv.diff("f = sigmoid(u) / (1 - sigmoid(u))", ["u"] * order)
    assert str(derivative).splitlines()[-1].endswith("= sigmoid(u) / (1 - sigmoid(u))")
    values = np.array([float(derivative(u=np.array(u))) for u in U])
    np.testing.assert_allclose(values, np.exp(U), rtol=1e-12)


@pytest.mark.parametrize(
    "order, closed_form",
    [(1, lambda u: mpmath.sinh(2 * u)), (2, lambda u: 2 * mpmath.cosh(2 * u)), (3, lambda u: 4 * mpmath.sinh(2 * u))],
)
def test_the_derivatives_of_one_over_one_minus_tanh_squared_are_those_of_cosh_squared(order, closed_form):
    """1 / (1 - tanh(u)^2) is cosh(u)^2; its derivatives sinh 2u, 2 cosh 2u, 4 sinh 2u print as one
    or two terms over (1 - tanh(u)^2), right to 1e-12 to |u| = 300 and infinite (not NaN) at 700."""
    derivative = einderiv.diff("f = 1 / (1 - tanh(u)^2)", ["u"] * order)
    assert len(derivative.program.definitions[-1].poly.terms) <= 2
    with np.errstate(over="ignore"):
        values = np.array([float(derivative(u=np.array(u))) for u in U])
    expected = np.array([float(closed_form(mpmath.mpf(float(u)))) for u in U])
    finite = np.abs(U) <= 300
    np.testing.assert_allclose(values[finite], expected[finite], rtol=1e-12)
    assert np.all(values[~finite] == expected[~finite])  # +-inf where cosh overflows


def test_the_program_form_cancels_in_its_statements_too():
    """Written as ``s = sigmoid(u); f = s / (1 - s)``, df/ds is one term ``1 / (1 - s)^2`` (it was
    ``1 / (1 - s) + s / (1 - s)^2``), and the gradient is e^u to u = 700."""
    gradient = einderiv.grad("s = sigmoid(u); f = s / (1 - s)", "u")
    assert "s / (1 - s)" in str(gradient).splitlines()[-1]
    values = np.array([float(gradient(u=np.array(u))) for u in U])
    np.testing.assert_allclose(values, np.exp(U), rtol=1e-12)


#: ``s`` as an intermediate that is a sigmoid (bounded: its polynomials cannot overflow)
BOUNDED_S = frozenset({("s", ("i",), Apply("sigmoid", Poly((Term(Fraction(1), (Tensor("z", ("i",)),)),), ("i",))))})


def test_nothing_cancels_where_the_division_is_not_exact():
    """``1 / (1 - s) + s`` does not collect over (1 - s) (the numerator 1 + s - s^2 has more
    terms): the poly is returned as it was."""
    s = Tensor("s", ("i",))
    base = Poly((Term(Fraction(1), ()), Term(Fraction(-1), (s,))), ("i",))
    poly = Poly((Term(Fraction(1), (Apply("pow", base, Fraction(-1)),)), Term(Fraction(1), (s,))), ("i",))
    assert cancel_common_factors(poly, BOUNDED_S) is poly


def _poly(coefficients) -> np.polynomial.Polynomial:
    return np.polynomial.Polynomial([float(c) for c in coefficients])


def _x_power(exponent: int) -> tuple:
    """The factors of x_i^exponent: none, x_i, or a power of x_i."""
    x = Tensor("x", ("i",))
    if exponent == 0:
        return ()
    if exponent == 1:
        return (x,)
    return (Apply("pow", Poly((Term(Fraction(1), (x,)),), ("i",)), Fraction(exponent)),)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.lists(st.integers(-3, 3), min_size=2, max_size=3).filter(lambda c: c[0] != 0 and any(c[1:])),
    quotient=st.lists(st.integers(-3, 3), min_size=1, max_size=3).filter(any),
    extra=st.lists(st.integers(-2, 2), min_size=1, max_size=2),
    power=st.integers(1, 3),
    shift=st.integers(-1, 1),
)
def test_cancelling_keeps_the_function(base, quotient, extra, power, shift):
    """A generated sum of terms c_e x_i^e / B(x_i)^k whose numerator over B^power is
    x^shift (q(x) B(x) + r(x)) B(x)^(power - 1): after cancelling, the printed text evaluates to
    the same rational function (NumPy from the coefficients) at random points away from B's
    roots, and has no more terms than before; with r = 0, no power of B is left."""
    B = Poly(tuple(Term(Fraction(c), _x_power(e)) for e, c in enumerate(base) if c), ("i",))
    b, q, r = _poly(base), _poly(quotient), _poly(extra)
    numerator = (q * b + r) * b ** (power - 1)  # over b^power, times x^shift
    terms = []
    for e, c in enumerate(numerator.coef):
        if c:  # c x^(e + shift) / b^power, written as c x^(e + shift) b^(power - k) / b^power per term
            factors = (*_x_power(e + shift), Apply("pow", B, Fraction(-power)))
            terms.append(Term(Fraction(int(round(c))), factors))
    poly = simplify(terms, ("i",), cancelling=False)
    bounded = frozenset({("x", ("i",), Apply("sigmoid", Poly((Term(Fraction(1), (Tensor("z", ("i",)),)),), ("i",))))})
    cancelled = cancel_common_factors(poly, bounded)  # x taken as bounded (a sigmoid), as in a program
    assert len(cancelled.terms) <= len(poly.terms)
    if not any(extra) and sum(1 for c in quotient if c) <= len(poly.terms):
        # q B^power over B^power: every power of B cancels, where q has no more terms than the sum
        # (-2 (1 + x^3) / (1 + x) stays: cancelled it is -2 (1 - x + x^2), three terms for two)
        assert not any(isinstance(f, Apply) and f.arg == B for t in cancelled.terms for f in t.factors)
    points = np.linspace(-2.3, 2.1, 23)
    # away from B's roots by what the power makes of them: the expanded sum's rounding is divided by
    # b^power (B = (1 + x)^2 cubed at |b| = 1e-3 is 1e-9, and the rounding 2e-9 there)
    points = points[np.abs(b(points)) ** power > 1e-3]
    expected = numerator(points) * points**shift / b(points) ** power
    for candidate in (poly, cancelled):
        text = f"f_i = {candidate} + 0 x_i" if candidate.terms else "f_i = 0 x_i"  # x sizes i
        got = einderiv.evaluate(text, x=points)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * max(1.0, np.max(np.abs(expected))))


def test_a_sum_only_the_cancelled_factors_carry_is_kept():
    """d/dc of ``sum_n(c^2 (1 - s_n^2) / (1 + s_n))`` (s = sigmoid(x)) is 2 c sum_n(1 - s_n): the
    quotient is 1 - s_n, whose 1 no longer writes n.  Cancelled, the sum over n was lost and the
    count was 1 (2 c (1 - ...) once; a review found it).  Such a group stays as it was."""
    x, c = np.array([0.1, -0.7, 2.0, 3.5]), np.array(0.7)
    s = 1 / (1 + np.exp(-x))
    gradient = einderiv.grad("f = sum_n(c^2 (1 - sigmoid(x_n)^2) / (1 + sigmoid(x_n)))", "c")
    np.testing.assert_allclose(gradient(x=x, c=c), 2 * c * (1 - s).sum(), rtol=1e-13)
    np.testing.assert_allclose(einderiv.compile(str(gradient))(x=x, c=c), 2 * c * (1 - s).sum(), rtol=1e-13)


def test_a_sum_in_an_unbounded_variable_is_not_multiplied_out():
    """Only a bounded variable (sigmoid, tanh, sin, cos) is cancelled over: the Jacobian of
    ``1 / (1 + x_i^2) - 1 / (1 + x_i^2)^2`` collected over (1 + x^2)^2 was x^2 / (1 + x^2)^2, inf /
    inf = NaN at x = 1e160 (a review found it); its terms apart give 0, right in float64.  Against
    the closed form 2 x (1 - x^2) / (1 + x^2)^3 in mpmath."""
    x = np.array([0.5, 1e160, -1e200])
    jacobian = einderiv.jacobian("f_i = 1 / (1 + x_i^2) - 1 / (1 + x_i^2)^2", "x")
    expected = [float(2 * v * (1 - v**2) / (1 + v**2) ** 3) for v in map(mpmath.mpf, x)]
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_allclose(np.diag(jacobian(x=x)), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "source, gradient, curvature",
    [
        ("f = sum_i((1 - x_i) log(1 - x_i))", "-1 - log1p(-x_j)", lambda x: 1 / (1 - x)),
        ("f = sum_i(-x_i log(x_i) - (1 - x_i) log(1 - x_i))", None, lambda x: -1 / x - 1 / (1 - x)),
        ("f = sum_i((2 - x_i) log(2 - x_i))", "-1 - log(2 - x_j)", lambda x: 1 / (2 - x)),
    ],
)
def test_a_numerator_that_divides_to_a_number_cancels_over_an_unbounded_variable(source, gradient, curvature):
    # the gradient printed -(1 - x_j) / (1 - x_j), and the Hessian of a binary entropy held
    # (1 - x) / (1 - x)^2 - 2 / (1 - x), two terms of 1e24 that lost 1e-4 at x = 1 - 1e-12
    x = np.array([1 - 1e-12, 1 - 2.0**-50, 0.3, 1e-12])
    derivative = einderiv.grad(source, "x")
    assert "/ (1 - x_j)" not in str(derivative) and "/ (2 - x_j)" not in str(derivative)
    if gradient is not None:
        assert str(derivative) == f"df/dx_j = {gradient}"
    hessian = einderiv.hessian(source, "x")
    exact = [float(curvature(mpmath.mpf(float(v)))) for v in x]
    np.testing.assert_allclose(np.diag(hessian(x=x)), exact, rtol=1e-14, atol=0)
    np.testing.assert_allclose(einderiv.hvp(source, "x")(x=x, v=np.ones(4)), exact, rtol=1e-14, atol=0)


def test_a_program_reads_its_intermediate_as_the_bounded_call():
    """``s = sigmoid(u); f = s / (1 - s)``: the chain rule writes sigmoid(u) beside s; both are the
    variable, so the program's derivatives are ``s / (1 - s)`` at every order, as the one-statement
    form's, with no adjoints of adjoints, and e^u to u = 700."""
    for order in (1, 2, 3):
        derivative = einderiv.diff("s = sigmoid(u); f = s / (1 - s)", ["u"] * order)
        assert str(derivative).splitlines()[1:] == [
            f"d{order if order > 1 else ''}f/{' '.join(['du'] * order)} = s / (1 - s)"
        ]
        values = np.array([float(derivative(u=np.array(u))) for u in U])
        np.testing.assert_allclose(values, np.exp(U), rtol=1e-12)


@pytest.mark.parametrize("s", [0.3, 8.0, 30.0])
def test_a_sum_in_tanh_is_cancelled_only_as_a_polynomial_in_its_square(s):
    """The gradient of ``-1 / (1 + tanh(s))^2`` is 2 (1 - t^2) / (1 + t)^3; cancelled once, it was
    2 (1 - t) / (1 + t)^2, and ``1 - tanh(30)`` is 0 in float64 (a review found it: 0 for
    8.8e-27).  Evaluation computes 1 - t^2 as cosh^-2, so over a tanh only polynomials in t^2
    are cancelled.  Against mpmath: d/ds of -1 / (1 + tanh s)^2 = 2 sech^2 s / (1 + tanh s)^3."""
    gradient = einderiv.grad("f = -1 / (1 + tanh(s))^2", "s")
    u = mpmath.mpf(s)
    expected = float(2 * mpmath.sech(u) ** 2 / (1 + mpmath.tanh(u)) ** 3)
    np.testing.assert_allclose(float(gradient(s=np.array(s))), expected, rtol=1e-12)


def test_a_bernoulli_kl_gradient_keeps_its_digits_near_one():
    # -10/7 (1 - x) / (10/7 - 10/7 x) was left uncancelled: 1.4e-3 off at x = 1 - 2^-50 (jax exact)
    source = "f = sum_i(x_i log(x_i / 0.3) + (1 - x_i) log((1 - x_i) / 0.7))"
    x = np.array([1 - 2.0**-50, 1 - 1e-12, 0.5, 1e-12])
    gradient = einderiv.grad(source, "x")
    assert "(1 - x_j) /" not in str(gradient)
    exact = [
        float(mpmath.log(v / mpmath.mpf("0.3")) - mpmath.log((1 - v) / mpmath.mpf("0.7"))) for v in map(mpmath.mpf, x)
    ]
    np.testing.assert_allclose(gradient(x=x), exact, rtol=1e-14, atol=0)
    curvature = [float(1 / v + 1 / (1 - v)) for v in map(mpmath.mpf, x)]
    np.testing.assert_allclose(einderiv.hessian_diag(source, "x")(x=x), curvature, rtol=1e-14, atol=0)
