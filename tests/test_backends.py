"""Array backends: torch, jax, cupy and dask arrays evaluate in their own library.

Each installed library is checked against NumPy on the same derivative cases (float64, 1e-10
relative), for its dtypes, under its tracer (``jax.jit``, ``torch.compile``), and dask on two
million rows, chunk-wise, with the threaded scheduler and with a two-process LocalCluster.
A library that is not installed skips its tests; CI installs torch, jax and dask.
tests/test_backends_reference.py checks every library against independent references (NumPy
closed forms, JAX autodiff) on extreme and non-finite inputs.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einderiv
from einderiv.backends import array_library, ops_for
from einderiv.runtime import run_with
from tests.generation import call_or_reject, compile_or_reject
from tests.test_properties_functions import programs, random_arrays

EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "150"))


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _cupy_usable() -> bool:
    if not _installed("cupy"):
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device: the backend cannot run here
        return False


if _installed("jax"):
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 agreement needs JAX's 64-bit mode


def _to_torch(a):
    import torch

    return torch.as_tensor(a)


def _to_jax(a):
    import jax.numpy as jnp

    return jnp.asarray(a)


def _to_cupy(a):
    import cupy

    return cupy.asarray(a)


def _to_dask(a):
    import dask.array as da

    return da.from_array(a, chunks=tuple(max(1, s // 2) for s in a.shape))


def _to_numpy(value) -> np.ndarray:
    library = array_library(value)
    if library == "torch":
        return value.detach().cpu().numpy()
    if library == "cupy":
        return value.get()
    if library == "dask":
        return np.asarray(value.compute())
    return np.asarray(value)


BACKENDS = [
    pytest.param("torch", _to_torch, marks=pytest.mark.skipif(not _installed("torch"), reason="torch not installed")),
    pytest.param("jax", _to_jax, marks=pytest.mark.skipif(not _installed("jax"), reason="jax not installed")),
    pytest.param("cupy", _to_cupy, marks=pytest.mark.skipif(not _cupy_usable(), reason="cupy or a GPU absent")),
    pytest.param("dask", _to_dask, marks=pytest.mark.skipif(not _installed("dask"), reason="dask not installed")),
]


def _spd(rng, n):
    m = rng.normal(size=(n, n))
    return m @ m.T + n * np.eye(n)


ZOO = (
    "f_i = exp(x_i) + log1p(x_i x_i) + sin(x_i) cos(x_i) + sqrt(1 + x_i x_i) + softplus(x_i) + tan(x_i)"
    " + sign(x_i) x_i + log(2 + x_i x_i) + step(x_i) x_i + relu(x_i) + abs(x_i) + x_i^3"
)

#: (name, source, wrt, kind, input shapes); the seeds' identities and the issue's cases.
CASES = [
    ("C6 a^T x", "f = a_i x_i", "x", "grad", {"a": (4,), "x": (4,)}),
    ("C7 x^T x", "f = x_i x_i", "x", "hessian", {"x": (4,)}),
    ("C8 x^T A x", "f = x_i A_ij x_j", "x", "hessian", {"x": (4,), "A": (4, 4)}),
    ("C9 A x", "f_i = A_ij x_j", "x", "jacobian", {"A": (3, 4), "x": (4,)}),
    ("C10 a^T X b", "f = a_i X_ij b_j", "X", "grad", {"a": (3,), "X": (3, 4), "b": (4,)}),
    ("C11 x^T B x", "f = x_i B_ij x_j", "x", "grad", {"x": (4,), "B": (4, 4)}),
    ("df/dA", "f_i = A_ij x_j", "A", "jacobian", {"A": (3, 4), "x": (4,)}),
    ("dK/dR", "K_pq = R_mp R_mq", "R", "jacobian", {"R": (3, 4)}),
    (
        "least squares",
        "L = (y_n - Phi_ni theta_i)(y_n - Phi_nj theta_j)",
        "theta",
        "hessian",
        {"y": (6,), "Phi": (6, 3), "theta": (3,)},
    ),
    (
        "least squares grad",
        "L = (y_n - Phi_ni theta_i)(y_n - Phi_nj theta_j)",
        "theta",
        "grad",
        {"y": (6,), "Phi": (6, 3), "theta": (3,)},
    ),
    (
        "logistic grad",
        "L = -y_n log(sigmoid(X_ni w_i)) - (1 - y_n) log(1 - sigmoid(X_ni w_i))",
        "w",
        "grad",
        {"y": (7,), "X": (7, 3), "w": (3,)},
    ),
    (
        "logistic hessian",
        "L = -y_n log(sigmoid(X_ni w_i)) - (1 - y_n) log(1 - sigmoid(X_ni w_i))",
        "w",
        "hessian",
        {"y": (7,), "X": (7, 3), "w": (3,)},
    ),
    ("logdet + a^T inv(X) b", "f = logdet(X) + a_i inv(X)_ij b_j", "X", "hessian", {"X": (3, 3), "a": (3,), "b": (3,)}),
    ("det", "f = det(X)", "X", "grad", {"X": (3, 3)}),
    ("inv", "Y_ij = inv(X)_ij", "X", "jacobian", {"X": (3, 3)}),
    ("logsumexp", "f = logsumexp_i(z_i)", "z", "hessian", {"z": (5,)}),
    ("softmax cross-entropy", "L = -y_k log(softmax_k(T_kj x_j))", "T", "grad", {"y": (3,), "T": (3, 4), "x": (4,)}),
    ("two-layer tanh", "h_k = tanh(W_kj x_j)\nf = v_k h_k", "W", "hessian", {"W": (3, 4), "x": (4,), "v": (3,)}),
    ("elementwise zoo", ZOO, "x", "jacobian", {"x": (5,)}),
]


def _inputs(shapes, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    if "X" in arrays and len(shapes["X"]) == 2 and shapes["X"][0] == shapes["X"][1]:
        arrays["X"] = _spd(rng, shapes["X"][0])
    if "y" in arrays:
        arrays["y"] = (arrays["y"] > 0).astype(float)
    return arrays


def _derivative(source, wrt, kind):
    return {"grad": einderiv.grad, "hessian": einderiv.hessian, "jacobian": einderiv.jacobian}[kind](source, wrt)


@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize("name, source, wrt, kind, shapes", CASES, ids=[c[0] for c in CASES])
def test_backends_agree_with_numpy(backend, convert, name, source, wrt, kind, shapes):
    derivative = _derivative(source, wrt, kind)
    arrays = _inputs(shapes)
    expected = derivative(**arrays)
    value = derivative(**{k: convert(v) for k, v in arrays.items()})
    assert array_library(value) == backend  # computed in the inputs' library, not converted back
    got = _to_numpy(value)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(expected).max()))
    # the compiled value (not only the derivative) goes through the same path
    compiled = einderiv.compile(source)
    np.testing.assert_allclose(
        _to_numpy(compiled(**{k: convert(v) for k, v in arrays.items()})), compiled(**arrays), rtol=1e-10
    )


@pytest.mark.parametrize("backend, convert", BACKENDS)
def test_dtypes_follow_the_inputs(backend, convert):
    derivative = einderiv.hessian("f = x_i A_ij x_j + sigmoid(x_i) x_i", "x")
    rng = np.random.default_rng(1)
    x, a = rng.normal(size=3), rng.normal(size=(3, 3))
    single = derivative(x=convert(x.astype(np.float32)), A=convert(a.astype(np.float32)))
    assert str(single.dtype).endswith("float32")
    np.testing.assert_allclose(_to_numpy(single), derivative(x=x, A=a), rtol=1e-4)
    mixed = derivative(x=convert(x.astype(np.float32)), A=convert(a))
    assert str(mixed.dtype).endswith("float64")  # float32 with float64: float64, as NumPy promotes
    integers = einderiv.grad("f = x_i A_ij x_j", "x")(x=convert(np.arange(3)), A=convert(np.eye(3, dtype=np.int64)))
    assert str(integers.dtype).endswith("float64")  # integers and booleans are promoted to float64
    np.testing.assert_array_equal(_to_numpy(integers), 2 * np.arange(3.0))


def test_numpy_dtypes_follow_the_same_rule():
    grad = einderiv.grad("f = x_i A_ij x_j", "x")
    assert grad(x=np.ones(3, np.float32), A=np.eye(3, dtype=np.float32)).dtype == np.float32
    assert grad(x=np.arange(3), A=np.eye(3, dtype=np.int64)).dtype == np.float64
    assert grad(x=np.ones(3, bool), A=np.eye(3)).dtype == np.float64


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # dask's tasks compute log(0) and exp(1000) unguarded
@pytest.mark.parametrize("backend, convert", BACKENDS)
def test_deltas_keep_non_finite_values_on_the_diagonal(backend, convert):
    """The diagonal is placed by where(i == j, ...), not a product with an identity matrix,
    whose inf * 0 would put NaN off the diagonal."""
    x = np.array([0.0, 1.0, 2.0])
    jacobian = einderiv.jacobian("f_i = log(x_i)", "x")
    expected = jacobian(x=x)
    assert np.isinf(expected[0, 0]) and not np.isnan(expected).any()
    np.testing.assert_array_equal(_to_numpy(jacobian(x=convert(x))), expected)
    hessian = einderiv.hessian("f = sum_i(exp(x_i))", "x")
    big = np.array([1000.0, 1.0, 2.0])
    np.testing.assert_allclose(_to_numpy(hessian(x=convert(big))), hessian(x=big), rtol=1e-15)  # NaN fails


@pytest.mark.parametrize("backend, convert", BACKENDS)
def test_a_constant_in_a_sum_is_the_dimension_not_an_identity_matrix(backend, convert, monkeypatch):
    """``sum_n((y_n - 1)^2)`` has a term ``delta_nn``: the number N, never an N x N matrix."""
    ops = ops_for(backend)

    def no_identity(n, like):
        raise AssertionError(f"an {n} x {n} identity was built")

    monkeypatch.setattr(ops, "eye_mask", no_identity)
    y = np.random.default_rng(5).normal(size=50_000)
    compiled = einderiv.compile("L = sum_n((y_n - 1)(y_n - 1))")
    np.testing.assert_allclose(_to_numpy(compiled(y=convert(y))), np.sum((y - 1) ** 2), rtol=1e-12)
    gradient = einderiv.grad("L = sum_n((y_n - 1)(y_n - 1)) + sum_n(y_n)", "y")
    np.testing.assert_allclose(_to_numpy(gradient(y=convert(y))), 2 * (y - 1) + 1, rtol=1e-12)


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_a_non_square_torch_matrix_declared_symmetric_is_named_so():
    # said "index 'l' has two sizes: 3 (from a) and 4 (from A axis 1)", where NumPy names the declaration
    import torch

    gradient = einderiv.grad("f = a_i A_ij b_j", "A", symmetric=["A"])
    ones = {name: torch.ones(shape, dtype=torch.float64) for name, shape in {"a": 3, "A": (3, 4), "b": 4}.items()}
    with pytest.raises(einderiv.EvaluationError, match=r"'A' is declared symmetric but has shape \(3, 4\), not square"):
        gradient(**ones)


@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize(
    "source, kind, matrix",
    [
        ("f = logdet(S)", "symmetric", "S"),
        ("f = a_i inv(S)_ij a_j", "symmetric", "S"),
        ("f = B_ij D_ji", "diagonal", "D"),
    ],
)
def test_another_librarys_matrix_is_checked_as_declared(backend, convert, source, kind, matrix):
    """A hunt's find: a torch or JAX S that is not symmetric gave the symmetric gradient's
    number, silently, where a NumPy S is an error; a dask array's numbers are not at hand."""
    rng = np.random.default_rng(8)
    bad = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    good = bad + bad.T if kind == "symmetric" else np.diag(np.diag(bad))
    others = {"a": rng.normal(size=4), "B": rng.normal(size=(4, 4))}
    gradient = einderiv.grad(source, matrix, **{kind: [matrix]})
    arrays = {n: convert(v) for n, v in others.items() if n in gradient.ranks}
    expected = gradient(**{n: v for n, v in others.items() if n in gradient.ranks}, **{matrix: good})
    np.testing.assert_allclose(_to_numpy(gradient(**arrays, **{matrix: convert(good)})), expected, rtol=1e-12)
    if backend == "dask":
        return
    with pytest.raises(einderiv.EvaluationError, match=f"'{matrix}' is declared {kind}, but"):
        gradient(**arrays, **{matrix: convert(bad)})


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_torch_results_never_share_memory_with_inputs():
    import torch

    a = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    transposed = einderiv.evaluate("f_ji = A_ij", A=a)
    transposed += 100  # a view of A would change A
    assert torch.equal(a, torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    ones = einderiv.grad("f = sum_i(x_i)", "x")(x=torch.ones(3, dtype=torch.float64))
    ones += 1  # a stride-0 broadcast view would refuse this
    assert ones.tolist() == [2.0, 2.0, 2.0]
    same = einderiv.evaluate("f_i = x_i", x=a[0])
    assert same is not a[0] and same.data_ptr() != a.data_ptr()


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_torch_conversions_and_constants_go_to_the_inputs_device():
    """On a "meta" device (what a GPU run exercises: every operand must be on one device)."""
    import torch

    x = torch.ones(3, device="meta", dtype=torch.float64)
    grad = einderiv.grad("f = x_i A_ij x_j + lam x_i x_i", "x")
    value = grad.call({"x": x, "A": np.eye(3), "lam": 0.5}, backend="torch")  # NumPy and a number, converted
    assert value.device.type == "meta" and value.shape == (3,)
    jacobian = einderiv.jacobian("f_i = s x_i", "x")  # constants (the identity mask) on x's device
    assert jacobian(s=2.0, x=x).device.type == "meta"
    with pytest.raises(einderiv.EvaluationError, match="'x' and 'A' are on different devices"):
        grad(x=x, A=torch.eye(3, dtype=torch.float64), lam=0.5)


@pytest.mark.parametrize("backend, convert", BACKENDS)
def test_integers_count_as_float64_beside_float32(backend, convert):
    grad = einderiv.grad("f = x_i A_ij x_j", "x")
    x = np.ones(3, np.float32)
    assert grad(x=x, A=np.eye(3, dtype=bool)).dtype == np.float64  # the NumPy rule
    for matrix in (np.eye(3, dtype=bool), np.eye(3, dtype=np.int64), np.eye(3, dtype=np.int16)):
        assert str(grad(x=convert(x), A=convert(matrix)).dtype).endswith("float64")
    scaled = einderiv.compile("f_i = s x_i")  # a Python float is float64 (NumPy's reading of it)
    assert scaled(x=x, s=2.0).dtype == np.float64
    assert str(scaled(x=convert(x), s=2.0).dtype).endswith("float64")
    assert str(scaled(x=convert(x), s=convert(np.float32(2.0))).dtype).endswith("float32")
    # an input the derivative does not read (d(x_i x_i + s)/dx = 2 x) does not widen it, as on NumPy
    unread = einderiv.grad("f = x_i x_i + s", "x")
    assert unread(x=x, s=2.0).dtype == np.float32
    assert str(unread(x=convert(x), s=2.0).dtype).endswith("float32")
    assert str(unread(x=convert(x), s=convert(np.float64(2.0))).dtype).endswith("float32")
    # an input read for its size only does not widen it either (a hunt's find: the Hessian of a
    # float32 logistic loss was float32 on NumPy and float64 on torch and jax beside a float64 y,
    # which sizes its n; 2 x + 0 n_j was float64 on NumPy, the logistic Hessian float32) ...
    sized = einderiv.grad("f = x_i x_i + n_j n_j", "x")
    n = np.ones(4)
    assert sized(x=x, n=n).dtype == np.float32
    assert str(sized(x=convert(x), n=convert(n)).dtype).endswith("float32")
    hessian = einderiv.hessian("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w")
    X, y = np.ones((5, 3), np.float32), np.ones(5)
    assert hessian(X=X, w=x, y=y).dtype == np.float32
    assert str(hessian(X=convert(X), w=convert(x), y=convert(y)).dtype).endswith("float32")
    # ... but where the result reads values of none (the gradient of sum_i(x_i) is ones), the
    # inputs it takes its sizes from give its dtype
    ones = einderiv.grad("f = sum_i(x_i) + s", "x")
    assert ones(x=x, s=np.float64(2.0)).dtype == np.float32
    assert str(ones(x=convert(x), s=convert(np.float64(2.0))).dtype).endswith("float32")


@pytest.mark.skipif(not _installed("dask"), reason="dask not installed")
def test_dask_singular_matrix_raises_our_error_from_compute():
    import dask.array as da

    lazy = einderiv.evaluate("Y_ij = inv(X)_ij", X=da.zeros((3, 3)))
    with pytest.raises(einderiv.EvaluationError, match=r"inv\(X\): the matrix 'X' is singular"):
        lazy.compute()
    solve = einderiv.evaluate("y_i = inv(X)_ij b_j", X=da.zeros((3, 3)), b=da.ones(3))
    with pytest.raises(einderiv.EvaluationError, match="singular"):
        solve.compute()


def test_backend_argument_errors():
    grad = einderiv.grad("f = x_i x_i", "x")
    with pytest.raises(einderiv.EvaluationError, match="unknown backend of type ndarray"):
        grad.call({"x": np.ones(2)}, backend=np.ones(2))
    # an input named backend goes through call(), and evaluate() says so
    assert einderiv.compile("f = backend_i backend_i").call({"backend": np.ones(3)}) == 3.0
    with pytest.raises(einderiv.EvaluationError, match=r"input named 'backend', use Compiled.call"):
        einderiv.evaluate("f = backend_i backend_i", backend=np.ones(3))


# -- choosing the backend ---------------------------------------------------------------------------


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_mixed_libraries_are_an_error_and_backend_converts_numpy():
    import torch

    grad = einderiv.grad("f = x_i A_ij x_j", "x")
    x, a = np.arange(3.0), np.eye(3)
    with pytest.raises(einderiv.EvaluationError, match=r"different array libraries: 'x' is a torch array, 'A' is a "):
        grad(x=torch.as_tensor(x), A=a)
    value = grad.call({"x": torch.as_tensor(x), "A": a}, backend="torch")  # NumPy inputs converted
    assert isinstance(value, torch.Tensor)
    np.testing.assert_array_equal(value.numpy(), 2 * x)
    converted = einderiv.evaluate("f_i = A_ij x_j", backend="torch", x=x, A=a)
    assert isinstance(converted, torch.Tensor)
    with pytest.raises(einderiv.EvaluationError, match="unknown backend 'tensorflow'; the backends are numpy, torch"):
        grad.call({"x": x, "A": a}, backend="tensorflow")
    if _installed("jax"):
        with pytest.raises(einderiv.EvaluationError, match="'x' is a torch array; backend='jax' converts NumPy"):
            grad.call({"x": torch.as_tensor(x), "A": a}, backend="jax")


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_backend_errors_name_the_input_or_matrix():
    import torch

    grad = einderiv.grad("f = x_i A_ij x_j", "x")
    with pytest.raises(einderiv.EvaluationError, match="input 'A' has 1 axes"):
        grad(x=torch.ones(3), A=torch.ones(3))
    with pytest.raises(einderiv.EvaluationError, match="index 'j' has two sizes"):
        grad(x=torch.ones(3), A=torch.ones(3, 4))
    with pytest.raises(einderiv.EvaluationError, match=r"inv\(X\): the matrix 'X' is singular"):
        einderiv.evaluate("y_i = inv(X)_ij b_j", X=torch.zeros(3, 3, dtype=torch.float64), b=torch.ones(3))
    with pytest.raises(einderiv.EvaluationError, match=r"logdet\(X\): 'X' has shape \(2, 3\), not a square"):
        einderiv.evaluate("f = logdet(X)", X=torch.ones(2, 3))
    # no value-dependent error in traceable code: logdet of a negative determinant is NaN
    assert torch.isnan(einderiv.evaluate("f = logdet(X)", X=-torch.eye(3, dtype=torch.float64)))


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_stable_forms_stay_finite_on_torch():
    import torch

    z = torch.tensor([-1000.0, 0.0, 1000.0], dtype=torch.float64)
    logistic = einderiv.evaluate("f_i = log(sigmoid(z_i))", z=z)
    np.testing.assert_allclose(logistic.numpy(), [-1000.0, -np.log(2.0), 0.0], atol=1e-12)
    lse = einderiv.hessian("f = logsumexp_i(z_i)", "z")(z=z)
    assert torch.isfinite(lse).all()
    np.testing.assert_allclose(lse.numpy(), einderiv.hessian("f = logsumexp_i(z_i)", "z")(z=z.numpy()), atol=1e-15)


# -- tracing ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not _installed("jax"), reason="jax not installed")
def test_jax_jit_traces_the_evaluation():
    import jax
    import jax.numpy as jnp

    for _, source, wrt, kind, shapes in CASES:
        derivative = _derivative(source, wrt, kind)
        arrays = _inputs(shapes, seed=3)
        jitted = jax.jit(lambda **kw: derivative(**kw))  # noqa: B023 - called within the iteration
        value = jitted(**{k: jnp.asarray(v) for k, v in arrays.items()})
        assert isinstance(value, jax.Array)
        np.testing.assert_allclose(np.asarray(value), derivative(**arrays), rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_torch_compile_captures_one_graph():
    import torch

    source = "L = -y_n log(sigmoid(X_ni w_i)) - (1 - y_n) log(1 - sigmoid(X_ni w_i))"
    hessian = einderiv.hessian(source, "w")
    arrays = _inputs({"y": (20,), "X": (20, 3), "w": (3,)}, seed=4)
    # fullgraph: dynamo traces all of einderiv's evaluation without a break
    compiled = torch.compile(lambda X, y, w: hessian(X=X, y=y, w=w), backend="eager", fullgraph=True)
    value = compiled(*(torch.as_tensor(arrays[k]) for k in ("X", "y", "w")))
    np.testing.assert_allclose(value.numpy(), hessian(**arrays), rtol=1e-10)
    # a Python number beside the tensors, and a delta placed on the diagonal
    jacobian = einderiv.jacobian("f_i = s x_i + x_i x_i", "x")
    traced = torch.compile(lambda x, s: jacobian(x=x, s=s), backend="eager", fullgraph=True)
    x = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(traced(torch.as_tensor(x), 2.0).numpy(), np.diag(2.0 + 2 * x), rtol=1e-15)


# -- the generic path, checked on NumPy against the fast path ---------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_generic_path_matches_the_numpy_path(data):
    """The backend-independent evaluator (no in-place writes: deltas as identity matrices),
    run with NumPy's namespace, against the NumPy fast path, over generated programs."""
    program = data.draw(programs())
    compiled = compile_or_reject(program)
    arrays = random_arrays(data.draw(st.integers(0, 2**16)))
    wrt = data.draw(st.sampled_from(sorted(compiled.ranks) or ["s"]))
    targets = [compiled]
    if wrt in compiled.ranks:
        try:
            targets.append(einderiv.diff(program, wrt))
        except einderiv.EinderivError:
            pass
    ops = ops_for("numpy")
    for target in targets:
        given = {k: arrays[k] for k in target.ranks}
        with np.errstate(all="ignore"):
            expected = call_or_reject(target, None if target is compiled else program, **given)
            values = dict(given)
            like = next(iter(values.values()), np.zeros(()))
            got = run_with(target.line, values, ops, like)[target.program.output]
        assert np.shape(got) == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


LIBRARIES = [(name, convert) for name, convert in (("torch", _to_torch), ("jax", _to_jax)) if _installed(name)]


@pytest.mark.skipif(not LIBRARIES, reason="neither torch nor jax installed")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_generated_programs_agree_on_torch_and_jax(data):
    """Generated programs (every elementwise function, powers, division, sum_i, intermediates)
    and their derivatives, evaluated by torch or JAX, against NumPy."""
    program = data.draw(programs())
    compiled = compile_or_reject(program)
    arrays = random_arrays(data.draw(st.integers(0, 2**16)))
    name, convert = data.draw(st.sampled_from(LIBRARIES))
    targets = [compiled]
    wrt = data.draw(st.sampled_from(sorted(compiled.ranks) or ["s"]))
    if wrt in compiled.ranks:
        try:
            targets.append(einderiv.diff(program, wrt))
        except einderiv.EinderivError:
            pass
    for target in targets:
        given = {k: arrays[k] for k in target.ranks}
        with np.errstate(all="ignore"):
            expected = call_or_reject(target, None if target is compiled else program, **given)
        got = target.call({k: convert(v) for k, v in given.items()}, backend=name)
        assert array_library(got) == name
        np.testing.assert_allclose(_to_numpy(got), expected, rtol=1e-9, atol=1e-9)


# -- dask: two million rows, chunk-wise ---------------------------------------------------------------

ROWS, FEATURES, CHUNK = 2_000_000, 8, 100_000
LEAST_SQUARES = "L = (y_n - X_ni w_i)(y_n - X_nj w_j)"
LOGISTIC = "L = -y_n log(sigmoid(X_ni w_i)) - (1 - y_n) log(1 - sigmoid(X_ni w_i))"


CLOSED_FORMS = {
    LEAST_SQUARES: lambda x, y, w: -2 * x.T @ (y - x @ w),
    LOGISTIC: lambda x, y, w: x.T @ (1 / (1 + np.exp(-(x @ w))) - y),
}


def _big_problem():
    import dask.array as da

    rng = da.random.default_rng(7)
    x = rng.standard_normal((ROWS, FEATURES), chunks=(CHUNK, FEATURES))
    noise = rng.standard_normal(ROWS, chunks=CHUNK)
    target = x @ np.linspace(-1, 1, FEATURES) + 0.5 * noise
    return x, target.rechunk(CHUNK), (target > 0).astype(np.float64).rechunk(CHUNK)


@pytest.mark.skipif(not _installed("dask"), reason="dask not installed")
def test_dask_gradients_over_two_million_rows_are_chunk_wise():
    import dask
    from dask.callbacks import Callback

    class LargeResults(Callback):
        """The layers whose tasks return more than two row-vectors' worth of a chunk."""

        def __init__(self):
            super().__init__()
            self.layers: set[str] = set()
            self.tasks = 0

        def _posttask(self, key, result, dsk, state, worker_id):
            self.tasks += 1
            if getattr(result, "nbytes", 0) > 2 * CHUNK * 8:
                self.layers.add(key[0] if isinstance(key, tuple) else key)

    x, target, labels = _big_problem()
    x_np, target_np, labels_np = dask.compute(x, target, labels)
    w = np.linspace(0.2, -0.1, FEATURES)
    for source, y, y_np in ((LEAST_SQUARES, target, target_np), (LOGISTIC, labels, labels_np)):
        grad = einderiv.grad(source, "w")
        lazy = grad.call({"X": x, "y": y, "w": w}, backend="dask")
        assert array_library(lazy) == "dask" and lazy.shape == (FEATURES,)
        with LargeResults() as watch, dask.config.set(scheduler="threads"):
            value = lazy.compute()
        # only the input's own chunks are that large: nothing N x D (or a chunk of it) is made
        assert watch.layers == {x.name}, watch.layers
        assert watch.tasks >= ROWS // CHUNK
        expected = grad(X=x_np, y=y_np, w=w)
        np.testing.assert_allclose(value, expected, rtol=1e-10)
        closed = CLOSED_FORMS[source](x_np, y_np, w)  # the notes' -2 X^T (y - X w) and X^T (s - y)
        np.testing.assert_allclose(value, closed, rtol=1e-9)


def _cluster_gradients(x, target, labels, w):
    out = []
    for source, y in ((LEAST_SQUARES, target), (LOGISTIC, labels)):
        out.append(einderiv.grad(source, "w").call({"X": x, "y": y, "w": w}, backend="dask").compute())
    return out


@pytest.mark.skipif(not _installed("distributed"), reason="dask.distributed not installed")
def test_dask_distributed_local_cluster_with_two_workers():
    import dask
    from dask.distributed import Client, LocalCluster

    x, target, labels = _big_problem()
    w = np.linspace(0.2, -0.1, FEATURES)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert len(client.scheduler_info()["workers"]) == 2
        values = _cluster_gradients(x, target, labels, w)  # .compute() runs on the cluster's workers
        x_np, target_np, labels_np = dask.compute(x, target, labels)
    for source, y_np, value in zip((LEAST_SQUARES, LOGISTIC), (target_np, labels_np), values):
        np.testing.assert_allclose(value, einderiv.grad(source, "w")(X=x_np, y=y_np, w=w), rtol=1e-10)


@pytest.mark.parametrize("library, convert", BACKENDS)
@pytest.mark.parametrize(
    "source, wrt",
    [("f = det(A)", None), ("f = logdet(A)", None), ("B_ij = inv(A)_ij", None), ("x_i = inv(A)_ij b_j", None),
     ("f = logdet(A)", "A"), ("f = a_i inv(A)_ij b_j", "b")],
)  # fmt: skip
def test_a_matrix_with_an_infinite_entry_gives_nan_on_every_library(library, convert, source, wrt):
    """With inf on the diagonal, LAPACK's LU gave torch, jax and dask numbers (inv [[0, 0], [0,
    0.5]], det inf) where the NumPy path and the README say NaN (a hunter's find)."""
    A, a, b = np.array([[np.inf, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0]), np.array([0.5, 2.0])
    compiled = einderiv.diff(source, wrt) if wrt else einderiv.compile(source)
    arrays = {k: v for k, v in {"A": A, "a": a, "b": b}.items() if k in compiled.inputs}
    assert np.isnan(compiled(**arrays)).all()
    got = _to_numpy(compiled(**{k: convert(v) for k, v in arrays.items()}))
    assert np.isnan(got).all(), got


@pytest.mark.parametrize("library, convert", BACKENDS)
def test_several_gradients_are_computed_by_the_arrays_library(library, convert):
    """``grad(source, [names])`` had no ``.call`` (an AttributeError for ``backend=``), and torch
    tensors came back as NumPy arrays, where a compiled value computes with their library (a
    hunter's find)."""
    arrays = {"x": np.array([1.0, 2.0]), "w": np.array([0.5, 0.5]), "y": np.array(1.0)}
    gradients = einderiv.grad("L = (x_i w_i - y)^2", ["w", "y"])
    want = gradients(**arrays)
    np.testing.assert_allclose(want[0], [1.0, 2.0])
    native = gradients(**{k: convert(v) for k, v in arrays.items()})
    assert [array_library(g) for g in native] == [library, library]
    for got, expected in zip(native, want):
        np.testing.assert_allclose(_to_numpy(got), expected, rtol=1e-12)
    called = gradients.call(arrays, backend=library)
    assert [array_library(g) for g in called] == [library, library]
    value, (g_w,) = einderiv.value_and_grad("L = (x_i w_i - y)^2", ["w"]).call(arrays, backend=library)
    np.testing.assert_allclose(_to_numpy(value), 0.25)
    np.testing.assert_allclose(_to_numpy(g_w), [1.0, 2.0])


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_a_numpy_array_with_negative_strides_converts_to_torch():
    """A hunt's find: backend='torch' with x[::-1] raised torch's ValueError (no negative strides)."""
    x = np.arange(4.0)[::-1]
    got = einderiv.grad("f = x_i x_i", "x").call({"x": x}, backend="torch")
    np.testing.assert_array_equal(_to_numpy(got), 2 * x)
    A = np.arange(12.0).reshape(3, 4)[::-1, ::-2]
    np.testing.assert_array_equal(_to_numpy(einderiv.evaluate("y_i = A_ij", A=A, backend="torch")), A.sum(1))


@pytest.mark.parametrize("backend, convert", BACKENDS)
@pytest.mark.parametrize("source, wrt", [("f = logdet(S)", "S"), ("f = b_i inv(S)_ij b_j", "S"), ("f = det(S)", "S")])
def test_a_float16_matrix_is_factorised_in_float32_as_on_numpy(backend, convert, source, wrt):
    """A hunt's find: float16 matrices raised torch's RuntimeError, JAX's NotImplementedError and
    a TypeError from dask, where NumPy factorises them in float32 and returns float16."""
    S, b = (np.eye(3) * 2 + 0.1).astype(np.float16), np.ones(3, dtype=np.float16)
    gradient = einderiv.grad(source, wrt)
    arrays = {"S": S, "b": b}
    own = {k: v for k, v in arrays.items() if k in gradient.ranks}
    expected = gradient(**own)
    got = gradient(**{k: convert(v) for k, v in own.items()})
    assert str(getattr(got, "dtype", "")).endswith("float16")
    np.testing.assert_allclose(_to_numpy(got).astype(float), expected.astype(float), rtol=2e-3)


@pytest.mark.skipif(not _installed("torch"), reason="torch not installed")
def test_a_librarys_refusal_is_an_evaluation_error_naming_it():
    """torch has no max of a complex tensor: its NotImplementedError left the API as it was."""
    import torch

    with pytest.raises(einderiv.EvaluationError, match=r"torch cannot evaluate step .*NotImplementedError"):
        einderiv.grad("f = logsumexp_i(z_i)", "z")(z=torch.tensor([1 + 1j, 2.0]))


@pytest.mark.skipif(not _installed("dask"), reason="dask not installed")
@pytest.mark.parametrize("chunks", [(2, 3), (3, 2), (1, 3), (2, 2)])
def test_a_dask_matrix_read_on_its_diagonal_may_be_cut_unevenly(chunks):
    """A hunt's find: t = X_ii raised dask's ValueError where X's two axes were cut differently."""
    import dask.array as da

    X = np.arange(9.0).reshape(3, 3)
    X = X + X.T + np.eye(3)  # symmetric, for the gradient by a symmetric S below
    lazy = da.from_array(X, chunks=chunks)
    assert einderiv.compile("t = X_ii")(X=lazy).compute() == pytest.approx(np.trace(X), abs=0)
    np.testing.assert_array_equal(einderiv.compile("d_i = X_ii")(X=lazy).compute(), np.diag(X))
    gradient = einderiv.grad("f = A_ij S_ji", "S", symmetric=["S"], symmetric_convention="cookbook")
    A = X.T + 2
    np.testing.assert_allclose(gradient(A=da.from_array(A, chunks=chunks), S=lazy).compute(), gradient(A=A, S=X))
