"""Array libraries other than NumPy: torch, jax, cupy and dask arrays.

A compiled expression evaluates in the library its inputs come from.  Contractions go through
opt_einsum's backend dispatch (``backend="torch"`` etc.); elementwise functions, reductions and
matrix functions through that library's namespace (``jax.numpy``, ``cupy`` and ``dask.array``
follow NumPy's names; torch gets a small adapter, and the function registry gives torch's own
implementations).  Nothing here writes into an array: results are built from contractions and
sums, so the same code runs on immutable arrays (JAX, traced under ``jax.jit``), on lazy chunked
ones (dask) and under ``torch.compile``.  No library is imported until an array of it arrives.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from fractions import Fraction

import numpy as np
import opt_einsum

from .elementwise import Function, entry
from .errors import EvaluationError
from .ir import to_float

#: The libraries einderiv evaluates with, by the name ``backend=`` takes.
BACKENDS = ("numpy", "torch", "jax", "cupy", "dask")

#: The top-level module of an array's class -> its backend.
_MODULES = {"numpy": "numpy", "torch": "torch", "jax": "jax", "jaxlib": "jax", "cupy": "cupy", "dask": "dask"}


def array_library(value) -> str | None:
    """The backend an array belongs to, or None for anything else (Python numbers and lists,
    which every backend converts)."""
    if isinstance(value, (int, float, complex, bool, list, tuple)):
        return None
    return _MODULES.get(type(value).__module__.split(".")[0])


def host_values(value) -> np.ndarray | None:
    """The numbers of an array another library holds, as a NumPy array, where they are at hand:
    a torch tensor (copied from its device), a JAX array, a CuPy array; None where they are not
    (a JAX tracer under ``jit``, a torch tensor inside a ``torch.func`` transform, a dask array,
    whose numbers are computed only when asked for)."""
    library = array_library(value)
    if library == "numpy":
        return value
    try:
        if library == "torch":
            value = value.detach().cpu()
            try:
                return value.numpy()
            except TypeError:  # bfloat16, which NumPy lacks
                return value.float().numpy()
        if library == "jax":
            return np.asarray(value)  # a tracer raises: its numbers are not known yet
        if library == "cupy":
            return value.get()
    except Exception:  # noqa: BLE001 - any library's refusal means the numbers are not at hand
        return None
    return None


def choose_backend(arrays: Mapping[str, object], backend: str | None) -> str:
    """The backend of one call: ``backend`` when given, else the one library all inputs share.
    Inputs from two libraries are an error (converting silently would copy between devices)."""
    if backend is not None:
        if not isinstance(backend, str) or backend not in BACKENDS:
            shown = repr(backend) if isinstance(backend, str) else f"of type {type(backend).__name__}"
            raise EvaluationError(
                f"unknown backend {shown}; the backends are {', '.join(BACKENDS)} (to pass an input "
                "named 'backend', use Compiled.call({'backend': ...}))"
            )
        return backend
    seen: dict[str, str] = {}
    for name, value in arrays.items():
        library = array_library(value)
        if library is not None:
            seen.setdefault(library, name)
    if len(seen) > 1:
        described = ", ".join(f"{name!r} is a {lib} array" for lib, name in seen.items())
        raise EvaluationError(
            f"inputs from different array libraries: {described}; convert them to one library, "
            "or pass backend= to convert them all"
        )
    return next(iter(seen), "numpy")


_PLANNED: dict[tuple, opt_einsum.contract.ContractExpression] = {}


def planned(subscripts: str, shapes: tuple):
    """opt_einsum's expression for ``subscripts`` on operands of these shapes (planned once)."""
    expression = _PLANNED.get((subscripts, shapes))
    if expression is None:
        if len(_PLANNED) > 4096:  # bounded: a long run over many shapes does not grow it forever
            _PLANNED.clear()
        expression = _PLANNED[subscripts, shapes] = opt_einsum.contract_expression(subscripts, *shapes)
    return expression


#: functions einderiv's rules write that hold for complex values only up to 2 pi i: refused there,
#: by every library (NumPy's logaddexp refuses a complex x itself)
REAL_ONLY = {"softplus": "a rewrite such as log(exp(a) + exp(b)) = a + softplus(b - a) holds there only up to 2 pi i"}


def is_complex(x) -> bool:
    """Whether ``x`` is an array of complex values (NumPy, torch, JAX, ...)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and (getattr(dtype, "kind", None) == "c" or bool(getattr(dtype, "is_complex", False)))


def real_reciprocal(x, out=None):
    """1 / x.  For a real floating NumPy array this is ``np.divide(1.0, x)``, the same correctly
    rounded quotient as ``np.reciprocal``, which NumPy 2 does not vectorise: 94 µs against
    184 µs at 2000 x 200 float64.  Other arrays take ``np.reciprocal``."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return np.divide(x.dtype.type(1), x, out=out)
    return np.reciprocal(x, out=out)


class ArrayOps:
    """The operations evaluation needs, for a library that follows NumPy's names
    (``jax.numpy``, ``cupy``, ``dask.array``; NumPy itself, used to test this path)."""

    def __init__(self, name: str, module: str):
        self.name = name
        self.xp = importlib.import_module(module)
        self._made: dict[str, tuple[Function, Callable]] = {}

    # -- inputs ---------------------------------------------------------------------------
    def convert(self, value, like=None):
        """A NumPy array or Python number as this library's array (beside ``like``, where the
        library has devices)."""
        return self.xp.asarray(value)

    def same_place(self, first, other) -> bool:
        """Whether two of this library's arrays can meet in one operation (same device)."""
        return True

    def float_dtype(self, arrays: list):
        """The common floating dtype, as the NumPy path has it: integers and booleans count as
        float64, then NumPy's promotion (float32 with float64 is float64)."""
        dtypes = [np.dtype(a.dtype) for a in arrays]
        dtypes = [d if d.kind in "fc" else np.dtype(np.float64) for d in dtypes]
        return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)

    def astype(self, x, dtype):
        return x if x.dtype == dtype else x.astype(dtype)

    def is_numeric(self, x) -> bool:
        return np.dtype(x.dtype).kind in "biufc"

    # -- construction ---------------------------------------------------------------------
    def zeros(self, shape, like):
        return self.xp.zeros(shape, dtype=like.dtype)

    def eye_mask(self, n: int, like):
        """The n x n boolean identity: True where the two indices are equal."""
        return self.xp.eye(n, dtype=bool)

    def where(self, mask, value, other):
        return self.xp.where(mask, value, other)

    def own(self, result, inputs: list):
        """The result as an array of its own: not an input, a view of one or a broadcast view."""
        if any(result is x for x in inputs) or result.base is not None or not result.flags.c_contiguous:
            return self.xp.array(result, copy=True)
        return result

    def reshape(self, x, shape):
        return self.xp.reshape(x, shape)

    def broadcast_to(self, x, shape):
        return self.xp.broadcast_to(x, shape)

    def transpose(self, x, order):
        return self.xp.transpose(x, order)

    def squeeze(self, x, axes):
        return self.xp.squeeze(x, axis=axes)

    def contract(self, subscripts: str, shapes: tuple, operands):
        """The contraction, planned by opt_einsum once per shapes, run by this library's
        tensordot/einsum."""
        return planned(subscripts, shapes)(*operands, backend=self.name)

    # -- elementwise and reductions -------------------------------------------------------
    def apply(self, func: str, param: Fraction | None, x):
        if func == "pow":
            if param == 2:
                return self.xp.square(x)
            if param == -1:
                return real_reciprocal(x) if self.name == "numpy" else self.xp.reciprocal(x)
            if self.name == "numpy" and param.denominator == 1 and 2 < abs(param) <= 4 or param == -2:
                return self._small_power(x, int(param))
            if param == Fraction(1, 2):
                return self.xp.sqrt(x)
            if param.denominator == 1 and abs(param) < 2**62:
                return x ** int(param)
            # a negative base has no real fractional power: NaN, also at -inf, where IEEE pow gives
            # +inf or 0 (and torch's x^-0.5, an rsqrt, NaN); sqrt(-inf), the exponent 1/2, is NaN
            power = self.where(x == -np.inf, np.nan, x ** to_float(param))
            if self.name == "torch" and param < 0:  # torch's (-0.0)^-0.5 is -inf (an rsqrt); IEEE pow's +inf
                power = self.where(x == 0, np.inf, power)
            return power
        if func in REAL_ONLY and is_complex(x):  # torch's logaddexp gave log(1 + e^x) + 2 pi i, jax's its value
            raise EvaluationError(f"{func} cannot be evaluated at {x.dtype} values ({REAL_ONLY[func]})")
        try:
            return self.function(func)(x)
        except TypeError as err:  # a dtype the library's function does not take: softplus of a complex
            kind = getattr(x, "dtype", type(x))
            raise EvaluationError(f"{func} cannot be evaluated at {kind} values ({err})") from None

    def _small_power(self, x, power: int, out=None):
        """x^p for p = -2 and 2 < |p| <= 4 by products (and a reciprocal), into one fresh array where the
        library allows (or into ``out``, an array of x's shape and dtype): pow itself runs three to five
        times slower (x^-2 at 20000 x 64: 4.9 ms against 1.1 ms).  A negative power is a power of the
        reciprocal, (1/x)^2, not 1/x^2, whose x^2 overflows from x = 1.3e154 where x^-2 is a number:
        it was 0 there, and a Hessian that subtracts it had the wrong sign (a hunt's find)."""
        xp = self.xp
        if self.name != "numpy" or not isinstance(x, np.ndarray) or x.dtype.kind != "f" or not x.ndim:
            base = xp.reciprocal(x) if power < 0 else x
            return xp.square(base) if abs(power) == 2 else base ** abs(power)
        if power < 0 and abs(power) == 3:
            base = real_reciprocal(x)
            value = np.square(base, out=out)
            return np.multiply(value, base, out=value)
        base = real_reciprocal(x, out=out) if power < 0 else x
        value = np.square(base, out=base if power < 0 else out)  # the reciprocal is an array of its own
        if abs(power) == 3:
            np.multiply(value, x, out=value)
        elif abs(power) == 4:
            np.square(value, out=value)
        return value

    def function(self, name: str) -> Callable:
        """The registry's function ``name`` on this library's arrays (made once per entry, so a
        function registered later is found, and one registered again is made afresh)."""
        row = entry(name)
        if row is None:
            raise EvaluationError(f"unknown elementwise function {name!r}: it is not in einderiv.functions")
        made = self._made.get(name)
        if made is None or made[0] is not row:
            made = self._made[name] = (row, row.on(self.xp, self.name))
        return made[1]

    def amax(self, x, axes):
        return self.xp.max(x, axis=axes, keepdims=True)

    def sum(self, x, axes):
        return self.xp.sum(x, axis=axes, keepdims=True)

    def finite_or_zero(self, x):
        return self.xp.where(self.xp.isfinite(x), x, 0)

    def positive_or_nan(self, condition, x):
        return self.xp.where(condition > 0, x, np.nan)

    # -- matrices -------------------------------------------------------------------------
    def matrix_transpose(self, m):
        return m.T

    def inv(self, m, name: str):
        low = self._half(m)
        if low is not None:
            return self.astype(self.inv(self.astype(m, self.xp.float32), name), low)
        return self.xp.linalg.inv(m)

    def slogdet(self, m):
        low = self._half(m)
        if low is not None:
            sign, value = self.slogdet(self.astype(m, self.xp.float32))
            return self.astype(sign, low), self.astype(value, low)
        return self.xp.linalg.slogdet(m)

    def det(self, m):
        """det(m), the library's own (torch's and CuPy's multiply the pivots of their LU; NumPy's
        and dask's blocks take sign * exp(log|det|), whose rounding grows with |log|det||)."""
        low = self._half(m)
        if low is not None:
            return self.astype(self.det(self.astype(m, self.xp.float32)), low)
        return self.xp.linalg.det(m)

    def solve(self, m, b, name: str):
        low = self._half(m)
        if low is not None:
            return self.astype(self.solve(self.astype(m, self.xp.float32), self.astype(b, self.xp.float32), name), low)
        return self.xp.linalg.solve(m, b)

    def _half(self, m):
        """m's dtype where it is float16 or bfloat16, which torch's and JAX's factorisations do not
        take (an error there): factorised in float32 and cast back, as NumPy's float16 is."""
        halves = [getattr(self.xp, name, None) for name in ("float16", "bfloat16")]
        return m.dtype if any(h is not None and m.dtype == h for h in halves) else None


class TorchOps(ArrayOps):
    """torch: the same operations under torch's names, on the inputs' device."""

    def __init__(self):
        import torch  # noqa: PLC0415 - optional; an import statement, which torch.compile can trace

        self.name = "torch"
        self.xp = torch
        self._made = {}  # elementwise functions: the registry's torch implementations, where given

    def convert(self, value, like=None):
        # a Python float is float64, as NumPy has it (torch would make it float32)
        dtype = self.xp.float64 if isinstance(value, float) else None
        if isinstance(value, np.ndarray) and any(stride < 0 for stride in value.strides):
            value = np.ascontiguousarray(value)  # x[::-1]: torch takes no negative strides (ValueError)
        return self.xp.as_tensor(value, dtype=dtype, device=None if like is None else like.device)

    def same_place(self, first, other) -> bool:
        return first.device == other.device

    def float_dtype(self, arrays: list):
        torch = self.xp
        dtypes = [a.dtype if a.dtype.is_floating_point or a.dtype.is_complex else torch.float64 for a in arrays]
        return functools.reduce(torch.promote_types, dtypes) if dtypes else torch.float64

    def astype(self, x, dtype):
        return x if x.dtype == dtype else x.to(dtype)

    def is_numeric(self, x) -> bool:
        return True

    def zeros(self, shape, like):
        return self.xp.zeros(shape, dtype=like.dtype, device=like.device)

    def eye_mask(self, n: int, like):
        return self.xp.eye(n, dtype=self.xp.bool, device=like.device)

    def own(self, result, inputs: list):
        if any(result is x for x in inputs) or result._base is not None or not result.is_contiguous():
            return result.clone(memory_format=self.xp.contiguous_format)
        return result

    def transpose(self, x, order):
        return x.permute(*order)

    def squeeze(self, x, axes):
        return self.xp.squeeze(x, dim=axes) if axes else x

    def amax(self, x, axes):
        return self.xp.amax(x, dim=axes, keepdim=True)

    def sum(self, x, axes):
        return self.xp.sum(x, dim=axes, keepdim=True)

    def finite_or_zero(self, x):
        return self.xp.where(self.xp.isfinite(x), x, self.xp.zeros_like(x))

    def positive_or_nan(self, condition, x):
        return self.xp.where(condition > 0, x, self.xp.full_like(x, float("nan")))

    def matrix_transpose(self, m):
        return m.mT

    def contract(self, subscripts: str, shapes: tuple, operands):
        """opt_einsum's plan; under ``torch.compile``, whose tracer cannot follow opt_einsum's
        bookkeeping, ``torch.einsum`` (which orders its pairwise steps with opt_einsum itself)."""
        if self.xp.compiler.is_compiling():
            return self.xp.einsum(subscripts, *operands)
        return super().contract(subscripts, shapes, operands)


class JaxOps(ArrayOps):
    """jax.numpy; integers become the widest float JAX allows (float64 only with jax_enable_x64)."""

    def __init__(self):
        super().__init__("jax", "jax.numpy")

    def is_numeric(self, x) -> bool:
        return bool(self.xp.issubdtype(x.dtype, self.xp.number) or self.xp.issubdtype(x.dtype, self.xp.bool_))

    def float_dtype(self, arrays: list):
        """As NumPy (integers count as float64), with JAX's own promotion (bfloat16) and its
        widest float (float32 unless jax_enable_x64)."""
        xp = self.xp
        dtypes = [a.dtype if xp.issubdtype(a.dtype, xp.inexact) else xp.float64 for a in arrays]
        return xp.result_type(*dtypes) if dtypes else xp.result_type(xp.float64)

    def own(self, result, inputs: list):
        return result  # immutable: sharing is harmless

    def det(self, m):
        """jax's det of a matrix whose determinant overflows is NaN: there, sign * exp(log|det|),
        which is ±inf (two factorisations, of which the traced program keeps both)."""
        value = super().det(m)
        sign, logdet = self.slogdet(m)
        return self.xp.where(self.xp.isfinite(value), value, sign * self.xp.exp(logdet))


class DaskOps(ArrayOps):
    """dask.array: lazy and chunked; the result is a dask array (call ``.compute()``).  Square
    matrices inside inv/det/logdet (small: D x D) are factorised in one task by NumPy."""

    def __init__(self):
        super().__init__("dask", "dask.array")

    def convert(self, value, like=None):
        return self.xp.asarray(np.asarray(value))

    def own(self, result, inputs: list):
        return result  # lazy and immutable: sharing is harmless

    def contract(self, subscripts: str, shapes: tuple, operands):
        """opt_einsum's plan on dask arrays, an operand read on a diagonal (``X_ii``) rechunked
        first so that its two axes are cut alike (dask's einsum raised ValueError for chunks
        (2, 3) of a 3 x 3 X: a hunt's find)."""
        inputs = subscripts.split("->")[0].split(",")
        aligned = []
        for letters, x in zip(inputs, operands):
            if len(set(letters)) < len(letters) and hasattr(x, "rechunk"):
                first: dict[str, int] = {}
                cut = {}
                for axis, letter in enumerate(letters):
                    if letter in first:
                        cut[axis] = x.chunks[first[letter]]
                    else:
                        first[letter] = axis
                x = x.rechunk(cut)
            aligned.append(x)
        return super().contract(subscripts, shapes, aligned)

    def _one_block(self, function, *arrays, shape, dtype):
        import dask  # noqa: PLC0415 - dask is optional

        value = dask.delayed(function)(*[a.rechunk(a.shape) if a.ndim else a for a in arrays])
        return self.xp.from_delayed(value, shape=shape, dtype=dtype)

    def inv(self, m, name: str):
        return self._one_block(
            functools.partial(_checked, np.linalg.inv, f"inv({name})", name), m, shape=m.shape, dtype=m.dtype
        )

    def det(self, m):
        return self._one_block(_det_part, m, shape=(), dtype=m.dtype)

    def slogdet(self, m):
        sign = self._one_block(lambda a: _slogdet_part(a, 0), m, shape=(), dtype=m.dtype)
        value = self._one_block(lambda a: _slogdet_part(a, 1), m, shape=(), dtype=m.dtype)
        return sign, value

    def solve(self, m, b, name: str):
        solve = functools.partial(_checked, np.linalg.solve, f"inv({name})", name)
        return self._one_block(solve, m, b, shape=b.shape, dtype=np.result_type(m.dtype, b.dtype))


def _det_part(a: np.ndarray) -> np.ndarray:
    """The determinant of a block, float16 factorised in float32."""
    return np.asarray(np.linalg.det(a.astype(np.float32) if a.dtype == np.float16 else a)).astype(a.dtype)


def _slogdet_part(a: np.ndarray, k: int) -> np.ndarray:
    """The sign (k = 0) or the log of |det| (k = 1) of a block, float16 factorised in float32."""
    part = np.linalg.slogdet(a.astype(np.float32) if a.dtype == np.float16 else a)[k]
    return np.asarray(part).astype(a.dtype)


def _checked(function, what: str, name: str, *arrays):
    """A NumPy factorisation inside a dask task, raising our error for a singular matrix (it
    surfaces from ``.compute()``); float16 factorised in float32 and cast back, as einderiv's
    NumPy path does (numpy.linalg takes no float16)."""
    low = [a.dtype for a in arrays if a.dtype == np.float16]
    if low:
        values = _checked(function, what, name, *[a.astype(np.float32) for a in arrays])
        return (
            tuple(np.asarray(v).astype(np.float16) for v in values)
            if isinstance(values, tuple)
            else values.astype(np.float16)
        )
    try:
        return function(*arrays)
    except np.linalg.LinAlgError:
        raise EvaluationError(f"{what}: the matrix {name!r} is singular") from None


_OPS: dict[str, ArrayOps] = {}


def ops_for(name: str) -> ArrayOps:
    """The operations of backend ``name`` (made once); a clear error when its library is not installed."""
    ops = _OPS.get(name)
    if ops is None:
        ops = _OPS[name] = _make_ops(name)
    return ops


def _make_ops(name: str) -> ArrayOps:
    makers = {
        "numpy": lambda: ArrayOps("numpy", "numpy"),
        "torch": TorchOps,
        "jax": JaxOps,
        "cupy": lambda: ArrayOps("cupy", "cupy"),
        "dask": DaskOps,
    }
    try:
        return makers[name]()
    except ModuleNotFoundError as err:
        extra = {"dask": "dask"}.get(name, name)
        raise EvaluationError(
            f"backend {name!r} needs the package {err.name!r}: pip install 'einderiv[{extra}]'"
        ) from None


__all__ = ["BACKENDS", "ArrayOps", "array_library", "choose_backend", "host_values", "ops_for"]
