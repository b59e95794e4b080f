"""Text -> IR: the Lark grammar in ``grammar/einderiv.lark`` and a Transformer into ``ir`` nodes."""

from __future__ import annotations

import difflib
import re
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
_LETTERS_AND_DIGITS = re.compile(r"(?:[A-Za-z][0-9]*)+\Z")
_ONE_INDEX = re.compile(r"[A-Za-z][0-9]*")


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


#: Names people write for something einderiv spells differently, or has no function for.
_OTHER_NAMES = {
    "ln": "the natural logarithm is log(...)",
    "asin": "write arcsin(...)",
    "acos": "write arccos(...)",
    "atan": "write arctan(...)",
    "sgn": "write sign(...)",
    "logistic": "write sigmoid(...)",
    "heaviside": "write step(...) (0 at 0)",
    "tr": "there is no trace function: write the repeated index, X_ii (for an expression, name it first: "
    "M_ij = ...; t = M_ii)",
    "trace": "there is no trace function: write the repeated index, X_ii (for an expression, name it first: "
    "M_ij = ...; t = M_ii)",
    "norm": "there is no norm function: write the Euclidean norm as sqrt(x_i x_i)",
    "max": "max is not supported (it is not differentiable where the arguments tie); relu(...) and abs(...) are",
    "min": "min is not supported (it is not differentiable where the arguments tie); relu(...) and abs(...) are",
}


def _closest(name: str, known) -> str | None:
    """The known name nearest to a misspelt one (difflib), if any is near enough; swapped
    letters first (``tahn`` is tanh, not tan)."""
    swapped = [k for k in known if sorted(k) == sorted(name)]
    if swapped:
        return swapped[0]
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.7)
    return close[0] if close else None


def unknown_function(name: str) -> str:
    """The message for ``name(`` with an unknown name: the closest known function when it looks
    like a misspelling (``sigmod`` -> sigmoid), else the list, and the product reading."""
    if name in _OTHER_NAMES:
        return f"unknown function {name!r}: {_OTHER_NAMES[name]}"
    close = _closest(name, [*FUNCTIONS, *MATRIX_FUNCTIONS, *REDUCTIONS])
    if close in REDUCTIONS:
        return f"unknown function {name!r}: did you mean {close}_i(...)?"
    if close is not None:
        return f"unknown function {name!r}: did you mean {close}?"
    return (
        f"unknown function {name!r}; known functions: {known_functions()}; "
        f"for a product write '{name} (...)' or '{name}*(...)'"
    )


def _split_braced(token: Token, body: str, source: str) -> tuple[str, ...]:
    """The indices of a braced list, as LaTeX reads it: ``{ij}`` is i, j (each letter with the
    digits after it: ``{i1j2}`` is i1, j2); commas separate longer names, ``{in,out}``, and one
    longer name alone takes a trailing comma, ``{in,}``."""
    if "," not in body:
        letters = "".join(body.split())
        if not letters:
            raise _fail(token, "empty index list '{}': write the indices, as in W_{in,out}", source)
        if _LETTERS_AND_DIGITS.match(letters):
            return tuple(_ONE_INDEX.findall(letters))
        names = (letters,)
    else:
        names = tuple(part.strip() for part in body.split(","))
        if len(names) > 1 and names[-1] == "":
            names = names[:-1]  # x_{in,}: one multi-letter index
    for name in names:
        if not _INDEX_NAME.match(name):
            raise _fail(
                token,
                f"bad index name {name or '(nothing)'!r} in {str(token)!r}: "
                "index names are letters and digits starting with a letter",
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
    @v_args(inline=True)
    def number(self, token: Token):
        return Number(Fraction(str(token)))

    def sum(self, children):
        terms = list(_flat(Add, children[0]))
        for op, term in zip(children[1::2], children[2::2]):
            terms.append(term if op == "+" else Neg(term))
        return Add(tuple(terms))

    @v_args(inline=True)
    def mul(self, left, right):
        return Mul(_flat(Mul, left) + (right,))

    @v_args(inline=True)
    def div(self, left, right):
        return Div(left, right)

    @v_args(inline=True)
    def neg(self, operand):
        return Neg(operand)

    @v_args(inline=True)
    def exponent_positive(self, token: Token):
        return Fraction(str(token))

    @v_args(inline=True)
    def exponent_negative(self, token: Token):
        return -Fraction(str(token))

    @v_args(inline=True)
    def pow(self, base, exponent):
        return Pow(base, exponent)

    @v_args(inline=True)
    def call(self, token: Token, arg, suffix: Token | None = None):
        text = str(token)[:-1]
        name, _, index_text = text.partition("_")
        if name in MATRIX_FUNCTIONS and not index_text:
            return self._matrix_call(token, name, arg, suffix)
        if suffix is not None:
            raise _fail(suffix, f"{name}(...) takes no index list after it", self.source)
        if index_text:
            if name not in REDUCTIONS:
                close = _closest(name, REDUCTIONS)
                if name not in FUNCTIONS and name not in MATRIX_FUNCTIONS and close:
                    message = f"unknown reduction {name!r}: did you mean {close}_{index_text}(...)?"
                    raise _fail(token, message, self.source)
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
            raise _fail(token, unknown_function(name), self.source)
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
        target, wrt = _split_lhs(lhs)
        return Statement(target, rhs, wrt)

    @v_args(inline=True)
    def bare(self, rhs):
        return Statement(None, rhs)

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
