"""Expression IR: immutable nodes for what the user wrote, and their printer.

Nodes keep the user's structure (sums, products, parentheses become nesting) so that
``parse(str(e)) == e``.  Index names stay names (``("p", "q")``) until the emitter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

Indices = tuple[str, ...]


def format_indices(indices: Indices, braced: bool = False) -> str:
    """``("p", "q")`` -> ``"_pq"``; other names use the braced form, which reads back to the same
    indices: ``_{in,out}``, ``_{i1}`` (a letter and its digits), ``_{in,}`` (one longer name).
    ``braced`` asks for the braced form even for single letters (``_{i,j}``)."""
    if not indices:
        return ""
    if all(len(i) == 1 for i in indices) and not braced:
        return "_" + "".join(indices)
    if len(indices) == 1:
        return "_{" + indices[0] + ("}" if _ONE_LETTER_INDEX.match(indices[0]) else ",}")
    return "_{" + ",".join(indices) + "}"


_ONE_LETTER_INDEX = re.compile(r"[A-Za-z][0-9]*\Z")


def to_float(value: Fraction) -> float:
    """An exact coefficient as a float; beyond float64's range it is ±inf, as IEEE arithmetic has it."""
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def format_number(value: Fraction) -> str:
    """Exact text for a rational: ``2``, ``0.125``, and ``1/3`` when no finite decimal exists."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = max(twos, fives)
    scaled = abs(value.numerator) * 10**digits // value.denominator
    text = str(scaled).rjust(digits + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{text[:-digits]}.{text[-digits:]}"


@dataclass(frozen=True)
class Tensor:
    """A tensor reference ``R_mp``; a scalar input has no indices."""

    name: str
    indices: Indices = ()

    def __str__(self) -> str:
        return self.name + format_indices(self.indices)


@dataclass(frozen=True)
class Delta:
    """The Kronecker delta ``delta_ij``: 1 where i == j, else 0."""

    first: str
    second: str

    @property
    def indices(self) -> Indices:
        return (self.first, self.second)

    def __str__(self) -> str:
        return "delta" + format_indices(self.indices)


@dataclass(frozen=True)
class Number:
    """An exact rational constant."""

    value: Fraction

    def __str__(self) -> str:
        return format_number(self.value)


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Expr

    def __str__(self) -> str:
        if isinstance(self.operand, Number):
            return "-" + str(self.operand)  # "-1/3" reads back as (-1)/3: the same value
        return "-" + _wrap(self.operand, _SIGNED)


@dataclass(frozen=True)
class Add:
    """A sum; subtraction is ``Add(a, Neg(b))``."""

    terms: tuple[Expr, ...]

    def __str__(self) -> str:
        parts = [_wrap(self.terms[0], _SUM)]
        for term in self.terms[1:]:
            if isinstance(term, Neg):
                parts.append("- " + _wrap(term.operand, _PRODUCT))
            else:
                parts.append("+ " + _wrap(term, _PRODUCT))
        return " ".join(parts)


@dataclass(frozen=True)
class Mul:
    """A product (juxtaposition or ``*``); indices repeated across its factors are contracted.

    Its factors are a chain: a leading ``Div`` continues it (``a / b c`` is a, 1/b and c),
    every other factor that is not a tensor or number is a group of its own (parentheses).
    A one-factor ``Mul`` is a parenthesised product or division: ``(a / b)``."""

    factors: tuple[Expr, ...]

    def __str__(self) -> str:
        if len(self.factors) == 1:
            return f"({self.factors[0]})"
        head = self.factors[0]
        first = _wrap(head, _FACTOR if isinstance(head, Mul) else _PRODUCT)
        rest = [_wrap(f, _FACTOR) for f in self.factors[1:]]
        return " ".join([first, *rest])


@dataclass(frozen=True)
class Div:
    """``numerator / denominator``."""

    numerator: Expr
    denominator: Expr

    def __str__(self) -> str:
        return f"{_wrap(self.numerator, _PRODUCT)} / {_wrap(self.denominator, _SIGNED)}"


@dataclass(frozen=True)
class Call:
    """``func(arg)``: an elementwise function, or a reduction ``sum_i(arg)`` when ``over`` is set."""

    func: str
    arg: Expr
    over: Indices = ()

    def __str__(self) -> str:
        return f"{self.func}{format_indices(self.over)}({self.arg})"


@dataclass(frozen=True)
class MatrixCall:
    """A function of a whole square matrix, named: ``inv(M)_ij`` (indexed), ``det(M)``, ``logdet(M)``."""

    func: str
    matrix: str
    indices: Indices = ()

    def __str__(self) -> str:
        return f"{self.func}({self.matrix}){format_indices(self.indices)}"


@dataclass(frozen=True)
class Pow:
    """``base ^ exponent`` with a numeric exponent, elementwise."""

    base: Expr
    exponent: Fraction

    def __str__(self) -> str:
        return f"{_wrap(self.base, _ATOM)}^{format_number(self.exponent)}"


Expr = Tensor | Delta | Number | Neg | Add | Mul | Div | Call | Pow | MatrixCall

# Precedence levels of the grammar: sum < product < signed < factor (power) < atom.
_SUM, _PRODUCT, _SIGNED, _FACTOR, _ATOM = range(5)


def _level(expr: Expr) -> int:
    if isinstance(expr, Add):
        return _SUM
    if isinstance(expr, Mul) and len(expr.factors) == 1:
        return _ATOM  # prints its own parentheses
    if isinstance(expr, (Mul, Div)):
        return _PRODUCT
    if isinstance(expr, Neg):
        return _SIGNED
    if isinstance(expr, Number) and expr.value.denominator != 1 and "/" in str(expr):
        return _PRODUCT  # printed as "1/3"
    if isinstance(expr, Pow):
        return _FACTOR
    return _ATOM


def _wrap(expr: Expr, needed: int) -> str:
    text = str(expr)
    return f"({text})" if _level(expr) < needed else text


def derivative_name(name: str, order: int) -> str:
    """The name of the ``order``-th derivative of ``name``: ``df`` (order 1), ``d2f`` (order 2);
    a denominator is named as a first derivative (``dx``)."""
    return ("d" if order == 1 else f"d{order}") + name


@dataclass(frozen=True)
class Statement:
    """``target = rhs``.  ``target`` is None for a bare expression (implicit output indices).

    A derivative-named statement ``dK_pq/dR_ij = ...`` keeps its denominators in ``wrt``;
    its output indices are the target's followed by each denominator's.
    """

    target: Tensor | None
    rhs: Expr
    wrt: tuple[Tensor, ...] = ()

    @property
    def name(self) -> str | None:
        if self.target is None:
            return None
        if not self.wrt:
            return self.target.name
        return self.target.name + "/" + "".join(w.name for w in self.wrt)

    @property
    def differentiated(self) -> str | None:
        """The name a derivative-named statement differentiates, read by :func:`derivative_name`'s
        rule from its order: ``dist`` for ``ddist/dx_i``, ``d2x`` for ``d2d2x/dy_i dy_j``, ``f`` for
        ``df/dx_i dx_j`` written without its order, ``""`` for ``d/dx_i`` (a bare expression's);
        None for a statement that is no derivative."""
        if self.target is None or not self.wrt:
            return None
        prefix = derivative_name("", len(self.wrt))
        name = self.target.name
        return name[len(prefix) :] if name.startswith(prefix) else name[1:]

    @property
    def denominators(self) -> tuple[Tensor, ...]:
        """The tensors a derivative-named statement differentiates by: ``R_ij`` for ``dK_pq/dR_ij``."""
        return tuple(Tensor(w.name[1:], w.indices) for w in self.wrt)

    def __str__(self) -> str:
        if self.target is None:
            return str(self.rhs)
        lhs = str(self.target)
        if self.wrt:
            lhs += "/" + " ".join(str(w) for w in self.wrt)
        return f"{lhs} = {self.rhs}"


@dataclass(frozen=True)
class Program:
    """One or more statements; the last is the output."""

    statements: tuple[Statement, ...]

    @property
    def output(self) -> Statement:
        return self.statements[-1]

    def __str__(self) -> str:
        return "\n".join(str(s) for s in self.statements)


def walk(expr: Expr):
    """Yield every node of ``expr``, parents before children."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Neg):
            stack.append(node.operand)
        elif isinstance(node, Add):
            stack.extend(reversed(node.terms))
        elif isinstance(node, Mul):
            stack.extend(reversed(node.factors))
        elif isinstance(node, Div):
            stack.extend([node.denominator, node.numerator])
        elif isinstance(node, Call):
            stack.append(node.arg)
        elif isinstance(node, Pow):
            stack.append(node.base)
