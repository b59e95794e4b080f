"""``einderiv.check``: a derivative against central finite differences, and against a claim of your own.

The command ``einderiv check`` prints :meth:`CheckResult.report`; the claim readers (index and
matrix notation) live here so that the Python API and the command line share them.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import limits
from .api import compile as compile_
from .api import diff
from .dimensions import dimension_sizes
from .errors import EinderivError, EvaluationError, ParseError, guarded
from .glyphs import format_indices
from .ir import Delta, MatrixCall, Statement, Tensor, derivative_name, walk
from .lower import implicit_indices, normalize
from .matrix.reading import read
from .matrix.translate import translate
from .parser import ascii_name, parse
from .program import unique_name
from .semantics import output_indices

#: the central differences' step: 1e-6, and, where wrt's array is of another scale (its largest
#: magnitude s outside [0.1, 10]), 1e-6 s too, the check keeping the closer of the two: 1e-6 alone
#: failed a right d logdet(S)/dS at S ~ 1e-5 (2.7e-3 off), stepped out of the domain at S ~ 1e-7
#: ("the determinant of 'S' is negative") and vanished at S ~ 1e300, while 1e-6 s alone fails
#: sin(x) at x = [1e4, 0.3, 1] and leaves log's domain at x = [1e6, 1e-3, 2]
FD_STEP = 1e-6
#: steps tried, times the same scale and as they are, where those above leave the differences off
#: by more than the tolerance: at f = 1e6 + x_i x_i the rounding of f over a step of 1e-6
#: (eps |f| / h, 2e-4) hid the gradient 2 x to 3.4e-5, where a step of 1e-3 gives it to 3e-8
#: (also at x ~ 1e-3, where 1e-3 times the scale is 1e-6 again)
FD_WIDER_STEPS = (1e-4, 1e-3)
#: rounding that central differences are allowed beyond the tolerance, in units of eps times the
#: size of the values differenced over the step (f = 1 + 1e-7 u(x) with a wrong rule for u passed
#: when the allowance was the size of f itself: 1e-6 of it, where the differences resolve 1e-10)
FD_ROUNDING = 64
#: rounding that a claim is allowed besides the tolerance, in units of eps times the size of the
#: expression (up to 1) over that of the wrt entries (at least 1; :func:`_claim_rounding`): where
#: the derivative is mathematically 0, its value and a right claim differ by rounding alone.
#: (The expression's size itself, up to 1, let -inv(S) pass for d logdet(S)/dS at S ~ 1e7.)
CLAIM_ROUNDING = 1024
DEFAULT_SIZE = 3  # per axis, where shapes= says nothing
MAX_PERMUTED = 4  # renamed letters whose other matchings are tried when a claim differs


@dataclass(frozen=True, eq=False)
class CheckResult:
    """What :func:`check` found.  ``ok`` is true when the finite differences agree within ``tol``
    and the claim (if any) matches; ``claim`` is ``None`` (no claim), ``"matches"`` or ``"differs"``."""

    derivative: object  # the einderiv.Derivative checked
    inputs: Mapping[str, np.ndarray]  # the random inputs it was evaluated at
    value: np.ndarray  # the derivative there, in float64
    error: float  # largest relative error against central finite differences
    tol: float
    ok: bool
    claim: str | None = None
    message: str | None = None  # the claim's verdict, as one line
    notes: tuple[str, ...] = ()  # how the claim was read (its letters matched to the derivative's)
    read_as: str | None = None  # a matrix-notation source, as read in index notation

    @property
    def fd_ok(self) -> bool:
        """The finite differences agree within ``tol``."""
        return self.error <= self.tol

    @property
    def matches(self) -> bool | None:
        """The claim matches (True) or differs (False); None without a claim."""
        return None if self.claim is None else self.claim == "matches"

    def report(self) -> str:
        """The lines ``einderiv check`` prints."""
        lines = [
            *([f"read as: {self.read_as}"] if self.read_as is not None else []),
            f"derivative: {self.derivative.statement}",
            f"inputs: {', '.join(f'{k} {v.shape}' for k, v in self.inputs.items())}",
            f"finite differences: max relative error {self.error:.2g} (tolerance {self.tol:g}): "
            f"{'ok' if self.fd_ok else 'FAILED'}",
            *(f"note: {note}" for note in self.notes),
        ]
        if self.message is not None:
            lines.append(self.message)
        return "\n".join(lines)

    __str__ = report


@guarded
def check(
    source,
    wrt: str | Sequence[str],
    expect: str | None = None,
    tol: float = 1e-6,
    shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    of: str | None = None,
    seed: int = 0,
    notation: str = "auto",
    ranks: Mapping[str, int] | None = None,
    symmetric: Sequence[str] | None = None,
    diagonal: Sequence[str] | None = None,
    symmetric_convention: str = "frobenius",
    values: Mapping[str, object] | None = None,
) -> CheckResult:
    """Differentiate ``source`` with respect to ``wrt`` (as :func:`einderiv.diff`), evaluate the
    derivative at random normal inputs (``DEFAULT_SIZE`` per axis unless ``shapes`` gives an
    input's shape), and compare it with central finite differences in float64 (the largest error
    relative to the derivative's size, or to what the differences resolve where that is larger:
    :func:`_fd_error`).  With ``expect``, compare it also with your own
    derivation, in index notation (``"2 A_kj x_j"``, or a whole statement ``"df/dx_i = ..."``)
    or matrix notation (``"(A + A^T) x"``).  An index-notation claim whose free indices are other
    letters than the derivative's is compared under the matching it states in ``notes``.
    ``notation`` and ``ranks`` say how ``source`` is written, as for :func:`einderiv.diff` (the
    axes of ``shapes`` count as ranks of matrix notation).  With ``symmetric=`` or ``diagonal=``
    (as for :func:`einderiv.diff`), those inputs are drawn symmetric positive definite or
    diagonal, and the finite differences are projected by the same convention as the derivative
    (sym(N), N + Nᵀ − N∘I, or N∘I of the entrywise differences N).  ``values`` fixes inputs to
    arrays of your own (``{"y": one_hot}``), for a claim that holds only there: their shapes count
    as ``shapes`` do, and they are never redrawn."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:  # NaN too; inf accepts all
        raise EinderivError(f"tol must be a non-negative number, got {tol!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise EinderivError(f"seed must be a non-negative integer, got {seed!r}")
    given = _shapes(shapes)
    fixed = _values(values, given)
    reading = read(source, notation, ranks, {name: len(shape) for name, shape in given.items()})
    source = source if reading is None else reading
    specs = list(wrt) if isinstance(wrt, (list, tuple)) else [wrt]
    structure = {"symmetric": symmetric, "diagonal": diagonal, "symmetric_convention": symmetric_convention}
    derivative = diff(source, specs, of=of, **structure)
    lower = compile_(source, of=of) if len(derivative.wrt) == 1 else diff(source, specs[:-1], of=of, **structure)
    # the lower derivative is read at S perturbed one entry at a time, off the symmetric matrices:
    # projected below, only its derivatives along symmetric directions count, which it has right
    lower.structure = {}
    domain_notes: tuple[str, ...] = ()
    last = derivative.wrt[-1].name
    if last in given:  # before any array is made: --shape x=30000 built a 7 GB matrix first
        _within_checked(last, math.prod(given[last]))
    unknown = sorted(set(fixed) - set(derivative.ranks), key=str)
    if unknown:
        raise EinderivError(f"values: {unknown[0]!r} is not an input (inputs: {', '.join(derivative.inputs)})")
    with np.errstate(all="ignore"):
        arrays, analytic, domains = _inputs_in_domain(derivative, lower, given, seed, fixed)
    if domains:
        square = sorted(set(derivative.program_dimensions.square) & {n for n, d in domains.items() if d == "positive"})
        drawn = "; ".join(
            f"{', '.join(names)} in [{DOMAINS[domain][0]:g}, {DOMAINS[domain][1]:g}]"
            for domain in DOMAINS
            if (names := [name for name, d in domains.items() if d == domain])
        )
        domain_notes = (
            f"inputs drawn in their domain: {drawn}"
            + (
                f" ({', '.join(square)} with a positive definite symmetric part, M Mᵀ / n + I + 0.15 (B - Bᵀ))"
                if square
                else ""
            )
            + ("; the others signed normal" if len(domains) + len(fixed) < len(arrays) else "")
            + ": at signed normal inputs the expression or its derivative is not finite (a log, square root "
            "or fractional power of a negative number, the log-determinant of a matrix whose determinant "
            "is negative, arcsin or log(1 - p) outside (-1, 1) or (0, 1)?)",
        )
    if fixed:
        domain_notes += (f"inputs given: {', '.join(fixed)} (the others drawn at random)",)
    wrt_name = derivative.wrt[-1].name
    scale = _largest(arrays[wrt_name]) or 1.0
    kind = derivative.structure.get(wrt_name)
    expression = None  # the expression's size at the inputs, where the differences or a claim read it
    if len(derivative.wrt) > 1 or expect is not None:
        with np.errstate(all="ignore"):  # (lower is the expression, for a gradient)
            expression = _largest(_value_of(lower if len(derivative.wrt) == 1 else compile_(source, of=of), arrays))
    own = expression if len(derivative.wrt) > 1 else None
    base = scale if not 0.1 <= scale <= 10 else 1.0
    candidates, refusals = [], []
    wider = [w * base for w in FD_WIDER_STEPS] + (list(FD_WIDER_STEPS) if base != 1.0 else [])
    for steps in ((FD_STEP, *((FD_STEP * scale,) if base != 1.0 else ())), wider):
        for step in steps:
            try:
                numeric, value_size = _central_difference(lower, arrays, wrt_name, analytic.shape, step)
            except EvaluationError as err:  # a step out of the domain (a determinant turned negative)
                refusals.append(err)
                continue
            if kind is not None:
                numeric = _projected(numeric, kind, symmetric_convention)
            with np.errstate(all="ignore"):
                error, _ = _fd_error(analytic, numeric, value_size, own, step, tol)
            candidates.append((error, numeric, value_size))
        if candidates and min(c[0] for c in candidates) <= tol:
            break  # (wider steps only where the usual ones leave the differences off)
    if not candidates:
        raise refusals[0]
    # the step whose differences come closer (a NaN difference, out of the domain, the farthest)
    error, numeric, value_size = min(candidates, key=lambda c: c[0] if np.isfinite(c[0]) else np.inf)
    ok = error <= tol
    if not (np.all(np.isfinite(analytic)) and np.all(np.isfinite(numeric))):
        domain_notes += (
            "the expression or its derivative is not finite at these inputs: finite differences cannot check it",
        )
    read_as = reading.text if reading is not None and reading.notation == "matrix" else None
    if expect is None:
        return CheckResult(derivative, arrays, analytic, error, tol, ok, notes=domain_notes, read_as=read_as)
    if analytic.size and not np.any(analytic):
        floor, rounding = 1.0, 0.0  # (as for the differences above)
    else:
        floor, rounding = 0.0, _claim_rounding(derivative, arrays, analytic.shape, expression)
    verdict, message, notes = _compare_claim(expect, derivative, arrays, analytic, tol, floor, rounding)
    return CheckResult(
        derivative,
        arrays,
        analytic,
        error,
        tol,
        ok and verdict == "matches",
        verdict,
        message,
        domain_notes + tuple(notes),
        read_as,
    )


def _finite(analytic: np.ndarray, lower, arrays: dict) -> bool:
    """Whether the derivative and the expression it differentiates are finite at ``arrays``."""
    value = lower({k: v for k, v in arrays.items() if k in lower.ranks})
    return bool(np.all(np.isfinite(analytic)) and np.all(np.isfinite(value)))


def _structured(arrays: dict[str, np.ndarray], structure: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The random inputs declared symmetric made symmetric positive definite (M Mᵀ / n + I), and
    those declared diagonal diagonal."""
    for name, kind in structure.items():
        m = arrays[name]
        if m.ndim == 2 and m.shape[0] == m.shape[1]:
            arrays[name] = m @ m.T / max(1, len(m)) + np.eye(len(m)) if kind == "symmetric" else np.diag(np.diag(m))
    return arrays


def _projected(numeric: np.ndarray, kind: str, convention: str) -> np.ndarray:
    """Entrywise differences N (last two axes: the structured matrix) projected as the derivative
    is: sym(N), or N + Nᵀ − N∘I for the cookbook, or N∘I for a diagonal matrix."""
    transposed = np.swapaxes(numeric, -1, -2)
    eye = np.eye(numeric.shape[-1])
    if kind == "diagonal":
        return numeric * eye
    if convention == "cookbook":
        return numeric + transposed - numeric * eye
    return 0.5 * (numeric + transposed)


def _values(values, given: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """``values=`` checked and read as float64 arrays; their shapes added to ``given`` (the
    shapes), where one is given for the same name it must agree."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise EinderivError(f"values must map input names to arrays, such as {{'y': [0, 1, 0]}}, got {values!r}")
    fixed = {}
    for name, value in values.items():
        name = ascii_name(name) if isinstance(name, str) else name  # as the text is read: θ is theta
        if name in fixed:
            raise EinderivError(f"values: {name!r} is given twice (a Greek letter is its English name)")
        if np.iscomplexobj(value):  # the cast below would drop the imaginary part, with a warning
            raise EinderivError(f"input {name!r} is complex: check takes real inputs, along which it takes differences")
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise EinderivError(f"values: {name!r} is not an array of real numbers ({err})") from None
        if name in given and given[name] != array.shape:
            raise EinderivError(f"values: {name!r} has shape {array.shape}, but shapes gives {given[name]}")
        given[name] = array.shape
        fixed[name] = array
    return fixed


def _shapes(shapes) -> dict[str, tuple[int, ...]]:
    """``shapes=`` checked: names mapped to tuples of sizes."""
    if shapes is None:
        return {}
    if not isinstance(shapes, Mapping):
        raise EinderivError(f"shapes must map input names to shapes, such as {{'x': (4,)}}, got {shapes!r}")
    read = {}
    for name, shape in shapes.items():
        spelled = ascii_name(name) if isinstance(name, str) else name  # as the text is read: θ is theta
        if spelled in read:
            raise EinderivError(f"shapes: {spelled!r} is given twice (a Greek letter is its English name)")
        read[spelled] = _shape(name, shape)
    return read


#: where an input is drawn when the expression is not finite at signed normal ones: positive
#: (sqrt, log, logdet), or inside (0, 1) (log(1 - p), arcsin, arccos)
DOMAINS = {"positive": (0.5, 2.0), "unit": (0.05, 0.95)}
POSITIVE = DOMAINS["positive"]


def _inputs_in_domain(
    derivative, lower, given, seed, fixed=None
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, str]]:
    """Random inputs at which the derivative and its expression are finite, the derivative
    there, and the inputs not drawn signed normal, with their domain.  Tried in turn: every input
    signed normal; every input positive; every input in (0, 1); square matrices positive and the
    rest in (0, 1).  From the first of those that is finite, each input goes back to signed normal
    (else positive) where the expression stays finite, so an input that only ``log(s_i)`` needs
    keeps ``abs(r_i)``'s argument signed and a claim of 1 for sign(r) is not passed.  Where none
    is finite, every input is positive, and the caller's finite differences say that no check is
    possible.  The inputs ``fixed`` gives keep their arrays throughout."""
    fixed = fixed or {}
    draws = {domain: _random_inputs(derivative, given, seed, domain) for domain in ("normal", *DOMAINS)}
    names = [name for name in draws["normal"] if name not in fixed]
    square = set(derivative.program_dimensions.square)

    def finite_at(choice: dict[str, str]) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        drawn = _structured(
            {name: draws[choice.get(name, "normal")][name] for name in draws["normal"]}, derivative.structure
        )
        arrays = {name: fixed.get(name, array) for name, array in drawn.items()}
        try:
            analytic = np.asarray(derivative(arrays), dtype=np.float64)
            return (arrays, analytic) if _finite(analytic, lower, arrays) else None
        except EvaluationError:  # logdet(A) at a normal A: a negative determinant half the time
            return None

    tries = [
        dict.fromkeys(names, "normal"),
        dict.fromkeys(names, "positive"),
        dict.fromkeys(names, "unit"),
        {name: "positive" if name in square else "unit" for name in names},
    ]
    for choice in tries:
        if (found := finite_at(choice)) is None:
            continue
        for name in names:
            for domain in ("normal", "positive")[: ("normal", "positive", "unit").index(choice[name])]:
                if (fewer := finite_at({**choice, name: domain})) is not None:
                    choice, found = {**choice, name: domain}, fewer
                    break
        return (*found, {name: domain for name, domain in choice.items() if domain != "normal"})
    arrays = _structured(dict(draws["positive"]), derivative.structure)
    arrays = {name: fixed.get(name, array) for name, array in arrays.items()}
    return arrays, np.asarray(derivative(arrays), dtype=np.float64), dict.fromkeys(names, "positive")


def _random_inputs(
    derivative, given: dict[str, tuple[int, ...]], seed: int, domain: str = "normal"
) -> dict[str, np.ndarray]:
    """Every input drawn signed normal, or uniform in ``DOMAINS[domain]`` (a square matrix under
    ``positive``: with a positive definite symmetric part)."""
    unknown = sorted(set(given) - set(derivative.ranks), key=str)
    if unknown:
        raise EinderivError(f"shapes: {unknown[0]!r} is not an input (inputs: {', '.join(derivative.inputs)})")
    rng = np.random.default_rng(seed)
    for name, shape in given.items():
        if len(shape) != derivative.ranks[name]:
            rank = derivative.ranks[name]
            raise EinderivError(f"shape {shape} for {name!r} has {len(shape)} axes but {name!r} has {rank} indices")
    dims = derivative.program_dimensions
    sized = dimension_sizes(dims, given)  # a size given for X_nd is n's size in y_n too
    arrays = {}
    for name, rank in derivative.ranks.items():
        shape = given.get(name) or tuple(sized.get(dims.axis(name, k), (DEFAULT_SIZE,))[0] for k in range(rank))
        try:
            if domain == "positive" and name in dims.square and len(shape) == 2 and shape[0] == shape[1]:
                # in logdet's domain and not symmetric, so that a transpose missing from a claim (or
                # from a derivative) shows: a positive definite symmetric part M Mᵀ / n + I (each
                # eigenvalue then has a positive real part, the determinant is positive) plus an
                # antisymmetric part small enough to keep every entry positive
                m = rng.uniform(*POSITIVE, size=shape)
                b = rng.uniform(*POSITIVE, size=shape)
                arrays[name] = m @ m.T / max(1, len(m)) + np.eye(len(m)) + 0.15 * (b - b.T)
            else:
                arrays[name] = (
                    rng.normal(size=shape) if domain == "normal" else rng.uniform(*DOMAINS[domain], size=shape)
                )
        except (MemoryError, ValueError) as err:
            raise EvaluationError(f"input {name!r} of shape {shape} is too large to allocate ({err})") from None
    return arrays


def _shape(name: str, shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        sizes = tuple(shape)
    except TypeError:
        raise EinderivError(f"the shape of {name!r} must be a tuple of sizes, got {shape!r}") from None
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in sizes):
        raise EinderivError(f"the shape of {name!r} must be non-negative integers, got {shape!r}")
    return tuple(int(n) for n in sizes)


def _within_checked(wrt: str, entries: int) -> None:
    """An error where a check by ``wrt`` would difference more than ``max_checked`` entries."""
    if entries > limits.current().max_checked:
        raise EinderivError(
            f"a check by {wrt!r} takes central differences at each of its {entries:,} entries (two "
            f"evaluations each), past "
            f"{limits.over('max_checked')}: give {wrt!r} a smaller shape (--shape, shapes=), or "
            f"{limits.raise_hint('max_checked')}"
        )


def _central_difference(
    lower, arrays: dict, wrt: str, shape: tuple[int, ...], step: float = FD_STEP
) -> tuple[np.ndarray, float]:
    """d lower / d arrays[wrt] by central differences with ``step``, in float64 (shape lower's +
    wrt's), and the largest magnitude of lower's values on the way."""
    base = {k: v for k, v in arrays.items() if k in lower.ranks or k == wrt}
    _within_checked(wrt, int(np.size(base[wrt])))
    numeric = np.zeros(shape)
    largest = 0.0
    with np.errstate(all="ignore"):  # inf - inf where the expression overflows: said in a note
        for position in np.ndindex(*base[wrt].shape):  # a check, not an evaluation path
            plus, minus = dict(base), dict(base)
            plus[wrt], minus[wrt] = base[wrt].copy(), base[wrt].copy()
            plus[wrt][position] += step
            minus[wrt][position] -= step
            up = np.asarray(lower({k: v for k, v in plus.items() if k in lower.ranks}))
            down = np.asarray(lower({k: v for k, v in minus.items() if k in lower.ranks}))
            # over the step taken: x + h rounds where |x| is large (cos at x = 1e6 failed by 3e-6)
            taken = float(plus[wrt][position]) - float(minus[wrt][position])
            numeric[(Ellipsis, *position)] = (up - down) / (taken if taken > 0 else 2 * step)
            largest = max(largest, _largest(up), _largest(down))
    return numeric, largest


def _value_of(compiled, arrays: dict):
    """``compiled`` at ``arrays`` (those it reads), or NaN where it cannot be evaluated there."""
    try:
        return compiled({k: v for k, v in arrays.items() if k in compiled.ranks})
    except EvaluationError:
        return np.nan


def _largest(a) -> float:
    """The largest finite magnitude in ``a`` (0 for none)."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    finite = a[np.isfinite(a)]
    return float(finite.max()) if finite.size else 0.0


def _differences(a: np.ndarray, b: np.ndarray, nan_equal: bool = False) -> np.ndarray:
    """|a - b| entrywise, 0 where the entries are equal (inf and inf; NaN and NaN with
    ``nan_equal``) and inf where one is NaN otherwise: nothing is checked there."""
    same = a == b
    if nan_equal:
        same |= np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.where(same, 0.0, np.abs(a - b)), nan=np.inf)


def _largest_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max :func:`_differences` (0 for no entries)."""
    return float(_differences(a, b).max()) if a.size else 0.0


def _fd_error(analytic, numeric, value_size: float, own: float | None, step: float, tol: float):
    """(error, floor): the largest difference of ``analytic`` and ``numeric`` relative to the
    larger of their sizes, or to ``floor`` where that is larger.  The floor is what the
    differences resolve at this ``step``, over the tolerance: their rounding, ``FD_ROUNDING`` eps
    times the size of the values differenced (the lower derivative, ``value_size``, or the
    expression, ``own``, where that is larger: the gradient of sigmoid(x) + sigmoid(-x), a
    Hessian's lower derivative, is rounding alone), over the step; and never more than that
    size, up to 1.  A derivative that is exactly 0 is checked against 1, as its f may be rounding
    alone (sum_i(x_i - mean_j(x_j))), and so is one whose expression is exactly 0 wherever it
    was evaluated (its differences are 0, the derivative rounding alone)."""
    values = max(value_size, own or 0.0)
    if analytic.size and not np.any(analytic) or values == 0:
        floor = 1.0  # (an expression 0 wherever it was evaluated, sum_i(x_i s(x_i) + x_i s(-x_i) - x_i), too)
    else:
        floor = min(1.0, values)
        if tol > 0:
            floor = min(floor, FD_ROUNDING * np.finfo(float).eps * values / (step * tol))
    size = max(_largest(numeric), _largest(analytic), floor)
    return _largest_difference(analytic, numeric) / max(size, np.finfo(float).tiny), floor


def _claim_rounding(derivative, arrays: dict, shape: tuple[int, ...], value: float) -> np.ndarray:
    """The rounding a claim is allowed besides the tolerance, entry by entry: ``CLAIM_ROUNDING``
    eps times the expression's size at the inputs (up to 1; 1 where it is exactly 0, as an
    expression that cancels to 0 is), over the size of each wrt entry the entry is by (at least
    1, once per variable: a Hessian's entries scale as 1 / s^2).  So a claim of 0 matches a
    derivative that is 0 but for rounding (the gradient of sigmoid(x) + sigmoid(-x), also at
    x = [1e6, 0.5, -0.3], where one allowance by the largest entry was too small), while -S^-1
    for d logdet(S)/dS differs at a covariance of 1e7 or 1e300.  ``value``: the expression's
    largest magnitude at the inputs."""
    allowance = np.full((), CLAIM_ROUNDING * np.finfo(float).eps * (min(1.0, value) if value > 0 else 1.0))
    entries = [np.maximum(1.0, np.abs(np.asarray(arrays[w.name], dtype=np.float64))) for w in derivative.wrt]
    scale = np.ones(())
    for entry in entries:
        scale = np.multiply.outer(scale, entry)
    wrt_rank = scale.ndim
    if wrt_rank > len(shape) or tuple(shape[len(shape) - wrt_rank :]) != scale.shape:
        return allowance  # (a layout this does not follow: one allowance for every entry)
    return allowance / scale


def _compare_claim(expect: str, derivative, arrays, analytic, tol: float, floor: float = 0.0, rounding=0.0):
    """(verdict, message, notes) for a claim; the message is one line.  It matches within ``tol``
    of the larger of the two sizes (or of ``floor`` where that is larger: 1 for a derivative that
    is exactly 0), plus ``rounding`` (a number, or one per entry): a claim of 0 for a derivative
    that is rounding alone matches."""
    if not isinstance(expect, str):
        raise EinderivError(f"expect must be text in index or matrix notation, got {type(expect).__name__}")
    notation, rhs, indices, renamed = read_claim(expect, derivative)
    size = _largest(analytic)

    def compare(indices):
        """(the claim's value, |claim - derivative|, its largest entry, whether every entry is
        within the bound): relative to the larger of the two sizes (1e-7 A x is not the gradient
        1e-7 (A + Aᵀ) x because both are small), plus each entry's rounding."""
        value = claim_value(rhs, indices, arrays, analytic.shape)
        difference = _differences(value, analytic, nan_equal=True)  # the same inf or NaN is equal
        bound = tol * max(size, _largest(value), floor) + rounding
        within = bool(np.all(difference <= bound))
        return value, difference, float(difference.max()) if difference.size else 0.0, within

    claimed, difference, worst, within = compare(indices)

    notes: list[str] = []
    if notation != "index":
        label = f"your claim (matrix notation, read as {rhs})"
    elif renamed:
        label = "your claim (read with " + ", ".join(f"{c} as {d}" for c, d in renamed.items()) + ")"
        notes.append(_renaming_note(rhs, derivative, renamed))
    else:
        label = "your claim"
    if within:
        if not np.all(np.isfinite(analytic)):
            notes.append(
                "where the derivative is not finite the claim is the same inf or NaN: "
                "those entries cannot tell a right claim from a wrong one"
            )
        return "matches", f"{label}: matches (max absolute difference {worst:.2g})", tuple(notes)
    where = np.unravel_index(int(np.argmax(difference)), difference.shape)
    labels = ", ".join(f"{i}={w}" for i, w in zip(derivative.indices, where))
    if len(renamed) > 1:  # another matching of the renamed letters may be what was meant: say so
        notes += _other_matchings(renamed, indices, compare)
    if notation == "index" and not renamed and indices == derivative.indices:
        claimed_rhs = parse(rhs).output.rhs
        letters = {
            i for node in walk(claimed_rhs) if isinstance(node, (Tensor, Delta, MatrixCall)) for i in node.indices
        }
        absent = [i for i in indices if i not in letters]
        if absent:
            notes.append(
                f"the derivative's {'indices' if len(absent) > 1 else 'index'} {', '.join(absent)} "
                f"{'occur' if len(absent) > 1 else 'occurs'} nowhere in your claim, so it is taken as constant "
                f"along {'them' if len(absent) > 1 else 'it'}: a claim is written with the derivative's free "
                f"indices ({', '.join(derivative.indices)}), or as a whole statement"
            )
        try:
            own = implicit_indices(claimed_rhs)
        except EinderivError:
            own = ()
        summed = [i for i in own if i not in indices]
        if len(own) > len(indices) and summed:  # 2 x_i x_j for df/dx_j: i, written once, was summed
            notes.append(
                f"your claim writes {', '.join(summed)} once, as "
                f"{'free indices' if len(summed) > 1 else 'a free index'}, but the derivative's free "
                f"{'indices are' if len(indices) != 1 else 'index is'} {', '.join(indices) or 'none'}: "
                f"{'they were' if len(summed) > 1 else 'it was'} summed (a letter a left-hand side does not "
                f"list is summed); a claim has the derivative's free indices, no more"
            )
    return (
        "differs",
        f"{label}: DIFFERS: max absolute difference {worst:.3g} at {labels or 'the value'} "
        f"(derivative {float(analytic[where]):.6g}, claim {float(claimed[where]):.6g})",
        tuple(notes),
    )


def _other_matchings(renamed: dict[str, str], indices: tuple[str, ...], compare) -> list[str]:
    if len(renamed) > MAX_PERMUTED:
        return []
    letters = list(renamed)
    targets = [renamed[c] for c in letters]
    for order in itertools.permutations(letters):
        if list(order) == letters:
            continue
        swap = dict(zip(letters, order))
        try:
            *_, within = compare(tuple(swap.get(i, i) for i in indices))
        except EinderivError:  # this matching does not fit the derivative's shape: not a candidate
            continue
        if within:
            matched = ", ".join(f"{c} as {d}" for c, d in zip(order, targets))
            return [f"your claim matches if read with {matched} instead: write the whole statement to say which"]
    return []


def _renaming_note(rhs: str, derivative, renamed: dict[str, str]) -> str:
    """Which letters were matched, and the two ways to write the claim with its own letters
    (``rhs``: the claim's right-hand side as it was read, without the name a line may give it)."""
    back = {d: c for c, d in renamed.items()}
    statement = derivative.statement
    target = statement.target
    name = derivative_name(statement.differentiated or "f", len(statement.wrt))  # df/dx_i, not d/dx_i
    lhs = Statement(
        Tensor(name, tuple(back.get(i, i) for i in target.indices)),
        parse(rhs).output.rhs,
        tuple(Tensor(w.name, tuple(back.get(i, i) for i in w.indices)) for w in statement.wrt),
    )
    if len(renamed) == 1:
        (claimed, ours), *_ = renamed.items()
        text = f"your claim's free index is {claimed}, the derivative's is {ours}, so {claimed} was read as {ours}"
    else:
        text = (
            f"your claim's free indices {', '.join(renamed)} are not the derivative's ({', '.join(renamed.values())}), "
            "so they were matched in alphabetical order (an expression's own axis order): "
            + ", ".join(f"{c} read as {d}" for c, d in renamed.items())
        )
    text += "; to use your letters, "
    if not any(i in back for i in target.indices):  # only wrt letters differ: --wrt can name them
        wrts = " ".join(f"--wrt {Tensor(w.name, tuple(back.get(i, i) for i in w.indices))}" for w in derivative.wrt)
        text += f"differentiate with {wrts}, or "
    return text + f"write the whole statement: {lhs}"


def parse_claim(text: str):
    program = parse(text)
    if len(program.statements) != 1:
        raise EinderivError("--expect takes one expression or one statement")
    return program.output


def read_claim(text: str, derivative) -> tuple[str, str, tuple[str, ...], dict[str, str]]:
    """A claim read as (notation, right-hand side in index notation, its free indices in the
    derivative's axis order, {claim letter: derivative letter} where they were matched).

    Text with ``_`` subscripts or an ``=`` is read as index notation first, other text as matrix
    notation first (``A x + A^T x``: rows and columns are the derivative's first and second
    index); when the first reading is a syntax error (or a line with ``=`` fails as index
    notation) the other one is tried, and if both fail the first reading's error is raised."""
    if "=" in text and ";" not in text and "\n" not in text.strip():  # (several statements: the readers say so)
        left, right = text.split("=", 1)
        named = _check_left_side(left, derivative)
        if named is not None:
            # the name checked, the claim is its right-hand side, or the statement as the parser
            # spells a derivative's name where the name gives the letters (d²f/dx_j dy_k is d2f/...);
            # read whole, d2f/dxdy was a derivative by "xdy" and d²f/dx_j dy_k no left-hand side
            text = right if "_" not in left or named.startswith("∇") else f"{named} ={right}"
    readers = [("index", _index_claim), ("matrix", _matrix_claim)]
    number = re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", text)
    # (a number alone is that constant in every entry, also beyond matrix notation's two axes)
    if "_" not in text and "=" not in text and not (number and len(derivative.indices) > 2):
        readers.reverse()
    try:
        return (readers[0][0], *readers[0][1](text, derivative))
    except EinderivError as first_error:
        # a syntax error, or a whole matrix line (df/dx = 2 A x reads as index notation over
        # scalars, and fails there on its indices): try the other reading
        if not isinstance(first_error, ParseError) and not (readers[0][0] == "index" and "=" in text):
            raise
        try:
            return (readers[1][0], *readers[1][1](text, derivative))
        except EinderivError:
            raise first_error from None


def claim_value(rhs: str, indices: tuple[str, ...], arrays: dict, shape: tuple[int, ...]):
    """Compile ``claim_{indices} = rhs`` with einderiv and evaluate it on ``arrays``, broadcast to
    ``shape`` (the derivative's): a claim may use only the expression's inputs.  A matrix claim's
    intermediate statements (``M1_ij = X_ji; claim_kl = inv(M1)_kl``) come before it, with ``;``."""
    *before, rhs = rhs.split(";")
    # the names made here are none the claim writes: a claim's own axis0_k, not an input, is an
    # error, where it was read as the zeros that size the first axis
    taken = set(arrays) | set(re.findall(r"[A-Za-z][A-Za-z0-9]*", ";".join([*before, rhs])))
    name = _unused("claim", taken)
    carriers = [_unused(f"axis{n}", taken) for n in range(len(indices))]
    # zero-valued carrier arrays give each free index the derivative's size (a claim such as
    # delta_kl, I, or A - A has no array that says it); the zero term adds nothing to the value
    sizes = " + 0 " + " ".join(c + format_indices((i,)) for c, i in zip(carriers, indices)) if indices else ""
    lhs = name + format_indices(tuple(indices))
    claimed = compile_(parse("; ".join([*before, f"{lhs} = {rhs.strip()}{sizes}"])))
    missing = sorted(set(claimed.ranks) - set(arrays) - set(carriers))
    if missing:
        raise EinderivError(f"--expect uses {missing[0]!r}, which is not an input of the expression")
    given = {**arrays, **{c: np.zeros(n) for c, n in zip(carriers, shape)}}
    try:
        value = np.asarray(claimed({k: given[k] for k in claimed.ranks}), dtype=np.float64)
    except EvaluationError as err:
        raise EinderivError(f"--expect: the claim does not fit the derivative's shape {shape}: {err}") from None
    return np.broadcast_to(value, shape)


def _index_claim(text: str, derivative) -> tuple[str, tuple[str, ...], dict[str, str]]:
    claim = parse_claim(text)
    renamed: dict[str, str] = {}
    if claim.target is not None:  # a whole statement: its axes are the derivative's, in order
        indices = output_indices(claim)
        ours = [w.name for w in derivative.statement.wrt]
        if claim.wrt and [w.name for w in claim.wrt] != ours:
            raise EinderivError(
                f"--expect is a derivative by {' '.join(w.name.removeprefix('d') for w in claim.wrt)}, but the "
                f"derivative checked is by {' '.join(o.removeprefix('d') for o in ours)}"
            )
    else:
        indices, renamed = _claim_letters(claim.rhs, derivative.indices)
    if len(indices) != len(derivative.indices):
        raise EinderivError(
            f"--expect has {len(indices)} free indices but the derivative has {len(derivative.indices)} "
            f"({''.join(derivative.indices)})"
        )
    normalize(claim.rhs, indices)  # checks the claim's index rules
    return str(claim.rhs), tuple(indices), renamed


def _claim_letters(rhs, wanted: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The free indices of a claim without a left-hand side, one per derivative axis.

    A claim is read with the derivative's letters, unless its own free indices (those written
    once per term, as for any expression without a left-hand side) are as many and other
    letters: then they are matched to the derivative's, shared letters to themselves and the
    others in alphabetical order to the derivative's remaining axes in order (``A_ij x_j`` for
    ``df/dx_j``: i is read as j, and the claim's j is a summed index of its own)."""
    try:
        own = implicit_indices(rhs)
    except EinderivError:
        return wanted, {}
    if len(own) != len(wanted) or set(own) == set(wanted):
        return wanted, {}  # a claim broadcast along some axes, or one with a Hadamard letter
    others = iter(i for i in own if i not in wanted)
    renamed = {}
    indices = []
    for index in wanted:
        if index in own:
            indices.append(index)
        else:
            letter = next(others)
            renamed[letter] = index
            indices.append(letter)
    return tuple(indices), renamed


_ORDER = r"(?:\^?\d+|[²³])?"  # d2f, d^2f, d²f
_NAME = r"([A-Za-z][A-Za-z0-9]*)(?:_\{[^}]*\}|_[A-Za-z0-9]+)?"


def _check_left_side(left: str, derivative) -> str | None:
    """A claim line's left side names the derivative checked: ``df/dx`` (``∂f/∂x``, ``d f/d x``,
    ``d^2f/dx dy``, ``d²f/dx²``, ``d2f/dxdy``) or ``∇f`` (``∇_x f``, ``∇²f``); its numerator is the
    output and its denominator the variables, in order.  A left side with a ``/``, ``∂`` or ``∇``
    that is none of these is an error: read as a name and dropped, ``∂g/∂y = A y`` was compared
    with df/dx.  Returns the name as the parser spells it (``d2f/dx_j dy_k``, a ∇ name as it is),
    or None for another left side (``g_k``), which is left to the readers of the claim."""
    # as the text is read (∂f/∂θ is a derivative by theta); a transpose on a vector's name
    # (df/dxᵀ, the numerator layout's row) has the same entries
    spelled = re.sub(r"(?<![A-Za-z0-9_])d\s+(?=[A-Za-z])", "d", ascii_name(left.replace("∂", "d"))).strip()
    for name in {w.name.removeprefix("d") for w in derivative.statement.wrt}:
        if derivative.ranks.get(name) == 1:
            spelled = re.sub(rf"(?<![A-Za-z0-9])d{name}(?:ᵀ|\^T|')(?![A-Za-z0-9])", f"d{name}", spelled)
    written = re.fullmatch(rf"d{_ORDER}\s*{_NAME}\s*/\s*(.+)", spelled)
    if written:
        _check_numerator(written.group(1), derivative)
        _check_denominator(written.group(2), derivative, strict=True)
        order = {"²": "2", "³": "3"}
        numerator = re.sub(r"^d(?:\^?(\d+)|([²³]))\s*", lambda m: "d" + (m.group(1) or order[m.group(2)]), spelled)
        numerator = numerator.split("/", 1)[0].strip()
        return f"{numerator}/{' '.join(_denominator_tokens(written.group(2), derivative))}"
    nabla = re.fullmatch(rf"∇{_ORDER}(?:_\{{?([A-Za-z][A-Za-z0-9]*)\}}?)?\s*{_NAME}", spelled)
    if nabla:
        _check_numerator(nabla.group(2), derivative)
        ours = [w.name.removeprefix("d") for w in derivative.statement.wrt]
        if nabla.group(1) is not None and any(name != nabla.group(1) for name in ours):
            raise EinderivError(
                f"--expect is a derivative by {nabla.group(1)}, but the derivative checked is by {' '.join(ours)}"
            )
        return spelled
    if re.search(r"[/∂∇]", left):
        raise EinderivError(
            f"--expect: cannot read {left.strip()!r} as the derivative's name; write it as df/dx (or ∇f), "
            "or give the right-hand side alone"
        )
    return None


def _check_numerator(numerator: str, derivative) -> None:
    """A claim's numerator names the output (``dg/dx`` for ``f = ...`` is an error); a source
    without a name of its own takes any."""
    if derivative.root.name != "_" and numerator != derivative.root_name:
        raise EinderivError(
            f"--expect is a derivative of {numerator}, but the derivative checked is of {derivative.root_name}"
        )


_POWERS = {"": 1, "²": 2, "³": 3}
#: one variable of a derivative's name: ``dx``, ``dx_k``, ``dx_{kl}``, ``dx^2``, ``dx²`` (its name,
#: and its power as digits or as a superscript)
_VARIABLE = re.compile(r"d([A-Za-z][A-Za-z0-9]*)(?:_\{[^}]*\}|_[A-Za-z0-9]+)?(?:\^(\d+)|([²³]))?")


def _denominator_tokens(denominator: str, derivative) -> list[str]:
    """The variables of a derivative's name, one token each: ``dx dy``, and also run together
    (``dydx``, ``dx_idy_j``), split before each ``d`` and an input's name (the longest first)."""
    names = "|".join(re.escape(n) for n in sorted(derivative.ranks, key=len, reverse=True))
    if not names:
        return denominator.split()
    piece = rf"d(?:{names})(?:_\{{[^}}]*\}}|_[A-Za-z0-9]+?)?(?:\^\d+|[²³])?(?=d(?:{names})|$)"
    tokens = []
    for token in denominator.split():
        whole = _VARIABLE.fullmatch(token)
        if (whole is None or whole.group(1) not in derivative.ranks) and re.fullmatch(rf"(?:{piece})+", token):
            tokens += [m.group(0) for m in re.finditer(piece, token)]
        else:
            tokens.append(token)
    return tokens


def _check_denominator(denominator: str, derivative, strict: bool = False) -> None:
    """A claim line's denominator names the variables the derivative is by, in order (``df/dy``
    for a derivative by x is an error; it was read as the right-hand side alone, and matched):
    ``dx``, ``dx_k``, ``dx dy``, ``dxdy``, ``dx^2``, ``dx2`` or ``dx²``.  Text of another shape is
    an error with ``strict``, else left to the readers of the claim."""
    ours = [w.name.removeprefix("d") for w in derivative.statement.wrt]  # (the statement writes dx)
    runs = [(name, len(list(group))) for name, group in itertools.groupby(ours)]
    spellings = {
        "".join(f"d{n}" for n in ours),  # dxdy
        "".join(f"d{n}" + (f"^{k}" if k > 1 else "") for n, k in runs),  # dx^2 dy
        "".join(f"d{n}" + (str(k) if k > 1 else "") for n, k in runs),  # dx2
    }
    if "".join(denominator.split()) in spellings:
        return
    names = []
    for token in _denominator_tokens(denominator, derivative):
        found = _VARIABLE.fullmatch(token)
        if found is None:
            if strict and re.search(r"ᵀ|\^T|'", token):
                raise EinderivError(
                    f"--expect: a derivative by a transposed matrix ({token}) is the transpose of the one by the "
                    f"matrix; write the claim for {' '.join('d' + name for name in ours)}"
                )
            if strict:
                raise EinderivError(
                    f"--expect: cannot read the variables {denominator.strip()!r} of the derivative's name; "
                    f"write them as {' '.join('d' + name for name in ours)}"
                )
            return
        power = int(found.group(2)) if found.group(2) else _POWERS[found.group(3) or ""]
        names += [found.group(1)] * power
    if names and names != ours:
        raise EinderivError(
            f"--expect is a derivative by {' '.join(names)}, but the derivative checked is by {' '.join(ours)}"
        )


def _matrix_claim(text: str, derivative) -> tuple[str, tuple[str, ...], dict[str, str]]:
    if ";" in text or "\n" in text.strip():  # 5 x; g = 2 x read as matrix notation kept g alone
        raise EinderivError("--expect takes one expression or one statement")
    if "=" in text:  # a whole line as --format matrix prints it: df/dx = (A + A^T) x, ∇f = ...
        left, text = text.split("=", 1)
        if re.search(r"[+*@]|\s-\s", left):  # 5 x_j + g = 2 x: an expression, not a name
            raise EinderivError(f"--expect: {left.strip()!r} is no name for the derivative (df/dx, ∇f)")
    translation = translate(text, derivative.ranks, derivative.indices)
    return translation.rhs, translation.indices, {}


def _unused(name: str, taken: set[str]) -> str:
    """``name``, or ``name2``, ``name3``... whichever no input uses (and record it as taken)."""
    candidate = unique_name(name, taken)
    taken.add(candidate)
    return candidate
