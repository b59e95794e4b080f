"""Gradients by several parameters in one evaluation, and the value with them, against jax
(jax.grad with argnums, jax.value_and_grad) in float64; the CLI's --each."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import einderiv

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

rng = np.random.default_rng(3)
N, D, K = 30, 4, 5
SOURCE = "h_nk = tanh(X_nd W1_dk + b1_k); L = 0.5 (h_nk W2_k + b2 - y_n)^2"
ARRAYS = {
    "X": rng.normal(size=(N, D)),
    "y": rng.normal(size=N),
    "W1": 0.5 * rng.normal(size=(D, K)),
    "b1": rng.normal(size=K),
    "W2": rng.normal(size=K),
    "b2": np.array(0.3),
}
PARAMETERS = ["W1", "b1", "W2", "b2"]


def loss(W1, b1, W2, b2, X, y):
    return 0.5 * jnp.sum((jnp.tanh(X @ W1 + b1) @ W2 + b2 - y) ** 2)


def jax_arguments():
    return [jnp.asarray(ARRAYS[n]) for n in [*PARAMETERS, "X", "y"]]


def test_gradients_by_each_parameter_match_jax_argnums():
    expected = jax.grad(loss, argnums=(0, 1, 2, 3))(*jax_arguments())
    gradients = einderiv.grad(SOURCE, PARAMETERS)
    assert isinstance(gradients, tuple) and len(gradients) == 4
    values = gradients(**ARRAYS)
    for name, got, want, derivative in zip(PARAMETERS, values, expected, gradients):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(derivative(**{k: ARRAYS[k] for k in derivative.ranks}), got, rtol=1e-12)


def test_value_and_grad_match_jax():
    value, (g_w1, g_w2) = einderiv.value_and_grad(SOURCE, ["W1", "W2"])(**ARRAYS)
    want_value, (want_w1, want_w2) = jax.value_and_grad(loss, argnums=(0, 2))(*jax_arguments())
    np.testing.assert_allclose(value, float(want_value), rtol=1e-12)
    np.testing.assert_allclose(g_w1, np.asarray(want_w1), rtol=1e-10)
    np.testing.assert_allclose(g_w2, np.asarray(want_w2), rtol=1e-10)
    value, g_b1 = einderiv.value_and_grad(SOURCE, "b1")(**ARRAYS)  # one name: the gradient itself
    np.testing.assert_allclose(g_b1, np.asarray(jax.grad(loss, argnums=1)(*jax_arguments())), rtol=1e-10)


def test_the_printed_gradients_define_a_shared_adjoint_once_and_read_back():
    """Gradients that share an adjoint print it once, also where each sums it over a letter of its
    own: ``dLdh_nk = (1 - g_no^2) y_no W2_ko`` by W1 and ``... g_nl ...`` by b1 were both printed,
    and the text defined dLdh twice (a hunt's find).  The text reads back, and each gradient in it
    evaluates to jax's."""
    source = "h_nk = tanh(X_nd W1_dk + b1_k); g_nm = tanh(h_nk W2_km); L = g_nm y_nm"
    arrays = {"X": ARRAYS["X"], "W1": ARRAYS["W1"], "b1": ARRAYS["b1"]}
    arrays |= {"W2": rng.normal(size=(K, 3)), "y": rng.normal(size=(N, 3))}

    def network(W1, b1):
        return jnp.sum(jnp.tanh(jnp.tanh(arrays["X"] @ W1 + b1) @ arrays["W2"]) * arrays["y"])

    expected = jax.grad(network, argnums=(0, 1))(jnp.asarray(arrays["W1"]), jnp.asarray(arrays["b1"]))
    for function in (einderiv.grad, einderiv.value_and_grad):
        text = str(function(source, ["W1", "b1"]))
        assert sum(line.startswith("dLdh_nk = ") for line in text.splitlines()) == 1, text
        for name, want in zip(["dL/dW1", "dL/db1"], expected):
            read = einderiv.compile(text, of=name)
            np.testing.assert_allclose(read(**arrays), np.asarray(want), rtol=1e-10, err_msg=name)


def test_one_line_computes_what_the_gradients_share_once():
    gradients = einderiv.value_and_grad(SOURCE, PARAMETERS)
    steps = gradients.line.steps
    tanh_steps = [s for s in steps if s.kind == "elementwise" and s.func == "tanh"]
    assert len(tanh_steps) == 1  # the hidden layer, once for the value and the four gradients
    singles = sum(len(einderiv.grad(SOURCE, p).line.steps) for p in PARAMETERS)
    assert len(steps) < singles


def test_extreme_and_non_finite_inputs_agree_with_jax():
    arrays = dict(ARRAYS)
    arrays["X"] = arrays["X"].copy()
    arrays["X"][0, 0] = 1e300  # tanh saturates: finite gradients
    arrays["X"][1, 1] = np.nan  # a NaN row: NaN where jax has NaN
    args = [jnp.asarray(arrays[n]) for n in [*PARAMETERS, "X", "y"]]
    expected = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    for name, got, want in zip(PARAMETERS, einderiv.grad(SOURCE, PARAMETERS)(**arrays), expected):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: einderiv.grad(SOURCE, ["W1", "W1"]), "names a tensor twice"),
        (lambda: einderiv.grad("K_pq = R_mp R_mq", ["R"]), "grad needs a scalar output"),
        (lambda: einderiv.grad(SOURCE, ["W1", "q"]), "does not occur"),
        (lambda: einderiv.grad(SOURCE, PARAMETERS)(**{**ARRAYS, "q": np.ones(2)}), "unknown input 'q'"),
        (lambda: einderiv.grad(SOURCE, PARAMETERS)(**{k: v for k, v in ARRAYS.items() if k != "y"}), "missing"),
        (lambda: einderiv.grad(SOURCE, PARAMETERS)(**{**ARRAYS, "y": np.ones(N + 1)}), "two sizes"),
    ],
)
def test_bad_requests_are_clear_errors(call, message):
    with pytest.raises(einderiv.EinderivError, match=message):
        call()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "einderiv", *args], capture_output=True, text=True, timeout=120)


def test_cli_each_prints_each_gradient_and_json_lists_them():
    done = run_cli("diff", SOURCE, "--each", "W1", "--each", "b2")
    assert done.returncode == 0, done.stderr
    assert "dL/dW1_ij = " in done.stdout and "dL/db2 = " in done.stdout
    done = run_cli("diff", SOURCE, "--each", "W2", "--each", "b1", "--format", "json")
    listed = json.loads(done.stdout)["gradients"]
    assert [item["shape"] for item in listed] == [["K"], ["K"]]


def test_cli_each_naming_a_tensor_twice_says_how_the_cli_spells_a_second_derivative():
    """A hunt's find: the error named the Python API (``hessian() or diff(source, [x, x])``)."""
    done = run_cli("diff", SOURCE, "--each", "W1", "--each", "W1")
    assert done.returncode != 0 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "--wrt W1 --wrt W1" in done.stderr and "hessian()" not in done.stderr
    done = run_cli("diff", "f = θ_i θ_i", "--each", "θ", "--each", "theta")  # one name, as the text reads it
    assert done.returncode != 0 and "--wrt theta --wrt theta" in done.stderr


def test_cli_each_and_wrt_together_is_one_error_line():
    done = run_cli("diff", SOURCE, "--each", "W1", "--wrt", "W1")
    assert done.returncode != 0 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
