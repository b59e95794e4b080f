"""Derive + compile times over the expressions of the test suite and the examples
(``python -m benchmarks.compile_times``): median and maximum, first derivatives and Hessians."""

from __future__ import annotations

import statistics
import time

import einderiv

EXPRESSIONS = [
    ("f = a_i x_i", ["x"]),
    ("f = x_i x_i", ["x", "x"]),
    ("f = (x_i a_i)(x_j a_j)", ["x", "x"]),
    ("y_i = A_ij x_j", ["A"]),
    ("y_j = x_i A_ij", ["x"]),
    ("f = x_i A_ij x_j", ["x", "x"]),
    ("f = a_i X_ij b_j", ["X"]),
    ("K_pq = R_mp R_mq", ["R"]),
    ("f = (x_i - A_ij s_j) W_ik (x_k - A_kl s_l)", ["s"]),
    ("L = (y_n - Phi_nd theta_d)(y_n - Phi_ne theta_e)", ["theta", "theta"]),
    ("f = x_i x_i x_j x_j", ["x", "x", "x"]),
    ("e_n = y_n - Phi_nd theta_d; L = e_n e_n", ["theta", "theta"]),
    ("x1 = t cos(t); x2 = t sin(t); h = exp(x1 x2^2)", ["t"]),
    ("z_n = X_nd w_d; s_n = sigmoid(z_n); L = -(y_n log(s_n) + (1 - y_n) log(1 - s_n))", ["w", "w"]),
    ("L = -(y_n log(sigmoid(X_nd w_d)) + (1 - y_n) log(1 - sigmoid(X_nd w_d)))", ["w", "w"]),
    ("z_k = Theta_kd x_d; e_k = exp(z_k); S = sum_j(e_j); p_k = e_k / S; L = -y_k log(p_k)", ["Theta"]),
    ("z_k = Theta_kd x_d; L = -y_k z_k + logsumexp_j(z_j)", ["Theta"]),
    ("h_nj = tanh(X_ni W1_ij + b_j); o_nk = h_nj W2_jk; L = (o_nk - Y_nk)(o_nk - Y_nk)", ["W1"]),
    ("J = theta theta", ["theta"]),
    ("f = a_i inv(X)_ij b_j", ["X", "X"]),
    ("f = logdet(X)", ["X", "X"]),
    ("M_ij = X_ki A_kl X_lj; f = logdet(M)", ["X"]),
    ("r_i = x_i - mu_i; L = -0.5 r_i inv(Sigma)_ij r_j - 0.5 logdet(Sigma)", ["Sigma"]),
    ("M_ij = X_ki X_kj + lam delta_ij; theta_p = inv(M)_pq X_kq y_k", ["lam"]),
    ("f = logsumexp_i(z_i)", ["z", "z"]),
    ("P_nk = softmax_k(Z_nk)", ["Z"]),
    ("E_ab = X_ab - U_ak V_bk; L = E_ab E_ab", ["U", "U"]),
    ("y = (2*x + 1)^4 + x^-0.5", ["x", "x"]),
    ("f = sum_i(tanh(A_ij x_j)) + log(x_k x_k)", ["x", "x"]),
    ("C_ij = a_i + b_j", ["a"]),
]


def measure(repeats: int = 5) -> list[tuple[str, float]]:
    out = []
    for source, wrt in EXPRESSIONS:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            derivative = einderiv.diff(source, wrt)
            derivative.line  # noqa: B018 - building the evaluation program is part of compiling
            times.append(time.perf_counter() - t0)
        out.append((f"{source}  wrt {wrt}", statistics.median(times)))
    return out


#: flat sums of n terms: each kind once with a shared tensor, once with a tensor of its own per term,
#: once with powers (a pass that compared every two terms made 2,000 terms take 12 s to compile)
FLAT_SUMS = {
    "shared": lambda n: " + ".join(f"a{k} x_i x_i" for k in range(n)),
    "own tensors": lambda n: " + ".join(f"a{k} x{k}_i y_i" for k in range(n)),
    "powers": lambda n: " + ".join(f"{k + 1} x_i^{k % 5 + 1}" for k in range(n)),
}


def flat_sums(sizes=(1000, 2000, 4000)) -> list[tuple[str, int, float]]:
    """Compile + gradient time of flat sums by size: doubling the terms should about double it."""
    out = []
    for kind, text in FLAT_SUMS.items():
        for n in sizes:
            t0 = time.perf_counter()
            str(einderiv.grad("f = " + text(n), "y" if kind == "own tensors" else "x"))
            out.append((kind, n, time.perf_counter() - t0))
    return out


def network(layers: int, activation: str = "sigmoid") -> str:
    """A network of ``layers`` hidden layers written step by step, as a training script writes it."""
    letters = "abcefg"
    lines = [f"H1_n{letters[0]} = {activation}(X_nd W1_d{letters[0]})"]
    for k in range(1, layers):
        a, b = letters[k - 1], letters[k]
        lines.append(f"H{k + 1}_n{b} = {activation}(H{k}_n{a} W{k + 1}_{a}{b})")
    last = letters[layers - 1]
    return "; ".join([*lines, f"L = sum_n((H{layers}_n{last} u_{last} - y_n)^2)"])


def nested(depth: int) -> str:
    """``log(1 + u^2)`` applied ``depth`` times to x, step by step."""
    lines = ["u1_i = log(1 + x_i^2)", *(f"u{k}_i = log(1 + u{k - 1}_i^2)" for k in range(2, depth + 1))]
    return "; ".join([*lines, f"L = u{depth}_i u{depth}_i"])


#: Hessians of deep models (the optimiser keyed the rests of every pair of factors of every term
#: for perfect squares, and tried every order of look-alike factors: 35 s for 4 sigmoid layers,
#: 12 s for the classifier, 45 s for 3 layers in one statement before 2026-12-07; the printed
#: factoring built the same sub-sums again for each try: 25 s for log(1 + u^2) five deep before
#: the second session of 2026-12-07), as (name, source, the variable)
DEEP = [
    *((f"{k} sigmoid layers, step by step", network(k), "W1") for k in (1, 2, 3, 4)),
    (
        "3 tanh layers with biases and a softmax cross-entropy",
        "H_na = tanh(X_nd W1_da + b1_a); G_nb = tanh(H_na W2_ab + b2_b); F_nc = tanh(G_nb W3_bc + b3_c); "
        "Z_nk = F_nc W4_ck; L = sum_n(logsumexp_k(Z_nk) - Y_nk Z_nk)",
        "W1",
    ),
    (
        "3 sigmoid layers in one statement",
        "L = sum_n((sigmoid(sigmoid(sigmoid(X_nd W1_da) W2_ab) W3_bc) u_c - y_n)^2)",
        "W1",
    ),
    *((f"log(1 + u^2) nested {k} deep, step by step", nested(k), "x") for k in (4, 5)),
]


def deep_hessians() -> list[tuple[str, str, float]]:
    out = []
    for name, source, wrt in DEEP:
        t0 = time.perf_counter()
        einderiv.hessian(source, wrt).line  # noqa: B018 - the evaluation program is part of compiling
        out.append((name, wrt, time.perf_counter() - t0))
    return out


def main() -> int:
    for name, wrt, t in deep_hessians():
        print(f"Hessian by {wrt}, {name}: derived and compiled in {t:.2f} s")
    for kind, n, t in flat_sums():
        print(f"flat sum, {kind}, {n} terms: gradient derived in {t:.2f} s")
    results = measure()
    times = [t for _, t in results]
    for name, t in sorted(results, key=lambda r: -r[1])[:5]:
        print(f"{t * 1e3:8.2f} ms  {name}")
    print(
        f"derive+compile over {len(times)} expressions: median {statistics.median(times) * 1e3:.2f} ms, "
        f"max {max(times) * 1e3:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
