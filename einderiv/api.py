"""The Python API: parse, compile, diff, grad, jacobian, hessian, evaluate."""

from __future__ import annotations

import functools
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from fractions import Fraction

import numpy as np

from . import render
from .backends import array_library, choose_backend, host_values, is_complex, ops_for
from .dimensions import Dimensions, dimension_names, dimension_sizes, dimensions, shape_of, sized_definitions
from .emit import EinsumTerm, emit
from .errors import DifferentiationError, EinderivError, EvaluationError, guarded
from .factor import factored
from .index_names import fresh_indices, is_count, reserved_letters
from .ir import (
    Add,
    Call,
    Delta,
    Expr,
    Indices,
    MatrixCall,
    Mul,
    Number,
    Program,
    Statement,
    Tensor,
    children,
    derivative_name,
    walk,
)
from .lower import crowded_letters, standing_terms, term_letters
from .matrix.form import NoMatrixForm, matrix_text, matrix_text_with
from .matrix.reading import Reading, accepts_notation, read, scalar_use_hint
from .normal import Apply, Poly, call_arguments, is_reciprocal, uncarried_letters
from .optimiser import StraightLine, inline_broadcast_products
from .parser import ascii_name, parse
from .printing import count_axes_of, count_letters, count_powers, moved_letters
from .program import (
    CheckedProgram,
    Definition,
    check_program,
    derive,
    hinted_letters,
    name_calls,
    named_axes,
    references,
    unique_name,
    with_moved_letters,
)
from .residuals import (
    NAME_SOFTMAX_FACTORS,
    RESIDUAL_NAME,
    named_readably,
    residuals_named,
    with_output_letters,
    written_in_place,
)
from .runtime import as_array, run, run_with
from .semantics import output_indices
from .steps import values_read
from .structured import CONVENTIONS, check_square, check_structure, projected, structure_of, written_symmetric

Source = str | Program | Statement


PARAMETERS = ("source", "arrays", "of", "backend", "layout", "self")

#: The functions with no complex derivative, and how an error names them.  (logdet of a complex
#: matrix is the principal log(det), whose derivative inv(M)^T is the complex one; log|det| is real.)
#: Derivatives are real-variable derivatives, which at complex inputs are the complex derivative
#: f'(z) where one exists; for these there is none, so complex inputs that reach one are an
#: error rather than one of several conventions chosen silently.  They are found in the
#: statements differentiated, not in the derivative: sign and step differentiate to 0, which
#: leaves nothing there to find (``sign(x_i) y_i`` by x was 0 at a complex x, no error).
NOT_ANALYTIC = {
    "sign": "abs or sign",
    "step": "relu or step",
    "abs": "abs or sign",
    "relu": "relu or step",
    "logabsdet": "log|det| (logabsdet)",
}


def not_analytic(sources, definitions, wrt: Sequence[str] = ()) -> dict[str, str]:
    """Input -> the function with no complex derivative that a derivative's ``definitions``
    differentiate at it: an input named (through the statements it uses) in the argument of
    ``abs``, ``relu``, ``sign`` or ``step`` in ``sources`` (the statements differentiated, a
    gradient's where it is differentiated again) where that argument depends on a name of
    ``wrt``.  A sign that is only used (``sign(x_i) y_i`` by y, or ``abs(y_j)`` by x) is NumPy's
    value at a complex input, no derivative of it."""
    everything = [*sources, *definitions]
    values = {d.name: d.poly.tensor_names() for d in everything}
    reached: dict[str, str] = {}
    for d in sources:
        for func, names in call_arguments(d.poly, NOT_ANALYTIC):
            if _depends_on(names, set(wrt), values):
                reached.update({n: NOT_ANALYTIC[func] for n in names})
    pending = list(reached)
    while pending:  # through the statements: an input an intermediate is computed from
        name = pending.pop()
        for inner in values.get(name, ()):
            if inner not in reached:
                reached[inner] = reached[name]
                pending.append(inner)
    return reached


def _depends_on(names: set[str], wrt: set[str], values: Mapping[str, set[str]]) -> bool:
    """Whether one of ``names``, or a statement they are computed from, is in ``wrt``."""
    seen, pending = set(), list(names)
    while pending:
        name = pending.pop()
        if name in wrt:
            return True
        if name not in seen:
            seen.add(name)
            pending.extend(values.get(name, ()))
    return False


def reject_complex(reached: Mapping[str, str], values: Mapping[str, object]) -> None:
    """A complex input that a derivative differentiates a function with no complex derivative
    at (:func:`not_analytic`) is an error."""
    if not reached:
        return
    for name, value in values.items():
        if name in reached and is_complex(value):
            raise EvaluationError(
                f"input {name!r} is complex ({value.dtype}), but this derivative differentiates {reached[name]} "
                "through it, which has no complex derivative; evaluate it at real arrays (the real and "
                "imaginary parts as separate inputs, for example)"
            )


def gathered_arrays(arrays: Mapping[str, object] | None, named: dict[str, object]) -> dict[str, object]:
    """The arrays of a call, given as one mapping (any names: ``{"of": x}``), as keywords, or both."""
    if arrays is None:
        return named
    if not isinstance(arrays, Mapping):
        raise EvaluationError(
            f"arrays are passed by name, as keywords (x=...) or as one mapping ({{'x': ...}}), not as a "
            f"positional {type(arrays).__name__}"
        )
    bad = [k for k in arrays if not isinstance(k, str)]
    if bad:
        raise EvaluationError(f"array names must be strings, got {bad[0]!r}")
    twice = sorted(set(arrays) & set(named))
    if twice:
        raise EvaluationError(f"array {twice[0]!r} is given twice, in the mapping and as a keyword")
    return {**arrays, **named}


def _output_name(of: object) -> str | None:
    if of is not None and not isinstance(of, str):
        raise EinderivError(
            f"of= names the output statement (a string), got {type(of).__name__}: to pass an input named "
            "'of', give the arrays as a mapping, evaluate(source, {'of': ...})"
        )
    return of if of is None else ascii_name(of)  # as the text is read: of="θ" is theta


def _program(source: Source) -> Program:
    if isinstance(source, Statement):
        return Program((source,))
    if isinstance(source, Program):
        return source
    if isinstance(source, Reading):  # text read by accepts_notation (matrix notation translated)
        return source.program
    return parse(source)


def backend_for(arrays: Mapping[str, object], backend: str | None, structures) -> str:
    """The library that computes a call on ``arrays`` (:func:`choose_backend`), after the checks
    every call makes: what ``structures`` declare symmetric or diagonal, on every array whose
    numbers are at hand (:func:`~einderiv.backends.host_values`: not a JAX tracer or a dask
    array); and for NumPy, that no array is another library's."""
    chosen = choose_backend(arrays, backend)
    if any(structures):  # torch, JAX and CuPy arrays too: a derivative by S means nothing where S is not
        held = {k: host_values(v) for k, v in arrays.items() if array_library(v) is not None}
        for structure in structures:
            if structure:
                check_structure(structure, {k: v for k, v in held.items() if isinstance(v, np.ndarray)})
    if chosen == "numpy":
        for name, value in arrays.items():
            if array_library(value) not in (None, "numpy"):
                raise _not_convertible(name, array_library(value), "numpy")
    return chosen


def _not_convertible(name: str, library: str, backend: str) -> EvaluationError:
    return EvaluationError(
        f"input {name!r} is a {library} array; backend={backend!r} converts NumPy arrays and Python numbers only"
    )


def reader_names_explained(method):
    """A method whose EvaluationError names a statement that the matrix-notation reader made
    (``logdet(M1): the determinant of 'M1' is negative`` for ``logdet(X^T X - 2 I)``, a name
    the user never wrote) says what that name is: ``(einderiv named a part of the expression
    M1: M1_ij = X_ki X_kj - 2 delta_ij; f = logdet(M1))``."""

    @functools.wraps(method)
    def call(*args, **kwargs):  # (no named self: an input may be called self)
        try:
            return method(*args, **kwargs)
        except EvaluationError as err:
            reading = args[0].reading
            if reading is None or reading.notation != "matrix" or "einderiv named" in str(err):
                raise
            written = set(re.findall(r"[A-Za-z][A-Za-z0-9]*", reading.source))
            made = [s.target.name for s in reading.program.statements[:-1] if s.target.name not in written]
            named = [name for name in made if re.search(rf"\b{re.escape(name)}\b", str(err))]
            if not named:
                raise
            parts = "a part of the expression" if len(named) == 1 else "parts of the expression"
            raise EvaluationError(f"{err} (einderiv named {parts} {', '.join(named)}: {reading.text})") from None

    return call


class Compiled:
    """A checked program, evaluable from named arrays: ``f(x=..., A=...)`` gives its output."""

    def __init__(self, program: CheckedProgram, inputs: Mapping[str, int] | None = None):
        self.program = program
        self.ranks: dict[str, int] = dict(inputs if inputs is not None else program.inputs)
        self._line: StraightLine | None = None
        self._sized: set[tuple] = set()  # the input shapes whose sizes were checked
        if not PLAN_LATER.get():
            self.line  # noqa: B018 - built now, so tracers (torch.compile) see only the array work

    # -- what it is -------------------------------------------------------------------------
    reading: Reading | None = None  # how the source text was read (set by the API functions)
    #: inputs declared symmetric or diagonal (name -> kind), checked when NumPy arrays are given
    structure: Mapping[str, str] = {}
    #: input -> a function with no complex derivative that a derivative differentiates at it
    not_analytic: Mapping[str, str] = {}
    #: the program whose line evaluates this one, where it is not this (a derivative taken
    #: through its residuals: see :func:`through_residuals`)
    evaluated_program: CheckedProgram | None = None
    #: the statements as printed, where they are not the program's own: a derivative taken
    #: through its residuals prints with each difference the user wrote kept whole
    shown: Program | None = None
    #: the program with its residuals named that this was derived from (:func:`through_named`)
    residuals: Program | None = None

    @property
    def read_as(self) -> str:
        """The source as read, in index notation: ``f = x_i A_ij x_j`` for ``f = x^T A x`` (for a
        derivative, the expression differentiated)."""
        return self.reading.text if self.reading is not None else str(self.program)

    @property
    def output(self) -> Definition:
        return self.program.out

    @property
    def statement(self) -> Statement:
        """The output statement as text-ready IR."""
        return self.shown.output if self.shown is not None else self.output.display()

    @property
    def expr(self) -> Poly:
        """The output's simplified right-hand side, in normal form."""
        return self.output.poly

    @property
    def indices(self) -> Indices:
        """The result's axes, in order (output indices, then each wrt's indices)."""
        return self.output.indices

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(self.ranks))

    @property
    def einsum(self) -> tuple[EinsumTerm, ...]:
        """The output's einsum terms: ``.coefficient``, ``.subscripts``, ``.operands``.

        ``delta`` is an identity matrix; a call such as ``sigmoid(z_n)`` is computed by an
        elementwise step first; other names are inputs or earlier statements."""
        return emit(self.expr)

    @property
    def definitions(self) -> list[Definition]:
        """Every statement the output needs, in order (intermediates, adjoints, the output)."""
        return list(self.program.definitions)

    def __str__(self) -> str:
        return str(self.displayed())

    def displayed(self) -> Program:
        """The statements as IR, as ``str()`` prints them (intermediates, adjoints, the output)."""
        if self.shown is not None:
            return self.shown
        return Program(tuple(d.display() for d in self.program.definitions))

    def latex(self) -> str:
        """LaTeX: ``\\frac{\\partial K_{pq}}{\\partial R_{ij}} = \\delta_{jp} R_{iq} + ...``."""
        return render.latex(
            self.displayed(), render.Scoping(standing_terms, term_letters, output_indices, crowded_letters)
        )

    def pretty(self) -> str:
        """Unicode for the terminal: ``∂K_pq/∂R_ij = δ_jp R_iq + R_ip δ_jq``."""
        return render.pretty(self.displayed())

    @guarded
    def matrix_lines(self) -> list[tuple[str, str, str]]:
        """``(definition name, left side, matrix form)`` per statement: ``("d1f", "df/dx", "A x + A^T x")``.

        Raises ``NoMatrixForm`` (an ``EinderivError``) naming the statement and the reason."""
        names = set(self.ranks) | {d.name for d in self.program.definitions}
        lines = []
        for definition in self.program.evaluated():
            statement = definition.display()
            target = statement.target
            if target is None:
                lhs = "f"
            elif statement.wrt:  # df/dx, d2f/dw dw
                lhs = target.name + "/" + " ".join(w.name for w in statement.wrt)
            else:
                lhs = target.name
            try:
                text = self._matrix_through_residuals(definition.name, names) or matrix_text(definition.poly, names)
                lines.append((definition.name, lhs, _symmetric_text(text, self.structure)))
            except NoMatrixForm as err:
                where = str(statement).split(" = ", 1)[0]
                raise NoMatrixForm(f"no matrix form for {where}: {err}", reason=f"{where}: {err}") from None
        return lines

    def _matrix_through_residuals(self, name: str, names: set[str]) -> str | None:
        """The matrix form of statement ``name`` as it evaluates, through the program with each
        difference of data named (:func:`through_residuals`), each difference written in brackets:
        ``df/dx = A^T (A x - b) / sqrt((A x - b)^T (A x - b))`` for the gradient of ``norm2(A x - b)``,
        whose normal form printed ``x^T A^T A x - 2 (b^T A x) + b^T b`` under the root, 40% off near a
        fit at |x| ~ 1e3 when evaluated as printed.  None where there is no such program or form."""
        evaluated = self.evaluated_program
        if evaluated is None:
            return None
        written = {d.name: d.poly for d in evaluated.definitions if RESIDUAL_NAME.fullmatch(d.name)}
        mine = next((d for d in evaluated.definitions if d.name == name), None)
        if not written or mine is None or not written.keys() & mine.poly.tensor_names():
            return None
        if mine.poly.tensor_names() - names - written.keys():
            return None  # it reads an adjoint the printed program does not define
        try:
            return matrix_text_with(mine.poly, written, names)
        except NoMatrixForm:
            return None

    def matrix(self) -> str:
        """Matrix notation, one ``name = form`` line per statement: ``df/dx = A x + A^T x``
        (a program: its intermediates first).  Rows are the first index of the result, columns
        the second.  Raises ``NoMatrixForm`` (an ``EinderivError``) with the reason when there is
        none (more than two indices, a factor with three, ...)."""
        return "\n".join(f"{lhs} = {form}" for _, lhs, form in self.matrix_lines())

    def _repr_latex_(self) -> str:  # Jupyter shows rendered math
        return "$" + self.latex() + "$"

    def __repr__(self) -> str:
        kinds = Counter(step.kind for step in self.line.steps)
        steps = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        count = len(self.line.steps)
        return f"<{type(self).__name__} {self.statement}: {count} step{'s' * (count != 1)} ({steps or 'none'})>"

    # -- evaluation -------------------------------------------------------------------------
    @property
    def line(self) -> StraightLine:
        if self._line is None:
            line = StraightLine()
            for d in self.computed_definitions():
                line.add(d.name, d.poly, d.hints)
            self._line = line
        return self._line

    def computed_definitions(self) -> list[Definition]:
        """The definitions evaluation computes, with the size hints the program's dimensions give
        (a product of smaller arrays substituted where it is read: :func:`inline_broadcast_products`)."""
        return list(self._computed_definitions)

    @functools.cached_property
    def _computed_definitions(self) -> tuple[Definition, ...]:
        """Made once (the line, ``shape_for`` and a joint line of several gradients read them)."""
        sized = sized_definitions(self.program.computed(), self.ranks, self.program_dimensions)
        return tuple(inline_broadcast_products(sized, {self.program.output}))

    def check_sizes(self, values: Mapping[str, object]) -> None:
        """Every dimension's input axes agree (``mean_k(W_dk + b_k)``), checked once per shapes."""
        shapes = tuple(tuple(values[n].shape) for n in self.ranks)
        if shapes not in self._sized:
            dimension_sizes(self.program_dimensions, dict(zip(self.ranks, shapes)))
            self._sized.add(shapes)

    def numpy_arrays(self, given: Mapping[str, object]) -> dict[str, np.ndarray]:
        """The arrays of a call as NumPy arrays, checked against the inputs: an unknown or a
        missing name, or an array with the wrong number of axes, is an EvaluationError."""
        if given.keys() == self.ranks.keys() and not self.structure:  # the common case: the inputs, as floats
            fast = True
            for name, value in given.items():
                if not (type(value) is np.ndarray and value.dtype.kind in "fc" and value.ndim == self.ranks[name]):
                    fast = False
                    break
            if fast:
                reject_complex(self.not_analytic, given)
                return dict(given)
        given = self._named(given)
        out = {name: as_array(name, value) for name, value in given.items()}
        self._check_ranks(out)
        reject_complex(self.not_analytic, out)
        return out

    def _named(self, given: Mapping[str, object]) -> dict[str, object]:
        """The given arrays that are inputs; an unknown or a missing name is an error.  A name is
        read as the text is (``θ`` is ``theta``: the printed derivative of a source written with
        θ reads theta)."""
        spelled = {k: ascii_name(k) if isinstance(k, str) and k not in self.ranks else k for k in given}
        if any(k != name for k, name in spelled.items()):
            twice = [k for k, name in spelled.items() if k != name and name in given]
            if twice:
                raise EvaluationError(f"{twice[0]!r} is read as {spelled[twice[0]]!r}, which is given too")
            given = {spelled[k]: v for k, v in given.items()}
        typed = {name: k for k, name in spelled.items() if k != name}
        program_inputs = self.program.all_inputs
        removed = {  # an input that simplification removed (A^0 is 1) is still checked as written
            name: as_array(name, value) if array_library(value) in (None, "numpy") else value
            for name, value in given.items()
            if name not in self.ranks and name in program_inputs
        }
        self._check_ranks(removed, program_inputs)
        given = {k: v for k, v in given.items() if k in self.ranks or k not in program_inputs}
        unknown = sorted(set(given) - set(self.ranks))
        if unknown:
            said = repr(unknown[0]) if unknown[0] not in typed else f"{typed[unknown[0]]!r} (read as {unknown[0]})"
            inputs = ", ".join(self.inputs) or "none"
            raise EvaluationError(f"unknown input {said}: the expression's inputs are {inputs}")
        missing = sorted(set(self.ranks) - set(given))
        if missing:
            hint = f" (pass it in a mapping: {{{missing[0]!r}: ...}})" if missing[0] in PARAMETERS else ""
            if missing[0] == "I" and self.ranks["I"] == 0:  # F = A + I, read as index notation
                hint = " (I was read as a scalar input; the identity is delta_ij here, or I with notation='matrix')"
            raise EvaluationError(f"missing array for {missing[0]!r} (inputs: {', '.join(self.inputs)}){hint}")
        return given

    def _check_ranks(self, arrays: Mapping[str, object], ranks: Mapping[str, int] | None = None) -> None:
        """Each array has as many axes as its name has indices (in ``ranks``, else the inputs')."""
        for name, array in arrays.items():
            rank, shape = (self.ranks if ranks is None else ranks)[name], tuple(array.shape)
            if len(shape) != rank:
                hint = ""
                if not rank and (self.reading is None or self.reading.notation == "index"):
                    hint = scalar_use_hint(name, len(shape), self.read_as)
                elif self.reading is not None and self.reading.notation == "matrix":  # its guess of the rank
                    kind = {0: "a scalar", 1: "a vector", 2: "a matrix"}.get(rank, f"a tensor of rank {rank}")
                    hint = (
                        f" (matrix notation read {name!r} as {kind}; where it is not, declare it: "
                        f"ranks={{{name!r}: {len(shape)}}}, CLI: --rank {name}={len(shape)})"
                    )
                raise EvaluationError(
                    f"input {name!r} has {len(shape)} axes (shape {shape}) but is used with {rank} indices{hint}"
                )
            if name in self.structure:  # before its axes' sizes clash, whatever library holds it
                check_square(name, self.structure[name], shape)

    def _backend_arrays(self, given: Mapping[str, object], ops, line: StraightLine | None = None):
        """The inputs as arrays of ``ops``'s library, all of one floating dtype and on one device.
        NumPy arrays and Python numbers are converted (to the device of the library's own
        arrays); integers and booleans count as float64 (JAX without x64: its widest float).  The
        dtype is that of the inputs ``line`` (by default this program's) reads."""
        given = self._named(given)
        native = {name: v for name, v in given.items() if array_library(v) == ops.name}
        first = next(iter(native.items()), None)
        out = {}
        for name, value in given.items():
            library = array_library(value)
            if library == ops.name:
                if not ops.same_place(first[1], value):
                    raise EvaluationError(
                        f"inputs {first[0]!r} and {name!r} are on different devices "
                        f"({first[1].device} and {value.device}); move them to one"
                    )
            elif library not in (None, "numpy"):
                raise _not_convertible(name, library, ops.name)
            else:
                if library == "numpy" or not isinstance(value, (int, float, bool)):
                    value = as_array(name, value)  # a Python number goes straight to the library (traceable)
                value = ops.convert(value, None if first is None else first[1])
            if not ops.is_numeric(value):
                raise EvaluationError(f"input {name!r} has dtype {value.dtype}, expected a numeric array")
            out[name] = value
        self._check_ranks(out)
        reject_complex(self.not_analytic, out)
        # the dtype of the arrays whose values the derivative reads, as on NumPy (whose contractions
        # take the common dtype of their operands): one it does not read (d(x_i x_i + s)/dx), or
        # reads for its size only (y in the logistic loss's Hessian), does not widen it; where it
        # reads values of none (d(sum_i(x_i))/dx), those it reads for their sizes count
        read = values_read((line or self._line or self.line).steps)
        dtype = ops.float_dtype([value for name, value in out.items() if name in read] or list(out.values()))
        like = first[1] if first is not None else None
        return {name: ops.astype(value, dtype) for name, value in out.items()}, dtype, like

    @guarded
    @reader_names_explained
    def call(self, arrays: Mapping[str, object] | None = None, /, backend: str | None = None, **named):
        """The value for ``arrays`` (a mapping: names need not be Python identifiers, and may be
        ``backend``), and for arrays given as keywords.  It is
        computed by the library the arrays come from (NumPy, torch, jax, cupy or dask), or by
        ``backend``, to which NumPy arrays and Python numbers are converted; the result is that
        library's array, on the inputs' device (a lazy one for dask).  Arrays from two libraries
        in one call are an error."""
        if arrays is None and isinstance(named.get("arrays"), Mapping) and "arrays" not in self.ranks:
            arrays = named.pop("arrays")  # call(arrays={...}), as before the mapping became positional-only
        arrays = gathered_arrays(arrays, named)
        chosen = backend_for(arrays, backend, [self.structure])
        if chosen == "numpy":
            return self._numpy_call(arrays)
        ops = ops_for(chosen)
        values, dtype, like = self._backend_arrays(arrays, ops)
        with self._in_written_terms():
            self.check_sizes(values)
            like = ops.astype(ops.convert(0.0, like), dtype)  # a 0-d array: the dtype and device of constants
            inputs = [values[n] for n in self.ranks]
            result = run_with(self._line or self.line, values, ops, like)[self.program.output]
        return ops.own(result, inputs)  # never an input, a view of one or a broadcast view

    @guarded
    @reader_names_explained
    def __call__(self, arrays: Mapping[str, object] | None = None, /, **named) -> np.ndarray:
        """The value for these arrays, named as in the expression: as keywords (``f(x=x)``), as one
        mapping (``f({"x": x})``, for any name), or both (see :meth:`call`)."""
        arrays = named if arrays is None else gathered_arrays(arrays, named)
        for value in arrays.values():
            if type(value) is not np.ndarray:  # another library's array, a list or a number
                if choose_backend(arrays, None) != "numpy":
                    return self.call(arrays)
                break
        return self._numpy_call(arrays)

    @contextmanager
    def _in_written_terms(self):
        """Size errors name index letters: for text read as matrix notation, which has none, the
        error says what the letters belong to (``G = B + I`` with a 3 x 4 B: read as
        ``G_ij = B_ij + delta_ij``, so I is square)."""
        try:
            yield
        except EvaluationError as err:
            if type(self) is not Compiled or self.reading is None or self.reading.notation != "matrix":
                raise
            if "index '" not in str(err) and "indices '" not in str(err):
                raise
            square = "; I is square and takes its size from what it meets" if "delta_" in self.read_as else ""
            raise EvaluationError(f"{err} (matrix notation read the text as {self.read_as}{square})") from None

    def _numpy_call(self, arrays: Mapping[str, object]) -> np.ndarray:
        """NumPy's fast path: plans per shape signature, results written in place."""
        with self._in_written_terms():
            return self._numpy_value(arrays)

    def _numpy_value(self, arrays: Mapping[str, object]) -> np.ndarray:
        values = self.numpy_arrays(arrays)
        if self.structure:
            check_structure(self.structure, values)
        self.check_sizes(values)
        signature = tuple([(values[n].shape, values[n].dtype) for n in self.ranks])
        inputs = [values[n] for n in self.ranks]
        result = run(self._line or self.line, values, signature, keep=(self.program.output,))[self.program.output]
        if type(result) is not np.ndarray or result.base is not None or any(result is arrays[n] for n in arrays):
            result = np.array(result)  # never hand back an input, or a view of one
        if inputs and any(a.dtype.kind in "fc" and a.dtype.itemsize < result.dtype.itemsize for a in inputs):
            # a constant (d(3 c)/dc is 3) is made in float64: float32 inputs give float32, as on
            # the other backends (the common dtype as they take it)
            wanted = ops_for("numpy").float_dtype(inputs)
            if result.dtype.kind == wanted.kind and np.can_cast(wanted, result.dtype):
                result = result.astype(wanted)
        return result

    @guarded
    def shape_for(self, shapes: Mapping[str, Sequence[int]] | None = None, /, **named) -> tuple[int, ...]:
        """The result's shape for inputs of the given shapes, as keywords or one mapping (allocates
        and evaluates nothing)."""
        arrays = {}
        for name, shape in gathered_arrays(shapes, named).items():
            try:
                sizes = tuple(int(n) for n in shape)
                if any(n < 0 for n in sizes) or any(n != m for n, m in zip(sizes, shape)):
                    raise ValueError
            except (TypeError, ValueError):
                raise EvaluationError(f"the shape of {name!r} must be non-negative integers, got {shape!r}") from None
            try:
                arrays[name] = np.broadcast_to(np.float64(0), sizes)  # a view: no memory, however large
            except ValueError:  # NumPy's "Maximum allowed dimension exceeded": past 2^63 elements
                raise EvaluationError(f"the shape {sizes} of {name!r} is larger than NumPy can address") from None
        values = {k: v.shape for k, v in self.numpy_arrays(arrays).items()}
        output = next((d for d in self.computed_definitions() if d.name == self.program.output), None)
        written = tuple(e for h in (output.hints if output else ()) if h[0] == "names" for e in h[1])
        with self._in_written_terms():
            return shape_of(self.program_dimensions, self.output, values, written)

    @property
    def steps(self) -> tuple:
        """The evaluation program: the typed steps (:mod:`einderiv.steps`) evaluation runs."""
        return tuple(self.line.steps)

    @guarded
    def explain(self, shapes: Mapping[str, Sequence[int]] | None = None, /, **named) -> str:
        """Each step of the evaluation program for inputs of the given shapes: what it computes
        (its einsum terms, or its call), its result's shape, its floating-point operations and
        its largest intermediate, as opt_einsum's ``PathInfo`` counts them; then the totals."""
        from .runtime import explain

        self.shape_for(shapes or {}, **named)  # the same checks and messages as shape_for
        given = {name: tuple(int(n) for n in shape) for name, shape in gathered_arrays(shapes, named).items()}
        reports = explain(self.line, given)
        rows = [("step", "kind", "shape", "FLOPs", "largest", "computes")]
        for r in reports:
            rows.append((r.target, r.kind, str(r.shape), f"{r.flops:.3g}", f"{r.largest:.3g}", r.computes))
        widths = [max(len(row[k]) for row in rows) for k in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5] for row in rows]
        total = sum(r.flops for r in reports)
        largest = max((r.largest for r in reports), default=0)
        count = len(reports)
        lines.append(
            f"{count} step{'s' * (count != 1)}, {total:.3g} FLOPs, largest intermediate {largest:.3g} elements"
        )
        return "\n".join(lines)

    # -- symbolic shapes ------------------------------------------------------------------------
    def dimension_names(self) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
        """Symbolic sizes: output index -> dimension name, and input -> its dimension names."""
        return dimension_names(self.program_dimensions, self.ranks, self.output)

    @functools.cached_property
    def program_dimensions(self) -> Dimensions:
        """The program's dimensions (:mod:`einderiv.dimensions`): the one source of its sizes."""
        return dimensions((*self._sources(), *self.program.definitions))

    def _sources(self) -> tuple[Definition, ...]:
        return ()

    def shape_parts(self) -> list[str]:
        """What the result's shape is made of: ``["K.shape", "R.shape"]``."""
        parts = [f"{self.root_name}.shape"] + [f"{ref.name}.shape" for ref in self.wrt]
        return parts[1:] + parts[:1] if self.layout == "denominator" else parts

    def shape_text(self) -> str:
        """``K.shape + R.shape = (P, P, M, P) with R: (M, P)``."""
        index_dims, input_dims = self.dimension_names()
        parts = self.shape_parts()
        dims = ", ".join(index_dims.get(i, "?") for i in self.indices)
        dims = f"({dims},)" if len(self.indices) == 1 else f"({dims})"
        shown = [n for n in input_dims if self.ranks.get(n)]
        where = ", ".join(f"{n}: ({', '.join(input_dims[n])}{',' if len(input_dims[n]) == 1 else ''})" for n in shown)
        return f"{' + '.join(parts)} = {dims}" + (f" with {where}" if where else "")

    wrt: tuple[Tensor, ...] = ()
    layout = "numerator"

    @property
    def root_name(self) -> str:
        return self.output.name if self.output.name != "_" else "f"


class Derivative(Compiled):
    """A derivative: prints as ``dK_pq/dR_ij = ...``, evaluates to ``out.shape + wrt.shape``.

    For a program, it prints the statements it needs first (intermediates and adjoints)."""

    def __init__(
        self, program: CheckedProgram, inputs, wrt: tuple[Tensor, ...], root: Definition, sources=(), layout="numerator"
    ):
        self.layout = layout
        self.wrt = wrt
        self.root = root
        self.sources = tuple(sources) or (root,)
        self.not_analytic = not_analytic(self.sources, program.definitions, [w.name for w in wrt])
        super().__init__(program, inputs)  # builds the evaluation line, which reads the sources

    @property
    def order(self) -> int:
        return len(self.wrt)

    def _sources(self) -> tuple[Definition, ...]:
        return self.sources  # the statements differentiated: their tensors name the dimensions

    @property
    def root_name(self) -> str:
        return self.root.name if self.root.name != "_" else "f"


def _symmetric_text(text: str, structure: Mapping[str, str]) -> str:
    """Matrix notation with S^T written S and S^-T written S^-1 for a symmetric S."""
    for name, kind in structure.items():
        if kind == "symmetric" and getattr(kind, "of", None) is None:  # declared, not a tangent (v + v^T)
            text = re.sub(rf"(?<![\w]){re.escape(name)}\^-T(?![\w])", f"{name}^-1", text)
            text = re.sub(rf"(?<![\w]){re.escape(name)}\^T(?![\w])", name, text)
    return text


@accepts_notation
@guarded
def compile(source: Source, of: str | None = None) -> Compiled:  # noqa: A001 - the natural name
    """Check a statement or program and prepare it for evaluation (``of`` picks the output).
    It evaluates through the same program with each difference of data named, as derivatives
    do (:func:`through_residuals`): ``sum_n(x_n - m) sum_i(x_i - m)`` in normal form is four
    products whose sum cancels at data offset by 1e8 (128 for 82.6, a meaning hunt's find)."""
    checked = check_program(_program(source), _output_name(of))
    token = PLAN_LATER.set(True)
    try:
        result = Compiled(checked)
    finally:
        PLAN_LATER.reset(token)
    if not RESIDUALS_NAMED.get():
        token = RESIDUALS_NAMED.set(True)
        try:
            other = through_named(checked, Compiled)
        finally:
            RESIDUALS_NAMED.reset(token)
        if evaluates_as(result, other):
            result._line, result.evaluated_program = other.line, other.program
    if not PLAN_LATER.get():
        result.line  # noqa: B018 - built now, so tracers (torch.compile) see only the array work
    return result


@accepts_notation
@guarded
def evaluate(
    source: Source, arrays: Mapping[str, object] | None = None, /, *, of: str | None = None, backend=None, **named
) -> np.ndarray:
    """The value of the output (the last statement, or ``of``) for the given arrays, computed by
    the arrays' library or by ``backend`` (see :meth:`Compiled.call`).  The arrays are keywords
    (``x=x``) or one mapping (``{"x": x}``): an input named ``of`` or ``backend`` goes in the mapping."""
    arrays = gathered_arrays(arrays, named)
    return compile(source, _output_name(of)).call(arrays, backend)


def wrt_tensor(spec: str | Tensor, program: CheckedProgram, where: str) -> Tensor:
    if isinstance(spec, Tensor):
        ref, explicit = spec, bool(spec.indices)
    else:
        if not isinstance(spec, str):
            raise DifferentiationError(f"wrt must be a tensor name such as 'R' or 'R_ij', got {spec!r}")
        names = re.findall(r"(?:[^\s,;{}]|\{[^}]*\})+", spec)  # W_{in,out} is one name
        if not names:
            inputs = ", ".join(sorted(program.all_inputs or program.inputs)) or "none"
            raise DifferentiationError(f"wrt is empty: name the tensor to differentiate by (the inputs: {inputs})")
        if len(names) > 1:
            raise DifferentiationError(
                f"wrt {spec!r} names {len(names)} tensors, but names are letters and digits: pass a list for a "
                f"derivative by several, wrt=[{', '.join(repr(n) for n in names)}]"
            )
        parsed = parse(spec)
        node = parsed.output.rhs
        if len(parsed.statements) != 1 or parsed.output.target is not None or not isinstance(node, (Tensor, Delta)):
            raise DifferentiationError(f"wrt must be a tensor name such as 'R' or 'R_ij', got {spec!r}")
        if isinstance(node, Delta):
            raise DifferentiationError("cannot differentiate with respect to delta (a constant)")
        ref, explicit = node, "_" in spec
    inputs = program.all_inputs or program.inputs
    if ref.name in program.ranks and ref.name not in inputs:
        raise DifferentiationError(
            f"{ref.name!r} is an intermediate defined by the program; differentiate with respect to an input "
            f"({', '.join(sorted(inputs))})"
        )
    if ref.name not in inputs:
        known = ", ".join(sorted(inputs)) or "no tensors"
        raise DifferentiationError(f"wrt tensor {ref.name!r} does not occur in {where} (its inputs: {known})")
    if not explicit:
        return Tensor(ref.name, ())
    if len(ref.indices) != inputs[ref.name]:
        raise DifferentiationError(
            f"wrt {ref} has {len(ref.indices)} indices but {ref.name!r} is used with {inputs[ref.name]}"
        )
    if len(set(ref.indices)) != len(ref.indices):
        raise DifferentiationError(f"wrt {ref} repeats an index: each axis of {ref.name!r} needs its own index")
    return ref


def checked_program(source: Source | CheckedProgram, of: str | None) -> CheckedProgram:
    return source if isinstance(source, CheckedProgram) else check_program(_program(source), _output_name(of))


#: set while a derivative is taken for evaluation through residuals (no second level inside)
RESIDUALS_NAMED: ContextVar[bool] = ContextVar("residuals_named", default=False)
#: set while the derivatives whose evaluation line may come from elsewhere are built: planned on use
PLAN_LATER: ContextVar[bool] = ContextVar("plan_later", default=False)


def through_named(source: Source | CheckedProgram, derive):
    """``derive(named)`` for ``source`` with its differences of data named (:mod:`einderiv.
    residuals`), a checked program with the same output where ``source`` is one (``of=`` an
    intermediate); None where it has none, or where that derivation fails (a plan that cannot
    be made is no error: the printed derivative's stands).  Its warnings are not shown: they
    are the user's statements' again, which the first derivation showed."""
    checked = isinstance(source, CheckedProgram)
    program = source.source if checked else _program(source)
    named = residuals_named(program) if program is not None else None
    if named is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            residuals = named
            if checked:
                written = {s.target.name for s in named.statements if s.target is not None}
                named = check_program(named, source.output if source.output in written else None)
            result = derive(named)
            result.residuals = residuals
            return result
    except Exception:  # noqa: BLE001 - see above
        return None


def _names_more_than_softmax_factors(source: Source | CheckedProgram, named: Program) -> bool:
    """Whether naming ``source``'s differences of data (``named``, the program that names them)
    names more than the softmaxes that are factors of products (``softmax_k(z_k) c_k``): those
    are named for the evaluation alone (its HVP through the program), and the derivative prints
    in the user's text, as it did.  Without a softmax, ``named`` is the answer, read again only
    where a softmax is named."""
    if not any(isinstance(n, Call) and n.func == "softmax" for s in named.statements for n in walk(s.rhs)):
        return True
    program = source.source if isinstance(source, CheckedProgram) else _program(source)
    if program is None:
        return True
    token = NAME_SOFTMAX_FACTORS.set(False)
    try:
        return residuals_named(program) is not None
    except EinderivError:
        return True
    finally:
        NAME_SOFTMAX_FACTORS.reset(token)


def evaluates_as(mine: Compiled, theirs: Compiled | None) -> bool:
    """Whether ``theirs`` computes ``mine``: the same output name, number of axes and inputs, and,
    where it holds a count (``delta_ll``), it sizes that count as ``mine`` does."""
    if theirs is None:
        return False
    a, b = mine.program.out, theirs.program.out
    if (a.name, len(a.indices), mine.ranks) != (b.name, len(b.indices), theirs.ranks):
        return False
    return not _holds_a_count(theirs) or _sizes_itself(theirs, mine)


def _holds_a_count(compiled: Compiled) -> bool:
    """Whether a step of ``compiled`` multiplies by a delta on one letter (a dimension's count)."""

    def counts(poly: Poly) -> bool:
        return any(
            (isinstance(f, Delta) and f.first == f.second) or (isinstance(f, Apply) and counts(f.arg))
            for t in poly.terms
            for f in t.factors
        )

    return any(counts(d.poly) for d in compiled.program.definitions)


def _probe_shapes(compiled: Compiled) -> dict[str, tuple[int, ...]]:
    """The shape of each input of ``compiled`` at small probe sizes, one per dimension (2, 3,
    ...), so that no two dimensions share a size and a count sized by the wrong one fails."""
    _, input_dims = compiled.dimension_names()
    sizes = {d: 2 + k for k, d in enumerate(dict.fromkeys(d for dims in input_dims.values() for d in dims))}
    return {name: tuple(sizes[d] for d in input_dims.get(name, ())) for name in compiled.ranks}


def _probe_arrays(compiled: Compiled) -> dict[str, np.ndarray]:
    """Arrays for ``compiled``'s inputs at :func:`_probe_shapes`: positive, a square matrix
    diagonally dominant, so that logs, roots and an input's inverse are defined."""
    gen = np.random.default_rng(0)
    arrays = {}
    for name, shape in _probe_shapes(compiled).items():
        arrays[name] = gen.uniform(0.5, 1.5, size=shape)
        if len(shape) == 2 and shape[0] == shape[1]:
            arrays[name] += 2 * shape[0] * np.eye(shape[0])
    return arrays


def _sizes_itself(theirs: Compiled, mine: Compiled) -> bool:
    """Whether ``theirs`` evaluates at small positive arrays (a square matrix diagonally
    dominant) with a size per dimension of ``mine``'s inputs: a count of the program with its
    residuals named can lose the statement its size came from (``df_j/da_i = (1 + delta_ll)
    delta_ij`` for ``f_j = (s + a_j)(1 + delta_jk)`` stopped with "the size of index 'l' cannot
    be inferred" where the derivative itself evaluates)."""
    arrays = _probe_arrays(mine)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            run(theirs.line, arrays, None)
    except EinderivError:
        return False
    return True


def printed_through(result: Compiled, other: Compiled, residuals: Program) -> Program | None:
    """The statements ``result`` prints when it evaluates through ``other``, the derivative of
    its program with the residuals named (``residuals``, the program :func:`through_named`
    derived it from): those written back in place, else named ``r``, ``r2``,
    ... (:mod:`einderiv.residuals`), the first of the two whose text reads back (evaluated at
    small arrays of the inputs' sizes, where a count could fail to size itself); None where
    neither does (the multiplied-out text is printed)."""
    displayed = other.displayed()
    for written in (written_in_place, named_readably):
        shown = written(displayed, residuals)
        if shown is not None:
            shown = with_output_letters(shown, _printed_letters(result))
            if _reads_back(shown, result, other):
                return shown
    return None


def _printed_letters(result: Compiled) -> tuple[str, ...]:
    """The result's letters in the order its statement prints them: the output's, then each wrt's
    (``result.indices`` puts the wrt's first in the denominator layout, whose text is the same)."""
    if getattr(result, "layout", "numerator") != "denominator":
        return result.indices
    wrt = sum(len(w.indices) for w in result.wrt)
    return (*result.indices[wrt:], *result.indices[:wrt])


def _a_count(node, reduced: frozenset = frozenset()) -> bool:
    """Whether ``node`` writes a count: a delta on one letter (``delta_ii``) or on a letter a
    reduction around it sums (``mean_i(delta_ik)``), which the text read back sizes by letter."""
    if isinstance(node, Delta):
        return node.first == node.second or bool({node.first, node.second} & reduced)
    if isinstance(node, Call) and node.over:
        reduced = reduced | frozenset(node.over)
    return any(_a_count(child, reduced) for child in children(node))


def _reads_back(shown: Program, result: Compiled, other: Compiled) -> bool:
    """Whether the text of ``shown``, read back and evaluated at :func:`_probe_arrays` (positive,
    a size per dimension of ``result``'s inputs), gives what ``other`` computes there, to 1e-9
    relative (NaN where it gives NaN).  Only a text with a count (``delta_ii``) is read: a count
    is sized by its letter where it is read, which the output's letters, written in last, may
    have moved to another dimension (a gradient read back 8 y - 5 for 10 y - 5)."""
    if not any(_a_count(s.rhs) for s in shown.statements):
        return True
    arrays = _probe_arrays(result)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            read = compile(str(shown))
            got = read(**{k: v for k, v in arrays.items() if k in read.ranks})
            expected = np.asarray(run(other.line, dict(arrays), None)[other.program.output])
    except (EinderivError, ArithmeticError, ValueError, np.linalg.LinAlgError):
        return False  # not shown to read back: the multiplied-out text is printed
    scale = max(1.0, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0)))
    return np.shape(got) == np.shape(expected) and bool(
        np.allclose(got, expected, rtol=1e-9, atol=1e-12 * scale, equal_nan=True)
    )


def through_residuals(function):
    """Evaluate the derivative that ``function`` (its source first) returns through the same
    derivative of the program with each difference of data named (:mod:`einderiv.residuals`),
    which differentiation cannot multiply out: the gradient of a squared standardised score at
    data offset by 1e6 was 2086x off, as its program ``c_n = x_n - mean_k(x_k); ...`` is not.
    The printed text stays the user's.  Where that program does not derive, or its derivative
    has another output, the derivative evaluates as printed."""

    @functools.wraps(function)
    def wrapped(source, *args, **kwargs):
        if RESIDUALS_NAMED.get():
            return function(source, *args, **kwargs)
        token, later = RESIDUALS_NAMED.set(True), PLAN_LATER.set(True)
        try:
            result = function(source, *args, **kwargs)
            other = through_named(source, lambda named: function(named, *args, **kwargs))
            if evaluates_as(result, other):
                result._line, result.evaluated_program = other.line, other.program
                if _names_more_than_softmax_factors(source, other.residuals):  # else the user's text, as before
                    result.shown = printed_through(result, other, other.residuals)
            result.line  # noqa: B018 - planned now (the printed derivative's plan where no other was made)
            result.program_dimensions  # noqa: B018 - sized now, not in a caller's trace (torch.compile)
            return result
        finally:
            RESIDUALS_NAMED.reset(token)
            PLAN_LATER.reset(later)

    return wrapped


LAYOUTS = ("numerator", "denominator")

#: the stem of a first derivative's adjoints where the output differentiated is itself a derivative
#: product (an HVP's ``df/dx_i v_i``: its adjoints are ``d2fdxvdt1``, not ``dd1fdt1``)
ADJOINT_STEM: ContextVar[str | None] = ContextVar("adjoint_stem", default=None)


@accepts_notation
@guarded
@through_residuals
def diff(
    source: Source,
    wrt: str | Sequence[str],
    of: str | None = None,
    layout: str = "numerator",
    *,
    symmetric: Sequence[str] | None = None,
    diagonal: Sequence[str] | None = None,
    symmetric_convention: str = "frobenius",
) -> Derivative:
    """Differentiate the output (the last statement, or ``of``) with respect to ``wrt``.

    ``wrt`` is a tensor name (``"R"``: derivative indices chosen fresh), a name with indices
    (``"R_ij"``), or a list of those for higher derivatives (``["x", "x"]`` is the Hessian).
    The result's axes are the output's indices followed by each wrt's indices (``layout=
    "numerator"``), or each wrt's indices first (``layout="denominator"``).  Through a program,
    the chain rule runs in reverse (adjoint) order.

    ``symmetric=["S"]`` differentiates in the space of symmetric matrices: sym(G) = (G + Gᵀ)/2
    by default, or the Matrix Cookbook's G + Gᵀ − G∘I with ``symmetric_convention="cookbook"``;
    ``diagonal=["D"]`` in the space of diagonal matrices, G∘I (:mod:`einderiv.structured`).
    """
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise DifferentiationError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    checked = checked_program(source, of)
    if isinstance(wrt, (str, Tensor)):
        specs = [wrt]
    elif isinstance(wrt, (list, tuple)):
        specs = list(wrt)
    else:
        raise DifferentiationError(f"wrt must be a tensor name such as 'R', or a list of names, got {wrt!r}")
    if not specs:
        raise DifferentiationError("wrt is empty: name the tensor to differentiate with respect to")
    root = checked.out
    text = str(root.display())
    where = f"'{text}'" if len(text) < 80 and len(checked.definitions) == 1 else "the program"
    used = root.poly.all_index_names() | set(root.indices)
    for hint in root.hints:
        if hint[0] == "poly":
            used |= hint[1].all_index_names()
    for d in checked.definitions:  # as written: a count delta_kk is k#1 by now, and still k
        if d.statement is not None:
            used |= {i for node in walk(d.statement.rhs) for i in getattr(node, "indices", ())}
    refs: list[Tensor] = []
    current = checked
    for number, spec in enumerate(specs, 1):
        ref = wrt_tensor(spec, checked, where)
        out = current.out
        rank = (checked.all_inputs or checked.inputs)[ref.name]
        if not ref.indices and rank:
            ref = Tensor(ref.name, fresh_indices(rank, used | out.poly.all_index_names()))
        clash = [i for i in ref.indices if i in out.indices]
        if clash:
            raise DifferentiationError(
                f"wrt index {clash[0]!r} of {ref} is already an index of the result "
                f"({''.join(out.indices)}): pick other letters, or pass just {ref.name!r}"
            )
        used |= set(ref.indices)
        taken = set(checked.ranks) | set(current.ranks) | set(checked.all_inputs or checked.inputs)
        stem = root.name.strip("_") or "f"
        # a higher derivative's adjoints: d2LdWdH_ijnh is the derivative of dL/dW_ij by H_nh
        named = ADJOINT_STEM.get() if number == 1 else f"{number}{stem}" + "".join(f"d{r.name}" for r in refs)
        # a Hessian substitutes the Jacobians its reverse sweep over a gradient leaves; a third
        # derivative does not (a 4-layer network's took 17 s to derive that way, 0.7 s without)
        jacobians = number == 2 == len(specs)
        current = derive(current, ref, name=unique_name(f"d{number}{stem}", taken), stem=named, jacobians=jacobians)
        refs.append(ref)
    final = current.out
    structure = structure_of(symmetric, diagonal, checked.all_inputs or checked.inputs)
    named_none = "symmetric" not in structure.values()
    if symmetric_convention != "frobenius" and symmetric_convention in CONVENTIONS and named_none:
        raise DifferentiationError(
            f"symmetric_convention={symmetric_convention!r} is the convention for the matrices symmetric= names, "
            "and it names none: pass symmetric=['S'] (--symmetric S) for the gradient of a symmetric S"
        )
    final_poly = final.poly
    if structure or symmetric_convention != "frobenius":
        axes = [(structure[r.name], *r.indices) for r in refs if r.name in structure]
        final_poly = projected(final_poly, axes, symmetric_convention)
        final_poly = written_symmetric(final_poly, {n for n, kind in structure.items() if kind == "symmetric"})
    poly, used_names = name_calls(final_poly, checked)
    forward = {d.name for d in checked.definitions}
    renamed = []
    for d in current.definitions[:-1]:  # adjoints read in the user's names too
        if d.name in forward:
            renamed.append(d)
            continue
        named, used = name_calls(d.poly, checked)
        used_names |= used
        renamed.append(replace(d, poly=named, statement=None) if used else d)
    current = CheckedProgram(
        [*renamed, current.definitions[-1]], current.inputs, current.output, None, current.ranks, current.all_inputs
    )
    if used_names:  # the user's statements that name calls of the result are computed and printed
        current = with_forward(current, checked, used_names)
    axes = count_axes_of(final.hints)
    poly = count_powers(poly, axes)  # delta_ll^3, not three counts that need three letters
    # the printed statement is evaluated with the result's size hints, which name letters of
    # every statement: a letter printing moves keeps its old letter's hints, and where it landed
    # on a letter other hints name, with no tensor to carry it, it is printed again with those
    # letters reserved (delta_ii cos(delta_lm) of t = ((b_m + A_jj) delta_ii) cos(delta_ji);
    # f_j = t + A_ij by b sized m as t's b_m, 4 where A's 3 was meant, silently)
    with moved_letters() as moved:
        text, printed = factored(poly, axes)
    if _moved_onto_hinted(printed, final.hints, moved):
        with reserved_letters(hinted_letters(final)), moved_letters() as moved:
            text, printed = factored(poly, axes)
    # an adjoint constant along an output axis (dt2dt1_j = 2 t1 delta_jj + ... of a Jacobian
    # of t2_j by s): nothing in its text sizes j, so the statement differentiated is printed
    # first too, and sized_constant_adjoints writes "+ 0 t2_j" into the adjoint
    constant = {
        d.name
        for d in current.definitions[:-1]
        if d.name not in forward and sized_only_by_deltas(d.poly, ()) & set(d.indices[: len(root.indices)])
    }
    if (sized_only_by_deltas(printed, refs) or constant) and root.statement is not None and root.name != "_":
        current = with_forward(current, checked, uses(root) & forward)
        current = with_root(current, root, constant)  # printed first: it sizes what only deltas carry
    current = adjoint_counts(current, checked.definitions)
    statement = _display(root, refs, counts_read_back(current, checked.definitions, poly, axes) or text)
    poly = printed
    if layout == "denominator":  # the wrt indices first, then the output's
        wrt_indices = tuple(i for r in refs for i in r.indices)
        poly = Poly(poly.terms, wrt_indices + root.indices)
    hints = with_moved_letters(final.hints, moved)
    current.definitions[-1] = Definition(final.name, poly.indices, poly, hints, statement)
    inputs = dict(checked.inputs)
    for ref in refs:  # a wrt tensor fixes the derivative's axes even where its values cancel
        inputs[ref.name] = (checked.all_inputs or checked.inputs)[ref.name]
    current = sized_constant_adjoints(current, inputs, root)
    derivative = Derivative(current, inputs, tuple(refs), root, checked.definitions, layout)
    derivative.structure = structure
    return derivative


def _moved_onto_hinted(printed: Poly, hints: tuple, moved: Mapping[str, set[str]]) -> bool:
    """Whether printing moved a summed letter onto one that ``hints`` name at other axes, where
    a term of ``printed`` carries it by no tensor (so that those hints would size it)."""
    named = named_axes(hints)
    uncarried = {i for term in printed.terms for i in uncarried_letters(term)}
    return any(
        new in named and new in uncarried and not named[new] <= named.get(old, set())
        for old, news in moved.items()
        for new in news
    )


def sized_constant_adjoints(
    program: CheckedProgram, inputs: Mapping[str, int], root: Definition | None = None
) -> CheckedProgram:
    """``program`` with each adjoint that is constant along an axis (``dfdt2_i = x_k t1_k
    delta_ii``, ``dfdT1_ij = 2 mean_k(delta_ki) mean_l(delta_lj)``: i only in deltas and 1/n)
    printed with ``+ 0 t2_i`` (a zero one as ``0 t2_i``), the tensor it is the adjoint of, where that is an input or a
    statement printed before it: read back, its axis is then sized (an intermediate's axis is
    not sized by the statements before it), also where the statement using it sums that axis
    alone (``(1 - y_k A_kj) dfdt2_i``)."""
    definitions = []
    ranks = dict(inputs)
    for d in program.definitions:
        carried = [f for t in d.poly.terms for f in t.factors if not isinstance(f, Delta) and not is_reciprocal(f)]
        used = {i for f in carried for i in f.indices}
        axes = {h[1]: (h[2], h[3]) for h in d.hints if h[0] == "axis"}
        if root is not None and not axes and d.statement is None and len(d.indices) == len(root.indices):
            # an adjoint of a scalar has the output's axes: dt2dt1_j by t1 in a Jacobian of t2_j
            axes = {i: (root.name, k) for k, i in enumerate(d.indices)}
        elif root is not None and d.statement is None and len(d.indices) > len(root.indices):
            # in a Jacobian, an adjoint's first letters are the output's axes (dLdr2_dil of L_d by
            # r2_il): those without an axis of their own are sized by the output
            lead = d.indices[: len(root.indices)]
            axes = {**{i: (root.name, k) for k, i in enumerate(lead) if i not in axes}, **axes}
        sizers = _sizing_tensors(d.indices, axes, ranks)
        if d.statement is None and set(d.indices) - used and sizers is not None:
            shown = d.display()
            sizing = Mul((Number(Fraction(0)), *sizers))
            # a zero adjoint (a softmax summed over its own letter: dfdh_i = 0) is 0 h_i
            rhs = Add((shown.rhs, sizing)) if d.poly.terms else sizing
            d = replace(d, statement=Statement(shown.target, rhs))
        ranks[d.name] = len(d.indices)
        definitions.append(d)
    return replace(program, definitions=definitions)


def _sizing_tensors(indices, axes: Mapping[str, tuple[str, int]], ranks: Mapping[str, int]) -> list | None:
    """The tensors whose axes are the letters ``indices``, each read whole (``t2_i``; ``Z_ij
    r2_kn`` for a second-order adjoint whose axes come from Z and r2: before, only one tensor's,
    and ``d2LdZdr2_ijkn = 0`` printed unsized and did not read back), in order of first letter;
    None where some letter's axis is not known or a tensor is not read whole."""
    if not indices or any(i not in axes for i in indices):
        return None
    letters: dict[str, dict[int, str]] = {}
    for i in indices:
        name, position = axes[i]
        if position in letters.setdefault(name, {}):
            return None  # two letters on one axis: one tensor read would lose one of them
        letters[name][position] = i
    tensors = []
    for name, placed in letters.items():
        if ranks.get(name) != len(placed) or set(placed) != set(range(len(placed))):
            return None
        tensors.append(Tensor(name, tuple(placed[k] for k in range(len(placed)))))
    return tensors


def sized_only_by_deltas(poly: Poly, refs) -> set[str]:
    """Indices that the printed result carries only in deltas (``-delta_nn``, the count of n, in
    the Hessian of a Gaussian log-likelihood by its mean) and no denominator names."""
    sized = {i for r in refs for i in r.indices}  # written on a tensor anywhere, or a denominator's
    pairs: list[tuple[str, str]] = []

    def visit(p: Poly):
        for term in p.terms:
            for f in term.factors:
                if isinstance(f, Delta):
                    pairs.append((f.first, f.second))
                elif hasattr(f, "arg"):  # a call's letters are those its argument's tensors write:
                    visit(f.arg)  # exp(delta_ij) carries i and j in a delta only
                else:
                    sized.update(f.indices)

    visit(poly)
    changed = True
    while changed:  # delta_ik with k sized sizes i
        changed = False
        for a, b in pairs:
            if (a in sized) != (b in sized):
                sized |= {a, b}
                changed = True
    return ({i for pair in pairs for i in pair} | set(poly.indices)) - sized


def counts_read_back(current: CheckedProgram, sources: list[Definition], poly: Poly, axes) -> Expr | None:
    """Where the counts of the result ``poly`` need other letters to read back
    (:func:`~einderiv.printing.count_letters`): the statements printed before it renamed, in
    ``current``, and the result's text; else None.  Only the user's statements are renamed, and
    none before a derivative-named one (its letters, too, may be sized by those before it)."""
    if not any(is_count(i) for i in poly.all_index_names()):
        return None
    dims = dimensions((*sources, *current.definitions))
    printing = _letters_for_counts(current, len(current.definitions) - 1, poly, axes, dims)
    return factored(*printing)[0] if printing else None


def _letters_for_counts(current: CheckedProgram, position: int, poly: Poly, axes, dims) -> tuple | None:
    """:func:`~einderiv.printing.count_letters` for the counts of ``poly``, printed as definition
    ``position`` of ``current``: the user's statements before it renamed in ``current`` where
    that is needed, and ``(poly, axes)`` with its counts renamed, or None where they print as
    they are."""
    changed, printing = count_letters(_printed_before(current, position), poly, axes, dims.axis)
    for k, shown in changed.items():
        current.definitions[k] = replace(current.definitions[k], statement=shown)
    return printing


def _printed_before(current: CheckedProgram, position: int) -> list[tuple[Statement, bool]]:
    """The statements printed before definition ``position``, each with whether its letters may
    be renamed: the user's statements, none before a derivative-named one."""
    earlier: list = []
    derivative_after = False
    for d in reversed(current.definitions[:position]):
        shown = d.display()
        renamable = d.statement is not None and shown.target is not None and not shown.wrt and not derivative_after
        earlier.insert(0, (shown, renamable))
        derivative_after |= bool(shown.wrt)
    return earlier


def adjoint_counts(current: CheckedProgram, sources: list[Definition]) -> CheckedProgram:
    """``current`` with the counts of each adjoint printed alone given letters that the statements
    printed before it write at the count's dimension and at no other
    (:func:`~einderiv.printing.count_letters`), as the result's counts are: read back, a count
    is sized by the statements before it (``dfdt1_i = ... delta_jj`` after ``t1_j = ...``), so a
    letter that a statement before writes only at another dimension would count that one."""
    current = replace(current, definitions=list(current.definitions))
    dims = None
    for k, d in enumerate(current.definitions[:-1]):
        if d.statement is not None:
            continue
        poly = d.display_poly()
        printing = None
        if any(is_count(i) for i in poly.all_index_names()):
            dims = dims or dimensions((*sources, *current.definitions))
            printing = _letters_for_counts(current, k, poly, count_axes_of(d.hints), dims)
        current.definitions[k] = replace(d, counts=printing)
    return current


def with_root(current: CheckedProgram, root: Definition, before: set[str] = frozenset()) -> CheckedProgram:
    """``current`` with the statement it differentiates printed before its result (and before
    the first of ``before``), so that the text sizes an axis that differentiation left only in
    deltas (it is not computed)."""
    if any(d.name == root.name for d in current.definitions):
        return current
    at = next((k for k, d in enumerate(current.definitions[:-1]) if d.name in before), len(current.definitions) - 1)
    definitions = [*current.definitions[:at], root, *current.definitions[at:]]
    ranks = {**current.ranks, root.name: len(root.indices)}
    return CheckedProgram(definitions, current.inputs, current.output, None, ranks, current.all_inputs)


def uses(d: Definition) -> set[str]:
    """The tensors ``d`` computes from and those its printed statement names (``t1_ik - t1_ik``
    cancels in its value and is still printed: read back, it needs t1)."""
    shown = {
        node.matrix if isinstance(node, MatrixCall) else node.name
        for node in walk(d.display().rhs)
        if isinstance(node, (Tensor, MatrixCall))
    }
    return references(d.poly) | shown


def with_forward(current: CheckedProgram, checked: CheckedProgram, names: set[str]) -> CheckedProgram:
    """``current`` with the forward statements ``names`` (and what they use) of ``checked`` put
    back before its own statements, in the user's order."""
    forward = {d.name: d for d in checked.definitions if d.name != checked.output}
    have = {d.name for d in current.definitions}
    wanted = set(names)
    for d in reversed(checked.definitions):
        if d.name in wanted:  # what it computes from, and what its printed statement names
            wanted |= uses(d) & set(forward)
    # one already in ``current`` stays as it is there: its letters may have been renamed so that
    # the counts of the text after it read back (``s1 = sum_k(...)`` beside ``delta_kk``)
    mine = {d.name: d for d in current.definitions}
    kept = [
        mine.get(d.name, d) for d in checked.definitions if d.name in forward and (d.name in have or d.name in wanted)
    ]
    rest = [d for d in current.definitions if d.name not in forward]
    ranks = {**current.ranks, **{d.name: len(d.indices) for d in kept}}
    return CheckedProgram([*kept, *rest], current.inputs, current.output, None, ranks, current.all_inputs)


def _display(root: Definition, refs: list[Tensor], rhs) -> Statement:
    """``dK_pq/dR_ij = ...``; differentiating a derivative-named statement extends its name
    (``df/dx_i`` differentiated by x gives ``d2f/dx_i dx_j``)."""
    prior: tuple[Tensor, ...] = ()
    indices = root.indices
    name = root.name if root.name != "_" else ""
    statement = root.statement
    if statement is not None and statement.differentiated is not None:
        prior = statement.wrt
        indices = statement.target.indices
        name = statement.differentiated
    order = len(prior) + len(refs)
    denominators = tuple(Tensor(derivative_name(r.name, 1), r.indices) for r in refs)
    return Statement(Tensor(derivative_name(name, order), indices), rhs, prior + denominators)


def _carries(text: str, name: str, indices) -> bool:
    """Whether ``text`` (a matrix-notation reading in index notation) writes ``name`` with one of
    ``indices`` (``lam_i``, ``A_ji``)."""
    letters = "".join(indices)
    pattern = rf"(?<![A-Za-z0-9_]){re.escape(name)}_[A-Za-z]*[{re.escape(letters)}]"
    return bool(letters) and re.search(pattern, text) is not None


def _scalar_reading(reading: Reading, of: str | None, indices) -> tuple[str, int] | None:
    """One rank, declared, that makes matrix-notation text a scalar, tried in this order: a
    lower-case name read as a matrix declared a vector (``x^T A x + B`` read x as a matrix so that
    B could be one), then a name written with one of the output's indices declared a scalar."""
    ranks = dict(reading.ranks)
    tries = [(n, 1) for n, r in ranks.items() if r == 2 and n[0].islower()]
    carrying = sorted((n for n, r in ranks.items() if r), key=lambda n: not _carries(reading.text, n, indices))
    tries += [(n, 0) for n in carrying]
    for name, rank in tries:
        try:
            again = read(reading.source, "matrix", {name: rank})
            if not checked_program(again, of).out.indices:
                return name, rank
        except EinderivError:
            continue
    return None


def scalar_program(
    source: Source, of: str | None, what: str, instead: str = "use jacobian() for tensors"
) -> CheckedProgram:
    checked = checked_program(source, of)
    if checked.out.indices:
        guessed = ""
        if isinstance(source, Reading) and source.notation == "matrix":  # the ranks it guessed made it so
            names = ", ".join(f"{n}: {rank}" for n, rank in source.ranks)
            scalar = _scalar_reading(source, of, checked.out.indices)
            if scalar is not None:
                name, rank = scalar
                words = {0: "a scalar", 1: "a vector"}
                advice = f"read with {name} {words[rank]}, it is a scalar: declare ranks={{{name!r}: {rank}}} "
                advice += f"(CLI: --rank {name}={rank})"
            else:
                advice = "no one name declared a scalar or a vector makes it a scalar: declare the ranks meant"
                advice += " with ranks= (CLI: --rank NAME=N)"
            guessed = f" (matrix notation read it as {source.text!r}, with ranks {names}; {advice})"
        raise DifferentiationError(
            f"{what} needs a scalar output, but "
            f"{'the expression' if checked.out.name == '_' else repr(checked.out.name)} has indices "
            f"({''.join(checked.out.indices)}){guessed}; {instead}"
        )
    return checked


@accepts_notation
@guarded
def jacobian(source: Source, wrt: str, of: str | None = None, layout: str = "numerator", **structure) -> Derivative:
    """The Jacobian: shape ``out.shape + wrt.shape`` (``wrt.shape + out.shape`` in denominator
    layout); ``symmetric=``, ``diagonal=`` and ``symmetric_convention=`` as for :func:`diff`."""
    return diff(source, wrt, of, layout, **structure)


@accepts_notation
@guarded
def hessian(source: Source, wrt: str, of: str | None = None, layout: str = "numerator", **structure) -> Derivative:
    """The Hessian of a scalar output: shape ``wrt.shape + wrt.shape`` (in either layout)."""
    checked = scalar_program(source, of, "hessian")
    if not isinstance(wrt, str):
        raise DifferentiationError("hessian takes one wrt name; use diff(source, [a, b]) for mixed derivatives")
    base = wrt.split("_", 1)[0]
    return diff(checked, [wrt, base] if "_" in wrt else [wrt, wrt], layout=layout, **structure)


__all__ = ["Compiled", "Derivative", "compile", "diff", "evaluate", "hessian", "jacobian", "EinderivError"]
