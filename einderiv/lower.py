"""IR -> normal form, with the index-scoping rules of function calls and reductions.

* An index that occurs only inside a call's argument is summed inside it:
  with LHS ``s_n``, ``sigmoid(X_nd w_d)`` is sigma(sum_d X_nd w_d).
* An index that also occurs outside the call (elsewhere in the same term, or on the LHS) is
  free in the argument: the call is elementwise over it.
* ``sum_i(body)`` sums over i outside of the elementwise work: ``f = sum_i(exp(x_i))``.
  Its i is bound: renamed apart from any other i in the term.
* ``a / b`` is ``a * b^-1``, elementwise, broadcasting over the indices ``b`` lacks.
"""

from __future__ import annotations

from fractions import Fraction

from .errors import EinderivError
from .functions import FUNCTIONS
from .ir import Add, Call, Delta, Div, Expr, MatrixCall, Mul, Neg, Number, Pow, Tensor
from .normal import (
    MAX_TERMS,
    Apply,
    MatrixFn,
    Poly,
    Term,
    constant_along,
    fresh_indices,
    make_delta,
    multiply,
    simplify,
    too_many_terms,
    unit_delta,
)


def surface_indices(expr: Expr) -> list[str]:
    """Index names as written in ``expr`` (first-appearance order), less those bound by ``sum_i``."""
    if isinstance(expr, (Tensor, Delta, MatrixCall)):
        return list(dict.fromkeys(expr.indices))
    if isinstance(expr, Number):
        return []
    if isinstance(expr, Neg):
        return surface_indices(expr.operand)
    if isinstance(expr, (Add, Mul)):
        parts = expr.terms if isinstance(expr, Add) else expr.factors
        return list(dict.fromkeys(i for p in parts for i in surface_indices(p)))
    if isinstance(expr, Div):
        return list(dict.fromkeys(surface_indices(expr.numerator) + surface_indices(expr.denominator)))
    if isinstance(expr, Pow):
        return surface_indices(expr.base)
    if isinstance(expr, Call):
        inner = surface_indices(expr.arg)
        if expr.func == "softmax":  # normalised over its indices, not reduced: they stay
            return inner
        return [i for i in inner if i not in expr.over]
    raise EinderivError(f"cannot read node {type(expr).__name__}")


def _constant(terms: list[Term]) -> Fraction | None:
    if all(not t.factors for t in terms):
        return sum((t.coeff for t in terms), Fraction(0))
    return None


def _expand(expr: Expr) -> list[tuple[Fraction, list]]:
    """Multiply out sums and products; calls, powers and divisors stay as items to lower."""
    if isinstance(expr, Number):
        return [(expr.value, [])]
    if isinstance(expr, Delta):
        return [(Fraction(1), [make_delta(expr.first, expr.second)])]
    if isinstance(expr, (Tensor, Call, Pow, MatrixCall)):
        return [(Fraction(1), [expr])]
    if isinstance(expr, Neg):
        return [(-c, items) for c, items in _expand(expr.operand)]
    if isinstance(expr, Add):
        out = []
        for part in expr.terms:
            out.extend(_expand(part))
            if len(out) > MAX_TERMS:
                raise too_many_terms(len(out))
        return out
    if isinstance(expr, Mul):
        out = [(Fraction(1), [])]
        for factor in expr.factors:
            parts = _expand(factor)
            if len(out) * len(parts) > MAX_TERMS:
                raise too_many_terms(len(out) * len(parts))
            out = [(c1 * c2, i1 + i2) for c1, i1 in out for c2, i2 in parts]
        return out
    if isinstance(expr, Div):
        parts = _expand(expr.denominator)
        if all(not items for _, items in parts):
            value = sum((c for c, _ in parts), Fraction(0))
            if value == 0:
                raise EinderivError(f"division by zero in {str(expr)!r}")
            return [(c / value, items) for c, items in _expand(expr.numerator)]
        return [(c, items + [Pow(expr.denominator, Fraction(-1))]) for c, items in _expand(expr.numerator)]
    raise EinderivError(f"cannot lower node {type(expr).__name__}")


def _item_indices(item) -> list[str]:
    if isinstance(item, (Tensor, Delta, MatrixCall)):
        return list(item.indices)
    return surface_indices(item)


def lower(expr: Expr, context: frozenset[str]) -> list[Term]:
    """The terms of ``expr`` (unsimplified).  ``context`` holds the indices visible around it:
    the left-hand side's, and those of the other factors of every enclosing product.  A sum's
    terms share the context but not each other's indices (einsum semantics per term)."""
    if isinstance(expr, Number):
        return [Term(expr.value, ())]
    if isinstance(expr, Delta):
        return [Term(Fraction(1), (make_delta(expr.first, expr.second),))]
    if isinstance(expr, Tensor):
        return [Term(Fraction(1), (expr,))]
    if isinstance(expr, MatrixCall):
        return [Term(Fraction(1), (MatrixFn(expr.func, expr.matrix, expr.indices),))]
    if isinstance(expr, Neg):
        return [t.scaled(Fraction(-1)) for t in lower(expr.operand, context)]
    if isinstance(expr, Add):
        out: list[Term] = []
        for part in expr.terms:
            out.extend(lower(part, context))
            if len(out) > MAX_TERMS:
                raise too_many_terms(len(out))
        return out
    if isinstance(expr, Mul):
        return _lower_product(list(expr.factors), context)
    if isinstance(expr, Div):
        denominator = lower(expr.denominator, context | frozenset(surface_indices(expr.numerator)))
        value = _constant(denominator)
        if value is not None:
            if value == 0:
                raise EinderivError(f"division by zero in {str(expr)!r}")
            return [t.scaled(1 / value) for t in lower(expr.numerator, context)]
        return _lower_product([expr.numerator, Pow(expr.denominator, Fraction(-1))], context)
    if isinstance(expr, Call) and expr.func == "logsumexp":
        # logsumexp_R(u) = log(sum_R(exp(u))), evaluated max-shifted
        # elementwise over the argument's other indices, like softmax
        others = frozenset(surface_indices(expr.arg)) - frozenset(expr.over)
        return lower(Call("log", Call("sum", Call("exp", expr.arg), expr.over)), context | others)
    if isinstance(expr, Call) and expr.func == "softmax":
        # softmax_R(u) = exp(u - logsumexp_R(u)): the exponent is never positive
        shifted = Add((expr.arg, Neg(Call("logsumexp", expr.arg, expr.over))))
        # elementwise over every index of its argument, normalised over ``over``
        return lower(Call("exp", shifted), context | frozenset(surface_indices(expr.arg)))
    if isinstance(expr, Call) and expr.over:
        return _lower_reduction(expr, context)
    if isinstance(expr, (Call, Pow)):
        base = expr.base if isinstance(expr, Pow) else expr.arg
        free = tuple(i for i in surface_indices(base) if i in context)
        arg = simplify(lower(base, frozenset(free)), free)
        if isinstance(expr, Pow):
            return make_apply("pow", arg, expr.exponent)
        return make_apply(expr.func, arg)
    raise EinderivError(f"cannot lower node {type(expr).__name__}")


def _lower_product(factors: list, context: frozenset[str]) -> list[Term]:
    """Each factor sees the indices of the others; indices private to a factor (bound by a
    reduction inside it) are renamed apart from the rest of the product."""
    written = [surface_indices(f) for f in factors]
    out = [Term(Fraction(1), ())]
    for pos, factor in enumerate(factors):
        outside = set(context)
        for other, names in enumerate(written):
            if other != pos:
                outside.update(names)
        parts = lower(factor, frozenset(outside))
        keep = outside | set(written[pos])
        out = multiply(out, parts, keep, avoid=keep)
    return out


def _lower_reduction(item: Call, outside: frozenset[str]) -> list[Term]:
    """``sum_R(body)``: the body's terms, with R renamed apart from what is visible outside.

    A term in which some r of R no longer occurs (``sum_i(delta_ii^2)``) still sums over r:
    it keeps the factor ``delta_rr``, the dimension of r."""
    body = lower(item.arg, outside | frozenset(item.over))
    clashes = [r for r in item.over if r in outside]
    if clashes:
        names = set(outside) | {i for t in body for i in t.index_names()}
        mapping = dict(zip(clashes, fresh_indices(len(clashes), names)))
        body = [t.rename(mapping) for t in body]
        over = [mapping.get(r, r) for r in item.over]
    else:
        over = list(item.over)
    out = []
    for term in body:
        missing = [r for r in over if r not in term.index_names()]
        out.append(Term(term.coeff, term.factors + tuple(Delta(r, r) for r in missing)))
    return out


# -- building applications: folding and numerically stable rewrites --------------------------------


def _single_atom(arg: Poly, func: str | None = None):
    """The atom of ``arg`` when it is exactly ``1 * atom`` with no index summed around it
    (``sum_j(exp(z_j))`` is not ``exp`` of anything), optionally of the given function."""
    if len(arg.terms) == 1 and arg.terms[0].coeff == 1 and len(arg.terms[0].factors) == 1:
        atom = arg.terms[0].factors[0]
        if set(atom.indices) != set(arg.indices):
            return None
        if func is None or (isinstance(atom, Apply) and atom.func == func):
            return atom
    return None


def _negated(poly: Poly) -> Poly:
    return Poly(tuple(t.scaled(Fraction(-1)) for t in poly.terms), poly.indices)


def _carrying(terms, indices) -> list[Term]:
    """Terms that still carry every index of ``indices`` (as ``delta_ii``, which is 1 or, when i
    is summed and used nowhere else, the dimension): folding ``x_i^0`` to 1 must not lose i."""
    out = []
    for term in terms:
        missing = [i for i in dict.fromkeys(indices) if i not in term.index_names()]
        out.append(Term(term.coeff, term.factors + tuple(Delta(i, i) for i in missing)) if missing else term)
    return out


def _splice(arg: Poly) -> list[Term]:
    return _carrying(arg.terms, arg.indices)


#: f(0) where it is rational, for folding a call on an argument that cancelled: tanh(A_ij - A_ij) = 0.
AT_ZERO = {row.name: row.at_zero for row in FUNCTIONS.values() if row.at_zero is not None}


def make_apply(func: str, arg: Poly, param: Fraction | None = None) -> list[Term]:
    """``func(arg)`` as terms, after exact folding and the stable rewrites:

    * a call on an argument that does not vary along some of its indices is taken over the
      others and carried over these (``tanh(delta_ii)`` is ``tanh(1)``); a call on 0 is f(0)
      where that is rational (``tanh(A_ij - A_ij)`` = 0);

    * ``u^0 = 1``, ``u^1 = u``, ``(u^p)^n = u^(p n)`` for integer n, constants folded exactly;
    * ``log(sigmoid(u)) = -softplus(-u)`` and ``log(1 - sigmoid(u)) = -softplus(u)``;
    * ``log(1 + v) = log1p(v)`` and ``log(exp(u)) = u``;
    * ``sigmoid(-u) = 1 - sigmoid(u)`` (a negated argument), so that ``s - y`` collects.
    """
    one = Fraction(1)
    along = constant_along(arg)
    if along:
        # the argument does not vary along some of its indices (A_ij - A_ij; delta_ii with i
        # free, which is 1): the call is taken over the others and carried over these, so that
        # it prints, and reads back, as what it is (tanh(1), not tanh over an index it ignores)
        reduced = Poly(
            tuple(Term(t.coeff, tuple(f for f in t.factors if not unit_delta(f, along))) for t in arg.terms),
            tuple(i for i in arg.indices if i not in along),
        )
        return _carrying(make_apply(func, reduced, param), arg.indices)
    if not arg.terms and func in AT_ZERO:
        return [Term(AT_ZERO[func], ())] if AT_ZERO[func] else []
    if func == "sigmoid" and arg.terms and all(t.coeff < 0 for t in arg.terms):
        return _carrying([Term(one, ()), Term(-one, (Apply("sigmoid", _negated(arg)),))], arg.indices)
    if func == "pow":
        if param == 0:
            return _carrying([Term(one, ())], arg.indices)
        if param == 1:
            return _splice(arg)
        value = _constant(list(arg.terms))
        if value is not None and param.denominator == 1 and (value != 0 or param > 0):
            return _carrying([Term(value**param.numerator, ())], arg.indices)
        inner = _single_atom(arg, "pow")
        if inner is not None and param.denominator == 1:
            return make_apply("pow", inner.arg, inner.param * param)
        return [Term(one, (Apply("pow", arg, param),))]
    if func == "log":
        det = _single_atom(arg)
        if isinstance(det, MatrixFn) and det.func == "det":
            return [Term(one, (MatrixFn("logdet", det.matrix),))]
        sig = _single_atom(arg, "sigmoid")
        if sig is not None:
            return [Term(-one, (Apply("softplus", _negated(sig.arg)),))]
        exp = _single_atom(arg, "exp")
        if exp is not None:
            return _splice(exp.arg)
        constant = [t for t in arg.terms if not t.factors]
        rest = tuple(t for t in arg.terms if t.factors)
        if len(constant) == 1 and constant[0].coeff == 1 and rest:
            rest_poly = Poly(rest, arg.indices)
            sig = _single_atom(_negated(rest_poly), "sigmoid")
            if sig is not None:
                return [Term(-one, (Apply("softplus", sig.arg),))]
            return [Term(one, (Apply("log1p", rest_poly),))]
    return [Term(one, (Apply(func, arg, param),))]


def logsumexp_parts(atom) -> tuple[Poly, tuple[str, ...]] | None:
    """``(v, R)`` when ``atom`` is ``log(sum_R(exp(v)))`` (a log-sum-exp), else None."""
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


def normalize(expr: Expr, indices) -> Poly:
    """Lower and simplify ``expr`` with the given free indices."""
    indices = tuple(indices)
    return simplify(lower(expr, frozenset(indices)), indices)


def implicit_indices(expr: Expr):
    """numpy's implicit rule for a bare expression: the indices written exactly once in a term,
    alphabetically (an index inside a call counts once).  Terms must agree."""
    from collections import Counter

    from .errors import IndexRuleError

    single: set[str] = set()
    repeated: set[str] = set()
    for _, items in _expand(expr):
        counts: Counter = Counter()
        for item in items:
            names = _item_indices(item)
            counts.update(names if isinstance(item, (Tensor, Delta, MatrixCall)) else set(names))
        single |= {i for i, c in counts.items() if c == 1}
        repeated |= {i for i, c in counts.items() if c > 1}
    both = sorted(single & repeated)
    if both:
        raise IndexRuleError(
            f"index {both[0]!r} appears once in one term and repeatedly in another, so the output "
            "indices are ambiguous: write a left-hand side such as 'f_i = ...'"
        )
    return tuple(sorted(single))
