"""The elementwise function table: name -> NumPy implementation and derivative.

Each derivative is written in einderiv's own language with ``u`` standing for the argument
(``sigmoid``: ``sigmoid(u) (1 - sigmoid(u))``), parsed by einderiv itself, never by ``eval``.
Adding a function is one row.  Non-smooth points take the sub-derivative 0 (``abs``, ``relu``,
``sign`` and ``step`` at 0), following the seed notes' convention that any value in the
sub-differential is admissible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp(-log(1 + exp(-x)))."""
    return np.exp(-np.logaddexp(0, -x))


def _softplus(x):
    """log(1 + exp(x)) without overflow."""
    return np.logaddexp(0, x)


def _relu(x):
    return np.maximum(x, 0)


def _step(x):
    """Heaviside step with value 0 at 0: the derivative of relu, with relu's sub-derivative 0 at the kink."""
    return (x > 0).astype(x.dtype)


@dataclass(frozen=True)
class Function:
    """One row: the name, its NumPy implementation and its derivative in terms of ``u``."""

    name: str
    numpy: Callable
    derivative: str


_ROWS = [
    Function("exp", np.exp, "exp(u)"),
    Function("log", np.log, "u^-1"),
    Function("log1p", np.log1p, "(1 + u)^-1"),
    Function("sin", np.sin, "cos(u)"),
    Function("cos", np.cos, "-sin(u)"),
    Function("tan", np.tan, "1 + tan(u)^2"),
    Function("tanh", np.tanh, "1 - tanh(u)^2"),
    Function("sigmoid", _sigmoid, "sigmoid(u) - sigmoid(u)^2"),
    Function("sqrt", np.sqrt, "0.5 sqrt(u)^-1"),
    Function("abs", np.abs, "sign(u)"),
    Function("relu", _relu, "step(u)"),
    Function("softplus", _softplus, "sigmoid(u)"),
    Function("sign", np.sign, "0"),
    Function("step", _step, "0"),
]

FUNCTIONS: dict[str, Function] = {row.name: row for row in _ROWS}

#: Reductions written with indices: ``sum_i(...)``, ``logsumexp_i(...)``, ``softmax_k(...)``.
REDUCTIONS = ("sum", "logsumexp", "softmax")

#: Functions of a whole square matrix, applied to a matrix's name: ``inv(M)_ij``, ``det(M)``.
MATRIX_FUNCTIONS = {"inv": 2, "det": 0, "logdet": 0}


def known_functions() -> str:
    return ", ".join(sorted([*FUNCTIONS, *MATRIX_FUNCTIONS, *REDUCTIONS]))
