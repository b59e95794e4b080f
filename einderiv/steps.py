"""The evaluation program: a straight line of typed steps, each computing one named array from
earlier names (inputs, statements, temporaries ``_t3``).

One frozen dataclass per kind of step; the optimiser (:class:`einderiv.optimiser.StraightLine`)
produces them, and three interpreters, each a table keyed by the step's class, run them: NumPy
(:data:`einderiv.runtime.NUMPY_INSTRUCTIONS`), the other array libraries
(:data:`einderiv.runtime.GENERIC_STEPS`) and code generation (:data:`einderiv.codegen.CODE_FOR`).

- :class:`Contract`: a sum of einsum terms (:class:`einderiv.contraction.Contraction`);
- :class:`Elementwise`: f(source) for a function of the registry, or ``pow`` with ``param``;
- :class:`MatrixFunction`: inv, det, logdet or logabsdet of the square matrix ``source``;
- :class:`Solve`: inv(``source``) ``operand`` (``solve``) or inv(``source``)ᵀ ``operand``
  (``solve_transposed``), by a linear solve;
- :class:`Softmax`: exp(v) normalised over the axes ``axes[0]`` of ``source``;
- :class:`LogSumExp`: log Σ exp(v) over the axes ``axes[0]``, the kept axes in the order ``axes[1]``;
- :class:`LogSoftmax`: v - log Σ exp(v) over the axes ``axes[0]`` of ``source``, its axes kept;
- :class:`SoftmaxComplement`: 1 - p for the values p of a softmax over the axes ``axes[0]``,
  without cancelling where p rounds to 1;
- :class:`SoftmaxCentred`: x - Σ p x for the values p of a softmax and an array x of p's
  shape (a softmax's VJP and HVP), without cancelling where p rounds to 1;
- :class:`LogOneMinusExp`: log(1 - exp(v)) elementwise, exact far below 0 and near it.

Every step has the attributes of every kind, ``None`` (or False) where they do not apply, so
code that filters steps (``step.contraction is not None``) reads any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar


@dataclass(frozen=True)
class Step:
    """One step: ``target`` computed from earlier names (build steps with keywords:
    ``Elementwise("s", func="sigmoid", source="z")``)."""

    target: str
    kind: ClassVar[str] = ""
    #: defaults of the other kinds' fields, so a filter over steps reads any step
    contraction: ClassVar[Any] = None
    func: ClassVar[str | None] = None
    param: ClassVar[Fraction | None] = None
    source: ClassVar[str | None] = None
    matrix: ClassVar[bool] = False
    axes: ClassVar[tuple | None] = None
    operand: ClassVar[str | None] = None

    def reads(self) -> tuple[str, ...]:
        """The names this step reads."""
        return tuple(name for name in (self.source, self.operand) if name is not None)

    def reads_values(self) -> tuple[str, ...]:
        """The names whose values this step reads (:meth:`reads` less those read for their sizes
        only): the arrays that decide the result's dtype."""
        return self.reads()


@dataclass(frozen=True)
class Contract(Step):
    """``target = Σ coefficient · einsum(subscripts, operands)`` over the terms of ``contraction``."""

    contraction: Any = None
    kind: ClassVar[str] = "contraction"

    def reads(self) -> tuple[str, ...]:
        return tuple(self.contraction.names)

    def reads_values(self) -> tuple[str, ...]:
        return tuple(self.contraction.operand_names)


@dataclass(frozen=True)
class Elementwise(Step):
    """``target = func(source)`` elementwise (``pow``: source ** param)."""

    func: str = ""
    source: str = ""
    param: Fraction | None = None
    kind: ClassVar[str] = "elementwise"


@dataclass(frozen=True)
class MatrixFunction(Step):
    """``target = func(source)``: inv (a matrix), det, logdet or logabsdet (a scalar) of a square matrix."""

    func: str = ""
    source: str = ""
    matrix: ClassVar[bool] = True
    kind: ClassVar[str] = "matrix"


@dataclass(frozen=True)
class Solve(Step):
    """``target = inv(source) operand`` (``func == "solve"``) or ``inv(source)^T operand``
    (``"solve_transposed"``), by a linear solve: cheaper and more accurate than the inverse."""

    func: str = "solve"
    source: str = ""
    operand: str = ""
    matrix: ClassVar[bool] = True
    kind: ClassVar[str] = "solve"

    @property
    def transposed(self) -> bool:
        return self.func == "solve_transposed"


@dataclass(frozen=True)
class Softmax(Step):
    """``target = exp(v) / Σ_axes exp(v)`` of ``source``, shifted by the maximum: no overflow."""

    source: str = ""
    axes: tuple = ((), ())
    func: ClassVar[str] = "softmax"
    kind: ClassVar[str] = "softmax"


@dataclass(frozen=True)
class LogSumExp(Step):
    """``target = log Σ_axes[0] exp(source)``, the kept axes put in the order ``axes[1]``."""

    source: str = ""
    axes: tuple = ((), ())
    func: ClassVar[str] = "logsumexp"
    kind: ClassVar[str] = "logsumexp"


@dataclass(frozen=True)
class LogSoftmax(Step):
    """``target = v - log Σ_axes[0] exp(v)`` of ``source``, as ``(v - max) - log Σ exp(v - max)``:
    where the largest entries tie far from 0 (z = [1e16, 1e16, 0]) v less its logsumexp step
    rounds to 0, and this step gives log(1/2)."""

    source: str = ""
    axes: tuple = ((), ())
    func: ClassVar[str] = "log_softmax"
    kind: ClassVar[str] = "log_softmax"


@dataclass(frozen=True)
class SoftmaxComplement(Step):
    """``target = 1 - source`` for ``source`` the values of a softmax (summing to 1 over the axes
    ``axes[0]``): where an entry is above 1/2 (it is then the one largest), the other entries
    summed, not 1 less it, which is 0 wherever it rounds to 1 (at logits [40, 0, -5], 0 for
    4.3e-18)."""

    source: str = ""
    axes: tuple = ((), ())
    func: ClassVar[str] = "softmax_complement"
    kind: ClassVar[str] = "softmax_complement"


@dataclass(frozen=True)
class SoftmaxCentred(Step):
    """``target = operand - Σ_axes[0] source operand`` for ``source`` the values p of a softmax
    (summing to 1 over the axes ``axes[0]``) and ``operand`` an array x of p's shape: where an
    entry t of p is above 1/2, ``(x - x_t) - Σ p (x - x_t)``, the same number as Σ p = 1, in
    which nothing cancels.  ``x_t - Σ p x`` was 0 wherever p_t rounds to 1: the gradient of
    ``softmax_k(z_k) w_k`` at z = [40, 0, -5], w = [1, 2, 3] had 0 for -4.3e-18 in its first entry."""

    source: str = ""
    operand: str = ""
    axes: tuple = ((), ())
    func: ClassVar[str] = "softmax_centred"
    kind: ClassVar[str] = "softmax_centred"


@dataclass(frozen=True)
class LogOneMinusExp(Step):
    """``target = log(1 - exp(source))``, which the rules write ``log(-expm1(v))``, as Mächler's
    log1mexp: ``log(-expm1(v))`` where v > -log 2 and ``log1p(-exp(v))`` below, each exact where
    the other is not (-expm1(v) rounds to 1 far below 0: log(-expm1(-40)) is 0 for -4.2e-18)."""

    source: str = ""
    func: ClassVar[str] = "log1mexp"
    kind: ClassVar[str] = "log1mexp"


def values_read(steps) -> set[str]:
    """The names whose values ``steps`` read, or, where they read values of none (a count, a
    delta), those they read for their sizes: the arrays that decide a result's dtype."""
    return {n for step in steps for n in step.reads_values()} or {n for step in steps for n in step.reads()}


#: every kind of step: each interpreter has an entry for each (tests/test_steps.py checks)
STEP_KINDS: tuple[type[Step], ...] = (
    Contract,
    Elementwise,
    MatrixFunction,
    Solve,
    Softmax,
    LogSumExp,
    LogSoftmax,
    SoftmaxComplement,
    SoftmaxCentred,
    LogOneMinusExp,
)

__all__ = [
    "STEP_KINDS",
    "Contract",
    "Elementwise",
    "LogOneMinusExp",
    "LogSoftmax",
    "LogSumExp",
    "MatrixFunction",
    "Softmax",
    "SoftmaxCentred",
    "SoftmaxComplement",
    "Solve",
    "Step",
    "values_read",
]
