"""Square-matrix functions at evaluation: ``inv``, ``det``, ``logdet``, ``logabsdet`` and the solves
``inv(M)_ij b_j`` -> ``solve(M, b)``, with errors that name the matrix.

On NumPy arrays every one of them is read from one factorisation of the matrix, made at most
once per evaluation (the gradient of ``a_i inv(X)_ij b_j`` by X solves with X and with X^T: one
LU, two triangular solves).  The factorisation is SciPy's LAPACK ``getrf`` (LU with partial
pivoting), or ``potrf`` (Cholesky) where the matrix at hand is real, exactly symmetric and
Cholesky succeeds, which is to say numerically positive definite; a symmetric matrix that is not
falls back to LU.  Nothing about the result depends on which was used but rounding: a singular
matrix (an exact zero pivot of the LU, as ``numpy.linalg`` has it) is an :class:`EvaluationError`
naming it, a matrix with a NaN or an infinity gives NaN, as before.

The other array libraries (torch, jax, cupy, dask) call their own ``inv``, ``slogdet`` and
``solve`` per function (:func:`generic_matrix_function`, :func:`generic_solve`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from .backends import is_complex
from .errors import EvaluationError

if TYPE_CHECKING:
    from .backends import ArrayOps

#: Whether the NumPy path reads every function of a matrix from one factorisation (else each is
#: its own ``numpy.linalg`` call, as before).  Read when a compiled expression first plans for a
#: shape; ``benchmarks/linalg.py`` turns it off to compare the two.
SHARE_FACTORISATIONS = True

#: Whether a real, exactly symmetric matrix with a positive diagonal is tried by Cholesky first
#: (the trigger of MATLAB's backslash and Julia's ``factorize``): 1.2-1.6x faster than LU where
#: it succeeds (benchmarks/linalg.py); where it fails part of the way (symmetric, indefinite) the
#: LU after it costs about 1.5x LU alone.  Read at each factorisation; the benchmark turns it off
#: to compare.
CHOLESKY = True

#: The dtypes LAPACK factorises (anything else, float16 or longdouble, goes to numpy.linalg,
#: which refuses it as it always did).
_LAPACK_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

_ROUTINES: dict[tuple[np.dtype, str], object] = {}


def _routine(name: str, dtype: np.dtype):
    """SciPy's LAPACK wrapper ``name`` (``getrf``, ...) for ``dtype``, looked up once, run on one
    thread for matrices of up to :data:`ONE_THREAD_UP_TO` rows (see :func:`_one_thread`)."""
    routine = _ROUTINES.get((dtype, name))
    if routine is None:
        from scipy.linalg import lapack  # noqa: PLC0415 - imported at the first factorisation, not at import

        found = lapack.get_lapack_funcs((name,), dtype=dtype)[0]
        local = _openblas_threads_local()
        routine = found if local is None or name.endswith("_lwork") else _one_thread(found, local)
        _ROUTINES[dtype, name] = routine
    return routine


#: Matrices of up to this many rows are factorised and solved by SciPy's LAPACK on one thread
#: (where its OpenBLAS says how): a pool's threads buy nothing at that size.
ONE_THREAD_UP_TO = 256


#: Calls in progress that hold SciPy's OpenBLAS at one thread, and the count before the first.
_HELD = {"calls": 0, "before": None}
_HELD_LOCK = threading.Lock()


def _one_thread(routine, local):
    """``routine`` run with SciPy's OpenBLAS on one thread for small matrices.  NumPy and SciPy
    wheels each bundle an OpenBLAS with a thread pool of its own, and a pool's threads spin for a
    while after their work: a 50 x 50 inverse by SciPy between NumPy's matrix products (the
    Gaussian log-likelihood's gradient by its covariance, at 20000 x 50) took 2.8 ms where it
    takes 45 µs, and the product after it 5.2 ms where it takes 1.1 ms, the two pools contending
    for two cores.  In the pthreads builds SciPy's wheels ship, ``openblas_set_num_threads_local``
    sets the library's count for every thread, so the count is 1 while any such call runs (in
    any thread: a user's own SciPy call at that moment runs on one thread too) and is set back
    when the last one ends: a lock and a count of the calls in progress, so that two threads
    never restore each other's 1 (a reviewer's find: four threads left it at 1 for good)."""

    def call(first, *args, **kwargs):
        if np.shape(first)[0] > ONE_THREAD_UP_TO:
            return routine(first, *args, **kwargs)
        with _HELD_LOCK:
            if _HELD["calls"] == 0:
                _HELD["before"] = local(1)
            _HELD["calls"] += 1
        try:
            return routine(first, *args, **kwargs)
        finally:
            with _HELD_LOCK:
                _HELD["calls"] -= 1
                if _HELD["calls"] == 0:
                    local(_HELD["before"])

    return call


_LOCAL_THREADS: list = []


def _openblas_threads_local():
    """SciPy's OpenBLAS's ``openblas_set_num_threads_local`` (set the thread count, return the
    one before), or None where SciPy's LAPACK is not a bundled OpenBLAS that has it (looked up
    once)."""
    if not _LOCAL_THREADS:
        _LOCAL_THREADS.append(_find_threads_local())
    return _LOCAL_THREADS[0]


def _find_threads_local():
    import ctypes  # noqa: PLC0415
    import glob  # noqa: PLC0415
    import os  # noqa: PLC0415

    import scipy  # noqa: PLC0415

    here = os.path.dirname(scipy.__file__)
    patterns = (  # the wheels' bundled libraries: Linux and Windows, then macOS
        os.path.join(here, os.pardir, "scipy.libs", "libscipy_openblas*"),
        os.path.join(here, ".dylibs", "libscipy_openblas*"),
    )
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            function = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        function.restype, function.argtypes = ctypes.c_int, [ctypes.c_int]
        return function
    return None


_POSITIONS = np.arange(0)


def _positions(n: int) -> np.ndarray:
    """0, 1, ..., n - 1: the pivots of an LU that swaps no rows (one array, grown as needed)."""
    global _POSITIONS
    if _POSITIONS.size < n:
        _POSITIONS = np.arange(max(n, 2 * _POSITIONS.size), dtype=np.int32)
    return _POSITIONS[:n]


_WORK: dict[tuple[np.dtype, int], int] = {}


def _getri_work(dtype: np.dtype, n: int) -> int:
    """The workspace ``getri`` asks for at this size (asked once)."""
    work = _WORK.get((dtype, n))
    if work is None:
        if len(_WORK) > 256:
            _WORK.clear()
        lwork, info = _routine("getri_lwork", dtype)(n)
        work = _WORK[dtype, n] = max(int(lwork.real), 1) if info == 0 else max(3 * n, 1)
    return work


def _lapack_error(routine: str, info: int):
    return RuntimeError(f"LAPACK {routine} rejected its argument {-info}")  # a bug here, not the user's input


def lu_factor(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(lu, piv, singular)``: the LU factorisation of ``matrix^T`` with partial pivoting
    (``getrf`` on the transposed view, which LAPACK reads as it is laid out, so the inverse it
    gives comes back in ``matrix``'s C order); ``singular`` when a pivot is exactly zero."""
    lu, piv, info = _routine("getrf", matrix.dtype)(matrix.T)
    if info < 0:
        raise _lapack_error("getrf", info)
    return lu, piv, info > 0


def cholesky(matrix: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a symmetric ``matrix``, or None where it is not (numerically)
    positive definite."""
    factor, info = _routine("potrf", matrix.dtype)(matrix.T, lower=1)
    if info < 0:
        raise _lapack_error("potrf", info)
    return None if info > 0 else factor


def _symmetric(matrix: np.ndarray) -> bool:
    """Exactly symmetric, with a positive diagonal (as a positive definite matrix has): a matrix
    that fails either costs O(n) to turn away, most of them one comparison."""
    last = matrix.shape[0] - 1
    if matrix[0, last] != matrix[last, 0] or matrix[last, last // 2] != matrix[last // 2, last]:
        return False
    if not (np.diagonal(matrix) > 0).all():
        return False
    return bool((matrix == matrix.T).all())


class Factorisation:
    """The functions of one square matrix, read from one factorisation made when first needed."""

    __slots__ = ("name", "matrix", "finite", "_lu", "_cholesky")

    def __init__(self, name: str, matrix: np.ndarray):
        self.name = name
        self.matrix = matrix
        self.finite = bool(np.isfinite(matrix).all())  # NaN and inf propagate as IEEE values
        self._lu: tuple | None = None
        self._cholesky: np.ndarray | None = None

    def _factor(self) -> None:
        if self._lu is not None or self._cholesky is not None:
            return
        matrix = self.matrix
        if CHOLESKY and matrix.dtype.kind == "f" and _symmetric(matrix):
            self._cholesky = cholesky(matrix)
            if self._cholesky is not None:
                return
        self._lu = lu_factor(matrix)

    def _nonsingular(self, func: str) -> None:
        self._factor()
        if self._lu is not None and self._lu[2]:
            raise EvaluationError(f"{func}({self.name}): the matrix {self.name!r} is singular")

    def inv(self) -> np.ndarray:
        """inv(M), C-ordered."""
        matrix = self.matrix
        if not self.finite:
            return np.full(matrix.shape, np.nan, dtype=matrix.dtype)
        self._nonsingular("inv")
        if self._cholesky is not None:
            inverse, info = _routine("potri", matrix.dtype)(self._cholesky, lower=1)
            if info != 0:
                raise _lapack_error("potri", info)
            upper = inverse.T  # its lower triangle, C-ordered: the upper triangle of inv(M)
            out = np.triu(upper)
            out += np.triu(upper, 1).T
            return out
        lu, piv, _ = self._lu
        inverse, info = _routine("getri", matrix.dtype)(lu, piv, lwork=_getri_work(matrix.dtype, matrix.shape[0]))
        if info != 0:
            raise _lapack_error("getri", info)
        return inverse.T  # the inverse of M^T, Fortran-ordered: inv(M), C-ordered

    def solve(self, vector: np.ndarray, transposed: bool) -> np.ndarray:
        """inv(M) b, or inv(M)^T b when ``transposed``."""
        matrix = self.matrix
        if not self.finite:
            return np.full(vector.shape, np.nan, dtype=np.result_type(matrix, vector))
        self._nonsingular("inv")
        if self._cholesky is not None:  # M^T = M
            x, info = _routine("potrs", matrix.dtype)(self._cholesky, vector, lower=1)
            if info != 0:
                raise _lapack_error("potrs", info)
            return x
        lu, piv, _ = self._lu  # of M^T: M^T x = b is its plain solve, M x = b the transposed one
        x, info = _routine("getrs", matrix.dtype)(lu, piv, vector, trans=0 if transposed else 1)
        if info != 0:
            raise _lapack_error("getrs", info)
        return x

    def slogdet(self) -> tuple:
        """(sign, log|det|), as ``numpy.linalg.slogdet`` gives them (sign 0 and -inf when singular)."""
        self._factor()
        if self._cholesky is not None:
            return 1.0, 2 * np.log(np.diagonal(self._cholesky)).sum()
        lu, piv, singular = self._lu
        real = lu.dtype.kind == "f"
        if singular:  # an exact zero pivot
            return lu.dtype.type(0), np.finfo(lu.dtype).dtype.type(-np.inf)
        diagonal = np.diagonal(lu)
        magnitude = np.abs(diagonal)
        logdet = np.log(magnitude).sum()
        flips = np.count_nonzero(piv != _positions(piv.size))  # each row swap flips the sign
        if real:
            flips += np.count_nonzero(diagonal < 0)
            return lu.dtype.type(-1 if flips % 2 else 1), logdet
        return np.prod(diagonal / magnitude) * (-1 if flips % 2 else 1), logdet  # a complex unit

    def det(self) -> np.ndarray:
        """det(M): the sign times the product of the factors' diagonal, accumulated in long double,
        and exp(log|det|) only where that product leaves its range.  exp of log|det| carries
        log|det|'s rounding times |log|det||: a float32 det of 1e30 was 140 ulps off that way
        (8.5e-6), as its gradient det inv^T was."""
        sign, logdet = self.slogdet()
        if sign == 0:
            return np.zeros((), dtype=self.matrix.dtype)
        if self._cholesky is not None:
            diagonal, power = np.diagonal(self._cholesky), 2
        else:
            diagonal, power = np.diagonal(self._lu[0]), 1
        magnitude = np.prod(np.abs(diagonal).astype(np.longdouble)) ** power
        if not (np.isfinite(magnitude) and magnitude > 0):  # the product left long double's range
            return np.asarray(sign * np.exp(logdet))
        with np.errstate(over="ignore", under="ignore"):  # beyond the dtype's range: inf or 0, as det is
            return np.asarray(sign * magnitude.astype(np.finfo(self.matrix.dtype).dtype))

    def function(self, func: str) -> np.ndarray:
        """inv, det, logdet or logabsdet."""
        if func == "inv":
            return self.inv()
        _real_for_logabsdet(func, self.name, self.matrix)
        if not self.finite:
            return np.full((), np.nan, dtype=self.matrix.dtype)
        if func == "det":
            return self.det()
        return _determinant(func, self.name, *self.slogdet())


def _real_for_logabsdet(func: str, name: str, matrix) -> None:
    """logabsdet of a complex matrix is an error: the rules read both log(abs(det(W))) and
    log(det(W)^2) / 2 as logabsdet(W), equal for real matrices only (at a complex W the second is
    log|det| + i arg(det)), and a real value would silently drop that imaginary part."""
    if func == "logabsdet" and is_complex(matrix):
        raise EvaluationError(
            f"logabsdet({name}): {name!r} is complex, and logabsdet (which log(abs(det({name}))) and "
            f"log(det({name})^2) / 2 are read as) is evaluated for real matrices only"
        )


def _determinant(func: str, name: str, sign, logdet) -> np.ndarray:
    """det, logdet or logabsdet from ``slogdet``: a logdet whose determinant is not positive is an
    error; a logabsdet whose determinant is zero is -inf, as log(abs(0)) is; of a complex matrix,
    logdet is the principal log(det), log|det| + i arg(det), as NumPy's log of det."""
    if func == "det":
        return np.asarray(sign * np.exp(logdet))
    if func == "logabsdet":  # (slogdet gives -inf where the determinant is zero)
        return np.asarray(logdet)
    if np.iscomplexobj(sign):
        if sign == 0:
            raise EvaluationError(f"logdet({name}): the determinant of {name!r} is zero, so it has no logarithm")
        return np.asarray(np.log(sign) + logdet)
    if sign <= 0:
        raise EvaluationError(
            f"logdet({name}): the determinant of {name!r} is {'zero' if sign == 0 else 'negative'}, "
            "so its logarithm is not real" + (f" (log|det|: logabsdet({name}))" if sign < 0 else "")
        )
    return np.asarray(logdet)


def shared_matrices(steps) -> frozenset[str]:
    """The matrices that evaluation reads through one factorisation each: every matrix a
    matrix-function or solve step reads (all of them, unless that is turned off)."""
    if not SHARE_FACTORISATIONS:
        return frozenset()
    return frozenset(step.source for step in steps if step.matrix)  # MatrixFunction and Solve


_EVALUATION = threading.local()  # .factorisations: name -> Factorisation (False: not LAPACK's), per evaluation


def one_evaluation(run, *args):
    """``run(*args)``, with its own table of factorisations: each matrix is factorised at most once
    in it, and none outlives it (per thread; an evaluation inside another keeps its own)."""
    outer = getattr(_EVALUATION, "factorisations", None)
    _EVALUATION.factorisations = {}
    try:
        return run(*args)
    finally:
        _EVALUATION.factorisations = outer


def _factorisation(values: dict, func: str, name: str) -> Factorisation | None:
    """This evaluation's factorisation of ``values[name]`` (made on first use), or None where
    LAPACK does not take the matrix."""
    table = getattr(_EVALUATION, "factorisations", None)
    found = None if table is None else table.get(name)
    if found is None:
        matrix = values[name]
        _square_matrix(func, name, matrix)
        usable = type(matrix) is np.ndarray and matrix.dtype in _LAPACK_DTYPES and matrix.shape[0] > 0
        found = Factorisation(name, matrix) if usable else False
        if table is not None:
            table[name] = found
    return found or None


def shared_function(values: dict, func: str, name: str) -> np.ndarray:
    """inv, det or logdet of ``values[name]`` from this evaluation's factorisation of it."""
    factored = _factorisation(values, func, name)
    if factored is None:
        return matrix_function(func, name, values[name])
    return factored.function(func)


def shared_solve(values: dict, func: str, name: str, operand: str) -> np.ndarray:
    """``solve`` (or ``solve_transposed``) with ``values[name]`` from this evaluation's factorisation of it."""
    factored = _factorisation(values, "inv", name)
    vector = values[operand]
    if factored is None or np.result_type(factored.matrix, vector) != factored.matrix.dtype:
        return solve(func, name, values[name], vector)  # (a wider vector: solved in its dtype, as NumPy does)
    return factored.solve(vector, func == "solve_transposed")


# -- one numpy.linalg call per function ---------------------------------------------------------
def _in_a_lapack_dtype(func: str, name: str, array: np.ndarray) -> np.ndarray:
    """``array`` in a dtype LAPACK factorises (``array`` itself where it is in one, or not a float):
    float16 as float32, the result cast back by the caller; longdouble has none, an error that
    names it (NumPy's own is a bare TypeError).  A big-endian array is read in native byte order
    (``>f8`` is float64, which LAPACK takes as NumPy's linalg does)."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype in _LAPACK_DTYPES or array.dtype.kind not in "fc":
        return array
    if array.dtype == np.float16:
        return array.astype(np.float32)
    raise EvaluationError(
        f"{func}({name}): {name!r} is {array.dtype}, which the linear algebra does not take "
        "(float32, float64, complex64 or complex128)"
    )


def solve(func: str, name: str, matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """inv(M) b as a linear solve (``solve_transposed``: inv(M)^T a)."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise EvaluationError(f"inv({name}): {name!r} has shape {matrix.shape}, not a square matrix")
    lapack = _in_a_lapack_dtype("inv", name, matrix), _in_a_lapack_dtype("inv", name, vector)
    if lapack[0] is not matrix or lapack[1] is not vector:
        return solve(func, name, *lapack).astype(np.result_type(matrix, vector))
    if not np.all(np.isfinite(matrix)):  # NaN and inf propagate as IEEE values
        return np.full(vector.shape, np.nan, dtype=np.result_type(matrix, vector))
    try:
        return np.linalg.solve(matrix.T if func == "solve_transposed" else matrix, vector)
    except np.linalg.LinAlgError:
        raise EvaluationError(f"inv({name}): the matrix {name!r} is singular") from None


def matrix_function(func: str, name: str, matrix: np.ndarray) -> np.ndarray:
    """inv, det, logdet or logabsdet of a square matrix, with errors that name it."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise EvaluationError(f"{func}({name}): {name!r} has shape {matrix.shape}, not a square matrix")
    _real_for_logabsdet(func, name, matrix)
    lapack = _in_a_lapack_dtype(func, name, matrix)
    if lapack is not matrix:
        return np.asarray(matrix_function(func, name, lapack)).astype(matrix.dtype)
    if not np.all(np.isfinite(matrix)):  # NaN and inf propagate as IEEE values
        return np.full(matrix.shape if func == "inv" else (), np.nan, dtype=matrix.dtype)
    if func == "inv":
        try:
            return np.linalg.inv(matrix)
        except np.linalg.LinAlgError:
            raise EvaluationError(f"inv({name}): the matrix {name!r} is singular") from None
    if func == "det" and matrix.size:  # the pivots' product (NumPy's det is exp(log|det|))
        return Factorisation(name, np.asarray(matrix)).det()
    return _determinant(func, name, *np.linalg.slogdet(matrix))


# -- other array libraries ---------------------------------------------------------------------
def _square_matrix(func: str, name: str, matrix) -> None:
    shape = tuple(matrix.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise EvaluationError(f"{func}({name}): {name!r} has shape {shape}, not a square matrix")


def _singular(func: str, name: str, compute):
    """Run a factorisation, turning the library's singular-matrix error into ours."""
    try:
        return compute()
    except (np.linalg.LinAlgError, RuntimeError) as err:  # torch.linalg.LinAlgError is a RuntimeError
        if "singular" in str(err).lower() or isinstance(err, np.linalg.LinAlgError):
            raise EvaluationError(f"{func}({name}): the matrix {name!r} is singular") from None
        raise


def generic_matrix_function(func: str, name: str, matrix, ops: ArrayOps):
    """inv, det, logdet and logabsdet on another library.  No branch depends on values (traceable,
    lazy): a non-positive determinant makes logdet NaN rather than an error (a zero one makes
    logabsdet -inf, as on NumPy's path)."""
    _square_matrix(func, name, matrix)
    _real_for_logabsdet(func, name, matrix)
    if func == "inv":
        return _nan_unless_finite(matrix, _singular(func, name, lambda: ops.inv(matrix, name)), ops)
    if func == "det":
        return _nan_unless_finite(matrix, ops.det(matrix), ops)
    sign, logdet = ops.slogdet(matrix)
    if func == "logabsdet":  # (slogdet gives -inf where the determinant is zero)
        return _nan_unless_finite(matrix, logdet, ops)
    if "complex" in str(getattr(sign, "dtype", "")):  # (each library names its complex dtypes so)
        return _nan_unless_finite(matrix, ops.xp.log(sign) + logdet, ops)  # the principal log(det)
    return _nan_unless_finite(matrix, ops.positive_or_nan(sign, logdet), ops)


def _nan_unless_finite(matrix, value, ops: ArrayOps):
    """``value``, or NaN throughout where the matrix holds an inf or a NaN, as the NumPy path has it
    (LAPACK's LU of [[inf, 1], [1, 2]] gives inv [[0, 0], [0, 0.5]] and det inf: numbers, not
    NaN).  No branch on values: traceable and lazy."""
    xp = ops.xp
    return xp.where(xp.all(xp.isfinite(matrix)), value, xp.full_like(value, float("nan")))


def generic_solve(func: str, name: str, matrix, vector, ops: ArrayOps):
    """inv(M) b (``solve_transposed``: inv(M)^T a) by the library's solver."""
    _square_matrix("inv", name, matrix)
    if func == "solve_transposed":
        matrix = ops.matrix_transpose(matrix)
    return _nan_unless_finite(matrix, _singular("inv", name, lambda: ops.solve(matrix, vector, name)), ops)


__all__ = [
    "Factorisation",
    "generic_matrix_function",
    "generic_solve",
    "matrix_function",
    "shared_function",
    "shared_matrices",
    "shared_solve",
    "solve",
]
