"""The resource limits einderiv enforces, read where they are enforced, each time.

``current()`` is the :class:`Limits` in effect.  ``with einderiv.limited(max_terms=50_000):``
changes some of them inside the block, for this thread (or asyncio task) only, and restores
them on leaving it, also when it raises; ``set_defaults(...)`` changes them for every thread
that is not inside a ``limited`` block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import EinderivError


@dataclass(frozen=True)
class Limits:
    """Sizes past which einderiv stops with a clear error instead of working on (and on)."""

    #: deepest nesting of operations (calls, signs, powers, parenthesised sums) in an expression
    max_depth: int = 64
    #: most terms an expansion or a derivative may produce
    max_terms: int = 20_000
    #: largest size of a derivative, in atoms (nested call arguments included)
    max_size: int = 100_000
    #: most entries of the input a check differentiates by (central differences evaluate the
    #: expression twice per entry)
    max_checked: int = 20_000


#: the limits einderiv ships with
DEFAULTS = Limits()
NAMES = tuple(field.name for field in dataclasses.fields(Limits))

_defaults = DEFAULTS  # what current() gives outside every limited() block (see set_defaults)
_defaults_lock = threading.Lock()
_override: ContextVar[Limits | None] = ContextVar("einderiv_limits", default=None)


def current() -> Limits:
    """The limits in effect here: the innermost ``limited`` block's, else the defaults."""
    return _override.get() or _defaults


def _changed(base: Limits, changes: dict[str, object]) -> Limits:
    unknown = sorted(set(changes) - set(NAMES))
    if unknown:
        raise EinderivError(f"{unknown[0]!r} is not a limit (limits: {', '.join(NAMES)})")
    for name, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise EinderivError(f"the limit {name} must be a positive integer, got {value!r}")
    return dataclasses.replace(base, **{name: int(value) for name, value in changes.items()})


@contextlib.contextmanager
def limited(**changes: int) -> Iterator[Limits]:
    """Change some limits (``max_depth``, ``max_terms``, ``max_size``, ``max_checked``) inside a ``with`` block.

    The change holds for this thread or asyncio task only, nests (an inner block starts from
    the outer one's limits), and is undone on leaving the block, by an exception too."""
    token = _override.set(_changed(current(), changes))
    try:
        yield _override.get()
    finally:
        _override.reset(token)


def set_defaults(**changes: int) -> Limits:
    """Change the limits of every thread outside a ``limited`` block; returns the previous
    defaults, so that ``set_defaults(**dataclasses.asdict(previous))`` restores them."""
    global _defaults
    with _defaults_lock:
        previous = _defaults
        _defaults = _changed(previous, changes)
    return previous


def over(name: str) -> str:
    """``the limit of 64 (max_depth)``: a limit in effect, as an error message names it."""
    return f"the limit of {getattr(current(), name)} ({name})"


def raise_hint(name: str) -> str:
    """How an error message says to raise the limit ``name``."""
    return f"raise the limit with einderiv.limited({name}=...)"
