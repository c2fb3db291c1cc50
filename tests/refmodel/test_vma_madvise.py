"""Hand-written cases for madvise on the reference address space (``madvise`` in
``specs/vma.md``): the argument checks, holes, the flag change with its merges and splits,
the map_count limit (-EAGAIN) and MADV_DONTNEED's refusals.  Pages are counted from a window
below mmap_base, as in ``test_vma.py``."""

from __future__ import annotations

import pytest

from refmodel.vma import RefAddressSpace
from specs.errno import Errno
from specs.machine import PAGE_SIZE, preset
from specs.vma import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_LOCKED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    VM_DONTCOPY,
    VM_IO,
    process_config,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
ENOMEM, EINVAL, EAGAIN = -Errno.ENOMEM, -Errno.EINVAL, -Errno.EAGAIN
BASE = process_config(preset("tiny")).mmap_base - 64 * PAGE_SIZE


def page(n: int) -> int:
    return BASE + n * PAGE_SIZE


@pytest.fixture
def mm() -> RefAddressSpace:
    return RefAddressSpace(preset("tiny"))


def mapped(mm: RefAddressSpace, first: int, pages: int, prot: int = RW,
           flags: int = ANON) -> None:
    assert mm.mmap(page(first), pages * PAGE_SIZE, prot, flags) == page(first)


def layout(mm: RefAddressSpace) -> list[tuple[int, int, bool]]:
    """(first page, last page + 1, VM_DONTCOPY) of every VMA in the window."""
    return [((v.start - BASE) // PAGE_SIZE, (v.end - BASE) // PAGE_SIZE,
             bool(v.flags & VM_DONTCOPY))
            for v in mm.view().vmas if BASE <= v.start < BASE + 64 * PAGE_SIZE]


@pytest.mark.parametrize(("addr", "length", "advice", "expected"), [
    (page(0), PAGE_SIZE, 0, EINVAL),  # MADV_NORMAL: outside the contract's advice
    (page(0), PAGE_SIZE, 12, EINVAL),
    (page(0) + 1, PAGE_SIZE, MADV_DONTFORK, EINVAL),  # unaligned start
    (page(0), 2**64 - 1, MADV_DONTFORK, EINVAL),  # the length rounds up to 0
    (page(0), 2**64 - PAGE_SIZE, MADV_DONTFORK, EINVAL),  # start + length wraps
    (page(0), 0, MADV_DONTFORK, 0),  # empty: nothing to do, even unmapped
    (page(40), PAGE_SIZE, MADV_DONTFORK, ENOMEM),  # nothing mapped there
    (2**47, PAGE_SIZE, MADV_DONTNEED, ENOMEM),  # no VMA above
])
def test_argument_checks(mm: RefAddressSpace, addr: int, length: int, advice: int,
                         expected: int) -> None:
    mapped(mm, 0, 4)
    before = mm.view()
    assert mm.madvise(addr, length, advice) == expected
    assert mm.view() == before


def test_dontfork_splits_and_dofork_merges_back(mm: RefAddressSpace) -> None:
    """The middle of a VMA: two splits; clearing the flag again: vma_merge case 6."""
    mapped(mm, 0, 6)
    assert mm.madvise(page(2), 2 * PAGE_SIZE - 100, MADV_DONTFORK) == 0
    assert layout(mm) == [(0, 2, False), (2, 4, True), (4, 6, False)]
    assert mm.view().map_count == 4  # the stack too
    assert mm.madvise(page(2), 2 * PAGE_SIZE, MADV_DOFORK) == 0
    assert layout(mm) == [(0, 6, False)]


def test_dontfork_extends_a_marked_neighbour(mm: RefAddressSpace) -> None:
    """The head of a VMA joins the marked VMA before it (case 5) instead of splitting."""
    mapped(mm, 0, 2)
    mapped(mm, 2, 4)
    assert mm.madvise(page(0), 2 * PAGE_SIZE, MADV_DONTFORK) == 0
    assert layout(mm) == [(0, 2, True), (2, 6, False)]
    assert mm.madvise(page(2), PAGE_SIZE, MADV_DONTFORK) == 0
    assert layout(mm) == [(0, 3, True), (3, 6, False)]


def test_hole_gives_enomem_after_the_rest_changed(mm: RefAddressSpace) -> None:
    """Holes are skipped, at the start too, and reported at the end."""
    mapped(mm, 2, 2)
    mapped(mm, 6, 2)
    assert mm.madvise(page(0), 10 * PAGE_SIZE, MADV_DONTFORK) == ENOMEM
    assert layout(mm) == [(2, 4, True), (6, 8, True)]
    assert mm.madvise(page(2), 2 * PAGE_SIZE, MADV_DOFORK) == 0  # no hole: no error
    assert layout(mm) == [(2, 4, False), (6, 8, True)]


def test_split_at_the_limit_is_eagain(mm: RefAddressSpace) -> None:
    """split_vma's -ENOMEM comes back as -EAGAIN; a piece already done stays done."""
    mapped(mm, 0, 2)
    mapped(mm, 2, 4, PROT_READ)
    assert mm.set_sysctl("max_map_count", mm.view().map_count) == 0
    assert mm.madvise(page(0), 3 * PAGE_SIZE, MADV_DONTFORK) == EAGAIN
    assert layout(mm) == [(0, 2, True), (2, 6, False)]


def test_dofork_refuses_vm_io(mm: RefAddressSpace) -> None:
    """No call maps VM_IO, so the flag is set by hand; DONTFORK is still allowed."""
    mapped(mm, 0, 2)
    mm.mm.vmas[0].flags |= VM_IO
    assert mm.madvise(page(0), PAGE_SIZE, MADV_DOFORK) == EINVAL
    assert mm.madvise(page(0), PAGE_SIZE, MADV_DONTFORK) == 0
    assert layout(mm) == [(0, 1, True), (1, 2, False)]


def test_dontneed_changes_no_vma_and_refuses_locked(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    mapped(mm, 4, 1, RW, ANON | MAP_LOCKED)
    before = mm.view()
    assert mm.madvise(page(0), PAGE_SIZE, MADV_DONTNEED) == 0
    assert mm.madvise(page(0), 3 * PAGE_SIZE, MADV_DONTNEED) == ENOMEM
    assert mm.madvise(page(0), 5 * PAGE_SIZE, MADV_DONTNEED) == EINVAL
    assert mm.view() == before


def test_child_leaves_out_the_dontfork_range(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4)
    assert mm.madvise(page(1), PAGE_SIZE, MADV_DONTFORK) == 0
    child = mm.dup_mm()
    assert isinstance(child, RefAddressSpace)
    assert [((v.start - BASE) // PAGE_SIZE, (v.end - BASE) // PAGE_SIZE)
            for v in child.view().vmas if v.start < BASE + 64 * PAGE_SIZE] == [(0, 1), (2, 4)]
    assert child.view().total_vm == mm.view().total_vm - 1
