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
