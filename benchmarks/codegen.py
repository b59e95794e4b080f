"""Generated NumPy modules against einderiv's own runtime (``python -m benchmarks.codegen [--quick]``).

For every benchmark case (``benchmarks.cases``, and the program form of ``benchmarks.programs``),
the derivative is compiled, written as a standalone NumPy module by ``einderiv.codegen`` and
imported; its result is checked against the runtime's, then the two are timed side by side (one
call of each in turn per repetition, medians).  The table gives both medians and their ratio.
Nothing here is asserted about speed; the tests run this at the quick scale for correctness only.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

import einderiv
from benchmarks import cases, programs
from benchmarks.programs import time_side_by_side
from benchmarks.run import format_seconds
from einderiv.codegen import generate


def load_generated(code: str, directory: Path, name: str):
    """A generated module written to ``directory/name.py`` and imported."""
    path = directory / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_cases(scale: float) -> list[tuple[str, str, str, list[str], dict]]:
    """(name, size, source, wrt, arrays) for every benchmark case."""
    out = []
    for factory in cases.CASES:
        case = factory(scale)
        out.append((case.name, case.size, case.source, case.wrt, case.arrays))
    for factory in programs.CASES:
        case = factory(scale)
        out.append((f"{case.name} (program)", case.size, case.program, case.wrt, case.arrays))
    return out


def run_case(number: int, name: str, size: str, source: str, wrt, arrays, directory: Path, budget: float) -> dict:
    derivative = einderiv.diff(source, wrt)
    module = load_generated(generate([derivative], "python"), directory, f"generated_{number}")
    (function_name,) = [n for n in vars(module) if n[0] != "_" and n not in ("np", "oe") and "value_and_" not in n]
    function = getattr(module, function_name)
    own = {k: arrays[k] for k in derivative.ranks}
    expected, got = derivative(**own), function(**own)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    ok = np.shape(got) == expected.shape and np.allclose(got, expected, rtol=1e-9, atol=1e-12 * scale)
    row = {"case": name, "size": size, "check": "ok" if ok else "WRONG"}
    if ok:
        runners = {"runtime": lambda: derivative(**own), "generated": lambda: function(**own)}
        medians = time_side_by_side(runners, budget)
        row.update(runtime_s=medians["runtime"], generated_s=medians["generated"], repeats=medians["repeats"])
        row["ratio"] = row["generated_s"] / row["runtime_s"]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| case | size | runtime | generated | generated / runtime |", "|" + " --- |" * 5]
    for r in rows:
        if r["check"] != "ok":
            lines.append(f"| {r['case']} | {r['size']} | WRONG RESULT | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['size']} | {format_seconds(r['runtime_s'])} | "
            f"{format_seconds(r['generated_s'])} | {r['ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks everything, times nothing useful")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose name contains TEXT")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per case (default 1, quick 0)")
    args = parser.parse_args(argv)
    scale = 0.02 if args.quick else 1.0
    budget = args.budget if args.budget is not None else (0.0 if args.quick else 1.0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for number, (name, size, source, wrt, arrays) in enumerate(all_cases(scale)):
            if args.only and args.only not in name:
                continue
            rows.append(run_case(number, name, size, source, wrt, arrays, Path(folder), budget))
            print(f"  {name}: {rows[-1]['check']}", file=sys.stderr, flush=True)
    machine = f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}"
    scale_name = "quick" if args.quick else "full"
    print(f"einderiv {einderiv.__version__}: generated NumPy modules vs the runtime ({scale_name}) on {machine}")
    print("medians, the two timed side by side (one call of each in turn)")
    print(table(rows))
    return 0 if all(r["check"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
