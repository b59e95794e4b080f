"""Regressions found by review: each was a wrong number, a stray exception or output that did not
read back."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import einderiv
from tests.helpers import assert_matches_fd, jax_float64, run_cli

rng = np.random.default_rng(4)
x, y = rng.uniform(0.5, 1.5, size=4), rng.uniform(0.5, 1.5, size=4)
A = rng.normal(size=(4, 4))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f_i = x_i / x_i", np.ones(4)),
        ("f = y_i x_i / x_i", y.sum()),
        ("f = x_i / y_i / x_i", (1 / y).sum()),
        ("g_i = A_ij x_j / x_j", A.sum(axis=1)),
        ("f = x_i / x_i", 4.0),
    ],
)
def test_cancelling_powers_keep_the_index_they_share(source, expected):
    compiled = einderiv.compile(source)
    arrays = {k: v for k, v in {"x": x, "y": y, "A": A}.items() if k in compiled.ranks}
    np.testing.assert_allclose(compiled(**arrays), expected)


def test_softmax_index_summed_outside_or_inside_a_call():
    Z = rng.normal(size=(3, 4))
    np.testing.assert_allclose(einderiv.evaluate("f_n = softmax_k(Z_nk)", Z=Z), np.ones(3))
    assert float(einderiv.evaluate("f = softmax_k(Z_nk)", Z=Z)) == pytest.approx(3.0)
    # k occurs once inside sin, so it is free there and summed at the top: sum_k sin(p_nk)
    # (this used to read sin(sum_k p_nk) = sin(1)); the explicit sum says the other reading
    p = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(einderiv.evaluate("f_n = sin(softmax_k(Z_nk))", Z=Z), np.sin(p).sum(axis=1))
    np.testing.assert_allclose(einderiv.evaluate("f_n = sin(sum_k(softmax_k(Z_nk)))", Z=Z), np.sin(np.ones(3)))
    z = rng.normal(size=3)
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(einderiv.evaluate("f_k = softmax_k(z_k)^2", z=z), p**2)
    np.testing.assert_allclose(einderiv.evaluate("f_k = exp(softmax_k(z_k))", z=z), np.exp(p))
    d = einderiv.jacobian("f_k = softmax_k(z_k)^2", "z")
    assert_matches_fd(d, einderiv.compile("f_k = softmax_k(z_k)^2"), {"z": z}, "z")


@pytest.mark.parametrize(
    "source, wrt, arrays",
    [
        ("f = x_i A_ij x_j", ["x", "x", "x"], {"x": x, "A": A}),
        ("C_ij = x_i + y_j", ["x"], {"x": x, "y": y}),
        ("f = exp(x_i) + y_i", ["x"], {"x": x, "y": y}),
        ("f = x_i / x_j", ["x"], {"x": x}),
        ("f = A_ii", ["A"], {"A": A}),
        ("f = x_i A_ij x_j", ["x", "x"], {"x": x, "A": A}),
        ("df/dx_i = x_i", ["x"], {"x": x}),
    ],
)
def test_printed_derivatives_compile_and_evaluate_the_same(source, wrt, arrays):
    d = einderiv.diff(source, wrt)
    reread = einderiv.compile(str(d))
    needed = {k: v for k, v in arrays.items() if k in reread.ranks}
    try:
        value = reread(**needed)
    except einderiv.EvaluationError as err:
        # an axis along which the derivative is constant and that no denominator names has no size
        assert "cannot be inferred" in str(err)
        return
    np.testing.assert_allclose(np.broadcast_to(value, d(**arrays).shape), d(**arrays))


def test_derivative_of_a_derivative_named_statement_reads_back():
    d = einderiv.diff("df/dx_i = x_i x_j x_j", "x")
    assert str(d).startswith("d2f/dx_i dx_")
    assert einderiv.parse(str(d))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = 1e308 x_i x_i * 10", lambda x: np.inf * np.sign(x)),
        ("f = 1e-320 x_i / 1e10", lambda x: np.zeros_like(x)),
        ("f = 1e300 x_i x_i", lambda x: 2e300 * x),
    ],
)
def test_a_printed_coefficient_beyond_a_literals_range_reads_back(source, expected):
    """The gradient of ``1e308 x_i x_i * 10`` printed ``2e309 x_j``, which reading back refused
    ("beyond float64's range"; a meaning hunt's find); it prints ``(2 * 10^309) x_j`` now,
    the same exact number, and reads back to the same values (inf, as the coefficient is)."""
    x = np.array([0.5, 2.0, -3.0])
    gradient = einderiv.grad(source, "x")
    read = einderiv.compile(str(gradient))
    np.testing.assert_array_equal(read(**{k: x for k in read.inputs}), gradient(x=x))
    np.testing.assert_allclose(gradient(x=x), expected(x), rtol=1e-15)


def test_no_builtin_exceptions_escape():
    for text in ("f = 1e400 x", "f = x / 1e-400", "f = x^1e400"):  # a ParseError: no float64 holds them
        with pytest.raises(einderiv.ParseError, match="float64"):
            einderiv.evaluate(text, x=1.5)
    assert np.isinf(einderiv.evaluate("f = 1e300 1e300 x", x=1.5))  # a product of constants may overflow
    assert np.isneginf(einderiv.evaluate("f = logsumexp_i(x_i)", x=np.zeros(0)))
    assert einderiv.evaluate("f_i = softmax_i(x_i)", x=np.zeros(0)).shape == (0,)
    with pytest.raises(einderiv.DifferentiationError, match="wrt must be"):
        einderiv.diff("g_i = A_ij x_j", 3)


def test_a_cancelled_wrt_tensor_gives_a_zero_derivative():
    d = einderiv.diff("f = y + x^0", "x")
    assert d.expr.terms == ()
    assert float(d(x=2.0, y=1.0)) == 0.0


def test_nan_in_matrix_functions_propagates():
    bad = np.array([[np.nan, 2.0], [2.0, 4.0]])
    assert np.isnan(einderiv.evaluate("f_ij = inv(A)_ij", A=bad)).all()
    assert np.isnan(einderiv.evaluate("f = a_i inv(A)_ij a_j", A=bad, a=np.ones(2)))
    assert np.isnan(einderiv.evaluate("f = logdet(A)", A=bad))


def test_a_call_on_a_cancelled_argument_keeps_its_shape():
    """``tanh(A_ij - A_ij)`` used to fail ("the size of output index 'i' cannot be inferred"):
    the hoisted argument had no terms and so no sizes.  It is f(0) at every (i, j)."""
    a = np.arange(6.0).reshape(2, 3)
    assert str(einderiv.compile("c_ij = tanh(A_ij - A_ij)").expr) == "0"
    np.testing.assert_array_equal(einderiv.evaluate("c_ij = tanh(A_ij - A_ij)", A=a), np.zeros((2, 3)))
    np.testing.assert_array_equal(einderiv.evaluate("c_ij = sigmoid(A_ij - A_ij)", A=a), np.full((2, 3), 0.5))
    value = einderiv.evaluate("c_ij = softplus(A_ij - A_ij) + A_ij", A=a)
    np.testing.assert_allclose(value, np.log(2.0) + a, rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("c_i = sum_j(softplus(A_ij - A_ij))", A=a), [3 * np.log(2.0)] * 2)
    jacobian = einderiv.jacobian("c_ij = cos(A_ij - A_ij) B_ij", "B")
    assert jacobian(A=a, B=a).shape == (2, 3, 2, 3)
    np.testing.assert_array_equal(jacobian(A=a, B=a).reshape(6, 6), np.eye(6))


def test_a_call_whose_indices_only_a_delta_carries_is_sized_by_the_statement():
    """``tanh(s delta_ij) A_ij`` failed with "the size of index 'i' cannot be inferred": the
    hoisted argument ``s delta_ij`` has no tensor with i; the statement's A_ij says it."""
    a = np.arange(9.0).reshape(3, 3)
    source = "W_ij = tanh(s delta_ij) A_ij"
    np.testing.assert_allclose(einderiv.evaluate(source, s=0.3, A=a), np.tanh(0.3) * np.diag(np.diag(a)))
    derivative = einderiv.diff(source, "s")
    assert_matches_fd(derivative, einderiv.compile(source), {"s": np.array(0.3), "A": a}, "s")


def test_keys_of_calls_with_different_index_counts_compare():
    """Sorting the terms of ``cos(...)`` compared the key of ``(2 + tanh(s))^-1`` (no index)
    with that of ``(2 + tanh(A_ii))^-1`` (index i) and raised TypeError (str against tuple)."""
    source = "f = cos(A_ii / (2 + tanh(s)) + A_ii / (2 + tanh(A_ii)))"
    derivative = einderiv.diff(source, "A")
    arrays = {"A": np.random.default_rng(3).normal(size=(3, 3)), "s": np.array(0.4)}
    assert_matches_fd(derivative, einderiv.compile(source), arrays, "A")


def test_a_call_constant_along_an_index_after_delta_contraction_reads_back():
    """``tanh(delta_ij)`` becomes ``tanh(delta_ii)``, i.e. tanh(1) at every i, when a derivative
    sets j = i: it is rebuilt as the scalar call, so the printed derivative reads back as equivalent."""
    from einderiv.lower import normalize
    from einderiv.normal import equivalent

    source = "f_i = (A_ii / (2 + tanh(delta_ij)) / (2 + tanh(delta_ij / (2 + tanh(A_ij)))))^2"
    derivative = einderiv.diff(source, "A")
    assert equivalent(normalize(derivative.statement.rhs, derivative.indices), derivative.expr)
    a = np.random.default_rng(4).normal(size=(3, 3))
    assert_matches_fd(derivative, einderiv.compile(source), {"A": a}, "A")


def test_shape_for_sizes_an_index_as_evaluation_does():
    # the left-hand side's i is sized only by the statement as written (sum_i rebinds i);
    # evaluation took that size and shape_for refused it
    derivative = einderiv.diff("f_i = 1 + delta_ji - sum_i(a_i)", "a")
    value = derivative(a=np.ones(3))
    assert derivative.shape_for(a=(3,)) == value.shape == (3, 3)
    np.testing.assert_array_equal(value, -np.ones((3, 3)))


@pytest.mark.parametrize(
    "source, wrt, arrays, expected",
    [
        # a dimension left by differentiation (delta_kk) is sized by the statements as written
        ("f = sum_k(z_k + s)", "s", {"z": np.arange(4.0), "s": 1.0}, 4.0),
        ("f = mean_i(x_i + s)", "s", {"x": np.arange(4.0), "s": 1.0}, 1.0),
        ("t = sum_k(z_k + s); f = t^2", "s", {"z": np.arange(4.0), "s": 1.0}, 2 * (6.0 + 4.0) * 4),
    ],
)
def test_dimensions_left_by_differentiation_are_sized(source, wrt, arrays, expected):
    assert float(einderiv.grad(source, wrt)(**arrays)) == pytest.approx(expected)


def test_gradient_of_a_sum_of_log_softmax_is_one_minus_n_softmax():
    z = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(einderiv.grad("f = log(softmax_k(z_k))", "z")(z=z), 1 - 4 * p, rtol=1e-12)


def test_log_one_plus_exp_is_softplus_and_finite_at_large_logits():
    z, y = np.array([1000.0, -1000.0, 0.0, 999.0]), np.array([1.0, 0.0, 1.0, 0.0])
    source = "f = log(1 + exp(z_n)) - y_n z_n"
    assert float(einderiv.evaluate(source, z=z, y=y)) == pytest.approx(np.logaddexp(0, z).sum() - y @ z, rel=1e-14)
    expected = 1 / (1 + np.exp(-np.clip(z, -700, 700))) - y  # sigmoid(z) - y
    np.testing.assert_allclose(einderiv.grad(source, "z")(z=z, y=y), expected, atol=1e-300)


def test_a_printed_adjoint_constant_along_its_index_reads_back():
    # dfdh_i = s w_j is constant along i; printed with delta_ii so that its i appears in a term
    derivative = einderiv.grad("h_i = sigmoid(z_k x_i); f = (h_i s) w_j", "x")
    assert "dfdh_i = s w_j delta_ii" in str(derivative)
    einderiv.compile(str(derivative), of="df/dx")


@pytest.mark.parametrize(
    "source, expected",
    [
        ("P_mn = A_mr B_nr", lambda A, B, D: A @ B.T),
        ("P_nm = A_mr B_nr", lambda A, B, D: B @ A.T),
        ("P_rs = A_mr D_ms", lambda A, B, D: A.T @ D),
        ("P_sr = A_mr D_ms", lambda A, B, D: D.T @ A),
        ("P_mn = B_nr A_mr", lambda A, B, D: A @ B.T),
    ],
)
def test_every_small_matrix_product_runs_as_a_matmul_of_transposed_views(source, expected):
    rng = np.random.default_rng(3)
    A, B, D = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.normal(size=(4, 6))
    arrays = {k: v for k, v in {"A": A, "B": B, "D": D}.items() if f"{k}_" in source}
    np.testing.assert_allclose(einderiv.evaluate(source, **arrays), expected(A, B, D), rtol=1e-12)


def test_a_derivative_name_never_collides_with_a_statement_of_the_program():
    # the internal name d1L was also the user's statement: the gradient came back as d1L itself
    rng = np.random.default_rng(4)
    X, w, b = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=4)
    gradient = einderiv.grad("d1L_n = X_nd w_d + b_n; L = d1L_n d1L_n", "w")
    np.testing.assert_allclose(gradient(X=X, w=w, b=b), 2 * X.T @ (X @ w + b), rtol=1e-12)


@pytest.mark.parametrize(
    ("source", "arrays"),
    [
        ("Y_n = mean_k(X_nd W_dk + b_k)", {"X": np.ones((5, 3)), "W": np.ones((3, 2)), "b": np.ones(7)}),
        ("f = sum_i(p_i + q_i)", {"p": np.ones(2), "q": np.ones(3)}),
    ],
)
def test_one_written_reduction_sums_one_length(source, arrays):
    # each term of the sum got its own summed index: lengths 2 and 7 were summed separately
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate(source, **arrays)
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.compile(source).shape_for({k: v.shape for k, v in arrays.items()})


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = sum_n((x_n - m)^2) + sum_k((z_k - m)^2)", lambda x, z, A, m: -2 * (x - m).sum() - 2 * (z - m).sum()),
        ("f = sum_n(m x_n) + sum_k(m z_k) + sum_n(m) + sum_k(m)", lambda x, z, A, m: x.sum() + z.sum() + 8),
        (
            "y_i = A_ij z_j; f = sum_i((y_i - m)^2) + sum_j((z_j - m)^2)",
            lambda x, z, A, m: -2 * (A @ z - m).sum() - 2 * (z - m).sum(),
        ),
    ],
)
def test_counts_of_two_dimensions_are_not_like_terms(source, expected):
    # like-term collection erased the names of summed letters, so m delta_nn and m delta_kk (N m
    # and K m) merged into 2 m delta_nn: the gradient counted N twice (found by a review)
    rng = np.random.default_rng(0)
    x, z, A, m = rng.normal(size=5), rng.normal(size=3), rng.normal(size=(4, 3)), np.float64(0.3)
    gradient = einderiv.grad(source, "m")
    arrays = {k: v for k, v in {"x": x, "z": z, "A": A, "m": m}.items() if k in gradient.ranks}
    np.testing.assert_allclose(gradient(**arrays), expected(x, z, A, m), rtol=1e-12)
    read = einderiv.compile(str(gradient))
    np.testing.assert_allclose(read(**{k: v for k, v in arrays.items() if k in read.ranks}), expected(x, z, A, m))


def test_a_group_in_another_term_does_not_bind_a_count_letter():
    """The gradient of ``(sum_i(x_i + 1) + 1 / (w_e w_e)) / (w_e w_e)`` by w counts x's length
    (``delta_ii``) in one term and printed ``1 / (w_i w_i)^2`` in another: read back, the count's
    i was sized by w ("index 'k' has two sizes").  A group now binds other letters (a probe found
    it)."""
    x, w = np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0])
    derivative = einderiv.grad("f = (sum_i(x_i + 1) + 1 / (w_e w_e)) / (w_e w_e)", "w")
    total, q = np.sum(x + 1), w @ w
    expected = -2 * total * w / q**2 - 4 * w / q**3  # d/dw of S/q + 1/q^2, q = w.w
    np.testing.assert_allclose(derivative(x=x, w=w), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.compile(str(derivative))(x=x, w=w), expected, rtol=1e-12)


def test_a_count_letter_is_not_taken_by_a_sum_of_another_dimension():
    """Two read-backs that counted the wrong dimension (a probe found both): the gradient of
    ``t_i = lam + y_i; f = sum_ij(t_i + A_ij) + x_k t_k`` by lam printed ``delta_jj delta_ii +
    x_j`` (x's dummy moved onto the count's letter j: I·I + Σx read back, not I·J + Σx); and in
    ``(sum_i(delta_ij) + delta_nn) exp(x_k x_k x_m x_m + sum_i(x_i))`` lowering renamed the inner
    sum_i to n, so the count n was sized by x."""
    rng = np.random.default_rng(5)
    y, A, x, M = rng.normal(size=3), rng.normal(size=(3, 4)), 0.3 * rng.normal(size=3), rng.normal(size=(3, 3))
    lam = 0.3
    gradient = einderiv.grad("t_i = lam + y_i; f = sum_ij(t_i + A_ij) + x_k t_k", "lam")
    expected = 3 * 4 + x.sum()
    np.testing.assert_allclose(gradient(y=y, A=A, x=x, lam=lam), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.compile(str(gradient))(y=y, A=A, x=x, lam=lam), expected, rtol=1e-12)
    text = "s1_i = sum_n(A_in); df/dx_j = (sum_i(delta_ij) + delta_nn) exp(x_k x_k x_m x_m + sum_i(x_i))"
    expected = (1 + 4) * np.exp((x @ x) ** 2 + x.sum()) * np.ones(3)
    np.testing.assert_allclose(einderiv.compile(text)(x=x, A=A), expected, rtol=1e-12)
    source = "s1 = sum_ij(x_i + A_ij); f = exp(mean_i(s1 - y_k M_km x_m + x_i))"
    value = np.exp(4 * x.sum() + A.sum() - y @ M @ x + x.mean())
    expected = value * (4 - y @ M + 1 / 3)
    gradient = einderiv.grad(source, "x")
    arrays = {"x": x, "A": A, "y": y, "M": M}
    np.testing.assert_allclose(gradient(**arrays), expected, rtol=1e-12)
    read = einderiv.compile(str(gradient))
    np.testing.assert_allclose(read(**{k: v for k, v in arrays.items() if k in read.ranks}), expected, rtol=1e-12)


def test_an_output_axis_is_not_sized_by_an_earlier_statement():
    """Read back, a letter a statement writes only in deltas takes the size the statements before
    it write it at, but never an output axis: the HVP below prints ``d2fdz2v_i = ... mean_j(delta_ji)
    ...`` after f's statement, which writes i at M's length (3), where the HVP has z's (4).  Its text
    read back with shape (3,) before; now it says the size is unknown (a probe found it)."""
    source = "f = sum_ij(((((y_k M_km x_m))^2)^2 - mean_l(((M_ii - M_ii) + z_l))) z_j)"
    rng = np.random.default_rng(2)
    arrays = {"y": rng.normal(size=3), "M": rng.normal(size=(3, 3)), "x": rng.normal(size=3), "z": rng.normal(size=4)}
    product = einderiv.hvp(source, "z")
    v = rng.normal(size=4)
    # f = S (sum(z) - 4 mean(z)...): d2f/dz2 = -(2 / 4) * 3 (the I-count) for every pair
    expected = -(2 / 4) * 3 * v.sum() * np.ones(4)
    np.testing.assert_allclose(product(**arrays, v=v), expected, rtol=1e-12)
    try:
        read = einderiv.compile(str(product))(**arrays, v=v)
    except einderiv.EvaluationError as err:
        assert "cannot be inferred" in str(err)
    else:
        np.testing.assert_allclose(read, expected, rtol=1e-12)


def test_a_count_inside_a_call_reads_back_and_generates():
    """``f = exp(sum_k(lam + x_k))``: its gradient counts K inside exp.  The count printed as
    ``delta_{k9,k9}`` and the text stopped with "cannot be inferred" (a call's argument was not
    sized by the statements before it); generating code for its VJP stopped the same way (its
    value-and-gradient function re-read u · f).  Checked against NumPy's closed form."""
    from einderiv.codegen import generate

    x, lam, u = np.array([0.1, -0.2, 0.3]), 0.2, 1.5
    expected = np.exp(3 * lam + x.sum()) * np.ones(3)
    gradient = einderiv.grad("f = exp(sum_k(lam + x_k))", "x")  # prints sum_k(lam + x_k), a residual
    np.testing.assert_allclose(einderiv.compile(str(gradient))(x=x, lam=lam), expected, rtol=1e-12)
    counted = einderiv.grad("f = exp(sum_k(0.2 + x_k))", "x")  # a number is no data: the count prints
    assert "delta_kk" in str(counted)
    np.testing.assert_allclose(einderiv.compile(str(counted))(x=x), expected, rtol=1e-12)
    assert float(einderiv.evaluate("t_k = x_k; g = exp(lam delta_kk)", x=x, lam=lam)) == pytest.approx(np.exp(3 * lam))
    product = einderiv.vjp("f = exp(sum_k(lam + x_k))", "x")
    namespace: dict = {}
    exec(generate([product]), namespace)  # noqa: S102 - the module einderiv generated, run as a user would
    np.testing.assert_allclose(namespace["vjp_f_x"](lam=lam, x=x, u=u), u * expected, rtol=1e-12)


def test_a_factored_group_does_not_bind_a_count_letter():
    """The gradient by x of the program below prints with a factor pulled out; a group in its other
    term printed ``mean_n(x_n)`` beside the count ``delta_nn`` (A's columns), and the text read back
    counted x's length instead (a probe found it).  Checked against NumPy's closed form."""
    source = (
        "s1 = sum_ij((((z_l z_l) + x_i) + A_ij)); t1_j = ((z_j - lam) / exp((z_l z_l))); "
        "f = sqrt(exp(mean_i(((s1 - (y_k M_km x_m)) + x_i))))"
    )
    rng = np.random.default_rng(1)
    z, x, A = 0.3 * rng.normal(size=4), 0.3 * rng.normal(size=3), 0.3 * rng.normal(size=(3, 4))
    y, M = 0.3 * rng.normal(size=3), 0.3 * rng.normal(size=(3, 3))
    s1 = 3 * 4 * (z @ z) + 4 * x.sum() + A.sum()
    root = np.sqrt(np.exp(s1 - y @ M @ x + x.mean()))
    expected = 0.5 * root * (4 + 1 / 3 - y @ M)
    gradient = einderiv.grad(source, "x")
    arrays = {"z": z, "x": x, "A": A, "y": y, "M": M}
    np.testing.assert_allclose(gradient(**arrays), expected, rtol=1e-12)
    read = einderiv.compile(str(gradient))
    np.testing.assert_allclose(read(**{k: v for k, v in arrays.items() if k in read.ranks}), expected, rtol=1e-12)


def test_an_intermediate_count_is_not_sized_by_another_statement():
    """Only the last statement (or a derivative-named one) sizes a count by the statements
    before it: an intermediate ``g_i = delta_ii`` took y's length from ``s = sum_i(y_i)``, and the
    program's shape depended on the order of its statements (a review found it)."""
    x, y = np.arange(3.0) + 1, np.arange(5.0) + 1
    source = "s = sum_i(y_i)\ng_i = delta_ii\nc_i = delta_ii + sum_i(x_i)\nh_i = g_i + c_i + s"
    expected = 1 + 1 + x.sum() + y.sum()
    np.testing.assert_allclose(einderiv.evaluate(source, x=x, y=y), expected * np.ones(3))
    reordered = "s = sum_i(y_i)\nc_i = delta_ii + sum_i(x_i)\ng_i = delta_ii\nh_i = g_i + c_i + s"
    np.testing.assert_allclose(einderiv.evaluate(reordered, x=x, y=y), expected * np.ones(3))


def test_a_group_at_a_count_dimension_keeps_the_letter_that_sizes_it():
    """``... / (sum_j(w_j w_j) + sum_j(mu delta_jj))``: the group's w_j sizes the count j; keeping
    groups apart from count letters renamed it, and the text stopped with "cannot be inferred"
    (a review found it).  Groups move only where they write the letter at another dimension."""
    x, w, lam, mu = np.array([0.1, -0.2, 0.3]), np.array([1.0, 2.0, 0.5, 0.3]), 0.2, 0.4
    gradient = einderiv.grad("f = (sum_i(x_i + lam))^3 / sum_j(w_j w_j + mu)", "x")
    expected = 3 * (x.sum() + 3 * lam) ** 2 / (w @ w + 4 * mu) * np.ones(3)
    arrays = {"x": x, "lam": lam, "w": w, "mu": mu}
    np.testing.assert_allclose(gradient(**arrays), expected, rtol=1e-12)
    read = einderiv.compile(str(gradient))
    np.testing.assert_allclose(read(**{k: v for k, v in arrays.items() if k in read.ranks}), expected, rtol=1e-12)


def test_a_count_inside_a_factored_group_reads_back():
    """``f = sum_i(sigmoid(sum_j(M_ii + A_ij)))``: its gradient by M factors as ``s (1 - s) delta_kl
    delta_jj``, J counted outside and inside the sigmoid.  The inner count printed as
    ``delta_{j9,j9}``, which nothing sizes, and the text did not read back (16 of 19 read-back
    errors of a random-program probe).  Checked against NumPy's closed form J s (1 - s) delta_kl."""
    rng = np.random.default_rng(5)
    M, A = rng.normal(size=(3, 3)), rng.normal(size=(3, 4))
    s = 1 / (1 + np.exp(-(4 * np.diag(M) + A.sum(axis=1))))
    expected = np.diag(4 * s * (1 - s))
    gradient = einderiv.grad("f = sum_i(sigmoid(sum_j(M_ii + A_ij)))", "M")
    text = str(gradient)
    assert "j9" not in text and "delta_jj" in text
    np.testing.assert_allclose(gradient(M=M, A=A), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.compile(text)(M=M, A=A), expected, rtol=1e-12)
    product = einderiv.hvp("f = sum_i(sqrt(sigmoid(sum_j(M_ii + A_ij))))", "M")
    V = rng.normal(size=(3, 3))
    read = einderiv.compile(str(product))
    np.testing.assert_allclose(read(M=M, A=A, v=V), product(M=M, A=A, v=V), rtol=1e-10)


@pytest.mark.parametrize(
    "source, statement_text",
    [
        ("L = mean_n((X_nd w_d - y_n)^2)", "dL/dw_i = 2 mean_n((X_nd w_d - y_n) X_ni)"),
        ("r_n = y_n - X_nd w_d; L = mean_n(r_n^2)", "dL/dw_i = -2 mean_n(r_n X_ni)"),
    ],
)
def test_a_mean_over_a_factored_product_prints_as_mean(source, statement_text):
    """The 1/N of a mean, pulled out of a factored sum, printed as ``mean_j(delta_jn)`` beside the
    product that sums n (``2 (X_nd w_d - y_n) X_ni mean_j(delta_jn)``); it is ``mean_n(...)``
    around that product.  The text reads back to NumPy's 2/N Xᵀ(Xw - y)."""
    rng = np.random.default_rng(6)
    X, w, y = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=5)
    gradient = einderiv.grad(source, "w")
    assert str(gradient).splitlines()[-1] == statement_text
    expected = 2 / 5 * X.T @ (X @ w - y)
    np.testing.assert_allclose(gradient(X=X, w=w, y=y), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.compile(str(gradient))(X=X, w=w, y=y), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "kind, source",
    [
        ("jvp", "f = mean_i(mean_j(D_ij x_i y_j))"),
        ("grad", "f = mean_i(mean_j(D_ij x_i y_j))"),
        ("grad", "f = mean_i(mean_j(D_ij x_i y_j)) + mean_i(mean_j(D_ij x_i x_j))"),
    ],
)
def test_two_means_of_one_dimension_print_as_two(kind, source):
    """With D diagonal, ``mean_i(mean_j(D_ij ...))`` is 1/N^2 sum_k D_kk ...; its two 1/N (same
    dimension, both along k) printed as one ``mean_k(...)``, a text that read back N times too
    large.  The numbers came out right; the printed text now does too."""
    rng = np.random.default_rng(8)
    n = 4
    D, V = np.diag(rng.normal(size=n)), np.diag(rng.normal(size=n))
    x, y = rng.normal(size=n), rng.normal(size=n)
    result = getattr(einderiv, kind)(source, "D", diagonal=["D"])
    weights = x * y + (x * x if "x_i x_j" in source else 0)
    if kind == "jvp":
        expected, arrays = (np.diag(V) * weights).sum() / n**2, {"D": D, "x": x, "y": y, "v": V}
    else:
        expected, arrays = np.diag(weights) / n**2, {"D": D, "x": x, "y": y}
    np.testing.assert_allclose(result(**arrays), expected, rtol=1e-12)
    read = einderiv.compile(str(result))
    np.testing.assert_allclose(read(**{k: a for k, a in arrays.items() if k in read.inputs}), expected, rtol=1e-12)


def test_a_count_after_a_group_that_sums_its_letter_reads_back():
    """A count printed after a group whose ``sum_j(...)`` binds j printed as ``delta_{j9,j9}^2``,
    which nothing sizes; the sum binds j inside the group only, so the count takes j (found by
    the products probe)."""
    rng = np.random.default_rng(9)
    A, s = rng.normal(size=(3, 4)), 0.3
    hessian = einderiv.diff("f = sum_i(sigmoid(sum_j(s A_ij) + sum_j(s^2)))", ["s", "s"])
    assert "delta_{" not in str(hessian)  # a count no letter sizes prints as delta_{j9,j9}
    a, J = A.sum(axis=1), A.shape[1]
    u = s * a + J * s**2
    sig = 1 / (1 + np.exp(-u))
    d1, d2 = sig * (1 - sig), sig * (1 - sig) * (1 - 2 * sig)
    expected = (d2 * (a + 2 * J * s) ** 2 + d1 * 2 * J).sum()
    np.testing.assert_allclose(hessian(A=A, s=s), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.compile(str(hessian))(A=A, s=s), expected, rtol=1e-12)


def test_a_power_of_tanhs_complement_beside_its_root_keeps_its_size():
    """``d2/dx2 sqrt(1 - tanh(x)^2)`` (sech x): the evaluator writes ``1 - 2 t^2 + t^4`` as
    c^2 (c = cosh(x)^-2) beside the text's ``1 / sqrt(1 - t^2)^3``, c^-3/2; at x = 200 c^2 is
    1e-347, which underflowed to 0 before its product with c^-3/2, and the Hessian came out twice
    sech(200).  One power of c, c^(1/2), is right; checked against mpmath."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.array([0.5, 3.0, 20.0, 200.0, -200.0, 700.0])
    expected = np.array([float(mpmath.diff(mpmath.sech, mpmath.mpf(v), 2)) for v in x])
    source = "f = sum_i(sqrt(1 - tanh(x_i)^2))"
    np.testing.assert_allclose(einderiv.hessian_diag(source, "x")(x=x), expected, rtol=1e-12)
    np.testing.assert_allclose(np.diag(einderiv.hessian(source, "x")(x=x)), expected, rtol=1e-12)
    # two powers of c in one term (c^1/4 beside c^-3/4...): all merged, finite at 700
    expected = np.array([float(mpmath.diff(lambda u: mpmath.sqrt(mpmath.sech(u)), mpmath.mpf(v), 2)) for v in x])
    got = einderiv.hessian_diag("f = sum_i(sqrt(sqrt(1 - tanh(x_i)^2)))", "x")(x=x)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # merged to c^0, the rest is -2 + 2 t^2 again: factored again, -2 c (it was 0 from x = 25)
    got = einderiv.hessian_diag("f = sum_i(log(1 - tanh(x_i)^2))", "x")(x=x[:5])
    np.testing.assert_allclose(got, -2 / np.cosh(x[:5]) ** 2, rtol=1e-12)


@pytest.mark.parametrize(
    "source, order, closed_form",
    [
        # d/ds sum_i t/(1 - t^2) = sum_i (1 + t^2)/(1 - t^2): the merged power is c^0, a count of i
        ("f = sum_i(tanh(s + x_i) / (1 - tanh(s + x_i)^2))", 1, lambda t: (1 + t**2) / (1 - t**2)),
        ("f = sum_i(log(1 - tanh(s + x_i)^2))", 2, lambda t: -2 * (1 - t**2)),
    ],
)
def test_a_merged_power_of_one_keeps_the_count_it_carries(source, order, closed_form):
    """Merging the complement's powers to c^0 dropped the factor, and with it the sum over i
    that only it carried: the constant was added once, not N times (a reviewer's case)."""
    x, s = np.array([0.3, -0.5, 1.2, 0.1]), 0.4
    expected = closed_form(np.tanh(s + x)).sum()
    np.testing.assert_allclose(einderiv.diff(source, ["s"] * order)(s=s, x=x), expected, rtol=1e-12)


def test_an_adjoint_that_counts_a_dimension_prints_its_counts_as_powers():
    """An HVP's adjoint ``d2fdxvdt1_i`` holding J (``delta_jj``) four times printed
    ``delta_jj delta_{j9,j9} delta_jj^2``; its counts now print as powers of one count, as the
    derivative's own statement's do (the products probe's case), with a letter that the
    statements printed before it write at J and at no other dimension, which sizes them when the
    text is read back (it stopped with "cannot be inferred")."""
    jax, jnp = jax_float64()
    source = "t1_j = exp(tanh(x_i A_ij)); f = (1 + sum_j(z_l t1_l + t1_j)^2)^0.5"
    product = einderiv.hvp(source, "x")
    assert "delta_{" not in str(product)  # a count no letter sizes prints as delta_{j9,j9}
    rng = np.random.default_rng(10)
    x, A, z, v = rng.normal(size=3), rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)

    def f(x):
        t1 = jnp.exp(jnp.tanh(x @ A))
        return jnp.sqrt(1 + jnp.sum(z @ t1 + t1) ** 2)

    expected = jax.jvp(jax.grad(f), (x,), (v,))[1]
    np.testing.assert_allclose(product(x=x, A=A, z=z, v=v), expected, rtol=1e-10)
    np.testing.assert_allclose(einderiv.compile(str(product))(x=x, A=A, z=z, v=v), expected, rtol=1e-10)


def test_an_adjoints_count_takes_a_letter_written_at_its_dimension():
    """An adjoint printed alone counts with a letter of the statements before it: here the
    count of C's rows, which ``t1_i``'s statement writes as j, while the adjoint before it, ``dfdt1_i
    = 2 t1_j ...``, writes j at x's length.  Counted by j, the text read back 0.0171 where the
    derivative is 0.0247 (a reviewer's case); the count now takes a letter only C's rows are
    written with.  Values against jax in float64."""
    jax, jnp = jax_float64()
    source = "t1_i = sigmoid(sum_jk(s C_jk) + sum_j(x_i^2 s)); f = log(1 + sum_i(t1_i)^2)"
    rng = np.random.default_rng(13)
    C, x, s = rng.normal(size=(3, 4)), rng.normal(size=5), 0.3

    def f(s):
        t1 = jax.nn.sigmoid(s * C.sum() + 3 * x**2 * s)
        return jnp.log(1 + jnp.sum(t1) ** 2)

    for order in (1, 2, 3):
        derivative = einderiv.diff(source, ["s"] * order)
        reference = f
        for _ in range(order):
            reference = jax.grad(reference)
        expected = float(reference(s))
        np.testing.assert_allclose(derivative(s=s, C=C, x=x), expected, rtol=1e-10)
        np.testing.assert_allclose(einderiv.compile(str(derivative))(s=s, C=C, x=x), expected, rtol=1e-10)


def test_a_summed_index_moved_out_of_a_counts_way_avoids_other_counts_letters():
    """``T1_in delta_ii`` (i summed at T1's rows and a count of them in one product) moved its
    dummy to j, which a count in another term of the statement printed with at z's length
    (``delta_jj``): read back, "index 'i' has two sizes" (the products probe's last read-back
    error).  Values against jax in float64."""
    jax, jnp = jax_float64()
    source = (
        "t1_j = z_l z_l + z_j; t2_i = tanh(M_ii) + softplus(x_i); T1_ij = y_i (y_k t2_k) - tanh(t2_m x_m) + t1_j; "
        "f = sum_ij(sum_k(sum_m(z_j + T1_mj) + x_k) T1_ij)"
    )
    rng = np.random.default_rng(14)
    arrays = {"z": rng.normal(size=4), "M": rng.normal(size=(3, 3)), "x": rng.normal(size=3), "y": rng.normal(size=3)}

    def f(x, z, M):
        y = arrays["y"]
        t1 = z @ z + z
        t2 = jnp.tanh(jnp.diag(M)) + jax.nn.softplus(x)
        T1 = (y * (y @ t2))[:, None] - jnp.tanh(t2 @ x) + t1[None, :]
        inner = 3 * (3 * z + T1.sum(0)) + x.sum()  # sum_k(sum_m(z_j + T1_mj) + x_k), m and k of length 3
        return jnp.sum(inner[None, :] * T1)

    expected = jax.grad(f, argnums=(0, 1, 2))(arrays["x"], arrays["z"], arrays["M"])
    gradients = einderiv.grad(source, ["x", "z", "M"])
    for gradient, reference in zip(gradients, expected):
        np.testing.assert_allclose(gradient(**arrays), reference, rtol=1e-10)
        read = einderiv.compile(str(gradient))
        np.testing.assert_allclose(read(**{k: a for k, a in arrays.items() if k in read.ranks}), reference, rtol=1e-10)


def test_a_count_in_an_intermediate_statement_is_sized_by_the_statements_before_it():
    """A summed index that a statement writes only in deltas is a count of the dimension the
    statements before it write that letter at, in any statement (an adjoint printed alone is one),
    as in the last; an output axis is not (see the test above)."""
    x, y = np.arange(3.0) + 1, np.arange(5.0) + 1
    source = "u_j = x_j^2; g = 2 delta_jj; f = g sum_k(y_k)"
    np.testing.assert_allclose(einderiv.evaluate(source, x=x, y=y), 2 * 3 * y.sum())
    with pytest.raises(einderiv.EvaluationError, match="cannot be inferred"):  # nothing before writes j
        einderiv.evaluate("g = 2 delta_jj; u_j = x_j^2; f = g sum_k(y_k)", x=x, y=y)


@pytest.mark.parametrize(
    "source, outer",
    [
        ("f = sum_i(sigmoid(sum_j(s^2) + sum_j(s A_ij)) sigmoid(sum_k(s^2) + sum_k(s B_ik)))", "sigmoid"),
        ("f = sum_i(sigmoid(sum_j(s A_ij) + sum_j(s^2)) tanh(sum_k(s B_ik) + sum_k(s^3)))", "tanh"),
    ],
)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_counts_of_two_dimensions_in_one_product_read_back(source, outer, order):
    """Counts of J and of K in one product: the counts of each dimension print as a power of one
    count (they printed apart, ``s delta_{j9,j9} s delta_jj``, where a product held counts of two
    dimensions), and a summed index moved out of a count's way keeps away from the letters of the
    counts inside the product's groups too (``B_ij`` beside ``sigmoid(... delta_{j9,j9})``, then
    "index 'p' has two sizes").  A reviewer's cases; values against jax in float64."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(11)
    A, B, s = rng.normal(size=(3, 4)), rng.normal(size=(3, 5)), 0.3

    def f(s):
        first = (
            jax.nn.sigmoid(4 * s**2 + s * A.sum(1)) if outer == "sigmoid" else jax.nn.sigmoid(s * A.sum(1) + 4 * s**2)
        )
        second = jax.nn.sigmoid(5 * s**2 + s * B.sum(1)) if outer == "sigmoid" else jnp.tanh(s * B.sum(1) + 5 * s**3)
        return jnp.sum(first * second)

    reference = f
    for _ in range(order):
        reference = jax.grad(reference)
    derivative = einderiv.diff(source, ["s"] * order)
    assert "delta_{" not in str(derivative)  # a count no letter sizes prints as delta_{j9,j9}
    np.testing.assert_allclose(derivative(A=A, B=B, s=s), float(reference(s)), rtol=1e-10)
    np.testing.assert_allclose(einderiv.compile(str(derivative))(A=A, B=B, s=s), float(reference(s)), rtol=1e-10)


def test_an_adjoint_constant_along_its_axis_prints_what_sizes_it():
    """An adjoint constant along an axis (``dfdt2_i = x_k t1_k delta_ii``) printed before a
    gradient that sums that axis alone (``(1 - y_k A_kj) dfdt2_i``): nothing sized i when the
    text was read back.  It now prints ``+ 0 t2_i``, the tensor it is the adjoint of (the
    products probe's cases).  Values against jax in float64."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(12)
    x, y, z, A = rng.normal(size=3), rng.normal(size=3), rng.normal(size=4), rng.normal(size=(3, 4))

    def f1(z):
        t1 = z.size * (y @ x + y) + z.sum()
        t2 = t1 - y @ A @ z
        return (x @ t1) * t2.sum()

    def f2(x):
        T1 = jnp.sqrt(2 + jnp.tanh(x @ x)) / jax.nn.softplus(z)[None, :] + y[:, None]
        return jnp.mean(2 * T1)

    cases = [
        ("t1_i = sum_j(y_k x_k + y_i + z_j); t2_i = t1_i - y_k A_kj z_j; f = sum_i((x_k t1_k) t2_i)", "z", f1, z),
        ("T1_ij = sqrt(2 + tanh(x_k x_k)) / softplus(z_j) + y_i; f = mean_ij(T1_ij + T1_ij)", "x", f2, x),
    ]
    arrays = {"x": x, "y": y, "z": z, "A": A}
    for source, wrt, loss, at in cases:
        gradient = einderiv.grad(source, wrt)
        expected = jax.grad(loss)(at)
        read = einderiv.compile(str(gradient))
        np.testing.assert_allclose(gradient(**{k: a for k, a in arrays.items() if k in gradient.inputs}), expected)
        np.testing.assert_allclose(read(**{k: a for k, a in arrays.items() if k in read.inputs}), expected)


def test_a_power_and_a_repeated_factor_collect():
    """``x_j^2`` and ``x_j x_j`` are one product: their difference is 0 (it printed
    ``x_j^2 - x_j x_j``), and the sine-cosine Hessian through intermediates is one term."""
    assert str(einderiv.grad("f = x_i^2 y_i - x_i x_i y_i", "y")).splitlines()[-1] == "df/dy_j = 0"
    hessian = einderiv.hessian("c_n = cos(a_n); s_n = sin(a_n); L = c_n s_n", "a")
    # c_j delta_ij is c_i delta_ij: it printed -((2 c_i + c_j) s_i + c_i s_j) delta_ij
    assert str(hessian).splitlines()[-1] == "d2L/da_i da_j = -4 s_i c_i delta_ij"
    a = np.array([0.3, -1.2, 2.0])
    expected = np.diag(-4 * np.sin(a) * np.cos(a))  # (cos a sin a)'' = (cos^2 a - sin^2 a)'
    np.testing.assert_allclose(hessian(a=a), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(einderiv.compile(str(hessian))(a=a), expected, rtol=1e-12, atol=1e-15)


def test_the_output_statement_printed_before_a_count_brings_what_it_names():
    """``f = sum_ik(s + (t1_ik - t1_ik))``: df/ds is I K, printed ``delta_ii delta_kk`` after f's
    statement (which sizes i and k); t1's statement, which f's text names though its value
    cancels, was not printed, so the text read back asked for an array t1 (found by the program
    oracle at 400 examples)."""
    source = "t1_ik = inv(M)_ik; t2 = sum_i((0.5 + x_i)); f = sum_ik((s + (t1_ik - t1_ik)))"
    gradient = einderiv.grad(source, "s")
    M = 2 * np.eye(3) + 0.1
    assert float(gradient(M=M, s=1.0, x=np.ones(2))) == 9.0
    assert float(einderiv.compile(str(gradient))(M=M, s=1.0)) == 9.0


@pytest.mark.parametrize(
    "kind, source, wrt",
    [
        # a count inside two groups of one term: the second printed as o9
        ("jvp", "t1_i = sqrt(exp(sum_j(((x_k y_k) + z_j)))) y_i; h_ij = (sum_k(t1_k) x_i + z_j)", "z"),
        # counts given letters before the output's statement was printed: i9
        ("vjp", "s1 = sum_i(log(2 + tanh(softplus(y_i)))); f = sum_ij(sigmoid((A_kj y_k) s1^2)^(-1/2) + x_i)", "A"),
    ],
)
def test_products_with_counts_read_back(kind, source, wrt):
    """Two texts of a random-program probe that did not read back ("the size of index 'o9' cannot
    be inferred"); the product's own numbers are checked against jax elsewhere, here its text
    against them."""
    rng = np.random.default_rng(7)
    product = getattr(einderiv, kind)(source, wrt)
    text = str(product)
    assert "9" not in text.replace("^", " ")
    compiled = einderiv.compile(text)
    arrays = {"x": rng.normal(size=3), "y": rng.normal(size=3), "z": rng.normal(size=4), "A": rng.normal(size=(3, 2))}
    arrays["v" if kind == "jvp" else "u"] = rng.normal(size=4) if kind == "jvp" else np.array(1.3)
    given = {k: v for k, v in arrays.items() if k in product.ranks}
    read = compiled(**{k: v for k, v in given.items() if k in compiled.ranks})
    np.testing.assert_allclose(read, product(**given), rtol=1e-10)


def test_a_polynomial_in_one_sigmoid_prints_expanded_not_nested():
    """The third derivative of sum_n(sigmoid(x_n)) printed ``s (-s (-6 s (2 - s) + 7) + 1)``; it is
    sigma''' = ``s (1 - s) (1 - 6 s + 6 s^2)`` in both forms, as a textbook writes it (it printed
    ``s (1 - 7 s + 12 s^2 - 6 s^3)`` before a slope 1 - s counted as shorter)."""
    program = einderiv.diff("s_n = sigmoid(x_n); f = sum_n(s_n)", ["x", "x", "x"])
    statement = einderiv.diff("f = sum_n(sigmoid(x_n))", ["x", "x", "x"])
    printed = "d3f/dx_i dx_j dx_k = s_i (1 - s_i) (1 - 6 s_i + 6 s_i^2) delta_ik delta_ij"
    assert str(program).splitlines()[-1] == printed
    assert str(statement).splitlines()[-1] == str(program).splitlines()[-1].replace("s_i", "sigmoid(x_i)")
    x = np.array([-3.0, 0.2, 4.0])
    s = 1 / (1 + np.exp(-x))
    expected = np.zeros((3, 3, 3))
    expected[np.arange(3), np.arange(3), np.arange(3)] = s * (1 - s) * (1 - 6 * s + 6 * s**2)
    for derivative in (program, statement):
        np.testing.assert_allclose(derivative(x=x), expected, rtol=1e-12, atol=1e-17)
        np.testing.assert_allclose(einderiv.compile(str(derivative))(x=x), expected, rtol=1e-12, atol=1e-17)


def test_a_deep_program_hessian_does_not_multiply_its_terms():
    """A second derivative through a chain whose statements each use the one before twice stays
    small: substituting every adjoint before differentiating again (tried, not kept) multiplied
    the terms at each step (753 terms at depth 4, 38 s to derive; a reviewer's case).  Checked
    against jax in float64."""
    jax, jnp = jax_float64()
    depth = 5
    statements = ["t0_n = X_nd w_d"]
    for k in range(1, depth + 1):
        statements.append(f"u{k}_n = tanh(t{k - 1}_n); t{k}_n = u{k}_n t{k - 1}_n + u{k}_n")
    statements.append(f"L = sum_n(t{depth}_n^2)")
    hessian = einderiv.diff("; ".join(statements), ["w", "w"])
    assert len(hessian.expr.terms) <= 12

    def loss(w, X):
        t = X @ w
        for _ in range(depth):
            u = jnp.tanh(t)
            t = u * t + u
        return jnp.sum(t**2)

    rng = np.random.default_rng(8)
    X, w = 0.3 * rng.normal(size=(20, 4)), 0.3 * rng.normal(size=4)
    np.testing.assert_allclose(hessian(X=X, w=w), jax.hessian(loss)(w, X), rtol=1e-10)


def test_a_softmax_intermediate_is_not_written_out_in_higher_derivatives():
    """A softmax intermediate stays a name in higher derivatives: written out as
    exp(z - logsumexp(z)) (reading one-call statements through, tried, not kept) it made this
    third derivative 136 terms (27 as the intermediate) and 30x slower to derive (a reviewer's
    random program).  Values against jax in float64."""
    jax, jnp = jax_float64()
    source = "t1_i = softmax_i(s c + u_i); t4 = sum_ij(sigmoid(A_ij - t1_i)); f = sigmoid(s - t4)"
    third = einderiv.diff(source, ["u", "u", "u"])
    assert len(third.expr.terms) <= 40

    def f(u, s, c, A):
        t1 = jax.nn.softmax(s * c + u)
        return jax.nn.sigmoid(s - jnp.sum(jax.nn.sigmoid(A - t1[:, None])))

    rng = np.random.default_rng(9)
    u, A, s, c = rng.normal(size=3), rng.normal(size=(3, 2)), 0.4, -0.7
    expected = jax.jacfwd(jax.hessian(f))(u, s, c, A)
    np.testing.assert_allclose(third(u=u, A=A, s=s, c=c), expected, rtol=1e-9, atol=1e-14)


def test_a_mean_is_not_pulled_out_of_terms_that_sum_two_lengths():
    """A VJP whose terms each held 1/n_j, with j summed at t2's length in one and at t1's in the
    other, printed ``mean_j(... t2_j ... + ... t1_j ...)``: one mean binds j once, so the text
    read back as "index 'j' has two sizes" (the products probe).  A 1/n_j is now pulled out of
    terms only where they write j at the same axes.  Values against jax in float64."""
    jax, jnp = jax_float64()
    source = (
        "s1 = sum_j((x_i x_i) z_j); t1_j = (x_i x_i) z_j; t2_i = (sqrt((1 + (s1 s1)^2)) + x_i); "
        "f = mean_ij(softplus(sigmoid(t1_j)) t2_i)"
    )
    rng = np.random.default_rng(15)
    x, z, u = rng.normal(size=3), rng.normal(size=4), np.array(1.3)

    def f(z):
        s1 = (x @ x) * z.sum()
        t1 = (x @ x) * z
        t2 = jnp.sqrt(1 + (s1 * s1) ** 2) + x
        return jnp.mean(jax.nn.softplus(jax.nn.sigmoid(t1))[None, :] * t2[:, None])

    expected = u * jax.grad(f)(z)
    product = einderiv.vjp(source, "z")
    np.testing.assert_allclose(product(x=x, z=z, u=u), expected, rtol=1e-10)
    np.testing.assert_allclose(einderiv.compile(str(product))(x=x, z=z, u=u), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "source",
    ["u_ij = C_ij; f = delta_ij", "u_ij = C_ij; f = sum_ij(delta_ij)", "u_ij = C_ij; f = delta_ij delta_ij"],
)
def test_a_delta_joining_letters_that_earlier_statements_size_apart_is_two_sizes(source):
    """A letter a statement writes only in deltas has the size the statements before it write it
    at; ``delta_ij`` then joins i's size (C's rows) to j's (C's columns).  For a 3x4 C it is the
    error "two sizes", as ``sum_ij(C_ij delta_ij)`` is; the simplifier had contracted the delta to
    ``delta_ii`` first and the program evaluated to 3, silently.  A square C is fine: C's size."""
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate(source, C=np.ones((3, 4)))
    assert einderiv.evaluate(source, C=np.ones((3, 3))) == 3.0


def test_a_delta_to_a_wrt_letter_is_sized_by_the_wrt_tensor_not_earlier_statements():
    """``dt2_ik/dM_jl = delta_ij delta_kl`` printed after ``t1_ik = A_ij A_kj + ...`` (A 3x4): j is
    M's axis 0 (its denominator says so), whatever t1 wrote j at; the delta ties nothing to A's
    columns.  Read back, it is the derivative's numbers (a probe of ``of=`` found "two sizes")."""
    source = "t1_ik = A_ij A_kj + 3 delta_ik; t2_ik = M_ik + 0.1 tanh(exp(tanh((t1_ik)(0.5)))); f = x_i t2_ik x_k"
    rng = np.random.default_rng(3)
    A, M = rng.normal(size=(3, 4)), rng.normal(size=(3, 3))
    jacobian = einderiv.jacobian(source, "M", of="t2")
    expected = np.einsum("ij,kl->ikjl", np.eye(3), np.eye(3))
    np.testing.assert_allclose(jacobian(A=A, M=M), expected)
    np.testing.assert_allclose(einderiv.compile(str(jacobian))(A=A, M=M), expected)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = sum_n(x_n^0 s) + sum_n(z_n)", lambda x, z, s: len(x) * s + z.sum()),
        ("f = x_n^0 s + z_n", lambda x, z, s: len(x) * s + z.sum()),
        ("f = x_n^0 + z_n^0", lambda x, z, s: len(x) + len(z)),
    ],
)
def test_a_zeroth_power_counts_the_length_of_its_own_tensor(source, expected):
    """``x_n^0`` is 1 with x's shape, so summing it counts x's length (NumPy: ``(x**0).sum()``).
    Folded to 1, its count took the size n had elsewhere in the statement: z's, 3 where x has 4
    (4.5 for 5.0, silently), or "two sizes" for ``x_n^0 + z_n^0`` (a bug hunt found them)."""
    x, z, s = np.arange(1.0, 5.0), np.ones(3), np.array(0.5)
    arrays = {"x": x, "z": z, "s": s} if "s" in source else {"x": x, "z": z}
    assert einderiv.evaluate(source, **arrays) == expected(x, z, s)
    np.testing.assert_array_equal(einderiv.grad(source, "x")(**arrays), np.zeros(4))


@pytest.mark.parametrize(
    "source, numpy_form",
    [
        ("y_i = (x_i^0.5)^2", lambda x: np.sqrt(x) ** 2),
        ("y_i = (x_i^(1/3))^3", lambda x: (x ** (1 / 3)) ** 3),
        ("y_i = (x_i^0.5)^3", lambda x: np.sqrt(x) ** 3),
        ("y_i = (exp(x_i)^0.5)^2", lambda x: np.exp(x)),
    ],
)
def test_a_power_of_a_fractional_power_of_a_negative_number_stays_nan(source, numpy_form):
    """A fractional power of a negative number is NaN, in NumPy and in einderiv; ``(x^0.5)^2`` and
    ``(x^(1/3))^3`` were folded to x, -2 at x = -2, silently (a bug hunt).  A power of a power
    folds where the result is a fractional power too, or the base is never negative (exp)."""
    x = np.array([-2.0, 0.5, 3.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(einderiv.evaluate(source, x=x), numpy_form(x), rtol=1e-14)


@pytest.mark.parametrize(
    "source",
    [
        "e_k = exp(z_k); s = sum_j(e_j); f = y_k log(e_k / s)",
        "e_k = exp(z_k); f = y_k log(e_k / sum_j(e_j))",
        "f = y_k log(exp(z_k) / sum_j(exp(z_j)))",
    ],
)
def test_a_log_of_a_quotient_of_intermediates_is_a_log_softmax(source):
    """``log(e_k / s)`` with ``e = exp(z)`` and ``s = sum_j(e_j)`` is ``z_k - logsumexp(z)`` as in one
    statement: it was NaN at logits of 1000 (exp overflowed), value and gradient.  Against the
    closed forms y.(z - logsumexp z) and y - softmax(z) sum(y) in float64."""
    z, y = np.array([1000.0, -1000.0, 500.0, -700.0]), np.array([1.0, 0.0, 1.0, 0.0])
    shifted = z - z.max()
    log_softmax = shifted - np.log(np.exp(shifted).sum())
    assert einderiv.evaluate(source, y=y, z=z) == pytest.approx(y @ log_softmax, rel=1e-14)
    np.testing.assert_allclose(einderiv.grad(source, "z")(y=y, z=z), y - np.exp(log_softmax) * y.sum(), atol=1e-300)


def test_a_jacobian_of_an_intermediate_constant_along_its_axis_reads_back():
    """The Jacobian of ``t2_j = t1 t1 + log1p(t1^2) + v_j`` (of="t2") by s goes through the
    adjoint ``dt2dt1_j``, constant along j: nothing in the printed text sized j, and reading it
    back stopped with "cannot be inferred" (an of= probe).  t2's statement is now printed before
    the adjoint, which adds ``+ 0 t2_j``.  Against the closed form d/ds of t1^2 + log1p(t1^2)."""
    source = "t1 = ((s + 0.5))((s)(3)); t2_j = (((t1)(t1) + log1p((t1)^2)) + v_j); f = sigmoid((t1)(0.5))"
    s, v = 0.3, np.ones(3)
    t1, dt1 = (s + 0.5) * 3 * s, 3 * (2 * s + 0.5)
    expected = np.full(3, (2 * t1 + 2 * t1 / (1 + t1**2)) * dt1)
    jacobian = einderiv.jacobian(source, "s", of="t2")
    np.testing.assert_allclose(jacobian(s=np.array(s), v=v), expected, rtol=1e-13)
    np.testing.assert_allclose(einderiv.compile(str(jacobian))(s=np.array(s), v=v), expected, rtol=1e-13)


def test_fresh_derivative_letters_avoid_a_count_the_user_wrote():
    """``f = x_i x_j delta_ij delta_kk``: f itself has no size for k (an error), yet its gradient
    took k for its own axis, printed ``df/dx_k = 2 x_k delta_{k9,k9}`` and evaluated to x's size as
    the count, [6, 12, 18] for [1, 2, 3], silently (a bug hunt).  The fresh letter avoids every
    letter written, so the gradient says what f says: k's size cannot be inferred."""
    gradient = einderiv.grad("f = x_i x_j delta_ij delta_kk", "x")
    assert gradient.indices != ("k",)
    with pytest.raises(einderiv.EvaluationError, match="cannot be inferred"):
        gradient(x=np.array([1.0, 2.0, 3.0]))


def test_a_rank_matrix_notation_guessed_wrong_says_how_to_declare_it():
    """``L = sum(log(1 + exp(-y .* (X w + b))))`` reads b as a vector; a gradient called with a
    scalar b said only "input 'b' has 0 axes ... used with 1 indices" (a bug hunt).  It now names
    the guess and the fix, which gives NumPy's closed form."""
    source = "L = sum(log(1 + exp(-y .* (X w + b))))"
    rng = np.random.default_rng(4)
    X, y, w, b = rng.normal(size=(5, 3)), rng.choice([-1.0, 1.0], size=5), rng.normal(size=3), np.array(0.5)
    with pytest.raises(einderiv.EvaluationError, match=r"read 'b' as a vector.*ranks=\{'b': 0\}"):
        einderiv.grad(source, "w")(X=X, y=y, w=w, b=b)
    margin = y * (X @ w + b)
    expected = X.T @ (-y / (1 + np.exp(margin)))
    np.testing.assert_allclose(einderiv.grad(source, "w", ranks={"b": 0})(X=X, y=y, w=w, b=b), expected, rtol=1e-12)


def test_code_generation_names_the_users_letter_for_an_unsized_count(capsys):
    """``f = delta_ii x_j x_j``: i has no size.  ``eval`` says so naming i; code generation said
    "index 'i#_'", an internal name (a bug hunt)."""
    from einderiv.cli import main

    assert main(["diff", "f = delta_ii x_j x_j", "--wrt", "x", "--format", "python"]) == 2
    err = capsys.readouterr().err
    assert "index 'i' is not known from an array" in err and "#" not in err and err.count("\n") == 1


def test_a_bare_last_line_that_uses_nothing_before_it_warns():
    """``f = x_i A_ij`` ⏎ ``x_j``: the line break ends the first statement, and the bare second line
    is the output, x itself; nothing said so (a bug hunt).  It warns, naming the fix; a bare last
    line that uses a statement (``t = x_i x_i`` ⏎ ``t + 1``) does not."""
    import warnings

    x, A = np.array([1.0, 2.0, 3.0]), np.eye(3)
    with pytest.warns(einderiv.EinderivWarning, match="end that line with an operator"):
        value = einderiv.evaluate("f = x_i A_ij\n x_j", x=x, A=A)
    np.testing.assert_array_equal(value, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert einderiv.evaluate("t = x_i x_i\nt + 1", x=x) == 15.0


def test_two_sizes_joined_by_a_delta_names_both_letters():
    """``C_ij = delta_ij + A_ij`` with A 4x3 said "index 'j' has two sizes: 4 (from A axis 0)",
    though axis 0 carries i (a bug hunt): the delta makes i and j one size, and the message says so."""
    with pytest.raises(einderiv.EvaluationError, match="indices 'i' and 'j', which the text makes one size"):
        einderiv.evaluate("C_ij = delta_ij + A_ij", A=np.ones((4, 3)))


@pytest.mark.parametrize(
    "source, power, constant",
    [
        ("e_k = exp(z_k); s = sum_j(e_j); f = y_k log(2 e_k / s)", 1, np.log(2)),
        ("f = y_k log(2 exp(z_k) / sum_j(exp(z_j)))", 1, np.log(2)),
        ("e_k = exp(z_k); s = sum_j(e_j); f = y_k log(e_k^2 / s)", 2, 0.0),
        ("f = y_k log(exp(z_k)^2 / sum_j(exp(z_j)))", 2, 0.0),
    ],
)
def test_a_log_of_a_product_of_positive_factors_splits(source, power, constant):
    """``log(c e_k^p / s)`` with e = exp(z), s = sum_j(e_j) is log(c) + p z_k - logsumexp(z): NaN at
    logits of 1000 before (a review found these beside ``log(e_k / s)``), as a program and as one
    statement.  Against the closed forms y.(log c + p z - lse z) and p y - softmax(z) sum(y)."""
    z, y = np.array([1000.0, -1000.0, 500.0, -700.0]), np.array([1.0, 0.0, 1.0, 0.0])
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    assert einderiv.evaluate(source, y=y, z=z) == pytest.approx(y @ (constant + power * z - lse), rel=1e-14)
    expected = power * y - np.exp(z - lse) * y.sum()
    np.testing.assert_allclose(einderiv.grad(source, "z")(y=y, z=z), expected, atol=1e-300)


@pytest.mark.parametrize(
    "source", ["s = sigmoid(u)\nlog(s)", "e_k = exp(z_k)\ns = sum_j(e_j)\nlog(s)", "t = x_i x_i\nt - t + u"]
)
def test_a_bare_last_line_that_uses_a_statement_as_written_does_not_warn(source):
    """The warning for a bare last line that uses no earlier statement reads the line as written:
    ``log(s)`` with s = sigmoid(u) is rewritten to -softplus(-u), which names no statement, and
    warned before (a review found it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        einderiv.compile(source)


def test_fresh_derivative_letters_avoid_counts_written_in_any_statement():
    """``t_j = x_j delta_ii; f = t_j x_j``: i has no size, so f and its derivatives are errors.
    The Hessian's fresh letters took i and it evaluated to 18 I for 3 x 3, silently (a review
    found it); they now avoid every statement's letters."""
    hessian = einderiv.hessian("t_j = x_j delta_ii; f = t_j x_j", "x")
    with pytest.raises(einderiv.EvaluationError, match="cannot be inferred"):
        hessian(x=np.array([1.0, 2.0, 3.0]))


def test_a_log_of_a_power_of_a_sum_with_a_constant_splits():
    """``log((1 + exp(s))^2)`` is 2 softplus(s): NaN at s = 400 before (its docstring claimed it)."""
    gradient = einderiv.grad("f = log((1 + exp(s))^2)", "s")
    assert float(gradient(s=np.array(400.0))) == 2.0
    assert float(einderiv.evaluate("f = log((1 + exp(s))^2)", s=np.array(400.0))) == 800.0


def test_a_complex_derivative_is_the_holomorphic_one_where_it_exists():
    jax, jnp = jax_float64()
    x = np.array([0.3 + 0.7j, -1.1 + 0.2j, 0.5 - 0.4j])
    A = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    got = einderiv.grad("f = exp(x_i) x_i + x_i A_ij x_j", "x")(x=x, A=A)
    want = jax.grad(lambda x: jnp.sum(jnp.exp(x) * x) + x @ A @ x, holomorphic=True)(jnp.asarray(x))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12)
    # a value through abs is NumPy's at complex inputs: only its derivative has no meaning there
    assert einderiv.evaluate("f = abs(x_i)", x=x) == pytest.approx(np.abs(x).sum(), rel=1e-14)
    # a function NumPy does not define at complex values is einderiv's error, not a TypeError
    with pytest.raises(einderiv.EvaluationError, match="softplus cannot be evaluated at complex128"):
        einderiv.evaluate("f = softplus(x_i)", x=x)


@pytest.mark.parametrize(
    ("function", "source", "wrt", "arrays"),
    [
        ("abs", "f = abs(x_i)", einderiv.grad, {"x": np.array([1 + 2j, 3 - 1j])}),
        ("relu", "f = relu(x_i) x_i", einderiv.hessian, {"x": np.array([1 + 2j, 3 - 1j])}),
    ],
)
def test_complex_inputs_to_a_derivative_through_a_non_analytic_function_are_an_error(function, source, wrt, arrays):
    """|z| has no complex derivative: the real-variable rule's x/|x| is one of several
    conventions, so complex inputs are refused, never answered silently.  (logdet of a complex
    matrix is the principal log(det), which has one: see the test of its value below.)"""
    derivative = wrt(source, next(iter(arrays))[0])
    with pytest.raises(einderiv.EvaluationError, match=rf"complex .*{function}.* no complex derivative"):
        derivative(**arrays)
    torch = pytest.importorskip("torch")
    with pytest.raises(einderiv.EvaluationError, match="no complex derivative"):
        derivative(**{k: torch.tensor(v) for k, v in arrays.items()})
    real = {k: v.real.copy() for k, v in arrays.items()}
    assert np.all(np.isfinite(derivative(**real)))


def test_complex_inputs_that_reach_no_non_analytic_derivative_are_differentiated():
    """Only an input that the derivative differentiates abs or relu at is refused: in
    ``x_i x_i + abs(y_i)`` by x, and ``x_i x_i abs(y_j)`` (abs's value only), y may be complex."""
    x, y = np.array([1 + 2j, 3 - 1j]), np.array([1 + 1j, 2 - 1j])
    np.testing.assert_allclose(einderiv.grad("f = x_i x_i + abs(y_i)", "x")(x=x, y=y), 2 * x)
    xr = x.real.copy()
    np.testing.assert_allclose(einderiv.grad("f = x_i x_i abs(y_j)", "x")(x=xr, y=y), 2 * xr * np.abs(y).sum())
    with pytest.raises(einderiv.EvaluationError, match="input 'y' is complex .* relu or step"):
        einderiv.grad("t_i = x_i + y_i; f = relu(t_i) x_i", "x")(x=xr, y=y)


@pytest.mark.parametrize(
    ("source", "wrt", "function"),
    [
        ("f = sign(x_i) y_i", "x", "abs or sign"),
        ("f = sign(x_i) + x_i", "x", "abs or sign"),
        ("f = step(x_i) y_i + x_i", "x", "relu or step"),
        ("u_i = sign(x_i); f = u_i y_i", "x", "abs or sign"),
    ],
)
def test_a_derivative_of_sign_or_step_at_a_complex_input_is_an_error(source, wrt, function):
    """A hunt's find: sign and step differentiate to 0, so nothing of them was left in the
    derivative to find, and the gradient of sign(x_i) y_i at a complex x was 0 with no word
    said (abs(x_i) y_i was refused).  The function used, not differentiated, is NumPy's value."""
    x, y = np.array([1 + 2j, -0.5 + 1j]), np.array([0.5, 1.5])
    arrays = {"x": x, "y": y}
    for derive in (einderiv.grad, einderiv.hessian):
        derivative = derive(source, wrt)
        refused = f"input 'x' is complex .*{function}.* no complex derivative"
        with pytest.raises(einderiv.EvaluationError, match=refused):
            derivative(**{k: v for k, v in arrays.items() if k in derivative.ranks})
    np.testing.assert_allclose(einderiv.grad("f = sign(x_i) y_i", "y")(x=x, y=y), x / np.abs(x), rtol=1e-15)
    # each call apart: in abs(x_i) abs(y_i) by y only the second abs is differentiated, the first
    # (at a complex x) is NumPy's value (a review's find: both calls' names were merged)
    np.testing.assert_allclose(einderiv.grad("f = abs(x_i) abs(y_i)", "y")(x=x, y=y), np.abs(x) * np.sign(y))


@pytest.mark.parametrize("source", ["x^T A x", "f = x_i A_ij x_j"])
def test_a_rank_declared_on_the_command_line_for_a_name_the_text_does_not_use_is_an_error(source, capsys):
    from einderiv.cli import main

    assert main(["diff", source, "--wrt", "x", "--rank", "q=1"]) == 2
    assert (
        capsys.readouterr().err
        == "error: a rank is given for 'q', which the expression does not use; its names: A, f, x\n"
    )
    # the API's ranks= may be one mapping for several texts: names a text does not use are ignored
    assert einderiv.grad(source, "x", ranks={"q": 1, "x": 1, "A": 2})(x=x, A=A) == pytest.approx((A + A.T) @ x)


def test_an_expected_derivative_of_another_output_is_an_error():
    source = "f = x_i A_ij x_j"
    with pytest.raises(einderiv.EinderivError, match="derivative of g, but the derivative checked is of f"):
        einderiv.check(source, wrt="x", expect="dg/dx_k = A_kj x_j + A_jk x_j")
    assert einderiv.check(source, wrt="x", expect="df/dx_k = A_kj x_j + A_jk x_j").matches
    # a source without a name of its own takes any numerator
    assert einderiv.check("x_i A_ij x_j", wrt="x", expect="dg/dx_k = A_kj x_j + A_jk x_j").matches
    # a matrix-notation line too
    with pytest.raises(einderiv.EinderivError, match="derivative of g, but the derivative checked is of f"):
        einderiv.check(source, wrt="x", expect="dg/dx = (A + A^T) x")
    assert einderiv.check(source, wrt="x", expect="df/dx = (A + A^T) x").matches


@pytest.mark.parametrize(
    ("source", "numpy_form"),
    [
        # softmax over i of a body constant along i is 1/I at every (i, j); z sizes i
        ("f = softmax_i(x_j) z_i", lambda x, z: x.size * z.sum() / z.size),
        ("f = logsumexp_i(x_j) z_i", lambda x, z: np.sum((np.log(z.size) + x)[:, None] * z[None, :])),
        ("f = softmax_i(x_j) z_i x_j", lambda x, z: z.sum() / z.size * x.sum()),
    ],
)
def test_a_softmax_over_a_letter_its_body_does_not_write_counts_that_letters_length(source, numpy_form):
    x, z = rng.normal(size=3), rng.normal(size=4)
    assert float(einderiv.evaluate(source, x=x, z=z)) == pytest.approx(float(np.sum(numpy_form(x, z))), rel=1e-12)
    assert_matches_fd(einderiv.grad(source, "x"), lambda x, z: np.sum(numpy_form(x, z)), {"x": x, "z": z}, "x")


@pytest.mark.parametrize(
    ("source", "wrt", "reference"),
    [
        # mpmath at 50 digits on the same float64 inputs (x ~ 1e15, x - mu ~ 1, s2 = 3)
        ("r_n = (x_n - mu) / s2; L = r_n r_n", "s2", lambda x, mu, s2: -2 * sum((v - mu) ** 2 for v in x) / s2**3),
        ("L = sum_n((x_n - mu)^2) / s2^2", "s2", lambda x, mu, s2: -2 * sum((v - mu) ** 2 for v in x) / s2**3),
        ("f = (x_n - mu) y_n c", "c", lambda x, mu, s2: sum(v - mu for v in x)),
        ("f = (x_n - mu)^2 y_n c", "c", lambda x, mu, s2: sum((v - mu) ** 2 for v in x)),
    ],
)
def test_a_factor_every_term_of_a_difference_holds_multiplies_the_difference(source, wrt, reference):
    """``c x_n - c mu`` evaluated apart rounds each product on its own and cancels to noise at
    x ~ 1e15; ``c (x_n - mu)`` keeps the residual (the program's gradient was 9% off)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    x = np.random.default_rng(0).normal(size=6) + 1e15
    mu, s2 = np.array(x.mean() + 0.3), np.array(3.0)
    arrays = {"x": x, "mu": mu, "s2": s2, "c": np.array(7.389), "y": np.ones(6)}
    derivative = einderiv.grad(source, wrt)
    got = derivative(**{k: v for k, v in arrays.items() if k in derivative.ranks})
    exact = reference([mpmath.mpf(float(v)) for v in x], mpmath.mpf(float(mu)), mpmath.mpf(3))
    assert float(got) == pytest.approx(float(exact), rel=1e-12)
    value = einderiv.compile(source)
    assert np.isfinite(value(**{k: v for k, v in arrays.items() if k in value.ranks}))


@pytest.mark.parametrize(
    ("source", "numpy_form", "by_m"),
    [
        ("f = (x_d - m_d)(x_d - m_d)", lambda r: (r**2).sum(), lambda r: -2 * r),
        ("f = (x_d - m_d)(x_d - m_d) z_d", lambda r: (r**2 * z5).sum(), lambda r: -2 * r * z5),
        ("c_d = (x_d - m_d)(x_d - m_d)", lambda r: r**2, lambda r: np.diag(-2 * r)),
        (
            "f = exp((x_d - m_d)(x_d - m_d) / 10)",
            lambda r: np.exp((r**2).sum() / 10),
            lambda r: np.exp((r**2).sum() / 10) * -2 * r / 10,
        ),
        ("f = sum_d(exp((x_d - m_d)(x_d - m_d)))", lambda r: np.exp(r**2).sum(), lambda r: -2 * r * np.exp(r**2)),
        ("f = (x_d - m_d)(-m_d + x_d)", lambda r: (r**2).sum(), lambda r: -2 * r),
        ("f = (x_d - m_d)(m_d - x_d)", lambda r: -(r**2).sum(), lambda r: 2 * r),
        ("f = (2 x_d - 2 m_d)(x_d - m_d)", lambda r: 2 * (r**2).sum(), lambda r: -4 * r),
    ],
)
def test_a_product_of_a_sum_with_itself_is_its_square(source, numpy_form, by_m):
    """Multiplied out, ``x x - 2 x m + m m`` was 0.0 at x ~ 1e8 for differences of 1; the square of
    the residual is what the product means elementwise, and which letters it sums is unchanged."""
    x = rng.normal(size=5) + 1e8
    m = x + rng.normal(size=5)
    r = x - m  # exact in float64 here
    arrays = {"x": x, "m": m, "z": z5}
    compiled, derivative = einderiv.compile(source), einderiv.diff(source, "m")
    np.testing.assert_allclose(compiled(**{k: arrays[k] for k in compiled.ranks}), numpy_form(r), rtol=1e-12)
    np.testing.assert_allclose(derivative(**{k: arrays[k] for k in derivative.ranks}), by_m(r), rtol=1e-7)


z5 = np.linspace(0.5, 1.5, 5)


@pytest.mark.parametrize(
    ("source", "loss"),
    [
        ("f = (x_i + c) sum_i(y_j)", lambda jnp, c, x, y, z: jnp.sum((x[:, None] + c) * x.size * y[None, :])),
        ("f = (c + z_k) sum_k(y_j)", lambda jnp, c, x, y, z: jnp.sum((c + z[:, None]) * z.size * y[None, :])),
        ("f = sum_i(c + x_i) sum_i(c)", lambda jnp, c, x, y, z: jnp.sum(c + x) * x.size * c),
        ("f = sum_i(c + x_i) sum_i(c + y_j)", lambda jnp, c, x, y, z: jnp.sum(c + x) * jnp.sum(x.size * (c + y))),
        ("t = c; f = (t + x_i) sum_i(y_j)", lambda jnp, c, x, y, z: jnp.sum((x[:, None] + c) * x.size * y[None, :])),
        (
            "f = c (y_j + z_k) sum_k(x_i)",
            lambda jnp, c, x, y, z: jnp.sum(c * (y[:, None, None] + z[None, :, None]) * z.size * x[None, None, :]),
        ),
    ],
)
def test_two_counts_of_one_dimension_in_a_product_stay_two(source, loss):
    """The count of a broadcast over i and that of ``sum_i(...)`` in one product were one name,
    so the derivative by c counted I where the value counted I^2 (12 for 36)."""
    jax, jnp = jax_float64()
    arrays = {"x": rng.normal(size=3), "y": rng.normal(size=4), "z": rng.normal(size=5), "c": np.array(0.7)}
    want = jax.grad(lambda c: loss(jnp, c, *(jnp.asarray(arrays[k]) for k in "xyz")))(jnp.asarray(0.7))
    derivative = einderiv.grad(source, "c")
    assert float(derivative(**{k: arrays[k] for k in derivative.ranks})) == pytest.approx(float(want), rel=1e-12)
    value = einderiv.compile(source)
    got = value(**{k: arrays[k] for k in value.ranks})
    assert float(got) == pytest.approx(float(loss(jnp, 0.7, *(jnp.asarray(arrays[k]) for k in "xyz"))), rel=1e-12)


@pytest.mark.parametrize(
    "text", ["F = A .* B @ C", "F = A ⊙ B @ C", "F = A .* B * C", "F = A ./ B * c", "F = A ./ B / c"]
)
def test_an_explicit_product_right_of_an_elementwise_one_needs_brackets(text):
    """NumPy's ``A * B @ C`` is (A * B) @ C and MATLAB's ``A .* B * C`` (A .* B) * C; einderiv read
    A .* (B @ C), the paper convention, silently."""
    with pytest.raises(einderiv.ParseError, match="ambiguous: NumPy and MATLAB read") as err:
        einderiv.compile(text, notation="matrix")
    assert err.value.column == text.index(text.split()[3]) + 1


@pytest.mark.parametrize(
    ("text", "numpy_form"),
    [
        ("F = A .* B * 2", lambda A, B, C: 2 * A * B),
        ("F = A ⊙ B * -0.5", lambda A, B, C: -0.5 * A * B),
        ("F = (A .* B) @ C", lambda A, B, C: (A * B) @ C),
        ("F = A .* (B @ C)", lambda A, B, C: A * (B @ C)),
        ("F = A @ B .* C", lambda A, B, C: (A @ B) * C),
        ("F = A .* B C", lambda A, B, C: A * (B @ C)),
    ],
)
def test_elementwise_and_matrix_products_with_brackets_or_on_the_left_read_as_numpy(text, numpy_form):
    A, B, C = rng.normal(size=(3, 3, 3))
    compiled = einderiv.compile(text, notation="matrix")
    got = compiled(**{k: v for k, v in {"A": A, "B": B, "C": C}.items() if k in compiled.ranks})
    np.testing.assert_allclose(got, numpy_form(A, B, C), rtol=1e-12)


def test_an_input_simplification_removed_is_still_checked_against_its_written_rank():
    """``C = A^0`` is 1 for a scalar A; a 4 x 4 A was accepted silently, where ``x - x`` says."""
    with pytest.raises(einderiv.EvaluationError, match="input 'A' has 2 axes .* used with 0 indices"):
        einderiv.evaluate("C = A^0", A=np.ones((4, 4)))
    assert einderiv.evaluate("C = A^0", A=np.array(3.0)) == 1.0


def test_a_mean_over_an_empty_axis_is_nan_as_in_numpy():
    with np.errstate(all="ignore"):
        assert np.isnan(einderiv.evaluate("f = mean_n(x_n)", x=np.zeros(0)))
        got = einderiv.evaluate("m_d = mean_n(X_nd)", X=np.zeros((0, 3)))
    assert got.shape == (3,) and np.all(np.isnan(got))


@pytest.mark.parametrize(
    ("source", "power"),
    [
        ("e_n = exp(z_n); f = sum_n(e_n / (1 + e_n)^2)", 1),
        ("e_n = exp(z_n); u_n = 1 + e_n; f = sum_n(e_n / u_n^2)", 1),
        ("e_n = exp(z_n); f = sum_n(e_n / (1 + e_n)^3)", 2),
    ],
)
def test_an_exp_over_a_power_of_one_plus_it_is_seen_through_as_sigmoids(source, power):
    """``e / (1 + e)^2`` with ``e = exp(z)`` is sigmoid(z) sigmoid(-z): NaN at z = 1000 in the
    program, where the one statement was finite (only ``e / (1 + e)`` was read through)."""
    mpmath = pytest.importorskip("mpmath")
    z = np.array([1000.0, -1000.0, 3.0])

    def sigmoid(v):
        return 1 / (1 + mpmath.exp(-mpmath.mpf(v)))

    exact = sum(sigmoid(v) * sigmoid(-v) ** power for v in z)
    assert float(einderiv.evaluate(source, z=z)) == pytest.approx(float(exact), rel=1e-13)
    gradient = einderiv.grad(source, "z")(z=z)
    assert np.all(np.isfinite(gradient))
    exact_gradient = [sigmoid(v) * sigmoid(-v) ** power * (1 - (1 + power) * sigmoid(v)) for v in z]
    np.testing.assert_allclose(gradient, np.array(exact_gradient, dtype=float), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(
    "source",
    [
        "L = -0.5 (X_nd - m_d) inv(S)_de (X_ne - m_e) - 0.5 delta_nn logdet(S)",
        "L = -0.5 (X_nd - m_d) A_de (X_ne - m_e) - 0.5 delta_nn logdet(S)",
        "r_nd = X_nd - m_d; L = -0.5 r_nd inv(S)_de r_ne - 0.5 delta_nn logdet(S)",
    ],
)
def test_a_quadratic_form_in_a_residual_is_evaluated_as_the_residual(source):
    """The normal form multiplies ``(X_nd - m_d) inv(S)_de (X_ne - m_e)`` out; evaluated as four
    products it cancelled to noise at data offset by 1e8 (-21.8 for -15.5, and the gradient by S
    off by 0.8), where the program that names r was right.  Against jax in float64."""
    jax, jnp = jax_float64()
    generator = np.random.default_rng(5)
    X = generator.normal(size=(6, 3)) + 1e8
    m = X.mean(axis=0) + 0.1 * generator.normal(size=3)
    B = generator.normal(size=(3, 3))
    S = B @ B.T + 3 * np.eye(3)
    A = np.linalg.inv(S)

    def loss(X, m, S):
        R = X - m
        middle = jnp.linalg.inv(S) if "inv(S)" in source else A
        return -0.5 * jnp.einsum("nd,de,ne->", R, middle, R) - 0.5 * len(X) * jnp.linalg.slogdet(S)[1]

    arrays = {"X": X, "m": m, "S": S, "A": A}
    compiled = einderiv.compile(source)
    assert float(compiled(**{k: arrays[k] for k in compiled.ranks})) == pytest.approx(float(loss(X, m, S)), rel=1e-12)
    for position, name in ((1, "m"), (2, "S")):
        gradient = einderiv.grad(source, name)
        want = np.asarray(jax.grad(loss, position)(X, m, S))
        got = gradient(**{k: arrays[k] for k in gradient.ranks})
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("power", [-4, -3, -2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_integer_powers_by_products_equal_numpys_power(power, dtype):
    """x^p for 2 < |p| <= 4 (and x^-2) is evaluated by products into one array, where pow itself
    ran three to five times slower; the values are NumPy's, signed zeros and non-finite included."""
    compiled = einderiv.compile(f"y_i = x_i^{power}" if power > 0 else f"y_i = x_i^({power})")
    scalar = einderiv.compile(f"y = x^{power}" if power > 0 else f"y = x^({power})")
    with np.errstate(all="ignore"):  # 1e200 is inf in float32
        x = np.array([1.5, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e-200, -1e200, 3.0, 0.7]).astype(dtype)
        got, want = compiled(x=x), x ** dtype(power)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert scalar(x=np.array(2.0, dtype=dtype)) == pytest.approx(2.0**power)  # a 0-d array


def test_a_scalar_times_a_residual_keeps_the_residual_in_the_value():
    """``f = (x_n - mu) y_n c`` ran as ``c x_n - c mu`` times y: -6.0 for -6.4654 at x ~ 1e15."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    x = np.random.default_rng(0).normal(size=6) + 1e15
    mu, c, y = np.array(x.mean() + 0.3), np.array(7.389), np.ones(6)
    exact = sum((mpmath.mpf(float(v)) - mpmath.mpf(float(mu))) for v in x) * mpmath.mpf(7.389)
    got = einderiv.evaluate("f = (x_n - mu) y_n c", x=x, mu=mu, y=y, c=c)
    assert float(got) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize(
    "source, wrt, expected",
    [
        # k (lowering's name for the inner i) was sized only by 2 x_k beside 2 d delta_kk in the
        # gradient; the Hessian keeps delta_kk alone
        ("f = sum_i((x_i + d)^2) (x_i + y_j)", "d", lambda x, y: 2 * len(x) * (x.sum() + y.sum())),
        ("f = sum_n((x_n - s)^2) / delta_nn", "s", lambda x, y: 2.0),
    ],
)
def test_a_count_of_a_letter_lowering_renamed_is_sized_in_higher_derivatives(source, wrt, expected):
    """Both Hessians stopped with "the size of index 'k' cannot be inferred"; the printed
    derivative reads back to the same number."""
    x, y = np.array([0.3, -1.2, 2.0]), np.array([0.5, 1.5, -0.25, 4.0])
    arrays = {"x": x, "y": y, "d": np.array(0.7), "s": np.array(0.7)}
    hessian = einderiv.hessian(source, wrt)
    given = {k: arrays[k] for k in hessian.inputs}
    assert float(hessian(**given)) == pytest.approx(expected(x, y), rel=1e-12)
    read_back = einderiv.compile(str(hessian), of=f"d2f/d{wrt}d{wrt}")
    assert float(read_back(**{k: arrays[k] for k in read_back.inputs})) == pytest.approx(expected(x, y), rel=1e-12)


@pytest.mark.parametrize(
    "source",
    [
        "f = (x_i - m_i) A_ij (x_j - m_j)",
        "f = (x_i - m_i)(x_j - m_j) A_ij",
        "r_i = x_i - m_i; f = r_i A_ij r_j",
    ],
)
def test_a_quadratic_form_in_a_residual_keeps_the_residual(source):
    """The normal form multiplies ``(x_i - m_i) A_ij (x_j - m_j)`` out, and a residual of two
    vectors over the same index was not formed again (only a broadcast one, X_nd - m_d): at
    x ~ 1e12 the value was 1.119873 for 1.119674 and its gradient by A 1.7e-4 off."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 4))
    m = rng.normal(size=4) + 1e12
    x = m + rng.normal(size=4)
    r = x - m  # exact: x and m are within a factor 2
    arrays = {"x": x, "m": m, "A": a}
    assert float(einderiv.evaluate(source, **arrays)) == pytest.approx(r @ a @ r, rel=1e-13)
    np.testing.assert_allclose(einderiv.grad(source, "A")(**arrays), np.outer(r, r), rtol=1e-13)
    np.testing.assert_allclose(einderiv.grad(source, "x")(**arrays), (a + a.T) @ r, rtol=1e-12)


@pytest.mark.parametrize(
    "source",
    [
        "D_ij = (X_id - Z_jd)^2; K_ij = exp(-0.5 D_ij / ell^2); L = a_i K_ij b_j",
        "L = a_i exp(-0.5 sum_d((X_id - Z_jd)^2) / ell^2) b_j",
    ],
)
def test_an_rbf_hessian_is_right_at_large_inputs_and_forms_no_rank_four_adjoint(source):
    """The program's Hessian computed the adjoint d2LdXdD_klij (N x D x N x M, 1e9 elements at
    500 x 10 and 400 x 10), zero off its diagonal k = i; the one-statement Hessian multiplied
    (X_kn - Z_jn)(X_kl - Z_jl) out, and at X ~ 1e8 was off by 0.32 for entries of 0.24."""
    jax, jnp = jax_float64()
    gen = np.random.default_rng(1)
    X = gen.normal(size=(3, 2)) + 1e8
    Z = X[[0, 1, 2, 0]] + 0.5 * gen.normal(size=(4, 2))
    a, b, ell = gen.normal(size=3), gen.normal(size=4), np.array(1.5)

    def loss(X):
        sq = ((X[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        return a @ jnp.exp(-0.5 * sq / ell**2) @ b

    hessian = einderiv.hessian(source, "X")
    want = np.asarray(jax.hessian(loss)(X))
    got = hessian(X=X, Z=Z, a=a, b=b, ell=ell)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    report = hessian.explain(X=(500, 10), Z=(400, 10), a=(500,), b=(400,), ell=())
    largest = float(report.splitlines()[-1].split("largest intermediate ")[1].split()[0])
    assert largest <= 500 * 10 * 500 * 10  # the Hessian itself


@pytest.mark.parametrize("offset", [1e12, 1e15])
def test_the_gradient_of_a_mean_keeps_the_residual(offset):
    """``mean_n((x_n - m)^2)`` by m is ``-2 mean_n(x_n) + 2 m``, evaluated apart: -0.75 for
    -0.958 at x ~ 1e15 (the ``sum_n(...) / 6`` form was right)."""
    x = offset + np.array([0.125, 0.5, 1.375, -0.75, 2.25, 0.875])
    m = np.array(offset + 0.25)
    want = 2 * np.mean(m - x)  # exact: x and m are within a factor 2
    assert float(einderiv.grad("L = mean_n((x_n - m)^2)", "m")(x=x, m=m)) == pytest.approx(want, rel=1e-14)
    rational = -0.3194023736517526  # sum_n -2 (x_n - m) / (1 + (x_n - m)^2) / 6, the residuals exact
    assert float(einderiv.grad("L = mean_n(log(1 + (x_n - m)^2))", "m")(x=x, m=m)) == pytest.approx(rational)


def test_a_gaussian_log_likelihood_per_sample_keeps_its_residual():
    """Inside ``mean_n`` the quadratic form ran multiplied out: 12.28 for 1.165 with 100 rows
    at X ~ 1e8 (the ``sum_n`` form and the program were right).  Value and gradients by m and S
    against NumPy closed forms and the program that names the residual."""
    gen = np.random.default_rng(8)
    X = 1e8 + gen.normal(size=(100, 2))
    m = 1e8 + gen.normal(size=2) * 0.1
    S = np.array([[2.0, 0.5], [0.5, 1.0]])
    arrays = {"X": X, "m": m, "S": S}
    one = "L = 0.5 mean_n((X_nd - m_d) inv(S)_de (X_ne - m_e)) + 0.5 logdet(S)"
    program = "r_nd = X_nd - m_d; L = 0.5 mean_n(r_nd inv(S)_de r_ne) + 0.5 logdet(S)"
    R = X - m
    want = 0.5 * np.einsum("nd,de,ne->n", R, np.linalg.inv(S), R).mean() + 0.5 * np.linalg.slogdet(S)[1]
    assert float(einderiv.evaluate(one, **arrays)) == pytest.approx(want, rel=1e-12)
    inverse, spread = np.linalg.inv(S), R.T @ R / len(R)  # R exact: X and m within a factor 2
    closed = {"m": -inverse @ R.mean(axis=0), "S": 0.5 * (inverse - inverse @ spread @ inverse).T}
    for wrt in ("m", "S"):
        got = einderiv.grad(one, wrt)(**arrays)
        np.testing.assert_allclose(got, closed[wrt], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got, einderiv.grad(program, wrt)(**arrays), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "source, wrt, order",
    [
        ("f = softplus(z) + softplus(-z)", "z", 2),
        ("f = softplus(-z) + softplus(z)", "z", 2),
        ("f = sigmoid(z) - sigmoid(-z)", "z", 1),
        ("f = -1 + sigmoid(-z)^2 + sigmoid(z)^2", None, 0),
        ("f = -1 + sigmoid(z)^2 + sigmoid(-z)^2", None, 0),
    ],
)
@pytest.mark.parametrize("z", [-40.0, 40.0, 3.0])
def test_sigmoid_and_sigmoid_of_minus_the_same_argument_share_one_complement(source, wrt, order, z):
    """Each is +-2 sigmoid(z) sigmoid(-z).  The complement of sigmoid(z) (1 - s, evaluated as
    sigmoid(-z)) was an array apart from the user's sigmoid(-z), so ``1 - s^2 - t^2`` factored
    in one of them only: 0.0 for 8.5e-18 at z = -40 or 40, by the order of the terms."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    s = 1 / (1 + mpmath.exp(-mpmath.mpf(z)))
    want = float(2 * s * (1 - s)) * (-1 if order == 0 else 1)
    compiled = einderiv.compile(source) if order == 0 else einderiv.diff(source, [wrt] * order)
    assert float(compiled(z=np.array(z))) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "source, wrt, reference",
    [
        ("f = mean_n(x_n) - mean_m(y_m)", None, lambda x, y, md, X, Y, A, w: x.mean() - y.mean()),
        ("f = mean_n((x_n - s)^2) - mean_m((y_m - s)^2)", "s", lambda x, y, md, X, Y, A, w: 2 * (y.mean() - x.mean())),
        ("f = x_n s - md_d s", None, lambda x, y, md, X, Y, A, w: 2 * (x.sum() - md.sum())),
        ("f = exp(s) x_n - exp(s) md_d", None, lambda x, y, md, X, Y, A, w: np.exp(2) * (x.sum() - md.sum())),
        ("f = mean_n(X_nd w_d) - mean_m(Y_md w_d)", "w", lambda x, y, md, X, Y, A, w: X.mean(0) - Y.mean(0)),
        ("f = A_nd x_n - md_e x_n", None, lambda x, y, md, X, Y, A, w: (x @ A).sum() - md.sum() * x.sum()),
    ],
)
def test_sums_over_letters_of_two_lengths_are_not_one_residual(source, wrt, reference):
    """A summed letter is named alike in two terms (``_c0``) whatever its length: the residual
    pairs formed ``x - y`` over n and m (5 and 3) and stopped with "index '_c0' has two sizes"
    (a reviewer's find; the last case stopped so before this session too)."""
    gen = np.random.default_rng(9)
    arrays = {
        "x": gen.normal(size=5), "y": gen.normal(size=3), "md": gen.normal(size=3), "X": gen.normal(size=(5, 2)),
        "Y": gen.normal(size=(7, 2)), "A": gen.normal(size=(5, 3)), "w": gen.normal(size=2), "s": np.array(2.0),
    }  # fmt: skip
    compiled = einderiv.compile(source) if wrt is None else einderiv.grad(source, wrt)
    got = compiled(**{k: arrays[k] for k in compiled.inputs})
    np.testing.assert_allclose(got, reference(*(arrays[k] for k in ("x", "y", "md", "X", "Y", "A", "w"))), rtol=1e-12)


@pytest.mark.parametrize("source", ["f = (delta_nm + z_m) x_n", "f = (x_n - a)^2 (delta_nm + z_m)"])
def test_a_delta_in_a_group_ties_the_lengths_of_its_letters(source):
    """``(delta_nm + z_m)`` is a tensor over n and m: with a 3-vector x and a 4-vector z the
    value read the delta as a 3 x 4 identity (3.0) while the Hessian by a counted z's length
    (8 for jax's 6).  It is now "two sizes", as ``C_nm = delta_nm + x_n z_m`` is; at equal
    lengths value and Hessian are the closed forms."""
    x, a = np.array([0.5, -1.0, 2.0]), np.array(0.25)
    arrays = {"x": x, "z": np.zeros(4), "a": a}
    compiled = einderiv.compile(source)
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        compiled(**{k: arrays[k] for k in compiled.inputs})
    z = np.array([0.3, 0.1, -0.7])
    arrays["z"] = z
    if "a" in compiled.inputs:
        r = x - a  # f = sum_nm r_n^2 (delta_nm + z_m) = (r.r) + (r.r) sum(z)... per n: r_n^2 (1 + sum z)
        assert float(compiled(x=x, z=z, a=a)) == pytest.approx((r**2).sum() * (1 + z.sum()), rel=1e-12)
        hessian = einderiv.hessian(source, "a")
        assert float(hessian(x=x, z=z, a=a)) == pytest.approx(2 * len(x) * (1 + z.sum()), rel=1e-12)
    else:
        assert float(compiled(x=x, z=z)) == pytest.approx(x.sum() + x.sum() * z.sum(), rel=1e-12)


@pytest.mark.parametrize(
    "source",
    ["f = A_ij (delta_ik + delta_jk)", "f = sum_k(A_ij (delta_ik + delta_jk))", "f = A_ij (delta_ik + 2 delta_kj)"],
)
def test_deltas_in_a_group_join_their_letters_in_chains(source):
    """In ``A_ij (delta_ik + delta_jk)`` the group is one tensor over i, j and k, and its deltas
    make k both i and j: a 3x4 A is "two sizes", as ``A_ij delta_ik delta_jk`` is.  Multiplied
    out, each term summed its own k, and the value was 2 sum(A), silently.  A square A gives the
    closed form, and the gradient by A is checked by central differences."""
    wide = np.arange(12.0).reshape(3, 4)
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate(source, A=wide)
    A = np.random.default_rng(4).normal(size=(3, 3))
    scale = 3.0 if "2 delta" in source else 2.0
    assert float(einderiv.evaluate(source, A=A)) == pytest.approx(scale * A.sum(), rel=1e-12)
    assert_matches_fd(einderiv.grad(source, "A"), lambda A: scale * A.sum(), {"A": A}, "A")


@pytest.mark.parametrize(
    "source, value, gradient",
    [
        ("f = A_ij + delta_ij", lambda A: A.sum() + len(A), lambda A: np.ones_like(A)),
        ("f = A_ij^2 + delta_ij", lambda A: (A**2).sum() + len(A), lambda A: 2 * A),
        ("f = A_jk + delta_jk + sum_k(z_k)", lambda A: A.sum() + len(A) + 2.5, lambda A: np.ones_like(A)),
        ("f = delta_ij - sum_ij(A_ij)", lambda A: len(A) - A.sum(), lambda A: -np.ones_like(A)),
        ("f = A_ii + sum_j(A_kj) + delta_ij", lambda A: np.trace(A) + A.sum() + len(A), lambda A: np.eye(3) + 1),
    ],
)
def test_a_delta_term_sized_by_the_other_terms(source, value, gradient):
    """``f = A_ij + delta_ij``: the delta's term writes neither letter, so each is sized by A,
    and the delta is the trace of the identity, A's length.  A first version of the checker
    renamed both letters apart ("the size of index 'k' cannot be inferred", a letter the text
    never wrote; a meaning hunt's find); a 3x4 A is "two sizes", as ``A_ij delta_ij`` is.  Where
    only a reduction writes a letter, the statement sizes the delta's by it, and the ties do too
    (a reviewer found a second version that renamed one of the two letters: ``x_i + sum_j(y_j) +
    delta_ij`` counted y's length, silently)."""
    A, z = np.random.default_rng(6).normal(size=(3, 3)), np.array([0.5, 1.0, -0.5, 2.0, -0.5])
    arrays = {"A": A, "z": z} if "z_" in source else {"A": A}
    assert float(einderiv.evaluate(source, **arrays)) == pytest.approx(value(A), rel=1e-12)
    assert_matches_fd(einderiv.grad(source, "A"), lambda A, z=None: value(A), arrays, "A")
    np.testing.assert_allclose(einderiv.grad(source, "A")(**arrays), gradient(A), rtol=1e-12)
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate(source, **{**arrays, "A": np.ones((3, 4))})


def test_a_letter_a_reduction_binds_beside_a_delta_in_a_group_is_not_the_deltas():
    """In ``x_i (delta_ik sum_k(y_k) + z_k)`` the delta's k is the group's (z's length), the
    sum's k its own: with x of 3 and z of 5 the delta read as a 3 x 5 identity, silently (a
    reviewer's find); at equal lengths it is sum(x) sum(y) + sum(x) sum(z)."""
    gen = np.random.default_rng(2)
    x, y, z = gen.normal(size=3), gen.normal(size=4), gen.normal(size=5)
    source = "f = x_i (delta_ik sum_k(y_k) + z_k)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)  # rule 6: k twice, on purpose
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            einderiv.evaluate(source, x=x, y=y, z=z)
        got = einderiv.evaluate(source, x=x, y=y, z=z[:3])
    assert float(got) == pytest.approx(x.sum() * y.sum() + x.sum() * z[:3].sum(), rel=1e-12)


def test_a_delta_term_beside_a_reduction_refuses_two_lengths():
    x, y, w = np.array([1.0, 2.0, 3.0]), np.ones(4), np.array([0.5, -1.0, 2.0])
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate("f = x_i + sum_j(y_j) + delta_ij", x=x, y=y)
    got = einderiv.evaluate("f = x_i + sum_j(w_j) + delta_ij", x=x, w=w)
    assert float(got) == pytest.approx(x.sum() + w.sum() + 3, rel=1e-14)


@pytest.mark.parametrize(
    "source, arrays, value",
    [
        ("f = B_ij + delta_ik delta_kj", {"B": (3, 4)}, None),
        ("f = B_ij + delta_ik delta_kj", {"B": (3, 3)}, lambda B: B.sum() + 3),
        ("f_i = x_i + y_j + delta_ik delta_kj", {"x": (3,), "y": (4,)}, None),
        ("f = x_n (delta_nm + sum_k(A_mk))", {"x": (3,), "A": (4, 5)}, None),
        ("f = x_n (delta_nm + sum_k(A_mk))", {"x": (3,), "A": (3, 5)}, lambda x, A: x.sum() + x.sum() * A.sum()),
        ("f = x_n (delta_nm + exp(y_m))", {"x": (3,), "y": (4,)}, None),
        ("f = x_n (delta_nm + exp(y_m))", {"x": (3,), "y": (3,)}, lambda x, y: x.sum() + x.sum() * np.exp(y).sum()),
        ("f = mean_ij(B_ij + delta_ij)", {"B": (3, 4)}, None),
        ("f = mean_ij(B_ij + delta_ij)", {"B": (3, 3)}, lambda B: (B.sum() + 3) / 9),
        ("f = sum_ij(B_ij + delta_ij)", {"B": (3, 4)}, None),
        ("f_i = x_i + sum_j(delta_ij + y_j)", {"x": (3,), "y": (4,)}, None),
        # the second term's i is its own, joined to y's j (as in w_k + x_i (1 + delta_ik))
        ("f = x_i + exp(delta_ij + y_j)", {"x": (3,), "y": (4,)}, lambda x, y: x.sum() + np.exp(np.eye(4) + y).sum()),
    ],
)
def test_chains_of_deltas_and_letters_inside_calls_are_sized_as_written(source, arrays, value):
    """A reviewer's finds: a chain of deltas in a term of its own (``B_ij + delta_ik delta_kj``),
    a group letter written inside a call or a sum (``x_n (delta_nm + exp(y_m))``) and a delta in
    the argument of a reduction or a call (``mean_ij(B_ij + delta_ij)``, which also disagreed
    with ``sum_ij``) read the delta as a rectangular identity where the lengths differ, silently.  They are "two sizes"
    now, and the closed form where the lengths agree."""
    gen = np.random.default_rng(3)
    made = {name: gen.normal(size=shape) for name, shape in arrays.items()}
    if value is None:
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            einderiv.evaluate(source, **made)
    else:
        assert float(einderiv.evaluate(source, **made)) == pytest.approx(value(*made.values()), rel=1e-12)


def test_a_delta_term_refuses_two_lengths_of_its_output_letter_and_a_summed_one():
    """``f_i = x_i + y_j + delta_ij``: the delta joins the output's i (x's length) to the j the
    other term sums (y's); with lengths 3 and 4 it read the delta as a 3 x 4 identity."""
    x, y, w = np.array([1.0, 2.0, 3.0]), np.ones(4), np.array([0.5, -1.0, 2.0])
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate("f_i = x_i + y_j + delta_ij", x=x, y=y)
    np.testing.assert_allclose(einderiv.evaluate("f_i = x_i + w_j + delta_ij", x=x, w=w), x + w.sum() + 1, rtol=1e-14)


@pytest.mark.parametrize("source", ["f = S_ij^2 + exp(delta_ij) S_kk", "f = S_ij^2 + (delta_ij + 1)^2 S_kk"])
def test_a_printed_gradient_with_a_call_of_a_delta_reads_back(source):
    """The gradient ``2 S_lm + exp(delta_ij) delta_lm`` carries i and j only in a delta inside a
    call, sized by the statement differentiated, which is now printed first (a reviewer's find:
    read back, "the size of index 'i' cannot be inferred").  df/dS = 2 S + (sum_ij g(delta_ij)) I."""
    S = np.random.default_rng(8).normal(size=(3, 3))
    g = np.exp if "exp" in source else (lambda d: (d + 1) ** 2)
    expected = 2 * S + g(np.eye(3)).sum() * np.eye(3)
    gradient = einderiv.grad(source, "S")
    np.testing.assert_allclose(gradient(S=S), expected, rtol=1e-12)
    np.testing.assert_allclose(einderiv.compile(str(gradient))(S=S), expected, rtol=1e-12)


_GEN = np.random.default_rng(0)
_PRINTED = {
    "x": _GEN.normal(size=3),
    "y": _GEN.normal(size=4),
    "z": _GEN.normal(size=5),
    "A": _GEN.normal(size=(3, 4)),
    "T": _GEN.normal(size=(3, 5)),
    "c": np.float64(0.7),
}


@pytest.mark.parametrize(
    "source, wrt, reference",
    [
        ("f = sum_um(y_u^2 + z_m) + sum_um(z_m - y_u)", "y", lambda x, y, z, A, T, c: 10 * y - 5),
        ("g = sum_b(x_k x_k + z_b) + sum_b(z_b - c)", "x", lambda x, y, z, A, T, c: 10 * x),
        ("f = sum_if(A_ki + z_f) + sum_f(z_f - c)", "A", lambda x, y, z, A, T, c: np.full((3, 4), 5.0)),
        (
            "f = sum_if(sum_k(sqrt(2 + A_ki^2)) - tanh(z_f)) + sum_f(z_f - c)",
            "A",
            lambda x, y, z, A, T, c: 5 * A / np.sqrt(2 + A**2),
        ),
        (
            "u0 = c; f = sum_ij(T_ij - u0 / (1 + (z_j^2)^2)) + sum_ip(y_p - x_i c)",
            "y",
            lambda x, y, z, A, T, c: np.full(4, 3.0),
        ),
    ],
)
def test_a_printed_count_reads_back_as_the_length_it_counts(source, wrt, reference):
    """Printed through the program with its differences named, the output's letters were
    written in after the counts had their letters: the count of z's length (5) in the gradient
    of ``sum_um(y_u^2 + z_m) + sum_um(z_m - y_u)`` moved to j, which the statement printed
    above writes at y's length, and the text read back 8 y - 5 for 10 y - 5 (the gradient
    itself was right; a meaning hunt's find).  A text now reads back only where it evaluates
    to the derivative's own numbers."""
    gradient = einderiv.grad(source, wrt)
    expected = reference(**_PRINTED)
    np.testing.assert_allclose(gradient(**{k: _PRINTED[k] for k in gradient.inputs}), expected, rtol=1e-12)
    read = einderiv.compile(str(gradient))
    np.testing.assert_allclose(read(**{k: _PRINTED[k] for k in read.inputs}), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "source, reference",
    [
        ("f = x_n (delta_nm z_m + u_m w_m)", lambda x, z, u, w: x @ z + x.sum() * (u @ w)),
        ("f = (x_n - u_m w_m)^2 (delta_nm + z_m)", lambda x, z, u, w: ((x - u @ w) ** 2).sum() * (1 + z.sum())),
        ("f = x_n (delta_nm + z_m) (u_m w_m)^2", lambda x, z, u, w: (u @ w) ** 2 * (x.sum() + x.sum() * z.sum())),
    ],
)
def test_a_letter_summed_in_another_term_is_not_tied_by_a_delta(source, reference):
    """A reviewer's find in the first version of the delta ties: a letter summed inside another
    term or a power's base (``u_m w_m``, lengths 5) is its own, not the delta's m (length 3)."""
    gen = np.random.default_rng(10)
    x, z, u, w = gen.normal(size=3), gen.normal(size=3), gen.normal(size=5), gen.normal(size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)  # the third reuses m on purpose
        got = einderiv.evaluate(source, x=x, z=z, u=u, w=w)
    assert float(got) == pytest.approx(reference(x, z, u, w), rel=1e-12)


@pytest.mark.parametrize(
    "source, says",
    [
        ("f = \\frac{1}{2} x_i x_i", "write a fraction with '/'"),
        ("f = \\sum_i x_i", "sums a repeated index by itself"),
        ("f = x_i \\cdot x_i", "by juxtaposition"),
        ("f = \\lambda x_i x_i", "'\\lambda' is LaTeX"),
        ("f = \\exp(x_i)", "write exp(...) without the backslash"),
    ],
)
def test_latex_input_is_named_as_latex(source, says):
    """A LaTeX command was answered "there is no left division: write inv(A) b" (a hunter's find)."""
    with pytest.raises(einderiv.ParseError) as caught:
        einderiv.compile(source)
    message = str(caught.value)
    assert says in message and "left division" not in message
    assert "^" in message  # the caret under the backslash


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f = sum_i(x_i + a) sum_i(u_i)", ["a"]),
        ("f = sum_i(x_i + a) u_i", ["a"]),
        ("f = sum_i(x_i + a) u_i", ["u"]),
        ("f = sum_i(x_i + a) A_ij z_j", ["A"]),
        ("f = exp(sum_i(x_i + a)) u_i", ["a"]),
        ("f = sum_i((x_i + a)^2) u_i", ["a", "a"]),
        ("f = sum_i(x_i + a) sum_i(u_i + a)", ["a"]),
    ],
)
def test_a_count_of_a_reductions_letter_used_outside_it_reads_back(source, wrt):
    """The count of sum_i's i, where i also indexes u outside the sum, printed as delta_{j9,j9},
    which nothing sizes: the text did not read back (a hunter's find).  The reduction's letter
    is renamed in the printed statement (sum_k(x_k + a) u_i means the same)."""
    gen = np.random.default_rng(11)
    arrays = {"x": gen.normal(size=3), "u": gen.normal(size=4), "a": np.array(0.3)}
    arrays |= {"A": gen.normal(size=(3, 4)), "z": gen.normal(size=4)}
    derivative = einderiv.diff(source, wrt)
    assert "9" not in str(derivative)
    read_back = einderiv.compile(str(derivative))
    np.testing.assert_allclose(
        read_back(**{k: arrays[k] for k in read_back.inputs}),
        derivative(**{k: arrays[k] for k in derivative.inputs}),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "source",
    [
        "z_n = (x_n - mu) / s; L = sum_n(log(sigmoid(z_n)) + log(1 - sigmoid(z_n)) - log(s))",
        "L = sum_n(log(sigmoid((x_n - mu) / s)) + log(1 - sigmoid((x_n - mu) / s)) - log(s))",
    ],
)
@pytest.mark.parametrize("x", [[41.0, 45.0, 50.0], [0.3, -1.2, 2.0]])
def test_a_count_beside_powers_of_a_sigmoid_is_their_constant(source, x):
    """The logistic distribution's log-likelihood: its Hessian by mu is ``-delta_nn +
    sigmoid(-z_n)^2 + sigmoid(z_n)^2`` over s^2, which is -2 sigmoid(z_n) sigmoid(-z_n); the
    count (N) was not read as the constant of the polynomial in sigmoid(z_n), and the sum was
    0.0 for -3.18e-18 at x = 41, 45, 50 (a hunter's find; the one statement also needed the
    complement of sigmoid(-z) to be the user's sigmoid(z))."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x, mu, s = np.array(x), 0.1, 1.5

    def sigmoid(v):
        return 1 / (1 + mpmath.exp(-mpmath.mpf(v)))

    want = sum(-2 * sigmoid(v) * sigmoid(-v) for v in (x - mu) / s) / mpmath.mpf(s) ** 2
    got = einderiv.hessian(source, "mu")(x=x, mu=np.array(mu), s=np.array(s))
    assert float(got) == pytest.approx(float(want), rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "source, shape", [("L_k = logsumexp_n(Z_nk)", "(4,)"), ("L_kn = logsumexp_m(T_nmk)", "(5, 2)")]
)
def test_explain_sizes_a_logsumexp_over_a_leading_axis(source, shape):
    """explain() raised a bare IndexError (the kept axes were read as positions), where the
    expression evaluates (a hunter's find)."""
    compiled = einderiv.compile(source)
    report = compiled.explain(Z=(3, 4)) if "Z" in compiled.inputs else compiled.explain(T=(2, 3, 5))
    (row,) = [line for line in report.splitlines() if line.startswith("L ")]
    assert shape in row


@pytest.mark.parametrize(
    "source, wrt, order, want",
    [
        ("L = ((x_n - m) s)^2", "s", 1, lambda r, s: 2 * s * (r @ r)),
        ("L = ((x_n - m) s)^2", "s", 2, lambda r, s: 2 * (r @ r)),
        ("L = ((x_n - m) / s)^2", "s", 1, lambda r, s: -2 * (r @ r) / s**3),
    ],
)
def test_a_square_of_a_residual_multiplied_out_is_read_back_as_a_square(source, wrt, order, want):
    """``x_n x_n - 2 x_n m + m m delta_nn`` (times s) is (x_n - m)^2: evaluated apart it was
    128 for 152 at x ~ 1e8 (a hunter's find; the program that names x_n - m was right)."""
    x, m, s = np.array([-3.0, 2, 5, 0, -1]) + 1e8, np.array(1e8 + 1), np.array(2.0)
    derivative = einderiv.diff(source, [wrt] * order)
    assert float(derivative(x=x, m=m, s=s)) == pytest.approx(want(x - m, s), rel=1e-14)


@pytest.mark.parametrize(
    "source",
    [
        "D_ij = (X_id - Z_jd)^2; K_ij = exp(-D_ij / (2 ell^2)); L = al_i K_ij be_j",
        "L = al_i exp(-sum_d((X_id - Z_jd)^2) / (2 ell^2)) be_j",
    ],
)
def test_an_rbf_hessian_diagonal_keeps_the_square_of_its_residual(source):
    """hessian_diag of an RBF kernel at X ~ 1e8 was [6, 4, -4, 8, 1, 0] for [0.61, 1.10, -2.01,
    ...]: ``4 X_kl X_kl W - 8 Z_jl X_kl W + 4 Z_jl Z_jl W`` is 4 (X_kl - Z_jl)^2 W (a hunter's
    find; the program form was right before its Hessian's adjoints were substituted)."""
    jax, jnp = jax_float64()
    X = np.array([[0.5, -1], [1.5, 0.25], [-0.75, 0.5]]) + 1e8
    Z = np.array([[0, 0.5], [1, -0.5]]) + 1e8
    al, be, ell = np.array([1, -2, 0.5]), np.array([0.7, -1.1]), np.array(0.8)

    def loss(X):
        return al @ jnp.exp(-((X[:, None, :] - Z[None]) ** 2).sum(-1) / (2 * ell**2)) @ be

    want = np.diagonal(np.asarray(jax.hessian(loss)(X)).reshape(6, 6)).reshape(3, 2)
    got = einderiv.hessian_diag(source, "X")(X=X, Z=Z, al=al, be=be, ell=ell)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def _residual_references():
    """(source, wrt, order, the derivative at x ~ 1e8 in mpmath at 50 digits) for the cases below."""
    import mpmath

    mpmath.mp.dps = 50
    xs = [mpmath.mpf(v) + 10**8 for v in (-3, 2, 5, 0, -1)]
    m, s, lam, s2 = mpmath.mpf(10**8 + 1), mpmath.mpf("0.7"), mpmath.mpf("0.3"), mpmath.mpf(2)
    r = [x - m for x in xs]
    sig = [1 / (1 + mpmath.exp(-lam * v)) for v in r]
    return [
        ("L = sqrt(((x_n - m) s)^2 + 1)", "s", 1, sum(v * v * s / mpmath.sqrt((v * s) ** 2 + 1) for v in r)),
        ("L = sqrt(((x_n - m) s)^2 + 1)", "s", 2, sum(v * v / mpmath.sqrt((v * s) ** 2 + 1) ** 3 for v in r)),
        ("L = sum_n(((x_n - m) s)^3)", "s", 1, sum(3 * v**3 * s**2 for v in r)),
        ("L = sum_n(((x_n - m) s)^4) + s^2", "s", 1, sum(4 * v**4 * s**3 for v in r) + 2 * s),
        (
            "L = softplus(lam (x_n - m)) - y_n lam (x_n - m)",
            "lam",
            2,
            sum(v * v * q * (1 - q) for v, q in zip(r, sig)),
        ),
        (
            "L = mean_n(0.5 ((x_n - m) / sqrt(s2))^2 + 0.5 log(s2))",
            "s2",
            1,
            sum(-0.5 * v * v / s2**2 + 0.5 / s2 for v in r) / 5,
        ),
    ]


@pytest.mark.parametrize("number", range(6))
@pytest.mark.parametrize("program", [False, True], ids=["statement", "program"])
def test_a_power_of_a_residual_inside_a_call_or_a_mean_is_read_back(number, program):
    """A parameter times a residual, inside a call or beside a mean's 1/n: the derivatives by the
    parameter multiplied the residual's powers out, and at x ~ 1e8 they cancelled (the Hessian
    of ``sqrt(((x_n - m) s)^2 + 1)`` by s was 6e16 for 3.1, its gradient 12.7 for 10.3; the mean
    by s2 -0.75 for -0.70), where the program that names ``x_n - m`` was right (a hunter's find).
    ``-(x_n - m)^4`` as five terms is now one power; a square beside the 1/n of a mean one."""
    source, wrt, order, want = _residual_references()[number]
    if program:
        source = "r_n = x_n - m; " + source.replace("(x_n - m)", "r_n")
    x, m = np.array([-3.0, 2, 5, 0, -1]) + 1e8, np.array(1e8 + 1)
    values = {
        "x": x,
        "m": m,
        "s": np.array(0.7),
        "lam": np.array(0.3),
        "s2": np.array(2.0),
        "y": np.array([1, 0, 1, 1, 0.0]),
    }
    derivative = einderiv.diff(source, [wrt] * order)
    got = derivative(**{name: values[name] for name in derivative.inputs})
    assert float(got) == pytest.approx(float(want), rel=1e-12, abs=0)


def test_a_mean_over_a_letter_nothing_writes_is_an_error_where_its_argument_writes_others():
    """``mean_n((y_i - X_id w_d)^2)``, a slip for ``mean_i``, was the sum over i: N times the mean
    squared error, with no warning (a hunter's find); ``sum_n(...)`` already refused it."""
    with pytest.raises(einderiv.ParseError, match=r"mean_n\(\.\.\.\): 'n' does not occur.*mean_i\(\.\.\.\)") as caught:
        einderiv.compile("L = mean_n((y_i - X_id w_d)^2)")
    assert (caught.value.line, caught.value.column) == (1, 5)
    c, x = np.array(0.7), np.array([1.0, 2, 3])
    assert einderiv.evaluate("f = mean_j(c)", c=c) == pytest.approx(0.7)  # writes no letter: c
    assert einderiv.evaluate("f = mean_n(c) + x_n", c=c, x=x) == pytest.approx(0.7 + 6)  # n has a length


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("f = sum(max(x))", "max is not supported", 9),
        ("f = min(x)", "min is not supported", 5),
        ("f = x^T foo(A) x", "unknown function 'foo'; for a product write 'foo (...)'", 9),
    ],
)
def test_matrix_notation_refuses_an_unknown_function_where_it_read_a_product(source, message, column):
    """``f = sum(max(x))`` read as ``sum_i(max x_i)``, a scalar named max times x, and with
    notation="matrix" ``f = max(x)`` became a vector (a hunter's find); index notation refuses
    both."""
    with pytest.raises(einderiv.ParseError, match=re.escape(message)) as caught:
        einderiv.compile(source, notation="matrix")
    assert caught.value.column == column
    A, x, y, z = np.eye(2) * 2, np.array([1.0, 2]), np.array([3.0, 4]), np.array([1.0, -1])
    assert float(einderiv.evaluate("f = z^T A(x + y)", A=A, x=x, y=y, z=z)) == pytest.approx(z @ A @ (x + y))
    lam = einderiv.compile("f = lam(x + y)", notation="matrix", ranks={"lam": 0})
    np.testing.assert_allclose(lam(lam=np.array(2.0), x=x, y=y), 2 * (x + y))


def test_the_command_line_says_when_its_output_cannot_be_encoded():
    """With a cp1252 or ASCII console, ``--format pretty`` ended in a UnicodeEncodeError traceback
    (a hunter's find)."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    done = subprocess.run(
        [sys.executable, "-m", "einderiv", "diff", "f = x_i x_i", "--wrt", "x", "--format", "pretty"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: standard output's encoding (cp1252) cannot write '\\u2202'; set PYTHONIOENCODING=utf-8, "
        "or ask for --format text or --format latex"
    ]


def test_a_lone_carriage_return_ends_a_line():
    """``'f = x_i\\ry_i'`` (old Mac line ends) read as the product ``f = x_i y_i``: the CR was
    whitespace (a hunter's find); it ends a line, as ``str.splitlines`` has it."""
    x, y = np.array([1.0, 2]), np.array([3.0, 4])
    with pytest.warns(einderiv.EinderivWarning, match="the last line 'y_i'"):  # two statements, not x_i y_i
        np.testing.assert_array_equal(einderiv.evaluate("f = x_i\ry_i", x=x, y=y), y)
    assert float(einderiv.evaluate("t_i = 2 x_i\rf = t_i y_i", x=x, y=y)) == pytest.approx(22.0)
    assert float(einderiv.evaluate("t_i = 2 x_i\r\nf = t_i y_i", x=x, y=y)) == pytest.approx(22.0)


@pytest.mark.parametrize("wrt", ["", " "])
def test_an_empty_wrt_says_so(wrt):
    """``--wrt ""`` said "empty input: write an expression", of an expression that was fine."""
    with pytest.raises(einderiv.DifferentiationError, match=r"wrt is empty: .*\(the inputs: x\)"):
        einderiv.grad("f = x_i x_i", wrt)
    done = run_cli("diff", "f = x_i x_i", "--wrt", wrt)
    assert done.returncode == 2 and done.stderr.startswith("error: wrt is empty")


def test_the_gradients_by_several_parameters_share_the_residual_they_factor_out():
    """The gradients of a two-layer network by W1, b1, W2 and b2 in one call formed the residual
    ``h W2 + b2 - y`` twice, and dL/db2 as the difference of two sums: near a fit with W2 ~ 1e8
    it was 0.2% off.  Now the residual is one step and dL/db2 its sum."""
    rng = np.random.default_rng(0)
    X, W1, b1 = rng.normal(size=(50, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    W2, b2 = rng.normal(size=4) * 1e8, np.array(0.3)
    H = np.tanh(X @ W1 + b1)
    y = H @ W2 + b2 + rng.normal(size=50) * 1e-3
    source = "h_nk = tanh(X_nd W1_dk + b1_k); L = 0.5 (h_nk W2_k + b2 - y_n)^2"
    gradients = einderiv.grad(source, ["W1", "b1", "W2", "b2"])
    r = H @ W2 + b2 - y
    got = gradients(X=X, W1=W1, b1=b1, W2=W2, b2=b2, y=y)
    np.testing.assert_allclose(got[3], r.sum(), rtol=1e-9)
    np.testing.assert_allclose(got[2], H.T @ r, rtol=1e-9)
    products = [
        step.target
        for step in gradients.line.steps
        if step.contraction is not None
        for term in step.contraction.terms
        if {"h", "W2"} <= set(term.operands)
    ]
    assert len(products) == 1, products


def test_a_shared_residual_is_not_read_as_a_sum_where_a_term_is_broadcast():
    """A reviewer's find in the first version of the shared residuals: a statement equal to an
    earlier residual step summed over an axis read that step, though a term of the step was
    broadcast along the axis (``A_nk w_k - m`` summed over n is N m, where the statement counts m
    once): dL/db was 9.89 for 7.09 and a plain program's value -45.0 for -22.1."""
    rng = np.random.default_rng(5)
    A, w, y = rng.uniform(0.2, 1.2, (5, 3)), rng.uniform(0.2, 1.2, 3), rng.uniform(0.2, 1.2, 5)
    b, q, s, m = np.array(0.3), np.array(0.7), np.array(1.0), np.array(0.5)
    source = "L = 0.5 s (A_nd w_d + b - y_n)^2 + q (A_nd w_d + b - y_n)"
    r = A @ w + b - y
    got = einderiv.grad(source, ["w", "s", "b"])(A=A, w=w, b=b, q=q, y=y, s=s)
    np.testing.assert_allclose(got[2], s * r.sum() + q, rtol=1e-12)
    np.testing.assert_allclose(got[0], s * A.T @ r + q * A.sum(0), rtol=1e-12)
    g = A.T @ (A @ w - m)
    value = einderiv.evaluate("g_i = (A_nk w_k - m) A_ni; t = A_nk w_k - m; f = t g_i g_i", A=A, w=w, m=m)
    np.testing.assert_allclose(value, ((A @ w).sum() - m) * g @ g, rtol=1e-12)
    g = ((A * w - y[:, None]) * A).sum(0)
    value = einderiv.evaluate("g_d = (A_nd w_d - y_n) A_nd; u = A_nd w_d - y_n; L = u g_d g_d", A=A, w=w, y=y)
    np.testing.assert_allclose(value, ((A @ w).sum() - y.sum()) * g @ g, rtol=1e-12)


@pytest.mark.parametrize(
    "source, want",
    [
        ("L = sqrt(1 + (x_n - mu)^2)", lambda r, s2: np.sum(1 / np.sqrt(1 + r * r) ** 3)),
        (
            "L = log(1 + (x_n - mu)^2 / s2)",
            lambda r, s2: np.sum(2 / (s2 + r * r) - 4 * r * r / (s2 + r * r) ** 2),
        ),
    ],
)
def test_a_printed_power_of_a_residual_reads_back_as_a_power(source, want):
    """The printed Hessian by mu of a robust loss wrote ``(2 x_n mu - x_n^2 - mu^2) / ...``; read
    back at x ~ 1e8 it was 2.769 for 2.782 and 2.202 for 2.394 (a hunter's find; the evaluated
    Hessian was right).  It prints ``-(x_n - mu)^2 / ...`` now, which reads back as a power."""
    x, mu, s2 = np.array([-3.0, 2, 5, 0, -1]) + 1e8, np.array(1e8 + 1), np.array(2.0)
    hessian = einderiv.hessian(source, "mu")
    # (the first one's two terms over powers of the root are one since 2026-12-06: 1 / sqrt(...)^3)
    assert "(x_n - mu)^2" in str(hessian) and "x_n^2" not in str(hessian)
    read = einderiv.compile(str(hessian))
    values = {"x": x, "mu": mu, "s2": s2}
    expected = want(x - mu, s2)  # exact: x - mu is exact here
    assert float(read(**{k: values[k] for k in read.inputs})) == pytest.approx(expected, rel=1e-13)
    assert float(hessian(**{k: values[k] for k in hessian.inputs})) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize(
    "source",
    ["m = mean_n(x_n); v = mean_n((x_n - m)^2); L = log(v)", "L = log(mean_n((x_n - mean_k(x_k))^2))"],
    ids=["program", "statement"],
)
def test_the_hessian_of_a_log_variance_by_its_data_keeps_the_centred_product(source):
    """The Hessian held ``m x_i + m x_j - m m - x_i x_j`` with the mean spelled out, which at x ~
    1e8 cancelled: row 0 was [0, 0.19, 0, 0, 0, 0] (program) and [0.033, 0.158, -0.030, ...]
    (statement) for [-0.015, 0.140, -0.077, ...] (a hunter's find).  With the mean one array
    (the statement m, or a step of its own) the terms pair into -(x_i - m)(x_j - m)."""
    base = np.array([3.0, -1, 4, 1, -5, 4])  # mean 1: x - mean(x) is exact at the offset
    x = base + 1e8
    r = base - base.mean()
    n, v = len(x), np.mean(r * r)
    want = 2 / (n * v) * (np.eye(n) - 1 / n) - 4 / (n * n * v * v) * np.outer(r, r)
    # the mean itself is rounded at 1e8 (x_n / 6 summed): jax at the offset is 3e-9 off too
    np.testing.assert_allclose(einderiv.hessian(source, "x")(x=x), want, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(einderiv.hessian_diag(source, "x")(x=x), np.diag(want), rtol=1e-7, atol=1e-12)


def test_a_standardised_score_keeps_its_centred_data():
    """``sum_i((x_i - mean_j(x_j)) / sqrt(mean_k((x_k - mean_j(x_j))^2)) a_i)`` by x, one
    statement, at x ~ 1e8: the gradient was [-1, -1, 1, -2, 1] for [-0.09, -0.97, 1.20, -0.88,
    0.74], its hvp 2.7e8 off (a hunter's find; the program form was right).  The mean of x is one
    array, and the rests of the residual pairs compare up to the letters summed inside calls."""
    jax, jnp = jax_float64()
    base, a = np.array([0.3, -1.2, 0.7, 1.9, -0.4]), np.array([0.5, -1, 2, 0.3, 1.1])
    v = np.array([1.0, -0.5, 0.25, 2.0, -1.5])

    def f(x):
        r = x - jnp.mean(x)
        return jnp.sum(r / jnp.sqrt(jnp.mean(r * r)) * a)

    want = np.asarray(jax.grad(f)(jnp.asarray(base)))  # the function does not change with the offset
    want_hvp = np.asarray(jax.jvp(jax.grad(f), (jnp.asarray(base),), (jnp.asarray(v),))[1])
    source = "f = sum_i((x_i - mean_j(x_j)) / sqrt(mean_k((x_k - mean_j(x_j))^2)) a_i)"
    x = base + 1e8
    np.testing.assert_allclose(einderiv.grad(source, "x")(x=x, a=a), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(einderiv.hvp(source, "x")(x=x, a=a, v=v), want_hvp, rtol=1e-6, atol=1e-7)


def test_the_hessian_diagonal_of_a_log_variance_plus_a_square_mean():
    """``log(mean_i((x_i - mean_j(x_j))^2)) + mean_i(x_i)^2``: hessian_diag of the one statement at x
    ~ 1e8 was [0.523, 0.273, 0.523, 0.523] for [0.428, -0.0079, 0.418, 0.0693] (a hunter's find)."""
    jax, jnp = jax_float64()
    base = np.array([0.3, -1.2, 0.7, 1.9])

    def f(x):
        m = jnp.mean(x)
        return jnp.log(jnp.mean((x - m) ** 2)) + m**2

    x = base + 1e8
    want = np.diag(np.asarray(jax.hessian(f)(jnp.asarray(base))))  # the offset leaves it (m^2's is 2/N^2)
    got = einderiv.hessian_diag("f = log(mean_i((x_i - mean_j(x_j))^2)) + mean_i(x_i)^2", "x")(x=x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "source, wrt, want",
    [
        ("L = y^3/3 - x_n y^2 + x_n x_n y", "y", lambda x, y, z: np.sum(x * x) - 2 * y * np.sum(x) + y * y),
        ("L = (x_n x_n - 2 x_n y + y^2) z", "z", lambda x, y, z: np.sum(x * x) - 2 * y * np.sum(x) + y * y),
        (
            "L = z (x_n x_n x_n - 3 x_n x_n y + 3 x_n y^2 - y^3)",
            "z",
            lambda x, y, z: np.sum(x**3) - 3 * y * np.sum(x * x) + 3 * y * y * np.sum(x) - y**3,
        ),
    ],
)
def test_a_power_of_a_residual_prints_only_where_every_term_runs_over_its_letters(source, wrt, want):
    """A reviewer's find in the first version of the printed powers: ``x_n x_n - 2 x_n y + y^2``
    sums y^2 once, but printed as ``(y - x_n)^2`` it is summed over n (36.45 for 34.49), and the
    text, read back, was what got evaluated."""
    x, y, z = np.array([1.0, 2, 3, 4, 5]), np.array(0.7), np.array(1.3)
    derivative, values = einderiv.diff(source, wrt), {"x": x, "y": y, "z": z}
    assert float(derivative(**{k: values[k] for k in derivative.inputs})) == pytest.approx(want(x, y, z), rel=1e-12)
    read = einderiv.compile(str(derivative))
    assert float(read(**{k: values[k] for k in read.inputs})) == pytest.approx(want(x, y, z), rel=1e-12)


def test_a_product_of_two_sums_of_residuals_keeps_the_residual():
    """``f = (x_i - m_i)(x_j - m_j)``, (sum of residuals)^2, was 0.0 for 0.0625 at x ~ 1e12: the
    multiplied-out ``x_i x_j - 2 x_i m_j + m_i m_j`` cancelled.  The group ties x's length to
    m's, so it is read back as r_i r_j; written out with a y of another length it stays three
    products."""
    x = np.array([1.0, 2, 3]) + 1e12
    m = x - np.array([0.5, 0.25, -1.0])
    assert float(einderiv.evaluate("f = (x_i - m_i)(x_j - m_j)", x=x, m=m)) == 0.0625
    assert float(einderiv.evaluate("f = 3 (x_i - m_i)(x_j - m_j) c", x=x, m=m, c=np.array(2.0))) == 0.375
    y = np.array([1.0, 2])
    written = einderiv.evaluate("f = x_i x_j - 2 x_i y_j + y_i y_j", x=x, y=y)
    assert float(written) == pytest.approx(x.sum() ** 2 - 2 * x.sum() * y.sum() + y.sum() ** 2, rel=1e-15)


def test_a_mean_beside_a_count_is_left_to_pair_with_the_count():
    """A hunter's find in the first version of the named means: the Hessian by X of
    ``log(1 + sum_nd((X_nd - mean_j(X_jd))^2))`` stopped with "the size of index 'o' cannot be
    inferred": a mean made one array beside a count left the count nothing to pair with."""
    jax, jnp = jax_float64()
    X = np.random.default_rng(0).normal(size=(4, 3))

    def f(X):
        return jnp.log(1 + jnp.sum((X - X.mean(0)) ** 2))

    got = einderiv.hessian("f = log(1 + sum_nd((X_nd - mean_j(X_jd))^2))", "X")(X=X)
    np.testing.assert_allclose(got, np.asarray(jax.hessian(f)(jnp.asarray(X))), rtol=1e-10, atol=1e-12)


def _broadcast_residual_sources():
    """Sources whose second and third derivatives leave the count of an axis summed inside a
    call (``delta_nn``: d/dm of ``sum_nd(x_n - m - X_nd)`` holds N D)."""
    rng = np.random.default_rng(11)
    x, X, w = rng.normal(size=5), rng.normal(size=(5, 3)), rng.normal(size=3)
    return [
        (
            "f = sqrt(1 + sum_nd((x_n - m - X_nd)^2))",
            {"x": x, "m": 0.3, "X": X},
            lambda jnp, a: jnp.sqrt(1 + jnp.sum((a["x"][:, None] - a["m"] - a["X"]) ** 2)),
        ),
        (
            "f = log(1 + sum_n(((x_n - m) / a)^2)) + lam w_d w_d",
            {"x": x, "m": 0.2, "a": 1.3, "lam": 0.1, "w": w},
            lambda jnp, a: jnp.log(1 + jnp.sum(((a["x"] - a["m"]) / a["a"]) ** 2)) + a["lam"] * a["w"] @ a["w"],
        ),
    ]


@pytest.mark.parametrize("number", range(2))
@pytest.mark.parametrize("order", [2, 3])
def test_a_count_left_inside_a_call_keeps_its_axis_at_every_order(number, order):
    """The Hessian by m of ``sqrt(1 + sum_nd((x_n - m - X_nd)^2))`` stopped with "the size of
    index 'i' cannot be inferred": differentiating the call's argument left the count of n, and
    the product around the call renamed n apart to a letter that named no axis.  A count made
    there names the axis it counts (``n#x.0``); the third derivative and the printed text
    evaluate too."""
    jax, jnp = jax_float64()
    source, arrays, function = _broadcast_residual_sources()[number]
    wrt = "m" if number == 0 else "a"
    derivative = einderiv.diff(source, [wrt] * order)
    reference = lambda value: function(jnp, {**arrays, wrt: value})  # noqa: E731
    for _ in range(order):
        reference = jax.grad(reference)
    want = float(reference(arrays[wrt]))
    assert float(derivative(**arrays)) == pytest.approx(want, rel=1e-10)
    read = einderiv.compile(str(derivative))  # the printed text needs only the inputs it writes
    assert float(read(**{k: v for k, v in arrays.items() if k in read.ranks})) == pytest.approx(want, rel=1e-10)


def test_a_hessian_vector_product_through_a_count_inside_a_call():
    """The hvp by a of ``log(1 + sum_n(((x_n - y) / a)^2)) + lam w_d w_d`` stopped with "the size
    of index 'i' cannot be inferred"."""
    jax, jnp = jax_float64()
    _, arrays, function = _broadcast_residual_sources()[1]
    product = einderiv.hvp("f = log(1 + sum_n(((x_n - m) / a)^2)) + lam w_d w_d", "a")
    second = jax.grad(jax.grad(lambda a: function(jnp, {**arrays, "a": a})))(arrays["a"])
    assert float(product(**arrays, v=0.7)) == pytest.approx(0.7 * float(second), rel=1e-10)


@pytest.mark.parametrize(
    "source, function",
    [
        ("L = log(1 + sum_n((y_n - b)^2))", lambda jnp, r: jnp.log(1 + jnp.sum(r**2))),
        ("L = sqrt(1 + sum_n((y_n - b)^2))", lambda jnp, r: jnp.sqrt(1 + jnp.sum(r**2))),
        ("L = log(1 + sum_n((y_n - X_nd w_d - b)^2))", lambda jnp, r: jnp.log(1 + jnp.sum(r**2))),
        ("L = sqrt(1 + sum_n((y_n - X_nd w_d - b)^2))", lambda jnp, r: jnp.sqrt(1 + jnp.sum(r**2))),
    ],
)
def test_the_hessian_by_a_location_keeps_the_summed_residual(source, function):
    """The Hessian by the bias b of ``log(1 + sum_n((y_n - X_nd w_d - b)^2))`` holds (sum_n
    r_n)^2, which differentiation multiplied out into six products of sums (``y_i y_n - 2 N b
    y_i + N^2 b^2 ...``): at y ~ 1e8 it was 24 times too large (the location alone, ``(y_n -
    b)^2``, 5 times).  Read back as the residual summed, squared, it keeps its digits.  The
    reference is jax on the residual formed exactly (y - b is exact there)."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(5)
    X, w = rng.normal(size=(6, 3)), rng.normal(size=3)
    b = 1e8 + 0.25
    noise = rng.normal(size=6) * 0.5
    y = X @ w + b + noise if "X_nd" in source else b + noise
    uses_x = "X_nd" in source
    exact = (y - b) - (X @ w if uses_x else 0)  # y - b is exact: the data is within a factor 2 of b

    def f(shift):
        return function(jnp, jnp.asarray(exact) - shift)

    want = float(jax.hessian(f)(0.0))
    arrays = {"y": y, "b": b, **({"X": X, "w": w} if uses_x else {})}
    got = float(einderiv.hessian(source, "b")(**arrays))
    assert got == pytest.approx(want, rel=1e-6)
    assert float(einderiv.hessian(source, "b")(**{**arrays, "b": 0.25, "y": y - 1e8})) == pytest.approx(want, rel=1e-9)


def test_a_broadcast_residual_summed_in_a_hessian_keeps_its_digits():
    """``sqrt(1 + sum_nd((x_n - m - X_nd)^2))`` by m, twice: (sum_nd r_nd)^2 with r's three terms
    summed apart (N D m, D sum_n x_n, sum_nd X_nd) was -6.2 for 2.53 at x ~ 1e8."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(6)
    X, noise = rng.normal(size=(5, 3)), rng.normal(size=5)
    m = 1e8 + 0.3
    x = m + noise

    def f(shift):
        r = jnp.asarray(noise)[:, None] - shift - jnp.asarray(X)  # x - m is exact
        return jnp.sqrt(1 + jnp.sum(r**2))

    got = float(einderiv.hessian("f = sqrt(1 + sum_nd((x_n - m - X_nd)^2))", "m")(x=x, m=m, X=X))
    assert got == pytest.approx(float(jax.hessian(f)(0.0)), rel=1e-8)


_COVARIANCE = "c = mean_n((x_n - mean_k(x_k)) (y_n - mean_k(y_k)))"
_CORRELATION = (
    "c = sum_n((x_n - mean_k(x_k)) (y_n - mean_k(y_k))) / "
    "sqrt(sum_n((x_n - mean_k(x_k))^2) sum_n((y_n - mean_k(y_k))^2))"
)


@pytest.mark.parametrize("offset", [1e6, 1e8])
def test_a_covariance_and_a_correlation_keep_their_centred_data(offset):
    """A hunter's find: the one-statement covariance was ``mean(x y) - mean(x) mean(y)`` in the
    normal form, -2.0 for -0.13 at x, y ~ 1e8; the Pearson correlation 3.45 for -0.28 (|r| > 1),
    and its gradient by x 305 times too large at 1e6, where the program form, with the centred
    data named, was exact.  The operand sums the statement writes are read back where their
    product was multiplied out.  The reference is mpmath at 60 digits."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    x = offset + np.array([0.3, -1.2, 0.8, 0.1, -0.5])
    y = offset + np.array([1.1, 0.4, -0.9, 0.2, -0.3])
    xs, ys = [mpmath.mpf(float(v)) for v in x], [mpmath.mpf(float(v)) for v in y]
    a = [v - sum(xs) / 5 for v in xs]
    b = [v - sum(ys) / 5 for v in ys]
    sab, saa, sbb = (sum(p * q for p, q in zip(u, w)) for u, w in ((a, b), (a, a), (b, b)))
    assert float(einderiv.evaluate(_COVARIANCE, x=x, y=y)) == pytest.approx(float(sab / 5), rel=1e-12)
    correlation = float(sab / mpmath.sqrt(saa * sbb))
    assert float(einderiv.evaluate(_CORRELATION, x=x, y=y)) == pytest.approx(correlation, rel=1e-12)
    # d r / d x_i = (b_i - r a_i sbb / sqrt(saa sbb)) / sqrt(saa sbb): the centred a and b sum to 0
    root = mpmath.sqrt(saa * sbb)
    want = [float((b[i] - sab * a[i] * sbb / (root * root)) / root) for i in range(5)]
    got = einderiv.grad(_CORRELATION, "x")(x=x, y=y)  # the data rounded at 1e8 is 1e-8 off already
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    covariance = einderiv.grad(_COVARIANCE, "x")(x=x, y=y)
    # each y_i - mean(y) is rounded at the data's scale (an ulp of 1e8 is 1.5e-8): 1e-14 of it
    np.testing.assert_allclose(covariance, [float(v / 5) for v in b], rtol=0, atol=1e-14 * offset)


def test_a_mixture_hessian_diagonal_reads_the_difference_its_program_names():
    """A hunter's find: ``hessian_diag`` by the centres C of the program ``E_nkd = X_nd - C_kd;
    Q_nk = lw_k - 0.5 sum_d(E_nkd^2); L = -logsumexp_k(Q_nk)`` holds ``(X_nj - C_ij)^2``
    multiplied out; at X, C ~ 1e8 it was [2.17, 1.17, -1.17, 0.83] for [2.00, 1.60, 0.17, 0.23]
    (the one statement was right).  The square is read back onto the array that holds the same
    difference with its axes in another order."""
    jax, jnp = jax_float64()
    X0, C0 = np.array([[0.3, -1.2], [0.8, 0.1], [-0.5, 1.1]]), np.array([[0.2, 0.4], [-0.9, 0.5]])
    lw = np.array([0.1, -0.3])

    def f(C):  # C0 + shift, the differences exact
        E = jnp.asarray(X0)[:, None, :] - C[None, :, :]
        return -jnp.sum(jax.scipy.special.logsumexp(jnp.asarray(lw) - 0.5 * jnp.sum(E**2, -1), axis=1))

    want = np.diag(np.asarray(jax.hessian(f)(jnp.asarray(C0))).reshape(4, 4)).reshape(2, 2)
    source = "E_nkd = X_nd - C_kd; Q_nk = lw_k - 0.5 sum_d(E_nkd^2); L = -logsumexp_k(Q_nk)"
    got = einderiv.hessian_diag(source, "C")(X=X0 + 1e8, C=C0 + 1e8, lw=lw)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("L = log(1 + sum_n((x_n - m)^2) + sum_d((z_d - m)^2))", "m"),
        ("L = log(1 + sum_d((z_d - m)^2) + sum_n((x_n - m)^2))", "m"),
        ("L = log(1 + sum_n((y_n - X_nd w_d - m)^2) + sum_d((w_d - m)^2))", "m"),
    ],
)
def test_counts_of_two_lengths_inside_one_call_keep_their_own(source, wrt):
    """A reviewer's find, silently wrong at ordinary inputs before: the Hessian by m of ``log(1 +
    sum_n((x_n - m)^2) + sum_d((z_d - m)^2))`` with x of length 5 and z of length 3 was 0.3517
    for 0.3434 (the other order -0.052 for -0.023; with ``y_n - X_nd w_d - m`` 1.754 for 1.775):
    the counts N and D that differentiating the call's argument leaves were plain letters, and
    renamed apart one took the other's length.  Each is now the count of the axis it counts."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(3)
    arrays = {"x": rng.normal(size=5), "z": rng.normal(size=3), "m": 0.4}
    arrays.update({"y": rng.normal(size=5), "X": rng.normal(size=(5, 3)), "w": rng.normal(size=3)})
    compiled = einderiv.hessian(source, wrt)
    used = {k: v for k, v in arrays.items() if k in compiled.inputs}
    x, z, y, X, w = (jnp.asarray(arrays[k]) for k in "xzyXw")
    if "X_nd" in source:

        def f(m):
            return jnp.log(1 + jnp.sum((y - X @ w - m) ** 2) + jnp.sum((w - m) ** 2))
    else:

        def f(m):
            return jnp.log(1 + jnp.sum((x - m) ** 2) + jnp.sum((z - m) ** 2))

    assert float(compiled(**used)) == pytest.approx(float(jax.hessian(f)(0.4)), rel=1e-10)


@pytest.mark.parametrize(
    "source, reference",
    [
        # j only in a delta inside a call: tanh(delta_ij) over i, j (A's length), summed with A_ii
        ("f = A_ii / (2 + tanh(delta_ij))", lambda jnp, A: jnp.sum(jnp.diag(A)[:, None] / (2 + jnp.tanh(jnp.eye(3))))),
        (
            "t = a_i + A_ij; f = A_ii / (2 + tanh(delta_ij))",
            lambda jnp, A: jnp.sum(jnp.diag(A)[:, None] / (2 + jnp.tanh(jnp.eye(3)))),
        ),
        # A_ii (A_kk + delta_ij) summed: trace(A)^2 dim + trace(A); the count of j is A's length
        ("f = A_ii (A_ii + delta_ij)", lambda jnp, A: 3 * jnp.trace(A) ** 2 + jnp.trace(A)),
    ],
)
def test_a_letter_joined_by_a_delta_keeps_its_size_in_derivatives(source, reference):
    """Found once the property tests stopped rejecting derivatives that "cannot be inferred"
    where their source evaluates: the gradients of these valid statements stopped with "the size
    of index 'j' cannot be inferred: it appears only in deltas".  A call's argument hoisted to a
    step of its own now carries the statement's output axes (df/dA_kl: k is A's), and a letter
    the statement writes only in a delta with a sized letter is sized as that letter."""
    jax, jnp = jax_float64()
    A = np.random.default_rng(5).normal(size=(3, 3))
    arrays = {"A": A, "a": np.arange(3.0)}
    for wrt in (["A"], ["A", "A"]):
        derivative = einderiv.diff(source, wrt)
        used = {k: v for k, v in arrays.items() if k in derivative.inputs}
        expected = jax.grad(lambda A: reference(jnp, A)) if len(wrt) == 1 else jax.hessian(lambda A: reference(jnp, A))
        np.testing.assert_allclose(derivative(**used), expected(jnp.asarray(A)), rtol=1e-12, atol=1e-14)
        read = einderiv.compile(str(derivative))
        np.testing.assert_allclose(read(**{k: v for k, v in arrays.items() if k in read.inputs}), derivative(**used))


@pytest.mark.parametrize(
    "source",
    [
        "f = a_n exp(-0.5 sum_d(((X_nd - Z_md) / ell_d)^2)) b_m",
        "R_nmd = (X_nd - Z_md) / ell_d; f = a_n exp(-0.5 sum_i(R_nmi^2)) b_m",
        "D_nmd = X_nd - Z_md; f = a_n exp(-0.5 sum_d(D_nmd^2 / ell_d^2)) b_m",
    ],
)
@pytest.mark.parametrize("offset", [0.0, 1e4, 1e8])
def test_ard_kernel_hessian_by_length_scales_keeps_its_digits(source, offset):
    """The Hessian by the length scales of an ARD RBF kernel ``a^T K b`` held ``(X - Z)^4`` and
    products of two residuals multiplied out: at data offset by 1e4 the one statement was 13x
    off (relative to the Hessian's largest entry), at 1e8 2.8e17x; the program ``R = (X - Z) /
    ell`` was exact at 1e4 and off by 100% at 1e8.  Squares, powers and products of a residual
    the statement writes as an operand are now read back onto that residual's array."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(0)
    X0, Z0 = rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    a, b, ell = rng.normal(size=4), rng.normal(size=3), np.array([0.7, 1.3])

    def reference(ell):  # the residuals formed before the offset: exact
        R = (X0[:, None, :] - Z0[None, :, :]) / ell
        return jnp.asarray(a) @ jnp.exp(-0.5 * (R**2).sum(-1)) @ jnp.asarray(b)

    expected = np.asarray(jax.hessian(reference)(jnp.asarray(ell)))
    got = einderiv.hessian(source, "ell")(X=X0 + offset, Z=Z0 + offset, a=a, b=b, ell=ell)
    # the data's own rounding at the offset: |X| 1e8 holds about 8 digits of X - Z
    tolerance = 1e-12 + 1e-15 * offset
    assert np.max(np.abs(got - expected)) <= tolerance * np.max(np.abs(expected))


SCORE = "L = sum_n(((x_n - mean_k(x_k)) / sqrt(mean_j((x_j - mean_k(x_k))^2)))^2 t_n)"
PEARSON = (
    "r = sum_n((x_n - mean_k(x_k)) (y_n - mean_k(y_k))) / "
    "sqrt(sum_n((x_n - mean_k(x_k))^2) sum_n((y_n - mean_k(y_k))^2))"
)


def _centred_references(jnp):
    rng = np.random.default_rng(1)
    x, y, t, v = (rng.normal(size=6) for _ in range(4))

    def score(x):
        c = x - x.mean()
        return jnp.sum((c / jnp.sqrt(jnp.mean(c**2))) ** 2 * t)

    def pearson(x, y):
        a, b = x - x.mean(), y - y.mean()
        return jnp.sum(a * b) / jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))

    return x, y, t, v, score, pearson


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_one_statement_derivatives_evaluate_through_their_residuals(offset):
    """Differentiation multiplies ``(x_n - mean_k(x_k))`` out of every product it is in; the
    one statement's derivatives were then differences of nearly equal products: at data offset
    by 1e6 the gradient of a squared standardised score was 2086x off, the Pearson correlation's
    Hessian, HVP and Hessian diagonal 3.9e8x (10.8x at 1e4).  The same function as a program
    (``c_n = x_n - mean_k(x_k); ...``) was exact.  Each derivative now evaluates through its
    program with every difference of data named (einderiv.residuals), and prints as before."""
    jax, jnp = jax_float64()
    x0, y0, t, v, score, pearson = _centred_references(jnp)
    X0, Y0 = jnp.asarray(x0), jnp.asarray(y0)
    x, y = x0 + offset, y0 + offset
    hessian = np.asarray(jax.hessian(pearson)(X0, Y0))
    gradient = np.asarray(jax.grad(pearson)(X0, Y0))
    checks = [
        (einderiv.grad(SCORE, "x")(x=x, t=t), np.asarray(jax.grad(score)(X0))),
        (einderiv.hvp(SCORE, "x")(x=x, t=t, v=v), np.asarray(jax.hessian(score)(X0)) @ v),
        (einderiv.hessian(PEARSON, "x")(x=x, y=y), hessian),
        (einderiv.hessian_diag(PEARSON, "x")(x=x, y=y), np.diag(hessian)),
        (einderiv.jvp(PEARSON, "x")(x=x, y=y, v=v), gradient @ v),
        (einderiv.vjp(PEARSON, "x")(x=x, y=y, u=np.array(1.5)), 1.5 * gradient),
        (einderiv.grad(PEARSON, ["x", "y"])(x=x, y=y)[1], np.asarray(jax.grad(pearson, argnums=1)(X0, Y0))),
        (einderiv.value_and_grad(PEARSON, ["x", "y"])(x=x, y=y)[1][0], gradient),
    ]
    # of= an intermediate (a reviewer's find: grad and hessian resolved of= first, and evaluated
    # the printed form, 39.8x and 1.8e7x off at 1e6)
    program = SCORE.replace("L = ", "c = ") + "; f = c^2 + x_i x_i"
    checks += [
        (einderiv.grad(program, "x", of="c")(x=x, t=t), np.asarray(jax.grad(score)(X0))),
        (einderiv.grad(program, ["x"], of="c")(x=x, t=t)[0], np.asarray(jax.grad(score)(X0))),
        (einderiv.hessian(program, "x", of="c")(x=x, t=t), np.asarray(jax.hessian(score)(X0))),
    ]
    for got, expected in checks:  # the data's own rounding at 1e6 is ~1e-10 of the residuals
        assert np.max(np.abs(got - expected)) <= 1e-8 * np.max(np.abs(expected))


def test_residuals_named_for_evaluation_do_not_print():
    """The named differences are an evaluation plan: the derivative prints in the user's terms."""
    for derivative in (einderiv.grad(SCORE, "x"), einderiv.hessian(PEARSON, "y"), einderiv.hvp(SCORE, "x")):
        assert not re.search(r"(?<![\w])_r\d", str(derivative))
        assert any(step.target.startswith("_r") for step in derivative.line.steps)
    plain = einderiv.grad("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w")
    assert not any(step.target.startswith("_r") for step in plain.line.steps)  # no difference of data


@pytest.mark.parametrize(
    "source, name, column",
    [
        ("f = log x_i", "log", 5),
        ("f = sin x", "sin", 5),
        ("f = x_i exp x_i", "exp", 9),
        ("f = sqrt x_i x_i", "sqrt", 5),
        ("f = 2 sigmoid x_i", "sigmoid", 7),
    ],
)
def test_a_function_without_its_brackets_is_an_error(source, name, column):
    """A hunter's find: ``f = log x_i`` was a scalar input named log times x_i (its gradient by
    x printed ``df/dx_j = log``, exit status 0), where ``exp (x_i)`` was already refused."""
    with pytest.raises(einderiv.ParseError, match=f"'{name}' is a function") as caught:
        einderiv.compile(source)
    assert caught.value.column == column
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert str(einderiv.compile("f = a x_i + log(x_i) x_i sign_i").expr)  # names that are no function, and calls


@pytest.mark.parametrize("source", ["Y = A @ B * A", "Y = A * B @ A", "f = x @ A * y"])
def test_star_beside_matmul_is_an_error(source):
    """A hunter's find: ``Y = A @ B * A`` was read as the matrix product A B A (MATLAB's ``*``),
    where NumPy computes (A @ B) * A elementwise; in an expression that writes ``@``, ``*``
    between arrays is now an error that says to write ``.*`` or ``@``.  A number still scales."""
    with pytest.raises(einderiv.ParseError, match="'\\*' beside '@' is ambiguous"):
        einderiv.compile(source, ranks={"A": 2, "B": 2, "x": 1, "y": 1})
    A = np.arange(4.0).reshape(2, 2)
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(einderiv.evaluate("f = 2 * x @ A @ x", A=A, x=x), 2 * x @ A @ x)
    np.testing.assert_allclose(einderiv.evaluate("Y = (A @ A) .* A", A=A), (A @ A) * A)


def test_codegen_is_reachable_from_the_package():
    """``einderiv.codegen.generate(...)``, as the README writes it, needed ``import einderiv.codegen``."""
    result = subprocess.run(
        [sys.executable, "-c", "import einderiv; print(callable(einderiv.codegen.generate))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize("source, c1, c2", [("f = log(exp(e) + 5)", 1, 5), ("f = log(2 exp(e) + 1/3)", 2, 1 / 3)])
def test_log_of_exp_plus_a_positive_constant_is_stable(source, c1, c2):
    """A hunter's find (the negative binomial's ``log(exp(u) + r)``): with a constant other than 1
    the log of the sum was formed as written, its Hessian 0 for 2.1e-17 at u = 40 and NaN from
    u = 710.  A positive constant c is c exp(0) for :func:`einderiv.normal.log_add_exp`:
    ``log(exp(u) + 5) = u + softplus(log(5) - u)``.  Against mpmath at 50 digits."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50

    def f(u):
        return mpmath.log(c1 * mpmath.exp(u) + mpmath.mpf(c2))

    def d1(u):  # c1 e^u / (c1 e^u + c2)
        return c1 * mpmath.exp(u) / (c1 * mpmath.exp(u) + c2)

    def d2(u):
        return c1 * c2 * mpmath.exp(u) / (c1 * mpmath.exp(u) + c2) ** 2

    value, gradient, second = einderiv.compile(source), einderiv.grad(source, "e"), einderiv.hessian(source, "e")
    for u in (-800.0, -30.0, 0.3, 40.0, 400.0, 800.0):
        assert float(value(e=u)) == pytest.approx(float(f(u)), rel=1e-13, abs=1e-13)
        assert float(gradient(e=u)) == pytest.approx(float(d1(u)), rel=1e-13, abs=1e-300)
        assert float(second(e=u)) == pytest.approx(float(d2(u)), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize(
    "source",
    [
        "L = -logsumexp_k(lw_k - 0.5 (x_n - mu_k)^2 / s2)",
        "E_nk = x_n - mu_k; L = -logsumexp_k(lw_k - 0.5 E_nk^2 / s2)",
        "E_nk = x_n - mu_k; Q_nk = lw_k - 0.5 E_nk^2 / s2; L = -logsumexp_k(Q_nk)",
    ],
)
def test_mixture_hessians_keep_their_residuals(source):
    """A hunter's find: at data offset by 1e8, the Hessian by mu of a one-dimensional Gaussian
    mixture's log-likelihood written as one statement was 11x off ([-39.3, -4, -0.25] for
    [3.92, -0.21, -0.23]), its HVP 5.3x and its Hessian diagonal by x 4.7x, with wrong signs; the
    two-statement program ``E_nk = x_n - mu_k`` was read through into the log-sum-exp and
    multiplied out the same way.  Only the three-statement program was right."""
    jax, jnp = jax_float64()
    from jax.scipy.special import logsumexp

    rng = np.random.default_rng(4)
    x0, mu0 = 2 * rng.standard_normal(8), np.array([-1.0, 0.5, 2.0])
    lw, s2, offset = np.log([0.2, 0.3, 0.5]), 0.7, 1e8
    v = np.random.default_rng(7).standard_normal(3)

    def by_mu(m):  # the residuals formed before the offset
        return -jnp.sum(logsumexp(lw[None, :] - 0.5 * (x0[:, None] - m[None, :]) ** 2 / s2, axis=1))

    def by_x(x):
        return -jnp.sum(logsumexp(lw[None, :] - 0.5 * (x[:, None] - mu0[None, :]) ** 2 / s2, axis=1))

    arrays = {"x": x0 + offset, "mu": mu0 + offset, "lw": lw, "s2": np.array(s2)}
    H, Hx = np.asarray(jax.hessian(by_mu)(jnp.asarray(mu0))), np.asarray(jax.hessian(by_x)(jnp.asarray(x0)))
    checks = [
        (einderiv.hessian(source, "mu")(**arrays), H),
        (einderiv.hvp(source, "mu")(**arrays, v=v), H @ v),
        (einderiv.hessian_diag(source, "x")(**arrays), np.diag(Hx)),
    ]
    for got, expected in checks:  # the data's own rounding at 1e8: ~1e-8 of the residuals
        assert np.max(np.abs(got - expected)) <= 1e-7 * np.max(np.abs(expected))


@pytest.mark.parametrize(
    "source",
    [
        "f = sqrt(2 + (x_j + A_jj - (z_j - mean_j(x_k)))^2)",
        "t_i = sqrt(2 + (x_k x_i - x_k + c)^2); f = (t_i z_j - mean_j(sum_j(y_k)))",
    ],
)
def test_random_program_hessians_found_wrong(source):
    """A reviewer's fuzzing found these Hessians silently wrong at ordinary inputs (0.52 and 2.06
    off finite differences; the first not even symmetric): the optimiser read a square back onto
    a residual it had formed for another term in that term's letters (i where j was meant).  Now
    checked against second differences of the value, which evaluation computes apart."""
    rng = np.random.default_rng(5)
    arrays = {
        "x": rng.normal(size=4),
        "y": rng.normal(size=4) + 1.5,
        "z": rng.normal(size=4),
        "A": rng.normal(size=(4, 4)),
        "c": np.array(0.4),
    }
    value, hessian = einderiv.compile(source), einderiv.hessian(source, "x")
    given = {k: v for k, v in arrays.items() if k in value.inputs}

    def f(x):
        return float(value(**{**given, "x": x}))

    h, eye, x0 = 1e-4, np.eye(4) * 1e-4, arrays["x"]
    expected = np.array(
        [[(f(x0 + a + b) - f(x0 + a - b) - f(x0 - a + b) + f(x0 - a - b)) / (4 * h * h) for b in eye] for a in eye]
    )
    got = hessian(**{k: v for k, v in arrays.items() if k in hessian.inputs})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_scalar_times_a_difference_keeps_its_terms_apart():
    """A reviewer's find in a first version of this change: ``f = (a - b)(y_j - c)`` is (a - b)
    (sum_j y_j - c) (a scalar factor keeps the sum's terms apart), and the optimiser read it back
    as a residual array over j, (a - b) sum_j(y_j - c): -4.67 for -1.52.  A residual the statement
    writes still needs its letters summed in both terms.  And ``x_k - sum_j(c)``, whose j only the
    statement around it sizes, is no residual to name (its gradient stopped with "cannot be
    inferred")."""
    rng = np.random.default_rng(11)
    x, y, z = rng.normal(size=4), rng.normal(size=4), rng.normal(size=3)
    a, b, c = np.array(1.1), np.array(-0.4), np.array(0.7)
    np.testing.assert_allclose(einderiv.evaluate("f = (a - b) (y_j - c)", a=a, b=b, y=y, c=c), (a - b) * (y.sum() - c))
    np.testing.assert_allclose(
        einderiv.grad("f = (a - b)^2 (y_j - c)", "a")(a=a, b=b, y=y, c=c), 2 * (a - b) * (y.sum() - c)
    )
    np.testing.assert_allclose(
        einderiv.grad("t = x_i; f = (t - c)^2 (y_j - c)", "x")(x=x, y=y, c=c),
        np.full(4, 2 * (x.sum() - c) * (y.sum() - c)),
    )
    got = einderiv.grad("f = (x_k - sum_j(c))^2 z_j", "x")(x=x, z=z, c=c)
    np.testing.assert_allclose(got, 2 * (x - 3 * c) * z.sum())


def _read_back(derivative, arrays):
    compiled = einderiv.compile(str(derivative))
    return compiled(**{k: v for k, v in arrays.items() if k in compiled.ranks})


@pytest.mark.parametrize(
    "source, wrt, shown",
    [
        # each difference written back in its place, as the user wrote it
        ("L = -sum_n(logsumexp_k(lw_k - 0.5 (x_n - mu_k)^2 / s2))", ["mu"], "(x_n - mu_i) / s2"),
        ("f = a_n exp(-0.5 sum_d(((X_nd - Z_md) / l_d)^2)) b_m", ["l", "l"], "(X_ni - Z_mi)^2"),
        ("L = sum_n((y_n - X_nd w_d - b)^2) + lam w_d w_d", ["w"], "(y_n - X_nd w_d - b) X_ni"),
        # scaled by a number, a group is a list of terms (rule 4): summed where the use sums it
        ("L = sum_n((y_n - X_nd w_d - b)^2)", ["b"], "-2 sum_n(y_n - X_nd w_d - b)"),
        ("f = sqrt(1 + sum_nd((x_n - m - X_nd)^2))", ["m"], "-sum_nd(x_n - m - X_nd) / sqrt"),
        # differentiated through: a statement of its own, named as a user would (r, dfdr)
        ("f = sum_n(((x_n - mean_k(x_k)) / sqrt(mean_j((x_j - mean_k(x_k))^2)))^2 t_n)", ["x"], "r_j = x_j - mean_k"),
    ],
)
def test_one_statement_derivatives_print_the_differences_they_evaluate(source, wrt, shown):
    """Issue 13 wants a one statement's derivative printed as its program's is: a one statement
    printed the multiplied-out sum (``dL/db = -2 y_n + 2 X_nd w_d + 2 b delta_nn``) while it was
    evaluated through its named differences.  It prints those differences now, and the text
    reads back to the numbers the derivative gives, with no hidden name in it."""
    derivative = einderiv.diff(source, wrt)
    text = str(derivative)
    assert shown in text, text
    assert not re.search(r"(?<![\w])_r\d", text)
    arrays = {name: rng.uniform(0.5, 1.5, size=(3,) * rank) for name, rank in derivative.ranks.items()}
    np.testing.assert_allclose(_read_back(derivative, arrays), derivative(**arrays), rtol=1e-12, atol=1e-12)
    assert str(derivative.statement) == text.splitlines()[-1]


@pytest.mark.parametrize(
    "program, statement, wrt, name, group",
    [
        (
            "r_nd = X_nd - mean_m(X_md); L = mean_n((r_nd w_d)^2)",
            "L = mean_n((X_nd w_d - mean_m(X_md w_d))^2)",
            "w",
            r"\br_n(\w)",
            r"(X_n\1 - mean_m(X_m\1))",
        ),
        (
            "E_nk = x_n - mu_k; L = -logsumexp_k(lw_k - 0.5 E_nk^2 / s2)",
            "L = -logsumexp_k(lw_k - 0.5 (x_n - mu_k)^2 / s2)",
            "mu",
            r"\bE_n(\w)",
            r"(x_n - mu_\1)",
        ),
        (
            "r_n = y_n - X_nd w_d - b; L = sum_n(r_n^2)",
            "L = sum_n((y_n - X_nd w_d - b)^2)",
            "w",
            r"\br_n",
            "(y_n - X_nd w_d - b)",
        ),
    ],
)
def test_a_program_and_its_one_statement_print_the_same_derivative(program, statement, wrt, name, group):
    """The same text up to the intermediate's name: the one statement writes the difference in
    the place where the program writes its name."""
    expected = re.sub(name, group, str(einderiv.grad(program, wrt)).splitlines()[-1])
    assert str(einderiv.grad(statement, wrt)) == expected


@pytest.mark.parametrize(
    "source",
    [
        "L = mean_n((X_nd w_d - mean_m(X_md w_d))^2)",
        "z_n = X_nd w_d; L = mean_n((z_n - mean_m(z_m))^2)",
        "z_n = X_nd w_d; mz = mean_m(z_m); r_n = z_n - mz; L = mean_n(r_n r_n)",
        "z_n = X_nd w_d; r_n = z_n - mean_m(z_m); L = mean_n(r_n r_n)",
        "L = mean_n((y_n - X_nd w_d + mean_m(X_md) w_d)^2)",
        "L = mean_n((y_n - X_nd w_d + mean_m(X_md w_d))^2)",
    ],
)
def test_variance_of_a_projection_keeps_its_digits(source):
    """A hunter's find: the Hessian of the variance of Xw by w is 2 C^T C / N (C the centred X);
    it was read as 2 C^T X / N, which cancels at eps c^2: 1.4e-4 off at an offset of 1e6, 1.5
    at 1e8 (a Hessian diagonal [0, -4, 4] for [2.66, 0.58, 0.81]), one statement and programs
    alike.  The terms that share w are now the centred data times w."""
    X0 = np.random.default_rng(0).standard_normal((6, 3))
    w = np.random.default_rng(1).standard_normal(3)
    y = np.random.default_rng(2).standard_normal(6)
    C = X0 - X0.mean(axis=0)
    expected = 2 * C.T @ C / 6
    for offset in (1e6, 1e8):
        arrays = {"X": X0 + offset, "w": w, "y": y}
        hessian = einderiv.hessian(source, "w")
        got = hessian(**{k: v for k, v in arrays.items() if k in hessian.ranks})
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())
        diagonal = einderiv.hessian_diag(source, "w")
        got = diagonal(**{k: v for k, v in arrays.items() if k in diagonal.ranks})
        np.testing.assert_allclose(got, np.diag(expected), rtol=1e-7)


@pytest.mark.parametrize(
    "source",
    [
        "L = sum_n(log(sum_k(softmax_k(a_nk) exp(b_nk))))",
        "p_nk = softmax_k(a_nk); L = sum_n(log(sum_k(p_nk exp(b_nk))))",
        "L = sum_n(log(sum_k(exp(a_nk) exp(b_nk))) - logsumexp_k(a_nk))",
    ],
)
def test_a_log_of_a_sum_of_products_of_exps_is_a_log_sum_exp(source):
    """A hunter's find: a mixture written with its weights apart, log sum_k p_k exp(b_k), was
    -inf with NaN gradients at expert log-likelihoods of -800 (an ordinary value): the product
    of the two exps underflowed before the log-sum-exp rule saw it."""
    jax, jnp = jax_float64()
    from jax.scipy.special import logsumexp

    a = np.random.default_rng(0).normal(size=(4, 3))
    b = np.random.default_rng(1).normal(size=(4, 3)) - 800

    def reference(a, b):
        return jnp.sum(logsumexp(a + b, axis=1) - logsumexp(a, axis=1))

    np.testing.assert_allclose(einderiv.evaluate(source, a=a, b=b), reference(a, b), rtol=1e-13)
    np.testing.assert_allclose(einderiv.grad(source, "b")(a=a, b=b), jax.grad(reference, 1)(a, b), atol=1e-12)
    expected = np.diag(np.asarray(jax.hessian(reference, 1)(a, b)).reshape(12, 12)).reshape(4, 3)
    np.testing.assert_allclose(einderiv.hessian_diag(source, "b")(a=a, b=b), expected, atol=1e-12)
    near = {"a": a, "b": b + 800}  # central differences where the exps are ordinary numbers
    assert_matches_fd(einderiv.grad(source, "b"), lambda **v: reference(v["a"], v["b"]), near, "b")


def test_gaussian_mixture_with_its_weights_apart_is_finite():
    jax, jnp = jax_float64()
    from jax.scipy.special import logsumexp

    source = "L = -sum_n(log(sum_k(exp(lw_k) exp(-0.5 (x_n - mu_k)^2 / s2))))"
    gen = np.random.default_rng(0)
    x = 3 * gen.normal(size=4) + np.array([0, 0, 60, -60])
    mu, lw, s2 = gen.normal(size=3), np.log([0.2, 0.3, 0.5]), np.array(1.0)

    def reference(mu):
        return -jnp.sum(logsumexp(lw[None, :] - 0.5 * (x[:, None] - mu[None, :]) ** 2 / s2, axis=1))

    arrays = {"x": x, "mu": mu, "lw": lw, "s2": s2}
    np.testing.assert_allclose(einderiv.evaluate(source, **arrays), reference(mu), rtol=1e-13)
    np.testing.assert_allclose(einderiv.hessian(source, "mu")(**arrays), jax.hessian(reference)(mu), atol=1e-10)


@pytest.mark.parametrize(
    "source, name",
    [
        ("f = xᵀAx", "Ax"),
        ("f = x'Ax", "Ax"),
        ("f = x^T Ax", "Ax"),
        ("f = aᵀXb", "Xb"),
        ("L = (y - Xw)^T(y - Xw)", "Xw"),
        ("f = x^T Ax + c", "Ax"),
    ],
)
def test_a_product_run_together_in_matrix_notation_is_an_error(source, name):
    """A hunter's find: ``xᵀAx``, as pasted from a book, read ``Ax`` as one matrix: ``diff``
    printed ``df_i/dx_k = Ax_ki``, exit 0 (evaluation then asked for an input named Ax)."""
    with pytest.raises(einderiv.ParseError) as info:
        einderiv.compile(source)
    assert f"'{name}' is one name" in str(info.value) and f"'{name[0]} {name[1]}'" in str(info.value)
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "source",
    [
        "f = x^T A x",
        "f = x^T Sigma x",
        "Q = X Wq; f = tr(Q^T Q)",
        "f = 1e3 x^T A x",
        # a reviewer's list: names a statement defines, and names beside a transpose that a product goes on
        "Kx = A x; f = Kx^T Kx",
        "Ax = A x; r = Ax - b; f = r^T r",
        "f = y^T inv(Ky) y + logdet(Ky)",
        "f = y' Ky y",
        "f = x^T Hx x + h^T x",
    ],
)
def test_names_of_two_letters_stand_where_nothing_says_they_are_products(source):
    einderiv.compile(source)


@pytest.mark.parametrize(
    "source, letter",
    [
        ("r_j = sum_i(A_ij) x_i", "i"),
        ("r_i = mean_j(A_ij) x_j", "j"),
        ("f = sum_i(x_i y_i) z_i", "i"),
        ("f = sum_j(x_i) y_j", "j"),
        ("f = logsumexp_k(z_k) y_k", "k"),
        # a delta-only letter beside a tensor with it stays rule 6's, not renamed apart (a reviewer's find)
        ("f_j = x_j sum_k(delta_jk) w_k", "k"),
        ("f = x_i sum_k(w_k) delta_ik", "k"),
    ],
)
def test_a_reduction_beside_a_factor_with_its_letter_warns(source, letter):
    """A hunter's find: rule 6 warned for ``exp(x_i y_i) z_i`` but not for ``sum_i(A_ij) x_i``
    (colsum(A) times sum(x), where x @ A is almost always meant)."""
    with pytest.warns(einderiv.EinderivWarning, match=f"index '{letter}' is summed by"):
        einderiv.compile(source)


@pytest.mark.parametrize(
    "source",
    ["f = (x_n - mean_n(x_n))^2 t_n", "f = -y_k log(softmax_k(z_k))", "f_n = sum_n(x_n) y_n", "f = sum_i(x_i y_i)"],
)
def test_reductions_as_meant_do_not_warn(source):
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        einderiv.compile(source)


@pytest.mark.parametrize(
    "source, message",
    [
        ("f = log10(x_i)", "write log(...) / log(10)"),
        ("f = Sum_i(x_i)", "lower case, sum_i(...)"),
        ("f = Exp(x_i)", "lower case, exp(...)"),
        ("Y = A.T", "not NumPy's X.T"),
        ("f = x.dot(y)", "not NumPy's x.dot(y)"),
        ("f = x_i .* y_i", "side by side (x_i y_i)"),
        ("Y = A^{-1}", "A^-1 in matrix notation"),
    ],
)
def test_spellings_from_elsewhere_say_what_to_write(source, message):
    """A hunter's list: ``log10(x)`` suggested log1p and ``expm1(x)`` exp (each a silently other
    function if followed), ``Sum_i`` and ``Exp`` a product or the list of every function, and
    ``A.T``, ``x.dot(y)`` and ``x_i .* y_i`` only "unexpected character '.'"."""
    with pytest.raises(einderiv.ParseError) as info:
        einderiv.parse(source)
    assert message in str(info.value)


def test_diff_and_check_take_of_on_the_command_line():
    """The README says ``--of NAME`` picks a program's statement; only ``eval`` took it."""
    program = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = s_n s_n"
    result = run_cli("diff", program, "--wrt", "w", "--of", "s")
    assert result.returncode == 0 and "ds_n/dw_i = " in result.stdout
    result = run_cli("diff", "z_n = X_nd w_d; c = z_n z_n; L = c^2", "--each", "w", "--of", "c")
    assert result.returncode == 0 and "dc/dw_i = 2 z_n X_ni" in result.stdout, result.stdout
    result = run_cli("check", program, "--wrt", "w", "--of", "z")
    assert result.returncode == 0 and "dz_n/dw_i = X_ni" in result.stdout


@pytest.mark.parametrize("source", ["Y = B + A^0", "Y = A^0 B"])
def test_a_zeroth_power_in_matrix_notation_is_an_error(source):
    """A hunter's find: ``Y = B + A^0`` with no ranks read A as a scalar, B + 1, where NumPy's
    matrix_power(A, 0) is the identity: a reading chosen to avoid an error."""
    with pytest.raises(einderiv.EinderivError, match=r"'\^0' is the identity for a matrix and 1 for a scalar"):
        einderiv.compile(source, notation="matrix")


def test_a_shared_factor_comes_out_whole_or_not_at_all():
    """A reviewer's find: ``X_nd U_dk v_k - mean_m(X_md U_dk v_k)`` was factored by U alone, a
    residual over n, d and k (N x D x K, 200x slower at N = 1000, D = 100, and its memory N D^2).
    Every tensor the terms share comes out, leaving the centred data (N x D); a residual larger
    than any of its tensors is not formed."""
    gen = np.random.default_rng(3)
    X0, U, v = gen.normal(size=(6, 3)), gen.normal(size=(3, 2)), gen.normal(size=2)
    C = (X0 - X0.mean(axis=0)) @ U
    source = "L = mean_n((X_nd U_dk v_k - mean_m(X_md U_dk v_k))^2)"
    gradient = einderiv.grad(source, "v")
    assert all(len(step.contraction.poly.indices) <= 2 for step in gradient.line.steps if step.target.startswith("_r"))
    np.testing.assert_allclose(gradient(X=X0 + 1e8, U=U, v=v), 2 * C.T @ C @ v / 6, rtol=1e-7)
    np.testing.assert_allclose(einderiv.hessian(source, "v")(X=X0 + 1e8, U=U, v=v), 2 * C.T @ C / 6, rtol=1e-7)


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f = (x_i - mean_j(x_j))^2 (y_i - mean_j(y_j))^2", ["x", "y"]),
        ("f = (x_i - mean_j(x_j))^2 (x_i - mean_j(y_j))^2", ["y", "x"]),
        ("f = sum_i((x_i + a)^2) u_i", ["a", "a"]),
        ("f = exp(-0.5 (x_i - mu_i)(x_i - mu_i))", ["x"]),
    ],
)
def test_printed_differences_read_back_where_counts_and_squares_are_involved(source, wrt):
    """A reviewer's find: mixed derivatives written with their differences in place printed
    ``mean_i(delta_il)`` beside the groups, which read back failed to size ("the size of index
    'p#1#' cannot be inferred").  A text that does not read back is not printed; and a group
    written twice is a square only where that sums nothing (``(x_k - mu_k)(x_k - mu_k)`` in the
    exp contracts k, its square would not)."""
    derivative = einderiv.diff(source, wrt)
    arrays = {name: rng.uniform(0.5, 1.5, size=(4,) * rank) for name, rank in derivative.ranks.items()}
    np.testing.assert_allclose(_read_back(derivative, arrays), derivative(**arrays), rtol=1e-12, atol=1e-12)


def test_several_gradients_print_one_program():
    """A reviewer's find: each gradient of ``grad(src, [x, y])`` named its residual ``r``, so the
    text of the two was no program (``'r' is defined twice``); a statement two gradients share
    (``c_n`` of a program) printed twice too."""
    for source in (
        "f = (x_i - mean_j(x_j)) A_ik (x_k - mean_j(x_j)) + (y_i - mean_j(y_j)) A_ik (y_k - mean_j(y_j))",
        "c_n = x_n - y_n; f = exp(c_n) c_n",
    ):
        gradients = einderiv.grad(source, ["x", "y"])
        read = einderiv.compile(str(gradients))
        arrays = {name: rng.uniform(0.5, 1.5, size=(4,) * rank) for name, rank in gradients[1].ranks.items()}
        np.testing.assert_allclose(read(**{k: arrays[k] for k in read.ranks}), gradients[1](**arrays), rtol=1e-12)


def test_the_json_derivative_uses_the_letters_of_its_indices():
    """A reviewer's find: the JSON's ``derivative`` read ``df/dx_l`` while its ``indices`` said n."""
    from einderiv.reports import derivative_json

    report = derivative_json(einderiv.diff("f = (x_i - mean_j(x_j)) A_ik (x_k - mean_j(x_j))", "x"))
    assert report["derivative"].startswith(f"df/dx_{report['indices'][0]} = ")


@pytest.mark.parametrize(
    "source", ["m = w_n x_n / sum_n(w_n)", "E = x_k exp(z_k) / sum_k(exp(z_k))", "f = tr(Wt)", "f = x' Mt x + tr(Mt)"]
)
def test_weighted_means_and_names_beside_functions_are_read_quietly(source):
    """Reviewer's finds: a weighted mean warned as a slip (its n is contracted between w and x),
    and ``tr(Wt)`` was refused as a product run together (the name pattern backtracked)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        einderiv.compile(source)


def test_a_negated_difference_is_named_too():
    """A reviewer's find: in ``exp(-(X_nd - Z_md)(X_nd - Z_md))`` the first difference is negated,
    so it was not named, and the Hessian by Z multiplied it out: 7e-4 off at an offset of 1e6 (on
    the base too).  The printed gradient then read back 7e-3 off; both now match jax."""
    jax, jnp = jax_float64()
    gen = np.random.default_rng(0)
    X0, Z0 = gen.uniform(0.5, 1.5, (5, 5)), gen.uniform(0.5, 1.5, (3, 5))

    def reference(Z):
        return jnp.exp(-jnp.sum((X0[:, :, None] - Z.T[None, :, :]) ** 2))

    source = "f = exp(-(X_nd - Z_md)(X_nd - Z_md))"
    X, Z = X0 + 1e6, Z0 + 1e6
    gradient, hessian = einderiv.grad(source, "Z"), einderiv.hessian(source, "Z")
    want = np.asarray(jax.grad(reference)(jnp.asarray(Z0)))
    np.testing.assert_allclose(gradient(X=X, Z=Z), want, atol=1e-8 * np.abs(want).max())
    np.testing.assert_allclose(_read_back(gradient, {"X": X, "Z": Z}), want, atol=1e-8 * np.abs(want).max())
    want = np.asarray(jax.hessian(reference)(jnp.asarray(Z0)))
    np.testing.assert_allclose(hessian(X=X, Z=Z), want, atol=1e-8 * np.abs(want).max())


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "L = log(sum_k(exp(A_ki x_i) exp(B_ki)))",
            lambda A, x, B: np.log((np.exp(A @ x)[:, None] * np.exp(B)).sum(0)).sum(),
        ),
        ("L_j = log(sum_k(exp(A_kj x_j) exp(B_kj)))", lambda A, x, B: np.log((np.exp(A * x) * np.exp(B)).sum(0))),
    ],
)
def test_merged_exps_keep_their_own_summed_letters(source, expected):
    """The exps merged by log_of_exp_products: a letter one exponent sums (i in exp(A_ki x_i))
    stays summed there beside the other's free i; a left-hand side's j is never summed."""
    gen = np.random.default_rng(0)
    A, x, B = gen.normal(size=(3, 4)), gen.normal(size=4), gen.normal(size=(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)  # the first is rule 6's slip, read as written
        np.testing.assert_allclose(einderiv.evaluate(source, A=A, x=x, B=B), expected(A, x, B), rtol=1e-13)


@pytest.mark.parametrize(
    "source, name, column",
    [
        ("f = log^2 x_i", "log", 5),  # printed df/dx_j = log^2: a scalar named log, squared
        ("f = x_i log", "log", 9),
        ("f = (log) x_i", "log", 6),
        ("f = step/2 x_i", "step", 5),
        ("f = x_i + exp", "exp", 11),
        ("sqrt = 2 x_i; f = sqrt", "sqrt", 1),
    ],
)
def test_a_function_name_alone_is_never_a_scalar(source, name, column):
    """A reviewer's list, left open last time: where no factor follows it, a function's name was
    still a scalar input, so ``f = log^2 x_i`` (meant: log(x_i)^2) printed ``df/dx_j = log^2``
    with exit status 0.  A bare function name is now an error wherever it stands; a tensor with
    indices (``sign_i``) keeps the name."""
    with pytest.raises(einderiv.ParseError, match=f"'{name}' is a function, not an input") as caught:
        einderiv.compile(source)
    assert caught.value.column == column
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    np.testing.assert_allclose(einderiv.evaluate("f = sign_i x_i", sign=np.ones(2), x=np.arange(2.0)), 1.0)


@pytest.mark.parametrize(
    "source, message",
    [
        ("L = mean((y - X w)^2)", "'^2' of a column vector"),  # read as y a matrix, w a scalar
        ("L = sum((X w - y)^2)", "'^2' of a column vector"),
        ("f = sum(x^2)", "'^2' of a column vector"),  # read as the sum of a scalar x^2
        ("f = a^T x / b^T x", "a denominator of more than one factor needs brackets"),  # b a scalar
        ("f = x^T A x / x^T x", "a denominator of more than one factor needs brackets"),  # x a scalar, f a matrix
    ],
)
def test_rank_inference_never_repairs_a_reading_into_another_meaning(source, message):
    """A hunter's find: where the conventional ranks did not type-check, rank inference took the
    cheapest reading that did, so ``mean((y - X w)^2)`` was read with y a matrix and w a scalar
    (``^2`` a matrix power) and ``a^T x / b^T x`` with b a scalar, exit status 0.  Inside
    ``sum``/``mean``, or where the other reading makes a transposed name a scalar, the
    conventional reading's error is raised, naming the ranks that would type-check.  (A name
    made a scalar inside a sum is still a repair: ``sum(c * x)`` means c a scalar, and so, read
    alike, does ``sum(y log(sigmoid(X w)))``, whose ``read as:`` line says so.)"""
    with pytest.raises(einderiv.EinderivError, match=re.escape(message)) as caught:
        einderiv.compile(source)
    assert "declare ranks=" in str(caught.value)
    result = run_cli("diff", source, "--wrt", "w")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    gen = np.random.default_rng(0)
    X, y, w = gen.normal(size=(5, 3)), gen.normal(size=5), gen.normal(size=3)
    spelled = "L = mean((y - X w) .^ 2)" if "mean" in source else "L = sum((X w - y) .^ 2)"
    got = einderiv.evaluate(spelled, X=X, y=y, w=w)
    want = np.mean((y - X @ w) ** 2) if "mean" in source else np.sum((X @ w - y) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    repairs = (
        ("y = a X w + b", {"a": 0, "X": 2, "w": 1, "b": 1}),
        ("f = tr(s)", {"s": 2}),
        # a reviewer's list: scalar coefficients inside sum/mean still repair the reading
        ("f = sum(c * x)", {"c": 0, "x": 1}),
        ("f = mean(alpha * (y - X w).^2)", {"alpha": 0, "y": 1, "X": 2, "w": 1}),
        ("f = sum((x - mu).^2 / (2 s^2))", {"x": 1, "mu": 1, "s": 0}),
    )
    for repaired, ranks in repairs:
        assert einderiv.compile(repaired, notation="matrix").ranks == ranks  # repairs that mean what is written


@pytest.mark.parametrize(
    "source, column",
    [
        ("f = x_i x_i / 2N", 15),
        ("f = exp(-x_i x_i / 2s^2)", 20),
        ("L = 1/2N (y_n - X_nd w_d)^2", 7),
        ("f = x^T x / 2N", 13),  # matrix notation read N as a matrix there
        ("f = exp(-x^T x / 2s^2)", 18),
    ],
)
def test_a_number_glued_to_a_name_after_a_division_is_an_error(source, column):
    """A hunter's find: ``L = 1/2N (y_n - X_nd w_d)^2`` was (1/2) N times the sum of squares
    (19.36 for 0.774 at N = 5) and ``exp(-x^T x / 2s^2)`` was exp(-x.x s^2 / 2): '/' takes the
    number alone, where textbooks mean 1/(2N)."""
    with pytest.raises(einderiv.ParseError, match="divides by .* alone, then multiplies by") as caught:
        einderiv.compile(source)
    assert caught.value.column == column
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    x = np.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(einderiv.evaluate("f = x_i x_i / (2 N)", x=x, N=5.0), x @ x / 10, rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("f = 1/2 x_i x_i", x=x), x @ x / 2, rtol=1e-15)  # a half, spaced
    np.testing.assert_allclose(einderiv.evaluate("f = x_i x_i / 2 * N", x=x, N=5.0), x @ x * 2.5, rtol=1e-15)


@pytest.mark.parametrize(
    "source",
    ["u_i = x_i / sqrt(x_i x_i)", "u_i = x_i (x_i x_i)^(-1/2)", "f_i = x_i / (x_i x_i)"],
)
def test_a_left_hand_side_letter_written_twice_in_a_norm_warns(source):
    """A hunter's find: ``u_i = x_i / sqrt(x_i x_i)`` is sign(x) (the left-hand side's i is free
    everywhere, rule 1), where the reader means x / |x|; the scalar form ``f = x_i exp(x_i x_i)``
    was warned of (rule 6), this one not.  It is read as written, with a warning that names the
    sum; only the shapes of a norm warn (a reviewer found a first version warning of
    ``exp(-x_i x_i / 2)`` and of einderiv's own gradients pasted back)."""
    with pytest.warns(einderiv.EinderivWarning, match="an index of the left-hand side, so .* sum_j"):
        compiled = einderiv.compile(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)
        compiled_jacobian = einderiv.jacobian(source, "x")
    x = np.array([0.3, -1.2, 2.0])
    as_written = {"u": np.sign(x), "f": 1 / x}[source[0]]
    np.testing.assert_allclose(compiled(x=x), as_written, rtol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error", einderiv.EinderivWarning)
        np.testing.assert_allclose(
            einderiv.evaluate("u_i = x_i / sqrt(sum_j(x_j x_j))", x=x), x / np.linalg.norm(x), rtol=1e-15
        )
        np.testing.assert_allclose(einderiv.evaluate("u_i = x_i x_i", x=x), x * x, rtol=1e-15)  # top level: a square
        einderiv.compile("f_i = sum_j(A_ij x_i x_i)")  # inside a reduction's own sum: as meant
        einderiv.compile("y_i = sigmoid(w_i x_i)")  # two tensors: plainly elementwise
        for plain in ("g_i = x_i exp(-x_i x_i / 2)", "y_i = x_i / (1 + x_i x_i)", "g_j = x_j / sqrt(x_j x_j + 1)"):
            einderiv.compile(plain)  # elementwise formulas, not norms
        y = einderiv.evaluate("y = x .* exp(-(x .* x) / 2)", x=x)  # matrix notation's .* says elementwise
        np.testing.assert_allclose(y, x * np.exp(-x * x / 2), rtol=1e-15)
        derivative = str(compiled_jacobian)  # a derivative einderiv printed reads back without the warning
        np.testing.assert_allclose(einderiv.compile(derivative)(x=x), compiled_jacobian(x=x), rtol=1e-14, atol=1e-12)


@pytest.mark.parametrize(
    "program, one_statement, wrt",
    [
        ("p_n = 1 - exp(-exp(z_n)); L = -log(1 - p_n)", "L = -log(1 - (1 - exp(-exp(z_n))))", "z"),
        ("q_n = 1 - z_n; L = -log(1 - q_n)", "L = -log(1 - (1 - z_n))", "z"),
    ],
)
def test_one_minus_an_intermediate_that_is_one_minus_something(program, one_statement, wrt):
    """A hunter's find: ``log(1 - p)`` with ``p = 1 - exp(-exp(z))`` (a cloglog GLM, a censored
    survival time) was log1p(-p) of the rounded p in the program: 1% off in value at z = 3.5, the
    Hessian 36% off and inf from 3.7, where the one statement's 1 - (1 - g) is g, exact.  The
    program now reads the intermediate through, and prints what the one statement prints."""
    z = np.array([0.5, 3.0, 3.5, 3.7, 5.0]) if "exp" in program else np.array([1e-20, 1e-10, 0.5, 3.0])
    for source in (program, one_statement):
        gradient, hessian = einderiv.grad(source, wrt), einderiv.hessian(source, wrt)
        if "exp" in program:  # L = sum exp(z): its gradient and Hessian diagonal are exp(z)
            want_value, want_gradient, want_diagonal = np.exp(z).sum(), np.exp(z), np.exp(z)
        else:  # L = -sum log(z)
            want_value, want_gradient, want_diagonal = -np.log(z).sum(), -1 / z, 1 / z**2
        np.testing.assert_allclose(einderiv.evaluate(source, z=z), want_value, rtol=1e-14)
        np.testing.assert_allclose(gradient(z=z), want_gradient, rtol=1e-14)
        np.testing.assert_allclose(np.diag(hessian(z=z)), want_diagonal, rtol=1e-14)
    assert str(einderiv.grad(program, wrt)).splitlines()[-1] == str(einderiv.grad(one_statement, wrt))


def test_a_cloglog_glm_program_against_jax():
    """The hunter's cloglog GLM, ``p = 1 - exp(-exp(X w))``: value 36.084 for 36.189 and the
    Hessian's first entry -250.9 for +91.9 (sign flipped) at z = 3.61."""
    jax, jnp = jax_float64()
    gen = np.random.default_rng(4)
    X, y, w = gen.standard_normal((3, 2)), np.array([0.9, 0.1, 0.3]), np.array([3.0, -2.1])
    source = "z_n = X_nd w_d; p_n = 1 - exp(-exp(z_n)); L = -y_n log(p_n) - (1 - y_n) log(1 - p_n)"

    def reference(w):
        z = jnp.asarray(X) @ w
        return jnp.sum(-y * jnp.log(-jnp.expm1(-jnp.exp(z))) + (1 - y) * jnp.exp(z))

    np.testing.assert_allclose(einderiv.evaluate(source, X=X, y=y, w=w), reference(jnp.asarray(w)), rtol=1e-13)
    want = np.asarray(jax.grad(reference)(jnp.asarray(w)))
    np.testing.assert_allclose(einderiv.grad(source, "w")(X=X, y=y, w=w), want, rtol=1e-12)
    want = np.asarray(jax.hessian(reference)(jnp.asarray(w)))
    np.testing.assert_allclose(einderiv.hessian(source, "w")(X=X, y=y, w=w), want, rtol=1e-12)


@pytest.mark.parametrize(
    "source, column", [("f = Σ_i x_i^2", 5), ("f = Σ_i Σ_j A_ij x_i x_j", 5), ("g = 1\nf = Σ_k x_k", 5)]
)
def test_a_sigma_with_one_index_and_no_brackets_is_an_error(source, column):
    """A hunter's find: ``Σ_i x_i^2`` was a vector named Sigma times x_i^2 (its gradient printed
    ``2 Sigma_j x_j``), where ``Σ_i(x_i^2)`` is the sum; a matrix named Σ (a covariance, two
    indices) keeps the name."""
    with pytest.raises(einderiv.ParseError, match="reads as a vector named Sigma") as caught:
        einderiv.compile(source)
    assert caught.value.column == column
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    x, S = np.array([0.3, -1.2, 2.0]), np.diag([1.0, 2.0, 3.0])
    np.testing.assert_allclose(einderiv.evaluate("f = Σ_i(x_i^2)", x=x), x @ x, rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("f = x_i Σ_ij x_j", x=x, Sigma=S), x @ S @ x, rtol=1e-15)


@pytest.mark.parametrize(
    "source",
    ["L = (y_i - X_ij w_j) (y_i - X_ik w_k) / n", "L = (y - X w)^T (y - X w) / n", "L = (y_i - X_ij w_j)^2 / n"],
)
def test_one_residual_written_with_two_summed_letters_is_computed_once(source):
    """The two copies of ``(y_i - X_ij w_j) (y_i - X_ik w_k)`` were two residual arrays (two
    N x D products), named apart by their summed letters, and the gradient printed
    ``-(y_i - X_ik w_k + y_i - X_ij w_j) X_il / n``; now one array, and the text the square prints."""
    gradient = einderiv.grad(source, "w")
    assert str(gradient).endswith("= -2 (y_i - X_ij w_j) X_il / n") or str(gradient).endswith(
        "= -2 (y_i - X_ij w_j) X_ik / n"
    ), str(gradient)
    steps = [s.target for s in (gradient._line or gradient.line).steps]
    assert sum(t.startswith("_r") for t in steps) == 1, steps
    gen = np.random.default_rng(0)
    X, y, w = gen.normal(size=(6, 3)), gen.normal(size=6), gen.normal(size=3)
    np.testing.assert_allclose(gradient(X=X, y=y, w=w, n=6.0), -2 * X.T @ (y - X @ w) / 6, rtol=1e-13)


@pytest.mark.parametrize(
    "source, hint",
    [
        ("f = \\|x\\|^2", "LaTeX's norm: write norm2(x)"),
        ("f = x_i\\,x_i", "drop LaTeX's spacing commands"),
        ("f = x_i \\", "a line needs no continuation mark"),
        ("f = A \\ b", "there is no left division"),
    ],
)
def test_a_backslash_gets_the_hint_for_what_it_is(source, hint):
    """A hunter's find: every backslash that starts no LaTeX word said "there is no left
    division", also for LaTeX's norm \\| and spacing \\, and a line-continuation backslash."""
    with pytest.raises(einderiv.ParseError, match=re.escape(hint)):
        einderiv.compile(source)


@pytest.mark.parametrize(
    "source",
    [
        "f = x_i^-1/2",
        "f = (x_i x_i)^1/2",
        "f = (2 p)^-3/2 x_i",
        "L = D^-1/2 A D^-1/2",  # matrix notation: read as inv(D)/2 A inv(D)/2 before
        "f = (x^T x)^1/2",
        "f = x_i x_i / 2(s + 1)",  # (x.x/2)(s + 1) before
        "f = x^T x / 2(s + 1)",
        "f = a / -2b x_i",
    ],
)
def test_a_fraction_in_an_exponent_or_a_glued_bracket_after_a_division_is_an_error(source):
    """A hunter's finds: ``(2 pi)^-3/2 det(S)^-1/2`` (a Gaussian's normaliser, MML eq. 6.63) was
    ((2 pi)^-3)/2 det(S)^-1 / 2, 8.11e-6 for 4.86e-3; ``D^-1/2 A D^-1/2`` was D^-1 A D^-1 / 4;
    ``x_i x_i / 2(s + 1)`` was (x.x/2)(s + 1): '^' and '/' take the number alone."""
    with pytest.raises(einderiv.ParseError, match="alone, then"):
        einderiv.compile(source)
    result = run_cli("diff", source, "--wrt", "x")
    assert result.returncode != 0 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    x = np.array([0.3, 1.2, 2.0])
    np.testing.assert_allclose(einderiv.evaluate("f = x_i^2/2", x=x), (x**2 / 2).sum(), rtol=1e-15)  # as written
    np.testing.assert_allclose(einderiv.evaluate("f = x_i^(-1/2)", x=x), (x**-0.5).sum(), rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("f = x_i x_i / (2 (s + 1))", x=x, s=1.5), x @ x / 5, rtol=1e-15)


@pytest.mark.parametrize("name", ["delta", "sum", "softmax", "inv", "exp"])
def test_a_tangent_is_never_named_like_the_language(name):
    """A hunter's find: ``hvp(src, "w", v="delta")`` was accepted and its evaluation failed with
    a raw IndexError; ``v="sum"`` printed a derivative whose text does not parse."""
    source = "L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)"
    with pytest.raises(einderiv.DifferentiationError, match=f"cannot be named '{name}'"):
        einderiv.hvp(source, "w", v=name)
    with pytest.raises(einderiv.DifferentiationError, match=f"cannot be named '{name}'"):
        einderiv.vjp("y_n = X_nd w_d", "w", u=name)
    gen = np.random.default_rng(0)
    X, y, w, t = gen.normal(size=(6, 3)), gen.random(6), gen.normal(size=3), gen.normal(size=3)
    s = 1 / (1 + np.exp(-X @ w))
    got = einderiv.hvp(source, "w", v="t")(X=X, y=y, w=w, t=t)
    np.testing.assert_allclose(got, X.T @ (s * (1 - s) * (X @ t)), rtol=1e-12)


@pytest.mark.parametrize(
    ("source", "wrt", "expected"),
    [
        # a Gaussian's negative log-likelihood with T samples: T a scalar, y and w vectors (y was a matrix)
        (
            "L = T log(s2) + (y - X w)^T (y - X w) / s2",
            "w",
            lambda a: -2 * a["X"].T @ (a["y"] - a["X"] @ a["w"]) / a["s2"],
        ),
        (
            "f = N log(sigma) + (y - X w)^T (y - X w) / (2 sigma^2)",
            "w",
            lambda a: -a["X"].T @ (a["y"] - a["X"] @ a["w"]) / a["sigma"] ** 2,
        ),
        # N/2 logdet(S) + ...: x and mu vectors (they were scalars, under a transposed (x - mu))
        (
            "f = N/2 logdet(S) + 1/2 (x - mu)^T S^-1 (x - mu)",
            "mu",
            lambda a: -0.5 * (np.linalg.inv(a["S"]) + np.linalg.inv(a["S"]).T) @ (a["x"] - a["mu"]),
        ),
        # the SVM's constant C (w was a matrix, y a scalar)
        (
            "f = 0.5 w^T w + C sum(relu(1 - y .* (X w)))",
            "w",
            lambda a: a["w"] - a["C"] * a["X"].T @ (a["y"] * (1 - a["y"] * (a["X"] @ a["w"]) > 0)),
        ),
    ],
)
def test_an_upper_case_scalar_is_a_scalar_where_a_matrix_does_not_fit(source, wrt, expected):
    """A hunter's find: an upper-case count or constant (N, T, C) was read as a matrix, and the
    lower-case names then repaired into matrices or scalars so that the text type-checked:
    ``T log(s2) + (y - X w)^T (y - X w) / s2`` had y a matrix and w a scalar, and ``check``
    rejected the textbook gradient. Making an upper-case name a scalar is now cheaper than making
    a lower-case one a matrix, and a transposed group of names (``(x - mu)^T``) is never a scalar."""
    gen = np.random.default_rng(4)
    n, d = 7, 3
    S = gen.normal(size=(d, d)) + 3 * np.eye(d)
    arrays = {
        "T": 7.0,
        "N": 7.0,
        "C": 0.7,
        "s2": 1.3,
        "sigma": 0.8,
        "X": gen.normal(size=(n, d)),
        "y": gen.normal(size=n),
        "w": gen.normal(size=d),
        "S": S @ S.T,
        "x": gen.normal(size=d),
        "mu": gen.normal(size=d),
    }
    gradient = einderiv.grad(source, wrt)
    used = {k: v for k, v in arrays.items() if k in gradient.inputs}
    np.testing.assert_allclose(gradient(**used), expected(arrays), rtol=1e-10, atol=1e-12)
    assert len(einderiv.diff(source, wrt).indices) == 1


@pytest.mark.parametrize(
    "source",
    ["f = exp(-x_i x_i / 2 s^2)", "f = exp(-x^T x / 2 s^2)", "f = x_i x_i / 2 s_{a}^2", "f = (x_i x_i) / 2 s²"],
)
def test_a_power_of_a_name_after_a_spaced_number_denominator_is_an_error(source):
    """A hunter's find: ``exp(-x_i x_i / 2 s^2)`` was exp(-x.x s^2 / 2), 0.0027 for a Gaussian
    kernel's 0.311: '/' takes the number alone.  A number over a number stays a coefficient."""
    with pytest.raises(einderiv.ParseError, match=re.escape("alone, then multiplies by s")):
        einderiv.compile(source)
    x, s = np.array([0.5, -1.0, 2.0]), 1.5
    np.testing.assert_allclose(einderiv.evaluate("f = 1/2 s^2 x_i x_i", x=x, s=s), s**2 * (x @ x) / 2, rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("f = x_i x_i / 2 s", x=x, s=s), (x @ x) / 2 * s, rtol=1e-15)
    np.testing.assert_allclose(
        einderiv.evaluate("f = exp(-x_i x_i / (2 s^2))", x=x, s=s), np.exp(-(x @ x) / (2 * s**2)), rtol=1e-15
    )


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("f = x / 2 exp(y)^2", "exp(y)"),
        ("f_i = x_i / 2 exp(y_i) ^ 2", "exp(y_i)"),
        ("f = exp(-x_i x_i / 2 sqrt(s)^2)", "sqrt(s)"),
        ("f = x^T x / 2 exp(s)²", "exp(s)"),
    ],
)
def test_a_power_of_a_call_after_a_spaced_number_denominator_is_an_error(source, shown):
    """Left open by the last session: ``x / 2 exp(y)^2`` was x exp(y)^2 / 2, where a name's power in
    that place was already an error.  A number over a number, or no power, stays as written."""
    with pytest.raises(einderiv.ParseError, match=re.escape(f"then multiplies by {shown}^...")):
        einderiv.compile(source)
    x, y = 0.7, -0.4
    np.testing.assert_allclose(einderiv.evaluate("f = 1/2 exp(y)^2", y=y), np.exp(y) ** 2 / 2, rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("f = x / 2 exp(y)", x=x, y=y), x / 2 * np.exp(y), rtol=1e-15)
    np.testing.assert_allclose(
        einderiv.evaluate("f = x / (2 exp(y)^2)", x=x, y=y), x / (2 * np.exp(y) ** 2), rtol=1e-15
    )


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("f = x_1 x_2^2", "not a numbered entry such as x_1"),
        ("f = max(0, x_i)", "max(0, x) is relu(x)"),
        ("f = max(a, b)", "max(a, b) is (a + b + abs(a - b)) / 2"),
        ("f = sum(X, 1)", "sum takes one argument and reduces all of it"),  # matrix notation (sum()
        ("f = exp(x, 2)", "exp(...) takes one argument"),
        # a CLI hunt's finds: both said "an index list follows a name directly"
        ("f = x_{i", "the index list's '{' is not closed"),
        ("f = x_{i} + y_{j", "the index list's '{' is not closed"),
        ("f = x_\u2170", "an index is an ASCII letter or a Greek one, not '\u2170' (U+2170)"),
    ],
)
def test_numbered_entries_and_a_second_argument_get_a_hint(source, hint):
    """A hunter's find: these said only "unexpected character", or pointed at index lists."""
    with pytest.raises(einderiv.ParseError, match=re.escape(hint)):
        einderiv.compile(source)


def test_the_logdet_of_a_complex_matrix_is_numpys_log_of_its_determinant():
    """A hunter's find: ``log(det(A))`` (rewritten to logdet) of a complex A was the real
    log|det A| where det's sign had a positive real part, and else "the determinant is negative"."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def log_det(M):
        return jnp.log(jnp.linalg.det(M))

    gen = np.random.default_rng(1)
    for _ in range(6):
        A = gen.standard_normal((3, 3)) + 1j * gen.standard_normal((3, 3))
        want = np.log(np.linalg.det(A))
        for source in ("f = log(det(A))", "f = logdet(A)"):
            np.testing.assert_allclose(einderiv.evaluate(source, A=A), want, rtol=1e-12)
        # its derivative is the complex one, inv(A)^T, as jax's holomorphic gradient of log(det)
        want = jax.grad(log_det, holomorphic=True)(jnp.asarray(A))
        np.testing.assert_allclose(einderiv.grad("f = log(det(A))", "A")(A=A), want, rtol=1e-10)
    B = gen.standard_normal((3, 3))
    with pytest.raises(einderiv.EvaluationError, match="not real"):  # a real matrix keeps its error
        einderiv.evaluate("f = logdet(A)", A=-(B @ B.T) - np.eye(3))


def test_a_masked_array_with_masked_entries_is_an_error():
    """A hunter's find: the mask was dropped, and the masked entries were computed with (14 for
    NumPy's 10)."""
    with pytest.raises(einderiv.EvaluationError, match="masked array with masked entries"):
        einderiv.evaluate("f = x_i x_i", x=np.ma.masked_array([1.0, 2.0, 3.0], [0, 1, 0]))
    assert float(einderiv.evaluate("f = x_i x_i", x=np.ma.masked_array([1.0, 2.0, 3.0]))) == 14.0


def test_a_number_alone_is_a_claim_for_a_derivative_of_any_rank():
    """A hunter's find: ``--expect 0`` for a derivative with three indices was read as matrix
    notation and refused ("a matrix claim describes at most two"), where the README says a number
    alone is that constant in every entry."""
    result = einderiv.check("y_i = A_ij x_j", ["x", "x"], expect="0")
    assert result.ok and result.matches is True
    wrong = einderiv.check("y_i = A_ij x_j", ["x", "x"], expect="1")
    assert wrong.fd_ok and wrong.matches is False
    cli = run_cli("check", "y_i = A_ij x_j", "--wrt", "x", "--wrt", "x", "--expect", "0")
    assert cli.returncode == 0 and "matches" in cli.stdout


def test_shape_for_sizes_an_axis_by_its_letter_as_evaluation_does():
    """A property test's find: in ``t = A_ii; f_j = s + delta_ij`` no input axis is joined to j,
    which evaluation sizes by the letter i that the delta ties it to, written on A; ``shape_for``
    said "the size of index 'j' cannot be inferred" for a derivative that evaluated."""
    for A in (np.eye(3), np.eye(5)):
        for compiled in (
            einderiv.compile("t = A_ii; f_j = s + delta_ij"),
            einderiv.diff("t = A_ii; f_j = s + delta_ij", "s"),
        ):
            value = compiled(A=A, s=1.0)
            assert compiled.shape_for(A=A.shape, s=()) == np.shape(value) == (len(A),)


@pytest.mark.parametrize("flavour", ["python", "jax", "torch"])
def test_generated_logdet_of_a_complex_matrix_is_the_principal_log_of_its_determinant(flavour, tmp_path):
    """Generated code computes what einderiv does: logdet of a complex matrix is NumPy's
    log(det), in each flavour (it was NaN or log|det|)."""
    from einderiv.codegen import generate
    from tests.helpers import load_module

    if flavour != "python":
        library = pytest.importorskip(flavour)
        if flavour == "jax":
            library.config.update("jax_enable_x64", True)
    gen = np.random.default_rng(2)
    A = gen.standard_normal((3, 3)) + 1j * gen.standard_normal((3, 3))
    module = load_module(generate([einderiv.compile("f = logdet(A)")], flavour), tmp_path, f"logdet_{flavour}")
    value = module.f(
        A if flavour == "python" else (library.tensor(A) if flavour == "torch" else library.numpy.asarray(A))
    )
    np.testing.assert_allclose(np.asarray(value), np.log(np.linalg.det(A)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(value), einderiv.evaluate("f = logdet(A)", A=A), rtol=1e-12)


def test_a_delta_between_two_letters_no_tensor_carries_is_sized_through_its_named_end():
    """Differentiation renamed the j of b_j to l, leaving a step ``exp(delta_il)`` whose l only
    the delta carries: "the size of index 'l' cannot be inferred" for a derivative that prints
    and whose value evaluates (found by the hypothesis oracle).  Checked by central differences."""
    source = "t = sum_j(sum_j(-a_j)); f = -((b_i + delta_ij) exp(delta_ij) (0.5 t b_j))"
    gen = np.random.default_rng(5)
    a, b = gen.normal(size=4), gen.normal(size=4)

    def f(a):  # the outer sum_j of a number counts a's length
        return -np.sum((b[:, None] + np.eye(4)) * np.exp(np.eye(4)) * 0.5 * (-4 * a.sum()) * b[None, :])

    assert float(einderiv.evaluate(source, a=a, b=b)) == pytest.approx(f(a), rel=1e-12)
    step = 1e-6
    expected = [(f(a + step * e) - f(a - step * e)) / (2 * step) for e in np.eye(4)]
    np.testing.assert_allclose(einderiv.grad(source, "a")(a=a, b=b), expected, rtol=1e-7)


def test_a_count_is_sized_where_the_derivative_evaluates_through_named_residuals():
    """``f_j = (s + a_j)(1 + delta_jk)`` is (n + 1)(s + a_j) (k summed at the top, rule 5); its
    derivative printed rightly, ``(1 + delta_ll) delta_ij``, but evaluated through the program
    with ``s + a_j`` named, whose count had lost its size: "the size of index 'l' cannot be
    inferred" (found by the property tests at 20,000 examples).  Checked by central differences."""
    source = "f_j = (s + a_j)(1 + delta_jk)"
    gen = np.random.default_rng(3)
    s, a = np.float64(gen.normal()), gen.normal(size=3)

    def f(a):
        return (len(a) + 1) * (s + a)

    np.testing.assert_allclose(einderiv.evaluate(source, s=s, a=a), f(a), rtol=1e-14)
    step = 1e-6
    expected = np.stack([(f(a + step * e) - f(a - step * e)) / (2 * step) for e in np.eye(3)], axis=-1)
    # the program that names the sum itself: its delta_jk sizes k as r's axis (README rule), so the
    # count keeps that size wherever the chain rule moves it, and the printed text reads back
    program = "r_j = s + a_j; f_j = r_j (1 + delta_jk)"
    for text in (source, program):
        derivative = einderiv.diff(text, "a")
        np.testing.assert_allclose(derivative(s=s, a=a), expected, rtol=1e-8, err_msg=text)
        np.testing.assert_allclose(einderiv.jacobian(text, "a")(s=s, a=a), expected, rtol=1e-8, err_msg=text)
        np.testing.assert_allclose(einderiv.compile(str(derivative))(s=s, a=a), expected, rtol=1e-8, err_msg=text)


@pytest.mark.parametrize(
    "source",
    [
        "f = x_i x_i (1 + delta_ik) + w_j w_j (1 + delta_jk)",
        "f = A_ij (1 + delta_ik + delta_jk)",
        "f = A_ij (1 + delta_jk + delta_ik)",
    ],
)
def test_a_letter_deltas_join_to_letters_of_two_lengths_is_refused_not_sized_by_the_first(source):
    """k counts at a size only a delta gives it, and the deltas join it to two letters of
    different lengths (x of 3, w of 4; A of 3 x 4): no size of k is right.  Sizing k by its first
    join gave 4 x.x + 4 w.w and 5 or 6 sum(A), by the order of the terms (a reviewer's find in
    this stop's first version); it stays "cannot be inferred", or, where the deltas share a
    group with A (since 2026-12-05), "two sizes", naming A's axes."""
    gen = np.random.default_rng(0)
    arrays = {"x": gen.normal(size=3), "w": gen.normal(size=4), "A": gen.normal(size=(3, 4))}
    with pytest.raises(einderiv.EvaluationError, match="cannot be inferred|two sizes"):
        einderiv.evaluate(source, {k: v for k, v in arrays.items() if f"{k}_" in source})


@pytest.mark.parametrize(
    "source",
    [
        "u = (x_i - m)^2 (1 + delta_ik); f = u sum_j((w_j - m)^2 (1 + delta_ji))",
        "u = sum_i((x_i - m)^2 sum_k(1 + delta_ik)); v = sum_i((w_i - m)^2 sum_k(1 + delta_ik)); f = u v",
    ],
)
def test_a_letter_two_statements_write_at_two_lengths_counts_each_length_in_higher_derivatives(source):
    """f(m) = (K + 1) sum((x - m)^2) (J + 1) sum((w - m)^2), K and J the lengths of x and w.  Its
    value and gradient were right, but its Hessian stopped with "index 'i' has two sizes": the
    derivative's statement gathers the letters of both statements, and the count of i that the
    second derivative leaves was sized at x's length and at w's.  Now each term's count is of
    the axis that term carried its letter at.  Checked against the exact polynomial in m."""
    gen = np.random.default_rng(5)
    x, w, m = gen.normal(size=3), gen.normal(size=5), np.float64(0.3)
    P = np.polynomial.Polynomial
    squares = [(len(a) + 1) * P([a @ a, -2 * a.sum(), len(a)]) for a in (x, w)]
    f = squares[0] * squares[1]
    arrays = {"x": x, "w": w, "m": m}
    np.testing.assert_allclose(einderiv.evaluate(source, arrays), f(m), rtol=1e-12)
    for order in (1, 2, 3):
        derivative = einderiv.diff(source, ["m"] * order)
        expected = f.deriv(order)(m)
        np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-10, err_msg=str(order))
        printed = einderiv.compile(str(derivative))
        read_back = printed(**{name: arrays[name] for name in printed.inputs})
        np.testing.assert_allclose(read_back, expected, rtol=1e-10, err_msg=str(derivative))


OFFSET_CASES = [
    ("f = sum_n(x_n - m) sum_i(x_i - m)", lambda x, y, m: np.sum(x - m) ** 2),
    ("f = mean_n(x_n - m) mean_i(x_i - m)", lambda x, y, m: np.mean(x - m) ** 2),
    ("f = sum_n(x_n - m) sum_k(y_k - m)", lambda x, y, m: np.sum(x - m) * np.sum(y - m)),
    ("f = sum_n(x_n - m) sum_i(x_i - m) sum_k(x_k - m)", lambda x, y, m: np.sum(x - m) ** 3),
    ("f = mean_i((x_i - m) (mean_n(x_n - m) + 1))", lambda x, y, m: np.mean(x - m) * (np.mean(x - m) + 1)),
    ("f = exp(sum_n(x_n - m) sum_i(x_i - m) / 100)", lambda x, y, m: np.exp(np.sum(x - m) ** 2 / 100)),
    ("f = sum_kl((x_k - m) (x_l - m) (x_k + x_l - 2 m))", lambda x, y, m: 2 * np.sum(x - m) * np.sum((x - m) ** 2)),
    ("L = (mean_n(y_n) - m) (mean_n(x_n) - m)", lambda x, y, m: (np.mean(y) - m) * (np.mean(x) - m)),
]


@pytest.mark.parametrize("source, expected", OFFSET_CASES)
def test_products_of_sums_of_differences_keep_their_digits_at_data_offset_by_1e8(source, expected):
    """A product of sums (or means) of differences, ``sum_n(x_n - m) sum_i(x_i - m)``, is four
    products in normal form whose sum cancels when the data sit at 1e8: it was 128 for 82.6,
    and 0 for -751 in the cube (a meaning hunt's find).  Statements now evaluate through their
    differences named, as derivatives did, and a sum's or mean's argument counts as one.  The
    data and m are shifted together, so the exact value is the one at the unshifted data."""
    rng = np.random.default_rng(8)
    x, y, m = rng.normal(size=6), rng.normal(size=4), 0.3
    offset = 1e8
    arrays = {"x": x + offset, "y": y + offset, "m": np.float64(m + offset)}
    compiled = einderiv.compile(source)
    got = compiled(**{name: arrays[name] for name in compiled.inputs})
    np.testing.assert_allclose(got, expected(x, y, m), rtol=2e-7)


def test_a_derivative_through_a_product_of_means_of_differences_at_data_offset_by_1e8():
    """d/dm log(1 + mean_n(x_n - m) mean_i(x_i - m)) is -2 d / (1 + d^2), d the mean of x - m;
    at data offset by 1e8 it was 0.379 for 0.920 (the Hessian wholly off).  Checked against the
    closed forms at the unshifted data, and the printed texts read back at the offset."""
    rng = np.random.default_rng(8)
    x, m, offset = rng.normal(size=6), 0.3, 1e8
    d = np.mean(x - m)
    source = "f = log(1 + mean_n(x_n - m) mean_i(x_i - m))"
    arrays = {"x": x + offset, "m": np.float64(m + offset)}
    for order, expected in ((1, -2 * d / (1 + d * d)), (2, 2 * (1 - d * d) / (1 + d * d) ** 2)):
        derivative = einderiv.diff(source, ["m"] * order)
        np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-7)
        np.testing.assert_allclose(einderiv.compile(str(derivative))(**arrays), expected, rtol=1e-7)


def test_a_printed_hessian_with_differences_reads_back_at_data_offset_by_1e6():
    """The Hessian by x of the skewness ``mean_n((x_n - m)^3) / mean_n((x_n - m)^2)^1.5`` prints
    groups such as ``(x_k - m + x_l - m)``; read back at data offset by 1e6 it was 86x off (the
    derivative itself was right): a derivative-named statement was never evaluated through its
    differences.  jax's Hessian at the unshifted data is the reference (the function is shift
    invariant)."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(8)
    x, m, offset = rng.normal(size=6), 0.3, 1e6
    source = "L = mean_n((x_n - m)^3) / mean_n((x_n - m)^2)^1.5"
    expected = np.asarray(jax.hessian(lambda x: jnp.mean((x - m) ** 3) / jnp.mean((x - m) ** 2) ** 1.5)(x))
    arrays = {"x": x + offset, "m": np.float64(m + offset)}
    hessian = einderiv.hessian(source, "x")
    scale = np.abs(expected).max()
    np.testing.assert_allclose(hessian(**arrays), expected, rtol=0, atol=1e-7 * scale)
    np.testing.assert_allclose(einderiv.compile(str(hessian))(**arrays), expected, rtol=0, atol=1e-7 * scale)


@pytest.mark.parametrize(
    "source",
    ["f = lam/2 wᵀ w", "f = x^T x / 2 wᵀ w", "f = lam / 2 w^T w", "f = a / 2 S⁻¹"],
)
def test_a_transpose_or_inverse_mark_after_a_spaced_number_denominator_is_an_error(source):
    """``lam/2 w^T w`` was refused ('/' takes the 2 alone) while ``lam/2 wᵀ w``, the same text
    with the superscript T, was read as (lam / 2) w.w: ``x^T x / 2 wᵀ w`` gave (x.x / 2) w.w
    where (x.x) / (2 w.w) is as likely meant (a meaning hunt's find).  Both spellings are refused
    alike now; a number over a number stays a coefficient."""
    with pytest.raises(einderiv.ParseError, match="alone, then multiplies by"):
        einderiv.compile(source)
    w = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(einderiv.evaluate("f = 1/2 wᵀ w", w=w), (w @ w) / 2, rtol=1e-15)
    np.testing.assert_allclose(einderiv.evaluate("f = lam / (2 wᵀ w)", w=w, lam=3.0), 3.0 / (2 * (w @ w)), rtol=1e-15)


@pytest.mark.parametrize(
    "source, arrays, value",
    [
        ("f = sum_i(x_i + sum_j(delta_ij + y_j))", {"x": (3,), "y": (4,)}, None),
        ("f = sum_i(x_i + sum_j(delta_ij + y_j))", {"x": (3,), "y": (3,)}, lambda x, y: x.sum() + 3 + 3 * y.sum()),
        ("f = sum_i(x_i sum_j(delta_ij + y_j))", {"x": (3,), "y": (4,)}, None),
        ("f = sum_i(x_i sum_j(delta_ij + y_j))", {"x": (3,), "y": (3,)}, lambda x, y: x.sum() * (1 + y.sum())),
        ("f = x_i sum_j(delta_ij + y_j)", {"x": (3,), "y": (4,)}, None),
        ("f = sum_i(exp(x_i) sum_j(delta_ij + y_j))", {"x": (3,), "y": (4,)}, None),
        ("f = x_i / sum_j(delta_ij + y_j)", {"x": (3,), "y": (4,)}, None),
        ("f = sum_n(log(2 + sum_j(delta_nj y_j)) + z_n)", {"y": (4,), "z": (5,)}, None),
        (
            "f = sum_n(log(2 + sum_j(delta_nj y_j)) + z_n)",
            {"y": (5,), "z": (5,)},
            lambda y, z: (np.log(2 + y) + z).sum(),
        ),
        ("f = A_ij sum_k(delta_jk y_k)", {"A": (3, 4), "y": (4,)}, lambda A, y: (A @ y).sum()),
        ("f = A_ij sum_k(delta_ik y_k)", {"A": (3, 4), "y": (4,)}, None),
        # each its own index: x's i is summed inside the exp, the delta's i outside it
        (
            "f = exp(x_i x_i) sum_k(sum_j(delta_kj) + y_k)",
            {"x": (3,), "y": (4,)},
            lambda x, y: np.exp(x @ x) * (4 + y.sum()),
        ),
    ],
)
def test_a_letter_a_reduction_binds_is_one_size_with_the_delta_inside_it(source, arrays, value):
    """``sum_i(x_i + sum_j(delta_ij + y_j))`` binds one i (rule 2), x's and the delta's, and the
    delta makes it y's j: with x of 3 and y of 4 it read the delta as a 3 x 4 identity, silently
    (each term of the multiplied-out sum summed its own i; left open by the last session).  The
    letters each rule makes one index are now found as the rules say (``scopes``), so this is
    "two sizes", as ``x_i delta_ij y_j`` is; equal lengths give the closed form, and the
    gradient by x is checked by central differences."""
    gen = np.random.default_rng(12)
    made = {name: gen.normal(size=shape) for name, shape in arrays.items()}
    if value is None:
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            einderiv.evaluate(source, **made)
        return
    assert float(einderiv.evaluate(source, **made)) == pytest.approx(value(*made.values()), rel=1e-12)
    first = next(iter(made))
    assert_matches_fd(einderiv.grad(source, first), lambda **a: value(*a.values()), made, first)


@pytest.mark.parametrize(
    "source, value",
    [
        ("f = sum_j(y_j) + S_jk + delta_jk", lambda y, S: y.sum() + S.sum() + 3),
        ("f = sum_j(y_j) + S_jj + delta_jk", lambda y, S: y.sum() + np.trace(S) + 3),
        ("f = sum_j(y_j + 1) + S_jk + delta_jk", lambda y, S: y.sum() + 4 + S.sum() + 3),
    ],
)
def test_a_delta_term_is_sized_by_the_tensors_outside_a_reduction_of_its_letter(source, value):
    """In ``f = sum_j(y_j) + S_jk + delta_jk`` the delta's term sums its own j and k, sized as
    S writes them; the reduction's j is its own (y's length).  It stopped with "index 'j' has two
    sizes: 4 (from y) and 3 (from S)" (left open by the last session); the gradient by S is
    checked by central differences."""
    gen = np.random.default_rng(13)
    y, S = gen.normal(size=4), gen.normal(size=(3, 3))
    assert float(einderiv.evaluate(source, y=y, S=S)) == pytest.approx(value(y, S), rel=1e-12)
    assert_matches_fd(einderiv.grad(source, "S"), lambda y, S: value(y, S), {"y": y, "S": S}, "S")
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):
        einderiv.evaluate(source, y=y, S=gen.normal(size=(3, 4)))


@pytest.mark.parametrize(
    "source, arrays, factor",
    [
        ("f = sum_k(w_k) x_i (1 + delta_ik)", {"w": 5, "x": 3}, lambda w: np.sum(w) * 4),
        ("f = x_i (1 + delta_ki) sum_k(w_k)", {"w": 5, "x": 3}, lambda w: np.sum(w) * 4),
        ("f = mean_k(w_k) x_i (1 + delta_ik)", {"w": 4, "x": 3}, lambda w: np.mean(w) * 4),
        ("f = exp(w_k w_k) x_i (1 + delta_ik)", {"w": 5, "x": 3}, lambda w: np.exp(w @ w) * 4),
        ("f = sum_k(w_k) x_i (1 + delta_ik)^2", {"w": 5, "x": 3}, lambda w: np.sum(w) * 6),
        ("f = sum_k(w_k) x_i exp(delta_ik)", {"w": 5, "x": 3}, lambda w: np.sum(w) * (np.e + 2)),
        ("f = sum_k(w_k) x_i / (1 + delta_ik)", {"w": 5, "x": 3}, lambda w: np.sum(w) * 2.5),
        ("u = sum_k(w_k) x_i (1 + delta_ik)\nf = 2 u", {"w": 5, "x": 3}, lambda w: 2 * np.sum(w) * 4),
    ],
)
def test_a_letter_only_deltas_write_beside_its_namesake_takes_the_deltas_size(source, arrays, factor):
    """In ``sum_k(w_k) x_i (1 + delta_ik)`` the k beside the sum is another index (rule 6 warns),
    summed at the top, and the delta makes it x's length: the value is sum(w) (3 + 1) sum(x).
    Sized by name, it took w's length (sum(w) (5 + 1) sum(x), silently), or stopped with "two
    sizes" inside a call, a power or a divisor (a meaning hunt's finds).  The warning still
    names the letters as written; the gradient by x is checked by central differences."""
    gen = np.random.default_rng(14)
    made = {name: gen.normal(size=n) for name, n in arrays.items()}
    with pytest.warns(einderiv.EinderivWarning, match="index 'k'"):
        got = einderiv.evaluate(source, **made)
    assert float(got) == pytest.approx(factor(made["w"]) * made["x"].sum(), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)
        gradient = einderiv.grad(source, "x")
    assert_matches_fd(gradient, lambda w, x: factor(w) * x.sum(), made, "x")


@pytest.mark.parametrize("source", ["f = (x_i + y_i) / 2", "f = 2 (w_k + x_i (1 + delta_ik))"])
def test_a_scaled_sum_whose_terms_leave_one_letter_is_one_operand_and_two_lengths_are_an_error(source):
    """A scaled sum whose terms all leave the same letters free is one operand (rule 4), so two
    lengths of its letter are "two sizes", not a number: ``2 (w_k + x_i (1 + delta_ik))`` with w
    of 5 and x of 3 was 2 (sum(w) + 6 sum(x)) before 2026-12-05, silently (a reviewer's find).
    Written as separate terms, each sums its own letter."""
    gen = np.random.default_rng(15)
    x, y, w = gen.normal(size=3), gen.normal(size=4), gen.normal(size=5)
    arrays = {"x": x, "y": y} if "y_i" in source else {"w": w, "x": x}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            einderiv.evaluate(source, **arrays)
        split = "f = x_i / 2 + y_i / 2" if "y_i" in source else "f = 2 w_k + 2 x_i (1 + delta_ik)"
        expected = (x.sum() + y.sum()) / 2 if "y_i" in source else 2 * (w.sum() + 4 * x.sum())
        assert float(einderiv.evaluate(split, **arrays)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "source, value",
    [
        ("f = x_i (M_ii)", lambda x, M: x.sum() * np.trace(M)),
        ("f = (M_ii) x_i", lambda x, M: x.sum() * np.trace(M)),
        ("f = x_i ((M_ii))", lambda x, M: x.sum() * np.trace(M)),
        ("f = (M_ii)(M_ii)", lambda x, M: np.trace(M) ** 2),
        ("f = x_i M_ii", lambda x, M: x @ np.diag(M)),
        ("f_i = (M_ii) x_i", lambda x, M: np.diag(M) * x),  # rule 1: the left-hand side's i
    ],
)
def test_parentheses_around_a_tensor_that_repeats_a_letter_make_a_group(source, value):
    """``x_i (M_ii)``: the group (M_ii) is the trace (rule 3), and x's i another index, as in
    ``x_i (2 M_ii)`` (2 sum(x) tr(M)); the parser dropped parentheses around a single tensor, so
    it was x . diag(M), silently, and ``(M_ii)(M_ii)`` was sum(diag(M)^2) for tr(M)^2 (a meaning
    hunt's find).  The text prints back as written; the gradient by M is checked by central
    differences."""
    gen = np.random.default_rng(16)
    x, M = gen.normal(size=4), gen.normal(size=(4, 4))
    arrays = {"x": x, "M": M} if "x_" in source else {"M": M}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", einderiv.EinderivWarning)  # rule 6, on purpose
        got = einderiv.evaluate(source, **arrays)
        np.testing.assert_allclose(got, value(x, M), rtol=1e-12)
        assert einderiv.parse(str(einderiv.parse(source))) == einderiv.parse(source)
        if "f_i" not in source:
            assert_matches_fd(einderiv.grad(source, "M"), lambda M, x=x: value(x, M), arrays, "M")


@pytest.mark.parametrize("source", ["f = x_i^2^2", "f = 2^2^2 x_i", "f = x_i^(1/2)^2", "f = x_i^-1^2"])
def test_a_power_of_a_power_in_index_notation_says_to_bracket_it(source):
    """``x_i^2^2`` said only "unexpected '^'" in index notation, where matrix notation already
    explained it (a meaning hunt's find): both now say that a power of a power needs brackets,
    with the caret under the second '^'."""
    with pytest.raises(einderiv.ParseError, match=r"a power of a power needs brackets") as caught:
        einderiv.compile(source)
    assert caught.value.column == source.rindex("^") + 1
    x = np.array([0.5, 1.5, 2.0])
    np.testing.assert_allclose(einderiv.evaluate("f = (x_i^2)^2", x=x), (x**4).sum(), rtol=1e-14)


@pytest.mark.parametrize(
    "source, reference",
    [
        ("f = mean_i(A_ij) x_j + mean_k(x_k)", lambda jnp, A, y, x: A.mean(0) @ x + x.mean()),
        ("f = logsumexp_i(A_ij x_j^2) + mean_k(x_k)", lambda jnp, A, y, x: logsumexp(jnp, A @ x**2) + x.mean()),
        (
            "f = logsumexp_i(y_i + mean_k(exp(x_k))) + mean_l(x_l)",
            lambda jnp, A, y, x: logsumexp(jnp, y + jnp.exp(x).mean()) + x.mean(),
        ),
    ],
)
def test_a_printed_mean_of_a_delta_takes_a_letter_the_statement_writes_nowhere_else(source, reference):
    """The derivative of ``mean_k(x_k)`` by x_l prints as ``mean_j(delta_jl)``; its letter was
    picked apart from its own term only, so beside ``mean_i(A_il)`` (i of A's first length) it
    was ``mean_i(delta_il)``, and the text did not read back: a delta sizes its letters across
    the statement ("two sizes").  Now its letter is one the statement writes nowhere else (a
    meaning hunt's find).  The gradient against jax in float64, the text read back to it."""
    jax, jnp = jax_float64()
    gen = np.random.default_rng(17)
    A, y, x = gen.normal(size=(5, 4)), gen.normal(size=5), gen.normal(size=4)
    gradient = einderiv.grad(source, "x")
    arrays = {k: v for k, v in {"A": A, "y": y, "x": x}.items() if k in gradient.ranks}
    want = jax.grad(lambda x: reference(jnp, A, y, x))(x)
    np.testing.assert_allclose(gradient(**arrays), want, rtol=1e-12)
    # (the text reads the arrays it writes: the softmax over y sums to 1, so it may write no y)
    back = einderiv.compile(str(gradient))
    np.testing.assert_allclose(back(**{k: arrays[k] for k in back.ranks}), want, rtol=1e-12)


def logsumexp(jnp, v):
    return jnp.log(jnp.sum(jnp.exp(v - v.max()))) + v.max()


@pytest.mark.parametrize(
    "source, wrt, expected",
    [
        ("f = 3 c", ["c"], 3.0),
        ("f = c^2", ["c", "c"], 2.0),
        ("f = c x_i x_i", ["c"], 3.0),
        ("f = mean_i(c x_i)", ["c"], 1.0),
    ],
)
def test_float32_inputs_give_a_float32_derivative_on_numpy_too(source, wrt, expected):
    """A derivative that is a constant (d(3 c)/dc = 3) was made in float64 on NumPy for a float32
    c, where torch, jax and dask gave float32 and the README says float32 inputs give float32
    (a hunt's find).  Integer and Python-float inputs still count as float64."""
    c, x = np.array(2.0, np.float32), np.ones(3, np.float32)
    derivative = einderiv.diff(source, wrt)
    arrays = {k: v for k, v in {"c": c, "x": x}.items() if k in derivative.ranks}
    got = derivative(**arrays)
    assert got.dtype == np.float32 and float(got) == expected
    if "x" not in source:  # (a Python float that the derivative reads counts as float64)
        assert derivative(**{**arrays, "c": 2.0}).dtype == np.float64
    torch = pytest.importorskip("torch")
    assert derivative.call({k: torch.as_tensor(v) for k, v in arrays.items()}, backend="torch").dtype == torch.float32


def test_gradients_by_several_inputs_where_an_earlier_product_broadcasts_an_axis():
    """A generated program (hypothesis, test_program_oracle) stopped with KeyError 'm': a step's
    product over an axis that none of its matched factors carries was read from the step."""
    jax, jnp = jax_float64()
    source = (
        "t1_j = (0.5 + v_j); t2_i = sum_j((((t1_j + t1_j) - (v_j)(t1_j)) + A_ij)); t3 = t2_i inv(M)_ik t2_k; "
        "t4_ik = M_ik + 0.1 tanh((log1p(((t2_i - 1.5))^2) + M_ik)); f = sum_ik((3) / (1 + ((t4_ik)(u_k))^2))"
    )
    rng = np.random.default_rng(1)
    arrays = {"A": rng.normal(size=(3, 4)), "M": rng.normal(size=(3, 3)) + 3 * np.eye(3)}
    arrays |= {"u": rng.normal(size=3), "v": rng.normal(size=4)}

    def f(A, M, u, v):
        t1 = 0.5 + v
        t2 = ((t1 + t1 - v * t1)[None, :] + A).sum(1)
        t4 = M + 0.1 * jnp.tanh(jnp.log1p((t2 - 1.5) ** 2)[:, None] + M)
        return jnp.sum(3 / (1 + (t4 * u[None, :]) ** 2))

    names = ["A", "M", "u", "v"]
    got = einderiv.grad(source, names)(**arrays)
    expected = jax.grad(f, argnums=(0, 1, 2, 3))(*[jnp.asarray(arrays[k]) for k in names])
    for value, reference in zip(got, expected):
        np.testing.assert_allclose(value, np.asarray(reference), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "text, printed",
    [
        ("h_i = (x_i^-1) / 3", "h_i = (x_i^-1) / 3"),
        ("h_i = (x_i^-0.5) / 3", "h_i = (x_i^-0.5) / 3"),
        ("h_i = (x_i^-1) / 1e3", "h_i = (x_i^-1) / 1000"),
        ("h_i = x_i (c^-1) / 3", "h_i = (x_i c^-1) / 3"),
        ("h_i = tanh((x_i^-1) / 3)", "h_i = tanh((x_i^-1) / 3)"),
        ("f = sum_i((x_i^-1) / 3)", "f = sum_i((x_i^-1) / 3)"),
        ("h_i = x_i^2 / 3", "h_i = x_i^2 / 3"),
        ("h_i = x_i^-1 / y_i", "h_i = x_i^-1 / y_i"),
    ],
)
def test_a_negative_power_over_a_number_prints_in_parentheses(text, printed):
    """``(x_i^-1) / 3`` printed as ``x_i^-1 / 3``, which the parser refuses (the power -1/3 is
    meant as often as the quotient), so the text of the statement, and of a derivative's program
    that echoes it, did not read back (a hunt's find)."""
    compiled = einderiv.compile(text)
    assert str(compiled) == printed
    x, c, y = np.array([1.5, 2.0, 3.0]), 2.0, np.array([1.0, 2.0, 4.0])
    expected = {  # NumPy's value of each text
        "h_i = (x_i^-1) / 3": 1 / x / 3,
        "h_i = (x_i^-0.5) / 3": x**-0.5 / 3,
        "h_i = (x_i^-1) / 1e3": 1 / x / 1e3,
        "h_i = x_i (c^-1) / 3": x / c / 3,
        "h_i = tanh((x_i^-1) / 3)": np.tanh(1 / x / 3),
        "f = sum_i((x_i^-1) / 3)": np.sum(1 / x / 3),
        "h_i = x_i^2 / 3": x**2 / 3,
        "h_i = x_i^-1 / y_i": 1 / x / y,
    }[text]
    arrays = {k: v for k, v in {"x": x, "c": c, "y": y}.items() if k in compiled.ranks}
    np.testing.assert_allclose(einderiv.evaluate(str(compiled), **arrays), expected, rtol=1e-15)


@pytest.mark.parametrize(
    "source",
    [
        "h_i = tanh(a_i); g_i = softmax_i(h_i); f = sum_i(g_i)",
        "h_i = softmax_i(softmax_i(a_i / 3)); f = sum_i(softmax_i(h_i))",
    ],
)
def test_a_zero_adjoint_prints_with_its_shape(source):
    """A softmax summed over its own letter has a zero adjoint, printed ``dfdh_i = 0``: read back,
    i appeared in no term (an IndexRuleError).  It prints ``dfdh_i = 0 h_i``, as a zero result
    prints with its shape (a hunt's find)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        derivative = einderiv.grad(source, "a")
        assert "dfdh_i = 0 h_i" in str(derivative).splitlines()
        a = np.array([0.3, -1.0, 2.0])
        text = str(derivative).replace("\n", "; ").replace("df/da_j", "G_j")
        np.testing.assert_array_equal(einderiv.evaluate(text, a=a), derivative(a=a))
        np.testing.assert_array_equal(derivative(a=a), np.zeros(3))


@pytest.mark.parametrize(
    "source, wrt, line",
    [
        ("r_k = softmax_k(Z_k); r2_k = softmax_k(r_k); L = r2_k Y_k", "Z", "d2LdZdr2_ik = 0 Z_i r2_k"),
        ("L = softmax_k(softmax_k(Z_kn)) Y_nk", "Z", None),
        ("L = -softmax_i(S_ij) log(softmax_j(S_ij))", "S", None),
    ],
)
def test_a_zero_second_order_adjoint_prints_sized_by_the_tensors_its_axes_come_from(source, wrt, line):
    """A hunt's find: a second-order adjoint that is 0 and whose axes come from two tensors (Z
    and r2) printed ``d2LdZdr2_ik = 0``, and the printed Hessian did not read back (an
    IndexRuleError); only an adjoint of one tensor's axes was sized.  It prints ``0 Z_i r2_k``,
    and the text read back gives the Hessian's numbers, which are jax's."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(5)
    arrays = {
        "Z": rng.normal(size=3) if source.startswith("r_k") else rng.normal(size=(3, 4)),
        "Y": rng.random(3) if source.startswith("r_k") else rng.random((4, 3)),
        "S": rng.normal(size=(3, 3)),
    }
    arrays = {name: value for name, value in arrays.items() if f"{name}_" in source}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hessian = einderiv.hessian(source, wrt)
        text = str(hessian)
        if line is not None:
            assert line in text.splitlines()
        again = einderiv.compile(text)(**arrays)
    np.testing.assert_allclose(again, hessian(**arrays), rtol=1e-12, atol=1e-14)
    jnp = jax.numpy

    def loss(x):
        if source.startswith("r_k"):
            return jax.nn.softmax(jax.nn.softmax(x)) @ arrays["Y"]
        if source.startswith("L = softmax_k"):
            return jnp.sum(jax.nn.softmax(jax.nn.softmax(x, axis=0), axis=0) * arrays["Y"].T)
        # -softmax_i(S_ij) log(softmax_j(S_ij)), summed over i and j
        return -jnp.sum(jax.nn.softmax(x, axis=0) * jax.nn.log_softmax(x, axis=1))

    expected = np.asarray(jax.hessian(loss)(jnp.asarray(arrays[wrt])))
    np.testing.assert_allclose(hessian(**arrays), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["jacobian", "jvp"])
def test_a_zero_adjoint_in_a_jacobian_is_sized_by_the_output_too(kind):
    """A fuzzer's find (before this session too): in the Jacobian of ``L_d = 2
    log(softmax_d(softmax_d(R_dp)))``, the zero adjoint of the output's d and r2's i, l printed
    ``dLdr2_dil = 0``, and the text did not read back (an IndexRuleError).  It prints ``0 L_d
    r2_il``; the text read back gives the derivative's numbers, which are jax's."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    source = "L_d = 2 log(softmax_d(softmax_d(R_dp)))"
    rng = np.random.default_rng(6)
    R, v = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    arrays = {"R": R} if kind == "jacobian" else {"R": R, "v": v}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        derivative = getattr(einderiv, kind)(source, "R")
        text = str(derivative)
        assert "dLdr2_dil = 0 L_d r2_il" in text.splitlines()
        again = einderiv.compile(text)(**arrays)
    np.testing.assert_allclose(again, derivative(**arrays), rtol=1e-12, atol=1e-14)

    def loss(R):
        return 2 * jax.numpy.log(jax.nn.softmax(jax.nn.softmax(R, axis=0), axis=0)).sum(axis=1)

    jacobian = np.asarray(jax.jacobian(loss)(jax.numpy.asarray(R)))
    expected = jacobian if kind == "jacobian" else np.einsum("dij,ij->d", jacobian, v)
    np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "source",
    [
        "t2_ij = softmax_j(A_ij u); t4 = sum_ij(t2_ij); f = sum_ij(t2_ij / (1 + t4^2)) + u^3",
        "t1 = u u; t2_ij = softmax_j(A_ij (0.5 + t1)); t3 = t2_ij t2_ij; t4 = sum_ij(t3 + t2_ij); "
        "f = sum_ij((s / (1 + t4^2)) t2_ij)",
    ],
)
def test_a_summed_softmax_counts_its_batch_axis(source):
    """A softmax summed over its own axis is 1 (``softmax_sums_to_one``); summed over its batch
    axis too, it is that axis's length.  The count was a bare ``delta_kk`` that no axis sized:
    the gradient of the first program failed ("the size of index 'k' cannot be inferred"), and
    in the second (hypothesis's find, as an HVP) a letter of the other axis sized it, 4 for 3:
    the Hessian came out 4/3 of jax's.  The count now names the axis it counts (k#t2.0)."""
    jax, jnp = jax_float64()
    rng = np.random.default_rng(5)
    A, u, s, v = rng.normal(size=(3, 4)), np.float64(0.7), np.float64(1.3), np.float64(0.4)

    def f(u):
        if "t1" not in source:
            t2 = jax.nn.softmax(A * u, axis=1)
            return jnp.sum(t2 / (1 + jnp.sum(t2) ** 2)) + u**3
        t2 = jax.nn.softmax(A * (0.5 + u * u), axis=1)
        t4 = jnp.sum(jnp.sum(t2 * t2) + t2)
        return jnp.sum(s / (1 + t4**2) * t2)

    arrays = {"A": A, "u": u, "s": s}
    for derivative, expected in (
        (einderiv.grad(source, "u"), jax.grad(f)(u)),
        (einderiv.hessian(source, "u"), jax.hessian(f)(u)),
        (einderiv.hvp(source, "u", v="v"), jax.hessian(f)(u) * v),
    ):
        given = {k: x for k, x in {**arrays, "v": v}.items() if k in derivative.ranks}
        np.testing.assert_allclose(derivative(**given), float(expected), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(einderiv.compile(str(derivative))(**given), float(expected), rtol=1e-10, atol=1e-15)
