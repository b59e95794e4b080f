"""Matrix-notation claims (``A x + A^T x``, ``X^T (sigmoid(X w) - y)``) read as index notation.

``translate(text, ranks, indices)`` parses the matrix notation of the README with its own small
grammar, infers each subexpression's shape from the input ranks (0 scalar, 1 column vector,
2 matrix) and writes it in einderiv's index notation over ``indices`` (the first is the row
index, the second the column index), with fresh summed indices for every contraction:
``A x`` over ``k`` is ``A_ka x_a``; ``tr(M)`` is ``sum_a(M_aa)``; ``diag(v)`` is ``delta_kl v_k``.
The result is checked by compiling and evaluating that text, never by ``eval``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass

from .errors import EinderivError
from .functions import FUNCTIONS
from .ir import format_indices
from .matrix_syntax import (
    Call,
    Divide,
    Hadamard,
    Inverse,
    Name,
    Neg,
    Number,
    Power,
    Product,
    Sum,
    Transpose,
    parse_matrix,
)

#: Functions of a whole vector or matrix (the elementwise ones are einderiv.functions.FUNCTIONS).
STRUCTURAL = ("tr", "det", "logdet", "inv", "diag", "sum", "softmax", "logsumexp")
IDENTITY = "I"
_LETTERS = "ijklmnpqrstuvwabcdefghoxyz"

# -- shapes ----------------------------------------------------------------------------------

SCALAR, COLUMN, ROW, MATRIX = (False, False), (True, False), (False, True), (True, True)
_SHAPE_WORDS = {SCALAR: "a scalar", COLUMN: "a column vector", ROW: "a row vector", MATRIX: "a matrix"}


@dataclass(frozen=True)
class Shaped:
    """A node's shape (has a row index, has a column index) and whether its index form may have a
    term lacking one of its free indices (``1 - s``: the 1 is broadcast), which a contraction of two
    such operands must then sum explicitly (``sum_a(...)``)."""

    shape: tuple[bool, bool]
    partial: bool = False


def _word(shape: tuple[bool, bool]) -> str:
    return _SHAPE_WORDS[shape]


class _Reader:
    """Shape inference and index-notation output for one claim."""

    def __init__(self, source: str, ranks: Mapping[str, int], free: Sequence[str]):
        self.source = source
        self.ranks = dict(ranks)
        self.free = tuple(free)
        self.braced = any(len(i) != 1 for i in self.free)
        self.used: set[str] = set(self.free)
        self.shapes: dict[int, Shaped] = {}
        self.rewritten: dict[int, object] = {}  # A(x) read as a product, X^-1 as an inverse
        self.explicit = 0  # > 0 inside softmax/logsumexp, which are elementwise over other indices

    def fail(self, node, message: str) -> EinderivError:
        return EinderivError(f"matrix claim {self.source.strip()!r}, column {node.column}: {message}")

    # -- fresh indices and tensor text --------------------------------------------------------
    def fresh(self) -> str:
        for letter in _LETTERS:
            if letter not in self.used:
                self.used.add(letter)
                return letter
        number = 1
        while f"a{number}" in self.used:
            number += 1
        self.used.add(f"a{number}")
        self.braced = True
        return f"a{number}"

    def subscript(self, indices: Sequence[str]) -> str:
        if not indices:
            return ""
        return format_indices(tuple(indices), braced=self.braced)

    # -- shapes ---------------------------------------------------------------------------------
    def shaped(self, node) -> Shaped:
        key = id(node)
        if key not in self.shapes:
            self.shapes[key] = self._infer(node)
        return self.shapes[key]

    def rank(self, node: Name) -> int:
        if node.name in self.ranks:
            rank = self.ranks[node.name]
            if rank > 2:
                raise self.fail(node, f"{node.name!r} has {rank} indices: matrix notation covers ranks 0, 1 and 2")
            return rank
        if node.name == IDENTITY:
            return -1
        if node.name in FUNCTIONS or node.name in STRUCTURAL:
            raise self.fail(node, f"{node.name!r} is a function: write {node.name}(...)")
        known = ", ".join(sorted(self.ranks)) or "none"
        raise self.fail(node, f"unknown name {node.name!r} (inputs: {known}; I is the identity)")

    def _infer(self, node) -> Shaped:
        if isinstance(node, Number):
            return Shaped(SCALAR)
        if isinstance(node, Name):
            rank = self.rank(node)
            return Shaped(MATRIX if rank in (-1, 2) else COLUMN if rank == 1 else SCALAR)
        if isinstance(node, Neg):
            return self.shaped(node.operand)
        if isinstance(node, Transpose):
            inner = self.shaped(node.operand)
            return Shaped(inner.shape[::-1], inner.partial)
        if isinstance(node, Inverse):
            self.named_matrix(node.operand, node, "an inverse")
            return Shaped(MATRIX)
        if isinstance(node, Sum):
            return self._infer_sum(node)
        if isinstance(node, Product):
            return self._infer_product(node)
        if isinstance(node, Hadamard):
            left, right = self.shaped(node.left), self.shaped(node.right)
            if left.shape != right.shape:
                raise self.fail(
                    node, f"'⊙' needs operands of the same shape, not {_word(left.shape)} and {_word(right.shape)}"
                )
            return Shaped(left.shape, left.partial and right.partial)
        if isinstance(node, Divide):
            top, bottom = self.shaped(node.numerator), self.shaped(node.denominator)
            if bottom.shape != SCALAR:
                raise self.fail(node.denominator, f"division only by a scalar, not by {_word(bottom.shape)}")
            return top
        if isinstance(node, Power):
            base = self.shaped(node.base)
            if node.exponent == "-1" and base.shape != SCALAR:
                return self._rewrite(node, Inverse(node.base, False, node.column))
            if base.shape != SCALAR:
                raise self.fail(
                    node,
                    f"'^{node.exponent}' of {_word(base.shape)}: powers apply to scalars only "
                    "(write X^-1 for an inverse, A A for a product, x ⊙ x for elementwise squares)",
                )
            return base
        return self._infer_call(node)

    def _infer_sum(self, node: Sum) -> Shaped:
        shapes = [self.shaped(t) for t in node.terms]
        widest = max((s.shape for s in shapes), key=sum)
        for term, shaped in zip(node.terms, shapes):
            if shaped.shape not in (widest, SCALAR):
                raise self.fail(term, f"cannot add {_word(shaped.shape)} and {_word(widest)}")
        partial = widest != SCALAR and any(s.partial or s.shape != widest for s in shapes)
        return Shaped(widest, partial)

    def _infer_product(self, node: Product) -> Shaped:
        left, right = self.shaped(node.left), self.shaped(node.right)
        if left.shape == SCALAR:
            return right
        if right.shape == SCALAR:
            return left
        if left.shape[1] != right.shape[0]:
            raise self.fail(
                node.right,
                f"{_word(left.shape)} times {_word(right.shape)}: the sizes do not fit "
                "(a column vector can only be followed by a row vector, as in a b^T)",
            )
        return Shaped((left.shape[0], right.shape[1]), left.partial or right.partial)

    def named_matrix(self, operand, node, what: str) -> str:
        if not isinstance(operand, Name) or operand.name not in self.ranks:
            raise self.fail(node, f"{what} applies to the name of a square matrix input, as in X^-1 or det(X)")
        if self.rank(operand) != 2:
            raise self.fail(node, f"{what} applies to a matrix, and {operand.name!r} is not one")
        return operand.name

    def _infer_call(self, node: Call) -> Shaped:
        name = node.function
        if name == "inv":
            self.named_matrix(node.arg, node, "an inverse")
            return Shaped(MATRIX)
        if name in ("det", "logdet"):
            self.named_matrix(node.arg, node, f"{name}(...)")
            return Shaped(SCALAR)
        if name in FUNCTIONS:
            inner = self.shaped(node.arg)
            return Shaped(inner.shape)
        if name not in STRUCTURAL:
            if name in self.ranks or name == IDENTITY:
                return self._rewrite(node, Product(Name(name, node.column), node.arg, node.column))
            known = ", ".join([*sorted(FUNCTIONS), *STRUCTURAL])
            raise self.fail(node, f"unknown function {name!r} (known: {known})")
        inner = self.shaped(node.arg)
        if name == "tr":
            if inner.shape != MATRIX:
                raise self.fail(node, f"tr(...) of {_word(inner.shape)}: a trace needs a matrix")
            return Shaped(SCALAR)
        if name == "sum":
            return Shaped(SCALAR)
        if inner.shape not in (COLUMN, ROW):
            raise self.fail(node, f"{name}(...) of {_word(inner.shape)}: it takes a vector")
        if name == "diag":
            return Shaped(MATRIX)
        return Shaped(inner.shape if name == "softmax" else SCALAR)

    def _rewrite(self, node, replacement) -> Shaped:
        """Read ``node`` as ``replacement`` from now on (``A(x + y)``: input A times the parenthesis)."""
        self.rewritten[id(node)] = replacement
        return self.shaped(replacement)

    # -- index notation -------------------------------------------------------------------------
    def emit(self, node, row: str | None, col: str | None) -> tuple[str, int]:
        """The node in index notation with the given row and column indices, and its precedence
        (0 a sum, 1 a leading minus, 2 a product, 3 an atom)."""
        node = self.rewritten.get(id(node), node)
        if isinstance(node, Number):
            return node.text, 1 if node.text.startswith("-") else 3
        if isinstance(node, Name):
            if node.name == IDENTITY and node.name not in self.ranks:
                return "delta" + self.subscript((row, col)), 3
            present = [i for i in (row, col) if i is not None]
            return node.name + self.subscript(present), 3
        if isinstance(node, Neg):
            return "-" + self.factor(node.operand, row, col), 1
        if isinstance(node, Transpose):
            return self.emit(node.operand, col, row)
        if isinstance(node, Inverse):
            pair = (col, row) if node.transposed else (row, col)
            return f"inv({node.operand.name})" + self.subscript(pair), 3
        if isinstance(node, Sum):
            return self._emit_sum(node, row, col), 0
        if isinstance(node, Product):
            return self._emit_product(node, row, col)
        if isinstance(node, Hadamard):
            return f"{self.factor(node.left, row, col, first=True)} {self.factor(node.right, row, col)}", 2
        if isinstance(node, Divide):
            top = self.factor(node.numerator, row, col, first=True)
            return f"{top} / ({self.emit(node.denominator, None, None)[0]})", 2
        if isinstance(node, Power):
            return f"{self.factor(node.base, None, None, atom=True)}^{node.exponent}", 2
        return self._emit_call(node, row, col)

    def factor(self, node, row, col, first: bool = False, atom: bool = False) -> str:
        text, precedence = self.emit(node, row, col)
        needed = 3 if atom else 1 if first else 2
        return text if precedence >= needed else f"({text})"

    def _own(self, node, row, col) -> tuple[str | None, str | None]:
        shape = self.shaped(node).shape
        return (row if shape[0] else None), (col if shape[1] else None)

    def _emit_sum(self, node: Sum, row, col) -> str:
        parts = [self.factor(node.terms[0], *self._own(node.terms[0], row, col), first=True)]
        for term, sign in zip(node.terms[1:], node.signs[1:]):
            parts.append(f"{'+' if sign > 0 else '-'} {self.factor(term, *self._own(term, row, col))}")
        return " ".join(parts)

    def _emit_product(self, node: Product, row, col) -> tuple[str, int]:
        left, right = self.shaped(node.left), self.shaped(node.right)
        if left.shape == SCALAR or right.shape == SCALAR:
            lrow, lcol = self._own(node.left, row, col)
            rrow, rcol = self._own(node.right, row, col)
            return f"{self.factor(node.left, lrow, lcol, first=True)} {self.factor(node.right, rrow, rcol)}", 2
        inner = self.fresh() if left.shape[1] else None
        text = f"{self.factor(node.left, row if left.shape[0] else None, inner, first=True)} " + self.factor(
            node.right, inner, col if right.shape[1] else None
        )
        if inner is not None and (self.explicit or (left.partial and right.partial) or _captured(text, inner)):
            return f"sum{self.subscript((inner,))}({text})", 3
        return text, 2

    def _emit_call(self, node: Call, row, col) -> tuple[str, int]:
        name = node.function
        if name in ("inv", "det", "logdet"):
            matrix = node.arg.name
            return (f"inv({matrix})" + self.subscript((row, col)) if name == "inv" else f"{name}({matrix})"), 3
        if name in FUNCTIONS:
            return f"{name}({self.emit(node.arg, row, col)[0]})", 3
        inner = self.shaped(node.arg).shape
        if name == "tr":
            a = self.fresh()
            return f"sum{self.subscript((a,))}({self.emit(node.arg, a, a)[0]})", 3
        if name == "sum":
            over = [self.fresh() if present else None for present in inner]
            present = [i for i in over if i is not None]
            if not present:
                return self.emit(node.arg, None, None)
            return f"sum{self.subscript(present)}({self.emit(node.arg, *over)[0]})", 3
        if name == "diag":
            index = row if row is not None else col
            vector = (index, None) if inner == COLUMN else (None, index)
            if row == col:  # the diagonal of diag(v) is v
                return self.factor(node.arg, *vector, atom=True), 3
            return f"delta{self.subscript((row, col))} {self.factor(node.arg, *vector)}", 2
        index = (row if inner == COLUMN else col) if name == "softmax" else self.fresh()
        vector = (index, None) if inner == COLUMN else (None, index)
        self.explicit += 1  # softmax_i(A_ij x_j) would be elementwise over j: write sum_j(A_ij x_j)
        try:
            arg = self.emit(node.arg, *vector)[0]
        finally:
            self.explicit -= 1
        return f"{name}{self.subscript((index,))}({arg})", 3


@dataclass(frozen=True)
class Translation:
    """A matrix claim read as index notation: ``rhs`` has the free ``indices`` (rows first)."""

    source: str
    rhs: str
    indices: tuple[str, ...]
    shape: tuple[bool, bool]


def translate(text: str, ranks: Mapping[str, int], indices: Sequence[str]) -> Translation:
    """Read the matrix-notation ``text`` over inputs of the given ranks as index notation with the
    free ``indices``: none (the claim must be a scalar), one (a column or a row vector: the same
    array) or two (a matrix: rows ``indices[0]``, columns ``indices[1]``)."""
    indices = tuple(indices)
    if len(indices) > 2:
        raise EinderivError(
            f"the derivative has {len(indices)} free indices ({', '.join(indices)}): a matrix claim describes at "
            "most two (a scalar, a vector or a matrix); write the claim in index notation"
        )
    node = parse_matrix(text)
    reader = _Reader(text, ranks, indices)
    shape = reader.shaped(node).shape
    wanted = {0: (SCALAR,), 1: (COLUMN, ROW), 2: (MATRIX,)}[len(indices)]
    if shape == SCALAR and _constant(node):  # a number stands for that constant in every entry
        return Translation(text, reader.emit(node, None, None)[0], indices, shape)
    if shape not in wanted:
        expected = " or ".join(_word(s) for s in wanted)
        where = f" ({'index' if len(indices) == 1 else 'indices'} {', '.join(indices)})" if indices else ""
        raise EinderivError(f"matrix claim {text.strip()!r} is {_word(shape)}, but the derivative is {expected}{where}")
    row = indices[0] if shape[0] else None
    col = indices[-1] if shape[1] else None
    rhs, _ = reader.emit(node, row, col)
    return Translation(text, rhs, indices, shape)


def _captured(text: str, index: str) -> bool:
    """Whether a group in the product ``text`` would contract ``index`` on its own (a Hadamard
    product inside a parenthesis: ``A_ik (A_kj A_kj - B_kj)``), so the sum must be written."""
    from .lower import contracted_in_groups
    from .parser import parse

    return index in contracted_in_groups(parse("f = " + text).output.rhs)


def _constant(node) -> bool:
    """Whether a parsed claim is made of numbers alone (``1``, ``-(1/3)``): no name, no call."""
    if isinstance(node, (Name, Call)):
        return False
    children = [getattr(node, f.name) for f in fields(node)] if is_dataclass(node) else []
    for child in children:
        items = child if isinstance(child, tuple) else (child,)
        if any(is_dataclass(item) and not _constant(item) for item in items):
            return False
    return True
