"""A two-layer network with tanh: einderiv's gradients against hand-written backpropagation.

    h = tanh(X W1 + b)        X: N x I, W1: I x J, b: J (the hidden bias, broadcast over rows)
    o = h W2                  W2: J x K
    L = ||o - Y||_F^2         Y: N x K

Backpropagation by hand (the chain rule run backwards):

    dL/do = 2 (o - Y),  dL/dW2 = h^T dL/do,  dL/dh = dL/do W2^T,
    dL/da = dL/dh * (1 - h^2)  (a = X W1 + b),  dL/dW1 = X^T dL/da,  dL/db = 1^T dL/da.

The network is written as a three-statement program and as a longer one with every
intermediate named; the gradients wrt W1, W2 and b are checked against the backprop above
and against central finite differences of a NumPy forward pass.
Run: ``python examples/two_layer_network.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(7)
N, I, J, K = 5, 3, 4, 2
params = {
    "X": rng.normal(size=(N, I)),
    "W1": 0.7 * rng.normal(size=(I, J)),
    "b": 0.3 * rng.normal(size=J),
    "W2": rng.normal(size=(J, K)),
    "Y": rng.normal(size=(N, K)),
}

COMPACT = "h_nj = tanh(X_ni W1_ij + b_j); o_nk = h_nj W2_jk; L = (o_nk - Y_nk)(o_nk - Y_nk)"
NAMED = "a_nj = X_ni W1_ij + b_j; h_nj = tanh(a_nj); o_nk = h_nj W2_jk; r_nk = o_nk - Y_nk; L = r_nk r_nk"


def loss_numpy(X, W1, b, W2, Y):
    o = np.tanh(X @ W1 + b) @ W2
    return np.sum((o - Y) ** 2)


def backprop(X, W1, b, W2, Y):
    """Hand-written reverse mode: the gradients wrt W1, W2 and b."""
    h = np.tanh(X @ W1 + b)
    o = h @ W2
    d_o = 2 * (o - Y)
    d_W2 = h.T @ d_o
    d_h = d_o @ W2.T
    d_a = d_h * (1 - h**2)
    return {"W1": X.T @ d_a, "W2": d_W2, "b": d_a.sum(axis=0)}


expected = backprop(**params)
for name, source in [("compact", COMPACT), ("every intermediate named", NAMED)]:
    print(f"-- {name}: {source}")
    assert np.allclose(einderiv.evaluate(source, **params), loss_numpy(**params))
    # the hidden layer alone (evaluate with of= takes exactly the inputs that statement needs)
    layer_inputs = {k: params[k] for k in ("X", "W1", "b")}
    hidden = np.tanh(params["X"] @ params["W1"] + params["b"])
    assert np.allclose(einderiv.evaluate(source, of="h", **layer_inputs), hidden)
    for wrt in ["W1", "W2", "b"]:
        grad_L = einderiv.grad(source, wrt)
        show(grad_L)
        g = grad_L(**params)
        assert g.shape == params[wrt].shape
        assert np.allclose(g, expected[wrt])  # hand-written backprop

        def loss_of(value, wrt=wrt):
            return loss_numpy(**{**params, wrt: value})

        assert np.allclose(g, central_difference(loss_of, params[wrt]), rtol=1e-6, atol=1e-8)
    print()

# A few steps of gradient descent on all three parameters with the compiled gradients.
grads = {wrt: einderiv.grad(COMPACT, wrt) for wrt in ["W1", "W2", "b"]}
state = dict(params)
losses = [loss_numpy(**state)]
for _ in range(50):
    step = {wrt: g(**state) for wrt, g in grads.items()}
    for wrt, value in step.items():
        state[wrt] = state[wrt] - 0.01 * value
    losses.append(loss_numpy(**state))
print(f"gradient descent, 50 steps of 0.01: L {losses[0]:.4f} -> {losses[-1]:.4f}")
assert losses[-1] < losses[0]
print("all checks passed")
