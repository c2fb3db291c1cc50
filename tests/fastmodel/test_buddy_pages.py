"""fastmodel's lazy page_state, and the chunked, vectorised checkers that read it.

``fastmodel.buddy_pages`` derives each struct page field from a compact copy for the range
asked for, and ``invariants/buddy.py`` walks page_state a chunk at a time and works on
arrays of the view's lists and the ledger.  Both are exact only if every chunk boundary,
every block crossing one and every narrow-dtype shortcut is right; these tests shrink the
chunks to a few pages so that a small machine has hundreds of boundaries, and compare with
refmodel and with hand-made faults.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import numpy as np
import pytest

from fastmodel import FastBuddy, buddy_pages
from invariants import snapshot as snapshot_module
from invariants.ledger import Held, HeldArrays, Ledger
from invariants.registry import checks_for
from invariants.snapshot import BuddySnapshot
from refmodel.buddy import RefBuddy
from specs import gfp
from specs.buddy import PageAllocator, PageState
from specs.machine import preset

MASKS = (gfp.GFP_KERNEL, gfp.GFP_HIGHUSER_MOVABLE, gfp.GFP_KERNEL | gfp.__GFP_COMP,
         gfp.GFP_ATOMIC | gfp.__GFP_COMP, gfp.GFP_TEMPORARY, gfp.GFP_DMA32 | gfp.GFP_KERNEL)


def churn(impls: list[PageAllocator], seed: int, steps: int = 600) -> Ledger:
    """The same random allocations and frees on each implementation; the caller's ledger."""
    rng = random.Random(seed)
    ledger = Ledger()
    for _ in range(steps):
        if ledger.held and rng.random() < 0.4:
            pfn = rng.choice(sorted(ledger.held))
            order = ledger.held[pfn].order
            assert {impl.free_pages(pfn, order, 1) for impl in impls} == {0}
            ledger.on_put(pfn)
        else:
            mask, order = rng.choice(MASKS), rng.choice((0, 0, 0, 1, 2, 3, 5, 9))
            cpu = rng.randrange(2)
            results = {impl.alloc_pages(mask, order, cpu) for impl in impls}
            assert len(results) == 1
            got = results.pop()
            if got is not None:
                ledger.on_alloc(got, order, bool(order and mask & gfp.__GFP_COMP))
    return ledger


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 96 pages: not a power of two, so blocks of every order cross boundaries."""
    monkeypatch.setattr(snapshot_module, "CHUNK_PAGES", 96)
    monkeypatch.setattr(buddy_pages, "CHUNK", 96)


@pytest.mark.usefixtures("small_chunks")
def test_fields_equal_refmodel_whole_sliced_and_indexed() -> None:
    """Every field, read whole, by any slice, by index and by iteration, is refmodel's."""
    ref, fast = RefBuddy(preset("tiny")), FastBuddy(preset("tiny"))
    churn([ref, fast], seed=1)
    expected, actual = ref.page_state(), fast.page_state()
    rng = random.Random(2)
    for field in attrs.fields(PageState):
        want = np.asarray(getattr(expected, field.name))
        got = getattr(actual, field.name)
        assert np.array_equal(want, np.asarray(got)), field.name
        assert len(want) == len(got)
        for _ in range(50):
            lo = rng.randrange(len(want))
            hi = rng.randrange(lo, len(want) + 1)
            assert np.array_equal(want[lo:hi], np.asarray(got[lo:hi])), (field.name, lo, hi)
            assert want[lo] == got[lo]
        assert want[-1] == got[-1]
        assert np.array_equal(want[::7], np.asarray(got[::7]))
        assert list(want) == list(got)
    with pytest.raises(IndexError):
        actual.refcount[len(expected.refcount)]


def test_counts_above_one_byte_are_kept() -> None:
    """A page with more references than a byte holds still shows its exact count."""
    fast = FastBuddy(preset("tiny"))
    pfn = fast.alloc_pages(gfp.GFP_KERNEL, 0)
    assert pfn is not None
    for _ in range(300):
        assert fast.get_page(pfn) == 0
    state = fast.page_state()
    assert state.refcount[pfn] == 301
    assert np.asarray(state.refcount).dtype == np.int32


def test_a_snapshot_is_a_copy() -> None:
    """Fields read after later operations still show the state at page_state()."""
    fast = FastBuddy(preset("tiny"))
    state = fast.page_state()
    before = [np.asarray(getattr(state, field.name)).copy() for field in attrs.fields(PageState)]
    churn([fast], seed=3, steps=200)
    after = [np.asarray(getattr(state, field.name)) for field in attrs.fields(PageState)]
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def state_checks() -> list:  # type: ignore[type-arg]
    return [check for check in checks_for("buddy") if check.kind.value == "state"]


def problems(snap: BuddySnapshot) -> dict[str, list[str]]:
    found = {check.id: list(check.fn(snap)) for check in state_checks()}
    return {check_id: lines for check_id, lines in found.items() if lines}


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("seed", [4, 5])
def test_checkers_pass_both_models_with_either_ledger(seed: int) -> None:
    """No checker reports anything on a correct allocator, whichever ledger form it reads."""
    ref, fast = RefBuddy(preset("tiny")), FastBuddy(preset("tiny"))
    ledger = churn([ref, fast], seed=seed)
    held = ledger.arrays()
    packed = Ledger.from_arrays(held.heads, held.orders, held.compound)
    assert packed.nr_pages() == ledger.nr_pages()
    for impl in (ref, fast):
        for book in (ledger, packed):
            assert problems(BuddySnapshot(impl=impl, view=impl.view(), ledger=book)) == {}


def test_array_ledger_reads_as_a_dict_on_demand() -> None:
    """A ledger built from arrays answers like the dict one and can then be updated."""
    ledger = Ledger.from_arrays([8, 0, 16], [3, 0, 2], [True, False, False])
    assert ledger.count() == 3
    assert ledger.nr_pages() == 13
    assert sorted(ledger.blocks()) == [(0, 0), (8, 3), (16, 2)]
    assert ledger.owner(13) == 8
    assert ledger.held[8] == Held(order=3, refs=1, compound=True)
    ledger.on_alloc(32, 1, False)
    assert ledger.count() == 4
    assert ledger.arrays().heads.size == 4
    assert ledger == Ledger(dict(ledger.held))


@attrs.define
class Faulty:
    """A correct allocator whose page_state has one field replaced."""

    inner: PageAllocator
    field: str
    values: np.ndarray

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def page_state(self) -> PageState:
        changed: dict[str, Any] = {self.field: self.values}
        return attrs.evolve(self.inner.page_state(), **changed)


def faulty_snapshot(field: str, change: dict[int, int]) -> tuple[BuddySnapshot, Ledger]:
    fast = FastBuddy(preset("tiny"))
    ledger = churn([fast], seed=6)
    values = np.array(np.asarray(getattr(fast.page_state(), field)))
    for pfn, value in change.items():
        values[pfn] = value
    impl = Faulty(fast, field, values)
    return BuddySnapshot(impl=impl, view=fast.view(), ledger=ledger), ledger  # type: ignore[arg-type]


def free_tail(snap: BuddySnapshot) -> int:
    """A pfn inside (not at the head of) some free block of order >= 2."""
    free = snap.free
    big = np.flatnonzero(free.order >= 2)
    return int(free.pfn[big[-1]]) + 3


@pytest.mark.usefixtures("small_chunks")
def test_page_faults_are_found_at_their_pfn() -> None:
    """BUDDY-I9 and BUDDY-I12 name the pfn of a single corrupted page, wherever it falls."""
    fast = FastBuddy(preset("tiny"))
    churn([fast], seed=6)  # the same state faulty_snapshot builds
    tail = free_tail(BuddySnapshot(impl=fast, view=fast.view(), ledger=None))
    snap, ledger = faulty_snapshot("refcount", {tail: 1})
    found = problems(snap)
    assert list(found) == ["BUDDY-I9"]
    assert f"pfn {tail:#x}: free or pcp page with a reference" in found["BUDDY-I9"][0]

    compound = [(pfn, h.order) for pfn, h in ledger.held.items() if h.compound]
    head, order = compound[-1]
    snap, _ = faulty_snapshot("compound_head", {head + (1 << order) - 1: -1})
    assert problems(snap) == {"BUDDY-I12": [
        f"held compound block {head:#x} has tails not pointing at it"]}
    snap, _ = faulty_snapshot("compound_head", {tail: head})
    assert problems(snap)["BUDDY-I12"] == [
        f"pfn {tail:#x} claims compound head {head:#x}, which is not a held compound block "
        f"containing it"]
    snap, _ = faulty_snapshot("flags", {tail: 1 << 14})
    assert problems(snap)["BUDDY-I12"] == [
        f"pfn {tail:#x} has PG_head but is not a held compound head"]


def test_no_ledger_means_no_held_blocks() -> None:
    """A snapshot without a ledger holds no blocks: empty arrays, not an error."""
    fast = FastBuddy(preset("tiny"))
    held = BuddySnapshot(impl=fast, view=fast.view(), ledger=None).held
    assert isinstance(held, HeldArrays)
    assert held.heads.size == 0
