"""The seeds' identities (000: C6-C11; 001: Deisenroth ch. 5 examples), symbolically and numerically.

Every derivative is compared with central finite differences in float64 and with the closed
form printed in the notes.
"""

from __future__ import annotations

import numpy as np
import pytest

import einderiv
from einderiv.lower import normalize
from einderiv.normal import equivalent
from tests.helpers import assert_matches_fd

rng = np.random.default_rng(20261123)


def value(source):
    return lambda **arrays: einderiv.evaluate(source, **arrays)


def reparses(derivative) -> bool:
    """str(derivative) is valid input that normalizes back to the same expression."""
    statement = einderiv.parse(str(derivative)).output
    return equivalent(normalize(statement.rhs, derivative.indices), derivative.expr)


@pytest.mark.parametrize("source", ["f = a_i x_i", "f = x_i a_i"])
def test_c6_gradient_of_inner_product_is_a(source):
    d = einderiv.grad(source, "x")
    (k,) = d.indices
    assert str(d.expr) == f"a_{k}"
    a, x = rng.normal(size=4), rng.normal(size=4)
    np.testing.assert_allclose(d(a=a, x=x), a)
    assert_matches_fd(d, value(source), {"a": a, "x": x}, "x")
    assert reparses(d)


def test_c7_gradient_of_squared_norm_is_2x():
    d = einderiv.grad("f = x_i x_i", "x")
    (k,) = d.indices
    assert str(d.expr) == f"2 x_{k}"
    x = rng.normal(size=5)
    np.testing.assert_allclose(d(x=x), 2 * x)
    assert_matches_fd(d, value("f = x_i x_i"), {"x": x}, "x")
    h = einderiv.hessian("f = x_i x_i", "x")
    k, l = h.indices
    assert str(h.expr) == f"2 delta_{k}{l}"
    np.testing.assert_allclose(h(x=x), 2 * np.eye(5))


def test_c8_gradient_of_squared_inner_product():
    source = "f = (x_i a_i)(x_j a_j)"
    d = einderiv.grad(source, "x")
    assert len(d.expr.terms) == 1 and d.expr.terms[0].coeff == 2  # 2 (a^T x) a, collected
    a, x = rng.normal(size=4), rng.normal(size=4)
    np.testing.assert_allclose(d(a=a, x=x), 2 * (a @ x) * a)
    assert_matches_fd(d, value(source), {"a": a, "x": x}, "x")
    h = einderiv.hessian(source, "x")
    np.testing.assert_allclose(h(a=a, x=x), 2 * np.outer(a, a))


def test_c9_jacobian_of_matrix_vector_product_wrt_x_and_A():
    source = "y_i = A_ij x_j"
    A, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    dx = einderiv.jacobian(source, "x")
    assert str(dx) == "dy_i/dx_k = A_ik"
    np.testing.assert_allclose(dx(A=A, x=x), A)
    assert_matches_fd(dx, value(source), {"A": A, "x": x}, "x")
    dA = einderiv.jacobian(source, "A")
    assert str(dA) == "dy_i/dA_kl = delta_ik x_l"
    J = dA(A=A, x=x)
    assert J.shape == (3, 3, 4)  # Deisenroth's M x (M x N): slice i is x^T in row i, zeros elsewhere
    for i in range(3):
        expected = np.zeros((3, 4))
        expected[i] = x
        np.testing.assert_allclose(J[i], expected)
    assert_matches_fd(dA, value(source), {"A": A, "x": x}, "A")


def test_c10_row_vector_times_matrix():
    source = "y_j = x_i A_ij"
    A, x = rng.normal(size=(3, 4)), rng.normal(size=3)
    d = einderiv.jacobian(source, "x")
    assert str(d.expr) == "A_kj"
    np.testing.assert_allclose(d(A=A, x=x), A.T)
    assert_matches_fd(d, value(source), {"A": A, "x": x}, "x")


def test_c11_quadratic_form_gradient_and_hessian():
    source = "f = x_i A_ij x_j"
    g = einderiv.grad(source, "x")
    assert "delta" not in str(g)
    assert len(g.expr.terms) == 2  # A x + A^T x stays two matrix-vector products
    h = einderiv.hessian(source, "x")
    assert str(h) == "d2f/dx_k dx_l = A_kl + A_lk"
    A, x = rng.normal(size=(5, 5)), rng.normal(size=5)
    np.testing.assert_allclose(g(x=x, A=A), (A + A.T) @ x)
    np.testing.assert_allclose(h(x=x, A=A), A + A.T)
    assert_matches_fd(g, value(source), {"x": x, "A": A}, "x")
    assert_matches_fd(h, lambda **k: g(**k), {"x": x, "A": A}, "x")
    assert reparses(g) and reparses(h)


def test_bilinear_form_wrt_matrix_is_outer_product():
    source = "f = a_i X_ij b_j"
    d = einderiv.grad(source, "X")
    assert str(d.expr) == "a_k b_l"
    a, X, b = rng.normal(size=3), rng.normal(size=(3, 4)), rng.normal(size=4)
    np.testing.assert_allclose(d(a=a, X=X, b=b), np.outer(a, b))
    assert_matches_fd(d, value(source), {"a": a, "X": X, "b": b}, "X")


def test_dK_dR_case_table():
    source = "K_pq = R_mp R_mq"
    d = einderiv.diff(source, wrt="R")
    assert str(d) == "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq"
    assert [t.subscripts for t in d.einsum] == ["jp,iq->pqij", "ip,jq->pqij"]
    assert [t.operands for t in d.einsum] == [("delta", "R"), ("R", "delta")]
    M, N = 5, 3
    R = rng.normal(size=(M, N))
    J = d(R=R)
    assert J.shape == (N, N, M, N)
    # the notes' case table: R_iq if j = p != q; R_ip if j = q != p; 2 R_iq if j = p = q; else 0
    for p in range(N):
        for q in range(N):
            for i in range(M):
                for j in range(N):
                    if p == q == j:
                        expected = 2 * R[i, q]
                    elif j == p:
                        expected = R[i, q]
                    elif j == q:
                        expected = R[i, p]
                    else:
                        expected = 0.0
                    assert J[p, q, i, j] == pytest.approx(expected)
    assert_matches_fd(d, value(source), {"R": R}, "R")
    assert reparses(d)


def test_weighted_least_squares_wrt_s_for_symmetric_W():
    source = "f = (x_i - A_ij s_j) W_ik (x_k - A_kl s_l)"
    d = einderiv.grad(source, "s")
    n, m = 4, 3
    x, A, s = rng.normal(size=n), rng.normal(size=(n, m)), rng.normal(size=m)
    B = rng.normal(size=(n, n))
    W = B + B.T
    r = x - A @ s
    np.testing.assert_allclose(d(x=x, A=A, s=s, W=W), -2 * r @ W @ A)  # the notes' -2 (x - As)^T W A
    assert_matches_fd(d, value(source), {"x": x, "A": A, "s": s, "W": W}, "s")
    # for a general W the unsymmetrised form holds: -(x - As)^T (W + W^T) A
    np.testing.assert_allclose(d(x=x, A=A, s=s, W=B), -r @ (B + B.T) @ A)


def test_least_squares_gradient_and_hessian():
    source = "L = (y_n - Phi_nd theta_d)(y_n - Phi_ne theta_e)"
    N, D = 6, 3
    y, Phi, theta = rng.normal(size=N), rng.normal(size=(N, D)), rng.normal(size=D)
    g = einderiv.grad(source, "theta")
    e = y - Phi @ theta
    np.testing.assert_allclose(g(y=y, Phi=Phi, theta=theta), -2 * e @ Phi)  # -2 e^T Phi
    assert_matches_fd(g, value(source), {"y": y, "Phi": Phi, "theta": theta}, "theta")
    h = einderiv.hessian(source, "theta")
    assert len(h.expr.terms) == 1 and h.expr.terms[0].coeff == 2
    np.testing.assert_allclose(h(y=y, Phi=Phi, theta=theta), 2 * Phi.T @ Phi)
    assert_matches_fd(h, lambda **k: g(**k), {"y": y, "Phi": Phi, "theta": theta}, "theta")


def test_third_derivative_of_quartic():
    source = "f = x_i x_i x_j x_j"
    d3 = einderiv.diff(source, ["x", "x", "x"])
    assert d3.indices == ("k", "l", "m")
    assert len(d3.expr.terms) == 3 and all(t.coeff == 8 for t in d3.expr.terms)
    x = rng.normal(size=3)
    I = np.eye(3)
    expected = 8 * (np.einsum("kl,m->klm", I, x) + np.einsum("km,l->klm", I, x) + np.einsum("k,lm->klm", x, I))
    np.testing.assert_allclose(d3(x=x), expected)
    d2 = einderiv.hessian(source, "x")
    assert_matches_fd(d3, lambda **k: d2(**k), {"x": x}, "x")


def test_user_letters_for_wrt_and_renaming_of_summed_indices():
    d = einderiv.grad("f = x_i A_ij x_j", "x_j")  # j is summed in the source: renamed away
    assert d.indices == ("j",)
    A, x = rng.normal(size=(3, 3)), rng.normal(size=3)
    np.testing.assert_allclose(d(x=x, A=A), (A + A.T) @ x)
    with pytest.raises(einderiv.DifferentiationError, match="already an index of the result"):
        einderiv.diff("y_i = A_ij x_j", "A_ik")


def test_broadcast_terms_and_hadamard_and_trace():
    C = einderiv.diff("C_ij = a_i + b_j", "a")
    a, b = rng.normal(size=2), rng.normal(size=3)
    np.testing.assert_allclose(C(a=a, b=b), np.broadcast_to(np.eye(2)[:, None, :], (2, 3, 2)))
    assert_matches_fd(C, value("C_ij = a_i + b_j"), {"a": a, "b": b}, "a")
    had = einderiv.diff("c_i = a_i b_i", "a")
    np.testing.assert_allclose(had(a=a, b=a * 3), np.diag(a * 3))
    tr = einderiv.grad("t = X_ii", "X")
    k, l = tr.indices
    assert str(tr.expr) == f"delta_{k}{l}"
    np.testing.assert_allclose(tr(X=rng.normal(size=(4, 4))), np.eye(4))
    dot = einderiv.grad("f = (a_i + b_i) c_i", "c")
    a3, b3, c3 = rng.normal(size=(3, 3))
    np.testing.assert_allclose(dot(a=a3, b=b3, c=c3), a3 + b3)


def test_exact_rational_coefficients():
    d = einderiv.grad("f = x_i x_i / 3 + 0.25 x_j x_j", "x")
    assert str(d.expr) == "7/6 x_k"
    x = rng.normal(size=3)
    np.testing.assert_allclose(d(x=x), 7 / 6 * x)
