"""Text -> IR: the Lark grammar in ``grammar/einderiv.lark`` and a Transformer into ``ir`` nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from .errors import EinderivError, IndexRuleError, ParseError
from .functions import FUNCTIONS, MATRIX_FUNCTIONS, REDUCTIONS, known_functions
from .ir import Add, Call, Delta, Div, MatrixCall, Mul, Neg, Number, Pow, Program, Statement, Tensor

GRAMMAR_FILE = "einderiv.lark"
#: Deepest nesting of operations (calls, signs, powers, parenthesised sums) an expression may have.
MAX_DEPTH = 64
DELTA_NAME = "delta"
_INDEX_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


def grammar_text() -> str:
    """The grammar: packaged inside the wheel, or read from the source tree's ``grammar/``."""
    packaged = resources.files("einderiv") / "_grammar" / GRAMMAR_FILE
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(__file__).resolve().parent.parent / "grammar" / GRAMMAR_FILE
    return source_tree.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", maybe_placeholders=False)


def _fail(token: Token, message: str, source: str) -> ParseError:
    return ParseError(message, source, token.line or 0, token.column or 0)


_TOKEN_WORDS = {
    "PLUS": "'+'",
    "ADDOP": "'+' or '-'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "EQUAL": "'='",
    "LPAR": "'('",
    "RPAR": "')'",
    "SEMICOLON": "';'",
    "CIRCUMFLEX": "'^'",
    "NEWLINE": "a line break",
    "NUMBER": "a number",
    "NAME": "a name",
    "TENSOR": "a tensor",
    "BRACED": "a tensor",
    "CALL": "a function call",
    "INDICES": "indices",
    "$END": "the end of the input",
}


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "the end of the input"
    if token.type == "NEWLINE":
        return "a line break"
    return repr(str(token))


def _syntax_error(err: UnexpectedInput, source: str) -> ParseError:
    line, column = err.line, err.column
    if isinstance(err, UnexpectedCharacters):
        char = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        hint = ""
        if char == "_":
            hint = ": an index list follows a name directly, as in R_mp, W_{in,out} or inv(M)_ij"
        elif char == "{" or char == "}":
            hint = ": braces only hold index lists, as in W_{in,out}"
        return ParseError(f"syntax error: unexpected character {char!r}{hint}", source, line, column)
    if isinstance(err, (UnexpectedToken, UnexpectedEOF)):
        token = getattr(err, "token", None)
        if token is None or token.type == "$END":
            lines = source.splitlines() or [""]
            line = len(lines)
            column = len(lines[-1]) + 1
            expected = sorted(_TOKEN_WORDS.get(t, t) for t in getattr(err, "expected", ()) if t in _TOKEN_WORDS)
            wanted = f"; expected {', '.join(dict.fromkeys(expected))}" if expected else ""
            return ParseError(f"syntax error: the input ends too early{wanted}", source, line, column)
        expected = sorted(_TOKEN_WORDS.get(t, t) for t in err.expected if t in _TOKEN_WORDS)
        wanted = f"; expected {', '.join(dict.fromkeys(expected))}" if expected else ""
        return ParseError(f"syntax error: unexpected {_describe(token)}{wanted}", source, token.line, token.column)
    return ParseError(f"syntax error: {err}", source, line or 0, column or 0)


def _split_braced(token: Token, body: str, source: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in body.split(","))
    if names == ("",):
        raise _fail(token, "empty index list '{}': write the indices, as in W_{in,out}", source)
    for name in names:
        if not _INDEX_NAME.match(name):
            raise _fail(
                token,
                f"bad index name {name!r} in {str(token)!r}: index names are letters and digits starting with a letter",
                source,
            )
    return names


class _ToIR(Transformer_NonRecursive):
    """Turns the parse tree straight into IR nodes (one method per grammar alias)."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    # -- references -------------------------------------------------------------------------
    def _ref(self, token: Token, name: str, indices: tuple[str, ...]):
        if name == DELTA_NAME:
            if len(indices) != 2:
                raise _fail(token, f"delta takes exactly two indices (delta_ij), got {str(token)!r}", self.source)
            return Delta(*indices)
        return Tensor(name, indices)

    @v_args(inline=True)
    def scalar_ref(self, token: Token):
        if str(token) == DELTA_NAME:
            raise _fail(token, "delta takes exactly two indices (delta_ij)", self.source)
        return Tensor(str(token))

    @v_args(inline=True)
    def tensor_ref(self, token: Token):
        name, letters = str(token).split("_", 1)
        return self._ref(token, name, tuple(letters))

    @v_args(inline=True)
    def braced_ref(self, token: Token):
        name, body = str(token).split("_", 1)
        return self._ref(token, name, _split_braced(token, body[1:-1], self.source))

    # -- arithmetic -------------------------------------------------------------------------
    # Parentheses make a group (einsum scoping works bottom-up over groups), so a parenthesised
    # product or division stays a node of its own: ``(a b) c`` is Mul((Mul((a, b)), c)) and
    # ``(a / b) c`` is Mul((Mul((Div(a, b),)), c)), while ``a / b c`` is one chain Mul((Div(a, b), c)).
    @v_args(inline=True)
    def number(self, token: Token):
        return Number(Fraction(str(token)))

    @v_args(inline=True)
    def paren(self, inner):
        return _Paren(_bare(inner))

    def sum(self, children):
        terms = list(_flat(Add, _bare(children[0])))
        for op, term in zip(children[1::2], children[2::2]):
            term = _bare(term)
            terms.append(term if op == "+" else Neg(term))
        return Add(tuple(terms))

    @v_args(inline=True)
    def mul(self, left, right):
        if isinstance(left, _Paren):
            return Mul((_grouped(left.inner), _bare(right)))
        return Mul(_flat(Mul, left) + (_bare(right),))

    @v_args(inline=True)
    def div(self, left, right):
        numerator = left
        if isinstance(left, _Paren) and isinstance(left.inner, (Mul, Div)):
            numerator = Mul((left.inner,))  # (a b) / c: a group, not the chain a b / c
        return Div(_bare(numerator), _bare(right))

    @v_args(inline=True)
    def neg(self, operand):
        return Neg(_bare(operand))

    @v_args(inline=True)
    def exponent_positive(self, token: Token):
        return Fraction(str(token))

    @v_args(inline=True)
    def exponent_negative(self, token: Token):
        return -Fraction(str(token))

    @v_args(inline=True)
    def pow(self, base, exponent):
        return Pow(_bare(base), exponent)

    @v_args(inline=True)
    def call(self, token: Token, arg, suffix: Token | None = None):
        arg = _bare(arg)
        text = str(token)[:-1]
        name, _, index_text = text.partition("_")
        if name in MATRIX_FUNCTIONS and not index_text:
            return self._matrix_call(token, name, arg, suffix)
        if suffix is not None:
            raise _fail(suffix, f"{name}(...) takes no index list after it", self.source)
        if index_text:
            if name not in REDUCTIONS:
                raise _fail(
                    token, f"{name!r} takes no indices: only reductions ({', '.join(REDUCTIONS)}) do", self.source
                )
            if index_text.startswith("{"):
                over = _split_braced(token, index_text[1:-1], self.source)
            else:
                over = tuple(index_text)
            if len(set(over)) != len(over):
                raise _fail(token, f"{name}_{index_text} repeats an index", self.source)
            return Call(name, arg, over)
        if name in REDUCTIONS:
            raise _fail(token, f"{name}(...) needs the indices it sums over, as in {name}_i(...)", self.source)
        if name not in FUNCTIONS:
            raise _fail(
                token,
                f"unknown function {name!r}; known functions: {known_functions()}; "
                f"for a product write '{name} (...)' or '{name}*(...)'",
                self.source,
            )
        return Call(name, arg)

    def _matrix_call(self, token: Token, name: str, arg, suffix: Token | None):
        if not isinstance(arg, Tensor) or arg.indices:
            raise _fail(
                token,
                f"{name}(...) takes the name of a square matrix, as in {name}(M): define the matrix in a "
                f"statement of its own first (M_ij = ...; then {name}(M))",
                self.source,
            )
        if MATRIX_FUNCTIONS[name] == 0:
            if suffix is not None:
                raise _fail(suffix, f"{name}({arg.name}) is a scalar and takes no indices", self.source)
            return MatrixCall(name, arg.name)
        if suffix is None:
            raise _fail(token, f"{name}({arg.name}) needs two indices, as in {name}({arg.name})_ij", self.source)
        body = str(suffix)[1:]
        indices = _split_braced(suffix, body[1:-1], self.source) if body.startswith("{") else tuple(body)
        if len(indices) != MATRIX_FUNCTIONS[name]:
            raise _fail(suffix, f"{name}({arg.name}) takes exactly two indices, got {len(indices)}", self.source)
        return MatrixCall(name, arg.name, indices)

    # -- statements -------------------------------------------------------------------------
    @v_args(inline=True)
    def equation(self, lhs, rhs):
        target, wrt = _split_lhs(_bare(lhs))
        return Statement(target, _bare(rhs), wrt)

    @v_args(inline=True)
    def bare(self, rhs):
        return Statement(None, _bare(rhs))

    def start(self, children):
        return Program(tuple(c for c in children if isinstance(c, Statement)))


def _split_lhs(lhs) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``K_pq`` -> (K_pq, ()); ``dK_pq/dR_ij`` -> (dK_pq, (dR_ij,)); ``d2f/dx_k dx_l`` -> (d2f, (dx_k, dx_l))."""
    if isinstance(lhs, Tensor):
        return lhs, ()
    trailing: list = []
    node = lhs
    if isinstance(node, Mul):
        node, trailing = node.factors[0], list(node.factors[1:])
    if isinstance(node, Div) and isinstance(node.numerator, Tensor):
        wrt = [node.denominator, *trailing]
        if node.numerator.name.startswith("d") and all(isinstance(w, Tensor) and w.name.startswith("d") for w in wrt):
            return node.numerator, tuple(wrt)
    if isinstance(lhs, Delta):
        raise IndexRuleError("delta is reserved for the Kronecker delta and cannot be assigned to")
    raise IndexRuleError(
        f"the left-hand side {str(lhs)!r} must be a tensor with its indices (K_pq, f) "
        "or a derivative name (dK_pq/dR_ij)"
    )


@dataclass(frozen=True)
class _Paren:
    """A parenthesised expression while the tree is built; only products care (see ``mul``)."""

    inner: object


def _bare(node):
    return node.inner if isinstance(node, _Paren) else node


def _grouped(node):
    """A parenthesised factor at the head of a product: a product stays a nested Mul (printed in
    parentheses), a division is wrapped as a one-factor Mul so it is not read as the chain."""
    return Mul((node,)) if isinstance(node, Div) else node


def _flat(kind: type, node) -> tuple:
    """The children of a node of the same kind (to flatten ``a + b + c``), else the node."""
    if isinstance(node, kind):
        return node.factors if kind is Mul else node.terms
    return (node,)


def parse(source: str) -> Program:
    """Parse einderiv text into a :class:`Program` (its last statement is the output)."""
    if not isinstance(source, str):
        raise EinderivError(f"expected the expression as a string, got {type(source).__name__}")
    if all(not line.split("#")[0].strip(" \t;") for line in source.splitlines()):
        raise ParseError("empty input: write an expression such as 'f = x_i x_i'", source, 0, 0)
    try:
        tree = _parser().parse(source)
    except UnexpectedInput as err:
        raise _syntax_error(err, source) from None
    try:
        program = _ToIR(source).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, EinderivError):
            raise err.orig_exc from None
        raise
    for statement in program.statements:
        depth = nesting_depth(statement.rhs)
        if depth > MAX_DEPTH:
            raise ParseError(
                f"the expression is nested {depth} levels deep, over the limit of {MAX_DEPTH} "
                "(einderiv.parser.MAX_DEPTH): name the inner parts in statements of their own",
                source,
                0,
                0,
            )
    return program


def nesting_depth(expr) -> int:
    """How deeply operations nest in ``expr`` (computed without recursion)."""
    deepest = 0
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in _children(node):
            stack.append((child, depth + 1))
    return deepest


def _children(node) -> tuple:
    if isinstance(node, Neg):
        return (node.operand,)
    if isinstance(node, Add):
        return node.terms
    if isinstance(node, Mul):
        return node.factors
    if isinstance(node, Div):
        return (node.numerator, node.denominator)
    if isinstance(node, Call):
        return (node.arg,)
    if isinstance(node, Pow):
        return (node.base,)
    return ()
