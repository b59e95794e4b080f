"""Matrix functions (inv, det, logdet), logsumexp and softmax: Matrix Cookbook identities, the
seeds' identities, a Gaussian log-likelihood, ridge regression, stability and errors.

Numbers in parentheses are equation numbers of the Matrix Cookbook (Petersen & Pedersen, 2012).
Every entry of a matrix is an independent variable (no symmetry is assumed).
"""

from __future__ import annotations

import numpy as np
import pytest

import einderiv
from tests.helpers import assert_matches_fd

rng = np.random.default_rng(2026)
n = 4
inv, det = np.linalg.inv, np.linalg.det


def well_conditioned(size=n):
    return rng.normal(size=(size, size)) + size * np.eye(size)


def positive_definite(size=n):
    B = rng.normal(size=(size, size))
    return B @ B.T + size * np.eye(size)


X, A, B = well_conditioned(), rng.normal(size=(n, n)), rng.normal(size=(n, n))
A2, B2 = well_conditioned(), well_conditioned()
a, b = rng.normal(size=n), rng.normal(size=n)
Xt = rng.normal(size=(6, n))  # a tall matrix
S, SA = positive_definite(), positive_definite(6)
Xi = inv(X)
G = Xt.T @ SA @ Xt

COOKBOOK = [
    ("a^T X^-1 b (61)", "f = a_i inv(X)_ij b_j", "X", {"a": a, "X": X, "b": b}, -Xi.T @ np.outer(a, b) @ Xi.T),
    ("det(X) (49)", "f = det(X)", "X", {"X": X}, det(X) * Xi.T),
    ("log det(X) (57)", "f = logdet(X)", "X", {"X": X}, Xi.T),
    ("log(det(X)) is logdet", "f = log(det(X))", "X", {"X": X}, Xi.T),
    ("det(X)^3 (53)", "f = det(X)^3", "X", {"X": X}, 3 * det(X) ** 3 * Xi.T),
    ("tr(X^-1) (124)", "t = inv(X)_ii", "X", {"X": X}, -(Xi @ Xi).T),
    ("tr(A X^-1 B) (125)", "t = A_ij inv(X)_jk B_ki", "X", {"A": A, "X": X, "B": B}, -(Xi @ B @ A @ Xi).T),
    ("tr(A X^-1) wrt A", "t = A_ij inv(X)_ji", "A", {"A": A, "X": X}, Xi.T),
    ("det(A X B) (50)", "M_ij = A_ik X_kl B_lj; f = det(M)", "X", {"A": A2, "X": X, "B": B2}, det(A2 @ X @ B2) * Xi.T),
    ("log det(X^T X) (55)", "M_ij = X_ki X_kj; f = logdet(M)", "X", {"X": Xt}, 2 * Xt @ inv(Xt.T @ Xt)),
    (
        "det(X^T A X) (51)",
        "M_ij = X_ki A_kl X_lj; f = det(M)",
        "X",
        {"X": Xt, "A": SA},
        det(G) * (SA @ Xt @ inv(G) + SA.T @ Xt @ inv(Xt.T @ SA.T @ Xt)),
    ),
    (
        "log det(X^T A X) (52)",
        "M_ij = X_ki A_kl X_lj; f = logdet(M)",
        "X",
        {"X": Xt, "A": SA},
        SA @ Xt @ inv(G) + SA.T @ Xt @ inv(Xt.T @ SA.T @ Xt),
    ),
    (
        "tr((X + A)^-1) (126 with X + A)",
        "M_ij = X_ij + A_ij; t = inv(M)_ii",
        "X",
        {"X": X, "A": A},
        -(inv(X + A) @ inv(X + A)).T,
    ),
    (
        "a^T X^-2 b (62)",
        "f = a_i inv(X)_ij inv(X)_jk b_k",
        "X",
        {"a": a, "X": X, "b": b},
        -np.outer(Xi.T @ a, Xi @ Xi @ b) - np.outer((Xi @ Xi).T @ a, Xi @ b),
    ),
    ("a^T S^-1 a, S symmetric (61)", "f = a_i inv(S)_ij a_j", "S", {"a": a, "S": S}, -inv(S) @ np.outer(a, a) @ inv(S)),
    (
        "(x - m)^T S^-1 (x - m) wrt m (86)",
        "r_i = x_i - m_i; f = r_i inv(S)_ij r_j",
        "m",
        {"x": a, "m": b, "S": S},
        -(inv(S) + inv(S).T) @ (a - b),
    ),
    ("log det(X^-1) = -log det(X)", "Y_ij = inv(X)_ij; f = logdet(Y)", "X", {"X": X}, -Xi.T),
    (
        "tr((X^T X)^-1), tall X",
        "M_ij = X_ki X_kj; t = inv(M)_ii",
        "X",
        {"X": Xt},
        -2 * Xt @ inv(Xt.T @ Xt) @ inv(Xt.T @ Xt),
    ),
]


@pytest.mark.parametrize("name, source, wrt, arrays, expected", COOKBOOK, ids=[c[0] for c in COOKBOOK])
def test_cookbook_identity(name, source, wrt, arrays, expected):
    d = einderiv.grad(source, wrt)
    np.testing.assert_allclose(d(**arrays), expected, rtol=1e-8, atol=1e-10)
    assert_matches_fd(d, einderiv.compile(source), arrays, wrt, rtol=1e-5, atol=1e-6)


def test_derivative_of_the_inverse_itself():
    d = einderiv.jacobian("Y_ij = inv(X)_ij", "X")
    assert str(d) == "dY_ij/dX_kl = -inv(X)_ik inv(X)_lj"
    np.testing.assert_allclose(d(X=X), -np.einsum("ik,lj->ijkl", Xi, Xi))
    assert_matches_fd(d, einderiv.compile("Y_ij = inv(X)_ij"), {"X": X}, "X")


def test_seed_002_inverse_of_a_function_of_X():
    # d f(X)^-1 = -f(X)^-1 df(X) f(X)^-1, here with f(X) = X X + I
    source = "F_ij = X_ik X_kj + delta_ij; G_ij = inv(F)_ij"
    d = einderiv.jacobian(source, "X")
    F = X @ X + np.eye(n)
    Fi = inv(F)
    dF = np.einsum("ak,lb->abkl", np.eye(n), X) + np.einsum("ak,bl->abkl", X, np.eye(n))
    np.testing.assert_allclose(d(X=X), -np.einsum("ia,abkl,bj->ijkl", Fi, dF, Fi), rtol=1e-8, atol=1e-12)
    assert_matches_fd(d, einderiv.compile(source), {"X": X}, "X")


def test_seed_002_and_004_hessians():
    h = einderiv.hessian("f = logdet(X)", "X")
    np.testing.assert_allclose(h(X=X), -np.einsum("lm,nk->klmn", Xi, Xi))
    assert_matches_fd(h, einderiv.grad("f = logdet(X)", "X"), {"X": X}, "X")
    h2 = einderiv.hessian("f = a_i inv(X)_ij b_j", "X")
    assert_matches_fd(h2, einderiv.grad("f = a_i inv(X)_ij b_j", "X"), {"a": a, "X": X, "b": b}, "X")


def test_gaussian_log_likelihood_wrt_mean_and_covariance():
    source = "r_i = x_i - mu_i; L = -0.5 r_i inv(Sigma)_ij r_j - 0.5 logdet(Sigma)"
    x, mu, Sigma = a, b, S
    arrays = {"x": x, "mu": mu, "Sigma": Sigma}
    r = x - mu
    P = inv(Sigma)
    value = einderiv.evaluate(source, **arrays)
    assert float(value) == pytest.approx(-0.5 * r @ P @ r - 0.5 * np.linalg.slogdet(Sigma)[1])
    g_mu = einderiv.grad(source, "mu")
    np.testing.assert_allclose(g_mu(**arrays), 0.5 * (P + P.T) @ r)
    assert_matches_fd(g_mu, einderiv.compile(source), arrays, "mu")
    g_sigma = einderiv.grad(source, "Sigma")
    np.testing.assert_allclose(g_sigma(**arrays), 0.5 * P.T @ np.outer(r, r) @ P.T - 0.5 * P.T)
    assert_matches_fd(g_sigma, einderiv.compile(source), arrays, "Sigma")


def test_ridge_regression_closed_form_has_zero_gradient():
    N, D, lam = 12, 4, 0.7
    Xd, y = rng.normal(size=(N, D)), rng.normal(size=N)
    solve = "M_ij = X_ki X_kj + lam delta_ij; theta_p = inv(M)_pq X_kq y_k"
    theta = einderiv.evaluate(solve, X=Xd, y=y, lam=lam)
    np.testing.assert_allclose(theta, np.linalg.solve(Xd.T @ Xd + lam * np.eye(D), Xd.T @ y))
    loss = "e_n = y_n - X_nd theta_d; L = e_n e_n + lam theta_d theta_d"
    gradient = einderiv.grad(loss, "theta")(X=Xd, y=y, theta=theta, lam=lam)
    np.testing.assert_allclose(gradient, np.zeros(D), atol=1e-10)
    # and the closed form's Jacobian with respect to lambda
    d = einderiv.jacobian(solve, "lam")
    assert_matches_fd(d, einderiv.compile(solve), {"X": Xd, "y": y, "lam": np.array(lam)}, "lam")


def test_logsumexp_and_softmax_values_gradients_and_hessians():
    z = rng.normal(size=5)
    softmax = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    lse = einderiv.compile("f = logsumexp_i(z_i)")
    assert float(lse(z=z)) == pytest.approx(np.log(np.exp(z).sum()))
    g = einderiv.grad("f = logsumexp_i(z_i)", "z")
    np.testing.assert_allclose(g(z=z), softmax)
    h = einderiv.hessian("f = logsumexp_i(z_i)", "z")
    np.testing.assert_allclose(h(z=z), np.diag(softmax) - np.outer(softmax, softmax))
    assert_matches_fd(h, g, {"z": z}, "z")
    Z = rng.normal(size=(3, 4))
    P = einderiv.evaluate("P_nk = softmax_k(Z_nk)", Z=Z)
    np.testing.assert_allclose(P, np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True))
    d = einderiv.jacobian("P_nk = softmax_k(Z_nk)", "Z")
    assert_matches_fd(d, einderiv.compile("P_nk = softmax_k(Z_nk)"), {"Z": Z}, "Z")
    by_hand = einderiv.jacobian("P_nk = exp(Z_nk) / sum_j(exp(Z_nj))", "Z")
    np.testing.assert_allclose(by_hand(Z=Z), d(Z=Z), atol=1e-12)


def test_logsumexp_and_softmax_do_not_overflow():
    z = np.array([1000.0, 999.0, -1000.0, 0.0])
    value = einderiv.evaluate("f = logsumexp_i(z_i)", z=z)
    assert float(value) == pytest.approx(1000 + np.log(1 + np.exp(-1.0)), rel=1e-14)
    p = einderiv.evaluate("p_i = softmax_i(z_i)", z=z)
    assert np.all(np.isfinite(p)) and float(p.sum()) == pytest.approx(1.0)
    for derivative in (
        einderiv.grad("f = logsumexp_i(z_i)", "z"),
        einderiv.hessian("f = logsumexp_i(z_i)", "z"),
        einderiv.jacobian("p_i = softmax_i(z_i)", "z"),
    ):
        assert np.all(np.isfinite(derivative(z=z)))
    low = einderiv.evaluate("f = logsumexp_i(z_i)", z=z - 2000)  # every exp(z) underflows to 0
    assert float(low) == pytest.approx(-1000 + np.log(1 + np.exp(-1.0)), rel=1e-14)


def test_each_matrix_function_is_computed_once(monkeypatch):
    import einderiv.linalg as linalg

    calls, factorisations = [], []
    original, lu = linalg.Factorisation.function, linalg.lu_factor
    monkeypatch.setattr(linalg.Factorisation, "function", lambda self, f: calls.append(f) or original(self, f))
    monkeypatch.setattr(linalg, "lu_factor", lambda m: factorisations.append(m) or lu(m))
    h = einderiv.hessian("f = a_i inv(X)_ij b_j + logdet(X)", "X")
    h(a=a, X=X, b=b)
    assert sorted(calls) == ["inv"]  # logdet's derivatives are all written with inv(X)
    calls.clear(), factorisations.clear()
    einderiv.compile("f = logdet(X) + det(X) + inv(X)_ii")(X=X)
    assert sorted(calls) == ["det", "inv", "logdet"]
    assert len(factorisations) == 1  # all three read from one LU of X


@pytest.mark.parametrize(
    "source, arrays, message",
    [
        ("f = logdet(X)", {"X": np.ones((3, 4))}, "logdet(X): 'X' has shape (3, 4), not a square matrix"),
        ("t = inv(X)_ii", {"X": np.ones((3, 3))}, "inv(X): the matrix 'X' is singular"),
        ("f = logdet(X)", {"X": -np.eye(3)}, "logdet(X): the determinant of 'X' is negative"),
        ("f = logdet(X)", {"X": np.zeros((2, 2))}, "the determinant of 'X' is zero"),
    ],
)
def test_evaluation_errors_name_the_matrix(source, arrays, message):
    with pytest.raises(einderiv.EvaluationError) as info:
        einderiv.evaluate(source, **arrays)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "source, message",
    [
        ("f = inv(X)", "inv(X) needs two indices"),
        ("f = det(X)_ij", "det(X) is a scalar and takes no indices"),
        ("f = inv(X_ij)_ij", "takes the name of a square matrix"),
        ("f = inv(X)_ijk", "takes exactly two indices"),
        ("f = logdet(x) x_i x_i", "tensor 'x' is used with 2 indices"),
        ("M_i = x_i; f = logdet(M)", "'M' is defined with 1 indices but used with 2"),
    ],
)
def test_matrix_function_language_errors(source, message):
    with pytest.raises(einderiv.EinderivError) as info:
        einderiv.compile(source, notation="index")  # "auto" reads f = inv(X) as matrix notation
    assert message in str(info.value)


def test_printing_round_trips_with_matrix_functions():
    for source in [
        "f = a_i inv(X)_ij b_j - logdet(X) + det(X)^2",
        "P_nk = softmax_k(Z_nk)",
        "f = logsumexp_{i,j}(Z_ij)",
    ]:
        program = einderiv.parse(source)
        assert einderiv.parse(str(program)) == program


def test_inverse_times_vector_is_a_solve(monkeypatch):
    import einderiv.linalg as linalg

    inverses, solves = [], []
    original_inv, original_solve = linalg.Factorisation.inv, linalg.Factorisation.solve
    monkeypatch.setattr(linalg.Factorisation, "inv", lambda self: inverses.append(1) or original_inv(self))
    monkeypatch.setattr(
        linalg.Factorisation, "solve", lambda self, v, t: solves.append(t) or original_solve(self, v, t)
    )
    source = "f = a_i inv(X)_ij b_j"
    assert float(einderiv.evaluate(source, a=a, X=X, b=b)) == pytest.approx(a @ np.linalg.solve(X, b))
    g = einderiv.grad(source, "X")
    np.testing.assert_allclose(g(a=a, X=X, b=b), -Xi.T @ np.outer(a, b) @ Xi.T)
    assert inverses == [] and sorted(solves) == [False, False, True]  # X b, X b, X^T a
