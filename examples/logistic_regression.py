"""Binary logistic regression: the gradient and the Hessian of the negative log-likelihood.

With f_i = theta^T x_i, s_i = s(f_i) the sigmoid
and h_i = -[y_i log(s_i) + (1 - y_i) log(1 - s_i)], the chain rule

    dh_i/dtheta = dh_i/ds_i  ds_i/df_i  df_i/dtheta,
    dh_i/ds_i = (1 - y_i)/(1 - s_i) - y_i/s_i,   ds_i/df_i = s_i (1 - s_i),   df_i/dtheta = x_i^T

gives the gradient sum_i (s_i - y_i) x_i^T, and once more the Hessian X^T diag(s (1 - s)) X.

The loss is written twice: as a chain of statements (one per link of the chain rule), and as one statement.  Both
gradients and both Hessians are checked against the closed forms and against central finite
differences of a NumPy implementation of the loss.  Run: ``python examples/logistic_regression.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(4)
N, D = 10, 3
X = rng.normal(size=(N, D))
y = (rng.random(N) < 0.5).astype(np.float64)
theta = 0.5 * rng.normal(size=D)

PROGRAM = "z_n = X_nd theta_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))"
ONE_STATEMENT = "L = -(y_n log(sigmoid(X_nd theta_d)) + (1 - y_n) log(1 - sigmoid(X_nd theta_d)))"


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def loss_numpy(theta):
    s = sigmoid(X @ theta)
    return -np.sum(y * np.log(s) + (1 - y) * np.log(1 - s))


s = sigmoid(X @ theta)
gradient_notes = (s - y) @ X  # sum_i (s_i - y_i) x_i^T
hessian_notes = X.T @ np.diag(s * (1 - s)) @ X
fd_gradient = central_difference(loss_numpy, theta)

# The chain's first link, dh/ds = (1 - y)/(1 - s) - y/s, with s as an input.
dh_ds = einderiv.grad("L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))", "s")
show(dh_ds)
assert np.allclose(dh_ds(y=y, s=s), (1 - y) / (1 - s) - y / s)
print()

for name, source in [("the chain of statements", PROGRAM), ("one statement", ONE_STATEMENT)]:
    print(f"-- {name}: {source}")
    assert np.allclose(einderiv.evaluate(source, X=X, y=y, theta=theta), loss_numpy(theta))

    grad_L = einderiv.grad(source, "theta")
    show(grad_L)
    g = grad_L(X=X, y=y, theta=theta)
    assert g.shape == (D,)
    assert np.allclose(g, gradient_notes)
    assert np.allclose(g, fd_gradient, rtol=1e-6, atol=1e-8)

    hess_L = einderiv.hessian(source, "theta")
    show(hess_L)
    H = hess_L(X=X, y=y, theta=theta)
    assert H.shape == (D, D)
    assert np.allclose(H, hessian_notes)
    assert np.allclose(H, H.T)
    assert np.all(np.linalg.eigvalsh(H) > 0)  # the loss is convex: the Hessian is PD here
    # finite differences of the (already checked) gradient give the Hessian
    fd_hessian = central_difference(lambda th, grad_L=grad_L: grad_L(X=X, y=y, theta=th), theta)
    assert np.allclose(H, fd_hessian, rtol=1e-6, atol=1e-8)
    print()

print("all checks passed")
