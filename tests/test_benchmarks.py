"""The benchmark suite at tiny sizes: it runs and every result matches its closed form (no timing
is asserted: the machines are shared and noisy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_quick_program_cases_match_their_closed_forms():
    """Every program-form case, at the quick scale: the step-by-step program and the one-statement
    form both give the hand-written closed form (no timing)."""
    from benchmarks.programs import CASES, check_case

    assert len(CASES) >= 10
    for factory in CASES:
        case = factory(0.02)
        assert case.program != case.statement and ";" in case.program and ";" not in case.statement
        check_case(case, with_jax=False)  # raises Disagreement naming the case and the form


def test_quick_program_cases_match_jax():
    """jax.jit of jax's autodiff agrees with each hand-written closed form (where jax is installed)."""
    pytest.importorskip("jax")
    from benchmarks.programs import CASES, agrees, jax_peer

    for factory in CASES:
        case = factory(0.02)
        expected = case.hand()
        got = np.asarray(jax_peer(case)()).reshape(expected.shape)
        assert agrees(got, expected, rtol=1e-7), case.name


def test_quick_program_benchmark_prints_its_table_and_floors(capsys):
    from benchmarks.programs import main as programs_main

    assert programs_main(["--quick", "--no-jax", "--only", "logistic_gradient", "--budget", "0"]) == 0
    out = capsys.readouterr().out
    assert "| logistic regression, gradient |" in out and "program within 1.1x of one-statement" in out


def test_quick_products_benchmark_checks_against_jax_and_prints_its_floors(capsys):
    pytest.importorskip("jax")
    from benchmarks.products import main as products_main

    assert products_main(["--quick"]) == 0  # it asserts every result against jax before timing
    out = capsys.readouterr().out
    assert "floors (issue 15):" in out and "several parameters" in out and "hessian_diag" in out


def test_quick_linalg_benchmark_checks_every_case(capsys):
    """benchmarks/linalg.py at n = 6: each form (one factorisation per matrix, one numpy.linalg
    call per function) agrees with its NumPy closed form before it is timed (no timing asserted)."""
    from benchmarks.linalg import CASES
    from benchmarks.linalg import main as linalg_main

    assert linalg_main(["--quick", "--no-jax"]) == 0
    out = capsys.readouterr().out
    assert "| case | n | before | LU only | after | after / before |" in out
    assert out.count("| 6 |") == len(CASES)
