"""Adding an elementwise function: :func:`register` checks an entry and adds it to the registry
(:mod:`einderiv.elementwise`), :func:`unregister` and :func:`registered` take it out again.

A registered entry is checked against every stage that reads it: code for every flavour of
generated module, names distinct from the other entries' in LaTeX, Unicode and matrix notation,
a derivative in einderiv's language that parses and lowers, and f(0) as its implementation
computes it.  The entry's types are re-exported here: ``from einderiv.functions import Function,
Helper, registered``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from contextlib import contextmanager

from .differentiate import derivative_template
from .elementwise import (
    BUILT_IN,
    FLAVOURS,
    FUNCTIONS,
    MATRIX_FUNCTIONS,
    OTHER_GLYPHS,
    REDUCTIONS,
    Enclosing,
    Function,
    Helper,
    Named,
    add_entry,
    entry,
    remove_entry,
)
from .errors import EinderivError
from .ir import Call, Delta, MatrixCall, Tensor, walk
from .matrix.translate import IDENTITY, STRUCTURAL
from .parser import parse

#: Names an elementwise function may not take: the reductions, the matrix functions, the
#: Kronecker delta, and ``pow`` (how the normal form calls a power).
_TAKEN = frozenset([*REDUCTIONS, *MATRIX_FUNCTIONS, "delta", "pow"])
_NAME = re.compile(r"[a-z][a-z0-9]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")

__all__ = [
    "FUNCTIONS",
    "Enclosing",
    "Function",
    "Helper",
    "Named",
    "check",
    "register",
    "registered",
    "unregister",
]


def register(function: Function) -> Function:
    """Add ``function`` to the registry: a free name, then :func:`check` (undone if it fails)."""
    if not isinstance(function, Function):
        raise EinderivError(f"register takes an einderiv.functions.Function, not {type(function).__name__}")
    name = function.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise EinderivError(f"a function's name is a lowercase letter then letters and digits, not {name!r}")
    if entry(name) is not None:
        raise EinderivError(f"the function {name!r} is already registered")
    if name in _TAKEN:
        raise EinderivError(f"{name!r} names a reduction, a matrix function or a built-in of the language")
    from .codegen import module_helpers  # (generated code is a stage above the registry)

    if f"_{name}" in module_helpers():
        # its helper _<name> would be the generated module's own (float: its input converter)
        raise EinderivError(
            f"{name!r} is taken: generated code calls a function's helper _{name}, which is the name of a "
            "helper of the generated module's own; choose another name"
        )
    add_entry(function)
    try:
        check(function)
    except BaseException:
        remove_entry(name)
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
    if any(row.name == name for row in BUILT_IN):
        raise EinderivError(f"{name!r} is built in and cannot be unregistered")
    if entry(name) is None:
        raise EinderivError(f"the function {name!r} is not registered")
    users = [row.name for row in FUNCTIONS.values() if row.name != name and name in _calls(row.derivative)]
    if users:
        raise EinderivError(f"cannot unregister {name!r}: the derivative of {', '.join(users)} calls it")
    return remove_entry(name)


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
    if not _NAME.match(function.matrix) or function.matrix in STRUCTURAL or function.matrix == IDENTITY:
        raise EinderivError(f"{function.matrix!r} cannot name a function in matrix notation")
    others = [row for row in FUNCTIONS.values() if row.name != function.name]
    if any(row.matrix == function.matrix for row in others):
        raise EinderivError(f"matrix notation already has a function {function.matrix!r}")
    if function.pretty != function.name:
        glyphs = {row.pretty for row in others} | set(OTHER_GLYPHS)
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
