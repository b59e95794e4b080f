"""The benchmark cases: an einderiv derivative, its hand-written NumPy closed form, and the same
derivative by the autodiff peers (jax, torch.func) where they are installed.

Each case is a function of a size scale returning a :class:`Case`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    name: str
    size: str
    source: str
    wrt: list[str]  # ["x", "x"] is the Hessian
    arrays: dict
    hand: Callable[[], np.ndarray]
    #: f(**arrays) written for the peers (jax.numpy or torch), taking the wrt array first
    peer_function: Callable | None = None
    peer_kind: str = "grad"  # grad, hessian or jacobian
    notes: list[str] = field(default_factory=list)


def _rng():
    return np.random.default_rng(0)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def hessian_quadratic(scale):
    n = int(2000 * scale) or 2
    rng = _rng()
    A, x = rng.normal(size=(n, n)), rng.normal(size=n)
    return Case(
        "Hessian of x^T A x",
        f"n={n}",
        "f = x_i A_ij x_j",
        ["x", "x"],
        {"x": x, "A": A},
        lambda: A + A.T,
        lambda xp, x, A: x @ A @ x,
        "hessian",
    )


def gradient_quadratic(scale):
    case = hessian_quadratic(scale)
    A, x = case.arrays["A"], case.arrays["x"]
    case.name, case.wrt, case.peer_kind = "gradient of x^T A x", ["x"], "grad"
    case.hand = lambda: A @ x + A.T @ x
    return case


def _least_squares(scale):
    N, D = int(2000 * scale) or 3, int(500 * scale) or 2
    rng = _rng()
    return N, D, rng.normal(size=(N, D)), rng.normal(size=N), rng.normal(size=D)


def hessian_least_squares(scale):
    N, D, Phi, y, theta = _least_squares(scale)
    return Case(
        "Hessian of least squares",
        f"N={N}, D={D}",
        "e_n = y_n - Phi_nd theta_d; L = e_n e_n",
        ["theta", "theta"],
        {"Phi": Phi, "y": y, "theta": theta},
        lambda: 2 * Phi.T @ Phi,
        lambda xp, theta, Phi, y: ((y - Phi @ theta) ** 2).sum(),
        "hessian",
    )


def gradient_least_squares(scale):
    case = hessian_least_squares(scale)
    Phi, y, theta = case.arrays["Phi"], case.arrays["y"], case.arrays["theta"]
    case.name, case.wrt, case.peer_kind = "gradient of least squares", ["theta"], "grad"
    case.hand = lambda: -2 * (y - Phi @ theta) @ Phi
    return case


LOGISTIC = "L = -(y_n log(sigmoid(X_nd w_d)) + (1 - y_n) log(1 - sigmoid(X_nd w_d)))"


def _logistic(scale):
    n, d = int(5000 * scale) or 3, int(200 * scale) or 2
    rng = _rng()
    X = rng.normal(size=(n, d)) / np.sqrt(d)
    return n, d, X, (rng.random(n) > 0.5).astype(float), rng.normal(size=d)


def _logistic_loss(xp, w, X, y):
    z = X @ w
    log_sigmoid = -xp.logaddexp(xp.zeros_like(z), -z) if hasattr(xp, "logaddexp") else -xp.nn.functional.softplus(-z)
    log_one_minus = -xp.logaddexp(xp.zeros_like(z), z) if hasattr(xp, "logaddexp") else -xp.nn.functional.softplus(z)
    return -(y * log_sigmoid + (1 - y) * log_one_minus).sum()


def hessian_logistic(scale):
    n, d, X, y, w = _logistic(scale)

    def hand():
        s = _sigmoid(X @ w)
        return X.T @ ((s * (1 - s))[:, None] * X)

    return Case(
        "Hessian of the logistic loss",
        f"n={n}, d={d}",
        LOGISTIC,
        ["w", "w"],
        {"X": X, "y": y, "w": w},
        hand,
        _logistic_loss,
        "hessian",
    )


def gradient_logistic(scale):
    case = hessian_logistic(scale)
    X, y, w = case.arrays["X"], case.arrays["y"], case.arrays["w"]
    case.name, case.wrt, case.peer_kind = "gradient of the logistic loss", ["w"], "grad"
    case.hand = lambda: X.T @ (_sigmoid(X @ w) - y)
    return case


def jacobian_gram(scale):
    M = N = int(60 * scale) or 2
    R = _rng().normal(size=(M, N))

    def hand():
        J = np.zeros((N, N, M, N))
        k = np.arange(N)
        J[k, :, :, k] += R.T
        J[:, k, :, k] += R.T
        return J

    return Case(
        "Jacobian dK/dR, K = R^T R",
        f"M=N={N}",
        "K_pq = R_mp R_mq",
        ["R"],
        {"R": R},
        hand,
        lambda xp, R: R.T @ R,
        "jacobian",
    )


def jacobian_matrix_vector(scale):
    M, N = int(300 * scale) or 2, int(200 * scale) or 2
    rng = _rng()
    A, x = rng.normal(size=(M, N)), rng.normal(size=N)

    def hand():
        J = np.zeros((M, M, N))
        J[np.arange(M), np.arange(M), :] = x
        return J

    return Case(
        "df/dA for f = A x",
        f"M={M}, N={N}",
        "f_i = A_ij x_j",
        ["A"],
        {"A": A, "x": x},
        hand,
        lambda xp, A, x: A @ x,
        "jacobian",
    )


def gradient_softmax_cross_entropy(scale):
    K, d = 10, 50
    rng = _rng()
    Theta, x = rng.normal(size=(K, d)), rng.normal(size=d)
    y = np.eye(K)[3]

    def hand():
        z = Theta @ x
        p = np.exp(z - z.max())
        return np.outer(p / p.sum() - y, x)

    def loss(xp, Theta, x, y):
        z = Theta @ x
        lse = xp.logsumexp(z) if hasattr(xp, "logsumexp") else xp.log(xp.exp(z - z.max()).sum()) + z.max()
        return -(y * z).sum() + lse

    return Case(
        "gradient of softmax cross-entropy",
        f"K={K}, d={d}",
        "z_k = Theta_kd x_d; L = -y_k z_k + logsumexp_j(z_j)",
        ["Theta"],
        {"Theta": Theta, "x": x, "y": y},
        hand,
        loss,
        "grad",
    )


def hessian_logdet(scale):
    n = int(60 * scale) or 2
    rng = _rng()
    X = rng.normal(size=(n, n)) + n * np.eye(n)

    def hand():
        Xi = np.linalg.inv(X)
        return -np.einsum("lm,nk->klmn", Xi, Xi)

    def logdet(xp, X):
        return xp.linalg.slogdet(X)[1]

    return Case("Hessian of log det X", f"n={n}", "f = logdet(X)", ["X", "X"], {"X": X}, hand, logdet, "hessian")


def hessian_logsumexp(scale):
    n = int(1000 * scale) or 2
    z = _rng().normal(size=n)

    def hand():
        p = np.exp(z - z.max())
        p /= p.sum()
        return np.diag(p) - np.outer(p, p)

    def lse(xp, z):
        return xp.logsumexp(z) if hasattr(xp, "logsumexp") else xp.log(xp.exp(z - z.max()).sum()) + z.max()

    return Case("Hessian of logsumexp", f"n={n}", "f = logsumexp_i(z_i)", ["z", "z"], {"z": z}, hand, lse, "hessian")


def gradient_two_layer(scale):
    N, D, H, K = int(512 * scale) or 2, int(64 * scale) or 2, int(128 * scale) or 2, 10
    rng = _rng()
    X, W1, b, W2, Y = (rng.normal(size=s) * 0.3 for s in [(N, D), (D, H), (H,), (H, K), (N, K)])
    source = "h_nj = tanh(X_ni W1_ij + b_j); o_nk = h_nj W2_jk; L = (o_nk - Y_nk)(o_nk - Y_nk)"

    def hand():
        h = np.tanh(X @ W1 + b)
        r = 2 * (h @ W2 - Y)
        return X.T @ ((r @ W2.T) * (1 - h**2))

    def loss(xp, W1, X, b, W2, Y):
        h = xp.tanh(X @ W1 + b)
        return ((h @ W2 - Y) ** 2).sum()

    return Case(
        "gradient of a two-layer tanh network (W1)",
        f"N={N}, D={D}, H={H}",
        source,
        ["W1"],
        {"X": X, "W1": W1, "b": b, "W2": W2, "Y": Y},
        hand,
        loss,
        "grad",
    )


def hessian_factorisation(scale):
    m, n, r = int(40 * scale) or 2, int(30 * scale) or 2, 5
    rng = _rng()
    X, U, V = rng.normal(size=(m, n)), rng.normal(size=(m, r)), rng.normal(size=(n, r))

    def hand():
        H = np.zeros((m, r, m, r))
        H[np.arange(m), :, np.arange(m), :] = 2 * V.T @ V
        return H

    def loss(xp, U, X, V):
        return ((X - U @ V.T) ** 2).sum()

    return Case(
        "Hessian of ||X - U V^T||^2 wrt U",
        f"m={m}, n={n}, r={r}",
        "E_ab = X_ab - U_ak V_bk; L = E_ab E_ab",
        ["U", "U"],
        {"X": X, "U": U, "V": V},
        hand,
        loss,
        "hessian",
    )


CASES = [
    hessian_quadratic,
    hessian_least_squares,
    hessian_logistic,
    jacobian_gram,
    gradient_softmax_cross_entropy,
    gradient_quadratic,
    gradient_least_squares,
    gradient_logistic,
    jacobian_matrix_vector,
    hessian_logdet,
    hessian_logsumexp,
    gradient_two_layer,
    hessian_factorisation,
]
