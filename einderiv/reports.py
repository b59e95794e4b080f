"""Results as data: the JSON of ``einderiv diff --format json`` and of a check, and the ``NAME=3x4``
shapes of the options, and the checks of the options both read (wrt or each, one tensor each,
shapes of inputs only); shared by the command line and ``einderiv serve``."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence

from .emit import emit
from .errors import EinderivError
from .glyphs import format_number
from .matrix.form import NoMatrixForm
from .normal import RECIPROCAL
from .parser import DELTA_NAME


def derivative_json(derivative) -> dict:
    """The machine-readable form printed by ``--format json`` (keys documented in the README)."""
    index_dims, input_dims = derivative.dimension_names()
    return {
        "derivative": str(derivative.statement),
        "expression": str(derivative.expr),
        "output": derivative.root.name if derivative.root.name != "_" else None,
        "program": [str(s) for s in derivative.displayed().statements],
        "indices": list(derivative.indices),
        "wrt": [{"name": ref.name, "indices": list(ref.indices)} for ref in derivative.wrt],
        "layout": derivative.layout,
        "shape": [index_dims.get(i, "?") for i in derivative.indices],
        "inputs": {name: list(dims) for name, dims in input_dims.items()},
        "einsum": _terms_json(derivative.einsum, derivative.program.out.hints),
        # each statement evaluation computes before the derivative, as the text's einsum[name] lines
        "steps": [
            {"name": d.name, "indices": list(d.indices), "einsum": _terms_json(emit(d.poly), d.hints)}
            for d in derivative.program.evaluated()[:-1]
        ],
        "matrix": matrix_json(derivative),
        # how the input was read: the index-notation program a matrix-notation input became
        "notation": derivative.reading.notation if derivative.reading is not None else "index",
        "read_as": derivative.read_as,
    }


def _terms_json(terms, hints) -> list[dict]:
    """One ``{"coefficient", "subscripts", "operands", "sizes"}`` object per einsum term; ``sizes``
    names, for each letter only deltas (or a mean's ``1/n``) carry (a count: ``',aa,->' (mu,
    delta, s^-2)``), the array axis whose length it is, ``{"a": ["x", 0]}`` (an input's, or a
    statement's of ``steps``): nothing else in the output sized it."""
    named = {entry[0]: [entry[1], entry[2]] for hint in hints if hint[0] == "names" for entry in hint[1]}
    out = []
    for term in terms:
        letters = term.subscripts.split("->")[0].split(",") if term.operands else []
        sized_by = {DELTA_NAME, RECIPROCAL}  # arrays the reader makes from a letter's length
        carried = {c for operand, written in zip(term.operands, letters) if operand not in sized_by for c in written}
        sizes = {
            c: named[i]
            for operand, inner, written in zip(term.operands, term.inputs, letters)
            if operand in sized_by
            for i, c in zip(inner, written)
            if c not in carried and i in named
        }
        out.append(
            {
                "coefficient": format_number(term.coefficient),
                "subscripts": term.subscripts,
                "operands": list(term.operands),
                "sizes": sizes,
            }
        )
    return out


def matrix_json(derivative) -> dict:
    """``{"forms": [{"lhs", "form"}, ...], "none": null}``, or no forms and the reason."""
    try:
        forms = [{"lhs": lhs, "form": form} for _, lhs, form in derivative.matrix_lines()]
    except NoMatrixForm as err:
        return {"forms": [], "none": err.reason}
    return {"forms": forms, "none": None}


def check_json(result) -> dict:
    """A :class:`einderiv.CheckResult` as JSON; ``report`` is what ``einderiv check`` prints.
    ``error`` is null where it is not a finite number (NaN at a singular point: see ``report``)."""
    return {
        "derivative": str(result.derivative.statement),
        "inputs": {name: list(value.shape) for name, value in result.inputs.items()},
        # Python's own types: NumPy's float64 and bool_ (an inf error, a zero-size input) are no JSON
        "error": float(result.error) if math.isfinite(result.error) else None,
        "tol": float(result.tol) if math.isfinite(result.tol) else None,
        "fd_ok": bool(result.fd_ok),
        "ok": bool(result.ok),
        "claim": result.claim,
        "message": result.message,
        "notes": list(result.notes),
        "read_as": result.read_as,
        "report": result.report(),
    }


def parse_shape(text: str, option: str) -> tuple[str, tuple[int, ...]]:
    """``"A=3x4"`` as ``("A", (3, 4))`` (nothing after ``=``: a scalar); ``option`` names the
    option in the error."""
    name, _, dims = text.partition("=")
    if not name or not _:
        raise EinderivError(f"{option} takes NAME=SHAPE, such as A=3x4 (got {text!r})")
    parts = [d.strip() for d in dims.lower().split("x")] if dims.strip() else []
    if any(d.startswith("-") and d[1:].isdigit() for d in parts):
        raise EinderivError(f"{option} {text!r}: sizes must not be negative")
    if not all(d.isascii() and d.isdigit() for d in parts):
        raise EinderivError(
            f"{option} {text!r}: the shape must be sizes joined by 'x', such as 3x4 (nothing after '=': a scalar)"
        )
    return name.strip(), tuple(int(d) for d in parts)


def tensor_names(text: str) -> list[str]:
    """The tensor names in ``text``, split at spaces, commas and semicolons (``W_{in,out}`` is one)."""
    return re.findall(r"(?:[^\s,;{}]|\{[^}]*\})+", text)


def wrt_or_each(wrt: Sequence[str], each: Sequence[str], wrt_option: str, each_option: str) -> None:
    """Raise unless exactly one of ``wrt`` and ``each`` is given (options named as the caller
    names them: ``--wrt`` on the command line, ``wrt`` in the API)."""
    if bool(wrt) == bool(each):
        raise EinderivError(
            f"give {wrt_option} (a derivative; repeated: a higher or mixed one) or {each_option} (the gradient by "
            "each name), not " + ("both" if wrt else "neither")
        )


def one_tensor_each(values: Sequence[str], option: str, repeated: str = "{option} {name}", joined: str = " "):
    """``values``, each one tensor name (``'x,A'`` names two: raise, saying how to repeat the
    option, each repetition ``repeated`` joined by ``joined``)."""
    for value in values:
        names = tensor_names(value)
        if len(names) > 1:
            spelled = joined.join(repeated.format(option=option, name=name) for name in names)
            raise EinderivError(f"{option} {value!r} names {len(names)} tensors: repeat {option} instead ({spelled})")
    return values


def inputs_only(shapes: Collection[str], inputs: Sequence[str], option: str) -> None:
    """Raise where a shape is given for a name that is not an input of the expression."""
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise EinderivError(f"{option} {unknown[0]}: not an input (inputs: {', '.join(inputs)})")
