"""Matrix notation for results in index notation: ``A_kj x_j + x_i A_ik`` prints as ``A x + A^T x``.

A result's first free index is the row index, its second the column index; one free index is a
column vector, none a scalar.  Each term is a product of factors with at most two indices.  Seen
as a graph whose nodes are indices, a factor with two indices is an edge and a vector an end cap:
the path from the row index to the column index is a matrix product (each edge oriented along
the path, transposed where it runs backwards), a closed cycle of summed indices is a trace, and a
path closed by vectors at both ends is a scalar ``a^T X b``.  An index shared by three factors is
first reduced: factors with the same indices combine elementwise (``s ⊙ x``), and a vector on
the shared index becomes a diagonal matrix (``X_ni s_n X_nj`` is ``X^T diag(s) X``).  Terms that
share a left or right factor are then collected: ``A x + A^T x`` is ``(A + A^T) x``.

Where no such form exists (more than two free indices, a factor with three, a broadcast term),
:class:`NoMatrixForm` says why.  Numbers in a vector or matrix sum stand for that constant in every
entry (``1 - s``); ``I`` is the identity matrix.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from ..elementwise import FUNCTIONS, in_matrix_notation
from ..errors import EinderivError
from ..glyphs import format_number
from ..index_names import count_letter
from ..ir import Delta, Tensor
from ..normal import Apply, MatrixFn, Poly, Term, equivalent, is_reciprocal, rename_apart
from ..rewrites import logsumexp_parts
from .tree import (
    COLUMN,
    MATRIX,
    SCALAR,
    Call,
    ElementwisePower,
    Hadamard,
    Identity,
    Inverse,
    Number,
    Power,
    Product,
    Sum,
    Symbol,
    Transpose,
    to_text,
    transpose,
)


class NoMatrixForm(EinderivError):
    """The result cannot be written in matrix notation; the message says why, ``reason`` briefly."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


#: Names matrix notation reads as functions besides the elementwise ones (their entries' ``matrix``
#: names): a tensor so named has no matrix form.
_STRUCTURAL_NAMES = frozenset({"tr", "det", "logdet", "logabsdet", "diag", "sum", "softmax", "logsumexp", "inv"})


def notation_function(name: str) -> bool:
    """Whether matrix notation reads ``name`` as a function (``tr``, ``exp``, ...)."""
    return name in _STRUCTURAL_NAMES or in_matrix_notation(name) is not None


# -- index form -> tree ------------------------------------------------------------------------------


@dataclass
class _Piece:
    """A factor with its indices: the first is the row of ``expr``, the second its column."""

    expr: object
    indices: tuple[str, ...]


@dataclass
class _Context:
    """What the translation needs to know about the whole program: the names it uses."""

    names: frozenset[str]
    made: int = 0

    def new_index(self) -> str:
        self.made += 1
        return f"~{self.made}"  # never a user's name: user indices are letters and digits

    def identity(self) -> Identity:
        if "I" in self.names:
            raise NoMatrixForm("the identity matrix is needed, but I names a tensor")
        return Identity()

    def symbol(self, name: str, shape: tuple[bool, bool]) -> Symbol:
        """A tensor's name, unless matrix notation reads it as a function (``tr``, ``exp``, ...)."""
        if notation_function(name):
            raise NoMatrixForm(f"the name {name} is a function in matrix notation")
        if name == "I":  # printed, it would read as the identity
            raise NoMatrixForm("the tensor I would read as the identity matrix in matrix notation")
        return Symbol(name, shape)


def _shape_of(indices: tuple[str, ...]) -> tuple[bool, bool]:
    return (COLUMN, MATRIX)[len(indices) - 1] if indices else SCALAR


def _index_term(term: Term) -> str:
    return str(Poly((term,), ()))


def _render_poly(poly: Poly, context: _Context):
    """The tree of a normal form whose free indices are (row, column); terms collected."""
    if len(poly.indices) > 2:
        rank = len(poly.indices)
        raise NoMatrixForm(f"rank {rank} (indices {', '.join(poly.indices)}); matrix notation has at most two")
    if not poly.terms:
        return Number(Fraction(0), _shape_of(poly.indices))
    if poly.indices and all(not t.factors for t in poly.terms):  # d(x_i + s)/ds: 1 in every entry
        kind = "vector" if len(poly.indices) == 1 else "matrix"
        raise NoMatrixForm(
            f"every entry is the number {Poly(poly.terms, ())}: a lone number reads as a scalar, and matrix "
            f"notation has no name for a {kind} of ones"
        )
    products = [_render_term(t, poly.indices, context) for t in poly.terms]
    return _flat_factor(_collect(products))


def _pieces(term: Term, free: tuple[str, ...], context: _Context) -> tuple[list, list[_Piece], list]:
    """The term's factors as scalars, pieces with indices, and scalar divisors."""
    counts = Counter(i for f in term.factors for i in f.indices)
    scalars: list = []
    pieces: list[_Piece] = []
    divisors: list = []

    def trace_of(expr, index: str, what: str):
        if index in free or counts[index] > 2:
            raise NoMatrixForm(f"{what} takes the diagonal of a matrix along an index used elsewhere")
        scalars.append(Call("tr", expr, SCALAR))

    for factor in term.factors:
        if is_reciprocal(factor):
            raise NoMatrixForm(f"a mean over the index {factor.indices[0]!r} (write it as a sum divided by its size)")
        if isinstance(factor, Tensor):
            rank = len(factor.indices)
            if rank > 2:
                raise NoMatrixForm(f"the factor {factor} has {rank} indices")
            if rank == 2 and factor.indices[0] == factor.indices[1]:
                trace_of(context.symbol(factor.name, MATRIX), factor.indices[0], str(factor))
                continue
            target = pieces if rank else scalars
            symbol = context.symbol(factor.name, _shape_of(factor.indices))
            target.append(_Piece(symbol, factor.indices) if rank else symbol)
        elif isinstance(factor, Delta):
            if factor.first == factor.second:  # the dimension of a summed index: no matrix names it
                letter = count_letter(factor.first)
                raise NoMatrixForm(f"delta_{letter}{letter} (the dimension of {letter}) has no matrix form")
            pieces.append(_Piece(context.identity(), factor.indices))
        elif isinstance(factor, MatrixFn):
            if factor.func == "inv":
                inverse = Inverse(context.symbol(factor.matrix, MATRIX).name)
                if factor.indices[0] == factor.indices[1]:
                    trace_of(inverse, factor.indices[0], f"inv({factor.matrix})")
                else:
                    pieces.append(_Piece(inverse, factor.indices))
            else:
                scalars.append(Call(factor.func, context.symbol(factor.matrix, MATRIX), SCALAR))
        elif isinstance(factor, Apply):
            _apply_piece(factor, context, scalars, pieces, divisors)
        else:  # pragma: no cover - the normal form has no other atoms
            raise NoMatrixForm(f"cannot write {factor} in matrix notation")
    return scalars, pieces, divisors


def _apply_piece(atom: Apply, context: _Context, scalars: list, pieces: list, divisors: list) -> None:
    """An elementwise call or power: a scalar, or a piece over the call's indices."""
    indices = atom.indices
    if len(set(indices)) != len(indices):
        raise NoMatrixForm(f"the call {Poly((Term(Fraction(1), (atom,)),), ())} repeats an index")
    lse = logsumexp_parts(atom)
    if lse is not None:
        inner, summed = lse
        if indices or len(summed) != 1 or len(inner.indices) != 1:
            raise NoMatrixForm("a logsumexp over one axis of a matrix has no matrix form")
        scalars.append(Call("logsumexp", _render_poly(inner, context), SCALAR))
        return
    if atom.func == "pow":
        base = _render_poly(atom.arg, context)
        exponent = atom.param
        if "/" in format_number(exponent):
            raise NoMatrixForm(f"the power ^{format_number(exponent)} (matrix notation writes decimal exponents)")
        if not indices:
            if exponent < 0:
                divisors.append(base if exponent == -1 else Power(base, -exponent))
            else:
                scalars.append(Power(base, exponent))
            return
        if exponent == Fraction(1, 2):
            expr = Call(FUNCTIONS["sqrt"].matrix, base, base.shape)
        elif exponent.denominator == 1 and 2 <= exponent <= 4:
            expr = Hadamard((base,) * int(exponent))
        else:  # y.^-1, the entries' reciprocals; (b + x).^-3
            expr = ElementwisePower(base, exponent)
        pieces.append(_Piece(expr, indices))
        return
    softmax = _softmax_argument(atom)
    if softmax is not None:
        pieces.append(_Piece(Call("softmax", _render_poly(softmax, context), COLUMN), indices))
        return
    if atom.func not in FUNCTIONS:
        raise NoMatrixForm(f"the function {atom.func} has no matrix form")
    expr = Call(FUNCTIONS[atom.func].matrix, _render_poly(atom.arg, context), _shape_of(indices))
    if indices:
        pieces.append(_Piece(expr, indices))
    else:
        scalars.append(expr)


def _softmax_argument(atom: Apply) -> Poly | None:
    """``u`` when ``atom`` is ``exp(u_k - logsumexp_j(u_j))`` over one index k (a softmax)."""
    if atom.func != "exp" or len(atom.indices) != 1:
        return None
    (k,) = atom.indices
    rest, normaliser = [], []
    for term in atom.arg.terms:
        parts = logsumexp_parts(term.factors[0]) if term.coeff == -1 and len(term.factors) == 1 else None
        (normaliser if parts is not None and not term.factors[0].indices else rest).append((term, parts))
    if len(normaliser) != 1 or not rest:
        return None
    u = Poly(tuple(t for t, _ in rest), (k,))
    inner, summed = normaliser[0][1]
    if len(inner.indices) != 1 or len(summed) != 1:
        return None
    inner = rename_apart(inner, {k})
    renamed = Poly(tuple(t.rename({inner.indices[0]: k}) for t in inner.terms), (k,))
    return u if equivalent(u, renamed) else None


def _reduce_shared(pieces: list[_Piece], free: tuple[str, ...], context: _Context) -> None:
    """Until every index is in at most two places (a free index counts its output slot):
    combine pieces with the same indices elementwise, and turn a vector on a thrice-shared
    index into a diagonal matrix (``X_ni s_n X_nj``: ``diag(s)_nm`` and ``X_mj``)."""
    while True:
        degree = Counter(i for p in pieces for i in p.indices) + Counter(free)
        crowded = [i for i in degree if degree[i] >= 3]
        if not crowded:
            return
        index = crowded[0]
        sharing = [p for p in pieces if index in p.indices]
        merged = False
        for a, first in enumerate(sharing):
            for second in sharing[a + 1 :]:
                if set(first.indices) == set(second.indices):
                    other = second.expr if second.indices == first.indices else transpose(second.expr)
                    operands = _operands(first.expr) + _operands(other)
                    first.expr = Hadamard(operands)
                    pieces.remove(second)
                    merged = True
                    break
            if merged:
                break
        if merged:
            continue
        vectors = [p for p in sharing if p.indices == (index,)]
        if not vectors or degree[index] > 3:
            where = "the result and " if index in free else ""
            raise NoMatrixForm(f"index {index} is shared by {where}{degree[index] - (index in free)} factors")
        vector = vectors[0]
        partner = [p for p in sharing if p is not vector][-1]
        new = context.new_index()
        vector.expr = Call("diag", vector.expr, MATRIX)
        vector.indices = (index, new)
        partner.indices = tuple(new if i == index else i for i in partner.indices)


def _operands(expr) -> tuple:
    return expr.operands if isinstance(expr, Hadamard) else (expr,)


def _render_term(term: Term, free: tuple[str, ...], context: _Context) -> Product:
    """One monomial as a product whose row is ``free[0]`` and column ``free[1]``."""
    scalars, pieces, divisors = _pieces(term, free, context)
    if not pieces and free:
        if scalars or divisors:
            raise NoMatrixForm(f"the term {_index_term(term)} lacks the index {free[0]} (a broadcast)")
        return Product(term.coeff, (Number(Fraction(1), _shape_of(free)),))
    _reduce_shared(pieces, free, context)
    degree = Counter(i for p in pieces for i in p.indices) + Counter(free)
    for index in free:
        if degree[index] < 2:
            raise NoMatrixForm(f"the term {_index_term(term)} lacks the index {index} (a broadcast)")
    for piece in list(pieces):
        lonely = [i for i in piece.indices if degree[i] == 1]
        if lonely and len(piece.indices) == 1:
            pieces.remove(piece)
            scalars.append(Call("sum", piece.expr, SCALAR))
        elif lonely:
            raise NoMatrixForm(f"the term {_index_term(term)} sums a matrix over one index alone")
    used: set[int] = set()

    def walk(index: str) -> tuple[list, str | None]:
        """Follow the path from ``index``: the oriented factors, and the free index it ends at
        (None at a vector, or back where a cycle began)."""
        items: list = []
        while True:
            nxt = next((n for n, p in enumerate(pieces) if n not in used and index in p.indices), None)
            if nxt is None:
                return items, index
            used.add(nxt)
            piece = pieces[nxt]
            if len(piece.indices) == 1:
                items.append(piece.expr)
                return items, None
            row, col = piece.indices
            items.append(piece.expr if row == index else transpose(piece.expr))
            index = col if row == index else row
            if index in free:
                return items, index

    chain: list = []
    if free:
        chain, end = walk(free[0])
        if len(free) == 2 and end != free[1]:
            back, _ = walk(free[1])
            chain += [transpose(e) for e in reversed(back)]
    for number, piece in enumerate(pieces):
        if number in used or len(piece.indices) != 1:
            continue
        used.add(number)  # a path closed by vectors: a^T X b
        rest, _ = walk(piece.indices[0])
        scalars.append(Product(Fraction(1), _fewer_transposes([transpose(piece.expr), *rest])))
    for number, piece in enumerate(pieces):
        if number in used:
            continue
        used.add(number)  # a cycle: tr(A B ...)
        rest, _ = walk(piece.indices[1])
        cycle = _fewer_transposes(list(_without_identities([piece.expr, *rest])))
        scalars.append(Call("tr", _flat(Product(Fraction(1), cycle)), SCALAR))
    factors = tuple(_flat_factor(f) for f in scalars) + _without_identities([x for f in chain for x in _unwrap(f)])
    return Product(term.coeff, factors, tuple(divisors))


def _without_identities(chain: list) -> tuple:
    """``X I`` is ``X``: identities next to another factor of the chain are dropped."""
    kept = [f for f in chain if not isinstance(f, Identity)]
    return tuple(kept if kept else chain)


def _transposes(items) -> int:
    return sum(isinstance(f, Transpose) or (isinstance(f, Inverse) and f.transposed) for f in items)


def _fewer_transposes(items: list) -> tuple:
    """A scalar ``a^T X^T b`` read backwards is ``b^T X a``: the direction with fewer transposes
    (a trace likewise: ``tr(A^T B^T) = tr(B A)``)."""
    backwards = [transpose(f) for f in reversed(items)]
    return tuple(backwards if _transposes(backwards) < _transposes(items) else items)


def _flat(product: Product):
    return product.factors[0] if len(product.factors) == 1 and product.coeff == 1 else product


def _flat_factor(expr):
    return _flat(expr) if isinstance(expr, Product) and not expr.divisors else expr


def _unwrap(expr) -> tuple:
    """A plain product's factors, spliced into the enclosing product."""
    if isinstance(expr, Product) and expr.coeff == 1 and not expr.divisors:
        return expr.factors
    return (expr,)


# -- collecting common factors -------------------------------------------------------------------------


def _split(product: Product) -> tuple[list, list]:
    scalars = [f for f in product.factors if f.shape == SCALAR]
    return scalars, [f for f in product.factors if f.shape != SCALAR]


def _common_length(sequences: list[list]) -> int:
    length = 0
    shortest = min(len(s) for s in sequences)
    while length < shortest and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


def _gcd(values: list[Fraction]) -> Fraction:
    numerator = math.gcd(*(v.numerator for v in values))
    denominator = math.lcm(*(v.denominator for v in values))
    return Fraction(numerator, denominator)


def _collect(products: list[Product]):
    """A sum of products, with a left and right factor common to every term taken out:
    ``A x + A^T x`` is ``(A + A^T) x``; ``-2 Phi^T y + 2 Phi^T Phi theta`` is
    ``2 Phi^T (Phi theta - y)`` (the common coefficient outside, positive terms first)."""
    if len(products) == 1:
        return products[0]
    split = [_split(p) for p in products]
    chains = [c for _, c in split]
    left = _common_length(chains)
    right = _common_length([list(reversed(c)) for c in chains])
    shortest = min(len(c) for c in chains)
    if shortest and all(c == chains[0] for c in chains):  # only the scalars differ: (a - b) x
        return _collect_scalars(products, split)
    left = max(min(left, shortest - 1), 0)
    right = max(min(right, shortest - left - 1), 0)
    if left == 0 and right == 0:
        return _collect_elementwise(products) or Sum(tuple(products))
    scale = _scale(products)
    inner = [
        Product(p.coeff / scale, tuple(s) + tuple(c[left : len(c) - right]), p.divisors)
        for p, (s, c) in zip(products, split)
    ]
    inner.sort(key=lambda p: p.coeff < 0)  # positive terms first: Phi theta - y
    middle = _collect(inner)
    if isinstance(middle, Sum):
        middle = _diag_of_sum(middle) or middle
    head, tail = chains[0][:left], chains[0][len(chains[0]) - right :]
    if isinstance(middle, Product):  # one term left after collecting: splice it in
        scalars, chain = _split(middle)
        return Product(scale * middle.coeff, (*scalars, *head, *chain, *tail), middle.divisors)
    return Product(scale, (*head, middle, *tail))


def _collect_scalars(products: list[Product], split: list[tuple[list, list]]) -> Product:
    """``sigmoid(a^T x) a - sigmoid(a^T x)^2 a`` is ``(sigmoid(a^T x) - sigmoid(a^T x)^2) a``."""
    scale = _scale(products)
    inner = [Product(p.coeff / scale, tuple(s), p.divisors) for p, (s, _) in zip(products, split)]
    inner.sort(key=lambda p: p.coeff < 0)
    return Product(scale, (Sum(tuple(inner)), *split[0][1]))


def _scale(products: list[Product]) -> Fraction:
    """The coefficient taken out of a sum: the terms' common factor, negative when all are."""
    scale = _gcd([p.coeff for p in products])
    return -scale if all(p.coeff < 0 for p in products) else scale


def _single_factor(product: Product):
    """The one factor of ``coeff * factor`` (no scalars, no divisors), else None."""
    if len(product.factors) == 1 and not product.divisors and product.factors[0].shape != SCALAR:
        return product.factors[0]
    return None


def _diag_of_sum(total: Sum) -> Product | None:
    """``diag(a) - diag(b)`` is ``diag(a - b)``."""
    singles = [_single_factor(t) for t in total.terms]
    if not all(isinstance(f, Call) and f.func == "diag" for f in singles):
        return None
    vectors = [Product(t.coeff, (f.arg,)) for t, f in zip(total.terms, singles)]
    inner = _collect(vectors)
    return Product(Fraction(1), (Call("diag", inner, MATRIX),))


def _collect_elementwise(products: list[Product]) -> Product | None:
    """An operand common to every elementwise product taken out: ``s - s ⊙ s`` is ``s ⊙ (1 - s)``."""
    singles = [_single_factor(p) for p in products]
    if any(f is None for f in singles):
        return None
    operands = [list(_operands(f)) for f in singles]
    common = next((o for o in operands[0] if all(o in rest for rest in operands[1:])), None)
    if common is None or all(len(o) == 1 for o in operands):
        return None
    remainders = []
    for product, ops in zip(products, operands):
        ops.remove(common)
        factor = Number(Fraction(1), common.shape) if not ops else ops[0] if len(ops) == 1 else Hadamard(tuple(ops))
        remainders.append(Product(product.coeff, (factor,)))
    remainders.sort(key=lambda p: p.coeff < 0)
    rest = _flat_factor(_collect(remainders))
    return Product(Fraction(1), (Hadamard((common, *_operands(rest))),))


# -- the public entry points ----------------------------------------------------------------------------


def matrix_expr(poly: Poly, names: set[str] | frozenset[str] = frozenset()):
    """The matrix-notation tree of ``poly`` (free indices: row, then column); ``names`` are the
    tensor names of the program (an input named ``I`` leaves no name for the identity).
    Raises :class:`NoMatrixForm` with the reason when there is none."""
    return _render_poly(poly, _Context(frozenset(names) | frozenset(poly.tensor_names())))


def matrix_text(poly: Poly, names: set[str] | frozenset[str] = frozenset()) -> str:
    """The matrix notation of ``poly``: ``A x + A^T x``, ``a b^T``, ``X^T diag(s) X``."""
    return to_text(matrix_expr(poly, names))


def matrix_text_with(poly: Poly, written: dict[str, Poly], names: set[str] | frozenset[str] = frozenset()) -> str:
    """The matrix notation of ``poly``, each name of ``written`` in it replaced by the matrix form of
    its poly, in brackets: ``_r0^T A / sqrt(_r0^T _r0)`` with ``_r0_i = A_ij x_j - b_i`` is
    ``(A x - b)^T A / sqrt((A x - b)^T (A x - b))``, a difference kept whole where the multiplied-out
    form (``x^T A^T A x - 2 (b^T A x) + b^T b``) cancels near a fit."""
    every = frozenset(names) | frozenset(written)
    forms = {name: matrix_expr(value, every) for name, value in written.items()}
    return to_text(_replaced(matrix_expr(poly, every), forms))


def _replaced(expr, forms: dict):
    """``expr`` with each symbol named in ``forms`` replaced by its tree."""
    if isinstance(expr, Symbol):
        return forms.get(expr.name, expr)
    if isinstance(expr, Transpose):
        inner = _replaced(expr.operand, forms)
        return Transpose(inner) if isinstance(inner, Sum) else transpose(inner)
    if isinstance(expr, Call):
        return Call(expr.func, _replaced(expr.arg, forms), expr.shape)
    if isinstance(expr, Power):
        return Power(_replaced(expr.base, forms), expr.exponent, expr.shape)
    if isinstance(expr, ElementwisePower):
        return ElementwisePower(_replaced(expr.base, forms), expr.exponent)
    if isinstance(expr, Hadamard):
        return Hadamard(tuple(_replaced(o, forms) for o in expr.operands))
    if isinstance(expr, Product):
        return Product(
            expr.coeff,
            tuple(_replaced(f, forms) for f in expr.factors),
            tuple(_replaced(d, forms) for d in expr.divisors),
        )
    if isinstance(expr, Sum):
        return Sum(tuple(_replaced(t, forms) for t in expr.terms))
    return expr  # Number, Identity, Inverse


__all__ = ["NoMatrixForm", "matrix_expr", "matrix_text", "matrix_text_with"]
