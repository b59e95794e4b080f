"""Which written occurrences of a letter are one index, by the scoping rules, and the sizes
that deltas join.

Rule 2 binds a reduction's letter in its body; rule 3 contracts a letter in the smallest product
that writes it twice or more (a group's free letters count once there); rule 4 makes a sum that
is an operand one tensor over its terms' free letters and splits a sum standing alone into terms
summed one by one; rule 1 keeps a left-hand side's letters free everywhere.  The occurrences
these rules make one index have one size, and ``delta_ij`` makes i's size j's.  So in
``sum_i(x_i + sum_j(delta_ij + y_j))`` the delta's i is the sum's, x's axis, and its j y's:
a 3-vector x beside a 4-vector y is "two sizes", as ``x_i delta_ij y_j`` is (multiplied out,
each term sums its own i, and the delta read as a rectangular identity, silently).

This mirrors :mod:`lower`'s ``_Scope`` letter by letter without lowering (it keeps no terms),
and uses its ``factor_chain`` and ``standing_terms``: a change to the rules there is a change
here (``tests/test_regressions.py`` holds the cases each rule decides).
"""

from __future__ import annotations

from collections import Counter

from .ir import Add, Call, Delta, Expr, MatrixCall, Mul, Neg, Number, Pow, Tensor, binds, walk
from .lower import factor_chain, standing_terms

#: one occurrence of a letter in one atom, numbered in the order visited (a tensor's, matrix
#: call's or delta's index); the two union-finds below join them into classes
Item = int


class _Sizes:
    """Two union-finds over letter occurrences: ``index`` joins those the rules make one index
    (never through a delta), ``parent`` those that must have one size (the rules' joins and the
    deltas').  Per ``parent`` root: the tensor axes written in the class and whether a delta
    joined two letters in it.  Per occurrence: its letter, the term standing alone it lies in
    (``parts``), and for a delta's, the delta (``deltas``)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.index: list[int] = []
        self.axes: list[list[tuple[str, int]]] = []
        self.joined: list[bool] = []
        self.letters: list[str] = []
        self.deltas: dict[Item, Delta] = {}
        self.reduced: list[Item] = []  # occurrences of letters a reduction binds
        self.part = 0  # the term standing alone being visited
        self.parts: list[int] = []

    def item(self, letter: str, axis: tuple[str, int] | None = None) -> Item:
        self.letters.append(letter)
        self.parts.append(self.part)
        self.parent.append(len(self.parent))
        self.index.append(len(self.index))
        self.axes.append([axis] if axis else [])
        self.joined.append(False)
        return len(self.parent) - 1

    def root(self, item: Item, table: list[int] | None = None) -> Item:
        table = self.parent if table is None else table
        while table[item] != item:
            table[item] = table[table[item]]
            item = table[item]
        return item

    def union(self, a: Item, b: Item, delta: bool = False) -> Item:
        """Join ``a`` and ``b`` in one size; in one index too, unless a ``delta`` joins them."""
        if not delta:
            first, second = self.root(a, self.index), self.root(b, self.index)
            self.index[second] = first
        a, b = self.root(a), self.root(b)
        if a != b:
            self.parent[b] = a
            self.axes[a] += self.axes[b]
            self.joined[a] = self.joined[a] or self.joined[b]
        self.joined[a] = self.joined[a] or delta
        return a

    def merged(self, maps: list[dict[str, Item]]) -> dict[str, Item]:
        """One map of the letters free in any of ``maps``, each letter's occurrences joined."""
        out: dict[str, Item] = {}
        for each in maps:
            for letter, item in each.items():
                if letter in out:
                    self.union(out[letter], item)
                else:
                    out[letter] = item
        return out


def _atom(node, sizes: _Sizes) -> tuple[dict[str, Item], list[str]]:
    """A tensor's, matrix call's or delta's letters (joined where repeated), and each occurrence."""
    name = node.matrix if isinstance(node, MatrixCall) else getattr(node, "name", None)
    own: dict[str, Item] = {}
    for axis, letter in enumerate(node.indices):
        item = sizes.item(letter, (name, axis) if name is not None else None)
        if isinstance(node, Delta):
            sizes.deltas[item] = node
        if letter in own:
            sizes.union(own[letter], item)
        else:
            own[letter] = item
    if isinstance(node, Delta) and node.first != node.second:
        sizes.union(own[node.first], own[node.second], delta=True)
    return own, list(node.indices)


def _free(node: Expr, bound: frozenset[str], sizes: _Sizes) -> dict[str, Item]:
    """The letters ``node`` leaves free (rule 3's group), each as its joined occurrences."""
    if isinstance(node, Number):
        return {}
    if isinstance(node, (Tensor, Delta, MatrixCall)) and len(set(node.indices)) == len(node.indices):
        return _atom(node, sizes)[0]
    if isinstance(node, Neg):
        return _free(node.operand, bound, sizes)
    if isinstance(node, Add):  # an operand: one tensor over its terms' free letters
        return sizes.merged([_free(term, bound, sizes) for term in node.terms])
    if isinstance(node, Call) and node.over:
        inner = _free(node.arg, bound | frozenset(node.over), sizes)
        sizes.reduced += [item for i, item in inner.items() if binds(node, i)]
        return {i: item for i, item in inner.items() if not binds(node, i)}  # a softmax keeps its letter
    if isinstance(node, Call):
        return _free(node.arg, bound, sizes)
    if isinstance(node, Pow):
        return _free(node.base, bound, sizes)
    if isinstance(node, Mul) and len(node.factors) == 1:
        return _free(node.factors[0], bound, sizes)
    return _product(node, bound, sizes)


def _product(node: Expr, bound: frozenset[str], sizes: _Sizes) -> dict[str, Item]:
    """Rule 3 in a product: a letter written twice or more (a tensor's every index, a group's
    free ones once) is contracted there unless a reduction or the left-hand side binds it."""
    counts: Counter = Counter()
    maps = []
    for factor, divisor in factor_chain(node)[1]:
        if isinstance(factor, (Tensor, Delta, MatrixCall)) and not divisor:
            own, occurrences = _atom(factor, sizes)
        else:
            own = _free(factor, bound, sizes)
            occurrences = list(own)
        counts.update(occurrences)
        maps.append(own)
    joined = sizes.merged(maps)
    return {i: item for i, item in joined.items() if counts[i] < 2 or i in bound}


def _classes(expr: Expr, outputs) -> _Sizes:
    """The occurrences of ``expr``'s letters joined as the rules join them: a left-hand side's
    letter is one index across the statement's terms; each term a sum standing alone splits off
    sums its other letters on its own."""
    sizes = _Sizes()
    bound = frozenset(outputs)
    out_items: list[dict[str, Item]] = []

    def standing(part: Expr) -> None:
        parts = standing_terms(part, bound)
        if parts is None:
            out_items.append({i: item for i, item in _free(part, bound, sizes).items() if i in bound})
            sizes.part += 1
        else:
            for each in parts:
                standing(each)

    standing(expr)
    sizes.merged(out_items)
    return sizes


def _joining_deltas(expr: Expr) -> bool:
    return any(isinstance(n, Delta) and n.first != n.second for n in walk(expr))


def delta_size_ties(expr: Expr, outputs) -> tuple[tuple[tuple[str, int], ...], ...]:
    """The ``(tensor, axis)`` groups that must have one size where a delta joins letters: in
    ``sum_i(x_i + sum_j(delta_ij + y_j))`` x's axis and y's."""
    if not _joining_deltas(expr):
        return ()
    sizes = _classes(expr, outputs)
    groups = []
    for item in range(len(sizes.parent)):
        if sizes.root(item) == item and sizes.joined[item]:
            axes = tuple(dict.fromkeys(sizes.axes[item]))
            if len(axes) > 1:
                groups.append(axes)
    return tuple(groups)


def delta_letters_apart(expr: Expr, outputs) -> dict[int, dict[str, int]]:
    """The delta letters to rename apart, ``{id(delta): {letter: class number}}``: an index
    only deltas write (no tensor of its own) whose deltas join it to a tensor's axis, where a
    tensor also writes its letter as another index.  In ``f = sum_k(w_k) x_i (1 + delta_ik)``
    the k beside the sum is summed at the top (rule 5) and the delta makes it x's length; the
    sum's k is w's.  Sized by name it took w's length, silently (a meaning hunt's find);
    renamed apart, the delta sizes it.  A letter no tensor of its own term sizes through the
    deltas keeps its name, so the statement sizes it as written (``f = A_ij + delta_ij``: A's;
    ``f_i = x_i + y_j + delta_ij``: y's j, "two sizes" beside a 3-vector x), as
    :func:`semantics.letters_apart` does for a delta's partner that its own term writes."""
    if not _joining_deltas(expr):
        return {}
    sizes = _classes(expr, outputs)
    members: dict[Item, list[Item]] = {}
    for item in range(len(sizes.parent)):
        members.setdefault(sizes.root(item, sizes.index), []).append(item)
    own_axes = {root: any(item not in sizes.deltas for item in each) for root, each in members.items()}
    sized_in: dict[Item, set[int]] = {}  # the terms standing alone where a tensor sizes a component
    for item in range(len(sizes.parent)):
        if item not in sizes.deltas:
            sized_in.setdefault(sizes.root(item), set()).add(sizes.parts[item])
    reduced = {sizes.root(item, sizes.index) for item in sizes.reduced}  # letters_apart's to rename
    written = {sizes.letters[root] for root in members if own_axes[root]}
    out: dict[int, dict[str, set]] = {}
    for number, (root, each) in enumerate(members.items()):  # number: the index's, for its new letter
        letter = sizes.letters[root]
        if own_axes[root] or root in reduced or letter in outputs or letter not in written:
            continue
        if sizes.parts[root] not in sized_in.get(sizes.root(root), ()):
            continue  # sized by name, as the statement writes the letter (no tensor of its term sizes it)
        for item in each:
            out.setdefault(id(sizes.deltas[item]), {}).setdefault(letter, set()).add(number)
    # a delta visited in two places (a scalar factor a scaled sum's split repeats in each part)
    # is renamed only where both visits found one index; else it keeps its letters
    return {
        key: {letter: min(numbers) for letter, numbers in names.items()}
        for key, names in out.items()
        if all(len(numbers) == 1 for numbers in names.values())
    }
