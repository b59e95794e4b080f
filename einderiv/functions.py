"""The elementwise functions: one registry entry per function, read by every stage.

An entry (:class:`Function`) holds all einderiv knows about f: its name; its implementation on the
arrays of a NumPy-like namespace (numpy, jax.numpy, cupy, dask.array) and on torch where torch
differs; its derivative f'(u) in einderiv's own language (``sigmoid``: ``sigmoid(u) - sigmoid(u)^2``,
parsed by einderiv itself, never by ``eval``); f(0) where it is rational; how LaTeX, the Unicode
printer and matrix notation write it; and what generated code calls (a library function or a
helper the module defines).  Adding a function is one entry, :func:`register`, and every stage
(parser, differentiation, folding, evaluation on every backend, printers, code generation,
matrix notation) knows it from then on.  Non-smooth points take the sub-derivative 0 (``abs``,
``relu``, ``sign`` and ``step`` at 0), following the usual convention that any value in the
sub-differential is admissible.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

from .errors import EinderivError

#: The flavours of generated code (``--format python|jax|torch``); jax uses python's code unless
#: an entry says otherwise (the jax module imports ``jax.numpy as np``).
FLAVOURS = ("python", "jax", "torch")

#: Reductions written with indices: ``sum_i(...)``, ``mean_i(...)``, ``logsumexp_i(...)``, ``softmax_k(...)``.
REDUCTIONS = ("sum", "mean", "logsumexp", "softmax")

#: Functions of a whole square matrix, applied to a matrix's name: ``inv(M)_ij``, ``det(M)``.
MATRIX_FUNCTIONS = {"inv": 2, "det": 0, "logdet": 0}

#: Names an elementwise function may not take: the reductions, the matrix functions, the
#: Kronecker delta, and ``pow`` (how the normal form calls a power).
_TAKEN = frozenset([*REDUCTIONS, *MATRIX_FUNCTIONS, "delta", "pow"])
_NAME = re.compile(r"[a-z][a-z0-9]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


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

    return sigmoid


def _softplus(xp):
    """log(1 + exp(x)) without overflow."""
    return lambda x: xp.logaddexp(0, x)


def _torch_softplus(torch):
    return lambda x: torch.logaddexp(x, torch.zeros_like(x))


def _relu(xp):
    return lambda x: xp.maximum(x, 0)


def _step(xp):
    """Heaviside step with value 0 at 0: the derivative of relu, with relu's sub-derivative 0 at the
    kink; NaN at NaN (``x > 0`` alone is False there, which made relu'(NaN) 0)."""
    return lambda x: xp.where(xp.isnan(x), x, (x > 0).astype(x.dtype))


def _torch_step(torch):
    return lambda x: torch.where(torch.isnan(x), x, (x > 0).to(x.dtype))


def _torch_sign(torch):
    """torch.sign is 0 at NaN; NumPy's sign (and every other namespace's) is NaN there."""
    return lambda x: torch.where(torch.isnan(x), x, torch.sign(x))


def _plain(name: str, derivative: str, at_zero: Fraction | None = None, latex: str | None = None) -> Function:
    """A function the namespaces all have under its own name; LaTeX's ``\\<name>`` unless said."""
    return Function(name, Named(name), derivative, at_zero, latex=latex or "\\" + name)


_BUILT_IN = (
    _plain("exp", "exp(u)", Fraction(1)),
    _plain("log", "u^-1"),
    Function("log1p", Named("log1p"), "(1 + u)^-1", Fraction(0)),
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
        code={
            "python": Helper("return np.logaddexp(0, x)"),
            "torch": Helper("return torch.logaddexp(x, torch.zeros_like(x))"),  # as einderiv's torch path
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

_REGISTRY: dict[str, Function] = {row.name: row for row in _BUILT_IN}

#: name -> entry: a read-only view of the registry (entries added by :func:`register` appear in it).
FUNCTIONS: Mapping[str, Function] = MappingProxyType(_REGISTRY)

#: The glyphs the Unicode printer writes for calls that are not functions' entries: ``Σ_i(...)``.
_OTHER_GLYPHS = {"Σ": "sum"}


def entry(name: str) -> Function | None:
    """The registry's entry for ``name``, if any (a plain dict lookup, which tracers such as
    ``torch.compile`` follow; they stop at a mapping proxy over a dict that may change)."""
    return _REGISTRY.get(name)


def call_glyphs() -> dict[str, str]:
    """glyph -> function for the names the Unicode printer writes as one glyph (``σ``, ``√``, ``Σ``),
    which the parser reads back when ``(`` follows."""
    glyphs = {row.pretty: row.name for row in _REGISTRY.values() if row.pretty != row.name}
    return {**glyphs, **_OTHER_GLYPHS}


def in_matrix_notation(name: str) -> Function | None:
    """The entry matrix notation writes as ``name(...)``, if any."""
    for row in _REGISTRY.values():
        if row.matrix == name:
            return row
    return None


def known_functions() -> str:
    return ", ".join(sorted([*_REGISTRY, *MATRIX_FUNCTIONS, *REDUCTIONS]))


def register(function: Function) -> Function:
    """Add ``function`` to the registry: a free name, then :func:`check` (undone if it fails)."""
    if not isinstance(function, Function):
        raise EinderivError(f"register takes an einderiv.functions.Function, not {type(function).__name__}")
    name = function.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise EinderivError(f"a function's name is a lowercase letter then letters and digits, not {name!r}")
    if name in _REGISTRY:
        raise EinderivError(f"the function {name!r} is already registered")
    if name in _TAKEN:
        raise EinderivError(f"{name!r} names a reduction, a matrix function or a built-in of the language")
    _REGISTRY[name] = function
    try:
        check(function)
    except BaseException:
        del _REGISTRY[name]
        raise
    return function


def check(function: Function) -> None:
    """Whether every stage can use a registered entry: code for every flavour; printed names
    distinct from the other entries'; a derivative that parses, names nothing but ``u`` and
    lowers; f(0) as its NumPy implementation computes it.  Raises EinderivError if not."""
    _check_code(function)
    _check_notation(function)
    _check_derivative(function)
    _check_at_zero(function)


def unregister(name: str) -> Function:
    """Remove a function added by :func:`register` (the built-in ones stay); returns its entry."""
    if any(row.name == name for row in _BUILT_IN):
        raise EinderivError(f"{name!r} is built in and cannot be unregistered")
    if name not in _REGISTRY:
        raise EinderivError(f"the function {name!r} is not registered")
    users = [row.name for row in _REGISTRY.values() if row.name != name and name in _calls(row.derivative)]
    if users:
        raise EinderivError(f"cannot unregister {name!r}: the derivative of {', '.join(users)} calls it")
    return _REGISTRY.pop(name)


@contextmanager
def registered(function: Function) -> Iterator[Function]:
    """``with registered(Function(...)):`` the function is known inside the block only."""
    register(function)
    try:
        yield function
    finally:
        unregister(function.name)


def _check_code(function: Function) -> None:
    """Code for every flavour: a dotted name (``torch.nn.functional.softplus``) or a helper whose
    source is Python (checked by ``ast.parse``, never run here)."""
    missing = [flavour for flavour in FLAVOURS if flavour not in function.code]
    if missing:
        raise EinderivError(f"the function {function.name!r} needs code for the flavours {', '.join(missing)}")
    for flavour in FLAVOURS:
        code = function.code[flavour]
        if isinstance(code, Helper):
            try:
                ast.parse(function.helper_source(flavour))
            except SyntaxError as err:
                raise EinderivError(f"the {flavour} helper of {function.name!r} is not Python: {err.msg}") from None
        elif not isinstance(code, str) or not _DOTTED.match(code):
            raise EinderivError(
                f"the {flavour} code of {function.name!r} is a dotted name such as np.tanh or a Helper, not {code!r}"
            )


def _check_notation(function: Function) -> None:
    from .matrix.translate import IDENTITY, STRUCTURAL

    if not _NAME.match(function.matrix) or function.matrix in STRUCTURAL or function.matrix == IDENTITY:
        raise EinderivError(f"{function.matrix!r} cannot name a function in matrix notation")
    others = [row for row in _REGISTRY.values() if row.name != function.name]
    if any(row.matrix == function.matrix for row in others):
        raise EinderivError(f"matrix notation already has a function {function.matrix!r}")
    if function.pretty != function.name:
        glyphs = {row.pretty for row in others} | set(_OTHER_GLYPHS)
        if len(function.pretty) != 1 or function.pretty.isascii() or function.pretty in glyphs:
            raise EinderivError(
                f"the Unicode name of {function.name!r} is its name or one non-ASCII glyph no other call "
                f"prints as, not {function.pretty!r}"
            )
    if not isinstance(function.latex, (str, Enclosing)):
        raise EinderivError(f"the LaTeX of {function.name!r} is a command or an Enclosing")


def _check_derivative(function: Function) -> None:
    """The derivative is one expression in the scalar ``u`` alone (no indices, no other names, no
    reductions or matrix functions), and it lowers (its calls are known)."""
    from .differentiate import derivative_template
    from .ir import Call, Delta, MatrixCall, Tensor, walk
    from .parser import parse

    program = parse(function.derivative)
    if len(program.statements) != 1 or program.output.target is not None:
        raise EinderivError(f"the derivative of {function.name!r} is one expression in u, not {function.derivative!r}")
    for node in walk(program.output.rhs):
        scalar_u = isinstance(node, Tensor) and node.name == "u" and not node.indices
        if isinstance(node, (Tensor, Delta, MatrixCall)) and not scalar_u or isinstance(node, Call) and node.over:
            raise EinderivError(
                f"the derivative of {function.name!r} is an elementwise expression in u alone, not "
                f"{function.derivative!r}"
            )
    derivative_template(function.derivative)


def _calls(derivative: str) -> set[str]:
    """The functions a derivative calls."""
    from .ir import Call, walk
    from .parser import parse

    return {node.func for node in walk(parse(derivative).output.rhs) if isinstance(node, Call)}


def _check_at_zero(function: Function) -> None:
    """f(0) as its NumPy implementation computes it is ``at_zero``."""
    if function.at_zero is None:
        return
    import numpy as np

    value = function.make(np)(np.zeros(1))
    if not np.allclose(value, float(function.at_zero), rtol=1e-12, atol=1e-15):
        raise EinderivError(
            f"{function.name}(0) is {value[0]!r} by its implementation, not at_zero = {function.at_zero}"
        )
