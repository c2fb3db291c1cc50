"""The reference page tables on hand-worked cases: what is allocated, what free_pgtables frees
under each floor and ceiling, what teardown returns, and how bad input is refused."""

from __future__ import annotations

import pytest

from refmodel.buddy import RefBuddy
from refmodel.pagetable import EBUSY, EFAULT, EINVAL, RefPageTables
from specs import pte as pt
from specs.machine import preset
from specs.pagetable import Level, PageTables

MB2, GB1 = pt.PMD_SIZE, pt.PUD_SIZE
BASE = 0x40000000  # 1 GiB: PUD- and PMD-aligned


def boot() -> tuple[RefPageTables, RefBuddy, int]:
    """Page tables on a tiny machine with one empty mm."""
    pages = RefBuddy(preset("tiny"))
    tables = RefPageTables(preset("tiny"), pages)
    mm = tables.mm_alloc()
    assert mm is not None
    return tables, pages, mm


def counts(tables: RefPageTables) -> tuple[int, ...]:
    """Number of tables per level, PGD first."""
    levels = [t.level for t in tables.view().tables]
    return tuple(levels.count(level) for level in (Level.PGD, Level.PUD, Level.PMD, Level.PTE))


def test_refmodel_satisfies_the_protocol():
    """RefPageTables is a PageTables."""
    tables, _pages, _mm = boot()
    assert isinstance(tables, PageTables)


def test_tables_appear_as_the_host_kernel_shows():
    """First page of an empty 512 GiB slot: PUD+PMD+PTE; a neighbour: nothing; the next
    2 MiB: a PTE page; the next 1 GiB: a PMD and a PTE page (the VmPTE deltas of the host
    oracle)."""
    tables, _pages, mm = boot()
    seen = []
    for addr in (BASE, BASE + pt.PAGE_SIZE, BASE + MB2, BASE + GB1):
        assert 0 == tables.pte_alloc(mm, addr)
        seen.append(counts(tables))
    assert [(1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 2), (1, 1, 2, 3)] == seen
    assert (3, 2) == (tables.view().mms[0].nr_ptes, tables.view().mms[0].nr_pmds)


def test_table_pages_are_zeroed_allocations_from_the_allocator():
    """Each table is a held order-0 page, and the entries linking them are _PAGE_TABLE."""
    tables, pages, mm = boot()
    tables.pte_alloc(mm, BASE)
    for table in tables.view().tables:
        info = pages.page(table.pfn)
        assert info is not None
        assert 1 == info.refcount
        for _index, value in table.entries:
            assert pt._PAGE_TABLE == pt.pgd_flags(value)


def test_set_walk_and_clear_round_trip():
    """set_pte_at stores the value, walk finds it, ptep_get_and_clear returns and clears it."""
    tables, _pages, mm = boot()
    tables.pte_alloc(mm, BASE)
    value = pt.pfn_pte(0x123, pt.PAGE_SHARED)
    assert 0 == tables.set_pte_at(mm, BASE + 0x10, value)
    assert (Level.PTE, value) == tables.walk(mm, BASE)
    assert value == tables.ptep_get_and_clear(mm, BASE)
    assert (Level.PTE, 0) == tables.walk(mm, BASE)


def test_in_place_updates():
    """wrprotect clears RW; test_and_clear_young reports and clears A; mkclean cleans."""
    tables, _pages, mm = boot()
    tables.pte_alloc(mm, BASE)
    value = pt.pte_mkdirty(pt.pfn_pte(0x123, pt.PAGE_SHARED))
    tables.set_pte_at(mm, BASE, value)
    assert 1 == tables.ptep_mkclean(mm, BASE)
    assert pt.pte_mkclean(pt.pte_wrprotect(value)) == tables.walk(mm, BASE)[1]
    assert 0 == tables.ptep_mkclean(mm, BASE)
    assert 1 == tables.ptep_test_and_clear_young(mm, BASE)
    assert 0 == tables.ptep_test_and_clear_young(mm, BASE)


def test_change_protection_counts_present_entries():
    """Only present entries are modified; a swap-like entry is left alone."""
    tables, _pages, mm = boot()
    tables.pte_alloc(mm, BASE)
    tables.set_pte_at(mm, BASE, pt.pfn_pte(1, pt.PAGE_SHARED))
    tables.set_pte_at(mm, BASE + pt.PAGE_SIZE, 0x200)  # PRESENT and PROTNONE clear
    assert 1 == tables.change_protection(mm, BASE, BASE + MB2, pt.PAGE_NONE)
    assert pt.pte_modify(pt.pfn_pte(1, pt.PAGE_SHARED), pt.PAGE_NONE) == tables.walk(mm, BASE)[1]
    assert 0x200 == tables.walk(mm, BASE + pt.PAGE_SIZE)[1]


PAGE = pt.PAGE_SIZE


@pytest.mark.parametrize(("start", "floor", "ceiling", "left"), [
    (BASE, 0, 0, (1, 0, 0, 0)),                        # nothing else in the mm: all go
    (BASE, BASE, BASE + MB2, (1, 1, 1, 0)),            # neighbours in the 1 GiB keep the PMD
    (BASE + 2 * PAGE, BASE + PAGE, 0, (1, 1, 1, 1)),   # a VMA below in the same 2 MiB
    (BASE, 0, BASE + MB2 - PAGE, (1, 1, 1, 1)),        # ... or one above keeps it all
    (BASE, BASE - GB1, BASE + GB1, (1, 1, 0, 0)),      # the whole 1 GiB is ours: PMD goes too
])
def test_free_pgtables_floor_and_ceiling(start: int, floor: int, ceiling: int,
                                         left: tuple[int, ...]):
    """free_pgd_range frees a table only when floor and ceiling leave its whole span free."""
    tables, _pages, mm = boot()
    tables.pte_alloc(mm, BASE)
    assert 0 == tables.free_pgtables(mm, start, start + PAGE, floor, ceiling)
    assert left == counts(tables)


def test_invalid_free_of_a_table_in_use_is_refused():
    """A PTE page that still maps something is not freed: -EBUSY, nothing changes."""
    tables, _pages, mm = boot()
    tables.pte_alloc(mm, BASE)
    tables.set_pte_at(mm, BASE + 5 * pt.PAGE_SIZE, pt.pfn_pte(1, pt.PAGE_SHARED))
    before = tables.view()
    assert EBUSY == tables.free_pgtables(mm, BASE, BASE + pt.PAGE_SIZE, 0, 0)
    assert before == tables.view()


def test_teardown_returns_every_page():
    """mm_teardown frees every table and the PGD: the allocator is back where it started."""
    pages = RefBuddy(preset("tiny"))
    free_at_boot = pages.view()
    tables = RefPageTables(preset("tiny"), pages)
    mm = tables.mm_alloc()
    assert mm is not None
    for addr in (0, BASE, 1 << 39, pt.TASK_SIZE_MAX - pt.PAGE_SIZE):
        tables.pte_alloc(mm, addr)
        tables.set_pte_at(mm, addr, pt.pfn_pte(3, pt.PAGE_READONLY))
    assert 0 == tables.mm_teardown(mm)
    assert () == tables.view().tables
    assert free_at_boot.zones[0].nr_free_pages + sum(
        z.nr_free_pages for z in free_at_boot.zones[1:]) == sum(
        z.nr_free_pages + sum(p.count for p in z.pcp) for z in pages.view().zones)


@pytest.mark.parametrize("addr", [pt.TASK_SIZE_MAX, 1 << 47, 0xFFFF880000000000, -1, 1 << 64])
def test_invalid_addresses_are_refused(addr: int):
    """Addresses outside user space get -EFAULT from every address operation."""
    tables, _pages, mm = boot()
    before = tables.view()
    assert EFAULT == tables.pte_alloc(mm, addr)
    assert EFAULT == tables.set_pte_at(mm, addr, 0)
    assert (EFAULT, 0) == tables.walk(mm, addr)
    assert before == tables.view()


def test_invalid_entries_and_mms_are_refused():
    """Undefined bits: -EINVAL; no PTE table: -EFAULT; dead mm: -EINVAL."""
    tables, _pages, mm = boot()
    assert EFAULT == tables.set_pte_at(mm, BASE, pt.pfn_pte(1, pt.PAGE_SHARED))
    tables.pte_alloc(mm, BASE)
    assert EINVAL == tables.set_pte_at(mm, BASE, pt.pfn_pte(pt.MAX_PHYS_PFN + 1, pt.PAGE_SHARED))
    assert EINVAL == tables.set_pte_at(mm, BASE, 1 << 50)
    assert 0 == tables.mm_teardown(mm)
    assert EINVAL == tables.mm_teardown(mm)
    assert EINVAL == tables.pte_alloc(mm, BASE)


def test_mm_alloc_fails_cleanly_when_memory_runs_out():
    """With every page taken, mm_alloc returns None and pte_alloc -ENOMEM."""
    tables, pages, mm = boot()
    while pages.alloc_pages(0, 0) is not None:
        pass
    before = tables.view()
    assert None is tables.mm_alloc()
    assert -12 == tables.pte_alloc(mm, BASE)
    assert before == tables.view()
