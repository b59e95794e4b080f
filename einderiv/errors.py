"""The exception classes of einderiv: every user-facing failure is one of these."""

from __future__ import annotations

import functools
import inspect
import os
import warnings


class EinderivError(Exception):
    """Base class of all errors einderiv raises on purpose."""


class ParseError(EinderivError):
    """Malformed text, with the line, the column and a caret under it."""

    def __init__(self, message: str, source: str = "", line: int = 0, column: int = 0):
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        super().__init__(str(self))

    @property
    def source_line(self) -> str:
        lines = self.source.splitlines() or [""]
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return ""

    @property
    def caret(self) -> str:
        """The source line and a caret under the offending column (two lines)."""
        if not self.line:
            return ""
        text = self.source_line.expandtabs(1)
        return f"  {text}\n  {' ' * max(self.column - 1, 0)}^"

    def __str__(self) -> str:
        if not self.line:
            return self.message
        return f"{self.message} (line {self.line}, column {self.column})\n{self.caret}"


class IndexRuleError(EinderivError):
    """A statement breaks the index rules (repeated LHS index, LHS index unused, rank mismatch)."""


class DifferentiationError(EinderivError):
    """A bad `wrt`, an unknown derivative rule, or a derivative too large to build."""


class EvaluationError(EinderivError):
    """Missing or ill-shaped arrays, or index sizes that disagree."""


class UsageError(EinderivError, TypeError):
    """A call with a keyword argument the function does not take: Python's TypeError, and an
    EinderivError as every error the API raises."""


class EinderivWarning(UserWarning):
    """Legal input that almost always means something else (emitted through :mod:`warnings`)."""


#: the keywords an entry point's ``**structure`` passes on to diff (structured variables)
STRUCTURE = frozenset({"symmetric", "diagonal", "symmetric_convention"})


def guarded(function):
    """Turn a RecursionError (an expression nested past what Python's stack holds) into a
    clear EinderivError, and a MemoryError into an EvaluationError; parse already refuses
    nesting deeper than the limit max_depth.  A function that passes ``**structure`` on to
    diff takes only :data:`STRUCTURE` there: another keyword is Python's TypeError, naming
    ``function`` (``jacobian(..., foo=1)`` named diff, which the user never called)."""
    parameters = inspect.signature(function).parameters
    passes_on = "structure" in parameters and parameters["structure"].kind is inspect.Parameter.VAR_KEYWORD
    own = {name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}

    @functools.wraps(function)
    def call(*args, **kwargs):
        if passes_on:
            unknown = sorted(set(kwargs) - own - STRUCTURE)
            if unknown:
                takes = ", ".join(f"{name}=" for name in sorted(own - {"source"}) + sorted(STRUCTURE))
                raise UsageError(
                    f"{function.__name__}() got an unexpected keyword argument {unknown[0]!r} (it takes {takes})"
                )
        try:
            return function(*args, **kwargs)
        except RecursionError:
            raise EinderivError(
                "the expression is nested too deeply to process: name inner parts in statements of their own"
            ) from None
        except MemoryError as err:  # arrays (or a result) too large for this machine: the user's sizes
            raise EvaluationError(f"not enough memory ({err or 'MemoryError'})") from None

    return call


def warn_user(message: str) -> None:
    """An :class:`EinderivWarning` attributed to the first line outside einderiv that led to it
    (the user's ``einderiv.compile(...)``, not a line of einderiv's reader), as pandas' warnings are."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe(), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, EinderivWarning, stacklevel=level)
