"""Output formats: LaTeX, Unicode, and the eval and check commands."""

from __future__ import annotations

import importlib.util
import re
from fractions import Fraction

import numpy as np
import pytest

import einderiv
from tests.helpers import jax_float64
from tests.helpers import run_cli as run

KNOWN_COMMANDS = {
    "frac", "partial", "delta", "left", "right", "exp", "log", "sin", "cos", "tan", "tanh", "sigma", "sqrt",
    "operatorname", "det", "sum", "mathrm", "begin", "end", "theta", "Phi", "Theta", "Sigma", "mu", "lambda",
    "cdot", "times", "nu",
}  # fmt: skip

CASES = [
    ("K_pq = R_mp R_mq", ["R"]),
    ("f = x_i A_ij x_j", ["x", "x"]),
    ("e_n = y_n - Phi_nd theta_d; L = e_n e_n", ["theta"]),
    ("z_n = X_nd w_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))", ["w"]),
    ("f = a_i inv(X)_ij b_j + logdet(X) + det(X)^2", ["X"]),
    ("P_nk = softmax_k(Z_nk)", ["Z"]),
    ("f = sqrt(x_i x_i) + abs(s) + softplus(s) / 3", ["x"]),
    ("h_nj = tanh(X_ni W_{in,out} + b_j); L = h_nj h_nj", ["b"]),
    ("L = 0.5 sigma (y_n - X_nd w_d)^2 + (sum_i(w_i) - 1)^2", ["w"]),
    ("f = T_{mu,nu} x_{mu,} x_{nu,} + (1e200 x_{i1})^2 + (1e-200 x_{i1})^3", ["x"]),
]


def check_latex(text: str) -> None:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, text
    assert depth == 0, text
    assert text.count(r"\left") == text.count(r"\right"), text
    for command in re.findall(r"\\([A-Za-z]+)", text):
        assert command in KNOWN_COMMANDS, (command, text)


@pytest.mark.parametrize("source, wrt", CASES)
def test_latex_is_well_formed(source, wrt):
    derivative = einderiv.diff(source, wrt)
    text = derivative.latex()
    check_latex(text)
    assert derivative._repr_latex_() == f"${text}$"
    check_latex(einderiv.compile(source).latex())
    if importlib.util.find_spec("matplotlib") is not None:  # its mathtext parser, where installed
        from matplotlib.mathtext import MathTextParser

        if r"\begin" not in text:
            MathTextParser("path").parse(f"${text}$")


def test_latex_and_pretty_forms_of_the_core_example():
    d = einderiv.diff("K_pq = R_mp R_mq", "R")
    assert d.latex() == r"\frac{\partial K_{pq}}{\partial R_{ij}} = \delta_{jp} R_{iq} + R_{ip} \delta_{jq}"
    assert d.pretty() == "∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq"
    h = einderiv.hessian("f = x_i A_ij x_j", "x")
    assert h.latex() == r"\frac{\partial^{2} f}{\partial x_{k} \partial x_{l}} = A_{kl} + A_{lk}"
    assert h.pretty() == "∂²f/∂x_k ∂x_l = A_kl + A_lk"
    g = einderiv.diff("f = a_i inv(X)_ij b_j", "X")
    assert r"\left(X^{-1}\right)_{ik}" in g.latex() and "(X⁻¹)_ik" in g.pretty()
    s = einderiv.diff("s_n = sigmoid(X_nd w_d)", "w")
    assert r"\sigma\left(" in s.latex() and "σ(" in s.pretty()


@pytest.mark.parametrize(
    ("source", "wrt", "expected"),
    [
        # a letter summed by rule 5 (free on the right, not on the left) is a sum a reader of
        # Einstein notation sees: it printed 2 x_{i} - 2, which reads as 2 x_j - 2 elementwise
        ("f = (sum_i(x_i) - 1)^2", "x", r"\frac{\partial f}{\partial x_{j}} = \sum_{i} 2 x_{i} - 2"),
        ("r_j = sum_i(A_ij) x_i", "A", r"\frac{\partial r_{j}}{\partial A_{lm}} = \sum_{i} \delta_{jm} x_{i}"),
        ("f = theta_i theta_i Sigma_ij", "theta", r"= \sum_{j} 2 \theta_{k} \Sigma_{kj}"),
        ("t = x_i + 1; f = t y_j", "y", r"t &= \sum_{i} x_{i} + 1"),
        # a repeated letter is Einstein's own sum: printed as it was
        ("f = x_i A_ij x_j", "x", r"\frac{\partial f}{\partial x_{k}} = A_{kj} x_{j} + x_{i} A_{ik}"),
        # a scalar sigma times a sum: it printed as the sigmoid of the sum, \sigma \left(...\right)
        ("L = 0.5 sigma (y_n - X_nd w_d)^2", "w", r"= -\sigma \cdot \left(y_{n} - X_{nd} w_{d}\right) X_{ni}"),
        # TeX raises one character after ^ and reads e as a number: 2 * 10^400 and 3e-200 before
        ("f = (1e200 x_i)^2", "x", r"= 2 \times 10^{400} x_{j}"),
        ("f = (1e-200 x_i)^3", "x", r"= 3 \times 10^{-200} \left(10^{-200} x_{j}\right)^{2}"),
        # one longer index is one index: x_{nu} read as x with indices n and u
        ("f = T_{mu,nu} x_{mu,} x_{nu,}", "x", r"= T_{i,\nu} x_{\nu} + T_{\mu,i} x_{\mu}"),
        ("f = W_{i,out} y_{out,} x_i", "x", r"= W_{j,\mathrm{out}} y_{\mathrm{out}}"),
    ],
)
def test_latex_writes_what_a_reader_of_einstein_notation_computes(source, wrt, expected):
    assert expected in einderiv.diff(source, wrt).latex()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # a scaled sum keeps its terms (rule 4): each is summed inside its parentheses, and the
        # sign before it stays the whole sum's (3 - 2 (x_i + 1) printed as 3 - sum 2 x + 2 once)
        ("y = 3 - 2 (x_i + 1)", r"y = 3 - 2 \left(\sum_{i} x_{i} + 1\right)"),
        ("y = 3 - 2 (x_i - z_k)", r"y = 3 - 2 \left(\sum_{i} x_{i} - \sum_{k} z_{k}\right)"),
        ("y = 0.5 (x_i + 1)", r"y = 0.5 \left(\sum_{i} x_{i} + 1\right)"),
        ("y = -(x_i + 1)", r"y = -\left(\sum_{i} x_{i} + 1\right)"),
        ("y = 3 - (x_i - 1) / 2", r"y = 3 - \frac{\sum_{i} x_{i} - 1}{2}"),
        ("f_j = 2 x_i - 2 + y_j", r"f_{j} = \sum_{i} 2 x_{i} - 2 + y_{j}"),
        ("y = 2 (x_i + 1)^2", r"y = \sum_{i} 2 \left(x_{i} + 1\right)^{2}"),
        # a letter three factors contract is no Einstein sum: said (x_i x_i x_i printed bare)
        ("f = x_i x_i x_i", r"f = \sum_{i} x_{i} x_{i} x_{i}"),
        ("f = x_i X_ii", r"f = \sum_{i} x_{i} X_{ii}"),
        # a sum that a power or a factor follows: (sum x)^2 printed as \sum_i (x_i)^2, which reads
        # as the sum of squares
        ("f = sum_i(x_i)^2", r"f = \left(\sum_{i} \left(x_{i}\right)\right)^{2}"),
        ("f = 1 / sum_i(x_i)^2", r"f = \frac{1}{\left(\sum_{i} \left(x_{i}\right)\right)^{2}}"),
        ("f = sum_i(x_i y_i)", r"f = \sum_{i} \left(x_{i} y_{i}\right)"),
    ],
)
def test_latex_of_a_statement_sums_each_term_as_the_rules_do(source, expected):
    assert einderiv.compile(source).latex() == expected


def test_cli_latex_and_pretty():
    result = run("diff", "K_pq = R_mp R_mq", "--wrt", "R", "--format", "latex")
    assert result.returncode == 0 and result.stdout.startswith(r"\frac{\partial K_{pq}}")
    result = run("diff", "K_pq = R_mp R_mq", "--wrt", "R", "--format", "pretty")
    assert result.stdout.strip() == "∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq"


def test_cli_eval_prints_and_saves(tmp_path):
    R = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "R.npy", R)
    result = run("eval", "K_pq = R_mp R_mq", "--input", f"R={tmp_path / 'R.npy'}", "--out", str(tmp_path / "K.npy"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "K.npy"), R.T @ R)
    result = run("eval", "f = x_i A_ij x_j", "--wrt", "x", "--random", "x=3", "--random", "A=3x3")
    assert result.returncode == 0 and "shape (3,)" in result.stdout
    missing = run("eval", "f = x_i x_i", "--input", "x=/no/such/file.npy")
    assert missing.returncode == 2 and missing.stderr.startswith("error: --input x: cannot read")


def test_cli_check_reports_finite_differences_and_claims():
    good = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "A_kj x_j + A_jk x_j")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "finite differences: max relative error" in good.stdout and ": ok" in good.stdout
    assert "your claim: matches" in good.stdout
    wrong = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "2 A_kj x_j")
    assert wrong.returncode == 1
    assert "your claim: DIFFERS: max absolute difference" in wrong.stdout and "at k=" in wrong.stdout
    table = run("check", "K_pq = R_mp R_mq", "--wrt", "R", "--shape", "R=4x3", "--expect",
                "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq")  # fmt: skip
    assert table.returncode == 0 and "your claim: matches" in table.stdout
    hessian = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--wrt", "x", "--expect", "A_kl + A_lk")
    assert hessian.returncode == 0 and "your claim: matches" in hessian.stdout
    bad = run("check", "f = x_i x_i", "--wrt", "x", "--shape", "q=3")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --shape q: not an input")


def test_help_shows_worked_examples():
    for command in ("eval", "check"):
        assert "example:" in run(command, "--help").stdout


def test_layouts():
    rng = np.random.default_rng(0)
    A, x = rng.normal(size=(2, 3)), rng.normal(size=3)
    numerator = einderiv.jacobian("y_i = A_ij x_j", "A")
    denominator = einderiv.jacobian("y_i = A_ij x_j", "A", layout="denominator")
    assert numerator.indices == ("i", "k", "l") and denominator.indices == ("k", "l", "i")
    np.testing.assert_allclose(denominator(A=A, x=x), numerator(A=A, x=x).transpose(1, 2, 0))
    assert denominator.shape_text().startswith("A.shape + y.shape")
    # the gradient of a scalar is the same array in both layouts
    for layout in ("numerator", "denominator"):
        g = einderiv.diff("f = x_i A_ij x_j", "x", layout=layout)
        B = rng.normal(size=(3, 3))
        np.testing.assert_allclose(g(x=x, A=B), (B + B.T) @ x)
    with pytest.raises(einderiv.DifferentiationError, match="layout must be one of numerator, denominator"):
        einderiv.diff("f = x_i x_i", "x", layout="mixed")
    result = run("diff", "y_i = A_ij x_j", "--wrt", "A", "--layout", "denominator", "--format", "json")
    import json

    data = json.loads(result.stdout)
    assert data["layout"] == "denominator" and data["indices"] == ["k", "l", "i"]


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f_i = (x_r + a) C_ie / softplus(E_er)", ["x"]),  # evaluated through its residual x_r + a
        ("f_i = (x_r + a) C_ie / softplus(E_er)", ["x", "E"]),
        ("f_i = C_ie E_er x_r", ["x"]),
    ],
)
def test_the_denominator_layout_prints_the_letters_its_indices_name(source, wrt):
    """A hunt's find: through a residual, the denominator layout printed ``df_j/dx_i`` where
    ``d.indices`` is ('j', 'i') and x's index is j (the printed letters were given in the array's
    order, wrt first, to a statement that writes the output's first).  The statement is the same
    in both layouts (README): the output's letters, then each wrt's, as ``d.wrt`` names them."""
    jax, jnp = jax_float64()
    derivative = einderiv.diff(source, wrt, layout="denominator")
    statement = derivative.statement  # as printed
    printed = (*statement.target.indices, *(i for w in statement.wrt for i in w.indices))
    named = tuple(i for w in derivative.wrt for i in w.indices)
    assert printed[len(printed) - len(named) :] == named, str(derivative)
    assert derivative.indices == (*named, *printed[: len(printed) - len(named)])
    gen = np.random.default_rng(0)
    shapes = {"x": (3,), "a": (), "C": (4, 5), "E": (5, 3)}
    arrays = {k: gen.normal(size=shapes[k]) for k in derivative.inputs}

    def f(x, E):  # the source in jax: f_i = sum_re (x_r + a) C_ie / softplus(E_er), or C E x
        if "softplus" in source:
            return arrays["C"] @ ((x + arrays["a"])[None, :] / jax.nn.softplus(E)).sum(axis=1)
        return arrays["C"] @ E @ x

    jacobian = jax.jacfwd(f, 0) if wrt == ["x"] else jax.jacfwd(jax.jacfwd(f, 0), 1)
    numerator = np.asarray(jacobian(arrays["x"], arrays["E"]))  # f's axis first, then each wrt's
    np.testing.assert_allclose(derivative(**arrays), np.moveaxis(numerator, 0, -1), rtol=1e-12, atol=1e-14)


def _json_of(source: str, *wrt: str) -> dict:
    import json

    result = run("diff", source, *(a for w in wrt for a in ("--wrt", w)), "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_json_sizes_a_count_that_only_deltas_carry():
    """A hunt's find: ``',aa,->' (mu, delta, s^-2)`` summed a letter that nothing in the JSON
    sized (it is x's length N).  Evaluated from the JSON alone with np.einsum, the mixed second
    derivative is jax's: (sum(x) - N mu) / s^2."""
    jax, jnp = jax_float64()
    data = _json_of("e_n = exp(-(x_n - mu)^2 / (2 s)); L = -sum_n(log(e_n / sqrt(s)))", "mu", "s")
    x, mu, s = np.array([0.3, -1.2, 2.5, 0.7]), 0.4, 1.7
    arrays = {"x": x, "mu": np.array(mu), "s^-2": np.array(s**-2.0)}
    total = 0.0
    for term in data["einsum"]:
        letters = term["subscripts"].split("->")[0].split(",")
        operands = []
        for name, written in zip(term["operands"], letters):
            if name == "delta":
                axis = term["sizes"][written[0]]
                operands.append(np.eye({"x": x}[axis[0]].shape[axis[1]]))
            else:
                operands.append(arrays[name])
        total += float(Fraction(term["coefficient"])) * np.einsum(term["subscripts"], *operands)

    def loss(mu, s):
        e = jnp.exp(-((x - mu) ** 2) / (2 * s))
        return -jnp.sum(jnp.log(e / jnp.sqrt(s)))

    expected = jax.grad(jax.grad(loss, 0), 1)(mu, s)
    assert total == pytest.approx(float(expected), rel=1e-12)


def test_every_name_the_json_einsum_reads_is_an_input_or_one_of_its_steps():
    """A hunt's find: the einsum terms read the adjoint ``dydv``, which neither ``program`` (the
    printed statements, through the residual r) nor any other key defined.  ``steps`` lists each
    statement the terms read, with its own terms, in order."""
    data = _json_of("m = mean_d(x_d); v = mean_d((x_d - m)^2); y_d = (x_d - m) / sqrt(v + 1)", "x")
    defined = set(data["inputs"])
    for step in [*data["steps"], {"name": None, "einsum": data["einsum"]}]:
        for term in step["einsum"]:
            for name in term["operands"]:
                if re.fullmatch(r"\w+", name) and name != "delta":
                    assert name in defined, (name, step["name"], defined)
        defined.add(step["name"])
    assert "dydv" in {s["name"] for s in data["steps"]}
