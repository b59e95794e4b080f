"""The typed evaluation program: every interpreter handles every kind of step, a program that
uses every kind gives the same numbers through each (against NumPy closed forms), and
``explain`` reports what opt_einsum counts."""

from __future__ import annotations

import numpy as np
import opt_einsum
import pytest

import einderiv
from einderiv.codegen import CODE_FOR, generate
from einderiv.runtime import EXPLAIN, GENERIC_STEPS, NUMPY_INSTRUCTIONS
from einderiv.steps import STEP_KINDS

#: uses every kind of step: a contraction, elementwise calls, softmax, logsumexp, a matrix
#: function (det), a solve (inv(M) times a vector), a log-softmax (log(p)) and log(1 - exp(u))
EVERY_KIND = (
    "p_k = softmax_k(z_k); q_k = log(p_k); h_i = tanh(inv(M)_ij b_j); "
    "L = logsumexp_k(z_k) + det(M) + p_k z_k + h_i h_i + q_k y_k + log(1 - exp(-1 - z_k^2))"
)


def test_every_interpreter_handles_every_kind_of_step():
    for table in (NUMPY_INSTRUCTIONS, GENERIC_STEPS, CODE_FOR, EXPLAIN):
        assert set(table) == set(STEP_KINDS)


def closed_form(z, M, b, y):
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    h = np.tanh(np.linalg.solve(M, b))
    return (
        np.log(np.exp(z).sum()) + np.linalg.det(M) + p @ z + h @ h + np.log(p) @ y + np.log1p(-np.exp(-1 - z**2)).sum()
    )


def softmax_jacobian(z):
    """diag(p) - p p^T in closed form, its diagonal as p times the other entries' sum."""
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    jacobian = -np.outer(p, p)
    np.fill_diagonal(jacobian, [p[k] * np.delete(p, k).sum() for k in range(len(z))])
    return jacobian


def softmax_jvp(z, v):
    """(diag(p) - p p^T) v in closed form, as p (v - v_t) - p Σ p (v - v_t) with t the largest
    entry of p (the same number, as Σ p = 1; at t, Σ over the others only)."""
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    d = v - v[np.argmax(p)]
    return p * d - p * (p @ d)


def test_a_program_with_every_kind_of_step_is_right_through_every_interpreter():
    """The value of :data:`EVERY_KIND`, the Hessian of logsumexp (whose diagonal takes a
    softmax's complement step) and its HVP (a softmax's centred step), through NumPy, generated
    code and torch."""
    rng = np.random.default_rng(0)
    z, M, b = rng.normal(size=5), 3 * np.eye(3) + 0.3 * rng.normal(size=(3, 3)), rng.normal(size=3)
    y, v = rng.random(5), rng.normal(size=5)
    compiled = einderiv.compile(EVERY_KIND)
    hessian = einderiv.hessian("f = logsumexp_k(z_k)", "z")
    product = einderiv.hvp("f = logsumexp_k(z_k)", "z")
    kinds = {step.kind for function in (compiled, hessian, product) for step in function.steps}
    assert kinds == {kind.kind for kind in STEP_KINDS}
    saturated = np.array([40.0, 0.0, -5.0, 1.0, -1.0])
    cases = [
        (compiled, "L", {"z": z, "M": M, "b": b, "y": y}, closed_form(z, M, b, y)),
        (hessian, "d2f", {"z": z}, softmax_jacobian(z)),
        (hessian, "d2f", {"z": saturated}, softmax_jacobian(saturated)),
        (product, "hvp_f", {"z": z, "v": v}, softmax_jvp(z, v)),
        (product, "hvp_f", {"z": saturated, "v": v}, softmax_jvp(saturated, v)),
    ]
    torch = pytest.importorskip("torch")
    for function, name, arrays, expected in cases:
        np.testing.assert_allclose(function(**arrays), expected, rtol=1e-12)  # NumPy
        namespace: dict = {}
        exec(generate(function, "python"), namespace)  # the generated module, not user text
        generated = next(f for n, f in namespace.items() if n.startswith(name) and callable(f))
        np.testing.assert_allclose(generated(**arrays), expected, rtol=1e-12)
        value = function(**{k: torch.tensor(v) for k, v in arrays.items()})  # generic
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


def test_explain_counts_what_opt_einsum_counts():
    hessian = einderiv.hessian("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w")
    text = hessian.explain(X=(500, 40), y=(500,), w=(40,))
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["step", "kind", "shape", "FLOPs", "largest"]
    final = next(line for line in lines if line.startswith(hessian.program.output + " "))
    info = opt_einsum.contract_path("n,ni,nj->ij", (500,), (500, 40), (500, 40), shapes=True)[1]
    assert f"{int(info.opt_cost):.3g}" in final and "(40, 40)" in final
    assert lines[-1].startswith(f"{len(hessian.steps)} steps")
    assert "contraction" in repr(hessian) and f"{len(hessian.steps)} steps" in repr(hessian)


def test_explain_refuses_shapes_as_shape_for_does():
    gradient = einderiv.grad("f = x_i A_ij x_j", "x")
    with pytest.raises(einderiv.EvaluationError, match="two sizes|has"):
        gradient.explain(x=(3,), A=(4, 4))
