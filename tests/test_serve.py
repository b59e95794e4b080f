"""``einderiv serve``: the JSON API against the command line and closed forms, its errors and
limits (a slow derivation is stopped and the next request served), concurrent requests, the
static files it serves (and only those), its headers, and the command that starts it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

import einderiv
from einderiv.cli import main as cli_main
from einderiv.serve import Server
from einderiv.serve.answers import MAX_CHECKED, MAX_EXPR
from einderiv.serve.examples import EXAMPLES
from einderiv.serve.server import MAX_BODY, MAX_URL
from einderiv.serve.workers import Unavailable, Workers
from tests.helpers import load_module

ROOT = Path(__file__).resolve().parent.parent
SLOW = "f = tanh(sin(x_i) cos(x_j) exp(x_k) A_ijk)"  # order 5 takes some 20 s here, then hits max_size


@pytest.fixture(scope="module")
def server():
    with Server("127.0.0.1", 0, time_limit=30.0, workers=2).start() as running:
        yield running


def request(server, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request, sent as written (no normalisation of the path)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def api(server, kind: str, **fields) -> tuple[int, dict]:
    status, _, body = request(server, f"/api/{kind}?" + urllib.parse.urlencode(fields, doseq=True))
    return status, json.loads(body)


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(list(args))
    return code, out.getvalue()


def cli_wrt(example) -> list[str]:
    if example.each:
        return [word for name in example.each for word in ("--each", name)]
    return [word for name in example.wrt * example.order for word in ("--wrt", name)]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.key for e in EXAMPLES])
def test_each_example_answers_what_the_command_line_prints(server, example):
    status, got = api(server, "diff", **example.query())
    assert status == 200, got
    code, printed = cli("diff", example.expr, *cli_wrt(example), "--format", "json")
    assert code == 0
    expected = json.loads(printed)
    items = got["gradients"] if example.each else [got]
    for item in items:
        assert item.pop("latex")
    code_text = got.pop("code")
    got.pop("warnings")
    assert got == expected  # diff --format json's own function
    derivatives = (
        einderiv.grad(example.expr, list(example.each))
        if example.each
        else [einderiv.diff(example.expr, list(example.wrt) * example.order)]
    )
    for item, derivative in zip(items, derivatives):
        assert item["derivative"] == str(derivative.statement)
    _, python = cli("diff", example.expr, *cli_wrt(example), "--format", "python")
    assert code_text["python"].rstrip("\n") == python.rstrip("\n")  # a file ends with a newline; print adds one
    assert set(code_text) == {"python", "jax", "torch"}


def test_latex_is_the_latex_printers(server):
    for example in EXAMPLES:
        if example.each:
            continue
        _, got = api(server, "diff", **example.query())
        assert got["latex"] == einderiv.diff(example.expr, list(example.wrt) * example.order).latex()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.key for e in EXAMPLES])
def test_each_example_checks_against_finite_differences(server, example):
    fields = example.query("check")
    status, got = api(server, "check", **fields)
    assert status == 200, got
    checks = got["checks"] if example.each else [got]
    assert len(checks) == max(1, len(example.each))
    for result in checks:
        assert result["fd_ok"] and result["error"] < 1e-6
    if example.claim:
        assert got["claim"] == "matches" and got["ok"]
    if not example.each:  # the report is what einderiv check prints
        args = [w for name in example.wrt * example.order for w in ("--wrt", name)]
        args += ["--expect", example.claim] if example.claim else []
        code, printed = cli("check", example.expr, *args)
        assert got["report"] == printed.rstrip("\n")
        assert code == (0 if got["ok"] else 1)


def test_a_wrong_claim_is_reported_as_the_command_line_reports_it(server):
    status, got = api(server, "check", expr="f = x_i A_ij x_j", wrt="x", claim="2 A_kj x_j")
    assert status == 200
    assert got["claim"] == "differs" and not got["ok"] and got["fd_ok"]
    code, printed = cli("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "2 A_kj x_j")
    assert code == 1 and got["message"] in printed


def test_the_generated_code_computes_the_closed_forms(server, tmp_path):
    rng = np.random.default_rng(3)
    x, A = rng.normal(size=4), rng.normal(size=(4, 4))
    _, got = api(server, "diff", expr="f = x_i A_ij x_j", wrt="x")
    module = load_module(got["code"]["python"], tmp_path, "quadratic")
    np.testing.assert_allclose(module.df_dx(x, A), (A + A.T) @ x, rtol=1e-12)
    _, got = api(server, "diff", expr="f = x_i A_ij x_j", wrt="x", order=2)
    np.testing.assert_allclose(load_module(got["code"]["python"], tmp_path, "hessian").d2f_dx_dx(x, A), A + A.T)
    Phi, y, theta = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
    _, got = api(server, "diff", expr="e_n = y_n - Phi_nd theta_d; L = e_n e_n", wrt="theta")
    module = load_module(got["code"]["python"], tmp_path, "least_squares")
    np.testing.assert_allclose(module.dL_dtheta(y, Phi, theta), -2 * Phi.T @ (y - Phi @ theta), rtol=1e-12)
    X = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    _, got = api(server, "diff", expr="f = logdet(X)", wrt="X")
    np.testing.assert_allclose(load_module(got["code"]["python"], tmp_path, "logdet").df_dX(X), np.linalg.inv(X).T)


def test_the_examples_are_served_for_the_menu(server):
    status, headers, body = request(server, "/api/examples")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert [e["key"] for e in json.loads(body)] == [e.key for e in EXAMPLES]


def test_several_wrt_names_and_any_order(server):
    status, got = api(server, "diff", expr="f = x_i A_ij x_j", wrt=["x", "A"])
    assert status == 200 and got["derivative"] == str(einderiv.diff("f = x_i A_ij x_j", ["x", "A"]).statement)
    status, got = api(server, "diff", expr="f = exp(x_i x_i)", wrt="x", order=4)
    assert status == 200 and len(got["indices"]) == 4 and got["matrix"]["forms"] == []
    status, got = api(server, "diff", expr="y_i = A_ij x_j", wrt="x", layout="denominator")
    assert status == 200 and got["layout"] == "denominator" and got["matrix"]["forms"][0]["form"] == "A^T"


def test_matrix_notation_is_read_as_the_command_line_reads_it(server):
    status, got = api(server, "diff", expr="f = x' * A * x", wrt="x")
    assert status == 200 and got["notation"] == "matrix" and got["read_as"] == "f = x_i A_ij x_j"
    status, got = api(server, "diff", expr="f = x^T A x", wrt="x", notation="index")
    assert status == 400 and got["line"] == 1


def test_a_syntax_error_is_400_with_its_line_and_column(server):
    expr = "f = x_i $ A_ij x_j"
    status, got = api(server, "diff", expr=expr, wrt="x")
    assert status == 400
    assert (got["line"], got["column"]) == (1, expr.index("$") + 1)
    assert got["source_line"] == expr and "'$'" in got["error"]
    program = "e_n = y_n - Phi_nd theta_d\nL = e_n e_n)"
    status, got = api(server, "check", expr=program, wrt="theta")
    assert status == 400 and (got["line"], got["column"]) == (2, len("L = e_n e_n") + 1)
    assert got["source_line"] == "L = e_n e_n)"


def test_other_errors_are_400_without_a_position(server):
    for fields, words in [
        ({"expr": "f = x_i x_i", "wrt": "y"}, "y"),
        ({"expr": "f = x_i x_i"}, "give wrt"),
        ({"expr": "", "wrt": "x"}, "give an expression"),
        ({"expr": "f = x_i x_i", "wrt": "x", "each": "x"}, "not both"),
        ({"expr": "f = x_i x_i", "wrt": ["x", "x"], "order": 2}, "order repeats one wrt"),
        ({"expr": "f = x_i x_i", "wrt": "x", "order": "two"}, "order must be"),
        ({"expr": "f = x_i x_i", "wrt": "x", "order": 99}, "order must be"),
        ({"expr": "f = x_i x_i", "wrt": "x,A"}, "repeat wrt"),
        ({"expr": "f = x_i x_i", "wrt": "x", "layout": "sideways"}, "layout must be"),
        ({"expr": "f = x_i x_i", "wrt": "x", "format": "json"}, "unknown parameter 'format'"),
        ({"expr": "f = x_i x_i", "wrt": "x", "expr ": "f"}, "unknown parameter"),
    ]:
        status, got = api(server, "diff", **fields)
        assert status == 400, fields
        assert words in got["error"] and got["line"] is None and got["column"] is None, got
    status, got = api(server, "check", expr="f = x_i x_i", wrt="x", shape="q=3")
    assert status == 400 and got["error"].startswith("shape q: not an input")
    status, got = api(server, "check", expr="f = x_i x_i", wrt="x", shape="x=1000x1000")
    assert status == 400 and "limit" in got["error"]
    status, got = api(server, "check", expr="f = x_i x_i", wrt="x", claim="2 x_k +")
    assert status == 400 and got["line"] == 1 and got["source_line"] == "2 x_k +"


def test_warnings_come_with_the_answer(server):
    status, got = api(server, "diff", expr="f = exp(x_i y_i) z_i", wrt="x")
    assert status == 200 and any("summed inside" in w for w in got["warnings"])


def test_text_over_the_length_limit_is_refused_with_413(server):
    long = "f = " + " + ".join(["x_i x_i"] * (MAX_EXPR // 10 + 1))
    assert len(long) > MAX_EXPR
    status, got = api(server, "diff", expr=long, wrt="x")
    assert status == 413 and str(MAX_EXPR) in got["error"]
    status, got = api(server, "check", expr="f = x_i x_i", wrt="x", claim="x" * (MAX_EXPR + 1))
    assert status == 413
    status, _, body = request(server, "/api/diff?expr=" + "x" * (MAX_URL + 1))
    assert status == 414 and "limit" in json.loads(body)["error"]


def test_post_takes_json_or_a_form_and_caps_the_body(server):
    fields = {"expr": "f = x_i A_ij x_j", "wrt": ["x"], "order": 2}
    status, _, body = request(
        server, "/api/diff", "POST", json.dumps(fields).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(body)["derivative"] == api(server, "diff", **fields)[1]["derivative"]
    form = urllib.parse.urlencode(fields, doseq=True).encode()
    status, _, body = request(server, "/api/check", "POST", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and json.loads(body)["fd_ok"]
    status, _, body = request(server, "/api/diff", "POST", b"x" * (MAX_BODY + 1), {"Content-Type": "text/plain"})
    assert status == 413 and json.loads(body)["error"].startswith("the body is")
    status, _, body = request(server, "/api/diff", "POST", b"[1]", {"Content-Type": "application/json"})
    assert status == 400


def test_unknown_paths_are_404_and_nothing_outside_the_static_folder_is_served(server):
    for path in [
        "/nope",
        "/api/nope",
        "/../README.md",
        "/%2e%2e/README.md",
        "/katex/../../answers.py",
        "/katex/%2e%2e/%2e%2e/server.py",
        "/serve/answers.py",
        "/einderiv/serve/static/app.js",
        "//etc/passwd",
        "/static/../../../../etc/passwd",
        "/index.html/",
        "/app.js?x=1/../../server.py",
    ]:
        status, headers, body = request(server, path)
        if path.startswith("/app.js?"):  # the query is no part of the path
            assert status == 200 and body == (ROOT / "einderiv/serve/static/app.js").read_bytes()
            continue
        assert status == 404, path
        assert headers["content-type"].startswith("application/json")
        assert b"import" not in body and b"root:" not in body
    status, _, _ = request(server, "/", "DELETE")
    assert status == 501


def test_the_page_and_its_files_are_served_with_their_types(server):
    static = ROOT / "einderiv" / "serve" / "static"
    for path, kind in [
        ("/", "text/html"),
        ("/index.html", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/katex/katex.min.js", "text/javascript"),
        ("/katex/katex.min.css", "text/css"),
        ("/katex/fonts/KaTeX_Main-Regular.woff2", "font/woff2"),
    ]:
        status, headers, body = request(server, path)
        assert status == 200 and headers["content-type"].startswith(kind), path
        assert body == (static / (path.lstrip("/") or "index.html")).read_bytes()
    # every font the stylesheet names first (woff2) is there: the page renders without a network
    css = (static / "katex" / "katex.min.css").read_text()
    for font in set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css)):
        assert (static / "katex" / font).is_file(), font


def test_every_response_carries_a_strict_content_security_policy(server):
    for path in ["/", "/app.js", "/api/diff?expr=f%20%3D%20x_i%20x_i&wrt=x", "/api/diff?expr=(", "/nope"]:
        _, headers, _ = request(server, path)
        policy = headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-eval" not in policy
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        assert headers["x-content-type-options"] == "nosniff"


def test_the_page_loads_nothing_from_elsewhere_and_has_no_inline_script():
    static = ROOT / "einderiv" / "serve" / "static"
    page = (static / "index.html").read_text()
    assert "<script>" not in page and "onclick" not in page and "javascript:" not in page
    for name in ("index.html", "app.js", "style.css"):
        text = (static / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    assert "eval(" not in (static / "app.js").read_text()


def test_a_host_name_other_than_the_loopback_is_refused(server):
    status, _, body = request(server, "/api/examples", headers={"Host": "attacker.example"})
    assert status == 403 and "only" in json.loads(body)["error"]
    status, _, _ = request(server, "/api/examples", headers={"Host": f"localhost:{server.server_address[1]}"})
    assert status == 200


def test_a_request_from_another_site_is_refused(server):
    port = server.server_address[1]
    path = "/api/diff?expr=f%20%3D%20x_i%20x_i&wrt=x"
    for headers in [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},  # the API
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},  # a sandboxed frame, a file
        {"Origin": f"http://localhost:{port + 1}"},  # another port is another origin
    ]:
        status, _, body = request(server, path, headers=headers)
        assert status == 403 and "refused" in json.loads(body)["error"], headers
    form = b"expr=f+%3D+x_i+x_i&wrt=x"
    kind = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = request(server, "/api/diff", "POST", form, {**kind, "Origin": "http://attacker.example"})
    assert status == 403
    # the page's own requests, and a link to the page followed from elsewhere (its state is in the URL)
    own = {"Sec-Fetch-Site": "same-origin", "Origin": f"http://127.0.0.1:{port}"}
    for headers in [own, {"Sec-Fetch-Site": "none"}]:
        status, _, _ = request(server, path, headers=headers)
        assert status == 200, headers
    status, _, _ = request(server, "/api/diff", "POST", form, {**kind, "Origin": f"http://127.0.0.1:{port}"})
    assert status == 200
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    status, _, _ = request(server, "/?expr=f%20%3D%20x_i%20x_i&wrt=x", headers=navigation)
    assert status == 200
    status, _, _ = request(server, "/app.js", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
    assert status == 403


def test_other_loopback_addresses_are_loopback_only():
    from einderiv.serve.server import is_loopback

    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.168.1.2", "example.com", ""))


def raw_response(connection: socket.socket) -> tuple[int, dict]:
    """The status and JSON of the one response a raw connection receives before it closes."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_body_short_of_its_length_is_refused_and_a_silent_client_let_go():
    with Server("127.0.0.1", 0, workers=1, socket_timeout=1.0).start() as running:
        head = b"POST /api/diff HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        with socket.create_connection(running.server_address[:2], timeout=20) as connection:
            connection.sendall(head + b"Content-Length: 100\r\n\r\n{}")  # 98 bytes never come
            started = time.monotonic()
            status, got = raw_response(connection)
        assert status == 408 and "did not arrive within 1 s" in got["error"]
        assert time.monotonic() - started < 10
        with socket.create_connection(running.server_address[:2], timeout=20) as connection:
            connection.sendall(head + b"Content-Length: 100\r\n\r\n{}")
            connection.shutdown(socket.SHUT_WR)  # and closes its side
            status, got = raw_response(connection)
        assert status == 400 and "short of its Content-Length of 100" in got["error"]
        with socket.create_connection(running.server_address[:2], timeout=20) as connection:
            connection.sendall(b"GET /api/examples HTTP/1.1\r\n")  # and nothing more
            started = time.monotonic()
            assert connection.recv(65536) == b""  # closed by the server
        assert time.monotonic() - started < 10
        status, got = api(running, "diff", expr="f = x_i x_i", wrt="x")
        assert status == 200


def test_json_nested_too_deeply_is_a_400(server):
    for body in [b"[" * 60_000, b'{"expr": ' * 6_000]:
        status, _, answer = request(server, "/api/diff", "POST", body, {"Content-Type": "application/json"})
        assert status == 400 and "nested too deeply" in json.loads(answer)["error"]
    status, got = api(server, "diff", expr="f = x_i x_i", wrt="x")
    assert status == 200


def test_a_slow_derivation_is_stopped_and_the_next_request_served():
    with Server("127.0.0.1", 0, time_limit=1.0, workers=1).start() as running:
        started = time.monotonic()
        status, got = api(running, "diff", expr=SLOW, wrt="x", order=5)
        assert status == 503 and "time limit of 1 s" in got["error"] and got["limit"] == "time"
        assert time.monotonic() - started < 10
        status, got = api(running, "diff", expr="f = x_i A_ij x_j", wrt="x")  # on the worker started after
        assert status == 200 and got["matrix"]["forms"][0]["form"] == "(A + A^T) x"
        status, got = api(running, "check", expr=SLOW, wrt="x", order=5)
        assert status == 503
        status, got = api(running, "check", expr="f = x_i A_ij x_j", wrt="x", claim="(A + A^T) x")
        assert status == 200 and got["claim"] == "matches"


def test_a_check_too_large_to_evaluate_is_refused_before_any_work(server):
    for fields, shape in [
        ({"expr": "f = exp(x_i x_i/10000)", "wrt": "x", "order": 2, "shape": "x=10000"}, (10000, 10000)),
        ({"expr": "f_ij = x_i x_j", "wrt": "x", "shape": "x=450"}, (450, 450, 450)),
        ({"expr": "f_ij = x_i x_j", "each": "x", "shape": "x=450"}, (450, 450, 450)),
    ]:
        started = time.monotonic()
        status, got = api(server, "check", **fields)
        assert status == 400 and f"of shape {shape}, has {np.prod(shape)} entries" in got["error"], got
        assert f"limit of {MAX_CHECKED}" in got["error"]
        assert time.monotonic() - started < 5
    status, got = api(server, "check", expr="f = exp(x_i y_j)", wrt="x", shape=["x=2000", "y=2000"])
    assert status == 400 and "an array of 4000000 entries" in got["error"]
    status, got = api(server, "check", expr="f = x_i A_ij x_j", wrt="x", claim="(A + A^T) x")
    assert status == 200 and got["ok"]
    status, got = api(server, "check", expr="f_ij = x_i x_j", wrt="x", shape="x=99")  # under the limit
    assert status == 200 and got["fd_ok"] and got["inputs"] == {"x": [99]}


def test_a_worker_out_of_memory_is_replaced_and_the_next_request_served():
    with Server("127.0.0.1", 0, workers=1, memory_limit=24 << 20).start() as running:
        status, got = api(running, "check", expr="f = x_i A_ij x_j", wrt="x", claim="(A + A^T) x")
        assert status == 200 and got["ok"]
        status, got = api(running, "check", expr="f_ij = x_i x_j", wrt="x", shape="x=100")  # some 50 MB
        assert status == 503 and got["limit"] == "memory" and "memory" in got["error"], got
        status, got = api(running, "check", expr="f = x_i A_ij x_j", wrt="x", claim="(A + A^T) x")
        assert status == 200 and got["ok"]


def test_a_worker_killed_from_outside_is_replaced_and_the_request_served():
    with Server("127.0.0.1", 0, workers=1).start() as running:
        (worker,) = running.workers._live
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(10)
        status, got = api(running, "diff", expr="f = x_i A_ij x_j", wrt="x")
        assert status == 200 and got["matrix"]["forms"][0]["form"] == "(A + A^T) x"
        status, got = api(running, "diff", expr="f = x_i x_i", wrt="x")
        assert status == 200


def test_work_after_close_is_unavailable():
    workers = Workers(1, 5.0)
    workers.close()
    with pytest.raises(Unavailable):
        workers.run({"kind": "diff", "expr": "f = x_i x_i", "wrt": ["x"]})


def test_workers_import_nothing_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "numpy.py").write_text("raise RuntimeError('the current directory was imported from')\n")
    (tmp_path / "einderiv").mkdir()
    (tmp_path / "einderiv" / "__init__.py").write_text("raise RuntimeError('the wrong einderiv')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # (not the suite's own, which may be ".")
    with Server("127.0.0.1", 0, workers=1).start() as running:
        status, got = api(running, "check", expr="f = x_i A_ij x_j", wrt="x")
        assert status == 200 and got["fd_ok"]


def test_a_worker_imports_the_servers_einderiv_and_site_packages_stay_after_the_standard_library(monkeypatch):
    import site

    from einderiv.serve import workers

    env = workers.worker_environment()
    assert env["PYTHONSAFEPATH"] == "1"
    where = subprocess.run(
        [sys.executable, "-c", "import einderiv, sys; print(einderiv.__file__); print(sys.path)"],
        cwd=workers.WORKER_DIRECTORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    first, path = where.stdout.splitlines()
    assert first == einderiv.__file__
    assert workers.WORKER_DIRECTORY not in path
    monkeypatch.setattr(workers, "PACKAGE_ROOT", site.getsitepackages()[0])  # an installed einderiv
    given = workers.worker_environment({"PYTHONPATH": "relative"}).get("PYTHONPATH", "")
    assert given.split(os.pathsep) == [os.path.abspath("relative")]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_worker_stops_when_the_server_is_gone_in_the_middle_of_work():
    def alive(pid: int) -> bool:
        try:
            return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0]
        except (OSError, IndexError):
            return False

    parent = (
        "import json, os, sys\n"
        "from einderiv.serve.workers import Worker\n"
        "worker = Worker()\n"
        "assert worker.receive(120) == b'ready\\n'\n"
        f"worker.send({{'kind': 'diff', 'expr': {SLOW!r}, 'wrt': ['x'], 'order': 5}})\n"
        "print(worker.process.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(  # the worker's stderr is its parent's: not a pipe that run() reads to its end
        [sys.executable, "-c", parent],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        timeout=120,
    )
    pid = int(done.stdout)
    try:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_concurrent_requests_are_all_answered(server):
    jobs = [(e, kind) for e in EXAMPLES[:8] for kind in ("diff", "check")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: api(server, job[1], **job[0].query(job[1])), jobs))
    for (example, kind), (status, got) in zip(jobs, answers):
        assert status == 200, (example.key, kind, got)
        expected = str(einderiv.diff(example.expr, list(example.wrt) * example.order).statement)
        assert got["derivative"] == expected


def run_command(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "einderiv", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def first_line(process: subprocess.Popen, timeout: float = 60.0) -> str:
    """The first line the command prints; fails after ``timeout`` seconds without one."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"the command printed no line within {timeout:g} s")


def stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_command_prints_its_address_and_serves_there():
    process = run_command("--port", "0", "--workers", "1")
    try:
        line = first_line(process)
        assert line.startswith("einderiv serve: http://127.0.0.1:"), line
        url = line.split()[2]
        port = int(urllib.parse.urlsplit(url).port)
        assert port > 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/diff?expr=K_pq%20%3D%20R_mp%20R_mq&wrt=R")
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["derivative"] == "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq"
        connection.close()
    finally:
        _, err = stop(process)
    assert process.returncode == 0 and "Traceback" not in err
    assert "warning" not in err


def test_the_command_warns_when_it_listens_beyond_this_machine():
    process = run_command("--port", "0", "--host", "0.0.0.0", "--workers", "1")
    try:
        assert first_line(process).startswith("einderiv serve: http://0.0.0.0:")
    finally:
        _, err = stop(process)
    assert "reachable from other machines" in err


def test_the_command_says_when_the_port_is_taken(server):
    process = run_command("--port", str(server.server_address[1]), "--workers", "1")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and err.startswith("error: cannot listen on 127.0.0.1:") and not out


def test_quick_benchmark_times_every_example(tmp_path, capsys):
    from benchmarks.serve import main as benchmark

    out = tmp_path / "serve.json"
    assert benchmark(["--quick", "--workers", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["example"] for row in rows] == [example.title for example in EXAMPLES]
    assert all(row["diff_median"] > 0 and row["check_median"] > 0 for row in rows)
    assert "| example | diff: first | diff: median |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "option", [("--port", "70000"), ("--time-limit", "0"), ("--time-limit", "nan"), ("--workers", "0")]
)
def test_the_command_refuses_bad_options(option, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["serve", *option])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: argument {option[0]}")


def test_a_lone_surrogate_in_a_json_body_is_a_400_and_the_worker_lives(server):
    """A hunt's find: ``{"expr": "f = x_i x_i\\ud800"}`` reached the worker, whose UTF-8 answer could
    not hold it: the worker ended, twice (the retry too), and the answer was a 503."""
    for field in ("expr", "wrt", "claim"):
        fields = {"expr": "f = x_i x_i", "wrt": "x", "claim": "2 x_j"}
        fields[field] += "\ud800"
        body = json.dumps(fields).encode()
        status, _, answer = request(server, "/api/check", "POST", body, {"Content-Type": "application/json"})
        assert status == 400 and "lone surrogate, \\ud800" in json.loads(answer)["error"]
    status, got = api(server, "diff", expr="f = x_i x_i", wrt="x")
    assert status == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"expr": "f = 1e308 x_i x_i x_i", "wrt": "x"},  # an inf error: NumPy's float64 and bool_
        {"expr": "f = x_i A_ij x_j", "wrt": "x", "shape": "x=0"},  # a zero-size input
    ],
)
def test_a_check_whose_numbers_are_numpy_scalars_answers_json(server, fields):
    """A hunt's find: the check's error and ok were NumPy's float64 and bool_ where the finite
    differences were not finite or an input had no entries, which JSON refused: a 500."""
    status, got = api(server, "check", **fields)
    assert status == 200 and isinstance(got["ok"], bool) and isinstance(got["fd_ok"], bool)
