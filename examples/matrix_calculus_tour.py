"""A tour of textbook identities (Mathematics for Machine Learning, ch. 5; the Matrix Cookbook).

Each derivative is printed in index notation with its einsum terms, then checked against
the closed form known by hand.  Run: ``python examples/matrix_calculus_tour.py``.
"""

import numpy as np
from _checks import show

import einderiv

rng = np.random.default_rng(0)


# dK/dR for K = R^T R: a rank-4 tensor with its four-case table.
M, N = 4, 3
R = rng.normal(size=(M, N))
dK = einderiv.jacobian("K_pq = R_mp R_mq", "R")
show(dK)
J = dK(R=R)
expected = np.einsum("jp,iq->pqij", np.eye(N), R) + np.einsum("ip,jq->pqij", R, np.eye(N))
assert J.shape == (N, N, M, N) and np.allclose(J, expected)

# The gradient and Hessian of x^T A x: (A + A^T) x and A + A^T.
x, A = rng.normal(size=N), rng.normal(size=(N, N))
g = einderiv.grad("f = x_i A_ij x_j", "x")
H = einderiv.hessian("f = x_i A_ij x_j", "x")
show(g)
show(H)
assert np.allclose(g(x=x, A=A), (A + A.T) @ x)
assert np.allclose(H(x=x, A=A), A + A.T)

# Least squares: dL/dtheta = -2 e^T Phi and the Hessian 2 Phi^T Phi.
Phi, y, theta = rng.normal(size=(6, N)), rng.normal(size=6), rng.normal(size=N)
loss = "L = (y_n - Phi_nd theta_d)(y_n - Phi_ne theta_e)"
gL = einderiv.grad(loss, "theta")
HL = einderiv.hessian(loss, "theta")
show(gL)
show(HL)
assert np.allclose(gL(y=y, Phi=Phi, theta=theta), -2 * (y - Phi @ theta) @ Phi)
assert np.allclose(HL(y=y, Phi=Phi, theta=theta), 2 * Phi.T @ Phi)

# d(a^T X b)/dX = a b^T
a, X, b = rng.normal(size=M), rng.normal(size=(M, N)), rng.normal(size=N)
dX = einderiv.grad("f = a_i X_ij b_j", "X")
show(dX)
assert np.allclose(dX(a=a, X=X, b=b), np.outer(a, b))
print("all checks passed")
