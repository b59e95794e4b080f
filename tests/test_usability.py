"""Saying what users mean (issue 12): ``einderiv.check`` and claims written with their own letters,
user errors of the command line (one ``error:`` line, exit status 2, never 70), a bare
``einderiv``, ``--wrt x,A``, and arrays passed as a mapping (inputs named like parameters)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import einderiv
from einderiv.errors import DifferentiationError, EinderivError, EvaluationError
from tests.helpers import central_difference
from tests.helpers import run_cli as run


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, exactly one ``error:`` line naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


# -- einderiv.check: the API ----------------------------------------------------------------


def test_check_api_agrees_with_the_closed_form_and_finite_differences():
    result = einderiv.check("f = x_i A_ij x_j", "x", shapes={"x": (4,), "A": (4, 4)}, seed=3)
    x, A = result.inputs["x"], result.inputs["A"]
    assert x.shape == (4,) and A.shape == (4, 4)
    np.testing.assert_allclose(result.value, (A + A.T) @ x, rtol=1e-12)  # the closed form
    reference = central_difference(lambda x, A: x @ A @ x, {"x": x, "A": A}, "x")  # an independent FD
    np.testing.assert_allclose(result.value, reference, rtol=1e-6, atol=1e-6)
    assert 0 <= result.error < 1e-8 and result.fd_ok and result.ok
    assert result.claim is None and result.message is None and result.notes == ()
    assert "finite differences: max relative error" in result.report() and ": ok" in str(result)


def test_check_api_second_derivative_and_zero_tolerance():
    result = einderiv.check("f = x_i A_ij x_j", ["x", "x"], shapes={"x": 3, "A": (3, 3)})
    A = result.inputs["A"]
    np.testing.assert_allclose(result.value, A + A.T, rtol=1e-12)
    assert result.ok
    strict = einderiv.check("f = sum_i(exp(x_i))", "x", tol=0)  # finite differences are never exact
    assert strict.error > 0 and not strict.fd_ok and not strict.ok
    np.testing.assert_allclose(strict.value, np.exp(strict.inputs["x"]), rtol=1e-12)
    again = einderiv.check("f = sum_i(exp(x_i))", "x", tol=0)
    np.testing.assert_array_equal(again.inputs["x"], strict.inputs["x"])  # seed 0 by default: reproducible


def test_check_api_claims():
    good = einderiv.check("y_i = A_ij x_j", "x", expect="A_ik")
    assert good.ok and good.claim == "matches" and good.message.startswith("your claim: matches")
    matrix = einderiv.check("f = x_i A_ij x_j", "x", expect="(A + A^T) x")
    assert matrix.ok and matrix.claim == "matches" and "matrix notation" in matrix.message
    wrong = einderiv.check("f = x_i A_ij x_j", "x", expect="2 A_kj x_j")
    assert wrong.fd_ok and not wrong.ok and wrong.claim == "differs"
    assert wrong.message.startswith("your claim: DIFFERS: max absolute difference")


def test_check_api_renamed_letters_are_matched_and_said():
    result = einderiv.check("f = x_i A_ij x_j", "x", expect="A_ij x_j + x_j A_ji")
    assert result.derivative.indices == ("k",)
    assert result.ok and result.claim == "matches"
    assert result.message.startswith("your claim (read with i as k): matches")
    (note,) = result.notes
    assert "free index is i, the derivative's is k" in note
    assert "--wrt x_i" in note and "df/dx_i = A_ij x_j + x_j A_ji" in note
    wrong = einderiv.check("f = x_i A_ij x_j", "x", expect="2 A_ij x_j")
    assert wrong.claim == "differs" and not wrong.ok and "DIFFERS" in wrong.message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tol": -1}, "tol must be a non-negative number"),
        ({"tol": float("nan")}, "tol must be a non-negative number"),
        ({"tol": "small"}, "tol must be a non-negative number"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"shapes": {"q": (3,)}}, "'q' is not an input"),
        ({"shapes": {"x": (3, 3)}}, "has 2 axes"),
        ({"shapes": {"x": (-3,)}}, "non-negative integers"),
        ({"shapes": {"x": (10**11,)}}, "past the limit of 20000 \\(max_checked\\)"),  # read before allocating
        ({"expect": 3}, "expect must be text"),
    ],
)
def test_check_api_errors_are_einderiv_errors(kwargs, message):
    with pytest.raises(EinderivError, match=message):
        einderiv.check("f = x_i x_i", "x", **kwargs)


def test_a_check_input_too_large_to_allocate_is_an_einderiv_error():
    """x is sized by A (so max_checked is read only once x is made): A itself cannot be made."""
    with pytest.raises(EinderivError, match="'A' of shape \\(1000000, 1000000\\) is too large to allocate"):
        einderiv.check("f = x_i A_ij x_j", "x", shapes={"A": (10**6, 10**6)})


# -- einderiv check: claims with their own letters --------------------------------------------


def test_cli_claim_with_other_letters_is_compared_under_the_stated_renaming():
    result = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "A_ij x_j + x_j A_ji")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "derivative: df/dx_k = A_kj x_j + x_i A_ik"
    assert lines[-2].startswith("note: your claim's free index is i, the derivative's is k, so i was read as k")
    assert "differentiate with --wrt x_i, or write the whole statement: df/dx_i = A_ij x_j + x_j A_ji" in lines[-2]
    assert lines[-1].startswith("your claim (read with i as k): matches (max absolute difference")
    wrong = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "2 A_ij x_j")
    assert wrong.returncode == 1 and "your claim (read with i as k): DIFFERS" in wrong.stdout


def test_cli_the_suggested_fixes_work_without_a_note():
    by_wrt = run("check", "f = x_i A_ij x_j", "--wrt", "x_i", "--expect", "A_ij x_j + x_j A_ji")
    whole = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "df/dx_i = A_ij x_j + x_j A_ji")
    for result in (by_wrt, whole):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "note:" not in result.stdout
        assert result.stdout.splitlines()[-1].startswith("your claim: matches")
    wrong_whole = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "df/dx_i = 2 A_ij x_j")
    assert wrong_whole.returncode == 1 and "your claim: DIFFERS" in wrong_whole.stdout


def test_cli_whole_statement_by_another_tensor_is_an_error():
    result = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--expect", "df/dy_i = A_ij x_j + x_j A_ji")
    assert_user_error(result, "derivative by y,", "by x")


def test_cli_two_renamed_letters_are_matched_alphabetically_and_alternatives_are_named():
    good = run("check", "K_pq = R_mp R_mq", "--wrt", "R", "--expect", "delta_bp R_aq + R_ap delta_bq")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "matched in alphabetical order (an expression's own axis order): a read as i, b read as j" in good.stdout
    assert good.stdout.splitlines()[-1].startswith("your claim (read with a as i, b as j): matches")
    swapped = run("check", "K_pq = R_mp R_mq", "--wrt", "R", "--expect", "delta_ap R_bq + R_bp delta_aq")
    assert swapped.returncode == 1
    assert "note: your claim matches if read with b as i, a as j instead" in swapped.stdout
    assert swapped.stdout.splitlines()[-1].startswith("your claim (read with a as i, b as j): DIFFERS")
    hessian = run("check", "f = x_i A_ij x_j", "--wrt", "x", "--wrt", "x", "--expect", "A_ab + A_ba")
    assert hessian.returncode == 0 and "--wrt x_a --wrt x_b" in hessian.stdout


def test_cli_claim_using_the_derivatives_letter_as_a_summed_index():
    # df/dx_j for f = x_i A_ik x_k: the claim's free index is i, and its j is summed
    result = run("check", "f = x_i A_ik x_k", "--wrt", "x", "--expect", "A_ij x_j + A_ji x_j")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith("derivative: df/dx_j = ")  # j: the letter the claim sums
    assert "note: your claim's free index is i, the derivative's is j, so i was read as j" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("your claim (read with i as j): matches")


def test_cli_claim_missing_a_derivative_letter_that_differs_says_so():
    result = run("check", "y_i = x_i x_i", "--wrt", "x", "--expect", "2 delta_ik x_i")
    assert result.returncode == 1
    assert "note: the derivative's index j occurs nowhere in your claim" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("your claim: DIFFERS")
    fixed = run("check", "y_i = x_i x_i", "--wrt", "x", "--expect", "2 delta_ij x_i")
    assert fixed.returncode == 0 and "note:" not in fixed.stdout


def test_cli_claim_with_fewer_free_letters_keeps_the_derivatives_letters():
    # dC_ij/dx_k = delta_ik is constant along j: a claim may leave j out and is broadcast along it
    result = run("check", "C_ij = x_i + y_j", "--wrt", "x", "--expect", "delta_ik")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note:" not in result.stdout and result.stdout.splitlines()[-1].startswith("your claim: matches")


# -- user errors of the command line: exit 2, one error line ----------------------------------


def test_eval_out_into_a_missing_folder(tmp_path):
    result = run("eval", "f = x_i x_i", "--random", "x=3", "--out", "missing_dir/x.npy", cwd=tmp_path)
    assert_user_error(result, "--out", "missing_dir/x.npy", "No such file or directory")


def test_eval_out_empty():
    assert_user_error(run("eval", "f = x_i x_i", "--random", "x=3", "--out", ""), "--out needs a file name")


def test_check_infinite_tolerance_accepts_anything():
    result = run("check", "f = x_i x_i", "--wrt", "x", "--tol", "inf")
    assert result.returncode == 0 and result.stdout.splitlines()[-1].endswith("(tolerance inf): ok")


def test_eval_out_without_suffix_names_the_file_written(tmp_path):
    np.save(tmp_path / "x.npy", np.array([1.0, 2.0, 3.0]))
    result = run("eval", "f = x_i x_i", "--input", "x=x.npy", "--out", "value", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "saved an array of shape () to value.npy"
    assert float(np.load(tmp_path / "value.npy")) == 14.0


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--random", "x=100000000000"], ["--random 'x=100000000000'", "too large to allocate"]),
        (["--random", "x=3x"], ["--random 'x=3x'", "sizes joined by 'x'"]),
        (["--random", "x=3.5"], ["sizes joined by 'x'"]),
        (["--random", "x=three"], ["sizes joined by 'x'"]),
        (["--random", "x=-3"], ["sizes must not be negative"]),
        (["--random", "x"], ["--random takes NAME=SHAPE"]),
        (["--random", "x=3", "--random", "x=4"], ["'x' is given twice"]),
        (["--random", "x=3", "--seed", "-1"], ["--seed", "non-negative integer"]),
        (["--random", "x=3", "--seed", "²"], ["--seed", "non-negative integer, got '²'"]),  # said 'invalid _seed value'
        (["--random", "x=3x3"], ["input 'x' has 2 axes"]),
    ],
)
def test_eval_bad_random_inputs(args, fragments):
    assert_user_error(run("eval", "f = x_i x_i", *args), *fragments)


def test_check_refuses_a_shape_given_twice():
    """``--shape x=3 --shape x=4`` checked at (4,), silently, where --random and --rank refuse it."""
    result = run("check", "f = x_i x_i", "--wrt", "x", "--shape", "x=3", "--shape", "x=4")
    assert_user_error(result, "'x' is given twice")


def test_eval_zero_sizes_are_fine():
    result = run("eval", "y_i = A_ij x_j", "--random", "A=0x3", "--random", "x=3")
    assert result.returncode == 0, result.stderr
    assert "shape (0,)" in result.stdout
    empty_sum = run("eval", "f = x_i x_i", "--random", "x=0")
    assert empty_sum.returncode == 0 and empty_sum.stdout.splitlines()[-1] == "0."


def test_eval_bad_input_files(tmp_path):
    (tmp_path / "file.txt").write_text("1 2 3\n")
    np.save(tmp_path / "good.npy", np.arange(3.0))
    data = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(data[:-8])
    (tmp_path / "header.npy").write_bytes(data[:20])
    np.savez(tmp_path / "both.npz", x=np.arange(3.0))
    cases = [
        ("x=file.txt", ["--input x", "'file.txt' is not a .npy file"]),
        ("x=missing.npy", ["--input x", "cannot read 'missing.npy'", "No such file or directory"]),
        ("x=truncated.npy", ["--input x", "'truncated.npy' is not a valid .npy array"]),
        ("x=header.npy", ["--input x", "'header.npy' is not a valid .npy array"]),
        ("x=both.npz", ["--input x", "'both.npz' is a .npz archive"]),
        ("x=.", ["--input x", "cannot read '.'"]),
        ("x=", ["--input takes NAME=FILE.npy"]),
    ]
    for text, fragments in cases:
        assert_user_error(run("eval", "f = x_i x_i", "--input", text, cwd=tmp_path), *fragments)
    good = run("eval", "f = x_i x_i", "--input", "x=good.npy", cwd=tmp_path)
    assert good.returncode == 0 and good.stdout.splitlines()[-1] == "5."


def test_eval_a_result_too_large_for_memory():
    # each input is small; the outer product has 10^20 entries
    args = [f"--random={name}=100000" for name in "abcd"]
    assert_user_error(run("eval", "C_ijkl = a_i b_j c_k d_l", *args), "not enough memory")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--shape", "x=100000000000"], ["past the limit of 20000 (max_checked)"]),  # read before allocating
        (["--shape", "x=3y"], ["--shape 'x=3y'", "sizes joined by 'x'"]),
        (["--shape", "q=3"], ["--shape q: not an input"]),
        (["--tol", "-1"], ["tol must be a non-negative number"]),
        (["--tol", "nan"], ["tol must be a non-negative number"]),
        (["--seed", "x"], ["--seed"]),
    ],
)
def test_check_bad_options(args, fragments):
    assert_user_error(run("check", "f = x_i x_i", "--wrt", "x", *args), *fragments)


def test_bare_einderiv_prints_the_usage_and_exits_2():
    result = run()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: einderiv")
    assert_user_error(result, "name a command: diff, eval or check")


@pytest.mark.parametrize("command", ["diff", "check", "eval"])
def test_wrt_with_a_comma_says_to_repeat_wrt(command):
    extra = ["--random", "x=3", "--random", "A=3x3"] if command == "eval" else []
    result = run(command, "f = x_i A_ij x_j", "--wrt", "x,A", *extra)
    assert_user_error(result, "--wrt 'x,A' names 2 tensors: repeat --wrt", "--wrt x --wrt A")
    braced = run("diff", "f = x_i W_{in,out} x_j", "--wrt", "W_{in,out}")  # one tensor, braced indices
    assert braced.returncode == 0, braced.stderr


def test_api_wrt_with_a_comma():
    with pytest.raises(DifferentiationError, match=r"pass a list .*wrt=\['x', 'A'\]"):
        einderiv.diff("f = x_i A_ij x_j", "x,A")
    mixed = einderiv.diff("f = x_i A_ij x_j", ["x", "A"])
    assert mixed.order == 2


# -- arrays as a mapping; inputs named like parameters ------------------------------------------

X = np.array([1.0, -2.0, 0.5])
M = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [2.0, 0.0, 1.0]])


@pytest.mark.parametrize("name", ["of", "source", "backend", "layout", "arrays", "self", "x"])
def test_evaluate_takes_a_mapping_for_any_name(name):
    source = f"f = {name}_i A_ij {name}_j"
    assert einderiv.evaluate(source, {name: X, "A": M}) == pytest.approx(X @ M @ X)
    assert einderiv.evaluate(source, {name: X}, A=M) == pytest.approx(X @ M @ X)
    compiled = einderiv.compile(source)
    assert compiled({name: X, "A": M}) == pytest.approx(X @ M @ X)
    assert compiled.call({name: X, "A": M}) == pytest.approx(X @ M @ X)
    assert compiled.shape_for({name: (3,), "A": (3, 3)}) == ()
    for make in (einderiv.grad, einderiv.jacobian, lambda s, w: einderiv.diff(s, w)):
        derivative = make(source, name)
        np.testing.assert_allclose(derivative({name: X, "A": M}), (M + M.T) @ X)
        np.testing.assert_allclose(derivative.call({name: X, "A": M}), (M + M.T) @ X)
        assert derivative.shape_for({name: (3,), "A": (3, 3)}) == (3,)
    np.testing.assert_allclose(einderiv.hessian(source, name)({name: X, "A": M}), M + M.T)


@pytest.mark.parametrize("name", ["source", "arrays", "self", "layout"])
def test_keywords_that_are_not_evaluation_parameters_work(name):
    source = f"f = {name}_i A_ij {name}_j"
    assert einderiv.evaluate(source, **{name: X, "A": M}) == pytest.approx(X @ M @ X)
    assert einderiv.compile(source)(**{name: X, "A": M}) == pytest.approx(X @ M @ X)
    assert einderiv.compile(source).call(**{name: X, "A": M}) == pytest.approx(X @ M @ X)
    np.testing.assert_allclose(einderiv.grad(source, name)(**{name: X, "A": M}), (M + M.T) @ X)
    assert einderiv.compile(source).shape_for(**{name: (3,), "A": (3, 3)}) == ()


def test_colliding_keywords_give_einderiv_errors_that_say_to_use_a_mapping():
    with pytest.raises(EinderivError, match=r"input named 'of'.*mapping.*\{'of': \.\.\.\}"):
        einderiv.evaluate("f = of_i of_i", of=X)
    with pytest.raises(EvaluationError, match=r"input named 'backend'"):
        einderiv.evaluate("f = backend_i backend_i", backend=X)
    with pytest.raises(EvaluationError, match=r"input named 'backend'"):
        einderiv.compile("f = backend_i backend_i").call(backend=X)
    with pytest.raises(EvaluationError, match=r"missing array for 'of'.*pass it in a mapping"):
        einderiv.evaluate("f = of_i of_i", of="f")  # of= picks the statement f: the input is missing
    for make in (einderiv.compile, einderiv.grad, einderiv.hessian):
        with pytest.raises(EinderivError, match="of= names the output statement"):
            make("f = x_i x_i", *(["x"] if make is not einderiv.compile else []), of=X)
    with pytest.raises(DifferentiationError, match="layout must be one of"):
        einderiv.diff("f = x_i x_i", "x", layout=X)


def test_mapping_misuse_is_an_evaluation_error():
    grad = einderiv.grad("f = x_i x_i", "x")
    with pytest.raises(EvaluationError, match="not as a positional ndarray"):
        grad(X)
    with pytest.raises(EvaluationError, match="not as a positional list"):
        einderiv.evaluate("f = x_i x_i", [X])
    with pytest.raises(EvaluationError, match="'x' is given twice"):
        grad({"x": X}, x=X)
    with pytest.raises(EvaluationError, match="names must be strings"):
        grad.call({0: X})
    with pytest.raises(EvaluationError, match="non-negative integers"):
        grad.shape_for({"x": (-1,)})
    with pytest.raises(EvaluationError, match="non-negative integers"):
        grad.shape_for(x=(2.5,))
    assert grad.shape_for(x=(10**12,)) == (10**12,)  # allocates nothing
    np.testing.assert_allclose(grad.call(arrays={"x": X}), 2 * X)  # the keyword form of call() still works


@pytest.mark.parametrize(
    "function", ["grad", "hessian", "jacobian", "hvp", "jvp", "vjp", "hessian_diag", "value_and_grad"]
)
def test_an_unknown_keyword_is_named_with_the_function_called(function):
    """``jacobian(..., foo=1)`` said "diff() got an unexpected keyword argument" (every entry point
    passed its keywords on to diff): each now takes symmetric=, diagonal= and
    symmetric_convention= by name, so the error names the function the user called.  It is a
    TypeError, as Python's is, and an EinderivError, as the README promises every error is (it was
    a bare TypeError), and it lists what the function takes."""
    message = rf"^{function}\(\) got an unexpected keyword argument 'foo' \(it takes "
    with pytest.raises(TypeError, match=message) as err:
        getattr(einderiv, function)("f = x_i x_i", "x", foo=1)
    assert isinstance(err.value, einderiv.EinderivError)
    assert "symmetric=" in str(err.value) and "of=" in str(err.value)
    S = np.array([[2.0, 1.0], [1.0, 3.0]])
    if function in ("grad", "hessian_diag"):  # the named options still reach diff
        got = getattr(einderiv, function)("f = S_ij S_ij", "S", symmetric=["S"])(S=S)
        # sym(2 E) is the Hessian's action; its diagonal entry at (i, j) is (1 + delta_ij)
        np.testing.assert_allclose(got, 2 * S if function == "grad" else 1 + np.eye(2), rtol=1e-14)


def test_a_missing_I_says_that_I_was_read_as_an_input_not_the_identity():
    """``F = A + I`` in index notation reads I as a scalar input; the error said only "missing
    array for 'I'" (a meaning hunt's note).  It names the identity's two spellings."""
    with pytest.raises(
        EvaluationError,
        match=r"missing array for 'I'.*read as a scalar input; the identity is delta_ij.*notation='matrix'",
    ):
        einderiv.evaluate("F = A + I", A=np.eye(3))
    np.testing.assert_allclose(einderiv.evaluate("F = A + I", A=np.eye(3), notation="matrix"), 2 * np.eye(3))


@pytest.mark.parametrize("layout", ["numerator", "denominator"])
def test_grad_and_hessian_take_a_layout_as_diff_does(layout):
    """``grad(..., layout="denominator")`` was a bare TypeError, where the README says grad is diff
    for a scalar output and diff takes a layout: for a scalar the array is the same in both."""
    A = np.array([[1.0, 2.0], [3.0, 4.0]])
    a, b = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    np.testing.assert_array_equal(einderiv.grad("f = a_i X_ij b_j", "X", layout=layout)(a=a, X=A, b=b), np.outer(a, b))
    gradients = einderiv.grad("f = a_i X_ij b_j", ["X", "a"], layout=layout)(a=a, X=A, b=b)
    np.testing.assert_array_equal(gradients[1], A @ b)
    value, gradient = einderiv.value_and_grad("f = a_i X_ij b_j", "X", layout=layout)(a=a, X=A, b=b)
    np.testing.assert_array_equal(gradient, np.outer(a, b))
    hessian = einderiv.hessian("f = x_i A_ij x_j", "x", layout=layout)(x=a, A=A)
    np.testing.assert_array_equal(hessian, A + A.T)
    with pytest.raises(einderiv.DifferentiationError, match="layout must be one of numerator, denominator"):
        einderiv.grad("f = x_i x_i", "x", layout="sideways")
