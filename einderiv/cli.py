"""The command line: ``einderiv diff EXPR --wrt NAME [--wrt NAME ...] [--format text|json]``."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .api import diff
from .emit import emit
from .errors import EinderivError, ParseError
from .ir import format_number

EXAMPLE = """example:
  $ einderiv diff "K_pq = R_mp R_mq" --wrt R
  dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq
    shape: K.shape + R.shape = (P, P, M, P) with R: (M, P)
    einsum: 'jp,iq->pqij' (delta, R) + 'ip,jq->pqij' (R, delta)
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
    diff_cmd.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    return parser


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
    }


def _run_diff(args) -> str:
    derivative = diff(args.expr, args.wrt)
    if args.format == "json":
        return json.dumps(derivative_json(derivative), indent=2)
    lines = [str(derivative), f"  shape: {derivative.shape_text()}"]
    for definition in derivative.definitions[:-1]:
        steps = " + ".join(str(t) for t in emit(definition.poly)) or "0"
        lines.append(f"  einsum[{definition.name}]: {steps}")
    einsum = " + ".join(str(t) for t in derivative.einsum) or "(none: the derivative is zero)"
    lines.append(f"  einsum: {einsum}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        output = _run_diff(args)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
