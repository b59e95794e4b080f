"""Resource limits in one place (issue 14): ``einderiv.limits``, read where each is enforced, changed
by ``einderiv.limited(...)`` for a block (this thread only, undone on leaving it) or by
``einderiv.limits.set_defaults(...)`` for every thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

import einderiv
from einderiv.errors import DifferentiationError, EinderivError, ParseError

PRODUCT = "f = (a + x)(b + x)(c + x)(d + x)(e + x)(g + x)"  # its derivative has 63 terms
NESTED = "f = " + "exp(" * 10 + "x" + ")" * 10  # nested 11 levels deep
CHAIN = "f = exp(sin(cos(x_i x_i)))"  # its Hessian has a few hundred atoms


@pytest.fixture(autouse=True)
def _defaults_restored():
    yield
    einderiv.limits.set_defaults(**dataclasses.asdict(einderiv.limits.DEFAULTS))


def test_the_defaults_are_the_documented_ones():
    assert einderiv.limits.current() == einderiv.Limits(
        max_depth=64, max_terms=20_000, max_size=100_000, max_checked=20_000
    )
    assert einderiv.limits.current() is einderiv.limits.DEFAULTS


def test_old_module_constants_are_gone():
    import einderiv.differentiate
    import einderiv.lower
    import einderiv.matrix.syntax
    import einderiv.normal
    import einderiv.parser

    modules = (einderiv.normal, einderiv.parser, einderiv.differentiate, einderiv.lower, einderiv.matrix.syntax)
    for module in modules:
        for name in ("MAX_TERMS", "MAX_SIZE", "MAX_DEPTH"):
            assert not hasattr(module, name), (module.__name__, name)


def test_lower_max_terms_refuses_a_derivative_and_raising_it_back_restores():
    assert len(einderiv.diff(PRODUCT, "x").expr.terms) == 63
    with einderiv.limited(max_terms=50) as limits:
        assert limits.max_terms == 50 and einderiv.limits.current().max_terms == 50
        with pytest.raises(DifferentiationError) as caught:
            einderiv.diff(PRODUCT, "x")
        with einderiv.limited(max_terms=1000):  # nested: raised again inside
            assert len(einderiv.diff(PRODUCT, "x").expr.terms) == 63
        with pytest.raises(DifferentiationError):  # the inner block's change is undone
            einderiv.diff(PRODUCT, "x")
    message = str(caught.value)
    assert "over the limit of 50 (max_terms)" in message
    assert "einderiv.limited(max_terms=...)" in message
    assert len(einderiv.diff(PRODUCT, "x").expr.terms) == 63


def test_max_terms_also_bounds_the_expansion_of_an_expression():
    source = "f = (a + b + c + d + e)(g + h + k + m + n) x"  # 25 terms once expanded
    einderiv.compile(source)
    with einderiv.limited(max_terms=20), pytest.raises(DifferentiationError, match=r"limit of 20 \(max_terms\)"):
        einderiv.compile(source)


def test_lower_max_depth_refuses_a_parse():
    einderiv.parse(NESTED)
    with einderiv.limited(max_depth=10), pytest.raises(ParseError) as caught:
        einderiv.parse(NESTED)
    assert "nested 11 levels deep, over the limit of 10 (max_depth)" in str(caught.value)
    assert "einderiv.limited(max_depth=...)" in str(caught.value)
    with einderiv.limited(max_depth=11):
        einderiv.parse(NESTED)


def test_raised_max_depth_admits_deeper_nesting():
    deep = "f = " + "exp(" * 80 + "x" + ")" * 80
    with pytest.raises(ParseError, match=r"limit of 64 \(max_depth\)"):
        einderiv.grad(deep, "x")
    with einderiv.limited(max_depth=100):
        assert einderiv.grad(deep, "x") is not None


def test_max_depth_bounds_a_matrix_notation_claim():
    claim = "A x + A^T x + " + "sin(" * 5 + "x" + ")" * 5 + " - " + "sin(" * 5 + "x" + ")" * 5
    assert einderiv.check("f = x_i A_ij x_j", "x", expect=claim).claim == "matches"
    with einderiv.limited(max_depth=3), pytest.raises(ParseError) as caught:
        einderiv.check("f = x_i A_ij x_j", "x", expect=claim)
    assert "the matrix claim is nested deeper than 3 operations (the limit max_depth)" in str(caught.value)
    assert "einderiv.limited(max_depth=...)" in str(caught.value)


def test_lower_max_size_refuses_a_hessian():
    einderiv.diff(CHAIN, ["x", "x"])
    with einderiv.limited(max_size=50), pytest.raises(DifferentiationError) as caught:
        einderiv.diff(CHAIN, ["x", "x"])
    assert "over the limit of 50 (max_size)" in str(caught.value)
    assert "einderiv.limited(max_size=...)" in str(caught.value)


def test_the_override_is_undone_when_the_block_raises():
    with pytest.raises(KeyError), einderiv.limited(max_terms=50, max_depth=5):
        raise KeyError("boom")
    assert einderiv.limits.current() == einderiv.limits.DEFAULTS
    with pytest.raises(DifferentiationError), einderiv.limited(max_terms=50):
        einderiv.diff(PRODUCT, "x")
    assert len(einderiv.diff(PRODUCT, "x").expr.terms) == 63


def test_a_block_changes_only_its_own_thread():
    seen = {}
    entered, checked = threading.Event(), threading.Event()

    def other():
        entered.wait(5)
        seen["limits"] = einderiv.limits.current()
        seen["terms"] = len(einderiv.diff(PRODUCT, "x").expr.terms)
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with einderiv.limited(max_terms=50):
        entered.set()
        checked.wait(5)
        with pytest.raises(DifferentiationError):
            einderiv.diff(PRODUCT, "x")
    thread.join(5)
    assert seen == {"limits": einderiv.limits.DEFAULTS, "terms": 63}


def test_a_block_changes_only_its_own_asyncio_task():
    async def limited_task(started: asyncio.Event, done: asyncio.Event):
        with einderiv.limited(max_terms=50):
            started.set()
            await done.wait()
            return einderiv.limits.current().max_terms

    async def other_task(started: asyncio.Event, done: asyncio.Event):
        await started.wait()
        value = einderiv.limits.current().max_terms
        done.set()
        return value

    async def main():
        started, done = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(limited_task(started, done), other_task(started, done))

    assert asyncio.run(main()) == [50, 20_000]


def test_set_defaults_reaches_every_thread_and_returns_the_previous():
    previous = einderiv.limits.set_defaults(max_terms=50)
    assert previous == einderiv.limits.DEFAULTS
    errors = []

    def other():
        try:
            einderiv.diff(PRODUCT, "x")
        except DifferentiationError as err:
            errors.append(str(err))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and "limit of 50 (max_terms)" in errors[0]
    with einderiv.limited(max_depth=30):  # a block starts from the defaults in effect
        assert einderiv.limits.current() == einderiv.Limits(max_depth=30, max_terms=50, max_size=100_000)
    einderiv.limits.set_defaults(**dataclasses.asdict(previous))
    assert len(einderiv.diff(PRODUCT, "x").expr.terms) == 63


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_term": 5}, "'max_term' is not a limit (limits: max_depth, max_terms, max_size, max_checked)"),
        ({"max_terms": 0}, "the limit max_terms must be a positive integer, got 0"),
        ({"max_depth": -3}, "must be a positive integer, got -3"),
        ({"max_size": 2.5}, "must be a positive integer, got 2.5"),
        ({"max_size": True}, "must be a positive integer, got True"),
        ({"max_terms": "many"}, "must be a positive integer, got 'many'"),
    ],
)
def test_bad_limits_are_einderiv_errors(changes, message):
    with pytest.raises(EinderivError) as caught, einderiv.limited(**changes):
        pass
    assert message in str(caught.value)
    with pytest.raises(EinderivError):
        einderiv.limits.set_defaults(**changes)
    assert einderiv.limits.current() == einderiv.limits.DEFAULTS


def test_limits_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        einderiv.limits.current().max_terms = 5  # type: ignore[misc]


def test_a_check_by_an_input_past_max_checked_is_refused_with_the_shape_to_change():
    """``einderiv check "f = x_i x_i" --wrt x --shape x=2000000`` ran past a minute (central
    differences evaluate twice per entry); a check past ``max_checked`` entries stops at once
    with an error that names the input, the limit and both ways round it."""
    with pytest.raises(EinderivError, match=r"'x'.*2,000,000 entries.*max_checked.*smaller shape"):
        einderiv.check("f = x_i x_i", "x", shapes={"x": (2_000_000,)})
    with einderiv.limited(max_checked=50):
        with pytest.raises(EinderivError, match="max_checked"):
            einderiv.check("f = x_i x_i", "x", shapes={"x": (51,)})
        assert einderiv.check("f = x_i x_i", "x", shapes={"x": (50,)}).fd_ok
