"""Matrix functions with and without one factorisation per matrix per evaluation
(``python -m benchmarks.linalg [--quick] [--sizes 50 300 1000]``).

For each case and size, three callables are timed in the same run, interleaved round by round:

* ``before``: einderiv with ``einderiv.linalg.SHARE_FACTORISATIONS`` off: each of inv, det,
  logdet and every solve is its own ``numpy.linalg`` call (what einderiv did before);
* ``LU only``: one LAPACK LU factorisation of each matrix per evaluation, read by every function
  of it (``einderiv.linalg.CHOLESKY`` off);
* ``after``: einderiv as it is: the same, but an exactly symmetric matrix with a positive
  diagonal is tried by Cholesky first (and factorised by LU where that fails);
* ``jax.jit``: ``jax.jit`` of ``jax.grad`` (or of the function) on the CPU, float64, for reference.

Every result is checked against its NumPy closed form before it is timed.  The table gives the
median time per call (milliseconds); nothing here is asserted about speed.  On a shared machine
the numbers are steadier on one core: ``OPENBLAS_NUM_THREADS=1 taskset -c 0 python -m
benchmarks.linalg`` (``XLA_FLAGS`` alone do not keep jax's matrix products on one core).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import einderiv
import einderiv.linalg as linalg

GAUSSIAN = "L = -0.5 logdet(S) - 0.5 r_i inv(S)_ij r_j"


@dataclass
class Case:
    name: str
    source: str
    wrt: str | None  # the gradient by this input, or the value where None
    inputs: Callable[[int, np.random.Generator], dict]
    expected: Callable[[dict], np.ndarray]
    jax: Callable | None = None  # (jnp) -> the function of the inputs that jax.grad / jax.jit takes


def _general(n, rng):
    """Not symmetric, every eigenvalue in the disc of radius ~sqrt(n) about 2 sqrt(n): det > 0."""
    return rng.standard_normal((n, n)) + 2 * np.sqrt(n) * np.eye(n)


def _spd(n, rng):
    g = rng.standard_normal((n, n))
    return g @ g.T / n + np.eye(n)


def _indefinite(n, rng):
    """Symmetric with one negative eigenvalue and a positive diagonal: Cholesky is tried and fails
    part of the way (at pivot 180 of 300, 592 of 1000 with seed 0), then LU: the worst case."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.linspace(1.0, 2.0, n)
    values[rng.integers(n)] = -1.0
    m = (q * values) @ q.T
    return (m + m.T) / 2  # exactly symmetric


def _vectors(n, rng, *names):
    return {name: rng.standard_normal(n) for name in names}


def _abx(make):
    return lambda n, rng: {"X": make(n, rng), **_vectors(n, rng, "a", "b")}


def _abx_gradient(v):
    xi = np.linalg.inv(v["X"])
    return -xi.T @ np.outer(v["a"], v["b"]) @ xi.T


def _gaussian_gradient(v):
    si = np.linalg.inv(v["S"])
    return -0.5 * si.T + 0.5 * si.T @ np.outer(v["r"], v["r"]) @ si.T


def _jax_abx(jnp):
    return lambda X, a, b: a @ jnp.linalg.solve(X, b)


def _jax_gaussian(jnp):
    return lambda S, r: -0.5 * jnp.linalg.slogdet(S)[1] - 0.5 * r @ jnp.linalg.solve(S, r)


CASES = [
    Case("(a) grad a^T X^-1 b", "f = a_i inv(X)_ij b_j", "X", _abx(_general), _abx_gradient, _jax_abx),
    Case(
        "(b) Gaussian grad by S, S SPD",
        GAUSSIAN,
        "S",
        lambda n, rng: {"S": _spd(n, rng), **_vectors(n, rng, "r")},
        _gaussian_gradient,
        _jax_gaussian,
    ),
    Case(
        "(b') Gaussian grad by S, S not symmetric",
        GAUSSIAN,
        "S",
        lambda n, rng: {"S": _general(n, rng), **_vectors(n, rng, "r")},
        _gaussian_gradient,
        _jax_gaussian,
    ),
    Case(
        "(c) inv(X)",
        "Y_ij = inv(X)_ij",
        None,
        lambda n, rng: {"X": _general(n, rng)},
        lambda v: np.linalg.inv(v["X"]),
        lambda jnp: lambda X: jnp.linalg.inv(X),
    ),
    Case(
        "(c') inv(S), S SPD",
        "Y_ij = inv(S)_ij",
        None,
        lambda n, rng: {"S": _spd(n, rng)},
        lambda v: np.linalg.inv(v["S"]),
        lambda jnp: lambda S: jnp.linalg.inv(S),
    ),
    Case(
        "(d) det(X)",
        "f = det(X)",
        None,
        lambda n, rng: {"X": _general(n, rng) / np.sqrt(n)},  # det of order 1e0..1e+100, not inf
        lambda v: np.linalg.det(v["X"]),
        lambda jnp: lambda X: jnp.linalg.det(X),
    ),
    Case(
        "(d) grad det(X)",
        "f = det(X)",
        "X",
        lambda n, rng: {"X": _general(n, rng) / np.sqrt(n)},
        lambda v: np.linalg.det(v["X"]) * np.linalg.inv(v["X"]).T,
        lambda jnp: lambda X: jnp.linalg.det(X),
    ),
    Case(
        "(d) logdet(X)",
        "f = logdet(X)",
        None,
        lambda n, rng: {"X": _general(n, rng)},
        lambda v: np.linalg.slogdet(v["X"])[1],
        lambda jnp: lambda X: jnp.linalg.slogdet(X)[1],
    ),
    Case(
        "(d) grad logdet(X)",
        "f = logdet(X)",
        "X",
        lambda n, rng: {"X": _general(n, rng)},
        lambda v: np.linalg.inv(v["X"]).T,
        lambda jnp: lambda X: jnp.linalg.slogdet(X)[1],
    ),
    Case(
        "(d) logdet(S), S SPD",
        "f = logdet(S)",
        None,
        lambda n, rng: {"S": _spd(n, rng)},
        lambda v: np.linalg.slogdet(v["S"])[1],
        lambda jnp: lambda S: jnp.linalg.slogdet(S)[1],
    ),
    Case(
        "(e) grad a^T H^-1 b, H symmetric indefinite",
        "f = a_i inv(X)_ij b_j",
        "X",
        _abx(_indefinite),
        _abx_gradient,
        _jax_abx,
    ),
    Case(
        "(e') one solve inv(H) b, H symmetric indefinite",
        "u_i = inv(X)_ij b_j",
        None,
        lambda n, rng: {"X": _indefinite(n, rng), **_vectors(n, rng, "b")},
        lambda v: np.linalg.solve(v["X"], v["b"]),
        lambda jnp: lambda X, b: jnp.linalg.solve(X, b),
    ),
]


def _compiled(case: Case, share: bool, values: dict):
    """The compiled expression, planned (its first call) with sharing on or off."""
    compiled = einderiv.compile(case.source) if case.wrt is None else einderiv.grad(case.source, case.wrt)
    saved = linalg.SHARE_FACTORISATIONS
    linalg.SHARE_FACTORISATIONS = share
    try:
        compiled(**values)  # plans for these shapes: the choice is made here and kept
    finally:
        linalg.SHARE_FACTORISATIONS = saved
    return lambda: compiled(**values)


def _jax_callable(case: Case, values: dict):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    function = case.jax(jnp)
    names = list(values)
    if case.wrt is not None:
        function = jax.grad(function, argnums=names.index(case.wrt))
    jitted = jax.jit(function)
    arrays = [jax.device_put(jnp.asarray(values[n]), jax.devices("cpu")[0]) for n in names]
    return lambda: jitted(*arrays).block_until_ready()


def _check(label: str, got, expected) -> None:
    got = np.asarray(got)
    if not np.allclose(got, expected, rtol=1e-7, atol=1e-9 * max(1.0, float(np.abs(expected).max()))):
        raise AssertionError(f"{label}: does not match its closed form (max error {np.abs(got - expected).max():.3g})")


def measure(case: Case, n: int, rounds: int, with_jax: bool, seed: int = 0) -> dict:
    """Median seconds per call of each callable, interleaved in ``rounds`` rounds."""
    values = case.inputs(n, np.random.default_rng(seed))
    expected = case.expected(values)
    after = _compiled(case, True, values)
    callables = {"before": _compiled(case, False, values), "LU only": after, "after": after}
    if with_jax and case.jax is not None:
        callables["jax.jit"] = _jax_callable(case, values)
    # calls per round: about 20 ms of the slowest
    start = time.perf_counter()
    callables["before"]()
    per_round = max(1, min(200, int(0.02 / max(time.perf_counter() - start, 1e-7))))
    times: dict[str, list[float]] = {label: [] for label in callables}
    try:
        for round_ in range(rounds + 1):
            for label, call in callables.items():
                linalg.CHOLESKY = label != "LU only"  # read at each factorisation
                if round_ == 0:  # checked first, not timed
                    _check(f"{case.name}, n = {n}, {label}", call(), expected)
                    continue
                start = time.perf_counter()
                for _ in range(per_round):
                    call()
                times[label].append((time.perf_counter() - start) / per_round)
    finally:
        linalg.CHOLESKY = True
    return {label: statistics.median(t) for label, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 6, two rounds: a check that it runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 300, 1000])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    sizes, rounds = ([6], 2) if args.quick else (args.sizes, args.rounds)
    with_jax = not args.no_jax and importlib.util.find_spec("jax") is not None
    print(f"einderiv matrix functions, {platform.machine()}, numpy {np.__version__}; median ms per call")
    print()
    print("| case | n | before | LU only | after | after / before |" + (" jax.jit |" if with_jax else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if with_jax else ""))
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        for n in sizes:
            t = measure(case, n, rounds, with_jax)
            columns = ["before", "LU only", "after"] + (["jax.jit"] if "jax.jit" in t else [])
            cells = [f"{t[label] * 1e3:.3f}" for label in columns]
            cells.insert(3, f"{t['after'] / t['before']:.2f}")
            row = f"| {case.name} | {n} | " + " | ".join(cells) + " |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
