"""Deliberately broken page tables: at least one per PAGETABLE check ID.

Each mutant is a small subclass of :class:`refmodel.pagetable.RefPageTables` with one bug,
shaped like a real one (a wrong bit, a wrong shift, an off-by-one in free_pgd_range's floor
test, a counter not updated, a page freed while still linked), a one-sentence docstring
naming it, and ``target``: the check that must catch it in contract mode with only that check
enabled.  The changed line carries ``# MUTATION:``.  ``refmodel`` itself is never edited.
"""

from __future__ import annotations

from typing import ClassVar

from refmodel.pagetable import EFAULT, EINVAL, Mm, RefPageTables, Table
from specs import pte as pt
from specs.pagetable import Level, index_at


class MutantPageTables(RefPageTables):
    """RefPageTables, declared as a pagetable implementation."""

    subsystem: ClassVar[str] = "pagetable"
    #: the check ID that must catch this mutant
    target: ClassVar[str] = ""


class TableEntryWithoutAccessed(MutantPageTables):
    """pmd_populate and friends store table pointers without _PAGE_ACCESSED (0x47, not 0x67)."""

    target = "PAGETABLE-I1"

    def _alloc_to(self, mm_id: int, addr: int, level: Level) -> int:
        result = super()._alloc_to(mm_id, addr, level)
        if mm_id in self.mms and pt.is_user_address(addr):
            table = self.mms[mm_id].pgd
            while table.level > level and index_at(table.level, addr) in table.entries:
                index = index_at(table.level, addr)
                table.entries[index] &= ~pt._PAGE_ACCESSED  # MUTATION: wrong flag set
                table = self.tables[pt.pgd_pfn(table.entries[index])]
            self._view = None
        return result


class TeardownLeavesTablesListed(MutantPageTables):
    """mm_teardown frees the table pages but keeps the mm's PUD, PMD and PTE tables listed."""

    target = "PAGETABLE-I2"

    def mm_teardown(self, mm: int) -> int:
        kept = [t for t in self.tables.values() if t.mm == mm and t.level != Level.PGD]
        result = super().mm_teardown(mm)
        for table in kept:  # MUTATION: the tables stay in the mm's list
            self.tables.setdefault(table.pfn, table)
        self._view = None
        return result


class FreePgtablesKeepsNrPtes(MutantPageTables):
    """free_pte_range forgets atomic_long_dec(&mm->nr_ptes)."""

    target = "PAGETABLE-I3"

    def _free_tables(self, mm: Mm, plan: list[Table]) -> None:
        before = mm.nr_ptes
        super()._free_tables(mm, plan)
        mm.nr_ptes = before  # MUTATION: no decrement


class PteTableFreedWhileLinked(MutantPageTables):
    """free_pgtables returns PTE pages to the allocator but leaves them linked from the PMD."""

    target = "PAGETABLE-I4"

    def _free_tables(self, mm: Mm, plan: list[Table]) -> None:
        upper = [table for table in plan if table.level != Level.PTE]
        for table in plan:
            if table.level == Level.PTE:
                self.pages.free_pages(table.pfn, 0)  # MUTATION: freed, never unlinked
        super()._free_tables(mm, upper)


class GetAndClearDoesNotClear(MutantPageTables):
    """ptep_get_and_clear returns the old entry but never clears it."""

    target = "PAGETABLE-I5"

    def ptep_get_and_clear(self, mm: int, addr: int) -> int:
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        return table.entries.get(index_at(Level.PTE, addr), 0)  # MUTATION: no clear


class SetPteAcceptsAnyBits(MutantPageTables):
    """set_pte_at stores whatever 64-bit value it is given, undefined bits included."""

    target = "PAGETABLE-I6"

    def set_pte_at(self, mm: int, addr: int, pte: int) -> int:
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        self._store(table, index_at(Level.PTE, addr), pte & pt.ENTRY_MASK)  # MUTATION
        return 0


class AcceptsNonCanonicalAddresses(MutantPageTables):
    """Addresses are truncated to 48 bits instead of refused, so kernel addresses alias user
    ones."""

    target = "PAGETABLE-R1"

    def _refusal(self, mm: int, addr: int) -> int:
        return EINVAL if mm not in self.mms else 0  # MUTATION: no address check


class DeadMmGetsEfault(MutantPageTables):
    """An mm id that is not live is refused with -EFAULT instead of -EINVAL."""

    target = "PAGETABLE-R2"

    def _refusal(self, mm: int, addr: int) -> int:
        if mm not in self.mms:
            return EFAULT  # MUTATION: wrong errno
        return super()._refusal(mm, addr)


class PmdAllocGoesOneLevelTooDeep(MutantPageTables):
    """pmd_alloc allocates down to the PTE level: an off-by-one in the level loop."""

    target = "PAGETABLE-R3"

    def pmd_alloc(self, mm: int, addr: int) -> int:
        return self._alloc_to(mm, addr, Level.PTE)  # MUTATION: Level.PMD


class PteIndexMaskTooNarrow(MutantPageTables):
    """set_pte_at computes pte_index with & 0xff, so the upper half of a PTE page aliases the
    lower half."""

    target = "PAGETABLE-R4"

    def set_pte_at(self, mm: int, addr: int, pte: int) -> int:
        refused = self._refusal(mm, addr)
        if refused:
            return refused
        if pt.leaf_entry_refused(pte):
            return EINVAL
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        self._store(table, (addr >> pt.PAGE_SHIFT) & 0xFF, pte)  # MUTATION: & 0x1ff
        return 0


class GetAndClearReturnsZero(MutantPageTables):
    """ptep_get_and_clear clears the entry but returns 0 instead of the old value."""

    target = "PAGETABLE-R5"

    def ptep_get_and_clear(self, mm: int, addr: int) -> int:
        result = super().ptep_get_and_clear(mm, addr)
        return min(result, 0)  # MUTATION: the old value is lost


class MkcleanClearsAccessed(MutantPageTables):
    """ptep_mkclean's pte_mkclean clears ACCESSED along with DIRTY."""

    target = "PAGETABLE-R6"
    #: needs a dirty or writable entry, then ptep_mkclean on exactly it: a deeper search
    examples = 200

    def ptep_mkclean(self, mm: int, addr: int) -> int:
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        index = index_at(Level.PTE, addr)
        old = table.entries.get(index, 0)
        if not pt.pte_present(old) or not (pt.pte_dirty(old) or pt.pte_write(old)):
            return 0
        # MUTATION: pte_mkclean also clears _PAGE_ACCESSED
        new = pt.pte_clear_flags(old, pt._PAGE_RW | pt._PAGE_DIRTY | pt._PAGE_ACCESSED)
        self._store(table, index, new)
        return 1


class WrprotectClearsUserBit(MutantPageTables):
    """ptep_set_wrprotect clears bit 2 (_PAGE_USER) instead of bit 1 (_PAGE_RW)."""

    target = "PAGETABLE-R6"
    #: the bug shows only once a wrprotected PTE is read back by a later rule
    examples = 120

    def ptep_set_wrprotect(self, mm: int, addr: int) -> int:
        table = self._leaf_table(mm, addr)
        if isinstance(table, int):
            return table
        index = index_at(Level.PTE, addr)
        self._store(table, index, table.entries.get(index, 0) & ~pt._PAGE_USER)  # MUTATION
        return 0


class FloorTestOffByOne(MutantPageTables):
    """free_pgd_range bumps the start past a PMD that begins exactly at the floor (<= for <)."""

    target = "PAGETABLE-R7"
    #: the floor must land exactly on a PMD boundary with the PMD still in use: 60 examples
    #: miss it on some seeds
    examples = 120

    def _free_plan(self, mm: Mm, addr: int, end: int, floor: int,
                   ceiling: int) -> list[Table]:
        start = addr & pt.PMD_MASK
        if start <= floor:  # MUTATION: start < floor
            return super()._free_plan(mm, start + pt.PMD_SIZE, end, floor, ceiling)
        return super()._free_plan(mm, addr, end, floor, ceiling)


class CeilingTestOffByOne(MutantPageTables):
    """free_pgd_range pulls the end down by a PMD when it merely reaches the ceiling (>= for >)."""

    target = "PAGETABLE-R7"
    #: needs a PMD-aligned end that meets the ceiling over a live table: a deeper search
    examples = 200

    def _free_plan(self, mm: Mm, addr: int, end: int, floor: int,
                   ceiling: int) -> list[Table]:
        if ceiling and end == ceiling & pt.PMD_MASK:
            end -= pt.PMD_SIZE  # MUTATION: end - 1 >= ceiling - 1
        return super()._free_plan(mm, addr, end, floor, ceiling)


class TeardownLeaksPgd(MutantPageTables):
    """mm_teardown drops the mm but never calls pgd_free: the PGD page leaks."""

    target = "PAGETABLE-R8"

    def mm_teardown(self, mm: int) -> int:
        if mm not in self.mms:
            return EINVAL
        pgd = self.mms[mm].pgd.pfn
        self.pages.get_page(pgd)  # MUTATION: the reference pgd_free would drop is kept
        return super().mm_teardown(mm)


class WalkReportsLevelAbove(MutantPageTables):
    """walk reports the level above the one whose empty entry stopped it."""

    target = "PAGETABLE-R9"

    def walk(self, mm: int, addr: int) -> tuple[int, int]:
        level, value = super().walk(mm, addr)
        if 0 < level < Level.PGD and value == 0:
            return level + 1, 0  # MUTATION: off by one level
        return level, value
