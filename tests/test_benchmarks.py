"""The benchmark suite at tiny sizes: it runs and every result matches its closed form (no timing
is asserted: the machines are shared and noisy)."""

from __future__ import annotations

import json

from benchmarks.run import main


def test_quick_benchmark_run_checks_every_case(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--no-peers", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 13
    assert all(row["check"] == "ok" for row in rows)
    assert "| Hessian of x^T A x |" in capsys.readouterr().out


def test_quick_backends_benchmark_checks_every_library(capsys):
    """Each installed library's result is compared with NumPy's before it is timed."""
    from benchmarks.backends import main as backends_main

    assert backends_main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| case | sizes | numpy |" in out and "| logistic Hessian |" in out
