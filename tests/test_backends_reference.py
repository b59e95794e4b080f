"""Every backend against independent references, on benign, extreme and non-finite inputs.

tests/test_backends.py compares each library with einderiv's own NumPy path; here each library
(NumPy included) is compared with references that share no code with einderiv: closed forms in
NumPy written below, and JAX's autodiff in float64 of the function written in ``jax.numpy``.

What "agree" means (:func:`assert_agrees`), after converting the result to NumPy:

* the shape is the reference's; finite values agree to ``rtol=1e-9`` and ``atol=1e-12`` times the
  largest finite magnitude of the reference (times 1 where that is smaller, for sigmoid, softplus
  and tanh derivatives only: sigmoid - sigmoid^2 and 1 - tanh^2 are accurate to an ulp of 1);
* NaN exactly where the reference has NaN, and +inf / -inf exactly where it has the same infinity
  (``assert_allclose(..., equal_nan=True)`` fails on a NaN against a number and on inf against
  -inf or a finite value);
* an entry that is exactly 0 in the reference is exactly 0 in the result: structural zeros (the
  off-diagonal of an elementwise Jacobian, the entries of dK/dR no entry of R reaches) stay 0
  even where the input is 0, ±inf or NaN, never 0 * inf = NaN.

The reference at non-finite and extreme inputs is the closed form evaluated in IEEE arithmetic
at the point, with these conventions, each a reading of "where the mathematical value is
undefined, NaN; where it diverges, the same infinity":

* a NaN input makes every entry that depends on it NaN, values and derivatives alike (relu'(NaN)
  and sign(NaN) are NaN); an entry that does not depend on it keeps its value (the Hessian of
  xᵀAx is A + Aᵀ whatever x is, a structural zero stays 0);
* a derivative whose formula is a constant is that constant everywhere (sign' = step' = 0, the
  count K of ``sum_k(z_k + s)`` by s); at a kink the sub-derivative 0 (abs, relu at 0);
* outside a function's domain the value is NaN (log(-1), sqrt(-1), arcsin(2)) and the derivative
  is its formula's IEEE value (log'(-1) = 1/u = -1, as JAX and torch autodiff also give; arcsin'(2)
  = NaN); at a boundary the formula's infinity (log'(0) = +inf, sqrt'(0) = +inf);
* inf - inf, 0 * inf and inf / inf are NaN (softmax of a +inf logit: inf / inf at that entry,
  exp(z) / inf = 0 at the finite ones); the non-finite inputs of contractions are chosen so that
  no order of summation meets +inf and -inf, or 0 and inf, unless every order does;
* a fractional power of a negative number is NaN, -inf included (as sqrt(-inf) is; IEEE pow
  would give (-inf)^1.5 = inf); -0.0 follows IEEE (1 / -0.0 = -inf), except that fractional
  powers are not tested at -0.0, where IEEE's pow and rSqrt differ;
* an inverse, determinant or log-determinant of a matrix with a NaN entry is NaN everywhere
  (every entry of the result depends on every entry of the matrix).

JAX autodiff is the second reference on the inputs where it is defined without these
conventions: away from kinks, and only on finite inputs (at ±inf and NaN, forward mode multiplies
a structural zero by inf).  Elementwise derivatives take JAX's scalar derivative per entry.  The
two references are checked against each other, every backend against both (NumPy, torch, JAX,
dask; CuPy where a GPU is), float32 inputs for float32 results, ``call(..., backend=)`` on NumPy
inputs, ``jax.jit``, and the comparison itself for rejecting a result wrong in one entry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import einderiv
from einderiv.backends import array_library
from einderiv.elementwise import BUILT_IN
from tests.test_backends import _cupy_usable, _installed, _to_cupy, _to_dask, _to_jax, _to_numpy, _to_torch

if _installed("jax"):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # the autodiff reference in float64

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # dask computes log(0), exp(1000) unguarded

BACKENDS = [
    pytest.param("numpy", np.asarray, id="numpy"),
    pytest.param(
        "torch", _to_torch, id="torch", marks=pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
    ),
    pytest.param("jax", _to_jax, id="jax", marks=pytest.mark.skipif(not _installed("jax"), reason="jax not installed")),
    pytest.param(
        "cupy", _to_cupy, id="cupy", marks=pytest.mark.skipif(not _cupy_usable(), reason="cupy or a GPU absent")
    ),
    pytest.param(
        "dask", _to_dask, id="dask", marks=pytest.mark.skipif(not _installed("dask"), reason="dask not installed")
    ),
]

INF, NAN = np.inf, np.nan


def assert_agrees(got, expected, rtol: float = 1e-9, atol: float = 1e-12, floor: float = 0.0) -> None:
    """``got`` (a NumPy array) agrees with ``expected`` as the module's docstring defines; ``atol``
    is relative to the largest finite magnitude of ``expected``, or to ``floor`` if that is larger."""
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    finite = np.isfinite(expected)
    scale = max(floor, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol * scale, equal_nan=True)
    zeros = expected == 0
    np.testing.assert_array_equal(got[zeros], 0.0, err_msg="an entry that is exactly 0 in the reference is not 0")


def _diag(d):
    """The matrix with ``d`` on its diagonal and exact zeros off it (no 0 * inf)."""
    d = np.asarray(d, dtype=np.float64)
    return np.where(np.eye(d.size, dtype=bool), d[:, None], 0.0)


def _sigmoid(x):
    """1 / (1 + exp(-x)) with e = exp(-|x|), which never overflows: 1 / (1 + e) or e / (1 + e)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _nan_where_nan(x, value):
    """``value``, NaN where ``x`` is NaN (a NaN input gives NaN where the result depends on it)."""
    return np.where(np.isnan(x), np.nan, value)


# -- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One expression and what to evaluate: its value, or its grad/jacobian/hessian by ``wrt``."""

    name: str
    source: str
    wrt: str | None
    kind: str  # "value", "grad", "jacobian" or "hessian"
    reference: Callable  # the NumPy closed form: arrays -> expected
    inputs: dict  # input set -> {name: array}
    jax: Callable | None = None  # arrays (jax) -> the JAX reference, or None
    jax_sets: tuple = ("benign", "extreme")  # the input sets where the JAX reference is defined
    floor: float = 0.0  # 1.0 where einderiv's formula is accurate to an ulp of 1, not relatively


def _jax_derivative(function, wrt, kind):
    """The JAX reference for ``kind``: ``function`` (arrays -> value) differentiated by ``wrt``."""
    if kind == "value":
        return function

    def derivative(**arrays):
        def of(v):
            return function(**{**arrays, wrt: v})

        if kind == "grad":
            return jax.grad(of)(arrays[wrt])
        if kind == "jacobian":
            return jax.jacfwd(of)(arrays[wrt])
        return jax.hessian(of)(arrays[wrt])

    return derivative


def _family(name, source, wrt, inputs, jax_function=None, jax_sets=("benign", "extreme"), **references):
    """The cases of one expression: ``references`` maps a kind to its closed form."""
    return [
        Case(
            f"{name} {kind}",
            source,
            None if kind == "value" else wrt,
            kind,
            reference,
            inputs,
            None if jax_function is None else _jax_derivative(jax_function, wrt, kind),
            jax_sets,
        )
        for kind, reference in references.items()
    ]


# Elementwise functions: (value, first derivative, second derivative, benign range).
def _elementwise_table():
    sig = _sigmoid

    def dsig(x):
        return sig(x) * sig(-x)

    return {
        "exp": (np.exp, np.exp, np.exp, (-2, 2)),
        "log": (np.log, lambda x: 1 / x, lambda x: -1 / x**2, (0.5, 3)),
        "log1p": (np.log1p, lambda x: 1 / (1 + x), lambda x: -1 / (1 + x) ** 2, (-0.5, 2)),
        "expm1": (np.expm1, np.exp, np.exp, (-2, 2)),
        "sin": (np.sin, np.cos, lambda x: -np.sin(x), (-3, 3)),
        "cos": (np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x), (-3, 3)),
        "tan": (np.tan, lambda x: 1 / np.cos(x) ** 2, lambda x: 2 * np.tan(x) / np.cos(x) ** 2, (-1, 1)),
        "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2, lambda x: -2 * np.tanh(x) / np.cosh(x) ** 2, (-2, 2)),
        "cosh": (np.cosh, np.sinh, np.cosh, (-2, 2)),
        "sinh": (np.sinh, np.cosh, np.sinh, (-2, 2)),
        "arcsin": (
            np.arcsin,
            lambda x: 1 / np.sqrt(1 - x**2),
            lambda x: x / np.sqrt(1 - x**2) ** 3,
            (-0.8, 0.8),
        ),
        "arccos": (
            np.arccos,
            lambda x: -1 / np.sqrt(1 - x**2),
            lambda x: -x / np.sqrt(1 - x**2) ** 3,
            (-0.8, 0.8),
        ),
        "arctan": (np.arctan, lambda x: 1 / (1 + x**2), lambda x: -2 * x / (1 + x**2) ** 2, (-3, 3)),
        # sigmoid(-x) - sigmoid(x) = -tanh(x/2), which keeps -x/8 at x = 1e-300 (the difference is 0)
        "sigmoid": (sig, dsig, lambda x: -dsig(x) * np.tanh(x / 2), (-4, 4)),
        "sqrt": (np.sqrt, lambda x: 0.5 / np.sqrt(x), lambda x: -0.25 / np.sqrt(x) ** 3, (0.5, 3)),
        "abs": (np.abs, np.sign, lambda x: np.zeros_like(x), (0.2, 2)),
        "relu": (
            lambda x: np.maximum(x, 0),
            lambda x: _nan_where_nan(x, (x > 0).astype(float)),
            lambda x: np.zeros_like(x),
            (0.2, 2),
        ),
        "softplus": (lambda x: np.logaddexp(0, x), sig, dsig, (-3, 3)),
        "sign": (np.sign, lambda x: np.zeros_like(x), lambda x: np.zeros_like(x), (0.2, 2)),
        "step": (
            lambda x: _nan_where_nan(x, (x > 0).astype(float)),
            lambda x: np.zeros_like(x),
            lambda x: np.zeros_like(x),
            (0.2, 2),
        ),
    }


def test_every_built_in_function_is_here():
    assert set(_elementwise_table()) == {row.name for row in BUILT_IN}


def _jax_elementwise(name):
    return {
        "sigmoid": lambda x: jax.nn.sigmoid(x),
        "softplus": lambda x: jax.nn.softplus(x),
        "relu": lambda x: jax.nn.relu(x),
        "step": lambda x: jnp.heaviside(x, 0.0),
    }.get(name) or getattr(jnp, name)


EXTREME = np.array([1e300, -1e300, 1e-300, -1e-300, 1000.0, -1000.0, 30.0, -30.0])
NON_FINITE = np.array([0.0, -0.0, INF, -INF, NAN, 1.0, -1.0, 0.5])


def _elementwise_cases():
    out = []
    for name, (value, first, second, (low, high)) in _elementwise_table().items():
        benign = np.random.default_rng(len(name)).uniform(low, high, size=6)
        if name in ("abs", "relu", "sign", "step"):
            benign = benign * np.array([1, -1, 1, -1, 1, -1])  # both sides of the kink
        inputs = {"benign": {"x": benign}, "extreme": {"x": EXTREME}, "nonfinite": {"x": NON_FINITE}}

        def jax_first(x, name=name):
            return jnp.diag(jax.vmap(jax.grad(_jax_elementwise(name)))(x))

        def jax_second(x, name=name):
            return jnp.diag(jax.vmap(jax.grad(jax.grad(_jax_elementwise(name))))(x))

        def jax_value(x, name=name):
            return _jax_elementwise(name)(x)

        def diag_where(f):
            return lambda x: _diag(f(x))

        source = f"y_i = {name}(x_i)"
        out.append(Case(f"{name} value", source, None, "value", lambda x, f=value: f(x), inputs, jax_value))
        # sigmoid' = sigmoid - sigmoid^2 and tanh' = 1 - tanh^2 cancel at large |u|: an absolute
        # error of an ulp of 1 (sigmoid'(30) is 9.348e-14 for 9.358e-14), so atol is relative to 1
        # (JAX's derivatives cancel the same way: its reference is then for benign inputs only)
        floor = 1.0 if name in ("sigmoid", "softplus", "tanh") else 0.0
        jax_sets = ("benign",) if floor else ("benign", "extreme")
        jacobian, hessian = diag_where(first), diag_where(second)
        out.append(Case(f"{name} jacobian", source, "x", "jacobian", jacobian, inputs, jax_first, jax_sets, floor))
        hessian_source = f"f = sum_i({name}(x_i))"
        out.append(
            Case(f"{name} hessian", hessian_source, "x", "hessian", hessian, inputs, jax_second, jax_sets, floor)
        )
    return out


CASES = _elementwise_cases()


# Reductions over logits: logsumexp, softmax and softmax cross-entropy.


def _lse(z):
    """log(sum(exp(z))): max-shifted; +inf where a logit is +inf, -inf where all are -inf."""
    peak = np.max(z)
    if not np.isfinite(peak):
        return np.asarray(peak)  # NaN, +inf or -inf: the sum's value
    return np.asarray(peak + np.log(np.sum(np.exp(z - peak))))


def _softmax(z):
    """exp(z_k) / sum_j exp(z_j) in extended reals: at a +inf logit inf / inf = NaN and the finite
    ones exp(z_k) / inf = 0; all -inf is 0 / 0 = NaN; a NaN logit makes every entry NaN."""
    if np.isnan(z).any() or np.all(z == -INF):
        return np.full(z.shape, NAN)
    if (z == INF).any():
        return np.where(z == INF, NAN, 0.0)
    e = np.exp(z - np.max(z))
    return e / e.sum()


def _softmax_jacobian(z):
    p = _softmax(z)
    return _diag(p) - np.outer(p, p)


LOGITS = {
    "benign": {"z": np.random.default_rng(1).normal(size=5)},
    "extreme": {"z": np.array([1000.0, -1000.0, 999.0, 0.0, -999.5])},
    "huge": {"z": np.array([1e300, -1e300, 0.0, 1.0, 1e-300])},
    "minus_inf": {"z": np.array([-INF, 0.0, 1.0, -INF, 2.0])},
    "plus_inf": {"z": np.array([INF, 0.0, 1.0, -INF, 2.0])},
    "all_minus_inf": {"z": np.full(5, -INF)},
    "nan": {"z": np.array([NAN, 0.0, 1.0, 2.0, 3.0])},
}


def _labelled(sets, labels):
    return {key: {**arrays, "y": labels} for key, arrays in sets.items()}


LABELS = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
CROSS_ENTROPY_LOGITS = _labelled({k: LOGITS[k] for k in ("benign", "extreme", "huge", "nan")}, LABELS)
CROSS_ENTROPY_LOGITS["soft labels"] = {
    "z": np.array([3.0, -2.0, 0.5, 1.0, -0.5]),
    "y": np.array([0.1, 0.5, 0, 0.3, 0.1]),
}

rng = np.random.default_rng(2)
T_BENIGN, X4 = rng.normal(size=(5, 4)), rng.normal(size=4)
T_NAN = T_BENIGN.copy()
T_NAN[0, 2] = NAN
LINEAR_LOGITS = {
    "benign": {"T": T_BENIGN, "x": X4, "y": LABELS},
    "extreme": {"T": 500 * T_BENIGN, "x": X4, "y": LABELS},
    "nan": {"T": T_NAN, "x": X4, "y": LABELS},
}


def _cross_entropy_grad(z, y):
    return _softmax(z) * y.sum() - y


CASES += _family(
    "logsumexp",
    "f = logsumexp_i(z_i)",
    "z",
    LOGITS,
    lambda z: jax.nn.logsumexp(z),
    value=_lse,
    grad=_softmax,
    hessian=_softmax_jacobian,
)
CASES += _family(
    "softmax",
    "p_k = softmax_k(z_k)",
    "z",
    LOGITS,
    lambda z: jax.nn.softmax(z),
    value=_softmax,
    jacobian=_softmax_jacobian,
)
CASES += _family(
    "softmax cross-entropy",
    "L = -y_k log(softmax_k(z_k))",
    "z",
    CROSS_ENTROPY_LOGITS,
    lambda z, y: -jnp.sum(y * jax.nn.log_softmax(z)),
    ("benign", "extreme", "soft labels"),
    value=lambda z, y: -np.sum(y * z) + y.sum() * _lse(z),
    grad=_cross_entropy_grad,
    hessian=lambda z, y: y.sum() * _softmax_jacobian(z),
)
CASES += _family(
    "softmax cross-entropy of T x",
    "L = -y_k log(softmax_k(T_kj x_j))",
    "T",
    LINEAR_LOGITS,
    lambda T, x, y: -jnp.sum(y * jax.nn.log_softmax(T @ x)),
    grad=lambda T, x, y: np.outer(_cross_entropy_grad(T @ x, y), x),
)


# Matrix functions: inv, det, logdet and their derivatives (a matrix with a NaN is NaN throughout).


def _inv(X):
    return np.linalg.inv(X) if np.isfinite(X).all() else np.full(X.shape, NAN)


def _det(X):
    return np.asarray(np.linalg.det(X) if np.isfinite(X).all() else NAN)


def _logdet(X):
    if not np.isfinite(X).all():
        return np.asarray(NAN)
    sign, value = np.linalg.slogdet(X)
    return np.asarray(value if sign > 0 else NAN)


rng = np.random.default_rng(3)
M = 3 * np.eye(3) + 0.3 * rng.normal(size=(3, 3))  # well conditioned, not symmetric, det > 0
M_NAN = M.copy()
M_NAN[1, 2] = NAN
A3, B3 = rng.normal(size=3), rng.normal(size=3)
MATRICES = {
    "benign": {"X": M, "a": A3, "b": B3},
    "huge": {"X": 1e300 * M, "a": A3, "b": B3},
    "tiny": {"X": 1e-300 * M, "a": A3, "b": B3},
    "nan": {"X": M_NAN, "a": A3, "b": B3},
}
JAX_MATRICES = ("benign", "huge")  # at "tiny", inv(X) products overflow and JAX multiplies inf by 0

CASES += _family(
    "inv",
    "Y_ij = inv(X)_ij",
    "X",
    MATRICES,
    lambda X, a, b: jnp.linalg.inv(X),
    JAX_MATRICES,
    value=lambda X, a, b: _inv(X),
    jacobian=lambda X, a, b: -np.einsum("ik,lj->ijkl", _inv(X), _inv(X)),
)
CASES += _family(
    "det",
    "f = det(X)",
    "X",
    MATRICES,
    lambda X, a, b: jnp.linalg.det(X),
    ("benign", "tiny"),  # det(1e300 X) overflows: JAX's derivative multiplies inf by 0
    value=lambda X, a, b: _det(X),
    grad=lambda X, a, b: _det(X) * _inv(X).T,
)
CASES += _family(
    "logdet",
    "f = logdet(X)",
    "X",
    MATRICES,
    lambda X, a, b: jnp.linalg.slogdet(X)[1],
    JAX_MATRICES,
    value=lambda X, a, b: _logdet(X),
    grad=lambda X, a, b: _inv(X).T,
    hessian=lambda X, a, b: -np.einsum("la,bk->klab", _inv(X), _inv(X)),
)
CASES += _family(
    "a^T inv(X) b",
    "f = a_i inv(X)_ij b_j",
    "X",
    MATRICES,
    lambda X, a, b: a @ jnp.linalg.solve(X, b),
    JAX_MATRICES,
    value=lambda X, a, b: a @ _inv(X) @ b,
    grad=lambda X, a, b: -np.outer(_inv(X).T @ a, _inv(X) @ b),
)


# K = R^T R and dK/dR (rank 4): deltas between output indices, placed without 0 * inf.


def _gram(R):
    return np.sum(R[:, :, None] * R[:, None, :], axis=0)  # one product per term: no BLAS reordering


def _gram_jacobian(R):
    """dK_pq / dR_ab = delta_qb R_ap + delta_pb R_aq, built with where (exact zeros off the deltas)."""
    m, n = R.shape
    p, q, a, b = np.ix_(range(n), range(n), range(m), range(n))
    return np.where(q == b, R[a, p], 0.0) + np.where(p == b, R[a, q], 0.0)


rng = np.random.default_rng(4)
R_BENIGN = rng.normal(size=(3, 4))
R_HUGE = rng.uniform(0.5, 2, size=(3, 4))
R_HUGE[:, 0] *= 1e200  # K_00 overflows to inf; the rest of K and all of dK/dR stay finite
R_NON_FINITE = rng.uniform(0.5, 2, size=(3, 4))
R_NON_FINITE[0, 0], R_NON_FINITE[1, 2] = INF, NAN
CASES += _family(
    "K = R^T R",
    "K_pq = R_mp R_mq",
    "R",
    {"benign": {"R": R_BENIGN}, "huge": {"R": R_HUGE}, "nonfinite": {"R": R_NON_FINITE}},
    lambda R: R.T @ R,
    ("benign", "huge"),
    value=_gram,
    jacobian=_gram_jacobian,
)


# Quadratic form x^T A x: value, gradient and Hessian.

rng = np.random.default_rng(5)
A4, X_POS = rng.uniform(0.5, 2, size=(4, 4)), rng.uniform(0.5, 2, size=4)
A4_NON_FINITE = A4.copy()
A4_NON_FINITE[0, 1], A4_NON_FINITE[2, 2] = INF, NAN
QUADRATIC = {
    "benign": {"x": rng.normal(size=4), "A": rng.normal(size=(4, 4))},
    "huge": {"x": np.array([1e300, 1.0, 2.0, 3.0]), "A": A4},  # the value overflows, the gradient does not
    "inf_x": {"x": np.array([INF, 1.0, 2.0, 3.0]), "A": A4},
    "nan_x": {"x": np.array([1.0, 2.0, NAN, 3.0]), "A": A4},
    "nonfinite_A": {"x": X_POS, "A": A4_NON_FINITE},
}


def _quadratic(x, A):
    return np.sum(x[:, None] * A * x[None, :])


CASES += _family(
    "x^T A x",
    "f = x_i A_ij x_j",
    "x",
    QUADRATIC,
    lambda x, A: x @ A @ x,
    ("benign", "huge"),
    value=_quadratic,
    grad=lambda x, A: np.sum((A + A.T) * x[None, :], axis=1),
    hessian=lambda x, A: A + A.T,
)


# Logistic regression: softplus(X w) - y X w, and the program with s_n = sigmoid(z_n).

rng = np.random.default_rng(6)
X8 = rng.normal(size=(8, 3))
Y8 = (rng.uniform(size=8) > 0.5).astype(float)
W = rng.normal(size=3) * 0.5
X8_NAN = X8.copy()
X8_NAN[2, 1] = NAN
Y8_NAN = Y8.copy()
Y8_NAN[1] = NAN
LOGISTIC_INPUTS = {
    "benign": {"X": X8, "y": Y8, "w": W},
    "extreme": {"X": X8, "y": Y8, "w": np.array([1000.0, -700.0, 400.0])},  # logits of +-1000
    "nan_X": {"X": X8_NAN, "y": Y8, "w": W},
    "nan_y": {"X": X8, "y": Y8_NAN, "w": W},
}


def _logistic_grad(X, y, w):
    return X.T @ (_sigmoid(X @ w) - y)


def _logistic_hessian(X, y, w):
    z = X @ w
    d = _sigmoid(z) * _sigmoid(-z)
    return np.sum(X[:, :, None] * d[:, None, None] * X[:, None, :], axis=0)


def _jax_logistic(X, y, w):
    z = X @ w
    return jnp.sum(y * jax.nn.softplus(-z) + (1 - y) * jax.nn.softplus(z))


CASES += _family(
    "logistic loss",
    "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)",
    "w",
    LOGISTIC_INPUTS,
    lambda X, y, w: jnp.sum(jax.nn.softplus(X @ w) - y * (X @ w)),
    value=lambda X, y, w: np.sum(np.logaddexp(0, X @ w) - y * (X @ w)),
    grad=_logistic_grad,
    hessian=_logistic_hessian,
)
# An infinite weight: logits of +-inf, a finite gradient and a zero Hessian.  (Not the value: where
# y_n = 0 meets z_n = inf, y_n X_nd w_d is 0 * inf in one order of the sum and finite in another.)
CASES += _family(
    "logistic loss",
    "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)",
    "w",
    {"inf_w": {"X": X8, "y": Y8, "w": np.array([INF, 0.5, -0.5])}},
    grad=_logistic_grad,
    hessian=_logistic_hessian,
)
CASES += _family(
    "logistic program",
    "z_n = X_nd w_d\ns_n = sigmoid(z_n)\nL = -y_n log(s_n) - (1 - y_n) log(1 - s_n)",
    "w",
    LOGISTIC_INPUTS,
    _jax_logistic,
    value=lambda X, y, w: np.sum(y * np.logaddexp(0, -(X @ w)) + (1 - y) * np.logaddexp(0, X @ w)),
    grad=_logistic_grad,
    hessian=_logistic_hessian,
)


# Means and counting indices: sum_k(z_k + s) by s is the count K, mean_k(z_k) by z is 1 / K.

COUNTED = {
    "benign": {"z": np.random.default_rng(7).normal(size=5), "s": np.array(0.7)},
    "extreme": {"z": np.array([1e300, 1e300, 1e-300, 2.0, 3.0]), "s": np.array(1e300)},
    "nonfinite": {"z": np.array([INF, 1.0, NAN, -INF, 0.0]), "s": np.array(INF)},
}
CASES += _family(
    "sum_k(z_k + s)",
    "f = sum_k(z_k + s)",
    "s",
    COUNTED,
    lambda z, s: jnp.sum(z + s),
    value=lambda z, s: np.sum(z + s),
    grad=lambda z, s: np.asarray(float(z.size)),
)
CASES += _family(
    "mean_k(z_k)", "f = mean_k(z_k)", "z", COUNTED, lambda z, s: jnp.mean(z), grad=lambda z, s: np.full(z.shape, 0.2)
)
CASES += _family(
    "mean_k(z_k z_k)",
    "f = mean_k(z_k z_k)",
    "z",
    COUNTED,
    lambda z, s: jnp.mean(z * z),
    value=lambda z, s: np.sum(z * z) / z.size,
    grad=lambda z, s: 2 * z / z.size,
    hessian=lambda z, s: _diag(np.full(z.size, 2 / z.size)),
)


# Linear maps: A x by A (a delta between output indices) and by x, a^T x by x.

rng = np.random.default_rng(8)
A34 = rng.normal(size=(3, 4))
LINEAR = {
    "benign": {"A": A34, "x": rng.normal(size=4)},
    "extreme": {"A": A34, "x": np.array([1e300, -1e300, 1e-300, 1.0])},
    "inf_x": {"A": A34, "x": np.array([INF, 1.0, 2.0, 3.0])},
    "nonfinite_x": {"A": A34, "x": np.array([INF, NAN, -INF, 0.0])},
}
CASES += _family(
    "A x by A",
    "f_i = A_ij x_j",
    "A",
    LINEAR,
    lambda A, x: A @ x,
    ("benign",),
    jacobian=lambda A, x: np.where(np.eye(3, dtype=bool)[:, :, None], x[None, None, :], 0.0),
)
CASES += _family(
    "A x by x", "f_i = A_ij x_j", "x", LINEAR, lambda A, x: A @ x, ("benign", "extreme"), jacobian=lambda A, x: A
)
CASES += _family(
    "a^T x",
    "f = a_i x_i",
    "x",
    {key: {"a": arrays["x"][::-1].copy(), "x": arrays["x"]} for key, arrays in LINEAR.items()},
    lambda a, x: a @ x,
    ("benign",),
    grad=lambda a, x: a,
)


# Powers and division (the pow steps: square, reciprocal, sqrt, an integer or a float exponent).

POWERS = {"2": 2, "3": 3, "-1": -1, "-2": -2, "0.5": 0.5, "-0.5": -0.5, "1.5": 1.5}


def _power_cases():
    out = []
    for text, p in POWERS.items():
        benign = np.random.default_rng(abs(int(4 * p))).uniform(0.5, 2, size=6) * np.array([1, -1, 1, -1, 1, -1])
        # -0.0 under a fractional power is left out: IEEE 754 specifies pow(-0, -1/2) = +inf but
        # rSqrt(-0) = -inf, and torch computes x^-0.5 as rsqrt
        nonfinite = NON_FINITE[~((NON_FINITE == 0) & np.signbit(NON_FINITE))] if isinstance(p, float) else NON_FINITE
        inputs = {"benign": {"x": benign}, "extreme": {"x": EXTREME}, "nonfinite": {"x": nonfinite}}
        jax_sets = ("benign", "extreme") if isinstance(p, int) else ()

        def power(x, p=p):
            """x^p, with no real value for a negative base and a fractional p (NaN at -inf too)."""
            return np.where((x == -INF) & (p != int(p)), NAN, x**p)

        def jax_value(x, p=p):
            return x**p

        out.append(Case(f"x^{text} value", f"y_i = x_i^{text}", None, "value", power, inputs, jax_value, jax_sets))
        out.append(
            Case(
                f"x^{text} jacobian",
                f"y_i = x_i^{text}",
                "x",
                "jacobian",
                lambda x, p=p, power=power: _diag(p * power(x, p - 1)),
                inputs,
                lambda x, p=p: jnp.diag(p * x ** (p - 1)),
                jax_sets[:1],
            )
        )
        out.append(
            Case(
                f"x^{text} hessian",
                f"f = sum_i(x_i^{text})",
                "x",
                "hessian",
                lambda x, p=p, power=power: _diag(p * (p - 1) * power(x, p - 2)),
                inputs,
                None,
            )
        )
    return out


CASES += _power_cases()
CASES += _family(
    "e / s by s",
    "p_i = e_i / s",
    "s",
    {
        "benign": {"e": np.array([1.0, -2.0, 0.5]), "s": np.array(1.5)},
        "zero": {"e": np.array([1.0, -2.0, 0.0]), "s": np.array(0.0)},
        "inf": {"e": np.array([1.0, -2.0, INF]), "s": np.array(INF)},
    },
    lambda e, s: e / s,
    ("benign",),
    value=lambda e, s: e / s,
    jacobian=lambda e, s: -e / s**2,
)


# Reductions over one axis of a matrix: each row (or column) on its own, a NaN row stays in its row.

Z_BENIGN = np.random.default_rng(9).normal(size=(3, 4))
Z_EXTREME = np.array([[1000.0, -1000.0, 999.0, 0.0], [-1000.0] * 4, [1e300, 0.0, -1e300, 1.0]])
Z_NON_FINITE = np.array([[-INF, 0.0, 1.0, -INF], [INF, 0.0, 1.0, 2.0], [NAN, 0.0, 1.0, 2.0]])
ROWS = {"benign": {"Z": Z_BENIGN}, "extreme": {"Z": Z_EXTREME}, "nonfinite": {"Z": Z_NON_FINITE}}


def _rows(f, Z):
    return np.array([f(row) for row in Z])


def _row_softmax_jacobian(Z):
    """dP_nk / dZ_ml = delta_nm (delta_kl P_nk - P_nk P_nl): zero across rows."""
    n, k = Z.shape
    within = np.array([_softmax_jacobian(row) for row in Z])  # (n, k, l)
    return np.where(np.eye(n, dtype=bool)[:, None, :, None], within[:, :, None, :], 0.0)


CASES += _family(
    "row logsumexp",
    "f_n = logsumexp_k(Z_nk)",
    "Z",
    ROWS,
    lambda Z: jax.nn.logsumexp(Z, axis=1),
    value=lambda Z: _rows(_lse, Z),
    jacobian=lambda Z: np.where(np.eye(3, dtype=bool)[:, :, None], _rows(_softmax, Z)[:, None, :], 0.0),
)
CASES += _family(
    "column logsumexp",
    "f_k = logsumexp_n(Z_nk)",
    "Z",
    ROWS,
    lambda Z: jax.nn.logsumexp(Z, axis=0),
    value=lambda Z: _rows(_lse, Z.T),
    jacobian=lambda Z: np.where(np.eye(4, dtype=bool)[:, None, :], _rows(_softmax, Z.T)[:, :, None], 0.0),
)
CASES += _family(
    "row softmax",
    "P_nk = softmax_k(Z_nk)",
    "Z",
    ROWS,
    lambda Z: jax.nn.softmax(Z, axis=1),
    value=lambda Z: _rows(_softmax, Z),
    jacobian=_row_softmax_jacobian,
)


# A two-layer tanh network: saturated units have derivative exactly 0; a NaN input stays on k = a.

rng = np.random.default_rng(10)
W34, V3, X4B = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=4)
TANH_NETWORK = {
    "benign": {"W": W34, "x": X4B, "v": V3},
    "extreme": {"W": 1000 * W34, "x": X4B, "v": V3},
    "nan_x": {"W": W34, "x": np.array([1.0, NAN, 0.5, -1.0]), "v": V3},
}


def _tanh_hessian(W, x, v):
    """d^2 f / dW_kj dW_ab = delta_ka (-2 v_k h_k (1 - h_k^2)) x_j x_b."""
    z = W @ x
    d = -2 * v * np.tanh(z) / np.cosh(z) ** 2
    full = d[:, None, None] * x[None, :, None] * x[None, None, :]  # (k, j, b)
    return np.where(np.eye(3, dtype=bool)[:, None, :, None], full[:, :, None, :], 0.0)


CASES += _family(
    "two-layer tanh",
    "h_k = tanh(W_kj x_j)\nf = v_k h_k",
    "W",
    TANH_NETWORK,
    lambda W, x, v: v @ jnp.tanh(W @ x),
    value=lambda W, x, v: v @ np.tanh(W @ x),
    grad=lambda W, x, v: np.outer(v / np.cosh(W @ x) ** 2, x),
    hessian=_tanh_hessian,
)

# -- the tests ----------------------------------------------------------------------------------


@functools.cache
def _target(source: str, wrt: str | None, kind: str):
    if kind == "value":
        return einderiv.compile(source)
    return {"grad": einderiv.grad, "hessian": einderiv.hessian, "jacobian": einderiv.jacobian}[kind](source, wrt)


def _params(sets_of):
    return [
        pytest.param(case, key, id=f"{case.name}-{key}".replace(" ", "_")) for case in CASES for key in sets_of(case)
    ]


def _reference(case: Case, arrays) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(case.reference(**{k: np.array(v, dtype=np.float64) for k, v in arrays.items()}))


def _jax_reference(case: Case, arrays) -> np.ndarray:
    return np.asarray(case.jax(**{k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items()}))


def _evaluate(case: Case, backend: str, convert, arrays):
    """einderiv's result on ``backend``, checked to be that library's array (on the inputs'
    device), as a NumPy array."""
    target = _target(case.source, case.wrt, case.kind)
    given = {k: convert(v) for k, v in arrays.items() if k in target.ranks}
    value = target(**given)
    assert array_library(value) == backend, (type(value), backend)  # computed there, not converted back
    if backend == "torch":
        assert value.device == next(iter(given.values())).device
    return _to_numpy(value)


@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize("case, key", _params(lambda case: case.inputs))
def test_backend_agrees_with_the_closed_form(case, key, backend, convert):
    arrays = case.inputs[key]
    got = _evaluate(case, backend, convert, arrays)
    assert got.dtype == np.float64
    assert_agrees(got, _reference(case, arrays), floor=case.floor)


@pytest.mark.skipif(not _installed("jax"), reason="jax not installed")
@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize("case, key", _params(lambda case: [k for k in case.jax_sets if case.jax is not None]))
def test_backend_agrees_with_jax_autodiff(case, key, backend, convert):
    arrays = case.inputs[key]
    assert_agrees(_evaluate(case, backend, convert, arrays), _jax_reference(case, arrays), floor=case.floor)


@pytest.mark.skipif(not _installed("jax"), reason="jax not installed")
@pytest.mark.parametrize("case, key", _params(lambda case: [k for k in case.inputs if k != "benign"]))
def test_jax_jit_agrees_with_the_closed_form(case, key):
    """Traced by ``jax.jit`` (XLA may fuse and reorder): the same NaN, inf and zeros."""
    arrays = case.inputs[key]
    target = _target(case.source, case.wrt, case.kind)
    jitted = jax.jit(lambda **given: target(**given))
    value = jitted(**{k: jnp.asarray(v) for k, v in arrays.items() if k in target.ranks})
    assert isinstance(value, jax.Array)
    assert_agrees(np.asarray(value), _reference(case, arrays), floor=case.floor)


@pytest.mark.skipif(not _installed("jax"), reason="jax not installed")
@pytest.mark.parametrize("case, key", _params(lambda case: [k for k in case.jax_sets if case.jax is not None]))
def test_the_two_references_agree(case, key):
    """The closed forms are checked by JAX's autodiff wherever both are defined."""
    arrays = case.inputs[key]
    assert_agrees(_reference(case, arrays), _jax_reference(case, arrays), floor=case.floor)


def _fits_float32(arrays) -> bool:
    """Whether every finite nonzero input is a normal float32 (1e300 and 1e-300 are not)."""
    values = np.concatenate([np.ravel(v) for v in arrays.values()])
    finite = values[np.isfinite(values) & (values != 0)]
    return bool(np.all((np.abs(finite) > 1e-30) & (np.abs(finite) < 1e30)))


@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize("case, key", _params(lambda case: [k for k, v in case.inputs.items() if _fits_float32(v)]))
def test_float32_inputs_give_float32_results(case, key, backend, convert):
    """float32 in, float32 out, in the inputs' library; the values agree with the float64 reference
    at the float32-rounded inputs to float32's precision (NaN, inf and exact zeros as in float64)."""
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in case.inputs[key].items()}
    got = _evaluate(case, backend, convert, arrays)
    assert got.dtype == np.float32
    assert_agrees(got.astype(np.float64), _reference(case, arrays), rtol=2e-4, atol=2e-6, floor=case.floor)


@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize("case, key", _params(lambda case: [k for k in case.inputs if k != "benign"][:1]))
def test_backend_argument_converts_numpy_inputs(case, key, backend, convert):
    """``call(arrays, backend=...)`` converts NumPy inputs to the library and computes there."""
    arrays = case.inputs[key]
    target = _target(case.source, case.wrt, case.kind)
    value = target.call({k: v for k, v in arrays.items() if k in target.ranks}, backend=backend)
    assert array_library(value) == backend
    got = _to_numpy(value)
    assert got.dtype == np.float64
    assert_agrees(got, _reference(case, arrays), floor=case.floor)


# -- the checks can fail ----------------------------------------------------------------------------


def test_agreement_is_strict_about_non_finite_values_and_zeros():
    reference = np.array([[1.0, 0.0], [INF, NAN]])
    assert_agrees(reference.copy(), reference)
    wrong = {
        "relative 1e-8": [[1.0 + 1e-8, 0.0], [INF, NAN]],
        "a structural zero made small": [[1.0, 1e-300], [INF, NAN]],
        "a structural zero made NaN (0 * inf)": [[1.0, NAN], [INF, NAN]],
        "inf for -inf": [[1.0, 0.0], [-INF, NAN]],
        "the largest float for inf": [[1.0, 0.0], [np.finfo(float).max, NAN]],
        "a number for NaN": [[1.0, 0.0], [INF, 0.0]],
        "NaN for a number": [[NAN, 0.0], [INF, NAN]],
        "two entries swapped": [[1.0, INF], [0.0, NAN]],
    }
    for why, got in wrong.items():
        with pytest.raises(AssertionError):
            assert_agrees(np.array(got), reference)
            pytest.fail(f"accepted: {why}")
    with pytest.raises(AssertionError):
        assert_agrees(np.zeros(3), np.zeros((3, 1)))


def _perturbations(got: np.ndarray, floor: float):
    """Results that are wrong in one entry: each must be rejected."""
    flat = got.ravel()

    def changed(index, value):
        out = flat.copy()
        out[index] = value
        return out.reshape(got.shape)

    finite = np.flatnonzero(np.isfinite(flat) & (flat != 0))
    if finite.size:
        largest = finite[np.argmax(np.abs(flat[finite]))]
        if not floor:
            yield "relative 1e-6", changed(largest, flat[largest] * (1 + 1e-6))
        yield "NaN for a number", changed(largest, NAN)
    for index in np.flatnonzero(np.isnan(flat))[:1]:
        yield "a number for NaN", changed(index, 0.0)
    for index in np.flatnonzero(np.isinf(flat))[:1]:
        yield "the other infinity", changed(index, -flat[index])
    for index in np.flatnonzero(flat == 0)[:1]:
        yield "1e-300 for an exact 0", changed(index, 1e-300)
        yield "NaN for an exact 0", changed(index, NAN)


@pytest.mark.parametrize("case, key", _params(lambda case: case.inputs))
def test_a_result_wrong_in_one_entry_fails(case, key):
    """The comparison rejects every case's reference made wrong in one entry, in each way."""
    reference = _reference(case, case.inputs[key])
    for why, wrong in _perturbations(reference, case.floor):
        with pytest.raises(AssertionError):
            assert_agrees(wrong, reference, floor=case.floor)
            pytest.fail(f"accepted: {why}")
