"""Cancelling a common factor of a sum's numerator and a power of a one-variable sum.

Differentiating a quotient expands its numerator, so a factor the quotient rule multiplies in is
no longer visible beside the power it cancels: the gradient of ``s / (1 - s)`` (s = sigmoid(u))
is ``s (1 - s) (1 / (1 - s) + s / (1 - s)^2)``, which the normal form holds as the four terms
``s / (1 - s) - s^2 / (1 - s) + s^2 / (1 - s)^2 - s^3 / (1 - s)^2``.  Over the common
denominator (1 - s)^2 their numerator is ``s (1 - s)``, so the sum is ``s / (1 - s)``.  Written
expanded, it is 0 / 0 where s rounds to 1 (u > 37), and it prints as ``(1 - s) / (1 - s)``.

:func:`cancel_common_factors` does that division exactly, in the polynomial ring whose variables
are the atoms of the terms: for a base B written as a power in some term (``pow(B, -2)``) that is
a polynomial with a non-zero constant term in one bounded atom v (``sigmoid``, ``tanh``, ``sin``,
``cos`` of anything: ``1 - s``, ``1 - t^2``, ``1 + s^2``), the terms are grouped by the product of
their other factors M; in each group, the numerator p_M(v) over B^K (K the largest power of 1/B
in the group) is divided by B while the division is exact.  The result is the same function
(where B is not 0), with fewer powers of B.  Only a bounded v: multiplying out p_M(v) B^k is then
never an overflow (``x^2 / (1 + x^2)^2`` is inf / inf at x = 1e160, where the terms it came from
are finite); over any other atom (``1 - x``) only where the numerator divides down to one
monomial, a product of powers (``-1 / (1 - x) + x / (1 - x)`` is -1: as written it was
``-(1 - x) / (1 - x)``, and the Hessian of a binary entropy lost 1e-4 relatively at
x = 1 - 1e-12 to the two terms of 1e24 it left).  Over a tanh, only polynomials in t^2 (times
a power of t): evaluation computes ``1 - t^2`` as ``cosh^-2``, while ``1 - t`` is 0 from u = 19
(``2 (1 - t) / (1 + t)^2``, the gradient of ``-1 / (1 + tanh(s))^2``, was 0 at s = 30 for
8.8e-27).  A group is left as it was where a summed index only v or B carries would be lost
(``sum_n((1 - s_n^2) / (1 + s_n))`` is N - sum_n(s_n), not 1 - s_n once).

It runs while differentiating (:data:`einderiv.normal.CANCELLING`), not on what the user wrote,
which keeps the meaning NumPy gives it.

Ends: each division lowers the power of B of a group by one, and the groups are finite.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

from .ir import Tensor
from .normal import (
    CANCEL,
    Apply,
    Poly,
    Term,
    carrying,
    make_apply,
    merge_powers,
    multiply,
    power_base,
    rename_atom,
    root_power,
    simplify,
    single_atom,
)

Univariate = dict[int, Fraction]  # exponent of v -> coefficient


#: Functions whose values lie in [-1, 1]: a polynomial in one of them cannot overflow.
BOUNDED = frozenset({"sigmoid", "tanh", "sin", "cos"})


@lru_cache(maxsize=4096)
def _as_univariate(poly: Poly, bounded: frozenset, unbounded: bool = False) -> tuple[Poly, Univariate] | None:
    """``poly`` as c0 + c1 v + c2 v^2 + ... in one bounded atom v (:data:`BOUNDED`), or with
    ``unbounded`` any tensor or call, with c0 != 0 and non-negative integer exponents; None where
    it is not (two variables, a summed index, a fractional power, an unbounded v unasked)."""
    variable, coefficients = None, {}
    for term in poly.terms:
        exponent = 0
        for factor in term.factors:
            base, power = power_base(factor)
            if power.denominator != 1 or power < 0 or set(factor.indices) - set(poly.indices):
                return None
            if variable is None:
                variable = base
            elif base != variable:
                return None
            exponent += int(power)
        coefficients[exponent] = coefficients.get(exponent, Fraction(0)) + term.coeff
    coefficients = {e: c for e, c in coefficients.items() if c}
    if variable is None or not coefficients.get(0) or max(coefficients) == 0:
        return None
    atom = variable.terms[0].factors[0] if len(variable.terms) == 1 and len(variable.terms[0].factors) == 1 else None
    if not (isinstance(atom, Apply) and atom.func in BOUNDED) and not (
        isinstance(atom, Tensor) and any(atom.name == name for name, _, _ in bounded)  # s_n = sigmoid(z_n)
    ):
        if not (unbounded and isinstance(atom, (Tensor, Apply))):
            return None
    return variable, coefficients


def _divide(numerator: Univariate, divisor: Univariate) -> Univariate | None:
    """The exact quotient of two polynomials in v (exponents may be negative in the numerator:
    v is then factored out first, which is exact as the divisor's constant term is not 0)."""
    shift = min(numerator)
    remainder = {e - shift: c for e, c in numerator.items()}
    top = max(divisor)
    quotient: Univariate = {}
    while remainder:
        degree = max(remainder)
        if degree < top:
            return None
        factor = remainder[degree] / divisor[top]
        quotient[degree - top] = factor
        for e, c in divisor.items():
            value = remainder.get(e + degree - top, Fraction(0)) - factor * c
            if value:
                remainder[e + degree - top] = value
            else:
                remainder.pop(e + degree - top, None)
    return {e + shift: c for e, c in quotient.items()}


def _alias(variable: Poly, bounded: frozenset) -> Poly | None:
    """The call an intermediate variable is (``sigmoid(z_m)`` for ``s_m``, with ``s_n =
    sigmoid(z_n)``): differentiation writes either, and both are v."""
    atom = variable.terms[0].factors[0]
    for name, indices, call in bounded:
        if isinstance(atom, Tensor) and atom.name == name and len(indices) == len(atom.indices):
            renamed = rename_atom(call, dict(zip(indices, atom.indices)))
            return Poly((Term(Fraction(1), (renamed,)),), renamed.indices)
    return None


def _split(term: Term, base: Poly, variable: Poly, alias: Poly | None = None) -> tuple[tuple, int, int] | None:
    """``term`` as (its other factors M, the power of v, the power of 1/B), or None where a power
    of v or of B is not an integer."""
    rest, of_variable, of_base = [], 0, 0
    for factor in term.factors:
        b, power = power_base(factor)
        if power == 0:  # x_n^0 as written: the shape it carries stays with the other factors
            rest.append(factor)
        elif b == base and isinstance(factor, Apply) and factor.func == "pow":
            if power.denominator != 1:
                return None
            of_base -= int(power)
        elif b == variable or (alias is not None and b == alias):
            if power.denominator != 1:
                return None
            of_variable += int(power)
        else:
            rest.append(factor)
    return tuple(sorted(rest, key=repr)), of_variable, of_base


def _cancel_one(poly: Poly, base: Poly, bounded: frozenset) -> Poly | None:
    """``poly`` with the powers of 1/``base`` cancelled where the division is exact, or None."""
    found = _as_univariate(base, bounded)
    # over an unbounded v (1 - x), only a group whose numerator divides down to one monomial
    # (-(1 - x) / (1 - x) is -1): a product of powers, with no multiplied-out sum to overflow
    whole_only = found is None
    found = found or _as_univariate(base, bounded, unbounded=True)
    if found is None:
        return None
    variable, divisor = found
    alias = _alias(variable, bounded)
    # 1 - t^2 of a tanh is evaluated as cosh^-2 (and t^k P(t^2) with it), 1 - t is not: a group
    # over tanh is cancelled only where B and the result are polynomials in t^2, times a power of t
    call = (alias or variable).terms[0].factors[0]
    even_only = isinstance(call, Apply) and call.func == "tanh"
    if even_only and any(e % 2 for e in divisor):
        return None
    groups: dict[tuple, list] = {}
    for term in poly.terms:
        split = _split(term, base, variable, alias)
        if split is None:
            return None
        rest, of_variable, of_base = split
        groups.setdefault(rest, []).append((term.coeff, of_variable, of_base, term))
    out: list[Term] = []
    changed = False
    own = (set(variable.indices) | set(base.indices)) - set(poly.indices)  # summed, carried by v or B
    for rest, members in groups.items():
        highest = max(of_base for _, _, of_base, _ in members)
        if highest <= 0 or own - {i for f in rest for i in f.indices}:  # nothing to divide, or a sum to keep
            out.extend(term for *_, term in members)
            continue
        numerator: Univariate = {}  # sum of c v^e B^(highest - b): B's powers multiplied out
        for coeff, of_variable, of_base, _ in members:
            part = {of_variable: coeff}
            for _ in range(highest - of_base):
                part = _product(part, divisor)
            for e, c in part.items():
                numerator[e] = numerator.get(e, Fraction(0)) + c
        numerator = {e: c for e, c in numerator.items() if c}
        power = highest
        while numerator and power > 0:
            quotient = _divide(numerator, divisor)
            if quotient is None:
                break
            numerator, power = quotient, power - 1
        mixed = even_only and len({e % 2 for e in numerator}) > 1  # 1 - t: cancels at large u
        # (over an unbounded v, also where nothing divides but the terms collect into one
        # monomial: 1 / (1 + x) - x / (1 + x)^2 is 1 / (1 + x)^2, which as two terms was 0 at
        # x = 1e20 for 1e-40, and the Hessian of x / (1 + x) had the wrong sign: a hunt's find)
        if whole_only and numerator and (len(numerator) > 1 or (power == highest and len(members) < 2)):
            out.extend(term for *_, term in members)
            continue
        if numerator and (mixed or (power == highest and len(numerator) >= len(members))):
            out.extend(term for *_, term in members)  # nothing divides or collects: as they were
            continue
        changed = True
        out.extend(carrying(_build(rest, numerator, -power, variable, base, poly), poly.indices))
    if not changed:
        return None
    return simplify(out, poly.indices, cancelling=False)


def _product(a: Univariate, b: Univariate) -> Univariate:
    out: Univariate = {}
    for e1, c1 in a.items():
        for e2, c2 in b.items():
            out[e1 + e2] = out.get(e1 + e2, Fraction(0)) + c1 * c2
    return {e: c for e, c in out.items() if c}


def _build(rest: tuple, numerator: Univariate, base_power: int, variable: Poly, base: Poly, poly: Poly) -> list:
    """The terms ``M * numerator(v) * B^base_power``."""
    avoid = poly.all_index_names()
    out: list[Term] = []
    for exponent, coeff in sorted(numerator.items()):
        terms = [Term(coeff, rest)]
        if exponent:
            terms = multiply(terms, make_apply("pow", variable, Fraction(exponent)), set(variable.indices), avoid)
        if base_power:
            terms = multiply(terms, make_apply("pow", base, Fraction(base_power)), set(base.indices), avoid)
        out.extend(terms)
    return out


def _sum_in(arg: Poly, rooted: frozenset) -> Poly | None:
    """The sum ``arg`` is (under a root, or a negative power): itself, or the definition of the
    intermediate it is (``u_j`` with ``u_i = 1 + x_i^2`` is ``1 + x_j^2``); None for one term."""
    if len(arg.terms) > 1:
        return arg
    inner = single_atom(arg)
    for name, indices, poly in rooted:  # (no summed index: renaming the free ones captures none)
        if isinstance(inner, Tensor) and inner.name == name and len(indices) == len(inner.indices):
            mapping = dict(zip(indices, inner.indices))
            return Poly(tuple(t.rename(mapping) for t in poly.terms), inner.indices)
    return None


def _collapse_root(poly: Poly, root: Apply, rooted: frozenset = frozenset()) -> Poly | None:
    """``poly`` with its terms in powers of ``root`` = sqrt(B) over one power of it, where their
    numerator is then one term: the Hessian of sqrt(1 + x^2), ``1 / sqrt(1 + x^2) - x^2 /
    sqrt(1 + x^2)^3``, is ``(1 + x^2 - x^2) / sqrt(1 + x^2)^3 = 1 / sqrt(1 + x^2)^3``.  Evaluated as
    the two terms it lost its digits from x = 1e5 (and its sign at 1e8); the one term is
    accurate at every x.  Only terms that sum none of the root's letters (an HVP's ``X_ni v_i``
    sums i beside the root over n: ``-r^2 X v X / sqrt(1 + r^2)^3 + X v X / sqrt(1 + r^2)``, the
    pseudo-Huber loss's, had the wrong sign at |w| ~ 1e8), no sum inside B, and a numerator of
    one term: exact, and never larger than the terms it came from.  None where nothing
    collapses."""
    base = _sum_in(root.arg, rooted)
    if base is None or base.all_index_names() - set(base.indices):
        return None  # a sum inside B (a norm): its numerator is not a term of the index language
    free = set(poly.indices)
    members, others = [], []
    for term in poly.terms:
        found = {k: r[1] for k, f in enumerate(term.factors) if (r := root_power(f, rooted)) and r[0] == root}
        if not found or (term.index_names() - free) & set(root.indices):
            others.append(term)
            continue
        # u^-2 sqrt(1 + x^2)^-1 with u = sqrt(1 + x^2) (named and written out): sqrt(1 + x^2)^-3
        rest = tuple(f for k, f in enumerate(term.factors) if k not in found)
        members.append((sum(found.values()), Term(term.coeff, rest)))
    if len(members) < 2:
        return None
    lowest = min(power for power, _ in members)
    if any((power - lowest) % 2 for power, _ in members):
        return None
    numerator: list[Term] = []
    for power, rest in members:
        part = [rest]
        for _ in range((power - lowest) // 2):  # sqrt(B)^2 is B
            part = multiply(part, list(base.terms), set(base.indices))
        numerator.extend(t for p in part for t in _spread(p))
    collapsed = simplify(numerator, poly.indices, cancelling=False)
    if len(collapsed.terms) != 1:
        return None
    (term,) = collapsed.terms
    over = make_apply("pow", Poly((Term(Fraction(1), (root,)),), root.indices), Fraction(lowest))
    return simplify([*others, *multiply([term], over, set(root.indices))], poly.indices, cancelling=False)


def _spread(term: Term) -> list[Term]:
    """``term`` with each integer power of a product spread over its factors, ``(x / d)^2`` as
    ``x^2 d^-2``: one product, one spelling, so that a numerator's terms collect."""
    out = [Term(term.coeff, ())]
    for factor in term.factors:
        spread = [Term(Fraction(1), (factor,))]
        if isinstance(factor, Apply) and factor.func == "pow" and factor.param.denominator == 1:
            (inner,) = factor.arg.terms if len(factor.arg.terms) == 1 else (None,)
            if inner is not None and inner.index_names() <= set(factor.arg.indices) and len(inner.factors) > 1:
                spread = [Term(inner.coeff ** int(factor.param), ())]
                for f in inner.factors:
                    powered = make_apply("pow", Poly((Term(Fraction(1), (f,)),), f.indices), factor.param)
                    spread = multiply(spread, powered, set(f.indices))
        out = multiply(out, spread, set(factor.indices))
    return [m for t in out for m in merge_powers(t)]


def collapse_roots(poly: Poly, rooted: frozenset = frozenset()) -> Poly:
    """``poly`` with :func:`_collapse_root` applied for each square root of a sum it holds."""
    roots = dict.fromkeys(r[0] for t in poly.terms for f in t.factors if (r := root_power(f, rooted)))
    for root in roots:
        collapsed = _collapse_root(poly, root, rooted)
        if collapsed is not None:
            poly = collapsed
    return poly


@lru_cache(maxsize=8192)
def cancel_common_factors(poly: Poly, bounded: frozenset = frozenset(), rooted: frozenset = frozenset()) -> Poly:
    """``poly`` with each power of 1/B cancelled against the numerator where B divides it
    exactly (see the module's docstring), and terms over powers of sqrt(B) collapsed where their
    numerator is one term (:func:`collapse_roots`); the same Poly where nothing cancels."""
    if any(root_power(f, rooted) for t in poly.terms for f in t.factors):
        poly = collapse_roots(poly, rooted)
    if any(_named_sum(f, rooted) for t in poly.terms for f in t.factors):
        # u^-2 with u_i = 1 + x_i: cancelled as (1 + x)^-2 is, kept as written where nothing cancels
        read = simplify([_read_sums(t, rooted) for t in poly.terms], poly.indices, cancelling=False)
        cancelled = cancel_common_factors(read, bounded)
        if cancelled != read and len(cancelled.terms) < len(poly.terms):
            poly = cancelled
    tried: set[Poly] = set()
    while True:
        bases = [
            f.arg
            for t in poly.terms
            for f in t.factors
            if isinstance(f, Apply) and f.func == "pow" and f.param < 0 and len(f.arg.terms) > 1 and f.arg not in tried
        ]
        if not bases:
            return poly
        base = bases[0]
        tried.add(base)
        cancelled = _cancel_one(poly, base, bounded)
        if cancelled is not None and len(cancelled.terms) <= len(poly.terms):
            poly = cancelled


def _named_sum(factor, rooted: frozenset) -> Poly | None:
    """The sum B an intermediate is (``u_j`` with ``u_i = 1 + x_i``: ``1 + x_j``), for ``factor`` a
    negative power of it; else None."""
    if not (isinstance(factor, Apply) and factor.func == "pow" and factor.param < 0):
        return None
    inner = single_atom(factor.arg)
    if not isinstance(inner, Tensor):
        return None
    base = _sum_in(factor.arg, rooted)
    return base if base is not None and len(base.terms) > 1 else None


def _read_sums(term: Term, rooted: frozenset) -> Term:
    """``term`` with each negative power of a named sum written as that power of the sum."""
    factors = []
    for factor in term.factors:
        base = _named_sum(factor, rooted)
        factors.append(Apply("pow", base, factor.param) if base is not None else factor)
    return Term(term.coeff, tuple(factors))


CANCEL[:] = [cancel_common_factors]
