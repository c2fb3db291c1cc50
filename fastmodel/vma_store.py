"""The VMA store of the fast address space: a blocked sorted list with a per-block gap maximum.

4.6 keeps VMAs twice: in an rbtree augmented with ``rb_subtree_gap`` (the largest free gap
below any node, so ``unmapped_area`` prunes whole subtrees) and in the ``vm_next``/``vm_prev``
list [4.6: mm/mmap.c vma_compute_subtree_gap, unmapped_area, unmapped_area_topdown].  This
store does the same job with structures that are cheap in Python:

* **vm_next/vm_prev are real links** on every VMA, so neighbours cost O(1), not a search.
* **The tree is a list of blocks** of at most ``2 * BLOCK`` VMAs each, in address order,
  with the end of each block's last VMA kept in a plain int list.  ``find_vma`` is two C-level
  bisects (over those ends, then inside one block); linking or unlinking a VMA shifts at most
  one block.
* **rb_subtree_gap becomes one number per block**: the largest gap between two VMAs of the
  block, recomputed lazily after the block changed.  The gap searches visit gaps in the same
  order as the reference model's walk and skip a block whose largest gap is too small, which
  cannot change their answer (see ``unmapped_area`` and ``unmapped_area_topdown``).

At 60,000 VMAs a search touches about 500 blocks' maxima instead of 60,000 gaps.

Every change to a linked VMA's bounds goes through :meth:`VmaStore.resize`, which marks its
block's gap maximum stale and refreshes the block's end; nothing else assigns ``start`` or
``end`` of a linked VMA.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from itertools import pairwise
from operator import attrgetter
from typing import Final

import attrs

from specs.machine import PAGE_SHIFT
from specs.vma import FileView, VmaView

#: Half the largest block; a block that grows past 2 * BLOCK VMAs is split in two.
BLOCK = 128
#: A block's gap maximum that must be recomputed before use.
STALE: Final = -1


@attrs.define(eq=False, slots=True)
class FFile:
    """A struct file (an opened file or a shared-anonymous shmem object); ``users`` counts
    the VMAs holding it."""

    ident: int
    fd: int | None
    size: int
    readable: bool
    writable: bool
    shmem: bool
    #: [4.6: mm/shmem.c shmem_acct_size] pages charged when the shmem object was created
    charged: int = 0
    users: int = 0
    #: the mms of one machine-wide counter holding this object (``refmodel.vma_core.
    #: ShmemHolders``): a one-element list shared by the copies, or None
    holders: list[int] | None = None

    def view(self) -> FileView:
        return FileView(ident=self.ident, fd=self.fd, size=self.size, readable=self.readable,
                        writable=self.writable, shmem=self.shmem, charged=self.charged)


@attrs.define(eq=False, slots=True)
class FVma:
    """A struct vm_area_struct with its list links and the block holding it."""

    start: int
    end: int
    flags: int
    pgoff: int
    file: FFile | None
    anon_vma: int | None = None
    #: the anon_vma_chain also links the parent's anon_vmas (fork's anon_vma_fork), so it is
    #: not singular
    inherited: bool = False
    prev: FVma | None = None
    next: FVma | None = None
    blk: Block | None = None

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def view(self) -> VmaView:
        return VmaView(start=self.start, end=self.end, flags=self.flags, pgoff=self.pgoff,
                       file=None if self.file is None else self.file.ident,
                       anon_vma=self.anon_vma)


@attrs.define(eq=False, slots=True)
class Block:
    """A run of consecutive VMAs and the largest gap between two of them (STALE when unknown)."""

    items: list[FVma]
    gapmax: int = STALE

    def largest_gap(self) -> int:
        if self.gapmax == STALE:
            self.gapmax = max((b.start - a.end for a, b in pairwise(self.items)), default=0)
        return self.gapmax


_END = attrgetter("end")
_START = attrgetter("start")


def _last_start(block: Block) -> int:
    return block.items[-1].start


class VmaStore:
    """The VMAs of one mm, sorted, non-overlapping, linked and blocked."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        #: the end of each block's last VMA, so that locating a block is a C-level bisect
        self.maxes: list[int] = []
        self.count = 0

    # -- lookup ----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[FVma]:
        """The VMAs in address order."""
        for block in self.blocks:
            yield from block.items

    @property
    def first(self) -> FVma | None:
        return self.blocks[0].items[0] if self.blocks else None

    @property
    def last(self) -> FVma | None:
        return self.blocks[-1].items[-1] if self.blocks else None

    @property
    def highest_vm_end(self) -> int:
        return self.blocks[-1].items[-1].end if self.blocks else 0

    def _locate_end(self, addr: int) -> tuple[int, int]:
        """(block, slot) of the lowest VMA with end > addr; (len(blocks), 0) when none."""
        k = bisect.bisect_right(self.maxes, addr)
        if k == len(self.blocks):
            return k, 0
        return k, bisect.bisect_right(self.blocks[k].items, addr, key=_END)

    def find_vma(self, addr: int) -> FVma | None:
        """[4.6: mm/mmap.c find_vma] the lowest VMA with end > addr."""
        k, j = self._locate_end(addr)
        return self.blocks[k].items[j] if k < len(self.blocks) else None

    def find_vma_intersection(self, start: int, end: int) -> FVma | None:
        vma = self.find_vma(start)
        if vma is not None and end <= vma.start:
            return None
        return vma

    def prev_for(self, addr: int) -> FVma | None:
        """The VMA find_vma_links reports as prev for a free range starting at addr."""
        vma = self.find_vma(addr)
        return self.last if vma is None else vma.prev

    def overlaps(self, start: int, end: int) -> bool:
        return self.find_vma_intersection(start, end) is not None

    # -- changes ---------------------------------------------------------------------------------

    def link(self, vma: FVma) -> None:
        """Insert an unlinked VMA at its address; the range it covers must be free."""
        self.count += 1
        blocks = self.blocks
        if not blocks:
            block = Block([vma])
            blocks.append(block)
            self.maxes.append(vma.end)
            vma.blk = block
            vma.prev = vma.next = None
            return
        k = bisect.bisect_right(self.maxes, vma.start)
        if k == len(blocks):
            k -= 1
        block = blocks[k]
        items = block.items
        j = bisect.bisect_right(items, vma.start, key=_END)
        if j:
            prev: FVma | None = items[j - 1]
        else:
            prev = blocks[k - 1].items[-1] if k else None
        nxt = prev.next if prev is not None else self.blocks[0].items[0]
        items.insert(j, vma)
        vma.blk = block
        vma.prev, vma.next = prev, nxt
        if prev is not None:
            prev.next = vma
        if nxt is not None:
            nxt.prev = vma
        block.gapmax = STALE
        if j == len(items) - 1:
            self.maxes[k] = vma.end
        if len(items) > 2 * BLOCK:
            upper = Block(items[BLOCK:])
            del items[BLOCK:]
            for moved in upper.items:
                moved.blk = upper
            blocks.insert(k + 1, upper)
            self.maxes.insert(k + 1, self.maxes[k])
            self.maxes[k] = items[-1].end

    def unlink(self, vma: FVma) -> None:
        """Detach one VMA (the caller drops its file reference)."""
        block = vma.blk
        assert block is not None, "VMA not linked"
        items = block.items
        was_last = items[-1] is vma
        items.remove(vma)
        if was_last:
            self._block_changed(block)
        block.gapmax = STALE
        self._splice(vma.prev, vma.next)
        vma.blk = vma.prev = vma.next = None
        self.count -= 1

    def _block_changed(self, block: Block) -> None:
        """The block's last VMA changed or left: refresh its bound, or drop it if empty."""
        k = self.blocks.index(block)
        if block.items:
            self.maxes[k] = block.items[-1].end
        else:
            del self.blocks[k], self.maxes[k]

    def unlink_run(self, first: FVma, end: int) -> list[FVma]:
        """Detach ``first`` and every following VMA that starts below end, a block slice at a
        time (munmap of many VMAs), and return them in address order."""
        gone: list[FVma] = []
        before = first.prev
        vma: FVma | None = first
        while vma is not None and vma.start < end:
            block = vma.blk
            assert block is not None
            items = block.items
            j = items.index(vma)
            stop = j
            while stop < len(items) and items[stop].start < end:
                stop += 1
            run = items[j:stop]
            vma = run[-1].next
            took_last = stop == len(items)
            del items[j:stop]
            if took_last:
                self._block_changed(block)
            block.gapmax = STALE
            for dead in run:
                dead.blk = dead.prev = dead.next = None
            gone.extend(run)
        self._splice(before, vma)
        self.count -= len(gone)
        return gone

    def _splice(self, prev: FVma | None, nxt: FVma | None) -> None:
        if prev is not None:
            prev.next = nxt
        if nxt is not None:
            nxt.prev = prev

    def resize(self, vma: FVma, start: int, end: int) -> None:
        """Move a linked VMA's bounds (the caller keeps the list sorted and disjoint)."""
        vma.start = start
        vma.end = end
        block = vma.blk
        if block is not None:
            block.gapmax = STALE
            if block.items[-1] is vma:
                self._block_changed(block)

    # -- free-gap search [4.6: mm/mmap.c unmapped_area, unmapped_area_topdown] ------------------

    def unmapped_area(self, length: int, low: int, high: int) -> int | None:
        """Bottom-up: the lowest gap that fits among the gaps below VMAs starting at or above
        low + length, clipped to low; None for -ENOMEM.

        Gaps are visited in address order and the walk stops at the first gap starting above
        high - length.  A block whose internal gaps are all too small is skipped: each skipped
        gap starts no higher than the next gap visited, so the stop is reached all the same."""
        if high < length:
            return None
        high_limit = high - length
        if low > high_limit:
            return None
        low_limit = low + length
        blocks = self.blocks
        k = bisect.bisect_left(blocks, low_limit, key=_last_start)
        j = bisect.bisect_left(blocks[k].items, low_limit, key=_START) if k < len(blocks) else 0
        while k < len(blocks):
            block = blocks[k]
            items = block.items
            if j == 1 and block.largest_gap() < length:
                j = len(items)
            while j < len(items):
                vma = items[j]
                gap_start = vma.prev.end if vma.prev is not None else 0
                if gap_start > high_limit:
                    return None
                if vma.start - gap_start >= length:
                    return max(gap_start, low)
                j += 1
                if j == 1 and block.largest_gap() < length:
                    j = len(items)
            k += 1
            j = 0
        highest = self.highest_vm_end
        if highest > high_limit:
            return None
        return max(highest, low)

    def unmapped_area_topdown(self, length: int, low: int, high: int) -> int | None:
        """Top-down: just below high when nothing is mapped above high - length, else the
        highest gap that fits at or below the lowest VMA ending above high - length, taken at
        its top; None for -ENOMEM.

        Gaps are visited from high to low addresses and the walk stops at the first gap ending
        below low + length.  A block whose internal gaps are all too small is skipped: its
        lowest gap ends above the gap below its first VMA, which is visited next."""
        if high < length:
            return None
        high_limit = high - length
        if low > high_limit:
            return None
        low_limit = low + length
        if self.highest_vm_end <= high_limit:
            return high - length
        blocks = self.blocks
        k, j = self._locate_end(high_limit)
        while k >= 0:
            block = blocks[k]
            items = block.items
            if j == len(items) - 1 and j > 0 and block.largest_gap() < length:
                j = 0
            while j >= 0:
                vma = items[j]
                gap_end = vma.start
                if gap_end < low_limit:
                    return None
                gap_start = vma.prev.end if vma.prev is not None else 0
                if gap_start <= high_limit and gap_end - gap_start >= length:
                    return min(gap_end, high) - length
                j -= 1
            k -= 1
            if k >= 0:
                j = len(blocks[k].items) - 1
        return None
