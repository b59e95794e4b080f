"""Index rules of a statement: output indices, rank consistency, and the normal form."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import replace

from .errors import EinderivError, EinderivWarning, IndexRuleError, warn_user
from .index_names import fresh_indices, reserved_letters
from .ir import (
    Add,
    Call,
    Delta,
    Expr,
    Indices,
    MatrixCall,
    Neg,
    Statement,
    Tensor,
    binds,
    children,
    letters,
    renamed,
    walk,
    with_children,
)
from .lower import implicit_indices, lower
from .normal import Poly, simplify
from .scopes import delta_letters_apart


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
    written = letters(statement.rhs)
    with reserved_letters(written | set(indices)):
        terms = lower(statement.rhs, frozenset(indices), written=not statement.wrt)
        return simplify(terms, indices), Poly(tuple(terms), indices)


def own_nodes(scope: Expr, letter: str):
    """The nodes of ``scope`` where ``letter`` is the scope's own: nested reductions that bind
    ``letter`` again are left out."""
    stack = [scope]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in children(node) if not binds(child, letter))


def additive_terms(expr: Expr) -> list[Expr]:
    if isinstance(expr, Add):
        return [t for term in expr.terms for t in additive_terms(term)]
    if isinstance(expr, Neg):
        return additive_terms(expr.operand)
    return [expr]


def letters_apart(statement: Statement) -> Statement:
    """``statement`` with a summed letter renamed in its own scope (a reduction's body, or a
    top-level term's implicit sum) where the statement would otherwise size it by another
    scope's tensors: each sum is its own.  Where only a delta joins it to a letter and a tensor
    in another term writes it: in ``sum_i(x_i x_i sum_k(1 + delta_ik)) + sum_k(w_k)`` the first
    k runs over x's length (the delta joins it to i) and the second over w's (the count of k took
    w's length, silently, a meaning hunt's find).  And where a sum counts it apart from its
    tensors and another sum or term writes it at another axis (:func:`_counts_apart`).  A letter
    a tensor writes elsewhere in the scope's own term is rule 6's to warn about, and stays.
    Renaming a bound letter to a letter the statement does not write keeps the meaning; every
    scope is decided on the statement as written, in one pass."""
    rhs = statement.rhs
    outputs = set(output_indices(statement))
    plan = _scopes_apart(rhs, outputs)
    taken = letters(rhs)
    if plan:
        fresh: dict[tuple[int, str], str] = {}
        for key, renames in plan.items():
            for letter in renames:
                (fresh[key, letter],) = fresh_indices(1, taken | outputs)
                taken.add(fresh[key, letter])
        rhs = _renamed_apart(rhs, plan, fresh)
    deltas = delta_letters_apart(rhs, outputs)
    if deltas:
        chosen: dict[tuple[str, int], str] = {}
        for names in deltas.values():
            for key in names.items():
                if key not in chosen:
                    (chosen[key],) = fresh_indices(1, taken | outputs)
                    taken.add(chosen[key])
        rhs = _deltas_renamed(rhs, {k: {i: chosen[i, n] for i, n in v.items()} for k, v in deltas.items()})
        _warn_as_written(statement, {i for names in deltas.values() for i in names})
    return statement if rhs is statement.rhs else replace(statement, rhs=rhs)


def _warn_as_written(statement: Statement, renamed: set[str]) -> None:
    """Rule 6's warnings about the letters a delta's were renamed apart from, as the statement
    writes them: renamed, the letters no longer collide, and the warning would be lost."""
    outputs = output_indices(statement)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with reserved_letters(letters(statement.rhs) | set(outputs)):
                lower(statement.rhs, frozenset(outputs), written=not statement.wrt)
        except EinderivError:
            return  # the checks after this say what is wrong
    for each in caught:
        if issubclass(each.category, EinderivWarning) and any(f"index {i!r}" in str(each.message) for i in renamed):
            warn_user(str(each.message))


def _deltas_renamed(node: Expr, renames: dict[int, dict[str, str]]) -> Expr:
    """``node`` with the deltas ``renames`` names (by identity) written with new letters."""
    if isinstance(node, Delta):
        new = renames.get(id(node))
        return Delta(*(new.get(i, i) for i in node.indices)) if new else node
    return with_children(node, lambda child: _deltas_renamed(child, renames))


def _renamed_apart(node: Expr, plan: dict[int, list[str]], fresh: dict) -> Expr:
    """``node`` with each scope of ``plan`` (by identity) renamed, inner scopes first."""
    new = with_children(node, lambda child: _renamed_apart(child, plan, fresh))
    for letter in plan.get(id(node), ()):
        new = renamed(new, letter, fresh[id(node), letter], own=True)
    return new


def _scopes_apart(rhs: Expr, outputs: set[str]) -> dict[int, list[str]]:
    """The scopes (by identity) and letters :func:`letters_apart` renames."""
    plan: dict[int, list[str]] = {}
    terms = additive_terms(rhs)
    written_in = [_tensor_letters(term) for term in terms]
    tensor_letters = set().union(*written_in)
    scopes = [(term, term, k, "term") for k, term in enumerate(terms)]
    for k, term in enumerate(terms):
        scopes += [(node, node.arg, k, "sum") for node in walk(term) if isinstance(node, Call) and node.over]
    for scope, body, k, kind in scopes:
        own_letters = {i for i in getattr(scope, "over", ()) if binds(scope, i)}
        if kind == "sum":
            candidates = own_letters
        else:  # the term's implicit sum: letters a delta writes, not the output's nor its reduction's
            candidates = {i for n in walk(scope) if isinstance(n, Delta) for i in n.indices} - outputs - own_letters
        for letter in sorted(candidates & tensor_letters):
            nodes = list(own_nodes(body, letter))
            if any(isinstance(n, (Tensor, MatrixCall)) and letter in n.indices for n in nodes):
                continue
            partners = {
                i for n in nodes if isinstance(n, Delta) and letter in n.indices for i in n.indices if i != letter
            }
            if len(partners) != 1 or not partners <= written_in[k]:
                continue  # no partner its own term writes: sized as the other terms size them,
                # both letters alike (``A_ij + delta_ij``; program._term_delta_ties ties them)
            elsewhere = any(letter in written_in[j] for j in range(len(terms)) if j != k)
            if elsewhere and letter not in written_in[k]:  # written in the scope's own term: rule 6
                plan.setdefault(id(scope), []).append(letter)
    reductions = [scope for scope, _, _, kind in scopes if kind == "sum"]
    for scope, _, k, kind in scopes:
        if kind == "sum":
            for letter in sorted(_named_by_a_delta_elsewhere(scope, terms, k, outputs)):
                if letter not in plan.get(id(scope), ()):
                    plan.setdefault(id(scope), []).append(letter)
    # only a letter two or more sums (or terms) bind has another scope to be apart from
    bound = Counter(i for node in reductions for i in node.over if binds(node, i))
    bound.update(i for term in terms for i in _unreduced_letters(term) - outputs)
    in_calls = {id(n) for node in walk(rhs) if isinstance(node, Call) and not node.over for n in walk(node.arg)}
    binders: dict[str, tuple] = {}  # each letter's, walked once however many sums bind it
    for scope in reductions:
        for letter in sorted(i for i in scope.over if binds(scope, i) and bound[i] > 1):
            if letter in plan.get(id(scope), ()):
                continue
            if _counts_apart(rhs, scope, letter, binders, id(scope) in in_calls):
                plan.setdefault(id(scope), []).append(letter)
    return plan


def _named_by_a_delta_elsewhere(scope: Call, terms: list[Expr], k: int, outputs: set[str]) -> set[str]:
    """The letters ``scope`` (a reduction in term ``k``) binds that a delta in another term
    counts by name where a tensor outside every reduction also writes them: in ``f = sum_j(y_j)
    + S_jk + delta_jk`` the delta's j and k are S's (the term sums its own), and the sum's j is
    its own, so it is renamed apart (it was "index 'j' has two sizes: 4 (from y) and 3 (from
    S)").  Where only reductions write the letter (``delta_ij - sum_ij(A_ij)``) they size the
    delta's, and it stays."""
    out = set()
    for letter in (i for i in scope.over if binds(scope, i)):
        if not any(letter in n.indices for n in own_nodes(scope.arg, letter) if isinstance(n, (Tensor, MatrixCall))):
            continue
        counted = any(
            any(isinstance(n, Delta) and letter in n.indices for n in own_nodes(term, letter))
            and not _written_outside_reductions(term, letter)
            for j, term in enumerate(terms)
            if j != k
        )
        if counted and letter not in outputs and any(_written_outside_reductions(t, letter) for t in terms):
            out.add(letter)
    return out


def _written_outside_reductions(term: Expr, letter: str) -> bool:
    """Whether a tensor or matrix call of ``term`` writes ``letter`` outside the reductions binding it."""
    return not binds(term, letter) and any(
        isinstance(n, (Tensor, MatrixCall)) and letter in n.indices for n in own_nodes(term, letter)
    )


def _tensor_letters(node: Expr) -> set[str]:
    """The letters the tensors and matrix calls in ``node`` write."""
    return {i for n in walk(node) if isinstance(n, (Tensor, MatrixCall)) for i in n.indices}


def tensor_axes(nodes, letter: str) -> list[tuple[str, int]]:
    """``(tensor, axis)`` for each axis at which a tensor or matrix call among ``nodes`` writes
    ``letter``, in the order written."""
    return [
        (n.matrix if isinstance(n, MatrixCall) else n.name, axis)
        for n in nodes
        if isinstance(n, (Tensor, MatrixCall))
        for axis, i in enumerate(n.indices)
        if i == letter
    ]


def _counts_apart(rhs: Expr, scope: Call, letter: str, binders: dict[str, tuple], in_call: bool) -> bool:
    """Whether the reduction ``scope`` counts ``letter`` apart from the tensors that carry it (a
    term of a sum in it that does not carry it: ``sum_n(v_n + m)`` is sum(v) + N m; or a mean
    inside a call, whose count a rewrite takes out: ``log(mean_k(exp(v_k)))`` is a logsumexp
    less log K) where tensors write it at axes of their own, and another sum or term of the
    statement writes the letter at another axis: ``sum_n(v_n + m)^2 - sum_n(u_n - m)^3`` with v
    and u of two lengths counts each n at its own length (it was "two sizes").  ``binders``
    caches :func:`_binders` by letter."""
    own = list(own_nodes(scope.arg, letter))
    inside = set(tensor_axes(own, letter))
    if not inside:
        return False
    counted = (scope.func == "mean" and in_call) or any(
        isinstance(n, Add)
        and any(
            binds(t, letter) or not any(letter in (getattr(m, "indices", ()) or ()) for m in own_nodes(t, letter))
            for t in n.terms
        )
        for n in own
    )
    if not counted:
        return False
    mine = {id(n) for n in own}
    if letter not in binders:
        every = _binders(rhs, letter)
        carrying = [(node, binder) for node, binder in every if letter in (getattr(node, "indices", ()) or ())]
        binders[letter] = (carrying, {id(node): binder for node, binder in every})
    carrying, where = binders[letter]
    outside = [(node, binder) for node, binder in carrying if id(node) not in mine]
    # a letter free beside the reduction, in its own term, is rule 6's (``mean_j(A_ij) x_j``
    # warns that x_j is another j): only letters other sums or other terms bind count apart
    term = where[id(scope)]
    if any(binder == term for _, binder in outside):
        return False
    elsewhere = set(tensor_axes((node for node, _ in outside), letter))
    return bool(elsewhere - inside)


def _binders(rhs: Expr, letter: str) -> list[tuple[Expr, object]]:
    """Every node of ``rhs`` with what binds ``letter`` there: the innermost reduction over it
    (by identity), else the top-level term it lies in (``("term", k)``)."""
    out = []
    for k, term in enumerate(additive_terms(rhs)):
        stack: list[tuple[Expr, object]] = [(term, ("term", k))]
        while stack:
            node, binder = stack.pop()
            out.append((node, binder))
            inner = id(node) if binds(node, letter) else binder
            stack.extend((child, inner) for child in children(node))
    return out
