"""Differential tests: ``fastmodel.vma.FastAddressSpace`` against ``refmodel.vma.RefAddressSpace``.

Both models boot the same process and receive the same system calls, well-formed and not
(unaligned addresses, zero and huge lengths, unknown and conflicting flags, offsets past the
file, MAP_FIXED over what is mapped, ranges beyond TASK_SIZE, sysctl changes that bring the
map_count limit down): every result, every ``view()`` and ``find_vma`` at a drawn address must
be equal after every call.  The fast store is run with its default block size and with blocks
of two VMAs, so that block splits, block removal and the gap searches' block skipping happen
within a few dozen VMAs.  Targeted cases then fill the address space to
DEFAULT_MAX_MAP_COUNT VMAs and drive the limit, placement through 65,530 VMAs, and munmap and
mprotect across thousands of VMAs.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmodel import vma_store
from fastmodel.vma import FastAddressSpace
from refmodel.vma import RefAddressSpace
from specs.machine import PAGE_SIZE, MachineConfig, preset
from specs.vma import (
    DEFAULT_MAX_MAP_COUNT,
    DEFAULT_START_BRK,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_32BIT,
    MAP_32BIT_START,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_NONE,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
    TASK_SIZE,
    VM_DONTCOPY,
    AddressSpace,
    process_config,
)

Op = tuple[str, tuple[Any, ...]]

CONFIG: MachineConfig = preset("tiny")
MMAP_BASE = process_config(CONFIG).mmap_base
#: The window ordinary calls aim at: 96 pages ending 16 pages above mmap_base, where top-down
#: placements, hints and fixed mappings meet.
WINDOW = MMAP_BASE - 80 * PAGE_SIZE
WINDOW_PAGES = 96
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


#: The store's default block size, and blocks of two VMAs (split at three).
BLOCKS = pytest.mark.parametrize("block", [vma_store.BLOCK, 1], ids=["blocks", "blocks-of-2"])


@contextlib.contextmanager
def block_size(block: int) -> Iterator[None]:
    saved = vma_store.BLOCK
    vma_store.BLOCK = block
    try:
        yield
    finally:
        vma_store.BLOCK = saved


def boot(config: MachineConfig = CONFIG) -> tuple[RefAddressSpace, FastAddressSpace]:
    return RefAddressSpace(config), FastAddressSpace(config)


def same(ref: AddressSpace, fast: AddressSpace, name: str, args: tuple[Any, ...],
         probe: int | None = None, *, views: bool = True) -> Any:
    """Run one call on both; results, views and find_vma(probe) must agree."""
    want = getattr(ref, name)(*args)
    got = getattr(fast, name)(*args)
    assert got == want, f"{name}{args}: fast {got!r}, ref {want!r}"
    if views:
        ref_view, fast_view = ref.view(), fast.view()
        if fast_view.vmas != ref_view.vmas:
            diff = [(i, r, f) for i, (r, f) in enumerate(zip(ref_view.vmas, fast_view.vmas,
                                                             strict=False)) if r != f]
            raise AssertionError(f"after {name}{args}: VMAs differ, {len(ref_view.vmas)} ref "
                                 f"vs {len(fast_view.vmas)} fast, first {diff[:2]}")
        assert fast_view == ref_view, f"after {name}{args}: views differ"
    if probe is not None:
        assert fast.find_vma(probe) == ref.find_vma(probe), f"find_vma({probe:#x})"
    return want


# ---------------------------------------------------------------------------------------------
# Generated call sequences
# ---------------------------------------------------------------------------------------------

page = st.integers(0, WINDOW_PAGES)
addresses = st.one_of(
    page.map(lambda p: WINDOW + p * PAGE_SIZE),
    page.map(lambda p: WINDOW + p * PAGE_SIZE + 123),  # unaligned
    st.sampled_from([0, 1, PAGE_SIZE, DEFAULT_START_BRK, TASK_SIZE - PAGE_SIZE, TASK_SIZE,
                     1 << 47, 2**64 - PAGE_SIZE, -1]),
)
lengths = st.one_of(
    st.integers(1, 12).map(lambda n: n * PAGE_SIZE),
    st.integers(1, 12 * PAGE_SIZE),
    st.sampled_from([0, TASK_SIZE, 2**63, 2**64 - PAGE_SIZE, 2**64 - 1, -PAGE_SIZE]),
)
prots = st.one_of(
    st.sampled_from([0, PROT_READ, RW, PROT_READ | PROT_EXEC, RW | PROT_EXEC, PROT_WRITE]),
    st.sampled_from([PROT_SEM, PROT_GROWSDOWN | RW, PROT_GROWSUP | PROT_READ,
                     PROT_GROWSDOWN | PROT_GROWSUP, 0x10, 0x8000_0000]),
)
map_types = st.sampled_from([MAP_PRIVATE, MAP_PRIVATE, MAP_SHARED, 0, MAP_SHARED | MAP_PRIVATE])
map_extras = st.sampled_from([0, 0, 0, MAP_FIXED, MAP_FIXED, MAP_GROWSDOWN, MAP_NORESERVE,
                              MAP_LOCKED, MAP_32BIT, MAP_HUGETLB, MAP_HUGETLB | (21 << 26),
                              MAP_HUGETLB | (30 << 26), MAP_FIXED | MAP_NORESERVE,
                              0x4000_0000])
fds = st.sampled_from([3, 3, 4, 5, 6, -1, 99])
offsets = st.one_of(st.integers(0, 8).map(lambda n: n * PAGE_SIZE),
                    st.sampled_from([100, 2**64 - PAGE_SIZE]))

ops: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("mmap"), st.tuples(addresses, lengths, prots,
                                         st.builds(lambda t, e: t | e | MAP_ANONYMOUS,
                                                   map_types, map_extras))),
    st.tuples(st.just("mmap"), st.tuples(addresses, lengths, prots,
                                         st.builds(int.__or__, map_types, map_extras),
                                         fds, offsets)),
    st.tuples(st.just("munmap"), st.tuples(addresses, lengths)),
    st.tuples(st.just("mprotect"), st.tuples(addresses, lengths, prots)),
    st.tuples(st.just("mremap"), st.tuples(
        addresses, lengths, lengths,
        st.sampled_from([0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED, MREMAP_FIXED, 4]),
        addresses)),
    st.tuples(st.just("brk"), st.tuples(st.one_of(
        st.integers(0, 40).map(lambda n: DEFAULT_START_BRK + n * 1000),
        st.sampled_from([0, DEFAULT_START_BRK - 1, 2**64 - 1, MMAP_BASE])))),
    st.tuples(st.just("touch"), st.tuples(addresses, st.booleans())),
    st.tuples(st.just("madvise"), st.tuples(addresses, lengths, st.sampled_from(
        [MADV_DONTFORK, MADV_DONTFORK, MADV_DOFORK, MADV_DONTNEED, 0, 2**64 - 1]))),
    st.tuples(st.just("open_file"), st.tuples(st.sampled_from([0, 100, PAGE_SIZE, 5 * PAGE_SIZE,
                                                               -1]),
                                              st.sampled_from([0, 1, 2, 3]))),
    st.tuples(st.just("set_sysctl"), st.one_of(
        st.tuples(st.just("max_map_count"), st.sampled_from([3, 6, 12, 65530, -1])),
        st.tuples(st.just("overcommit_memory"), st.integers(0, 3)),
        st.tuples(st.sampled_from(["overcommit_ratio", "overcommit_kbytes", "bogus"]),
                  st.sampled_from([0, 1, 50, 4096])))),
)


@BLOCKS
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(ops, page), max_size=40))
def test_generated_sequences(block: int, calls: list[tuple[Op, int]]) -> None:
    """Hypothesis-generated calls, including bad input, agree call by call."""
    with block_size(block):
        ref, fast = boot()
        for (name, args), probe in calls:
            same(ref, fast, name, args, WINDOW + probe * PAGE_SIZE)


def random_call(rnd: random.Random) -> Op:
    """One call aimed at the window, biased towards mapping so that VMAs pile up."""
    def addr() -> int:
        return WINDOW + rnd.randrange(WINDOW_PAGES) * PAGE_SIZE

    def length() -> int:
        return rnd.randrange(1, 10) * PAGE_SIZE - rnd.choice([0, 0, 0, 1])

    prot = rnd.choice([0, PROT_READ, RW, PROT_READ | PROT_EXEC, RW, PROT_GROWSDOWN | RW])
    kind = rnd.randrange(11)
    if kind < 4:
        flags = rnd.choice([ANON, ANON, MAP_SHARED | MAP_ANONYMOUS, ANON | MAP_GROWSDOWN,
                            ANON | MAP_NORESERVE, ANON | MAP_LOCKED])
        if rnd.random() < 0.5:
            flags |= MAP_FIXED
        if rnd.random() < 0.2:
            return "mmap", (addr(), length(), prot, flags & ~MAP_ANONYMOUS, 3,
                            rnd.randrange(4) * PAGE_SIZE)
        return "mmap", (rnd.choice([0, addr()]), length(), prot, flags)
    if kind == 4:
        return "munmap", (addr(), length())
    if kind < 7:
        return "mprotect", (addr(), length(), prot)
    if kind == 7:
        return "mremap", (addr(), length(), length(), rnd.choice([0, 1, 3]), addr())
    if kind == 8:
        return "touch", (addr(), rnd.random() < 0.6)
    if kind == 10:
        return "madvise", (addr(), length() + rnd.choice([0, 0, 9 * PAGE_SIZE]),
                           rnd.choice([MADV_DONTFORK, MADV_DOFORK, MADV_DONTNEED]))
    return "brk", (DEFAULT_START_BRK + rnd.randrange(12) * PAGE_SIZE,)


@BLOCKS
@pytest.mark.parametrize("seed", range(6))
def test_seeded_streams(block: int, seed: int) -> None:
    """Longer seeded streams, some under a low map_count limit or strict overcommit."""
    rnd = random.Random(seed)
    with block_size(block):
        run_stream(rnd, seed)


def run_stream(rnd: random.Random, seed: int) -> None:
    ref, fast = boot()
    same(ref, fast, "open_file", (3 * PAGE_SIZE,))
    if seed % 2:
        same(ref, fast, "set_sysctl", ("max_map_count", 24))
    if seed % 3 == 2:
        same(ref, fast, "set_sysctl", ("overcommit_memory", 2))
    for _ in range(250):
        name, args = random_call(rnd)
        same(ref, fast, name, args, WINDOW + rnd.randrange(WINDOW_PAGES) * PAGE_SIZE)


def test_every_call_kind_succeeds_somewhere() -> None:
    """The streams above reach the successful paths, not only the refusals."""
    ref = RefAddressSpace(CONFIG)
    rnd = random.Random(0)
    ok: set[str] = set()
    ref.open_file(3 * PAGE_SIZE)
    for _ in range(400):
        name, args = random_call(rnd)
        result = getattr(ref, name)(*args)
        if (result == args[0]) if name == "brk" else result >= 0:
            ok.add(name)
    assert ok == {"mmap", "munmap", "mprotect", "mremap", "touch", "brk", "madvise"}


# ---------------------------------------------------------------------------------------------
# DEFAULT_MAX_MAP_COUNT VMAs
# ---------------------------------------------------------------------------------------------


def pack(ref: RefAddressSpace, fast: FastAddressSpace, count: int, top: int) -> int:
    """Map ``count`` one-page VMAs ending at ``top``, alternating read-only and read-write so
    that none merges (the lowest is three pages); returns the lowest address."""
    bottom = top - (count + 2) * PAGE_SIZE
    for model in (ref, fast):
        model.mmap(bottom, 3 * PAGE_SIZE, PROT_READ, ANON | MAP_FIXED)
        for i in range(1, count):
            model.mmap(bottom + (i + 2) * PAGE_SIZE, PAGE_SIZE, RW if i % 2 else PROT_READ,
                       ANON | MAP_FIXED)
    return bottom


@BLOCKS
@pytest.mark.parametrize("seed", range(3))
def test_placement_among_holes(block: int, seed: int) -> None:
    """Top-down and bottom-up (MAP_32BIT) searches through runs of VMAs with holes of one to
    five pages: the first fitting hole in each direction is found, whatever the blocks skip."""
    rnd = random.Random(seed)
    with block_size(block):
        ref, fast = boot()
        runs = [(MMAP_BASE, 0), (MAP_32BIT_START + 600 * PAGE_SIZE, MAP_32BIT)]
        for top, _ in runs:
            bottom = pack(ref, fast, 500, top)
            at = bottom + 3 * PAGE_SIZE
            while at < top:
                hole = rnd.choice([1, 1, 2, 3, 4, 5])
                same(ref, fast, "munmap", (at, hole * PAGE_SIZE), views=False)
                at += (hole + rnd.randrange(4, 40)) * PAGE_SIZE
        assert fast.view() == ref.view()
        for _ in range(60):
            extra = rnd.choice(runs)[1]
            same(ref, fast, "mmap", (0, rnd.randrange(1, 7) * PAGE_SIZE, PROT_EXEC,
                                     ANON | extra), views=False)
        assert fast.view() == ref.view()


def test_default_max_map_count() -> None:
    """The stack plus 65,529 VMAs packed right below mmap_base: map_count is exactly
    DEFAULT_MAX_MAP_COUNT and no gap under mmap_base is free."""
    ref, fast = boot()
    bottom = pack(ref, fast, DEFAULT_MAX_MAP_COUNT - 1, MMAP_BASE)
    assert ref.view().map_count == DEFAULT_MAX_MAP_COUNT
    assert fast.view() == ref.view()

    # At the limit a split in the middle of one VMA is refused (map_count >= max) by munmap
    # and mprotect, and mremap's move wants three spare; mmap may still go one over (>).
    mid = bottom + PAGE_SIZE
    assert same(ref, fast, "munmap", (mid, PAGE_SIZE), mid) < 0
    assert same(ref, fast, "mprotect", (mid, PAGE_SIZE, RW), mid) < 0
    assert same(ref, fast, "mremap", (bottom + 4 * PAGE_SIZE, PAGE_SIZE, 2 * PAGE_SIZE,
                                      MREMAP_MAYMOVE), bottom) < 0
    # Top-down placement passes every VMA under mmap_base and lands below the packed run.
    assert same(ref, fast, "mmap", (0, 2 * PAGE_SIZE, RW, ANON), bottom) == bottom - 2 * PAGE_SIZE
    assert ref.view().map_count == DEFAULT_MAX_MAP_COUNT + 1
    assert same(ref, fast, "mmap", (0, PAGE_SIZE, RW, ANON)) < 0
    assert same(ref, fast, "munmap", (bottom, PAGE_SIZE), bottom) == 0  # an edge split is fine
    assert same(ref, fast, "munmap", (bottom - 2 * PAGE_SIZE, 3 * PAGE_SIZE), bottom) == 0

    # A two-page hole deep in the run is the highest gap that fits: the fast search must skip
    # every block around it; three pages fit nowhere in the run and go below it.
    hole = bottom + 1000 * PAGE_SIZE
    assert same(ref, fast, "munmap", (hole, 2 * PAGE_SIZE), hole) == 0
    assert same(ref, fast, "mmap", (0, 2 * PAGE_SIZE, PROT_EXEC, ANON), hole) == hole
    assert same(ref, fast, "mmap", (0, 3 * PAGE_SIZE, PROT_EXEC, ANON), bottom) < bottom

    # munmap and mprotect across thousands of VMAs at once; an mprotect that runs into a hole
    # keeps the prefix it changed and reports -ENOMEM.
    start = bottom + 5000 * PAGE_SIZE
    assert same(ref, fast, "munmap", (start, 3000 * PAGE_SIZE + 123), start) == 0
    start = bottom + 20000 * PAGE_SIZE
    assert same(ref, fast, "mprotect", (start, 4000 * PAGE_SIZE, PROT_READ), start) == 0
    start = bottom + 4000 * PAGE_SIZE
    assert same(ref, fast, "mprotect", (start, 2000 * PAGE_SIZE, PROT_NONE), start) < 0
    assert same(ref, fast, "mremap", (start, PAGE_SIZE, 5 * PAGE_SIZE, MREMAP_MAYMOVE),
                start) > 0


# ---------------------------------------------------------------------------------------------
# dup_mm (fork's VMA half): the children agree, and keep agreeing as they are driven
# ---------------------------------------------------------------------------------------------


def same_dup(ref: AddressSpace, fast: AddressSpace) -> tuple[AddressSpace, AddressSpace] | None:
    """dup_mm on both: the same errno, or two children with equal views; the parents' views
    equal and unchanged either way.  The children, or None after an equal refusal."""
    before = ref.view()
    want, got = ref.dup_mm(), fast.dup_mm()
    assert ref.view() == before, "dup_mm changed the reference parent"
    assert fast.view() == before, "dup_mm changed the fast parent"
    if isinstance(want, int) or isinstance(got, int):
        assert got == want, f"dup_mm: fast {got!r}, ref {want!r}"
        return None
    assert type(got) is FastAddressSpace
    assert got.view() == want.view(), "the children's views differ"
    return want, got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(st.tuples(ops, page), max_size=25),
       after=st.lists(st.tuples(ops, page), max_size=25), strict=st.booleans())
def test_generated_fork_then_calls(before: list[tuple[Op, int]], after: list[tuple[Op, int]],
                                   strict: bool) -> None:
    """Generated calls, a dup_mm (under strict overcommit or not), then generated calls on
    the children: every result and view agrees, so the children's non-singular anon_vma
    chains steer merges alike."""
    ref, fast = boot()
    for (name, args), probe in before:
        same(ref, fast, name, args, WINDOW + probe * PAGE_SIZE)
    if strict:
        same(ref, fast, "set_sysctl", ("overcommit_memory", 2))
    children = same_dup(ref, fast)
    if children is None:
        return
    for (name, args), probe in after:
        same(*children, name, args, WINDOW + probe * PAGE_SIZE)


@BLOCKS
@pytest.mark.parametrize("seed", range(4))
def test_seeded_fork_chains(block: int, seed: int) -> None:
    """Seeded streams with a fork every 60 calls, driving the newest child each time: chains
    of forks and the merges they refuse agree."""
    rnd = random.Random(100 + seed)
    with block_size(block):
        ref: AddressSpace
        fast: AddressSpace
        ref, fast = boot()
        same(ref, fast, "open_file", (3 * PAGE_SIZE,))
        if seed % 2:
            same(ref, fast, "set_sysctl", ("overcommit_memory", 2))
        forks = 0
        for step in range(240):
            if step % 60 == 59:
                children = same_dup(ref, fast)
                if children is not None:
                    ref, fast = children
                    forks += 1
                continue
            name, args = random_call(rnd)
            same(ref, fast, name, args, WINDOW + rnd.randrange(WINDOW_PAGES) * PAGE_SIZE)
        assert forks, "no fork succeeded"


def test_dontcopy_vmas_are_skipped_alike() -> None:
    """madvise(MADV_DONTFORK) marks the same VMAs in both models (over a hole: -ENOMEM after
    marking both), and the children leave them out and uncount them alike."""
    ref, fast = boot()
    for first, flags in ((0, ANON), (6, MAP_SHARED | MAP_ANONYMOUS), (10, ANON)):
        same(ref, fast, "mmap", (WINDOW + first * PAGE_SIZE, 2 * PAGE_SIZE, RW,
                                 flags | MAP_FIXED))
    assert same(ref, fast, "madvise", (WINDOW, 8 * PAGE_SIZE, MADV_DONTFORK)) < 0
    assert [v.flags & VM_DONTCOPY != 0 for v in ref.view().vmas[:3]] == [True, True, False]
    children = same_dup(ref, fast)
    assert children is not None
    assert len(children[0].view().vmas) == len(ref.view().vmas) - 2


def _fork_scenario(before: list[Op], after: list[Op]) -> None:
    ref, fast = boot()
    for name, args in before:
        same(ref, fast, name, args)
    children = same_dup(ref, fast)
    assert children is not None
    for name, args in after:
        same(*children, name, args)


def _at(first: int) -> int:
    return WINDOW + first * PAGE_SIZE


def _map(first: int, pages: int, prot: int = RW) -> Op:
    return "mmap", (_at(first), pages * PAGE_SIZE, prot, ANON | MAP_FIXED)


@pytest.mark.parametrize(("before", "after"), [
    # is_mergeable_anon_vma: a new neighbour of a forked VMA stays apart
    ([_map(0, 2), ("touch", (_at(0), True))], [_map(2, 2)]),
    # anon_vma_prepare does not reuse a forked neighbour's anon_vma
    ([_map(0, 2), ("touch", (_at(0), True)), _map(2, 2, PROT_READ)],
     [("mprotect", (_at(2), 2 * PAGE_SIZE, RW)), ("touch", (_at(2), True))]),
    # ... nor the next one's (4.6 looks at next first)
    ([_map(2, 2), ("touch", (_at(2), True))],
     [_map(0, 2, PROT_READ), ("mprotect", (_at(0), 2 * PAGE_SIZE, RW)),
      ("touch", (_at(0), True))]),
    # both pieces of a split keep the inherited chain
    ([_map(0, 4), ("touch", (_at(0), True))],
     [("mprotect", (_at(1), PAGE_SIZE, PROT_READ)), _map(4, 1), _map(5, 1, PROT_READ),
      ("mprotect", (_at(5), PAGE_SIZE, RW)), ("touch", (_at(5), True))]),
    # so does mremap's copy
    ([_map(0, 2), ("touch", (_at(0), True))],
     [("mremap", (_at(0), 2 * PAGE_SIZE, 2 * PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED,
                  _at(10))), _map(12, 2)]),
    # and brk does not extend a forked heap
    ([("brk", (DEFAULT_START_BRK + PAGE_SIZE,)), ("touch", (DEFAULT_START_BRK, True))],
     [("brk", (DEFAULT_START_BRK + 2 * PAGE_SIZE,))]),
], ids=["merge", "prepare-prev", "prepare-next", "split", "mremap", "brk"])
def test_inherited_chains_refuse_alike(before: list[Op], after: list[Op]) -> None:
    """Hand-picked paths where a forked VMA's non-singular chain decides the outcome."""
    _fork_scenario(before, after)
