"""Page faults for fastmodel's kernel [4.6: arch/x86/mm/fault.c __do_page_fault; mm/memory.c
handle_mm_fault, handle_pte_fault, do_anonymous_page, do_fault, do_wp_page].

Same decisions, in the same order, as the reference kernel's fault path (the order of page
allocations, PTE stores and flushes is observable: it decides pfns and TLB contents), but a
page is a pfn into ``fastmodel.kernel_pages.PageFrames`` rather than an object, and the
per-fault helpers are flattened so that one fault costs a handful of dict and memoryview
operations.  Everything reaches the parts through their contracts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fastmodel.kernel_pages import ANON, FILE, SHMEM, Inode
from specs import gfp
from specs import pte as pt
from specs.errno import Errno
from specs.kernel import (
    BUS_ADRERR,
    FAULT_AROUND_PAGES,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGBUS,
    SIGSEGV,
    VM_FAULT_ERROR,
    VM_FAULT_MAJOR,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    FaultResult,
)
from specs.pagetable import Level
from specs.tlb import PF_PROT
from specs.vma import (
    TASK_SIZE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_IO,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VmaView,
)

if TYPE_CHECKING:
    from fastmodel.kernel import FastKernel, Proc

PAGE_SIZE: Final = pt.PAGE_SIZE
PAGE_SHIFT: Final = pt.PAGE_SHIFT
#: [4.6: include/linux/highmem.h alloc_zeroed_user_highpage_movable] an anon page
GFP_ANON: Final = gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_ZERO
#: [4.6: mm/memory.c wp_page_copy, do_cow_fault] a page about to be overwritten by a copy
GFP_COPY: Final = gfp.GFP_HIGHUSER_MOVABLE
#: [4.6: mm/filemap.c page_cache_read] a regular file's page-cache page
GFP_FILE_CACHE: Final = gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_COLD
_RW_SHARED: Final = VM_WRITE | VM_SHARED
_ANY_ACCESS: Final = VM_READ | VM_EXEC | VM_WRITE
_PROT_BITS: Final = VM_READ | VM_WRITE | VM_EXEC | VM_SHARED
_PRESENT: Final = pt._PAGE_PRESENT | pt._PAGE_PROTNONE
_DIRTY: Final = pt._PAGE_DIRTY | pt._PAGE_SOFT_DIRTY  # pte_mkdirty sets both


def page_index(vma: VmaView, addr: int) -> int:
    """[4.6: include/linux/pagemap.h linear_page_index]."""
    return ((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff


def page_prot(k: FastKernel, proc: Proc, vma: VmaView) -> int:
    """vm_page_prot [4.6: mm/mmap.c vm_get_page_prot, vma_set_page_prot,
    vma_wants_writenotify]: a shared writable mapping of a regular file (not shmem) drops
    the SHARED column, so its PTEs start read-only and the first write is noticed."""
    bits = vma.flags & _PROT_BITS
    if (bits & _RW_SHARED == _RW_SHARED and vma.file is not None
            and not k.inodes[proc.files[vma.file]].shmem):
        bits &= ~VM_SHARED
    return pt.PROTECTION_MAP[bits]


def _segv(addr: int, code: int, vm_fault: int = 0) -> FaultResult:
    return FaultResult(signal=SIGSEGV, si_code=code, addr=addr, vm_fault=vm_fault)


def _bad_access(error_code: int, write: bool, flags: int) -> bool:
    """[4.6: arch/x86/mm/fault.c access_error] without protection keys."""
    if write:
        return not flags & VM_WRITE
    return bool(error_code & PF_PROT) or not flags & _ANY_ACCESS


def do_page_fault(k: FastKernel, proc: Proc, cpu: int, addr: int, write: bool,
                  error_code: int) -> FaultResult | None:
    """None when handled (the access retries), else the signal or VM_FAULT_OOM [4.6:
    arch/x86/mm/fault.c __do_page_fault, bad_area, mm_fault_error].  The refusals of
    ``AddressSpace.touch`` are all -EFAULT; which signal it meant is read back from the VMA
    it leaves.  [Simplified: the stack guard-page check inside touch runs on every fault in
    a stack VMA, not only for a none PTE.]"""
    if addr >= TASK_SIZE:
        return _segv(addr, SEGV_MAPERR)  # a user fault on a kernel address
    space = proc.space
    vma = space.find_vma(addr)
    if vma is None:
        return _segv(addr, SEGV_MAPERR)
    below = vma.start > addr
    if below and not vma.flags & VM_GROWSDOWN:
        return _segv(addr, SEGV_MAPERR)
    if not below and _bad_access(error_code, write, vma.flags):
        return _segv(addr, SEGV_ACCERR)
    if space.touch(addr, write) < 0:
        vma = space.find_vma(addr)
        if vma is None or vma.start > addr:
            return _segv(addr, SEGV_MAPERR)  # the stack could not grow
        if _bad_access(error_code, write, vma.flags):
            return _segv(addr, SEGV_ACCERR)
        if vma.file is None:
            return _segv(addr, SEGV_MAPERR, VM_FAULT_SIGSEGV)  # the guard gap
        return FaultResult(signal=SIGBUS, si_code=BUS_ADRERR, addr=addr,
                           vm_fault=VM_FAULT_SIGBUS)
    vma = space.find_vma(addr)  # touch may have grown the stack or prepared an anon_vma
    if vma is None or vma.start > addr:
        return _segv(addr, SEGV_MAPERR)
    ret = handle_mm_fault(k, proc, cpu, vma, addr, write)
    if ret & VM_FAULT_OOM:
        return FaultResult(signal=0, si_code=0, addr=addr, vm_fault=ret)
    if ret & VM_FAULT_SIGBUS:
        return FaultResult(signal=SIGBUS, si_code=BUS_ADRERR, addr=addr, vm_fault=ret)
    if ret & VM_FAULT_SIGSEGV:
        return _segv(addr, SEGV_MAPERR, ret)
    return None


def handle_mm_fault(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
                    write: bool) -> int:
    """[4.6: mm/memory.c __handle_mm_fault, handle_pte_fault] (no THP, swap or NUMA)."""
    addr &= pt.PAGE_MASK
    tables = k.tables
    if tables.pte_alloc(proc.mm, addr):
        return VM_FAULT_OOM
    level, entry = tables.walk(proc.mm, addr)
    if level != Level.PTE:
        raise RuntimeError(f"pte_alloc({addr:#x}) succeeded but the walk stops at {level}")
    if not entry & _PRESENT:
        if vma.file is None:
            return do_anonymous_page(k, proc, cpu, vma, addr, write)
        return do_fault(k, proc, cpu, vma, addr, write)
    if not write:
        return 0  # a read of a present entry stores nothing back
    if not entry & pt._PAGE_RW:
        return do_wp_page(k, proc, cpu, vma, addr, entry)
    # ptep_set_access_flags: young and dirty, stored only when that changes the entry
    updated = entry | _DIRTY | pt._PAGE_ACCESSED
    if updated != entry:
        tables.set_pte_at(proc.mm, addr, updated)
    return 0


def _map_new(k: FastKernel, proc: Proc, vma: VmaView, addr: int, pfn: int, member: int,
             write: bool) -> None:
    """do_set_pte [4.6: mm/memory.c]: the PTE, the RSS counter and one more mapping."""
    entry = pt.pfn_pte(pfn, page_prot(k, proc, vma))
    if write:  # maybe_mkwrite(pte_mkdirty()) [4.6: include/linux/mm.h maybe_mkwrite]
        entry |= _DIRTY
        if vma.flags & VM_WRITE:
            entry |= pt._PAGE_RW
    proc.rss[member] += 1
    k.frames.m_map[pfn] += 1  # page_add_new_anon_rmap / page_add_file_rmap
    k.tables.set_pte_at(proc.mm, addr, entry)


def do_anonymous_page(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
                      write: bool) -> int:
    """[4.6: mm/memory.c do_anonymous_page] the zero page, special and uncounted, for a
    read; a fresh zeroed page for a write."""
    if vma.flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    prot = page_prot(k, proc, vma)
    if not write:
        k.tables.set_pte_at(proc.mm, addr, pt.pfn_pte(k.zero_pfn, prot) | pt._PAGE_SPECIAL)
        return 0
    pfn = k.alloc_user_page(ANON, GFP_ANON, cpu)
    if pfn is None:
        return VM_FAULT_OOM
    k.frames.m_index[pfn] = page_index(vma, addr)
    entry = pt.pfn_pte(pfn, prot)
    if vma.flags & VM_WRITE:
        entry |= _DIRTY | pt._PAGE_RW
    proc.rss[ANON] += 1
    k.frames.m_map[pfn] = 1
    k.tables.set_pte_at(proc.mm, addr, entry)
    return 0


# -- file and shmem ---------------------------------------------------------------------------


def do_fault(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
             write: bool) -> int:
    """[4.6: mm/memory.c do_fault] beyond EOF is SIGBUS; then a read, a private write or a
    shared write."""
    assert vma.file is not None
    inode = k.inodes[proc.files[vma.file]]
    pgoff = page_index(vma, addr)
    if pgoff >= inode.nr_pages:
        return VM_FAULT_SIGBUS  # [4.6: mm/filemap.c filemap_fault; mm/shmem.c shmem_fault]
    if not write:
        return do_read_fault(k, proc, cpu, vma, addr, inode, pgoff)
    if vma.flags & VM_SHARED:
        return do_shared_fault(k, proc, cpu, vma, addr, inode, pgoff)
    return do_cow_fault(k, proc, cpu, vma, addr, inode, pgoff)


def cache_page(k: FastKernel, inode: Inode, index: int, cpu: int) -> tuple[int, int]:
    """(pfn, VM_FAULT_MAJOR or 0) of the page-cache page at index, read from disk (a file) or
    zeroed (shmem) on a miss; (-1, 0) when no page can be had.  The cache keeps the
    allocation's reference [4.6: mm/filemap.c filemap_fault, page_cache_read; mm/shmem.c
    shmem_getpage_gfp]."""
    pfn = inode.cache.get(index)
    if pfn is not None:
        return pfn, 0
    if inode.shmem:
        got = k.alloc_user_page(SHMEM, GFP_ANON, cpu)
    else:
        got = k.alloc_user_page(FILE, GFP_FILE_CACHE, cpu)
    if got is None:
        return -1, 0
    frames = k.frames
    frames.m_index[got] = index
    frames.m_inode[got] = inode.ident
    frames.m_cached[got] = True
    block = inode.disk[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]
    if block.count(0) != len(block):
        frames.write(got, 0, block)
    inode.cache[index] = got
    return got, (0 if inode.shmem else VM_FAULT_MAJOR)


def fault_around(k: FastKernel, proc: Proc, vma: VmaView, addr: int, inode: Inode,
                 pgoff: int) -> None:
    """[4.6: mm/memory.c do_fault_around; mm/filemap.c filemap_map_pages] map, read-only,
    the pages already in the cache within the aligned 16-page window around addr, clipped to
    the VMA and to addr's PTE table."""
    window = FAULT_AROUND_PAGES * PAGE_SIZE
    start = max(addr & ~(window - 1) & pt.PAGE_MASK, vma.start)
    first = pgoff - (((addr - start) >> PAGE_SHIFT) & (pt.PTRS_PER_PTE - 1))
    last = min(first - ((start >> PAGE_SHIFT) & (pt.PTRS_PER_PTE - 1)) + pt.PTRS_PER_PTE - 1,
               vma.pages + vma.pgoff - 1, first + FAULT_AROUND_PAGES - 1)
    walk, mm = k.tables.walk, proc.mm
    # filemap_map_pages starts at the first none PTE of the window
    while walk(mm, start)[1]:
        first += 1
        start += PAGE_SIZE
        if first > last or start >= vma.end:
            return
    cache, limit = inode.cache, inode.nr_pages
    for index in range(first, min(last, limit - 1) + 1):
        pfn = cache.get(index)
        if pfn is None:
            continue
        at = start + ((index - first) << PAGE_SHIFT)
        if walk(mm, at)[1]:
            continue
        k.get_page(pfn)
        _map_new(k, proc, vma, at, pfn, k.frames.m_member[pfn], write=False)


def do_read_fault(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
                  inode: Inode, pgoff: int) -> int:
    """[4.6: mm/memory.c do_read_fault] fault-around, then the page itself if still
    unmapped."""
    fault_around(k, proc, vma, addr, inode, pgoff)
    if k.tables.walk(proc.mm, addr)[1]:
        return 0
    pfn, ret = cache_page(k, inode, pgoff, cpu)
    if pfn < 0:
        return VM_FAULT_OOM
    k.get_page(pfn)
    _map_new(k, proc, vma, addr, pfn, k.frames.m_member[pfn], write=False)
    return ret


def do_cow_fault(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
                 inode: Inode, pgoff: int) -> int:
    """[4.6: mm/memory.c do_cow_fault] a private write: the new anon page is allocated
    first, then filled from the cache page, which stays unmapped."""
    new = k.alloc_user_page(ANON, GFP_COPY, cpu)
    if new is None:
        return VM_FAULT_OOM
    cached, ret = cache_page(k, inode, pgoff, cpu)
    if cached < 0:
        k.put_page(new, cpu)
        return VM_FAULT_OOM
    k.frames.copy(new, cached)
    k.frames.m_index[new] = pgoff
    _map_new(k, proc, vma, addr, new, ANON, write=True)
    return ret


def do_shared_fault(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
                    inode: Inode, pgoff: int) -> int:
    """[4.6: mm/memory.c do_shared_fault] the cache page itself, mapped writable and dirty."""
    pfn, ret = cache_page(k, inode, pgoff, cpu)
    if pfn < 0:
        return VM_FAULT_OOM
    k.get_page(pfn)
    _map_new(k, proc, vma, addr, pfn, k.frames.m_member[pfn], write=True)
    return ret


# -- write-protect faults -----------------------------------------------------------------------


def do_wp_page(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
               entry: int) -> int:
    """[4.6: mm/memory.c do_wp_page, wp_page_reuse, wp_page_shared, wp_pfn_shared;
    mm/swapfile.c reuse_swap_page] reuse when the page has this one mapping (an anon page
    of mapcount 1) or the mapping is shared and writable; otherwise copy.  Only the
    mapcount decides, never the refcount."""
    old = k.normal_page(entry)
    shared_writable = vma.flags & _RW_SHARED == _RW_SHARED
    if old < 0:
        reuse = shared_writable
    elif k.frames.m_member[old] == ANON:
        reuse = k.frames.m_map[old] == 1
    else:
        reuse = shared_writable
    if not reuse:
        return wp_page_copy(k, proc, cpu, vma, addr, old)
    # wp_page_reuse: young, dirty, writable in place; an upgrade needs no flush
    entry |= pt._PAGE_ACCESSED | _DIRTY
    if vma.flags & VM_WRITE:
        entry |= pt._PAGE_RW
    k.tables.set_pte_at(proc.mm, addr, entry)
    return VM_FAULT_WRITE


def wp_page_copy(k: FastKernel, proc: Proc, cpu: int, vma: VmaView, addr: int,
                 old: int) -> int:
    """[4.6: mm/memory.c wp_page_copy; mm/pgtable-generic.c ptep_clear_flush] copy into a
    new anon page (zeroed when the old one is the zero page), clear and flush the old
    translation, install the copy, and only then drop the old page's mapping and
    reference."""
    frames = k.frames
    new = k.alloc_user_page(ANON, GFP_ANON if old < 0 else GFP_COPY, cpu)
    if new is None:
        return VM_FAULT_OOM
    if old >= 0:
        frames.copy(new, old)
    frames.m_index[new] = page_index(vma, addr)
    if old < 0:
        proc.rss[ANON] += 1
    else:
        member = frames.m_member[old]
        if member != ANON:
            proc.rss[member] -= 1
            proc.rss[ANON] += 1
    entry = pt.pfn_pte(new, page_prot(k, proc, vma)) | _DIRTY
    if vma.flags & VM_WRITE:
        entry |= pt._PAGE_RW
    was = k.tables.ptep_get_and_clear(proc.mm, addr)
    if was & pt._PAGE_PRESENT:  # pte_accessible
        k.tlb.flush_tlb_page(cpu, k.tlb_mm(proc), addr)
    frames.m_map[new] = 1
    k.tables.set_pte_at(proc.mm, addr, entry)
    if old >= 0:
        frames.m_map[old] -= 1  # page_remove_rmap
        k.put_page(old, cpu)
    return VM_FAULT_WRITE


# -- prefaulting ------------------------------------------------------------------------------


def populate(k: FastKernel, proc: Proc, cpu: int, start: int, length: int) -> None:
    """mmap's populate for MAP_POPULATE or VM_LOCKED [4.6: mm/gup.c __mm_populate]: each
    VMA meeting the range is faulted in; errors are ignored, but a VMA that stops part-way
    gets one more try from the page that failed.  VM_IO and VM_PFNMAP VMAs are left
    alone."""
    end = start + length
    pos = start
    while pos < end:
        vma = proc.space.find_vma(pos)
        if vma is None or vma.start >= end:
            return
        stop = min(end, vma.end)
        if not vma.flags & (VM_IO | VM_PFNMAP):
            pos = max(pos, vma.start)
            done = _populate_vma(k, proc, cpu, pos, stop)
            if done > 0:
                stop = pos + done * PAGE_SIZE
        pos = stop


def _populate_vma(k: FastKernel, proc: Proc, cpu: int, start: int, end: int) -> int:
    """get_user_pages over [start, end) of one VMA [4.6: mm/gup.c populate_vma_page_range,
    __get_user_pages, check_vma_flags, faultin_page]: FOLL_WRITE for a private writable
    VMA; a page mapped well enough already is skipped.  The pages done before the first
    failure, or -EFAULT (no access at all) / -EINTR (SIGKILL pending) / -ENOMEM when the
    first page fails."""
    vma = proc.space.find_vma(start)
    if vma is None:
        return -Errno.EFAULT
    if not vma.flags & _ANY_ACCESS:
        return -Errno.EFAULT  # no FOLL_FORCE: a VMA without any access is refused
    write = vma.flags & _RW_SHARED == VM_WRITE
    walk, mm = k.tables.walk, proc.mm
    done = 0
    state = proc.oom
    for addr in range(start, end, PAGE_SIZE):
        if state.sigkill:
            return done or -Errno.EINTR  # fatal_signal_pending: the task is dying
        level, entry = walk(mm, addr)
        if level == Level.PTE and entry & _PRESENT and (entry & pt._PAGE_RW or not write):
            done += 1
            continue
        now = proc.space.find_vma(addr) if proc.space.touch(addr, write) == 0 else None
        if now is None or handle_mm_fault(k, proc, cpu, now, addr, write) & VM_FAULT_ERROR:
            return done or -Errno.ENOMEM
        done += 1
    return done
