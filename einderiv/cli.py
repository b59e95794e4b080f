"""The command line: ``einderiv diff EXPR --wrt NAME [--wrt NAME ...] [--format text|json]``, ``eval``,
``check`` and ``serve``."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings

from . import __version__
from .api import compile as compile_
from .api import diff
from .checking import check
from .codegen import FLAVOURS, generate
from .emit import emit
from .errors import EinderivError, EinderivWarning, ParseError
from .gradients import grad
from .matrix.form import NoMatrixForm
from .matrix.reading import check_known, read, with_structured
from .parser import ascii_name
from .reports import derivative_json, inputs_only, one_tensor_each, parse_shape, wrt_or_each

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

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        print(f"error: {message}{self._leading_minus_hint()}", file=sys.stderr)
        raise SystemExit(2)

    def _leading_minus_hint(self) -> str:
        """Only where an argument that starts with '-' is no option, so argparse took an
        expression (``-x_i x_i`` written without a space) for one."""
        dashed = [a for a in getattr(self, "given", []) if re.match(r"-[^-]", a) and a not in ("-h",)]
        if not dashed:
            return ""
        return f" (an expression that starts with '-' can start with a space instead: \" {dashed[0]}\")"


def _seed(text: str) -> int:
    if not (text.strip().isascii() and text.strip().isdigit()):  # '²'.isdigit(), and int('²') fails
        raise argparse.ArgumentTypeError(f"the seed is a non-negative integer, got {text!r}")
    return int(text)


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
        "--wrt", action="append", default=[], metavar="NAME", help="tensor name (R) or name with indices (R_ij)"
    )
    _structure_options(diff_cmd)
    diff_cmd.add_argument(
        "--of", metavar="NAME", help="the statement of a program to differentiate (default: the last)"
    )
    diff_cmd.add_argument(
        "--each",
        action="append",
        default=[],
        metavar="NAME",
        help="the gradient of a scalar with respect to each NAME given (--each W1 --each b1: two gradients, "
        "evaluated together), where repeated --wrt is one mixed higher derivative",
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
    eval_cmd.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs (default 0)")
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
    check_cmd.add_argument("--of", metavar="NAME", help="the statement of a program to check (default: the last)")
    check_cmd.add_argument(
        "--shape", action="append", default=[], metavar="NAME=3x4", help="an input's shape (default 3 per axis)"
    )
    check_cmd.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input fixed to an array of your own (a one-hot y), for a claim that holds only there",
    )
    check_cmd.add_argument(
        "--expect",
        metavar="CLAIM",
        help="your derivative in index notation ('2 A_kj x_j'; other free letters than the derivative's are "
        "matched to its letters, and the matching is printed; or a whole statement 'df/dx_i = 2 A_ij x_j') or "
        "matrix notation ('A x + A^T x': rows are the derivative's first index, columns its second)",
    )
    _structure_options(check_cmd)
    check_cmd.add_argument("--tol", type=float, default=1e-6, help="largest relative error accepted (default 1e-6)")
    check_cmd.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs (default 0)")
    for command in (diff_cmd, eval_cmd, check_cmd):
        _notation_options(command)
    _serve_command(commands)
    return parser


def _serve_command(commands) -> None:
    serve_cmd = commands.add_parser(
        "serve",
        help="a local web page for deriving, checking and exporting (and its JSON API)",
        description="Serve the page at http://127.0.0.1:8000/ until Ctrl-C.",
    )
    serve_cmd.add_argument("--port", type=_port, default=8000, help="the port (default 8000; 0: any free one)")
    serve_cmd.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)"
    )
    serve_cmd.add_argument("--open", action="store_true", help="open the page in a web browser")
    serve_cmd.add_argument(
        "--time-limit", type=_seconds, default=10.0, metavar="SECONDS", help="work per request (default 10)"
    )
    serve_cmd.add_argument(
        "--workers", type=_workers, default=None, metavar="N", help="worker processes (default: the CPUs, up to 4)"
    )


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a whole number from 0 to 65535, got {text!r}")
    return int(text)


def _workers(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to 64, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a positive number of seconds, got {text!r}")
    return value


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

    ranks = {}
    for text in args.rank:
        name, _, rank = text.partition("=")
        if not name.strip() or not rank.strip().isdigit():
            raise EinderivError(f"--rank takes NAME=N with N 0, 1 or 2, such as x=1 (got {text!r})")
        if name.strip() in ranks:
            raise EinderivError(f"--rank {text!r}: {name.strip()!r} is given twice")
        ranks[name.strip()] = int(rank)
    shapes = {}
    for option in ("random", "shape"):
        for text in getattr(args, option, []):
            name, shape = parse_shape(text, f"--{option}")
            shapes[name] = len(shape)
    for text in getattr(args, "input", []):
        name, value = _load(text)  # a missing or malformed file is reported here, by name
        shapes[name] = np.ndim(value)
    structured = {key: getattr(args, key, None) for key in ("symmetric", "diagonal")}
    reading = read(args.expr, args.notation, with_structured(ranks, structured), shapes)
    check_known(reading, ranks)
    written, args.expr = args.expr, reading
    if reading.notation != "matrix" or reading.text.split() == written.split():
        return None  # index notation, or matrix notation that reads as itself (f = logdet(S))
    return reading.text


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


def _load(text: str):
    import numpy as np

    name, _, path = text.partition("=")
    if not name or not path:
        raise EinderivError(f"--input takes NAME=FILE.npy (got {text!r})")
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
            if magic != b"\x93NUMPY":
                kind = "a .npz archive (save one array with numpy.save)" if magic[:2] == b"PK" else "not a .npy file"
                raise EinderivError(f"--input {name}: {path!r} is {kind}")
            file.seek(0)
            return name.strip(), np.load(file, allow_pickle=False)
    except OSError as err:
        raise EinderivError(f"--input {name}: cannot read {path!r} ({err.strerror or err})") from None
    except (ValueError, EOFError) as err:
        raise EinderivError(f"--input {name}: {path!r} is not a valid .npy array ({err})") from None


def _given_arrays(inputs: list[str], randoms: list[str] = (), seed: int | None = None) -> dict:
    """The arrays of ``--input NAME=FILE.npy`` and ``--random NAME=3x4`` (normal, from ``seed``),
    by name; a name given twice is an error."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for option, text in [("--input", t) for t in inputs] + [("--random", t) for t in randoms]:
        name, value = _load(text) if option == "--input" else parse_shape(text, option)
        if name in arrays:
            raise EinderivError(f"{option} {text!r}: {name!r} is given twice")
        if option == "--random":
            try:
                value = rng.normal(size=value)
            except (MemoryError, ValueError) as err:
                raise EinderivError(f"--random {text!r}: too large to allocate ({err})") from None
        arrays[name] = value
    return arrays


def _run_eval(args) -> str:
    import numpy as np

    arrays = _given_arrays(args.input, args.random, args.seed)
    target = (
        diff(args.expr, one_tensor_each(args.wrt, "--wrt"), of=args.of) if args.wrt else compile_(args.expr, of=args.of)
    )
    value = np.asarray(target(arrays))
    if args.out is not None:
        if not args.out.strip():
            raise EinderivError("--out needs a file name, such as value.npy")
        path = args.out if args.out.endswith(".npy") else args.out + ".npy"  # as numpy.save names it
        try:
            with open(path, "wb") as file:
                np.save(file, value)
        except OSError as err:
            raise EinderivError(f"--out: cannot write {path!r} ({err.strerror or err})") from None
        return f"saved an array of shape {value.shape} to {path}"
    return f"{target.statement}\nshape {value.shape}\n{np.array2string(value, precision=6)}"


def _structure_options(command) -> None:
    command.add_argument(
        "--symmetric",
        action="append",
        default=[],
        metavar="NAME",
        help="NAME is a symmetric matrix: differentiate in the space of symmetric matrices",
    )
    command.add_argument("--diagonal", action="append", default=[], metavar="NAME", help="NAME is a diagonal matrix")
    command.add_argument(
        "--convention",
        choices=("frobenius", "cookbook"),
        default="frobenius",
        help="the gradient by a symmetric matrix: frobenius, (G + G^T)/2 (the default), or cookbook, "
        "G + G^T - G o I (the Matrix Cookbook's)",
    )


def _structure(args) -> dict:
    return {"symmetric": args.symmetric, "diagonal": args.diagonal, "symmetric_convention": args.convention}


def _run_check(args) -> tuple[str, int]:
    shapes = {}
    for text in args.shape:
        name, shape = parse_shape(text, "--shape")
        if name in shapes:
            raise EinderivError(f"--shape {text!r}: {name!r} is given twice")
        shapes[name] = shape
    inputs = compile_(args.expr).inputs
    inputs_only(shapes, inputs, "--shape")  # named as the option names it (check() would say shapes=)
    values = _given_arrays(args.input)
    inputs_only(values, inputs, "--input")
    result = check(
        args.expr,
        one_tensor_each(args.wrt, "--wrt"),
        expect=args.expect,
        tol=args.tol,
        shapes=shapes,
        of=args.of,
        seed=args.seed,
        values=values,
        **_structure(args),
    )
    return result.report(), 0 if result.ok else 1


def _run_diff(args) -> str:
    wrt_or_each(args.wrt, args.each, "--wrt", "--each")
    if args.each:
        return _run_each(args)
    derivative = diff(args.expr, one_tensor_each(args.wrt, "--wrt"), of=args.of, layout=args.layout, **_structure(args))
    if args.format == "json":
        return json.dumps(derivative_json(derivative), indent=2)
    if args.format in FLAVOURS:
        return generate([compile_(args.expr, of=args.of), derivative], args.format).rstrip("\n")
    if args.format == "latex":
        return derivative.latex()
    if args.format == "pretty":
        return derivative.pretty()
    if args.format == "matrix":
        return derivative.matrix()
    lines = [str(derivative), f"  shape: {derivative.shape_text()}"]
    for definition in derivative.program.evaluated()[:-1]:
        steps = " + ".join(str(t) for t in emit(definition.poly)) or "0"
        lines.append(f"  einsum[{definition.name}]: {steps}")
    einsum = " + ".join(str(t) for t in derivative.einsum) or "(none: the derivative is zero)"
    lines.append(f"  einsum: {einsum}")
    lines += _matrix_lines(derivative)
    return "\n".join(lines)


def _run_each(args) -> str:
    """``--each W1 --each b1``: the gradient by each name, printed one after another."""
    each = one_tensor_each(args.each, "--each")
    read = [ascii_name(name.split("_", 1)[0].strip()) for name in each]  # as the text reads them: θ is theta
    twice = next((name for k, name in enumerate(each) if read[k] in read[:k]), None)
    if twice is not None:  # grad's own message names the Python API
        raise EinderivError(
            f"--each names {twice!r} twice: it gives the gradient by each name; for a second derivative "
            f"repeat --wrt instead (--wrt {twice} --wrt {twice})"
        )
    gradients = grad(args.expr, each, of=args.of, **_structure(args))
    if args.format == "json":
        return json.dumps({"gradients": [derivative_json(d) for d in gradients]}, indent=2)
    if args.format in FLAVOURS:
        return generate([compile_(args.expr, of=args.of), *gradients], args.format).rstrip("\n")
    blocks = []
    for derivative in gradients:
        if args.format == "latex":
            blocks.append(derivative.latex())
        elif args.format == "pretty":
            blocks.append(derivative.pretty())
        elif args.format == "matrix":
            blocks.append(derivative.matrix())
        else:
            lines = [str(derivative), f"  shape: {derivative.shape_text()}"]
            lines.append("  einsum: " + (" + ".join(str(t) for t in derivative.einsum) or "(none: zero)"))
            blocks.append("\n".join(lines + _matrix_lines(derivative)))
    return "\n\n".join(blocks)


def _matrix_lines(derivative) -> list[str]:
    """``  matrix: A x + A^T x`` (``  matrix[e]: ...`` first for each intermediate), or
    ``  matrix: none (<reason>)``."""
    try:
        forms = derivative.matrix_lines()
    except NoMatrixForm as err:
        return [f"  matrix: none ({err.reason})"]
    except Exception as err:  # noqa: BLE001 - a printer bug must not cost the index form printed above
        return [f"  matrix: none (internal error in the matrix printer: {type(err).__name__}; please report)"]
    return [f"  matrix[{name}]: {form}" for name, _, form in forms[:-1]] + [f"  matrix: {forms[-1][2]}"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):  # a bare einderiv: the usage, and what to type
        print(parser.format_usage().rstrip(), file=sys.stderr)
        print(
            "error: name a command: diff, eval or check, or serve for the web page (einderiv --help shows them all)",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .serve import serve

        return serve(args.host, args.port, open_browser=args.open, time_limit=args.time_limit, workers=args.workers)
    code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EinderivWarning)
        code = _dispatch(args)
    for note in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, EinderivWarning)):
        print(f"warning: {note}", file=sys.stderr)  # after the output; the exit status stays
    return code


def _dispatch(args) -> int:
    """Run the command; print its output or one ``error:`` line; return the exit status."""
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
        elif read_as is not None and args.command != "check":  # a check's report says it itself
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
    except KeyboardInterrupt:  # Ctrl-C during a long check: no traceback
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:  # the sizes asked for: a user's choice, not an internal error
        print(f"error: not enough memory ({str(err).splitlines()[0] if str(err) else 'MemoryError'})", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI never shows a traceback
        print(f"error: internal error ({type(err).__name__}: {err}); please report this expression", file=sys.stderr)
        return 70
    try:
        print(output)
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        sys.stderr.close()
    except UnicodeEncodeError as err:  # a console that cannot show ∂ or ∑ (cp1252, ascii)
        print(
            f"error: standard output's encoding ({sys.stdout.encoding}) cannot write {err.object[err.start]!r}; "
            "set PYTHONIOENCODING=utf-8, or ask for --format text or --format latex",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
