"""Random programs against JAX: value, gradient and Hessian in float64.

A hypothesis strategy builds a program of 2-5 statements over a few inputs (a scalar s, vectors
x and u of size 3, v of size 4, a 3 x 4 matrix A and a well-conditioned 3 x 3 matrix M) and, from
the same tree, a jax.numpy function computing the same thing, so JAX is the independent oracle.
Statements are elementwise expressions (exp of bounded arguments, tanh, sigmoid, softplus, sin,
cos, logs of positive things, sqrt(1 + u^2), powers, quotients, broadcasting), reductions
(sum_i, mean_i, logsumexp_i, implicit contractions), softmax along an axis, products and
contractions, and matrix functions (inv, det, logdet) of well-conditioned matrices; the last
statement is a scalar. EINDERIV_EXAMPLES=500 for a longer hunt.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import einderiv

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

#: Examples per property; EINDERIV_EXAMPLES=500 for a longer hunt.
EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "20"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

SIZES = {"i": 3, "j": 4, "k": 3}
#: a type is the tuple of its statement letters: its axes, in order
TYPES = {"s": (), "vI": ("i",), "vJ": ("j",), "mIJ": ("i", "j"), "mII": ("i", "k")}
SHAPES = {t: tuple(SIZES[letter] for letter in letters) for t, letters in TYPES.items()}
INPUTS = {"s": "s", "x": "vI", "u": "vI", "v": "vJ", "A": "mIJ", "M": "mII"}
#: the letter class of each letter: i and k are both of size 3 (an I-vector may stand on either)
CLASS = {"i": "I", "k": "I", "j": "J"}


def make_inputs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {name: 0.7 * rng.normal(size=SHAPES[kind]) for name, kind in INPUTS.items()}
    arrays["M"] = 3 * np.eye(3) + 0.2 * rng.normal(size=(3, 3))
    return arrays


def place(value, letters: tuple, layout: tuple):
    """An array over ``letters`` arranged to broadcast over ``layout`` (a superset, in its order)."""
    present = [letter for letter in layout if letter in letters]
    if len(letters) > 1:
        value = jnp.transpose(value, [letters.index(letter) for letter in present])
    return value[tuple(slice(None) if letter in letters else None for letter in layout)]


@dataclass
class Env:
    """Names defined so far: name -> type; well-conditioned square matrices; inputs used."""

    types: dict
    well_conditioned: set
    used: set

    def names(self, kind):
        return [name for name, t in self.types.items() if t == kind]

    def intermediates(self, kind):
        return [name for name, t in self.types.items() if t == kind and name not in INPUTS]


def pick(env: Env, kind: str):
    """A name of type ``kind``; half the time an intermediate, where there is one."""
    everything = st.sampled_from(env.names(kind))
    inter = env.intermediates(kind)
    return st.one_of(st.sampled_from(inter), everything) if inter else everything


def prefer_intermediates(choices):
    """Half the time only the intermediates among (name, letters) choices, where there are some."""
    inter = [c for c in choices if c[0] not in INPUTS]
    return st.one_of(st.sampled_from(inter), st.sampled_from(choices)) if inter else st.sampled_from(choices)


# -- elementwise expressions over a statement's letters ---------------------------------------------


def operands(env: Env, layout: tuple):
    """(name, letters it is written with) for every name that broadcasts onto ``layout``."""
    found = []
    for name, kind in env.types.items():
        letters = TYPES[kind]
        if kind == "s":
            found.append((name, ()))  # scalar intermediates broadcast in reductions too
        elif kind in ("vI", "vJ"):
            cls = "I" if kind == "vI" else "J"
            found += [(name, (letter,)) for letter in layout if CLASS[letter] == cls]
        elif kind == "mIJ" and layout == ("i", "j"):
            found.append((name, letters))
        elif kind == "mII" and layout == ("i", "k"):
            found += [(name, ("i", "k")), (name, ("k", "i"))]
    return found


def leaf_text(name, letters):
    return f"{name}_{''.join(letters)}" if letters else name


@st.composite
def leaf(draw, env: Env, layout: tuple):
    choices = operands(env, layout)
    if draw(st.integers(0, 5)) == 0:
        c = draw(st.sampled_from(["0.5", "2", "1.5", "3"]))
        return c, (lambda e, c=float(c): jnp.asarray(c)), set()
    name, letters = draw(prefer_intermediates(choices))
    text = leaf_text(name, letters)
    return text, (lambda e, n=name, ls=letters: place(e[n], ls, layout)), set(letters)


BOUNDED = {"tanh": jnp.tanh, "sin": jnp.sin, "cos": jnp.cos, "sigmoid": jax.nn.sigmoid}


def _sigmoid(z):
    return 1 / (1 + jnp.exp(-z))


UNARY = {
    "tanh": ("tanh({})", jnp.tanh),
    "sigmoid": ("sigmoid({})", _sigmoid),
    "softplus": ("softplus({})", lambda z: jnp.log1p(jnp.exp(-jnp.abs(z))) + jnp.maximum(z, 0)),
    "sin": ("sin({})", jnp.sin),
    "cos": ("cos({})", jnp.cos),
    "exp_tanh": ("exp(tanh({}))", lambda z: jnp.exp(jnp.tanh(z))),
    "exp_sin": ("exp(sin({}))", lambda z: jnp.exp(jnp.sin(z))),
    "log_softplus": ("log(softplus({}))", lambda z: jnp.log(jnp.log1p(jnp.exp(-jnp.abs(z))) + jnp.maximum(z, 0))),
    "log_exp_plus_one": ("log(exp(tanh({})) + 1)", lambda z: jnp.log(jnp.exp(jnp.tanh(z)) + 1)),
    "log1p_sq": ("log1p(({})^2)", lambda z: jnp.log1p(z**2)),
    "sqrt_one_plus_sq": ("sqrt(1 + ({})^2)", lambda z: jnp.sqrt(1 + z**2)),
    "square": ("({})^2", lambda z: z**2),
    "cube": ("({})^3", lambda z: z**3),
    "neg": ("-({})", lambda z: -z),
}


@st.composite
def elementwise(draw, env: Env, layout: tuple, depth: int = 2):
    """(text, jax function of the environment, letters used) of an elementwise expression."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(leaf(env, layout))
    kind = draw(st.sampled_from(["unary", "unary", "add", "sub", "mul", "mul", "div"]))
    a_text, a_fn, a_letters = draw(elementwise(env, layout, depth - 1))
    if kind == "unary":
        template, f = UNARY[draw(st.sampled_from(sorted(UNARY)))]
        return template.format(a_text), (lambda e: f(a_fn(e))), a_letters
    b_text, b_fn, b_letters = draw(elementwise(env, layout, depth - 1))
    letters = a_letters | b_letters
    if kind == "add":
        return f"({a_text} + {b_text})", (lambda e: a_fn(e) + b_fn(e)), letters
    if kind == "sub":
        return f"({a_text} - {b_text})", (lambda e: a_fn(e) - b_fn(e)), letters
    if kind == "mul":
        return f"({a_text})({b_text})", (lambda e: a_fn(e) * b_fn(e)), letters
    return f"({a_text}) / (1 + ({b_text})^2)", (lambda e: a_fn(e) / (1 + b_fn(e) ** 2)), letters


@st.composite
def full_elementwise(draw, env: Env, kind: str):
    """An elementwise expression over every letter of ``kind`` (a missing one is added as a term)."""
    layout = TYPES[kind]
    text, fn, letters = draw(elementwise(env, layout))
    if not set(layout) <= letters:
        name = draw(pick(env, kind))
        text, fn = f"({text} + {leaf_text(name, layout)})", (lambda e, f=fn, n=name: f(e) + e[n])
    shape = SHAPES[kind]
    return text, (lambda e, f=fn: jnp.broadcast_to(f(e), shape))


# -- statements ------------------------------------------------------------------------------------------


@st.composite
def statement(draw, env: Env, scalar: bool):
    """(left-hand side type, right-hand side text, jax function) of one statement."""
    kinds = ["reduce_all", "contract_scalar", "matrix_scalar", "elementwise_scalar"]
    if not scalar:
        kinds += ["elementwise"] * 3 + ["reduce_axis", "softmax", "contract", "matrix", "well_conditioned"]
    kind = draw(st.sampled_from(kinds))
    if kind == "elementwise_scalar":
        if len(env.names("s")) < 2 and draw(st.booleans()):
            kind = "reduce_all"
        else:
            text, fn = draw(full_elementwise(env, "s"))
            return "s", text, fn
    if kind == "elementwise":
        out = draw(st.sampled_from(["vI", "vJ", "mIJ", "mII"]))
        text, fn = draw(full_elementwise(env, out))
        return out, text, fn
    if kind == "reduce_all":
        source = draw(st.sampled_from(["vI", "vJ", "mIJ", "mII"]))
        letters = "".join(TYPES[source])
        text, fn = draw(full_elementwise(env, source))
        op = draw(st.sampled_from(["sum", "mean"] + ["logsumexp"] * (len(letters) == 1)))
        reduce = {"sum": jnp.sum, "mean": jnp.mean, "logsumexp": jax.nn.logsumexp}[op]
        return "s", f"{op}_{letters}({text})", (lambda e: reduce(fn(e)))
    if kind == "reduce_axis":
        source = draw(st.sampled_from(["mIJ", "mII"]))
        layout = TYPES[source]
        axis = draw(st.integers(0, 1))
        out = {("mIJ", 0): "vJ", ("mIJ", 1): "vI", ("mII", 0): "vI", ("mII", 1): "vI"}[source, axis]
        text, fn = draw(full_elementwise(env, source))
        op = draw(st.sampled_from(["sum", "mean", "logsumexp"]))
        reduce = {"sum": jnp.sum, "mean": jnp.mean, "logsumexp": jax.nn.logsumexp}[op]
        # the left-hand side names the letter kept: r_i = sum_j(E_ij), r_k = sum_i(E_ik), ...
        return out, (layout[1 - axis], f"{op}_{layout[axis]}({text})"), (lambda e: reduce(fn(e), axis=axis))
    if kind == "softmax":
        source = draw(st.sampled_from(["vI", "vJ", "mIJ", "mII"]))
        layout = TYPES[source]
        axis = draw(st.integers(0, len(layout) - 1))
        text, fn = draw(full_elementwise(env, source))
        return source, f"softmax_{layout[axis]}({text})", (lambda e: jax.nn.softmax(fn(e), axis=axis))
    if kind == "contract_scalar":
        form = draw(st.sampled_from(["dot", "quad_II", "bilinear_IJ", "frobenius", "square"]))
        if form == "dot":
            kind_ = draw(st.sampled_from(["vI", "vJ"]))
            a, b = draw(pick(env, kind_)), draw(pick(env, kind_))
            letter = TYPES[kind_][0]
            return "s", f"{a}_{letter} {b}_{letter}", (lambda e: e[a] @ e[b])
        if form == "quad_II":
            a, b = draw(pick(env, "vI")), draw(pick(env, "vI"))
            m = draw(pick(env, "mII"))
            return "s", f"{a}_i {m}_ik {b}_k", (lambda e: e[a] @ e[m] @ e[b])
        if form == "bilinear_IJ":
            a, b = draw(pick(env, "vI")), draw(pick(env, "vJ"))
            m = draw(pick(env, "mIJ"))
            return "s", f"{a}_i {m}_ij {b}_j", (lambda e: e[a] @ e[m] @ e[b])
        if form == "frobenius":
            kind_ = draw(st.sampled_from(["mIJ", "mII"]))
            a, b = draw(pick(env, kind_)), draw(pick(env, kind_))
            letters = "".join(TYPES[kind_])
            return "s", f"{a}_{letters} {b}_{letters}", (lambda e: jnp.sum(e[a] * e[b]))
        kind_ = draw(st.sampled_from(["vI", "vJ", "mIJ", "mII"]))
        a = draw(pick(env, kind_))
        letters = "".join(TYPES[kind_])
        return "s", f"{a}_{letters}^2", (lambda e: jnp.sum(e[a] ** 2))
    if kind == "contract":
        form = draw(st.sampled_from(["matvec_IJ", "vecmat_IJ", "matvec_II", "outer", "gram", "matmat_II"]))
        if form == "matvec_IJ":
            m, b = draw(pick(env, "mIJ")), draw(pick(env, "vJ"))
            return "vI", ("i", f"{m}_ij {b}_j"), (lambda e: e[m] @ e[b])
        if form == "vecmat_IJ":
            a, m = draw(pick(env, "vI")), draw(pick(env, "mIJ"))
            return "vJ", ("j", f"{a}_i {m}_ij"), (lambda e: e[a] @ e[m])
        if form == "matvec_II":
            m, b = draw(pick(env, "mII")), draw(pick(env, "vI"))
            if draw(st.booleans()):
                return "vI", ("i", f"{m}_ik {b}_k"), (lambda e: e[m] @ e[b])
            return "vI", ("k", f"{b}_i {m}_ik"), (lambda e: e[b] @ e[m])
        if form == "outer":
            a, b = draw(pick(env, "vI")), draw(pick(env, "vJ"))
            return "mIJ", f"{a}_i {b}_j", (lambda e: jnp.outer(e[a], e[b]))
        if form == "gram":
            a, b = draw(pick(env, "mIJ")), draw(pick(env, "mIJ"))
            return "mII", f"{a}_ij {b}_kj", (lambda e: e[a] @ e[b].T)
        a, b = draw(pick(env, "mII")), draw(pick(env, "mII"))
        return "mII", f"{a}_ij {b}_jk", (lambda e: e[a] @ e[b])
    if kind == "well_conditioned":
        if draw(st.booleans()):
            a = draw(pick(env, "mIJ"))
            return "wc", f"{a}_ij {a}_kj + 3 delta_ik", (lambda e: e[a] @ e[a].T + 3 * jnp.eye(3))
        m = draw(st.sampled_from(sorted(env.well_conditioned)))
        text, fn = draw(full_elementwise(env, "mII"))
        return "wc", f"{m}_ik + 0.1 tanh({text})", (lambda e: e[m] + 0.1 * jnp.tanh(fn(e)))
    m = draw(st.sampled_from(sorted(env.well_conditioned)))
    if kind == "matrix_scalar":
        form = draw(st.sampled_from(["logdet", "det", "trace_inv", "quad_inv"]))
        if form == "logdet":
            return "s", f"logdet({m})", (lambda e: jnp.linalg.slogdet(e[m])[1])
        if form == "det":
            return "s", f"det({m})", (lambda e: jnp.linalg.det(e[m]))
        if form == "trace_inv":
            return "s", f"inv({m})_ii", (lambda e: jnp.trace(jnp.linalg.inv(e[m])))
        a, b = draw(pick(env, "vI")), draw(pick(env, "vI"))
        return "s", f"{a}_i inv({m})_ik {b}_k", (lambda e: e[a] @ jnp.linalg.inv(e[m]) @ e[b])
    # kind == "matrix"
    if draw(st.booleans()):
        return "mII", f"inv({m})_ik", (lambda e: jnp.linalg.inv(e[m]))
    b = draw(pick(env, "vI"))
    return "vI", ("i", f"inv({m})_ik {b}_k"), (lambda e: jnp.linalg.inv(e[m]) @ e[b])


@dataclass(frozen=True)
class Generated:
    source: str
    function: callable  # jax: dict of arrays -> scalar
    used: frozenset  # the inputs the output depends on


def _names_in(text: str, names) -> set:
    return {name for name in names if re.search(rf"(?<![A-Za-z0-9]){name}(?![A-Za-z0-9(])", text)}


@st.composite
def programs(draw):
    env = Env(types=dict(INPUTS), well_conditioned={"M"}, used=set())
    count = draw(st.integers(2, 5))
    lines, steps, reads = [], [], {}
    for number in range(1, count + 1):
        last = number == count
        kind, rhs, fn = draw(statement(env, scalar=last))
        name = "f" if last else f"t{number}"
        if kind == "wc":
            kind = "mII"
            env.well_conditioned.add(name)
        if isinstance(rhs, tuple):  # a vector whose letter the statement chose
            letters, rhs = rhs
        else:
            letters = "".join(TYPES[kind])
        lines.append(f"{name}_{letters} = {rhs}" if letters else f"{name} = {rhs}")
        reads[name] = _names_in(rhs, env.types)
        env.types[name] = kind
        steps.append((name, fn))

    def function(arrays):
        e = dict(arrays)
        for name, fn in steps:
            e[name] = fn(e)
        return e["f"]

    # the inputs the output depends on: differentiating by an input that only a statement the
    # output does not use reads is excluded, a known bug (test_a_wrt_read_only_by_an_unused_statement)
    live, todo = set(), ["f"]
    while todo:
        for name in reads.get(todo.pop(), ()):
            if name not in live:
                live.add(name)
                todo.append(name)
    source = "; ".join(lines)
    return Generated(source, function, frozenset(live & set(INPUTS)))


# -- the property ----------------------------------------------------------------------------------------


def assert_close(actual, expected, what, rtol=1e-8):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def jax_derivative(program: Generated, arrays: dict, wrt: str, order: int):
    rest = {k: jnp.asarray(v) for k, v in arrays.items() if k != wrt}

    def f(value):
        return program.function({**rest, wrt: value})

    transform = jax.grad if order == 1 else jax.hessian
    return np.asarray(transform(f)(jnp.asarray(arrays[wrt])))


def needed(function, arrays: dict) -> dict:
    """The arrays a compiled expression or derivative takes (a derivative also takes its wrt)."""
    names = set(function.ranks) | set(getattr(function, "inputs", ()))
    return {k: v for k, v in arrays.items() if k in names}


def check_read_back(derivative, arrays: dict, what: str):
    """The printed text of a derivative, compiled, gives the derivative's numbers, or stops with
    "cannot be inferred" for a count that the text does not size (README: a count the printer
    cannot name); never another number."""
    try:
        read = einderiv.compile(str(derivative))
        value = read(**needed(read, arrays))
    except einderiv.EvaluationError as err:
        assert "cannot be inferred" in str(err), (what, str(derivative), err)
        return
    assert_close(value, derivative(**needed(derivative, arrays)), f"{what}, printed and read back:\n{derivative}")


def check_program(program: Generated, seed: int, wrt: str, wrt2: str | None):
    note(program.source)
    arrays = make_inputs(seed)
    reference = np.asarray(program.function({k: jnp.asarray(v) for k, v in arrays.items()}))
    if not np.isfinite(reference):
        return  # an overflow of the reference itself (not expected with bounded arguments)
    compiled = einderiv.compile(program.source)
    assert_close(compiled(**needed(compiled, arrays)), reference, f"value of {program.source}")
    gradient = einderiv.grad(program.source, wrt)
    expected = jax_derivative(program, arrays, wrt, 1)
    assert_close(gradient(**needed(gradient, arrays)), expected, f"d/d{wrt} of {program.source}")
    check_read_back(gradient, arrays, f"d/d{wrt} of {program.source}")
    several = sorted(program.used)
    if len(several) > 1:  # by every input in one line, sharing steps (residuals, adjoints) across them
        together = einderiv.grad(program.source, several)
        got = together(**{k: v for k, v in arrays.items() if k in set(several) | set(compiled.ranks)})
        for name, value in zip(several, got):
            assert_close(value, jax_derivative(program, arrays, name, 1), f"d/d{name} of {program.source}, together")
    if wrt2 is not None:
        hessian = einderiv.hessian(program.source, wrt2)
        expected = jax_derivative(program, arrays, wrt2, 2)
        assert_close(hessian(**needed(hessian, arrays)), expected, f"d2/d{wrt2}2 of {program.source}")
        check_read_back(hessian, arrays, f"d2/d{wrt2}2 of {program.source}")


@SETTINGS
@given(programs(), st.integers(0, 2**16), st.data())
def test_random_programs_agree_with_jax(program, seed, data):
    assume(program.used)  # an output that reads no input (f = 3) has nothing to differentiate by
    used = sorted(program.used)
    wrt = data.draw(st.sampled_from(used), label="wrt")
    vectors = [name for name in used if INPUTS[name] in ("s", "vI", "vJ")]
    wrt2 = data.draw(st.sampled_from(vectors), label="wrt2") if vectors else None
    check_program(program, seed, wrt, wrt2)


def test_a_wrt_read_only_by_an_unused_statement_gives_zeros():
    d = einderiv.grad("t = x_i; f = s^2", "x")
    np.testing.assert_array_equal(d(x=np.ones(3), s=np.array(2.0)), np.zeros(3))


@pytest.mark.filterwarnings("ignore::einderiv.errors.EinderivWarning")
@pytest.mark.parametrize("backend", ["numpy", "generic", "torch", "jax", "python code"])
@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f = mean_i(softmax_i(x_i))", "x"),
        ("t1_i = softmax_i((0.5 + x_i)); f = mean_i((0.5 + t1_i))", "x"),
        ("t_i = softmax_i(x_i); f = mean_i(c_i t_i)", "x"),
        ("P_nk = softmax_k(Z_nk); f_n = mean_k(P_nk) + mean_k(Z_nk)", "Z"),
    ],
)
def test_a_softmax_chain_rule_through_a_mean_evaluates(source, wrt, backend, tmp_path):
    """A draw of this file's oracle: the gradient of the mean of a softmax, (1/n - p_i / n) p_j,
    raised KeyError: '1/n' (its softmax-centred step read the 1/n of the mean as an array).
    Against jax in float64, on every interpreter."""
    from einderiv.backends import ops_for
    from einderiv.codegen import generate
    from einderiv.runtime import run_with
    from tests.helpers import load_module

    x, c, Z = np.array([0.3, -1.2, 2.0, 40.0]), np.array([1.0, 2.0, -3.0, 0.5]), np.linspace(-2, 3, 8).reshape(2, 4)

    def f(x, Z):
        if source.startswith("P_nk"):
            return jnp.mean(jax.nn.softmax(Z, axis=1), axis=1) + jnp.mean(Z, axis=1)
        if "c_i" in source:
            return jnp.mean(c * jax.nn.softmax(x))
        if "0.5" in source:
            return jnp.mean(0.5 + jax.nn.softmax(0.5 + x))
        return jnp.mean(jax.nn.softmax(x))

    arrays = {"x": x, "c": c, "Z": Z}
    derivatives = [einderiv.jacobian(source, wrt)] if wrt == "Z" else [einderiv.grad(source, wrt)]
    if wrt == "x":
        derivatives.append(einderiv.hessian(source, wrt))
        expected = [jax.grad(f)(x, Z), jax.hessian(f)(x, Z)]
    else:
        expected = [jax.jacobian(f, argnums=1)(x, Z)]
    for derivative, want in zip(derivatives, expected):
        given = {k: arrays[k] for k in derivative.ranks}
        if backend == "numpy":
            got = derivative(**given)
        elif backend == "generic":
            got = run_with(derivative.line, dict(given), ops_for("numpy"), x)[derivative.program.output]
        elif backend == "python code":
            code = generate([derivative], "python")
            module = load_module(code, tmp_path, f"mean_softmax_{len(source)}_{len(code)}")
            name = next(line[4:].split("(")[0] for line in code.splitlines() if line.startswith("def d"))
            got = getattr(module, name)(**given)
        else:
            pytest.importorskip(backend)
            got = derivative.call(given, backend=backend)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-15, err_msg=source)


def test_a_scalar_intermediate_broadcast_in_a_reduction_evaluates():
    x, s = np.array([0.1, 0.2, 0.3]), np.array(0.7)
    d = einderiv.grad("t = sum_i(cos(x_i s)); f = sum_i(t + x_i)", "s")
    np.testing.assert_allclose(d(x=x, s=s), -3 * np.sum(np.sin(x * s) * x), rtol=1e-12)


def test_a_scalar_intermediate_broadcast_in_a_reduction_has_the_right_hessian():
    source = (
        "t1_ik = cos((M_ik) / (1 + (s)^2)); t2_i = sum_j((0.5 + A_ij)); t3 = t2_i t2_i; t4 = mean_ik(t1_ik); "
        "f = sum_i((t4 + t2_i))"
    )
    arrays = make_inputs(0)

    def f(s):
        t1 = jnp.cos(arrays["M"] / (1 + s**2))
        return jnp.sum(jnp.mean(t1) + jnp.sum(0.5 + arrays["A"], axis=1))

    hessian = einderiv.hessian(source, "s")(M=arrays["M"], A=arrays["A"], s=arrays["s"])
    assert_close(hessian, np.asarray(jax.hessian(f)(jnp.asarray(arrays["s"]))), "d2f/ds2")


def test_a_mean_of_an_inverse_evaluates():
    arrays = make_inputs(0)
    M, x = arrays["M"], arrays["x"]
    d = einderiv.grad("f = mean_i(inv(M)_ik x_k)", "M")
    Minv = np.linalg.inv(M)
    np.testing.assert_allclose(d(M=M, x=x), -np.outer(Minv.sum(axis=0), Minv @ x) / 3, rtol=1e-12)


def test_a_count_prints_with_a_letter_no_other_term_sums():
    # the count of u's length (t1 = sum_i(u_i + 0.5 - (x_i + s)), by s) printed as delta_ii in a
    # statement whose other term summed i over v (length 4): read back, it counted 4, not 3
    source = "t1 = sum_i(u_i + 0.5 - (x_i + s)); t2 = logsumexp_j(s + v_j); f = mean_j((v_j - t1) / (1 + t2^2))"
    arrays = make_inputs(0)
    gradient = einderiv.grad(source, "s")
    u, x, v, s = (jnp.asarray(arrays[n]) for n in "uxvs")

    def f(s):
        t1 = jnp.sum(u + 0.5 - (x + s))
        t2 = jax.scipy.special.logsumexp(s + v)
        return jnp.mean((v - t1) / (1 + t2**2))

    expected = np.asarray(jax.grad(f)(s))
    assert_close(gradient(**needed(gradient, arrays)), expected, "df/ds")
    read = einderiv.compile(str(gradient))
    assert_close(read(**needed(read, arrays)), expected, f"df/ds printed and read back:\n{gradient}")


def test_a_constant_adjoint_sizes_its_axes_where_it_is_used():
    # dfdt1_ik = mean_j(delta_ji) mean_l(delta_lk): nothing in its own text sizes i and k; its
    # use in the next statement (dfdt1_jl t1_jl) does
    source = "t1_ik = softmax_i(M_ik); f = mean_ik(x_i + t1_ik)"
    arrays = make_inputs(1)
    gradient = einderiv.grad(source, "M")
    M, x = jnp.asarray(arrays["M"]), jnp.asarray(arrays["x"])
    expected = np.asarray(jax.grad(lambda M: jnp.mean(x[:, None] + jax.nn.softmax(M, axis=0)))(M))
    assert_close(gradient(**needed(gradient, arrays)), expected, "df/dM")
    read = einderiv.compile(str(gradient))
    assert_close(read(**needed(read, arrays)), expected, f"df/dM printed and read back:\n{gradient}")


def test_an_intermediate_broadcast_in_a_sum_then_summed_again():
    # t1_j broadcast along i in sum_j(t1_j + A_ij), then summed over i by f: the chain rule sums
    # the adjoint dfdt2_i = 1 over i, where nothing carries i once it is substituted: a count of
    # t2's axis, which lost its size ("cannot be inferred") before it became a count of its own
    A = np.arange(12.0).reshape(3, 4)
    d = einderiv.grad("t1_j = sum_i(A_ij); t2_i = sum_j(t1_j + A_ij); f = sum_i(t2_i)", "A")
    np.testing.assert_allclose(d(A=A), np.full((3, 4), 4.0))  # 1 + I, I = 3
    d = einderiv.grad("t1_j = sum_i(A_ij); t2_i = sum_j(t1_j + A_ij); f = sum_i(t2_i)", "A")
    np.testing.assert_allclose(d(A=A[:, :2]), np.full((3, 2), 4.0))  # the count is A's rows, not columns
    d = einderiv.grad("t1_j = sum_i(A_ij); t2_i = sum_j(t1_j + A_ij); f = sum_i(t2_i)", "A")
    np.testing.assert_allclose(d(A=np.ones((5, 2))), np.full((5, 2), 6.0))
