"""Printing the normal form: a :class:`~einderiv.normal.Poly` written back as IR, which prints as
text that reads back as the same normal form.

Bound indices are renamed apart from every name written around them, a summed index is written
``sum_i(...)`` where plain text would scope it otherwise, ``1/n_r`` prints as ``mean_r(...)``,
a negative power as a division, ``log(sum_R(exp(v)))`` as ``logsumexp_R(v)``, and a counting
index (``i#2``) as its letter, where the statement it came from sizes it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from fractions import Fraction

from .index_names import COUNT_MARK, count_is_written, count_letter, count_stem, fresh_indices, is_count
from .ir import (
    Add,
    Call,
    Delta,
    Div,
    Expr,
    MatrixCall,
    Mul,
    Neg,
    Number,
    Pow,
    Statement,
    Tensor,
    children,
    renamed,
    walk,
    with_children,
)
from .normal import (
    POLY_TEXT,
    Apply,
    MatrixFn,
    Poly,
    Term,
    is_reciprocal,
    keep_sums,
    power_of,
    rename_apart,
    rename_atom,
    renamed_apart,
    uncarried_letters,
)
from .rewrites import logsumexp_parts, softmax_parts


def _written_names(expr: Expr) -> set[str]:
    return {i for node in walk(expr) if isinstance(node, (Tensor, Delta, MatrixCall)) for i in node.indices}


#: letter -> the input axes each count printed with it counts (empty: not known), while a
#: statement is printed (set by :func:`avoiding`)
_AVOIDED: ContextVar[Mapping[str, list[frozenset]] | None] = ContextVar("count_letters_avoided", default=None)

#: every letter the statement being printed writes: its own, and those printing has chosen so far
#: (a ``mean_j(delta_jr)`` takes a letter none of them is, see :func:`atom_to_expr`)
_WRITTEN: ContextVar[set[str] | None] = ContextVar("letters_written", default=None)
#: the letters some term of the statement being printed writes where no tensor of it carries them
_DELTAS_ONLY: ContextVar[set[str] | None] = ContextVar("letters_in_deltas_only", default=None)
#: the letters chosen for ``mean_j(delta_jr)`` in the statement being printed: no group binds them
_MEAN_LETTERS: ContextVar[set[str] | None] = ContextVar("mean_letters", default=None)


#: summed letter -> the letters :func:`count_letters_apart` moved it to, while recorded (set by
#: :func:`moved_letters`)
_MOVED: ContextVar[dict[str, set[str]] | None] = ContextVar("letters_moved", default=None)


@contextmanager
def moved_letters() -> Iterator[dict[str, set[str]]]:
    """Record, in the dict yielded, the summed letters that printing moves out of the way of a
    count's letter (old -> new letters): the size hints that named the old letter size the new."""
    moved: dict[str, set[str]] = {}
    token = _MOVED.set(moved)
    try:
        yield moved
    finally:
        _MOVED.reset(token)


def _at_other_axes(axes: set, counted: list) -> bool:
    """Whether a letter written at ``axes`` may be another dimension than the counts printed with
    it, which count ``counted`` (one set of axes each; empty: not known): read back, those counts
    would take its size."""
    return not axes or not all(axes <= known for known in counted)


@contextmanager
def avoiding(poly: Poly, count_axes: Mapping[str, set] | None = None) -> Iterator[None]:
    """While ``poly`` is printed, no group binds a letter its counts print with at another
    dimension: a count is sized by its letter when the text is read back, so ``1 / (w_i w_i)^2``
    beside ``delta_ii`` (x's length) would count w.  ``count_axes``: what each count counts (a
    group's dummy written at those axes keeps its letter, and sizes the count)."""
    letters: dict[str, list[frozenset]] = {}
    for index in sorted(i for i in poly.all_index_names() if is_count(i)):
        axes = (count_axes or {}).get(index) or (count_axes or {}).get(count_stem(index)) or ()
        letters.setdefault(count_letter(index), []).append(frozenset(axes))
    token = _AVOIDED.set(letters)
    written = _WRITTEN.set(set(poly.all_index_names()))
    deltas_only = _DELTAS_ONLY.set({i for term in poly.terms for i in uncarried_letters(term)})
    means = _MEAN_LETTERS.set(set())
    try:
        yield
    finally:
        _MEAN_LETTERS.reset(means)
        _DELTAS_ONLY.reset(deltas_only)
        _WRITTEN.reset(written)
        _AVOIDED.reset(token)


def _apart(arg: Poly, visible: set[str]) -> Poly:
    """``arg`` with its bound names renamed apart from ``visible`` and from the letters of the
    statement's counts where it writes them at other axes (see :func:`avoiding`)."""
    avoided = _AVOIDED.get() or {}
    clashing = {
        letter
        for letter in arg.dummies() & set(avoided)
        if _at_other_axes(set().union(*(letter_axes(t, letter) for t in arg.terms)), avoided[letter])
    }
    return rename_apart(arg, visible | clashing | (_MEAN_LETTERS.get() or set()), frozenset(avoided))


def _arg_expr(arg: Poly, visible: set[str], explicit: bool = False) -> Expr:
    """An argument as IR, its bound names renamed apart from ``visible``; the names it writes
    are added to ``visible`` so that later factors keep theirs apart too.  ``explicit`` writes
    the sums inside it as ``sum_k(...)`` (used for divisors, where ``/ e_k`` would be cryptic)."""
    arg = _apart(arg, visible)
    expr = to_expr(arg, visible | set(arg.indices), explicit, nested=True)
    visible |= _written_names(expr) - _counted_only(expr)
    return expr


def _counted_only(expr: Expr) -> set[str]:
    """Letters ``expr`` writes only as counts (``delta_oo``) or inside a ``sum_o(...)`` that binds
    them: they bind nothing around it, and a count of that dimension in a later group prints with
    the same letter (another, ``o9``, would be sized by nothing when read back)."""
    counted, other = set(), set()
    stack: list[tuple[Expr, frozenset]] = [(expr, frozenset())]
    while stack:
        node, bound = stack.pop()
        if isinstance(node, Delta) and node.first == node.second:
            counted.add(node.first)
        elif isinstance(node, (Tensor, Delta, MatrixCall)):
            other.update(set(node.indices) - bound)
        inner = bound | set(node.over) if isinstance(node, Call) else bound
        stack.extend((child, inner) for child in children(node))
    return counted - other


def atom_to_expr(atom, visible: set[str]) -> Expr:
    """One atom as IR.  Names bound inside an Apply are renamed apart from ``visible`` (every
    name already written around it) so the printed text scopes the same way when parsed back."""
    if isinstance(atom, MatrixFn):
        return MatrixCall(atom.func, atom.matrix, atom.indices)
    if is_reciprocal(atom):  # 1/n along a free index: sum_j delta_jr / n
        # j is a letter the statement writes nowhere else: read back, the delta sizes j as r
        # throughout the text (beside mean_i(A_il), mean_i(delta_il) gave i two sizes)
        (index,) = atom.indices
        written, means = _WRITTEN.get(), _MEAN_LETTERS.get()
        (j,) = fresh_indices(1, visible | set(_AVOIDED.get() or ()) | (written or set()))
        visible.add(j)
        for letters in (written, means):
            if letters is not None:
                letters.add(j)
        return Call("mean", Delta(j, index), (j,))
    if not isinstance(atom, Apply):
        return atom
    if softmax_parts(atom) is not None:  # exp(v - logsumexp_R(v)) reads as softmax_R(v), as it is written
        rest, axes = softmax_parts(Apply(atom.func, _apart(atom.arg, visible), atom.param))
        inner = to_expr(rest, visible | set(rest.indices), nested=True)
        visible |= _written_names(inner)
        return Call("softmax", inner, tuple(rest.indices[k] for k in axes))
    if logsumexp_parts(atom) is not None:  # log(sum_R(exp(v))) reads as logsumexp_R(v)
        arg = _apart(atom.arg, visible)
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
    # a count inside a group prints with its letter too: a dummy moved out of the way takes another
    nested = {
        count_letter(i) for f in term.factors if isinstance(f, Apply) for i in f.arg.all_index_names() if is_count(i)
    }
    # nor a letter that a count of another term prints with (delta_jj there counts z's length:
    # T1_jn here would size it as T1's rows too)
    taken = term.index_names() | context | set(bases.values()) | nested | set(_AVOIDED.get() or ())
    # nor a letter a term of the statement writes in deltas alone: read back, a letter is one size
    # in a statement, so such a letter takes the size a tensor gives it elsewhere (b_l beside
    # delta_ll moved to b_i, where another term sums delta_ij at A's length: the text read back
    # 22 off, a hunt's find)
    taken |= _DELTAS_ONLY.get() or set()
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


def letter_axes(term: Term, letter: str) -> set[tuple[str, int]]:
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
                out |= letter_axes(inner, letter)
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
        # a count inside a group of the term (delta_ll^2) binds its letter there: a dummy of the
        # product with that letter would be contracted with it
        grouped = {
            count_letter(i)
            for f in term.factors
            if isinstance(f, Apply)
            for i in f.arg.all_index_names()
            if is_count(i) and count_is_written(i)
        }
        for letter, stems in by_letter.items():
            if letter in outer or letter not in term.index_names():
                continue
            known = [set((count_axes or {}).get(stem, ())) for stem in stems]
            if letter in grouped or _at_other_axes(letter_axes(term, letter), known):
                clashes.add(letter)
        # to a letter no count prints with (x_i beside delta_ii delta_jj moves to x_k, not x_j)
        if clashes:
            moved, mapping = renamed_apart(Poly((term,), tuple(outer)), clashes, frozenset(by_letter))
            term = moved.terms[0]
            record = _MOVED.get()
            for old, new in mapping.items() if record is not None else ():
                record.setdefault(old, set()).add(new)
        terms.append(term)
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


def count_powers(poly: Poly, count_axes: Mapping[str, set] | None) -> Poly:
    """``poly`` with the counts of one dimension in one product written as a power of one count:
    ``delta_{l#2,l#2} delta_{l#3,l#3}`` (L^2) becomes ``delta_ll^2``.  Two counts in a product
    need two letters (``delta_ll delta_ll`` is L, not L^2), and only a letter the statements
    before write at that dimension sizes a count when the text is read back; a power needs one.
    Counts are of one dimension where ``count_axes`` says they count the same input axes."""
    if not count_axes:
        return poly

    def axes(index: str) -> frozenset:
        return frozenset(count_axes.get(index) or count_axes.get(count_stem(index)) or ())

    terms = []
    for term in poly.terms:
        by_axes: dict[frozenset, list[int]] = {}
        factors = []
        for f in term.factors:
            if isinstance(f, Apply):
                f = Apply(f.func, count_powers(f.arg, count_axes), f.param)
            factors.append(f)
        for k, f in enumerate(factors):
            if isinstance(f, Delta) and f.indices[0] == f.indices[1] and is_count(f.indices[0]) and axes(f.indices[0]):
                by_axes.setdefault(axes(f.indices[0]), []).append(k)
        merged = {ks[0]: len(ks) for ks in by_axes.values() if len(ks) > 1}
        if merged:
            dropped = {k for ks in by_axes.values() if len(ks) > 1 for k in ks[1:]}
            factors = [
                power_of(f, Fraction(merged[k]), ()) if k in merged else f
                for k, f in enumerate(factors)
                if k not in dropped
            ]
        terms.append(Term(term.coeff, tuple(factors)))
    return Poly(tuple(terms), poly.indices)


def _count_groups(poly: Poly):
    """The counts each product of ``poly`` holds.  A group's counts are apart from those of the
    products around it: each ``delta_ll`` sums its own l where it stands, so ``(z_k delta_ll +
    a_i)^2 delta_ll`` counts l twice, and one letter, which the statements before size, serves both."""
    for term in poly.terms:
        yield {i for i in term.index_names() if is_count(i)}
        for f in term.factors:
            if isinstance(f, Apply):
                yield from _count_groups(f.arg)


def _counts_renamed(poly: Poly, names: Mapping[str, str]) -> Poly:
    """``poly`` with its counts (``delta_{i#2,i#2}``, wherever they are) renamed by ``names``."""
    terms = []
    for term in poly.terms:
        factors = []
        for f in term.factors:
            if isinstance(f, Apply):
                f = Apply(f.func, _counts_renamed(f.arg, names), f.param)
            elif isinstance(f, Delta) and f.first in names:
                f = Delta(names[f.first], names[f.first])
            factors.append(f)
        terms.append(Term(term.coeff, tuple(factors)))
    return Poly(tuple(terms), poly.indices)


def count_letters(
    earlier: list[tuple[Statement, bool]], poly: Poly, count_axes: Mapping[str, set], dimension
) -> tuple[dict[int, Statement], tuple[Poly, dict] | None]:
    """Letters for the counts of a derivative ``poly`` that read back as the dimensions they count.

    Read back, a letter that the derivative writes only in deltas is sized by every earlier
    statement that writes it, so a count's letter must be written earlier at the count's
    dimension and at no other; and two counts in one product need two letters (``delta_ii
    delta_ii`` is I, not I^2).  Where the user's letters do not allow that, a letter is renamed
    throughout an earlier statement, which means the same (its uses write their own letters):
    one written at another dimension too (``t1 = u_i M_ik u_k`` beside a count of A's rows), or,
    for a count of a letter of its own, one that no count prints with or that another statement
    also writes at that dimension.  Where some count has no such letter, nothing is renamed, and
    a count whose letter only other dimensions size prints as ``i9``: reading back says so
    rather than count another dimension.

    ``earlier``: the statements printed before, each with whether its letters may be renamed;
    ``count_axes``: count -> the axes it counts; ``dimension(tensor, axis)``: the dimension of
    an axis.  Returns the earlier statements renamed (by position) and, where a count prints
    otherwise than by its own letter, ``poly`` with its counts renamed to print so, and their axes."""
    groups = [g for g in _count_groups(poly) if g]
    counts = sorted(set().union(*groups)) if groups else []
    axes = {c: sorted(count_axes.get(count_stem(c), ())) for c in counts}
    if not counts or not all(axes.values()):
        return {}, None
    dims = {c: dimension(*axes[c][0]) for c in counts}
    statements = [s for s, _ in earlier]

    def writes_of(expr) -> dict[str, set]:  # letter -> the dimensions expr writes it at
        written: dict[str, set] = {}
        for node in walk(expr):
            if isinstance(node, (Tensor, MatrixCall)):
                name = node.matrix if isinstance(node, MatrixCall) else node.name
                for axis, i in enumerate(node.indices):
                    written.setdefault(i, set()).add(dimension(name, axis))
        return written

    writes = [writes_of(s.rhs) for s in statements]  # per statement
    context = set(poly.indices)
    plain = {c: count_letter(c) if count_is_written(c) and count_letter(c) not in context else None for c in counts}
    wrong = {  # its own letter, written earlier only at other dimensions
        c: any(b in w for w in writes) and not any(dims[c] in w.get(b, ()) for w in writes) for c, b in plain.items()
    }
    taken = {i for s in statements for i in _written_names(s.rhs) | set(s.target.indices if s.target else ())}
    taken |= {i for i in poly.all_index_names() if not is_count(i)} | {count_letter(c) for c in counts}
    letters: dict[str, str] = {}
    changed: dict[int, Statement] = {}

    def good(letter: str, dim) -> list[int]:
        return [k for k, w in enumerate(writes) if w.get(letter) == {dim}]

    def rename(k: int, old: str) -> str:
        (new,) = fresh_indices(1, taken)
        taken.add(new)
        s = statements[k]
        target = Tensor(s.target.name, tuple(new if i == old else i for i in s.target.indices))
        statements[k] = changed[k] = Statement(target, renamed(s.rhs, old, new))
        writes[k][new] = writes[k].pop(old)
        return new

    def rename_bound(dim) -> str | None:
        """A fresh letter for the letter of a reduction that sums only this dimension, renamed in
        that reduction alone (``sum_i(x_i + a) u_i`` prints as ``sum_k(x_k + a) u_i``, which
        means the same: the reduction binds its letter), where a statement may be renamed."""
        for k, s in enumerate(statements):
            if not earlier[k][1]:
                continue
            for node in walk(s.rhs):
                if isinstance(node, Call) and node.over:
                    for old in node.over:
                        if writes_of(node.arg).get(old) == {dim}:
                            (new,) = fresh_indices(1, taken)
                            taken.add(new)
                            rhs = _renamed_in(s.rhs, node, old, new)
                            statements[k] = changed[k] = Statement(s.target, rhs)
                            writes[k] = writes_of(rhs)
                            return new
        return None

    for c in counts:
        dim = dims[c]
        partners = {letters.get(p) for g in groups if c in g for p in g if p != c}
        banned = context | partners | {b for p, b in letters.items() if dims[p] != dim}
        candidates = [count_letter(c), *(i for w in writes for i, ds in w.items() if dim in ds)]
        for letter in dict.fromkeys(i for i in candidates if i not in banned):
            others = [k for k, w in enumerate(writes) if letter in w and w[letter] != {dim}]
            if good(letter, dim) and all(earlier[k][1] for k in others):
                for k in others:  # written at another dimension there too: that statement's letter moves
                    rename(k, letter)
                letters[c] = letter
                break
        else:  # a letter of its own: one a statement writes only at this dimension, moved to a fresh one
            own = (
                (k, i)
                for k, w in enumerate(writes)
                if earlier[k][1]
                for i, ds in w.items()
                if ds == {dim} and (i not in letters.values() or len(good(i, dim)) > 1)
            )
            found = next(own, None)
            if found is not None:
                letters[c] = rename(*found)
                continue
            bound = rename_bound(dim)
            if bound is None:
                letters = {c: b for c, b in plain.items() if b is not None and not wrong[c]}
                changed = {}
                break
            letters[c] = bound
    if {c: letters.get(c) for c in counts} == plain:
        return changed, None
    names = {
        c: f"{letters.get(c, count_letter(c))}{COUNT_MARK}p{k}{COUNT_MARK * (c not in letters)}"
        for k, c in enumerate(counts)
    }
    return changed, (_counts_renamed(poly, names), {names[c]: set(axes[c]) for c in counts})


def _renamed_in(expr, target, old: str, new: str):
    """``expr`` with the node ``target`` (found by identity) renamed ``old`` -> ``new``."""
    if expr is target:
        return renamed(expr, old, new)
    return with_children(expr, lambda child: _renamed_in(child, target, old, new))


def term_to_expr(
    term: Term,
    context: set[str],
    leading: bool = True,
    explicit: bool = False,
    nested: bool = False,
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
    # a count's letter (delta_ll, l only there) binds nothing around the groups of the term: a
    # group's own count of that dimension prints with the same letter, which the statements
    # before size ((z_k delta_ll + a_i)^2 delta_ll; another letter would be sized by nothing)
    own_counts = {
        f.indices[0]
        for f in term.factors
        if isinstance(f, Delta) and f.indices[0] == f.indices[1] and f.indices[0] not in context
    }
    in_groups = {i for f in term.factors if isinstance(f, Apply) for i in f.arg.indices}
    elsewhere = [i for f in term.factors if not isinstance(f, (Delta, Apply)) for i in f.indices]
    nested_visible = visible - {b for b in own_counts if b not in in_groups and b not in elsewhere}
    # 1/n_r with r summed is mean_r around the term (r bound there); with r free, mean_j(delta_jr)
    means = tuple(dict.fromkeys(f.indices[0] for f in term.factors if is_reciprocal(f) and f.indices[0] not in context))
    if means:  # one 1/n_r per mean_r: a second (1/n_r^2) stays inside it as mean_j(delta_jr)
        absorbed: set[str] = set()
        kept = []
        for f in term.factors:
            if is_reciprocal(f) and f.indices[0] in means and f.indices[0] not in absorbed:
                absorbed.add(f.indices[0])
            else:
                kept.append(f)
        term = keep_sums(Term(term.coeff, tuple(kept)), means)
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
            denominators.append(
                _arg_expr(f.arg, nested_visible, True) if f.param == -1 else atom_to_expr(flipped, nested_visible)
            )
        else:
            factors.append(atom_to_expr(f, nested_visible if isinstance(f, Apply) else visible))
    visible |= nested_visible
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
    a power's base, a divisor), whose terms' once-occurring indices would go outward.  A
    statement's groups keep apart from the letters its counts print with (:func:`avoiding`)."""
    if not poly.terms:
        return Number(Fraction(0))
    if not nested and _AVOIDED.get() is None:
        with avoiding(poly):
            return to_expr(poly, context, explicit)
    ctx = set(poly.indices) | (context or set())
    parts = []
    for k, t in enumerate(poly.terms):
        parts.append(term_to_expr(t, ctx, leading=(k == 0), explicit=explicit, nested=nested))
        written = _WRITTEN.get()
        if written is not None:
            written |= _written_names(parts[-1])
    return parts[0] if len(parts) == 1 else Add(tuple(parts))


def poly_text(poly: Poly) -> str:
    """``str()`` of a :class:`~einderiv.normal.Poly`: the text of :func:`to_expr`."""
    return str(to_expr(poly))


POLY_TEXT[:] = [poly_text]
