"""Derivatives with respect to symmetric and diagonal matrices.

The default convention, sym(G) = (G + G^T)/2, is checked by central differences along random
symmetric directions E (S + tE stays symmetric): <grad, E> = d/dt f(S + tE). The Matrix
Cookbook's G + G^T - G o I by perturbing S_ij and S_ji together. Both against closed forms of
Matrix Cookbook identities for symmetric S (Petersen and Pedersen, sections 2.1-2.4 and 8.1)."""

from __future__ import annotations

import numpy as np
import pytest

import einderiv

rng = np.random.default_rng(11)
n = 4
B0 = rng.normal(size=(n, n))
S = B0 @ B0.T + n * np.eye(n)  # symmetric positive definite
A, Bm = rng.normal(size=(n, n)), rng.normal(size=(n, n))
a, b, x = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
r = rng.normal(size=(6, n))
Si = np.linalg.inv(S)


def sym(M):
    return 0.5 * (M + M.T)


#: (name, source, f(S) in NumPy, closed form of sym(G)), the Matrix Cookbook's identities
IDENTITIES = [
    ("log det", "f = logdet(S)", lambda S: np.linalg.slogdet(S)[1], Si),
    ("det", "f = det(S)", np.linalg.det, np.linalg.det(S) * Si),
    ("trace of A S", "f = A_ij S_ji", lambda S: np.trace(A @ S), sym(A)),
    ("trace of S squared", "f = S_ij S_ji", lambda S: np.trace(S @ S), 2 * S),
    ("Frobenius norm squared", "f = S_ij S_ij", lambda S: np.sum(S * S), 2 * S),
    ("quadratic form", "f = x_i S_ij x_j", lambda S: x @ S @ x, np.outer(x, x)),
    ("bilinear form", "f = a_i S_ij b_j", lambda S: a @ S @ b, sym(np.outer(a, b))),
    ("inverse quadratic form", "f = a_i inv(S)_ij a_j", lambda S: a @ np.linalg.inv(S) @ a, -Si @ np.outer(a, a) @ Si),
    (
        "inverse bilinear form",
        "f = a_i inv(S)_ij b_j",
        lambda S: a @ np.linalg.inv(S) @ b,
        -Si @ sym(np.outer(a, b)) @ Si,
    ),
    ("trace of inverse times A", "f = inv(S)_ij A_ji", lambda S: np.trace(np.linalg.inv(S) @ A), -Si @ sym(A) @ Si),
    ("trace of A S B", "f = A_ij S_jk B_ki", lambda S: np.trace(A @ S @ Bm), sym(A.T @ Bm.T)),
    ("x^T S S x", "f = x_i S_ij S_jk x_k", lambda S: x @ S @ S @ x, np.outer(S @ x, x) + np.outer(x, S @ x)),
    (
        "Gaussian log-likelihood by its covariance",
        "L = -0.5 logdet(S) delta_nn - 0.5 r_ni inv(S)_ij r_nj",
        lambda S: -0.5 * len(r) * np.linalg.slogdet(S)[1] - 0.5 * np.sum((r @ np.linalg.inv(S)) * r),
        -0.5 * len(r) * Si + 0.5 * Si @ (r.T @ r) @ Si,
    ),
]
IDS = [c[0] for c in IDENTITIES]


def arrays_for(derivative):
    known = {"S": S, "A": A, "B": Bm, "a": a, "b": b, "x": x, "r": r}
    return {k: v for k, v in known.items() if k in derivative.ranks}


@pytest.mark.parametrize(("name", "source", "f", "closed"), IDENTITIES, ids=IDS)
def test_the_symmetric_gradient_is_the_closed_form_and_the_directional_derivative(name, source, f, closed):
    gradient = einderiv.grad(source, "S", symmetric=["S"])
    got = gradient(**arrays_for(gradient))
    np.testing.assert_allclose(got, closed, rtol=1e-9, atol=1e-11, err_msg=name)
    np.testing.assert_allclose(got, got.T, rtol=1e-12, atol=1e-14)
    for _ in range(3):  # along symmetric directions: <grad, E> is the derivative of f(S + tE)
        E = sym(rng.normal(size=(n, n)))
        h = 1e-6
        fd = (f(S + h * E) - f(S - h * E)) / (2 * h)
        assert abs(np.sum(got * E) - fd) <= 1e-6 * max(1.0, abs(fd)), (name, np.sum(got * E), fd)


@pytest.mark.parametrize(("name", "source", "f", "closed"), IDENTITIES, ids=IDS)
def test_the_cookbook_convention_moves_each_distinct_entry(name, source, f, closed):
    gradient = einderiv.grad(source, "S", symmetric=["S"], symmetric_convention="cookbook")
    got = gradient(**arrays_for(gradient))
    np.testing.assert_allclose(got, 2 * closed - np.diag(np.diag(closed)), rtol=1e-9, atol=1e-11, err_msg=name)
    h = 1e-6
    for i, j in [(0, 0), (1, 2), (3, 0)]:  # S_ij and S_ji move together: one variable
        E = np.zeros((n, n))
        E[i, j] = E[j, i] = 1.0
        fd = (f(S + h * E) - f(S - h * E)) / (2 * h)
        assert abs(got[i, j] - fd) <= 1e-6 * max(1.0, abs(fd)), (name, (i, j), got[i, j], fd)


def test_matrix_notation_prints_the_symmetric_forms():
    assert einderiv.grad("f = logdet(S)", "S", symmetric=["S"]).matrix() == "df/dS = S^-1"
    assert einderiv.grad("f = a_i inv(S)_ij a_j", "S", symmetric=["S"]).matrix() == "df/dS = -S^-1 a a^T S^-1"
    text = einderiv.grad("f = A_ij S_ji", "S", symmetric=["S"]).matrix()
    assert text in ("df/dS = 0.5 A^T + 0.5 A", "df/dS = 0.5 A + 0.5 A^T", "df/dS = (A + A^T) / 2")


def test_without_a_declaration_the_gradient_is_the_unconstrained_one():
    gradient = einderiv.grad("f = A_ij S_ji", "S")
    np.testing.assert_allclose(gradient(A=A, S=S), A.T)  # G, not sym(G)


def test_diagonal_matrices_take_the_diagonal_of_the_gradient():
    D = np.diag(rng.normal(size=n))
    gradient = einderiv.grad("f = x_i D_ij A_jk x_k", "D", diagonal=["D"])
    got = gradient(x=x, D=D, A=A)
    np.testing.assert_allclose(got, np.diag(np.diag(np.outer(x, A @ x))), rtol=1e-12)
    E = np.diag(rng.normal(size=n))
    h = 1e-6
    fd = (x @ (D + h * E) @ A @ x - x @ (D - h * E) @ A @ x) / (2 * h)
    assert abs(np.sum(got * E) - fd) < 1e-8


def test_the_symmetric_hessian_and_hvp_agree_with_differences_of_the_symmetric_gradient():
    source = "f = a_i inv(S)_ij a_j"
    gradient = einderiv.grad(source, "S", symmetric=["S"])
    E = sym(rng.normal(size=(n, n)))
    h = 1e-5
    fd = (gradient(a=a, S=S + h * E) - gradient(a=a, S=S - h * E)) / (2 * h)
    hessian = einderiv.hessian(source, "S", symmetric=["S"])(a=a, S=S)
    np.testing.assert_allclose(np.einsum("ijkl,kl->ij", hessian, E), fd, rtol=1e-6, atol=1e-8)
    product = einderiv.hvp(source, "S", symmetric=["S"])(a=a, S=S, v=E)
    np.testing.assert_allclose(product, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: einderiv.grad("f = logdet(S)", "S", symmetric=["Q"]), "'Q' is not an input"),
        (lambda: einderiv.grad("f = x_i x_i", "x", symmetric=["x"]), "used with 1 indices"),
        (lambda: einderiv.grad("f = logdet(S)", "S", symmetric=["S"], diagonal=["S"]), "as symmetric and as diagonal"),
        # 'S' is named as symmetric and as symmetric, before
        (lambda: einderiv.grad("f = logdet(S)", "S", symmetric=["S", "S"]), "'S' is named twice in symmetric="),
        (lambda: einderiv.grad("f = logdet(S)", "S", symmetric_convention="upper"), "must be one of frobenius"),
        (lambda: einderiv.grad("f = logdet(S)", "S", symmetric=["S"])(S=A), "declared symmetric"),
        (lambda: einderiv.grad("f = x_i D_ij x_j", "D", diagonal=["D"])(x=x, D=A), "declared diagonal"),
        # a bare TypeError ('int' object is not iterable) before
        (lambda: einderiv.grad("f = logdet(S)", "S", symmetric=3), r"takes a list of input names, such as symmetric="),
        (lambda: einderiv.hvp("f = x_i D_ij x_j", "D", diagonal=True), r"diagonal= takes a list of input names"),
    ],
)
def test_bad_declarations_are_clear_errors(call, message):
    with pytest.raises(einderiv.EinderivError, match=message):
        call()


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "einderiv", *args], capture_output=True, text=True, timeout=120)


def test_cli_symmetric_diff_and_check_use_the_convention_asked_for():
    done = run_cli("diff", "f = logdet(S)", "--wrt", "S", "--symmetric", "S", "--format", "matrix")
    assert done.returncode == 0 and done.stdout.strip() == "df/dS = S^-1", done.stderr
    claim = "-S^-1 a a^T S^-1"
    done = run_cli("check", "f = a_i inv(S)_ij a_j", "--wrt", "S", "--symmetric", "S", "--expect", claim)
    assert done.returncode == 0 and "matches" in done.stdout, done.stdout + done.stderr
    done = run_cli("check", "f = a_i inv(S)_ij a_j", "--wrt", "S", "--symmetric", "S", "--convention", "cookbook")
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr
    done = run_cli(
        "check",
        "f = a_i inv(S)_ij a_j",
        "--wrt",
        "S",
        "--symmetric",
        "S",
        "--convention",
        "cookbook",
        "--expect",
        claim,
    )
    assert done.returncode == 1 and "DIFFERS" in done.stdout  # the cookbook's off-diagonal entries are doubled


def test_a_matrix_declared_symmetric_or_diagonal_is_read_as_a_matrix_in_matrix_notation():
    """``Y = S^-1 A`` names no rank: S was read as a scalar (S^-1 a number), and symmetric=["S"]
    then refused it as "used with 0 indices, not 2"; a declared structure says S is a matrix."""
    rng = np.random.default_rng(3)
    S, A = sym(rng.normal(size=(3, 3))) + 3 * np.eye(3), rng.normal(size=(3, 2))
    E = sym(rng.normal(size=(3, 3)))
    product = einderiv.jvp("Y = S^-1 A", "S", symmetric=["S"])
    inverse = np.linalg.inv(S)
    np.testing.assert_allclose(product(S=S, A=A, v=E), -inverse @ E @ inverse @ A, rtol=1e-10)
    x, D = rng.normal(size=3), np.diag(rng.normal(size=3))
    gradient = einderiv.grad("f = x^T D x", "D", diagonal=["D"])
    np.testing.assert_allclose(gradient(x=x, D=D), np.diag(x * x), rtol=1e-12)
    with pytest.raises(einderiv.EinderivError, match="used with 1 indices, not 2"):
        einderiv.diff("f = x^T D x", "D", diagonal=["D"], ranks={"D": 1})  # a rank given is kept
    done = run_cli("diff", "Y = S^-1 A", "--wrt", "S", "--symmetric", "S")
    assert done.returncode == 0 and "read as: Y_ij = inv(S)_ik A_kj" in done.stdout, done.stdout + done.stderr
    done = run_cli("diff", "f = x^T A x", "--wrt", "A", "--symmetric", "S")
    assert done.returncode == 2 and done.stderr.startswith("error: symmetric matrix 'S' is not an input"), done.stderr


def test_check_api_projects_the_finite_differences():
    result = einderiv.check("f = x_i S_ij S_jk x_k", "S", symmetric=["S"])
    assert result.ok and result.error < 1e-8
    result = einderiv.check("f = x_i D_ij A_jk x_k", "D", diagonal=["D"])
    assert result.ok


def test_every_path_refuses_an_array_that_is_not_what_was_declared():
    calls = [
        lambda: einderiv.jvp("f_k = S_kj x_j", "S", symmetric=["S"])(S=A, x=x, v=S),
        lambda: einderiv.hessian_diag("f = x_i S_ij S_jk x_k", "S", symmetric=["S"])(S=A, x=x),
        lambda: einderiv.grad("f = x_i S_ij S_jk x_k", ["S", "x"], symmetric=["S"])(S=A, x=x),
        lambda: einderiv.value_and_grad("f = x_i S_ij x_j", "S", symmetric=["S"])(S=A, x=x),
    ]
    for call in calls:
        with pytest.raises(einderiv.EvaluationError, match="declared symmetric"):
            call()


def test_a_float32_symmetric_matrix_is_accepted_at_its_own_precision():
    B = rng.normal(size=(n, n)).astype(np.float32)
    S32 = (B * np.float32(3.3)) @ B.T + n * np.eye(n, dtype=np.float32)  # symmetric up to float32 rounding
    gradient = einderiv.grad("f = logdet(S)", "S", symmetric=["S"])
    np.testing.assert_allclose(gradient(S=S32), np.linalg.inv(S32.astype(np.float64)), rtol=1e-4)


def test_check_handles_a_second_derivative_by_a_symmetric_matrix():
    for convention in ("frobenius", "cookbook"):
        result = einderiv.check("f = a_i inv(S)_ij a_j", ["S", "S"], symmetric=["S"], symmetric_convention=convention)
        assert result.ok, result.report()


def test_products_refuse_the_cookbook_convention():
    with pytest.raises(einderiv.DifferentiationError, match="cookbook"):
        einderiv.jvp("f_k = S_kj S_ji x_i", "S", symmetric=["S"], symmetric_convention="cookbook")
    with pytest.raises(einderiv.DifferentiationError, match="cookbook"):
        einderiv.hvp("f = a_i inv(S)_ij a_j", "S", symmetric=["S"], symmetric_convention="cookbook")


def test_products_by_a_plain_vector_beside_a_cookbook_symmetric_matrix_are_not_refused():
    """A hunt's find: an HVP or JVP by a vector was refused ("would double the direction's
    off-diagonal entries") because another input was declared symmetric under the cookbook
    convention, which only a direction of that matrix meets.  Against NumPy's closed forms."""
    rng = np.random.default_rng(4)
    a, v, M = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(3, 3))
    S = M + M.T
    options = {"symmetric": ["S"], "symmetric_convention": "cookbook"}
    hvp = einderiv.hvp("f = a_i S_ij a_j", "a", **options)
    np.testing.assert_allclose(hvp(a=a, S=S, v=v), 2 * S @ v, rtol=1e-12)
    jvp = einderiv.jvp("f = a_i S_ij a_j", "a", **options)
    assert float(jvp(a=a, S=S, v=v)) == pytest.approx(2 * a @ S @ v, rel=1e-12)
    for product in (einderiv.hvp, einderiv.jvp):  # not a list of names: the one error for it (a review's find)
        with pytest.raises(einderiv.DifferentiationError, match="takes a list of input names"):
            product("f = a_i S_ij a_j", "a", symmetric=True, symmetric_convention="cookbook")


def test_the_jacobian_takes_structured_variables_too():
    """``jacobian(..., symmetric=["S"])`` was a bare TypeError where ``diff`` takes it (a meaning
    hunt's find).  The symmetric Jacobian of y = S a, contracted with a symmetric direction E, is
    the central difference of y along E."""
    S = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]])
    a = np.array([1.0, -2.0, 0.5])
    E = sym(np.random.default_rng(0).normal(size=(3, 3)))
    got = einderiv.jacobian("y_i = S_ij a_j", "S", symmetric=["S"])(S=S, a=a)
    h = 1e-6
    central = ((S + h * E) @ a - (S - h * E) @ a) / (2 * h)
    np.testing.assert_allclose(np.einsum("ikl,kl->i", got, E), central, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got, (np.einsum("ik,l->ikl", np.eye(3), a) + np.einsum("il,k->ikl", np.eye(3), a)) / 2)


def test_a_convention_without_a_symmetric_matrix_is_an_error():
    """``symmetric_convention="cookbook"`` without ``symmetric=`` returned the unconstrained
    gradient, silently (a meaning hunt's find)."""
    with pytest.raises(einderiv.DifferentiationError, match="names none"):
        einderiv.grad("f = a_i S_ij a_j", "S", symmetric_convention="cookbook")
    from tests.helpers import run_cli

    done = run_cli("diff", "f = a_i S_ij a_j", "--wrt", "S", "--convention", "cookbook")
    assert done.returncode != 0 and done.stderr.startswith("error:") and "Traceback" not in done.stderr


def test_a_non_square_matrix_declared_symmetric_is_named_so_by_shape_for():
    # said "index 'l' has two sizes", a letter the user never wrote (torch: tests/test_backends.py)
    gradient = einderiv.grad("f = a_i A_ij b_j", "A", symmetric=["A"])
    with pytest.raises(einderiv.EvaluationError, match=r"'A' is declared symmetric but has shape \(3, 4\), not square"):
        gradient.shape_for(a=(3,), A=(3, 4), b=(4,))


def test_check_steps_relative_to_the_matrix_it_perturbs():
    """A hunt's find: with an absolute step of 1e-6, check failed a right d logdet(S)/dS at
    S ~ 1e-5 (2.7e-3 off), and at S ~ 1e-7 stepped out of the domain ("the determinant of 'S'
    is negative").  The reference is inv(S), NumPy's."""
    for scale in (1e-5, 1e-7, 1e5):
        result = einderiv.check("f = logdet(S)", "S", symmetric=["S"], values={"S": S * scale})
        assert result.ok and result.error < 1e-7, (scale, result.error)
        np.testing.assert_allclose(result.value, Si / scale, rtol=1e-12)
    wrong = einderiv.check("f = logdet(S)", "S", expect="2 inv(S)_ij", symmetric=["S"], values={"S": S * 1e-7})
    assert not wrong.ok and wrong.claim == "differs"
    # entries of many scales: a step relative to the largest alone failed these (a review's find)
    for source, values in [("f = sum_i(log(x_i))", [1e6, 1e-3, 2.0]), ("f = sum_i(sin(x_i))", [1e4, 0.3, 1.0])]:
        result = einderiv.check(source, "x", values={"x": np.array(values)})
        assert result.ok, (source, result.error)


def test_a_structured_product_copies_with_its_tangent():
    """TangentKind copied as a plain str lost its wrt: deepcopy of an hvp by a symmetric S
    raised TypeError (a review's find)."""
    import copy

    product = einderiv.hvp("f = logdet(S) + S_ij A_ij S_jk A_ki", "S", symmetric=["S"])
    copied = copy.deepcopy(product)
    assert copied.structure["v"] == "symmetric" and copied.structure["v"].of == "S"
    V = B0 + B0.T
    np.testing.assert_allclose(copied(S=S, A=A, v=V), product(S=S, A=A, v=V), rtol=1e-15)


def test_a_nan_off_the_diagonal_of_a_diagonal_matrix_is_refused():
    """NaN > tolerance is False: a NaN off D's diagonal passed the check (an inf did not)."""
    D = np.diag([1.0, 2.0, 3.0])
    D[0, 1] = np.nan
    with pytest.raises(einderiv.EvaluationError, match="declared diagonal.*NaN entries off its diagonal"):
        einderiv.grad("f = logdet(D)", "D", diagonal=["D"])(D=D)
    on_it = np.diag([1.0, np.nan, 3.0])  # a NaN on the diagonal is a value, not a broken structure
    assert np.isnan(np.diag(einderiv.grad("f = logdet(D)", "D", diagonal=["D"])(D=on_it))).all()


def test_the_tangent_of_a_structured_matrix_must_have_its_structure():
    """Contracted with sym(G), a non-symmetric v gave the derivative along sym(v) with no word
    said (jvp of A_ij S_ji along e_01: (A_01 + A_10)/2 for a direction that leaves the symmetric
    matrices); now a clear error, and along a symmetric v the directional derivative tr(A v)."""
    e01 = np.zeros((n, n))
    e01[0, 1] = 1.0
    calls = {
        "symmetric": [
            lambda v: einderiv.jvp("f = A_ij S_ji", "S", symmetric=["S"])(A=A, S=S, v=v),
            lambda v: einderiv.hvp("f = x_i S_ij S_jk x_k", "S", symmetric=["S"])(S=S, x=x, v=v),
        ],
        "diagonal": [lambda v: einderiv.jvp("f = A_ij S_ji", "S", diagonal=["S"])(A=A, S=np.diag(np.diag(S)), v=v)],
    }
    for kind, makers in calls.items():
        for call in makers:
            with pytest.raises(einderiv.EvaluationError, match=f"'v', the tangent of {kind} 'S', is not {kind}"):
                call(e01)
    along = e01 + e01.T
    got = einderiv.jvp("f = A_ij S_ji", "S", symmetric=["S"])(A=A, S=S, v=along)
    assert got == pytest.approx(np.trace(A @ along), rel=1e-14)


def test_like_terms_collect_up_to_the_symmetry_of_s():
    """d tr(S^-2)/dS = -2 S^-3 (Matrix Cookbook): its two halves differ only by S = S^T and the
    names of summed indices, and printed -S^-1 (S^-1 + S^-1) S^-1, two products for one."""
    gradient = einderiv.grad("f = tr(S^-2)", "S", symmetric=["S"])
    assert len(gradient.program.out.poly.terms) == 1
    assert gradient.matrix() == "df/dS = -2 S^-1 S^-1 S^-1"
    np.testing.assert_allclose(gradient(S=S), -2 * Si @ Si @ Si, rtol=1e-12)
    both = einderiv.grad("f = x_i S_ij y_j + y_i S_ij x_j", "S", symmetric=["S"])
    assert len(both.program.out.poly.terms) == 2 and both.matrix() == "df/dS = x y^T + y x^T"
    np.testing.assert_allclose(both(S=S, x=x, y=a), np.outer(x, a) + np.outer(a, x), rtol=1e-12)
