"""The chain rule through a program (after Deisenroth, Faisal and Ong, Mathematics for Machine Learning, ch. 5).

h(t) = f(g(t)) with f(x) = exp(x1 x2^2) and x = g(t) = (t cos t, t sin t).  The textbook
computes, by the chain rule,

    dh/dt = exp(x1 x2^2) (x2^2 (cos t - t sin t) + 2 x1 x2 (sin t + t cos t)).

einderiv takes the same thing as a three-statement program, runs the chain rule backwards
through it (the adjoints dh/dx1 and dh/dx2 appear as statements of their own) and gives a
scalar derivative.  It is checked against that closed form and against central finite
differences of a NumPy implementation of h.  Run: ``python examples/chain_rule.py``.
"""

import numpy as np
from _checks import central_difference, show

import einderiv

rng = np.random.default_rng(1)

SOURCE = "x1 = t cos(t); x2 = t sin(t); h = exp(x1 x2^2)"


def h_numpy(t):
    x1, x2 = t * np.cos(t), t * np.sin(t)
    return np.exp(x1 * x2**2)


def dh_dt_notes(t):
    """The closed form derived by hand with the chain rule."""
    x1, x2 = t * np.cos(t), t * np.sin(t)
    return np.exp(x1 * x2**2) * (x2**2 * (np.cos(t) - t * np.sin(t)) + 2 * x1 * x2 * (np.sin(t) + t * np.cos(t)))


dh = einderiv.diff(SOURCE, "t")
show(dh)
assert dh.indices == ()  # a scalar function of a scalar: the derivative is a scalar

print()
print("     t          h(t)        dh/dt (einderiv)   dh/dt (by hand) dh/dt (finite diff.)")
for t in [-1.7, -0.4, 0.3, 0.9, 1.3, 2.0, *rng.uniform(-2.5, 2.5, size=4)]:
    t = np.float64(t)
    value = einderiv.evaluate(SOURCE, t=t)
    derived = dh(t=t)
    notes = dh_dt_notes(t)
    numeric = central_difference(h_numpy, t)
    print(f"  {t:5.2f}  {value:12.6f}  {derived:17.9f}  {notes:14.9f}  {float(numeric):17.9f}")
    assert np.shape(derived) == ()
    assert np.allclose(value, h_numpy(t), rtol=1e-12, atol=0)
    assert np.allclose(derived, notes, rtol=1e-12, atol=1e-14)
    assert np.allclose(derived, numeric, rtol=1e-7, atol=1e-9)

# The intermediates are ordinary statements: x2 can be asked for by name.
t = np.float64(0.9)
assert np.allclose(einderiv.evaluate(SOURCE, of="x2", t=t), t * np.sin(t))
print("all checks passed")
