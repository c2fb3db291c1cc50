"""Page faults: from the x86 entry to the PTE [4.6: arch/x86/mm/fault.c __do_page_fault;
mm/memory.c handle_mm_fault, handle_pte_fault, do_anonymous_page, do_fault, do_wp_page].

Functions take the composed kernel (``refmodel/kernel.py``) and the faulting process; they
change page tables through the ``PageTables`` contract, take pages from the
``PageAllocator``, flush through the ``Tlb`` and ask the ``AddressSpace`` for VMAs and for
the VMA-level effects of a fault (``touch``: stack growth, anon_vma_prepare).  The order of
steps is 4.6's wherever a mutant could hide in a reordering: a COW break flushes the old
translation before the old page loses its mapping and reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from specs import gfp
from specs import pte as pt
from specs.kernel import (
    BUS_ADRERR,
    FAULT_AROUND_PAGES,
    RSS_OF,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGBUS,
    SIGSEGV,
    VM_FAULT_MAJOR,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    FaultResult,
    PageKind,
)
from specs.pagetable import Level
from specs.tlb import PF_PROT
from specs.vma import (
    TASK_SIZE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VmaView,
)

if TYPE_CHECKING:
    from refmodel.kernel import Process, RefKernel

PAGE_SIZE: Final = pt.PAGE_SIZE
#: [4.6: include/linux/gfp.h] what user pages are allocated with; __GFP_ZERO for anon pages
#: [4.6: include/linux/highmem.h alloc_zeroed_user_highpage_movable]
GFP_USER_PAGE: Final = gfp.GFP_HIGHUSER_MOVABLE
GFP_ZEROED_USER_PAGE: Final = gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_ZERO
#: [4.6: mm/filemap.c page_cache_read] a page-cache page for a file read
GFP_CACHE_PAGE: Final = gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_COLD


@attrs.define(eq=False)
class Page:
    """A user page the kernel holds: anon, regular-file page cache, or shmem."""

    pfn: int
    kind: PageKind
    #: page_count: 1 from the allocation, then one per reference (PTE, page cache)
    refcount: int = 1
    #: PTEs mapping the page (page_mapcount, i.e. _mapcount + 1)
    mapcount: int = 0
    index: int = 0
    inode: int | None = None
    cached: bool = False
    #: the contents; None while the page is all zeros (contents are stored sparsely)
    data: bytearray | None = None

    def read(self, offset: int, n: int) -> bytes:
        if self.data is None:
            return bytes(n)
        return bytes(self.data[offset:offset + n])

    def write(self, offset: int, data: bytes) -> None:
        if self.data is None:
            self.data = bytearray(PAGE_SIZE)
        self.data[offset:offset + len(data)] = data


@attrs.define(eq=False)
class Inode:
    """A file or shmem object: its size, what is on disk and its page cache."""

    ident: int
    size: int
    shmem: bool
    disk: bytes = b""
    cache: dict[int, Page] = attrs.Factory(dict)

    @property
    def nr_pages(self) -> int:
        """Pages up to EOF, the last one partial."""
        return (self.size + PAGE_SIZE - 1) // PAGE_SIZE


def linear_page_index(vma: VmaView, addr: int) -> int:
    """[4.6: include/linux/pagemap.h linear_page_index]."""
    return ((addr - vma.start) >> pt.PAGE_SHIFT) + vma.pgoff


def vma_wants_writenotify(k: RefKernel, proc: Process, vma: VmaView) -> bool:
    """A shared writable mapping of a regular file is mapped read-only so the first write is
    seen (dirty accounting, page_mkwrite); shmem needs no notification [4.6: mm/mmap.c
    vma_wants_writenotify]."""
    if vma.flags & (VM_WRITE | VM_SHARED) != VM_WRITE | VM_SHARED or vma.file is None:
        return False
    return not k.inode_of(proc, vma.file).shmem


def vm_page_prot(k: RefKernel, proc: Process, vma: VmaView) -> int:
    """[4.6: mm/mmap.c vm_get_page_prot, vma_set_page_prot] protection_map, without the
    SHARED column when write notification is wanted."""
    prot_bits = vma.flags & (VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)
    if vma_wants_writenotify(k, proc, vma):
        prot_bits &= ~VM_SHARED
    return pt.PROTECTION_MAP[prot_bits]


def maybe_mkwrite(entry: int, vma: VmaView) -> int:
    """[4.6: include/linux/mm.h maybe_mkwrite]."""
    return pt.pte_mkwrite(entry) if vma.flags & VM_WRITE else entry


# -- the x86 entry ------------------------------------------------------------------------------


def segv(addr: int, si_code: int, vm_fault: int = 0) -> FaultResult:
    return FaultResult(signal=SIGSEGV, si_code=si_code, addr=addr, vm_fault=vm_fault)


def access_error(error_code: int, write: bool, flags: int) -> bool:
    """[4.6: arch/x86/mm/fault.c access_error] (no protection keys)."""
    if write:
        return not flags & VM_WRITE
    if error_code & PF_PROT:
        return True
    return not flags & (VM_READ | VM_EXEC | VM_WRITE)


def do_page_fault(k: RefKernel, proc: Process, cpu: int, addr: int, write: bool,
                  error_code: int) -> FaultResult | None:
    """__do_page_fault for a canonical address: None when the fault was handled and the
    access can be retried, else the signal (or VM_FAULT_OOM) [4.6: arch/x86/mm/fault.c
    __do_page_fault, bad_area, mm_fault_error].

    The VMA-level effects come from ``AddressSpace.touch``; since it answers every refusal
    with -EFAULT, the signal is recovered from the VMA it leaves at ``addr``.
    [Simplified: touch runs the stack guard-page check on every fault in a stack VMA, where
    4.6 runs it only for a PTE that is none (do_anonymous_page).]"""
    if addr >= TASK_SIZE:
        return segv(addr, SEGV_MAPERR)  # fault_in_kernel_space -> bad_area_nosemaphore
    space = proc.space
    vma = space.find_vma(addr)
    if vma is None or (vma.start > addr and not vma.flags & VM_GROWSDOWN):
        return segv(addr, SEGV_MAPERR)
    if vma.start <= addr and access_error(error_code, write, vma.flags):
        return segv(addr, SEGV_ACCERR)
    if space.touch(addr, write) < 0:
        vma = space.find_vma(addr)
        if vma is None or vma.start > addr:
            return segv(addr, SEGV_MAPERR)  # expand_stack failed
        if access_error(error_code, write, vma.flags):
            return segv(addr, SEGV_ACCERR)
        if vma.file is None:
            return segv(addr, SEGV_MAPERR, VM_FAULT_SIGSEGV)  # stack guard page
        return FaultResult(signal=SIGBUS, si_code=BUS_ADRERR, addr=addr,
                           vm_fault=VM_FAULT_SIGBUS)
    vma = space.find_vma(addr)
    if vma is None or vma.start > addr:
        return segv(addr, SEGV_MAPERR)
    ret = handle_mm_fault(k, proc, cpu, vma, addr, write)
    if ret & VM_FAULT_OOM:
        return FaultResult(signal=0, si_code=0, addr=addr, vm_fault=ret)
    if ret & VM_FAULT_SIGBUS:
        return FaultResult(signal=SIGBUS, si_code=BUS_ADRERR, addr=addr, vm_fault=ret)
    if ret & VM_FAULT_SIGSEGV:
        return segv(addr, SEGV_MAPERR, ret)
    return None


# -- generic ------------------------------------------------------------------------------------


def handle_mm_fault(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                    write: bool) -> int:
    """[4.6: mm/memory.c __handle_mm_fault, handle_pte_fault] (no THP, no swap, no NUMA)."""
    addr &= pt.PAGE_MASK
    if k.tables.pte_alloc(proc.mm, addr):
        return VM_FAULT_OOM
    level, entry = k.tables.walk(proc.mm, addr)
    assert level == Level.PTE
    if not pt.pte_present(entry):
        if vma.file is None:
            return do_anonymous_page(k, proc, cpu, vma, addr, write)
        return do_fault(k, proc, cpu, vma, addr, write)
    if write and not pt.pte_write(entry):
        return do_wp_page(k, proc, cpu, vma, addr, entry)
    # ptep_set_access_flags writes back only a change made for a write
    updated = pt.pte_mkyoung(pt.pte_mkdirty(entry) if write else entry)
    if write and updated != entry:
        k.tables.set_pte_at(proc.mm, addr, updated)
    return 0


def do_anonymous_page(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                      write: bool) -> int:
    """A read maps the zero page (special, read-only, uncounted); a write maps a fresh
    zeroed page [4.6: mm/memory.c do_anonymous_page]."""
    if vma.flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    prot = vm_page_prot(k, proc, vma)
    if not write:
        k.tables.set_pte_at(proc.mm, addr, pt.pte_mkspecial(pt.pfn_pte(k.zero_pfn, prot)))
        return 0
    page = k.alloc_user_page(PageKind.ANON, GFP_ZEROED_USER_PAGE, cpu)
    if page is None:
        return VM_FAULT_OOM
    page.index = linear_page_index(vma, addr)
    entry = pt.pfn_pte(page.pfn, prot)
    if vma.flags & VM_WRITE:
        entry = pt.pte_mkwrite(pt.pte_mkdirty(entry))
    proc.rss[RSS_OF[PageKind.ANON]] += 1
    page.mapcount = 1  # page_add_new_anon_rmap
    k.tables.set_pte_at(proc.mm, addr, entry)
    return 0


# -- file faults --------------------------------------------------------------------------------


def do_fault(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
             write: bool) -> int:
    """[4.6: mm/memory.c do_fault] read, private write (COW) or shared write."""
    assert vma.file is not None
    inode = k.inode_of(proc, vma.file)
    pgoff = linear_page_index(vma, addr)
    if pgoff >= inode.nr_pages:
        return VM_FAULT_SIGBUS  # filemap_fault / shmem_fault beyond EOF
    if not write:
        return do_read_fault(k, proc, cpu, vma, addr, inode, pgoff)
    if not vma.flags & VM_SHARED:
        return do_cow_fault(k, proc, cpu, vma, addr, inode, pgoff)
    return do_shared_fault(k, proc, cpu, vma, addr, inode, pgoff)


def find_or_read_page(k: RefKernel, inode: Inode, index: int, cpu: int) -> tuple[Page | None,
                                                                                 int]:
    """The page-cache page at index, read in (file) or allocated zeroed (shmem) on a miss;
    (None, 0) when no page is left.  The page cache holds one reference; the caller takes
    its own [4.6: mm/filemap.c filemap_fault, page_cache_read; mm/shmem.c
    shmem_getpage_gfp]."""
    page = inode.cache.get(index)
    if page is not None:
        return page, 0
    kind = PageKind.SHMEM if inode.shmem else PageKind.FILE
    page = k.alloc_user_page(kind, GFP_ZEROED_USER_PAGE if inode.shmem else GFP_CACHE_PAGE,
                             cpu)
    if page is None:
        return None, 0
    page.index, page.inode, page.cached = index, inode.ident, True
    chunk = inode.disk[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]
    if any(chunk):
        page.write(0, chunk)
    inode.cache[index] = page
    return page, 0 if inode.shmem else VM_FAULT_MAJOR


def do_set_pte(k: RefKernel, proc: Process, vma: VmaView, addr: int, page: Page, write: bool,
               anon: bool) -> None:
    """Install the PTE for a faulted page and account it [4.6: mm/memory.c do_set_pte]."""
    entry = pt.pfn_pte(page.pfn, vm_page_prot(k, proc, vma))
    if write:
        entry = maybe_mkwrite(pt.pte_mkdirty(entry), vma)
    proc.rss[RSS_OF[page.kind]] += 1
    page.mapcount += 1  # page_add_new_anon_rmap or page_add_file_rmap
    k.tables.set_pte_at(proc.mm, addr, entry)
    del anon


def do_fault_around(k: RefKernel, proc: Process, vma: VmaView, addr: int, inode: Inode,
                    pgoff: int) -> None:
    """Map the already-cached pages of the aligned 16-page window around the fault,
    read-only, never crossing the VMA or the PTE table [4.6: mm/memory.c do_fault_around;
    mm/filemap.c filemap_map_pages]."""
    mask = ~(FAULT_AROUND_PAGES * PAGE_SIZE - 1) & pt.PAGE_MASK
    start = max(addr & mask, vma.start)
    off = ((addr - start) >> pt.PAGE_SHIFT) & (pt.PTRS_PER_PTE - 1)
    first = pgoff - off
    last = first - ((start >> pt.PAGE_SHIFT) & (pt.PTRS_PER_PTE - 1)) + pt.PTRS_PER_PTE - 1
    last = min(last, vma.pages + vma.pgoff - 1, first + FAULT_AROUND_PAGES - 1)
    while not pt.pte_none(k.tables.walk(proc.mm, start)[1]):
        first += 1
        start += PAGE_SIZE
        if first > last or start >= vma.end:
            return
    for index in range(first, last + 1):
        page = inode.cache.get(index)
        if page is None or index >= inode.nr_pages:
            continue
        at = start + ((index - first) << pt.PAGE_SHIFT)
        if not pt.pte_none(k.tables.walk(proc.mm, at)[1]):
            continue
        k.get_page(page)
        do_set_pte(k, proc, vma, at, page, write=False, anon=False)


def do_read_fault(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                  inode: Inode, pgoff: int) -> int:
    """Fault-around first; then the page itself, read-only [4.6: mm/memory.c
    do_read_fault]."""
    do_fault_around(k, proc, vma, addr, inode, pgoff)
    if not pt.pte_none(k.tables.walk(proc.mm, addr)[1]):
        return 0
    page, ret = find_or_read_page(k, inode, pgoff, cpu)
    if page is None:
        return VM_FAULT_OOM
    k.get_page(page)
    do_set_pte(k, proc, vma, addr, page, write=False, anon=False)
    return ret


def do_cow_fault(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                 inode: Inode, pgoff: int) -> int:
    """A write to a private file mapping: a private copy of the file page, mapped writable
    as an anon page; the page-cache page is not mapped [4.6: mm/memory.c do_cow_fault]."""
    new = k.alloc_user_page(PageKind.ANON, GFP_USER_PAGE, cpu)
    if new is None:
        return VM_FAULT_OOM
    cached, ret = find_or_read_page(k, inode, pgoff, cpu)
    if cached is None:
        k.put_page(new, cpu)
        return VM_FAULT_OOM
    if cached.data is not None:
        new.write(0, bytes(cached.data))
    new.index = pgoff
    do_set_pte(k, proc, vma, addr, new, write=True, anon=True)
    return ret


def do_shared_fault(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                    inode: Inode, pgoff: int) -> int:
    """A write to a shared mapping maps the page-cache page itself, writable and dirty
    [4.6: mm/memory.c do_shared_fault]."""
    page, ret = find_or_read_page(k, inode, pgoff, cpu)
    if page is None:
        return VM_FAULT_OOM
    k.get_page(page)
    do_set_pte(k, proc, vma, addr, page, write=True, anon=False)
    return ret


# -- write-protect faults -----------------------------------------------------------------------


def do_wp_page(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
               entry: int) -> int:
    """A write to a present read-only PTE: reuse the page when this is its only mapping (an
    anon page with mapcount 1, or a shared writable mapping), else copy [4.6: mm/memory.c
    do_wp_page, wp_page_reuse, wp_page_shared; mm/swapfile.c reuse_swap_page].

    4.6 decides reuse by mapcount alone; the refcount is not consulted."""
    old = k.normal_page(entry)
    shared_writable = vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED
    if old is None:
        if shared_writable:
            return wp_page_reuse(k, proc, vma, addr, entry)  # wp_pfn_shared
        return wp_page_copy(k, proc, cpu, vma, addr, None)
    if old.kind is PageKind.ANON:
        if old.mapcount == 1:
            return wp_page_reuse(k, proc, vma, addr, entry)
    elif shared_writable:
        return wp_page_reuse(k, proc, vma, addr, entry)
    return wp_page_copy(k, proc, cpu, vma, addr, old)


def wp_page_reuse(k: RefKernel, proc: Process, vma: VmaView, addr: int, entry: int) -> int:
    """Make the PTE young, dirty and writable in place; no flush is needed for an upgrade
    [4.6: mm/memory.c wp_page_reuse]."""
    k.tables.set_pte_at(proc.mm, addr,
                        maybe_mkwrite(pt.pte_mkdirty(pt.pte_mkyoung(entry)), vma))
    return VM_FAULT_WRITE


def wp_page_copy(k: RefKernel, proc: Process, cpu: int, vma: VmaView, addr: int,
                 old: Page | None) -> int:
    """Break COW: copy into a new anon page, clear the PTE and flush it from every TLB,
    install the copy, and only then drop the old page's mapping and reference [4.6:
    mm/memory.c wp_page_copy; mm/pgtable-generic.c ptep_clear_flush]."""
    gfp_mask = GFP_ZEROED_USER_PAGE if old is None else GFP_USER_PAGE
    new = k.alloc_user_page(PageKind.ANON, gfp_mask, cpu)
    if new is None:
        return VM_FAULT_OOM
    if old is not None and old.data is not None:
        new.write(0, bytes(old.data))
    new.index = linear_page_index(vma, addr)
    if old is None:
        proc.rss[RSS_OF[PageKind.ANON]] += 1
    elif old.kind is not PageKind.ANON:
        proc.rss[RSS_OF[old.kind]] -= 1
        proc.rss[RSS_OF[PageKind.ANON]] += 1
    entry = maybe_mkwrite(pt.pte_mkdirty(pt.pfn_pte(new.pfn, vm_page_prot(k, proc, vma))),
                          vma)
    was = k.tables.ptep_get_and_clear(proc.mm, addr)
    if was & pt._PAGE_PRESENT:  # pte_accessible
        k.tlb.flush_tlb_page(cpu, k.tlb_mm(proc), addr)
    new.mapcount = 1  # page_add_new_anon_rmap
    k.tables.set_pte_at(proc.mm, addr, entry)
    if old is not None:
        old.mapcount -= 1  # page_remove_rmap
        k.put_page(old, cpu)
    return VM_FAULT_WRITE
