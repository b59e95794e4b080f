"""Models written as programs (``python -m benchmarks.programs [--quick] [--json FILE]``).

Each model is written twice in einderiv: as a multi-statement program, step by step as a textbook
or a training script writes it (``z_n = X_nd w_d; s_n = sigmoid(z_n); L = ...``), and as one
statement with every intermediate substituted. Both derivatives are checked against a
hand-written NumPy closed form (float64, rtol 1e-8) and, where jax is installed, so is ``jax.jit``
of jax's autodiff; then the four are timed side by side, one call of each in turn per repetition,
and the table gives the median per call and the ratios. The floors of the issue are printed as met
or not met; nothing here is tuned to meet them, and nothing about speed is asserted in the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import einderiv
from benchmarks.run import cores_line, format_seconds

RTOL = 1e-8


@dataclass
class ProgramCase:
    name: str
    size: str
    program: str  # step by step
    statement: str  # the same model as one statement
    wrt: list[str]  # ["w", "w"] is the Hessian
    arrays: dict
    hand: Callable[[], np.ndarray]
    #: the loss written with jax.numpy, f(xp, wrt_array, **the other arrays)
    peer_function: Callable | None = None
    peer_kind: str = "grad"  # grad, hessian or third


def _rng():
    return np.random.default_rng(0)


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def _softmax_rows(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _n(base: int, scale: float, least: int = 3) -> int:
    return max(least, int(base * scale))


# -- logistic regression: gradient, Hessian, third derivative ------------------------------------

LOGISTIC_PROGRAM = "z_n = X_nd w_d; s_n = sigmoid(z_n); L = -y_n log(s_n) - (1 - y_n) log(1 - s_n)"
LOGISTIC_STATEMENT = "L = -y_n log(sigmoid(X_nd w_d)) - (1 - y_n) log(1 - sigmoid(X_nd w_d))"


def _logistic_arrays(N, D):
    rng = _rng()
    X = rng.normal(size=(N, D)) / np.sqrt(D)
    return {"X": X, "y": (rng.random(N) > 0.5).astype(float), "w": rng.normal(size=D)}


def _logistic_loss(xp, w, X, y):
    z = X @ w
    return (xp.logaddexp(0.0, -z) * y + xp.logaddexp(0.0, z) * (1 - y)).sum()


def logistic_gradient(scale):
    N, D = _n(20000, scale), _n(100, scale, 2)
    a = _logistic_arrays(N, D)
    X, y, w = a["X"], a["y"], a["w"]
    return ProgramCase(
        "logistic regression, gradient",
        f"N={N}, D={D}",
        LOGISTIC_PROGRAM,
        LOGISTIC_STATEMENT,
        ["w"],
        a,
        lambda: X.T @ (_sigmoid(X @ w) - y),
        _logistic_loss,
        "grad",
    )


def logistic_hessian(scale):
    N, D = _n(20000, scale), _n(50, scale, 2)
    a = _logistic_arrays(N, D)
    X, w = a["X"], a["w"]

    def hand():
        s = _sigmoid(X @ w)
        return X.T @ ((s * (1 - s))[:, None] * X)

    return ProgramCase(
        "logistic regression, Hessian",
        f"N={N}, D={D}",
        LOGISTIC_PROGRAM,
        LOGISTIC_STATEMENT,
        ["w", "w"],
        a,
        hand,
        _logistic_loss,
        "hessian",
    )


def logistic_third(scale):
    N, D = _n(2000, scale), _n(20, scale, 2)
    a = _logistic_arrays(N, D)
    X, w = a["X"], a["w"]

    def hand():
        s = _sigmoid(X @ w)
        c = s * (1 - s) * (1 - 2 * s)
        XX = (X[:, :, None] * X[:, None, :]).reshape(N, D * D)
        return ((c[:, None] * X).T @ XX).reshape(D, D, D)

    return ProgramCase(
        "logistic regression, third derivative",
        f"N={N}, D={D}",
        LOGISTIC_PROGRAM,
        LOGISTIC_STATEMENT,
        ["w", "w", "w"],
        a,
        hand,
        _logistic_loss,
        "third",
    )


# -- softmax regression ------------------------------------------------------------------------


def softmax_regression(scale):
    N, D, K = _n(5000, scale), _n(100, scale, 2), 10
    rng = _rng()
    X, W = rng.normal(size=(N, D)) / np.sqrt(D), rng.normal(size=(D, K))
    Y = np.eye(K)[rng.integers(0, K, size=N)]

    def hand():  # the rows of Y sum to one
        return X.T @ (_softmax_rows(X @ W) - Y)

    def loss(xp, W, X, Y):
        Z = X @ W
        return -(Y * Z).sum() + jax_logsumexp(Z, axis=1).sum()

    return ProgramCase(
        "softmax regression (cross-entropy), gradient wrt W",
        f"N={N}, D={D}, K={K}",
        "Z_nk = X_nd W_dk; P_nk = softmax_k(Z_nk); L = -Y_nk log(P_nk)",
        "L = -Y_nk log(softmax_k(X_nd W_dk))",
        ["W"],
        {"X": X, "W": W, "Y": Y},
        hand,
        loss,
        "grad",
    )


def jax_logsumexp(Z, axis):
    import jax.scipy.special

    return jax.scipy.special.logsumexp(Z, axis=axis)


# -- two-layer networks ------------------------------------------------------------------------


def _two_layer(scale, activation: str):
    N, D, H, K = _n(2000, scale), _n(100, scale, 2), _n(200, scale, 2), 10
    rng = _rng()
    X, W1, b, W2, Y = (rng.normal(size=s) * 0.3 for s in [(N, D), (D, H), (H,), (H, K), (N, K)])
    if activation == "tanh":
        act, dact = np.tanh, lambda A, Hd: 1 - Hd**2
    else:
        act, dact = (lambda A: np.maximum(A, 0)), (lambda A, Hd: (A > 0).astype(float))

    def hand():
        A = X @ W1 + b
        Hd = act(A)
        R = 2 * (Hd @ W2 - Y)
        return X.T @ ((R @ W2.T) * dact(A, Hd))

    def loss(xp, W1, X, b, W2, Y):
        A = X @ W1 + b
        Hd = xp.tanh(A) if activation == "tanh" else xp.maximum(A, 0.0)
        return ((Hd @ W2 - Y) ** 2).sum()

    return ProgramCase(
        f"two-layer {activation} network, gradient wrt W1",
        f"N={N}, D={D}, H={H}, K={K}",
        f"A_nj = X_ni W1_ij + b_j; H_nj = {activation}(A_nj); O_nk = H_nj W2_jk; R_nk = O_nk - Y_nk; L = R_nk R_nk",
        f"L = ({activation}(X_ni W1_ij + b_j) W2_jk - Y_nk)^2",
        ["W1"],
        {"X": X, "W1": W1, "b": b, "W2": W2, "Y": Y},
        hand,
        loss,
        "grad",
    )


def two_layer_tanh(scale):
    return _two_layer(scale, "tanh")


def two_layer_relu(scale):
    return _two_layer(scale, "relu")


# -- Gaussian log-likelihood -------------------------------------------------------------------

GAUSSIAN_PROGRAM = "r_nd = x_nd - m_d; q_n = r_nd inv(S)_de r_ne; L = -0.5 N logdet(S) - 0.5 q_n"
GAUSSIAN_STATEMENT = "L = -0.5 N logdet(S) - 0.5 (x_nd - m_d) inv(S)_de (x_ne - m_e)"


def _gaussian_arrays(scale):
    N, D = _n(20000, scale), _n(50, scale, 2)
    rng = _rng()
    B = rng.normal(size=(D, D))
    S = B @ B.T / D + np.eye(D)
    m = rng.normal(size=D)
    x = rng.multivariate_normal(m, S, size=N)
    return N, D, {"x": x, "m": m, "S": S, "N": np.float64(N)}


def _gaussian_loss(xp, first, **others):
    values = dict(others, **{"m" if "S" in others else "S": first})
    x, m, S, N = values["x"], values["m"], values["S"], values["N"]
    r = x - m
    return -0.5 * N * xp.linalg.slogdet(S)[1] - 0.5 * (r * xp.linalg.solve(S, r.T).T).sum()


def gaussian_mean(scale):
    N, D, a = _gaussian_arrays(scale)
    x, m, S = a["x"], a["m"], a["S"]

    def hand():
        P = np.linalg.inv(S)
        return 0.5 * (P + P.T) @ (x - m).sum(axis=0)

    return ProgramCase(
        "Gaussian log-likelihood, gradient wrt the mean",
        f"N={N}, D={D}",
        GAUSSIAN_PROGRAM,
        GAUSSIAN_STATEMENT,
        ["m"],
        a,
        hand,
        _gaussian_loss,
        "grad",
    )


def gaussian_covariance(scale):
    N, D, a = _gaussian_arrays(scale)
    x, m, S = a["x"], a["m"], a["S"]

    def hand():  # unconstrained: every entry of S is a variable
        P = np.linalg.inv(S)
        r = x - m
        return -0.5 * N * P.T + 0.5 * P.T @ (r.T @ r) @ P.T

    return ProgramCase(
        "Gaussian log-likelihood, gradient wrt the covariance",
        f"N={N}, D={D}",
        GAUSSIAN_PROGRAM,
        GAUSSIAN_STATEMENT,
        ["S"],
        a,
        hand,
        _gaussian_loss,
        "grad",
    )


# -- RBF kernel --------------------------------------------------------------------------------


def rbf_kernel_inputs(scale):
    N, M, D = _n(500, scale), _n(400, scale), _n(10, scale, 2)
    rng = _rng()
    X, Z = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    a, b, ell = rng.normal(size=N), rng.normal(size=M), np.float64(1.5)

    def hand():
        sq = (X**2).sum(1)[:, None] + (Z**2).sum(1)[None, :] - 2 * X @ Z.T
        W = a[:, None] * np.exp(-0.5 * sq / ell**2) * b[None, :]
        return (W @ Z - W.sum(axis=1)[:, None] * X) / ell**2

    def loss(xp, X, Z, a, b, ell):
        sq = ((X[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        return a @ xp.exp(-0.5 * sq / ell**2) @ b

    return ProgramCase(
        "RBF kernel a^T K b, gradient wrt the inputs X",
        f"N={N}, M={M}, D={D}",
        "D_ij = (X_id - Z_jd)^2; K_ij = exp(-0.5 D_ij / ell^2); L = a_i K_ij b_j",
        "L = a_i exp(-0.5 sum_d((X_id - Z_jd)^2) / ell^2) b_j",
        ["X"],
        {"X": X, "Z": Z, "a": a, "b": b, "ell": ell},
        hand,
        loss,
        "grad",
    )


# -- matrix factorisation ----------------------------------------------------------------------


def matrix_factorisation(scale):
    M, N, R = _n(1000, scale), _n(500, scale), _n(20, scale, 2)
    rng = _rng()
    Y, U, V = rng.normal(size=(M, N)), rng.normal(size=(M, R)), rng.normal(size=(N, R))

    def loss(xp, U, Y, V):
        return ((Y - U @ V.T) ** 2).sum()

    return ProgramCase(
        "matrix factorisation ||Y - U V^T||^2, gradient wrt U",
        f"M={M}, N={N}, R={R}",
        "P_mn = U_mr V_nr; E_mn = Y_mn - P_mn; L = E_mn E_mn",
        "L = (Y_mn - U_mr V_nr)^2",
        ["U"],
        {"Y": Y, "U": U, "V": V},
        lambda: -2 * (Y - U @ V.T) @ V,
        loss,
        "grad",
    )


# -- attention ---------------------------------------------------------------------------------


def attention(scale):
    T, S, D, E = _n(256, scale), _n(256, scale), _n(64, scale, 2), _n(64, scale, 2)
    rng = _rng()
    Q, K, V, G = rng.normal(size=(T, D)), rng.normal(size=(S, D)), rng.normal(size=(S, E)), rng.normal(size=(T, E))
    c = np.float64(1 / np.sqrt(D))

    def hand():
        A = _softmax_rows(c * Q @ K.T)
        dA = G @ V.T
        dS = A * (dA - (dA * A).sum(axis=1, keepdims=True))
        return c * dS @ K

    def loss(xp, Q, K, V, G, c):
        import jax

        return (jax.nn.softmax(c * Q @ K.T, axis=1) @ V * G).sum()

    return ProgramCase(
        "single-head attention <softmax(c Q K^T) V, G>, gradient wrt Q",
        f"T={T}, S={S}, D={D}, E={E}",
        "S_ij = c Q_id K_jd; A_ij = softmax_j(S_ij); O_ie = A_ij V_je; L = O_ie G_ie",
        "L = softmax_j(c Q_id K_jd) V_je G_ie",
        ["Q"],
        {"Q": Q, "K": K, "V": V, "G": G, "c": c},
        hand,
        loss,
        "grad",
    )


CASES = [
    logistic_gradient,
    logistic_hessian,
    logistic_third,
    softmax_regression,
    two_layer_tanh,
    two_layer_relu,
    gaussian_mean,
    gaussian_covariance,
    rbf_kernel_inputs,
    matrix_factorisation,
    attention,
]


# -- running -----------------------------------------------------------------------------------


class Disagreement(AssertionError):
    """A result that is not the hand-written closed form."""


def agrees(got, expected, rtol: float = RTOL) -> bool:
    got = np.asarray(got)
    if got.shape != expected.shape:
        return False
    atol = rtol * max(1.0, float(np.max(np.abs(expected)))) * 1e-2
    return bool(np.allclose(got, expected, rtol=rtol, atol=atol))


def derive(case: ProgramCase, form: str):
    """The compiled derivative of one form, and the time derive + compile took."""
    start = time.perf_counter()
    derivative = einderiv.diff(getattr(case, form), case.wrt)
    derivative.line  # noqa: B018 - build the straight-line program (part of compiling)
    return derivative, time.perf_counter() - start


def jax_peer(case: ProgramCase):
    """``jax.jit`` of jax's autodiff of the loss, and a runner that waits for its result."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    wrt = case.wrt[0]
    others = [k for k in case.arrays if k != wrt]

    def f(w, *rest):
        return case.peer_function(jnp, w, **dict(zip(others, rest)))

    if case.peer_kind == "grad":
        transform = jax.grad(f)
    elif case.peer_kind == "hessian":
        transform = jax.hessian(f)
    else:
        transform = jax.jacfwd(jax.hessian(f))
    compiled = jax.jit(transform)
    args = [jnp.asarray(case.arrays[wrt])] + [jnp.asarray(case.arrays[k]) for k in others]

    def run():
        return compiled(*args).block_until_ready()

    return run


def check_case(case: ProgramCase, with_jax: bool) -> tuple[dict, dict]:
    """Derive both forms, compare each (and jax) with the hand form; raise Disagreement if one differs.
    Returns the row so far and the functions to time."""
    expected = case.hand()
    row = {"case": case.name, "size": case.size, "kind": case.peer_kind}
    runners = {}
    for form in ("program", "statement"):
        derivative, seconds = derive(case, form)
        row[f"{form}_derive_s"] = seconds
        start = time.perf_counter()
        got = derivative(**case.arrays)
        row[f"{form}_first_call_s"] = time.perf_counter() - start
        if not agrees(got, expected):
            error = np.max(np.abs(np.asarray(got) - expected)) if np.shape(got) == expected.shape else np.shape(got)
            raise Disagreement(f"{case.name}: the {form} form disagrees with the hand form (max error {error})")
        runners[form] = (lambda d: lambda: d(**case.arrays))(derivative)
    runners["hand"] = case.hand
    if with_jax and case.peer_function is not None:
        run = jax_peer(case)
        start = time.perf_counter()
        got = np.asarray(run()).reshape(expected.shape)
        row["jax_compile_s"] = time.perf_counter() - start
        if not agrees(got, expected, rtol=1e-7):
            raise Disagreement(f"{case.name}: jax disagrees with the hand form")
        runners["jax"] = run
    return row, runners


def time_side_by_side(runners: dict, budget: float, min_repeats: int = 7, max_repeats: int = 200) -> dict:
    """One call of each runner in turn per repetition, until the budget is spent; medians.  The
    order rotates from one repetition to the next, so that no runner always follows the same one
    (jax's threads, or a large result, leave the caches and the clock to whoever runs next)."""
    for run in runners.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    start = time.perf_counter()
    repeats = 0
    keys = list(runners)
    while repeats < min_repeats or (time.perf_counter() - start < budget and repeats < max_repeats):
        shift = repeats % len(keys)
        for key in keys[shift:] + keys[:shift]:
            run = runners[key]
            t0 = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t0)
        repeats += 1
    return {k: statistics.median(v) for k, v in times.items()} | {"repeats": repeats}


def run_case(factory, scale: float, with_jax: bool, budget: float) -> dict:
    case = factory(scale)
    row, runners = check_case(case, with_jax)
    # jax in a pass of its own (against the hand form again): its thread pool keeps cores busy
    # after a call returns, which slowed whichever einderiv form ran next by up to 1.4x
    jax_run = runners.pop("jax", None)
    medians = time_side_by_side(runners, budget)
    row["repeats"] = medians.pop("repeats")
    for key, seconds in medians.items():
        row[f"{key}_s"] = seconds
    row["program_over_statement"] = row["program_s"] / row["statement_s"]
    row["program_over_hand"] = row["program_s"] / row["hand_s"]
    row["statement_over_hand"] = row["statement_s"] / row["hand_s"]
    if jax_run is not None:
        peer = time_side_by_side({"hand": runners["hand"], "jax": jax_run}, budget)
        row["jax_s"] = peer["jax"]
        row["jax_over_hand"] = peer["jax"] / peer["hand"]
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| case | size | hand NumPy | program / one-statement | program / hand | one-statement / hand "
        "| jax.jit / hand | derive+compile (program, one-statement) |"
    )
    lines = [head, "|" + " --- |" * 8]
    for r in rows:
        jax = f"{r['jax_over_hand']:.2f}x" if "jax_over_hand" in r else "-"
        lines.append(
            f"| {r['case']} | {r['size']} | {format_seconds(r['hand_s'])} | {r['program_over_statement']:.2f}x | "
            f"{r['program_over_hand']:.2f}x | {r['statement_over_hand']:.2f}x | {jax} | "
            f"{format_seconds(r['program_derive_s'])}, {format_seconds(r['statement_derive_s'])} |"
        )
    return "\n".join(lines)


def floors(rows: list[dict]) -> list[tuple[str, bool | None, str]]:
    """The issue's floors: (what, met (None: not measured), the numbers behind it)."""
    out = []
    ratios = [r["program_over_statement"] for r in rows]
    median = statistics.median(ratios)
    worst = max(rows, key=lambda r: r["program_over_statement"])
    out.append(("program within 1.1x of one-statement (median over cases)", median <= 1.1, f"median {median:.2f}x"))
    out.append(
        (
            "no program over 1.5x of its one-statement form",
            worst["program_over_statement"] <= 1.5,
            f"worst {worst['program_over_statement']:.2f}x ({worst['case']})",
        )
    )
    for form in ("program", "statement"):
        misses = [
            f"{r['case']} {r[f'{form}_over_hand']:.2f}x"
            for r in rows
            if r[f"{form}_over_hand"] > (1.25 if r["hand_s"] > 1e-3 else 2.0)
        ]
        label = "one-statement" if form == "statement" else "program"
        out.append(
            (
                f"{label} within 1.25x of hand NumPy (hand > 1 ms), 2x below",
                not misses,
                "; ".join(misses) or "all",
            )
        )
    for form in ("program", "statement"):
        label = "one-statement" if form == "statement" else "program"
        graded = [r for r in rows if r["kind"] == "grad" and "jax_s" in r]
        # compared through the hand form, which each pass timed beside them
        slower = [
            f"{r['case']} {r[f'{form}_over_hand'] / r['jax_over_hand']:.2f}x"
            for r in graded
            if r[f"{form}_over_hand"] > r["jax_over_hand"]
        ]
        if not graded:
            out.append((f"no gradient ({label}) slower than jax.jit", None, "jax not run"))
            continue
        out.append(
            (f"no gradient ({label}) slower than jax.jit", not slower, "; ".join(slower) or f"all {len(graded)}")
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.programs", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks everything, times nothing useful")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers to FILE")
    parser.add_argument("--no-jax", action="store_true", help="skip jax even when installed")
    parser.add_argument("--only", metavar="TEXT", help="run the cases whose function name contains TEXT")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per case (default 2, quick 0.05)")
    args = parser.parse_args(argv)
    scale = 0.02 if args.quick else 1.0
    budget = args.budget if args.budget is not None else (0.05 if args.quick else 2.0)
    with_jax = not args.no_jax
    if with_jax:
        try:
            import jax  # noqa: F401
        except ImportError:
            with_jax = False
            print("jax is not installed: no jax.jit column", file=sys.stderr)
    einderiv.diff("z_n = X_nd w_d; L = log(z_n)", ["w"]).line  # noqa: B018 - one-time set-up, not a case's derive time
    rows = []
    for factory in CASES:
        if args.only and args.only not in factory.__name__:
            continue
        rows.append(run_case(factory, scale, with_jax, budget))
        print(f"  {rows[-1]['case']}: ok ({rows[-1]['repeats']} repetitions)", file=sys.stderr, flush=True)
    if not rows:
        names = ", ".join(factory.__name__ for factory in CASES)
        print(f"error: no case's function name contains {args.only!r} (the cases: {names})", file=sys.stderr)
        return 2
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"einderiv {einderiv.__version__} program benchmarks ({'quick' if args.quick else 'full'}) on {machine}")
    print(cores_line())
    print(table(rows))
    met = floors(rows)
    print()
    for what, ok, numbers in met:
        print(f"- {what}: {'not measured' if ok is None else 'met' if ok else 'NOT met'} ({numbers})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "quick": args.quick, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
