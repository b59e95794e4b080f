"""Text -> IR: the Lark grammar in ``grammar/einderiv.lark`` and a Transformer into ``ir`` nodes."""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from . import limits
from .elementwise import FUNCTIONS, MATRIX_FUNCTIONS, REDUCTIONS, call_glyphs, known_functions
from .errors import EinderivError, IndexRuleError, ParseError, warn_user
from .ir import (
    SLIPPING_POWER,
    Add,
    Call,
    Delta,
    Div,
    MatrixCall,
    Mul,
    Neg,
    Number,
    Pow,
    Program,
    Statement,
    Tensor,
    children,
    walk,
)

GRAMMAR_FILE = "einderiv.lark"
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


def _calls_with_glyph(source: str, at: int) -> bool:
    """Whether ``source[at]`` is a function's glyph (``σ``, ``√``) that '(' follows: a call."""
    char = source[at]
    return char in call_glyphs() and char != "Σ" and _ascii(char) != char and source[at + 1 : at + 2] == "("


def _one_index_list(name: str, first: str, second: str) -> str:
    """``x_ij (or x_{i,j}), not x_i_j``: two index lists after one name written as one."""
    letters: list[str] = []
    for part in (first[1:], second[1:]):
        inner = part.strip("{}").replace(" ", "")
        letters += inner.split(",") if part.startswith("{") and "," in inner else list(inner)
    if not all(letters):
        return f"{name}_{{...}}, one index list, not {name}{first}{second}"
    braced = f"{name}_{{{','.join(letters)}}}"
    shown = f"{name}_{''.join(letters)} (or {braced})" if all(len(i) == 1 for i in letters) else braced
    return f"{shown}, not {name}{first}{second}"


def _power_chain(before: str, after: str) -> str:
    """The two readings of ``x^2^3``, in the user's names (``before``: the text up to the second
    '^'; ``after``: the text after it): (x^2)^3, MATLAB's, and x^(2^3), NumPy's."""
    chain = re.search(
        r"([A-Za-z][A-Za-z0-9]*(?:_(?:\{[^{}]*\}|[A-Za-z0-9]+))?|\([^()]*\))\s*\^\s*(-?\s*\d+(?:\.\d+)?)$", before
    )
    outer = re.match(r"\s*(-?\s*\d+)(?![.\d])", after)
    if chain is None or outer is None:
        return "write (x_i^2)^3 or x_i^6 (2^3^2 is 512 in NumPy and 64 in MATLAB)"
    base, written = chain.group(1), chain.group(2).replace(" ", "")
    inner, top = Fraction(written), int(outer.group(1).replace(" ", ""))

    def power(p: Fraction) -> str:
        return f"{base}^{p}" if p.denominator == 1 else f"{base}^({p})"

    matlab = f"({base}^{written})^{top}"
    if inner == 0 and top <= 0 or abs(top) > 20 or max(abs(inner.numerator), inner.denominator) ** abs(top) > 10**6:
        return f"write {matlab}, that is {power(inner * top)} (MATLAB's reading), or work out {written}^{top} (NumPy's)"
    numpy = -(abs(inner) ** top) if inner < 0 else inner**top  # x**-2**2 is x**-(2**2): the minus binds last
    if numpy == inner * top:
        return f"write {matlab} or {power(numpy)}"
    return f"write {matlab}, that is {power(inner * top)} (MATLAB's reading), or {power(numpy)} (NumPy's)"


def _trailing_function(index_text: str) -> tuple[str, str] | None:
    """(the index letters, the function) where an index list ends with a function's name, as in
    ``x_iexp(`` or ``x_{i,sigma}(`` (``x_iσ(``: the glyph is read as an index); else None."""
    if index_text.startswith("{"):
        *letters, last = index_text[1:-1].split(",")
        glyphs = {_ascii(g): g for g in call_glyphs() if _ascii(g) != g and g != "Σ"}  # sigma: σ (Σ( is a sum)
        called = last if last in FUNCTIONS else glyphs.get(last)
        return (",".join(letters), called) if letters and called is not None else None
    for function in sorted(FUNCTIONS, key=len, reverse=True):
        if index_text.endswith(function) and len(index_text) > len(function):
            return index_text[: -len(function)], function
    return None


class _Misplaced(Exception):
    """A token the line rules refuse, with the reason (turned into a :class:`ParseError`)."""

    def __init__(self, token: Token, message: str):
        super().__init__(message)
        self.token, self.message = token, message


def leading_sign(line: int, sign: str) -> str:
    """Why a line that starts with '+' or '-' after a statement is refused (index and matrix
    notation alike): it would be a statement of its own, the output, dropping the line above."""
    return (
        f"syntax error: line {line} starts with {sign!r}, which would make it a statement of its own (the "
        f"output) rather than the rest of the line above: end that line with {sign!r}, or wrap the expression "
        "in parentheses, to continue it; name the statement (L = ...) if it stands alone"
    )


#: tokens after which a line break continues the statement: ``f = x_i +`` / ``x_i``
_CONTINUES = frozenset({"ADDOP", "PLUS", "MINUS", "STAR", "SLASH", "CIRCUMFLEX", "EQUAL", "LPAR", "CALL"})
#: tokens that end with an index list or a number, which a number may not follow unspaced
_ENDS_WRITTEN = frozenset({"NUMBER", "TENSOR", "BRACED", "INDICES"})


class _Lines:
    """Line breaks as people write them: inside parentheses and after an operator a line break
    continues the statement (``L = (y_n - X_nd w_d)^2 +`` / ``lam w_d w_d``).  A line that starts
    with '+' or '-' after a statement is refused: it would be a statement of its own, the output,
    silently dropping the line above.  A number written straight after another number or an index
    list (``1.2.3``, ``x_i2``) is refused too, rather than read as a product."""

    always_accept = ("NEWLINE",)

    def process(self, stream):
        depth, previous, line_start = 0, None, False
        for token in stream:
            if token.type == "NEWLINE":
                if depth > 0 or (previous is not None and previous.type in _CONTINUES):
                    continue
                line_start = previous is not None and previous.type != "SEMICOLON"
                yield token
                continue
            if line_start and token in ("+", "-"):
                raise _Misplaced(token, leading_sign(token.line, str(token)))
            if (
                token.type == "NUMBER"
                and previous is not None
                and previous.type in _ENDS_WRITTEN
                and previous.end_pos == token.start_pos
            ):
                if previous.type == "NUMBER":
                    message = f"two numbers run together: {str(previous)}{str(token)}"
                else:
                    message = (
                        f"a number straight after the index list of {str(previous)}: write {{...}} for an index "
                        f"with digits (x_{{i2}}), or a space for a product ({str(previous)} {str(token)})"
                    )
                raise _Misplaced(token, f"syntax error: {message}")
            line_start = False
            if token.type in ("LPAR", "CALL"):
                depth += 1
            elif token.type == "RPAR":
                depth = max(0, depth - 1)
            previous = token
            yield token


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", maybe_placeholders=False, postlex=_Lines())


def _fail(token: Token, message: str, source: str) -> ParseError:
    return ParseError(message, source, token.line or 0, token.column or 0)


MAX_DIGITS = 100


def literal_problem(text: str) -> str | None:
    """Why a numeric literal cannot be held exactly, or None: einderiv keeps numbers as exact
    fractions, so ``1e5000`` (beyond float64, about 1.8e308), ``1e-5000`` (below its smallest,
    about 5e-324) and a literal of more than MAX_DIGITS digits are refused, not built."""
    mantissa = text.lower().split("e")[0]
    digits = mantissa.replace(".", "").lstrip("0")
    if len(digits.rstrip("0")) > MAX_DIGITS:
        return f"the number {text[:20]}{'...' * (len(text) > 20)} has more than {MAX_DIGITS} significant digits"
    value = float(text)  # inf or 0.0 for an exponent out of range, however long
    if value == float("inf"):
        return f"the number {text} is beyond float64's range (about 1.8e308)"
    if value == 0 and digits:
        return f"the number {text} is below float64's smallest (about 5e-324): write 0 if you mean it"
    return None


def _literal(token: Token, source: str) -> Fraction:
    problem = literal_problem(str(token))
    if problem is not None:
        raise _fail(token, problem, source)
    return Fraction(str(token))


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


def _variable_power(before: str, exponent: str) -> str:
    """Advice for a variable exponent, in the user's own base and exponent: ``exp(t log(s)) for
    s^t``; ``before`` is the text up to the ``^``."""
    base = _operand_before(before.rstrip(" \t")) or "b"
    negative = exponent.startswith("-")
    factor = exponent[1:] if negative else exponent
    if re.fullmatch(r"\(\s*-?\s*[A-Za-z0-9_{}.]+\s*\)", factor):  # s^(t): exp(t log(s))
        factor = factor[1:-1].strip()
        negative, factor = factor.startswith("-"), factor.lstrip("- ")
    elif base == "e" and factor.startswith("(") and _bracketed(factor, 0) == factor[1:-1].strip():
        factor = factor[1:-1].strip()  # e^(x_i y_i): exp(x_i y_i)
    if base == "e":
        return f"for e^{exponent} write exp({'-' if negative else ''}{factor})"
    log = f"log{base}" if base.startswith("(") else f"log({base})"
    return f"for a variable exponent write exp({'-' if negative else ''}{factor} {log}) for {base}^{exponent}"


def _operand_before(text: str) -> str | None:
    """The operand that ends ``text``: a bracketed group, or a name or number with its index list."""
    if text.endswith(")"):
        depth = 0
        for k in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[k], 0)
            if depth == 0:
                call = re.search(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z]+)?$", text[:k])  # exp, sum_i
                return (call.group(0) if call else "") + text[k:]
        return None
    operand = re.search(r"[A-Za-z0-9.]+(_\{[^{}]*\}|_[A-Za-z]+)?$", text)
    return operand.group(0) if operand else None


def _bracketed(source: str, start: int) -> str | None:
    """The text inside the bracket that opens at ``source[start]``, if it closes."""
    depth = 0
    for k in range(start, len(source)):
        depth += {"(": 1, ")": -1}.get(source[k], 0)
        if depth == 0:
            return source[start + 1 : k].strip()
    return None


def _describe(token: Token, spelled=str) -> str:
    if token.type == "$END":
        return "the end of the input"
    if token.type == "NEWLINE":
        return "a line break"
    return repr(spelled(token))


_GLYPH_HINTS = {
    "∑": "Einstein notation sums repeated indices by itself (f = x_i y_i), so drop the '∑', "
    "or write the sum as sum_i(...)",
    "√": "write a square root with parentheses, √(x_i x_i), or as sqrt(x_i x_i)",
    "⊙": "'⊙' is matrix notation; in index notation an elementwise product shares its indices: c_i = a_i b_i",
    "ᵀ": "'ᵀ' is matrix notation; in index notation a transpose swaps the indices: A_ji",
    **dict.fromkeys(
        "⊤’′",
        "a transpose is x' (an ASCII apostrophe) or x^T in matrix notation; in index notation it swaps the "
        "indices: A_ji",
    ),
    "|": "write abs(x) for an absolute value, norm2(x) for a vector's norm and det(A) for a determinant",
    "‖": "write a Euclidean norm as norm2(x) in matrix notation, or sqrt(x_i x_i)",
    "\\": "there is no left division: write inv(A) b in matrix notation, or inv(A)_ij b_j",
    **dict.fromkeys(
        "<>⟨⟩",
        "write an inner product as x^T y in matrix notation or x_i y_i; there are no comparisons "
        "(step(x) is 1 where x > 0)",
    ),
    **dict.fromkeys("≤≥≠", "there are no comparisons: step(x) is 1 where x > 0"),
    "@": "'@' is matrix notation (A @ x); in index notation a product shares its summed index: y_i = A_ij x_j",
    "∘": "'∘' is matrix notation's elementwise product; in index notation it shares its indices: c_i = a_i b_i",
    "÷": "write a quotient with '/'",
    **dict.fromkeys("–—‐‒", "a dash is not a minus sign: write '-' (or '−')"),
    **dict.fromkeys(
        "∇∂", "write the function itself and name the variable: einderiv.grad(f, 'x'), or --wrt x on the command line"
    ),
    **dict.fromkeys("ᵢⱼₖₗₘₙₐₑₒₓₚₛₜₕᵣᵤᵥ", "indices follow an underscore: write x_i, A_ij"),
    **dict.fromkeys(
        "₀₁₂₃₄₅₆₇₈₉", "indices are letters, not subscript digits: write x_i for an entry, or x1 for a name"
    ),
}


_MATRIX_HINTS = {
    "_": ": matrix notation has no indices; write the whole text in index notation (x_i y_i), "
    "or drop the indices (x^T y)",
    "√": ": write a square root as sqrt(...), as in sqrt(x^T x)",
    "Σ": ": matrix notation spells Greek letters by name: write Sigma for a matrix (a covariance, "
    "Sigma^-1), and a sum of all entries as sum(...)",
    "σ": ": write the logistic function as sigmoid(...), and a scale named σ as sigma",
    **dict.fromkeys(
        "·×",
        ": in matrix notation write a matrix product by juxtaposition (A B, A x) and an inner product as x^T y",
    ),
    **dict.fromkeys("⊤’′‘´`", ": write a transpose as x' (an ASCII apostrophe) or x^T"),
    **dict.fromkeys(
        "⁰¹³⁴⁵⁶⁷⁸⁹⁻⁺",
        ": matrix notation reads the superscripts ², ⁻¹ and ⁻ᵀ; write other powers with '^', as in (x^T x)^3",
    ),
}


_BACKSLASH_HINTS = {  # LaTeX's \| and its spacing commands, before they read as a left division
    "|": "'\\|' is LaTeX's norm: write norm2(x) in matrix notation, or sqrt(x_i x_i)",
    **dict.fromkeys(",;:!", "drop LaTeX's spacing commands (\\, \\; \\!): spaces are plain spaces"),
    **dict.fromkeys(
        "{}", "'\\{' and '\\}' are LaTeX's braces: group with plain brackets ( ), and write an index list as W_{in,out}"
    ),
}


_LATEX_HINTS = {
    "frac": "write a fraction with '/', as in 1/2 x_i x_i or (a + b) / c",
    "sum": "Einstein notation sums a repeated index by itself (x_i y_i); write other sums as sum_i(...)",
    "cdot": "write a product by juxtaposition (x_i y_i) or with '*'",
    "times": "write a product by juxtaposition (x_i y_i) or with '*'",
    "sqrt": "write a square root as sqrt(...)",
    "left": "drop \\left and \\right: brackets are plain ( and )",
    "right": "drop \\left and \\right: brackets are plain ( and )",
}


def _latex_command(source: str, position: int) -> str:
    """The LaTeX command (``frac``) that starts at the backslash at ``position``, or ''."""
    end = position + 1
    while end < len(source) and source[end].isascii() and source[end].isalpha():
        end += 1
    return source[position + 1 : end]


def _latex_hint(command: str) -> str:
    known = _LATEX_HINTS.get(command)
    if known is None and command in ("exp", "log", "sin", "cos", "tanh", "det", "tr"):
        known = f"write {command}(...) without the backslash"
    if known is None:
        known = "write names and functions plainly (lam, exp(...), x_i)"
    return f"'\\{command}' is LaTeX, which einderiv writes (--format latex) but does not read: {known}"


def _comma_hint(function: str, matrix: bool, first: str = "") -> str:
    """Why ``max(0, x)`` and ``sum(X, 1)`` do not parse: every function takes one argument
    (``first``: the text of the first argument)."""
    if function == "max":
        if first.strip() in ("0", "0.0"):
            return ": a function takes one argument; max(0, x) is relu(x)"
        return ": a function takes one argument; max(a, b) is (a + b + abs(a - b)) / 2"
    if function in ("sum", "mean") and not matrix:
        return f": {function} takes one argument; name the index it reduces: {function}_i(...)"
    if function in ("sum", "mean"):
        return (
            f": {function} takes one argument and reduces all of it; for one axis, write the index form "
            f"({function}_i(X_ij))"
        )
    if function in FUNCTIONS or function in MATRIX_FUNCTIONS or function in REDUCTIONS:
        return f": {function}(...) takes one argument"
    return ""


#: what follows an underscore in a name of its own, as papers write them (A_inv, x_0, theta_hat)
_NAME_SUFFIXES = frozenset({"inv", "hat", "bar", "new", "old", "opt", "est", "prev", "next", "init", "star", "tilde"})


def _subscripted_name(source: str, at: int) -> tuple[str, str] | None:
    """``("A", "1")`` where the '_' at ``at`` joins a name to digits or a word that is no index
    list (``A_1``, ``x_0``, ``A_inv``), else None (``A_ij`` is an index list)."""
    head = re.search(r"[A-Za-z][A-Za-z0-9]*$", source[:at])
    tail = re.match(r"[A-Za-z0-9]+", source[at + 1 :])
    if head is None or tail is None:
        return None
    suffix = tail.group(0)
    return (head.group(0), suffix) if suffix.isdigit() or suffix.lower() in _NAME_SUFFIXES or len(suffix) > 3 else None


def syntax_error(err: UnexpectedInput, source: str, spelled=str, matrix: bool = False) -> ParseError:
    """The parser's complaint as a ParseError; ``spelled(token)`` is a token as the user typed it;
    ``matrix``: the text was read as matrix notation."""
    line, column = err.line, err.column
    if isinstance(err, UnexpectedCharacters):
        char = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        hint = ""
        named = _subscripted_name(source, err.pos_in_stream) if matrix and char == "_" else None
        if named:  # A_1, A_inv: a name of its own
            hint = (
                f": matrix notation has no indices, and a name has no '_': write {''.join(named)} for {'_'.join(named)}"
            )
        elif matrix and char in _MATRIX_HINTS:
            hint = _MATRIX_HINTS[char]
        elif char == "." and re.match(r"\.T(?![A-Za-z0-9])", source[err.pos_in_stream :]):
            hint = ": write a transpose as X^T (or X'), not NumPy's X.T" + (
                "" if matrix else " (in index notation, swap the indices: A_ji)"
            )
        elif char == "." and source[err.pos_in_stream : err.pos_in_stream + 5] == ".dot(":
            hint = ": write a dot product as x^T y (matrix notation) or x_i y_i, not NumPy's x.dot(y)"
        elif not matrix and char == "." and source[err.pos_in_stream + 1 : err.pos_in_stream + 2] in ("*", "/", "^"):
            hint = (
                ": index notation multiplies elementwise by writing the factors side by side (x_i y_i); "
                ".* is matrix notation"
            )
        elif matrix and _letters(char):
            hint = f": matrix notation spells Greek letters by name: write {_letters(char)}"
        elif char == "_" and re.match(r"_\{?[0-9]", source[err.pos_in_stream :]):
            hint = (
                ": an index is a letter (x_i, A_ij), summed or free, not a numbered entry such as x_1; "
                "a scalar of its own is a name, as x1"
            )
        elif (
            char == "_"
            and source[err.pos_in_stream + 1 : err.pos_in_stream + 2] == "{"
            and "}" not in re.split(r"[\s+\-*/^()=;]", source[err.pos_in_stream + 2 :] + " ", maxsplit=1)[0]
        ):
            hint = ": the index list's '{' is not closed: write W_{in,out}"
        elif char == "_" and (after := source[err.pos_in_stream + 1 : err.pos_in_stream + 2]) and not after.isascii():
            hint = f": an index is an ASCII letter or a Greek one, not {after!r} (U+{ord(after):04X})"
        elif char == "_":
            hint = ": an index list follows a name directly, as in R_mp, W_{in,out} or inv(M)_ij"
        elif char == "{" and source[: err.pos_in_stream].endswith("^"):
            inverse = "A^-1" if matrix else "inv(A)_ij (A^-1 in matrix notation)"
            hint = f": an exponent is a number without braces (x^2, x^-1); an inverse is {inverse}"
        elif char == "{" or char == "}":
            hint = ": braces only hold index lists, as in W_{in,out}"
        elif char == "\\" and (command := _latex_command(source, err.pos_in_stream)):
            hint = ": " + _latex_hint(command)
        elif char == "\\" and (after := source[err.pos_in_stream + 1 : err.pos_in_stream + 2]) in _BACKSLASH_HINTS:
            hint = ": " + _BACKSLASH_HINTS[after]
        elif char == "\\" and source[err.pos_in_stream + 1 :].lstrip(" \t")[:1] in ("\n", "\r", ""):
            hint = ": a line needs no continuation mark: a statement goes on after an operator or inside brackets"
        elif char in _GLYPH_HINTS:
            hint = ": " + _GLYPH_HINTS[char]
        elif char == "," and (call := re.search(r"([A-Za-z][A-Za-z0-9]*)\s*\(([^()]*)$", source[: err.pos_in_stream])):
            hint = _comma_hint(call.group(1), matrix, call.group(2))
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
        start = getattr(token, "start_pos", None) or 0
        before = source[:start].rstrip(" \t")
        if str(token) == "*" and before.endswith("*") and source[start - 1 : start] == "*" and spelled(token) == "*":
            wanted = ": a power is written with '^', as in x_i^2"  # x_i**2
        elif str(token) == "*" and before.endswith("*"):  # x_i ·· y_i, x_i * * y_i
            wanted = f": two product signs in a row; write one ({spelled(token)}) or none: x_i y_i"
        elif str(token) == "^" and re.search(r"\^\s*-?\s*(\d+(\.\d*)?|\([^()]*\))$", before):  # x_i^2^2
            wanted = ": a power of a power needs brackets: " + _power_chain(before, source[start + 1 :])
        elif str(token).startswith("_") and (
            named := re.search(r"([A-Za-z][A-Za-z0-9]*)(_(?:\{[^{}]*\}|[A-Za-z][A-Za-z0-9]*))$", before)
        ):  # x_i_j
            wanted = ": an index list is written once, after the name: " + _one_index_list(*named.groups(), str(token))
        elif (opened := re.search(r"\^\((\s*-\s*)?$", before)) and (
            not opened.group(1) and str(token) != "-" or re.match(r"[A-Za-z]", str(token))
        ):  # x_i^(a + 1), e^(-x)
            exponent = _bracketed(source, opened.start() + 1) or "a"
            wanted = ": an exponent is a number, as in x_i^0.5, x_i^(1/2) or x_i^(-1); " + _variable_power(
                before[: opened.start()], f"({exponent})"
            )
        elif re.search(r"\^\s*-?$", before) and str(token) == "+":  # s^+2
            wanted = ": an exponent is a number with no '+' sign, as in x_i^2 or x_i^-1"
        elif (
            re.search(r"\^\s*-?$", before)
            and re.match(r"[A-Za-z]", str(token))
            and not (before.endswith("^") and str(token)[:1] == "T" and str(token)[1:2].isalpha())
        ):  # 2^x, 2^-x (not x^TAx: a glued transpose, below)
            sign = "-" if before.endswith("-") else ""
            wanted = ": an exponent is a number, as in x_i^2 or x_i^-1; " + _variable_power(
                re.sub(r"\^\s*-?$", "", before), sign + spelled(token)
            )
        elif re.search(r"\^\(\s*-?\s*\d+(\.\d*)?\s*$", before) and str(token) in ("+", "*", "^", "-"):  # s^(2+1)
            wanted = ": an exponent is one number or one fraction, as in x_i^3 or x_i^(1/2): work out the sum first"
        elif str(token).startswith("_") and re.search(r"(\^\s*-?\s*\d+|[⁻¹²³⁰-⁹])$", before):  # A⁻¹_ij, A^-1_ij
            wanted = (
                ": a power takes no index list after it: an inverse's entries are inv(A)_ij or (A⁻¹)_ij, "
                "and an entry squared is A_ij^2"
            )
        glued = str(token)[1:]
        if str(token)[:1] == "T" and glued.isalpha() and source[start - 1 : start] == "^":  # x^Tx, x^TAx
            wanted = f": a transpose is ^T followed by a space or a bracket: ^T {str(token)[1:]}, as in x^T x"
        elif str(token).split("_")[0] == "T" and start > 0 and source[start - 1] == "^":  # A^T_ij
            wanted = (
                ": a transpose in index notation swaps the indices (A_ji for the transpose's ij entry); "
                "A^T is matrix notation (notation='matrix', --notation matrix)"
            )
        return ParseError(
            f"syntax error: unexpected {_describe(token, spelled)}{wanted}", source, token.line, token.column
        )
    return ParseError(f"syntax error: {err}", source, line or 0, column or 0)


#: Names people write for something einderiv spells differently, or has no function for.
OTHER_NAMES = {
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
    "maximum": "maximum is not supported (it is not differentiable where the arguments tie); relu(...) and abs(...) "
    "are",
    "minimum": "minimum is not supported (it is not differentiable where the arguments tie); relu(...) and abs(...) "
    "are",
    "log10": "there is no log10: write log(...) / log(10)",
    "log2": "there is no log2: write log(...) / log(2)",
    "pow": "write a power with ^ and a number: x_i^2",
    "inverse": "an inverse's entries are inv(A)_ij",
    "transpose": "a transpose in index notation swaps the indices: A_ji for the transpose's ij entry",
}


def closest_name(name: str, known) -> str | None:
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
    if name in OTHER_NAMES:
        return f"unknown function {name!r}: {OTHER_NAMES[name]}"
    lower = name.lower()
    if lower != name and lower in OTHER_NAMES:
        return f"unknown function {name!r}: {OTHER_NAMES[lower]}"
    if lower != name and lower in (*FUNCTIONS, *MATRIX_FUNCTIONS, *REDUCTIONS):
        spelled = lower + "_i" * (lower in REDUCTIONS)
        return f"unknown function {name!r}: function names are lower case, {spelled}(...)"
    close = closest_name(name, [*FUNCTIONS, *MATRIX_FUNCTIONS, *REDUCTIONS])
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
        self.tokens: dict[int, tuple] = {}  # id of a Number or Call -> (it, its token): where it was written

    # -- references -------------------------------------------------------------------------
    def _reserved(self, token: Token, name: str, indices: tuple[str, ...] = ()) -> None:
        """A reduction's or a matrix function's name is never a tensor (``sum_i (x_i)`` with a
        space would multiply an array named sum by the group)."""
        if name in REDUCTIONS:
            over = "".join(indices) if all(len(i) == 1 for i in indices) else "{" + ",".join(indices) + "}"
            shown = f"{name}_{over or 'i'}(...)"
            raise _fail(
                token, f"{name!r} is a reduction: write {shown}, the indices directly followed by '('", self.source
            )
        if name in MATRIX_FUNCTIONS:
            shown = f"{name}(M)_ij" if MATRIX_FUNCTIONS[name] else f"{name}(M)"
            message = f"{name!r} is a matrix function: write {shown}, the name directly followed by '('"
            raise _fail(token, message, self.source)

    def _ref(self, token: Token, name: str, indices: tuple[str, ...]):
        self._reserved(token, name, indices)
        if name == DELTA_NAME:
            if len(indices) != 2:
                raise _fail(token, f"delta takes exactly two indices (delta_ij), got {str(token)!r}", self.source)
            return Delta(*indices)
        tensor = Tensor(name, indices)
        self.tokens[id(tensor)] = (tensor, token)
        return tensor

    @v_args(inline=True)
    def scalar_ref(self, token: Token):
        if str(token) == DELTA_NAME:
            raise _fail(token, "delta takes exactly two indices (delta_ij)", self.source)
        self._reserved(token, str(token))
        if str(token) in FUNCTIONS:
            # log^2 x_i, x_i log, (log) x_i, step/2 x_i: a function without its parentheses, never a
            # scalar input named log (a tensor with indices, sign_i, may still take the name)
            following = self.source[token.end_pos :].lstrip(" \t")
            if following.startswith("(") or following.startswith("*") and following[1:].lstrip(" \t")[:1] == "(":
                # exp (x_i), exp*(x_i): a call with a stray space or star
                raise _fail(
                    token,
                    f"{str(token)!r} is a function: write {str(token)}(...), the name directly followed by '('",
                    self.source,
                )
            raise _fail(
                token,
                f"{str(token)!r} is a function, not an input: write {str(token)}(...) with its argument in "
                "parentheses, and give a scalar input another name",
                self.source,
            )
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
        number = Number(_literal(token, self.source))
        self.tokens[id(number)] = (number, token)
        return number

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
        last = _flat(Mul, left)[-1]
        denominator = last.denominator if isinstance(last, Div) else None
        while isinstance(denominator, Neg):  # a / -2b
            denominator = denominator.operand
        if isinstance(denominator, Number):
            _, token = self.tokens.get(id(denominator), (None, None))
            following = token is not None and re.match(GLUED, self.source[token.end_pos :])
            if following:
                # x_i x_i / 2N, 1/2s^2: textbooks mean 1/(2N); as written, '/' takes the number alone
                name = following.group()
                raise _fail(token, glued_denominator(str(token), name), self.source)
            power = spaced_power(self.source[token.end_pos :]) if token is not None else None
            if power and not _a_number(last.numerator):
                # exp(-x_i x_i / 2 s^2): a Gaussian's 1/(2 s^2), where '/' takes the 2 alone
                raise _fail(token, spaced_denominator(str(token), power), self.source)
        return Mul(_flat(Mul, left) + (_bare(right),))

    @v_args(inline=True)
    def div(self, left, right):
        if isinstance(right, Number) and id(right) in self.tokens:
            _, token = self.tokens[id(right)]
            message = exponent_slip(self.source[: token.start_pos], str(token))
            if message:
                raise _fail(token, message, self.source)
        numerator = left
        if isinstance(left, _Paren) and isinstance(left.inner, (Mul, Div)):
            numerator = Mul((left.inner,))  # (a b) / c: a group, not the chain a b / c
        return Div(_bare(numerator), _bare(right))

    @v_args(inline=True)
    def neg(self, operand):
        return Neg(_bare(operand))

    @v_args(inline=True)
    def exponent_positive(self, token: Token):
        return _literal(token, self.source)

    @v_args(inline=True)
    def exponent_negative(self, token: Token):
        return -_literal(token, self.source)

    @v_args(inline=True)
    def exponent_ratio(self, numerator: Token, denominator: Token):
        """``x_i^(1/2)``, ``x_i^(2/3)``: an exact rational exponent."""
        if _literal(denominator, self.source) == 0:
            raise _fail(denominator, "the exponent divides by zero", self.source)
        return _literal(numerator, self.source) / _literal(denominator, self.source)

    def exponent_negative_ratio(self, children):
        return -self.exponent_ratio(*children)

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
            other = f": {OTHER_NAMES[name]}" if name in OTHER_NAMES else ""  # inverse(A)_ij
            raise _fail(suffix, f"{name}(...) takes no index list after it{other}", self.source)
        if index_text:
            if name not in REDUCTIONS and name.lower() in REDUCTIONS:
                message = f"unknown reduction {name!r}: function names are lower case, {name.lower()}_{index_text}(...)"
                raise _fail(token, message, self.source)
            if name not in REDUCTIONS:
                close = closest_name(name, REDUCTIONS)
                if name not in FUNCTIONS and name not in MATRIX_FUNCTIONS and close:
                    message = f"unknown reduction {name!r}: did you mean {close}_{index_text}(...)?"
                    raise _fail(token, message, self.source)
                if name in OTHER_NAMES:
                    raise _fail(token, f"{name}_{index_text}(...): {OTHER_NAMES[name]}", self.source)
                if name not in FUNCTIONS and name not in MATRIX_FUNCTIONS:  # x_i(1 - x_i): a product meant
                    message = (
                        f"{name}_{index_text}( reads as a call, and {name!r} is no function: put a space or '*' "
                        f"before '(' for a product ({name}_{index_text} (...))"
                    )
                    called = _trailing_function(index_text)
                    if called is not None:  # x_iexp(z_i), x_iσ(z_i): a function written onto the indices
                        letters, function = called
                        message = (
                            f"{name}_{index_text}( reads as a call, and {name!r} is no function: for {name}_{letters} "
                            f"times {function}(...), put a space before the function name"
                        )
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
            call = Call(name, arg, over)
            self.tokens[id(call)] = (call, token)
            return call
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
        target, wrt = _split_lhs(_bare(lhs))
        return self._sized(Statement(target, _bare(rhs), wrt))

    @v_args(inline=True)
    def bare(self, rhs):
        return self._sized(Statement(None, _bare(rhs)))

    def _sized(self, statement: Statement) -> Statement:
        self._divided_sums(statement)
        return self._lengths(statement)

    def _divided_sums(self, statement: Statement) -> None:
        """Refuse ``x_i A_ij x_j / x_k x_k``: as written (as in Python) '/' takes x_k alone, and the
        sum over k multiplies 1/x_k by x_k, N times the numerator, where a Rayleigh quotient is
        meant.  A summed index of a denominator that only the same tensor after it repeats is an
        error naming both bracketings: as written the two cancel to a count, whatever the tensor
        holds.  (``a_i / c_i b_i``, i also in the numerator, is Σ a_i b_i / c_i as documented;
        ``H_ij = 1 / x_k A_ik A_jk`` is A diag(1/x) Aᵀ; ``f_k = a / x_k x_k``, k an index of the
        result, is a elementwise.)"""
        free = set(statement.target.indices) if statement.target is not None else set()
        for node in walk(statement.rhs):
            if not isinstance(node, Mul):
                continue
            for position, factor in enumerate(node.factors):
                if not isinstance(factor, Div):
                    continue
                denominator = _tensor_of(factor.denominator)
                if denominator is None:
                    continue
                before = {i for f in (*node.factors[:position], factor.numerator) for n in walk(f) for i in _indices(n)}
                for later in node.factors[position + 1 :]:
                    other = _tensor_of(later)
                    if other is None or other.name != denominator.name:
                        continue  # 1 / x_k A_ik A_jk is A diag(1/x) A^T, as written
                    shared = [i for i in denominator.indices if i in other.indices]
                    shared = [i for i in shared if i not in free and i not in before]
                    if not shared:
                        continue
                    _, token = self.tokens.get(id(denominator), (None, None))
                    below, after = str(denominator), str(other)
                    message = (
                        f"'/ {below} ... {after}': {shared[0]!r} is in the denominator and, summed, only in a "
                        f"factor after it, and as written '/' takes {below} alone, so the sum over "
                        f"{shared[0]!r} multiplies 1/{below} by {after}; to divide by the sum, put the denominator "
                        "in brackets, "
                        f"/ ({below} {after}); for the sum as written, bracket the division, (... / {below}) {after}"
                    )
                    raise IndexRuleError(message) if token is None else _fail(token, message, self.source)

    def _lengths(self, statement: Statement) -> Statement:
        """``statement``, unless a sum runs over a letter that its argument does not write and
        nothing else in the statement writes: ``sum_j(x_i)`` would be x_i times a length no array
        gives.  (``sum_i(c) + sum_i(x_i)`` is N c plus the sum of x, one letter one length, as
        numpy.einsum reads it.  ``mean_j(c)`` of an argument that writes no letter is c at any
        length; ``mean_n((y_i - X_id w_d)^2)``, whose argument writes others, is a slip for
        ``mean_i``: read as written it would be the sum over i, N times the mean.)"""
        for node in walk(statement.rhs):
            if not (isinstance(node, Call) and node.over):
                continue
            inside = list(walk(node.arg))
            written = list(dict.fromkeys(i for n in inside for i in getattr(n, "indices", ())))
            absent = [i for i in node.over if i not in written]
            if not absent or (node.func == "mean" and not written):
                continue
            within = {id(n) for n in inside}
            elsewhere = {i for n in walk(statement.rhs) if id(n) not in within for i in getattr(n, "indices", ())}
            elsewhere |= set(statement.target.indices if statement.target is not None else ())
            missing = [i for i in absent if i not in elsewhere]
            if missing:
                _, token = self.tokens.get(id(node), (None, None))
                message = (
                    f"{node.func}_{''.join(node.over)}(...): {missing[0]!r} does not occur in its argument or "
                    "anywhere else in the statement, so nothing gives it a length"
                )
                if node.func == "mean":
                    message = (
                        f"mean_{''.join(node.over)}(...): {missing[0]!r} does not occur in its argument or anywhere "
                        f"else in the statement, so the mean over it would be its argument unchanged; the "
                        f"argument writes {', '.join(repr(i) for i in written)} (for the mean over {written[0]!r} "
                        f"write mean_{written[0]}(...))"
                    )
                raise IndexRuleError(message) if token is None else _fail(token, message, self.source)
        return statement

    def start(self, children):
        return Program(tuple(c for c in children if isinstance(c, Statement)))


def _tensor_of(node):
    """The tensor of a factor ``x_k``, ``x_k^2`` or ``-x_k``, else None."""
    while isinstance(node, (Neg, Pow)):
        node = node.operand if isinstance(node, Neg) else node.base
    return node if isinstance(node, Tensor) and node.indices else None


def _indices(node) -> tuple:
    """The indices a node writes itself (a tensor's, a delta's, a call's summed letters)."""
    if isinstance(node, Delta):
        return (node.first, node.second)
    return tuple(getattr(node, "indices", ())) + tuple(getattr(node, "over", ()))


# -- text as people paste it --------------------------------------------------------------------
#
# Before parsing, text copied from PDFs and from einderiv's own ``pretty`` output is rewritten to
# the ASCII language, remembering where each character came from, so that error carets stay
# under the user's own column.  ``−`` is '-'; ``·``, ``⋅``, ``×`` and ``∗`` are '*'; a Greek letter
# is its English name (``θ_i`` is theta_i, ``Φ_nd`` is Phi_nd, ``δ_ij`` the delta); ``∂`` is the
# 'd' of a derivative-named statement (``∂²f/∂x_k ∂x_l`` is d2f/dx_k dx_l); ``σ(`` is sigmoid,
# ``√(`` sqrt and ``Σ_i(`` sum_i, as ``pretty`` prints them; superscripts are powers (``x²`` is
# x^2) and ``(M⁻¹)_ij`` is inv(M)_ij.  A Greek index is one index (``T_μν`` is T_{mu,nu}).

_OPERATORS = {"\u2212": "-", "\u00b7": "*", "\u22c5": "*", "\u00d7": "*", "\u2217": "*"}
_SPACES = frozenset("\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000")
_SUPERSCRIPTS = dict(zip("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))
_DIGITS = "0123456789"  # str.isdigit() is true for superscripts too: x_i² is x_i^2
_INVERSE = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9]*)\s*\^-1\s*\)(?=_)")
_GREEK_WORDS = {"LAMDA": "lambda"}


@lru_cache(maxsize=512)
def _letters(char: str) -> str | None:
    """The ASCII spelling of a letter other than a-z: a Greek letter's English name (capital
    Greek capitalised), a styled Latin letter's plain one (mathematical italic x is x)."""
    if unicodedata.category(char) not in ("Ll", "Lu"):
        return None  # not ᵀ (a modifier letter) nor ₁
    plain = unicodedata.normalize("NFKC", char)
    if plain.isascii():
        return plain if plain.isalpha() else None
    if len(plain) != 1:
        return None
    match = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER (?:FINAL )?([A-Z]+)", unicodedata.name(plain, ""))
    if match is None:
        return None
    word = _GREEK_WORDS.get(match.group(2), match.group(2).lower())
    return word.capitalize() if match.group(1) == "CAPITAL" else word


def _ascii(char: str) -> str:
    return char if char.isascii() else _letters(char) or char


def ascii_name(name: str) -> str:
    """A name as the parser reads it: each Greek letter its English name (``θ`` is ``theta``),
    each styled Latin letter its plain one."""
    return "".join(_ascii(char) for char in name)


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha() or (not char.isascii() and _letters(char) is not None)


class _Typed:
    """``source`` rewritten to ASCII (``text``), with ``origin[k]``, the offset in ``source`` of
    the character that produced ``text[k]`` (None: the text is the source itself)."""

    def __init__(self, source: str):
        self.source = source
        self.text, self.origin = source, None
        if not source.isascii():
            self.text, self.origin = self._rewrite(source)
        if "\r" in self.text:  # a lone CR (old Mac text) ends a line, as str.splitlines has it
            self.text = re.sub(r"\r(?!\n)", "\n", self.text)  # one character for one: offsets stay
        if _INVERSE.search(self.text):
            self._inverses()

    def _rewrite(self, source: str) -> tuple[str, list[int]]:
        chars: list[str] = []
        origin: list[int] = []

        def put(text: str, at: int) -> None:
            chars.extend(text)
            origin.extend([at] * len(text))

        glyphs = call_glyphs()  # σ( is sigmoid(, as the registry's entries print
        k, n = 0, len(source)
        while k < n:
            char = source[k]
            if char == "#":  # a comment, to the end of its line: copied as written, never read
                end = source.find("\n", k)
                end = n if end < 0 else end
                put(source[k:end], k)
                k = end
                continue
            if char == "_" and k + 1 < n and (source[k + 1] == "{" or _is_letter(source[k + 1])):
                k = self._subscript(source, k, put)
                continue
            if char == "∂":  # ∂K/∂R, ∂²f/∂x ∂x, ∂^4f/...
                statement = source[max(source.rfind("\n", 0, k), source.rfind(";", 0, k)) + 1 : k]
                if "=" in statement:  # f = ∂s read as a name ds
                    raise ParseError(
                        "∂ names a derivative on a left-hand side (∂f/∂x_k = ...); "
                        + _GLYPH_HINTS["∂"].replace("write", "to differentiate, write", 1),
                        source,
                        source.count("\n", 0, k) + 1,
                        k - source.rfind("\n", 0, k),
                    )
                put("d", k)
                k += 1
                if k < n and source[k] == "^":
                    k += 1
                while k < n and (source[k] in _SUPERSCRIPTS or source[k].isdigit()):
                    put(_SUPERSCRIPTS.get(source[k], source[k]), k)
                    k += 1
                continue
            if char in _SUPERSCRIPTS:
                put("^", k)
                start = k
                while k < n and source[k] in _SUPERSCRIPTS:
                    if source[k] == "⁻" and k > start:  # s⁻¹⁻¹ is not s^-1 - 1
                        raise ParseError(
                            "a superscript exponent has one sign, at its start: write (s⁻¹)⁻¹, or s^(...)",
                            source,
                            source.count("\n", 0, k) + 1,
                            k - source.rfind("\n", 0, k),
                        )
                    put(_SUPERSCRIPTS[source[k]], k)
                    k += 1
                continue
            if char == "Σ" and source[k + 1 : k + 2] == "_" and not self._calls(source, k + 1):
                letters = re.match(r"_([^\W\d_])(?![^\W_])(\s*\()?", source[k + 1 :])
                if letters:  # Σ_i x_i^2: a sum without its brackets, not a vector named Sigma
                    i = letters.group(1)
                    message = (
                        f"Σ_{i} (...) is a sum with a stray space: write Σ_{i}(...), the index directly followed by '('"
                        if letters.group(2)
                        else f"Σ_{i} without '(' reads as a vector named Sigma: for a sum write Σ_{i}(...) or "
                        f"sum_{i}(...) around what it sums (a matrix named Σ takes two indices, Σ_ij)"
                    )
                    line = source.count("\n", 0, k) + 1
                    raise ParseError(message, source, line, k - source.rfind("\n", 0, k))
            # (a glyph that is also a name: σ is sigma; √ and Σ have their own errors)
            if char in glyphs and char != "Σ" and _ascii(char) != char and source[k + 1 : k + 2] in (" ", "\t"):
                if source[k + 1 :].lstrip(" \t").startswith("("):  # σ (z), pasted from a PDF
                    message = (
                        f"{char} (...) with a space: write {char}(...) for {glyphs[char]}, the glyph directly "
                        f"followed by '(', or {_ascii(char)} (...) for a scalar named {char} times the bracket"
                    )
                    raise ParseError(message, source, source.count("\n", 0, k) + 1, k - source.rfind("\n", 0, k))
            if char in glyphs and self._calls(source, k + 1):
                # x√(x) is x sqrt(x), not a call of 'xsqrt'
                put((" " if chars and (chars[-1].isalnum() or chars[-1] == "_") else "") + glyphs[char], k)
            elif char in _OPERATORS:
                put(_OPERATORS[char], k)
            elif char in _SPACES:
                put(" ", k)
            else:
                put(_ascii(char), k)  # what the parser cannot read, it reports at this column
            k += 1
        origin.append(len(source))
        return "".join(chars), origin

    @staticmethod
    def _calls(source: str, k: int) -> bool:
        """Whether a call's '(' follows at ``k``, after an index list (``Σ_ij(``, ``Σ_{in,}(``)."""
        if k < len(source) and source[k] == "_":
            k += 1
            if k < len(source) and source[k] == "{":
                close = source.find("}", k)
                k = close + 1 if close > 0 else len(source)
            else:
                while k < len(source) and (_is_letter(source[k]) or source[k] in _DIGITS):
                    k += 1
        return k < len(source) and source[k] == "("

    @staticmethod
    def _subscript(source: str, k: int, put) -> int:
        """Copy the index list at ``source[k] == '_'``; one with Greek letters becomes the braced
        form, each letter (with its digits) one index: ``_μν`` is ``_{mu,nu}``."""
        braced = source[k + 1] == "{"
        start = k + 2 if braced else k + 1
        end = start
        if braced:
            end = source.find("}", start)
            if end < 0 or "\n" in source[start:end]:
                put("_", k)
                return k + 1  # no closing brace: the parser reports it
        else:
            # (a reduction's index list runs to its bracket: sum_iσ(x_iσ) sums over i and σ)
            reduction = re.search(r"[A-Za-z]+$", source[:k])
            reduction = reduction is not None and reduction.group(0) in REDUCTIONS
            while end < len(source) and (_is_letter(source[end]) or source[end] in _DIGITS):
                if end > start and not reduction and _calls_with_glyph(source, end):
                    break  # x_iσ(z_i) is x_i σ(z_i), as aσ(z) is a σ(z): σ( is the sigmoid, not an index
                end += 1
        body = source[start:end]
        if body.isascii():
            for at in range(k, end + (1 if braced else 0)):
                put(source[at], at)
            return end + (1 if braced else 0)
        put("_{", k)
        if braced and "," in body:
            for at in range(start, end):
                put(_ascii(source[at]), at)
        else:
            units: list[list[int]] = []
            for at in range(start, end):
                if source[at].isspace():
                    continue
                if units and source[at].isdigit():
                    units[-1].append(at)
                else:
                    units.append([at])
            for number, unit in enumerate(units):
                if number:
                    put(",", unit[0])
                for at in unit:
                    put(_ascii(source[at]), at)
            if len(units) == 1 and len(_letters(source[units[0][0]]) or "x") > 1:
                put(",", end)  # one long index name alone: x_{theta,}
        put("}", end)
        return end + (1 if braced else 0)

    def _inverses(self) -> None:
        """``(M^-1)_ij`` (as ``pretty`` prints the inverse, ``(M⁻¹)_ij``) is ``inv(M)_ij``."""
        origin = self.origin if self.origin is not None else [*range(len(self.source) + 1)]
        chars: list[str] = []
        where: list[int] = []
        last = 0
        for match in _INVERSE.finditer(self.text):
            chars.append(self.text[last : match.start()])
            where.extend(origin[last : match.start()])
            chars.append(f"inv({match.group(1)})")  # 'inv(' at the '(', the name, ')' at the ')'
            where.extend([origin[match.start()]] * 4 + origin[match.start(1) : match.end(1)])
            where.append(origin[match.end() - 1])
            last = match.end()
        chars.append(self.text[last:])
        where.extend(origin[last:])
        self.text, self.origin = "".join(chars), where

    def spelled(self, token: Token) -> str:
        """A token as the user typed it (``θ``, where the parser read ``theta``)."""
        if self.origin is None or token.start_pos is None or token.end_pos is None:
            return str(token)
        return self.source[self.origin[token.start_pos] : self.origin[token.end_pos - 1] + 1]

    def locate(self, err: ParseError) -> ParseError:
        """The error with its line and column in the user's own text."""
        if self.origin is None or not err.line:
            return err
        lines = self.text.split("\n")
        line = min(err.line, len(lines))
        offset = sum(len(t) + 1 for t in lines[: line - 1]) + max(err.column - 1, 0)
        at = self.origin[min(offset, len(self.origin) - 1)]
        before = self.source[:at]
        column = at - (before.rfind("\n") + 1) + 1
        return ParseError(err.message, self.source, before.count("\n") + 1, column)


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
    """A parenthesised node without its parentheses, except a tensor that repeats a letter
    (:func:`_traced`)."""
    if not isinstance(node, _Paren):
        return node
    return Mul((node.inner,)) if _traced(node.inner) else node.inner


def _traced(node) -> bool:
    """Whether ``node`` is a tensor that repeats a letter: in parentheses, ``(M_ii)`` is a group
    (rule 3), the trace, so ``x_i (M_ii)`` is sum(x) tr(M) (as ``x_i (2 M_ii)`` is 2 sum(x)
    tr(M)), where ``x_i M_ii`` is x . diag(M).  The parentheses were dropped, and it was x . diag(M),
    silently (a meaning hunt's find)."""
    return isinstance(node, (Tensor, Delta, MatrixCall)) and len(set(node.indices)) < len(node.indices)


def _grouped(node):
    """A parenthesised factor at the head of a product: a product stays a nested Mul (printed in
    parentheses); a division, or a tensor that repeats a letter, is wrapped as a one-factor Mul
    so it is not read as the chain."""
    return Mul((node,)) if isinstance(node, Div) or _traced(node) else node


def exponent_slip(before: str, number: str) -> str | None:
    """The message for ``x^-1/2`` and ``(x^T x)^1/2`` (``before``: the text up to the number
    after '/'), else None: '^' takes the number alone, so these are (x^-1)/2 and (x^T x)/2, where
    the power -1/2 or 1/2 is meant (a Gaussian's ``(2 pi)^-3/2 det(S)^-1/2``, a normalised
    graph Laplacian's ``D^-1/2 A D^-1/2``).  ``x^2/2``, half the square, is as written."""
    stripped = before.rstrip()
    match = SLIPPING_POWER.search(stripped[:-1]) if stripped.endswith("/") else None
    if match is None:
        return None
    power = match.group(1).replace(" ", "")
    return (
        f"'^{power}/{number}' raises to {power} alone, then divides by {number}: write ^({power}/{number}) for "
        f"the power {power}/{number}, or (...^{power}) / {number} for the quotient"
    )


#: what may follow a denominator's number directly for ``/ 2N``, ``/ 2s^2``, ``/ 2(s + 1)``
GLUED = re.compile(r"[A-Za-z][A-Za-z0-9]*|\(")


#: a power of a name after '/ number ' (``x_i x_i / 2 s^2``): the name, then its indices and '^'
SPACED_POWER = re.compile(r"\s+([A-Za-z][A-Za-z0-9]*(?:_\{[^}]*\}|_[A-Za-z0-9]+)?)\s*(?:\^|[²³⁴⁵⁶⁷⁸⁹⁻ᵀ])")


_CALLED = re.compile(r"\s+([A-Za-z][A-Za-z0-9]*(?:_\{[^}]*\}|_[A-Za-z0-9]+)?)\(")
_POWER_AFTER = re.compile(r"\s*(?:\^|[²³⁴⁵⁶⁷⁸⁹⁻ᵀ])")  # (ᵀ as ^T, ⁻¹ as ^-1)


def spaced_power(after: str) -> str | None:
    """The factor a power of which follows a denominator's number and a space (``after``: the
    text after the number), as shown in a message: the name of ``s^2`` in ``/ 2 s^2``, or the
    call ``exp(y)`` of ``/ 2 exp(y)^2``; else None."""
    named = re.match(SPACED_POWER, after)
    if named:
        return named.group(1)
    called = re.match(_CALLED, after)
    if called is None:
        return None
    depth = 0
    for position in range(called.end() - 1, len(after)):
        depth += {"(": 1, ")": -1}.get(after[position], 0)
        if depth == 0:
            text = " ".join(after[called.start(1) : position + 1].split())  # (a call across lines: one)
            return text if re.match(_POWER_AFTER, after[position + 1 :]) else None
    return None


def _a_number(node) -> bool:
    """Whether an IR node is a number, or a negated one (``-1`` in ``-1/2 s^2``)."""
    while isinstance(node, Neg):
        node = node.operand
    return isinstance(node, Number)


def spaced_denominator(number: str, name: str) -> str:
    """The message for ``x_i x_i / 2 s^2`` (a numerator other than a number: ``1/2 s^2`` is half
    of s^2): the number alone is the denominator (both notations)."""
    return (
        f"'/ {number} {name}^...' divides by {number} alone, then multiplies by {name}^...: put the "
        f"whole denominator in brackets, / ({number} {name}^...), to divide by it (as a Gaussian's "
        f"exp(-x^2 / (2 s^2))), or write / {number} * {name}^... for the product"
    )


def glued_denominator(number: str, name: str) -> str:
    """The message for ``/ 2N`` and ``/ 2(s + 1)``: the number alone is the denominator (both notations)."""
    if name == "(":
        return (
            f"'/ {number}(' divides by {number} alone, then multiplies by the brackets: write / ({number} (...)) "
            f"to divide by both, or / {number} * (...) for the product"
        )
    return (
        f"'/ {number}{name}' divides by {number} alone, then multiplies by {name}: put the whole denominator in "
        f"brackets, / ({number} {name} ...), to divide by it, or write / {number} * {name} for the product"
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
    typed = _Typed(source)
    text = typed.text
    if all(not line.split("#")[0].strip(" \t;") for line in text.splitlines()):
        raise ParseError("empty input: write an expression such as 'f = x_i x_i'", source, 0, 0)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise typed.locate(syntax_error(err, text, typed.spelled)) from None
    except _Misplaced as err:
        raise typed.locate(_fail(err.token, err.message, text)) from None
    try:
        program = _ToIR(text).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, ParseError):
            raise typed.locate(err.orig_exc) from None
        if isinstance(err.orig_exc, EinderivError):
            raise err.orig_exc from None
        raise
    _warn_word_indices(program)
    for statement in program.statements:
        depth = nesting_depth(statement.rhs)
        if depth > limits.current().max_depth:
            raise ParseError(
                f"the expression is nested {depth} levels deep, over {limits.over('max_depth')}: name the inner "
                f"parts in statements of their own, or {limits.raise_hint('max_depth')}",
                source,
                0,
                0,
            )
    return program


#: index lists that spell what papers and scripts write after a name's '_' (y_pred, lam_max)
_WORD_INDICES = _NAME_SUFFIXES | {
    "pred",
    "true",
    "max",
    "min",
    "mean",
    "std",
    "var",
    "train",
    "test",
    "val",
    "obs",
    "fit",
    "avg",
    "norm",
    "data",
}


def _warn_word_indices(program: Program) -> None:
    """An EinderivWarning for a tensor whose index list spells a word of a name (``y_pred``): each
    letter after '_' is an index, so ``y_pred - y_true`` is one tensor y with indices p, r, e, d
    and t, r, u, e (a hunt's find: its gradient printed as if y_pred were a name)."""
    for statement in program.statements:
        nodes = [*walk(statement.rhs), *([statement.target] if statement.target is not None else [])]
        for node in nodes:
            if isinstance(node, Tensor) and len(node.indices) >= 3 and "".join(node.indices).lower() in _WORD_INDICES:
                written = f"{node.name}_{''.join(node.indices)}"
                warn_user(
                    f"{written!r} is the tensor {node.name!r} with the indices {', '.join(node.indices)} (each letter "
                    f"after '_' is an index); for a name of its own write {node.name}{''.join(node.indices)}"
                )
                return


def nesting_depth(expr) -> int:
    """How deeply operations nest in ``expr`` (computed without recursion)."""
    deepest = 0
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in children(node):
            stack.append((child, depth + 1))
    return deepest
