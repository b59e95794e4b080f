"""Rendering IR as LaTeX (``\\frac{\\partial K_{pq}}{\\partial R_{ij}} = ...``) and as Unicode for
the terminal (``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``).  Both walk the same IR as ``str()``."""

from __future__ import annotations

from .elementwise import FUNCTIONS, Enclosing
from .ir import (
    Add,
    Call,
    Delta,
    Div,
    MatrixCall,
    Mul,
    Neg,
    Number,
    Pow,
    Program,
    Statement,
    Tensor,
    format_indices,
    format_number,
)

# precedence, as in ir: sum < product < signed < factor < atom
_SUM, _PRODUCT, _SIGNED, _FACTOR, _ATOM = range(5)


def _level(node) -> int:
    if isinstance(node, Add):
        return _SUM
    if isinstance(node, Mul) and len(node.factors) == 1:
        return _ATOM  # a parenthesised product: it prints its own parentheses
    if isinstance(node, (Mul, Div)):
        return _PRODUCT
    if isinstance(node, Neg):
        return _SIGNED
    if isinstance(node, Number) and node.value.denominator != 1 and "/" in format_number(node.value):
        return _PRODUCT  # printed as "1/3", as in ir: "x / (1/3)" reads back as x times 3
    if isinstance(node, Pow):
        return _FACTOR
    return _ATOM


def _indices(indices, latex: bool) -> str:
    """LaTeX ``_{pq}``/``_{in,out}``; Unicode as ``str()`` writes them, so that it reads back."""
    if not latex:
        return format_indices(tuple(indices))
    if not indices:
        return ""
    body = "".join(indices) if all(len(i) == 1 for i in indices) else ",".join(indices)
    return "_{" + body.replace("_", r"\_") + "}"


def _name(name: str, latex: bool) -> str:
    if not latex:
        return name
    greek = {
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
    if name in greek:
        return "\\" + name
    if len(name) > 1:
        return r"\mathrm{" + name + "}"
    return name


class _Renderer:
    def __init__(self, latex: bool):
        self.latex = latex

    def wrap(self, node, needed: int) -> str:
        text = self(node)
        if _level(node) < needed:
            return r"\left(" + text + r"\right)" if self.latex else "(" + text + ")"
        return text

    def __call__(self, node) -> str:  # noqa: C901 - one case per node type
        latex = self.latex
        if isinstance(node, Tensor):
            return _name(node.name, latex) + _indices(node.indices, latex)
        if isinstance(node, Delta):
            return (r"\delta" if latex else "δ") + _indices(node.indices, latex)
        if isinstance(node, Number):
            text = format_number(node.value)
            if latex and "/" in text:
                p, q = text.split("/")
                return r"\frac{" + p + "}{" + q + "}"
            return text
        if isinstance(node, Neg):
            return "-" + self.wrap(node.operand, _SIGNED)
        if isinstance(node, Add):
            parts = [self.wrap(node.terms[0], _SUM)]
            for term in node.terms[1:]:
                if isinstance(term, Neg):
                    parts.append("- " + self.wrap(term.operand, _PRODUCT))
                else:
                    parts.append("+ " + self.wrap(term, _PRODUCT))
            return " ".join(parts)
        if isinstance(node, Mul):
            if len(node.factors) == 1:  # parentheses make a group (index scoping): keep them
                inner = self(node.factors[0])
                return r"\left(" + inner + r"\right)" if latex else "(" + inner + ")"
            head = node.factors[0]
            first = self.wrap(head, _FACTOR if isinstance(head, Mul) else _PRODUCT)
            rest = [self.wrap(f, _FACTOR) for f in node.factors[1:]]
            return " ".join([first, *rest])
        if isinstance(node, Div):
            if latex:
                return r"\frac{" + self(node.numerator) + "}{" + self(node.denominator) + "}"
            return f"{self.wrap(node.numerator, _PRODUCT)} / {self.wrap(node.denominator, _SIGNED)}"
        if isinstance(node, Pow):
            exponent = format_number(node.exponent)
            if latex:
                return self.wrap(node.base, _ATOM) + "^{" + exponent + "}"
            return self.wrap(node.base, _ATOM) + "^" + exponent
        if isinstance(node, MatrixCall):
            matrix = _name(node.matrix, latex)
            if node.func == "inv":
                if latex:
                    return r"\left(" + matrix + r"^{-1}\right)" + _indices(node.indices, latex)
                return f"({matrix}⁻¹)" + _indices(node.indices, latex)
            if node.func == "det":
                return rf"\det\left({matrix}\right)" if latex else f"det({matrix})"
            return rf"\log\det\left({matrix}\right)" if latex else f"logdet({matrix})"
        if isinstance(node, Call):
            arg = self(node.arg)
            if node.func == "sum":
                if latex:
                    return r"\sum_{" + ",".join(node.over) + r"} \left(" + arg + r"\right)"
                return "Σ" + _indices(node.over, False) + "(" + arg + ")"
            row = FUNCTIONS.get(node.func)  # an elementwise function's notation is in its registry entry
            if latex:
                if row is not None and isinstance(row.latex, Enclosing):
                    return row.latex.before + arg + row.latex.after
                command = row.latex if row is not None else r"\operatorname{" + node.func + "}"
                return command + _indices(node.over, True) + r"\left(" + arg + r"\right)"
            name = row.pretty if row is not None else node.func
            return name + _indices(node.over, False) + "(" + arg + ")"
        raise TypeError(f"cannot render {type(node).__name__}")

    def statement(self, statement: Statement) -> str:
        rhs = self(statement.rhs)
        if statement.target is None:
            return rhs
        if not statement.wrt:
            return f"{self(statement.target)} = {rhs}"
        base = statement.differentiated
        order = len(statement.wrt)
        numerator = Tensor(base, statement.target.indices) if base else None
        denominators = statement.denominators
        if self.latex:
            power = "" if order == 1 else f"^{{{order}}}"
            top = r"\partial" + power + (" " + self(numerator) if numerator else "")
            bottom = " ".join(r"\partial " + self(w) for w in denominators)
            return r"\frac{" + top + "}{" + bottom + "} = " + rhs
        power = "" if order == 1 else {2: "²", 3: "³"}.get(order, f"^{order}")
        top = "∂" + power + (self(numerator) if numerator else "")
        bottom = " ".join("∂" + self(w) for w in denominators)
        return f"{top}/{bottom} = {rhs}"


def latex(node) -> str:
    """LaTeX for an IR node, a statement or a program (an ``aligned`` block for several)."""
    renderer = _Renderer(latex=True)
    if isinstance(node, Program):
        lines = [renderer.statement(s).replace(" = ", " &= ", 1) for s in node.statements]
        if len(lines) == 1:
            return lines[0].replace(" &= ", " = ", 1)
        return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"
    if isinstance(node, Statement):
        return renderer.statement(node)
    return renderer(node)


def pretty(node) -> str:
    """Unicode for the terminal: ``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``."""
    renderer = _Renderer(latex=False)
    if isinstance(node, Program):
        return "\n".join(renderer.statement(s) for s in node.statements)
    if isinstance(node, Statement):
        return renderer.statement(node)
    return renderer(node)
