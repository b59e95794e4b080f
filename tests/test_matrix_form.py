"""Matrix notation (``Derivative.matrix()``, ``--format matrix``): the seeds' identities come out
as the notes print them, and every printed form, translated to NumPy by a small independent
parser below, evaluates to the derivative einderiv computes (itself checked against finite
differences here)."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import einderiv
from einderiv.matrix.form import NoMatrixForm
from tests import test_properties_functions as generated
from tests.generation import call_or_reject, compile_or_reject
from tests.helpers import central_difference
from tests.helpers import run_cli as run

# -- an independent translator: matrix notation -> NumPy ---------------------------------------------
# Values are 2-D arrays: a column vector is (n, 1), a row vector (1, n), a scalar (1, 1).  The
# tests use sizes of at least 2, so a (1, 1) array is always a scalar.


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _logsumexp(v):
    return np.array([[v.max() + np.log(np.exp(v - v.max()).sum())]])


_ELEMENTWISE = {
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "tanh": np.tanh,
    "cosh": np.cosh,
    "sinh": np.sinh,
    "arcsin": np.arcsin,
    "arccos": np.arccos,
    "arctan": np.arctan,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "sqrt": np.sqrt,
    "abs": np.abs,
    "relu": lambda v: np.maximum(v, 0),
    "softplus": lambda v: np.log1p(np.exp(v)),
    "sign": np.sign,
    "step": lambda v: (v > 0).astype(float),
}
_MATRIX_FUNCTIONS = {
    "tr": lambda m: np.array([[np.trace(m)]]),
    "det": lambda m: np.array([[np.linalg.det(m)]]),
    "logdet": lambda m: np.array([[np.linalg.slogdet(m)[1]]]),
    "diag": lambda v: np.diag(v.ravel()),
    "sum": lambda v: np.array([[v.sum()]]),
    "softmax": _softmax,
    "logsumexp": _logsumexp,
}
_TOKEN = re.compile(r"\s*(\.\^-?[0-9.]+|\^-1|\^-T|\^T|\^-?[0-9.]+|[0-9]+(?:\.[0-9]+)?|[A-Za-z][A-Za-z0-9]*|⊙|[-+/()])")


def _is_scalar(value) -> bool:
    return value.shape == (1, 1)


class Translator:
    """Recursive descent over: sum := ['-'] had (('+' | '-') had)*; had := product ('⊙' product)*;
    product := postfix (postfix | '/' postfix)*; postfix := atom ('^T' | '^-1' | '^-T' | '^p' | '.^p')*;
    atom := number | name | name '(' sum ')' | '(' sum ')'."""

    def __init__(self, text: str, env: dict, identity: int):
        self.tokens = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            assert match, f"cannot read {text[position:]!r}"
            self.tokens.append(match.group(1))
            position = match.end()
            while position < len(text) and text[position] == " ":
                position += 1
        self.position = 0
        self.env = env
        self.identity = identity

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected=None):
        token = self.peek()
        assert token is not None and (expected is None or token == expected), (expected, token, self.tokens)
        self.position += 1
        return token

    def run(self):
        value = self.sum()
        assert self.peek() is None, f"unread tokens {self.tokens[self.position :]}"
        return value

    def sum(self):
        negative = self.peek() == "-"
        if negative:
            self.take()
        value = self.hadamard()
        value = -value if negative else value
        while self.peek() in ("+", "-"):
            sign = self.take()
            other = self.hadamard()
            assert value.shape == other.shape or _is_scalar(value) or _is_scalar(other), (value.shape, other.shape)
            value = value + other if sign == "+" else value - other
        return value

    def hadamard(self):
        value = self.product()
        while self.peek() == "⊙":
            self.take()
            other = self.product()
            assert value.shape == other.shape, ("⊙ of different shapes", value.shape, other.shape)
            value = value * other
        return value

    def starts_factor(self) -> bool:
        token = self.peek()
        return token is not None and (token == "(" or token[0].isalnum())

    def product(self):
        value = self.postfix()
        while self.starts_factor() or self.peek() == "/":
            if self.peek() == "/":
                self.take()
                divisor = self.postfix()
                assert _is_scalar(divisor), "division by a non-scalar"
                value = value / divisor
                continue
            other = self.postfix()
            if _is_scalar(value) or _is_scalar(other):
                value = value * other
            else:
                assert value.shape[1] == other.shape[0], ("product of mismatched shapes", value.shape, other.shape)
                value = value @ other
        return value

    def postfix(self):
        value = self.atom()
        while self.peek() is not None and self.peek().startswith(("^", ".^")):
            token = self.take()
            if token.startswith(".^"):  # every entry's power
                value = value ** float(token[2:])
            elif token == "^T":
                value = value.T
            elif token == "^-1":
                value = np.linalg.inv(value)
            elif token == "^-T":
                value = np.linalg.inv(value).T
            else:
                assert _is_scalar(value), "a power of a non-scalar"
                value = value ** float(token[1:])
        return value

    def atom(self):
        token = self.take()
        if token == "(":
            value = self.sum()
            self.take(")")
            return value
        if token[0].isdigit():
            return np.array([[float(token)]])
        if self.peek() == "(" and (token in _ELEMENTWISE or token in _MATRIX_FUNCTIONS):
            self.take("(")
            arg = self.sum()
            self.take(")")
            return _ELEMENTWISE[token](arg) if token in _ELEMENTWISE else _MATRIX_FUNCTIONS[token](arg)
        if token in self.env:
            value = np.asarray(self.env[token], dtype=np.float64)
            return value.reshape(1, 1) if value.ndim == 0 else value.reshape(-1, 1) if value.ndim == 1 else value
        assert token == "I", f"unknown name {token!r}"
        return np.eye(self.identity)


def translate(text: str, env: dict, shape: tuple[int, ...]) -> np.ndarray:
    """The value of a matrix-notation right-hand side, as an array of the derivative's shape."""
    value = Translator(text, env, shape[0] if shape else 1).run()
    if len(shape) == 1:
        assert value.shape in ((shape[0], 1), (1, 1)), f"{text!r}: not a column vector: {value.shape}"
    elif not shape:
        assert _is_scalar(value), f"{text!r}: not a scalar: {value.shape}"
    else:
        assert value.shape in (shape, (1, 1)), f"{text!r}: shape {value.shape}, expected {shape}"
    return np.broadcast_to(value.reshape(shape) if value.size == np.prod(shape) else value.item(), shape)


def evaluate_matrix_program(derivative, arrays: dict) -> np.ndarray:
    """Translate each ``name = form`` line of ``derivative.matrix()`` in order; the last is the result."""
    env = dict(arrays)
    lines = derivative.matrix().splitlines()
    definitions = derivative.program.evaluated()  # not those printed only for sizes
    assert len(lines) == len(definitions)
    for line, definition in zip(lines[:-1], definitions):
        value = Translator(line.split(" = ", 1)[1], env, 0).run()
        rank = len(definition.indices)
        env[definition.name] = value.item() if rank == 0 else value.ravel() if rank == 1 else value
    shape = derivative.shape_for(**{k: v.shape for k, v in arrays.items()})
    return translate(lines[-1].split(" = ", 1)[1], env, shape)


RNG = np.random.default_rng(20261123)


def random_inputs(derivative, sizes: dict[str, tuple[int, ...]] | None = None, positive_definite=()) -> dict:
    sizes = sizes or {}
    arrays = {}
    for name, rank in derivative.ranks.items():
        shape = sizes.get(name, (3,) * rank)
        arrays[name] = RNG.normal(size=shape)
        if name in positive_definite:
            arrays[name] = arrays[name] @ arrays[name].T + 3 * np.eye(shape[0])
    return arrays


# -- the seeds' identity tables -------------------------------------------------------------------------
# (source, wrt, accepted matrix forms of the result, hand-written NumPy closed form, sizes)

N, M, K = 4, 3, 5
SEED_CASES = [
    # 000, C6-C11 (the notes print numerator-layout rows; a gradient here is a column)
    ("f = a_i x_i", "x", {"a"}, lambda a, x: a, {"a": (N,), "x": (N,)}),
    ("f = x_i a_i", "x", {"a"}, lambda a, x: a, {"a": (N,), "x": (N,)}),
    ("f = x_i x_i", "x", {"2 x"}, lambda x: 2 * x, {"x": (N,)}),
    ("f = (x_i a_i)^2", "x", {"2 (x^T a) a", "2 (a^T x) a"}, lambda x, a: 2 * (x @ a) * a, {"a": (N,), "x": (N,)}),
    ("y_i = A_ij x_j", "x", {"A"}, lambda A, x: A, {"A": (M, N), "x": (N,)}),
    ("y_j = x_i A_ij", "x", {"A^T"}, lambda A, x: A.T, {"A": (N, M), "x": (N,)}),
    (
        "f = x_i A_ij x_j",
        "x",
        {"(A + A^T) x", "A x + A^T x", "(A^T + A) x", "A^T x + A x"},
        lambda x, A: A @ x + A.T @ x,
        {"A": (N, N), "x": (N,)},
    ),
    # 002, calculation rules: sum, product, chain, X a, a^T X, a^T X b, d a^T X^-1 b / dX, logistic regression
    ("f = a_i x_i + x_i B_ij x_j", "x", {"a + B x + B^T x", "a + (B + B^T) x"}, lambda a, x, B: a + (B + B.T) @ x, {}),
    (
        "f = (a_i x_i)(b_j x_j)",
        "x",
        {"(b^T x) a + (a^T x) b", "(a^T x) b + (b^T x) a"},
        lambda a, x, b: (b @ x) * a + (a @ x) * b,
        {},
    ),
    ("f = exp(a_i x_i)", "x", {"exp(a^T x) a"}, lambda a, x: np.exp(a @ x) * a, {}),
    ("y_i = X_ij a_j", "a", {"X"}, lambda X, a: X, {"X": (M, N), "a": (N,)}),
    ("y_j = a_i X_ij", "a", {"X^T"}, lambda X, a: X.T, {"X": (N, M), "a": (N,)}),
    ("f = a_i X_ij b_j", "X", {"a b^T"}, lambda a, X, b: np.outer(a, b), {"a": (M,), "X": (M, N), "b": (N,)}),
    (
        "f = a_i inv(X)_ij b_j",
        "X",
        {"-X^-T a b^T X^-T"},
        lambda a, X, b: -np.linalg.inv(X).T @ np.outer(a, b) @ np.linalg.inv(X).T,
        {"a": (N,), "X": (N, N), "b": (N,)},
    ),
    (
        "f = -y_n log(sigmoid(X_nd theta_d)) - (1 - y_n) log(1 - sigmoid(X_nd theta_d))",
        "theta",
        {"X^T (sigmoid(X theta) - y)"},
        lambda y, X, theta: X.T @ (1 / (1 + np.exp(-X @ theta)) - y),
        {"y": (K,), "X": (K, M), "theta": (M,)},
    ),
    # 004: trace trick results, Hadamard, elementwise functions, least squares, softmax regression
    ("f = c_i x_i", "x", {"c"}, lambda c, x: c, {}),
    ("f = A_ij X_jk B_ki", "X", {"A^T B^T"}, lambda A, X, B: A.T @ B.T, {"A": (K, M), "X": (M, N), "B": (N, K)}),
    ("f = X_ij Y_ji", "X", {"Y^T"}, lambda X, Y: Y.T, {"X": (M, N), "Y": (N, M)}),
    ("f = A_ij X_ij Y_ij", "X", {"A ⊙ Y", "Y ⊙ A"}, lambda A, X, Y: A * Y, {"A": (M, N), "X": (M, N), "Y": (M, N)}),
    (
        "f = a_i sigmoid(X_ij b_j)",
        "X",
        {"(a ⊙ sigmoid(X b) ⊙ (1 - sigmoid(X b))) b^T"},
        lambda a, X, b: np.outer(a * (1 / (1 + np.exp(-X @ b))) * (1 - 1 / (1 + np.exp(-X @ b))), b),
        {"a": (M,), "X": (M, N), "b": (N,)},
    ),
    (
        "f = (A_ij x_j - b_i)(A_ik x_k - b_i)",
        "x",
        {"2 A^T (A x - b)"},
        lambda A, x, b: 2 * A.T @ (A @ x - b),
        {"A": (K, N), "x": (N,), "b": (K,)},
    ),
    (
        "f = (X_ij theta_j - y_i)(X_ik theta_k - y_i)",
        "theta",
        {"2 X^T (X theta - y)"},
        lambda X, theta, y: 2 * X.T @ (X @ theta - y),
        {"X": (K, N), "theta": (N,), "y": (K,)},
    ),
    (
        "L = (y_n - Phi_nd theta_d)(y_n - Phi_ne theta_e)",
        "theta",
        {"2 Phi^T (Phi theta - y)", "-2 Phi^T (y - Phi theta)", "2 Phi^T Phi theta - 2 Phi^T y"},
        lambda y, Phi, theta: 2 * Phi.T @ (Phi @ theta - y),
        {"y": (K,), "Phi": (K, N), "theta": (N,)},
    ),
    # 001: useful identities
    ("f = x_i B_ij x_j", "x", {"(B + B^T) x", "B x + B^T x"}, lambda x, B: (B + B.T) @ x, {}),
    (
        "f = (x_i - A_ij s_j) W_ik (x_k - A_kl s_l)",
        "s",
        {"A^T (W A s + W^T A s - W^T x - W x)", "-A^T (W + W^T) (x - A s)"},
        lambda x, A, s, W: -A.T @ (W + W.T) @ (x - A @ s),
        {"x": (N,), "A": (N, M), "s": (M,), "W": (N, N)},
    ),
    ("f = logdet(X)", "X", {"X^-T"}, lambda X: np.linalg.inv(X).T, {}),
    ("f = det(X)", "X", {"det(X) X^-T"}, lambda X: np.linalg.det(X) * np.linalg.inv(X).T, {}),
    ("y_i = x_i", "x", {"I"}, lambda x: np.eye(len(x)), {"x": (N,)}),
]


def _ids(case) -> str:
    return f"{case[0]} | d/d{case[1]}"


def _check_against_fd(derivative, source: str, arrays: dict, value: np.ndarray) -> None:
    wrt = derivative.wrt[-1].name
    numeric = central_difference(einderiv.compile(source), arrays, wrt)
    np.testing.assert_allclose(value, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", SEED_CASES, ids=_ids)
def test_seed_identities_print_as_the_notes_write_them(case):
    source, wrt, accepted, closed_form, sizes = case
    derivative = einderiv.diff(source, wrt)
    form = derivative.matrix().splitlines()[-1].split(" = ", 1)[1]
    assert form in accepted, f"{source}: printed {form!r}, the notes write one of {sorted(accepted)}"
    arrays = random_inputs(derivative, sizes, positive_definite={"X"} if "det" in source or "inv" in source else ())
    value = derivative(**arrays)
    _check_against_fd(derivative, source, arrays, value)
    names = closed_form.__code__.co_varnames[: closed_form.__code__.co_argcount]
    expected = closed_form(**{n: arrays[n] for n in names})
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12)
    for text in accepted:  # every accepted spelling is the same matrix
        np.testing.assert_allclose(translate(text, arrays, value.shape), expected, rtol=1e-10, atol=1e-12)


def test_multiclass_logistic_regression_gradient_is_softmax_minus_y_times_x_transposed():
    source = "z_k = Theta_kd x_d; f = -y_k z_k + logsumexp_k(z_k)"  # 004, Exercise 2
    derivative = einderiv.diff(source, "Theta")
    assert derivative.matrix().splitlines() == ["z = Theta x", "df/dTheta = (softmax(z) - y) x^T"]
    arrays = random_inputs(derivative, {"Theta": (K, N), "x": (N,), "y": (K,)})
    value = derivative(**arrays)
    _check_against_fd(derivative, source, arrays, value)
    z = arrays["Theta"] @ arrays["x"]
    expected = np.outer(_softmax(z) - arrays["y"], arrays["x"])
    np.testing.assert_allclose(value, expected, rtol=1e-10)
    np.testing.assert_allclose(evaluate_matrix_program(derivative, arrays), expected, rtol=1e-10)


def test_least_squares_program_prints_each_statement():
    source = "e_n = y_n - Phi_nd theta_d; L = e_n e_n"
    derivative = einderiv.diff(source, "theta")
    assert derivative.matrix() == "e = y - Phi theta\ndL/dtheta = -2 Phi^T e"
    arrays = random_inputs(derivative, {"y": (K,), "Phi": (K, N), "theta": (N,)})
    expected = -2 * arrays["Phi"].T @ (arrays["y"] - arrays["Phi"] @ arrays["theta"])
    np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-10)
    np.testing.assert_allclose(evaluate_matrix_program(derivative, arrays), expected, rtol=1e-10)


def test_logistic_hessian_is_x_transposed_diag_x():
    source = "f = -y_n log(sigmoid(X_nd w_d)) - (1 - y_n) log(1 - sigmoid(X_nd w_d))"
    derivative = einderiv.hessian(source, "w")
    form = derivative.matrix().split(" = ", 1)[1]
    assert form == "X^T diag(sigmoid(X w) ⊙ (1 - sigmoid(X w))) X"
    arrays = random_inputs(derivative, {"y": (K,), "X": (K, M), "w": (M,)})
    s = 1 / (1 + np.exp(-arrays["X"] @ arrays["w"]))
    expected = arrays["X"].T @ np.diag(s * (1 - s)) @ arrays["X"]
    np.testing.assert_allclose(derivative(**arrays), expected, rtol=1e-10)
    np.testing.assert_allclose(translate(form, arrays, expected.shape), expected, rtol=1e-10)


def test_denominator_layout_transposes_the_jacobian():
    numerator = einderiv.diff("y_i = A_ij x_j", "x")
    denominator = einderiv.diff("y_i = A_ij x_j", "x", layout="denominator")
    assert numerator.matrix() == "dy/dx = A"
    assert denominator.matrix() == "dy/dx = A^T"  # 004's d(A x)/dx = A^T
    arrays = random_inputs(numerator, {"A": (M, N), "x": (N,)})
    for d in (numerator, denominator):
        np.testing.assert_allclose(evaluate_matrix_program(d, arrays), d(**arrays), rtol=1e-12)


def test_compiled_value_has_a_matrix_form():
    compiled = einderiv.compile("K_pq = R_mp R_mq")
    assert compiled.matrix() == "K = R^T R"
    R = RNG.normal(size=(M, N))
    np.testing.assert_allclose(translate("R^T R", {"R": R}, (N, N)), compiled(R=R), rtol=1e-12)


# -- generated derivatives: whatever is printed evaluates to the derivative ------------------------------

_MATRICES = ("A", "B", "C")
_VECTORS = ("x", "y", "z")


class _Letters:
    """Fresh summed index letters for one term (the free ones are i and j)."""

    def __init__(self):
        self.pool = list("klmnpqrstuvw")

    def take(self) -> str:
        return self.pool.pop(0)


def _cap(rng: random.Random, index: str, letters: _Letters) -> list[str]:
    """Factors that end a chain at ``index``: a vector, an elementwise product of two, or a function of
    a matrix-vector product (``sigmoid(A_kl x_l)``)."""
    roll = rng.random()
    if roll < 0.6:
        return [f"{rng.choice(_VECTORS)}_{index}"]
    if roll < 0.8:
        return [f"{rng.choice(_VECTORS)}_{index}", f"{rng.choice(_VECTORS)}_{index}"]
    inner = letters.take()
    function = rng.choice(("sigmoid", "tanh", "exp"))
    return [f"{function}({rng.choice(_MATRICES)}_{index}{inner} {rng.choice(_VECTORS)}_{inner})"]


def _chain(rng: random.Random, start: str, end: str | None, letters: _Letters) -> list[str]:
    """Matrices linking ``start`` to ``end`` (to a vector cap when ``end`` is None), each written
    either way round (``A_kl`` or ``A_lk``), sometimes with a vector on an inner index (a diag)."""
    factors = []
    current = start
    for _ in range(rng.randint(0 if end is None else 1, 3)):
        nxt = letters.take()
        matrix = rng.choice(_MATRICES)
        factors.append(f"{matrix}_{current}{nxt}" if rng.random() < 0.5 else f"{matrix}_{nxt}{current}")
        if rng.random() < 0.15:
            factors.append(f"{rng.choice(_VECTORS)}_{nxt}")
        current = nxt
    if end is None:
        return factors + _cap(rng, current, letters)
    matrix = rng.choice(_MATRICES)
    return factors + [f"{matrix}_{current}{end}" if rng.random() < 0.5 else f"{matrix}_{end}{current}"]


def _random_term(rng: random.Random, free: str) -> str:
    letters = _Letters()
    if free == "":
        start = letters.take()
        factors = _cap(rng, start, letters) + _chain(rng, start, None, letters)
    elif free == "i":
        factors = _chain(rng, "i", None, letters)
        if rng.random() < 0.2:
            factors += [f"{rng.choice(_VECTORS)}_i"]  # a Hadamard product with the result's index
    elif rng.random() < 0.6:
        factors = _chain(rng, "i", "j", letters)
    else:
        factors = _chain(rng, "i", None, letters) + _chain(rng, "j", None, letters)  # an outer product
    if rng.random() < 0.2:
        start = letters.take()
        factors += _cap(rng, start, letters) + _chain(rng, start, None, letters)  # a scalar factor
    if rng.random() < 0.1:
        factors.append("c")
    coefficient = rng.choice(["", "", "2 ", "-", "0.5 "])
    return coefficient + " ".join(factors)


def _random_source(rng: random.Random) -> str:
    free = rng.choice(["", "", "i", "ij"])
    terms = [_random_term(rng, free) for _ in range(rng.randint(1, 3))]
    body = terms[0] + "".join((" + " if not t.startswith("-") else " ") + t for t in terms[1:])
    return f"f{'_' + free if free else ''} = {body}"


def _generated_cases(count: int, seed: int = 6):
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        source = _random_source(rng)
        compiled = einderiv.compile(source)
        name = rng.choice(sorted(compiled.ranks))
        if len(compiled.indices) + compiled.ranks[name] > 2 and rng.random() < 0.9:
            continue  # mostly results that can have a matrix form
        second = not compiled.indices and compiled.ranks[name] == 1 and rng.random() < 0.3
        wrt = (name, name) if second else name  # a Hessian
        cases.append((source, wrt, rng.choice(["numerator", "numerator", "denominator"])))
    return cases


GENERATED = _generated_cases(160)


def test_generated_cases_mostly_have_a_matrix_form():
    printed = 0
    for source, wrt, layout in GENERATED:
        try:
            einderiv.diff(source, list(wrt) if isinstance(wrt, tuple) else wrt, layout=layout).matrix()
            printed += 1
        except NoMatrixForm:
            pass
    assert printed >= len(GENERATED) // 2, f"only {printed} of {len(GENERATED)} printed"


@pytest.mark.parametrize("source, wrt, layout", GENERATED)
def test_every_printed_matrix_form_evaluates_to_the_derivative(source, wrt, layout):
    derivative = einderiv.diff(source, list(wrt) if isinstance(wrt, tuple) else wrt, layout=layout)
    try:
        text = derivative.matrix()
    except NoMatrixForm as err:
        assert str(err).startswith("no matrix form for ")
        return
    arrays = {name: RNG.normal(size=(3,) * rank) for name, rank in derivative.ranks.items()}
    expected = derivative(**arrays)
    actual = evaluate_matrix_program(derivative, arrays)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10, err_msg=f"{source} d/d{wrt}: {text}")


@generated.SETTINGS
@given(program=generated.programs(), data=st.data())
def test_printed_forms_of_generated_programs_evaluate_to_the_derivative(program, data):
    """The property tests' programs (functions, powers, division, reductions, two statements):
    wherever a matrix form is printed, it evaluates to the derivative."""
    compiled = compile_or_reject(program)
    inputs = sorted(compiled.program.all_inputs or compiled.ranks)
    if not inputs:
        reject()  # a constant: nothing to differentiate
    wrt = data.draw(st.sampled_from(inputs))
    derivative = einderiv.diff(program, wrt)
    try:
        text = derivative.matrix()
    except NoMatrixForm as err:
        assert str(err).startswith("no matrix form for ")
        return
    arrays = {name: RNG.normal(size=(3,) * rank) for name, rank in derivative.ranks.items()}
    expected = call_or_reject(derivative, program, **arrays)
    # a source that cannot be sized (f_i = delta_ij: no input has i) has no shape to print a form at
    call_or_reject(compiled, **{k: v for k, v in arrays.items() if k in compiled.ranks})
    actual = evaluate_matrix_program(derivative, arrays)
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9, err_msg=f"{program} d/d{wrt}: {text}")


# -- no matrix form ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, wrt, reason",
    [
        ("K_pq = R_mp R_mq", "R", "dK_pq/dR_ij: rank 4"),
        ("y_i = A_ij x_j", "A", "rank 3"),
        ("f = T_ijk x_i y_j z_k", "x", "has 3 indices"),
        ("f = A_ki B_kj C_kl x_i y_j z_l", "x", "index k is shared by 3 factors"),
        ("f = x_i / sqrt(x_j x_j)", "x", "(a broadcast)"),
        ("f = s b_k + s delta_kk", "s", "the dimension of k"),
        ("f = A_ij x_j x_j", "x", "sums a matrix over one index alone"),
        ("f = tr_i x_i", "x", "the name tr is a function in matrix notation"),
        # printed as df/ds = 1, which reads back as a scalar, not a vector or matrix of ones
        ("f_i = x_i + s", "s", "every entry is the number 1"),
        ("f_i = x_i + 2 s", "s", "no name for a vector of ones"),
        ("f_i = x_i + sum_j(y_j)", "y", "no name for a matrix of ones"),
    ],
)
def test_no_matrix_form_says_why(source, wrt, reason):
    derivative = einderiv.diff(source, wrt)
    with pytest.raises(NoMatrixForm) as info:
        derivative.matrix()
    assert isinstance(info.value, einderiv.EinderivError)
    assert str(info.value).startswith("no matrix form for ")
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "source, wrt, form",
    [
        ("f_i = x_i / y_i", "y", "df/dy = -diag(x ⊙ y.^-2)"),
        ("f = a_i (b_i + x_i)^-2", "x", "df/dx = -2 (a ⊙ (b + x).^-3)"),
        ("f = sum_i(log1p(x_i))", "x", "df/dx = (1 + x).^-1"),
    ],
)
def test_an_elementwise_power_of_a_vector_prints_with_the_dotted_caret(source, wrt, form):
    """Reciprocals and other powers of a vector's entries had no matrix form; they print as
    ``v.^p`` (the notation ``einderiv check --expect`` reads), checked there and by NumPy."""
    derivative = einderiv.diff(source, wrt)
    assert derivative.matrix() == form
    arrays = {name: RNG.uniform(0.5, 2.0, size=(3,) * rank) for name, rank in derivative.ranks.items()}
    np.testing.assert_allclose(evaluate_matrix_program(derivative, arrays), derivative(**arrays), rtol=1e-12)
    result = run("check", source, "--wrt", wrt, "--expect", form.split(" = ", 1)[1])
    assert result.returncode == 0 and "matches" in result.stdout.splitlines()[-1], (result.stdout, result.stderr)


def test_an_input_named_I_leaves_no_name_for_the_identity():
    with pytest.raises(NoMatrixForm, match="identity"):
        einderiv.diff("y_i = I_i x_i", "x").matrix()
    with pytest.raises(NoMatrixForm, match="the tensor I would read as the identity"):
        einderiv.diff("f = I_ij x_j y_i", "x").matrix()  # I^T y would be misread as y
    assert einderiv.diff("f = J_ij x_j y_i", "x").matrix() == "df/dx = J^T y"


# -- the command line -----------------------------------------------------------------------------------


def test_cli_format_matrix():
    result = run("diff", "f = x_i A_ij x_j", "--wrt", "x", "--format", "matrix")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "df/dx = (A + A^T) x\n"


def test_cli_format_matrix_without_a_form_is_one_error_line():
    result = run("diff", "K_pq = R_mp R_mq", "--wrt", "R", "--format", "matrix")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no matrix form for dK_pq/dR_ij: rank 4 (indices p, q, i, j); matrix notation has at most two"
    ]


def test_cli_text_output_has_a_matrix_line():
    result = run("diff", "e_n = y_n - Phi_nd theta_d; L = e_n e_n", "--wrt", "theta")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["  matrix[e]: y - Phi theta", "  matrix: -2 Phi^T e"]
    result = run("diff", "K_pq = R_mp R_mq", "--wrt", "R")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "  matrix: none (dK_pq/dR_ij: rank 4 (indices p, q, i, j); matrix notation has at most two)"
    )


def test_printed_forms_read_back_as_matrix_claims():
    """``einderiv check --expect`` reads matrix notation (einderiv/matrix/translate.py): every form
    printed here is accepted there and matches the derivative."""
    pytest.importorskip("einderiv.matrix.translate")
    for source, wrt, *_ in SEED_CASES[:: len(SEED_CASES) // 8]:
        form = einderiv.diff(source, wrt).matrix().split(" = ", 1)[1]
        result = run("check", source, "--wrt", wrt, "--expect", form)
        assert result.returncode == 0, (source, form, result.stdout, result.stderr)
        assert "matches" in result.stdout.splitlines()[-1], (source, form, result.stdout)


@pytest.mark.parametrize(
    "source, wrt, form",
    [
        ("f = norm2(A x - b)", "x", "A^T (A x - b) / sqrt((A x - b)^T (A x - b))"),
        ("f = norm2(x - a)", "x", "(x - a) / sqrt((x - a)^T (x - a))"),
    ],
)
def test_a_matrix_form_keeps_the_difference_the_user_wrote(source, wrt, form):
    """A hunt's find: the gradient of norm2(A x - b) printed ``A^T (A x / sqrt(x^T A^T A x - 2 (b^T A
    x) + b^T b) - b / sqrt(...))``, right in exact arithmetic and 40% off evaluated as printed near a
    fit (|x| ~ 1e3, residual 1e-4), where it can also be NaN; einderiv's own numbers were right.  The
    printed form now keeps the difference, as the index form does, and evaluates to the closed form
    A^T r / |r| there."""
    derivative = einderiv.grad(source, wrt)
    assert derivative.matrix() == f"df/d{wrt} = {form}"
    gen = np.random.default_rng(0)
    A = gen.standard_normal((4, 3))
    x = 1e3 * gen.standard_normal(3)
    arrays = {"A": A, "x": x, "b": A @ x + 1e-4 * gen.standard_normal(4), "a": x + 1e-4 * gen.standard_normal(3)}
    arrays = {k: v for k, v in arrays.items() if k in derivative.inputs}
    r = A @ x - arrays["b"] if "b" in arrays else x - arrays["a"]
    want = (A.T @ r if "A" in arrays else r) / np.sqrt(r @ r)
    np.testing.assert_allclose(derivative(**arrays), want, rtol=1e-6)
    read = einderiv.compile(f"g = {form}", notation="matrix")
    np.testing.assert_allclose(read(**arrays), want, rtol=1e-6)
