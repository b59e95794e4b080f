"""``einderiv.check`` is what ``einderiv check`` runs (issue 14): the same report, the same verdict
(exit status 0 or 1), matrix-notation sources with ``notation=``/``ranks=``, and the project's own
exceptions for bad input."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import einderiv
from einderiv.cli import main as cli_main
from einderiv.errors import DifferentiationError, EinderivError, IndexRuleError, ParseError
from tests.helpers import run_cli

# (command-line arguments after EXPR, the same as keywords of einderiv.check)
CASES = [
    ("f = x_i A_ij x_j", ["--wrt", "x"], {"wrt": "x"}),
    (
        "f = x_i A_ij x_j",
        ["--wrt", "x", "--shape", "x=4", "--shape", "A=4x4"],
        {"wrt": "x", "shapes": {"x": 4, "A": (4, 4)}},
    ),
    ("f = x_i A_ij x_j", ["--wrt", "x", "--wrt", "x", "--seed", "7"], {"wrt": ["x", "x"], "seed": 7}),
    ("y_i = tanh(W_ij x_j)", ["--wrt", "W"], {"wrt": "W"}),
    ("f = x_i A_ij x_j", ["--wrt", "x", "--expect", "(A + A^T) x"], {"wrt": "x", "expect": "(A + A^T) x"}),
    ("f = x_i A_ij x_j", ["--wrt", "x", "--expect", "2 A_kj x_j"], {"wrt": "x", "expect": "2 A_kj x_j"}),
    (
        "f = x_i A_ij x_j",
        ["--wrt", "x", "--expect", "A_ij x_j + x_j A_ji"],
        {"wrt": "x", "expect": "A_ij x_j + x_j A_ji"},
    ),
    (
        "K_pq = R_mp R_mq",
        ["--wrt", "R", "--expect", "delta_ap R_bq + R_bp delta_aq"],
        {"wrt": "R", "expect": "delta_ap R_bq + R_bp delta_aq"},
    ),  # noqa: E501
    ("f = sum_i(exp(x_i))", ["--wrt", "x", "--tol", "0"], {"wrt": "x", "tol": 0.0}),
    ("f = x^T A x", ["--wrt", "x", "--expect", "2 A x"], {"wrt": "x", "expect": "2 A x"}),
    ("f = a' * b", ["--wrt", "a", "--rank", "a=1", "--rank", "b=1"], {"wrt": "a", "ranks": {"a": 1, "b": 1}}),
    (
        "f = c x",
        ["--wrt", "x", "--notation", "matrix", "--shape", "x=2x3"],
        {"wrt": "x", "notation": "matrix", "shapes": {"x": (2, 3)}},
    ),  # noqa: E501
]


def _cli(argv: list[str]) -> tuple[str, int]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(argv)
    return out.getvalue(), code


@pytest.mark.parametrize("source, arguments, keywords", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_the_api_reports_what_the_command_prints(source, arguments, keywords):
    result = einderiv.check(source, **keywords)
    printed, code = _cli(["check", source, *arguments])
    assert printed == result.report() + "\n"
    assert code == (0 if result.ok else 1)


def test_the_command_as_a_process_prints_the_report():
    result = einderiv.check("f = x^T A x", "x", expect="(A + A^T) x", shapes={"x": 4, "A": (4, 4)})
    done = run_cli(
        "check", "f = x^T A x", "--wrt", "x", "--expect", "(A + A^T) x", "--shape", "x=4", "--shape", "A=4x4"
    )
    assert done.returncode == 0 and done.stdout == result.report() + "\n"
    assert result.read_as == "f = x_i A_ij x_j" and done.stdout.startswith("read as: f = x_i A_ij x_j\n")


def test_a_right_claim_matches_and_a_wrong_one_differs():
    right = einderiv.check("y_i = A_ij x_j + b_i", "x", expect="A_ik")
    assert right.ok and right.matches is True and right.claim == "matches"
    assert right.message.startswith("your claim: matches")
    wrong = einderiv.check("y_i = A_ij x_j + b_i", "x", expect="A_ki")  # the transpose
    assert wrong.fd_ok and not wrong.ok and wrong.matches is False and wrong.claim == "differs"
    assert "DIFFERS" in wrong.message and wrong.message in wrong.report()
    A = wrong.inputs["A"]  # the claimed value differs where A is not symmetric
    assert not np.allclose(A, A.T)
    none = einderiv.check("y_i = A_ij x_j + b_i", "x")
    assert none.matches is None and none.ok


def test_finite_differences_catch_a_wrong_derivative():
    """``error`` is measured, not assumed: a derivative far from the finite differences fails."""
    result = einderiv.check("f = sum_i(exp(x_i))", "x", tol=1e-12)
    assert not result.fd_ok and not result.ok and 0 < result.error < 1e-6
    assert "FAILED" in result.report()


@pytest.mark.parametrize(
    "source, claim, right",
    [
        ("f = 1e-7 x_i A_ij x_j", "1e-7 (A x)", False),  # the Aᵀx term left out, at a small scale
        ("f = 1e-7 x_i A_ij x_j", "1e-7 (A + A^T) x", True),
        ("f = 1e-12 x_i x_i", "3e-12 x", False),
        ("f = 1e-12 x_i x_i", "0", False),
        ("f = 1e-12 x_i x_i", "2e-12 x", True),
        ("f = 1e12 x_i x_i", "2.00001e12 x", False),
        ("f = 1e12 x_i x_i", "2.0000001e12 x", True),  # within tol = 1e-6 of the derivative's size
    ],
)
def test_a_claim_is_compared_relative_to_the_derivatives_size(source, claim, right):
    """A bound of tol · max(1, |derivative|) passed any claim once the derivative was below tol."""
    result = einderiv.check(source, "x", expect=claim)
    assert result.matches is right and result.ok is right


def test_finite_differences_are_relative_to_a_small_derivative():
    """f = 1e-7 xᵀA x: the error is measured against the derivative's size (1e-7), not against 1."""
    small = einderiv.check("f = 1e-7 x_i A_ij x_j", "x")
    plain = einderiv.check("f = x_i A_ij x_j", "x")
    assert small.ok and plain.ok
    assert 0.01 < small.error / plain.error < 100  # the same order of relative error, not 1e-7 of it


@pytest.mark.parametrize("claim", ["5 x_j; g = 2 x", "2 x_j; g = 1", "2 x\n3 x", "5 x_j + g = 2 x"])
def test_a_claim_of_several_statements_is_refused(claim):
    """Read as matrix notation, the text before the last ``=`` was dropped: 5 x "matched" 2 x."""
    claim = claim.replace("\\n", "\n")
    with pytest.raises(EinderivError, match="one expression or one statement|must be a tensor with its indices"):
        einderiv.check("f = x_i x_i", "x", expect=claim)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        printed, code = _cli(["check", "f = x_i x_i", "--wrt", "x", "--expect", claim])
    assert code == 2 and not printed and errors.getvalue().count("error:") == 1


def test_a_claim_equal_to_an_infinite_derivative_matches_and_says_what_that_is_worth():
    """inf - inf is NaN: the derivative's own text was reported to differ from it."""
    same = einderiv.check("f = exp(1000 + x_i)", "x", expect="exp(1000 + x_j)")
    assert same.matches is True
    assert any("cannot tell a right claim from a wrong one" in note for note in same.notes)
    finite = einderiv.check("f = exp(1000 + x_i)", "x", expect="exp(x_j)")
    assert finite.matches is False


@pytest.mark.parametrize(
    "source, wrt, shapes, claim",
    [
        ("f = a^T X b", "X", {"X": (3, 4)}, "2 a_i b_j"),
        ("f = tr(A X B)", "X", {"A": (5, 3), "X": (3, 4)}, "2 B_jk A_ki"),
        ("f = tr(X^T X)", ["X", "X"], {"X": (3, 4)}, "delta_ik delta_jl"),
    ],
)
def test_a_wrong_claim_in_its_own_letters_on_a_non_square_matrix_differs(source, wrt, shapes, claim):
    """Trying the other matchings of the claim's letters stopped at one that does not fit the
    shape, with an error in place of the verdict."""
    result = einderiv.check(source, wrt, expect=claim, shapes=shapes)
    assert result.claim == "differs" and not result.ok


@pytest.mark.parametrize(
    "claim, wrt",
    [
        ("∂f/∂x = (A + A^T) x", "x"),
        ("∇f = (A + A^T) x", "x"),
        ("∇_x f = (A + A^T) x", "x"),
        ("grad f = (A + A^T) x", "x"),
        ("g(x) = (A + A^T) x", "x"),
        ("∇²f = A + A^T", ["x", "x"]),
        ("H_f = A + A^T", ["x", "x"]),
    ],
)
def test_a_matrix_claim_names_its_derivative_as_people_do(claim, wrt):
    """A review's find: a first fix for '5 x; g = 2 x' refused these left-hand sides."""
    result = einderiv.check("f = x_i A_ij x_j", wrt, expect=claim)
    assert result.matches is True and result.ok


@pytest.mark.parametrize(
    "source, wrt",
    [
        ("f = sum_i(x_i - mean_j(x_j))", "x"),
        ("m = mean_i(x_i); c_i = x_i - m; f = sum_i(c_i)", "x"),
        ("f = sum_k(softmax_k(z_k))", ["z", "z"]),
        ("f = sigmoid(x_i) + sigmoid(-x_i)", ["x", "x"]),
    ],
)
def test_a_derivative_that_is_zero_passes_where_its_expression_is_rounding(source, wrt):
    """Relative to a derivative of rounding alone, the finite differences' rounding was 100%."""
    assert einderiv.check(source, wrt).ok


def test_a_claim_of_zero_matches_a_derivative_that_is_rounding_alone():
    assert einderiv.check("f = sigmoid(x_i) + sigmoid(-x_i)", "x", expect="0").matches is True
    assert einderiv.check("f = 1e-12 x_i x_i", "x", expect="0").matches is False  # a small f is no excuse


def test_nan_everywhere_is_not_a_pass():
    result = einderiv.check("f = sqrt(-1 - x_i^2)", "x")
    assert not result.ok and not result.fd_ok


def test_notation_and_ranks_reach_the_api():
    matrix = einderiv.check("f = a' * b", "a", ranks={"a": 1, "b": 1})
    assert matrix.read_as == "f = a_i b_i" and matrix.ok
    np.testing.assert_allclose(matrix.value, matrix.inputs["b"])
    index = einderiv.check("f = x_i x_i", "x", notation="index")
    assert index.read_as is None and "read as" not in index.report()
    by_shape = einderiv.check("f = c x", "x", notation="matrix", shapes={"x": (2, 3)})  # x a matrix, by its shape
    assert by_shape.read_as == "f_ij = c x_ij"
    assert by_shape.inputs["x"].shape == (2, 3) and by_shape.value.shape == (2, 3, 2, 3)


@pytest.mark.parametrize(
    "source, keywords, error, message",
    [
        ("f = x_i A_ij x_j +", {"wrt": "x"}, ParseError, "syntax error"),
        ("f = x_i A_ij x_j", {"wrt": "q"}, DifferentiationError, "'q'"),
        ("f = x_i A_ij x_j", {"wrt": "x", "expect": "2 A_kj x_j +"}, ParseError, ""),
        ("f = x_i A_ij x_j", {"wrt": "x", "expect": "2 B_kj x_j"}, EinderivError, "'B', which is not an input"),
        ("f = x_i A_ij x_j", {"wrt": "x", "expect": "df/dy_k = A_kj x_j"}, EinderivError, "derivative by y,"),
        ("f_ii = x_i", {"wrt": "x"}, IndexRuleError, "repeated on the left-hand side"),
        ("f = x_i x_i", {"wrt": "x", "shapes": [("x", 3)]}, EinderivError, "shapes must map input names"),
        ("f = x_i x_i", {"wrt": "x", "shapes": {"x": "3"}}, EinderivError, "must be non-negative integers"),
        ("f = x_i x_i", {"wrt": "x", "notation": "latex"}, EinderivError, "notation must be one of"),
        ("f = x_i x_i", {"wrt": "x", "tol": None}, EinderivError, "tol must be a non-negative number"),
    ],
)
def test_bad_input_is_an_einderiv_error(source, keywords, error, message):
    with pytest.raises(error) as caught:
        einderiv.check(source, **keywords)
    assert message in str(caught.value)
    arguments = ["check", source] + [a for w in np.atleast_1d(keywords["wrt"]) for a in ("--wrt", str(w))]
    if set(keywords) <= {"wrt", "expect"}:  # the command says the same, as one error line with status 2
        if "expect" in keywords:
            arguments += ["--expect", keywords["expect"]]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            printed, code = _cli(arguments)
        assert code == 2 and printed == "" and err.getvalue().startswith("error: ")


@pytest.mark.parametrize("source", ["f = sqrt(x_i)", "f = log(x_i) x_i", "f = x_i^0.5", "f = sum_i(x_i^1.5)"])
def test_a_function_with_a_restricted_domain_is_checked_inside_it(source):
    # at signed normal inputs sqrt(x_i) is NaN, and a correct derivative was reported FAILED
    result = einderiv.check(source, "x")
    assert result.ok and result.fd_ok
    assert np.all(np.asarray(result.inputs["x"]) > 0)
    assert any("inputs drawn in" in note for note in result.notes)
    x = np.asarray(result.inputs["x"])
    exact = {"f = sqrt(x_i)": 0.5 / np.sqrt(x), "f = log(x_i) x_i": 1 + np.log(x), "f = x_i^0.5": 0.5 / np.sqrt(x)}
    if source in exact:
        np.testing.assert_allclose(result.value, exact[source], rtol=1e-12)


def test_signed_inputs_stay_where_the_expression_is_finite_and_a_nowhere_finite_one_says_so():
    assert not einderiv.check("f = x_i x_i", "x").notes  # no redraw: normal inputs as before
    result = einderiv.check("f = log(x_i - 5)", "x")
    assert not result.ok
    assert any("not finite at these inputs" in note for note in result.notes)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "source, wrt, shapes",
    [
        ("f = logdet(A)", "A", {"A": (4, 4)}),
        ("f = a_i inv(A)_ij a_j + logdet(A)", "A", {"A": (3, 3)}),
        ("f = logdet(A) + a_i inv(A)_ij a_j", ["A", "a"], {"A": (4, 4)}),
    ],
)
def test_a_log_determinant_is_checked_where_the_determinant_is_positive(source, wrt, shapes, seed):
    """A meaning hunter's find: at a normal A the determinant is negative about half the time,
    and ``check`` raised 'the determinant of A is negative' on a valid input (seeds 4 and on for
    ``logdet(A)`` at 3 x 3).  The redraw gives A a positive definite symmetric part; the
    derivative is checked against the Matrix Cookbook's d logdet(A)/dA = inv(A)ᵀ too, and a claim
    missing that transpose is rejected at every seed (a reviewer's find: a symmetric redraw
    accepted it)."""
    result = einderiv.check(source, wrt, shapes=shapes, seed=seed)
    assert result.ok and result.fd_ok, result.report()
    A = np.asarray(result.inputs["A"])
    if wrt == "A":  # (the mixed derivative and its lower one, d/dA, have no logdet: normal inputs)
        assert np.linalg.det(A) > 0 and not np.allclose(A, A.T)
    if source == "f = logdet(A)":
        np.testing.assert_allclose(result.value, np.linalg.inv(A).T, rtol=1e-10)
        assert not einderiv.check(source, wrt, shapes=shapes, seed=seed, expect="inv(A)_ij").ok
        assert einderiv.check(source, wrt, shapes=shapes, seed=seed, expect="inv(A)_ji").ok


def test_a_size_given_for_one_input_sizes_the_axes_joined_to_it():
    """A meaning hunter's find: ``--shape X=5x3`` left y at the default 3 and failed with 'index
    n has two sizes: 3 (from y) and 5', a size the user never gave."""
    result = einderiv.check("f = (y_n - X_nd w_d)^2", "w", shapes={"X": (5, 3)})
    assert result.ok and result.fd_ok
    X, y, w = (np.asarray(result.inputs[k]) for k in "Xyw")
    assert y.shape == (5,) and w.shape == (3,)
    np.testing.assert_allclose(result.value, -2 * X.T @ (y - X @ w), rtol=1e-12)
    printed, code = _cli(["check", "f = logdet(A) + a_i inv(A)_ij a_j", "--wrt", "A", "--wrt", "a", "--shape", "A=4x4"])
    assert code == 0 and "a (4,)" in printed
    with pytest.raises(einderiv.EvaluationError, match="two sizes"):  # sizes given that disagree still do
        einderiv.check("f = (y_n - X_nd w_d)^2", "w", shapes={"X": (5, 3), "y": (4,)})


@pytest.mark.parametrize(
    "source, wrt, claim, matches",
    [
        ("f = x_i x_i", "x", "2 x_i x_j", False),  # one free letter more than df/dx_j: i is summed
        ("f = a_k x_i x_i", "x", "2 a_k x_i x_j", False),
        ("f = c x_i", "c", "x_i", True),  # df/dc is a number: the i written once is summed, as in the source
        ("f = x_i x_i + a_j x_i", "x", "2 x_k + a_j", True),
    ],
)
def test_a_claim_with_more_free_letters_than_the_derivative_sums_them_and_says_so(source, wrt, claim, matches):
    """A second hunter's find: ``--expect "2 x_i x_j"`` for df/dx_j was read with j free and i
    summed, and reported as differing without saying why.  A letter written once that the
    derivative does not have free is summed, as a left-hand side that does not list it sums it
    (``x_i`` for df/dc of ``c x_i`` matches); where the claim differs, a note says which."""
    result = einderiv.check(source, wrt, expect=claim)
    assert result.matches is matches, result.report()
    summed_note = [n for n in result.notes if "once, as" in n]
    assert bool(summed_note) is not matches, result.notes
    if not matches:
        assert "i" in summed_note[0].split("writes ")[1].split(" once")[0]


@pytest.mark.parametrize(
    "claim, wrt, by",
    [
        ("df/dy = 2 x", ["x"], "y"),
        ("df/dy_k = 2 x_k", ["x"], "y"),
        ("d2f/dy dx = 2 I", ["x", "x"], "y x"),
        ("d2f/dy^2 = 2 I", ["x", "x"], "y y"),
    ],
)
def test_a_claim_by_another_variable_is_refused(claim, wrt, by):
    """``--expect "df/dy = 2 x"`` for the gradient by x read only the right-hand side of a matrix
    line and reported "matches" (a hunt's find): a claim line's denominator now names the
    variables the derivative is by, in every spelling the printers use."""
    with pytest.raises(EinderivError, match=f"--expect is a derivative by {by}, but the derivative checked is by"):
        einderiv.check("f = x_i x_i", wrt, expect=claim)
    result = run_cli("check", "f = x_i x_i", *[a for w in wrt for a in ("--wrt", w)], "--expect", claim)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: --expect is a derivative by {by}")


@pytest.mark.parametrize(
    "claim, wrt",
    [
        ("df/dx = 2 x", ["x"]),
        ("df/dx_k = 2 x_k", ["x"]),
        ("d2f/dx dx = 2 I", ["x", "x"]),
        ("d2f/dx² = 2 I", ["x", "x"]),
        ("d2f/dx^2 = 2 I", ["x", "x"]),
    ],
)
def test_a_claim_by_the_variable_checked_is_read(claim, wrt):
    """The right spellings still match (2 x and 2 I, against the finite differences too)."""
    result = einderiv.check("f = x_i x_i", wrt, expect=claim)
    assert result.ok and result.matches is True


@pytest.mark.parametrize("claim", ["d2f/dxdy = I", "d2f/dx dy = I"])
def test_a_mixed_claim_without_spaces_is_read(claim):
    """``d2f/dxdy`` was refused as a derivative by "xdy" (a review's find): the variables written
    together are read as the derivative's when they spell them."""
    result = einderiv.check("f = x_i y_i", ["x", "y"], expect=claim)
    assert result.ok and result.matches is True


def test_a_hessian_claim_written_dx2_is_read():
    result = einderiv.check("f = x_i x_i", ["x", "x"], expect="d2f/dx2 = 2 I")
    assert result.ok and result.matches is True


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize(
    "source, wrt, claim, positive",
    [
        ("f = log(s_i) + abs(r_i)", "r", "1", "s"),  # sign(r), 1 on [0.5, 2]
        ("L = sum_n(log(sigma_n) + relu(r_n))", "r", "dL/dr_n = 1", "sigma"),  # step(r)
    ],
)
def test_an_input_another_term_needs_positive_keeps_its_own_signed_draw(source, wrt, claim, positive, seed):
    # log(s) made every input [0.5, 2], where sign(r) and step(r) are 1: a wrong claim of 1 passed
    result = einderiv.check(source, wrt, expect=claim, seed=seed, shapes={wrt: (6,)})
    assert result.fd_ok and result.claim == "differs" and not result.ok
    assert np.any(np.asarray(result.inputs[wrt]) < 0)
    assert np.all(np.asarray(result.inputs[positive]) > 0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "source, wrt, claim, exact",
    [
        (
            "L = -y_n log(p_n) - (1 - y_n) log(1 - p_n)",
            "p",
            "dL/dp_i = (1 - y_i) / (1 - p_i) - y_i / p_i",
            lambda a: (1 - a["y"]) / (1 - a["p"]) - a["y"] / a["p"],
        ),
        ("f = arcsin(x_i)", "x", None, lambda a: 1 / np.sqrt(1 - a["x"] ** 2)),
        ("f = arccos(X_ij)", "X", None, lambda a: -1 / np.sqrt(1 - a["X"] ** 2)),
    ],
)
def test_a_domain_inside_the_unit_interval_is_checked_inside_it(source, wrt, claim, exact, seed):
    # log(1 - p) and arcsin are NaN for half of [0.5, 2]: a correct derivative was FAILED
    result = einderiv.check(source, wrt, expect=claim, seed=seed)
    assert result.ok and result.fd_ok
    values = np.asarray(result.inputs[wrt])
    assert np.all((values > 0) & (values < 1)) or np.all(np.abs(values) < 1)
    np.testing.assert_allclose(result.value, exact(result.inputs), rtol=1e-12)


SOFTMAX_REGRESSION = "f = -y^T log(softmax(Theta x))"


def test_a_claim_that_holds_at_given_inputs_is_checked_there(tmp_path):
    """A hunt's find: the lecture notes' (softmax(Theta x) - y) x^T holds for a one-hot y (the
    general derivative is (sum(y) softmax(Theta x) - y) x^T), and check drew y at random, with no
    way to say otherwise.  ``values=`` (``--input`` on the command line) fixes inputs: the claim
    matches there, a wrong one still differs, and y is not redrawn."""
    one_hot = np.array([0.0, 1.0, 0.0])
    claim = "(softmax(Theta x) - y) x^T"
    assert einderiv.check(SOFTMAX_REGRESSION, "Theta", expect=claim).matches is False  # random y: it differs
    result = einderiv.check(SOFTMAX_REGRESSION, "Theta", expect=claim, values={"y": one_hot})
    assert result.ok and result.matches
    np.testing.assert_array_equal(result.inputs["y"], one_hot)
    assert "inputs given: y (the others drawn at random)" in result.notes
    Theta, x = result.inputs["Theta"], result.inputs["x"]
    z = Theta @ x
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(result.value, np.outer(p - one_hot, x), rtol=1e-12)  # the closed form
    wrong = einderiv.check(SOFTMAX_REGRESSION, "Theta", expect="(softmax(Theta x) - 2 y) x^T", values={"y": one_hot})
    assert wrong.matches is False and not wrong.ok
    np.save(tmp_path / "y.npy", one_hot)
    printed, code = _cli(
        ["check", SOFTMAX_REGRESSION, "--wrt", "Theta", "--expect", claim, "--input", f"y={tmp_path / 'y.npy'}"]
    )
    assert code == 0 and printed == result.report() + "\n"


def test_given_inputs_keep_their_values_where_the_others_are_drawn_in_a_domain():
    # log(s_i) needs s > 0: s is redrawn in [0.5, 2], the given x (negative entries) is not
    x = np.array([-1.0, 2.0, -3.0, 0.5])
    result = einderiv.check("f = sum_i(log(s_i) x_i)", "s", expect="x_j / s_j", values={"x": x})
    assert result.ok and result.matches
    np.testing.assert_array_equal(result.inputs["x"], x)
    assert result.inputs["s"].shape == (4,) and np.all(result.inputs["s"] >= 0.5)
    assert "s in [0.5, 2]: at signed normal" in result.notes[0]  # no other input is drawn signed normal


@pytest.mark.parametrize(
    "values, message",
    [
        ({"z": [1.0]}, "values: 'z' is not an input"),
        ({"y": "abc"}, "values: 'y' is not an array of real numbers"),
        ([1, 2], "values must map input names to arrays"),
    ],
)
def test_given_inputs_that_cannot_be_used_are_an_error(values, message):
    with pytest.raises(EinderivError, match=message):
        einderiv.check(SOFTMAX_REGRESSION, "Theta", values=values)
    with pytest.raises(EinderivError, match=r"values: 'y' has shape \(3,\), but shapes gives \(4,\)"):
        einderiv.check(SOFTMAX_REGRESSION, "Theta", values={"y": [0.0, 1.0, 0.0]}, shapes={"y": 4})


def test_a_complex_input_to_check_is_an_error_not_its_real_part(tmp_path):
    """A hunt's find: check cast values= (--input) to float64, so a complex x was checked at its
    real part, reported ok, with a NumPy ComplexWarning from the API and nothing on the command line."""
    x = np.array([1 + 2j, 3, 4])
    with pytest.raises(einderiv.EinderivError, match="input 'x' is complex"):
        einderiv.check("f = abs(x_i)", "x", values={"x": x})
    np.save(tmp_path / "x.npy", x)
    result = run_cli("check", "f = abs(x_i)", "--wrt", "x", "--input", f"x={tmp_path / 'x.npy'}")
    assert result.returncode == 2 and result.stderr.startswith("error: input 'x' is complex")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def _spd(scale: float) -> np.ndarray:
    return scale * np.array([[2.0, 0.5, 0.1], [0.5, 1.5, 0.2], [0.1, 0.2, 1.0]])


@pytest.mark.parametrize("scale", [1e7, 1e300])
def test_a_wrong_claim_for_a_derivative_small_beside_its_expression_differs(scale):
    """A hunt's find: a claim was compared within tol of the expression's size (up to 1), so
    -inv(S) and 0 matched d logdet(S)/dS = inv(S)^T at a covariance of 1e7 (a derivative of 1e-7
    beside a log-determinant of 48), and any claim at 1e300.  Against NumPy's inv."""
    S = _spd(scale)
    right = einderiv.check("f = logdet(S)", "S", expect="S^-1", values={"S": S})
    assert right.ok and right.claim == "matches", right.report()
    np.testing.assert_allclose(right.value, np.linalg.inv(S).T, rtol=1e-12)
    for wrong in ("-S^-1", "0", "S^-1 + 1e-3 S^-1"):
        result = einderiv.check("f = logdet(S)", "S", expect=wrong, values={"S": S})
        assert result.claim == "differs" and not result.ok, (wrong, result.report())


def test_a_wrong_sign_of_a_small_gradient_beside_a_value_of_one_differs():
    """f = 1 + 1e-7 x_i x_i: the gradient 2e-7 x matches, -2e-7 x (the sign wrong) differs, as
    does a claim of 0; a mathematically zero derivative that is rounding alone still matches 0."""
    assert einderiv.check("f = 1 + 1e-7 x_i x_i", "x", expect="2e-7 x_j").claim == "matches"
    for wrong in ("-2e-7 x_j", "0", "2.2e-7 x_j"):
        assert einderiv.check("f = 1 + 1e-7 x_i x_i", "x", expect=wrong).claim == "differs", wrong
    rounding = einderiv.check("f = sigmoid(x_i) + sigmoid(-x_i)", "x", expect="0", shapes={"x": (6,)}, seed=3)
    assert rounding.ok and rounding.claim == "matches", rounding.report()


def test_finite_differences_catch_a_wrong_rule_beside_a_value_of_one():
    """A registered function whose rule is wrong (3u for u^2) passed the finite-difference check in
    ``f = 1 + 1e-7 sqbad(x_i)``, where the differences resolve the gradient to about 1e-10 but the
    allowance was 1e-6 of the value 1; the right rule passes there."""
    from fractions import Fraction

    from einderiv.functions import Function, Helper, registered

    for rule, right in (("3 u", False), ("2 u", True)):
        function = Function(
            "sqtest",
            lambda xp: lambda x: x * x,
            rule,
            at_zero=Fraction(0),
            latex=r"\mathrm{sqtest}",
            code={"python": Helper("return x * x"), "torch": Helper("return x * x")},
        )
        with registered(function):
            for source in ("f = 1e-7 sqtest(x_i)", "f = 1 + 1e-7 sqtest(x_i)"):
                assert bool(einderiv.check(source, "x").ok) is right, (rule, source)


@pytest.mark.parametrize(
    "source, wrt, claim, values",
    [
        ("f = 1e6 + x_i x_i", "x", "2 x_j", {}),
        ("L = (y_n - X_nd w_d)^2", "w", "-2 X_ni (y_n - X_nd w_d)", {"y": 1e5 * np.ones(5)}),
        ("f = 1e8 + x_i A_ij x_j", ["x", "x"], "A_kl + A_lk", {}),
        ("f = 1e6 + x_i x_i", "x", "2 x_j", {"x": 1e-3 * np.array([0.3, -1.2, 0.8])}),  # (steps of 1e-3 too)
    ],
)
def test_a_right_derivative_of_a_large_expression_passes(source, wrt, claim, values):
    """A hunt's find: at f = 1e6 + x_i x_i the rounding of f over the step 1e-6 (eps |f| / h, 2e-4)
    failed the exact gradient 2 x (error 3.4e-5, exit status 1); wider steps are tried where the
    usual ones miss, and the error is within the tolerance.  A wrong claim still differs."""
    shapes = {"X": (5, 3)} if "X" in source else None
    result = einderiv.check(source, wrt, expect=claim, shapes=shapes, values=values or None)
    assert result.ok and result.fd_ok and result.error <= 1e-6, result.report()
    wrong = einderiv.check(source, wrt, expect=f"1.001 ({claim})", shapes=shapes, values=values or None)
    assert wrong.fd_ok and wrong.claim == "differs"


@pytest.mark.parametrize(
    "claim",
    ["∂f/∂y = A y", "∇_y f = A y", "d f/dy = A y", "df/d y = A y", "∂g/∂x = A y", "d^2g/dx dx = A", "f/x = A y"],
)
def test_a_claim_line_naming_another_derivative_is_an_error(claim):
    """A hunt's find: these left sides were dropped and the right side compared with df/dx, so
    ``∂f/∂y = A y`` matched for f = xᵀ A y by x (∂f/∂y is Aᵀ x)."""
    with pytest.raises(EinderivError, match="--expect"):
        einderiv.check("f = x^T A y", "x", expect=claim)


@pytest.mark.parametrize(
    "claim", ["df/dx = A y", "∂f/∂x = A y", "∇_x f = A y", "∇f = A y", "d f / d x = A y", "∇_{x} f = A y"]
)
def test_the_spellings_of_the_right_derivative_are_read(claim):
    result = einderiv.check("f = x^T A y", "x", expect=claim)
    assert result.ok and result.claim == "matches", result.report()


@pytest.mark.parametrize("claim", ["d²f/dx² = A + A^T", "∂²f/∂x² = A + A^T", "∇²f = A + A^T", "d^2f/dx^2 = A + A^T"])
def test_the_spellings_of_a_second_derivative_are_read(claim):
    result = einderiv.check("f = x^T A x", ["x", "x"], expect=claim)
    assert result.ok and result.claim == "matches", result.report()


@pytest.mark.parametrize("name", ["axis0", "axis1", "claim"])
def test_a_claim_naming_what_is_no_input_is_an_error_whatever_the_name(name):
    """The arrays that size a claim's axes were named axis0, axis1, ...: a claim writing
    ``5 axis0_k`` (no input) was read as those zeros, and matched."""
    with pytest.raises(EinderivError, match=f"--expect uses '{name}', which is not an input"):
        einderiv.check("f = x_i A_ij x_j", "x", expect=f"A_kj x_j + A_jk x_j + 5 {name}_k")


def test_claims_at_mixed_and_tiny_scales_and_of_a_hessian():
    """A stress test of the first version of the claim's rounding allowance: it was one number,
    over the largest wrt entry (a claim of 0 for the gradient of sigmoid(x) + sigmoid(-x), rounding
    alone, differed at x = [1e6, 0.5, -0.3]), sized by the expression at the differences' points
    (-2 x and 0 matched the gradient of x_i x_i at x ~ 1e-150) and divided by the scale once (the
    negated Hessian of logdet(S) matched at S ~ 1e14).  Now each entry's allowance is over the
    size of the wrt entries it is by, and the expression is taken at the inputs."""
    zero = einderiv.check("f = sigmoid(x_i) + sigmoid(-x_i)", "x", expect="0", values={"x": np.array([1e6, 0.5, -0.3])})
    assert zero.claim == "matches", zero.report()
    x = 1e-150 * np.array([0.3, -1.2, 0.8])
    assert einderiv.check("f = x_i x_i", "x", expect="2 x_k", values={"x": x}).claim == "matches"
    for wrong in ("-2 x_k", "0", "x_k"):
        assert einderiv.check("f = x_i x_i", "x", expect=wrong, values={"x": x}).claim == "differs", wrong
    hessian = einderiv.diff("f = logdet(S)", ["S", "S"])
    rhs = str(hessian).split("=", 1)[1]
    for scale in (1e7, 1e14, 1e20):
        S = _spd(scale)
        right = einderiv.check("f = logdet(S)", ["S", "S"], expect=rhs, values={"S": S})
        assert right.claim == "matches", (scale, right.report())
        inverse = np.linalg.inv(S)
        np.testing.assert_allclose(right.value, -np.einsum("li,jk->ijkl", inverse, inverse), rtol=1e-10)
        negated = einderiv.check("f = logdet(S)", ["S", "S"], expect=f"-({rhs})", values={"S": S})
        assert negated.claim == "differs", scale


def test_an_expression_that_is_exactly_zero_checks_its_rounding_derivative():
    """x_i (sigmoid(x_i) + sigmoid(-x_i) - 1) evaluates to exactly 0 and its gradient to rounding
    (1e-17): the differences are 0 and the derivative noise, so the check failed with error 1
    and a claim of 0 differed.  Both are checked against 1 there, as an exactly-zero derivative is."""
    result = einderiv.check("f = sum_i(x_i sigmoid(x_i) + x_i sigmoid(-x_i) - x_i)", "x", expect="0")
    assert result.ok and result.fd_ok and result.claim == "matches", result.report()
    assert np.abs(result.value).max() < 1e-15


@pytest.mark.parametrize("x", [[1e6, 1.0, 0.5, -0.7], [1e8, -3e7, 0.2]])
def test_differences_divide_by_the_step_taken(x):
    """At |x| ~ 1e6 the sum x + 1e-6 rounds (ulp 1.2e-10), so the step the differences took was
    not 2e-6, and the exact gradient -sin(x) of cos(x) failed by 3e-6 (a stress test's find).
    The differences are divided by (x + h) - (x - h).  Against NumPy's sin."""
    x = np.array(x)
    result = einderiv.check("f = cos(x_i)", "x", expect="-sin(x_k)", values={"x": x})
    assert result.ok and result.fd_ok, result.report()
    np.testing.assert_allclose(result.value, -np.sin(x), rtol=1e-15)


@pytest.mark.parametrize(
    "claim", ["df/dθ_k = A_kj θ_j + A_jk θ_j", "∂f/∂θ_k = A_kj θ_j + A_jk θ_j", "df/dtheta_k = A_kj θ_j + A_jk θ_j"]
)
def test_a_claim_line_by_a_greek_variable_is_read_as_the_text_is(claim):
    """A reviewer's find: the left side's check read only ASCII letters, so ``df/dθ_k = ...``
    (which matched before) became an error; θ is theta there as everywhere."""
    result = einderiv.check("f = θ_i A_ij θ_j", "θ", expect=claim)
    assert result.claim == "matches", result.report()


def test_a_transposed_vector_in_a_claims_name_is_that_vector_and_a_matrix_is_an_error():
    """``df/dxᵀ`` (the numerator layout's row) has the gradient's entries and is read as df/dx;
    ``df/dXᵀ`` for a matrix is the transpose of df/dX, which a claim compared entry by entry
    would get wrong either way: an error that says so."""
    for claim in ("df/dxᵀ = A x + A^T x", "df/dx^T = A x + A^T x"):
        assert einderiv.check("f = x^T A x", "x", expect=claim).claim == "matches", claim
    with pytest.raises(EinderivError, match="transposed matrix"):
        einderiv.check("f = tr(A X)", "X", expect="df/dXᵀ = A")


def test_a_claim_of_two_lines_says_it_takes_one_and_values_name_an_input_once():
    with pytest.raises(EinderivError, match="--expect takes one expression or one statement"):
        einderiv.check("f = x_i x_i", "x", expect="2 x_k\ndf/dx_k = 2 x_k")
    with pytest.raises(EinderivError, match="'theta' is given twice"):
        einderiv.check("f = θ_i θ_i", "θ", values={"θ": [1.0, 2.0], "theta": [1.0, 2.0]})
    with pytest.raises(EinderivError, match="'theta' is given twice"):
        einderiv.check("f = θ_i θ_i", "θ", shapes={"θ": 2, "theta": 3})


@pytest.mark.parametrize(
    "claim, ok",
    [
        ("d2f/dxdy = 2 x_j delta_jk", True),
        ("d²f/dxdy = 2 x_j delta_jk", True),
        ("d2f/dx dy = 2 x_j delta_jk", True),
        ("d²f/dx_i dy_j = 2 x_i delta_ij", True),
        ("d^2f/dx_i dy_j = 2 x_i delta_ij", True),
        ("∂²f/∂x_i∂y_j = 2 x_i delta_ij", True),
        ("d²f/dx_i dy_j = 3 x_i delta_ij", False),
    ],
)
def test_a_mixed_derivative_is_named_as_people_write_it(claim, ok):
    """A second derivative's name as textbooks write it: ``d2f/dxdy`` was read as a derivative by
    "xdy" (an error), ``d²f/dx_i dy_j`` and ``d^2f/...`` as no left-hand side at all (an error),
    ``d2f/dx dy`` with no letters as a claim of no free index (an error); each is the derivative
    d2f/dx_j dy_k = 2 delta_jk x_j, checked against its finite differences."""
    report = einderiv.check("f = x_i y_i x_i", ["x", "y"], expect=claim)
    assert report.ok is ok


def test_a_mixed_derivative_by_the_other_order_names_both_variables():
    """``d²f/dydx`` against a derivative by x then y said "a derivative by ydx"."""
    with pytest.raises(einderiv.EinderivError, match="a derivative by y x, but the derivative checked is by x y"):
        einderiv.check("f = x_i y_i x_i", ["x", "y"], expect="d²f/dydx = 2 x_j delta_jk")


@pytest.mark.parametrize(
    "source, wrt, claim",
    [
        ("f = x_i A_ij y_j", ["x", "y"], "d²f/dxdy = A_ij"),
        ("f = x_i A_ij y_j", ["x", "y"], "d^2f/dx dy = A_ij"),
        ("f = x_i A_ij x_j", ["x", "x"], "d²f/dx² = A_ij + A_ji"),
        ("f = x_i A_ij y_j", "x", "∇f = A_ij y_j"),
    ],
)
def test_a_named_claim_in_letters_of_its_own_is_matched_and_noted(source, wrt, claim):
    """A review's find: a claim named without letters and written in letters other than the
    derivative's raised a parse error where its note on the letters re-read the whole line (the
    parser reads no ``d²f/dxdy`` name); the note now reads the right-hand side that was checked."""
    report = einderiv.check(source, wrt, expect=claim)
    assert report.ok
    assert any("read as" in note for note in report.notes), report.notes
