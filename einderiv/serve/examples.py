"""The examples menu of the page: textbook derivatives the project reproduces (README.md and
``examples/``), each a state of the page."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Example:
    """A state of the page: the expression, what to differentiate by, and where it comes from."""

    key: str  # its name in the menu's value, letters and dashes
    title: str
    expr: str
    wrt: tuple[str, ...] = ()
    order: int = 1
    each: tuple[str, ...] = ()  # the gradient by each of these names, instead of wrt
    claim: str = ""
    source: str = ""

    def json(self) -> dict:
        return {**asdict(self), "wrt": list(self.wrt), "each": list(self.each)}

    def query(self, kind: str = "diff") -> dict:
        """The parameters of ``/api/diff`` (or ``/api/check``, the claim too) that the page sends
        for this example: ``{"expr": ..., "wrt": [...], "order": 2}``."""
        out: dict = {"expr": self.expr}
        if self.each:
            out["each"] = list(self.each)
        else:
            out["wrt"] = list(self.wrt)
            if self.order > 1:
                out["order"] = self.order
        if kind == "check" and self.claim:
            out["claim"] = self.claim
        return out


LOGISTIC = "L = -(y_n log(sigmoid(X_nd w_d)) + (1 - y_n) log(1 - sigmoid(X_nd w_d)))"

EXAMPLES = (
    Example("gram", "K = RᵀR: dK/dR (rank 4)", "K_pq = R_mp R_mq", ("R",), source="README.md, quick start"),
    Example("quadratic", "xᵀAx: the gradient", "f = x_i A_ij x_j", ("x",), source="examples/matrix_calculus_tour.py"),
    Example("quadratic-hessian", "xᵀAx: the Hessian", "f = x_i A_ij x_j", ("x",), order=2),
    Example(
        "quadratic-matrix",
        "xᵀAx in matrix notation, with a claim",
        "f = x^T A x",
        ("x",),
        claim="A x + A^T x",
        source="README.md, matrix notation as input",
    ),
    Example(
        "least-squares",
        "least squares: dL/dθ",
        "e_n = y_n - Phi_nd theta_d; L = e_n e_n",
        ("theta",),
        source="examples/least_squares.py",
    ),
    Example(
        "logistic", "logistic regression: the gradient", LOGISTIC, ("w",), source="examples/logistic_regression.py"
    ),
    Example("logistic-hessian", "logistic regression: the Hessian", LOGISTIC, ("w",), order=2),
    Example(
        "softmax",
        "softmax regression: dL/dΘ",
        "z_k = Theta_kd x_d; f = -y_k z_k + logsumexp_k(z_k)",
        ("Theta",),
        source="examples/softmax_regression.py",
    ),
    Example(
        "chain-rule",
        "the chain rule: dh/dt, h = exp(x₁x₂²)",
        "x1 = t cos(t); x2 = t sin(t); h = exp(x1 x2^2)",
        ("t",),
        source="examples/chain_rule.py (Mathematics for Machine Learning, ch. 5)",
    ),
    Example("logdet", "log det X: d/dX", "f = logdet(X)", ("X",), source="README.md, language reference"),
    Example("third-order", "a third derivative: exp(xᵀx)", "f = exp(x_i x_i)", ("x",), order=3),
    Example(
        "network",
        "a tanh network: the gradient by each parameter",
        "h_nj = tanh(X_ni W1_ij + b_j); o_nk = h_nj W2_jk; L = (o_nk - Y_nk)(o_nk - Y_nk)",
        each=("W1", "b", "W2"),
        source="examples/two_layer_network.py",
    ),
)
