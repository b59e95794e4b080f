"""Derivatives with respect to structured matrices: symmetric and diagonal.

A function of a symmetric matrix S has many unconstrained gradients G (any G with the same
symmetric part gives the same directional derivatives along symmetric directions). Two
conventions are in use:

- ``"frobenius"`` (the default): the gradient in the space of symmetric matrices under the
  Frobenius inner product, sym(G) = (G + Gᵀ)/2, the unique symmetric matrix with
  ⟨∇f, E⟩ = d/dt f(S + tE) for every symmetric E (Srinivasan and Panda, "What is the gradient
  of a scalar function of a symmetric matrix?"). Use it for gradient descent on S, for checks
  along symmetric directions, and whenever S_ij and S_ji are one variable seen twice.
- ``"cookbook"``: the Matrix Cookbook's G + Gᵀ − G∘I, the derivative by each distinct entry
  S_ij (i ≤ j) when S_ij and S_ji move together: its off-diagonal entries are twice sym(G)'s.
  Use it where the free parameters are the entries of the upper triangle.

For a diagonal matrix D, the gradient in the space of diagonal matrices is G∘I (the
off-diagonal entries are not variables). Since S = Sᵀ, factors ``S_ji`` and ``inv(S)_ji`` are
written ``S_ij`` and ``inv(S)_ij`` in the result, so that, e.g., d logdet(S)/dS = inv(S).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import numpy as np

from .errors import DifferentiationError, EvaluationError
from .ir import Delta, Tensor
from .normal import Apply, MatrixFn, Poly, Term, canonical_key, simplify
from .parser import ascii_name

CONVENTIONS = ("frobenius", "cookbook")


def structure_of(symmetric, diagonal, ranks: Mapping[str, int]) -> dict[str, str]:
    """name -> "symmetric" or "diagonal", checked: each is a matrix input, named once."""
    structure: dict[str, str] = {}
    for kind, names in (("symmetric", symmetric), ("diagonal", diagonal)):
        if names is None:
            continue
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, Iterable):  # symmetric=True, symmetric=3
            raise DifferentiationError(f"{kind}= takes a list of input names, such as {kind}=['S'], got {names!r}")
        for name in names:
            if not isinstance(name, str):
                raise DifferentiationError(f"{kind}= takes input names, got {name!r}")
            name = ascii_name(name)  # as the text is read: Σ is Sigma
            if name not in ranks:
                raise DifferentiationError(
                    f"{kind} matrix {name!r} is not an input (inputs: {', '.join(sorted(ranks))})"
                )
            if ranks[name] != 2:
                raise DifferentiationError(f"{kind} matrix {name!r} is used with {ranks[name]} indices, not 2")
            if name in structure:
                twice = f"twice in {kind}=" if structure[name] == kind else f"as {structure[name]} and as {kind}"
                raise DifferentiationError(f"{name!r} is named {twice}: name each matrix once")
            structure[name] = kind
    return structure


def _oriented(indices: tuple[str, str], free: frozenset[str]) -> tuple[str, str]:
    """The order a symmetric matrix's two indices are written in: free ones first, then by name."""
    return tuple(sorted(indices, key=lambda i: (i not in free, i)))


def written_symmetric(poly: Poly, names: set[str]) -> Poly:
    """``poly`` with every factor of a symmetric matrix (and of its inverse) written with its
    indices in one order (``S_ji`` -> ``S_ij``): the same value, since S = Sᵀ, and like terms
    then collect."""
    if not names:
        return poly
    free = frozenset(poly.indices)

    def atom(f):
        if isinstance(f, Tensor) and f.name in names and len(f.indices) == 2:
            return Tensor(f.name, _oriented(f.indices, free))
        if isinstance(f, MatrixFn) and f.matrix in names and len(f.indices) == 2:
            return MatrixFn(f.func, f.matrix, _oriented(f.indices, free))
        if isinstance(f, Apply):
            return Apply(f.func, written_symmetric(f.arg, names), f.param)
        return f

    terms = [_least_orientation(Term(t.coeff, tuple(atom(f) for f in t.factors)), names, free) for t in poly.terms]
    return simplify(terms, poly.indices)


#: the most factors of a symmetric matrix in one term whose orientations are all tried
MAX_ORIENTED = 2


def _flipped(f):
    if isinstance(f, Tensor):
        return Tensor(f.name, f.indices[::-1])
    return MatrixFn(f.func, f.matrix, f.indices[::-1])


def _least_orientation(term: Term, names: set[str], free: frozenset[str]) -> Term:
    """``term`` with its factors of a symmetric matrix each written either way round, whichever
    gives the least canonical key: two terms equal up to S = Sᵀ and the names of summed indices
    then have one key, and collect (``inv(S)_ki inv(S)_lj inv(S)_ij`` and ``inv(S)_li inv(S)_kj
    inv(S)_ij``, the two halves of d tr(S⁻²)/dS, printed -S^-1 (S^-1 + S^-1) S^-1)."""
    positions = [
        k
        for k, f in enumerate(term.factors)
        if (isinstance(f, Tensor) and f.name in names or isinstance(f, MatrixFn) and f.matrix in names)
        and len(f.indices) == 2
        and f.indices[0] != f.indices[1]
        and not set(f.indices) & free  # one free index is written first already (_oriented)
    ]
    if not positions or len(positions) > MAX_ORIENTED:
        return term
    best, best_key = term, canonical_key(term, free)
    for flips in itertools.product((False, True), repeat=len(positions)):
        if not any(flips):
            continue
        factors = list(term.factors)
        for k, flip in zip(positions, flips):
            if flip:
                factors[k] = _flipped(factors[k])
        candidate = Term(term.coeff, tuple(factors))
        key = canonical_key(candidate, free)
        if key < best_key:
            best, best_key = candidate, key
    return best


def projected(poly: Poly, axes: Sequence[tuple[str, str, str]], convention: str) -> Poly:
    """The derivative ``poly`` projected for each structured wrt ``(kind, i, j)`` (its two axes):
    symmetric: (G + Gᵀ)/2 or, for the cookbook, G + Gᵀ − G∘I; diagonal: G∘I."""
    if convention not in CONVENTIONS:
        raise DifferentiationError(f"symmetric_convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    terms = list(poly.terms)
    for kind, i, j in axes:
        swap = {i: j, j: i}
        on_diagonal = [Term(t.coeff, (*t.factors, Delta(i, j))) for t in terms]
        if kind == "diagonal":
            terms = on_diagonal
            continue
        swapped = [t.rename(swap) for t in terms]
        if convention == "frobenius":
            half = Fraction(1, 2)
            terms = [t.scaled(half) for t in terms] + [t.scaled(half) for t in swapped]
        else:
            terms = terms + swapped + [t.scaled(Fraction(-1)) for t in on_diagonal]
    return simplify(terms, poly.indices)


def check_square(name: str, kind: str, shape: tuple[int, ...]) -> None:
    """A matrix declared symmetric or diagonal is square (any array library: only its shape)."""
    if len(shape) == 2 and shape[0] != shape[1]:
        raise EvaluationError(f"{name!r} is declared {kind} but has shape {tuple(shape)}, not square")


class TangentKind(str):
    """The kind (``"symmetric"``, ``"diagonal"``) of a product's tangent, taken from the wrt
    ``of`` it is a direction for (``hvp``/``jvp`` by a symmetric S need a symmetric v)."""

    of: str

    def __new__(cls, kind: str, of: str):
        made = super().__new__(cls, kind)
        made.of = of
        return made

    def __getnewargs__(self):  # copied and pickled with its wrt (str's own gives the kind alone)
        return (str(self), self.of)


def _not_as_declared(name: str, kind: str, how: str) -> EvaluationError:
    of = getattr(kind, "of", None)
    if of is None:
        return EvaluationError(f"{name!r} is declared {kind}, but {how}")
    return EvaluationError(f"{name!r}, the tangent of {kind} {of!r}, is not {kind}: {how}")


def check_structure(structure: Mapping[str, str], values: Mapping[str, object]) -> None:
    """The arrays declared symmetric are symmetric and those declared diagonal are diagonal (to
    rounding; NaN where its mirror is NaN): a derivative by a symmetric S means nothing at an S
    that is not."""
    for name, kind in structure.items():
        value = values.get(name)
        if value is None or not isinstance(value, np.ndarray) or value.ndim != 2:
            continue
        check_square(name, kind, value.shape)
        scale = float(np.nanmax(np.abs(value), initial=0.0)) if value.size else 0.0
        scale = scale if np.isfinite(scale) else 1.0
        # rounding of the array's own precision: a float32 A D A^T is symmetric to ~1e-6
        rtol = max(1e-10, 64 * float(np.finfo(value.dtype).eps)) if value.dtype.kind in "fc" else 1e-10
        if kind == "symmetric":
            if not np.allclose(value, value.T, rtol=rtol, atol=rtol * scale, equal_nan=True):
                raise _not_as_declared(name, kind, f"{name} != {name}^T")
        elif not np.all(np.abs(value[~np.eye(len(value), dtype=bool)]) <= rtol * scale):  # NaN off it too
            raise _not_as_declared(name, kind, "it has non-zero or NaN entries off its diagonal")


__all__ = [
    "CONVENTIONS",
    "TangentKind",
    "check_square",
    "check_structure",
    "projected",
    "structure_of",
    "written_symmetric",
]
