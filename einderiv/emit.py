"""Normal form -> einsum program: one contraction per term, with named indices mapped to symbols."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from opt_einsum import get_symbol

from .glyphs import format_number
from .index_names import count_letter, is_count
from .ir import Delta, Indices
from .normal import Apply, MatrixFn, Poly
from .printing import atom_to_expr

DELTA_OPERAND = "delta"


@dataclass(frozen=True)
class EinsumTerm:
    """``coefficient * einsum(subscripts, *operands)``.

    ``inputs`` keeps each operand's named indices and ``output`` the free indices the
    contraction produces (in the result's order); result indices missing from ``output``
    are broadcast.  A ``delta`` operand is an identity matrix; a function call's operand is
    named by its text (``sigmoid(z_n)``) and computed by an earlier elementwise step.
    """

    coefficient: Fraction
    subscripts: str
    operands: tuple[str, ...]
    inputs: tuple[Indices, ...]
    output: Indices

    def __str__(self) -> str:
        if not self.operands:
            return format_number(self.coefficient)
        core = f"'{self.subscripts}' ({', '.join(self.operands)})"
        if self.coefficient == 1:
            return core
        return f"{format_number(self.coefficient)} * {core}"


def symbol_table(poly: Poly) -> dict[str, str]:
    """Index name -> einsum symbol: a one-letter name keeps its letter when it can."""
    names: list[str] = list(poly.indices)
    for term in poly.terms:
        for factor in term.factors:
            names.extend(i for i in factor.indices if i not in names)
    names = list(dict.fromkeys(names))
    table: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        if len(name) == 1 and name.isascii() and name.isalpha() and name not in taken:
            table[name] = name
            taken.add(name)
    for name in names:  # a count (``k#1``, the dimension of k) takes its letter when that is free
        letter = count_letter(name)
        if is_count(name) and name not in table and len(letter) == 1 and letter.isascii() and letter not in taken:
            table[name] = letter
            taken.add(letter)
    counter = 0
    for name in names:
        if name in table:
            continue
        while get_symbol(counter) in taken:
            counter += 1
        table[name] = get_symbol(counter)
        taken.add(table[name])
    return table


def _operand_name(atom, visible: set[str]) -> str:
    if isinstance(atom, Delta):
        return DELTA_OPERAND
    if isinstance(atom, (Apply, MatrixFn)):
        return str(atom_to_expr(atom, visible))
    return atom.name


def emit(poly: Poly) -> tuple[EinsumTerm, ...]:
    """One :class:`EinsumTerm` per term of ``poly``."""
    table = symbol_table(poly)
    out: list[EinsumTerm] = []
    for term in poly.terms:
        inputs = tuple(f.indices for f in term.factors)
        visible = set(poly.indices) | term.index_names()
        operands = tuple(_operand_name(f, visible) for f in term.factors)
        present = {i for idx in inputs for i in idx}
        output = tuple(i for i in poly.indices if i in present)
        lhs = ",".join("".join(table[i] for i in idx) for idx in inputs)
        subscripts = f"{lhs}->{''.join(table[i] for i in output)}"
        out.append(EinsumTerm(term.coeff, subscripts, operands, inputs, output))
    return tuple(out)
