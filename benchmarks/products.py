"""Derivative products against the gradient, the full Hessian and jax (``python -m benchmarks.products``).

For the logistic loss, least squares and a two-layer tanh network: einderiv's ``hvp`` against
its own gradient and against ``jax.jit`` of jax's jvp-of-grad; ``hessian_diag`` of the logistic
loss against its full Hessian (and against ``jax.jit`` of the diagonal of ``jax.hessian``). Every
result is checked against jax in float64 first; then the forms are timed side by side, one call
of each in turn per repetition, and the table gives medians and ratios. The issue's floors are
printed as met or not; nothing about speed is asserted in the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import einderiv
from benchmarks.run import cores_line, format_seconds


def _timed(functions: dict, repeats: int, peers: tuple = ("jax",)) -> dict:
    """Median seconds per call of each function, calls interleaved.  Before and after a peer's
    call the loop waits 50 ms, untimed: jax's thread pool keeps the cores busy for a while after
    a call returns, and slowed whichever einderiv function ran next by up to 1.7x (hessian_diag:
    4.7 ms alone, 7.8 ms right after jax), and OpenBLAS's threads spin after a matrix product the
    same way.  One einderiv function after another runs without a pause, as in a user's loop (a
    pause there let OpenBLAS's threads sleep, and the symmetric assembly's blocks of products
    took 80 ms for 69)."""
    times = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm: plans, jit compilation
    for _ in range(repeats):
        for name, function in functions.items():
            if name in peers:
                time.sleep(0.05)
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
            if name in peers:
                time.sleep(0.05)
    return {name: statistics.median(values) for name, values in times.items()}


def _cases(scale: float):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    n, d, h = int(20000 * scale), int(200 * scale) or 2, int(64 * scale) or 2
    X, y = rng.normal(size=(n, d)) / np.sqrt(d), rng.random(n)
    w, v = rng.normal(size=d), rng.normal(size=d)
    W1, W2, V1 = 0.3 * rng.normal(size=(d, h)), 0.3 * rng.normal(size=h), rng.normal(size=(d, h))
    yield (
        "logistic loss",
        f"N={n}, D={d}",
        "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)",
        "w",
        {"X": X, "y": y, "w": w},
        v,
        lambda w: jnp.sum(jax.nn.softplus(X @ w) - y * (X @ w)),
    )
    yield (
        "least squares",
        f"N={n}, D={d}",
        "L = (y_n - X_nd w_d)^2",
        "w",
        {"X": X, "y": y, "w": w},
        v,
        lambda w: jnp.sum((y - X @ w) ** 2),
    )
    yield (
        "two-layer tanh, by W1",
        f"N={n}, D={d}, H={h}",
        "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2",
        "W1",
        {"X": X, "y": y, "W1": W1, "W2": W2},
        V1,
        lambda W1: 0.5 * jnp.sum((jnp.tanh(X @ W1) @ W2 - y) ** 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    options = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    scale, repeats = (0.05, 3) if options.quick else (1.0, 30)
    print(cores_line())
    print(f"{'case':<24} {'size':<22} {'grad':>9} {'hvp':>9} {'jax hvp':>9} {'hvp/grad':>9} {'hvp/jax':>8}")
    floors = []
    for name, size, source, wrt, arrays, tangent, loss in _cases(scale):
        import jax.numpy as jnp

        gradient = einderiv.grad(source, wrt)
        product = einderiv.hvp(source, wrt, v="v")
        with_v = {**arrays, "v": tangent}
        at, along = jnp.asarray(arrays[wrt]), jnp.asarray(tangent)
        peer = jax.jit(lambda a, t, loss=loss: jax.jvp(jax.grad(loss), (a,), (t,))[1])
        expected = np.asarray(peer(at, along))
        np.testing.assert_allclose(product(**with_v), expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())
        times = _timed(
            {
                "grad": lambda g=gradient, a=arrays: g(**a),
                "hvp": lambda p=product, a=with_v: p(**a),
                "jax": lambda p=peer, a=at, t=along: p(a, t).block_until_ready(),
            },
            repeats,
        )
        ratio, versus = times["hvp"] / times["grad"], times["hvp"] / times["jax"]
        floors.append((name, ratio, versus))
        print(
            f"{name:<24} {size:<22} {format_seconds(times['grad']):>9} {format_seconds(times['hvp']):>9} "
            f"{format_seconds(times['jax']):>9} {ratio:>8.2f}x {versus:>7.2f}x"
        )
    print()
    n, d = int(5000 * scale) or 4, int(1000 * scale) or 4
    rng = np.random.default_rng(1)
    X, y, w = rng.normal(size=(n, d)) / np.sqrt(d), rng.random(n), rng.normal(size=d)
    source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
    diagonal, full = einderiv.hessian_diag(source, "w"), einderiv.hessian(source, "w")
    import jax.numpy as jnp

    def loss(w):
        return jnp.sum(jax.nn.softplus(X @ w) - y * (X @ w))

    peer = jax.jit(lambda w: jnp.diag(jax.hessian(loss)(w)))
    np.testing.assert_allclose(diagonal(X=X, y=y, w=w), np.diag(full(X=X, y=y, w=w)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(diagonal(X=X, y=y, w=w), np.asarray(peer(jnp.asarray(w))), rtol=1e-7, atol=1e-12)
    times = _timed(
        {
            "diag": lambda: diagonal(X=X, y=y, w=w),
            "full": lambda: full(X=X, y=y, w=w),
            "jax": lambda: peer(jnp.asarray(w)).block_until_ready(),
        },
        max(3, repeats // 3),
    )
    speedup = times["full"] / times["diag"]
    print(f"Hessian diagonal, logistic loss, N={n}, D={d}:")
    print(
        f"  hessian_diag {format_seconds(times['diag'])}, full Hessian {format_seconds(times['full'])} "
        f"({speedup:.1f}x faster), jax.jit diag(hessian) {format_seconds(times['jax'])}"
    )
    print()
    n, d, h = int(20000 * scale) or 4, int(200 * scale) or 2, int(64 * scale) or 2
    rng = np.random.default_rng(2)
    arrays = {
        "X": rng.normal(size=(n, d)) / np.sqrt(d),
        "y": rng.normal(size=n),
        "W1": 0.3 * rng.normal(size=(d, h)),
        "b1": rng.normal(size=h),
        "W2": 0.3 * rng.normal(size=h),
        "b2": np.array(0.1),
    }
    source = "h_nk = tanh(X_nd W1_dk + b1_k); L = 0.5 (h_nk W2_k + b2 - y_n)^2"
    names = ["W1", "b1", "W2", "b2"]
    together = einderiv.grad(source, names)
    singles = {name: einderiv.grad(source, name) for name in names}

    def network(W1, b1, W2, b2):
        X, y = jnp.asarray(arrays["X"]), jnp.asarray(arrays["y"])
        return 0.5 * jnp.sum((jnp.tanh(X @ W1 + b1) @ W2 + b2 - y) ** 2)

    peer = jax.jit(jax.grad(network, argnums=(0, 1, 2, 3)))
    params = [jnp.asarray(arrays[name]) for name in names]
    for got, want in zip(together(**arrays), peer(*params)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-8, atol=1e-12)
    functions = {"together": lambda: together(**arrays), "jax": lambda: [g.block_until_ready() for g in peer(*params)]}
    functions.update({name: (lambda g=g: g(**arrays)) for name, g in singles.items()})
    times = _timed(functions, repeats)
    slowest = max(times[name] for name in names)
    print(f"Gradients of a two-layer network by W1, b1, W2, b2 (N={n}, D={d}, H={h}):")
    print(
        f"  one call {format_seconds(times['together'])}, slowest single gradient {format_seconds(slowest)} "
        f"({times['together'] / slowest:.2f}x), all four singly {format_seconds(sum(times[n] for n in names))}, "
        f"jax.jit(jax.grad(argnums=(0, 1, 2, 3))) {format_seconds(times['jax'])}"
    )
    several = (times["together"] / slowest, times["together"] / times["jax"])
    print()
    import einderiv.contraction as runtime

    assembly = []
    for n, d in ((int(2048 * scale) or 4, int(256 * scale) or 4), (int(5000 * scale) or 4, int(1000 * scale) or 4)):
        rng = np.random.default_rng(3)
        X, y, w = rng.normal(size=(n, d)) / np.sqrt(d), rng.random(n), rng.normal(size=d)
        source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
        assembled = einderiv.hessian(source, "w")
        saved = runtime.GRAM_MIN_SIZE
        runtime.GRAM_MIN_SIZE = 10**9  # planned now, without the symmetric assembly
        try:
            full = einderiv.hessian(source, "w")
            full(X=X, y=y, w=w)
        finally:
            runtime.GRAM_MIN_SIZE = saved

        def logistic(w, X=X, y=y):
            return jnp.sum(jax.nn.softplus(X @ w) - y * (X @ w))

        peer = jax.jit(jax.hessian(logistic))
        np.testing.assert_allclose(assembled(X=X, y=y, w=w), full(X=X, y=y, w=w), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(assembled(X=X, y=y, w=w), np.asarray(peer(jnp.asarray(w))), rtol=1e-7, atol=1e-12)
        times = _timed(
            {
                "assembled": lambda h=assembled, a=(X, y, w): h(X=a[0], y=a[1], w=a[2]),
                "full": lambda h=full, a=(X, y, w): h(X=a[0], y=a[1], w=a[2]),
                "jax": lambda p=peer, w=w: p(jnp.asarray(w)).block_until_ready(),
            },
            max(3, repeats // 3),
        )
        assembly.append((n, d, times["full"] / times["assembled"], times["jax"] / times["assembled"]))
        print(
            f"Logistic Hessian, N={n}, D={d}: symmetric assembly {format_seconds(times['assembled'])}, "
            f"full {format_seconds(times['full'])} ({assembly[-1][2]:.2f}x), "
            f"jax.jit(jax.hessian) {format_seconds(times['jax'])} ({assembly[-1][3]:.2f}x)"
        )
    print()
    print("floors (issue 15):")
    for name, ratio, versus in floors:
        print(f"  {name}: hvp/grad {ratio:.2f}x ({'met' if ratio <= 1.5 else 'NOT met'}: at most 1.5x),", end=" ")
        print(f"hvp/jax {versus:.2f}x ({'met' if versus < 1 else 'NOT met'}: faster than jax.jit)")
    print(f"  hessian_diag: {speedup:.1f}x faster than the full Hessian ({'met' if speedup >= 10 else 'NOT met'}: 10x)")
    (n1, d1, _, versus_jax), (n2, d2, versus_full, _) = assembly
    print(
        f"  symmetric assembly: {versus_jax:.2f}x faster than jax.jit(jax.hessian) at {n1}x{d1} "
        f"({'met' if versus_jax >= 2.5 else 'NOT met'}: 2.5x), {versus_full:.2f}x faster than the full "
        f"evaluation at {n2}x{d2} ({'met' if versus_full >= 1.5 else 'NOT met'}: 1.5x)"
    )
    print(
        f"  several parameters: {several[0]:.2f}x the slowest single gradient "
        f"({'met' if several[0] <= 1.3 else 'NOT met'}: within 1.3x), {several[1]:.2f}x jax.jit "
        f"({'met' if several[1] <= 1 else 'NOT met'}: no slower)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
