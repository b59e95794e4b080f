"""Index rules of a statement: output indices, rank consistency, and the normal form."""

from __future__ import annotations

from collections import Counter

from .errors import IndexRuleError
from .index_names import reserved_letters
from .ir import Call, Delta, Expr, Indices, MatrixCall, Statement, Tensor, children, walk
from .lower import implicit_indices, lower
from .normal import Poly, simplify


def tensor_ranks(expr: Expr, where: str = "") -> dict[str, int]:
    """Name -> number of indices; a tensor used with two different ranks is an error."""
    ranks: dict[str, int] = {}
    seen: dict[str, Tensor] = {}
    for node in walk(expr):
        if isinstance(node, MatrixCall):
            node = Tensor(node.matrix, ("?", "?"))
            shown = f"{node.name} in a matrix function"
        else:
            shown = None
        if isinstance(node, Tensor):
            rank = len(node.indices)
            if node.name in ranks and ranks[node.name] != rank:
                raise IndexRuleError(
                    f"tensor {node.name!r} is used with {ranks[node.name]} indices ({seen[node.name]}) "
                    f"and with {rank} ({node}){where}"
                )
            ranks[node.name] = rank
            seen[node.name] = shown or node
    return ranks


def _unreduced_letters(expr: Expr) -> set[str]:
    """The index letters ``expr`` writes outside every reduction that binds them: in
    ``sum_i(x_i) + A_ij`` i and j; in ``sum_i(x_i)`` none (softmax keeps its axis)."""
    out: set[str] = set()
    stack: list[tuple[Expr, frozenset[str]]] = [(expr, frozenset())]
    while stack:
        node, bound = stack.pop()
        if isinstance(node, (Tensor, Delta, MatrixCall)):
            out.update(i for i in node.indices if i not in bound)
        if isinstance(node, Call) and node.over and node.func != "softmax":
            bound = bound | set(node.over)
        stack.extend((child, bound) for child in children(node))
    return out


def output_indices(statement: Statement) -> Indices:
    """The result's axes: the LHS indices (then each derivative denominator's), or implicit ones."""
    if statement.target is None:
        return implicit_indices(statement.rhs)
    return statement.target.indices + tuple(i for w in statement.wrt for i in w.indices)


def check_statement(statement: Statement) -> tuple[Poly, Poly]:
    """Validate a statement; return its right-hand side in normal form, and unsimplified.

    The unsimplified terms keep every tensor the user wrote (zero terms included), so
    evaluation can check and bind every input's sizes against them.
    """
    where = f" in {statement}" if len(str(statement)) < 80 else ""
    ranks = tensor_ranks(statement.rhs, where)
    name = statement.target.name if statement.target is not None else None
    if name is not None and name in ranks and not statement.wrt:
        raise IndexRuleError(f"{name!r} is defined by this statement and cannot also appear on its right-hand side")
    indices = output_indices(statement)
    if statement.target is not None:
        repeated = [i for i, c in Counter(indices).items() if c > 1]
        if repeated:
            raise IndexRuleError(
                f"index {repeated[0]!r} is repeated on the left-hand side of {statement}: "
                "each output axis needs its own index (write a diagonal with delta)"
            )
        used = {
            i for node in walk(statement.rhs) if isinstance(node, (Tensor, Delta, MatrixCall)) for i in node.indices
        }
        missing = [i for i in indices if i not in used]
        if missing and not statement.wrt:  # a derivative may be constant along some of its axes
            raise IndexRuleError(
                f"left-hand side index {missing[0]!r} appears in no term of the right-hand side{where}"
            )
        reduced = [i for i in indices if i not in _unreduced_letters(statement.rhs)]
        if reduced and not statement.wrt:
            raise IndexRuleError(
                f"left-hand side index {reduced[0]!r} is summed away on the right-hand side (a reduction over "
                f"{reduced[0]!r} binds it){where}, so the result does not vary along it: use another letter for "
                f"the reduction, or leave {reduced[0]!r} off the left-hand side"
            )
    written = {i for node in walk(statement.rhs) for i in getattr(node, "indices", ()) or ()}
    written |= {i for node in walk(statement.rhs) if isinstance(node, Call) for i in node.over or ()}
    with reserved_letters(written | set(indices)):
        terms = lower(statement.rhs, frozenset(indices), written=not statement.wrt)
        return simplify(terms, indices), Poly(tuple(terms), indices)
