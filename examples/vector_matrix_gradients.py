"""Gradients of vector-valued functions and of matrices (after Mathematics for Machine Learning, ch. 5).

* f = A x with A in R^{M x N}: df/dx = A (an M x N Jacobian), and df/dA, a tensor in
  R^{M x (M x N)} whose slice i (= df_i/dA) is zero except for its row i, which is x^T.
* K = R^T R with R in R^{M x N}, K_pq = sum_m R_mp R_mq: dK/dR in R^{(N x N) x (M x N)} with
  the case table

      dK_pq/dR_ij = R_iq    if j = p, p != q
                    R_ip    if j = q, p != q
                    2 R_iq  if j = p = q
                    0       otherwise

  which is checked entry by entry.

Every derivative is also checked against central finite differences.  Layout is numerator
layout, as in Mathematics for Machine Learning: the derivative's shape is out.shape + wrt.shape.
Run: ``python examples/vector_matrix_gradients.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(3)
M, N = 4, 3

# -- f = A x -----------------------------------------------------------------------------------
A = rng.normal(size=(M, N))
x = rng.normal(size=N)
F = "f_i = A_ij x_j"
assert np.allclose(einderiv.evaluate(F, A=A, x=x), A @ x)

df_dx = einderiv.jacobian(F, "x")
show(df_dx)
J = df_dx(A=A, x=x)
assert J.shape == (M, N)
assert np.allclose(J, A)  # df/dx = A
assert np.allclose(J, central_difference(lambda v: A @ v, x), rtol=1e-7, atol=1e-9)

df_dA = einderiv.jacobian(F, "A")
show(df_dA)
G = df_dA(A=A, x=x)
assert G.shape == (M, M, N)  # R^{M x (M x N)}
for i in range(M):  # df_i/dA: row i is x^T, every other row is 0^T
    for k in range(M):
        assert np.allclose(G[i, k, :], x if k == i else np.zeros(N))
assert np.allclose(G, np.einsum("ik,l->ikl", np.eye(M), x))
assert np.allclose(G, central_difference(lambda B: B @ x, A), rtol=1e-7, atol=1e-9)

# -- K = R^T R ---------------------------------------------------------------------------------
R = rng.normal(size=(M, N))
K_SRC = "K_pq = R_mp R_mq"
assert np.allclose(einderiv.evaluate(K_SRC, R=R), R.T @ R)

dK_dR = einderiv.jacobian(K_SRC, "R")
show(dK_dR)
T = dK_dR(R=R)
assert T.shape == (N, N, M, N)  # R^{(N x N) x (M x N)}


def case_table(p, q, i, j):
    """The four cases for dK_pq/dR_ij."""
    if j == p and p != q:
        return R[i, q]
    if j == q and p != q:
        return R[i, p]
    if j == p and p == q:
        return 2 * R[i, q]
    return 0.0


for p, q, i, j in np.ndindex(T.shape):
    assert np.isclose(T[p, q, i, j], case_table(p, q, i, j), rtol=1e-12, atol=1e-14), (p, q, i, j)
assert np.allclose(T, central_difference(lambda S: S.T @ S, R), rtol=1e-7, atol=1e-9)

# The same derivative with the textbook's letters for the wrt indices.
dK_dR_ij = einderiv.jacobian(K_SRC, "R_ij")
print(dK_dR_ij)
assert dK_dR_ij.indices == ("p", "q", "i", "j")
assert np.allclose(dK_dR_ij(R=R), T)
print("all checks passed")
