"""Generated code (--format python|jax|torch): standalone, deterministic, lint-clean, and equal to
einderiv's own evaluation (the NumPy runtime, the reference interpreter of the same steps) and to
independent NumPy closed forms, on benign inputs and on extreme ones (0, +-inf, nan, +-1e300),
NaN positions included."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import einderiv
from einderiv.codegen import FLAVOURS, generate, identifier
from einderiv.functions import FUNCTIONS
from tests.helpers import load_module as load


# -- closed forms, written independently, with the IEEE conventions einderiv documents -------------
def _diagonal(values: np.ndarray) -> np.ndarray:
    """diag(values) by writing the diagonal of zeros (an inf stays on it, no NaN off it)."""
    out = np.zeros(values.shape + values.shape)
    out[np.arange(values.size), np.arange(values.size)] = values
    return out


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e, 1) / (1 + e)


def _softmax(z, axis=-1):
    """exp(z) / sum exp(z), shifted by the largest value where that is finite (else by 0)."""
    peak = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(peak), peak, 0))
    return e / e.sum(axis=axis, keepdims=True)


def _finite_or_nan(function):
    """A closed form of matrix functions, NaN everywhere where a matrix has a non-finite entry
    (einderiv's convention: LAPACK is not asked)."""

    def closed(**arrays):
        finite = {k: v if np.all(np.isfinite(v)) else np.eye(len(v)) for k, v in arrays.items() if np.ndim(v) == 2}
        value = function(**{**arrays, **finite})
        return value if all(v is arrays[k] for k, v in finite.items()) else np.full_like(value, np.nan)

    return closed


def _gram(R):
    M, P = R.shape
    out = np.zeros((P, P, M, P))
    k = np.arange(P)
    out[k, :, :, k] += R.T  # delta_jp R_iq
    out[:, k, :, k] += R.T  # R_ip delta_jq
    return out


def _softmax_jacobian(Z):
    P = _softmax(Z)
    N, K = Z.shape
    out = np.zeros((N, K, N, K))
    n, k = np.arange(N)[:, None], np.arange(K)[None, :]
    out[n, k, n, k] = P
    out[np.arange(N), :, np.arange(N), :] -= P[:, :, None] * P[:, None, :]
    return out


def _two_layer(X, W, b, V, Y):
    """As printed, dLdh_kl = 2 o_ko V_lo - 2 Y_ko V_lo; dL/dW_ij = (1 - h_kj^2) dLdh_kj X_ki,
    evaluated as the README's "Evaluation keeps what differentiation expands" says: the residual
    o - Y as the user wrote it, and 1 - h^2 as cosh(X W + b)^-2, so at V = inf the gradient is
    inf (the expanded 2 o V - 2 Y V is inf - inf there)."""
    h = np.tanh(X @ W + b)
    adjoint = 2 * (h @ V - Y) @ V.T
    return X.T @ (adjoint * np.cosh(X @ W + b) ** -2.0)


def _matrix_vector(A, x):
    """df_i/dA_kl = delta_ik x_l, written on the diagonal i = k."""
    out = np.zeros(A.shape[:1] + A.shape)
    out[np.arange(len(A)), np.arange(len(A)), :] = x
    return out


def _block_diagonal(N, block):
    out = np.zeros((N, *block.shape[:1], N, *block.shape[1:]))
    out[np.arange(N), :, np.arange(N), :] = block
    return out


@dataclass(frozen=True)
class Case:
    """A derivative to generate code for: the source, wrt, input shapes, and its closed form."""

    source: str
    wrt: tuple[str, ...]
    shapes: dict
    closed: Callable | None = None
    #: input -> why its extreme values are not compared with the closed form (the runtime
    #: evaluates an algebraically equal arrangement, whose inf - inf is NaN where this one's is inf)
    not_closed_at: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.source} by {','.join(self.wrt)}"


LOGISTIC = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))"
NETWORK = "h_nj = tanh(X_ni W_ij + b_j); o_nk = h_nj V_jk; L = (o_nk - Y_nk)(o_nk - Y_nk)"
SQUARE = np.eye(3)

CASES = [
    Case("K_pq = R_mp R_mq", ("R",), {"R": (4, 3)}, lambda R: _gram(R)),
    Case("f = x_i A_ij x_j", ("x", "x"), {"x": (3,), "A": (3, 3)}, lambda x, A: A + A.T),
    Case("f = x_i A_ij x_j", ("x",), {"x": (3,), "A": (3, 3)}, lambda x, A: A @ x + A.T @ x),
    Case("C_ij = a_i + b_j", ("a",), {"a": (2,), "b": (3,)}, lambda a, b: np.eye(2)[:, None, :] * np.ones((1, 3, 1))),
    Case("C_ij = a_i + b_j", ("b",), {"a": (2,), "b": (3,)}, lambda a, b: np.ones((2, 1, 1)) * np.eye(3)[None]),
    Case(
        LOGISTIC,
        ("w", "w"),
        {"X": (5, 3), "w": (3,), "y": (5,)},
        lambda X, w, y: (X * (_sigmoid(X @ w) * (1 - _sigmoid(X @ w)))[:, None]).T @ X,
    ),
    Case(LOGISTIC, ("w",), {"X": (5, 3), "w": (3,), "y": (5,)}, lambda X, w, y: X.T @ (_sigmoid(X @ w) - y)),
    Case(
        "z_k = T_kd x_d; L = -y_k z_k + logsumexp_j(z_j)",
        ("T",),
        {"T": (4, 3), "x": (3,), "y": (4,)},
        lambda T, x, y: np.multiply.outer(_softmax(T @ x) - y, x),
    ),
    Case(
        "f = a_i inv(X)_ij b_j + logdet(X) + det(X)",
        ("X",),
        {"a": (3,), "X": (3, 3), "b": (3,)},
        _finite_or_nan(
            lambda a, X, b: (
                (1 + np.linalg.det(X)) * np.linalg.inv(X).T
                - np.multiply.outer(np.linalg.solve(X.T, a), np.linalg.solve(X, b))
            )
        ),
    ),
    Case("P_nk = softmax_k(Z_nk)", ("Z",), {"Z": (2, 3)}, lambda Z: _softmax_jacobian(Z)),
    Case(
        "h = relu(x_i) abs(x_i) + softplus(s) + x_i^3 / 2",
        ("x",),
        {"x": (3,), "s": ()},
        lambda x, s: (x > 0) * np.abs(x) + np.maximum(x, 0) * np.sign(x) + 1.5 * x**2,
    ),
    Case("y_i = log(x_i)", ("x",), {"x": (4,)}, lambda x: _diagonal(1 / x)),
    Case("y_i = sqrt(x_i)", ("x",), {"x": (4,)}, lambda x: _diagonal(0.5 / np.sqrt(x))),
    Case("y_i = abs(x_i)", ("x",), {"x": (4,)}, lambda x: _diagonal(np.sign(x))),
    # relu'(x) = step(x), NaN at NaN (as relu(NaN) is): a NaN is never hidden as a 0
    Case("y_i = relu(x_i)", ("x",), {"x": (4,)}, lambda x: _diagonal(np.where(np.isnan(x), x, (x > 0).astype(float)))),
    Case("y_i = sigmoid(x_i)", ("x",), {"x": (4,)}, lambda x: _diagonal(_sigmoid(x) * (1 - _sigmoid(x)))),
    Case(
        "f = logsumexp_i(z_i)",
        ("z", "z"),
        {"z": (4,)},
        lambda z: _diagonal(_softmax(z)) - np.multiply.outer(_softmax(z), _softmax(z)),
    ),
    Case("f = logsumexp_i(z_i)", ("z",), {"z": (4,)}, lambda z: _softmax(z)),
    Case("y_i = inv(X)_ij b_j", ("b",), {"X": (3, 3), "b": (3,)}, _finite_or_nan(lambda X, b: np.linalg.inv(X))),
    Case(
        "y_i = inv(X)_ij b_j",
        ("X",),
        {"X": (3, 3), "b": (3,)},
        _finite_or_nan(lambda X, b: -np.linalg.inv(X)[:, :, None] * np.linalg.solve(X, b)),
    ),
    Case("f = det(X)", ("X",), {"X": (3, 3)}, _finite_or_nan(lambda X: np.linalg.det(X) * np.linalg.inv(X).T)),
    Case(NETWORK, ("W",), {"X": (4, 3), "W": (3, 5), "b": (5,), "V": (5, 2), "Y": (4, 2)}, _two_layer),
    Case("f = sum_k(z_k + s)", ("s",), {"z": (4,), "s": ()}, lambda z, s: np.float64(len(z))),
    Case("f = mean_k(z_k) s", ("s",), {"z": (4,), "s": ()}, lambda z, s: z.sum() / len(z)),
    Case("f = mean_k(z_k) s", ("z",), {"z": (4,), "s": ()}, lambda z, s: np.full(len(z), s / len(z))),
    Case(
        "f = sum_k(z_k + s) + sum_j(q_j s^2)",
        ("s", "s"),
        {"z": (4,), "s": (), "q": (2,)},
        lambda z, s, q: 2 * q.sum(),
    ),
    Case(
        "f = sum_k(z_k + s) + sum_j(q_j s^2)",
        ("s",),
        {"z": (4,), "s": (), "q": (2,)},
        lambda z, s, q: len(z) + 2 * s * q.sum(),
    ),
    Case("L = -0.5 (x_n - m)^2", ("m", "m"), {"x": (5,), "m": ()}, lambda x, m: np.float64(-len(x))),
    Case(
        "L = mean_n((y_n - X_nd w_d)^2)",
        ("w",),
        {"X": (5, 3), "w": (3,), "y": (5,)},
        lambda X, w, y: 2 * X.T @ (X @ w - y) / len(y),
        {"X": "evaluated expanded, -2 mean_n(y_n X_ni) + 2 mean_n(X_nd w_d X_ni): an inf in X gives inf - inf"},
    ),
    Case(
        "E_ab = X_ab - U_ak V_bk; L = E_ab E_ab",
        ("U", "U"),
        {"X": (4, 3), "U": (4, 2), "V": (3, 2)},
        lambda X, U, V: _block_diagonal(4, 2 * V.T @ V),
    ),
    Case("f_i = A_ij x_j", ("A",), {"A": (3, 2), "x": (2,)}, _matrix_vector),
]

SPECIALS = (0.0, np.inf, -np.inf, np.nan, 1e300, -1e300)


def benign(shapes, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        value = rng.uniform(0.2, 0.8, size=shape)
        if len(shape) == 2 and shape[0] == shape[1]:
            value = value + 3 * np.eye(shape[0])
        out[name] = value
    return out


def variants(shapes):
    """(label, arrays): the benign arrays, then each input with one special value in its first
    entry (the whole of a scalar), and each input all zeros."""
    arrays = benign(shapes)
    yield "benign", arrays
    for name in shapes:
        for special in (*SPECIALS, "zeros"):
            changed = {k: v.copy() for k, v in arrays.items()}
            if special == "zeros":
                changed[name] = np.zeros_like(arrays[name])
            elif np.ndim(arrays[name]) == 0:
                changed[name] = np.float64(special)
            else:
                changed[name].flat[0] = special
            yield f"{name}: {special}", changed


def library(flavour: str):
    """(convert to the flavour's arrays, convert a result back to NumPy); skips where not installed."""
    if flavour == "python":
        return np.asarray, np.asarray
    module = pytest.importorskip({"jax": "jax", "torch": "torch"}[flavour])
    if flavour == "jax":
        module.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return jnp.asarray, np.asarray
    return module.as_tensor, lambda t: t.detach().numpy()


def assert_same(got, expected, label: str, rtol=1e-10):
    """Equal up to rounding, with inf and NaN in the same places."""
    got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    assert got.shape == expected.shape, (label, got.shape, expected.shape)
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-12 * max(scale, 1.0), equal_nan=True, err_msg=label)


def quietly(function, *args, **kwargs):
    """The result, or the exception raised (warnings of IEEE arithmetic silenced)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return function(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - compared, not hidden
            return err


def functions_of(module) -> dict[str, Callable]:
    return {name: f for name, f in vars(module).items() if callable(f) and name[0] != "_" and name not in ("np", "oe")}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_generated_code_equals_the_runtime_and_the_closed_form(case, flavour, tmp_path):
    to_library, to_numpy = library(flavour)
    value, derivative = einderiv.compile(case.source), einderiv.diff(case.source, list(case.wrt))
    code = generate([value, derivative], flavour)
    assert code == generate([value, derivative], flavour)  # deterministic
    assert not re.search(r"^\s*(import|from) einderiv", code, flags=re.MULTILINE)  # standalone
    module = load(code, tmp_path, f"generated_{flavour}")
    value_function = getattr(module, identifier(str(value.statement.target.name)))
    derivative_function = next(f for n, f in functions_of(module).items() if n.startswith("d"))
    for label, arrays in variants(case.shapes):
        results = {}
        for compiled, function in ((derivative, derivative_function), (value, value_function)):
            own = {k: arrays[k] for k in compiled.ranks}
            expected = quietly(compiled, **own)
            got = quietly(function, **{k: to_library(v) for k, v in own.items()})
            where = f"{case.id} [{flavour}] at {label}"
            if isinstance(expected, einderiv.EinderivError):  # a singular matrix: an error, NaN where traced
                assert isinstance(got, Exception) or np.all(np.isnan(to_numpy(got))), where
                continue
            assert not isinstance(got, Exception), f"{where}: {got!r}"
            assert_same(to_numpy(got), expected, where)
            results[compiled] = to_numpy(got)
        if case.closed is not None and derivative in results and label.split(":")[0] not in case.not_closed_at:
            closed = quietly(case.closed, **{k: arrays[k] for k in derivative.ranks})
            assert_same(results[derivative], closed, f"{case.id} [{flavour}] against its closed form at {label}")


def test_the_log_jacobian_at_zero_is_zero_off_the_diagonal(tmp_path):
    """The issue's first example: 1/x on the diagonal, inf where x is 0, and 0 off it (not NaN)."""
    jacobian = einderiv.jacobian("y_i = log(x_i)", "x")
    for flavour in FLAVOURS:
        to_library, to_numpy = library(flavour)
        module = load(generate([jacobian], flavour), tmp_path, f"log_{flavour}")
        x = np.array([0.0, 2.0, np.inf, -1.0])
        got = to_numpy(quietly(module.dy_dx, x=to_library(x)))
        expected = np.diag([np.inf, 0.5, 0.0, -1.0])
        np.testing.assert_array_equal(got, expected)


GRADIENTS = [c for c in CASES if len(c.wrt) == 1 and not einderiv.compile(c.source).indices]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("case", GRADIENTS, ids=lambda c: c.id)
def test_value_and_gradient_in_one_function(case, flavour, tmp_path):
    to_library, to_numpy = library(flavour)
    value, gradient = einderiv.compile(case.source), einderiv.grad(case.source, case.wrt[0])
    module = load(generate([gradient], flavour), tmp_path, f"value_and_{flavour}")
    name = next(n for n in functions_of(module) if n.startswith("value_and_"))
    assert name == f"value_and_{next(n for n in functions_of(module) if n.startswith('d'))}"
    both = getattr(module, name)
    for label, arrays in variants(case.shapes):
        inputs = {k: arrays[k] for k in {**value.ranks, **gradient.ranks}}
        result = quietly(both, **{k: to_library(v) for k, v in inputs.items()})
        expected = quietly(gradient, **{k: inputs[k] for k in gradient.ranks})
        if isinstance(expected, einderiv.EinderivError):
            continue  # (a singular matrix: see the test above)
        got_value, got_gradient = result
        assert_same(to_numpy(got_gradient), expected, f"{case.id} [{flavour}] gradient at {label}")
        expected_value = quietly(value, **{k: inputs[k] for k in value.ranks})
        if isinstance(expected_value, einderiv.EinderivError):  # logdet of a matrix whose det is < 0: NaN
            assert np.isnan(to_numpy(got_value)), f"{case.id} [{flavour}] value at {label}: {expected_value}"
            continue
        assert_same(to_numpy(got_value), expected_value, f"{case.id} [{flavour}] value at {label}")


JITTED = ["K_pq = R_mp R_mq", "y_i = log(x_i)", "P_nk = softmax_k(Z_nk)", "f = sum_k(z_k + s)", NETWORK]


def test_jax_modules_run_under_jit(tmp_path):
    """Every function of a jax module traces (no branch on values): jax.jit of it gives einderiv's values."""
    to_library, to_numpy = library("jax")
    import jax

    for k, case in enumerate(c for c in CASES if c.source in JITTED or "inv(X)" in c.source):
        value, derivative = einderiv.compile(case.source), einderiv.diff(case.source, list(case.wrt))
        module = load(generate([value, derivative], "jax"), tmp_path, f"jitted_{k}")
        arrays = {name: to_library(array) for name, array in benign(case.shapes).items()}
        for name, function in functions_of(module).items():
            compiled = value if name == identifier(value.statement.target.name) else derivative
            parameters = function.__code__.co_varnames[: function.__code__.co_argcount]
            own = {n: arrays[n] for n in arrays if identifier(n) in parameters}
            got = jax.jit(function)(**{identifier(n): v for n, v in own.items()})
            got = got[-1] if name.startswith("value_and_") else got
            expected = compiled(**{n: to_numpy(v) for n, v in own.items() if n in compiled.ranks})
            assert_same(to_numpy(got), expected, f"{case.id}: jax.jit({name})")


def test_every_elementwise_function_in_every_flavour(tmp_path):
    """Each row of einderiv.functions, its value and its Jacobian, on a spread of inputs that
    includes 0, +-1, +-inf, nan and +-1e300: the runtime's values, NaN positions included."""
    x = np.array([0.0, 0.3, -0.7, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan, 1e300, -1e300])
    for flavour in FLAVOURS:
        to_library, to_numpy = library(flavour)
        for name in FUNCTIONS:
            source = f"y_i = {name}(x_i)"
            value, jacobian = einderiv.compile(source), einderiv.jacobian(source, "x")
            module = load(generate([value, jacobian], flavour), tmp_path, f"{name}_{flavour}")
            for compiled, function in ((value, module.y), (jacobian, module.dy_dx)):
                expected = quietly(compiled, x=x)
                got = to_numpy(quietly(function, x=to_library(x)))
                huge = np.abs(x) > 1e10  # tan, sin, cos of 1e300: the libraries reduce the argument differently
                if name in ("tan", "sin", "cos") and flavour != "python":
                    mask = ~huge if compiled is value else ~(huge[:, None] | huge[None, :])
                    got, expected = got[mask], expected[mask]
                assert_same(got, expected, f"{source} [{flavour}] {'value' if compiled is value else 'jacobian'}")


# -- the module's shape -----------------------------------------------------------------------------
def helpers_defined(code: str) -> set[str]:
    return set(re.findall(r"^def (_\w+)\(", code, flags=re.MULTILINE))


def test_dK_dR_writes_diagonals_and_carries_only_what_it_uses(tmp_path):
    derivative = einderiv.diff("K_pq = R_mp R_mq", "R")
    code = generate([derivative], "python")
    assert "_eye" not in code and "np.eye" not in code and "identity" not in code and "_ones" not in code
    assert helpers_defined(code) == {"_float"}  # two diagonal writes need no helper (inputs as floats)
    assert "opt_einsum" not in code and "_PLANS" not in code
    assert code.count('np.einsum("pqip->pqi", d1K)[...] +=') == 1
    assert code.count('np.einsum("pqiq->pqi", d1K)[...] +=') == 1
    module = load(code, tmp_path, "gram")
    R = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(module.dK_dR(R=R), _gram(R))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_module_carries_exactly_the_helpers_it_calls(flavour):
    for case in CASES:
        code = generate([einderiv.compile(case.source), einderiv.diff(case.source, list(case.wrt))], flavour)
        for helper in helpers_defined(code):
            assert code.count(f"{helper}(") >= 2, (case.id, helper)  # defined and called
        called = set(re.findall(r"\b(_[a-z]\w*)\(", code))
        assert called <= helpers_defined(code), (case.id, called - helpers_defined(code))
        assert ("import opt_einsum" in code) == ("_contract(" in code)
        assert "_eye" not in code and "_ones" not in code


def test_modules_pass_ruff(tmp_path):
    pytest.importorskip("ruff")
    for flavour in FLAVOURS:
        for k, case in enumerate(CASES):
            derivative = einderiv.diff(case.source, list(case.wrt))
            items = [einderiv.compile(case.source), derivative]
            (tmp_path / f"generated_{flavour}_{k}.py").write_text(generate(items, flavour))
    (tmp_path / "pyproject.toml").write_text("")
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", str(tmp_path)], capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout[-3000:]


def test_parameters_come_in_order_of_first_appearance():
    code = generate([einderiv.compile("f = x_i A_ij x_j"), einderiv.diff("f = x_i A_ij x_j", "x")])
    assert "def f(x, A):" in code and "def df_dx(x, A):" in code and "def value_and_df_dx(x, A):" in code
    program = "z_k = T_kd x_d; L = -y_k z_k + logsumexp_j(z_j)"
    assert "def dL_dT(T, x, y):" in generate([einderiv.grad(program, "T")])
    assert "def value(b, a):" in generate([einderiv.compile("b_i a_i")])


@pytest.mark.parametrize(
    "source, wrt, name",
    [
        ("dist_i = x_i - y_i", ["x"], "ddist_dx"),  # lstrip("d") once made this dist -> ist
        ("ddx = x_i x_i", ["x"], "dddx_dx"),
        ("f = x_i A_ij x_j", ["x", "x"], "d2f_dx_dx"),
        ("x_i x_i", ["x"], "df_dx"),
        ("df/dx_k = A_kj x_j", ["x"], "d2f_dx_dx"),
        ("K_pq = R_mp R_mq", ["R"], "dK_dR"),
    ],
)
def test_derivative_functions_are_named_from_their_root(source, wrt, name):
    assert f"def {name}(" in generate([einderiv.diff(source, wrt)])


def test_value_functions_are_named_from_their_statement():
    assert "def dist(x, y):" in generate([einderiv.compile("dist_i = x_i - y_i")])
    assert "def value(x):" in generate([einderiv.compile("x_i x_i")])
    assert "def df_dx(A, x):" in generate([einderiv.compile("df/dx_k = A_kj x_j")])
    twice = generate([einderiv.compile("f = x_i x_i"), einderiv.compile("f = x_i x_i")])
    assert "def f(x):" in twice and "def f_2(x):" in twice


@pytest.mark.parametrize("n", [1, 3, 7])
def test_counting_indices_take_their_size_from_the_arrays(n, tmp_path):
    """delta_kk (the count of k) is the size of z's axis, read from z, whatever it is."""
    for flavour in FLAVOURS:
        to_library, to_numpy = library(flavour)
        for source, wrt, expected in [
            ("f = sum_k(z_k + s)", ["s"], n),
            ("f = sum_k(z_k + s) + sum_j(q_j s^2)", ["s"], n + 2 * 0.5 * 2),
            ("L = -0.5 (z_n - s)^2", ["s", "s"], -n),
            ("f = mean_k(z_k) s", ["z"], np.full(n, 0.5 / n)),
        ]:
            derivative = einderiv.diff(source, wrt)
            code = generate([derivative], flavour)
            assert "z.shape[0]" in code, (source, code)
            module = load(code, tmp_path, f"count_{flavour}_{n}")
            arrays = {"z": np.linspace(0, 1, n), "s": np.float64(0.5), "q": np.ones(2)}
            own = {k: arrays[k] for k in derivative.ranks}
            function = next(f for name, f in functions_of(module).items() if name.startswith("d"))
            got = to_numpy(function(**{k: to_library(v) for k, v in own.items()}))
            np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=source)
            np.testing.assert_allclose(got, derivative(**own), rtol=1e-12, err_msg=source)


def test_float32_stays_float32(tmp_path):
    derivative = einderiv.diff("K_pq = R_mp R_mq", "R")
    module = load(generate([derivative]), tmp_path, "float32")
    R = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = module.dK_dR(R=R)
    assert got.dtype == derivative(R=R).dtype == np.float32
    np.testing.assert_array_equal(got, derivative(R=R))


def test_results_are_never_an_input(tmp_path):
    module = load(generate([einderiv.compile("y_i = x_i"), einderiv.diff("f = a_i x_i", "x")]), tmp_path, "alias")
    a = np.arange(3.0)
    assert module.y(x=a) is not a and module.df_dx(a=a, x=a) is not a
    assert not np.shares_memory(module.df_dx(a=a, x=a), a)


def test_the_benchmark_script_checks_every_case(capsys):
    """``python -m benchmarks.codegen --quick``: each generated module equals the runtime (no timing)."""
    from benchmarks.codegen import main

    assert main(["--quick", "--budget", "0"]) == 0
    assert "| Jacobian dK/dR, K = R^T R |" in capsys.readouterr().out


def test_names_are_sanitised(tmp_path):
    assert identifier("lambda") == "lambda_" and identifier("sum") == "sum_" and identifier("np") == "np_"
    x = np.ones(3)
    names = einderiv.compile("f = import_i x_i + len_i x_i").ranks  # a keyword and a builtin
    assert set(names) == {"import", "x", "len"}
    derivative = einderiv.diff("f = import_i x_i + len_i x_i", "x")
    module = load(generate([derivative], "python"), tmp_path, "keywords")
    np.testing.assert_allclose(module.df_dx(import_=np.ones(3), len_=np.full(3, 2.0), x=x), np.full(3, 3.0))


def test_cli_python_format():
    result = subprocess.run(
        [sys.executable, "-m", "einderiv", "diff", "K_pq = R_mp R_mq", "--wrt", "R", "--format", "python"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert "def K(R):" in result.stdout and "def dK_dR(R):" in result.stdout


def test_unknown_flavour_is_an_error():
    with pytest.raises(einderiv.EinderivError, match="unknown code flavour"):
        generate([einderiv.compile("f = x_i x_i")], "fortran")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_several_gradients_are_one_function(flavour, tmp_path):
    """``grad(source, [names])`` and ``value_and_grad`` generate one function returning the
    gradients in order (``generate([gradients])`` raised AttributeError before 2026-12-03), checked
    against NumPy's closed form; two zero gradients of different shapes keep their own shapes."""
    to_library, to_numpy = library(flavour)
    source = "h_j = tanh(W_jk x_k); f = sum_j(h_j h_j) / 2 + b W_jk W_jk"
    rng = np.random.default_rng(3)
    W, x, b = rng.normal(size=(3, 4)), rng.normal(size=4), np.float64(0.3)
    h = np.tanh(W @ x)
    slope = h * (1 - h**2)
    expected = (np.outer(slope, x) + 2 * b * W, W.T @ slope, np.sum(W * W))
    module = load(
        generate([einderiv.grad(source, ["W", "x", "b"]), einderiv.value_and_grad(source, ["W", "b"])], flavour),
        tmp_path,
        f"joint_{flavour}",
    )
    got = module.grad_f_W_x_b(*(to_library(a) for a in (W, x, b)))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(to_numpy(g), e, rtol=1e-12)
    value, rest = module.value_and_grad_f_W_b(*(to_library(a) for a in (W, x, b)))  # as value_and_grad returns
    np.testing.assert_allclose(to_numpy(value), np.sum(h * h) / 2 + b * np.sum(W * W), rtol=1e-12)
    for g, e in zip(rest, (expected[0], expected[2])):
        np.testing.assert_allclose(to_numpy(g), e, rtol=1e-12)
    zeros = einderiv.grad("f = sum_i(0 z_j z_j y_i)", ["z", "y"])
    z, y = np.ones(4), np.ones(3)
    assert [np.shape(g) for g in zeros(z=z, y=y)] == [(4,), (3,)]
    module = load(generate([zeros], flavour), tmp_path, f"zeros_{flavour}")
    assert [tuple(np.shape(to_numpy(g))) for g in module.grad_f_z_y(to_library(z), to_library(y))] == [(4,), (3,)]


def test_generate_names_what_it_cannot_take():
    with pytest.raises(einderiv.EinderivError, match="generate takes compiled values"):
        generate(["f = x_i x_i"])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_generated_code_reads_integer_inputs_as_floats(flavour, tmp_path):
    """The generated modules kept integer inputs as integers: the gradient of ``mean_i(x_i)`` at
    x = [1, 2, 3] was [0, 0, 0] and ``x_i / c`` floor-divided (a hunter's find); einderiv reads
    integers as float64."""
    if flavour != "python":
        pytest.importorskip(flavour)
    code = generate([einderiv.diff("f = mean_i(x_i)", "x"), einderiv.compile("y_i = x_i / c")], flavour)
    module = load(code, tmp_path, f"ints_{flavour}")
    x, c = np.array([1, 2, 3]), np.array(2)
    if flavour == "torch":
        import torch

        x, c = torch.as_tensor(x), torch.as_tensor(c)
    np.testing.assert_allclose(np.asarray(module.df_dx(x=x)), [1 / 3] * 3, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(module.y(x=x, c=c)), [0.5, 1.0, 1.5], rtol=1e-15)


def test_a_generated_gradient_by_a_list_of_one_returns_a_tuple_of_one(tmp_path):
    """``grad(source, ["w"])`` returns ``(g,)``; its generated function returned g bare (a
    hunter's find)."""
    source = "L = (x_i w_i - y)^2"
    gradients = einderiv.grad(source, ["w"])
    module = load(generate([gradients], "python"), tmp_path, "one_of_list")
    x, w, y = np.array([1.0, 2.0]), np.array([0.5, -0.25]), np.array(1.0)
    got, want = module.grad_L_w(x=x, w=w, y=y), gradients(x=x, w=w, y=y)
    assert isinstance(got, tuple) and len(got) == 1
    np.testing.assert_allclose(got[0], want[0], rtol=1e-15)


@pytest.mark.parametrize(
    "source, p", [("f = sum_i(x_i^0.5)", 0.5), ("f = sum_i(x_i^(1/3))", 1 / 3), ("f = sum_i(x_i^1.5)", 1.5)]
)
def test_a_fractional_power_in_generated_code_puts_nan_and_inf_where_the_runtime_does(source, p, tmp_path):
    """A meaning hunt's find: generated code wrote ``x ** -0.5``, which is 0 at x = -inf in NumPy
    and jax, where the runtime (and the README) give NaN; and torch's (-0.0)^-0.5, an rsqrt, is
    -inf where IEEE pow gives +inf.  Every flavour, generated and through the runtime, against the
    NumPy closed form p |x|^(p-1), NaN below 0 (inf and NaN in the same places, signs included)."""
    x = np.array([np.nan, np.inf, -np.inf, 1.0, 0.0, -0.0, 2.0, -2.0])
    with np.errstate(all="ignore"):
        expected = np.where(x < 0, np.nan, p * np.abs(x) ** (p - 1))
    gradient = einderiv.grad(source, "x")
    assert_same(quietly(gradient, x=x), expected, "numpy runtime", rtol=1e-15)
    for flavour in FLAVOURS:
        to_library, to_numpy = library(flavour)
        module = load(generate([gradient], flavour), tmp_path, f"power_{flavour}")
        function = next(f for n, f in functions_of(module).items() if n.startswith("d"))
        assert_same(to_numpy(quietly(function, x=to_library(x))), expected, f"{flavour} generated", rtol=1e-15)
        if flavour != "python":
            assert_same(to_numpy(quietly(gradient, x=to_library(x))), expected, f"{flavour} runtime", rtol=1e-15)


def test_generated_torch_takes_float32_beside_integers_as_the_torch_backend_does(tmp_path):
    """float32 X and w beside integer labels y: the generated torch module stopped with
    ``expected scalar type Double but found Float`` (torch.einsum takes no operands of two
    dtypes), where einderiv's torch backend promotes all inputs to float64 as NumPy would.  Now
    both give float64 and the gradient, against jax in float64."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
    gradient = einderiv.grad(source, "w")
    module = load(generate([gradient], "torch"), tmp_path, "mixed_torch")
    gen = np.random.default_rng(3)
    X, w, y = (
        gen.normal(size=(5, 3)).astype(np.float32),
        gen.normal(size=3).astype(np.float32),
        np.array([0, 1, 1, 0, 1]),
    )
    want = jax.grad(lambda w: jax.numpy.sum(jax.nn.softplus(X @ w) - y * (X @ w)))(w.astype(np.float64))
    inputs = {"X": torch.as_tensor(X), "w": torch.as_tensor(w), "y": torch.as_tensor(y)}
    for got in (module.dL_dw(**inputs), module.value_and_dL_dw(**inputs)[1], gradient.call(inputs)):
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_generated_torch_counts_only_the_inputs_whose_values_it_reads_for_the_dtype(tmp_path):
    """A hunt's find: the generated torch module promoted every input, so the gradient of
    ``x_i x_i + s`` (2 x) was float64 for a float32 x beside a float64 s, and the logistic loss's
    Hessian float64 beside a float64 y it reads for its size only, where NumPy, the torch backend
    and the README give float32.  Each against NumPy's float64 closed form."""
    torch = pytest.importorskip("torch")
    x = np.float32([1.5, 2.0, -0.5])
    X, w, y = np.float32([[1, 2], [0.5, -1], [2, 0]]), np.float32([0.3, -0.2]), np.array([1.0, 0.0, 1.0])
    s = np.float64(3.0)
    gradient = einderiv.grad("f = x_i x_i + s", "x")
    hessian = einderiv.hessian("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w")
    module = load(generate([gradient, hessian], "torch"), tmp_path, "read_dtype_torch")
    p = 1 / (1 + np.exp(-(X.astype(np.float64) @ w.astype(np.float64))))
    cases = [
        (module.df_dx, gradient, {"x": x, "s": s}, 2 * x.astype(np.float64)),
        (module.d2L_dw_dw, hessian, {"X": X, "w": w, "y": y}, (X.T * p * (1 - p)) @ X),
    ]
    for generated, compiled, arrays, expected in cases:
        tensors = {name: torch.as_tensor(value) for name, value in arrays.items()}
        for got in (generated(**tensors), compiled.call(tensors)):
            assert got.dtype == torch.float32
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
        assert compiled(**arrays).dtype == np.float32


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_generated_constants_take_the_dtype_of_the_values_read(flavour, tmp_path):
    """Derivatives that are constants (a delta, a number) take the dtype of the arrays whose
    values the result reads, as einderiv's runtime gives it: the Jacobian of f_ij = x_i + y_j by
    x at a float32 x beside a float64 y was float32 in generated python and jax code (the first
    parameter's dtype), float64 in NumPy, torch and generated torch code."""
    to_library, to_numpy = library(flavour)
    x, y = np.float32([1.5, -2.0]), np.array([1.0, 2.0, 3.0])
    jacobian = einderiv.jacobian("f_ij = x_i + y_j", "x")
    constant = einderiv.grad("L = 3 x_i + y_j y_j", "x")
    module = load(generate([jacobian, constant], flavour), tmp_path, f"constant_dtype_{flavour}")
    delta = np.zeros((2, 3, 2))
    delta[[0, 1], :, [0, 1]] = 1.0
    for function, compiled, expected in ((module.df_dx, jacobian, delta), (module.dL_dx, constant, np.full(2, 3.0))):
        want = compiled(x=x, y=y)
        assert want.dtype == np.float64  # NumPy's runtime: float32 beside a float64 it reads
        got = to_numpy(function(x=to_library(x), y=to_library(y)))
        assert got.dtype == want.dtype, (flavour, function.__name__)
        np.testing.assert_array_equal(got, expected)


def test_product_functions_are_named_for_what_they_compute(tmp_path):
    # an HVP was named dd1L, a Hessian diagonal dL (a gradient's name), a JVP and a VJP both ds
    loss, layer = "L = sum_i(exp(w_i) x_i)", "f_i = tanh(A_ij s_j)"
    products = [
        einderiv.hvp(loss, "w"),
        einderiv.hessian_diag(loss, "w"),
        einderiv.jvp(layer, "s"),
        einderiv.vjp(layer, "s"),
        einderiv.hvp("exp(w_i) x_i", "w"),
    ]
    code = generate(products)
    names = ["hvp_L_w", "hessian_diag_L_w", "jvp_f_s", "vjp_f_s", "hvp_w"]
    assert re.findall(r"^def (\w+)\(", code, re.M)[-5:] == names
    rng = np.random.default_rng(0)
    w, x, v, A, s, u = (rng.normal(size=shape) for shape in [3, 3, 3, (4, 3), 3, 4])
    module = load(code, tmp_path, "products")
    np.testing.assert_allclose(module.hvp_L_w(w=w, x=x, v=v), np.exp(w) * x * v, rtol=1e-14)
    np.testing.assert_allclose(module.hessian_diag_L_w(w=w, x=x), np.exp(w) * x, rtol=1e-14)
    slope = 1 - np.tanh(A @ s) ** 2
    np.testing.assert_allclose(module.jvp_f_s(A=A, s=s, v=v), slope * (A @ v), rtol=1e-13)
    np.testing.assert_allclose(module.vjp_f_s(A=A, s=s, u=u), A.T @ (slope * u), rtol=1e-13)
    # a derivative-named statement's product: jvp_df/dx_x was refused as a name
    assert "def jvp_df_dx_x(" in generate([einderiv.jvp("df/dx_k = A_kj x_j", "x")])


@pytest.mark.parametrize(
    "source",
    [
        "f = x_i x_i x_j x_j + c",
        "f = x_i x_i x_j x_j + c y_i",
        "u_ij = T_ijk z_k; v_i = tanh(u_ij x_j); L = v_i v_i + sum_k(exp(z_k)) + c u_ij u_ij",
    ],
)
def test_a_product_takes_every_input_of_what_it_differentiates(source, tmp_path):
    """A hunt's find: the HVP of ``x_i x_i x_j x_j + c`` took x and v only, so its generated
    function refused the keyword c that einderiv's gradient, Hessian diagonal, JVP and VJP of
    the same source take (a TypeError).  Now each product takes every input of its source, here
    and in generated code, and the HVP is the Hessian times v."""
    user = set(einderiv.compile(source).inputs)
    products = [
        einderiv.hvp(source, "x", v="tv"),
        einderiv.hessian_diag(source, "x"),
        einderiv.jvp(source, "x", v="tv"),
        einderiv.vjp(source, "x", u="tu"),
    ]
    for product, extra in zip(products, ["tv", "", "tv", "tu"]):
        assert set(product.inputs) == user | ({extra} if extra else set()), product.inputs
    rng = np.random.default_rng(0)
    shapes = {"x": 3, "c": (), "y": 3, "T": (3, 3, 2), "z": 2}
    arrays = {k: rng.normal(size=shapes[k]) for k in user}
    v = rng.normal(size=3)
    module = load(generate(products[:1]), tmp_path, "every_input")
    function = next(getattr(module, n) for n in dir(module) if n.startswith("hvp_"))
    want = einderiv.hessian(source, "x")(**arrays) @ v
    np.testing.assert_allclose(products[0](**arrays, tv=v), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(function(**arrays, tv=v), want, rtol=1e-12, atol=1e-12)


def test_generated_numpy_code_adds_a_wider_term_without_rounding_it(tmp_path):
    """A hunt's find: the python module added the second term in place (d1f += a), so a float32
    first term rounded a float64 second one (a's 1e-9 was lost) and a complex one raised."""
    derivative = einderiv.grad("f = x_i x_i + a_i x_i", "x")
    module = load(generate([derivative], "python"), tmp_path, "generated_widening")
    x = np.float32([1.5, 2.0, -0.5])
    for a in (np.array([1e-9, 0.5, 3.0]), np.array([1j, 2.0, 0.0])):
        got, expected = module.df_dx(x, a), derivative(x=x, a=a)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    same = module.df_dx(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    np.testing.assert_array_equal(same, [5.0, 8.0])  # the same dtype: added in place, as before


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_generated_code_takes_a_mean_over_an_empty_axis_as_nan(flavour, tmp_path):
    """A hunt's find: the generated 2 * float(n) ** -1 raised ZeroDivisionError at n = 0, where
    einderiv gives NaN (NumPy's mean of nothing)."""
    to_library, to_numpy = library(flavour)
    derivative = einderiv.grad("L = mean_n((y_n - X_nd w_d)^2)", "w")
    module = load(generate([derivative], flavour), tmp_path, f"generated_empty_{flavour}")
    arrays = {"y": np.zeros(0), "X": np.zeros((0, 3)), "w": np.ones(3)}
    expected = quietly(derivative, **arrays)
    got = quietly(module.dL_dw, **{k: to_library(v) for k, v in arrays.items()})
    assert not isinstance(got, Exception), got
    assert np.all(np.isnan(expected)) and np.all(np.isnan(to_numpy(got)))


def _log_sum_exp(u):
    return np.log(np.sum(np.exp(u - u.max()))) + u.max()


@pytest.mark.parametrize(
    ("source", "function", "reference"),
    [
        ("y_i = log(1 + exp(u_i))", "softplus", lambda u: np.logaddexp(0, u)),
        ("y_k = log(softmax_k(u_k))", "log_softmax", lambda u: u - _log_sum_exp(u)),
    ],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_forms_that_hold_up_to_2_pi_i_are_refused_at_complex_values_on_every_path(
    flavour, source, function, reference, tmp_path
):
    """A hunt's find: softplus (which einderiv's rules write for log(1 + exp(u))) is refused at
    complex values on the NumPy path, but torch's logaddexp gave the value 2 pi i off (0.028 +
    4.83i for the principal 0.028 - 1.46i) and a generated python module raised a bare
    TypeError; log(softmax_k(z_k)) at z = [3i, -3i] was -0.68 - 6.14i for NumPy's principal
    -0.68 + 0.14i.  Each is now refused on every path.  Real values are NumPy's closed forms."""
    to, back = library(flavour)
    backend = {"python": None, "jax": "jax", "torch": "torch"}[flavour]
    compiled = einderiv.compile(source)
    module = load(generate([compiled], flavour), tmp_path, f"{function}_{flavour}")
    u = np.array([0.3 + 4j, 1.0, -3j])
    with pytest.raises(einderiv.EvaluationError, match=f"{function} cannot be evaluated at .*complex"):
        compiled(u=to(u)) if backend else compiled(u=u)
    with pytest.raises(TypeError, match=f"{function} cannot be evaluated at complex values"):
        module.y(u=to(u))
    real = u.real.copy()
    np.testing.assert_allclose(back(module.y(u=to(real))), reference(real), rtol=1e-14)
    np.testing.assert_allclose(back(compiled(u=to(real))), reference(real), rtol=1e-14)


@pytest.mark.parametrize("flavour", ["python", "jax"])
def test_a_logsumexp_at_complex_values_is_numpys_principal_log(flavour, tmp_path):
    """The max shift added the largest entry's imaginary part: logsumexp of [10i, 10i] was
    log 2 + 10i, where NumPy's log(sum(exp(w))) is log 2 - 2.566i; the imaginary part is now
    brought into (-pi, pi], on einderiv's paths and in generated code.  Its gradients (softmax,
    sigmoid of it) hold on every branch and are unchanged: e^z / (1 + sum(e^z))."""
    to, back = library(flavour)
    w = np.array([[10j, 10j, 3.0], [1.0, 2 + 7j, -3j]])
    expected = np.log(np.exp(w).sum(axis=1))
    compiled = einderiv.compile("y_n = logsumexp_k(w_nk)")
    np.testing.assert_allclose(back(compiled(w=to(w))), expected, rtol=1e-14)
    module = load(generate([compiled], flavour), tmp_path, f"principal_{flavour}")
    np.testing.assert_allclose(back(module.y(w=to(w))), expected, rtol=1e-14)
    z = np.array([0.3 + 0.2j, -1 + 0.5j, 0.1 - 0.3j])
    gradient = einderiv.grad("f = log(1 + sum_k(exp(z_k)))", "z")
    np.testing.assert_allclose(back(gradient(z=to(z))), np.exp(z) / (1 + np.exp(z).sum()), rtol=1e-14)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_count_beside_a_number_adds_in_every_flavour(flavour, dtype, tmp_path):
    """A hunt's find: ``delta_kk + 0.5 + b_k`` (the length of b, a half, and b's sum) made code
    whose first sum was a Python number, which the NumPy flavour added into: AttributeError.
    Against NumPy, and the dtype einderiv's own evaluation gives."""
    to_library, to_numpy = library(flavour)
    b, c, A = np.arange(4.0, dtype=dtype), np.ones(2, dtype=dtype), np.ones((3, 4), dtype=dtype)
    cases = {
        "f = delta_kk + 0.5 + b_k": ({"b": b}, 4 + 0.5 + b.sum()),
        "f = sum_k(2) - 0.5 + b_k": ({"b": b}, 8 - 0.5 + b.sum()),
        "f = sum_j(-1) + s + A_jk": ({"s": np.array(0.25, dtype=dtype), "A": A}, -3 + 0.25 + A.sum()),
        "f_j = sum_k(2) + 0.5 + b_k + c_j": ({"b": b, "c": c}, 8 + 0.5 + b.sum() + c),
    }
    for k, (source, (arrays, expected)) in enumerate(cases.items()):
        compiled = einderiv.compile(source)
        module = load(generate([compiled], flavour), tmp_path, f"count_number_{flavour}_{k}_{np.dtype(dtype).name}")
        got = module.f(**{name: to_library(value) for name, value in arrays.items()})
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-6, err_msg=source)
        assert np.asarray(to_numpy(got)).dtype == np.asarray(compiled(**arrays)).dtype, source


@pytest.mark.filterwarnings("ignore::einderiv.errors.EinderivWarning")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_code_sizes_an_axis_as_evaluation_does(flavour, tmp_path):
    """A hunt's find: code for a count that lowering wrote (``2 delta_ii s`` after ``t_i = a_i +
    1``: 2 I s) or for an intermediate sized only where a later statement uses it (``t_i = s +
    delta_ij`` is b's length in ``f = t_k b_k``) was refused ("the size of index 'i' is not known
    from an array"), value_and_ functions too, where einderiv evaluates them.  Against NumPy
    closed forms, in every flavour."""
    to_library, to_numpy = library(flavour)
    a, b, s, A = np.arange(1.0, 4.0), np.arange(1.0, 5.0), np.array(0.5), np.arange(9.0).reshape(3, 3)
    cases = [
        (einderiv.compile("t_i = a_i + 1; f = 2 delta_ii s"), {"a": a, "s": s}, 2 * 3 * 0.5, None),
        (einderiv.grad("t_i = s + delta_ij; f = t_k b_k", "b"), {"b": b, "s": s}, np.full(4, 1.5), 1.5 * b.sum()),
        (
            einderiv.grad("t_i = s + delta_ij\nf = sum_i(sum_i(a_i + t_j + delta_ij))", "a"),
            {"a": a, "s": s},
            np.full(3, 9.0),
            9 * a.sum() + 27 * 1.5 + 9,
        ),
        (
            einderiv.grad("t_j = sum_i(-cos(delta_ij))\nf = sum_i(t_i + t_j + A_ii)", "A"),
            {"A": A},
            3 * np.eye(3),
            18 * -(np.cos(1.0) + 2) + 3 * np.trace(A),
        ),
    ]
    # a count its statements write at two axes: one size where they agree, an error where not,
    # as evaluation says (reviews' finds: the code read the first axis, then refused them all)
    for k, (text, arrays, agreeing) in enumerate(
        [
            ("t_i = a_i + 1; u_i = b_i + 1; f = 2 delta_ii s", {"a": a, "b": b, "s": s}, {"b": a}),
            ("t_i = a_i + c_i; f = delta_ii", {"a": a, "c": b}, {"c": a}),
        ]
    ):
        ambiguous = einderiv.compile(text)
        module = load(generate([ambiguous], flavour), tmp_path, f"two_axes_{flavour}_{k}")
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            ambiguous(**arrays)
        with pytest.raises((ValueError, RuntimeError), match="two sizes|size"):
            module.f(**{name: to_library(array) for name, array in arrays.items()})
        fitting = {**arrays, **agreeing}
        expected = ambiguous(**fitting)
        got = module.f(**{name: to_library(array) for name, array in fitting.items()})
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-12)
    for k, (compiled, arrays, expected, value) in enumerate(cases):
        code = generate([compiled], flavour)
        module = load(code, tmp_path, f"sized_{flavour}_{k}")
        functions = [line[4:].split("(")[0] for line in code.splitlines() if line.startswith("def ") and line[4] != "_"]
        given = {name: to_library(array) for name, array in arrays.items()}
        np.testing.assert_allclose(to_numpy(getattr(module, functions[0])(**given)), expected, rtol=1e-12)
        if value is not None:
            both = getattr(module, f"value_and_{functions[0]}")(**given)
            np.testing.assert_allclose(to_numpy(both[0]), value, rtol=1e-12)
            np.testing.assert_allclose(to_numpy(both[1]), expected, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::einderiv.errors.EinderivWarning")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_code_sizes_a_letter_two_statements_write_at_two_lengths_through_its_delta(flavour, tmp_path):
    """A hunt's find: j is a's in ``t = a_j`` and b's in ``f = ... sin(tanh(delta_ji))`` (the
    delta joins it to b's i).  The code sized the derivative's delta array by a's length, as the
    first statement writes j, and the NumPy flavour raised ("collapsing index 'j' don't match");
    so did a JVP of ``t_j = B_jk; f = cos(delta_ji) t_k``.  Against einderiv's own evaluation,
    itself checked against NumPy closed forms."""
    to_library, to_numpy = library(flavour)
    a, b = np.arange(1.0, 4.0), np.arange(1.0, 5.0)
    B, V = np.arange(12.0).reshape(3, 4) / 10, np.ones((3, 4))
    gradient = einderiv.grad("t = a_j; f = mean_k((delta_ki + b_i) t) sin(tanh(delta_ji))", "a")
    # sum_i sum_j sin(tanh(delta_ji)) (1/4 + b_i), the same for each entry of a
    closed = (np.sin(np.tanh(np.eye(4))).sum(axis=0) @ (0.25 + b)) * np.ones(3)
    jvp = einderiv.jvp("t_j = B_jk; f = cos(delta_ji) t_k", "B")
    tangent = np.cos(np.eye(3)).sum() * V.sum()  # sum_ji cos(delta_ji) sum_k t'_k, t' = sum_j V_jk
    for k, (derivative, arrays, expected) in enumerate(
        [(gradient, {"a": a, "b": b}, closed), (jvp, {"B": B, "v": V}, tangent)]
    ):
        np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-12)
        code = generate([derivative], flavour)
        module = load(code, tmp_path, f"two_lengths_{flavour}_{k}")
        name = next(line[4:].split("(")[0] for line in code.splitlines() if line.startswith("def ") and line[4] != "_")
        got = getattr(module, name)(**{key: to_library(value) for key, value in arrays.items()})
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-12)
