"""The tree of matrix notation and its printer: ``A x + A^T x``, ``-2 Phi^T (y - Phi theta)``.

Every node has a ``shape``, (has rows, has columns): a column vector is (True, False), a scalar
(False, False).  Juxtaposition is the matrix product, ``⊙`` the elementwise product (looser than
juxtaposition, tighter than ``+``), ``M^T`` the transpose, ``X^-1``/``X^-T`` the inverse of a
named matrix and its transpose; a number in a vector or matrix sum stands in every entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..glyphs import Precedence, format_number

# -- the matrix-notation tree ------------------------------------------------------------------------
# A shape is (has rows, has columns): a column vector is (True, False), a scalar (False, False).

SCALAR, COLUMN, ROW, MATRIX = (False, False), (True, False), (False, True), (True, True)


@dataclass(frozen=True)
class Symbol:
    """A named input or intermediate (``A``, ``x``), or the identity ``I``."""

    name: str
    shape: tuple[bool, bool]


@dataclass(frozen=True)
class Identity:
    """The identity matrix ``I`` (its size from context)."""

    shape: tuple[bool, bool] = MATRIX


@dataclass(frozen=True)
class Number:
    """A constant; in a vector or matrix sum it stands for that constant in every entry."""

    value: Fraction
    shape: tuple[bool, bool] = SCALAR


@dataclass(frozen=True)
class Transpose:
    """``M^T``."""

    operand: object

    @property
    def shape(self) -> tuple[bool, bool]:
        rows, cols = self.operand.shape
        return (cols, rows)


@dataclass(frozen=True)
class Inverse:
    """``X^-1``, or ``X^-T`` (the transpose of the inverse) when ``transposed``."""

    matrix: str
    transposed: bool = False
    shape: tuple[bool, bool] = MATRIX


@dataclass(frozen=True)
class Call:
    """``f(arg)``: an elementwise function, or ``tr``, ``det``, ``logdet``, ``logabsdet``, ``diag``, ``sum``,
    ``softmax``, ``logsumexp``; ``shape`` is the result's."""

    func: str
    arg: object
    shape: tuple[bool, bool]


@dataclass(frozen=True)
class Power:
    """``base^exponent`` of a scalar."""

    base: object
    exponent: Fraction
    shape: tuple[bool, bool] = SCALAR


@dataclass(frozen=True)
class ElementwisePower:
    """``base.^exponent``: a power of every entry of a vector or matrix (``v.^-1``)."""

    base: object
    exponent: Fraction

    @property
    def shape(self) -> tuple[bool, bool]:
        return self.base.shape


@dataclass(frozen=True)
class Hadamard:
    """``a ⊙ b ⊙ ...``: the elementwise product of operands of one shape."""

    operands: tuple

    @property
    def shape(self) -> tuple[bool, bool]:
        return self.operands[0].shape


@dataclass(frozen=True)
class Product:
    """``coeff * factors[0] factors[1] ... / (divisors)``: juxtaposition is the matrix product,
    scalar factors come first, divisors are scalars."""

    coeff: Fraction
    factors: tuple
    divisors: tuple = ()

    @property
    def shape(self) -> tuple[bool, bool]:
        shaped = [f.shape for f in self.factors if f.shape != SCALAR]
        return (shaped[0][0], shaped[-1][1]) if shaped else SCALAR


@dataclass(frozen=True)
class Sum:
    """A sum of products (their coefficients carry the signs)."""

    terms: tuple

    @property
    def shape(self) -> tuple[bool, bool]:
        shaped = [t.shape for t in self.terms if t.shape != SCALAR]
        return shaped[0] if shaped else SCALAR


def transpose(expr):
    """``expr^T``, pushed down to the leaves: ``(A B)^T = B^T A^T``, ``(X^-1)^T = X^-T``."""
    if expr.shape == SCALAR:
        return expr
    if isinstance(expr, Transpose):
        return expr.operand
    if isinstance(expr, Number):
        return Number(expr.value, (expr.shape[1], expr.shape[0]))
    if isinstance(expr, Inverse):
        return Inverse(expr.matrix, not expr.transposed)
    if isinstance(expr, Identity):
        return expr
    if isinstance(expr, Call) and expr.func == "diag":
        return expr
    if isinstance(expr, ElementwisePower):
        return ElementwisePower(transpose(expr.base), expr.exponent)
    if isinstance(expr, Product):
        scalars = [f for f in expr.factors if f.shape == SCALAR]
        shaped = [transpose(f) for f in reversed(expr.factors) if f.shape != SCALAR]
        return Product(expr.coeff, tuple(scalars + shaped), expr.divisors)
    if isinstance(expr, Sum):
        return Sum(tuple(transpose(t) for t in expr.terms))
    return Transpose(expr)


# -- printing -----------------------------------------------------------------------------------------

# Matrix notation reads the precedence table of index notation (:class:`einderiv.glyphs.Precedence`):
# a sum, then the elementwise product ``⊙``, then juxtaposition, then the postfix ``^T``, ``^-1``, ``^k``.


def _level(expr) -> Precedence:
    if isinstance(expr, Sum):
        return Precedence.SUM
    if isinstance(expr, Hadamard):
        return Precedence.HADAMARD
    if isinstance(expr, Product):
        if expr.coeff < 0:
            return Precedence.SUM  # "-A x" inside a product reads as a difference: parenthesise
        visible = len(expr.factors) + (expr.coeff != 1) + bool(expr.divisors)
        return Precedence.PRODUCT if visible > 1 else _level(expr.factors[0]) if expr.factors else Precedence.ATOM
    if isinstance(expr, (Transpose, Inverse, Power, ElementwisePower)):
        return Precedence.POWER
    if isinstance(expr, Number) and (expr.value < 0 or "/" in format_number(expr.value)):
        return Precedence.SUM
    return Precedence.ATOM


def _wrap(expr, needed: Precedence) -> str:
    text = to_text(expr)
    return f"({text})" if _level(expr) < needed else text


def _number(value: Fraction) -> str:
    text = format_number(value)
    return f"({text})" if "/" in text else text


def _product_text(expr: Product, signed: bool = True, in_sum: bool = False) -> str:
    """The product with its coefficient's magnitude; ``signed`` prefixes a negative one's ``-``;
    ``in_sum``: a term of a sum (an elementwise product there is parenthesised, for clarity)."""
    magnitude = abs(expr.coeff)
    factors = [f for f in expr.factors if not _is_ones(f)]
    parts = [_number(magnitude)] if magnitude != 1 or not factors else []
    alone = len(factors) == 1 and not parts and not expr.divisors
    if alone and _level(factors[0]) < Precedence.PRODUCT:  # -(a ⊙ b); in a sum, (a ⊙ b) for clarity
        alone = not in_sum and (expr.coeff > 0 or not signed)
    parts += [to_text(factors[0]) if alone else _wrap(f, Precedence.POWER) for f in factors]
    text = " ".join(parts)
    if expr.divisors:
        divisor = expr.divisors[0] if len(expr.divisors) == 1 else Product(Fraction(1), expr.divisors)
        text += " / " + _wrap(divisor, Precedence.POWER)
    return ("-" + text) if signed and expr.coeff < 0 else text


def _is_ones(expr) -> bool:
    """The all-ones vector or matrix a constant term stands on: printed as its coefficient."""
    return isinstance(expr, Number) and expr.value == 1 and expr.shape != SCALAR


def to_text(expr) -> str:  # noqa: C901 - one case per node type
    """The matrix notation of a tree: ``A x + A^T x``, ``-2 Phi^T (y - Phi theta)``."""
    if isinstance(expr, Symbol):
        return expr.name
    if isinstance(expr, Number):
        return format_number(expr.value)
    if isinstance(expr, Identity):
        return "I"
    if isinstance(expr, Transpose):
        return _wrap(expr.operand, Precedence.ATOM) + "^T"
    if isinstance(expr, Inverse):
        return expr.matrix + ("^-T" if expr.transposed else "^-1")
    if isinstance(expr, Power):
        return _wrap(expr.base, Precedence.ATOM) + "^" + format_number(expr.exponent)
    if isinstance(expr, ElementwisePower):
        return _wrap(expr.base, Precedence.ATOM) + ".^" + format_number(expr.exponent)
    if isinstance(expr, Call):
        return f"{expr.func}({to_text(expr.arg)})"
    if isinstance(expr, Hadamard):
        return " ⊙ ".join(_wrap(o, Precedence.POWER) for o in expr.operands)
    if isinstance(expr, Product):
        return _product_text(expr)
    if isinstance(expr, Sum):
        first, *rest = expr.terms
        parts = [_term_text(first, leading=True)]
        parts += [("- " if _negative(t) else "+ ") + _term_text(t, leading=False) for t in rest]
        return " ".join(parts)
    raise TypeError(f"cannot print {type(expr).__name__}")


def _negative(term) -> bool:
    return isinstance(term, Product) and term.coeff < 0


def _term_text(term, leading: bool) -> str:
    if isinstance(term, Product):
        return _product_text(term, signed=leading, in_sum=True)
    return _wrap(term, Precedence.HADAMARD)
