"""Derivative products that never form the whole derivative: Hessian-vector products, JVPs,
VJPs and Hessian diagonals, each derived symbolically and simplified.

- ``hvp``: H v = d(∇f · v)/dx, the derivative of the scalar ∇f · v, so the logistic loss gives
  ``X_ni s_n (1 - s_n) X_nj v_j``: matrix-vector products, no D x D array.
- ``jvp``: J v, the Jacobian contracted with a tangent v over the wrt's indices (output's shape).
- ``vjp``: uᵀ J = ∇(u · out), the gradient of the output contracted with a cotangent u: one
  reverse sweep with a scalar output (wrt's shape).
- ``hessian_diag``: H_ii, the Hessian with its two wrt index groups set equal symbolically
  (``sum_n(X_ni s_n (1 - s_n) X_ni)``: O(N D) work, not O(N D^2)).
"""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction

from .api import (
    ADJOINT_STEM,
    Derivative,
    Source,
    adjoint_counts,
    checked_program,
    counts_read_back,
    diff,
    hessian,
    scalar_program,
    sized_only_by_deltas,
    through_residuals,
    uses,
    with_forward,
    with_root,
    wrt_tensor,
)
from .elementwise import FUNCTIONS, MATRIX_FUNCTIONS, REDUCTIONS
from .errors import DifferentiationError, guarded
from .factor import factored
from .gradients import grad
from .ir import Add, Delta, Indices, MatrixCall, Mul, Number, Statement, Tensor, walk
from .matrix.reading import accepts_notation
from .normal import Apply, MatrixFn, Poly, Term, is_reciprocal, rename_apart, simplify
from .parser import DELTA_NAME, ascii_name
from .printing import count_axes_of
from .program import CheckedProgram, Definition, prune, substitute_tensor, unique_name
from .structured import TangentKind


def _name_free(name: object, programs: tuple[CheckedProgram, ...], role: str, keyword: str) -> str:
    """``name`` for a new input, checked against every name of ``programs`` (the source's, and
    the derivative's adjoints: a tangent named ``dLdh`` would be read as that adjoint)."""
    if not isinstance(name, str) or not name.isidentifier() or "_" in name:
        raise DifferentiationError(f"the {role} must be named by letters and digits, such as 'v', got {name!r}")
    # as the printed text reads it back: v="θ" printed θ_k, read back as theta, the wrt itself
    written, name = name, ascii_name(name)
    said = repr(name) if written == name else f"{written!r} (read as {name})"
    if name == DELTA_NAME or name in REDUCTIONS or name in MATRIX_FUNCTIONS or name in FUNCTIONS:
        # hvp(..., v="delta") failed with an IndexError when evaluated; v="sum" printed text that
        # does not parse: these names are the language's own
        raise DifferentiationError(
            f"the {role} cannot be named {said}: that is a name of the language; pass another, e.g. "
            f"{keyword}={name[0] + '2'!r}"
        )
    for program in programs:
        taken = {*program.ranks, *program.all_inputs, *(d.name for d in program.definitions)}
        if name in taken:
            raise DifferentiationError(
                f"the {role} {said} is already a name in the expression or its derivative: "
                f"pass another, e.g. {keyword}={name + '2'!r}"
            )
    return name


def _one_wrt(wrt: object, what: str) -> None:
    if not isinstance(wrt, (str, Tensor)):
        raise DifferentiationError(f"{what} takes one wrt name such as 'w', got {wrt!r}")


def _no_cookbook(structure: dict, what: str, derivative: Derivative) -> None:
    """A product with a direction contracts the projected derivative with it: under the cookbook
    convention (G + Gᵀ − G∘I) that doubles the direction's off-diagonal entries, so it is not the
    derivative along the direction; refused rather than silently different.  Only where the
    direction is a symmetric matrix's (``derivative``'s wrt, as its checked structure says): an
    HVP by a plain vector beside a declared S is one."""
    (ref,) = derivative.wrt
    if (
        structure.get("symmetric_convention", "frobenius") == "cookbook"
        and derivative.structure.get(ref.name) == "symmetric"
    ):
        raise DifferentiationError(
            f"{what} contracts the derivative with a direction: use the default symmetric convention "
            "(frobenius), under which that is the derivative along the direction; the cookbook's "
            "G + G^T - G o I would double the direction's off-diagonal entries"
        )


def _contracted(program: CheckedProgram, tensor: Tensor, over: Indices) -> CheckedProgram:
    """``program`` with its output multiplied by ``tensor`` (a new input) and summed over
    ``over``: out_P -> out_P t_P (u · out), or J_PW -> J_PW v_W (J v)."""
    out = program.out
    keep = tuple(i for i in out.indices if i not in over)
    terms = [Term(t.coeff, (*t.factors, tensor)) for t in out.poly.terms]
    written = ("names", tuple((i, tensor.name, k) for k, i in enumerate(tensor.indices)))
    hints = tuple(h for h in out.hints if h[0] != "axis" or h[1] in keep) + (written,)
    # the new input has the axes of what it is contracted with: one dimension each
    ties = tuple(
        ((tensor.name, k), (h[2], h[3]))
        for h in out.hints
        if h[0] == "axis" and h[1] in over
        for k, i in enumerate(tensor.indices)
        if i == h[1]
    )
    if ties:
        hints += (("tied", ties),)
    contracted = Definition(out.name, keep, simplify(terms, keep), hints)
    definitions = [contracted if d is out else d for d in program.definitions]
    rank = {tensor.name: len(tensor.indices)}
    return CheckedProgram(
        definitions,
        {**program.inputs, **rank},
        program.output,
        None,
        {**program.ranks, **rank, out.name: len(keep)},
        {**(program.all_inputs or program.inputs), **rank},
    )


def _renamed(
    derivative: Derivative, name: str, shape: tuple[str, ...], user: CheckedProgram, wrt=None, kind: str = ""
) -> Derivative:
    """``derivative`` with its result printed as ``name_indices = ...`` and its shape line
    naming ``shape`` (``L.shape + w.shape``); generated code names its function ``kind_L_w``.
    Where the result counts a dimension only deltas carry (``2 delta_ii v``, the HVP of
    ``sum_i((x_i + lam)^2)`` by lam), the ``user``'s output statement is printed before it, as
    for a Hessian, so that its text reads back."""
    final = derivative.program.out
    rhs = final.statement.rhs if final.statement is not None else final.display().rhs
    wrt = derivative.wrt if wrt is None else wrt
    program = derivative.program
    root = user.out
    if sized_only_by_deltas(final.poly, wrt) and root.statement is not None and root.name != "_":
        defined = {d.name for d in user.definitions}
        program = with_root(with_forward(program, user, uses(root) & defined), root)
        program = adjoint_counts(program, user.definitions)  # again, with the statements put before them
        axes = count_axes_of(final.hints)
        # the derivative's own text gave its counts letters with only the statements before it
        # (i9 where none wrote the letter); with the output's statement printed too, they may
        # read back by their own letters: the result printed again
        rhs = counts_read_back(program, user.definitions, final.poly, axes) or factored(final.poly, axes)[0]
    # a zero of the shape of wrt (or of the output, for a JVP) prints as 0 w_I, which sizes its
    # indices when read back; one constant along an axis (udfdz_i = c lam u) gets + 0 z_i
    sized_by = None
    if final.indices and shape == (f"{wrt[0].name}.shape",):
        sized_by = wrt[0].name
    elif final.indices and shape == (f"{root.name}.shape",) and root.statement is not None and root.name != "_":
        sized_by = root.name
    sized = _sized_axes(program)
    written = {
        i
        for node in walk(rhs)
        if isinstance(node, (Tensor, MatrixCall))
        for k, i in enumerate(node.indices)
        if not isinstance(node, Tensor) or node.name not in sized or k in sized[node.name]
    }
    if sized_by is not None and (not final.poly.terms or set(final.indices) - written):
        if sized_by == root.name:  # the output's statement, printed first, sizes it (it is not computed)
            defined = {d.name for d in user.definitions}
            program = with_root(with_forward(program, user, uses(root) & defined), root)
        sizing = Mul((Number(Fraction(0)), Tensor(sized_by, final.indices)))
        rhs = sizing if not final.poly.terms else Add((rhs, sizing))
    # a name of its own: an input or statement named d2fdx2v was printed on the product's own
    # right-hand side, and the text did not read back
    taken = {*user.ranks, *user.all_inputs, *derivative.ranks, *(d.name for d in program.definitions[:-1])}
    taken |= {d.name for d in user.definitions}
    name = unique_name(name, taken)
    statement = Statement(Tensor(name, final.indices), rhs)
    definitions = [*program.definitions[:-1], replace(final, statement=statement)]
    program = replace(program, definitions=definitions)
    # every input of what it differentiates, as a gradient's (the HVP of x_i x_i x_j x_j + c
    # took x and v only, so its generated function refused the keywords the gradient's takes)
    ranks = {**user.inputs, **derivative.ranks}
    # sized by the user's statements too: ``t_i = delta_ii; f = exp(sum_k(t_k + b_k))`` ties t's
    # length to b's only in f, which the HVP (a derivative of the gradient) does not differentiate
    sources = (*derivative.sources, *(d for d in user.definitions if d not in derivative.sources))
    product = Product(program, ranks, wrt, derivative.root, sources)
    product.shape_names = shape
    output = "_" + re.sub(r"\W+", "_", user.out.name) if user.out.name != "_" else ""  # df/dx: _df_dx
    product.function_name = f"{kind}{output}_{wrt[0].name}" if kind else ""
    product.structure = derivative.structure
    product.reading = derivative.reading
    return product


def _sized_axes(program: CheckedProgram) -> dict[str, set[int]]:
    """Statement -> the axes its own text sizes: an index written there at an input's axis or at
    a sized axis of an earlier statement, or joined to one by a delta.  An adjoint constant along
    an axis (``dhdt1_ijl = -delta_jl t1_j delta_ii ...``: i is y's, which it does not hold) sizes
    nothing there, so a product that writes i only on it needs ``+ 0 h_ij`` to read back."""
    sized: dict[str, set[int]] = {}
    for d in program.definitions[:-1]:
        found = _sized_indices(d.poly, sized)
        sized[d.name] = {k for k, i in enumerate(d.indices) if i in found}
    return sized


def _sized_indices(poly, sized: dict[str, set[int]]) -> set[str]:
    """The indices of ``poly`` that its tensors size (see :func:`_sized_axes`)."""
    out: set[str] = set()
    for term in poly.terms:
        found: set[str] = set()
        joins = []
        for f in term.factors:
            if isinstance(f, Tensor) and not is_reciprocal(f):
                found |= {i for k, i in enumerate(f.indices) if f.name not in sized or k in sized[f.name]}
            elif isinstance(f, MatrixFn):
                found |= set(f.indices)
            elif isinstance(f, Apply):
                found |= _sized_indices(f.arg, sized) & set(f.arg.indices)
            elif isinstance(f, Delta):
                joins.append(f.indices)
        for _ in joins:
            for a, b in joins:
                if a in found or b in found:
                    found |= {a, b}
        out |= found
    return out


class Product(Derivative):
    """A derivative product (``hvp``, ``jvp``, ``vjp``, ``hessian_diag``): a derivative whose
    shape line names its own parts."""

    shape_names: tuple[str, ...] = ()
    #: the name generated code gives its function (``hvp_L_w``; ``hvp`` for a bare expression)
    function_name: str = ""

    def __init__(self, program: CheckedProgram, inputs, wrt, root, sources=()):
        super().__init__(program, inputs, wrt, root, sources or (root,))

    def shape_parts(self) -> list[str]:
        return list(self.shape_names)


def _tangent_structured(product: Derivative, wrt: str, tangent: str) -> Derivative:
    """``product`` with its tangent declared as its wrt is: the derivative along a direction
    that leaves the symmetric (or diagonal) matrices means nothing there, and contracted with
    sym(G) a non-symmetric v silently gave the derivative along sym(v) (along diag(v) for a
    diagonal D); evaluation now stops with a clear error instead."""
    kind = product.structure.get(wrt) if product.structure else None
    if kind is not None:
        product.structure = {**product.structure, tangent: TangentKind(kind, wrt)}
    return product


@accepts_notation
@guarded
@through_residuals
def hvp(source: Source, wrt: str, v: str = "v", of: str | None = None, **structure) -> Derivative:
    """The Hessian of a scalar output times a tangent ``v`` (a new input with wrt's shape): the
    derivative of (gradient · v), simplified; the Hessian is never formed.  Result: wrt's shape.

    >>> print(hvp("L = sum_n(softplus(X_nd w_d) - y_n X_nd w_d)", "w"))  # doctest: +SKIP
    d2Ldw2v_j = X_nj X_ni v_i (sigmoid(X_nd w_d) - sigmoid(X_nd w_d)^2)
    """
    _one_wrt(wrt, "hvp")
    checked = scalar_program(source, of, "hvp", "use jvp() for the Jacobian times a vector")
    gradient = grad(checked, wrt, **structure)
    _no_cookbook(structure, "hvp", gradient)
    (ref,) = gradient.wrt
    tangent = Tensor(_name_free(v, (checked, gradient.program), "tangent", "v"), ref.indices)
    along = _contracted(gradient.program, tangent, ref.indices)
    root = gradient.root_name
    token = ADJOINT_STEM.set(f"2{root}d{ref.name}{tangent.name}")  # d2fdxvdt1: d(df/dx_i v_i)/dt1
    try:
        product = diff(along, ref.name, **structure)
    finally:
        ADJOINT_STEM.reset(token)
    product = _renamed(product, f"d2{root}d{ref.name}2{tangent.name}", (f"{ref.name}.shape",), checked, kind="hvp")
    return _tangent_structured(product, ref.name, tangent.name)


@accepts_notation
@guarded
@through_residuals
def jvp(source: Source, wrt: str, v: str = "v", of: str | None = None, **structure) -> Derivative:
    """The Jacobian times a tangent ``v`` (a new input with wrt's shape), summed over wrt's
    indices: the directional derivative of the output along v.  Result: the output's shape."""
    _one_wrt(wrt, "jvp")
    checked = checked_program(source, of)
    jacobian = diff(checked, wrt, **structure)
    _no_cookbook(structure, "jvp", jacobian)
    (ref,) = jacobian.wrt
    tangent = Tensor(_name_free(v, (jacobian.program,), "tangent", "v"), ref.indices)
    along = _contracted(jacobian.program, tangent, ref.indices)
    product = Derivative(
        along, {**jacobian.ranks, tangent.name: len(ref.indices)}, (ref,), jacobian.root, jacobian.sources
    )
    product.reading = jacobian.reading
    product.structure = jacobian.structure
    root = jacobian.root_name
    product = _renamed(product, f"d{root}d{ref.name}{tangent.name}", (f"{root}.shape",), checked, (ref,), kind="jvp")
    return _tangent_structured(product, ref.name, tangent.name)


@accepts_notation
@guarded
@through_residuals
def vjp(source: Source, wrt: str, u: str = "u", of: str | None = None, **structure) -> Derivative:
    """A cotangent ``u`` (a new input with the output's shape) times the Jacobian: the gradient
    of u · out, by one reverse sweep.  Result: wrt's shape."""
    _one_wrt(wrt, "vjp")
    checked = checked_program(source, of)
    out = checked.out
    wrt_tensor(wrt, checked, "the program")  # a clear error for a wrt the program does not read
    cotangent = Tensor(_name_free(u, (checked,), "cotangent", "u"), out.indices)
    along = _contracted(checked, cotangent, out.indices)
    gradient = diff(along, wrt, **structure)
    (ref,) = gradient.wrt
    name = f"{cotangent.name}d{gradient.root_name}d{ref.name}"
    return _renamed(gradient, name, (f"{ref.name}.shape",), checked, kind="vjp")


#: the most terms a Hessian's diagonal may grow to with its Jacobian adjoints written in
MAX_INLINED_TERMS = 200


def _jacobians_inlined(poly: Poly, definitions: list, forward: set[str], wrt_letters: set[str]) -> Poly:
    """The Hessian's last statement with each adjoint it reads along a wrt letter written in
    (``d2LdwddLdp_in = p_n X_ni - p_n^2 X_ni``, the Jacobian of dL/dp by w): with the two letters
    then set equal, the diagonal is one weighted sum ``'n,ni,ni->i'``, where the adjoints kept as
    arrays were D x N arrays each (the focal loss's diagonal in program form took 8x its
    one-statement form at 20000 x 200, 17x at 5000 x 1000).  Left as it is where a substitution
    leaves a count or the terms would pass :data:`MAX_INLINED_TERMS`.  Ends: each adjoint is
    defined before its readers, so substitution reaches the forward statements."""
    by_name = {d.name: d for d in definitions if d.name not in forward}
    out = poly
    for _ in range(len(by_name) + 1):
        uses = {
            f.name
            for t in out.terms
            for f in t.factors
            if isinstance(f, Tensor) and f.name in by_name and set(f.indices) & wrt_letters
        }
        if not uses:
            return out
        for name in sorted(uses):
            out, counts = substitute_tensor(out, name, by_name[name])
            if counts or len(out.terms) > MAX_INLINED_TERMS:
                return poly
    return poly


@accepts_notation
@guarded
@through_residuals
def hessian_diag(source: Source, wrt: str, of: str | None = None, **structure) -> Derivative:
    """The diagonal of the Hessian of a scalar output, H_ii (for a matrix wrt, H_ijij): the
    Hessian's two wrt index groups set equal symbolically, so it costs what its structure
    costs.  Result: wrt's shape."""
    _one_wrt(wrt, "hessian_diag")
    checked = scalar_program(source, of, "hessian_diag")
    full = hessian(checked, wrt, **structure)
    first, second = full.wrt
    final = full.program.out
    forward = {d.name for d in checked.definitions}
    poly = _jacobians_inlined(final.poly, full.program.definitions[:-1], forward, set(final.indices))
    mapping = dict(zip(second.indices, first.indices))
    poly = rename_apart(poly, set(first.indices) | set(second.indices))
    diagonal = simplify([t.rename(mapping) for t in poly.terms], first.indices, rename_summed=False)
    hints = tuple(h for h in final.hints if h[0] != "axis" or h[1] in first.indices)
    definitions = [*full.program.definitions[:-1], Definition(final.name, first.indices, diagonal, hints)]
    program = prune(replace(full.program, definitions=definitions))
    product = Derivative(program, full.ranks, (first,), full.root, full.sources)
    product.reading = full.reading
    product.structure = full.structure
    root = full.root_name
    return _renamed(
        product, f"d2{root}d{first.name}2diag", (f"{first.name}.shape",), checked, (first,), kind="hessian_diag"
    )


__all__ = ["Product", "hessian_diag", "hvp", "jvp", "vjp"]
