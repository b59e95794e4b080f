"""How evaluation lays out its work: products of two matrices come back in the result's own
(C) order, a broadcast difference is written C-ordered, and an adjoint that is an outer product of
smaller arrays (``dLdh_nk = r_n W2_k``) is multiplied where it is read rather than stored.  Each
against NumPy's einsum or jax (float64); the speed these buy is measured in ``benchmarks/``."""

from __future__ import annotations

import itertools
import re

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opt_einsum.contract import ContractExpression

import einderiv
from einderiv.contraction import contraction_for, writer


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


def _products_summing_nothing(line, kind) -> list[str]:
    """The steps that are one product of two or more arrays whose letters (``parts``, ``out``)
    pass ``kind``."""
    found = []
    for step in line.steps:
        terms = step.contraction.terms if step.contraction is not None else ()
        if len(terms) == 1 and len(terms[0].operands) >= 2:
            inputs, out = terms[0].subscripts.split("->")
            if kind(inputs.split(","), set(out)):
                found.append(step.target)
    return found


def _outer_products(line) -> list[str]:
    """The steps that store a product of smaller arrays summing nothing (``n,k->nk``)."""
    return _products_summing_nothing(
        line, lambda parts, out: all(set(p) < out for p in parts) and set("".join(parts)) == out
    )


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


def _scalings(line) -> list[str]:
    """The steps that multiply an array by a smaller one, summing nothing (``k,nk->nk``)."""
    return _products_summing_nothing(
        line, lambda parts, out: all(set(p) <= out for p in parts) and any(set(p) < out for p in parts)
    )


def test_a_factor_shared_by_an_adjoints_terms_is_applied_after_its_readers_sum():
    """The two-layer network's Hessian-vector product stored its tangent adjoint
    ``d2LdW1vdh_nk = W2_k (s_n - 2 r_n h_nk t_nk)`` as written, a pass multiplying N x H numbers
    by W2_k; now the sum inside is the step, and its one reader, which sums over n, multiplies
    by W2 after the sum (``m,nm,nl->lm``: D x H numbers).  Against jax in float64."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    arrays, tangent = _network()

    def loss(W1):
        return 0.5 * jnp.sum((jnp.tanh(arrays["X"] @ W1) @ arrays["W2"] - arrays["y"]) ** 2)

    product = einderiv.hvp(NETWORK, "W1", v="v")
    want = jax.jvp(jax.grad(loss), (arrays["W1"],), (tangent,))[1]
    for _ in range(2):  # the second call writes into the arrays the first left
        np.testing.assert_allclose(product(**arrays, v=tangent), want, rtol=1e-10, atol=1e-13)
    assert _scalings(product.line) == [], product.explain({k: v.shape for k, v in arrays.items()} | {"v": (7, 5)})
    (last,) = [step for step in product.line.steps if step.target == product.program.output]
    assert "W2" in last.reads()


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


def _largest_step(compiled, **shapes) -> float:
    return float(compiled.explain(shapes).splitlines()[-1].split("largest intermediate ")[1].split()[0])


def test_an_adjoint_whose_terms_share_factors_is_a_product_of_smaller_arrays():
    """A three-layer sigmoid network's Hessian by W1 computed the adjoints ``d2LdW1ddLdH1_ijnh =
    delta_hj H1_nj X_ni - delta_hj H1_nj^2 X_ni`` and ``d2LdW1dH1_ijnh`` (seven such terms), D x H x
    N x H numbers each (0.26 s against 18 ms for the one statement at N = 500, D = 20, H = 30);
    their terms share factors over fewer axes, so each is the product of those factors and a
    smaller sum, multiplied where it is read.  No step holds D x H x N x H numbers now (N x H x H
    at most, inside the Hessian's own contraction); its numbers against jax."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    program = (
        "A1_nh = X_nd W1_dh; H1_nh = sigmoid(A1_nh); A2_ng = H1_nh W2_hg; H2_ng = sigmoid(A2_ng); "
        "o_n = H2_ng w3_g; L = sum_n((o_n - y_n)^2)"
    )
    statement = "L = sum_n((sigmoid(sigmoid(X_nd W1_dh) W2_hg) w3_g - y_n)^2)"
    gen = np.random.default_rng(1)
    N, D, H, G = 40, 3, 4, 5
    arrays = {
        "X": gen.normal(size=(N, D)),
        "W1": gen.normal(size=(D, H)),
        "W2": gen.normal(size=(H, G)),
        "w3": gen.normal(size=G),
        "y": gen.normal(size=N),
    }

    def loss(W1):
        hidden = jax.nn.sigmoid(jax.nn.sigmoid(arrays["X"] @ W1) @ arrays["W2"])
        return jnp.sum((hidden @ arrays["w3"] - arrays["y"]) ** 2)

    want = jax.hessian(loss)(arrays["W1"])
    shapes = {k: v.shape for k, v in arrays.items()}
    for source in (program, statement):
        hessian = einderiv.hessian(source, "W1")
        np.testing.assert_allclose(hessian(**arrays), want, rtol=1e-10, atol=1e-12)
        assert _largest_step(hessian, **shapes) <= max(want.size, N * H * H), hessian.explain(shapes)


ONE_PASS = ["j,nj,nj->n", "n,nk,nk->k", "nk,nk,nk->n", "nk,k,nk,n->", "ij,ji,i->j"]


@pytest.mark.parametrize("subscripts", ONE_PASS)
@given(n=st.integers(1, 300), k=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10, deadline=None)
def test_a_weighted_sum_of_a_product_runs_in_one_pass_and_is_right(subscripts, n, k, seed):
    """``j,nj,nj->n`` (the Hessian-vector product's row sums): NumPy's einsum in one pass where
    the operands are large, rather than opt_einsum's N x J intermediate; against NumPy's einsum,
    with an inf and a NaN entry where einsum has NaN and inf."""
    sizes = {"n": n, "k": k, "j": k, "i": n}
    inputs = subscripts.split("->")[0].split(",")
    shapes = [tuple(sizes[c] for c in sub) for sub in inputs]
    if inputs[1:2] == ["ji"]:
        shapes[1] = shapes[0][::-1]
    gen = np.random.default_rng(seed)
    arrays = [gen.normal(size=s) for s in shapes]
    function = contraction_for(subscripts, shapes)
    np.testing.assert_allclose(function(*arrays), np.einsum(subscripts, *arrays), rtol=1e-10, atol=1e-10)
    if max(np.prod(s) for s in shapes) > 4096 and subscripts != "ij,ji,i->j":
        # one pass (or a weighted column sum's own path), no pairwise intermediate
        assert not isinstance(function, ContractExpression)
    arrays[0].flat[0], arrays[-1].flat[-1] = np.inf, np.nan
    with np.errstate(all="ignore"):
        got, want = function(*arrays), np.einsum(subscripts, *arrays)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_a_scaled_later_term_written_into_the_kept_array_is_the_same_sum():
    """``C_nk = q_n - 2 r_n h_nk t_nk``: the second term, its coefficient folded into r, is
    written into the array the call before left; every call gives NumPy's numbers."""
    gen = np.random.default_rng(3)
    arrays = {"q": gen.normal(size=2000), "r": gen.normal(size=2000)}
    arrays |= {"h": gen.normal(size=(2000, 300)), "t": gen.normal(size=(2000, 300))}
    want = arrays["q"][:, None] - 2 * arrays["r"][:, None] * arrays["h"] * arrays["t"]
    other = {name: gen.normal(size=value.shape) for name, value in arrays.items()}
    other_want = other["q"][:, None] - 2 * other["r"][:, None] * other["h"] * other["t"]
    function = einderiv.compile("C_nk = q_n - 2 r_n h_nk t_nk")
    first = function(**arrays)
    np.testing.assert_allclose(first, want, rtol=1e-13, atol=1e-13)
    for _ in range(2):  # two input sets in turn: a stale array would show
        np.testing.assert_allclose(function(**other), other_want, rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(function(**arrays), first)


def test_the_step_function_keeps_nan_and_the_dtype():
    """relu's derivative evaluated on NumPy as ``x > 0`` with NaN copied in: 0 at both zeros and
    at -inf, 1 at inf, NaN at NaN, x's float dtype, also for a 0-d array."""
    x = np.array([np.nan, 0.0, -0.0, 2.5, -1.0, np.inf, -np.inf])
    want = np.array([np.nan, 0, 0, 1, 0, 1, 0])
    for dtype in (np.float64, np.float32):
        got = einderiv.evaluate("y_i = step(x_i)", x=x.astype(dtype))
        np.testing.assert_array_equal(got, want.astype(dtype))
        assert got.dtype == dtype
    assert np.isnan(einderiv.evaluate("y = step(x)", x=np.float64("nan")))
    assert einderiv.evaluate("y = step(x)", x=np.array(3.0)) == 1.0
    gen = np.random.default_rng(0)
    A = gen.normal(size=(300, 40))
    A[0, 0] = np.nan
    w = gen.normal(size=40)
    gradient = einderiv.grad("L = relu(A_nk) w_k", "A")(A=A, w=w)
    want = (A > 0) * w
    want[0, 0] = np.nan
    np.testing.assert_array_equal(gradient, want)


def test_sigmoid_on_numpy_is_the_documented_formula_to_the_bit():
    """sigmoid on NumPy arrays takes its numerator as maximum(e, x >= 0) rather than NumPy's slow
    three-operand where: the same numbers as where(x < 0, e, 1) / (1 + e) with e = exp(-|x|), to
    the bit, at NaN, both infinities, both zeros, 745, -746 and the smallest subnormal; float32
    stays float32; and within 2 ulp of mpmath."""
    import mpmath

    gen = np.random.default_rng(4)
    for dtype in (np.float64, np.float32):
        x = (gen.normal(size=5000) * 60).astype(dtype)
        x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 745.0, -746.0, 5e-324]
        with np.errstate(all="ignore"):
            e = np.exp(np.minimum(x, -x))
            want = np.where(x < 0, e, 1) / (1 + e)
        got = einderiv.evaluate("y_i = sigmoid(x_i)", x=x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
    x = np.array([-700.0, -40.0, -1.5, 0.3, 36.0])
    exact = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(v)))) for v in x])
    np.testing.assert_allclose(einderiv.evaluate("y_i = sigmoid(x_i)", x=x), exact, rtol=4.5e-16)


def test_reciprocals_on_numpy_are_np_reciprocal_to_the_bit():
    """x^-1 and x^-2 on real NumPy arrays divide 1 by x (NumPy's reciprocal is a scalar loop, 2x
    slower): the same correctly rounded quotients as np.reciprocal, at NaN, both infinities, both
    zeros (±inf), subnormals and huge values, float32 kept; a complex array still evaluates."""
    gen = np.random.default_rng(8)
    for dtype in (np.float64, np.float32):
        with np.errstate(all="ignore"):
            x = (gen.normal(size=3000) * 10.0 ** gen.integers(-30, 30, size=3000)).astype(dtype)
            x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, 1e308, -3.0]
            got = einderiv.evaluate("y_i = x_i^-1", x=x)
            squared = einderiv.evaluate("y_i = x_i^-2", x=x)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, np.reciprocal(x))
            # the square of the reciprocal: 1 / x^2 overflowed to 0 from x = 1.3e154
            np.testing.assert_array_equal(squared, np.square(np.reciprocal(x)))
    z = np.array([1 + 2j, -0.5j])
    np.testing.assert_allclose(einderiv.evaluate("y_i = z_i^-1", z=z), 1 / z, rtol=1e-15)


def test_softplus_on_numpy_is_logaddexps_formula_in_vector_ufuncs():
    """softplus on NumPy arrays is max(x, 0) + log1p(exp(-|x|)), NumPy's logaddexp(0, x) formula
    run as vectorised ufuncs (logaddexp is a scalar loop, 8x slower at 20000 values): within 2
    ulp of mpmath from -800 to 800 and at the subnormals (NumPy's vector exp may differ from the
    C library's by an ulp), the same as logaddexp at NaN, both
    infinities and both zeros, float32 kept, a 0-d array and a scalar evaluated too."""
    import mpmath

    gen = np.random.default_rng(7)
    x = np.concatenate([gen.normal(size=400) * 300, gen.normal(size=200) * 3, [5e-324, -5e-324, 36.7, -36.7, 1e-17]])
    exact = np.array([float(mpmath.log1p(mpmath.exp(mpmath.mpf(v)))) for v in x])
    got = einderiv.evaluate("y_i = softplus(x_i)", x=x)
    assert np.all(np.abs(got - exact) <= 2 * np.spacing(np.abs(exact)))
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 745.0, -746.0])
    with np.errstate(all="ignore"):
        for dtype in (np.float64, np.float32):
            got = einderiv.evaluate("y_i = softplus(x_i)", x=special.astype(dtype))
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, np.logaddexp(dtype(0), special.astype(dtype)))
    assert einderiv.evaluate("y = softplus(x)", x=np.array(-2.0)) == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-15)
    assert einderiv.evaluate("y = softplus(x)", x=3.0) == pytest.approx(3 + np.log1p(np.exp(-3.0)), rel=1e-15)


@st.composite
def _contractions(draw):
    """Three to five operands over the letters a-e (no letter twice in one operand), an output
    of letters they hold, and sizes from 1 to 24."""
    letters = "abcde"
    count = draw(st.integers(3, 5))
    subs = ["".join(draw(st.permutations(letters))[: draw(st.integers(1, 3))]) for _ in range(count)]
    held = sorted(set("".join(subs)))
    output = "".join(draw(st.permutations(held))[: draw(st.integers(0, min(3, len(held))))])
    sizes = {c: draw(st.integers(1, 24)) for c in letters}
    return ",".join(subs) + "->" + output, [tuple(sizes[c] for c in sub) for sub in subs]


@given(case=_contractions(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_a_contraction_of_three_or_more_operands_is_einsums_on_every_call(case, seed):
    """Pairwise steps on opt_einsum's path, each intermediate in its readers' axis order and
    written, from the second call on, into the array the call before left: the same numbers as
    NumPy's einsum on every call, also into an array given, and NaN where einsum has it."""
    subscripts, shapes = case
    gen = np.random.default_rng(seed)
    arrays = [gen.normal(size=shape) for shape in shapes]
    function = contraction_for(subscripts, shapes)
    want = np.einsum(subscripts, *arrays)
    for _ in range(3):
        np.testing.assert_allclose(function(*arrays), want, rtol=1e-10, atol=1e-10)
    into = writer(function, len(arrays))
    if into is not None and want.ndim:
        np.testing.assert_allclose(into(*arrays, out=np.empty_like(want)), want, rtol=1e-10, atol=1e-10)
    # a NaN reaches the same entries in any order of the sums (an inf need not: inf - inf)
    arrays[-1].flat[-1] = np.nan
    with np.errstate(all="ignore"):
        got, want = function(*arrays), np.einsum(subscripts, *arrays)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize(
    "subscripts, shapes",
    [
        ("no,mo,nm,nl->lm", [(300, 10), (200, 10), (300, 200), (300, 100)]),
        ("ij,jk,kl->il", [(200, 150), (150, 160), (160, 170)]),
    ],
)
def test_kept_intermediates_of_a_pairwise_contraction_never_leak_into_a_later_call(subscripts, shapes):
    """From the second call on, a contraction of three or more operands writes its
    intermediates (here 256 KB and 480 KB) into the arrays the call before left: two input sets
    in turn, each against NumPy's einsum; a result given back is not written into again; the
    array given for the result holds it."""
    function = contraction_for(subscripts, shapes)
    assert "pairwise" in repr(function) and writer(function, len(shapes)) is not None
    gen = np.random.default_rng(5)
    sets = [[gen.normal(size=shape) for shape in shapes] for _ in range(2)]
    wants = [np.einsum(subscripts, *arrays) for arrays in sets]
    results = []
    for call in range(6):
        got = function(*sets[call % 2])
        np.testing.assert_allclose(got, wants[call % 2], rtol=1e-10, atol=1e-10)
        results.append((got.copy(), got))
    assert function._spares and any(a is not None for a in function._spares[0])  # reuse happened
    for copy, returned in results:
        np.testing.assert_array_equal(returned, copy)
    out = np.full_like(wants[0], np.nan)
    writer(function, len(shapes))(*sets[0], out=out)
    np.testing.assert_allclose(out, wants[0], rtol=1e-10, atol=1e-10)


def test_the_relu_networks_gradient_meets_its_mask_in_the_masks_order():
    """``2 R_no W2_mo step(A_nm) X_nl``: opt_einsum made R W2^T as an ``mn`` array and multiplied
    it into the ``nm`` mask across the grain (5 ms against 1.3 ms at 2000 x 200); now the pairs
    are a matmul into ``nm``, a broadcast product, a matmul.  Against jax in float64."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    shapes = [(300, 10), (200, 10), (300, 200), (300, 100)]
    function = contraction_for("no,mo,nm,nl->lm", shapes)
    assert [repr(f).split(":")[0] for _, f in function.steps] == [
        "<contraction no,mo->nm",
        "<contraction nm,nm->nm",
        "<contraction nl,nm->lm",
    ]
    gen = np.random.default_rng(0)
    X, W1, W2, Y = (
        gen.normal(size=(300, 100)),
        gen.normal(size=(100, 200)),
        gen.normal(size=(200, 10)),
        gen.normal(size=(300, 10)),
    )
    program = "A_nj = X_ni W1_ij; H_nj = relu(A_nj); O_nk = H_nj W2_jk; R_nk = O_nk - Y_nk; L = R_nk R_nk"
    gradient = einderiv.grad(program, "W1")
    want = jax.grad(lambda W: jnp.sum((jnp.maximum(X @ W, 0) @ W2 - Y) ** 2))(W1)
    for _ in range(3):
        np.testing.assert_allclose(gradient(X=X, W1=W1, W2=W2, Y=Y), want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("subscripts", ["n,k->nk", "k,n->nk", "nj,nk->njk", "nj,kn->kjn"])
def test_an_outer_product_keeps_the_sign_of_a_zero_and_writes_into_an_array_given(subscripts):
    """An outer product on its own is NumPy's multiply of broadcast views, to the bit: -0.0 stays
    -0.0 (a reviewer's find on a version that sent it to einsum, whose sum from +0 made 1 / (a_i b_j)
    +inf where a_i = -0.0), inf times 0 is NaN; also into an array given."""
    sizes = {"n": 2000, "k": 30, "j": 20}
    inputs, output = subscripts.split("->")
    gen = np.random.default_rng(6)
    arrays = [gen.normal(size=[sizes[c] for c in sub]) for sub in inputs.split(",")]
    arrays[0].flat[0], arrays[0].flat[2], arrays[1].flat[1] = np.inf, -0.0, np.nan
    views = [
        np.expand_dims(
            a.transpose(sorted(range(a.ndim), key=lambda i: output.index(sub[i]))),
            [i for i, c in enumerate(output) if c not in sub],
        )
        for a, sub in zip(arrays, inputs.split(","))
    ]
    with np.errstate(all="ignore"):
        want = views[0] * views[1]
        function = contraction_for(subscripts, [a.shape for a in arrays])
        got = function(*arrays)
        into, out = writer(function, 2), np.empty(want.shape)
        if into is not None:
            into(*arrays, out=out)
    for result in (got, out) if into is not None else (got,):
        np.testing.assert_array_equal(result, want)
        np.testing.assert_array_equal(np.signbit(result), np.signbit(want))


def test_an_intermediate_outer_product_of_a_pairwise_contraction_is_einsums():
    """Inside a contraction that sums afterwards (the logistic third derivative's
    ``n,ni,nj,nk,n->ijk``), the batched outer product ``nj,nk->njk`` is NumPy's einsum, 1.5x
    faster than broadcast multiplies; the whole against NumPy's einsum."""
    shapes = [(2000,), (2000, 20), (2000, 20), (2000, 20), (2000,)]
    function = contraction_for("n,ni,nj,nk,n->ijk", shapes)
    kinds = [
        getattr(f, "func", None) is np.einsum and "->" in f.args[0] and len(f.args[0].split(",")) == 2
        for _, f in function.steps
    ]
    assert any(kinds)
    gen = np.random.default_rng(7)
    arrays = [gen.normal(size=shape) for shape in shapes]
    for _ in range(2):
        np.testing.assert_allclose(function(*arrays), np.einsum("n,ni,nj,nk,n->ijk", *arrays), rtol=1e-11, atol=1e-11)


@st.composite
def _batched(draw):
    """Two operands sharing batch letters (in the result, first) and summed ones, each with
    kept letters of its own in either order: ``klj,kj->kl``, ``bij,bjk->bik``, ``bjk,bij->bki``."""
    letters = list(draw(st.permutations("bcijkl")))
    batch, summed = letters[: draw(st.integers(1, 2))], letters[2:3]
    kept_a = letters[3 : 3 + draw(st.integers(0, 1))]
    kept_b = letters[4 : 4 + draw(st.integers(0 if kept_a else 1, 2))]
    a = "".join(draw(st.permutations(batch + kept_a + summed)))
    b = "".join(draw(st.permutations(batch + summed + kept_b)))
    kept = kept_a + kept_b if draw(st.booleans()) else kept_b + kept_a
    sizes = {c: draw(st.integers(1, 6)) for c in batch} | {c: draw(st.integers(8, 40)) for c in letters[2:]}
    return f"{a},{b}->{''.join(batch + kept)}", [tuple(sizes[c] for c in a), tuple(sizes[c] for c in b)]


@given(case=_batched(), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32, np.complex128]))
@settings(max_examples=60, deadline=None)
def test_a_batched_product_is_a_matmul_of_stacked_views_and_right(case, seed, dtype):
    """A product over shared batch letters and summed ones runs as BLAS's stacked matmul where
    there is enough work per matrix (NumPy's einsum ran ``klj,kj->kl`` of the RBF kernel's
    gradient 1.6x slower, ``bij,bjk->bik`` 6x): NumPy's einsum's numbers in the result's
    C order, into an array given too, and NaN where einsum has it."""
    subscripts, shapes = case
    gen = np.random.default_rng(seed)
    arrays = [gen.normal(size=shape).astype(dtype) for shape in shapes]
    if dtype is np.complex128:
        arrays = [x + 1j * gen.normal(size=x.shape) for x in arrays]
    function = contraction_for(subscripts, shapes)
    want = np.einsum(subscripts, *arrays)
    rtol = 1e-4 if dtype is np.float32 else 1e-11
    for _ in range(2):
        got = function(*arrays)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 10)
        assert got.dtype == want.dtype
        assert got.flags.c_contiguous or "batched" not in repr(function)  # (einsum's small products)
    for order in "CF":  # an array of the runtime's (C-ordered), or of any other layout
        out = np.full(want.shape, np.nan, dtype=want.dtype, order=order)
        writer(function, 2)(*arrays, out=out)
        np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * 10)
    arrays[0].flat[-1] = np.nan
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(np.isnan(function(*arrays)), np.isnan(np.einsum(subscripts, *arrays)))


def test_a_broadcast_product_multiplies_its_small_operands_at_their_own_size(monkeypatch):
    """The cosine-similarity gradient's ``c_i A_ij a_i^-3 b_i^-1``: the product of the three
    vectors went into the N x D array given, then each later factor in place, three passes over
    it (2.2 ms for 0.54 at 10000 x 128, and the program 1.3x its one statement).  The vectors are
    multiplied at their own size; the one pass over N x D writes the array given.  The same
    numbers as the product in that order, to the bit."""
    from einderiv.contraction import _broadcast_product

    gen = np.random.default_rng(0)
    n, d = 300, 40
    c, a, b, A = gen.normal(size=n), gen.normal(size=n), gen.normal(size=n), gen.normal(size=(n, d))
    function = contraction_for("i,ij,i,i->ij", [c.shape, A.shape, a.shape, b.shape])
    assert "broadcast products" in repr(function)
    multiply, large = np.multiply, []

    class Counted:  # np.multiply, counting the calls that write an array of N x D numbers
        def __call__(self, *args, **kwargs):
            given = kwargs.get("out", args[2] if len(args) > 2 else None)
            large.append(given is not None and np.size(given) == n * d)
            return multiply(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(multiply, name)

    into = writer(function, 4)
    monkeypatch.setattr(np, "multiply", Counted())
    out = np.full((n, d), np.nan)
    got = into(c, A, a, b, out=out)
    monkeypatch.setattr(np, "multiply", multiply)
    assert got is out and sum(large) == 1, large
    np.testing.assert_array_equal(got, ((c * a * b)[:, None]) * A)
    # a letter of the result no operand has: the product broadcast into the array given
    spread = _broadcast_product(["ij", "i"], "ijk", [A.shape, c.shape])
    out = np.empty((n, d, 3))
    assert spread(A, c, out=out) is out
    np.testing.assert_array_equal(out, np.broadcast_to((c[:, None] * A)[:, :, None], (n, d, 3)))


def test_a_stack_whose_matrices_blas_cannot_read_is_copied_first():
    """The Gaussian mixture's gradient ``in,nji->ij`` (means by a 5000 x 16 x 16 difference whose
    batch letter i is innermost) stacked views whose matrices have unit stride along neither
    axis: NumPy's matmul ran them in a loop of its own, 3.6 ms where einsum takes 1.3.  Such a
    stack is copied C-ordered; one BLAS can read (a C-ordered stack, a transposed one, one row)
    is handed over as it is.  Against NumPy's einsum."""
    from einderiv.contraction import _blas_ready

    gen = np.random.default_rng(0)
    r = gen.normal(size=(500, 16, 8))
    p = gen.random((8, 500))
    strided = r.transpose(2, 0, 1)  # (i, n, j): strides (8, 1024, 64) bytes
    copied = _blas_ready(strided)
    assert copied is not strided and copied.flags.c_contiguous
    np.testing.assert_array_equal(copied, strided)
    for ready in (r, r.transpose(0, 2, 1), p[:, None, :], np.ascontiguousarray(strided)):
        assert _blas_ready(ready) is ready
    function = contraction_for("in,nji->ij", [p.shape, r.shape])
    assert "batched matmul" in repr(function)
    np.testing.assert_allclose(function(p, r), np.einsum("in,nji->ij", p, r), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "subscripts, shapes, batched",
    [
        ("klj,kj->kl", [(500, 10, 400), (500, 400)], True),  # the RBF kernel's gradient
        ("bij,bjk->bik", [(8, 256, 64), (8, 64, 256)], True),
        ("bjk,bij->bki", [(8, 64, 256), (8, 256, 64)], True),  # the operands swapped
        ("njk,nk->nj", [(100000, 2, 2), (100000, 2)], False),  # 4 numbers a matrix: einsum's loop
        ("nk,nkd->nd", [(20000, 5), (20000, 5, 4)], False),
        ("bij,bjk->ikb", [(8, 64, 32), (8, 32, 64)], False),  # the batch letter last: not stacked
    ],
)
def test_which_batched_products_go_to_matmul(subscripts, shapes, batched):
    function = contraction_for(subscripts, shapes)
    assert ("batched matmul" in repr(function)) == batched, repr(function)
    arrays = [np.random.default_rng(1).normal(size=shape) for shape in shapes]
    np.testing.assert_allclose(function(*arrays), np.einsum(subscripts, *arrays), rtol=1e-11, atol=1e-11)


def _across_the_grain(compiled, **shapes) -> list[str]:
    """The einsum subscripts of ``compiled``'s plan that meet two arrays of the same letters in
    different orders (``ka,ak->ka``): one of them is read transposed, against its memory order."""
    found = []
    for line in compiled.explain(**shapes).splitlines():
        for subscripts in re.findall(r"'([^']*->[^']*)'", line):
            inputs, output = subscripts.split("->")
            arrays = [a for a in [*inputs.split(","), output] if len(set(a)) >= 2]
            if any(set(a) == set(b) and a != b for a in arrays for b in arrays):
                found.append(subscripts)
    return found


def test_the_one_statement_attention_gradient_reads_its_arrays_as_the_program_does():
    """``softmax_j(c Q_id K_jd) V_je G_ie`` by Q: the product ``V_je G_ke`` that both terms share
    was laid out j, k as written, beside the softmax laid out k, j, so two passes read it across
    the grain (the one statement took 1.4x hand NumPy, its program 1.1x).  It is now laid out as
    the softmax it meets.  Against jax in float64."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    shapes = {"Q": (40, 8), "K": (30, 8), "V": (30, 6), "G": (40, 6), "c": ()}
    one = einderiv.grad("L = softmax_j(c Q_id K_jd) V_je G_ie", "Q")
    program = einderiv.grad("S_ij = c Q_id K_jd; A_ij = softmax_j(S_ij); O_ie = A_ij V_je; L = O_ie G_ie", "Q")
    assert _across_the_grain(one, **shapes) == [] == _across_the_grain(program, **shapes)
    gen = np.random.default_rng(1)
    arrays = {k: gen.normal(size=s) for k, s in shapes.items()}
    arrays["c"] = np.float64(0.35)

    def loss(Q):
        return jnp.sum(jax.nn.softmax(arrays["c"] * Q @ arrays["K"].T, axis=1) @ arrays["V"] * arrays["G"])

    want = jax.grad(loss)(arrays["Q"])
    for gradient in (one, program):
        np.testing.assert_allclose(gradient(**arrays), want, rtol=1e-12, atol=1e-12)


def test_sums_over_samples_of_different_outputs_form_no_larger_residual():
    """``L_kj = sum_n(exp(A_nk)) - sum_n(A_nj)``: the two terms carry different output letters, so
    a residual formed before the sum would be N x K x J (1.3 s and 500 MB at 400 x 400 in a
    review of this session's change); it stays two sums, the largest step A's size.  Against
    NumPy."""
    A = np.random.default_rng(4).normal(size=(40, 30))
    compiled = einderiv.compile("L_kj = sum_n(exp(A_nk)) - sum_n(A_nj)")
    largest = float(compiled.explain(A=A.shape).splitlines()[-1].split("largest intermediate ")[1].split()[0])
    assert largest <= A.size
    np.testing.assert_allclose(compiled(A=A), np.exp(A).sum(0)[:, None] - A.sum(0)[None, :], rtol=1e-13)


@pytest.mark.parametrize(
    "source, exact",
    [
        (
            "y_i = -x_i log(x_i) - (1 - x_i) log(1 - x_i)",
            lambda t: -t * mpmath.log(t) - (1 - t) * mpmath.log(1 - t),
        ),
        (
            "y_i = x_i log(x_i / 0.3) + (1 - x_i) log((1 - x_i) / 0.7)",
            lambda t: t * mpmath.log(t / mpmath.mpf("0.3")) + (1 - t) * mpmath.log((1 - t) / mpmath.mpf("0.7")),
        ),
    ],
)
def test_a_number_minus_a_tensor_times_a_call_is_evaluated_as_that_product(source, exact):
    # -(1 - x) log1p(-x), expanded, was computed as x (log1p(-x) - log(x)) - log1p(-x): two numbers
    # of 27.6 whose difference is the entropy, 10% off at x = 1 - 2^-50 (jax, as written, is exact)
    x = np.array([1 - 2.0**-50, 1 - 1e-12, 0.3, 1e-12])
    mpmath.mp.dps = 50
    try:
        expected = [float(exact(mpmath.mpf(float(t)))) for t in x]
    finally:
        mpmath.mp.dps = 15
    # (the divergence at x = 0.3 is 0 to 3e-34: the rounding of log(0.3 / 0.3) alone)
    np.testing.assert_allclose(einderiv.compile(source)(x=x), expected, rtol=1e-14, atol=1e-15)


def test_a_diagonal_beside_a_number_is_no_residual():
    # a review's find: A_ii was taken for the x of a F + b x F, a step over 'ii': einsum refused it
    rng = np.random.default_rng(0)
    A, y, x = rng.normal(size=(3, 3)), rng.normal(size=3), rng.normal(size=3)
    d = np.diag(A)
    np.testing.assert_allclose(einderiv.evaluate("f_i = 2 y_i + 3 A_ii y_i", A=A, y=y), (2 + 3 * d) * y, rtol=1e-14)
    np.testing.assert_allclose(einderiv.evaluate("f_i = 2 A_ii + 3 A_ii y_i", A=A, y=y), (2 + 3 * y) * d, rtol=1e-14)
    gradient = einderiv.grad("f = sum_i((1 + A_ii) x_i^2)", "x")
    np.testing.assert_allclose(gradient(A=A, x=x), 2 * (1 + d) * x, rtol=1e-14)


def test_the_square_of_a_difference_summed_alone_is_read_as_the_difference_twice():
    # beside Rs_nk, (X_nd - C_kd)^2 was squared into a copy of the N x K x D differences first,
    # then summed over d with Rs (a hunter's find: 10x the time of the program's one einsum)
    rng = np.random.default_rng(0)
    X, C, Rs, s2 = rng.normal(size=(7, 5)), rng.normal(size=(3, 5)), rng.random((7, 3)), np.float64(1.3)
    gradient = einderiv.grad("L = -Rs_nk (lw_k - 0.5 sum_d((X_nd - C_kd)^2) / s2)", "s2")
    report = gradient.explain(X=X.shape, C=C.shape, Rs=Rs.shape, lw=(3,), s2=())
    assert "^2" not in report  # no elementwise square of the differences
    squares = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(gradient(X=X, C=C, Rs=Rs, lw=np.zeros(3), s2=s2), -0.5 * (Rs * squares).sum() / s2**2)


def test_a_mean_of_a_diagonal_beside_a_saturating_product_is_a_vector():
    # a hunter's find: mean_v(T_uuv) was named as a step over (u, u), and the Hessian stopped with
    # NumPy's "strides is incompatible" (explain: "'u' appeared more than once in the output")
    rng = np.random.default_rng(0)
    T, x = rng.normal(size=(3, 3, 4)), rng.normal(size=3)
    source = "f_u = mean_v(T_uuv) sum_m(softplus(x_m))"
    hessian = einderiv.diff(source, ["x", "x"])
    s = 1 / (1 + np.exp(-x))
    expected = np.einsum("uuv->u", T)[:, None, None] / 4 * np.diag(s * (1 - s))[None]
    np.testing.assert_allclose(hessian(T=T, x=x), expected, rtol=1e-13, atol=1e-15)
    assert "largest intermediate" in hessian.explain(T=T.shape, x=x.shape)


def test_a_deep_networks_hessian_keeps_its_grouping_by_the_last_layer():
    """A review's find on this session's merge of ``a F + b x F`` over summed indices: in a 4-layer
    network's Hessian by W1 (128 terms, more than the saturating pass takes) it merged by
    ``H1^2``, a power of a tanh step, before factoring could group the sum by the last layer's
    polynomial in H3: 4.76e8 FLOPs at these sizes for 3.33e8 (1.5x the time), and 8x the rounding
    error.  Its plan is the grouped one again; its numbers against jax."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    source = (
        "H1_nh = tanh(X_nd W1_dh + b1_h); H2_ng = tanh(H1_nh W2_hg); H3_nk = sigmoid(H2_ng W3_gk); "
        "o_n = H3_nk w4_k; L = 0.5 sum_n((o_n - y_n)^2)"
    )
    gen = np.random.default_rng(2)
    N, D, H, G, K = 200, 10, 15, 12, 6
    shapes = {"X": (N, D), "W1": (D, H), "b1": (H,), "W2": (H, G), "W3": (G, K), "w4": (K,), "y": (N,)}
    arrays = {k: gen.normal(size=s) for k, s in shapes.items()}
    hessian = einderiv.hessian(source, "W1")
    flops = float(hessian.explain(shapes).splitlines()[-1].split(" steps, ")[1].split()[0])
    assert flops < 4e8, hessian.explain(shapes)

    def loss(W1):
        h = jnp.tanh(jnp.tanh(arrays["X"] @ W1 + arrays["b1"]) @ arrays["W2"])
        o = jax.nn.sigmoid(h @ arrays["W3"]) @ arrays["w4"]
        return 0.5 * jnp.sum((o - arrays["y"]) ** 2)

    np.testing.assert_allclose(hessian(**arrays), jax.hessian(loss)(arrays["W1"]), rtol=1e-10, atol=1e-12)


def test_a_float64_term_is_not_rounded_into_a_float32_sum_of_earlier_terms():
    """A review's find: f_ij = A_ij + A_ji - x_i x_j with a float32 A and a float64 x returned
    float32, the x x^T term subtracted in place into A + A^T (its 1e-9 parts lost), while
    x_i x_j + A_ij + A_ji gave float64: NumPy's A + A.T - outer(x, x) is float64."""
    A, x = np.float32([[1.0, 2.0], [3.0, 4.0]]), np.array([1e-9, 2.0])
    expected = A + A.T - np.outer(x, x)
    for source in ("f_ij = A_ij + A_ji - x_i x_j", "f_ij = A_ij + A_ji + x_i x_j - 2 x_i x_j"):
        got = einderiv.evaluate(source, A=A, x=x)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)


def test_a_product_formed_later_is_read_by_the_earlier_step_that_holds_it():
    """The focal loss's Hessian-vector product as a program: ``d2LdwvddLdp_n = _t11_n X_ni v_i``
    came before the pair step ``X_ni v_i`` that later terms share, and formed X v again (a second
    pass over X; the program ran 1.35x its one statement).  The earlier step reads the pair, which
    moves up before it: X meets v once.  Against jax's jvp of its grad, in float64."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    program = "z_n = X_nd w_d; p_n = sigmoid(z_n); L = -y_n (1 - p_n)^2 log(p_n) - (1 - y_n) p_n^2 log(1 - p_n)"
    gen = np.random.default_rng(2)
    X, w, v = gen.normal(size=(300, 6)) / 2, gen.normal(size=6), gen.normal(size=6)
    y = (gen.random(300) > 0.5).astype(float)

    def loss(w):
        p = jax.nn.sigmoid(X @ w)
        z = X @ w
        return jnp.sum(-y * (1 - p) ** 2 * jax.nn.log_sigmoid(z) - (1 - y) * p**2 * jax.nn.log_sigmoid(-z))

    product = einderiv.hvp(program, "w", v="v")
    want = jax.jvp(jax.grad(loss), (w,), (v,))[1]
    np.testing.assert_allclose(product(X=X, y=y, w=w, v=v), want, rtol=1e-10, atol=1e-12)
    meets = [
        step.target
        for step in product.line.steps
        if step.contraction is not None and any({"X", "v"} <= set(term.operands) for term in step.contraction.terms)
    ]
    assert len(meets) == 1, product.explain(X=X.shape, y=y.shape, w=w.shape, v=v.shape)
    targets = [step.target for step in product.line.steps]
    for step in product.line.steps:  # every array is computed before a step reads it
        assert all(targets.index(name) < targets.index(step.target) for name in step.reads() if name in targets)


def test_a_scaled_product_in_an_earlier_call_reads_the_product_a_later_step_forms():
    """The one-statement linear VAE's ``exp(0.5 X_nj B_jk)`` beside ``exp(X_nd B_dk) - X_nd B_dk``
    formed X B twice (the statement ran 1.5x its program): the call's argument reads the product
    the later step forms, scaled (one pass over N x K).  Against NumPy."""
    gen = np.random.default_rng(3)
    X, B, E = gen.normal(size=(400, 30)) / 5, gen.normal(size=(30, 6)) / 5, gen.normal(size=(400, 6))
    source = "L = sum_nk(exp(0.5 X_nj B_jk) E_nk + exp(X_nd B_dk) - X_nd B_dk)"
    compiled = einderiv.compile(source)
    P = X @ B
    np.testing.assert_allclose(compiled(X=X, B=B, E=E), np.sum(np.exp(0.5 * P) * E + np.exp(P) - P), rtol=1e-12)
    meets = [
        step.target
        for step in compiled.line.steps
        if step.contraction is not None and any({"X", "B"} <= set(term.operands) for term in step.contraction.terms)
    ]
    assert len(meets) == 1, compiled.explain(X=X.shape, B=B.shape, E=E.shape)


def test_a_product_read_by_an_earlier_step_moves_no_higher_than_what_its_hints_name():
    """A reviewer's find: the HVP of this program split an adjoint into ``_inner = _t0_k Y_nk W_dk``
    (its size hints naming the adjoint dfdt2), and the earlier statement t2 came to read it, the
    step moving above dfdt2, which its hints read: a KeyError when evaluated.  Against jax."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    source = "t2_nd = c_k u_n Y_nk W_dk + u_n Y_nk W_dk; f = tanh(X_ne t2_nd t2_nd)"
    gen = np.random.default_rng(0)
    arrays = {
        "c": gen.normal(size=3),
        "u": gen.normal(size=5),
        "Y": gen.normal(size=(5, 3)),
        "W": gen.normal(size=(4, 3)),
        "X": gen.normal(size=(5, 4)),
        "tt": gen.normal(size=5),
    }
    arrays = {k: 0.3 * v for k, v in arrays.items()}
    product = einderiv.hvp(source, "u", v="tt")

    def loss(u):  # e, written once, is summed outside the tanh, as einderiv reads it
        t2 = jnp.einsum("k,n,nk,dk->nd", 1 + arrays["c"], u, arrays["Y"], arrays["W"])
        return jnp.sum(jnp.tanh(jnp.einsum("ne,nd,nd->e", arrays["X"], t2, t2)))

    want = jax.jvp(jax.grad(loss), (arrays["u"],), (arrays["tt"],))[1]
    got = product(**{k: arrays[k] for k in product.inputs})
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    targets = [step.target for step in product.line.steps]
    for step in product.line.steps:
        assert all(targets.index(name) < targets.index(step.target) for name in step.reads() if name in targets)


def test_a_product_with_a_coefficient_of_a_power_of_two_is_read_back_exactly():
    """The one-statement heteroscedastic loss ``0.5 (y_n - X_nd w_d)^2 exp(-X_nd u_d) + 0.5 X_nd u_d``
    formed X u twice (the statement's value 1.5x its program): the step ``-X_nd u_d`` has a
    coefficient, and only products of coefficient 1 were read back.  One of +-2^k is read back
    times its reciprocal, which is exact.  Against NumPy."""
    gen = np.random.default_rng(4)
    X, y, w, u = gen.normal(size=(500, 8)), gen.normal(size=500), gen.normal(size=8), 0.3 * gen.normal(size=8)
    source = "L = 0.5 (y_n - X_nd w_d)^2 exp(-X_nd u_d) + 0.5 X_nd u_d"
    compiled = einderiv.compile(source)
    s = X @ u
    want = np.sum(0.5 * (y - X @ w) ** 2 * np.exp(-s) + 0.5 * s)
    np.testing.assert_allclose(compiled(X=X, y=y, w=w, u=u), want, rtol=1e-13)
    meets = [
        step.target
        for step in compiled.line.steps
        if step.contraction is not None and any({"X", "u"} <= set(term.operands) for term in step.contraction.terms)
    ]
    assert len(meets) == 1, compiled.explain(X=X.shape, y=y.shape, w=w.shape, u=u.shape)
