"""Programs: checked statements, and derivative programs built by reverse accumulation.

A program is a list of definitions ``name_I = poly``.  The derivative of its output O (indices
P) with respect to an input X (indices W) is built as a new program:

* the forward definitions it needs, unchanged (each intermediate is computed once);
* one adjoint per intermediate s, ``dOds_{P S} = sum_t dOdt_{P T} d t_T / d s_S`` over the
  statements t that use s, in reverse order: for a scalar output it has the shape of s, so
  a gradient never builds a Jacobian;
* the result ``dO/dX_{P W} = d O/d X (direct) + sum_t dOdt_{P T} d t_T / d X_W``.

Each statement is differentiated once per intermediate it uses, so the result grows linearly
with the program.  Adjoints used once, or that are a single factor, are then substituted into
their user, which is how ``L = e_n e_n`` gives ``-2 e_n Phi_nk`` rather than a named adjoint.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction

from .cancel import BOUNDED
from .differentiate import differentiate
from .dimensions import dimensions
from .errors import EinderivError, IndexRuleError, warn_user
from .factor import factored
from .index_names import (
    COUNT_MARK,
    axis_count,
    count_letter,
    count_stem,
    counted_axis,
    fresh_indices,
    is_count,
    is_lowered_count,
)
from .ir import Delta, Indices, MatrixCall, Program, Statement, Tensor, binds, children, walk
from .normal import (
    CANCELLING,
    POWERED,
    ROOTED,
    Apply,
    MatrixFn,
    Poly,
    Term,
    equivalent,
    is_reciprocal,
    keep_sums,
    make_apply,
    multiply,
    non_negative,
    rename_apart,
    rename_atom,
    rename_term_apart,
    renamed_apart,
    root_of_sum,
    simplify,
    single_atom,
    uncarried_letters,
)
from .printing import count_axes_of, count_powers
from .rewrites import logsumexp_parts, rewrite_products, rewrite_sums, softmax_parts, stable_form
from .scopes import delta_size_ties
from .semantics import (
    additive_terms,
    check_statement,
    letters_apart,
    output_indices,
    own_nodes,
    tensor_axes,
    tensor_ranks,
)


@dataclass(frozen=True)
class Definition:
    """``name_indices = poly``.  ``hints`` say where the sizes of the free indices come from:
    ``("poly", raw)`` binds them from a statement's own terms, ``("axis", index, array, axis)``
    from an array computed earlier."""

    name: str
    indices: Indices
    poly: Poly
    hints: tuple = ()
    statement: Statement | None = None
    #: ``(poly, count axes)``: the text of an adjoint printed alone, its counts renamed to letters
    #: that the statements printed before it write at their dimensions (``api.adjoint_counts``)
    counts: tuple | None = None

    def display(self) -> Statement:
        if self.statement is not None:
            return self.statement
        poly, axes = self.counts or (self.display_poly(), count_axes_of(self.hints))
        return Statement(Tensor(self.name, self.indices), factored(poly, axes)[0])

    def display_poly(self) -> Poly:
        """``poly`` as printed alone, before its counts get their letters: constant along an
        index it does not write (``dfdh_i = s w_j delta_ii``) and with each dimension's counts
        a power of one count (``delta_jj^3``, not three counts that need three letters)."""
        poly = self.poly
        used = {i for t in poly.terms for f in t.factors for i in f.indices}
        missing = [i for i in self.indices if i not in used]
        if missing and poly.terms:
            poly = Poly((keep_sums(poly.terms[0], missing), *poly.terms[1:]), poly.indices)
        return count_powers(poly, count_axes_of(self.hints))


@dataclass
class CheckedProgram:
    """Definitions in order, the inputs' ranks, and the output's name."""

    definitions: list[Definition]
    inputs: dict[str, int]
    output: str
    source: Program | None = None
    ranks: dict[str, int] = field(default_factory=dict)
    all_inputs: dict[str, int] = field(default_factory=dict)

    def definition(self, name: str) -> Definition:
        for d in self.definitions:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def out(self) -> Definition:
        return self.definition(self.output)

    def __str__(self) -> str:
        return "\n".join(str(d.display()) for d in self.definitions)

    def evaluated(self) -> list[Definition]:
        """The definitions as written that evaluation computes, and the output: not those printed
        only so that the text sizes an axis (the statement a derivative differentiates) or names
        a call it does not need."""
        computed = {d.name for d in self.computed()}
        return [d for d in self.definitions if d.name in computed or d is self.out]

    def computed(self) -> list[Definition]:
        """The definitions evaluation computes: those the output uses, or whose shapes size it.
        A definition only written in a statement that a stable rewrite saw through
        (``s_n = sigmoid(z_n)`` in ``log(s_n)``) is printed but not computed."""
        needed = _needed(self, everything_written=False)
        kept = [d for d in self.definitions if d.name in needed]
        known = set(self.inputs) | set(self.all_inputs) | {d.name for d in kept}
        return [replace(d, hints=_hints_within(d.hints, known)) for d in kept]


def references(poly: Poly) -> set[str]:
    """Tensor names used by ``poly`` (inside calls too)."""
    return poly.tensor_names()


def check_program(program: Program, of: str | None = None) -> CheckedProgram:
    """Validate a program: definitions before use, no redefinition, consistent ranks."""
    statements = program.statements
    defined: dict[str, int] = {}
    inputs: dict[str, int] = {}
    definitions: list[Definition] = []
    later = {s.target.name: k for k, s in enumerate(statements) if s.target is not None}
    for number, statement in enumerate(statements, 1):
        last = number == len(statements)
        if statement.target is None and not last:
            raise IndexRuleError(f"statement {number} ({statement}) needs a left-hand side: only the last may omit it")
        statement = letters_apart(statement)
        name = statement.name if statement.target is not None else "_"
        if name in defined:
            raise IndexRuleError(f"{name!r} is defined twice (statement {number}: {statement})")
        if name in inputs:
            raise IndexRuleError(f"{name!r} is used as an input before statement {number} defines it")
        ranks = tensor_ranks(statement.rhs, f" in statement {number}")
        for used, rank in ranks.items():
            if used in defined and defined[used] != rank:
                raise IndexRuleError(
                    f"{used!r} is defined with {defined[used]} indices but used with {rank} in statement "
                    f"{number} ({statement})"
                )
            if used not in defined and later.get(used, 0) >= number:
                raise IndexRuleError(
                    f"{used!r} is used in statement {number} before its definition in statement {later[used] + 1}"
                )
            if used not in defined:
                if used in inputs and inputs[used] != rank:
                    raise IndexRuleError(
                        f"input {used!r} is used with {inputs[used]} indices and with {rank} (statement {number})"
                    )
                inputs[used] = rank
        poly, raw = check_statement(statement)
        poly = see_through(poly, {d.name: d for d in definitions})
        written = tuple(  # inv(M)_ik writes i and k at M's axes, as M_ik would
            (index, node.matrix if isinstance(node, MatrixCall) else node.name, axis)
            for node in walk(statement.rhs)
            if isinstance(node, (Tensor, MatrixCall))
            for axis, index in enumerate(node.indices)
        )
        written += _joined_to_one(statement.rhs, written)
        # the letters as lowering left them: a sum renamed apart in a product (sum_i(t + t2_i)
        # sum_i(x_i) counts i as j) is sized where lowering wrote that letter
        letters_written = {e[0] for e in written}
        lowered = tuple((i, t, a) for i, t, a in _tensor_axes(raw) if i not in letters_written)
        poly, counted = _own_counts(poly, written, number, lowered)
        # a count a call rule named by the axis it counts (log(mean_k(e_k)) with e = exp(l): k#l.0,
        # the length of l) is sized there, also where this statement does not write that tensor
        counted = _through_definitions(counted + _axis_count_hints(poly), definitions)
        defined[name] = len(poly.indices)
        axis_hints = []
        for w, by in zip(statement.wrt, statement.denominators):  # dK_pq/dR_ij: the axes i, j are R's
            base = by.name
            if base in defined or not base:
                continue
            if base in inputs and inputs[base] != len(w.indices):
                raise IndexRuleError(
                    f"input {base!r} is used with {inputs[base]} indices and with {len(w.indices)} ({w})"
                )
            inputs[base] = len(w.indices)
            axis_hints.extend(("axis", i, base, k) for k, i in enumerate(w.indices))
        # dt_i/ds after t's statement: its first axes are t's dimensions (printed ``t_j = b_j^2 +
        # sum_j(s); dt_i/ds = delta_jj``, a Jacobian's text, sized i by nothing when read back);
        # t is printed with it, never computed for it
        numerator = statement.differentiated
        if numerator and defined.get(numerator) == len(statement.target.indices):
            axis_hints.append(("differentiates", numerator, len(statement.target.indices)))
        own = {index for index, _, _ in written}
        # an index this statement writes only in deltas (d2L/dm dm = -delta_nn after L's
        # statement, or 2 v delta_ii after u_i = x_i + lam in a printed HVP) is sized as the
        # earlier statements wrote it: a count has no other size, and the earlier statements
        # must agree on it (else the size cannot be inferred).  In a derivative-named statement
        # or the program's last one, output axes too (the way einderiv prints a product); in
        # any other statement only summed ones: an intermediate's axes would otherwise depend
        # on the order of the statements.  An adjoint printed alone counts with letters that
        # the statements before it write at the count's dimension and no other
        # (api.adjoint_counts; before it did, a review found read-backs silently wrong)
        only_deltas = {i for node in walk(statement.rhs) if isinstance(node, Delta) for i in node.indices} - own
        if not statement.wrt and statement.target is not None:
            # an output axis a delta joins to another letter (mean_j(delta_ji)) is sized through
            # that letter, never by another statement's use of its own letter
            joined = {
                i
                for node in walk(statement.rhs)
                if isinstance(node, Delta) and node.indices[0] != node.indices[1]
                for i in node.indices
            }
            only_deltas -= set(statement.target.indices) & joined
        summed_only_deltas = only_deltas - set(statement.target.indices if statement.target is not None else ())
        earlier = tuple(
            e
            for d in definitions
            for h in d.hints
            if h[0] == "names"
            for e in h[1]
            if e[0] not in own and (statement.wrt or e[0] in (only_deltas if last else summed_only_deltas))
        )
        # counting indices are unique to their statement, so their sizes travel safely with them
        # (a statement the rewrites see through brings its i#1 along)
        counts_before = tuple(
            e for d in definitions for h in d.hints if h[0] == "names" for e in h[1] if is_count(e[0])
        )
        # a letter written before only at a statement's axis that only its use sizes (t_j in
        # ``t_i = s + delta_ij; f = sum_i(a_i + t_j + delta_ij)``, read back beside ``df/da_l =
        # delta_jj^2``) is sized at an input axis of that dimension: nothing computes t there
        earlier = _at_input_axes(earlier, [], definitions, inputs)
        names = _through_definitions(written + earlier + counted + counts_before, definitions)
        names += _joined_by_deltas(statement.rhs, names)
        own_axes = {h[1] for h in axis_hints if h[0] == "axis"}  # dK_pq/dR_ij: i and j are R's, whatever came before
        ties = (
            reduction_ties(statement.rhs, (name, statement.target.indices if statement.target is not None else ()))
            + _operand_sum_ties(statement.rhs)
            + _term_delta_ties(statement.rhs, statement.target.indices if statement.target else ())
            + delta_size_ties(statement.rhs, output_indices(statement))
            + _delta_ties(statement.rhs, tuple(e for e in earlier if e[0] not in own_axes))
        )
        residuals = _operand_residuals(statement.rhs)
        hints = (("poly", raw), ("names", names), *axis_hints, *((("tied", ties),) if ties else ()))
        hints += (("residuals", residuals),) if residuals else ()
        definitions.append(Definition(name, poly.indices, poly, hints, statement))
    last = statements[-1]
    read_by_last = {  # as written: a rewrite may drop s from log(s)
        node.matrix if isinstance(node, MatrixCall) else node.name
        for node in walk(last.rhs)
        if isinstance(node, (Tensor, MatrixCall))
    }
    if of is None and len(statements) > 1 and last.target is None and not read_by_last & set(defined):
        # f = x_i A_ij ⏎ x_j: a line break ended the statement, and the bare last line is the output
        warn_user(
            f"the output, the last line {str(last.rhs)!r}, has no left-hand side and uses none of the "
            f"statements before it, so they do nothing: if it continues the line above, "
            f"end that line with an operator or wrap the expression in parentheses"
        )
    output = definitions[-1].name if of is None else of
    if output not in defined:
        names = ", ".join(d.name for d in definitions if d.name != "_")
        raise IndexRuleError(f"of={of!r} names no statement (defined: {names})")
    checked = CheckedProgram(definitions, inputs, output, program, {**inputs, **defined})
    checked.all_inputs = dict(inputs)
    return prune(checked)


def reduction_ties(expr, target: tuple[str, Indices] = ("", ())) -> tuple:
    """The axes each written reduction ties together: in ``mean_k(X_nd W_dk + b_k)`` W's axis 1
    and b's axis 0 are the one k (groups of ``(tensor, axis)``).  Lowering gives each term of the
    sum its own k, so without these nothing would say that b has W's length.  A delta inside
    the reduction joining its letter to an index of ``target`` (the statement's name and
    indices) ties the statement's own axis too: ``t_k = sum_i(a_i + delta_ik)`` is a's length
    (with a b of another length, ``f = t_j b_j`` gave numbers, where ``f_k = sum_i(a_i +
    delta_ik) b_k`` says "two sizes")."""
    from .ir import Add, Call, Div, Mul, Neg, Pow

    groups: list[tuple] = []
    name, indices = target
    own = {i: k for k, i in reversed(list(enumerate(indices)))}

    def written(node, letter: str, bound: frozenset = frozenset()) -> list:
        """The axes at which ``letter`` is written inside ``node`` (not where a reduction rebinds it),
        and the statement's own axes that a delta there joins it to (``bound``: letters rebound)."""
        if isinstance(node, Delta) and letter in node.indices:
            other = node.second if node.first == letter else node.first
            return [(name, own[other])] if other != letter and other in own and other not in bound else []
        if isinstance(node, Tensor):
            return [(node.name, k) for k, i in enumerate(node.indices) if i == letter]
        if isinstance(node, MatrixCall):
            return [(node.matrix, k) for k, i in enumerate(node.indices) if i == letter]
        if isinstance(node, Call):
            rebound = {i for i in node.over if binds(node, i)}
            return [] if letter in node.over else written(node.arg, letter, bound | rebound)
        if isinstance(node, (Add, Mul)):
            return [
                axis
                for part in (node.terms if isinstance(node, Add) else node.factors)
                for axis in written(part, letter, bound)
            ]
        if isinstance(node, Neg):
            return written(node.operand, letter, bound)
        if isinstance(node, Div):
            return written(node.numerator, letter, bound) + written(node.denominator, letter, bound)
        if isinstance(node, Pow):
            return written(node.base, letter, bound)
        return []

    def visit(node, enclosing: frozenset) -> None:
        """Each reduction in ``node``, with the letters the reductions around it bind (and its
        own other letters: a delta's partner that a reduction sums is not the statement's index)."""
        if isinstance(node, Call) and node.over:
            rebound = frozenset(i for i in node.over if binds(node, i))
            for letter in node.over:
                axes = tuple(dict.fromkeys(written(node.arg, letter, enclosing | (rebound - {letter}))))
                if len(axes) > 1:
                    groups.append(axes)
            enclosing |= rebound
        for child in children(node):
            visit(child, enclosing)

    visit(expr, frozenset())
    return tuple(groups)


def _letter_counts(node) -> Counter:
    """How often each letter is written in ``node``'s tensors, deltas and matrix calls."""
    return Counter(i for n in walk(node) if isinstance(n, (Tensor, Delta, MatrixCall)) for i in n.indices)


def _operand_sums(expr, calls: bool) -> list:
    """The sums in ``expr`` that are operands: factors of a product, the base of a power, a part
    of a quotient, and (with ``calls``) the argument of a call."""
    from .ir import Add, Call, Div, Mul, Pow

    found = []
    for node in walk(expr):
        if isinstance(node, Mul):
            found += [f for f in node.factors if isinstance(f, Add)]
        elif isinstance(node, Pow) and isinstance(node.base, Add):
            found.append(node.base)
        elif calls and isinstance(node, Call) and isinstance(node.arg, Add):
            found.append(node.arg)
        elif isinstance(node, Div):
            found += [part for part in (node.numerator, node.denominator) if isinstance(part, Add)]
    return found


def _operand_sum_ties(expr) -> tuple:
    """The axes a sum that is an operand adds elementwise: in ``(x_i - m_i)(x_j - m_j)`` the
    group ``x_i - m_i`` is a tensor over i, so x's length is m's.  Multiplied out, each term sums
    its own i and j, and nothing else says so (the optimiser reads it back as a product of two
    sums of residuals only where it is said).  A letter counts in the terms that hold it once."""
    from .ir import Mul, Neg

    def tensors(node) -> list:
        node = node.operand if isinstance(node, Neg) else node
        return [f for f in (node.factors if isinstance(node, Mul) else [node]) if isinstance(f, Tensor)]

    groups = []
    for group in _operand_sums(expr, calls=True):
        letters = {i for term in group.terms for i, n in _letter_counts(term).items() if n == 1}
        for letter in sorted(letters):
            axes = [
                (t.name, k)
                for term in group.terms
                if _letter_counts(term)[letter] == 1
                for t in tensors(term)
                for k, i in enumerate(t.indices)
                if i == letter
            ]
            if len(set(axes)) > 1:
                groups.append(tuple(dict.fromkeys(axes)))
    return tuple(groups)


def _operand_residuals(expr) -> tuple:
    """The sums that are operands in ``expr`` (``x_n - mean_k(x_k)`` in ``mean_n((x_n -
    mean_k(x_k))(y_n - mean_k(y_k)))``), each lowered over its own free letters: the optimiser
    reads a product of them back where the normal form multiplied it out (a ``residuals`` hint)."""
    from .ir import Add, Call
    from .lower import free_indices, normalize

    out = []
    # a reduction's argument too: sum_n(x_n - m) sum_i(x_i - m) multiplies out into four terms
    # whose sum cancels (at an offset of 1e8 it was 128 for 82.6, a meaning hunt's find)
    summed = [n.arg for n in walk(expr) if isinstance(n, Call) and n.over and n.func in ("sum", "mean")]
    for group in _operand_sums(expr, calls=False) + [arg for arg in summed if isinstance(arg, Add)]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                poly = normalize(group, free_indices(group))
        except EinderivError:
            continue
        if len(poly.terms) >= 2 and poly.indices and poly not in out:
            out.append(poly)
    return tuple(out)


def _axes_outside_reductions(term, letter: str) -> list:
    """``(tensor, axis)`` where a tensor of ``term`` writes ``letter`` outside the reductions
    that bind it (inside calls too: ``exp(y_m)`` writes m at y's axis)."""
    return [] if binds(term, letter) else tensor_axes(own_nodes(term, letter), letter)


def _chains(pairs) -> list[list]:
    """The classes that ``pairs`` join (union-find): ``(i, k), (k, j)`` is one chain, i k j."""
    parent: dict = {}

    def root(item):
        while parent.setdefault(item, item) != item:
            item = parent[item]
        return item

    for a, b in pairs:
        parent[root(a)] = root(b)
    classes: dict = {}
    for item in parent:
        classes.setdefault(root(item), []).append(item)
    return list(classes.values())


def _delta_ties(expr, earlier: tuple) -> tuple:
    """The axes a written ``delta_ij`` ties together where the statements before it size both i
    and j (the statement writes them only in deltas): ``u_ij = C_ij; f = delta_ij`` ties C's rows
    to its columns, so a 3x4 C is "two sizes", as ``sum_ij(C_ij delta_ij)`` is.  Simplifying
    contracts the delta to ``delta_ii`` first, which would count C's rows silently."""
    axes: dict[str, list] = {}
    for index, tensor, axis in earlier:
        axes.setdefault(index, []).append((tensor, axis))
    groups = []
    for node in walk(expr):
        if isinstance(node, Delta) and node.indices[0] != node.indices[1]:
            first, second = node.indices
            if first in axes and second in axes:
                group = tuple(dict.fromkeys(axes[first] + axes[second]))
                if len(group) > 1:
                    groups.append(group)
    return tuple(groups)


def _term_delta_ties(expr, outputs) -> tuple:
    """The axes a delta ties together where its term's tensors write neither of its letters and
    the statement sizes both: a summed letter by the tensors of the other terms (outside their
    reductions, whose letters are their own), an output letter by the tensors of every term.
    ``f = A_ij + delta_ij`` sums the delta over A's rows and columns, so a 3x4 A is "two sizes",
    as ``A_ij delta_ij`` is, and so is ``f_i = x_i + y_j + delta_ij`` with x and y of two
    lengths.  Simplifying contracts the delta to ``delta_ii`` first, which would count one of
    the two lengths silently."""
    terms = additive_terms(expr)
    groups = []
    for k, term in enumerate(terms):
        deltas = [
            n
            for n in dict.fromkeys(n for n in walk(term) if isinstance(n, Delta) and n.first != n.second)
            if all(any(m is n for m in own_nodes(term, i)) for i in n.indices)
        ]  # a delta whose letter a reduction in the term binds is that sum's own
        # deltas join their letters in chains (``B_ij + delta_ik delta_kj``: i, k and j are one);
        # a chain with a letter the term's tensors write is sized in its own term
        for chain in _chains(delta.indices for delta in deltas):
            if any(i not in outputs and _axes_outside_reductions(term, i) for i in chain):
                continue  # sized in its own term, where the deltas join it
            found = []
            for letter in chain:
                sizing = terms if letter in outputs else [t for j, t in enumerate(terms) if j != k]
                # where no term writes it outside a reduction, the statement sizes it by the
                # reductions' letter of that name (``delta_ij - sum_ij(A_ij)``), and so does this
                found += [a for t in sizing for a in _axes_outside_reductions(t, letter)] or [
                    a for t in sizing for a in tensor_axes(walk(t), letter)
                ]
            if len(set(found)) > 1:
                groups.append(tuple(dict.fromkeys(found)))
    return tuple(groups)


def _joined_by_deltas(expr, names: tuple) -> tuple:
    """Size entries for letters the statement writes only where a delta joins them to a letter
    it sizes (``j`` in ``A_ii (A_ii + delta_ij)``: A's length), so that a derivative that keeps
    the count of j (``delta_jj``) sizes it as the statement did."""
    joins = [node.indices for node in walk(expr) if isinstance(node, Delta) and node.indices[0] != node.indices[1]]
    known: dict[str, list] = {}
    for entry in names:
        known.setdefault(entry[0], []).append(entry)
    added: list = []
    changed = True
    while changed:
        changed = False
        for a, b in joins:
            for letter, other in ((a, b), (b, a)):
                if letter not in known and other in known:
                    known[letter] = [(letter, *entry[1:]) for entry in known[other]]
                    added += known[letter]
                    changed = True
    return tuple(added)


def _joined_to_one(expr, written: tuple) -> tuple:
    """:func:`_joined_by_deltas` for the letters a delta joins to one written letter only, and to
    nothing else: ``k`` in ``f_j = r_j (1 + delta_jk)`` is sized as j, so that its count keeps
    that size when the chain rule moves it (its gradient failed with "the size of index 'l'
    cannot be inferred").  A letter joined to two (``x_i x_i (1 + delta_ik) + w_j w_j (1 +
    delta_jk)``, x and w of two lengths) is left to the statement's own checks, which refuse it:
    sized by its first join, it counted w's terms at x's length (a reviewer's find)."""
    partners: dict[str, set] = {}
    for node in walk(expr):
        if isinstance(node, Delta) and node.first != node.second:
            partners.setdefault(node.first, set()).add(node.second)
            partners.setdefault(node.second, set()).add(node.first)
    sized = {index for index, _, _ in written}
    return tuple(
        entry
        for entry in _joined_by_deltas(expr, written)
        if len(partners.get(entry[0], ())) == 1 and next(iter(partners[entry[0]])) in sized
    )


def _tensor_axes(poly: Poly) -> tuple:
    """``(index, tensor, axis)`` for every tensor factor of ``poly``, call arguments included."""
    out = []
    for term in poly.terms:
        for f in term.factors:
            if isinstance(f, Tensor):
                out.extend((i, f.name, axis) for axis, i in enumerate(f.indices))
            elif isinstance(f, MatrixFn):
                out.extend((i, f.matrix, axis) for axis, i in enumerate(f.indices))
            elif isinstance(f, Apply):
                out.extend(_tensor_axes(f.arg))
    return tuple(dict.fromkeys(out))


def _sized_apart(poly: Poly, written: tuple) -> tuple:
    """The letters of ``poly`` that no entry of ``written`` names, each sized at one tensor axis:
    a letter lowering renamed apart (``sum_i((x_i + d)^2)`` sums k), so that a count of it that
    differentiation leaves (``2 delta_kk``, once ``2 x_k`` has gone) keeps x's length.  A letter
    at two axes (``x_k x_k + y_k y_k`` may sum two sizes) is left out."""
    axes: dict[str, set] = {}
    for index, tensor, axis in _tensor_axes(poly):
        axes.setdefault(index, set()).add((tensor, axis))
    named = {index for index, _, _ in written}
    return tuple((i, *next(iter(found))) for i, found in axes.items() if len(found) == 1 and i not in named)


def _letters_of_two_dimensions(written: tuple, joined: list, program: CheckedProgram) -> frozenset[str]:
    """The letters ``written`` puts at axes of two dimensions of ``program`` (``i`` at x's axis
    and at w's in ``u = sum_i(x_i - m); f = u sum_i(w_i - m)``); ``joined`` caches the dimensions."""
    axes: dict[str, set] = {}
    for index, tensor, axis in written:
        axes.setdefault(index, set()).add((tensor, axis))
    several = {i: found for i, found in axes.items() if len(found) > 1}
    if not several:
        return frozenset()
    if not joined:
        joined.append(dimensions(program.definitions))
    dims = joined[0]
    return frozenset(i for i, found in several.items() if len({dims.axis(t, a) for t, a in found}) > 1)


def _sized_by_statement(d: Definition, poly: Poly, written: tuple, program: CheckedProgram, joined: list) -> tuple:
    """Size hints ``(letter, input, axis)`` for the summed letters of ``poly`` (``d``'s statement)
    that no hint names, where the statement sizes the letter at one dimension that an input has
    (a letter one size in a statement, as in ``numpy.einsum``): ``t_i = s delta_mn +
    sin(delta_mi)`` sums m at t's length, so the gradient by s of ``f = t_k b_k``, ``b_i
    delta_mm``, counts b's length (it could not be sized)."""
    named = {e[0] for e in written}
    letters = [i for i in sorted(poly.dummies() - named) if not is_count(i)]
    if not letters:
        return ()
    if not joined:
        joined.append(dimensions(program.definitions))
    dims = joined[0]
    entries: list = []
    for i in letters:
        roots = {dims.find(node) for node in dims.count_nodes(d.name, i)}
        found = {root: axes[0] for root in roots if (axes := dims.input_axes(root, program.all_inputs))}
        if len(found) == 1:
            entries.append((i, *next(iter(found.values()))))
    return tuple(entries)


def _sized_elsewhere(d: Definition, poly: Poly, program: CheckedProgram, joined: list) -> set[str]:
    """The summed letters of ``poly`` (a derivative of ``d``'s statement) that no tensor of it
    carries and that another statement's size hints put at another dimension than ``d`` sums
    them over.  A derivative carries every statement's
    hints (:func:`_hints_for`): ``t_i = sum_j(sin(s + delta_ij)); f = t_k B_jk`` by s is ``B_ki
    cos(s + delta_ij)``, whose j (t's length, B's columns) f's hints put at B's rows: "two
    sizes" where the function evaluates; ``joined`` caches the dimensions."""
    elsewhere = named_axes(tuple(h for other in program.definitions if other.name != d.name for h in other.hints))
    uncarried = {i for term in poly.terms for i in uncarried_letters(term)}
    letters = [i for i in sorted(poly.dummies() & set(elsewhere) & uncarried) if not is_count(i)]
    if not letters:
        return set()
    if not joined:
        joined.append(dimensions(program.definitions))
    dims = joined[0]
    named = named_axes(d.hints)
    clashing = set()
    for i in letters:
        own = {dims.find(node) for node in dims.count_nodes(d.name, i)}
        own |= {dims.axis(tensor, axis) for tensor, axis in named.get(i, ())}
        if own and {dims.axis(tensor, axis) for tensor, axis in elsewhere[i]} - own:
            clashing.add(i)
    return clashing


def _differentiated_by_term(poly: Poly, target: Tensor, letters: frozenset[str]) -> Poly:
    """d poly / d target, term by term, each count of a letter of ``letters`` that a term's
    derivative leaves (its ``delta_ii`` once the tensor carrying i is gone) named by the axis
    that term carried i at (``i#x.0``: x's length), where it carried i at one axis."""
    terms: list[Term] = []
    for term in poly.terms:
        term = rename_term_apart(term, set(poly.indices), set(target.indices))
        axes: dict[str, set] = {}
        for index, tensor, axis in _tensor_axes(Poly((term,), poly.indices)):
            axes.setdefault(index, set()).add((tensor, axis))
        for new in differentiate(Poly((term,), poly.indices), target).terms:
            squares = [f for f in new.factors if isinstance(f, Delta) and f.first == f.second]
            carried = Counter(i for f in new.factors if f not in squares for i in f.indices)
            factors = tuple(
                Delta(*(axis_count(f.first, *next(iter(axes[f.first]))),) * 2)
                if isinstance(f, Delta)
                and f.first == f.second
                and f.first in letters
                and f.first not in poly.indices
                and not carried[f.first]
                and len(axes.get(f.first, ())) == 1
                else f
                for f in new.factors
            )
            terms.append(Term(new.coeff, factors))
    return simplify(terms, poly.indices + target.indices)


def _own_counts(
    poly: Poly, written: tuple, number: int | str, lowered: tuple = (), apart: frozenset[str] = frozenset()
) -> tuple[Poly, tuple]:
    """``poly`` with each summed index that a term carries only as ``delta_ii`` (the dimension
    of i: ``sum_i(t + x_i)`` is I t + sum_i(x_i)) renamed to one of its own, ``i#<statement>``,
    and the size hints that bind it to the axes i is written at.  Derivatives move such a factor
    between statements and rename colliding indices: a name of its own is never renamed, so it
    keeps its dimension (``sum_i(t4 + t2_i)`` after ``t2_i = sum_j(...)`` counts I, not J)."""

    axes: dict[str, list] = {}
    for index, tensor, axis in written + lowered:
        axes.setdefault(index, []).append((tensor, axis))
    # a letter only lowering wrote (a sum renamed apart) is not the user's: ``j#2#`` prints as j9,
    # which nothing sizes when read back, rather than as a j that another statement sizes
    unwritten = {index for index, _, _ in lowered} - {index for index, _, _ in written}
    hints: list = []

    def rename(p: Poly) -> Poly:
        terms = []
        for term in p.terms:
            squares = [f for f in term.factors if isinstance(f, Delta) and f.first == f.second]
            carried = {i for f in term.factors if not any(f is q for q in squares) for i in f.indices}
            counts = {f.first for f in squares if f.first not in p.indices} - carried
            mapping = {
                i: f"{i}{COUNT_MARK}{number}{COUNT_MARK * (i in unwritten)}"
                for i in counts
                if i in axes and not is_count(i)
            }
            for i, u in mapping.items():
                hints.extend((u, tensor, axis) for tensor, axis in axes[i] if (u, tensor, axis) not in hints)
            for i in counts:  # sum_k(c): k's dimension, wherever lowering renamed it (k#_@1)
                letter = count_letter(i)
                # a count of an axis where the statement writes its letter (n#x.0 beside x_n) is
                # that letter's count, as a lowered one is
                at = counted_axis(i)
                if at is not None and letter in apart:
                    continue  # a letter of two dimensions: the count keeps the axis it counts
                if (is_lowered_count(i) or (at is not None and at in axes.get(letter, ()))) and letter in axes:
                    stem = f"{letter}{COUNT_MARK}{number}"
                    mapping[i] = stem + i[len(count_stem(i)) :]
                    new = [(stem, tensor, axis) for tensor, axis in axes[letter]]
                    hints.extend(h for h in new if h not in hints)
            # two counts of one dimension in a term stay two (I^2): the count of a broadcast over
            # i and that of sum_i(c) in one product, (x_i + c) sum_i(y_j), are i and i#_ here
            seen = {f.first for f in squares if is_count(f.first) and f.first not in mapping}
            for i, u in mapping.items():
                k = 0
                while u in seen:
                    k += 1
                    u = f"{count_stem(mapping[i])}@{k}"
                mapping[i] = u
                seen.add(u)
            factors = []
            for f in term.factors:
                if isinstance(f, Apply):
                    f = Apply(f.func, rename(f.arg), f.param)
                elif isinstance(f, Delta) and f.first == f.second and f.first in mapping:
                    f = Delta(mapping[f.first], mapping[f.first])
                factors.append(f)
            terms.append(Term(term.coeff, tuple(factors)))
        return Poly(tuple(terms), p.indices)

    renamed = rename(poly)
    return (renamed if hints else poly), tuple(hints)


def _axis_count_hints(poly: Poly) -> tuple:
    """The size hints ``(count, tensor, axis)`` of the counts of ``poly`` that name the axis they
    count (``n#x.0``, made where a call's argument is differentiated)."""
    stems = dict.fromkeys(count_stem(i) for i in poly.all_index_names() if is_count(i))
    return tuple((i, *axis) for i in stems if (axis := counted_axis(i)) is not None)


def _through_definitions(entries: tuple, definitions: list[Definition]) -> tuple:
    """Size hints ``(index, tensor, axis)`` extended through the definitions they name: an axis of
    ``t2_i = sum_j(A_ij)`` is also A's axis 0, so that a derivative, which computes no more than
    it needs, can size the index from an input."""
    by_name = {d.name: d for d in definitions}
    out = list(entries)
    for _ in range(len(definitions)):
        added = False
        for index, tensor, axis in list(out):
            d = by_name.get(tensor)
            if d is None or axis >= len(d.indices):
                continue
            own = d.indices[axis]
            for hint in d.hints:
                if hint[0] == "names":
                    for e in hint[1]:
                        if e[0] == own and (index, e[1], e[2]) not in out:
                            out.append((index, e[1], e[2]))
                            added = True
        if not added:
            break
    return tuple(out)


def _at_input_axes(entries: tuple, joined: list, definitions: list[Definition], inputs) -> tuple:
    """Size hints ``(index, tensor, axis)`` extended, where ``tensor`` is a statement, to the
    first input axis of that axis's dimension in the whole program: ``t_i = s + delta_ij; f =
    sum_i(a_i + t_j + delta_ij)`` sizes t's axis only where f uses it (at a's length), and the
    gradient by a, ``delta_jj delta_ii``, computes no t: its count of j was sized by nothing
    ("the size of index 'j' cannot be inferred").  A dimension is the equalities the text
    forces (:mod:`einderiv.dimensions`), so every input axis in it has that size."""
    at_inputs = {index for index, tensor, _ in entries if tensor in inputs}
    if all(index in at_inputs for index, _, _ in entries):
        return entries  # each letter sized at an input already
    if not joined:
        joined.append(dimensions(definitions))
    dims = joined[0]
    out = list(entries)
    for index, tensor, axis in entries:
        if index in at_inputs:
            continue
        for found in dims.input_axes(("axis", tensor, axis), inputs)[:1]:
            if (index, *found) not in out:
                out.append((index, *found))
    return tuple(out)


def _hints_within(hints: tuple, known: set[str]) -> tuple:
    """Size hints that name only computed arrays (a hint on what is not computed is dropped)."""
    out = []
    for hint in hints:
        if hint[0] == "poly" and not hint[1].tensor_names() <= known:
            continue
        if hint[0] == "axis" and hint[2] not in known:
            continue
        if hint[0] == "names":
            hint = ("names", tuple(e for e in hint[1] if e[1] in known))
        if hint[0] == "residuals":
            hint = ("residuals", tuple(r for r in hint[1] if r.tensor_names() <= known))
        out.append(hint)  # ("tied", ...) too: checked against the inputs' shapes, whatever is computed
    return tuple(out)


def _single_call(d: Definition) -> Apply | None:
    """The call a definition is, when it is exactly one (``s_n = sigmoid(z_n)``)."""
    terms = d.poly.terms
    if len(terms) == 1 and terms[0].coeff == 1 and len(terms[0].factors) == 1:
        atom = terms[0].factors[0]
        if isinstance(atom, Apply) and set(atom.indices) == set(d.indices):
            return atom
    return None


def see_through(poly: Poly, calls: dict[str, Definition]) -> Poly:
    """The stable rewrites (:mod:`einderiv.rewrites`) across statements: ``log(s_n)`` with
    ``s_n = sigmoid(z_n)`` is ``-softplus(-z_n)``, finite where s rounds to 0 or 1; so are
    ``log(1 - s)`` (``-softplus(z)``), ``log(p)`` with ``p = softmax(z)`` (``z - logsumexp(z)``),
    ``log(mu)`` with ``mu = exp(eta)``, ``log(c)`` with ``c = cosh(x)``, ``log(u)`` with
    ``u = 1 + x`` or ``u = exp(a) + exp(b)``, ``log(sum_j(e_j))`` with ``e = exp(z)`` (a
    log-sum-exp), ``e_k / sum_j(e_j)`` with ``e = exp(z)`` (a softmax), and ``1 / (1 + e)`` or
    ``e / (1 + e)`` with ``e = exp(z)`` (a sigmoid).  ``calls`` are the
    earlier definitions; those of one or two single factors (``1 + x``, ``sum_j(e_j)``) are read
    through: a log, or a quotient, that uses one is rebuilt from its value, and kept only where
    a rule then applies or a stable form appears (so ``log(s)`` of another ``s`` stays as written).
    Ends: each log and each product is rebuilt once, and the definitions used come before the
    statement; a call of a log is rebuilt through its argument (``log(s)^2``)."""
    called = {name for name, d in calls.items() if _single_call(d) is not None}
    calls = {
        name: d
        for name, d in calls.items()
        if _small(d) and not _difference_of_data(d, called) or _sum_of_calls(d, called)
    }
    if not calls:
        return poly
    out: list[Term] = []
    changed = False
    for term in poly.terms:
        divided = any(isinstance(f, Apply) and f.func == "pow" and f.param < 0 for f in term.factors)
        if divided:  # a product of intermediates: e_k / sum_j(e_j) with e = exp(z) is a softmax
            rewritten, applied = rewrite_products(_substituted(Poly((term,), poly.indices), calls).terms)
            if applied or _of_quotient_calls(term, calls):
                # a quotient of one tanh, sigmoid, sinh or cosh intermediate, t / (1 + t^2) with
                # t = tanh(z), is read as its value, so that the stable forms see the call
                # (through t the Hessian was half the right one from z = 20, and the gradient 0)
                out.extend(rewritten)
                changed = True
                continue
        partial = [Term(term.coeff, ())]
        avoid = set(poly.indices) | term.index_names()
        for factor in term.factors:
            parts = [Term(Fraction(1), (factor,))]
            logs = ("log", "log1p")  # log(1 - s) is log1p(-s) by now
            divisor = isinstance(factor, Apply) and factor.func == "pow" and factor.param < 0  # 1 / (1 + e)
            read = isinstance(factor, Apply) and (factor.func in logs or divisor)
            root = _root_of(factor)
            rooted = root is not None and root.tensor_names() & set(calls) and non_negative(_substituted(root, calls))
            used = factor.arg.tensor_names() & set(calls) if read and not rooted else ()
            if used and logsumexp_parts(factor) is not None:
                # log(sum_j(exp(u_j))) is a log-sum-exp already: rebuilt through u = t^2 = 9 x^2
                # it is no longer the softmax_i(u_i) beside it, exp(u_i - logsumexp_j(u_j)), which
                # then summed to 1.016 at logits of 8e13 (u and 9 x^2 round apart)
                used = ()
            if rooted:
                # sqrt(e) with e = exp(z) is exp(z)^0.5 (1 / sqrt(e) its reciprocal): a power of a
                # base never negative, which merges with e's own factors once differentiated (left
                # as e / sqrt(e)^3 it is 0 from z = 473, where e^1.5 overflows: half the Hessian)
                parts, changed = make_apply(factor.func, _substituted(factor.arg, calls), factor.param), True
            elif isinstance(factor, Apply) and not read and factor.arg.tensor_names() & set(calls):
                # any other call (a power, exp, tanh) of an argument that uses an intermediate is
                # rebuilt where its argument is (see_through returns ``poly`` itself where it
                # rewrites nothing): log(s)^2 with s = sum_n(exp(z_n)) is a log-sum-exp squared
                inner = see_through(factor.arg, calls)
                if inner is not factor.arg:
                    parts, changed = make_apply(factor.func, inner, factor.param), True
            if used:  # rebuilt through the call rules (log1p(-s) is log_one_minus_sigmoid's, by log1p_exp)
                arg = _substituted(factor.arg, calls)
                products, applied = rewrite_products(arg.terms)  # log(e_k / s): a log of a softmax
                if applied:
                    arg = simplify(products, arg.indices)
                plain = [Term(Fraction(1), (Apply(factor.func, arg, factor.param),))]
                rebuilt = make_apply(factor.func, arg, factor.param)
                if rebuilt == plain and factor.func == "log1p":
                    # log(1 - p) with p = 1 - exp(-e): log1p(exp(-e) - 1) is log(exp(-e)) = -e, as
                    # the one statement's 1 - (1 - exp(-e)) is (a censored survival, a cloglog GLM);
                    # with q = 1 - x, log(1 - q) is log(x): the 1s cancel
                    one_plus = simplify([Term(Fraction(1), ()), *arg.terms], arg.indices)
                    as_log = make_apply("log", one_plus)
                    if len(one_plus.terms) <= len(arg.terms) or as_log != [
                        Term(Fraction(1), (Apply("log", one_plus),))
                    ]:
                        rebuilt = as_log
                if rebuilt != plain or stable_form(rebuilt):  # a rewrite applied, or a log-sum-exp
                    parts, changed = rebuilt, True
            partial = multiply(partial, parts, set(factor.indices), avoid=avoid)
        out.extend(partial)
    return simplify(out, poly.indices) if changed else poly


#: calls a quotient of whose intermediates is read as its value: their derivatives have stable
#: forms that see only calls (1 - tanh^2 evaluated as cosh^-2, sinh / cosh^2 read as tanh / cosh)
QUOTIENT_CALLS = frozenset({"cosh", "sigmoid", "sinh", "tanh"})


def _of_quotient_calls(term: Term, calls: dict[str, Definition]) -> bool:
    """Whether the intermediates ``term`` reads are one and the same call of :data:`QUOTIENT_CALLS`
    (``t / (1 + t^2)``, ``1 / c``).  Two calls (``u / (1 + t^2)`` with u = tanh(2 z), t = tanh(z);
    ``t / (1 + s)`` with s = sigmoid(z)) stay as written: their one-statement forms cancel where
    the program's do not (a reviewer's find: read as their values, Hessians were 2x off or 0)."""
    used = Poly((term,), ()).tensor_names() & set(calls)
    found = [_single_call(calls[name]) for name in used]
    return len(found) == 1 and found[0] is not None and found[0].func in QUOTIENT_CALLS


def _root_of(factor) -> Poly | None:
    """The base u under a root: of ``sqrt(u)``, of ``u^p`` for a non-integer p, of ``sqrt(u)^p``."""
    if not isinstance(factor, Apply) or factor.func not in ("sqrt", "pow"):
        return None
    if factor.func == "sqrt" or Fraction(factor.param).denominator != 1:
        return factor.arg
    inner = single_atom(factor.arg, "sqrt")
    return None if inner is None else inner.arg


def _small(d: Definition) -> bool:
    """Whether a definition is one or two terms of at most one factor each: one call
    (``s = sigmoid(z)``), one sum (``s = sum_j(e_j)``), ``u = 1 + x``, ``exp(a) + exp(b)``; or a
    short polynomial in one tensor (``d_n = s_n (1 - s_n)``, sigmoid's derivative, whose log
    the catalogue reads once s is substituted), or one tensor over a negative power of a
    polynomial in it (``s / (1 - s)``, whose log with s = sigmoid(z) is z; ``s / (1 + s)^3``) or
    over another tensor (``o = s / q`` with q = 1 - s named: the odds again)."""
    terms = d.poly.terms
    # a count's reciprocal is no factor here: ``m = mean_n(e_n)`` is one sum
    if 1 <= len(terms) <= 2 and all(sum(not is_reciprocal(f) for f in t.factors) <= 1 for t in terms):
        return True
    if len(terms) == 1 and len(terms[0].factors) == 2:
        # a quotient in one tensor, ``r = s / (1 - s)`` (odds: log(r) with s = sigmoid(z) is z)
        top, bottom = sorted(terms[0].factors, key=lambda f: isinstance(f, Apply) and f.func == "pow")
        if _quotient_of_one_call(top, bottom):
            return True  # r = s / (1 - s) as see_through read it: sigmoid(z) / (1 - sigmoid(z))
        if (
            isinstance(top, Tensor)
            and isinstance(bottom, Apply)
            and bottom.func == "pow"
            and bottom.param < 0
            and (bottom.arg.tensor_names() == {top.name} or _one_tensor(bottom.arg))
        ):
            return True
    factors = {f for t in terms for f in t.factors}
    return (
        len(terms) <= 4
        and len(factors) == 1
        and isinstance(next(iter(factors)), Tensor)
        and all(len(t.factors) <= 3 for t in terms)
    )


def _sum_of_calls(d: Definition, called: set[str]) -> bool:
    """Whether a definition is a short sum of calls and numbers (``u = exp(z) + exp(-z) + 1``, or
    ``u = a + b + 1`` with ``a``, ``b`` calls named earlier), each term one factor or none: its log
    is read through as a log of a sum of exps is in one statement (at |z| = 1000 it was inf,
    with a NaN gradient, where the statement's is 2000)."""
    terms = d.poly.terms
    return (
        2 <= len(terms) <= 4
        and all(len(t.factors) <= 1 for t in terms)
        and all(
            isinstance(f, Apply) and not is_reciprocal(f) or isinstance(f, Tensor) and f.name in called
            for t in terms
            for f in t.factors
        )
    )


def _quotient_of_one_call(top, bottom) -> bool:
    """Whether ``top / bottom`` is ``f(z) / p(f(z))`` for f of :data:`QUOTIENT_CALLS`, p a polynomial."""
    if not (isinstance(top, Apply) and top.func in QUOTIENT_CALLS):
        return False
    if not (isinstance(bottom, Apply) and bottom.func == "pow" and bottom.param < 0):
        return False
    return all(
        f == top or (isinstance(f, Apply) and f.func == "pow" and single_atom(f.arg) == top)
        for t in bottom.arg.terms
        for f in t.factors
    )


def _one_tensor(poly: Poly) -> bool:
    """Whether ``poly`` is one tensor (``q_n``), the denominator of ``o = s / q``."""
    return len(poly.terms) == 1 and poly.terms[0].coeff == 1 and [type(f) for f in poly.terms[0].factors] == [Tensor]


def _difference_of_data(d: Definition, called: set[str] = frozenset()) -> bool:
    """Whether a definition is a sum of two tensors (``E_nk = x_n - mu_k``): no stable rule reads
    through one, and substituted it is multiplied out of every product that differentiation
    forms (the Hessian of a mixture's log-likelihood at data offset by 1e8 was 11x off).  A sum
    of two calls named earlier (``called``: ``u_i = e_i + g_i`` with ``e = exp(x)``, ``g =
    exp(-x)``) is read through: ``log(u)`` is ``log(exp(x) + exp(-x))``'s stable form, as in one
    statement (it was inf, with a NaN gradient, at x = -745)."""
    return len(d.poly.terms) == 2 and all(
        len(t.factors) == 1
        and isinstance(t.factors[0], Tensor)
        and not is_reciprocal(t.factors[0])
        and t.factors[0].name not in called
        for t in d.poly.terms
    )


def _substituted(poly: Poly, calls: dict[str, Definition]) -> Poly:
    """``poly`` with every use of ``calls`` replaced by its value, and again in those values
    (``s = sum_j(e_j)`` with ``e_j = exp(z_j)``).  Ends: a value uses only earlier definitions."""
    for _ in range(len(calls) + 1):
        used = poly.tensor_names() & set(calls)
        if not used:
            break
        for name in sorted(used):
            poly, _ = substitute_tensor(poly, name, calls[name])
    return poly


def prune(program: CheckedProgram) -> CheckedProgram:
    """Keep only the definitions the output needs, in order (those its statements write too)."""
    needed = _needed(program, everything_written=True)
    kept = [d for d in program.definitions if d.name in needed]
    inputs = {k: v for k, v in program.inputs.items() if k in needed}
    return CheckedProgram(kept, inputs, program.output, program.source, program.ranks, program.all_inputs)


def _needed(program: CheckedProgram, everything_written: bool) -> set[str]:
    """The names the output needs: what its definitions use, and what their size hints name (all
    the tensors their statements write, or, for evaluation, only those it must compute: an
    intermediate named in a statement but no longer used is not, nor is a scalar's own text)."""
    defined = {d.name for d in program.definitions}
    needed = {program.output}
    for d in reversed(program.definitions):
        if d.name not in needed:
            continue
        needed |= references(d.poly)
        for hint in d.hints:
            if hint[0] == "poly" and everything_written:
                needed |= hint[1].tensor_names()
            elif hint[0] == "poly" and d.indices:  # evaluation sizes axes by inputs, not by what it need not compute
                needed |= hint[1].tensor_names() - defined
            elif hint[0] == "axis":
                needed.add(hint[2])
            elif hint[0] == "names":
                needed |= {tensor for _, tensor, _ in hint[1] if everything_written or tensor not in defined}
            elif hint[0] == "differentiates" and everything_written:
                needed.add(hint[1])
    return needed


def _rename_free(poly: Poly, new: Indices) -> Poly:
    """The same expression with its free indices called ``new``."""
    poly = rename_apart(poly, set(new))
    mapping = dict(zip(poly.indices, new))
    return Poly(tuple(t.rename(mapping) for t in poly.terms), tuple(new))


def _letters(own: Indices, avoid: set[str]) -> Indices:
    """A statement's own index letters where they are free to use, else fresh ones."""
    if len(set(own)) == len(own) and not set(own) & avoid:
        return tuple(own)
    return fresh_indices(len(own), avoid | set(own))


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base2``, ``base3``... whichever is not in ``taken``."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}{k}"
    return name


def derive(
    program: CheckedProgram, wrt: Tensor, name: str, stem: str | None = None, jacobians: bool = True
) -> CheckedProgram:
    """The program computing d(output)/d(wrt), named ``name``, by reverse accumulation.  Its
    adjoints are named ``d<stem>d<intermediate>`` (by default the output's name: ``dLdH``;
    a second derivative's ``d2LdWdH``, the derivative of dL/dW by H).  Its sums are simplified
    with the exact cancellations of :mod:`einderiv.cancel` (``CANCELLING``)."""
    bounded = {
        (d.name, d.indices, call)
        for d in program.definitions
        if (call := _single_call(d)) is not None and call.func in BOUNDED
    }
    # intermediates that are an elementwise sum (u_i = 1 + x_i^2): sqrt(u) is read through; and
    # those that are the root of one (u_i = sqrt(1 + x_i^2)): u^-3 is read as sqrt(1 + x_i^2)^-3
    rooted = {
        (d.name, d.indices, d.poly)
        for d in program.definitions
        if (len(d.poly.terms) > 1 or root_of_sum(d.poly) is not None) and d.poly.all_index_names() <= set(d.indices)
    }
    # intermediates that are a fractional power of one tensor (u_i = x_i^0.5): read as x's power
    # where a term holds x too
    powered = {
        (d.name, d.indices, atom, call.param)
        for d in program.definitions
        if (call := _single_call(d)) is not None
        and call.func == "pow"
        and call.param.denominator != 1
        and isinstance(atom := single_atom(call.arg), Tensor)
        and set(atom.indices) == set(d.indices)
    }
    token, sums = CANCELLING.set(frozenset(bounded)), ROOTED.set(frozenset(rooted))
    powers = POWERED.set(frozenset(powered))
    try:
        return _derive(program, wrt, name, stem, jacobians)
    finally:
        POWERED.reset(powers)
        ROOTED.reset(sums)
        CANCELLING.reset(token)


def _derive(program: CheckedProgram, wrt: Tensor, name: str, stem: str | None, jacobians: bool) -> CheckedProgram:
    out = program.out
    P, W = out.indices, wrt.indices
    definitions = {d.name: d for d in program.definitions}
    order = [d.name for d in program.definitions]
    depends: dict[str, bool] = {}
    for d in program.definitions:
        depends[d.name] = wrt.name in references(d.poly) or any(depends.get(r, False) for r in references(d.poly))
    relevant = [n for n in order if depends[n] and n != out.name]
    users: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for r in references(definitions[n].poly):
            if r in users and n not in users[r]:
                users[r].append(n)
    taken = set(definitions) | set(program.inputs) | {name}
    bars: dict[str, tuple[str, Indices]] = {}
    adjoints: list[Definition] = []
    base = stem or out.name.replace("/", "")

    counts: list = []  # size hints of the counts differentiation leaves (sum_n of a constant in n)
    joined: list = []  # the program's dimensions, built where a letter may name two
    hinted = frozenset().union(*(hinted_letters(d) for d in program.definitions))

    def partial_of(d: Definition, poly: Poly, target: Tensor) -> Poly:
        """d poly / d target, each count it leaves (``delta_nn``: -2 sum_n(z_n - m) by m is
        -2 z_n + 2 m N) named as a count of ``d``'s statement, sized where that statement wrote
        its letter: adjoints substituted into other statements rename plain letters, never counts.
        A letter that statement writes at two dimensions (a derivative's statement gathers the
        letters of every statement it came from) counts the axis its own term carried it at."""
        written = tuple(e for h in d.hints if h[0] == "names" for e in h[1] if not is_count(e[0]))
        # the statement's summed letters that the target's name are renamed apart here, where the
        # renaming is known, and keep their dimensions: renamed by differentiation, ``sum_n(s - y_n)^2``
        # by u_n counted N as delta_jj, which nothing sized (``u_n = a_n w; L = (u_i sigmoid(u_i) -
        # y_n)^2`` could not be evaluated)
        poly, renamed = renamed_apart(poly, set(target.indices))
        written += tuple((renamed[i], tensor, axis) for i, tensor, axis in written if i in renamed)
        # a summed letter no hint names is sized as the statement sums it, where that is one dimension
        written += _sized_by_statement(d, poly, written, program, joined)
        apart = _letters_of_two_dimensions(written, joined, program)
        if apart:
            partial = _differentiated_by_term(poly, target, apart)
        else:
            partial = differentiate(poly, target)
        partial, hints = _own_counts(partial, written, f"d{d.name}", _sized_apart(poly, written), apart)
        # a summed letter that no tensor carries, sized by hints alone, where another statement's
        # hints (which the result carries too) put it at another dimension: renamed to a letter
        # no hint names, with this statement's hints
        clashing = _sized_elsewhere(d, partial, program, joined)
        partial, moved = renamed_apart(partial, clashing, hinted)
        moved_hints = tuple((moved[i], tensor, axis) for i, tensor, axis in written if i in moved)
        entries = _through_definitions(hints + _axis_count_hints(partial) + moved_hints, program.definitions)
        counts.extend(_at_input_axes(entries, joined, program.definitions, program.all_inputs))
        return partial

    def through(user: str, target: Tensor, avoid: set[str]) -> list[Term]:
        """sum_T dOd(user)_{P T} d user_T / d target: terms with free P + target's indices."""
        if user == out.name:
            return list(partial_of(out, out.poly, target).terms)
        user_def = definitions[user]
        bar_name, _ = bars[user]
        T = _letters(user_def.indices, set(P) | set(target.indices) | avoid)
        partial = partial_of(user_def, _rename_free(user_def.poly, T), target)
        if not partial.terms:
            return []
        shared = set(T) | set(target.indices)  # what the partial derivative shares with the adjoint
        # each term renamed apart from the adjoint's letters; a letter so renamed that no tensor
        # carries is none the size hints name (c_l of f_j = t c_l d_l + A_ij sized cos(delta_il),
        # renamed from t's j: the printed text read back with c's length, silently)
        terms = []
        for term in partial.terms:
            moved, mapping = renamed_apart(Poly((term,), tuple(shared)), shared | set(P))
            if set(mapping.values()) & hinted & uncarried_letters(moved.terms[0]):
                moved, _ = renamed_apart(Poly((term,), tuple(shared)), shared | set(P), hinted)
            terms.append(Term(term.coeff, (Tensor(bar_name, P + T), *moved.terms[0].factors)))
        return terms

    for s in reversed(relevant):
        s_def = definitions[s]
        S = _letters(s_def.indices, set(P) | set(W))
        target = Tensor(s, S)
        terms: list[Term] = []
        counts.clear()
        for user in users[s]:
            if user == out.name or user in bars:
                terms.extend(through(user, target, set(W)))
        bar_name = unique_name(f"d{base}d{s}", taken)
        taken.add(bar_name)
        bars[s] = (bar_name, S)
        hints = _hints_for(out, P, program, joined) + tuple(("axis", i, s, k) for k, i in enumerate(S))
        hints += (("names", tuple(dict.fromkeys(counts))),) if counts else ()
        adjoints.append(Definition(bar_name, P + S, simplify(terms, P + S), hints))

    counts.clear()
    result_terms = list(partial_of(out, out.poly, wrt).terms)
    for t in relevant:
        if wrt.name in references(definitions[t].poly):
            result_terms.extend(through(t, wrt, set()))
    final_hints = _hints_for(out, P, program, joined) + tuple(("axis", i, wrt.name, k) for k, i in enumerate(W))
    final_hints += (("names", tuple(dict.fromkeys(counts))),) if counts else ()
    final = Definition(name, P + W, simplify(result_terms, P + W), final_hints)
    forward = [d for d in program.definitions if d.name != out.name]
    ranks = dict(program.ranks)
    ranks.update({d.name: len(d.indices) for d in [*adjoints, final]})
    derived = CheckedProgram([*forward, *adjoints, final], dict(program.inputs), name, None, ranks, program.all_inputs)
    adjoint_names = {b for b, _ in bars.values()}
    # the adjoints of two or more softmaxes stay named: inlined (dfdp = q, dfdq = p for
    # f = p_i q_i), their chain rules p_j (g_j - sum_i(g_i p_i)) were collected into one sum, which
    # is exactly 0 at saturation no longer (1 ulp, 3.8e15 for 0 times cosh(74))
    softmaxes = {bars[s][0] for s in bars if s in definitions and _is_softmax(definitions[s].poly)}
    candidates = adjoint_names - softmaxes if len(softmaxes) >= 2 else adjoint_names
    inlined = prune(inline(derived, candidates, jacobians=candidates if P and jacobians else frozenset()))
    # inlining an adjoint meets the forward calls again: sigmoid(-x) + dLds sigmoid(x) is
    # sigmoid(-x) + sigmoid(x) once dLds = 1 is in, which the sum rules make 1, as in one statement
    return _through_residuals(_rewritten_sums(inlined, {name} | adjoint_names), {name} | adjoint_names)


def _one_factor(poly: Poly):
    """The single factor ``poly`` is (coefficient 1), else None."""
    terms = poly.terms
    return terms[0].factors[0] if len(terms) == 1 and terms[0].coeff == 1 and len(terms[0].factors) == 1 else None


def _is_softmax(poly: Poly) -> bool:
    """Whether ``poly`` is one softmax, ``exp(v - logsumexp_R(v))``."""
    return softmax_parts(_one_factor(poly)) is not None


def softmax_axes(d: Definition) -> tuple[int, ...] | None:
    """The axes of ``d`` that its softmax is taken over, where ``d`` is one softmax whose every
    letter is on its left-hand side (``s_k = softmax_k(Z_nk)`` sums n: each s_k is a sum of N
    softmax entries, which sum to N, not to 1); else None."""
    factor = _one_factor(d.poly)
    parts = softmax_parts(factor)
    if parts is None or sorted(factor.indices) != sorted(d.indices):
        return None
    return tuple(d.indices.index(factor.indices[axis]) for axis in parts[1])


#: the name of a named difference of data (:mod:`einderiv.residuals`, ``_r0 = y - mu``), alone or
#: inside an adjoint's name
RESIDUAL_NAME = re.compile(r"_r\d+")
#: the most terms of a derivative's statement that :func:`_through_residuals` reads
MAX_RESIDUAL_TERMS = 40


def _through_residuals(program: CheckedProgram, names: set[str]) -> CheckedProgram:
    """``program`` with a use of a named difference of data (``_r0 = y - mu``) written as that
    difference, in a term of the statements ``names``, wherever that cancels terms: the chain
    rule through ``_r0 / mu`` gives ``-2 _r0 _r0 e - 2 _r0 mu e``, which is ``-2 _r0 (_r0 + mu) e``
    where ``_r0 + mu`` is y, rounded: with y = 2 and mu = exp(40) it is 0, so a relative-error
    gradient was 0 for 1.7e-17 (a helper's hunt; as one statement it is exact).  One use is
    written out at a time, and kept only where the statement then has fewer terms: the residual
    stays where it keeps its digits (``_r0 _r0``, near a fit).  Ends: each rewrite removes a term."""
    residuals = {d.name: d for d in program.definitions if RESIDUAL_NAME.fullmatch(d.name)}
    if not residuals:
        return program
    # each as written (y - mu), read through the statements it uses (y - 2 exp(eta), where
    # differentiating mu = 2 exp(eta) left 2 exp(eta) and eta stayed a name), and through all
    # the statements before it (y - exp(X w))
    forward = {d.name: d for d in program.definitions if d.name not in names and d.name not in residuals}
    residuals = {name: _forms(d, forward) for name, d in residuals.items()}
    definitions, changed = [], False
    for d in program.definitions:
        if d.name in names and len(d.poly.terms) <= MAX_RESIDUAL_TERMS:
            poly = _residuals_written_out(d.poly, residuals)
            if poly is not d.poly:
                d, changed = replace(d, poly=poly), True
        definitions.append(d)
    return replace(program, definitions=definitions) if changed else program


def _forms(residual: Definition, forward: dict[str, Definition]) -> tuple[Definition, ...]:
    """``residual`` as written, with the statements it uses substituted once, and with every
    statement before it substituted (each distinct form once)."""
    once = residual.poly
    for name in sorted(once.tensor_names() & set(forward)):
        once, _ = substitute_tensor(once, name, forward[name])
    polys = (residual.poly, once, _substituted(residual.poly, forward))
    return tuple(replace(residual, poly=poly) for poly in dict.fromkeys(polys))


def _residuals_written_out(poly: Poly, residuals: dict[str, tuple[Definition, ...]]) -> Poly:
    """``poly`` with one residual use at a time written as its difference (one of its forms)
    where that removes terms."""
    while True:
        for k, term in enumerate(poly.terms):
            shorter = next(
                (
                    out
                    for position, factor in enumerate(term.factors)
                    if isinstance(factor, Tensor) and factor.name in residuals
                    for form in residuals[factor.name]
                    for out in [_one_use_written_out(poly, k, position, form)]
                    if len(out.terms) < len(poly.terms)
                ),
                None,
            )
            if shorter is not None:
                poly = shorter
                break
        else:
            return poly


def _one_use_written_out(poly: Poly, k: int, position: int, residual: Definition) -> Poly:
    """``poly`` with the factor at ``position`` of term ``k`` (a use of ``residual``) replaced by
    the residual's expression."""
    term = poly.terms[k]
    use = term.factors[position]
    alone = replace(residual, name=residual.name + "_one")
    factors = (*term.factors[:position], Tensor(alone.name, use.indices), *term.factors[position + 1 :])
    marked = Term(term.coeff, factors)
    written, _ = substitute_tensor(Poly((marked,), poly.indices), alone.name, alone)
    return simplify([*poly.terms[:k], *written.terms, *poly.terms[k + 1 :]], poly.indices)


def _rewritten_sums(program: CheckedProgram, names: set[str]) -> CheckedProgram:
    """``program`` with the sum rules (:func:`einderiv.rewrites.rewrite_sums`) applied to the
    statements named in ``names``."""
    changed = False
    definitions = []
    softmaxes = {d.name: axes for d in program.definitions if (axes := softmax_axes(d)) is not None}
    for d in program.definitions:
        # (one whose text is fixed, a statement or counts already named, keeps its poly)
        fixed = d.statement is not None or d.counts is not None
        poly = rewrite_sums(d.poly, softmaxes) if d.name in names and not fixed else d.poly
        if poly is not d.poly:
            # a softmax summed to one leaves the count of its batch axis, named by that axis
            # (k#t2.0), which is sized there
            counted = _through_definitions(_axis_count_hints(poly), program.definitions)
            hints = d.hints + ((("names", counted),) if counted else ())
            d, changed = replace(d, poly=poly, hints=hints), True
        definitions.append(d)
    if not changed:
        return program
    return replace(program, definitions=definitions)


def named_axes(hints: tuple) -> dict[str, set[tuple[str, int]]]:
    """Each letter the ``names`` size hints name -> the axes ``(tensor, axis)`` they put it at."""
    axes: dict[str, set[tuple[str, int]]] = {}
    for h in hints:
        for index, tensor, axis in h[1] if h[0] == "names" else ():
            axes.setdefault(index, set()).add((tensor, axis))
    return axes


def hinted_letters(d: Definition) -> frozenset[str]:
    """The letters (not counts) that the size hints of ``d`` name at a tensor's axis."""
    return frozenset(i for i in named_axes(d.hints) if not is_count(i))


def with_moved_letters(hints: tuple, moved: dict[str, set[str]]) -> tuple:
    """``hints`` naming each moved letter's new letters (old -> new, :func:`~einderiv.printing.
    moved_letters`) at the axes they named the old one: renaming a summed letter keeps its size."""
    entries = tuple(
        (new, *e[1:]) for h in hints if h[0] == "names" for e in h[1] if e[0] in moved for new in sorted(moved[e[0]])
    )
    return (*hints, ("names", entries)) if entries else hints


def _hints_for(out: Definition, P: Indices, program: CheckedProgram, joined: list) -> tuple:
    """Size hints for the output's indices P, whatever definition ``out`` came from, and the
    inputs' axes as every statement wrote them (a dimension ``delta_kk`` left by differentiating
    ``sum_k(z_k + s)`` by s is k's size, z's length; an intermediate named there would be computed
    just for its shape).  A count written at a statement's axis is sized at an input axis of
    that axis's dimension (:func:`_at_input_axes`): ``t_j = sum_i(-cos(delta_ij)); f =
    sum_i(t_i + t_j + A_ii)`` by A is ``delta_kl delta_jj``, J being t's length, A's."""
    entries = tuple(
        e
        for d in program.definitions
        for h in d.hints
        if h[0] == "names"
        for e in h[1]
        if e[1] in program.inputs or is_count(e[0])
    )
    entries = tuple(
        e for e in _at_input_axes(entries, joined, program.definitions, program.all_inputs) if e[1] in program.inputs
    )
    written = (("names", tuple(dict.fromkeys(entries))),)
    residuals = tuple(
        dict.fromkeys(r for d in program.definitions for h in d.hints if h[0] == "residuals" for r in h[1])
    )
    written += (("residuals", residuals),) if residuals else ()
    # the axes the output's statement ties (t_k beside b_k in exp(sum_k(t_k + b_k))): the only
    # place t's length is said, which a derivative computing no t (2 delta_ii f) still needs
    written += tuple(h for h in out.hints if h[0] == "tied")
    if not P:  # a scalar output: nothing else to size (and no intermediate to compute just for sizes)
        return written
    return written + tuple(h for h in out.hints if h[0] == "poly" or (h[0] != "names" and h[1] in P))


def count_uses(program: CheckedProgram, name: str) -> int:
    total = 0

    def visit(poly: Poly):
        nonlocal total
        for term in poly.terms:
            for f in term.factors:
                if isinstance(f, Tensor) and f.name == name:
                    total += 1
                elif isinstance(f, Apply):
                    visit(f.arg)

    for d in program.definitions:
        visit(d.poly)
    return total


def substitute_tensor(poly: Poly, name: str, definition: Definition, letters=None) -> tuple[Poly, tuple]:
    """Replace every use ``name_J`` in ``poly`` by the definition's expression with indices J.

    A summed index of a use that the expression is constant along (``dfdt_i = 1`` in
    ``dfdt_i dtds_ij``) becomes a count, the dimension of that axis: it is renamed to a count of
    its own (``i#dfdt:0:1``) and returned with size hints ``(count, tensor, axis)`` taken from
    the definition's own hints, since the tensor that sized it is gone.  It prints with its letter
    where that is the letter the statement of that axis wrote (``letters``: (tensor, axis) ->
    letter), so that the printed program sizes it the same way; else as ``i9``, which nothing
    sizes (``i#dfdt:0:1#``)."""
    axes = {h[1]: (h[2], h[3]) for h in definition.hints if h[0] == "axis"}
    hints: list = []
    made = 0

    def counted(term: Term, use: Tensor, free: Indices) -> Term:
        nonlocal made
        squares = {f.first for f in term.factors if isinstance(f, Delta) and f.first == f.second}
        carried = {i for f in term.factors if not (isinstance(f, Delta) and f.first == f.second) for i in f.indices}
        mapping = {}
        for k, index in enumerate(use.indices):
            if index in squares and index not in carried and index not in free and not is_count(index):
                source = axes.get(definition.indices[k])
                if source is None:
                    continue
                made += 1
                letter = definition.indices[k]
                unwritten = COUNT_MARK * ((letters or {}).get(source) != letter)
                mapping[index] = f"{letter}{COUNT_MARK}{name}:{k}:{made}{unwritten}"
                hints.append((mapping[index], *source))
        return Term(term.coeff, tuple(rename_atom(f, mapping) for f in term.factors)) if mapping else term

    def replace(terms, free: Indices) -> list[Term]:
        out: list[Term] = []
        for term in terms:
            partial = [Term(term.coeff, ())]
            avoid = set(free) | term.index_names()
            uses = []
            for f in term.factors:
                if isinstance(f, Tensor) and f.name == name:
                    value = _rename_free(definition.poly, f.indices)
                    partial = multiply(partial, list(value.terms), set(f.indices), avoid=avoid)
                    uses.append(f)
                elif isinstance(f, Apply):
                    inner = simplify(replace(f.arg.terms, f.arg.indices), f.arg.indices)
                    partial = multiply(partial, make_apply(f.func, inner, f.param), set(f.indices), avoid=avoid)
                else:
                    partial = [Term(t.coeff, t.factors + (f,)) for t in partial]
            summed = term.index_names() - set(free)
            for t in partial:
                t = keep_sums(t, summed)
                for use in uses:
                    t = counted(t, use, free)
                out.append(t)
        return out

    return simplify(replace(poly.terms, poly.indices), poly.indices), tuple(hints)


def inline(
    program: CheckedProgram, candidates: set[str], jacobians: set[str] | frozenset = frozenset()
) -> CheckedProgram:
    """Substitute adjoints that are used once, or are a single factor, into their users; again
    until none is: one used twice by another adjoint is used once after that one is substituted
    (``d2Ldwdt`` in ``d2Ldwda``, which is used once).  ``jacobians``: the adjoints of a
    derivative of a non-scalar output (a gradient differentiated again), each a Jacobian over
    the output's axes and an intermediate's, substituted where that stays a few terms.  Ends:
    each pass that goes on removes a definition."""
    definitions = list(program.definitions)
    letters = {(x.name, k): i for x in definitions if x.statement is not None for k, i in enumerate(x.indices)}
    pending = [d.name for d in definitions if d.name in candidates]
    refused: dict[str, tuple] = {}  # name -> its users' values when it last stayed
    while pending:
        left = len(pending)
        for name in list(pending):
            users = tuple(x.poly for x in definitions if name in references(x.poly))
            if refused.get(name) == users:
                continue  # nothing it is used in has changed: it stays again
            substituted = _inline_one(program, definitions, name, letters, name in jacobians)
            if substituted is None:
                refused[name] = users
            else:
                definitions = substituted
                pending.remove(name)
        if len(pending) == left:
            break
    return CheckedProgram(definitions, program.inputs, program.output, None, program.ranks, program.all_inputs)


def _inline_one(program: CheckedProgram, definitions: list, name: str, letters, jacobian: bool = False) -> list | None:
    """``definitions`` with the adjoint ``name`` substituted into its users, or None where it stays.
    A ``jacobian`` (the adjoint of an intermediate for a non-scalar output) is substituted where
    that stays a few terms: computed apart it holds the output's axes times the intermediate's
    (the two-layer network's Hessian by W1 formed d2LdW1dH_lmnj, D x H x N x H numbers, 8e9 at
    D = 100, H = 200, N = 2000), where its users contract it at once."""
    current = CheckedProgram(definitions, program.inputs, program.output, None, program.ranks, program.all_inputs)
    d = current.definition(name)
    uses = count_uses(current, name)
    # one factor, or one term of a scalar (dfdt1 = sigmoid(t1) delta_ii delta_jj): substituted,
    # its calls are still computed once (the optimiser shares them), and its counts print in
    # the derivative's statement, which is sized as the statement it differentiates
    small = len(d.poly.terms) <= 1 and all(len(t.factors) <= 1 or not d.indices for t in d.poly.terms)
    # an adjoint holding counts (d2fdudt1_k = ... delta_ii delta_jj M_kl u_l) is substituted
    # too, where that stays small: the derivative's statement is sized as the one it differentiates
    counting = any(is_count(i) for i in d.poly.all_index_names()) and len(d.poly.terms) * uses <= 16
    # a Jacobian, and an adjoint diagonal in two of its axes (d2LdXdD_klij = delta_ik ... of an
    # RBF Hessian), which computed apart would fill its off-diagonal with zeros (500 x 10 x 500 x
    # 400 there): substituted, where that stays small, its users contract it (and its delta) at once
    diagonal = all(_joins_axes(t, d.indices) for t in d.poly.terms)
    spread = 0 < len(d.poly.terms) * uses <= 8 and (jacobian or diagonal)
    substituted = []
    before = after = 0
    for x in definitions:
        if x.name == name:
            continue
        if name in references(x.poly):
            poly, counts = substitute_tensor(x.poly, name, d, letters)
            before, after = before + len(x.poly.terms), after + len(poly.terms)
            # the counts the substituted definition carries travel with it, with their sizes
            carried = tuple(e for h in d.hints if h[0] == "names" for e in h[1] if is_count(e[0]))
            counts = _through_definitions(counts, definitions) + carried
            # (a count at a statement that only a later use sizes, t_i = s + delta_ij, at an input
            # axis of its dimension: a Hessian computing no t sizes it there)
            counts = _at_input_axes(counts, [], program.definitions, program.all_inputs)
            x = Definition(x.name, x.indices, poly, (*x.hints, ("names", counts)) if counts else x.hints, None)
        substituted.append(x)
    # used more than once, it is substituted where its users then collect into fewer terms
    # (c_n^2 X_ni beside c_n c_n X_ni)
    # one term holding a divisor, all of whose uses lie in one statement: substituted, the
    # divisor meets the factors it cancels with there (``(1 - t^2) dfdt`` with dfdt = -t /
    # sqrt(1 - t^2) is -t sqrt(1 - t^2), where 0 * inf was NaN from |x| = 355 for t = tanh(x))
    users = [x for x in definitions if x.name != name and name in references(x.poly)]
    dividing = (
        len(d.poly.terms) == 1
        and len(users) == 1
        and uses <= 8  # as a spread Jacobian's: a few copies of one term
        and any(isinstance(f, Apply) and f.func == "pow" and f.param < 0 for f in d.poly.terms[0].factors)
    )
    if uses != 1 and not small and not counting and not spread and not dividing and after >= before:
        return None
    return substituted


def _joins_axes(term: Term, indices: Indices) -> bool:
    """Whether a delta of ``term`` joins two of the axes ``indices``."""
    axes = set(indices)
    return any(isinstance(f, Delta) and f.first != f.second and {f.first, f.second} <= axes for f in term.factors)


__all__ = ["CheckedProgram", "Definition", "check_program", "derive", "walk"]


def _same_call(call: Apply, indices: Indices, atom: Apply) -> Indices | None:
    """The indices J for which ``atom`` is ``call`` with ``indices`` renamed to J, or None."""
    from itertools import permutations

    if not isinstance(atom, Apply) or (atom.func, atom.param) != (call.func, call.param):
        return None
    if len(atom.indices) != len(indices) or len(indices) > 3:
        return None
    for candidate in permutations(atom.indices):
        renamed = rename_atom(call, dict(zip(indices, candidate)))
        if set(renamed.indices) == set(atom.indices):
            arg = Poly(renamed.arg.terms, renamed.arg.indices)
            target = Poly(atom.arg.terms, renamed.arg.indices)
            if equivalent(arg, target):
                return tuple(candidate)
    return None


def name_calls(poly: Poly, program: CheckedProgram) -> tuple[Poly, set[str]]:
    """``poly`` with each call that a statement of ``program`` defines written by that
    statement's name: ``sigmoid(z_n)`` is ``s_n`` after ``s_n = sigmoid(z_n)``, so that a derivative
    reads in the user's names (``(s_n - y_n) X_ni``).  Returns the names used this way.  The same
    values: the statement computes exactly that call."""
    calls = []
    for d in program.definitions:
        call = _single_call(d)
        if call is not None and d.statement is not None and not d.statement.wrt and d.name != program.output:
            calls.append((d.name, d.indices, call))
    matrices = {}  # q = det(A): det(A) is q
    for d in program.definitions:
        terms = d.poly.terms
        if d.statement is None or d.statement.wrt or d.name == program.output or len(terms) != 1:
            continue
        if terms[0].coeff == 1 and len(terms[0].factors) == 1 and isinstance(terms[0].factors[0], MatrixFn):
            fn = terms[0].factors[0]
            if len(set(fn.indices)) == len(fn.indices) and set(fn.indices) == set(d.indices):
                matrices[(fn.func, fn.matrix)] = (d.name, tuple(d.indices.index(i) for i in fn.indices))
    used: set[str] = set()
    if not calls and not matrices:
        return poly, used

    def atom(f):
        if isinstance(f, MatrixFn) and (f.func, f.matrix) in matrices:
            name, where = matrices[(f.func, f.matrix)]
            if len(set(f.indices)) == len(f.indices):
                indices = [""] * len(f.indices)
                for k, position in enumerate(where):
                    indices[position] = f.indices[k]
                used.add(name)
                return Tensor(name, tuple(indices))
        if not isinstance(f, Apply):
            return f
        if f.func == "pow":  # sigmoid(z_n)^2 is s_n^2; other arguments stay as they are, since a
            # stable form reads its argument (log(sum_j(exp(z_j))) is a logsumexp, log(sum_j(e_j)) is not)
            inner = Poly(tuple(Term(t.coeff, tuple(atom(g) for g in t.factors)) for t in f.arg.terms), f.arg.indices)
            f = Apply(f.func, inner, f.param)
        for name, indices, call in calls:
            found = _same_call(call, indices, f)
            if found is not None:
                used.add(name)
                return Tensor(name, found)
        return f

    terms = [Term(t.coeff, tuple(atom(f) for f in t.factors)) for t in poly.terms]
    return (simplify(terms, poly.indices) if used else poly), used
