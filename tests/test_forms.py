"""The forms people type (issue 12): LaTeX braces, the new functions, and what unknown names suggest.

Values are checked against NumPy and derivatives against central finite differences in float64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einderiv
from einderiv.codegen import generate
from einderiv.glyphs import format_indices
from einderiv.ir import Call, Tensor
from einderiv.render import pretty
from einderiv.runtime import run_with
from tests.helpers import assert_matches_fd
from tests.helpers import load_module as load
from tests.helpers import run_cli as run

rng = np.random.default_rng(12)


def rhs(source: str):
    return einderiv.parse(source).output.rhs


def parse_error(source: str, notation: str = "auto") -> einderiv.ParseError:
    with pytest.raises(einderiv.ParseError) as info:
        einderiv.parse(source, notation=notation)
    return info.value


def assert_caret(err: einderiv.ParseError, column: int) -> None:
    assert err.column == column, (err.column, str(err))
    assert str(err).splitlines()[-1].index("^") - 2 == column - 1


# -- LaTeX braces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, indices",
    [
        ("A_{ij}", ("i", "j")),
        ("A_{i j}", ("i", "j")),
        ("A_{i1j2}", ("i1", "j2")),
        ("A_{i10j}", ("i10", "j")),
        ("x_{n}", ("n",)),
        ("x_{n1}", ("n1",)),
        ("W_{in,out}", ("in", "out")),
        ("W_{ in , out }", ("in", "out")),
        ("x_{in,}", ("in",)),
        ("x_{in}", ("i", "n")),
        ("A_{i,j}", ("i", "j")),
    ],
)
def test_braced_indices_read_as_latex(text, indices):
    assert rhs(text) == Tensor(text.split("_")[0], indices)


def test_braced_indices_mean_the_same_as_the_compact_form_numerically():
    A, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    np.testing.assert_allclose(einderiv.evaluate("y_i = A_{ij} x_{j}", A=A, x=x), A @ x, rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("y_{i} = A_{i,j} x_j", A=A, x=x), A @ x, rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("t = sum_{ij}(A_ij)", A=A), A.sum(), rtol=1e-12)
    M = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    np.testing.assert_allclose(einderiv.evaluate("H_ij = inv(M)_{ji}", M=M), np.linalg.inv(M).T, rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("y_{in,} = exp(x_{in,})", x=x), np.exp(x), rtol=1e-12)


def test_braced_reduction_and_inverse_parse_to_the_named_indices():
    assert rhs("sum_{ij}(A_ij)") == Call("sum", Tensor("A", ("i", "j")), ("i", "j"))
    assert rhs("sum_{in,}(x_{in,})") == Call("sum", Tensor("x", ("in",)), ("in",))
    assert rhs("inv(M)_{ij}").indices == ("i", "j")
    assert rhs("inv(M)_{row,col}").indices == ("row", "col")


@pytest.mark.parametrize(
    "indices, text",
    [
        (("p", "q"), "_pq"),
        (("in", "out"), "_{in,out}"),
        (("in",), "_{in,}"),
        (("i1",), "_{i1}"),
        (("i1", "j"), "_{i1,j}"),
        (("i", "in"), "_{i,in}"),
    ],
)
def test_index_printer_writes_forms_that_read_back(indices, text):
    assert format_indices(indices) == text
    assert rhs("x" + text) == Tensor("x", indices)


@pytest.mark.parametrize(
    "source",
    [
        "y_{in,} = exp(x_{in,})",
        "f = sum_{in,}(x_{in,} w_{in,})",
        "H_{row,col} = inv(M)_{row,col}",
        "y_{i1} = A_{i1,j2} x_{j2}",
        "f = sum_{in,out}(W_{in,out} tanh(V_{out,}))",
    ],
)
def test_printed_programs_with_long_indices_read_back(source):
    program = einderiv.parse(source)
    assert einderiv.parse(str(program)) == program
    assert einderiv.parse(pretty(program)) == program


def test_derivative_with_a_long_index_prints_and_reads_back():
    d = einderiv.diff("y_{in,} = tanh(x_{in,})", "x")
    assert "_{in,}" in str(d)
    x = rng.normal(size=3)
    back = einderiv.compile(str(d))
    np.testing.assert_allclose(back(x=x), d(x=x), rtol=1e-12)
    np.testing.assert_allclose(np.diag(d(x=x)), 1 - np.tanh(x) ** 2, rtol=1e-12)


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("f = x_{}", "empty index list", 5),
        ("f = x_{,}", "bad index name '(nothing)'", 5),
        ("f = x_{i,,j}", "bad index name '(nothing)'", 5),
        ("f = x_{1i}", "bad index name '1i'", 5),
        ("f = x_{i,2}", "bad index name '2'", 5),
    ],
)
def test_bad_braced_lists_are_parse_errors(source, message, column):
    err = parse_error(source)
    assert message in err.message
    assert_caret(err, column)


# -- the new functions -----------------------------------------------------------------------------

NEW = {
    "cosh": (np.cosh, (-2, 2)),
    "sinh": (np.sinh, (-2, 2)),
    "arcsin": (np.arcsin, (-0.9, 0.9)),
    "arccos": (np.arccos, (-0.9, 0.9)),
    "arctan": (np.arctan, (-3, 3)),
}
# closed-form derivatives, independent of einderiv's table
FIRST = {
    "cosh": np.sinh,
    "sinh": np.cosh,
    "arcsin": lambda x: 1 / np.sqrt(1 - x**2),
    "arccos": lambda x: -1 / np.sqrt(1 - x**2),
    "arctan": lambda x: 1 / (1 + x**2),
}
SECOND = {
    "cosh": np.cosh,
    "sinh": np.sinh,
    "arcsin": lambda x: x / (1 - x**2) ** 1.5,
    "arccos": lambda x: -x / (1 - x**2) ** 1.5,
    "arctan": lambda x: -2 * x / (1 + x**2) ** 2,
}


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_function_values_and_derivatives(name):
    reference, (low, high) = NEW[name]
    x = rng.uniform(low, high, size=5)
    source = f"y_i = {name}(x_i)"
    np.testing.assert_allclose(einderiv.evaluate(source, x=x), reference(x), rtol=1e-13)
    first = einderiv.jacobian(source, "x")
    np.testing.assert_allclose(first(x=x), np.diag(FIRST[name](x)), rtol=1e-12, atol=1e-14)
    assert_matches_fd(first, einderiv.compile(source), {"x": x}, "x")
    scalar = f"f = sum_i({name}(x_i))"
    g = einderiv.grad(scalar, "x")
    h = einderiv.hessian(scalar, "x")
    np.testing.assert_allclose(h(x=x), np.diag(SECOND[name](x)), rtol=1e-12, atol=1e-14)
    assert_matches_fd(h, g, {"x": x}, "x", atol=1e-5)


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_functions_inside_a_contraction(name):
    A, x = rng.uniform(-0.3, 0.3, size=(3, 4)), rng.uniform(-0.5, 0.5, size=4)
    source = f"f = sum_i({name}(A_ij x_j))"
    np.testing.assert_allclose(einderiv.evaluate(source, A=A, x=x), NEW[name][0](A @ x).sum(), rtol=1e-12)
    g = einderiv.grad(source, "x")
    np.testing.assert_allclose(g(A=A, x=x), A.T @ FIRST[name](A @ x), rtol=1e-12)
    assert_matches_fd(einderiv.hessian(source, "x"), g, {"A": A, "x": x}, "x", atol=1e-5)


def test_new_functions_fold_at_zero_where_the_value_is_rational():
    assert str(einderiv.compile("y_ij = cosh(A_ij - A_ij)").expr) == "1"
    for name in ("sinh", "arcsin", "arctan"):
        assert str(einderiv.compile(f"y_ij = {name}(A_ij - A_ij)").expr) == "0"
    # arccos(0) = pi/2 is not rational: the call stays, and evaluates to pi/2
    A = np.ones((2, 2))
    np.testing.assert_allclose(einderiv.evaluate("y_ij = arccos(A_ij - A_ij)", A=A), np.full((2, 2), np.pi / 2))


def test_new_functions_at_non_finite_and_extreme_inputs():
    x = np.array([-2.0, -1.0, 1.0, 2.0, np.inf, -np.inf, np.nan])
    with np.errstate(all="ignore"):
        for name in ("arcsin", "arccos"):
            value = einderiv.evaluate(f"y_i = {name}(x_i)", x=x)
            np.testing.assert_array_equal(np.isnan(value), np.isnan(NEW[name][0](x)))
            slope = np.diag(einderiv.jacobian(f"y_i = {name}(x_i)", "x")(x=x))
            assert np.all(np.isnan(slope[[0, 3, 4, 5, 6]]))  # outside [-1, 1] (and NaN): NaN, as NumPy's value
            sign = 1 if name == "arcsin" else -1
            assert slope[1] == sign * np.inf and slope[2] == sign * np.inf  # the vertical tangents at -1 and 1
        big = np.array([1000.0, -1000.0, np.inf, -np.inf, 1e300])
        np.testing.assert_array_equal(einderiv.evaluate("y_i = cosh(x_i)", x=big), np.cosh(big))
        np.testing.assert_array_equal(einderiv.evaluate("y_i = sinh(x_i)", x=big), np.sinh(big))
        np.testing.assert_array_equal(einderiv.evaluate("y_i = arctan(x_i)", x=big), np.arctan(big))
        slope = np.diag(einderiv.jacobian("y_i = arctan(x_i)", "x")(x=big))
        np.testing.assert_allclose(slope, 1 / (1 + big**2), rtol=1e-15)  # 0 at the infinities, never NaN
        assert slope[2] == slope[3] == slope[4] == 0


def test_new_functions_print_in_latex_pretty_and_matrix_notation():
    d = einderiv.diff("f = sum_i(sinh(A_ij x_j))", "x")
    assert str(d) == "df/dx_k = cosh(A_ij x_j) A_ik"
    assert r"\cosh\left(" in d.latex()
    assert d.pretty() == "∂f/∂x_k = cosh(A_ij x_j) A_ik"
    assert d.matrix() == "df/dx = A^T cosh(A x)"
    assert r"\arctan\left(" in einderiv.diff("y_i = arctan(x_i) a_i", "a").latex()
    assert str(einderiv.diff("y_i = arcsin(x_i)", "x").expr) == "delta_ij / sqrt(1 - x_i^2)"


def test_new_functions_in_matrix_claims():
    from einderiv.matrix.translate import translate

    d = einderiv.diff("f = sum_i(sinh(A_ij x_j))", "x")
    claim = translate("A^T cosh(A x)", d.ranks, d.indices)
    A, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    value = einderiv.compile(f"c_{''.join(claim.indices)} = {claim.rhs}")
    np.testing.assert_allclose(value(A=A, x=x), A.T @ np.cosh(A @ x), rtol=1e-12)
    np.testing.assert_allclose(d(A=A, x=x), A.T @ np.cosh(A @ x), rtol=1e-12)


def test_new_functions_on_the_generic_backend_path():
    """The backend-independent evaluator (what jax, cupy and dask run), on NumPy's namespace."""
    from einderiv.backends import ops_for

    ops = ops_for("numpy")
    x = rng.uniform(-0.9, 0.9, size=4)
    for name, (reference, _) in NEW.items():
        for target, expected in (
            (einderiv.compile(f"y_i = {name}(x_i)"), reference(x)),
            (einderiv.jacobian(f"y_i = {name}(x_i)", "x"), np.diag(FIRST[name](x))),
            (einderiv.hessian(f"f = sum_i({name}(x_i))", "x"), np.diag(SECOND[name](x))),
        ):
            got = run_with(target.line, {"x": x}, ops, x)[target.program.output]
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_generated_python_code_for_the_new_functions(tmp_path):
    source = "y_i = cosh(x_i) + sinh(x_i) + arcsin(x_i / 2) + arccos(x_i / 2) + arctan(x_i)"
    value, derivative = einderiv.compile(source), einderiv.jacobian(source, "x")
    code = generate([value, derivative], "python")
    for name in ("np.cosh", "np.sinh", "np.arcsin", "np.arccos", "np.arctan"):
        assert name in code
    module = load(code, tmp_path, "generated_forms")
    x = rng.uniform(-1, 1, size=4)
    expected = np.cosh(x) + np.sinh(x) + np.arcsin(x / 2) + np.arccos(x / 2) + np.arctan(x)
    np.testing.assert_allclose(module.y(x=x), expected, rtol=1e-12)
    slope = np.sinh(x) + np.cosh(x) + 0.5 / np.sqrt(1 - x**2 / 4) - 0.5 / np.sqrt(1 - x**2 / 4) + 1 / (1 + x**2)
    np.testing.assert_allclose(module.dy_dx(x=x), np.diag(slope), rtol=1e-12, atol=1e-14)
    torch_code = generate([value], "torch")
    assert "torch.arcsin(" in torch_code and "torch.cosh(" in torch_code


def test_codegen_names_every_function_from_the_table():
    from einderiv.codegen import FLAVOURS, function_code
    from einderiv.functions import FUNCTIONS

    for flavour in FLAVOURS:
        for name in FUNCTIONS:
            code = function_code(name, flavour)
            assert code.startswith(("np.", "torch.", "_"))
    with pytest.raises(einderiv.EinderivError, match="not in einderiv.functions"):
        function_code("nosuch", "python")


# -- unknown names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("f = sigmod(x_i) y_i", "unknown function 'sigmod': did you mean sigmoid?", 5),
        ("f = y_i tahn(x_i)", "unknown function 'tahn': did you mean tanh?", 9),
        ("f = 2 arctna(x)", "unknown function 'arctna': did you mean arctan?", 7),
        ("f = ln(x)", "unknown function 'ln': the natural logarithm is log(...)", 5),
        ("t = tr(X)", "there is no trace function: write the repeated index, X_ii", 5),
        ("n = norm(x)", "there is no norm function: write the Euclidean norm as sqrt(x_i x_i)", 5),
        ("m = max(x)", "max is not supported", 5),
        ("m = min(x)", "min is not supported", 5),
        ("f = asin(x)", "write arcsin(...)", 5),
        ("f = summ_i(x_i)", "unknown reduction 'summ': did you mean sum_i(...)?", 5),
        ("P_k = sofmax_k(z_k)", "unknown reduction 'sofmax': did you mean softmax_k(...)?", 7),
        ("f = logsumexpp(x)", "did you mean logsumexp_i(...)?", 5),
    ],
)
def test_unknown_names_suggest_the_closest(source, message, column):
    err = parse_error(source, notation="index")  # auto reads tr(X) as matrix notation: the trace
    assert message in err.message
    assert "for a product" not in err.message
    assert_caret(err, column)


def test_tr_of_a_name_is_read_as_matrix_notation_by_default():
    X = np.arange(9.0).reshape(3, 3)
    assert float(einderiv.evaluate("t = tr(X)", X=X)) == np.trace(X)


@pytest.mark.parametrize(
    "source, name", [("f = w(x + 1)", "w"), ("f = lam(x + 1)", "lam"), ("f = squish(x)", "squish")]
)
def test_the_product_hint_only_where_a_product_is_plausible(source, name):
    err = parse_error(source)
    assert f"unknown function {name!r}; known functions: " in err.message
    assert "arctan" in err.message and "cosh" in err.message
    assert f"for a product write '{name} (...)' or '{name}*(...)'" in err.message
    assert "did you mean" not in err.message
    assert_caret(err, 5)
    x = rng.normal(size=())
    product = einderiv.evaluate(source.replace("(", " (", 1), **{name: 2.0, "x": x})
    np.testing.assert_allclose(product, 2.0 * (x + 1) if "+" in source else 2.0 * x)


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, message, column",
    [
        ("f = sigmod(x_i) y_i", "error: unknown function 'sigmod': did you mean sigmoid?", 5),
        ("f = x_{i,,j} y_j", "error: bad index name '(nothing)'", 5),
        ("f = θ_i ∑ x_i", "error: syntax error: unexpected character '∑': Einstein notation sums", 9),
    ],
)
def test_cli_prints_one_error_line_with_the_suggestion(expr, message, column):
    result = run("diff", expr, "--wrt", "x")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(message)
    assert lines[0].endswith(f"(line 1, column {column})")
    assert sum(line.startswith("error:") for line in lines) == 1
    assert lines[1] == "  " + expr and lines[2] == "  " + " " * (column - 1) + "^"


def test_cli_leading_minus_hint_only_where_it_explains_the_error():
    dashed = run("diff", "-x_i", "--wrt", "x")
    assert dashed.returncode == 2
    assert dashed.stderr.splitlines() == [
        "error: the following arguments are required: EXPR "
        "(an expression that starts with '-' can start with a space instead: \" -x_i\")"
    ]
    for args in (["diff", "f = x_i x_i", "--wrt"], ["diff", "f = x_i x_i", "--wrt", "x", "--format", "nope"]):
        other = run(*args)
        assert other.returncode == 2
        assert "starts with '-'" not in other.stderr
    spaced = run("diff", " -x_i x_i", "--wrt", "x")
    assert spaced.returncode == 0, spaced.stderr


# -- Unicode as people paste it --------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, ascii_",
    [
        ("e_n = y_n − Phi_nd theta_d", "e_n = y_n - Phi_nd theta_d"),
        ("y = a·b ⋅ c × d ∗ e", "y = a*b * c * d * e"),
        ("f = θ_i θ_i", "f = theta_i theta_i"),
        ("e_n = y_n − Φ_nd θ_d", "e_n = y_n - Phi_nd theta_d"),
        ("L = λ w_i w_i + Σ_ij Σ_ij", "L = lambda w_i w_i + Sigma_ij Sigma_ij"),
        ("f = µ ς ϑ ϕ", "f = mu sigma theta phi"),
        ("f = 𝑥_i 𝑥_i", "f = x_i x_i"),
        ("K_pq = δ_pq + R_mp R_mq", "K_pq = delta_pq + R_mp R_mq"),
        ("∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq", "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq"),
        ("∂²f/∂x_k ∂x_l = A_kl + A_lk", "d2f/dx_k dx_l = A_kl + A_lk"),
        ("∂³f/∂x_k ∂x_l ∂x_m = x_k δ_lm", "d3f/dx_k dx_l dx_m = x_k delta_lm"),
        ("∂^4f/∂x ∂x ∂x ∂x = 24", "d4f/dx dx dx dx = 24"),
        ("∂L/∂θ_i = −2 e_n Φ_ni", "dL/dtheta_i = -2 e_n Phi_ni"),
        ("y_i = σ(x_i)", "y_i = sigmoid(x_i)"),
        ("y = √(x² + 1)", "y = sqrt(x^2 + 1)"),
        ("f = Σ_i(x_i) + Σ_{in,}(w_{in,})", "f = sum_i(x_i) + sum_{in,}(w_{in,})"),
        ("H_ij = (M⁻¹)_ij", "H_ij = inv(M)_ij"),
        ("H_ij = (Σ⁻¹)_ji", "H_ij = inv(Sigma)_ji"),
        ("H_{row,col} = (M^-1)_{row,col}", "H_{row,col} = inv(M)_{row,col}"),
        ("y = x⁻¹ + x³", "y = x^-1 + x^3"),
        ("T_μν = A_μ B_ν", "T_{mu,nu} = A_{mu,} B_{nu,}"),
        ("f = x_{θ} + x_{θ,i} + x_θ1θ2", "f = x_{theta,} + x_{theta,i} + x_{theta1,theta2}"),
        ("y\u00a0=\u2009x", "y = x"),
    ],
)
def test_unicode_reads_as_its_ascii_spelling(typed, ascii_):
    assert einderiv.parse(typed) == einderiv.parse(ascii_)


def test_a_scalar_in_parentheses_to_the_power_minus_one_stays_a_power():
    assert str(einderiv.parse("y = (x^-1) + (s⁻¹) x_i").output.rhs) == "x^-1 + s^-1 x_i"


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("f = ∑_i x_i y_i", "drop the '∑', or write the sum as sum_i(...)", 5),
        ("f = θ_i ∑ x_i", "Einstein notation sums repeated indices by itself", 9),
        ("y = √x", "write a square root with parentheses", 5),
        ("c_i = a_i ⊙ b_i", "'⊙' is matrix notation", 11),
        ("B_ij = Aᵀ_ij", "'ᵀ' is matrix notation", 9),
        ("y = θ + φ + $", "unexpected character '$'", 13),
        ("θ_i = φ_i\nψ_k $", "unexpected character '$'", 5),
        ("f = θ_i (", "the input ends too early", 10),
        ("f = θ_i ++ * θ", "unexpected '*'", 12),
        ("y = δ_i", "delta takes exactly two indices", 5),
        ("f = φ_{}", "empty index list", 5),
        ("f = θ σigmod(x)", "unknown function 'sigmaigmod'", 7),
        ("f = Φ_nd θ_d + sigmod(x)", "did you mean sigmoid?", 16),
        ("f = Σ(x_i)", "sum(...) needs the indices it sums over", 5),
        ("f = x₁ + x₂", "indices are letters, not subscript digits", 6),
        (
            "f = x^θ",
            "unexpected 'θ': an exponent is a number, as in x_i^2 or x_i^-1; for a variable exponent write exp(θ",
            7,
        ),
        ("f = x^Φ_nd", "unexpected 'Φ_nd': an exponent is a number", 7),
    ],
)
def test_error_columns_are_the_users_own(source, message, column):
    err = parse_error(source)
    assert message in err.message
    assert err.source == source
    assert_caret(err, column)
    assert err.caret.splitlines()[0] == "  " + source.splitlines()[err.line - 1]


def test_pretty_writes_a_fraction_as_a_factor_that_reads_back():
    from fractions import Fraction

    from einderiv.ir import Div, Mul, Number

    for expr in (Div(Tensor("x"), Number(Fraction(1, 3))), Mul((Tensor("x"), Number(Fraction(1, 3))))):
        value = float(einderiv.evaluate(pretty(expr), x=2.0))
        assert value == pytest.approx(6.0 if isinstance(expr, Div) else 2 / 3, rel=1e-15)
        assert value == pytest.approx(float(einderiv.evaluate(str(expr), x=2.0)), rel=1e-15)


def test_unicode_error_on_a_later_line_keeps_its_line_and_column():
    err = parse_error("θ_i = φ_i\nψ_k = sigmod(θ_k)")
    assert err.line == 2 and err.column == 7
    assert "did you mean sigmoid?" in err.message


PRETTY_CASES = [
    ("K_pq = R_mp R_mq", ["R"], {"R": (4, 3)}),
    ("f = x_i A_ij x_j", ["x", "x"], {"x": (3,), "A": (3, 3)}),
    ("f = x_i x_i x_j x_j", ["x", "x", "x"], {"x": (3,)}),
    ("e_n = y_n - Phi_nd theta_d; L = e_n e_n", ["theta"], {"y": (5,), "Phi": (5, 3), "theta": (3,)}),
    ("L = -y_n log(sigmoid(X_ni w_i)) - (1 - y_n) log(1 - sigmoid(X_ni w_i))", ["w", "w"],
     {"y": (5,), "X": (5, 3), "w": (3,)}),
    ("f = a_i inv(X)_ij b_j + logdet(X) + det(X)", ["X"], {"a": (3,), "X": (3, 3), "b": (3,)}),
    ("z_k = T_kd x_d; L = -y_k z_k + logsumexp_j(z_j)", ["T"], {"T": (4, 3), "x": (3,), "y": (4,)}),
    ("f = sum_i(sqrt(x_i x_i + 1)) + sum_i(arctan(x_i) cosh(x_i))", ["x", "x"], {"x": (3,)}),
    ("y_{in,} = tanh(W_{in,out} x_{out,})", ["W"], {"W": (3, 2), "x": (2,)}),
    ("f = sum_i(exp(x_i)) / 3", ["x"], {"x": (3,)}),
]  # fmt: skip


@pytest.mark.parametrize("source, wrt, shapes", PRETTY_CASES)
def test_pretty_output_reads_back_with_the_same_values(source, wrt, shapes):
    d = einderiv.diff(source, wrt)
    text = d.pretty()
    assert "∂" in text and text != str(d)
    back = einderiv.compile(text)
    arrays = {}
    for name, shape in shapes.items():
        value = rng.uniform(0.2, 0.8, size=shape)
        arrays[name] = value + 3 * np.eye(shape[0]) if len(shape) == 2 and shape[0] == shape[1] else value
    assert back.indices == d.indices
    np.testing.assert_allclose(back(**{k: arrays[k] for k in back.ranks}), d(**arrays), rtol=1e-12, atol=1e-14)
    assert einderiv.parse(text) == einderiv.parse(str(d))


def test_greek_names_in_wrt_and_in_values():
    theta = rng.normal(size=3)
    g = einderiv.grad("f = θ_i θ_i + λ θ_i", "θ")
    np.testing.assert_allclose(g(theta=theta, **{"lambda": 0.5}), 2 * theta + 0.5, rtol=1e-12)
    h = einderiv.hessian("f = θ_i θ_i", "θ_i")
    np.testing.assert_allclose(h(theta=theta), 2 * np.eye(3), rtol=1e-12)
    assert h.pretty() == "∂²f/∂theta_i ∂theta_j = 2 δ_ij"
    assert einderiv.parse(h.pretty()) == einderiv.parse(str(h))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet="abxAXij_{},;=+-*/^()# 01.\n" + "θΦδσΣ√∂²³⁻¹−·×∑⊙ᵀ₁µ\u00a0𝑥", max_size=30))
def test_any_pasted_text_parses_or_is_an_error_with_a_column_in_the_users_text(source):
    try:
        einderiv.parse(source)
    except einderiv.ParseError as err:
        if err.line:
            lines = source.split("\n")
            assert 1 <= err.line <= len(lines)
            assert 1 <= err.column <= len(lines[err.line - 1]) + 1
            assert err.source == source
    except einderiv.EinderivError:
        pass
