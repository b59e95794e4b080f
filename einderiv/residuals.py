"""Residuals named for evaluation: a statement's differences of data kept as arrays of their own.

Differentiation multiplies products out (the normal form is a sum of products), so the Hessian
of ``f = sum_n(((x_n - mean_k(x_k)) / s)^2 t_n)`` holds ``x_n x_n x_m`` beside ``x_n m x_m``
and ``m m x_m``: near a fit, or with data offset by 1e6, the products apart cancel to noise
(the gradient was 2086x off at 1e6).  The same function written as a program,
``c_n = x_n - mean_k(x_k); L = sum_n((c_n / s)^2 t_n)``, keeps c one node and is exact.

:func:`residuals_named` writes a program that way: each sum of data that is an operand (a
factor of a product, the base of a power, a part of a quotient: ``x_n - mean_k(x_k)``, ``X_nd
- Z_md``, ``y_n - X_nd w_d - b``) becomes a statement of its own, named apart from the user's
names; terms that share tensors are the difference of the rest times them (``X_nd w_d -
mean_m(X_md w_d)`` is the centred X times w).  :func:`einderiv.api.diff` evaluates a derivative
through that program's derivative, and prints it with each difference written back in its
place (:func:`written_in_place`) or, where that text would not mean the same, named ``r``,
``r2``, ... (:func:`named_readably`): naming is a way of evaluating, not a change of meaning.
Only sums of tensors, products of tensors, numbers and sums or means of those are named; a sum
holding a call (``1 - sigmoid(z)``, ``1 + exp(u)``) is left to the stable rewrites, which read
it whole, a sum with a constant term (``1 - y_n``) is no difference of data, and a sum whose
terms cancel (``t - t``) is none either.  Softmaxes that meet in one statement (nested, or two
in a product, :func:`_softmaxes_meet`) are named too, as their program would name them.
"""

from __future__ import annotations

import warnings
from contextvars import ContextVar
from fractions import Fraction

from .errors import EinderivError
from .index_names import fresh_indices
from .ir import (
    Add,
    Call,
    Div,
    Expr,
    Mul,
    Neg,
    Number,
    Pow,
    Program,
    Statement,
    Tensor,
    letters,
    renamed,
    walk,
    with_children,
)
from .lower import free_indices
from .normal import Apply, Poly, Term, carrying, equivalent, multiply, simplify
from .program import RESIDUAL_NAME, Definition, substitute_tensor, unique_name
from .semantics import check_statement, output_indices

#: reductions whose argument may sit inside a named residual (``mean_k(x_k)``)
_LINEAR_REDUCTIONS = ("sum", "mean")


def _linear(node) -> bool:
    """Whether ``node`` is a product of tensors and numbers, or a sum or mean of sums of those."""
    if isinstance(node, (Tensor, Number)):
        return True
    if isinstance(node, Neg):
        return _linear(node.operand)
    if isinstance(node, Mul):
        return all(_linear(f) for f in node.factors)
    if isinstance(node, Div):
        return _linear(node.numerator) and isinstance(node.denominator, Number)
    if isinstance(node, Call):
        return node.func in _LINEAR_REDUCTIONS and bool(node.over) and _linear(node.arg)
    if isinstance(node, Add):
        return all(_linear(t) for t in node.terms)
    return False


def _is_residual(node) -> bool:
    """A sum of two or more terms, each holding data and no call but sums and means: a
    difference of data, whose tensors write every letter in it, so that its statement sizes
    itself (``x_k - sum_j(c)`` sums a letter that only the statement around it sizes)."""
    if not isinstance(node, Add) or len(node.terms) < 2:
        return False
    holds_data = [any(isinstance(n, Tensor) for n in walk(t)) for t in node.terms]
    if not (all(holds_data) and all(_linear(t) for t in node.terms)):
        return False
    written = {i for n in walk(node) if isinstance(n, Tensor) for i in n.indices}
    reduced = {i for n in walk(node) if isinstance(n, Call) for i in n.over}
    return reduced <= written


#: whether a softmax that is a factor of a product is named (:func:`_softmaxes_meet`); off, to
#: tell whether a statement names anything else (api.through_residuals prints the user's text then)
NAME_SOFTMAX_FACTORS: ContextVar[bool] = ContextVar("name_softmax_factors", default=True)


def _softmaxes_meet(node) -> bool:
    """Whether a softmax's argument holds another softmax (``softmax_i(softmax_i(u_i) x_i)``), or
    a product has factors holding softmaxes of two arguments (``softmax_i(u_i) softmax_i(u_i
    x_i)``), or a softmax and a log of one (:func:`_a_log_of_softmax`), or a softmax is a factor
    (``softmax_k(z_k) c_k``: its HVP, a centring inside a centring multiplied out, was 9e-7 off at
    z = 30 [1, -0.5, 0.3], where its program's is exact).  Each softmax of such a
    statement is named, as a program names it: a softmax's chain rule is
    ``p_j (g_j - sum_i(g_i p_i))``, which is exactly 0 where p saturates only if g is one array;
    here g is a sum that differentiation multiplies out, and the gradient of the first at
    t = [74, -37, -49] with u = sinh(t) was -7e14 for 0 (``p_i = softmax_i(sinh(t_i)); ...``,
    its program, was exact)."""
    for n in walk(node):
        if _a_softmax(n) and any(_a_softmax(m) for m in walk(n.arg)):
            return True
        if isinstance(n, Mul):
            held = [{repr(m) for m in walk(f) if _a_softmax(m)} for f in n.factors]
            if sum(1 for h in held if h) >= 2 and (len(set().union(*held)) >= 2 or _a_log_of_softmax(n)):
                return True
            if NAME_SOFTMAX_FACTORS.get() and any(_a_softmax(f) for f in n.factors):  # softmax_k(z_k) c_k
                return True
    return False


def _a_log_of_softmax(node) -> bool:
    """Whether ``node`` holds a log of a softmax (``-softmax_k(z_k) log(softmax_k(z_k))``: its
    Hessian multiplied out z_k - logsumexp_l(z_l) over its terms, 0.25 off at z = [1e16, 1e16, 0],
    where its program ``p_k = softmax_k(z_k); f = -p_k log(p_k)`` reads one log-softmax)."""
    return any(
        isinstance(n, Call) and n.func in ("log", "log1p") and any(_a_softmax(m) for m in walk(n.arg))
        for n in walk(node)
    )


def _a_softmax(node) -> bool:
    return isinstance(node, Call) and node.func == "softmax"


def _cancels(add: Add) -> bool:
    """Whether ``add`` simplifies to fewer than two terms (``t_j - t_j``, ``2 x_i - x_i - x_i``):
    no difference to keep apart.  Named, ``t3 - t3`` was an array of its own whose derivative
    printed ``r_j = t1_j - t1_j`` and a zero adjoint that did not read back."""
    poly = _meaning(Statement(Tensor("_", free_indices(add)), add), [])
    return poly is not None and len(poly.terms) < 2


def _key(add: Add, free: tuple[str, ...]) -> str:
    """``add`` up to the letters of its free indices (by position) and of its summed ones (in the
    order they are written): ``y_i - X_ij w_j`` and ``y_i - X_ik w_k`` are one residual, computed
    once (the two copies of ``(y_i - X_ij w_j) (y_i - X_ik w_k)`` were two N x D products)."""
    for k, letter in enumerate(free):
        add = renamed(add, letter, f"\u03b1{k}")
    summed = dict.fromkeys(
        i for n in walk(add) for i in (*getattr(n, "indices", ()), *(getattr(n, "over", None) or ())) if i not in free
    )
    for k, letter in enumerate(i for i in summed if not i.startswith("\u03b1")):
        add = renamed(add, letter, f"\u03b2{k}")
    return repr(add)


class _Namer:
    def __init__(self, taken: set[str]):
        self.taken = taken
        self.statements: list[Statement] = []
        self.names: dict[str, str] = {}  # a residual up to its free letters -> its statement
        #: earlier statements that are products of tensors (``z_n = X_nd w_d``), read into a
        #: residual where that shows a factor its terms share; and the current statement's letters
        self.products: dict[str, Statement] = {}
        self.around: set[str] = set()
        #: earlier statements computed through a call (``e_n = exp(z_n)``), and whether the node
        #: being read lies inside a log: a sum of those there is the stable rewrites' to read
        #: (``log((e_n + f_n) / 2)`` with f = exp(-z) is a log-cosh), no difference of data
        self.called: set[str] = set()
        self.in_log = False
        #: whether the statement being read has softmaxes that meet (:func:`_softmaxes_meet`)
        self.softmaxes = False

    def residual(self, add: Add):
        free = free_indices(add)
        key = _key(add, free)
        name = self.names.get(key)
        if name is None:
            number = len(self.names)
            while f"_r{number}" in self.taken:
                number += 1
            name = self.names[key] = f"_r{number}"
            self.taken.add(name)
            self.statements.append(Statement(Tensor(name, free), add))
        return Tensor(name, free)

    def named(self, add: Add):
        """The residual ``add`` as a named array; where some of its terms share a tensor
        (:func:`_common_factor`), those as a named difference of data times that tensor."""
        shared = self.shared(add)
        return shared if shared is not None else self.residual(add)

    def shared(self, add: Add, outputs: set[str] | None = None):
        """``add`` with the terms that share a tensor written as a named difference of data
        times it (the whole sum named where other terms stay), or None where none share one.
        With ``outputs`` (``add`` is a statement's right-hand side, whose terms each sum their
        own letters) a letter the difference sums must be one tensor axis in all its terms:
        ``x_i x_j - 2 x_i y_j + y_i y_j`` is no x_i (x_j - 2 y_j) when x and y differ in length
        (its value and gradient stopped with "two sizes")."""
        factored = _common_factor(add)
        if factored is None and self.products:  # z_n - mean_m(z_m) with z_n = X_nd w_d
            expanded = _in_place(add, self.products, self.around | letters(add))
            factored = _common_factor(expanded) if expanded is not None else None
        if factored is None:
            return None
        others, rest, common = factored
        if outputs is not None and not _summed_at_one_axis(Add((*others, rest)), outputs):
            return None
        if isinstance(rest.terms[0], Neg):  # -X_nd w_d + mean_m(X_md w_d): -(X_nd - mean_m(X_md)) w_d
            flipped = Add(tuple(t.operand if isinstance(t, Neg) else Neg(t) for t in rest.terms))
            shared = Neg(Mul((self.residual(flipped), *common)))
        else:
            shared = Mul((self.residual(rest), *common))
        return self.residual(Add((*others, shared))) if others else shared

    def maybe_named(self, node):
        """``node`` named where it is a residual, or the negation of one (``-(X_nd - Z_md)`` in
        ``exp(-(X_nd - Z_md)(X_nd - Z_md))``: left whole, its square's derivative was multiplied
        out, 7e-3 off at an offset of 1e6)."""
        if self.in_log and any(isinstance(n, Tensor) and n.name in self.called for n in walk(node)):
            return node  # log((e_n + f_n) / 2), e and f exps: a log-cosh, not a residual
        if _is_residual(node) and not _cancels(node):
            return self.named(node)
        if isinstance(node, Neg) and _is_residual(node.operand) and not _cancels(node.operand):
            return Neg(self.named(node.operand))
        return node

    def operand(self, node):
        """``node`` with its residual operands named (inner ones first)."""
        if isinstance(node, Call) and node.func in ("log", "log1p") and not self.in_log:
            self.in_log = True
            try:
                return with_children(node, self.operand)
            finally:
                self.in_log = False
        node = with_children(node, self.operand)
        if self.softmaxes and _a_softmax(node):
            return self.residual(node)
        if isinstance(node, Call) and node.func in _LINEAR_REDUCTIONS and node.over and _a_difference(node.arg):
            # a sum's or mean's argument: sum_n(x_n - m) sum_i(x_i - m) multiplied out cancels
            # (at an offset of 1e8 a meaning hunt found 128 for 82.6)
            return Call(node.func, self.maybe_named(node.arg), node.over)
        if isinstance(node, Mul):
            return Mul(tuple(self.maybe_named(f) for f in node.factors))
        if isinstance(node, Pow):
            return Pow(self.maybe_named(node.base), node.exponent)
        if isinstance(node, Div):
            if self.divides_own_call(node):
                return Div(node.numerator, self.maybe_named(node.denominator))
            return Div(self.maybe_named(node.numerator), self.maybe_named(node.denominator))
        return node

    def divides_own_call(self, node: Div) -> bool:
        """Whether ``node`` is a difference over one of its own terms computed through a call:
        ``(y_n - mu_n) / mu_n`` with ``mu = exp(eta)`` is ``y_n exp(-eta_n) - 1`` as one statement
        reads it, -1 where mu overflows; named, the difference was -inf and the quotient NaN (a
        gamma deviance's value at eta = 800)."""
        top, bottom = node.numerator, node.denominator
        if not (isinstance(top, Add) and _is_residual(top)):
            return False
        # the denominator's factors (mu, mu^2, y mu^2), not a sum holding mu: (u + x) / (1 - u^2)
        # with u = softplus(x) keeps u + x named (written out, a Hessian was NaN at x = -1e160)
        factors = [f.factors[0] if isinstance(f, Mul) and len(f.factors) == 1 else f for f in _factors_of(bottom)]
        bases = [f.base if isinstance(f, Pow) else f for f in factors]
        calls = {f.name for f in bases if isinstance(f, Tensor) and f.name in self.called}
        terms = [t.operand if isinstance(t, Neg) else t for t in top.terms]
        return any(isinstance(t, Tensor) and t.name in calls for t in terms)


def _factors_of(node) -> list:
    """The factors of a product (of products), or the node itself."""
    if isinstance(node, Mul):
        return [g for f in node.factors for g in _factors_of(f)]
    return [node]


def _a_difference(node) -> bool:
    """Whether ``node`` is a sum with a term subtracted (``x_n - m``), where a sum's terms apart
    could cancel."""

    def negative(term) -> bool:
        if isinstance(term, Neg):
            return True
        return isinstance(term, Mul) and isinstance(term.factors[0], Number) and term.factors[0].value < 0

    return isinstance(node, Add) and any(negative(t) for t in node.terms)


def _a_product(node) -> bool:
    """Whether ``node`` is a product of two or more tensors and numbers, or a sum or mean of one
    (``X_nd w_d``, ``mean_m(X_md w_d)``)."""
    split = _split(node)
    return split is not None and len(split[2]) > 1 and all(isinstance(f, (Tensor, Number)) for f in split[2])


def _split(term) -> tuple[bool, list, list] | None:
    """``term`` as (negated, reductions around it, factors): ``-mean_m(X_md w_d)`` is (True,
    [mean over m], [X_md, w_d]); None where it is no such product."""
    negated, reductions = False, []
    while True:
        if isinstance(term, Mul) and len(term.factors) == 1:  # a group
            term = term.factors[0]
        elif isinstance(term, Neg):
            negated, term = not negated, term.operand
        elif isinstance(term, Call) and term.func in _LINEAR_REDUCTIONS and term.over:
            reductions.append((term.func, term.over))
            term = term.arg
        else:
            break
    factors, pending = [], [term]
    while pending:  # a product's groups of products are its factors (X_md w_d in mean_m((X_md w_d)))
        node = pending.pop(0)
        if isinstance(node, Mul):
            pending[:0] = node.factors
        else:
            factors.append(node)
    if not all(_linear(f) for f in factors):
        return None
    return negated, reductions, factors


def _common_factor(add: Add) -> tuple[tuple, Add, tuple] | None:
    """``(others, rest, shared)`` where two or more terms of ``add`` are products holding the
    tensors ``shared``, none summing one of their letters in a reduction around it, and ``rest``
    (those terms without them) is a difference of data no larger than one of its tensors:
    ``y_n - X_nd w_d + mean_m(X_md w_d)`` is ``y_n - (X_nd - mean_m(X_md)) w_d``, others
    ``(y_n,)``.  Named apart, the centred data is exact where the
    difference of the products is not (the Hessian of the variance of a projection by w,
    mean_n(C_ni C_nj), was read as mean_n(C_ni X_nj), 1.5 off at an offset of 1e8).  The
    statement is checked to mean what it meant (:func:`_same_meaning`)."""
    parts = [_split(t) for t in add.terms]
    holders: dict[Tensor, list[int]] = {}  # each tensor -> the terms holding it (one pass: a flat sum
    for k, p in enumerate(parts):  # of 3000 terms took 2 s scanning every term per tensor)
        if p is not None:
            for f in dict.fromkeys(f for f in p[2] if isinstance(f, Tensor)):
                holders.setdefault(f, []).append(k)
    for candidate, terms_holding in holders.items():
        if len(terms_holding) < 2:
            continue
        holding = [
            k for k in terms_holding if not set(candidate.indices) & {i for _, over in parts[k][1] for i in over}
        ]
        if len(holding) < 2:
            continue
        # every tensor those terms share comes out (U_dk v_k of X_nd U_dk v_k - mean_m(X_md U_dk v_k))
        common = [
            f
            for f in dict.fromkeys(parts[holding[0]][2])
            if isinstance(f, Tensor)
            and all(f in parts[k][2] and not set(f.indices) & {i for _, o in parts[k][1] for i in o} for k in holding)
        ]
        terms = []
        for negated, reductions, factors in (parts[k] for k in holding):
            rest = list(factors)
            for f in common:
                rest.remove(f)
            node = Mul(tuple(rest)) if len(rest) > 1 else rest[0] if rest else Number(Fraction(1))
            for func, over in reversed(reductions):
                node = Call(func, node, over)
            terms.append(Neg(node) if negated else node)
        rest = Add(tuple(terms))
        signs = {parts[k][0] for k in holding}
        # a difference (s x_i + x_i x_i cancels nothing) no larger than one of its tensors (an
        # N x D x K residual for an N-vector is no way to evaluate it)
        free = set(free_indices(rest))
        shaped = any(free <= set(n.indices) for n in walk(rest) if isinstance(n, Tensor))
        if _is_residual(rest) and len(signs) == 2 and shaped:
            others = tuple(t for k, t in enumerate(add.terms) if k not in holding)
            return others, rest, tuple(common)
    return None


def _same_meaning(original: Statement, rewritten: Statement, named: list[Statement], read=()) -> bool:
    """Whether ``rewritten``, with the residual statements ``named`` substituted back, is the
    normal form of ``original``: a sum whose terms the statement sums apart (``f = 2 (3 (x_i + 1)
    - y_j) / 6`` sums i in one term and j in the other) is no array over both letters.  The
    earlier statements ``read`` into a residual are substituted into both."""
    read_in = _definitions(reversed(read))
    before = _meaning(original, read_in)
    named_in = _definitions(reversed(named))  # a later residual may use an earlier one
    after = _meaning(rewritten, named_in + read_in if named_in is not None and read_in is not None else None)
    return before is not None and after is not None and _same_poly(before, after)


def _definitions(statements) -> list[Definition] | None:
    """Each statement as a definition (its normal form), in the order given; None where one
    does not check."""
    out = []
    for statement in statements:
        poly = _meaning(statement, [])
        if poly is None:
            return None
        out.append(Definition(statement.target.name, statement.target.indices, poly))
    return out


def _meaning(statement: Statement, definitions: list[Definition] | None):
    """The normal form of ``statement`` with ``definitions`` substituted in order; None where
    it (or a definition) does not check."""
    if definitions is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            poly, _ = check_statement(statement)
            for definition in definitions:
                poly, _ = substitute_tensor(poly, definition.name, definition)
    except EinderivError:
        return None
    return poly


def _same_poly(before: Poly, after: Poly) -> bool:
    """Whether two normal forms are the same expression, also where one writes a power of a sum
    that the other has multiplied out."""
    if equivalent(before, after):
        return True
    try:
        return equivalent(_powers_multiplied(before), _powers_multiplied(after))
    except EinderivError:
        return False


#: the most terms a power multiplied out for a comparison may have
_MULTIPLIED_TERMS = 4096


def _powers_multiplied(poly: Poly) -> Poly:
    """``poly`` with each power 2 to 4 of a sum multiplied out (inside calls too): a group
    written twice, ``(X_ni - Z_mi) (X_ni - Z_mi)``, is read as a square, which the same group
    substituted for a name twice is not."""
    terms: list[Term] = []
    for term in poly.terms:
        out = [Term(term.coeff, ())]
        for factor in term.factors:
            if isinstance(factor, Apply):
                arg = _powers_multiplied(factor.arg)
                power = factor.param
                if factor.func == "pow" and len(arg.terms) > 1 and power in (2, 3, 4):
                    copies = [Term(Fraction(1), ())]
                    for _ in range(int(power)):
                        copies = multiply(copies, carrying(arg.terms, arg.indices), set(arg.indices))
                    out = multiply(out, copies, set(arg.indices), term.index_names())
                    if len(out) > _MULTIPLIED_TERMS:
                        raise EinderivError("too many terms to compare")  # no rewrite, then
                    continue
                factor = Apply(factor.func, arg, factor.param)
            out = [Term(t.coeff, (*t.factors, factor)) for t in out]
        terms.extend(out)
    return simplify(terms, poly.indices)


def residuals_named(program: Program) -> Program | None:
    """``program`` with every residual operand a statement of its own, in each statement that
    then means what it meant (:func:`_same_meaning`); None where none is named.  A printed
    derivative read back is named too (the skewness Hessian's ``(x_k - m + x_l - m)`` read back
    86x off at data offset by 1e6): its denominators keep their letters, the residuals are new
    statements before it."""
    taken = {s.target.name for s in program.statements if s.target is not None}
    taken |= {n.name for s in program.statements for n in walk(s.rhs) if isinstance(n, Tensor)}
    namer = _Namer(taken)
    statements: list[Statement] = []
    for statement in program.statements:
        if statement.target is not None and any(  # computed through a call, or from one that is
            isinstance(n, Call) and n.func not in _LINEAR_REDUCTIONS or isinstance(n, Tensor) and n.name in namer.called
            for n in walk(statement.rhs)
        ):
            namer.called.add(statement.target.name)
        before, names = len(namer.statements), dict(namer.names)
        namer.around = letters(statement.rhs) | set(statement.target.indices if statement.target else ())
        namer.softmaxes = _softmaxes_meet(statement.rhs)
        top = statement.rhs
        # the statement's own softmax is no operand to name (q_i = softmax_i(p_i x_i) as q_i = _r1_i)
        rhs = with_children(top, namer.operand) if _a_softmax(top) else namer.operand(top)
        if _is_residual(rhs):  # r_n = z_n - mean_m(z_m): named where its terms share a factor
            shared = namer.shared(rhs, set(output_indices(statement)))
            rhs = shared if shared is not None else rhs
        rewritten = Statement(statement.target, rhs, statement.wrt)
        added = namer.statements[before:]
        read = list(namer.products.values())
        if rewritten != statement and not _same_meaning(statement, rewritten, namer.statements, read):
            del namer.statements[before:]
            namer.names = names
            rewritten, added = statement, []
        statements += added
        statements.append(rewritten)
        target = statement.target
        if target is not None and len(set(target.indices)) == len(target.indices):
            expanded = _in_place(statement.rhs, namer.products, set(target.indices) | letters(statement.rhs))
            if expanded is not None and _a_product(expanded):
                namer.products[target.name] = Statement(target, expanded)
    if not namer.statements:
        return None
    return Program(tuple(statements))


def _summed_at_one_axis(add: Add, outputs: set[str]) -> bool:
    """Whether each letter the terms of ``add`` write at tensors, other than ``outputs``, is
    written at one tensor axis in all of them: only then may terms that each sum it be one array
    over it."""
    axes: dict[str, set] = {}
    for term in add.terms:
        for node in walk(term):
            if isinstance(node, Tensor):
                for axis, letter in enumerate(node.indices):
                    if letter not in outputs:
                        axes.setdefault(letter, set()).add((node.name, axis))
    return all(len(found) == 1 for found in axes.values())


def _group(statement: Statement, use: Tensor, around: set[str]) -> Expr | None:
    """The residual ``statement``'s expression as a parenthesised group at the indices of ``use``
    (a call as itself),
    its own summed and reduced letters renamed apart from ``around`` (the letters of the
    statement it is written into); None where the use repeats a letter (a diagonal, which a
    group would sum)."""
    own, rhs = statement.target.indices, statement.rhs
    if len(set(use.indices)) != len(use.indices):
        return None
    rhs = _relettered(rhs, own, use.indices, around | set(use.indices))
    # a call (a named softmax) is written as it is: softmax_k(z_k) c_k, not (softmax_k(z_k)) c_k
    return rhs if isinstance(rhs, Call) else Mul((rhs,))


def written_in_place(shown: Program, residuals: Program) -> Program | None:
    """``shown`` (a derivative's statements, as printed) with each use of a residual statement of
    ``residuals`` written in its place as the difference the user wrote, ``(x_n - mean_k(x_k))``
    for ``_r0_n``, and the residual statements left out: the derivative reads as the user's
    text, evaluated as it is.  None where a printed statement is named after a residual (the
    adjoint ``dfd_r0`` of a residual the derivative differentiates through), a use takes a
    diagonal (which a group would sum), or a statement written so does not mean what it meant
    (normal forms compared, as :func:`_same_meaning` does; tried with each use summed where only
    numbers scale it, and a group written twice as its square, summed over the letters it
    contracts or not, and without each)."""
    definitions: dict[str, Statement] = {}
    named = [s for s in residuals.statements if s.target is not None and RESIDUAL_NAME.fullmatch(s.target.name)]
    for statement in named:  # a later residual may use an earlier one
        inner = _in_place(statement.rhs, definitions, letters(statement.rhs) | set(statement.target.indices))
        if inner is None:
            return None
        definitions[statement.target.name] = Statement(statement.target, inner)
    substituted = _definitions(reversed(named))  # a later residual may use an earlier one
    out = []
    for statement in shown.statements:
        name = statement.target.name if statement.target is not None else ""
        if name in definitions:
            continue
        if RESIDUAL_NAME.search(name):
            return None
        outer = set(statement.target.indices) if statement.target else set()
        outer |= {i for w in statement.wrt for i in w.indices}
        around = letters(statement.rhs) | outer
        after = _meaning(statement, substituted)  # what each reading must mean
        readings = [
            (summed, powers)
            for summed in (frozenset(), frozenset(around - outer))
            for powers in ("summed", "plain", None)
        ]
        for summed, powers in readings:  # a group twice, (x_k - mu_k)(x_k - mu_k), sums k: no square
            rhs = _in_place(statement.rhs, definitions, around, summed, powers, frozenset(outer))
            written = Statement(statement.target, rhs, statement.wrt) if rhs is not None else None
            before = _meaning(written, []) if written is not None else None
            if before is not None and after is not None and _same_poly(before, after):
                break
        else:
            return None
        out.append(written)
    return Program(tuple(out))


def _names(node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, Tensor)}


def named_readably(shown: Program, residuals: Program) -> Program | None:
    """``shown`` with each residual ``_rK`` of ``residuals`` named ``r``, ``r2``, ... in order, in
    the names of its adjoints too, apart from every other name printed or written in the program
    (so that each gradient of several prints a residual with the same name); None where a new
    name would meet another."""
    names = set()
    for program in (shown, residuals):
        names |= {s.target.name for s in program.statements if s.target is not None}
        names |= {w.name for s in program.statements for w in s.wrt}
        for statement in program.statements:
            names |= _names(statement.rhs)
    taken = {n for n in names if not RESIDUAL_NAME.search(n)}
    mapping: dict[str, str] = {}
    for name in sorted({m for n in names for m in RESIDUAL_NAME.findall(n)}, key=lambda r: int(r[2:])):
        mapping[name] = unique_name("r", taken | set(mapping.values()))
    new = {n: RESIDUAL_NAME.sub(lambda m: mapping[m.group(0)], n) for n in names if RESIDUAL_NAME.search(n)}
    if set(new.values()) & taken or len(set(new.values())) != len(new):
        return None

    def rename(node):
        if isinstance(node, Tensor):
            return Tensor(new.get(node.name, node.name), node.indices)
        return with_children(node, rename)

    return Program(
        tuple(
            Statement(rename(s.target) if s.target is not None else None, rename(s.rhs), s.wrt)
            for s in shown.statements
        )
    )


def _in_place(
    node, definitions: dict[str, Statement], around: set[str], summed=frozenset(), powers="summed", outer=frozenset()
):
    """``node`` with each use of a residual of ``definitions`` written as its group, summed over
    its letters in ``summed`` (``-2 sum_n(y_n - X_nd w_d - b)``: a group scaled by a number is
    a list of terms, each summed on its own)."""
    if isinstance(node, Tensor) and node.name in definitions:
        group = _group(definitions[node.name], node, around)
        over = tuple(i for i in node.indices if i in summed)
        inner = group.factors[0] if isinstance(group, Mul) else group
        return Call("sum", inner, over) if group is not None and over else group
    failed = False
    if isinstance(node, (Call, Pow)):  # an operand: its groups are tensors
        summed = frozenset()

    def change(child):
        nonlocal failed
        inside = frozenset() if isinstance(node, Div) and child is node.denominator else summed
        out = _in_place(child, definitions, around, inside, powers, outer)
        failed = failed or out is None
        return child if out is None else out

    node = with_children(node, change)
    if failed:
        return None
    if isinstance(node, Call) and _is_group(node.arg):  # sum_j(lam + x_j), not sum_j((lam + x_j))
        return Call(node.func, node.arg.factors[0], node.over)
    if isinstance(node, Add):
        return _terms_spliced(node)
    return _powers_of_groups(node, outer if powers == "summed" else None) if isinstance(node, Mul) and powers else node


def _is_group(node) -> bool:
    return isinstance(node, Mul) and len(node.factors) == 1 and isinstance(node.factors[0], Add)


def _terms_spliced(add: Add) -> Add:
    """``add`` with a group that is one of its terms written as its terms: ``s + x_i + x_i``, not
    ``(s + x_i) + x_i`` (parentheses around a term change nothing, rule 4)."""
    terms = []
    for term in add.terms:
        negated = isinstance(term, Neg) and _is_group(term.operand)
        inner = term.operand if negated else term
        if not _is_group(inner):
            terms.append(term)
            continue
        for part in inner.factors[0].terms:
            if negated:
                part = part.operand if isinstance(part, Neg) else Neg(part)
            terms.append(part)
    return Add(tuple(terms))


def _powers_of_groups(product: Mul, outer: frozenset | None = frozenset()):
    """``product`` with a group written k times as its k-th power, ``-(x_n - mu)^2`` for
    ``-(x_n - mu) (x_n - mu)`` (a power of a group is elementwise, as the product of the two is),
    summed over the letters the copies contract among themselves, ``sum_mso((X_ms - Z_os)^2)``
    for ``(X_ms - Z_os) (X_ms - Z_os)``: read back, a power keeps the difference whole, where a
    product of the two is multiplied out.  ``outer``: the letters of the left-hand side, which
    are never summed; None: no sum (the copies' letters occur beside the product)."""
    negated, plain = False, []
    for factor in product.factors:
        while isinstance(factor, Neg):
            negated, factor = not negated, factor.operand
        plain.append(factor)
    groups = [f for f in plain if _is_group(f)]
    repeated = {g for g in groups if groups.count(g) > 1}
    if not repeated:
        return product
    factors, done = [], set()
    for factor in plain:
        if factor in repeated:
            if factor not in done:
                done.add(factor)
                power = Pow(factor, Fraction(groups.count(factor)))
                elsewhere = {i for f in plain if f != factor for i in letters(f)}
                over = (
                    ()
                    if outer is None
                    else tuple(i for i in free_indices(factor.factors[0]) if i not in elsewhere | outer)
                )
                factors.append(Call("sum", power, over) if over else power)
            continue
        factors.append(factor)
    if negated:
        factors[0] = Neg(factors[0])
    return Mul(tuple(factors)) if len(factors) > 1 else factors[0]


def with_output_letters(shown: Program, letters: tuple[str, ...]) -> Program:
    """``shown`` with its output statement's free letters (its target's, then each denominator's)
    written as ``letters``, the printed derivative's own (``df/dx_i``, not ``df/dx_l``), its
    summed letters renamed apart from them first."""
    out = shown.output
    if out.target is None:
        return shown
    old = (*out.target.indices, *(i for w in out.wrt for i in w.indices))
    if len(old) != len(letters) or old == tuple(letters) or len(set(letters)) != len(letters):
        return shown
    statement = Statement(
        _relettered(out.target, old, letters),
        _relettered(out.rhs, old, letters, set(letters)),
        tuple(_relettered(w, old, letters) for w in out.wrt),
    )
    return Program((*shown.statements[:-1], statement))


def _relettered(node, old, new, apart=frozenset()):
    """``node`` with the letters ``old`` written as ``new`` at once (i -> j while j -> i), its
    other letters that meet ``apart`` renamed to fresh ones first (summed letters kept apart
    from the letters around the place it is written)."""
    taken = letters(node) | set(old) | set(new) | set(apart)
    for letter in sorted((letters(node) - set(old)) & set(apart)):
        fresh = fresh_indices(1, taken)[0]
        taken.add(fresh)
        node = renamed(node, letter, fresh)
    marks = [f"\u03b2{k}" for k in range(len(old))]
    for letter, mark in zip(old, marks):
        node = renamed(node, letter, mark)
    for mark, letter in zip(marks, new):
        node = renamed(node, mark, letter)
    return node
