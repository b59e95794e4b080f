"""Property tests over generated expressions with functions, powers, division, reductions and
two-statement programs, against an independent reference evaluator written from the language's
scoping rules (not from einderiv's lowering)."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import einderiv
from einderiv.ir import Add, Call, Delta, Div, Mul, Neg, Number, Pow, Program, Statement, Tensor, walk
from tests.generation import call_or_reject, compile_or_reject, flat_add, flat_mul
from tests.helpers import assert_matches_fd, assert_printed_reads_back
from tests.scoping_reference import evaluate_program

RANKS = {"s": 0, "a": 1, "b": 1, "A": 2}
LETTERS = "ijk"
SIZE = 3
EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUNCTIONS = ("sin", "cos", "tanh", "exp", "sigmoid", "softplus")


def _leaves(ranks):
    tensors = st.sampled_from(sorted(ranks)).flatmap(
        lambda name: st.lists(st.sampled_from(LETTERS), min_size=ranks[name], max_size=ranks[name]).map(
            lambda idx: Tensor(name, tuple(idx))
        )
    )
    numbers = st.sampled_from([Fraction(1), Fraction(2), Fraction(1, 2)]).map(Number)
    deltas = st.tuples(st.sampled_from(LETTERS), st.sampled_from(LETTERS)).map(lambda p: Delta(*p))
    return st.one_of(tensors, tensors, tensors, numbers, deltas)


def _reduction(child):
    """sum or mean over a letter the child writes (``sum_j(x_i)`` is an error: nothing gives j a
    length); the mean of a child that writes none, which is the child at any length."""
    written = sorted({i for node in walk(child) for i in getattr(node, "indices", ())} & set(LETTERS))
    if not written:
        return st.sampled_from(LETTERS).map(lambda i: Call("mean", child, (i,)))
    return st.tuples(st.sampled_from(["sum", "mean"]), st.sampled_from(written)).map(
        lambda p: Call(p[0], child, (p[1],))
    )


def _expressions(ranks):
    return st.recursive(
        _leaves(ranks),
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(flat_add),
            st.lists(children, min_size=2, max_size=3).map(flat_mul),
            st.lists(children, min_size=2, max_size=3).map(lambda fs: Mul(tuple(fs))),  # (a b) c: a group
            children.map(Neg),
            st.tuples(st.sampled_from(sorted(FUNCTIONS)), children).map(lambda p: Call(p[0], p[1])),
            st.tuples(children, st.sampled_from([Fraction(2), Fraction(3)])).map(lambda p: Pow(*p)),
            st.tuples(children, children).map(lambda p: Div(p[0], Add((Number(Fraction(2)), Call("tanh", p[1]))))),
            children.flatmap(_reduction),
        ),
        max_leaves=6,
    )


def _written(expr) -> list[str]:
    from einderiv.lower import free_indices as surface_indices

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


# -- the reference: the scoping rules evaluated directly (tests/scoping_reference.py) ------------


def reference(program: Program, arrays: dict) -> np.ndarray:
    return evaluate_program(program, arrays, SIZE)


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
    call_or_reject(first, program, **arrays)
    assert_matches_fd(first, lambda **k: reference(program, {**full, **k}), arrays, wrt, rtol=1e-5)
    assert_printed_reads_back(first, arrays)

    wrt2 = data.draw(st.sampled_from(sorted(compiled.ranks)), label="wrt2")
    second = einderiv.diff(program, [wrt, wrt2])
    call_or_reject(second, program, **arrays)
    assert_matches_fd(second, first, arrays, wrt2, rtol=1e-5)
