"""The normal form: a sum of monomials, each an exact coefficient times a tuple of atoms.

A :class:`Poly` carries its free (output) indices; inside each :class:`Term` every other
index is summed (einsum semantics per term).  Differentiation, simplification and emission
all work on this form.  Atoms are ``ir.Tensor``, ``ir.Delta`` (stored with sorted indices)
and :class:`Apply`, an elementwise function of a nested :class:`Poly` whose own summed
indices are private to it (bound variables, renamed apart whenever they could be captured).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from . import limits
from .ir import Add, Call, Delta, Div, Expr, Indices, MatrixCall, Mul, Neg, Number, Pow, Tensor

_FRESH_POOL = "ijklmnopqrstuvwxyzabcdefghABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: The name of ``1/n_r``, the factor ``mean_r`` puts on a term: a vector whose every entry is one
#: over the size of its index (no user can write the name).  Evaluation folds it into the
#: coefficient; it prints as ``mean_r(...)`` around its term, or as ``mean_j(delta_jr)``.
RECIPROCAL = "1/n"


#: marks an index that counts (``delta_{i#2,i#2}``: the dimension of i, as statement 2 wrote it);
#: ``i#2#``: a letter lowering chose, not the user; ``i#2@1``: the same count renamed apart
COUNT_MARK = "#"


def is_count(index: str) -> bool:
    return COUNT_MARK in index


def count_stem(index: str) -> str:
    """The count an index renamed apart stands for (``i#2`` for ``i#2@1``): it has its size."""
    return index.split("@", 1)[0]


def count_letter(index: str) -> str:
    """The letter a count prints with (``i`` for ``i#2``)."""
    return index.split(COUNT_MARK, 1)[0]


def count_is_written(index: str) -> bool:
    """Whether the user wrote the count's letter (``i#2``), rather than lowering (``j#2#``)."""
    return not count_stem(index).endswith(COUNT_MARK)


def reciprocal(index: str) -> Tensor:
    """The factor 1/n of ``mean`` over ``index``."""
    return Tensor(RECIPROCAL, (index,))


def is_reciprocal(atom) -> bool:
    return isinstance(atom, Tensor) and atom.name == RECIPROCAL


def fresh_indices(count: int, avoid: set[str] | frozenset[str]) -> Indices:
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
        return str(to_expr(self))

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
    """A function of a named square matrix: ``inv(M)_ij``, ``det(M)``, ``logdet(M)``.
    It behaves like a tensor of its own indices."""

    func: str
    matrix: str
    indices: Indices = ()


Atom = Tensor | Delta | Apply | MatrixFn


def term_size(term: Term) -> int:
    return sum(1 + f.arg.size if isinstance(f, Apply) else 1 for f in term.factors) or 1


def rename_atom(atom, mapping: dict[str, str]):
    """Substitute free index names; names bound inside an :class:`Apply` are never captured."""
    if isinstance(atom, Delta):
        return make_delta(mapping.get(atom.first, atom.first), mapping.get(atom.second, atom.second))
    if isinstance(atom, Tensor):
        return Tensor(atom.name, tuple(mapping.get(i, i) for i in atom.indices))
    if isinstance(atom, MatrixFn):
        return MatrixFn(atom.func, atom.matrix, tuple(mapping.get(i, i) for i in atom.indices))
    own = {i: mapping[i] for i in atom.arg.indices if i in mapping}
    if not own:
        return atom
    arg = rename_apart(atom.arg, set(own.values()))
    renamed = tuple(t.rename(own) for t in arg.terms)
    indices = tuple(dict.fromkeys(own.get(i, i) for i in arg.indices))
    return Apply(atom.func, simplify(renamed, indices), atom.param)


def rename_apart(poly: Poly, avoid: set[str]) -> Poly:
    """Rename the summed (bound) indices of ``poly`` that collide with ``avoid``."""
    bound = poly.dummies()
    clashes = sorted(bound & avoid)
    if not clashes:
        return poly
    taken = poly.all_index_names() | avoid
    plain = [c for c in clashes if not is_count(c)]
    mapping = dict(zip(plain, fresh_indices(len(plain), taken)))
    for c in clashes:  # a counting index (i#2) stays one: i#2@1 is sized as i#2 is
        if is_count(c):
            stem, k = count_stem(c), 1
            while f"{stem}@{k}" in taken or f"{stem}@{k}" in mapping.values():
                k += 1
            mapping[c] = f"{stem}@{k}"
    return Poly(tuple(_rename_bound(t, mapping) for t in poly.terms), poly.indices)


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


def rename_term_apart(term: Term, free: frozenset[str] | set[str], avoid: set[str]) -> Term:
    """Rename the summed indices of ``term`` (not in ``free``) that collide with ``avoid``."""
    return rename_apart(Poly((term,), tuple(free)), set(avoid)).terms[0]


# -- simplification --------------------------------------------------------------------------


def contract_deltas(term: Term, free: frozenset[str]) -> Term:
    """Remove every delta with a summed index by renaming: ``delta_jk A_ij x_j -> A_ik x_k``.

    Each step removes one delta (or one ``1/n_r`` of a mean, whose sum over an r nothing else
    carries is 1), so the loop ends.  ``delta_ii`` is 1 where i is free or used elsewhere and
    stays (it is the dimension) when i is summed and appears nowhere else.
    Deltas between two free indices stay: they are real structure.
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
                continue
            del factors[pos]
            mapping = {old: new}
            factors = [rename_atom(f, mapping) for f in factors]
            if new not in free and not any(new in f.indices for f in factors):
                factors.insert(pos, Delta(new, new))  # sum_ab delta_ab = dimension
            progress = True
            break
    return Term(term.coeff, tuple(factors))


def _shape_key(atom, free: frozenset[str]) -> tuple:
    """What an atom looks like with dummy names erased: invariant under renaming dummies."""
    pattern = tuple(i if i in free else "" for i in atom.indices)
    if isinstance(atom, Delta):
        return ("1delta", *sorted(pattern))
    if isinstance(atom, Apply):  # elementwise: the order of its indices is immaterial
        return ("2" + atom.func, str(atom.param), *sorted(pattern))
    if isinstance(atom, MatrixFn):
        return ("3" + atom.func + ":" + atom.matrix, *pattern)
    return ("0" + atom.name, *pattern)


_MAX_ORDERINGS = 720


def _atom_key(atom, depth: int) -> tuple:
    if isinstance(atom, Apply):
        return _apply_key(atom, depth)
    if isinstance(atom, MatrixFn):
        return ("MatrixFn", atom.func + ":" + atom.matrix, *atom.indices)
    return (type(atom).__name__, getattr(atom, "name", ""), *atom.indices)


@lru_cache(maxsize=65536)
def _apply_key(atom: Apply, depth: int) -> tuple:
    """The canonical key of a call: its function and its argument's terms' keys (cached, since
    nested calls are keyed again each time an enclosing term is)."""
    free = frozenset(atom.arg.indices)
    inner = tuple(sorted((str(t.coeff), canonical_key(t, free, depth + 1)) for t in atom.arg.terms))
    # elementwise: the order of its indices is immaterial; they are one tuple, so that keys of
    # calls with different numbers of indices still compare (a str is never set against a tuple)
    return ("Apply", atom.func, str(atom.param), tuple(sorted(atom.indices)), inner)


def canonical_key(term: Term, free: frozenset[str], depth: int = 0) -> tuple:
    """A key equal for two terms exactly when they differ only by names of summed indices
    and the order of factors (within a bounded search over orderings of look-alike factors).
    """
    ordered = sorted(term.factors, key=lambda f: _shape_key(f, free))
    groups = [list(g) for _, g in itertools.groupby(ordered, key=lambda f: _shape_key(f, free))]
    count = math.prod(math.factorial(len(g)) for g in groups)
    choices = (
        list(itertools.product(*(itertools.permutations(g) for g in groups))) if count <= _MAX_ORDERINGS else [groups]
    )
    # an elementwise call's indices have no order: try each order for naming its summed ones
    calls = [f for f in dict.fromkeys(term.factors) if isinstance(f, Apply) and len(set(f.indices)) > 1]
    orders = [list(itertools.permutations(dict.fromkeys(f.indices))) for f in calls]
    if len(choices) * math.prod(len(o) for o in orders) > _MAX_ORDERINGS:
        orders = [[tuple(dict.fromkeys(f.indices))] for f in calls]
    best = None
    for choice in choices:
        for picked in itertools.product(*orders):
            order_of = dict(zip(calls, picked))
            mapping: dict[str, str] = {}
            key = []
            for atom in itertools.chain.from_iterable(choice):
                for i in order_of.get(atom, atom.indices):
                    if i not in free and i not in mapping:
                        mapping[i] = f"~{depth}.{len(mapping)}"
                key.append(_atom_key(rename_atom(atom, mapping), depth))
            candidate = tuple(key)
            if best is None or candidate < best:
                best = candidate
    return best or ()


def _power_base(atom) -> tuple[Poly, Fraction]:
    """``atom`` as ``base ^ exponent`` (a call is its own base with exponent 1)."""
    if isinstance(atom, Apply) and atom.func == "pow":
        return atom.arg, atom.param
    return Poly((Term(Fraction(1), (atom,)),), atom.indices), Fraction(1)


def merge_powers(term: Term) -> list[Term]:
    """``u^a u^b = u^(a+b)`` for equal elementwise bases, where a call or power is involved
    (plain tensors stay as written: ``x_i x_i``).  Returns the term's expansion (a list)."""
    applies = [f for f in term.factors if isinstance(f, Apply)]
    if not applies:
        return [term]
    groups: dict[Poly, Fraction] = {}
    order: list[Poly] = []
    rest = []
    for f in term.factors:
        if isinstance(f, Apply) or any(
            isinstance(g, Apply) and _power_base(g)[0] == _power_base(f)[0] for g in applies
        ):
            base, exponent = _power_base(f)
            if base not in groups:
                groups[base] = Fraction(0)
                order.append(base)
            groups[base] += exponent
        else:
            rest.append(f)
    if len(order) == len([f for f in term.factors if f not in rest]):
        return [term]  # nothing to merge
    from .lower import make_apply

    out = [Term(term.coeff, tuple(rest))]
    for base in order:
        out = multiply(out, make_apply("pow", base, groups[base]), set(base.indices), avoid=term.index_names())
    return out


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
            from .lower import make_apply

            rest = term.factors[:pos] + term.factors[pos + 1 :]
            out = []
            for part in make_apply(factor.func, factor.arg, factor.param):
                out.extend(rebuild_constant_calls(Term(term.coeff * part.coeff, rest + part.factors)))
            return out
    return [term]


def simplify(terms, indices: Indices) -> Poly:
    """Contract deltas, collect like terms (up to renaming summed indices) and drop zeros.

    The first-seen spelling of each collected term is kept, so results read like the input.
    """
    free = frozenset(indices)
    collected: dict[tuple, list] = {}
    for original in terms:
        if original.coeff == 0:
            continue
        merged = merge_powers(contract_deltas(original, free))
        for term in (part for t in merged for part in rebuild_constant_calls(t)):
            term = contract_deltas(term, free)  # u^a u^-a = 1 leaves delta_ii: 1 where i is used
            key = canonical_key(term, free)
            if key in collected:
                collected[key][0] += term.coeff
            else:
                collected[key] = [term.coeff, term]
    out = tuple(Term(coeff, rep.factors) for coeff, rep in collected.values() if coeff != 0)
    return Poly(out, tuple(indices))


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
    return not simplify(terms, a.indices).terms


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
    from .errors import DifferentiationError

    return DifferentiationError(
        f"the expression grows to {count} terms, over {limits.over('max_terms')}: split it into statements, "
        f"or {limits.raise_hint('max_terms')}"
    )


# -- back to IR (for printing) ---------------------------------------------------------------


def _written_names(expr: Expr) -> set[str]:
    from .ir import walk

    return {i for node in walk(expr) if isinstance(node, (Tensor, Delta, MatrixCall)) for i in node.indices}


def _arg_expr(arg: Poly, visible: set[str], explicit: bool = False) -> Expr:
    """An argument as IR, its bound names renamed apart from ``visible``; the names it writes
    are added to ``visible`` so that later factors keep theirs apart too.  ``explicit`` writes
    the sums inside it as ``sum_k(...)`` (used for divisors, where ``/ e_k`` would be cryptic)."""
    arg = rename_apart(arg, visible)
    expr = to_expr(arg, visible | set(arg.indices), explicit, nested=True)
    visible |= _written_names(expr)
    return expr


def atom_to_expr(atom, visible: set[str]) -> Expr:
    """One atom as IR.  Names bound inside an Apply are renamed apart from ``visible`` (every
    name already written around it) so the printed text scopes the same way when parsed back."""
    if isinstance(atom, MatrixFn):
        return MatrixCall(atom.func, atom.matrix, atom.indices)
    if is_reciprocal(atom):  # 1/n along a free index: sum_j delta_jr / n
        (index,) = atom.indices
        (j,) = fresh_indices(1, visible)
        visible.add(j)
        return Call("mean", Delta(j, index), (j,))
    if not isinstance(atom, Apply):
        return atom
    from .rewrites import logsumexp_parts

    if logsumexp_parts(atom) is not None:  # log(sum_R(exp(v))) reads as logsumexp_R(v)
        arg = rename_apart(atom.arg, visible)
        v, summed = logsumexp_parts(Apply(atom.func, arg, atom.param))
        inner = to_expr(v, visible | set(v.indices), nested=True)
        visible |= _written_names(inner) | set(summed)
        return Call("logsumexp", inner, summed)
    inner = _arg_expr(atom.arg, visible)
    return Pow(inner, atom.param) if atom.func == "pow" else Call(atom.func, inner)


def _occurrences(term: Term, index: str) -> int:
    """How often ``index`` occurs in the printed product: with multiplicity in tensors and
    deltas, once in each call or power that has it free (a group's free index counts once)."""
    return sum(
        (1 if index in f.indices else 0) if isinstance(f, Apply) else f.indices.count(index) for f in term.factors
    )


def _captured(term: Term, index: str) -> bool:
    """Whether printing would let a group inside ``term`` contract ``index``: some call that has
    it free holds a term in which it occurs twice (``exp(x_i x_i)`` elementwise over i)."""
    for f in term.factors:
        if isinstance(f, Apply) and index in f.arg.indices:
            for inner in f.arg.terms:
                if _occurrences(inner, index) > 1 or _captured(inner, index):
                    return True
    return False


def _product(factors: list[Expr]) -> Expr:
    return factors[0] if len(factors) == 1 else Mul(tuple(factors))


def counts_printed(term: Term, counts: list[str], context: set[str]) -> Term:
    """``term`` with each counting index (``i#2``: the dimension of i, written i in statement 2)
    printed as its letter, so that the statement it came from sizes it when the text is read
    back; the term's own summed indices move out of its way.  Where the letter is bound outside
    the term, it prints as ``i9``-style, which nothing sizes: reading back then says so rather
    than counting another dimension."""
    bases = {i: count_letter(i) for i in counts}
    dummies = term.index_names() - set(counts) - context
    wanted = {b for i, b in bases.items() if b not in context and count_is_written(i)}
    taken = term.index_names() | context | set(bases.values())
    mapping: dict[str, str] = {}
    for d in sorted(dummies & wanted):
        mapping[d] = fresh_indices(1, taken)[0]
        taken.add(mapping[d])
    for i, b in bases.items():
        if b in context or b in mapping.values() or not count_is_written(i):  # j#2#: a letter the user did not write
            k = 9
            while f"{b}{k}" in taken:
                k += 1
            mapping[i] = f"{b}{k}"
        else:
            mapping[i] = b
        taken.add(mapping[i])
    return Term(term.coeff, tuple(rename_atom(f, mapping) for f in term.factors))


def _letter_axes(term: Term, letter: str) -> set[tuple[str, int]]:
    """The tensor axes ``(tensor, axis)`` at which ``term`` writes ``letter`` (call arguments
    included where the letter is free in them)."""
    out = set()
    for f in term.factors:
        if isinstance(f, Tensor) and not is_reciprocal(f):
            out.update((f.name, k) for k, i in enumerate(f.indices) if i == letter)
        elif isinstance(f, MatrixFn):
            out.update((f.matrix, k) for k, i in enumerate(f.indices) if i == letter)
        elif isinstance(f, Apply) and letter in f.arg.indices:
            for inner in f.arg.terms:
                out |= _letter_axes(inner, letter)
    return out


def count_letters_apart(poly: Poly, count_axes: Mapping[str, set] | None = None) -> Poly:
    """``poly`` with the summed indices of every term renamed away from the letters its counts
    print with, where they may be another dimension: a count is sized by its letter when the
    text is read back, so no term of the statement may sum that letter over another dimension
    (``delta_ii / c + v_i w_i`` would read the count as v's length).  ``count_axes`` (a count
    -> the input axes it counts) keeps a letter written at those same axes (``X_nf X_nf`` beside
    ``delta_ff``, both X's columns)."""
    outer = set(poly.indices)
    counts = [i for i in poly.all_index_names() if is_count(i) and count_is_written(i)]
    by_letter: dict[str, list[str]] = {}
    for c in counts:
        by_letter.setdefault(count_letter(c), []).append(count_stem(c))
    if not set(by_letter) - outer:
        return poly
    terms = []
    for term in poly.terms:
        clashes = set()
        for letter, stems in by_letter.items():
            if letter in outer or letter not in term.index_names():
                continue
            axes = _letter_axes(term, letter)
            known = [set((count_axes or {}).get(stem, ())) for stem in stems]
            if not axes or not all(axes <= k for k in known):
                clashes.add(letter)
        terms.append(rename_term_apart(term, outer, clashes) if clashes else term)
    return Poly(tuple(terms), poly.indices)


def count_axes_of(hints: tuple) -> dict[str, set]:
    """Count -> the tensor axes its size hints name (``("names", ((i#2, x, 0), ...))``)."""
    out: dict[str, set] = {}
    for hint in hints:
        if hint[0] == "names":
            for index, tensor, axis in hint[1]:
                if is_count(index):
                    out.setdefault(index, set()).add((tensor, axis))
    return out


def term_to_expr(
    term: Term, context: set[str], leading: bool = True, explicit: bool = False, nested: bool = False
) -> Expr:
    """One monomial as IR.  A negative leading term reads ``-2 A_kj x_j``; later ones are
    ``Neg`` so that the sum prints ``a - 2 b``.  Negative powers print as division.  A summed
    index is written with an explicit ``sum_i(...)`` where the plain text would scope it
    differently: inside a group (``nested``) when it occurs once (it would be free there and go
    outward), and anywhere a group inside would contract it (``exp(x_i x_i) y_i`` elementwise)."""
    counts = sorted(i for i in term.index_names() if is_count(i))
    if counts:  # a counting index (delta_{i#2,i#2}, the dimension of i) prints with its letter
        term = counts_printed(term, counts, set(context))
    names = term.index_names()
    visible = set(context) | names
    # 1/n_r with r summed is mean_r around the term (r bound there); with r free, mean_j(delta_jr)
    means = tuple(dict.fromkeys(f.indices[0] for f in term.factors if is_reciprocal(f) and f.indices[0] not in context))
    if means:
        term = Term(term.coeff, tuple(f for f in term.factors if not (is_reciprocal(f) and f.indices[0] in means)))
        term = keep_sums(term, means)
    hidden = tuple(
        sorted(
            i
            for i in names - context - set(means)
            if explicit or (nested and _occurrences(term, i) == 1) or _captured(term, i)
        )
    )
    factors: list[Expr] = []
    denominators: list[Expr] = []
    for f in term.factors:
        if isinstance(f, Apply) and f.func == "pow" and f.param < 0:
            flipped = Apply("pow", f.arg, -f.param)
            denominators.append(_arg_expr(f.arg, visible, True) if f.param == -1 else atom_to_expr(flipped, visible))
        else:
            factors.append(atom_to_expr(f, visible))
    for func, over in (("mean", means), ("sum", hidden)):  # sum_j(mean_i(...)): each binds its indices
        if over:
            inner = _product(factors) if factors else Number(Fraction(1))
            for base in denominators:
                inner = Div(inner, base)
            factors, denominators = [Call(func, inner, over)], []
    magnitude = abs(term.coeff)
    if magnitude != 1 or not factors:
        factors.insert(0, Number(magnitude))
    if term.coeff < 0 and leading:
        factors[0] = Neg(factors[0])
    body = _product(factors)
    for base in denominators:
        body = Div(body, base)
    return Neg(body) if term.coeff < 0 and not leading else body


def to_expr(poly: Poly, context: set[str] | None = None, explicit: bool = False, nested: bool = False) -> Expr:
    """The IR of a normal form; ``0`` for the empty sum.  ``explicit`` writes every summed
    index of a term as ``sum_i(...)``; ``nested`` says the sum is a group's (a call's argument,
    a power's base, a divisor), whose terms' once-occurring indices would go outward."""
    if not poly.terms:
        return Number(Fraction(0))
    ctx = set(poly.indices) | (context or set())
    parts = [term_to_expr(t, ctx, leading=(k == 0), explicit=explicit, nested=nested) for k, t in enumerate(poly.terms)]
    return parts[0] if len(parts) == 1 else Add(tuple(parts))
