"""Matrix-notation claims (``A x + A^T x``, ``X^T (sigmoid(X w) - y)``) read as index notation.

``translate(text, ranks, indices)`` parses the matrix notation of the README with its own small
grammar, infers each subexpression's shape from the input ranks (0 scalar, 1 column vector,
2 matrix) and writes it in einderiv's index notation over ``indices`` (the first is the row
index, the second the column index), with fresh summed indices for every contraction:
``A x`` over ``k`` is ``A_ka x_a``; ``tr(M)`` is ``sum_a(M_aa)``; ``diag(v)`` is ``delta_kl v_k``.
The result is checked by compiling and evaluating that text, never by ``eval``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass

from ..elementwise import FUNCTIONS, in_matrix_notation
from ..errors import EinderivError
from ..glyphs import format_indices
from ..lower import contracted_in_groups
from ..parser import closest_name, parse
from .syntax import (
    Call,
    Divide,
    ElementwiseDivide,
    Hadamard,
    Inverse,
    MatMul,
    Name,
    Neg,
    Number,
    Power,
    Product,
    Sum,
    Transpose,
    below_transposes,
    lift_signs,
    parse_matrix,
)

#: Functions of a whole vector or matrix (the elementwise ones are the ``matrix`` names of
#: einderiv.functions' entries).
STRUCTURAL = ("tr", "det", "logdet", "logabsdet", "inv", "diag", "sum", "mean", "softmax", "logsumexp", "norm2")
IDENTITY = "I"
_LETTERS = "ijklmnpqrstuvwabcdefghoxyz"

# -- shapes ----------------------------------------------------------------------------------

SCALAR, COLUMN, ROW, MATRIX = (False, False), (True, False), (False, True), (True, True)
_SHAPE_WORDS = {SCALAR: "a scalar", COLUMN: "a column vector", ROW: "a row vector", MATRIX: "a matrix"}


_NO_ONES = (
    "a number is a scalar: it has no transpose, and a 1 after a vector or matrix multiplies by 1; "
    "einderiv has no ones vector, so write sum(x) for 1^T x, and sum(A) for 1^T A 1"
)


@dataclass(frozen=True)
class Shaped:
    """A node's shape (has a row index, has a column index) and whether its index form may have a
    term lacking one of its free indices (``1 - s``: the 1 is broadcast), which a contraction of two
    such operands must then sum explicitly (``sum_a(...)``)."""

    shape: tuple[bool, bool]
    partial: bool = False


def _word(shape: tuple[bool, bool]) -> str:
    return _SHAPE_WORDS[shape]


class Reader:
    """Shape inference and index-notation output for one claim, or for the statements of a
    program (``program=True``: ``inv``, ``det``, ``logdet``, ``logabsdet`` of any matrix expression, and
    elementwise products nested in groups, become statements of their own)."""

    def __init__(
        self,
        source: str,
        ranks: Mapping[str, int],
        free: Sequence[str],
        program: bool = False,
        taken: Sequence[str] = (),
        what: str | None = None,
    ):
        self.source = source
        self.ranks = dict(ranks)
        self.free = tuple(free)
        self.braced = any(len(i) != 1 for i in self.free)
        self.used: set[str] = set(self.free)
        self.shapes: dict[int, Shaped] = {}
        self.rewritten: dict[int, object] = {}  # A(x) read as a product, X^-1 as an inverse
        self.explicit = 0  # > 0 inside softmax/logsumexp, which are elementwise over other indices
        self.reducing = 0  # > 0 inside the argument of sum(...) or mean(...)
        self.program = program
        self.what = what or ("matrix notation" if program else "matrix claim")
        self.defined: dict[str, tuple[bool, bool]] = {}  # a program's statements so far: name -> shape
        self.penalties: Counter = Counter()  # readings that type-check but are unlikely (rank inference)
        self.outer: set[int] = set()  # ids of outer products (a column times a row)
        self.safe: set[str] = set(self.free)  # indices free everywhere: the statement's own, or bound by sum_
        self.nested = 0  # > 0 inside a group: a parenthesised sum, a call's argument, a power, a divisor
        self.root = None  # the statement's right-hand side (below its transposes)
        self.hoisted: dict[int, Name] = {}
        self.statements: list[str] = []  # a program's statements in index notation, in order
        self.taken: set[str] = set(taken) | set(self.ranks)
        #: whether the statement being read writes '@': then a vector added to a row or a matrix
        #: in any sum of it is NumPy's 1-D array, also in a group ('@' applied to it, X @ (W + b))
        self.numpy_statement = False

    def fail(self, node, message: str) -> EinderivError:
        """The error, marked with whether it is inside a sum's or mean's argument (rank inference
        never repairs such a reading by other ranks: ``sum(x^2)`` is not the sum of a scalar)."""
        what = self.what
        line = self.source.strip()
        if "\n" in line or len(line) > 80:
            error = EinderivError(f"{what}, column {node.column}: {message}")
        else:
            error = EinderivError(f"{what} {line!r}, column {node.column}: {message}")
        error.in_reduction = self.reducing > 0
        return error

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
    def read(self, node) -> Shaped:
        """The shape of a statement's right-hand side ``node``, read as a whole."""
        self.numpy_statement = _holds(node, MatMul)
        return self.shaped(node)

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
        if in_matrix_notation(node.name) is not None or node.name in STRUCTURAL:
            raise self.fail(node, f"{node.name!r} is a function: write {node.name}(...)")
        known = ", ".join(sorted(self.ranks)) or "none"
        raise self.fail(node, f"unknown name {node.name!r} (inputs: {known}; I is the identity)")

    def _infer(self, node) -> Shaped:
        if isinstance(node, Number):
            return Shaped(SCALAR)
        if isinstance(node, Name):
            if node.name in self.defined:
                return Shaped(self.defined[node.name])
            rank = self.rank(node)
            return Shaped(MATRIX if rank in (-1, 2) else COLUMN if rank == 1 else SCALAR)
        if isinstance(node, Neg):
            return self.shaped(node.operand)
        if isinstance(node, Transpose):
            if isinstance(below_transposes(node.operand), Number):
                raise self.fail(node, _NO_ONES)
            inner = self.shaped(node.operand)
            if inner.shape == SCALAR and _names_alone(node.operand):
                # x^T, (x - mu)^T: nobody transposes a scalar (x^T w is a product: its ^T may be)
                self.penalties["a transposed scalar"] += 1
            return Shaped(inner.shape[::-1], inner.partial)
        if isinstance(node, Inverse):
            return Shaped(self.matrix_argument(node.operand, node, "an inverse").shape)
        if isinstance(node, Sum):
            return self._infer_sum(node)
        if isinstance(node, MatMul):
            return self._infer_matmul(node)
        if isinstance(node, Product):
            return self._infer_product(node)
        if isinstance(node, (Hadamard, ElementwiseDivide)):
            divide = isinstance(node, ElementwiseDivide)
            left = self.shaped(node.numerator if divide else node.left)
            right = self.shaped(node.denominator if divide else node.right)
            if left.shape != right.shape and SCALAR not in (left.shape, right.shape):
                raise self.fail(
                    node,
                    f"'{'./' if divide else '⊙'}' needs operands of the same shape, not {_word(left.shape)} and "
                    f"{_word(right.shape)}",
                )
            shape = right.shape if left.shape == SCALAR else left.shape
            if divide:
                return Shaped(shape, left.partial and right.shape == SCALAR)
            if SCALAR in (left.shape, right.shape):
                return Shaped(shape, left.partial or right.partial)
            return Shaped(left.shape, left.partial and right.partial)
        if isinstance(node, Divide):
            top, bottom = self.shaped(node.numerator), self.shaped(node.denominator)
            if bottom.shape != SCALAR:
                hint = (
                    ": write ./ to divide elementwise"
                    if top.shape == bottom.shape
                    else ": a denominator of more than one factor needs brackets, as in x / (x^T x)"
                    if bottom.shape == ROW
                    else ""
                )
                raise self.fail(node.denominator, f"division only by a scalar, not by {_word(bottom.shape)}{hint}")
            return top
        if isinstance(node, Power):
            base = self.shaped(node.base)
            if node.elementwise:
                return Shaped(base.shape)
            if node.exponent == "-1" and base.shape != SCALAR:
                return self._rewrite(node, Inverse(node.base, False, node.column))
            if node.exponent == "0" and not isinstance(node.base, Number):
                # NumPy's matrix_power(A, 0) is the identity, a scalar's 0th power 1; a reading
                # that picks whichever shape avoids an error would choose silently
                raise self.fail(
                    node, "'^0' is the identity for a matrix and 1 for a scalar: write I or 1 for the one meant"
                )
            whole = node.exponent.lstrip("-")
            if base.shape == MATRIX and whole.isdigit() and 1 <= int(whole) <= 8:
                # A^3 is the matrix power A A A, A^-2 that of the inverse: inv(A) inv(A), as NumPy's
                # matrix_power(A, -2) and the Matrix Cookbook's A^-2 mean
                factor = Inverse(node.base, False, node.column) if node.exponent.startswith("-") else node.base
                product = factor
                for _ in range(int(whole) - 1):
                    product = Product(product, factor, node.column)
                return self._rewrite(node, product)
            if base.shape == MATRIX and whole.isdigit() and int(whole) > 8:
                raise self._power_failure(
                    node,
                    f"'^{node.exponent}' of a matrix: matrix powers go from A^-8 to A^8 (a product of that "
                    "many factors); name a power and multiply it (B = A^8; f = tr(B A)), or write A .^ n for "
                    "elementwise powers",
                )
            if base.shape != SCALAR:
                raise self._power_failure(
                    node,
                    f"'^{node.exponent}' of {_word(base.shape)}: matrix powers are whole numbers from -8 to 8 "
                    "but 0, other powers apply to scalars only "
                    "(write X^-1 for an inverse, A^2 for a product, x .^ 2 for elementwise squares)",
                )
            return base
        return self._infer_call(node)

    def _infer_sum(self, node: Sum) -> Shaped:
        shapes = [self.shaped(t) for t in node.terms]
        widest = max((s.shape for s in shapes), key=sum)
        numpy = self.numpy_statement or any(_holds(t, MatMul) for t in node.terms)
        wider = any(s.shape in (ROW, MATRIX) for s in shapes)
        if numpy and wider and any(s.shape == COLUMN for s in shapes):
            # beside an '@' product, a vector is a NumPy 1-D array: added to a row (x @ W + b) or
            # broadcast along a matrix's rows (X @ W + b, A @ x + B), it runs along the last axis
            terms = tuple(Transpose(t, t.column) if s.shape == COLUMN else t for t, s in zip(node.terms, shapes))
            return self._rewrite(node, Sum(terms, node.signs, node.column))
        wide = set().union(*(_names_outside_reductions(t) for t, s in zip(node.terms, shapes) if s.shape != SCALAR))
        centring = bool(wide & set().union(*map(_names_in_reductions, node.terms)))
        for term, shaped in zip(node.terms, shapes):
            if numpy and widest == MATRIX and shaped.shape == ROW:
                continue  # a NumPy 1-D array broadcast along the rows of X @ W
            if shaped.shape not in (widest, SCALAR):
                hint = ""
                if {shaped.shape, widest} == {COLUMN, ROW}:  # x^T W + b, as NumPy code means it
                    column = next(t for t, s in zip(node.terms, shapes) if s.shape == COLUMN)
                    transpose = f"write {column.name}^T" if isinstance(column, Name) else "transpose it (^T)"
                    hint = f": a vector is a column in matrix notation; {transpose} to add it as a row"
                    if any(_holds(t, Product) for t in node.terms):
                        hint += ", or write the product with '@' (x @ W + b) to read vectors as NumPy's 1-D arrays"
                raise self.fail(term, f"cannot add {_word(shaped.shape)} and {_word(widest)}{hint}")
            # x - mean(x) centres a vector, and exp(z) / sum(exp(z)) normalises one: in such a sum
            # a reduction is broadcast onto the vector (x - mean(x) - mean(z) too); in sum(q) + c,
            # which reduces nothing the vector holds, c is a scalar beside a sum
            reduction = isinstance(term, Call) and term.function in REDUCING and centring
            if shaped.shape == SCALAR and widest != SCALAR and not _constant(term) and not reduction:
                # w^T x + c: c is more likely a scalar; x - mean(x) centres a vector; a name added
                # to a vector (X w + b with b a scalar, a bias) is a milder break than X or w made a
                # scalar, onto a matrix it is not (y - X w with y a scalar and w a scalar)
                named = widest != MATRIX and (
                    isinstance(term, Name) or (isinstance(term, Neg) and isinstance(term.operand, Name))
                )
                self.penalties["a scalar name broadcast in a sum" if named else "a scalar broadcast in a sum"] += 1
        partial = widest != SCALAR and any(s.partial or s.shape != widest for s in shapes)
        return Shaped(widest, partial)

    def _infer_matmul(self, node: MatMul) -> Shaped:
        """``L @ R`` read as NumPy reads it: a vector on the left is a row (``x @ A @ x`` is x^T A x,
        ``x @ y`` the inner product) and one on the right a column, and a scalar operand is an
        error, as in NumPy."""
        for operand in (node.left, node.right):
            if self.shaped(operand).shape == SCALAR:
                raise self.fail(operand, "'@' takes vectors and matrices, not a scalar (as NumPy does): write s A")
        left = node.left if self.shaped(node.left).shape != COLUMN else Transpose(node.left, node.left.column)
        # a row on the right is a NumPy 1-D array too (A @ (x @ W + b)): there it is a column
        right = node.right if self.shaped(node.right).shape != ROW else Transpose(node.right, node.right.column)
        return self._rewrite(node, Product(left, right, node.column))

    def _infer_product(self, node: Product) -> Shaped:
        if isinstance(node.right, Number) and node.right.text == "1" and not isinstance(node.left, Number):
            raise self.fail(node.right, _NO_ONES)  # x^T 1, A 1: a ones vector, which matrix notation lacks
        left, right = self.shaped(node.left), self.shaped(node.right)
        if left.shape == SCALAR:
            return right
        if right.shape == SCALAR:
            if isinstance(self.rewritten.get(id(node.right), node.right), Name):
                self.penalties["a scalar name after a vector or matrix"] += 1
            return left
        if left.shape[1] and right.shape[0] and (id(node.left) in self.outer or id(node.right) in self.outer):
            self.penalties["an outer product multiplied further"] += 1
        if left.shape == COLUMN and right.shape == ROW:
            self.outer.add(id(node))
        if left.shape[1] != right.shape[0]:
            raise self.fail(
                node.right,
                f"{_word(left.shape)} times {_word(right.shape)}: the sizes do not fit "
                "(a column vector can only be followed by a row vector, as in a b^T)",
            )
        return Shaped((left.shape[0], right.shape[1]), left.partial or right.partial)

    def matrix_argument(self, operand, node, what: str) -> Shaped:
        """The shape of a matrix function's argument: in a claim, the name of a matrix input; in a
        program, any square matrix expression (or a scalar: a 1x1 matrix)."""
        if not self.program:
            self.named_matrix(operand, node, what)
            return Shaped(MATRIX)
        inner = self.shaped(operand)
        if inner.shape == SCALAR and isinstance(below_transposes(operand), Name):
            self.penalties["a matrix function of a scalar name"] += 1
        elif inner.shape != MATRIX and inner.shape != SCALAR:
            raise self.fail(node, f"{what} of {_word(inner.shape)}: it takes a square matrix")
        return inner

    def named_matrix(self, operand, node, what: str) -> str:
        if not isinstance(operand, Name) or operand.name not in self.ranks:
            raise self.fail(node, f"{what} applies to the name of a square matrix input, as in X^-1 or det(X)")
        if self.rank(operand) != 2:
            raise self.fail(node, f"{what} applies to a matrix, and {operand.name!r} is not one")
        return operand.name

    def _infer_call(self, node: Call) -> Shaped:
        name = node.function
        if name == "inv":
            return Shaped(self.matrix_argument(node.arg, node, "an inverse").shape)
        if name in ("det", "logdet", "logabsdet"):
            self.matrix_argument(node.arg, node, f"{name}(...)")
            return Shaped(SCALAR)
        if in_matrix_notation(name) is not None:
            inner = self.shaped(node.arg)
            return Shaped(inner.shape)
        if name not in STRUCTURAL:
            if name in self.ranks or name in self.defined or name == IDENTITY:
                return self._rewrite(node, Product(Name(name, node.column), node.arg, node.column))
            known = ", ".join([*sorted(row.matrix for row in FUNCTIONS.values()), *STRUCTURAL])
            close = function_suggestion(name)
            raise self.fail(node, f"unknown function {name!r}{close} (known: {known})")
        reducing = name in ("sum", "mean")
        self.reducing += reducing
        try:
            inner = self.shaped(node.arg)
        finally:
            self.reducing -= reducing
        if name == "tr" and inner.shape == SCALAR:  # a 1x1 product: tr(x^T w)
            if isinstance(below_transposes(node.arg), Name) or not self._holds_an_array(node.arg):
                # tr(s), and tr(m m) or tr(m^3) with m a scalar: the trace of what no array is in
                self.penalties["a matrix function of a scalar name"] += 1
            return Shaped(SCALAR)
        if name == "norm2":
            if inner.shape == MATRIX:
                raise self.fail(node, "norm2(...) of a matrix: write sqrt(sum(X .* X)) for the Frobenius norm")
            if inner.shape == SCALAR:
                self.penalties["a reduction of a scalar"] += 1  # norm2(x - mean(x)): x is a vector
                return self._rewrite(node, Call(FUNCTIONS["abs"].matrix, node.arg, node.column))
            pair = (Transpose(node.arg, node.column), node.arg)
            return self._rewrite(
                node,
                Call(
                    FUNCTIONS["sqrt"].matrix,
                    Product(*(pair if inner.shape == COLUMN else pair[::-1]), node.column),
                    node.column,
                ),
            )
        if name == "tr":
            if inner.shape != MATRIX:
                raise self.fail(node, f"tr(...) of {_word(inner.shape)}: a trace needs a matrix")
            return Shaped(SCALAR)
        if name in ("sum", "mean"):
            if inner.shape == SCALAR:
                self.penalties["a reduction of a scalar"] += 1  # x - mean(x): x is a vector
            return Shaped(SCALAR)
        if inner.shape not in (COLUMN, ROW):
            hint = " (a matrix's diagonal is A_ii in index notation)" if name == "diag" else ""
            error = self.fail(node, f"{name}(...) of {_word(inner.shape)}: it takes a vector{hint}")
            if inner.shape == MATRIX:  # diag(A) is not repaired by reading A as a vector
                error.held_names = _shaping_names(node.arg)
            raise error
        if name == "diag":
            return Shaped(MATRIX)
        return Shaped(inner.shape if name == "softmax" else SCALAR)

    def _holds_an_array(self, node) -> bool:
        """Whether a vector, a matrix or an earlier statement is written in ``node`` (``x^T w``
        holds two, ``m m`` with m a scalar input none; ``s s`` with ``s = x^T x`` its statement,
        whose shape its own text decides)."""
        if isinstance(node, Name):
            return node.name in self.defined or node.name == IDENTITY or self.ranks.get(node.name, 0) != 0
        return any(self._holds_an_array(child) for child in _children(node))

    def _power_failure(self, node: Power, message: str) -> EinderivError:
        """The error for a power no matrix or vector has (``A^(1/2)``, ``A^9``, ``(X^T X)^(1/2)``,
        ``x^-2``), marked with the names its base is made of: rank inference does not repair it by
        reading one of them with another rank (``x^T A^(1/2) x`` is not ``x^T x`` times a scalar's
        square root, nor ``(X^T X)^(1/2)`` the norm of a vector X)."""
        error = self.fail(node, message)
        error.held_names = _shaping_names(node.base)
        return error

    def _rewrite(self, node, replacement) -> Shaped:
        """Read ``node`` as ``replacement`` from now on (``A(x + y)``: input A times the parenthesis)."""
        self.rewritten[id(node)] = replacement
        return self.shaped(replacement)

    # -- index notation -------------------------------------------------------------------------
    @contextmanager
    def inside(self, bound: Sequence[str] = ()):
        """Emit within a group (its text is one factor of the enclosing product); ``bound``: indices an
        explicit ``sum_a(...)`` binds there."""
        saved = self.safe
        self.nested += 1
        self.safe = saved | {i for i in bound if i is not None}
        try:
            yield
        finally:
            self.nested -= 1
            self.safe = saved

    def _repeats_outer(self, node, row, col) -> bool:
        """Whether ``node``'s text repeats an index of its own that is summed outside it (``x_a y_a``
        of x ⊙ y in ``a^T (x ⊙ y + z)``): inside a group, index notation would sum it there."""
        if not ({i for i in (row, col) if i is not None} - self.safe):
            return False
        if isinstance(node, (Hadamard, ElementwiseDivide)):
            pair = (node.left, node.right) if isinstance(node, Hadamard) else (node.numerator, node.denominator)
            return all(self.shaped(n).shape != SCALAR for n in pair)
        return isinstance(node, Call) and node.function == "diag" and row != col

    def hoist(self, node) -> Name:
        """``node`` as a statement of its own (``M1_ij = X_ki X_kj``), referred to by its fresh name."""
        key = id(node)
        if key not in self.hoisted:
            shape = self.shaped(node).shape
            name = self.fresh_name({MATRIX: "M", COLUMN: "v", ROW: "v", SCALAR: "s"}[shape])
            self.statements.append(self.statement(name, node, shape))
            self.defined[name] = shape
            self.hoisted[key] = Name(name, node.column)
        return self.hoisted[key]

    def fresh_name(self, prefix: str) -> str:
        number = 1
        while f"{prefix}{number}" in self.taken or f"{prefix}{number}" in self.defined:
            number += 1
        self.taken.add(f"{prefix}{number}")
        return f"{prefix}{number}"

    def statement(self, name: str, node, shape: tuple[bool, bool]) -> str:
        """``name_ij = ...``: ``node`` in index notation with fresh letters for its rows and columns."""
        saved = (self.used, self.braced, self.safe, self.nested, self.root, self.explicit, self.free)
        self.used, self.braced, self.nested, self.explicit = set(), False, 0, 0
        try:
            row = self.fresh() if shape[0] else None
            col = self.fresh() if shape[1] else None
            self.free = tuple(i for i in (row, col) if i is not None)
            self.safe = set(self.free)
            self.root = below_transposes(node)
            rhs, _ = self.emit(node, row, col)
            return f"{name}{self.subscript(self.free)} = {rhs}"
        finally:
            self.used, self.braced, self.safe, self.nested, self.root, self.explicit, self.free = saved

    def emit(self, node, row: str | None, col: str | None) -> tuple[str, int]:
        """The node in index notation with the given row and column indices, and its precedence
        (0 a sum, 1 a leading minus, 2 a product, 3 an atom)."""
        node = self.rewritten.get(id(node), node)
        if self.program and self.nested and self._repeats_outer(node, row, col):
            node = self.hoist(node)
        if isinstance(node, Number):
            return node.text, 1 if node.text.startswith("-") else 3
        if isinstance(node, Name):
            if node.name == IDENTITY and node.name not in self.ranks and node.name not in self.defined:
                return "delta" + self.subscript((row, col)), 3
            present = [i for i in (row, col) if i is not None]
            return node.name + self.subscript(present), 3
        if isinstance(node, Neg):
            return "-" + self.factor(node.operand, row, col), 1
        if isinstance(node, Transpose):
            return self.emit(node.operand, col, row)
        if isinstance(node, Inverse):
            matrix = self.matrix_name(node.operand)
            if matrix is None:  # the inverse of a 1x1 product
                with self.inside():
                    return f"{self.factor(node.operand, None, None, atom=True)}^-1", 2
            pair = (col, row) if node.transposed else (row, col)
            return f"inv({matrix})" + self.subscript(pair), 3
        if isinstance(node, Sum):
            return self._emit_sum(node, row, col), 0
        if isinstance(node, Product):
            return self._emit_product(node, row, col)
        if isinstance(node, Hadamard):
            left = self.factor(node.left, *self._own(node.left, row, col), first=True)
            return f"{left} {self.factor(node.right, *self._own(node.right, row, col))}", 2
        if isinstance(node, ElementwiseDivide):
            top = self.factor(node.numerator, *self._own(node.numerator, row, col), first=True)
            with self.inside():
                bottom = self.factor(node.denominator, *self._own(node.denominator, row, col), atom=True)
            return f"{top} / {bottom}", 2
        if isinstance(node, Divide):
            top = self.factor(node.numerator, row, col, first=True)
            with self.inside():
                return f"{top} / ({self.emit(node.denominator, None, None)[0]})", 2
        if isinstance(node, Power):
            inner = (row, col) if node.elementwise else (None, None)
            with self.inside():
                return f"{self.factor(node.base, *inner, atom=True)}^{node.exponent}", 2
        return self._emit_call(node, row, col)

    def matrix_name(self, operand) -> str | None:
        """The name of the matrix ``operand`` (a statement of its own in a program, unless it is the
        name of a matrix input or statement), or None for a scalar."""
        node = self.rewritten.get(id(operand), operand)
        if self.program and self.shaped(operand).shape == SCALAR:
            return None
        if isinstance(node, Name) and (self.ranks.get(node.name) == 2 or self.defined.get(node.name) == MATRIX):
            return node.name
        if not self.program:  # pragma: no cover - refused by named_matrix
            raise self.fail(operand, "a matrix function applies to the name of a square matrix input")
        return self.hoist(operand).name

    def factor(self, node, row, col, first: bool = False, atom: bool = False) -> str:
        text, precedence = self.emit(node, row, col)
        if text.startswith("-"):  # -2 A_kj after a factor would read as a subtraction: (-2 A_kj)
            precedence = min(precedence, 1)
        needed = 3 if atom else 1 if first else 2
        return text if precedence >= needed else f"({text})"

    def _own(self, node, row, col) -> tuple[str | None, str | None]:
        shape = self.shaped(node).shape
        return (row if shape[0] else None), (col if shape[1] else None)

    def _emit_sum(self, node: Sum, row, col) -> str:
        if node is self.root:
            return self._sum_text(node, row, col)
        with self.inside():
            return self._sum_text(node, row, col)

    def _sum_text(self, node: Sum, row, col) -> str:
        first = node.terms[0]
        if node.signs[0] > 0:
            parts = [self.factor(first, *self._own(first, row, col), first=True)]
        else:
            parts = ["-" + self.factor(first, *self._own(first, row, col))]
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
        if inner is not None and (self.explicit or (left.partial and right.partial)):
            with self.inside(bound=(inner,)):
                text = self._product_text(node, left, right, row, col, inner)
            return f"sum{self.subscript((inner,))}({text})", 3
        text = self._product_text(node, left, right, row, col, inner)
        if inner is not None and _captured(text, inner):  # a group inside would contract it alone
            return f"sum{self.subscript((inner,))}({text})", 3
        return text, 2

    def _product_text(self, node: Product, left: Shaped, right: Shaped, row, col, inner) -> str:
        return f"{self.factor(node.left, row if left.shape[0] else None, inner, first=True)} " + self.factor(
            node.right, inner, col if right.shape[1] else None
        )

    def _emit_call(self, node: Call, row, col) -> tuple[str, int]:
        name = node.function
        if name in ("inv", "det", "logdet", "logabsdet"):
            matrix = self.matrix_name(node.arg)
            if matrix is not None:
                return (f"inv({matrix})" + self.subscript((row, col)) if name == "inv" else f"{name}({matrix})"), 3
            with self.inside():  # of a 1x1 product
                if name == "det":
                    return self.emit(node.arg, None, None)
                if name == "logdet":
                    return f"log({self.emit(node.arg, None, None)[0]})", 3
                if name == "logabsdet":
                    return f"log(abs({self.emit(node.arg, None, None)[0]}))", 3
                return f"{self.factor(node.arg, None, None, atom=True)}^-1", 2
        elementwise = in_matrix_notation(name)
        if elementwise is not None:
            with self.inside():
                return f"{elementwise.name}({self.emit(node.arg, row, col)[0]})", 3
        inner = self.shaped(node.arg).shape
        if name == "tr":
            if inner == SCALAR:
                return self.emit(node.arg, None, None)
            a = self.fresh()
            with self.inside(bound=(a,)):
                return f"sum{self.subscript((a,))}({self.emit(node.arg, a, a)[0]})", 3
        if name in ("sum", "mean"):  # of all entries
            over = [self.fresh() if present else None for present in inner]
            present = [i for i in over if i is not None]
            if not present:
                return self.emit(node.arg, None, None)
            with self.inside(bound=present):
                return f"{name}{self.subscript(present)}({self.emit(node.arg, *over)[0]})", 3
        if name == "diag":
            index = row if row is not None else col
            vector = (index, None) if inner == COLUMN else (None, index)
            if row == col:  # the diagonal of diag(v) is v
                with self.inside():
                    return self.factor(node.arg, *vector, atom=True), 3
            return f"delta{self.subscript((row, col))} {self.factor(node.arg, *vector)}", 2
        index = (row if inner == COLUMN else col) if name == "softmax" else self.fresh()
        vector = (index, None) if inner == COLUMN else (None, index)
        self.explicit += 1  # softmax_i(A_ij x_j) would be elementwise over j: write sum_j(A_ij x_j)
        try:
            with self.inside(bound=(index,)):
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
    array) or two (a matrix: rows ``indices[0]``, columns ``indices[1]``).  ``inv``, ``det``,
    ``logdet`` and ``logabsdet`` of an expression (``inv(X^T)``, ``det(A B)``) become statements of their own, written
    before the claim's right-hand side with ``;``."""
    indices = tuple(indices)
    if len(indices) > 2:
        raise EinderivError(
            f"the derivative has {len(indices)} free indices ({', '.join(indices)}): a matrix claim describes at "
            "most two (a scalar, a vector or a matrix); write the claim in index notation"
        )
    node = lift_signs(parse_matrix(text))
    reader = Reader(text, ranks, indices, program=True, taken=tuple(ranks), what="matrix claim")
    reader.root = below_transposes(node)
    shape = reader.read(node).shape
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
    return Translation(text, "; ".join([*reader.statements, rhs]), indices, shape)


#: what people type for a function that matrix notation spells otherwise
_SPELLINGS = {
    "ln": "log",
    "trace": "tr",
    "Tr": "tr",
    "norm": "norm2",
    "avg": "mean",
    "average": "mean",
    "inverse": "inv",
    "transpose": "^T after the matrix (A^T)",
}


def function_suggestion(name: str) -> str:
    """``"; did you mean sigmoid?"`` for ``sigmod`` (the index-notation reader's nearest name), or
    ``""`` when no known function is close."""
    close = _SPELLINGS.get(name) or closest_name(name, [*(row.matrix for row in FUNCTIONS.values()), *STRUCTURAL])
    return f"; did you mean {close}?" if close else ""


def _captured(text: str, index: str) -> bool:
    """Whether a group in the product ``text`` would contract ``index`` on its own (a Hadamard
    product inside a parenthesis: ``A_ik (A_kj A_kj - B_kj)``), so the sum must be written."""
    return index in contracted_in_groups(parse("f = " + text).output.rhs)


def _constant(node) -> bool:
    """Whether a parsed claim is made of numbers alone (``1``, ``-(1/3)``): no name, no call."""
    if isinstance(node, (Name, Call)):
        return False
    return all(_constant(child) for child in _children(node))


def _children(node) -> list:
    """The nodes directly below a parsed node (the items of a tuple field one by one)."""
    fields_ = [getattr(node, f.name) for f in fields(node)] if is_dataclass(node) else []
    items = [item for value in fields_ for item in (value if isinstance(value, tuple) else (value,))]
    return [item for item in items if is_dataclass(item)]


def _shaping_names(base) -> tuple[str, ...]:
    """The names that make ``base`` a vector or a matrix, for a power or a call it cannot take:
    all those written outside calls (``tr(A)`` is a scalar whatever A is), except a name added to
    a number (``(N - 1)^(1/2)``: N a count)."""
    if isinstance(base, Name):
        return (base.name,)
    if isinstance(base, Call):
        return ()
    children = _children(base)
    if isinstance(base, Sum) and any(isinstance(t, Number) for t in base.terms):
        children = [t for t in children if not isinstance(t, (Name, Number))]
    return tuple(n for child in children for n in _shaping_names(child))


def _holds(node, kind: type) -> bool:
    """Whether a parsed claim holds a node of ``kind`` anywhere: a '@' (``MatMul``: its vectors
    are NumPy's 1-D arrays, as in ``tanh(X @ W)``) or a matrix product (``Product``: ``(W x)^T``)."""
    if isinstance(node, kind):
        return True
    return any(_holds(child, kind) for child in _children(node))


#: calls that reduce a vector to a scalar, which a sum may broadcast back (``x - mean(x)``)
REDUCING = ("sum", "mean", "norm2", "logsumexp")


def _names_outside_reductions(node, every: bool = False) -> set[str]:
    """The names ``node`` holds, but for those inside a :data:`REDUCING` call (all with ``every``):
    ``lam sum(log(x))`` holds lam, and x only inside its sum."""
    if isinstance(node, Name):
        return {node.name}
    if not every and isinstance(node, Call) and node.function in REDUCING:
        return set()
    return set().union(*(_names_outside_reductions(child, every) for child in _children(node)))


def _names_in_reductions(node) -> set[str]:
    """The names inside the :data:`REDUCING` calls of ``node`` (x and z in ``x - mean(x) - mean(z)``)."""
    if isinstance(node, Call) and node.function in REDUCING:
        return _names_outside_reductions(node.arg, every=True)
    return set().union(*(_names_in_reductions(child) for child in _children(node)))


def _names_alone(node) -> bool:
    """Whether ``node`` is a name, or a sum or negation of names (``x``, ``(x - mu)``, ``-y``)."""
    if isinstance(node, Neg):
        return _names_alone(node.operand)
    if isinstance(node, Sum):
        return all(_names_alone(t) for t in node.terms)
    return isinstance(node, Name)
