"""Run the benchmark cases and print a table (``python -m benchmarks [--quick] [--json FILE]``).

For each case: einderiv's derive+compile time, its first call (planning included), its
steady-state evaluation (median of repeated calls), its peak memory during a call, the same
evaluation by the hand-written NumPy closed form and by each installed peer (jax.jit of
jax.hessian/jacrev/grad; torch.func), and ratios to the hand-written form, all measured side by
side in one run.  Every result is checked against the hand-written form before it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

import numpy as np

import einderiv
from benchmarks.cases import CASES, Case


def median_time(function, budget: float = 0.3, min_repeats: int = 5, max_repeats: int = 50) -> float:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget and len(times) < max_repeats):
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(function) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def _jax_peer(case: Case):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, "jax not installed"
    jax.config.update("jax_enable_x64", True)
    wrt = case.wrt[0]
    others = [k for k in case.arrays if k != wrt]

    def f(w, *rest):
        return case.peer_function(jnp, w, **dict(zip(others, rest)))

    transform = {"hessian": jax.hessian, "jacobian": jax.jacrev, "grad": jax.grad}[case.peer_kind]
    compiled = jax.jit(transform(f))
    args = [jnp.asarray(case.arrays[wrt])] + [jnp.asarray(case.arrays[k]) for k in others]

    def run():
        return compiled(*args).block_until_ready()

    return run, None


def _torch_peer(case: Case):
    try:
        import torch
        import torch.func
    except ImportError:
        return None, "torch not installed"
    wrt = case.wrt[0]
    others = [k for k in case.arrays if k != wrt]
    args = [torch.as_tensor(case.arrays[wrt])] + [torch.as_tensor(case.arrays[k]) for k in others]

    class _Namespace:
        """torch with the few numpy-style names the cases use."""

        def __getattr__(self, name):
            if name == "logaddexp":
                return torch.logaddexp
            if name == "zeros_like":
                return torch.zeros_like
            if name == "linalg":
                return torch.linalg
            if name == "logsumexp":
                return lambda z: torch.logsumexp(z, dim=0)
            return getattr(torch, name)

    xp = _Namespace()

    def f(w, *rest):
        return case.peer_function(xp, w, **dict(zip(others, rest)))

    transform = {"hessian": torch.func.hessian, "jacobian": torch.func.jacrev, "grad": torch.func.grad}[case.peer_kind]
    g = transform(f)

    def run():
        return g(*args)

    return run, None


PEERS = {"jax": _jax_peer, "torch": _torch_peer}


def run_case(factory, scale: float, peers: bool = True) -> dict:
    case: Case = factory(scale)
    t0 = time.perf_counter()
    derivative = einderiv.diff(case.source, case.wrt)
    derivative.line  # noqa: B018 - build the straight-line program (part of compiling)
    derive = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = derivative(**case.arrays)
    first = time.perf_counter() - t0
    expected = case.hand()
    scale_of = max(1.0, float(np.max(np.abs(expected))))
    ok = result.shape == expected.shape and np.allclose(result, expected, rtol=1e-7, atol=1e-9 * scale_of)
    row = {
        "case": case.name,
        "size": case.size,
        "check": "ok" if ok else "WRONG",
        "derive_compile_s": derive,
        "first_call_s": first,
    }
    if not ok:
        return row
    row["einderiv_s"] = median_time(lambda: derivative(**case.arrays))
    row["hand_s"] = median_time(case.hand)
    row["ratio"] = row["einderiv_s"] / row["hand_s"]
    row["peak_mb"] = peak_bytes(lambda: derivative(**case.arrays)) / 2**20
    row["output_mb"] = expected.nbytes / 2**20
    for peer, build in PEERS.items():
        if not peers or case.peer_function is None:
            continue
        run, why = build(case)
        if run is None:
            row[f"{peer}_note"] = why
            continue
        try:
            value = run()
            value = np.asarray(value.detach() if hasattr(value, "detach") else value)
            if value.shape != expected.shape:
                value = value.reshape(expected.shape)
            if not np.allclose(value, expected, rtol=1e-6, atol=1e-8 * scale_of):
                row[f"{peer}_note"] = "disagrees with the closed form"
                continue
            row[f"{peer}_s"] = median_time(run)
            row[f"{peer}_ratio"] = row[f"{peer}_s"] / row["hand_s"]
        except Exception as err:  # noqa: BLE001 - a peer failing is reported, not fatal
            row[f"{peer}_note"] = f"failed: {type(err).__name__}: {str(err)[:80]}"
    return row


def cores_line() -> str:
    """How many CPUs this process may use and the thread settings, for a benchmark's header.

    ``XLA_FLAGS`` do not keep jax 0.10's matrix products on one core (measured: cpu/wall 1.94
    with ``--xla_cpu_multi_thread_eigen=false``); ``taskset -c 0 python -m benchmarks...`` does,
    for every library in the process."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_NUM_THREADS", "XLA_FLAGS") if k in os.environ)
    return f"CPUs this process may use: {usable} of {os.cpu_count()}" + (f"; {settings}" if settings else "")


def format_seconds(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table(rows: list[dict]) -> str:
    head = (
        "| case | size | derive+compile | first call | einderiv | hand NumPy | ratio | peak MB (out MB) "
        "| jax | torch.func |"
    )
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        if r["check"] != "ok":
            lines.append(f"| {r['case']} | {r['size']} | WRONG RESULT | | | | | | | |")
            continue
        peers = []
        for peer in ("jax", "torch"):
            if f"{peer}_s" in r:
                peers.append(f"{format_seconds(r[peer + '_s'])} ({r[peer + '_ratio']:.1f}x)")
            else:
                peers.append(r.get(f"{peer}_note", "-"))
        lines.append(
            f"| {r['case']} | {r['size']} | {format_seconds(r['derive_compile_s'])} | "
            f"{format_seconds(r['first_call_s'])} | "
            f"{format_seconds(r['einderiv_s'])} | {format_seconds(r['hand_s'])} | {r['ratio']:.2f}x | "
            f"{r['peak_mb']:.1f} ({r['output_mb']:.1f}) | {peers[0]} | {peers[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks everything, times nothing useful")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    parser.add_argument("--no-peers", action="store_true", help="skip jax and torch even when installed")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose name contains TEXT")
    args = parser.parse_args(argv)
    scale = 0.02 if args.quick else 1.0
    rows = []
    for factory in CASES:
        if args.only and args.only not in factory.__name__ and args.only not in factory(0.01).name:
            continue
        rows.append(run_case(factory, scale, peers=not args.no_peers))
        print(f"  {rows[-1]['case']}: {rows[-1]['check']}", file=sys.stderr, flush=True)
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"einderiv {einderiv.__version__} benchmarks ({'quick' if args.quick else 'full'}) on {machine}")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "quick": args.quick, "rows": rows}, handle, indent=2)
    return 0 if all(r["check"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
