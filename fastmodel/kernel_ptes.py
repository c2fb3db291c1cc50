"""Whole-range PTE work for fastmodel's kernel: find, clear and copy every present entry of
a range.

Two implementations of one small interface.  :class:`RowPtes` is used when the page tables
are ``fastmodel.pagetable.FastPageTables``: it reads and writes their numpy rows directly, a
2 MiB PTE table at a time, so zapping or copying a 64 MiB mapping is a few dozen numpy
operations instead of 16,384 table walks.  :class:`WalkedPtes` goes through the
``specs.pagetable.PageTables`` contract only, for any other table part; it skips the span
of every empty upper-level entry the way 4.6's ``p?d_none_or_clear_bad`` loops do.

Both visit entries in ascending address order, the order 4.6's loops (and the reference
kernel) use, because the order of table allocations and page frees decides which pfns later
allocations get.
"""

from __future__ import annotations

from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from fastmodel.pagetable import FastPageTables
from specs import pte as pt
from specs.pagetable import Level, PageTables

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
PAGE_SIZE: Final = pt.PAGE_SIZE
_PTES: Final = pt.PTRS_PER_PTE
_RW: Final = np.uint64(pt._PAGE_RW)
_DIRTY: Final = np.uint64(pt._PAGE_DIRTY)
_ACCESSED: Final = np.uint64(pt._PAGE_ACCESSED)
#: below this many 2 MiB slots a range is scanned slot by slot; above it, the mm's PTE tables
#: are listed instead (a huge sparse VMA has few tables)
_SLOT_SCAN_LIMIT: Final = 64


def _empty() -> tuple[I64, U64]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)


def _joined(addrs: list[I64], entries: list[U64]) -> tuple[I64, U64]:
    if not addrs:
        return _empty()
    if len(addrs) == 1:
        return addrs[0], entries[0]
    return np.concatenate(addrs), np.concatenate(entries)


class PteRanges(Protocol):
    """What the kernel asks of the tables over a whole range."""

    def present(self, mm: int, start: int, end: int) -> tuple[I64, U64]:
        """(addresses, entries) of every non-none PTE in [start, end), ascending."""
        ...

    def zap(self, mm: int, start: int, end: int) -> tuple[I64, U64]:
        """Clear every non-none PTE of [start, end); what was cleared, ascending."""
        ...

    def copy(self, child: int, parent: int, start: int, end: int, cow: bool,
             shared: bool) -> tuple[U64, int]:
        """copy_pte_range for one VMA: the entries installed in the child and 0, or the
        entries installed before a table allocation failed and its -errno."""
        ...


def child_entries(entries: U64, cow: bool, shared: bool) -> U64:
    """[4.6: mm/memory.c copy_one_pte] the child's copy: write-protected for a COW mapping,
    clean for a shared one, old always."""
    out = entries & ~_ACCESSED
    if cow:
        out &= ~_RW
    if shared:
        out &= ~_DIRTY
    return out


class RowPtes:
    """PteRanges over FastPageTables' rows (read and written in place)."""

    def __init__(self, tables: FastPageTables) -> None:
        self.t = tables

    def _slots(self, mm: int, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(row, base address, first index, end index) of each PTE table meeting the
        range, ascending."""
        first, last = start >> pt.PMD_SHIFT, (end - 1) >> pt.PMD_SHIFT
        leaf = self.t._leaf
        if last - first < _SLOT_SCAN_LIMIT:
            keys = [k for k in range(first, last + 1) if (mm, k) in leaf]
        else:
            keys = sorted(k for (owner, k) in leaf if owner == mm and first <= k <= last)
        out = []
        for key in keys:
            base = key << pt.PMD_SHIFT
            lo = (max(start, base) - base) >> pt.PAGE_SHIFT
            hi = (min(end, base + pt.PMD_SIZE) - base + PAGE_SIZE - 1) >> pt.PAGE_SHIFT
            out.append((leaf[(mm, key)], base, lo, hi))
        return out

    def _scan(self, mm: int, start: int, end: int, clear: bool) -> tuple[I64, U64]:
        if start >= end:
            return _empty()
        rows = self.t._rows
        addrs: list[I64] = []
        entries: list[U64] = []
        for row, base, lo, hi in self._slots(mm, start & pt.PAGE_MASK, end):
            chunk = rows[row, lo:hi]
            hit = np.flatnonzero(chunk)
            if not hit.size:
                continue
            addrs.append(base + ((hit + lo) << pt.PAGE_SHIFT))
            entries.append(chunk[hit].copy())
            if clear:
                chunk[hit] = 0
        if clear and addrs:
            self.t._view = None
        return _joined(addrs, entries)

    def present(self, mm: int, start: int, end: int) -> tuple[I64, U64]:
        return self._scan(mm, start, end, clear=False)

    def zap(self, mm: int, start: int, end: int) -> tuple[I64, U64]:
        return self._scan(mm, start, end, clear=True)

    def copy(self, child: int, parent: int, start: int, end: int, cow: bool,
             shared: bool) -> tuple[U64, int]:
        t = self.t
        copied: list[U64] = []
        failed = 0
        for row, base, lo, hi in self._slots(parent, start, end):
            chunk = t._rows[row, lo:hi]
            hit = np.flatnonzero(chunk)
            if not hit.size:
                continue
            # one pte_alloc per PTE table: every address of a table shares its path, so only
            # the first of 4.6's per-entry calls can allocate (or fail)
            failed = t.pte_alloc(child, base + ((int(hit[0]) + lo) << pt.PAGE_SHIFT))
            if failed:
                break
            rows = t._rows  # pte_alloc may have grown (replaced) the row array
            index = hit + lo
            entries = rows[row, index]
            if cow:
                rows[row, index] = entries & ~_RW  # ptep_set_wrprotect on the parent
            out = child_entries(entries, cow, shared)
            rows[t._leaf[(child, base >> pt.PMD_SHIFT)], index] = out
            copied.append(out)
        t._view = None
        return (np.concatenate(copied) if copied else _empty()[1]), failed


class WalkedPtes:
    """PteRanges through the PageTables contract alone."""

    def __init__(self, tables: PageTables) -> None:
        self.t = tables

    def _walk(self, mm: int, start: int, end: int) -> tuple[list[int], list[int]]:
        addrs: list[int] = []
        entries: list[int] = []
        addr = start & pt.PAGE_MASK
        while addr < end:
            level, value = self.t.walk(mm, addr)
            if level < 0:
                break
            if level == Level.PTE:
                if value:
                    addrs.append(addr)
                    entries.append(value)
                addr += PAGE_SIZE
            else:  # nothing below this entry: jump to the next one at its level
                span = 1 << (pt.PAGE_SHIFT + 9 * (level - 1))
                addr = (addr | (span - 1)) + 1
        return addrs, entries

    def present(self, mm: int, start: int, end: int) -> tuple[I64, U64]:
        addrs, entries = self._walk(mm, start, end)
        return np.array(addrs, dtype=np.int64), np.array(entries, dtype=np.uint64)

    def zap(self, mm: int, start: int, end: int) -> tuple[I64, U64]:
        addrs, entries = self._walk(mm, start, end)
        for addr in addrs:
            self.t.ptep_get_and_clear(mm, addr)
        return np.array(addrs, dtype=np.int64), np.array(entries, dtype=np.uint64)

    def copy(self, child: int, parent: int, start: int, end: int, cow: bool,
             shared: bool) -> tuple[U64, int]:
        addrs, entries = self._walk(parent, start, end)
        copied: list[int] = []
        for addr, entry in zip(addrs, entries, strict=True):
            failed = self.t.pte_alloc(child, addr)
            if failed:
                return np.array(copied, dtype=np.uint64), failed
            if cow:
                self.t.ptep_set_wrprotect(parent, addr)
            out = entry & ~pt._PAGE_ACCESSED
            if cow:
                out &= ~pt._PAGE_RW
            if shared:
                out &= ~pt._PAGE_DIRTY
            self.t.set_pte_at(child, addr, out)
            copied.append(out)
        return np.array(copied, dtype=np.uint64), 0


def ranges_for(tables: PageTables) -> PteRanges:
    """The fast implementation for FastPageTables (exactly; a subclass may change what its
    rows mean), the contract-only one for anything else."""
    if type(tables) is FastPageTables:
        return RowPtes(tables)
    return WalkedPtes(tables)
