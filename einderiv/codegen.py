"""Standalone code for a compiled expression or derivative: ``--format python|jax|torch``.

The module depends only on its array library (NumPy with opt_einsum, jax.numpy, or torch), not
on einderiv.  It runs the same straight-line program einderiv evaluates, one statement per
step.  Nothing from the user's text reaches it except validated identifiers (letters and
digits; keywords and builtins get a trailing underscore) and numbers.
"""

from __future__ import annotations

import builtins
import keyword
from fractions import Fraction

from .emit import DELTA_OPERAND, emit, symbol_table
from .errors import EinderivError
from .functions import FLAVOURS, FUNCTIONS, Helper
from .ir import Tensor, format_number
from .normal import RECIPROCAL
from .program import Definition

_HEADER = {
    "python": "import numpy as np\nimport opt_einsum as oe\n",
    "jax": "import jax.numpy as np\n",
    "torch": "import torch\n",
}

_HELPERS = {
    "python": """

def _contract(subscripts, *operands):
    return oe.contract(subscripts, *operands)


def _eye(n, like):
    return np.eye(n, dtype=like.dtype)


def _ones(n, like):
    return np.ones(n, dtype=like.dtype)


def _logsumexp(v, axes, order):
    peak = np.max(v, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)
    out = np.squeeze(np.log(np.sum(np.exp(v - peak), axis=axes, keepdims=True)) + peak, axis=axes)
    kept = [k for k in range(v.ndim) if k not in axes]
    return np.transpose(out, [kept.index(k) for k in order])


def _softmax(v, axes):
    e = np.exp(v - np.max(v, axis=axes, keepdims=True))
    return e / np.sum(e, axis=axes, keepdims=True)


def _logdet(m):
    return np.linalg.slogdet(m)[1]


def _solve(m, b, transposed):
    return np.linalg.solve(m.T if transposed else m, b)
""",
    "torch": """

def _contract(subscripts, *operands):
    return torch.einsum(subscripts, *operands)


def _eye(n, like):
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _ones(n, like):
    return torch.ones(n, dtype=like.dtype, device=like.device)


def _logsumexp(v, axes, order):
    out = torch.logsumexp(v, dim=axes) if axes else v
    kept = [k for k in range(v.ndim) if k not in axes]
    return out.permute([kept.index(k) for k in order])


def _softmax(v, axes):
    return torch.exp(v - torch.logsumexp(v, dim=axes, keepdim=True))


def _logdet(m):
    return torch.linalg.slogdet(m)[1]


def _solve(m, b, transposed):
    return torch.linalg.solve(m.T if transposed else m, b)
""",
}

# jax.numpy has NumPy's names: the same helpers, with its own einsum in place of opt_einsum
_HELPERS["jax"] = _HELPERS["python"].replace(
    "return oe.contract(subscripts, *operands)", "return np.einsum(subscripts, *operands)"
)


def function_code(name: str, flavour: str) -> str:
    """The generated module's name for an elementwise function, from its entry in
    ``einderiv.functions``: the library's own (``np.tanh``, ``torch.sigmoid``) or the module's
    helper ``_sigmoid`` (written by :func:`function_helpers`)."""
    row = FUNCTIONS.get(name)
    if row is None:
        raise EinderivError(f"cannot generate code for the function {name!r}: it is not in einderiv.functions")
    return f"_{name}" if isinstance(row.code[flavour], Helper) else row.code[flavour]


def function_helpers(flavour: str) -> str:
    """The definitions of the helpers the registry's entries call in a module of ``flavour``."""
    sources = []
    for row in FUNCTIONS.values():
        source = row.helper_source(flavour)
        if source is not None:
            if f"\ndef _{row.name}(" in _HELPERS[flavour]:
                raise EinderivError(f"cannot generate code for {row.name!r}: the module's own helper is _{row.name}")
            sources.append("\n\n" + source)
    return "".join(sources)


_MATRIX = {
    "python": {"inv": "np.linalg.inv", "det": "np.linalg.det", "logdet": "_logdet"},
    "jax": {"inv": "np.linalg.inv", "det": "np.linalg.det", "logdet": "_logdet"},
    "torch": {"inv": "torch.linalg.inv", "det": "torch.linalg.det", "logdet": "_logdet"},
}
_RESERVED = {"np", "oe", "torch", "jax", "_contract", "_eye", "_ones"}


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


def _number(value: Fraction) -> str:
    text = format_number(value)
    return f"({text})" if "/" in text or text.startswith("-") else text


class _Writer:
    def __init__(self, flavour: str, like: str):
        self.flavour = flavour
        self.like = like  # an input whose dtype (and device) identities and ones take
        self.lines: list[str] = []

    def size_of(self, index: str, sizes: dict[str, str]) -> str:
        if index not in sizes:
            raise EinderivError(f"cannot generate code: the size of index {index!r} is not known from an array")
        return sizes[index]

    def contraction(self, target: str, poly, sizes: dict[str, str]) -> None:
        parts = []
        for term in emit(poly):
            operands = []
            subscripts = term.subscripts
            for name, idx in zip(term.operands, term.inputs):
                if name == DELTA_OPERAND:
                    operands.append(f"_eye({self.size_of(idx[0], sizes)}, {self.like})")
                elif name == RECIPROCAL:  # 1/n of mean_r: a vector of 1/n along r
                    n = self.size_of(idx[0], sizes)
                    operands.append(f"_ones({n}, {self.like}) / {n}")
                else:
                    operands.append(identifier(name))
            missing = [i for i in poly.indices if i not in term.output]
            if missing:  # broadcast: a ones vector for every output index the term lacks
                table = symbol_table(poly)
                inputs = subscripts.split("->")[0].split(",") if term.operands else []
                for i in missing:
                    operands.append(f"_ones({self.size_of(i, sizes)}, {self.like})")
                    inputs.append(table[i])
                subscripts = ",".join(inputs) + "->" + "".join(table[i] for i in poly.indices)
            if not operands:
                parts.append(_number(term.coefficient))
                continue
            call = f'_contract("{subscripts}", {", ".join(operands)})'
            parts.append(call if term.coefficient == 1 else f"{_number(term.coefficient)} * {call}")
        self.lines.append(f"    {identifier(target)} = {' + '.join(parts) if parts else '0.0'}")


def _sizes_for(definition, shapes_of: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """index -> an expression for its size (``A.shape[1]``), from the statement's own tensors and
    its size hints."""
    sizes: dict[str, str] = {}

    def visit(poly):
        for term in poly.terms:
            for factor in term.factors:
                if isinstance(factor, Tensor) and factor.name in shapes_of:
                    for axis, index in enumerate(factor.indices):
                        sizes.setdefault(index, f"{identifier(factor.name)}.shape[{axis}]")
                elif hasattr(factor, "arg"):
                    visit(factor.arg)

    visit(definition.poly)
    for hint in definition.hints:
        if hint[0] == "poly":
            visit(hint[1])
        elif hint[0] == "axis":
            _, index, name, axis = hint
            if name in shapes_of:
                sizes.setdefault(index, f"{identifier(name)}.shape[{axis}]")
        elif hint[0] == "names":
            for index, name, axis in hint[1]:
                if name in shapes_of:
                    sizes.setdefault(index, f"{identifier(name)}.shape[{axis}]")
    return sizes


def generate(items, flavour: str = "python") -> str:
    """A standalone module with one function per compiled value or derivative in ``items``."""
    if flavour not in FLAVOURS:
        raise EinderivError(f"unknown code flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    names = [identifier(_function_name(item)) for item in items]
    module_doc = f'"""Generated by einderiv ({flavour}): {", ".join(names)}.  Standalone; do not edit."""\n\n'
    functions = "".join(_function(item, flavour, name) for item, name in zip(items, names))
    return module_doc + _HEADER[flavour] + _HELPERS[flavour] + function_helpers(flavour) + functions


def _function(compiled, flavour: str, name: str) -> str:
    from .runtime import StraightLine

    if not compiled.ranks:
        raise EinderivError("there is nothing to generate code for: the expression has no inputs")
    writer = _Writer(flavour, identifier(sorted(compiled.ranks)[0]))
    line = StraightLine()
    for definition in compiled.program.computed():
        line.add(definition.name, definition.poly, definition.hints)
    by_target = {d.name: d for d in compiled.program.definitions}
    known: dict[str, tuple[str, ...]] = {name: () for name in compiled.ranks}
    for step in line.steps:
        definition = by_target.get(step.target)
        if step.contraction is not None:
            poly = step.contraction.poly
            sizes = _sizes_for(definition or Definition(step.target, poly.indices, poly), known)
            writer.contraction(step.target, step.contraction.poly, sizes)
        elif step.operand is not None:
            transposed = step.func == "solve_transposed"
            writer.lines.append(
                f"    {identifier(step.target)} = _solve({identifier(step.source)}, {identifier(step.operand)}, "
                f"{transposed})"
            )
        elif step.matrix:
            writer.lines.append(
                f"    {identifier(step.target)} = {_MATRIX[flavour][step.func]}({identifier(step.source)})"
            )
        elif step.func == "softmax":
            writer.lines.append(f"    {identifier(step.target)} = _softmax({identifier(step.source)}, {step.axes[0]})")
        elif step.axes is not None:
            axes, order = step.axes
            writer.lines.append(
                f"    {identifier(step.target)} = _logsumexp({identifier(step.source)}, {axes}, {order})"
            )
        elif step.func == "pow":
            writer.lines.append(f"    {identifier(step.target)} = {identifier(step.source)}**{_number(step.param)}")
        else:
            function = function_code(step.func, flavour)
            writer.lines.append(f"    {identifier(step.target)} = {function}({identifier(step.source)})")
        known[step.target] = ()
    arguments = ", ".join(identifier(n) for n in sorted(compiled.ranks))
    shapes = ", ".join(f"{n} ({compiled.ranks[n]} axes)" for n in sorted(compiled.ranks))
    statement_lines = "\n".join("    " + str(d.display()) for d in compiled.program.definitions)
    axes = "".join(compiled.indices) or "(a scalar)"
    doc = (
        f'    """Generated by einderiv: do not edit.\n\n{statement_lines}\n\n'
        f'    Inputs: {shapes}.\n    Result axes: {axes}.\n    """'
    )
    body = "\n".join(writer.lines)
    result = identifier(compiled.program.output)
    return f"\n\ndef {name}({arguments}):\n{doc}\n{body}\n    return {result}\n"


def _function_name(compiled) -> str:
    statement = compiled.statement
    if statement.target is None:
        return "value"
    if statement.wrt:
        base = statement.target.name.lstrip("d").lstrip("0123456789") or "f"
        return f"d{len(statement.wrt) if len(statement.wrt) > 1 else ''}{base}_d" + "_d".join(
            w.name[1:] for w in statement.wrt
        )
    return statement.target.name


__all__ = ["FLAVOURS", "generate", "identifier"]
