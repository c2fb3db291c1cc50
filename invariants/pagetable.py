"""State invariants of the page tables, PAGETABLE-I1 .. PAGETABLE-I6 (``specs/pagetable.md``).

Each checker reads a :class:`PageTableSnapshot` (the implementation's view after a step and
the page allocator its table pages come from) and returns the problems it finds, worded so a
kernel engineer can see which table, slot and value is wrong.  Cost is O(tables + non-zero
entries), plus one ``page(pfn)`` lookup per table and per present leaf.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import attrs

from invariants.registry import state_invariant
from specs import pte as pt
from specs.buddy import PageAllocator
from specs.machine import MachineConfig
from specs.pagetable import Level, PageTableView, TableView

MAX_PROBLEMS = 8
#: log2 of the span one entry covers, per level of the table holding it
SPAN_SHIFT = {Level.PTE: pt.PAGE_SHIFT, Level.PMD: pt.PMD_SHIFT, Level.PUD: pt.PUD_SHIFT,
              Level.PGD: pt.PGDIR_SHIFT}


@attrs.define
class PageTableSnapshot:
    """The state after a step, as the state invariants see it."""

    view: PageTableView
    #: the page allocator the implementation takes its table pages from
    pages: PageAllocator
    config: MachineConfig


def capped(problems: list[str]) -> list[str]:
    """At most MAX_PROBLEMS instances, then a count."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]


def describe(table: TableView) -> str:
    """``mm1 PMD page 0x5c2 (covers 0x40000000)``."""
    return f"mm{table.mm} {table.level.name} page {table.pfn:#x} (covers {table.base:#x})"


def entry_address(table: TableView, index: int) -> int:
    """First virtual address the entry at ``index`` covers."""
    return table.base + (index << SPAN_SHIFT[table.level])


def leaves(view: PageTableView) -> Iterator[tuple[TableView, int, int]]:
    """(PTE table, index, value) for every non-zero leaf entry."""
    for table in view.tables:
        if table.level == Level.PTE:
            for index, value in table.entries:
                yield table, index, value


def is_free(pages: PageAllocator, pfn: int) -> bool:
    """The allocator holds no reference to the page (it is on a free list or a pcp list)."""
    info = pages.page(pfn)
    return info is not None and info.refcount == 0


@state_invariant("PAGETABLE-I1", "interior entries point to tables of the next level")
def interior_entries(snap: PageTableSnapshot) -> list[str]:
    """Every non-none PGD, PUD and PMD entry is exactly the next table's address with
    _PAGE_TABLE, and that table says it sits there: a wrong bit position, a wrong pfn shift or
    a stale pointer to a freed table shows up here."""
    view = snap.view
    problems = []
    for table in view.tables:
        if table.level == Level.PTE:
            continue
        for index, value in table.entries:
            where = f"{describe(table)} slot {index} = {value:#x}"
            pfn = pt.pgd_pfn(value)
            if value != pt.mk_table_entry(pfn):
                problems.append(f"{where}: flags {pt.pgd_flags(value):#x}, a user table entry "
                                f"is exactly _PAGE_TABLE ({pt._PAGE_TABLE:#x}) plus the pfn")
                continue
            child = view.by_pfn.get(pfn)
            if child is None:
                problems.append(f"{where}: pfn {pfn:#x} is not a table page of any mm")
                continue
            want = (Level(table.level - 1), table.mm, table.pfn, index,
                    entry_address(table, index))
            have = (child.level, child.mm, child.parent, child.slot, child.base)
            if want != have:
                problems.append(f"{where}: points to {describe(child)} whose (level, mm, parent, "
                                f"slot, base) is {_show(have)}, expected {_show(want)}")
    return capped(problems)


@state_invariant("PAGETABLE-I2", "every table page is reachable exactly once")
def reachable_once(snap: PageTableSnapshot) -> list[str]:
    """Each table page is listed once, belongs to a live mm, and is either that mm's PGD or the
    target of exactly one entry: a table shared between two parents (or two mms) or an orphan
    left behind by a free shows up here."""
    view = snap.view
    problems = []
    listed = Counter(table.pfn for table in view.tables)
    problems += [f"table page {pfn:#x} is listed {n} times" for pfn, n in listed.items() if n > 1]
    refs: Counter[int] = Counter()
    for table in view.tables:
        if table.level != Level.PTE:
            refs.update(pt.pgd_pfn(value) for _index, value in table.entries)
    pgds = Counter(mm.pgd for mm in view.mms)
    for table in view.tables:
        if table.mm not in view.by_mm:
            problems.append(f"{describe(table)} belongs to mm{table.mm}, which is not live")
        if table.level == Level.PGD:
            owner = view.by_mm.get(table.mm)
            if owner is None or owner.pgd != table.pfn or pgds[table.pfn] != 1 or refs[table.pfn]:
                problems.append(f"{describe(table)} is not the PGD of exactly one mm")
        elif refs[table.pfn] != 1:
            problems.append(f"{describe(table)} is referenced by {refs[table.pfn]} entries")
    for mm in view.mms:
        pgd = view.by_pfn.get(mm.pgd)
        if pgd is None or pgd.level != Level.PGD or pgd.mm != mm.id:
            problems.append(f"mm{mm.id}'s pgd {mm.pgd:#x} is not a PGD table of mm{mm.id}")
    return capped(problems)


@state_invariant("PAGETABLE-I3", "nr_ptes and nr_pmds count the table pages")
def table_counters(snap: PageTableSnapshot) -> list[str]:
    """mm->nr_ptes is the number of PTE pages and mm->nr_pmds the number of PMD pages the mm
    owns (no THP deposits in this model); the OOM killer's badness reads them."""
    counts = Counter((table.mm, table.level) for table in snap.view.tables)
    problems = []
    for mm in snap.view.mms:
        have = (mm.nr_ptes, mm.nr_pmds)
        want = (counts[(mm.id, Level.PTE)], counts[(mm.id, Level.PMD)])
        if have != want:
            problems.append(f"mm{mm.id}: nr_ptes={have[0]} nr_pmds={have[1]}, but it owns "
                            f"{want[0]} PTE and {want[1]} PMD pages")
    return problems


@state_invariant("PAGETABLE-I4", "table pages are allocated pages")
def tables_allocated(snap: PageTableSnapshot) -> list[str]:
    """Every table page is a page the allocator has handed out: a table freed while still in
    use (or never allocated) shows up here."""
    problems = []
    for table in snap.view.tables:
        info = snap.pages.page(table.pfn)
        if info is None:
            problems.append(f"{describe(table)}: pfn is outside memory")
        elif info.refcount <= 0:
            problems.append(f"{describe(table)}: the page allocator considers it free "
                            f"(refcount {info.refcount})")
    return capped(problems)


@state_invariant("PAGETABLE-I5", "no entry maps a free page")
def leaves_map_held_pages(snap: PageTableSnapshot) -> list[str]:
    """A present leaf entry that maps a page of memory maps one the allocator has handed out,
    and never a table page: an entry left behind after the page was freed shows up here."""
    tables = snap.view.by_pfn
    problems = []
    for table, index, value in leaves(snap.view):
        if not pt.pte_present(value):
            continue
        pfn = pt.pte_pfn(value)
        if pfn >= snap.config.nr_pages:
            continue  # device memory or a pfn beyond RAM: not the allocator's
        where = f"{describe(table)} slot {index} (address {entry_address(table, index):#x})"
        if pfn in tables:
            problems.append(f"{where} maps {describe(tables[pfn])} as data ({value:#x})")
        elif is_free(snap.pages, pfn):
            problems.append(f"{where} = {value:#x} maps pfn {pfn:#x}, which the page "
                            f"allocator considers free")
    return capped(problems)


@state_invariant("PAGETABLE-I6", "entry bits stay inside the defined set")
def defined_bits(snap: PageTableSnapshot) -> list[str]:
    """No entry at any level carries a bit 4.6 leaves undefined in this configuration (46..57
    above the physical mask, 59..62 for protection keys), nor a value wider than 64 bits."""
    problems = []
    for table in snap.view.tables:
        for index, value in table.entries:
            if not 0 <= value <= pt.ENTRY_MASK or value & pt.UNDEFINED_PTE_BITS:
                stray = value & pt.UNDEFINED_PTE_BITS if value >= 0 else value
                problems.append(f"{describe(table)} slot {index} = {value:#x}: undefined bits "
                                f"{stray:#x}")
    return capped(problems)


def _show(values: tuple[object, ...]) -> str:
    return "(" + ", ".join(f"{v:#x}" if isinstance(v, int) and not isinstance(v, Level)
                           else getattr(v, "name", str(v)) for v in values) + ")"
