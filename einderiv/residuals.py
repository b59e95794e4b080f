"""Residuals named for evaluation: a statement's differences of data kept as arrays of their own.

Differentiation multiplies products out (the normal form is a sum of products), so the Hessian
of ``f = sum_n(((x_n - mean_k(x_k)) / s)^2 t_n)`` holds ``x_n x_n x_m`` beside ``x_n m x_m``
and ``m m x_m``: near a fit, or with data offset by 1e6, the products apart cancel to noise
(the gradient was 2086x off at 1e6).  The same function written as a program,
``c_n = x_n - mean_k(x_k); L = sum_n((c_n / s)^2 t_n)``, keeps c one node and is exact.

:func:`residuals_named` writes a program that way: each sum of data that is an operand (a
factor of a product, the base of a power, a part of a quotient: ``x_n - mean_k(x_k)``, ``X_nd
- Z_md``, ``y_n - X_nd w_d - b``) becomes a statement of its own, named apart from the user's
names.  :func:`einderiv.api.diff` evaluates a derivative through that program's derivative,
and prints the user's: naming is a way of evaluating, not a change of meaning.  Only sums of
tensors, products of tensors, numbers and sums or means of those are named; a sum holding a
call (``1 - sigmoid(z)``, ``1 + exp(u)``) is left to the stable rewrites, which read it whole,
and a sum with a constant term (``1 - y_n``) is no difference of data.
"""

from __future__ import annotations

import warnings

from .errors import EinderivError
from .ir import Add, Call, Div, Mul, Neg, Number, Pow, Program, Statement, Tensor, renamed, walk, with_children
from .lower import free_indices
from .normal import equivalent
from .program import Definition, substitute_tensor
from .semantics import check_statement

#: reductions whose argument may sit inside a named residual (``mean_k(x_k)``)
_LINEAR_REDUCTIONS = ("sum", "mean")


def _linear(node) -> bool:
    """Whether ``node`` is a product of tensors and numbers, or a sum or mean of sums of those."""
    if isinstance(node, (Tensor, Number)):
        return True
    if isinstance(node, Neg):
        return _linear(node.operand)
    if isinstance(node, Mul):
        return all(_linear(f) for f in node.factors)
    if isinstance(node, Div):
        return _linear(node.numerator) and isinstance(node.denominator, Number)
    if isinstance(node, Call):
        return node.func in _LINEAR_REDUCTIONS and bool(node.over) and _linear(node.arg)
    if isinstance(node, Add):
        return all(_linear(t) for t in node.terms)
    return False


def _is_residual(node) -> bool:
    """A sum of two or more terms, each holding data and no call but sums and means: a
    difference of data, whose tensors write every letter in it, so that its statement sizes
    itself (``x_k - sum_j(c)`` sums a letter that only the statement around it sizes)."""
    if not isinstance(node, Add) or len(node.terms) < 2:
        return False
    holds_data = [any(isinstance(n, Tensor) for n in walk(t)) for t in node.terms]
    if not (all(holds_data) and all(_linear(t) for t in node.terms)):
        return False
    written = {i for n in walk(node) if isinstance(n, Tensor) for i in n.indices}
    letters = {i for n in walk(node) if isinstance(n, Call) for i in n.over}
    return letters <= written


def _key(add: Add, free: tuple[str, ...]) -> str:
    """``add`` up to the letters of its free indices (by position)."""
    for k, letter in enumerate(free):
        add = renamed(add, letter, f"\u03b1{k}")
    return repr(add)


class _Namer:
    def __init__(self, taken: set[str]):
        self.taken = taken
        self.statements: list[Statement] = []
        self.names: dict[str, str] = {}  # a residual up to its free letters -> its statement

    def residual(self, add: Add):
        free = free_indices(add)
        key = _key(add, free)
        name = self.names.get(key)
        if name is None:
            number = len(self.names)
            while f"_r{number}" in self.taken:
                number += 1
            name = self.names[key] = f"_r{number}"
            self.taken.add(name)
            self.statements.append(Statement(Tensor(name, free), add))
        return Tensor(name, free)

    def operand(self, node):
        """``node`` with its residual operands named (inner ones first)."""
        node = with_children(node, self.operand)
        if isinstance(node, Mul):
            return Mul(tuple(self.residual(f) if _is_residual(f) else f for f in node.factors))
        if isinstance(node, Pow) and _is_residual(node.base):
            return Pow(self.residual(node.base), node.exponent)
        if isinstance(node, Div):
            parts = [self.residual(p) if _is_residual(p) else p for p in (node.numerator, node.denominator)]
            return Div(*parts)
        return node


def _same_meaning(original: Statement, rewritten: Statement, named: list[Statement]) -> bool:
    """Whether ``rewritten``, with the residual statements ``named`` substituted back, is the
    normal form of ``original``: a sum whose terms the statement sums apart (``f = 2 (3 (x_i + 1)
    - y_j) / 6`` sums i in one term and j in the other) is no array over both letters."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before, _ = check_statement(original)
            after, _ = check_statement(rewritten)
            for statement in reversed(named):  # a later residual may use an earlier one
                poly, _ = check_statement(statement)
                name = statement.target.name
                after, _ = substitute_tensor(after, name, Definition(name, statement.target.indices, poly))
    except EinderivError:
        return False
    return equivalent(before, after)


def residuals_named(program: Program) -> Program | None:
    """``program`` with every residual operand a statement of its own, in each statement that
    then means what it meant (:func:`_same_meaning`); None where none is named (or the program
    holds a derivative-named statement, whose denominators fix its letters)."""
    if any(s.wrt for s in program.statements):
        return None
    taken = {s.target.name for s in program.statements if s.target is not None}
    taken |= {n.name for s in program.statements for n in walk(s.rhs) if isinstance(n, Tensor)}
    namer = _Namer(taken)
    statements: list[Statement] = []
    for statement in program.statements:
        before, names = len(namer.statements), dict(namer.names)
        rewritten = Statement(statement.target, namer.operand(statement.rhs), statement.wrt)
        added = namer.statements[before:]
        if rewritten != statement and not _same_meaning(statement, rewritten, namer.statements):
            del namer.statements[before:]
            namer.names = names
            rewritten, added = statement, []
        statements += added
        statements.append(rewritten)
    if not namer.statements:
        return None
    return Program(tuple(statements))
