"""One function, two spellings: a multi-statement program and the same function as one statement.

For each pair (a) the value, gradient and Hessian of both forms agree to 1e-12 with each other and
with JAX autodiff (float64) of a jax.numpy transcription written by hand; (b) where the function has
logits, both forms stay finite and right at logits of magnitude 40 and 1000, value and gradient,
against closed forms evaluated in mpmath at 50 digits; (c) the printed derivatives read back as
input evaluate to the same numbers, and the program's printed derivative has no more top-level
terms than the one-statement form's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pytest

import einderiv

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
mpmath = pytest.importorskip("mpmath")
mp = mpmath.mp

N, D, H, K = 4, 3, 2, 3


def spd_like(rng, n=D):
    """3 I plus small noise: well conditioned, positive determinant, not symmetric."""
    return 3 * np.eye(n) + 0.3 * rng.normal(size=(n, n))


@dataclass(frozen=True)
class Pair:
    name: str
    program: str
    statement: str
    inputs: callable  # rng -> dict of float64 arrays
    reference: callable  # jax.numpy transcription: **arrays -> scalar
    wrt: tuple[str, ...]
    hessian: tuple[str, ...] = ()
    marks: tuple = field(default=())


def normal(*shape):
    return lambda rng: rng.normal(size=shape)


def inputs(**makers):
    return lambda rng: {name: np.asarray(make(rng), dtype=np.float64) for name, make in makers.items()}


def _softplus(z):
    return jnp.logaddexp(0.0, z)


PAIRS = [
    Pair(
        "logistic",
        "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -y_n log(s_n) - (1 - y_n) log(1 - s_n)",
        "L = -y_n log(sigmoid(X_nd w_d)) - (1 - y_n) log(1 - sigmoid(X_nd w_d))",
        inputs(X=normal(N, D), w=normal(D), y=lambda r: r.random(N)),
        lambda X, w, y: jnp.sum(
            -y * jnp.log(1 / (1 + jnp.exp(-X @ w))) - (1 - y) * jnp.log(1 - 1 / (1 + jnp.exp(-X @ w)))
        ),
        ("w", "X"),
        ("w",),
    ),
    Pair(
        "logistic_pm1_labels",
        "z_n = X_nd w_d; L = -sum_n(log(sigmoid(y_n z_n)))",
        "L = -sum_n(log(sigmoid(y_n X_nd w_d)))",
        inputs(X=normal(N, D), w=normal(D), y=lambda r: r.choice([-1.0, 1.0], size=N)),
        lambda X, w, y: -jnp.sum(jnp.log(1 / (1 + jnp.exp(-y * (X @ w))))),
        ("w",),
        ("w",),
    ),
    Pair(
        "softmax_cross_entropy",
        "z_k = Theta_kd x_d; p_k = softmax_k(z_k); L = -y_k log(p_k)",
        "L = -y_k log(softmax_k(Theta_kd x_d))",
        inputs(Theta=normal(K, D), x=normal(D), y=lambda r: r.random(K)),
        lambda Theta, x, y: -jnp.sum(y * jnp.log(jnp.exp(Theta @ x) / jnp.sum(jnp.exp(Theta @ x)))),
        ("Theta", "x"),
        ("Theta",),
    ),
    Pair(
        "batched_softmax_cross_entropy",
        "Z_nk = X_nd W_dk; P_nk = softmax_k(Z_nk); L = -Y_nk log(P_nk)",
        "L = -Y_nk log(softmax_k(X_nd W_dk))",
        inputs(X=normal(N, D), W=normal(D, K), Y=lambda r: r.random((N, K))),
        lambda X, W, Y: -jnp.sum(Y * jnp.log(jnp.exp(X @ W) / jnp.sum(jnp.exp(X @ W), axis=1, keepdims=True))),
        ("W", "X"),
        ("W",),
    ),
    Pair(
        "log_softmax_intermediate",
        "Z_nk = X_nd W_dk; l_nk = Z_nk - logsumexp_k(Z_nk); L = -Y_nk l_nk",
        "L = -Y_nk (X_nd W_dk - logsumexp_k(X_nd W_dk))",
        inputs(X=normal(N, D), W=normal(D, K), Y=lambda r: r.random((N, K))),
        lambda X, W, Y: -jnp.sum(Y * (X @ W - jnp.log(jnp.sum(jnp.exp(X @ W), axis=1, keepdims=True)))),
        ("W",),
        ("W",),
    ),
    Pair(
        "logsumexp_minus_linear",
        "z_k = Theta_kd x_d; L = logsumexp_k(z_k) - y_k z_k",
        "L = logsumexp_k(Theta_kd x_d) - y_k Theta_kd x_d",
        inputs(Theta=normal(K, D), x=normal(D), y=lambda r: r.random(K)),
        lambda Theta, x, y: jnp.log(jnp.sum(jnp.exp(Theta @ x))) - y @ (Theta @ x),
        ("Theta", "x"),
        ("Theta",),
    ),
    Pair(
        "two_layer_tanh",
        "A_nh = X_nd W_dh + b_h; G_nh = tanh(A_nh); o_n = G_nh v_h; L = (y_n - o_n)^2",
        "L = (y_n - tanh(X_nd W_dh + b_h) v_h)^2",
        inputs(X=normal(N, D), W=normal(D, H), b=normal(H), v=normal(H), y=normal(N)),
        lambda X, W, b, v, y: jnp.sum((y - jnp.tanh(X @ W + b) @ v) ** 2),
        ("W", "b", "v"),
        ("W", "b"),
    ),
    Pair(
        "two_layer_relu",
        "A_nh = X_nd W_dh + b_h; G_nh = relu(A_nh); o_n = G_nh v_h; L = mean_n((o_n - y_n)^2)",
        "L = mean_n((relu(X_nd W_dh + b_h) v_h - y_n)^2)",
        inputs(X=normal(N, D), W=normal(D, H), b=normal(H), v=normal(H), y=normal(N)),
        lambda X, W, b, v, y: jnp.mean((jnp.maximum(X @ W + b, 0.0) @ v - y) ** 2),
        ("W", "b", "v"),
        ("v", "W"),
    ),
    Pair(
        "least_squares",
        "e_n = y_n - X_nd w_d; L = e_n e_n",
        "L = (y_n - X_nd w_d)^2",
        inputs(X=normal(N, D), w=normal(D), y=normal(N)),
        lambda X, w, y: jnp.sum((y - X @ w) ** 2),
        ("w", "X"),
        ("w",),
    ),
    Pair(
        "ridge",
        "e_n = y_n - X_nd w_d; r = w_d w_d; L = e_n e_n + lam r",
        "L = (y_n - X_nd w_d)^2 + lam w_d w_d",
        inputs(X=normal(N, D), w=normal(D), y=normal(N), lam=lambda r: r.random() + 0.5),
        lambda X, w, y, lam: jnp.sum((y - X @ w) ** 2) + lam * w @ w,
        ("w", "lam"),
        ("w",),
    ),
    Pair(
        "mean_squared_error",
        "r_n = y_n - X_nd w_d; L = mean_n(r_n^2)",
        "L = mean_n((y_n - X_nd w_d)^2)",
        inputs(X=normal(N, D), w=normal(D), y=normal(N)),
        lambda X, w, y: jnp.mean((y - X @ w) ** 2),
        ("w",),
        ("w",),
    ),
    Pair(
        "gaussian_precision",
        "r_nd = X_nd - mu_d; q_n = r_nd P_de r_ne; L = 0.5 q_n - 2 logdet(P)",
        "L = 0.5 (X_nd - mu_d) P_de (X_ne - mu_e) - 2 logdet(P)",
        inputs(X=normal(N, D), mu=normal(D), P=spd_like),
        lambda X, mu, P: 0.5 * jnp.sum(((X - mu) @ P) * (X - mu)) - 2 * jnp.linalg.slogdet(P)[1],
        ("mu", "P"),
        ("mu", "P"),
    ),
    Pair(
        "gaussian_covariance",
        "r_nd = X_nd - mu_d; L = 0.5 r_nd inv(S)_de r_ne + 2 logdet(S)",
        "L = 0.5 (X_nd - mu_d) inv(S)_de (X_ne - mu_e) + 2 logdet(S)",
        inputs(X=normal(N, D), mu=normal(D), S=spd_like),
        lambda X, mu, S: 0.5 * jnp.sum(((X - mu) @ jnp.linalg.inv(S)) * (X - mu)) + 2 * jnp.linalg.slogdet(S)[1],
        ("mu", "S"),
        ("mu", "S"),
    ),
    Pair(
        "rbf_kernel",
        "E_nm = (X_nd - Z_md)^2; K_nm = exp(-gam E_nm); f = a_n K_nm b_m",
        "f = a_n exp(-gam sum_d((X_nd - Z_md)^2)) b_m",
        inputs(X=normal(N, D), Z=normal(2, D), a=normal(N), b=normal(2), gam=lambda r: r.random() + 0.2),
        lambda X, Z, a, b, gam: a @ jnp.exp(-gam * jnp.sum((X[:, None, :] - Z[None, :, :]) ** 2, axis=2)) @ b,
        ("X", "Z", "gam"),
        ("X", "gam"),
    ),
    Pair(
        "matrix_factorisation",
        "R_mn = Y_mn - U_mr V_nr; L = R_mn R_mn + lam U_mr U_mr + lam V_nr V_nr",
        "L = (Y_mn - U_mr V_nr)^2 + lam U_mr U_mr + lam V_nr V_nr",
        inputs(Y=normal(N, D), U=normal(N, 2), V=normal(D, 2), lam=lambda r: 0.3),
        lambda Y, U, V, lam: jnp.sum((Y - U @ V.T) ** 2) + lam * jnp.sum(U * U) + lam * jnp.sum(V * V),
        ("U", "V"),
        ("U",),
    ),
    Pair(
        "attention",
        "S_qk = Q_qd K_kd; A_qk = softmax_k(S_qk); O_qe = A_qk V_ke; L = O_qe C_qe",
        "L = softmax_k(Q_qd K_kd) V_ke C_qe",
        inputs(Q=normal(2, D), K=normal(K, D), V=normal(K, 2), C=normal(2, 2)),
        lambda Q, K, V, C: jnp.sum(jax.nn.softmax(Q @ K.T, axis=1) @ V * C),
        ("Q", "K", "V"),
        ("Q",),
    ),
    Pair(
        "poisson_glm",
        "eta_n = X_nd w_d; mu_n = exp(eta_n); L = mu_n - y_n log(mu_n)",
        "L = exp(X_nd w_d) - y_n log(exp(X_nd w_d))",
        inputs(X=normal(N, D), w=normal(D), y=lambda r: r.poisson(2.0, size=N)),
        lambda X, w, y: jnp.sum(jnp.exp(X @ w) - y * jnp.log(jnp.exp(X @ w))),
        ("w", "X"),
        ("w",),
    ),
    Pair(
        "softplus_log1p",
        "u_n = X_nd w_d; s_n = softplus(u_n); L = log1p(s_n)",
        "L = log1p(softplus(X_nd w_d))",
        inputs(X=normal(N, D), w=normal(D)),
        lambda X, w: jnp.sum(jnp.log1p(jnp.log1p(jnp.exp(X @ w)))),
        ("w",),
        ("w",),
    ),
    Pair(
        "softplus_by_hand",
        "u_n = X_nd w_d; e_n = exp(u_n); L = log(1 + e_n)",
        "L = log(1 + exp(X_nd w_d))",
        inputs(X=normal(N, D), w=normal(D)),
        lambda X, w: jnp.sum(jnp.log(1 + jnp.exp(X @ w))),
        ("w",),
        ("w",),
    ),
    Pair(
        "tanh_cosh",
        "a_n = X_nd w_d; t_n = tanh(a_n); c_n = cosh(a_n); L = log(c_n) + t_n^2",
        "L = log(cosh(X_nd w_d)) + tanh(X_nd w_d)^2",
        inputs(X=normal(N, D), w=normal(D)),
        lambda X, w: jnp.sum(jnp.log(jnp.cosh(X @ w)) + jnp.tanh(X @ w) ** 2),
        ("w",),
        ("w",),
    ),
    Pair(
        "quadratic_form",
        "y_i = A_ij x_j; f = x_i y_i",
        "f = x_i A_ij x_j",
        inputs(A=normal(D, D), x=normal(D)),
        lambda A, x: x @ A @ x,
        ("x", "A"),
        ("x", "A"),
    ),
    Pair(
        "inverse_quadratic_form",
        "v_i = inv(A)_ij b_j; f = b_i v_i",
        "f = b_i inv(A)_ij b_j",
        inputs(A=spd_like, b=normal(D)),
        lambda A, b: b @ jnp.linalg.inv(A) @ b,
        ("b", "A"),
        ("b", "A"),
    ),
    Pair(
        "trace_inverse_plus_logdet",
        "P_ij = inv(A)_ij; f = P_ii + logdet(A)",
        "f = inv(A)_ii + logdet(A)",
        inputs(A=spd_like),
        lambda A: jnp.trace(jnp.linalg.inv(A)) + jnp.linalg.slogdet(A)[1],
        ("A",),
        ("A",),
    ),
    Pair(
        "det_chain",
        "q = det(A); f = q^2 + log(q)",
        "f = det(A)^2 + log(det(A))",
        inputs(A=spd_like),
        lambda A: jnp.linalg.det(A) ** 2 + jnp.log(jnp.linalg.det(A)),
        ("A",),
        ("A",),
    ),
    Pair(
        "sin_cos",
        "a_n = X_nd w_d; c_n = cos(a_n); s_n = sin(a_n); L = c_n^2 + s_n^2 + c_n s_n",
        "L = cos(X_nd w_d)^2 + sin(X_nd w_d)^2 + cos(X_nd w_d) sin(X_nd w_d)",
        inputs(X=normal(N, D), w=normal(D)),
        lambda X, w: jnp.sum(jnp.cos(X @ w) ** 2 + jnp.sin(X @ w) ** 2 + jnp.cos(X @ w) * jnp.sin(X @ w)),
        ("w",),
        ("w",),
    ),
    Pair(
        "pseudo_huber",
        "r_n = y_n - X_nd w_d; L = sqrt(1 + r_n^2) - 1",
        "L = sqrt(1 + (y_n - X_nd w_d)^2) - 1",
        inputs(X=normal(N, D), w=normal(D), y=normal(N)),
        lambda X, w, y: jnp.sum(jnp.sqrt(1 + (y - X @ w) ** 2)) - 1,
        ("w",),
        ("w",),
    ),
]
PAIR_IDS = [p.name for p in PAIRS]
BY_NAME = {p.name: p for p in PAIRS}


def params():
    return [pytest.param(p, id=p.name, marks=p.marks) for p in PAIRS]


def arrays_for(pair: Pair, seed: int = 0) -> dict:
    return pair.inputs(np.random.default_rng(seed))


def jax_derivative(pair: Pair, arrays: dict, wrt: list[str]):
    """d^k f / d wrt... by JAX in float64 (wrt a list of one or two equal names)."""
    rest = {k: jnp.asarray(v) for k, v in arrays.items() if k != wrt[0]}

    def f(v):
        return pair.reference(**rest, **{wrt[0]: v})

    transform = jax.grad if len(wrt) == 1 else jax.hessian
    return np.asarray(jax.jit(transform(f))(jnp.asarray(arrays[wrt[0]])))


def close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


# -- (a) the same numbers ---------------------------------------------------------------------------


def test_there_are_at_least_twenty_pairs_and_the_forms_differ():
    assert len(PAIRS) >= 20 and len(set(PAIR_IDS)) == len(PAIRS)
    for pair in PAIRS:
        assert len(einderiv.parse(pair.program).statements) >= 2, pair.name
        assert len(einderiv.parse(pair.statement).statements) == 1, pair.name


@pytest.mark.parametrize("pair", params())
def test_value_and_gradient_agree_with_each_other_and_with_jax(pair):
    arrays = arrays_for(pair, 0)
    reference = float(pair.reference(**{k: jnp.asarray(v) for k, v in arrays.items()}))
    program = float(einderiv.evaluate(pair.program, **arrays))
    statement = float(einderiv.evaluate(pair.statement, **arrays))
    assert program == pytest.approx(statement, rel=1e-12, abs=1e-12)
    assert program == pytest.approx(reference, rel=1e-11, abs=1e-11)
    for wrt in pair.wrt:
        g_program = einderiv.grad(pair.program, wrt)(**arrays)
        g_statement = einderiv.grad(pair.statement, wrt)(**arrays)
        close(g_program, g_statement, 1e-12, f"{pair.name}: d/d{wrt}, program vs statement")
        close(g_program, jax_derivative(pair, arrays, [wrt]), 1e-10, f"{pair.name}: d/d{wrt} vs jax")


@pytest.mark.parametrize("pair", [p for p in params() if p.values[0].hessian])
def test_hessian_agrees_with_each_other_and_with_jax(pair):
    arrays = arrays_for(pair, 2)
    for wrt in pair.hessian:
        h_program = einderiv.hessian(pair.program, wrt)(**arrays)
        h_statement = einderiv.hessian(pair.statement, wrt)(**arrays)
        close(h_program, h_statement, 1e-12, f"{pair.name}: Hessian in {wrt}, program vs statement")
        close(h_program, jax_derivative(pair, arrays, [wrt, wrt]), 1e-10, f"{pair.name}: Hessian in {wrt} vs jax")


# -- (b) extreme logits against mpmath ----------------------------------------------------------------

mp.dps = 50
X_EXTREME = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])  # rows give logits s, -s, 0, s


def mpf_array(a):
    return np.vectorize(mp.mpf, otypes=[object])(np.asarray(a, dtype=np.float64))


def to_float(a):
    return np.vectorize(float, otypes=[np.float64])(np.asarray(a, dtype=object))


def mp_softplus(z):
    return mp.log1p(mp.exp(z)) if z < 0 else z + mp.log1p(mp.exp(-z))


def mp_sigmoid(z):
    return 1 / (1 + mp.exp(-z))


def mp_logsumexp(row):
    top = max(row)
    return top + mp.log(mp.fsum(mp.exp(v - top) for v in row))


def matvec(A, x):
    return np.array([mp.fsum(A[i, j] * x[j] for j in range(A.shape[1])) for i in range(A.shape[0])], dtype=object)


def matmul(A, B):
    return np.array(
        [[mp.fsum(A[i, k] * B[k, j] for k in range(A.shape[1])) for j in range(B.shape[1])] for i in range(A.shape[0])],
        dtype=object,
    )


def extreme_logistic(scale):
    arrays = {"X": X_EXTREME, "w": scale * np.array([1.0, -1.0]), "y": np.array([0.0, 1.0, 1.0, 0.0])}
    X, w, y = (mpf_array(arrays[k]) for k in "Xwy")
    z = matvec(X, w)
    value = mp.fsum(y[n] * mp_softplus(-z[n]) + (1 - y[n]) * mp_softplus(z[n]) for n in range(4))
    residual = np.array([mp_sigmoid(z[n]) - y[n] for n in range(4)], dtype=object)
    return arrays, value, {"w": matvec(X.T, residual)}


def extreme_logistic_pm1(scale):
    arrays = {"X": X_EXTREME, "w": scale * np.array([1.0, -1.0]), "y": np.array([-1.0, 1.0, 1.0, -1.0])}
    X, w, y = (mpf_array(arrays[k]) for k in "Xwy")
    z = matvec(X, w)
    value = mp.fsum(mp_softplus(-y[n] * z[n]) for n in range(4))
    residual = np.array([-y[n] * mp_sigmoid(-y[n] * z[n]) for n in range(4)], dtype=object)
    return arrays, value, {"w": matvec(X.T, residual)}


def _theta_extreme(scale):
    return {
        "Theta": scale * np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]),
        "x": np.array([1.0, 0.5]),
        "y": np.array([0.0, 0.25, 0.75]),
    }


def extreme_softmax_single(scale):
    """-y_k log softmax(z)_k = (sum y) lse(z) - y.z; dL/dz = (sum y) p - y; dL/dTheta = outer(dL/dz, x)."""
    arrays = _theta_extreme(scale)
    T, x, y = (mpf_array(arrays[k]) for k in ("Theta", "x", "y"))
    z = matvec(T, x)
    lse = mp_logsumexp(list(z))
    total = mp.fsum(y)
    value = total * lse - mp.fsum(y[k] * z[k] for k in range(3))
    dz = np.array([total * mp.exp(z[k] - lse) - y[k] for k in range(3)], dtype=object)
    return arrays, value, {"Theta": np.outer(dz, x), "x": matvec(T.T, dz)}


def extreme_softmax_batched(scale):
    arrays = {
        "X": X_EXTREME,
        "W": scale * np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.5]]),
        "Y": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0], [0.5, 0.5, 0]]),
    }
    X, W, Y = (mpf_array(arrays[k]) for k in "XWY")
    Z = matmul(X, W)
    value = mp.mpf(0)
    dZ = np.empty(Z.shape, dtype=object)
    for n in range(Z.shape[0]):
        lse = mp_logsumexp(list(Z[n]))
        total = mp.fsum(Y[n])
        value += total * lse - mp.fsum(Y[n, k] * Z[n, k] for k in range(3))
        for k in range(3):
            dZ[n, k] = total * mp.exp(Z[n, k] - lse) - Y[n, k]
    return arrays, value, {"W": matmul(X.T, dZ), "X": matmul(dZ, W.T)}


def extreme_poisson(scale):
    # exp(eta) must stay finite: logits reach -scale, and +min(scale, 300)
    arrays = {"X": X_EXTREME, "w": np.array([-scale, min(scale, 300.0)]), "y": np.array([0.0, 3.0, 1.0, 2.0])}
    X, w, y = (mpf_array(arrays[k]) for k in "Xwy")
    eta = matvec(X, w)
    value = mp.fsum(mp.exp(eta[n]) - y[n] * eta[n] for n in range(4))
    residual = np.array([mp.exp(eta[n]) - y[n] for n in range(4)], dtype=object)
    return arrays, value, {"w": matvec(X.T, residual)}


def extreme_softplus_log1p(scale):
    arrays = {"X": X_EXTREME, "w": scale * np.array([1.0, -1.0])}
    X, w = mpf_array(arrays["X"]), mpf_array(arrays["w"])
    u = matvec(X, w)
    value = mp.fsum(mp.log1p(mp_softplus(u[n])) for n in range(4))
    du = np.array([mp_sigmoid(u[n]) / (1 + mp_softplus(u[n])) for n in range(4)], dtype=object)
    return arrays, value, {"w": matvec(X.T, du)}


def extreme_softplus_by_hand(scale):
    arrays = {"X": X_EXTREME, "w": scale * np.array([1.0, -1.0])}
    X, w = mpf_array(arrays["X"]), mpf_array(arrays["w"])
    u = matvec(X, w)
    value = mp.fsum(mp_softplus(u[n]) for n in range(4))
    return arrays, value, {"w": matvec(X.T, np.array([mp_sigmoid(v) for v in u], dtype=object))}


def extreme_attention(scale):
    """L = sum_qe (softmax_k(Q K^T) V)_qe C_qe; dL/dS_qk = A_qk (G_qk - sum_k' A_qk' G_qk'), G = C V^T."""
    arrays = {
        "Q": scale * np.array([[1.0, 0.0], [0.0, 1.0]]),
        "K": np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]]),
        "V": np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]]),
        "C": np.array([[1.0, 2.0], [-1.0, 0.5]]),
    }
    Q, Kt, V, C = (mpf_array(arrays[k]) for k in "QKVC")
    S = matmul(Q, Kt.T)
    A = np.empty(S.shape, dtype=object)
    for q in range(S.shape[0]):
        lse = mp_logsumexp(list(S[q]))
        for k in range(S.shape[1]):
            A[q, k] = mp.exp(S[q, k] - lse)
    G = matmul(C, V.T)
    value = mp.fsum(A[q, k] * G[q, k] for q in range(2) for k in range(3))
    dS = np.empty(S.shape, dtype=object)
    for q in range(2):
        mean = mp.fsum(A[q, k] * G[q, k] for k in range(3))
        for k in range(3):
            dS[q, k] = A[q, k] * (G[q, k] - mean)
    return arrays, value, {"Q": matmul(dS, Kt), "K": matmul(dS.T, Q), "V": matmul(A.T, C)}


EXTREMES = {
    "logistic": extreme_logistic,
    "logistic_pm1_labels": extreme_logistic_pm1,
    "softmax_cross_entropy": extreme_softmax_single,
    "logsumexp_minus_linear": extreme_softmax_single,
    "batched_softmax_cross_entropy": extreme_softmax_batched,
    "log_softmax_intermediate": extreme_softmax_batched,
    "poisson_glm": extreme_poisson,
    "softplus_log1p": extreme_softplus_log1p,
    "softplus_by_hand": extreme_softplus_by_hand,
    "attention": extreme_attention,
}


@pytest.mark.parametrize("scale", [40.0, 1000.0])
@pytest.mark.parametrize("form", ["program", "statement"])
@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_extreme_logits_are_finite_and_right(name, form, scale):
    pair = BY_NAME[name]
    source = getattr(pair, form)
    arrays, value, gradients = EXTREMES[name](scale)
    got = float(einderiv.evaluate(source, **arrays))
    assert np.isfinite(got), (name, form, got)
    assert got == pytest.approx(float(value), rel=1e-12, abs=1e-12), (name, form)
    for wrt, expected in gradients.items():
        g = einderiv.grad(source, wrt)(**arrays)
        assert np.all(np.isfinite(g)), (name, form, wrt, g)
        close(g, to_float(expected), 1e-12, f"{name} ({form}): d/d{wrt} at logits of {scale}")


# -- (c) the printed derivatives ---------------------------------------------------------------------


def top_level_terms(derivative) -> int:
    """The number of terms of the derivative's output as a sum of products (its printed form
    may pull common factors out; the count is of the expanded sum, which that does not hide)."""
    return len(derivative.expr.terms)


def read_back(derivative, arrays):
    compiled = einderiv.compile(str(derivative))
    return compiled(**{k: v for k, v in arrays.items() if k in compiled.ranks})


#: Printed derivatives that do not read back: a known limitation, not a difference between the forms.
READ_BACK_XFAIL: dict = {}  # none left: an axis only deltas carry is sized by the statement printed before
#: Program derivatives with more printed terms than the one-statement form's.
#: (none left: the tanh_cosh Hessian kept an adjoint d2Ldwdt_in, 6 terms against 5, until adjoints of
#: a non-scalar output were substituted where that stays a few terms)
TERMS_XFAIL: dict = {}


def printed_cases(xfails):
    for pair in params():
        p = pair.values[0]
        for wrt in [[w] for w in p.wrt] + [[w, w] for w in p.hessian]:
            key = (p.name, "d" * (len(wrt) == 1) + "d2" * (len(wrt) == 2) + wrt[0])
            marks = list(pair.marks)
            if key in xfails:
                marks.append(pytest.mark.xfail(strict=True, reason=xfails[key]))
            yield pytest.param(p, wrt, id="-".join(key), marks=marks)


@functools.cache
def derivatives(pair: Pair, wrt: tuple[str, ...]):
    return einderiv.diff(pair.program, list(wrt)), einderiv.diff(pair.statement, list(wrt))


@pytest.mark.parametrize(("pair", "wrt"), list(printed_cases(READ_BACK_XFAIL)))
def test_printed_derivatives_read_back_to_the_same_numbers(pair, wrt):
    arrays = arrays_for(pair, 3)
    d_program, d_statement = derivatives(pair, tuple(wrt))
    direct = d_program(**arrays)
    close(read_back(d_program, arrays), direct, 1e-12, f"{pair.name}: printed program derivative read back")
    close(read_back(d_statement, arrays), direct, 1e-12, f"{pair.name}: printed statement derivative read back")


#: (pair, wrt) -> (terms printed by the program form, by the one-statement form), for the report
TERM_COUNTS: dict = {}


@pytest.mark.parametrize(("pair", "wrt"), list(printed_cases(TERMS_XFAIL)))
def test_the_program_prints_no_more_terms_than_the_statement(pair, wrt):
    d_program, d_statement = derivatives(pair, tuple(wrt))
    terms_program, terms_statement = top_level_terms(d_program), top_level_terms(d_statement)
    TERM_COUNTS[pair.name, tuple(wrt)] = (terms_program, terms_statement)
    assert terms_program <= terms_statement, (
        f"{pair.name} d/d{wrt}: the program prints {terms_program} terms, the statement {terms_statement}\n"
        f"program:\n{d_program}\nstatement:\n{d_statement}"
    )


# -- near a fit: the residual as written, not a difference of large sums that cancels ----------------

NEAR_FIT = [
    # (program, statement, wrt)
    ("r_n = x_n - m; L = r_n^2", "L = (x_n - m)^2", "m"),
    (
        "r_nd = x_nd - m_d; q_n = r_nd inv(S)_de r_ne; L = -0.5 N logdet(S) - 0.5 q_n",
        "L = -0.5 N logdet(S) - 0.5 (x_nd - m_d) inv(S)_de (x_ne - m_e)",
        "m",
    ),
    ("P_mn = U_mr V_nr; E_mn = Y_mn - P_mn; L = E_mn E_mn", "L = (Y_mn - U_mr V_nr)^2", "U"),
]


def _exact_sum(column) -> mpmath.mpf:
    with mp.workprec(400):
        return mpmath.fsum(mpmath.mpf(float(v)) for v in column)


def _near_fit_case(wrt, rng):
    """Inputs near a fit, and the exact gradient there (mpmath, or exact float arithmetic)."""
    if wrt == "m":  # data offset by 1e8 (timestamps, coordinates), the mean at the sample mean
        x = 1e8 + rng.normal(size=(2000, 3))
        m = x.mean(axis=0) + 1e-7
        with mp.workprec(400):
            sums = np.array([float(_exact_sum(x[:, d]) - len(x) * mpmath.mpf(float(m[d]))) for d in range(3)])
        S = spd_like(rng)
        P = np.linalg.inv(S)
        scalar = {"x": x[:, 0], "m": np.float64(m[0])}, -2.0 * sums[0]
        gaussian = {"x": x, "m": m, "S": S, "N": np.float64(len(x))}, 0.5 * (P + P.T) @ sums
        return scalar, gaussian
    # small integers: U V^T is exact, so Y - U V^T is exact and the reference is rounded once
    U, V = rng.integers(-3, 4, size=(40, 2)).astype(float), rng.integers(-3, 4, size=(30, 2)).astype(float)
    Y = U @ V.T + 1e-9 * rng.normal(size=(40, 30))
    return ({"Y": Y, "U": U, "V": V}, -2 * (Y - U @ V.T) @ V), None


@pytest.mark.parametrize("program, statement, wrt", NEAR_FIT)
@pytest.mark.parametrize("form", ["program", "statement"])
def test_gradients_near_a_fit_keep_the_residual(program, statement, wrt, form):
    # the gradient by the mean of a sample offset by 1e8 was sum(x) - N m, 27% off (the Gaussian)
    # or 8x off (the scalar) in the one-statement form; the factorisation's was Y V - U (V^T V)
    rng = np.random.default_rng(7)
    scalar, gaussian = _near_fit_case(wrt, rng)
    arrays, expected = gaussian if "logdet" in program else scalar
    source = program if form == "program" else statement
    got = einderiv.grad(source, wrt)(**arrays)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
