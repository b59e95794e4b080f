"""Regressions for "programs are first-class": each failure the issue names, with an independent
reference (NumPy closed forms, central finite differences, jax in float64 where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

import einderiv
from einderiv.factor import factored
from einderiv.lower import normalize
from einderiv.normal import equivalent
from einderiv.reports import derivative_json
from tests.helpers import assert_matches_fd, jax_float64

rng = np.random.default_rng(20261202)

LOGISTIC_PROGRAM = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -y_n log(s_n) - (1 - y_n) log(1 - s_n)"
LOGISTIC_STATEMENT = "L = -y_n log(sigmoid(X_nd w_d)) - (1 - y_n) log(1 - sigmoid(X_nd w_d))"


def sigmoid(z):
    return 0.5 * (1 + np.tanh(z / 2))


def read_back(derivative, arrays):
    """The printed text of ``derivative`` compiled and evaluated (with the arrays it names)."""
    compiled = einderiv.compile(str(derivative))
    return compiled(**{k: v for k, v in arrays.items() if k in compiled.ranks})


def logistic_arrays(scale=1.0):
    X = rng.normal(size=(6, 3))
    return {"X": X, "w": scale * rng.normal(size=3), "y": (rng.random(6) > 0.5).astype(float)}


# -- printed in the user's names, as a textbook writes it -----------------------------------------------


def test_the_logistic_program_reads_in_its_own_names_at_every_order():
    gradient = einderiv.diff(LOGISTIC_PROGRAM, ["w"])
    hessian = einderiv.diff(LOGISTIC_PROGRAM, ["w", "w"])
    third = einderiv.diff(LOGISTIC_PROGRAM, ["w", "w", "w"])
    assert str(gradient).splitlines() == ["z_n = X_nd w_d", "s_n = sigmoid(z_n)", "dL/dw_i = (s_n - y_n) X_ni"]
    assert str(hessian).splitlines()[-1] == "d2L/dw_i dw_j = s_n (1 - s_n) X_ni X_nj"  # no adjoint of an adjoint
    assert str(third).splitlines()[-1] == "d3L/dw_i dw_j dw_k = s_n (1 - s_n) (1 - 2 s_n) X_ni X_nj X_nk"
    assert len(third.expr.terms) <= len(einderiv.diff(LOGISTIC_STATEMENT, ["w", "w", "w"]).expr.terms) == 3
    arrays = logistic_arrays()
    s = sigmoid(arrays["X"] @ arrays["w"])
    X = arrays["X"]
    np.testing.assert_allclose(gradient(**arrays), X.T @ (s - arrays["y"]), rtol=1e-12)
    np.testing.assert_allclose(hessian(**arrays), X.T @ np.diag(s * (1 - s)) @ X, rtol=1e-12)
    np.testing.assert_allclose(
        third(**arrays), np.einsum("n,ni,nj,nk->ijk", s * (1 - s) * (1 - 2 * s), X, X, X), rtol=1e-10, atol=1e-14
    )
    for derivative in (gradient, hessian, third):  # the printed program evaluates to the same numbers
        np.testing.assert_allclose(read_back(derivative, arrays), derivative(**arrays), rtol=1e-12)


@pytest.mark.parametrize("scale", [40.0, 1000.0])
def test_the_logistic_program_is_finite_and_right_at_large_logits(scale):
    arrays = logistic_arrays(scale)
    z = arrays["X"] @ arrays["w"]
    value = float(einderiv.evaluate(LOGISTIC_PROGRAM, **arrays))
    expected = float(np.sum(np.logaddexp(0, z) - arrays["y"] * z))
    assert value == pytest.approx(expected, rel=1e-12)
    for wrt in (["w"], ["w", "w"]):
        program = einderiv.diff(LOGISTIC_PROGRAM, wrt)(**arrays)
        statement = einderiv.diff(LOGISTIC_STATEMENT, wrt)(**arrays)
        assert np.all(np.isfinite(program))
        np.testing.assert_allclose(program, statement, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(
        einderiv.grad(LOGISTIC_PROGRAM, "w")(**arrays), arrays["X"].T @ (sigmoid(z) - arrays["y"]), rtol=1e-12
    )


def test_a_two_layer_hessian_reads_in_the_user_names():
    source = "H_nk = tanh(X_nd W1_dk); Yh_nj = H_nk W2_kj; R_nj = Yh_nj - Y_nj; L = R_nj R_nj"
    hessian = einderiv.hessian(source, "W1")
    text = str(hessian)
    assert "tanh(" not in text.split("H_nk = tanh(X_nd W1_dk)", 1)[1]  # H, not tanh(X W1), after its statement
    arrays = {
        "X": rng.normal(size=(5, 3)),
        "W1": rng.normal(size=(3, 4)),
        "W2": rng.normal(size=(4, 2)),
        "Y": rng.normal(size=(5, 2)),
    }
    statement = einderiv.hessian("L = (tanh(X_nd W1_dk) W2_kj - Y_nj)^2", "W1")(**arrays)
    np.testing.assert_allclose(hessian(**arrays), statement, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(read_back(hessian, arrays), statement, rtol=1e-10, atol=1e-12)


def test_factored_printing_reads_back_as_the_same_sum():
    for source, wrt in [
        ("L = (y_n - Phi_ni theta_i)^2", ["theta"]),
        (LOGISTIC_STATEMENT, ["w", "w"]),
        ("h_k = tanh(x_d W_dk); f = h_k v_k", ["W", "W"]),
        ("f_i = exp(x_i) + exp(x_i)^2 a_i", ["x"]),
        ("f_i = x_i a_i + x_i b_i", ["x"]),
    ]:
        derivative = einderiv.diff(source, wrt)
        text, poly = factored(derivative.expr)
        assert equivalent(normalize(text, derivative.indices), poly), (source, str(text))
    assert (
        str(einderiv.grad("L = (y_n - Phi_ni theta_i)^2", "theta")) == "dL/dtheta_j = -2 (y_n - Phi_ni theta_i) Phi_nj"
    )


@pytest.mark.parametrize(
    "source, slope",
    [
        ("f = tanh(tanh(w_i x_i))", "(1 - tanh(w_i x_i)^2)"),
        ("f = sigmoid(sigmoid(w_i x_i))", "(1 - sigmoid(sigmoid(w_i x_i)))"),
    ],
)
def test_a_slope_that_divides_a_sum_prints_as_a_factor(source, slope):
    """``1 - t^2`` and ``1 - s``, the slopes of tanh and sigmoid, that divide a sum of powers are
    pulled out as factors: the Hessian of ``tanh(tanh(w_i x_i))`` printed 8 terms of powers of t and
    T, and now reads ``2 (1 - t^2) (1 - T^2) (-(1 - t^2) T - t) x_k x_j``.  The text reads back
    as the same sum, and evaluates (read back from the text) to jax's Hessian (at ordinary inputs:
    where they saturate, jax's own Hessian rounds to 0; the stable evaluation is checked against
    mpmath in test_programs_stable.py)."""
    jax, jnp = jax_float64()
    outer = {"tanh": (jnp.tanh, jnp.tanh), "sigmoid": (jax.nn.sigmoid, jax.nn.sigmoid)}[source.split("(")[0][4:]]
    derivative = einderiv.hessian(source, "w")
    text, poly = factored(derivative.expr)
    assert slope in str(text)
    assert equivalent(normalize(text, derivative.indices), poly), str(text)
    x = rng.normal(size=3)
    for w in (rng.normal(size=3), 3 * rng.normal(size=3)):
        expected = jax.hessian(lambda v: outer[0](outer[1](v @ x)))(jnp.asarray(w))
        np.testing.assert_allclose(read_back(derivative, {"w": w, "x": x}), expected, rtol=1e-9, atol=1e-300)


def test_pulled_out_groups_print_side_by_side_not_nested():
    """A group pulled out of a group prints beside it: the Hessian of ``tanh(tanh(w_i x_i))``
    printed ``2 ((1 - t^2) ((1 - T^2) (...))) x_k x_j``, parentheses around products that the
    product around them needs none of.  The flat text reads back as the same sum and evaluates to
    the Hessian in closed form (t = tanh(a), T = tanh(t), a = w.x: f'' = x x^T (1 - t^2) (1 - T^2)
    (-2 (1 - t^2) T - 2 t))."""
    derivative = einderiv.hessian("f = tanh(tanh(w_i x_i))", "w")
    t, T = "tanh(w_i x_i)", "tanh(tanh(w_i x_i))"
    assert str(derivative) == (f"d2f/dw_j dw_k = 2 (1 - {t}^2) (1 - {T}^2) (-(1 - {t}^2) {T} - {t}) x_k x_j")
    text, poly = factored(derivative.expr)
    assert equivalent(normalize(text, derivative.indices), poly)
    w, x = rng.normal(size=3), rng.normal(size=3)
    a = np.tanh(w @ x)
    A = np.tanh(a)
    expected = np.outer(x, x) * (1 - a**2) * (1 - A**2) * (-2 * (1 - a**2) * A - 2 * a)
    np.testing.assert_allclose(read_back(derivative, {"w": w, "x": x}), expected, rtol=1e-12)
    stepwise = einderiv.hessian("t = tanh(w_i x_i); f = tanh(t)", "w")
    assert " = 2 (1 - t^2) (" in str(stepwise).splitlines()[-1] and "((" not in str(stepwise), str(stepwise)


def test_adjoint_statements_print_with_their_common_factors_pulled_out():
    """The statements a derivative adds (adjoints, a Hessian-vector product's tangents, a Hessian
    diagonal) print factored as the result does: the two-layer network's HVP printed its tangent
    as ``X_ni v_ij W2_j W2_k - h_nj^2 X_ni v_ij W2_j W2_k - 2 dLdh_nk h_nk X_ni v_ik`` and now reads
    ``((1 - h_nj^2) v_ij W2_j W2_k - 2 dLdh_nk h_nk v_ik) X_ni``; the logistic Hessian's diagonal
    ``s_n (1 - s_n) X_ni^2``.  The printed program, read back, evaluates to jax's HVP and to the
    diagonal in closed form."""
    jax, jnp = jax_float64()
    source = "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2"
    product = einderiv.hvp(source, "W1", v="v")
    assert str(product).splitlines()[2] == "d2LdW1vdh_nk = ((1 - h_nj^2) v_ij W2_j W2_k - 2 dLdh_nk h_nk v_ik) X_ni"
    arrays = {"X": rng.normal(size=(7, 3)), "W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=4)}
    arrays |= {"y": rng.normal(size=7), "v": rng.normal(size=(3, 4))}
    X, W2, y = (jnp.asarray(arrays[k]) for k in ("X", "W2", "y"))

    def loss(W1):
        return 0.5 * jnp.sum((jnp.tanh(X @ W1) @ W2 - y) ** 2)

    expected = jax.jvp(jax.grad(loss), (jnp.asarray(arrays["W1"]),), (jnp.asarray(arrays["v"]),))[1]
    np.testing.assert_allclose(read_back(product, arrays), expected, rtol=1e-10)
    np.testing.assert_allclose(product(**arrays), expected, rtol=1e-10)

    diagonal = einderiv.hessian_diag(LOGISTIC_PROGRAM, "w")
    assert str(diagonal).splitlines()[-1].endswith(" = s_n (1 - s_n) X_ni^2")
    data = logistic_arrays()
    s = sigmoid(data["X"] @ data["w"])
    np.testing.assert_allclose(read_back(diagonal, data), (s * (1 - s)) @ data["X"] ** 2, rtol=1e-12)


def test_a_slope_whose_letter_a_quotient_term_holds_twice_is_not_pulled_out_with_it():
    """Pulled out of ``tanh(X_nd W_dm) u_m X_ni - X_ni y_n``, the slope ``1 - tanh(X_nd W_dj)^2``
    binds n, which the first quotient term holds twice (in the tanh and in X): inside the group n
    was summed apart from the n outside; the text did not read back, and the whole gradient
    printed unfactored (a review's find).  Such a slope is not pulled out with that quotient: X_ni
    comes out of the group first, and n is then once in each of its terms."""
    derivative = einderiv.grad("L = sum_n((tanh(X_nd W_dm) u_m - y_n)^2)", "W")
    assert str(derivative) == "dL/dW_ij = 2 (1 - tanh(X_nd W_dj)^2) (tanh(X_nd W_dm) u_m - y_n) X_ni u_j"
    shapes = {"X": (5, 3), "W": (3, 4), "u": (4,), "y": (5,)}
    arrays = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    X, W, u, y = (arrays[k] for k in "XWuy")
    H = np.tanh(X @ W)
    expected = X.T @ (2 * ((H @ u - y)[:, None] * (1 - H**2) * u))  # the gradient in closed form
    np.testing.assert_allclose(read_back(derivative, arrays), expected, rtol=1e-12)
    np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-12)


# -- sizes: every derivative of a valid input sizes every axis, and its text evaluates --------------------


def test_the_derivative_of_a_sqrt_of_a_sum_sizes_every_axis():
    source = "L = sqrt(sum_f((X_nf - X_ng / 3)(X_nf - X_nh / 3)))"
    X = rng.normal(size=(4, 3))
    derivative = einderiv.diff(source, "X")
    assert derivative(X=X).shape == (4, 3)
    assert_matches_fd(derivative, lambda **k: einderiv.evaluate(source, **k), {"X": X}, "X")
    np.testing.assert_allclose(read_back(derivative, {"X": X}), derivative(X=X), rtol=1e-12)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("L = -0.5 (x_n - m)^2", lambda x, P: -x.shape[0]),
        ("L = -0.5 (x_nd - m_d) P_de (x_ne - m_e)", lambda x, P: -0.5 * x.shape[0] * (P + P.T)),
    ],
)
def test_the_hessian_of_a_gaussian_log_likelihood_by_its_mean_counts_n(source, expected):
    x, P = rng.normal(size=(7, 3)), rng.normal(size=(3, 3))
    arrays = {"x": x[:, 0], "m": 0.3} if "m_d" not in source else {"x": x, "m": rng.normal(size=3), "P": P}
    hessian = einderiv.diff(source, ["m", "m"])
    np.testing.assert_allclose(hessian(**arrays), expected(x, P), rtol=1e-12)
    np.testing.assert_allclose(read_back(hessian, arrays), expected(x, P), rtol=1e-12)


def test_a_count_moved_between_statements_keeps_its_dimension():
    # sum_i(t4 + t2_i) counts I; t2_i = sum_j(...) has a j of another size: the Hessian was 4/3 of it
    source = "t1_ik = cos(M_ik / (1 + s^2)); t2_i = sum_j(0.5 + A_ij); t4 = mean_ik(t1_ik); f = sum_i(t4 + t2_i)"
    M, A, s = rng.normal(size=(3, 2)), rng.normal(size=(3, 4)), 0.4

    def f(s):
        return 3 * np.mean(np.cos(M / (1 + s**2))) + np.sum(0.5 + A)

    h = 1e-4
    expected = (f(s + h) - 2 * f(s) + f(s - h)) / h**2
    hessian = einderiv.hessian(source, "s")
    assert float(hessian(M=M, A=A, s=s)) == pytest.approx(expected, rel=1e-5)
    assert float(read_back(hessian, {"M": M, "A": A, "s": s})) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "source",
    [
        "t_l = a_l; u_m = b_m; f = x exp(delta_ll) + x exp(delta_mm)",
        "f = x exp(sum_l(0 a_l + 1)) + x exp(sum_m(0 b_m + 1))",
        "t_l = a_l; u_m = b_m; f = x tanh(delta_ll / 4)^2 + x tanh(delta_mm / 4)^2 + x^2",
    ],
)
def test_counts_inside_calls_of_two_dimensions_are_not_like_terms(source):
    # exp(L) and exp(M) with L = 2, M = 3 were collected as one term, 2 exp(2): a silent wrong value
    a, b, x = rng.normal(size=2), rng.normal(size=3), 0.7
    if "tanh" in source:
        squares = np.tanh(0.5) ** 2 + np.tanh(0.75) ** 2
        value, slope = x * squares + x**2, squares + 2 * x
    else:
        value, slope = x * (np.exp(2) + np.exp(3)), np.exp(2) + np.exp(3)
    assert float(einderiv.evaluate(source, a=a, b=b, x=x)) == pytest.approx(value, rel=1e-13)
    gradient = einderiv.grad(source, "x")
    assert float(gradient(a=a, b=b, x=x)) == pytest.approx(slope, rel=1e-13)
    if "t_l" not in source:
        assert float(read_back(gradient, {"a": a, "b": b, "x": x})) == pytest.approx(slope, rel=1e-13)


@pytest.mark.xfail(strict=True, reason="the printed gradient omits t_l = a_l, the only statement that sizes l")
def test_a_count_sized_by_an_unused_statement_reads_back():
    a, b = rng.normal(size=2), rng.normal(size=3)
    gradient = einderiv.grad("t_l = a_l; u_m = b_m; f = x exp(delta_ll) + x exp(delta_mm)", "x")
    assert float(read_back(gradient, {"a": a, "b": b, "x": 0.7})) == pytest.approx(np.exp(2) + np.exp(3))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("p = sqrt(sum_l(a_l^0)); q = sqrt(sum_l(b_l^0)); f = p - q", lambda a, b, x: np.sqrt(2) - np.sqrt(3)),
        (
            "c = a_f a_f + x exp(delta_ff); d = b_f b_f + x exp(delta_ff); f = c + d",
            lambda a, b, x: a @ a + b @ b + x * (np.exp(2) + np.exp(3)),
        ),
    ],
)
def test_counts_of_one_letter_in_two_statements_are_two_dimensions(source, expected):
    # l#1 and l#2 were keyed by their letter: one step computed sqrt(L) for both, and p - q was 0
    a, b, x = rng.normal(size=2), rng.normal(size=3), 0.7
    compiled = einderiv.compile(source)
    arrays = {k: v for k, v in {"a": a, "b": b, "x": x}.items() if k in compiled.ranks}
    assert float(compiled(**arrays)) == pytest.approx(expected(a, b, x), rel=1e-13)
    if "x" in arrays:
        gradient = einderiv.grad(source, "x")
        assert float(gradient(**arrays)) == pytest.approx(np.exp(2) + np.exp(3), rel=1e-13)
        assert float(read_back(gradient, arrays)) == pytest.approx(np.exp(2) + np.exp(3), rel=1e-13)


def test_a_written_count_with_two_sizes_names_its_letter():
    with pytest.raises(einderiv.EvaluationError, match="index 'f' cannot be inferred: the statements before it write"):
        einderiv.evaluate("t_f = a_f; u_f = b_f; c = x delta_ff", a=np.ones(2), b=np.ones(3), x=1.0)


def test_a_written_count_inside_and_outside_a_call_keeps_its_dimension():
    # the delta_ff inside the sqrt was renamed apart from the one outside, to a letter nothing sizes
    source = (
        "L = sqrt(sum_f((X_nf - X_ng / 3) (X_nf - X_nh / 3)))\n"
        "d_ij = X_ih delta_ff / sqrt(X_nk X_nk + X_nj X_nh delta_ff)"
    )
    X = rng.normal(size=(4, 3)) + 3
    F = X.shape[1]
    expected = (X * F) @ (1 / np.sqrt(np.sum(X**2) + F * X.T @ X)).T
    np.testing.assert_allclose(einderiv.compile(source)(X=X), expected, rtol=1e-13)


def test_shape_lines_name_each_dimension():
    two_layer = "H_nk = tanh(X_nd W1_dk); Yh_nj = H_nk W2_kj; R_nj = Yh_nj - Y_nj; L = R_nj R_nj"
    assert einderiv.hessian(two_layer, "W1").shape_text() == (
        "L.shape + W1.shape + W1.shape = (D, K, D, K) with X: (N, D), W1: (D, K), W2: (K, J), Y: (N, J)"
    )
    assert einderiv.diff("f = det(X)", "X").shape_text() == "f.shape + X.shape = (J, J) with X: (J, J)"
    assert einderiv.diff("C_ij = x_i y_j", "x", layout="denominator").shape_text() == (
        "x.shape + C.shape = (I, I, J) with x: (I,), y: (J,)"
    )


@pytest.mark.parametrize(
    "source, wrt, line",
    [
        ("f_d = sinh(b_d - b_d) + z_i z_i", "z", "f.shape + z.shape = (D, I) with z: (I,), b: (D,)"),
        ("f_d = sinh(b_d - b_d) + z_i z_i", "b", "f.shape + b.shape = (D, D) with z: (I,), b: (D,)"),
        ("f = log(exp(W_dk - W_dk)) + z_i z_i", "z", "f.shape + z.shape = (I,) with z: (I,), W: (D, K)"),
    ],
)
def test_a_tensor_that_cancelled_as_read_keeps_its_dimension_names(source, wrt, line):
    """A tensor whose every occurrence cancelled when the source was read (b_d - b_d) named its
    axes '?': its letters as written name them, as for any input."""
    derivative = einderiv.diff(source, wrt)
    assert derivative.shape_text() == line
    data = derivative_json(derivative)
    assert "?" not in data["shape"] and all("?" not in dims for dims in data["inputs"].values())


def test_a_zero_gradient_by_an_input_only_an_unused_statement_reads():
    gradient = einderiv.grad("t = x_i; f = s^2", "x")
    np.testing.assert_array_equal(gradient(x=np.ones(3), s=np.array(2.0)), np.zeros(3))


# -- shared work: what one statement would compute once, a program computes once -------------------------


def test_a_contraction_two_calls_share_is_computed_once():
    compiled = einderiv.compile("f = exp(a_i x_i) + (a_j x_j)^3")
    contractions = [step for step in compiled.line.steps if step.contraction is not None]
    assert len(contractions) == 2  # a_i x_i once, then the sum of the two calls
    a, x = rng.normal(size=4), rng.normal(size=4)
    assert float(compiled(a=a, x=x)) == pytest.approx(np.exp(a @ x) + (a @ x) ** 3, rel=1e-13)


def test_the_least_squares_gradient_runs_as_two_matrix_vector_products():
    derivative = einderiv.grad("L = (y_n - Phi_ni theta_i)^2", "theta")
    steps = [step for step in derivative.line.steps if step.contraction is not None]
    products = [t for step in steps for t in step.contraction.terms if len(t.operands) == 2]
    assert len(products) == 2, [str(t) for step in steps for t in step.contraction.terms]
    Phi, theta, y = rng.normal(size=(50, 4)), rng.normal(size=4), rng.normal(size=50)
    np.testing.assert_allclose(derivative(Phi=Phi, theta=theta, y=y), -2 * Phi.T @ (y - Phi @ theta), rtol=1e-12)


def test_an_index_one_operand_carries_is_summed_before_the_contraction():
    source = "L = -0.5 (x_nd - m_d) inv(S)_de (x_ne - m_e)"
    x, m = rng.normal(size=(40, 3)), rng.normal(size=3)
    S = np.eye(3) * 4 + 0.1 * rng.normal(size=(3, 3))
    gradient = einderiv.grad(source, "m")
    inverse = np.linalg.inv(S)
    np.testing.assert_allclose(gradient(x=x, m=m, S=S), 0.5 * (inverse + inverse.T) @ (x - m).sum(0), rtol=1e-12)
    with_scalar = einderiv.diff("L = softmax_j(c Q_id K_jd) V_je G_ie", ["Q"])
    Q, K, V, G = (rng.normal(size=(5, 4)) for _ in range(4))
    without = einderiv.diff("L = softmax_j(Q_id K_jd) V_je G_ie", ["Q"])(Q=0.5 * Q, K=K, V=V, G=G)
    np.testing.assert_allclose(with_scalar(Q=Q, K=K, V=V, G=G, c=0.5), 0.5 * without, rtol=1e-12)


def test_the_softmax_regression_gradient_contracts_x_once():
    # -Y_nj X_ni + Y_nk P_nj X_ni: X is contracted once, with (P sum_k Y - Y), an N x K array like Y
    source = "Z_nk = X_nd W_dk; P_nk = softmax_k(Z_nk); L = -Y_nk log(P_nk)"
    gradient = einderiv.grad(source, "W")
    with_x = [
        t
        for step in gradient.line.steps
        if step.contraction is not None
        for t in step.contraction.terms
        if "X" in t.operands
    ]
    assert len(with_x) == 2, [str(t) for t in with_x]  # Z = X W, and the gradient's one product
    X, W = rng.normal(size=(30, 4)), rng.normal(size=(4, 3))
    Y = np.eye(3)[rng.integers(0, 3, 30)]
    Z = X @ W
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    np.testing.assert_allclose(gradient(X=X, W=W, Y=Y), X.T @ (P - Y), rtol=1e-12)


def test_sharing_never_adds_a_matrix_to_save_a_matrix_vector_product():
    # A_kj x_j + x_i A_ik: merging would form A + A^T (two passes over A, an n x n temporary)
    gradient = einderiv.grad("f = x_i A_ij x_j", "x")
    shapes = [t.inputs for step in gradient.line.steps if step.contraction is not None for t in step.contraction.terms]
    assert all(len(inputs) == 2 for inputs in shapes) and len(shapes) == 2, shapes
    x, A = rng.normal(size=5), rng.normal(size=(5, 5))
    np.testing.assert_allclose(gradient(x=x, A=A), (A + A.T) @ x, rtol=1e-12)


def test_a_count_renamed_by_lowering_keeps_its_dimension():
    # the product renames the first sum's i apart (to j); t2's own j is A's other axis (6, not 4)
    source = "t2_i = sum_j(A_ij); L = sum_i(t + t2_i) * sum_i(x_i)"
    A, t, x = rng.normal(size=(4, 6)), np.array(0.3), rng.normal(size=5)
    assert float(einderiv.evaluate(source, A=A, t=t, x=x)) == pytest.approx((4 * 0.3 + A.sum()) * x.sum(), rel=1e-12)
    gradient = einderiv.grad(source, "t")
    assert float(gradient(A=A, t=t, x=x)) == pytest.approx(4 * x.sum(), rel=1e-12)
    # printed, the count is j, the first sum's own letter (each sum binds its own, so the one that
    # counts A's rows is renamed apart from the one over x's length), never 6 * sum(x)
    assert str(gradient).splitlines()[1:] == ["L = sum_j(t + t2_j) sum_i(x_i)", "dL/dt = delta_jj x_i"]
    assert float(read_back(gradient, {"A": A, "t": t, "x": x})) == pytest.approx(4 * x.sum(), rel=1e-12)


def test_a_size_is_not_guessed_from_another_statement():
    with pytest.raises(einderiv.ParseError, match="'k' does not occur in its argument or anywhere else"):
        einderiv.evaluate("u = sum_k(A_k); L = u + sum_k(c)", A=np.ones(3), c=np.array(0.7))


def test_the_one_over_n_of_a_mean_stays_with_the_factors_that_size_it():
    # the Hessian's terms share A_ij A_il t2_ik: the light factors merged first must not take 1/n_k
    # away from t2_ik, the only factor that sizes k (found by the jax oracle)
    source = "t1_i = A_ij v_j; t2_ik = (0.5 + M_ik); f = mean_ik((t2_ik)(exp(sin(t1_i))))"
    A, v, M = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(3, 5))
    weights = (0.5 + M).mean(axis=1)  # mean over k of t2_ik
    t1 = A @ v
    curvature = np.exp(np.sin(t1)) * (np.cos(t1) ** 2 - np.sin(t1))
    expected = A.T @ np.diag(weights * curvature) @ A / 3
    np.testing.assert_allclose(einderiv.hessian(source, "v")(A=A, v=v, M=M), expected, rtol=1e-12)


def test_two_counts_of_one_statement_in_one_term_stay_two():
    # d2f/dv dv for t1_j = sum_i(v_j + A_ij): I^2 (two counts of i), not I J (found by the jax oracle)
    source = "t1_j = sum_i((v_j + A_ij)); f = t1_j t1_j"
    A, v = rng.normal(size=(3, 4)), rng.normal(size=4)
    np.testing.assert_allclose(einderiv.hessian(source, "v")(A=A, v=v), 2 * 9 * np.eye(4), rtol=1e-12)


@pytest.mark.parametrize(
    "source",
    [
        "f = logsumexp_i(logsumexp_j(s x_j) + x_i)",
        "t1 = logsumexp_i((s x_i)); f = logsumexp_i((t1 + x_i))",  # the rewrites see through t1
    ],
)
def test_a_logsumexp_inside_a_logsumexp_sums_over_its_own_index(source):
    # f = lse(s x) + lse(x): f' = E_p[x], f'' = Var_p[x] for p = softmax(s x) (found by the jax oracle:
    # the two softmaxes shared one summed index, giving sum_k p_k q_k)
    x, s = np.array([0.1, -0.3, 0.7]), np.array(0.4)
    p = np.exp(s * x - np.logaddexp.reduce(s * x))
    assert float(einderiv.grad(source, "s")(s=s, x=x)) == pytest.approx(p @ x, rel=1e-12)
    assert float(einderiv.hessian(source, "s")(s=s, x=x)) == pytest.approx(p @ x**2 - (p @ x) ** 2, rel=1e-10)


def test_a_count_left_by_differentiation_keeps_its_statement_dimension():
    # dL/dm = -2 sum_n(z_n - m) leaves N as delta_nn; substituted into dL/dW1 it was renamed to k,
    # W1's column letter, and failed with "k cannot be inferred" (K would have been wrong too)
    source = "z_n = X_nd W1_dk W2_k; m = mean_n(z_n); L = (z_n - m)^2"
    X, W1, W2 = rng.normal(size=(7, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    gradient = einderiv.grad(source, "W1")

    def loss(X, W1, W2):
        z = X @ W1 @ W2
        return np.sum((z - z.mean()) ** 2)

    z = X @ W1 @ W2
    np.testing.assert_allclose(gradient(X=X, W1=W1, W2=W2), 2 * np.outer(X.T @ (z - z.mean()), W2), rtol=1e-12)
    assert_matches_fd(gradient, loss, {"X": X, "W1": W1, "W2": W2}, "W1")
    np.testing.assert_allclose(read_back(gradient, {"X": X, "W1": W1, "W2": W2}), gradient(X=X, W1=W1, W2=W2))


@pytest.mark.filterwarnings("ignore:in 'u_n sigmoid:einderiv.errors.EinderivWarning")
def test_a_count_of_a_letter_the_target_renames_keeps_its_dimension():
    """A hunt's find: ``u_n = a_n w; L = (u_n sigmoid(u_n) - y_n)^2`` (the first n summed inside its
    product, as einderiv warns, the second summed over y's length) had a gradient that could not be
    evaluated ("the size of index 'j' cannot be inferred"): differentiating L by u_n renamed L's n
    apart from the target's, and the count N = sum_n(1) it left lost its size.  Its statement form
    evaluated.  Against a NumPy closed form, finite differences, and the printed text read back."""
    a, y, w = np.array([1.0, 0.5]), np.array([0.1, 0.2, 0.7]), np.array(2.0)
    arrays = {"a": a, "y": y, "w": w}

    def loss(a, y, w):
        return np.sum((np.sum(a * w / (1 + np.exp(-a * w))) - y) ** 2)

    s = 1 / (1 + np.exp(-a * w))
    slope = np.sum(a * s + a * w * a * s * (1 - s))  # d/dw of sum_i(a_i w sigmoid(a_i w))
    expected = 2 * np.sum(np.sum(a * w * s) - y) * slope
    for source in ("u_n = a_n w; L = (u_n sigmoid(u_n) - y_n)^2", "L = (a_i w sigmoid(a_i w) - y_n)^2"):
        gradient = einderiv.grad(source, "w")
        assert float(gradient(**arrays)) == pytest.approx(expected, rel=1e-12)
        assert_matches_fd(gradient, loss, arrays, "w")
        assert float(read_back(gradient, arrays)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore::einderiv.errors.EinderivWarning")
def test_a_count_sized_only_where_another_statement_uses_an_intermediate_keeps_its_size():
    """Two draws of the property tests: an intermediate whose length only its use sizes (``t_i =
    s + delta_ij`` is sized by f's ``t_j ... delta_ij`` with a_i), and a derivative that computes
    no t, left counts sized at t's axis alone: "the size of index 'j' cannot be inferred".  The
    count is sized at an input axis of t's dimension.  Against NumPy closed forms (sum_j over a
    letter written once is summed in its own term: t_i = s + 1), finite differences, and the
    printed text read back."""
    a, s = rng.normal(size=4), np.array(0.3)
    source = "t_i = s + delta_ij\nf = sum_i(sum_i(a_i + t_j + delta_ij))"

    def f(a, s):  # sum_j sum_i' sum_i (a_i + t_j + delta_ij), t_j = s + 1
        n = len(a)
        return n * n * a.sum() + n**3 * (s + 1) + n * n

    gradient = einderiv.grad(source, "a")
    np.testing.assert_allclose(gradient(a=a, s=s), np.full(4, 16.0), rtol=1e-12)
    assert_matches_fd(gradient, f, {"a": a, "s": s}, "a")
    np.testing.assert_allclose(read_back(gradient, {"a": a, "s": s}), np.full(4, 16.0), rtol=1e-12)

    A = rng.normal(size=(3, 3))
    source = "t_j = sum_i(-cos(delta_ij))\nf = sum_i(t_i + t_j + A_ii)"

    def g(A):  # sum_i sum_j (t_i + t_j + A_ii), t = -(cos(1) + (n - 1) cos(0))
        n = len(A)
        return 2 * n * n * -(np.cos(1.0) + n - 1) + n * np.trace(A)

    gradient = einderiv.grad(source, "A")
    np.testing.assert_allclose(gradient(A=A), 3 * np.eye(3), rtol=1e-12)
    assert float(einderiv.compile(source)(A=A)) == pytest.approx(g(A), rel=1e-12)
    assert_matches_fd(gradient, g, {"A": A}, "A")
    np.testing.assert_allclose(read_back(gradient, {"A": A}), 3 * np.eye(3), rtol=1e-12)


@pytest.mark.parametrize(
    "program, statement",
    [
        ("t_k = sum_i(a_i + delta_ik); f = t_j b_j", "f = sum_i(a_i + delta_ik) b_k"),
        ("t_k = mean_i(a_i + delta_ik); f = t_j b_j", "f = mean_i(a_i + delta_ik) b_k"),
        ("t_ij = sum_m(s delta_im + delta_jm); f = t_kl B_kl", "f = sum_m(s delta_im + delta_jm) B_ij"),
    ],
)
def test_a_delta_in_a_reduction_ties_the_statement_axis_it_names(program, statement):
    """A hunt's find: ``t_k = sum_i(a_i + delta_ik)`` has a's length (the delta sums i, a's
    index, against k), so ``f = t_j b_j`` with a of 3 and b of 4 is two sizes, as the one
    statement ``f = sum_i(a_i + delta_ik) b_k`` says; the program gave numbers (each of b's 4
    entries got the 1 of the delta).
    With lengths that agree, the two forms give the same value and gradient."""
    s, a, b, B = np.array(0.3), rng.normal(size=3), rng.normal(size=4), rng.normal(size=(3, 4))
    for source in (program, statement):
        compiled = einderiv.compile(source)
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            compiled(**{k: v for k, v in {"s": s, "a": a, "b": b, "B": B}.items() if k in compiled.ranks})
    arrays = {"s": s, "a": a, "b": rng.normal(size=3), "B": rng.normal(size=(3, 3))}
    wrt = "s" if program.startswith("t_ij") else "a"
    values = [einderiv.compile(src) for src in (program, statement)]
    given = {k: arrays[k] for k in values[0].ranks}
    np.testing.assert_allclose(values[0](**given), values[1](**given), rtol=1e-12)
    np.testing.assert_allclose(einderiv.diff(program, wrt)(**given), einderiv.diff(statement, wrt)(**given), rtol=1e-12)


def test_a_call_whose_argument_holds_a_delta_is_sized_by_the_term_around_it():
    """A hunt's find: ``t_i = sum_m(sin(s + delta_im)); f = t_k b_k`` by s is ``b_i cos(s +
    delta_im)``, whose argument, computed as an array of its own, carries i and m only in a
    delta: "the size of index 'i' cannot be inferred", where b_i beside the call sizes it.
    Against NumPy closed forms (m is i's length: the delta sums it against i), finite
    differences, and the printed text read back."""
    s, b, a, B = np.array(0.3), rng.normal(size=4), rng.normal(size=3), rng.normal(size=(3, 4))
    cases = [
        ("t_i = sum_m(sin(s + delta_im)); f = t_k b_k", {"s": s, "b": b}, (np.cos(1.3) + 3 * np.cos(0.3)) * b.sum()),
        ("t_i = sum_m(sin(s + delta_im)); f = t_k B_jk", {"s": s, "B": B}, (np.cos(1.3) + 3 * np.cos(0.3)) * B.sum()),
        ("t_i = exp(delta_im + 2 s); f = t_k a_k", {"s": s, "a": a}, 2 * (np.e + 2) * np.exp(0.6) * a.sum()),
    ]
    for source, arrays, expected in cases:
        gradient = einderiv.grad(source, "s")
        assert float(gradient(**arrays)) == pytest.approx(expected, rel=1e-12), source
        value = einderiv.compile(source)
        assert_matches_fd(gradient, value, arrays, "s")
        assert float(read_back(gradient, arrays)) == pytest.approx(expected, rel=1e-12), source


@pytest.mark.filterwarnings("ignore::einderiv.errors.EinderivWarning")  # i inside and outside the group, as meant
def test_a_letter_printing_moves_apart_keeps_its_size_not_a_hinted_letters():
    """A reviewer's find, silently wrong since before 2026-12-07: the Jacobian by b of ``t =
    ((b_m + A_jj) delta_ii) cos(delta_ji); f_j = t + A_ij`` printed ``delta_ii cos(delta_lm)``
    (cos's i moved out of the way of the count's letter) and sized m as t's b_m, b's 4 where A's
    3 was meant: 42.5 for 22.9 at every entry.  df_j/db_k = n sum_pq cos(delta_pq), n = 3 (A's),
    against that NumPy closed form and finite differences; the printed text read back gives the
    same number or says what it cannot size, never another number."""
    A, b = rng.normal(size=(3, 3)), rng.normal(size=4)
    expected = np.full((3, 4), 3 * np.cos(np.eye(3)).sum())
    for source in (
        "t = ((b_m + A_jj) delta_ii) cos(delta_ji); f_j = t + A_ij",
        "r_m = b_m + A_jj; t = (r_m delta_ii) cos(delta_ji); f_j = t + A_ij",
    ):
        jacobian = einderiv.jacobian(source, "b")
        np.testing.assert_allclose(jacobian(A=A, b=b), expected, rtol=1e-12)
        assert_matches_fd(jacobian, einderiv.compile(source), {"A": A, "b": b}, "b")
        try:
            again = read_back(jacobian, {"A": A, "b": b})
        except einderiv.EvaluationError as err:
            assert "cannot be inferred" in str(err)
        else:
            np.testing.assert_allclose(again, expected, rtol=1e-12)
    # a review's finds: one more statement writing the letter the renamed one took (c_l), whose
    # texts read back with c's length, silently
    c, d = rng.normal(size=5), rng.normal(size=5)
    for source in (
        "t = ((b_m + A_jj) delta_ii) cos(delta_ji); f_j = t c_l d_l + A_ij",
        "t = ((b_m + A_jj) delta_ii) sin(delta_ji); u = t c_l c_l; f_j = u + A_ij",
    ):
        jacobian, arrays = einderiv.jacobian(source, "b"), {"A": A, "b": b, "c": c, "d": d}
        arrays = {k: v for k, v in arrays.items() if k in einderiv.compile(source).ranks}
        assert_matches_fd(jacobian, einderiv.compile(source), arrays, "b")
        try:
            again = read_back(jacobian, arrays)
        except einderiv.EvaluationError as err:
            assert "cannot be inferred" in str(err)
        else:
            np.testing.assert_allclose(again, jacobian(**arrays), rtol=1e-12)
    # a hunt's find of the same kind (2026-12-07): softplus's letters moved out of the way of the
    # count's, and nothing sized them ("cannot be inferred")
    source, a = "t = sum_k(a_k) softplus(delta_kj); f = (t + sum_k(t)) delta_jk", rng.normal(size=4)
    gradient = einderiv.grad(source, "a")
    assert_matches_fd(gradient, einderiv.compile(source), {"a": a}, "a")
    np.testing.assert_allclose(read_back(gradient, {"a": a}), gradient(a=a), rtol=1e-12)


def test_a_statement_letter_is_sized_as_its_statement_sums_it_not_as_another_writes_it():
    """Two of a hunt's finds (2026-12-07), where the function evaluates: ``t_i = sum_j(sin(s +
    delta_ij)); f = t_k B_jk`` by s reused t's j, which f writes at B's rows ("index 'j' has two
    sizes"), and ``t_i = s delta_mn + sin(delta_mi); f = t_k b_k`` by s, ``b_i delta_mm``,
    counted an m no hint named ("cannot be inferred"; t sums m at its own length, b's).  Against
    NumPy closed forms, finite differences, the Hessian's, and the printed text read back."""
    s, b, B, c = np.array(0.3), rng.normal(size=4), rng.normal(size=(3, 4)), rng.normal(size=5)
    cases = [
        ("t_i = sum_j(sin(s + delta_ij)); f = t_k B_jk", {"s": s, "B": B}, (np.cos(1.3) + 3 * np.cos(0.3)) * B.sum()),
        ("t_i = s delta_mn + sin(delta_mi); f = t_k b_k", {"s": s, "b": b}, 4 * b.sum()),
        # a review's find: with another statement writing m at c's length it was 5 sum(b), silently
        ("t_i = s delta_mn + sin(delta_mi); f = t_k b_k + sum_m(c_m)", {"s": s, "b": b, "c": c}, 4 * b.sum()),
    ]
    for source, arrays, expected in cases:
        gradient = einderiv.grad(source, "s")
        assert float(gradient(**arrays)) == pytest.approx(expected, rel=1e-12), source
        assert_matches_fd(gradient, einderiv.compile(source), arrays, "s")
        assert_matches_fd(einderiv.hessian(source, "s"), gradient, arrays, "s")
        assert float(read_back(gradient, arrays)) == pytest.approx(expected, rel=1e-12), source


@pytest.mark.filterwarnings("ignore::einderiv.errors.EinderivWarning")
def test_a_letter_printing_moves_is_none_another_term_of_the_statement_writes():
    """A hunt's find (2026-12-07, in earlier versions too): the Jacobian by A of this program
    printed ``cos(A_nn t + delta_ij) delta_pq t + b_i delta_mm ...``: b's letter l, moved out of
    the way of the count delta_ll, took the i that the first term sums at A's length, and the
    text read back sized that i as b's 4 (-45.5 for -67.8).  The derivative agrees with jax; its
    text reads back as the same number or says what it cannot size."""
    source = (
        "t = mean_k(delta_kk delta_mm A_kn - b_l delta_nj) + c_i sum_o(b_o c_m); "
        "f = delta_ll t b_l + sin(A_ii t + delta_ji)"
    )
    arrays = {"A": rng.normal(size=(3, 3)), "b": rng.normal(size=4), "c": rng.normal(size=5)}
    jacobian = einderiv.jacobian(source, "A")
    assert_matches_fd(jacobian, einderiv.compile(source), arrays, "A")
    try:
        again = read_back(jacobian, arrays)
    except einderiv.EvaluationError as err:
        assert "two sizes" in str(err) or "cannot be inferred" in str(err)
    else:
        np.testing.assert_allclose(again, jacobian(**arrays), rtol=1e-12)


def test_an_hvp_sizes_an_intermediate_as_the_statement_that_uses_it():
    """A hunt's find: ``t_i = delta_ii; f = exp(sum_k(t_k + b_k))`` ties t's length to b's only
    in f, which the HVP (a derivative of the gradient) never differentiates: "the size of output
    index 'i' cannot be inferred", where the gradient and Hessian evaluate.  Against the closed
    form f (Σ v) (t is 1 at each of b's 4 entries) and the Hessian times v."""
    b, v = rng.normal(size=4), rng.normal(size=4)
    source = "t_i = delta_ii; f = exp(sum_k(t_k + b_k))"
    hvp = einderiv.hvp(source, "b")
    expected = np.exp(4 + b.sum()) * v.sum() * np.ones(4)
    np.testing.assert_allclose(hvp(b=b, v=v), expected, rtol=1e-12)
    np.testing.assert_allclose(hvp(b=b, v=v), einderiv.hessian(source, "b")(b=b) @ v, rtol=1e-12)
    # sized by the user's statements, an HVP says "two sizes" where its function does (a hunt's
    # find: these were zeros, with a of 3 and b of 4, where the value and the Hessian refuse)
    a, s = rng.normal(size=3), np.array(0.3)
    for source, wrt in [
        ("f = sum_i(a_i + sum_k(delta_ik b_k))", "a"),
        ("t_i = s + delta_ij; f = sum_i(t_i a_i) + t_k b_k", "b"),
    ]:
        arrays = {"a": a, "b": b, "s": s}
        value, hvp = einderiv.compile(source), einderiv.hvp(source, wrt)
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            value(**{k: arrays[k] for k in value.ranks})
        arrays["v"] = arrays[wrt]
        with pytest.raises(einderiv.EvaluationError, match="two sizes"):
            hvp(**{k: arrays[k] for k in hvp.ranks})


def test_a_hessian_sizes_a_count_of_an_intermediate_only_its_use_sizes():
    """Hunt finds: ``t_i = s + delta_ij`` (length a's, through f's ``t_j a_i delta_ji``) and ``t_i
    = s^2 delta_in`` (length b's, through f's ``sum_k(t_k + b_k)``): their Hessians by s compute
    no t and count its length, which was sized by nothing ("the size of index 'i#dfdt:0:1'
    cannot be inferred").  Against closed forms, and the printed text read back."""
    s, a, b = np.array(0.3), rng.normal(size=3), rng.normal(size=4)
    cases = [
        ("t_i = s + delta_ij; f = s t_i + 2 t_j a_i delta_ji", {"s": s, "a": a}, 2 * 3),
        (
            "t_i = s^2 delta_in; f = exp(sum_k(t_k + b_k))",
            {"s": s, "b": b},
            (8 + (8 * s) ** 2) * np.exp(4 * s**2 + b.sum()),
        ),
    ]
    for source, arrays, expected in cases:
        hessian = einderiv.hessian(source, "s")
        assert float(hessian(**arrays)) == pytest.approx(expected, rel=1e-12), source
        assert float(read_back(hessian, arrays)) == pytest.approx(expected, rel=1e-12), source


def test_a_derivative_named_statement_has_the_axes_of_what_it_differentiates():
    """A hunt's find: the Jacobian of ``t_i = b_i^2 + sum_i(s)`` by s prints ``t_j = b_j^2 +
    sum_j(s); dt_i/ds = delta_jj``, whose i, read back, was sized by nothing ("the size of output
    index 'i' cannot be inferred"): dt_i/ds's first axes are t's."""
    b, A, s = rng.normal(size=4), rng.normal(size=(3, 3)), np.array(0.5)
    for source, of, arrays, expected in [
        ("t_i = b_i^2 + sum_i(s)", None, {"b": b, "s": s}, np.full(4, 4.0)),
        ("t_i = A_ii + sum_i(s); f = mean_i(t_i)", "t", {"A": A, "s": s}, np.full(3, 3.0)),
    ]:
        jacobian = einderiv.jacobian(source, "s", of=of)
        np.testing.assert_allclose(jacobian(**arrays), expected, rtol=1e-12)
        np.testing.assert_allclose(read_back(jacobian, arrays), expected, rtol=1e-12)
    text = "t_i = b_i^2 + s\ndt_i/ds = 1 + 0 s"
    np.testing.assert_allclose(einderiv.compile(text)(b=b, s=s), np.ones(4))
    # the numerator's statement sizes, never computed: f's own m is sized by nothing (a review's find)
    text = "f_i = (0.5 + mean_k(delta_mk)) A_ij c_i\ndf_i/dB_ln = 0"
    got = einderiv.compile(text)(A=rng.normal(size=(3, 4)), c=b[:3], B=rng.normal(size=(3, 5)))
    np.testing.assert_array_equal(got, np.zeros((3, 3, 5)))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f_k = c_k + sum_k(a_k delta_kk)", lambda a, b, c: c + a.sum()),
        ("f_k = c_k + sum_ik(a_i b_k + delta_ik)", lambda a, b, c: c + a.sum() * b.sum() + 3),
        ("f_k = c_k + sum_k(sum_i(a_i + delta_ik) b_k)", lambda a, b, c: c + (a.sum() + 1) * b.sum()),
        ("t_k = c_k + sum_k(mean_i(a_i + delta_ik) b_k); f_j = t_j", lambda a, b, c: c + (a.sum() + 1) / 3 * b.sum()),
    ],
)
def test_a_delta_in_a_reduction_ties_no_letter_a_reduction_rebinds(source, expected):
    """A review's find: the tie of a delta's letter to the statement's own index (above) took
    the k of ``sum_k(... delta_ik ...)``, which the reduction rebinds, for the statement's k:
    with c of 4 and a, b of 3 these stopped with "two sizes".  Against NumPy closed forms."""
    a, b, c = rng.normal(size=3), rng.normal(size=3), rng.normal(size=4)
    compiled = einderiv.compile(source)
    np.testing.assert_allclose(
        compiled(**{k: v for k, v in {"a": a, "b": b, "c": c}.items() if k in compiled.ranks}),
        expected(a, b, c),
        rtol=1e-12,
    )


def test_terms_summing_one_letter_over_two_dimensions_are_not_merged():
    # df/ds = sum_ij exp(p_i s) p_i / (t + q_j) + sum_ij r_j exp(p_i s) p_i: the two j's are q's
    # length (4) and r's (3); the evaluator merged the two terms into (1 / (t + q_j) + r_j)
    source = "t = sum_i(exp(p_i s)); f = sum_j(log(t + q_j)) + sum_i(r_i t)"
    p, q, r, s = rng.uniform(0.1, 1, 3), rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 3), np.array(0.6)
    gradient = einderiv.grad(source, "s")
    t = np.exp(p * s).sum()
    expected = (np.sum(1 / (t + q)) + r.sum()) * (p * np.exp(p * s)).sum()
    assert float(gradient(p=p, q=q, r=r, s=s)) == pytest.approx(expected, rel=1e-12)
    assert float(read_back(gradient, {"p": p, "q": q, "r": r, "s": s})) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("product", ["hvp", "hessian_diag", "vjp"])
def test_a_zero_product_prints_text_that_reads_back(product):
    # d2fdx2v_i = 0 left i unsized when read back; it prints as 0 x_i
    source = "f_i = a_i + 0 x_i" if product == "vjp" else "f = a_i x_i"
    derivative = getattr(einderiv, product)(source, "x")
    arrays = {"a": rng.normal(size=3), "x": rng.normal(size=3), "v": rng.normal(size=3), "u": rng.normal(size=3)}
    assert str(derivative).splitlines()[-1].endswith("= 0 x_" + derivative.expr.indices[0])
    np.testing.assert_array_equal(read_back(derivative, arrays), np.zeros(3))


def test_the_rbf_gradient_never_combines_two_data_matrices_into_a_three_axis_array():
    # 2 X_kl dLdD_kj - 2 Z_jl dLdD_kj shares dLdD, but X_kl - Z_jl would be an N x M x D array that
    # neither term holds: it is two products (X times the row sums of dLdD, and dLdD Z)
    from einderiv.runtime import run

    source = "D_ij = (X_id - Z_jd)^2; K_ij = exp(-0.5 D_ij / ell^2); L = a_i K_ij b_j"
    X, Z, a, b = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)), rng.normal(size=7), rng.normal(size=5)
    ell = np.array(1.3)
    gradient = einderiv.grad(source, "X")
    values = {"X": X, "Z": Z, "a": a, "b": b, "ell": ell}
    run(gradient.line, values)
    three_axis = [name for name, value in values.items() if np.ndim(value) == 3]
    assert len(three_axis) <= 2, three_axis  # the forward X_id - Z_jd and its square, as written
    W = a[:, None] * np.exp(-0.5 * ((X[:, None] - Z[None]) ** 2).sum(-1) / ell**2) * b[None, :]
    expected = (W @ Z - W.sum(1)[:, None] * X) / ell**2
    np.testing.assert_allclose(gradient(X=X, Z=Z, a=a, b=b, ell=ell), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "source",
    [
        "t1 = u_a M_ab u_b; f = sum_ij((softplus(t1))(c) + A_ij)",
        # the count of f's i prints as i, which t1 writes at u's length: t1's i is renamed
        "t1 = u_i M_ik u_k; f = sum_ij((softplus(t1))(c) + A_ij)",
    ],
)
def test_an_adjoint_holding_counts_is_printed_where_its_counts_are_sized(source):
    # f = sum_ij(softplus(t1) c + A_ij) counts I J; the adjoint d2fdudt1_k holding delta_ii delta_jj
    # was printed as a statement of its own, where nothing sizes i and j ("cannot be inferred")
    u, M, A, c = rng.normal(size=3), rng.normal(size=(3, 3)), rng.normal(size=(4, 5)), np.array(0.7)
    hessian = einderiv.hessian(source, "u")
    t1 = u @ M @ u
    s, g = sigmoid(t1), (M + M.T) @ u
    expected = 4 * 5 * 0.7 * (s * (1 - s) * np.outer(g, g) + s * (M + M.T))
    arrays = {"u": u, "M": M, "A": A, "c": c}
    np.testing.assert_allclose(hessian(**arrays), expected, rtol=1e-12)
    np.testing.assert_allclose(read_back(hessian, arrays), expected, rtol=1e-12)


def test_a_residual_is_formed_only_where_it_costs_no_more_than_its_holder():
    # -2 Y_in V_nj + 2 U_ir V_nr V_nj shares V as 2 (U V^T - Y) V: U V^T costs what Y V does.  In
    # 2 A_ij x_j + 2 B_ik C_kj x_j (x A x + x B C x) the sum A + B C would cost n^3 against n^2
    from einderiv.runtime import run

    A, B, C, x = rng.normal(size=(6, 6)), rng.normal(size=(6, 6)), rng.normal(size=(6, 6)), rng.normal(size=6)
    gradient = einderiv.grad("f = x_i A_ij x_j + x_i B_ik C_kj x_j", "x")
    values = {"x": x, "A": A, "B": B, "C": C}
    run(gradient.line, values)
    made = [name for name in values if name not in ("x", "A", "B", "C") and np.ndim(values[name]) == 2]
    assert not made, made  # no n x n array: B C is never formed
    np.testing.assert_allclose(gradient(x=x, A=A, B=B, C=C), (A + A.T) @ x + (B @ C + (B @ C).T) @ x, rtol=1e-12)
    U, V = rng.normal(size=(5, 2)), rng.normal(size=(4, 2))
    Y = rng.normal(size=(5, 4))
    factorisation = einderiv.grad("L = (Y_mn - U_mr V_nr)^2", "U")
    values = {"Y": Y, "U": U, "V": V}
    run(factorisation.line, values)
    assert any(np.shape(values[name]) == Y.shape for name in values if name not in ("Y", "U", "V"))
    np.testing.assert_allclose(factorisation(Y=Y, U=U, V=V), -2 * (Y - U @ V.T) @ V, rtol=1e-12)


def _factorisation_gradients():
    """(source, wrt, the gradient's NumPy closed form) for the dead-array test."""

    def residual(U, V, Y):  # L = ||Y - U V^T||^2 by U
        return -2 * (Y - U @ V.T) @ V

    def shifted(U, V, Y):  # E = U V^T - Y; L = ||E + Y||^2 + sum(E) = ||U V^T||^2 + sum(U V^T) - sum(Y), by V
        return 2 * (U @ V.T).T @ U + np.outer(np.ones(len(V)), U.sum(axis=0))

    return [
        ("P_mn = U_mr V_nr; E_mn = Y_mn - P_mn; L = E_mn E_mn", "U", residual),
        ("P_mn = Y_mn; E_mn = P_mn - U_mr V_nr; L = E_mn E_mn", "U", residual),  # P is Y itself
        ("P_mn = Y_mn; E_mn = U_mr V_nr - P_mn; F_mn = E_mn + P_mn; L = F_mn F_mn + E_mn", "V", shifted),
        ("E_mn = Y_mn - U_mr V_nr; L = E_mn E_mn", "U", residual),
    ]


@pytest.mark.parametrize("source, wrt, closed_form", _factorisation_gradients())
def test_steps_write_into_dead_arrays_never_into_inputs(source, wrt, closed_form):
    # a step may write its sum into an earlier step's array that nothing later reads (E = Y - P
    # in P's memory), never into an input or a view of one; a second call (the cached plan) agrees
    U, V, Y = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), rng.normal(size=(5, 4))
    arrays = {"U": U, "V": V, "Y": Y}
    copies = {k: v.copy() for k, v in arrays.items()}
    expected = closed_form(U, V, Y)
    gradient = einderiv.grad(source, wrt)
    for _ in range(2):
        np.testing.assert_allclose(gradient(**arrays), expected, rtol=1e-12)
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], copies[k])


def test_two_counts_of_one_dimension_in_a_product_print_as_a_power_of_one():
    # df/dx_j counts M's rows twice (t1's I and f's I), both written i: delta_ii delta_ii reads back
    # as I, not I^2, and i9 as nothing; a power of one count, delta_ii^2, reads back as I^2 (until
    # 2026-12-03 t1's i was renamed to l, so that the second count could print as delta_ll)
    source = "t1_k = sum_i((sigmoid((x_k)(x_k)) + M_ik)); f = sum_ik((t1_k + M_ik))"
    x, M = rng.normal(size=4), rng.normal(size=(3, 4))
    gradient = einderiv.diff(source, "x")
    assert str(gradient).splitlines() == [
        "t1_k = sum_i(sigmoid(x_k x_k) + M_ik)",
        "f = sum_ik(t1_k + M_ik)",
        "df/dx_j = 2 sigmoid(x_j x_j) (1 - sigmoid(x_j x_j)) delta_ii^2 x_j",
    ]
    s = sigmoid(x * x)
    expected = 3 * 3 * 2 * s * (1 - s) * x
    np.testing.assert_allclose(gradient(x=x, M=M), expected, rtol=1e-12)
    np.testing.assert_allclose(read_back(gradient, {"x": x, "M": M}), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "source, expected",
    [
        # Q is a view of a shared step (exp(P)^T): F's sum must not be written into it
        ("P_ij = A_ik B_kj\nQ_ij = exp(P_ji)\nF_ij = D_ji + exp(P_ij) - Q_ji", lambda A, B, D: D.T),
        ("P_ij = A_ik B_kj\nQ_ij = P_ji\nF_ij = Q_ij + D_ij + P_ij", lambda A, B, D: (A @ B).T + D + A @ B),
    ],
)
def test_a_step_never_writes_into_an_array_another_value_views(source, expected):
    A, B, D = rng.normal(size=(3, 3, 3))
    compiled = einderiv.compile(source)
    for _ in range(2):
        np.testing.assert_allclose(compiled(A=A, B=B, D=D), expected(A, B, D), rtol=1e-12, atol=1e-12)


def test_a_sum_in_place_keeps_the_result_dtype():
    A, C = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    for source in ("F_ij = exp(A_ij) + C_ij", "Q_ij = exp(A_ij)\nF_ij = Q_ij + C_ij"):
        compiled = einderiv.compile(source)
        got = compiled(A=A, C=C + 1j)  # a float step plus a complex input: complex, not a cast error
        assert got.dtype == np.complex128
        np.testing.assert_allclose(got, np.exp(A) + C + 1j, rtol=1e-14)
        assert compiled(A=A.astype(np.float32), C=C).dtype == np.float64
    assert einderiv.compile("f = A_ij B_kl")(A=A.astype(np.float32), B=C.astype(np.float32)).dtype == np.float32


def _contractions_reading(compiled, name: str) -> list[str]:
    return [
        str(t)
        for step in compiled.line.steps
        if step.contraction is not None
        for t in step.contraction.terms
        if name in t.operands
    ]


def test_a_call_of_a_negated_product_reads_the_product_computed_for_another_call():
    # softplus(-X w) beside softplus(X w): X w once, then its negation (exact), not a second N x D pass
    compiled = einderiv.compile("L = softplus(-X_nd w_d) + softplus(X_nd w_d)")
    assert len(_contractions_reading(compiled, "X")) == 1, _contractions_reading(compiled, "X")
    X, w = rng.normal(size=(40, 3)), rng.normal(size=3)
    z = X @ w
    assert float(compiled(X=X, w=w)) == pytest.approx(np.sum(np.logaddexp(0, -z) + np.logaddexp(0, z)), rel=1e-13)
    assert float(compiled(X=X, w=400 * w)) == pytest.approx(
        np.sum(np.abs(400 * z) + 2 * np.log1p(np.exp(-np.abs(400 * z)))), rel=1e-13
    )


def test_a_term_holding_a_product_an_earlier_step_computed_reads_that_step():
    # the one-statement cross-entropy: -Y_nk X_nd W_dk reads the X W the log-softmax computed
    compiled = einderiv.compile("L = -Y_nk log(softmax_k(X_nd W_dk))")
    assert len(_contractions_reading(compiled, "X")) == 1, _contractions_reading(compiled, "X")
    X, W = rng.normal(size=(30, 4)), rng.normal(size=(4, 3))
    Y = np.eye(3)[rng.integers(0, 3, 30)]
    for scale in (1.0, 300.0):
        Z = scale * X @ W
        log_p = Z - Z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        assert float(compiled(X=X, W=scale * W, Y=Y)) == pytest.approx(-np.sum(Y * log_p), rel=1e-12)


def test_terms_differing_by_one_factor_and_nothing_are_one_contraction():
    # Y_nk P_nj X_ni X_ni - Y_nk P_nj P_nj X_ni X_ni: (1 - P_nj) Y_nk P_nj X_ni X_ni, one N x D x K pass
    source = "Z_nk = X_nd W_dk; P_nk = softmax_k(Z_nk); L = -Y_nk log(P_nk)"
    diagonal = einderiv.hessian_diag(source, "W")
    assert len(_contractions_reading(diagonal, "X")) == 2, _contractions_reading(diagonal, "X")  # Z, and the diagonal
    X, W = rng.normal(size=(30, 4)), rng.normal(size=(4, 3))
    Y = np.eye(3)[rng.integers(0, 3, 30)]
    Z = X @ W
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    expected = np.einsum("ni,nj,n->ij", X**2, P * (1 - P), Y.sum(1))
    np.testing.assert_allclose(diagonal(X=X, W=W, Y=Y), expected, rtol=1e-12)
