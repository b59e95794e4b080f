"""Helpers shared by the examples: finite differences and printing a derivative."""

import numpy as np


def central_difference(f, x, h=1e-6):
    """Numerical d f(x) / d x, shape f(x).shape + x.shape, by central differences."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(np.shape(f(x)) + x.shape)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        out[(..., *idx)] = (np.asarray(f(x + step)) - np.asarray(f(x - step))) / (2 * h)
    return out


def show(derivative) -> None:
    """Print a derivative in index notation, then its einsum terms."""
    print(derivative)
    print("   einsum:", " + ".join(str(t) for t in derivative.einsum))
