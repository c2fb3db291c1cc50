"""Differential tests: ``fastmodel.FastBuddy`` against ``refmodel.RefBuddy``, call by call.

Both models boot the same machine and receive the same operations, well-formed and not: every
result, every ``view()``, the ``page()`` of every pfn an operation touched, and (every few
steps) the whole ``page_state()`` must be equal.  Operations come from seeded
``random.Random`` streams that alternate between filling memory (so allocations fail and the
watermarks, fallback, stealing, highatomic reserves and fair batches all come into play) and
draining it, and from Hypothesis-generated operation lists.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmodel import FastBuddy
from refmodel.buddy import RefBuddy
from specs import gfp
from specs.buddy import ALL_CAPABILITIES, BuddyView, PageAllocator, PageState
from specs.machine import MAX_ORDER, MachineConfig, preset

#: The composite masks kernel callers use, each modifier the allocator tests, and misuse.
GFP_MASKS: tuple[int, ...] = (
    gfp.GFP_KERNEL,
    gfp.GFP_ATOMIC,
    gfp.GFP_HIGHUSER_MOVABLE,
    gfp.GFP_TEMPORARY,
    gfp.GFP_DMA | gfp.GFP_KERNEL,
    gfp.GFP_DMA32 | gfp.GFP_KERNEL,
    gfp.GFP_KERNEL | gfp.__GFP_COMP,
    gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_COMP,
    gfp.GFP_ATOMIC | gfp.__GFP_COMP,
    gfp.GFP_KERNEL | gfp.__GFP_COLD,
    gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_COLD,
    gfp.GFP_KERNEL | gfp.__GFP_NOWARN,
    gfp.GFP_ATOMIC | gfp.__GFP_NOWARN,
    gfp.GFP_KERNEL | gfp.__GFP_HIGH,
    gfp.GFP_KERNEL | gfp.__GFP_MEMALLOC,
    gfp.GFP_ATOMIC | gfp.__GFP_MEMALLOC | gfp.__GFP_NOMEMALLOC,
    gfp.GFP_KERNEL | gfp.__GFP_NOFAIL,
    gfp.GFP_NOWAIT | gfp.__GFP_NOFAIL,  # __GFP_NOFAIL without direct reclaim
    gfp.GFP_KERNEL | gfp.__GFP_NORETRY,
    gfp.GFP_NOWAIT,
    gfp.GFP_NOWAIT | gfp.__GFP_COMP,
    gfp.GFP_TRANSHUGE,
    gfp.GFP_ATOMIC | gfp.__GFP_DIRECT_RECLAIM,
    gfp.GFP_DMA | gfp.GFP_ATOMIC,
    gfp.GFP_KERNEL | gfp.__GFP_MOVABLE | gfp.__GFP_RECLAIMABLE,  # migratetype_bad
    gfp.__GFP_DMA | gfp.__GFP_DMA32,  # gfp_zone_bad
    gfp.__GFP_HIGHMEM | gfp.GFP_KERNEL,
    0,
)

#: Orders the operations draw from: mostly small, some large, some invalid.
ORDERS: tuple[int, ...] = (0,) * 10 + (1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 10, -1, 11, 12)
#: Orders while filling memory: small enough that memory runs down to the watermarks.
FILL_ORDERS: tuple[int, ...] = (0, 0, 1, 2, 3, 4, 5, 6, 7)
#: Orders while squeezing: mostly order 0, and high orders that make atomic callers reserve.
SQUEEZE_ORDERS: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 9)
#: Masks that may go below the min watermark, or dip into the highatomic reserves.
SQUEEZE_MASKS: tuple[int, ...] = (
    gfp.GFP_ATOMIC,
    gfp.GFP_ATOMIC | gfp.__GFP_COMP,
    gfp.GFP_ATOMIC | gfp.__GFP_NOWARN,
    gfp.GFP_KERNEL | gfp.__GFP_HIGH,
    gfp.GFP_KERNEL | gfp.__GFP_MEMALLOC,
    gfp.GFP_KERNEL | gfp.__GFP_NOFAIL,
    gfp.GFP_NOWAIT,
    gfp.GFP_DMA | gfp.GFP_ATOMIC,
)
#: Machines whose zone boundaries are not pageblock-aligned, whose memory is not a multiple of
#: the largest block, or whose DMA zone is empty, so buddies fall off the end of memory,
#: pageblocks straddle zones and zonelists can be empty.
ODD_MACHINES: dict[str, MachineConfig] = {
    "unaligned": MachineConfig(name="unaligned", nr_pages=5000, nr_cpus=3, dma_end_pfn=1000,
                               dma32_end_pfn=2600, percpu_pagelist_fraction=100),
    "nodma": MachineConfig(name="nodma", nr_pages=3072 + 200, nr_cpus=2, dma_end_pfn=0,
                           dma32_end_pfn=2048, pcp_batch_override=1),
}
PHASES: tuple[str, ...] = ("fill", "fill", "squeeze", "squeeze", "mixed", "drain", "fill",
                           "squeeze", "mixed", "drain")


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------

# An operation is (kind, a, b, c): kinds ending in "_held" pick a block the caller holds
# (a selects it, modulo the number held), so most calls are well-formed; "_raw" kinds use a
# as a pfn straight away, so most are misuse.  b and c are kind-specific.
Op = tuple[str, int, int, int]


@attrs.define
class Lockstep:
    """The two models, the caller's record of held blocks, and recently freed blocks."""

    config: MachineConfig
    ref: RefBuddy
    fast: FastBuddy
    #: head pfn -> order of every block the caller holds (from the reference model's results)
    held: dict[int, int] = attrs.field(factory=dict)
    #: the held heads of each order, and each head's index there, for O(1) picks and removal
    by_order: list[list[int]] = attrs.field(factory=lambda: [[] for _ in range(MAX_ORDER)])
    slot: dict[int, int] = attrs.field(factory=dict)
    freed: list[tuple[int, int]] = attrs.field(factory=list)

    @classmethod
    def boot(cls, name: str) -> Lockstep:
        """Boot both models on one preset (or one of ODD_MACHINES)."""
        config = ODD_MACHINES[name] if name in ODD_MACHINES else preset(name)
        return cls(config=config, ref=RefBuddy(config), fast=FastBuddy(config))

    def _hold(self, head: int, order: int) -> None:
        self.held[head] = order
        heads = self.by_order[order]
        self.slot[head] = len(heads)
        heads.append(head)

    def _release(self, head: int) -> None:
        heads = self.by_order[self.held.pop(head)]
        index = self.slot.pop(head)
        last = heads.pop()
        if last != head:
            heads[index] = last
            self.slot[last] = index

    def _owner(self, pfn: int) -> int | None:
        """Head of the held block containing pfn (blocks are aligned to their size)."""
        for order in range(MAX_ORDER):
            head = pfn & ~((1 << order) - 1)
            if self.held.get(head) == order:
                return head
        return None

    def _pick(self, selector: int) -> tuple[int, int] | None:
        # An order first, then a block of it: the pages of a split block do not crowd out
        # everything else.
        orders = [order for order, heads in enumerate(self.by_order) if heads]
        if not orders:
            return None
        heads = self.by_order[orders[selector % len(orders)]]
        head = heads[(selector // len(orders)) % len(heads)]
        return head, self.held[head]

    def resolve(self, op: Op) -> tuple[str, tuple[int, ...]]:
        """The method call an operation stands for, given what is held now."""
        kind, a, b, c = op
        nr_cpus = self.config.nr_cpus
        if kind == "alloc":
            return "alloc_pages", (a, b, c)
        if kind == "drain":
            return "drain_pages", (a,)
        if kind == "free_raw":
            return "free_pages", (a, b, c)
        if kind == "get_raw":
            return "get_page", (a,)
        if kind == "put_raw":
            return "put_page", (a, c)
        if kind == "split_raw":
            return "split_page", (a, b)
        if kind == "free_stale" and self.freed:
            pfn, order = self.freed[a % len(self.freed)]
            return "free_pages", (pfn, order, c % nr_cpus)
        picked = self._pick(a)
        if picked is None:
            return "get_page", (a % (self.config.nr_pages + 2) - 1,)
        head, order = picked
        if kind == "free_held":
            return "free_pages", (head, order + b, c)
        if kind == "get_held":
            return "get_page", (head + b % (1 << order),)
        if kind == "put_held":
            return "put_page", (head + b % (1 << order), c)
        if kind == "split_held":
            return "split_page", (head, order + b)
        return "drain_pages", (c,)

    def record(self, name: str, args: tuple[int, ...], result: Any) -> None:
        """Update the held record from the reference model's result."""
        if name == "alloc_pages":
            if result is not None:
                self._hold(result, args[1])
            return
        if result != 0 or name == "drain_pages":
            return
        if name == "split_page":
            head, order = args
            if self.held.get(head) == order:
                self._release(head)
                for pfn in range(head, head + (1 << order)):
                    self._hold(pfn, 0)
            return
        # get/put/free: the block lives on while its head has references.
        owner = self._owner(args[0])
        if owner is not None:
            info = self.ref.page(owner)
            assert info is not None
            if info.refcount == 0:
                self.freed.append((owner, self.held[owner]))
                del self.freed[:-32]
                self._release(owner)

    def touched(self, args: tuple[int, ...], result: Any) -> set[int]:
        """Pfns worth a page() comparison after this call: its arguments, the block it
        returned, their neighbours and buddies, and a few of memory's edges."""
        nr_pages = self.config.nr_pages
        pfns = {0, nr_pages - 1, nr_pages, -1}
        for value in (*args, result):
            if isinstance(value, int) and 0 <= value < nr_pages:
                pfns.update({value, value + 1, value - 1, value ^ 1, value ^ 2, value ^ 512})
        return pfns


def call(pair: Lockstep, name: str, args: tuple[int, ...]) -> tuple[Any, Any]:
    """Make one call on both models; (reference result, fast result)."""
    expected = getattr(pair.ref, name)(*args)
    actual = getattr(pair.fast, name)(*args)
    return expected, actual


def page_state_key(state: PageState) -> tuple[bytes, ...]:
    """Every field as int64 bytes, so snapshots compare element-wise with ==."""
    return tuple(np.asarray(getattr(state, field.name), dtype=np.int64).tobytes()
                 for field in attrs.fields(PageState))


def page_state_difference(expected: PageState, actual: PageState) -> str:
    """The first pfn where two page states differ, per field."""
    problems = []
    for field in attrs.fields(PageState):
        want = np.asarray(getattr(expected, field.name), dtype=np.int64)
        got = np.asarray(getattr(actual, field.name), dtype=np.int64)
        if want.shape != got.shape:
            problems.append(f"{field.name}: shape {want.shape} != {got.shape}")
            continue
        bad = np.flatnonzero(want != got)
        if bad.size:
            pfn = int(bad[0])
            problems.append(f"{field.name}[{pfn}]: expected {want[pfn]}, got {got[pfn]} "
                            f"({bad.size} differ)")
    return "; ".join(problems)


def view_difference(expected: BuddyView, actual: BuddyView) -> str:
    """The first view field that differs, zone by zone."""
    for name in ("nr_pages", "nr_cpus", "alloc_warnings"):
        if getattr(expected, name) != getattr(actual, name):
            return f"{name}: expected {getattr(expected, name)}, got {getattr(actual, name)}"
    for want, got in zip(expected.zones, actual.zones, strict=True):
        for field in attrs.fields(type(want)):
            wanted, gotten = getattr(want, field.name), getattr(got, field.name)
            if wanted != gotten:
                return (f"zone {want.name} {field.name}: "
                        f"expected {wanted!r:.600}, got {gotten!r:.600}")
    return "views differ"


def run_lockstep(pair: Lockstep, ops: list[Op], page_state_every: int,
                 view_every: int = 1) -> None:
    """Apply ops to both models, asserting identical results and state after each (views
    every view_every steps: fewer views let changes pile up between two of them)."""
    for step, op in enumerate(ops):
        name, args = pair.resolve(op)
        expected, actual = call(pair, name, args)
        assert expected == actual, f"step {step}: {name}{args}: ref {expected}, fast {actual}"
        pair.record(name, args, expected)
        if step % view_every == 0 or step == len(ops) - 1:
            expected_view, actual_view = pair.ref.view(), pair.fast.view()
            assert expected_view == actual_view, (
                f"step {step}: after {name}{args}: "
                f"{view_difference(expected_view, actual_view)}")
        for pfn in sorted(pair.touched(args, expected)):
            expected_page, actual_page = pair.ref.page(pfn), pair.fast.page(pfn)
            assert expected_page == actual_page, f"step {step}: after {name}{args}: page {pfn}"
        if step % page_state_every == 0 or step == len(ops) - 1:
            assert_page_states_equal(pair, f"step {step}: after {name}{args}")


def assert_page_states_equal(pair: Lockstep, where: str) -> None:
    """Compare the whole of page_state()."""
    expected_state, actual_state = pair.ref.page_state(), pair.fast.page_state()
    expected, actual = page_state_key(expected_state), page_state_key(actual_state)
    assert expected == actual, f"{where}: {page_state_difference(expected_state, actual_state)}"


def random_ops(rng: random.Random, config: MachineConfig, count: int,
               phase_length: int) -> list[Op]:
    """A seeded operation stream in phases: fill (mostly allocations), squeeze (allocations
    that may dig into the reserves: atomic, __GFP_HIGH, __GFP_MEMALLOC, __GFP_NOFAIL), drain
    (mostly frees and puts) and mixed, each with a sprinkling of misuse."""
    nr_cpus, nr_pages = config.nr_cpus, config.nr_pages
    fill_orders = FILL_ORDERS + ((7, 8, 9, 10) if nr_pages > 8192 else ())
    ops: list[Op] = []
    for step in range(count):
        phase = PHASES[(step // phase_length) % len(PHASES)]
        alloc_share = {"fill": 0.9, "squeeze": 0.9, "mixed": 0.5, "drain": 0.1}[phase]
        cpu = rng.randrange(nr_cpus) if rng.random() < 0.97 else rng.choice((-1, nr_cpus))
        if rng.random() < alloc_share:
            roll = rng.random()
            if phase == "squeeze" and roll < 0.7:
                mask = rng.choice(SQUEEZE_MASKS)
            elif roll < 0.92:
                mask = rng.choice(GFP_MASKS)
            elif roll < 0.98:
                mask = rng.getrandbits(26)
            else:
                mask = rng.choice((-1, 1 << 26, rng.getrandbits(40), -rng.getrandbits(30)))
            if phase in ("fill", "squeeze") and rng.random() < 0.9:
                order = rng.choice(fill_orders if phase == "fill" else SQUEEZE_ORDERS)
            else:
                order = rng.choice(ORDERS)
            ops.append(("alloc", mask, order, cpu))
            continue
        roll = rng.random()
        if roll < 0.55:
            delta = 0 if rng.random() < 0.93 else rng.choice((-1, 1, 2, -20, 20))
            ops.append(("free_held", rng.getrandbits(30), delta, cpu))
        elif roll < 0.65:
            ops.append(("put_held", rng.getrandbits(30), rng.getrandbits(10), cpu))
        elif roll < 0.73:
            ops.append(("get_held", rng.getrandbits(30), rng.getrandbits(10), cpu))
        elif roll < 0.78:
            delta = 0 if rng.random() < 0.8 else rng.choice((-1, 1, 20))
            ops.append(("split_held", rng.getrandbits(30), delta, cpu))
        elif roll < 0.82:
            ops.append(("free_stale", rng.getrandbits(30), 0, cpu))
        elif roll < 0.87:
            ops.append(("drain", rng.randrange(-1, nr_cpus + 1), 0, cpu))
        else:
            pfn = rng.choice((rng.randrange(nr_pages), rng.randrange(nr_pages),
                              -1, nr_pages, nr_pages + 7, 1 << 40))
            kind = rng.choice(("free_raw", "get_raw", "put_raw", "split_raw"))
            ops.append((kind, pfn, rng.randrange(-2, MAX_ORDER + 2), cpu))
    return ops


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_fastmodel_satisfies_the_contract() -> None:
    """FastBuddy is a PageAllocator and declares every capability, as RefBuddy does."""
    fast = FastBuddy(preset("tiny"))
    expected, actual = (True, ALL_CAPABILITIES), (isinstance(fast, PageAllocator),
                                                  fast.capabilities)
    assert expected == actual


def test_fastmodel_does_not_import_refmodel() -> None:
    """Importing and booting fastmodel loads no refmodel module: the models stay independent."""
    code = ("import sys, fastmodel; from specs.machine import preset; "
            "fastmodel.FastBuddy(preset('tiny')); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'refmodel'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    expected, actual = "[]", out.stdout.strip()
    assert expected == actual


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_boot_state_is_identical(name: str) -> None:
    """Booting the same machine gives equal views and equal page state."""
    pair = Lockstep.boot(name)
    expected, actual = pair.ref.view(), pair.fast.view()
    assert expected == actual
    assert_page_states_equal(pair, "after boot")


@pytest.mark.slow
def test_boot_state_is_identical_large() -> None:
    """Booting the 4M-page preset gives equal views and equal page state."""
    pair = Lockstep.boot("large")
    expected, actual = pair.ref.view(), pair.fast.view()
    assert expected == actual
    assert_page_states_equal(pair, "after boot")


@pytest.mark.parametrize("seed", range(8))
def test_random_sequences_tiny(seed: int) -> None:
    """Seeded fill/drain sequences on tiny give identical results and state at every step."""
    pair = Lockstep.boot("tiny")
    ops = random_ops(random.Random(seed), pair.config, count=3000, phase_length=150)
    run_lockstep(pair, ops, page_state_every=7)


@pytest.mark.parametrize("view_every", [5, 23])
def test_random_sequences_sparse_views(view_every: int) -> None:
    """With views taken only every few steps, the views still agree: a view cache must notice
    every change made since the last view, not just the last step's."""
    pair = Lockstep.boot("tiny")
    ops = random_ops(random.Random(500 + view_every), pair.config, count=3000, phase_length=150)
    run_lockstep(pair, ops, page_state_every=50, view_every=view_every)


def test_view_sees_a_list_move_that_changes_no_counter() -> None:
    """Moving free blocks between migratetype lists (move_freepages_block, as stealing does)
    changes no counter; the next view must still show the lists' new order."""
    from fastmodel import buddy as fast_buddy
    from refmodel import buddy as ref_buddy

    pair = Lockstep.boot("tiny")
    before = pair.ref.view()
    assert before == pair.fast.view()
    for pfn in (0, 1536, 2560 + 512):  # one pageblock in each zone
        ref_zone = ref_buddy.page_zone(pair.ref.state, pfn)
        fast_zone = fast_buddy.page_zone(pair.fast.state, pfn)
        assert ref_zone is not None
        assert fast_zone is not None
        moved = (ref_buddy.move_freepages_block(pair.ref.state, ref_zone, pfn, 0),
                 fast_buddy.move_freepages_block(pair.fast.state, fast_zone, pfn, 0))
        assert moved[0] == moved[1]
    expected, actual = pair.ref.view(), pair.fast.view()
    assert expected != before
    assert expected == actual


def test_list_store_version_counts_every_change() -> None:
    """Every list_add, list_add_tail and list_del bumps the store's version; reading does not."""
    from fastmodel.pfnlist import ListStore

    store = ListStore()
    first, second = store.new_list(), store.new_list()
    versions = [store.version]
    changes: list[Callable[[], None]] = [
        lambda: first.add_head(5), lambda: first.add_tail(7), lambda: second.add_head(9),
        lambda: first.remove(5), lambda: store.unlink(9), lambda: second.add_tail(5)]
    for change in changes:
        change()
        versions.append(store.version)
    first.first(), first.last(), bool(second), list(first), first.to_tuple()
    versions.append(store.version)
    expected = [0, 1, 2, 3, 4, 5, 6, 6]
    actual = versions
    assert expected == actual
    expected_lists, actual_lists = ((7,), (5,)), (first.to_tuple(), tuple(second))
    assert expected_lists == actual_lists


@pytest.mark.parametrize("seed", range(3))
def test_random_sequences_small(seed: int) -> None:
    """Seeded fill/drain sequences on small give identical results and state at every step."""
    pair = Lockstep.boot("small")
    ops = random_ops(random.Random(1000 + seed), pair.config, count=6000, phase_length=500)
    run_lockstep(pair, ops, page_state_every=100)


@pytest.mark.parametrize("name", sorted(ODD_MACHINES))
def test_random_sequences_odd_geometry(name: str) -> None:
    """Seeded sequences on machines with unaligned zones and memory, or no DMA zone, give
    identical results and state at every step."""
    pair = Lockstep.boot(name)
    ops = random_ops(random.Random(name), pair.config, count=3000, phase_length=150)
    run_lockstep(pair, ops, page_state_every=7)


def test_reserves_under_pressure() -> None:
    """Running memory down with ordinary callers, then with callers that may go below the
    watermarks (__GFP_HIGH, atomic, __GFP_NOFAIL, __GFP_MEMALLOC), fails and succeeds at the
    same points in both models."""
    pair = Lockstep.boot("tiny")
    ops: list[Op] = [("alloc", gfp.GFP_KERNEL | gfp.__GFP_NOWARN, 0, step % 2)
                     for step in range(4200)]
    for mask in (gfp.GFP_KERNEL | gfp.__GFP_HIGH, gfp.GFP_KERNEL | gfp.__GFP_NOFAIL,
                 gfp.GFP_ATOMIC, gfp.GFP_KERNEL | gfp.__GFP_MEMALLOC, gfp.GFP_DMA | gfp.GFP_KERNEL):
        ops += [("alloc", mask, order, step % 2) for step in range(60) for order in (1, 0)]
    ops += [("drain", 0, 0, 0), ("drain", 1, 0, 0)]
    ops += [("free_held", step, 0, step % 2) for step in range(300)]
    run_lockstep(pair, ops, page_state_every=500)


OP_KINDS = ("alloc", "alloc", "alloc", "free_held", "free_held", "put_held", "get_held",
            "split_held", "free_stale", "drain", "free_raw", "get_raw", "put_raw", "split_raw")

op_strategy = st.one_of(
    st.tuples(st.just("alloc"),
              st.one_of(st.sampled_from(GFP_MASKS), st.integers(0, (1 << 26) - 1)),
              st.sampled_from(ORDERS), st.integers(-1, 2)),
    st.tuples(st.sampled_from(OP_KINDS[3:10]), st.integers(0, 1 << 20),
              st.sampled_from((0, 0, 0, 0, 1, -1, 3)), st.integers(-1, 2)),
    st.tuples(st.sampled_from(OP_KINDS[10:]), st.integers(-2, 4200),
              st.integers(-1, MAX_ORDER + 1), st.integers(-1, 2)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, max_size=200))
def test_hypothesis_op_lists_tiny(ops: list[Op]) -> None:
    """Any list of operations, well-formed or not, gives identical results and state on tiny."""
    pair = Lockstep.boot("tiny")
    run_lockstep(pair, ops, page_state_every=10)


def test_every_mask_until_exhaustion() -> None:
    """Allocating with each GFP mask until memory runs out fails at the same point, with the
    same warnings, watermark and reserve effects, in both models."""
    pair = Lockstep.boot("tiny")
    rng = random.Random(7)
    for mask in GFP_MASKS:
        ops: list[Op] = []
        for _ in range(60):
            ops.append(("alloc", mask, rng.choice((0, 0, 1, 2, 3, 5, 9)), rng.randrange(2)))
        ops += [("free_held", rng.getrandbits(30), 0, rng.randrange(2)) for _ in range(45)]
        run_lockstep(pair, ops, page_state_every=20)


def test_invalid_arguments_are_refused_identically() -> None:
    """Every kind of bad argument gets the same result from both models, before and after
    memory is in use, and leaves both in the same state."""
    pair = Lockstep.boot("tiny")
    nr_pages, nr_cpus = pair.config.nr_pages, pair.config.nr_cpus
    calls: list[tuple[str, tuple[int, ...]]] = [
        ("alloc_pages", (gfp.GFP_KERNEL, 0, -1)),
        ("alloc_pages", (gfp.GFP_KERNEL, 0, nr_cpus)),
        ("alloc_pages", (gfp.GFP_KERNEL, -1, 0)),
        ("alloc_pages", (gfp.GFP_KERNEL, MAX_ORDER, 0)),
        ("alloc_pages", (gfp.GFP_KERNEL | gfp.__GFP_MEMALLOC, 12, 0)),
        ("alloc_pages", (gfp.GFP_KERNEL | gfp.__GFP_NOFAIL, -3, 1)),
        ("alloc_pages", (gfp.__GFP_DMA | gfp.__GFP_HIGHMEM, 0, 0)),
        ("alloc_pages", (gfp.__GFP_MOVABLE | gfp.__GFP_RECLAIMABLE, 0, 0)),
        ("alloc_pages", (-1, 0, 0)),
        ("alloc_pages", ((1 << 40) | gfp.GFP_KERNEL, 0, 0)),
        ("free_pages", (0, 0, -1)),
        ("free_pages", (0, -1, 0)),
        ("free_pages", (0, MAX_ORDER, 0)),
        ("free_pages", (-1, 0, 0)),
        ("free_pages", (nr_pages, 0, 0)),
        ("free_pages", (3, 1, 0)),
        ("free_pages", (4, 2, 0)),
        ("get_page", (-1,)),
        ("get_page", (nr_pages,)),
        ("get_page", (5,)),
        ("put_page", (5, 0)),
        ("put_page", (5, -1)),
        ("put_page", (nr_pages, 0)),
        ("split_page", (5, 0)),
        ("split_page", (5, -1)),
        ("split_page", (5, MAX_ORDER)),
        ("split_page", (-1, 0)),
        ("drain_pages", (-1,)),
        ("drain_pages", (nr_cpus,)),
        ("drain_pages", (0,)),
    ]
    for name, args in calls:
        expected, actual = call(pair, name, args)
        assert expected == actual, f"fresh machine: {name}{args}"
    # Now with blocks held: compound, plain, split, and freed twice.
    compound, _ = call(pair, "alloc_pages", (gfp.GFP_KERNEL | gfp.__GFP_COMP, 3, 0))
    plain, _ = call(pair, "alloc_pages", (gfp.GFP_KERNEL, 2, 1))
    single, _ = call(pair, "alloc_pages", (gfp.GFP_HIGHUSER_MOVABLE, 0, 1))
    assert compound is not None
    assert plain is not None
    assert single is not None
    calls = [
        ("free_pages", (compound, 2, 0)),  # wrong order
        ("free_pages", (compound + 1, 0, 0)),  # a tail
        ("put_page", (plain, 0)),  # one page of a non-compound block
        ("split_page", (compound, 3)),  # compound
        ("split_page", (compound + 2, 0)),  # a tail
        ("split_page", (plain, 1)),  # wrong order
        ("get_page", (compound + 5,)),  # a tail: the head's count
        ("put_page", (compound + 6, 1)),
        ("get_page", (plain + 1,)),  # a page of a non-compound block
        ("get_page", (plain,)),
        ("free_pages", (plain, 0, 0)),  # count 2: no order check, just a reference
        ("free_pages", (plain, 0, 0)),  # count 1: now the order matters
        ("split_page", (plain, 2)),
        ("put_page", (plain + 3, 1)),
        ("put_page", (plain + 3, 1)),
        ("free_pages", (plain, 0, 1)),
        ("free_pages", (plain + 1, 0, 1)),
        ("free_pages", (plain + 2, 0, 0)),
        ("free_pages", (plain + 2, 0, 0)),  # double free
        ("put_page", (compound + 7, 0)),  # last reference: frees the compound page
        ("put_page", (compound, 0)),  # and again
        ("free_pages", (compound, 3, 0)),
        ("free_pages", (single, 0, 1)),
        ("free_pages", (single, 0, 1)),  # double free from the pcp list
        ("get_page", (single,)),
        ("split_page", (single, 0)),
        ("drain_pages", (1,)),
    ]
    for name, args in calls:
        expected, actual = call(pair, name, args)
        assert expected == actual, f"{name}{args}"
        expected_view, actual_view = pair.ref.view(), pair.fast.view()
        assert expected_view == actual_view, f"after {name}{args}"
        assert_page_states_equal(pair, f"after {name}{args}")


def test_snapshots_do_not_change() -> None:
    """A view and a page_state taken earlier are unchanged by later operations."""
    fast = FastBuddy(preset("tiny"))
    pfn = fast.alloc_pages(gfp.GFP_KERNEL | gfp.__GFP_COMP, 4)
    assert pfn is not None
    view, state = fast.view(), fast.page_state()
    expected = (view, page_state_key(state))
    fast.free_pages(pfn, 4)
    for order in (0, 0, 5, 1):
        fast.alloc_pages(gfp.GFP_HIGHUSER_MOVABLE, order, 1)
    fast.drain_pages(1)
    actual = (view, page_state_key(state))
    assert expected == actual
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(state.refcount)[0] = 5
