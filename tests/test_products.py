"""HVPs, JVPs, VJPs and Hessian diagonals against jax autodiff in float64 (jax.jvp of jax.grad,
jax.jvp, jax.vjp, the diagonal of jax.hessian), on textbook models, at extreme inputs, and on
random programs (hypothesis); and that none of them forms the whole derivative."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import einderiv
from einderiv.contraction import contraction_for
from einderiv.runtime import run

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

from test_program_oracle import (  # noqa: E402
    INPUTS,
    SETTINGS,
    assert_close,
    check_read_back,
    make_inputs,
    needed,
    programs,
)

rng = np.random.default_rng(7)
N, D, H, K = 40, 5, 4, 3


def logistic(X, y, w):
    return jnp.sum(jax.nn.softplus(X @ w) - y * (X @ w))


def two_layer(X, y, W1, W2):
    return 0.5 * jnp.sum((jnp.tanh(X @ W1) @ W2 - y) ** 2)


def softmax_ce(X, Y, W):
    Z = X @ W
    return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=1))


ARRAYS = {
    "X": rng.normal(size=(N, D)),
    "y": rng.random(N),
    "w": rng.normal(size=D),
    "A": rng.normal(size=(D, D)),
    "x": rng.normal(size=D),
    "W1": 0.5 * rng.normal(size=(D, H)),
    "W2": 0.5 * rng.normal(size=H),
    "W": rng.normal(size=(D, K)),
    "Y": np.eye(K)[rng.integers(0, K, N)],
}

#: (name, source, reference function, its arguments in order, wrt)
SCALARS = [
    ("logistic", "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", logistic, ("X", "y", "w"), "w"),
    (
        "logistic program",
        "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -y_n log(s_n) - (1 - y_n) log(1 - s_n)",
        lambda X, y, w: -jnp.sum(y * jax.nn.log_sigmoid(X @ w) + (1 - y) * jax.nn.log_sigmoid(-(X @ w))),
        ("X", "y", "w"),
        "w",
    ),
    ("least squares", "L = (y_n - X_nd w_d)^2", lambda X, y, w: jnp.sum((y - X @ w) ** 2), ("X", "y", "w"), "w"),
    ("quadratic form", "f = x_i A_ij x_j", lambda x, A: x @ A @ x, ("x", "A"), "x"),
    (
        "two-layer tanh, by W1",
        "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2",
        two_layer,
        ("X", "y", "W1", "W2"),
        "W1",
    ),
    (
        "two-layer tanh, by W2",
        "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2",
        two_layer,
        ("X", "y", "W1", "W2"),
        "W2",
    ),
    (
        "softmax cross-entropy",
        "Z_nk = X_nd W_dk; L = -Y_nk log(softmax_k(Z_nk))",
        softmax_ce,
        ("X", "Y", "W"),
        "W",
    ),
]


def reference(function, names, arrays, wrt):
    """The reference as a function of wrt alone, and wrt's value."""
    position = names.index(wrt)

    def of(value):
        args = [jnp.asarray(arrays[n]) for n in names]
        args[position] = value
        return function(*args)

    return of, jnp.asarray(arrays[wrt])


@pytest.mark.parametrize(("name", "source", "function", "names", "wrt"), SCALARS, ids=[c[0] for c in SCALARS])
def test_hvp_is_jax_jvp_of_grad(name, source, function, names, wrt):
    arrays = dict(ARRAYS)
    arrays["v"] = rng.normal(size=arrays[wrt].shape)
    of, at = reference(function, names, arrays, wrt)
    expected = jax.jvp(jax.grad(of), (at,), (jnp.asarray(arrays["v"]),))[1]
    product = einderiv.hvp(source, wrt)
    assert product.shape_for({k: v.shape for k, v in needed(product, arrays).items()}) == arrays[wrt].shape
    assert_close(product(**needed(product, arrays)), expected, f"hvp of {name}")


@pytest.mark.parametrize(("name", "source", "function", "names", "wrt"), SCALARS, ids=[c[0] for c in SCALARS])
def test_hessian_diag_is_the_diagonal_of_jax_hessian(name, source, function, names, wrt):
    of, at = reference(function, names, ARRAYS, wrt)
    full = np.asarray(jax.hessian(of)(at))
    size = ARRAYS[wrt].size
    expected = np.diag(full.reshape(size, size)).reshape(ARRAYS[wrt].shape)
    diagonal = einderiv.hessian_diag(source, wrt)
    assert_close(diagonal(**needed(diagonal, ARRAYS)), expected, f"Hessian diagonal of {name}")


@pytest.mark.parametrize(("name", "source", "function", "names", "wrt"), SCALARS, ids=[c[0] for c in SCALARS])
def test_vjp_of_a_scalar_with_cotangent_is_a_scaled_gradient(name, source, function, names, wrt):
    arrays = {**ARRAYS, "u": np.array(-1.7)}
    of, at = reference(function, names, arrays, wrt)
    expected = jax.vjp(of, at)[1](jnp.asarray(-1.7))[0]
    product = einderiv.vjp(source, wrt)
    assert_close(product(**needed(product, arrays)), expected, f"vjp of {name}")


#: tensor outputs: (name, source, reference, arguments, wrt)
TENSORS = [
    ("K = R^T R", "K_pq = R_mp R_mq", lambda R: R.T @ R, ("R",), "R"),
    ("sigmoid of a product", "z_n = X_nd w_d; s_n = sigmoid(z_n)", lambda X, w: jax.nn.sigmoid(X @ w), ("X", "w"), "w"),
    ("softmax rows", "P_nk = softmax_k(X_nd W_dk)", lambda X, W: jax.nn.softmax(X @ W, axis=1), ("X", "W"), "W"),
    ("inverse", "B_ij = inv(M)_ij", lambda M: jnp.linalg.inv(M), ("M",), "M"),
    ("hidden layer", "h_nk = tanh(X_nd W1_dk)", lambda X, W1: jnp.tanh(X @ W1), ("X", "W1"), "W1"),
]


@pytest.mark.parametrize(("name", "source", "function", "names", "wrt"), TENSORS, ids=[c[0] for c in TENSORS])
def test_jvp_and_vjp_are_jax_jvp_and_vjp(name, source, function, names, wrt):
    arrays = {**ARRAYS, "R": rng.normal(size=(6, 4)), "M": 3 * np.eye(4) + 0.3 * rng.normal(size=(4, 4))}
    of, at = reference(function, names, arrays, wrt)
    tangent = rng.normal(size=arrays[wrt].shape)
    value, expected_jvp = jax.jvp(of, (at,), (jnp.asarray(tangent),))
    cotangent = rng.normal(size=np.shape(value))
    expected_vjp = jax.vjp(of, at)[1](jnp.asarray(cotangent))[0]
    forward = einderiv.jvp(source, wrt)
    assert_close(forward(**needed(forward, {**arrays, "v": tangent})), expected_jvp, f"jvp of {name}")
    backward = einderiv.vjp(source, wrt)
    assert_close(backward(**needed(backward, {**arrays, "u": cotangent})), expected_vjp, f"vjp of {name}")


def test_products_are_right_at_extreme_logits():
    # logits of +-1000: the logistic HVP and Hessian diagonal are finite (s (1 - s) underflows to 0)
    X = np.array([[1000.0, 1.0], [-1000.0, 2.0], [0.5, -0.25]])
    y, w, v = np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.5]), np.array([0.3, -2.0])
    source = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -y_n log(s_n) - (1 - y_n) log(1 - s_n)"
    of, at = reference(SCALARS[1][2], ("X", "y", "w"), {"X": X, "y": y, "w": w}, "w")
    expected = np.asarray(jax.jvp(jax.grad(of), (at,), (jnp.asarray(v),))[1])
    assert np.all(np.isfinite(expected))
    assert_close(einderiv.hvp(source, "w")(X=X, y=y, w=w, v=v), expected, "hvp at logits +-1000")
    diagonal = np.diag(np.asarray(jax.hessian(of)(at)))
    assert_close(einderiv.hessian_diag(source, "w")(X=X, y=y, w=w), diagonal, "Hessian diagonal at logits +-1000")


def test_non_finite_inputs_propagate_as_jax_does():
    X = np.array([[np.inf, 1.0], [np.nan, 2.0], [0.5, -0.25]])
    y, w, v = np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.5]), np.array([0.3, -2.0])
    source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
    of, at = reference(logistic, ("X", "y", "w"), {"X": X, "y": y, "w": w}, "w")
    expected = np.asarray(jax.jvp(jax.grad(of), (at,), (jnp.asarray(v),))[1])
    got = einderiv.hvp(source, "w")(X=X, y=y, w=w, v=v)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))


def test_the_hvp_and_the_diagonal_never_form_a_hessian():
    # every array the evaluation computes is at most N x D or D: no D x D array appears
    X, y, w, v = ARRAYS["X"], ARRAYS["y"], ARRAYS["w"], rng.normal(size=D)
    source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
    for product, arrays in (
        (einderiv.hvp(source, "w"), {"X": X, "y": y, "w": w, "v": v}),
        (einderiv.hessian_diag(source, "w"), {"X": X, "y": y, "w": w}),
    ):
        values = dict(arrays)
        run(product.line, values)
        shapes = {name: np.shape(value) for name, value in values.items() if name not in arrays}
        assert all(shape != (D, D) for shape in shapes.values()), shapes
        assert product.indices == tuple(product.wrt[0].indices)


def test_the_two_layer_hvp_contracts_the_data_with_the_tangent_once():
    # X_ik V_ko appears in two terms of the HVP's adjoint (and as X V W2 in a third): one N x H
    # product, so the HVP costs three N x D x H matrix products (forward, tangent, back), where the
    # gradient costs two; opt_einsum's own FLOP counts, for the shapes alone
    source = "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2"
    n, d, h = 2000, 200, 64
    shapes = {"X": (n, d), "y": (n,), "W1": (d, h), "W2": (h,)}

    def flops(text: str) -> float:
        return float(text.splitlines()[-1].split(", ")[1].split()[0])

    matmul = 2 * n * d * h
    gradient = flops(einderiv.grad(source, "W1").explain(shapes))
    product = flops(einderiv.hvp(source, "W1", v="V").explain({**shapes, "V": (d, h)}))
    assert gradient == pytest.approx(2 * matmul, rel=0.05)
    assert product < 3.4 * matmul, product / matmul  # 4 products before


def test_a_shared_pair_is_not_forced_where_another_product_is_cheaper():
    # A_ij B_jk C_k + A_ij B_jk D_k: each term is A (B c), two matrix-vector products; forming A B
    # (n^3) once would cost more than both
    source = "f_i = A_ij B_jk C_k + A_ij B_jk D_k"
    text = einderiv.compile(source).explain({"A": (300, 300), "B": (300, 300), "C": (300,), "D": (300,)})
    assert "'ij,jk->ik'" not in text, text
    A, B, C, D = (rng.normal(size=s) for s in [(5, 5), (5, 5), (5,), (5,)])
    np.testing.assert_allclose(einderiv.evaluate(source, A=A, B=B, C=C, D=D), A @ B @ (C + D), rtol=1e-12)


def test_printed_products_read_back():
    arrays = {**ARRAYS, "v": rng.normal(size=D)}
    source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
    for product in (einderiv.hvp(source, "w"), einderiv.hessian_diag(source, "w"), einderiv.vjp(source, "w")):
        read = einderiv.compile(str(product))
        values = {**arrays, "u": np.array(1.0)}
        assert_close(read(**needed(read, values)), product(**needed(product, values)), str(product))


COUNTED = [  # a scalar parameter added to every entry: its derivatives count x's length N
    "f = sum_i((x_i + lam)^2)",
    "t_i = x_i + lam; f = t_i t_i",
    "f = sum_i((x_i - lam)^2) + lam^2",
    "t_i = x_i - lam; f = sum_i(t_i t_i) / 2 + lam^3",
]


@pytest.mark.parametrize("source", COUNTED)
def test_products_that_count_a_dimension_read_back(source):
    """Each product of a loss with a parameter added to N entries counts N (``2 delta_ii v``, the
    HVP by lam): its printed text sizes that count, through the user's statements printed before
    it, and reads back with NumPy's numbers.  It stopped with "the size of index 'i' cannot be
    inferred" before 2026-12-03 (the product's statement is not derivative-named)."""
    x, lam, v, u = np.array([0.3, -1.2, 2.0, 0.7]), 0.4, 1.7, -0.6
    n, total = len(x), float(np.sum(x - lam))
    cubic = "lam^3" in source
    hessian = 2 * n + (0 if "lam^2" not in source else 2) if not cubic else n + 6 * lam
    gradient = {
        "f = sum_i((x_i + lam)^2)": 2 * np.sum(x + lam),
        "t_i = x_i + lam; f = t_i t_i": 2 * np.sum(x + lam),
        "f = sum_i((x_i - lam)^2) + lam^2": -2 * total + 2 * lam,
        "t_i = x_i - lam; f = sum_i(t_i t_i) / 2 + lam^3": -total + 3 * lam**2,
    }[source]
    expected = {"hvp": hessian * v, "hessian_diag": hessian, "jvp": gradient * v, "vjp": gradient * u}
    for kind, value in expected.items():
        product = getattr(einderiv, kind)(source, "lam")
        arrays = {"x": x, "lam": lam, "v": v, "u": u}
        if kind in ("hvp", "hessian_diag"):
            assert "delta_" in str(product), (kind, str(product))  # the count is printed
        read = einderiv.compile(str(product))
        np.testing.assert_allclose(read(**needed(read, arrays)), value, rtol=1e-12, err_msg=str(product))
        np.testing.assert_allclose(product(**needed(product, arrays)), value, rtol=1e-12, err_msg=kind)


@pytest.mark.parametrize(
    "source, wrt, kind, expected",
    [  # NumPy closed forms at x = z = [0.5, 1, 2, 3], c = 0.7, lam = 0.3, u = 1.5, v = reversed x
        ("f = sum_j(c lam z_j)", "z", "vjp", lambda x, v: 0.7 * 0.3 * 1.5 * np.ones(4)),
        ("f = sum_k(x_k)^2", "x", "vjp", lambda x, v: 2 * x.sum() * 1.5 * np.ones(4)),
        ("f = sum_k(x_k)^2", "x", "hvp", lambda x, v: 2 * v.sum() * np.ones(4)),
        ("f = sum_k(x_k)^2", "x", "hessian_diag", lambda x, v: 2 * np.ones(4)),
    ],
)
def test_a_product_constant_along_an_axis_reads_back(source, wrt, kind, expected):
    """A product with wrt's shape that its text writes on no tensor (``udfdz_i = c lam u``) prints
    ``+ 0 z_i``, as a zero prints ``0 z_i``, so that its text reads back with wrt's shape; it
    stopped with "left-hand side index 'i' appears in no term" before 2026-12-03."""
    x = np.array([0.5, 1.0, 2.0, 3.0])
    arrays = {"z": x, "x": x, "c": 0.7, "lam": 0.3, "u": 1.5, "v": x[::-1].copy()}
    product = getattr(einderiv, kind)(source, wrt)
    np.testing.assert_allclose(product(**needed(product, arrays)), expected(x, arrays["v"]), rtol=1e-12)
    read = einderiv.compile(str(product))
    np.testing.assert_allclose(read(**needed(read, arrays)), expected(x, arrays["v"]), rtol=1e-12)


@pytest.mark.parametrize(
    "source, expected",
    [  # NumPy closed forms: h does not depend on x, or is constant along an axis of h
        ("t1_i = x_i; h_ij = tanh(z_j - y_i)", lambda x, z, y, v: np.zeros((4, 4))),
        ("h_ij = tanh(z_j - y_i) + x_i", lambda x, z, y, v: np.repeat(v[:, None], 4, axis=1)),
        ("h_ij = x_i z_j + y_i", lambda x, z, y, v: np.outer(v, z)),
    ],
)
def test_a_jvp_that_is_zero_or_constant_along_an_output_axis_reads_back(source, expected):
    """A JVP has the output's shape: zero, it prints ``0 h_ij`` after the output's statement (it
    printed ``dhdxv_ij = 0``, which stopped with "left-hand side index 'i' appears in no term");
    constant along an axis, it gets ``+ 0 h_ij`` (19 of 1,200 probe products, 2026-12-03)."""
    rng = np.random.default_rng(3)
    arrays = {name: rng.normal(size=4) for name in ("x", "z", "y", "v")}
    product = einderiv.jvp(source, "x")
    want = expected(arrays["x"], arrays["z"], arrays["y"], arrays["v"])
    np.testing.assert_allclose(product(**needed(product, arrays)), want, rtol=1e-12, atol=1e-15)
    read = einderiv.compile(str(product))
    np.testing.assert_allclose(read(**needed(read, arrays)), want, rtol=1e-12, atol=1e-15, err_msg=str(product))


def test_a_count_is_sized_by_the_statements_before_it():
    """Read back, a letter a statement writes only in deltas has the size the statements before
    it write it at (a count has no other size), and two sizes there are an error that says so."""
    x, y = np.ones(3), np.ones(4)
    assert einderiv.evaluate("t_i = x_i + 1; c = 2 delta_ii", x=x) == 6
    with pytest.raises(einderiv.EvaluationError, match="'i' cannot be inferred: the statements before it write it"):
        einderiv.evaluate("t_i = x_i; w_i = y_i; c = delta_ii", x=x, y=y)
    with pytest.raises(einderiv.EvaluationError, match="'i' cannot be inferred: it appears only in deltas"):
        einderiv.evaluate("c = delta_ii")


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_random_programs_products_by_a_scalar_agree_with_jax_and_read_back(program, seed):
    """Products by the scalar input s, where the derivatives count dimensions (s added to a
    vector): jax's numbers, and the printed text reads back with them."""
    assume("s" in program.used)
    note(program.source)
    arrays = make_inputs(seed)
    rest = {k: jnp.asarray(v) for k, v in arrays.items() if k != "s"}

    def of(value):
        return program.function({**rest, "s": value})

    at = jnp.asarray(arrays["s"])
    if not np.isfinite(np.asarray(of(at))):
        return
    values = {**arrays, "tv": np.array(1.3), "cu": np.array(-0.7)}
    expected = {
        "hvp": jax.jvp(jax.grad(of), (at,), (jnp.asarray(1.3),))[1],
        "hessian_diag": jax.hessian(of)(at),
        "jvp": jax.jvp(of, (at,), (jnp.asarray(1.3),))[1],
        "vjp": -0.7 * jax.grad(of)(at),
    }
    named = {"hvp": {"v": "tv"}, "jvp": {"v": "tv"}, "vjp": {"u": "cu"}, "hessian_diag": {}}
    for kind, value in expected.items():
        try:
            with einderiv.limited(max_size=20_000):  # (at the default 100,000 one program took minutes)
                product = getattr(einderiv, kind)(program.source, "s", **named[kind])
        except einderiv.DifferentiationError as err:
            # a derivative that outgrows the size limit is refused with this clear error, by design
            # (t3_k = logsumexp_i(log1p(t1_ik^2) t1_ki t1_ik) under two tanh/softplus layers)
            assume("max_size" not in str(err))
            raise
        assert_close(product(**needed(product, values)), value, f"{kind} of {program.source}")
        check_read_back(product, values, f"{kind} of {program.source}")


@pytest.mark.parametrize(
    "source",
    [
        # hypothesis found this: the vjp named t3 - t3 a residual and printed r_j = t1_j - t1_j
        # and dfdt1_j = 0, which is not valid input (index 'j' appears in no term)
        "t1_j = softmax_j(cos(0.5) (s + 0.5) + v_j); t3 = t1_j t1_j; f = mean_ik((t3 - t3) + M_ik)",
        "t1_j = softmax_j(s + v_j); t3 = t1_j t1_j; f = sum_i((2 t3 - t3 - t3 + 1) x_i)",
    ],
)
def test_products_of_a_difference_that_cancels_read_back(source):
    """A difference whose terms cancel is no residual to name: each product is jax's (0, as f
    does not depend on s) and its printed text reads back."""
    arrays = {"s": np.array(0.3), "v": rng.normal(size=3), "M": rng.normal(size=(3, 2)), "x": rng.normal(size=4)}
    values = {**arrays, "tv": np.array(1.3), "cu": np.array(-0.7)}
    t1 = jax.nn.softmax(jnp.asarray(arrays["v"]) + 0.3)
    assert float(jnp.sum(t1 * t1)) > 0  # t3 is no zero itself
    for kind, named in [("vjp", {"u": "cu"}), ("jvp", {"v": "tv"}), ("hvp", {"v": "tv"}), ("grad", {})]:
        product = getattr(einderiv, kind)(source, "s", **named)
        assert_close(product(**needed(product, values)), 0.0, f"{kind} of {source}")
        read = einderiv.compile(str(product))  # raised IndexRuleError for the vjp
        assert_close(read(**needed(read, values)), 0.0, f"{kind} of {source}, read back:\n{product}")
        check_read_back(product, values, f"{kind} of {source}")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: einderiv.hvp("f = x_i A_ij v_j", "x"), "'v' is already a name"),
        (lambda: einderiv.hvp("f = x_i A_ij x_j", "x", v="A"), "'A' is already a name"),
        (lambda: einderiv.hvp("K_pq = R_mp R_mq", "R"), "hvp needs a scalar output"),
        (lambda: einderiv.hvp("f = x_i x_i", "x", v="v_i"), "letters and digits"),
        (lambda: einderiv.jvp("f = x_i x_i", "q"), "does not occur"),
        (lambda: einderiv.vjp("y_i = x_i", "x", u="x"), "'x' is already a name"),
        (lambda: einderiv.hessian_diag("y_i = x_i^2", "x"), "needs a scalar output"),
    ],
)
def test_bad_requests_are_clear_errors(call, message):
    with pytest.raises(einderiv.EinderivError, match=message):
        call()


@SETTINGS
@given(programs(), st.integers(0, 2**16), st.data())
def test_random_programs_hvp_and_diagonal_agree_with_jax(program, seed, data):
    vectors = [name for name in sorted(program.used) if INPUTS[name] in ("vI", "vJ")]
    assume(vectors)
    wrt = data.draw(st.sampled_from(vectors), label="wrt")
    note(program.source)
    arrays = make_inputs(seed)
    rest = {k: jnp.asarray(v) for k, v in arrays.items() if k != wrt}

    def of(value):
        return program.function({**rest, wrt: value})

    at = jnp.asarray(arrays[wrt])
    if not np.isfinite(np.asarray(of(at))):
        return
    tangent = np.random.default_rng(seed).normal(size=arrays[wrt].shape)
    product = einderiv.hvp(program.source, wrt, v="tv")
    expected = jax.jvp(jax.grad(of), (at,), (jnp.asarray(tangent),))[1]
    assert_close(product(**needed(product, {**arrays, "tv": tangent})), expected, f"hvp of {program.source}")
    diagonal = einderiv.hessian_diag(program.source, wrt)
    expected = np.diag(np.asarray(jax.hessian(of)(at)))
    assert_close(diagonal(**needed(diagonal, arrays)), expected, f"Hessian diagonal of {program.source}")


def test_symmetric_assembly_of_a_gram_product_is_the_product():
    from einderiv.contraction import SymmetricGram, contraction_for

    generator = np.random.default_rng(5)
    A = generator.normal(size=(300, 260))
    w = generator.normal(size=300)  # weights of either sign
    A[3, 7], w[11] = np.nan, np.inf  # non-finite entries land where the plain product puts them
    gram = contraction_for("n,ni,nj->ij", [w.shape, A.shape, A.shape])
    assert isinstance(gram, SymmetricGram)
    expected = np.einsum("n,ni,nj->ij", w, A, A)
    np.testing.assert_allclose(gram(w, A, A), expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    B = generator.normal(size=A.shape)  # two different arrays: no symmetry to use
    plain = np.einsum("n,ni,nj->ij", w, A, B)
    np.testing.assert_allclose(gram(w, A, B), plain, rtol=1e-10, atol=1e-10, equal_nan=True)
    unweighted = contraction_for("ni,nj->ij", [A.shape, A.shape])
    np.testing.assert_allclose(unweighted(A, A), np.einsum("ni,nj->ij", A, A), rtol=1e-10, atol=1e-10, equal_nan=True)
    assert contraction_for("n,ni,nj->ji", [w.shape, A.shape, A.shape]) is not None  # transposed output: plain
    # finite weights of either sign (and of one sign, and none): BLAS's syrk on the positive and
    # negative rows; a NaN in A lands on its row and column, as in the plain product
    for finite in (generator.normal(size=300), generator.random(300), -generator.random(300), np.zeros(300)):
        expected = np.einsum("n,ni,nj->ij", finite, A, A)
        np.testing.assert_allclose(gram(finite, A, A), expected, rtol=1e-10, atol=1e-10, equal_nan=True)
        w32, A32 = finite.astype(np.float32), A.astype(np.float32)
        np.testing.assert_allclose(gram(w32, A32, A32), expected, rtol=1e-3, atol=1e-2, equal_nan=True)
    small = contraction_for("n,ni,nj->ij", [(50,), (50, 20), (50, 20)])
    assert not isinstance(small, SymmetricGram)  # too small to pay
    # the array A is scaled into is kept for the next call and written again, never read stale
    C, positive = generator.normal(size=A.shape), generator.random(300)
    for M, weights in ((C, positive), (A, positive), (C, 2 * positive), (C, positive)):
        expected = np.einsum("n,ni,nj->ij", weights, M, M)
        np.testing.assert_allclose(gram(weights, M, M), expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert gram._spares
    gram.drop()
    assert not gram._spares


def test_a_large_logistic_hessian_is_assembled_from_its_upper_triangle():
    generator = np.random.default_rng(6)
    X, y, w = generator.normal(size=(400, 300)) / 17, generator.random(400), generator.normal(size=300)
    hessian = einderiv.hessian("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w")
    got = hessian(X=X, y=y, w=w)
    s = 1 / (1 + np.exp(-X @ w))
    np.testing.assert_allclose(got, (X * (s * (1 - s))[:, None]).T @ X, rtol=1e-10, atol=1e-13)
    plans = [
        repr(p[2])
        for step in hessian.line.steps
        if step.contraction
        for plan in step.contraction._plans.values()
        for p in plan[0]
    ]
    assert any("symmetric Gram" in text for text in plans), plans


def test_a_row_scaling_is_not_taken_for_a_gram_product():
    # A_ii A_ij -> ij: the summed-looking letter is an output letter (review finding: A^T A came back)
    A = np.random.default_rng(8).normal(size=(256, 256))
    np.testing.assert_allclose(einderiv.evaluate("Y_ij = A_ii A_ij", A=A), np.diag(A)[:, None] * A, rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("Y_ij = A_ji A_jj", A=A), A.T * np.diag(A)[None, :], rtol=1e-12)


def test_a_tangent_named_like_an_adjoint_is_refused():
    source = "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2 + 0.1 h_nk h_nk"
    with pytest.raises(einderiv.DifferentiationError, match="'dLdh' is already a name.*v='dLdh2'"):
        einderiv.hvp(source, "W1", v="dLdh")


def test_the_tangent_has_the_dimensions_of_what_it_multiplies():
    product = einderiv.hvp("f = g_i Y_ij z_j + z_j z_j", "z", v="t")
    assert product.shape_text() == "z.shape = (K,) with g: (I,), Y: (I, K), t: (K,), z: (K,)"
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        product(g=np.ones(2), Y=np.ones((2, 3)), z=np.ones(3), t=np.ones(4))


@pytest.mark.parametrize("function", [einderiv.hvp, einderiv.jvp, einderiv.vjp, einderiv.hessian_diag])
def test_products_take_one_wrt_name(function):
    with pytest.raises(einderiv.DifferentiationError, match="takes one wrt name"):
        function("f = x_i x_i", ["x", "x"])


@pytest.mark.parametrize("shape", [(300, 40), (1100, 1000)])  # BLAS after the product; one einsum pass
def test_weighted_column_sums_are_the_einsum(shape):
    generator = np.random.default_rng(9)
    A, B, w = generator.normal(size=shape), generator.normal(size=shape), generator.normal(size=shape[0])
    A[5, 6], w[7] = np.nan, -np.inf
    for subscripts, operands in (("n,ni,ni->i", (w, A, B)), ("ni,ni->i", (A, B)), ("n,ni,ni->i", (w, A, A))):
        function = contraction_for(subscripts, [o.shape for o in operands])
        assert "column sums" in repr(function)
        expected = np.einsum(subscripts, *operands)
        np.testing.assert_allclose(function(*operands), expected, rtol=1e-10, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("scale", ["u_i", "s"])
def test_a_hessian_diagonal_whose_shared_factor_is_a_diagonal_keeps_one_axis(scale):
    # found by the random-program test: sharing a factor laid the combined array out as a
    # diagonal factor A_jj wrote it, (j, j), and opt_einsum refused the output 'jj'
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    source = f"t1_i = logsumexp_j(((0.5 + ({scale})(u_i)) + A_ij)); f = t1_i M_ik u_k"
    rng = np.random.default_rng(0)
    u, A, M, s = rng.normal(size=3), rng.normal(size=(3, 4)), rng.normal(size=(3, 3)), np.float64(0.4)

    def f(u):
        first = u if scale == "u_i" else s
        t1 = jax.scipy.special.logsumexp(0.5 + (first * u)[:, None] + A, axis=1)
        return t1 @ M @ u

    expected = np.diag(np.asarray(jax.hessian(f)(jnp.asarray(u))))
    arrays = {"u": u, "A": A, "M": M, "s": s}
    diagonal = einderiv.hessian_diag(source, "u")
    got = diagonal(**{k: v for k, v in arrays.items() if k in diagonal.ranks})
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def _cubed_sums(z, A):
    """f = sum_ij(sum_l(z_j + A_il)^3) by hand: S_ij = L z_j + sum_l A_il."""
    L = A.shape[1]
    S = L * z[None, :] + A.sum(axis=1)[:, None]
    return S, L


@pytest.mark.parametrize("kind", ["grad", "vjp", "hvp", "hessian_diag", "hessian"])
def test_counts_of_one_dimension_in_and_around_a_group_read_back(kind):
    """Two or three counts of one dimension in a product (L z_j inside a power, L outside it)
    print with the letter the user's statement writes, or as a power of one count
    (``delta_ll^3``): they printed as ``delta_{l9,l9}``, which nothing sizes, so the text did
    not read back (20 of 1,200 probe products, 2026-12-03).  Against NumPy closed forms."""
    rng = np.random.default_rng(4)
    z, A, v, u = rng.normal(size=3), rng.normal(size=(4, 5)), rng.normal(size=3), 1.3
    S, L = _cubed_sums(z, A)
    gradient = (3 * S**2 * L).sum(axis=0)
    hessian = np.diag((6 * S * L**2).sum(axis=0))
    expected = {
        "grad": gradient,
        "vjp": u * gradient,
        "hvp": hessian @ v,
        "hessian_diag": np.diag(hessian),
        "hessian": hessian,
    }[kind]
    result = getattr(einderiv, kind)("f = sum_ij((sum_l((z_j + A_il)))^3)", "z")
    arrays = {"z": z, "A": A, "v": v, "u": u}
    assert "9," not in str(result), str(result)
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)  # the text reads back without a warning
        read = einderiv.compile(str(result))
    np.testing.assert_allclose(result(**needed(result, arrays)), expected, rtol=1e-10)
    np.testing.assert_allclose(read(**needed(read, arrays)), expected, rtol=1e-10, err_msg=str(result))


def test_powers_of_counts_of_two_dimensions_are_not_like_terms_when_read_back():
    """``delta_ll^3`` and ``delta_mm^3`` count L and M: read back, they were collected as one
    term (2 L^3), because a count inside a call lost its letter in the like-term key (a review)."""
    rng = np.random.default_rng(9)
    z, A, B = rng.normal(size=3), rng.normal(size=(4, 5)), rng.normal(size=(4, 7))
    hessian = einderiv.hessian("f = sum_ij((sum_l(z_j + A_il) + sum_m(z_j + B_im))^3)", "z")
    S = 12 * z[None, :] + A.sum(axis=1)[:, None] + B.sum(axis=1)[:, None]
    expected = np.diag((6 * 12**2 * S).sum(axis=0))
    np.testing.assert_allclose(hessian(z=z, A=A, B=B), expected, rtol=1e-12)
    try:  # the same numbers, or the error that says a count is not sized: never other numbers
        read = einderiv.compile(str(hessian))(z=z, A=A, B=B)
    except einderiv.EvaluationError as err:
        assert "cannot be inferred" in str(err)
    else:
        np.testing.assert_allclose(read, expected, rtol=1e-12)


def test_an_hvp_whose_index_letter_names_another_axis_in_the_source_is_sized_by_wrt():
    """The HVP by x of ``... - y_k A_kj z_j`` is indexed by j, a letter the user wrote for A's
    second axis: a step the evaluator split off the statement (a difference with a common
    factor) took the letter's written size (4) and failed with "index 'j' has two sizes" (found by
    the random-program probe against jax).  Closed form: g''(m) / n^2 1 1^T v, g = exp o tanh."""
    rng = np.random.default_rng(0)
    z, x, y, A, v = (rng.normal(size=s) for s in [4, 3, 5, (5, 4), 3])
    source = "t1_j = ((c + c) + softplus(z_j)); f = (exp(tanh(mean_i(x_i))) - (y_k A_kj z_j))"
    got = einderiv.hvp(source, "x")(x=x, v=v, y=y, A=A, z=z)
    t = np.tanh(x.mean())
    second = np.exp(t) * ((1 - t * t) ** 2 - 2 * t * (1 - t * t))
    np.testing.assert_allclose(got, second / 9 * np.full(3, v.sum()), rtol=1e-12)


# -- the diagonal keeps the Hessian's stable factoring ------------------------------------------------

_SQUASHED = [
    # (source, the loss in mpmath as a function of the logits z = X w, relative tolerance)
    (
        "L = log(sum_n(sigmoid(X_nd w_d) (1 - sigmoid(X_nd w_d))))",
        lambda z: mpmath.log(sum(_s(u) * _s(-u) for u in z)),
        1e-8,
    ),
    (
        "L = sqrt(sum_n(sigmoid(X_nd w_d) (1 - sigmoid(X_nd w_d))))",
        lambda z: mpmath.sqrt(sum(_s(u) * _s(-u) for u in z)),
        1e-8,
    ),
    # 1 - tanh(z)^2 as written keeps an ulp of 1: 1e-8 of sech(10)^2 in the value itself
    ("L = log(sum_n(1 - tanh(X_nd w_d)^2))", lambda z: mpmath.log(sum(mpmath.sech(u) ** 2 for u in z)), 1e-7),
    ("L = log(1 + sum_n(tanh(X_nd w_d)))", lambda z: mpmath.log(1 + sum(mpmath.tanh(u) for u in z)), 1e-8),
]


def _s(u):
    return 1 / (1 + mpmath.exp(-u))


@pytest.mark.parametrize("source, loss, rtol", _SQUASHED, ids=[s for s, *_ in _SQUASHED])
@pytest.mark.parametrize("w", [[30.0, 40.0], [20.0, -10.0], [0.3, -0.2]])
def test_the_hessian_diagonal_is_as_accurate_as_the_hessian_at_saturated_logits(source, loss, rtol, w):
    """A meaning hunter's find: setting the Hessian's two wrt letters equal merged its terms
    ``3 f(s_l) X_lj g(s_n) X_nj`` and ``3 g(s_l) X_lj f(s_n) X_nj`` (the same once l and n are
    renamed) into one, which no longer factors as a product of two sums; the evaluator then
    computed s - s^2 as a difference, and the diagonal of log(Σ s (1 - s)) at w = (30, 40) was
    -1.4e11 for 4.5e-5 (the full Hessian right).  Against mpmath's second derivative along each
    axis, at 50 digits."""
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.25]])
    w = np.array(w)
    mpmath.mp.dps = 50
    try:
        expected = []
        for j in range(2):

            def along(t, j=j):
                v = [mpmath.mpf(x) for x in w]
                v[j] = t
                return loss([sum(mpmath.mpf(X[n, d]) * v[d] for d in range(2)) for n in range(len(X))])

            expected.append(float(mpmath.diff(along, mpmath.mpf(w[j]), 2)))
    finally:
        mpmath.mp.dps = 15
    diagonal = einderiv.hessian_diag(source, "w")(X=X, w=w)
    np.testing.assert_allclose(diagonal, expected, rtol=rtol)
    np.testing.assert_allclose(diagonal, np.diag(einderiv.hessian(source, "w")(X=X, w=w)), rtol=1e-9)


@pytest.mark.parametrize(
    "keywords", [{}, {"symmetric": ["M"]}, {"symmetric": ["M"], "symmetric_convention": "cookbook"}]
)
def test_a_hessian_diagonal_of_a_trace_prints_one_delta(keywords):
    # printed exp(M_jj) delta_jk delta_jk, and under the cookbook convention as 4 - 4 + 1 terms of them
    M = np.random.default_rng(3).normal(size=(4, 4))
    M = M + M.T if keywords else M
    diagonal = einderiv.hessian_diag("f = sum_i(exp(M_ii))", "M", **keywords)
    assert "delta_jk delta_jk" not in str(diagonal) and str(diagonal).count("delta") == 1
    np.testing.assert_allclose(diagonal(M=M), np.diag(np.exp(np.diag(M))), rtol=1e-14, atol=0)
    np.testing.assert_allclose(einderiv.evaluate(str(diagonal), M=M), np.diag(np.exp(np.diag(M))), rtol=1e-14)


@pytest.mark.parametrize("make", ["hvp", "jvp", "vjp"])
def test_a_greek_tangent_is_named_as_the_printed_text_reads_it(make):
    """A hunt's find: ``hvp(..., v="θ")`` printed ``(A_kl + A_lk) θ_k``, which reads back with θ as
    theta, the wrt itself (H theta for H v).  The tangent is named as the parser reads it (mu
    for μ), its printed text reads back to the same numbers, and a Greek name that is the
    wrt's is an error that says how it was read."""
    source = "f = sum_i(theta_i A_ij theta_j)" if make == "hvp" else "f_i = tanh(A_ij theta_j)"
    keyword = "u" if make == "vjp" else "v"
    product = getattr(einderiv, make)(source, "theta", **{keyword: "μ"})
    gen = np.random.default_rng(0)
    arrays = {"A": gen.normal(size=(3, 3)), "theta": gen.normal(size=3), "mu": gen.normal(size=3)}
    assert "mu" in product.inputs and "θ" not in str(product) and "μ" not in str(product)
    want = product(**arrays)
    read_back = einderiv.compile(str(product))
    np.testing.assert_allclose(read_back(**{k: arrays[k] for k in read_back.inputs}), want, rtol=1e-13, atol=1e-15)
    A, theta, mu = arrays["A"], arrays["theta"], arrays["mu"]
    t = np.tanh(A @ theta)
    reference = {
        "hvp": (A + A.T) @ mu,
        "jvp": (1 - t**2) * (A @ mu),
        "vjp": A.T @ ((1 - t**2) * mu),
    }[make]
    np.testing.assert_allclose(want, reference, rtol=1e-12)
    with pytest.raises(einderiv.EinderivError, match=r"'θ' \(read as theta\)"):
        getattr(einderiv, make)(source, "theta", **{keyword: "θ"})


@pytest.mark.parametrize(
    "make, source, name",
    [
        ("hvp", "f = x_i A_ij x_j + d2fdx2v x_i x_i", "d2fdx2v"),
        ("hessian_diag", "d2fdx2diag_i = tanh(x_i); f = d2fdx2diag_i d2fdx2diag_i", "d2fdx2diag"),
        ("jvp", "f_i = tanh(A_ij x_j) + dfdxv_i", "dfdxv"),
        ("vjp", "f_i = tanh(A_ij x_j) udfdx_i", "udfdx"),
    ],
)
def test_a_product_is_named_apart_from_the_users_names(make, source, name):
    """A hunt's find: a product took its name (``d2fdx2v``, ``d2fdx2diag``) whatever the source
    named so, and its printed text wrote the user's tensor on its own right-hand side, or
    defined it twice: it did not read back.  The product's name is made unique (``d2fdx2v2``);
    the numbers are NumPy's and the text reads back to them."""
    product = getattr(einderiv, make)(source, "x")
    assert f"{name}2" in str(product)
    gen = np.random.default_rng(1)
    arrays = {"A": gen.normal(size=(3, 3)), "x": gen.normal(size=3), "v": gen.normal(size=3)}
    arrays |= {"u": gen.normal(size=3), "d2fdx2v": 0.7, "dfdxv": gen.normal(size=3), "udfdx": gen.normal(size=3)}
    given = {k: arrays[k] for k in product.inputs}
    want = product(**given)
    read_back = einderiv.compile(str(product))
    np.testing.assert_allclose(read_back(**{k: arrays[k] for k in read_back.inputs}), want, rtol=1e-12, atol=1e-14)
    A, x, v, u = arrays["A"], arrays["x"], arrays["v"], arrays["u"]
    t = np.tanh(A @ x)
    reference = {
        "hvp": (A + A.T) @ v + 2 * 0.7 * v,
        "hessian_diag": 2 * (1 - np.tanh(x) ** 2) * (1 - 3 * np.tanh(x) ** 2),
        "jvp": (1 - t**2) * (A @ v),
        "vjp": A.T @ ((1 - t**2) * arrays["udfdx"] * u),
    }[make]
    np.testing.assert_allclose(want, reference, rtol=1e-12)


def test_greek_names_given_to_a_compiled_function_and_to_of_are_read_as_the_text_is():
    """A hunt's find: θ in the text is theta, but ``compiled(θ=...)`` and ``of="θ"`` were unknown
    names.  They are read as the text is; θ beside theta is an error; an unknown Greek name says
    how it was read."""
    compiled = einderiv.compile("θ_i = x_i^2; f = θ_i θ_i")
    x = np.array([1.0, -2.0, 0.5])
    assert compiled(**{"x": x}) == pytest.approx(np.sum(x**4))
    gradient = einderiv.grad("f = θ_i A_ij θ_j", "θ")
    A = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(gradient(**{"θ": x, "A": A}), (A + A.T) @ x, rtol=1e-14)
    with pytest.raises(einderiv.EvaluationError, match="'θ' is read as 'theta', which is given too"):
        gradient(**{"θ": x, "theta": x, "A": A})
    with pytest.raises(einderiv.EvaluationError, match=r"unknown input 'μ' \(read as mu\)"):
        gradient(**{"θ": x, "μ": x, "A": A})
    jacobian = einderiv.jacobian("θ_i = x_i^2; f = θ_i θ_i", "x", of="θ")
    np.testing.assert_allclose(jacobian(x=x), np.diag(2 * x), rtol=1e-14)
    S = np.array([[2.0, 0.3], [0.3, 1.0]])
    result = einderiv.check("f = x_i Σ_ij x_j", "Σ", symmetric=["Σ"], values={"Σ": S}, expect="x_k x_l")
    assert result.ok and result.inputs["Sigma"] is not None
    np.testing.assert_array_equal(result.inputs["Sigma"], S)
    assert einderiv.check("f = θ_i θ_i", "θ", shapes={"θ": 4}).inputs["theta"].shape == (4,)


@pytest.mark.parametrize("source", ["L = sqrt(1 + (X_nd w_d - y_n)^2)", "r_n = X_nd w_d - y_n; L = sqrt(1 + r_n^2)"])
def test_the_pseudo_huber_hvp_is_one_term_over_the_root_cubed(source):
    """A hunt's find: the pseudo-Huber loss's HVP printed and evaluated
    ``-r^2 X v X / sqrt(1 + r^2)^3 + X v X / sqrt(1 + r^2)``, which cancels: 3e-4 off at |w| ~ 1e6
    and of the wrong sign at 1e8, where its Hessian was one term.  Terms whose summed letters are
    none of the root's collapse too: ``X_ni v_i X_nj / sqrt(1 + r^2)^3``.  Against the closed form."""
    X, y, v = np.array([[1.0, 2.0], [3.0, -1.0]]), np.array([0.5, -1.0]), np.array([1.0, -0.2])
    product = einderiv.hvp(source, "w", v="v")
    assert str(product).count("sqrt") == 1, str(product)
    for scale in (1.0, 1e4, 1e8, 1e150):
        w = np.array([1.0, 0.7]) * scale
        r = X @ w - y
        with np.errstate(over="ignore"):  # (at 1e150 the root cubed overflows: the HVP is 0 to double precision)
            want = X.T @ ((X @ v) / np.sqrt(1 + r * r) ** 3)
        np.testing.assert_allclose(product(X=X, y=y, w=w, v=v), want, rtol=1e-12)
