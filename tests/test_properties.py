"""Property tests over generated polynomial tensor expressions.

A small independent reference evaluator (the scoping rules evaluated bottom-up, one
``np.einsum`` per product, identity matrices for deltas) checks that simplification keeps the
value, that first and second derivatives match central finite differences, and that printing
round-trips.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import einderiv
from einderiv.ir import Delta, Div, Mul, Neg, Number, Program, Statement, Tensor
from einderiv.lower import normalize
from einderiv.normal import equivalent
from tests.generation import call_or_reject, compile_or_reject, flat_add, flat_mul
from tests.helpers import assert_matches_fd, assert_printed_reads_back
from tests.scoping_reference import evaluate_program

RANKS = {"s": 0, "a": 1, "b": 1, "A": 2, "B": 2, "T": 3}
LETTERS = "ijkl"
SIZE = 3
#: Examples per property; EINDERIV_EXAMPLES=5000 for a longer hunt.
EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- generation ---------------------------------------------------------------------------------


tensors = st.sampled_from(sorted(RANKS)).flatmap(
    lambda name: st.lists(st.sampled_from(LETTERS), min_size=RANKS[name], max_size=RANKS[name]).map(
        lambda idx: Tensor(name, tuple(idx))
    )
)
numbers = st.sampled_from([Fraction(0), Fraction(1), Fraction(2), Fraction(1, 2), Fraction(3, 4)]).map(Number)
deltas = st.tuples(st.sampled_from(LETTERS), st.sampled_from(LETTERS)).map(lambda p: Delta(*p))
leaves = st.one_of(tensors, tensors, tensors, numbers, deltas)
nonzero = st.sampled_from([Fraction(2), Fraction(1, 4), Fraction(5)]).map(Number)

expressions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(flat_add),
        st.lists(children, min_size=2, max_size=3).map(flat_mul),
        st.lists(children, min_size=2, max_size=3).map(lambda fs: Mul(tuple(fs))),  # (a b) c: a group
        children.map(Neg),
        st.tuples(children, nonzero).map(lambda p: Div(*p)),
    ),
    max_leaves=7,
)


def _letters(expr) -> list[str]:
    from einderiv.ir import walk

    return sorted({i for node in walk(expr) if isinstance(node, (Tensor, Delta)) for i in node.indices})


@st.composite
def statements(draw, max_out: int = 2):
    rhs = draw(expressions)
    used = _letters(rhs)
    out = draw(st.permutations(used)) if used else []
    count = draw(st.integers(0, min(max_out, len(used))))
    return Statement(Tensor("f", tuple(out[:count])), rhs)


# -- independent reference ------------------------------------------------------------------------


def reference(statement: Statement, arrays: dict) -> np.ndarray:
    """The scoping rules evaluated directly (tests/scoping_reference.py), not einderiv's lowering."""
    return evaluate_program(Program((statement,)), arrays, SIZE)


def random_arrays(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=(SIZE,) * rank) for name, rank in RANKS.items()}


# -- properties -------------------------------------------------------------------------------------


@SETTINGS
@given(statements(max_out=3))
def test_printing_round_trips(statement):
    program = Program((statement,))
    assert einderiv.parse(str(program)) == program


@SETTINGS
@given(statements(max_out=3), st.integers(0, 2**16))
def test_simplification_keeps_the_value(statement, seed):
    compiled = compile_or_reject(statement)
    arrays = {k: v for k, v in random_arrays(seed).items() if k in compiled.ranks}
    value = call_or_reject(compiled, **arrays)
    np.testing.assert_allclose(value, reference(statement, arrays), rtol=1e-9, atol=1e-9)
    # the printed expression reads back as the same one (up to the names of summed indices: a
    # counting index, i#1, prints as its letter)
    assert equivalent(normalize(einderiv.parse(str(compiled.expr)).output.rhs, compiled.indices), compiled.expr)


@SETTINGS
@given(statements(max_out=2), st.integers(0, 2**16), st.data())
def test_first_and_second_derivatives_match_finite_differences(statement, seed, data):
    compiled = compile_or_reject(statement)
    if not compiled.ranks:
        reject()
    arrays = {k: v for k, v in random_arrays(seed).items() if k in compiled.ranks}
    wrt = data.draw(st.sampled_from(sorted(compiled.ranks)), label="wrt")
    first = einderiv.diff(statement, wrt)
    call_or_reject(first, statement, **arrays)
    assert_matches_fd(first, lambda **k: reference(statement, k), arrays, wrt)
    # printing the derivative gives input text for the same expression (up to the order of terms:
    # a derivative prints with common factors pulled out)
    assert_printed_reads_back(first, arrays, powers_as_products=True)

    if len(first.indices) + compiled.ranks[wrt] > 4:
        return
    wrt2 = data.draw(st.sampled_from(sorted(compiled.ranks)), label="wrt2")
    second = einderiv.diff(statement, [wrt, wrt2])
    call_or_reject(second, statement, **arrays)
    assert_matches_fd(second, first, arrays, wrt2)
