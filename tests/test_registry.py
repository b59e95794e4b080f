"""The function registry: one entry per elementwise function, and a function registered at test
time reaches every stage (parser, derivatives, evaluation on every installed backend, LaTeX,
Unicode, matrix notation, each code flavour), checked against NumPy closed forms and central
finite differences in float64; unregistered, the parser rejects it again."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import einderiv
from einderiv import functions
from einderiv.codegen import FLAVOURS, function_code, generate
from einderiv.functions import FUNCTIONS, Enclosing, Function, Helper, Named, registered
from tests.helpers import central_difference, load_module
from tests.test_backends import BACKENDS, _to_numpy

rng = np.random.default_rng(14)


def _softsign(xp):
    return lambda x: x / (1 + xp.abs(x))


#: softsign(u) = u / (1 + |u|), with softsign'(u) = (1 + |u|)^-2: written with abs, which every
#: namespace (numpy, jax.numpy, dask.array, torch) has under that name.
SOFTSIGN = Function(
    "softsign",
    _softsign,
    "(1 + abs(u))^-2",
    Fraction(0),
    latex=r"\mathrm{softsign}",
    code={"python": Helper("return x / (1 + np.abs(x))"), "torch": Helper("return x / (1 + torch.abs(x))")},
)

VALUE = "f = sum_n(softsign(X_ni w_i))"
SHAPES = {"X": (5, 3), "w": (3,)}


def reference_value(X, w):
    """sum_n z_n / (1 + |z_n|) with z = X w, in NumPy."""
    z = X @ w
    return np.sum(z / (1 + np.abs(z)))


def reference_gradient(X, w):
    """X^T (1 + |z|)^-2 with z = X w, in NumPy."""
    z = X @ w
    return X.T @ (1 + np.abs(z)) ** -2


def _arrays():
    return {name: rng.normal(size=shape) for name, shape in SHAPES.items()}


@pytest.fixture
def softsign():
    with registered(SOFTSIGN) as entry:
        yield entry


def test_the_built_in_entries_pass_the_registrars_checks():
    for row in FUNCTIONS.values():
        functions.check(row)
        for flavour in FLAVOURS:
            assert function_code(row.name, flavour) in (row.code[flavour], f"_{row.name}")


def test_a_registered_function_differentiates_and_evaluates_against_numpy(softsign):
    arrays = _arrays()
    compiled = einderiv.compile(VALUE)
    grad = einderiv.grad(VALUE, "w")
    hessian = einderiv.hessian(VALUE, "w")
    np.testing.assert_allclose(compiled(**arrays), reference_value(**arrays), rtol=1e-13)
    np.testing.assert_allclose(grad(**arrays), reference_gradient(**arrays), rtol=1e-12)
    np.testing.assert_allclose(grad(**arrays), central_difference(reference_value, arrays, "w"), rtol=1e-6)
    np.testing.assert_allclose(hessian(**arrays), central_difference(reference_gradient, arrays, "w"), rtol=1e-6)
    jacobian = einderiv.diff("y_n = softsign(X_ni w_i)", "w")
    assert str(jacobian.expr) == "X_nj / (1 + abs(X_ni w_i))^2"


@pytest.mark.parametrize("backend, convert", BACKENDS)
def test_a_registered_function_evaluates_on_every_installed_backend(softsign, backend, convert):
    arrays = _arrays()
    converted = {name: convert(value) for name, value in arrays.items()}
    value = einderiv.compile(VALUE)(**converted)
    gradient = einderiv.grad(VALUE, "w")(**converted)
    np.testing.assert_allclose(_to_numpy(value), reference_value(**arrays), rtol=1e-12)
    np.testing.assert_allclose(_to_numpy(gradient), reference_gradient(**arrays), rtol=1e-12)


def test_a_registered_function_prints_in_latex_unicode_and_matrix_notation(softsign):
    arrays = _arrays()
    compiled = einderiv.compile(VALUE)
    assert compiled.latex() == r"f = \sum_{n} \left(\mathrm{softsign}\left(X_{ni} w_{i}\right)\right)"
    assert compiled.pretty() == "f = Σ_n(softsign(X_ni w_i))"
    assert einderiv.compile(compiled.pretty())(**arrays) == pytest.approx(reference_value(**arrays), rel=1e-13)
    grad = einderiv.grad(VALUE, "w")
    assert (
        grad.latex()
        == r"\frac{\partial f}{\partial w_{j}} = \frac{X_{nj}}{\left(1 + \left|X_{ni} w_{i}\right|\right)^{2}}"
    )
    assert grad.pretty() == "∂f/∂w_j = X_nj / (1 + abs(X_ni w_i))^2"
    assert einderiv.compile("y_n = softsign(X_ni w_i)").matrix() == "y = softsign(X w)"
    # matrix notation read back: a claim, and an input
    assert einderiv.check("f = y_n softsign(X_ni w_i)", "y", expect="softsign(X w)").ok
    read = einderiv.parse("y = softsign(X w)", notation="matrix", ranks={"X": 2, "w": 1})
    assert str(read) == "y_i = softsign(X_ij w_j)"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_registered_function_in_every_code_flavour(softsign, flavour, tmp_path):
    code = generate([einderiv.compile(VALUE), einderiv.grad(VALUE, "w")], flavour)
    assert "def _softsign(x):" in code
    arrays = _arrays()
    if flavour == "python":
        inputs = arrays
    elif flavour == "jax":  # the generated module imports its library: skip before loading it
        jnp = pytest.importorskip("jax.numpy")
        inputs = {name: jnp.asarray(value) for name, value in arrays.items()}
    else:
        torch = pytest.importorskip("torch")
        inputs = {name: torch.as_tensor(value) for name, value in arrays.items()}
    module = load_module(code, tmp_path, f"softsign_{flavour}")
    np.testing.assert_allclose(_to_numpy(module.f(**inputs)), reference_value(**arrays), rtol=1e-12)
    np.testing.assert_allclose(_to_numpy(module.df_dw(**inputs)), reference_gradient(**arrays), rtol=1e-12)


def test_unregistered_the_parser_rejects_it_again():
    with registered(SOFTSIGN):
        einderiv.compile(VALUE)
    assert "softsign" not in FUNCTIONS
    with pytest.raises(einderiv.ParseError, match="unknown function 'softsign'"):
        einderiv.compile(VALUE)
    with pytest.raises(einderiv.EinderivError, match="unknown function 'softsign'"):
        einderiv.check("f = y_n tanh(X_ni w_i)", "y", expect="softsign(X w)")
    with pytest.raises(einderiv.EinderivError, match="not in einderiv.functions"):
        function_code("softsign", "python")
    assert "_softsign" not in generate([einderiv.compile("f = sum_i(tanh(x_i))")], "python")


def _wave(xp):
    return lambda x: xp.sin(x) * xp.cos(x)


#: sin(u) cos(u), with every notation of its own: a Unicode glyph, a LaTeX enclosure and another
#: name in matrix notation.
WAVE = Function(
    "wave",
    _wave,
    "cos(u)^2 - sin(u)^2",
    Fraction(0),
    latex=Enclosing(r"\widetilde{", "}"),
    pretty="∿",
    matrix="wav",
    code={"python": Helper("return np.sin(x) * np.cos(x)"), "torch": Helper("return torch.sin(x) * torch.cos(x)")},
)


def test_every_notation_of_an_entry_comes_from_the_entry():
    x = rng.uniform(-2, 2, size=4)
    with registered(WAVE):
        compiled = einderiv.compile("y_i = wave(x_i)")
        assert compiled.latex() == r"y_{i} = \widetilde{x_{i}}"
        assert compiled.pretty() == "y_i = ∿(x_i)"
        np.testing.assert_allclose(einderiv.compile("y_i = ∿(x_i)")(x=x), np.sin(x) * np.cos(x), rtol=1e-14)
        assert compiled.matrix() == "y = wav(x)"
        assert einderiv.check("f = y_n wave(X_ni w_i)", "y", expect="wav(X w)").ok
        assert str(einderiv.parse("y = wav(x)", notation="matrix", ranks={"x": 1})) == "y_i = wave(x_i)"
        slope = einderiv.diff("y_i = wave(x_i)", "x")
        np.testing.assert_allclose(slope(x=x), np.diag(np.cos(2 * x)), rtol=1e-13, atol=1e-15)


def test_the_registrar_refuses_what_a_stage_could_not_use():
    def entry(**changes):
        fields = {
            "name": "twice",
            "make": lambda xp: lambda x: 2 * x,
            "derivative": "2",
            "at_zero": Fraction(0),
            "code": {"python": Helper("return 2 * x"), "torch": Helper("return 2 * x")},
        }
        return Function(**{**fields, **changes})

    refusals = [
        (entry(name="tanh"), "already registered"),
        (entry(name="sum"), "names a reduction"),
        (entry(name="Twice"), "lowercase letter"),
        (entry(code={"python": Helper("return 2 * x")}), "needs code for the flavours torch"),
        (entry(code={"python": Helper("return 2 *"), "torch": "torch.mul"}), "is not Python"),
        (entry(code={"python": "np.multiply(x, 2)", "torch": "torch.mul"}), "dotted name"),
        (entry(derivative="2 x"), "in u alone"),
        (entry(derivative="mean_i(u)"), "in u alone"),
        (entry(derivative="nosuch(u)"), "unknown function 'nosuch'"),
        (entry(at_zero=Fraction(1)), "not at_zero = 1"),
        (entry(pretty="σ"), "one non-ASCII glyph"),
        (entry(matrix="tr"), "cannot name a function in matrix notation"),
        (entry(matrix="exp"), "already has a function 'exp'"),
    ]
    for function, message in refusals:
        with pytest.raises(einderiv.EinderivError, match=message):
            functions.register(function)
        assert FUNCTIONS.get(function.name) is not function  # a refused entry is not left behind
    assert "twice" not in FUNCTIONS
    with pytest.raises(einderiv.EinderivError, match="built in"):
        functions.unregister("sigmoid")


def _scaled_by(factor: int) -> Function:
    """scaled(u) = factor u."""
    return Function(
        "scaled",
        lambda xp: lambda x: factor * x,
        str(factor),
        Fraction(0),
        code={"python": Helper(f"return {factor} * x"), "torch": Helper(f"return {factor} * x")},
    )


def test_an_entry_registered_again_is_read_afresh():
    x = np.array([0.5, -1.0])
    for factor in (2, 3):
        with registered(_scaled_by(factor)):
            assert str(einderiv.diff("y = scaled(x)", "x").expr) == str(factor)
            np.testing.assert_allclose(einderiv.evaluate("y_i = scaled(x_i)", x=x), factor * x)
            torch = pytest.importorskip("torch")
            value = einderiv.evaluate("y_i = scaled(x_i)", x=torch.as_tensor(x))
            np.testing.assert_allclose(_to_numpy(value), factor * x)


def test_a_function_another_derivative_calls_stays_registered():
    square = Function(
        "square",
        Named("square"),
        "2 scaled(u)",
        Fraction(0),
    )
    with registered(_scaled_by(1)):
        with registered(square):
            with pytest.raises(einderiv.EinderivError, match="the derivative of square calls it"):
                functions.unregister("scaled")
            x = np.array([0.5, -1.0])
            np.testing.assert_allclose(einderiv.grad("f = sum_i(square(x_i))", "x")(x=x), 2 * x)


@pytest.mark.parametrize("name", ["float", "log1mexp", "contract", "added", "invertible", "floats"])
def test_a_function_may_not_take_the_name_of_a_helper_of_generated_code(name):
    """A hunt's find: registered as ``float``, softsign's helper ``_float`` was the generated
    module's own input converter, and the generated code summed x where einderiv summed
    softsign(x) (1.5 for 0.5); ``log1mexp`` took the place of log(-expm1(u)), ``contract`` made the
    code raise.  Such a name is refused, and the registry is left as it was."""
    function = Function(name, _softsign, "(1 + abs(u))^-2", Fraction(0), latex=r"\mathrm{s}", code=SOFTSIGN.code)
    with pytest.raises(einderiv.EinderivError, match="generated module's own"):
        functions.register(function)
    assert name not in FUNCTIONS
