"""Deliberately broken composed kernels: at least one per FAULT check ID.

Each mutant is a small subclass of :class:`refmodel.kernel.RefKernel` with one bug, a
docstring naming it, ``target`` (the check that must catch it) and ``subsystem = "fault"``.
Bugs inside the fault or fork path are broken copies of one ``refmodel`` function, swapped in
by :class:`MutantKernel` while each contract operation runs (``refmodel`` itself is never
edited); the changed line carries ``# MUTATION:``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ClassVar

import attrs

from refmodel import fault as rf
from refmodel import fork as rk
from refmodel.kernel import RefKernel
from specs import pte as pt
from specs.kernel import (
    RSS_OF,
    SEGV_ACCERR,
    SEGV_MAPERR,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_WRITE,
    FaultResult,
    PageKind,
)
from specs.vma import VM_SHARED, VM_WRITE, VmaView

if TYPE_CHECKING:
    from refmodel.fault import Inode, Page
    from refmodel.kernel import Process

from tests.mutants import PatchedOperations, Patches, swapped

OPERATIONS = ("spawn", "fork", "exit", "switch", "read", "write", "copy_from_user",
              "copy_to_user", "mmap", "munmap", "mprotect", "mremap", "brk")


class MutantKernel(PatchedOperations, RefKernel):
    """RefKernel with some refmodel functions replaced by broken copies during every contract
    operation (restored afterwards, even on an exception)."""

    subsystem: ClassVar[str] = "fault"
    target: ClassVar[str] = ""
    patches: ClassVar[Patches] = {}
    operations: ClassVar[tuple[str, ...]] = OPERATIONS

    def _patched(self) -> contextlib.AbstractContextManager[None]:
        return swapped(self.patches)


# -- broken copies ------------------------------------------------------------------------------


def copy_one_pte_no_parent_wrprotect(k: RefKernel, child: Process, parent: Process, addr: int,
                                     entry: int, flags: int) -> None:
    """copy_one_pte that write-protects only the child's copy."""
    if rk.is_cow_mapping(flags):
        entry = pt.pte_wrprotect(entry)  # MUTATION: the parent keeps RW
    if flags & VM_SHARED:
        entry = pt.pte_mkclean(entry)
    entry = pt.pte_mkold(entry)
    page = k.normal_page(entry)
    if page is not None:
        k.get_page(page)
        page.mapcount += 1
        child.rss[RSS_OF[page.kind]] += 1
    k.tables.set_pte_at(child.mm, addr, entry)


def copy_one_pte_no_get_page(k: RefKernel, child: Process, parent: Process, addr: int,
                             entry: int, flags: int) -> None:
    """copy_one_pte that adds the mapping but not the reference."""
    if rk.is_cow_mapping(flags):
        k.tables.ptep_set_wrprotect(parent.mm, addr)
        entry = pt.pte_wrprotect(entry)
    if flags & VM_SHARED:
        entry = pt.pte_mkclean(entry)
    entry = pt.pte_mkold(entry)
    page = k.normal_page(entry)
    if page is not None:
        page.mapcount += 1  # MUTATION: no get_page
        child.rss[RSS_OF[page.kind]] += 1
    k.tables.set_pte_at(child.mm, addr, entry)


def do_anonymous_page_writable_zero(k: RefKernel, proc: Process, cpu: int, vma: VmaView,
                                    addr: int, write: bool) -> int:
    """do_anonymous_page whose zero-page PTE gets RW in a writable VMA."""
    if vma.flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    prot = rf.vm_page_prot(k, proc, vma)
    if not write:
        zero = pt.pte_mkspecial(pt.pfn_pte(k.zero_pfn, prot))
        k.tables.set_pte_at(proc.mm, addr, rf.maybe_mkwrite(zero, vma))  # MUTATION: RW
        return 0
    page = k.alloc_user_page(PageKind.ANON, rf.GFP_ZEROED_USER_PAGE, cpu)
    if page is None:
        return VM_FAULT_OOM
    page.index = rf.linear_page_index(vma, addr)
    entry = pt.pfn_pte(page.pfn, prot)
    if vma.flags & VM_WRITE:
        entry = pt.pte_mkwrite(pt.pte_mkdirty(entry))
    proc.rss[RSS_OF[PageKind.ANON]] += 1
    page.mapcount = 1
    k.tables.set_pte_at(proc.mm, addr, entry)
    return 0


def do_anonymous_page_wrong_rss(k: RefKernel, proc: Process, cpu: int, vma: VmaView,
                                addr: int, write: bool) -> int:
    """do_anonymous_page that charges a new anon page to the file counter."""
    if vma.flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    prot = rf.vm_page_prot(k, proc, vma)
    if not write:
        k.tables.set_pte_at(proc.mm, addr, pt.pte_mkspecial(pt.pfn_pte(k.zero_pfn, prot)))
        return 0
    page = k.alloc_user_page(PageKind.ANON, rf.GFP_ZEROED_USER_PAGE, cpu)
    if page is None:
        return VM_FAULT_OOM
    page.index = rf.linear_page_index(vma, addr)
    entry = pt.pfn_pte(page.pfn, prot)
    if vma.flags & VM_WRITE:
        entry = pt.pte_mkwrite(pt.pte_mkdirty(entry))
    proc.rss[RSS_OF[PageKind.FILE]] += 1  # MUTATION: the wrong counter
    page.mapcount = 1
    k.tables.set_pte_at(proc.mm, addr, entry)
    return 0


def do_wp_page_reuse_any_anon(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                              entry: int) -> int:
    """do_wp_page that reuses an anon page whatever its mapcount."""
    old = k.normal_page(entry)
    shared_writable = vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED
    if old is None:
        if shared_writable:
            return rf.wp_page_reuse(k, proc, vma, addr, entry)
        return rf.wp_page_copy(k, proc, cpu, vma, addr, None)
    if old.kind is PageKind.ANON:
        return rf.wp_page_reuse(k, proc, vma, addr, entry)  # MUTATION: mapcount not checked
    if shared_writable:
        return rf.wp_page_reuse(k, proc, vma, addr, entry)
    return rf.wp_page_copy(k, proc, cpu, vma, addr, old)


def wp_page_copy_no_flush(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                          old: Page | None) -> int:
    """wp_page_copy that clears the old PTE without flushing it from the TLBs."""
    gfp_mask = rf.GFP_ZEROED_USER_PAGE if old is None else rf.GFP_USER_PAGE
    new = k.alloc_user_page(PageKind.ANON, gfp_mask, cpu)
    if new is None:
        return VM_FAULT_OOM
    if old is not None and old.data is not None:
        new.write(0, bytes(old.data))
    new.index = rf.linear_page_index(vma, addr)
    if old is None:
        proc.rss[RSS_OF[PageKind.ANON]] += 1
    elif old.kind is not PageKind.ANON:
        proc.rss[RSS_OF[old.kind]] -= 1
        proc.rss[RSS_OF[PageKind.ANON]] += 1
    entry = rf.maybe_mkwrite(pt.pte_mkdirty(pt.pfn_pte(new.pfn, rf.vm_page_prot(k, proc, vma))),
                             vma)
    k.tables.ptep_get_and_clear(proc.mm, addr)  # MUTATION: no flush_tlb_page
    new.mapcount = 1
    k.tables.set_pte_at(proc.mm, addr, entry)
    if old is not None:
        old.mapcount -= 1
        k.put_page(old, cpu)
    return VM_FAULT_WRITE


def do_anonymous_page_read_allocates(k: RefKernel, proc: Process, cpu: int, vma: VmaView,
                                     addr: int, write: bool) -> int:
    """do_anonymous_page whose read fault maps a fresh zeroed page instead of the zero
    page (counted and mapped consistently, read-only)."""
    if vma.flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    prot = rf.vm_page_prot(k, proc, vma)
    page = k.alloc_user_page(PageKind.ANON, rf.GFP_ZEROED_USER_PAGE, cpu)  # MUTATION: reads too
    if page is None:
        return VM_FAULT_OOM
    page.index = rf.linear_page_index(vma, addr)
    entry = pt.pfn_pte(page.pfn, prot)
    if write and vma.flags & VM_WRITE:
        entry = pt.pte_mkwrite(pt.pte_mkdirty(entry))
    proc.rss[RSS_OF[PageKind.ANON]] += 1
    page.mapcount = 1
    k.tables.set_pte_at(proc.mm, addr, entry)
    return 0


def do_wp_page_always_copy(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                           entry: int) -> int:
    """do_wp_page that copies an anon page even when this PTE is its only mapping."""
    old = k.normal_page(entry)
    shared_writable = vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED
    if old is None:
        if shared_writable:
            return rf.wp_page_reuse(k, proc, vma, addr, entry)
        return rf.wp_page_copy(k, proc, cpu, vma, addr, None)
    if old.kind is not PageKind.ANON and shared_writable:  # MUTATION: no anon reuse
        return rf.wp_page_reuse(k, proc, vma, addr, entry)
    return rf.wp_page_copy(k, proc, cpu, vma, addr, old)


def do_wp_page_reuse_at_two(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                            entry: int) -> int:
    """do_wp_page that also reuses an anon page mapped twice."""
    old = k.normal_page(entry)
    shared_writable = vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED
    if old is None:
        if shared_writable:
            return rf.wp_page_reuse(k, proc, vma, addr, entry)
        return rf.wp_page_copy(k, proc, cpu, vma, addr, None)
    if old.kind is PageKind.ANON:
        if old.mapcount <= 2:  # MUTATION: 4.6 reuses at mapcount 1 only
            return rf.wp_page_reuse(k, proc, vma, addr, entry)
    elif shared_writable:
        return rf.wp_page_reuse(k, proc, vma, addr, entry)
    return rf.wp_page_copy(k, proc, cpu, vma, addr, old)


def do_cow_fault_keeps_page(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                            inode: Inode, pgoff: int) -> int:
    """do_cow_fault that keeps its new anon page when the page-cache page cannot be had."""
    new = k.alloc_user_page(PageKind.ANON, rf.GFP_USER_PAGE, cpu)
    if new is None:
        return VM_FAULT_OOM
    cached, ret = rf.find_or_read_page(k, inode, pgoff, cpu)
    if cached is None:
        return VM_FAULT_OOM  # MUTATION: no put_page(new)
    if cached.data is not None:
        new.write(0, bytes(cached.data))
    new.index = pgoff
    rf.do_set_pte(k, proc, vma, addr, new, write=True, anon=True)
    return ret


def do_page_fault_maperr_for_accerr(k: RefKernel, proc: Process, cpu: int, addr: int,
                                    write: bool, error_code: int) -> FaultResult | None:
    """__do_page_fault that reports a permission fault as SEGV_MAPERR."""
    result = DO_PAGE_FAULT(k, proc, cpu, addr, write, error_code)
    if result is not None and result.si_code == SEGV_ACCERR:
        return attrs.evolve(result, si_code=SEGV_MAPERR)  # MUTATION: the wrong si_code
    return result


DO_PAGE_FAULT = rf.do_page_fault


# -- the mutants --------------------------------------------------------------------------------


class ForkLeavesParentWritable(MutantKernel):
    """Fork write-protects the child's COW PTEs but not the parent's."""

    target = "FAULT-I1"
    patches: ClassVar[Patches] = {(rk, "copy_one_pte"): copy_one_pte_no_parent_wrprotect}


class ForkSkipsGetPage(MutantKernel):
    """Fork maps the parent's pages into the child without taking a reference."""

    target = "FAULT-I2"
    patches: ClassVar[Patches] = {(rk, "copy_one_pte"): copy_one_pte_no_get_page}


class AnonFaultCountsAsFile(MutantKernel):
    """An anonymous write fault counts its new page in MM_FILEPAGES instead of MM_ANONPAGES."""

    target = "FAULT-I3"
    patches: ClassVar[Patches] = {(rf, "do_anonymous_page"): do_anonymous_page_wrong_rss}


class ZeroPageMappedWritable(MutantKernel):
    """An anonymous read fault in a writable VMA maps the zero page writable."""

    target = "FAULT-I4"
    patches: ClassVar[Patches] = {(rf, "do_anonymous_page"): do_anonymous_page_writable_zero}


class CowReusesSharedAnonPage(MutantKernel):
    """do_wp_page reuses an anon page that is still mapped in another mm."""

    target = "FAULT-I5"
    #: its bug needs a fork, a second CPU and a COW break in one example; measured: caught
    #: under 30 of 30 seeds at this budget (60 misses one)
    examples = 100
    patches: ClassVar[Patches] = {(rf, "do_wp_page"): do_wp_page_reuse_any_anon}


class CowBreakWithoutFlush(MutantKernel):
    """Breaking COW replaces the PTE without flushing the old translation from the TLBs."""

    target = "FAULT-I6"
    #: its bug needs a fork, a second CPU and a COW break in one example; measured: caught
    #: under 30 of 30 seeds at this budget (60 misses one)
    examples = 100
    patches: ClassVar[Patches] = {(rf, "wp_page_copy"): wp_page_copy_no_flush}


class MunmapWithoutFlush(MutantKernel):
    """munmap zaps the PTEs and frees the pages without flushing the TLBs."""

    target = "FAULT-I6"

    def _unmap_region(self, proc: Process, cpu: int, ranges: list[tuple[int, int]],
                      floor: int, ceiling: int) -> None:
        flush = self.tlb.flush_tlb_mm_range
        self.tlb.flush_tlb_mm_range = lambda *args, **kw: 0  # type: ignore[method-assign]
        try:  # MUTATION: the range flush is skipped
            super()._unmap_region(proc, cpu, ranges, floor, ceiling)
        finally:
            self.tlb.flush_tlb_mm_range = flush  # type: ignore[method-assign]


class ExitLeaksTables(MutantKernel):
    """Exit frees the pages but never the process's table pages and PGD."""

    target = "FAULT-I7"

    def _exit_mmap(self, proc: Process, cpu: int) -> None:
        teardown = self.tables.mm_teardown
        self.tables.mm_teardown = lambda mm: 0  # type: ignore[method-assign]  # MUTATION
        try:
            super()._exit_mmap(proc, cpu)
        finally:
            self.tables.mm_teardown = teardown  # type: ignore[method-assign]


class CopyFromUserStaleTail(MutantKernel):
    """copy_from_user leaves stale bytes in the part of the buffer it could not copy."""

    target = "FAULT-R1"

    def copy_from_user(self, cpu: int, addr: int, n: int) -> tuple[int, bytes] | int:
        result = super().copy_from_user(cpu, addr, n)
        if isinstance(result, int) or not result[0]:
            return result
        left, buffer = result
        return left, buffer[:n - left] + b"\xaa" * left  # MUTATION: no zero fill


class ReadFaultAllocatesPage(MutantKernel):
    """An anonymous read fault maps a freshly allocated zeroed page instead of the zero page."""

    target = "FAULT-R2"
    patches: ClassVar[Patches] = {(rf, "do_anonymous_page"): do_anonymous_page_read_allocates}


class CowAlwaysCopies(MutantKernel):
    """do_wp_page copies an anon page even at mapcount 1, where 4.6 reuses it in place."""

    target = "FAULT-R3"
    patches: ClassVar[Patches] = {(rf, "do_wp_page"): do_wp_page_always_copy}


class CowReusesAtMapcountTwo(MutantKernel):
    """do_wp_page reuses an anon page that two PTEs map."""

    target = "FAULT-R3"
    patches: ClassVar[Patches] = {(rf, "do_wp_page"): do_wp_page_reuse_at_two}


class ForkLeaksChildTablesOnFailure(MutantKernel):
    """A fork that fails partway frees the child's pages but never its table pages and PGD."""

    target = "FAULT-R4"

    def fork(self, pid: int) -> int:
        teardown = self.tables.mm_teardown
        self.tables.mm_teardown = lambda mm: 0  # type: ignore[method-assign]  # MUTATION
        try:
            return super().fork(pid)
        finally:
            self.tables.mm_teardown = teardown  # type: ignore[method-assign]


class CowFaultKeepsPageOnFailure(MutantKernel):
    """A private file write fault keeps its new anon page when the page-cache page cannot be
    allocated."""

    target = "FAULT-R4"
    patches: ClassVar[Patches] = {(rf, "do_cow_fault"): do_cow_fault_keeps_page}


class AccessErrorReportedAsMaperr(MutantKernel):
    """A write to a read-only VMA (or any access to PROT_NONE) gets SEGV_MAPERR instead of
    SEGV_ACCERR."""

    target = "FAULT-R5"
    patches: ClassVar[Patches] = {(rf, "do_page_fault"): do_page_fault_maperr_for_accerr}
