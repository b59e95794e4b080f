"""Arrays reused between evaluations (``einderiv.runtime.REUSE_MIN_BYTES``): a step's large array
that an evaluation does not return is written into by the next evaluation of the same shapes.
Each test compares with NumPy closed forms, over several evaluations at different inputs, so a
stale or shared array would show as a wrong number."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import einderiv
import einderiv.runtime as runtime

N, D, H = 3000, 40, 64  # N x H float64 arrays of 1.5 MB: above REUSE_MIN_BYTES
TWO_LAYER = "h_nk = tanh(X_nd W1_dk); L = 0.5 (h_nk W2_k - y_n)^2"


def _network(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "X": rng.normal(size=(N, D)) / np.sqrt(D),
        "y": rng.normal(size=N),
        "W1": 0.5 * rng.normal(size=(D, H)),
        "W2": rng.normal(size=H),
        "v": rng.normal(size=(D, H)),
    }


def _gradient(X, y, W1, W2, **_):
    """dL/dW1 = X^T ((h W2 - y) W2^T * (1 - h^2)), h = tanh(X W1)."""
    h = np.tanh(X @ W1)
    return X.T @ (np.outer(h @ W2 - y, W2) * (1 - h**2))


def _hvp(X, y, W1, W2, v):
    """The Hessian along v: the derivative of the gradient in the direction v (forward mode by hand)."""
    h = np.tanh(X @ W1)
    dh = (1 - h**2) * (X @ v)
    r, dr = h @ W2 - y, dh @ W2
    return X.T @ (np.outer(dr, W2) * (1 - h**2) - 2 * np.outer(r, W2) * h * dh)


def test_runs_the_size_it_is_meant_for():
    assert N * H * 8 >= runtime.REUSE_MIN_BYTES


@pytest.mark.parametrize(
    "make, reference",
    [
        (lambda: einderiv.grad(TWO_LAYER, "W1"), _gradient),
        (lambda: einderiv.hvp(TWO_LAYER, "W1", v="v"), _hvp),
    ],
    ids=["gradient", "hvp"],
)
def test_each_evaluation_is_right_and_leaves_earlier_results_alone(make, reference):
    compiled = make()
    wanted = [name for name in ("X", "y", "W1", "W2", "v") if name in compiled.ranks]
    results, copies = [], []
    for seed in range(4):
        inputs = {k: x for k, x in _network(seed).items() if k in wanted}
        result = compiled(**inputs)
        np.testing.assert_allclose(result, reference(**_network(seed)), rtol=1e-10, atol=1e-12)
        results.append(result)
        copies.append(result.copy())
    for result, copy in zip(results, copies):
        np.testing.assert_array_equal(result, copy)  # no later evaluation wrote into an earlier result
    again = compiled(**{k: x for k, x in _network(0).items() if k in wanted})
    np.testing.assert_array_equal(again, copies[0])  # the same rounding on every evaluation


@pytest.mark.parametrize(
    "source, reference",
    [
        ("Y_ij = exp(A_ij)", np.exp),  # the result is the last step's array itself
        ("Y_ji = exp(A_ij)", lambda a: np.exp(a).T),  # a transposed view of it
        ("Y_ij = tanh(A_ij) B_ij", lambda a: np.tanh(a) * a),
    ],
)
def test_a_result_is_never_written_into_by_the_next_evaluation(source, reference):
    rng = np.random.default_rng(0)
    compiled = einderiv.compile(source)
    first_a = rng.normal(size=(500, 400))
    named = {"A": first_a, "B": first_a} if "B" in compiled.ranks else {"A": first_a}
    first = compiled(**named)
    kept = first.copy()
    second_a = rng.normal(size=(500, 400))
    second = compiled(**{name: second_a for name in named})
    third = compiled(**named)
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_allclose(first, reference(first_a), rtol=1e-14)
    np.testing.assert_allclose(second, reference(second_a), rtol=1e-14)
    np.testing.assert_array_equal(third, kept)
    assert not np.shares_memory(first, second) and not np.shares_memory(first, third)


def test_several_gradients_in_one_call_at_new_inputs():
    names = ["W1", "W2"]
    together = einderiv.grad(TWO_LAYER, names)
    for seed in range(3):
        net = _network(seed)
        by_w1, by_w2 = together(X=net["X"], y=net["y"], W1=net["W1"], W2=net["W2"])
        np.testing.assert_allclose(by_w1, _gradient(**net), rtol=1e-10, atol=1e-12)
        h = np.tanh(net["X"] @ net["W1"])
        np.testing.assert_allclose(by_w2, h.T @ (h @ net["W2"] - net["y"]), rtol=1e-10, atol=1e-12)


def test_threads_evaluating_one_compiled_function_at_once():
    """Each evaluation takes a set of arrays no other holds (``list.pop`` is atomic)."""
    compiled = einderiv.hvp(TWO_LAYER, "W1", v="v")
    seeds = list(range(6))
    expected = {seed: _hvp(**_network(seed)) for seed in seeds}
    barrier = threading.Barrier(len(seeds))
    failures: list[str] = []

    def work(seed: int) -> None:
        inputs = _network(seed)
        barrier.wait()
        for _ in range(4):
            got = compiled(**inputs)
            if not np.allclose(got, expected[seed], rtol=1e-10, atol=1e-12):
                failures.append(f"seed {seed}: {np.abs(got - expected[seed]).max()}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_small_arrays_are_not_kept():
    compiled = einderiv.grad("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w")
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(50, 4)), rng.random(50), rng.normal(size=4)
    compiled(X=X, y=y, w=w)
    compiled(X=X, y=y, w=w)
    (bound,) = compiled.line._bound.values()
    assert all(not spare for spare in bound.spares)
    p = 1 / (1 + np.exp(-X @ w))
    np.testing.assert_allclose(compiled(X=X, y=y, w=w), X.T @ (p - y), rtol=1e-12)


def test_only_the_shapes_called_last_keep_their_arrays():
    """A function called at many shapes holds the arrays of one call, not one set per shape."""
    compiled = einderiv.compile("Y_ij = tanh(A_ij) B_ij + A_ij")
    rng = np.random.default_rng(0)
    for rows in (400, 500, 600, 400):
        A, B = rng.normal(size=(rows, 400)), rng.normal(size=(rows, 400))
        np.testing.assert_allclose(compiled(A=A, B=B), np.tanh(A) * B + A, rtol=1e-14)
    held = [bound for bound in compiled.line._bound.values() if any(bound.spares)]
    assert len(compiled.line._bound) == 3 and len(held) == 1


@pytest.mark.parametrize(
    "source, shapes, expected",
    [
        ("C_ij = y_j z_j + x_i y_j", {"x": (1,), "y": (3,), "z": (3,)}, lambda x, y, z: y * z + np.outer(x, y)),
        ("C_ij = A_jj + x_i y_j", {"A": (3, 3), "x": (1,), "y": (3,)}, lambda A, x, y: np.diag(A) + np.outer(x, y)),
    ],
)
def test_a_first_term_without_an_axis_of_size_one(source, shapes, expected):
    """An oracle's find in a first version: a sum's first term that lacks an axis of size 1 has
    the result's broadcast shape, and was written into an array of the result's rank (ValueError)."""
    rng = np.random.default_rng(0)
    arrays = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    compiled = einderiv.compile(source)
    for _ in range(3):
        np.testing.assert_allclose(compiled(**arrays), expected(**arrays), rtol=1e-14)
    r = rng.normal(size=3)  # R = r^T (one row): f = |R^T R|_F^2 = |r|^4, its Hessian 4 |r|^2 I + 8 r r^T
    diagonal = einderiv.hessian_diag("K_pq = R_mp R_mq; f = K_pq K_pq", "R")(R=r[None, :])
    np.testing.assert_allclose(diagonal.ravel(), 4 * r @ r + 8 * r**2, rtol=1e-13)


def _sigmoid_reference(a):
    """1 / (1 + exp(-a)) in NumPy's long double (x86's 64-bit significand), rounded to float64."""
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-a.astype(np.longdouble)))).astype(np.float64)


def _softplus_reference(a):
    with np.errstate(invalid="ignore"):  # logaddexp warns at NaN
        return np.logaddexp(0, a)


@pytest.mark.parametrize(
    "name, reference, rtol",
    [
        ("relu", lambda a: np.maximum(a, 0.0), 0),
        ("step", lambda a: np.where(np.isnan(a), a, (a > 0).astype(float)), 0),
        ("sigmoid", _sigmoid_reference, 5e-16),  # within 2 ulps
        ("softplus", _softplus_reference, 2e-15),  # NumPy's exp and log1p loops differ by ulps
    ],
)
def test_the_functions_without_a_ufunc_write_into_the_last_evaluations_array(name, reference, rtol):
    """relu, step, sigmoid and softplus are functions of einderiv's own on NumPy arrays, not ufuncs:
    they take ``out=`` as a ufunc does, so an evaluation writes into the array the last one left
    (a fresh one cost relu 1.2 ms for 0.2 at 2000 x 200 inside a network's gradient).  The numbers
    at new inputs each time, NaN, infinities, -0.0 and +-800 among them."""
    assert runtime._ufunc(name, None) is not None
    compiled = einderiv.compile(f"Y_ij = {name}(A_ij) B_ij")
    rng = np.random.default_rng(0)
    B = rng.normal(size=(500, 400))
    kept = []  # the array of the function's step that each evaluation leaves for the next
    for scale in (1.0, 40.0, 800.0):
        A = scale * rng.normal(size=(500, 400))
        A[0, :6] = [np.nan, np.inf, -np.inf, -0.0, 800.0, -800.0]
        expected = reference(A) * B
        np.testing.assert_allclose(compiled(A=A, B=B), expected, rtol=rtol + 4e-16, atol=0, equal_nan=True)
        (bound,) = compiled.line._bound.values()
        (step,) = [s.target for s in compiled.line.steps if getattr(s, "func", None) == name]
        kept.append(id(bound.spares[0][step]))
    assert kept[0] == kept[1] == kept[2]  # written into, not a fresh array each time
    out = np.full((500, 400), 7.0)
    written = runtime._ufunc(name, None)(A, out=out)
    assert written is out
    np.testing.assert_array_equal(out, runtime._ufunc(name, None)(A))  # as a fresh array, bit for bit
