"""The elementwise function table: name -> implementation (for any NumPy-like namespace) and derivative.

Each derivative is written in einderiv's own language with ``u`` standing for the argument
(``sigmoid``: ``sigmoid(u) (1 - sigmoid(u))``), parsed by einderiv itself, never by ``eval``.
Adding a function is one row.  Non-smooth points take the sub-derivative 0 (``abs``, ``relu``,
``sign`` and ``step`` at 0), following the usual convention that any value in the sub-differential is
admissible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction


def _sigmoid(xp):
    """1 / (1 + exp(-x)) without overflow or cancellation: with e = exp(-|x|), which never
    overflows, 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0.  Each is a few operations of
    at most half an ulp each, so the result is within 2 ulp relative at every x (-745 to 745,
    then 0 and 1; NaN stays NaN), where exp(-logaddexp(0, -x)) was 31 ulp off at x = -33
    (exp magnifies logaddexp's rounding) and 0.5 (1 + tanh(x / 2)) loses every digit below
    x = -37.  It runs in a third of the time of exp(-logaddexp(0, -x)): exp, minimum, where,
    add and divide are plain ufuncs (numpy, jax.numpy, cupy, dask.array)."""

    def sigmoid(x):
        e = xp.exp(xp.minimum(x, -x))
        return xp.where(x < 0, e, 1) / (1 + e)

    return sigmoid


def _softplus(xp):
    """log(1 + exp(x)) without overflow."""
    return lambda x: xp.logaddexp(0, x)


def _relu(xp):
    return lambda x: xp.maximum(x, 0)


def _step(xp):
    """Heaviside step with value 0 at 0: the derivative of relu, with relu's sub-derivative 0 at the kink."""
    return lambda x: (x > 0).astype(x.dtype)


@dataclass(frozen=True)
class Named:
    """An implementation that is the namespace's own function of that name: ``xp.<name>``
    (code generation writes ``np.<name>`` or ``torch.<name>`` for it)."""

    name: str

    def __call__(self, xp) -> Callable:
        return getattr(xp, self.name)


def _named(name: str) -> Named:
    return Named(name)


@dataclass(frozen=True)
class Function:
    """One row: the name; ``make(xp)``, its implementation on the arrays of a NumPy-like namespace
    (numpy, jax.numpy, cupy, dask.array; torch's adapter in backends overrides what torch names
    differently); its derivative in terms of ``u``; and f(0) where that is rational (for folding
    a call on an argument that cancelled: ``tanh(A_ij - A_ij)`` is 0)."""

    name: str
    make: Callable
    derivative: str
    at_zero: Fraction | None = None


_ROWS = [
    Function("exp", _named("exp"), "exp(u)", Fraction(1)),
    Function("log", _named("log"), "u^-1"),
    Function("log1p", _named("log1p"), "(1 + u)^-1", Fraction(0)),
    Function("sin", _named("sin"), "cos(u)", Fraction(0)),
    Function("cos", _named("cos"), "-sin(u)", Fraction(1)),
    Function("tan", _named("tan"), "1 + tan(u)^2", Fraction(0)),
    Function("tanh", _named("tanh"), "1 - tanh(u)^2", Fraction(0)),
    Function("cosh", _named("cosh"), "sinh(u)", Fraction(1)),
    Function("sinh", _named("sinh"), "cosh(u)", Fraction(0)),
    Function("arcsin", _named("arcsin"), "sqrt(1 - u^2)^-1", Fraction(0)),
    Function("arccos", _named("arccos"), "-sqrt(1 - u^2)^-1"),
    Function("arctan", _named("arctan"), "(1 + u^2)^-1", Fraction(0)),
    Function("sigmoid", _sigmoid, "sigmoid(u) - sigmoid(u)^2", Fraction(1, 2)),
    Function("sqrt", _named("sqrt"), "0.5 sqrt(u)^-1", Fraction(0)),
    Function("abs", _named("abs"), "sign(u)", Fraction(0)),
    Function("relu", _relu, "step(u)", Fraction(0)),
    Function("softplus", _softplus, "sigmoid(u)"),
    Function("sign", _named("sign"), "0", Fraction(0)),
    Function("step", _step, "0", Fraction(0)),
]

FUNCTIONS: dict[str, Function] = {row.name: row for row in _ROWS}

#: Reductions written with indices: ``sum_i(...)``, ``mean_i(...)``, ``logsumexp_i(...)``, ``softmax_k(...)``.
REDUCTIONS = ("sum", "mean", "logsumexp", "softmax")

#: Functions of a whole square matrix, applied to a matrix's name: ``inv(M)_ij``, ``det(M)``.
MATRIX_FUNCTIONS = {"inv": 2, "det": 0, "logdet": 0}


def known_functions() -> str:
    return ", ".join(sorted([*FUNCTIONS, *MATRIX_FUNCTIONS, *REDUCTIONS]))
