"""dup_mm, the VMA half of fork, on hand-worked cases (``specs/vma.md`` dup_mm()): what the
child copies, what it drops, the fresh anon_vmas whose inherited chains refuse merges, the
VM_ACCOUNT charge tested on the parent's mm, and a parent left as it was."""

from __future__ import annotations

import pytest

from refmodel.vma import RefAddressSpace
from specs.errno import Errno
from specs.machine import PAGE_SIZE, preset
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_LOCKED,
    MAP_PRIVATE,
    MAP_SHARED,
    OVERCOMMIT_NEVER,
    PROT_READ,
    PROT_WRITE,
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_LOCKED,
    Capability,
    MmView,
    process_config,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
ENOMEM = -Errno.ENOMEM
BASE = process_config(preset("tiny")).mmap_base - 64 * PAGE_SIZE


def page(n: int) -> int:
    return BASE + n * PAGE_SIZE


@pytest.fixture
def mm() -> RefAddressSpace:
    return RefAddressSpace(preset("tiny"))


def mapped(mm: RefAddressSpace, first: int, pages: int, prot: int = RW, flags: int = ANON,
           fd: int = -1) -> None:
    assert page(first) == mm.mmap(page(first), pages * PAGE_SIZE, prot, flags, fd)


def fork(mm: RefAddressSpace) -> RefAddressSpace:
    before = mm.view()
    child = mm.dup_mm()
    assert isinstance(child, RefAddressSpace)
    assert mm.view() == before, "the parent changed"
    return child


def window(view: MmView) -> list[tuple[int, int, int | None]]:
    return [((v.start - BASE) // PAGE_SIZE, (v.end - BASE) // PAGE_SIZE, v.anon_vma)
            for v in view.vmas if BASE <= v.start < BASE + 64 * PAGE_SIZE]


def test_declares_the_capability(mm: RefAddressSpace) -> None:
    assert Capability.FORK in mm.capabilities


def test_child_copies_vmas_counters_layout_and_sysctls(mm: RefAddressSpace) -> None:
    """Everything but locking and anon_vma identities is the parent's."""
    fd = mm.open_file(4 * PAGE_SIZE)
    mapped(mm, 0, 2)
    mapped(mm, 4, 3, PROT_READ, MAP_SHARED | MAP_FIXED, fd)
    mapped(mm, 10, 1, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    assert mm.brk(mm.view().start_brk + 3 * PAGE_SIZE) > 0
    assert 0 == mm.set_sysctl("max_map_count", 77)
    assert 0 == mm.set_sysctl("overcommit_ratio", 80)
    parent = mm.view()
    child = fork(mm)
    assert type(child) is RefAddressSpace
    view = child.view()
    strip = [(v.start, v.end, v.flags, v.pgoff, v.file) for v in parent.vmas]
    assert strip == [(v.start, v.end, v.flags, v.pgoff, v.file) for v in view.vmas]
    same = ("files", "map_count", "total_vm", "data_vm", "exec_vm", "stack_vm", "locked_vm",
            "committed", "start_brk", "brk", "mmap_base", "max_map_count",
            "overcommit_memory", "overcommit_ratio", "overcommit_kbytes")
    assert {f: getattr(parent, f) for f in same} == {f: getattr(view, f) for f in same}
    # the file table came along: the child maps the parent's fd and numbers new files after
    assert page(20) == child.mmap(page(20), PAGE_SIZE, PROT_READ, MAP_SHARED | MAP_FIXED, fd)
    assert child.open_file(PAGE_SIZE) == mm.open_file(PAGE_SIZE) == fd + 1


def test_locked_vmas_lose_the_lock_and_locked_vm_is_zero(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4, RW, ANON | MAP_LOCKED)
    assert mm.view().locked_vm == 4
    child = fork(mm)
    assert child.view().locked_vm == 0
    (copy,) = [v for v in child.view().vmas if v.start == page(0)]
    (orig,) = [v for v in mm.view().vmas if v.start == page(0)]
    assert orig.flags & VM_LOCKED
    assert copy.flags == orig.flags & ~VM_LOCKED


def test_each_vma_with_an_anon_vma_gets_a_fresh_one_in_vma_order(mm: RefAddressSpace) -> None:
    """Two parent VMAs sharing an anon_vma (a split) get two; none stays none."""
    mapped(mm, 0, 4)
    assert 0 == mm.touch(page(0))
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, PROT_READ)  # split: both keep anon_vma 2
    mapped(mm, 8, 2)  # never touched: no anon_vma
    assert window(mm.view()) == [(0, 2, 2), (2, 4, 2), (8, 10, None)]
    child = fork(mm)
    # the stack is the highest VMA: the window's copies are numbered 1, 2 and the stack 3
    assert window(child.view()) == [(0, 2, 1), (2, 4, 2), (8, 10, None)]
    assert child.view().vmas[-1].anon_vma == 3


def test_forked_vma_refuses_a_merge_the_parent_makes(mm: RefAddressSpace) -> None:
    """is_mergeable_anon_vma: a range without an anon_vma joins a neighbour only when that
    neighbour's chain is singular; a forked copy's chain links the parent's anon_vma too."""
    mapped(mm, 0, 2)
    assert 0 == mm.touch(page(0))
    child = fork(mm)
    mapped(mm, 2, 2)
    mapped(child, 2, 2)
    assert window(mm.view()) == [(0, 4, 2)]
    assert window(child.view()) == [(0, 2, 1), (2, 4, None)]


def test_forked_heap_is_not_extended_by_brk(mm: RefAddressSpace) -> None:
    start = mm.view().start_brk
    assert mm.brk(start + PAGE_SIZE) == start + PAGE_SIZE
    assert 0 == mm.touch(start)
    child = fork(mm)
    assert child.brk(start + 2 * PAGE_SIZE) == start + 2 * PAGE_SIZE
    assert mm.brk(start + 2 * PAGE_SIZE) == start + 2 * PAGE_SIZE
    heap = [(v.start, v.end) for v in child.view().vmas if v.start < start + 4 * PAGE_SIZE]
    assert heap == [(start, start + PAGE_SIZE), (start + PAGE_SIZE, start + 2 * PAGE_SIZE)]
    assert [(v.start, v.end) for v in mm.view().vmas if v.start < start + 4 * PAGE_SIZE] == [
        (start, start + 2 * PAGE_SIZE)]


def test_anon_vma_prepare_does_not_reuse_a_forked_neighbours(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    assert 0 == mm.touch(page(0))
    mapped(mm, 2, 2, PROT_READ)  # compatible but for protection: not merged
    child = fork(mm)
    assert 0 == child.mprotect(page(2), 2 * PAGE_SIZE, RW)  # merge refused: no anon_vma here
    assert window(child.view()) == [(0, 2, 1), (2, 4, None)]
    assert 0 == child.touch(page(2))
    assert window(child.view()) == [(0, 2, 1), (2, 4, 3)]
    # the parent's singular chain is reused, and then the two merge
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert window(mm.view()) == [(0, 4, 2)]


def test_split_of_a_forked_vma_keeps_the_inherited_chain(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4)
    assert 0 == mm.touch(page(0))
    child = fork(mm)
    assert 0 == child.munmap(page(3), PAGE_SIZE)
    mapped(child, 3, 1)
    assert window(child.view()) == [(0, 3, 1), (3, 4, None)]


def test_strict_overcommit_refuses_a_fork_that_doubles_the_charge(mm: RefAddressSpace) -> None:
    """NEVER at ratio 50 (2048 - 128 - 32 pages allowed): the child's charge is tested on
    top of the parent's committed, so a process committing over half cannot fork."""
    assert 0 == mm.set_sysctl("overcommit_memory", OVERCOMMIT_NEVER)
    assert page(0) == mm.mmap(page(0), 1000 * PAGE_SIZE, RW, ANON)
    before = mm.view()
    assert before.committed == 1033
    assert ENOMEM == mm.dup_mm()
    assert mm.view() == before
    assert 0 == mm.munmap(page(0), 600 * PAGE_SIZE)
    child = fork(mm)
    assert child.view().committed == mm.view().committed == 433


def test_guess_ignores_what_is_committed(mm: RefAddressSpace) -> None:
    """GUESS tests each VMA against free memory alone, so a fork whose charges add up to
    more than RAM (2 x 3033 of 4096 pages) succeeds."""
    assert page(0) == mm.mmap(page(0), 3000 * PAGE_SIZE, RW, ANON)
    child = fork(mm)
    assert child.view().committed == 3033


def test_shmem_is_shared_and_its_charge_stays_with_each_holder(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 3, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    (shm,) = mm.view().files
    assert shm.shmem
    assert shm.charged == 3
    child = fork(mm)
    assert child.view().files == (shm,)
    assert child.view().committed == mm.view().committed == 36
    assert 0 == child.munmap(page(0), 3 * PAGE_SIZE)
    assert child.view().files == ()
    assert child.view().committed == 33
    assert mm.view().files == (shm,)


def test_child_and_parent_are_independent(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4)
    child = fork(mm)
    before = mm.view()
    assert 0 == child.munmap(page(0), 2 * PAGE_SIZE)
    assert 0 == child.set_sysctl("max_map_count", 5)
    assert mm.view() == before
    child_view = child.view()
    assert 0 == mm.mprotect(page(0), PAGE_SIZE, PROT_READ)
    assert child.view() == child_view


def test_dontcopy_vma_is_left_out_and_uncounted(mm: RefAddressSpace) -> None:
    """VM_DONTCOPY set directly on the model's VMA (madvise's own cases are in
    test_vma_madvise.py): dup_mm leaves it out and takes it out of the counters."""
    mapped(mm, 0, 4)
    mapped(mm, 6, 2, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    for vma in mm.mm.vmas:
        if vma.start in (page(0), page(6)):
            vma.flags |= VM_DONTCOPY
    parent = mm.view()
    child = fork(mm)
    view = child.view()
    assert window(view) == []
    assert (view.map_count, view.total_vm, view.data_vm) == (
        parent.map_count - 2, parent.total_vm - 6, parent.data_vm - 4)
    assert view.files == ()  # the shmem object only the skipped VMA held
    assert view.committed == parent.committed - 4 - 2
    assert sum(v.pages for v in view.vmas if v.flags & VM_ACCOUNT) == view.committed
