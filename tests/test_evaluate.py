"""Evaluation: shapes, dtypes, plan caching and the evaluation-time errors."""

from __future__ import annotations

import numpy as np
import pytest

import einderiv

rng = np.random.default_rng(7)


def test_missing_unknown_and_ill_shaped_arrays():
    d = einderiv.grad("f = x_i A_ij x_j", "x")
    with pytest.raises(einderiv.EvaluationError, match="missing array for 'A'"):
        d(x=np.ones(3))
    with pytest.raises(einderiv.EvaluationError, match="unknown input 'B'"):
        d(x=np.ones(3), A=np.ones((3, 3)), B=1.0)
    with pytest.raises(einderiv.EvaluationError, match=r"input 'A' has 1 axes \(shape \(3,\)\) but is used with 2"):
        d(x=np.ones(3), A=np.ones(3))
    with pytest.raises(einderiv.EvaluationError, match="not an array|numeric"):
        d(x="abc", A=np.ones((3, 3)))


def test_index_bound_to_two_sizes_names_index_tensors_and_sizes():
    with pytest.raises(einderiv.EvaluationError) as info:
        einderiv.evaluate("y_i = A_ij x_j", A=np.ones((2, 3)), x=np.ones(4))
    message = str(info.value)
    assert "'j'" in message and "3" in message and "4" in message and "A axis 1" in message and "x" in message


def test_wrt_rank_and_occurrence_errors():
    with pytest.raises(einderiv.DifferentiationError, match="'Q' does not occur"):
        einderiv.diff("f = x_i x_i", "Q")
    with pytest.raises(einderiv.DifferentiationError, match="has 1 indices but 'A' is used with 2"):
        einderiv.diff("y_i = A_ij x_j", "A_k")
    with pytest.raises(einderiv.DifferentiationError, match="repeats an index"):
        einderiv.diff("f = a_i X_ij b_j", "X_kk")
    with pytest.raises(einderiv.DifferentiationError, match="scalar output"):
        einderiv.grad("y_i = A_ij x_j", "x")
    with pytest.raises(einderiv.DifferentiationError, match="constant"):
        einderiv.diff("f = x_i x_i", "delta_ij")


def test_zero_derivative_is_exact_and_shaped():
    d = einderiv.diff("f_ij = A_ij + 0 x_i x_j", "x")
    assert d.expr.terms == ()
    assert str(d).endswith("= 0")
    out = d(A=np.ones((2, 2)), x=np.ones(2))
    assert out.shape == (2, 2, 2) and not out.any()


def test_float32_is_kept_and_integers_promoted():
    d = einderiv.grad("f = x_i A_ij x_j / 2", "x")
    x32, A32 = np.ones(3, np.float32), np.ones((3, 3), np.float32)
    assert d(x=x32, A=A32).dtype == np.float32
    assert d(x=np.arange(3), A=np.eye(3, dtype=int)).dtype == np.float64


def test_plans_are_cached_per_shape_signature(monkeypatch):
    d = einderiv.jacobian("K_pq = R_mp R_mq", "R")
    import einderiv.contraction as runtime

    calls = []
    original = runtime.contraction_for
    monkeypatch.setattr(runtime, "contraction_for", lambda *a, **k: calls.append(a) or original(*a, **k))
    R = rng.normal(size=(4, 3))
    first = d(R=R)
    planned = len(calls)
    assert planned == 2
    second = d(R=R * 2)
    assert len(calls) == planned  # same shapes: no planning
    np.testing.assert_allclose(second, 2 * first)
    d(R=rng.normal(size=(5, 2)))
    assert len(calls) == 2 * planned


def test_results_never_alias_inputs():
    A = rng.normal(size=(3, 3))
    out = einderiv.evaluate("K_ij = A_ij", A=A)
    out += 1
    assert not np.shares_memory(out, A)
    eye = einderiv.evaluate("E_ij = delta_ij + 0 A_ij", A=A)
    eye[0, 0] = 5  # writable, and not the cached identity
    np.testing.assert_allclose(einderiv.evaluate("E_ij = delta_ij + 0 A_ij", A=A), np.eye(3))


def test_scalar_inputs_and_constants():
    assert float(einderiv.evaluate("f = 2 s + 3", s=1.5)) == 6.0
    d = einderiv.grad("f = s s + 3 s", "s")
    assert float(d(s=2.0)) == 7.0
    d2 = einderiv.hessian("f = s s + 3 s", "s")
    assert float(d2(s=2.0)) == 2.0


def test_shape_for_and_dimension_names():
    d = einderiv.diff("K_pq = R_mp R_mq", "R")
    assert d.shape_for(R=(5, 3)) == (3, 3, 5, 3)
    assert d.shape_text() == "K.shape + R.shape = (P, P, M, P) with R: (M, P)"


def test_deltas_with_summed_indices():
    X = rng.normal(size=(3, 3))
    assert float(einderiv.evaluate("t = delta_ij X_ij", X=X)) == pytest.approx(np.trace(X))
    with pytest.raises(einderiv.EvaluationError, match="size of index 'k' cannot be inferred"):
        einderiv.evaluate("t = x_i x_i delta_kk", x=np.ones(2))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = A_ij B_kl", lambda A, B: A.sum() * B.sum()),
        ("f_k = A_ij B_kl", lambda A, B: A.sum() * B.sum(axis=1)),
        ("f_jk = A_ij B_kl", lambda A, B: np.outer(A.sum(axis=0), B.sum(axis=1))),
    ],
)
def test_operands_sharing_no_index_are_summed_before_they_meet(source, expected):
    # 'ij,kl->' planned by opt_einsum formed the n^4 outer product (n = 300 took 1.3 s, n = 1000
    # did not finish in a minute): each operand's own indices are summed first
    from einderiv.contraction import contraction_for

    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(7, 5)), rng.normal(size=(6, 4))
    np.testing.assert_allclose(einderiv.evaluate(source, A=A, B=B), expected(A, B), rtol=1e-12)
    assert "sums first" in repr(contraction_for("ij,kl->", [(300, 300), (300, 300)]))


def test_a_product_that_sums_nothing_is_right_for_large_transposed_and_mixed_operands():
    """``i,j,ij,->ij`` and its transposes run as broadcast products (opt_einsum's path was 10x
    slower): NumPy closed forms, float32 beside float64 scalars, and inf * 0 as nan without a
    warning, as NumPy's einsum gives it."""
    import warnings

    rng = np.random.default_rng(11)
    a, b, K = rng.normal(size=500), rng.normal(size=400), rng.normal(size=(500, 400))
    c = np.float64(0.3)
    got = einderiv.evaluate("C_ij = c a_i b_j K_ij", a=a, b=b, K=K, c=c)
    np.testing.assert_allclose(got, c * a[:, None] * b[None, :] * K, rtol=1e-14)
    got = einderiv.evaluate("C_ji = a_i K_ij b_j", a=a, b=b, K=K)
    np.testing.assert_allclose(got, (a[:, None] * K * b[None, :]).T, rtol=1e-14)
    got = einderiv.evaluate("C_ij = a_i T_ji", a=a, T=np.ascontiguousarray(K.T))
    np.testing.assert_allclose(got, a[:, None] * K, rtol=1e-14)
    low = einderiv.evaluate("C_ij = c a_i K_ij", a=a.astype(np.float32), K=K.astype(np.float32), c=c)
    np.testing.assert_allclose(low, np.einsum("i,ij->ij", a.astype(np.float32), K.astype(np.float32)) * c, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = einderiv.evaluate("C_ij = a_i z_j", a=np.full(5000, np.inf), z=np.zeros(5000))
    assert np.isnan(got).all()
    assert a.min() != a.max() and K.min() != K.max()  # the inputs were not written into


@pytest.mark.parametrize("scale", [1.0, 1e200])
def test_a_square_of_a_sum_is_multiplied_by_the_contraction_that_reads_it(scale):
    """``sum_d((X_id - Z_jd)^2)`` is one einsum over the differences, not a squared copy of them
    first, and ``(y_n - X_nd w_d)^2`` summed is a dot product: the same numbers as NumPy's, an
    overflow is inf without a warning (as the power's step gave it)."""
    import warnings

    rng = np.random.default_rng(12)
    X, Z = scale * rng.normal(size=(50, 4)), rng.normal(size=(40, 4))
    y, w = rng.normal(size=50), rng.normal(size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distances = einderiv.evaluate("D_ij = (X_id - Z_jd)^2", X=X, Z=Z)
        loss = einderiv.evaluate("L = (y_n - X_nd w_d)^2", X=X, y=y, w=w)
    np.testing.assert_allclose(distances, ((X[:, None, :] - Z[None, :, :]) ** 2).sum(-1), rtol=1e-13)
    np.testing.assert_allclose(loss, ((y - X @ w) ** 2).sum(), rtol=1e-13)
    steps = einderiv.compile("D_ij = (X_id - Z_jd)^2").steps
    assert not [s for s in steps if s.kind == "elementwise"], steps


def test_a_square_beside_other_tensors_keeps_its_solve_and_its_generated_code_stays_quiet():
    """Review findings: the square of a sum as its array twice hid the one weight that a solve
    (``inv(M)_ij r_j^2``) and a weighted Gram product look for, so a solve became an explicit
    inverse; and generated code without an elementwise step warned on overflow where einderiv
    gives inf.  NumPy closed forms."""
    import warnings

    from einderiv.codegen import generate

    rng = np.random.default_rng(13)
    M = rng.normal(size=(6, 6)) + 6 * np.eye(6)
    b, c = rng.normal(size=6), rng.normal(size=6)
    compiled = einderiv.compile("y_i = inv(M)_ij (b_j - c_j)^2")
    assert any(step.kind == "solve" for step in compiled.steps), compiled.steps
    np.testing.assert_allclose(compiled(M=M, b=b, c=c), np.linalg.solve(M, (b - c) ** 2), rtol=1e-12)
    namespace: dict = {}
    exec(generate([einderiv.compile("f = (x_i - y_i)^2")], "python"), namespace)  # noqa: S102 - our own module
    function = next(v for k, v in namespace.items() if k.startswith("f") and callable(v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert function(x=np.array([1e200]), y=np.array([-1e200])) == np.inf
