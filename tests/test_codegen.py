"""Generated code (--format python|jax|torch): standalone, deterministic, lint-clean, and equal to
einderiv's own evaluation."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

import einderiv
from einderiv.codegen import generate, identifier
from tests.helpers import load_module as load

CASES = [
    ("K_pq = R_mp R_mq", ["R"], {"R": (4, 3)}),
    ("f = x_i A_ij x_j", ["x", "x"], {"x": (3,), "A": (3, 3)}),
    ("C_ij = a_i + b_j", ["a"], {"a": (2,), "b": (3,)}),
    ("z_n = X_nd w_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))", ["w", "w"],
     {"X": (5, 3), "w": (3,), "y": (5,)}),
    ("z_k = T_kd x_d; L = -y_k z_k + logsumexp_j(z_j)", ["T"], {"T": (4, 3), "x": (3,), "y": (4,)}),
    ("f = a_i inv(X)_ij b_j + logdet(X) + det(X)", ["X"], {"a": (3,), "X": (3, 3), "b": (3,)}),
    ("P_nk = softmax_k(Z_nk)", ["Z"], {"Z": (2, 3)}),
    ("h = relu(x_i) abs(x_i) + softplus(s) + x_i^3 / 2", ["x"], {"x": (3,), "s": ()}),
]  # fmt: skip


def arrays_for(shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        value = rng.uniform(0.2, 0.8, size=shape)
        if len(shape) == 2 and shape[0] == shape[1]:
            value = value + 3 * np.eye(shape[0])
        out[name] = value
    return out


@pytest.mark.parametrize("source, wrt, shapes", CASES)
def test_generated_numpy_module_matches_einderiv(source, wrt, shapes, tmp_path):
    value, derivative = einderiv.compile(source), einderiv.diff(source, wrt)
    code = generate([value, derivative], "python")
    assert code == generate([value, derivative], "python")  # deterministic
    assert "import einderiv" not in code and "from einderiv" not in code
    module = load(code, tmp_path, "generated")
    arrays = arrays_for(shapes)
    functions = [f for f in vars(module) if not f.startswith("_") and callable(vars(module)[f])]
    functions = [f for f in functions if f not in ("np", "oe")]
    assert len(functions) == 2
    first, second = (getattr(module, f) for f in functions)
    np.testing.assert_allclose(first(**{k: arrays[k] for k in value.ranks}), value(**arrays), rtol=1e-12)
    np.testing.assert_allclose(second(**{k: arrays[k] for k in derivative.ranks}), derivative(**arrays), rtol=1e-10)
    if shutil.which("ruff") or importlib.util.find_spec("ruff"):
        (tmp_path / "pyproject.toml").write_text("")
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--isolated", str(tmp_path / "generated.py")],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout


@pytest.mark.parametrize("flavour, module_name", [("jax", "jax"), ("torch", "torch")])
def test_generated_jax_and_torch_modules(flavour, module_name, tmp_path):
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} is not installed (an optional extra)")
    if module_name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        convert = np.asarray
    else:
        import torch

        convert = torch.as_tensor
    for k, (source, wrt, shapes) in enumerate(CASES):
        derivative = einderiv.diff(source, wrt)
        module = load(generate([derivative], flavour), tmp_path, f"generated_{flavour}_{k}")
        arrays = arrays_for(shapes)
        function = next(getattr(module, f) for f in vars(module) if f.startswith("d"))
        result = function(**{n: convert(arrays[n]) for n in derivative.ranks})
        result = np.asarray(result.detach() if hasattr(result, "detach") else result)
        np.testing.assert_allclose(result, derivative(**arrays), rtol=1e-8, atol=1e-12, err_msg=source)


def test_names_are_sanitised(tmp_path):
    assert identifier("lambda") == "lambda_" and identifier("sum") == "sum_" and identifier("np") == "np_"
    x = np.ones(3)
    names = einderiv.compile("f = import_i x_i + sum_i x_i").ranks
    assert set(names) == {"import", "x", "sum"}
    derivative = einderiv.diff("f = import_i x_i + sum_i x_i", "x")
    module = load(generate([derivative], "python"), tmp_path, "keywords")
    np.testing.assert_allclose(module.df_dx(import_=np.ones(3), sum_=np.full(3, 2.0), x=x), np.full(3, 3.0))


def test_cli_python_format():
    result = subprocess.run(
        [sys.executable, "-m", "einderiv", "diff", "K_pq = R_mp R_mq", "--wrt", "R", "--format", "python"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert "def K(R):" in result.stdout and "def dK_dR(R):" in result.stdout
