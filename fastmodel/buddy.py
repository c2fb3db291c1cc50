"""The 4.6 buddy allocator over compact per-page arrays.  [4.6: mm/page_alloc.c]

This is ``refmodel.buddy`` with the same functions, in the same order, making the same
decisions, so that every call returns what the reference model returns and every view, page
state and page is equal to the reference model's after every call.  What differs is only how
state is stored, chosen for a machine of millions of pages:

* **struct page is four small numpy arrays, not an object per page.**  The reference model
  keeps a ``Page`` object per pfn (about 120 bytes a page, and 3 s of boot at 4M pages).
  Here mem_map is ``refcount`` (int32), ``pstate`` (uint8: ``private`` in bits 0-3, then
  PageBuddy for the ``_mapcount`` sentinel, PG_head, and "is a compound tail"),
  ``owner_order`` (uint8, also the compound order of a compound head) and
  ``pcp_migratetype`` (uint8): 7 bytes a page, allocated zeroed by numpy in milliseconds.
  ``_mapcount``, ``flags`` and ``compound_head`` are derived from ``pstate`` (they only ever
  take the values the reference model gives them; see ``fastmodel.buddy_pages.PS_BUDDY``), so
  they cost nothing to store, and ``page_state`` copies only ``pstate`` and ``refcount``.
* **Hot paths read those arrays through memoryviews.**  Scalar numpy indexing costs about
  twice a memoryview's and returns numpy scalars that slow later arithmetic; a memoryview of
  the same buffer returns a Python int.  Whole-array work (boot, ``page_state``, scanning a
  pageblock for free blocks, compound tails of large pages) uses numpy on the same buffers.
* **Free and pcp lists cost memory per listed block, not per page**: every list of the machine
  shares one pair of link dicts (:mod:`fastmodel.pfnlist`), and a block leaves its list in
  O(1) without searching the migratetype lists for it.
* **Per-call set-up is precomputed**: zonelists and alloc contexts for every (gfp_zone,
  migratetype), zone geometry copied onto the zone, zone lookup by comparing against the two
  zone boundaries, gfp bits and ALLOC_* flags as module-level ints (no ``enum.IntFlag``
  arithmetic, no attribute lookups), and list_first_entry + list_del as one call.

Complexity: as the reference model, every operation is O(MAX_ORDER) list work plus, when
stealing or reserving, one numpy scan of a pageblock; compound set-up, compound free and
``split_page`` cost O(2**order) numpy work; ``boot`` is O(pages) numpy plus one free per boot
block; ``view`` is O(listed pfns); ``page_state`` is O(pages) numpy.
"""

from __future__ import annotations

from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from fastmodel import buddy_pages
from fastmodel.buddy_pages import PRIVATE_MASK, PS_BUDDY, PS_HEAD, PS_TAIL
from fastmodel.pfnlist import ListStore, PfnList
from specs import gfp
from specs.buddy import (
    ALL_CAPABILITIES,
    PAGE_BUDDY_MAPCOUNT_VALUE,
    BuddyView,
    Capability,
    PageInfo,
    PageState,
    PcpView,
    PG_head,
    ZoneView,
)
from specs.errno import Errno
from specs.gfp import __GFP_BITS_MASK as GFP_BITS_MASK
from specs.gfp import (
    ALLOC_CPUSET,
    ALLOC_FAIR,
    ALLOC_HARDER,
    ALLOC_HIGH,
    ALLOC_NO_WATERMARKS,
    ALLOC_WMARK_HIGH,
    ALLOC_WMARK_LOW,
    ALLOC_WMARK_MASK,
    FALLBACKS,
    MIGRATE_PCPTYPES,
    MIGRATE_TYPES,
    WMARK_HIGH,
    WMARK_LOW,
    GfpFlag,
    MigrateType,
)
from specs.machine import (
    MAX_ORDER,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    MachineConfig,
    ZoneGeometry,
    derive_zones,
)

HIGHATOMIC: Final = int(MigrateType.MIGRATE_HIGHATOMIC)
MOVABLE: Final = int(MigrateType.MIGRATE_MOVABLE)
UNMOVABLE: Final = int(MigrateType.MIGRATE_UNMOVABLE)
RECLAIMABLE: Final = int(MigrateType.MIGRATE_RECLAIMABLE)

# The gfp bits the allocator tests, as plain ints: ``mask & GfpFlag.X`` builds an IntFlag.
GFP_COLD: Final = int(GfpFlag.COLD)
GFP_COMP: Final = int(GfpFlag.COMP)
GFP_NOWARN: Final = int(GfpFlag.NOWARN)
GFP_ATOMIC_BIT: Final = int(GfpFlag.ATOMIC)
GFP_DIRECT_RECLAIM: Final = int(GfpFlag.DIRECT_RECLAIM)
GFP_NORETRY: Final = int(GfpFlag.NORETRY)
GFP_NOFAIL: Final = int(GfpFlag.NOFAIL)
GFP_HARDWALL: Final = int(GfpFlag.HARDWALL)
#: The bits gfp_zone, gfp_zone_bad, gfp_migratetype_bad and gfpflags_to_migratetype read.
GFP_DECODE_MASK: Final = gfp.GFP_ZONEMASK | gfp.GFP_MOVABLE_MASK

#: what page_is_buddy compares: the _mapcount sentinel and page_private.
BUDDY_FIELDS: Final = PS_BUDDY | PRIVATE_MASK

#: Compound tails and split pages of at most this many pages are set up by a Python loop over
#: the memoryview; larger ranges by one numpy slice operation (about 1 us of fixed cost).
SMALL_RANGE: Final = 16


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@attrs.define(slots=True, eq=False)
class Pcp:
    """struct per_cpu_pages for one CPU and zone."""

    high: int
    batch: int
    lists: list[PfnList]
    count: int = 0


@attrs.define(slots=True, eq=False)
class Zone:
    """struct zone: the geometry it booted with plus the allocator's mutable state.

    ``index``, ``start_pfn``, ``end_pfn``, ``watermark`` and ``lowmem_reserve`` are copies of
    the geometry's, read on every allocation.
    """

    geometry: ZoneGeometry
    pcp: list[Pcp]
    #: the links of this zone's free and pcp lists (list_del needs no list head)
    links: ListStore
    free_area: list[list[PfnList]]
    index: int
    start_pfn: int
    end_pfn: int
    populated: bool
    #: zone->watermark[WMARK_MIN, WMARK_LOW, WMARK_HIGH]
    watermark: tuple[int, int, int]
    lowmem_reserve: tuple[int, ...]
    nr_free: list[int] = attrs.field(factory=lambda: [0] * MAX_ORDER)
    nr_free_pages: int = 0  # vm_stat[NR_FREE_PAGES]
    nr_reserved_highatomic: int = 0
    alloc_batch: int = 0  # vm_stat[NR_ALLOC_BATCH]
    fair_depleted: bool = False  # ZONE_FAIR_DEPLETED

    def contains(self, pfn: int) -> bool:
        """zone_spans_pfn."""
        return self.start_pfn <= pfn < self.end_pfn


@attrs.frozen
class AllocContext:
    """struct alloc_context: the zonelist and the zone the request is accounted to."""

    zonelist: tuple[Zone, ...]
    preferred_zone: Zone
    classzone_idx: int
    migratetype: int


@attrs.define(slots=True, eq=False)
class BuddyState:
    """The whole page allocator: mem_map as compact arrays, zones and pageblock bits.

    Each per-page array has a memoryview of the same buffer (``rc``, ``ps``, ``oo``, ``pm``;
    ``pb`` for the pageblock bits) for scalar access on hot paths.
    """

    config: MachineConfig
    nr_pages: int
    zones: list[Zone]
    #: _count
    refcount: npt.NDArray[np.int32]
    #: private | PS_BUDDY | PS_HEAD | PS_TAIL
    pstate: npt.NDArray[np.uint8]
    #: the order this page was handed out at (page_owner); the compound order of a PG_head page
    owner_order: npt.NDArray[np.uint8]
    #: set_pcppage_migratetype (4.6 reuses page->index)
    pcp_migratetype: npt.NDArray[np.uint8]
    pageblock_migratetype: npt.NDArray[np.int8]
    rc: memoryview
    ps: memoryview
    oo: memoryview
    pm: memoryview
    pb: memoryview
    #: end of DMA and end of DMA32: the zones tile [0, nr_pages) in index order
    zone_bounds: tuple[int, int]
    #: indexed by gfp_mask & GFP_DECODE_MASK: gfp_zone_bad or gfp_migratetype_bad
    gfp_bad: list[bool]
    #: indexed by gfp_mask & GFP_DECODE_MASK: the alloc_context for gfp_zone and
    #: gfpflags_to_migratetype, None when the zonelist is empty
    gfp_context: list[AllocContext | None]
    alloc_warnings: int = 0


# ---------------------------------------------------------------------------------------------
# Boot
# ---------------------------------------------------------------------------------------------


def boot(config: MachineConfig) -> BuddyState:
    """Build mem_map and the zones, then free all memory into the buddy lists.

    [4.6: memmap_init_zone marks every pageblock MIGRATE_MOVABLE; free_all_bootmem frees
    memory in the largest aligned blocks that fit.]
    [Simplified: each zone's span is freed separately, lowest pfn first, straight into
    __free_one_page; 4.6 frees order-0 boot pages through the boot CPU's pcp list.]

    Complexity: O(pages) numpy to allocate mem_map (zeroed memory, so untouched pages are not
    even resident), then one __free_one_page per boot block, in the reference model's order so
    that the free lists come out in the same order.
    """
    zones = []
    for geo in derive_zones(config):
        links = ListStore()  # one per zone: its version says when the zone's lists changed
        pcps = [Pcp(high=geo.pcp_high, batch=geo.pcp_batch,
                    lists=[links.new_list() for _ in range(MIGRATE_PCPTYPES)])
                for _ in range(config.nr_cpus)]
        free_area = [[links.new_list() for _ in range(MIGRATE_TYPES)] for _ in range(MAX_ORDER)]
        zones.append(Zone(
            geometry=geo, pcp=pcps, links=links, free_area=free_area, index=geo.index,
            start_pfn=geo.start_pfn, end_pfn=geo.end_pfn, populated=geo.populated,
            watermark=geo.watermark, lowmem_reserve=geo.lowmem_reserve,
            alloc_batch=geo.watermark[WMARK_HIGH] - geo.watermark[WMARK_LOW]))
    nr_pages = config.nr_pages
    nr_pageblocks = -(-nr_pages // PAGEBLOCK_NR_PAGES)
    refcount = np.zeros(nr_pages, dtype=np.int32)
    pstate = np.zeros(nr_pages, dtype=np.uint8)  # mapcount -1, private 0, no flags
    owner_order = np.zeros(nr_pages, dtype=np.uint8)
    pcp_migratetype = np.zeros(nr_pages, dtype=np.uint8)
    pageblock = np.full(nr_pageblocks, MOVABLE, dtype=np.int8)
    gfp_bad: list[bool] = []
    gfp_context: list[AllocContext | None] = []
    for bits in range(GFP_DECODE_MASK + 1):
        gfp_bad.append(gfp.gfp_zone_bad(bits) or gfp.gfp_migratetype_bad(bits))
        high_zoneidx = gfp.gfp_zone(bits)
        zonelist = tuple(zone for zone in reversed(zones)
                         if zone.populated and zone.index <= high_zoneidx)
        gfp_context.append(AllocContext(
            zonelist=zonelist, preferred_zone=zonelist[0], classzone_idx=zonelist[0].index,
            migratetype=gfp.gfpflags_to_migratetype(bits)) if zonelist else None)
    state = BuddyState(
        config=config, nr_pages=nr_pages, zones=zones, refcount=refcount,
        pstate=pstate, owner_order=owner_order, pcp_migratetype=pcp_migratetype,
        pageblock_migratetype=pageblock, rc=refcount.data, ps=pstate.data, oo=owner_order.data,
        pm=pcp_migratetype.data, pb=pageblock.data,
        zone_bounds=(zones[0].end_pfn, zones[1].end_pfn), gfp_bad=gfp_bad,
        gfp_context=gfp_context)
    for zone in zones:
        pfn, end = zone.start_pfn, zone.end_pfn
        while pfn < end:
            order = MAX_ORDER - 1 if pfn == 0 else min(MAX_ORDER - 1, (pfn & -pfn).bit_length() - 1)
            while pfn + (1 << order) > end:
                order -= 1
            free_one_page(state, zone, pfn, order, get_pageblock_migratetype(state, pfn))
            pfn += 1 << order
    return state


# ---------------------------------------------------------------------------------------------
# Helpers on pages
# ---------------------------------------------------------------------------------------------


def page_zone(state: BuddyState, pfn: int) -> Zone | None:
    """The zone spanning pfn, or None outside memory.

    Complexity: O(1): DMA, DMA32 and Normal tile [0, nr_pages) in that order (Movable is
    empty), so two comparisons with the zone boundaries name the zone.
    """
    if not 0 <= pfn < state.nr_pages:
        return None
    dma_end, dma32_end = state.zone_bounds
    return state.zones[0 if pfn < dma_end else 1 if pfn < dma32_end else 2]


def get_pageblock_migratetype(state: BuddyState, pfn: int) -> int:
    """[4.6: get_pfnblock_migratetype]"""
    return state.pb[pfn >> PAGEBLOCK_ORDER]


def set_pageblock_migratetype(state: BuddyState, pfn: int, migratetype: int) -> None:
    """[4.6: set_pageblock_migratetype]"""
    state.pb[pfn >> PAGEBLOCK_ORDER] = migratetype


def page_is_buddy_head(state: BuddyState, pfn: int) -> bool:
    """PageBuddy: the page heads a free block.  (move_freepages applies the same test to a
    whole pageblock at once with numpy.)"""
    return bool(state.ps[pfn] & PS_BUDDY)


def set_page_order(state: BuddyState, pfn: int, order: int) -> None:
    """[4.6: set_page_order] mark pfn as the head of a free block of this order."""
    ps = state.ps
    ps[pfn] = (ps[pfn] & ~BUDDY_FIELDS) | PS_BUDDY | order


def rmv_page_order(state: BuddyState, pfn: int) -> None:
    """[4.6: rmv_page_order]"""
    ps = state.ps
    ps[pfn] &= ~BUDDY_FIELDS


def page_is_buddy(state: BuddyState, pfn: int, buddy: int, order: int) -> bool:
    """[4.6: page_is_buddy] buddy heads a free block of this order in pfn's zone.

    pfn is always a page of the block being freed, so inside memory; the zone test compares
    which side of each zone boundary the two pages fall on.
    """
    if not 0 <= buddy < state.nr_pages:
        return False
    if state.ps[buddy] & BUDDY_FIELDS != PS_BUDDY | order:
        return False
    dma_end, dma32_end = state.zone_bounds
    return (pfn < dma_end) == (buddy < dma_end) and (pfn < dma32_end) == (buddy < dma32_end)


def del_from_free_area(zone: Zone, pfn: int, order: int) -> None:
    """list_del(&page->lru) for a free block head, whichever migratetype list holds it.

    Complexity: O(1): the lists share their links, so the block unlinks itself as in 4.6.
    """
    zone.links.unlink(pfn)


def compound_head(state: BuddyState, pfn: int) -> int:
    """[4.6: compound_head] the head's pfn for a compound tail page, -1 otherwise.

    A compound page of order k is aligned to 2**k and its tails carry no PG_head, so the head
    is the first of pfn rounded down to 2, 4, 8, ... pages that has PG_head and an order
    reaching that far.  Complexity: O(MAX_ORDER) for a tail page, O(1) otherwise.
    """
    ps = state.ps
    if not ps[pfn] & PS_TAIL:
        return -1
    oo = state.oo
    for order in range(1, MAX_ORDER):
        head = pfn & ~((1 << order) - 1)
        if ps[head] & PS_HEAD and oo[head] >= order:
            return head
    raise AssertionError(f"compound tail {pfn} has no head")


def set_range_bits(state: BuddyState, start: int, end: int, bits: int) -> None:
    """pstate[start:end] |= bits.  Complexity: O(end - start)."""
    if end - start <= SMALL_RANGE:
        ps = state.ps
        for pfn in range(start, end):
            ps[pfn] |= bits
    else:
        state.pstate[start:end] |= np.uint8(bits)


def clear_range_bits(state: BuddyState, start: int, end: int, bits: int) -> None:
    """pstate[start:end] &= ~bits.  Complexity: O(end - start)."""
    if end - start <= SMALL_RANGE:
        ps = state.ps
        for pfn in range(start, end):
            ps[pfn] &= ~bits
    else:
        state.pstate[start:end] &= np.uint8(~bits & 0xFF)


# ---------------------------------------------------------------------------------------------
# Freeing
# ---------------------------------------------------------------------------------------------


def free_one_page(state: BuddyState, zone: Zone, pfn: int, order: int, migratetype: int) -> None:
    """Put a block back and merge it with free buddies.  [4.6: __free_one_page]

    [Simplified: no pageblock isolation, so the pageblock_order merge limit is always lifted
    and merging runs to MAX_ORDER-1.]
    """
    zone.nr_free_pages += 1 << order  # __mod_zone_freepage_state
    nr_free = zone.nr_free
    buddy = -1
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)  # __find_buddy_index
        if not page_is_buddy(state, pfn, buddy, order):
            break
        del_from_free_area(zone, buddy, order)
        nr_free[order] -= 1
        rmv_page_order(state, buddy)
        pfn &= buddy  # combined_idx = buddy_idx & page_idx
        order += 1
    set_page_order(state, pfn, order)
    # Tail placement: if the next-order buddy is free, this block will probably merge soon, so
    # keep it at the tail where allocations are less likely to take it.
    free_list = zone.free_area[order][migratetype]
    if order < MAX_ORDER - 2:
        combined = pfn & buddy
        higher_buddy = combined ^ (1 << (order + 1))
        if page_is_buddy(state, combined, higher_buddy, order + 1):
            free_list.add_tail(pfn)
            nr_free[order] += 1
            return
    free_list.add_head(pfn)
    nr_free[order] += 1


def free_pages_prepare(state: BuddyState, pfn: int, order: int) -> None:
    """[4.6: free_pages_prepare] undo compound and owner state before the pages go back.

    [Simplified: free_pages_check cannot fail here, because the adapter refuses such frees
    before anything changes.]

    Only a compound head's tails carry compound_head (a freed block is always exactly the block
    that was allocated, so no other compound page overlaps it); clearing them is skipped for
    other blocks.  Complexity: O(1), or O(2**order) for a compound page.
    """
    ps = state.ps
    compound = ps[pfn] & PS_HEAD
    ps[pfn] = ps[pfn] & ~PS_HEAD
    state.oo[pfn] = 0  # compound_order = 0; reset_page_owner
    if compound:
        # free_tail_pages_check: clear_compound_head
        clear_range_bits(state, pfn + 1, pfn + (1 << order), PS_TAIL)


def free_pages_ok(state: BuddyState, pfn: int, order: int) -> None:
    """[4.6: __free_pages_ok] a higher-order block goes straight to the buddy lists."""
    free_pages_prepare(state, pfn, order)
    zone = page_zone(state, pfn)
    assert zone is not None
    free_one_page(state, zone, pfn, order, get_pageblock_migratetype(state, pfn))


def free_hot_cold_page(state: BuddyState, pfn: int, cold: bool, cpu: int) -> None:
    """An order-0 page goes to this CPU's pcp list.  [4.6: free_hot_cold_page]"""
    free_pages_prepare(state, pfn, 0)
    zone = page_zone(state, pfn)
    assert zone is not None
    migratetype = get_pageblock_migratetype(state, pfn)
    state.pm[pfn] = migratetype
    if migratetype >= MIGRATE_PCPTYPES:
        migratetype = MOVABLE  # HIGHATOMIC pages wait on the MOVABLE list
    pcp = zone.pcp[cpu]
    if cold:
        pcp.lists[migratetype].add_tail(pfn)
    else:
        pcp.lists[migratetype].add_head(pfn)
    pcp.count += 1
    if pcp.count >= pcp.high:
        free_pcppages_bulk(state, zone, pcp.batch, pcp)
        pcp.count -= pcp.batch


def free_pcppages_bulk(state: BuddyState, zone: Zone, count: int, pcp: Pcp) -> None:
    """Return count pages from pcp lists to the buddy.  [4.6: free_pcppages_bulk]

    Round-robin over the lists starting after UNMOVABLE; each empty list skipped makes the next
    list give up one more page; pages leave from the tail (the coldest).
    """
    pm = state.pm
    migratetype = 0
    batch_free = 0
    to_free = count
    while to_free:
        while True:
            batch_free += 1
            migratetype = (migratetype + 1) % MIGRATE_PCPTYPES
            free_list = pcp.lists[migratetype]
            if free_list:
                break
        if batch_free == MIGRATE_PCPTYPES:  # the only non-empty list: free from it alone
            batch_free = to_free
        while True:
            pfn = free_list.pop_last()
            assert pfn is not None
            free_one_page(state, zone, pfn, 0, pm[pfn])
            to_free -= 1
            if not to_free:
                break
            batch_free -= 1
            if not batch_free or not free_list:
                break


def drain_pages_zone(state: BuddyState, cpu: int, zone: Zone) -> None:
    """[4.6: drain_pages_zone]"""
    pcp = zone.pcp[cpu]
    if pcp.count:
        free_pcppages_bulk(state, zone, pcp.count, pcp)
        pcp.count = 0


# ---------------------------------------------------------------------------------------------
# Taking blocks off the free lists
# ---------------------------------------------------------------------------------------------


def expand(state: BuddyState, zone: Zone, pfn: int, low: int, high: int,
           migratetype: int) -> None:
    """Split a 2**high block down to 2**low, freeing the upper halves.  [4.6: expand]"""
    size = 1 << high
    free_area = zone.free_area
    nr_free = zone.nr_free
    while high > low:
        high -= 1
        size >>= 1
        free_area[high][migratetype].add_head(pfn + size)
        nr_free[high] += 1
        set_page_order(state, pfn + size, high)


def rmqueue_smallest(state: BuddyState, zone: Zone, order: int, migratetype: int) -> int | None:
    """The first block of the smallest order >= order on this type's lists.
    [4.6: __rmqueue_smallest]"""
    free_area = zone.free_area
    for current_order in range(order, MAX_ORDER):
        free_list = free_area[current_order][migratetype]
        pfn = free_list.pop_first()
        if pfn is None:
            continue
        state.ps[pfn] &= ~BUDDY_FIELDS  # rmv_page_order, inlined: this runs per pcp page
        zone.nr_free[current_order] -= 1
        if current_order != order:  # expand has nothing to split otherwise
            expand(state, zone, pfn, order, current_order, migratetype)
        state.pm[pfn] = migratetype
        return pfn
    return None


def move_freepages(state: BuddyState, zone: Zone, start: int, end: int, migratetype: int) -> int:
    """Move every free block headed in [start, end] to this type's lists.
    [4.6: move_freepages]

    Complexity: one numpy pass over the range (at most a pageblock) to find the PageBuddy
    pages (page_is_buddy_head for every pfn at once), then O(1) per block; the walk skips each
    moved block as 4.6's loop does.
    """
    heads = np.flatnonzero(state.pstate[start:end + 1] & np.uint8(PS_BUDDY))
    ps = state.ps
    free_area = zone.free_area
    pfn = start
    moved = 0
    for offset in heads.tolist():
        head = start + offset
        if head < pfn:
            continue  # inside the block just moved
        order = ps[head] & PRIVATE_MASK
        del_from_free_area(zone, head, order)
        free_area[order][migratetype].add_head(head)  # list_move
        pfn = head + (1 << order)
        moved += 1 << order
    return moved


def move_freepages_block(state: BuddyState, zone: Zone, pfn: int, migratetype: int) -> int:
    """[4.6: move_freepages_block] the pageblock around pfn, not crossing the zone."""
    start = pfn & ~(PAGEBLOCK_NR_PAGES - 1)
    end = start + PAGEBLOCK_NR_PAGES - 1
    if not zone.contains(start):
        start = pfn
    if not zone.contains(end):
        return 0
    return move_freepages(state, zone, start, end, migratetype)


def can_steal_fallback(order: int, start_mt: int) -> bool:
    """[4.6: can_steal_fallback] order is that of the free block being taken."""
    if order >= PAGEBLOCK_ORDER:
        return True
    return order >= PAGEBLOCK_ORDER // 2 or start_mt in (RECLAIMABLE, UNMOVABLE)


def steal_suitable_fallback(state: BuddyState, zone: Zone, pfn: int, start_type: int) -> None:
    """[4.6: steal_suitable_fallback] claim the pageblock when the block is large or the
    pageblock is at least half free."""
    current_order = state.ps[pfn] & PRIVATE_MASK
    if current_order >= PAGEBLOCK_ORDER:
        for i in range(1 << (current_order - PAGEBLOCK_ORDER)):  # change_pageblock_range
            set_pageblock_migratetype(state, pfn + i * PAGEBLOCK_NR_PAGES, start_type)
        return
    pages = move_freepages_block(state, zone, pfn, start_type)
    if pages >= 1 << (PAGEBLOCK_ORDER - 1):
        set_pageblock_migratetype(state, pfn, start_type)


def find_suitable_fallback(zone: Zone, order: int, migratetype: int) -> tuple[int, bool]:
    """[4.6: find_suitable_fallback, only_stealable=false] -> (fallback type or -1, can_steal)"""
    if zone.nr_free[order] == 0:
        return -1, False
    for fallback_mt in FALLBACKS[migratetype]:
        if zone.free_area[order][fallback_mt]:
            return fallback_mt, can_steal_fallback(order, migratetype)
    return -1, False


def rmqueue_fallback(state: BuddyState, zone: Zone, order: int, start_mt: int) -> int | None:
    """Take the largest block of another type, perhaps stealing its pageblock.
    [4.6: __rmqueue_fallback]"""
    for current_order in range(MAX_ORDER - 1, order - 1, -1):
        fallback_mt, can_steal = find_suitable_fallback(zone, current_order, start_mt)
        if fallback_mt == -1:
            continue
        pfn = zone.free_area[current_order][fallback_mt].first()
        assert pfn is not None
        if can_steal:
            steal_suitable_fallback(state, zone, pfn, start_mt)
        zone.nr_free[current_order] -= 1
        del_from_free_area(zone, pfn, current_order)
        rmv_page_order(state, pfn)
        expand(state, zone, pfn, order, current_order, start_mt)
        state.pm[pfn] = start_mt
        return pfn
    return None


def rmqueue(state: BuddyState, zone: Zone, order: int, migratetype: int) -> int | None:
    """[4.6: __rmqueue]  [Simplified: no CONFIG_CMA, so no CMA fallback]"""
    pfn = rmqueue_smallest(state, zone, order, migratetype)
    if pfn is None:
        pfn = rmqueue_fallback(state, zone, order, migratetype)
    return pfn


def rmqueue_bulk(state: BuddyState, zone: Zone, count: int, free_list: PfnList,
                 migratetype: int, cold: bool) -> int:
    """Refill an (empty) pcp list with up to count order-0 pages.  [4.6: rmqueue_bulk]

    Hot refills keep physical order (each page goes after the previous one); cold refills end
    up reversed, because each page is inserted before the previous one.

    __rmqueue's first step for order 0, taking the head of the order-0 list of this
    migratetype, is inlined: it is what most refilled pages come from, and it needs no
    split.  Otherwise each page is a full __rmqueue, as in 4.6.
    """
    order0 = zone.free_area[0][migratetype]
    ps, pm, nr_free = state.ps, state.pm, zone.nr_free
    taken = 0
    for _ in range(count):
        pfn = order0.pop_first()
        if pfn is not None:  # __rmqueue_smallest at current_order == 0
            ps[pfn] &= ~BUDDY_FIELDS  # rmv_page_order
            nr_free[0] -= 1
            pm[pfn] = migratetype
        else:
            pfn = rmqueue(state, zone, 0, migratetype)
            if pfn is None:
                break
        if cold:
            free_list.add_head(pfn)
        else:
            free_list.add_tail(pfn)
        taken += 1
    zone.nr_free_pages -= taken
    return taken


def buffered_rmqueue(state: BuddyState, zone: Zone, order: int, gfp_mask: int,
                     alloc_flags: int, migratetype: int, cpu: int) -> int | None:
    """Order 0 from this CPU's pcp list, higher orders from the buddy lists.
    [4.6: buffered_rmqueue]"""
    cold = bool(gfp_mask & GFP_COLD)
    if order == 0:
        pcp = zone.pcp[cpu]
        free_list = pcp.lists[migratetype]
        pfn = free_list.pop_last() if cold else free_list.pop_first()
        if pfn is None:  # list_empty: refill, then take as above
            pcp.count += rmqueue_bulk(state, zone, pcp.batch, free_list, migratetype, cold)
            pfn = free_list.pop_last() if cold else free_list.pop_first()
            if pfn is None:
                return None
        pcp.count -= 1
    else:
        if gfp_mask & GFP_NOFAIL and order > 1:
            state.alloc_warnings += 1  # WARN_ON_ONCE: __GFP_NOFAIL above order 1
        found = None
        if alloc_flags & ALLOC_HARDER:
            found = rmqueue_smallest(state, zone, order, HIGHATOMIC)
        if found is None:
            found = rmqueue(state, zone, order, migratetype)
        if found is None:
            return None
        pfn = found
        zone.nr_free_pages -= 1 << order
    zone.alloc_batch -= 1 << order
    if zone.alloc_batch <= 0 and not zone.fair_depleted:
        zone.fair_depleted = True
    return pfn


def prep_new_page(state: BuddyState, pfn: int, order: int, gfp_mask: int) -> None:
    """[4.6: prep_new_page] refcount 1 on the head, compound set-up, page_owner.

    [Simplified: check_new_page cannot fail (free pages are never corrupted here), and page
    contents are not modelled, so __GFP_ZERO has no visible effect in this subsystem.]

    Complexity: O(1), or O(2**order) to mark the tails of a compound page.
    """
    ps = state.ps
    ps[pfn] &= ~PRIVATE_MASK  # set_page_private(page, 0)
    state.rc[pfn] = 1
    if order and gfp_mask & GFP_COMP:  # prep_compound_page
        ps[pfn] |= PS_HEAD  # the compound order is owner_order, set below
        set_range_bits(state, pfn + 1, pfn + (1 << order), PS_TAIL)
    state.oo[pfn] = order  # set_page_owner


def reserve_highatomic_pageblock(state: BuddyState, zone: Zone, pfn: int) -> None:
    """Set the pageblock aside for high-order atomic allocations, up to ~1% of the zone.
    [4.6: reserve_highatomic_pageblock]"""
    max_managed = zone.geometry.managed_pages // 100 + PAGEBLOCK_NR_PAGES
    if zone.nr_reserved_highatomic >= max_managed:
        return
    if get_pageblock_migratetype(state, pfn) != HIGHATOMIC:
        zone.nr_reserved_highatomic += PAGEBLOCK_NR_PAGES
        set_pageblock_migratetype(state, pfn, HIGHATOMIC)
        move_freepages_block(state, zone, pfn, HIGHATOMIC)


# ---------------------------------------------------------------------------------------------
# Allocation policy
# ---------------------------------------------------------------------------------------------


def zone_watermark_ok(zone: Zone, order: int, mark: int, classzone_idx: int,
                      alloc_flags: int) -> bool:
    """The strict watermark test.  [4.6: __zone_watermark_ok]"""
    if not 0 <= order < MAX_ORDER:
        return False  # 4.6's high-order loop below finds no order >= MAX_ORDER
    free_pages = zone.nr_free_pages - ((1 << order) - 1)
    min_mark = mark
    if alloc_flags & ALLOC_HIGH:
        min_mark -= min_mark // 2
    if not alloc_flags & ALLOC_HARDER:
        free_pages -= zone.nr_reserved_highatomic
    else:
        min_mark -= min_mark // 4
    if free_pages <= min_mark + zone.lowmem_reserve[classzone_idx]:
        return False
    if order == 0:
        return True
    for current_order in range(order, MAX_ORDER):
        if not zone.nr_free[current_order]:
            continue
        if alloc_flags & ALLOC_HARDER:
            return True
        lists = zone.free_area[current_order]
        for mt in range(MIGRATE_PCPTYPES):
            if lists[mt]:
                return True
    return False


def reset_alloc_batches(state: BuddyState, preferred_zone: Zone) -> None:
    """[4.6: reset_alloc_batches] refill the fair batches of every zone up to the preferred."""
    for zone in state.zones[: preferred_zone.index + 1]:
        zone.alloc_batch = zone.watermark[WMARK_HIGH] - zone.watermark[WMARK_LOW]
        zone.fair_depleted = False


def get_page_from_freelist(state: BuddyState, gfp_mask: int, order: int, alloc_flags: int,
                           ac: AllocContext, cpu: int) -> int | None:
    """Walk the zonelist; take from the first zone that passes its watermark.
    [4.6: get_page_from_freelist]

    [Simplified: zone_reclaim_mode is 0, cpusets are off and __GFP_WRITE dirty balancing is
    not modelled.]
    """
    while True:
        nr_fair_skipped = 0
        for zone in ac.zonelist:
            if alloc_flags & ALLOC_FAIR and zone.fair_depleted:
                nr_fair_skipped += 1
                continue
            mark = zone.watermark[alloc_flags & ALLOC_WMARK_MASK]
            if (not zone_watermark_ok(zone, order, mark, ac.classzone_idx, alloc_flags)
                    and not alloc_flags & ALLOC_NO_WATERMARKS):
                continue
            pfn = buffered_rmqueue(state, zone, order, gfp_mask, alloc_flags, ac.migratetype, cpu)
            if pfn is not None:
                prep_new_page(state, pfn, order, gfp_mask)
                if order and alloc_flags & ALLOC_HARDER:
                    reserve_highatomic_pageblock(state, zone, pfn)
                return pfn
        if not alloc_flags & ALLOC_FAIR:
            return None
        alloc_flags &= ~ALLOC_FAIR
        if not nr_fair_skipped:
            return None
        reset_alloc_batches(state, ac.preferred_zone)


def warn(state: BuddyState, gfp_mask: int) -> None:
    """[4.6: warn_alloc_failed / WARN_ON_ONCE] a report unless __GFP_NOWARN.

    [Simplified: no rate limiting and no once-only suppression: every report is counted.]
    """
    if not gfp_mask & GFP_NOWARN:
        state.alloc_warnings += 1


def alloc_pages_slowpath(state: BuddyState, gfp_mask: int, order: int, ac: AllocContext,
                         cpu: int) -> int | None:
    """[4.6: __alloc_pages_slowpath]

    [Simplified: nothing is reclaimable and nothing can be compacted, so direct reclaim and
    compaction make no progress; where 4.6 would then invoke the OOM killer or loop, the
    buddy subsystem has no tasks to kill and the allocation fails.]
    """
    if not 0 <= order < MAX_ORDER:
        warn(state, gfp_mask)
        return None
    atomic_and_reclaim = GFP_ATOMIC_BIT | GFP_DIRECT_RECLAIM
    if gfp_mask & atomic_and_reclaim == atomic_and_reclaim:
        state.alloc_warnings += 1  # WARN_ON_ONCE: atomic reserves used by a sleeping caller
        gfp_mask &= ~GFP_ATOMIC_BIT
    alloc_flags = gfp.gfp_to_alloc_flags(gfp_mask)
    pfn = get_page_from_freelist(state, gfp_mask, order, alloc_flags & ~ALLOC_NO_WATERMARKS,
                                 ac, cpu)
    if pfn is not None:
        return pfn
    if alloc_flags & ALLOC_NO_WATERMARKS:
        pfn = get_page_from_freelist(state, gfp_mask, order, ALLOC_NO_WATERMARKS, ac, cpu)
        if pfn is not None:
            return pfn
    if not gfp_mask & GFP_DIRECT_RECLAIM:
        if gfp_mask & GFP_NOFAIL:
            state.alloc_warnings += 1  # WARN_ON_ONCE: __GFP_NOFAIL without direct reclaim
        warn(state, gfp_mask)
        return None
    if gfp_mask & GFP_NORETRY:
        warn(state, gfp_mask)
        return None
    # __alloc_pages_may_oom: one last look at the high watermark.
    pfn = get_page_from_freelist(state, gfp_mask | GFP_HARDWALL, order,
                                 ALLOC_WMARK_HIGH | ALLOC_CPUSET, ac, cpu)
    if pfn is not None:
        return pfn
    if gfp_mask & GFP_NOFAIL:
        state.alloc_warnings += 1  # WARN_ON_ONCE(gfp_mask & __GFP_NOFAIL)
        pfn = get_page_from_freelist(state, gfp_mask, order,
                                     ALLOC_NO_WATERMARKS | ALLOC_CPUSET, ac, cpu)
        if pfn is not None:
            return pfn
    warn(state, gfp_mask)
    return None


def alloc_pages_nodemask(state: BuddyState, gfp_mask: int, order: int, cpu: int) -> int | None:
    """The allocator's entry point.  [4.6: __alloc_pages_nodemask]

    Complexity: O(1) set-up: the zone and migratetype checks, the zonelist and the
    alloc_context are looked up by the mask's zone and mobility bits in tables built at boot
    from the same ``specs.gfp`` functions (the reference model computes them on every call).
    """
    gfp_mask &= GFP_BITS_MASK  # gfp_allowed_mask after boot
    decode = gfp_mask & GFP_DECODE_MASK
    if state.gfp_bad[decode]:  # gfp_zone_bad or gfp_migratetype_bad
        state.alloc_warnings += 1  # VM_BUG_ON / VM_WARN_ON in a debug kernel
        return None
    # gfp_zone, the zonelist of populated zones at or below it, gfpflags_to_migratetype
    ac = state.gfp_context[decode]
    if ac is None:  # no populated zone at or below gfp_zone
        return None
    alloc_flags = ALLOC_WMARK_LOW | ALLOC_CPUSET | ALLOC_FAIR
    pfn = get_page_from_freelist(state, gfp_mask | GFP_HARDWALL, order, alloc_flags, ac, cpu)
    if pfn is None:
        pfn = alloc_pages_slowpath(state, gfp_mask, order, ac, cpu)
    return pfn


def free_pages(state: BuddyState, pfn: int, order: int, cpu: int) -> None:
    """[4.6: __free_pages] drop a reference; the last one frees the block."""
    rc = state.rc
    count = rc[pfn] - 1
    rc[pfn] = count
    if count:
        return
    if order == 0:
        free_hot_cold_page(state, pfn, cold=False, cpu=cpu)
    else:
        free_pages_ok(state, pfn, order)


# ---------------------------------------------------------------------------------------------
# The adapter: argument checks and results, per specs/buddy.md
# ---------------------------------------------------------------------------------------------

EINVAL: Final = -Errno.EINVAL
EFAULT: Final = -Errno.EFAULT


class FastBuddy:
    """The fast page allocator behind the :class:`specs.buddy.PageAllocator` contract."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.capabilities: frozenset[Capability] = ALL_CAPABILITIES
        self.state = boot(config)
        self._nr_cpus = config.nr_cpus
        self._nr_pages = config.nr_pages
        #: zone index -> (what the view was built from, the ZoneView)
        self._view_cache: dict[int, tuple[tuple[object, ...], ZoneView]] = {}

    # -- argument checks shared by the operations ----------------------------------------------

    def _bad_cpu(self, cpu: int) -> bool:
        return not 0 <= cpu < self._nr_cpus

    def _bad_pfn(self, pfn: int) -> bool:
        return not 0 <= pfn < self._nr_pages  # BUDDY-R7: !pfn_valid

    def _head_of(self, pfn: int) -> int:
        """compound_head."""
        head = compound_head(self.state, pfn)
        return pfn if head < 0 else head

    # -- the contract -----------------------------------------------------------------------------

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """See specs/buddy.md alloc_pages."""
        # VALIDATE
        if not 0 <= cpu < self._nr_cpus:  # _bad_cpu, inlined on the hot path
            return None  # BUDDY-R6: no such CPU
        # ALLOCATE
        return alloc_pages_nodemask(self.state, gfp_mask, order, cpu)

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """See specs/buddy.md free_pages."""
        # VALIDATE (_bad_cpu and _bad_pfn inlined on the hot path)
        if not 0 <= cpu < self._nr_cpus:
            return EINVAL  # BUDDY-R7
        if not 0 <= order < MAX_ORDER:
            return EINVAL  # BUDDY-R7
        if not 0 <= pfn < self._nr_pages:
            return EINVAL  # BUDDY-R7
        if pfn & ((1 << order) - 1):
            return EINVAL  # BUDDY-R7: VM_BUG_ON_PAGE(page_idx & ((1 << order) - 1))
        state = self.state
        refcount = state.rc[pfn]
        if refcount == 0:
            return EFAULT  # BUDDY-R8: put_page_testzero on a zero count
        if refcount == 1 and state.oo[pfn] != order:
            return EINVAL  # BUDDY-R9: compound_order / page_owner order mismatch
        # FREE
        free_pages(state, pfn, order, cpu)
        return 0

    def get_page(self, pfn: int) -> int:
        """See specs/buddy.md get_page."""
        if self._bad_pfn(pfn):
            return EINVAL  # BUDDY-R11
        rc = self.state.rc
        head = self._head_of(pfn)
        if rc[head] <= 0:
            return EFAULT  # BUDDY-R11: VM_BUG_ON_PAGE(page_ref_count(page) <= 0)
        rc[head] += 1
        return 0

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """See specs/buddy.md put_page."""
        if self._bad_cpu(cpu) or self._bad_pfn(pfn):
            return EINVAL  # BUDDY-R12
        state = self.state
        rc = state.rc
        head_pfn = self._head_of(pfn)
        refcount = rc[head_pfn]
        if refcount <= 0:
            return EFAULT  # BUDDY-R12
        is_head = state.ps[head_pfn] & PS_HEAD
        if refcount == 1 and not is_head and state.oo[head_pfn]:
            return EINVAL  # BUDDY-R12: would free one page of a larger non-compound block
        rc[head_pfn] = refcount - 1
        if refcount - 1:
            return 0
        if is_head:
            free_pages_ok(state, head_pfn, state.oo[head_pfn])  # free_compound_page
        else:
            free_hot_cold_page(state, head_pfn, cold=False, cpu=cpu)
        return 0

    def split_page(self, pfn: int, order: int) -> int:
        """See specs/buddy.md split_page.  [4.6: split_page]

        Complexity: O(2**order), one numpy slice assignment for large blocks.
        """
        if self._bad_pfn(pfn) or not 0 <= order < MAX_ORDER:
            return EINVAL  # BUDDY-R13
        state = self.state
        if state.ps[pfn] & (PS_HEAD | PS_TAIL):
            return EINVAL  # BUDDY-R13: VM_BUG_ON_PAGE(PageCompound(page))
        if state.rc[pfn] == 0:
            return EFAULT  # BUDDY-R13: VM_BUG_ON_PAGE(!page_count(page))
        if state.oo[pfn] != order:
            return EINVAL  # BUDDY-R13: page_owner records another order
        state.oo[pfn] = 0
        end = pfn + (1 << order)
        if end - pfn <= SMALL_RANGE:
            rc = state.rc
            for sub in range(pfn + 1, end):
                rc[sub] = 1  # set_page_refcounted
        else:
            state.refcount[pfn + 1:end] = 1
        return 0

    def drain_pages(self, cpu: int) -> int:
        """See specs/buddy.md drain_pages.  [4.6: drain_pages]"""
        if self._bad_cpu(cpu):
            return EINVAL  # BUDDY-R14
        for zone in self.state.zones:
            if zone.populated:
                drain_pages_zone(self.state, cpu, zone)
        return 0

    def view(self) -> BuddyView:
        """Snapshot of zones, free lists and pcp lists.

        Views are immutable, so a zone whose lists (its ListStore version) and counters have
        not changed since the last view is handed out again instead of being rebuilt: a
        state machine takes a view after every step, and most steps touch one zone.
        Complexity: O(listed pfns of the zones that changed).
        """
        state = self.state
        cache = self._view_cache
        zones = []
        for zone in state.zones:
            key = _zone_key(zone)
            cached = cache.get(zone.index)
            if cached is None or cached[0] != key:
                cached = (key, _zone_view(zone))
                cache[zone.index] = cached
            zones.append(cached[1])
        return BuddyView(
            nr_pages=state.config.nr_pages, nr_cpus=state.config.nr_cpus,
            alloc_warnings=state.alloc_warnings, zones=tuple(zones))

    def page_state(self) -> PageState:
        """Snapshot of every struct page: a compact copy whose fields derive on read
        (:mod:`fastmodel.buddy_pages`).  Complexity: O(pages) numpy, about 2 bytes a page."""
        state = self.state
        return buddy_pages.take(state.refcount, state.pstate, state.owner_order,
                                state.pageblock_migratetype)

    def page(self, pfn: int) -> PageInfo | None:
        """One struct page."""
        if self._bad_pfn(pfn):
            return None
        state = self.state
        pstate = state.ps[pfn]
        return PageInfo(
            refcount=state.rc[pfn],
            mapcount=PAGE_BUDDY_MAPCOUNT_VALUE if pstate & PS_BUDDY else -1,
            private=pstate & PRIVATE_MASK,
            flags=1 << PG_head if pstate & PS_HEAD else 0,
            compound_head=compound_head(state, pfn))


def _zone_key(zone: Zone) -> tuple[object, ...]:
    """Everything a ZoneView is built from that can change."""
    return (zone.links.version, tuple(pcp.count for pcp in zone.pcp), tuple(zone.nr_free),
            zone.nr_free_pages, zone.nr_reserved_highatomic, zone.alloc_batch,
            zone.fair_depleted)


def _zone_view(zone: Zone) -> ZoneView:
    geo = zone.geometry
    return ZoneView(
        index=geo.index, name=geo.name, start_pfn=geo.start_pfn, end_pfn=geo.end_pfn,
        managed_pages=geo.managed_pages, watermark=geo.watermark,
        lowmem_reserve=geo.lowmem_reserve, nr_free_pages=zone.nr_free_pages,
        nr_free=tuple(zone.nr_free),
        free_lists=tuple(tuple(lst.to_tuple() for lst in lists) for lists in zone.free_area),
        pcp=tuple(PcpView(count=pcp.count, high=pcp.high, batch=pcp.batch,
                          lists=tuple(lst.to_tuple() for lst in pcp.lists)) for pcp in zone.pcp),
        nr_reserved_highatomic=zone.nr_reserved_highatomic,
        alloc_batch=zone.alloc_batch, fair_depleted=zone.fair_depleted)
