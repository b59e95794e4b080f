"""Index names: fresh ones, and the marks of a counting index.

A counting index stands for the dimension of a letter: ``i#2`` is the size of i as statement 2
wrote it (``delta_{i#2,i#2}`` sums to it), ``j#2#`` a letter lowering chose rather than the
user, and ``i#2@1`` the same count renamed apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .ir import Indices

#: letters no fresh index takes while a statement is lowered: every letter its text writes
_RESERVED: ContextVar[frozenset[str]] = ContextVar("reserved_letters", default=frozenset())


@contextmanager
def reserved_letters(letters) -> Iterator[None]:
    """Fresh indices chosen in this block avoid ``letters`` too.  Lowering a statement reserves
    every letter it writes: a letter renamed apart in one term (``sum_i(x_i)`` inside a product
    that sums i) must not take a letter another term writes (the n of ``delta_nn``), or reading
    sizes would take one for the other."""
    token = _RESERVED.set(_RESERVED.get() | frozenset(letters))
    try:
        yield
    finally:
        _RESERVED.reset(token)


_FRESH_POOL = "ijklmnopqrstuvwxyzabcdefghABCDEFGHIJKLMNOPQRSTUVWXYZ"


#: marks an index that counts (``delta_{i#2,i#2}``: the dimension of i, as statement 2 wrote it);
#: ``i#2#``: a letter lowering chose, not the user; ``i#2@1``: the same count renamed apart
COUNT_MARK = "#"


def is_count(index: str) -> bool:
    """Whether ``index`` counts (``i#2``), rather than indexing an axis."""
    return COUNT_MARK in index


def count_stem(index: str) -> str:
    """The count an index renamed apart stands for (``i#2`` for ``i#2@1``): it has its size."""
    return index.split("@", 1)[0]


#: the statement part of a count that lowering made (``k#_`` for ``sum_k(c)``): the statement's
#: own number replaces it once the statement is checked (``k#3``), with k's axes as its size
LOWERED = "_"


def lowered_count(letter: str) -> str:
    """The count of ``letter``'s dimension as a reduction of a constant makes it (``k#_``): a
    count is never renamed apart to a letter of another dimension (``sum_k(c) x_k``)."""
    return f"{letter}{COUNT_MARK}{LOWERED}"


def is_lowered_count(index: str) -> bool:
    return count_stem(index).endswith(COUNT_MARK + LOWERED)


def axis_count(letter: str, tensor: str, axis: int) -> str:
    """The count of axis ``axis`` of ``tensor``, printed with ``letter`` (``n#x.0``: x's length)."""
    return f"{letter}{COUNT_MARK}{tensor}.{axis}"


def counted_axis(index: str) -> tuple[str, int] | None:
    """The axis ``(tensor, axis)`` that the count ``index`` counts, where its name says
    (:func:`axis_count`); else None."""
    statement = count_stem(index).split(COUNT_MARK, 1)[1] if is_count(index) else ""
    tensor, dot, axis = statement.rpartition(".")
    return (tensor, int(axis)) if dot and tensor and axis.isdigit() else None


def count_letter(index: str) -> str:
    """The letter a count prints with (``i`` for ``i#2``)."""
    return index.split(COUNT_MARK, 1)[0]


def count_is_written(index: str) -> bool:
    """Whether the user wrote the count's letter (``i#2``), rather than lowering (``j#2#``)."""
    return not count_stem(index).endswith(COUNT_MARK)


def fresh_indices(count: int, avoid: set[str] | frozenset[str]) -> Indices:
    """``count`` index names not in ``avoid``: i, j, k, ... then i1, j1, ..."""
    out: list[str] = []
    suffix = 0
    reserved = _RESERVED.get()
    while len(out) < count:
        for letter in _FRESH_POOL:
            name = letter if suffix == 0 else f"{letter}{suffix}"
            if name not in avoid and name not in out and name not in reserved:
                out.append(name)
                if len(out) == count:
                    break
        suffix += 1
    return tuple(out)
