"""Deliberately broken address spaces: at least one per VMA check ID.

Each mutant is a :class:`refmodel.vma.RefAddressSpace` with one bug, shaped like a real
kernel bug (an off-by-one limit, a forgotten counter, a merge test left out), a docstring
naming it, ``subsystem = "vma"`` and the ``target`` check that must catch it in contract
mode.  Bugs inside the algorithm are broken copies of one refmodel function, swapped in by
:class:`MutantVma` while each system call runs (boot is left alone); the changed line carries
``# MUTATION:``.  ``refmodel`` itself is never edited.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import attrs

from refmodel import vma_calls, vma_core
from refmodel.vma import RefAddressSpace
from refmodel.vma_core import EINVAL, ENOMEM, Mm, Vma
from specs.machine import PAGE_SHIFT, PAGE_SIZE
from specs.vma import (
    MAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_MASK,
    TASK_SIZE,
    VM_LOCKED,
    MmView,
    page_align,
)
from tests.mutants import swapped

_MODULES = (vma_core, vma_calls)
#: refmodel function name -> the broken copy used instead
Patches = Mapping[str, Callable[..., Any]]


class MutantVma(RefAddressSpace):
    """RefAddressSpace with some refmodel functions replaced while each call runs."""

    target: ClassVar[str] = ""
    subsystem: ClassVar[str] = "vma"
    patches: ClassVar[Mapping[str, Callable[..., Any]]] = {}

    def _patched(self) -> contextlib.AbstractContextManager[None]:
        return swapped({(module, name): fn for name, fn in self.patches.items()
                        for module in _MODULES if hasattr(module, name)})

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        with self._patched():
            return super().mmap(addr, length, prot, flags, fd, offset)

    def munmap(self, addr: int, length: int) -> int:
        with self._patched():
            return super().munmap(addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        with self._patched():
            return super().mprotect(addr, length, prot)

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        with self._patched():
            return super().mremap(old_addr, old_len, new_len, flags, new_addr)

    def brk(self, addr: int) -> int:
        with self._patched():
            return super().brk(addr)

    def touch(self, addr: int, write: bool = True) -> int:
        with self._patched():
            return super().touch(addr, write)

    def dup_mm(self) -> RefAddressSpace | int:
        with self._patched():
            return super().dup_mm()


# ---------------------------------------------------------------------------------------------
# Broken copies
# ---------------------------------------------------------------------------------------------


def split_off_by_a_page(mm: Mm, vma: Vma, addr: int, new_below: bool) -> int:
    """__split_vma that leaves the lower piece one page too long."""
    new = Vma(start=vma.start, end=vma.end, flags=vma.flags, pgoff=vma.pgoff, file=vma.file,
              anon_vma=vma.anon_vma)
    if new_below:
        new.end = addr
        vma_core.vma_adjust(mm, vma, addr, vma.end,
                            vma.pgoff + ((addr - new.start) >> PAGE_SHIFT), new)
    else:
        new.start = addr
        new.pgoff += (addr - vma.start) >> PAGE_SHIFT
        vma_core.vma_adjust(mm, vma, vma.start, addr + PAGE_SIZE, vma.pgoff,  # MUTATION: addr
                            new)
    return 0


def merge_ignoring_pgoff_after(vma: Vma, flags: int, anon_vma: int | None,
                               file: vma_core.File | None, pgoff: int) -> bool:
    """can_vma_merge_after without the pgoff continuity test."""
    del pgoff  # MUTATION: the vm_pgoff + pages == pgoff test is gone
    return (vma_core.is_mergeable_vma(vma, file, flags)
            and vma_core.is_mergeable_anon_vma(anon_vma, vma.anon_vma, vma))


def merge_ignoring_pgoff_before(vma: Vma, flags: int, anon_vma: int | None,
                                file: vma_core.File | None, pgoff: int) -> bool:
    """can_vma_merge_before without the pgoff continuity test."""
    del pgoff  # MUTATION: the vm_pgoff == pgoff + pglen test is gone
    return (vma_core.is_mergeable_vma(vma, file, flags)
            and vma_core.is_mergeable_anon_vma(anon_vma, vma.anon_vma, vma))


def anon_vma_always_mergeable(a1: int | None, a2: int | None, vma: Vma | None) -> bool:
    """is_mergeable_anon_vma that never refuses."""
    return True  # MUTATION: was the NULL-or-equal test with the singular-chain condition


def split_vma_greater(mm: Mm, vma: Vma, addr: int, new_below: bool) -> int:
    """split_vma testing map_count > max_map_count instead of >=."""
    if mm.map_count > mm.max_map_count:  # MUTATION: was >=
        return ENOMEM
    return vma_core.__split_vma(mm, vma, addr, new_below)


def munmap_hole_is_an_error(mm: Mm, start: int, length: int) -> int:
    """do_munmap that calls unmapping nothing an error."""
    if not start & ~PAGE_MASK and start <= TASK_SIZE and length <= TASK_SIZE - start \
            and page_align(length) and not mm.overlaps(start, start + page_align(length)):
        return EINVAL  # MUTATION: 4.6 returns 0 when nothing is mapped there
    return vma_core_do_munmap(mm, start, length)


vma_core_do_munmap = vma_core.do_munmap


def munmap_splits_then_checks(mm: Mm, start: int, length: int) -> int:
    """do_munmap that splits the VMA before checking the map_count limit."""
    vma = mm.find_vma(start)
    end = start + page_align(length)
    if vma is not None and vma.start < start and end < vma.end \
            and mm.map_count >= mm.max_map_count and not start & ~PAGE_MASK:
        vma_core.__split_vma(mm, vma, start, False)  # MUTATION: split before the refusal
        return ENOMEM
    return vma_core_do_munmap(mm, start, length)


def brk_without_data_vm(mm: Mm, addr: int, length: int) -> int:
    """do_brk that forgets data_vm."""
    before = mm.data_vm
    result = vma_calls_do_brk(mm, addr, length)
    mm.data_vm = before  # MUTATION: the data_vm += pages line is gone
    return result


vma_calls_do_brk = vma_calls.do_brk


def fixup_without_charge(mm: Mm, vma: Vma, prev: Vma | None, start: int, end: int,
                         newflags: int) -> tuple[int, Vma]:
    """mprotect_fixup that sets VM_ACCOUNT but takes no charge."""
    committed = mm.committed
    error, pprev = vma_calls_mprotect_fixup(mm, vma, prev, start, end, newflags)
    mm.committed = committed  # MUTATION: security_vm_enough_memory_mm's charge is dropped
    return error, pprev


vma_calls_mprotect_fixup = vma_calls.mprotect_fixup


def no_mergeable_anon_vma(mm: Mm, vma: Vma) -> int | None:
    """find_mergeable_anon_vma that never finds one."""
    return None  # MUTATION: the next/prev reusable_anon_vma lookups are gone


# ---------------------------------------------------------------------------------------------
# The mutants
# ---------------------------------------------------------------------------------------------


class SplitOffByAPage(MutantVma):
    """__split_vma ends the lower piece one page above the split address."""

    target = "VMA-I1"
    patches: ClassVar[Patches] = {"__split_vma": split_off_by_a_page}


class MergeForgetsMapCount(MutantVma):
    """vma_adjust removes the VMA a merge absorbed without map_count--."""

    target = "VMA-I2"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.map_count = len(self.mm.vmas)

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        original_link, original_adjust = Mm.link, vma_core.vma_adjust
        space = self

        def link(mm: Mm, vma: Vma) -> None:
            original_link(mm, vma)
            space.map_count += 1

        def adjust(mm: Mm, vma: Vma, start: int, end: int, pgoff: int,
                   insert: Vma | None = None) -> None:
            original_adjust(mm, vma, start, end, pgoff, insert)
            # MUTATION: a VMA removed here is not counted down

        Mm.link = link  # type: ignore[method-assign, assignment]
        vma_core.vma_adjust = adjust
        try:
            yield
        finally:
            Mm.link = original_link  # type: ignore[method-assign]
            vma_core.vma_adjust = original_adjust

    def munmap(self, addr: int, length: int) -> int:
        before = len(self.mm.vmas)
        with self._patched():
            result = RefAddressSpace.munmap(self, addr, length)
        self.map_count -= max(before - len(self.mm.vmas), 0)  # munmap counts down correctly
        return result

    def view(self) -> MmView:
        return attrs.evolve(super().view(), map_count=self.map_count)

    def dup_mm(self) -> RefAddressSpace | int:
        child = RefAddressSpace.dup_mm(self)  # fork copies the count as it stands
        if isinstance(child, MergeForgetsMapCount):
            child.map_count = self.map_count
        return child


class BrkForgetsDataVm(MutantVma):
    """do_brk adds the heap's pages to total_vm but not to data_vm."""

    target = "VMA-I3"
    patches: ClassVar[Patches] = {"do_brk": brk_without_data_vm}


class MprotectSkipsTheCharge(MutantVma):
    """mprotect_fixup marks a newly writable private VMA VM_ACCOUNT without charging it."""

    target = "VMA-I4"
    #: VMA-I4 checks "at least": other charges can hide the missing one for a while
    examples = 120
    patches: ClassVar[Patches] = {"mprotect_fixup": fixup_without_charge}


class FixedAddressRoundedDown(MutantVma):
    """do_mmap rounds an unaligned MAP_FIXED address down instead of refusing it."""

    target = "VMA-R1"

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        if flags & MAP_FIXED:
            addr &= PAGE_MASK  # MUTATION: get_unmapped_area returns -EINVAL for this
        return super().mmap(addr, length, prot, flags, fd, offset)


class MunmapSplitsBeforeTheLimit(MutantVma):
    """do_munmap splits the VMA before it checks map_count, then refuses with the split done."""

    target = "VMA-R2"
    examples = 150  # the limit needs a few steps to reach; caught under 7 of 8 seeds at 60
    patches: ClassVar[Patches] = {"do_munmap": munmap_splits_then_checks}


class MunmapOfAHoleFails(MutantVma):
    """do_munmap returns -EINVAL when no VMA intersects the range."""

    target = "VMA-R3"
    patches: ClassVar[Patches] = {"do_munmap": munmap_hole_is_an_error}


class MergeIgnoresPgoff(MutantVma):
    """vma_merge merges neighbours whose file offsets are not continuous."""

    target = "VMA-R4"
    patches: ClassVar[Patches] = {"can_vma_merge_after": merge_ignoring_pgoff_after,
                                  "can_vma_merge_before": merge_ignoring_pgoff_before}


class MergeIgnoresAnonVma(MutantVma):
    """vma_merge merges VMAs whatever their anon_vmas (is_mergeable_anon_vma always true)."""

    target = "VMA-R5"
    patches: ClassVar[Patches] = {"is_mergeable_anon_vma": anon_vma_always_mergeable}


class MprotectRollsBack(MutantVma):
    """mprotect undoes the VMAs it already changed when it meets a hole or a refusal."""

    target = "VMA-R5"

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        saved = copy.deepcopy(self.mm)
        result = super().mprotect(addr, length, prot)
        if result < 0:
            self.mm = saved  # MUTATION: 4.6 keeps the changes made before the refusal
        return result


class SplitLimitOffByOne(MutantVma):
    """split_vma refuses only above max_map_count instead of at it."""

    target = "VMA-R6"
    patches: ClassVar[Patches] = {"split_vma": split_vma_greater}


class BrkReturnsAnErrno(MutantVma):
    """sys_brk returns -ENOMEM when it refuses, instead of the old break."""

    target = "VMA-R7"

    def brk(self, addr: int) -> int:
        old = self.mm.brk
        result = super().brk(addr)
        if result == old and addr & ((1 << 64) - 1) != old:
            return ENOMEM  # MUTATION: 4.6 returns the unchanged break
        return result


class MremapMovesWithoutMaymove(MutantVma):
    """mremap moves a mapping it cannot grow in place even without MREMAP_MAYMOVE."""

    target = "VMA-R8"
    examples = 150  # caught under 7 of 8 seeds at 60

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        if not flags & ~MREMAP_MAYMOVE:
            flags |= MREMAP_MAYMOVE  # MUTATION: the caller did not allow a move
        return super().mremap(old_addr, old_len, new_len, flags, new_addr)


class AnonVmaNeverShared(MutantVma):
    """anon_vma_prepare always allocates a new anon_vma, never reusing a neighbour's."""

    target = "VMA-R9"
    patches: ClassVar[Patches] = {"find_mergeable_anon_vma": no_mergeable_anon_vma}



class ForkKeepsVmLocked(MutantVma):
    """dup_mmap copies vm_flags without clearing VM_LOCKED, so the child inherits mlock."""

    target = "VMA-R10"

    def dup_mm(self) -> RefAddressSpace | int:
        child = super().dup_mm()
        if isinstance(child, RefAddressSpace):
            for theirs, mine in zip(self.mm.vmas, child.mm.vmas, strict=False):
                mine.flags |= theirs.flags & VM_LOCKED  # MUTATION: the flag is not cleared
        return child


class ForkSharesOneAnonVma(MutantVma):
    """anon_vma_fork hands parent VMAs that share an anon_vma one new anon_vma between them."""

    target = "VMA-R10"
    #: needs a fork after a split of a written VMA: caught under 28 of 30 seeds at 60
    #: examples, 30 of 30 at 150
    examples: ClassVar[int] = 150

    def dup_mm(self) -> RefAddressSpace | int:
        child = super().dup_mm()
        if isinstance(child, RefAddressSpace):
            first: dict[int, int] = {}
            for theirs, mine in zip(self.mm.vmas, child.mm.vmas, strict=False):
                if theirs.anon_vma is not None and mine.anon_vma is not None:
                    # MUTATION: one copy per parent anon_vma instead of one per VMA
                    mine.anon_vma = first.setdefault(theirs.anon_vma, mine.anon_vma)
        return child
