"""The composed reference kernel on hand-worked cases: private file COW, fault-around, the PTE
side of munmap/mprotect/mremap, context switches, and composition from other parts."""

from __future__ import annotations

from fastmodel.pagetable import FastPageTables
from refmodel.kernel import RefKernel
from specs import pte as pt
from specs.kernel import SEGV_ACCERR, SEGV_MAPERR, Capability, FaultResult, Kernel, RssMember
from specs.machine import preset
from specs.pagetable import Level
from specs.vma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MREMAP_MAYMOVE,
    PROT_READ,
    PROT_WRITE,
)

PAGE = pt.PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def pte(k: RefKernel, pid: int, addr: int) -> int:
    level, value = k.tables.walk(k.procs[pid].mm, addr)
    return value if level == Level.PTE else 0


def boot() -> tuple[RefKernel, int]:
    k = RefKernel(preset("tiny"))
    pid = k.spawn()
    assert k.switch(0, pid) == 0
    return k, pid


def test_refkernel_satisfies_the_protocol():
    k, _pid = boot()
    assert isinstance(k, Kernel)
    assert k.capabilities == frozenset(Capability)


def test_private_file_read_maps_the_cache_page_and_write_copies_it():
    k, pid = boot()
    fd = k.open_file(pid, PAGE, data=b"file")
    addr = k.mmap(pid, 0, PAGE, RW, MAP_PRIVATE, fd)
    assert k.read(0, addr, 4) == b"file"
    cached = k.view().inodes[0].cache[0][1]
    assert pt.pte_pfn(pte(k, pid, addr)) == cached
    assert not pt.pte_write(pte(k, pid, addr))
    assert k.view().by_pid[pid].rss == (1, 0, 0, 0)
    assert (k.view().by_pfn[cached].refcount, k.view().by_pfn[cached].mapcount) == (2, 1)
    assert k.write(0, addr, b"F") == 1
    assert pt.pte_pfn(pte(k, pid, addr)) != cached
    assert k.read(0, addr, 4) == b"File"
    assert k.file_contents(k.view().inodes[0].ident, 0, 4) == b"file"  # never written back
    assert k.view().by_pid[pid].rss == (0, 1, 0, 0)
    assert (k.view().by_pfn[cached].refcount, k.view().by_pfn[cached].mapcount) == (1, 0)


def test_private_file_write_first_is_a_cow_fault():
    k, pid = boot()
    fd = k.open_file(pid, PAGE, data=b"abc")
    addr = k.mmap(pid, 0, PAGE, RW, MAP_PRIVATE, fd)
    assert k.write(0, addr + 1, b"X") == 1
    assert k.read(0, addr, 3) == b"aXc"
    assert k.view().by_pid[pid].rss[RssMember.MM_ANONPAGES] == 1
    cached = k.view().inodes[0].cache[0][1]
    assert k.view().by_pfn[cached].mapcount == 0  # the cache page is not mapped


def test_read_fault_maps_cached_neighbours_around_the_fault():
    k, pid = boot()
    fd = k.open_file(pid, 4 * PAGE)
    addr = k.mmap(pid, 0, 4 * PAGE, PROT_READ, MAP_PRIVATE, fd)
    k.read(0, addr, 1)
    k.read(0, addr + 2 * PAGE, 1)
    assert k.munmap(pid, addr, 4 * PAGE) == 0
    assert k.view().by_pid[pid].rss == (0, 0, 0, 0)
    addr = k.mmap(pid, 0, 4 * PAGE, PROT_READ, MAP_PRIVATE, fd)
    k.read(0, addr + PAGE, 1)
    # pages 0 and 2 were cached and lie in the same 16-page window: mapped with page 1
    assert k.view().by_pid[pid].rss[RssMember.MM_FILEPAGES] == 3
    assert pte(k, pid, addr + 3 * PAGE) == 0


def test_munmap_frees_the_pages_and_the_translation():
    k, pid = boot()
    addr = k.mmap(pid, 0, 2 * PAGE, RW, ANON)
    k.write(0, addr, b"x")
    pfn = pt.pte_pfn(pte(k, pid, addr))
    assert k.tlb.view().cpus[0].entry(addr >> pt.PAGE_SHIFT) is not None
    assert k.munmap(pid, addr, 2 * PAGE) == 0
    assert pfn not in k.view().by_pfn
    assert k.tlb.view().cpus[0].entry(addr >> pt.PAGE_SHIFT) is None
    assert k.view().by_pid[pid].rss == (0, 0, 0, 0)
    assert k.read(0, addr, 1) == FaultResult(signal=11, si_code=SEGV_MAPERR, addr=addr)


def test_mprotect_write_protects_present_ptes_and_back():
    k, pid = boot()
    addr = k.mmap(pid, 0, PAGE, RW, ANON)
    k.write(0, addr, b"x")
    pfn = pt.pte_pfn(pte(k, pid, addr))
    assert k.mprotect(pid, addr, PAGE, PROT_READ) == 0
    assert not pt.pte_write(pte(k, pid, addr))
    result = k.write(0, addr, b"y")
    assert isinstance(result, FaultResult)
    assert result.si_code == SEGV_ACCERR
    assert k.mprotect(pid, addr, PAGE, RW) == 0
    assert k.write(0, addr, b"y") == 1
    assert pt.pte_pfn(pte(k, pid, addr)) == pfn  # reused in place


def test_mremap_move_carries_the_ptes():
    k, pid = boot()
    addr = k.mmap(pid, 0, 2 * PAGE, RW, ANON)
    k.write(0, addr + PAGE, b"moved")
    pfn = pt.pte_pfn(pte(k, pid, addr + PAGE))
    k.mmap(pid, addr + 2 * PAGE, PAGE, PROT_READ, ANON | MAP_FIXED)  # no growth in place
    new = k.mremap(pid, addr, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE)
    assert new > 0
    assert new != addr
    assert pt.pte_pfn(pte(k, pid, new + PAGE)) == pfn
    assert pte(k, pid, addr + PAGE) == 0
    assert k.read(0, new + PAGE, 5) == b"moved"
    assert k.view().by_pfn[pfn].mapcount == 1


def test_switch_refusals():
    k, pid = boot()
    assert k.switch(5, pid) == -22
    assert k.switch(1, 99) == -3
    assert k.switch(1, pid) == -16  # already running on CPU 0
    assert k.switch(0, -1) == 0
    assert k.switch(1, pid) == 0
    assert k.view().running == (-1, pid)


def test_composed_from_fastmodel_page_tables():
    k = RefKernel(preset("tiny"), {"pagetable": FastPageTables})
    assert Capability.EXACT not in k.capabilities
    parent = k.spawn()
    k.switch(0, parent)
    addr = k.mmap(parent, 0, PAGE, RW, ANON)
    k.write(0, addr, b"p")
    child = k.fork(parent)
    k.switch(1, child)
    k.write(1, addr, b"c")
    assert (k.read(0, addr, 1), k.read(1, addr, 1)) == (b"p", b"c")
    assert k.exit(child) == k.exit(parent) == 0
    assert k.view().pages == ()


def _free(k: RefKernel) -> int:
    return sum(end - start for start, end in k.pages.view().free_spans)


def test_fail_page_alloc_fails_the_fault_after_space_and_leaks_nothing():
    """space 4 lets three pages through (the PUD, PMD and PTE tables of a fresh region) and
    fails the fourth (the data page): the fault reports VM_FAULT_OOM, the tables stay linked,
    nothing else is held."""
    from specs.kernel import VM_FAULT_OOM

    k, pid = boot()
    addr = k.mmap(pid, 0, 4 * PAGE, RW, ANON)
    free = _free(k)
    assert k.fail_page_alloc(1, space=4) == 0
    result = k.write(0, addr, b"x")
    assert isinstance(result, FaultResult)
    assert (result.signal, result.vm_fault & VM_FAULT_OOM) == (0, VM_FAULT_OOM)
    assert k.view().pages == ()
    assert free - _free(k) == 3  # PUD, PMD and PTE tables, linked and kept
    assert k.write(0, addr, b"x") == 1  # times was 1: the retry succeeds
    assert k.fail_page_alloc(-2) < 0
    assert k.fail_page_alloc(0, space=-1) < 0
