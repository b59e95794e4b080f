"""The catalogue of numerically stable rewrites: small named rules, each one identity.

A rule is a function with a docstring that says what it rewrites, why the result is evaluated
without overflow or cancellation (stability), and why applying it cannot go on forever
(termination).  Three kinds, each an ordered tuple consulted first match wins:

* :data:`~einderiv.normal.CALL_RULES`, ``rule(func, arg, param) -> terms | None``: consulted by
  :func:`einderiv.normal.make_apply` whenever a call ``func(arg)`` is built (from the text, by
  differentiation, or by substitution), after its exact folding (constants, powers).  They are
  defined in :mod:`einderiv.normal`, beside ``make_apply``: simplification builds calls, and one
  call rule (``log_add_exp``) simplifies what it writes, so the three are one recursion;
* :data:`PRODUCT_RULES`, ``rule(term) -> terms | None``: consulted where a product written in
  the text is lowered (:func:`einderiv.lower.lower`) and where a statement is read through its
  one-call intermediates (:func:`einderiv.program.see_through`);
* :data:`SUM_RULES`, ``rule(terms, free) -> terms | None``: consulted on every derivative
  (:func:`einderiv.differentiate.differentiate`), where the chain rule leaves identities
  between terms (``sigmoid(u) + sigmoid(-u) = 1``) that collect a gradient to ``sigmoid(z) - y``;
* :data:`RECOGNISED`: forms that are already stable as they stand, because evaluation and
  differentiation know them (``log(sum_R(exp(v)))`` is the log-sum-exp); listed so that the
  catalogue says what is covered.

Every rule builds its result from :class:`~einderiv.normal.Apply` directly (never through
``make_apply``), so a rule's output is never rewritten again by the same call: each rule
removes the pattern it matched (a ``log`` of a call, or a pair of factors) and introduces no
``log`` of a call, which is why rewriting ends.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from .index_names import axis_count
from .ir import Delta, Tensor
from .normal import (
    CALL_RULES,
    ONE,
    RECIPROCAL,
    Apply,
    Poly,
    Term,
    canonical_key,
    carrying,
    equivalent,
    flipped_sigmoid,
    keep_sums,
    letter_axes,
    merged_pair,
    negated,
    one_minus_sigmoid,
    power_of,
    sigmoid_factors,
    simplify,
    single_atom,
    without_factor,
)

# -- rules on a product: consulted where a written product is lowered ---------------------------


def logsumexp_parts(atom) -> tuple[Poly, tuple[str, ...]] | None:
    """``(v, R)`` when ``atom`` is ``log(sum_R(exp(v)))`` (a log-sum-exp), else None.

    This is the form ``logsumexp_R(v)`` is lowered to, and ``log(sum_R(exp(v)))`` as written is
    the same form, recognised without rewriting.
    Stable: evaluation computes it max-shifted (``max v + log(sum exp(v - max v))``, finite for
    v of magnitude 1000), and differentiation writes its derivative as the softmax
    ``exp(v - logsumexp_R(v))``, whose exponent is never positive, at every order.
    Terminates: recognition rewrites nothing."""
    if not (isinstance(atom, Apply) and atom.func == "log" and len(atom.arg.terms) == 1):
        return None
    term = atom.arg.terms[0]
    if term.coeff != 1 or len(term.factors) != 1:
        return None
    inner = term.factors[0]
    if not (isinstance(inner, Apply) and inner.func == "exp"):
        return None
    summed = tuple(i for i in inner.indices if i not in atom.arg.indices)
    if not summed or set(inner.indices) - set(summed) != set(atom.arg.indices):
        return None
    return inner.arg, summed


def softmax_parts(atom) -> tuple[Poly, tuple[int, ...]] | None:
    """``(v, axes)`` when ``atom`` is ``exp(v - log(sum_R exp(v)))`` (a softmax over R), else None."""
    if not (isinstance(atom, Apply) and atom.func == "exp"):
        return None
    arg = atom.arg
    shifts = [t for t in arg.terms if t.coeff == -1 and len(t.factors) == 1 and logsumexp_parts(t.factors[0])]
    if len(shifts) != 1:
        return None
    lse = shifts[0].factors[0]
    inner, summed = logsumexp_parts(lse)
    rest = Poly(tuple(t for t in arg.terms if t is not shifts[0]), arg.indices)
    reduced = [i for i in arg.indices if i not in lse.indices]
    if len(reduced) != len(summed) or set(lse.indices) - set(arg.indices):
        return None
    mapping = dict(zip(summed, reduced))
    renamed = Poly(tuple(t.rename(mapping) for t in inner.terms), tuple(mapping.get(i, i) for i in inner.indices))
    order = {i: k for k, i in enumerate(renamed.indices)}
    if set(order) != set(arg.indices):
        return None
    aligned = Poly(renamed.terms, arg.indices)
    if not equivalent(aligned, rest):
        return None
    return rest, tuple(arg.indices.index(i) for i in reduced)


def _reciprocal_sum_exp(atom) -> Apply | None:
    """The log-sum-exp ``log(S)`` when ``atom`` is ``S^-1`` with ``S = sum_R(exp(v))``."""
    if isinstance(atom, Apply) and atom.func == "pow" and atom.param == -1:
        lse = Apply("log", atom.arg)
        if logsumexp_parts(lse) is not None:
            return lse
    return None


def exp_over_sum_exp(term: Term) -> list[Term] | None:
    """``exp(u) / sum_R(exp(v)) = exp(u - logsumexp_R(v))``: the softmax written by hand,
    ``exp(z_k) / sum_j(exp(z_j))``, is the softmax ``softmax_k(z_k)`` is lowered to.

    Stable: exp(1000) overflows and inf / inf is NaN; ``u - logsumexp_R(v)`` is never large
    when u is one of the v (a softmax: evaluation recognises it and computes it max-shifted),
    and is evaluated without overflow otherwise; its derivatives are written with
    ``exp(v - logsumexp_R(v))``, finite at every order.  A log of the result is then
    ``u - logsumexp_R(v)`` by :func:`log_exp`.
    Terminates: each application merges two factors of the term into one, so a term of n
    factors is rewritten at most n - 1 times."""
    for k, denominator in enumerate(term.factors):
        lse = _reciprocal_sum_exp(denominator)
        if lse is None:
            continue
        for m, numerator in enumerate(term.factors):
            if m == k or not (isinstance(numerator, Apply) and numerator.func == "exp"):
                continue
            indices = tuple(dict.fromkeys(numerator.indices + lse.indices))
            shifted = simplify(carrying([*numerator.arg.terms, Term(-ONE, (lse,))], indices), indices)
            rest = tuple(f for pos, f in enumerate(term.factors) if pos not in (k, m))
            return [Term(term.coeff, (*rest, Apply("exp", shifted)))]
    return None


def _call_power(atom, func: str) -> tuple[Apply, Fraction] | None:
    """``(f(w), k)`` when ``atom`` is ``f(w)`` (k = 1) or ``f(w)^k`` for a nonzero integer k."""
    if isinstance(atom, Apply) and atom.func == func:
        return atom, ONE
    if isinstance(atom, Apply) and atom.func == "pow" and atom.param != 0 and atom.param.denominator == 1:
        inner = single_atom(atom.arg, func)
        if inner is not None:
            return inner, atom.param
    return None


def exp_times_sigmoid(term: Term) -> list[Term] | None:
    """``exp(v) sigmoid(-v)^k = sigmoid(v) sigmoid(-v)^(k-1)`` (since ``exp(v) / (1 + exp(v))``
    is ``sigmoid(v)``): ``exp(z) / (1 + exp(z))``, once :func:`reciprocal_one_plus_exp` made the
    divisor ``sigmoid(-z)``, is ``sigmoid(z)``.  With a number c > 0,
    ``exp(v) sigmoid(log(c) - v)^k = c sigmoid(v - log(c)) sigmoid(log(c) - v)^(k-1)``:
    ``exp(z) / (2.5 + exp(z))``, made ``0.4 exp(z) sigmoid(log(2.5) - z)``, is
    ``sigmoid(z - log(2.5))``; as a product of two roundings of z it was 1 + 5e-15 at z = 50, above
    1, so the log(1 - p) of a negative-binomial likelihood was NaN with a gradient of the wrong sign.

    Stable: exp(v) overflows from v = 710 on and sigmoid(-v) underflows to 0 from v = 745, so
    the product is inf or inf * 0 = NaN where the value is 1; the sigmoids are finite everywhere.
    Terminates: each application removes an ``exp`` factor from the term."""
    for m, exp in enumerate(term.factors):
        if not (isinstance(exp, Apply) and exp.func == "exp"):
            continue
        for k, factor in enumerate(term.factors):
            found = _call_power(factor, "sigmoid")
            if k == m or found is None or found[1] < 0 or set(found[0].indices) != set(exp.indices):
                continue
            sigmoid, power = found
            scale = _exp_of_constant(simplify([*sigmoid.arg.terms, *exp.arg.terms], sigmoid.arg.indices).terms)
            if scale is None:
                continue  # not sigmoid(log(c) - v)
            rest = tuple(f for pos, f in enumerate(term.factors) if pos not in (k, m))
            flipped = (Apply("sigmoid", negated(sigmoid.arg)),)
            if power == 2:
                flipped += (sigmoid,)
            elif power > 2:
                flipped += (power_of(sigmoid, power - 1),)
            return [Term(term.coeff * scale, (*rest, *flipped))]
    return None


def _exp_of_constant(terms) -> Fraction | None:
    """``e^a`` when ``terms`` sum to a constant a whose exponential is a number: 1 for no terms, c
    for ``log(c)``, 1 / c for ``-log(c)``; else None."""
    if not terms:
        return ONE
    if len(terms) != 1 or abs(terms[0].coeff) != 1 or len(terms[0].factors) != 1:
        return None
    log = terms[0].factors[0]
    if not (isinstance(log, Apply) and log.func == "log" and not log.arg.indices and len(log.arg.terms) == 1):
        return None
    number = log.arg.terms[0]
    if number.factors or number.coeff <= 0:
        return None
    return number.coeff if terms[0].coeff > 0 else 1 / number.coeff


def sinh_over_cosh(term: Term) -> list[Term] | None:
    """``sinh(v)^a / cosh(v)^b = tanh(v)^m sinh(v)^(a-m) / cosh(v)^(b-m)`` with m = min(a, b)
    (whole a, b > 0): ``sinh(z) / cosh(z)`` is ``tanh(z)``, also through intermediates
    (``c = cosh(z); s = sinh(z); f = s / c``).

    Stable: sinh and cosh overflow from |v| = 711 on (inf / inf = NaN where tanh is +-1), and
    their derivative ``1 - sinh^2 / cosh^2`` was evaluated as ``sinh (cosh^-2 sinh)``, 1 at
    v = 480 (cosh^-2 underflows to 0) where it is sech^2 = 1e-417; tanh is bounded and its
    derivatives are the saturating forms.
    Terminates: each application lowers the powers of a sinh and a cosh factor by m >= 1."""
    for at_top, top in enumerate(term.factors):
        sinh = _call_power(top, "sinh")
        if sinh is None or sinh[1] < 0:
            continue
        for at_bottom, bottom in enumerate(term.factors):
            cosh = _call_power(bottom, "cosh")
            if at_bottom == at_top or cosh is None or cosh[1] > 0 or cosh[0].arg != sinh[0].arg:
                continue
            common = min(sinh[1], -cosh[1])  # m
            rest = tuple(f for pos, f in enumerate(term.factors) if pos not in (at_top, at_bottom))
            tanh = Apply("tanh", sinh[0].arg)
            made = (tanh if common == 1 else power_of(tanh, common),)
            for call, power in ((sinh[0], sinh[1] - common), (cosh[0], cosh[1] + common)):
                if power:
                    made += (call if power == 1 else power_of(call, power),)
            return [Term(term.coeff, (*rest, *made))]
    return None


def exp_times_exp(term: Term) -> list[Term] | None:
    """``exp(u) exp(-v) = exp(u - v)`` where u and v have the same free indices, the terms of u
    (numbers aside) are positive and some term of -v negative, or the other way round (a quotient
    of exps): ``exp(a_i) / exp(b_i)`` (written ``exp(a_i) exp(-b_i)``) is ``exp(a_i - b_i)``, and
    ``exp(a_i) exp(-b_i) exp(-c_i)`` is ``exp(a_i - b_i - c_i)``, a pair at a time; the KL
    divergence between two Gaussians in their log-variances, ``exp(lv1_i) / exp(lv2_i)``, was NaN
    at lv1 = lv2 = 800 (inf * 0), where it is 1.  Left as they are: ``exp(a_i) exp(b_j)`` (merged,
    an i x j array of exps), a product of two exps written with one sign (``exp(a) exp(b)``:
    ``exp(fl(a + b))`` would lose |a + b| ulps where the product loses two), and a softmax's
    ``exp(z_k - logsumexp_j(z_j))`` (evaluation computes it as a softmax).

    Stable: a quotient of two exps is inf / inf or inf * 0 (NaN) wherever one exp overflows, from
    710, whatever its value; ``exp(u - v)`` overflows only where the quotient does.  The price is
    the rounding of u - v: |u - v| ulps of the result (1e-14 relative at u - v ~ 100, where the
    product of the two exps of exact inputs is within two ulps), none where the quotient is near 1.
    Terminates: each application merges two factors of the term into one."""

    def signs(exp) -> set[bool] | None:  # the signs of the exponent's terms with a factor; None: a softmax
        if any(logsumexp_parts(f) is not None for t in exp.arg.terms for f in t.factors):
            return None
        return {t.coeff > 0 for t in exp.arg.terms if t.factors}

    exps = [(m, f, signs(f)) for m, f in enumerate(term.factors) if isinstance(f, Apply) and f.func == "exp"]
    for a, (m, first, one) in enumerate(exps):
        for k, second, other in exps[a + 1 :]:
            if one is None or other is None or set(first.indices) != set(second.indices):
                continue
            if not (
                (one == {True} and False in other)
                or (one == {False} and True in other)
                or (other == {True} and False in one)
                or (other == {False} and True in one)
            ):
                continue  # no quotient: both of one sign, or neither of one sign
            indices = first.arg.indices
            merged = simplify(carrying([*first.arg.terms, *second.arg.terms], indices), indices)
            rest = tuple(f for pos, f in enumerate(term.factors) if pos not in (m, k))
            return [Term(term.coeff, (*rest, Apply("exp", merged)))]
    return None


#: Rules on one product term, in order (first match wins, repeated while one applies).
PRODUCT_RULES: tuple[Callable, ...] = (exp_over_sum_exp, exp_times_sigmoid, sinh_over_cosh, exp_times_exp)


def rewrite_products(terms, rules: tuple[Callable, ...] = PRODUCT_RULES) -> tuple[list[Term], bool]:
    """Every term with the product ``rules`` applied while one matches; and whether any did."""
    out: list[Term] = []
    changed = False
    pending = list(terms)
    while pending:
        term = pending.pop(0)
        for rule in rules:
            rewritten = rule(term)
            if rewritten is not None:
                pending[:0] = rewritten
                changed = True
                break
        else:
            out.append(term)
    return out, changed


# -- rules on a sum of terms: consulted on every derivative ----------------------------------


def sigmoid_pair(terms: list[Term], free) -> list[Term] | None:
    """``c A sigmoid(u) + c A sigmoid(-u) = c A`` (since ``sigmoid(u) + sigmoid(-u) = 1``).

    This is what collects a logistic-regression gradient: ``-y sigmoid(-z) + (1 - y) sigmoid(z)``
    (the derivative of ``y softplus(-z) + (1 - y) softplus(z)``) is ``sigmoid(z) - y``.
    Stable: exact, it replaces a sum that is 1 by 1 (no rounding at all); nothing is rewritten
    inside a call, so ``sigmoid(-q)`` alone stays as written, accurate at every q.
    Terminates: each application replaces two terms by one."""
    found = next(_flipped_partners(terms, free, same_sign=True), None)
    if found is None:
        return None
    k, partner, pos, _ = found
    return merged_pair(terms, k, partner, without_factor(terms[k], pos, free, terms[k].coeff))


def _flipped_partners(terms: list[Term], free, same_sign: bool):
    """``(k, partner, pos, u)`` for each term k with ``sigmoid(u)`` at ``pos`` whose partner term
    is the same with ``sigmoid(-u)`` there, with the same coefficient or (``same_sign`` False)
    its negative."""
    keys = {canonical_key(t, free): k for k, t in enumerate(terms)}
    for k, term in enumerate(terms):
        for pos, u in sigmoid_factors(term):
            partner = keys.get(canonical_key(_replaced(term, pos, flipped_sigmoid(u)), free))
            want = term.coeff if same_sign else -term.coeff
            if partner is not None and partner != k and terms[partner].coeff == want:
                yield k, partner, pos, u


def sigmoid_difference(terms: list[Term], free) -> list[Term] | None:
    """``c A sigmoid(u) - c A sigmoid(-u) = c A tanh(u / 2)`` (since ``sigmoid(u) - sigmoid(-u)
    = (1 - exp(-u)) / (1 + exp(-u))``).

    Derivatives meet it: d/du of ``log(sigmoid(u) (1 - sigmoid(u)))``, ``-softplus(-u) -
    softplus(u)``, is ``sigmoid(-u) - sigmoid(u)``.
    Stable: near u = 0 both sigmoids are 1/2, and their difference kept an ulp of 1/2 (1e-8 off
    relatively at u = 1e-9); tanh(u / 2) is accurate to a few ulp relative at every u.
    Terminates: each application replaces two terms by one."""
    found = next(_flipped_partners(terms, free, same_sign=False), None)
    if found is None:
        return None
    k, partner, pos, u = found
    sign = -1 if all(t.coeff < 0 for t in u.terms) else 1  # tanh is odd: -tanh(z / 2)
    half = Apply("tanh", simplify([t.scaled(Fraction(sign, 2)) for t in u.terms], u.indices))
    return merged_pair(terms, k, partner, without_factor(terms[k], pos, free, sign * terms[k].coeff, (half,)))


def _replaced(term: Term, pos: int, atom) -> Term:
    return Term(term.coeff, (*term.factors[:pos], atom, *term.factors[pos + 1 :]))


#: Rules on the terms of a sum, in order (first match wins, repeated while one applies).
SUM_RULES: tuple[Callable, ...] = (sigmoid_pair, one_minus_sigmoid, sigmoid_difference)


def _hyperbolic_quotients(poly: Poly) -> Poly:
    """``poly`` with :func:`sinh_over_cosh` applied to its terms while it matches: derivatives
    meet it, ``d(1 / cosh(x))/dx = -sinh(x) / cosh(x)^2`` is ``-tanh(x) / cosh(x)`` (the second
    derivative ``2 sinh^2 / cosh^3 - 1 / cosh`` had the wrong sign from x = 237, where cosh^3
    overflows, and was NaN from 711)."""
    terms, changed = rewrite_products(poly.terms, (sinh_over_cosh,))
    return simplify(terms, poly.indices) if changed else poly


def softmax_sums_to_one(term: Term, free, named: dict[str, tuple[int, ...]] | None = None) -> Term | None:
    """``sum_R(softmax_R(v)) A = A`` where A does not carry R (since a softmax sums to 1 over
    its own letters), else None; a batch index summed only in the softmax stays summed (its
    dimension, ``delta_nn``).

    Derivatives meet it: a softmax's chain rule, ``p_i (g_i - sum_k(g_k p_k))``, of an upstream
    gradient with a part c constant along k leaves ``c p_i - c sum_k(p_k) p_i``, zero up to
    rounding: the entropy ``-p_k log(p_k)`` has ``g = -log(p) - 1``, and its gradient at logits
    [100, 0, -50] was 0 for -3.7e-42 in the entry that the two 1's cancel in.  With
    ``sum_k(p_k) = 1`` the two terms collect to nothing.
    A program's softmax is a tensor here: ``named`` maps the name of a statement that is one
    softmax to the axes it is taken over (``p`` of ``p_nk = softmax_k(Z_nk)``: (1,)).
    Stable: exact, a sum that is 1 is replaced by 1.
    Terminates: each application removes a factor."""
    for pos, factor in enumerate(term.factors):
        if isinstance(factor, Tensor) and factor.name in (named or {}):
            axes = named[factor.name]
        else:
            parts = softmax_parts(factor)
            if parts is None:
                continue
            axes = parts[1]
        letters = {factor.indices[axis] for axis in axes}
        others = {i for k, f in enumerate(term.factors) if k != pos for i in f.indices}
        beside = {i for axis, i in enumerate(factor.indices) if axis not in axes}  # P_kk: a diagonal
        if letters & (set(free) | others | beside) or len(letters) != len(axes):
            continue
        summed = term.index_names() - set(free) - letters
        rest = Term(term.coeff, (*term.factors[:pos], *term.factors[pos + 1 :]))
        counts = [(r, _softmax_axis(factor, r)) for r in sorted(summed - rest.index_names())]
        if all(axis is not None for _, axis in counts):  # each batch count names the axis it counts
            names = [axis_count(r, *axis) for r, axis in counts]
            return Term(rest.coeff, rest.factors + tuple(Delta(c, c) for c in names))
        return keep_sums(rest, summed)
    return None


def _softmax_axis(factor, letter: str) -> tuple[str, int] | None:
    """An axis ``(tensor, axis)`` that ``letter``, a batch index of the softmax ``factor``, runs
    along: the statement's own (``t2`` of ``t2_ij = softmax_j(...)``) or that of a tensor in the
    call's argument.  A count of it sized so is the batch's length: as a bare ``delta_ii`` it was
    sized by no axis (an error), or by another letter's (the HVP of a program summing a softmax
    came out 4/3 of jax's)."""
    if isinstance(factor, Tensor):
        return factor.name, factor.indices.index(letter)
    return next((axis for axis in sorted(letter_axes(factor.arg, letter)) if axis[0] != RECIPROCAL), None)


def _softmax_sums(poly: Poly, named: dict[str, tuple[int, ...]] | None) -> Poly:
    """``poly`` with :func:`softmax_sums_to_one` applied to its terms while it matches."""
    free, terms, changed = frozenset(poly.indices), [], False
    for term in poly.terms:
        while (rewritten := softmax_sums_to_one(term, free, named)) is not None:
            term, changed = rewritten, True
        terms.append(term)
    return simplify(terms, poly.indices) if changed else poly


def rewrite_sums(poly: Poly, softmaxes: dict[str, tuple[int, ...]] | None = None) -> Poly:
    """``poly`` with the sum rules applied while one matches (each removes a term), after the
    quotients of a sinh by a cosh in its terms are read as tanh (:func:`_hyperbolic_quotients`)
    and each softmax summed over its own letters alone is read as 1 (:func:`_softmax_sums`;
    ``softmaxes``: a program's statements that are one softmax, by name, with their axes)."""
    poly = _softmax_sums(_hyperbolic_quotients(poly), softmaxes)
    if not any(sigmoid_factors(t) for t in poly.terms):
        return poly
    terms = list(poly.terms)
    changed = False
    while True:
        for rule in SUM_RULES:
            rewritten = rule(terms, frozenset(poly.indices))
            if rewritten is not None:
                terms, changed = rewritten, True
                break
        else:
            break
    return simplify(terms, poly.indices) if changed else poly


#: Stable forms recognised as they stand (evaluation and differentiation know them).
RECOGNISED: tuple[Callable, ...] = (logsumexp_parts,)


#: Every entry of the catalogue, by name (for the README's table and the tests).
CATALOGUE: dict[str, Callable] = {
    rule.__name__: rule for rule in (*CALL_RULES, *PRODUCT_RULES, *SUM_RULES, softmax_sums_to_one, *RECOGNISED)
}


def stable_form(terms) -> bool:
    """Whether ``terms`` use a form the catalogue made or recognises as stable (a log-sum-exp)."""
    return any(logsumexp_parts(f) is not None for t in terms for f in t.factors)
