"""Matrix notation as input: ``f = x^T A x``, ``L = (y - X w)^T (y - X w)``, ``f = logdet(X^T X)``,
``x' * A * x`` read as an index-notation program (``f = x_i A_ij x_j``).

Inputs of rank 0, 1 and 2 are scalars, column vectors and matrices.  Their ranks are declared
(``ranks={"x": 1}``), or inferred: of the assignments under which every statement type-checks, the
one that breaks the fewest of these conventions, in this order, wins (a tie is an error asking for
``ranks=``): a name (or a sum of names) written with ``^T`` is not a scalar; a name starting with an
upper-case letter is a matrix, except that one written only as a coefficient may be a scalar (below);
``tr``, ``det``, ``logdet``, ``inv`` of a name take a matrix (of a 1x1 product such as ``x^T w``, a
scalar); a sum does not broadcast a scalar expression onto a vector (``sigmoid(w^T x + c)``: c is a
scalar); a lower-case name is not a matrix; a scalar name comes before the vector or matrix it
multiplies (``x x^T y`` is x (x^T y), not the matrix x x^T times a scalar y); an outer product (a
column times a row) is not multiplied further (``lam x^T x``: lam is a scalar); an upper-case
coefficient (``N/2 logdet(S)``, ``C sum(...)``: a count or a constant) is a matrix, else a scalar;
a scalar name is added to a vector (``X w + b``) rather than X or w made scalars; any other name is
a column vector, else a scalar.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .. import ir
from ..elementwise import in_matrix_notation
from ..errors import EinderivError, IndexRuleError, ParseError, warn_user
from ..ir import MatrixCall, Mul, Program, Tensor, walk
from ..lower import translated_text
from ..parser import OTHER_NAMES
from ..parser import parse as parse_index
from ..program import unique_name
from .syntax import (
    Call,
    Divide,
    MatrixStatement,
    Name,
    Neg,
    Number,
    Power,
    Product,
    lift_signs,
    parse_matrix_program,
)
from .translate import IDENTITY, STRUCTURAL, Reader, function_suggestion

NOTATIONS = ("auto", "index", "matrix")
RESERVED = ("delta",)
#: Assignments of ranks tried at most (3 per undeclared name); beyond, fewer alternatives are tried.
MAX_ASSIGNMENTS = 2187


@dataclass(frozen=True)
class Reading:
    """How a source text was read: ``notation`` ("index" or "matrix"), the program in index
    notation (``text``, statements joined by ``; ``, and parsed: ``program``) and the input ranks
    (declared or inferred; for index notation, those declared)."""

    notation: str
    source: str
    text: str
    ranks: tuple[tuple[str, int], ...]
    program: Program


# -- which notation ---------------------------------------------------------------------------

_MARKS = re.compile(
    r"\^\s*[{(]?\s*-?\s*T(?:\b|(?=[A-Za-z]\b))"  # ^T, ^-T, ^{T}, x^Tx (not x^Theta)
    r"|'|ᵀ|⁻ᵀ|⊙|∘|@|\.\*|\./|\.\^"  # x', xᵀ, X⁻ᵀ, A @ x, elementwise operators (x², X⁻¹ are powers in both)
    r"|\b(?:tr|sum|mean|diag|norm2|softmax|logsumexp)\s*\("  # functions that index notation writes with indices
)
_INVERSE = re.compile(r"\b[A-Z][A-Za-z0-9]*\s*⁻¹")  # A⁻¹: a matrix's inverse
_MATRIX_CALL = re.compile(r"\b(inv|det|logdet|logabsdet)\s*\(")
_SPACED_CALL = re.compile(r"\b(?:tr|diag)\s+[A-Za-z(]")  # tr X, tr A B: matrix notation's error says tr(X)


def matrix_marks(text: str) -> bool:
    """Whether ``text`` uses something only matrix notation has: ``^T``, ``'``, ``⊙``, ``.*``,
    ``./``, ``.^``, ``A⁻¹`` (of an upper-case name) or ``tr X`` in text without indices, ``tr(``, ``sum(``,
    ``diag(``, ``norm2(``, ``inv(X)`` without indices following, or ``inv``/``det``/``logdet``/``logabsdet`` of
    more than a name."""
    code = "\n".join(line.split("#", 1)[0] for line in text.split("\n"))
    if _MARKS.search(code) or (_INVERSE.search(code) and "_" not in code):  # A⁻¹ x: an inverse; a⁻¹, x_i⁻¹: 1/x
        return True
    if _SPACED_CALL.search(code) and "_" not in code:  # not a scalar named tr times X
        return True
    for match in _MATRIX_CALL.finditer(code):
        depth, end = 1, match.end()
        while end < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        argument = code[match.end() : end - 1].strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", argument):
            return True
        if match.group(1) == "inv" and not code[end:].lstrip(" \t").startswith("_"):
            return True
    return False


def detect(text: str, ranks: Mapping[str, int] | None = None) -> str:
    """The notation ``auto`` picks: matrix for text with :func:`matrix_marks`, or for text without
    any ``_`` that uses a name declared in ``ranks`` as a vector or matrix; index otherwise."""
    if matrix_marks(text):
        return "matrix"
    if ranks and "_" not in text:
        words = set(re.findall(r"[A-Za-z][A-Za-z0-9]*", text))
        if any(rank > 0 and name in words for name, rank in ranks.items()):
            return "matrix"
    return "index"


# -- reading ------------------------------------------------------------------------------------


def _declared(ranks) -> dict[str, int]:
    if ranks is None:
        return {}
    if not isinstance(ranks, Mapping):
        raise EinderivError(f"ranks must map names to ranks, such as {{'x': 1, 'A': 2}}, got {ranks!r}")
    out = {}
    for name, rank in ranks.items():
        if not isinstance(name, str) or isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise EinderivError(f"ranks: {name!r}: {rank!r} is not a rank (0 a scalar, 1 a vector, 2 a matrix)")
        out[name] = rank
    return out


def _array_ranks(arrays: Mapping[str, object] | None) -> dict[str, int]:
    out = {}
    for name, value in (arrays or {}).items():
        ndim = getattr(value, "ndim", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ndim = 0
        if isinstance(ndim, int) and ndim <= 2:
            out[name] = ndim
    return out


def read(source, notation: str = "auto", ranks=None, array_ranks: Mapping[str, int] | None = None) -> Reading | None:
    """Read ``source`` in ``notation`` ("auto", "index" or "matrix"); None for a source that is not
    text (an IR ``Program`` or ``Statement``: index notation already).  ``array_ranks`` (the
    numbers of axes of the arrays given) are matrix notation's ranks where ``ranks`` declares none;
    unlike ``ranks`` they do not make ``auto`` choose matrix notation."""
    if isinstance(source, Reading):
        return source
    if notation not in NOTATIONS:
        raise EinderivError(f"notation must be one of {', '.join(NOTATIONS)}, got {notation!r}")
    declared = _declared(ranks)
    if not isinstance(source, str):
        if notation == "matrix":
            raise EinderivError(f"notation='matrix' takes text, got {type(source).__name__}")
        return None
    chosen = detect(source, declared) if notation == "auto" else notation
    if chosen == "matrix":
        try:
            return read_matrix(source, {**(array_ranks or {}), **declared})
        except ParseError:
            if notation == "auto" and "_" in source:  # ^T or ' by mistake in index notation: its error
                return _read_index(source, declared)
            raise
    reading = _read_index(source, declared)
    if notation == "auto" and "_" not in source and _matrix_and_scalar(reading.program):
        try:  # X / det(X): X a matrix in det(X) and a scalar as written, which index notation refuses
            return read_matrix(source, {**(array_ranks or {}), **declared})
        except EinderivError:
            return reading  # index notation's error, as before
    if notation == "auto" and "_" not in source and not declared and not array_ranks:
        _warn_all_scalars(reading.program, dotted=next((dot for dot in "·⋅×" if dot in source), ""))
    return reading


def _matrix_and_scalar(program: Program) -> bool:
    """Whether a name is the matrix of a matrix function (``det(X)``) and written bare too."""
    matrices, bare = set(), set()
    for statement in program.statements:
        for node in walk(statement.rhs):
            if isinstance(node, MatrixCall):
                matrices.add(node.matrix)
            elif isinstance(node, Tensor) and not node.indices:
                bare.add(node.name)
    return bool(matrices & bare)


def check_known(reading: Reading, declared: Mapping[str, int]) -> None:
    """A rank declared for a name the text does not write is an error (the command line's
    ``--rank``, written for one expression: a typo, ``--rank q=1`` for x, would otherwise leave
    the name it meant to the guess).  The API's ``ranks=`` may be one mapping for many texts."""
    names = {node.name for s in reading.program.statements for node in walk(s.rhs) if isinstance(node, Tensor)}
    names |= {node.matrix for s in reading.program.statements for node in walk(s.rhs) if isinstance(node, MatrixCall)}
    names |= {s.target.name for s in reading.program.statements if s.target is not None}
    unknown = sorted(set(declared) - names)
    if unknown == ["I"] and reading.notation == "matrix":
        raise EinderivError("a rank is given for 'I', which matrix notation reads as the identity matrix")
    if unknown:
        raise EinderivError(
            f"a rank is given for {unknown[0]!r}, which the expression does not use; "
            f"its names: {', '.join(sorted(names)) or 'none'}"
        )


def _read_index(source: str, declared: dict[str, int]) -> Reading:
    program = parse_index(source)
    return Reading("index", source, source.strip(), tuple(declared.items()), program)


def _warn_all_scalars(program: Program, dotted: str = "") -> None:
    """An EinderivWarning for text without a single index that multiplies a name starting with an
    upper-case letter by another input (``f = x A x``, ``y = exp(A x)``, ``y = A^-1 b``),
    or writes a product with ``dotted``, a dot or a cross (``f = x·y``, a dot product in vector
    notation; ``a × b``, a cross product): read as index notation,
    every name is a scalar, and the derivative printed (``df/dx = 2 A x``) looks like the matrix
    one without being it (a helper's hunt: that is (A + A^T) x for a matrix A)."""
    written = {s.target.name for s in program.statements if s.target is not None}

    def name(node, wrapped: bool = False) -> str | None:
        """The input a factor is, or an upper-case one it is a power, a sign or an elementwise call
        of (``A^-1``, ``exp(A)``; a lower-case one so wrapped, ``N s^2``, is left alone)."""
        if isinstance(node, Tensor):
            return node.name if node.name not in written and (not wrapped or node.name[0].isupper()) else None
        if isinstance(node, ir.Pow):
            return name(node.base, True)
        if isinstance(node, ir.Neg):
            return name(node.operand, wrapped)
        if isinstance(node, ir.Call) and not node.over:
            return name(node.arg, True)
        if isinstance(node, ir.Add):  # A^-1 (b + c), (A + B) x: a sum of inputs, as one operand
            return next((found for term in node.terms if (found := name(term, wrapped)) is not None), None)
        return None

    pairs = []
    for statement in program.statements:
        for node in walk(statement.rhs):
            # (so are A^-1 b, exp(A) x and A^-1 (b + c): the same look as matrix notation, silently scalars)
            # (a division is not: s / N and exp(-E / T) divide by scalars as often as not)
            operands = node.factors if isinstance(node, Mul) else ()
            bare = [f.name for f in operands if isinstance(f, Tensor) and f.name not in written]
            names = [found for f in operands if (found := name(f)) is not None]
            if (dotted and len(set(bare)) >= 2) or (any(n[0].isupper() for n in names) and len(set(names)) >= 2):
                pairs.extend(names)
    if pairs:
        shown = ", ".join(repr(n) for n in dict.fromkeys(pairs))
        dot = ""
        if dotted == "×":
            dot = "; '×' is a product of scalars here, not a cross product"
        elif dotted:
            dot = f"; '{dotted}' is a product of scalars here: a dot product is x^T y (x_i y_i)"
        warn_user(
            f"no index is written, so this is index notation and every name is a scalar ({shown}){dot}; "
            "for vectors and matrices pass notation='matrix' (command line: --notation matrix) or write "
            "their indices (A_ij x_j)"
        )


def read_matrix(source: str, ranks: Mapping[str, int]) -> Reading:
    """Matrix-notation statements read as an index-notation program (ranks not in ``ranks`` are
    inferred)."""
    statements = parse_matrix_program(source)
    statements = tuple(
        MatrixStatement(s.name, lift_signs(s.node), s.line, s.column) for s in statements
    )  # -(x ⊙ y) never a group
    names = _check_names(statements, source)
    _check_calls(statements, source, ranks)
    outputs = [s.name for s in statements]
    if outputs[-1] is None:  # a bare expression: f
        outputs[-1] = unique_name("f", set(names) | {o for o in outputs if o})
    if None in outputs[:-1]:
        line = statements[outputs.index(None)].line
        raise EinderivError(f"matrix notation, line {line}: only the last statement may be a bare expression")
    chosen = infer_ranks(source, statements, outputs, names, ranks)
    reader = Reader(source, chosen, (), program=True, taken=(*names, *outputs, *RESERVED))
    for statement, name in zip(statements, outputs):
        shape = reader.read(statement.node).shape
        reader.statements.append(reader.statement(name, statement.node, shape))
        reader.defined[name] = shape
    text = "; ".join(_tidy(statement) for statement in reader.statements)
    return Reading("matrix", source, text, tuple((n, chosen[n]) for n in names), parse_index(text))


_SUBSCRIPT = re.compile(r"_([A-Za-z]+)")
_LETTERS = "ijklmnpqrstuvwabcdefghoxyz"


def _tidy(statement: str) -> str:
    """Summed indices renamed in order of appearance after the left-hand side's (``f = x_i A_ij
    x_j``, not ``x_j A_ji x_i``); statements with braced indices are left as they are."""
    if "{" in statement:
        return statement
    lhs, rhs = statement.split(" = ", 1)
    own = "".join(_SUBSCRIPT.findall(lhs))
    order = list(dict.fromkeys(c for group in _SUBSCRIPT.findall(rhs) for c in group if c not in own))
    spare = [c for c in _LETTERS if c not in own]
    if len(order) > len(spare):
        return statement
    mapping = dict(zip(order, spare))
    return lhs + " = " + _SUBSCRIPT.sub(lambda m: "_" + "".join(mapping.get(c, c) for c in m.group(1)), rhs)


def _children(item) -> list:
    """A node's child nodes, in the order written (a name has none)."""
    if isinstance(item, Name):
        return []
    children = []
    for key, value in vars(item).items() if hasattr(item, "__dict__") else ():
        if key != "column":
            children.extend(value if isinstance(value, tuple) else (value,))
    return [c for c in children if hasattr(c, "column")]


def _nodes(node):
    """The nodes of a tree, in the order written (a node before its children)."""
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(_children(item)))


def _names(node) -> list[Name]:
    """The names a tree uses, in order (``A(x)`` names A), without functions and the identity."""
    found = []
    for item in _nodes(node):
        if isinstance(item, Name):
            found.append(item)
        elif (
            isinstance(item, Call)
            and in_matrix_notation(item.function) is None
            and item.function not in STRUCTURAL
            and not function_suggestion(item.function)  # sigmod(...), ln(...), mean-like: a typo, not A(x + y)
        ):
            found.append(Name(item.function, item.column))
    return found


def _calls(node) -> list[Call]:
    """The calls in a tree, in the order written."""
    return [item for item in _nodes(node) if isinstance(item, Call)]


def _check_calls(statements, source: str, ranks: Mapping[str, int]) -> None:
    """Refuses ``max(x)``, ``min(x)``, ``norm(x)`` and an unknown name of two or more letters
    directly followed by its bracket (``foo(x)``), which would otherwise read as a scalar named
    max or foo times x, as index notation refuses them; ``A(x + y)``, one letter, and a name given
    a rank (``lam(x + y)`` with ``ranks={"lam": 0}``) are products."""
    defined = {s.name for s in statements if s.name}
    for statement in statements:
        for call in _calls(statement.node):
            name = call.function
            if in_matrix_notation(name) is not None or name in STRUCTURAL or function_suggestion(name):
                continue
            if name in ranks or name in defined or (len(name) == 1 and name not in OTHER_NAMES):
                continue
            if name in OTHER_NAMES:
                message = f"unknown function {name!r}: {OTHER_NAMES[name]}"
            else:
                message = (
                    f"unknown function {name!r}; for a product write '{name} (...)' or '{name}*(...)', "
                    "or give it a rank (ranks=)"
                )
            raise ParseError(message, source, statement.line, call.column)


def _check_names(statements, source: str = "") -> list[str]:
    """The program's inputs in order of use; refuses a name defined twice, used before its
    definition, or defined in terms of itself, reserved names, and a function's name not
    followed by its bracket (``exp (x)`` would be a tensor named exp times x)."""
    inputs: list[str] = []
    defined: set[str] = set()
    later = {s.name for s in statements if s.name}
    for statement in statements:
        for ref in _names(statement.node):
            function = in_matrix_notation(ref.name) is not None or ref.name in STRUCTURAL
            if function and ref.name not in defined and ref.name not in later:
                raise ParseError(
                    f"{ref.name!r} is a function: write {ref.name}(...), the name directly followed by '('",
                    source,
                    statement.line,
                    ref.column,
                )
            if ref.name in RESERVED:
                raise EinderivError(f"matrix notation, line {statement.line}: {ref.name!r} is reserved; rename it")
            if ref.name in defined or ref.name == IDENTITY:
                continue
            if ref.name == statement.name:
                raise IndexRuleError(
                    f"matrix notation, line {statement.line}: {ref.name!r} is defined in terms of itself"
                )
            if ref.name in later:
                raise IndexRuleError(
                    f"matrix notation, line {statement.line}: {ref.name!r} is used before its definition"
                )
            if ref.name not in inputs:
                inputs.append(ref.name)
        if statement.name is not None:
            if statement.name in defined:
                raise IndexRuleError(f"matrix notation, line {statement.line}: {statement.name!r} is defined twice")
            if statement.name in RESERVED:
                raise EinderivError(f"matrix notation: {statement.name!r} is reserved; rename it")
            defined.add(statement.name)
    return inputs


# -- ranks ----------------------------------------------------------------------------------------

_PENALTIES = (
    "a transposed scalar",
    "upper",  # an upper-case name not a matrix, except a coefficient made a scalar (below)
    "a matrix function of a scalar name",
    "a scalar broadcast in a sum",
    "lower as a matrix",
    "a scalar name after a vector or matrix",
    "an outer product multiplied further",
    # N, T, C as counts and constants (N/2 logdet(S), T log(s2), C sum(...)), rather than y a matrix
    "an upper-case coefficient as a scalar",
    "a scalar name broadcast in a sum",  # X w + b, b a scalar: rather than X or w a scalar
    "lower as a scalar",
    "a reduction of a scalar",
)


def _convention(name: str) -> int:
    return 2 if name[0].isupper() else 1


def _coefficients(statements) -> set[str]:
    """The upper-case names written only as coefficients: multiplying a number or a call (``T
    log(s2)``, ``N/2 logdet(S)``, ``C sum(...)``), or dividing (``x / N``); not ``X W``."""
    parents: dict[int, object] = {}
    names: list[Name] = []
    for statement in statements:
        for node in _nodes(statement.node):
            if isinstance(node, Name):
                names.append(node)
            for child in _children(node):
                parents[id(child)] = node
    outside: set[str] = set()
    for name in names:
        node, parent = name, parents.get(id(name))
        if isinstance(parent, Power) and not parent.elementwise and parent.base is node:
            node, parent = parent, parents.get(id(parent))  # x / N^(1/2): N^(1/2) a coefficient
        while isinstance(parent, (Neg, Divide)) and not (isinstance(parent, Divide) and parent.denominator is node):
            if isinstance(parent, Divide) and not isinstance(parent.denominator, Number):
                break
            node, parent = parent, parents.get(id(parent))
        divisor = isinstance(parent, Divide) and parent.denominator is node
        if divisor:
            continue
        scaling = type(parent) is Product and isinstance(
            parent.right if parent.left is node else parent.left, (Number, Call)
        )
        if not scaling:
            outside.add(name.name)
    return {n.name for n in names if n.name[0].isupper()} - outside


def _dividing(statements) -> set[str]:
    """The names written only in denominators (``x^T x / (N - M)^(1/2)``), which are scalars
    there: matrix notation divides by scalars only."""
    inside: set[str] = set()
    outside: set[str] = set()

    def visit(node, below: bool) -> None:
        if isinstance(node, Name):
            (inside if below else outside).add(node.name)
            return
        for child in _children(node):
            visit(child, below or (isinstance(node, Divide) and child is node.denominator))

    for statement in statements:
        visit(statement.node, False)
    return inside - outside


def _assess(
    source: str,
    statements,
    outputs,
    ranks: Mapping[str, int],
    free: list[str],
    coefficients: frozenset[str] = frozenset(),
) -> tuple[int, ...]:
    """The cost of reading the program with these ranks (raises when it does not type-check)."""
    reader = Reader(source, ranks, (), program=True)
    for statement, name in zip(statements, outputs):
        reader.defined[name] = reader.read(statement.node).shape
    counts = dict(reader.penalties)
    counts["upper"] = sum(
        1 for n in free if n[0].isupper() and ranks[n] != 2 and not (ranks[n] == 0 and n in coefficients)
    )
    counts["an upper-case coefficient as a scalar"] = sum(1 for n in free if ranks[n] == 0 and n in coefficients)
    counts["lower as a matrix"] = sum(1 for n in free if not n[0].isupper() and ranks[n] == 2)
    counts["lower as a scalar"] = sum(1 for n in free if not n[0].isupper() and ranks[n] == 0)
    return tuple(counts.get(p, 0) for p in _PENALTIES)


def infer_ranks(source: str, statements, outputs, names: list[str], declared: Mapping[str, int]) -> dict[str, int]:
    """Declared ranks, and for the other names the reading that type-checks at the least cost (see
    the module's docstring); a tie is an error that asks for ``ranks=``."""
    known = {n: declared[n] for n in names if n in declared}
    free = [n for n in names if n not in declared]
    convention = {**known, **{n: _convention(n) for n in free}}
    coefficients = frozenset(_coefficients(statements))
    try:
        cost = _assess(source, statements, outputs, convention, free, coefficients)
    except EinderivError as err:
        first_error, cost = err, None
    if cost is not None and not any(cost):
        return convention
    if 3 ** len(free) <= MAX_ASSIGNMENTS:
        options = [(0, 1, 2)] * len(free)
    elif 2 ** len(free) <= MAX_ASSIGNMENTS:
        options = [(_convention(n), 0) for n in free]
    else:
        options = [(_convention(n),) for n in free]
    results = []
    for combination in itertools.product(*options):
        ranks = {**known, **dict(zip(free, combination))}
        try:
            results.append((_assess(source, statements, outputs, ranks, free, coefficients), ranks))
        except EinderivError:
            continue
    if not results:
        raise first_error
    best = min(c for c, _ in results)
    tied = [r for c, r in results if c == best]
    if cost is None:
        _no_repair(first_error, best, tied[0], convention, free, coefficients | _dividing(statements))
    if len(tied) > 1:
        unsure = [n for n in free if len({r[n] for r in tied}) > 1]
        words = {0: "a scalar", 1: "a vector", 2: "a matrix"}
        options_text = "; ".join(
            f"{n!r} could be {' or '.join(words[k] for k in sorted({r[n] for r in tied}))}" for n in unsure
        )
        example = ", ".join(f"{n!r}: {tied[0][n]}" for n in unsure)
        flags = " ".join(f"--rank {n}={tied[0][n]}" for n in unsure)
        raise EinderivError(
            f"matrix notation: the ranks are ambiguous ({options_text}); declare them with ranks={{{example}}} "
            f"(CLI: {flags})"
        )
    return tied[0]


#: conventions a reading may not break to repair the conventional one: a transposed name is not a
#: scalar, a reduction is of several entries (``tr(x)``: x a matrix, ``/ N``: N a scalar repair it)
_STRONG = ("a transposed scalar", "a reduction of a scalar")
#: and inside ``sum(...)``/``mean(...)``, where NumPy's elementwise reading is meant, a name's rank
#: is not raised to a matrix, nor an upper-case name lowered (``c * x``, ``/ (2 s^2)``: c and s
#: scalars still repair it)
_IN_REDUCTIONS = ("lower as a matrix", "upper", "an upper-case coefficient as a scalar")


def _no_repair(
    error: EinderivError, best: tuple[int, ...], ranks: Mapping[str, int], convention, free, coefficients=frozenset()
) -> None:
    """Where the conventional ranks do not type-check, another reading is taken (``a x + b``: a and
    b are scalars; ``tr(s)``: s is a matrix), but not one that makes a transposed name a scalar or
    sums a scalar, nor, to repair what fails inside ``sum(...)`` or ``mean(...)``, one that makes a
    lower-case name a matrix or an upper-case one no matrix: ``mean((y - X w)^2)`` read with y a
    matrix and w a scalar, ``sum(x^2)`` the sum of a scalar, ``a^T x / b^T x`` with b a scalar
    type-check, but mean something else than NumPy and the textbook do.  Raises the conventional
    reading's error (``best``: the cost of the reading that would be taken), saying which ranks
    would type-check.  ``coefficients``: names written as coefficients or only in denominators,
    which a failed power or call does not hold to their conventional rank (``x / (N - M)^(1/2)``)."""
    broken = {p for p, count in zip(_PENALTIES, best) if count}
    inside = getattr(error, "in_reduction", False)
    words = {0: "a scalar", 1: "a vector", 2: "a matrix"}
    # A^(1/2), (A + B)^(1/2), x^-2, diag(A): a power that neither a matrix nor a vector has, or a
    # call of a vector given a matrix, is not repaired by lowering a matrix the base or argument is
    # made of, nor by raising a vector to a matrix (x^T x^-2)
    held = [
        n
        for n in dict.fromkeys(getattr(error, "held_names", ()))
        if n in free
        and n not in coefficients
        and ((convention[n] == 2 and ranks[n] != 2) or (convention[n] == 1 and ranks[n] == 2))
    ]
    if held:
        readings = ", ".join(f"{n} {words[ranks[n]]}" for n in held)
        declared = ", ".join(f"{n!r}: {ranks[n]}" for n in held)
        raise EinderivError(f"{error} (it type-checks with {readings}: declare ranks={{{declared}}} if that is meant)")
    if not broken & set(_STRONG) and not (inside and broken & set(_IN_REDUCTIONS)):
        return
    changed = [n for n in free if ranks[n] != convention[n]]
    if not changed:
        raise error
    readings = ", ".join(f"{n} {words[ranks[n]]}" for n in changed)
    declared = ", ".join(f"{n!r}: {ranks[n]}" for n in changed)
    raise EinderivError(
        f"{error} (the text type-checks only with {readings}: declare ranks={{{declared}}} if that is meant)"
    )


# -- the API's notation= and ranks= -----------------------------------------------------------------


def parse(source, notation: str = "auto", ranks=None) -> Program:
    """Parse text into a :class:`Program` in index notation; matrix notation (``notation="matrix"``,
    or ``"auto"`` for text that uses ``^T``, ``'``, ``tr(``...) is translated first."""
    reading = read(source, notation, ranks)
    if reading is None:
        return parse_index(source)  # its error for a source that is not text
    return reading.program


def _array_like(value) -> bool:
    return hasattr(value, "ndim") or (isinstance(value, (int, float)) and not isinstance(value, bool))


def accepts_notation(function):
    """Give an API function (its source first) the keywords ``notation="auto"|"index"|"matrix"``
    and ``ranks=``: text is read (matrix notation translated) before it runs, and the
    :class:`Reading` is recorded on a returned ``Compiled`` (``.reading``, ``.read_as``)."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    extra = [
        inspect.Parameter("notation", inspect.Parameter.KEYWORD_ONLY, default="auto"),
        inspect.Parameter("ranks", inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
    variadic = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    others = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]

    @functools.wraps(function)
    def call(*args, **kwargs):
        # evaluate(..., **arrays) may have an array named notation or ranks: those are not text or a mapping
        notation, ranks = "auto", None
        if "notation" in kwargs and (not variadic or isinstance(kwargs["notation"], str)):
            notation = kwargs.pop("notation")
        if "ranks" in kwargs and (not variadic or kwargs["ranks"] is None or isinstance(kwargs["ranks"], Mapping)):
            ranks = kwargs.pop("ranks")
        if not args and "source" not in kwargs:
            return function(*args, **kwargs)
        source = args[0] if args else kwargs.pop("source")
        given = {**(args[1] if len(args) > 1 and isinstance(args[1], Mapping) else {}), **kwargs}
        arrays = {k: v for k, v in given.items() if _array_like(v)}  # keywords or evaluate(src, {"x": x})
        reading = read(source, notation, with_structured(ranks, kwargs), _array_ranks(arrays))
        if reading is not None and reading.notation == "matrix":
            with translated_text():  # x .* exp(-(x .* x) / 2) as written: elementwise
                result = function(reading, *args[1:], **kwargs)
        else:
            result = function(source if reading is None else reading, *args[1:], **kwargs)
        if reading is not None and hasattr(type(result), "reading"):
            if reading.notation == "index":
                _check_declared(reading, result.ranks)
            result.reading = reading
        return result

    call.__signature__ = signature.replace(parameters=[*others, *extra, *variadic])
    return call


def with_structured(ranks, keywords: Mapping[str, object]):
    """``ranks`` with each matrix that ``symmetric=`` or ``diagonal=`` names declared a matrix
    where ``ranks`` declares nothing of it: ``Y = S^-1 A`` with ``symmetric=["S"]`` reads S as
    the matrix it is said to be, not as a scalar (a rank given in ``ranks`` is kept, and
    ``structure_of`` says what is wrong with it)."""
    named = []
    for key in ("symmetric", "diagonal"):
        names = keywords.get(key)
        names = [names] if isinstance(names, str) else names
        if isinstance(names, (list, tuple)):
            named += [name for name in names if isinstance(name, str)]
    if not named or (ranks is not None and not isinstance(ranks, Mapping)):
        return ranks  # (ranks that are not a mapping: read's error)
    return {**{name: 2 for name in named}, **ranks} if ranks else {name: 2 for name in named}


def _check_declared(reading: Reading, used: Mapping[str, int]) -> None:
    for name, rank in reading.ranks:
        if name in used and used[name] != rank:
            raise IndexRuleError(
                f"{name!r} is declared with rank {rank} (ranks= or --rank), but the index-notation text uses it with "
                f"{used[name]} indices" + (" (for matrix notation pass notation='matrix')" if not used[name] else "")
            )


def scalar_use_hint(name: str, axes: int, text: str) -> str:
    """What the EvaluationError for an array given to a name that the index-notation ``text`` uses
    as a scalar adds: ``y = A x`` is a product of scalars there; matrix notation, or indices."""
    letters = "ijklmn"[:axes] if axes <= 6 else ""
    example = f", as in {name}_{letters}" if letters else ""
    if "_" in text:
        return f": the text uses it as a scalar (no indices); write all its indices{example}"
    return (
        f": the text uses it as a scalar (no indices); for matrix notation pass notation='matrix' "
        f"(CLI: --notation matrix), or write all its indices{example} (y_i = A_ij x_j)"
    )


__all__ = [
    "NOTATIONS",
    "Reading",
    "accepts_notation",
    "check_known",
    "detect",
    "matrix_marks",
    "parse",
    "read",
    "read_matrix",
]
