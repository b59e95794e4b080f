"""Symbolic differentiation of the normal form: one rule per atom type, Leibniz over products.

``d(sum_t c_t prod_f a_f) / dX_kl = sum_t c_t sum_f (prod_{g != f} a_g) d(a_f)/dX_kl``, then
:func:`normal.simplify` contracts the deltas away and collects like terms.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from .errors import DifferentiationError
from .ir import Delta, Indices, Tensor
from .normal import MAX_TERMS, Atom, Poly, Term, atom_indices, make_delta, simplify

#: d(atom)/d(wrt) as a list of terms whose free indices include the wrt indices.
Rule = Callable[[Atom, Tensor], list[Term]]
RULES: dict[type, Rule] = {}


def defrule(atom_type: type) -> Callable[[Rule], Rule]:
    """Register the derivative rule of an atom type (one row of the table)."""

    def register(rule: Rule) -> Rule:
        RULES[atom_type] = rule
        return rule

    return register


@defrule(Tensor)
def _tensor_rule(atom: Tensor, wrt: Tensor) -> list[Term]:
    """d X_ab / d X_kl = delta_ak delta_bl (zipped indices); any other tensor gives 0."""
    if atom.name != wrt.name:
        return []
    return [Term(Fraction(1), tuple(make_delta(a, k) for a, k in zip(atom.indices, wrt.indices)))]


@defrule(Delta)
def _delta_rule(atom: Delta, wrt: Tensor) -> list[Term]:
    """A Kronecker delta is constant."""
    return []


_FRESH_POOL = "ijklmnopqrstuvwxyzabcdefghABCDEFGHIJKLMNOPQRSTUVWXYZ"


def fresh_indices(count: int, avoid: set[str]) -> Indices:
    """``count`` index names not in ``avoid``: i, j, k, ... then i1, j1, ..."""
    out: list[str] = []
    suffix = 0
    while len(out) < count:
        for letter in _FRESH_POOL:
            name = letter if suffix == 0 else f"{letter}{suffix}"
            if name not in avoid and name not in out:
                out.append(name)
                if len(out) == count:
                    break
        suffix += 1
    return tuple(out)


def _rename_apart(term: Term, free: frozenset[str], avoid: set[str]) -> Term:
    """Rename the summed indices of ``term`` that collide with ``avoid``."""
    used = {i for f in term.factors for i in atom_indices(f)}
    clashes = sorted((used - free) & avoid)
    if not clashes:
        return term
    replacements = fresh_indices(len(clashes), used | free | avoid)
    return term.rename(dict(zip(clashes, replacements)))


def differentiate(poly: Poly, wrt: Tensor) -> Poly:
    """d(poly)/d(wrt): free indices become ``poly.indices + wrt.indices``."""
    free = frozenset(poly.indices)
    clash = free & set(wrt.indices)
    if clash:
        raise DifferentiationError(f"derivative index {sorted(clash)[0]!r} of {wrt} is already an index of the result")
    terms: list[Term] = []
    for term in poly.terms:
        term = _rename_apart(term, free, set(wrt.indices))
        for pos, factor in enumerate(term.factors):
            rule = RULES.get(type(factor))
            if rule is None:
                raise DifferentiationError(f"no derivative rule for {type(factor).__name__} ({factor})")
            for part in rule(factor, wrt):
                terms.append(Term(term.coeff * part.coeff, term.factors[:pos] + part.factors + term.factors[pos + 1 :]))
        if len(terms) > MAX_TERMS:
            raise DifferentiationError(
                f"the derivative has over {MAX_TERMS} terms before simplification "
                "(einderiv.normal.MAX_TERMS); split the expression into statements or raise the limit"
            )
    return simplify(terms, poly.indices + wrt.indices)
