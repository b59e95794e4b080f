"""Symbolic differentiation of the normal form: one rule per atom type, Leibniz over products.

``d(sum_t c_t prod_f a_f) / dX_kl = sum_t c_t sum_f (prod_{g != f} a_g) d(a_f)/dX_kl``, then
:func:`normal.simplify` contracts the deltas away and collects like terms.  Elementwise
functions use the chain rule with the derivatives in the registry of :mod:`einderiv.functions`.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from functools import cache

from . import limits
from .elementwise import FUNCTIONS
from .errors import DifferentiationError
from .index_names import axis_count, fresh_indices, is_count
from .ir import Delta, Tensor
from .lower import counted_as, lower
from .normal import (
    Apply,
    MatrixFn,
    Poly,
    Term,
    keep_sums,
    letter_axes,
    make_apply,
    make_delta,
    multiply,
    rename_term_apart,
    simplify,
    term_size,
    too_many_terms,
)
from .parser import parse
from .rewrites import logsumexp_parts, rewrite_sums

#: d(atom)/d(wrt) as a list of terms whose free indices are the atom's and the wrt's; any
#: other index in them is summed and must avoid the names in ``avoid``.
Rule = Callable[[object, Tensor, set], list[Term]]
RULES: dict[type, Rule] = {}

__all__ = ["RULES", "defrule", "differentiate", "fresh_indices"]


def defrule(atom_type: type) -> Callable[[Rule], Rule]:
    """Register the derivative rule of an atom type (one row of the table)."""

    def register(rule: Rule) -> Rule:
        RULES[atom_type] = rule
        return rule

    return register


@defrule(Tensor)
def _tensor_rule(atom: Tensor, wrt: Tensor, avoid: set) -> list[Term]:
    """d X_ab / d X_kl = delta_ak delta_bl (zipped indices); any other tensor gives 0."""
    if atom.name != wrt.name:
        return []
    return [Term(Fraction(1), tuple(make_delta(a, k) for a, k in zip(atom.indices, wrt.indices)))]


@defrule(Delta)
def _delta_rule(atom: Delta, wrt: Tensor, avoid: set) -> list[Term]:
    """A Kronecker delta is constant."""
    return []


@cache
def derivative_template(derivative: str) -> tuple[Term, ...]:
    """f'(u) written in einderiv's language (a registry entry's ``derivative``), lowered once,
    with the scalar ``u`` standing for the argument (cached by its text, so an entry registered
    later, or again, is read afresh)."""
    return tuple(lower(parse(derivative).output.rhs, frozenset()))


def substitute(terms, name: str, value: Poly) -> list[Term]:
    """Replace the scalar ``name`` by ``value`` everywhere in ``terms`` (also inside calls)."""
    out: list[Term] = []
    keep = set(value.indices)
    for term in terms:
        partial = [Term(term.coeff, ())]
        avoid = keep | term.index_names()
        for factor in term.factors:
            if isinstance(factor, Tensor) and factor.name == name:
                partial = multiply(partial, list(value.terms), keep, avoid=avoid)
            elif isinstance(factor, Apply):
                inner = substitute(factor.arg.terms, name, value)
                indices = tuple(dict.fromkeys(factor.arg.indices + value.indices))
                parts = make_apply(factor.func, simplify(inner, indices), factor.param)
                partial = multiply(partial, parts, set(indices), avoid=avoid)
            else:
                partial = [Term(t.coeff, t.factors + (factor,)) for t in partial]
        out.extend(partial)
    return out


def _outer_derivative(atom: Apply) -> list[Term]:
    """f'(arg) as terms with the atom's free indices."""
    if atom.func == "pow":
        return [t.scaled(atom.param) for t in make_apply("pow", atom.arg, atom.param - 1)]
    row = FUNCTIONS.get(atom.func)
    if row is None:
        raise DifferentiationError(f"no derivative rule for the function {atom.func!r}")
    return substitute(derivative_template(row.derivative), "u", atom.arg)


@defrule(MatrixFn)
def _matrix_rule(atom: MatrixFn, wrt: Tensor, avoid: set) -> list[Term]:
    """d inv(M)_ij / dM_kl = -inv(M)_ik inv(M)_lj;  d det(M) / dM_kl = det(M) inv(M)_lk;
    d logdet(M) / dM_kl = d logabsdet(M) / dM_kl = inv(M)_lk.  Every entry of M is independent (no
    symmetry assumed)."""
    if atom.matrix != wrt.name:
        return []
    k, l = wrt.indices
    one = Fraction(1)
    if atom.func == "inv":
        i, j = atom.indices
        return [Term(-one, (MatrixFn("inv", atom.matrix, (i, k)), MatrixFn("inv", atom.matrix, (l, j))))]
    if atom.func == "det":
        return [Term(one, (atom, MatrixFn("inv", atom.matrix, (l, k))))]
    if atom.func in ("logdet", "logabsdet"):
        return [Term(one, (MatrixFn("inv", atom.matrix, (l, k)),))]
    raise DifferentiationError(f"no derivative rule for the matrix function {atom.func!r}")


def _logsumexp_rule(atom: Apply, wrt: Tensor, avoid: set) -> list[Term] | None:
    """d log(sum_R exp(v)) = sum_R exp(v - log(sum_R exp(v))) dv: the softmax, written so that
    it never overflows (the exponent is never positive), at every order."""
    parts = logsumexp_parts(atom)
    if parts is None:
        return None
    v, summed = parts
    dv = differentiate(v, wrt)
    if not dv.terms:
        return []
    # apart from dv's own summed names too: a nested logsumexp's softmax sums over its own index
    fresh = fresh_indices(len(summed), avoid | v.all_index_names() | dv.all_index_names() | set(wrt.indices))
    mapping = dict(zip(summed, fresh))
    v = Poly(tuple(t.rename(mapping) for t in v.terms), tuple(mapping.get(i, i) for i in v.indices))
    dv = Poly(tuple(t.rename(mapping) for t in dv.terms), tuple(mapping.get(i, i) for i in dv.indices))
    shifted = simplify(list(v.terms) + [Term(-Fraction(1), (atom,))], v.indices)
    softmax = make_apply("exp", shifted)
    keep = set(v.indices) | set(wrt.indices)
    return multiply(softmax, list(dv.terms), keep, avoid=avoid | keep)


@defrule(Apply)
def _apply_rule(atom: Apply, wrt: Tensor, avoid: set) -> list[Term]:
    """Chain rule: d f(u)_I / dX_W = f'(u)_I du_I/dX_W (elementwise over I)."""
    special = _logsumexp_rule(atom, wrt, avoid)
    if special is not None:
        return special
    inner = differentiate(atom.arg, wrt)
    if not inner.terms:
        return []
    keep = set(atom.indices) | set(wrt.indices)
    outer = [rename_term_apart(t, keep, avoid) for t in _outer_derivative(atom)]
    return multiply(outer, axis_counts(inner.terms, keep, atom.arg), keep, avoid=avoid | keep)


def axis_counts(terms, keep: set[str], arg: Poly) -> list[Term]:
    """``terms`` with each ``delta_rr`` of a summed r that a term carries nowhere else (the count
    that differentiating ``sum_n(m)`` by m leaves) named as the count of the axis of ``arg`` that
    writes r: ``r#x.0`` is the length of x (see :func:`axis_count`).  The product around the call
    renames a summed letter apart, and the statement around it may write r at another dimension,
    so a count named by its letter alone could lose its size or take another."""
    out = []
    for term in terms:
        names = {}
        for f in term.factors:
            r = f.first if isinstance(f, Delta) and f.first == f.second else None
            if r and r not in keep and not is_count(r) and (axes := sorted(letter_axes(arg, r))):
                names[r] = axis_count(r, *axes[0])
        out.append(counted_as(term, names))
    return out


def differentiate(poly: Poly, wrt: Tensor) -> Poly:
    """d(poly)/d(wrt): free indices become ``poly.indices + wrt.indices``."""
    free = frozenset(poly.indices)
    clash = free & set(wrt.indices)
    if clash:
        raise DifferentiationError(f"derivative index {sorted(clash)[0]!r} of {wrt} is already an index of the result")
    terms: list[Term] = []
    size = 0
    max_terms, max_size = limits.current().max_terms, limits.current().max_size
    for term in poly.terms:
        term = rename_term_apart(term, free, set(wrt.indices))
        names = term.index_names() | free | set(wrt.indices)
        summed = term.index_names() - free
        for pos, factor in enumerate(term.factors):
            rule = RULES.get(type(factor))
            if rule is None:
                raise DifferentiationError(f"no derivative rule for {type(factor).__name__} ({factor})")
            for part in rule(factor, wrt, names):
                new = Term(term.coeff * part.coeff, term.factors[:pos] + part.factors + term.factors[pos + 1 :])
                terms.append(keep_sums(new, summed))
                size += term_size(new)
                if size > max_size:
                    raise DifferentiationError(
                        f"the derivative grows to {size} atoms, over {limits.over('max_size')}: the "
                        "expression nests too many functions for this order; name inner parts in statements of "
                        f"their own (intermediates are differentiated once), or {limits.raise_hint('max_size')}"
                    )
        if len(terms) > max_terms:
            raise too_many_terms(len(terms))
    return rewrite_sums(simplify(terms, poly.indices + wrt.indices))
