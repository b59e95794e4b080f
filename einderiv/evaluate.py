"""Einsum program -> numbers: size binding, plans cached per shape signature, opt_einsum calls.

All numeric work is done by opt_einsum contractions and NumPy broadcasting; no Python loop
runs over tensor elements.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import opt_einsum

from .emit import DELTA_OPERAND, EinsumTerm, emit
from .errors import EvaluationError
from .ir import Delta, Indices, Tensor
from .normal import Poly


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

    def bind(self, index: str, size: int, origin: str) -> None:
        known = self.sizes.get(index)
        if known is None:
            self.sizes[index] = (size, origin)
        elif known[0] != size:
            raise EvaluationError(
                f"index {index!r} has two sizes: {known[0]} (from {known[1]}) and {size} (from {origin})"
            )


def bind_sizes(
    poly: Poly, shapes: Mapping[str, tuple[int, ...]], fixed: Mapping[str, tuple[int, str]] | None = None
) -> tuple[dict[str, tuple[int, str]], list[dict[str, int]]]:
    """Sizes of the free indices (shared by all terms) and of each term's indices.

    Raises :class:`EvaluationError` when an index is bound to two sizes or a size cannot be known.
    """
    free = set(poly.indices)
    shared = _SizeBinder(fixed)
    per_term: list[_SizeBinder] = []
    for term in poly.terms:
        local = _SizeBinder()
        for factor in term.factors:
            if isinstance(factor, Tensor):
                shape = shapes[factor.name]
                for axis, (index, size) in enumerate(zip(factor.indices, shape)):
                    origin = f"{factor.name} axis {axis}" if len(shape) > 1 else factor.name
                    (shared if index in free else local).bind(index, size, origin)
        per_term.append(local)
    # deltas tie their two indices to one size; propagate until nothing changes
    changed = True
    while changed:
        changed = False
        for term, local in zip(poly.terms, per_term):
            for factor in term.factors:
                if not isinstance(factor, Delta):
                    continue
                ends = [(i, shared if i in free else local) for i in factor.indices]
                known = [b.sizes[i] for i, b in ends if i in b.sizes]
                for i, binder in ends:
                    if known and i not in binder.sizes:
                        binder.bind(i, known[0][0], f"delta_{''.join(factor.indices)}")
                        changed = True
                    elif known:
                        binder.bind(i, known[0][0], known[0][1])
    sizes_per_term: list[dict[str, int]] = []
    for term, local in zip(poly.terms, per_term):
        sizes: dict[str, int] = {}
        for factor in term.factors:
            for index in factor.indices:
                source = shared if index in free else local
                if index not in source.sizes:
                    raise EvaluationError(f"the size of index {index!r} cannot be inferred: it appears only in deltas")
                sizes[index] = source.sizes[index][0]
        sizes_per_term.append(sizes)
    return shared.sizes, sizes_per_term


class _Plan:
    """Everything fixed by one shape signature: contraction callables, identities, shapes."""

    def __init__(self, steps, out_shape: tuple[int, ...], dtype):
        self.steps = steps
        self.out_shape = out_shape
        self.dtype = dtype


class Evaluator:
    """Evaluates a normal form from named arrays, planning once per shape signature.

    ``size_source`` is the statement the user wrote: its tensors bind the sizes of the free
    indices (and are checked), ``wrt`` adds the derivative indices bound to wrt tensors' axes.
    """

    def __init__(self, poly: Poly, size_source: Poly, inputs: Mapping[str, int], wrt: tuple[Tensor, ...] = ()):
        self.poly = poly
        self.terms: tuple[EinsumTerm, ...] = emit(poly)
        self.size_source = size_source
        self.inputs = dict(inputs)
        self.wrt = wrt
        self._plans: dict[tuple, _Plan] = {}
        self._lock = threading.Lock()

    # -- input checking -------------------------------------------------------------------
    def arrays(self, given: Mapping[str, object]) -> dict[str, np.ndarray]:
        unknown = sorted(set(given) - set(self.inputs))
        if unknown:
            raise EvaluationError(
                f"unknown input {unknown[0]!r}: the expression's inputs are {', '.join(sorted(self.inputs)) or 'none'}"
            )
        missing = sorted(set(self.inputs) - set(given))
        if missing:
            raise EvaluationError(f"missing array for {missing[0]!r} (inputs: {', '.join(sorted(self.inputs))})")
        out = {name: as_array(name, value) for name, value in given.items()}
        for name, array in out.items():
            rank = self.inputs[name]
            if array.ndim != rank:
                raise EvaluationError(
                    f"input {name!r} has {array.ndim} axes (shape {array.shape}) but is used with {rank} indices"
                )
        return out

    def _plan(self, arrays: Mapping[str, np.ndarray]) -> _Plan:
        key = tuple((name, arrays[name].shape, arrays[name].dtype.str) for name in sorted(arrays))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        shapes = {name: a.shape for name, a in arrays.items()}
        free_sizes, _ = bind_sizes(self.size_source, shapes)
        fixed = dict(free_sizes)
        for ref in self.wrt:
            for axis, index in enumerate(ref.indices):
                fixed[index] = (shapes[ref.name][axis], f"{ref.name} axis {axis}")
        fixed = {i: fixed[i] for i in self.poly.indices if i in fixed}
        out_sizes, term_sizes = bind_sizes(self.poly, shapes, fixed)
        for index in self.poly.indices:
            if index not in out_sizes:
                raise EvaluationError(f"the size of output index {index!r} cannot be inferred from the inputs")
        out_shape = tuple(out_sizes[i][0] for i in self.poly.indices)
        dtype = np.result_type(*arrays.values()) if arrays else np.dtype(np.float64)
        if dtype.kind not in "fc":
            dtype = np.dtype(np.float64)
        steps = []
        for term, sizes in zip(self.terms, term_sizes):
            coeff = None if term.coefficient == 1 else float(term.coefficient)
            bshape = tuple(out_sizes[i][0] if i in term.output else 1 for i in self.poly.indices)
            if not term.operands:
                steps.append((float(term.coefficient), None, (), bshape))
                continue
            operand_shapes = [tuple(sizes[i] for i in idx) for idx in term.inputs]
            contraction = opt_einsum.contract_expression(term.subscripts, *operand_shapes)
            getters = tuple(
                _identity(sizes[idx[0]], dtype) if name == DELTA_OPERAND else name
                for name, idx in zip(term.operands, term.inputs)
            )
            steps.append((coeff, contraction, getters, bshape))
        plan = _Plan(steps, out_shape, dtype)
        with self._lock:
            self._plans[key] = plan
        return plan

    def __call__(self, given: Mapping[str, object]) -> np.ndarray:
        arrays = self.arrays(given)
        plan = self._plan(arrays)
        result = None
        owned = False  # whether ``result`` is a fresh array this call may write into
        for coeff, contraction, getters, bshape in plan.steps:
            if contraction is None:
                value, fresh = np.asarray(coeff, dtype=plan.dtype), False
            else:
                ops = [arrays[g] if isinstance(g, str) else g for g in getters]
                value = contraction(*ops)
                if coeff is not None:
                    value, fresh = value * coeff, True
                else:
                    fresh = not any(np.may_share_memory(value, op) for op in ops)
            value = np.reshape(value, bshape)
            if result is None:
                result, owned = value, fresh
            elif owned and result.shape == plan.out_shape:
                result += value
            else:
                result, owned = result + value, True
        if result is None:
            return np.zeros(plan.out_shape, dtype=plan.dtype)
        if result.shape != plan.out_shape or not owned:
            result = np.array(np.broadcast_to(result, plan.out_shape), dtype=plan.dtype)
        return result


def _identity(n: int, dtype) -> np.ndarray:
    eye = np.eye(n, dtype=dtype)
    eye.flags.writeable = False
    return eye


__all__ = ["Evaluator", "bind_sizes", "as_array", "Indices"]
