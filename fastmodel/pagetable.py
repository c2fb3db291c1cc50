"""Page tables over numpy: each table page is a row of 512 uint64 entries.

Observably identical to the reference model (same table pfns, results and views after every
call) but stores a table as 4 KiB of numpy, as the hardware does, instead of a dict of Python
ints: a fully mapped PTE page costs 8 bytes per mapped page.  Leaf operations go straight to
their PTE row through a dict keyed by (mm, addr >> PMD_SHIFT), so a set or a walk costs one
dict lookup and one array access instead of four dependent lookups.

Imports only ``specs``, attrs, numpy and the standard library (never the reference model).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import numpy as np

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
)

EINVAL = -Errno.EINVAL
EFAULT = -Errno.EFAULT
ENOMEM = -Errno.ENOMEM
EBUSY = -Errno.EBUSY

#: shift of the span one entry covers, indexed by level (index 0 unused)
_SHIFT = (0, pt.PAGE_SHIFT, pt.PMD_SHIFT, pt.PUD_SHIFT, pt.PGDIR_SHIFT)
_INDEX_MASK = pt.PTRS_PER_PTE - 1
_INITIAL_ROWS = 64


@attrs.define
class _Meta:
    """What the view says about a row besides its entries."""

    pfn: int
    level: int
    mm: int
    parent: int  # parent row, -1 for a PGD
    slot: int
    base: int


class FastPageTables:
    """Every mm's page tables; satisfies ``specs.pagetable.PageTables``."""

    def __init__(self, config: MachineConfig, pages: PageAllocator) -> None:
        self.config = config
        self.capabilities = ALL_CAPABILITIES
        self.pages = pages
        self._rows = np.zeros((_INITIAL_ROWS, pt.PTRS_PER_PTE), dtype=np.uint64)
        self._meta: list[_Meta | None] = [None] * _INITIAL_ROWS
        self._spare = list(range(_INITIAL_ROWS - 1, -1, -1))
        self._row_of: dict[int, int] = {}  # table pfn -> row
        #: (mm, addr >> PMD_SHIFT) -> row of the PTE table covering that 2 MiB
        self._leaf: dict[tuple[int, int], int] = {}
        #: mm id -> [pgd row, nr_ptes, nr_pmds]
        self._mms: dict[int, list[int]] = {}
        self._next_mm = 0
        self._view: PageTableView | None = None

    # -- rows -------------------------------------------------------------------------------------

    def _new_row(self, meta: _Meta) -> int:
        if not self._spare:
            old = self._rows.shape[0]
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
            self._meta.extend([None] * old)
            self._spare = list(range(2 * old - 1, old - 1, -1))
        row = self._spare.pop()
        self._rows[row] = 0
        self._meta[row] = meta
        self._row_of[meta.pfn] = row
        return row

    def _drop_row(self, row: int) -> None:
        meta = self._meta[row]
        assert meta is not None
        if meta.level == Level.PTE:
            del self._leaf[(meta.mm, meta.base >> pt.PMD_SHIFT)]
        del self._row_of[meta.pfn]
        self._meta[row] = None
        self._spare.append(row)
        self.pages.free_pages(meta.pfn, 0)

    def _child_row(self, row: int, level: int, addr: int) -> int:
        """Row of the table the entry for ``addr`` points to, or -1."""
        value = int(self._rows[row, (addr >> _SHIFT[level]) & _INDEX_MASK])
        return self._row_of[(value & pt.PTE_PFN_MASK) >> pt.PAGE_SHIFT] if value else -1

    def _refusal(self, mm: int, addr: int) -> int:
        if mm not in self._mms:
            return EINVAL
        if not 0 <= addr < pt.TASK_SIZE_MAX:
            return EFAULT
        return 0

    # -- mm_struct and allocation -----------------------------------------------------------------

    def mm_alloc(self) -> int | None:
        """A new mm with an empty PGD (see refmodel.pagetable.RefPageTables.mm_alloc)."""
        pfn = self.pages.alloc_pages(PGALLOC_GFP, 0)
        if pfn is None:
            return None
        mm = self._next_mm
        row = self._new_row(_Meta(pfn, Level.PGD, mm, -1, -1, 0))
        self._mms[mm] = [row, 0, 0]
        self._next_mm += 1
        self._view = None
        return mm

    def _alloc_to(self, mm: int, addr: int, level: int) -> int:
        refused = self._refusal(mm, addr)
        if refused:
            return refused
        counters = self._mms[mm]
        row, row_level = counters[0], int(Level.PGD)
        while row_level > level:
            child = self._child_row(row, row_level, addr)
            if child < 0:
                pfn = self.pages.alloc_pages(PGALLOC_GFP, 0)
                if pfn is None:
                    return ENOMEM
                shift = _SHIFT[row_level]
                slot = (addr >> shift) & _INDEX_MASK
                child = self._new_row(_Meta(pfn, row_level - 1, mm, row, slot,
                                            addr >> shift << shift))
                self._rows[row, slot] = pt.mk_table_entry(pfn)
                if row_level - 1 == Level.PMD:
                    counters[2] += 1
                elif row_level - 1 == Level.PTE:
                    counters[1] += 1
                    self._leaf[(mm, addr >> pt.PMD_SHIFT)] = child
                self._view = None
            row, row_level = child, row_level - 1
        return 0

    def pud_alloc(self, mm: int, addr: int) -> int:
        """Tables down to the PUD page of ``addr``."""
        return self._alloc_to(mm, addr, Level.PUD)

    def pmd_alloc(self, mm: int, addr: int) -> int:
        """Tables down to the PMD page of ``addr``."""
        return self._alloc_to(mm, addr, Level.PMD)

    def pte_alloc(self, mm: int, addr: int) -> int:
        """Tables down to the PTE page of ``addr``."""
        return self._alloc_to(mm, addr, Level.PTE)

    # -- leaf entries -----------------------------------------------------------------------------

    def _leaf_row(self, mm: int, addr: int) -> int:
        """Row of the PTE table for ``addr`` (>= 0) or the refusal (< 0)."""
        if mm not in self._mms:
            return EINVAL
        if not 0 <= addr < pt.TASK_SIZE_MAX:
            return EFAULT
        return self._leaf.get((mm, addr >> pt.PMD_SHIFT), EFAULT)

    def set_pte_at(self, mm: int, addr: int, pte: int) -> int:
        """Store one leaf entry."""
        refused = self._refusal(mm, addr)
        if refused:
            return refused
        if not 0 <= pte <= pt.ENTRY_MASK or pte & pt.UNDEFINED_PTE_BITS:
            return EINVAL
        row = self._leaf.get((mm, addr >> pt.PMD_SHIFT), -1)
        if row < 0:
            return EFAULT
        self._rows[row, (addr >> pt.PAGE_SHIFT) & _INDEX_MASK] = pte
        self._view = None
        return 0

    def _update(self, mm: int, addr: int) -> tuple[int, int, int]:
        """(row, index, old value) of a leaf entry, or (refusal, 0, 0)."""
        row = self._leaf_row(mm, addr)
        if row < 0:
            return row, 0, 0
        index = (addr >> pt.PAGE_SHIFT) & _INDEX_MASK
        return row, index, int(self._rows[row, index])

    def ptep_get_and_clear(self, mm: int, addr: int) -> int:
        """Clear one leaf entry, returning what it held."""
        row, index, old = self._update(mm, addr)
        if row < 0:
            return row
        self._rows[row, index] = 0
        self._view = None
        return old

    def ptep_set_wrprotect(self, mm: int, addr: int) -> int:
        """Clear RW whatever the entry holds."""
        row, index, old = self._update(mm, addr)
        if row < 0:
            return row
        self._rows[row, index] = old & ~pt._PAGE_RW
        self._view = None
        return 0

    def ptep_test_and_clear_young(self, mm: int, addr: int) -> int:
        """Clear ACCESSED; 1 if it was set."""
        row, index, old = self._update(mm, addr)
        if row < 0:
            return row
        self._rows[row, index] = old & ~pt._PAGE_ACCESSED
        self._view = None
        return 1 if old & pt._PAGE_ACCESSED else 0

    def ptep_mkclean(self, mm: int, addr: int) -> int:
        """Write-protect and clean a present entry that is dirty or writable."""
        row, index, old = self._update(mm, addr)
        if row < 0:
            return row
        if not old & (pt._PAGE_PRESENT | pt._PAGE_PROTNONE) or not old & (
                pt._PAGE_DIRTY | pt._PAGE_RW):
            return 0
        self._rows[row, index] = old & ~(pt._PAGE_DIRTY | pt._PAGE_RW)
        self._view = None
        return 1

    def change_protection(self, mm: int, start: int, end: int, newprot: int) -> int:
        """pte_modify every present entry in [start, end), a whole PTE row at a time."""
        if mm not in self._mms:
            return EINVAL
        if (start % pt.PAGE_SIZE or end % pt.PAGE_SIZE or not 0 <= start < end
                or end > pt.TASK_SIZE_MAX or not 0 <= newprot <= pt.ENTRY_MASK
                or newprot & pt.UNDEFINED_PTE_BITS):
            return EINVAL
        keep = np.uint64(pt._PAGE_CHG_MASK)
        take = np.uint64(pt.massage_pgprot(newprot) & ~pt._PAGE_CHG_MASK & pt.ENTRY_MASK)
        present = np.uint64(pt._PAGE_PRESENT | pt._PAGE_PROTNONE)
        pages = 0
        for key in range(start >> pt.PMD_SHIFT, ((end - 1) >> pt.PMD_SHIFT) + 1):
            row = self._leaf.get((mm, key), -1)
            if row < 0:
                continue
            base = key << pt.PMD_SHIFT
            lo = max(start, base) - base >> pt.PAGE_SHIFT
            hi = min(end, base + pt.PMD_SIZE) - base >> pt.PAGE_SHIFT
            chunk = self._rows[row, lo:hi]
            hit = (chunk & present) != 0
            count = int(np.count_nonzero(hit))
            if count:
                chunk[hit] = (chunk[hit] & keep) | take
                pages += count
        if pages:
            self._view = None
        return pages

    def walk(self, mm: int, addr: int) -> tuple[int, int]:
        """(level where the walk stopped, the entry there)."""
        refused = self._refusal(mm, addr)
        if refused:
            return refused, 0
        row = self._leaf.get((mm, addr >> pt.PMD_SHIFT), -1)
        if row >= 0:
            return Level.PTE.value, int(self._rows[row, (addr >> pt.PAGE_SHIFT) & _INDEX_MASK])
        row, level = self._mms[mm][0], Level.PGD.value
        while True:  # the walk stops above the PTE level: find where
            value = int(self._rows[row, (addr >> _SHIFT[level]) & _INDEX_MASK])
            if not value:
                return level, 0
            row, level = self._row_of[(value & pt.PTE_PFN_MASK) >> pt.PAGE_SHIFT], level - 1

    # -- freeing ----------------------------------------------------------------------------------

    def free_pgtables(self, mm: int, start: int, end: int, floor: int, ceiling: int) -> int:
        """Free the tables of [start, end) that nothing in [floor, ceiling) needs, refusing
        with -EBUSY before freeing anything when one still holds a live entry."""
        if mm not in self._mms:
            return EINVAL
        if (start % pt.PAGE_SIZE or end % pt.PAGE_SIZE or not 0 <= start < end
                or end > pt.TASK_SIZE_MAX or floor % pt.PAGE_SIZE or ceiling % pt.PAGE_SIZE
                or not 0 <= floor <= start
                or not (ceiling == 0 or end <= ceiling <= pt.TASK_SIZE_MAX)):
            return EINVAL
        plan = self._free_plan(mm, start, end, floor, ceiling)
        doomed = {self._meta_of(row).pfn for row in plan}
        for row in plan:
            values = self._rows[row][self._rows[row] != 0]
            if not values.size:
                continue
            if self._meta_of(row).level == Level.PTE:
                return EBUSY
            pfns = (values & np.uint64(pt.PTE_PFN_MASK)) >> np.uint64(pt.PAGE_SHIFT)
            if any(int(pfn) not in doomed for pfn in pfns):
                return EBUSY
        self._free_rows(mm, plan)
        return 0

    def _meta_of(self, row: int) -> _Meta:
        meta = self._meta[row]
        assert meta is not None
        return meta

    def _free_plan(self, mm: int, addr: int, end: int, floor: int, ceiling: int) -> list[int]:
        """Rows free_pgd_range would free, in its order (as the reference model computes)."""
        addr &= pt.PMD_MASK
        if addr < floor:
            addr += pt.PMD_SIZE
        if ceiling:
            ceiling &= pt.PMD_MASK
            if not ceiling:
                return []
        if (end - 1) & pt.ENTRY_MASK > (ceiling - 1) & pt.ENTRY_MASK:
            end -= pt.PMD_SIZE
        if addr > end - 1:
            return []
        plan: list[int] = []
        self._plan_level(self._mms[mm][0], Level.PGD, addr, end, floor, ceiling, plan)
        return plan

    def _plan_level(self, row: int, level: int, addr: int, end: int, floor: int,
                    ceiling: int, plan: list[int]) -> None:
        shift = _SHIFT[level]
        entries = self._rows[row]
        first, last = (addr >> shift) & _INDEX_MASK, ((end - 1) >> shift) & _INDEX_MASK
        for index in np.flatnonzero(entries[first:last + 1]):
            slot_addr = max(addr, ((addr >> shift) + int(index)) << shift)
            next_addr = min(end, (((addr >> shift) + int(index)) + 1) << shift)
            child = self._row_of[(int(entries[first + index]) & pt.PTE_PFN_MASK)
                                 >> pt.PAGE_SHIFT]
            if level == Level.PMD:
                plan.append(child)
            else:
                self._plan_level(child, level - 1, slot_addr, next_addr, floor, ceiling, plan)
        if level == Level.PGD:
            return
        mask = ~((1 << (shift + 9)) - 1) & pt.ENTRY_MASK
        if addr & mask < floor:
            return
        if ceiling:
            ceiling &= mask
            if not ceiling:
                return
        if (end - 1) & pt.ENTRY_MASK > (ceiling - 1) & pt.ENTRY_MASK:
            return
        plan.append(row)

    def _free_rows(self, mm: int, plan: list[int]) -> None:
        counters = self._mms[mm]
        for row in plan:
            meta = self._meta_of(row)
            if meta.parent >= 0:
                self._rows[meta.parent, meta.slot] = 0
            if meta.level == Level.PTE:
                counters[1] -= 1
            elif meta.level == Level.PMD:
                counters[2] -= 1
            self._drop_row(row)
        self._view = None

    def mm_teardown(self, mm: int) -> int:
        """Clear every leaf, free every table, then the PGD."""
        if mm not in self._mms:
            return EINVAL
        for (owner, _key), row in self._leaf.items():
            if owner == mm:
                self._rows[row] = 0
        self._free_rows(mm, self._free_plan(mm, 0, pt.TASK_SIZE_MAX, 0, 0))
        self._drop_row(self._mms.pop(mm)[0])
        self._view = None
        return 0

    # -- the view ---------------------------------------------------------------------------------

    def view(self) -> PageTableView:
        """Every mm and table, rebuilt only after a change."""
        if self._view is None:
            mms = tuple(MmView(id=mm, pgd=self._meta_of(c[0]).pfn, nr_ptes=c[1], nr_pmds=c[2])
                        for mm, c in sorted(self._mms.items()))
            tables = tuple(self._table_view(self._row_of[pfn]) for pfn in sorted(self._row_of))
            self._view = PageTableView(mms=mms, tables=tables)
        return self._view

    def _table_view(self, row: int) -> TableView:
        meta = self._meta_of(row)
        entries = self._rows[row]
        nonzero = np.flatnonzero(entries)
        return TableView(pfn=meta.pfn, level=Level(meta.level), mm=meta.mm,
                         parent=self._meta_of(meta.parent).pfn if meta.parent >= 0 else -1,
                         slot=meta.slot, base=meta.base,
                         entries=tuple(zip(nonzero.tolist(), entries[nonzero].tolist(),
                                           strict=True)))

    def mapped_rows(self) -> Iterator[int]:
        """Rows in use (for the memory figure of bench/bench_pagetable.py)."""
        return iter(self._row_of.values())

    def nbytes(self) -> int:
        """Bytes held by the entry array."""
        return int(self._rows.nbytes)
