"""The reference model of x86-64 4-level page tables: one dict per table page.

Written to be read beside 4.6's ``mm/memory.c`` (``__pud_alloc``, ``__pmd_alloc``,
``__pte_alloc``, ``free_pgd_range``) and ``arch/x86/mm/pgtable.c``.  Each table page is a real
order-0 page from the page allocator the model was built with; its entries are a dict holding
only the non-zero slots.  Entry values are 4.6's encodings, built and read with the helpers
of ``specs/pt.py``.  Refusals follow ``specs/pagetable.md``: the checks run before anything
changes, so a refused call leaves the tables exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from specs import pte as pt
from specs.buddy import PageAllocator
from specs.errno import Errno
from specs.machine import MachineConfig
from specs.pagetable import (
    ALL_CAPABILITIES,
    PGALLOC_GFP,
    Level,
    MmView,
    PageTableView,
    TableView,
    index_at,
)

EINVAL = -Errno.EINVAL
EFAULT = -Errno.EFAULT
ENOMEM = -Errno.ENOMEM
EBUSY = -Errno.EBUSY

#: log2 of the span one entry of a table at each level covers
SPAN_SHIFT = {Level.PTE: pt.PAGE_SHIFT, Level.PMD: pt.PMD_SHIFT, Level.PUD: pt.PUD_SHIFT,
              Level.PGD: pt.PGDIR_SHIFT}


def _u64(value: int) -> int:
    """The C unsigned long wrap that free_pgd_range's ``end - 1`` and ``ceiling - 1`` rely on:
    0 stands for the top of the address space."""
    return value & pt.ENTRY_MASK


@attrs.define(eq=False)
class Table:
    """One table page."""

    pfn: int
    level: Level
    mm: int
    parent: Table | None
    slot: int
    base: int
    #: index -> value, non-zero entries only
    entries: dict[int, int] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Mm:
    """The page-table part of an mm_struct."""

    id: int
    pgd: Table
    nr_ptes: int = 0
    nr_pmds: int = 0


class RefPageTables:
    """Every mm's page tables; satisfies ``specs.pagetable.PageTables``."""

    def __init__(self, config: MachineConfig, pages: PageAllocator) -> None:
        self.config = config
        self.capabilities = ALL_CAPABILITIES
        self.pages = pages
        self.mms: dict[int, Mm] = {}
        self.tables: dict[int, Table] = {}
        self.next_mm = 0
        self._view: PageTableView | None = None

    # -- table pages ------------------------------------------------------------------------------

    def _new_table(self, mm: int, level: Level, parent: Table | None, slot: int,
                   base: int) -> Table | None:
        """One zeroed page from the page allocator [4.6: arch/x86/mm/pgtable.c pgd_alloc,
        pte_alloc_one; arch/x86/include/asm/pgalloc.h pmd_alloc_one, pud_alloc_one]."""
        pfn = self.pages.alloc_pages(PGALLOC_GFP, 0)
        if pfn is None:
            return None
        table = Table(pfn=pfn, level=level, mm=mm, parent=parent, slot=slot, base=base)
        self.tables[pfn] = table
        return table

    def _child(self, table: Table, addr: int) -> Table | None:
        value = table.entries.get(index_at(table.level, addr), 0)
        return self.tables[pt.pgd_pfn(value)] if value else None

    def _lookup(self, mm: Mm, addr: int, level: Level) -> Table | None:
        """The table of ``level`` covering ``addr``, if the walk gets there."""
        table: Table | None = mm.pgd
        while table is not None and table.level > level:
            table = self._child(table, addr)
        return table

    def _refusal(self, mm: int, addr: int) -> int:
        """PAGETABLE-R2 (no such mm), then PAGETABLE-R1 (not a user address)."""
        if mm not in self.mms:
            return EINVAL
        if not pt.is_user_address(addr):
            return EFAULT
        return 0

    # -- mm_struct --------------------------------------------------------------------------------

    def mm_alloc(self) -> int | None:
        """A new mm: only the PGD page [4.6: kernel/fork.c mm_alloc, mm_init; arch/x86/mm/
        pgtable.c pgd_alloc].  [Simplified: pgd_ctor's copy of the kernel half of
        swapper_pg_dir (slots 272..511) is left out; kernel addresses are refused instead.]"""
        pgd = self._new_table(self.next_mm, Level.PGD, None, -1, 0)
        if pgd is None:
            return None
        mm = Mm(id=self.next_mm, pgd=pgd)
        self.mms[mm.id] = mm
        self.next_mm += 1
        self._view = None
        return mm.id

    def _alloc_to(self, mm_id: int, addr: int, level: Level) -> int:
        """Allocate every missing table from the PGD down to ``level``, top first, as
        __handle_mm_fault does through pud_alloc, pmd_alloc and pte_alloc; tables allocated
        before a failure stay [4.6: mm/memory.c __pud_alloc, __pmd_alloc, __pte_alloc]."""
        refused = self._refusal(mm_id, addr)
        if refused:
            return refused
        mm = self.mms[mm_id]
        table = mm.pgd
        while table.level > level:
            child = self._child(table, addr)
            if child is None:
                child_level = Level(table.level - 1)
                shift = SPAN_SHIFT[table.level]
                child = self._new_table(mm_id, child_level, table, index_at(table.level, addr),
                                        addr >> shift << shift)
                if child is None:
                    return ENOMEM
                table.entries[child.slot] = pt.mk_table_entry(child.pfn)
                if child_level == Level.PMD:
                    mm.nr_pmds += 1  # [4.6: mm/memory.c __pmd_alloc mm_inc_nr_pmds]
                elif child_level == Level.PTE:
                    mm.nr_ptes += 1  # [4.6: mm/memory.c __pte_alloc atomic_long_inc]
                self._view = None
            table = child
        return 0

    def pud_alloc(self, mm: int, addr: int) -> int:
        """Tables down to the PUD page of ``addr`` [4.6: include/linux/mm.h pud_alloc]."""
        return self._alloc_to(mm, addr, Level.PUD)

    def pmd_alloc(self, mm: int, addr: int) -> int:
        """Tables down to the PMD page of ``addr`` [4.6: include/linux/mm.h pmd_alloc]."""
        return self._alloc_to(mm, addr, Level.PMD)

    def pte_alloc(self, mm: int, addr: int) -> int:
        """Tables down to the PTE page of ``addr`` [4.6: include/linux/mm.h pte_alloc]."""
        return self._alloc_to(mm, addr, Level.PTE)

    # -- leaf entries -----------------------------------------------------------------------------

    def _leaf_table(self, mm: int, addr: int) -> Table | int:
        """The PTE table for ``addr`` or the refusal (PAGETABLE-R1, R2, or -EFAULT: no table)."""
        refused = self._refusal(mm, addr)
        if refused:
            return refused
        table = self._lookup(self.mms[mm], addr, Level.PTE)
        return EFAULT if table is None else table

    def set_pte_at(self, mm: int, addr: int, pte: int) -> int:
        """Store one leaf entry [4.6: arch/x86/include/asm/pgtable.h set_pte_at]."""
        refused = self._refusal(mm, addr)
        if refused:
            return refused
        if pt.leaf_entry_refused(pte):
            return EINVAL
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        self._store(table, index_at(Level.PTE, addr), pte)
        return 0

    def _store(self, table: Table, index: int, value: int) -> None:
        if value:
            table.entries[index] = value
        else:
            table.entries.pop(index, None)
        self._view = None

    def ptep_get_and_clear(self, mm: int, addr: int) -> int:
        """Clear one leaf entry, returning what it held [4.6: arch/x86/include/asm/pgtable.h
        ptep_get_and_clear]."""
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        old = table.entries.get(index_at(Level.PTE, addr), 0)
        self._store(table, index_at(Level.PTE, addr), 0)
        return old

    def ptep_set_wrprotect(self, mm: int, addr: int) -> int:
        """Clear RW whatever the entry holds [4.6: arch/x86/include/asm/pgtable.h
        ptep_set_wrprotect]."""
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        index = index_at(Level.PTE, addr)
        self._store(table, index, pt.pte_wrprotect(table.entries.get(index, 0)))
        return 0

    def ptep_test_and_clear_young(self, mm: int, addr: int) -> int:
        """Clear ACCESSED; 1 if it was set [4.6: arch/x86/mm/pgtable.c
        ptep_test_and_clear_young]."""
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        index = index_at(Level.PTE, addr)
        old = table.entries.get(index, 0)
        self._store(table, index, pt.pte_mkold(old))
        return int(pt.pte_young(old))

    def ptep_mkclean(self, mm: int, addr: int) -> int:
        """Write-protect and clean a present entry that is dirty or writable; 1 if it was
        [4.6: mm/rmap.c page_mkclean_one]."""
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        index = index_at(Level.PTE, addr)
        old = table.entries.get(index, 0)
        if not pt.pte_present(old) or not (pt.pte_dirty(old) or pt.pte_write(old)):
            return 0
        self._store(table, index, pt.pte_mkclean(pt.pte_wrprotect(old)))
        return 1

    def change_protection(self, mm: int, start: int, end: int, newprot: int) -> int:
        """pte_modify every present entry in [start, end); the number changed [4.6:
        mm/mprotect.c change_pte_range].  [Simplified: no prot_numa, no dirty_accountable
        write upgrade, no migration entries.]"""
        if mm not in self.mms:
            return EINVAL
        if _bad_range(start, end) or pt.leaf_entry_refused(newprot):
            return EINVAL
        pages = 0
        for table in self._pte_tables(mm, start, end):
            for index in sorted(table.entries):
                addr = table.base + (index << pt.PAGE_SHIFT)
                old = table.entries[index]
                if start <= addr < end and pt.pte_present(old):
                    self._store(table, index, pt.pte_modify(old, newprot))
                    pages += 1
        return pages

    def _pte_tables(self, mm: int, start: int, end: int) -> Iterator[Table]:
        """The mm's PTE tables whose 2 MiB span meets [start, end), by address."""
        found = [t for t in self.tables.values() if t.mm == mm and t.level == Level.PTE
                 and t.base < end and start < t.base + pt.PMD_SIZE]
        return iter(sorted(found, key=lambda t: t.base))

    def walk(self, mm: int, addr: int) -> tuple[int, int]:
        """(level where the walk stopped, the entry there) [4.6: mm/memory.c __follow_pte]."""
        refused = self._refusal(mm, addr)
        if refused:
            return refused, 0
        table = self.mms[mm].pgd
        while True:
            value = table.entries.get(index_at(table.level, addr), 0)
            if table.level == Level.PTE or not value:
                return int(table.level), value
            table = self.tables[pt.pgd_pfn(value)]

    # -- freeing ----------------------------------------------------------------------------------

    def free_pgtables(self, mm: int, start: int, end: int, floor: int, ceiling: int) -> int:
        """Free the tables of [start, end) that nothing in [floor, ceiling) needs [4.6:
        mm/memory.c free_pgd_range].  Refused with -EBUSY, before anything is freed, when a
        table to be freed still holds an entry that is not itself being freed."""
        if mm not in self.mms:
            return EINVAL
        if _bad_range(start, end) or not _good_bounds(start, end, floor, ceiling):
            return EINVAL
        plan = self._free_plan(self.mms[mm], start, end, floor, ceiling)
        doomed = {table.pfn for table in plan}
        for table in plan:
            if table.level == Level.PTE and table.entries:
                return EBUSY
            if any(pt.pgd_pfn(v) not in doomed for v in table.entries.values()):
                return EBUSY
        self._free_tables(self.mms[mm], plan)
        return 0

    def _free_plan(self, mm: Mm, addr: int, end: int, floor: int, ceiling: int) -> list[Table]:
        """The tables free_pgd_range would free, in the order it frees them."""
        addr &= pt.PMD_MASK
        if addr < floor:
            addr += pt.PMD_SIZE
        if ceiling:
            ceiling &= pt.PMD_MASK
            if not ceiling:
                return []
        if _u64(end - 1) > _u64(ceiling - 1):
            end -= pt.PMD_SIZE
        if addr > _u64(end - 1):
            return []
        plan: list[Table] = []
        for slot_addr, next_addr in _slots(addr, end, pt.PGDIR_SHIFT):
            pud = self._child(mm.pgd, slot_addr)
            if pud is not None:
                self._plan_upper(pud, slot_addr, next_addr, floor, ceiling, plan)
        return plan

    def _plan_upper(self, table: Table, addr: int, end: int, floor: int, ceiling: int,
                    plan: list[Table]) -> None:
        """free_pud_range / free_pmd_range for ``table`` (a PUD or PMD page) over [addr, end),
        then the table itself if its whole span lies within [floor, ceiling)."""
        child_shift = SPAN_SHIFT[table.level]
        for slot_addr, next_addr in _slots(addr, end, child_shift):
            child = self._child(table, slot_addr)
            if child is None:
                continue
            if child.level == Level.PTE:
                plan.append(child)  # [4.6: mm/memory.c free_pte_range]
            else:
                self._plan_upper(child, slot_addr, next_addr, floor, ceiling, plan)
        mask = ~((1 << (child_shift + 9)) - 1) & pt.ENTRY_MASK
        if addr & mask < floor:
            return
        if ceiling:
            ceiling &= mask
            if not ceiling:
                return
        if _u64(end - 1) > _u64(ceiling - 1):
            return
        plan.append(table)

    def _free_tables(self, mm: Mm, plan: list[Table]) -> None:
        """Clear each table's parent entry, fix the counters, return the page.  [Simplified:
        table pages are freed at once, in free_pgd_range's order, not gathered in an
        mmu_gather and freed after the TLB flush.]"""
        for table in plan:
            if table.parent is not None:
                table.parent.entries.pop(table.slot, None)
            if table.level == Level.PTE:
                mm.nr_ptes -= 1
            elif table.level == Level.PMD:
                mm.nr_pmds -= 1
            del self.tables[table.pfn]
            self.pages.free_pages(table.pfn, 0)
        self._view = None

    def mm_teardown(self, mm: int) -> int:
        """exit_mmap's zap and free_pgtables, then pgd_free [4.6: mm/mmap.c exit_mmap;
        kernel/fork.c __mmdrop].  [Simplified: free_pgtables runs over [0, TASK_SIZE_MAX)
        rather than over the span of the mm's VMAs, which frees the same tables when every
        table lies under a VMA; the data pages the entries mapped are the caller's to free.]"""
        if mm not in self.mms:
            return EINVAL
        owner = self.mms[mm]
        for table in self.tables.values():
            if table.mm == mm and table.level == Level.PTE:
                table.entries.clear()
        self._free_tables(owner, self._free_plan(owner, 0, pt.TASK_SIZE_MAX, 0,
                                                 pt.USER_PGTABLES_CEILING))
        del self.tables[owner.pgd.pfn]
        self.pages.free_pages(owner.pgd.pfn, 0)
        del self.mms[mm]
        self._view = None
        return 0

    # -- the view ---------------------------------------------------------------------------------

    def view(self) -> PageTableView:
        """Every mm and table, rebuilt only after a change."""
        if self._view is None:
            mms = tuple(MmView(id=m.id, pgd=m.pgd.pfn, nr_ptes=m.nr_ptes, nr_pmds=m.nr_pmds)
                        for m in sorted(self.mms.values(), key=lambda m: m.id))
            tables = tuple(
                TableView(pfn=t.pfn, level=t.level, mm=t.mm,
                          parent=t.parent.pfn if t.parent is not None else -1, slot=t.slot,
                          base=t.base, entries=tuple(sorted(t.entries.items())))
                for t in sorted(self.tables.values(), key=lambda t: t.pfn))
            self._view = PageTableView(mms=mms, tables=tables)
        return self._view


def _slots(addr: int, end: int, shift: int) -> Iterator[tuple[int, int]]:
    """(addr, next) per entry of span 1 << shift that [addr, end) meets, as 4.6's
    ``p?d_addr_end`` loops step [4.6: include/asm-generic/pgtable.h pgd_addr_end]."""
    size = 1 << shift
    while True:
        boundary = (addr + size) & ~(size - 1)
        next_addr = boundary if boundary - 1 < end - 1 else end
        yield addr, next_addr
        addr = next_addr
        if addr == end:
            return


def _bad_range(start: int, end: int) -> bool:
    """A range must be page aligned, non-empty and inside user space."""
    return (start % pt.PAGE_SIZE != 0 or end % pt.PAGE_SIZE != 0 or not 0 <= start < end
            or end > pt.TASK_SIZE_MAX)


def _good_bounds(start: int, end: int, floor: int, ceiling: int) -> bool:
    """floor <= start and end <= ceiling (0: the top), all page aligned, in user space."""
    if floor % pt.PAGE_SIZE or ceiling % pt.PAGE_SIZE or not 0 <= floor <= start:
        return False
    return ceiling == pt.USER_PGTABLES_CEILING or end <= ceiling <= pt.TASK_SIZE_MAX
