"""Results as data: the JSON of ``einderiv diff --format json`` and of a check, and the ``NAME=3x4``
shapes of the options; shared by the command line and ``einderiv serve``."""

from __future__ import annotations

import math
import re

from .errors import EinderivError
from .glyphs import format_number
from .matrix.form import NoMatrixForm


def derivative_json(derivative) -> dict:
    """The machine-readable form printed by ``--format json`` (keys documented in the README)."""
    index_dims, input_dims = derivative.dimension_names()
    return {
        "derivative": str(derivative.statement),
        "expression": str(derivative.expr),
        "output": derivative.root.name if derivative.root.name != "_" else None,
        "program": [str(d.display()) for d in derivative.definitions],
        "indices": list(derivative.indices),
        "wrt": [{"name": ref.name, "indices": list(ref.indices)} for ref in derivative.wrt],
        "layout": derivative.layout,
        "shape": [index_dims.get(i, "?") for i in derivative.indices],
        "inputs": {name: list(dims) for name, dims in input_dims.items()},
        "einsum": [
            {
                "coefficient": format_number(term.coefficient),
                "subscripts": term.subscripts,
                "operands": list(term.operands),
            }
            for term in derivative.einsum
        ],
        "matrix": matrix_json(derivative),
        # how the input was read: the index-notation program a matrix-notation input became
        "notation": derivative.reading.notation if derivative.reading is not None else "index",
        "read_as": derivative.read_as,
    }


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
        "error": result.error if math.isfinite(result.error) else None,
        "tol": result.tol if math.isfinite(result.tol) else None,
        "fd_ok": result.fd_ok,
        "ok": result.ok,
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
