"""Rendering IR as LaTeX (``\\frac{\\partial K_{pq}}{\\partial R_{ij}} = ...``) and as Unicode for
the terminal (``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``): the two glyph tables that
:func:`einderiv.ir.write` prints with, as ``str()`` prints with :data:`einderiv.glyphs.TEXT`.
An elementwise function's notation is in its registry entry (:mod:`einderiv.elementwise`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from .elementwise import FUNCTIONS, Enclosing
from .glyphs import Glyphs, Precedence, format_indices, format_number
from .ir import Add, Div, Expr, Mul, Neg, Program, Statement, Tensor, precedence, write, write_lhs

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
    return {"det": f"det({matrix})", "logabsdet": f"log|det({matrix})|"}.get(func, f"logdet({matrix})")


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
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "pi",
        "rho",
        "sigma",
        "tau",
        "upsilon",
        "phi",
        "chi",
        "psi",
        "omega",
        "Gamma",
        "Delta",
        "Theta",
        "Lambda",
        "Xi",
        "Pi",
        "Sigma",
        "Upsilon",
        "Phi",
        "Psi",
        "Omega",
    }
)


def _latex_name(name: str) -> str:
    """``\\lambda`` for a Greek letter's name, ``\\mathrm{W1}`` for a longer name."""
    if name in _GREEK:
        return "\\" + name
    if len(name) > 1:
        return r"\mathrm{" + name + "}"
    return name


_LETTER_AND_DIGITS = re.compile(r"([A-Za-z])([0-9]+)\Z")


def _latex_index(index: str) -> str:
    """One index: ``i``; ``\\nu`` for a Greek letter's name, ``i_{1}`` for a letter and its digits,
    ``\\mathrm{out}`` for a longer name (one index, not o, u and t)."""
    if len(index) == 1:
        return index
    if index in _GREEK:
        return "\\" + index
    numbered = _LETTER_AND_DIGITS.match(index)
    if numbered:
        return numbered.group(1) + "_{" + numbered.group(2) + "}"
    return r"\mathrm{" + index.replace("_", r"\_") + "}"


def _latex_indices(indices: tuple[str, ...]) -> str:
    """``_{pq}``, ``_{i,\\mathrm{out}}``, ``_{\\nu}``: one letter each side by side, else separated by
    commas (``x_{nu}`` would read as x with indices n and u)."""
    if not indices:
        return ""
    if all(len(i) == 1 for i in indices):
        return "_{" + "".join(indices) + "}"
    return "_{" + ",".join(_latex_index(i) for i in indices) + "}"


_SCIENTIFIC = re.compile(r"\(?(?:([0-9.]+) \* )?10\^(-?[0-9]+)\)?\Z|([0-9.]+)e(-?[0-9]+)\Z")


def _latex_number(value) -> str:
    r"""``2``, ``\frac{1}{3}``, ``2 \times 10^{400}`` (the text's ``2e400`` or ``(2 * 10^400)``,
    where TeX would raise only the first digit and read e as Euler's number)."""
    text = format_number(value)
    if "/" in text:
        p, q = text.split("/")
        return r"\frac{" + p + "}{" + q + "}"
    scientific = _SCIENTIFIC.match(text)
    if scientific:
        mantissa = scientific.group(1) or scientific.group(3)
        power = "10^{" + (scientific.group(2) or scientific.group(4)) + "}"
        return power if mantissa in (None, "1") else mantissa + r" \times " + power
    return text


#: a printed factor that is a bare name (no subscript): before a parenthesised group it would
#: read as a function applied to it (``\sigma \left(u\right)`` is the sigmoid's look)
_BARE_NAME = re.compile(r"-?(?:\\[A-Za-z]+|[A-Za-z]|\\mathrm\{[^{}]*\})\Z")


def _latex_between(left: str, right: str) -> str:
    r"""``\cdot`` between a bare name and a parenthesised group (a scalar sigma times a sum is not
    the sigmoid of it), else a space."""
    return r" \cdot " if right.startswith(r"\left(") and _BARE_NAME.fullmatch(left) else " "


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
    if func == "logabsdet":
        return rf"\log\left|\det\left({matrix}\right)\right|"
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
    between=_latex_between,
    loose_calls=frozenset({"sum"}),
)


class Scoping(NamedTuple):
    """The index rules, as the caller has them (printing knows nothing of lowering): rule 4's
    split of a sum standing alone (``lower.standing_terms``), the letters one term leaves free
    (``lower.term_letters``), a statement's axes (``semantics.output_indices``), and the letters
    a term's product contracts from three or more places (``lower.crowded_letters``)."""

    standing_terms: Callable
    term_letters: Callable
    output_indices: Callable
    crowded_letters: Callable


def _latex_statement(statement: Statement, rules: Scoping) -> str:
    r"""A statement in LaTeX, each index that rule 5 sums at the top written as a sum: index text
    sums a letter left free on the right and not on the left (``df/dx_j = 2 x_i - 2`` is
    2 Σᵢ xᵢ - 2), where a reader of Einstein notation sums only a repeated one; so the term
    prints as ``\sum_{i} 2 x_{i}``."""
    if statement.target is None:
        return write(statement, LATEX)
    return (
        write_lhs(statement, LATEX)
        + " = "
        + _latex_terms(statement.rhs, frozenset(rules.output_indices(statement)), rules)
    )


def _latex_terms(expr: Expr, bound: frozenset[str], rules: Scoping) -> str:
    """``expr`` standing alone: its terms (rule 4's), each with the letters rule 5 sums in it; as
    written where rule 5 sums none."""
    parts = rules.standing_terms(expr, bound)
    if parts is None:  # one term
        summed = [i for i in rules.term_letters(expr, bound) if i not in bound]
        summed += [i for i in rules.crowded_letters(expr, bound) if i not in summed]
        text = write(expr, LATEX)
        return r"\sum_{" + ",".join(_latex_index(i) for i in summed) + "} " + text if summed else text
    if not any(set(letters) - bound for letters in _top_letters(expr, bound, rules)):
        return write(expr, LATEX)  # (no letter summed at the top of a term, nor by three factors)
    if isinstance(expr, Add):
        return _signed_terms(expr.terms, bound, rules)
    if isinstance(expr, Neg):
        return "-" + _latex_operand(expr.operand, bound, rules)
    if isinstance(expr, Mul) and len(expr.factors) == 1:
        return r"\left(" + _latex_terms(expr.factors[0], bound, rules) + r"\right)"
    scaled = _latex_scaled(expr, bound, rules)
    if scaled is not None:
        return scaled
    # a scaled sum in another shape: its terms one by one, as rule 4 reads them
    return r"\left(" + _signed_terms(parts, bound, rules) + r"\right)"


def _signed_terms(terms, bound: frozenset[str], rules: Scoping) -> str:
    """Terms joined by their signs, ``a - b + c``, each an operand (:func:`_latex_operand`)."""
    out = []
    for k, term in enumerate(terms):
        negative = isinstance(term, Neg)
        text = _latex_operand(term.operand if negative else term, bound, rules)
        out.append(("-" if negative else "") + text if k == 0 else ("- " if negative else "+ ") + text)
    return " ".join(out)


def _latex_operand(expr: Expr, bound: frozenset[str], rules: Scoping) -> str:
    """``expr`` after a sign: a sum of terms in parentheses (``3 - (a + b)``), a term as it is."""
    text = _latex_terms(expr, bound, rules)
    one_term = rules.standing_terms(expr, bound) is None
    if (isinstance(expr, (Add, Neg)) and not one_term) or (one_term and precedence(expr) < Precedence.PRODUCT):
        return r"\left(" + text + r"\right)"
    return text


def _latex_scaled(expr: Expr, bound: frozenset[str], rules: Scoping) -> str | None:
    r"""A product that scales one sum (rule 4: ``2 (x_i + 1)`` is 2 Σᵢ xᵢ + 2) as written, with the
    sum's terms summed inside its parentheses: ``2 \left(\sum_{i} x_{i} + 1\right)``; None for
    another shape (a quotient: ``\frac{\sum_{i} x_{i} + 1}{2}``)."""
    if isinstance(expr, Div) and rules.standing_terms(expr.numerator, bound, True) is not None:
        return (
            r"\frac{"
            + _latex_terms(_ungrouped(expr.numerator), bound, rules)
            + "}{"
            + write(expr.denominator, LATEX)
            + "}"
        )
    if not isinstance(expr, Mul):
        return None
    groups = [k for k, f in enumerate(expr.factors) if rules.standing_terms(f, bound, True) is not None]
    if len(groups) != 1:
        return None
    pieces = []
    for k, factor in enumerate(expr.factors):
        if k == groups[0]:
            pieces.append(r"\left(" + _latex_terms(_ungrouped(factor), bound, rules) + r"\right)")
        else:
            text = write(factor, LATEX)
            needed = Precedence.PRODUCT if k == 0 else Precedence.POWER
            pieces.append(r"\left(" + text + r"\right)" if precedence(factor) < needed else text)
    text = pieces[0]
    for left, right in zip(pieces, pieces[1:]):
        text += _latex_between(left, right) + right
    return text


def _ungrouped(expr: Expr) -> Expr:
    """``expr`` without the one-factor product that written parentheses make of it."""
    return expr.factors[0] if isinstance(expr, Mul) and len(expr.factors) == 1 else expr


def _top_letters(expr: Expr, bound: frozenset[str], rules: Scoping) -> list[tuple[str, ...]]:
    """The letters each of ``expr``'s terms (rule 4's, split all the way) leaves free, and those
    its product contracts from three or more places."""
    parts = rules.standing_terms(expr, bound)
    if parts is None:
        return [(*rules.term_letters(expr, bound), *rules.crowded_letters(expr, bound))]
    return [letters for part in parts for letters in _top_letters(part, bound, rules)]


def latex(node, rules: Scoping) -> str:
    """LaTeX for an IR node, a statement or a program (an ``aligned`` block for several); with the
    index ``rules``, each letter that rule 5 sums is written as a sum (:func:`_latex_statement`)."""
    if isinstance(node, Program):
        lines = [_latex_statement(s, rules).replace(" = ", " &= ", 1) for s in node.statements]
        if len(lines) == 1:
            return lines[0].replace(" &= ", " = ", 1)
        return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"
    if isinstance(node, Statement):
        return _latex_statement(node, rules)
    return write(node, LATEX)


def pretty(node) -> str:
    """Unicode for the terminal: ``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``."""
    return write(node, UNICODE)
