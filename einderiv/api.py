"""The Python API: parse, diff, grad, jacobian, hessian, evaluate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .differentiate import differentiate, fresh_indices
from .emit import EinsumTerm
from .errors import DifferentiationError, EinderivError, EvaluationError
from .evaluate import Evaluator, bind_sizes
from .ir import Delta, Indices, Program, Statement, Tensor, walk
from .normal import Poly, to_expr
from .parser import parse
from .semantics import check_statement, tensor_ranks


def _statement(source: str | Program | Statement) -> Statement:
    if isinstance(source, Statement):
        return source
    program = source if isinstance(source, Program) else parse(source)
    if len(program.statements) > 1:
        raise EinderivError("programs of several statements are not supported yet: write one statement")
    return program.output


@dataclass
class Compiled:
    """A statement in normal form, evaluable from named arrays (``f(x=..., A=...)``)."""

    statement: Statement
    poly: Poly
    source_poly: Poly
    ranks: dict[str, int]
    wrt: tuple[Tensor, ...] = ()
    origin: Statement | None = None
    _evaluator: Evaluator | None = field(default=None, repr=False)

    @property
    def indices(self) -> Indices:
        """The result's axes, in order (output indices, then each wrt's indices)."""
        return self.poly.indices

    @property
    def expr(self) -> Poly:
        """The simplified right-hand side in normal form."""
        return self.poly

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(self.ranks))

    @property
    def einsum(self) -> tuple[EinsumTerm, ...]:
        """The einsum terms: ``.coefficient``, ``.subscripts``, ``.operands`` (``delta`` is an identity)."""
        return self.evaluator.terms

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.poly, self.source_poly, self.ranks, self.wrt)
        return self._evaluator

    def __call__(self, **arrays) -> np.ndarray:
        return self.evaluator(arrays)

    def shape_for(self, **shapes: Sequence[int]) -> tuple[int, ...]:
        """The result's shape for inputs of the given shapes (no arrays needed)."""
        clean = {}
        for name, shape in shapes.items():
            if name not in self.ranks:
                raise EvaluationError(f"unknown input {name!r}: the inputs are {', '.join(self.inputs)}")
            clean[name] = tuple(int(n) for n in shape)
            if len(clean[name]) != self.ranks[name]:
                raise EvaluationError(
                    f"shape {clean[name]} of {name!r} has the wrong number of axes ({self.ranks[name]})"
                )
        missing = sorted(set(self.ranks) - set(clean))
        if missing:
            raise EvaluationError(f"missing shape for {missing[0]!r}")
        free, _ = bind_sizes(self.source_poly, clean)
        for ref in self.wrt:
            for axis, index in enumerate(ref.indices):
                free[index] = (clean[ref.name][axis], ref.name)
        for index in self.indices:
            if index not in free:
                raise EvaluationError(f"the size of output index {index!r} cannot be inferred from the inputs")
        return tuple(free[i][0] for i in self.indices)

    def dimension_names(self) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
        """Symbolic sizes: output index -> name, and input -> its shape in those names."""
        return _dimension_names(self.source_poly, self.ranks, self.wrt)

    def shape_text(self) -> str:
        """``K.shape + R.shape = (P, P, M, P) with R: (M, P)``."""
        index_dims, input_dims = self.dimension_names()
        source = self.origin or self.statement
        name = source.target.name if source.target is not None else "f"
        parts = [f"{name}.shape"] + [f"{ref.name}.shape" for ref in self.wrt]
        dims = ", ".join(index_dims.get(i, "?") for i in self.indices)
        dims = f"({dims},)" if len(self.indices) == 1 else f"({dims})"
        shown = [
            n for n in dict.fromkeys(f.name for f in walk(self.statement.rhs) if isinstance(f, Tensor)) if self.ranks[n]
        ]
        where = ", ".join(f"{n}: ({', '.join(input_dims[n])}{',' if len(input_dims[n]) == 1 else ''})" for n in shown)
        return f"{' + '.join(parts)} = {dims}" + (f" with {where}" if where else "")

    def __str__(self) -> str:
        return str(self.statement)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


class Derivative(Compiled):
    """A derivative: prints as ``dK_pq/dR_ij = ...``, evaluates to ``out.shape + wrt.shape``."""

    @property
    def order(self) -> int:
        return len(self.wrt)


def _dimension_names(poly: Poly, ranks: Mapping[str, int], wrt: tuple[Tensor, ...]):
    parent: dict[tuple, tuple] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        parent[find(a)] = find(b)

    free = set(poly.indices)
    first_letter: dict[tuple, str] = {}
    for number, term in enumerate(poly.terms):

        def key(i: str, number: int = number) -> tuple:
            return ("free", i) if i in free else ("dummy", number, i)

        for factor in term.factors:
            if isinstance(factor, Tensor):
                for axis, index in enumerate(factor.indices):
                    first_letter.setdefault(("axis", factor.name, axis), index)
                    union(key(index), ("axis", factor.name, axis))
            elif isinstance(factor, Delta):
                union(key(factor.first), key(factor.second))
    for ref in wrt:
        for axis, index in enumerate(ref.indices):
            union(("free", index), ("axis", ref.name, axis))
    names: dict[tuple, str] = {}
    for axis_key, letter in first_letter.items():
        root = find(axis_key)
        if root not in names:
            base = letter.upper() if len(letter) == 1 else f"n_{letter}"
            name, k = base, 1
            while name in names.values():
                k += 1
                name = f"{base}{k}"
            names[root] = name
    index_dims = {
        i: names[find(("free", i))]
        for i in poly.indices + tuple(i for r in wrt for i in r.indices)
        if find(("free", i)) in names
    }
    input_dims = {n: tuple(names.get(find(("axis", n, a)), "?") for a in range(r)) for n, r in ranks.items()}
    return index_dims, input_dims


def compile(source: str | Program | Statement) -> Compiled:  # noqa: A001 - the natural name
    """Check a statement and prepare it for evaluation."""
    statement = _statement(source)
    poly, raw = check_statement(statement)
    ranks = tensor_ranks(statement.rhs)
    return Compiled(statement, poly, raw, ranks)


def evaluate(source: str | Program | Statement, **arrays) -> np.ndarray:
    """The value of the statement's output for the given arrays."""
    return compile(source)(**arrays)


def _wrt_ref(spec: str | Tensor, ranks: Mapping[str, int], where: str) -> Tensor:
    if isinstance(spec, Tensor):
        ref = spec
    else:
        if not isinstance(spec, str):
            raise DifferentiationError(f"wrt must be a tensor name such as 'R' or 'R_ij', got {spec!r}")
        program = parse(spec)
        node = program.output.rhs
        if len(program.statements) != 1 or program.output.target is not None or not isinstance(node, (Tensor, Delta)):
            raise DifferentiationError(f"wrt must be a tensor name such as 'R' or 'R_ij', got {spec!r}")
        if isinstance(node, Delta):
            raise DifferentiationError("cannot differentiate with respect to delta (a constant)")
        ref = node
    if ref.name not in ranks:
        known = ", ".join(sorted(ranks)) or "no tensors"
        raise DifferentiationError(f"wrt tensor {ref.name!r} does not occur in {where} (its tensors: {known})")
    if "_" not in str(spec) and ref.indices == () and ranks[ref.name] > 0:
        return Tensor(ref.name, ())  # indices chosen fresh by the caller
    if len(ref.indices) != ranks[ref.name]:
        raise DifferentiationError(
            f"wrt {ref} has {len(ref.indices)} indices but {ref.name!r} is used with {ranks[ref.name]}"
        )
    if len(set(ref.indices)) != len(ref.indices):
        raise DifferentiationError(f"wrt {ref} repeats an index: each axis of {ref.name!r} needs its own index")
    return ref


def diff(source: str | Program | Statement, wrt: str | Sequence[str]) -> Derivative:
    """Differentiate the statement's output with respect to ``wrt``.

    ``wrt`` is a tensor name (``"R"``: derivative indices chosen fresh), a name with indices
    (``"R_ij"``), or a list of those for higher derivatives (``["x", "x"]`` is the Hessian).
    The result's axes are the output's indices followed by each wrt's indices.
    """
    statement = _statement(source)
    poly, raw = check_statement(statement)
    ranks = tensor_ranks(statement.rhs)
    specs = [wrt] if isinstance(wrt, (str, Tensor)) else list(wrt)
    if not specs:
        raise DifferentiationError("wrt is empty: name the tensor to differentiate with respect to")
    where = f"'{statement}'" if len(str(statement)) < 80 else "the expression"
    used = {i for node in walk(statement.rhs) if isinstance(node, (Tensor, Delta)) for i in node.indices}
    used |= set(poly.indices)
    refs: list[Tensor] = []
    current = poly
    for spec in specs:
        ref = _wrt_ref(spec, ranks, where)
        if ref.indices == () and ranks[ref.name] > 0:
            ref = Tensor(ref.name, fresh_indices(ranks[ref.name], used | current.all_index_names()))
        clash = [i for i in ref.indices if i in current.indices]
        if clash:
            raise DifferentiationError(
                f"wrt index {clash[0]!r} of {ref} is already an index of the result "
                f"({''.join(current.indices)}): pick other letters, or pass just {ref.name!r}"
            )
        used |= set(ref.indices)
        current = differentiate(current, ref)
        refs.append(ref)
    target_name = statement.target.name if statement.target is not None else ""
    order = len(refs)
    prefix = "d" if order == 1 else f"d{order}"
    target = Tensor(prefix + target_name, poly.indices)
    shown = Statement(target, to_expr(current), tuple(Tensor("d" + r.name, r.indices) for r in refs))
    return Derivative(shown, current, raw, ranks, tuple(refs), statement)


def _require_scalar(statement: Statement, what: str) -> None:
    if statement.target is not None and statement.target.indices:
        raise DifferentiationError(
            f"{what} needs a scalar output, but {statement.target} has indices; use jacobian() for tensors"
        )


def grad(source: str | Program | Statement, wrt: str) -> Derivative:
    """The gradient of a scalar output: an array of the wrt tensor's shape."""
    statement = _statement(source)
    _require_scalar(statement, "grad")
    derivative = diff(statement, wrt)
    if derivative.poly.indices != derivative.wrt[0].indices:
        raise DifferentiationError("grad needs a scalar output; use jacobian() for tensors")
    return derivative


def jacobian(source: str | Program | Statement, wrt: str) -> Derivative:
    """The Jacobian: shape ``out.shape + wrt.shape``."""
    return diff(source, wrt)


def hessian(source: str | Program | Statement, wrt: str) -> Derivative:
    """The Hessian of a scalar output: shape ``wrt.shape + wrt.shape``."""
    statement = _statement(source)
    _require_scalar(statement, "hessian")
    if not isinstance(wrt, str):
        raise DifferentiationError("hessian takes one wrt name; use diff(source, [a, b]) for mixed derivatives")
    base = wrt.split("_", 1)[0]
    return diff(statement, [wrt, base] if "_" in wrt else [wrt, wrt])
