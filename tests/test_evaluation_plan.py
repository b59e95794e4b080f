"""How evaluation lays out its work: products of two matrices come back in the result's own
(C) order, a broadcast difference is written C-ordered, and an adjoint that is an outer product of
smaller arrays (``dLdh_nk = r_n W2_k``) is multiplied where it is read rather than stored.  Each
against NumPy's einsum or jax (float64); the speed these buy is measured in ``benchmarks/``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einderiv
from einderiv.contraction import contraction_for


def _orientations():
    """Every product of two matrices over one shared index: a in {xy, yx}, b in {yz, zy}, the
    result xz or zx."""
    for a, b, out in itertools.product(("xy", "yx"), ("yz", "zy"), ("xz", "zx")):
        yield f"{a},{b}->{out}"


@pytest.mark.parametrize("subscripts", list(_orientations()))
@given(x=st.integers(1, 90), y=st.integers(1, 90), z=st.integers(1, 90), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_a_product_of_two_matrices_is_c_ordered_and_right(subscripts, x, y, z, seed):
    """opt_einsum returned U V^T as the transpose of V U^T (an F-ordered array), which every
    elementwise step after it read across the grain; sizes on both sides of the small-operand path."""
    sizes = {"x": x, "y": y, "z": z}
    a, b = subscripts.split("->")[0].split(",")
    gen = np.random.default_rng(seed)
    A, B = gen.normal(size=[sizes[i] for i in a]), gen.normal(size=[sizes[i] for i in b])
    got = contraction_for(subscripts, [A.shape, B.shape])(A, B)
    np.testing.assert_allclose(got, np.einsum(subscripts, A, B), rtol=1e-12, atol=1e-12)
    assert got.flags.c_contiguous
    A.flat[0], B.flat[-1] = np.inf, np.nan  # non-finite entries: NaN and inf where einsum has them
    with np.errstate(all="ignore"):
        got, want = contraction_for(subscripts, [A.shape, B.shape])(A, B), np.einsum(subscripts, A, B)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_a_matrix_product_and_a_broadcast_difference_evaluate_c_ordered():
    gen = np.random.default_rng(0)
    U, V = gen.normal(size=(300, 20)), gen.normal(size=(200, 20))
    P = einderiv.evaluate("P_mn = U_mr V_nr", U=U, V=V)
    np.testing.assert_allclose(P, U @ V.T, rtol=1e-12)
    assert P.flags.c_contiguous
    X, Z = gen.normal(size=(50, 10)), gen.normal(size=(40, 10))
    E = einderiv.evaluate("E_ijd = X_id - Z_jd", X=X, Z=Z)
    np.testing.assert_array_equal(E, X[:, None, :] - Z[None, :, :])
    assert E.flags.c_contiguous
    Y = gen.normal(size=(300, 200))
    R = einderiv.evaluate("R_mn = Y_mn - U_mr V_nr", Y=Y, U=U, V=V)
    np.testing.assert_allclose(R, Y - U @ V.T, rtol=1e-12, atol=1e-12)
    for _ in range(2):  # a later call writes into the arrays the first one left: the same numbers
        np.testing.assert_array_equal(einderiv.evaluate("R_mn = Y_mn - U_mr V_nr", Y=Y, U=U, V=V), R)


NETWORK = "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2"


def _network(n=300, d=7, h=5):
    gen = np.random.default_rng(1)
    return {
        "X": gen.normal(size=(n, d)) / np.sqrt(d),
        "y": gen.random(n),
        "W1": 0.5 * gen.normal(size=(d, h)),
        "W2": 0.5 * gen.normal(size=h),
    }, gen.normal(size=(d, h))


def _outer_products(line) -> list[str]:
    """The steps that store a product of smaller arrays summing nothing (``n,k->nk``)."""
    found = []
    for step in line.steps:
        terms = step.contraction.terms if step.contraction is not None else ()
        if len(terms) == 1 and len(terms[0].operands) >= 2:
            inputs, out = terms[0].subscripts.split("->")
            parts = inputs.split(",")
            if all(set(p) < set(out) for p in parts) and set("".join(parts)) == set(out):
                found.append(step.target)
    return found


def test_an_outer_product_adjoint_is_multiplied_where_it_is_read():
    """The gradient and the Hessian-vector product of a two-layer network stored the adjoint
    ``dLdh_nk = (h_ni W2_i - y_n) W2_k`` (an N x H pass its readers read back); now it is
    multiplied in its readers' products, and the HVP pulls W2_k out of a sum of four terms.
    The printed derivative still names the adjoint."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    arrays, tangent = _network()

    def loss(W1):
        return 0.5 * jnp.sum((jnp.tanh(arrays["X"] @ W1) @ arrays["W2"] - arrays["y"]) ** 2)

    gradient = einderiv.grad(NETWORK, "W1")
    product = einderiv.hvp(NETWORK, "W1", v="v")
    assert "dLdh_nk" in str(gradient) and "dLdh_nk" in str(product)
    np.testing.assert_allclose(gradient(**arrays), jax.grad(loss)(arrays["W1"]), rtol=1e-11, atol=1e-13)
    want = jax.jvp(jax.grad(loss), (arrays["W1"],), (tangent,))[1]
    np.testing.assert_allclose(product(**arrays, v=tangent), want, rtol=1e-10, atol=1e-13)
    for compiled in (gradient, product):
        assert "dLdh" not in {step.target for step in compiled.line.steps}
        assert _outer_products(compiled.line) == []


def test_adjoints_substituted_one_into_another_leave_no_reader_behind():
    """A reviewer's find on a first version: in a three-layer network's Hessian, dLdg was
    substituted into d2LdW1dh after the loop had copied the list, so the Hessian read the removed
    dLdg (KeyError).  Hessian, its diagonal, gradient and HVP against jax."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    source = "h_nk = tanh(X_nd W1_dk); g_nj = tanh(h_nk W2_kj); L = 0.5 (g_nj W3_j - y_n)^2"
    gen = np.random.default_rng(0)
    arrays = {
        "X": gen.normal(size=(6, 3)),
        "W1": gen.normal(size=(3, 4)),
        "W2": gen.normal(size=(4, 5)),
        "W3": gen.normal(size=5),
        "y": gen.normal(size=6),
    }

    def loss(W1):
        return 0.5 * jnp.sum((jnp.tanh(jnp.tanh(arrays["X"] @ W1) @ arrays["W2"]) @ arrays["W3"] - arrays["y"]) ** 2)

    W1, tangent = arrays["W1"], gen.normal(size=(3, 4))
    hessian = jax.hessian(loss)(W1)
    np.testing.assert_allclose(einderiv.hessian(source, "W1")(**arrays), hessian, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        einderiv.hessian_diag(source, "W1")(**arrays), np.einsum("ijij->ij", hessian), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(einderiv.grad(source, "W1")(**arrays), jax.grad(loss)(W1), rtol=1e-11, atol=1e-13)
    want = jax.jvp(jax.grad(loss), (W1,), (tangent,))[1]
    np.testing.assert_allclose(einderiv.hvp(source, "W1", v="v")(**arrays, v=tangent), want, rtol=1e-10, atol=1e-12)
