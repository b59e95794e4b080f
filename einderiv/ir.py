"""Expression IR: immutable nodes for what the user wrote, and the one walk that prints them.

Nodes keep the user's structure (sums, products, parentheses become nesting) so that
``parse(str(e)) == e``.  Index names stay names (``("p", "q")``) until the emitter.
:func:`write` prints a node with a glyph table (:mod:`einderiv.glyphs`): ``str()`` is
``write(node, TEXT)``; :mod:`einderiv.render` passes the Unicode and LaTeX tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .glyphs import TEXT, Glyphs, Precedence, format_number

Indices = tuple[str, ...]


class Node:
    """A node of the IR; ``str()`` prints it as text that the parser reads back."""

    __slots__ = ()

    def __str__(self) -> str:
        return write(self, TEXT)


def to_float(value: Fraction) -> float:
    """An exact coefficient as a float; beyond float64's range it is ±inf, as IEEE arithmetic has it."""
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


@dataclass(frozen=True)
class Tensor(Node):
    """A tensor reference ``R_mp``; a scalar input has no indices."""

    name: str
    indices: Indices = ()


@dataclass(frozen=True)
class Delta(Node):
    """The Kronecker delta ``delta_ij``: 1 where i == j, else 0."""

    first: str
    second: str

    @property
    def indices(self) -> Indices:
        return (self.first, self.second)


@dataclass(frozen=True)
class Number(Node):
    """An exact rational constant."""

    value: Fraction


@dataclass(frozen=True)
class Neg(Node):
    """Unary minus."""

    operand: Expr


@dataclass(frozen=True)
class Add(Node):
    """A sum; subtraction is ``Add(a, Neg(b))``."""

    terms: tuple[Expr, ...]


@dataclass(frozen=True)
class Mul(Node):
    """A product (juxtaposition or ``*``); indices repeated across its factors are contracted.

    Its factors are a chain: a leading ``Div`` continues it (``a / b c`` is a, 1/b and c),
    every other factor that is not a tensor or number is a group of its own (parentheses).
    A one-factor ``Mul`` is a parenthesised product or division: ``(a / b)``."""

    factors: tuple[Expr, ...]


@dataclass(frozen=True)
class Div(Node):
    """``numerator / denominator``."""

    numerator: Expr
    denominator: Expr


@dataclass(frozen=True)
class Call(Node):
    """``func(arg)``: an elementwise function, or a reduction ``sum_i(arg)`` when ``over`` is set."""

    func: str
    arg: Expr
    over: Indices = ()


@dataclass(frozen=True)
class MatrixCall(Node):
    """A function of a whole square matrix, named: ``inv(M)_ij`` (indexed), ``det(M)``, ``logdet(M)``,
    ``logabsdet(M)``."""

    func: str
    matrix: str
    indices: Indices = ()


@dataclass(frozen=True)
class Pow(Node):
    """``base ^ exponent`` with a numeric exponent, elementwise."""

    base: Expr
    exponent: Fraction


Expr = Tensor | Delta | Number | Neg | Add | Mul | Div | Call | Pow | MatrixCall


def renamed(expr: Expr, old: str, new: str, own: bool = False, top: bool = True) -> Expr:
    """``expr`` with index ``old`` written as ``new`` everywhere (a sum's letters too): meaning the
    same where ``new`` is written nowhere in it.  With ``own``, only where ``expr``'s own scope
    binds it: a reduction inside that binds ``old`` again keeps its letter."""
    if own and not top and binds(expr, old):
        return expr

    def swap(indices):
        return tuple(new if i == old else i for i in indices)

    if isinstance(expr, Tensor):
        return Tensor(expr.name, swap(expr.indices))
    if isinstance(expr, Delta):
        return Delta(*swap(expr.indices))
    if isinstance(expr, MatrixCall):
        return MatrixCall(expr.func, expr.matrix, swap(expr.indices))
    if isinstance(expr, Call):
        return Call(expr.func, renamed(expr.arg, old, new, own, False), swap(expr.over))
    return with_children(expr, lambda child: renamed(child, old, new, own, False))


def with_children(node: Expr, change) -> Expr:
    """``node`` rebuilt with ``change`` applied to each node directly inside it (those
    :func:`children` lists); a leaf as it is."""
    if isinstance(node, Neg):
        return Neg(change(node.operand))
    if isinstance(node, Add):
        return Add(tuple(change(t) for t in node.terms))
    if isinstance(node, Mul):
        return Mul(tuple(change(f) for f in node.factors))
    if isinstance(node, Div):
        return Div(change(node.numerator), change(node.denominator))
    if isinstance(node, Call):
        return Call(node.func, change(node.arg), node.over)
    if isinstance(node, Pow):
        return Pow(change(node.base), node.exponent)
    return node


def derivative_name(name: str, order: int) -> str:
    """The name of the ``order``-th derivative of ``name``: ``df`` (order 1), ``d2f`` (order 2);
    a denominator is named as a first derivative (``dx``)."""
    return ("d" if order == 1 else f"d{order}") + name


@dataclass(frozen=True)
class Statement(Node):
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


@dataclass(frozen=True)
class Program(Node):
    """One or more statements; the last is the output."""

    statements: tuple[Statement, ...]

    @property
    def output(self) -> Statement:
        return self.statements[-1]


def children(node: Expr) -> tuple[Expr, ...]:
    """The nodes directly inside ``node``."""
    if isinstance(node, Neg):
        return (node.operand,)
    if isinstance(node, Add):
        return node.terms
    if isinstance(node, Mul):
        return node.factors
    if isinstance(node, Div):
        return (node.numerator, node.denominator)
    if isinstance(node, Call):
        return (node.arg,)
    if isinstance(node, Pow):
        return (node.base,)
    return ()


def walk(expr: Expr):
    """Yield every node of ``expr``, parents before children."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def binds(node: Expr, letter: str) -> bool:
    """Whether ``node`` is a reduction binding ``letter`` in its argument (softmax keeps its axis)."""
    return isinstance(node, Call) and letter in node.over and node.func != "softmax"


def letters(node: Expr) -> set[str]:
    """Every index letter written in ``node``: its tensors', deltas', matrix calls' and reductions'."""
    out: set[str] = set()
    for n in walk(node):
        if isinstance(n, (Tensor, Delta, MatrixCall)):
            out |= set(n.indices)
        elif isinstance(n, Call):
            out |= set(n.over)
    return out


def precedence(node: Expr) -> Precedence:
    """How tightly ``node`` binds as printed (the grammar's levels; the same in every output)."""
    kind = type(node)
    if kind is Mul:
        return Precedence.ATOM if len(node.factors) == 1 else Precedence.PRODUCT  # (a b) prints its own parentheses
    if kind is Number:  # "1/3" is a division: "x / (1/3)" reads back as x times 3
        return Precedence.PRODUCT if "/" in format_number(node.value) else Precedence.ATOM
    return _LEVELS.get(kind, Precedence.ATOM)


def write(node: Expr | Statement | Program, glyphs: Glyphs) -> str:
    """``node`` printed with ``glyphs``: an expression, a statement (``lhs = rhs``) or a program
    (one statement a line)."""
    if isinstance(node, Program):
        return "\n".join(write(s, glyphs) for s in node.statements)
    if isinstance(node, Statement):
        rhs = _expression(node.rhs, glyphs)
        return rhs if node.target is None else f"{write_lhs(node, glyphs)} = {rhs}"
    return _expression(node, glyphs)


def write_lhs(statement: Statement, glyphs: Glyphs) -> str:
    """A named statement's left-hand side: its target (``K_pq``), or its derivative (``dK_pq/dR_ij``)."""
    if statement.wrt:
        return glyphs.derivative(statement, lambda part: write(part, glyphs))
    return _expression(statement.target, glyphs)


def _expression(node: Expr, glyphs: Glyphs) -> str:
    writer = _WRITERS.get(type(node))
    if writer is None:
        raise TypeError(f"cannot print {type(node).__name__}")
    return writer(node, glyphs)


def _wrapped(node: Expr, needed: Precedence, glyphs: Glyphs) -> str:
    """``node``, parenthesised where it binds more loosely than its place needs (a big operator,
    ``\\sum_{i} (x_i)``, as loosely as a product)."""
    text = _expression(node, glyphs)
    binds = Precedence.PRODUCT if type(node) is Call and node.func in glyphs.loose_calls else precedence(node)
    return glyphs.group[0] + text + glyphs.group[1] if binds < needed else text


def _tensor(node: Tensor, glyphs: Glyphs) -> str:
    return glyphs.name(node.name) + glyphs.indices(node.indices)


def _delta(node: Delta, glyphs: Glyphs) -> str:
    return glyphs.delta + glyphs.indices(node.indices)


def _number(node: Number, glyphs: Glyphs) -> str:
    return glyphs.number(node.value)


def _neg(node: Neg, glyphs: Glyphs) -> str:
    if glyphs.bare_signed_number and type(node.operand) is Number:
        return "-" + glyphs.number(node.operand.value)  # "-1/3" reads back as (-1)/3: the same value
    return "-" + _wrapped(node.operand, Precedence.SIGNED, glyphs)


def _add(node: Add, glyphs: Glyphs) -> str:
    parts = [_wrapped(node.terms[0], Precedence.SUM, glyphs)]
    for term in node.terms[1:]:
        if type(term) is Neg:
            parts.append("- " + _wrapped(term.operand, Precedence.PRODUCT, glyphs))
        else:
            parts.append("+ " + _wrapped(term, Precedence.PRODUCT, glyphs))
    return " ".join(parts)


def _mul(node: Mul, glyphs: Glyphs) -> str:
    if len(node.factors) == 1:  # parentheses make a group (index scoping): keep them
        return glyphs.group[0] + _expression(node.factors[0], glyphs) + glyphs.group[1]
    head = node.factors[0]
    loose = type(head) is Call and head.func in glyphs.loose_calls  # sum_i(x_i) y_i: not the sum of x_i y_i
    first = _wrapped(head, Precedence.POWER if type(head) is Mul or loose else Precedence.PRODUCT, glyphs)
    rest = [_wrapped(f, Precedence.POWER, glyphs) for f in node.factors[1:]]
    if glyphs.between is None:
        return " ".join([first, *rest])
    text = first
    for left, right in zip([first, *rest], rest):
        text += glyphs.between(left, right) + right
    return text


#: text that ends in a power which, followed by '/' and a number, reads as a slipped exponent
#: (``x^-1 / 3``: the parser refuses the reading, the power -1/3 being meant as often; the printer
#: parenthesises such a numerator); group 1 is the power
SLIPPING_POWER = re.compile(r"\^\s*(-\s*\d+(?:\.\d*)?|1)\s*$")


def _div(node: Div, glyphs: Glyphs) -> str:
    if glyphs.fraction is not None:
        return glyphs.fraction(_expression(node.numerator, glyphs), _expression(node.denominator, glyphs))
    numerator = _wrapped(node.numerator, Precedence.PRODUCT, glyphs)
    denominator = _wrapped(node.denominator, Precedence.SIGNED, glyphs)
    if SLIPPING_POWER.search(numerator) and denominator[:1].isdigit():
        numerator = glyphs.group[0] + numerator + glyphs.group[1]  # (x_i^-1) / 3 reads back
    return f"{numerator} / {denominator}"


def _pow(node: Pow, glyphs: Glyphs) -> str:
    return _wrapped(node.base, Precedence.ATOM, glyphs) + glyphs.power(format_number(node.exponent))


def _call(node: Call, glyphs: Glyphs) -> str:
    return glyphs.call(node.func, node.over, _expression(node.arg, glyphs))


def _matrix_call(node: MatrixCall, glyphs: Glyphs) -> str:
    return glyphs.matrix_call(node.func, glyphs.name(node.matrix), glyphs.indices(node.indices))


#: The precedence of the nodes whose precedence is fixed (a Mul and a Number depend on their content).
_LEVELS = {Add: Precedence.SUM, Div: Precedence.PRODUCT, Neg: Precedence.SIGNED, Pow: Precedence.POWER}

#: One writer per node type: the walk.
_WRITERS = {
    Tensor: _tensor,
    Delta: _delta,
    Number: _number,
    Neg: _neg,
    Add: _add,
    Mul: _mul,
    Div: _div,
    Pow: _pow,
    Call: _call,
    MatrixCall: _matrix_call,
}
