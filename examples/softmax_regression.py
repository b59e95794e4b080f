"""Multi-class (softmax) logistic regression for one sample (a standard exercise).

Theta in R^{K x d}, x in R^d, y in R^K one-hot, and the loss

    f(Theta) = -y^T log softmax(Theta x),   softmax(z) = exp(z) / (1^T exp(z)).

By hand, with the trace trick, one derives df/dTheta = (softmax(Theta x) - y) x^T.

Here the softmax is written out by hand with exp, an explicit sum and a division, and
einderiv differentiates through it.  The gradient is checked against that closed form
and against central finite differences of a NumPy implementation of the loss, for every
class the one-hot y can pick.  Run: ``python examples/softmax_regression.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(5)
K, D = 4, 3
Theta = rng.normal(size=(K, D))
x = rng.normal(size=D)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def loss_numpy(Theta, y):
    return -y @ np.log(softmax(Theta @ x))


# The softmax as a program: the derivative writes the normaliser as "/ sum_k(e_k)".
PROGRAM = "z_k = Theta_kd x_d; e_k = exp(z_k); p_k = e_k / sum_j(e_j); L = -y_k log(p_k)"
# The same loss as one statement.  The two exp calls need different summation letters
# (d and e): a letter shared by two calls in one product is elementwise across them.
ONE_STATEMENT = "L = -y_k log(exp(Theta_kd x_d) / sum_j(exp(Theta_je x_e)))"

for name, source in [("program", PROGRAM), ("one statement", ONE_STATEMENT)]:
    print(f"-- {name}: {source}")
    grad_L = einderiv.grad(source, "Theta")
    show(grad_L)
    for label in range(K):
        y = np.eye(K)[label]
        p = softmax(Theta @ x)
        assert np.allclose(einderiv.evaluate(source, Theta=Theta, x=x, y=y), loss_numpy(Theta, y))
        g = grad_L(Theta=Theta, x=x, y=y)
        assert g.shape == (K, D)
        assert np.allclose(g, np.outer(p - y, x))  # (softmax(Theta x) - y) x^T
        fd = central_difference(lambda T, y=y: loss_numpy(T, y), Theta)
        assert np.allclose(g, fd, rtol=1e-6, atol=1e-8)
    print()

# The intermediate p is the softmax itself.
assert np.allclose(einderiv.evaluate(PROGRAM, of="p", Theta=Theta, x=x), softmax(Theta @ x))
# Each column of the gradient sums to zero over the classes, because p - y does.
y = np.eye(K)[2]
assert np.allclose(einderiv.grad(PROGRAM, "Theta")(Theta=Theta, x=x, y=y).T @ np.ones(K), 0)

# The normaliser as a statement of its own, and the simplified form
# f = -y^T Theta x + log(1^T exp(Theta x)): both give the same gradient.
SEPARATE_S = "z_k = Theta_kd x_d; e_k = exp(z_k); S = sum_j(e_j); p_k = e_k / S; L = -y_k log(p_k)"
LOG_SUM_EXP = "z_k = Theta_kd x_d; L = -y_k z_k + log(sum_j(exp(z_j)))"
for source in (SEPARATE_S, LOG_SUM_EXP):
    d = einderiv.grad(source, "Theta")
    show(d)
    for label in range(K):
        y = np.eye(K)[label]
        assert np.isclose(einderiv.evaluate(source, Theta=Theta, x=x, y=y), loss_numpy(Theta, y))
        g = d(Theta=Theta, x=x, y=y)
        assert np.allclose(g, np.outer(softmax(Theta @ x) - y, x))
        assert np.allclose(g, central_difference(lambda T, y=y: loss_numpy(T, y), Theta), atol=1e-7)

print("all checks passed")
