"""The command line: ``einderiv diff EXPR --wrt NAME [--wrt NAME ...] [--format text|json]``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .api import diff
from .emit import emit
from .errors import EinderivError, EvaluationError, ParseError
from .ir import format_number
from .parser import parse

EXAMPLE = """example:
  $ einderiv diff "K_pq = R_mp R_mq" --wrt R
  dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq
    shape: K.shape + R.shape = (P, P, M, P) with R: (M, P)
    einsum: 'jp,iq->pqij' (delta, R) + 'ip,jq->pqij' (R, delta)
    matrix: none (dK_pq/dR_ij: rank 4 (indices p, q, i, j); matrix notation has at most two)
  $ einderiv diff "f = x_i A_ij x_j" --wrt x --format matrix
  df/dx = (A + A^T) x
"""


class _Parser(argparse.ArgumentParser):
    """argparse with einderiv's error format: one ``error:`` line, exit status 2."""

    def error(self, message: str):
        hint = " (an expression that starts with '-' can start with a space instead: \" -x_i x_i\")"
        print(f"error: {message}{hint if 'argument' in message or 'required' in message else ''}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="einderiv",
        description="Differentiate Einstein-notation tensor expressions and compile them to einsum.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"einderiv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    diff_cmd = commands.add_parser(
        "diff",
        help="print a derivative in index notation, its shape and its einsum terms",
        description="Differentiate EXPR with respect to each --wrt in turn (two --wrt x: the Hessian).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff_cmd.add_argument("expr", metavar="EXPR", help="a statement such as 'K_pq = R_mp R_mq'")
    diff_cmd.add_argument(
        "--wrt", action="append", required=True, metavar="NAME", help="tensor name (R) or name with indices (R_ij)"
    )
    diff_cmd.add_argument(
        "--layout",
        choices=("numerator", "denominator"),
        default="numerator",
        help="axes of the result: output's then wrt's (numerator, the default) or wrt's first",
    )
    diff_cmd.add_argument(
        "--format",
        choices=("text", "json", "latex", "pretty", "matrix", "python", "jax", "torch"),
        default="text",
        help="text (index notation, shape, einsum, matrix form; the default), json, latex, pretty (Unicode), "
        "matrix (matrix notation: A x + A^T x), or a standalone module computing the value and the "
        "derivative: python (NumPy), jax or torch",
    )
    eval_cmd = commands.add_parser(
        "eval",
        help="evaluate an expression (or a derivative) on arrays from .npy files or random ones",
        description="Evaluate EXPR (or its derivative with --wrt) and print or save the array.",
        epilog=EVAL_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_cmd.add_argument("expr", metavar="EXPR")
    eval_cmd.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array")
    eval_cmd.add_argument(
        "--random", action="append", default=[], metavar="NAME=3x4", help="a random normal input of this shape"
    )
    eval_cmd.add_argument("--wrt", action="append", default=[], metavar="NAME", help="evaluate a derivative")
    eval_cmd.add_argument("--of", metavar="NAME", help="the statement of a program to evaluate")
    eval_cmd.add_argument("--out", metavar="FILE.npy", help="save the result instead of printing it")
    eval_cmd.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    check_cmd = commands.add_parser(
        "check",
        help="compare a derivative with central finite differences (and with your own claim)",
        description=(
            "Evaluate the derivative of EXPR at random inputs, compare it with central finite differences "
            "in float64, and with --expect, compare it with your own derivation."
        ),
        epilog=CHECK_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check_cmd.add_argument("expr", metavar="EXPR")
    check_cmd.add_argument("--wrt", action="append", required=True, metavar="NAME")
    check_cmd.add_argument(
        "--shape", action="append", default=[], metavar="NAME=3x4", help="an input's shape (default 3 per axis)"
    )
    check_cmd.add_argument(
        "--expect",
        metavar="CLAIM",
        help="your derivative in index notation ('2 A_kj x_j') or matrix notation ('A x + A^T x': rows are the "
        "derivative's first index, columns its second)",
    )
    check_cmd.add_argument("--tol", type=float, default=1e-6, help="largest relative error accepted (default 1e-6)")
    check_cmd.add_argument("--seed", type=int, default=0)
    for command in (diff_cmd, eval_cmd, check_cmd):
        _notation_options(command)
    return parser


def _notation_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--notation",
        choices=("auto", "index", "matrix"),
        default="auto",
        help="how EXPR is written: index notation (f = x_i A_ij x_j), matrix notation (f = x^T A x, x' * A * x), "
        "or auto (the default): matrix notation when EXPR uses ^T, ', .*, ./, .^, tr(, ...",
    )
    command.add_argument(
        "--rank",
        action="append",
        default=[],
        metavar="NAME=N",
        help="the rank of an input in matrix notation: 0 a scalar, 1 a vector, 2 a matrix (default: inferred)",
    )


def _read_expr(args):
    """The EXPR read in --notation with the --rank declarations (shapes given by --random, --input
    and --shape count as ranks for matrix notation), and the reading to show (None for index notation)."""
    import numpy as np

    from .matrix_input import read

    ranks = {}
    for text in args.rank:
        name, _, rank = text.partition("=")
        if not name.strip() or not rank.strip().isdigit():
            raise EinderivError(f"--rank takes NAME=N with N 0, 1 or 2, such as x=1 (got {text!r})")
        ranks[name.strip()] = int(rank)
    shapes = {}
    for option in ("random", "shape"):
        for text in getattr(args, option, []):
            name, shape = _shape(text, f"--{option}")
            shapes[name] = len(shape)
    for text in getattr(args, "input", []):
        name, _, path = text.partition("=")
        try:
            shapes[name.strip()] = np.load(path, mmap_mode="r", allow_pickle=False).ndim
        except (OSError, ValueError):
            pass  # reported when the arrays are loaded
    reading = read(args.expr, args.notation, ranks, shapes)
    args.expr = reading
    return reading.text if reading.notation == "matrix" else None


EVAL_EXAMPLE = """example:
  $ einderiv eval "K_pq = R_mp R_mq" --random R=4x3
  $ einderiv eval "f = x_i A_ij x_j" --wrt x --input x=x.npy --input A=A.npy --out grad.npy
"""
CHECK_EXAMPLE = """example:
  $ einderiv check "f = x_i A_ij x_j" --wrt x --shape x=4 --shape A=4x4 --expect "A_kj x_j + A_jk x_j"
  derivative: df/dx_k = A_kj x_j + x_i A_ik
  finite differences: max relative error 3.1e-10 (tolerance 1e-06): ok
  your claim: matches (max absolute difference 0)
  $ einderiv check "f = x_i A_ij x_j" --wrt x --expect "(A + A^T) x"
  your claim (matrix notation, read as (A_ki + A_ik) x_i): matches (max absolute difference 2.2e-16)
"""


def _shape(text: str, option: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    if not name or not _:
        raise EinderivError(f"{option} takes NAME=SHAPE, such as A=3x4 (got {text!r})")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x") if d.strip()) if dims.strip() else ()
    except ValueError:
        raise EinderivError(f"{option} {text!r}: the shape must be sizes joined by 'x', such as 3x4") from None
    if any(d < 0 for d in shape):
        raise EinderivError(f"{option} {text!r}: sizes must not be negative")
    return name.strip(), shape


def _load(text: str):
    import numpy as np

    name, _, path = text.partition("=")
    if not name or not path:
        raise EinderivError(f"--input takes NAME=FILE.npy (got {text!r})")
    try:
        return name.strip(), np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EinderivError(f"--input {name}: cannot read {path!r} as a .npy array ({err})") from None


def _run_eval(args) -> str:
    import numpy as np

    from .api import compile as compile_

    rng = np.random.default_rng(args.seed)
    arrays = dict(_load(text) for text in args.input)
    for text in args.random:
        name, shape = _shape(text, "--random")
        arrays[name] = rng.normal(size=shape)
    target = diff(args.expr, args.wrt, of=args.of) if args.wrt else compile_(args.expr, of=args.of)
    value = np.asarray(target(**arrays))
    if args.out:
        np.save(args.out, value)
        return f"saved an array of shape {value.shape} to {args.out}"
    return f"{target.statement}\nshape {value.shape}\n{np.array2string(value, precision=6)}"


def _run_check(args) -> tuple[str, int]:
    import numpy as np

    from .api import compile as compile_

    derivative = diff(args.expr, args.wrt)
    given = dict(_shape(text, "--shape") for text in args.shape)
    unknown = sorted(set(given) - set(derivative.ranks))
    if unknown:
        raise EinderivError(f"--shape {unknown[0]}: not an input (inputs: {', '.join(derivative.inputs)})")
    rng = np.random.default_rng(args.seed)
    arrays = {name: rng.normal(size=given.get(name, (3,) * rank)) for name, rank in derivative.ranks.items()}
    analytic = np.asarray(derivative(**arrays), dtype=np.float64)
    lower_order = compile_(args.expr) if len(args.wrt) == 1 else diff(args.expr, args.wrt[:-1])
    wrt = derivative.wrt[-1].name
    base = {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}
    numeric = np.zeros(analytic.shape)
    h = 1e-6
    for position in np.ndindex(*base[wrt].shape):  # a check, not an evaluation path
        plus, minus = dict(base), dict(base)
        plus[wrt], minus[wrt] = base[wrt].copy(), base[wrt].copy()
        plus[wrt][position] += h
        minus[wrt][position] -= h
        lower_inputs = set(lower_order.ranks)
        up = np.asarray(lower_order(**{k: v for k, v in plus.items() if k in lower_inputs}))
        down = np.asarray(lower_order(**{k: v for k, v in minus.items() if k in lower_inputs}))
        numeric[(Ellipsis, *position)] = (up - down) / (2 * h)
    scale = max(1.0, float(np.max(np.abs(numeric))) if numeric.size else 1.0)
    error = float(np.max(np.abs(analytic - numeric))) / scale if numeric.size else 0.0
    ok = error <= args.tol
    lines = [
        f"derivative: {derivative.statement}",
        f"inputs: {', '.join(f'{k} {v.shape}' for k, v in arrays.items())}",
        f"finite differences: max relative error {error:.2g} (tolerance {args.tol:g}): {'ok' if ok else 'FAILED'}",
    ]
    if args.expect:
        notation, rhs, indices = read_claim(args.expect, derivative)
        value = claim_value(rhs, indices, arrays, analytic.shape)
        difference = np.abs(value - analytic)
        worst = float(difference.max()) if difference.size else 0.0
        label = "your claim" if notation == "index" else f"your claim (matrix notation, read as {rhs})"
        if worst <= args.tol * max(1.0, float(np.max(np.abs(analytic))) if analytic.size else 1.0):
            lines.append(f"{label}: matches (max absolute difference {worst:.2g})")
        else:
            where = np.unravel_index(int(np.argmax(difference)), difference.shape)
            labels = ", ".join(f"{i}={w}" for i, w in zip(derivative.indices, where))
            lines.append(
                f"{label}: DIFFERS: max absolute difference {worst:.3g} at {labels or 'the value'} "
                f"(derivative {float(analytic[where]):.6g}, claim {float(value[where]):.6g})"
            )
            ok = False
    return "\n".join(lines), 0 if ok else 1


def parse_claim(text: str):
    program = parse(text)
    if len(program.statements) != 1:
        raise EinderivError("--expect takes one expression or one statement")
    return program.output


def read_claim(text: str, derivative) -> tuple[str, str, tuple[str, ...]]:
    """``--expect`` read as (notation, right-hand side in index notation, its free indices).

    Text with ``_`` subscripts or an ``=`` is read as index notation first, other text as matrix
    notation first (``A x + A^T x``: rows and columns are the derivative's first and second
    index); when the first reading is a syntax error (or a line with ``=`` fails as index
    notation) the other one is tried, and if both fail the first reading's error is raised."""
    readers = [("index", _index_claim), ("matrix", _matrix_claim)]
    if "_" not in text and "=" not in text:
        readers.reverse()
    try:
        return (readers[0][0], *readers[0][1](text, derivative))
    except EinderivError as first_error:
        # a syntax error, or a whole matrix line (df/dx = 2 A x reads as index notation over
        # scalars, and fails there on its indices): try the other reading
        if not isinstance(first_error, ParseError) and not (readers[0][0] == "index" and "=" in text):
            raise
        try:
            return (readers[1][0], *readers[1][1](text, derivative))
        except EinderivError:
            raise first_error from None


def claim_value(rhs: str, indices: tuple[str, ...], arrays: dict, shape: tuple[int, ...]):
    """Compile ``claim_{indices} = rhs`` with einderiv and evaluate it on ``arrays``, broadcast to
    ``shape`` (the derivative's): a claim may use only the expression's inputs."""
    import numpy as np

    from .api import compile as compile_

    taken = set(arrays)
    name = _unused("claim", taken)
    carriers = [_unused(f"axis{n}", taken) for n in range(len(indices))]
    # zero-valued carrier arrays give each free index the derivative's size (a claim such as
    # delta_kl, I, or A - A has no array that says it); the zero term adds nothing to the value
    sizes = " + 0 " + " ".join(f"{c}_{{{i}}}" for c, i in zip(carriers, indices)) if indices else ""
    lhs = name + "_{" + ", ".join(indices) + "}" if indices else name
    claimed = compile_(parse(f"{lhs} = {rhs}{sizes}"))
    missing = sorted(set(claimed.ranks) - set(arrays) - set(carriers))
    if missing:
        raise EinderivError(f"--expect uses {missing[0]!r}, which is not an input of the expression")
    given = {**arrays, **{c: np.zeros(n) for c, n in zip(carriers, shape)}}
    try:
        value = np.asarray(claimed(**{k: given[k] for k in claimed.ranks}), dtype=np.float64)
    except EvaluationError as err:
        raise EinderivError(f"--expect: the claim does not fit the derivative's shape {shape}: {err}") from None
    return np.broadcast_to(value, shape)


def _index_claim(text: str, derivative) -> tuple[str, tuple[str, ...]]:
    from .lower import normalize
    from .semantics import output_indices

    claim = parse_claim(text)
    indices = output_indices(claim) if claim.target is not None else derivative.indices
    if len(indices) != len(derivative.indices):
        raise EinderivError(
            f"--expect has {len(indices)} free indices but the derivative has {len(derivative.indices)} "
            f"({''.join(derivative.indices)})"
        )
    normalize(claim.rhs, indices)  # checks the claim's index rules
    return str(claim.rhs), tuple(indices)


def _matrix_claim(text: str, derivative) -> tuple[str, tuple[str, ...]]:
    from .matrix_claim import translate

    if "=" in text:  # a whole line as --format matrix prints it: df/dx = (A + A^T) x
        text = text.split("=", 1)[1]
    translation = translate(text, derivative.ranks, derivative.indices)
    return translation.rhs, translation.indices


def _unused(name: str, taken: set[str]) -> str:
    """``name``, or ``name2``, ``name3``... whichever no input uses (and record it as taken)."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}{number}"
    taken.add(candidate)
    return candidate


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
        "matrix": _matrix_json(derivative),
    }


def _matrix_json(derivative) -> dict:
    """``{"forms": [{"lhs", "form"}, ...], "none": null}``, or no forms and the reason."""
    from .matrix_form import NoMatrixForm

    try:
        forms = [{"lhs": lhs, "form": form} for _, lhs, form in derivative.matrix_lines()]
    except NoMatrixForm as err:
        return {"forms": [], "none": err.reason}
    return {"forms": forms, "none": None}


def _run_diff(args) -> str:
    derivative = diff(args.expr, args.wrt, layout=args.layout)
    if args.format == "json":
        return json.dumps(derivative_json(derivative), indent=2)
    if args.format in ("python", "jax", "torch"):
        from .api import compile as compile_
        from .codegen import generate

        return generate([compile_(args.expr), derivative], args.format).rstrip("\n")
    if args.format == "latex":
        return derivative.latex()
    if args.format == "pretty":
        return derivative.pretty()
    if args.format == "matrix":
        return derivative.matrix()
    lines = [str(derivative), f"  shape: {derivative.shape_text()}"]
    for definition in derivative.definitions[:-1]:
        steps = " + ".join(str(t) for t in emit(definition.poly)) or "0"
        lines.append(f"  einsum[{definition.name}]: {steps}")
    einsum = " + ".join(str(t) for t in derivative.einsum) or "(none: the derivative is zero)"
    lines.append(f"  einsum: {einsum}")
    lines += _matrix_lines(derivative)
    return "\n".join(lines)


def _matrix_lines(derivative) -> list[str]:
    """``  matrix: A x + A^T x`` (``  matrix[e]: ...`` first for each intermediate), or
    ``  matrix: none (<reason>)``."""
    from .matrix_form import NoMatrixForm

    try:
        forms = derivative.matrix_lines()
    except NoMatrixForm as err:
        return [f"  matrix: none ({err.reason})"]
    except Exception as err:  # noqa: BLE001 - a printer bug must not cost the index form printed above
        return [f"  matrix: none (internal error in the matrix printer: {type(err).__name__}; please report)"]
    return [f"  matrix[{name}]: {form}" for name, _, form in forms[:-1]] + [f"  matrix: {forms[-1][2]}"]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code = 0
    try:
        read_as = _read_expr(args)
        if args.command == "eval":
            output = _run_eval(args)
        elif args.command == "check":
            output, code = _run_check(args)
        else:
            output = _run_diff(args)
        if read_as is not None and args.command == "diff" and args.format != "text":
            print(f"read as: {read_as}", file=sys.stderr)  # stdout stays the format's own
        elif read_as is not None:
            output = f"read as: {read_as}\n{output}"
    except ParseError as err:
        print(
            f"error: {err.message} (line {err.line}, column {err.column})" if err.line else f"error: {err.message}",
            file=sys.stderr,
        )
        if err.line:
            print(err.caret, file=sys.stderr)
        return 2
    except EinderivError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: the expression is nested too deeply", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI never shows a traceback
        print(f"error: internal error ({type(err).__name__}: {err}); please report this expression", file=sys.stderr)
        return 70
    try:
        print(output)
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        sys.stderr.close()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
