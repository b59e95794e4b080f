"""Contractions: ``target = Σ coefficient · einsum(subscripts, operands)``, planned once per shape
signature and evaluated with NumPy (diagonal writes into strided views, hand-picked BLAS calls,
opt_einsum's planned expressions) or, generically, with another array library's operations.

Deltas between free indices are diagonal writes, ``delta_aa`` over a summed a is a size in the
coefficient (:func:`resolve_deltas`); a Gram-like product of one array is assembled from its
upper triangle (:class:`SymmetricGram`).  No Python loop runs over tensor elements.
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
from opt_einsum.contract import ContractExpression

from .backends import ArrayOps
from .dimensions import bind_sizes, fixed_sizes, hint_names, sizes_by_name
from .emit import DELTA_OPERAND, EinsumTerm, emit
from .errors import EvaluationError
from .ir import to_float
from .normal import RECIPROCAL, Poly

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
        if sizes[index] == 0 and power < 0:  # the 1/n of a mean over nothing: inf, as NumPy's 0/0 is nan
            coeff *= math.inf
        else:
            coeff *= float(sizes[index]) ** power
    return coeff, list(resolved.operands), list(resolved.inputs), resolved.find


class Contraction:
    """``target = sum of einsum terms`` over named arrays, planned once per shape signature."""

    def __init__(self, poly: Poly, hints=()):
        self.poly = poly
        self.hints = hints
        self.terms: tuple[EinsumTerm, ...] = emit(poly)
        #: the arrays whose values the terms read; ``names`` adds those read for their sizes only
        self.operand_names = sorted({n for t in self.terms for n in t.operands if n not in _SIZED})
        self.names = sorted(set(self.operand_names) | hint_names(hints))
        self._plans: dict[tuple, tuple] = {}
        self._whole_first = bool(self.terms) and len(self.terms[0].output) == len(poly.indices)
        self._writers: dict[int, object] = {}  # id of a planned contraction -> its writer (or None)

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
                if by_name.get(index) is None:  # as written: tanh(A_ij - A_ij) is tanh(0), still A's shape
                    raise EvaluationError(f"the size of output index {index!r} cannot be inferred from the inputs")
                out_sizes[index] = (by_name[index], "the statement as written")
        return out_sizes, term_sizes, tuple(out_sizes[i][0] for i in self.poly.indices)

    def _plan(self, values: Mapping[str, np.ndarray]):
        out_sizes, term_sizes, out_shape = self._sizes(values)
        # the operands' dtype; the arrays read for their sizes only count where the terms read no
        # values (a count or a delta): the Hessian of a float32 logistic loss is float32 whatever y is
        arrays = [values[n] for n in self.operand_names or self.names]
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
            contraction = contraction_for(term.subscripts, operand_shapes)
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
            contraction = contraction_for(subscripts, shapes)
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

    def whole_first(self) -> bool:
        """Whether the first term has every axis of the result (``C_ij = y_j z_j + x_i y_j``: no,
        though its broadcast shape is the result's where i has size 1)."""
        return self._whole_first

    def _writer(self, function, count: int):
        """:func:`writer` of one of this contraction's planned functions, made once."""
        key = id(function)
        if key not in self._writers:
            self._writers[key] = (writer(function, count), function)  # the function kept: its id stays its own
        return self._writers[key][0]

    def _first_into(self, first, out_shape, dtype, values, out):
        """The first term computed into ``out`` (a new array where None), where it is a dense
        product of the result's shape and dtype that can write into an array (the caller checks
        that it has every axis of the result); else None.  Each evaluation takes this path or not
        by the plan alone, so its rounding never changes from one call to the next."""
        kind, coeff, contraction, names, bshape, scale_at = first
        if kind != "dense" or contraction is None or bshape != out_shape:
            return None
        into = self._writer(contraction, len(names))
        if into is None:
            return None
        ops = [values[n] for n in names]
        if np.result_type(*ops) != dtype:
            return None
        if coeff is not None and scale_at is not None:
            ops[scale_at] = ops[scale_at] * coeff
        value = into(*ops, out=new_array(out_shape, dtype) if out is None else out)
        if coeff is not None and scale_at is None:
            np.multiply(value, coeff, out=value)
        return value

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

    def execute(
        self,
        plan,
        values: Mapping[str, np.ndarray],
        donated: frozenset[str] = frozenset(),
        out=None,
        write: bool = False,
    ) -> np.ndarray:
        """Evaluate with a plan from :meth:`plan_for`.  ``donated`` names arrays no later step
        reads, which this one may write its result into (each of this contraction's terms that
        reads one alone: ``E = Y - P`` computes ``P = Y - P`` in P).  With ``write`` (a result
        large enough to be kept between calls, decided once per plan by the caller), the first
        term that can is computed into an array of the result's own: ``out`` where given (an array
        of the result's shape and dtype from the call before, which nothing else holds), else a
        new one, so that every call has the same rounding."""
        steps, out_shape, dtype = plan
        if out is not None and (out.shape != out_shape or out.dtype != dtype):
            out = None
        asked, write = write, write and self._whole_first
        if len(steps) == 1:
            kind, coeff, contraction, names, bshape, view = steps[0]
            if kind == "dense" and coeff is None and contraction is not None and bshape == out_shape:
                # one plain contraction: the common intermediate, with no bookkeeping
                ops = [values[n] for n in names]
                into = self._writer(contraction, len(ops)) if write else None
                if into is not None:
                    return into(*ops, out=new_array(out_shape, dtype) if out is None else out)
                value = contraction(*ops)
                if own_array(value, ops):
                    return value
                return np.array(value, dtype=dtype)
        result = self._first_into(steps[0], out_shape, dtype, values, out) if steps and write else None
        owned = result is not None  # whether ``result`` is a fresh array this call may write into
        if owned:
            steps, out = steps[1:], None  # (``out``, where given, now holds the result)
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
                # a later term of the result's shape (Y_mn - U_mr V_nr) into the array given, as the
                # first would be: no new array of the result's size each call
                into = (
                    self._writer(contraction, len(ops))
                    # (no axis of size 1: then a term of the result's shape holds every axis of it)
                    if asked
                    and out is not None
                    and bshape == out_shape
                    and 1 not in out_shape
                    and (coeff in (None, -1.0) or scale_at is not None)
                    else None
                )
                if into is not None and np.result_type(*ops) == dtype and result is not None:
                    if coeff not in (None, -1.0):  # the coefficient scales the smallest operand
                        ops[scale_at] = ops[scale_at] * coeff
                    value, fresh, out = into(*ops, out=out), True, None
                    subtract = coeff == -1.0
                elif coeff == -1.0 and result is not None:  # a - b: no scaled copy of b
                    value, subtract = contraction(*ops), True
                    fresh = own_array(value, ops)
                elif scale_at is not None:
                    ops[scale_at] = ops[scale_at] * coeff
                    value, fresh = contraction(*ops), True
                else:
                    value = contraction(*ops)
                    fresh = own_array(value, ops)  # a result of its own, not an operand or a view of one
                    if coeff is not None:
                        value = np.multiply(value, coeff, out=value) if fresh else value * coeff
                        fresh = True
            if not fresh and donated and len(names) == 1 and names[0] in donated and value is values[names[0]]:
                fresh = type(value) is np.ndarray and value.flags.writeable
            if value.shape != bshape:
                value = np.reshape(value, bshape)
            if result is None:
                result, owned = value, fresh and type(value) is np.ndarray and value.dtype == dtype
            elif owned and result.shape == out_shape:
                if subtract:
                    result -= value
                else:
                    result += value
            elif fresh and type(value) is np.ndarray and value.shape == out_shape and value.dtype == dtype:
                # the term's own array takes the sum: no new array of the result's size
                (np.subtract if subtract else np.add)(result, value, out=value)
                result, owned = value, True
            else:
                result = _sum_into(result, value, subtract, out_shape, dtype, out)
                # owned only at the result's dtype: A_ij + A_ji of a float32 A is float32, and a
                # float64 x_i x_j subtracted into it in place was rounded to float32 (a review's find)
                owned = result.dtype == dtype
                out = None  # (given at most once)
        if result is None:
            return np.zeros(out_shape, dtype=dtype)
        if result.shape != out_shape or not owned:
            result = np.array(np.broadcast_to(result, out_shape), dtype=dtype)
        return result


def _sum_into(result, value, subtract: bool, out_shape, dtype, out) -> np.ndarray:
    """``result -/+ value`` where neither is an array of the result's own (``X_id - Z_jd``: both
    broadcast), written into ``out`` (the array of the call before, else a new C-ordered one)
    rather than into whatever layout NumPy derives from the operands' strides (a transposed view
    made it a strided 500 x 10 x 400 array, which every contraction after it read across the
    grain); an operand much smaller than the result that is not C-ordered is copied first, so
    the broadcast loop reads it contiguously."""
    if np.broadcast_shapes(np.shape(result), np.shape(value)) != tuple(out_shape) or (
        np.result_type(result, value) != dtype
    ):
        return result - value if subtract else result + value
    if out is None or any(np.may_share_memory(out, x) for x in (result, value)):
        out = new_array(out_shape, dtype)
    operands = []
    for x in (result, value):
        if type(x) is np.ndarray and x.ndim and not x.flags.c_contiguous and 8 * x.size <= out.size:
            x = np.ascontiguousarray(x)
        operands.append(x)
    operation = np.subtract if subtract else np.add
    first, second = operands
    if _broadcast_inner(first, out) and not _broadcast_inner(second, out):
        # X_id - Z_jd as X[:, :, None] - Z^T[None]: NumPy's loop over the broadcast operand runs
        # once per (i, d), 400 numbers each; copied into ``out`` first (a fill, cheap), the
        # subtraction of Z^T runs over (d, j) as one stretch per i: about 10-15% less time at
        # 500 x 10 x 400.  The same single rounding per element: out = X, then out = out - Z.
        np.copyto(out, first)
        return operation(out, second, out=out)
    return operation(first, second, out=out)


def _broadcast_inner(x, out) -> bool:
    """Whether ``x``, broadcast to ``out``'s shape, repeats along the last axis of a large result."""
    shape = np.shape(x)
    return out.ndim >= 2 and out.shape[-1] > 1 and len(shape) == out.ndim and shape[-1] == 1 and out.size >= 1 << 16


def own_array(value, operands) -> bool:
    """Whether ``value`` is an array of its own that this evaluation may write into: not one of
    ``operands`` (a step's operands, or every other value of the program) or a view of one.  A
    product opt_einsum returns as a transposed view of the BLAS result counts (its memory is no
    operand's), so ``E = U V^T - Y`` subtracts in place rather than allocating a second M x N array."""
    return (
        type(value) is np.ndarray
        and value.flags.writeable
        and not any(np.may_share_memory(value, op) for op in operands)
    )


def _same(array):
    return array


def new_array(shape, dtype) -> np.ndarray:
    """``numpy.empty``, with a size beyond what NumPy can address a MemoryError, as a product of
    that size raises (NumPy says ValueError: "array is too big")."""
    try:
        return np.empty(shape, dtype)
    except ValueError as err:
        raise MemoryError(f"an array of shape {tuple(shape)}: {err}") from None


def writer(function, count: int):
    """``function`` (a planned contraction of ``count`` operands) as ``(*operands, out) -> out``
    where it can write its result into an array given, else None: NumPy's matmul and outer product
    (BLAS writes into ``out``), a broadcast product, einsum, and opt_einsum's plans whose last
    pairwise step is an einsum (a last BLAS step would copy into ``out``: nothing saved)."""
    direct = (
        function is np.matmul
        or function is np.multiply.outer
        or isinstance(function, (_BroadcastProduct, _MatrixProduct, _BatchedProduct))
        or (isinstance(function, (_ReducedFirst, _Pairwise)) and function.writes())
    )
    if direct or (isinstance(function, functools.partial) and function.func is np.einsum):
        return lambda *ops, out, f=function: f(*ops, out=out)
    if isinstance(function, ContractExpression):
        if count == 2 and _pairwise(function.contraction) is np.matmul:
            return lambda *ops, out: np.matmul(*ops, out=out)
        if function.contraction_list and not function.contraction_list[-1][-1]:  # the last step: einsum
            return lambda *ops, out, f=function: f(*ops, out=out)
    return None


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
    product = _matrix_product(a, b, out)
    if product is not None:
        return product
    if len(a) == 1 and len(b) == 1 and a != b:
        if out == a + b:
            return np.multiply.outer
        if out == b + a:
            return lambda x, y: np.multiply.outer(y, x)
    return None


class _MatrixProduct:
    """Any product of two matrices over one shared index (``U_mr V_nr -> mn`` is U V^T,
    ``E_nm X_nl -> lm`` is X^T E): BLAS's matmul of (transposed) views, the operands taken in the
    order of the result's axes, so the result is C-ordered and can be written into an array given.
    (opt_einsum's tensordot returns U V^T as the transpose of V U^T, an F-ordered array that every
    elementwise step after it then reads across the grain of its C-ordered operands.)"""

    def __init__(self, subscripts: str, swap: bool, left: bool, right: bool):
        self.subscripts, self.swap, self.left, self.right = subscripts, swap, left, right

    def __call__(self, x, z, out=None):
        if self.swap:
            x, z = z, x
        x = x if self.left else x.T
        z = z if self.right else z.T
        return np.matmul(x, z) if out is None else np.matmul(x, z, out=out)

    def __repr__(self) -> str:
        return f"<contraction {self.subscripts}: matmul in the result's order>"


def _matrix_product(a: str, b: str, out: str) -> _MatrixProduct | None:
    """A :class:`_MatrixProduct` for two matrices ``a``, ``b`` sharing one index summed over, the
    result ``out`` their other two indices in either order; else None."""
    shared = set(a) & set(b)
    if not (len(a) == 2 and len(b) == 2 and len(shared) == 1 and len(out) == 2):
        return None
    if len(set(a)) != 2 or len(set(b)) != 2 or sorted(out) != sorted(set(a + b) - shared):
        return None
    (y,) = shared
    swap = out[0] not in a  # the result's rows are b's: b is the left factor
    first, second = (b, a) if swap else (a, b)
    return _MatrixProduct(f"{a},{b}->{out}", swap, first[1] == y, second[0] == y)


class _BatchedProduct:
    """A product of two operands over shared batch indices (in both operands and the result)
    and summed ones (``klj,kj->kl``, ``bij,bjk->bik``): BLAS's matmul of stacked matrices, each
    operand a view with its axes grouped (batch, kept, summed), the result C-ordered in the
    result's order.  NumPy's einsum runs these in its own loops (and opt_einsum hands them to
    it): in the RBF kernel's gradient ``klj,kj->kl`` at 500 x 10 x 400 took 0.36 ms against
    0.23 ms, ``bij,bjk->bik`` at 8 x 256 x 64 5.6 ms against 0.9 ms."""

    def __init__(self, subscripts: str, x_axes, x_shape, z_axes, z_shape, swap: bool, shape):
        self.subscripts, self.swap, self.shape = subscripts, swap, shape
        self.x_axes, self.x_shape, self.z_axes, self.z_shape = x_axes, x_shape, z_axes, z_shape

    def __call__(self, x, z, out=None):
        if self.swap:
            x, z = z, x
        x = _blas_ready(x.transpose(self.x_axes).reshape(self.x_shape))
        z = _blas_ready(z.transpose(self.z_axes).reshape(self.z_shape))
        if out is None:
            return np.matmul(x, z).reshape(self.shape)
        if out.flags.c_contiguous:  # (a reshape of any other layout is a copy)
            np.matmul(x, z, out=out.reshape(x.shape[0], x.shape[1], z.shape[2]))
        else:
            out[...] = np.matmul(x, z).reshape(self.shape)
        return out

    def __repr__(self) -> str:
        return f"<contraction {self.subscripts}: batched matmul>"


def _blas_ready(stack: np.ndarray) -> np.ndarray:
    """``stack`` (batch, rows, columns), or a C-ordered copy where its matrices have unit stride
    along neither axis: NumPy's matmul hands those to a loop of its own, not BLAS (the Gaussian
    mixture's ``in,nji->ij``, the batch axis innermost in an N x D x K array, took 3.6 ms where
    the copy and BLAS take 1.0 and einsum 1.25)."""
    item = stack.itemsize
    (rows, columns), (down, across) = stack.shape[-2:], stack.strides[-2:]
    if (across == item or columns == 1) and (down % item == 0 and down >= columns * item or rows == 1):
        return stack
    if (down == item or rows == 1) and (across % item == 0 and across >= rows * item or columns == 1):
        return stack
    return np.ascontiguousarray(stack)


#: the least work per batch (kept x kept x summed elements) and summed length at which a batched
#: product goes to matmul: below, BLAS's call per matrix costs more than einsum's loop
#: (``njk,nk->nj`` at 100000 x 2 x 2: 1.9 ms against 0.8 ms)
BATCHED_WORK, BATCHED_SUMMED = 256, 8


def _batched_product(a: str, b: str, out: str, shapes) -> _BatchedProduct | None:
    """A :class:`_BatchedProduct` where ``out`` is the batch indices, then the kept indices of
    one operand, then those of the other, and each index of an operand is in the result or in
    the other operand; else None."""
    if len(set(a)) != len(a) or len(set(b)) != len(b) or len(set(out)) != len(out):
        return None
    if not set(a) | set(b) <= set(out) | (set(a) & set(b)):
        return None
    sizes = {c: n for sub, shape in zip((a, b), shapes) for c, n in zip(sub, shape)}
    batch = [c for c in out if c in a and c in b]
    summed = [c for c in a if c in b and c not in out]
    if not batch or not summed or out[: len(batch)] != "".join(batch):
        return None
    for swap, (first, second) in ((False, (a, b)), (True, (b, a))):
        kept = [c for c in out[len(batch) :] if c in first]
        other = [c for c in out[len(batch) :] if c in second]
        if out[len(batch) :] != "".join(kept + other) or not (kept or other):
            continue
        rows, columns, inner = (math.prod(sizes[c] for c in group) for group in (kept, other, summed))
        if rows * columns * inner < BATCHED_WORK or inner < BATCHED_SUMMED:
            return None
        stacked = math.prod(sizes[c] for c in batch)
        return _BatchedProduct(
            f"{a},{b}->{out}",
            [first.index(c) for c in batch + kept + summed],
            (stacked, rows, inner),
            [second.index(c) for c in batch + summed + other],
            (stacked, inner, columns),
            swap,
            tuple(sizes[c] for c in out),
        )
    return None


#: Below this many elements in every operand, a contraction of one or two operands runs through
#: numpy.einsum directly: opt_einsum's planning buys nothing there and its call costs ~10 us.
SMALL = 4096


#: A Gram-like product ``w_n A_ni A_nj -> ij`` is assembled from its upper triangle of blocks
#: when its result has at least this many rows and the product this many multiply-adds.
GRAM_MIN_SIZE = 256
GRAM_MIN_WORK = 2**24


class SymmetricGram:
    """``w_n A_ni A_nj -> ij`` (the weights optional, n any number of indices): symmetric in i
    and j when both matrices are one array, so only the upper triangle is computed and mirrored:
    by BLAS's syrk for real floats and finite weights (:func:`_gram_by_syrk`), else by blocks on
    and above the diagonal (B = w A once, then B_I^T A_J for J >= I): (k + 1) / 2k of the work
    for k blocks.  Called with two different arrays it is the plain contraction."""

    def __init__(self, plain, weighted: bool, blocks: int):
        self.plain, self.weighted, self.blocks = plain, weighted, blocks
        #: arrays of A's shape that earlier calls scaled A into, to scale into again: 5000 x 1000
        #: is 40 MB, over glibc's largest mmap threshold, so a fresh one is mapped and faulted in
        #: at every call (2.1 against 4.7 ms to scale into it; ``list.pop`` is atomic, so two
        #: threads never share one)
        self._spares: list[np.ndarray] = []

    def __call__(self, *operands):
        left, right = operands[-2], operands[-1]
        if left is not right or left.ndim != 2:
            return self.plain(*operands)
        try:
            scratch = self._spares.pop()
        except IndexError:
            scratch = None
        if scratch is not None and (scratch.shape != left.shape or scratch.dtype != left.dtype):
            scratch = None
        by_syrk = _gram_by_syrk(left, operands[0] if self.weighted else None, scratch)
        if by_syrk is not None:
            result, used = by_syrk
            if used is not None and len(self._spares) < 2:
                self._spares.append(used)
            return result
        weighted = left * operands[0][:, None] if self.weighted else left
        size = left.shape[1]
        cuts = np.linspace(0, size, self.blocks + 1).astype(int)
        out = np.empty((size, size), dtype=np.result_type(weighted, right))
        for a, b in zip(cuts[:-1], cuts[1:]):
            out[a:b, a:] = weighted[:, a:b].T @ right[:, a:]
            out[b:, a:b] = out[a:b, b:].T  # the mirror of the blocks right of the diagonal block
        return out

    def drop(self) -> None:
        """Let go of the scaled arrays kept for the next call."""
        self._spares.clear()

    def __repr__(self) -> str:
        return f"<symmetric Gram product by syrk (else {self.blocks} blocks), upper triangle mirrored>"


def _gram_by_syrk(A: np.ndarray, w: np.ndarray | None, scratch: np.ndarray | None = None):
    """``(A^T diag(w) A, the array A was scaled into or None)``: ``P^T P - Q^T Q``, P the rows of
    non-negative weight scaled by sqrt(w), Q those of negative weight by sqrt(-w): NumPy's matmul
    of a matrix with its own transpose is BLAS's symmetric rank-k update (syrk: half a general
    product's work, the triangle mirrored), in NumPy's own BLAS (a second library's thread pool
    would contend with it).  For real float32/float64 arrays and finite weights; else None (the
    blocks do it).  ``scratch``, an array of A's shape and dtype, is scaled into when given."""
    if A.dtype not in (np.float32, np.float64) or (w is not None and w.dtype != A.dtype):
        return None
    if w is None:
        return A.T @ A, None
    if not np.isfinite(w).all():
        return None  # inf and NaN weights: the plain product's infinities and NaNs, as einsum gives
    negative = w < 0  # (a zero weight keeps a NaN of its row, as 0 * NaN does)
    if not negative.any():
        scaled = np.multiply(A, np.sqrt(w)[:, None], out=scratch)
        return scaled.T @ scaled, scaled
    positive = A[~negative] * np.sqrt(w[~negative])[:, None]
    flipped = A[negative] * np.sqrt(-w[negative])[:, None]
    out = positive.T @ positive
    out -= flipped.T @ flipped
    return out, None


def _gram(subscripts: str, shapes):
    """A :class:`SymmetricGram` for ``n,ni,nj->ij`` or ``ni,nj->ij`` where it pays, else None."""
    inputs, output = subscripts.split("->")
    parts = inputs.split(",")
    if len(output) != 2 or len(parts) not in (2, 3) or output[0] == output[1]:
        return None
    i, j = output
    *weights, a, b = parts
    if len(a) == 2 and len(b) == 2 and (a[1], b[1]) == (j, i):
        a, b = b, a  # n,nj,ni->ij: the same product where the two arrays are one (it is symmetric)
    if len(a) != 2 or len(b) != 2 or a[1] != i or b[1] != j or a[0] != b[0] or a[0] in output:
        return None  # (A_ii A_ij -> ij is a row scaling, not a Gram product)
    if weights and weights[0] != a[0]:
        return None
    rows, size = shapes[-2]
    if size < GRAM_MIN_SIZE or tuple(shapes[-1]) != (rows, size) or rows * size * size < GRAM_MIN_WORK:
        return None
    plain = opt_einsum.contract_expression(subscripts, *shapes)
    return SymmetricGram(plain, bool(weights), blocks=max(3, min(8, size // 128)))


class _WeightedColumnSums:
    """``w_n A_ni B_ni -> i`` (the weights optional): the diagonal of a Gram product,
    ``hessian_diag`` of a GLM.  opt_einsum would form w_n A_ni first and run einsum's loop on
    the pair; instead, for arrays of up to a million elements, the elementwise product then one
    BLAS matrix-vector product with the weights (or column sums); above that, NumPy's einsum in
    one pass, which reads A and B once and writes nothing of their size (5000 x 1000: 3.8 ms
    against 11 ms for the product and the matrix-vector product, 14 ms for opt_einsum)."""

    def __init__(self, weighted: bool, direct: bool):
        self.weighted = weighted
        self.direct = direct

    def __call__(self, *operands):
        if self.direct:
            return np.einsum("n,ni,ni->i" if self.weighted else "ni,ni->i", *operands)
        product = operands[-2] * operands[-1]
        return product.T @ operands[0] if self.weighted else product.sum(axis=0)

    def __repr__(self) -> str:
        return "<weighted column sums of an elementwise product>"


#: from this many elements, a weighted column sum is one einsum pass (no temporary of A's size)
_ONE_PASS = 1 << 20


def _column_sums(subscripts: str, shapes):
    """A :class:`_WeightedColumnSums` for ``n,ni,ni->i`` or ``ni,ni->i`` on arrays large enough."""
    inputs, output = subscripts.split("->")
    parts = inputs.split(",")
    if len(parts) not in (2, 3) or len(output) != 1:
        return None
    *weights, a, b = parts
    if len(a) != 2 or a != b or a[1] != output or a[0] == output or (weights and weights[0] != a[0]):
        return None
    if tuple(shapes[-2]) != tuple(shapes[-1]) or math.prod(shapes[-1]) <= SMALL:
        return None
    rows, columns = shapes[-1]
    return _WeightedColumnSums(bool(weights), direct=rows * columns >= _ONE_PASS and columns >= 32)


def contraction_for(subscripts: str, shapes):
    """The contraction of ``subscripts`` for operands of these shapes: opt_einsum's planned
    expression (pairwise order, BLAS where it applies), or NumPy's einsum for a single operand
    (a transpose, diagonal or sum) and for two small ones, which costs a fraction of the call."""
    inputs, output = subscripts.split("->")
    if inputs == output and len(set(output)) == len(output):
        return _same  # the operand itself, axes already in place
    special = _gram(subscripts, shapes) or _column_sums(subscripts, shapes)
    if special is not None:
        return special
    broadcast = _broadcast_product(inputs.split(","), output, shapes)
    if broadcast is not None:
        return broadcast
    if len(shapes) == 2:
        a, b = inputs.split(",")
        product = _matrix_product(a, b, output)
        if product is not None:
            return product
        if _pairwise(subscripts) is np.matmul:
            # a matrix-vector product at any size: BLAS's gemv with no opt_einsum around it
            # (tensordot's reshapes cost ~10 us a call: 4% of the logistic gradient at 20000 x 100)
            return np.matmul
        if any(math.prod(s) > SMALL for s in shapes):
            batched = _batched_product(a, b, output, shapes)
            if batched is not None:
                return batched
    if len(shapes) > 1:
        reduced = _reduced_first(inputs.split(","), output, [tuple(s) for s in shapes])
        if reduced is not None:
            return reduced
    if _one_pass(inputs.split(","), output, shapes):
        return functools.partial(np.einsum, subscripts)
    if len(shapes) == 1 or (len(shapes) == 2 and all(math.prod(s) <= SMALL for s in shapes)):
        return _pairwise(subscripts) or functools.partial(np.einsum, subscripts)
    path = _cheapest_path(subscripts, shapes)
    if len(shapes) > 2:
        pairwise = _pairwise_steps(subscripts, shapes, path)
        if pairwise is not None:
            return pairwise
    expression = opt_einsum.contract_expression(subscripts, *shapes, optimize=path)
    if len(shapes) == 2 and len(expression.contraction_list) == 1 and not expression.contraction_list[0][-1]:
        # one einsum call, no BLAS (``kb,kb->k``, a row sum of a product): NumPy's einsum itself,
        # the same call without opt_einsum's ~6 us of dispatch around it
        return functools.partial(np.einsum, subscripts)
    return expression


class _Pairwise:
    """A contraction of three or more operands as opt_einsum's pairwise path, each pair run by
    :func:`contraction_for` (a matrix product as a C-ordered matmul, an elementwise product as
    broadcast multiplications, ...), each intermediate's axes in the order of the operand it
    meets next.  opt_einsum's own steps keep tensordot's axis order: in a relu network's gradient
    ``no,mo,nm,nl->lm`` it made ``R W2^T`` as an ``mn`` array and multiplied it into the ``nm``
    step mask across the grain, 5.0 ms against 1.3 ms at 2000 x 200."""

    def __init__(self, subscripts: str, steps: list[tuple[tuple[int, ...], object]]):
        self.subscripts, self.steps = subscripts, steps  # (operand slots, function); each result a new slot
        self._writers = [writer(function, len(slots)) for slots, function in steps]
        #: sets of intermediates an earlier call left (never its result), to write into: a fresh
        #: array of 3 MB cost 780 page faults, 1.7 ms on the development VM (``list.pop`` is
        #: atomic, so two threads never share a set)
        self._spares: list[list] = []

    def __call__(self, *operands, out=None):
        values = list(operands)
        last = len(self.steps) - 1
        try:
            spare = self._spares.pop()
        except IndexError:
            spare = [None] * last
        for k, (slots, function) in enumerate(self.steps):
            arrays = [values[slot] for slot in slots]
            into = self._writers[k]
            given = out if k == last else spare[k]
            if into is not None and given is not None and _fits(given, arrays):
                value = into(*arrays, out=given)
            else:
                value = function(*arrays)
                if k < last:
                    spare[k] = value if into is not None and reusable(value, values, 1 << 17) else None
            values.append(value)
        result = values[-1]
        if any(kept is not None and np.may_share_memory(result, kept) for kept in spare):
            result = result.copy()  # a last pair that hands back a kept intermediate: never the caller's
        if len(self._spares) < 2:
            self._spares.append(spare)
        return result

    def drop(self) -> None:
        """Let go of the intermediates kept for the next call."""
        self._spares.clear()

    def writes(self) -> bool:
        """Whether the last pair can write into an array given."""
        return self._writers[-1] is not None

    def __repr__(self) -> str:
        return f"<contraction {self.subscripts}: pairwise, intermediates in their readers' order>"


def kept_intermediates(plan) -> list:
    """The planned contractions of a plan (:meth:`Contraction.plan_for`) that keep intermediates
    between calls: the runtime drops them with the rest of a signature's arrays when a function
    is called at other shapes (else each shape called would keep its own)."""
    found = []
    for step in plan[0]:
        function = step[2]
        inner = getattr(function, "inner", None) if isinstance(function, _ReducedFirst) else None
        found.extend(f for f in (function, inner) if isinstance(f, (_Pairwise, SymmetricGram)))
    return found


def _fits(array, operands) -> bool:
    """Whether a pair's product of ``operands`` can be written into ``array``, an array of the
    product's shape (a plan's shapes are fixed) from an earlier call: of the operands' dtype."""
    return array.dtype == np.result_type(*operands)


def reusable(value, others, min_bytes: int) -> bool:
    """Whether ``value`` may be written into by a later call: a C-ordered array of ``min_bytes``
    or more that owns its memory and shares none with ``others`` (what the caller holds, or a
    pair's operands: ``_same`` returns its operand)."""
    return (
        type(value) is np.ndarray
        and value.nbytes >= min_bytes
        and value.base is None
        and value.flags.c_contiguous
        and value.flags.writeable
        and not any(np.may_share_memory(value, other) for other in others)
    )


def _pairwise_steps(subscripts: str, shapes, path) -> _Pairwise | None:
    """A :class:`_Pairwise` on ``path`` (opt_einsum's, positions in the list of operands left,
    each step's result appended), or None where an operand repeats an index (a diagonal)."""
    inputs, output = subscripts.split("->")
    subs = inputs.split(",")
    if any(len(set(sub)) != len(sub) for sub in [*subs, output]):
        return None
    sizes = {c: n for sub, shape in zip(subs, shapes) for c, n in zip(sub, shape)}
    # first the slots each step reads, to know which operands an intermediate meets next
    slots_left, reads = list(range(len(subs))), []
    for pair in path:
        taken = [slots_left[p] for p in pair]
        for p in sorted(pair, reverse=True):
            slots_left.pop(p)
        reads.append(taken)
        slots_left.append(len(subs) + len(reads) - 1)
    known = dict(enumerate(subs))  # slot -> its subscripts
    steps = []
    for k, taken in enumerate(reads):
        later = [slot for step in reads[k + 1 :] for slot in step]
        left = [known[slot] for slot in later if slot in known and slot not in taken]
        carried = set("".join(known[slot] for slot in taken))
        keep = carried & (set("".join(left)) | set(output))
        if k == len(reads) - 1:
            out = output
        else:
            partners = next((step for step in reads[k + 1 :] if len(subs) + k in step), [])
            order = "".join(known[slot] for slot in partners if slot in known) + output + "".join(left)
            out = "".join(sorted(keep, key=lambda c: order.index(c) if c in order else len(order)))
        known[len(subs) + k] = out
        pair = ",".join(known[slot] for slot in taken) + "->" + out
        pair_shapes = [tuple(sizes[c] for c in known[slot]) for slot in taken]
        if k < len(reads) - 1 and _outer_product(pair.split("->")[0].split(","), out):
            # an intermediate outer product (a later pair sums it, so the sign of a zero, which
            # einsum's sum from +0 drops, is lost there anyway): NumPy's einsum writes it 1.5x
            # faster than a broadcast multiply, whose inner loop runs over the short last axis
            # (nj,nk->njk at 2000 x 20 x 20, a logistic third derivative: 0.44 against 0.74 ms)
            function = functools.partial(np.einsum, pair)
        else:
            function = contraction_for(pair, pair_shapes)
        steps.append((tuple(taken), function))
    return _Pairwise(subscripts, steps)


def _outer_product(inputs: list[str], output: str) -> bool:
    """Whether two operands multiply into a result of every index of both, summing none, neither
    holding all of them and no index repeated in one (``n,k->nk``; batched, ``nj,nk->njk``)."""
    if len(inputs) != 2 or len(set(output)) != len(output) or any(len(set(sub)) != len(sub) for sub in inputs):
        return False
    a, b = inputs
    every = set(output)
    return set(a) | set(b) == every and set(a) != every and set(b) != every


def _one_pass(inputs: list[str], output: str, shapes) -> bool:
    """Whether NumPy's einsum, one pass over the largest operand's elements with no intermediate,
    is the contraction to run: three or more operands, every index one of the largest operand's,
    two or more operands with all of them (``j,nj,nj->n``, a weighted row sum of a product), so
    that no pairwise step can go to BLAS.  opt_einsum's pairwise path first makes an N x J
    product (``nj,j->nj``): 1.5 ms at 20000 x 64, against 1.0 ms in one pass."""
    if len(inputs) < 3 or any(len(set(sub)) != len(sub) for sub in inputs):
        return False
    largest = max(range(len(inputs)), key=lambda k: math.prod(shapes[k]))
    every = set(inputs[largest])
    if math.prod(shapes[largest]) <= SMALL or any(not set(sub) <= every for sub in inputs):
        return False
    # einsum adds each output's terms one after another: kept to short sums (a long one, in
    # float32, rounded 6x worse than opt_einsum's path)
    sizes = {c: n for sub, shape in zip(inputs, shapes) for c, n in zip(sub, shape)}
    summed = math.prod(n for c, n in sizes.items() if c not in output)
    return sum(set(sub) == every for sub in inputs) >= 2 and summed <= 1024


def _cheapest_path(subscripts: str, shapes) -> list:
    """The cheaper of opt_einsum's default path and its dynamic-programming one, by its own cost
    count (then the smaller largest intermediate).  The default's exhaustive search for up to four
    operands can miss a cheaper order: for ``n,ni,nj,i->j`` it scales X by the weights (an N x D
    intermediate) where the dynamic program first multiplies the two vectors over n."""
    return _candidates(subscripts, shapes)[2]


def path_cost(subscripts: str, shapes) -> tuple[int, int]:
    """(FLOPs, largest intermediate) of the path evaluation takes for these shapes (opt_einsum's
    counts), as ``explain`` reports them."""
    return _candidates(subscripts, shapes)[:2]


def _candidates(subscripts: str, shapes) -> tuple[int, int, list]:
    candidates = []
    for method in ("auto", "dp"):
        path, info = opt_einsum.contract_path(subscripts, *shapes, shapes=True, optimize=method)
        candidates.append((int(info.opt_cost), int(info.largest_intermediate), path))
    return min(candidates, key=lambda c: c[:2])


class _BroadcastProduct:
    """A contraction that sums nothing (``i,j,ij,->ij``): the operands multiplied elementwise,
    each a view broadcast along the axes it lacks, the smallest first, then into the first array
    of the result's size in place: ``a[:, None] * b * K * c`` is two passes over the result, where
    opt_einsum's pairwise path (an outer product, then a transposed elementwise product) ran 10x
    slower at 500 x 400."""

    def __init__(self, subscripts: str, views: list[tuple], order: list[int]):
        self.subscripts, self.views, self.order = subscripts, views, order

    def __call__(self, *operands, out=None):
        with np.errstate(all="ignore"):  # inf * 0 is nan, as NumPy's einsum has it: a value, not a warning
            return self._product(operands, out)

    def _product(self, operands, out=None):
        value, owned = None, False
        for k in self.order:
            permutation, expand = self.views[k]
            x = np.asarray(operands[k])
            x = (x.transpose(permutation) if permutation is not None else x)[expand]
            if value is None:
                value = x
                continue
            shape = np.broadcast_shapes(value.shape, x.shape)
            if owned and type(value) is np.ndarray and shape == value.shape and np.result_type(value, x) == value.dtype:
                np.multiply(value, x, out=value)
            elif out is not None and shape == out.shape:
                # the first product of the result's size straight into the array given; the
                # smaller ones before it at their own size (c_i d_i e_i A_ij: two products of N
                # numbers, then one pass over N x D, where c_i d_i went into the N x D array and
                # took three passes over it)
                value, owned, out = np.multiply(value, x, out=out), True, None
            else:
                value, owned = value * x, True
        if out is not None:  # no product of the result's size (a letter no operand has): broadcast into it
            np.copyto(out, value)
            value = out
        return value

    def __repr__(self) -> str:
        return f"<contraction {self.subscripts}: broadcast products>"


def _broadcast_product(inputs: list[str], output: str, shapes) -> _BroadcastProduct | None:
    """A :class:`_BroadcastProduct` where no index is summed, no operand repeats an index and some
    operand is large (for small ones the other paths cost a few microseconds less); else None."""
    if len(inputs) < 2 or len(set(output)) != len(output) or any(len(set(sub)) != len(sub) for sub in inputs):
        return None
    if any(c not in output for sub in inputs for c in sub):
        return None
    if all(math.prod(s) <= SMALL for s in shapes):
        return None
    views = []
    for sub in inputs:
        permutation = sorted(range(len(sub)), key=lambda axis: output.index(sub[axis]))
        expand = tuple(slice(None) if c in sub else None for c in output)
        views.append((tuple(permutation) if permutation != sorted(permutation) else None, expand))
    order = sorted(range(len(inputs)), key=lambda k: math.prod(shapes[k]))
    return _BroadcastProduct(",".join(inputs) + "->" + output, views, order)


class _ReducedFirst:
    """A contraction whose scalar operands multiply the result at the end, and whose operands
    first sum the indices that only they carry (``inv(S)_ie r_ne -> i`` is inv(S) times the
    column sums of r: N*D + D*D work, not N*D*D).  Scalars out of the planner's way matter too:
    opt_einsum plans a fifth, 0-d operand into an outer product of two large ones."""

    def __init__(self, scalars, sums, rest, inner, subscripts, totals=()):
        self.scalars, self.sums, self.rest, self.inner = scalars, sums, rest, inner
        self.subscripts, self.totals = subscripts, totals

    def __call__(self, *operands, out=None):
        arrays = []
        for k in self.rest:
            axes = self.sums.get(k)
            arrays.append(operands[k].sum(axis=axes) if axes else operands[k])
        if out is not None:  # (only where :meth:`writes`: the inner product writes into ``out``)
            if np.result_type(*operands) != out.dtype or np.result_type(*arrays) != out.dtype:
                # the product would round in another dtype than the call without ``out``
                out[...] = self(*operands)
                return out
            value = self.inner(*arrays, out=out)
        else:
            value = self.inner(*arrays) if arrays else np.ones((), dtype=np.result_type(*operands))
        # the scalars multiply a result of our own in place (the same products, no new array)
        mine = out is not None or own_array(value, operands)
        for k in self.scalars:
            scalar = operands[k]
            if mine and type(value) is np.ndarray and np.result_type(value, scalar) == value.dtype:
                value = np.multiply(value, scalar, out=value)
            else:
                value, mine = value * scalar, True
        for k in self.totals:  # an operand none of whose indices another has: its sum scales the rest
            value = value * operands[k].sum()
        return value

    def writes(self) -> bool:
        """Whether it can write its result into an array given: only scalars beside a product
        that can (``c Q_id K_jd``: Q K^T by BLAS into the array, then scaled there)."""
        return not self.sums and not self.totals and isinstance(self.inner, (_MatrixProduct, _BroadcastProduct))

    def __repr__(self) -> str:
        return f"<contraction {self.subscripts}: sums first, scalars last>"


def _reduced_first(inputs: list[str], output: str, shapes: list[tuple]):
    """A :class:`_ReducedFirst` for this contraction where it saves work, else None."""
    scalars = [k for k, s in enumerate(inputs) if not s]
    counts = Counter(c for s in inputs for c in s)
    sums: dict[int, tuple[int, ...]] = {}
    new_inputs, new_shapes, rest, totals = [], [], [], []
    for k, sub in enumerate(inputs):
        if not sub:
            continue
        own = [axis for axis, c in enumerate(sub) if counts[c] == 1 and c not in output]
        if len(own) == len(sub) == len(set(sub)) and len(inputs) > 1:  # A_ij B_kl: sum(A) sum(B), not n^4
            totals.append(k)
            continue
        if own and len(sub) > 1 and len(own) < len(sub):
            sums[k] = tuple(own)
        rest.append(k)
        new_inputs.append("".join(c for axis, c in enumerate(sub) if axis not in sums.get(k, ())))
        new_shapes.append(tuple(n for axis, n in enumerate(shapes[k]) if axis not in sums.get(k, ())))
    if not scalars and not sums and not totals:
        return None
    new = ",".join(new_inputs) + "->" + output
    inner = contraction_for(new, new_shapes) if rest else None
    return _ReducedFirst(tuple(scalars), sums, tuple(rest), inner, ",".join(inputs) + "->" + output, tuple(totals))


__all__ = [
    "Contraction",
    "kept_intermediates",
    "reusable",
    "ResolvedTerm",
    "SymmetricGram",
    "contraction_for",
    "own_array",
    "path_cost",
    "resolve_deltas",
]
