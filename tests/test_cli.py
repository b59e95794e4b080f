"""The command line, run as a subprocess: output, JSON, and the error path."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli as run


def test_diff_prints_derivative_shape_and_einsum():
    result = run("diff", "K_pq = R_mp R_mq", "--wrt", "R")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq"
    assert lines[1] == "  shape: K.shape + R.shape = (P, P, M, P) with R: (M, P)"
    assert lines[2] == "  einsum: 'jp,iq->pqij' (delta, R) + 'ip,jq->pqij' (R, delta)"


def test_repeated_wrt_gives_the_hessian():
    result = run("diff", "f = x_i A_ij x_j", "--wrt", "x", "--wrt", "x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "d2f/dx_k dx_l = A_kl + A_lk"


def test_json_format():
    result = run("diff", "f = x_i A_ij x_j", "--wrt", "x", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["derivative"] == "df/dx_k = A_kj x_j + x_i A_ik"
    assert data["output"] == "f"
    assert data["indices"] == ["k"]
    assert data["wrt"] == [{"name": "x", "indices": ["k"]}]
    assert data["shape"] == ["I"]
    assert data["inputs"] == {"x": ["I"], "A": ["I", "I"]}
    assert data["einsum"] == [
        {"coefficient": "1", "subscripts": "kj,j->k", "operands": ["A", "x"], "sizes": {}},
        {"coefficient": "1", "subscripts": "i,ik->k", "operands": ["x", "A"], "sizes": {}},
    ]
    assert data["steps"] == []
    assert data["matrix"] == {"forms": [{"lhs": "df/dx", "form": "(A + A^T) x"}], "none": None}
    rank4 = json.loads(run("diff", "K_pq = R_mp R_mq", "--wrt", "R", "--format", "json").stdout)["matrix"]
    assert rank4["forms"] == [] and "rank 4" in rank4["none"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["diff", "K_pq = R_mp +", "--wrt", "R"], "error: syntax error: the input ends too early"),
        (["diff", "K_pp = R_mp R_mp", "--wrt", "R"], "error: index 'p' is repeated"),
        (["diff", "f = x_i x_i", "--wrt", "Q"], "error: wrt tensor 'Q' does not occur"),
    ],
)
def test_user_errors_print_one_error_line_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(message)
    assert sum(line.startswith("error:") for line in lines) == 1


def test_syntax_error_shows_caret_under_the_column():
    result = run("diff", "f = a_i ++ * b", "--wrt", "a")
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: syntax error: unexpected '*'; expected '(', '+', '-',")
    assert lines[0].endswith("(line 1, column 12)")
    assert lines[1] == "  f = a_i ++ * b"
    assert lines[2] == "  " + " " * 11 + "^"


def test_help_and_version():
    assert "einderiv diff" in run("--help").stdout
    assert "K_pq = R_mp R_mq" in run("diff", "--help").stdout
    assert run("--version").stdout.startswith("einderiv ")
    missing = run("diff", "f = x")
    assert missing.returncode == 2 and "error:" in missing.stderr


def test_json_inputs_list_every_input_a_scalar_too():
    """A meaning hunter's find: a scalar input (``lam``, ``c``) was left out of ``inputs``, so a
    tool calling the derivative with the inputs listed there dropped it."""
    source = "M_ij = X_ki X_kj + lam delta_ij; f = logdet(M) + y_k X_ki inv(M)_ij X_lj y_l"
    result = run("diff", source, "--wrt", "X", "--wrt", "lam", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inputs"] == {"X": ["K", "I"], "y": ["K"], "lam": []}
    data = json.loads(run("diff", "f = c x_i x_i", "--wrt", "x", "--format", "json").stdout)
    assert data["inputs"] == {"x": ["I"], "c": []}
