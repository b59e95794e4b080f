"""Property tests over generated expressions with functions, powers, division, reductions and
two-statement programs, against an independent reference evaluator written from the language's
scoping rules (not from einderiv's lowering)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import einderiv
from einderiv.ir import Add, Call, Delta, Div, Mul, Neg, Number, Pow, Program, Statement, Tensor
from einderiv.lower import normalize
from einderiv.normal import equivalent
from tests.generation import call_or_reject, compile_or_reject, flat_add, flat_mul
from tests.helpers import assert_matches_fd

RANKS = {"s": 0, "a": 1, "b": 1, "A": 2}
LETTERS = "ijk"
SIZE = 3
EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUNCTIONS = {
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "exp": np.exp,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
}


def _leaves(ranks):
    tensors = st.sampled_from(sorted(ranks)).flatmap(
        lambda name: st.lists(st.sampled_from(LETTERS), min_size=ranks[name], max_size=ranks[name]).map(
            lambda idx: Tensor(name, tuple(idx))
        )
    )
    numbers = st.sampled_from([Fraction(1), Fraction(2), Fraction(1, 2)]).map(Number)
    deltas = st.tuples(st.sampled_from(LETTERS), st.sampled_from(LETTERS)).map(lambda p: Delta(*p))
    return st.one_of(tensors, tensors, tensors, numbers, deltas)


def _expressions(ranks):
    return st.recursive(
        _leaves(ranks),
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(flat_add),
            st.lists(children, min_size=2, max_size=3).map(flat_mul),
            children.map(Neg),
            st.tuples(st.sampled_from(sorted(FUNCTIONS)), children).map(lambda p: Call(p[0], p[1])),
            st.tuples(children, st.sampled_from([Fraction(2), Fraction(3)])).map(lambda p: Pow(*p)),
            st.tuples(children, children).map(lambda p: Div(p[0], Add((Number(Fraction(2)), Call("tanh", p[1]))))),
            st.tuples(st.sampled_from(LETTERS), children).map(lambda p: Call("sum", p[1], (p[0],))),
        ),
        max_leaves=6,
    )


def _written(expr) -> list[str]:
    from einderiv.lower import surface_indices

    return surface_indices(expr)


@st.composite
def programs(draw):
    """One statement, or an intermediate ``t`` and a statement using it."""
    statements = []
    ranks = dict(RANKS)
    if draw(st.booleans()):
        rhs = draw(_expressions(RANKS))
        used = _written(rhs)
        count = draw(st.integers(0, min(1, len(used))))
        out = tuple(draw(st.permutations(used))[:count]) if used else ()
        statements.append(Statement(Tensor("t", out), rhs))
        ranks["t"] = len(out)
    rhs = draw(_expressions(ranks))
    used = _written(rhs)
    count = draw(st.integers(0, min(1, len(used))))
    out = tuple(draw(st.permutations(used))[:count]) if used else ()
    statements.append(Statement(Tensor("f", out), rhs))
    return Program(tuple(statements))


# -- the reference: a direct recursive evaluation of the scoping rules --------------------------


def _align(value, axes, target):
    """An array over ``axes`` (a list of names) as an array over ``target`` (broadcast where missing)."""
    if not axes:
        return np.asarray(value).reshape((1,) * len(target))
    order = [a for a in target if a in axes]
    value = np.einsum(f"{''.join(axes)}->{''.join(order)}", value)
    return value.reshape([SIZE if a in axes else 1 for a in target])


def ev(expr, keep: set[str], arrays):
    """(array, axes): the value of an annotated, distributed expression over its written
    indices that are in ``keep``."""
    if isinstance(expr, Number):
        return np.asarray(float(expr.value)), []
    if isinstance(expr, (Tensor, Delta)):
        operand = np.eye(SIZE) if isinstance(expr, Delta) else arrays[expr.name]
        axes = [i for i in dict.fromkeys(expr.indices) if i in keep]
        return np.einsum(f"{''.join(expr.indices)}->{''.join(axes)}", operand), axes
    if isinstance(expr, Neg):
        value, axes = ev(expr.operand, keep, arrays)
        return -value, axes
    if isinstance(expr, Add):
        parts = [ev(t, keep, arrays) for t in expr.terms]
        axes = list(dict.fromkeys(a for _, ax in parts for a in ax))
        return sum(_align(v, ax, axes) for v, ax in parts), axes
    if isinstance(expr, Mul):
        names = [scoped_written(f) for f in expr.factors]
        values = []
        for k, f in enumerate(expr.factors):
            inner = set(keep) | {i for j, w in enumerate(names) if j != k for i in w}
            values.append(ev(f, inner, arrays))
        every = list(dict.fromkeys(a for _, ax in values for a in ax))
        out = [a for a in every if a in keep]
        subscripts = ",".join("".join(ax) for _, ax in values) + "->" + "".join(out)
        return np.einsum(subscripts, *[v for v, _ in values]), out
    if isinstance(expr, Scoped):
        value, axes = ev(expr.arg, set(expr.free), arrays)
        value = _align(value, axes, list(expr.free))
        if expr.func == "pow":
            value = value**expr.exponent
        else:
            value = FUNCTIONS[expr.func](value)
        return value, list(expr.free)
    if isinstance(expr, Call):  # sum_R
        value, axes = ev(expr.arg, set(keep) | set(expr.over), arrays)
        full = axes + [r for r in expr.over if r not in axes]
        value = _align(value, axes, full) * np.ones([1] * len(axes) + [SIZE] * (len(full) - len(axes)))
        out = [a for a in full if a not in expr.over]
        return np.einsum(f"{''.join(full)}->{''.join(out)}", value), out
    raise TypeError(expr)


def scoped_written(expr) -> list[str]:
    """Written indices of an annotated expression (a scoped call shows its free indices)."""
    if isinstance(expr, Scoped):
        return list(expr.free)
    if isinstance(expr, Mul):
        return list(dict.fromkeys(i for f in expr.factors for i in scoped_written(f)))
    if isinstance(expr, Add):
        return list(dict.fromkeys(i for f in expr.terms for i in scoped_written(f)))
    if isinstance(expr, Neg):
        return scoped_written(expr.operand)
    if isinstance(expr, Call):
        return [i for i in scoped_written(expr.arg) if i not in expr.over]
    return written(expr)


@dataclass(frozen=True)
class Scoped:
    """A call, power or divisor whose free indices the text has fixed (see ``annotate``)."""

    func: str
    arg: object
    free: tuple
    exponent: float = 1.0


def written(expr) -> list[str]:
    """Index names written in ``expr``, less those bound by ``sum_R``."""
    if isinstance(expr, (Tensor, Delta)):
        return list(dict.fromkeys(expr.indices))
    if isinstance(expr, Number):
        return []
    if isinstance(expr, Neg):
        return written(expr.operand)
    if isinstance(expr, (Add, Mul)):
        parts = expr.terms if isinstance(expr, Add) else expr.factors
        return list(dict.fromkeys(i for p in parts for i in written(p)))
    if isinstance(expr, Div):
        return list(dict.fromkeys(written(expr.numerator) + written(expr.denominator)))
    if isinstance(expr, Pow):
        return written(expr.base)
    if isinstance(expr, Call):
        return [i for i in written(expr.arg) if i not in expr.over]
    raise TypeError(expr)


def annotate(expr, context: set[str]):
    """Fix the scope of every call from the text: an index of its argument is free when it is
    written outside the call in the same product (or is in the context), else summed inside."""
    if isinstance(expr, (Number, Tensor, Delta)):
        return expr
    if isinstance(expr, Neg):
        return Neg(annotate(expr.operand, context))
    if isinstance(expr, Add):
        return Add(tuple(annotate(t, context) for t in expr.terms))
    if isinstance(expr, Mul):
        names = [written(f) for f in expr.factors]
        return Mul(
            tuple(
                annotate(f, context | {i for j, w in enumerate(names) if j != k for i in w})
                for k, f in enumerate(expr.factors)
            )
        )
    if isinstance(expr, Div):
        num_names, den_names = written(expr.numerator), written(expr.denominator)
        free = tuple(i for i in den_names if i in context or i in num_names)
        divisor = Scoped("pow", annotate(expr.denominator, set(free)), free, -1.0)
        return Mul((annotate(expr.numerator, context | set(den_names)), divisor))
    if isinstance(expr, Pow):
        free = tuple(i for i in written(expr.base) if i in context)
        return Scoped("pow", annotate(expr.base, set(free)), free, float(expr.exponent))
    if isinstance(expr, Call) and expr.over:
        return Call("sum", annotate(expr.arg, context | set(expr.over)), expr.over)
    if isinstance(expr, Call):
        free = tuple(i for i in written(expr.arg) if i in context)
        return Scoped(expr.func, annotate(expr.arg, set(free)), free)
    raise TypeError(expr)


def distribute(expr):
    """Multiply products of sums out (einsum semantics hold per term of the expanded sum);
    scoped calls and reductions are distributed inside, not across."""
    if isinstance(expr, Neg):
        inner = distribute(expr.operand)
        return Add(tuple(Neg(t) for t in inner.terms)) if isinstance(inner, Add) else Neg(inner)
    if isinstance(expr, Add):
        terms = []
        for t in expr.terms:
            t = distribute(t)
            terms.extend(t.terms if isinstance(t, Add) else [t])
        return Add(tuple(terms))
    if isinstance(expr, Mul):
        products = [[]]
        for f in expr.factors:
            f = distribute(f)
            options = f.terms if isinstance(f, Add) else (f,)
            products = [p + [o] for p in products for o in options]
        terms = tuple(Mul(tuple(p)) if len(p) > 1 else p[0] for p in products)
        return Add(terms) if len(terms) > 1 else terms[0]
    if isinstance(expr, Scoped):
        return Scoped(expr.func, distribute(expr.arg), expr.free, expr.exponent)
    if isinstance(expr, Call):
        return Call(expr.func, distribute(expr.arg), expr.over)
    return expr


def reference(program: Program, arrays: dict) -> np.ndarray:
    values = dict(arrays)
    for statement in program.statements:
        out = list(statement.target.indices)
        value, axes = ev(distribute(annotate(statement.rhs, set(out))), set(out), values)
        values[statement.target.name] = np.broadcast_to(_align(value, axes, out), (SIZE,) * len(out))
    return values["f"]


def random_arrays(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: 0.5 * rng.normal(size=(SIZE,) * rank) for name, rank in RANKS.items()}


# -- properties -------------------------------------------------------------------------------------


@SETTINGS
@given(programs())
def test_printing_round_trips(program):
    assert einderiv.parse(str(program)) == program


@SETTINGS
@given(programs(), st.integers(0, 2**16))
def test_value_matches_the_reference(program, seed):
    compiled = compile_or_reject(program)
    full = random_arrays(seed)
    arrays = {k: v for k, v in full.items() if k in compiled.ranks}
    value = call_or_reject(compiled, **arrays)
    np.testing.assert_allclose(value, reference(program, full), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(programs(), st.integers(0, 2**16), st.data())
def test_derivatives_match_finite_differences(program, seed, data):
    compiled = compile_or_reject(program)
    if not compiled.ranks:
        reject()
    full = random_arrays(seed)
    arrays = {k: v for k, v in full.items() if k in compiled.ranks}
    wrt = data.draw(st.sampled_from(sorted(compiled.ranks)), label="wrt")
    first = einderiv.diff(program, wrt)
    call_or_reject(first, **arrays)
    assert_matches_fd(first, lambda **k: reference(program, {**full, **k}), arrays, wrt, rtol=1e-5)
    reread = einderiv.parse(str(first)).output
    assert equivalent(normalize(reread.rhs, first.indices), first.expr)

    wrt2 = data.draw(st.sampled_from(sorted(compiled.ranks)), label="wrt2")
    second = einderiv.diff(program, [wrt, wrt2])
    call_or_reject(second, **arrays)
    assert_matches_fd(second, first, arrays, wrt2, rtol=1e-5)
