"""Gradient descent on J(theta) = theta^2 : a worked iteration table.

The update is theta <- theta - eta dJ/dtheta with dJ/dtheta = 2 theta, eta = 0.1 (the
table calls the step size alpha) and theta = 3 at the start.  The table has ten
iterations:

    Iteration  theta   alpha dJ/dtheta
        1      3       0.6
        2      2.4     0.48
        3      1.92    0.384
      ...
       10      0.403   0.081

einderiv derives dJ/dtheta, which is checked against 2 theta and against central finite
differences; its compiled gradient then drives the iteration, and the table is printed and
compared with the table's values to their three printed decimals.
Run: ``python examples/gradient_descent.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(6)

# The two ways of writing theta^2 give the same derivative, 2 theta.
derivatives = {source: einderiv.grad(source, "theta") for source in ["J = theta theta", "J = theta^2"]}
for source, dJ in derivatives.items():
    show(dJ)
    for theta in [3.0, -1.25, *rng.normal(size=3)]:
        theta = np.float64(theta)
        value = dJ(theta=theta)
        assert np.shape(value) == ()
        assert np.allclose(einderiv.evaluate(source, theta=theta), theta**2)
        assert np.allclose(value, 2 * theta)  # the closed form
        assert np.allclose(value, central_difference(lambda t: t**2, theta), rtol=1e-8, atol=1e-10)

# The worked table: theta and alpha * dJ/dtheta, printed to three decimals.
NOTES_THETA = [3, 2.4, 1.92, 1.536, 1.229, 0.983, 0.786, 0.629, 0.503, 0.403]
NOTES_STEP = [0.6, 0.48, 0.384, 0.307, 0.246, 0.197, 0.157, 0.126, 0.101, 0.081]

dJ = derivatives["J = theta theta"]  # compiled once, called every iteration
eta = 0.1
theta = np.float64(3.0)
print()
print("Iteration   theta   alpha dJ/dtheta   (table: theta, alpha dJ/dtheta)")
for iteration, (notes_theta, notes_step) in enumerate(zip(NOTES_THETA, NOTES_STEP), start=1):
    step = eta * dJ(theta=theta)
    print(f"{iteration:9d}   {theta:5.3f}   {step:15.3f}   ({notes_theta}, {notes_step})")
    assert round(float(theta), 3) == notes_theta
    assert round(float(step), 3) == notes_step
    assert np.isclose(step, eta * 2 * theta)
    theta = theta - step

# The iteration is theta_k = 3 * 0.8^k: it converges to the minimiser theta* = 0.
assert np.isclose(theta, 3 * 0.8**10)
for _ in range(200):
    theta = theta - eta * dJ(theta=theta)
assert abs(theta) < 1e-18
print("all checks passed")
