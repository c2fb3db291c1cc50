"""The page-table contract: the Protocol an implementation satisfies and the views it gives.

The normative text is ``specs/pagetable.md``; the IDs used here (``PAGETABLE-…``) are defined
there.  Entry values are plain ints holding 4.6's 64-bit x86-64 encodings (``specs/pte.py``),
and results are plain ints, so a C implementation behind ctypes needs only a thin wrapper: an
mm id or None from ``mm_alloc``, an entry value (>= 0) or a negative errno from the calls that
read an entry, 0 or a negative errno from the rest.
"""

from __future__ import annotations

import enum
import functools
from typing import Final, Protocol, runtime_checkable

import attrs

from specs import gfp, pte
from specs.buddy import PageAllocator
from specs.machine import MachineConfig

#: What every table page is allocated with: pgd_alloc, pud_alloc_one, pmd_alloc_one and
#: pte_alloc_one all ask for one zeroed order-0 page [4.6: arch/x86/mm/pgtable.c PGALLOC_GFP].
PGALLOC_GFP: Final = gfp.GFP_KERNEL | gfp.__GFP_NOTRACK | gfp.__GFP_REPEAT | gfp.__GFP_ZERO


class Level(enum.IntEnum):
    """A table's level; an entry at level N points to a table of level N - 1 (or, at PTE
    level, to the data page)."""

    PTE = 1
    PMD = 2
    PUD = 3
    PGD = 4


class Capability(enum.Enum):
    """Optional parts of the contract.  A check that needs one an implementation lacks is
    reported as skipped, never as failed."""

    #: table pages are allocated, and mm ids handed out, exactly as refmodel does, so that
    #: lockstep comparison (pfns included) is meaningful
    EXACT_PLACEMENT = "exact_placement"


ALL_CAPABILITIES: Final = frozenset(Capability)


@attrs.frozen
class TableView:
    """One table page [4.6: a page with PageTable set, or the mm's pgd]."""

    pfn: int
    level: Level
    #: id of the mm whose tables these are
    mm: int
    #: pfn of the table whose entry points here; -1 for a PGD
    parent: int
    #: index of that entry in the parent; -1 for a PGD
    slot: int
    #: first virtual address this table covers
    base: int
    #: (index, value) of every non-zero entry, ascending index
    entries: tuple[tuple[int, int], ...]


@attrs.frozen
class MmView:
    """The page-table part of one mm_struct [4.6: struct mm_struct pgd, nr_ptes, nr_pmds]."""

    id: int
    #: pfn of the PGD page
    pgd: int
    nr_ptes: int
    nr_pmds: int


@attrs.frozen
class PageTableView:
    """Every live mm and every table page it owns.  A snapshot: it never changes after it is
    taken, and costs O(tables + non-zero entries) to build (implementations may cache it
    between mutations)."""

    #: ascending id
    mms: tuple[MmView, ...]
    #: ascending pfn
    tables: tuple[TableView, ...]

    @functools.cached_property
    def by_pfn(self) -> dict[int, TableView]:
        """pfn -> table (a pfn listed twice keeps its last table; PAGETABLE-I2 reports it)."""
        return {table.pfn: table for table in self.tables}

    @functools.cached_property
    def by_mm(self) -> dict[int, MmView]:
        """id -> mm."""
        return {mm.id: mm for mm in self.mms}

    def entry(self, mm: int, addr: int) -> tuple[Level, int]:
        """The walk to ``addr`` as this view describes it: the level where it stopped and the
        entry read there (0 when that entry is none).  ``mm`` must be live."""
        table = self.by_pfn.get(self.by_mm[mm].pgd)
        level = Level.PGD
        while table is not None:
            value = dict(table.entries).get(index_at(table.level, addr), 0)
            if table.level == Level.PTE or value == 0:
                return table.level, value
            level = Level(table.level - 1)
            table = self.by_pfn.get(pte.pgd_pfn(value))
        return level, 0


def index_at(level: Level, addr: int) -> int:
    """pgd_index, pud_index, pmd_index or pte_index of ``addr`` for a table of ``level``."""
    return (addr >> (pte.PAGE_SHIFT + 9 * (level - 1))) & (pte.PTRS_PER_PTE - 1)


@runtime_checkable
class PageTables(Protocol):
    """The page tables of every mm, as mm/memory.c and arch/x86/mm/pgtable.c manage them.

    ``mm`` is an id ``mm_alloc`` returned; ``addr`` any byte address (only its page matters).
    """

    config: MachineConfig
    capabilities: frozenset[Capability]

    def mm_alloc(self) -> int | None:
        """A new mm with an empty PGD; None when no page is left (PAGETABLE-R3)."""
        ...

    def pud_alloc(self, mm: int, addr: int) -> int:
        """Every missing table down to the PUD page of ``addr``; 0 or -errno (PAGETABLE-R3)."""
        ...

    def pmd_alloc(self, mm: int, addr: int) -> int:
        """Every missing table down to the PMD page of ``addr``; 0 or -errno (PAGETABLE-R3)."""
        ...

    def pte_alloc(self, mm: int, addr: int) -> int:
        """Every missing table down to the PTE page of ``addr``; 0 or -errno (PAGETABLE-R3)."""
        ...

    def set_pte_at(self, mm: int, addr: int, pte: int) -> int:
        """Store a leaf entry; 0 or -errno (PAGETABLE-R4)."""
        ...

    def ptep_get_and_clear(self, mm: int, addr: int) -> int:
        """Clear a leaf entry; the old value or -errno (PAGETABLE-R5)."""
        ...

    def ptep_set_wrprotect(self, mm: int, addr: int) -> int:
        """Clear RW in place; 0 or -errno (PAGETABLE-R6)."""
        ...

    def ptep_test_and_clear_young(self, mm: int, addr: int) -> int:
        """Clear ACCESSED in place; 1 if it was set, 0 if not, or -errno (PAGETABLE-R6)."""
        ...

    def ptep_mkclean(self, mm: int, addr: int) -> int:
        """Write-protect and clean in place; 1 if it was dirty or writable (PAGETABLE-R6)."""
        ...

    def change_protection(self, mm: int, start: int, end: int, newprot: int) -> int:
        """pte_modify every present entry in [start, end); the count or -errno (PAGETABLE-R6)."""
        ...

    def walk(self, mm: int, addr: int) -> tuple[int, int]:
        """(level reached, entry there) or (-errno, 0) (PAGETABLE-R9)."""
        ...

    def free_pgtables(self, mm: int, start: int, end: int, floor: int, ceiling: int) -> int:
        """Free the tables of [start, end) that nothing in [floor, ceiling) still needs;
        0 or -errno (PAGETABLE-R7)."""
        ...

    def mm_teardown(self, mm: int) -> int:
        """Clear every entry, free every table page and the PGD; 0 or -errno (PAGETABLE-R8)."""
        ...

    def view(self) -> PageTableView:
        """A snapshot of every mm and table: O(tables + non-zero entries)."""
        ...


class PageTablesFactory(Protocol):
    """``module:factory`` plug-ins for the pagetable subsystem are callables of this shape: the
    machine to boot and the page allocator every table page comes from."""

    def __call__(self, config: MachineConfig, pages: PageAllocator) -> PageTables: ...
