"""The page-allocator contract: the Protocol an implementation satisfies and the views it gives.

The normative text is ``specs/buddy.md``; rule and invariant IDs used here (``BUDDY-…``) are
defined there.  Results are plain ints or None so that an implementation in any language,
behind ctypes or cffi, can satisfy the contract: a pfn or None from ``alloc_pages``, and 0 or a
negative errno from everything else.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

import attrs

from specs.machine import MachineConfig

#: [4.6: include/linux/page-flags.h] a free block's head page has _mapcount == this value.
PAGE_BUDDY_MAPCOUNT_VALUE: Final = -128

# Page flag bits the buddy subsystem sets or tests [4.6: include/linux/page-flags.h].
PG_reserved: Final = 10
PG_head: Final = 14


class Capability(enum.Enum):
    """Optional parts of the contract.  A check that needs one an implementation lacks is
    reported as skipped, never as failed."""

    #: per-cpu lists for order-0 pages (``drain_pages`` and the pcp part of the view)
    PCP = "pcp"
    #: per-page state through ``page_state()``
    PAGE_STATE = "page_state"
    #: ``get_page``/``put_page`` reference counting
    REFCOUNT = "refcount"
    #: ``split_page``
    SPLIT = "split"
    #: __GFP_COMP compound pages
    COMPOUND = "compound"
    #: 4.6 watermarks, lowmem reserves and the fair-zone policy (``zone.watermark`` is real)
    WATERMARKS = "watermarks"
    #: pageblock migratetypes, fallback and stealing (``pageblock_migratetype`` is real)
    MIGRATETYPES = "migratetypes"
    #: placement identical to 4.6, so lockstep comparison with refmodel is meaningful
    EXACT_PLACEMENT = "exact_placement"


ALL_CAPABILITIES: Final = frozenset(Capability)


@attrs.frozen
class PcpView:
    """One CPU's per-cpu page lists for one zone [4.6: struct per_cpu_pages]."""

    count: int
    high: int
    batch: int
    #: pfns per pcp migratetype (UNMOVABLE, MOVABLE, RECLAIMABLE), list head first
    lists: tuple[tuple[int, ...], ...]


@attrs.frozen
class ZoneView:
    """A zone's allocator state [4.6: struct zone]."""

    index: int
    name: str
    start_pfn: int
    end_pfn: int
    managed_pages: int
    #: (WMARK_MIN, WMARK_LOW, WMARK_HIGH)
    watermark: tuple[int, int, int]
    #: indexed by classzone_idx
    lowmem_reserve: tuple[int, ...]
    #: vm_stat[NR_FREE_PAGES]: pages in the buddy lists (pcp pages are not counted)
    nr_free_pages: int
    #: free_area[order].nr_free
    nr_free: tuple[int, ...]
    #: free_area[order].free_list[migratetype] as pfns, list head first
    free_lists: tuple[tuple[tuple[int, ...], ...], ...]
    #: one entry per CPU (empty when the implementation lacks Capability.PCP)
    pcp: tuple[PcpView, ...]
    nr_reserved_highatomic: int
    #: vm_stat[NR_ALLOC_BATCH] and ZONE_FAIR_DEPLETED: the fair-zone allocation policy
    alloc_batch: int
    fair_depleted: bool

    @functools.cached_property
    def free_blocks(self) -> list[tuple[int, int, int]]:
        """Every free block as (pfn, order, migratetype), in list order (computed once)."""
        return [(pfn, order, mt)
                for order, lists in enumerate(self.free_lists)
                for mt, pfns in enumerate(lists)
                for pfn in pfns]


@attrs.frozen
class BuddyView:
    """A snapshot of the allocator that invariant checkers read; it never changes after it is
    taken (implementations copy, or hand out immutable data)."""

    nr_pages: int
    nr_cpus: int
    zones: tuple[ZoneView, ...]
    #: warn_alloc_failed / WARN_ON reports so far (what dmesg would show)
    alloc_warnings: int

    @functools.cached_property
    def free_spans(self) -> list[tuple[int, int]]:
        """Sorted [start, end) of every free block and pcp page (computed once)."""
        spans: list[tuple[int, int]] = []
        for zone in self.zones:
            spans.extend((pfn, pfn + (1 << order)) for pfn, order, _mt in zone.free_blocks)
            spans.extend((pfn, pfn + 1) for pcp in zone.pcp for pfns in pcp.lists
                         for pfn in pfns)
        return sorted(spans)


@attrs.frozen
class PageState:
    """Per-page state, one entry per pfn [4.6: struct page].  Sequences may be lists or
    numpy arrays; checkers must only index, iterate or pass them to ``numpy.asarray``."""

    #: _count (called _refcount from 4.7)
    refcount: Sequence[int]
    #: the raw _mapcount: -1 unmapped, PAGE_BUDDY_MAPCOUNT_VALUE on a free block's head
    mapcount: Sequence[int]
    #: page_private: the order of a free block's head, 0 otherwise
    private: Sequence[int]
    #: page->flags restricted to the PG_* bits the model uses (PG_head, ...)
    flags: Sequence[int]
    #: pfn of the compound head for a tail page, -1 otherwise
    compound_head: Sequence[int]
    #: pageblock migratetype, one entry per pageblock (pfn >> PAGEBLOCK_ORDER)
    pageblock_migratetype: Sequence[int]


@attrs.frozen
class PageInfo:
    """One struct page, for O(1) spot checks of the pages an operation touched."""

    refcount: int
    mapcount: int
    private: int
    flags: int
    compound_head: int


@runtime_checkable
class PageAllocator(Protocol):
    """The buddy allocator as kernel code calls it.  ``cpu`` is the CPU making the call."""

    config: MachineConfig
    capabilities: frozenset[Capability]

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """First pfn of a 2**order block, or None (BUDDY-R1..R6)."""
        ...

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """__free_pages: drop a reference and free at zero; 0 or -errno (BUDDY-R7..R10)."""
        ...

    def get_page(self, pfn: int) -> int:
        """Take a reference; 0 or -errno (BUDDY-R11)."""
        ...

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """Drop a reference, freeing at zero; 0 or -errno (BUDDY-R12)."""
        ...

    def split_page(self, pfn: int, order: int) -> int:
        """Turn a non-compound block into 2**order order-0 pages; 0 or -errno (BUDDY-R13)."""
        ...

    def drain_pages(self, cpu: int) -> int:
        """Return one CPU's pcp pages to the buddy lists; 0 or -EINVAL (BUDDY-R14)."""
        ...

    def view(self) -> BuddyView:
        """A snapshot of the zones, free lists and pcp lists: cost O(free blocks)."""
        ...

    def page_state(self) -> PageState:
        """A snapshot of every struct page: cost O(pages)."""
        ...

    def page(self, pfn: int) -> PageInfo | None:
        """One struct page (None outside memory): cost O(1)."""
        ...


#: What every factory receives: the machine to boot.
class PageAllocatorFactory(Protocol):
    """``module:factory`` plug-ins are callables of this shape."""

    def __call__(self, config: MachineConfig) -> PageAllocator: ...
