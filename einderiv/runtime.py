"""Normal form -> numbers: a straight-line program of einsum contractions and elementwise steps.

Every function call is hoisted into its own step (its argument contracted by one einsum, the
function applied elementwise), shared by every term and statement that uses the same call
(common subexpressions are computed once per evaluation).  Contractions are planned with
``opt_einsum.contract_expression`` once per shape signature and cached.  No Python loop runs
over tensor elements.

NumPy arrays take the fast path (:meth:`Contraction.execute`: diagonal writes into strided
views, hand-picked BLAS calls); other libraries' arrays (torch, jax, cupy, dask) take the
generic path (:meth:`StraightLine.run_with`), which never writes into an array and calls the
library through :mod:`einderiv.backends`.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import opt_einsum

from . import linalg
from .backends import ArrayOps
from .emit import DELTA_OPERAND, EinsumTerm, emit
from .errors import EvaluationError
from .index_names import count_stem, is_count
from .ir import Delta, Tensor, to_float
from .linalg import generic_matrix_function, generic_solve, matrix_function, solve
from .normal import RECIPROCAL, Apply, MatrixFn, Poly, Term, canonical_key, equivalent, is_reciprocal, rename_atom
from .rewrites import logsumexp_parts


def as_array(name: str, value) -> np.ndarray:
    """The input as an ndarray; integers and booleans are promoted to float64."""
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is the user's input
        raise EvaluationError(f"input {name!r} is not an array: {err}") from None
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype.kind not in "fc":
        raise EvaluationError(f"input {name!r} has dtype {array.dtype}, expected a numeric array")
    return array


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
    changed = True
    while changed:
        changed = False
        for delta, resolve in deltas:
            ends = [(i, resolve(i)) for i in delta.indices]
            known = [b.sizes[i] for i, b in ends if i in b.sizes]
            for i, binder in ends:
                if known:
                    changed |= binder.bind(i, known[0][0], f"delta_{''.join(delta.indices)} ({known[0][1]})")
    per_term: list[dict[str, int]] = []
    if not terms:
        return shared.sizes, per_term
    names = dict(by_name or {})
    for binder in binders:
        for index, (size, _) in binder.sizes.items():
            names[index] = size if names.get(index, size) == size else None
    for term, _, resolve in top:
        sizes: dict[str, int] = {}
        for factor in term.factors:
            for index in factor.indices:
                binder = resolve(index)
                if index not in binder.sizes:
                    if names.get(index) is None and is_count(index):  # a count renamed apart: its stem's size
                        names[index] = names.get(count_stem(index))
                    if names.get(index) is None:
                        raise EvaluationError(
                            f"the size of index {index!r} cannot be inferred: it appears only in deltas"
                        )
                    binder.bind(index, names[index], "the same index elsewhere in the statement")
                sizes[index] = binder.sizes[index][0]
        per_term.append(sizes)
    return shared.sizes, per_term


def sizes_by_name(hints, shapes) -> dict[str, int]:
    """Every index name the hints' statements bind, with its size where that is unambiguous."""
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
    return {k: v for k, v in names.items() if v is not None}


def fixed_sizes(hints, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, str]]:
    """The sizes that size hints give: ``("poly", raw)`` or ``("axis", index, array, axis)``."""
    fixed: dict[str, tuple[int, str]] = {}
    for hint in hints:
        if hint[0] == "names":
            continue
        if hint[0] == "poly":
            free, _ = bind_sizes(hint[1], shapes, terms=False)
            fixed.update({i: free[i] for i in hint[1].indices if i in free})
        else:
            _, index, name, axis = hint
            fixed[index] = (shapes[name][axis], f"{_display(name)} axis {axis}")
    return fixed


#: operands made from index sizes alone: deltas and the 1/n of a mean
_SIZED = frozenset({DELTA_OPERAND, RECIPROCAL})


@dataclass(frozen=True)
class ResolvedTerm:
    """An einsum term with its deltas and ``1/n`` factors resolved, before any size is known:
    ``coefficient * n_a ** p_a * ... * einsum(operands over inputs)``, placed on the diagonal
    where ``merged`` says so.

    ``size_powers`` are ``(index, power)`` in the order they multiply the coefficient (float
    arithmetic: ``coeff *= float(n) ** power``): ``delta_aa`` with a summed is the dimension of
    a (power 1); ``1/n_r`` of ``mean_r`` is -1 per factor, plus 1 where nothing else carries a
    summed r.  ``merged`` maps a free index b to the free index a it merged into (``delta_ab``:
    the term lives on the diagonal a = b; a is the earlier of the two in the free indices), and
    ``inputs`` are the operands' indices with merged ones renamed.  The NumPy runtime and the
    code generator both read terms through this."""

    coefficient: Fraction
    size_powers: tuple[tuple[str, int], ...]
    operands: tuple[str, ...]
    inputs: tuple[tuple[str, ...], ...]
    merged: Mapping[str, str]

    def find(self, index: str) -> str:
        """The index ``index`` merged into (itself where it merged into none)."""
        return self.merged.get(index, index)


def resolve_deltas(term: EinsumTerm, free: tuple[str, ...]) -> ResolvedTerm:
    """``term`` with its deltas and ``1/n`` factors resolved (see :class:`ResolvedTerm`)."""
    parent: dict[str, str] = {}
    order = {i: k for k, i in enumerate(free)}

    def find(i: str) -> str:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    powers: list[tuple[str, int]] = []
    # 1/n_r of mean_r is constant along r: a number, 1/n_r per factor; where nothing else carries
    # a summed r, the sum over r of that number is n_r times it
    means = Counter(idx[0] for name, idx in zip(term.operands, term.inputs) if name == RECIPROCAL)
    carried = set(free) | {i for name, idx in zip(term.operands, term.inputs) if name != RECIPROCAL for i in idx}
    for r, count in means.items():
        power = (0 if r in carried else 1) - count
        if power:  # (a power 0 multiplies by 1.0: nothing)
            powers.append((r, power))
    operands, inputs = [], []
    for name, idx in zip(term.operands, term.inputs):
        if name == RECIPROCAL:
            continue
        if name != DELTA_OPERAND:
            operands.append(name)
            inputs.append(idx)
        elif idx[0] == idx[1]:
            powers.append((idx[0], 1))
        else:
            a, b = sorted((find(idx[0]), find(idx[1])), key=order.__getitem__)
            if a != b:
                parent[b] = a
    merged = {i: find(i) for i in free if find(i) != i}
    renamed = tuple(tuple(find(i) for i in idx) for idx in inputs)
    return ResolvedTerm(term.coefficient, tuple(powers), tuple(operands), renamed, merged)


def _resolve_deltas(term: EinsumTerm, sizes: Mapping[str, int], free: tuple[str, ...]):
    """:func:`resolve_deltas` with the sizes put in: the coefficient as a float, the other
    operands, their indices with merged ones renamed, and ``find`` (an index -> the one it
    merged into)."""
    resolved = resolve_deltas(term, free)
    coeff = to_float(resolved.coefficient)
    for index, power in resolved.size_powers:
        coeff *= float(sizes[index]) ** power
    return coeff, list(resolved.operands), list(resolved.inputs), resolved.find


class Contraction:
    """``target = sum of einsum terms`` over named arrays, planned once per shape signature."""

    def __init__(self, poly: Poly, hints=()):
        self.poly = poly
        self.hints = hints
        self.terms: tuple[EinsumTerm, ...] = emit(poly)
        self.names = sorted({n for t in self.terms for n in t.operands if n not in _SIZED} | _hint_names(hints))
        self._plans: dict[tuple, tuple] = {}

    def _sizes(self, values: Mapping[str, object]):
        """The sizes of the free indices and of every term's indices, from the arrays' shapes."""
        shapes = {name: tuple(values[name].shape) for name in self.names}
        all_shapes = {k: tuple(v.shape) for k, v in values.items()}
        fixed = fixed_sizes(self.hints, all_shapes)
        fixed = {i: fixed[i] for i in self.poly.indices if i in fixed}
        by_name = sizes_by_name(self.hints, all_shapes)
        out_sizes, term_sizes = bind_sizes(self.poly, shapes, fixed, by_name=by_name)
        for index in self.poly.indices:
            if index not in out_sizes:
                if index not in by_name:  # as written: tanh(A_ij - A_ij) is tanh(0), still A's shape
                    raise EvaluationError(f"the size of output index {index!r} cannot be inferred from the inputs")
                out_sizes[index] = (by_name[index], "the statement as written")
        return out_sizes, term_sizes, tuple(out_sizes[i][0] for i in self.poly.indices)

    def _plan(self, values: Mapping[str, np.ndarray]):
        out_sizes, term_sizes, out_shape = self._sizes(values)
        arrays = [values[n] for n in self.names]
        dtype = np.result_type(*arrays) if arrays else np.dtype(np.float64)
        if dtype.kind not in "fc":
            dtype = np.dtype(np.float64)
        steps = []
        for term, sizes in zip(self.terms, term_sizes):
            if _SIZED & set(term.operands):
                steps.append(self._diagonal_step(term, sizes, out_sizes, dtype))
                continue
            bshape = tuple(out_sizes[i][0] if i in term.output else 1 for i in self.poly.indices)
            if not term.operands:
                steps.append(("dense", to_float(term.coefficient), None, (), bshape, None))
                continue
            coeff = None if term.coefficient == 1 else to_float(term.coefficient)
            operand_shapes = [tuple(sizes[i] for i in idx) for idx in term.inputs]
            contraction = _contraction(term.subscripts, operand_shapes)
            # scale the smallest operand rather than the result when that is cheaper
            counts = [math.prod(shape) for shape in operand_shapes]
            smallest = min(range(len(counts)), key=counts.__getitem__)
            scale_at = smallest if coeff is not None and counts[smallest] < math.prod(bshape) else None
            steps.append(("dense", coeff, contraction, term.operands, bshape, scale_at))
        return steps, out_shape, dtype

    def _diagonal_step(self, term: EinsumTerm, sizes, out_sizes, dtype):
        """A term with deltas, evaluated without identity matrices: ``delta_ab`` between two free
        indices makes the term live on the diagonal a = b, so the remaining factors are contracted
        with b renamed to a and added into a strided diagonal view of the result; ``delta_aa``
        with a summed is the dimension of a, a number."""
        coeff, operands, inputs, find = _resolve_deltas(term, sizes, self.poly.indices)
        axes = [i for i in self.poly.indices if find(i) == i]
        itemsize = np.dtype(dtype).itemsize
        strides = {}
        step = itemsize
        for i in reversed(self.poly.indices):
            strides[i] = step
            step *= out_sizes[i][0]
        view_strides = tuple(sum(strides[j] for j in self.poly.indices if find(j) == i) for i in axes)
        view_shape = tuple(out_sizes[i][0] for i in axes)
        present = [i for i in axes if any(i in idx for idx in inputs)]
        bshape = tuple(out_sizes[i][0] if i in present else 1 for i in axes)
        contraction = None
        if operands:
            symbols = {i: opt_einsum.get_symbol(k) for k, i in enumerate(dict.fromkeys(j for x in inputs for j in x))}
            subscripts = ",".join("".join(symbols[i] for i in idx) for idx in inputs)
            subscripts += "->" + "".join(symbols[i] for i in present)
            shapes = [
                tuple(sizes[j] for j in idx) for name, idx in zip(term.operands, term.inputs) if name not in _SIZED
            ]
            contraction = _contraction(subscripts, shapes)
        return ("diagonal", coeff, contraction, tuple(operands), bshape, (view_shape, view_strides))

    def generic_plan(self, values: Mapping[str, object], ops: ArrayOps):
        """The plan for another array library (made once per signature), in which nothing is
        written into an array: per term, a contraction for opt_einsum to run with that library;
        ``delta_aa`` with a summed is the dimension of a (a number); ``delta_ab`` between two free
        indices makes the term live on the diagonal a = b, so the rest is contracted with b
        renamed to a and then placed on that diagonal by ``where(a == b, value, 0)`` (no product
        with an identity matrix: an inf stays on the diagonal instead of making NaN off it)."""
        key = (ops.name, *[(tuple(values[n].shape), str(values[n].dtype)) for n in self.names])
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        out_sizes, term_sizes, out_shape = self._sizes(values)
        order = {i: k for k, i in enumerate(self.poly.indices)}
        steps = []
        for term, sizes in zip(self.terms, term_sizes):
            coeff, names, inputs, find = _resolve_deltas(term, sizes, self.poly.indices)
            present = [i for i in self.poly.indices if find(i) == i and any(i in idx for idx in inputs)]
            merged = [i for i in self.poly.indices if find(i) != i]
            masks = tuple((out_sizes[i][0], order[find(i)], order[i]) for i in merged)
            on_diagonal = set(merged) | {find(i) for i in merged}
            vshape = tuple(out_sizes[i][0] if i in present else 1 for i in self.poly.indices)
            bshape = tuple(out_sizes[i][0] if i in present or i in on_diagonal else 1 for i in self.poly.indices)
            contraction = None
            if names:
                symbols = {
                    i: opt_einsum.get_symbol(k) for k, i in enumerate(dict.fromkeys(j for x in inputs for j in x))
                }
                subscripts = ",".join("".join(symbols[i] for i in idx) for idx in inputs)
                subscripts += "->" + "".join(symbols[i] for i in present)
                shapes = tuple(tuple(sizes[i] for i in idx) for idx in inputs)
                contraction = (subscripts, shapes)
            steps.append((coeff, contraction, tuple(names), masks, vshape, bshape))
        plan = (tuple(steps), out_shape)
        self._plans[key] = plan  # one atomic store, no lock: torch.compile traces this code
        return plan

    def execute_generic(self, plan, values: Mapping[str, object], ops: ArrayOps, like):
        """Evaluate with a plan from :meth:`generic_plan`: a sum of contractions and diagonal
        placements, nothing written in place (``like`` gives the dtype and device of constants)."""
        steps, out_shape = plan
        result = None
        for coeff, contraction, names, masks, vshape, bshape in steps:
            if contraction is None:
                value = ops.zeros(vshape, like) + coeff
            else:
                value = ops.contract(*contraction, [values[n] for n in names])
                if coeff != 1:
                    value = value * coeff
                if tuple(value.shape) != vshape:
                    value = ops.reshape(value, vshape)
            for size, a, b in masks:  # keep only the diagonal a = b
                axes = [1] * len(out_shape)
                axes[a] = axes[b] = size
                value = ops.where(ops.reshape(ops.eye_mask(size, like), axes), value, 0)
            if tuple(value.shape) != bshape:
                value = ops.broadcast_to(value, bshape)
            result = value if result is None else result + value
        if result is None:
            return ops.zeros(out_shape, like)
        if tuple(result.shape) != out_shape:
            result = ops.broadcast_to(result, out_shape)
        return result

    def plan_for(self, values: Mapping[str, np.ndarray]):
        """The plan for these arrays' shapes and dtypes (made once per signature)."""
        key = tuple([(values[n].shape, values[n].dtype) for n in self.names])
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(values)
            self._plans[key] = plan  # one atomic store: a race at worst plans twice
        return plan

    def __call__(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.execute(self.plan_for(values), values)

    def execute(self, plan, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate with a plan from :meth:`plan_for`."""
        steps, out_shape, dtype = plan
        if len(steps) == 1:
            kind, coeff, contraction, names, bshape, view = steps[0]
            if kind == "dense" and coeff is None and contraction is not None and bshape == out_shape:
                # one plain contraction: the common intermediate, with no bookkeeping
                ops = [values[n] for n in names]
                value = contraction(*ops)
                if type(value) is np.ndarray and value.base is None and all(value is not op for op in ops):
                    return value
                return np.array(value, dtype=dtype)
        result = None
        owned = False  # whether ``result`` is a fresh array this call may write into
        for kind, coeff, contraction, names, bshape, view in steps:
            if kind == "diagonal":
                if not (
                    owned
                    and isinstance(result, np.ndarray)
                    and result.shape == out_shape
                    and result.dtype == dtype
                    and result.flags.c_contiguous
                    and result.flags.writeable
                ):  # the diagonal view's strides assume a C-ordered array of our own
                    base = np.zeros(out_shape, dtype=dtype)
                    if result is not None:
                        base += result
                    result, owned = base, True
                diagonal = np.ndarray(view[0], dtype, buffer=result, strides=view[1])  # a strided view
                if contraction is None:
                    diagonal += coeff
                else:
                    value = contraction(*[values[n] for n in names])
                    diagonal += np.reshape(value if coeff == 1 else value * coeff, bshape)
                continue
            subtract = False
            if contraction is None:
                value, fresh = np.asarray(coeff, dtype=dtype), False
            else:
                ops = [values[n] for n in names]
                scale_at = view
                if coeff == -1.0 and result is not None:  # a - b: no scaled copy of b
                    value, subtract, fresh = contraction(*ops), True, False
                elif scale_at is not None:
                    ops[scale_at] = ops[scale_at] * coeff
                    value, fresh = contraction(*ops), True
                else:
                    value = contraction(*ops)
                    if coeff is not None:
                        value, fresh = value * coeff, True
                    else:  # a result of its own, not an operand or a view of one
                        fresh = type(value) is np.ndarray and value.base is None and all(value is not op for op in ops)
            if value.shape != bshape:
                value = np.reshape(value, bshape)
            if result is None:
                result, owned = value, fresh
            elif owned and result.shape == out_shape:
                if subtract:
                    result -= value
                else:
                    result += value
            else:
                result, owned = (result - value if subtract else result + value), True
        if result is None:
            return np.zeros(out_shape, dtype=dtype)
        if result.shape != out_shape or not owned:
            result = np.array(np.broadcast_to(result, out_shape), dtype=dtype)
        return result


def _same(array):
    return array


def _pairwise(subscripts: str):
    """A direct NumPy call for the commonest small pairwise contractions (matrix-vector,
    vector-matrix, matrix-matrix, outer product), which cost less than einsum's parsing."""
    inputs, out = subscripts.split("->")
    if inputs.count(",") != 1:
        return None
    a, b = inputs.split(",")
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        return None
    if len(a) == 2 and len(b) == 1 and a[1] == b and out == a[0]:
        return np.matmul  # A_xy b_y -> x
    if len(a) == 1 and len(b) == 2 and b[0] == a and out == b[1]:
        return np.matmul  # a_y B_yx -> x
    if len(a) == 2 and len(b) == 2 and a[1] == b[0] and out == a[0] + b[1] and a[0] != b[1]:
        return np.matmul  # A_xy B_yz -> xz
    shared = set(a) & set(b)
    if len(a) == 2 and len(b) == 2 and len(shared) == 1 and sorted(out) == sorted(set(a + b) - shared):
        # any other matrix product (U_mr V_nr -> mn is U V^T): matmul of transposed views, BLAS
        (y,) = shared
        left, right = a[1] == y, b[0] == y  # whether each is already in matmul order
        swap = out != a.replace(y, "") + b.replace(y, "")

        def product(x, z, left=left, right=right, swap=swap):
            result = (x if left else x.T) @ (z if right else z.T)
            return result.T if swap else result

        return product
    if len(a) == 1 and len(b) == 1 and a != b:
        if out == a + b:
            return np.multiply.outer
        if out == b + a:
            return lambda x, y: np.multiply.outer(y, x)
    return None


#: Below this many elements in every operand, a contraction of one or two operands runs through
#: numpy.einsum directly: opt_einsum's planning buys nothing there and its call costs ~10 us.
SMALL = 4096


#: A Gram-like product ``w_n A_ni A_nj -> ij`` is assembled from its upper triangle of blocks
#: when its result has at least this many rows and the product this many multiply-adds.
GRAM_MIN_SIZE = 256
GRAM_MIN_WORK = 2**24


class _SymmetricGram:
    """``w_n A_ni A_nj -> ij`` (the weights optional, n any number of indices): symmetric in i
    and j when both matrices are one array, so only the blocks on and above the diagonal are
    multiplied (B = w A once, then B_I^T A_J for J >= I) and the rest mirrored: (k + 1) / 2k of
    the work for k blocks.  Called with two different arrays it is the plain contraction."""

    def __init__(self, plain, weighted: bool, blocks: int):
        self.plain, self.weighted, self.blocks = plain, weighted, blocks

    def __call__(self, *operands):
        left, right = operands[-2], operands[-1]
        if left is not right or left.ndim != 2:
            return self.plain(*operands)
        weighted = left * operands[0][:, None] if self.weighted else left
        size = left.shape[1]
        cuts = np.linspace(0, size, self.blocks + 1).astype(int)
        out = np.empty((size, size), dtype=np.result_type(weighted, right))
        for a, b in zip(cuts[:-1], cuts[1:]):
            out[a:b, a:] = weighted[:, a:b].T @ right[:, a:]
            out[b:, a:b] = out[a:b, b:].T  # the mirror of the blocks right of the diagonal block
        return out

    def __repr__(self) -> str:
        return f"<symmetric Gram product in {self.blocks} blocks, upper triangle mirrored>"


def _gram(subscripts: str, shapes):
    """A :class:`_SymmetricGram` for ``n,ni,nj->ij`` or ``ni,nj->ij`` where it pays, else None."""
    inputs, output = subscripts.split("->")
    parts = inputs.split(",")
    if len(output) != 2 or len(parts) not in (2, 3) or output[0] == output[1]:
        return None
    i, j = output
    *weights, a, b = parts
    if len(a) != 2 or len(b) != 2 or a[1] != i or b[1] != j or a[0] != b[0]:
        return None
    if weights and weights[0] != a[0]:
        return None
    rows, size = shapes[-2]
    if size < GRAM_MIN_SIZE or tuple(shapes[-1]) != (rows, size) or rows * size * size < GRAM_MIN_WORK:
        return None
    plain = opt_einsum.contract_expression(subscripts, *shapes)
    return _SymmetricGram(plain, bool(weights), blocks=max(3, min(8, size // 128)))


def _contraction(subscripts: str, shapes):
    """The contraction of ``subscripts`` for operands of these shapes: opt_einsum's planned
    expression (pairwise order, BLAS where it applies), or NumPy's einsum for a single operand
    (a transpose, diagonal or sum) and for two small ones, which costs a fraction of the call."""
    inputs, output = subscripts.split("->")
    if inputs == output and len(set(output)) == len(output):
        return _same  # the operand itself, axes already in place
    gram = _gram(subscripts, shapes)
    if gram is not None:
        return gram
    if len(shapes) > 1:
        reduced = _reduced_first(inputs.split(","), output, [tuple(s) for s in shapes])
        if reduced is not None:
            return reduced
    if len(shapes) == 1 or (len(shapes) == 2 and all(math.prod(s) <= SMALL for s in shapes)):
        return _pairwise(subscripts) or functools.partial(np.einsum, subscripts)
    return opt_einsum.contract_expression(subscripts, *shapes)


class _ReducedFirst:
    """A contraction whose scalar operands multiply the result at the end, and whose operands
    first sum the indices that only they carry (``inv(S)_ie r_ne -> i`` is inv(S) times the
    column sums of r: N*D + D*D work, not N*D*D).  Scalars out of the planner's way matter too:
    opt_einsum plans a fifth, 0-d operand into an outer product of two large ones."""

    def __init__(self, scalars, sums, rest, inner, subscripts):
        self.scalars, self.sums, self.rest, self.inner = scalars, sums, rest, inner
        self.subscripts = subscripts

    def __call__(self, *operands):
        arrays = []
        for k in self.rest:
            axes = self.sums.get(k)
            arrays.append(operands[k].sum(axis=axes) if axes else operands[k])
        value = self.inner(*arrays) if arrays else np.float64(1.0)
        for k in self.scalars:
            value = value * operands[k]
        return value

    def __repr__(self) -> str:
        return f"<contraction {self.subscripts}: sums first, scalars last>"


def _reduced_first(inputs: list[str], output: str, shapes: list[tuple]):
    """A :class:`_ReducedFirst` for this contraction where it saves work, else None."""
    scalars = [k for k, s in enumerate(inputs) if not s]
    counts = Counter(c for s in inputs for c in s)
    sums: dict[int, tuple[int, ...]] = {}
    new_inputs, new_shapes, rest = [], [], []
    for k, sub in enumerate(inputs):
        if not sub:
            continue
        own = [axis for axis, c in enumerate(sub) if counts[c] == 1 and c not in output]
        if own and len(sub) > 1 and len(own) < len(sub):
            sums[k] = tuple(own)
        rest.append(k)
        new_inputs.append("".join(c for axis, c in enumerate(sub) if axis not in sums.get(k, ())))
        new_shapes.append(tuple(n for axis, n in enumerate(shapes[k]) if axis not in sums.get(k, ())))
    if not scalars and not sums:
        return None
    new = ",".join(new_inputs) + "->" + output
    inner = _contraction(new, new_shapes) if rest else None
    return _ReducedFirst(tuple(scalars), sums, tuple(rest), inner, ",".join(inputs) + "->" + output)


def _hint_names(hints) -> set[str]:
    names: set[str] = set()
    for hint in hints:
        if hint[0] == "names":
            names |= {tensor for _, tensor, _ in hint[1]}
        elif hint[0] == "poly":
            names |= hint[1].tensor_names()
        else:
            names.add(hint[2])
    return names


#: NumPy's operations, for the elementwise steps of the fast path (one table for every library).
_NUMPY = ArrayOps("numpy", "numpy")


def apply_function(func: str, param: Fraction | None, x: np.ndarray) -> np.ndarray:
    """The elementwise function ``func`` (``pow`` with exponent ``param``) on an array."""
    return _NUMPY.apply(func, param, x)


@dataclass(frozen=True)
class Step:
    """One step of a :class:`StraightLine`: ``target`` is computed from earlier names.  Which
    fields are set says what it computes (:attr:`kind`):

    - ``contraction``: a sum of einsum terms (:class:`Contraction`, with its ``poly`` and size ``hints``);
    - ``operand``: ``func`` is ``solve`` (inv(``source``) ``operand``) or ``solve_transposed``
      (inv(``source``)^T ``operand``);
    - ``matrix``: ``func`` (inv, det or logdet) of the square matrix ``source``;
    - ``func == "softmax"``: exp(v) normalised over the axes ``axes[0]`` of ``source``;
    - ``axes`` otherwise: ``logsumexp`` over the axes ``axes[0]`` of ``source``, the kept axes
      put in the order ``axes[1]``;
    - else the elementwise function ``func`` of ``source`` (``pow`` with the exponent ``param``).

    The NumPy runtime (:meth:`StraightLine.run`), the generic one (:meth:`StraightLine.run_with`)
    and the code generator (:mod:`einderiv.codegen`) interpret the same steps."""

    target: str
    contraction: Contraction | None = None
    func: str | None = None
    param: Fraction | None = None
    source: str | None = None
    matrix: bool = False
    axes: tuple | None = None
    operand: str | None = None

    @property
    def kind(self) -> str:
        """contraction, solve, matrix, softmax, logsumexp or elementwise (see the class)."""
        if self.contraction is not None:
            return "contraction"
        if self.operand is not None:
            return "solve"
        if self.matrix:
            return "matrix"
        if self.func == "softmax":
            return "softmax"
        if self.axes is not None:
            return "logsumexp"
        return "elementwise"


_Step = Step


def _poly_key(poly: Poly) -> tuple:
    """``poly`` up to the names of its indices (free ones by position, summed ones canonically):
    the same key for the same array, wherever it is written."""
    positions = {i: f"#{k}" for k, i in enumerate(poly.indices)}
    terms = ((str(t.coeff), canonical_key(t.rename(positions), frozenset(positions.values()))) for t in poly.terms)
    return len(poly.indices), tuple(sorted(terms))


def _pattern(f: Tensor, free: set[str]) -> tuple:
    """A tensor factor up to the names of its summed indices: ``Phi_ni`` with n summed is
    ``("Phi", ("#0", "i"))`` wherever it occurs."""
    names: dict[str, str] = {}
    return (f.name, tuple(i if i in free else names.setdefault(i, f"#{len(names)}") for i in f.indices))


def _fresh(taken: set[str], prefix: str):
    """Index names ``prefix0``, ``prefix1``, ... not in ``taken``."""
    k = 0
    while True:
        name = f"{prefix}{k}"
        k += 1
        if name not in taken:
            yield name


def _softmax_parts(atom) -> tuple[Poly, tuple[int, ...]] | None:
    """``(v, axes)`` when ``atom`` is ``exp(v - log(sum_R exp(v)))`` (a softmax over R), else None."""
    if not (isinstance(atom, Apply) and atom.func == "exp"):
        return None
    arg = atom.arg
    shifts = [t for t in arg.terms if t.coeff == -1 and len(t.factors) == 1 and logsumexp_parts(t.factors[0])]
    if len(shifts) != 1:
        return None
    lse = shifts[0].factors[0]
    inner, summed = logsumexp_parts(lse)
    rest = Poly(tuple(t for t in arg.terms if t is not shifts[0]), arg.indices)
    reduced = [i for i in arg.indices if i not in lse.indices]
    if len(reduced) != len(summed) or set(lse.indices) - set(arg.indices):
        return None
    mapping = dict(zip(summed, reduced))
    renamed = Poly(tuple(t.rename(mapping) for t in inner.terms), tuple(mapping.get(i, i) for i in inner.indices))
    order = {i: k for k, i in enumerate(renamed.indices)}
    if set(order) != set(arg.indices):
        return None
    aligned = Poly(renamed.terms, arg.indices)
    if not equivalent(aligned, rest):
        return None
    return rest, tuple(arg.indices.index(i) for i in reduced)


def _softmax(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """exp(v) / sum over ``axes`` of exp(v), max-shifted: no overflow."""
    if not v.size:
        return np.exp(v)
    if len(axes) == v.ndim:  # normalised over every axis, the common case
        peak = v.max()
        if math.isfinite(peak):
            e = np.exp(v - peak)
            e /= e.sum()
            return e
    with np.errstate(all="ignore"):  # inf or NaN inputs: IEEE results, no warnings
        peak = np.max(v, axis=axes, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0)
        e = np.exp(v - peak)
        return e / np.sum(e, axis=axes, keepdims=True)


def _logsumexp(v: np.ndarray, axes: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray:
    """log(sum over ``axes`` of exp(v)), max-shifted; the kept axes are returned in ``order``."""
    if len(axes) == v.ndim and v.size:  # a full reduction, the common case
        peak = v.max()
        if not np.isfinite(peak):
            peak = 0.0
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(np.exp(v - peak).sum()) + peak)
    peak = np.max(v, axis=axes, keepdims=True, initial=-np.inf)
    peak = np.where(np.isfinite(peak), peak, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(v - peak), axis=axes, keepdims=True)) + peak
    out = np.squeeze(out, axis=axes)
    kept = [k for k in range(v.ndim) if k not in axes]
    return np.transpose(out, [kept.index(k) for k in order]) if out.ndim else out


def generic_softmax(v, axes: tuple[int, ...], ops: ArrayOps):
    """exp(v - max) / sum over ``axes`` of exp(v - max)."""
    if 0 in tuple(v.shape):
        return ops.xp.exp(v)
    e = ops.xp.exp(v - ops.finite_or_zero(ops.amax(v, axes)))
    return e / ops.sum(e, axes)


def generic_logsumexp(v, axes: tuple[int, ...], order: tuple[int, ...], ops: ArrayOps):
    """max(v) + log(sum over ``axes`` of exp(v - max(v))); kept axes returned in ``order``."""
    if 0 in tuple(v.shape):
        out = ops.xp.log(ops.sum(ops.xp.exp(v), axes))
    else:
        peak = ops.finite_or_zero(ops.amax(v, axes))
        out = ops.xp.log(ops.sum(ops.xp.exp(v - peak), axes)) + peak
    out = ops.squeeze(out, axes)
    kept = [k for k in range(len(v.shape)) if k not in axes]
    permutation = [kept.index(k) for k in order]
    return ops.transpose(out, permutation) if permutation != sorted(permutation) else out


class StraightLine:
    """A list of (target, step) computing named arrays in order; function calls hoisted and shared."""

    def __init__(self):
        self.steps: list[_Step] = []
        self._calls: dict[tuple, str] = {}
        self._bound: dict[tuple, list] = {}  # input signature -> the plan of every step
        #: whether an elementwise step can warn (overflow, log of 0, NaN): only then is errstate set
        self._quiet = False
        #: the size hints of the statement being added (index -> the tensor axes it names as written)
        self._written: tuple = ()
        #: whether a step reads a square matrix (inv, det, logdet, a solve): evaluation then keeps
        #: one factorisation per matrix (einderiv.linalg)
        self._matrices = False

    def _temp(self) -> str:
        return f"_t{len(self.steps)}"

    def hoist(self, poly: Poly) -> Poly:
        """``poly`` with every call replaced by a tensor computed by an earlier step."""
        terms = []
        for term in poly.terms:
            factors = [self._hoist_atom(f) if isinstance(f, Apply) else f for f in term.factors]
            factors = self._solves(factors, set(poly.indices))
            factors = [self._hoist_matrix(f) if isinstance(f, MatrixFn) else f for f in factors]
            terms.append(Term(term.coeff, tuple(factors)))
        free = set(poly.indices)
        return Poly(self._factor_shared(list(self._factor_out(terms, free)), free), poly.indices)

    def _factor_shared(self, terms: list[Term], free: set[str]) -> tuple[Term, ...]:
        """``-2 y_n Phi_ni + 2 Phi_ne theta_e Phi_ni`` -> ``Phi_ni t_n`` with
        ``t_n = -2 y_n + 2 Phi_ne theta_e``: terms that share one tensor factor (the same up to the
        names of summed indices) contract it once, with the sum of what else they hold.  Only where
        the rest of each term lives on the shared factor's indices, or on output indices that one
        factor of that rest already holds with them (``-Y_nj X_ni + Y_nk P_nj X_ni``: the combined
        array is N x K, as Y is), so the combined array is never larger than what the terms hold
        and no term costs more.  Ends: each merge leaves one term fewer."""
        while True:
            groups: dict[tuple, list[tuple[int, int]]] = {}
            for number, term in enumerate(terms):
                if len(term.factors) < 2 or not all(
                    isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors
                ):
                    continue
                seen: set[tuple] = set()
                for k, f in enumerate(term.factors):
                    if not f.indices or len(set(f.indices)) != len(f.indices):
                        continue
                    others = [g for j, g in enumerate(term.factors) if j != k]
                    if len(f.indices) < max(len(g.indices) for g in others):
                        continue  # sharing x_j in A_kj x_j + A_jk x_j would add the two matrices first
                    rest = {i for g in others for i in g.indices}
                    extra = (rest & free) - set(f.indices)
                    interface = rest & (set(f.indices) | free)
                    if extra and not any(interface <= set(g.indices) for g in others):
                        continue  # the combined array could be larger than anything the term holds
                    key = (*_pattern(f, free), tuple(sorted(extra)))
                    if key in seen:
                        continue
                    seen.add(key)
                    groups.setdefault(key, []).append((number, k))
            candidates = [(key, members) for key, members in groups.items() if len(members) > 1]
            if not candidates:
                return tuple(terms)
            key, members = max(candidates, key=lambda kv: (len(kv[1]), len(kv[0][1])))
            taken = {i for t in terms for f in t.factors for i in f.indices} | free
            shared_names = dict(zip(sorted({i for i in key[1] if i.startswith("#")}), _fresh(taken, "_f")))
            shared = Tensor(key[0], tuple(shared_names.get(i, i) for i in key[1]))
            rests = []
            for number, k in members:
                term = terms[number]
                f = term.factors[k]
                mapping = {i: shared_names[p] for i, p in zip(f.indices, key[1]) if p in shared_names}
                others = {i for g in term.factors for i in g.indices} - free - set(mapping)
                avoid = taken | set(shared.indices)
                mapping.update(dict(zip(sorted(others), _fresh(avoid, "_r"))))
                rests.append(
                    Term(term.coeff, tuple(rename_atom(g, mapping) for j, g in enumerate(term.factors) if j != k))
                )
            carried = {i for t in rests for f in t.factors for i in f.indices}
            combined_free = tuple(i for i in shared.indices if i in carried) + key[2]
            inner = self._factor_shared(rests, set(combined_free))
            name = self._temp()
            self.steps.append(_Step(name, Contraction(Poly(inner, combined_free))))
            merged = Term(Fraction(1), (shared, Tensor(name, combined_free)))
            dropped = {number for number, _ in members}
            first = min(dropped)
            terms = [merged if n == first else t for n, t in enumerate(terms) if n == first or n not in dropped]

    def _factor_out(self, terms: list[Term], free: set[str]) -> tuple[Term, ...]:
        """``-y_n X_ni + s_n X_ni`` -> ``(s_n - y_n) X_ni``: terms that share their heavy factors
        (those of the highest rank in the term) and differ only in lighter factors over indices
        the heavy ones have anyway share one contraction; the light parts are combined first by
        a cheap elementwise step (no larger than the largest light factor: never an outer
        product)."""
        groups: dict[tuple, list[Term]] = {}
        order: list[tuple] = []
        for term in terms:
            key: tuple = (id(term),)
            tensors = [f for f in term.factors if isinstance(f, Tensor)]
            reciprocal = any(is_reciprocal(f) for f in tensors)  # 1/n is sized by its own term's factors
            if len(tensors) == len(term.factors) and len(tensors) > 1 and not reciprocal:
                top = max(len(f.indices) for f in tensors)
                heavy = tuple(sorted((f for f in tensors if len(f.indices) == top), key=repr))
                light = [f for f in tensors if len(f.indices) < top]
                heavy_indices = {i for f in heavy for i in f.indices}
                part = frozenset(i for f in light for i in f.indices)
                # light factors over different indices (s_n v_i) would combine as an outer
                # product, which undoes the matrix-vector products X_ni v_i each term does
                if light and part <= heavy_indices and len(part) <= max(len(f.indices) for f in light):
                    key = (heavy, part)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(term)
        singles = [groups[key][0] for key in order if len(groups[key]) == 1]
        merged = self._factor_one(singles, free) if len(singles) > 1 else {}
        out = []
        for key in order:
            group = groups[key]
            if len(group) == 1:
                if id(group[0]) in merged:
                    replacement = merged.pop(id(group[0]))
                    if replacement is not None:
                        out.append(replacement)
                    continue
                out.append(group[0])
                continue
            heavy, part = key
            free = tuple(sorted(part))
            combined = Poly(tuple(Term(t.coeff, tuple(f for f in t.factors if f not in heavy)) for t in group), free)
            name = self._temp()
            self.steps.append(_Step(name, Contraction(combined)))
            out.append(Term(Fraction(1), (Tensor(name, free), *heavy)))
        return tuple(out)

    def _factor_one(self, terms: list[Term], free: set[str]) -> dict[int, Term | None]:
        """``-y_i x_l + t_i x_l`` -> ``(t_i - y_i) x_l``: terms equal but for one tensor factor over
        the same indices share the rest, up to the names of summed indices (``inv(S)_ie r_ne +
        r_nj inv(S)_ji`` is ``(inv(S)_ie + inv(S)_ei) r_ne``: r summed over n once).  Returns, by
        term id, the merged term for the first of each group and None for the others."""
        candidates: dict[tuple, list[tuple[Term, Tensor]]] = {}
        for term in terms:
            if len(term.factors) < 2 or not all(isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors):
                continue  # (the 1/n of a mean is sized by the other factors of its own term)
            seen: set[tuple] = set()
            for k, f in enumerate(term.factors):
                others = [g for j, g in enumerate(term.factors) if j != k]
                if len(f.indices) > max(len(g.indices) for g in others):
                    continue  # (A_kj + A_jk) x_j would add two n x n matrices to save a matrix-vector product
                mapping: dict[str, str] = {}
                for g in [*sorted(others, key=lambda g: (g.name, len(g.indices))), f]:
                    for i in g.indices:
                        if i not in free and i not in mapping:
                            mapping[i] = f"_c{len(mapping)}"
                rest = tuple(sorted((rename_atom(g, mapping) for g in others), key=repr))
                varying = rename_atom(f, mapping)
                key = (rest, tuple(sorted(set(varying.indices))))
                if key not in seen:  # x_i x_i varies either factor: one candidate, not two
                    seen.add(key)
                    back = {new: old for old, new in mapping.items()}
                    candidates.setdefault(key, []).append((term, varying, back))
        used: set[int] = set()
        out: dict[int, Term | None] = {}
        for (rest, part), members in sorted(candidates.items(), key=lambda kv: -len(kv[1])):
            members = [m for m in members if id(m[0]) not in used]
            if len(members) < 2:
                continue
            back = members[0][2]  # the first term's own index names, for messages that name them
            named = tuple(back.get(i, i) for i in part)
            combined = Poly(tuple(Term(t.coeff, (rename_atom(f, back),)) for t, f, _ in members), named)
            name = self._temp()
            self.steps.append(_Step(name, Contraction(combined)))
            out[id(members[0][0])] = Term(Fraction(1), (Tensor(name, named), *(rename_atom(g, back) for g in rest)))
            for t, _, _ in members:
                used.add(id(t))
                out.setdefault(id(t), None)
        return out

    def _solves(self, factors: list, free: set[str]) -> list:
        """``inv(M)_ij b_j`` -> ``solve(M, b)_i`` and ``a_i inv(M)_ij`` -> ``solve(M^T, a)_j``
        where j (or i) is summed and used by that vector alone: a solve is cheaper and more
        accurate than forming the inverse."""
        changed = True
        while changed:
            changed = False
            counts: dict[str, int] = {}
            for f in factors:
                for i in f.indices:
                    counts[i] = counts.get(i, 0) + 1
            for pos, f in enumerate(factors):
                if not (isinstance(f, MatrixFn) and f.func == "inv" and f.indices[0] != f.indices[1]):
                    continue
                for side, (kept, summed) in enumerate((f.indices, f.indices[::-1])):
                    if summed in free or counts.get(summed) != 2:
                        continue
                    partner = next(
                        (
                            k
                            for k, g in enumerate(factors)
                            if k != pos and isinstance(g, Tensor) and g.indices == (summed,) and not is_reciprocal(g)
                        ),
                        None,
                    )
                    if partner is None:
                        continue
                    vector = factors[partner].name
                    key = ("solve", f.matrix, vector, side)
                    name = self._calls.get(key)
                    if name is None:
                        name = self._temp()
                        func = "solve" if side == 0 else "solve_transposed"
                        self.steps.append(_Step(name, func=func, source=f.matrix, matrix=True, operand=vector))
                        self._matrices = True
                        self._calls[key] = name
                    factors = [g for k, g in enumerate(factors) if k not in (pos, partner)] + [Tensor(name, (kept,))]
                    changed = True
                    break
                if changed:
                    break
        return factors

    def _hoist_matrix(self, atom: MatrixFn) -> Tensor:
        """inv, det and logdet of a named matrix: each computed once per evaluation."""
        key = ("matrix", atom.func, atom.matrix)
        name = self._calls.get(key)
        if name is None:
            name = self._temp()
            self.steps.append(_Step(name, func=atom.func, source=atom.matrix, matrix=True))
            self._matrices = True
            self._calls[key] = name
        return Tensor(name, atom.indices)

    def _hoist_atom(self, atom: Apply, target: str | None = None) -> Tensor:
        key = (atom.func, str(atom.param), *_poly_key(atom.arg))
        name = self._calls.get(key)
        if name is None and logsumexp_parts(atom) is not None:
            name = self._hoist_logsumexp(atom, key, target)
        if name is None and _softmax_parts(atom) is not None:
            name = self._hoist_softmax(atom, key, target)
        if name is None:
            source = self._source(atom.arg)
            name = target or self._temp()
            self.steps.append(_Step(name, func=atom.func, param=atom.param, source=source))
            self._quiet = True
            self._calls[key] = name
        return Tensor(name, atom.indices)

    def _source(self, poly: Poly) -> str:
        """The name of an array holding ``poly``: an existing one when it is just a tensor with
        its axes in order, else a new contraction step."""
        hoisted = self.hoist(poly)
        if len(hoisted.terms) == 1 and hoisted.terms[0].coeff == 1 and len(hoisted.terms[0].factors) == 1:
            only = hoisted.terms[0].factors[0]
            if isinstance(only, Tensor) and only.indices == poly.indices and not is_reciprocal(only):
                return only.name
        key = ("source", *_poly_key(hoisted))
        if key in self._calls:  # the same contraction as another call's argument: computed once
            return self._calls[key]
        name = self._temp()
        self._calls[key] = name
        carried = {i for t in hoisted.terms for f in t.factors if isinstance(f, (Tensor, MatrixFn)) for i in f.indices}
        # an argument whose free index only a delta carries (tanh(s delta_ij)) is sized by the
        # statement as written, as the statement's own contraction is
        counting = any(is_count(i) for i in hoisted.all_index_names())  # delta_{f#1,f#1}: sized as written
        hints = self._written if set(hoisted.indices) - carried or counting else ()
        self.steps.append(_Step(name, Contraction(hoisted, hints)))
        return name

    def _hoist_softmax(self, atom: Apply, key, target: str | None) -> str:
        """exp(v - log(sum_R exp(v))) in one step: exp(v - max) normalised over R."""
        v, axes = _softmax_parts(atom)
        source = self._source(v)
        name = target or self._temp()
        self.steps.append(_Step(name, func="softmax", source=source, axes=(axes, ())))
        self._calls[key] = name
        return name

    def _hoist_logsumexp(self, atom: Apply, key, target: str | None) -> str:
        """log(sum_R exp(v)) as max(v) + log(sum_R exp(v - max(v))): no overflow."""
        v, summed = logsumexp_parts(atom)
        source = self._source(v)
        axes = tuple(k for k, i in enumerate(v.indices) if i in summed)
        order = tuple(v.indices.index(i) for i in atom.indices)
        name = target or self._temp()
        self.steps.append(_Step(name, func="logsumexp", source=source, axes=(axes, order)))
        self._calls[key] = name
        return name

    def add(self, target: str, poly: Poly, hints=()) -> None:
        """Compute ``target = poly``.  A statement that is one call (``s_n = sigmoid(z_n)``) is
        that call's step, so later uses of the same call reuse ``target``."""
        self._written = tuple(h for h in hints if h[0] == "names")
        if len(poly.terms) == 1 and poly.terms[0].coeff == 1 and len(poly.terms[0].factors) == 1:
            atom = poly.terms[0].factors[0]
            if isinstance(atom, Apply) and atom.indices == poly.indices:
                if self._hoist_atom(atom, target).name == target:
                    return
        self.steps.append(_Step(target, Contraction(self.hoist(poly), hints)))

    def run(self, values: dict[str, np.ndarray], signature: tuple | None = None) -> dict[str, np.ndarray]:
        """Compute every step.  With a ``signature`` of the inputs' shapes and dtypes, the plans
        of all contractions are looked up once for the whole line rather than step by step."""
        run = self._run if not self._matrices else functools.partial(linalg.one_evaluation, self._run)
        if self._quiet:  # IEEE results (inf, nan) propagate as values, without warnings
            with np.errstate(all="ignore"):
                return run(values, signature)
        return run(values, signature)

    def run_with(self, values: dict[str, object], ops: ArrayOps, like) -> dict[str, object]:
        """Compute every step with another array library's operations (``like``: an array of
        the result dtype and device, for constants)."""
        for step in self.steps:
            values[step.target] = self._generic_step(step, values, ops, like)
        return values

    @staticmethod
    def _generic_step(step: _Step, values: dict[str, object], ops: ArrayOps, like):
        if step.contraction is not None:
            contraction = step.contraction
            return contraction.execute_generic(contraction.generic_plan(values, ops), values, ops, like)
        if step.operand is not None:
            return generic_solve(step.func, step.source, values[step.source], values[step.operand], ops)
        if step.matrix:
            return generic_matrix_function(step.func, step.source, values[step.source], ops)
        if step.func == "softmax":
            return generic_softmax(values[step.source], step.axes[0], ops)
        if step.axes is not None:
            return generic_logsumexp(values[step.source], *step.axes, ops)
        return ops.apply(step.func, step.param, values[step.source])

    def _run(self, values: dict[str, np.ndarray], signature: tuple | None) -> dict[str, np.ndarray]:
        program = self._bound.get(signature) if signature is not None else None
        if program is None:
            factored = linalg.shared_matrices(self.steps)  # each read through one factorisation per evaluation
            program = [self._instruction(step, values, factored) for step in self.steps]
            if signature is not None:
                self._bound[signature] = program
            return values  # the instructions above computed every step while being made
        for instruction in program:
            instruction(values)
        return values

    def _instruction(self, step: _Step, values: dict[str, np.ndarray], factored: frozenset[str] = frozenset()):
        """One step lowered to a closure over its plan for these shapes (and run once now):
        the straight-line program a later call with the same shapes runs without any lookup."""
        target = step.target
        if step.contraction is not None:
            contraction = step.contraction
            plan = contraction.plan_for(values)
            steps, out_shape, _ = plan
            kind, coeff, function, names, bshape, _ = steps[0] if len(steps) == 1 else (None,) * 6
            if kind == "dense" and coeff is None and function is not None and bshape == out_shape:
                if len(names) == 1:
                    (a,) = names

                    def instruction(v, f=function, a=a, t=target):
                        v[t] = f(v[a])

                elif len(names) == 2:
                    a, b = names

                    def instruction(v, f=function, a=a, b=b, t=target):
                        v[t] = f(v[a], v[b])

                else:

                    def instruction(v, f=function, names=names, t=target):
                        v[t] = f(*[v[n] for n in names])

                instruction(values)
                return instruction

            def instruction(v, c=contraction, plan=plan, t=target):
                v[t] = c.execute(plan, v)

        elif step.operand is not None and step.source in factored:

            def instruction(v, s=step, t=target):
                v[t] = linalg.shared_solve(v, s.func, s.source, s.operand)

        elif step.operand is not None:

            def instruction(v, s=step, t=target):
                v[t] = solve(s.func, s.source, v[s.source], v[s.operand])

        elif step.matrix and step.source in factored:

            def instruction(v, s=step, t=target):
                v[t] = linalg.shared_function(v, s.func, s.source)

        elif step.matrix:

            def instruction(v, s=step, t=target):
                v[t] = matrix_function(s.func, s.source, v[s.source])

        elif step.func == "softmax":

            def instruction(v, a=step.source, axes=step.axes[0], t=target):
                v[t] = _softmax(v[a], axes)

        elif step.axes is not None:

            def instruction(v, a=step.source, axes=step.axes, t=target):
                v[t] = _logsumexp(v[a], *axes)

        else:

            def instruction(v, a=step.source, func=step.func, param=step.param, t=target):
                v[t] = apply_function(func, param, v[a])

        instruction(values)
        return instruction


__all__ = [
    "Contraction",
    "ResolvedTerm",
    "Step",
    "StraightLine",
    "apply_function",
    "as_array",
    "bind_sizes",
    "resolve_deltas",
]
