"""The 4.6 buddy allocator: struct page, zones, free areas, per-cpu lists.  [4.6: mm/page_alloc.c]

State is plain attrs data (:class:`Page`, :class:`Zone`, :class:`BuddyState`); the allocator is
the module-level functions below, each named after the 4.6 function it models (the kernel's
``__`` prefixes become ``_`` or disappear, since locking does not exist here).
:class:`RefBuddy` is the thin adapter that validates arguments, turns misuse into the result
the spec assigns, and satisfies :class:`specs.buddy.PageAllocator`.

Complexity: every operation is O(MAX_ORDER) list work plus, when stealing, one pageblock scan
(512 pages); nothing scans all of memory except ``boot``, ``view`` and ``page_state``.
"""

from __future__ import annotations

from array import array
from typing import Final

import attrs

from refmodel.pfnlist import PfnList
from specs import gfp
from specs.buddy import (
    ALL_CAPABILITIES,
    PAGE_BUDDY_MAPCOUNT_VALUE,
    BuddyView,
    PageInfo,
    PageState,
    PcpView,
    PG_head,
    ZoneView,
)
from specs.errno import Errno
from specs.gfp import MIGRATE_PCPTYPES, MIGRATE_TYPES, GfpFlag, MigrateType
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


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@attrs.define(slots=True)
class Page:
    """struct page, the fields the buddy allocator reads and writes.  [4.6: mm_types.h]"""

    refcount: int = 0  # _count
    mapcount: int = -1  # _mapcount; PAGE_BUDDY_MAPCOUNT_VALUE on a free block's head
    private: int = 0  # page_private: the order of a free block's head
    flags: int = 0  # PG_* bits
    compound_head: int = -1  # tail pages: pfn of the head (4.6 stores head|1)
    compound_order: int = 0  # head of a compound page (4.6 keeps it in the first tail)
    #: the order this page was handed out at, as CONFIG_PAGE_OWNER records it
    #: [4.6: mm/page_owner.c set_page_owner]; lets a wrong-order free be refused.
    owner_order: int = 0
    #: set_pcppage_migratetype (4.6 reuses page->index)
    pcp_migratetype: int = 0


@attrs.define(slots=True)
class Pcp:
    """struct per_cpu_pages for one CPU and zone."""

    high: int
    batch: int
    count: int = 0
    lists: list[PfnList] = attrs.field(factory=lambda: [PfnList() for _ in range(MIGRATE_PCPTYPES)])


@attrs.define(slots=True)
class Zone:
    """struct zone: the geometry it booted with plus the allocator's mutable state."""

    geometry: ZoneGeometry
    pcp: list[Pcp]
    free_area: list[list[PfnList]] = attrs.field(
        factory=lambda: [[PfnList() for _ in range(MIGRATE_TYPES)] for _ in range(MAX_ORDER)])
    nr_free: list[int] = attrs.field(factory=lambda: [0] * MAX_ORDER)
    nr_free_pages: int = 0  # vm_stat[NR_FREE_PAGES]
    nr_reserved_highatomic: int = 0
    alloc_batch: int = 0  # vm_stat[NR_ALLOC_BATCH]
    fair_depleted: bool = False  # ZONE_FAIR_DEPLETED

    @property
    def index(self) -> int:
        """zone_idx."""
        return self.geometry.index

    @property
    def populated(self) -> bool:
        """populated_zone."""
        return self.geometry.populated

    def watermark(self, which: int) -> int:
        """zone->watermark[which]."""
        return self.geometry.watermark[which]


@attrs.define(slots=True)
class BuddyState:
    """The whole page allocator: mem_map, zones and pageblock bits."""

    config: MachineConfig
    zones: list[Zone]
    mem_map: list[Page]
    pageblock_migratetype: list[int]
    alloc_warnings: int = 0


@attrs.frozen
class AllocContext:
    """struct alloc_context: the zonelist and the zone the request is accounted to."""

    zonelist: tuple[Zone, ...]
    preferred_zone: Zone
    classzone_idx: int
    migratetype: int


# ---------------------------------------------------------------------------------------------
# Boot
# ---------------------------------------------------------------------------------------------


def boot(config: MachineConfig) -> BuddyState:
    """Build mem_map and the zones, then free all memory into the buddy lists.

    [4.6: memmap_init_zone marks every pageblock MIGRATE_MOVABLE; free_all_bootmem frees
    memory in the largest aligned blocks that fit.]
    [Simplified: each zone's span is freed separately, lowest pfn first, straight into
    __free_one_page; 4.6 frees order-0 boot pages through the boot CPU's pcp list.]
    """
    zones = [
        Zone(geometry=geo,
             pcp=[Pcp(high=geo.pcp_high, batch=geo.pcp_batch) for _ in range(config.nr_cpus)],
             alloc_batch=geo.watermark[gfp.WMARK_HIGH] - geo.watermark[gfp.WMARK_LOW])
        for geo in derive_zones(config)
    ]
    nr_pageblocks = -(-config.nr_pages // PAGEBLOCK_NR_PAGES)
    state = BuddyState(config=config, zones=zones,
                       mem_map=[Page() for _ in range(config.nr_pages)],
                       pageblock_migratetype=[MOVABLE] * nr_pageblocks)
    for zone in zones:
        pfn, end = zone.geometry.start_pfn, zone.geometry.end_pfn
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
    """The zone spanning pfn, or None outside memory."""
    for zone in state.zones:
        if zone.geometry.contains(pfn):
            return zone
    return None


def get_pageblock_migratetype(state: BuddyState, pfn: int) -> int:
    """[4.6: get_pfnblock_migratetype]"""
    return state.pageblock_migratetype[pfn >> PAGEBLOCK_ORDER]


def set_pageblock_migratetype(state: BuddyState, pfn: int, migratetype: int) -> None:
    """[4.6: set_pageblock_migratetype]"""
    state.pageblock_migratetype[pfn >> PAGEBLOCK_ORDER] = migratetype


def page_is_buddy_head(state: BuddyState, pfn: int) -> bool:
    """PageBuddy: the page heads a free block."""
    return state.mem_map[pfn].mapcount == PAGE_BUDDY_MAPCOUNT_VALUE


def set_page_order(state: BuddyState, pfn: int, order: int) -> None:
    """[4.6: set_page_order] mark pfn as the head of a free block of this order."""
    page = state.mem_map[pfn]
    page.private = order
    page.mapcount = PAGE_BUDDY_MAPCOUNT_VALUE


def rmv_page_order(state: BuddyState, pfn: int) -> None:
    """[4.6: rmv_page_order]"""
    page = state.mem_map[pfn]
    page.mapcount = -1
    page.private = 0


def page_is_buddy(state: BuddyState, pfn: int, buddy: int, order: int) -> bool:
    """[4.6: page_is_buddy] buddy heads a free block of this order in pfn's zone."""
    if not 0 <= buddy < state.config.nr_pages:
        return False
    page = state.mem_map[buddy]
    if page.mapcount != PAGE_BUDDY_MAPCOUNT_VALUE or page.private != order:
        return False
    return page_zone(state, pfn) is page_zone(state, buddy)


def del_from_free_area(zone: Zone, pfn: int, order: int) -> None:
    """list_del(&page->lru) for a free block head, whichever migratetype list holds it."""
    for free_list in zone.free_area[order]:
        if pfn in free_list:
            free_list.remove(pfn)
            return
    raise AssertionError(f"pfn {pfn} is not on any order-{order} free list")


# ---------------------------------------------------------------------------------------------
# Freeing
# ---------------------------------------------------------------------------------------------


def free_one_page(state: BuddyState, zone: Zone, pfn: int, order: int, migratetype: int) -> None:
    """Put a block back and merge it with free buddies.  [4.6: __free_one_page]

    [Simplified: no pageblock isolation, so the pageblock_order merge limit is always lifted
    and merging runs to MAX_ORDER-1.]
    """
    zone.nr_free_pages += 1 << order  # __mod_zone_freepage_state
    buddy = -1
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)  # __find_buddy_index
        if not page_is_buddy(state, pfn, buddy, order):
            break
        del_from_free_area(zone, buddy, order)
        zone.nr_free[order] -= 1
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
            zone.nr_free[order] += 1
            return
    free_list.add_head(pfn)
    zone.nr_free[order] += 1


def free_pages_prepare(state: BuddyState, pfn: int, order: int) -> None:
    """[4.6: free_pages_prepare] undo compound and owner state before the pages go back.

    [Simplified: free_pages_check cannot fail here, because the adapter refuses such frees
    before anything changes.]
    """
    head = state.mem_map[pfn]
    head.flags &= ~(1 << PG_head)
    head.compound_order = 0
    head.owner_order = 0  # reset_page_owner
    for tail in range(pfn + 1, pfn + (1 << order)):
        state.mem_map[tail].compound_head = -1  # free_tail_pages_check: clear_compound_head


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
    state.mem_map[pfn].pcp_migratetype = migratetype
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
            pfn = free_list.last()
            assert pfn is not None
            free_list.remove(pfn)
            free_one_page(state, zone, pfn, 0, state.mem_map[pfn].pcp_migratetype)
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


def expand(state: BuddyState, zone: Zone, pfn: int, low: int, high: int, migratetype: int) -> None:
    """Split a 2**high block down to 2**low, freeing the upper halves.  [4.6: expand]"""
    size = 1 << high
    while high > low:
        high -= 1
        size >>= 1
        zone.free_area[high][migratetype].add_head(pfn + size)
        zone.nr_free[high] += 1
        set_page_order(state, pfn + size, high)


def rmqueue_smallest(state: BuddyState, zone: Zone, order: int, migratetype: int) -> int | None:
    """The first block of the smallest order >= order on this type's lists.
    [4.6: __rmqueue_smallest]"""
    for current_order in range(order, MAX_ORDER):
        free_list = zone.free_area[current_order][migratetype]
        pfn = free_list.first()
        if pfn is None:
            continue
        free_list.remove(pfn)
        rmv_page_order(state, pfn)
        zone.nr_free[current_order] -= 1
        expand(state, zone, pfn, order, current_order, migratetype)
        state.mem_map[pfn].pcp_migratetype = migratetype
        return pfn
    return None


def move_freepages(state: BuddyState, zone: Zone, start: int, end: int, migratetype: int) -> int:
    """Move every free block headed in [start, end] to this type's lists.
    [4.6: move_freepages]"""
    pfn = start
    moved = 0
    while pfn <= end:
        if not page_is_buddy_head(state, pfn):
            pfn += 1
            continue
        order = state.mem_map[pfn].private
        del_from_free_area(zone, pfn, order)
        zone.free_area[order][migratetype].add_head(pfn)  # list_move
        pfn += 1 << order
        moved += 1 << order
    return moved


def move_freepages_block(state: BuddyState, zone: Zone, pfn: int, migratetype: int) -> int:
    """[4.6: move_freepages_block] the pageblock around pfn, not crossing the zone."""
    start = pfn & ~(PAGEBLOCK_NR_PAGES - 1)
    end = start + PAGEBLOCK_NR_PAGES - 1
    if not zone.geometry.contains(start):
        start = pfn
    if not zone.geometry.contains(end):
        return 0
    return move_freepages(state, zone, start, end, migratetype)


def can_steal_fallback(order: int, start_mt: int) -> bool:
    """[4.6: can_steal_fallback] order is that of the free block being taken."""
    if order >= PAGEBLOCK_ORDER:
        return True
    return (order >= PAGEBLOCK_ORDER // 2
            or start_mt in (MigrateType.MIGRATE_RECLAIMABLE, MigrateType.MIGRATE_UNMOVABLE))


def steal_suitable_fallback(state: BuddyState, zone: Zone, pfn: int, start_type: int) -> None:
    """[4.6: steal_suitable_fallback] claim the pageblock when the block is large or the
    pageblock is at least half free."""
    current_order = state.mem_map[pfn].private
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
    for fallback_mt in gfp.FALLBACKS[migratetype]:
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
        state.mem_map[pfn].pcp_migratetype = start_mt
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
    """
    taken = 0
    for _ in range(count):
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
    cold = bool(gfp_mask & GfpFlag.COLD)
    if order == 0:
        pcp = zone.pcp[cpu]
        free_list = pcp.lists[migratetype]
        if not free_list:
            pcp.count += rmqueue_bulk(state, zone, pcp.batch, free_list, migratetype, cold)
            if not free_list:
                return None
        pfn = free_list.last() if cold else free_list.first()
        assert pfn is not None
        free_list.remove(pfn)
        pcp.count -= 1
    else:
        if gfp_mask & GfpFlag.NOFAIL and order > 1:
            state.alloc_warnings += 1  # WARN_ON_ONCE: __GFP_NOFAIL above order 1
        found = None
        if alloc_flags & gfp.ALLOC_HARDER:
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
    """
    head = state.mem_map[pfn]
    head.private = 0
    head.refcount = 1
    if order and gfp_mask & GfpFlag.COMP:  # prep_compound_page
        head.flags |= 1 << PG_head
        head.compound_order = order
        for tail in range(pfn + 1, pfn + (1 << order)):
            state.mem_map[tail].compound_head = pfn
    head.owner_order = order  # set_page_owner


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
    if alloc_flags & gfp.ALLOC_HIGH:
        min_mark -= min_mark // 2
    if not alloc_flags & gfp.ALLOC_HARDER:
        free_pages -= zone.nr_reserved_highatomic
    else:
        min_mark -= min_mark // 4
    if free_pages <= min_mark + zone.geometry.lowmem_reserve[classzone_idx]:
        return False
    if order == 0:
        return True
    for current_order in range(order, MAX_ORDER):
        if not zone.nr_free[current_order]:
            continue
        if alloc_flags & gfp.ALLOC_HARDER:
            return True
        if any(zone.free_area[current_order][mt] for mt in range(MIGRATE_PCPTYPES)):
            return True
    return False


def reset_alloc_batches(state: BuddyState, preferred_zone: Zone) -> None:
    """[4.6: reset_alloc_batches] refill the fair batches of every zone up to the preferred."""
    for zone in state.zones[: preferred_zone.index + 1]:
        zone.alloc_batch = zone.watermark(gfp.WMARK_HIGH) - zone.watermark(gfp.WMARK_LOW)
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
            if alloc_flags & gfp.ALLOC_FAIR and zone.fair_depleted:
                nr_fair_skipped += 1
                continue
            mark = zone.watermark(alloc_flags & gfp.ALLOC_WMARK_MASK)
            if (not zone_watermark_ok(zone, order, mark, ac.classzone_idx, alloc_flags)
                    and not alloc_flags & gfp.ALLOC_NO_WATERMARKS):
                continue
            pfn = buffered_rmqueue(state, zone, order, gfp_mask, alloc_flags, ac.migratetype, cpu)
            if pfn is not None:
                prep_new_page(state, pfn, order, gfp_mask)
                if order and alloc_flags & gfp.ALLOC_HARDER:
                    reserve_highatomic_pageblock(state, zone, pfn)
                return pfn
        if not alloc_flags & gfp.ALLOC_FAIR:
            return None
        alloc_flags &= ~gfp.ALLOC_FAIR
        if not nr_fair_skipped:
            return None
        reset_alloc_batches(state, ac.preferred_zone)


def warn(state: BuddyState, gfp_mask: int) -> None:
    """[4.6: warn_alloc_failed / WARN_ON_ONCE] a report unless __GFP_NOWARN.

    [Simplified: no rate limiting and no once-only suppression: every report is counted.]
    """
    if not gfp_mask & GfpFlag.NOWARN:
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
    atomic_and_reclaim = GfpFlag.ATOMIC | GfpFlag.DIRECT_RECLAIM
    if gfp_mask & atomic_and_reclaim == atomic_and_reclaim:
        state.alloc_warnings += 1  # WARN_ON_ONCE: atomic reserves used by a sleeping caller
        gfp_mask &= ~GfpFlag.ATOMIC
    alloc_flags = gfp.gfp_to_alloc_flags(gfp_mask)
    pfn = get_page_from_freelist(state, gfp_mask, order, alloc_flags & ~gfp.ALLOC_NO_WATERMARKS,
                                 ac, cpu)
    if pfn is not None:
        return pfn
    if alloc_flags & gfp.ALLOC_NO_WATERMARKS:
        pfn = get_page_from_freelist(state, gfp_mask, order, gfp.ALLOC_NO_WATERMARKS, ac, cpu)
        if pfn is not None:
            return pfn
    if not gfp_mask & GfpFlag.DIRECT_RECLAIM:
        if gfp_mask & GfpFlag.NOFAIL:
            state.alloc_warnings += 1  # WARN_ON_ONCE: __GFP_NOFAIL without direct reclaim
        warn(state, gfp_mask)
        return None
    if gfp_mask & GfpFlag.NORETRY:
        warn(state, gfp_mask)
        return None
    # __alloc_pages_may_oom: one last look at the high watermark.
    pfn = get_page_from_freelist(state, gfp_mask | GfpFlag.HARDWALL, order,
                                 gfp.ALLOC_WMARK_HIGH | gfp.ALLOC_CPUSET, ac, cpu)
    if pfn is not None:
        return pfn
    if gfp_mask & GfpFlag.NOFAIL:
        state.alloc_warnings += 1  # WARN_ON_ONCE(gfp_mask & __GFP_NOFAIL)
        pfn = get_page_from_freelist(state, gfp_mask, order,
                                     gfp.ALLOC_NO_WATERMARKS | gfp.ALLOC_CPUSET, ac, cpu)
        if pfn is not None:
            return pfn
    warn(state, gfp_mask)
    return None


def alloc_pages_nodemask(state: BuddyState, gfp_mask: int, order: int, cpu: int) -> int | None:
    """The allocator's entry point.  [4.6: __alloc_pages_nodemask]"""
    gfp_mask &= gfp.__GFP_BITS_MASK  # gfp_allowed_mask after boot
    if gfp.gfp_zone_bad(gfp_mask) or gfp.gfp_migratetype_bad(gfp_mask):
        state.alloc_warnings += 1  # VM_BUG_ON / VM_WARN_ON in a debug kernel
        return None
    high_zoneidx = gfp.gfp_zone(gfp_mask)
    zonelist = tuple(zone for zone in reversed(state.zones)
                     if zone.populated and zone.index <= high_zoneidx)
    if not zonelist:
        return None
    ac = AllocContext(zonelist=zonelist, preferred_zone=zonelist[0],
                      classzone_idx=zonelist[0].index,
                      migratetype=gfp.gfpflags_to_migratetype(gfp_mask))
    alloc_flags = gfp.ALLOC_WMARK_LOW | gfp.ALLOC_CPUSET | gfp.ALLOC_FAIR
    pfn = get_page_from_freelist(state, gfp_mask | GfpFlag.HARDWALL, order, alloc_flags, ac, cpu)
    if pfn is None:
        pfn = alloc_pages_slowpath(state, gfp_mask, order, ac, cpu)
    return pfn


def free_pages(state: BuddyState, pfn: int, order: int, cpu: int) -> None:
    """[4.6: __free_pages] drop a reference; the last one frees the block."""
    page = state.mem_map[pfn]
    page.refcount -= 1
    if page.refcount:
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


class RefBuddy:
    """The reference page allocator behind the :class:`specs.buddy.PageAllocator` contract."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.capabilities = ALL_CAPABILITIES
        self.state = boot(config)
        self._view_cache: dict[int, tuple[tuple[object, ...], ZoneView]] = {}

    # -- argument checks shared by the operations ----------------------------------------------

    def _bad_cpu(self, cpu: int) -> bool:
        return not 0 <= cpu < self.config.nr_cpus

    def _bad_pfn(self, pfn: int) -> bool:
        return not 0 <= pfn < self.config.nr_pages  # BUDDY-R7: !pfn_valid

    def _head_of(self, pfn: int) -> int:
        """compound_head."""
        head = self.state.mem_map[pfn].compound_head
        return pfn if head < 0 else head

    # -- the contract -----------------------------------------------------------------------------

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """See specs/buddy.md alloc_pages."""
        # VALIDATE
        if self._bad_cpu(cpu):
            return None  # BUDDY-R6: no such CPU
        # ALLOCATE
        return alloc_pages_nodemask(self.state, gfp_mask, order, cpu)

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """See specs/buddy.md free_pages."""
        # VALIDATE
        if self._bad_cpu(cpu):
            return EINVAL  # BUDDY-R7
        if not 0 <= order < MAX_ORDER:
            return EINVAL  # BUDDY-R7
        if self._bad_pfn(pfn):
            return EINVAL  # BUDDY-R7
        if pfn & ((1 << order) - 1):
            return EINVAL  # BUDDY-R7: VM_BUG_ON_PAGE(page_idx & ((1 << order) - 1))
        page = self.state.mem_map[pfn]
        if page.refcount == 0:
            return EFAULT  # BUDDY-R8: put_page_testzero on a zero count
        if page.refcount == 1 and page.owner_order != order:
            return EINVAL  # BUDDY-R9: compound_order / page_owner order mismatch
        # FREE
        free_pages(self.state, pfn, order, cpu)
        return 0

    def get_page(self, pfn: int) -> int:
        """See specs/buddy.md get_page."""
        if self._bad_pfn(pfn):
            return EINVAL  # BUDDY-R11
        head = self.state.mem_map[self._head_of(pfn)]
        if head.refcount <= 0:
            return EFAULT  # BUDDY-R11: VM_BUG_ON_PAGE(page_ref_count(page) <= 0)
        head.refcount += 1
        return 0

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """See specs/buddy.md put_page."""
        if self._bad_cpu(cpu) or self._bad_pfn(pfn):
            return EINVAL  # BUDDY-R12
        head_pfn = self._head_of(pfn)
        head = self.state.mem_map[head_pfn]
        if head.refcount <= 0:
            return EFAULT  # BUDDY-R12
        if head.refcount == 1 and not head.flags & (1 << PG_head) and head.owner_order:
            return EINVAL  # BUDDY-R12: would free one page of a larger non-compound block
        head.refcount -= 1
        if head.refcount:
            return 0
        if head.flags & (1 << PG_head):
            free_pages_ok(self.state, head_pfn, head.compound_order)  # free_compound_page
        else:
            free_hot_cold_page(self.state, head_pfn, cold=False, cpu=cpu)
        return 0

    def split_page(self, pfn: int, order: int) -> int:
        """See specs/buddy.md split_page.  [4.6: split_page]"""
        if self._bad_pfn(pfn) or not 0 <= order < MAX_ORDER:
            return EINVAL  # BUDDY-R13
        page = self.state.mem_map[pfn]
        if page.flags & (1 << PG_head) or page.compound_head >= 0:
            return EINVAL  # BUDDY-R13: VM_BUG_ON_PAGE(PageCompound(page))
        if page.refcount == 0:
            return EFAULT  # BUDDY-R13: VM_BUG_ON_PAGE(!page_count(page))
        if page.owner_order != order:
            return EINVAL  # BUDDY-R13: page_owner records another order
        page.owner_order = 0
        for sub in range(pfn + 1, pfn + (1 << order)):
            self.state.mem_map[sub].refcount = 1  # set_page_refcounted
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

        Views are immutable, so a zone whose lists and counters have not changed since the
        last view is handed out again instead of being rebuilt (a state machine takes a view
        after every step, and most steps touch one zone).
        """
        state = self.state
        zones = []
        for zone in state.zones:
            key = _zone_key(zone)
            cached = self._view_cache.get(zone.index)
            if cached is None or cached[0] != key:
                cached = (key, _zone_view(zone))
                self._view_cache[zone.index] = cached
            zones.append(cached[1])
        return BuddyView(
            nr_pages=state.config.nr_pages, nr_cpus=state.config.nr_cpus,
            alloc_warnings=state.alloc_warnings, zones=tuple(zones))

    def page_state(self) -> PageState:
        """Snapshot of every struct page."""
        mem_map = self.state.mem_map
        # array.array rather than list: same values, 8x smaller, and numpy reads it in place.
        return PageState(
            refcount=array("l", [page.refcount for page in mem_map]),
            mapcount=array("l", [page.mapcount for page in mem_map]),
            private=array("l", [page.private for page in mem_map]),
            flags=array("l", [page.flags for page in mem_map]),
            compound_head=array("l", [page.compound_head for page in mem_map]),
            pageblock_migratetype=array("l", self.state.pageblock_migratetype))

    def page(self, pfn: int) -> PageInfo | None:
        """One struct page."""
        if self._bad_pfn(pfn):
            return None
        page = self.state.mem_map[pfn]
        return PageInfo(refcount=page.refcount, mapcount=page.mapcount, private=page.private,
                        flags=page.flags, compound_head=page.compound_head)


def _zone_key(zone: Zone) -> tuple[object, ...]:
    """Everything a ZoneView is built from that can change.  The lists enter as the sum of
    their versions: versions only ever grow, so the sum changes whenever any list does."""
    return (sum(lst.version for lists in zone.free_area for lst in lists),
            sum(lst.version for pcp in zone.pcp for lst in pcp.lists),
            tuple(pcp.count for pcp in zone.pcp), tuple(zone.nr_free), zone.nr_free_pages,
            zone.nr_reserved_highatomic, zone.alloc_batch, zone.fair_depleted)


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
