"""Unit tests of refmodel/buddy.py against hand-computed Linux 4.6 cases (mm/page_alloc.c).

Almost everything runs on the ``tiny`` preset, derived by hand in tests/specs/test_machine.py:

* zones DMA [0,1536), DMA32 [1536,2560), Normal [2560,4096); 8 MOVABLE pageblocks of 512;
* watermarks (min/low/high) DMA 48/60/72, DMA32 32/40/48, Normal 48/60/72;
* lowmem_reserve DMA (0,4,10,10), DMA32 (0,0,6,6); pcp high 12 batch 2 on every zone;
* fair-zone batches (high - low) DMA 12, DMA32 8, Normal 12.

The expected pfns and lists are derived in the comments from the 4.6 algorithms: expand,
__rmqueue_smallest/__rmqueue_fallback, rmqueue_bulk, __free_one_page, free_hot_cold_page,
free_pcppages_bulk, __zone_watermark_ok, get_page_from_freelist's fair pass and the slow path.
The model only drives the scenarios; no expected value is read back from it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from refmodel.buddy import RefBuddy, Zone, zone_watermark_ok
from specs import gfp
from specs.buddy import PAGE_BUDDY_MAPCOUNT_VALUE, PG_head
from specs.errno import Errno
from specs.gfp import (
    __GFP_ATOMIC,
    __GFP_COLD,
    __GFP_COMP,
    __GFP_DMA,
    __GFP_DMA32,
    __GFP_HIGH,
    __GFP_HIGHMEM,
    __GFP_MOVABLE,
    __GFP_NOWARN,
    __GFP_RECLAIMABLE,
    ALLOC_HARDER,
    ALLOC_HIGH,
    GFP_ATOMIC,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_NOWAIT,
    GFP_TEMPORARY,
)
from specs.machine import MachineConfig, ZoneGeometry, preset

U, M, R, H = 0, 1, 2, 3  # MIGRATE_UNMOVABLE, MOVABLE, RECLAIMABLE, HIGHATOMIC
DMA, DMA32, NORMAL, MOVABLE_ZONE = 0, 1, 2, 3
EINVAL, EFAULT = -Errno.EINVAL, -Errno.EFAULT

HUM = GFP_HIGHUSER_MOVABLE
#: A MOVABLE allocation restricted to ZONE_DMA: its zonelist is [DMA] only, so the fair pass can
#: never send it elsewhere (gfp_zone(DMA|MOVABLE) == ZONE_DMA, classzone 0, reserve 0).
DMA_MOVABLE = GFP_KERNEL | __GFP_DMA | __GFP_MOVABLE
DMA_ATOMIC = GFP_ATOMIC | __GFP_DMA

#: Boot layout of tiny [4.6: free_all_bootmem frees the largest aligned blocks; the model frees
#: each zone's span separately, lowest pfn first, each block going to the list head]:
#: DMA 0 (o10) + 1024 (o9); DMA32 1536 (o9, buddy 1024 is in DMA so no merge) then 2048 (o9,
#: pushed in front); Normal 2560 (o9, buddy 2048 is in DMA32) + 3072 (o10).
BOOT_LISTS = {
    DMA: {(10, M): (0,), (9, M): (1024,)},
    DMA32: {(9, M): (2048, 1536)},
    NORMAL: {(9, M): (2560,), (10, M): (3072,)},
    MOVABLE_ZONE: {},
}
BOOT_BLOCKS = {(0, 10), (1024, 9), (1536, 9), (2048, 9), (2560, 9), (3072, 10)}
MANAGED = (1536, 1024, 1536, 0)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def tiny() -> RefBuddy:
    """A freshly booted tiny machine."""
    return RefBuddy(preset("tiny"))


def free_lists(entries: dict[tuple[int, int], tuple[int, ...]]) -> tuple:
    """ZoneView.free_lists shape from {(order, migratetype): pfns head first}."""
    return tuple(tuple(tuple(entries.get((order, mt), ())) for mt in range(4))
                 for order in range(11))


def nr_free(entries: dict[tuple[int, int], tuple[int, ...]]) -> tuple[int, ...]:
    """free_area[order].nr_free implied by a free-list dict."""
    return tuple(sum(len(pfns) for (o, _), pfns in entries.items() if o == order)
                 for order in range(11))


def zone(buddy: RefBuddy, index: int):
    """The current ZoneView of one zone."""
    return buddy.view().zones[index]


def pcp(buddy: RefBuddy, index: int, cpu: int = 0):
    """(count, lists) of one CPU's pcp for one zone."""
    view = zone(buddy, index).pcp[cpu]
    return view.count, view.lists


def alloc_each(buddy: RefBuddy, gfp_mask: int, order: int, n: int, cpu: int = 0) -> list:
    """n allocations of the same kind."""
    return [buddy.alloc_pages(gfp_mask, order, cpu) for _ in range(n)]


def alloc_seq(buddy: RefBuddy, requests: list[tuple[int, int]], cpu: int = 0) -> list:
    """One allocation per (gfp_mask, order) request."""
    return [buddy.alloc_pages(mask, order, cpu) for mask, order in requests]


def free_each(buddy: RefBuddy, pfns, order: int, cpu: int = 0) -> list[int]:
    """free_pages on each pfn; the results."""
    return [buddy.free_pages(pfn, order, cpu) for pfn in pfns]


def block_set(buddy: RefBuddy) -> set[tuple[int, int]]:
    """Every free block as (pfn, order), over all zones."""
    return {(pfn, order) for z in buddy.view().zones
            for order, lists in enumerate(z.free_lists) for pfns in lists for pfn in pfns}


def pageblocks(buddy: RefBuddy) -> list[int]:
    """The pageblock migratetypes."""
    return list(buddy.page_state().pageblock_migratetype)


def snapshot(buddy: RefBuddy) -> tuple:
    """view() plus page_state() with every per-page sequence copied into a plain list."""
    state = buddy.page_state()
    return buddy.view(), {field.name: list(getattr(state, field.name))
                          for field in attrs.fields(type(state))}


def refused(buddy: RefBuddy, call: Callable[[], object]) -> tuple[object, bool]:
    """Run a call that must be refused: its result and whether view and page_state are
    unchanged."""
    before = snapshot(buddy)
    result = call()
    return result, before == snapshot(buddy)


# ---------------------------------------------------------------------------------------------
# boot
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [DMA, DMA32, NORMAL, MOVABLE_ZONE])
def test_boot_free_lists(index):
    """Each tiny zone boots with its largest aligned blocks on the MOVABLE lists."""
    z = zone(tiny(), index)
    expected = BOOT_LISTS[index]
    assert (free_lists(expected), nr_free(expected)) == (z.free_lists, z.nr_free)


def test_boot_counters():
    """Boot counts every page free, fills the fair batches and leaves pcp lists empty."""
    view = tiny().view()
    actual = ([z.nr_free_pages for z in view.zones], [z.alloc_batch for z in view.zones],
              [z.fair_depleted for z in view.zones],
              [(p.count, p.high, p.batch) for z in view.zones for p in z.pcp],
              view.alloc_warnings)
    expected = (list(MANAGED), [12, 8, 12, 0], [False] * 4, [(0, 12, 2)] * 8, 0)
    assert expected == actual


def test_boot_page_state():
    """Free block heads carry PAGE_BUDDY_MAPCOUNT_VALUE and their order; all else is -1/0."""
    state = tiny().page_state()
    heads = dict(BOOT_BLOCKS)
    expected_mapcount = [PAGE_BUDDY_MAPCOUNT_VALUE if pfn in heads else -1 for pfn in range(4096)]
    expected_private = [heads.get(pfn, 0) for pfn in range(4096)]
    actual = (list(state.mapcount), list(state.private), set(state.refcount),
              list(state.pageblock_migratetype))
    assert (expected_mapcount, expected_private, {0}, [M] * 8) == actual


# ---------------------------------------------------------------------------------------------
# allocation: smallest-first, fallback and stealing, pcp refill, expand
# ---------------------------------------------------------------------------------------------

# The first GFP_KERNEL order-0 page (UNMOVABLE, zonelist Normal/DMA32/DMA, classzone Normal):
# Normal passes LOW (1536 > 60); pcp list U is empty, so rmqueue_bulk takes batch = 2 pages.
# 1st __rmqueue: no UNMOVABLE block anywhere -> __rmqueue_fallback scans order 10 down; order 10
#   has 3072 on MOVABLE; can_steal (order >= pageblock_order) -> change_pageblock_range makes
#   pageblocks 6 and 7 UNMOVABLE; expand(10 -> 0) puts the upper halves 3584 (o9), 3328 (o8),
#   3200, 3136, 3104, 3088, 3080, 3076, 3074 (o1), 3073 (o0) on the UNMOVABLE lists.
# 2nd __rmqueue: __rmqueue_smallest finds 3073 on the order-0 UNMOVABLE list.
# The pcp list is [3072, 3073] in physical order; the hot allocation takes the first, 3072.
FIRST_KERNEL_NORMAL = {
    (1, U): (3074,), (2, U): (3076,), (3, U): (3080,), (4, U): (3088,), (5, U): (3104,),
    (6, U): (3136,), (7, U): (3200,), (8, U): (3328,), (9, U): (3584,), (9, M): (2560,),
}


def test_first_gfp_kernel_page():
    """The first GFP_KERNEL page is 3072, the head of Normal's stolen order-10 block."""
    assert 3072 == tiny().alloc_pages(GFP_KERNEL, 0)


def test_first_gfp_kernel_free_lists():
    """The first GFP_KERNEL page leaves the expanded halves on Normal's UNMOVABLE lists."""
    buddy = tiny()
    buddy.alloc_pages(GFP_KERNEL, 0)
    z = zone(buddy, NORMAL)
    expected = (free_lists(FIRST_KERNEL_NORMAL), nr_free(FIRST_KERNEL_NORMAL), 1534)
    assert expected == (z.free_lists, z.nr_free, z.nr_free_pages)


def test_first_gfp_kernel_pcp_and_pageblocks():
    """The first GFP_KERNEL page leaves 3073 on the UNMOVABLE pcp list and retypes the two
    stolen pageblocks."""
    buddy = tiny()
    buddy.alloc_pages(GFP_KERNEL, 0)
    expected = ((1, ((3073,), (), ())), [M] * 6 + [U, U], 11)
    assert expected == (pcp(buddy, NORMAL), pageblocks(buddy), zone(buddy, NORMAL).alloc_batch)


def test_first_gfp_kernel_leaves_other_zones_alone():
    """The first GFP_KERNEL page touches neither DMA32 nor DMA."""
    buddy = tiny()
    buddy.alloc_pages(GFP_KERNEL, 0)
    actual = (zone(buddy, DMA).free_lists, zone(buddy, DMA32).free_lists)
    assert (free_lists(BOOT_LISTS[DMA]), free_lists(BOOT_LISTS[DMA32])) == actual


def test_first_gfp_kernel_page_state():
    """The returned page has refcount 1 and the page left on the pcp list refcount 0."""
    buddy = tiny()
    buddy.alloc_pages(GFP_KERNEL, 0)
    first, second = buddy.page(3072), buddy.page(3073)
    actual = (first.refcount, first.mapcount, first.private, second.refcount, second.mapcount)
    assert (1, -1, 0, 0, -1) == actual


# A GFP_HIGHUSER_MOVABLE order-0 page: gfp_zone = ZONE_MOVABLE (empty), so the zonelist starts
# at Normal; __rmqueue_smallest(MOVABLE) searches upward and finds 2560 at order 9 before 3072
# at order 10; expand(9 -> 0) leaves 2816 (o8), 2688, 2624, 2592, 2576, 2568, 2564, 2562 (o1),
# 2561 (o0); the second refill page is 2561, so pcp = [2560, 2561] and 2560 is returned.
FIRST_MOVABLE_NORMAL = {
    (1, M): (2562,), (2, M): (2564,), (3, M): (2568,), (4, M): (2576,), (5, M): (2592,),
    (6, M): (2624,), (7, M): (2688,), (8, M): (2816,), (10, M): (3072,),
}


def test_first_highuser_movable_page():
    """The first GFP_HIGHUSER_MOVABLE page is 2560 and 2561 waits on the MOVABLE pcp list."""
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM, 0)
    z = zone(buddy, NORMAL)
    expected = (2560, (1, ((), (2561,), ())), free_lists(FIRST_MOVABLE_NORMAL), 1534, [M] * 8)
    assert expected == (pfn, pcp(buddy, NORMAL), z.free_lists, z.nr_free_pages, pageblocks(buddy))


def test_expand_places_upper_halves():
    """An order-3 MOVABLE allocation splits 2560 (o9) and frees the upper halves 2816..2568."""
    # expand(low=3, high=9): 2560+256 (o8), +128 (o7), +64 (o6), +32 (o5), +16 (o4), +8 (o3).
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM, 3)
    expected_lists = {(3, M): (2568,), (4, M): (2576,), (5, M): (2592,), (6, M): (2624,),
                      (7, M): (2688,), (8, M): (2816,), (10, M): (3072,)}
    z = zone(buddy, NORMAL)
    assert (2560, free_lists(expected_lists), 1528) == (pfn, z.free_lists, z.nr_free_pages)


def test_order0_pages_come_in_physical_order():
    """Successive MOVABLE order-0 allocations return consecutive pfns from 2560."""
    # Each refill takes the lowest free block and expands it; with batch 2 and hot takes from
    # the head, the pages come out in address order.
    assert list(range(2560, 2572)) == alloc_each(tiny(), HUM, 0, 12)


def test_reclaimable_fallback_prefers_unmovable_block():
    """After GFP_KERNEL stole 3072, a GFP_TEMPORARY page steals the UNMOVABLE order-9 3584."""
    # fallbacks[RECLAIMABLE] = {UNMOVABLE, MOVABLE}; at order 9 both 2560 (M) and 3584 (U) exist
    # and UNMOVABLE is tried first; pageblock 7 becomes RECLAIMABLE; expand puts 3840..3585 on
    # the RECLAIMABLE lists and the pcp list is [3584, 3585].
    buddy = tiny()
    pfns = alloc_seq(buddy, [(GFP_KERNEL, 0), (GFP_TEMPORARY, 0)])
    count, lists = pcp(buddy, NORMAL)
    expected = ([3072, 3584], (2, ((3073,), (), (3585,))), [M] * 6 + [U, R])
    assert expected == (pfns, (count, lists), pageblocks(buddy))


# ---------------------------------------------------------------------------------------------
# __free_one_page: merging and head/tail placement (DMA zone, zonelist [DMA])
# ---------------------------------------------------------------------------------------------

# Five DMA allocations (MOVABLE, smallest first):
#   a1 o7: 1024 (o9) split -> 1280 (o8), 1152 (o7) free; returns 1024
#   a2 o7: 1152;  a3 o8: 1280
#   a4 o7: 0 (o10) split -> 512 (o9), 256 (o8), 128 (o7) free; returns 0
#   a5 o7: 128
# Free afterwards: 512 (o9), 256 (o8); 768 pages.
DMA_CHAIN = [(DMA_MOVABLE, 7), (DMA_MOVABLE, 7), (DMA_MOVABLE, 8), (DMA_MOVABLE, 7),
             (DMA_MOVABLE, 7)]


def dma_chain() -> RefBuddy:
    """tiny after the five DMA allocations a1..a5 = 1024, 1152, 1280, 0, 128."""
    buddy = tiny()
    alloc_seq(buddy, DMA_CHAIN)
    return buddy


def test_dma_chain_allocations():
    """The five DMA allocations return 1024, 1152, 1280, 0 and 128."""
    buddy = tiny()
    pfns = alloc_seq(buddy, DMA_CHAIN)
    z = zone(buddy, DMA)
    expected = ([1024, 1152, 1280, 0, 128], free_lists({(9, M): (512,), (8, M): (256,)}), 768)
    assert expected == (pfns, z.free_lists, z.nr_free_pages)


def test_free_inserts_at_tail_when_higher_buddy_free():
    """A freed block goes to the list tail when the buddy of its combined block is free."""
    # free a2 1152 (o7): buddy 1024 allocated; higher buddy 1024^256 = 1280 allocated -> head.
    # free a4 0 (o7): buddy 128 allocated; combined 0, higher buddy 256 is a free o8 -> TAIL.
    buddy = dma_chain()
    free_each(buddy, [1152], 7)
    free_each(buddy, [0], 7)
    assert ((1152, 0), ()) == zone(buddy, DMA).free_lists[7][M:M + 2]


def test_free_inserts_at_head_when_higher_buddy_busy():
    """A freed block goes to the list head when the buddy of its combined block is in use."""
    # free a4 0 (o7): tail of an empty list -> [0].
    # free a2 1152 (o7): higher buddy 1280 (o8) is allocated -> HEAD -> [1152, 0].
    buddy = dma_chain()
    free_each(buddy, [0], 7)
    free_each(buddy, [1152], 7)
    assert ((1152, 0), ()) == zone(buddy, DMA).free_lists[7][M:M + 2]


def test_free_higher_buddy_in_other_zone_goes_to_head():
    """A free higher buddy in another zone does not earn tail placement."""
    # free a3 1280 (o8): buddy 1024 (o8 position) is allocated; combined 1024, higher buddy
    # 1024^512 = 1536 is a free o9 head but in DMA32 -> page_is_buddy false -> HEAD of [256].
    buddy = dma_chain()
    free_each(buddy, [1280], 8)
    assert (1280, 256) == zone(buddy, DMA).free_lists[8][M]


def test_free_merge_chain():
    """Freeing a2 merges 1152 with 1024 and then 1280 into 1024 (o9), stopping at the zone edge."""
    # free a3 1280 -> [8] = [1280, 256]; free a1 1024 (o7): buddy 1152 allocated, higher buddy
    # 1280 free -> tail of [7]; free a2 1152: +1024 (o7) -> 1024 (o8); +1280 (o8) -> 1024 (o9);
    # buddy 1536 is in DMA32 -> stop; order 9 is not < MAX_ORDER-2 -> head of [9] = [1024, 512].
    buddy = dma_chain()
    results = free_each(buddy, [1280], 8) + free_each(buddy, [1024, 1152], 7)
    z = zone(buddy, DMA)
    expected_lists = {(9, M): (1024, 512), (8, M): (256,)}
    merged = buddy.page(1024)
    absorbed = [buddy.page(pfn).mapcount for pfn in (1152, 1280)]
    expected = ([0, 0, 0], free_lists(expected_lists), nr_free(expected_lists), 1280,
                (PAGE_BUDDY_MAPCOUNT_VALUE, 9), [-1, -1])
    actual = (results, z.free_lists, z.nr_free, z.nr_free_pages,
              (merged.mapcount, merged.private), absorbed)
    assert expected == actual


def test_free_everything_restores_dma_boot_layout():
    """Freeing a1..a5 merges the DMA zone back into 0 (o10) and 1024 (o9)."""
    # After the merge chain: free a4 0 (o7) -> tail of [7] (256 free at o8); free a5 128:
    # +0 (o7) -> 0 (o8); +256 (o8) -> 0 (o9); +512 (o9) -> 0 (o10): head of [10].
    buddy = dma_chain()
    free_each(buddy, [1280], 8)
    free_each(buddy, [1024, 1152, 0, 128], 7)
    z = zone(buddy, DMA)
    assert (free_lists(BOOT_LISTS[DMA]), 1536) == (z.free_lists, z.nr_free_pages)


# ---------------------------------------------------------------------------------------------
# per-cpu lists: free_hot_cold_page, free_pcppages_bulk, cold allocation, drain_pages
# ---------------------------------------------------------------------------------------------


def test_pcp_free_reaching_high_frees_batch():
    """The twelfth hot free reaches high = 12 and sends batch = 2 tail pages to the buddy."""
    # Allocate 2560..2571 (pcp ends empty), free them in order: each goes to the head of the
    # MOVABLE list, so it reads [2571..2560].  At count 12 free_pcppages_bulk(2): round-robin
    # starts at MOVABLE (batch_free 1) and frees the tail 2560 (buddy 2561 is on the pcp, higher
    # buddy 2562 busy -> head of [0]); RECLAIMABLE and UNMOVABLE are empty, so batch_free reaches
    # 3 back at MOVABLE and 2561 follows, merging with 2560 into 2560 (o1) (2562 still busy).
    buddy = tiny()
    pfns = alloc_each(buddy, HUM, 0, 12)
    results = free_each(buddy, pfns, 0)
    expected_lists = {(1, M): (2560,), (2, M): (2572,), (4, M): (2576,), (5, M): (2592,),
                      (6, M): (2624,), (7, M): (2688,), (8, M): (2816,), (10, M): (3072,)}
    z = zone(buddy, NORMAL)
    expected = ([0] * 12, (10, ((), tuple(range(2571, 2561, -1)), ())),
                free_lists(expected_lists), 1526)
    assert expected == (results, pcp(buddy, NORMAL), z.free_lists, z.nr_free_pages)


def pcp_three_lists() -> tuple[RefBuddy, list[int]]:
    """tiny with one page from each pcp type allocated, plus 2560..2567 (MOVABLE)."""
    buddy = tiny()
    pfns = alloc_seq(buddy, [(GFP_KERNEL, 0), (GFP_TEMPORARY, 0)] + [(HUM, 0)] * 8)
    return buddy, pfns


def test_pcp_bulk_free_round_robin():
    """free_pcppages_bulk takes one page each from MOVABLE then RECLAIMABLE, list tails first."""
    # Allocations: 3072 (U; pcp U [3073]), 3584 (R; pcp R [3585]), 2560..2567 (M; pcp M empty).
    # Free 2560..2567 -> M [2567..2560] (count 10); free 3072 -> U [3072, 3073] (11);
    # free 3584 -> R [3584, 3585] (12 = high) -> bulk(2): migratetype starts at 0 and is
    # incremented first, so MOVABLE gives its tail 2560 (buddy 2561 on pcp, higher buddy 2562
    # busy -> head of [0]M) and RECLAIMABLE gives its tail 3585 (buddy 3584 on pcp; higher buddy
    # 3586 is a free o1 RECLAIMABLE block -> tail of [0]R).  UNMOVABLE keeps both pages.
    buddy, pfns = pcp_three_lists()
    results = free_each(buddy, pfns[2:] + pfns[:2], 0)
    z = zone(buddy, NORMAL)
    expected = ([3072, 3584, *range(2560, 2568)], [0] * 10,
                (10, ((3072, 3073), tuple(range(2567, 2560, -1)), (3584,))),
                ((2560,), (3585,)), 1526)
    actual = (pfns, results, pcp(buddy, NORMAL), (z.free_lists[0][M], z.free_lists[0][R]),
              z.nr_free_pages)
    assert expected == actual


def test_pcp_bulk_free_skipped_list_raises_batch_free():
    """An empty MOVABLE list makes RECLAIMABLE give up two pages in one turn."""
    # Allocate 3072..3077 (U) and 3584..3589 (R; 3584 stolen at order 9, pageblock 7 -> R).
    # Free the U pages -> U [3077..3072] (6), then the R pages -> R [3589..3584] (12 = high).
    # bulk(2): MOVABLE is empty (batch_free 1), RECLAIMABLE is reached with batch_free 2 and
    # gives its tail 3584 and then 3585, which merge into 3584 (o1) ahead of 3590 on [1]R
    # (higher buddy 3588 is on the pcp -> head).  UNMOVABLE keeps all six pages.
    buddy = tiny()
    kernel = alloc_each(buddy, GFP_KERNEL, 0, 6)
    temporary = alloc_each(buddy, GFP_TEMPORARY, 0, 6)
    free_each(buddy, kernel + temporary, 0)
    z = zone(buddy, NORMAL)
    expected = (list(range(3072, 3078)), list(range(3584, 3590)),
                (10, (tuple(range(3077, 3071, -1)), (), (3589, 3588, 3587, 3586))),
                (3584, 3590), ())
    actual = (kernel, temporary, pcp(buddy, NORMAL), z.free_lists[1][R], z.free_lists[0][R])
    assert expected == actual


def test_cold_allocation_takes_pcp_tail():
    """A __GFP_COLD allocation takes the last pcp entry while a hot one takes the first."""
    # 2560, 2561 allocated then freed hot -> pcp M [2561, 2560]; cold takes 2560, hot 2561.
    buddy = tiny()
    free_each(buddy, alloc_each(buddy, HUM, 0, 2), 0)
    cold = buddy.alloc_pages(HUM | __GFP_COLD, 0)
    left = pcp(buddy, NORMAL)
    hot = buddy.alloc_pages(HUM, 0)
    assert (2560, (1, ((), (2561,), ())), 2561) == (cold, left, hot)


def test_cold_refill_reverses_the_batch():
    """A cold refill lists the batch in reverse physical order, a hot one in physical order, and
    both hand out the lowest pfn."""
    # small's Normal zone (32768 pages) has batch 7 and its order-10 list starts with 64512,
    # so a refill splits 64512 and takes 64512..64518.  Hot: list_add after the previous page
    # -> [64512..64518], the first is taken.  Cold: list_add_tail before the previous page ->
    # [64518..64512], the last is taken.
    results = []
    for mask in (HUM, HUM | __GFP_COLD):
        buddy = RefBuddy(preset("small"))
        results.append((buddy.alloc_pages(mask, 0), pcp(buddy, NORMAL)))
    expected = [(64512, (6, ((), tuple(range(64513, 64519)), ()))),
                (64512, (6, ((), tuple(range(64518, 64512, -1)), ())))]
    assert expected == results


def test_drain_pages_coalesces_everything():
    """drain_pages returns a CPU's pcp pages and they merge back into the boot blocks."""
    # pcp M [2560, 2561]: bulk takes the tail 2561 first (buddy 2560 on pcp; higher buddy 2562
    # is a free o1 -> tail), then 2560, which merges 2561, 2562, 2564, ... 2816 up to 2560 (o9).
    buddy = tiny()
    free_each(buddy, [buddy.alloc_pages(HUM, 0)], 0)
    before = pcp(buddy, NORMAL)
    result = buddy.drain_pages(0)
    z = zone(buddy, NORMAL)
    expected = ((2, ((), (2560, 2561), ())), 0, (0, ((), (), ())),
                free_lists(BOOT_LISTS[NORMAL]), 1536)
    assert expected == (before, result, pcp(buddy, NORMAL), z.free_lists, z.nr_free_pages)


def test_drain_pages_other_cpu_untouched():
    """drain_pages on CPU 1 leaves CPU 0's pcp pages in place."""
    buddy = tiny()
    buddy.alloc_pages(HUM, 0, cpu=0)
    before = buddy.view()
    result = buddy.drain_pages(1)
    assert (0, before) == (result, buddy.view())


def test_alloc_on_cpu1_uses_cpu1_pcp():
    """An allocation on CPU 1 refills CPU 1's pcp list only."""
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM, 0, cpu=1)
    assert (2560, (0, ((), (), ())), (1, ((), (2561,), ()))) == (
        pfn, pcp(buddy, NORMAL, 0), pcp(buddy, NORMAL, 1))


def test_pcp_high_zero_frees_every_page_at_once():
    """On the small preset's DMA zone (high 0, batch 1) a freed page goes straight back to the
    buddy lists."""
    # small's DMA zone is 4096 pages, zone_batchsize 0 -> high 0, batch 1.  Its order-10 list
    # is [3072, 2048, 1024, 0] (each boot block pushed in front), so the one-page refill splits
    # 3072; the free makes count 1 >= high 0, free_pcppages_bulk(1) merges 3072 back to order 10
    # at the list head, and count drops to 1 - 1 = 0.
    buddy = RefBuddy(preset("small"))
    pfn = buddy.alloc_pages(DMA_MOVABLE, 0)
    after_alloc = pcp(buddy, DMA)
    result = buddy.free_pages(pfn, 0)
    z = zone(buddy, DMA)
    expected = (3072, (0, ((), (), ())), 0, (0, ((), (), ())), (3072, 2048, 1024, 0), 4096)
    assert expected == (pfn, after_alloc, result, pcp(buddy, DMA), z.free_lists[10][M],
                        z.nr_free_pages)


# ---------------------------------------------------------------------------------------------
# watermarks
# ---------------------------------------------------------------------------------------------

# DMA zone driven down to exactly WMARK_MIN (48) with DMA-only MOVABLE allocations:
#   o10 -> 0 (512 left), o8 -> 1024 (256), o7 -> 1280 (128), o6 -> 1408 (64; 1472 o6 left)
#   (each passes LOW 60 in the fast path: 513, 257, 129, 65 > 60)
#   o3 -> 1472: fast path 64-7 = 57 <= 60 fails; slow path MIN 57 > 48 -> 56 left
#   o2 -> 1480 (53 > 48; 52 left), o1 -> 1484 (51 > 48; 50 left)
#   o0: 50 > 48; rmqueue_bulk takes 1486 and 1487 -> 48 left; returns 1486, pcp M [1487].
DMA_TO_MIN = [(DMA_MOVABLE, 10), (DMA_MOVABLE, 8), (DMA_MOVABLE, 7), (DMA_MOVABLE, 6),
              (DMA_MOVABLE, 3), (DMA_MOVABLE, 2), (DMA_MOVABLE, 1), (DMA_MOVABLE, 0)]


def dma_at_min() -> RefBuddy:
    """tiny with the DMA zone holding exactly 48 free pages and 1487 on CPU 0's pcp list."""
    buddy = tiny()
    alloc_seq(buddy, DMA_TO_MIN)
    return buddy


def test_dma_at_min_setup():
    """The DMA allocations return 0, 1024, 1280, 1408, 1472, 1480, 1484, 1486 and leave 48."""
    buddy = tiny()
    pfns = alloc_seq(buddy, DMA_TO_MIN)
    z = zone(buddy, DMA)
    expected = ([0, 1024, 1280, 1408, 1472, 1480, 1484, 1486], 48, (1, ((), (1487,), ())), 0)
    assert expected == (pfns, z.nr_free_pages, pcp(buddy, DMA), buddy.view().alloc_warnings)


def test_watermark_free_equal_to_min_fails():
    """With free == min + reserve the strict test fails even though a page sits on the pcp."""
    # fast path: 48 <= LOW 60; slow path: 48 <= MIN 48 + lowmem_reserve[0] 0 -> NULL and one
    # warn_alloc_failed report; the pcp page is never reached because the check comes first.
    buddy = dma_at_min()
    pfn = buddy.alloc_pages(DMA_MOVABLE, 0)
    expected = (None, 1, 48, (1, ((), (1487,), ())))
    assert expected == (pfn, buddy.view().alloc_warnings, zone(buddy, DMA).nr_free_pages,
                        pcp(buddy, DMA))


def test_watermark_one_page_above_min_passes():
    """One more free page (min + reserve + 1) lets the same allocation through."""
    # drain_pages(0) returns 1487 to [0]M (49 free); slow path 49 > 48; rmqueue_bulk takes
    # 1487 and then splits 1488 (o4) for 1488; the hot allocation returns 1487.
    buddy = dma_at_min()
    buddy.drain_pages(0)
    free_before = zone(buddy, DMA).nr_free_pages
    pfn = buddy.alloc_pages(DMA_MOVABLE, 0)
    assert (49, 1487, (1, ((), (1488,), ())), 0) == (
        free_before, pfn, pcp(buddy, DMA), buddy.view().alloc_warnings)


def test_watermark_gfp_high_halves_min():
    """__GFP_HIGH (ALLOC_HIGH) lowers the slow-path minimum to 48 - 24 = 24, so 48 free pass."""
    buddy = dma_at_min()
    assert 1487 == buddy.alloc_pages(DMA_MOVABLE | __GFP_HIGH, 0)


def test_watermark_gfp_atomic_harder():
    """__GFP_ATOMIC without reclaim (ALLOC_HARDER) lowers the minimum to 48 - 12 = 36."""
    buddy = dma_at_min()
    mask = GFP_NOWAIT | __GFP_ATOMIC | __GFP_DMA | __GFP_MOVABLE
    assert (1487, 0) == (buddy.alloc_pages(mask, 0), buddy.view().alloc_warnings)


def test_watermark_memalloc_ignores_watermarks():
    """__GFP_MEMALLOC (ALLOC_NO_WATERMARKS) takes the pcp page at 48 free without a warning."""
    buddy = dma_at_min()
    pfn = buddy.alloc_pages(DMA_MOVABLE | gfp.__GFP_MEMALLOC, 0)
    assert (1487, 0) == (pfn, buddy.view().alloc_warnings)


def test_watermark_nomemalloc_overrides_memalloc():
    """__GFP_NOMEMALLOC cancels __GFP_MEMALLOC, so the allocation fails at MIN."""
    buddy = dma_at_min()
    pfn = buddy.alloc_pages(DMA_MOVABLE | gfp.__GFP_MEMALLOC | gfp.__GFP_NOMEMALLOC, 0)
    assert (None, 1) == (pfn, buddy.view().alloc_warnings)


def test_atomic_with_direct_reclaim_loses_harder():
    """__GFP_ATOMIC with __GFP_DIRECT_RECLAIM warns, is stripped of __GFP_ATOMIC and fails at
    MIN."""
    # [4.6: __alloc_pages_slowpath] WARN_ON_ONCE((gfp & (ATOMIC|DIRECT_RECLAIM)) == both) then
    # gfp &= ~__GFP_ATOMIC: no ALLOC_HARDER, 48 <= 48 fails; warn_alloc_failed is the second
    # report.
    buddy = dma_at_min()
    pfn = buddy.alloc_pages(DMA_MOVABLE | __GFP_ATOMIC, 0)
    assert (None, 2) == (pfn, buddy.view().alloc_warnings)


def test_nofail_without_reclaim_warns_twice():
    """A failing __GFP_NOFAIL allocation that cannot reclaim reports the NOFAIL misuse and the
    failure."""
    # 4.6: if (!can_direct_reclaim) { WARN_ON_ONCE(gfp_mask & __GFP_NOFAIL); goto nopage; }
    # and nopage: warn_alloc_failed() -> two reports.
    buddy = dma_at_min()
    pfn = buddy.alloc_pages(GFP_NOWAIT | gfp.__GFP_NOFAIL | __GFP_DMA | __GFP_MOVABLE, 0)
    assert (None, 2) == (pfn, buddy.view().alloc_warnings)


def test_nofail_high_order_warns():
    """An order-2 __GFP_NOFAIL allocation succeeds but reports the NOFAIL misuse once."""
    buddy = tiny()
    pfn = buddy.alloc_pages(GFP_KERNEL | gfp.__GFP_NOFAIL | __GFP_MOVABLE, 2)
    assert (2560, 1) == (pfn, buddy.view().alloc_warnings)


def watermark_zone(free: int, reserved_highatomic: int = 0) -> Zone:
    """A stand-alone DMA32-like zone: marks 32/40/48, lowmem_reserve (0, 0, 6, 6)."""
    geometry = ZoneGeometry(index=1, name="DMA32", start_pfn=1536, end_pfn=2560,
                            managed_pages=1024, watermark=(32, 40, 48),
                            lowmem_reserve=(0, 0, 6, 6), pcp_high=12, pcp_batch=2)
    z = Zone(geometry=geometry, pcp=[])
    z.nr_free_pages = free
    z.nr_reserved_highatomic = reserved_highatomic
    return z


def with_block(z: Zone, order: int, migratetype: int) -> Zone:
    """Put one (notional) free block of this order on a free list."""
    z.free_area[order][migratetype].add_head(1536)
    z.nr_free[order] += 1
    return z


def pass_fail_edge(free: int, mark: int, classzone: int, flags: int, **kw) -> tuple[bool, bool]:
    """__zone_watermark_ok for order 0 at free and at free + 1."""
    return tuple(zone_watermark_ok(watermark_zone(f, **kw), 0, mark, classzone, flags)
                 for f in (free, free + 1))


@pytest.mark.parametrize(("mark", "classzone", "flags", "edge"), [
    (32, 2, 0, 38),                         # free <= 32 + 6 fails
    (32, 1, 0, 32),                         # classzone DMA32: reserve 0
    (32, 2, ALLOC_HIGH, 22),                # min -= 32/2 -> 16; 16 + 6
    (32, 2, ALLOC_HARDER, 30),              # min -= 32/4 -> 24; 24 + 6
    (32, 2, ALLOC_HIGH | ALLOC_HARDER, 18),  # 16 - 16/4 = 12; 12 + 6
    (45, 2, ALLOC_HIGH, 29),                # 45 - 22 = 23 (min -= min/2 rounds the cut down)
    (45, 2, ALLOC_HARDER, 40),              # 45 - 11 = 34
    (45, 2, ALLOC_HIGH | ALLOC_HARDER, 24),  # 23 - 5 = 18
])
def test_watermark_edge(mark, classzone, flags, edge):
    """__zone_watermark_ok fails at free == reduced min + reserve and passes one page above."""
    assert (False, True) == pass_fail_edge(edge, mark, classzone, flags)


@pytest.mark.parametrize(("flags", "edge"), [
    (0, 38 + 512),       # ordinary callers lose the 512 reserved pages
    (ALLOC_HARDER, 30),  # ALLOC_HARDER callers may use them
])
def test_watermark_highatomic_reserve(flags, edge):
    """nr_reserved_highatomic is subtracted from free pages unless ALLOC_HARDER."""
    assert (False, True) == pass_fail_edge(edge, 32, 2, flags, reserved_highatomic=512)


def test_watermark_high_order_subtracts_block():
    """An order-2 check first removes 2^2 - 1 = 3 pages from the free count."""
    actual = tuple(zone_watermark_ok(with_block(watermark_zone(f), 2, M), 2, 32, 2, 0)
                   for f in (41, 42))
    assert (False, True) == actual


def test_watermark_high_order_needs_a_block():
    """An order-2 check fails when no free block of order >= 2 exists, however many pages."""
    actual = (zone_watermark_ok(with_block(watermark_zone(1000), 1, M), 2, 32, 2, 0),
              zone_watermark_ok(with_block(watermark_zone(1000), 3, M), 2, 32, 2, 0))
    assert (False, True) == actual


def test_watermark_high_order_highatomic_block_needs_harder():
    """A block only on the HIGHATOMIC list satisfies a high-order check only for ALLOC_HARDER."""
    actual = (zone_watermark_ok(with_block(watermark_zone(1000), 3, H), 2, 32, 2, 0),
              zone_watermark_ok(with_block(watermark_zone(1000), 3, H), 2, 32, 2, ALLOC_HARDER))
    assert (False, True) == actual


# ---------------------------------------------------------------------------------------------
# lowmem_reserve and the zonelist walk
# ---------------------------------------------------------------------------------------------

# Fill DMA to 64 free (o10, o8, o7, o6 as above; every later classzone-Normal check of DMA
# needs > 60 + 10 and fails), then GFP_HIGHUSER_MOVABLE (classzone Normal) blocks.  The fair
# pass sends each to the first zone whose batch is not depleted and that passes LOW + reserve;
# when that pass finds nothing and skipped at least one depleted zone, reset_alloc_batches
# refills DMA..Normal and the walk is repeated without ALLOC_FAIR:
#   H1 o10: Normal (513 > 60) -> 3072; Normal 512, depleted
#   H2 o9:  Normal skipped; DMA32 513 > 40+6 -> 2048 (head of [2048, 1536]); DMA32 512
#   H3 o8:  all depleted -> reset -> Normal 257 > 60 -> 2560 (2816 o8 left); Normal 256
#   H4 o8:  Normal skipped; DMA32 -> 1536 (1792 o8 left); DMA32 256
#   H5 o7:  Normal, DMA32 skipped, DMA fails -> reset -> Normal -> 2816; Normal 128
#   H6 o7:  DMA32 -> 1792; DMA32 128
#   H7 o6:  reset -> Normal -> 2944; Normal 64 (3008 o6)
#   H8 o6:  DMA32 -> 1920; DMA32 64 (1984 o6)
#   H9 o4:  reset -> Normal 64-15 = 49 <= 60 fails; DMA32 49 > 46 -> 1984; DMA32 48
#   H10 o2: Normal (batch refilled) 64-3 = 61 > 60 -> 3008; Normal 60
LOWMEM_SETUP = [*DMA_TO_MIN[:4], (HUM, 10), (HUM, 9), (HUM, 8), (HUM, 8), (HUM, 7), (HUM, 7),
                (HUM, 6), (HUM, 6), (HUM, 4), (HUM, 2)]
LOWMEM_PFNS = [0, 1024, 1280, 1408, 3072, 2048, 2560, 1536, 2816, 1792, 2944, 1920, 1984, 3008]


def lowmem_state(tight: bool) -> RefBuddy:
    """Normal at 60 (fails LOW), DMA32 at 48 or, if tight, 46 (<= LOW 40 + reserve 6), DMA at
    64 or, if tight, 128 after freeing 1408 (o6)."""
    buddy = tiny()
    alloc_seq(buddy, LOWMEM_SETUP)
    if tight:
        # H11 o1: Normal 59 fails, DMA32 skipped, DMA fails -> reset -> DMA32 47 > 46 -> 2000
        # (2008 o3, 2004 o2, 2002 o1 left); DMA32 46.  Then 1408 (o6) merges with 1472 into
        # 1408 (o7): DMA 128.  Batches now DMA 12, DMA32 6, Normal 12, none depleted.
        buddy.alloc_pages(HUM, 1)
        buddy.free_pages(1408, 6)
    return buddy


def test_lowmem_setup():
    """The zone-filling allocations land where the fair pass and the watermarks put them."""
    buddy = tiny()
    pfns = alloc_seq(buddy, LOWMEM_SETUP)
    free = [z.nr_free_pages for z in buddy.view().zones[:3]]
    assert (LOWMEM_PFNS, [64, 48, 60]) == (pfns, free)


def test_lowmem_tight_setup():
    """The tight state has DMA 128, DMA32 46, Normal 60 free and no depleted fair batch."""
    buddy = lowmem_state(tight=True)
    zones = buddy.view().zones[:3]
    expected = ([128, 46, 60], [12, 6, 12], [False] * 3, 0)
    actual = ([z.nr_free_pages for z in zones], [z.alloc_batch for z in zones],
              [z.fair_depleted for z in zones], buddy.view().alloc_warnings)
    assert expected == actual


def test_lowmem_gfp_kernel_falls_back_to_dma32():
    """GFP_KERNEL falls back to DMA32 while DMA32 keeps more than LOW + lowmem_reserve[Normal]."""
    # Normal 60 <= 60 fails; DMA32 is fair-depleted and DMA 64 <= 70 fails -> reset; second
    # walk: DMA32 48 > 40 + 6.  UNMOVABLE fallback takes DMA32's largest block 2016 (o5).
    buddy = lowmem_state(tight=False)
    assert 2016 == buddy.alloc_pages(GFP_KERNEL, 0)


def test_lowmem_reserve_pushes_gfp_kernel_to_dma():
    """GFP_KERNEL skips DMA32 at 46 free (46 <= 40 + 6) and takes 1408 from DMA (128 > 70)."""
    # DMA: UNMOVABLE fallback at order 7 takes 1408; only 128 pages of pageblock 2 are free,
    # fewer than 256, so the pageblock keeps MOVABLE; expand leaves 1472..1409 on UNMOVABLE.
    buddy = lowmem_state(tight=True)
    pfn = buddy.alloc_pages(GFP_KERNEL, 0)
    expected_dma = {(6, U): (1472,), (5, U): (1440,), (4, U): (1424,), (3, U): (1416,),
                    (2, U): (1412,), (1, U): (1410,)}
    assert (1408, free_lists(expected_dma), [M] * 8) == (
        pfn, zone(buddy, DMA).free_lists, pageblocks(buddy))


def test_lowmem_reserve_absent_for_dma32_classzone():
    """GFP_KERNEL|__GFP_DMA32 (classzone DMA32, reserve 0) still takes DMA32's 2016 at 46 free."""
    buddy = lowmem_state(tight=True)
    assert 2016 == buddy.alloc_pages(GFP_KERNEL | __GFP_DMA32, 0)


# ---------------------------------------------------------------------------------------------
# fair zone allocation policy
# ---------------------------------------------------------------------------------------------


def test_fair_batch_decreases():
    """Each page allocated from a zone takes one page off its NR_ALLOC_BATCH."""
    buddy = tiny()
    buddy.alloc_pages(HUM, 0)
    z = zone(buddy, NORMAL)
    assert (11, False) == (z.alloc_batch, z.fair_depleted)


def test_fair_depleted_zone_is_skipped():
    """After twelve pages Normal is depleted and the thirteenth page comes from DMA32's 2048."""
    # DMA32's MOVABLE order-9 list is [2048, 1536]; the refill splits the head, 2048.
    buddy = tiny()
    pfns = alloc_each(buddy, HUM, 0, 13)
    zones = buddy.view().zones
    expected = (2048, (0, True), (7, False))
    actual = (pfns[-1], (zones[NORMAL].alloc_batch, zones[NORMAL].fair_depleted),
              (zones[DMA32].alloc_batch, zones[DMA32].fair_depleted))
    assert expected == actual


def test_fair_batches_spread_over_zones():
    """Twelve pages come from Normal, eight from DMA32 and twelve from DMA, in that order."""
    buddy = tiny()
    pfns = alloc_each(buddy, HUM, 0, 32)
    expected = (list(range(2560, 2572)) + list(range(2048, 2056)) + list(range(1024, 1036)),
                [0, 0, 0], [True] * 3)
    zones = buddy.view().zones[:3]
    assert expected == (pfns, [z.alloc_batch for z in zones], [z.fair_depleted for z in zones])


def test_reset_alloc_batches():
    """With every zone depleted the allocator resets all batches and takes Normal's 2572."""
    # reset_alloc_batches(preferred = Normal) refills DMA..Normal with high - low (12, 8, 12)
    # and the rescan without ALLOC_FAIR takes the next Normal page; Movable is untouched.
    buddy = tiny()
    alloc_each(buddy, HUM, 0, 32)
    pfn = buddy.alloc_pages(HUM, 0)
    zones = buddy.view().zones
    expected = (2572, [12, 8, 11, 0], [False] * 4)
    assert expected == (pfn, [z.alloc_batch for z in zones], [z.fair_depleted for z in zones])


# ---------------------------------------------------------------------------------------------
# high-order atomic reserves
# ---------------------------------------------------------------------------------------------

# DMA at 60 free: o10 -> 0, o8 -> 1024, o7 -> 1280, o6 -> 1408, o2 -> 1472 (61 > 60), leaving
# 1476 (o2), 1480 (o3), 1488 (o4), 1504 (o5).
DMA_TO_60 = [*DMA_TO_MIN[:4], (DMA_MOVABLE, 2)]


def dma_highatomic() -> tuple[RefBuddy, int | None]:
    """DMA at 60 free, then one order-1 GFP_ATOMIC|__GFP_DMA allocation."""
    buddy = tiny()
    alloc_seq(buddy, DMA_TO_60)
    return buddy, buddy.alloc_pages(DMA_ATOMIC, 1)


def test_highatomic_reserve_on_order1_atomic():
    """An order-1 GFP_ATOMIC page taken in the slow path reserves its pageblock HIGHATOMIC."""
    # Fast path: 60 - 1 = 59 <= LOW 60 fails (and ALLOC_HARDER is not set there).  Slow path
    # flags MIN|HIGH|HARDER: 48 - 24 = 24, - 6 = 18 < 59.  No HIGHATOMIC block yet, so
    # __rmqueue(UNMOVABLE) falls back at order 5 to 1504; move_freepages_block moves 60 pages
    # (< 256, no retype); expand leaves 1520 (o4), 1512, 1508, 1506 (o1).  Then
    # reserve_highatomic_pageblock: 0 < 1536/100 + 512, pageblock 2 becomes HIGHATOMIC,
    # nr_reserved_highatomic = 512, and every free block of 1024..1535 moves (ascending scan,
    # each list_move to the head) to the HIGHATOMIC lists.
    buddy, pfn = dma_highatomic()
    z = zone(buddy, DMA)
    expected_lists = {(1, H): (1506,), (2, H): (1508, 1476), (3, H): (1512, 1480),
                      (4, H): (1520, 1488)}
    expected = (1504, free_lists(expected_lists), 58, 512, [M, M, H, M, M, M, M, M], 0)
    actual = (pfn, z.free_lists, z.nr_free_pages, z.nr_reserved_highatomic, pageblocks(buddy),
              buddy.view().alloc_warnings)
    assert expected == actual


def test_highatomic_reserve_serves_next_atomic():
    """The next order-1 GFP_ATOMIC page comes straight off the HIGHATOMIC list."""
    # buffered_rmqueue with ALLOC_HARDER tries __rmqueue_smallest(MIGRATE_HIGHATOMIC) first.
    buddy, _ = dma_highatomic()
    pfn = buddy.alloc_pages(DMA_ATOMIC, 1)
    z = zone(buddy, DMA)
    assert (1506, (), 56, 512) == (pfn, z.free_lists[1][H], z.nr_free_pages,
                                   z.nr_reserved_highatomic)


def test_highatomic_reserve_withheld_from_ordinary_callers():
    """An ordinary allocation sees 58 - 512 free pages and fails at MIN."""
    buddy, _ = dma_highatomic()
    pfn = buddy.alloc_pages(DMA_MOVABLE, 0)
    assert (None, 1) == (pfn, buddy.view().alloc_warnings)


def test_highatomic_order0_pages_wait_on_movable_pcp_list():
    """Order-0 pages of a HIGHATOMIC pageblock queue on the MOVABLE pcp list and drain back to
    the HIGHATOMIC free lists."""
    # split 1504 (o1) and free 1504, 1505: free_hot_cold_page records HIGHATOMIC and uses the
    # MOVABLE list -> [1505, 1504].  The drain frees 1504 (higher buddy 1506 free -> tail), then
    # 1505, which merges 1504 with 1506 (o1), 1508 (o2), 1512 (o3), 1520 (o4) into 1504 (o5);
    # 1472 (o5 buddy) is allocated, so it stops; all on the HIGHATOMIC lists.
    buddy, pfn = dma_highatomic()
    results = [buddy.split_page(pfn, 1), *free_each(buddy, [1504, 1505], 0)]
    queued = pcp(buddy, DMA)
    results.append(buddy.drain_pages(0))
    z = zone(buddy, DMA)
    expected_lists = {(2, H): (1476,), (3, H): (1480,), (4, H): (1488,), (5, H): (1504,)}
    expected = ([0] * 4, (2, ((), (1505, 1504), ())), free_lists(expected_lists), 60)
    assert expected == (results, queued, z.free_lists, z.nr_free_pages)


def test_fast_path_atomic_does_not_reserve():
    """An order-1 GFP_ATOMIC page that passes the fast path reserves nothing (no ALLOC_HARDER)."""
    # Fresh tiny: Normal passes LOW; the UNMOVABLE fallback steals 3072 (o10).
    buddy = tiny()
    pfn = buddy.alloc_pages(GFP_ATOMIC, 1)
    assert (3072, 0, [M] * 6 + [U, U]) == (
        pfn, zone(buddy, NORMAL).nr_reserved_highatomic, pageblocks(buddy))


# ---------------------------------------------------------------------------------------------
# invalid orders and masks
# ---------------------------------------------------------------------------------------------


def without_warnings(buddy: RefBuddy):
    """The view with the warning counter zeroed, to check nothing else moved."""
    return attrs.evolve(buddy.view(), alloc_warnings=0)


@pytest.mark.parametrize("order", [11, 12, -1])
def test_invalid_order(order):
    """An order outside 0..10 returns None with one allocation-failure warning."""
    # The fast path's watermark check finds no order >= MAX_ORDER; the slow path's
    # `order >= MAX_ORDER` test (order is unsigned in 4.6, so -1 is huge) warns and fails.
    buddy = tiny()
    before = without_warnings(buddy)
    pfn = buddy.alloc_pages(GFP_KERNEL, order)
    assert (None, 1, before) == (pfn, buddy.view().alloc_warnings, without_warnings(buddy))


@pytest.mark.parametrize("order", [11, -1])
def test_invalid_order_nowarn(order):
    """With __GFP_NOWARN a bad order returns None silently."""
    buddy = tiny()
    before = buddy.view()
    pfn = buddy.alloc_pages(GFP_KERNEL | __GFP_NOWARN, order)
    assert (None, before) == (pfn, buddy.view())


def test_max_order_block_is_allocatable():
    """Order 10 is the largest allocatable order and returns Normal's 3072."""
    assert 3072 == tiny().alloc_pages(HUM, 10)


@pytest.mark.parametrize("mask", [
    GFP_KERNEL | __GFP_DMA | __GFP_DMA32,
    GFP_KERNEL | __GFP_DMA32 | __GFP_HIGHMEM,
    GFP_KERNEL | __GFP_DMA | __GFP_HIGHMEM,
    GFP_KERNEL | __GFP_MOVABLE | __GFP_DMA32 | __GFP_HIGHMEM,
    GFP_KERNEL | __GFP_MOVABLE | __GFP_RECLAIMABLE,
    GFP_KERNEL | __GFP_MOVABLE | __GFP_RECLAIMABLE | __GFP_NOWARN,
])
def test_invalid_gfp_mask(mask):
    """A GFP_ZONE_BAD or MOVABLE|RECLAIMABLE mask returns None and allocates nothing."""
    # 4.6 reaches VM_BUG_ON in gfp_zone / VM_WARN_ON in gfpflags_to_migratetype: one report,
    # which __GFP_NOWARN does not silence.
    buddy = tiny()
    before = without_warnings(buddy)
    pfn = buddy.alloc_pages(mask, 0)
    assert (None, 1, before) == (pfn, buddy.view().alloc_warnings, without_warnings(buddy))


@pytest.mark.parametrize("cpu", [-1, 2])
def test_invalid_alloc_cpu(cpu):
    """An allocation on a CPU that does not exist returns None and changes nothing."""
    buddy = tiny()
    assert (None, True) == refused(buddy, lambda: buddy.alloc_pages(HUM, 0, cpu))


# ---------------------------------------------------------------------------------------------
# refused frees, references and splits
# ---------------------------------------------------------------------------------------------


def busy() -> tuple[RefBuddy, int, int, int]:
    """tiny with an order-0 page p0, a plain order-2 block p2 and a compound order-2 block pc."""
    # p0 = 2560 (pcp keeps 2561); p2: [2]M 2564; pc: [3]M 2568 split, 2572 (o2) left.
    buddy = tiny()
    p0, p2, pc = alloc_seq(buddy, [(HUM, 0), (HUM, 2), (HUM | __GFP_COMP, 2)])
    return buddy, p0, p2, pc


def test_busy_setup():
    """The refusal fixtures allocate 2560, 2564 and the compound 2568."""
    _, p0, p2, pc = busy()
    assert (2560, 2564, 2568) == (p0, p2, pc)


@pytest.mark.parametrize(("args", "expected"), [
    ((2560, 0, -1), EINVAL),   # no such CPU
    ((2560, 0, 2), EINVAL),
    ((2560, -1, 0), EINVAL),   # order outside 0..10
    ((2560, 11, 0), EINVAL),
    ((-1, 0, 0), EINVAL),      # !pfn_valid
    ((4096, 0, 0), EINVAL),
    ((2565, 1, 0), EINVAL),    # VM_BUG_ON_PAGE(page_idx & ((1 << order) - 1))
    ((2566, 2, 0), EINVAL),
    ((3072, 0, 0), EFAULT),    # a free buddy page: put_page_testzero on _count 0
    ((2561, 0, 0), EFAULT),    # a page sitting on the pcp list
    ((2565, 0, 0), EFAULT),    # a tail page of a non-compound block has _count 0
    ((2564, 1, 0), EINVAL),    # 2564 was allocated at order 2
    ((2560, 1, 0), EINVAL),    # 2560 was allocated at order 0
    ((2568, 0, 0), EINVAL),    # the compound head is order 2
])
def test_invalid_free_pages(args, expected):
    """free_pages refuses bad arguments with the spec's errno and changes nothing."""
    buddy, *_ = busy()
    assert (expected, True) == refused(buddy, lambda: buddy.free_pages(*args))


def test_invalid_double_free():
    """Freeing a page twice returns -EFAULT the second time and changes nothing."""
    buddy, p0, _, _ = busy()
    first = buddy.free_pages(p0, 0)
    assert (0, EFAULT, True) == (first, *refused(buddy, lambda: buddy.free_pages(p0, 0)))


@pytest.mark.parametrize(("pfn", "expected"), [
    (-1, EINVAL),
    (4096, EINVAL),
    (3072, EFAULT),   # free page: VM_BUG_ON_PAGE(page_ref_count(page) <= 0)
    (2565, EFAULT),   # tail of the non-compound block p2
])
def test_invalid_get_page(pfn, expected):
    """get_page refuses invalid or unreferenced pages and changes nothing."""
    buddy, *_ = busy()
    assert (expected, True) == refused(buddy, lambda: buddy.get_page(pfn))


@pytest.mark.parametrize(("args", "expected"), [
    ((2560, -1), EINVAL),
    ((2560, 2), EINVAL),
    ((-1, 0), EINVAL),
    ((4096, 0), EINVAL),
    ((3072, 0), EFAULT),   # free page
    ((2565, 0), EFAULT),   # tail of a non-compound block
    ((2564, 0), EINVAL),   # the last reference to a non-compound order-2 block
])
def test_invalid_put_page(args, expected):
    """put_page refuses bad arguments with the spec's errno and changes nothing."""
    buddy, *_ = busy()
    assert (expected, True) == refused(buddy, lambda: buddy.put_page(*args))


@pytest.mark.parametrize(("args", "expected"), [
    ((-1, 0), EINVAL),
    ((4096, 0), EINVAL),
    ((2564, -1), EINVAL),
    ((2564, 11), EINVAL),
    ((2568, 2), EINVAL),   # compound head: VM_BUG_ON_PAGE(PageCompound(page))
    ((2569, 0), EINVAL),   # compound tail
    ((3072, 0), EFAULT),   # free page: VM_BUG_ON_PAGE(!page_count(page))
    ((2564, 1), EINVAL),   # allocated at order 2
])
def test_invalid_split_page(args, expected):
    """split_page refuses bad arguments with the spec's errno and changes nothing."""
    buddy, *_ = busy()
    assert (expected, True) == refused(buddy, lambda: buddy.split_page(*args))


@pytest.mark.parametrize("cpu", [-1, 2])
def test_invalid_drain_pages(cpu):
    """drain_pages on a CPU that does not exist returns -EINVAL and changes nothing."""
    buddy, *_ = busy()
    assert (EINVAL, True) == refused(buddy, lambda: buddy.drain_pages(cpu))


# ---------------------------------------------------------------------------------------------
# split_page, compound pages, references
# ---------------------------------------------------------------------------------------------


def test_split_page_then_free_each():
    """split_page gives each subpage a reference; freeing them at order 0 and draining rebuilds
    the boot layout."""
    # alloc o2 -> 2560 (expand leaves 2564 (o2) .. 2816 (o8)); frees go hot to pcp M
    # [2563, 2562, 2561, 2560]; the drain merges them back into 2560 (o9).
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM, 2)
    split = buddy.split_page(pfn, 2)
    refcounts = list(buddy.page_state().refcount[2560:2564])
    frees = free_each(buddy, range(2560, 2564), 0)
    queued = pcp(buddy, NORMAL)
    buddy.drain_pages(0)
    z = zone(buddy, NORMAL)
    expected = (2560, 0, [1, 1, 1, 1], [0] * 4, (4, ((), (2563, 2562, 2561, 2560), ())),
                free_lists(BOOT_LISTS[NORMAL]), 1536)
    assert expected == (pfn, split, refcounts, frees, queued, z.free_lists, z.nr_free_pages)


def test_compound_page_state():
    """A __GFP_COMP order-2 block has PG_head on its head and its tails point at the head."""
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM | __GFP_COMP, 2)
    state = buddy.page_state()
    expected = (2560, [1 << PG_head, 0, 0, 0], [-1, 2560, 2560, 2560], [1, 0, 0, 0])
    assert expected == (pfn, list(state.flags[2560:2564]), list(state.compound_head[2560:2564]),
                        list(state.refcount[2560:2564]))


def test_compound_freed_through_tail_put_page():
    """get_page and put_page on tail pages count on the head, and the last put frees the block."""
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM | __GFP_COMP, 2)
    results = [buddy.get_page(pfn + 3), buddy.put_page(pfn + 1)]
    held = buddy.page(pfn).refcount
    results.append(buddy.put_page(pfn + 2))
    state = buddy.page_state()
    z = zone(buddy, NORMAL)
    expected = ([0, 0, 0], 1, [0] * 4, [-1] * 4, [0] * 4, free_lists(BOOT_LISTS[NORMAL]), 1536)
    actual = (results, held, list(state.flags[2560:2564]), list(state.compound_head[2560:2564]),
              list(state.refcount[2560:2564]), z.free_lists, z.nr_free_pages)
    assert expected == actual


def test_get_page_keeps_block_until_last_reference():
    """A block with two references survives the first free_pages and is freed by the second."""
    buddy = tiny()
    pfn = buddy.alloc_pages(HUM, 3)
    results = [buddy.get_page(pfn), buddy.free_pages(pfn, 3)]
    still = zone(buddy, NORMAL).nr_free_pages
    results.append(buddy.free_pages(pfn, 3))
    assert ([0, 0, 0], 1528, 1536) == (results, still, zone(buddy, NORMAL).nr_free_pages)


# ---------------------------------------------------------------------------------------------
# full coalescing
# ---------------------------------------------------------------------------------------------

WORKLOAD = [  # (gfp_mask, order, cpu)
    (GFP_KERNEL, 0, 0), (GFP_KERNEL, 0, 1), (HUM, 0, 0), (HUM, 0, 0), (HUM, 0, 1),
    (GFP_TEMPORARY, 0, 1), (HUM, 3, 0), (HUM | __GFP_COMP, 2, 1), (GFP_ATOMIC, 1, 0),
    (GFP_KERNEL | __GFP_DMA, 0, 0), (GFP_KERNEL | __GFP_DMA32 | __GFP_MOVABLE, 4, 1),
    (HUM, 9, 0), (GFP_TEMPORARY, 2, 1), (HUM, 0, 1), (GFP_KERNEL, 5, 0),
]


def test_full_coalescing_after_free_and_drain():
    """Freeing every allocation and draining both CPUs merges memory back into the boot blocks."""
    # Zones never merge across their boundaries, so the result is exactly the six boot blocks
    # whatever migratetype lists they end up on.
    buddy = tiny()
    pfns = [buddy.alloc_pages(mask, order, cpu) for mask, order, cpu in WORKLOAD]
    results = []
    for pfn, (mask, order, cpu) in zip(pfns, WORKLOAD, strict=True):
        if pfn is None:
            continue
        if mask & __GFP_COMP:
            results.append(buddy.put_page(pfn + 1, cpu))
        else:
            results.append(buddy.free_pages(pfn, order, cpu))
    results += [buddy.drain_pages(0), buddy.drain_pages(1)]
    view = buddy.view()
    expected = ([False] * len(WORKLOAD), [0] * (len(WORKLOAD) + 2), BOOT_BLOCKS, list(MANAGED),
                [0] * 8)
    actual = ([pfn is None for pfn in pfns], results, block_set(buddy),
              [z.nr_free_pages for z in view.zones], [p.count for z in view.zones for p in z.pcp])
    assert expected == actual


def test_config_is_the_tiny_preset():
    """The scenarios above assume tiny's 4096 pages, 2 CPUs and override batch 2."""
    cfg: MachineConfig = tiny().config
    assert (4096, 2, 2, 1536, 2560) == (cfg.nr_pages, cfg.nr_cpus, cfg.pcp_batch_override,
                                        cfg.dma_end_pfn, cfg.dma32_end_pfn)
