"""``grad``: the gradient with respect to one parameter, or to several from one evaluation, and the
value with them.

``einderiv.grad(source, ["W1", "b1", "W2"])`` is a :class:`Gradients`: a tuple of the gradients
(each a :class:`~einderiv.api.Derivative`, printed, compiled and evaluated like any other), which
called on arrays computes all of them in one straight line: the forward statements, the shared
calls (``tanh(X_nd W1_dk)``) and the adjoints they have in common (``dLdh_nk``) once.
``einderiv.value_and_grad`` adds the output's value, computed in the same line.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .api import (
    PLAN_LATER,
    RESIDUALS_NAMED,
    Compiled,
    Derivative,
    Source,
    backend_for,
    diff,
    evaluates_as,
    gathered_arrays,
    printed_through,
    scalar_program,
    through_named,
)
from .backends import choose_backend, ops_for
from .errors import DifferentiationError, EinderivError, guarded
from .ir import Tensor
from .lower import normalize
from .matrix.reading import accepts_notation
from .normal import Apply, MatrixFn, Poly, Term, equivalent
from .optimiser import StraightLine
from .runtime import run, run_with
from .structured import check_structure


def _renamed_tensors(poly: Poly, mapping: Mapping[str, str]) -> Poly:
    """``poly`` with the arrays it reads renamed (``d1L`` -> ``d1L_2``), call arguments included."""

    def atom(f):
        if isinstance(f, Tensor) and f.name in mapping:
            return Tensor(mapping[f.name], f.indices)
        if isinstance(f, MatrixFn) and f.matrix in mapping:
            return MatrixFn(f.func, mapping[f.matrix], f.indices)
        if isinstance(f, Apply):
            return Apply(f.func, _renamed_tensors(f.arg, mapping), f.param)
        return f

    return Poly(tuple(Term(t.coeff, tuple(atom(f) for f in t.factors)) for t in poly.terms), poly.indices)


def _rename_hints(hints: tuple, mapping: Mapping[str, str]) -> tuple:
    out = []
    for hint in hints:
        if hint[0] == "axis":
            hint = (*hint[:2], mapping.get(hint[2], hint[2]), hint[3])
        elif hint[0] == "names":
            hint = ("names", tuple((i, mapping.get(t, t), a) for i, t, a in hint[1]))
        elif hint[0] == "poly":
            hint = ("poly", _renamed_tensors(hint[1], mapping))
        elif hint[0] == "residuals":
            hint = ("residuals", tuple(_renamed_tensors(r, mapping) for r in hint[1]))
        elif hint[0] == "tied":
            hint = ("tied", tuple(tuple((mapping.get(t, t), a) for t, a in group) for group in hint[1]))
        out.append(hint)
    return tuple(out)


def joint_line(items: Sequence[Compiled]) -> tuple[StraightLine, list[str]]:
    """One straight line computing the outputs of ``items`` (programs over the same inputs),
    and the name each output has in it.  A definition with the same name and the same
    right-hand side in several items (a forward statement, a shared adjoint) is computed once;
    one with a name taken by a different definition is renamed, with its uses."""
    line = StraightLine()
    added: dict[str, tuple] = {}
    outputs = []
    inputs = set().union(*(item.ranks for item in items))
    for item in items:
        mapping: dict[str, str] = {}
        definitions = item.computed_definitions()
        for d in definitions:
            poly = _renamed_tensors(d.poly, mapping) if mapping else d.poly
            hints = _rename_hints(d.hints, mapping) if mapping else d.hints
            name = d.name
            # the same text is not the same array where the sizes differ: df/dz_k = 0 and
            # df/dy_k = 0 have z's and y's shapes
            if name in added and added[name] == (poly, hints):
                continue
            if name in added or name in inputs:
                k = 2
                while f"{name}_{k}" in added or f"{name}_{k}" in inputs:
                    k += 1
                mapping[name] = f"{name}_{k}"
                name = mapping[name]
            added[name] = (poly, hints)
            line.add(name, poly, hints)
        out = item.program.output
        outputs.append(mapping.get(out, out))
    return line, outputs


class Gradients(tuple):
    """The gradients of one scalar output with respect to several parameters, in the order
    given: a tuple of :class:`~einderiv.api.Derivative`; calling it on arrays returns the tuple
    of their values, computed in one straight line (see :func:`joint_line`)."""

    value: Compiled | None = None  # set by value_and_grad: the output itself, computed first
    #: the same gradients of the program with its differences of data named, which a call
    #: evaluates (see :func:`einderiv.api.through_residuals`); None where there are none
    evaluated: Gradients | None = None

    def parts(self) -> list[Compiled]:
        """What one call computes, in order: the value (for :func:`value_and_grad`), then each
        gradient."""
        return [self.value, *self] if self.value is not None else list(self)

    @property
    def line(self) -> StraightLine:
        if getattr(self, "_line", None) is None:
            parts = self.parts()
            if self.evaluated is not None:
                parts = [*parts[: len(parts) - len(self)], *self.evaluated]
            self._line, self._outputs = joint_line(parts)
        return self._line

    @property
    def outputs(self) -> list[str]:
        """The name each of :meth:`parts` has in :attr:`line`."""
        self.line  # noqa: B018 - planned once, with the line
        return self._outputs

    @property
    def ranks(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.parts():
            out.update(item.ranks)
        return out

    def _holder(self) -> Compiled:
        """The input checks of one compiled program, over all the parts' inputs."""
        first = self.parts()[0]
        holder = Compiled.__new__(Compiled)
        holder.program, holder.ranks, holder.reading = first.program, self.ranks, first.reading
        holder.not_analytic = {name: f for item in self for name, f in item.not_analytic.items()}
        return holder

    def _shaped(self, results: tuple):
        if self.value is not None:
            return results[0], (results[1:] if self.several else results[1])
        return results

    @guarded
    def call(self, arrays: Mapping[str, object] | None = None, /, backend: str | None = None, **named):
        """The values as :meth:`~einderiv.api.Compiled.call` computes one: by the library the arrays
        come from (NumPy, torch, jax, cupy or dask), or by ``backend``, to which NumPy arrays and
        Python numbers are converted; the results are that library's arrays."""
        given = gathered_arrays(arrays, named)
        chosen = backend_for(given, backend, [item.structure for item in self.parts()])
        if chosen == "numpy":
            return self._numpy_call(given)
        ops = ops_for(chosen)
        values, dtype, like = self._holder()._backend_arrays(given, ops, self.line)
        for item in self.parts():
            item.check_sizes(values)
        like = ops.astype(ops.convert(0.0, like), dtype)  # a 0-d array: the dtype and device of constants
        inputs = list(values.values())
        computed = run_with(self.line, dict(values), ops, like)
        return self._shaped(tuple(ops.own(computed[name], inputs) for name in self.outputs))

    @guarded
    def __call__(self, arrays: Mapping[str, object] | None = None, /, **named):
        """The gradients' values (a tuple); with the value first for :func:`value_and_grad`.
        Another library's arrays are computed by that library (see :meth:`call`)."""
        given = gathered_arrays(arrays, named)
        if any(type(v) is not np.ndarray for v in given.values()) and choose_backend(given, None) != "numpy":
            return self.call(given)
        return self._numpy_call(given)

    def _numpy_call(self, given: Mapping[str, object]):
        ranks = self.ranks
        values = self._holder().numpy_arrays(given)
        for item in self.parts():
            if item.structure:
                check_structure(item.structure, values)
        for item in self.parts():  # every dimension agrees (once per shapes)
            item.check_sizes(values)
        line = self.line
        signature = tuple((values[n].shape, values[n].dtype) for n in sorted(ranks))
        computed = run(line, dict(values), signature, keep=tuple(self.outputs))
        return self._shaped(tuple(np.array(computed[name]) for name in self.outputs))

    several = True

    def __repr__(self) -> str:
        names = ", ".join(d.wrt[0].name for d in self)
        return f"<Gradients of {self[0].root_name} by {names}>"

    def __str__(self) -> str:
        """Each gradient's statements, a statement two of them print once (``c_n = x_n - y_n``
        of both gradients of ``c_n = x_n - y_n; f = ...``), also where the two sum over other
        letters (an adjoint both share, ``dLdh_nk = (1 - g_no^2) y_no W2_ko`` in one and ``g_nl``
        in the other, was printed twice, and the text defined dLdh twice): the text reads back
        as a program."""
        printed: dict[str, Poly] = {}
        lines: list[str] = []
        for d in self:
            statements = d.displayed().statements
            texts = str(d).splitlines()
            for k, text in enumerate(texts):
                statement = statements[k] if len(statements) == len(texts) else None
                form = _normal_form(statement)
                if text in lines or (
                    form is not None and statement.name in printed and equivalent(form, printed[statement.name])
                ):
                    continue
                if form is not None:
                    printed.setdefault(statement.name, form)
                lines.append(text)
        return "\n".join(lines)


def _normal_form(statement) -> Poly | None:
    """A plain statement's right side as a normal form, or None (a derivative-named statement,
    or one that does not read alone)."""
    if statement is None or statement.target is None or statement.wrt:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return normalize(statement.rhs, statement.target.indices)
    except EinderivError:
        return None


def _wrt_list(wrt) -> list:
    if isinstance(wrt, str):
        return [wrt]
    if isinstance(wrt, (list, tuple)) and wrt and all(isinstance(w, (str, Tensor)) for w in wrt):
        return list(wrt)
    raise DifferentiationError(f"wrt must be a tensor name, or a list of names, got {wrt!r}")


def gradients(
    source: Source, wrt: Sequence[str], of: str | None = None, layout: str = "numerator", **structure
) -> Gradients:
    """The gradient of a scalar output with respect to each of ``wrt`` (a :class:`Gradients`)."""
    structure = {**structure, "layout": layout}
    checked = scalar_program(source, of, "grad")
    names = _wrt_list(wrt)
    if len({str(w).split("_", 1)[0] for w in names}) != len(names):
        raise DifferentiationError(
            f"wrt {names!r} names a tensor twice: for a second derivative use hessian() or diff(source, [x, x])"
        )
    outer = RESIDUALS_NAMED.get()
    # each part evaluates in the joint line, not through a line of its own
    token, later = RESIDUALS_NAMED.set(True), PLAN_LATER.set(True)
    try:
        result = Gradients(diff(checked, w, **structure) for w in names)
        evaluated = (
            None if outer else through_named(checked, lambda p: Gradients(diff(p, w, **structure) for w in names))
        )
        if evaluated is not None and all(evaluates_as(a, b) for a, b in zip(result, evaluated)):
            result.evaluated = evaluated
            for part, named in zip(result, evaluated):  # each evaluates alone as it does in the tuple
                part._line, part.evaluated_program = named.line, named.program
                part.shown = printed_through(part, named, evaluated.residuals)
                part.program_dimensions  # noqa: B018 - sized now, not in a caller's trace (torch.compile)
        else:
            for part in result:
                part.line  # noqa: B018 - planned now, as any compiled program is
    finally:
        RESIDUALS_NAMED.reset(token)
        PLAN_LATER.reset(later)
    return result


@accepts_notation
@guarded
def grad(
    source: Source, wrt: str | Sequence[str], of: str | None = None, layout: str = "numerator", **structure
) -> Derivative | Gradients:
    """The gradient of a scalar output: an array of the wrt tensor's shape (in either layout:
    ``layout=`` is taken, as :func:`einderiv.api.diff` takes it, and changes nothing for a scalar);
    ``symmetric=``, ``diagonal=`` and ``symmetric_convention=`` as for :func:`einderiv.api.diff`.
    With a list of names, the gradient with respect to each (:class:`Gradients`:
    a tuple of derivatives, evaluated together in one straight line)."""
    if isinstance(wrt, (list, tuple)):
        return gradients(scalar_program(source, of, "grad"), wrt, layout=layout, **structure)
    return diff(scalar_program(source, of, "grad"), wrt, layout=layout, **structure)


@accepts_notation
@guarded
def value_and_grad(
    source: Source, wrt: str | Sequence[str], of: str | None = None, layout: str = "numerator", **structure
) -> Gradients:
    """The output's value with its gradient (``wrt`` a name) or gradients (a list of names),
    computed in one straight line: called on arrays it returns ``(value, gradient)`` or
    ``(value, (gradient, ...))``."""
    checked = scalar_program(source, of, "value_and_grad")
    result = gradients(checked, _wrt_list(wrt), of, layout, **structure)
    result.value = Compiled(checked)
    result.several = not isinstance(wrt, str)
    return result


__all__ = ["Gradients", "grad", "gradients", "joint_line", "value_and_grad"]
