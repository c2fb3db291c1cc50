"""Deliberately broken page allocators: at least one per buddy check ID.

Each mutant is a small subclass of :class:`refmodel.buddy.RefBuddy` with one bug, a docstring
saying what is broken, and ``target``: the check that must catch it (``tests/test_mutants.py``
runs every mutant in contract mode with only that check enabled).  The bugs are shaped like
real kernel bugs: a forgotten ``list_del``, an off-by-one in ``expand``, a missing zone test
in ``page_is_buddy``, a counter not updated.

Bugs in the adapter (argument checks, refcounts) are plain method overrides.  Bugs inside the
algorithm are broken copies of one ``refmodel.buddy`` function, swapped in by
:class:`MutantBuddy` for the duration of every contract operation (boot is left alone, so
every mutant starts from 4.6's boot layout); the changed line carries ``# MUTATION:``.
``refmodel`` itself is never edited.  Every mutant is deterministic.

Contract mode judges only the MUSTs, so a mutant may also use a freedom the spec's MAY section
grants (its own zone, reserve or pcp policy) when that makes its one bug show within a short
test; such helpers say "not a mutation" and the class says "Freedom, not bug".  A ``# GUARD:``
line keeps a broken counter from hanging the run after the bug has been reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import attrs

from refmodel import buddy as rb
from refmodel.buddy import EFAULT, EINVAL, RefBuddy
from specs import gfp
from specs.buddy import PAGE_BUDDY_MAPCOUNT_VALUE, PG_head
from specs.gfp import GfpFlag
from specs.machine import (
    MAX_ORDER,
    PAGEBLOCK_NR_PAGES,
    MachineConfig,
    effective_min_free_kbytes,
    per_zone_wmarks,
)
from tests.mutants import swapped

#: gfp.__GFP_BITS_MASK, spelled so that class bodies can use it (no name mangling).
GFP_BITS_MASK: Final = gfp.__GFP_BITS_MASK

# ---------------------------------------------------------------------------------------------
# The patching base
# ---------------------------------------------------------------------------------------------


class MutantBuddy(RefBuddy):
    """RefBuddy with some ``refmodel.buddy`` functions replaced by broken copies while each
    contract operation runs (the originals are restored afterwards, even on an exception)."""

    #: the check ID that must catch this mutant
    target: ClassVar[str] = ""
    #: refmodel.buddy global name -> the broken copy used instead
    patches: ClassVar[Mapping[str, Callable[..., Any]]] = {}

    def _patched(self) -> contextlib.AbstractContextManager[None]:
        return swapped({(rb, name): broken for name, broken in self.patches.items()})

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """RefBuddy.alloc_pages with the patches in place."""
        with self._patched():
            return super().alloc_pages(gfp_mask, order, cpu)

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """RefBuddy.free_pages with the patches in place."""
        with self._patched():
            return super().free_pages(pfn, order, cpu)

    def get_page(self, pfn: int) -> int:
        """RefBuddy.get_page with the patches in place."""
        with self._patched():
            return super().get_page(pfn)

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """RefBuddy.put_page with the patches in place."""
        with self._patched():
            return super().put_page(pfn, cpu)

    def split_page(self, pfn: int, order: int) -> int:
        """RefBuddy.split_page with the patches in place."""
        with self._patched():
            return super().split_page(pfn, order)

    def drain_pages(self, cpu: int) -> int:
        """RefBuddy.drain_pages with the patches in place."""
        with self._patched():
            return super().drain_pages(cpu)


def _valid_free_args(impl: RefBuddy, pfn: int, order: int, cpu: int) -> bool:
    """The adapter's BUDDY-R6/R7 argument checks pass."""
    return (not impl._bad_cpu(cpu) and 0 <= order < MAX_ORDER and not impl._bad_pfn(pfn)
            and not pfn & ((1 << order) - 1))


# ---------------------------------------------------------------------------------------------
# Broken copies of refmodel.buddy functions
# ---------------------------------------------------------------------------------------------


def _free_pages_ok_loses_upper_half(state: rb.BuddyState, pfn: int, order: int) -> None:
    """__free_pages_ok that gives the block back one order short."""
    rb.free_pages_prepare(state, pfn, order)
    zone = rb.page_zone(state, pfn)
    assert zone is not None
    # MUTATION: order - 1: the upper half of the block never reaches the free lists
    rb.free_one_page(state, zone, pfn, order - 1, rb.get_pageblock_migratetype(state, pfn))


def _rmqueue_smallest_no_list_del(state: rb.BuddyState, zone: rb.Zone, order: int,
                                  migratetype: int) -> int | None:
    """__rmqueue_smallest that forgets list_del: the block handed out stays on its list."""
    for current_order in range(order, MAX_ORDER):
        free_list = zone.free_area[current_order][migratetype]
        pfn = free_list.first()
        if pfn is None:
            continue
        # MUTATION: free_list.remove(pfn) (list_del(&page->lru)) is missing
        rb.rmv_page_order(state, pfn)
        zone.nr_free[current_order] -= 1
        rb.expand(state, zone, pfn, order, current_order, migratetype)
        state.mem_map[pfn].pcp_migratetype = migratetype
        return pfn
    return None


def _expand_order_off_by_one(state: rb.BuddyState, zone: rb.Zone, pfn: int, low: int,
                             high: int, migratetype: int) -> None:
    """expand() that lists each upper half at the order of the block it was split from."""
    size = 1 << high
    while high > low:
        size >>= 1
        zone.free_area[high][migratetype].add_head(pfn + size)
        zone.nr_free[high] += 1
        rb.set_page_order(state, pfn + size, high)
        high -= 1  # MUTATION: `high--` moved below its uses: every half is one order too big


def _free_one_page_across_zones(state: rb.BuddyState, zone: rb.Zone, pfn: int, order: int,
                                migratetype: int) -> None:
    """__free_one_page whose buddy test has lost page_zone_id(page) == page_zone_id(buddy)."""
    zone.nr_free_pages += 1 << order
    buddy = -1
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)
        page = state.mem_map[buddy] if 0 <= buddy < state.config.nr_pages else None
        # MUTATION: PageBuddy and order only; a free buddy in the neighbouring zone qualifies
        if page is None or (page.mapcount, page.private) != (PAGE_BUDDY_MAPCOUNT_VALUE, order):
            break
        _list_del(state, buddy, order)  # list_del: whichever zone's list the buddy is on
        zone.nr_free[order] -= 1
        rb.rmv_page_order(state, buddy)
        pfn &= buddy
        order += 1
    rb.set_page_order(state, pfn, order)
    free_list = zone.free_area[order][migratetype]
    if order < MAX_ORDER - 2:
        combined = pfn & buddy
        higher_buddy = combined ^ (1 << (order + 1))
        if rb.page_is_buddy(state, combined, higher_buddy, order + 1):
            free_list.add_tail(pfn)
            zone.nr_free[order] += 1
            return
    free_list.add_head(pfn)
    zone.nr_free[order] += 1


def _list_del(state: rb.BuddyState, pfn: int, order: int) -> None:
    """list_del(&page->lru) needs no zone: unlink the block from whichever list holds it."""
    for zone in state.zones:
        for free_list in zone.free_area[order]:
            if pfn in free_list:
                free_list.remove(pfn)
                return
    raise AssertionError(f"pfn {pfn} is not on any order-{order} free list")


def _free_one_page_no_merge(state: rb.BuddyState, zone: rb.Zone, pfn: int, order: int,
                            migratetype: int) -> None:
    """__free_one_page without its merge loop."""
    zone.nr_free_pages += 1 << order
    buddy = -1
    # MUTATION: the `while order < MAX_ORDER - 1` merge loop is gone; no buddy is ever merged
    rb.set_page_order(state, pfn, order)
    free_list = zone.free_area[order][migratetype]
    if order < MAX_ORDER - 2:
        combined = pfn & buddy
        higher_buddy = combined ^ (1 << (order + 1))
        if rb.page_is_buddy(state, combined, higher_buddy, order + 1):
            free_list.add_tail(pfn)
            zone.nr_free[order] += 1
            return
    free_list.add_head(pfn)
    zone.nr_free[order] += 1


def _free_one_page_nr_free_kept(state: rb.BuddyState, zone: rb.Zone, pfn: int, order: int,
                                migratetype: int) -> None:
    """__free_one_page that unlinks a merged buddy but leaves its order's nr_free alone."""
    zone.nr_free_pages += 1 << order
    buddy = -1
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)
        if not rb.page_is_buddy(state, pfn, buddy, order):
            break
        rb.del_from_free_area(zone, buddy, order)
        # MUTATION: zone->free_area[order].nr_free-- is missing
        rb.rmv_page_order(state, buddy)
        pfn &= buddy
        order += 1
    rb.set_page_order(state, pfn, order)
    free_list = zone.free_area[order][migratetype]
    if order < MAX_ORDER - 2:
        combined = pfn & buddy
        higher_buddy = combined ^ (1 << (order + 1))
        if rb.page_is_buddy(state, combined, higher_buddy, order + 1):
            free_list.add_tail(pfn)
            zone.nr_free[order] += 1
            return
    free_list.add_head(pfn)
    zone.nr_free[order] += 1


def _free_one_page_idle_zone_shortcut(state: rb.BuddyState, zone: rb.Zone, pfn: int,
                                      order: int, migratetype: int) -> None:
    """__free_one_page with a shortcut that skips merging once the zone is entirely free."""
    zone.nr_free_pages += 1 << order
    buddy = -1
    # MUTATION: "nothing is allocated, nothing to merge for": the last free of a zone stays split
    while order < MAX_ORDER - 1 and zone.nr_free_pages < zone.geometry.managed_pages:
        buddy = pfn ^ (1 << order)
        if not rb.page_is_buddy(state, pfn, buddy, order):
            break
        rb.del_from_free_area(zone, buddy, order)
        zone.nr_free[order] -= 1
        rb.rmv_page_order(state, buddy)
        pfn &= buddy
        order += 1
    rb.set_page_order(state, pfn, order)
    free_list = zone.free_area[order][migratetype]
    if order < MAX_ORDER - 2:
        combined = pfn & buddy
        higher_buddy = combined ^ (1 << (order + 1))
        if rb.page_is_buddy(state, combined, higher_buddy, order + 1):
            free_list.add_tail(pfn)
            zone.nr_free[order] += 1
            return
    free_list.add_head(pfn)
    zone.nr_free[order] += 1


def _free_hot_cold_page_drains_above_high(state: rb.BuddyState, pfn: int, cold: bool,
                                          cpu: int) -> None:
    """free_hot_cold_page that drains a batch only once count has passed high."""
    rb.free_pages_prepare(state, pfn, 0)
    zone = rb.page_zone(state, pfn)
    assert zone is not None
    migratetype = rb.get_pageblock_migratetype(state, pfn)
    state.mem_map[pfn].pcp_migratetype = migratetype
    if migratetype >= gfp.MIGRATE_PCPTYPES:
        migratetype = rb.MOVABLE
    pcp = zone.pcp[cpu]
    if cold:
        pcp.lists[migratetype].add_tail(pfn)
    else:
        pcp.lists[migratetype].add_head(pfn)
    pcp.count += 1
    if pcp.count > pcp.high:  # MUTATION: `>` instead of `>=`
        rb.free_pcppages_bulk(state, zone, pcp.batch, pcp)
        pcp.count -= pcp.batch


_RMQUEUE_BULK: Final = rb.rmqueue_bulk


def _rmqueue_bulk_fills_to_high(state: rb.BuddyState, zone: rb.Zone, count: int,
                                free_list: rb.PfnList, migratetype: int, cold: bool) -> int:
    """rmqueue_bulk asked for ``high`` pages rather than ``batch``.

    Not a mutation but a freedom contract mode allows (how full pcp lists get is free): after
    an order-0 allocation the list holds high - 1 pages, so the next free reaches high.
    """
    return _RMQUEUE_BULK(state, zone, zone.geometry.pcp_high, free_list, migratetype, cold)


def _rmqueue_bulk_no_freepage_state(state: rb.BuddyState, zone: rb.Zone, count: int,
                                    free_list: rb.PfnList, migratetype: int, cold: bool) -> int:
    """rmqueue_bulk that forgets __mod_zone_page_state(zone, NR_FREE_PAGES, -i)."""
    taken = 0
    for _ in range(count):
        pfn = rb.rmqueue(state, zone, 0, migratetype)
        if pfn is None:
            break
        if cold:
            free_list.add_head(pfn)
        else:
            free_list.add_tail(pfn)
        taken += 1
    # MUTATION: zone.nr_free_pages -= taken is missing
    return taken


def _buffered_rmqueue_count_kept(state: rb.BuddyState, zone: rb.Zone, order: int,
                                 gfp_mask: int, alloc_flags: int, migratetype: int,
                                 cpu: int) -> int | None:
    """buffered_rmqueue that takes a page off the pcp list without pcp->count--."""
    cold = bool(gfp_mask & GfpFlag.COLD)
    if order == 0:
        pcp = zone.pcp[cpu]
        free_list = pcp.lists[migratetype]
        if not free_list:
            pcp.count += rb.rmqueue_bulk(state, zone, pcp.batch, free_list, migratetype, cold)
            if not free_list:
                return None
        pfn = free_list.last() if cold else free_list.first()
        assert pfn is not None
        free_list.remove(pfn)
        # MUTATION: pcp.count -= 1 is missing
    else:
        found = None
        if alloc_flags & gfp.ALLOC_HARDER:
            found = rb.rmqueue_smallest(state, zone, order, rb.HIGHATOMIC)
        if found is None:
            found = rb.rmqueue(state, zone, order, migratetype)
        if found is None:
            return None
        pfn = found
        zone.nr_free_pages -= 1 << order
    zone.alloc_batch -= 1 << order
    if zone.alloc_batch <= 0 and not zone.fair_depleted:
        zone.fair_depleted = True
    return pfn


def _rmqueue_smallest_keeps_buddy_mark(state: rb.BuddyState, zone: rb.Zone, order: int,
                                       migratetype: int) -> int | None:
    """__rmqueue_smallest whose rmv_page_order clears page_private but not PageBuddy."""
    for current_order in range(order, MAX_ORDER):
        free_list = zone.free_area[current_order][migratetype]
        pfn = free_list.first()
        if pfn is None:
            continue
        free_list.remove(pfn)
        state.mem_map[pfn].private = 0  # MUTATION: __ClearPageBuddy missing: _mapcount stays -128
        zone.nr_free[current_order] -= 1
        rb.expand(state, zone, pfn, order, current_order, migratetype)
        state.mem_map[pfn].pcp_migratetype = migratetype
        return pfn
    return None


def _free_pages_prepare_keeps_pg_head(state: rb.BuddyState, pfn: int, order: int) -> None:
    """free_pages_prepare that forgets to clear PG_head on a freed compound head."""
    head = state.mem_map[pfn]
    # MUTATION: `head.flags &= ~(1 << PG_head)` (__ClearPageHead) is missing
    head.compound_order = 0
    head.owner_order = 0
    for tail in range(pfn + 1, pfn + (1 << order)):
        state.mem_map[tail].compound_head = -1


def _prep_new_page_refcount_order0_only(state: rb.BuddyState, pfn: int, order: int,
                                        gfp_mask: int) -> None:
    """prep_new_page that only calls set_page_refcounted for order-0 pages."""
    head = state.mem_map[pfn]
    head.private = 0
    if not order:  # MUTATION: high-order blocks are handed out with _count 0
        head.refcount = 1
    if order and gfp_mask & GfpFlag.COMP:
        head.flags |= 1 << PG_head
        head.compound_order = order
        for tail in range(pfn + 1, pfn + (1 << order)):
            state.mem_map[tail].compound_head = pfn
    head.owner_order = order


def _alloc_pages_nodemask_no_zone_check(state: rb.BuddyState, gfp_mask: int, order: int,
                                        cpu: int) -> int | None:
    """__alloc_pages_nodemask without the GFP_ZONE_BAD test (CONFIG_DEBUG_VM off)."""
    gfp_mask &= gfp.__GFP_BITS_MASK
    if gfp.gfp_migratetype_bad(gfp_mask):  # MUTATION: `gfp_zone_bad(gfp_mask) or` is missing
        state.alloc_warnings += 1
        return None
    high_zoneidx = gfp.gfp_zone(gfp_mask)
    zonelist = tuple(zone for zone in reversed(state.zones)
                     if zone.populated and zone.index <= high_zoneidx)
    if not zonelist:
        return None
    ac = rb.AllocContext(zonelist=zonelist, preferred_zone=zonelist[0],
                         classzone_idx=zonelist[0].index,
                         migratetype=gfp.gfpflags_to_migratetype(gfp_mask))
    alloc_flags = gfp.ALLOC_WMARK_LOW | gfp.ALLOC_CPUSET | gfp.ALLOC_FAIR
    pfn = rb.get_page_from_freelist(state, gfp_mask | GfpFlag.HARDWALL, order, alloc_flags, ac,
                                    cpu)
    if pfn is None:
        pfn = rb.alloc_pages_slowpath(state, gfp_mask, order, ac, cpu)
    return pfn


def _zone_watermark_ok_reserve_not_charged(zone: rb.Zone, order: int, mark: int,
                                           classzone_idx: int, alloc_flags: int) -> bool:
    """__zone_watermark_ok that lets every request count the high-atomic reserve as free."""
    if not 0 <= order < MAX_ORDER:
        return False
    free_pages = zone.nr_free_pages - ((1 << order) - 1)
    min_mark = mark
    if alloc_flags & gfp.ALLOC_HIGH:
        min_mark -= min_mark // 2
    if alloc_flags & gfp.ALLOC_HARDER:
        min_mark -= min_mark // 4
    # MUTATION: `else: free_pages -= z->nr_reserved_highatomic` is missing
    if free_pages <= min_mark + zone.geometry.lowmem_reserve[classzone_idx]:
        return False
    if order == 0:
        return True
    for current_order in range(order, MAX_ORDER):
        if not zone.nr_free[current_order]:
            continue
        if alloc_flags & gfp.ALLOC_HARDER:
            return True
        if any(zone.free_area[current_order][mt] for mt in range(gfp.MIGRATE_PCPTYPES)):
            return True
    return False


def _free_pcppages_bulk_stops_when_empty(state: rb.BuddyState, zone: rb.Zone, count: int,
                                         pcp: rb.Pcp) -> None:
    """free_pcppages_bulk that gives up when every list is empty.

    Not a mutation but a guard: 4.6 (and refmodel) trust pcp->count and spin forever on empty
    lists when it is too high; a mutant with a broken count would otherwise hang the run.
    """
    migratetype = 0
    batch_free = 0
    to_free = count
    while to_free > 0 and any(pcp.lists):  # GUARD: `while (to_free)` in 4.6
        while True:
            batch_free += 1
            migratetype = (migratetype + 1) % gfp.MIGRATE_PCPTYPES
            free_list = pcp.lists[migratetype]
            if free_list:
                break
        if batch_free == gfp.MIGRATE_PCPTYPES:
            batch_free = to_free
        while True:
            pfn = free_list.last()
            assert pfn is not None
            free_list.remove(pfn)
            rb.free_one_page(state, zone, pfn, 0, state.mem_map[pfn].pcp_migratetype)
            to_free -= 1
            if not to_free:
                break
            batch_free -= 1
            if not batch_free or not free_list:
                break


# ---------------------------------------------------------------------------------------------
# State invariants BUDDY-I1 .. I12
# ---------------------------------------------------------------------------------------------


class LeakUpperHalfOnFree(MutantBuddy):
    """Freeing an order > 0 block returns only its lower half; the upper half leaks."""

    target = "BUDDY-I1"
    patches: ClassVar = {"free_pages_ok": _free_pages_ok_loses_upper_half}


class ListDelForgotten(MutantBuddy):
    """__rmqueue_smallest hands a block out without list_del, so it is held and free at once."""

    target = "BUDDY-I2"
    patches: ClassVar = {"rmqueue_smallest": _rmqueue_smallest_no_list_del}


class ExpandOffByOne(MutantBuddy):
    """expand() lists each split-off upper half one order too big, so it is misaligned."""

    target = "BUDDY-I3"
    patches: ClassVar = {"expand": _expand_order_off_by_one}


class CoalesceAcrossZones(MutantBuddy):
    """__free_one_page merges with a free buddy in the neighbouring zone (no zone-id test)."""

    target = "BUDDY-I4"
    patches: ClassVar = {"free_one_page": _free_one_page_across_zones}


class NoCoalescing(MutantBuddy):
    """__free_one_page never merges a freed block with its free buddy."""

    target = "BUDDY-I5"
    patches: ClassVar = {"free_one_page": _free_one_page_no_merge}


class NrFreeKeptOnMerge(MutantBuddy):
    """A buddy merged away in __free_one_page still counts in its order's nr_free."""

    target = "BUDDY-I6"
    patches: ClassVar = {"free_one_page": _free_one_page_nr_free_kept}


class BulkRefillKeepsNrFreePages(MutantBuddy):
    """rmqueue_bulk moves pages to a pcp list without taking them off NR_FREE_PAGES."""

    target = "BUDDY-I7"
    patches: ClassVar = {"rmqueue_bulk": _rmqueue_bulk_no_freepage_state}


class PcpCountNotDecremented(MutantBuddy):
    """buffered_rmqueue takes an order-0 page off a pcp list without pcp->count--."""

    target = "BUDDY-I8"
    patches: ClassVar = {"buffered_rmqueue": _buffered_rmqueue_count_kept,
                         "free_pcppages_bulk": _free_pcppages_bulk_stops_when_empty}


class BuddyMarkKeptOnAlloc(MutantBuddy):
    """A block taken by __rmqueue_smallest keeps the PageBuddy _mapcount (-128) while held."""

    target = "BUDDY-I9"
    patches: ClassVar = {"rmqueue_smallest": _rmqueue_smallest_keeps_buddy_mark}


class IdleZoneSkipsMerge(MutantBuddy):
    """The free that makes a zone entirely free skips merging, so it never re-forms its blocks."""

    target = "BUDDY-I10"
    patches: ClassVar = {"free_one_page": _free_one_page_idle_zone_shortcut}


class WatermarkMinNotShared(RefBuddy):
    """Watermarks recomputed at the first allocation give every zone all of pages_min instead
    of its managed-pages share (the late setup_per_zone_wmarks pass uses the wrong formula)."""

    target = "BUDDY-I11"

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """Recompute the watermarks once, wrongly, then allocate as 4.6 does."""
        if not getattr(self, "_wmarks_recomputed", False):
            self._wmarks_recomputed = True
            min_free_kbytes = effective_min_free_kbytes(self.config)
            for zone in self.state.zones:
                geo = zone.geometry
                # MUTATION: the zone is passed as if it were all of lowmem, so
                # pages_min * managed / lowmem_pages == pages_min for every zone
                (mark,) = per_zone_wmarks(min_free_kbytes, (geo.managed_pages,),
                                          self.config.watermark_scale_factor)
                zone.geometry = attrs.evolve(geo, watermark=mark)
        return super().alloc_pages(gfp_mask, order, cpu)


class PgHeadLeftOnFree(MutantBuddy):
    """A freed compound page keeps PG_head on its head page, which then sits on a free list."""

    target = "BUDDY-I12"
    patches: ClassVar = {"free_pages_prepare": _free_pages_prepare_keeps_pg_head}


# ---------------------------------------------------------------------------------------------
# Step rules BUDDY-R1 .. R14
# ---------------------------------------------------------------------------------------------


class DmaServedFromNormal(RefBuddy):
    """The zone lookup ignores __GFP_DMA and __GFP_DMA32, so DMA requests get ZONE_NORMAL."""

    target = "BUDDY-R1"

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """Drop the DMA zone modifiers (unless the mask is GFP_ZONE_BAD), then allocate."""
        if not gfp.gfp_zone_bad(gfp_mask & GFP_BITS_MASK):
            gfp_mask &= ~(GfpFlag.DMA | GfpFlag.DMA32)  # MUTATION: gfp_zone() sees neither bit
        return super().alloc_pages(gfp_mask, order, cpu)


class HighOrderNotRefcounted(MutantBuddy):
    """prep_new_page only sets _count to 1 for order-0 pages; higher orders come back at 0."""

    target = "BUDDY-R2"
    patches: ClassVar = {"prep_new_page": _prep_new_page_refcount_order0_only}


class OversizedOrderNotWarned(RefBuddy):
    """alloc_pages returns NULL for order >= MAX_ORDER without the warn_alloc_failed report."""

    target = "BUDDY-R3"

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """Refuse out-of-range orders silently."""
        if not 0 <= order < MAX_ORDER:
            return None  # MUTATION: WARN_ON_ONCE(order >= MAX_ORDER) is missing
        return super().alloc_pages(gfp_mask, order, cpu)


class ZoneBadMaskAllocates(MutantBuddy):
    """A GFP_ZONE_BAD mask (e.g. __GFP_DMA|__GFP_DMA32) is not refused and gets memory."""

    target = "BUDDY-R4"
    patches: ClassVar = {"alloc_pages_nodemask": _alloc_pages_nodemask_no_zone_check}


class HighatomicReserveNotCharged(MutantBuddy):
    """__zone_watermark_ok does not subtract the high-atomic reserve for ordinary requests, so
    they eat into the pages set aside for atomic ones and take zones below MIN."""

    # Freedom, not bug: the allocator reserves at boot, by count alone, as much as 4.6 ever
    # reserves per zone (1% of it plus a pageblock, in whole pageblocks), where 4.6 waits for
    # an atomic request to fail first.  The reserve policy is free in contract mode; with 1024
    # pages reserved, any allocation from DMA32, or of order 9 or 10 elsewhere, shows the bug.
    target = "BUDDY-R5"
    patches: ClassVar = {"zone_watermark_ok": _zone_watermark_ok_reserve_not_charged}

    def __init__(self, config: MachineConfig) -> None:
        super().__init__(config)
        for zone in self.state.zones:
            cap = zone.geometry.managed_pages // 100 + PAGEBLOCK_NR_PAGES
            while zone.populated and zone.nr_reserved_highatomic < cap:
                zone.nr_reserved_highatomic += PAGEBLOCK_NR_PAGES


class CpuWrappedNotRefused(RefBuddy):
    """A CPU number outside the machine is reduced modulo nr_cpus instead of being refused."""

    target = "BUDDY-R6"

    def _wrap(self, cpu: int) -> int:
        return cpu % self.config.nr_cpus  # MUTATION: `cpu >= nr_cpu_ids` is never refused

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        """RefBuddy.alloc_pages on the wrapped CPU number."""
        return super().alloc_pages(gfp_mask, order, self._wrap(cpu))

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """RefBuddy.free_pages on the wrapped CPU number."""
        return super().free_pages(pfn, order, self._wrap(cpu))

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """RefBuddy.put_page on the wrapped CPU number."""
        return super().put_page(pfn, self._wrap(cpu))

    def drain_pages(self, cpu: int) -> int:
        """RefBuddy.drain_pages on the wrapped CPU number."""
        return super().drain_pages(self._wrap(cpu))


class FreeArgumentsUnchecked(RefBuddy):
    """free_pages checks neither the order's range nor the pfn's alignment (the VM_BUG_ONs are
    compiled out), so a bad free is judged on whatever page it names instead of refused."""

    target = "BUDDY-R7"

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """RefBuddy.free_pages without the order and alignment tests."""
        if self._bad_cpu(cpu) or self._bad_pfn(pfn):
            return EINVAL
        # MUTATION: the `0 <= order < MAX_ORDER` and `pfn & ((1 << order) - 1)` tests are missing
        page = self.state.mem_map[pfn]
        if page.refcount == 0:
            return EFAULT
        if page.refcount == 1 and page.owner_order != order:
            return EINVAL
        rb.free_pages(self.state, pfn, order, cpu)
        return 0


class DoubleFreeAccepted(RefBuddy):
    """Freeing a page whose _count is already 0 underflows the count and reports success."""

    target = "BUDDY-R8"

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """put_page_testzero without the zero-count check."""
        if _valid_free_args(self, pfn, order, cpu) and self.state.mem_map[pfn].refcount == 0:
            self.state.mem_map[pfn].refcount -= 1  # MUTATION: VM_BUG_ON_PAGE(!count) missing
            return 0
        return super().free_pages(pfn, order, cpu)


class WrongOrderFreeAccepted(RefBuddy):
    """free_pages does not compare the order with the one the block was allocated at."""

    target = "BUDDY-R9"

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """RefBuddy.free_pages without the page_owner order test."""
        if not _valid_free_args(self, pfn, order, cpu):
            return EINVAL
        if self.state.mem_map[pfn].refcount == 0:
            return EFAULT
        # MUTATION: `if refcount == 1 and owner_order != order: return EINVAL` is missing
        rb.free_pages(self.state, pfn, order, cpu)
        return 0


class FreeIgnoresOtherReferences(RefBuddy):
    """__free_pages frees the block even when get_page took further references."""

    target = "BUDDY-R10"

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        """Free as if the caller held the only reference."""
        if _valid_free_args(self, pfn, order, cpu) and self.state.mem_map[pfn].refcount > 1:
            self.state.mem_map[pfn].refcount = 1  # MUTATION: put_page_testzero() bypassed
        return super().free_pages(pfn, order, cpu)


class GetPageOnFreePage(RefBuddy):
    """get_page takes a reference on a page that holds none (a free page) instead of refusing."""

    target = "BUDDY-R11"

    def get_page(self, pfn: int) -> int:
        """RefBuddy.get_page without the zero-count test."""
        if self._bad_pfn(pfn):
            return EINVAL
        # MUTATION: `if head.refcount <= 0: return EFAULT` is missing
        self.state.mem_map[self._head_of(pfn)].refcount += 1
        return 0


class PutPageSinglePageOnly(RefBuddy):
    """put_page treats every page as a lone order-0 page: it neither follows compound_head()
    nor frees a compound page whole, and the last put of a larger block frees one page."""

    target = "BUDDY-R12"

    def put_page(self, pfn: int, cpu: int = 0) -> int:
        """__put_single_page(page) for every page."""
        if self._bad_cpu(cpu) or self._bad_pfn(pfn):
            return EINVAL
        page = self.state.mem_map[pfn]  # MUTATION: not compound_head(page)
        if page.refcount <= 0:
            return EFAULT
        page.refcount -= 1
        if page.refcount:
            return 0
        rb.free_hot_cold_page(self.state, pfn, cold=False, cpu=cpu)  # MUTATION: always order 0
        return 0


class SplitLeavesLastPageUnreferenced(RefBuddy):
    """split_page's set_page_refcounted loop stops one page early: the last page keeps _count 0."""

    target = "BUDDY-R13"

    def split_page(self, pfn: int, order: int) -> int:
        """RefBuddy.split_page with the off-by-one."""
        if self._bad_pfn(pfn) or not 0 <= order < MAX_ORDER:
            return EINVAL
        page = self.state.mem_map[pfn]
        if page.flags & (1 << PG_head) or page.compound_head >= 0:
            return EINVAL
        if page.refcount == 0:
            return EFAULT
        if page.owner_order != order:
            return EINVAL
        page.owner_order = 0
        for sub in range(pfn + 1, pfn + (1 << order) - 1):  # MUTATION: `- 1`
            self.state.mem_map[sub].refcount = 1
        return 0


class DrainDrainsCallingCpu(RefBuddy):
    """drain_pages(cpu) drains CPU 0's lists (smp_processor_id()) instead of the CPU named."""

    target = "BUDDY-R14"

    def drain_pages(self, cpu: int) -> int:
        """RefBuddy.drain_pages on the wrong CPU."""
        if self._bad_cpu(cpu):
            return EINVAL
        for zone in self.state.zones:
            if zone.populated:
                rb.drain_pages_zone(self.state, 0, zone)  # MUTATION: 0 instead of cpu
        return 0


class PcpDrainsAboveHigh(MutantBuddy):
    """free_hot_cold_page drains a batch when pcp->count exceeds high, not when it reaches it."""

    # Freedom, not bug: the allocator refills its per-cpu lists up to high rather than by a
    # batch, so one order-0 free after an order-0 allocation is enough to show the bug.
    target = "BUDDY-R15"
    patches: ClassVar = {"free_hot_cold_page": _free_hot_cold_page_drains_above_high,
                         "rmqueue_bulk": _rmqueue_bulk_fills_to_high}
