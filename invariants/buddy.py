"""State invariants of the buddy allocator, BUDDY-I1 .. BUDDY-I12 (``specs/buddy.md``).

Each checker returns the problems it finds, worded so a failure message alone says what broke
and where.  Block-level checks cost O(free blocks); the page-level ones (cost=PAGES) use numpy
over the per-page arrays, so they stay cheap even at 4M pages.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from invariants.ledger import Ledger
from invariants.registry import Cost, state_invariant
from invariants.snapshot import BuddySnapshot
from specs.buddy import PAGE_BUDDY_MAPCOUNT_VALUE, BuddyView, Capability, PG_head, ZoneView
from specs.machine import MAX_ORDER, derive_zones

MAX_PROBLEMS = 8  # report this many instances of one problem, then a count


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]


def pcp_pages(zone: ZoneView) -> Iterator[tuple[int, int]]:
    """(cpu, pfn) of every page on the zone's pcp lists."""
    for cpu, pcp in enumerate(zone.pcp):
        for pfns in pcp.lists:
            for pfn in pfns:
                yield cpu, pfn


def claims(view: BuddyView, ledger: Ledger | None) -> list[tuple[int, int, str]]:
    """Every (start, size, who) claim on memory: free blocks, pcp pages and held blocks."""
    found: list[tuple[int, int, str]] = []
    for zone in view.zones:
        for pfn, order, mt in zone.free_blocks:
            found.append((pfn, 1 << order, f"free order-{order} block (mt {mt}) of {zone.name}"))
        for cpu, pfn in pcp_pages(zone):
            found.append((pfn, 1, f"pcp page of cpu{cpu} in {zone.name}"))
    if ledger is not None:
        for pfn, order in ledger.blocks():
            found.append((pfn, 1 << order, f"held order-{order} block"))
    return found


@state_invariant("BUDDY-I1", "conservation of pages", needs_ledger=True)
def conservation(snap: BuddySnapshot) -> list[str]:
    """Free + pcp + held pages add up to all of memory: nothing leaks, nothing is invented."""
    view, ledger = snap.view, snap.ledger
    assert ledger is not None
    free = sum(zone.nr_free_pages for zone in view.zones)
    on_pcp = sum(pcp.count for zone in view.zones for pcp in zone.pcp)
    held = ledger.nr_pages()
    managed = sum(zone.managed_pages for zone in view.zones)
    if free + on_pcp + held != managed:
        return [f"free {free} + pcp {on_pcp} + held {held} = {free + on_pcp + held}, "
                f"but the zones manage {managed} pages "
                f"({managed - free - on_pcp - held:+d} unaccounted)"]
    return []


def held_arrays(ledger: Ledger | None) -> tuple[np.ndarray, np.ndarray]:
    """(head pfns, orders) of every held block, as arrays (empty without a ledger)."""
    if ledger is None or not ledger.held:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    count = len(ledger.held)
    heads = np.fromiter(ledger.held, dtype=np.int64, count=count)
    orders = np.fromiter((h.order for h in ledger.held.values()), dtype=np.int64, count=count)
    return heads, orders


@state_invariant("BUDDY-I2", "free, pcp and held blocks are disjoint")
def disjointness(snap: BuddySnapshot) -> list[str]:
    """No page is claimed twice: a block handed out twice or freed twice shows up here.

    Complexity: one sort of all claims; descriptions are built only for overlaps found.
    """
    listed = [(pfn, 1 << order) for zone in snap.view.zones for pfn, order, _ in zone.free_blocks]
    listed += [(pfn, 1) for zone in snap.view.zones for _cpu, pfn in pcp_pages(zone)]
    heads, orders = held_arrays(snap.ledger)
    starts = np.concatenate([np.array([c[0] for c in listed], dtype=np.int64), heads])
    ends = starts + np.concatenate([np.array([c[1] for c in listed], dtype=np.int64),
                                    np.left_shift(1, orders)])
    if starts.size < 2:
        return []
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    overlapping = np.flatnonzero(starts[1:] < reach[:-1]) + 1
    if not overlapping.size:
        return []
    who = {start: what for start, _size, what in claims(snap.view, snap.ledger)}
    problems = []
    for k in overlapping[:MAX_PROBLEMS]:
        earlier = int(np.flatnonzero(ends[:k] > starts[k])[-1])
        problems.append(f"pfn {int(starts[k]):#x}: {who.get(int(starts[k]), 'a block')} "
                        f"overlaps {who.get(int(starts[earlier]), 'a block')} at "
                        f"{int(starts[earlier]):#x}")
    if overlapping.size > MAX_PROBLEMS:
        problems.append(f"... and {overlapping.size - MAX_PROBLEMS} more")
    return problems


@state_invariant("BUDDY-I3", "blocks are naturally aligned")
def alignment(snap: BuddySnapshot) -> list[str]:
    """A block of order k starts at a multiple of 2**k: the buddy arithmetic depends on it."""
    problems = []
    for zone in snap.view.zones:
        for pfn, order, _mt in zone.free_blocks:
            if not 0 <= order < MAX_ORDER:
                problems.append(f"free block {pfn:#x} on an order-{order} list")
            elif pfn % (1 << order):
                problems.append(f"free order-{order} block at {pfn:#x} is misaligned")
    if snap.ledger is not None:
        for pfn, order in snap.ledger.blocks():
            if pfn % (1 << order):
                problems.append(f"held order-{order} block at {pfn:#x} is misaligned")
    return _capped(problems)


@state_invariant("BUDDY-I4", "blocks lie inside their zone")
def zone_containment(snap: BuddySnapshot) -> list[str]:
    """Zones never share a block: DMA pages must stay reachable for DMA callers."""
    problems = []
    for zone in snap.view.zones:
        for pfn, order, _mt in zone.free_blocks:
            if not zone.start_pfn <= pfn <= pfn + (1 << order) <= zone.end_pfn:
                problems.append(f"{zone.name} [{zone.start_pfn:#x}, {zone.end_pfn:#x}) lists "
                                f"order-{order} block {pfn:#x}-{pfn + (1 << order):#x}")
        for cpu, pfn in pcp_pages(zone):
            if not zone.start_pfn <= pfn < zone.end_pfn:
                problems.append(f"{zone.name} cpu{cpu} pcp list holds pfn {pfn:#x}")
    heads, orders = held_arrays(snap.ledger)
    if heads.size:
        zones = [z for z in snap.view.zones if z.managed_pages]
        zone_starts = np.array([z.start_pfn for z in zones], dtype=np.int64)
        zone_ends = np.array([z.end_pfn for z in zones], dtype=np.int64)
        slot = np.clip(np.searchsorted(zone_starts, heads, side="right") - 1, 0, None)
        outside = (heads < zone_starts[slot]) | (heads + np.left_shift(1, orders) > zone_ends[slot])
        for pfn, order in zip(heads[outside][:MAX_PROBLEMS], orders[outside], strict=False):
            problems.append(f"held order-{int(order)} block {int(pfn):#x}-"
                            f"{int(pfn) + (1 << int(order)):#x} spans zones")
    return _capped(problems)


@state_invariant("BUDDY-I5", "free buddies are always merged")
def maximal_coalescing(snap: BuddySnapshot) -> list[str]:
    """Two free buddies of one order in one zone would have been merged by __free_one_page."""
    problems = []
    for zone in snap.view.zones:
        heads = {(pfn, order) for pfn, order, _mt in zone.free_blocks}
        for pfn, order in sorted(heads):
            buddy = pfn ^ (1 << order)
            if order < MAX_ORDER - 1 and pfn < buddy and (buddy, order) in heads:
                problems.append(f"{zone.name}: order-{order} buddies {pfn:#x} and {buddy:#x} "
                                f"are both free and unmerged")
    return _capped(problems)


@state_invariant("BUDDY-I6", "nr_free counts the free lists")
def nr_free_counts(snap: BuddySnapshot) -> list[str]:
    """free_area[k].nr_free is what the watermark check reads; it must match the lists."""
    problems = []
    for zone in snap.view.zones:
        for order, lists in enumerate(zone.free_lists):
            listed = sum(map(len, lists))
            if zone.nr_free[order] != listed:
                problems.append(f"{zone.name} order {order}: nr_free {zone.nr_free[order]} "
                                f"but {listed} blocks listed")
    return problems


@state_invariant("BUDDY-I7", "NR_FREE_PAGES counts the free blocks")
def nr_free_pages(snap: BuddySnapshot) -> list[str]:
    """NR_FREE_PAGES drives every watermark decision; pcp pages are not part of it."""
    problems = []
    for zone in snap.view.zones:
        listed = sum(sum(map(len, lists)) << order
                     for order, lists in enumerate(zone.free_lists))
        if zone.nr_free_pages != listed:
            problems.append(f"{zone.name}: NR_FREE_PAGES {zone.nr_free_pages} but the free "
                            f"lists hold {listed} pages")
    return problems


@state_invariant("BUDDY-I8", "pcp accounting", needs=[Capability.PCP])
def pcp_accounting(snap: BuddySnapshot) -> list[str]:
    """pcp->count decides when a free drains a batch, so it must match its lists; a zone
    whose high is 0 drains every free at once and so never keeps a page.

    There is no upper bound in 4.6: a refill after a free may leave count above high.
    """
    problems = []
    for zone in snap.view.zones:
        for cpu, pcp in enumerate(zone.pcp):
            listed = sum(len(pfns) for pfns in pcp.lists)
            if pcp.count != listed:
                problems.append(f"{zone.name} cpu{cpu}: count {pcp.count}, lists hold {listed}")
            if pcp.high == 0 and pcp.count:
                problems.append(f"{zone.name} cpu{cpu}: high is 0 but {pcp.count} pages wait "
                                f"on the lists")
    return problems


@state_invariant("BUDDY-I9", "struct page state matches the lists",
                 needs=[Capability.PAGE_STATE], cost=Cost.PAGES)
def page_state(snap: BuddySnapshot) -> list[str]:
    """The per-page markers (_count, _mapcount sentinel, private order) agree with the lists
    that claim the page: the second path to the same facts."""
    refcount = snap.array("refcount")
    mapcount = snap.array("mapcount")
    private = snap.array("private")
    nr_pages = snap.view.nr_pages
    head_order = np.full(nr_pages, -1, dtype=np.int16)
    unheld = np.zeros(nr_pages, dtype=bool)  # free-block tails and pcp pages
    for zone in snap.view.zones:
        for pfn, order, _mt in zone.free_blocks:
            head_order[pfn] = order
            unheld[pfn + 1: pfn + (1 << order)] = True
        for _cpu, pfn in pcp_pages(zone):
            unheld[pfn] = True
    heads = head_order >= 0
    problems = []

    def report(mask: np.ndarray, what: str) -> None:
        for pfn in np.flatnonzero(mask)[:MAX_PROBLEMS]:
            problems.append(f"pfn {int(pfn):#x}: {what} (refcount {int(refcount[pfn])}, "
                            f"mapcount {int(mapcount[pfn])}, private {int(private[pfn])})")

    report(heads & (refcount != 0), "free block head with a reference")
    report(heads & (mapcount != PAGE_BUDDY_MAPCOUNT_VALUE), "free block head without PageBuddy")
    report(heads & (private != head_order), "free block head whose private is not its order")
    report(unheld & (refcount != 0), "free or pcp page with a reference")
    report(unheld & (mapcount != -1), "free-block tail or pcp page with _mapcount != -1")
    report(~heads & (mapcount == PAGE_BUDDY_MAPCOUNT_VALUE), "PageBuddy on a page no list holds")
    if snap.ledger is not None:
        held_head = np.zeros(nr_pages, dtype=bool)
        held_head[np.fromiter(snap.ledger.held, dtype=np.int64,
                              count=len(snap.ledger.held))] = True
        report(held_head & (refcount < 1), "held block head without a reference")
    return _capped(problems)


def largest_aligned_blocks(start: int, end: int) -> set[tuple[int, int]]:
    """The unique fully merged decomposition of [start, end) into buddy blocks."""
    blocks = set()
    pfn = start
    while pfn < end:
        order = MAX_ORDER - 1 if pfn == 0 else min(MAX_ORDER - 1, (pfn & -pfn).bit_length() - 1)
        while pfn + (1 << order) > end:
            order -= 1
        blocks.add((pfn, order))
        pfn += 1 << order
    return blocks


@state_invariant("BUDDY-I10", "everything free means fully merged", needs_ledger=True)
def full_coalescing(snap: BuddySnapshot) -> list[str]:
    """With nothing held and the pcp lists empty, each zone must be back to its largest blocks:
    a missed merge anywhere leaves a smaller block behind."""
    if snap.ledger is None or snap.ledger.held:
        return []
    if any(pcp.count or any(pcp.lists) for zone in snap.view.zones for pcp in zone.pcp):
        return []
    problems = []
    for zone in snap.view.zones:
        actual = {(pfn, order) for pfn, order, _mt in zone.free_blocks}
        expected = largest_aligned_blocks(zone.start_pfn, zone.end_pfn)
        for pfn, order in sorted(expected - actual):
            problems.append(f"{zone.name}: order-{order} block {pfn:#x} is not free as one block")
        for pfn, order in sorted(actual - expected):
            problems.append(f"{zone.name}: unexpected free order-{order} block {pfn:#x}")
    return _capped(problems)


@state_invariant("BUDDY-I11", "zone geometry follows 4.6's formulas",
                 needs=[Capability.WATERMARKS])
def zone_geometry(snap: BuddySnapshot) -> list[str]:
    """Watermarks, lowmem reserves and pcp sizes decide every allocation; they must be the
    numbers 4.6 computes at boot for this machine."""
    problems = []
    expected_zones = derive_zones(snap.config)
    if len(snap.view.zones) != len(expected_zones):
        return [f"{len(snap.view.zones)} zones, expected {len(expected_zones)}"]
    for zone, geo in zip(snap.view.zones, expected_zones, strict=True):
        low_min, low, high = zone.watermark
        if not low_min <= low <= high:
            problems.append(f"{zone.name}: watermarks {zone.watermark} are not ordered")
        if (zone.start_pfn, zone.end_pfn, zone.managed_pages) != (
                geo.start_pfn, geo.end_pfn, geo.managed_pages):
            problems.append(f"{zone.name}: span [{zone.start_pfn:#x}, {zone.end_pfn:#x}) "
                            f"managed {zone.managed_pages}, expected [{geo.start_pfn:#x}, "
                            f"{geo.end_pfn:#x}) managed {geo.managed_pages}")
        if not geo.populated:
            continue
        if zone.watermark != geo.watermark:
            problems.append(f"{zone.name}: watermarks {zone.watermark}, 4.6 gives {geo.watermark}")
        if zone.lowmem_reserve != geo.lowmem_reserve:
            problems.append(f"{zone.name}: lowmem_reserve {zone.lowmem_reserve}, 4.6 gives "
                            f"{geo.lowmem_reserve}")
        if Capability.PCP in snap.capabilities:
            for cpu, pcp in enumerate(zone.pcp):
                if (pcp.high, pcp.batch) != (geo.pcp_high, geo.pcp_batch):
                    problems.append(f"{zone.name} cpu{cpu}: pcp high/batch {pcp.high}/"
                                    f"{pcp.batch}, 4.6 gives {geo.pcp_high}/{geo.pcp_batch}")
    return _capped(problems)


@state_invariant("BUDDY-I12", "compound pages are well formed", needs_ledger=True,
                 needs=[Capability.PAGE_STATE, Capability.COMPOUND], cost=Cost.PAGES)
def compound_pages(snap: BuddySnapshot) -> list[str]:
    """Tails point at a held compound head that contains them, and PG_head marks only held
    compound heads: put_page on a tail page relies on both."""
    assert snap.ledger is not None
    flags = snap.array("flags")
    compound_head = snap.array("compound_head")
    held = snap.ledger.held
    problems = []
    # Every held compound block, as arrays: head pfn and order.
    compound = [(pfn, h.order) for pfn, h in held.items() if h.compound]
    heads = np.array([pfn for pfn, _ in compound], dtype=np.int64)
    orders = np.array([order for _, order in compound], dtype=np.int64)
    tails = np.flatnonzero(compound_head >= 0)
    claimed = compound_head[tails].astype(np.int64)
    # A tail is fine when its claimed head is a held compound head whose block contains it.
    sorter = np.argsort(heads)
    heads, orders = heads[sorter], orders[sorter]
    slot = np.searchsorted(heads, claimed)
    found = slot < heads.size
    good = np.zeros(tails.size, dtype=bool)
    good[found] = ((heads[slot[found]] == claimed[found]) & (tails[found] > claimed[found])
                   & (tails[found] < claimed[found] + (1 << orders[slot[found]])))
    for pfn in tails[~good][:MAX_PROBLEMS]:
        problems.append(f"pfn {int(pfn):#x} claims compound head {int(compound_head[pfn]):#x}, "
                        f"which is not a held compound block containing it")
    for pfn in np.flatnonzero(flags & (1 << PG_head)):
        owner = held.get(int(pfn))
        if owner is None or not owner.compound:
            problems.append(f"pfn {int(pfn):#x} has PG_head but is not a held compound head")
    for head, owner in held.items():
        if owner.compound and owner.order:
            if not flags[head] & (1 << PG_head):
                problems.append(f"held compound block {head:#x} lacks PG_head")
            members = compound_head[head + 1: head + (1 << owner.order)]
            if (members != head).any():
                problems.append(f"held compound block {head:#x} has tails not pointing at it")
    return _capped(problems)
