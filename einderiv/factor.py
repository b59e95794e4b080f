"""Factored printing: common factors pulled out of a sum, for reading.

``-y_n X_ni + s_n X_ni`` prints as ``(s_n - y_n) X_ni`` and ``s_n X_ni X_nj - s_n^2 X_ni X_nj`` as
``s_n (1 - s_n) X_ni X_nj``: the forms a textbook writes (Deisenroth et al., *Mathematics for
Machine Learning*, ch. 5).  Printing only: the normal form (a sum of products) is what is
differentiated and evaluated.  The factored text is lowered again and must give back the same
normal form, without a scoping warning; where it does not, the expanded sum is printed.

Greedy, and it ends: each step pulls out an atom that at least two terms share, with every atom
all of those terms share, and recurses on strictly fewer atoms per term.  A power ``u^k`` with an
integer k >= 2 counts as k factors u (so ``s_n`` comes out of ``s_n^2``).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import fields, is_dataclass, replace
from fractions import Fraction

from .index_names import is_count
from .ir import Add, Call, Delta, Div, Expr, Mul, Neg, Number, Pow, Tensor
from .lower import normalize
from .normal import (
    Apply,
    Poly,
    Term,
    carrying,
    common_coefficient,
    equivalent,
    exact_quotient,
    is_reciprocal,
    multiply,
    power_of,
    simplify,
)
from .printing import (
    atom_to_expr,
    avoiding,
    count_letters_apart,
    counts_printed,
    letter_axes,
    term_to_expr,
    to_expr,
)

#: printed terms a sum may have before factoring is not tried (a long sum reads as it is)
MAX_FACTOR_TERMS = 12
#: how many choices of the factor to pull out first are tried at each level (the shortest text wins)
CHOICES = 3


def _unit(atom) -> object | None:
    """``u`` when ``atom`` is ``u^k`` with an integer k >= 2 of a single atom u (same indices)."""
    if isinstance(atom, Apply) and atom.func == "pow" and atom.param.denominator == 1 and atom.param >= 2:
        terms = atom.arg.terms
        if len(terms) == 1 and terms[0].coeff == 1 and len(terms[0].factors) == 1:
            inner = terms[0].factors[0]
            if tuple(inner.indices) == tuple(atom.arg.indices):
                return inner
    return None


def _expanded(term: Term) -> Counter:
    """The term's atoms as a multiset, ``u^k`` counted as k atoms u."""
    atoms: Counter = Counter()
    for f in term.factors:
        unit = _unit(f)
        if unit is not None:
            atoms[unit] += int(f.param)
        else:
            atoms[f] += 1
    return atoms


def _term(coeff: Fraction, atoms: Counter, order: list) -> Term:
    """A :class:`Term` from a multiset, atoms in first-seen ``order``, repeats as powers."""
    factors = []
    for atom in order:
        count = atoms.get(atom, 0)
        if count == 1:
            factors.append(atom)
        elif count > 1:
            factors.append(power_of(atom, Fraction(count)))
    return Term(coeff, tuple(factors))


def _build(
    parts: list[tuple[Fraction, Counter]],
    order: list,
    visible: set[str],
    nested: bool,
    leading: bool = True,
    outputs: frozenset[str] = frozenset(),
    memo: dict | None = None,
) -> Expr | None:
    """The sum of ``parts`` (coefficient, atom multiset) with common factors pulled out, or None
    where nothing is shared.  ``visible``: indices bound outside (the output's free indices and
    those of factors already pulled out), which the printed sum must keep free; ``outputs``: the
    output's own indices (never summed, however often they occur).  ``memo``: the sums already
    built in this search, by what they are built from: the tries of each level meet the same
    sub-sums again (a Hessian of log(1 + u^2) nested four deep built 258 sums 8075 times)."""
    if len(parts) < 2:
        return None
    memo = {} if memo is None else memo
    key = (tuple((c, tuple(atoms.items())) for c, atoms in parts), frozenset(visible), nested, leading, outputs)
    if key not in memo:
        memo[key] = _built(parts, order, visible, nested, leading, outputs, memo)
    return memo[key]


def _built(parts, order, visible, nested, leading, outputs, memo) -> Expr | None:
    """:func:`_build` itself, without the memo."""
    counts: Counter = Counter()
    for _, atoms in parts:
        counts.update(set(atoms))
    choices = []
    for best in sorted(order, key=lambda a: (-counts.get(a, 0), order.index(a))):
        if counts.get(best, 0) < 2:
            break
        sharing = [p for p in parts if best in p[1]]
        common = sharing[0][1].copy()
        for _, atoms in sharing[1:]:
            common &= atoms
        common = _one_length_means(_unambiguous(common, sharing, visible - outputs), sharing, visible)
        if best in common and all(c[2] != common for c in choices):
            choices.append((best, sharing, common))
        if len(choices) == CHOICES:
            break
    built = [_pull(b, sh, co, parts, order, visible, nested, leading, outputs, memo) for b, sh, co in choices]
    built += [
        _pull_divisor(u, divisor, sharing, parts, order, visible, nested, leading, outputs, memo)
        for u, divisor, sharing in _divisor_choices(parts, order, visible)
    ]
    return min(built, key=lambda e: _length(e, memo), default=None)  # the shortest text of a few greedy tries


#: a text counts as this much shorter for each slope (``1 - u^2``, ``1 - u``) pulled out of a whole
#: sum in it, so that ``s (1 - s) (1 - 2 s)``, the form a textbook writes, wins over ``s (1 - 3 s + 2 s^2)``
SLOPE_BONUS = 5
#: the key in a search's memo of the slopes it pulled out of whole sums (by id: an equal ``1 - s``
#: that a common factor left in a group is no slope pulled out)
_SLOPES = "slopes"


def _length(expr: Expr, memo: dict) -> int:
    """The length of ``expr``'s text, less :data:`SLOPE_BONUS` for each slope pulled out in it."""
    slopes = memo.get(_SLOPES, {})
    return len(str(expr)) - SLOPE_BONUS * sum(1 for node in _nodes(expr) if id(node) in slopes)


def _nodes(expr) -> list:
    """``expr`` and every node inside it."""
    children = [getattr(expr, f.name) for f in fields(expr)] if is_dataclass(expr) else []
    found = [expr]
    for child in children:
        for c in child if isinstance(child, tuple) else (child,):
            if is_dataclass(c):
                found.extend(_nodes(c))
    return found


#: the binomials a sum may be divided by, coefficients from the constant up: 1 - u^2 (the slope of
#: tanh, t' = 1 - t^2) and 1 - u (of sigmoid, s' = s (1 - s))
DIVISORS = ((Fraction(1), Fraction(0), Fraction(-1)), (Fraction(1), Fraction(-1)))


def _divisor_choices(parts, order, visible: set[str]) -> list[tuple]:
    """The binomials ``1 - u^2`` and ``1 - u`` that divide the terms of ``parts`` holding the same
    other atoms (as a polynomial in the atom u) for two or more quotient terms: ``(u, divisor,
    the quotient's parts)``, those covering the most terms first (at most :data:`CHOICES`).  An
    atom whose index is bound outside may be one (``s_n (1 - s_n) (1 - 2 s_n) X_ni X_nj X_nk``:
    a product's factors share its letters), as the text is read back before it is printed.
    The Hessian of ``tanh(tanh(w_i x_i))``, eight terms of powers of t = tanh(w_i x_i) and T =
    tanh(t), is then ``2 (1 - t^2) (1 - T^2) (-(1 - t^2) T - t) x_k x_j``."""
    counted = Counter(a for _, atoms in parts for a in atoms)
    found = []
    for u in order:
        if counted[u] < 2 or isinstance(u, Number):
            continue
        for divisor in DIVISORS:
            groups: dict[frozenset, dict[int, Fraction]] = {}
            for coeff, atoms in parts:
                rest = frozenset((a, n) for a, n in atoms.items() if a != u)
                row = groups.setdefault(rest, {})
                row[atoms.get(u, 0)] = row.get(atoms.get(u, 0), Fraction(0)) + coeff
            quotient, covered = [], 0
            for rest, row in groups.items():
                if len(row) < 2:
                    continue
                divided = exact_quotient([row.get(k, Fraction(0)) for k in range(max(row) + 1)], divisor)
                if divided is None:
                    continue
                covered += len(row)
                held = dict(rest)
                others = Counter({a: held[a] for a in order if a in held})  # in first-seen order, not a set's
                for k, c in enumerate(divided):
                    if c:
                        quotient.append((c, others + Counter({u: k}) if k else others.copy()))
            # u's summed letters are bound by the pulled binomial: a quotient term that holds one
            # twice would contract it inside the group (2 (1 - t_nj^2) ((t_nm u_m X_ni - X_ni y_n)
            # u_j) sums n inside, apart from the n outside)
            letters = set(getattr(u, "indices", ())) - visible
            if len(quotient) >= 2 and all(
                sum(n * a.indices.count(i) for a, n in atoms.items()) <= 1 for _, atoms in quotient for i in letters
            ):
                found.append((covered, u, divisor, quotient))
    found.sort(key=lambda f: -f[0])
    return [(u, divisor, quotient) for _, u, divisor, quotient in found[:CHOICES]]


def _pull_divisor(u, divisor, quotient, parts, order, visible, nested, leading, outputs, memo) -> Expr:
    """The sum with the binomial ``divisor`` in ``u`` pulled out of the terms it divides: ``g
    (1 - u^2) (Q)``, and the other terms after it."""
    dividing = {frozenset((a, n) for a, n in atoms.items() if a != u) for _, atoms in quotient}
    others = [p for p in parts if frozenset((a, n) for a, n in p[1].items() if a != u) not in dividing]
    inside = visible | set(u.indices)
    g = common_coefficient([c for c, _ in quotient])
    _, group = _inner_group([(c / g, atoms) for c, atoms in quotient], order, inside, outputs, memo)
    if not isinstance(group, (Add, Pow)):
        group = Mul((group,))
    binomial = [(c, Counter({u: k}) if k else Counter()) for k, c in enumerate(divisor) if c]
    factors: list[Expr] = [Number(abs(g))] if abs(g) != 1 else []
    slope = Add(tuple(_leaf(binomial, order, inside, True, True)))
    if not others:  # a factor of the whole sum, not of some of its terms
        memo.setdefault(_SLOPES, {})[id(slope)] = slope
    factors += [slope, group]
    if g < 0 and leading:
        factors[0] = Neg(factors[0])
    product: Expr = Mul(tuple(factors))
    if g < 0 and not leading:
        product = Neg(product)
    return _followed_by(product, others, order, visible, nested, outputs, memo)


def _inner_group(inner: list, order, inside: set[str], outputs, memo) -> tuple[list, Expr]:
    """The terms left in a group once its factor is pulled out, the first positive ((s_n - y_n),
    not (-y_n + s_n)), and the group they print as: factored only where that is shorter (1 - 7 s
    + 12 s^2 - 6 s^3, not -s (-6 s (2 - s) + 7) + 1)."""
    inner = sorted(inner, key=lambda p: bool(p[1]))
    positive = next((k for k, p in enumerate(inner) if p[0] > 0), 0)
    inner.insert(0, inner.pop(positive))
    plain = Add(tuple(_leaf(inner, order, inside, True, True)))
    built = _build(inner, order, inside, True, outputs=outputs, memo=memo)
    return inner, built if built is not None and _length(built, memo) < len(str(plain)) else plain


def _followed_by(product: Expr, others, order, visible, nested, outputs, memo) -> Expr:
    """``product`` and then the sum of ``others`` (the terms nothing was pulled out of), factored."""
    if not others:
        return product
    rest = _build(others, order, visible, nested, False, outputs, memo)
    rest_terms = rest.terms if isinstance(rest, Add) else (rest,) if rest is not None else None
    if rest_terms is None:
        rest_terms = tuple(_leaf(others, order, visible, nested, False))
    return Add((product, *rest_terms))


def _pull(best, sharing, common, parts, order, visible, nested, leading, outputs, memo) -> Expr:
    """The sum with ``common`` pulled out of the terms ``sharing`` (those holding ``best``)."""
    others = [p for p in parts if best not in p[1]]
    coeffs = [c for c, _ in sharing]
    g = common_coefficient(coeffs)
    if any(c < 0 and not (atoms - common) for c, atoms in sharing) and g > 0:
        g = -g  # a group that starts with a positive number: -(1 - t^2), not (t^2 - 1)
    pulled = [a for a in order if a in common]
    # a count pulled out (delta_jj, j bound nowhere else) binds nothing: a count of that dimension
    # inside a group prints with the same letter, as in term_to_expr (another would size nothing)
    inside = visible | {i for a in pulled if not _count(a, visible) for i in a.indices}
    power = _binomial([(c / g, atoms - common) for c, atoms in sharing], order, inside)
    if power is not None and power[0] == -1:
        g = -g  # -(x_n - mu)^2 times the rest
    inner, group = _inner_group([(c / g, atoms - common) for c, atoms in sharing], order, inside, outputs, memo)
    if power is not None and abs(power[0]) == 1:
        group = power[1]
    if not isinstance(group, (Add, Pow)):
        group = Mul((group,))  # a product pulled out of a product: parenthesised
    in_group = {a for _, atoms in inner for a in atoms} | {_unit(a) for _, atoms in inner for a in atoms}
    divisors = [a for a in pulled if _negative_power(a)]
    # 1/n_r with r summed over the product: mean_r(...) around it, as term_to_expr prints a term
    means = tuple(dict.fromkeys(a.indices[0] for a in pulled if is_reciprocal(a) and a.indices[0] not in visible))
    # one 1/n_r per mean_r: the rest of a power 1/n_r^2 stays in the product
    left = {a: common[a] - (is_reciprocal(a) and a.indices[0] in means) for a in pulled}
    kept = [a for a in pulled if a not in divisors and left[a] > 0]
    before = [_atom(a, left[a], inside) for a in kept if a in in_group]
    after = [_atom(a, left[a], inside) for a in kept if a not in in_group]
    number: list[Expr] = [Number(abs(g))] if abs(g) != 1 else []
    factors: list[Expr] = (number if not means else []) + before + [group] + after
    if g < 0 and leading and not means:
        factors[0] = Neg(factors[0])
    product: Expr = factors[0] if len(factors) == 1 else Mul(tuple(factors))
    for a in divisors:  # (a - b) / sqrt(u), not (a - b) sqrt(u)^-1
        for _ in range(common[a]):
            product = Div(product, term_to_expr(Term(Fraction(1), (a,)), set(inside)).denominator)
    if means:  # 2 mean_n((s_n - y_n) X_ni), not 2 (s_n - y_n) X_ni mean_j(delta_jn)
        factors = [*number, Call("mean", product, means)]
        if g < 0 and leading:
            factors[0] = Neg(factors[0])
        product = factors[0] if len(factors) == 1 else Mul(tuple(factors))
    if g < 0 and not leading:
        product = Neg(product)
    return _followed_by(product, others, order, visible, nested, outputs, memo)


def _binomial(parts: list[tuple[Fraction, Counter]], order: list, visible: set[str]) -> tuple[Fraction, Expr] | None:
    """``(c, (f - g)^k)`` where ``parts`` are ``c Σ_b C(k, b) (-1)^b f^(k-b) g^b`` for two tensors
    f and g and k >= 2: a power of a residual that differentiation multiplied out prints as one
    (``-(x_n - mu)^2``, not ``2 x_n mu - x_n^2 - mu^2``), and reads back as a power, which near a
    fit keeps the digits that the expanded text cancels away."""
    atoms = [a for a in order if any(a in m for _, m in parts)]
    if len(atoms) != 2 or not all(isinstance(a, Tensor) and not is_reciprocal(a) for a in atoms):
        return None
    k = sum(parts[0][1].values())
    if k < 2 or len(parts) != k + 1 or any(sum(m.values()) != k for _, m in parts):
        return None
    f, g = atoms
    letters = set(f.indices) | set(g.indices)  # each term runs over them, or they are bound outside:
    if any(letters - {i for a in m for i in a.indices} - set(visible) for _, m in parts):
        return None  # x_n x_n - 2 x_n y + y y sums y y once, where (x_n - y)^2 sums it over n
    by_power = {m.get(g, 0): c for c, m in parts}
    c = by_power.get(0)
    if c is None or any(by_power.get(b) != c * math.comb(k, b) * (-1) ** b for b in range(k + 1)):
        return None
    base = Add((atom_to_expr(f, set(visible)), Neg(atom_to_expr(g, set(visible)))))
    return c, Pow(base, Fraction(k))


def _inner_binomial(expr) -> bool:
    """Whether the factored text holds a power of a difference, as :func:`_binomial` writes one."""
    if isinstance(expr, Pow) and isinstance(expr.base, Add) and len(expr.base.terms) == 2:
        return isinstance(expr.base.terms[1], Neg)
    children = [getattr(expr, f.name) for f in fields(expr)] if is_dataclass(expr) else []
    nodes = [c for child in children for c in (child if isinstance(child, tuple) else (child,))]
    return any(_inner_binomial(c) for c in nodes if is_dataclass(c))


def _multiplied_out(poly: Poly) -> Poly:
    """``poly`` with every integer power (2 or more) of a sum multiplied out: what a power of a
    residual in a printed text is, as the derivative's normal form spells it."""
    terms: list[Term] = []
    for term in poly.terms:
        partial = [Term(term.coeff, ())]
        for f in term.factors:
            power = isinstance(f, Apply) and f.func == "pow" and f.param.denominator == 1 and f.param >= 2
            if power and len(f.arg.terms) > 1:
                for _ in range(int(f.param)):  # a term lacking an index of the sum is broadcast along it
                    base = carrying(f.arg.terms, f.arg.indices)
                    partial = multiply(partial, base, set(f.arg.indices), avoid=set(poly.indices))
            else:
                partial = multiply(partial, [Term(Fraction(1), (f,))], set(f.indices))
        terms.extend(partial)
    return simplify(terms, poly.indices)


def _count(atom, visible: set[str]) -> bool:
    """Whether ``atom`` is a count printed with its letter (``delta_jj``, j not bound outside)."""
    return isinstance(atom, Delta) and atom.first == atom.second and atom.first not in visible


def _negative_power(atom) -> bool:
    return isinstance(atom, Apply) and atom.func == "pow" and atom.param < 0


def _atom(atom, count: int, visible: set[str]) -> Expr:
    """A pulled-out atom, ``count`` times (as a power)."""
    return atom_to_expr(_term(Fraction(1), Counter({atom: count}), [atom]).factors[0], set(visible))


def _unambiguous(common: Counter, sharing, visible: set[str]) -> Counter:
    """The shared atoms that can be pulled out without changing what an index means: an index
    bound outside (``visible``) may occur at most once in the product of pulled atoms and group,
    or it would be contracted there (``x_i (a_i + b_i)`` sums over i)."""
    common = common.copy()
    while True:
        inner_indices = {i for _, atoms in sharing for a in (atoms - common) for i in a.indices}
        seen: Counter = Counter()
        for atom, count in common.items():
            for i in atom.indices:
                seen[i] += count
        bad = {v for v in visible if seen[v] + (v in inner_indices) > 1}
        if not bad:
            return common
        common = Counter({a: n for a, n in common.items() if not set(a.indices) & bad})


def _one_length_means(common: Counter, sharing, visible: set[str]) -> Counter:
    """The shared atoms without a 1/n_r (r summed) unless every term of ``sharing`` writes r at
    one same axis: pulled out, it is one ``mean_r`` around them all, which binds r once, where
    each term summed its own r (``t2_r`` in one and ``t1_r`` in another may be two lengths, and
    ``mean_r(t2_r + t1_r)`` is then "two sizes"; ``X_nd w_d X_ni`` and ``y_n X_ni`` both write n
    at X's rows).  Axes, not dimensions, are compared: terms of one length written only at
    different tensors just stay unfactored."""
    common = common.copy()
    for atom in list(common):
        if is_reciprocal(atom) and atom.indices[0] not in visible:
            letter = atom.indices[0]
            axes = [letter_axes(_term(Fraction(1), atoms, list(atoms)), letter) for _, atoms in sharing]
            if not set.intersection(*axes):
                del common[atom]
    return common


def _leaf(
    parts: list[tuple[Fraction, Counter]], order: list, visible: set[str], nested: bool, leading: bool
) -> list[Expr]:
    """The terms of a sum with nothing left to pull out, printed as the normal form prints them
    (only the first may be ``leading``: a leading negative term reads ``-2 a``, later ones ``- 2 a``)."""
    terms = [_term(c, atoms, order) for c, atoms in parts]
    return [term_to_expr(t, set(visible), leading and k == 0, nested=nested) for k, t in enumerate(terms)]


def _flat(poly: Poly) -> Poly:
    """``poly`` with integer powers of single atoms written as repeated factors (``s_n^2`` as
    ``s_n s_n``), so that two spellings of one product compare equal."""
    terms = []
    for term in poly.terms:
        atoms = _expanded(term)
        factors = tuple(a for a in dict.fromkeys(atoms) for _ in range(atoms[a]))
        terms.append(Term(term.coeff, factors))
    return Poly(tuple(terms), poly.indices)


def factored(poly: Poly, count_axes=None) -> tuple[Expr, Poly]:
    """``poly`` printed with common factors pulled out where that reads back as ``poly``, and the
    normal form that the printed text reads back as (``poly`` itself, up to writing ``s_n^2`` as
    ``s_n s_n``).  Summed letters move out of the way of its counts' letters
    (:func:`~einderiv.printing.count_letters_apart`; ``count_axes``: what each count counts)."""
    with avoiding(poly, count_axes):
        return _factored(count_letters_apart(poly, count_axes))


def _factored(poly: Poly) -> tuple[Expr, Poly]:
    plain = to_expr(poly), poly
    if not 2 <= len(poly.terms) <= MAX_FACTOR_TERMS:
        return plain
    order: list = []
    parts = []
    original = poly
    terms = []
    for term in poly.terms:  # counting indices (i#2) print with their letters
        counts = sorted(i for i in term.index_names() if is_count(i))
        terms.append(counts_printed(term, counts, set(poly.indices)) if counts else term)
    poly = Poly(tuple(terms), poly.indices)
    for term in poly.terms:
        atoms = _expanded(term)
        order.extend(a for a in atoms if a not in order)
        parts.append((term.coeff, atoms))
    collected: dict[frozenset, list] = {}  # s_n^2 X and s_n s_n X are one product: one part
    for coeff, atoms in parts:
        key = frozenset(atoms.items())
        collected.setdefault(key, [Fraction(0), atoms])[0] += coeff
    parts = [(c, atoms) for c, atoms in collected.values() if c != 0]
    try:
        expr = _build(parts, order, set(poly.indices), False, outputs=frozenset(poly.indices))
    except (ValueError, ZeroDivisionError):
        return plain
    top = _binomial(parts, order, set(poly.indices))
    if top is not None:  # the whole sum is a power of a residual
        coefficient, base = top
        expr = base if coefficient == 1 else Neg(base) if coefficient == -1 else Mul((Number(coefficient), base))
    powered = top is not None or (expr is not None and _inner_binomial(expr))
    if expr is None:
        return plain
    flat = _ungrouped(expr)
    if flat != expr:  # 2 (1 - t^2) (1 - T^2) (...), not 2 ((1 - t^2) ((1 - T^2) (...))), where it reads back alike
        read = _read_back(flat, poly, original, plain, powered)
        if read is not plain:
            return read
    return _read_back(expr, poly, original, plain, powered)


def _ungrouped(expr: Expr) -> Expr:
    """``expr`` with each parenthesised product inside a product written as its factors:
    ``a ((b) (c))`` as ``a (b) (c)`` (a chain holding a division keeps its parentheses)."""
    if not is_dataclass(expr) or isinstance(expr, (Tensor, Delta, Number)):
        return expr
    changed = {}
    for field in fields(expr):
        value = getattr(expr, field.name)
        if isinstance(value, tuple) and value and all(is_dataclass(v) for v in value):
            changed[field.name] = tuple(_ungrouped(v) for v in value)
        elif is_dataclass(value):
            changed[field.name] = _ungrouped(value)
    expr = replace(expr, **changed) if changed else expr
    if not isinstance(expr, Mul):
        return expr
    factors: list[Expr] = []
    for f in expr.factors:
        inner = f.factors[0] if isinstance(f, Mul) and len(f.factors) == 1 else None
        if len(expr.factors) > 1 and isinstance(inner, Mul) and not any(isinstance(g, Div) for g in inner.factors):
            factors.extend(inner.factors)
        else:
            factors.append(f)
    return Mul(tuple(factors))


def _read_back(expr: Expr, poly: Poly, original: Poly, plain: tuple, powered: bool) -> tuple[Expr, Poly]:
    """``(expr, the normal form it reads back as)`` where the text ``expr`` reads back as ``poly``
    and is shorter than the plain sum, else ``plain``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            back = normalize(expr, poly.indices)
        except Exception:  # noqa: BLE001 - any failure to read back means: print the plain form
            return plain
    if len(str(expr)) >= len(str(plain[0])) or str(expr).count("sum_") > str(plain[0]).count("sum_"):
        return plain  # factoring is for reading: only where the text gets shorter and no sum_ appears
    if equivalent(back, poly):
        return expr, original
    if powered and equivalent(_multiplied_out(back), poly, powers_as_products=True):
        return expr, back  # the power of the residual, as the text reads: evaluated as a power
    # s_n (1 - s_n) reads back as s_n s_n, not s_n^2: hand back the re-read form, or where the
    # original counts (i#2, which the re-read form would lose) that spelling of the original
    if not equivalent(_flat(back), _flat(poly)):
        return plain
    counting = any(is_count(i) for i in original.all_index_names())
    return expr, (_flat(original) if counting else back)


__all__ = ["factored"]
