"""Numerical checks shared by the tests: central finite differences in float64."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from benchmarks.codegen import load_generated as load_module  # noqa: F401 - shared by the codegen tests


def central_difference(function, arrays: dict, wrt: str, h: float = 1e-6) -> np.ndarray:
    """d function(arrays) / d arrays[wrt] by central differences: shape out.shape + wrt.shape."""
    base = {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}
    x = base[wrt]
    out_shape = np.shape(function(**base))
    result = np.zeros(out_shape + x.shape)
    for position in np.ndindex(*x.shape):
        plus = dict(base)
        minus = dict(base)
        plus[wrt] = x.copy()
        minus[wrt] = x.copy()
        plus[wrt][position] += h
        minus[wrt][position] -= h
        slope = (np.asarray(function(**plus)) - np.asarray(function(**minus))) / (2 * h)
        result[(Ellipsis, *position)] = slope
    return result


def assert_matches_fd(derivative, function, arrays: dict, wrt: str, rtol: float = 1e-6, atol: float = 1e-6):
    """Assert that an einderiv derivative equals central differences of ``function``."""
    analytic = np.asarray(derivative(**arrays))
    numeric = central_difference(function, arrays, wrt)
    assert analytic.shape == numeric.shape, (analytic.shape, numeric.shape)
    scale = max(1.0, float(np.max(np.abs(numeric))) if numeric.size else 1.0)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol * scale)


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``python -m einderiv ARGS`` as a subprocess, with its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "einderiv", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def jax_float64():
    """jax and jax.numpy with float64 enabled (the tests' independent reference); the test is
    skipped where jax is not installed."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax, jax.numpy


def assert_printed_reads_back(derivative, arrays: dict, powers_as_products: bool = False):
    """The printed derivative is input text for it.  Where it prints its normal form, its output
    statement reads back as that (up to the names of summed indices); where it prints the
    differences the user wrote (``derivative.shown``: evaluated through them, and printed so),
    the whole text reads back to the numbers the derivative gives."""
    import einderiv
    from einderiv.lower import normalize
    from einderiv.normal import equivalent

    text = str(derivative)
    if derivative.shown is None:
        reparsed = einderiv.parse(text).output
        assert equivalent(normalize(reparsed.rhs, derivative.indices), derivative.expr, powers_as_products), text
        return
    read = einderiv.compile(text)
    got = read(**{k: v for k, v in arrays.items() if k in read.ranks})
    want = derivative(**{k: v for k, v in arrays.items() if k in derivative.ranks})
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale, err_msg=text)
