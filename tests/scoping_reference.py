"""An independent reference evaluator of the index-scoping rules, for the property tests.

It evaluates the IR numerically, bottom-up, straight from the rules the README states, with
one ``np.einsum`` per product and no normal form, expansion or renaming:

1. left-hand-side indices are free everywhere;
2. an index of ``sum_R`` or ``mean_R`` is bound in its body (no nested product contracts it);
   ``mean_R`` is ``sum_R`` divided by the sizes of R;
3. otherwise an index is contracted in the smallest product where it occurs twice or more; a
   group (parentheses, a call's argument, a power's base, a divisor) is one factor there, its
   free indices counting once;
4. a sum used as an operand is a tensor over the union of its terms' free indices
   (broadcast); a sum standing alone (the right-hand side, or one of its terms, or either
   scaled by a scalar there) is a list of terms, each summed on its own;
5. what is still free at the top and not on the left-hand side is summed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from einderiv.ir import Add, Call, Delta, Div, MatrixCall, Mul, Neg, Number, Pow, Program, Tensor

ELEMENTWISE = {
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
}


def _full(value, axes, target, size):
    """``value`` over ``axes`` as an array over ``target``, broadcast (materialised) where missing."""
    order = [a for a in target if a in axes]
    value = np.einsum(f"{''.join(axes)}->{''.join(order)}", value) if axes else np.asarray(value)
    value = value.reshape([size if a in axes else 1 for a in target])
    return np.broadcast_to(value, (size,) * len(target))


def _chain(expr):
    """[(factor, is_divisor)] of a product, and its sign: a leading division and a division's
    numerator continue the chain; every other factor is an atom or a group; a leading ``-`` is
    a sign.  This is how the IR spells text (``a / b c`` is Mul((Div(a, b), c)), ``(a / b) c``
    wraps the division in a one-factor Mul), so it necessarily reads the IR as einderiv's lowering
    does; the round-trip properties check that text and IR agree, and the rules above are what
    this module evaluates independently."""
    if isinstance(expr, Mul) and len(expr.factors) > 1:
        head, *rest = expr.factors
        sign, factors = _chain(head) if isinstance(head, Div) else _head(head)
        return sign, factors + [(f, False) for f in rest]
    if isinstance(expr, Div):
        num = expr.numerator
        chained = isinstance(num, Div) or (isinstance(num, Mul) and len(num.factors) > 1)
        sign, factors = _chain(num) if chained else _head(num)
        return sign, factors + [(expr.denominator, True)]
    return 1.0, [(expr, False)]


def _head(factor):
    sign = 1.0
    while isinstance(factor, Neg):
        sign, factor = -sign, factor.operand
    return sign, [(factor, False)]


class Reference:
    def __init__(self, arrays: dict, size: int):
        self.arrays = arrays
        self.size = size

    def operand(self, atom):
        if isinstance(atom, Delta):
            return np.eye(self.size)
        if isinstance(atom, Number):
            return np.asarray(float(atom.value))
        if isinstance(atom, MatrixCall):
            m = self.arrays[atom.matrix]
            return {"inv": np.linalg.inv, "det": np.linalg.det}[atom.func](m)
        return self.arrays[atom.name]

    def group(self, expr, bound: frozenset) -> tuple[np.ndarray, list[str]]:
        """(value, free axes) of ``expr`` used as an operand."""
        if isinstance(expr, Neg):
            value, axes = self.group(expr.operand, bound)
            return -value, axes
        if isinstance(expr, Add):
            parts = [self.group(t, bound) for t in expr.terms]
            axes = list(dict.fromkeys(a for _, ax in parts for a in ax))
            return sum(_full(v, ax, axes, self.size) for v, ax in parts), axes
        if isinstance(expr, Mul) and len(expr.factors) == 1:
            return self.group(expr.factors[0], bound)
        if isinstance(expr, Pow):
            value, axes = self.group(expr.base, bound)
            return value ** float(expr.exponent), axes
        if isinstance(expr, Call) and not expr.over:
            value, axes = self.group(expr.arg, bound)
            return ELEMENTWISE[expr.func](value), axes
        if isinstance(expr, Call):
            if expr.func not in ("sum", "mean"):
                raise NotImplementedError(expr.func)
            value, axes = self.group(expr.arg, bound | set(expr.over))
            full = axes + [r for r in expr.over if r not in axes]
            value = _full(value, axes, full, self.size)
            out = [a for a in full if a not in expr.over]
            total = np.einsum(f"{''.join(full)}->{''.join(out)}", value)
            return (total / self.size ** len(expr.over) if expr.func == "mean" else total), out
        return self.product(expr, bound)

    def product(self, expr, bound: frozenset) -> tuple[np.ndarray, list[str]]:
        operands, subscripts = [], []
        sign, chain = _chain(expr)
        for factor, divisor in chain:
            if isinstance(factor, (Tensor, Delta, MatrixCall, Number)) and not divisor:
                operands.append(self.operand(factor))
                subscripts.append(list(getattr(factor, "indices", ())))
            else:
                value, axes = self.group(factor, bound)
                operands.append(1 / value if divisor else value)
                subscripts.append(axes)
        counts = Counter(i for s in subscripts for i in s)
        out = [i for i in dict.fromkeys(i for s in subscripts for i in s) if counts[i] == 1 or i in bound]
        spec = ",".join("".join(s) for s in subscripts) + "->" + "".join(out)
        return sign * np.einsum(spec, *operands), out

    def statement_value(self, rhs, lhs: tuple[str, ...]) -> np.ndarray:
        """Rule 4 at the top: a sum standing alone (nested sums, signs, and scaling by a scalar
        included) is the total of its terms, each summed on its own."""
        if isinstance(rhs, Add):
            return sum(self.statement_value(t, lhs) for t in rhs.terms)
        if isinstance(rhs, Neg):
            return -self.statement_value(rhs.operand, lhs)
        if isinstance(rhs, Mul) and len(rhs.factors) == 1:
            return self.statement_value(rhs.factors[0], lhs)
        if isinstance(rhs, Div) or isinstance(rhs, Mul):
            scaled = self._scaled(rhs, lhs)
            if scaled is not None:
                return scaled
        value, axes = self.group(rhs, frozenset(lhs))
        kept = [a for a in axes if a in lhs]
        value = np.einsum(f"{''.join(axes)}->{''.join(kept)}", value) if axes else value
        return _full(value, kept, list(lhs), self.size)

    def _scaled(self, expr, lhs):
        """A product of scalars and one factor that is a sum standing alone: the scalars' total
        times that factor's value at the top, or None when the other factors are not scalars."""
        sign, chain = _chain(expr)
        parts = []
        for factor, divisor in chain:
            if isinstance(factor, (Tensor, Delta, MatrixCall, Number)) and not divisor:
                parts.append((self.operand(factor), list(getattr(factor, "indices", ()))))
            else:
                value, axes = self.group(factor, frozenset(lhs))
                parts.append((1 / value if divisor else value, axes))
        for pos, (factor, divisor) in enumerate(chain):
            if divisor or not _sum_like(factor):
                continue
            others = [p for k, p in enumerate(parts) if k != pos]
            counts = Counter(i for _, axes in others for i in axes)
            if any(c < 2 or i in lhs or i in parts[pos][1] for i, c in counts.items()):
                continue
            spec = ",".join("".join(axes) for _, axes in others) + "->"
            scale = np.einsum(spec, *(v for v, _ in others)) if others else 1.0
            return sign * scale * self.statement_value(factor, lhs)
        return None


def _sum_like(expr) -> bool:
    """A sum, a signed or parenthesised one, or a product holding one: what rule 4 may split."""
    while isinstance(expr, Neg) or (isinstance(expr, Mul) and len(expr.factors) == 1):
        expr = expr.operand if isinstance(expr, Neg) else expr.factors[0]
    if isinstance(expr, Add):
        return True
    if isinstance(expr, (Mul, Div)):
        return any(not divisor and _sum_like(f) for f, divisor in _chain(expr)[1])
    return False


def evaluate_program(program: Program, arrays: dict, size: int, output: str = "f") -> np.ndarray:
    """The value of ``output`` after running every statement of ``program`` in order."""
    values = dict(arrays)
    reference = Reference(values, size)
    for statement in program.statements:
        values[statement.target.name] = reference.statement_value(statement.rhs, statement.target.indices)
    return values[output]
