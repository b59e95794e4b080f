"""``canonical_key``: equal for two terms exactly when they differ only by the names of summed
indices and the order of factors.  Checked against a brute-force reference (every bijection of
the summed letters, every matching of factors) over generated terms: the optimiser and the
simplifier find like terms and shared work by it, so a key that told apart two equal products
would lose a merge, and one that joined two different products would compute a wrong value."""

from __future__ import annotations

import itertools
import os
import random
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einderiv.ir import Delta, Tensor
from einderiv.normal import Apply, Poly, Term, canonical_key, make_delta

EXAMPLES = int(os.environ.get("EINDERIV_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RANKS = {"A": 2, "B": 2, "x": 1, "T": 3}
LETTERS = "ijkm"
FREE = frozenset("ij")


def _atom(kind: str, letters: tuple[str, ...]):
    if kind == "delta":
        return make_delta(letters[0], letters[1])
    if kind == "tanh":  # an elementwise call over two indices, whose order is immaterial
        return Apply("tanh", Poly((Term(Fraction(1), (Tensor("A", letters[:2]),)),), letters[:2]))
    return Tensor(kind, letters[: RANKS[kind]])


atoms = st.tuples(
    st.sampled_from([*RANKS, "delta", "tanh"]), st.lists(st.sampled_from(LETTERS), min_size=3, max_size=3)
).map(lambda pair: _atom(pair[0], tuple(pair[1])))
terms = st.lists(atoms, min_size=1, max_size=5).map(lambda factors: Term(Fraction(1), tuple(factors)))


def _renamed(atom, mapping: dict[str, str]):
    """An atom renamed, as comparable text (sorted, never a set: a set's repr follows the hash seed)."""
    if isinstance(atom, Apply):
        inner = atom.arg.terms[0].factors[0]
        return ("tanh", _renamed(inner, mapping))
    if isinstance(atom, Tensor):
        return ("tensor", atom.name, tuple(mapping.get(i, i) for i in atom.indices))
    return ("delta", tuple(sorted(mapping.get(i, i) for i in atom.indices)))


def _summed(term: Term) -> list[str]:
    """The summed letters a name may change for: not those only deltas carry (``delta_kk`` is
    k's length, and a key keeps the letter that sizes it)."""
    carried = {i for f in term.factors if not isinstance(f, Delta) for i in f.indices}
    return sorted({i for f in term.factors for i in f.indices} - FREE & carried)


def brute_force_alike(a: Term, b: Term) -> bool:
    """Whether some bijection of a's summed letters onto b's maps a's factors onto b's (as a
    multiset; a call's and a delta's indices unordered)."""
    mine, theirs = _summed(a), _summed(b)
    if len(mine) != len(theirs) or len(a.factors) != len(b.factors):
        return False
    if {i for f in a.factors for i in f.indices} - set(mine) != {i for f in b.factors for i in f.indices} - set(theirs):
        return False
    target = sorted(map(repr, (_renamed(f, {}) for f in b.factors)))
    for image in itertools.permutations(theirs):
        mapping = dict(zip(mine, image))
        if sorted(map(repr, (_renamed(f, mapping) for f in a.factors))) == target:
            return True
    return False


def _shuffled(term: Term, seed: int) -> Term:
    """``term`` with its factors in another order and its summed letters renamed (to fresh ones)."""
    rng = random.Random(seed)
    summed = _summed(term)
    fresh = rng.sample(["p", "q", "r", "t", "u", "v"], len(summed))
    mapping = dict(zip(summed, fresh))
    factors = list(term.factors)
    rng.shuffle(factors)
    out = []
    for f in factors:
        if isinstance(f, Apply):
            inner = f.arg.terms[0].factors[0]
            letters = tuple(mapping.get(i, i) for i in inner.indices)
            out.append(_atom("tanh", letters + ("i",)))
        elif isinstance(f, Tensor):
            out.append(Tensor(f.name, tuple(mapping.get(i, i) for i in f.indices)))
        else:
            out.append(make_delta(*(mapping.get(i, i) for i in (f.first, f.second))))
    return Term(term.coeff, tuple(out))


@SETTINGS
@given(terms, st.integers(0, 10**6))
def test_a_term_renamed_and_reordered_has_its_key(term, seed):
    assert canonical_key(_shuffled(term, seed), FREE) == canonical_key(term, FREE)


@SETTINGS
@given(terms, terms)
def test_keys_are_equal_exactly_when_the_terms_are_alike(a, b):
    assert (canonical_key(a, FREE) == canonical_key(b, FREE)) == brute_force_alike(a, b), (a, b)


def test_factors_told_apart_by_what_their_summed_letters_meet():
    """Two X's of one look (``X_na X_nb``) differ by what a and b meet (W2_ab's two axes): the
    key tries fewer orders, and still joins the products that are alike."""
    X = "X"
    first = Term(
        Fraction(1), (Tensor(X, ("n", "a")), Tensor(X, ("n", "b")), Tensor("W", ("a", "b")), Tensor("u", ("b",)))
    )
    second = Term(
        Fraction(1), (Tensor("u", ("c",)), Tensor("W", ("d", "c")), Tensor(X, ("m", "c")), Tensor(X, ("m", "d")))
    )
    third = Term(
        Fraction(1), (Tensor("u", ("d",)), Tensor("W", ("d", "c")), Tensor(X, ("m", "c")), Tensor(X, ("m", "d")))
    )
    assert canonical_key(first, frozenset()) == canonical_key(second, frozenset())
    assert canonical_key(first, frozenset()) != canonical_key(third, frozenset())  # u on W's first axis
    assert brute_force_alike(first, second) and not brute_force_alike(first, third)


def test_a_delta_between_summed_letters_has_no_order():
    """A delta's letters are stored in name order, so ``delta_km tanh(A_km)`` named k first and
    ``delta_pt tanh(A_tp)`` named p first: two keys for one product (a property test's find)."""

    def term(a: str, b: str) -> Term:
        return Term(Fraction(1), (make_delta(a, b), _atom("tanh", (a, b))))

    assert canonical_key(term("k", "m"), FREE) == canonical_key(term("t", "p"), FREE)
    assert brute_force_alike(term("k", "m"), term("t", "p"))
