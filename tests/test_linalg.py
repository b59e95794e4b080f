"""One factorisation per matrix per evaluation (einderiv/linalg.py): inv, det, logdet and the
solves of one matrix are read from one LU (or, for an exactly symmetric positive definite
matrix, one Cholesky) factorisation.

References are independent of einderiv: NumPy closed forms (np.linalg.inv, solve, slogdet) and
central finite differences of them, in float64.  The errors and NaNs at singular and non-finite
matrices are compared with the path that calls numpy.linalg once per function (what einderiv
did before; ``SHARE_FACTORISATIONS = False``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import einderiv
import einderiv.linalg as linalg
from tests.helpers import assert_matches_fd

rng = np.random.default_rng(14)
n = 5
GAUSSIAN = "L = -0.5 logdet(S) - 0.5 r_i inv(S)_ij r_j"


def general(size=n):
    """Not symmetric, well conditioned, determinant > 0."""
    return rng.normal(size=(size, size)) + 2 * np.sqrt(size) * np.eye(size)


def spd(size=n):
    g = rng.normal(size=(size, size))
    return g @ g.T / size + np.eye(size)


def indefinite(size=n):
    """Symmetric, with a positive diagonal and one negative eigenvalue: Cholesky fails."""
    q, _ = np.linalg.qr(rng.normal(size=(size, size)))
    values = np.linspace(1.0, 2.0, size)
    values[-1] = -0.5
    m = (q * values) @ q.T
    m = (m + m.T) / 2
    assert (np.diagonal(m) > 0).all() and np.linalg.eigvalsh(m).min() < 0
    return m


def nearly_symmetric():
    """SPD but for one entry inside the matrix (not a corner): it must not be read as symmetric."""
    m = spd()
    m[2, 1] += 1e-3
    return m


X, S, H, N = general(), spd(), indefinite(), nearly_symmetric()
a, b, r = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
MATRICES = {"general": X, "spd": S, "indefinite": H, "nearly symmetric": N}


def abx(X, a, b):
    return a @ np.linalg.solve(X, b)


def gaussian(S, r):
    return -0.5 * np.linalg.slogdet(S)[1] - 0.5 * r @ np.linalg.solve(S, r)


@pytest.fixture
def counted(monkeypatch):
    """Every factorisation made (LU, Cholesky attempt), and numpy.linalg's own calls, which the
    shared path should not make."""
    calls = {"lu": 0, "cholesky": 0, "numpy": 0}
    lu, cholesky = linalg.lu_factor, linalg.cholesky

    def count(kind, function):
        def counting(*args, **kwargs):
            calls[kind] += 1
            return function(*args, **kwargs)

        return counting

    monkeypatch.setattr(linalg, "lu_factor", count("lu", lu))
    monkeypatch.setattr(linalg, "cholesky", count("cholesky", cholesky))
    for name in ("inv", "solve", "slogdet", "det"):
        monkeypatch.setattr(np.linalg, name, count("numpy", getattr(np.linalg, name)))
    return calls


# -- values and gradients ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", MATRICES)
def test_gradient_of_a_inverse_b(kind):
    M = MATRICES[kind]
    g = einderiv.grad("f = a_i inv(X)_ij b_j", "X")
    Mi = np.linalg.inv(M)
    np.testing.assert_allclose(g(a=a, X=M, b=b), -Mi.T @ np.outer(a, b) @ Mi.T, rtol=1e-12, atol=1e-14)
    assert_matches_fd(g, abx, {"X": M, "a": a, "b": b}, "X")
    value = einderiv.evaluate("f = a_i inv(X)_ij b_j", a=a, X=M, b=b)
    assert float(value) == pytest.approx(abx(M, a, b), rel=1e-12)


@pytest.mark.parametrize("kind", ["general", "spd", "nearly symmetric"])
def test_gaussian_log_likelihood_and_its_gradient(kind):
    M = MATRICES[kind]
    Mi = np.linalg.inv(M)
    assert float(einderiv.evaluate(GAUSSIAN, S=M, r=r)) == pytest.approx(gaussian(M, r), rel=1e-12)
    g = einderiv.grad(GAUSSIAN, "S")
    expected = -0.5 * Mi.T + 0.5 * Mi.T @ np.outer(r, r) @ Mi.T
    np.testing.assert_allclose(g(S=M, r=r), expected, rtol=1e-12, atol=1e-14)
    assert_matches_fd(g, gaussian, {"S": M, "r": r}, "S")


@pytest.mark.parametrize("kind", MATRICES)
def test_inverse(kind):
    M = MATRICES[kind]
    got = einderiv.evaluate("Y_ij = inv(X)_ij", X=M)
    np.testing.assert_allclose(got, np.linalg.inv(M), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(einderiv.evaluate("t = inv(X)_ii", X=M), np.trace(np.linalg.inv(M)), rtol=1e-12)
    np.testing.assert_allclose(einderiv.evaluate("Y_ij = inv(X)_ji", X=M), np.linalg.inv(M).T, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", MATRICES)
def test_det_and_logdet_with_their_gradients(kind):
    M = MATRICES[kind]
    sign, logdet = np.linalg.slogdet(M)
    Mi = np.linalg.inv(M)
    assert float(einderiv.evaluate("f = det(X)", X=M)) == pytest.approx(sign * np.exp(logdet), rel=1e-12)
    grad_det = einderiv.grad("f = det(X)", "X")
    np.testing.assert_allclose(grad_det(X=M), sign * np.exp(logdet) * Mi.T, rtol=1e-12, atol=1e-14)
    assert_matches_fd(grad_det, lambda X: np.linalg.det(X), {"X": M}, "X")
    if sign < 0:
        with pytest.raises(einderiv.EvaluationError, match="the determinant of 'X' is negative"):
            einderiv.evaluate("f = logdet(X)", X=M)
        return
    assert float(einderiv.evaluate("f = logdet(X)", X=M)) == pytest.approx(logdet, rel=1e-12)
    grad_logdet = einderiv.grad("f = logdet(X)", "X")
    np.testing.assert_allclose(grad_logdet(X=M), Mi.T, rtol=1e-12, atol=1e-14)
    assert_matches_fd(grad_logdet, lambda X: np.linalg.slogdet(X)[1], {"X": M}, "X")


def test_the_sign_of_the_determinant_counts_row_swaps_and_negative_pivots():
    for M in (np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])):
        for matrix in (M, -M, M.T, 2 * np.eye(len(M)) - M):
            expected = np.linalg.det(matrix)
            assert float(einderiv.evaluate("f = det(X)", X=matrix)) == pytest.approx(expected)


def test_several_functions_of_one_matrix_in_one_program():
    source = "f = logdet(X) + det(X) + inv(X)_ii + a_i inv(X)_ij b_j"
    sign, logdet = np.linalg.slogdet(X)
    expected = logdet + sign * np.exp(logdet) + np.trace(np.linalg.inv(X)) + abx(X, a, b)
    assert float(einderiv.evaluate(source, X=X, a=a, b=b)) == pytest.approx(expected, rel=1e-12)
    program = "u_i = inv(X)_ij b_j; v_i = a_j inv(X)_ji; f = u_i v_i + logdet(X)"
    expected = np.linalg.solve(X, b) @ np.linalg.solve(X.T, a) + logdet
    assert float(einderiv.evaluate(program, X=X, a=a, b=b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128, np.complex64])
def test_other_dtypes(dtype):
    tol = 1e-4 if np.dtype(dtype).itemsize <= 8 else 1e-10
    M = X.astype(dtype)
    if np.dtype(dtype).kind == "c":
        M = M + 1j * rng.normal(size=M.shape).astype(dtype)
    got = einderiv.evaluate("Y_ij = inv(X)_ij", X=M)
    assert got.dtype == M.dtype
    np.testing.assert_allclose(got, np.linalg.inv(M), rtol=tol, atol=tol)
    np.testing.assert_allclose(einderiv.evaluate("f = det(X)", X=M), np.linalg.det(M), rtol=tol)
    # of a complex matrix, the principal log(det), as NumPy's log of det (not log|det|)
    np.testing.assert_allclose(einderiv.evaluate("f = logdet(X)", X=M), np.log(np.linalg.det(M)), rtol=tol)
    g = einderiv.grad("f = a_i inv(X)_ij b_j", "X")(a=a, X=M, b=b)
    Mi = np.linalg.inv(M)
    np.testing.assert_allclose(g, -Mi.T @ np.outer(a, b) @ Mi.T, rtol=tol, atol=tol)


def test_a_float32_matrix_with_a_float64_vector_is_solved_in_float64():
    M = X.astype(np.float32)
    got = einderiv.evaluate("u_i = inv(X)_ij b_j", X=M, b=b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.linalg.solve(M.astype(np.float64), b), rtol=1e-12)


def test_a_fortran_ordered_or_strided_matrix():
    for M in (np.asfortranarray(X), np.asfortranarray(S), general(2 * n)[::2, ::2], X.T):
        g = einderiv.grad("f = a_i inv(X)_ij b_j + logdet(X)", "X")(a=a, X=M, b=b)
        Mi = np.linalg.inv(M)
        np.testing.assert_allclose(g, -Mi.T @ np.outer(a, b) @ Mi.T + Mi.T, rtol=1e-11, atol=1e-13)


# -- one factorisation ------------------------------------------------------------------------
def test_gradient_of_a_inverse_b_factorises_x_once(counted):
    g = einderiv.grad("f = a_i inv(X)_ij b_j", "X")
    g(a=a, X=X, b=b)  # plans, and evaluates once
    assert counted == {"lu": 1, "cholesky": 0, "numpy": 0}
    g(a=a, X=X, b=b)
    assert counted == {"lu": 2, "cholesky": 0, "numpy": 0}  # one per evaluation


def test_gaussian_gradient_factorises_s_once(counted):
    g = einderiv.grad(GAUSSIAN, "S")
    assert sorted(step.func for step in g.line.steps if step.matrix) == ["inv", "solve", "solve_transposed"]
    g(S=S, r=r)
    assert counted == {"lu": 0, "cholesky": 1, "numpy": 0}  # symmetric positive definite: Cholesky
    g(S=X, r=r)
    assert counted == {"lu": 1, "cholesky": 1, "numpy": 0}  # not symmetric: LU, no Cholesky tried
    g(S=N, r=r)
    assert counted == {"lu": 2, "cholesky": 1, "numpy": 0}  # one entry off symmetric: LU


def test_every_function_of_one_matrix_reads_one_factorisation(counted):
    einderiv.evaluate(GAUSSIAN, S=X, r=r)  # logdet and a solve
    assert counted == {"lu": 1, "cholesky": 0, "numpy": 0}
    einderiv.evaluate("f = logdet(X) + det(X) + inv(X)_ii + a_i inv(X)_ij b_j + b_i inv(X)_ij a_j", X=X, a=a, b=b)
    assert counted == {"lu": 2, "cholesky": 0, "numpy": 0}
    einderiv.hessian(GAUSSIAN, "S")(S=S, r=r)
    assert counted == {"lu": 2, "cholesky": 1, "numpy": 0}
    einderiv.evaluate("f = logdet(X) + logdet(S)", X=X, S=S)  # two matrices: one factorisation each
    assert counted == {"lu": 3, "cholesky": 2, "numpy": 0}


def test_a_symmetric_indefinite_matrix_tries_cholesky_then_factorises_once_by_lu(counted):
    einderiv.grad("f = a_i inv(X)_ij b_j", "X")(a=a, X=H, b=b)
    assert counted == {"lu": 1, "cholesky": 1, "numpy": 0}
    einderiv.grad("f = a_i inv(X)_ij b_j", "X")(a=a, X=-S, b=b)  # a negative diagonal: no attempt
    assert counted == {"lu": 2, "cholesky": 1, "numpy": 0}


def test_no_factorisation_outlives_its_evaluation():
    g = einderiv.grad("f = a_i inv(X)_ij b_j", "X")
    M = X.copy()
    g(a=a, X=M, b=b)
    M[...] = S  # the same array, new values: the next evaluation factorises it afresh
    Si = np.linalg.inv(S)
    np.testing.assert_allclose(g(a=a, X=M, b=b), -Si.T @ np.outer(a, b) @ Si.T, rtol=1e-12, atol=1e-14)


def test_threads_evaluating_one_compiled_expression_keep_their_own_factorisations():
    g = einderiv.grad(GAUSSIAN, "S")
    g(S=S, r=r)  # planned
    matrices = [general(), spd(), general(), spd()]
    errors = []

    def work(M):
        Mi = np.linalg.inv(M)
        expected = -0.5 * Mi.T + 0.5 * Mi.T @ np.outer(r, r) @ Mi.T
        for _ in range(200):
            if not np.allclose(g(S=M, r=r), expected, rtol=1e-10, atol=1e-12):
                errors.append(M)
                return

    threads = [threading.Thread(target=work, args=(M,)) for M in matrices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


# -- singular and non-finite matrices: as before ----------------------------------------------
def _outcome(function):
    """("value", array) or ("error", type, message)."""
    try:
        return ("value", np.asarray(function()))
    except Exception as err:  # noqa: BLE001 - the type and message are what is compared
        return ("error", type(err).__name__, str(err))


def _both(monkeypatch, source, wrt, arrays):
    """The outcome with one factorisation per matrix and with one numpy.linalg call per function."""
    outcomes = []
    for share in (True, False):
        monkeypatch.setattr(linalg, "SHARE_FACTORISATIONS", share)
        compiled = einderiv.compile(source) if wrt is None else einderiv.grad(source, wrt)
        given = {name: arrays[name] for name in compiled.inputs}
        outcomes.append(_outcome(lambda compiled=compiled, given=given: compiled(**given)))
    return outcomes


BAD = {
    "zeros": np.zeros((3, 3)),
    "ones (symmetric, singular)": np.ones((3, 3)),
    "rank one": np.outer([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
    "a zero row": np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, 5.0, 7.0]]),
    "negative definite": -np.eye(3),
    "nan": np.array([[np.nan, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]),
    "inf": np.array([[np.inf, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]),
    "-inf off the diagonal": np.array([[1.0, -np.inf, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]),
    "0 x 0": np.zeros((0, 0)),
    "float16": np.eye(3, dtype=np.float16),
}
SOURCES = [
    ("f = a_i inv(X)_ij b_j", "X"),
    ("f = a_i inv(X)_ij b_j", None),
    (GAUSSIAN.replace("S", "X"), "X"),
    (GAUSSIAN.replace("S", "X"), None),
    ("Y_ij = inv(X)_ij", None),
    ("f = det(X)", None),
    ("f = det(X)", "X"),
    ("f = logdet(X)", None),
    ("f = logdet(X)", "X"),
    ("f = logdet(X) + det(X) + inv(X)_ii", None),
]


@pytest.mark.parametrize("source, wrt", SOURCES)
@pytest.mark.parametrize("kind", BAD)
def test_singular_and_non_finite_matrices_behave_as_before(monkeypatch, source, wrt, kind):
    M = BAD[kind]
    arrays = {"X": M, "a": np.ones(len(M)), "b": np.arange(len(M), dtype=float), "r": np.ones(len(M))}
    shared, separate = _both(monkeypatch, source, wrt, arrays)
    assert shared[0] == separate[0], (shared, separate)
    if shared[0] == "error":
        assert shared == separate
    else:
        assert shared[1].shape == separate[1].shape and shared[1].dtype == separate[1].dtype
        np.testing.assert_array_equal(np.isnan(shared[1]), np.isnan(separate[1]))
        np.testing.assert_allclose(shared[1], separate[1], rtol=1e-12, atol=1e-14)


def test_the_errors_name_the_matrix():
    with pytest.raises(einderiv.EvaluationError, match="inv\\(X\\): the matrix 'X' is singular"):
        einderiv.grad("f = a_i inv(X)_ij b_j", "X")(a=np.ones(3), X=np.ones((3, 3)), b=np.ones(3))
    with pytest.raises(einderiv.EvaluationError, match="inv\\(S\\): the matrix 'S' is singular"):
        einderiv.grad(GAUSSIAN, "S")(S=np.zeros((3, 3)), r=np.ones(3))
    with pytest.raises(einderiv.EvaluationError, match="logdet\\(S\\): the determinant of 'S' is zero"):
        einderiv.evaluate(GAUSSIAN, S=np.ones((3, 3)), r=np.ones(3))
    assert float(einderiv.evaluate("f = det(X)", X=np.ones((3, 3)))) == 0.0  # no error: det is 0
    assert np.isnan(einderiv.grad(GAUSSIAN, "S")(S=BAD["nan"], r=np.ones(3))).all()


def test_with_cholesky_turned_off_a_positive_definite_matrix_is_factorised_by_lu(counted, monkeypatch):
    monkeypatch.setattr(linalg, "CHOLESKY", False)
    got = einderiv.grad(GAUSSIAN, "S")(S=S, r=r)
    assert counted == {"lu": 1, "cholesky": 0, "numpy": 0}
    Si = np.linalg.inv(S)
    np.testing.assert_allclose(got, -0.5 * Si.T + 0.5 * Si.T @ np.outer(r, r) @ Si.T, rtol=1e-12, atol=1e-14)


def test_small_matrices_run_scipys_lapack_on_one_thread_and_set_the_count_back():
    """NumPy's and SciPy's wheels each bundle an OpenBLAS with its own thread pool, which spin
    after their work: a 50 x 50 inverse between NumPy's matrix products took 2.8 ms instead of
    45 µs (the Gaussian gradient by its covariance 8.1 ms -> 1.6 ms).  Up to ``ONE_THREAD_UP_TO``
    rows a routine runs with the count set to 1, and the count is set back when the last call
    in progress ends."""
    local = linalg._openblas_threads_local()
    if local is None:
        pytest.skip("SciPy's LAPACK here is not a bundled OpenBLAS with openblas_set_num_threads_local")
    seen = []

    def routine(first, *args, **kwargs):
        seen.append(local(1))  # the count the routine runs with (set back to itself by this read)
        local(seen[-1])
        return first

    wrapped = linalg._one_thread(routine, local)
    before = local(3)
    try:
        for size in (5, linalg.ONE_THREAD_UP_TO, linalg.ONE_THREAD_UP_TO + 1):
            wrapped(np.zeros((size, size)))
            assert local(3) == 3  # set back after the call
        assert seen == [1, 1, 3]
        # threads in turn and at once: in a pthreads OpenBLAS the count is the library's, and two
        # threads each restoring what it found left it at 1 for good (a reviewer's find)
        seen.clear()
        local(2)
        workers = [threading.Thread(target=lambda: [wrapped(np.zeros((4, 4))) for _ in range(300)]) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert set(seen) == {1} and len(seen) == 1200
        assert local(2) == 2
    finally:
        local(before)
    S = spd(50)
    np.testing.assert_allclose(einderiv.evaluate("f_ij = inv(S)_ij", S=S), np.linalg.inv(S), rtol=1e-10)


def test_big_endian_matrices_are_read_as_numpy_reads_them():
    """``>f8`` is float64: NumPy's linalg takes it, and einderiv said "'S' is >f8, which the linear
    algebra does not take (float32, float64, ...)"."""
    rng = np.random.default_rng(5)
    S = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    b, c = rng.normal(size=4), rng.normal(size=4)
    big = S.astype(">f8")
    assert einderiv.compile("f = logdet(S)")(S=big) == pytest.approx(np.linalg.slogdet(S)[1], rel=1e-14)
    assert einderiv.compile("f = det(S)")(S=big) == pytest.approx(np.linalg.det(S), rel=1e-13)
    np.testing.assert_allclose(einderiv.compile("Y_ij = inv(S)_ij")(S=big), np.linalg.inv(S), rtol=1e-13)
    np.testing.assert_allclose(
        einderiv.grad("f = b_i inv(S)_ij c_j", "c")(S=big, b=b.astype(">f8"), c=c), np.linalg.solve(S.T, b), rtol=1e-12
    )
    np.testing.assert_allclose(einderiv.grad("f = logdet(S)", "S")(S=big), np.linalg.inv(S).T, rtol=1e-13)


# -- log |det|: logabsdet ------------------------------------------------------------------------
def _far_from_one(size=150, scale=1e-3, negative=True, seed=0):
    """A well-conditioned matrix whose determinant underflows to 0 in float64 (|det| ~ 1e-400
    at the default size and scale) and is negative: every log of |det| formed from det itself is
    -inf, and its gradient NaN."""
    m = scale * (np.random.default_rng(seed).normal(size=(size, size)) / np.sqrt(size) + 2 * np.eye(size))
    if negative:
        m[[0, 1]] = m[[1, 0]]
    sign, logdet = np.linalg.slogdet(m)
    assert sign == (-1 if negative else 1)
    assert size < 100 or (logdet < -800 and np.linalg.det(m) == 0)
    return m


LOG_ABS_DET_FORMS = {  # source -> its multiple of log|det(W)|
    "L = log(abs(det(W)))": 1,
    "L = logabsdet(W)": 1,
    "L = log(det(W)^2) / 2": 1,
    "L = 0.5 log(det(W) det(W))": 1,
    "L = log(abs(det(W))^3)": 3,
    "L = log(1 / det(W)^2)": -2,
    "d = det(W); L = log(abs(d))": 1,
    "d = det(W); L = log(d^2)": 2,
    "a = abs(det(W)); L = -log(sqrt(a))": -0.5,
    "L = log(sqrt(det(W)^2))": 1,
}


@pytest.mark.parametrize("source", LOG_ABS_DET_FORMS)
def test_log_abs_det_never_forms_the_determinant(source):
    """log|det W| where det W underflows and is negative: the value and gradient k inv(W)^T of
    slogdet (Matrix Cookbook (57): d log|det X| / dX = X^-T), where the log of det's value was
    -inf and its gradient ``sign(det) det inv / abs(det)`` NaN."""
    W = _far_from_one()
    k = LOG_ABS_DET_FORMS[source]
    value = einderiv.evaluate(source, W=W)
    assert float(value) == pytest.approx(k * np.linalg.slogdet(W)[1], rel=1e-13)
    gradient = einderiv.grad(source, "W")
    np.testing.assert_allclose(gradient(W=W), k * np.linalg.inv(W).T, rtol=1e-10, atol=1e-12 / 1e-3)
    assert "det(W)" not in str(gradient).replace("logabsdet(W)", "")  # inv(W)_ji, no det/abs(det)


def test_log_abs_det_prints_as_the_cookbook_and_reads_back():
    gradient = einderiv.grad("L = log(abs(det(W)))", "W")
    assert str(gradient) == "dL/dW_ij = inv(W)_ji"
    assert gradient.matrix() == "dL/dW = W^-T"
    scaled = einderiv.diff("L = log(abs(det(W))) x_i x_i", "x")
    assert str(scaled) == "dL/dx_j = 2 logabsdet(W) x_j"
    assert scaled.pretty() == "∂L/∂x_j = 2 log|det(W)| x_j"
    assert r"\log\left|\det\left(W\right)\right|" in scaled.latex()
    W, x = _far_from_one(8, scale=1.0), rng.normal(size=8)
    again = einderiv.compile("y_j = " + str(scaled).split(" = ", 1)[1])  # the printed text, read back
    np.testing.assert_allclose(again(W=W, x=x), 2 * np.linalg.slogdet(W)[1] * x, rtol=1e-13)
    assert einderiv.compile("f = logabsdet(X^T X)").read_as == "M1_ij = X_ki X_kj; f = logabsdet(M1)"


def test_log_abs_det_hessian_against_jax_at_a_negative_determinant():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    W = _far_from_one(6, scale=1.0)
    want = jax.hessian(lambda M: jnp.linalg.slogdet(M)[1])(jnp.asarray(W))
    got = einderiv.hessian("L = log(abs(det(W)))", "W")(W=W)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("L = log(2 det(S))", lambda S: np.log(2) + np.linalg.slogdet(S)[1]),
        ("L = log(1 / det(S))", lambda S: -np.linalg.slogdet(S)[1]),
        ("L = log(det(S)^-0.5)", lambda S: -0.5 * np.linalg.slogdet(S)[1]),
        ("L = log(det(S)^3 / 4)", lambda S: 3 * np.linalg.slogdet(S)[1] - np.log(4)),
        ("L = log(det(S) exp(c))", lambda S: np.linalg.slogdet(S)[1] + 0.5),
    ],
)
def test_a_log_of_a_scaled_determinant_is_a_log_determinant(source, expected):
    """det(S) > 0 under a positive scale or power: logdet, finite where det S underflows (log of
    det's value was -inf)."""
    S = _far_from_one(negative=False)
    S = S @ S.T  # positive definite, det ~ 1e-720
    given = {"S": S, "c": np.float64(0.5)} if "c" in source else {"S": S}
    value = float(einderiv.evaluate(source, **given))
    assert value == pytest.approx(expected(S), rel=1e-12)
    gradient = einderiv.grad(source, "S")
    k = float(gradient(**{**given, "S": np.eye(3)})[0, 0])  # the multiple of inv(S)^T
    assert k != 0
    np.testing.assert_allclose(gradient(**given), k * np.linalg.inv(S).T, rtol=1e-9)


def test_determinants_of_unknown_sign_stay_in_one_log():
    """log(det(A) det(B)) is real where both determinants are negative, so it is not split into
    log-determinants (which raise there); nor is log(det(W) x) (x < 0 and det W < 0)."""
    A, B = _far_from_one(4, scale=1.0), _far_from_one(4, scale=1.0, seed=1)
    expected = np.log(np.linalg.det(A) * np.linalg.det(B))
    assert float(einderiv.evaluate("L = log(det(A) det(B))", A=A, B=B)) == pytest.approx(expected, rel=1e-12)
    x = np.float64(-2.0)
    got = einderiv.evaluate("L = log(det(W) x)", W=A, x=x)
    assert float(got) == pytest.approx(np.log(np.linalg.det(A) * x), rel=1e-12)
    with pytest.raises(einderiv.EvaluationError, match=r"negative, so its logarithm is not real \(log\|det\|"):
        einderiv.evaluate("L = log(det(W))", W=A)


def test_logabsdet_at_singular_and_non_finite_matrices():
    """log|det| of a singular matrix is -inf, as log(abs(det(W))) was before it became logabsdet
    (a review's find: it had become an error, and NaN on the other libraries)."""
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    for source in ("L = log(abs(det(W)))", "L = log(det(W)^2)", "L = logabsdet(W)"):
        assert float(einderiv.evaluate(source, W=singular)) == -np.inf
    assert np.isnan(einderiv.evaluate("L = logabsdet(W)", W=np.array([[np.nan, 1.0], [1.0, 2.0]])))


@pytest.mark.parametrize(
    "source", ["L = logabsdet(W)", "L = log(abs(det(W)))", "L = log(det(W)^2)", "L = log(det(W) det(W))"]
)
def test_logabsdet_of_a_complex_matrix_is_an_error(source):
    """log(det(W)^2) is 2 log|det| + 2i arg(det) at a complex W, not 2 log|det|: logabsdet, which
    both it and log(abs(det(W))) are read as, refuses complex matrices (a review's find: the
    imaginary part was silently dropped), on every path."""
    W = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    with pytest.raises(einderiv.EvaluationError, match=r"'W' is complex.*real matrices only"):
        einderiv.evaluate(source, W=W)
    with pytest.raises(einderiv.EvaluationError, match=r"'W' is complex"):
        einderiv.grad(source, "W")(W=W)
    torch = pytest.importorskip("torch")
    with pytest.raises(einderiv.EvaluationError, match=r"'W' is complex"):
        einderiv.compile(source)(W=torch.as_tensor(W))


def test_determinant_powers_that_cancel_stay_in_the_log():
    """log(abs(det(A)) / det(A)) is log(sign(det A)): 0 where det A > 0, NaN below (a review's
    find: the powers' sum, 0, made it 0 everywhere, also at a singular A and at a NaN entry)."""
    negative, positive = np.array([[0.0, 2.0], [2.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 2.0]])
    for source in (
        "f = log(abs(det(A)) / det(A))",
        "f = log(abs(det(A))^3 / det(A)^3)",
        "f = log(2 abs(det(A)) / det(A))",
    ):
        with np.errstate(all="ignore"):
            assert np.isnan(einderiv.evaluate(source, A=negative)), source
            assert np.isnan(einderiv.evaluate(source, A=np.array([[np.nan, 1.0], [1.0, 0.0]]))), source
        expected = np.log(2.0) if "2 abs" in source else 0.0
        assert float(einderiv.evaluate(source, A=positive)) == pytest.approx(expected, abs=1e-15), source


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_logabsdet_on_other_array_libraries(backend):
    pytest.importorskip(backend)
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    W = _far_from_one()
    compiled, gradient = einderiv.compile("L = log(abs(det(W)))"), einderiv.grad("L = log(abs(det(W)))", "W")
    got = np.asarray(compiled.call({"W": W}, backend=backend))
    assert float(got) == pytest.approx(np.linalg.slogdet(W)[1], rel=1e-13)
    np.testing.assert_allclose(np.asarray(gradient.call({"W": W}, backend=backend)), np.linalg.inv(W).T, rtol=1e-10)
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert float(np.asarray(compiled.call({"W": singular}, backend=backend))) == -np.inf  # log|0|


@pytest.mark.parametrize("flavour", ["python", "jax", "torch"])
def test_generated_logabsdet(flavour, tmp_path):
    from einderiv.codegen import generate
    from tests.helpers import load_module

    if flavour != "python":
        pytest.importorskip(flavour)
    if flavour == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    value, gradient = einderiv.compile("L = log(abs(det(W)))"), einderiv.grad("L = log(abs(det(W)))", "W")
    module = load_module(generate([value, gradient], flavour), tmp_path, f"logabsdet_{flavour}")
    W = _far_from_one()
    if flavour == "torch":
        import torch

        W = torch.as_tensor(W)
    as_numpy = (lambda t: t.detach().numpy()) if flavour == "torch" else np.asarray
    Wn = as_numpy(W)
    assert float(as_numpy(module.L(W=W))) == pytest.approx(np.linalg.slogdet(Wn)[1], rel=1e-13)
    np.testing.assert_allclose(as_numpy(module.dL_dW(W=W)), np.linalg.inv(Wn).T, rtol=1e-10)


def _scaled_near_identity(size, scale, seed=0):
    return scale * (np.eye(size) + 0.01 * np.random.default_rng(seed).normal(size=(size, size)))


@pytest.mark.parametrize(
    "source",
    [
        "f = 1 / sqrt(det(X))",
        "d = det(X); f = 1 / sqrt(d)",
        "s = sqrt(det(X)); f = 1 / s",
        "f = exp(-0.5 a_i inv(X)_ij a_j) / sqrt(det(X))",
    ],
)
def test_a_gaussian_normaliser_gradient_where_det_cubed_overflows(source):
    """A hunt's find: the gradient of 1 / sqrt(det(X)) was -0.5 det(X) inv(X)_ji / sqrt(det(X))^3,
    0 from det = 1e205 (sqrt(det)^3 overflows; the true gradient ~1e-131), and the Gaussian
    density's gradient had its sign wrong there.  det(X) / sqrt(det(X))^3 is det(X)^-0.5 now
    (NaN below 0 either way).  Against jax through slogdet, in float64."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    X, a = _scaled_near_identity(50, 1e5), np.random.default_rng(1).normal(size=50)
    assert np.linalg.slogdet(X)[1] / np.log(10) > 249  # det ~ 1e250: det^1.5 overflows

    def reference(M):
        quadratic = -0.5 * a @ jnp.linalg.solve(M, a) if "a_i" in source else 0.0
        return jnp.exp(quadratic - 0.5 * jnp.linalg.slogdet(M)[1])

    given = {"X": X, "a": a} if "a_i" in source else {"X": X}
    want = np.asarray(jax.grad(reference)(jnp.asarray(X)))
    got = einderiv.grad(source, "X")(**given)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_a_gaussian_normaliser_hessian_where_det_to_the_five_halves_overflows():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    X = _scaled_near_identity(6, 1e22)  # det ~ 1e132: det^2.5 overflows
    want = np.asarray(jax.hessian(lambda M: jnp.exp(-0.5 * jnp.linalg.slogdet(M)[1]))(jnp.asarray(X)))
    hessian = einderiv.hessian("f = 1 / sqrt(det(X))", "X")
    assert "sqrt(det(X))^" not in str(hessian)
    np.testing.assert_allclose(hessian(X=X), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "f = log(exp(-0.5 a_i inv(S)_ij a_j) / sqrt(det(S)))",
            lambda S, a: -0.5 * a @ np.linalg.solve(S, a) - 0.5 * np.linalg.slogdet(S)[1],
        ),
        ("d = det(S); f = log(d^0.5)", lambda S, a: 0.5 * np.linalg.slogdet(S)[1]),
        ("f = log(sqrt(det(S))^-1)", lambda S, a: -0.5 * np.linalg.slogdet(S)[1]),
    ],
)
def test_the_log_of_a_gaussian_density_where_det_overflows(source, expected):
    """The textbook Gaussian log-density log(exp(-q / 2) / sqrt(det(S))) at det(S) ~ 1e650 was
    -inf and its gradient NaN (the log kept 1 / sqrt(det(S)) whole); now -q / 2 - logdet(S) / 2,
    with the gradient checked against finite differences of NumPy's slogdet form."""
    S = _scaled_near_identity(200, 1e3) @ _scaled_near_identity(200, 1.0, seed=2).T
    S = S @ S.T / 1e3
    a = np.random.default_rng(3).normal(size=200)
    assert np.linalg.slogdet(S)[1] > 1000 and np.isinf(np.linalg.det(S))
    given = {"S": S, "a": a} if "a_i" in source else {"S": S}
    assert float(einderiv.evaluate(source, **given)) == pytest.approx(expected(S, a), rel=1e-12)
    gradient = einderiv.grad(source, "S")(**given)
    assert np.isfinite(gradient).all()
    small = _scaled_near_identity(4, 1.0, seed=4)
    small = small @ small.T
    b = a[:4]
    assert_matches_fd(
        einderiv.grad(source, "S"),
        lambda S, a=None: expected(S, b),
        {"S": small, "a": b} if "a_i" in source else {"S": small},
        "S",
    )


def _det_reference(X) -> float:
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        return float(mpmath.det(mpmath.matrix(X.astype(np.float64).tolist())))


@pytest.mark.parametrize("dtype, n, scale, rtol", [(np.float32, 30, 10.0, 1e-6), (np.float64, 100, 1e3, 1e-14)])
def test_det_is_the_pivots_product_not_exp_of_logdet(dtype, n, scale, rtol):
    """A hunt's find: det was sign * exp(log|det|), which carries log|det|'s rounding times
    |log|det||: 8.5e-6 off (140 ulps) for a float32 det of 1e30, 1e-13 for a float64 det of
    1e298, and the gradient det inv^T with it.  Against mpmath at 60 digits, on every path."""
    X = (scale * (np.eye(n) + 0.1 * np.random.default_rng(1).normal(size=(n, n)))).astype(dtype)
    want = _det_reference(X)
    compiled, gradient = einderiv.compile("f = det(X)"), einderiv.grad("f = det(X)", "X")
    inverse = np.linalg.inv(X.astype(np.float64)).T
    assert float(compiled(X=X)) == pytest.approx(want, rel=rtol)
    scale = abs(want * inverse).max()
    np.testing.assert_allclose(gradient(X=X), want * inverse, rtol=10 * rtol, atol=10 * rtol * scale)
    assert float(linalg.matrix_function("det", "X", X)) == pytest.approx(want, rel=rtol)  # the unshared path
    for backend in ("torch", "jax"):
        module = pytest.importorskip(backend)
        if backend == "jax":
            module.config.update("jax_enable_x64", True)
        got = float(np.asarray(compiled.call({"X": X}, backend=backend)))
        assert got == pytest.approx(want, rel=max(rtol, 5e-14)), backend  # jax's own LU: 1.4e-14


def test_an_error_naming_a_statement_the_matrix_reader_made_says_what_it_is():
    """A hunt's find: ``logdet(X^T X - 2 I)`` at a negative determinant raised about 'M1', a
    name the user never wrote, and the CLI printed no ``read as:`` line when it failed."""
    X = np.diag([1.0, 1.0, -1.0])
    with pytest.raises(einderiv.EvaluationError) as caught:
        einderiv.evaluate("f = logdet(X^T X - 2 I)", X=X)
    message = str(caught.value)
    assert "the determinant of 'M1' is negative" in message
    assert message.endswith(
        "(einderiv named a part of the expression M1: M1_ij = X_ki X_kj - 2 delta_ij; f = logdet(M1))"
    )
    with pytest.raises(einderiv.EvaluationError, match=r"einderiv named a part of the expression M1: M1_ij = X_ij"):
        einderiv.compile("f = a^T (X - I)^-1 a")(X=X, a=np.ones(3))
    with pytest.raises(einderiv.EvaluationError) as caught:  # a name the user wrote is not explained
        einderiv.evaluate("M = X^T X - 2 I; f = logdet(M)", X=X)
    assert "einderiv named" not in str(caught.value)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("f = log(det(A) det(B))", lambda A, B: np.linalg.inv(A).T),
        ("f = log(det(A) / det(B))", lambda A, B: np.linalg.inv(A).T),
        (
            "f = 0.5 (inv(B)_ij A_ji + log(det(B) / det(A)))",
            lambda A, B: 0.5 * (np.linalg.inv(B).T - np.linalg.inv(A).T),
        ),
    ],
)
def test_a_log_of_a_product_of_determinants_differentiates_without_forming_it(source, expected):
    """The gradient of log(det(A) det(B)) by A was det(A) inv(A)_ji det(B) / (det(A) det(B)),
    0 where the product overflows (two 200 x 200 matrices of 1000s); a whole power of a product
    now splits where its factors cancel: inv(A)_ji.  The last is the KL divergence between two
    Gaussians' covariance terms (by the first covariance).  The log itself keeps the product
    (its sign is unknown), so its value is inf there."""
    A, B = _scaled_near_identity(200, 1e3, seed=5), _scaled_near_identity(200, 1e3, seed=6)
    assert np.isinf(np.linalg.det(A) * np.linalg.det(B))
    gradient = einderiv.grad(source, "A")
    assert "det" not in str(gradient)
    np.testing.assert_allclose(gradient(A=A, B=B), expected(A, B), rtol=1e-10, atol=1e-12 * abs(expected(A, B)).max())


def test_the_gradient_of_a_log_of_a_product_reads_as_a_textbook_writes_it():
    assert str(einderiv.grad("f = log(x y)", "x")) == "df/dx = 1 / x"
    assert str(einderiv.grad("f = log(2 x y^2)", "y")) == "df/dy = 2 / y"
    assert str(einderiv.diff("f_i = log(x_i y_i)", "x")) == "df_i/dx_j = delta_ij / x_i"
