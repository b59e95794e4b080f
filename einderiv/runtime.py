"""The interpreters of the evaluation program (:mod:`einderiv.steps`), each a table keyed by the
kind of step: NumPy's fast path (:data:`NUMPY_INSTRUCTIONS`: each step lowered once per shape
signature to a closure over its plan), the other array libraries' (:data:`GENERIC_STEPS`: torch,
JAX, CuPy, dask through :mod:`einderiv.backends`, never writing into an array), and
:func:`explain`, which reports each step's cost for given shapes.  No Python loop runs over
tensor elements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import opt_einsum

from . import linalg
from .backends import ArrayOps, is_complex, real_reciprocal
from .contraction import kept_intermediates, new_array, own_array, path_cost, reusable, writer
from .errors import EvaluationError
from .linalg import generic_matrix_function, generic_solve, matrix_function, solve
from .optimiser import StraightLine
from .steps import (
    STEP_KINDS,
    Contract,
    Elementwise,
    LogOneMinusExp,
    LogSoftmax,
    LogSumExp,
    MatrixFunction,
    Softmax,
    SoftmaxCentred,
    SoftmaxComplement,
    Solve,
)


def as_array(name: str, value) -> np.ndarray:
    """The input as an ndarray; integers and booleans are promoted to float64.  A masked array
    with masked entries is an error: every entry takes part in a contraction."""
    if isinstance(value, np.ma.MaskedArray) and np.ma.getmask(value) is not np.ma.nomask and value.mask.any():
        raise EvaluationError(
            f"input {name!r} is a masked array with masked entries, which einderiv would compute with: "
            f"fill them ({name}.filled(0.0)) or leave them out first"
        )
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is the user's input
        raise EvaluationError(f"input {name!r} is not an array: {err}") from None
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype.kind not in "fc":
        raise EvaluationError(f"input {name!r} has dtype {array.dtype}, expected a numeric array")
    return array


#: NumPy's operations, for the elementwise steps of the fast path (one table for every library).
_NUMPY = ArrayOps("numpy", "numpy")


def apply_function(func: str, param: Fraction | None, x: np.ndarray) -> np.ndarray:
    """The elementwise function ``func`` (``pow`` with exponent ``param``) on an array."""
    return _NUMPY.apply(func, param, x)


def _softmax(v: np.ndarray, axes: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """exp(v) / sum over ``axes`` of exp(v), max-shifted: no overflow.  ``out``: an array of v's
    shape and dtype from an earlier evaluation that nothing else holds, written into (the same
    arithmetic; no new array of v's size)."""
    if not v.size:
        return np.exp(v)
    if len(axes) == v.ndim:  # normalised over every axis, the common case
        peak = v.max()
        if np.isfinite(peak):
            e = np.exp(v - peak)
            e /= e.sum()
            return e
    with np.errstate(all="ignore"):  # inf or NaN inputs: IEEE results, no warnings
        peak = _peaks(v, axes)
        if not np.isfinite(peak).all():
            peak = np.where(np.isfinite(peak), peak, 0)
        if out is not None and (out.shape != v.shape or out.dtype != np.result_type(v, peak)):
            out = None
        e = np.subtract(v, peak, out=out)  # one array of v's size, exponentiated and divided in place
        np.exp(e, out=e)
        e /= _sums(e, axes)
        return e


def _softmax_complement(p: np.ndarray, axes: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """1 - p for a softmax's values p (summing to 1 over ``axes``): where p > 1/2 (then the one
    largest entry over ``axes``), the other entries summed.  1 - p is 0 wherever p rounds to 1
    (at logits [40, 0, -5], for 4.3e-18), and a sum of the others cancels nothing.  At complex
    values, 1 - p.  ``out``: an array of p's shape and dtype from an earlier evaluation that
    nothing else holds, written into (the others' sums are formed in it first)."""
    if not p.size or is_complex(p):
        return 1 - p
    if out is None or out.shape != p.shape or out.dtype != p.dtype:
        out = np.empty_like(p)
    top = p > 0.5
    if not top.any():
        return np.subtract(1, p, out=out)
    others = _sums(np.multiply(p, np.logical_not(top), out=out), axes)
    np.subtract(1, p, out=out)
    np.copyto(out, others, where=top)
    return out


def _softmax_centred(p: np.ndarray, x: np.ndarray, axes: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """x - Σ p x over ``axes`` for a softmax's values p (summing to 1 over ``axes``) and x of p's
    shape.  Where an entry t of p is above 1/2 (then the one largest over ``axes``), (x - x_t) -
    Σ p (x - x_t), the same number, as Σ p = 1: x_t - Σ p x cancels to 0 wherever p_t rounds to
    1, and here nothing cancels (x_t is taken where it is finite).  ``out``: an array of the
    result's shape and dtype from an earlier evaluation that nothing else holds, written into."""
    dtype = np.result_type(p, x)
    if not p.size or is_complex(p) or p.shape != x.shape or dtype.kind != "f":
        return x - _sums(p * x, axes)
    if out is None or out.shape != p.shape or out.dtype != dtype:
        out = np.empty(p.shape, dtype)
    top = p > 0.5
    with np.errstate(invalid="ignore", over="ignore"):  # inf or NaN inputs: IEEE results, no warnings
        if top.any():
            shift = _sums(np.multiply(x, top, out=out), axes)  # x_t, and 0 where no entry is above 1/2
            x = np.subtract(x, np.where(np.isfinite(shift), shift, 0), out=out)
        return np.subtract(x, _dots(p, x, axes), out=out)


def _dots(a: np.ndarray, b: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The sums of a b over ``axes``, kept as axes of size 1, by NumPy's einsum, which multiplies
    and sums in one pass with no array of a's size (as the contraction it replaces did)."""
    if a.ndim > len(_AXIS_LETTERS):
        return np.sum(a * b, axis=axes, keepdims=True)
    letters, kept = _summed_letters(a.ndim, axes)
    return np.expand_dims(np.einsum(f"{letters},{letters}->{kept}", a, b), axes)


def _peaks(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The maxima of ``v`` over ``axes``, kept as axes of size 1 (-inf over none).  Over at most 64
    numbers each, from a copy with those axes first: NumPy's max over a short last axis runs its
    loop once per row (5000 x 10: 190 us, against 43 us for the copy and a max over its rows)."""
    count = math.prod(v.shape[k] for k in axes)
    if 0 < count <= 64 and v.ndim > len(axes):
        moved = np.ascontiguousarray(np.transpose(v, [*axes, *(k for k in range(v.ndim) if k not in axes)]))
        return np.expand_dims(moved.max(axis=tuple(range(len(axes)))), axes)
    return np.max(v, axis=axes, keepdims=True, initial=-np.inf)


def _sums(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The sums of ``v`` over ``axes``, kept as axes of size 1: for at most 64 numbers a sum,
    NumPy's einsum, which sums a short last axis (a softmax over 10 classes) about 4x faster than
    ``numpy.sum``; longer sums by ``numpy.sum``, whose pairwise summation rounds less."""
    if v.ndim > len(_AXIS_LETTERS) or v.dtype.kind not in "fc" or math.prod(v.shape[k] for k in axes) > 64:
        return np.sum(v, axis=axes, keepdims=True)
    letters, kept = _summed_letters(v.ndim, axes)
    return np.expand_dims(np.einsum(f"{letters}->{kept}", v), axes)


_AXIS_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _summed_letters(ndim: int, axes: tuple[int, ...]) -> tuple[str, str]:
    """einsum's letters for an array of ``ndim`` axes, and those of the axes not in ``axes``."""
    letters = _AXIS_LETTERS[:ndim]
    return letters, "".join(c for k, c in enumerate(letters) if k not in axes)


def principal(out, xp):
    """A complex log ``out`` with its imaginary part brought into (-pi, pi], NumPy's principal
    branch: the max shift of a logsumexp adds the largest entry's imaginary part (at z = [10i,
    10i] it was log 2 + 10i, where NumPy's log(sum(exp(z))) is log 2 - 2.566i).  A real ``out``
    is returned as it is."""
    if not is_complex(out):
        return out
    turns = xp.ceil((xp.imag(out) - np.pi) / (2 * np.pi))
    return out - (2j * np.pi) * turns


def refuse_complex_log_softmax(v) -> None:
    """A log-softmax of complex values is an error: its entries are defined there only up to
    2 pi i each, and v minus the logsumexp is not NumPy's principal log of the softmax
    (``log(softmax_k(z_k))`` at z = [3i, -3i] was -0.68 - 6.14i for -0.68 + 0.14i)."""
    if is_complex(v):
        raise EvaluationError(
            f"log_softmax cannot be evaluated at {v.dtype} values: each entry's log is defined there only up to "
            "2 pi i, and v minus its logsumexp is not the principal log of the softmax"
        )


#: a sum of exp(v - max v) below this has one leading entry whose log is log1p of the others' sum
#: (:func:`_log_of_sum`); from it on, log(1 + s) is within 2^9 rounding units of log1p(s)
#: relatively (1.1e-13 in float64; 6e-5 in float32, as log(1 + s) everywhere was before)
LEADING = 1 + 2**-10


def _log_of_sum(e: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """log Σ e over ``axes`` (kept as axes of size 1) for e = exp(v - max v), whose largest entries
    are 1, overwriting e: where the sum is in [1, :data:`LEADING`) (one entry, 1, holds nearly all),
    log1p of the others' sum, which keeps what log(1 + s) rounds away: log(1 + 4.2e-18) is 0, and
    so were the top entry of a log-softmax at logits [40, 0] and the cross-entropy of a confident
    prediction."""
    total = _sums(e, axes)
    if type(e) is not np.ndarray or e.dtype.kind != "f":  # a NumPy scalar (no axes) is its own sum
        return np.log(total)
    near = (total >= 1) & (total < LEADING)
    if not near.any():
        return np.log(total)
    others = _sums(np.multiply(e, e < 1, out=e), axes)
    return np.where(near, np.log1p(others), np.log(total))


def _logsumexp(v: np.ndarray, axes: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray:
    """log(sum over ``axes`` of exp(v)), max-shifted; the kept axes are returned in ``order``
    (at complex values, NumPy's principal log: :func:`principal`)."""
    if len(axes) == v.ndim and v.size:  # a full reduction, the common case
        peak = v.max()
        if not np.isfinite(peak):
            peak = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.exp(v - peak)
            return principal(np.asarray(_log_of_sum(e, tuple(range(v.ndim))).reshape(()) + peak), np)
    peak = _peaks(v, axes)
    if not np.isfinite(peak).all():
        peak = np.where(np.isfinite(peak), peak, 0)
    shifted = np.subtract(v, peak)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = _log_of_sum(np.exp(shifted, out=shifted), axes) + peak
    out = principal(np.squeeze(out, axis=axes), np)
    kept = [k for k in range(v.ndim) if k not in axes]
    return np.transpose(out, [kept.index(k) for k in order]) if out.ndim else out


def _log_softmax(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """v - log(sum over ``axes`` of exp(v)), as (v - max) - log(sum exp(v - max)): exact where the
    largest entries tie far from 0, where v minus its logsumexp rounds to 0."""
    refuse_complex_log_softmax(v)
    with np.errstate(all="ignore"):  # inf or NaN inputs: IEEE results, no warnings
        if not v.size:
            return v - np.log(np.sum(np.exp(v), axis=axes, keepdims=True))
        peak = _peaks(v, axes)
        shifted = np.subtract(v, np.where(np.isfinite(peak), peak, 0))
        shifted -= _log_of_sum(np.exp(shifted), axes)
        return shifted


#: below this, log(1 - exp(v)) is log1p(-exp(v)); above, log(-expm1(v)) (Mächler, "Accurately
#: computing log(1 - exp(-|a|))", 2012): each keeps its relative digits on its side
LOG_HALF = -math.log(2)


def _log_one_minus_exp(v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """log(1 - exp(v)): ``log(-expm1(v))``, and ``log1p(-exp(v))`` where v < -log 2 (-expm1(v)
    rounds to 1 far below 0, where the log is -exp(v)).  NaN above 0, -inf at 0, as the log of
    1 - exp(v) is; a complex v takes ``log(-expm1(v))``, the principal log.  ``out``: an array of
    v's shape and dtype to write into.  Where the two sides interleave, the far side's values
    are copied in by a mask (4 ms for 10^6 random sides, 0.2 ms for sorted ones); where v lies on
    one side only, that side's form alone is computed."""
    v = np.asarray(v)
    if v.dtype.kind != "f" or not v.ndim:  # (0 - expm1: a negation would flip a +0 imaginary part)
        far = v.dtype.kind == "f" and v < LOG_HALF
        return np.asarray(np.log1p(-np.exp(v)) if far else np.log(0 - np.expm1(v)))
    into = out if out is not None and out.shape == v.shape and out.dtype == v.dtype else None
    far = np.less(v, LOG_HALF)
    count = np.count_nonzero(far)
    if count == v.size:
        return _log_of_minus(np.exp, np.log1p, v, into)
    value = _log_of_minus(np.expm1, np.log, v, into)
    if count:
        np.copyto(value, _log_of_minus(np.exp, np.log1p, v), where=far)
    return value


def _log_of_minus(inner, log, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``log(-inner(v))`` in one array (``out`` where given): log(-expm1(v)) or log1p(-exp(v))."""
    value = inner(v, out=out)
    np.negative(value, out=value)
    return log(value, out=value)


def generic_log_one_minus_exp(v, ops: ArrayOps):
    """:func:`_log_one_minus_exp` on another library: both forms, chosen elementwise."""
    xp = ops.xp
    if is_complex(v):  # 0 - expm1, not a negation, which flips a +0 imaginary part (and log's branch)
        return xp.log(0 - xp.expm1(v))
    return xp.where(v < LOG_HALF, xp.log1p(-xp.exp(v)), xp.log(-xp.expm1(v)))


def generic_log_of_sum(e, axes: tuple[int, ...], ops: ArrayOps):
    """log Σ e over ``axes`` for e = exp(v - max v); where the sum is in [1, :data:`LEADING`),
    log1p of the others' sum (:func:`_log_of_sum`)."""
    total = ops.sum(e, axes)
    if is_complex(e):
        return ops.xp.log(total)
    others = ops.sum(ops.where(e < 1, e, ops.xp.zeros_like(e)), axes)
    return ops.where((total >= 1) & (total < LEADING), ops.xp.log1p(others), ops.xp.log(total))


def generic_log_softmax(v, axes: tuple[int, ...], ops: ArrayOps):
    """(v - max) - log(sum over ``axes`` of exp(v - max))."""
    refuse_complex_log_softmax(v)
    if 0 in tuple(v.shape):
        return v - ops.xp.log(ops.sum(ops.xp.exp(v), axes))
    shifted = v - ops.finite_or_zero(ops.amax(v, axes))
    return shifted - generic_log_of_sum(ops.xp.exp(shifted), axes, ops)


def generic_softmax(v, axes: tuple[int, ...], ops: ArrayOps):
    """exp(v - max) / sum over ``axes`` of exp(v - max)."""
    if 0 in tuple(v.shape):
        return ops.xp.exp(v)
    e = ops.xp.exp(v - ops.finite_or_zero(ops.amax(v, axes)))
    return e / ops.sum(e, axes)


def generic_softmax_complement(p, axes: tuple[int, ...], ops: ArrayOps):
    """1 - p for a softmax's values p; where p > 1/2, the other entries summed
    (:func:`_softmax_complement`)."""
    if 0 in tuple(p.shape) or is_complex(p):
        return 1 - p
    top = p > 0.5
    return ops.where(top, ops.sum(ops.where(top, ops.xp.zeros_like(p), p), axes), 1 - p)


def generic_softmax_centred(p, x, axes: tuple[int, ...], ops: ArrayOps):
    """x - Σ p x for a softmax's values p; where p is above 1/2 at t, (x - x_t) - Σ p (x - x_t)
    (:func:`_softmax_centred`)."""
    if 0 in tuple(p.shape) or is_complex(p):
        return x - ops.sum(p * x, axes)
    top = p > 0.5
    shifted = x - ops.finite_or_zero(ops.sum(ops.where(top, x, ops.xp.zeros_like(x)), axes))
    return shifted - ops.sum(p * shifted, axes)


def generic_logsumexp(v, axes: tuple[int, ...], order: tuple[int, ...], ops: ArrayOps):
    """max(v) + log(sum over ``axes`` of exp(v - max(v))); kept axes returned in ``order``
    (at complex values, the principal log)."""
    if 0 in tuple(v.shape):
        out = ops.xp.log(ops.sum(ops.xp.exp(v), axes))
    else:
        peak = ops.finite_or_zero(ops.amax(v, axes))
        out = generic_log_of_sum(ops.xp.exp(v - peak), axes, ops) + peak
    out = principal(ops.squeeze(out, axes), ops.xp)
    kept = [k for k in range(len(v.shape)) if k not in axes]
    permutation = [kept.index(k) for k in order]
    return ops.transpose(out, permutation) if permutation != sorted(permutation) else out


def run(
    line: StraightLine,
    values: dict[str, np.ndarray],
    signature: tuple | None = None,
    keep: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Compute every step of ``line`` with NumPy, into ``values``.  With a ``signature`` of the
    inputs' shapes and dtypes, the plans of all steps are looked up once for the whole line.
    With ``keep`` (the names the caller reads), a step may write into an array of an earlier
    step that nothing after it reads (its value in ``values`` is then not that step's)."""
    compute = functools.partial(_run, line, keep=keep)
    if line._matrices:  # one factorisation per matrix per evaluation (einderiv.linalg)
        compute = functools.partial(linalg.one_evaluation, compute)
    if line._quiet:  # IEEE results (inf, nan) propagate as values, without warnings
        with np.errstate(all="ignore"):
            return compute(values, signature)
    return compute(values, signature)


def run_with(line: StraightLine, values: dict[str, object], ops: ArrayOps, like) -> dict[str, object]:
    """Compute every step of ``line`` with another array library's operations (``like``: an
    array of the result dtype and device, for constants).  A library's own refusal of a step
    (torch's max of a complex array: NotImplementedError) is an EvaluationError that names the
    library and the step, as the README promises for every error a call raises."""
    for step in line.steps:
        try:
            values[step.target] = GENERIC_STEPS[type(step)](step, values, ops, like)
        except (EvaluationError, RecursionError, MemoryError):
            raise
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            raise EvaluationError(
                f"{ops.name} cannot evaluate step {step.target} ({step.kind}) of this expression: "
                f"{type(err).__name__}: {err}"
            ) from err
    return values


def _donations(steps, keep: tuple[str, ...] | None) -> list[frozenset[str]]:
    """Per step, the earlier steps' arrays it reads last (never an input, never one in ``keep``)
    and reads in one term only: that step may write its result into them."""
    if keep is None:
        return [frozenset()] * len(steps)
    made = {step.target for step in steps}
    last: dict[str, int] = {}
    for k, step in enumerate(steps):
        for name in step.reads():
            last[name] = k
    out = []
    for k, step in enumerate(steps):
        if step.contraction is None:
            out.append(frozenset())
            continue
        uses = [n for term in step.contraction.terms for n in term.operands]
        out.append(
            frozenset(n for n in step.reads() if n in made and n not in keep and last[n] == k and uses.count(n) == 1)
        )
    return out


#: A step's array of at least this many bytes that an evaluation does not return is kept for the
#: next evaluation of the same shapes to write into: a fresh array of that size costs the kernel's
#: page faults and zeroing (a third of a two-layer network's Hessian-vector product at 20000 x 64
#: on a 2-core machine), which XLA's and PyTorch's allocators avoid the same way.
REUSE_MIN_BYTES = 1 << 18


class _Bound:
    """A line's instructions for one input signature, and the arrays earlier evaluations left
    that nothing returned (``spares``: sets of step target -> array; ``targets``: each step's, or
    None for a step whose arrays are not kept: too small, or of a kind that never writes into an
    array given).  An evaluation takes a set (``list.pop`` is atomic: two threads never write into
    one set) and gives one back; about two sets are kept (threads that finish together may
    leave a third: the count is read, then appended to, without a lock)."""

    __slots__ = ("instructions", "targets", "spares", "pairwise")

    def __init__(self, instructions: list, targets: list[str | None], pairwise: list = ()):
        self.instructions, self.targets, self.spares = instructions, targets, []
        #: the steps' planned contractions that keep intermediates of their own (einderiv.contraction)
        self.pairwise = list(pairwise)

    def drop(self) -> None:
        """Let go of every array kept for the next call of this signature."""
        self.spares.clear()
        for function in self.pairwise:
            function.drop()

    def take(self) -> dict:
        try:
            return self.spares.pop()
        except IndexError:
            return {}

    def give(self, values: dict, keep: tuple[str, ...]) -> None:
        if len(self.spares) < 2:
            self.spares.append(_leftovers(self.targets, values, keep))


def _large(array) -> bool:
    return type(array) is np.ndarray and _kept(array.shape, array.dtype)


def _leftovers(targets: list[str | None], values: dict, keep: tuple[str, ...]) -> dict:
    """The steps' arrays that the next evaluation may write into: large C-ordered arrays that own
    their memory, one per array, sharing none with an input or with anything the caller reads
    (a kept result that is a view of a step's array, or a donated one, keeps that array out)."""
    made = {step for step in targets if step is not None}
    held = [v for n, v in values.items() if n not in made or n in keep]
    spare, seen = {}, set()
    for target in targets:
        array = values.get(target) if target is not None else None
        if id(array) in seen or not reusable(array, held, REUSE_MIN_BYTES):
            continue
        seen.add(id(array))
        spare[target] = array
    return spare


def _run(
    line: StraightLine, values: dict[str, np.ndarray], signature: tuple | None, keep: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    key = signature if keep is None else (signature, keep)
    bound = line._bound.get(key) if signature is not None else None
    if bound is None:
        factored = linalg.shared_matrices(line.steps)  # each read through one factorisation per evaluation
        program = []
        for step, donated in zip(line.steps, _donations(line.steps, keep)):
            # each step lowered to a closure over its plan, and run once now
            instruction = NUMPY_INSTRUCTIONS[type(step)](step, values, factored)
            if donated:
                instruction = _donating(step, values, donated) or instruction
            instruction(values, None)
            program.append(instruction)
        if signature is not None:
            targets = [
                step.target
                if type(step) in (Contract, Elementwise, Softmax, SoftmaxComplement, SoftmaxCentred, LogOneMinusExp)
                and _large(values.get(step.target))
                else None
                for step in line.steps
            ]  # the steps whose arrays may be kept: those large enough, of a kind that writes into one
            pairwise = [
                f
                for step in line.steps
                if type(step) is Contract
                for f in kept_intermediates(step.contraction.plan_for(values))
            ]
            bound = line._bound[key] = _Bound(program, targets, pairwise)
            if keep is not None:
                _reuse(line, bound, values, keep)
        return values
    if keep is None or not any(bound.targets):  # nothing is written into: the plain loop
        for instruction in bound.instructions:
            instruction(values, None)
        return values
    spare = bound.take()
    for target, instruction in zip(bound.targets, bound.instructions):
        instruction(values, spare.get(target))
    _reuse(line, bound, values, keep)
    return values


def _reuse(line: StraightLine, bound: _Bound, values: dict, keep: tuple[str, ...]) -> None:
    """Keep this call's arrays for the next call of its signature, and drop those another
    signature kept: a function called at many shapes holds about one call's arrays, not one per
    shape (threads calling at two signatures at once may each keep theirs for a while)."""
    previous, line._reusing = line._reusing, bound
    if previous is not None and previous is not bound:
        previous.drop()
    bound.give(values, keep)


# -- the NumPy interpreter: step kind -> a closure computing it for these shapes ----------------


def _contract_instruction(step: Contract, values, factored):
    """The step as ``instruction(values, out)``: ``out``, where given, an array of the result's
    shape and dtype from an earlier evaluation that nothing else holds, which the step may write into."""
    contraction, target = step.contraction, step.target
    plan = contraction.plan_for(values)
    steps, out_shape, dtype = plan
    write = _kept(out_shape, dtype)  # decided once: every call of these shapes rounds alike
    kind, coeff, function, names, bshape, _ = steps[0] if len(steps) == 1 else (None,) * 6
    if kind == "dense" and coeff is None and function is not None and bshape == out_shape:
        into = writer(function, len(names)) if write and contraction.whole_first() else None
        if len(names) == 1:
            (a,) = names

            def instruction(v, out, f=function, a=a, t=target):
                v[t] = f(v[a])

        elif into is not None:  # the same arithmetic whether an array is given or not
            new = functools.partial(new_array, out_shape, plan[2])

            def instruction(v, out, into=into, names=names, t=target, new=new):
                v[t] = into(*[v[n] for n in names], out=new() if out is None else out)

        elif len(names) == 2:
            a, b = names

            def instruction(v, out, f=function, a=a, b=b, t=target):
                v[t] = f(v[a], v[b])

        else:

            def instruction(v, out, f=function, names=names, t=target):
                v[t] = f(*[v[n] for n in names])

        return instruction

    def instruction(v, out, c=contraction, plan=plan, t=target, write=write):
        v[t] = c.execute(plan, v, out=out, write=write)

    return instruction


def _kept(shape, dtype) -> bool:
    """Whether an array of this shape and dtype is large enough to be kept between calls."""
    return math.prod(shape) * np.dtype(dtype).itemsize >= REUSE_MIN_BYTES


def _donating(step: Contract, values, donated: frozenset[str]):
    """A contraction that may write into the ``donated`` arrays: those that are arrays of their
    own when it runs (sharing no memory with an input, which the caller owns, or with any other
    value: ``Q_ij = P_ji`` is a view of P)."""
    contraction, target = step.contraction, step.target
    plan = contraction.plan_for(values)
    if len(plan[0]) < 2:
        return None  # one term: nothing is added in place

    write = _kept(plan[1], plan[2])

    def instruction(v, out, c=contraction, plan=plan, t=target, donated=tuple(donated), write=write):
        own = frozenset(n for n in donated if own_array(v[n], [v[i] for i in v if i != n]))
        v[t] = c.execute(plan, v, own, out=None if own else out, write=write)

    return instruction


def _solve_instruction(step: Solve, values, factored):
    if step.source in factored:

        def instruction(v, out, s=step, t=step.target):
            v[t] = linalg.shared_solve(v, s.func, s.source, s.operand)

    else:

        def instruction(v, out, s=step, t=step.target):
            v[t] = solve(s.func, s.source, v[s.source], v[s.operand])

    return instruction


def _matrix_instruction(step: MatrixFunction, values, factored):
    if step.source in factored:

        def instruction(v, out, s=step, t=step.target):
            v[t] = linalg.shared_function(v, s.func, s.source)

    else:

        def instruction(v, out, s=step, t=step.target):
            v[t] = matrix_function(s.func, s.source, v[s.source])

    return instruction


def _softmax_instruction(step: Softmax, values, factored):
    def instruction(v, out, a=step.source, axes=step.axes[0], t=step.target):
        v[t] = _softmax(v[a], axes, out)

    return instruction


def _logsumexp_instruction(step: LogSumExp, values, factored):
    def instruction(v, out, a=step.source, axes=step.axes, t=step.target):
        v[t] = _logsumexp(v[a], *axes)

    return instruction


def _log_softmax_instruction(step: LogSoftmax, values, factored):
    def instruction(v, out, a=step.source, axes=step.axes[0], t=step.target):
        v[t] = _log_softmax(v[a], axes)

    return instruction


def _softmax_complement_instruction(step: SoftmaxComplement, values, factored):
    def instruction(v, out, a=step.source, axes=step.axes[0], t=step.target):
        v[t] = _softmax_complement(v[a], axes, out)

    return instruction


def _softmax_centred_instruction(step: SoftmaxCentred, values, factored):
    def instruction(v, out, p=step.source, x=step.operand, axes=step.axes[0], t=step.target):
        v[t] = _softmax_centred(v[p], v[x], axes, out)

    return instruction


def _log_one_minus_exp_instruction(step: LogOneMinusExp, values, factored):
    def instruction(v, out, a=step.source, t=step.target):
        v[t] = _log_one_minus_exp(v[a], out)

    return instruction


def _elementwise_instruction(step: Elementwise, values, factored):
    def instruction(v, out, a=step.source, func=step.func, param=step.param, t=step.target):
        x = v[a]
        if out is not None and out.dtype == np.result_type(x) and out.shape == np.shape(x):
            if func == "pow" and param in _SMALL_POWERS and x.dtype.kind == "f" and x.ndim:
                v[t] = _NUMPY._small_power(x, int(param), out=out)  # the same products, into out
                return
            ufunc = _ufunc(func, param)
            if ufunc is not None:
                v[t] = ufunc(x, out=out)
                return
        v[t] = apply_function(func, param, x)

    return instruction


_POWERS = {2: np.square, -1: real_reciprocal, Fraction(1, 2): np.sqrt}
_SMALL_POWERS = (-2, 3, -3, 4, -4)  # by products (``ArrayOps._small_power``)


def _ufunc(func: str, param: Fraction | None):
    """The NumPy ufunc that ``apply_function(func, param, x)`` is for real arrays, or the registry's
    NumPy function where it takes ``out=`` as one does (``elementwise._writes_into``), else None
    (looked up at each call: a function registered again is found)."""
    if func == "pow":
        return _POWERS.get(param)
    function = _NUMPY.function(func)
    if isinstance(function, np.ufunc):
        return function if function.nin == 1 and function.nout == 1 else None
    return function if getattr(function, "writes_into", False) else None


#: the NumPy interpreter: each kind of step -> (step, values, factored matrices) -> a closure
NUMPY_INSTRUCTIONS = {
    Contract: _contract_instruction,
    Solve: _solve_instruction,
    MatrixFunction: _matrix_instruction,
    Softmax: _softmax_instruction,
    LogSumExp: _logsumexp_instruction,
    LogSoftmax: _log_softmax_instruction,
    SoftmaxComplement: _softmax_complement_instruction,
    SoftmaxCentred: _softmax_centred_instruction,
    LogOneMinusExp: _log_one_minus_exp_instruction,
    Elementwise: _elementwise_instruction,
}


# -- the generic interpreter (torch, JAX, CuPy, dask): step kind -> its value ------------------


def _generic_contract(step: Contract, values, ops: ArrayOps, like):
    contraction = step.contraction
    return contraction.execute_generic(contraction.generic_plan(values, ops), values, ops, like)


#: the other array libraries' interpreter: each kind of step -> (step, values, ops, like) -> array
GENERIC_STEPS = {
    Contract: _generic_contract,
    Solve: lambda step, values, ops, like: generic_solve(
        step.func, step.source, values[step.source], values[step.operand], ops
    ),
    MatrixFunction: lambda step, values, ops, like: generic_matrix_function(
        step.func, step.source, values[step.source], ops
    ),
    Softmax: lambda step, values, ops, like: generic_softmax(values[step.source], step.axes[0], ops),
    LogSumExp: lambda step, values, ops, like: generic_logsumexp(values[step.source], *step.axes, ops),
    LogSoftmax: lambda step, values, ops, like: generic_log_softmax(values[step.source], step.axes[0], ops),
    SoftmaxComplement: lambda step, values, ops, like: generic_softmax_complement(
        values[step.source], step.axes[0], ops
    ),
    SoftmaxCentred: lambda step, values, ops, like: generic_softmax_centred(
        values[step.source], values[step.operand], step.axes[0], ops
    ),
    LogOneMinusExp: lambda step, values, ops, like: generic_log_one_minus_exp(values[step.source], ops),
    Elementwise: lambda step, values, ops, like: ops.apply(step.func, step.param, values[step.source]),
}
assert set(NUMPY_INSTRUCTIONS) == set(GENERIC_STEPS) == set(STEP_KINDS)


# -- explaining a line: what each step computes and what it costs, for given shapes ------------


@dataclass(frozen=True)
class StepReport:
    """One step of :func:`explain`: what it computes (its einsum terms, or its call), the shape
    of its result, its floating-point operations and its largest intermediate (elements), as
    opt_einsum's ``PathInfo`` counts them for a contraction."""

    target: str
    kind: str
    computes: str
    shape: tuple[int, ...]
    flops: int
    largest: int


def _placeholder(shape) -> np.ndarray:
    return np.broadcast_to(np.float64(0), tuple(shape))  # a view: no memory, however large


def _explain_contract(step: Contract, values):
    contraction = step.contraction
    _, term_sizes, shape = contraction._sizes(values)
    flops, largest = 0, math.prod(shape)
    for term, sizes in zip(contraction.terms, term_sizes):
        if not term.operands:
            continue
        shapes = [tuple(sizes.get(i, 1) for i in indices) for indices in term.inputs]
        cost, biggest = path_cost(term.subscripts, shapes) if len(shapes) > 1 else _one_operand_cost(term, shapes)
        flops += cost
        largest = max(largest, biggest)
    computes = " + ".join(str(t) for t in contraction.terms) or "0"
    return computes, shape, flops, largest


def _one_operand_cost(term, shapes) -> tuple[int, int]:
    info = opt_einsum.contract_path(term.subscripts, *shapes, shapes=True)[1]
    return int(info.opt_cost), int(info.largest_intermediate)


def _explain_elementwise(step: Elementwise, values):
    shape = values[step.source].shape
    call = f"{step.source}^{step.param}" if step.func == "pow" else f"{step.func}({step.source})"
    return call, shape, math.prod(shape), math.prod(shape)


def _explain_matrix(step: MatrixFunction, values):
    n = values[step.source].shape[0]
    shape = (n, n) if step.func == "inv" else ()
    return f"{step.func}({step.source})", shape, (2 * n**3 if step.func == "inv" else (2 * n**3) // 3), n * n


def _explain_solve(step: Solve, values):
    n, vector = values[step.source].shape[0], values[step.operand].shape
    matrix = f"{step.source}^T" if step.transposed else step.source
    return f"solve({matrix}, {step.operand})", vector, (2 * n**3) // 3 + 2 * n * math.prod(vector), n * n


def _explain_softmax(step: Softmax, values):
    shape = values[step.source].shape
    return f"softmax({step.source}, axes {step.axes[0]})", shape, 4 * math.prod(shape), math.prod(shape)


def _explain_logsumexp(step: LogSumExp, values):
    source = values[step.source].shape
    axes, order = step.axes  # order: the kept axes of the source, as the result lays them out
    shape = tuple(source[k] for k in order)
    return f"logsumexp({step.source}, axes {axes})", shape, 4 * math.prod(source), math.prod(source)


def _explain_log_softmax(step: LogSoftmax, values):
    shape = values[step.source].shape
    return f"log_softmax({step.source}, axes {step.axes[0]})", shape, 5 * math.prod(shape), math.prod(shape)


def _explain_softmax_complement(step: SoftmaxComplement, values):
    shape = values[step.source].shape
    return f"1 - {step.source} (a softmax over axes {step.axes[0]})", shape, 3 * math.prod(shape), math.prod(shape)


def _explain_softmax_centred(step: SoftmaxCentred, values):
    shape = values[step.source].shape
    computes = f"{step.operand} - sum({step.source} {step.operand}) (a softmax over axes {step.axes[0]})"
    return computes, shape, 5 * math.prod(shape), math.prod(shape)


def _explain_log_one_minus_exp(step: LogOneMinusExp, values):
    shape = values[step.source].shape
    return f"log(1 - exp({step.source}))", shape, 3 * math.prod(shape), math.prod(shape)


#: the explainer: each kind of step -> (step, placeholder values) -> (computes, shape, flops, largest)
EXPLAIN = {
    Contract: _explain_contract,
    Elementwise: _explain_elementwise,
    MatrixFunction: _explain_matrix,
    Solve: _explain_solve,
    Softmax: _explain_softmax,
    LogSumExp: _explain_logsumexp,
    LogSoftmax: _explain_log_softmax,
    SoftmaxComplement: _explain_softmax_complement,
    SoftmaxCentred: _explain_softmax_centred,
    LogOneMinusExp: _explain_log_one_minus_exp,
}
assert set(EXPLAIN) == set(STEP_KINDS)


def explain(line: StraightLine, shapes: Mapping[str, tuple[int, ...]]) -> list[StepReport]:
    """Each step of ``line`` for inputs of these shapes: what it computes and what it costs
    (nothing is allocated or computed)."""
    values: dict[str, np.ndarray] = {name: _placeholder(shape) for name, shape in shapes.items()}
    reports = []
    for step in line.steps:
        computes, shape, flops, largest = EXPLAIN[type(step)](step, values)
        values[step.target] = _placeholder(shape)
        reports.append(StepReport(step.target, step.kind, computes, tuple(shape), flops, largest))
    return reports


__all__ = [
    "EXPLAIN",
    "GENERIC_STEPS",
    "NUMPY_INSTRUCTIONS",
    "StepReport",
    "apply_function",
    "as_array",
    "explain",
    "run",
    "run_with",
]
