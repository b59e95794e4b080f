"""Standalone code for a compiled expression or derivative: ``--format python|jax|torch``.

A generated module depends only on its array library (NumPy, with opt_einsum where a contraction
needs it; jax.numpy; or torch), not on einderiv.  Each function runs the straight-line program
that einderiv's runtime evaluates (:class:`einderiv.optimiser.StraightLine`, whose :class:`Step`
list this module reads), step by step and the way the runtime does it:

- a term with ``delta_ab`` between free indices lives on the diagonal a = b: NumPy adds it into
  a diagonal view of a zero result (``np.einsum("pqip->pqi", out)[...] += ...``), jax and torch,
  which do not write into arrays, keep it with ``where`` on a diagonal mask.  No identity matrix
  is multiplied, so an inf on the diagonal stays there instead of making NaN off it;
- ``delta_aa`` (a summed) and the ``1/n`` of a mean are sizes in the coefficient;
- a term that lacks one of the result's axes is broadcast along it, never multiplied by ones;
- NumPy contractions are lowered as the runtime lowers them: the common pairwise ones are matrix
  products, axes that only one operand carries are summed first, 0-d operands multiply last,
  and the rest go to opt_einsum, planned once per shapes.

A module carries only the helpers its functions call.  Nothing from the user's text reaches it
except validated identifiers (letters and digits; keywords and builtins get a trailing
underscore) and numbers.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from .api import Compiled, Derivative
from .api import compile as compile_program
from .contraction import Contraction, ResolvedTerm, resolve_deltas
from .dimensions import dimensions, sized_definitions
from .elementwise import FLAVOURS, FUNCTIONS, Helper
from .emit import symbol_table
from .errors import EinderivError
from .glyphs import format_number
from .gradients import Gradients
from .index_names import count_letter, count_stem, is_count, is_lowered_count
from .ir import Delta, MatrixCall, Program, Tensor, to_float, walk
from .normal import Apply, MatrixFn, Poly, is_reciprocal
from .optimiser import StraightLine
from .products import Product
from .program import CheckedProgram
from .steps import (
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
    Step,
    values_read,
)

_HEADER = {"python": "import numpy as np\n", "jax": "import jax.numpy as np\n", "torch": "import torch\n"}

#: the same in every flavour: n ** p for an axis's length (a mean's 1/n), which Python's float
#: raises for at n = 0
_COUNT_POWER = '''
def _count_power(n, p):
    """n ** p for the length n of an axis: inf for a negative power of 0 (a mean over no
    entries is then NaN, as einderiv gives it), where Python's 0.0 ** -1 raises."""
    return float(n) ** p if n or p >= 0 else float("inf")
'''

_ONE_SIZE = '''
def _one_size(index, *sizes):
    """The size of an index that statements write at several axes, which must agree (as
    einderiv's evaluation says it: two sizes are an error)."""
    if any(size != sizes[0] for size in sizes):
        raise ValueError(f"index {index!r} has two sizes: {', '.join(str(size) for size in sizes)}")
    return sizes[0]
'''

#: the python and jax flavours' log-softmax (``np`` is jax.numpy in a jax module)
_LOG_OF_SUM = '''
def _log_of_sum(e, axes):
    """log(sum over axes of e) for e = exp(v - max v), kept axes of size 1; where the sum is in
    [1, 1 + 2**-10), log1p of the other entries' sum, which keeps what log(1 + s) rounds away."""
    total = np.sum(e, axis=axes, keepdims=True)
    if np.iscomplexobj(e):
        return np.log(total)
    others = np.sum(np.where(e < 1, e, 0), axis=axes, keepdims=True)
    return np.where((total >= 1) & (total < 1 + 2**-10), np.log1p(others), np.log(total))
'''

_LOG_SOFTMAX = '''
def _log_softmax(v, axes):
    """v - log(sum over axes of exp(v)), as (v - max) - log(sum exp(v - max)): exact where the
    largest entries tie far from 0."""
    if np.iscomplexobj(v):  # as einderiv's own paths refuse it
        raise TypeError(
            "log_softmax cannot be evaluated at complex values: v - logsumexp(v) is not the principal log there"
        )
    if 0 in v.shape:
        return v - np.log(np.sum(np.exp(v), axis=axes, keepdims=True))
    peak = np.max(v, axis=axes, keepdims=True)
    shifted = v - np.where(np.isfinite(peak), peak, 0)
    return shifted - _log_of_sum(np.exp(shifted), axes)
'''

_SOFTMAX_COMPLEMENT = '''
def _softmax_complement(p, axes):
    """1 - p for a softmax's values p over axes; where p is above 1/2, the other entries summed
    (1 - p is 0 wherever p rounds to 1)."""
    if 0 in np.shape(p) or np.iscomplexobj(p):
        return 1 - p
    top = p > 0.5
    return np.where(top, np.sum(np.where(top, 0, p), axis=axes, keepdims=True), 1 - p)
'''

_LOG1MEXP = '''
def _log1mexp(v):
    """log(1 - exp(v)): log1p(-exp(v)) where v < -log 2, log(-expm1(v)) above (Maechler), each
    exact on its side."""
    if np.iscomplexobj(v):
        return np.log(0 - np.expm1(v))
    return np.where(v < -0.6931471805599453, np.log1p(-np.exp(v)), np.log(-np.expm1(v)))
'''

_SOFTMAX_CENTRED = '''
def _softmax_centred(p, x, axes):
    """x - sum over axes of p x for a softmax's values p; where p is above 1/2 at t,
    (x - x_t) - sum p (x - x_t), the same number, in which nothing cancels where p rounds to 1."""
    if 0 in np.shape(p) or np.iscomplexobj(p):
        return x - np.sum(p * x, axis=axes, keepdims=True)
    shift = np.sum(np.where(p > 0.5, x, 0), axis=axes, keepdims=True)
    shifted = x - np.where(np.isfinite(shift), shift, 0)
    return shifted - np.sum(p * shifted, axis=axes, keepdims=True)
'''

#: name -> source, per flavour; a module gets the ones its functions call, in this order
_HELPERS: dict[str, dict[str, str]] = {
    "python": {
        "_count_power": _COUNT_POWER,
        "_one_size": _ONE_SIZE,
        "_float": '''
def _float(x):
    """The input as an array; integers and booleans as float64, as einderiv reads them."""
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype.kind in "biu" else x
''',
        "_added": '''
def _added(total, term, sign=1):
    """total + sign * term, into total (an array of this function's own) where it holds the
    sum's dtype, as einderiv adds: a float32 first term does not round a float64 second.  A
    total that is a number (a count: delta_kk + 0.5 + b_k) is added to, not into."""
    if not isinstance(total, np.ndarray) or np.result_type(total, term) != total.dtype:
        return total + term if sign > 0 else total - term
    if sign > 0:
        total += term
    else:
        total -= term
    return total
''',
        "_contract": '''
def _contract(subscripts, *operands):
    """einsum(subscripts, *operands) as einderiv computes it: NumPy's einsum for two small
    operands (at most 4096 elements each), else opt_einsum's expression for these shapes
    (pairwise order, BLAS where it applies), planned once and kept."""
    if len(operands) == 2 and np.size(operands[0]) <= 4096 and np.size(operands[1]) <= 4096:
        return np.einsum(subscripts, *operands)
    shapes = tuple(np.shape(operand) for operand in operands)
    plan = _PLANS.get((subscripts, shapes))
    if plan is None:
        plan = _PLANS[subscripts, shapes] = oe.contract_expression(subscripts, *shapes)
    return plan(*operands)
''',
        "_softmax": '''
def _softmax(v, axes):
    """exp(v) / (sum over axes of exp(v)), shifted by the largest finite value: no overflow."""
    if not v.size:
        return np.exp(v)
    peak = np.max(v, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)
    e = np.exp(v - peak)
    return e / np.sum(e, axis=axes, keepdims=True)
''',
        "_softmax_complement": _SOFTMAX_COMPLEMENT,
        "_log1mexp": _LOG1MEXP,
        "_softmax_centred": _SOFTMAX_CENTRED,
        "_log_softmax": _LOG_SOFTMAX,
        "_log_of_sum": _LOG_OF_SUM,
        "_logsumexp": '''
def _logsumexp(v, axes, order):
    """log(sum over axes of exp(v)), shifted by the largest finite value; the kept axes in order."""
    peak = np.max(v, axis=axes, keepdims=True, initial=-np.inf)
    peak = np.where(np.isfinite(peak), peak, 0)
    out = np.squeeze(_log_of_sum(np.exp(v - peak), axes) + peak, axis=axes)
    if np.iscomplexobj(out):  # NumPy's principal log: the imaginary part in (-pi, pi]
        out = out - 2j * np.pi * np.ceil((out.imag - np.pi) / (2 * np.pi))
    kept = [k for k in range(v.ndim) if k not in axes]
    return np.transpose(out, [kept.index(k) for k in order]) if out.ndim else out
''',
        "_inv": '''
def _inv(m):
    """inv(m); NaN where m has a non-finite entry."""
    if not np.all(np.isfinite(m)):
        return np.full(m.shape, np.nan, dtype=m.dtype)
    return np.linalg.inv(m)
''',
        "_det": '''
def _det(m):
    """det(m), NumPy's (einderiv's own multiplies the pivots of its LU); NaN where m has a
    non-finite entry."""
    if not np.all(np.isfinite(m)):
        return np.full((), np.nan, dtype=m.dtype)
    return np.asarray(np.linalg.det(m))
''',
        "_logdet": '''
def _logdet(m):
    """log det m; NaN where m has a non-finite entry or det m <= 0 (of a complex m, the principal
    log(det m), NaN where det m = 0)."""
    if not np.all(np.isfinite(m)):
        return np.full((), np.nan, dtype=m.dtype)
    sign, logdet = np.linalg.slogdet(m)
    if np.iscomplexobj(sign):
        return np.asarray(np.log(sign) + logdet if sign != 0 else np.nan, dtype=m.dtype)
    return np.asarray(logdet if sign > 0 else np.nan, dtype=m.dtype)
''',
        "_logabsdet": '''
def _logabsdet(m):
    """log |det m| of a real m (-inf where det m = 0); NaN where m has a non-finite entry."""
    if np.iscomplexobj(m):
        raise TypeError("logabsdet (log(abs(det(M))), log(det(M)^2) / 2) is evaluated for real matrices only")
    if not np.all(np.isfinite(m)):
        return np.full((), np.nan, dtype=m.dtype)
    return np.asarray(np.linalg.slogdet(m)[1])
''',
        "_solve": '''
def _solve(m, b, transposed):
    """inv(m) b (inv(m)^T b when transposed) by a linear solve; NaN where m has a non-finite entry."""
    if not np.all(np.isfinite(m)):
        return np.full(b.shape, np.nan, dtype=np.result_type(m, b))
    return np.linalg.solve(m.T if transposed else m, b)
''',
    },
    "jax": {
        "_count_power": _COUNT_POWER,
        "_one_size": _ONE_SIZE,
        "_float": '''
def _float(x):
    """The input as an array; integers and booleans as float64, as einderiv reads them."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.inexact) else x.astype(np.float64)
''',
        "_diagonal_mask": '''
def _diagonal_mask(n, ndim, a, b):
    """True where axes a and b (both of size n) of an ndim-axis result hold equal indices,
    shaped to broadcast against it."""
    shape = [1] * ndim
    shape[a] = shape[b] = n
    return np.reshape(np.arange(n)[:, None] == np.arange(n)[None, :], shape)
''',
        "_softmax": '''
def _softmax(v, axes):
    """exp(v) / (sum over axes of exp(v)), shifted by the largest finite value: no overflow."""
    if 0 in v.shape:
        return np.exp(v)
    peak = np.max(v, axis=axes, keepdims=True)
    e = np.exp(v - np.where(np.isfinite(peak), peak, 0))
    return e / np.sum(e, axis=axes, keepdims=True)
''',
        "_softmax_complement": _SOFTMAX_COMPLEMENT,
        "_log1mexp": _LOG1MEXP,
        "_softmax_centred": _SOFTMAX_CENTRED,
        "_log_softmax": _LOG_SOFTMAX,
        "_log_of_sum": _LOG_OF_SUM,
        "_logsumexp": '''
def _logsumexp(v, axes, order):
    """log(sum over axes of exp(v)), shifted by the largest finite value; the kept axes in order."""
    if 0 in v.shape:
        out = np.log(np.sum(np.exp(v), axis=axes, keepdims=True))
    else:
        peak = np.max(v, axis=axes, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0)
        out = _log_of_sum(np.exp(v - peak), axes) + peak
    out = np.squeeze(out, axis=axes)
    if np.iscomplexobj(out):  # NumPy's principal log: the imaginary part in (-pi, pi]
        out = out - 2j * np.pi * np.ceil((np.imag(out) - np.pi) / (2 * np.pi))
    kept = [k for k in range(v.ndim) if k not in axes]
    return np.transpose(out, [kept.index(k) for k in order])
''',
        "_invertible": '''
def _invertible(m):
    """Whether m has finite entries and a nonzero determinant (where einderiv raises for a
    singular matrix, this module gives NaN: jax traces, it cannot raise on values)."""
    return np.all(np.isfinite(m)) & (np.linalg.slogdet(m)[0] != 0)
''',
        "_inv": '''
def _inv(m):
    """inv(m); NaN where m has a non-finite entry or is singular."""
    return np.where(_invertible(m), np.linalg.inv(m), np.nan)
''',
        "_det": '''
def _det(m):
    """det(m), jax's (sign * exp(log|det|) where that is not finite: jax's det is NaN where the
    determinant overflows); NaN where m has a non-finite entry."""
    value = np.linalg.det(m)
    sign, logdet = np.linalg.slogdet(m)
    value = np.where(np.isfinite(value), value, sign * np.exp(logdet))
    return np.where(np.all(np.isfinite(m)), value, np.nan)
''',
        "_logdet": '''
def _logdet(m):
    """log det m; NaN where m has a non-finite entry or det m <= 0 (of a complex m, the principal
    log(det m), NaN where det m = 0)."""
    sign, logdet = np.linalg.slogdet(m)
    if np.iscomplexobj(sign):
        return np.where(np.all(np.isfinite(m)) & (sign != 0), np.log(sign) + logdet, np.nan)
    return np.where(np.all(np.isfinite(m)) & (sign > 0), logdet, np.nan)
''',
        "_logabsdet": '''
def _logabsdet(m):
    """log |det m| of a real m (-inf where det m = 0); NaN where m has a non-finite entry."""
    if np.iscomplexobj(m):
        raise TypeError("logabsdet (log(abs(det(M))), log(det(M)^2) / 2) is evaluated for real matrices only")
    return np.where(np.all(np.isfinite(m)), np.linalg.slogdet(m)[1], np.nan)
''',
        "_solve": '''
def _solve(m, b, transposed):
    """inv(m) b (inv(m)^T b when transposed) by a linear solve; NaN where m has a non-finite entry
    or is singular."""
    return np.where(_invertible(m), np.linalg.solve(m.T if transposed else m, b), np.nan)
''',
    },
    "torch": {
        "_count_power": _COUNT_POWER,
        "_one_size": _ONE_SIZE,
        "_float": '''
def _float(x):
    """The input as a tensor (a Python float as float64); integers and booleans as float64, as
    einderiv reads them."""
    x = torch.as_tensor(x, dtype=torch.float64 if isinstance(x, float) else None)
    return x if x.is_floating_point() or x.is_complex() else x.to(torch.float64)
''',
        "_floats": '''
def _floats(*xs, read=None):
    """The inputs as tensors of one dtype, as einderiv's torch backend reads them: each as
    _float, then promoted together (float32 beside an integer is float64, as in NumPy;
    torch.einsum takes no operands of two dtypes); only the inputs at the positions read, whose
    values the function reads, count, where it names them."""
    xs = [_float(x) for x in xs]
    counted = [xs[k] for k in read] if read else xs
    dtype = counted[0].dtype
    for x in counted[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return [x.to(dtype) for x in xs]
''',
        "_diagonal_mask": '''
def _diagonal_mask(n, ndim, a, b, like):
    """True where axes a and b (both of size n) of an ndim-axis result hold equal indices,
    shaped to broadcast against it (on like's device)."""
    shape = [1] * ndim
    shape[a] = shape[b] = n
    index = torch.arange(n, device=like.device)
    return (index[:, None] == index[None, :]).reshape(shape)
''',
        "_softmax": '''
def _softmax(v, axes):
    """exp(v) / (sum over axes of exp(v)), shifted by the largest finite value: no overflow."""
    if 0 in v.shape:
        return torch.exp(v)
    peak = torch.amax(v, dim=axes, keepdim=True)
    e = torch.exp(v - torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)))
    return e / torch.sum(e, dim=axes, keepdim=True)
''',
        "_log1mexp": '''
def _log1mexp(v):
    """log(1 - exp(v)): log1p(-exp(v)) where v < -log 2, log(-expm1(v)) above (Maechler), each
    exact on its side."""
    if v.is_complex():
        return torch.log(0 - torch.expm1(v))
    return torch.where(v < -0.6931471805599453, torch.log1p(-torch.exp(v)), torch.log(-torch.expm1(v)))
''',
        "_softmax_complement": '''
def _softmax_complement(p, axes):
    """1 - p for a softmax's values p over axes; where p is above 1/2, the other entries summed
    (1 - p is 0 wherever p rounds to 1)."""
    if 0 in p.shape or torch.is_complex(p):
        return 1 - p
    top = p > 0.5
    return torch.where(top, torch.sum(torch.where(top, torch.zeros_like(p), p), dim=axes, keepdim=True), 1 - p)
''',
        "_softmax_centred": '''
def _softmax_centred(p, x, axes):
    """x - sum over axes of p x for a softmax's values p; where p is above 1/2 at t,
    (x - x_t) - sum p (x - x_t), the same number, in which nothing cancels where p rounds to 1."""
    if 0 in p.shape or torch.is_complex(p):
        return x - torch.sum(p * x, dim=axes, keepdim=True)
    shift = torch.sum(torch.where(p > 0.5, x, torch.zeros_like(x)), dim=axes, keepdim=True)
    shifted = x - torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return shifted - torch.sum(p * shifted, dim=axes, keepdim=True)
''',
        "_log_softmax": '''
def _log_softmax(v, axes):
    """v - log(sum over axes of exp(v)), as (v - max) - log(sum exp(v - max)): exact where the
    largest entries tie far from 0."""
    if torch.is_complex(v):  # as einderiv's own paths refuse it
        raise TypeError(
            "log_softmax cannot be evaluated at complex values: v - logsumexp(v) is not the principal log there"
        )
    if 0 in v.shape:
        return v - torch.log(torch.sum(torch.exp(v), dim=axes, keepdim=True))
    peak = torch.amax(v, dim=axes, keepdim=True)
    shifted = v - torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    return shifted - _log_of_sum(torch.exp(shifted), axes)
''',
        "_log_of_sum": '''
def _log_of_sum(e, axes):
    """log(sum over axes of e) for e = exp(v - max v), kept axes of size 1; where the sum is in
    [1, 1 + 2**-10), log1p of the other entries' sum, which keeps what log(1 + s) rounds away."""
    total = torch.sum(e, dim=axes, keepdim=True)
    if torch.is_complex(e):
        return torch.log(total)
    others = torch.sum(torch.where(e < 1, e, torch.zeros_like(e)), dim=axes, keepdim=True)
    return torch.where((total >= 1) & (total < 1 + 2**-10), torch.log1p(others), torch.log(total))
''',
        "_logsumexp": '''
def _logsumexp(v, axes, order):
    """log(sum over axes of exp(v)), shifted by the largest finite value; the kept axes in order."""
    if torch.is_complex(v):  # as einderiv's torch path: torch's amax takes no complex values
        raise TypeError("logsumexp cannot be evaluated at complex values in torch (its amax does not take them)")
    if 0 in v.shape:
        out = torch.log(torch.sum(torch.exp(v), dim=axes, keepdim=True))
    else:
        peak = torch.amax(v, dim=axes, keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        out = _log_of_sum(torch.exp(v - peak), axes) + peak
    out = torch.squeeze(out, dim=axes) if axes else out
    kept = [k for k in range(v.ndim) if k not in axes]
    return out.permute([kept.index(k) for k in order])
''',
        "_inv": '''
def _inv(m):
    """inv(m); NaN where m has a non-finite entry."""
    if not torch.isfinite(m).all():
        return torch.full_like(m, float("nan"))
    return torch.linalg.inv(m)
''',
        "_det": '''
def _det(m):
    """det(m), torch's (the product of its LU's pivots); NaN where m has a non-finite entry."""
    if not torch.isfinite(m).all():
        return torch.full((), float("nan"), dtype=m.dtype, device=m.device)
    return torch.linalg.det(m)
''',
        "_logdet": '''
def _logdet(m):
    """log det m; NaN where m has a non-finite entry or det m <= 0 (of a complex m, the principal
    log(det m), NaN where det m = 0)."""
    if not torch.isfinite(m).all():
        return torch.full((), float("nan"), dtype=m.dtype, device=m.device)
    sign, logdet = torch.linalg.slogdet(m)
    if m.is_complex():
        return torch.where(sign != 0, torch.log(sign) + logdet, torch.full_like(sign, float("nan")))
    return torch.where(sign > 0, logdet, torch.full_like(logdet, float("nan")))
''',
        "_logabsdet": '''
def _logabsdet(m):
    """log |det m| of a real m (-inf where det m = 0); NaN where m has a non-finite entry."""
    if m.is_complex():
        raise TypeError("logabsdet (log(abs(det(M))), log(det(M)^2) / 2) is evaluated for real matrices only")
    if not torch.isfinite(m).all():
        return torch.full((), float("nan"), dtype=m.dtype, device=m.device)
    return torch.linalg.slogdet(m)[1]
''',
        "_solve": '''
def _solve(m, b, transposed):
    """inv(m) b (inv(m)^T b when transposed) by a linear solve; NaN where m has a non-finite entry."""
    if not torch.isfinite(m).all():
        return torch.full(b.shape, float("nan"), dtype=torch.promote_types(m.dtype, b.dtype), device=b.device)
    return torch.linalg.solve(m.mT if transposed else m, b)
''',
    },
}
_MODULE = {"python": "np", "jax": "np", "torch": "torch"}
_RESERVED = {"np", "oe", "torch", "jax"}


def module_helpers() -> set[str]:
    """The names of the generated module's own helpers (``_contract``, ``_float``, ``_log1mexp``),
    in any flavour: a registered function may not take a name whose helper would be one."""
    return {name for helpers in _HELPERS.values() for name in helpers}


def function_code(name: str, flavour: str) -> str:
    """The generated module's name for an elementwise function, from its entry in
    ``einderiv.functions``: the library's own (``np.tanh``, ``torch.sigmoid``) or the module's
    helper ``_sigmoid``, whose source the entry holds (:meth:`Function.helper_source`)."""
    row = FUNCTIONS.get(name)
    if row is None:
        raise EinderivError(f"cannot generate code for the function {name!r}: it is not in einderiv.functions")
    return f"_{name}" if isinstance(row.code[flavour], Helper) else row.code[flavour]


def _helper_source(helper: str, flavour: str) -> str:
    """The source of a helper the module calls: the module's own (``_contract``, ``_softmax``) or
    an elementwise function's, from its registry entry."""
    own = _HELPERS[flavour].get(helper)
    if own is not None:
        return own
    row = FUNCTIONS.get(helper[1:])
    source = row.helper_source(flavour) if row is not None else None
    if source is None:
        raise EinderivError(f"cannot generate {flavour} code: no helper {helper}")
    return "\n" + source


def identifier(name: str) -> str:
    """A Python identifier for an einderiv name (letters and digits already; keywords, builtins
    and the module's own names get a trailing underscore; internal temporaries a prefix)."""
    if name.startswith("_t"):
        return "t" + name[2:] + "_"
    if not name.isidentifier():
        raise EinderivError(f"cannot generate code for the name {name!r}")
    if keyword.iskeyword(name) or hasattr(builtins, name) or name in _RESERVED or name.endswith("_"):
        return name + "_"
    return name


def _local_identifier(name: str) -> str:
    """An identifier for a name computed inside a function: an internal temporary ``_t3`` is
    ``t3``, a statement's name keeps its letters (``df/dx`` is ``df_dx``, ``_`` is ``value``)."""
    if re.fullmatch(r"_t\d+", name):
        return name[1:]
    text = re.sub(r"\W", "_", name).strip("_") or "value"
    return identifier(text if text.isidentifier() else "v" + text)


class _Names:
    """einderiv names -> Python identifiers inside one generated function: the parameters as
    :func:`identifier` writes them, each computed name kept apart from all the others."""

    def __init__(self, parameters: list[str]):
        self.python: dict[str, str] = {name: identifier(name) for name in parameters}
        self.taken = set(self.python.values())

    def define(self, name: str) -> str:
        text = _local_identifier(name)
        while text in self.taken:
            text += "_"
        self.taken.add(text)
        self.python[name] = text
        return text

    def __getitem__(self, name: str) -> str:
        return self.python[name]

    def __contains__(self, name: str) -> bool:
        return name in self.python


def _number(value: Fraction) -> str:
    """A coefficient as Python text for the float the runtime uses (``to_float``): exact text
    (``2``, ``0.125``, ``(1/3)``) where Python's float of it is that float, else its repr."""
    if abs(value.numerator) < 2**53 and value.denominator < 2**53:
        text = format_number(value)
        return f"({text})" if "/" in text or text.startswith("-") else text
    number = to_float(value)
    if number in (float("inf"), float("-inf")):
        return f'float("{number}")'
    return f"({number!r})" if number < 0 else repr(number)


def _shape_code(sizes: list[str]) -> str:
    return f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"


@dataclass(frozen=True)
class _Value:
    """Generated code for one term's value: the expression, the free indices it varies along
    (broadcast along the others), its sign (a term with a negative coefficient is subtracted),
    whether it is a new array nothing else holds (NumPy may add into it), and whether the code
    is one atom (a name or a call) that binds tighter than any operator."""

    code: str
    axes: frozenset[str]
    negative: bool = False
    fresh: bool = True
    atomic: bool = True
    full_rank: bool = False  # already one axis per free index (size 1 where broadcast)

    def wrapped(self) -> str:
        return self.code if self.atomic else f"({self.code})"


class _Sizes:
    """Where the generated code reads index sizes (``A.shape[1]``) for one contraction step, as
    :func:`einderiv.dimensions.bind_sizes` binds them: a free index from any term's arrays or the
    step's size hints; a summed index from its own term's arrays; then through deltas; then by
    its name elsewhere in the statement (a counting index renamed apart: by its stem)."""

    def __init__(self, poly: Poly, hints, names: _Names, helper):
        self.free = set(poly.indices)
        self.names = names
        self.helper = helper  # registers a helper the code calls
        self.terms: list[dict[str, str]] = []
        self.deltas: list[list[tuple[str, str]]] = []
        self.named: dict[str, list[str]] = {}  # index -> every axis its name is written at, first first
        self.fixed: dict[str, str] = {}
        for term in poly.terms:
            own: dict[str, str] = {}
            pairs: list[tuple[str, str]] = []
            for factor in term.factors:
                if isinstance(factor, Tensor) and not is_reciprocal(factor) and factor.name in names:
                    for axis, index in enumerate(factor.indices):
                        own.setdefault(index, self._axis(factor.name, axis))
                elif isinstance(factor, Delta):
                    pairs.append(factor.indices)
            self.terms.append(own)
            self.deltas.append(pairs)
            for index, code in own.items():
                self._name(index, code)
                if index in self.free:
                    self.fixed.setdefault(index, code)
        for hint in hints:
            if hint[0] == "axis":
                _, index, name, axis = hint
                if name in names:
                    self.fixed.setdefault(index, self._axis(name, axis))
            elif hint[0] == "poly":
                self._visit(hint[1], set(hint[1].indices) & self.free)
            elif hint[0] == "names":
                for index, name, axis in hint[1]:
                    if name in names:
                        self._name(index, self._axis(name, axis))

    def _name(self, index: str, code: str) -> None:
        """``index`` is written at the axis ``code`` somewhere in the statement (the first such
        axis sizes it by name; a letter written at two is read only where no other will do)."""
        codes = self.named.setdefault(index, [])
        if code not in codes:
            codes.append(code)

    def _axis(self, name: str, axis: int) -> str:
        return f"{self.names[name]}.shape[{axis}]"

    def _visit(self, poly: Poly, wanted: set[str]) -> None:
        """Sizes of the ``wanted`` free indices of a statement as written (calls' arguments too)."""
        for term in poly.terms:
            for factor in term.factors:
                if isinstance(factor, Tensor) and not is_reciprocal(factor) and factor.name in self.names:
                    for axis, index in enumerate(factor.indices):
                        if index in wanted:
                            self.fixed.setdefault(index, self._axis(factor.name, axis))
                        self._name(index, self._axis(factor.name, axis))
                elif isinstance(factor, MatrixFn) and factor.matrix in self.names:
                    for axis, index in enumerate(factor.indices):
                        self._name(index, self._axis(factor.matrix, axis))
                elif isinstance(factor, Apply):
                    self._visit(factor.arg, wanted & set(factor.arg.indices))

    def free_size(self, index: str) -> str:
        return self._size(index, None)

    def term_size(self, number: int, index: str) -> str:
        return self._size(index, number)

    def _size(self, index: str, number: int | None) -> str:
        if index in self.free:
            number = None
        pairs = [p for ps in self.deltas for p in ps] if number is None else self.deltas[number]
        reached, frontier = {index: None}, [index]
        while frontier:  # the index, then those deltas join it to
            current = frontier.pop(0)
            known = self.fixed.get(current) if current in self.free else self.terms[number].get(current)
            if known is not None:
                return known
            for a, b in pairs:
                for here, there in ((a, b), (b, a)):
                    if here == current and there not in reached and (there in self.free) == (current in self.free):
                        reached[there] = None
                        frontier.append(there)
        # by name: a letter the deltas reach that is written at one axis only, before one written
        # at two (j at a in t = a_j and at b through delta_ji in f: the statement's j is b's)
        for letter in reached if len(reached) > 1 else ():
            if len(self.named.get(letter, ())) == 1:
                return self.named[letter][0]
        # a count renamed apart is its stem's size; one lowering wrote (delta_ii of sum_i(c)) is
        # its letter's, as the runtime binds them (:func:`einderiv.dimensions.bind_sizes`)
        stem = count_stem(index) if is_count(index) else None
        for name in (index, stem):
            if name is not None and self.named.get(name):
                return self.named[name][0]
        letter = count_letter(index) if is_lowered_count(index) else None
        if letter is not None and self.named.get(letter):  # written at two axes: checked where the code runs
            codes = self.named[letter]
            if len(codes) == 1:
                return codes[0]
            return f"{self.helper('_one_size')}({letter!r}, {', '.join(codes)})"
        shown = count_letter(index) if is_count(index) else index  # i#_ is the user's i, counted
        raise EinderivError(
            f"cannot generate code: the size of index {shown!r} is not known from an array "
            "(it appears only in deltas: write it on a tensor too)"
        )


class _Body:
    """The statements of one generated function, in one flavour, step by step as the runtime
    runs them (:func:`einderiv.runtime.run`)."""

    def __init__(self, flavour: str, names: _Names, like: str, helpers: set[str]):
        self.flavour = flavour
        self.xp = _MODULE[flavour]
        self.names = names
        self.like = like  # parameters: the dtype (and device) of constants (torch: one parameter)
        self.helpers = helpers
        self.lines: list[str] = []
        self.owned: dict[str, bool] = {}  # python name -> an array of its own (not an input or a view)

    def helper(self, name: str) -> str:
        self.helpers.add(name)
        if name in ("_logsumexp", "_log_softmax"):
            self.helpers.add("_log_of_sum")
        if self.flavour == "jax" and name in ("_inv", "_solve"):
            self.helpers.add("_invertible")
        return name

    def step(self, step: Step) -> None:
        if isinstance(step, Contract):
            self.contraction(step.target, step.contraction)
            return
        code = CODE_FOR[type(step)](self, step, self.names[step.source])
        target = self.names.define(step.target)
        self.lines.append(f"{target} = {code}")
        self.owned[target] = True

    def elementwise(self, func: str, param: Fraction | None, source: str) -> str:
        """As :meth:`einderiv.backends.ArrayOps.apply`: square, reciprocal and sqrt for the powers
        2, -1 and 1/2, an integer power as an integer."""
        if func == "pow":
            special = {Fraction(2): "square", Fraction(-1): "reciprocal", Fraction(1, 2): "sqrt"}.get(param)
            if special is not None:
                return f"{self.xp}.{special}({source})"
            if param.denominator == 1 and abs(param) < 2**62:
                return f"{source} ** {param.numerator}"
            # as the runtime: NaN at -inf (IEEE pow gives 0 or inf there), and torch's
            # (-0.0)^-0.5 (an rsqrt, -inf) as IEEE pow's +inf
            xp, power = self.xp, f"{source} ** {to_float(param)!r}"
            code = f"{xp}.where({source} == -{xp}.inf, {xp}.nan, {power})"
            if self.flavour == "torch" and param < 0:
                code = f"{xp}.where({source} == 0, {xp}.inf, {code})"
            return code
        code = function_code(func, self.flavour)
        if code.startswith("_"):
            self.helper(code)
        return f"{code}({source})"

    def returned(self, name: str, rank: int) -> str:
        """The code that returns ``name``: an array of its own, never an input or a view of one
        (NumPy: a 0-d array, not a NumPy scalar), as the runtime returns results."""
        code = self.names[name]
        owned = self.owned.get(code, False)
        if self.flavour == "python" and (not owned or not rank):
            return f"np.array({code})"
        if self.flavour == "torch" and not owned:
            return f"{code}.clone(memory_format=torch.contiguous_format)"
        return code

    # -- contractions ---------------------------------------------------------------------------
    def contraction(self, name: str, contraction: Contraction) -> None:
        """``name = the sum of the step's einsum terms``, each with its deltas resolved as the
        runtime resolves them (:func:`einderiv.contraction.resolve_deltas`)."""
        poly = contraction.poly
        free = poly.indices
        table = symbol_table(poly)
        sizes = _Sizes(poly, contraction.hints, self.names, self.helper)
        resolved = [resolve_deltas(term, free) for term in contraction.terms]
        operands = list(dict.fromkeys(self.names[n] for r in resolved for n in r.operands))
        target = self.names.define(name)

        def shape() -> str:  # the result's shape, read from the arrays (only where it is needed)
            return _shape_code([sizes.free_size(i) for i in free])

        if self.flavour == "python" and any(r.merged for r in resolved):
            self._numpy_with_diagonals(target, free, table, sizes, resolved, operands, shape())
            return
        values = [self.term_value(k, r, free, table, sizes) for k, r in enumerate(resolved)]
        if not operands and not any(v.full_rank for v in values):  # numbers only: the result's shape
            total = self._joined([(v.code, v.atomic) for v in values], values) if values else "0.0"
            self.lines.append(f"{target} = {self._full(shape(), total)}")
            self.owned[target] = True
            return
        covered = frozenset().union(*(v.axes for v in values))
        if self.flavour == "python":
            self._numpy_sum(target, free, values)
        else:  # jax and torch write into no array: a sum, one term a line
            parts = [self._aligned(v, free) for v in values]
            self.lines.append(f"{target} = {self._joined(parts[:1], values[:1])}")
            for (code, _), value in zip(parts[1:], values[1:]):
                self.lines.append(f"{target} = {target} {'-' if value.negative else '+'} {code}")
            self.owned[target] = len(values) > 1 or values[0].fresh or values[0].negative
        if covered != frozenset(free):  # no term has every axis
            self.lines.append(f"{target} = {self.xp}.broadcast_to({target}, {shape()})")
            self.owned[target] = False

    @staticmethod
    def _joined(parts: list[tuple[str, bool]], values: list[_Value]) -> str:
        """``a + b - c``: the terms' (code, atomic) with their signs."""
        text = ""
        for (code, atomic), value in zip(parts, values):
            if not text:
                text = (f"-{code}" if atomic else f"-({code})") if value.negative else code
            else:
                text += f" {'-' if value.negative else '+'} {code}"
        return text

    def _numpy_sum(self, target: str, free, values: list[_Value]) -> None:
        """The terms added as the runtime adds them: into the sum so far where that is a new array
        of the result's shape (``+=``, ``-=``), else by ``+`` (a term missing an axis broadcasts)."""
        expression, covered, owned, written = "", frozenset(), False, False
        for value in values:
            code, atomic = self._aligned(value, free)
            if not expression:
                expression = self._joined([(code, atomic)], [value])
                covered, owned = value.axes, value.fresh or value.negative
            elif owned and covered == frozenset(free):
                if not written:
                    self.lines.append(f"{target} = {expression}")
                    written = True
                sign = ", -1" if value.negative else ""
                self.lines.append(f"{target} = {self.helper('_added')}({target}, {code}{sign})")
            else:
                expression += f" {'-' if value.negative else '+'} {code}"
                covered, owned = covered | value.axes, True
        if not written:
            self.lines.append(f"{target} = {expression}")
        self.owned[target] = owned

    def _numpy_with_diagonals(self, target, free, table, sizes, resolved: list[ResolvedTerm], operands, shape) -> None:
        """A zero result and each term added into it, a term on a diagonal (``delta_ab``) into
        the diagonal view ``np.einsum("pqip->pqi", result)`` (the runtime's strided views)."""
        self.lines.append(f"{target} = np.zeros({shape}, dtype=np.result_type({', '.join(operands) or self.like}))")
        for number, term in enumerate(resolved):
            value = self.term_value(number, term, free, table, sizes)
            sign = "-=" if value.negative else "+="
            if not term.merged:
                self.lines.append(f"{target} {sign} {self._aligned(value, free)[0]}")
                continue
            axes = [i for i in free if term.find(i) == i]
            view = "".join(table[term.find(i)] for i in free) + "->" + "".join(table[i] for i in axes)
            where = ", ".join(f"{b} = {a}" for b, a in term.merged.items())
            code = self._aligned(value, axes)[0]
            self.lines.append(f'np.einsum("{view}", {target})[...] {sign} {code}  # on the diagonal {where}')
        self.owned[target] = True

    def _full(self, shape: str, value: str) -> str:
        if self.flavour == "torch":
            return f"torch.full({shape}, {value}, dtype={self.like}.dtype, device={self.like}.device)"
        return f"np.full({shape}, {value}, dtype=np.result_type({self.like}))"

    @staticmethod
    def _aligned(value: _Value, order) -> tuple[str, bool]:
        """(code, atomic): the value indexed with None for the axes of ``order`` it lacks, so
        that it broadcasts (leading ones are implicit)."""
        index = [":" if i in value.axes else "None" for i in order]
        while index and index[0] == "None":
            index.pop(0)
        while index and index[-1] == ":":
            index.pop()
        if value.full_rank or not value.axes or not index:
            return value.code, value.atomic
        return f"{value.wrapped()}[{', '.join(index)}]", True

    def term_value(self, number: int, term: ResolvedTerm, free, table, sizes: _Sizes) -> _Value:
        """Code for one resolved term: its contraction (over its operands, merged indices
        renamed) times its coefficient and sizes (``delta_kk`` is the size of k, the 1/n of a
        mean one over it, multiplied in the runtime's order); jax and torch keep a term on a
        diagonal there with ``where``."""
        present = [i for i in free if term.find(i) == i and any(i in idx for idx in term.inputs)]
        factors = [_number(abs(term.coefficient))] if abs(term.coefficient) != 1 else []
        for index, power in term.size_powers:
            count = sizes.term_size(number, index)
            if power < 0:  # 0 ** -1 raises in Python: a mean over an empty axis is NaN in einderiv
                factors.append(f"{self.helper('_count_power')}({count}, {power})")
            else:
                factors.append(f"float({count})" if power == 1 else f"float({count}) ** {power}")
        scale = " * ".join(factors)
        negative = term.coefficient < 0
        if not term.operands:  # a number
            atomic = len(factors) <= 1 and all(power == 1 for _, power in term.size_powers)
            value = _Value(scale or "1.0", frozenset(), negative, fresh=False, atomic=atomic)
            if self.flavour != "python" and term.merged:  # an array to keep on the diagonal, as the runtime's
                ones = _shape_code(["1"] * len(free))
                value = _Value(self._full(ones, value.code), frozenset(), negative, full_rank=True)
        else:
            operands = [self.names[n] for n in term.operands]
            subscripts = ",".join("".join(table[i] for i in idx) for idx in term.inputs)
            subscripts += "->" + "".join(table[i] for i in present)
            subtracted = term.coefficient == -1 and number > 0  # the runtime's a - b: no scaled copy of b
            if self.flavour == "python" and term.coefficient != 1 and not term.size_powers and not subtracted:
                # as the runtime: the coefficient scales the smallest operand (by rank, here) when that
                # is smaller than the result
                ranks = [len(idx) for idx in term.inputs]
                smallest = min(range(len(ranks)), key=ranks.__getitem__)
                if ranks[smallest] < len(present):
                    operand = operands[smallest]
                    scaled = f"-{operand}" if term.coefficient == -1 else f"{_number(term.coefficient)} * {operand}"
                    operands[smallest] = f"({scaled})"
                    scale, negative = "", False
            code, fresh, atomic = self.einsum(subscripts, operands)
            if scale:
                code, fresh, atomic = f"{scale} * {code if atomic else f'({code})'}", True, False
            value = _Value(code, frozenset(present), negative, fresh, atomic)
        if self.flavour == "python" or not term.merged:
            return value
        return self._masked(value, term, free, sizes)

    def _masked(self, value: _Value, term: ResolvedTerm, free, sizes: _Sizes) -> _Value:
        """jax and torch: a term on the diagonal a = b as the runtime's generic path has it,
        ``where(a == b, value, 0)``: one axis per free index, the value broadcast along b."""
        position = {i: k for k, i in enumerate(free)}
        code = value.code
        if not value.full_rank:
            index = ", ".join(":" if i in value.axes else "None" for i in free)
            code = f"{value.wrapped()}[{index}]" if value.axes else value.code
        for b, a in term.merged.items():
            mask = f"_diagonal_mask({sizes.free_size(b)}, {len(free)}, {position[a]}, {position[b]}"
            mask += f", {self.like})" if self.flavour == "torch" else ")"
            self.helper("_diagonal_mask")
            code = f"{self.xp}.where({mask}, {code}, 0)"
        axes = value.axes | set(term.merged) | set(term.merged.values())
        return _Value(code, frozenset(axes), value.negative, True, True, True)

    def einsum(self, subscripts: str, operands: list[str]) -> tuple[str, bool, bool]:
        """(code, fresh, atomic) for ``einsum(subscripts, *operands)``."""
        inputs_text, output = subscripts.split("->")
        inputs = inputs_text.split(",")
        if self.flavour == "python":
            return _numpy_contraction(inputs, output, operands, self.helpers)
        if len(inputs) == 1 and inputs[0] == output:
            return operands[0], False, True  # the operand itself, its axes in place
        fresh = len(inputs) > 1 or bool(set(inputs[0]) - set(output))
        return f'{self.xp}.einsum("{subscripts}", {", ".join(operands)})', fresh, True


#: code generation: each kind of step (but a contraction, which :meth:`_Body.contraction` writes)
#: -> (body, step, the source's name in the module) -> the expression computing it
CODE_FOR = {
    Contract: None,  # written by _Body.contraction, statement by statement
    Solve: lambda body, step, source: (
        f"{body.helper('_solve')}({source}, {body.names[step.operand]}, {step.transposed})"
    ),
    MatrixFunction: lambda body, step, source: f"{body.helper('_' + step.func)}({source})",
    Softmax: lambda body, step, source: f"{body.helper('_softmax')}({source}, {step.axes[0]})",
    LogSumExp: lambda body, step, source: f"{body.helper('_logsumexp')}({source}, {step.axes[0]}, {step.axes[1]})",
    LogSoftmax: lambda body, step, source: f"{body.helper('_log_softmax')}({source}, {step.axes[0]})",
    SoftmaxComplement: lambda body, step, source: f"{body.helper('_softmax_complement')}({source}, {step.axes[0]})",
    SoftmaxCentred: lambda body, step, source: (
        f"{body.helper('_softmax_centred')}({source}, {body.names[step.operand]}, {step.axes[0]})"
    ),
    LogOneMinusExp: lambda body, step, source: f"{body.helper('_log1mexp')}({source})",
    Elementwise: lambda body, step, source: body.elementwise(step.func, step.param, source),
}


def _numpy_contraction(inputs: list[str], output: str, operands: list[str], helpers: set[str]):
    """(code, fresh, atomic) for a NumPy contraction, lowered as the runtime's
    ``_contraction`` lowers it: the operand itself; axes only one operand carries summed first and
    0-d operands multiplied last; NumPy's einsum for one operand; a matrix product for the common
    pairwise contractions; else the ``_contract`` helper (einsum for small operands, opt_einsum's
    planned expression for large ones)."""
    subscripts = ",".join(inputs) + "->" + output
    if len(inputs) == 1 and inputs[0] == output:
        return operands[0], False, True
    if len(inputs) > 1:
        reduced = _reduced_first(inputs, output, operands, helpers)
        if reduced is not None:
            return reduced
    if len(inputs) == 1 and len(output) == 2 and inputs[0] == output[::-1]:
        return f"{operands[0]}.T", False, True  # a transposed view
    if len(inputs) == 1:
        return f'np.einsum("{subscripts}", {operands[0]})', bool(set(inputs[0]) - set(output)), True
    if len(inputs) == 2:
        product = _matrix_product(inputs, output, operands)
        if product is not None:
            return product
    helpers.add("_contract")
    return f'_contract("{subscripts}", {", ".join(operands)})', True, True


def _reduced_first(inputs: list[str], output: str, operands: list[str], helpers: set[str]):
    """As the runtime's ``_reduced_first``: an operand sums the axes that only it carries before
    the contraction (``inv(S)_ie r_ne -> i`` is inv(S) times the column sums of r), and 0-d
    operands multiply the result at the end.  None where neither applies."""
    scalars = [k for k, sub in enumerate(inputs) if not sub]
    counts = Counter(c for sub in inputs for c in sub)
    summed_any = False
    new_inputs, new_operands = [], []
    for k, sub in enumerate(inputs):
        if not sub:
            continue
        own = [axis for axis, c in enumerate(sub) if counts[c] == 1 and c not in output]
        code = operands[k]
        if own and len(sub) > 1 and len(own) < len(sub):
            axes = own[0] if len(own) == 1 else tuple(own)
            code = f"{code}.sum(axis={axes})"
            sub = "".join(c for axis, c in enumerate(sub) if axis not in own)
            summed_any = True
        new_inputs.append(sub)
        new_operands.append(code)
    if not scalars and not summed_any:
        return None
    if new_inputs:
        code, fresh, atomic = _numpy_contraction(new_inputs, output, new_operands, helpers)
        fresh = fresh or summed_any
    else:
        code, fresh, atomic = operands[scalars[0]], False, True
        scalars = scalars[1:]
    for k in scalars:
        code, fresh, atomic = f"{code if atomic else f'({code})'} * {operands[k]}", True, False
    return code, fresh, atomic


def _matrix_product(inputs: list[str], output: str, operands: list[str]):
    """A direct NumPy expression for the pairwise contractions that are one call at any size:
    matrix-vector, vector-matrix and dot products (``@``), outer products and elementwise
    products (``*``, broadcast): (code, fresh, atomic), or None.  A product of two matrices goes
    to ``_contract``: for large operands opt_einsum's tensordot picks the layout of the result,
    as the runtime has it, and the elementwise products that follow stay fast."""
    a, b = inputs
    x, y = operands
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        return None
    if (len(a), len(b)) == (2, 1) and a[1] == b and output == a[0]:
        return f"{x} @ {y}", True, False
    if (len(a), len(b)) == (1, 2) and b[0] == a and output == b[1]:
        return f"{x} @ {y}", True, False
    if (len(a), len(b)) == (1, 1) and a == b and output == "":
        return f"{x} @ {y}", True, False
    if len(a) == 1 and len(b) == 1 and a != b and output in (a + b, b + a):
        first, second = (x, y) if output == a + b else (y, x)
        return f"np.multiply.outer({first}, {second})", True, True
    if set(a) | set(b) == set(output) and _in_order(a, output) and _in_order(b, output):
        # nothing summed: an elementwise product, each operand broadcast along what it lacks
        return f"{_broadcast(x, a, output)} * {_broadcast(y, b, output)}", True, False
    return None


def _in_order(indices: str, output: str) -> bool:
    positions = [output.index(c) for c in indices]
    return positions == sorted(positions)


def _broadcast(code: str, indices: str, output: str) -> str:
    """``code`` (axes ``indices``, in ``output``'s order) indexed with None for the axes of
    ``output`` it lacks after its first (leading ones broadcast by themselves)."""
    index = [":" if c in indices else "None" for c in output]
    while index and index[0] == "None":
        index.pop(0)
    while index and index[-1] == ":":
        index.pop()
    return f"{code}[{', '.join(index)}]" if index else code


# -- functions and the module ----------------------------------------------------------------------
def _written(compiled: Compiled) -> list:
    """The statements as the user wrote them: a derivative's sources, else the program's."""
    definitions = compiled.sources if isinstance(compiled, Derivative) else compiled.program.definitions
    return [d.statement if d.statement is not None else d.display() for d in definitions]


def _parameters(*items) -> list[str]:
    """The inputs of ``items``, in the order they first appear in the statements as written
    (``f = x_i A_ij x_j`` takes x, then A); any left over (a wrt that cancelled) after them."""
    ranks: dict[str, int] = {}
    for item in items:
        ranks.update(item.ranks)
    order: list[str] = []
    for item in items:
        for statement in _written(item):
            for node in walk(statement.rhs):
                if isinstance(node, Tensor):
                    name = node.name
                elif isinstance(node, MatrixCall):
                    name = node.matrix
                else:
                    continue
                if name in ranks and name not in order:
                    order.append(name)
    return order + sorted(set(ranks) - set(order))


def _function_name(compiled) -> str:
    """``dK_dR`` for dK/dR, ``d2f_dx_dx`` for a Hessian, ``K`` for K's value, ``value`` for a
    bare expression, ``hvp_L_w`` (``jvp_``, ``vjp_``, ``hessian_diag_``) for a product.  A
    derivative is named from its root, the statement it differentiates (``compiled.root_name``:
    ``dist`` gives ``ddist_dx``), and its wrt tensors; the derivative of a derivative-named
    statement (``df/dx_k = ...`` by x) takes the printed name (``d2f_dx_dx``)."""
    statement = compiled.statement
    if isinstance(compiled, Product) and compiled.function_name:  # hvp_L_w, hessian_diag_L_w
        return compiled.function_name
    if isinstance(compiled, Derivative):
        written = compiled.root.statement
        if written is not None and written.wrt:
            head = statement.target.name  # the printed name: d2f for df/dx_k by x
        else:
            order = len(compiled.wrt)
            head = ("d" if order == 1 else f"d{order}") + compiled.root_name
        return head + "".join(f"_{w.name}" for w in statement.wrt)
    if statement.target is None:
        return "value"
    return statement.target.name + "".join(f"_{w.name}" for w in statement.wrt)


def _is_gradient(compiled: Compiled) -> bool:
    """A first derivative of a scalar: it gets a value-and-gradient function too (not a product:
    the scalar a VJP differentiates is u · out, which is not a value anyone asked for)."""
    return (
        isinstance(compiled, Derivative)
        and not isinstance(compiled, Product)
        and compiled.order == 1
        and not compiled.root.indices
    )


def _value_of(derivative: Derivative) -> Compiled:
    """The compiled value of the statement a derivative differentiates."""
    statements = tuple(_written(derivative))
    last = derivative.sources[-1] is derivative.root
    return compile_program(Program(statements), None if last else derivative.root.name)


def _axes_text(indices) -> str:
    return "".join(indices) if indices else "(a scalar)"


def _source(
    name: str,
    parameters: list[str],
    line: StraightLine,
    results,
    flavour: str,
    doc: str,
    helpers,
    nested=False,
    as_tuple=False,
) -> str:
    """One function: ``def name(parameters):`` running ``line`` and returning ``results``
    (einderiv name, rank) pairs, one or a tuple; ``nested``: the first, then a tuple of the rest
    (``value_and_grad``'s (value, (g1, g2))); ``as_tuple``: a tuple even of one (``grad(f,
    ["w"])`` returns ``(g,)``)."""
    names = _Names(parameters)
    read = values_read(line.steps)
    # constants take the dtype of the arrays whose values the result reads, as einderiv's runtime
    # gives them (the Jacobian of f_ij = x_i + y_j by x is float64 beside a float64 y); torch's
    # inputs are promoted to that one dtype first (_floats), so any of them stands for it
    like = ", ".join(names[p] for p in parameters if p in read) or names[parameters[0]]
    body = _Body(flavour, names, names[parameters[0]] if flavour == "torch" else like, helpers)
    helpers.add("_float")
    arguments = [names[p] for p in parameters]  # integers as float64, as einderiv reads them
    if flavour == "torch":  # one dtype for all, as the torch backend (einderiv.backends) has it
        helpers.add("_floats")
        counted = [k for k, p in enumerate(parameters) if p in read]
        chosen = f", read={tuple(counted)}" if counted and len(counted) < len(parameters) else ""
        body.lines.append(f"{', '.join(arguments)}, = _floats({', '.join(arguments)}{chosen})")
    else:
        body.lines.append(f"{', '.join(arguments)} = {', '.join(f'_float({a})' for a in arguments)}")
    for step in line.steps:
        body.step(step)
    returned = [body.returned(result, rank) for result, rank in results]
    if nested:
        returned = [returned[0], f"({', '.join(returned[1:])},)"]
    elif as_tuple and len(returned) == 1:
        returned = [f"({returned[0]},)"]
    lines = [*body.lines, f"return {', '.join(returned)}"]
    quiet = flavour == "python" and (line._quiet or any(isinstance(step, Elementwise) for step in line.steps))
    if quiet:  # as the runtime: IEEE results (inf, nan) of functions propagate without warnings
        lines = ['with np.errstate(all="ignore"):', *("    " + text for text in lines)]
    arguments = ", ".join(names[p] for p in parameters)
    code = "\n".join("    " + text for text in lines)
    return f"\n\ndef {name}({arguments}):\n{doc}\n{code}\n"


def _doc(statements: list[str], parameters: list[str], ranks: Mapping[str, int], returns: str) -> str:
    shapes = ", ".join(f"{p} ({ranks[p]} {'axis' if ranks[p] == 1 else 'axes'})" for p in parameters)
    listed = "\n".join("    " + text for text in statements)
    return f'    """Generated by einderiv: do not edit.\n\n{listed}\n\n    Inputs: {shapes}.\n    {returns}\n    """'


def _line(*items: tuple[Compiled, CheckedProgram]) -> StraightLine:
    """One straight line computing the programs' statements in turn (a statement two programs
    share, and every shared call, computed once), each ``(compiled, program it evaluates)``
    with the size hints of the compiled object's dimensions, as its own line has them (an
    intermediate sized only where a later statement uses it: ``t_i = s + delta_ij; f = t_k b_k``)."""
    line = StraightLine()
    added: set[str] = set()
    for item, program in items:
        if program is item.program:
            definitions = item.computed_definitions()
        else:
            dims = dimensions((*getattr(item, "sources", ()), *program.definitions))
            definitions = sized_definitions(program.computed(), item.ranks, dims)
        for definition in definitions:
            if definition.name not in added:
                line.add(definition.name, definition.poly, definition.hints)
                added.add(definition.name)
    return line


def _joint_source(gradients, unique, flavour: str, helpers) -> str:
    """The gradients of :func:`~einderiv.grad` by several names (with the value first for
    ``value_and_grad``) as one function returning them in order, from their one straight line."""
    parts = gradients.parts()
    results = [(name, len(part.indices)) for name, part in zip(gradients.outputs, parts)]
    by = "_".join(identifier(d.wrt[0].name) for d in gradients)
    head = "value_and_grad" if gradients.value is not None else "grad"
    name = unique(f"{head}_{identifier(gradients[0].root_name)}_{by}")
    parameters = _parameters(*parts)
    ranks = {k: v for part in parts for k, v in part.ranks.items()}
    written = [str(s) for s in _written(gradients[0])]
    for derivative in gradients:
        written += [str(d.display()) for d in derivative.program.definitions if str(d.display()) not in written]
    listed = ", ".join(f"df/d{d.wrt[0].name}" for d in gradients)
    several = gradients.value is not None and gradients.several  # value_and_grad(f, [names]): (value, (g...))
    value = "the value, " if gradients.value is not None else ""
    returns = (
        f"Returns ({value}({listed})) as value_and_grad does, computed in one line."
        if several
        else (f"Returns ({value}{listed}), computed in one line.")
    )
    doc = _doc(written, parameters, ranks, returns)
    return _source(
        name,
        parameters,
        gradients.line,
        results,
        flavour,
        doc,
        helpers,
        nested=several,
        as_tuple=gradients.value is None,
    )


def generate(items, flavour: str = "python") -> str:
    """A standalone module with one function per compiled value or derivative in ``items``
    (``K(R)``, ``dK_dR(R)``), its parameters the inputs in the order the source first uses them;
    for the gradient of a scalar also ``value_and_<name>``, returning (value, gradient) from one
    straight line (what the two share computed once).  The module carries only the helpers its
    functions call."""
    if flavour not in FLAVOURS:
        raise EinderivError(f"unknown code flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    helpers: set[str] = set()
    taken: set[str] = set()
    functions: list[str] = []
    names: list[str] = []

    def unique(name: str) -> str:
        text, k = name, 1
        while text in taken:
            k += 1
            text = f"{name}_{k}"
        taken.add(text)
        names.append(text)
        return text

    for item in items:
        if isinstance(item, Gradients):  # grad(source, [names]): one function
            functions.append(_joint_source(item, unique, flavour, helpers))
            continue
        if not isinstance(item, Compiled):
            raise EinderivError(
                f"generate takes compiled values, derivatives and grad()'s gradients, got {type(item).__name__}"
            )
        if not item.ranks:
            raise EinderivError("there is nothing to generate code for: the expression has no inputs")
        name = unique(identifier(_function_name(item)))
        parameters = _parameters(item)
        program = item.program
        statements = [str(d.display()) for d in program.definitions]
        what = "the derivative" if item.wrt else "the value" if program.output == "_" else f"{program.output}'s value"
        returns = f"Returns {what}: axes {_axes_text(item.indices)}."
        doc = _doc(statements, parameters, item.ranks, returns)
        results = [(program.output, len(item.indices))]
        functions.append(_source(name, parameters, item.line, results, flavour, doc, helpers))
        if _is_gradient(item):
            value = _value_of(item)
            both = _parameters(value, item)
            ranks = {**value.ranks, **item.ranks}
            forward = {d.name for d in value.program.definitions}
            written = [str(d.display()) for d in value.program.definitions]
            written += [str(d.display()) for d in program.definitions if d.name not in forward]
            named = "the value" if value.program.output == "_" else value.program.output
            returns = f"Returns (value, gradient): {named} and the derivative, what they share computed once."
            doc = _doc(written, both, ranks, returns)
            results = [(value.program.output, 0), (program.output, len(item.indices))]
            line = _line((value, value.program), (item, item.evaluated_program or program))
            functions.append(_source(unique(f"value_and_{name}"), both, line, results, flavour, doc, helpers))
    module_doc = f'"""Generated by einderiv ({flavour}): {", ".join(names)}.  Standalone; do not edit."""\n\n'
    header = _HEADER[flavour]
    if "_contract" in helpers:
        header += "import opt_einsum as oe\n\n_PLANS = {}  # opt_einsum's expressions, by subscripts and shapes\n"
    ordered = [h for h in _HELPERS[flavour] if h in helpers] + sorted(h for h in helpers if h not in _HELPERS[flavour])
    used = "".join("\n" + _helper_source(helper, flavour) for helper in ordered)
    return module_doc + header + used + "".join(functions)


__all__ = ["FLAVOURS", "function_code", "generate", "identifier"]
