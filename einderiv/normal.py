"""The normal form: a sum of monomials, each an exact coefficient times a tuple of atoms.

A :class:`Poly` carries its free (output) indices; inside each :class:`Term` every other
index is summed (einsum semantics per term).  Differentiation, simplification and emission
all work on this form.  Atoms are ``ir.Tensor`` and ``ir.Delta`` (deltas stored with sorted
indices); later atom types join through the small per-type tables below.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from .errors import DifferentiationError, EinderivError
from .ir import Add, Delta, Div, Expr, Indices, Mul, Neg, Number, Tensor

#: Largest number of terms an expansion may produce before stopping with a clear error.
MAX_TERMS = 20_000

Atom = Tensor | Delta


def make_delta(a: str, b: str) -> Delta:
    """A delta with its indices in sorted order (delta_ij == delta_ji)."""
    return Delta(a, b) if a <= b else Delta(b, a)


def atom_indices(atom: Atom) -> Indices:
    return atom.indices


def rename_atom(atom: Atom, mapping: dict[str, str]) -> Atom:
    """Substitute index names; unmapped names stay."""
    if isinstance(atom, Delta):
        return make_delta(mapping.get(atom.first, atom.first), mapping.get(atom.second, atom.second))
    return Tensor(atom.name, tuple(mapping.get(i, i) for i in atom.indices))


@dataclass(frozen=True)
class Term:
    """``coeff * factors[0] * factors[1] * ...`` with einsum semantics."""

    coeff: Fraction
    factors: tuple[Atom, ...]

    def index_counts(self) -> Counter:
        return Counter(i for f in self.factors for i in atom_indices(f))

    def rename(self, mapping: dict[str, str]) -> Term:
        return Term(self.coeff, tuple(rename_atom(f, mapping) for f in self.factors))

    def scaled(self, by: Fraction) -> Term:
        return Term(self.coeff * by, self.factors)


@dataclass(frozen=True)
class Poly:
    """A sum of terms with the given free indices, in output-axis order."""

    terms: tuple[Term, ...]
    indices: Indices

    def __str__(self) -> str:
        return str(to_expr(self))

    def tensor_names(self) -> set[str]:
        return {f.name for t in self.terms for f in t.factors if isinstance(f, Tensor)}

    def all_index_names(self) -> set[str]:
        return set(self.indices) | {i for t in self.terms for f in t.factors for i in atom_indices(f)}


# -- expansion: IR -> terms -------------------------------------------------------------------


def _too_many(count: int) -> DifferentiationError:
    return DifferentiationError(
        f"expanding this expression gives {count} terms, over the limit of {MAX_TERMS} "
        "(einderiv.normal.MAX_TERMS); factor it into several statements or raise the limit"
    )


def expand(expr: Expr) -> list[Term]:
    """Distribute products over sums: the list of monomials whose sum is ``expr``."""
    if isinstance(expr, Number):
        return [Term(expr.value, ())]
    if isinstance(expr, Delta):
        return [Term(Fraction(1), (make_delta(expr.first, expr.second),))]
    if isinstance(expr, Tensor):
        return [Term(Fraction(1), (expr,))]
    if isinstance(expr, Neg):
        return [t.scaled(Fraction(-1)) for t in expand(expr.operand)]
    if isinstance(expr, Add):
        out: list[Term] = []
        for part in expr.terms:
            out.extend(expand(part))
            if len(out) > MAX_TERMS:
                raise _too_many(len(out))
        return out
    if isinstance(expr, Mul):
        out = [Term(Fraction(1), ())]
        for factor in expr.factors:
            parts = expand(factor)
            if len(out) * len(parts) > MAX_TERMS:
                raise _too_many(len(out) * len(parts))
            out = [Term(a.coeff * b.coeff, a.factors + b.factors) for a in out for b in parts]
        return out
    if isinstance(expr, Div):
        denominator = expr.denominator
        value = _constant_value(denominator)
        if value is None:
            raise EinderivError(
                f"division by {str(denominator)!r}: only division by a number is supported in this version"
            )
        if value == 0:
            raise EinderivError(f"division by zero in {str(expr)!r}")
        return [t.scaled(1 / value) for t in expand(expr.numerator)]
    raise EinderivError(f"cannot expand node {type(expr).__name__}")


def _constant_value(expr: Expr) -> Fraction | None:
    """The value of a purely numeric expression (``2``, ``-0.5``, ``(1 + 2)``), else None."""
    terms = expand(expr)
    if all(not t.factors for t in terms):
        return sum((t.coeff for t in terms), Fraction(0))
    return None


# -- simplification --------------------------------------------------------------------------


def contract_deltas(term: Term, free: frozenset[str]) -> Term:
    """Remove every delta with a summed index by renaming: ``delta_jk A_ij x_j -> A_ik x_k``.

    Each step removes one delta, so the loop ends.  ``delta_ii`` is 1 where i is free or used
    elsewhere and stays (it is the dimension) when i is summed and appears nowhere else.
    Deltas between two free indices stay: they are real structure.
    """
    factors = list(term.factors)
    progress = True
    while progress:
        progress = False
        counts = Counter(i for f in factors for i in atom_indices(f))
        for pos, factor in enumerate(factors):
            if not isinstance(factor, Delta):
                continue
            a, b = factor.first, factor.second
            if a == b:
                if a in free or counts[a] > 2:
                    del factors[pos]
                    progress = True
                    break
                continue
            if b not in free:
                old, new = b, a
            elif a not in free:
                old, new = a, b
            else:
                continue
            del factors[pos]
            mapping = {old: new}
            factors = [rename_atom(f, mapping) for f in factors]
            if new not in free and not any(new in atom_indices(f) for f in factors):
                factors.insert(pos, Delta(new, new))  # sum_ab delta_ab = dimension
            progress = True
            break
    return Term(term.coeff, tuple(factors))


def _shape_key(atom: Atom, free: frozenset[str]) -> tuple:
    """What an atom looks like with dummy names erased: invariant under renaming dummies."""
    pattern = tuple(i if i in free else "" for i in atom_indices(atom))
    if isinstance(atom, Delta):
        return ("1delta", *sorted(pattern))
    return ("0" + atom.name, *pattern)


_MAX_ORDERINGS = 720


def canonical_key(term: Term, free: frozenset[str]) -> tuple:
    """A key equal for two terms exactly when they differ only by names of summed indices
    and the order of factors (within the bounded search over orderings of look-alike factors).
    """
    ordered = sorted(term.factors, key=lambda f: _shape_key(f, free))
    groups = [list(g) for _, g in itertools.groupby(ordered, key=lambda f: _shape_key(f, free))]
    count = 1
    for g in groups:
        count *= len(g) and _factorial(len(g))
    choices = itertools.product(*(itertools.permutations(g) for g in groups)) if count <= _MAX_ORDERINGS else [groups]
    best = None
    for choice in choices:
        mapping: dict[str, str] = {}
        key = []
        for atom in itertools.chain.from_iterable(choice):
            for i in atom_indices(atom):
                if i not in free and i not in mapping:
                    mapping[i] = f"~{len(mapping)}"
            renamed = rename_atom(atom, mapping)
            key.append((type(renamed).__name__, getattr(renamed, "name", ""), *atom_indices(renamed)))
        candidate = tuple(key)
        if best is None or candidate < best:
            best = candidate
    return best or ()


def _factorial(n: int) -> int:
    out = 1
    for k in range(2, n + 1):
        out *= k
    return out


def simplify(terms: list[Term] | tuple[Term, ...], indices: Indices) -> Poly:
    """Contract deltas, collect like terms (up to renaming summed indices) and drop zeros.

    The first-seen spelling of each collected term is kept, so results read like the input.
    """
    free = frozenset(indices)
    collected: dict[tuple, list] = {}
    for term in terms:
        if term.coeff == 0:
            continue
        term = contract_deltas(term, free)
        key = canonical_key(term, free)
        if key in collected:
            collected[key][0] += term.coeff
        else:
            collected[key] = [term.coeff, term]
    out = tuple(Term(coeff, rep.factors) for coeff, rep in collected.values() if coeff != 0)
    return Poly(out, tuple(indices))


def normalize(expr: Expr, indices: Indices) -> Poly:
    """Expand and simplify ``expr`` with the given free indices."""
    return simplify(expand(expr), indices)


# -- back to IR (for printing) ---------------------------------------------------------------


def term_to_expr(term: Term, leading: bool = True) -> Expr:
    """One monomial as IR.  A negative leading term reads ``-2 A_kj x_j``; later ones are
    ``Neg`` so that the sum prints ``a - 2 b``."""
    magnitude = abs(term.coeff)
    factors: list[Expr] = list(term.factors)
    if magnitude != 1 or not factors:
        factors.insert(0, Number(magnitude))
    if term.coeff < 0 and leading:
        factors[0] = Neg(factors[0])
    body = factors[0] if len(factors) == 1 else Mul(tuple(factors))
    return Neg(body) if term.coeff < 0 and not leading else body


def to_expr(poly: Poly) -> Expr:
    """The IR of a normal form; ``0`` for the empty sum."""
    if not poly.terms:
        return Number(Fraction(0))
    parts = [term_to_expr(t, leading=(k == 0)) for k, t in enumerate(poly.terms)]
    return parts[0] if len(parts) == 1 else Add(tuple(parts))
