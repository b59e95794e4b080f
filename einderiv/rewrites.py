"""The catalogue of numerically stable rewrites: small named rules, each one identity.

A rule is a function with a docstring that says what it rewrites, why the result is evaluated
without overflow or cancellation (stability), and why applying it cannot go on forever
(termination).  Three kinds, each an ordered tuple consulted first match wins:

* :data:`CALL_RULES`, ``rule(func, arg, param) -> terms | None``: consulted by
  :func:`einderiv.lower.make_apply` whenever a call ``func(arg)`` is built (from the text, by
  differentiation, or by substitution), after its exact folding (constants, powers);
* :data:`PRODUCT_RULES`, ``rule(term) -> terms | None``: consulted where a product written in
  the text is lowered (:meth:`einderiv.lower._Scope.product`) and where a statement is read
  through its one-call intermediates (:func:`einderiv.program.see_through`);
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

This module imports only :mod:`einderiv.normal`; :mod:`einderiv.lower` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from .ir import Delta
from .normal import Apply, MatrixFn, Poly, Term, canonical_key, keep_sums, simplify

ONE = Fraction(1)

# -- helpers on the normal form ---------------------------------------------------------------


def single_atom(arg: Poly, func: str | None = None):
    """The atom of ``arg`` when it is exactly ``1 * atom`` with no index summed around it
    (``sum_j(exp(z_j))`` is not ``exp`` of anything), optionally of the given function."""
    if len(arg.terms) == 1 and arg.terms[0].coeff == 1 and len(arg.terms[0].factors) == 1:
        atom = arg.terms[0].factors[0]
        if set(atom.indices) != set(arg.indices):
            return None
        if func is None or (isinstance(atom, Apply) and atom.func == func):
            return atom
    return None


def negated(poly: Poly, by: Fraction = Fraction(-1)) -> Poly:
    """``by * poly`` (by default ``-poly``)."""
    return Poly(tuple(t.scaled(by) for t in poly.terms), poly.indices)


def carrying(terms, indices) -> list[Term]:
    """Terms that still carry every index of ``indices`` (as ``delta_ii``, which is 1 or, when i
    is summed and used nowhere else, the dimension): folding ``x_i^0`` to 1 must not lose i."""
    out = []
    for term in terms:
        missing = [i for i in dict.fromkeys(indices) if i not in term.index_names()]
        out.append(Term(term.coeff, term.factors + tuple(Delta(i, i) for i in missing)) if missing else term)
    return out


def splice(arg: Poly) -> list[Term]:
    """The terms of ``arg`` as terms of the enclosing expression, carrying its indices."""
    return carrying(arg.terms, arg.indices)


def _constant_and_rest(arg: Poly) -> tuple[Fraction | None, Poly]:
    """``(c, rest)`` when ``arg`` is ``c + rest`` with one constant term c, else ``(None, arg)``."""
    constant = [t for t in arg.terms if not t.factors]
    rest = tuple(t for t in arg.terms if t.factors)
    if len(constant) == 1 and rest:
        return constant[0].coeff, Poly(rest, arg.indices)
    return None, arg


def _elementwise_atom(term: Term, indices, func: str):
    """The atom of a one-factor term with coefficient 1 that is ``func(...)`` and sums no index
    (its indices lie within ``indices``: broadcast along the others), else None."""
    if term.coeff != 1 or len(term.factors) != 1:
        return None
    atom = term.factors[0]
    if isinstance(atom, Apply) and atom.func == func and set(atom.indices) <= set(indices):
        return atom
    return None


def _difference(a: Poly, b: Poly, indices) -> Poly:
    """``a - b`` over ``indices`` (each broadcast along the indices it lacks)."""
    return simplify(carrying([*a.terms, *negated(b).terms], indices), tuple(indices))


def _log_of(value: Fraction) -> Term:
    """The constant ``log(value)`` as a term."""
    return Term(ONE, (Apply("log", Poly((Term(value, ()),), ())),))


# -- rules on one call: consulted by make_apply ---------------------------------------------


def log_det(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(det(M)) = logdet(M)``.

    Stable: ``logdet`` is evaluated through ``slogdet``, which never forms the determinant, so it
    does not overflow or underflow for large matrices (det of a 400x400 matrix of 10s is inf);
    its derivative ``inv(M)_lk`` needs no division by det.
    Terminates: the result is a matrix function, not a call, and contains no ``log``."""
    if func != "log":
        return None
    det = single_atom(arg)
    if isinstance(det, MatrixFn) and det.func == "det":
        return [Term(ONE, (MatrixFn("logdet", det.matrix),))]
    return None


def log_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(exp(u)) = u``; this is also log∘softmax, since ``softmax_R(z)`` is lowered to
    ``exp(z - logsumexp_R(z))`` (and a hand-written softmax to the same, by
    :func:`exp_over_sum_exp`): ``log(softmax_k(z_k)) = z_k - logsumexp_j(z_j)``.

    Stable: ``u`` needs no exp at all, so ``exp(1000)`` never overflows and ``log`` of an
    underflowed 0 never gives -inf; a log-softmax keeps only the max-shifted log-sum-exp.
    Terminates: the result is the argument ``u`` itself, strictly smaller than the call."""
    if func != "log":
        return None
    exp = single_atom(arg, "exp")
    return splice(exp.arg) if exp is not None else None


def log_sigmoid(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(sigmoid(u)) = -softplus(-u)``.

    Stable: sigmoid(u) rounds to 0 below u = -745 (and log of it is -inf), while softplus is
    evaluated as ``logaddexp(0, x)``, finite and accurate for every finite u; its derivative is
    ``sigmoid(-u)``, which is accurate to a few ulp relative at every u.
    Terminates: the result has no ``log``; softplus is not rewritten by any rule."""
    if func != "log":
        return None
    sig = single_atom(arg, "sigmoid")
    return [Term(-ONE, (Apply("softplus", negated(sig.arg)),))] if sig is not None else None


def _log_of_one_plus(func: str, arg: Poly) -> Poly | None:
    """``v`` when the call is ``log(1 + v)``, else None."""
    if func != "log":
        return None
    constant, rest = _constant_and_rest(arg)
    return rest if constant == 1 else None


def log_one_minus_sigmoid(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 - sigmoid(u)) = -softplus(u)`` (since ``1 - sigmoid(u) = sigmoid(-u)``).

    Stable: ``1 - sigmoid(u)`` is 0 from u = 37 on (cancellation), so its log is -inf at
    logits that logistic regression meets; ``-softplus(u)`` is finite and exact for every finite u.
    Terminates: the result has no ``log``."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    sig = single_atom(negated(rest), "sigmoid")
    return [Term(-ONE, (Apply("softplus", sig.arg),))] if sig is not None else None


def log_one_plus_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 + exp(u)) = softplus(u)``.

    Stable: exp(u) overflows from u = 710 on (log of inf is inf), and ``1 + exp(u)`` rounds to 1
    below u = -37 (log of it is 0, not exp(u)); softplus is ``logaddexp(0, u)``, accurate for
    every u, with derivative ``sigmoid(u)``.
    Terminates: the result has no ``log``."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    exp = single_atom(rest, "exp")
    return [Term(ONE, (Apply("softplus", exp.arg),))] if exp is not None else None


def log_add_exp(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(exp(a) + exp(b)) = a + softplus(b - a)`` (logaddexp), elementwise; a term may lack
    some of the indices (it is broadcast along them).

    Stable: neither exp is formed, so ``a = b = 1000`` gives 1000 + log 2, not inf, and
    ``a = b = -1000`` gives -1000 + log 2, not -inf; softplus is evaluated as
    ``logaddexp(0, x)``.  The derivatives are ``sigmoid(a - b)`` and ``sigmoid(b - a)``,
    finite everywhere; second derivatives are ``sigmoid(v) sigmoid(-v)``-like products, no
    difference of exps.  (The absolute rounding error is a few ulp of max(|a|, |b|), as for
    a - b itself.)
    Terminates: the result has no ``log``."""
    if func != "log" or len(arg.terms) != 2:
        return None
    first, second = (_elementwise_atom(t, arg.indices, "exp") for t in arg.terms)
    if first is None or second is None:
        return None
    a, b = first.arg, second.arg
    return [
        *carrying(a.terms, arg.indices),
        Term(ONE, (Apply("softplus", _difference(b, a, arg.indices)),)),
    ]


def log_cosh(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(cosh(u)) = u + softplus(-2u) - log(2)``.

    Stable: cosh overflows from |u| = 711 on, and log of it is inf; ``softplus(-2u)`` is
    ``logaddexp(0, -2u)``, finite for every finite u, so the value is finite (|u| - log 2 for
    large |u|).  The form is smooth (no |u|), so its derivative ``1 - 2 sigmoid(-2u)`` (= tanh u,
    ±1 at large |u|) and every higher derivative are right at u = 0 too.  Near u = 0 the value
    and the derivative have an absolute rounding error of a few ulp of 1, as ``log(cosh(u))``
    itself has.
    Terminates: the result has no ``log`` of a call (``log(2)`` is a constant)."""
    if func != "log":
        return None
    cosh = single_atom(arg, "cosh")
    if cosh is None:
        return None
    u = cosh.arg
    return [
        *carrying(u.terms, arg.indices),
        Term(ONE, (Apply("softplus", negated(u, Fraction(-2))),)),
        *carrying([_log_of(Fraction(2)).scaled(-ONE)], arg.indices),
    ]


def log_one_plus(func: str, arg: Poly, param) -> list[Term] | None:
    """``log(1 + v) = log1p(v)`` (after the more specific ``1 + ...`` rules).

    Stable: ``1 + v`` rounds away every digit of v below 1e-16 (log(1 + 1e-17) is 0);
    ``log1p`` is accurate to an ulp for small v, and its derivative ``(1 + v)^-1`` is exact.
    Terminates: the result has no ``log``; ``log1p`` is not rewritten by any rule."""
    rest = _log_of_one_plus(func, arg)
    if rest is None:
        return None
    return [Term(ONE, (Apply("log1p", rest),))]


#: Rules on one call, in the order make_apply tries them (first match wins).
CALL_RULES: tuple[Callable, ...] = (
    log_det,
    log_exp,
    log_sigmoid,
    log_one_minus_sigmoid,
    log_one_plus_exp,
    log_add_exp,
    log_cosh,
    log_one_plus,
)


def rewrite_call(func: str, arg: Poly, param=None) -> list[Term] | None:
    """The first call rule's result for ``func(arg)``, or None when no rule applies."""
    for rule in CALL_RULES:
        out = rule(func, arg, param)
        if out is not None:
            return out
    return None


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


#: Rules on one product term, in order (first match wins, repeated while one applies).
PRODUCT_RULES: tuple[Callable, ...] = (exp_over_sum_exp,)


def rewrite_products(terms) -> tuple[list[Term], bool]:
    """Every term with the product rules applied while one matches; and whether any did."""
    out: list[Term] = []
    changed = False
    pending = list(terms)
    while pending:
        term = pending.pop(0)
        for rule in PRODUCT_RULES:
            rewritten = rule(term)
            if rewritten is not None:
                pending[:0] = rewritten
                changed = True
                break
        else:
            out.append(term)
    return out, changed


# -- rules on a sum of terms: consulted on every derivative ----------------------------------


def _sigmoids(term: Term):
    """``(position, argument)`` of each sigmoid factor of ``term``."""
    return [(pos, f.arg) for pos, f in enumerate(term.factors) if isinstance(f, Apply) and f.func == "sigmoid"]


def _without(term: Term, pos: int, free, coeff: Fraction, extra=()) -> Term:
    """``term`` with factor ``pos`` removed (``extra`` added), with coefficient ``coeff``; an
    index summed only in the removed factor stays summed (its dimension, ``delta_rr``)."""
    factors = (*term.factors[:pos], *extra, *term.factors[pos + 1 :])
    summed = term.index_names() - set(free)
    return keep_sums(Term(coeff, factors), summed)


def _flipped(u: Poly) -> Apply:
    """``sigmoid(-u)``, its positive terms first (``sigmoid(a - b)``, not ``sigmoid(-b + a)``)."""
    return Apply("sigmoid", simplify(sorted(negated(u).terms, key=lambda t: t.coeff < 0), u.indices))


def sigmoid_pair(terms: list[Term], free) -> list[Term] | None:
    """``c A sigmoid(u) + c A sigmoid(-u) = c A`` (since ``sigmoid(u) + sigmoid(-u) = 1``).

    This is what collects a logistic-regression gradient: ``-y sigmoid(-z) + (1 - y) sigmoid(z)``
    (the derivative of ``y softplus(-z) + (1 - y) softplus(z)``) is ``sigmoid(z) - y``.
    Stable: exact, it replaces a sum that is 1 by 1 (no rounding at all); nothing is rewritten
    inside a call, so ``sigmoid(-q)`` alone stays as written, accurate at every q.
    Terminates: each application replaces two terms by one."""
    keys = {canonical_key(t, free): k for k, t in enumerate(terms)}
    for k, term in enumerate(terms):
        for pos, u in _sigmoids(term):
            partner = keys.get(canonical_key(_replaced(term, pos, _flipped(u)), free))
            if partner is not None and partner != k and terms[partner].coeff == term.coeff:
                return _merged(terms, k, partner, _without(term, pos, free, term.coeff))
    return None


def one_minus_sigmoid(terms: list[Term], free) -> list[Term] | None:
    """``c A - c A sigmoid(u) = c A sigmoid(-u)`` (since ``1 - sigmoid(u) = sigmoid(-u)``).

    Derivatives meet it: d/da of ``a + softplus(b - a)`` (:func:`log_add_exp`) is
    ``1 - sigmoid(b - a)``, which is ``sigmoid(a - b)``.
    Stable: ``1 - sigmoid(u)`` is 0 from u = 37 on (4% off at 36), where ``sigmoid(-u)`` is
    accurate to a few ulp relative at every u: the rewrite removes a cancellation.
    Terminates: each application replaces two terms by one."""
    keys = {canonical_key(t, free): k for k, t in enumerate(terms)}
    for k, term in enumerate(terms):
        for pos, u in _sigmoids(term):
            rest = _without(term, pos, free, -term.coeff)
            partner = keys.get(canonical_key(rest, free))
            if partner is not None and partner != k and terms[partner].coeff == -term.coeff:
                return _merged(terms, k, partner, _without(term, pos, free, -term.coeff, (_flipped(u),)))
    return None


def _merged(terms: list[Term], k: int, partner: int, merged: Term) -> list[Term]:
    """``terms`` with terms ``k`` and ``partner`` replaced by ``merged``, where the first of them was."""
    first = min(k, partner)
    return [merged if m == first else t for m, t in enumerate(terms) if m != max(k, partner)]


def _replaced(term: Term, pos: int, atom) -> Term:
    return Term(term.coeff, (*term.factors[:pos], atom, *term.factors[pos + 1 :]))


#: Rules on the terms of a sum, in order (first match wins, repeated while one applies).
SUM_RULES: tuple[Callable, ...] = (sigmoid_pair, one_minus_sigmoid)


def rewrite_sums(poly: Poly) -> Poly:
    """``poly`` with the sum rules applied while one matches (each removes a term)."""
    if not any(_sigmoids(t) for t in poly.terms):
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
    rule.__name__: rule for rule in (*CALL_RULES, *PRODUCT_RULES, *SUM_RULES, *RECOGNISED)
}


def stable_form(terms) -> bool:
    """Whether ``terms`` use a form the catalogue made or recognises as stable (a log-sum-exp)."""
    return any(logsumexp_parts(f) is not None for t in terms for f in t.factors)
