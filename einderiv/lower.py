"""IR -> normal form, with Einstein notation's index scoping, bottom-up over groups.

1. Left-hand-side indices are free everywhere and never summed.
2. An index named by an explicit reduction (``sum_i``, ``mean_i``, ``logsumexp_i``, ``softmax_i``) is bound
   by it: inside its body no nested group contracts it.
3. Otherwise an index is contracted in the smallest product in which it occurs two or more
   times.  A group (parentheses, a call's argument, a power's base, a divisor) is one factor of
   its enclosing product, and its free indices count once there; an index that occurs once in
   a group is free in it and goes outward: ``x_i^2`` is sum_i x_i^2, ``exp(x_i x_i)`` is
   exp(sum_i x_i^2), ``(x_i x_i)(y_i y_i)`` is (x.x)(y.y).
4. A sum that is an operand is a tensor over the union of its terms' free indices, a term
   lacking one broadcast along it (``(x_i + 1)(y_i + 1)`` sums n products); a sum that stands
   alone, as the right-hand side or one of its terms, or scaled by a scalar there
   (``((y_n - X_nd w_d)^2 + lam w_d w_d) / 2``), is a list of terms summed one by one.
5. Whatever is still free at the top and not on the left-hand side is summed.
6. A letter contracted inside a group that also occurs free outside it in the same product
   (``exp(x_i y_i) z_i``) is legal but almost always a slip: an :class:`EinderivWarning`.

``a / b`` is ``a * b^-1``: the divisor is a group, broadcasting over the indices ``b`` lacks.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from fractions import Fraction

from . import (
    cancel,  # noqa: F401  (simplify cancels through it: normal.CANCEL)
    limits,
)
from .errors import EinderivError, IndexRuleError, warn_user
from .index_names import count_letter, fresh_indices, is_lowered_count, lowered_count
from .ir import (
    Add,
    Call,
    Delta,
    Div,
    Expr,
    MatrixCall,
    Mul,
    Neg,
    Number,
    Pow,
    Tensor,
    binds,
    children,
    letters,
    renamed,
    walk,
)
from .normal import (
    Apply,
    MatrixFn,
    Poly,
    Term,
    carrying,
    constant_value,
    keep_sums,
    make_apply,
    make_delta,
    multiply,
    reciprocal,
    rename_term_apart,
    simplify,
    too_many_terms,
)
from .rewrites import rewrite_products

_ATOMS = (Tensor, Delta, MatrixCall, Number)


def _atom_terms(expr) -> list[Term]:
    if isinstance(expr, Number):
        return [Term(expr.value, ())]
    if isinstance(expr, Delta):
        return [Term(Fraction(1), (make_delta(expr.first, expr.second),))]
    if isinstance(expr, MatrixCall):
        return [Term(Fraction(1), (MatrixFn(expr.func, expr.matrix, expr.indices),))]
    return [Term(Fraction(1), (expr,))]


def factor_chain(expr) -> tuple[Fraction, list[tuple[Expr, bool]]]:
    """A product as (sign, [(factor, is_divisor)]): a leading division and a division's
    numerator continue the chain (``a b / c d``); every other factor is a tensor or a group.
    The sign of a leading ``-`` is taken out (``-A_ii B_ii`` is minus one product)."""
    if isinstance(expr, Mul) and len(expr.factors) > 1:
        head, *rest = expr.factors
        sign, factors = factor_chain(head) if isinstance(head, Div) else _head(head)
        return sign, factors + [(f, False) for f in rest]
    if isinstance(expr, Div):
        num = expr.numerator
        if isinstance(num, Div) or (isinstance(num, Mul) and len(num.factors) > 1):
            sign, factors = factor_chain(num)
        else:
            sign, factors = _head(num)
        return sign, factors + [(expr.denominator, True)]
    return Fraction(1), [(expr, False)]


def _head(factor) -> tuple[Fraction, list[tuple[Expr, bool]]]:
    """The first factor of a chain, without its signs (a signed product is parenthesised: a group)."""
    sign, signed = Fraction(1), isinstance(factor, Neg)
    while isinstance(factor, Neg):
        sign, factor = -sign, factor.operand
    if signed and (isinstance(factor, Div) or (isinstance(factor, Mul) and len(factor.factors) > 1)):
        # ``-(A_ii / 2) (...)``: the product under the minus stays a group once the sign is out,
        # so that a chain rebuilt from these factors does not continue into it
        factor = Mul((factor,))
    return sign, [(factor, False)]


class _Scope:
    """Lowers one statement; collects the rule-6 warnings."""

    def __init__(self, context: frozenset[str] = frozenset()):
        self.notes: list[str] = []
        self.context = context  # the left-hand side's indices, where rule 1 inside a norm is noted

    # Each method returns (terms, free, contracted): the terms with ``free`` as their free
    # indices (every other index of a term is summed in it), and the letters contracted
    # somewhere inside by rule 3 (for the rule-6 warning).

    def group(self, expr, bound: frozenset[str]):
        if isinstance(expr, Number):
            return [Term(expr.value, ())], (), set()
        if isinstance(expr, (Tensor, Delta, MatrixCall)) and len(set(expr.indices)) == len(expr.indices):
            return _atom_terms(expr), tuple(expr.indices), set()
        if isinstance(expr, Neg):
            terms, free, inner = self.group(expr.operand, bound)
            return [t.scaled(Fraction(-1)) for t in terms], free, inner
        if isinstance(expr, Add):
            return self.operand_sum(expr, bound)
        if isinstance(expr, Call) and expr.over:
            return self.reduction(expr, bound)
        if isinstance(expr, (Call, Pow)):
            base = expr.base if isinstance(expr, Pow) else expr.arg
            if (isinstance(expr, Call) and expr.func == "sqrt") or (
                isinstance(expr, Pow) and abs(expr.exponent) == Fraction(1, 2)
            ):
                self._warn_norm(base, bound)
            terms, free, inner = self.group(base, bound)
            arg = simplify(terms, free)
            if isinstance(expr, Pow) and expr.exponent == 0 and free and arg.tensor_names():
                # x_n^0 as written is 1 with x's shape: it stays a factor, so that a sum of it
                # counts x's length (sum_n(x_n^0 s) + sum_n(z_n) is N s + sum(z), whatever z's length)
                return [Term(Fraction(1), (Apply("pow", arg, Fraction(0)),))], free, inner
            if isinstance(expr, Pow):
                return make_apply("pow", arg, expr.exponent), free, inner
            return make_apply(expr.func, arg), free, inner
        if isinstance(expr, Mul) and len(expr.factors) == 1:
            return self.group(expr.factors[0], bound)
        return self.product(expr, bound)

    def operand_sum(self, expr: Add, bound):
        """A sum used as an operand: a tensor over the union of its terms' free indices."""
        parts = [self.group(term, bound) for term in expr.terms]
        free = tuple(dict.fromkeys(i for _, f, _ in parts for i in f))
        self._warn_sibling(expr, parts, bound)
        out: list[Term] = []
        # a free letter a tensor carries (x_i in delta_ii + x_i) sizes a count of that letter
        # summed in another term: delta_ii there is the count of i, x's length, as the statement
        # sizes a letter no tensor of its term sizes (renamed apart to a bare j, nothing sized it)
        sized = {
            i for terms, _, _ in parts for t in terms for f in t.factors if not isinstance(f, Delta) for i in f.indices
        }
        sized &= set(free)
        for terms, own, inner in parts:
            # a term's own summed indices are renamed apart before it is broadcast along the
            # sum's other free indices (A_ii in (A_ii + A_ij): its i is not the sum's i)
            terms = [_counting(_letters_of_counts(t, set(free) - sized), (inner - set(own)) & sized) for t in terms]
            out.extend(carrying([rename_term_apart(t, own, set(free)) for t in terms], free))
            if len(out) > limits.current().max_terms:
                raise too_many_terms(len(out))
        return out, free, set().union(*(c for _, _, c in parts))

    def product(self, expr, bound: frozenset[str]):
        sign, chain = factor_chain(expr)
        lowered = []  # (factor, terms, occurrences, keep, contracted inside, is a group)
        for factor, divisor in chain:
            if isinstance(factor, _ATOMS) and not divisor:
                terms = _atom_terms(factor)
                occurrences = list(getattr(factor, "indices", ()))
                lowered.append((factor, terms, occurrences, set(occurrences), set(), False))
                continue
            if divisor:
                self._warn_norm(factor, bound)
            terms, free, inner = self.group(factor, bound)
            if divisor:
                value = constant_value(terms)
                if value is not None:
                    if value == 0:
                        raise EinderivError(f"division by zero in {str(expr)!r}")
                    sign /= value
                    continue
                terms = make_apply("pow", simplify(terms, free), Fraction(-1))
            lowered.append((factor, terms, list(free), set(free), inner, True))
        counts = Counter(i for entry in lowered for i in entry[2])
        contracted = {i for i, c in counts.items() if c > 1 and i not in bound}
        free = tuple(dict.fromkeys(i for entry in lowered for i in entry[2] if i not in contracted))
        self._warn_captured(expr, lowered, bound)
        self._warn_reduced(expr, lowered, bound)
        lowered = _squares(lowered)
        # a group's own summed indices are renamed apart from what the other factors write
        written = [{i for node in walk(entry[0]) for i in getattr(node, "indices", ())} for entry in lowered]
        out = [Term(sign, ())]
        for pos, (_, terms, _, keep, _, _) in enumerate(lowered):
            avoid = set(bound).union(*(names for other, names in enumerate(written) if other != pos))
            out = multiply(out, terms, keep, avoid=avoid)
        out, _ = rewrite_products(out)  # exp(z_k) / sum_j(exp(z_j)) is a softmax
        # a written delta_ff whose f nothing else in the product carries is the count of f's
        # dimension: renamed apart, it keeps that dimension (delta_ff / sqrt(... delta_ff))
        only_deltas = {i for i in contracted if all(_diagonal(e[0]) for e in lowered if i in e[2])}
        if only_deltas:
            out = [_counting(t, only_deltas) for t in out]
        inside = contracted.union(*(entry[4] for entry in lowered))
        return out, free, inside

    def reduction(self, expr: Call, bound: frozenset[str]):
        """``sum_R(body)``, ``mean_R``, ``logsumexp_R``, ``softmax_R``: R is bound in the body."""
        over = tuple(expr.over)
        terms, free, inner = self.group(expr.arg, bound | frozenset(over))
        terms = [rename_term_apart(t, free, set(over)) for t in terms]  # sum_i(sum_i(x_i) + 1)
        outer = tuple(i for i in free if i not in over)
        if expr.func == "softmax":
            # softmax_R(u) = exp(u - logsumexp_R(u)): the exponent is never positive
            arg = simplify(terms, free)
            lse = _summed_log_exp(arg, over)
            shifted = list(arg.terms) + [t.scaled(Fraction(-1)) for t in lse]
            return make_apply("exp", simplify(carrying(shifted, free), free)), free, inner
        if expr.func == "logsumexp":
            return _summed_log_exp(simplify(terms, free), over), outer, inner
        body = [keep_sums(t, over) for t in terms]
        if expr.func == "mean":  # mean_R(u) = sum_R(u) / n_R
            body = [Term(t.coeff, t.factors + tuple(reciprocal(r) for r in over)) for t in body]
        # a letter no term of the body writes counts the statement's dimension of that letter
        written = {i for t in body for f in t.factors if not isinstance(f, Delta) for i in f.indices}
        body = [_counting(t, set(over) - written) for t in body]
        # the summed R is private: apart from a left-hand side's i (f_i = a_i + sum_i(s) adds n s)
        return [rename_term_apart(t, outer, set(bound)) for t in body], outer, inner

    def _warn_sibling(self, expr: Add, parts, bound) -> None:
        """Rule 6 across a sum that is an operand: a letter contracted inside one term and free
        in another (``exp(M_ii + a_i)`` is exp(tr(M) + a_i), not of M's diagonal)."""
        taken = {i for node in walk(expr) for i in getattr(node, "indices", ())} | set(bound)
        for pos, (_, _, inside) in enumerate(parts):
            outside = {i for other, (_, own, _) in enumerate(parts) if other != pos for i in own}
            for letter in sorted((inside & outside) - bound):
                (fresh,) = fresh_indices(1, taken)
                term = expr.terms[pos]
                self.notes.append(
                    f"in {str(expr)!r}, index {letter!r} is summed inside {str(term)!r} and is a separate, "
                    f"free index in the sum's other terms; write sum_{letter}(...) around the product that holds "
                    f"{str(expr)!r} for one elementwise index {letter}, or {renamed(term, letter, fresh)} to say "
                    "that they differ"
                )

    def _warn_captured(self, expr, lowered, bound) -> None:
        """Rule 6: a letter contracted inside a group that occurs free elsewhere in the product."""
        taken = {i for node in walk(expr) for i in getattr(node, "indices", ())} | set(bound)
        for pos, (factor, _, _, _, inside, is_group) in enumerate(lowered):
            if not is_group:
                continue
            # a factor that sums a letter by itself (delta_ll, A_ll) leaves it free nowhere
            outside = {
                i for other, entry in enumerate(lowered) if other != pos for i in entry[2] if entry[2].count(i) == 1
            }
            for letter in sorted((inside & outside) - bound):
                (fresh,) = fresh_indices(1, taken)
                apart = [renamed(f, letter, fresh) if k == pos else f for k, f in enumerate(expr_factors(expr))]
                self.notes.append(
                    f"in {str(expr)!r}, index {letter!r} is summed inside {str(factor)!r} and is a separate, "
                    f"free index outside it; write sum_{letter}({expr}) for one elementwise index {letter}, "
                    f"or {Mul(tuple(apart))} to say that they differ"
                )

    def _warn_norm(self, expr, bound) -> None:
        """Rule 1 in a norm: in ``u_i = x_i / sqrt(x_i x_i)`` the left-hand side's i is free
        everywhere, so ``x_i x_i`` is x_i^2 and u is sign(x), where Einstein notation's reader
        expects x / |x| (as ``f = x_i exp(x_i x_i)`` is warned of by rule 6).  Only the shapes of
        a norm: one tensor times itself as the whole of a square root, a power of 1/2 or -1/2, or
        a divisor (``exp(-x_i x_i / 2)`` and ``x_i / (1 + x_i x_i)`` are plainly elementwise)."""
        while isinstance(expr, Mul) and len(expr.factors) == 1:
            expr = expr.factors[0]
        if not (isinstance(expr, Mul) and len(expr.factors) == 2 and expr.factors[0] == expr.factors[1]):
            return
        tensor = expr.factors[0]
        letters = [i for i in dict.fromkeys(getattr(tensor, "indices", ())) if i in self.context and i in bound]
        if not isinstance(tensor, Tensor) or not letters:
            return
        taken = {i for node in walk(expr) for i in getattr(node, "indices", ())} | set(bound)
        fresh = fresh_indices(len(letters), taken)
        summed = expr
        for letter, new in zip(letters, fresh):
            summed = renamed(summed, letter, new)
        said = ", ".join(repr(i) for i in letters)
        self.notes.append(
            f"in {str(expr)!r}, {said} {'is an index' if len(letters) == 1 else 'are indices'} of the left-hand "
            f"side, so the product is elementwise (its square), not summed; for the sum inside, give it a letter "
            f"of its own: sum_{''.join(fresh)}({summed})"
        )

    def _warn_reduced(self, expr, lowered, bound) -> None:
        """Rule 6 for a reduction that is a factor: ``sum_i(A_ij) x_i`` sums i inside the
        ``sum_i`` and again, apart, over ``x_i`` (colsum(A) times sum(x)), where ``A_ij x_i`` is
        almost always meant.  A softmax keeps its letter (``y_k softmax_k(z_k)`` contracts k),
        and a reduction inside a sum is no factor (``(x_n - mean_n(x_n)) t_n`` centres x)."""
        taken = {i for node in walk(expr) for i in getattr(node, "indices", ())} | set(bound)
        for pos, (factor, *_) in enumerate(lowered):
            if not (isinstance(factor, Call) and factor.over and factor.func != "softmax"):
                continue
            # a letter the other factors write once (twice, they contract it among themselves: the
            # weighted mean w_n x_n / sum_n(w_n))
            elsewhere = Counter(i for other, entry in enumerate(lowered) if other != pos for i in entry[2])
            outside = {i for i, count in elsewhere.items() if count == 1}
            for letter in sorted((set(factor.over) & outside) - bound):
                (fresh,) = fresh_indices(1, taken)
                inside = renamed(factor.arg, letter, fresh)
                apart = Call(factor.func, inside, tuple(fresh if i == letter else i for i in factor.over))
                call = f"{factor.func}_{''.join(factor.over)}(...)"
                if letter not in letters(factor.arg):
                    # sum_i(x_j) beside x_i: no other letter says "they differ", as the argument
                    # does not write i; a reduction over a letter it does write is the likely slip
                    try:  # the letters the argument leaves free (not those it sums, in a call or a sum)
                        own = sorted(set(implicit_indices(factor.arg)) - set(bound) - set(factor.over))
                    except EinderivError:
                        own = []
                    self.notes.append(
                        f"in {str(expr)!r}, index {letter!r} is summed by {call}, whose argument does not write "
                        f"it, and is a separate index outside it, summed on its own; write the other factors "
                        f"inside {call} to sum them together"
                        + (f", or {factor.func}_{own[0]}(...) over the argument's {own[0]!r}" if own else "")
                    )
                    continue
                self.notes.append(
                    f"in {str(expr)!r}, index {letter!r} is summed by {call} and is a separate index outside it, "
                    f"summed on its own; write the other factors inside {call} to sum them together, or {apart} "
                    "to say that they differ"
                )


def expr_factors(expr) -> list:
    """The factors of a product as the chain lists them (divisors as ``1 / d`` groups)."""
    sign, chain = factor_chain(expr)
    factors = [Div(Number(Fraction(1)), f) if divisor else f for f, divisor in chain]
    return [Number(sign), *factors] if sign != 1 else factors


def _letters_of_counts(term: Term, letters: set[str]) -> Term:
    """``term`` with a count that a product made of a letter of ``letters`` written back as that
    letter (``delta_jj`` beside ``delta_ij`` in one sum: its j is renamed apart from the sum's j,
    and a letter that nothing sizes is an error, not a count of another j)."""
    back = {
        f.first: count_letter(f.first)
        for f in term.factors
        if isinstance(f, Delta) and is_lowered_count(f.first) and count_letter(f.first) in letters
    }
    if not back:
        return term
    return Term(
        term.coeff,
        tuple(
            Delta(back[f.first], back[f.first]) if isinstance(f, Delta) and f.first in back else f for f in term.factors
        ),
    )


def _squares(lowered: list) -> list:
    """Two sums in one product that are one sum up to a constant (``(x_d - m_d)(x_d - m_d)``,
    ``(x_d - m_d)(m_d - x_d)``) as a multiple of the square of the sum, which is what they are
    elementwise: multiplied out, ``x x - 2 x m + m m`` cancels to noise near a fit (0 for
    differences of 1 at x ~ 1e8), where ``(x_d - m_d)^2`` keeps the residual.  Which letters are
    summed was decided from the written factors, so nothing else changes."""
    out = list(lowered)
    k = 0
    while k < len(out):
        factor, terms, occurrences, keep, inner, group = out[k]
        if group and len(terms) > 1:
            for j in range(k + 1, len(out)):
                if not out[j][5] or out[j][2] != occurrences or len(out[j][1]) != len(terms):
                    continue
                ratio = _multiple(terms, out[j][1])
                if ratio is not None:
                    square = make_apply("pow", simplify(terms, tuple(occurrences)), Fraction(2))
                    out[k] = (factor, [t.scaled(ratio) for t in square], occurrences, keep, inner | out[j][4], True)
                    del out[j]
                    break
        k += 1
    return out


def _multiple(a: list[Term], b: list[Term]) -> Fraction | None:
    """The constant r with b = r a, term by term, for sums of two or more distinct terms written
    with the same letters; None where there is none."""
    coefficients = {t.factors: t.coeff for t in a}
    if len(coefficients) != len(a) or len(a) < 2 or len(b) != len(a):
        return None
    if any(t.factors not in coefficients or not coefficients[t.factors] for t in b):
        return None
    ratios = {t.coeff / coefficients[t.factors] for t in b}
    return ratios.pop() if len(ratios) == 1 and len({t.factors for t in b}) == len(b) else None


def _diagonal(factor) -> bool:
    """Whether ``factor`` is a written ``delta_ii``."""
    return isinstance(factor, Delta) and factor.first == factor.second


def _counting(term: Term, over) -> Term:
    """``term`` with the ``delta_rr`` of a summed r it carries nowhere else as the count of r's
    dimension (``sum_k(c)`` is K c): the product around it may rename r apart from its own
    letters (``sum_k(c) x_k``), and a count keeps the dimension it counts."""
    return counted_as(term, {r: lowered_count(r) for r in over})


def counted_as(term: Term, names: dict[str, str]) -> Term:
    """``term`` with the ``delta_rr`` of each letter r of ``names`` that it carries nowhere else
    renamed to the count ``names[r]``; two counts of one name in a term stay two (``i#_``,
    ``i#_@1``: I^2), each sized as the first."""
    uses = Counter(i for f in term.factors for i in f.indices)
    taken = term.index_names()
    factors = []
    for f in term.factors:
        if isinstance(f, Delta) and f.first == f.second and f.first in names and uses[f.first] == 2:
            name, k = names[f.first], 0
            while name in taken:  # sum_i(sum_i(c)): two counts of I, I^2 (i#_@1 is sized as i#_)
                k += 1
                name = f"{names[f.first]}@{k}"
            taken.add(name)
            f = Delta(name, name)
        factors.append(f)
    return Term(term.coeff, tuple(factors))


def _summed_log_exp(arg: Poly, over) -> list[Term]:
    """log(sum_R(exp(arg))) as terms over arg's other indices (evaluated max-shifted)."""
    outer = tuple(i for i in arg.indices if i not in over)
    exp_terms = [keep_sums(t, over) for t in make_apply("exp", arg)]
    # a letter of R that arg does not carry counts its dimension (softmax_i(x_j) z_i is 1 / I)
    written = set(arg.indices)
    exp_terms = [_counting(t, set(over) - written) for t in exp_terms]
    return make_apply("log", simplify(exp_terms, outer))


def standing_terms(expr, bound: frozenset[str] = frozenset(), scaled: bool = False) -> list[Expr] | None:
    """Rule 4's split of a sum standing alone into the terms summed one by one, or None for a
    single term.  Scaling by a scalar keeps a list of terms a list of terms, so that a statement
    divided by 2 is half the statement: ``((y_n - X_nd w_d)^2 + lam w_d w_d) / 2`` is
    ``(y_n - X_nd w_d)^2 / 2 + lam w_d w_d / 2``, not N copies of the regulariser.  A factor is
    a scalar when every letter it writes outside its groups is contracted among the scalar
    factors themselves, and none is the sum's or the left-hand side's.  A scaled sum whose terms
    all leave the same letters free means the same either way and stays one operand (``scaled``)."""
    if isinstance(expr, Add):
        if scaled and len({letters for t in expr.terms for letters in _leaf_letters(t, bound)}) < 2:
            return None
        return list(expr.terms)
    if isinstance(expr, Neg):
        inner = standing_terms(expr.operand, bound, scaled)
        return None if inner is None else [Neg(t) for t in inner]
    if isinstance(expr, Mul) and len(expr.factors) == 1:
        return standing_terms(expr.factors[0], bound, scaled)
    if not (isinstance(expr, Div) or (isinstance(expr, Mul) and len(expr.factors) > 1)):
        return None
    sign, chain = factor_chain(expr)
    split = {pos: standing_terms(f, bound, True) for pos, (f, divisor) in enumerate(chain) if not divisor}
    split = {pos: parts for pos, parts in split.items() if parts is not None}
    if not split:
        return None
    letters = [_free_letters(f, divisor, bound) for f, divisor in chain]
    for pos, parts in split.items():
        outside = Counter(i for k, names in enumerate(letters) if k != pos for i in names)
        if any(c < 2 or i in bound or i in letters[pos] for i, c in outside.items()):
            continue  # the other factors are not a scalar: the sum is an operand, broadcast

        def scaled_part(part: Expr, pos: int = pos) -> Expr:
            factors = [
                Mul((part,)) if k == pos else Div(Number(Fraction(1)), f) if d else f for k, (f, d) in enumerate(chain)
            ]
            product = Mul(tuple(factors))
            return Neg(product) if sign < 0 else product

        return [scaled_part(part) for part in parts]
    return None


def term_letters(expr, bound: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The letters one term (no sum standing alone in it) leaves free, ``bound`` (a left-hand
    side's) among them: rule 5 sums the others at the top (``2 x_i`` beside ``f_j``: i)."""
    return _Scope().group(expr, bound)[1]


def crowded_letters(expr, bound: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The letters one term's top product contracts from three or more places (``x_i x_i x_i``,
    ``x_i X_ii``: rule 3 sums them, where Einstein notation sums a letter written twice)."""
    counts = Counter(i for f, divisor in factor_chain(expr)[1] for i in _free_letters(f, divisor, bound))
    return tuple(i for i, count in counts.items() if count > 2 and i not in bound)


def _leaf_letters(expr, bound: frozenset[str]) -> list[frozenset[str]]:
    """The free letters of each term ``expr`` stands for once every sum standing alone in it is
    split (``z_i + (x_i + 1)``: {i}, {i} and {}): the terms that are summed one by one."""
    parts = standing_terms(expr, bound)
    if parts is None:
        return [frozenset(_Scope().group(expr, bound)[1])]
    return [letters for part in parts for letters in _leaf_letters(part, bound)]


def _free_letters(factor, divisor: bool, bound: frozenset[str]) -> tuple[str, ...]:
    """The letters a chain factor writes into its product: a tensor's every index (``A_ii``
    beside ``A_ij`` shares its i), a group's free ones."""
    if isinstance(factor, Number):
        return ()
    if isinstance(factor, (Tensor, Delta, MatrixCall)) and not divisor:
        return tuple(factor.indices)
    return _Scope().group(factor, bound)[1]


def top_level(expr, bound: frozenset[str], scope: _Scope) -> list[Term]:
    """Rule 4's list of terms: a sum standing alone is split, each term lowered on its own."""
    parts = standing_terms(expr, bound)
    if parts is None:
        terms, _, _ = scope.group(expr, bound)
        return terms
    out: list[Term] = []
    for part in parts:
        out.extend(top_level(part, bound, scope))
        if len(out) > limits.current().max_terms:
            raise too_many_terms(len(out))
    return out


#: True while matrix notation's translation is checked: its index text says what the user wrote
#: with ``.*`` and ``.^``, so rule 1 inside a group is no slip there
_TRANSLATED: ContextVar[bool] = ContextVar("translated", default=False)


@contextmanager
def translated_text():
    """Check index text that matrix notation made (no notes on rule 1 inside a group)."""
    token = _TRANSLATED.set(True)
    try:
        yield
    finally:
        _TRANSLATED.reset(token)


def lower(expr: Expr, context: frozenset[str], written: bool = False) -> list[Term]:
    """The terms of a right-hand side (unsimplified); ``context`` holds the left-hand side's
    indices.  Indices still free at the top and not in ``context`` are summed by the caller's
    :class:`Poly` (rule 5).  Rule-6 warnings go through :mod:`warnings`; with ``written`` (a
    statement as a user writes it, not a derivative einderiv printed), rule 1 inside a group too."""
    scope = _Scope(frozenset(context) if written and not _TRANSLATED.get() else frozenset())
    terms = top_level(expr, frozenset(context), scope)
    if written:
        scope.notes.extend(_nested_reductions(expr))
        scope.notes.extend(_summed_softmaxes(expr, frozenset(context)))
    for note in dict.fromkeys(scope.notes):
        warn_user(note)
    return terms


def _nested_reductions(expr: Expr) -> list[str]:
    """Notes on a sum over a letter whose argument writes it only inside a reduction over it of
    its own: ``sum_i(sum_i(x_i))`` is N times the sum (one letter, one length), almost always a
    slip.  A mean of a mean is the mean, and a softmax keeps its letter: no note."""
    notes = []
    for node in walk(expr):
        if not (isinstance(node, Call) and node.over and node.func != "mean"):
            continue
        for letter in node.over:
            if letter in letters(node.arg) and not _written_unbound(node.arg, letter):
                call = f"{node.func}_{''.join(node.over)}(...)"
                notes.append(
                    f"{call} sums over {letter!r}, which its argument writes only inside a reduction over "
                    f"{letter!r} of its own: the argument is one value, added up once per {letter!r} (the "
                    f"length of {letter!r} times it); drop one of the two reductions if that is not meant"
                )
    return notes


def _summed_softmaxes(expr: Expr, context: frozenset[str]) -> list[str]:
    """Notes on a softmax summed over its own letter, with no other factor of its product writing
    that letter: ``p_i = softmax_k(A_ik x_k)`` sums k (not on the left-hand side: rule 5), and
    ``sum_k(softmax_k(z_k))`` sums it as written.  A softmax sums to 1 over its letter, so the
    term is the other factors (its derivative 0): almost always a slip for ``softmax_i(...)`` or
    ``p_ik = ...``.  (``y_k softmax_k(z_k)`` contracts k with y: no note.)"""
    notes = []

    def factors(term):
        while isinstance(term, Neg) or (isinstance(term, Mul) and len(term.factors) == 1):
            term = term.operand if isinstance(term, Neg) else term.factors[0]
        return factor_chain(term)[1]

    def look(node, summed: set[str], how: str) -> None:
        for term in standing_terms(node) or [node]:
            chain = factors(term)
            for pos, (factor, divisor) in enumerate(chain):
                if divisor or not (isinstance(factor, Call) and factor.func == "softmax"):
                    continue
                others = set().union(*(letters(f) for at, (f, _) in enumerate(chain) if at != pos))
                for letter in sorted((set(factor.over) & summed) - others):
                    call = f"softmax_{''.join(factor.over)}(...)"
                    notes.append(
                        f"{call} is summed over {letter!r} ({how}), and a softmax sums to 1 over its own "
                        f"letter: the term is constant in the softmax's argument; for the softmax itself put "
                        f"{letter!r} on the left-hand side, or take the softmax over another letter"
                    )

    look(expr, set(letters(expr)) - set(context), "not on the left-hand side, so summed by rule 5")
    for node in walk(expr):
        if isinstance(node, Call) and node.over and node.func in ("sum", "mean"):
            look(node.arg, set(node.over), f"by {node.func}_{''.join(node.over)}")
    return notes


def _written_unbound(node: Expr, letter: str) -> bool:
    """Whether ``node`` writes ``letter`` outside every reduction over it within ``node``."""
    if binds(node, letter):
        return False
    if letter in getattr(node, "indices", ()):
        return True
    return any(_written_unbound(child, letter) for child in children(node))


def normalize(expr: Expr, indices) -> Poly:
    """Lower and simplify ``expr`` with the given free indices."""
    indices = tuple(indices)
    return simplify(lower(expr, frozenset(indices)), indices)


def free_indices(expr: Expr, bound=frozenset()) -> tuple[str, ...]:
    """The indices the scoping rules leave free in ``expr`` (first-appearance order), with
    ``bound`` free everywhere (a left-hand side's): ``exp(x_i) A_jk A_jk`` -> (i,)."""
    parts = expr.terms if isinstance(expr, Add) else (expr,)
    return tuple(dict.fromkeys(i for p in parts for i in _Scope().group(p, frozenset(bound))[1]))


def contracted_in_groups(expr: Expr) -> set[str]:
    """The letters that some group inside ``expr``'s top-level product contracts (rule 3):
    ``A_ik (A_kj A_kj - B_kj)`` -> {k}.  A translator that means k to be summed over the whole
    product writes ``sum_k(...)`` around it then."""
    out: set[str] = set()
    for factor, _ in factor_chain(expr)[1]:
        if not isinstance(factor, _ATOMS):
            out |= _Scope().group(factor, frozenset())[2]
    return out


def implicit_indices(expr: Expr):
    """NumPy's implicit rule for a bare expression: the indices left free by the scoping rules
    (written once), alphabetically.  An index free in one term and contracted in another is
    ambiguous."""
    parts = expr.terms if isinstance(expr, Add) else (expr,)
    free: set[str] = set()
    written: set[str] = set()
    for part in parts:
        while isinstance(part, Neg):
            part = part.operand
        _, names, _ = _Scope().group(part, frozenset())  # its notes are not warned about
        free |= set(names)
        written |= {i for node in walk(part) for i in getattr(node, "indices", ()) if i not in names}
    both = sorted(free & written)
    if both:
        raise IndexRuleError(
            f"index {both[0]!r} is free in one term and summed in another, so the output "
            "indices are ambiguous: write a left-hand side such as 'f_i = ...'"
        )
    return tuple(sorted(free))
