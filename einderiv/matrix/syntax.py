"""The syntax of matrix notation (``A x + A^T x``, ``X^-T``, ``diag(s ⊙ (1 - s))``): a small Lark
grammar and frozen nodes that keep the column where each subexpression starts.  Shapes and the
reading as index notation are :mod:`einderiv.matrix.translate`'s."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from .. import limits
from ..errors import EinderivError, ParseError
from ..parser import (
    GLUED,
    exponent_slip,
    glued_denominator,
    leading_sign,
    spaced_denominator,
    spaced_power,
    syntax_error,
)

GRAMMAR = r"""
?start: sum

?sum: hadamard (ADDOP hadamard)*
ADDOP: "+" | "-"

?hadamard: product (ELEMENTWISE product)*
ELEMENTWISE: "⊙" | "∘" | ".*" | "./"

?product: signed
        | product postfix               -> mul
        | product "*" signed            -> star
        | product "@" signed            -> matmul
        | product "/" signed            -> div

?signed: postfix
       | "-" signed                     -> neg
       | "+" signed

?postfix: atom
        | postfix "^" exponent          -> power
        | postfix "^" "{" exponent "}"  -> power
        | postfix "^" "(" exponent ")"  -> power
        | postfix "^" "(" ratio ")"     -> power
        | postfix ".^" exponent         -> elementwise_power
        | postfix ".^" "(" exponent ")" -> elementwise_power
        | postfix ".^" "(" ratio ")"    -> elementwise_power
        | postfix ("'" | "ᵀ")            -> quote
        | postfix "⁻¹"                  -> inverse_power
        | postfix "⁻ᵀ"                  -> inverse_transpose_power
        | postfix "²"                   -> square

exponent: "T"                           -> transpose
        | "-" "T"                       -> inverse_transpose
        | NUMBER                        -> positive
        | "-" NUMBER                    -> negative

ratio: NUMBER "/" NUMBER                -> positive_ratio
     | "-" NUMBER "/" NUMBER            -> negative_ratio

?atom: NUMBER                           -> number
     | NAME                             -> name
     | "(" sum ")"                      -> group
     | CALL sum ")"                     -> call

CALL.2: /[A-Za-z][A-Za-z0-9]*\(/
NAME.1: /[A-Za-z][A-Za-z0-9]*/
NUMBER: /(\d+(\.(?![*\/^])\d*)?|\.\d+)([eE][+-]?\d+)?/
WS: /[ \t\r\n\f]+/
%ignore WS
"""

# -- the parse tree: frozen nodes, each with the column where it starts ---------------------------


@dataclass(frozen=True)
class Name:
    """An input named as written, or ``I``."""

    name: str
    column: int


@dataclass(frozen=True)
class Number:
    """A decimal literal (with its sign folded in: ``-2``)."""

    text: str
    column: int


@dataclass(frozen=True)
class Sum:
    """``t1 + t2 - t3``: terms with signs (+1 or -1)."""

    terms: tuple
    signs: tuple[int, ...]
    column: int


@dataclass(frozen=True)
class Neg:
    """``-E``."""

    operand: object
    column: int


@dataclass(frozen=True)
class Product:
    """``L R`` by juxtaposition: a matrix product, an outer product, or a product with a scalar."""

    left: object
    right: object
    column: int


@dataclass(frozen=True)
class MatMul(Product):
    """``L @ R`` as NumPy means it: the matrix product, where a vector on the left is a row
    (``x @ y`` is x^T y, ``x @ A`` is x^T A) and neither side is a scalar."""


@dataclass(frozen=True)
class Hadamard:
    """``L ⊙ R``: elementwise product of same-shaped operands."""

    left: object
    right: object
    column: int


@dataclass(frozen=True)
class ElementwiseDivide:
    """``L ./ R``: elementwise quotient of same-shaped operands (or by a scalar)."""

    numerator: object
    denominator: object
    column: int


@dataclass(frozen=True)
class Divide:
    """``E / s``: division by a scalar."""

    numerator: object
    denominator: object
    column: int


@dataclass(frozen=True)
class Transpose:
    """``E^T``."""

    operand: object
    column: int


@dataclass(frozen=True)
class Inverse:
    """``X^-1`` (``inv(X)``) or, transposed, ``X^-T``, of a named matrix."""

    operand: object
    transposed: bool
    column: int


@dataclass(frozen=True)
class Power:
    """``s^p``: a numeric power of a scalar; ``E.^p`` (``elementwise``): of every entry of E."""

    base: object
    exponent: str
    column: int
    elementwise: bool = False


@dataclass(frozen=True)
class Call:
    """``f(E)``: an elementwise function or one of STRUCTURAL."""

    function: str
    arg: object
    column: int


def _column(item) -> int:
    if isinstance(item, Token):
        return item.column or 0
    return item.column


def _no_star_beside_matmul(tree, source: str) -> None:
    """``A @ B * C`` is an error: beside ``@``, NumPy's ``*`` is the elementwise product ((A @ B) *
    C), where matrix notation's (MATLAB's) ``*`` is the matrix product (A B C).  A number (or an
    expression of numbers) on either side of ``*`` scales in both readings; a name may be an
    array whatever its case
    (ranks are inferred later, and a reading that avoids an error would change the meaning), so
    a scalar name is written without the ``*`` (``a A @ B``)."""
    subtrees = list(tree.iter_subtrees())
    if not any(t.data == "matmul" for t in subtrees):
        return
    for t in subtrees:
        if t.data != "star" or _constant(t.children[0]) or _constant(t.children[1]):
            continue
        end = getattr(t.children[0].meta, "end_column", None) if isinstance(t.children[0], Tree) else None
        end = end if end is not None else _column(t.children[0]) if isinstance(t.children[0], Token) else 1
        found = source.find("*", max(end - 1, 0))
        raise ParseError(
            "'*' beside '@' is ambiguous: NumPy reads A @ B * C as (A @ B) ⊙ C, matrix notation (as MATLAB) "
            "as the product A B C; write .* (or ⊙) for the elementwise product, or @ for the matrix product "
            "(a scalar factor without '*': a A @ B)",
            source,
            1,
            found + 1 if found >= 0 else 0,
        )


def _no_glued_denominator(tree, source: str) -> None:
    """``x^T x / 2N``, ``exp(-x^T x / 2s^2)`` and ``exp(-x^T x / 2 s^2)`` are errors: textbooks
    mean 1/(2N), where '/' takes the number alone and the name then multiplies (as in index
    notation; ``1/2 s^2``, a number over a number, is half of s^2); so are
    ``D^-1/2 A D^-1/2`` and ``(x^T x)^1/2``, where the power -1/2 or 1/2 is meant."""
    for t in tree.iter_subtrees():
        if t.data == "div" and isinstance(t.children[1], Tree) and t.children[1].data == "number":
            (token,) = t.children[1].children
            message = exponent_slip(source[: token.start_pos], str(token)) if token.start_pos is not None else None
            if message:  # D^-1/2 A D^-1/2
                raise ParseError(message, source, 1, _column(token))
        if t.data != "mul" or not isinstance(t.children[0], Tree) or t.children[0].data != "div":
            continue
        denominator = t.children[0].children[1]
        if not (isinstance(denominator, Tree) and denominator.data == "number"):
            continue
        (token,) = denominator.children
        following = re.match(GLUED, source[token.end_pos :]) if token.end_pos is not None else None
        if following:
            raise ParseError(glued_denominator(str(token), following.group()), source, 1, _column(token))
        power = spaced_power(source[token.end_pos :]) if token.end_pos is not None else None
        if power and not _a_number(t.children[0].children[0]):  # x^T x / 2 s^2 (1/2 s^2 is half of s^2)
            raise ParseError(spaced_denominator(str(token), power), source, 1, _column(token))


def _build(tree, source: str):
    """Lark tree -> nodes, bottom-up without recursion; refuses nesting deeper than the limit max_depth."""
    if isinstance(tree, Tree):
        _no_star_beside_matmul(tree, source)
        _no_glued_denominator(tree, source)
    done: dict[int, object] = {}
    depth: dict[int, int] = {}
    stack = [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        if not expanded:
            stack.append((node, True))
            stack.extend((child, False) for child in node.children if isinstance(child, Tree))
            continue
        kids = [done.pop(id(c)) if isinstance(c, Tree) else c for c in node.children]
        depth[id(node)] = 1 + max((depth.pop(id(c)) for c in node.children if isinstance(c, Tree)), default=0)
        if node.data == "group":  # brackets: the sum inside, at no extra depth
            depth[id(node)] -= 1
            done[id(node)] = kids[0]
            continue
        if _numeric_power(node) and isinstance(node.children[0], Tree) and _numeric_power(node.children[0]):
            raise ParseError(
                "a power of a power needs brackets: write (a^2)^3 or a^6 (2^3^2 is 512 in NumPy and 64 in "
                "MATLAB; s²² is s^22 in index notation)",
                source,
                1,
                getattr(node.children[0].meta, "end_column", None) or _column(node.children[0]),
            )
        if node.data == "hadamard":  # a ⊙ b ⊙ c becomes a chain of nested nodes
            depth[id(node)] += len(kids) // 2 - 1
            _unambiguous_elementwise(node, source)
        if depth[id(node)] > limits.current().max_depth:
            raise ParseError(
                f"the matrix claim is nested deeper than {limits.current().max_depth} operations (the limit "
                f"max_depth): write it in index notation, or {limits.raise_hint('max_depth')}",
                source,
                0,
                0,
            )
        column = getattr(node.meta, "column", None) or (_column(kids[0]) if kids else 0)
        done[id(node)] = _node(node.data, kids, column)
    return done[id(tree)]


def _unambiguous_elementwise(tree, source: str) -> None:
    """``A .* B @ C`` is an error: NumPy (``A * B @ C``) and MATLAB (``A .* B * C``) give the
    elementwise and the explicit products one precedence, read left to right, so (A .* B) @ C,
    where the notation of papers (and juxtaposition here, ``A .* B C``) binds the product first.
    An explicit ``*`` or ``@`` (or ``/`` after ``./``) in an elementwise operator's right operand
    is therefore written with brackets, except ``* 2`` after ``.*`` or ``⊙`` (both readings are
    the same); on its left (``A @ B .* C``) both readings agree."""
    children = tree.children
    for op, right in zip(children[1::2], children[2::2]):
        explicit = {"star", "matmul"} | ({"div"} if str(op) == "./" else set())
        node = right
        while isinstance(node, Tree) and node.data in ("mul", "star", "matmul", "div"):
            scaled = node.data == "star" and str(op) != "./" and _is_number(node.children[1])
            if node.data in explicit and not scaled:  # x .* y * 2 reads the same either way
                written = {"star": "*", "matmul": "@", "div": "/"}[node.data]
                raise ParseError(
                    f"'{op}' then '{written}' without brackets is ambiguous: NumPy and MATLAB read A {op} B "
                    f"{written} C as (A {op} B) {written} C, papers as A {op} (B {written} C); write the brackets",
                    source,
                    1,
                    _column(op),
                )
            node = node.children[0]


def _constant(tree) -> bool:
    """A number, or an expression of numbers only (``(1/2)``, ``2^2``): no name in it."""
    if isinstance(tree, Token):
        return tree.type == "NUMBER"
    return not any(isinstance(v, Token) and v.type == "NAME" for v in tree.scan_values(lambda v: True))


def _is_number(tree) -> bool:
    """A number as written (``2``, ``-0.5``)."""
    if isinstance(tree, Tree) and tree.data == "neg":
        return _is_number(tree.children[0])
    return isinstance(tree, Tree) and tree.data == "number"


def _numeric_power(tree) -> bool:
    """``a^2``, ``a.^-1``, ``a^(1/2)``, ``s²``, ``X⁻¹``: a power by a number (not a transpose)."""
    if tree.data in ("square", "inverse_power"):
        return True
    if tree.data in ("power", "elementwise_power") and isinstance(tree.children[-1], Tree):
        return tree.children[-1].data in ("positive", "negative", "positive_ratio", "negative_ratio")
    return False


def _node(kind: str, kids: list, column: int):
    if kind == "number":
        return Number(str(kids[0]), _column(kids[0]))
    if kind == "name":
        return Name(str(kids[0]), _column(kids[0]))
    if kind == "call":
        return Call(str(kids[0])[:-1], kids[1], _column(kids[0]))
    if kind in ("transpose", "inverse_transpose", "positive", "negative"):
        return (kind, str(kids[0]) if kids else "")
    if kind in ("positive_ratio", "negative_ratio"):  # A .^ (1/2): written as index notation writes it
        return ("positive", f"({'-' * (kind == 'negative_ratio')}{kids[0]}/{kids[1]})")
    if kind == "neg":
        operand = kids[0]
        if isinstance(operand, Number) and not operand.text.startswith("-"):
            return Number("-" + operand.text, column)
        return Neg(operand, column)
    if kind == "sum":
        terms, signs = [kids[0]], [1]
        for op, term in zip(kids[1::2], kids[2::2]):
            terms.append(term)
            signs.append(1 if str(op) == "+" else -1)
        return Sum(tuple(terms), tuple(signs), column)
    if kind == "hadamard":
        node = kids[0]
        for op, right in zip(kids[1::2], kids[2::2]):
            node = (ElementwiseDivide if str(op) == "./" else Hadamard)(node, right, column)
        return node
    if kind == "quote":
        return Transpose(kids[0], column)
    if kind in ("inverse_power", "square"):  # X⁻¹, s²
        return Power(kids[0], "-1" if kind == "inverse_power" else "2", column)
    if kind == "inverse_transpose_power":
        return Inverse(kids[0], True, column)
    if kind in ("mul", "star"):
        return Product(kids[0], kids[1], column)
    if kind == "matmul":
        return MatMul(kids[0], kids[1], column)
    if kind == "div":
        return Divide(kids[0], kids[1], column)
    if kind == "elementwise_power":
        base, (what, number) = kids
        if what not in ("positive", "negative"):
            raise EinderivError(f"'.^' takes a number, not {'T' if what == 'transpose' else '-T'}")
        return Power(base, number if what == "positive" else "-" + number, column, elementwise=True)
    if kind == "power":
        base, (what, number) = kids
        if what == "transpose":
            return Transpose(base, column)
        if what == "inverse_transpose":
            return Inverse(base, True, column)
        return Power(base, number if what == "positive" else "-" + number, column)
    raise EinderivError(f"unexpected {kind!r} in a matrix claim")  # pragma: no cover - the grammar's aliases


# -- rewriting ----------------------------------------------------------------------------------


def below_transposes(node):
    """The node under any transposes (``(a + b)^T``: the sum)."""
    while isinstance(node, Transpose):
        node = node.operand
    return node


def lift_signs(node):
    """The same expression with every minus sign moved out of products, transposes and elementwise
    products into the signs of sums (``a^T (-(x ⊙ y))`` is ``-(a^T (x ⊙ y))``), so that no negated
    product needs parentheses of its own."""
    if isinstance(node, (Name, Number)):
        return node
    if isinstance(node, Neg):
        inner = lift_signs(node.operand)
        if isinstance(inner, Neg):
            return inner.operand
        if isinstance(inner, Number):
            return replace(inner, text=inner.text[1:] if inner.text.startswith("-") else "-" + inner.text)
        if isinstance(inner, Sum):
            return replace(inner, signs=tuple(-s for s in inner.signs))
        return Neg(inner, node.column)
    if isinstance(node, Sum):
        terms, signs = [], []
        for term, sign in zip(node.terms, node.signs):
            term = lift_signs(term)
            if isinstance(term, Neg):
                term, sign = term.operand, -sign
            terms.append(term)
            signs.append(sign)
        return replace(node, terms=tuple(terms), signs=tuple(signs))
    if isinstance(node, Transpose):
        inner = lift_signs(node.operand)
        if isinstance(inner, Neg):
            return Neg(Transpose(inner.operand, node.column), node.column)
        return replace(node, operand=inner)
    if isinstance(node, (Product, Hadamard, ElementwiseDivide, Divide)):
        names = [f.name for f in fields(node) if f.name != "column"]
        parts, negative = {}, False
        for position, key in enumerate(names):
            part = lift_signs(getattr(node, key))
            if isinstance(part, Neg) and (position == 0 or not isinstance(node, Divide)):
                part, negative = part.operand, not negative
            parts[key] = part
        rebuilt = replace(node, **parts)
        return Neg(rebuilt, node.column) if negative else rebuilt
    if isinstance(node, (Inverse, Power)):
        key = "operand" if isinstance(node, Inverse) else "base"
        return replace(node, **{key: lift_signs(getattr(node, key))})
    if isinstance(node, Call):
        return replace(node, arg=lift_signs(node.arg))
    return node  # pragma: no cover - every node kind is above


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False, propagate_positions=True)


def parse_matrix(text: str):
    """Parse matrix notation into nodes (syntax only; shapes are checked by :func:`translate`)."""
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty claim: write a matrix expression such as 'A x + A^T x'", str(text), 0, 0)
    if "\n" in text.strip():
        raise ParseError("a matrix claim is one line", text, 0, 0)
    try:
        return _parse_line(text.replace("\u2212", "-"))
    except ParseError as err:  # the error shows the text as the user typed it
        raise ParseError(err.message, text, err.line, err.column) from None


# -- statements: ``f = x^T A x``, several separated by newlines or ';' --------------------------

_LHS = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)\s*=(?!=)")


@dataclass(frozen=True)
class MatrixStatement:
    """``name = expression`` (``name`` None for a bare expression), on line ``line`` of the source."""

    name: str | None
    node: object
    line: int
    column: int


def parse_matrix_program(text: str) -> tuple[MatrixStatement, ...]:
    """Parse statements of matrix notation, one per line or separated by ``;`` (``#`` comments).
    Syntax errors carry the line and column in the whole text.  The minus sign of typeset text
    (U+2212) is '-'."""
    if not isinstance(text, str):
        raise EinderivError(f"expected the expression as a string, got {type(text).__name__}")
    try:
        lines = _logical_lines(text.replace("\u2212", "-"))  # (one character for one: columns stay)
    except ParseError as err:  # the error shows the text as the user typed it
        raise ParseError(err.message, text, err.line, err.column) from None
    _no_glued_products(lines, text)
    statements = []
    for number, code, spans in lines:
        start = 0
        for piece in code.split(";"):
            padded = " " * start + piece  # columns stay those of the whole line
            start += len(piece) + 1
            if not piece.strip():
                continue
            match = _LHS.match(padded)
            name = match.group(1) if match else None
            column = padded.index(name) + 1 if name else len(padded) - len(padded.lstrip()) + 1
            body = " " * match.end() + padded[match.end() :] if match else padded
            if match and not body.strip():
                raise ParseError("syntax error: nothing after '='", text, *_located(spans, len(padded) + 1))
            try:
                node = _parse_line(body)
            except ParseError as err:
                raise ParseError(err.message, text, *_located(spans, err.column)) from None
            statements.append(MatrixStatement(name, node, number, column))
    if not statements:
        raise ParseError("empty input: write an expression such as 'f = x^T A x'", text, 0, 0)
    return tuple(statements)


#: a name as matrix notation writes it, not a number's exponent (``1e3``) and not a function (``tr(``)
_NAME = re.compile(r"(?<![A-Za-z0-9.^])[A-Za-z][A-Za-z0-9]*(?![A-Za-z0-9])(?!\s*\()")
#: a transpose written directly before a name or a bracket, as typeset text runs products together
_TYPESET = re.compile(r"(ᵀ|\^T|')[A-Za-z(]")


def _no_glued_products(lines: list, text: str) -> None:
    """``xᵀAx`` is an error: ``Ax`` is one name in matrix notation, as in index notation, where
    typeset text (pasted from a book) means the product A x.  A two-letter name with a capital
    (``Ax``, ``Xw``, ``AB``) that no statement defines is refused where the text runs a
    transpose into what follows (``aᵀXb``, ``(y - Xw)^T(y - Xw)``), or where it follows a
    transpose and ends the product (``x^T Ax``, ``x' Ax + c``) with a letter that is a name on
    its own; ``y^T Ky y``, ``Q = X Wq`` and ``Kx = A x`` are names as written."""
    names = {m.group(0) for _, code, _ in lines for m in _NAME.finditer(code)}
    defined = {m.group(1) for _, code, _ in lines for piece in code.split(";") if (m := _LHS.match(piece))}
    typeset = any(_TYPESET.search(code) for _, code, _ in lines)
    for _, code, spans in lines:
        for match in _NAME.finditer(code):
            name = match.group(0)
            if len(name) != 2 or not name.isalpha() or name.islower() or name in defined:
                continue
            after_transpose = re.search(r"(ᵀ|\^T|')\s*$", code[: match.start()]) is not None
            ends_product = re.match(r"\s*[A-Za-z(]", code[match.end() :]) is None
            alone = name[1] in names or name[0] in names
            if typeset or (after_transpose and ends_product and alone):
                raise ParseError(
                    f"'{name}' is one name in matrix notation, not the product {name[0]} {name[1]}: write "
                    f"'{name[0]} {name[1]}' (or '{name[0]} @ {name[1]}') for the product, or give the "
                    "tensor a longer name",
                    text,
                    *_located(spans, match.start() + 1),
                )


def _located(spans: list, column: int) -> tuple[int, int]:
    """The (line, column) in the user's text of ``column`` in a statement joined from the lines
    ``spans`` describes ((start in the joined text, line number, indent), one per line)."""
    start, number, indent = next(span for span in reversed(spans) if span[0] <= column - 1 or span is spans[0])
    return number, column - start + (indent if start else 0)


def _logical_lines(text: str) -> list[tuple[int, str, list]]:
    """(line number, code, spans) per statement, comments dropped: a line that ends with an operator
    or an open parenthesis continues on the next (``f = x^T A x +`` / ``b^T x``), as in index
    notation; a line that starts with '+' or '-' after a statement is refused, since it would be
    a statement of its own, the output, silently dropping the line above."""
    lines: list[tuple[int, str, list]] = []
    open_ = False
    for number, line in enumerate(text.split("\n"), 1):
        code = line.split("#", 1)[0].rstrip("\r")
        if open_ and lines:
            first, joined, spans = lines[-1]
            if code.strip():  # where this line's code starts in the joined text, and in its own line
                spans.append((len(joined) + 1, number, len(code) - len(code.lstrip())))
            lines[-1] = (first, joined + " " + code.strip(), spans)
        elif code.strip().startswith(("+", "-")) and lines and not lines[-1][1].rstrip().endswith(";"):
            column = len(code) - len(code.lstrip()) + 1
            raise ParseError(leading_sign(number, code.strip()[0]), text, number, column)
        elif code.strip():
            lines.append((number, code, [(0, number, 0)]))
        if lines:
            joined = lines[-1][1]
            stripped = joined.rstrip()
            open_ = joined.count("(") > joined.count(")") or stripped.endswith(("+", "-", "*", "@", "/", "^", "=", "("))
    return lines


def _parse_line(text: str):
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise syntax_error(err, text, matrix=True) from None
    if isinstance(tree, Token):
        tree = Tree("number" if tree.type == "NUMBER" else "name", [tree])
    return _build(tree, text)


def _a_number(node) -> bool:
    """Whether a tree is a number, or a negated one (``-1``)."""
    while isinstance(node, Tree) and node.data == "neg" and len(node.children) == 1:
        node = node.children[0]
    return isinstance(node, Tree) and node.data == "number"
