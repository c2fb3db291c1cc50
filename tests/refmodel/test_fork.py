"""fork, COW and exit in the reference kernel on hand-worked cases (specs/process.md,
specs/fault.md): refcounts and mapcounts as 4.6 keeps them, reuse by mapcount, teardown."""

from __future__ import annotations

from refmodel.kernel import RefKernel
from specs import pte as pt
from specs.kernel import RssMember
from specs.machine import preset
from specs.pagetable import Level
from specs.vma import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE

PAGE = pt.PAGE_SIZE
RW = PROT_READ | PROT_WRITE


def free_pages(k: RefKernel) -> int:
    return sum(end - start for start, end in k.pages.view().free_spans)


def pte(k: RefKernel, pid: int, addr: int) -> int:
    level, value = k.tables.walk(k.procs[pid].mm, addr)
    return value if level == Level.PTE else 0


def forked(flags: int = MAP_PRIVATE | MAP_ANONYMOUS) -> tuple[RefKernel, int, int, int]:
    """Parent on CPU 0 with one written page at ``addr``, child on CPU 1."""
    k = RefKernel(preset("tiny"))
    parent = k.spawn()
    k.switch(0, parent)
    addr = k.mmap(parent, 0, 2 * PAGE, RW, flags)
    assert k.write(0, addr, b"parent") == 6
    child = k.fork(parent)
    assert child > parent
    assert k.switch(1, child) == 0
    return k, parent, child, addr


def test_fork_shares_the_page_write_protected_on_both_sides():
    k, parent, child, addr = forked()
    pfn = pt.pte_pfn(pte(k, parent, addr))
    assert pt.pte_pfn(pte(k, child, addr)) == pfn
    assert not pt.pte_write(pte(k, parent, addr))
    assert not pt.pte_write(pte(k, child, addr))
    assert not pt.pte_young(pte(k, child, addr))  # the copy is old
    page = k.view().by_pfn[pfn]
    assert (page.refcount, page.mapcount) == (2, 2)
    assert k.view().by_pid[child].rss[RssMember.MM_ANONPAGES] == 1


def test_child_write_separates_and_parent_content_is_intact():
    k, parent, child, addr = forked()
    old = pt.pte_pfn(pte(k, parent, addr))
    assert k.write(1, addr, b"CHILD") == 5
    new = pt.pte_pfn(pte(k, child, addr))
    assert new != old
    assert k.read(0, addr, 6) == b"parent"
    assert k.read(1, addr, 6) == b"CHILDt"
    view = k.view().by_pfn
    assert (view[old].refcount, view[old].mapcount) == (1, 1)
    assert (view[new].refcount, view[new].mapcount) == (1, 1)
    assert pt.pte_write(pte(k, child, addr))
    assert not pt.pte_write(pte(k, parent, addr))  # still protected until it writes


def test_parent_write_after_child_exit_reuses_the_page():
    k, parent, child, addr = forked()
    pfn = pt.pte_pfn(pte(k, parent, addr))
    assert k.exit(child) == 0
    free = free_pages(k)
    assert k.write(0, addr, b"P") == 1
    assert pt.pte_pfn(pte(k, parent, addr)) == pfn  # reused: mapcount was 1
    assert free_pages(k) == free
    assert pt.pte_write(pte(k, parent, addr))


def test_shared_mapping_stays_shared_across_fork():
    k, parent, child, addr = forked(MAP_SHARED | MAP_ANONYMOUS)
    assert pte(k, child, addr) == 0  # no anon_vma: fork copied no PTE
    assert k.read(1, addr, 6) == b"parent"
    assert k.write(1, addr, b"child!") == 6
    assert k.read(0, addr, 6) == b"child!"
    pfn = pt.pte_pfn(pte(k, parent, addr))
    page = k.view().by_pfn[pfn]
    assert (page.mapcount, page.refcount) == (2, 3)  # two PTEs and the shmem page cache
    assert k.view().by_pid[child].rss[RssMember.MM_SHMEMPAGES] == 1


def test_shared_file_writes_reach_the_file_and_the_other_process():
    k = RefKernel(preset("tiny"))
    parent = k.spawn()
    k.switch(0, parent)
    fd = k.open_file(parent, 2 * PAGE, data=b"0123456789")
    addr = k.mmap(parent, 0, 2 * PAGE, RW, MAP_SHARED, fd)
    child = k.fork(parent)
    k.switch(1, child)
    assert k.write(1, addr + 2, b"ab") == 2
    assert k.read(0, addr, 6) == b"01ab45"
    inode = dict(k.view().by_pid[parent].files)[1]
    assert k.file_contents(inode, 0, 6) == b"01ab45"


def test_everything_but_the_page_cache_returns_after_every_exit():
    k = RefKernel(preset("tiny"))
    parent = k.spawn()
    k.switch(0, parent)
    fd = k.open_file(parent, PAGE, data=b"f")
    faddr = k.mmap(parent, 0, PAGE, PROT_READ, MAP_PRIVATE, fd)
    addr = k.mmap(parent, 0, 8 * PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(8):
        k.write(0, addr + i * PAGE, bytes([i + 1]))
    assert k.read(0, faddr, 1) == b"f"
    child = k.fork(parent)
    k.switch(1, child)
    k.write(1, addr, b"c")
    assert k.exit(parent) == 0
    assert k.exit(child) == 0
    cached = [page for page in k.view().pages if page.cached]
    assert len(cached) == 1
    assert [(page.refcount, page.mapcount) for page in k.view().pages] == [(1, 0)]
    assert k.tables.view().tables == ()
    assert free_pages(k) == k.config.nr_pages - 1 - 1  # the zero page and the cached page


def test_fork_under_allocation_failure_is_enomem_and_leaks_nothing():
    k = RefKernel(preset("tiny"))
    parent = k.spawn()
    k.switch(0, parent)
    addr = k.mmap(parent, 0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    k.write(0, addr, b"x")
    pages_before = k.view().pages
    # leave two pages: the child's PGD and PUD fit, its PMD does not
    held = []
    while (pfn := k.pages.alloc_pages(0, 0)) is not None:
        held.append(pfn)
    for pfn in held[:2]:
        k.pages.free_pages(pfn, 0)
    free = free_pages(k)
    assert k.fork(parent) == -12
    assert free_pages(k) == free
    assert k.view().pages == pages_before
    assert [p.pid for p in k.view().processes] == [parent]


def test_fork_failing_at_each_allocation_in_turn_leaks_nothing():
    """fail_page_alloc swept over one fork: every failure point (the PGD, then each child
    table) gives -ENOMEM, no child and every page back; the first budget that suffices
    forks."""
    k = RefKernel(preset("tiny"))
    parent = k.spawn()
    k.switch(0, parent)
    for flags in (MAP_PRIVATE | MAP_ANONYMOUS, MAP_SHARED | MAP_ANONYMOUS):
        addr = k.mmap(parent, 0, 2 * PAGE, RW, flags)
        assert k.write(0, addr, b"x") == 1
    failures = 0
    for space in range(12):
        free, pages = free_pages(k), k.view().pages
        assert k.fail_page_alloc(1, space) == 0
        child = k.fork(parent)
        if child > 0:
            break
        failures += 1
        assert child == -12
        assert (free_pages(k), k.view().pages) == (free, pages)
        assert [p.pid for p in k.view().processes] == [parent]
    assert failures >= 4  # the PGD, PUD, PMD and PTE table of the child
    assert k.fail_page_alloc(0) == 0
