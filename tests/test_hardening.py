"""Hardening: fuzzed input through every entry point, resource bounds, numerical edge cases,
safety of names, and thread safety.

A default run uses a few hundred examples per fuzz property; ``pytest -m fuzz`` runs the same
properties with 20,000 examples each.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from pathlib import Path

import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einderiv
from einderiv.cli import main as cli_main
from tests.helpers import run_cli

ALPHABET = "abcxyzAXRijkn_{},;=+-*/^()# 0123.\n" + "\t$@!~"
VALID = [
    "K_pq = R_mp R_mq",
    "f = x_i A_ij x_j",
    "e_n = y_n - Phi_nd theta_d; L = e_n e_n",
    "s_n = sigmoid(X_nd w_d)",
    "f = sum_i(exp(x_i)) / 2",
    "f = a_i inv(X)_ij b_j - logdet(X)",
    "P_nk = softmax_k(Z_nk)",
    "y = (2*x + 1)^4 + x^-0.5",
    "W_{in,out} x_{in,}",
    "z_k = T_kd x_d; L = -y_k z_k + logsumexp_j(z_j)",
]
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))


def _tokens(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z0-9]*(?:_(?:[A-Za-z]+|\{[^}]*\}))?\(?|\d+\.?\d*|\S", text)


@st.composite
def mutated(draw):
    """A valid program with tokens deleted, duplicated, swapped or replaced, or parentheses broken."""
    tokens = _tokens(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        if not tokens:
            break
        k = draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "paren", "index"]))
        if action == "delete":
            del tokens[k]
        elif action == "duplicate":
            tokens.insert(k, tokens[k])
        elif action == "swap" and k + 1 < len(tokens):
            tokens[k], tokens[k + 1] = tokens[k + 1], tokens[k]
        elif action == "replace":
            tokens[k] = draw(st.sampled_from(["+", "*", "(", ")", "=", ";", "x_i", "delta_ij", "2", "exp(", "_"]))
        elif action == "paren":
            tokens.insert(k, draw(st.sampled_from(["(", ")"])))
        else:
            tokens.insert(k, draw(st.sampled_from(["x_q", "A_qq", "B_ijk", "s"])))
    return " ".join(tokens)


texts = st.one_of(st.text(alphabet=ALPHABET, max_size=40), mutated())


def _exercise(text: str) -> None:
    """Every entry point on ``text``: only einderiv's own errors may escape, each with a message."""
    try:
        compiled = einderiv.compile(text)
    except einderiv.EinderivError as err:
        assert str(err).strip()
        return
    rng = np.random.default_rng(0)
    arrays = {name: rng.uniform(0.5, 1.5, size=(3,) * rank) for name, rank in compiled.ranks.items()}
    for order in (1, 2):
        for name in list(compiled.ranks)[:2]:
            try:
                derivative = einderiv.diff(text, [name] * order)
                str(derivative)
                derivative(**arrays)
            except einderiv.EinderivError as err:
                assert str(err).strip()
    try:
        compiled(**arrays)
    except einderiv.EinderivError as err:
        assert str(err).strip()


def _cli(text: str) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_main(["diff", text, "--wrt", "x"])
        except SystemExit as exit_:  # argparse on text that looks like an option
            code = exit_.code
    assert code in (0, 2), stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()
    if code == 2:
        assert sum(line.startswith("error:") for line in stderr.getvalue().splitlines()) == 1


@QUICK
@given(texts)
def test_fuzzed_text_gives_results_or_clear_errors(text):
    _exercise(text)


@QUICK
@given(texts)
def test_fuzzed_text_through_the_cli(text):
    _cli(text)


@pytest.mark.fuzz
@LONG
@given(texts)
def test_fuzz_long(text):
    _exercise(text)
    _cli(text)


# -- resource bounds ---------------------------------------------------------------------------


def test_ten_thousand_nested_parentheses():
    d = einderiv.grad("f = " + "(" * 10_000 + "x_i x_i" + ")" * 10_000, "x")
    np.testing.assert_allclose(d(x=np.ones(2)), 2 * np.ones(2))


def test_deep_nesting_is_a_clear_error():
    with pytest.raises(einderiv.ParseError, match="nested .* levels deep, over the limit"):
        einderiv.parse("f = " + "-(" * 10_000 + "x" + ")" * 10_000)
    with pytest.raises(einderiv.ParseError, match=r"limit of 64 \(max_depth\).*einderiv\.limited\(max_depth="):
        einderiv.parse("f = " + "exp(" * 5_000 + "x" + ")" * 5_000)


def test_sum_of_ten_thousand_terms():
    source = "f = " + " + ".join(f"a{k} x_i x_i" for k in range(10_000))
    d = einderiv.grad(source, "x")
    assert len(d.expr.terms) == 10_000


def test_product_of_two_hundred_factors():
    d = einderiv.grad("f = " + " ".join(f"x{k}" for k in range(200)), "x0")
    values = {f"x{k}": 1.0 for k in range(200)}
    assert float(d(**values)) == 1.0
    with pytest.raises(einderiv.DifferentiationError, match=r"\(max_terms\).*einderiv\.limited\(max_terms="):
        einderiv.grad("f = " + " ".join(f"(x{k} + 1)" for k in range(200)), "x0")


def test_name_of_a_hundred_thousand_characters():
    name = "x" * 100_000
    d = einderiv.grad(f"f = {name}_i {name}_i", name)
    np.testing.assert_allclose(d(**{name: np.ones(3)}), 2 * np.ones(3))


def test_more_than_52_indices_in_one_contraction():
    source = "f = " + " ".join(f"a_{{i{k}}}" for k in range(60))
    assert float(einderiv.evaluate(source, a=np.full(2, 0.5))) == pytest.approx(1.0)


def test_exploding_derivative_stops_at_a_configurable_limit():
    with einderiv.limited(max_terms=50), pytest.raises(einderiv.DifferentiationError, match="limit of 50"):
        einderiv.diff("f = (a + x)(b + x)(c + x)(d + x)(e + x)(g + x)", ["x"])


# -- numerical edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["y_i = sigmoid(x_i)", "y_i = softplus(x_i) x_i", "f = logsumexp_i(x_i)", "y_i = exp(x_i) / 2", "f = x_i x_i"],
)
def test_nan_and_inf_propagate_and_never_crash(source):
    x = np.array([np.nan, np.inf, -np.inf, 1.0])
    compiled = einderiv.compile(source)
    compiled(x=x)  # IEEE values, no exception
    einderiv.jacobian(source, "x")(x=x)


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f = x_i A_ij x_j", "x"),
        ("s_n = sigmoid(X_nd w_d)", "w"),
        ("f = a_i inv(X)_ij a_j + logdet(X)", "X"),
        ("P_nk = softmax_k(X_nk)", "X"),
        ("K_pq = R_mp R_mq", "R"),
    ],
)
def test_float32_inputs_keep_float32(source, wrt):
    rng = np.random.default_rng(1)
    compiled = einderiv.compile(source)
    arrays = {}
    for name, rank in compiled.ranks.items():
        value = rng.normal(size=(3,) * rank) + (3 * np.eye(3) if rank == 2 else 0)
        arrays[name] = value.astype(np.float32)
    assert compiled(**arrays).dtype == np.float32
    assert einderiv.diff(source, wrt)(**arrays).dtype == np.float32


# -- safety -----------------------------------------------------------------------------------------


def test_no_eval_or_exec_in_the_package():
    import ast

    package = Path(einderiv.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "__import__"}, f"{path}:{node.lineno}"


@pytest.mark.parametrize(
    "name",
    ["__import__", "os.system", "x'", 'x"', "x\ny", "import", "1x", "x;rm"],
)
def test_injection_shaped_names_are_refused_or_inert(name):
    source = f"f = {name}_i {name}_i"
    try:
        derivative = einderiv.diff(source, name)
    except einderiv.EinderivError:
        return
    text = str(derivative) + " ".join(str(t) for t in derivative.einsum)
    assert all(ch.isalnum() or ch in " _=/+-*()^{},;.'>\n" for ch in text)


# -- concurrency ----------------------------------------------------------------------------------


def test_threads_with_different_shapes_agree_with_serial_calls():
    d = einderiv.hessian("z_n = X_nd w_d; L = sum_n(softplus(z_n)) + w_d w_d", "w")
    rng = np.random.default_rng(9)
    jobs = [(rng.normal(size=(5 + k, 2 + k % 3)),) for k in range(8)]
    jobs = [(X, rng.normal(size=X.shape[1])) for (X,) in jobs]
    serial = [d(X=X, w=w) for X, w in jobs]
    fresh = einderiv.hessian("z_n = X_nd w_d; L = sum_n(softplus(z_n)) + w_d w_d", "w")
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(k):
        barrier.wait()
        for _ in range(20):
            results[k] = fresh(X=jobs[k][0], w=jobs[k][1])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize(
    "source", ["f = x^2 + 2^40000 x", "f = 2^3000000 x", "f = (2^99999)^999 x", "f = exp(2^40000 x)", "f = 0.5^40000 x"]
)
def test_a_constant_power_of_thousands_of_digits_is_a_clear_error(source):
    """A CLI hunt's find: ``2^3000000`` ran for 44 s.  Past 10,000 digits a folded power of a
    number is an EinderivError that says so, at once; ``(2^99)^99`` (2950 digits) stays."""
    with pytest.raises(einderiv.EinderivError, match="digits, more than the 10000 einderiv keeps exactly"):
        einderiv.grad(source, "x")
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode == 2 and result.stderr.startswith("error: the constant"), result.stderr
    assert "Traceback" not in result.stderr
    assert str(einderiv.grad("f = (2^99)^99 x", "x")) == "df/dx = (2.4830616513292456 * 10^2950)"


def test_a_constant_of_more_than_4300_digits_is_kept_and_printed():
    """A CLI hunt's find: ``x^2 + 2^14300 x`` stopped with an internal error (Python's limit on
    converting an int of 4300 digits to text, in the keys that collect terms).  It differentiates,
    prints in scientific notation, reads back and evaluates (the coefficient is inf in float64)."""
    gradient = einderiv.grad("f = x^2 + 2^14300 x + 2^14300 x^2", "x")
    assert str(gradient) == "df/dx = (1.071440332483388 * 10^4305) x + (5.3572016624169401 * 10^4304)"
    read_back = einderiv.compile(str(gradient))  # the decimal form, 17 digits of 2^14301
    assert np.isinf(gradient(x=np.float64(1.0))) and np.isinf(read_back(x=np.float64(1.0)))
    result = run_cli("diff", "f = x^2 + 2^14300 x", "--wrt", "x")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("source", ["f = inv(A)_ii", "f = logdet(A)", "f = det(A)", "y_i = inv(A)_ij b_j"])
def test_linear_algebra_on_half_and_long_double_arrays(source):
    """A CLI hunt's find: inv, det and logdet of a float16 array raised NumPy's bare TypeError
    ("array type float16 is unsupported in linalg").  float16 is computed in float32 and returned
    as float16; longdouble, which LAPACK has no routine for, is an EvaluationError naming it."""
    A, b = np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0])
    expected = {
        "f = inv(A)_ii": np.trace(np.linalg.inv(A)),
        "f = logdet(A)": np.linalg.slogdet(A)[1],
        "f = det(A)": np.linalg.det(A),
        "y_i = inv(A)_ij b_j": np.linalg.solve(A, b),
    }[source]
    half = {"A": A.astype(np.float16), "b": b.astype(np.float16)}
    compiled = einderiv.compile(source)
    got = compiled(**{k: v for k, v in half.items() if k in compiled.ranks})
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=2e-3)
    if hasattr(np, "float128") and np.dtype(np.longdouble).itemsize > 8:
        long = {"A": A.astype(np.longdouble), "b": b.astype(np.longdouble)}
        with pytest.raises(einderiv.EvaluationError, match="float128, which the linear algebra does not take"):
            compiled(**{k: v for k, v in long.items() if k in compiled.ranks})


def test_shapes_past_what_numpy_addresses_are_an_evaluation_error():
    """``shape_for`` and ``explain`` raised NumPy's ValueError ("Maximum allowed dimension
    exceeded") for a shape of 10^30 (a CLI hunt's find)."""
    compiled = einderiv.compile("f = x_i A_ij x_j")
    for method in (compiled.shape_for, compiled.explain):
        with pytest.raises(einderiv.EvaluationError, match="larger than NumPy can address"):
            method(x=(10**30,), A=(10**30, 10**30))


def test_a_check_past_max_checked_stops_before_making_its_arrays(monkeypatch):
    """``check --shape x=30000`` built the 30000 x 30000 matrix (7 GB, 17 s) before it said that
    30,000 entries are past max_checked; it says so first (the limit is read before any array)."""
    import einderiv.checking as checking

    def made(*args, **kwargs):
        raise AssertionError("the inputs were made before the limit was read")

    monkeypatch.setattr(checking, "_random_inputs", made)
    with pytest.raises(einderiv.EinderivError, match="past the limit of 20000"):
        einderiv.check("f = x_i A_ij x_j", "x", shapes={"x": (30_000,)})


@pytest.mark.parametrize("power, x", [(-2, 1e160), (-3, 1e103), (-4, 2e77), (-2, 1e-200), (-3, -3e-110)])
def test_a_small_negative_power_is_numpys_where_the_positive_power_overflows(power, x):
    """A hunt's find: x^-2 was 1 / (x x), 0 from x = 1.3e154 where NumPy's x**-2 is a number
    (1e-320 at 1e160); the generated code, which writes x ** -2, disagreed."""
    values = np.array([x, -x, 3.0, 0.0, -0.0, np.inf, np.nan])
    with np.errstate(all="ignore"):
        expected = values ** float(power)
    np.testing.assert_array_equal(einderiv.evaluate(f"y_i = x_i^{power}", x=values), expected)


@pytest.mark.parametrize("x", [1e78, 1e80])
def test_the_hessian_of_log1p_of_a_square_keeps_its_sign_where_the_square_of_the_square_overflows(x):
    """2 / (1 + x^2) - 4 x^2 / (1 + x^2)^2, the Hessian of log1p(x^2), was +2e-160 at x = 1e80 for
    -2e-160: (1 + x^2)^-2 was 0.  Reference: -2 (x^2 - 1) / (x^2 + 1)^2 by mpmath.  (From about
    x = 1e81, where (1 + x^2)^-2 underflows even as a subnormal, the sign is still wrong: the two
    terms are not combined over their common denominator, whose numerator 2 - 2 x^2 would
    overflow from 1e154 instead; see einderiv.cancel.)"""
    mpmath.mp.dps = 60
    try:
        exact = float(-2 * (mpmath.mpf(x) ** 2 - 1) / (mpmath.mpf(x) ** 2 + 1) ** 2)
    finally:
        mpmath.mp.dps = 15
    for source in ("f = sum_i(log1p(x_i^2))", "u_i = x_i^2; f = sum_i(log1p(u_i))"):
        curvature = einderiv.hessian_diag(source, "x")(x=np.array([x]))[0]
        # (1 + x^2)^-2 is subnormal there (1e-312, 1e-320): a few digits, the sign and the size right
        assert curvature == pytest.approx(exact, rel=1e-4, abs=0)


@pytest.mark.parametrize("source, sign", [("f = sum_i(arcsin(x_i))", 1), ("f = sum_i(arccos(x_i))", -1)])
def test_arcsins_derivatives_keep_their_digits_near_one(source, sign):
    """A hunt's find: 1 / sqrt(1 - x^2) was 1.9e-9 off at x = 1 - 7.4e-9 (1 - x x rounds x x);
    1 - v^2 as a call's argument is evaluated as (1 - v)(1 + v), as jax does.  Reference: mpmath."""
    x = np.array([0.999999992566696, 1 - 1e-10, -1 + 1e-12, 0.3, 1e-8, -0.75])
    with mpmath.workdps(40):
        slope = [float(sign / mpmath.sqrt(1 - mpmath.mpf(v) ** 2)) for v in x]
        curvature = [float(sign * mpmath.mpf(v) / (1 - mpmath.mpf(v) ** 2) ** 1.5) for v in x]
    np.testing.assert_allclose(einderiv.grad(source, "x")(x=x), slope, rtol=2e-15, atol=0)
    np.testing.assert_allclose(einderiv.hessian_diag(source, "x")(x=x), curvature, rtol=4e-15, atol=0)
