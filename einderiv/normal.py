"""The normal form, its simplifier, and the constructor of calls with the call rules it applies.

A :class:`Poly` is a sum of monomials (:class:`Term`: an exact coefficient times a tuple of
atoms) with its free (output) indices; inside each term every other index is summed (einsum
semantics per term).  Differentiation, simplification and emission all work on this form.
Atoms are ``ir.Tensor``, ``ir.Delta`` (stored with sorted indices), :class:`MatrixFn` and
:class:`Apply`, an elementwise function of a nested :class:`Poly` whose own summed indices are
private to it (bound variables, renamed apart whenever they could be captured).

Renaming, simplification and :func:`make_apply` are one recursion, and live here together:
renaming a call's indices simplifies its argument (``tanh(delta_ij)`` once j is i), simplifying
rebuilds calls through ``make_apply`` (``u^a u^b = u^(a+b)``; a call whose argument became
constant along an index), and ``make_apply`` applies the call rules of the catalogue
(:data:`CALL_RULES`; :mod:`einderiv.rewrites` lists them with the product and sum rules), of
which ``log_add_exp`` simplifies the difference it writes.  Printing is :mod:`einderiv.printing`'s.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from . import limits
from .elementwise import FUNCTIONS
from .errors import DifferentiationError, EinderivError
from .index_names import axis_count, count_stem, fresh_indices, is_count
from .ir import Delta, Indices, Tensor

#: The name of ``1/n_r``, the factor ``mean_r`` puts on a term: a vector whose every entry is one
#: over the size of its index (no user can write the name).  Evaluation folds it into the
#: coefficient; it prints as ``mean_r(...)`` around its term, or as ``mean_j(delta_jr)``.
RECIPROCAL = "1/n"


def reciprocal(index: str) -> Tensor:
    """The factor 1/n of ``mean`` over ``index``."""
    return Tensor(RECIPROCAL, (index,))


def is_reciprocal(atom) -> bool:
    return isinstance(atom, Tensor) and atom.name == RECIPROCAL


def make_delta(a: str, b: str) -> Delta:
    """A delta with its indices in sorted order (delta_ij == delta_ji)."""
    return Delta(a, b) if a <= b else Delta(b, a)


@dataclass(frozen=True)
class Term:
    """``coeff * factors[0] * factors[1] * ...`` with einsum semantics."""

    coeff: Fraction
    factors: tuple  # of atoms: Tensor | Delta | Apply

    def index_names(self) -> set[str]:
        return {i for f in self.factors for i in f.indices}

    def rename(self, mapping: dict[str, str]) -> Term:
        return Term(self.coeff, tuple(rename_atom(f, mapping) for f in self.factors))

    def scaled(self, by: Fraction) -> Term:
        return Term(self.coeff * by, self.factors)


@dataclass(frozen=True)
class Poly:
    """A sum of terms with the given free indices, in output-axis order."""

    terms: tuple[Term, ...]
    indices: Indices

    def __hash__(self) -> int:  # nested expressions are hashed often: compute once
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.terms, self.indices))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __str__(self) -> str:
        """The text of the sum, as :mod:`einderiv.printing` writes it (see :data:`POLY_TEXT`)."""
        return POLY_TEXT[0](self) if POLY_TEXT else repr(self)

    @property
    def size(self) -> int:
        """Atoms in the expression, nested call arguments included (computed once)."""
        cached = self.__dict__.get("_size")
        if cached is None:
            cached = sum(term_size(t) for t in self.terms)
            object.__setattr__(self, "_size", cached)
        return cached

    def tensor_names(self) -> set[str]:
        names: set[str] = set()
        for term in self.terms:
            for f in term.factors:
                if isinstance(f, Tensor) and f.name != RECIPROCAL:
                    names.add(f.name)
                elif isinstance(f, MatrixFn):
                    names.add(f.matrix)
                elif isinstance(f, Apply):
                    names |= f.arg.tensor_names()
        return names

    def all_index_names(self) -> set[str]:
        names = set(self.indices)
        for term in self.terms:
            for f in term.factors:
                names |= set(f.indices)
                if isinstance(f, Apply):
                    names |= f.arg.all_index_names()
        return names

    def dummies(self) -> set[str]:
        """Names summed inside the terms (not free), nested ones included."""
        return self.all_index_names() - set(self.indices)


#: How ``str()`` writes a :class:`Poly`: :func:`einderiv.printing.poly_text`, which puts itself
#: here when it is imported (``import einderiv`` imports it).  Printing renames bound indices
#: apart with the functions of this module, so it sits above it and is reached through this slot.
POLY_TEXT: list[Callable[[Poly], str]] = []

#: How :func:`simplify` cancels a power of a sum against the numerator:
#: :func:`einderiv.cancel.cancel_common_factors`, which builds on this module and puts itself
#: here when it is imported (:mod:`einderiv.lower` imports it).
CANCEL: list[Callable[[Poly, frozenset, frozenset], Poly]] = []

#: Whether :func:`simplify` cancels: while differentiating (:func:`einderiv.program.derive`), not
#: while lowering what the user wrote, which keeps the meaning NumPy gives it.  None, or the
#: intermediates that are a bounded call, as ``(name, indices, call)`` (``s_n = sigmoid(z_n)``).
CANCELLING: ContextVar[frozenset | None] = ContextVar("cancelling", default=None)

#: While differentiating a program: the intermediates that are a fractional power of one tensor,
#: as ``(name, indices, tensor, exponent)`` (``u_i = x_i^0.5``): in a term that also holds a power
#: of that tensor, u^k is read as x^(k p), so the two merge as the one statement's powers do.
POWERED: ContextVar[frozenset] = ContextVar("powered", default=frozenset())

#: While differentiating a program: the intermediates that are an elementwise sum, as ``(name,
#: indices, poly)`` (``u_i = 1 + x_i^2``), whose square roots :mod:`einderiv.cancel` reads through.
ROOTED: ContextVar[frozenset] = ContextVar("rooted", default=frozenset())


@dataclass(frozen=True)
class Apply:
    """An elementwise function of a nested expression: ``func(arg)``, or ``arg ^ param`` for ``pow``.

    Its indices are ``arg.indices``; every other index inside ``arg`` is summed inside it.
    """

    func: str
    arg: Poly
    param: Fraction | None = None

    @property
    def indices(self) -> Indices:
        return self.arg.indices


@dataclass(frozen=True)
class MatrixFn:
    """A function of a named square matrix: ``inv(M)_ij``, ``det(M)``, ``logdet(M)``, ``logabsdet(M)``.
    It behaves like a tensor of its own indices."""

    func: str
    matrix: str
    indices: Indices = ()


Atom = Tensor | Delta | Apply | MatrixFn


def call_arguments(poly: Poly, functions) -> list[tuple[str, set[str]]]:
    """(function, the tensors its argument names) for each call of ``functions`` in ``poly``, at
    any depth, matrix functions too, one by one (``sign(x_i - y_i)``: sign, {x, y}): in
    ``abs(x_i) abs(y_i)`` by y only the second differentiates abs."""
    found: list[tuple[str, set[str]]] = []
    stack = [poly]
    while stack:
        for term in stack.pop().terms:
            for atom in term.factors:
                if isinstance(atom, Apply):
                    if atom.func in functions:
                        found.append((atom.func, atom.arg.tensor_names()))
                    stack.append(atom.arg)
                elif isinstance(atom, MatrixFn) and atom.func in functions:
                    found.append((atom.func, {atom.matrix}))
    return found


def term_size(term: Term) -> int:
    return sum(1 + f.arg.size if isinstance(f, Apply) else 1 for f in term.factors) or 1


# -- renaming ---------------------------------------------------------------------------------


def letter_axes(poly: Poly, letter: str) -> set[tuple[str, int]]:
    """The axes ``(tensor, axis)`` at which ``poly`` writes ``letter`` (one of its free indices),
    also inside calls where it stays free."""
    found: set[tuple[str, int]] = set()
    for term in poly.terms:
        for f in term.factors:
            if isinstance(f, (Tensor, MatrixFn)):
                name = f.name if isinstance(f, Tensor) else f.matrix
                found |= {(name, k) for k, i in enumerate(f.indices) if i == letter}
            elif isinstance(f, Apply) and letter in f.arg.indices:
                found |= letter_axes(f.arg, letter)
    return found


def rename_atom(atom, mapping: dict[str, str]):
    """Substitute free index names; names bound inside an :class:`Apply` are never captured."""
    if isinstance(atom, Delta):
        return make_delta(mapping.get(atom.first, atom.first), mapping.get(atom.second, atom.second))
    if isinstance(atom, Tensor):
        return Tensor(atom.name, tuple(mapping.get(i, i) for i in atom.indices))
    if isinstance(atom, MatrixFn):
        return MatrixFn(atom.func, atom.matrix, tuple(mapping.get(i, i) for i in atom.indices))
    own = tuple((i, mapping[i]) for i in atom.arg.indices if i in mapping)
    if not own:
        return atom
    return _renamed_call(atom, own, CANCELLING.get())


@lru_cache(maxsize=65536)
def _renamed_call(atom: Apply, own: tuple[tuple[str, str], ...], cancelling: frozenset | None) -> Apply:
    """A call with the free letters of its argument renamed by ``own`` (cached: canonical keys
    rename the same nested calls once per ordering they try, and each rename simplifies the
    argument again; the Hessian-vector product of ``sum_ge(logsumexp_q(exp(tanh(B_qe A_gq))))``
    took 17 s).  ``cancelling``, :data:`CANCELLING` where it is called, is part of the key:
    simplifying cancels only while differentiating."""
    mapping = dict(own)
    arg = rename_apart(atom.arg, set(mapping.values()))
    renamed = tuple(t.rename(mapping) for t in arg.terms)
    indices = tuple(dict.fromkeys(mapping.get(i, i) for i in arg.indices))
    return Apply(atom.func, simplify(renamed, indices), atom.param)


def rename_apart(poly: Poly, avoid: set[str], taken: frozenset[str] = frozenset()) -> Poly:
    """Rename the summed (bound) indices of ``poly`` that collide with ``avoid``, to letters in
    neither ``avoid`` nor ``taken``."""
    return renamed_apart(poly, avoid, taken)[0]


def renamed_apart(poly: Poly, avoid: set[str], taken: frozenset[str] = frozenset()) -> tuple[Poly, dict[str, str]]:
    """:func:`rename_apart`'s result, and the renaming it made (old letter -> new)."""
    bound = poly.dummies()
    clashes = sorted(bound & avoid)
    if not clashes:
        return poly, {}
    taken = poly.all_index_names() | avoid | taken
    plain = [c for c in clashes if not is_count(c)]
    mapping = dict(zip(plain, fresh_indices(len(plain), taken)))
    for c in clashes:  # a counting index (i#2) stays one: i#2@1 is sized as i#2 is
        if is_count(c):
            stem, k = count_stem(c), 1
            while f"{stem}@{k}" in taken or f"{stem}@{k}" in mapping.values():
                k += 1
            mapping[c] = f"{stem}@{k}"
    return Poly(tuple(_rename_bound(t, mapping) for t in poly.terms), poly.indices), mapping


def _rename_bound(term: Term, mapping: dict[str, str]) -> Term:
    """Rename term-level dummies, and the same names where they are bound deeper down."""
    factors = []
    for f in term.factors:
        if isinstance(f, Apply):
            inner = {k: v for k, v in mapping.items() if k not in f.arg.indices}
            arg = Poly(tuple(_rename_bound(t, inner) for t in f.arg.terms), f.arg.indices) if inner else f.arg
            f = rename_atom(Apply(f.func, arg, f.param), mapping)
        else:
            f = rename_atom(f, mapping)
        factors.append(f)
    return Term(term.coeff, tuple(factors))


def rename_term_apart(
    term: Term, free: frozenset[str] | set[str], avoid: set[str], taken: frozenset[str] = frozenset()
) -> Term:
    """Rename the summed indices of ``term`` (not in ``free``) that collide with ``avoid``, to
    letters in neither ``avoid`` nor ``taken``."""
    return rename_apart(Poly((term,), tuple(free)), set(avoid), taken).terms[0]


# -- simplification --------------------------------------------------------------------------


def contract_deltas(term: Term, free: frozenset[str]) -> Term:
    """Remove every delta with a summed index by renaming: ``delta_jk A_ij x_j -> A_ik x_k``.

    Each step removes one delta (or one ``1/n_r`` of a mean, whose sum over an r nothing else
    carries is 1), so the loop ends.  ``delta_ii`` is 1 where i is free or used elsewhere and
    stays (it is the dimension) when i is summed and appears nowhere else.
    Deltas between two free indices stay: they are real structure; but a second one between
    the same two is 1 where the first is (``delta_jk delta_jk = delta_jk``, a Hessian diagonal's
    print) and goes, which also ends.
    """
    factors = list(term.factors)
    progress = True
    while progress:
        progress = False
        counts = Counter(i for f in factors for i in f.indices)
        for pos, factor in enumerate(factors):
            if is_reciprocal(factor) and factor.indices[0] not in free and counts[factor.indices[0]] == 1:
                del factors[pos]  # the sum over r of 1/n_r alone is 1: mean_r(c) = c
                progress = True
                break
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
                twin = next(
                    (k for k in range(pos + 1, len(factors)) if _same_delta(factors[k], factor)),
                    None,
                )
                if twin is None:
                    continue
                del factors[twin]  # delta_jk delta_jk = delta_jk: a 0/1 tensor squared
                progress = True
                break
            del factors[pos]
            mapping = {old: new}
            factors = [rename_atom(f, mapping) for f in factors]
            if new not in free and not any(new in f.indices for f in factors):
                factors.insert(pos, Delta(new, new))  # sum_ab delta_ab = dimension
            progress = True
            break
    return Term(term.coeff, tuple(factors))


def _same_delta(factor, delta: Delta) -> bool:
    """Whether ``factor`` is a delta between the same two indices as ``delta``, in either order."""
    return isinstance(factor, Delta) and {factor.first, factor.second} == {delta.first, delta.second}


def number_key(value) -> str:
    """``str(value)`` for a key, also past Python's 4300 digits of int-to-text (as hexadecimal)."""
    if not isinstance(value, Fraction) or max(value.numerator.bit_length(), value.denominator.bit_length()) < 14000:
        return str(value)
    return f"0x{value.numerator:x}/{value.denominator:x}"


def _shape_key(atom, free: frozenset[str]) -> tuple:
    """What an atom looks like with dummy names erased: invariant under renaming dummies."""
    pattern = tuple(i if i in free else "" for i in atom.indices)
    if isinstance(atom, Delta):
        return ("1delta", *sorted(pattern))
    if isinstance(atom, Apply):  # elementwise: the order of its indices is immaterial
        return ("2" + atom.func, number_key(atom.param), *sorted(pattern))
    if isinstance(atom, MatrixFn):
        return ("3" + atom.func + ":" + atom.matrix, *pattern)
    return ("0" + atom.name, *pattern)


_MAX_ORDERINGS = 720


def _summed_orders(call, visible: frozenset[str], meets: dict[str, tuple]) -> list[tuple[str, ...]]:
    """The orders to name the summed indices of a call (or a delta) in: by what each meets
    (``meets``), every order of those that meet alike."""
    summed = [i for i in dict.fromkeys(call.indices) if i not in visible]
    if len(summed) < 2:
        return [tuple(summed)]
    summed.sort(key=meets.__getitem__)
    ties = [list(g) for _, g in itertools.groupby(summed, key=meets.__getitem__)]
    orders = itertools.product(*(itertools.permutations(t) for t in ties))
    return [tuple(itertools.chain.from_iterable(order)) for order in orders]


def _looks(factors: tuple, visible: frozenset[str]) -> tuple[list[tuple], dict[str, tuple]]:
    """Per factor, what it looks like with summed names erased: its :func:`_shape_key`, then for
    each summed index it writes, the looks of the factors it shares that index with, at which
    axes (one round of colour refinement).  Invariant under renaming summed indices, so ordering
    factors by it and trying orders only among factors that look alike keeps the canonical key
    canonical, with far fewer orders to try: in a 3-layer network's Hessian the two X's of
    ``X_na X_nb W2_ab ...`` are told apart by what their summed letters meet.  Also, per summed
    index, what it meets: the looks and axes of the factors that write it."""
    shapes = [_shape_key(f, visible) for f in factors]
    if len(set(shapes)) == len(shapes) and not any(
        isinstance(f, (Apply, Delta)) and len({i for i in f.indices if i not in visible}) > 1 for f in factors
    ):
        return [(shape,) for shape in shapes], {}  # nothing alike to tell apart: one order
    where: dict[str, list[tuple[int, int]]] = {}
    for n, f in enumerate(factors):
        ordered_axes = isinstance(f, (Tensor, MatrixFn))  # a call's or a delta's indices have no order
        for axis, i in enumerate(f.indices):
            if i not in visible:
                where.setdefault(i, []).append((n, axis if ordered_axes else 0))
    looks = []
    for n, f in enumerate(factors):
        met = []
        for i in dict.fromkeys(f.indices):
            if i in visible:
                continue
            mine = sorted(axis for m, axis in where[i] if m == n)
            others = sorted((shapes[m], axis) for m, axis in where[i] if m != n)
            met.append((tuple(mine), tuple(others)))
        looks.append((shapes[n], tuple(sorted(met))))
    meets = {i: tuple(sorted((shapes[m], axis) for m, axis in at)) for i, at in where.items()}
    return looks, meets


def _atom_key(atom, depth: int, counts: bool = True) -> tuple:
    if isinstance(atom, Apply):
        return _apply_key(atom, depth, counts)
    if isinstance(atom, MatrixFn):
        return ("MatrixFn", atom.func + ":" + atom.matrix, *atom.indices)
    return (type(atom).__name__, getattr(atom, "name", ""), *atom.indices)


@lru_cache(maxsize=65536)
def _apply_key(atom: Apply, depth: int, counts: bool = True) -> tuple:
    """The canonical key of a call: its function and its argument's terms' keys (cached, since
    nested calls are keyed again each time an enclosing term is)."""
    free = frozenset(atom.arg.indices)
    inner = tuple(sorted((number_key(t.coeff), canonical_key(t, free, depth + 1, counts)) for t in atom.arg.terms))
    # elementwise: the order of its indices is immaterial; they are one tuple, so that keys of
    # calls with different numbers of indices still compare (a str is never set against a tuple)
    return ("Apply", atom.func, number_key(atom.param), tuple(sorted(atom.indices)), inner)


def exact_quotient(polynomial: list[Fraction], divisor: tuple[Fraction, ...]) -> list[Fraction] | None:
    """``polynomial / divisor`` (coefficients from the constant up) where it divides exactly, else
    None: the evaluator's slopes of sigmoid and tanh, and the factored printing's."""
    left = list(polynomial)
    while left and not left[-1]:
        left.pop()
    if len(left) < len(divisor):
        return None
    quotient = [Fraction(0)] * (len(left) - len(divisor) + 1)
    for k in range(len(quotient) - 1, -1, -1):
        quotient[k] = left[k + len(divisor) - 1] / divisor[-1]
        for j, d in enumerate(divisor):
            left[k + j] -= quotient[k] * d
    return quotient if not any(left) else None


def common_coefficient(coeffs) -> Fraction:
    """The greatest common divisor of ``coeffs``, negative where all of them are: ``-2 Y + 2 P``
    is ``2 (P - Y)`` (the optimiser: one subtraction, the 2 on the smaller product), and a sum
    that is all negative prints as ``-2 (a + b)`` (the printer)."""
    g = Fraction(math.gcd(*(c.numerator for c in coeffs)), math.lcm(*(c.denominator for c in coeffs)))
    return -g if all(c < 0 for c in coeffs) else g


def _counted(term: Term, free: frozenset[str]) -> dict[str, str]:
    """The summed letters of ``term`` that only deltas carry (``delta_nn``: the length of n),
    each with the name a key keeps for it: no tensor of the term sizes such a letter, so
    ``m delta_nn`` and ``m delta_kk`` are N m and K m, not like terms; and a count keeps its stem
    (``n#1`` and ``n#1@2`` count statement 1's n, ``n#2`` statement 2's, which may be another
    length: ``sqrt(sum_l(a_l^0)) - sqrt(sum_l(b_l^0))`` in two statements is not 0)."""
    in_deltas = {i for f in term.factors if isinstance(f, Delta) for i in f.indices}
    if not in_deltas:
        return {}
    elsewhere = {i for f in term.factors if not isinstance(f, Delta) for i in f.indices}
    return {i: "=" + (count_stem(i) if is_count(i) else i) for i in in_deltas - elsewhere - free}


def canonical_key(term: Term, free: frozenset[str], depth: int = 0, counts: bool = True) -> tuple:
    """A key equal for two terms exactly when they differ only by names of summed indices
    and the order of factors (within a bounded search over orderings of look-alike factors).
    A summed index that only deltas carry keeps its name (:func:`_counted`), unless ``counts``
    is false (comparing a printed text with the form it came from, whose counts it may spell
    with other letters)."""
    counted = _counted(term, free) if counts else {}
    visible = free | frozenset(counted)
    looks, meets = _looks(term.factors, visible)
    ordered = sorted(range(len(term.factors)), key=looks.__getitem__)
    groups = [[term.factors[n] for n in g] for _, g in itertools.groupby(ordered, key=looks.__getitem__)]
    count = math.prod(math.factorial(len(g)) for g in groups)
    choices = (
        list(itertools.product(*(itertools.permutations(g) for g in groups))) if count <= _MAX_ORDERINGS else [groups]
    )
    # an elementwise call's indices have no order, nor a delta's (whose order follows its names):
    # try each order for naming its summed ones (only its summed ones are named, and those that
    # meet different factors are told apart): delta_km tanh(A_km) and delta_pt tanh(A_tp) had
    # two keys, since the delta named its smaller letter first
    calls = [f for f in dict.fromkeys(term.factors) if isinstance(f, (Apply, Delta)) and len(set(f.indices)) > 1]
    orders = [_summed_orders(f, visible, meets) for f in calls]
    if len(choices) * math.prod(len(o) for o in orders) > _MAX_ORDERINGS:
        orders = [o[:1] for o in orders]
    best = None
    for choice in choices:
        for picked in itertools.product(*orders):
            order_of = dict(zip(calls, picked))
            mapping: dict[str, str] = dict(counted)
            key = []
            below = best is None  # whether the key so far is already below the best one
            for atom in itertools.chain.from_iterable(choice):
                for i in order_of.get(atom, atom.indices):
                    if i not in free and i not in mapping:
                        mapping[i] = f"~{depth}.{len(mapping)}"
                if type(atom) is Tensor:  # _atom_key(rename_atom(atom, mapping)), without the new Tensor
                    part = ("Tensor", atom.name, *(mapping.get(i, i) for i in atom.indices))
                else:
                    part = _atom_key(rename_atom(atom, mapping), depth, counts)
                if not below:
                    if part > best[len(key)]:
                        break  # above the best at this atom: the rest cannot make it the least
                    below = part < best[len(key)]
                key.append(part)
            else:
                candidate = tuple(key)
                if best is None or candidate < best:
                    best = candidate
    return best or ()


def power_of(atom, exponent: Fraction, indices: Indices | None = None) -> Apply:
    """``atom ^ exponent`` as a call, built directly (no folding, no rule): over ``indices``,
    by default the atom's own (a count inside, ``delta_ll^2``, is summed there: ``()``)."""
    over = tuple(atom.indices) if indices is None else indices
    return Apply("pow", Poly((Term(Fraction(1), (atom,)),), over), exponent)


def power_base(atom) -> tuple[Poly, Fraction]:
    """``atom`` as ``base ^ exponent`` (a call is its own base with exponent 1)."""
    if isinstance(atom, Apply) and atom.func == "pow":
        return atom.arg, atom.param
    return Poly((Term(Fraction(1), (atom,)),), atom.indices), Fraction(1)


def _as_power(atom) -> tuple[Poly, Fraction] | None:
    """``(u, p)`` for ``u^p`` and ``(u, 1/2)`` for ``sqrt(u)``, else None."""
    if isinstance(atom, Apply) and atom.func == "sqrt":
        return atom.arg, Fraction(1, 2)
    if isinstance(atom, Apply) and atom.func == "pow" and atom.param is not None:
        return atom.arg, Fraction(atom.param)
    return None


def _root_base(atom) -> tuple[Poly, Fraction] | None:
    """``(u, 1/2)`` for ``sqrt(u)`` and ``(u, p/2)`` for ``sqrt(u)^p``, else None."""
    read = _as_power(atom)
    if read is None or atom.func == "sqrt":
        return read
    inner = single_atom(read[0], "sqrt")
    return None if inner is None else (inner.arg, read[1] / 2)


def through_powers(term: Term, powered: frozenset) -> Term:
    """``term`` with each power u^k of an intermediate ``u = x^p`` (:data:`POWERED`) written
    x^(k p) where the term holds a power of that x too: through ``u_i = x_i^0.5; f = sum_i(u_i^2)``
    the Hessian was 0.5 / x - 0.5 u / x^1.5, 9.7e83 at x = 1e-100 for 0 (a hunt's find); as
    x's powers it is 0, as in one statement.  A term without x keeps the user's u."""
    bases = {power_base(f)[0] for f in term.factors}
    factors, changed = [], False
    for f in term.factors:
        power = Fraction(1)
        atom = f
        if isinstance(f, Apply) and f.func == "pow" and f.param.denominator == 1:
            atom, power = single_atom(f.arg), f.param
        read = None
        if isinstance(atom, Tensor):
            for name, indices, tensor, exponent in powered:
                if name == atom.name and len(indices) == len(atom.indices):
                    x = Tensor(tensor.name, tuple(dict(zip(indices, atom.indices)).get(i, i) for i in tensor.indices))
                    base = Poly((Term(Fraction(1), (x,)),), x.indices)
                    if base in bases:
                        read = Apply("pow", base, power * exponent)
                    break
        factors.append(read if read is not None else f)
        changed = changed or read is not None
    return Term(term.coeff, tuple(factors)) if changed else term


def split_product_powers(term: Term) -> Term:
    """``(c x y)^n`` (n a whole number, nothing summed inside) as ``c^n x^n y^n`` where x or y is
    (a power of) another factor's base in the term, so that :func:`merge_powers` cancels it: the
    derivative of log(x y) by x, ``y / (x y)``, is ``1 / x``, and of ``log(det(A) det(B))`` by A
    ``inv(A)_ji``, where det(A) det(B) overflowed (the gradient was 0 for a 200 x 200 pair of
    1000s).  A whole power of a product is the product of the powers, whatever the signs."""
    bases = [power_base(f)[0] for f in term.factors]
    factors, coeff, changed = [], term.coeff, False
    for k, f in enumerate(term.factors):
        inner = None
        if isinstance(f, Apply) and f.func == "pow" and f.param.denominator == 1 and len(f.arg.terms) == 1:
            inner = f.arg.terms[0]
        if (
            inner is not None
            and len(inner.factors) > 1
            and inner.coeff != 0
            and all(set(g.indices) <= set(f.arg.indices) for g in inner.factors)
            and any(power_base(g)[0] in bases[:k] + bases[k + 1 :] for g in inner.factors)
        ):
            coeff *= inner.coeff ** int(f.param)
            for g in inner.factors:
                base, exponent = power_base(g)
                factors.append(Apply("pow", base, exponent * f.param))
            changed = True
        else:
            factors.append(f)
    return Term(coeff, tuple(factors)) if changed else term


def alike_calls(term: Term) -> Term:
    """``term`` with each call (or power of one) whose base is another factor's up to the names of
    the letters it sums spelled as the first of them: ``sigmoid(X_ni w_i) sigmoid(X_nd w_d)`` is
    ``sigmoid(X_ni w_i)`` twice, which :func:`merge_powers` writes as its square (a GRU's gradient
    printed 13 terms where like terms were never collected, and its sums of powers of one sigmoid
    went apart).  Ends: one pass over the factors."""

    def kind(f) -> tuple:
        inner = single_atom(f.arg) if f.func == "pow" else f
        return (inner.func if isinstance(inner, Apply) else "pow", f.indices)

    kinds = Counter(kind(f) for f in term.factors if isinstance(f, Apply))
    if all(n < 2 for n in kinds.values()):
        return term
    spelled: dict[tuple, Poly] = {}
    factors, changed = [], False
    for f in term.factors:
        if isinstance(f, Apply) and kinds[kind(f)] > 1:
            base = power_base(f)[0]
            free = frozenset(base.indices)
            key = (base.indices, tuple(sorted((repr(canonical_key(t, free)), t.coeff) for t in base.terms)))
            first = spelled.setdefault(key, base)
            if first != base:
                atom = single_atom(first)
                if f.func == "pow":
                    f, changed = Apply("pow", first, f.param), True
                elif atom is not None and first.terms[0].coeff == 1:
                    f, changed = atom, True
        factors.append(f)
    return Term(term.coeff, tuple(factors)) if changed else term


def merge_powers(term: Term) -> list[Term]:
    """``u^a u^b = u^(a+b)`` for equal elementwise bases, where a call or power is involved
    (plain tensors stay as written: ``x_i x_i``).  Returns the term's expansion (a list).
    Fractional powers merge too (``x^0.5 x^0.5`` is x, also below 0, where each factor is NaN):
    left apart, their derivatives are sums of powers that cancel only in exact arithmetic.
    Whole powers of products split first where that cancels (:func:`split_product_powers`)."""
    term = alike_calls(split_product_powers(term))
    applies = [f for f in term.factors if isinstance(f, Apply)]
    if not applies:
        return [term]
    # sqrt(u) and sqrt(u)^p are powers of u where u itself is another factor's base and is never
    # negative (a sigmoid, an exp): sigmoid(z) / sqrt(sigmoid(z)) is sigmoid(z)^0.5 (0 at
    # z = -800, where the quotient is 0/0); or where the merged power is fractional, NaN below 0
    # as the product is: det(X) / sqrt(det(X))^3 is det(X)^-0.5 (the gradient of a Gaussian's
    # 1 / sqrt(det(S)), whose sqrt(det)^3 overflowed from det = 1e205: the gradient was 0), and at
    # 0 and inf the limit, as for a sigmoid (x / sqrt(x)^3 is inf at 0 where it was 0/0, NaN); x
    # sqrt(x) sqrt(x) stays, NaN below 0 as NumPy has it
    plain = {power_base(f)[0] for f in term.factors}
    candidates = {id(f): r for f in applies if (r := _root_base(f)) is not None and r[0] in plain}
    totals: dict[Poly, Fraction] = {}
    for f in term.factors:
        base, exponent = candidates.get(id(f)) or power_base(f)
        totals[base] = totals.get(base, Fraction(0)) + exponent
    roots = {k: r for k, r in candidates.items() if non_negative(r[0]) or totals[r[0]].denominator != 1}
    groups: dict[Poly, Fraction] = {}
    order: list[Poly] = []
    rest = []
    powered = {(roots.get(id(g)) or power_base(g))[0] for g in applies}  # d / sqrt(d)^3: d's power too
    for f in term.factors:
        if isinstance(f, Apply) or power_base(f)[0] in powered:
            base, exponent = roots.get(id(f)) or power_base(f)
            if base not in groups:
                groups[base] = Fraction(0)
                order.append(base)
            groups[base] += exponent
        else:
            rest.append(f)
    if len(order) == len([f for f in term.factors if f not in rest]):
        return [term]  # nothing to merge
    out = [Term(term.coeff, tuple(rest))]
    for base in order:
        out = multiply(out, make_apply("pow", base, groups[base]), set(base.indices), avoid=term.index_names())
    return out


#: Elementwise functions whose values are never negative: a power of a power of them folds freely.
NON_NEGATIVE = frozenset({"abs", "cosh", "exp", "relu", "sigmoid", "softplus", "sqrt", "step"})


def non_negative(base: Poly) -> bool:
    """Whether ``base`` is never negative as written: a positive multiple of a product of calls
    that are not (``exp(u)``, ``sigmoid(u)``) and of even integer powers."""
    if len(base.terms) != 1 or base.terms[0].coeff <= 0:
        return False
    return all(
        isinstance(f, Apply)
        and (f.func in NON_NEGATIVE or (f.func == "pow" and f.param.denominator == 1 and f.param.numerator % 2 == 0))
        for f in base.terms[0].factors
    )


def folds_to(base: Poly, inner: Fraction, total: Fraction) -> bool:
    """Whether ``(base^inner)^n`` may be written ``base^total`` (total = inner n): always for an
    integer inner power or a base that is never negative; for a fractional one (NaN below 0),
    only where the total is fractional too, so NaN stays NaN (``(x^0.5)^2`` is not x)."""
    return inner.denominator == 1 or total.denominator != 1 or non_negative(base)


def unit_delta(factor, indices) -> bool:
    """``delta_ii`` for an index i of ``indices`` (free there, so it is 1)."""
    return isinstance(factor, Delta) and factor.first == factor.second and factor.first in indices


def constant_along(arg: Poly) -> set[str]:
    """The free indices of ``arg`` that no factor of any term uses (but as ``delta_ii``)."""
    free = set(arg.indices)
    used = {i for t in arg.terms for f in t.factors if not unit_delta(f, free) for i in f.indices}
    return free - used


def rebuild_constant_calls(term: Term) -> list[Term]:
    """A call whose argument does not vary along one of its indices (``tanh(delta_ij)`` once j
    became i: tanh(1) at every i) rebuilt by ``make_apply``, which takes it over its other
    indices and carries that one as ``delta_ii``: one spelling for one value, so a printed
    result reads back as equivalent.  Ends: a rebuilt call has no such index."""
    for pos, factor in enumerate(term.factors):
        if isinstance(factor, Apply) and factor.arg.indices and constant_along(factor.arg):
            rest = term.factors[:pos] + term.factors[pos + 1 :]
            out = []
            for part in make_apply(factor.func, factor.arg, factor.param):
                out.extend(rebuild_constant_calls(Term(term.coeff * part.coeff, rest + part.factors)))
            return out
    return [term]


def simplify(terms, indices: Indices, counts: bool = True, cancelling: bool = True, rename_summed: bool = True) -> Poly:
    """Contract deltas, collect like terms (up to renaming summed indices) and drop zeros; then
    (``cancelling``) cancel powers of a one-variable sum against the numerator where it divides
    exactly (:mod:`einderiv.cancel`: ``s (1 - s) / (1 - s)^2`` is ``s / (1 - s)``).

    The first-seen spelling of each collected term is kept, so results read like the input.
    ``counts`` as for :func:`canonical_key`.  Without ``rename_summed``, terms are collected only
    where they are the same with the same letters (a call's own letters still rename): a Hessian's
    diagonal keeps ``3 f(s_l) X_lj g(s_n) X_nj`` and ``3 g(s_l) X_lj f(s_n) X_nj`` apart, which
    renaming l and n would merge into one term that no longer factors as a product of two sums
    (the evaluator's stable forms need that factoring).
    """
    free = frozenset(indices)
    collected: dict[tuple, list] = {}
    powered = POWERED.get()
    for original in terms:
        if original.coeff == 0:
            continue
        if powered:
            original = through_powers(original, powered)
        merged = merge_powers(contract_deltas(original, free))
        for term in (part for t in merged for part in rebuild_constant_calls(t)):
            term = contract_deltas(term, free)  # u^a u^-a = 1 leaves delta_ii: 1 where i is used
            term = along_deltas(term, indices)  # c_j delta_ij is c_i delta_ij
            held = free if rename_summed else free | {i for f in term.factors for i in f.indices}
            key = canonical_key(_repeated(term), held, counts=counts)  # x_j^2 is x_j x_j
            if key in collected:
                collected[key][0] += term.coeff
            else:
                collected[key] = [term.coeff, term]
    out = tuple(Term(coeff, rep.factors) for coeff, rep in collected.values() if coeff != 0)
    poly = Poly(out, tuple(indices))
    bounded = CANCELLING.get()
    if (
        cancelling
        and CANCEL
        and bounded is not None
        and any(_over_a_sum(f) or _root(f) for t in out for f in t.factors)
    ):
        return CANCEL[0](poly, bounded, ROOTED.get())
    return poly


def root_power(factor, rooted: frozenset) -> tuple[Apply, int] | None:
    """``(sqrt(B), k)`` for a factor ``sqrt(B)^k`` (k an integer, ``sqrt(B)`` itself k = 1) of a
    sum B (``1 / sqrt(1 + x^2)^3``), or of an intermediate ``rooted`` says is one (:data:`ROOTED`),
    else None."""
    power = 1
    named = _named_root(factor, rooted)
    if named is not None:
        return named
    written = _sum_root(factor)
    if written is not None and factor.func == "pow":
        # (1 + x^2)^0.5, (1 + x^2)^-1.5: sqrt(B)^1, sqrt(B)^-3 (as written that way, its Hessian
        # was 0 at x = 1e8 for 1e-24, where sqrt(1 + x^2) spelled so was right: a hunt's find)
        return Apply("sqrt", written[0]), written[1]
    if isinstance(factor, Apply) and factor.func == "pow" and factor.param.denominator == 1:
        factor, power = single_atom(factor.arg), int(factor.param)
    if not (isinstance(factor, Apply) and factor.func == "sqrt"):
        return None
    inner = single_atom(factor.arg)
    if len(factor.arg.terms) > 1 or (isinstance(inner, Tensor) and any(inner.name == r[0] for r in rooted)):
        return factor, power
    return None


def _named_root(factor, rooted: frozenset) -> tuple[Apply, int] | None:
    """``(sqrt(B), k)`` for ``u^k`` (``u`` alone: k = 1) where ``rooted`` says the intermediate
    u is sqrt(B) or B^(n/2) (``u_i = sqrt(1 + x_i^2)``: the pseudo-Huber HVP through u printed
    ``1 / u - x^2 / u^3``, with the wrong sign at x = 1e8, where its Hessian collapsed)."""
    power = 1
    if isinstance(factor, Apply) and factor.func == "pow" and factor.param.denominator == 1:
        factor, power = single_atom(factor.arg), int(factor.param)
    if not isinstance(factor, Tensor):
        return None
    for name, indices, poly in rooted:
        if name != factor.name or len(indices) != len(factor.indices) or len(poly.terms) != 1:
            continue
        found = root_of_sum(poly)
        if found is None:
            return None
        base, times = found
        mapping = dict(zip(indices, factor.indices))
        arg = Poly(tuple(t.rename(mapping) for t in base.terms), factor.indices)
        return Apply("sqrt", arg), power * times
    return None


def _sum_root(atom) -> tuple[Poly, int] | None:
    """``(B, n)`` for an atom that is ``sqrt(B)`` (n = 1) or ``B^(n/2)`` of a sum B, else None."""
    if not (isinstance(atom, Apply) and len(atom.arg.terms) > 1):
        return None
    if atom.func == "sqrt":
        return atom.arg, 1
    if atom.func == "pow" and atom.param.denominator == 2:
        return atom.arg, int(2 * atom.param)
    return None


def root_of_sum(poly: Poly) -> tuple[Poly, int] | None:
    """``(B, n)`` where ``poly`` is exactly ``sqrt(B)`` (n = 1) or ``B^(n/2)`` of a sum B
    (``u_i = sqrt(1 + x_i^2)``, ``u_i = (1 + x_i^2)^1.5``), else None."""
    return _sum_root(single_atom(poly))


def _root(factor) -> bool:
    """Whether ``factor`` is a power of a square root :mod:`einderiv.cancel` may collapse."""
    return root_power(factor, ROOTED.get()) is not None


def _over_a_sum(factor) -> bool:
    """Whether ``factor`` is a negative power of a sum (``1 / (1 - s)^2``), or of an intermediate
    that is an elementwise sum (``1 / u^2`` with ``u_i = 1 + x_i``: :data:`ROOTED`)."""
    if not (isinstance(factor, Apply) and factor.func == "pow" and factor.param < 0):
        return False
    if len(factor.arg.terms) > 1:
        return True
    inner = single_atom(factor.arg)
    return isinstance(inner, Tensor) and any(r[0] == inner.name and len(r[2].terms) > 1 for r in ROOTED.get())


def along_deltas(term: Term, indices: Indices) -> Term:
    """``term`` with each delta between two free indices (``delta_ij``, i before j in
    ``indices``) writing the earlier one in the term's other factors: ``c_j delta_ij`` is
    ``c_i delta_ij``, as the delta is 0 wherever i and j differ.  One spelling for one product,
    so that ``c_i s_i delta_ij + c_j s_i delta_ij`` collects.  Ends: each pass renames a later
    free index to an earlier one, outside deltas."""
    order = {i: k for k, i in enumerate(indices)}
    pairs = sorted(
        (
            sorted((f.first, f.second), key=order.__getitem__)
            for f in term.factors
            if isinstance(f, Delta) and f.first != f.second and f.first in order and f.second in order
        ),
        key=lambda p: (order[p[1]], order[p[0]]),
    )
    factors = term.factors
    for early, late in pairs:
        mapping = {late: early}
        factors = tuple(f if isinstance(f, Delta) else rename_atom(f, mapping) for f in factors)
    return term if factors == term.factors else Term(term.coeff, factors)


def keep_sums(term: Term, summed: set[str] | frozenset[str]) -> Term:
    """``term`` with ``delta_rr`` for each summed index r it no longer carries: a sum over r of
    something constant in r is r's dimension times it, not the thing itself."""
    missing = sorted(set(summed) - term.index_names())
    if not missing:
        return term
    return Term(term.coeff, term.factors + tuple(Delta(r, r) for r in missing))


def _repeated(term: Term) -> Term:
    """``term`` with a positive integer power of one tensor written as repeated factors
    (``A_lm^2`` as ``A_lm A_lm``): one product, two spellings."""
    factors = []
    for f in term.factors:
        if (
            isinstance(f, Apply)
            and f.func == "pow"
            and f.param.denominator == 1
            and 0 < f.param <= 8
            and len(f.arg.terms) == 1
            and f.arg.terms[0].coeff == 1
            and len(f.arg.terms[0].factors) == 1
            and isinstance(f.arg.terms[0].factors[0], Tensor)
            and f.arg.terms[0].factors[0].indices == f.arg.indices
        ):
            factors.extend([f.arg.terms[0].factors[0]] * int(f.param))
        else:
            factors.append(f)
    return Term(term.coeff, tuple(factors))


def equivalent(a: Poly, b: Poly, powers_as_products: bool = False) -> bool:
    """Whether two normal forms are the same expression (up to names of summed indices; with
    ``powers_as_products``, also up to spelling ``A_lm^2`` as ``A_lm A_lm``)."""
    if a.indices != b.indices:
        return False
    spelled = _repeated if powers_as_products else (lambda t: t)
    terms = [spelled(t) for t in a.terms] + [spelled(t).scaled(Fraction(-1)) for t in b.terms]
    return not simplify(terms, a.indices, counts=False).terms


def uncarried_letters(term: Term) -> set[str]:
    """The letters ``term`` writes (inside calls too) that no tensor of it carries: sized by a
    delta's partner or by hints alone (``l`` in ``c_m cos(delta_il)``)."""
    carried: set[str] = set()
    stack = [term]
    while stack:
        for f in stack.pop().factors:
            if isinstance(f, Apply):
                stack.extend(f.arg.terms)
            elif isinstance(f, (Tensor, MatrixFn)) and not is_reciprocal(f):
                carried.update(f.indices)
    return term.index_names() - carried


def multiply(left: list[Term], right: list[Term], keep: set[str], avoid: set[str] | None = None) -> list[Term]:
    """Distribute ``left * right``.  Indices of ``right`` outside ``keep`` are summed there and
    are renamed apart from every index of the left term (and ``avoid``) before joining."""
    out = []
    for a in left:
        names = a.index_names() | (avoid or set())
        for b in right:
            b = rename_term_apart(b, keep, names)
            out.append(Term(a.coeff * b.coeff, a.factors + b.factors))
        if len(out) > limits.current().max_terms:
            raise too_many_terms(len(out))
    return out


def too_many_terms(count: int):
    return DifferentiationError(
        f"the expression grows to {count} terms, over {limits.over('max_terms')}: split it into statements, "
        f"or {limits.raise_hint('max_terms')}"
    )


# -- building calls: exact folding, then the call rules ------------------------------------------
#
# A call rule, ``rule(func, arg, param) -> terms | None``, is one identity of the catalogue
# (:mod:`einderiv.rewrites`): its docstring says what it rewrites, why the result is evaluated
# without overflow or cancellation (Stable) and why rewriting ends (Terminates).  Every rule builds
# its result from :class:`Apply` directly, never through ``make_apply``, so a rule's output is
# never rewritten again by the same call.


ONE = Fraction(1)
ZERO = Fraction(0)


def single_atom(arg: Poly, func: str | None = None):
    """The atom of ``arg`` when it is exactly ``1 * atom`` with no index summed around it
    (``sum_j(exp(z_j))`` is not ``exp`` of anything), optionally of the given function."""
    if len(arg.terms) == 1 and arg.terms[0].coeff == 1 and len(arg.terms[0].factors) == 1:
        atom = arg.terms[0].factors[0]
        if set(atom.indices) != set(arg.indices):
            return None
        if func is None or (isinstance(atom, Apply) and atom.func == func):
            return atom
    return None


def negated(poly: Poly, by: Fraction = Fraction(-1)) -> Poly:
    """``by * poly`` (by default ``-poly``)."""
    return Poly(tuple(t.scaled(by) for t in poly.terms), poly.indices)


def carrying(terms, indices) -> list[Term]:
    """Terms that still carry every index of ``indices`` (as ``delta_ii``, which is 1 or, when i
    is summed and used nowhere else, the dimension): folding ``x_i^0`` to 1 must not lose i."""
    out = []
    for term in terms:
        missing = [i for i in dict.fromkeys(indices) if i not in term.index_names()]
        out.append(Term(term.coeff, term.factors + tuple(Delta(i, i) for i in missing)) if missing else term)
    return out


def splice(arg: Poly) -> list[Term]:
    """The terms of ``arg`` as terms of the enclosing expression, carrying its indices."""
    return carrying(arg.terms, arg.indices)


def _constant_and_rest(arg: Poly) -> tuple[Fraction | None, Poly]:
    """``(c, rest)`` when ``arg`` is ``c + rest`` with one constant term c, else ``(None, arg)``."""
    constant = [t for t in arg.terms if not t.factors]
    rest = tuple(t for t in arg.terms if t.factors)
    if len(constant) == 1 and rest:
        return constant[0].coeff, Poly(rest, arg.indices)
    return None, arg


def _elementwise_atom(term: Term, indices, func: str):
    """The atom of a one-factor term with coefficient 1 that is ``func(...)`` and sums no index
    (its indices lie within ``indices``: broadcast along the others), else None."""
    if term.coeff != 1 or len(term.factors) != 1:
        return None
    atom = term.factors[0]
    if isinstance(atom, Apply) and atom.func == func and set(atom.indices) <= set(indices):
        return atom
    return None


def _difference(a: Poly, b: Poly, indices) -> Poly:
    """``a - b`` over ``indices`` (each broadcast along the indices it lacks)."""
    return simplify(carrying([*a.terms, *negated(b).terms], indices), tuple(indices))


def _log_of(value: Fraction) -> Term:
    """The constant ``log(value)`` as a term."""
    return Term(ONE, (Apply("log", Poly((Term(value, ()),), ())),))


def _signed_log(value: Fraction) -> Term:
    """``log(value)``, written ``-log(1 / value)`` below 1 (``-log(2)``, not ``log(0.5)``)."""
    return _log_of(value) if value >= 1 else _log_of(1 / value).scaled(-ONE)


def constant_value(terms: list[Term]) -> Fraction | None:
    """The value of ``terms`` when every one is a constant (no factors), else None."""
    if all(not t.factors for t in terms):
        return sum((t.coeff for t in terms), Fraction(0))
    return None


#: most decimal digits a constant folded from a power of a number may have ((1e300)^15 has 4501):
#: kept exactly, a larger one costs time without bound (2^3000000 took 44 s)
MAX_CONSTANT_DIGITS = 10_000


def _check_constant_power(value: Fraction, exponent: int) -> None:
    """An error where ``value ** exponent`` would have more than :data:`MAX_CONSTANT_DIGITS` digits."""
    bits = max(abs(value.numerator).bit_length(), value.denominator.bit_length()) - 1
    digits = int(abs(exponent) * bits * 0.30103)
    if digits > MAX_CONSTANT_DIGITS:
        raise EinderivError(
            f"the constant {value}^{exponent} has about {digits} digits, more than the {MAX_CONSTANT_DIGITS} "
            "einderiv keeps exactly: write a smaller number, or a power of a tensor"
        )


def make_apply(func: str, arg: Poly, param: Fraction | None = None) -> list[Term]:
    """``func(arg)`` as terms, after exact folding and the stable rewrites:

    * a call on an argument that does not vary along some of its indices is taken over the
      others and carried over these (``tanh(delta_ii)`` is ``tanh(1)``); a call on 0 is f(0)
      where that is rational (``tanh(A_ij - A_ij)`` = 0);
    * ``u^0 = 1``, ``u^1 = u``, ``(u^p)^n = u^(p n)`` for integer n, constants folded exactly;
    * then the first rule of :data:`CALL_RULES` that applies
      (``log(sigmoid(u)) = -softplus(-u)``, ``log(1 + v) = log1p(v)``, ...).
    """
    one = Fraction(1)
    along = constant_along(arg)
    if along:
        # the argument does not vary along some of its indices (A_ij - A_ij; delta_ii with i
        # free, which is 1): the call is taken over the others and carried over these, so that
        # it prints, and reads back, as what it is (tanh(1), not tanh over an index it ignores)
        reduced = Poly(
            tuple(Term(t.coeff, tuple(f for f in t.factors if not unit_delta(f, along))) for t in arg.terms),
            tuple(i for i in arg.indices if i not in along),
        )
        return carrying(make_apply(func, reduced, param), arg.indices)
    at_zero = FUNCTIONS[func].at_zero if func in FUNCTIONS else None  # f(0), where rational
    if not arg.terms and at_zero is not None:
        return [Term(at_zero, ())] if at_zero else []
    if func == "pow":
        if param == 0:
            return carrying([Term(one, ())], arg.indices)
        if param == 1:
            return splice(arg)
        value = constant_value(list(arg.terms))
        if value is not None and param.denominator == 1 and (value != 0 or param > 0):
            _check_constant_power(value, param.numerator)
            return carrying([Term(value**param.numerator, ())], arg.indices)
        inner = single_atom(arg, "pow")
        if inner is not None and param.denominator == 1 and folds_to(inner.arg, inner.param, inner.param * param):
            return make_apply("pow", inner.arg, inner.param * param)
        scale = arg.terms[0].coeff if len(arg.terms) == 1 else None
        if scale not in (None, 0, 1) and param.denominator == 1 and abs(param * math.log(abs(scale))) <= 30:
            # (c u)^n = c^n u^n: 1 / (2 exp(r))^3 is exp(r)^-3 / 8, whose powers merge with
            # exp(r)'s own (as (2 v)^3 it overflows from r = 237, where 8 v^2 / (2 v)^3 became 0);
            # only where c^n is within e^30 of 1, so that c^n and u^n do not overflow or underflow
            # apart where (c u)^n does not ((x / 1000)^50 stays: 1e-150 x^50 is inf at x = 1e7)
            (term,) = arg.terms
            rest = make_apply("pow", Poly((Term(one, term.factors),), arg.indices), param)
            return [Term(t.coeff * term.coeff**param.numerator, t.factors) for t in rest]
    rewritten = rewrite_call(func, arg, param)
    if rewritten is not None:
        return rewritten
    return [Term(one, (Apply(func, arg, param),))]


def _determinant_power(factor) -> tuple[str, Fraction, str] | None:
    """``(M, p, sign)`` for a factor that is ``det(M)`` or ``abs(det(M))`` under powers and square
    roots (``det(M)^p``, ``1 / sqrt(det(M))``, ``sqrt(det(M)^2)``), p the product of the powers;
    ``sign`` is "abs" where the factor is |det(M)|^p (an abs, or an even power inside), "positive"
    where it is real only for det(M) > 0 (a fractional power of det itself), else "odd" (det(M)^p,
    p odd: the sign of det(M)).  None for any other factor."""
    powers = []
    while (read := _as_power(factor)) is not None:
        powers.append(read[1])
        factor = single_atom(read[0])
    sign = "odd"
    if isinstance(factor, Apply) and factor.func == "abs":
        factor, sign = single_atom(factor.arg), "abs"
    if not (isinstance(factor, MatrixFn) and factor.func == "det"):
        return None
    for power in reversed(powers):  # from the innermost out
        if sign == "odd" and power.denominator != 1:
            sign = "positive"
        elif sign == "odd" and power.numerator % 2 == 0:
            sign = "abs"
    return factor.matrix, math.prod(powers, start=ONE), sign


def log_det(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(c det(A)^p abs(det(B))^q rest) = p logdet(A) + q logabsdet(B) + log(c rest)``: the
    determinants in a log's argument leave it as log-determinants (``log(det(M)) = logdet(M)``,
    ``log(abs(det(W)))`` and ``log(det(W)^2) / 2`` are ``logabsdet(W)``, ``log(2 det(S))`` is
    ``log(2) + logdet(S)``, ``log(exp(-q / 2) / sqrt(det(S)))`` is ``-q / 2 - logdet(S) / 2``).
    Per matrix (:func:`_determinant_power`): |det| under an abs or an even power (``det(W)^2``,
    ``sqrt(det(W)^2)``, ``det(W) det(W)``): ``logabsdet``, whatever the sign; a fractional power
    of det: ``logdet`` (real only where det(M) > 0); an odd power: the determinant's sign is the
    argument's, so ``logdet`` only where it is the one factor of unknown sign (c > 0 and every
    other factor positive), else it stays inside the log.

    Stable: ``logdet`` and ``logabsdet`` are evaluated through ``slogdet``, which never forms the
    determinant, so they do not overflow or underflow for large matrices (det of a 400x400 matrix
    of 10s is inf, of 200x200 of 0.001s 0); their derivative ``inv(M)_lk`` needs no division by
    det (``sign(det(W)) det(W) inv(W)_ji / abs(det(W))`` was NaN where det(W) underflowed).
    Terminates: each determinant leaves the log as a matrix function, and the log of what is left
    holds fewer factors; a log whose determinants all stay is not rewritten."""
    if func != "log" or len(arg.terms) != 1:
        return None
    term = arg.terms[0]
    found: dict[str, list] = {}  # matrix -> [total power, its factors' signs, its factors]
    rest = []
    for factor in term.factors:
        determinant = _determinant_power(factor)
        if determinant is None:
            rest.append(factor)
            continue
        matrix, power, sign = determinant
        entry = found.setdefault(matrix, [Fraction(0), [], []])
        entry[0] += power
        entry[1].append(sign)
        entry[2].append(factor)
    if not found:
        return None
    kinds = {}
    for matrix, (_, signs, _) in found.items():
        if "positive" in signs:
            kinds[matrix] = "positive"
        else:
            kinds[matrix] = "odd" if signs.count("odd") % 2 else "abs"
    odd = [m for m, kind in kinds.items() if kind == "odd"]
    alone = len(odd) == 1 and term.coeff > 0 and all(_positive(f) or _is_sqrt(f) for f in rest)
    # powers that cancel (abs(det(A)) / det(A): log(sign(det A)), NaN below 0 and at a singular
    # A) stay in the log too: a term 0 logdet(A) would be 0 there
    kept = tuple(m for m, (power, _, _) in found.items() if power == 0 or (m in odd and not alone))
    if len(kept) == len(found):
        return None  # det(A) det(B), det(W) x: of unknown sign, so one log of the product
    out = []
    for matrix, (power, _, factors) in found.items():
        if matrix in kept:
            rest.extend(factors)
            continue
        func = "logabsdet" if kinds[matrix] == "abs" else "logdet"
        out.append(Term(power, (MatrixFn(func, matrix),)))
    if rest:
        out.extend(make_apply("log", Poly((Term(term.coeff, tuple(rest)),), arg.indices)))
    elif term.coeff != 1:
        out.append(_log_of(term.coeff))
    return carrying(out, arg.indices)


def log_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(exp(u)) = u``; this is also log∘softmax, since ``softmax_R(z)`` is lowered to
    ``exp(z - logsumexp_R(z))`` (and a hand-written softmax to the same, by
    :func:`exp_over_sum_exp`): ``log(softmax_k(z_k)) = z_k - logsumexp_j(z_j)``.

    Stable: ``u`` needs no exp at all, so ``exp(1000)`` never overflows and ``log`` of an
    underflowed 0 never gives -inf; a log-softmax keeps only the max-shifted log-sum-exp.
    Terminates: the result is the argument ``u`` itself, strictly smaller than the call."""
    if func != "log":
        return None
    exp = single_atom(arg, "exp")
    return splice(exp.arg) if exp is not None else None


def log_sigmoid(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(sigmoid(u)) = -softplus(-u)``.

    Stable: sigmoid(u) rounds to 0 below u = -745 (and log of it is -inf), while softplus is
    evaluated as ``logaddexp(0, x)``, finite and accurate for every finite u; its derivative is
    ``sigmoid(-u)``, which is accurate to a few ulp relative at every u.
    Terminates: the result has no ``log``; softplus is not rewritten by any rule."""
    if func != "log":
        return None
    sig = single_atom(arg, "sigmoid")
    return [Term(-ONE, (Apply("softplus", negated(sig.arg)),))] if sig is not None else None


def _log_of_one_plus(func: str, arg: Poly) -> Poly | None:
    """``v`` when the call is ``log(1 + v)``, else None."""
    if func != "log":
        return None
    constant, rest = _constant_and_rest(arg)
    return rest if constant == 1 else None


def log_one_minus_sigmoid(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 - sigmoid(u)) = -softplus(u)`` (since ``1 - sigmoid(u) = sigmoid(-u)``).

    Stable: ``1 - sigmoid(u)`` is 0 from u = 37 on (cancellation), so its log is -inf at
    logits that logistic regression meets; ``-softplus(u)`` is finite and exact for every finite u.
    Terminates: the result has no ``log``."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    sig = single_atom(negated(rest), "sigmoid")
    return [Term(-ONE, (Apply("softplus", sig.arg),))] if sig is not None else None


def log_sigmoid_difference(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(c sigmoid(a) - c sigmoid(b)) = log(c) - softplus(-a) - softplus(b) + log(-expm1(b - a))``
    for a number c > 0 (since ``sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a))``):
    the likelihood of an ordinal (cumulative-logit) model, ``log(sigmoid(x) - sigmoid(x - 1))``.

    Stable: both sigmoids round to 1 from a, b of about 37 on, so their difference kept a few ulp
    of 1 (the value 1e-3 off relatively at x = 30 for a cut of 1, the gradient -0.9988 for -1 and
    the Hessian of the wrong sign, +1.2e-3 for -3.5e-13); the three terms have no difference of
    rounded numbers, and ``-expm1(b - a)`` keeps every digit of a small a - b.  Where b >= a the
    log is not defined, and the result's last log is NaN or -inf there, as the original is.
    Terminates: the result's log is of ``-expm1``, which no rule rewrites."""
    if func != "log" or len(arg.terms) != 2:
        return None
    up, down = sorted(arg.terms, key=lambda t: t.coeff < 0)
    sigmoids = [single_atom(Poly((t.scaled(1 / t.coeff),), arg.indices), "sigmoid") for t in (up, down)]
    if None in sigmoids or up.coeff <= 0 or down.coeff != -up.coeff:
        return None
    a, b = (sig.arg for sig in sigmoids)
    gap = simplify([*b.terms, *negated(a).terms], arg.indices)  # b - a
    out = [
        Term(-ONE, (Apply("softplus", negated(a)),)),
        Term(-ONE, (Apply("softplus", b),)),
        Term(ONE, (Apply("log", Poly((Term(-ONE, (Apply("expm1", gap),)),), gap.indices)),)),
    ]
    return out if up.coeff == 1 else [*out, _signed_log(up.coeff)]


#: The highest degree a polynomial in one sigmoid may reach when its factors are multiplied out.
MAX_SIGMOID_DEGREE = 12


def _sigmoid_polynomial(arg: Poly) -> tuple[Apply, dict[int, Fraction]] | None:
    """``(sigmoid(u), {k: c_k})`` when ``arg`` is a polynomial ``sum_k c_k sigmoid(u)^k`` in one
    sigmoid with nothing summed inside, its terms products of ``sigmoid(u)``, ``sigmoid(-u)``
    (that is 1 - sigmoid(u)) and whole powers of such polynomials (``sigmoid(u) - sigmoid(u)^2``,
    ``s^3 (1 - s)^2 + s^5 (1 - s)^2``), else None."""
    atom = next((f for t in arg.terms for f in _sigmoids_in(t)), None)
    if atom is None or set(atom.indices) != set(arg.indices):
        return None
    total = _terms_polynomial(arg.terms, atom)
    total = {k: c for k, c in total.items() if c != 0} if total is not None else None
    return (atom, total) if total else None


def _terms_polynomial(terms, atom: Apply) -> dict[int, Fraction] | None:
    """The sum of ``terms`` as a polynomial in ``atom`` (power -> coefficient), else None."""
    total: dict[int, Fraction] = {}
    for term in terms:
        product: dict[int, Fraction] | None = {0: term.coeff}
        for factor in term.factors:
            product = _times(product, _factor_polynomial(factor, atom))
        if product is None:
            return None
        for k, c in product.items():
            total[k] = total.get(k, ZERO) + c
    return total


def _sigmoids_in(term: Term):
    """The sigmoids a term's factors hold, directly or as a power's base."""
    for factor in term.factors:
        if isinstance(factor, Apply) and factor.func == "sigmoid":
            yield factor
        elif isinstance(factor, Apply) and factor.func == "pow":
            for inner in factor.arg.terms:
                yield from _sigmoids_in(inner)


def _factor_polynomial(factor, atom: Apply) -> dict[int, Fraction] | None:
    """The factor as a polynomial in ``atom`` = sigmoid(u): u's sigmoid is s, sigmoid(-u) is
    1 - s, and a whole positive power of a polynomial in s is multiplied out."""
    if factor == atom:
        return {1: ONE}
    if isinstance(factor, Apply) and factor.func == "sigmoid" and factor.arg == negated(atom.arg):
        return {0: ONE, 1: -ONE}
    if not (isinstance(factor, Apply) and factor.func == "pow") or factor.param.denominator != 1 or factor.param < 1:
        return None
    if set(factor.indices) != set(atom.indices):
        return None
    base = _terms_polynomial(factor.arg.terms, atom)
    result: dict[int, Fraction] | None = {0: ONE}
    for _ in range(int(factor.param)):
        result = _times(result, base)
    return result


def _times(p: dict[int, Fraction] | None, q: dict[int, Fraction] | None) -> dict[int, Fraction] | None:
    """The product of two polynomials (power -> coefficient), None past MAX_SIGMOID_DEGREE."""
    if p is None or q is None:
        return None
    out: dict[int, Fraction] = {}
    for i, a in p.items():
        for j, b in q.items():
            if i + j > MAX_SIGMOID_DEGREE:
                return None
            out[i + j] = out.get(i + j, ZERO) + a * b
    return out


def _sigmoid_factors(coefficients: dict[int, Fraction]) -> tuple[int, int, dict[int, Fraction]] | None:
    """``(a, b, r)`` with ``p(s) = s^a (1 - s)^b r(s)`` for the polynomial ``p`` of these
    coefficients, r's coefficients all non-negative (so r > 0 on 0 < s < 1, where a sigmoid
    lives), else None."""
    a = min(coefficients)
    q = [coefficients.get(k, ZERO) for k in range(a, max(coefficients) + 1)]  # q[k]: the s^k coefficient
    b = 0
    while len(q) > 1 and sum(q) == 0:  # q(1) = 0: (1 - s) divides q
        quotient, carry = [ZERO] * (len(q) - 1), ZERO
        for k in range(len(q) - 1, 0, -1):  # q(s) = (s - 1) t(s): synthetic division by s - 1
            carry = q[k] + carry
            quotient[k - 1] = carry
        q, b = [-c for c in quotient], b + 1  # (1 - s) r(s), r = -t
    if any(c < 0 for c in q) or q[0] <= 0:
        return None
    return a, b, {k: c for k, c in enumerate(q) if c != 0}


def log_of_sigmoid_polynomial(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(s^a (1 - s)^b r(s)) = a log(s) + b log(1 - s) + log(r(s))`` for s = sigmoid(u), the
    argument a polynomial in s (``log(s - s^2)``, the log of sigmoid's derivative, or
    ``log(1 - s^2)``), r's coefficients positive; each log then rewritten by the other rules:
    ``-softplus(-u)``, ``-softplus(u)``, a log1p; the log-odds ``log(s) - log(1 - s)`` is u
    (:func:`_log_odds`).

    Stable: ``s - s^2`` is 0 at u = 37 (s rounds to 1), so its log was -inf and every derivative
    NaN; ``-softplus(-u) - softplus(u)`` is finite and exact for every finite u, and u is exact
    where ``softplus(u) - softplus(-u)`` kept only an ulp of log 2 (8e-8 off at u = 1e-10).
    Terminates: each log is of a polynomial of smaller degree than the argument, or of one
    sigmoid; the rule applies only where s or 1 - s divides the argument."""
    if func != "log":
        return None
    found = _sigmoid_polynomial(arg)
    if found is None:
        return None
    atom, coefficients = found
    factors = _sigmoid_factors(coefficients)
    if factors is None or factors[:2] == (0, 0):
        return None
    a, b, rest = factors
    s = Term(ONE, (atom,))
    out: list[Term] = []
    if a:
        out.extend(t.scaled(Fraction(a)) for t in make_apply("log", Poly((s,), arg.indices)))
    if b:
        one_minus = Poly((Term(ONE, ()), s.scaled(-ONE)), arg.indices)
        out.extend(t.scaled(Fraction(b)) for t in make_apply("log", one_minus))
    if set(rest) == {0}:
        if rest[0] != 1:
            out.append(_log_of(rest[0]))
    else:
        terms = tuple(
            Term(c, (Apply("pow", Poly((s,), arg.indices), Fraction(k)),) if k > 1 else (atom,) if k else ())
            for k, c in rest.items()
        )
        out.extend(make_apply("log", Poly(terms, arg.indices)))
    return carrying(_log_odds(out), arg.indices)


def _log_odds(terms: list[Term]) -> list[Term]:
    """``terms`` with each ``c softplus(u) - c softplus(-u)`` written ``c u``: the log-odds
    ``log(s) - log(1 - s)`` of s = sigmoid(u) is u exactly, where the difference of softpluses
    keeps an ulp of log 2 (8e-8 off relatively at u = 1e-10)."""
    out = list(terms)
    for k, term in enumerate(out):
        if term is None or term.coeff == 0:
            continue
        softplus = term.factors[0] if len(term.factors) == 1 else None
        if not (isinstance(softplus, Apply) and softplus.func == "softplus"):
            continue
        minus = negated(softplus.arg)

        def flipped(t: Term | None, minus=minus, coeff=-term.coeff) -> bool:
            f = t.factors[0] if t is not None and t.coeff == coeff and len(t.factors) == 1 else None
            return isinstance(f, Apply) and f.func == "softplus" and equivalent(f.arg, minus)

        partner = next((j for j, t in enumerate(out) if j != k and flipped(t)), None)
        if partner is not None:
            out[k], out[partner] = None, None
            out.extend(t.scaled(term.coeff) for t in softplus.arg.terms)
    return [t for t in out if t is not None]


def log_one_plus_tanh(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 + tanh(u)) = log(2) - softplus(-2u)`` and ``log(1 - tanh(u)) = log(2) - softplus(2u)``
    (since ``1 + tanh(u) = 2 sigmoid(2u)``).

    Stable: ``1 + tanh(u)`` is 0 from u = -19 on (tanh rounds to -1), so its log was -inf and
    every derivative NaN; softplus is finite and exact for every finite u.
    Terminates: the result has no ``log`` of anything but a number."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    for sign in (ONE, -ONE):
        tanh = single_atom(negated(rest, sign), "tanh")
        if tanh is not None:
            return carrying(
                [_log_of(Fraction(2)), Term(-ONE, (Apply("softplus", negated(tanh.arg, -2 * sign)),))], arg.indices
            )
    return None


def log_one_plus_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 + exp(u)) = softplus(u)``.

    Stable: exp(u) overflows from u = 710 on (log of inf is inf), and ``1 + exp(u)`` rounds to 1
    below u = -37 (log of it is 0, not exp(u)); softplus is ``logaddexp(0, u)``, accurate for
    every u, with derivative ``sigmoid(u)``.
    Terminates: the result has no ``log``."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    exp = single_atom(rest, "exp")
    return [Term(ONE, (Apply("softplus", exp.arg),))] if exp is not None else None


def log1p_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log1p(exp(u)) = softplus(u)`` and ``log1p(-sigmoid(u)) = -softplus(u)``: ``log1p(v)``
    is ``log(1 + v)``, and these are :func:`log_one_plus_exp` and :func:`log_one_minus_sigmoid`;
    ``log1p(sum_k(exp(z_k)))`` is :func:`log_add_exp`'s, ``softplus(logsumexp_k(z_k))``.

    Stable: as those rules (``log1p(exp(745))`` is inf, softplus(745) is 745).
    Terminates: the result has no ``log`` or ``log1p``."""
    if func != "log1p":
        return None
    one_plus = Poly((Term(ONE, ()), *arg.terms), arg.indices)
    return (
        log_one_plus_exp("log", one_plus, None)
        or log_one_minus_sigmoid("log", one_plus, None)
        or log_add_exp("log", one_plus, None)  # log1p(sum_k(exp(z_k))): softplus of a logsumexp
    )


def power_of_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``exp(u)^p = exp(p u)`` for a whole number p: ``1 / exp(z)`` is ``exp(-z)``, so that
    ``1 / (1 + 1 / exp(z))`` reads as ``1 / (1 + exp(-z))``, the sigmoid (its derivative was NaN
    at z = -800: inf / inf), and ``exp(u)^2`` overflows only where ``exp(2 u)`` does.  A
    fractional power stays: for a complex u with |Im u| > pi the principal root of exp(u) is not
    exp(p u) (``exp(0.3 + 4i)^0.5`` is -exp(0.15 + 2i)).

    Stable: one exp, which overflows or underflows only where the value does (``exp(400)^-2``
    was 0^-2 = inf for e^-800 = 0 before 2026-12-05).
    Terminates: the result is an exp with no power around it."""
    if func != "pow" or param is None or Fraction(param).denominator != 1:
        return None
    exp = single_atom(arg, "exp")
    if exp is None:
        return None
    return [Term(ONE, (Apply("exp", Poly(tuple(t.scaled(param) for t in exp.arg.terms), exp.arg.indices)),))]


def reciprocal_one_plus_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``(1 + exp(v))^p = sigmoid(-v)^-p`` for p < 0: ``1 / (1 + exp(-z))`` is ``sigmoid(z)``;
    with numbers a, b > 0, ``(a + b exp(v))^p = a^p sigmoid(-v - log(b / a))^-p``.  For a
    fractional p < 0, ``(a + b exp(v))^p = exp(p log(a) + p softplus(v + log(b / a)))``:
    ``(2 + exp(z))^-0.5`` is ``exp(-0.5 log(2) - 0.5 softplus(z - log(2)))``.

    Stable: exp(v) overflows from v = 710 on, where the value is 0 but its derivative
    ``-exp(v) (1 + exp(v))^-2`` is inf / inf = NaN; sigmoid is evaluated stably and its
    derivative ``sigmoid(u) sigmoid(-u)`` is finite and accurate at every u.  A fractional power
    is one exp of a softplus, never a power of a sigmoid: ``sigmoid(-800)`` underflows to 0,
    where ``(1 + exp(800))^-0.5`` is e^-400, and a^p is not split off (no irrational number
    to hold); its derivatives are ``p sigmoid(w)`` times the same exp, finite at every order.
    Terminates: the result is a sigmoid, a power of one or an exp of a softplus, with no
    ``a + b exp``."""
    if func != "pow" or param is None or param >= 0:
        return None
    constant, rest = _constant_and_rest(arg)
    if constant is None or constant <= 0 or len(rest.terms) != 1 or rest.terms[0].coeff <= 0:
        return None
    scale = rest.terms[0].coeff
    exp = single_atom(Poly((rest.terms[0].scaled(1 / scale),), rest.indices), "exp")
    if exp is None:
        return None
    fractional = param.denominator != 1
    if constant != 1 and not fractional and abs(param * math.log(constant)) > 30:
        # beyond e^30 the two factors a^p and sigmoid(...)^-p overflow or underflow apart where
        # their product does not (a reviewer's find: (1e-8 + exp(z))^-30 was 0 for 5.9e-105 at z = 8)
        return None
    exponent = exp.arg
    if scale != constant:  # a + b exp(v) = a (1 + exp(v + log(b / a)))
        shift = carrying([_signed_log(scale / constant)], exponent.indices)
        exponent = simplify([*exponent.terms, *shift], tuple(exponent.indices))
    if fractional:  # exp(p log(a) + p softplus(v + log(b / a)))
        scaled = [] if constant == 1 else [_signed_log(constant).scaled(param)]
        power = [Term(param, (Apply("softplus", exponent),)), *carrying(scaled, arg.indices)]
        return [Term(ONE, (Apply("exp", simplify(power, tuple(arg.indices))),))]
    sigmoid = Apply("sigmoid", negated(exponent))
    factor = sigmoid if param == -1 else power_of(sigmoid, -param)
    return [Term(constant**param if constant != 1 else ONE, (factor,))]


def log_exp_minus_one(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(exp(v) - 1) = v + log(-expm1(-v))``, the inverse of softplus; with numbers a, b > 0,
    ``log(b exp(v) - a) = v + log(b) + log(-expm1(log(a / b) - v))``.

    Stable: exp(v) overflows from v = 710 on, so the log was inf and every derivative NaN (the
    value is v - exp(-v), to an ulp); ``expm1(-v)`` only tends to -1 there, and near v = 0 it
    keeps every digit of v, where ``1 - exp(-v)`` would keep an ulp of 1 (a relative error of
    1e-16 / v).  The derivative is ``exp(-v) / -expm1(-v) + 1``, i.e. ``1 / (1 - exp(-v))``,
    finite for every v > 0 and exact at both ends, no difference of large numbers.
    ``log(b expm1(v))``, the same function written with expm1, is ``v + log(b) + log(-expm1(-v))``
    too, and ``log1p(expm1(v))`` and ``log(1 + expm1(v))`` are v.
    Terminates: the result's log is of ``-expm1``, which no rule rewrites."""
    if func == "log1p" and single_atom(arg, "expm1") is not None:
        return carrying(list(single_atom(arg, "expm1").arg.terms), arg.indices)
    if func != "log":
        return None
    constant, rest = _constant_and_rest(arg)
    if constant == 1 and single_atom(rest, "expm1") is not None:  # log(1 + expm1(v)) = v
        return carrying(list(single_atom(rest, "expm1").arg.terms), arg.indices)
    if len(arg.terms) == 1 and arg.terms[0].coeff > 0:  # log(b expm1(v))
        scale = arg.terms[0].coeff
        expm1 = single_atom(Poly((arg.terms[0].scaled(1 / scale),), arg.indices), "expm1")
        if expm1 is not None:
            v = expm1.arg
            scaled = [] if scale == 1 else [_signed_log(scale)]
            return [*carrying([*v.terms, *scaled], arg.indices), *_log_minus_expm1(list(negated(v).terms), arg.indices)]
    if constant is None or constant >= 0 or len(rest.terms) != 1 or rest.terms[0].coeff <= 0:
        return None
    scale = rest.terms[0].coeff
    exp = single_atom(Poly((rest.terms[0].scaled(1 / scale),), rest.indices), "exp")
    if exp is None:
        return None
    v = exp.arg
    shift = [] if -constant == scale else [_signed_log(-constant / scale)]
    scaled = [] if scale == 1 else [_signed_log(scale)]
    return [*carrying([*v.terms, *scaled], arg.indices), *_log_minus_expm1([*negated(v).terms, *shift], arg.indices)]


def log_one_minus_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 - exp(u)) = log(-expm1(u))`` and ``log1p(-exp(u)) = log(-expm1(u))``; with numbers
    a, b > 0, ``log(a - b exp(u)) = log(a) + log(-expm1(u + log(b / a)))``: the complementary
    log-log link's ``log(1 - exp(-exp(eta)))`` and a hurdle Poisson's ``log(1 - exp(-lam))``.

    Stable: 1 - exp(u) keeps an ulp of 1, so near u = 0 (eta = -30 above: u = -1e-13) the log
    was 1.7e-4 off and from u = -1e-16 on -inf, its gradient -inf; expm1(u) keeps every digit of
    u.  ``log(-expm1(u))`` is evaluated as Mächler's log1mexp, ``log1p(-exp(u))`` where u < -log 2,
    so that far below 0 too, where -expm1(u) rounds to 1, the value keeps its relative digits.
    Its derivative ``exp(u) / expm1(u)`` is exact at both ends.
    Terminates: the result's log is of ``-expm1``, which no rule rewrites."""
    if func == "log1p":  # log1p(c - b exp(u)) = log((1 + c) - b exp(u))
        constant, rest = _constant_and_rest(arg)
        func, arg = "log", Poly((Term(ONE + (constant or 0), ()), *rest.terms), arg.indices)
    if func != "log":
        return None
    constant, rest = _constant_and_rest(arg)
    if constant is None or constant <= 0 or len(rest.terms) != 1 or rest.terms[0].coeff >= 0:
        return None
    scale = -rest.terms[0].coeff
    exp = single_atom(Poly((rest.terms[0].scaled(-1 / scale),), rest.indices), "exp")
    if exp is None:
        return None
    u = exp.arg
    shift = [] if constant == scale else [_signed_log(scale / constant)]
    scaled = [] if constant == 1 else [_signed_log(constant)]
    return [*carrying(scaled, arg.indices), *_log_minus_expm1([*u.terms, *shift], arg.indices)]


def _log_minus_expm1(w: list[Term], indices) -> list[Term]:
    """``log(-expm1(w))``, log(1 - exp(w)) for w < 0, built as it is (no rule rewrites it); but
    for ``w = -softplus(u)`` it is ``log(sigmoid(u))`` (see :func:`expm1_of_softplus`), which
    the log rules read: ``log(exp(p) - 1)`` of ``p = softplus(z)`` is z, not -inf below -745."""
    v = simplify(carrying(w, indices), tuple(indices))
    softplus = single_atom(negated(v), "softplus")
    if softplus is not None:
        return make_apply("log", Poly((Term(ONE, (Apply("sigmoid", softplus.arg),)),), tuple(indices)))
    inner = Poly((Term(-ONE, (Apply("expm1", v),)),), tuple(indices))
    return [Term(ONE, (Apply("log", inner),))]


def log_of_sigmoid_weights(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(w exp(l1) + (1 - w) exp(l2))`` for a weight ``w = sigmoid(a)`` (its powers too): with
    ``1 - w`` as ``sigmoid(-a)`` (:func:`one_minus_sigmoid`), each weight joins its exp's exponent (``sigmoid(v) =
    exp(-softplus(-v))``), ``log(exp(l1 - softplus(-a)) + exp(l2 - softplus(a)))``, which is
    :func:`log_add_exp`'s logaddexp.  Multiplied out, ``(1 - w) exp(l2)`` is two terms, one
    negative, which that rule does not take: the value was inf, and the gradients NaN, where the
    data lay 60 from both means (exp(-1800) is 0).  Only where the argument is then two such
    terms: ``log(1 - w + w exp(-lam))`` (a zero-inflated model) stays ``log1p``'s, which keeps its
    digits where the argument is near 1, and three or more terms stay as written (folded, the
    gradient by a saturated weight's logit lost its digits).
    Stable: as :func:`log_add_exp`.  Terminates: the result has no ``log``."""
    if func != "log" or len(arg.terms) != 3 or all(t.coeff > 0 for t in arg.terms):
        return None
    terms = one_minus_sigmoid(list(arg.terms), frozenset(arg.indices))
    if terms is None or len(terms) != 2 or any(t.coeff <= 0 for t in terms):
        return None
    return _log_add_exp(Poly(tuple(terms), arg.indices), weights=True)


def sigmoid_factors(term: Term):
    """``(position, argument)`` of each sigmoid factor of ``term``."""
    return [(pos, f.arg) for pos, f in enumerate(term.factors) if isinstance(f, Apply) and f.func == "sigmoid"]


def without_factor(term: Term, pos: int, free, coeff: Fraction, extra=()) -> Term:
    """``term`` with factor ``pos`` removed (``extra`` added), with coefficient ``coeff``; an
    index summed only in the removed factor stays summed (its dimension, ``delta_rr``)."""
    factors = (*term.factors[:pos], *extra, *term.factors[pos + 1 :])
    summed = term.index_names() - set(free)
    return keep_sums(Term(coeff, factors), summed)


def flipped_sigmoid(u: Poly) -> Apply:
    """``sigmoid(-u)``, its positive terms first (``sigmoid(a - b)``, not ``sigmoid(-b + a)``)."""
    return Apply("sigmoid", simplify(sorted(negated(u).terms, key=lambda t: t.coeff < 0), u.indices))


def one_minus_sigmoid(terms: list[Term], free) -> list[Term] | None:
    """``c A - c A sigmoid(u) = c A sigmoid(-u)`` (since ``1 - sigmoid(u) = sigmoid(-u)``).

    Derivatives meet it: d/da of ``a + softplus(b - a)`` (:func:`log_add_exp`) is
    ``1 - sigmoid(b - a)``, which is ``sigmoid(a - b)``.  A sum rule of the catalogue
    (:data:`einderiv.rewrites.SUM_RULES`), defined here with its helpers because
    :func:`log_of_sigmoid_weights` reads a log's argument with it (that module is above this one).
    Stable: ``1 - sigmoid(u)`` is 0 from u = 37 on (4% off at 36), where ``sigmoid(-u)`` is
    accurate to a few ulp relative at every u: the rewrite removes a cancellation.
    Terminates: each application replaces two terms by one."""
    keys = {canonical_key(t, free): k for k, t in enumerate(terms)}
    for k, term in enumerate(terms):
        for pos, u in sigmoid_factors(term):
            rest = without_factor(term, pos, free, -term.coeff)
            partner = keys.get(canonical_key(rest, free))
            if partner is not None and partner != k and terms[partner].coeff == -term.coeff:
                merged = without_factor(term, pos, free, -term.coeff, (flipped_sigmoid(u),))
                return merged_pair(terms, k, partner, merged)
    return None


def merged_pair(terms: list[Term], k: int, partner: int, merged: Term) -> list[Term]:
    """``terms`` with terms ``k`` and ``partner`` replaced by ``merged``, where the first of them was."""
    first = min(k, partner)
    return [merged if m == first else t for m, t in enumerate(terms) if m != max(k, partner)]


def log_add_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(exp(a) + exp(b)) = a + softplus(b - a)`` (logaddexp), elementwise; a term may lack
    some of the indices (it is broadcast along them).  With positive constants, ``log(c1 exp(a)
    + c2 exp(b)) = a + log(c1) + softplus(b - a + log(c2 / c1))``: ``log((exp(u) + exp(-u)) /
    2)``, cosh written by hand, is ``u - log(2) + softplus(-2u)``, as ``log(cosh(u))`` is.

    Stable: neither exp is formed, so ``a = b = 1000`` gives 1000 + log 2, not inf, and
    ``a = b = -1000`` gives -1000 + log 2, not -inf; softplus is evaluated as
    ``logaddexp(0, x)``.  The derivatives are ``sigmoid(a - b)`` and ``sigmoid(b - a)``,
    finite everywhere; second derivatives are ``sigmoid(v) sigmoid(-v)``-like products, no
    difference of exps.  (The absolute rounding error is a few ulp of max(|a|, |b|), as for
    a - b itself.)  Three or more such terms fold from the right: ``log(1 + exp(z) + exp(2z))``
    is log(1 + exp(L)) for L = log(exp(z) + exp(2z)), each log the two-term form (inf and NaN at
    z = 1000 before 2026-12-05).
    Two terms may carry sigmoid weights, ``sigmoid(a) exp(l1) + sigmoid(-a) exp(l2)``
    (:func:`_exp_times_sigmoids`).
    Terminates: the result has no ``log``; each fold is of one term fewer."""
    if func != "log":
        return None
    return _log_add_exp(arg, weights=len(arg.terms) == 2)


def _log_add_exp(arg: Poly, weights: bool) -> list[Term] | None:
    """:func:`log_add_exp`'s rewrite of ``log(arg)``; ``weights``: whether a term may be an exp
    times sigmoids (two terms, not a fold of three or more)."""
    if len(arg.terms) < 2 or any(t.coeff <= 0 for t in arg.terms):
        return None
    if len(arg.terms) > 2:
        rest = _log_add_exp(Poly(arg.terms[1:], arg.indices), weights=False)
        if rest is None:
            return None
        inner = simplify(rest, tuple(arg.indices))
        folded = Poly((arg.terms[0], Term(ONE, (Apply("exp", inner),))), arg.indices)
        return _log_add_exp(folded, weights=False)
    if not (arg.terms[0].factors or arg.terms[1].factors):
        return None
    # a positive constant c is c exp(0): log(exp(u) + 5) = log(5) + softplus(u - log(5)) (was 0
    # for 2.1e-17 in its Hessian at u = 40, and NaN from u = 710)
    zero = Poly((), ())
    first, second = (_exp_of(t, arg.indices, weights) if t.factors else Apply("exp", zero) for t in arg.terms)
    if first is None or second is None:
        return None
    # c1 exp(a) + c2 exp(b) with constants c > 0 (cosh written as (exp(u) + exp(-u)) / 2):
    # a + log(c1) + softplus(b - a + log(c2 / c1))
    (c1, c2), a, b = (t.coeff for t in arg.terms), first.arg, second.arg
    shift = [] if c1 == c2 else carrying([_signed_log(c2 / c1)], arg.indices)
    difference = simplify([*_difference(b, a, arg.indices).terms, *shift], tuple(arg.indices))
    scale = [] if c1 == 1 else carrying([_signed_log(c1)], arg.indices)
    return [
        *carrying(a.terms, arg.indices),
        *scale,
        Term(ONE, (Apply("softplus", difference),)),
    ]


def _exp_of(term: Term, indices, weights: bool = False) -> Apply | None:
    """The exp a one-factor term is, read through a power: ``exp(u)^p`` is ``exp(p u)`` (a
    program's ``e_i^2`` for ``e_i = exp(z_i)``); a sum or mean of exps over indices not in
    ``indices`` is the exp of their logsumexp, ``sum_k(exp(z_k)) = exp(logsumexp_k(z_k))``,
    ``mean_k(exp(z_k)) = exp(logsumexp_k(z_k) - log(K))`` (so that
    ``log(1 + sum_k(exp(z_k)))``, a softmax with a reference class, is ``softplus`` of a
    logsumexp: inf and a NaN gradient at z = 800 before 2026-12-05); else None."""
    if len(term.factors) == 1:
        (factor,) = term.factors
        if isinstance(factor, Apply) and factor.func == "pow" and factor.param is not None:
            base = single_atom(factor.arg, "exp")
            if base is not None and set(base.indices) <= set(indices):
                return Apply("exp", negated(base.arg, factor.param))
    exps = [f for f in term.factors if isinstance(f, Apply) and f.func == "exp"]
    means = [f for f in term.factors if is_reciprocal(f)]  # mean_k(exp(z_k)): 1/K beside the exp
    if len(exps) == 1 and len(exps) + len(means) == len(term.factors):
        (factor,) = exps
        summed = set(factor.indices) - set(indices)
        if summed and all(f.indices[0] in summed for f in means):
            kept = tuple(i for i in indices if i in factor.indices)
            log = make_apply("log", Poly((Term(ONE, term.factors),), kept))  # logsumexp (- log K)
            return Apply("exp", simplify(carrying(log, indices), tuple(indices)))
    atom = _elementwise_atom(Term(ONE, term.factors), indices, "exp")
    return atom if atom is not None or not weights else _exp_times_sigmoids(term, indices)


def _exp_times_sigmoids(term: Term, indices) -> Apply | None:
    """``exp(u) sigmoid(v)^k`` (one exp, any sigmoids, nonzero integer powers k, nothing summed)
    as ``exp(u - k softplus(-v))``, since ``sigmoid(v) = exp(-softplus(-v))``: a mixture's weights
    ``sigmoid(a) exp(l1) + sigmoid(-a) exp(l2)`` join the exponents, so its log is a logaddexp
    (it was inf, with a NaN gradient, where the data lay 60 from both means: exp(-1800) is 0)."""
    exps, exponent = 0, []
    for factor in term.factors:
        if not (isinstance(factor, Apply) and set(factor.indices) <= set(indices)):
            return None
        if factor.func == "exp":
            exps += 1
            exponent.extend(factor.arg.terms)
            continue
        sigmoid, k = (factor, ONE) if factor.func == "sigmoid" else (None, factor.param)
        if factor.func == "pow" and k != 0 and k.denominator == 1:
            sigmoid = single_atom(factor.arg, "sigmoid")
        if sigmoid is None:
            return None
        exponent.append(Term(-k, (Apply("softplus", negated(sigmoid.arg)),)))
    if exps != 1:
        return None
    return Apply("exp", simplify(carrying(exponent, indices), tuple(indices)))


def log_cosh(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(cosh(u)) = u + softplus(-2u) - log(2)``.

    Stable: cosh overflows from |u| = 711 on, and log of it is inf; ``softplus(-2u)`` is
    ``logaddexp(0, -2u)``, finite for every finite u, so the value is finite (|u| - log 2 for
    large |u|).  The form is smooth (no |u|), so its derivative ``1 - 2 sigmoid(-2u)`` (= tanh u,
    ±1 at large |u|) and every higher derivative are right at u = 0 too.  Near u = 0 the value
    and the derivative have an absolute rounding error of a few ulp of 1, as ``log(cosh(u))``
    itself has.
    Terminates: the result has no ``log`` of a call (``log(2)`` is a constant)."""
    if func != "log":
        return None
    cosh = single_atom(arg, "cosh")
    if cosh is None:
        return None
    u = cosh.arg
    return [
        *carrying(u.terms, arg.indices),
        Term(ONE, (Apply("softplus", negated(u, Fraction(-2))),)),
        *carrying([_log_of(Fraction(2)).scaled(-ONE)], arg.indices),
    ]


def log_sinh(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(sinh(u)) = u - log(2) + log(-expm1(-2u))`` (u > 0, where the log is defined).

    Stable: sinh overflows from u = 711 on, and log of it is inf (every derivative NaN); the
    value is u - log 2 to an ulp there, and ``expm1(-2u)`` only tends to -1.  Near u = 0,
    ``-expm1(-2u)`` is 2u to an ulp, so the value keeps log(sinh(u))'s digits.  The derivative
    is ``1 + 2 exp(-2u) / -expm1(-2u)`` (coth u), finite and without cancellation for u > 0.
    Terminates: the result's log is of ``-expm1`` (``log(2)`` is a constant), which no rule
    rewrites."""
    if func != "log":
        return None
    sinh = single_atom(arg, "sinh")
    if sinh is None:
        return None
    u = sinh.arg
    return [
        *carrying([*u.terms, _log_of(Fraction(2)).scaled(-ONE)], arg.indices),
        *_log_minus_expm1(list(negated(u, Fraction(-2)).terms), arg.indices),
    ]


def log_one_minus_tanh_squared(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 - tanh(u)^2) = 2 (log(2) - u - softplus(-2u))``, the log of tanh's derivative
    (the log-determinant of a tanh squashing, as in soft actor-critic), or ``log1p(-tanh(u)^2)``.

    Stable: ``1 - tanh(u)^2`` is 0 from |u| = 19 on (tanh rounds to ±1), so its log is -inf where
    the value is -2|u| + 2 log 2; the form is smooth (no |u|: ``-u - softplus(-2u)`` is
    ``-log(cosh(u)) - log(2)``), finite for every finite u, with derivative ``-2 tanh(u)`` (as
    ``-2 + 4 sigmoid(-2u)``).
    Terminates: the result has no ``log`` or ``log1p``."""
    rest = arg if func == "log1p" else _log_of_one_plus(func, arg)
    if rest is None or len(rest.terms) != 1 or rest.terms[0].coeff != -1:
        return None
    square = single_atom(Poly((Term(ONE, rest.terms[0].factors),), rest.indices), "pow")
    if square is None or square.param != 2:
        return None
    tanh = single_atom(square.arg, "tanh")
    if tanh is None:
        return None
    u = tanh.arg
    return [
        *carrying([_log_of(Fraction(2)).scaled(Fraction(2))], arg.indices),
        *carrying([t.scaled(Fraction(-2)) for t in u.terms], arg.indices),
        Term(Fraction(-2), (Apply("softplus", negated(u, Fraction(-2))),)),
    ]


def log_one_plus(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 + v) = log1p(v)`` (after the more specific ``1 + ...`` rules).

    Stable: ``1 + v`` rounds away every digit of v below 1e-16 (log(1 + 1e-17) is 0);
    ``log1p`` is accurate to an ulp for small v, and its derivative ``(1 + v)^-1`` is exact.
    Terminates: the result has no ``log``; ``log1p`` is not rewritten by any rule."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    return [Term(ONE, (Apply("log1p", rest),))]


#: Calls whose values are positive wherever they are defined: a log of a product of them splits.
POSITIVE = frozenset({"exp", "sigmoid", "softplus", "cosh"})


def _positive(atom) -> bool:
    """Whether ``atom`` is positive as written: a call of :data:`POSITIVE`, or a power of a sum of
    positive multiples of such products (``1 / sum_j(exp(z_j))``, ``(1 + exp(u))^2``)."""
    if isinstance(atom, Apply) and atom.func in POSITIVE:
        return True
    if isinstance(atom, Apply) and atom.func == "pow":
        found = _sigmoid_polynomial(atom.arg)  # (1 - sigmoid(u))^-1: sigmoid(-u)^-1
        if found is not None and _sigmoid_factors(found[1]) is not None:
            return True
        return bool(atom.arg.terms) and all(
            t.coeff > 0 and all(_positive(f) for f in t.factors) for t in atom.arg.terms
        )
    return False


def _is_sqrt(atom) -> bool:
    return isinstance(atom, Apply) and atom.func == "sqrt"


def log_of_product(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(c f1^p1 f2^p2 ...) = log(c) + p1 log(f1) + p2 log(f2) + ...`` for c > 0 and positive
    factors (exp, sigmoid, softplus, cosh, or a power of a sum of positive terms) or square roots
    (``log(sqrt(u)) = log(u) / 2``), each log then rewritten by the other rules:
    ``log(exp(z_k) / sum_j(exp(z_j)))`` written with the sum apart, ``log(2 exp(z))`` is
    ``log(2) + z``, ``log(sigmoid(z) exp(z))`` is ``z - softplus(-z)``, ``log(sqrt(sigmoid(z)))``
    is ``-softplus(-z) / 2`` (-inf at z = -800 before 2026-12-05).  Factors of unknown sign keep
    one log of their product beside the others' logs: ``log(y / exp(eta))`` is ``log(y) - eta``
    (NaN below 0 either way; ``log(x y)`` stays whole, as log(x) + log(y) is not its value there).

    Stable: the product of an exp with anything overflows or underflows long before its log
    does (log(2 exp(1000)) was inf, and a sum over it NaN); the logs of the factors are the
    stable forms the other rules give.  A product summed over an index inside the log
    (``log(x_j y_j)``) is a sum, not a product, and stays.
    Terminates: each log is of one factor of the product, strictly smaller than the call."""
    if func != "log" or len(arg.terms) != 1:
        return None
    term = arg.terms[0]
    factors = term.factors
    single = len(factors) == 1 and term.coeff == 1 and _as_power(factors[0]) is None
    # sqrt(u) is u^(1/2) here: log(sqrt(u)) = log(u) / 2 wherever sqrt(u) is defined (0 gives -inf
    # either way), and a sqrt is never negative, so it splits off a product like a positive call
    if term.coeff <= 0 or not factors or single:
        return None
    if any(set(f.indices) - set(arg.indices) for f in factors):
        return None  # log(sum_j(x_j y_j)): a sum inside
    positive = [f for f in factors if _positive(f) or _is_sqrt(f)]
    others = tuple(f for f in factors if not (_positive(f) or _is_sqrt(f)))
    if not positive:
        return None
    out = [_log_of(term.coeff)] if term.coeff != 1 else []
    if others:
        # log(y exp(-eta)) = log(y) - eta for y of any sign (NaN below 0 either way): the factors
        # of unknown sign keep one log of their product (log(x y) is not log(x) + log(y) below 0)
        rest = Poly((Term(ONE, others),), tuple(dict.fromkeys(i for f in others for i in f.indices)))
        out.extend(make_apply("log", rest))
        factors = tuple(positive)
    for factor in factors:
        base, power = _as_power(factor) or (Poly((Term(ONE, (factor,)),), factor.indices), ONE)
        out.extend(t.scaled(power) for t in make_apply("log", base))
    return carrying(_log_odds(out), arg.indices)


def log_of_exp_products(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(sum_k(exp(u_k) exp(v_k) c_k))`` = ``log(sum_k(exp(u_k + v_k) c_k))``: the exps of
    each term of a log's argument merged into one, so that the log-sum-exp and logaddexp rules
    see them (a mixture ``log(sum_k(softmax_k(a_nk) exp(b_nk)))`` or ``log(sum_k(exp(lw_k)
    exp(-0.5 (x_n - mu_k)^2 / s2)))``); a power of an exp is one exp, ``exp(u)^p`` = ``exp(p u)``
    (``log(sum_i(exp(x_i)^2))``, ``exp(x_i) / exp(y_i)``: inf and NaN at x = 800 before 2026-12-05).

    Stable: the product of two exps underflows to 0 (its log -inf, and every derivative NaN) at
    a log-likelihood of -800, where the exponent ``u + v`` is an ordinary number; merged, the
    log-sum-exp is evaluated max-shifted.
    Terminates: each term of the argument loses an exp or a power, and the rule applies only where
    a term holds two exps or a power of one."""
    if func != "log":
        return None
    terms, changed = [], False
    for term in arg.terms:
        read = [_exp_power(f) for f in term.factors]  # a factor twice is two exps
        exps = [r for r in read if r is not None]
        if len(exps) < 2 and not any(power != 1 for _, power in exps):
            terms.append(term)
            continue
        rest = tuple(f for f, r in zip(term.factors, read) if r is None)
        over = tuple(dict.fromkeys(i for e, _ in exps for i in e.indices))
        # each exponent's own summed letters kept apart from the others' free ones (exp(A_kj x_j)
        # exp(B_kj) sums j in the first alone)
        parts = [
            rename_term_apart(u.scaled(power), set(e.arg.indices), set(over)) for e, power in exps for u in e.arg.terms
        ]
        exponent = simplify(carrying(parts, over), over)
        terms.extend(multiply([Term(term.coeff, rest)], make_apply("exp", exponent), set(over), term.index_names()))
        changed = True
    return make_apply("log", simplify(terms, arg.indices)) if changed else None


def _exp_power(factor) -> tuple[Apply, Fraction] | None:
    """``(exp(u), p)`` for a factor ``exp(u)`` (p = 1), ``exp(u)^p`` or ``sqrt(exp(u))`` (p = 1/2)
    over the same indices."""
    if isinstance(factor, Apply) and factor.func == "exp":
        return factor, ONE
    read = _as_power(factor)
    base = single_atom(read[0], "exp") if read is not None else None
    if base is not None and set(base.indices) == set(factor.indices):
        return base, read[1]
    return None


def log_of_scaled_sum(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(c (u + v + ...)) = log(c) + log(u + v + ...)`` for a number c > 0 that every term
    of the argument carries, or that is its constant term with every other term's coefficient c
    or -c, where the log of the sum is then rewritten by another rule: the probit-like
    ``log(0.5 (1 + tanh(z)))`` is ``log(0.5) + log(1 + tanh(z))``, which ``log_one_plus_tanh``
    reads (it was -inf from z = -19 with the 0.5 in front), and its other half ``log(0.5 (1 -
    tanh(z)))`` = ``log(0.5 - 0.5 tanh(z))`` is ``log(0.5) + log(1 - tanh(z))`` (-inf from z =
    19 before 2026-12-06).  ``log(c + x)`` otherwise stays as written (scaled by 1/c it was inf
    at c = 1e-300, x = 1e10).

    Stable: as the rule that then applies.  Where none does, the log is left as written.
    Terminates: the inner log's terms carry coefficient 1 in common, or its constant term is 1,
    so this rule does not apply to it again."""
    if func != "log" or len(arg.terms) < 2:
        return None
    c = arg.terms[0].coeff
    mixed = False  # the constant term's c, the other terms -c or c (0.5 - 0.5 tanh(z))
    if c <= 0 or c == 1 or any(t.coeff != c for t in arg.terms):
        c, _ = _constant_and_rest(arg)
        if c is None or c <= 0 or c == 1 or any(abs(t.coeff) != c for t in arg.terms):
            return None
        mixed = True
    inner = Poly(tuple(t.scaled(1 / c) for t in arg.terms), arg.indices)
    rebuilt = make_apply("log", inner)
    if rebuilt == [Term(ONE, (Apply("log", inner),))]:
        return None
    if mixed and all(any(isinstance(f, Apply) and f.func == "log1p" for f in t.factors) for t in rebuilt):
        return None  # log(3 - 3 x) is not log(3) + log1p(-x): only where another rule reads the sum
    return [*carrying([_signed_log(c)], arg.indices), *rebuilt]


def expm1_of_softplus(func: str, arg: Poly, param) -> list[Term] | None:
    """``expm1(softplus(u)) = exp(u)`` and ``expm1(-softplus(u)) = -sigmoid(u)`` (since
    ``exp(softplus(u)) = 1 + exp(u)``): softplus's inverse ``log(expm1(p))`` of ``p =
    softplus(z)`` is ``log(exp(z))``, z, and ``log(exp(p) - 1)`` is ``p + log(sigmoid(z))``.

    Stable: softplus(z) underflows to 0 below z = -745 (expm1 of it 0, its log -inf and every
    derivative NaN at z = -1000, where the value is z); exp(z) and sigmoid(z) are exact there.
    Terminates: the result has no expm1."""
    if func != "expm1" or len(arg.terms) != 1 or abs(arg.terms[0].coeff) != 1:
        return None
    sign = arg.terms[0].coeff
    softplus = single_atom(negated(arg, sign), "softplus")
    if softplus is None:
        return None
    if sign > 0:
        return [Term(ONE, (Apply("exp", softplus.arg),))]
    return carrying([t.scaled(-ONE) for t in make_apply("sigmoid", softplus.arg)], arg.indices)


def log_of_common_factor(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(f u + f v + ...) = log(f) + log(u + v + ...)`` for a positive factor f (an exp,
    sigmoid, softplus, cosh, or a power of a sum of positive terms; see :func:`_positive`) that
    every term of the argument holds, over indices the argument keeps: the log-odds
    ``log(sigmoid(z) / sigmoid(-z))``, whose ``1 / sigmoid(-z)`` is ``1 + exp(z)``, is
    ``log(sigmoid(z)) + log(1 + exp(z))`` = ``softplus(z) - softplus(-z)`` (NaN at |z| = 1000
    before 2026-12-06, where it is z).

    Stable: the logs of f and of the sum are each the stable forms the other rules give, where
    the product of f with the sum under- or overflows long before its log does.
    Terminates: each term of the remaining log's argument holds one factor fewer."""
    if func != "log" or len(arg.terms) < 2:
        return None
    for f in dict.fromkeys(arg.terms[0].factors):
        if not _positive(f) or not set(f.indices) <= set(arg.indices):
            continue
        if all(f in t.factors for t in arg.terms[1:]):
            rest = []
            for t in arg.terms:
                at = t.factors.index(f)
                rest.append(Term(t.coeff, t.factors[:at] + t.factors[at + 1 :]))
            alone, others = Poly((Term(ONE, (f,)),), arg.indices), Poly(tuple(rest), arg.indices)
            return carrying(_log_odds([*make_apply("log", alone), *make_apply("log", others)]), arg.indices)
    return None


def log_of_scaled_exp_sum(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(sum_R(c exp(v)))`` = ``log(c) + log(sum_R(exp(v)))`` for a number c > 0:
    ``log(sum_k(0.25 exp(l_nk)))`` and ``log(sum_k(exp(l_nk)) / 4)`` are log-sum-exps; and a
    mean's 1/K is the log of a count, ``log(mean_k(exp(l_k))) = log(sum_k(exp(l_k))) - log(K)``.

    Stable: ``exp(l)`` overflows from l = 710 and underflows below -745 (the value inf or -inf,
    every derivative NaN), where the log-sum-exp is evaluated max-shifted.  A weight tensor
    (``pi_k exp(l_k)``) is not moved: its sign is unknown, and the log of a negative weight is
    NaN everywhere.  The count K of a mean is named as the length of the axis the exponent
    writes k at (``k#l.0``, the length of l), not by its letter, so that it keeps its size
    where k is renamed apart or means of other lengths nest (``log(mean_n(mean_k(exp(L_nk))))``
    is the log-sum-exp over n and k less log(N) and log(K)); a count no axis sizes is not moved.
    Terminates: the result's argument is one exp with coefficient 1, which no rule rewrites, and
    the log of a count is of a delta, not of a call."""
    if func != "log" or len(arg.terms) != 1:
        return None
    term = arg.terms[0]
    exps = [f for f in term.factors if isinstance(f, Apply) and f.func == "exp"]
    means = [f for f in term.factors if is_reciprocal(f)]
    if term.coeff <= 0 or len(exps) != 1 or len(exps) + len(means) != len(term.factors):
        return None
    if term.coeff == 1 and not means:
        return None
    (inner,) = exps
    summed = set(inner.indices) - set(arg.indices)
    if not summed or any(f.indices[0] not in summed for f in means):
        return None  # log(2 exp(z)), with nothing summed, is log_of_product's
    if len({f.indices[0] for f in means}) != len(means):
        return None
    counts = []
    for f in means:  # 1/K: -log(K), K counted as the length of an axis the exponent writes k at
        axes = sorted(letter_axes(inner.arg, f.indices[0]))
        if not axes:
            return None
        count = axis_count(f.indices[0], *axes[0])
        counts.append(Term(-ONE, (Apply("log", Poly((Term(ONE, (Delta(count, count),)),), ())),)))
    out = make_apply("log", Poly((Term(ONE, (inner,)),), arg.indices))
    scale = [_signed_log(term.coeff)] if term.coeff != 1 else []
    return carrying([*scale, *counts, *out], arg.indices)


def reciprocal_sigmoid(func: str, arg: Poly, param) -> list[Term] | None:
    """``sigmoid(u)^-k = (1 + exp(-u))^k`` for a whole k > 0: ``1 / sigmoid(z)`` is
    ``1 + exp(-z)``.

    Stable: the derivative of ``1 / sigmoid(z)`` was ``1 - 1 / sigmoid(z)``, which cancels:
    3 digits were left at z = 30 and none from z = 37 (0 for -e^-40); the derivative of
    ``1 + exp(-z)`` is ``-exp(-z)``, exact.  The value overflows only where 1 / sigmoid does
    (below z = -709).
    Terminates: the result has no sigmoid, and a positive power of ``1 + exp`` is not rewritten
    (``reciprocal_one_plus_exp`` takes negative powers only)."""
    if func != "pow" or param is None or param >= 0 or param.denominator != 1:
        return None
    sigmoid = single_atom(arg, "sigmoid")
    if sigmoid is None:
        return None
    one_plus = Poly((Term(ONE, ()), Term(ONE, (Apply("exp", negated(sigmoid.arg)),))), arg.indices)
    if param == -1:
        return list(carrying(list(one_plus.terms), arg.indices))
    return [Term(ONE, (Apply("pow", one_plus, -param),))]


#: Rules on one call, in the order make_apply tries them (first match wins).
CALL_RULES: tuple[Callable, ...] = (
    log_det,
    log_exp,
    log_sigmoid,
    log_one_minus_sigmoid,
    log_sigmoid_difference,
    log_of_sigmoid_polynomial,
    log_one_plus_tanh,
    log_one_plus_exp,
    log1p_exp,
    power_of_exp,
    reciprocal_one_plus_exp,
    reciprocal_sigmoid,
    log_exp_minus_one,
    log_one_minus_exp,
    expm1_of_softplus,
    log_of_sigmoid_weights,
    log_add_exp,
    log_cosh,
    log_sinh,
    log_one_minus_tanh_squared,
    log_one_plus,
    log_of_product,
    log_of_exp_products,
    log_of_scaled_exp_sum,
    log_of_scaled_sum,
    log_of_common_factor,
)


def rewrite_call(func: str, arg: Poly, param=None) -> list[Term] | None:
    """The first call rule's result for ``func(arg)``, or None when no rule applies."""
    for rule in CALL_RULES:
        out = rule(func, arg, param)
        if out is not None:
            return out
    return None
