"""Dimensions: every axis of a program, grouped by the equalities its text forces.

An axis is a node: ``("axis", T, k)`` is axis k of the tensor or statement T, and a summed
index is a node of its own term (``("summed", statement, term, ..., i)``), so that ``x_i x_i +
y_i y_i`` may sum two sizes.  Writing ``R_mp`` joins m to R's axis 0 (union-find); a delta joins
its two ends; a statement's free index is that statement's axis; a square matrix function joins
its matrix's two axes; using a statement ``t_ik`` joins its axes to the indices written there.
Each group is one dimension.  Because uses join too, an axis that a statement's own text does not
size (an adjoint ``dfdt_ik = mean_j(delta_ji) mean_l(delta_lk)``, which differentiation left
constant) is sized where the statement is used (``dfdt_jl t_jl``).

One function, :func:`dimensions`, builds the groups; from them come the symbolic shape line
(``K.shape + R.shape = (P, P, M, P)``), the JSON ``shape`` and ``inputs``, ``shape_for``, and
the size hints the evaluator binds free indices with (:func:`sized_definitions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from .errors import EvaluationError
from .index_names import count_letter, count_stem, is_count, is_lowered_count
from .ir import Delta, Tensor
from .normal import Apply, MatrixFn, Poly, is_reciprocal

Node = tuple


class Dimensions:
    """A union-find over axis nodes, with the letter each input axis was first written with."""

    def __init__(self) -> None:
        self._parent: dict[Node, Node] = {}
        self.first_letter: dict[Node, str] = {}
        self.letters: dict[Node, set[str]] = {}  # every letter an input axis is written with
        self.axes: dict[Node, None] = {}  # every tensor axis seen, in order (an ordered set)
        self.square: dict[str, str] = {}  # matrix -> a function of it (inv, det, logdet): square
        self._scoped: dict[tuple[str, str], list[Node]] = {}  # (statement, letter) -> its nodes

    def find(self, node: Node) -> Node:
        parent = self._parent
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def _axis(self, name: str, k: int, letter: str | None) -> Node:
        node = ("axis", name, k)
        self.axes.setdefault(node)
        if letter is not None:
            self.first_letter.setdefault(node, letter)
            self.letters.setdefault(node, set()).add(letter)
        return node

    def union(self, a: Node, b: Node) -> None:
        self._parent[self.find(a)] = self.find(b)

    def axis(self, name: str, k: int) -> Node:
        """The dimension of axis k of the tensor or statement ``name``."""
        return self.find(("axis", name, k))

    def input_axes(self, node: Node, inputs: Iterable[str]) -> list[tuple[str, int]]:
        """The input axes ``(tensor, axis)`` in ``node``'s dimension, in the order first written."""
        root = self.find(node)
        wanted = set(inputs)
        return [(key[1], key[2]) for key in self.axes if key[1] in wanted and self.find(key) == root]

    def count_nodes(self, statement: str, index: str) -> list[Node]:
        """The nodes of a summed index (a count ``i#3``, say) in one statement, in every term it occurs."""
        return self._scoped.get((statement, index), [])

    def _by_letter(self, d, inputs: set[str]) -> None:
        """A free axis of ``d`` that nothing sizes takes the dimension that its letter has
        elsewhere in the statement (as summed there, or as written: the ``names`` hint), when
        that is one dimension: ``f_i = 1 + delta_ji - sum_i(a_i)`` is a's size, as
        ``numpy.einsum`` sizes one letter one way."""
        for k, index in enumerate(d.indices):
            if self.input_axes(("axis", d.name, k), inputs):
                continue
            written = [("axis", t, a) for h in d.hints if h[0] == "names" for i, t, a in h[1] if i == index]
            nodes = [*self.count_nodes(d.name, index), *written]
            roots = {self.find(n) for n in nodes if self.input_axes(n, inputs)}
            if len(roots) == 1:
                self.union(("axis", d.name, k), roots.pop())

    # -- building ------------------------------------------------------------------------------
    def _visit(self, statement: str, poly: Poly, scope, tag: tuple) -> None:
        for number, term in enumerate(poly.terms):

            def key(i: str, number: int = number) -> Node:
                if i in poly.indices:
                    return scope(i)
                node = ("summed", *tag, number, i)
                self._scoped.setdefault((statement, i), []).append(node)
                return node

            for position, factor in enumerate(term.factors):
                if isinstance(factor, Tensor) and not is_reciprocal(factor):
                    for axis, index in enumerate(factor.indices):
                        self.union(key(index), self._axis(factor.name, axis, index))
                elif isinstance(factor, Delta):
                    self.union(key(factor.first), key(factor.second))
                elif isinstance(factor, MatrixFn):  # a square matrix: inv(X)_ij has X's two axes
                    self.square.setdefault(factor.matrix, factor.func)
                    self.union(self._axis(factor.matrix, 0, None), self._axis(factor.matrix, 1, None))
                    for axis, index in enumerate(factor.indices):
                        self.union(key(index), self._axis(factor.matrix, axis, index))
                elif hasattr(factor, "arg"):
                    self._visit(statement, factor.arg, key, (*tag, number, position))


def dimensions(definitions: Iterable) -> Dimensions:
    """The dimensions of a program's definitions (and of the statements a derivative came from,
    passed first: their tensors name the dimensions that differentiation cancelled).

    Size hints join too: ``("axis", i, R, k)`` (dK_pq/dR_ij: i is R's axis k), ``("poly",
    raw)`` (the statement as written, before simplification cancelled a tensor) and, for a
    counting index, ``("names", ...)`` (the axes its letter was written at)."""
    dims = Dimensions()
    definitions = list(definitions)
    for number, d in enumerate(definitions):
        own = {i: k for k, i in enumerate(d.indices)}
        dims._visit(d.name, d.poly, lambda i, d=d, own=own: ("axis", d.name, own[i]), (number,))
        for hint in d.hints:
            if hint[0] == "axis":
                _, index, name, axis = hint
                if index in own:
                    dims.union(("axis", d.name, own[index]), dims._axis(name, axis, index))
            elif hint[0] == "poly":
                scope = lambda i, d=d, own=own, n=number: ("axis", d.name, own[i]) if i in own else ("raw", n, i)  # noqa: E731
                dims._visit(d.name, hint[1], scope, (number, "raw"))
            elif hint[0] == "names":
                for index, tensor, axis in hint[1]:
                    dims._axis(tensor, axis, index)  # an axis written, if simplification removed it
                    for node in dims.count_nodes(d.name, index) if is_count(index) else ():
                        dims.union(node, ("axis", tensor, axis))
            elif hint[0] == "differentiates":  # dt_i/ds: its first axes are t's
                _, numerator, count = hint
                for k in range(count):
                    dims.union(("axis", d.name, k), dims._axis(numerator, k, None))
            elif hint[0] == "tied":  # axes one written reduction sums together (mean_k(W_dk + b_k))
                for group in hint[1]:
                    first, *rest = (dims._axis(tensor, axis, None) for tensor, axis in group)
                    for node in rest:
                        dims.union(first, node)
    inputs = {key[1] for key in dims.axes} - {d.name for d in definitions}
    for d in definitions:
        dims._by_letter(d, inputs)
    return dims


def dimension_names(dims: Dimensions, ranks: Mapping[str, int], out) -> tuple[dict[str, str], dict[str, tuple]]:
    """Symbolic sizes: ``out``'s index -> dimension name (``K``), input -> its dimension names.
    A dimension is named after the first letter written for it, upper-cased (``n_k`` for a
    longer index), numbered when two share a letter."""
    names: dict[Node, str] = {}
    for axis_key, letter in dims.first_letter.items():
        if axis_key[1] not in ranks:
            continue
        root = dims.find(axis_key)
        if root not in names:
            base = letter.upper() if len(letter) == 1 else f"n_{letter}"
            name, k = base, 1
            while name in names.values():
                k += 1
                name = f"{base}{k}"
            names[root] = name
    out_roots = {i: dims.axis(out.name, k) for k, i in enumerate(out.indices)}
    index_dims = {i: names[root] for i, root in out_roots.items() if root in names}
    order = [n for n in dict.fromkeys(key[1] for key in dims.first_letter) if n in ranks]
    order += [n for n in ranks if n not in order]  # scalars (no axes): inputs all the same
    input_dims = {n: tuple(names.get(dims.axis(n, a), "?") for a in range(ranks[n])) for n in order}
    return index_dims, input_dims


def shape_of(dims: Dimensions, out, shapes: Mapping[str, tuple[int, ...]], written=()) -> tuple[int, ...]:
    """``out``'s shape for inputs of these shapes: each axis takes the size of its dimension's
    input axes, which must agree (two sizes, or none, is an :class:`EvaluationError`).  An axis
    no input axis is joined to takes the size of the input axes its letter is written with
    elsewhere in the program, as evaluation binds it (``written``: the ``("names", ...)`` entries
    ``(letter, input, axis)`` of the output's definition): in ``t = A_ii; f_j = s + delta_ij``,
    j is A's size."""
    sizes = dimension_sizes(dims, shapes)
    shape = []
    for k, index in enumerate(out.indices):
        known = sizes.get(dims.axis(out.name, k))
        if known is None:
            by_letter = {
                shapes[name][axis]
                for letter, name, axis in written
                if letter == index and axis < len(shapes.get(name, ()))
            }
            if len(by_letter) != 1:
                raise EvaluationError(f"the size of index {index!r} cannot be inferred from the inputs")
            known = (by_letter.pop(), "")
        shape.append(known[0])
    return tuple(shape)


def dimension_sizes(dims: Dimensions, shapes: Mapping[str, tuple[int, ...]]) -> dict[Node, tuple[int, str]]:
    """Each dimension's size, from the input axes in it, which must agree: ``index 'k' has two
    sizes`` otherwise (an :class:`EvaluationError`), whatever the evaluation would have read."""
    for name, func in dims.square.items():  # said as the matrix function says it
        shape = tuple(shapes.get(name, ()))
        if len(shape) == 2 and shape[0] != shape[1]:
            raise EvaluationError(f"{func}({name}): {name!r} has shape {shape}, not a square matrix")
    sizes: dict[Node, tuple[int, str]] = {}
    firsts: dict[Node, Node] = {}  # the axis the first size came from
    for key in dims.axes:
        name, axis = key[1], key[2]
        if name not in shapes or axis >= len(shapes[name]):
            continue
        root, size = dims.find(key), shapes[name][axis]
        origin = f"{name} axis {axis}" if len(shapes[name]) > 1 else name
        known = sizes.setdefault(root, (size, origin))
        first_axis = firsts.setdefault(root, key)
        if known[0] != size:
            letter, first = dims.first_letter.get(key), dims.first_letter.get(first_axis)
            shared = dims.letters.get(key, set()) & dims.letters.get(first_axis, set())
            if shared:  # x_i A_ij x_j: j is written at both axes
                what = f"index {letter if letter in shared else sorted(shared)[0]!r} has"
            elif letter and first and letter != first:  # C_ij = delta_ij + A_ij: i and j are one size
                what = f"indices {first!r} and {letter!r}, which the text makes one size, have"
            elif letter:
                what = f"index {letter!r} has"
            else:
                what = f"{origin}, which a delta or a reduction joins to {known[1]}, has"
            raise EvaluationError(f"{what} two sizes: {known[0]} (from {known[1]}) and {size} (from {origin})")
    return sizes


def sized_definitions(definitions: list, inputs: Iterable[str], dims: Dimensions | None = None) -> list:
    """``definitions`` with a size hint ``("axis", i, T, k)`` for each free index i that no
    hint sizes yet and whose dimension holds an input's axis, and ``("names", ...)`` for each
    counting index: the evaluator binds them so even where the statement's own text does not
    (an adjoint constant along an axis, a count the chain rule moved)."""
    inputs = list(inputs)
    dims = dims or dimensions(definitions)
    out = []
    for d in definitions:
        hinted = {h[1] for h in d.hints if h[0] == "axis"}
        extra: list = []
        for k, index in enumerate(d.indices):
            if index in hinted:
                continue
            found = dims.input_axes(("axis", d.name, k), inputs)
            if found:
                extra.append(("axis", index, *found[0]))
        counts = []
        for index in sorted(i for i in d.poly.all_index_names() if is_count(i)):
            for node in dims.count_nodes(d.name, index)[:1]:
                counts.extend((index, tensor, axis) for tensor, axis in dims.input_axes(node, inputs)[:1])
        if counts:
            extra.append(("names", tuple(counts)))
        out.append(replace(d, hints=(*d.hints, *extra)) if extra else d)
    return out


# -- numbers: index sizes from the arrays' shapes, statement by statement, as evaluation binds them


class _SizeBinder:
    """Index name -> size, remembering which tensor axis fixed it, for clear conflict errors."""

    def __init__(self, fixed: Mapping[str, tuple[int, str]] | None = None):
        self.sizes: dict[str, tuple[int, str]] = dict(fixed or {})

    def bind(self, index: str, size: int, origin: str) -> bool:
        known = self.sizes.get(index)
        if known is None:
            self.sizes[index] = (size, origin)
            return True
        if known[0] != size:
            raise EvaluationError(
                f"index {index!r} has two sizes: {known[0]} (from {known[1]}) and {size} (from {origin})"
            )
        return False


def _display(name: str) -> str:
    return "a function argument" if name.startswith("_") else name


def bind_sizes(poly: Poly, shapes: Mapping[str, tuple[int, ...]], fixed=None, terms: bool = True, by_name=None):
    """Sizes of the free indices (shared by all terms) and of each top-level term's indices.

    Nested call arguments are visited too (their free indices are the enclosing term's).
    With ``terms=False`` only the free indices are wanted, and a summed index of unknown size
    is no error.  A summed index that only a delta carries in its term (``delta_ii``, the
    dimension, after ``x_i^0`` became 1) takes the size its name has elsewhere in the
    statement (``by_name``, or the other terms), when that size is unambiguous.
    Raises :class:`EvaluationError` when an index has two sizes or no size can be known.
    """
    shared = _SizeBinder(fixed)
    deltas: list = []
    binders: list[_SizeBinder] = [shared]

    def visit(terms, free: set[str], outer) -> list[_SizeBinder]:
        locals_ = []
        for term in terms:
            local = _SizeBinder()
            binders.append(local)

            def resolve(i: str, local=local):
                return outer(i) if i in free else local

            for factor in term.factors:
                if is_reciprocal(factor):
                    continue  # sized by the other factors of its term
                if isinstance(factor, Tensor):
                    shape = shapes[factor.name]
                    for axis, (index, size) in enumerate(zip(factor.indices, shape)):
                        origin = f"{_display(factor.name)} axis {axis}" if len(shape) > 1 else _display(factor.name)
                        resolve(index).bind(index, size, origin)
                elif isinstance(factor, Delta):
                    deltas.append((factor, resolve))
                elif isinstance(factor, MatrixFn):
                    shape = shapes[factor.matrix]
                    origin = f"{factor.func}({_display(factor.matrix)})"
                    for axis, index in enumerate(factor.indices):
                        resolve(index).bind(index, shape[axis], origin)
                elif isinstance(factor, Apply):
                    visit(factor.arg.terms, set(factor.arg.indices), resolve)
            locals_.append((term, local, resolve))
        return locals_

    top = visit(poly.terms, set(poly.indices), lambda i: shared)

    def through_deltas() -> None:
        changed = True
        while changed:
            changed = False
            for delta, resolve in deltas:
                ends = [(i, resolve(i)) for i in delta.indices]
                known = [b.sizes[i] for i, b in ends if i in b.sizes]
                for i, binder in ends:
                    if known:
                        changed |= binder.bind(i, known[0][0], f"delta_{''.join(delta.indices)} ({known[0][1]})")

    through_deltas()
    if terms and by_name:
        # a delta between two letters no tensor carries (delta_il, l renamed from the j of b_j
        # by differentiation): one end sized by its name in the statement sizes the other
        unsized = [(i, resolve(i)) for delta, resolve in deltas for i in delta.indices]
        for i, binder in unsized:
            if i not in binder.sizes and by_name.get(i) is not None:
                binder.bind(i, by_name[i], "the same index elsewhere in the statement")
        through_deltas()
    per_term: list[dict[str, int]] = []
    if not terms:
        return shared.sizes, per_term
    names = dict(by_name or {})
    for binder in binders:
        for index, (size, _) in binder.sizes.items():
            names[index] = size if names.get(index, size) == size else None
    two_sizes = {i for i, size in (by_name or {}).items() if size is None}
    for term, _, resolve in top:
        sizes: dict[str, int] = {}
        for factor in term.factors:
            for index in factor.indices:
                binder = resolve(index)
                if index not in binder.sizes:
                    # a count the text wrote (delta_ff, sum_f(c)) is sized by its letter
                    shown = count_letter(index) if is_lowered_count(index) else index
                    if names.get(index) is None and is_count(index):  # a count renamed apart: its stem's size
                        names[index] = names.get(count_stem(index))
                        if names[index] is None and shown != index:
                            names[index] = names.get(shown)
                    if names.get(index) is None:
                        why = (
                            "the statements before it write it at two sizes"
                            if shown in two_sizes
                            else "it appears only in deltas"
                        )
                        raise EvaluationError(f"the size of index {shown!r} cannot be inferred: {why}")
                    binder.bind(index, names[index], "the same index elsewhere in the statement")
                sizes[index] = binder.sizes[index][0]
        per_term.append(sizes)
    return shared.sizes, per_term


def sizes_by_name(hints, shapes) -> dict[str, int | None]:
    """Every index name the hints' statements bind, with its size where that is unambiguous
    (None where they bind it at two sizes)."""
    names: dict[str, int] = {}
    for hint in hints:
        if hint[0] == "names":  # (index, tensor, axis) as written in the statement
            for index, tensor, axis in hint[1]:
                if tensor in shapes and axis < len(shapes[tensor]):
                    size = shapes[tensor][axis]
                    names[index] = size if names.get(index, size) == size else None
            continue
        if hint[0] != "poly":
            continue
        poly = hint[1]
        for term in poly.terms:
            try:
                _, (sizes,) = bind_sizes(Poly((term,), poly.indices), shapes)
            except EvaluationError:
                continue
            for index, size in sizes.items():
                names[index] = size if names.get(index, size) == size else None
    return names


def fixed_sizes(hints, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, str]]:
    """The sizes that size hints give: ``("poly", raw)`` or ``("axis", index, array, axis)``."""
    fixed: dict[str, tuple[int, str]] = {}
    for hint in hints:
        if hint[0] == "poly":
            free, _ = bind_sizes(hint[1], shapes, terms=False)
            fixed.update({i: free[i] for i in hint[1].indices if i in free})
        elif hint[0] == "axis":
            _, index, name, axis = hint
            fixed[index] = (shapes[name][axis], f"{_display(name)} axis {axis}")
    return fixed


def hint_names(hints) -> set[str]:
    names: set[str] = set()
    for hint in hints:
        if hint[0] == "names":
            names |= {tensor for _, tensor, _ in hint[1]}
        elif hint[0] == "poly":
            names |= hint[1].tensor_names()
        elif hint[0] == "axis":
            names.add(hint[2])
    return names


__all__ = [
    "Dimensions",
    "bind_sizes",
    "dimension_names",
    "dimensions",
    "fixed_sizes",
    "hint_names",
    "shape_of",
    "sized_definitions",
    "sizes_by_name",
]
