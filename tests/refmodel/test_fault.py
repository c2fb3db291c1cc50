"""The reference kernel's fault path on hand-worked cases: demand paging, the zero page,
signals and si_codes, VM_FAULT_OOM, copy_to/from_user (specs/fault.md)."""

from __future__ import annotations

from refmodel.kernel import RefKernel
from specs import pte as pt
from specs.kernel import (
    BUS_ADRERR,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SI_KERNEL,
    SIGBUS,
    SIGSEGV,
    VM_FAULT_OOM,
    FaultResult,
    RssMember,
)
from specs.machine import preset
from specs.pagetable import Level
from specs.vma import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_NONE, PROT_READ, PROT_WRITE

PAGE = pt.PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def free_pages(k: RefKernel) -> int:
    """Pages in the buddy lists and on pcp lists."""
    return sum(end - start for start, end in k.pages.view().free_spans)


def running(pages: int = 4) -> tuple[RefKernel, int, int]:
    """A kernel with one process on CPU 0 and an anonymous private RW mapping of ``pages``."""
    k = RefKernel(preset("tiny"))
    pid = k.spawn()
    assert k.switch(0, pid) == 0
    addr = k.mmap(pid, 0, pages * PAGE, RW, ANON)
    assert addr > 0
    return k, pid, addr


def pte(k: RefKernel, pid: int, addr: int) -> int:
    level, value = k.tables.walk(k.procs[pid].mm, addr)
    return value if level == Level.PTE else 0


def test_untouched_pages_are_not_present():
    k, pid, addr = running()
    assert [pte(k, pid, addr + i * PAGE) for i in range(4)] == [0, 0, 0, 0]
    assert k.view().pages == ()
    assert k.view().by_pid[pid].rss == (0, 0, 0, 0)


def test_read_fault_maps_the_zero_page_without_rss_or_allocation():
    k, pid, addr = running()
    before = free_pages(k)
    assert k.read(0, addr + 10, 5) == bytes(5)
    entry = pte(k, pid, addr)
    assert pt.pte_pfn(entry) == k.zero_pfn
    assert pt.pte_special(entry)
    assert not pt.pte_write(entry)
    assert k.view().pages == ()
    assert k.view().by_pid[pid].rss == (0, 0, 0, 0)
    # only the PUD, PMD and PTE table pages were allocated
    assert before - free_pages(k) == 3
    # a second page reads the same zero pfn, with no more allocation
    assert k.read(0, addr + PAGE, 1) == b"\0"
    assert pt.pte_pfn(pte(k, pid, addr + PAGE)) == k.zero_pfn
    assert before - free_pages(k) == 3


def test_write_fault_allocates_a_zeroed_writable_dirty_page():
    k, pid, addr = running()
    assert k.write(0, addr + 100, b"hello") == 5
    entry = pte(k, pid, addr)
    page = k.view().by_pfn[pt.pte_pfn(entry)]
    assert (page.refcount, page.mapcount) == (1, 1)
    assert pt.pte_write(entry)
    assert pt.pte_dirty(entry)
    assert k.view().by_pid[pid].rss[RssMember.MM_ANONPAGES] == 1
    assert k.read(0, addr, 105) == bytes(100) + b"hello"
    assert page.index == addr // PAGE  # anon pgoff is the page number


def test_write_after_read_replaces_the_zero_page_and_leaves_it_zero():
    k, pid, addr = running()
    k.read(0, addr, 1)
    assert k.write(0, addr, b"x") == 1
    assert pt.pte_pfn(pte(k, pid, addr)) != k.zero_pfn
    assert k.page_contents(k.zero_pfn) == bytes(PAGE)
    assert k.view().by_pid[pid].rss[RssMember.MM_ANONPAGES] == 1


def test_unmapped_address_is_segv_maperr():
    k, pid, addr = running()
    assert k.munmap(pid, addr, PAGE) == 0
    assert k.read(0, addr, 1) == FaultResult(signal=SIGSEGV, si_code=SEGV_MAPERR, addr=addr)


def test_prot_none_read_and_readonly_write_are_segv_accerr():
    k, pid, addr = running()
    assert k.mprotect(pid, addr, PAGE, PROT_NONE) == 0
    assert k.mprotect(pid, addr + PAGE, PAGE, PROT_READ) == 0
    assert k.read(0, addr, 1) == FaultResult(signal=SIGSEGV, si_code=SEGV_ACCERR, addr=addr)
    result = k.write(0, addr + PAGE, b"z")
    assert isinstance(result, FaultResult)
    assert (result.signal, result.si_code, result.addr) == (SIGSEGV, SEGV_ACCERR, addr + PAGE)
    assert pte(k, pid, addr + PAGE) == 0  # nothing was mapped


def test_write_spanning_into_a_readonly_page_stores_the_prefix():
    k, pid, addr = running()
    assert k.mprotect(pid, addr + PAGE, PAGE, PROT_READ) == 0
    result = k.write(0, addr + PAGE - 3, b"abcdef")
    assert isinstance(result, FaultResult)
    assert (result.si_code, result.done) == (SEGV_ACCERR, 3)
    assert k.read(0, addr + PAGE - 3, 3) == b"abc"


def test_kernel_and_non_canonical_addresses():
    k, _pid, _addr = running()
    kernel = 0xFFFF_8800_0000_0000
    assert k.read(0, kernel, 1) == FaultResult(signal=SIGSEGV, si_code=SEGV_MAPERR, addr=kernel)
    assert k.read(0, 1 << 60, 1) == FaultResult(signal=SIGSEGV, si_code=SI_KERNEL, addr=0)
    assert k.read(0, -1, 1) == k.read(1, 0, 1) == -22  # bad address, idle CPU


def test_file_mapping_beyond_eof_is_sigbus():
    k = RefKernel(preset("tiny"))
    pid = k.spawn()
    k.switch(0, pid)
    fd = k.open_file(pid, 100, data=b"data")
    addr = k.mmap(pid, 0, 2 * PAGE, PROT_READ, MAP_SHARED, fd)
    assert k.read(0, addr, 4) == b"data"
    assert k.read(0, addr + 99, 2) == b"\0\0"  # the rest of the last page reads zeros
    assert k.read(0, addr + PAGE, 1) == FaultResult(signal=SIGBUS, si_code=BUS_ADRERR,
                                                    addr=addr + PAGE, vm_fault=2)


def test_allocation_failure_in_a_fault_is_vm_fault_oom_and_leaks_nothing():
    k, pid, addr = running()
    k.write(0, addr, b"a")  # tables exist now
    held = []
    while (pfn := k.pages.alloc_pages(0, 0)) is not None:
        held.append(pfn)
    pages_before = k.view().pages
    result = k.write(0, addr + PAGE, b"b")
    assert isinstance(result, FaultResult)
    assert (result.signal, result.vm_fault) == (0, VM_FAULT_OOM)
    assert pte(k, pid, addr + PAGE) == 0
    assert k.view().pages == pages_before
    for pfn in held:
        k.pages.free_pages(pfn, 0)
    assert k.write(0, addr + PAGE, b"b") == 1  # the retried instruction succeeds
    assert k.exit(pid) == 0
    assert free_pages(k) == k.config.nr_pages - 1  # all but the zero page


def test_copy_from_user_across_a_hole_returns_the_uncopied_count_and_zero_fills():
    k, pid, addr = running(3)
    k.write(0, addr + PAGE - 6, b"abcdef")
    assert k.munmap(pid, addr + PAGE, PAGE) == 0
    assert k.copy_from_user(0, addr + PAGE - 6, 20) == (14, b"abcdef" + bytes(14))


def test_copy_from_user_outside_user_space_copies_nothing():
    k, _pid, _addr = running()
    assert k.copy_from_user(0, pt.TASK_SIZE_MAX - 2, 4) == (4, bytes(4))


def test_copy_to_user_breaks_cow_and_stops_at_readonly():
    k, pid, addr = running()
    k.read(0, addr, 1)  # zero page mapped
    assert k.copy_to_user(0, addr, b"kernel") == 0
    assert k.read(0, addr, 6) == b"kernel"
    assert k.mprotect(pid, addr + PAGE, PAGE, PROT_READ) == 0
    assert k.copy_to_user(0, addr + PAGE - 2, b"wxyz") == 2
    assert pte(k, pid, addr + PAGE) == 0


def test_mprotect_round_trip_leaves_the_page_read_only_and_the_store_reuses_it():
    """A private page made read-only and writable again keeps a read-only PTE (PAGE_COPY);
    the next store finds it mapped once and reuses it in place (do_wp_page)."""
    k, pid, addr = running()
    assert k.write(0, addr, b"a") == 1
    pfn = pt.pte_pfn(pte(k, pid, addr))
    assert k.mprotect(pid, addr, PAGE, PROT_READ) == 0
    assert k.mprotect(pid, addr, PAGE, RW) == 0
    assert not pt.pte_write(pte(k, pid, addr))
    free = free_pages(k)
    assert k.write(0, addr, b"b") == 1
    assert pt.pte_pfn(pte(k, pid, addr)) == pfn
    assert pt.pte_write(pte(k, pid, addr))
    assert free_pages(k) == free


def test_cow_fault_failing_at_the_cache_page_puts_its_anon_page_back():
    """A first store to a private file page allocates the anon copy, then the page-cache
    page; when that second allocation fails the copy goes back and only VM_FAULT_OOM is
    left (do_cow_fault)."""
    k, pid, anon = running()
    fd = k.open_file(pid, PAGE, data=b"seed")
    addr = k.mmap(pid, 0, PAGE, RW, MAP_PRIVATE, fd)
    assert k.read(0, anon, 1) == b"\0"  # the PTE table both mappings share exists now
    pages, free = k.view().pages, free_pages(k)
    assert k.fail_page_alloc(1, space=2) == 0  # the anon page passes, the cache page fails
    result = k.write(0, addr, b"X")
    assert isinstance(result, FaultResult)
    assert result.vm_fault & VM_FAULT_OOM
    assert (k.view().pages, free_pages(k)) == (pages, free)
    assert k.write(0, addr, b"X") == 1
    assert k.read(0, addr, 4) == b"Xeed"
