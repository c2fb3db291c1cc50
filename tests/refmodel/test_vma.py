"""Hand-written cases for the reference address space: the eight vma_merge cases, the split
paths, the map_count limits, overcommit and the errno of each call (``specs/vma.md``).

Addresses are MAP_FIXED pages of a window below mmap_base, so every expectation is written in
pages; ``layout`` renders the VMAs in the window as (first page, last page + 1, prot).
"""

from __future__ import annotations

import pytest

from refmodel.vma import RefAddressSpace
from specs.errno import Errno
from specs.machine import PAGE_SIZE, preset
from specs.vma import (
    DEFAULT_MAX_MAP_COUNT,
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
    O_RDONLY,
    O_WRONLY,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    STACK_TOP,
    TASK_SIZE,
    VM_ACCOUNT,
    VM_SOFTDIRTY,
    VM_STACK_FLAGS,
    process_config,
)

RW = PROT_READ | PROT_WRITE
R = PROT_READ
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
ENOMEM, EINVAL, EFAULT = -Errno.ENOMEM, -Errno.EINVAL, -Errno.EFAULT
BASE = process_config(preset("tiny")).mmap_base - 64 * PAGE_SIZE


def page(n: int) -> int:
    return BASE + n * PAGE_SIZE


@pytest.fixture
def mm() -> RefAddressSpace:
    return RefAddressSpace(preset("tiny"))


def mapped(mm: RefAddressSpace, first: int, pages: int, prot: int = RW, flags: int = ANON,
           fd: int = -1, offset: int = 0) -> int:
    result = mm.mmap(page(first), pages * PAGE_SIZE, prot, flags, fd, offset)
    assert page(first) == result
    return result


def layout(mm: RefAddressSpace) -> list[tuple[int, int, int]]:
    return [((v.start - BASE) // PAGE_SIZE, (v.end - BASE) // PAGE_SIZE, v.flags & 7)
            for v in mm.view().vmas if BASE <= v.start < BASE + 64 * PAGE_SIZE]


def anon_vmas(mm: RefAddressSpace) -> list[int | None]:
    return [v.anon_vma for v in mm.view().vmas if BASE <= v.start < BASE + 64 * PAGE_SIZE]


# ---------------------------------------------------------------------------------------------
# Boot
# ---------------------------------------------------------------------------------------------


def test_boot_has_the_exec_stack(mm: RefAddressSpace) -> None:
    """33 pages at STACK_TOP with VM_STACK_FLAGS, charged, anon_vma 1, no heap."""
    view = mm.view()
    (stack,) = view.vmas
    assert (STACK_TOP - 33 * PAGE_SIZE, STACK_TOP) == (stack.start, stack.end)
    assert VM_STACK_FLAGS | VM_SOFTDIRTY == stack.flags
    assert (1, 33, 33, 33, 1) == (stack.anon_vma, view.total_vm, view.stack_vm, view.committed,
                                  view.map_count)
    assert view.brk == view.start_brk == 0x100_0000


# ---------------------------------------------------------------------------------------------
# The eight vma_merge cases
# ---------------------------------------------------------------------------------------------


def test_case_1_fills_a_hole_between_prev_and_next(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    mapped(mm, 4, 2)
    mapped(mm, 2, 2)
    assert [(0, 6, RW)] == layout(mm)
    assert 1 == len(layout(mm))


def test_case_2_extends_prev(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    mapped(mm, 2, 2)
    assert [(0, 4, RW)] == layout(mm)


def test_case_3_extends_next_downwards(mm: RefAddressSpace) -> None:
    mapped(mm, 4, 2)
    mapped(mm, 2, 2)
    assert [(2, 6, RW)] == layout(mm)
    assert (BASE >> 12) + 2 == mm.find_vma(page(2)).pgoff  # type: ignore[union-attr]


def test_case_4_tail_of_prev_joins_next(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4, R)
    mapped(mm, 4, 2, RW)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 2, R), (2, 6, RW)] == layout(mm)


def test_case_5_head_of_next_joins_prev(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, RW)
    mapped(mm, 2, 4, R)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 4, RW), (4, 6, R)] == layout(mm)


def test_case_6_whole_middle_joins_both(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, RW)
    mapped(mm, 2, 2, R)
    mapped(mm, 4, 2, RW)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 6, RW)] == layout(mm)


def test_case_7_whole_middle_joins_prev(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, RW)
    mapped(mm, 2, 2, R)
    mapped(mm, 4, 2, PROT_NONE)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 4, RW), (4, 6, PROT_NONE)] == layout(mm)


def test_case_8_whole_middle_joins_next(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, PROT_NONE)
    mapped(mm, 2, 2, R)
    mapped(mm, 4, 2, RW)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 2, PROT_NONE), (2, 6, RW)] == layout(mm)


def test_case_1_refused_between_different_anon_vmas(mm: RefAddressSpace) -> None:
    """Two written neighbours have different anon_vmas: the hole merges with prev only."""
    mapped(mm, 0, 2)
    mapped(mm, 4, 2)
    assert 0 == mm.touch(page(0)) == mm.touch(page(4))
    mapped(mm, 2, 2)
    assert [(0, 4, RW), (4, 6, RW)] == layout(mm)
    assert [2, 3] == anon_vmas(mm)


def test_written_range_does_not_absorb_an_unwritten_neighbour(mm: RefAddressSpace) -> None:
    """is_mergeable_anon_vma: the neighbour without an anon_vma has an empty chain."""
    mapped(mm, 0, 2, RW)
    assert 0 == mm.touch(page(0))
    assert 0 == mm.mprotect(page(0), 2 * PAGE_SIZE, R)
    mapped(mm, 2, 2, RW)
    assert 0 == mm.mprotect(page(0), 2 * PAGE_SIZE, RW)
    assert [(0, 2, RW), (2, 4, RW)] == layout(mm)
    assert [2, None] == anon_vmas(mm)


def test_unwritten_range_joins_a_written_neighbour(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, RW)
    assert 0 == mm.touch(page(0))
    mapped(mm, 2, 2, R)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 4, RW)] == layout(mm)
    assert [2] == anon_vmas(mm)


def test_file_merge_needs_continuous_offsets(mm: RefAddressSpace) -> None:
    fd = mm.open_file(64 * PAGE_SIZE)
    flags = MAP_SHARED | MAP_FIXED
    mapped(mm, 0, 2, RW, flags, fd, 0)
    mapped(mm, 2, 2, RW, flags, fd, 2 * PAGE_SIZE)
    mapped(mm, 4, 2, RW, flags, fd, 8 * PAGE_SIZE)
    assert [(0, 4, RW), (4, 6, RW)] == layout(mm)


def test_shared_anonymous_mappings_never_merge(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    mapped(mm, 2, 2, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    assert 2 == len(layout(mm))
    assert 2 == sum(f.shmem for f in mm.view().files)


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def test_munmap_middle_splits_and_keeps_pgoff_linear(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 6)
    assert 0 == mm.munmap(page(2), 2 * PAGE_SIZE)
    low, high = (v for v in mm.view().vmas if v.start < STACK_TOP - 33 * PAGE_SIZE)
    assert (page(0), page(2), page(4), page(6)) == (low.start, low.end, high.start, high.end)
    assert high.pgoff == low.pgoff + 4


@pytest.mark.parametrize(("first", "pages", "expected"), [
    (0, 2, [(0, 2, R), (2, 6, RW)]),          # head: one split, new VMA below
    (4, 2, [(0, 4, RW), (4, 6, R)]),          # tail: one split, new VMA above
    (2, 2, [(0, 2, RW), (2, 4, R), (4, 6, RW)]),  # middle: two splits
])
def test_mprotect_split_paths(mm: RefAddressSpace, first: int, pages: int,
                              expected: list[tuple[int, int, int]]) -> None:
    mapped(mm, 0, 6)
    assert 0 == mm.mprotect(page(first), pages * PAGE_SIZE, R)
    assert expected == layout(mm)


def test_split_vmas_share_the_anon_vma(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 6)
    assert 0 == mm.touch(page(0))
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, R)
    assert [2, 2, 2] == anon_vmas(mm)
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 6, RW)] == layout(mm)


# ---------------------------------------------------------------------------------------------
# The map_count limits
# ---------------------------------------------------------------------------------------------


def fill_to(mm: RefAddressSpace, limit: int) -> None:
    assert 0 == mm.set_sysctl("max_map_count", limit)
    at = 0
    while mm.view().map_count < limit:
        mapped(mm, at, 1, RW if at % 4 == 0 else R)
        at += 2


def test_mmap_limit_is_greater_than(mm: RefAddressSpace) -> None:
    """mmap refuses only at map_count > max_map_count, so max + 1 VMAs can exist."""
    fill_to(mm, 8)
    mapped(mm, 40, 1)
    assert 9 == mm.view().map_count
    assert ENOMEM == mm.mmap(page(50), PAGE_SIZE, RW, ANON)


def test_split_limit_is_greater_or_equal(mm: RefAddressSpace) -> None:
    mapped(mm, 40, 6)
    fill_to(mm, 8)
    before = mm.view()
    assert ENOMEM == mm.munmap(page(42), PAGE_SIZE)
    assert ENOMEM == mm.mprotect(page(42), PAGE_SIZE, R)
    assert before == mm.view()
    assert 0 == mm.munmap(page(40), PAGE_SIZE)  # trimming the head needs no new VMA


def test_second_split_refused_one_below_the_limit(mm: RefAddressSpace) -> None:
    """From max - 1 the first split succeeds and the second is refused: 4.6 keeps the first."""
    mapped(mm, 40, 6)
    fill_to(mm, 8)
    assert 0 == mm.set_sysctl("max_map_count", 9)
    assert ENOMEM == mm.mprotect(page(42), PAGE_SIZE, R)
    assert 9 == mm.view().map_count


def test_default_limit_is_reachable() -> None:
    """65,530 VMAs plus one more (mmap tests >), then -ENOMEM; a split is refused there."""
    space = RefAddressSpace(preset("tiny"))
    region = 0x1000_0000_0000
    count = space.view().map_count
    i = 0
    while count <= DEFAULT_MAX_MAP_COUNT:
        assert region + i * PAGE_SIZE == space.mmap(region + i * PAGE_SIZE, PAGE_SIZE,
                                                    RW if i % 2 else R, ANON)
        count += 1
        i += 1
    assert DEFAULT_MAX_MAP_COUNT + 1 == space.view().map_count
    assert ENOMEM == space.mmap(region - 2 * PAGE_SIZE, PAGE_SIZE, RW, ANON)
    assert 0 == space.munmap(region, PAGE_SIZE)


# ---------------------------------------------------------------------------------------------
# mprotect's partial success
# ---------------------------------------------------------------------------------------------


def test_mprotect_keeps_changes_before_a_hole(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    assert ENOMEM == mm.mprotect(page(0), 4 * PAGE_SIZE, R)
    assert [(0, 2, R)] == layout(mm)


def test_mprotect_with_a_hole_at_the_start_changes_nothing(mm: RefAddressSpace) -> None:
    mapped(mm, 2, 2)
    before = mm.view()
    assert ENOMEM == mm.mprotect(page(0), 4 * PAGE_SIZE, R)
    assert before == mm.view()


def test_mprotect_eacces_after_changing_earlier_vmas(mm: RefAddressSpace) -> None:
    fd = mm.open_file(16 * PAGE_SIZE, O_RDONLY)
    mapped(mm, 0, 2, R)
    mapped(mm, 2, 2, R, MAP_SHARED | MAP_FIXED, fd, 0)
    assert -Errno.EACCES == mm.mprotect(page(0), 4 * PAGE_SIZE, RW)
    assert [(0, 2, RW), (2, 4, R)] == layout(mm)


def test_mprotect_write_charges_once_and_keeps_the_charge(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4, R)
    committed = mm.view().committed
    assert 0 == mm.mprotect(page(0), 4 * PAGE_SIZE, RW)
    assert committed + 4 == mm.view().committed
    assert 0 == mm.mprotect(page(0), 4 * PAGE_SIZE, R)
    assert committed + 4 == mm.view().committed
    assert all(v.flags & VM_ACCOUNT for v in mm.view().vmas)


# ---------------------------------------------------------------------------------------------
# errno tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("addr", "length", "prot", "flags", "fd", "offset", "errno"), [
    (0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 1, Errno.EINVAL),
    (0, PAGE_SIZE, RW, MAP_PRIVATE, 7, 0, Errno.EBADF),
    (0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_HUGETLB, 3, 0, Errno.EINVAL),
    (0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0, Errno.ENOMEM),
    (0, 0, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, Errno.EINVAL),
    (0, -1, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, Errno.ENOMEM),
    (0, 1 << 47, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, Errno.ENOMEM),
    (TASK_SIZE, PAGE_SIZE, RW, ANON, -1, 0, Errno.ENOMEM),
    (BASE + 1, PAGE_SIZE, RW, ANON, -1, 0, Errno.EINVAL),
    (0, PAGE_SIZE, RW, ANON, -1, 0, Errno.EPERM),
    (0, PAGE_SIZE, RW, MAP_ANONYMOUS, -1, 0, Errno.EINVAL),
    (0, PAGE_SIZE, RW, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, Errno.EINVAL),
    (0, PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0, Errno.EINVAL),
    (0, 17 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0, Errno.EAGAIN),
])
def test_mmap_errno(mm: RefAddressSpace, addr: int, length: int, prot: int, flags: int,
                    fd: int, offset: int, errno: Errno) -> None:
    """Each refusal of the mmap table, with nothing changed."""
    assert 3 == mm.open_file(PAGE_SIZE)
    before = mm.view()
    assert -errno == mm.mmap(addr, length, prot, flags, fd, offset)
    assert before == mm.view()


def test_mmap_file_permission_errors(mm: RefAddressSpace) -> None:
    ro = mm.open_file(PAGE_SIZE, O_RDONLY)
    wo = mm.open_file(PAGE_SIZE, O_WRONLY)
    assert -Errno.EACCES == mm.mmap(0, PAGE_SIZE, RW, MAP_SHARED, ro, 0)
    assert -Errno.EACCES == mm.mmap(0, PAGE_SIZE, R, MAP_PRIVATE, wo, 0)
    assert -Errno.EINVAL == mm.mmap(0, PAGE_SIZE, R, MAP_PRIVATE | MAP_GROWSDOWN, ro, 0)
    assert 0 < mm.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE, ro, 40 * PAGE_SIZE)  # past the end: ok


def test_negative_offset_is_accepted(mm: RefAddressSpace) -> None:
    """pgoff is offset >> 12 (at most 2**52), so 4.6's EOVERFLOW test cannot fire through
    sys_mmap on x86-64 (later kernels refuse it in file_mmap_ok)."""
    assert 0 < mm.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, -PAGE_SIZE)


def test_unknown_flags_are_ignored(mm: RefAddressSpace) -> None:
    assert 0 < mm.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | 0x800_0000 | 0x10_0000)


def test_munmap_errno(mm: RefAddressSpace) -> None:
    assert EINVAL == mm.munmap(BASE + 1, PAGE_SIZE)
    assert EINVAL == mm.munmap(BASE, 0)
    assert EINVAL == mm.munmap(TASK_SIZE + PAGE_SIZE, PAGE_SIZE)
    assert EINVAL == mm.munmap(BASE, TASK_SIZE)
    assert 0 == mm.munmap(BASE, PAGE_SIZE)  # a hole
    mapped(mm, 0, 1)
    assert 0 == mm.munmap(BASE, 1)  # rounds up
    assert [] == layout(mm)


def test_mprotect_errno(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    assert EINVAL == mm.mprotect(BASE, PAGE_SIZE, R | PROT_GROWSDOWN | PROT_GROWSUP)
    assert EINVAL == mm.mprotect(BASE + 1, PAGE_SIZE, R)
    assert 0 == mm.mprotect(BASE + PAGE_SIZE * 9, 0, R)
    assert ENOMEM == mm.mprotect(BASE, -1, R)
    assert EINVAL == mm.mprotect(BASE, PAGE_SIZE, 0x10)
    assert EINVAL == mm.mprotect(BASE, PAGE_SIZE, R | PROT_GROWSDOWN)
    assert EINVAL == mm.mprotect(BASE, PAGE_SIZE, R | PROT_GROWSUP)
    assert ENOMEM == mm.mprotect(page(10), PAGE_SIZE, R)


def test_mremap_errno(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    mapped(mm, 2, 2, R)
    assert EINVAL == mm.mremap(BASE, PAGE_SIZE, PAGE_SIZE, 4)
    assert EINVAL == mm.mremap(BASE, PAGE_SIZE, PAGE_SIZE, MREMAP_FIXED, page(20))
    assert EINVAL == mm.mremap(BASE + 1, PAGE_SIZE, PAGE_SIZE)
    assert EINVAL == mm.mremap(BASE, PAGE_SIZE, 0)
    assert EINVAL == mm.mremap(BASE, PAGE_SIZE, PAGE_SIZE, MREMAP_FIXED | MREMAP_MAYMOVE,
                               BASE + 5)
    assert EINVAL == mm.mremap(BASE, 2 * PAGE_SIZE, 2 * PAGE_SIZE,
                               MREMAP_FIXED | MREMAP_MAYMOVE, page(1))
    assert EFAULT == mm.mremap(page(10), PAGE_SIZE, 2 * PAGE_SIZE)
    assert EFAULT == mm.mremap(BASE, 4 * PAGE_SIZE, 6 * PAGE_SIZE)  # spans two VMAs
    assert ENOMEM == mm.mremap(BASE, 2 * PAGE_SIZE, 4 * PAGE_SIZE)  # blocked, no MAYMOVE
    assert page(10) == mm.mremap(page(10), PAGE_SIZE, PAGE_SIZE)  # same size: nothing to do


def test_mremap_grows_in_place_without_merging(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    mapped(mm, 4, 2)
    assert BASE == mm.mremap(BASE, 2 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert [(0, 4, RW), (4, 6, RW)] == layout(mm)


def test_mremap_moves_an_unwritten_vma_and_merges_it(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    mapped(mm, 10, 2)
    assert page(2) == mm.mremap(page(10), 2 * PAGE_SIZE, 2 * PAGE_SIZE,
                                MREMAP_MAYMOVE | MREMAP_FIXED, page(2))
    assert [(0, 4, RW)] == layout(mm)


def test_mremap_moves_when_allowed(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2)
    assert 0 == mm.touch(page(0))
    mapped(mm, 2, 2, R)
    moved = mm.mremap(BASE, 2 * PAGE_SIZE, 4 * PAGE_SIZE, MREMAP_MAYMOVE)
    assert moved not in (BASE, ENOMEM)
    view = mm.view()
    (new,) = (v for v in view.vmas if v.start == moved)
    assert (4 * PAGE_SIZE, BASE >> 12, 2) == (new.end - new.start, new.pgoff, new.anon_vma)
    assert mm.find_vma(BASE).start == page(2)  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# brk, stack, overcommit
# ---------------------------------------------------------------------------------------------


def test_brk_rules(mm: RefAddressSpace) -> None:
    start = mm.view().start_brk
    assert start == mm.brk(0)
    assert start == mm.brk(start - 1)
    assert start + 5 * PAGE_SIZE + 123 == mm.brk(start + 5 * PAGE_SIZE + 123)
    heap = mm.find_vma(start)
    assert heap is not None
    assert (heap.start, heap.end) == (start, start + 6 * PAGE_SIZE)
    assert start + PAGE_SIZE == mm.brk(start + PAGE_SIZE)
    assert mm.find_vma(start).end == start + PAGE_SIZE  # type: ignore[union-attr]
    assert start + PAGE_SIZE == mm.brk(-1)  # PAGE_ALIGN wraps: refused
    assert mm.mmap(start + 3 * PAGE_SIZE, PAGE_SIZE, R, ANON) > 0
    assert start + PAGE_SIZE == mm.brk(start + 2 * PAGE_SIZE + 1)  # within a page of a VMA
    assert start + 2 * PAGE_SIZE == mm.brk(start + 2 * PAGE_SIZE)


def test_stack_growth_guard_page_and_rlimit(mm: RefAddressSpace) -> None:
    bottom = STACK_TOP - 33 * PAGE_SIZE
    assert 0 == mm.touch(bottom - 5 * PAGE_SIZE, write=False)
    stack = mm.find_vma(bottom - 10 * PAGE_SIZE)
    assert stack is not None
    assert stack.start == bottom - 6 * PAGE_SIZE
    assert EFAULT == mm.touch(STACK_TOP - 2100 * PAGE_SIZE)
    assert mm.find_vma(bottom - 7 * PAGE_SIZE).start == bottom - 6 * PAGE_SIZE  # type: ignore
    assert 39 == mm.view().stack_vm


def test_stack_does_not_grow_into_a_mapping(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 1, R)
    mm.mmap(page(2), PAGE_SIZE, RW, ANON | MAP_GROWSDOWN)
    assert EFAULT == mm.touch(page(1))
    assert EFAULT == mm.touch(page(3) + 8)  # only the exec stack is above: beyond RLIMIT_STACK


def test_touch_reuses_a_compatible_neighbours_anon_vma(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 2, RW)
    mapped(mm, 2, 2, R)
    assert 0 == mm.touch(page(2), write=False)
    assert [None, None] == anon_vmas(mm)
    assert 0 == mm.touch(page(0))
    assert 0 == mm.mprotect(page(2), 2 * PAGE_SIZE, RW)
    assert [(0, 4, RW)] == layout(mm)
    assert EFAULT == mm.touch(page(30))


@pytest.mark.parametrize(("mode", "ratio", "pages", "ok"), [
    (1, 50, 100_000, True),   # ALWAYS
    (0, 50, 3_000, True),     # GUESS: below free - reserves
    (0, 50, 3_800, False),    # GUESS: 4096 - 208 - 128 = 3760 is the ceiling
    (2, 50, 1_850, True),     # NEVER: committed + pages < 2048 - 128 - min(33/32, 128)
    (2, 50, 1_900, False),
    (2, 0, 1, False),
])
def test_overcommit_modes(mm: RefAddressSpace, mode: int, ratio: int, pages: int,
                          ok: bool) -> None:
    assert 0 == mm.set_sysctl("overcommit_memory", mode)
    assert 0 == mm.set_sysctl("overcommit_ratio", ratio)
    committed = mm.view().committed
    result = mm.mmap(0, pages * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert ok == (result > 0)
    assert committed + (pages if ok else 0) == mm.view().committed


def test_noreserve_skips_the_charge_unless_never(mm: RefAddressSpace) -> None:
    committed = mm.view().committed
    assert mm.mmap(0, 8 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE) > 0
    assert committed == mm.view().committed
    assert 0 == mm.set_sysctl("overcommit_memory", 2)
    assert mm.mmap(0, 8 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE) > 0
    assert committed + 8 == mm.view().committed


def test_shmem_charge_lives_until_the_last_vma_goes(mm: RefAddressSpace) -> None:
    committed = mm.view().committed
    mapped(mm, 0, 4, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    assert committed + 4 == mm.view().committed
    assert 0 == mm.munmap(page(0), PAGE_SIZE)
    assert committed + 4 == mm.view().committed
    assert 0 == mm.munmap(page(0), 4 * PAGE_SIZE)
    assert committed == mm.view().committed
    assert [] == list(mm.view().files)


def test_map_fixed_replaces_and_a_failed_charge_leaves_the_hole(mm: RefAddressSpace) -> None:
    mapped(mm, 0, 4, R)
    mapped(mm, 1, 2, RW)
    assert [(0, 1, R), (1, 3, RW), (3, 4, R)] == layout(mm)
    assert 0 == mm.set_sysctl("overcommit_memory", 2)
    assert 0 == mm.set_sysctl("overcommit_ratio", 0)
    assert ENOMEM == mm.mmap(page(0), 4 * PAGE_SIZE, RW, ANON)
    assert [] == layout(mm)


def test_sysctl_errno(mm: RefAddressSpace) -> None:
    assert EINVAL == mm.set_sysctl("overcommit_memory", 3)
    assert EINVAL == mm.set_sysctl("max_map_count", -1)
    assert EINVAL == mm.set_sysctl("nr_hugepages", 1)
    assert EINVAL == mm.open_file(-1)
    assert EINVAL == mm.open_file(1, 7)
