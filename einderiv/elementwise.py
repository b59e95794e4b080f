"""The elementwise functions' registry: one entry per function, read by every stage.

An entry (:class:`Function`) holds all einderiv knows about f: its name; its implementation on the
arrays of a NumPy-like namespace (numpy, jax.numpy, cupy, dask.array) and on torch where torch
differs; its derivative f'(u) in einderiv's own language (``sigmoid``: ``sigmoid(u) - sigmoid(u)^2``,
parsed by einderiv itself, never by ``eval``); f(0) where it is rational; how LaTeX, the Unicode
printer and matrix notation write it; and what generated code calls (a library function or a
helper the module defines).  Adding a function is one entry, :func:`einderiv.functions.register`, and every stage
(parser, differentiation, folding, evaluation on every backend, printers, code generation,
matrix notation) knows it from then on.  Non-smooth points take the sub-derivative 0 (``abs``,
``relu``, ``sign`` and ``step`` at 0), following the usual convention that any value in the
sub-differential is admissible.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

import numpy as np

#: The flavours of generated code (``--format python|jax|torch``); jax uses python's code unless
#: an entry says otherwise (the jax module imports ``jax.numpy as np``).
FLAVOURS = ("python", "jax", "torch")

#: Reductions written with indices: ``sum_i(...)``, ``mean_i(...)``, ``logsumexp_i(...)``, ``softmax_k(...)``.
REDUCTIONS = ("sum", "mean", "logsumexp", "softmax")

#: Functions of a whole square matrix, applied to a matrix's name: ``inv(M)_ij``, ``det(M)``,
#: ``logdet(M)`` (log det(M), det(M) > 0) and ``logabsdet(M)`` (log |det(M)|, any nonzero det), the
#: number of indices each takes.
MATRIX_FUNCTIONS = {"inv": 2, "det": 0, "logdet": 0, "logabsdet": 0}


@dataclass(frozen=True)
class Named:
    """An implementation that is the namespace's own function of that name: ``xp.<name>``
    (code generation writes ``np.<name>`` or ``torch.<name>`` for it)."""

    name: str

    def __call__(self, xp) -> Callable:
        return getattr(xp, self.name)


@dataclass(frozen=True)
class Helper:
    """Code a generated module defines for itself as ``def _<name>(x):`` with this body (statements
    on lines of their own, the last a ``return``), written with the module's names (``np``: NumPy
    or jax.numpy; ``torch``)."""

    body: str


@dataclass(frozen=True)
class Enclosing:
    """A notation that encloses the argument instead of a name before parentheses:
    LaTeX ``\\sqrt{u}`` is ``Enclosing(r"\\sqrt{", "}")``, ``|u|`` is ``Enclosing(r"\\left|", r"\\right|")``."""

    before: str
    after: str


@dataclass(frozen=True)
class Function:
    """One elementwise function f (``u`` is its argument in ``derivative``).

    * ``make(xp)``: f on the arrays of a NumPy-like namespace; ``torch(torch)`` where torch's
      names or signatures differ (default: ``make``).
    * ``derivative``: f'(u) in einderiv's language.
    * ``at_zero``: f(0) where it is rational (for folding a call on an argument that cancelled:
      ``tanh(A_ij - A_ij)`` is 0), else None.
    * ``latex``: a command written before ``\\left(u\\right)`` (``\\tanh``), or an :class:`Enclosing`;
      default ``\\operatorname{name}``.
    * ``pretty``: the Unicode printer's name, the name itself or one glyph (``σ``) that the
      parser reads back before ``(``.
    * ``matrix``: the name matrix notation prints and reads, applied elementwise (default: the name).
    * ``code``: per flavour, an expression naming a callable in the generated module
      (``np.tanh``, ``torch.sigmoid``) or a :class:`Helper`; a :class:`Named` implementation
      defaults to ``np.<name>``/``torch.<name>``, and jax to python's.
    """

    name: str
    make: Callable
    derivative: str
    at_zero: Fraction | None = None
    latex: str | Enclosing | None = None
    pretty: str | None = None
    matrix: str | None = None
    code: Mapping[str, str | Helper] = field(default_factory=dict, hash=False)
    torch: Callable | None = None

    def __post_init__(self) -> None:
        code = dict(self.code)
        if isinstance(self.make, Named):
            code.setdefault("python", f"np.{self.make.name}")
            if self.torch is None:
                code.setdefault("torch", f"torch.{self.make.name}")
        if "python" in code:
            code.setdefault("jax", code["python"])
        object.__setattr__(self, "code", MappingProxyType(code))
        if self.latex is None:
            object.__setattr__(self, "latex", r"\operatorname{" + self.name + "}")
        if self.pretty is None:
            object.__setattr__(self, "pretty", self.name)
        if self.matrix is None:
            object.__setattr__(self, "matrix", self.name)

    def on(self, xp, library: str = "") -> Callable:
        """f on the arrays of ``xp`` (``library`` is the backend's name: torch has its own)."""
        if library == "torch" and self.torch is not None:
            return self.torch(xp)
        return self.make(xp)

    def helper_source(self, flavour: str) -> str | None:
        """``def _<name>(x): ...`` for a generated module of ``flavour``, or None where the code is
        a callable the module already has."""
        code = self.code[flavour]
        if not isinstance(code, Helper):
            return None
        return f"def _{self.name}(x):\n" + textwrap.indent(code.body.strip("\n"), "    ") + "\n"


def _writes_into(function: Callable) -> Callable:
    """Mark a NumPy implementation that takes ``out=`` as a unary ufunc does (an array of the
    result's shape and dtype to write into), so the evaluator can hand it the array an earlier
    evaluation left: a fresh array of a million values costs page faults (relu's 0.2 ms at
    2000 x 200 took 1.2 ms inside a network's gradient)."""
    function.writes_into = True
    return function


def _into(out, x):
    """``out`` where the result may be written into it: an array of x's shape and dtype that
    shares no memory with x (the helpers read x after writing), else None (a fresh array)."""
    if out is None or out.shape != x.shape or out.dtype != x.dtype or np.may_share_memory(out, x):
        return None
    return out


def _sigmoid(xp):
    """1 / (1 + exp(-x)) without overflow or cancellation: with e = exp(-|x|), which never
    overflows, 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0.  Each is a few operations of
    at most half an ulp each, so the result is within 2 ulp relative at every x (-745 to 745,
    then 0 and 1; NaN stays NaN), where exp(-logaddexp(0, -x)) was 31 ulp off at x = -33
    (exp magnifies logaddexp's rounding) and 0.5 (1 + tanh(x / 2)) loses every digit below
    x = -37.  It runs in a third of the time of exp(-logaddexp(0, -x)): exp, minimum, where,
    add and divide are plain ufuncs (numpy, jax.numpy, cupy, dask.array)."""

    def sigmoid(x):
        e = xp.exp(xp.minimum(x, -x))
        return xp.where(x < 0, e, 1) / (1 + e)

    return _numpy_sigmoid if xp is np else sigmoid


@_writes_into
def _numpy_sigmoid(x, out=None):
    """The same numbers on NumPy arrays, 1.3x (a million values) to 5x (20000) faster: the
    numerator ``where(x < 0, e, 1)`` as ``maximum(e, x >= 0)`` (e <= 1, and NaN where e is NaN),
    the other steps in place.  NumPy's three-operand where is a scalar loop."""
    x = np.asarray(x)
    e = np.exp(np.minimum(x, -x))
    if not e.ndim or e.dtype.kind != "f":  # (a complex maximum is another order)
        return np.where(x < 0, e, 1) / (1 + e)
    numerator = np.maximum(e, (x >= 0).astype(e.dtype), out=_into(out, x))
    np.add(e, 1, out=e)
    return np.divide(numerator, e, out=numerator)


def _softplus(xp):
    """log(1 + exp(x)) without overflow."""
    return _numpy_softplus if xp is np else (lambda x: xp.logaddexp(0, x))


@_writes_into
def _numpy_softplus(x, out=None):
    """log(1 + exp(x)) on NumPy arrays as ``max(x, 0) + log1p(exp(-|x|))``, the formula of
    NumPy's ``logaddexp(0, x)`` (as accurate, within 2 ulp: exp never overflows, log1p keeps
    the small values), in vectorised ufuncs, four of them in place: 2.2x faster than
    logaddexp's scalar loop at 2000 x 200, 8x at 20000 values (timed side by side).  +-inf and
    NaN as logaddexp gives them; a complex x stays logaddexp's error: the rules that write
    softplus, ``log(exp(a) + exp(b)) = a + softplus(b - a)``, hold for complex values only up
    to 2 pi i."""
    x = np.asarray(x)
    if not x.ndim or x.dtype.kind != "f":
        return np.logaddexp(0, x)
    out = np.abs(x, out=_into(out, x))
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    return np.add(out, np.maximum(x, 0), out=out)


#: what a generated module says for softplus at a complex value (torch's logaddexp gave a value
#: 2 pi i off, NumPy's a bare TypeError)
_COMPLEX_SOFTPLUS = (
    "softplus cannot be evaluated at complex values: a rewrite such as log(exp(a) + exp(b)) = a + softplus(b - a) "
    "holds there only up to 2 pi i"
)


def _torch_softplus(torch):
    return lambda x: torch.logaddexp(x, torch.zeros_like(x))


def _relu(xp):
    return _numpy_relu if xp is np else (lambda x: xp.maximum(x, 0))


@_writes_into
def _numpy_relu(x, out=None):
    """max(x, 0) on NumPy arrays against a row of zeros as long as x's last axis: NumPy's maximum
    against a scalar runs a slower loop (0.18 ms against 0.10 ms at 2000 x 200).  The same
    numbers (NaN stays NaN, -0.0 gives 0.0).  ``out``: an array of x's shape and dtype to write into."""
    x = np.asarray(x)
    if not x.ndim or x.dtype.kind != "f" or x.shape[-1] < 16:
        return np.maximum(x, 0, out=_into(out, x))
    return np.maximum(x, np.zeros(x.shape[-1], x.dtype), out=_into(out, x))


def _step(xp):
    """Heaviside step with value 0 at 0: the derivative of relu, with relu's sub-derivative 0 at the
    kink; NaN at NaN (``x > 0`` alone is False there, which made relu'(NaN) 0)."""
    if xp is np:
        return _numpy_step
    return lambda x: xp.where(xp.isnan(x), x, (x > 0).astype(x.dtype))


@_writes_into
def _numpy_step(x, out=None):
    """The step on NumPy arrays: ``x > 0`` as x's dtype, then NaN copied in where x is NaN.  The
    same numbers as ``where(isnan(x), x, x > 0)``, 15x faster at 2000 x 200 (0.2 ms against 3 ms:
    NumPy's three-operand where is a scalar loop)."""
    x = np.asarray(x)
    out = _into(out, x)
    out = (x > 0).astype(x.dtype) if out is None else np.greater(x, 0, out=out)
    if out.ndim:
        np.copyto(out, x, where=np.isnan(x))
    elif np.isnan(x):
        out = x.copy()
    return out


def _torch_step(torch):
    return lambda x: torch.where(torch.isnan(x), x, (x > 0).to(x.dtype))


def _torch_sign(torch):
    """torch.sign is 0 at NaN; NumPy's sign (and every other namespace's) is NaN there."""
    return lambda x: torch.where(torch.isnan(x), x, torch.sign(x))


def _plain(name: str, derivative: str, at_zero: Fraction | None = None, latex: str | None = None) -> Function:
    """A function the namespaces all have under its own name; LaTeX's ``\\<name>`` unless said."""
    return Function(name, Named(name), derivative, at_zero, latex=latex or "\\" + name)


#: The functions einderiv knows from the start (they cannot be unregistered).
BUILT_IN = (
    _plain("exp", "exp(u)", Fraction(1)),
    _plain("log", "u^-1"),
    Function("log1p", Named("log1p"), "(1 + u)^-1", Fraction(0)),
    Function("expm1", Named("expm1"), "exp(u)", Fraction(0)),
    _plain("sin", "cos(u)", Fraction(0)),
    _plain("cos", "-sin(u)", Fraction(1)),
    _plain("tan", "1 + tan(u)^2", Fraction(0)),
    _plain("tanh", "1 - tanh(u)^2", Fraction(0)),
    _plain("cosh", "sinh(u)", Fraction(1)),
    _plain("sinh", "cosh(u)", Fraction(0)),
    _plain("arcsin", "sqrt(1 - u^2)^-1", Fraction(0)),
    _plain("arccos", "-sqrt(1 - u^2)^-1"),
    _plain("arctan", "(1 + u^2)^-1", Fraction(0)),
    Function(
        "sigmoid",
        _sigmoid,
        "sigmoid(u) - sigmoid(u)^2",
        Fraction(1, 2),
        latex=r"\sigma",
        pretty="σ",
        code={
            "python": Helper("e = np.exp(np.minimum(x, -x))\nreturn np.where(x < 0, e, 1) / (1 + e)"),
            "torch": "torch.sigmoid",
        },
        torch=lambda torch: torch.sigmoid,
    ),
    Function("sqrt", Named("sqrt"), "0.5 sqrt(u)^-1", Fraction(0), latex=Enclosing(r"\sqrt{", "}"), pretty="√"),
    Function("abs", Named("abs"), "sign(u)", Fraction(0), latex=Enclosing(r"\left|", r"\right|")),
    Function(
        "relu",
        _relu,
        "step(u)",
        Fraction(0),
        code={"python": Helper("return np.maximum(x, 0)"), "torch": "torch.relu"},
        torch=lambda torch: torch.relu,
    ),
    Function(
        "softplus",
        _softplus,
        "sigmoid(u)",
        code={  # refused at complex values, as einderiv's own paths refuse them (backends.REAL_ONLY)
            "python": Helper(
                f"if np.iscomplexobj(x):\n    raise TypeError({_COMPLEX_SOFTPLUS!r})\nreturn np.logaddexp(0, x)"
            ),
            "torch": Helper(
                f"if torch.is_complex(x):\n    raise TypeError({_COMPLEX_SOFTPLUS!r})\n"
                "return torch.logaddexp(x, torch.zeros_like(x))"  # as einderiv's torch path
            ),
        },
        torch=_torch_softplus,
    ),
    Function(
        "sign",
        Named("sign"),
        "0",
        Fraction(0),
        # NaN at NaN, as NumPy has it (torch.sign gives 0)
        code={"torch": Helper("return torch.where(torch.isnan(x), x, torch.sign(x))")},
        torch=_torch_sign,
    ),
    Function(
        "step",
        _step,
        "0",
        Fraction(0),
        code={
            "python": Helper("return np.where(np.isnan(x), x, (x > 0).astype(x.dtype))"),
            "torch": Helper("return torch.where(torch.isnan(x), x, (x > 0).to(x.dtype))"),
        },
        torch=_torch_step,
    ),
)

_REGISTRY: dict[str, Function] = {row.name: row for row in BUILT_IN}

#: name -> entry: a read-only view of the registry (entries added by
#: :func:`einderiv.functions.register` appear in it).
FUNCTIONS: Mapping[str, Function] = MappingProxyType(_REGISTRY)

#: The glyphs the Unicode printer writes for calls that are not functions' entries: ``Σ_i(...)``.
OTHER_GLYPHS = {"Σ": "sum"}


def entry(name: str) -> Function | None:
    """The registry's entry for ``name``, if any (a plain dict lookup, which tracers such as
    ``torch.compile`` follow; they stop at a mapping proxy over a dict that may change)."""
    return _REGISTRY.get(name)


def call_glyphs() -> dict[str, str]:
    """glyph -> function for the names the Unicode printer writes as one glyph (``σ``, ``√``, ``Σ``),
    which the parser reads back when ``(`` follows."""
    glyphs = {row.pretty: row.name for row in _REGISTRY.values() if row.pretty != row.name}
    return {**glyphs, **OTHER_GLYPHS}


def in_matrix_notation(name: str) -> Function | None:
    """The entry matrix notation writes as ``name(...)``, if any."""
    for row in _REGISTRY.values():
        if row.matrix == name:
            return row
    return None


def known_functions() -> str:
    """Every function name the language knows, for messages: elementwise, matrix functions, reductions."""
    return ", ".join(sorted([*_REGISTRY, *MATRIX_FUNCTIONS, *REDUCTIONS]))


def add_entry(function: Function) -> None:
    """Put ``function`` in the registry under its name (checks are :mod:`einderiv.functions`')."""
    _REGISTRY[function.name] = function


def remove_entry(name: str) -> Function:
    """Take the entry of ``name`` out of the registry; returns it."""
    return _REGISTRY.pop(name)
