"""A derivative of an output whose name starts with ``d`` (issue 14): ``dist`` is printed as
``ddist/dx_k``, ``∂dist/∂x_k`` and ``\\frac{\\partial \\mathrm{dist}}{...}``, never ``∂ist``.  The
differentiated name comes from the statement's order (``Statement.differentiated``), not from
stripping letters off the derivative's name."""

from __future__ import annotations

import json

import pytest

import einderiv
from einderiv.cli import main as cli_main
from einderiv.ir import Statement, derivative_name
from einderiv.parser import parse

NAMES = ["dist", "d", "dd", "d2x", "deltaout", "density"]
# (kind, source with {name}, wrt, the output's indices)
KINDS = [
    ("gradient", "{name} = x_i A_ij x_j", ["x"], ""),
    ("hessian", "{name} = x_i A_ij x_j", ["x", "x"], ""),
    ("jacobian", "{name}_i = A_ij x_j + x_i", ["x"], "i"),
]
CASES = [(name, *kind) for name in NAMES for kind in KINDS]
IDS = [f"{name}-{kind}" for name, kind, *_ in CASES]


def _latex_name(name: str) -> str:
    return name if len(name) == 1 else rf"\mathrm{{{name}}}"


@pytest.mark.parametrize("name, kind, source, wrt, indices", CASES, ids=IDS)
def test_text_pretty_and_latex_keep_the_whole_name(name, kind, source, wrt, indices):
    derivative = einderiv.diff(source.format(name=name), wrt)
    order = len(wrt)
    k, l = derivative.indices[len(indices) :][0], derivative.indices[-1]
    assert derivative.statement.differentiated == name
    sub = f"_{indices}" if indices else ""
    text = {1: f"d{name}{sub}/dx_{k} = ", 2: f"d2{name}/dx_{k} dx_{l} = "}[order]
    assert str(derivative).startswith(text), str(derivative)
    pretty = {1: f"∂{name}{sub}/∂x_{k} = ", 2: f"∂²{name}/∂x_{k} ∂x_{l} = "}[order]
    assert derivative.pretty().startswith(pretty), derivative.pretty()
    top = _latex_name(name) + (f"_{{{indices}}}" if indices else "")
    latex = {
        1: rf"\frac{{\partial {top}}}{{\partial x_{{{k}}}}} = ",
        2: rf"\frac{{\partial^{{2}} {top}}}{{\partial x_{{{k}}} \partial x_{{{l}}}}} = ",
    }[order]
    assert derivative.latex().startswith(latex), derivative.latex()


@pytest.mark.parametrize("name, kind, source, wrt, indices", CASES, ids=IDS)
def test_matrix_and_json_keep_the_whole_name(name, kind, source, wrt, indices, capsys):
    derivative = einderiv.diff(source.format(name=name), wrt)
    lhs = derivative_name(name, len(wrt)) + "/" + " ".join("dx" for _ in wrt)
    assert derivative.matrix().startswith(lhs + " = "), derivative.matrix()
    code = cli_main(["diff", source.format(name=name), *(a for w in wrt for a in ("--wrt", w)), "--format", "json"])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["output"] == name
    assert shown["derivative"] == str(derivative.statement)
    assert shown["derivative"].startswith(derivative_name(name, len(wrt)) + (f"_{indices}" if indices else "") + "/")
    assert [form["lhs"] for form in shown["matrix"]["forms"]] == [lhs]


def test_pretty_and_latex_on_the_command_line():
    for fmt, expected in (("pretty", "∂dist/∂x_k = "), ("latex", r"\frac{\partial \mathrm{dist}}{\partial x_{k}}")):
        code_output = _cli(["diff", "dist = x_i A_ij x_j", "--wrt", "x", "--format", fmt])
        assert code_output.startswith(expected), code_output


def _cli(argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(argv) == 0
    return out.getvalue()


@pytest.mark.parametrize(
    "text, differentiated",
    [
        ("ddist/dx_i = x_i", "dist"),
        ("dd/dx_i = x_i", "d"),
        ("d/dx_i = x_i", ""),  # a bare expression's derivative
        ("d2f/dx_i dx_j = delta_ij", "f"),
        ("df/dx_i dx_j = delta_ij", "f"),  # the order left out
        ("d2d2x/dx_i dx_j = delta_ij", "d2x"),
        ("dd2x/dx_i = x_i", "d2x"),
        ("f = x_i x_i", None),
    ],
)
def test_statement_differentiated(text, differentiated):
    statement: Statement = parse(text).output
    assert statement.differentiated == differentiated
    if differentiated is not None:
        assert [t.name for t in statement.denominators] == ["x"] * len(statement.wrt)


def test_differentiating_a_derivative_named_statement_again_extends_its_name():
    again = einderiv.diff("ddist/dy_i = A_ij y_j", "y")
    assert str(again.statement).startswith("d2dist/dy_i dy_")
    assert again.pretty().startswith("∂²dist/∂y_i ∂y_")
    twice = einderiv.diff("dd2x/dy_i = y_i y_j y_j", "y")
    assert str(twice.statement).startswith("d2d2x/dy_i dy_")
    assert twice.pretty().startswith("∂²d2x/∂y_i ∂y_")


def test_a_bare_expression_derivative_has_no_numerator():
    gradient = einderiv.diff("x_i A_ij x_j", "x")
    assert str(gradient.statement).startswith("d/dx_k = ") and gradient.pretty().startswith("∂/∂x_k = ")
    assert gradient.latex().startswith(r"\frac{\partial}{\partial x_{k}} = ")
    hessian = einderiv.diff("x_i A_ij x_j", ["x", "x"])
    assert hessian.pretty().startswith("∂²/∂x_k ∂x_l = ")


def test_check_suggests_a_whole_statement_named_by_the_differentiated_name():
    for source, lhs in (("dist = x_i A_ij x_j", "d2dist/dx_a dx_b"), ("x_i A_ij x_j", "d2f/dx_a dx_b")):
        result = einderiv.check(source, ["x", "x"], expect="A_ab + A_ba")
        assert result.claim == "matches"
        (note,) = result.notes
        suggested = note.split("write the whole statement: ")[1]
        assert suggested == f"{lhs} = A_ab + A_ba"
        again = einderiv.check(source, ["x", "x"], expect=suggested)  # the suggestion reads back
        assert again.claim == "matches" and again.notes == ()
