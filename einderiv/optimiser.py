"""The optimiser: a program's definitions -> a straight line of typed steps (:mod:`einderiv.steps`).

Every function call is hoisted into its own step (its argument contracted by one einsum, the
function applied elementwise), shared by every term and statement that uses the same call
(common subexpressions are computed once per evaluation); terms that share factors are
contracted once (``-y_n X_ni + s_n X_ni`` -> ``(s_n - y_n) X_ni``); ``inv(M)_ij b_j`` becomes a
linear solve; softmax and logsumexp are steps of their own, stable at any input.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from dataclasses import replace
from fractions import Fraction

from .contraction import Contraction
from .index_names import count_letter, count_stem, counted_axis, fresh_indices, is_count
from .ir import Delta, Indices, Tensor
from .normal import (
    Apply,
    MatrixFn,
    Poly,
    Term,
    canonical_key,
    carrying,
    common_coefficient,
    exact_quotient,
    is_reciprocal,
    letter_axes,
    multiply,
    negated,
    number_key,
    rename_apart,
    rename_atom,
    simplify,
    single_atom,
)
from .rewrites import logsumexp_parts, softmax_parts
from .steps import (
    Contract,
    Elementwise,
    LogOneMinusExp,
    LogSoftmax,
    LogSumExp,
    MatrixFunction,
    Softmax,
    SoftmaxCentred,
    SoftmaxComplement,
    Solve,
    Step,
)


def _poly_key(poly: Poly) -> tuple:
    """``poly`` up to the names of its indices (free ones by position, summed ones canonically):
    the same key for the same array, wherever it is written."""
    positions = {i: f"#{k}" for k, i in enumerate(poly.indices)}
    terms = (
        (number_key(t.coeff), canonical_key(t.rename(positions), frozenset(positions.values()))) for t in poly.terms
    )
    return len(poly.indices), tuple(sorted(terms))


def _pattern(f: Tensor, free: set[str]) -> tuple:
    """A tensor factor up to the names of its summed indices: ``Phi_ni`` with n summed is
    ``("Phi", ("#0", "i"))`` wherever it occurs."""
    names: dict[str, str] = {}
    return (f.name, tuple(i if i in free else names.setdefault(i, f"#{len(names)}") for i in f.indices))


def _atom_kind(atom) -> tuple:
    """An atom up to its index names, for ordering a term's factors before naming their indices."""
    name = getattr(atom, "name", None) or f"{getattr(atom, 'func', '')}({getattr(atom, 'matrix', '')})"
    return (type(atom).__name__, name, len(atom.indices))


def _difference_of_squares(poly: Poly):
    """v, where a call's argument is ``1 - v^2`` of one elementwise v, else None.  It is computed
    as (1 - v)(1 + v): 1 - v is exact near |v| = 1, where 1 - v v loses the digits of v v's
    rounding (arcsin's derivative 1 / sqrt(1 - x^2) was 1.9e-9 off at x = 1 - 7.4e-9: a hunt's
    find; jax writes it so too)."""
    if len(poly.terms) != 2:
        return None
    constant, square = sorted(poly.terms, key=lambda t: len(t.factors))
    if constant.factors or constant.coeff != 1 or square.coeff != -1:
        return None
    factors = square.factors
    if len(factors) == 1 and isinstance(factors[0], Apply) and factors[0].func == "pow" and factors[0].param == 2:
        v = single_atom(factors[0].arg)
    elif len(factors) == 2 and factors[0] == factors[1]:
        v = factors[0]
    else:
        return None
    if not isinstance(v, (Tensor, Apply)) or tuple(v.indices) != tuple(poly.indices) or is_reciprocal(v):
        return None
    return v


def _call_arguments(atoms) -> list[Poly]:
    """The arguments of the calls among ``atoms``, and of the calls inside them."""
    found = []
    for atom in atoms:
        if isinstance(atom, Apply):
            found.append(atom.arg)
            found += _call_arguments(f for t in atom.arg.terms for f in t.factors)
    return found


def _held_by_lengths(rest, free: set[str]) -> set[str]:
    """The indices a factor with a length carries (not a delta, not a mean's 1/n), and ``free``:
    a summed letter named alike in two terms (_c0) is one size only where such a factor holds it
    (``mean_n(x_n) - mean_m(y_m)`` sums two lengths, 1/n and 1/m both 1/_c0)."""
    return {i for h in rest if not isinstance(h, Delta) and not is_reciprocal(h) for i in h.indices} | free


def _difference(f: Tensor, g: Tensor) -> tuple[Indices, Poly]:
    """``f - g`` over f's axes, then those of g's that f lacks."""
    axes = (*f.indices, *(i for i in g.indices if i not in f.indices))
    return axes, Poly((Term(Fraction(1), (f,)), Term(Fraction(-1), (g,))), axes)


def _written_back(name: str, axes: Indices, mapping: dict[str, str]) -> Tensor:
    """The array ``name`` over canonical ``axes``, in the letters of the term ``mapping`` named."""
    written = {canonical: index for index, canonical in mapping.items()}
    return Tensor(name, tuple(written.get(i, i) for i in axes))


def _residual_fits(f: Tensor, g: Tensor, held: set[str], free: set[str], written: bool = False) -> bool:
    """Whether ``f - g`` may replace f in a term whose other factors and output indices hold
    ``held`` (``free``: the output indices): every index of the residual must be held, so that
    its letter is one length in both terms.  Where g's indices are among f's, the residual is
    no larger than f (of two with the same indices, f is the one whose name sorts first, so that
    ``x_i - m_i`` is one residual wherever it forms).  A broadcast residual over both (``X_kl -
    Z_jl`` in an RBF Hessian, held by ``K_kj``; again f's name first) is taken where it has
    fewer summed indices than the output has indices it lacks (there k, l, j against k, l, m,
    n): it is then, index for index, smaller than the output, where in a gradient (``X_kl K_kj -
    Z_jl K_kj``) it would be the N x M x D array that the matrix product avoids.  A residual the
    statement ``written`` as an operand is taken whatever its size: the program naming it forms
    it too.  Its indices must be held all the same (``(a - b)(y_j - c)`` sums y over j but not
    c: no residual array over j)."""
    mine, theirs = set(f.indices), set(g.indices)
    if theirs < mine or (theirs == mine and f.name < g.name):
        return mine <= held
    if mine <= theirs or g.name < f.name:
        return False  # the pair the other way round
    both = mine | theirs
    return both <= held and (written or len(both - free) < len(free - both))


def _kinds(shapes: dict, rest: tuple, free: set[str]) -> dict:
    """The entry of ``shapes`` for the rest of a term (its other factors, summed letters shared
    with the varying ones already named ``_c0``, ...), keyed up to the names of the letters that
    the rest alone sums, inside calls too: ``1 / mean_n((x_n - mean_k(x_k))^2)^2`` and ``1 /
    mean_j((x_j - mean_k(x_k))^2)^2`` are one rest.  The entry keeps the first rest seen."""
    shared = {i for h in rest for i in h.indices if i.startswith("_c")}
    key = _rest_key(rest, frozenset(free | shared)) if rest else ()
    return shapes.setdefault(key, {"rest": rest})


#: ``repr`` of an IR node, remembered: the pair and residual searches sort the same factors by
#: their text again and again (a frozen dataclass's repr is rebuilt from its fields at each call)
_text = functools.lru_cache(maxsize=65536)(repr)


@functools.lru_cache(maxsize=4096)
def _rest_key(rest: tuple, kept: frozenset[str]) -> tuple:
    """canonical_key of the product ``rest``, once per rest: the pair and residual searches ask for
    the same rests again for every pair of a term and every merge (a Hessian-vector product of a
    softmax of a log took 46 s in them)."""
    return canonical_key(Term(Fraction(1), rest), kept)


def _square_candidates(terms: list[Term], eligible: list[list[int]]) -> set[tuple[int, frozenset[str]]]:
    """``(term, names)`` of the pairs of tensors that a perfect square could take: every merge of
    :meth:`_Builder._merge_square` needs two terms of one coefficient c each squaring a tensor
    (``c f f R``, ``c g g R``, a the name of f and b of g) and a term of coefficient -2c holding
    both names (``-2c f g R``), so only those pairs are keyed (a 4-layer network's Hessian spent
    most of 35 s keying the rests of pairs no square could use)."""
    names = [Counter(term.factors[k].name for k in tensors) for term, tensors in zip(terms, eligible)]
    squares: dict[Fraction, list[tuple[int, str]]] = {}
    for number, (term, counted) in enumerate(zip(terms, names)):
        for name, count in counted.items():
            if count > 1:
                squares.setdefault(term.coeff, []).append((number, name))
    by_coefficient: dict[Fraction, list[int]] = {}
    for number, term in enumerate(terms):
        by_coefficient.setdefault(term.coeff, []).append(number)
    wanted: set[tuple[int, frozenset[str]]] = set()
    for coeff, found in squares.items():
        holding: dict[str, set[int]] = {}  # a squared name -> the terms squaring it
        for number, name in found:
            holding.setdefault(name, set()).add(number)
        crossers = by_coefficient.get(-2 * coeff, [])
        for first in holding:
            for second in holding:
                if first > second or len(holding[first] | holding[second]) < 2:
                    continue  # (the pair the other way round; or one term squaring both, no second)
                crossing = [
                    n
                    for n in crossers
                    if names[n][first] and names[n][second] and (first != second or names[n][first] > 1)
                ]
                if crossing:
                    wanted |= {(a, frozenset((first,))) for a in holding[first]}
                    wanted |= {(c, frozenset((second,))) for c in holding[second]}
                    wanted |= {(n, frozenset((first, second))) for n in crossing}
    return wanted


def _apart(pair: tuple[Tensor, Tensor], rest: tuple, free: set[str]) -> bool:
    """Whether a pair of one tensor over letters of their own, summed and carried by nothing
    else, is a product of two sums (``x_i x_j``: (sum_i x_i)(sum_j x_j))."""
    first, second = pair
    if first.name != second.name or set(first.indices) & set(second.indices):
        return False
    letters = set(first.indices) | set(second.indices)
    return not letters & free and not letters & {i for h in rest for i in h.indices}


def _summed_names(others: list, varying, free: set[str], skip: set[str] = frozenset()) -> dict[str, str]:
    """The summed indices of a term's other factors (in the order of their kinds) and then of
    its ``varying`` factor, less ``skip``, named ``_c0``, ``_c1``, ...: the same names for two
    terms equal up to the names of summed indices, so their rests compare equal."""
    mapping: dict[str, str] = {}
    for g in [*sorted(others, key=_atom_kind), varying]:
        for i in g.indices:
            if i not in free and i not in skip and i not in mapping:
                mapping[i] = f"_c{len(mapping)}"
    return mapping


def _power_of(name: str, base: str, steps: dict) -> Fraction | None:
    """q where step ``name`` holds base^q through power and square-root steps (``steps``: the
    elementwise steps by target), else None."""
    q = Fraction(1)
    while name != base:
        step = steps.get(name)
        if step is None or step.func not in ("sqrt", "pow"):
            return None
        q *= Fraction(1, 2) if step.func == "sqrt" else step.param
        name = step.source
    return q


def _fresh(taken: set[str], prefix: str):
    """Index names ``prefix0``, ``prefix1``, ... not in ``taken``."""
    k = 0
    while True:
        name = f"{prefix}{k}"
        k += 1
        if name not in taken:
            yield name


def _log_minus_expm1_of(atom: Apply) -> Poly | None:
    """v for ``log(-expm1(v))`` (elementwise: v carries the log's indices), else None."""
    if atom.func != "log" or len(atom.arg.terms) != 1 or atom.arg.terms[0].coeff != -1:
        return None
    factors = atom.arg.terms[0].factors
    inner = factors[0] if len(factors) == 1 else None
    if isinstance(inner, Apply) and inner.func == "expm1" and set(inner.indices) == set(atom.arg.indices):
        return inner.arg
    return None


def _scaled_softmax(atom) -> tuple[Apply, int] | None:
    """``(softmax, c)`` when ``atom`` is ``exp(c v - c logsumexp_R(v))`` for a whole c >= 2 (a
    softmax to the power c, as differentiation writes p_k p_k), else None."""
    if not (isinstance(atom, Apply) and atom.func == "exp"):
        return None
    shifts = [t for t in atom.arg.terms if len(t.factors) == 1 and logsumexp_parts(t.factors[0]) is not None]
    if len(shifts) != 1 or shifts[0].coeff >= -1 or shifts[0].coeff.denominator != 1:
        return None
    power = -shifts[0].coeff
    inner = Apply("exp", Poly(tuple(t.scaled(1 / power) for t in atom.arg.terms), atom.arg.indices))
    return (inner, int(power)) if softmax_parts(inner) is not None else None


def _pair(term: Term, a_pos: int, b_pos: int, free: set[str]) -> tuple[tuple, tuple[Indices, Indices]] | None:
    """(key, (result indices as written, in the key's order)) of the tensors at ``a_pos`` and
    ``b_pos`` contracted on their own: they share a summed index that no other factor carries,
    and the result must be formed in the term anyway (see :meth:`StraightLine._shared_pairs`);
    else None."""
    a, b = term.factors[a_pos], term.factors[b_pos]
    if len(set(a.indices)) != len(a.indices) or len(set(b.indices)) != len(b.indices):
        return None
    others = [f for k, f in enumerate(term.factors) if k not in (a_pos, b_pos)]
    elsewhere = {i for f in others for i in f.indices}
    summed = (set(a.indices) & set(b.indices)) - free
    if not summed or summed & elsewhere:
        return None
    out = tuple(i for i in dict.fromkeys(a.indices + b.indices) if i not in summed)
    if not out or len(out) > max(len(a.indices), len(b.indices)):
        return None
    holders = [f for f in others if isinstance(f, Tensor) and set(out) <= set(f.indices)]
    if not (set(out) <= free or holders):
        return None
    if holders:  # laid out as the factor it meets holds it: ``V_je G_ke`` beside ``A_kj`` is k, j
        out = tuple(dict.fromkeys(i for i in holders[0].indices if i in out))
    first, second = sorted((a, b), key=lambda f: (f.name, len(f.indices)))
    canonical = tuple(i for i in dict.fromkeys(first.indices + second.indices) if i not in summed)
    return _poly_key(Poly((Term(Fraction(1), (first, second)),), canonical)), (out, canonical)


#: 1 - s = sigmoid(-u) for s = sigmoid(u), and 1 - t^2 = cosh(u)^-2 for t = tanh(u): the
#: polynomial (coefficients from the constant up) whose powers are the complement's
_SATURATING = {"sigmoid": (Fraction(1), Fraction(-1)), "tanh": (Fraction(1), Fraction(0), Fraction(-1))}


def _needs_splitting(polynomial: dict[tuple[int, ...], Fraction], count: int) -> bool:
    """Whether a polynomial in ``count`` sigmoids s_i (exponents -> coefficient) cancels where
    some of them saturate in a way that exact divisions by 1 - s do not remove (those are
    :meth:`StraightLine._factored_powers`'): P = prod s_i^l_i P', and where P' is 0 at a corner of
    the unit cube (each s_i 0 or 1, some s = 1 there; the first such corner, and its first s that
    P' holds), P' = (1 - s) Q + R with R = P'(s = 1) free of s; Q is looked at again, and P needs
    splitting where some such R is not 0.  Ends:
    Q has a lower degree in s than P', and R has no s."""
    corners = [c for c in itertools.product((0, 1), repeat=count) if any(c)]

    def remainder_left(poly: dict) -> bool:
        poly = {e: c for e, c in poly.items() if c}
        if not poly:
            return False
        lows = tuple(min(e[i] for e in poly) for i in range(count))
        reduced = {tuple(a - b for a, b in zip(e, lows)): c for e, c in poly.items()}
        at = None
        for corner in corners:
            if sum(c for e, c in reduced.items() if all(not p or x for p, x in zip(e, corner))) == 0:
                at = next((i for i in range(count) if corner[i] and any(e[i] for e in reduced)), None)
                if at is not None:
                    break
        if at is None:
            return False
        by_power: dict[int, dict] = {}  # P' as a polynomial in s, with polynomials in the others
        for e, c in reduced.items():
            row = by_power.setdefault(e[at], {})
            other = e[:at] + (0,) + e[at + 1 :]
            row[other] = row.get(other, Fraction(0)) + c
        # synthetic division by s - 1: b_(j-1) = a_j + b_j from the top; R = a_0 + b_0; Q = -b
        quotient, carry = {}, {}
        for j in range(max(by_power), 0, -1):
            carry = _added(by_power.get(j, {}), carry)
            quotient.update({e[:at] + (j - 1,) + e[at + 1 :]: -c for e, c in carry.items()})
        remainder = {e: c for e, c in _added(by_power.get(0, {}), carry).items() if c}
        return bool(remainder) or remainder_left(quotient)

    return remainder_left(polynomial)


def _bernstein(polynomial: dict[tuple[int, ...], Fraction], count: int) -> dict:
    """The polynomial in ``count`` sigmoids s_i as ``sum c prod s_i^p_i (1 - s_i)^m_i`` in the
    Bernstein basis of its degree in each s_i (after the lowest powers that every term holds), as
    ((p...), (m...)) -> c: s^j = sum over k >= j of C(k, j) / C(n, j) C(n, k) s^k (1 - s)^(n - k).
    Each term is a product of numbers in [0, 1] that is small where its own s_i or 1 - s_i is: near
    a corner of the unit cube the terms are as small as the value (its coefficients there are the
    values at the corner), where the powers of s are each near 1 and cancel; where every c has one
    sign nothing cancels anywhere.  The basis is never worse conditioned than the powers on [0, 1]
    (Farouki and Rajan, "On the numerical condition of polynomials in Bernstein form", 1987)."""
    lows = tuple(min(e[i] for e in polynomial) for i in range(count))
    form = {(tuple(a - b for a, b in zip(e, lows)), (0,) * count): c for e, c in polynomial.items() if c}
    for i in range(count):
        n = max(p[i] for p, _ in form)
        if not n:
            continue
        spread: dict = {}
        for (p, m), c in form.items():
            j = p[i]
            for k in range(j, n + 1):
                key = (p[:i] + (k,) + p[i + 1 :], m[:i] + (n - k,) + m[i + 1 :])
                weight = Fraction(math.comb(k, j) * math.comb(n, k), math.comb(n, j))
                spread[key] = spread.get(key, Fraction(0)) + c * weight
        form = {key: c for key, c in spread.items() if c}
    return {(tuple(a + b for a, b in zip(p, lows)), m): c for (p, m), c in form.items()}


def _exp_powers_split(terms: list[Term]) -> list[Term]:
    """``exp(k u)`` (k = 2, 3, 4) in a term where a term holds ``exp(u)`` as k factors ``exp(u)``,
    one array: the normal form writes exp(u)^2 as exp(2 u), and the gradient of ``(exp(x_n w) -
    y_n)^2``, ``2 x_n exp(2 x_n w) - 2 y_n exp(x_n w) x_n``, was evaluated as the difference of two
    products that are near each other near a fit (4e-4 off where its program was 1e-16 off); so
    written, the two pair into ``2 (exp(x_n w) - y_n) exp(x_n w) x_n`` (``_residual_pairs``).
    exp(u)^k is within k ulps of exp(k u) and overflows and underflows where it does (exp(u) is
    then inf or below 1e-154, its square inf or below 1e-308)."""
    exps = {_poly_key(f.arg) for t in terms for f in t.factors if isinstance(f, Apply) and f.func == "exp"}
    if len(exps) < 2:
        return terms
    out = []
    for term in terms:
        factors = []
        for f in term.factors:
            if isinstance(f, Apply) and f.func == "exp" and f.param is None:
                split = next(
                    (
                        (k, base)
                        for k in (2, 3, 4)
                        if _poly_key(base := Poly(tuple(t.scaled(Fraction(1, k)) for t in f.arg.terms), f.arg.indices))
                        in exps
                    ),
                    None,
                )
                if split is not None:
                    factors += [Apply("exp", split[1])] * split[0]
                    continue
            factors.append(f)
        out.append(term if len(factors) == len(term.factors) else Term(term.coeff, tuple(factors)))
    return out


def _saturating_call(atom) -> tuple[tuple, Fraction] | None:
    """``(c, p)`` where ``atom`` is a sigmoid or tanh call to the power p (p = 1 for the call
    itself), c the call up to the names of the letters its argument sums (``sigmoid(X_ni w_i)``
    is ``sigmoid(X_nd w_d)``)."""
    if isinstance(atom, Apply) and atom.func == "pow" and len(atom.arg.terms) == 1:
        (term,) = atom.arg.terms
        if term.coeff == 1 and len(term.factors) == 1 and isinstance(term.factors[0], Apply):
            call = term.factors[0]
            if call.func in _SATURATING and call.indices == atom.indices:
                return (call.func, call.indices, _poly_key(call.arg)), Fraction(atom.param)
    if isinstance(atom, Apply) and atom.func in _SATURATING:
        return (atom.func, atom.indices, _poly_key(atom.arg)), Fraction(1)
    return None


def _saturating_polynomials(terms: list[Term]) -> dict[int, dict[tuple, dict[Fraction, Fraction]]]:
    """For each term that holds the same factors as another but for the power of a sigmoid or
    tanh call (its absence the power 0), that call -> the polynomial in it that they form (power
    -> coefficient): a sum the optimiser evaluates as a product of 1 - s or 1 - t^2 (see
    ``_saturating``)."""
    calls = {found[0] for t in terms for f in t.factors if (found := _saturating_call(f))}
    groups: dict[tuple, list[tuple[int, Fraction]]] = {}
    for position, term in enumerate(terms):
        for call in calls:
            rest, power = [], Fraction(0)
            for f in term.factors:
                found = _saturating_call(f)
                if found is not None and found[0] == call:
                    power += found[1]
                else:
                    rest.append(f)
            groups.setdefault((call, tuple(sorted(rest, key=_text))), []).append((position, power))
    out: dict[int, dict[tuple, dict[Fraction, Fraction]]] = {}
    for (call, _), members in groups.items():
        if len({power for _, power in members}) < 2:
            continue
        polynomial: dict[Fraction, Fraction] = {}
        for position, power in members:
            polynomial[power] = polynomial.get(power, Fraction(0)) + terms[position].coeff
        for position, _ in members:
            out.setdefault(position, {})[call] = polynomial
    return out


def _saturating_depth(name: str, made: dict[str, Step]) -> int:
    """How many sigmoid or tanh steps the step ``name`` is computed from (itself not counted), in
    the steps ``made`` (by target)."""
    ancestors: set[str] = set()
    todo = list(made[name].reads()) if name in made else []
    while todo:
        source = todo.pop()
        if source in made and source not in ancestors:
            ancestors.add(source)
            todo.extend(made[source].reads())
    return sum(isinstance(made[n], Elementwise) and made[n].func in _SATURATING for n in ancestors)


def _added(a: dict, b: dict) -> dict:
    out = dict(a)
    for e, c in b.items():
        out[e] = out.get(e, Fraction(0)) + c
    return out


def _held_by_every_term(terms, pulled) -> tuple[Counter, list[list]]:
    """The factors that every term holds and ``pulled`` accepts (a multiset, in the first term's
    order), and each term's factors without them."""
    shared = Counter(f for f in terms[0].factors if pulled(f))
    for term in terms[1:]:
        shared &= Counter(f for f in term.factors if pulled(f))
    rests = []
    for term in terms:
        left, rest = Counter(shared), []
        for f in term.factors:
            if left.get(f, 0):
                left[f] -= 1
            else:
                rest.append(f)
        rests.append(rest)
    return shared, rests


def _common_factor(poly: Poly) -> tuple[tuple[Tensor, ...], Poly] | None:
    """``c x_n - c mu`` -> ``(c,), x_n - mu``: the tensor factors over output indices only that
    every term of a difference holds, and the difference without them; None where there are
    none.  Evaluated apart, ``c x_n`` and ``c mu`` round each on its own and their difference
    cancels to noise near a fit, where ``c (x_n - mu)`` keeps the residual the user wrote.  The
    terms of a statement itself go through :meth:`StraightLine._common_scalars` instead."""
    terms = poly.terms
    if len(terms) < 2 or all(t.coeff > 0 for t in terms) or all(t.coeff < 0 for t in terms):
        return None
    if any(isinstance(f, Delta) for t in terms for f in t.factors):
        return None  # a term with deltas fills its diagonal only: a factor pulled out would fill the rest
    free = set(poly.indices)

    def pulled(f) -> bool:
        return (
            isinstance(f, Tensor)
            and not is_reciprocal(f)
            and set(f.indices) <= free
            and len(set(f.indices)) == len(f.indices)
        )

    return _pulled_out(poly, pulled)


def _renamed_in(factors: tuple, others: tuple) -> tuple[dict[str, str], tuple] | None:
    """``(mapping, rest)`` where ``others`` holds every one of ``factors`` with its letters renamed
    by ``mapping`` (one factor of ``others`` for each), and ``rest`` besides; else None."""
    first = factors[0]
    for candidate in others:
        if not (
            isinstance(candidate, Tensor)
            and candidate.name == first.name
            and len(candidate.indices) == len(first.indices)
        ):
            continue
        mapping = dict(zip(first.indices, candidate.indices))
        if len(set(mapping.values())) != len(mapping):
            continue
        rest = list(others)
        for f in factors:
            wanted = Tensor(f.name, tuple(mapping[i] for i in f.indices))
            if wanted not in rest:
                break
            rest.remove(wanted)
        else:
            return mapping, tuple(rest)
    return None


def _pulled_out(poly: Poly, pulled) -> tuple[tuple, Poly] | None:
    """``(common, inner)``: the factors that ``pulled`` accepts and every term of ``poly`` holds,
    in the order the first term writes them, and the sum of what the terms hold besides, over the
    indices of ``poly`` it carries (``poly`` = common x inner); None where there are none."""
    terms = poly.terms
    shared, rests = _held_by_every_term(terms, pulled)
    if not shared:
        return None
    common = []
    for f in terms[0].factors:
        if shared.get(f, 0):
            shared[f] -= 1
            common.append(f)
    carried = {i for rest in rests for f in rest for i in f.indices}
    inner = Poly(
        tuple(Term(t.coeff, tuple(rest)) for t, rest in zip(terms, rests)),
        tuple(i for i in poly.indices if i in carried),
    )
    return tuple(common), inner


def _sums_alone(term: Term, k: int, free: set[str]) -> bool:
    """Whether factor ``k`` of ``term`` holds a summed index that no other factor holds: the d of
    ``Rs_nk (X_nd - C_kd)^2``, whose square is then read as the difference twice, summed over d
    in the one contraction (a squared copy of the N x K x D differences first took 10x the time)."""
    others = {i for m, f in enumerate(term.factors) if m != k for i in f.indices}
    return bool(set(term.factors[k].indices) - others - free)


def _lead(r: Poly) -> tuple[Fraction, Tensor] | None:
    """The first term of the sum ``r`` that is one tensor over all of r's letters, each once, with
    its coefficient; None where there is none."""
    for t in r.terms:
        if len(t.factors) == 1 and isinstance(t.factors[0], Tensor) and not is_reciprocal(t.factors[0]):
            f = t.factors[0]
            if sorted(f.indices) == sorted(r.indices) and len(set(f.indices)) == len(f.indices):
                return t.coeff, f
    return None


def _lead_letters(lead: tuple[Fraction, Tensor], g, r: Poly) -> dict[str, str] | None:
    """The letters of ``r`` as the factor ``g`` writes its leading tensor, where g is that tensor
    over distinct letters; else None."""
    f = lead[1]
    if not isinstance(g, Tensor) or g.name != f.name or len(g.indices) != len(f.indices):
        return None
    if len(set(g.indices)) != len(g.indices):
        return None
    return {i: j for i, j in zip(f.indices, g.indices)} if set(f.indices) == set(r.indices) else None


#: how many products of sums one statement may multiply out to compare with its terms (each try
#: costs a normal form; the covariance and the gradient of a correlation take a few)
PRODUCT_TRIES = 24


def _names_of(factors) -> tuple:
    """The factors of a product by name alone (deltas left out), as a sorted tuple."""
    return tuple(
        sorted(
            f.name
            if isinstance(f, Tensor)
            else f"{type(f).__name__}:{getattr(f, 'func', '')}:{getattr(f, 'param', '')}"
            for f in factors
            if not isinstance(f, Delta)
        )
    )


def _swaps_present(t: Term, chosen, names: set[tuple]) -> bool:
    """Whether, for each chosen factor, some term holds t's factors with that factor replaced by
    those of another term of its sum (by name): a cheap test that the product multiplied out
    can be among the terms."""
    for x, r, _ in chosen:
        others = [f for k, f in enumerate(t.factors) if k != x]
        lead = _lead(r)[1]
        swaps = [u for u in r.terms if not (len(u.factors) == 1 and u.factors[0] == lead)]
        if swaps and not any(_names_of([*others, *u.factors]) in names for u in swaps):
            return False
    return True


def _in_some_order(combined: Poly, look_up) -> tuple[Indices, object] | None:
    """``(combined's letters in some order, what look_up gives for the sum's key in that order)``
    (:func:`_poly_key`) for the first order where it gives something; else None."""
    for axes in itertools.permutations(combined.indices):
        found = look_up(_poly_key(Poly(combined.terms, axes)))
        if found is not None:
            return axes, found
    return None


def _counts_of(term: Term) -> list[str]:
    """The counts of ``term``: the letters of its ``delta_nn`` that nothing else in it carries."""
    uses = Counter(i for f in term.factors for i in f.indices)
    return [f.first for f in term.factors if isinstance(f, Delta) and f.first == f.second and uses[f.first] == 2]


def _uncounted_key(term: Term, free: set[str]) -> tuple:
    """``term`` up to the names of its summed letters, without its counts."""
    counts = set(_counts_of(term))
    kept = tuple(f for f in term.factors if not (isinstance(f, Delta) and f.first in counts))
    return canonical_key(Term(Fraction(1), kept), frozenset(free))


def _count_power(f) -> Delta | None:
    """The count of ``delta_nn^k`` (k a positive integer), else None."""
    if not isinstance(f, Apply) or f.func != "pow" or f.param is None or f.param <= 0 or f.param.denominator != 1:
        return None
    terms = f.arg.terms
    if len(terms) != 1 or terms[0].coeff != 1 or len(terms[0].factors) != 1:
        return None
    only = terms[0].factors[0]
    return only if isinstance(only, Delta) and only.first == only.second and is_count(only.first) else None


def _power_of_two(coeff: Fraction) -> bool:
    """Whether ``coeff`` is +-2^k: a product scaled by it is read back exactly by its reciprocal."""
    magnitude = abs(coeff)
    return magnitude != 0 and all(n & (n - 1) == 0 for n in (magnitude.numerator, magnitude.denominator))


def _product_read(poly: Poly, name: str, product: Term, out: Indices, coeff: Fraction) -> Poly | None:
    """``poly`` with each term that holds ``product`` (see :func:`_product_in`) reading it from the
    step ``name``, which holds it times ``coeff``; None where no term holds it."""
    terms, changed = [], False
    for term in poly.terms:
        found = _product_in(product, out, term, set(poly.indices))
        if found is not None:
            rest, letters = found
            term, changed = Term(term.coeff / coeff, (*rest, Tensor(name, letters))), True
        terms.append(term)
    return Poly(tuple(terms), poly.indices) if changed else None


def _product_in(product: Term, out: Indices, term: Term, free: set[str]) -> tuple[tuple, Indices] | None:
    """``(the term's other factors, the letters of out)`` where ``product`` (a step's term over
    the indices ``out``) is a sub-product of ``term``: its factors matched one to one, letters
    renamed consistently, each of its summed letters summed within the matched factors alone."""
    wanted = product.factors
    choices = [
        [
            k
            for k, f in enumerate(term.factors)
            if isinstance(f, Tensor) and f.name == g.name and len(f.indices) == len(g.indices)
        ]
        for g in wanted
    ]
    if any(not c for c in choices) or math.prod(len(c) for c in choices) > 64:
        return None
    summed = set(product.index_names()) - set(out)
    for picked in itertools.product(*choices):
        if len(set(picked)) != len(picked):
            continue
        letters: dict[str, str] = {}
        if not all(
            letters.setdefault(a, b) == b
            for g, k in zip(wanted, picked)
            for a, b in zip(g.indices, term.factors[k].indices)
        ):
            continue
        if len(set(letters.values())) != len(letters):
            continue
        rest = tuple(f for k, f in enumerate(term.factors) if k not in picked)
        outside = {i for f in rest for i in f.indices} | free
        if any(letters[i] in outside for i in summed):
            continue
        if any(i not in letters for i in out):  # an axis of the step no matched factor carries (broadcast)
            continue
        return rest, tuple(letters[i] for i in out)
    return None


class StraightLine:
    """A list of (target, step) computing named arrays in order; function calls hoisted and shared."""

    def __init__(self):
        self.steps: list[Step] = []
        self._calls: dict[tuple, str] = {}
        self._bound: dict[tuple, object] = {}  # input signature -> the plan of every step (runtime._Bound)
        #: the one plan whose arrays are kept between calls (those of the signature called last)
        self._reusing = None
        #: whether an elementwise step can warn (overflow, log of 0, NaN): only then is errstate set
        self._quiet = False
        #: the size hints of the statement being added (index -> the tensor axes it names as written)
        self._written: tuple = ()
        self._axis_hints: tuple = ()
        #: the statements computed as sums of two or more terms
        self._sum_statements: set[str] = set()
        #: the sums that factoring gave steps of their own, by step
        self._sums: dict[str, Poly] = {}
        #: statements that are a mean (``m = mean_n(x_n)``), by their canonical form
        self._means: dict[tuple, str] = {}
        #: the hints and the free indices of the statement being added
        self._hints: tuple = ()
        self._term_axes: tuple = ()  # (index, tensor, axis) of the term whose calls are being hoisted
        self._free: tuple = ()
        #: whether a step reads a square matrix (inv, det, logdet, a solve): evaluation then keeps
        #: one factorisation per matrix (einderiv.linalg)
        self._matrices = False
        #: the number the next step array's name takes (never one used before)
        self._next = 0
        #: how many more products of sums the statement being added may multiply out
        self._product_tries = PRODUCT_TRIES
        #: a tensor name for each call, by what it computes, when products of sums are compared
        self._placeholders: dict[tuple, str] = {}
        #: steps that are one product of tensors: (name, its term, its indices)
        self._products: list[tuple[str, Term, Indices, Fraction]] = []

    def _temp(self) -> str:
        """A fresh name for a step's array, numbered by its place; never one used before."""
        number = max(len(self.steps), self._next)
        self._next = number + 1
        return f"_t{number}"

    def _contract(self, name: str, poly: Poly, hints=()) -> None:
        """The step ``name = poly``; a difference whose terms all hold one factor over output
        indices (``c x_n - c mu``) as that factor times the difference (see :func:`_common_factor`:
        at x ~ 1e15 the gradient by s2 of ``r_n = (x_n - mu) / s2; L = r_n r_n`` was 9% off)."""
        if self._softmax_step(name, poly, hints):
            return
        pulled = _common_factor(poly)
        if pulled is None:
            poly = self._summed_step(poly) or self._earlier_products(poly)
            poly = self._residual_first(poly) or poly
            poly = self._shared_products(poly)
            self.steps.append(Contract(name, Contraction(poly, hints)))
            self._remember_product(name, poly)
            return
        common, inner = pulled
        product = Term(Fraction(1), (*common, Tensor(self._inner_step(inner, hints), inner.indices)))
        self.steps.append(Contract(name, Contraction(Poly((product,), poly.indices), hints)))

    def _softmax_step(self, name: str, poly: Poly, hints=()) -> bool:
        """The step ``name = poly`` as a softmax's own step where ``poly`` is one: a log-softmax
        (:meth:`_log_softmax`) or a softmax's centred product (:meth:`_softmax_centred`).  Whether
        it was taken."""
        return self._log_softmax(name, poly, hints) or self._softmax_centred(name, poly, hints)

    def _log_softmax(self, name: str, poly: Poly, hints=()) -> bool:
        """``v - logsumexp_R(v)`` (``log(softmax_R(v))`` as normal.py rewrites it) as one
        :class:`LogSoftmax` step, ``(v - max) - log(sum_R exp(v - max))``: the difference of v
        and its logsumexp step rounds away what is left after the largest entries (at z = [1e16,
        1e16, 0] it was 0 for log(1/2)).  Also ``c (v - logsumexp_R(v))`` (an entropy's ``-p
        log(p)`` holds ``logsumexp_R(v) - v``) and that times factors both terms hold, with a
        product an earlier step computed read from it (the cross-entropy ``-Y_nk log(softmax_k(X_nd
        W_dk))`` multiplied out is ``-Y_nk _t0_nk + Y_nk _t1_n``).  Whether the steps were taken."""
        common, inner = (), poly
        parts = self._log_softmax_parts(poly)
        if parts is None and len(poly.terms) == 2:
            pulled = _pulled_out(self._earlier_products(poly), lambda f: isinstance(f, Tensor))
            if pulled is not None:
                common, inner = pulled
                parts = self._log_softmax_parts(inner)
        if parts is None:
            return False
        v, axes, coeff = parts
        if not set(v.indices) <= set(poly.indices) | {i for f in common for i in f.indices}:
            return False  # z_k - logsumexp_k(z_k): k summed in one term only, a sum less one logsumexp
        if not common and coeff == 1 and v.indices == poly.indices:
            self.steps.append(LogSoftmax(name, source=v.name, axes=(axes, ())))
            return True
        log_softmax = self._temp()
        self.steps.append(LogSoftmax(log_softmax, source=v.name, axes=(axes, ())))
        term = Term(coeff, (*common, Tensor(log_softmax, v.indices)))
        self.steps.append(Contract(name, Contraction(Poly((term,), poly.indices), hints)))
        return True

    def _softmax_centred(self, name: str, poly: Poly, hints=()) -> bool:
        """``c R (X_a - p_b X_b)`` (p a softmax along b; a softmax's VJP and HVP hold it) as one
        :class:`SoftmaxCentred` step of X, times c R: summed, X_t - p_b X_b cancelled to 0
        wherever p_t rounds to 1 (the gradient of ``softmax_k(z_k) w_k`` at z = [40, 0, -5] had 0
        for -4.3e-18 in its first entry; jax too).  Whether the steps were taken."""
        parts = self._softmax_centred_parts(poly)
        if parts is None:
            return False
        p, axes, x, letters, coeff, rest = parts
        if coeff == 1 and not rest and letters == poly.indices:
            self.steps.append(SoftmaxCentred(name, source=p, operand=x, axes=axes))
            return True
        centred = self._temp()
        self.steps.append(SoftmaxCentred(centred, source=p, operand=x, axes=axes))
        term = Term(coeff, (*rest, Tensor(centred, letters)))
        self.steps.append(Contract(name, Contraction(Poly((term,), poly.indices), hints)))
        return True

    def _softmax_centred_parts(self, poly: Poly) -> tuple | None:
        """``(p, its axes, x, x's letters, c, R)`` where ``poly`` is ``c R X_a - c R p_b X_b``: p an
        array holding a softmax along one axis whose index b is summed (:meth:`_softmax_arrays`),
        X the second term's factors that carry b (x: their array, or the step computing their
        product, laid out as p or as X is read), R the others, which share no letter with X
        outside p's, and the first term R times X with a written for b.  p's other letters are
        free or carried by R or X; an X that lacks some is computed broadcast to p's shape (the
        HVP of ``sum_n(logsumexp_k(lw_k + D_nk))``: ``p_jn (v_j - p_in v_i)``, summed over n).
        One-statement attention's JVP ``V_bc G_ac t2_ab - t1_ad V_bc G_ac t2_ad`` is R = V_bc
        G_ac times t2 centred along b."""
        if len(poly.terms) != 2 or len(set(poly.indices)) != len(poly.indices):
            return None
        softmax = self._softmax_arrays()
        free = set(poly.indices)
        for single, pair in (poly.terms, poly.terms[::-1]):
            if pair.coeff != -single.coeff or not single.factors:
                continue
            want = _poly_key(Poly((Term(Fraction(1), single.factors),), poly.indices))
            for at, p in enumerate(pair.factors):
                if not isinstance(p, Tensor) or p.name not in softmax or len(set(p.indices)) != len(p.indices):
                    continue
                b = p.indices[self._softmax_axis(softmax[p.name])]
                others = pair.factors[:at] + pair.factors[at + 1 :]
                centred = [f for f in others if b in f.indices]
                rest = tuple(f for f in others if b not in f.indices)
                read = {i for f in centred for i in f.indices}
                own = read - set(p.indices)  # summed within X alone: X is an array of p's letters
                held = free | read | {i for f in rest for i in f.indices}
                if b in free or not centred or not set(p.indices) - {b} <= held:
                    # p's other letters free, or summed with a factor of both terms (Σ_n p_jn (v_j -
                    # p_in v_i), the HVP of sum_n(logsumexp_k(lw_k + D_nk))); an X that lacks some of
                    # them is computed broadcast to p's shape
                    continue
                if own & (free | {i for f in rest for i in f.indices}) or any(isinstance(f, Apply) for f in centred):
                    continue  # X with a free letter p lacks, X and R summed together, or b read inside a call
                for a in sorted(free - set(p.indices)):
                    if any(a in f.indices for f in centred):
                        continue
                    placed = tuple(rename_atom(f, {b: a}) for f in centred)
                    if _poly_key(Poly((Term(Fraction(1), rest + placed),), poly.indices)) != want:
                        continue
                    return self._centred_operand(softmax, p, b, a, placed, single.coeff, rest)
        return None

    def _centred_operand(self, softmax: dict, p: Tensor, b: str, a: str, placed: tuple, coeff, rest) -> tuple:
        """:meth:`_softmax_centred_parts`' result for X = ``placed`` (its b written a): X's array
        where it is one tensor read as a softmax array is laid out, else the step computing X in
        p's layout."""
        one = placed[0] if len(placed) == 1 else None
        if (
            isinstance(one, Tensor)
            and not is_reciprocal(one)  # the 1/n of a mean (mean_l(delta_lj)) is no array: computed below
            and len(set(one.indices)) == len(one.indices) == len(p.indices)
        ):
            laid = self._laid_out_as(softmax, p, tuple(b if i == a else i for i in one.indices))
            if laid is not None:
                axes = ((self._softmax_axis(softmax[laid]),), ())
                return laid, axes, one.name, one.indices, coeff, rest
        letters = tuple(a if i == b else i for i in p.indices)
        # sized as p: X may carry no array of a letter (1/n_a, of the gradient of mean_i(softmax_i(z_i)))
        sized = tuple(("axis", i, p.name, k) for k, i in enumerate(letters))
        x = self._inner_step(Poly((Term(Fraction(1), placed),), letters), sized)
        return p.name, ((self._softmax_axis(softmax[p.name]),), ()), x, letters, coeff, rest

    def _softmax_arrays(self) -> dict[str, tuple[str, tuple[int, ...], int]]:
        """Each array that holds a softmax along one axis -> ``(the softmax step, order, axis)``:
        ``order[j]`` is the step's axis that the array's axis j holds (None: the step's own
        order), and ``axis`` the step's softmax axis.  The softmax steps themselves, and the
        permutations of them that a statement laying its axes out otherwise makes (``P_nk =
        softmax_k(Z_kn)`` is the step ``_t0 = softmax(Z)`` over axis 0, then ``P = 'kn->nk'
        (_t0)``; its 1 - P and its centred products were missed)."""
        found: dict[str, tuple[str, tuple[int, ...] | None, int]] = {
            s.target: (s.target, None, s.axes[0][0])
            for s in self.steps
            if isinstance(s, Softmax) and len(s.axes[0]) == 1
        }
        for step in self.steps:
            if not isinstance(step, Contract) or len(step.contraction.poly.terms) != 1:
                continue
            poly = step.contraction.poly
            (term,) = poly.terms
            read = term.factors[0] if len(term.factors) == 1 else None
            if term.coeff != 1 or not isinstance(read, Tensor) or read.name not in found:
                continue
            distinct = len(set(read.indices)) == len(read.indices) == len(poly.indices)
            if distinct and set(read.indices) == set(poly.indices):
                root, order, axis = found[read.name]
                own = order or tuple(range(len(read.indices)))
                found[step.target] = (root, tuple(own[read.indices.index(i)] for i in poly.indices), axis)
        return found

    @staticmethod
    def _softmax_axis(entry: tuple) -> int:
        """The softmax axis of an array of :meth:`_softmax_arrays` in its own layout."""
        _, order, axis = entry
        return axis if order is None else order.index(axis)

    @staticmethod
    def _laid_out_as(found: dict, p: Tensor, letters: tuple[str, ...]) -> str | None:
        """The array of :meth:`_softmax_arrays` holding the softmax that ``p`` reads with its axes
        in the order of ``letters`` (a permutation of p's), or None where no step lays it out so."""
        root, order, _ = found[p.name]
        on_root = dict(zip(order or range(len(p.indices)), p.indices))  # the step's axis -> its letter
        for name, (other, layout, _) in found.items():
            if other == root and tuple(on_root[k] for k in (layout or range(len(letters)))) == letters:
                return name
        return None

    def _shared_products(self, poly: Poly) -> Poly:
        """``poly`` with an elementwise product that one term is (``g_j = cos(q_j c_j) c_j a_j``)
        and another term holds over other letters (``- g_r q_r``: the gradient through a softmax)
        computed once, as a step both terms read.  Computed apart they round apart, and where q is
        one-hot their difference, 0 exactly from one array, was 7e-15: times exp(t_0) = 2e17 the
        gradient of ``sum_i(sin(softmax_i(exp(t_i)) c_i) a_i)`` at t = [40, 0, 0] was 1672 for 0.
        The step is :meth:`_source`'s, so the same product elsewhere in the line reads it too."""
        terms = list(poly.terms)
        for k, term in enumerate(terms):
            factors = term.factors
            letters = factors[0].indices if factors and isinstance(factors[0], Tensor) else ()
            if len(factors) < 2 or not letters or len(set(letters)) != len(letters):
                continue
            if not all(
                isinstance(f, Tensor) and not is_reciprocal(f) and set(f.indices) == set(letters) for f in factors
            ):
                continue
            found = [(m, _renamed_in(factors, other.factors)) for m, other in enumerate(terms) if m != k]
            found = [(m, hit) for m, hit in found if hit is not None]
            if not found:
                continue
            name = self._source(Poly((Term(Fraction(1), factors),), letters))  # once per line, as a call's argument
            terms[k] = Term(term.coeff, (Tensor(name, letters),))
            for m, (mapping, rest) in found:
                renamed = tuple(mapping[i] for i in letters)
                terms[m] = Term(terms[m].coeff, (*rest, Tensor(name, renamed)))
            return self._shared_products(Poly(tuple(terms), poly.indices))
        return poly

    def _log_softmax_parts(self, poly: Poly) -> tuple[Tensor, tuple[int, ...], Fraction] | None:
        """``(v, axes, c)`` where ``poly`` is ``c v - c lse`` for a :class:`LogSumExp` step lse of
        v over v's ``axes``, else None."""
        if len(poly.terms) != 2 or poly.terms[0].coeff != -poly.terms[1].coeff:
            return None
        factors = [t.factors[0] if len(t.factors) == 1 else None for t in poly.terms]
        if not all(isinstance(f, Tensor) for f in factors):
            return None
        made = {s.target: s for s in self.steps if isinstance(s, LogSumExp) and s.target in {f.name for f in factors}}
        if len(made) != 1:
            return None
        lse_at = next(k for k, f in enumerate(factors) if f.name in made)
        v, lse, step = factors[1 - lse_at], factors[lse_at], made[factors[lse_at].name]
        axes, order = step.axes
        if step.source != v.name or is_reciprocal(v) or len(set(v.indices)) != len(v.indices):
            return None
        if len(v.indices) != len(axes) + len(order) or lse.indices != tuple(v.indices[k] for k in order):
            return None
        return v, axes, poly.terms[1 - lse_at].coeff

    def _residual_first(self, poly: Poly) -> Poly | None:
        """``sum_n(softplus(z_n) - y_n z_n)`` as the sum over n of the step ``r_n = softplus(z_n)
        - y_n z_n``: a sum of terms, each an elementwise product summed over the same axes, is
        summed after its terms are combined element by element, never as a difference of sums
        (at z = [-40, 300], y = [0, 1] that difference was 0, where the loss is 4e-18).  The
        error of the sum is then a few ulps of the sum of |residuals|, never more than that of
        the sums apart.  Every factor of a term carries all of its letters (or none), and every
        term all the output's, so the residual is no larger than a factor; the summed letters of
        two terms are matched where they run along the same array axis (:meth:`_index_axes`),
        which proves their sizes equal (``sum_n(a_n) + sum_n(b_n)`` may sum two lengths, and
        stays two sums).  None where ``poly`` is not such a sum."""
        if len(poly.terms) < 2:
            return None
        free = set(poly.indices)
        shapes = []  # per term: its summed letters and the array axes each runs along
        for term in poly.terms:
            letters = term.index_names()
            if not all(isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors):
                return None
            if any(
                f.indices and (set(f.indices) != letters or len(set(f.indices)) != len(f.indices)) for f in term.factors
            ):
                return None
            summed = sorted(letters - free)
            if not summed or not free <= letters:  # (sum_n(e_nk) - sum_n(A_nj): an N x K x J residual)
                return None
            axes = {
                s: set().union(
                    *(self._index_axes(f.name, a) for f in term.factors for a, i in enumerate(f.indices) if i == s)
                )
                for s in summed
            }
            shapes.append((summed, axes))
        first, first_axes = shapes[0]
        terms = [poly.terms[0]]
        for term, (summed, axes) in zip(poly.terms[1:], shapes[1:]):
            if len(summed) != len(first):
                return None
            mapping = {}
            for s in summed:
                matches = [t for t in first if axes[s] & first_axes[t]]
                if len(matches) != 1 or matches[0] in mapping.values():
                    return None
                mapping[s] = matches[0]
            terms.append(term.rename(mapping))
        residual = Poly(tuple(terms), (*poly.indices, *first))
        name = self._inner_step(residual, self._hints)
        return Poly((Term(Fraction(1), (Tensor(name, residual.indices),)),), poly.indices)

    def _remember_product(self, name: str, poly: Poly) -> None:
        """Note a step that is one contraction of tensors (``_t0 = X_nd W_dk``), for
        :meth:`_earlier_products` to find inside later terms."""
        if len(poly.terms) != 1 or not _power_of_two(poly.terms[0].coeff) or len(poly.terms[0].factors) < 2:
            return
        (term,) = poly.terms
        if all(isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors):
            if set(term.index_names()) - set(poly.indices):  # something is summed: worth reading back
                # (a coefficient of +-2^k, -1 X_nd u_d, is read back exactly: times its reciprocal)
                product = Term(Fraction(1), term.factors)
                self._products.append((name, product, tuple(poly.indices), term.coeff))
                self._read_by_earlier(name, product, tuple(poly.indices), term.coeff)

    def _read_by_earlier(self, name: str, product: Term, out: Indices, coeff: Fraction = Fraction(1)) -> None:
        """Where an earlier step's term holds the product the step ``name`` (the last one) just
        computed, that step reads it instead, and the product moves up before the first such
        step (its operands are inputs, or arrays computed before that step): in the focal loss's
        Hessian-vector product ``d2LdwvddLdp_n = _t11_n X_ni v_i`` came before ``_t15 = X_ni v_i``
        and formed X v again, a pass over X (the program ran 1.35x its one statement).  The
        later steps' own reading of earlier products is :meth:`_earlier_products`."""
        made = {step.target: k for k, step in enumerate(self.steps)}
        # everything the step reads, the arrays its size hints name too (a reviewer's find: moved
        # above the adjoint its hints named, the HVP stopped with a KeyError)
        needs = [made[name] for name in self.steps[-1].reads() if name in made]
        first = None
        for k, step in enumerate(self.steps[:-1]):
            if type(step) is not Contract or k <= max(needs, default=-1):
                continue
            read = _product_read(step.contraction.poly, name, product, out, coeff)
            if read is not None:
                self.steps[k] = replace(step, contraction=Contraction(read, step.contraction.hints))
                first = k if first is None else first
        if first is not None:
            self.steps.insert(first, self.steps.pop())

    def _earlier_products(self, poly: Poly) -> Poly:
        """``poly`` with each product of tensors that an earlier step computed read from that
        step: ``-Y_nk X_nd W_dk`` after ``_t0 = X_nd W_dk`` (the log-softmax's argument) is
        ``-Y_nk _t0_nk``, one pass over N x K numbers where opt_einsum would form X W again (the
        one-statement softmax cross-entropy took 2x its program form).  A summed letter of the
        step's product must be summed within the factors it replaces (nowhere else in the term,
        not free)."""
        if not self._products:
            return poly
        computed = {step.target for step in self.steps}
        for name, product, out, coeff in self._products:
            if name in computed:
                poly = _product_read(poly, name, product, out, coeff) or poly
        return poly

    def _inner_step(self, inner: Poly, hints=()) -> str:
        """The step computing the sum ``inner``, once per line: the gradients by several
        parameters share the residual each of them factors out (``h_ni W2_i - y_n`` in the
        gradients of a two-layer network by W1 and by W2)."""
        key = ("combined", _poly_key(inner))
        made = self._calls.get(key)
        if made is None:
            made = self._calls[key] = self._temp()
            if not self._softmax_step(made, inner, hints):
                self.steps.append(Contract(made, Contraction(self._shared_products(inner), hints)))
            self._sums[made] = inner
        return made

    def _summed_step(self, poly: Poly) -> Poly | None:
        """``poly`` as a sum over axes of a sum that an earlier step computes, where it is one:
        the gradient by b2 of ``0.5 (h_nk W2_k + b2 - y_n)^2`` is the residual that the gradient
        by W2 formed, summed over n (one pass over N numbers, not a second product h W2, and no
        difference of two large sums).  Every term of the earlier sum must run over the axes summed
        (``A_nk w_k - m`` broadcasts m along n: summed over n it is N m, where the statement's own
        ``A_nk w_k - m`` counts m once).  None where no such step is still computed."""
        if len(poly.terms) < 2:
            return None
        computed = {step.target for step in self.steps}
        want = _poly_key(poly)
        for name, inner in self._sums.items():
            extra = len(inner.indices) - len(poly.indices)
            if name not in computed or extra < 1 or len(inner.terms) != len(poly.terms):
                continue
            for kept in itertools.permutations(range(len(inner.indices)), len(poly.indices)):
                dropped = {i for k, i in enumerate(inner.indices) if k not in kept}
                if any(not dropped <= {i for f in t.factors for i in f.indices} for t in inner.terms):
                    continue  # a term broadcast along a dropped axis would be summed N times over
                if _poly_key(Poly(inner.terms, tuple(inner.indices[k] for k in kept))) != want:
                    continue
                letters = dict(zip((inner.indices[k] for k in kept), poly.indices))
                taken = set(poly.all_index_names()) | set(inner.indices)
                fresh = _fresh(taken, "_s")
                axes = tuple(letters.get(i) or next(fresh) for i in inner.indices)
                return Poly((Term(Fraction(1), (Tensor(name, axes),)),), poly.indices)
        return None

    def _combined(self, poly: Poly) -> tuple[str, Indices, tuple]:
        """The sum ``poly`` that factoring combined, as ``(the step computing it, its indices, the
        factors pulled out of it)``: the caller multiplies those into the term that reads it."""
        pulled = _common_factor(poly)
        common, inner = pulled if pulled is not None else ((), poly)
        return self._inner_step(inner), inner.indices, tuple(common)

    def hoist(self, poly: Poly) -> Poly:
        """``poly`` with every call replaced by a tensor computed by an earlier step."""
        terms = []
        written, free = list(poly.terms), set(poly.indices)
        written = _exp_powers_split(written)
        written = self._summed_residuals(written, free)
        written = self._residual_products(written, free, poly.indices)  # before a count and a mean pair off
        written = self._counted_means(written, free, poly.indices)
        written = self._named_means(written, free, poly.indices)
        written = self._summed_residuals(written, free)
        written = self._residual_products(written, free, poly.indices)
        while (squared := self._merge_square(written, free) or self._merge_power(written, free)) is not None:
            written = squared  # before a count pairs off
        recounted = self._recount(written, set(poly.indices))
        outer = self._term_axes
        for term in self._residual_pairs(recounted, set(poly.indices)):  # before solves replace inv(S)
            alone = sum(1 for f in term.factors if f.indices) == 1  # the only factor with axes
            self._term_axes = tuple(
                (i, f.matrix if isinstance(f, MatrixFn) else f.name, axis)
                for f in term.factors
                if isinstance(f, (Tensor, MatrixFn)) and not is_reciprocal(f)
                for axis, i in enumerate(f.indices)
            )
            factors = [
                g
                for k, f in enumerate(term.factors)
                for g in self._hoist_factor(f, alone or _sums_alone(term, k, free))
            ]
            self._term_axes = outer
            factors = self._solves(factors, set(poly.indices))
            factors = [self._hoist_matrix(f) if isinstance(f, MatrixFn) else f for f in factors]
            terms.append(Term(term.coeff, tuple(factors)))
        terms = self._saturating(terms, free)
        terms = self._softmax_jacobians(terms, free)
        terms = self._number_residuals(terms, free)
        terms = self._shared_pairs(terms, free)
        terms = list(self._factor_shared(list(self._factor_out(terms, free)), free))
        return Poly(self._common_scalars(terms, poly.indices), poly.indices)

    def _softmax_jacobians(self, terms: list[Term], free: set[str]) -> list[Term]:
        """The softmax's Jacobian diag(p) - p p^T, which the Hessians of logsumexp and of a
        softmax's cross-entropy hold, evaluated entry by entry as one product: ``R p_a delta_ab -
        R p_a p_b`` (p a softmax step along a, b in its place in the other term; a and b free) as
        ``R p_a c_a delta_ab - R p_a p_b M_ab``, and its diagonal ``R p_a - R p_a^2`` as ``R p_a
        c_a``, with c = 1 - p a :class:`SoftmaxComplement` step and M = 1 - delta (0 on the
        diagonal, 1 off it).  Summed, p_a - p_a^2 cancelled to 0 wherever p_a rounds to 1: the
        Hessian of logsumexp at [40, 0, -5] had 0 for 4.3e-18 (jax too).  Ends: each pair is
        rewritten once, into terms holding a c or an M, which no pair holds."""
        softmax = self._softmax_arrays()
        if not softmax or len(terms) < 2:
            return terms
        squares = {
            s.target: s.source
            for s in self.steps
            if isinstance(s, Elementwise) and s.func == "pow" and s.param == 2 and s.source in softmax
        }

        def key(factors) -> tuple:
            return tuple(sorted(map(repr, factors)))

        positions: dict[tuple, list[int]] = {}
        for k, term in enumerate(terms):
            positions.setdefault(key(term.factors), []).append(k)

        def partner_of(k: int, factors) -> int | None:
            found = positions.get(key(factors), ())
            return next((m for m in found if m != k and m not in done and terms[m].coeff == -terms[k].coeff), None)

        out: list[Term | None] = list(terms)
        done: set[int] = set()
        for k, term in enumerate(terms):
            for place, p in enumerate(term.factors):
                entry = softmax.get(p.name) if isinstance(p, Tensor) else None
                if k in done or entry is None or len(set(p.indices)) != len(p.indices):
                    continue
                axis = self._softmax_axis(entry)
                axes = ((axis,), ())
                rest = term.factors[:place] + term.factors[place + 1 :]
                squared = [Tensor(n, p.indices) for n, source in squares.items() if source == p.name]
                diagonal = next(
                    (m for f in [(p, p), *((q,) for q in squared)] if (m := partner_of(k, (*rest, *f))) is not None),
                    None,
                )
                if diagonal is not None:  # R p_a - R p_a^2 = R p_a c_a
                    complement = Tensor(self._softmax_complement(p.name, axes), p.indices)
                    out[k] = Term(term.coeff, (*term.factors[: place + 1], complement, *rest[place:]))
                    out[diagonal] = None
                    done |= {k, diagonal}
                    continue
                a = p.indices[axis]
                for at, delta in enumerate(rest):
                    if not isinstance(delta, Delta) or a not in delta.indices or delta.first == delta.second:
                        continue
                    b = delta.second if delta.first == a else delta.first
                    if not {a, b} <= free or b in p.indices:
                        continue
                    other = Tensor(p.name, p.indices[:axis] + (b,) + p.indices[axis + 1 :])
                    partner = partner_of(k, (*rest[:at], *rest[at + 1 :], p, other))
                    if partner is None:
                        continue
                    complement = Tensor(self._softmax_complement(p.name, axes), p.indices)
                    mask = Tensor(self._off_diagonal(p.name, axis), (a, b))
                    out[k] = Term(term.coeff, (*term.factors[: place + 1], complement, *term.factors[place + 1 :]))
                    out[partner] = Term(terms[partner].coeff, (*terms[partner].factors, mask))
                    done |= {k, partner}
                    break
        return [t for t in out if t is not None]

    def _softmax_complement(self, name: str, axes: tuple) -> str:
        """The step holding 1 - p for the array ``name`` = p, a softmax along ``axes[0]``
        (:class:`SoftmaxComplement`)."""
        key = ("softmax complement", name)
        if key not in self._calls:
            self._calls[key] = self._temp()
            self.steps.append(SoftmaxComplement(self._calls[key], source=name, axes=axes))
        return self._calls[key]

    def _off_diagonal(self, name: str, axis: int) -> str:
        """The step holding ``M_ab = 1 - delta_ab`` over axis ``axis`` of the array ``name``: 1
        off the diagonal, 0 on it."""
        key = ("off diagonal", name, axis)
        if key not in self._calls:
            a, b = fresh_indices(2, set())
            mask = Poly((Term(Fraction(1), ()), Term(Fraction(-1), (Delta(a, b),))), (a, b))
            self._calls[key] = self._temp()
            hints = (("axis", a, name, axis), ("axis", b, name, axis))
            self.steps.append(Contract(self._calls[key], Contraction(mask, hints)))
        return self._calls[key]

    def _number_residuals(self, terms: list[Term], free: set[str]) -> list[Term]:
        """``a F + b x F`` -> ``(a + b x) F`` for numbers a, b, a tensor x and a product F of
        tensors holding x's indices: ``-log1p(-x) + x log1p(-x)``, the expanded
        ``-(1 - x) log1p(-x)`` of a binary entropy, is computed as that product again.  Apart, the
        two terms are near each other where x is near -a / b and their difference cancels (the
        entropy 10% off at x = 1 - 2^-50), where ``a + b x`` is exact there; and beside other terms
        they are added one by one (a focal loss's gradient ``... + p_n^3 X_ni - y_n p_n^3 X_ni``
        added 1e-13 to p^3 ~ 1 and took it away again: 7.8e-5 off at z = 10, 0 from z = 15).  Over
        a summed index, x is no power of a sigmoid or tanh step (see :meth:`_saturating`).
        Ends: each merge leaves one term fewer."""

        def of_tensors(term: Term) -> bool:
            return all(isinstance(f, Tensor) and not is_reciprocal(f) and f.indices for f in term.factors)

        terms = list(terms)
        merged = True
        while merged:
            merged = False
            keys = {tuple(sorted(map(repr, t.factors))): k for k, t in enumerate(terms)}
            for k, term in enumerate(terms):
                if len(term.factors) < 2 or not of_tensors(term):
                    continue
                for at, x in enumerate(term.factors):
                    rest = term.factors[:at] + term.factors[at + 1 :]
                    partner = keys.get(tuple(sorted(map(repr, rest))))
                    if (
                        partner is None
                        or partner == k
                        or len(set(x.indices)) != len(x.indices)  # A_ii: its diagonal, no residual's axes
                        or set(x.indices) - {i for f in rest for i in f.indices}
                    ):
                        continue
                    if term.index_names() - free and self._powered(x) is not None:
                        # a power of a sigmoid or tanh step in a sum over samples is _saturating's and
                        # factoring's to group (merged here first, a 4-layer network's Hessian by W1
                        # lost the grouping by its last layer's polynomial: 1.4x the FLOPs)
                        continue
                    # with a positive number, a + b x or -(-a - b x): 1 - 2 p_i and -1 + 2 p_i are one
                    # step (the Hessian diagonal of softmax_k(z_k) c_k held both, and its (1 - 2 p_i)
                    # (c_i - c_k p_k) was then no softmax's centred difference: 1.6e-7 off at z = 30
                    # [1, -0.5, 0.3], where c_i - c_k p_k cancels)
                    sign = Fraction(-1 if terms[partner].coeff < 0 else 1)
                    inner = Poly((Term(sign * terms[partner].coeff, ()), Term(sign * term.coeff, (x,))), x.indices)
                    residual = Tensor(self._inner_step(inner), x.indices)
                    combined = Term(sign, (residual, *rest))
                    terms = [
                        combined if m == min(k, partner) else t for m, t in enumerate(terms) if m != max(k, partner)
                    ]
                    merged = True
                    break
                if merged:
                    break
        return terms

    def _saturates(self, v) -> bool:
        """Whether ``v`` is a sigmoid or tanh, a call or a step: 1 - t^2 of a tanh is evaluated
        as cosh^-2 (:meth:`_saturating`), where (1 - t)(1 + t) is 0 from u = 19."""
        if isinstance(v, Apply):
            return v.func in _SATURATING
        steps = {step.target: step for step in self.steps if isinstance(step, Elementwise)}
        step = steps.get(v.name) if isinstance(v, Tensor) else None
        return step is not None and step.func in _SATURATING

    def _powered(self, f) -> tuple[tuple[str, Indices], Fraction] | None:
        """``((s, indices), p)`` for a factor holding ``s^p`` (p > 0), where step ``s`` is a
        sigmoid or tanh."""
        if not isinstance(f, Tensor) or len(set(f.indices)) != len(f.indices):
            return None
        step = self._elementwise.get(f.name)
        if step is not None and step.func in _SATURATING:
            return (f.name, f.indices), Fraction(1)
        if step is not None and step.func == "pow" and step.param > 0:
            base = self._elementwise.get(step.source)
            if base is not None and base.func in _SATURATING:
                return (step.source, f.indices), step.param
        return None

    def _saturating(self, terms: list[Term], free: set[str]) -> list[Term]:
        """Terms that differ only in the power of one sigmoid or tanh step, ``R P(s)`` with P a
        polynomial, are evaluated as ``R (1 - s)^m Q(s)`` with ``1 - s = sigmoid(-u)`` for
        ``s = sigmoid(u)``, or ``R (1 - t^2)^m Q(t)`` with ``1 - t^2 = cosh(u)^-2`` for ``t = tanh(u)``,
        m as large as divides P exactly: the derivatives of sigmoid and tanh (s (1 - s),
        s (1 - s) (1 - 2 s), 1 - t^2, ...), which differentiation writes as sums of powers, are
        evaluated as products.  Where s or t saturates (at u = 37, s rounds to 1) the sum of
        powers is 0 or a few ulps of 1, while the product keeps its relative accuracy (the logistic
        Hessian at a margin of 40 is 4e-18 x x^T, not 0; sigmoid'' at 40 is -4e-18, not 0).  A term
        without the step joins only where the step's indices are free or carried by R (in
        ``1 - sum_j(t_j^2)`` the 1 is not summed over j).  The printed text is unchanged.  Sums of
        up to 256 terms are read (an LSTM cell's Hessian has 70), the joint Bernstein forms of
        :meth:`_jointly_saturating` only up to 64.
        Ends: each rewrite lowers the degree of P, and the passes over the variables are bounded."""
        self._elementwise = {step.target: step for step in self.steps if isinstance(step, Elementwise)}
        if len(terms) < 2 or len(terms) > 256:
            return terms
        self._deferred: dict[str, str] = {}  # a tanh's cosh(u)^-2m, kept apart -> the tanh step
        if len(terms) <= 64:  # its Bernstein forms grow with the terms' variables: bounded
            terms = self._jointly_saturating(terms, free)
        terms = self._factored_variables(terms, free)
        # again with the summed letters named alike in every term: the outer tanh's slope
        # 1 - t_nl^2 beside ``W_jl v_l`` in one term, and its 1 beside ``W_jk v_k`` in another (a
        # 3-step RNN's gradient by W, whose 1 - t^2 was then 0 where t saturates); kept only where
        # more of it factors, so that nothing the letters as written grouped is lost
        for _ in range(3):  # again while it factors: a slope that factored joins the terms it now matches
            relabelled = self._canonical_letters(terms, free)
            if relabelled == terms or (again := self._factored_variables(relabelled, free)) == relabelled:
                break
            terms = again
        return [self._deferred_merged(term) for term in terms]

    def _canonical_letters(self, terms: list[Term], free: set[str]) -> list[Term]:
        """``terms`` with each term's summed letters (counts kept) renamed in the order they first
        appear, in the named arrays first, then in the steps that hold no sigmoid or tanh power
        (complements, exps, products), then in those that do, each by name: terms that are one product with their
        letters named apart then hold the same factors, and a power ``t_nl^2`` is named after the
        ``W_jl`` that sums it.  A letter a delta holds keeps its name, and no letter is renamed to
        a count's: the size hints name them (``delta_jj``, the length of j, read back from a
        printed text that sums V_nj, is a count ``j#`` sized by j's axes: with n renamed j, it
        could not be sized)."""

        def renamed(t: Term) -> list[str]:
            kept = {i for f in t.factors if isinstance(f, Delta) for i in f.indices}
            return sorted({i for i in t.index_names() if i not in free and not is_count(i) and i not in kept})

        summed = [renamed(t) for t in terms]
        taken = set(free) | {i for t in terms for i in t.index_names()}
        taken |= {count_letter(i) for i in taken if is_count(i)}
        pool = fresh_indices(max(map(len, summed), default=0), taken)
        out = []
        for term, letters in zip(terms, summed):
            factors = sorted(
                term.factors,
                key=lambda f: (
                    self._powered(f) is not None,
                    getattr(f, "name", "_").startswith("_"),
                    getattr(f, "name", ""),
                ),
            )
            order = list(dict.fromkeys(i for f in factors for i in f.indices if i in letters))
            out.append(term.rename(dict(zip(order, pool))))
        return out

    def _factored_variables(self, terms: list[Term], free: set[str]) -> list[Term]:
        """The passes of :meth:`_saturating` over each sigmoid or tanh variable in ``terms``."""
        self._elementwise = {step.target: step for step in self.steps if isinstance(step, Elementwise)}
        made = {step.target: step for step in self.steps}
        variables = dict.fromkeys(found[0] for t in terms for f in t.factors if (found := self._powered(f)))
        # the inner steps first: each derivative of an outer step's polynomial (in a = sigmoid(t))
        # carries the inner one's slope (1 - t^2), so every coefficient of a power of a divides by
        # it, where the outer polynomial's divisions differ from one power of t to the next (the
        # third derivative of softplus(tanh(x)) was -6.7e-16 from x = 20 for 5e-17 and less)
        variables = dict.fromkeys(sorted(variables, key=lambda v: _saturating_depth(v[0], made)))
        # again over the variables while one factors: a constant that a polynomial in one step
        # took (2 - 8 t^2 + 6 t^4 = 2 (1 - t^2) (1 - 3 t^2)) no longer keeps another's from
        # factoring (-8 s + 8 s^2 beside it: 2 - 8 s + 8 s^2 does not divide by 1 - s)
        for _ in range(len(variables)):
            start = terms
            for variable in variables:
                # again while it factors: powers of the complement merged to c^0 leave terms that
                # differ only in s or t again (the Hessian of log(1 - t^2) is -2 + 2 t^2 = -2 c)
                for _ in range(4):
                    before, terms = terms, self._factored_powers(terms, variable, free)
                    if terms == before:
                        break
            if terms == start:
                break
        return terms

    def _deferred_merged(self, term: Term) -> Term:
        """``term`` with each tanh complement that :meth:`_saturated_factors` kept apart multiplied
        into a factor over its indices (:meth:`_elementwise_first`), now that every variable's
        pass is done."""
        deferred = [f for f in term.factors if isinstance(f, Tensor) and f.name in self._deferred]
        if not deferred:
            return term
        factors = [f for f in term.factors if f not in deferred]
        for complement in deferred:  # the second may go into the first's product (cosh(u)^-2 cosh(v)^-2)
            factors = self._elementwise_first(factors, complement, self._deferred[complement.name])
        return Term(term.coeff, tuple(factors))

    def _jointly_saturating(self, terms: list[Term], free: set[str]) -> list[Term]:
        """Terms ``R P(s_1, ..., s_k)`` with P a polynomial in two or more sigmoid steps that is 0
        where they all saturate (every s_i = 1) and is no product of polynomials in one step each,
        evaluated in the Bernstein basis of :func:`_bernstein`, with ``1 - s = sigmoid(-u)``.  The
        Hessian of ``log(1 + exp(x) + exp(2 x))``, ``softplus(x + softplus(x))``, is ``s + 3 s t -
        s^2 - 2 s^2 t - s^2 t^2`` for s = sigmoid(x + softplus(x)) and t = sigmoid(x): 0 from x =
        37 summed so, where ``s (1 - s) (1 + t)^2 + s t (1 - t)`` keeps its relative accuracy
        (4.2e-18 at x = 40); the third derivative of ``softplus(softplus(x))`` (0 from x = 37)
        likewise.  A polynomial that is a product of one-step polynomials is :meth:`_factored_powers`' (the
        Hessian of a two-layer network: ``s (1 - s) r (1 - r)``).  Ends: one rewrite per group
        of terms, whose terms then hold no sum of powers that :func:`_needs_splitting` splits."""
        groups: dict[tuple, list[tuple[int, dict]]] = {}
        rests: dict[tuple, list] = {}
        for position, term in enumerate(terms):
            rest, powers = [], {}
            for f in term.factors:
                found = self._powered(f)
                if found is not None and self._elementwise[found[0][0]].func == "sigmoid" and found[1].denominator == 1:
                    powers[found[0]] = powers.get(found[0], 0) + int(found[1])
                else:
                    rest.append(f)
            key = tuple(sorted(rest, key=_text))
            groups.setdefault(key, []).append((position, powers))
            rests.setdefault(key, rest)
        made: dict[int, list[Term]] = {}
        for key, members in groups.items():
            variables = list(dict.fromkeys(v for _, powers in members for v in powers))
            carried = free | {i for f in key for i in f.indices}
            if len(variables) < 2 or len(members) < 2 or any(not set(v[1]) <= carried for v in variables):
                continue
            if any(self._powered(f) is not None for f in key):
                # a power of a tanh (or a fractional one of a sigmoid) beside them: its terms are
                # _factored_powers' to divide by 1 - t^2, which terms rewritten here would hide (the
                # third derivative of log(tanh(x) + softplus(-2 x + softplus(2 x + 1))) lost it)
                continue
            # sigmoid(-u) beside sigmoid(u) is 1 - sigmoid(u): one variable, whose complement it is
            complements = {}
            for v in variables:
                w = (self._negated_call(self._elementwise[v[0]].source, len(v[1])), v[1])
                if w in variables and w != v and v not in complements and w not in complements.values():
                    complements[w] = v
            variables = [v for v in variables if v not in complements]
            if self._opposed(variables):
                continue  # sigmoid(x) and sigmoid(-2 x) never near 1 together: nothing cancels there
            polynomial: dict[tuple[int, ...], Fraction] = {(0,) * len(variables): Fraction(0)}
            for position, powers in members:
                monomial = {tuple(powers.get(v, 0) for v in variables): terms[position].coeff}
                for w, v in complements.items():  # w^k = (1 - v)^k
                    at, k = variables.index(v), powers.get(w, 0)
                    monomial = {
                        e[:at] + (e[at] + j,) + e[at + 1 :]: c * math.comb(k, j) * (-1) ** j
                        for e, c in monomial.items()
                        for j in range(k + 1)
                    }
                polynomial = _added(polynomial, monomial)
            polynomial = {e: c for e, c in polynomial.items() if c}
            if len(variables) < 2 or not polynomial:
                continue
            # only where every step saturating at once cancels it (P = 0 at every s_i = 1): a sum
            # that cancels at another corner may be another group's to pair with (p^3 - y p^3 of
            # a focal loss's gradient, at y = 1, is _number_residuals')
            if len(variables) > 6 or sum(polynomial.values()) != 0 or not _needs_splitting(polynomial, len(variables)):
                continue
            spans = [max(e[i] for e in polynomial) - min(e[i] for e in polynomial) for i in range(len(variables))]
            if math.prod(n + 1 for n in spans) > 4096:
                continue  # its basis would be too large to write out before the bound below is checked
            split = _bernstein(polynomial, len(variables))
            if len(split) > 32:
                continue
            new_terms = []
            for (exponents, complement_powers), coeff in split.items():
                factors = list(rests[key])
                for variable, power, m in zip(variables, exponents, complement_powers):
                    if m:
                        factors = self._saturated_factors(factors, len(factors), variable, Fraction(power), m)
                    elif power:
                        factors.append(Tensor(self._power_step(variable[0], power), variable[1]))
                new_terms.append(Term(coeff, tuple(factors)))
            made[members[0][0]] = new_terms
            made.update({position: [] for position, _ in members[1:]})
        if not made:
            return terms
        return [new for k, t in enumerate(terms) for new in made.get(k, [t])]

    def _opposed(self, variables: list[tuple[str, Indices]]) -> bool:
        """Whether two of the sigmoid steps take positive and negative multiples of one argument
        (sigmoid(x) and sigmoid(-2 x)): where one saturates at 1 the other is near 0."""
        seen: dict[tuple, bool] = {}
        for name, indices in variables:
            for poly in self._source_polys(self._elementwise[name].source, len(indices)):
                if len(poly.terms) != 1:
                    continue
                term = poly.terms[0]
                key = _poly_key(Poly((Term(Fraction(1), term.factors),), poly.indices))
                if seen.setdefault(key, term.coeff > 0) != (term.coeff > 0):
                    return True
        return False

    def _as_ones(self, rest: list, name: str, indices: Indices, free: set[str]) -> list | None:
        """``rest`` without a count for each summed index of step ``name`` that ``rest`` does not
        carry (``-delta_nn`` beside ``sigmoid(z_n)^2``, which the Hessian of ``log(sigmoid(z_n))
        + log(1 - sigmoid(z_n))`` holds, is the sum over n of -1: the constant of the polynomial
        in s; ``2 w2_k w2_k delta_nn`` beside ``h_nk^2 w2_k w2_k``, of a two-layer network's
        Hessian diagonal, the sum over n of the constant of (1 - h_nk^2)^2, which summed apart was
        0 where h saturates, for 1e-16); None where a count is missing.  Each count must count an
        axis the step's index runs along."""
        if len(set(indices)) != len(indices):
            return None
        carried = free | {i for f in rest for i in f.indices}
        missing = [(axis, i) for axis, i in enumerate(indices) if i not in carried]
        rest = list(rest)
        for axis, _ in missing:
            axes = self._index_axes(name, axis)
            for k, f in enumerate(rest):
                if (
                    isinstance(f, Delta)
                    and f.first == f.second
                    and is_count(f.first)
                    and self._count_axes(f.first) & axes
                ):
                    del rest[k]
                    break
            else:
                return None
        return rest if missing else None

    def _index_axes(self, name: str, axis: int, depth: int = 0) -> set[tuple[str, int]]:
        """The named arrays' axes (inputs and statements) that axis ``axis`` of step ``name``
        runs along, through the elementwise and contraction steps that made it."""
        found = {(name, axis)}
        if depth > 8:
            return found
        for step in self.steps:
            if step.target != name:
                continue
            if isinstance(step, Elementwise):
                return found | self._index_axes(step.source, axis, depth + 1)
            if isinstance(step, Contract):
                poly = step.contraction.poly
                if axis >= len(poly.indices):
                    return found
                index = poly.indices[axis]
                for term in poly.terms:
                    for f in term.factors:
                        if isinstance(f, Tensor) and not is_reciprocal(f) and index in f.indices:
                            found |= self._index_axes(f.name, f.indices.index(index), depth + 1)
                return found
        return found

    def _factored_powers(self, terms: list[Term], variable: tuple[str, Indices], free: set[str]) -> list[Term]:
        """One step of :meth:`_saturating`: the terms' powers of ``variable`` (a step and its indices)."""
        name, indices = variable
        groups: dict[tuple, list[tuple[int, Fraction]]] = {}  # the other factors -> (position, power)
        split = {}  # position -> (the term's other factors in order, where its first power stood)
        for position, term in enumerate(terms):
            rest, power, at = [], Fraction(0), None
            for f in term.factors:
                found = self._powered(f)
                if found is not None and found[0] == variable:
                    power += found[1]
                    at = len(rest) if at is None else at
                else:
                    rest.append(f)
            split[position] = rest, len(rest) if at is None else at
            carried = free | {i for f in rest for i in f.indices}
            if not power and not set(indices) <= carried:
                ones = self._as_ones(rest, name, indices, free)  # -N + sum_n(s_n^2): sum_n(s_n^2 - 1)
                if ones is not None:
                    rest, carried = ones, carried | set(indices)
            if power or set(indices) <= carried:
                groups.setdefault(tuple(sorted(rest, key=_text)), []).append((position, power))
        func = self._elementwise[name].func
        divisor = _SATURATING[func]
        made: dict[int, list[Term]] = {}
        for rest, members in groups.items():
            # s^(1/2) - s^(3/2) is s^(1/2) (1 - s): a polynomial in s above the lowest power
            lowest = min(power for _, power in members)
            if len({power for _, power in members}) < 2 or any((p - lowest).denominator != 1 for _, p in members):
                continue
            polynomial = [Fraction(0)] * (int(max(power for _, power in members) - lowest) + 1)
            for position, power in members:
                polynomial[int(power - lowest)] += terms[position].coeff
            m = 0
            while (quotient := exact_quotient(polynomial, divisor)) is not None:
                polynomial, m = quotient, m + 1
            # 1 - 2 s = -tanh(u/2) for s = sigmoid(u): sigmoid'' = s (1 - s) (1 - 2 s), whose last
            # factor cancels near u = 0 (8e-8 relative at u = 1e-10), is s sigmoid(-u) tanh(-u/2).
            # Without a factor 1 - s, only c (1 - 2 s) that is the whole sum (v - 2 s v, an HVP's
            # adjoint through a named sigmoid: 0 at u = 1e-16), so that no other step's polynomial
            # loses a term to it (2 - 8 s + 8 s^2 beside a tanh's 2 - 8 t^2 + 6 t^4; sigmoid(u)
            # beside u = exp(sigmoid(x)), which lost sigmoid(x)'s 1 - s)
            half = None
            alone = m or (len(polynomial) == 2 and len(members) == len(terms))
            if (
                func == "sigmoid"
                and alone
                and (quotient := exact_quotient(polynomial, (Fraction(1), Fraction(-2)))) is not None
            ):
                polynomial, half = [-c for c in quotient], Tensor(self._half_tanh(name, len(indices)), indices)
            if not m and half is None:
                continue
            # the factors in the order of the term with the lowest power of the step (as written)
            rest, at = split[min((power, position) for position, power in members if power)[1]]
            made[members[0][0]] = [
                Term(c, (*self._saturated_factors(list(rest), at, variable, lowest + k, m), *([half] if half else [])))
                for k, c in enumerate(polynomial)
                if c
            ]
            made.update({position: [] for position, _ in members[1:]})
        if not made:
            return terms
        return [new for k, t in enumerate(terms) for new in made.get(k, [t])]

    def _saturated_factors(self, rest: list, at: int, variable: tuple[str, Indices], power: Fraction, m: int) -> list:
        """``rest`` times s^power (placed at ``at``, where the term held s) times the complement of
        s to the m (see :meth:`_saturating`); for a sigmoid, s sigmoid(-u) is one array (sigmoid's
        derivative), where s stood."""
        name, indices = variable
        complement = self._complement(name, len(indices))
        placed = []
        if self._elementwise[name].func == "sigmoid" and power >= 1:
            placed.append(Tensor(self._derivative_of_sigmoid(name, complement, indices), indices))
            power, m = power - 1, m - 1
        if power:
            placed.append(Tensor(self._power_step(name, power), indices))
        rest[at:at] = placed
        # the complement's own powers in the term, c^-3/2 (1 / sqrt(1 - t^2)^3): one power of c,
        # c^(m - 3/2), as c^m c^-3/2 underflows (c = cosh(u)^-2 is 1e-174 at u = 200)
        steps = {step.target: step for step in self.steps if isinstance(step, Elementwise)}
        powers = {
            k: q
            for k, f in enumerate(rest)
            if m and isinstance(f, Tensor) and f.indices == indices and (q := _power_of(f.name, complement, steps))
        }
        if powers:
            total = sum(powers.values()) + m
            base, scale = complement, Fraction(1)
            if steps[complement].func == "pow":  # cosh(u)^-2: cosh(u)^(-2 total)
                base, scale = steps[complement].source, steps[complement].param
            # c^0 stays as an array of ones: it may be the only factor summing an index (its count)
            merged = Tensor(self._power_step(base, scale * total), indices)
            first = min(powers)
            return [merged if k == first else f for k, f in enumerate(rest) if k == first or k not in powers]
        if m and self._elementwise[name].func == "tanh":
            # kept apart until every variable's pass is done (:meth:`_deferred_merged`): a product
            # made now is made in the order the term's factors happen to stand (``a c``, ``t c``),
            # so that terms that another step's polynomial groups no longer hold the same factors
            # (the Hessian of a nested ``(tanh(b + tanh(a w) w) - y)^2``: 3e-4 off at w = 30)
            power = self._power_step(complement, m)
            self._deferred[power] = name
            return [*rest, Tensor(power, indices)]
        if m:
            rest = self._elementwise_first(rest, Tensor(self._power_step(complement, m), indices), name)
        return rest

    def _power_step(self, name: str, power: Fraction | int) -> str:
        """The step holding ``name``'s array to ``power`` (``name`` itself for 1)."""
        if power == 1:
            return name
        key = ("pow", str(Fraction(power)), name)
        if key not in self._calls:
            for step in self.steps:
                if isinstance(step, Elementwise) and step.func == "pow" and step.source == name and step.param == power:
                    self._calls[key] = step.target
                    break
            else:
                self._calls[key] = self._temp()
                self.steps.append(Elementwise(self._calls[key], func="pow", source=name, param=Fraction(power)))
        return self._calls[key]

    def _elementwise_first(self, factors: list, complement: Tensor, variable: str) -> list:
        """``factors`` times ``complement``, multiplied first into a factor over the same indices
        (``dLdh_kj cosh(u_kj)^-2``, then the product with ``X_ki``), as the difference it replaces
        was combined: one elementwise pass, and the sum's order that the text reads.  Never into a
        power of another sigmoid or tanh step than ``variable``: that power is a later pass's to
        group (in a nested ``tanh(b + tanh(a w) w)``, ``t cosh(a w)^-2`` hid the outer t from
        ``t - t^3 = t cosh(b + t w)^-2``, whose difference is 0 where t saturates: the gradient
        75x too small at w = 300)."""
        for k, f in enumerate(factors):
            found = self._powered(f)
            if found is not None and found[0][0] != variable:
                continue
            if isinstance(f, Tensor) and not is_reciprocal(f) and f.indices == complement.indices:
                key = ("times", f.name, complement.name)
                if key not in self._calls:
                    self._calls[key] = self._temp()
                    product = Poly((Term(Fraction(1), (f, complement)),), f.indices)
                    self.steps.append(Contract(self._calls[key], Contraction(product)))
                return [*factors[:k], Tensor(self._calls[key], f.indices), *factors[k + 1 :]]
        return [*factors, complement]

    def _half_tanh(self, name: str, rank: int) -> str:
        """The step holding tanh(u/2) for step ``name`` = sigmoid(u) (= 2 sigmoid(u) - 1, without
        its cancellation near u = 0), computed from u's array once per evaluation."""
        key = ("tanh/2", name)
        if key not in self._calls:
            axes = fresh_indices(rank, set())
            half = Poly((Term(Fraction(1, 2), (Tensor(self._elementwise[name].source, axes),)),), axes)
            halved = self._temp()
            self.steps.append(Contract(halved, Contraction(half)))
            self._calls[key] = self._temp()
            self.steps.append(Elementwise(self._calls[key], func="tanh", source=halved, param=None))
        return self._calls[key]

    def _derivative_of_sigmoid(self, name: str, complement: str, indices: Indices) -> str:
        """The step holding s sigmoid(-u) (sigmoid's derivative) for step ``name`` = s."""
        key = ("sigmoid'", name)
        if key not in self._calls:
            axes = fresh_indices(len(indices), set())
            product = Poly((Term(Fraction(1), (Tensor(name, axes), Tensor(complement, axes))),), axes)
            self._calls[key] = self._temp()
            self.steps.append(Contract(self._calls[key], Contraction(product)))
        return self._calls[key]

    def _negated_call(self, source: str, rank: int) -> str | None:
        """An existing step holding sigmoid(-u), where step or array ``source`` holds u: the
        complement of the user's sigmoid(u) is then the user's sigmoid(-u), one array (``1 -
        sigmoid(z)^2 - sigmoid(-z)^2`` is then 2 sigmoid(z) sigmoid(-z), not 0 at |z| = 40)."""
        wanted = {_poly_key(negated(poly)) for poly in self._source_polys(source, rank)}
        for step in self.steps:
            if isinstance(step, Elementwise) and step.func == "sigmoid" and step.param is None:
                if wanted & {_poly_key(poly) for poly in self._source_polys(step.source, rank)}:
                    return step.target
        return None

    def _source_polys(self, name: str, rank: int) -> list[Poly]:
        """What the array ``name`` holds: the array itself, and its contraction where a step made it."""
        axes = fresh_indices(rank, set())
        polys = [Poly((Term(Fraction(1), (Tensor(name, axes),)),), axes)]
        polys += [s.contraction.poly for s in self.steps if isinstance(s, Contract) and s.target == name]
        return polys

    def _complement(self, name: str, rank: int) -> str:
        """The step holding sigmoid(-u) for step ``name`` = sigmoid(u), or cosh(u)^-2 for tanh(u),
        computed from u's array once per evaluation."""
        step = self._elementwise[name]
        key = ("complement", name)
        if key in self._calls:
            return self._calls[key]
        if step.func == "sigmoid":
            axes = fresh_indices(rank, set())
            minus_u = Poly((Term(Fraction(-1), (Tensor(step.source, axes),)),), axes)
            made = self._calls.get(("sigmoid", "None", *_poly_key(minus_u))) or self._negated_call(step.source, rank)
            if made is None:
                negated = self._temp()
                self.steps.append(Contract(negated, Contraction(minus_u)))
                made = self._temp()
                self.steps.append(Elementwise(made, func="sigmoid", source=negated, param=None))
        else:
            cosh = self._temp()
            self.steps.append(Elementwise(cosh, func="cosh", source=step.source, param=None))
            made = self._temp()
            self.steps.append(Elementwise(made, func="pow", source=cosh, param=Fraction(-2)))
        self._calls[key] = made
        return made

    def _common_scalars(self, terms: list[Term], indices: Indices) -> tuple[Term, ...]:
        """``c x_n - c m`` -> ``c t_n`` with ``t_n = x_n - m``, and ``x_n / 3 - m / 3`` ->
        ``t_n / 3``: a scalar factor or a coefficient that every term of a difference holds
        multiplies the difference, not each term, as the user wrote it (a power of two, as in
        ``2 x_n - 2 m``, multiplies exactly and stays).  ``c x_n - c m`` is a difference of two rounded
        products, which cancels where x and m are large and nearly equal (at data offset by 1e15,
        (x_n - m) / 3 came out 6% off) and overflows where c x_n does; the sum of the terms is
        exact there.  Ends: the sum is one step, its terms never pulled again."""
        if len(terms) < 2 or not all(isinstance(f, (Tensor, Delta)) for t in terms for f in t.factors):
            return tuple(terms)
        shared, rests = _held_by_every_term(terms, lambda f: isinstance(f, Tensor) and not f.indices)
        if all(t.coeff > 0 for t in terms) or all(t.coeff < 0 for t in terms):
            return tuple(terms)  # a sum, not a difference: nothing cancels
        g = common_coefficient([t.coeff for t in terms])
        unit = all(abs(t.coeff / g) == 1 for t in terms)
        exact = all(n & (n - 1) == 0 for n in (abs(g.numerator), g.denominator))  # 2 x - 2 m: the 2 is exact
        if not shared and (exact or not unit):
            return tuple(terms)
        inner = [Term(term.coeff / g, tuple(rest)) for term, rest in zip(terms, rests)]
        carried = {i for t in inner for f in t.factors if isinstance(f, Tensor) for i in f.indices}
        if set(indices) - carried:  # an axis only a delta carries is sized by the statement's own hints
            return tuple(terms)
        name = self._temp()
        # over the statement's own free indices, the statement's hints size them (an axis hint
        # wins over a letter the user wrote for another axis: j of ``y_k A_kj z_j`` in an HVP by x)
        hints = self._hints if tuple(indices) == self._free else self._written
        self.steps.append(Contract(name, Contraction(Poly(tuple(inner), tuple(indices)), hints)))
        pulled = tuple(f for f, n in shared.items() for _ in range(n))
        return (Term(g, (*pulled, Tensor(name, tuple(indices)))),)

    def _count_axes(self, index: str) -> set[tuple[str, int]]:
        """The input axes the statement's size hints say the count ``index`` counts, and the axis
        its name says where it names one (``n#x.0``)."""
        wanted = {index, count_stem(index)}
        named = counted_axis(index)
        return {(t, a) for h in self._written for i, t, a in h[1] if i in wanted} | ({named} if named else set())

    def _recount(self, terms: list[Term], free: set[str]) -> list[Term]:
        """``-2 x_n + 2 m delta_nn`` -> ``2 sum_n(m - x_n)``, and ``0.5 inv(S)_ie x_ne - 0.5
        inv(S)_ie m_e delta_nn`` -> ``0.5 inv(S)_ie (x_ne - m_e)``: a term whose count (the length
        of n, left where differentiation cancelled a sum over the user's residual ``x_n - m``)
        stands beside a term equal but for one tensor that runs over n is evaluated as the sum
        of the residual, as the user wrote it, not as ``sum_n(x_n) - N m``, which cancels to
        noise near a fit (at data offset by 1e8 the gradient by the mean was 27% off).  The
        residual array is one of an input's size, computed once however many terms use it.
        A count joins only a tensor axis its size hints say it counts.  Ends: each merge leaves
        one term fewer."""
        if not any(isinstance(f, Delta) and is_count(f.first) for t in terms for f in t.factors):
            return terms
        plain: dict[tuple, list[tuple[int, Tensor, tuple[str, ...], dict]]] = {}
        counted: list[tuple[tuple, int, Tensor, list[str], dict]] = []
        for number, term in enumerate(terms):
            counts = [f.first for f in term.factors if isinstance(f, Delta) and f.first == f.second]
            counts = [c for c in counts if is_count(c)]
            atoms = [f for f in term.factors if not (isinstance(f, Delta) and f.first in counts)]
            if any(isinstance(f, Delta) for f in atoms) or len(set(counts)) != len(counts):
                continue
            if any(c in f.indices for c in counts for f in atoms):
                continue
            for k, f in enumerate(atoms):
                if not isinstance(f, Tensor) or is_reciprocal(f) or len(set(f.indices)) != len(f.indices):
                    continue
                others = [g for j, g in enumerate(atoms) if j != k]
                held = {i for g in others for i in g.indices} | free
                private = tuple(i for i in f.indices if i not in held)
                if counts and private:
                    continue
                mapping = _summed_names(others, f, free, skip=set(private))
                rest = tuple(sorted(repr(rename_atom(g, mapping)) for g in others))
                kept = frozenset(mapping.get(i, i) for i in f.indices if i not in private)
                if counts:
                    counted.append(((rest, kept, len(counts)), number, f, counts, mapping))
                elif private:
                    plain.setdefault((rest, kept, len(private)), []).append((number, f, private, mapping))
        used: set[int] = set()
        replaced: dict[int, Term | None] = {}
        for key, number, g, counts, mapping in counted:
            if number in used:
                continue
            for p_number, f, private, p_mapping in plain.get(key, []):
                if p_number in used or p_number == number:
                    continue
                counted_axes = [self._count_axes(c) for c in counts]
                if not any(
                    all((f.name, f.indices.index(i)) in axes for i, axes in zip(order, counted_axes))
                    for order in itertools.permutations(private)
                ):
                    continue  # a count of another dimension than the tensor's axes
                back = {new: old for old, new in p_mapping.items()}
                renamed = rename_atom(g, {i: back[n] for i, n in mapping.items() if n in back})
                coeffs = [terms[p_number].coeff, terms[number].coeff]
                common = common_coefficient(coeffs)
                if coeffs[0] / common < 0:  # the residual as the user writes it, x_n - m: one array
                    common = -common  # for every term that uses it (see _residual_pairs)
                parts = (Term(coeffs[0] / common, (f,)), Term(coeffs[1] / common, (renamed,)))
                combined = Poly(tuple(parts), f.indices)
                residual = Tensor(
                    self._residual_step(f.indices, combined), f.indices
                )  # the same array axis by axis (the key is positional)
                kept = [a for a in terms[p_number].factors if a is not f]
                replaced[p_number] = Term(common, (*kept, residual))
                replaced[number] = None
                used |= {number, p_number}
                break
        if not replaced:
            return terms
        return [replaced.get(n, t) for n, t in enumerate(terms) if replaced.get(n, t) is not None]

    def _residual_pairs(self, terms: list[Term], free: set[str]) -> list[Term]:
        """``X_nd A_de X_ne - m_d A_de X_ne`` -> ``(X_nd - m_d) A_de X_ne``: two terms of opposite
        signs, equal up to the names of summed indices but for one tensor factor, where the one's
        indices are among the other's (m broadcast along n), are evaluated as the residual times
        the rest, computed once for every pair that forms it; the quadratic form ``(X_nd - m_d)
        A_de (X_ne - m_e)``, which the normal form multiplies out, becomes r A r again.  Near a fit
        the products apart cancel to noise (at X ~ 1e8 the value was -20 for -0.9).  An index of
        the larger factor that the smaller lacks must be summed by the rest (or be an output
        index), so the broadcast residual sums what the term it replaces summed; the residual is
        never larger than the factor it replaces.

        A mean's ``1/n`` beside a tensor that alone runs over n pairs with a term that lacks
        both: ``-2 mean_n(x_n) + 2 m`` (the gradient by m of ``mean_n((x_n - m)^2)``) is ``-2
        mean_n(x_n - m)``, since the mean of what is constant along n is itself (at x ~ 1e15 it
        was -0.75 for -0.958; ``mean_n((X_nd - m_d) S_de (X_ne - m_e))`` at X ~ 1e8 was 9.5 for
        0.127).  Ends: each merge leaves one term fewer."""
        while True:
            found: dict[tuple, dict] = {}
            for number, term in enumerate(terms):
                for k, f in enumerate(term.factors):  # the rest may hold calls and a mean's 1/n
                    if not isinstance(f, Tensor) or is_reciprocal(f) or len(set(f.indices)) != len(f.indices):
                        continue
                    others = [g for j, g in enumerate(term.factors) if j != k]
                    mapping = _summed_names(others, f, free)
                    rest = tuple(sorted((rename_atom(g, mapping) for g in others), key=_text))
                    _kinds(found, rest, free).setdefault("members", []).append(
                        (number, k, rename_atom(f, mapping), mapping, None)
                    )
                    for r in others:  # the mean over an index only f carries: without its 1/n
                        if not is_reciprocal(r) or r.indices[0] not in f.indices or r.indices[0] in free:
                            continue
                        trimmed = [g for g in others if g is not r]
                        if any(r.indices[0] in g.indices for g in trimmed):
                            continue
                        mapping = _summed_names(trimmed, f, free)
                        rest = tuple(sorted((rename_atom(g, mapping) for g in trimmed), key=_text))
                        entry = (number, k, rename_atom(f, mapping), mapping, mapping[r.indices[0]])
                        _kinds(found, rest, free).setdefault("members", []).append(entry)
            merged = self._merge_residual(terms, found, free) or self._merge_square(terms, free)
            if merged is None:
                return terms
            terms = merged

    def _merge_square(self, terms: list[Term], free: set[str]) -> list[Term] | None:
        """``c f f R - 2c f g R + c g g R`` -> ``c r r R`` with ``r = f - g``: a perfect square
        that differentiation multiplied out (the Hessian diagonal of an RBF kernel holds
        ``4 X_kl X_kl W - 8 Z_jl X_kl W + 4 Z_jl Z_jl W``: at X ~ 1e8 it was [6, 4, -4, ...] for
        [0.61, 1.10, -2.01, ...]).  The residual fits as a pair's does, or is an array the
        evaluation forms anyway (the RBF's X_kd - Z_jd).  None where there is none."""
        shapes: dict[tuple, dict[str, list]] = {}  # rest -> kind -> [(term, f, g, mapping)]
        eligible = [
            [k for k, f in enumerate(term.factors) if isinstance(f, Tensor) and not is_reciprocal(f)] for term in terms
        ]
        wanted = _square_candidates(terms, eligible)
        if not wanted:
            return None
        for number, term in enumerate(terms):
            tensors = eligible[number]
            for x, a in enumerate(tensors):
                for b in tensors[x + 1 :]:
                    f, g = term.factors[a], term.factors[b]
                    if (number, frozenset((f.name, g.name))) not in wanted:
                        continue
                    if len(set(f.indices)) != len(f.indices) or len(set(g.indices)) != len(g.indices):
                        continue
                    others = [h for k, h in enumerate(term.factors) if k not in (a, b)]
                    for first, second in ((f, g), (g, f)):
                        mapping = _summed_names(others, first, free)
                        for i in second.indices:
                            if i not in free and i not in mapping:
                                mapping[i] = f"_c{len(mapping)}"
                        rest = tuple(sorted((rename_atom(h, mapping) for h in others), key=_text))
                        pair = (rename_atom(first, mapping), rename_atom(second, mapping))
                        kind = "square" if pair[0] == pair[1] else "cross"
                        _kinds(shapes, rest, free).setdefault(kind, []).append((number, pair, mapping))
                        if kind == "cross" and _apart(pair, rest, free):  # (sum_i x_i)(sum_j x_j)
                            _kinds(shapes, rest, free).setdefault("sum square", []).append((number, pair, mapping))
                        counts = [
                            h for h in others if isinstance(h, Delta) and h.first == h.second and is_count(h.first)
                        ]
                        if kind == "square" and counts:  # m m delta_nn beside x_n x_n: m broadcast along n
                            renamed = [rename_atom(h, mapping) for h in counts]
                            bare = tuple(h for h in rest if h not in renamed)
                            entry = (number, pair, mapping, [h.first for h in counts])
                            _kinds(shapes, bare, free).setdefault("counted", []).append(entry)
                        for r in others:  # x_n x_n / n beside m m: the mean of a constant is itself
                            mean = r.indices[0] if is_reciprocal(r) else None
                            if mean is None or mean in free or mean not in first.indices:
                                continue
                            trimmed = [h for h in others if h is not r]
                            if (kind == "cross" and mean in second.indices) or any(mean in h.indices for h in trimmed):
                                continue
                            meaned = _summed_names(trimmed, first, free)
                            for i in second.indices:
                                if i not in free and i not in meaned:
                                    meaned[i] = f"_c{len(meaned)}"
                            bare = tuple(sorted((rename_atom(h, meaned) for h in trimmed), key=_text))
                            entry = (number, (rename_atom(first, meaned), rename_atom(second, meaned)), meaned)
                            _kinds(shapes, bare, free).setdefault(f"meaned {kind}", []).append((*entry, meaned[mean]))
        for kinds in shapes.values():
            summed = self._merge_sum_square(terms, kinds)
            if summed is not None:
                return summed
            rest = kinds["rest"]
            held = _held_by_lengths(rest, free)
            squares = [(*entry, []) for entry in kinds.get("square", [])] + kinds.get("counted", [])
            plain = [(*entry, None) for entry in kinds.get("square", [])]
            for a, (f, _), mapping, mean in plain + kinds.get("meaned square", []):
                for c, (g, _), _, counted in squares:
                    if a == c or terms[a].coeff != terms[c].coeff:
                        continue
                    if set(g.indices) >= set(f.indices) and f.name >= g.name:  # the pair the other way round
                        continue
                    missing = [i for i in f.indices if i not in g.indices]
                    if counted and not self._counts_along(counted, f, missing):
                        continue
                    if mean is not None and (counted or mean in g.indices):
                        continue
                    kind = "meaned cross" if mean else "cross"
                    crosses = [n for n, pair, *_ in kinds.get(kind, []) if pair == (f, g)]
                    cross = next((n for n in crosses if terms[n].coeff == -2 * terms[a].coeff), None)
                    if cross is None:
                        continue
                    axes, combined = _difference(f, g)
                    key = _poly_key(combined)
                    made = self._calls.get(("residual", key))
                    if made is not None:  # the same sum over the same axis positions: in this term's letters
                        made = (made[0], axes)
                    # a call of the rest holds the difference (its axes in any order): the
                    # evaluation forms it anyway, as that call's argument
                    inside = self._inside(combined, rest)
                    if made is None:
                        made = self._formed(combined)
                    widened = held | set(missing) if counted or mean else held
                    if made is None and not (
                        inside or _residual_fits(f, g, widened, free, self._written_residual(combined))
                    ):
                        continue
                    if made is None and inside:
                        made = (self._temp(), inside)
                        self.steps.append(Contract(made[0], Contraction(Poly(combined.terms, inside))))
                        self._calls[("source", *_poly_key(Poly(combined.terms, inside)))] = made[0]
                    elif made is None:
                        made = (self._residual_step(axes, combined), axes)
                    axes = made[1]
                    residual = _written_back(made[0], axes, mapping)
                    original = _written_back(f.name, f.indices, mapping)
                    kept = [h for h in terms[a].factors if h != original]
                    if len(kept) != len(terms[a].factors) - 2:
                        continue
                    square = Term(terms[a].coeff, (*kept, residual, residual))
                    return [*(t for n, t in enumerate(terms) if n not in (a, c, cross)), square]
        return None

    def _merge_power(self, terms: list[Term], free: set[str]) -> list[Term] | None:
        """``sum_b c C(k, b) (-1)^b f^(k-b) g^b R`` -> ``c r^k R`` with ``r = f - g``, for k >= 3: a
        power of a residual that differentiation multiplied out (the Hessian of
        ``sqrt(((x_n - m) s)^2 + 1)`` by s holds ``-(x_n - m)^4`` as five terms: at x ~ 1e8 it was
        6e16 for 3.1).  The k + 1 terms must all be there with the binomial coefficients, and
        the residual must fit as a pair's does (:func:`_residual_fits`).  Squares are
        :meth:`_merge_square`'s.  None where there is none; a merge leaves k terms fewer."""
        pure: dict[tuple, dict[int, tuple]] = {}  # (rest, x) -> power -> (term, mapping)
        mixed: dict[tuple, dict[int, tuple]] = {}  # (rest, f, g) -> power of g -> (term, power of f)
        for number, term in enumerate(terms):
            tensors = [f for f in term.factors if isinstance(f, Tensor) and not is_reciprocal(f)]
            distinct = [f for f in dict.fromkeys(tensors) if len(set(f.indices)) == len(f.indices)]
            for f in distinct:
                others = [h for h in term.factors if h != f]
                mapping = _summed_names(others, f, free)
                rest = tuple(sorted((rename_atom(h, mapping) for h in others), key=_text))
                pure.setdefault((rest, rename_atom(f, mapping)), {})[tensors.count(f)] = (number, mapping)
                for g in distinct:
                    if g == f or tensors.count(f) + tensors.count(g) < 3:
                        continue
                    others = [h for h in term.factors if h != f and h != g]
                    mapping = _summed_names(others, f, free)
                    for i in g.indices:
                        if i not in free and i not in mapping:
                            mapping[i] = f"_c{len(mapping)}"
                    rest = tuple(sorted((rename_atom(h, mapping) for h in others), key=_text))
                    key = (rest, rename_atom(f, mapping), rename_atom(g, mapping))
                    mixed.setdefault(key, {})[tensors.count(g)] = (number, tensors.count(f))
        for (rest, f, g), crosses in mixed.items():
            k = next(iter(crosses.values()))[1] + next(iter(crosses))
            first, last = pure.get((rest, f), {}).get(k), pure.get((rest, g), {}).get(k)
            if first is None or last is None or sorted(crosses) != list(range(1, k)):
                continue
            c = terms[first[0]].coeff
            wanted = {b: c * math.comb(k, b) * (-1) ** b for b in range(k + 1)}
            members = {0: first[0], k: last[0], **{b: n for b, (n, _) in crosses.items()}}
            if any(terms[members[b]].coeff != wanted[b] for b in members) or len(set(members.values())) != k + 1:
                continue
            if any(a + b != k for b, (_, a) in crosses.items()):
                continue
            axes, combined = _difference(f, g)
            if not _residual_fits(f, g, _held_by_lengths(rest, free), free, self._written_residual(combined)):
                continue
            number, mapping = first
            residual = _written_back(self._residual_step(axes, combined), axes, mapping)
            original = _written_back(f.name, f.indices, mapping)
            kept = [h for h in terms[number].factors if h != original]
            power = Term(c, (*kept, *[residual] * k))
            return [*(t for n, t in enumerate(terms) if n not in members.values()), power]
        return None

    def _merge_sum_square(self, terms: list[Term], kinds: dict) -> list[Term] | None:
        """``c (sum_i f_i)(sum_j f_j) - 2c (sum_i f_i)(sum_j g_j) + c (sum_i g_i)(sum_j g_j)`` ->
        ``c (sum_i r_i)(sum_j r_j)`` with ``r = f - g``, where the statement's letters make f and g
        one length axis by axis (``f = (x_i - m_i)(x_j - m_j)`` was 0.0 for 0.0625 at x ~ 1e12).
        None where there is none."""
        for a, (f0, f1), mapping in kinds.get("sum square", []):
            for c, (g0, g1), _ in kinds.get("sum square", []):
                if a == c or terms[a].coeff != terms[c].coeff or f0.name >= g0.name:
                    continue
                if (f0.indices, f1.indices) != (g0.indices, g1.indices) or (f0.name, g0.name) != (f1.name, g1.name):
                    continue
                wanted = -2 * terms[a].coeff
                cross = next(
                    (n for n, pair, _ in kinds.get("cross", []) if pair == (f0, g1) and terms[n].coeff == wanted), None
                )
                if cross is None or not self._tied(f0, g0) or not self._tied(f1, g1):
                    continue
                axes, combined = _difference(f0, g0)
                name = self._residual_step(axes, combined)
                first, second = _written_back(name, axes, mapping), _written_back(name, f1.indices, mapping)
                originals = {_written_back(f0.name, f0.indices, mapping), _written_back(f1.name, f1.indices, mapping)}
                kept = [h for h in terms[a].factors if h not in originals]
                square = Term(terms[a].coeff, (*kept, first, second))
                return [*(t for n, t in enumerate(terms) if n not in (a, c, cross)), square]
        return None

    def _inside(self, combined: Poly, rest) -> Indices | None:
        """combined's letters in the order of the argument of a call among ``rest`` (or inside
        one) that is the same sum, where there is one; else None."""
        arguments = {_poly_key(p) for p in _call_arguments([*rest])}
        found = _in_some_order(combined, lambda key: key in arguments or None)
        return found[0] if found else None

    def _formed(self, combined: Poly) -> tuple[str, Indices] | None:
        """``(an array already formed that holds combined, combined's letters in its axis order)``
        (a call's argument, or a statement ``E_nkd = X_nd - C_kd``), whatever the order of its
        axes; else None."""
        found = _in_some_order(combined, lambda key: self._calls.get(("source", *key)))
        return (found[1], found[0]) if found else None

    def _written_residual(self, combined: Poly) -> bool:
        """Whether the statement writes the difference ``combined`` as an operand (a ``residuals``
        hint: ``X_nd - Z_md`` in ``exp(-0.5 sum_d(((X_nd - Z_md) / ell_d)^2))``), whatever the
        order of its axes: the program that names it forms that array, so the one statement may."""
        written = {_poly_key(p) for hint in self._hints if hint[0] == "residuals" for p in hint[1]}
        return bool(written) and _in_some_order(combined, lambda key: key in written or None) is not None

    def _of_residuals(self, rest, f: Tensor, g: Tensor) -> bool:
        """Whether ``rest`` holds f's or g's tensor, or a residual array already formed: then the
        term is of degree two or more in the data, and the products apart cancel to noise (an
        ARD kernel's Hessian ``(X_ni - Z_mi)(X_nj - Z_mj)``).  Of degree one (an RBF gradient,
        ``dLdD_kj X_kl - dLdD_kj Z_jl``) the products lose no more than the data's own rounding,
        and two matrix products avoid the N x M x D array."""
        formed = {v[0] for k, v in self._calls.items() if k[0] == "residual"} | {f.name, g.name}
        return any(getattr(h, "name", None) in formed for h in rest)

    def _residual_step(self, axes: Indices, combined: Poly) -> str:
        """The step computing the residual ``combined`` over ``axes``, once per line."""
        key = ("residual", _poly_key(combined))
        made = self._calls.get(key)
        if made is None:
            made = self._calls[key] = (self._temp(), axes)
            self.steps.append(Contract(made[0], Contraction(combined)))
        return made[0]

    def _tied(self, f: Tensor, g: Tensor) -> bool:
        """Whether the statement ties f's axes to g's, axis by axis: a sum that is an operand adds
        them elementwise (``x_i - m_i``; see :func:`einderiv.program._operand_sum_ties`)."""
        groups = [set(group) for hint in self._hints if hint[0] == "tied" for group in hint[1]]
        return len(f.indices) == len(g.indices) and all(
            any({(f.name, k), (g.name, g.indices.index(i))} <= group for group in groups)
            for k, i in enumerate(f.indices)
        )

    def _counts_along(self, counts: list[str], f: Tensor, missing: list[str]) -> bool:
        """Whether the counts count f's axes at the letters ``missing``, one each."""
        if len(counts) != len(missing):
            return False
        axes = [{(f.name, f.indices.index(i))} for i in missing]
        return all(any(self._count_axes(c) & want for c in counts) for want in axes)

    def _merge_residual(self, terms: list[Term], found: dict, free: set[str]) -> list[Term] | None:
        """The terms after the first merge :meth:`_residual_pairs` finds; None where there is none.
        Two terms that belong to polynomials in a sigmoid or tanh call pair only where their
        polynomials are opposite (:func:`_saturating_polynomials`), each term of one with its
        term of the other: pairing ``4 a s^3 t^2 - 4 y s^3 t^2`` took a term from each of two
        polynomials in s that 1 - s divided, and neither divided any more (the Hessian of
        ``(sigmoid(b + sigmoid(a w) w) - y)^2`` was 0 from w = 40 for -5e-18)."""
        polynomials = _saturating_polynomials(terms)

        def opposite(a: int, b: int) -> bool:
            first, second = polynomials.get(a, {}), polynomials.get(b, {})
            return first.keys() == second.keys() and all(
                first[c] == {p: -k for p, k in second[c].items()} for c in first
            )

        for kinds in found.values():
            rest, members = kinds["rest"], kinds.get("members", [])
            held = _held_by_lengths(rest, free)
            by_coeff: dict[Fraction, list] = {}  # a term pairs with one of the opposite coefficient
            for member in members:  # (found by lookup: pairing every two of 2000 terms took 12 s)
                by_coeff.setdefault(terms[member[0]].coeff, []).append(member)
            for a, k, f, mapping, mean in members:
                for b, _, g, _, paired_mean in by_coeff.get(-terms[a].coeff, ()):
                    if a == b or f.name == g.name or not opposite(a, b):
                        continue
                    if len(terms[a].factors) == 1 or paired_mean is not None:
                        continue  # a mean's term pairs with a term of the rest without one
                    if len(terms[b].factors) == 1 and mean is None:
                        continue  # a factor alone in its term pairs with a mean only
                    if mean is not None and mean in g.indices:
                        continue
                    axes, combined = _difference(f, g)
                    written = self._written_residual(combined) and self._of_residuals(rest, f, g)
                    if not _residual_fits(f, g, held | {mean} if mean else held, free, written):
                        continue
                    made = ("residual", _poly_key(combined)) in self._calls
                    formed = None if made else self._formed(combined)
                    if formed is not None:  # the statement's own array of it, its axes in any order
                        name, axes = formed
                    else:
                        name = self._residual_step(axes, combined)
                    factors = list(terms[a].factors)
                    factors[k] = _written_back(name, axes, mapping)  # f's axes, then g's
                    return [*(t for n, t in enumerate(terms) if n not in (a, b)), Term(terms[a].coeff, tuple(factors))]
        return None

    def _shared_pairs(self, terms: list[Term], free: set[str]) -> list[Term]:
        """``X_ik V_ko W2_o t_io - 2 d_ij X_ik V_kj`` -> ``T_io W2_o t_io - 2 d_ij T_ij`` with
        ``T_io = X_ik V_ko``: a pair of tensors summed over indices no other factor of the term
        carries, the same pair (up to index names) in two or more terms, is contracted once (an
        HVP contracts X with the tangent in every term).  A term shares its pair only where the
        pair's result must be formed anyway: another factor holds all of its indices, or they are
        all output indices (never ``A_ij B_jk C_k``, where B C is the cheaper first product).
        Ends: each replacement removes one factor from a term."""
        found: dict[tuple, list[tuple[int, int, int, tuple[Indices, Indices]]]] = {}
        for number, term in enumerate(terms):
            tensors = [k for k, f in enumerate(term.factors) if isinstance(f, Tensor) and not is_reciprocal(f)]
            seen: set[tuple] = set()
            for x, a_pos in enumerate(tensors):
                for b_pos in tensors[x + 1 :]:
                    pair = _pair(term, a_pos, b_pos, free)
                    if pair is None or pair[0] in seen:
                        continue
                    seen.add(pair[0])
                    found.setdefault(pair[0], []).append((number, a_pos, b_pos, pair[1]))
        replaced: dict[int, tuple[int, int, Tensor]] = {}
        for key, places in sorted(found.items(), key=lambda kv: -len(kv[1])):
            places = [p for p in places if p[0] not in replaced]
            made = self._calls.get(("pair", key))
            if not places or (made is None and len(places) < 2):
                continue
            if made is None:  # the array is laid out as its first use writes it (X_ik V_ko: i, o)
                number, a_pos, b_pos, (written, canonical) = places[0]
                pair = Term(Fraction(1), (terms[number].factors[a_pos], terms[number].factors[b_pos]))
                made = (self._temp(), tuple(canonical.index(i) for i in written))
                self.steps.append(Contract(made[0], Contraction(Poly((pair,), written))))
                self._calls[("pair", key)] = made
                self._remember_product(made[0], Poly((pair,), written))  # (read by earlier steps too)
            name, layout = made
            for number, a_pos, b_pos, (_, canonical) in places:
                replaced[number] = (a_pos, b_pos, Tensor(name, tuple(canonical[k] for k in layout)))
        out_terms = []
        for number, term in enumerate(terms):
            if number in replaced:
                a_pos, b_pos, product = replaced[number]
                rest = tuple(f for k, f in enumerate(term.factors) if k not in (a_pos, b_pos))
                term = Term(term.coeff, (*rest, product))
            out_terms.append(term)
        return out_terms

    def _factor_shared(self, terms: list[Term], free: set[str]) -> tuple[Term, ...]:
        """``-2 y_n Phi_ni + 2 Phi_ne theta_e Phi_ni`` -> ``Phi_ni t_n`` with
        ``t_n = -2 y_n + 2 Phi_ne theta_e``: terms that share one tensor factor (the same up to the
        names of summed indices) contract it once, with the sum of what else they hold.  Only where
        the rest of each term lives on the shared factor's indices, or on output indices that one
        factor of that rest already holds with them (``-Y_nj X_ni + Y_nk P_nj X_ni``: the combined
        array is N x K, as Y is), so the combined array is never larger than what the terms hold
        and no term costs more.  Ends: each merge leaves one term fewer."""
        while True:
            groups: dict[tuple, list[tuple[int, int]]] = {}
            #: key -> members whose rest forms a larger array than the term holds, and that cost
            #: (the number of indices forming it runs over)
            residuals: dict[tuple, list[tuple[int, int, int]]] = {}
            #: key -> the most indices a member's holding factor contracts with the shared one over
            holding: dict[tuple, int] = {}
            for number, term in enumerate(terms):
                if len(term.factors) < 2 or not all(
                    isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors
                ):
                    continue
                seen: set[tuple] = set()
                for k, f in enumerate(term.factors):
                    if not f.indices or len(set(f.indices)) != len(f.indices):
                        continue
                    others = [g for j, g in enumerate(term.factors) if j != k]
                    if len(f.indices) < max(len(g.indices) for g in others):
                        continue  # sharing x_j in A_kj x_j + A_jk x_j would add the two matrices first
                    rest = {i for g in others for i in g.indices}
                    extra = (rest & free) - set(f.indices)
                    interface = rest & (set(f.indices) | free)
                    key = (*_pattern(f, free), tuple(sorted(extra)))
                    if key in seen:
                        continue
                    seen.add(key)
                    holders = [g for g in others if interface <= set(g.indices)]
                    if extra and not holders:  # the combined array could be larger than the term holds
                        residuals.setdefault(key, []).append((number, k, len(rest)))
                        continue
                    if holders:
                        reach = max(len(set(g.indices) | set(f.indices)) for g in holders)
                        holding[key] = max(holding.get(key, 0), reach)
                    groups.setdefault(key, []).append((number, k))
            for key, members in residuals.items():
                # ``-2 Y_in V_nj + 2 U_ir V_nr V_nj`` -> ``2 (U_ir V_nr - Y_in) V_nj``: the residual
                # that the user wrote, where Y holds it and forming U V^T costs no more than Y V
                # does: never the cancelling difference Y V - U (V^T V) near a fit
                if key in groups:
                    groups[key] += [(number, k) for number, k, cost in members if cost <= holding.get(key, 0)]
            candidates = [(key, members) for key, members in groups.items() if len(members) > 1]
            candidates = [c for c in candidates if self._held(c[1], terms, free)]
            if not candidates:
                return tuple(terms)
            key, members = max(candidates, key=lambda kv: (len(kv[1]), len(kv[0][1])))
            taken = {i for t in terms for f in t.factors for i in f.indices} | free
            shared_names = dict(zip(sorted({i for i in key[1] if i.startswith("#")}), _fresh(taken, "_f")))
            shared = Tensor(key[0], tuple(shared_names.get(i, i) for i in key[1]))
            rests = []
            for number, k in members:
                term = terms[number]
                f = term.factors[k]
                mapping = {i: shared_names[p] for i, p in zip(f.indices, key[1]) if p in shared_names}
                others = {i for g in term.factors for i in g.indices} - free - set(mapping)
                avoid = taken | set(shared.indices)
                mapping.update(dict(zip(sorted(others), _fresh(avoid, "_r"))))
                rests.append(
                    Term(term.coeff, tuple(rename_atom(g, mapping) for j, g in enumerate(term.factors) if j != k))
                )
            carried = {i for t in rests for f in t.factors for i in f.indices}
            combined_free = tuple(i for i in shared.indices if i in carried) + key[2]
            for g in (g for t in rests for g in t.factors if set(combined_free) <= set(g.indices)):
                # laid out as Y_in holds it (a diagonal A_jj holds j once)
                combined_free = tuple(dict.fromkeys(i for i in g.indices if i in combined_free))
                break
            common = common_coefficient([t.coeff for t in rests])
            rests = sorted((Term(t.coeff / common, t.factors) for t in rests), key=lambda t: t.coeff < 0)
            inner = self._factor_shared(rests, set(combined_free))
            name, axes, pulled = self._combined(Poly(inner, combined_free))
            merged = Term(common, (shared, Tensor(name, axes), *pulled))
            dropped = {number for number, _ in members}
            first = min(dropped)
            terms = [merged if n == first else t for n, t in enumerate(terms) if n == first or n not in dropped]

    @staticmethod
    def _held(members: list[tuple[int, int]], terms: list[Term], free: set[str]) -> bool:
        """Whether the array that sharing these members' factor would combine, over the output
        indices all of their rests carry, is held by one factor of some member: ``2 X_kl dLdD_kj
        - 2 Z_jl dLdD_kj`` would combine ``X_kl - Z_jl`` over k, j and l, an N x M x D array that
        neither X nor Z is (the RBF gradient: it stays two products).  A shared factor over output
        indices only holds it too, where the rests carry nothing else: ``(1 - t_nj^2) t_nk W2_kl
        W2_jl - (1 - t_nj^2) Y_nl W2_jl`` combines ``t_nk W2_kl W2_jl - Y_nl W2_jl`` over n and j,
        an array of the output's shape that each term formed anyway (then the residual
        ``t_nk W2_kl - Y_nl`` is shared in it, as the program that names it computes)."""
        carried: set[tuple] = set()
        holders: list[set[tuple]] = []
        for number, k in members:
            term = terms[number]
            shared = term.factors[k]
            if set(shared.indices) <= free:
                holders.append({("axis", a) for a in range(len(shared.indices))})

            def axes(g, shared=shared) -> set[tuple]:  # the shared factor's axes and output indices g has
                on_shared = {("axis", shared.indices.index(i)) for i in g.indices if i in shared.indices}
                return on_shared | {("free", i) for i in g.indices if i in free and i not in shared.indices}

            others = [axes(g) for j, g in enumerate(term.factors) if j != k]
            carried |= set().union(*others)
            holders += others
        return any(carried <= held for held in holders)

    def _factor_out(self, terms: list[Term], free: set[str]) -> tuple[Term, ...]:
        """``-y_n X_ni + s_n X_ni`` -> ``(s_n - y_n) X_ni``: terms that share their heavy factors
        (those of the highest rank in the term) and differ only in lighter factors over indices
        the heavy ones have anyway share one contraction; the light parts are combined first by
        a cheap elementwise step (no larger than the largest light factor: never an outer
        product)."""
        groups: dict[tuple, list[Term]] = {}
        order: list[tuple] = []
        for term in terms:
            key: tuple = (id(term),)
            tensors = [f for f in term.factors if isinstance(f, Tensor)]
            reciprocal = any(is_reciprocal(f) for f in tensors)  # 1/n is sized by its own term's factors
            if len(tensors) == len(term.factors) and len(tensors) > 1 and not reciprocal:
                top = max(len(f.indices) for f in tensors)
                heavy = tuple(sorted((f for f in tensors if len(f.indices) == top), key=_text))
                light = [f for f in tensors if len(f.indices) < top]
                heavy_indices = {i for f in heavy for i in f.indices}
                part = frozenset(i for f in light for i in f.indices)
                # light factors over different indices (s_n v_i) would combine as an outer
                # product, which undoes the matrix-vector products X_ni v_i each term does
                if light and part <= heavy_indices and len(part) <= max(len(f.indices) for f in light):
                    key = (heavy, part)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(term)
        singles = [groups[key][0] for key in order if len(groups[key]) == 1]
        merged = self._factor_one(singles, free) if len(singles) > 1 else {}
        out = []
        for key in order:
            group = groups[key]
            if len(group) == 1:
                if id(group[0]) in merged:
                    replacement = merged.pop(id(group[0]))
                    if replacement is not None:
                        out.append(replacement)
                    continue
                out.append(group[0])
                continue
            heavy, part = key
            free = tuple(sorted(part))
            combined = Poly(tuple(Term(t.coeff, tuple(f for f in t.factors if f not in heavy)) for t in group), free)
            name, axes, pulled = self._combined(combined)
            out.append(Term(Fraction(1), (Tensor(name, axes), *heavy, *pulled)))
        return tuple(out)

    def _factor_one(self, terms: list[Term], free: set[str]) -> dict[int, Term | None]:
        """``-y_i x_l + t_i x_l`` -> ``(t_i - y_i) x_l``: terms equal but for one tensor factor over
        the same indices share the rest, up to the names of summed indices (``inv(S)_ie r_ne +
        r_nj inv(S)_ji`` is ``(inv(S)_ie + inv(S)_ei) r_ne``: r summed over n once).  Returns, by
        term id, the merged term for the first of each group and None for the others."""
        candidates: dict[tuple, list[tuple[Term, Tensor]]] = {}
        for term in terms:
            if len(term.factors) < 2 or not all(isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors):
                continue  # (the 1/n of a mean is sized by the other factors of its own term)
            seen: set[tuple] = set()
            for k, f in enumerate(term.factors):
                others = [g for j, g in enumerate(term.factors) if j != k]
                if len(f.indices) > max(len(g.indices) for g in others):
                    continue  # (A_kj + A_jk) x_j would add two n x n matrices to save a matrix-vector product
                if any(i not in free for i in f.indices) and not set(f.indices) - free <= {
                    i for g in others for i in g.indices
                }:
                    continue  # r_j c + u_j c: j is summed by the varying factor alone, and may be two sizes
                mapping = _summed_names(others, f, free)
                rest = tuple(sorted((rename_atom(g, mapping) for g in others), key=_text))
                varying = rename_atom(f, mapping)
                key = (rest, tuple(sorted(set(varying.indices))))
                if key not in seen:  # x_i x_i varies either factor: one candidate, not two
                    seen.add(key)
                    back = {new: old for old, new in mapping.items()}
                    candidates.setdefault(key, []).append((term, varying, back))
        # a term that is another's rest entire varies by a factor 1: Y_nk P_nj X_ni X_ni and
        # -Y_nk P_nj P_nj X_ni X_ni are (1 - P_nj) Y_nk P_nj X_ni X_ni, one contraction (the
        # program form of the softmax Hessian's diagonal ran two N x D x K contractions, 1.55x its
        # one-statement form)
        whole: dict[tuple, list] = {}
        for term in terms:
            if term.factors and all(isinstance(f, Tensor) and not is_reciprocal(f) for f in term.factors):
                mapping = _summed_names(list(term.factors), Tensor("_", ()), free)
                rest = tuple(sorted((rename_atom(g, mapping) for g in term.factors), key=_text))
                whole.setdefault(rest, []).append((term, None, {new: old for old, new in mapping.items()}))
        for (rest, _part), members in candidates.items():
            members.extend(m for m in whole.get(rest, ()) if all(m[0] is not t for t, _, _ in members))
        used: set[int] = set()
        out: dict[int, Term | None] = {}
        for (rest, part), members in sorted(candidates.items(), key=lambda kv: -len(kv[1])):
            members = [m for m in members if id(m[0]) not in used]
            if len(members) < 2 or all(f is None for _, f, _ in members):
                continue
            back = next(b for _, f, b in members if f is not None)  # a term's own index names, for messages
            named = tuple(back.get(i, i) for i in part)
            combined = Poly(
                tuple(
                    Term(t.coeff, ()) if f is None else Term(t.coeff, (rename_atom(f, back),)) for t, f, _ in members
                ),
                named,
            )
            name, axes, pulled = self._combined(combined)
            rest_back = (rename_atom(g, back) for g in rest)
            out[id(members[0][0])] = Term(Fraction(1), (Tensor(name, axes), *rest_back, *pulled))
            for t, _, _ in members:
                used.add(id(t))
                out.setdefault(id(t), None)
        return out

    def _solves(self, factors: list, free: set[str]) -> list:
        """``inv(M)_ij b_j`` -> ``solve(M, b)_i`` and ``a_i inv(M)_ij`` -> ``solve(M^T, a)_j``
        where j (or i) is summed and used by that vector alone: a solve is cheaper and more
        accurate than forming the inverse."""
        changed = True
        while changed:
            changed = False
            counts: dict[str, int] = {}
            for f in factors:
                for i in f.indices:
                    counts[i] = counts.get(i, 0) + 1
            for pos, f in enumerate(factors):
                if not (isinstance(f, MatrixFn) and f.func == "inv" and f.indices[0] != f.indices[1]):
                    continue
                for side, (kept, summed) in enumerate((f.indices, f.indices[::-1])):
                    if summed in free or counts.get(summed) != 2:
                        continue
                    partner = next(
                        (
                            k
                            for k, g in enumerate(factors)
                            if k != pos and isinstance(g, Tensor) and g.indices == (summed,) and not is_reciprocal(g)
                        ),
                        None,
                    )
                    if partner is None:
                        continue
                    vector = factors[partner].name
                    key = ("solve", f.matrix, vector, side)
                    name = self._calls.get(key)
                    if name is None:
                        name = self._temp()
                        func = "solve" if side == 0 else "solve_transposed"
                        self.steps.append(Solve(name, func=func, source=f.matrix, operand=vector))
                        self._matrices = True
                        self._calls[key] = name
                    factors = [g for k, g in enumerate(factors) if k not in (pos, partner)] + [Tensor(name, (kept,))]
                    changed = True
                    break
                if changed:
                    break
        return factors

    def _hoist_matrix(self, atom: MatrixFn) -> Tensor:
        """inv, det and logdet of a named matrix: each computed once per evaluation."""
        key = ("matrix", atom.func, atom.matrix)
        name = self._calls.get(key)
        if name is None:
            name = self._temp()
            self.steps.append(MatrixFunction(name, func=atom.func, source=atom.matrix))
            self._matrices = True
            self._calls[key] = name
        return Tensor(name, atom.indices)

    def _hoist_factor(self, atom, alone: bool) -> list:
        """``atom`` as factors over earlier steps: a call hoisted (:meth:`_hoist_atom`), and the
        square of a sum that is its term's only factor with axes, ``(X_id - Z_jd)^2``, as the
        sum's array twice, so that the contraction reading it multiplies and sums in one pass
        (``sum_d`` of the square is one einsum over the N x M x D differences, not a squared copy
        of them first; ``(y_n - X_nd w_d)^2`` summed is a dot product).  Beside other tensors the
        square stays one array: ``r_n^2 X_ni X_nj`` is a weighted Gram product and
        ``inv(M)_ij r_j^2`` a solve only with one weight.  x x is x^2 in IEEE arithmetic."""
        if not isinstance(atom, Apply):
            return [atom]
        if alone and atom.func == "pow" and atom.param == 2 and (len(atom.arg.terms) > 1 or self._a_sum(atom.arg)):
            self._quiet = True  # an overflow to inf is a value, as the power's step has it
            name = self._source(atom.arg)
            return [Tensor(name, atom.indices), Tensor(name, atom.indices)]
        return [self._hoist_atom(atom)]

    def _a_sum(self, poly: Poly) -> bool:
        """Whether ``poly`` is just an array that a statement computed as a sum (``E_nkd = X_nd -
        C_kd``, or a residual named for evaluation): its square is a sum's square."""
        only = poly.terms[0].factors if len(poly.terms) == 1 and poly.terms[0].coeff == 1 else ()
        return len(only) == 1 and isinstance(only[0], Tensor) and only[0].name in self._sum_statements

    def _hoist_atom(self, atom: Apply, target: str | None = None) -> Tensor:
        key = (atom.func, number_key(atom.param), *_poly_key(atom.arg))
        name = self._calls.get(key)
        if name is None and logsumexp_parts(atom) is not None:
            name = self._hoist_logsumexp(atom, key, target)
        if name is None and softmax_parts(atom) is not None:
            name = self._hoist_softmax(atom, key, target)
        scaled = _scaled_softmax(atom) if name is None and target is None else None
        if scaled is not None:
            # exp(2 z_k - 2 logsumexp(z)) as the softmax squared: the exponent 2 z - 2 lse rounds
            # by |z| ulps (the Hessian diagonal p - p^2 of a logsumexp was negative at z ~ 2000)
            name = self._calls[key] = self._power_step(self._hoist_atom(scaled[0]).name, scaled[1])
        exponent = _log_minus_expm1_of(atom) if name is None else None
        if exponent is not None:  # log(-expm1(v)): log(1 - exp(v)), exact on both sides of -log 2
            name = self._calls[key] = target or self._temp()
            # v over the log's axes, in their order (the step's array is read as the log's)
            self.steps.append(LogOneMinusExp(name, source=self._source(Poly(exponent.terms, atom.arg.indices))))
            self._quiet = True
        if name is None:
            source = self._source(atom.arg)
            name = target or self._temp()
            self.steps.append(Elementwise(name, func=atom.func, source=source, param=atom.param))
            self._quiet = True
            self._calls[key] = name
        return Tensor(name, atom.indices)

    def _source(self, poly: Poly) -> str:
        """The name of an array holding ``poly``: an existing one when it is just a tensor with
        its axes in order, else a new contraction step."""
        v = _difference_of_squares(poly)
        if v is not None and not self._saturates(v):  # (1 - v)(1 + v)
            one, indices = Term(Fraction(1), ()), poly.indices
            below = self._source(Poly((one, Term(Fraction(-1), (v,))), indices))
            above = self._source(Poly((one, Term(Fraction(1), (v,))), indices))
            return self._source(Poly((Term(Fraction(1), (Tensor(below, indices), Tensor(above, indices))),), indices))
        hoisted = self.hoist(poly)
        if len(hoisted.terms) == 1 and hoisted.terms[0].coeff == 1 and len(hoisted.terms[0].factors) == 1:
            only = hoisted.terms[0].factors[0]
            if isinstance(only, Tensor) and only.indices == poly.indices and not is_reciprocal(only):
                return only.name
        key = ("source", *_poly_key(hoisted))
        if key in self._calls:  # the same contraction as another call's argument: computed once
            return self._calls[key]
        opposite = self._calls.get(("source", *_poly_key(negated(hoisted))))
        if opposite is not None and opposite in {step.target for step in self.steps}:
            # softplus(-X_nd w_d) beside softplus(X_nd w_d): one product X w, and its negation (exact)
            name = self._calls[key] = self._temp()
            minus = Term(Fraction(-1), (Tensor(opposite, hoisted.indices),))
            self.steps.append(Contract(name, Contraction(Poly((minus,), hoisted.indices))))
            return name
        name = self._temp()
        self._calls[key] = name
        carried = {
            i
            for t in hoisted.terms
            for f in t.factors
            if isinstance(f, (Tensor, MatrixFn)) and not is_reciprocal(f)
            for i in f.indices
        }
        # an argument whose free index only a delta or a 1/n carries (tanh(s delta_ij),
        # mean_i(delta_ik)^2) is sized by the statement as written, as its own contraction is
        counting = any(is_count(i) for i in hoisted.all_index_names())  # delta_{f#1,f#1}: sized as written
        # exp(lam delta_kk) read back: k, a count only a delta carries, is sized by the statements
        delta_only = {i for t in hoisted.terms for f in t.factors if isinstance(f, Delta) for i in f.indices} - carried
        # the statement's own free indices inside it (delta_jk in df/dA_kl) are sized as the statement's
        axes = tuple(h for h in self._axis_hints if h[1] in hoisted.indices)
        # and an index the term around the call writes at a tensor (a_i beside exp(delta_im + 2 s),
        # which differentiation renamed from the statement's k) is sized there
        around = tuple(e for e in self._term_axes if e[0] in hoisted.indices)
        around = (("names", around),) if around else ()
        hints = (*self._written, *around, *axes) if set(hoisted.indices) - carried or counting or delta_only else ()
        self._contract(name, hoisted, hints)
        return name

    def _hoist_softmax(self, atom: Apply, key, target: str | None) -> str:
        """exp(v - log(sum_R exp(v))) in one step: exp(v - max) normalised over R."""
        v, axes = softmax_parts(atom)
        source = self._source(v)
        name = target or self._temp()
        self.steps.append(Softmax(name, source=source, axes=(axes, ())))
        self._calls[key] = name
        return name

    def _hoist_logsumexp(self, atom: Apply, key, target: str | None) -> str:
        """log(sum_R exp(v)) as max(v) + log(sum_R exp(v - max(v))): no overflow."""
        v, summed = logsumexp_parts(atom)
        source = self._source(v)
        axes = tuple(k for k, i in enumerate(v.indices) if i in summed)
        order = tuple(v.indices.index(i) for i in atom.indices)
        name = target or self._temp()
        self.steps.append(LogSumExp(name, source=source, axes=(axes, order)))
        self._calls[key] = name
        return name

    def add(self, target: str, poly: Poly, hints=()) -> None:
        """Compute ``target = poly``.  A statement that is one call (``s_n = sigmoid(z_n)``) is
        that call's step, so later uses of the same call reuse ``target``."""
        self._written = tuple(h for h in hints if h[0] == "names")
        self._axis_hints = tuple(h for h in hints if h[0] == "axis")
        self._hints, self._free = tuple(hints), tuple(poly.indices)
        self._product_tries = PRODUCT_TRIES
        if len(poly.terms) == 1 and poly.terms[0].coeff == 1 and len(poly.terms[0].factors) == 1:
            atom = poly.terms[0].factors[0]
            if isinstance(atom, Apply) and atom.indices == poly.indices:
                if self._hoist_atom(atom, target).name == target:
                    self._drop_unread()
                    return
        self._contract(target, self.hoist(poly), hints)
        if len(poly.terms) >= 2:  # a statement that is a sum (E_nkd = X_nd - C_kd) is the array
            # a later square of that difference, multiplied out, is read back as (see _merge_square)
            self._calls.setdefault(("source", *_poly_key(poly)), target)
            self._sum_statements.add(target)
        if len(poly.terms) == 1 and any(is_reciprocal(f) for f in poly.terms[0].factors):
            self._means[("mean", _poly_key(poly))] = target  # m = mean_n(x_n): read where a term holds x_n / n
        self._drop_unread()

    def _summed_residuals(self, terms: list[Term], free: set[str]) -> list[Term]:
        """``c R L^k`` with ``L = sum_S(r_S)`` for terms that are that product multiplied out, k = 1,
        2, 3, where ``r`` is the argument of a call in the terms (``y_n - X_nd w_d - b`` in ``log(1 +
        sum_n((y_n - X_nd w_d - b)^2))``) and R the factors the terms share.  Differentiating
        ``sum_n(f(r_n))`` by a parameter broadcast along n sums r's terms apart (``sum_n(y_n) -
        sum_n(X_nd w_d) - N b``) and its square into six products (the Hessian by b held ``-4 y_i
        y_n + 8 X_id w_d y_n - 8 N b y_i + ...``): near a fit, at y ~ 1e8, they cancel to noise (it
        was 24 times too large), where the residual array summed keeps its digits.  Each product
        is read as a multiset of components, factors linked by summed letters that nothing else
        carries, with a count (``delta_nn``) standing for the length of the letter of r whose
        axes its size hints share; every product of ``(sum_j a_j A_j)^k`` must be there with its
        multinomial coefficient.  Ends: each rewrite leaves fewer terms."""
        if len(terms) < 2:
            return terms
        residuals = {}
        for t in terms:
            for arg in _call_arguments(t.factors):
                if len(arg.terms) >= 2 and arg.indices:
                    residuals.setdefault(_poly_key(arg), arg)
        for r in residuals.values():
            dims = {i: letter_axes(r, i) for i in r.indices}  # the axes each letter of r is written at
            atoms = self._residual_atoms(r, dims) if all(dims.values()) else None
            if atoms is None:
                continue
            for k in (3, 2, 1):
                merged = self._merge_summed(terms, free, r, atoms, k, dims)
                if merged is not None:
                    return self._summed_residuals(merged, free)
        return terms

    def _residual_atoms(self, r: Poly, dims: dict) -> list[tuple[Fraction, Counter]] | None:
        """Each term of the residual ``r`` summed over r's letters, as ``(coefficient, the
        multiset of its components)`` (see :meth:`_components`); None where a term holds a call
        or a delta."""
        atoms = []
        for t in r.terms:
            if any(isinstance(f, (Apply, MatrixFn, Delta)) or is_reciprocal(f) for f in t.factors):
                return None
            found = self._components(t.factors, set(), dims)
            if found is None or found[0]:
                return None
            missing = [i for i in r.indices if not any(i in f.indices for f in t.factors)]
            atoms.append((t.coeff, Counter(key for key, _ in found[1]) + Counter(("count", i) for i in missing)))
        return atoms

    def _count_label(self, index: str, dims: dict) -> tuple:
        """A count as the letter of the residual whose length it is (``dims``: the axes each
        letter is written at), where its size hints say."""
        axes = self._count_axes(index)
        letters = [i for i, written in dims.items() if axes & written]
        return ("count", letters[0]) if len(letters) == 1 else ("count?", index)

    def _components(self, factors, free: set[str], dims: dict) -> tuple[list, list] | None:
        """``(the rest, the components)`` of a product: the components, each ``(key, factors)``,
        are counts and groups of tensors linked by summed letters that no call, no free index and
        no other factor carries, keyed up to the names of their letters (a count by the letter
        of the residual it counts); the rest is the calls and what they touch."""
        rest, pieces, counts = [], [], []
        for f in factors:
            count = _count_power(f)
            if count is not None:  # delta_nn^2: two counts
                counts += [count] * int(f.param)
            elif isinstance(f, Delta) and f.first == f.second and f.first not in free:
                counts.append(f)
            elif isinstance(f, Tensor) and not is_reciprocal(f):
                pieces.append([f])
            elif isinstance(f, Delta):
                return None
            else:
                rest.append(f)
        touched = {i for f in rest for i in f.indices} | free
        merged = True
        while merged:  # join pieces that share a summed letter
            merged = False
            for a, b in itertools.combinations(range(len(pieces)), 2):
                if {i for f in pieces[a] for i in f.indices} & {i for f in pieces[b] for i in f.indices}:
                    pieces[a] += pieces.pop(b)
                    merged = True
                    break
        keyed = []
        for piece in pieces:
            if {i for f in piece for i in f.indices} & touched:
                rest += piece
            else:
                keyed.append((("tensors", canonical_key(Term(Fraction(1), tuple(piece)), frozenset())), piece))
        carried = {i for f in rest for i in f.indices} | {i for _, piece in keyed for f in piece for i in f.indices}
        for f in counts:
            if f.first in carried:
                rest.append(f)
            else:
                keyed.append((self._count_label(f.first, dims), [f]))
        return rest, keyed

    def _residual_products(self, terms: list[Term], free: set[str], indices: Indices) -> list[Term]:
        """``c R a b ...`` for terms that are that product multiplied out, where a, b, ... (two or
        three) are sums the statement writes as operands (a ``residuals`` hint): the covariance
        ``mean_n((x_n - mean_k(x_k))(y_n - mean_k(y_k)))`` is ``mean_n(x_n y_n) - mean_n(x_n)
        mean_n(y_n)`` in the normal form, which at x, y ~ 1e8 was -2.0 for -0.13.  A term seeds a
        product where it holds a tensor of each sum's first term (a tensor over all its letters);
        R is its other factors.  The product is multiplied out with the same normal form and must
        be among the terms, every term with its coefficient (counts matched by the axes their
        size hints name), so the rewrite is an identity.  One sum times the rest is left to
        :func:`_common_factor` and :meth:`_recount`, whose steps a sum over axes reads
        (:meth:`_summed_step`).  Ends: each rewrite leaves fewer terms."""
        residuals = list({_poly_key(r): r for h in self._hints if h[0] == "residuals" for r in h[1]}.values())
        leads = [(r, lead) for r in residuals if (lead := _lead(r)) is not None]
        if not leads or len(terms) < 2 or len(terms) > 64:
            return terms
        placed = self._calls_placed(terms)  # calls as named tensors: cheap to compare
        keys: dict[tuple, list[int]] = {}
        for number, t in enumerate(placed):
            keys.setdefault(_uncounted_key(t, free), []).append(number)
        names = {_names_of(t.factors) for t in placed}
        tried: set[tuple] = set()
        for k in (3, 2):
            for number, t in enumerate(placed):
                slots = [
                    (x, r, sigma)
                    for x, g in enumerate(t.factors)
                    for r, lead in leads
                    if (sigma := _lead_letters(lead, g, r)) is not None
                ]
                for chosen in itertools.combinations(slots, k):
                    if len({x for x, _, _ in chosen}) < k:
                        continue
                    key = (number, tuple((x, _poly_key(r)) for x, r, _ in chosen))
                    if key in tried or not _swaps_present(t, chosen, names):
                        continue
                    tried.add(key)
                    if self._product_tries <= 0:  # a bound on the work: each try multiplies out a product
                        return terms
                    self._product_tries -= 1
                    c = t.coeff / math.prod(_lead(r)[0] for _, r, _ in chosen)
                    members = self._product_at(placed, keys, number, chosen, c, free, indices)
                    if members is not None:
                        at = {x for x, _, _ in chosen}
                        factors = [f for k, f in enumerate(terms[number].factors) if k not in at]
                        for _, r, mapping in chosen:
                            factors.append(Tensor(self._residual_array(r), tuple(mapping[i] for i in r.indices)))
                        merged = [*(u for n, u in enumerate(terms) if n not in members), Term(c, tuple(factors))]
                        return self._residual_products(merged, free, indices)
        return terms

    def _residual_array(self, r: Poly) -> str:
        """The step holding the sum ``r`` over its letters in order, once per line; a sum over
        some of its axes reads it (:meth:`_summed_step`: the gradient by b2 of a network's
        squared error is its residual summed, not a difference of two sums)."""
        name = self._source(r)
        self._sums.setdefault(name, r)
        return name

    def _calls_placed(self, terms: list[Term]) -> list[Term]:
        """``terms`` with each call (and matrix function) a tensor named by what it computes,
        over the call's free indices: two spellings of one call are one name."""
        names = self._placeholders

        def placed(f):
            if isinstance(f, Apply):
                key = (f.func, number_key(f.param), *_poly_key(f.arg))
            elif isinstance(f, MatrixFn):
                key = (f.func, f.matrix)
            else:
                return f
            return Tensor(names.setdefault(key, f"_call{len(names)}"), f.indices)

        return [Term(t.coeff, tuple(placed(f) for f in t.factors)) for t in terms]

    def _product_at(self, terms, keys, number: int, chosen, c: Fraction, free: set[str], indices: Indices):
        """The terms that are the product ``c R a b ...`` that term ``number`` seeds multiplied out
        (``chosen``: the factor standing for each sum's first term, the sum, and its letters
        there); else None."""
        t = terms[number]
        at = {x for x, _, _ in chosen}
        rest = tuple(f for k, f in enumerate(t.factors) if k not in at)
        taken = t.index_names() | free
        left = [Term(c, rest)]
        for _, r, mapping in chosen:
            r = rename_apart(r, taken | set(mapping.values()))
            renamed = carrying([u.rename(mapping) for u in r.terms], tuple(mapping.values()))
            left = multiply(left, renamed, set(mapping.values()) | free, avoid=set(taken))
            if len(left) > 256:
                return None
        expected = simplify(left, indices)
        if len(expected.terms) < 2:
            return None
        seed = Poly((t,), ())
        members: list[int] = []
        for u in expected.terms:
            wanted = [letter_axes(seed, i) for i in _counts_of(u)]
            match = next(
                (
                    n
                    for n in keys.get(_uncounted_key(u, free), [])
                    if terms[n].coeff == u.coeff and n not in members and self._counts_match(terms[n], wanted)
                ),
                None,
            )
            if match is None:
                return None
            members.append(match)
        return members

    def _counts_match(self, term: Term, wanted: list[set]) -> bool:
        """Whether the counts of ``term`` count the axes ``wanted``, one each (a count's axes are
        those its size hints name)."""
        have = [self._count_axes(c) for c in _counts_of(term)]
        if len(have) != len(wanted):
            return False
        return any(all(w & h for w, h in zip(wanted, order)) for order in itertools.permutations(have))

    def _like_counted(self, terms: list[Term], free: set[str], dims: dict) -> list[Term]:
        """``terms`` with those equal but for the names of counts of one length added up
        (``4 b y_i delta_{n#dL}`` and ``4 b y_i delta_{n#dd1L}``, which two derivatives left)."""
        seen: dict[tuple, int] = {}
        out: list[Term | None] = []
        for t in terms:
            found = self._components(t.factors, free, dims)
            key = None
            if found is not None and not any(c[0] == "count?" for c, _ in found[1]):
                rest_key = canonical_key(Term(Fraction(1), tuple(found[0])), frozenset(free))
                key = (rest_key, tuple(sorted(Counter(c for c, _ in found[1]).items())))
            if key in seen:
                n = seen[key]
                out[n] = Term(out[n].coeff + t.coeff, out[n].factors)
                continue
            if key is not None:
                seen[key] = len(out)
            out.append(t)
        return [t for t in out if t.coeff]

    def _merge_summed(self, terms: list[Term], free: set[str], r: Poly, atoms: list, k: int, dims: dict):
        """The terms with one group ``c R (sum_S r)^k`` merged (see :meth:`_summed_residuals`)."""
        products: dict[tuple, Fraction] = {}
        for combo in itertools.combinations_with_replacement(range(len(atoms)), k):
            union: Counter = sum((atoms[j][1] for j in combo), Counter())
            weight = Fraction(math.factorial(k), math.prod(math.factorial(combo.count(j)) for j in set(combo)))
            weight *= math.prod(atoms[j][0] for j in combo)
            key = tuple(sorted(union.items()))
            products[key] = products.get(key, Fraction(0)) + weight
        products = {key: w for key, w in products.items() if w}
        if len(products) < 2:
            return None
        terms = self._like_counted(terms, free, dims)
        read = []
        index: dict[tuple, list[int]] = {}
        for number, t in enumerate(terms):
            found = self._components(t.factors, free, dims)
            if found is None:
                read.append(None)
                continue
            rest, keyed = found
            components = Counter(key for key, _ in keyed)
            rest_key = canonical_key(Term(Fraction(1), tuple(rest)), frozenset(free))
            read.append((rest, rest_key, components, keyed))
            index.setdefault((rest_key, tuple(sorted(components.items()))), []).append(number)
        first_key, first_weight = next(iter(products.items()))
        first = Counter(dict(first_key))
        for number, entry in enumerate(read):
            if entry is None:
                continue
            rest, rest_key, components, keyed = entry
            if any(components[c] < n for c, n in first.items()):
                continue
            left = components - first
            c = terms[number].coeff / first_weight
            members = []
            for key, weight in products.items():
                want = (rest_key, tuple(sorted((left + Counter(dict(key))).items())))
                match = next(
                    (n for n in index.get(want, []) if terms[n].coeff == c * weight and n not in members), None
                )
                if match is None:
                    break
                members.append(match)
            else:
                kept, wanted = list(rest), Counter(left)
                for key, piece in keyed:  # the components left over stay beside the sum
                    if wanted[key] > 0:
                        wanted[key] -= 1
                        kept += piece
                total = Tensor(
                    self._inner_step(Poly((Term(Fraction(1), (Tensor(self._source(r), r.indices),)),), ())), ()
                )
                merged = Term(c, (*kept, *[total] * k))
                return [*(t for n, t in enumerate(terms) if n not in members), merged]
        return None

    def _counted_means(self, terms: list[Term], free: set[str], indices: Indices) -> list[Term]:
        """Terms with a count N beside a mean's 1/N over the same dimension without both (N times
        the mean of y is the sum of y), collected again.  Differentiating the mean of a centred
        product leaves ``N (1/N) sum_j(y_j) / N`` beside ``sum_j(y_j) / N``, which cancel only
        where the count and the mean are known to be one length: the size hints say which axes a
        count counts (the gradient of a Pearson correlation at x ~ 1e6 was 305 times too
        large).  Ends: each rewrite removes two factors."""
        out, changed = [], False
        for term in terms:
            counts = _counts_of(term)
            if not counts or not any(is_reciprocal(f) for f in term.factors):
                out.append(term)
                continue
            factors = list(term.factors)
            seed = Poly((term,), ())
            for c in counts:
                axes = self._count_axes(c)
                mean = next(
                    (
                        f
                        for f in factors
                        if is_reciprocal(f)
                        and f.indices[0] not in free
                        and {a for a in letter_axes(seed, f.indices[0]) if a[0] != f.name} & axes
                    ),
                    None,
                )
                if mean is not None:
                    count = next(f for f in factors if isinstance(f, Delta) and f.first == c)
                    factors = [f for f in factors if f is not mean and f is not count]
                    changed = True
            out.append(Term(term.coeff, tuple(factors)))
        return list(simplify(out, indices, cancelling=False).terms) if changed else terms

    def _named_means(self, terms: list[Term], free: set[str], indices: Indices) -> list[Term]:
        """``x_k (1/n)_k`` summed over k as one array m: the statement that computes ``m =
        mean_n(x_n)`` where there is one, else a step of its own where two or more terms hold that
        mean.  The Hessian of ``m = mean_n(x_n); v = mean_n((x_n - m)^2); L = log(v)`` by x holds
        ``m x_i - x_i x_j`` and the like with the mean spelled out, and only with m one array do
        they pair into ``-(x_i - m)(x_j - m)`` (at x ~ 1e8 it was [0, 0.19, 0, ...] for [-0.015,
        0.14, -0.077, ...]).  A mean of a tensor over the one letter that it alone carries in the
        term, where the tensor also stands over an output index; the terms are collected again."""
        computed = {step.target for step in self.steps}
        found = []  # per term: [(reciprocal, tensor, kept axes, key)]
        uses: Counter = Counter()
        for term in terms:
            means = []
            if any(isinstance(f, Delta) and f.first == f.second for f in term.factors):
                found.append(means)  # a count pairs with the tensor's axis first (_recount)
                continue
            for r in (f for f in term.factors if is_reciprocal(f)):
                k = r.indices[0]
                holders = [f for f in term.factors if f is not r and k in f.indices]
                if k in free or len(holders) != 1 or not isinstance(holders[0], Tensor) or is_reciprocal(holders[0]):
                    continue
                (t,) = holders
                if t.indices.count(k) != 1 or any(t is m[1] for m in means):
                    continue
                kept = tuple(dict.fromkeys(i for i in t.indices if i != k))  # mean_v(T_uuv): over u once
                key = ("mean", _poly_key(Poly((Term(Fraction(1), (t, r)),), kept)))
                means.append((r, t, kept, key))
                uses[key] += 1
            found.append(means)
        # only where the tensor also stands over an output index (x_i beside mean_n(x_n)): there the
        # centred x_i - m forms; elsewhere a mean beside its tensor pairs as mean_n(x_n - m) does
        centred = {f.name for t in terms for f in t.factors if isinstance(f, Tensor) and set(f.indices) & free}
        out, changed = [], False
        for term, means in zip(terms, found):
            factors = list(term.factors)
            for r, t, kept, key in means:
                if t.name not in centred:
                    continue
                name = self._means.get(key)
                if name is None or name not in computed:
                    if uses[key] < 2:
                        continue
                    name = self._means[key] = self._temp()
                    self.steps.append(Contract(name, Contraction(Poly((Term(Fraction(1), (t, r)),), kept))))
                    computed.add(name)
                factors = [f for f in factors if f is not r and f is not t] + [Tensor(name, kept)]
                changed = True
            out.append(Term(term.coeff, tuple(factors)))
        return list(simplify(out, indices, cancelling=False).terms) if changed else terms

    def _drop_unread(self) -> None:
        """Drop the steps of temporary arrays that no step reads (a power of s that the saturating
        products replaced), and forget them as shared calls: a later statement that needs one
        computes it anew.  Ends: each pass drops a step or stops."""
        while True:
            read = {name for step in self.steps for name in step.reads()}
            unread = {s.target for s in self.steps if s.target.startswith("_t") and s.target not in read}
            if not unread:
                return
            self.steps = [s for s in self.steps if s.target not in unread]
            # a pair's or a residual's entry holds (name, layout)
            self._calls = {
                key: made
                for key, made in self._calls.items()
                if (made if isinstance(made, str) else made[0]) not in unread
            }


def _mentions(value, name: str) -> bool:
    """Whether a size hint (nested tuples of strings and polys) names ``name``."""
    if isinstance(value, str):
        return value == name
    if isinstance(value, tuple):
        return any(_mentions(v, name) for v in value)
    if isinstance(value, Poly):
        return name in value.tensor_names()
    return False


def _broadcast_product(d) -> bool:
    """Whether the definition ``d`` is a product of arrays each smaller than it: a residual over
    some of its axes times factors over the others (``dLdh_nk = (h_ni W2_i - y_n) W2_k``)."""
    if len(d.indices) < 2 or any(is_count(i) for i in d.poly.all_index_names()):
        return False
    whole = set(d.indices)
    if len(d.poly.terms) == 1:  # dLdh_nk = r_n W2_k
        (term,) = d.poly.terms
        return all(_smaller_factor(f, whole) for f in term.factors)
    pulled = _common_factor(d.poly)
    if pulled is None:
        return False
    common, inner = pulled
    return set(inner.indices) < whole and all(set(f.indices) < whole for f in common)


def _smaller_factor(f, whole: set[str]) -> bool:
    """Whether ``f`` is an array over some of the axes ``whole`` (not all, none summed): a tensor,
    a call, or a delta joining two of them (the diagonal of an adjoint, ``delta_hj``)."""
    if isinstance(f, Delta):
        return f.first != f.second and {f.first, f.second} < whole
    if isinstance(f, Tensor) and not f.indices:
        return True  # a scalar (c in c Q_id K_jd)
    return isinstance(f, (Tensor, Apply)) and set(f.indices) < whole and len(set(f.indices)) == len(f.indices)


def _shared_by_terms(d, whole_inner: bool = False) -> tuple[tuple, Poly] | None:
    """``(common, inner)`` where every term of ``d`` holds the factors ``common``, each over some of
    ``d``'s axes, and the sum ``inner`` of what the terms hold besides is over fewer axes than ``d``:
    ``delta_hj H_nj X_ni - delta_hj H_nj^2 X_ni`` is ``delta_hj X_ni (H_nj - H_nj^2)``, an adjoint
    of a network's Hessian that computed as written holds D x H x N x H numbers, where ``inner``
    holds N x H.  With ``whole_inner``, ``inner`` over every axis of ``d`` (two or more) too: the
    tangent's adjoint ``W2_k (s_n - 2 r_n h_nk t_nk)`` of a network's Hessian-vector product.
    None where there is no such split.  Exact: the sum distributes."""
    terms = d.poly.terms
    if len(d.indices) < (2 if whole_inner else 3) or len(terms) < 2 or len(set(d.indices)) != len(d.indices):
        return None
    if any(is_count(i) for i in d.poly.all_index_names()):
        return None
    whole = set(d.indices)
    pulled = _pulled_out(d.poly, lambda f: _smaller_factor(f, whole))
    return None if pulled is None or (set(pulled[1].indices) == whole and not whole_inner) else pulled


def _split(d, shared: tuple[tuple, Poly], taken: set[str]) -> tuple:
    """``d`` as two definitions, given its ``shared`` (common factors, inner sum) of
    :func:`_shared_by_terms`: the inner sum, named ``<d>_inner`` apart from the names ``taken``
    and sized by ``d``'s hints for its axes, and ``d`` as the product of the common factors and
    it."""
    from .program import unique_name  # (the program module is above the optimiser)

    common, inner = shared
    name = unique_name(f"{d.name}_inner", taken)
    kept = set(inner.indices)
    hints = tuple(h for h in d.hints if h[0] != "axis" or h[1] in kept)
    part = replace(d, name=name, indices=inner.indices, poly=inner, hints=hints)
    product = Poly((Term(Fraction(1), (*common, Tensor(name, inner.indices))),), d.indices)
    return part, replace(d, poly=product)


def _to_inline(d) -> tuple | None:
    """``(d, None, False)`` where ``d`` is a product of smaller arrays, ``(d, (common, inner),
    False)`` where its terms share factors over fewer axes (split first), ``(d, (common, inner),
    True)`` where they share factors over fewer axes than an inner sum over all of them (split
    first, and substituted only into a single reader), else None."""
    if _broadcast_product(d):
        return d, None, False
    shared = _shared_by_terms(d)
    if shared is not None:
        return d, shared, False
    shared = _shared_by_terms(d, whole_inner=True)
    return None if shared is None else (d, shared, True)


def inline_broadcast_products(definitions: list, keep: set[str]) -> list:
    """The definitions to evaluate, with each that is a product of smaller arrays (see
    :func:`_broadcast_product`; not one in ``keep``) substituted into the definitions that read it
    as a factor.  Computed apart, the two-layer network's adjoint ``dLdh_nk = (h_ni W2_i - y_n)
    W2_k`` is a pass writing N x K numbers that its readers read back; substituted, each reader
    multiplies the pieces in its own product, and factoring there pulls W2_k out of a sum of
    terms.  The residual is still computed once (the line shares it).  A sum whose terms share
    factors over fewer axes (:func:`_shared_by_terms`) is first split into those factors times
    its inner sum, computed apart as ``<name>_inner`` (never substituted itself: its terms would
    multiply out in the readers).  Terms sharing smaller factors beside an inner sum over all
    the axes (``d2LdW1vdh_nk = W2_k (s_n - 2 r_n h_nk t_nk)``) are split the same way where one
    definition reads the product: the reader then applies the factors where its own contraction
    makes them cheapest (``W2_m`` after the sum over n in ``d2LdW1vdh_nm (1 - h_nm^2) X_nl``: a
    pass over N x K numbers saved); with more readers each would multiply them again.  Ends:
    each definition is looked at once."""
    from .program import substitute_tensor  # (the program module is above the optimiser)

    out = list(definitions)
    done: set[str] = set()
    while True:
        found = next(
            (c for x in out if x.name not in done and x.name not in keep and (c := _to_inline(x)) is not None), None
        )
        if found is None:
            return out
        d, shared, single = found
        done.add(d.name)
        readers = [x for x in out if x is not d and d.name in x.poly.tensor_names()]
        if not readers or any(_mentions(x.hints, d.name) for x in out if x is not d):
            continue
        if single and len(readers) > 1:
            continue
        if any(
            isinstance(f, Apply) and d.name in f.arg.tensor_names()
            for x in readers
            for t in x.poly.terms
            for f in t.factors
        ):
            continue  # read inside a call: left as it is
        if shared is not None:  # a sum over all its axes of terms sharing factors
            taken = {x.name for x in out} | {n for x in out for n in x.poly.tensor_names()}
            part, d_product = _split(d, shared, taken)
            at = next(k for k, x in enumerate(out) if x is d)
            out[at : at + 1] = [part, d_product]
            d = d_product
            done.add(part.name)  # the inner sum is computed as it is: substituted, its terms would multiply out
        substituted = {}
        for x in readers:
            poly, counts = substitute_tensor(x.poly, d.name, d)
            if counts:
                break
            substituted[x.name] = poly
        else:  # each reader looked up as it is now (an earlier substitution may have changed it)
            out = [replace(x, poly=substituted[x.name]) if x.name in substituted else x for x in out if x is not d]


__all__ = ["StraightLine", "inline_broadcast_products"]
