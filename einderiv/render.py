"""Rendering IR as LaTeX (``\\frac{\\partial K_{pq}}{\\partial R_{ij}} = ...``) and as Unicode for
the terminal (``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``): the two glyph tables that
:func:`einderiv.ir.write` prints with, as ``str()`` prints with :data:`einderiv.glyphs.TEXT`.
An elementwise function's notation is in its registry entry (:mod:`einderiv.elementwise`)."""

from __future__ import annotations

from .elementwise import FUNCTIONS, Enclosing
from .glyphs import Glyphs, format_indices, format_number
from .ir import Program, Tensor, write

# -- Unicode -------------------------------------------------------------------------------------


def _unicode_call(func: str, over: tuple[str, ...], arg: str) -> str:
    """``σ(u)``, ``√(u)``, ``Σ_i(u)``: an entry's Unicode name, else the function's own."""
    if func == "sum":
        return "Σ" + format_indices(over) + "(" + arg + ")"
    row = FUNCTIONS.get(func)
    name = row.pretty if row is not None else func
    return name + format_indices(over) + "(" + arg + ")"


def _unicode_matrix_call(func: str, matrix: str, subscript: str) -> str:
    if func == "inv":
        return f"({matrix}⁻¹)" + subscript
    return f"det({matrix})" if func == "det" else f"logdet({matrix})"


def _partials(statement, write_part) -> tuple[Tensor | None, int, list[str]]:
    """What a derivative-named statement differentiates (None for a bare expression's ``d/dx``),
    its order, and the denominators, printed."""
    base = statement.differentiated
    numerator = Tensor(base, statement.target.indices) if base else None
    return numerator, len(statement.wrt), [write_part(w) for w in statement.denominators]


def _unicode_derivative(statement, write_part) -> str:
    """``∂K_pq/∂R_ij``, ``∂²f/∂x_i ∂x_j``."""
    numerator, order, denominators = _partials(statement, write_part)
    power = "" if order == 1 else {2: "²", 3: "³"}.get(order, f"^{order}")
    top = "∂" + power + (write_part(numerator) if numerator else "")
    return top + "/" + " ".join("∂" + w for w in denominators)


#: Unicode for the terminal, read back by the parser: ``δ_ij``, ``σ(u)``, ``(M⁻¹)_ij``, ``∂f/∂x_i``.
UNICODE = Glyphs(
    name=lambda name: name,
    indices=format_indices,
    delta="δ",
    number=format_number,
    group=("(", ")"),
    power=lambda exponent: "^" + (f"({exponent})" if "/" in exponent else exponent),
    fraction=None,
    call=_unicode_call,
    matrix_call=_unicode_matrix_call,
    derivative=_unicode_derivative,
)

# -- LaTeX ---------------------------------------------------------------------------------------

_GREEK = frozenset(
    {
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "theta",
        "lambda",
        "mu",
        "sigma",
        "tau",
        "phi",
        "psi",
        "omega",
        "Phi",
        "Theta",
        "Sigma",
        "Lambda",
        "Gamma",
        "Omega",
        "Psi",
    }
)


def _latex_name(name: str) -> str:
    """``\\lambda`` for a Greek letter's name, ``\\mathrm{W1}`` for a longer name."""
    if name in _GREEK:
        return "\\" + name
    if len(name) > 1:
        return r"\mathrm{" + name + "}"
    return name


def _latex_indices(indices: tuple[str, ...]) -> str:
    """``_{pq}``, ``_{in,out}``."""
    if not indices:
        return ""
    body = "".join(indices) if all(len(i) == 1 for i in indices) else ",".join(indices)
    return "_{" + body.replace("_", r"\_") + "}"


def _latex_number(value) -> str:
    text = format_number(value)
    if "/" in text:
        p, q = text.split("/")
        return r"\frac{" + p + "}{" + q + "}"
    return text


def _latex_call(func: str, over: tuple[str, ...], arg: str) -> str:
    r"""``\sum_{i} \left(u\right)``, ``\tanh\left(u\right)``, ``\sqrt{u}``: an entry's LaTeX."""
    if func == "sum":
        return r"\sum_{" + ",".join(over) + r"} \left(" + arg + r"\right)"
    row = FUNCTIONS.get(func)
    if row is not None and isinstance(row.latex, Enclosing):
        return row.latex.before + arg + row.latex.after
    command = row.latex if row is not None else r"\operatorname{" + func + "}"
    return command + _latex_indices(over) + r"\left(" + arg + r"\right)"


def _latex_matrix_call(func: str, matrix: str, subscript: str) -> str:
    if func == "inv":
        return r"\left(" + matrix + r"^{-1}\right)" + subscript
    return rf"\det\left({matrix}\right)" if func == "det" else rf"\log\det\left({matrix}\right)"


def _latex_derivative(statement, write_part) -> str:
    r"""``\frac{\partial K_{pq}}{\partial R_{ij}}``, ``\frac{\partial^{2} f}{\partial x_{i} \partial x_{j}}``."""
    numerator, order, denominators = _partials(statement, write_part)
    power = "" if order == 1 else f"^{{{order}}}"
    top = r"\partial" + power + (" " + write_part(numerator) if numerator else "")
    return r"\frac{" + top + "}{" + " ".join(r"\partial " + w for w in denominators) + "}"


#: LaTeX: ``\delta_{ij}``, ``\frac{a}{b}``, ``\left(M^{-1}\right)_{ij}``, ``\sigma\left(u\right)``.
LATEX = Glyphs(
    name=_latex_name,
    indices=_latex_indices,
    delta=r"\delta",
    number=_latex_number,
    group=(r"\left(", r"\right)"),
    power=lambda exponent: "^{" + exponent + "}",
    fraction=lambda numerator, denominator: r"\frac{" + numerator + "}{" + denominator + "}",
    call=_latex_call,
    matrix_call=_latex_matrix_call,
    derivative=_latex_derivative,
)


def latex(node) -> str:
    """LaTeX for an IR node, a statement or a program (an ``aligned`` block for several)."""
    if isinstance(node, Program):
        lines = [write(s, LATEX).replace(" = ", " &= ", 1) for s in node.statements]
        if len(lines) == 1:
            return lines[0].replace(" &= ", " = ", 1)
        return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"
    return write(node, LATEX)


def pretty(node) -> str:
    """Unicode for the terminal: ``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``."""
    return write(node, UNICODE)
