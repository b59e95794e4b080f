"""What printed notation is made of: one precedence table, and a glyph table per output.

Index notation is printed by one walk over the IR (:func:`einderiv.ir.write`), parameterised by a
:class:`Glyphs` table: :data:`TEXT` is what ``str()`` writes and the parser reads back; the Unicode
and LaTeX tables are :mod:`einderiv.render`'s.  Matrix notation (:mod:`einderiv.matrix.tree`) has
its own tree and reads the same :class:`Precedence`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction


class Precedence(IntEnum):
    """How tightly a printed form binds, loosest first; a form is parenthesised where its place
    needs a tighter one: ``a + b`` < ``a ⊙ b`` (matrix notation) < ``a b``, ``a / b`` < ``-a``
    < ``a^k``, ``M^T`` < a name, a number, a call or a parenthesised group."""

    SUM = 0
    HADAMARD = 1
    PRODUCT = 2
    SIGNED = 3
    POWER = 4
    ATOM = 5


_ONE_LETTER_INDEX = re.compile(r"[A-Za-z][0-9]*\Z")


def format_indices(indices: tuple[str, ...], braced: bool = False) -> str:
    """``("p", "q")`` -> ``"_pq"``; other names use the braced form, which reads back to the same
    indices: ``_{in,out}``, ``_{i1}`` (a letter and its digits), ``_{in,}`` (one longer name).
    ``braced`` asks for the braced form even for single letters (``_{i,j}``)."""
    if not indices:
        return ""
    if all(len(i) == 1 for i in indices) and not braced:
        return "_" + "".join(indices)
    if len(indices) == 1:
        return "_{" + indices[0] + ("}" if _ONE_LETTER_INDEX.match(indices[0]) else ",}")
    return "_{" + ",".join(indices) + "}"


LONG_DIGITS = 40


def _scientific(value: Fraction) -> str:
    """``1e300``, ``-2.5e-120``: exact where the value is a short decimal times a power of ten,
    otherwise rounded to 17 significant digits (as many as a float64 holds).  Beyond float64's
    range, where a literal is refused, it is written with a power of ten, ``(2 * 10^309)``,
    ``(10^-6000)``, which reads back as the same number (±inf or 0 when evaluated, as the exact
    coefficient is)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    exponent = int((value.numerator.bit_length() - value.denominator.bit_length()) * 0.30102999566398120)
    while value >= Fraction(10) ** (exponent + 1):
        exponent += 1
    while value < Fraction(10) ** exponent:
        exponent -= 1
    scaled = value / Fraction(10) ** (exponent - 16)  # in [1e16, 1e17)
    rounded = round(scaled)
    if rounded >= 10**17:  # 9.99...95 rounded up to 10^17
        rounded, exponent = rounded // 10, exponent + 1
    digits = str(rounded).rstrip("0")
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    text = f"{mantissa}e{exponent}"
    if float(text) in (0.0, float("inf")):  # beyond a literal's range: a power of ten, which reads back
        return f"{sign}({'' if mantissa == '1' else mantissa + ' * '}10^{exponent})"
    return sign + text


def format_number(value: Fraction) -> str:
    """Exact text for a rational: ``2``, ``0.125``, and ``1/3`` when no finite decimal exists.
    A rational of more than LONG_DIGITS digits (``2^10000``, ``(1e-300)^20``, what products
    of constants build) is written in scientific notation (see :func:`_scientific`)."""
    longest = max(value.numerator.bit_length(), value.denominator.bit_length())
    if value and longest * 0.30103 > LONG_DIGITS:
        return _scientific(value)
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = max(twos, fives)
    scaled = abs(value.numerator) * 10**digits // value.denominator
    text = str(scaled).rjust(digits + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{text[:-digits]}.{text[-digits:]}"


@dataclass(frozen=True)
class Glyphs:
    """How one output writes each piece of the IR; :func:`einderiv.ir.write` does the rest
    (the order of the pieces, the spaces, and parentheses by :class:`Precedence`).

    * ``name(n)``: a tensor's or a matrix's name; ``indices(ix)``: a subscript;
    * ``delta``: the Kronecker delta's symbol; ``number(q)``: a non-negative constant;
    * ``group``: the parentheses around a group;
    * ``power(e)``: what follows a base, for the exponent's text ``e``;
    * ``fraction(a, b)``: a division as a fraction of the two texts, or None for ``a / b``
      (its operands parenthesised by precedence);
    * ``call(func, over, arg)``: ``func(arg)``, or the reduction ``sum_i(arg)`` over ``over``;
    * ``matrix_call(func, matrix, subscript)``: ``inv(M)_ij``, ``det(M)``, ``logdet(M)``, ``logabsdet(M)``;
    * ``derivative(statement, write)``: a derivative-named statement's left-hand side
      (``dK_pq/dR_ij``), ``write`` printing its parts;
    * ``bare_signed_number``: ``-1/3`` for a negated number (it reads back as the same value),
      rather than ``-(1/3)``;
    * ``between(left, right)``: what separates two printed factors of a product (a space where
      None);
    * ``loose_calls``: calls printed as a big operator (LaTeX's ``\\sum_{i}``), which reach over
      what follows them: parenthesised as a power's base or a factor beside others.
    """

    name: Callable[[str], str]
    indices: Callable[[tuple[str, ...]], str]
    delta: str
    number: Callable[[Fraction], str]
    group: tuple[str, str]
    power: Callable[[str], str]
    fraction: Callable[[str, str], str] | None
    call: Callable[[str, tuple[str, ...], str], str]
    matrix_call: Callable[[str, str, str], str]
    derivative: Callable
    bare_signed_number: bool = False
    between: Callable[[str, str], str] | None = None
    loose_calls: frozenset[str] = frozenset()


def _text_derivative(statement, write) -> str:
    """``dK_pq/dR_ij``, ``d2f/dx_i dx_j``: the target and its denominators as written."""
    return write(statement.target) + "/" + " ".join(write(w) for w in statement.wrt)


#: Plain text, as the parser reads it: ``dK_pq/dR_ij = delta_jp R_iq``, ``sum_i(x_i^2)``.
TEXT = Glyphs(
    name=lambda name: name,
    indices=format_indices,
    delta="delta",
    number=format_number,
    group=("(", ")"),
    power=lambda exponent: "^" + (f"({exponent})" if "/" in exponent else exponent),  # x_i^(2/3) reads back
    fraction=None,
    call=lambda func, over, arg: f"{func}{format_indices(over)}({arg})",
    matrix_call=lambda func, matrix, subscript: f"{func}({matrix}){subscript}",
    derivative=_text_derivative,
    bare_signed_number=True,
)
