"""One compiled derivative, evaluated by each installed array library
(``python -m benchmarks.backends [--quick]``): NumPy (the fast path), torch, JAX eager, JAX under
``jax.jit``, dask (threads) and, where a GPU is present, torch CUDA, JAX GPU and CuPy.

Every result is compared with NumPy's before it is timed (float64, 1e-10 relative); the table
gives the median time per call and its ratio to NumPy, measured in this one run.  Nothing here is
asserted about speed.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import time
import warnings

import numpy as np

import einderiv

LOGISTIC = "L = -y_n log(sigmoid(X_ni w_i)) - (1 - y_n) log(1 - sigmoid(X_ni w_i))"
LEAST_SQUARES = "L = (y_n - X_ni w_i)(y_n - X_nj w_j)"
CASES = [
    ("Hessian of x^T A x", "f = x_i A_ij x_j", "x", "hessian", {"x": (300,), "A": (300, 300)}),
    ("least-squares gradient", LEAST_SQUARES, "w", "grad", {"y": (20000,), "X": (20000, 50), "w": (50,)}),
    ("logistic gradient", LOGISTIC, "w", "grad", {"y": (20000,), "X": (20000, 50), "w": (50,)}),
    ("logistic Hessian", LOGISTIC, "w", "hessian", {"y": (20000,), "X": (20000, 50), "w": (50,)}),
    ("dK/dR, K = R^T R", "K_pq = R_mp R_mq", "R", "jacobian", {"R": (30, 20)}),
    ("Hessian of log det X", "f = logdet(X)", "X", "hessian", {"X": (30, 30)}),
]  # fmt: skip


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _libraries():
    """(label, convert, wrap, finish): how to hand each library its arrays and wait for a result."""
    out = [("numpy", lambda a: a, None, lambda r: r)]
    if _installed("torch"):
        import torch

        out.append(("torch cpu", torch.as_tensor, None, lambda r: r))
        if torch.cuda.is_available():
            out.append(("torch cuda", lambda a: torch.as_tensor(a, device="cuda"), None, _torch_sync))
    if _installed("jax"):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        cpu = jax.devices("cpu")[0]
        out.append(("jax eager", lambda a: jax.device_put(jnp.asarray(a), cpu), None, _jax_ready))
        out.append(("jax.jit", lambda a: jax.device_put(jnp.asarray(a), cpu), jax.jit, _jax_ready))
        if any(d.platform == "gpu" for d in jax.devices()):
            out.append(("jax.jit gpu", jnp.asarray, jax.jit, _jax_ready))
    if _installed("cupy"):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                out.append(("cupy", cupy.asarray, None, _cupy_sync))
        except Exception:  # noqa: BLE001, S110 - no driver or device: no cupy column
            pass
    if _installed("dask"):
        import dask.array as da

        def to_dask(a):
            return da.from_array(a, chunks=(max(1, a.shape[0] // 4), *a.shape[1:]) if a.ndim else ())

        out.append(("dask", to_dask, None, lambda r: r.compute(scheduler="threads")))
    return out


def _torch_sync(r):
    import torch

    torch.cuda.synchronize()
    return r


def _jax_ready(r):
    return r.block_until_ready()


def _cupy_sync(r):
    import cupy

    cupy.cuda.Stream.null.synchronize()
    return r


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if hasattr(value, "get"):
        return value.get()
    return np.asarray(value)


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _format(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke test)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*Increasing number of chunks.*")  # dask, on tiny arrays
    repeats = 3 if args.quick else 15
    libraries = _libraries()
    rng = np.random.default_rng(0)
    print(f"einderiv {einderiv.__version__} backends on {platform.machine()}, {platform.python_version()}")
    print("| case | sizes | " + " | ".join(label for label, *_ in libraries) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in libraries) + " |")
    for name, source, wrt, kind, shapes in CASES:
        if args.quick:
            shapes = {k: tuple(min(s, 8) for s in v) for k, v in shapes.items()}
        derivative = getattr(einderiv, kind)(source, wrt)
        arrays = {k: rng.normal(size=s) for k, s in shapes.items()}
        if "y" in arrays and "sigmoid" in source:
            arrays["y"] = (arrays["y"] > 0).astype(float)
        if source == "f = logdet(X)":
            arrays["X"] = arrays["X"] @ arrays["X"].T + len(arrays["X"]) * np.eye(len(arrays["X"]))
        expected = derivative(**arrays)
        cells, base = [], None
        for label, convert, wrap, finish in libraries:
            given = {k: convert(v) for k, v in arrays.items()}
            function = (wrap or (lambda f: f))(lambda d=derivative, **kw: d(**kw))
            got = _to_numpy(finish(function(**given)))  # the first call plans (and traces, for jit)
            scale = max(1.0, float(np.abs(expected).max()))
            if not np.allclose(got, expected, rtol=1e-10, atol=1e-12 * scale):
                raise SystemExit(f"{name}: {label} disagrees with NumPy")
            seconds = _median_time(lambda: finish(function(**given)), repeats)  # noqa: B023
            base = seconds if base is None else base
            cells.append(f"{_format(seconds)} ({seconds / base:.2f}x)")
        sizes = ", ".join(f"{k}: {'x'.join(map(str, v))}" for k, v in shapes.items())
        print(f"| {name} | {sizes} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
