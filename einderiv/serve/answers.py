"""What the API answers: a :class:`Query` read from a request's parameters, and the JSON of its
derivative or check (computed in a worker process, see :mod:`einderiv.serve.workers`).

The JSON of a derivative is :func:`einderiv.reports.derivative_json`, what ``einderiv diff
--format json`` prints, with ``latex`` and the generated ``code`` added; a check is
:func:`einderiv.check`, what ``einderiv check --expect`` runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from ..api import LAYOUTS, diff
from ..api import compile as compile_
from ..checking import DEFAULT_SIZE, check
from ..codegen import FLAVOURS, generate
from ..errors import EinderivError, EinderivWarning, ParseError
from ..gradients import grad
from ..matrix.reading import check_known, read
from ..reports import check_json, derivative_json, inputs_only, one_tensor_each, parse_shape, wrt_or_each
from ..runtime import explain

MAX_EXPR = 4000  # characters of an expression or a claim
MAX_FIELD = 200  # characters of any other parameter
MAX_NAMES = 8  # wrt or each names
MAX_ORDER = 8
MAX_ENTRIES = 10_000  # entries of an input given a shape for a check
#: entries of a derivative a check evaluates (its finite differences evaluate the function, or
#: the derivative one order lower, twice per entry of the last wrt: twice as many entries in
#: all), and of any array evaluating the expression makes
MAX_CHECKED = 1_000_000
NOTATIONS = ("auto", "index", "matrix")
PARAMETERS = {
    "diff": ("expr", "wrt", "order", "each", "layout", "notation", "rank"),
    "check": ("expr", "wrt", "order", "each", "notation", "rank", "claim", "tol", "seed", "shape"),
}


class QueryError(EinderivError):
    """A request the API refuses before any work: 400, or 413 for text over a size limit."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Query:
    """One API request, checked: ``kind`` is ``"diff"`` or ``"check"``."""

    kind: str
    expr: str
    wrt: tuple[str, ...] = ()
    order: int = 1
    each: tuple[str, ...] = ()
    layout: str = "numerator"
    notation: str = "auto"
    ranks: tuple[tuple[str, int], ...] = ()
    claim: str = ""
    tol: float = 1e-6
    seed: int = 0
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def from_json(cls, data: dict) -> Query:
        """A query from ``dataclasses.asdict``'s JSON (lists back to tuples)."""
        lists = {"wrt": tuple, "each": tuple, "ranks": lambda v: tuple((n, int(r)) for n, r in v)}
        lists["shapes"] = lambda v: tuple((n, tuple(s)) for n, s in v)
        return cls(**{name: lists[name](value) if name in lists else value for name, value in data.items()})

    @property
    def specs(self) -> list[str]:
        """The wrt names in turn: one name ``order`` times (``x``, order 2: the Hessian)."""
        return list(self.wrt) * self.order


def read_query(kind: str, fields: Mapping[str, list[str]]) -> Query:
    """The :class:`Query` of an API request's parameters (``wrt`` and the like repeated)."""
    allowed = PARAMETERS[kind]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0]!r} (/api/{kind} takes {', '.join(allowed)})")
    for name, values in fields.items():
        cap = MAX_EXPR if name in ("expr", "claim") else MAX_FIELD
        for value in values:
            if len(value) > cap:
                raise QueryError(f"{name} is {len(value)} characters long, over the limit of {cap}", 413)
    single = {name: _single(fields, name) for name in allowed if name not in ("wrt", "each", "rank", "shape")}
    expr = single["expr"] or ""
    if not expr.strip():
        raise QueryError("give an expression: expr=f = x_i A_ij x_j")
    wrt, each = _names(fields, "wrt"), _names(fields, "each")
    order = _integer(single["order"], "order", 1, 1, MAX_ORDER)
    wrt_or_each(wrt, each, "wrt", "each")
    if order > 1 and len(wrt) != 1:
        raise QueryError("order repeats one wrt name (wrt=x&order=2: the Hessian); list the names for a mixed one")
    claim = single.get("claim") or ""
    if each and claim.strip():
        raise QueryError("a claim is checked against one derivative: give wrt, not each")
    return Query(
        kind,
        expr,
        wrt,
        order,
        each,
        _choice(single.get("layout"), "layout", LAYOUTS),
        _choice(single["notation"], "notation", NOTATIONS),
        _ranks(fields.get("rank", [])),
        claim,
        _number(single.get("tol"), "tol", 1e-6),
        _integer(single.get("seed"), "seed", 0, 0, 2**32 - 1),
        _shapes(fields.get("shape", [])),
    )


def _single(fields: Mapping[str, list[str]], name: str) -> str | None:
    values = fields.get(name, [])
    if len(values) > 1:
        raise QueryError(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def _names(fields: Mapping[str, list[str]], name: str) -> tuple[str, ...]:
    values = [v.strip() for v in fields.get(name, []) if v.strip()]
    if len(values) > MAX_NAMES:
        raise QueryError(f"{len(values)} {name} names, over the limit of {MAX_NAMES}")
    return tuple(one_tensor_each(values, name, "{option}={name}", "&"))


def _integer(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise QueryError(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def _number(text: str | None, name: str, default: float) -> float:
    if text is None or not text.strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"{name} must be a number, got {text!r}") from None


def _choice(text: str | None, name: str, choices: tuple[str, ...]) -> str:
    if text is None or not text.strip():
        return choices[0]
    if text not in choices:
        raise QueryError(f"{name} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _ranks(values: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for text in values:
        name, _, rank = text.partition("=")
        if not name.strip() or rank.strip() not in ("0", "1", "2"):
            raise QueryError(f"rank takes NAME=N with N 0, 1 or 2, such as x=1 (got {text!r})")
        out.append((name.strip(), int(rank)))
    return tuple(out)


def _shapes(values: list[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    out = []
    for text in values:
        name, shape = parse_shape(text, "shape")
        if math.prod(shape) > MAX_ENTRIES:
            raise QueryError(f"shape {text!r}: {math.prod(shape)} entries, over the server's limit of {MAX_ENTRIES}")
        out.append((name, shape))
    return tuple(out)


def answer(query: Query) -> tuple[int, dict]:
    """The HTTP status and the JSON of ``query``'s derivative or check, or of its error
    (``error``, with ``line``, ``column`` and ``source_line`` for text that cannot be read)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EinderivWarning)
        try:
            status, payload = 200, (_derivative(query) if query.kind == "diff" else _check(query))
        except (EinderivError, MemoryError) as err:
            if out_of_memory(err):  # past the worker's memory limit (see worker.limit_memory)
                status = 503
                payload = {**error_json(EinderivError(MEMORY_MESSAGE)), "limit": "memory"}
            else:
                status, payload = 400, error_json(err)
        except RecursionError:
            status, payload = 400, error_json(EinderivError("the expression is nested too deeply"))
        except Exception as err:  # noqa: BLE001 - a bug: reported, and the worker serves on
            status = 500
            payload = error_json(EinderivError(f"internal error ({type(err).__name__}: {err}); please report this"))
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, EinderivWarning)))
    return status, {**payload, "warnings": notes}


MEMORY_MESSAGE = (
    "the work ran out of the memory a worker may use: smaller shapes or a lower order may help "
    "(the worker was replaced)"
)


def out_of_memory(err: BaseException) -> bool:
    """``err`` is a MemoryError, or an error raised in handling one (``guarded`` turns a
    MemoryError into an EvaluationError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MemoryError):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def error_json(err: EinderivError) -> dict:
    """``{"error", "line", "column", "source_line"}``: the message (its first line), and where a
    syntax error is (line and column from 1; null for other errors)."""
    if isinstance(err, ParseError) and err.line:
        return {"error": err.message, "line": err.line, "column": err.column, "source_line": err.source_line}
    message = err.message if isinstance(err, ParseError) else str(err)
    return {"error": message.splitlines()[0] if message else type(err).__name__, "line": None, "column": None}


def _reading(query: Query):
    """The expression read in its notation, as ``einderiv diff`` and ``check`` read it."""
    reading = read(query.expr, query.notation, dict(query.ranks), {name: len(shape) for name, shape in query.shapes})
    check_known(reading, dict(query.ranks))
    return reading


def _derivative(query: Query) -> dict:
    reading = _reading(query)
    if query.each:
        items = grad(reading, list(query.each))
        payload = {"gradients": [{**derivative_json(d), "latex": d.latex()} for d in items]}
    else:
        derivative = diff(reading, query.specs, layout=query.layout)
        items = [derivative]
        payload = {**derivative_json(derivative), "latex": derivative.latex()}
    try:
        value = compile_(reading)
        payload["code"] = {flavour: generate([value, *items], flavour) for flavour in FLAVOURS}
    except EinderivError as err:  # no inputs: nothing to generate; the derivative still shows
        payload["code"] = {"error": str(err).splitlines()[0]}
    return payload


def _check(query: Query) -> dict:
    reading = _reading(query)
    shapes = dict(query.shapes)
    function = compile_(reading)
    inputs = function.inputs
    inputs_only(shapes, inputs, "shape")
    _within_size(function, [[name] for name in query.each] or [query.specs], shapes)
    options = {"tol": query.tol, "shapes": shapes, "seed": query.seed}
    if query.each:
        return {"checks": [check_json(check(reading, [name], **options)) for name in query.each]}
    return check_json(check(reading, query.specs, expect=query.claim.strip() or None, **options))


def _within_size(function, derivatives: list[list[str]], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse, before any work, a check whose derivative (by the names of each of
    ``derivatives``), or an array evaluating the expression makes, has over MAX_CHECKED entries,
    at the inputs' shapes (``shapes``, else DEFAULT_SIZE per axis, as the check draws them)."""
    sizes = {name: shapes.get(name, (DEFAULT_SIZE,) * rank) for name, rank in function.ranks.items()}
    if any(len(sizes[name]) != rank for name, rank in function.ranks.items()):
        return  # the check says which shape has the wrong number of axes
    try:
        output = function.shape_for(sizes)
        steps = explain(function.line, sizes)
    except EinderivError:
        return  # sizes that disagree: the check says where
    for specs in derivatives:
        shape = (*output, *(n for spec in specs for n in sizes.get(spec.partition("_")[0].strip(), ())))
        if math.prod(shape) > MAX_CHECKED:
            raise QueryError(
                f"the derivative to check, of shape {shape}, has {math.prod(shape)} entries, over the server's "
                f"limit of {MAX_CHECKED}: give smaller shapes or a lower order"
            )
    for step in steps:
        if step.largest > MAX_CHECKED:
            raise QueryError(
                f"evaluating the expression makes an array of {step.largest} entries (for {step.target}, "
                f"shape {step.shape}), over the server's limit of {MAX_CHECKED}: give smaller shapes"
            )
