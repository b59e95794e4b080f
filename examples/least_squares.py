"""Least squares: the gradient, the Hessian, and a fit by gradient descent.

After Deisenroth, Faisal and Ong, Mathematics for Machine Learning, ch. 5: the linear model
y = Phi theta with e(theta) = y - Phi theta and L(e) = ||e||^2.  The chain rule gives
dL/dtheta = dL/de de/dtheta = 2 e^T (-Phi) = -2 e^T Phi,
and differentiating once more gives the Hessian 2 Phi^T Phi (the gradient is often
written 2 X^T (X theta - y), the same thing).

The loss is written as a two-statement program, exactly as derived by hand.  Both derivatives
are checked against those closed forms and against central finite differences.  Then the
compiled gradient drives plain gradient descent, which must converge to the solution of the
normal equations Phi^T Phi theta = Phi^T y.  Run: ``python examples/least_squares.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(2)
N, D = 8, 3
Phi = rng.normal(size=(N, D))
y = rng.normal(size=N)
theta = rng.normal(size=D)

SOURCE = "e_n = y_n - Phi_nd theta_d; L = e_n e_n"


def loss_numpy(theta):
    e = y - Phi @ theta
    return e @ e


# -- the gradient: -2 e^T Phi ----------------------------------------------------------------
grad_L = einderiv.grad(SOURCE, "theta")
show(grad_L)
g = grad_L(y=y, Phi=Phi, theta=theta)
e = y - Phi @ theta
assert g.shape == theta.shape
assert np.allclose(einderiv.evaluate(SOURCE, y=y, Phi=Phi, theta=theta), loss_numpy(theta))
assert np.allclose(einderiv.evaluate(SOURCE, of="e", y=y, Phi=Phi, theta=theta), e)
assert np.allclose(g, -2 * e @ Phi)  # -2 e^T Phi
assert np.allclose(g, 2 * Phi.T @ (Phi @ theta - y))  # 2 Phi^T (Phi theta - y)
assert np.allclose(g, central_difference(loss_numpy, theta), rtol=1e-6, atol=1e-8)

# -- the Hessian: 2 Phi^T Phi, the same at every theta ---------------------------------------
hess_L = einderiv.hessian(SOURCE, "theta")
show(hess_L)
H = hess_L(y=y, Phi=Phi, theta=theta)
assert H.shape == (D, D)
assert np.allclose(H, 2 * Phi.T @ Phi)
assert np.allclose(hess_L(y=y, Phi=Phi, theta=rng.normal(size=D)), H)
# finite differences of the (already checked) gradient give the Hessian
fd_H = central_difference(lambda th: grad_L(y=y, Phi=Phi, theta=th), theta)
assert np.allclose(H, fd_H, rtol=1e-6, atol=1e-8)

# -- gradient descent driven by the compiled gradient ------------------------------------------
# grad_L was compiled once above; each call below reuses its einsum plan.  With the step
# eta = 1 / lambda_max(H) the iteration theta <- theta - eta grad is a contraction with
# rate 1 - lambda_min / lambda_max.
eigenvalues = np.linalg.eigvalsh(H)
eta = 1.0 / eigenvalues[-1]
theta_star = np.linalg.solve(Phi.T @ Phi, Phi.T @ y)  # the normal equations
print()
print(f"gradient descent: eta = {eta:.4f}, condition number of the Hessian {eigenvalues[-1] / eigenvalues[0]:.2f}")
estimate = np.zeros(D)
for step in range(1, 2001):
    gradient = grad_L(y=y, Phi=Phi, theta=estimate)
    estimate = estimate - eta * gradient
    if step in (1, 2, 5, 10, 20, 50, 100) or np.linalg.norm(gradient) < 1e-12:
        error = np.linalg.norm(estimate - theta_star) / np.linalg.norm(theta_star)
        print(f"  step {step:4d}: L = {loss_numpy(estimate):.12f}, relative error {error:.2e}")
    if np.linalg.norm(gradient) < 1e-12:
        break
print("  normal equations:", theta_star)
print("  gradient descent:", estimate)
assert np.linalg.norm(estimate - theta_star) <= 1e-8 * np.linalg.norm(theta_star)
assert np.allclose(grad_L(y=y, Phi=Phi, theta=theta_star), 0, atol=1e-10)
print("all checks passed")
