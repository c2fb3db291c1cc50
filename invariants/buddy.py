"""State invariants of the buddy allocator, BUDDY-I1 .. BUDDY-I12 (``specs/buddy.md``).

Each checker returns the problems it finds, worded so a failure message alone says what broke
and where.  Checkers run on any implementation and are vectorised so that they stay cheap at
millions of pages and hundreds of thousands of held blocks: list-level checks work on the
arrays a snapshot makes of the view's lists and the ledger (O(blocks) numpy), and the
page-level ones (cost=PAGES) walk ``page_state()`` a chunk at a time
(:meth:`BuddySnapshot.chunks`), so their temporaries are chunk-sized.  Python loops run only
over the problems found, to word them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from invariants.ledger import Ledger
from invariants.registry import Cost, state_invariant
from invariants.snapshot import BuddySnapshot
from specs.buddy import PAGE_BUDDY_MAPCOUNT_VALUE, BuddyView, Capability, PG_head, ZoneView
from specs.machine import MAX_ORDER, derive_zones

MAX_PROBLEMS = 8  # report this many instances of one problem, then a count

Int64s = npt.NDArray[np.int64]


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]


class Findings:
    """Problems of several kinds, gathered in any order (chunk by chunk), reported kind by
    kind: at most MAX_PROBLEMS worded instances in all, then how many more there were."""

    def __init__(self) -> None:
        self._kinds: dict[str, list[str]] = {}
        self._counts: dict[str, int] = {}

    def add(self, kind: str, where: npt.NDArray[np.integer], word: Callable[[int], str]) -> None:
        """Instances of one kind: word(value) for values of where, worded now, only the first
        few."""
        if not where.size:
            return
        found = self._kinds.setdefault(kind, [])
        room = MAX_PROBLEMS - len(found)
        found.extend(word(int(i)) for i in where[:max(room, 0)])
        self._counts[kind] = self._counts.get(kind, 0) + int(where.size)

    def report(self) -> list[str]:
        """The worded problems, kind by kind, capped."""
        lines = [line for found in self._kinds.values() for line in found]
        total = sum(self._counts.values())
        shown = lines[:MAX_PROBLEMS]
        if total > len(shown):
            shown.append(f"... and {total - len(shown)} more")
        return shown


def pcp_pages(zone: ZoneView) -> Iterator[tuple[int, int]]:
    """(cpu, pfn) of every page on the zone's pcp lists."""
    for cpu, pcp in enumerate(zone.pcp):
        for pfns in pcp.lists:
            for pfn in pfns:
                yield cpu, pfn


def claims(view: BuddyView, ledger: Ledger | None) -> list[tuple[int, int, str]]:
    """Every (start, size, who) claim on memory: free blocks, pcp pages and held blocks.
    Only used to word a failure, so plain Python."""
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


def _sizes(orders: Int64s) -> Int64s:
    return np.left_shift(np.int64(1), orders)


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


def _sorted_claims(starts: Int64s, orders: Int64s) -> tuple[Int64s, Int64s]:
    """(starts, ends) of the claims sorted by start (then size).

    Sorting one key, start * 2**k + order, is about four times faster than an argsort; the
    argsort is kept for orders that do not fit the key.
    """
    if not orders.size or (orders.min() >= 0 and orders.max() < 16
                           and np.abs(starts).max() < 1 << 58):
        key = np.sort(starts * 16 + orders)
        starts = key >> 4
        return starts, starts + _sizes(key & 15)
    by_start = np.lexsort((orders, starts))
    starts = starts[by_start]
    return starts, starts + _sizes(orders[by_start])


@state_invariant("BUDDY-I2", "free, pcp and held blocks are disjoint")
def disjointness(snap: BuddySnapshot) -> list[str]:
    """No page is claimed twice: a block handed out twice or freed twice shows up here.

    Complexity: one sort of all claims; descriptions are built only for overlaps found.
    """
    free, pcp, held = snap.free, snap.pcp, snap.held
    starts = np.concatenate([free.pfn, pcp.pfn, held.heads])
    if starts.size < 2:
        return []
    starts, ends = _sorted_claims(starts, np.concatenate([free.order, pcp.order, held.orders]))
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
    found = Findings()
    free = snap.free
    bad_order = (free.order < 0) | (free.order >= MAX_ORDER)
    sizes = _sizes(np.where(bad_order, 0, free.order))
    wrong = bad_order | (free.pfn & (sizes - 1) != 0)
    found.add("free", np.flatnonzero(wrong), lambda i: (
        f"free block {int(free.pfn[i]):#x} on an order-{int(free.order[i])} list"
        if bad_order[i] else
        f"free order-{int(free.order[i])} block at {int(free.pfn[i]):#x} is misaligned"))
    if snap.ledger is not None:
        held = snap.held
        misaligned = np.flatnonzero(held.heads & (held.sizes - 1) != 0)
        found.add("held", misaligned, lambda i: (
            f"held order-{int(held.orders[i])} block at {int(held.heads[i]):#x} is misaligned"))
    return found.report()


@state_invariant("BUDDY-I4", "blocks lie inside their zone")
def zone_containment(snap: BuddySnapshot) -> list[str]:
    """Zones never share a block: DMA pages must stay reachable for DMA callers."""
    found = Findings()
    zones = snap.view.zones
    zone_start = np.array([z.start_pfn for z in zones], dtype=np.int64)
    zone_end = np.array([z.end_pfn for z in zones], dtype=np.int64)
    free, pcp = snap.free, snap.pcp
    outside = ~((zone_start[free.zone] <= free.pfn) & (free.ends <= zone_end[free.zone]))

    def free_block(i: int) -> str:
        zone, pfn = zones[int(free.zone[i])], int(free.pfn[i])
        return (f"{zone.name} [{zone.start_pfn:#x}, {zone.end_pfn:#x}) lists "
                f"order-{int(free.order[i])} block {pfn:#x}-{int(free.ends[i]):#x}")

    found.add("free", np.flatnonzero(outside), free_block)
    stray = ~((zone_start[pcp.zone] <= pcp.pfn) & (pcp.pfn < zone_end[pcp.zone]))
    found.add("pcp", np.flatnonzero(stray), lambda i: (
        f"{zones[int(pcp.zone[i])].name} cpu{int(pcp.kind[i])} pcp list holds pfn "
        f"{int(pcp.pfn[i]):#x}"))
    held = snap.held
    populated = [z for z in zones if z.managed_pages]
    if held.heads.size and populated:
        starts = np.array([z.start_pfn for z in populated], dtype=np.int64)
        ends = np.array([z.end_pfn for z in populated], dtype=np.int64)
        slot = np.maximum(np.searchsorted(starts, held.heads, side="right") - 1, 0)
        spans = (held.heads < starts[slot]) | (held.heads + held.sizes > ends[slot])
        found.add("held", np.flatnonzero(spans), lambda i: (
            f"held order-{int(held.orders[i])} block {int(held.heads[i]):#x}-"
            f"{int(held.heads[i] + held.sizes[i]):#x} spans zones"))
    return found.report()


@state_invariant("BUDDY-I5", "free buddies are always merged")
def maximal_coalescing(snap: BuddySnapshot) -> list[str]:
    """Two free buddies of one order in one zone would have been merged by __free_one_page."""
    free = snap.free
    if not free.pfn.size:
        return []
    # One key per (zone, pfn, order): a block's buddy is free when its key is present.
    span = int(free.order.max()) + 1
    zone_stride = (int(free.pfn.max()) + 1 << MAX_ORDER + 1) * span
    keys = free.zone * zone_stride + free.pfn * span + free.order
    buddies = free.pfn ^ _sizes(np.minimum(np.maximum(free.order, 0), MAX_ORDER))
    buddy_keys = free.zone * zone_stride + buddies * span + free.order
    known = np.sort(keys)
    slot = np.minimum(np.searchsorted(known, buddy_keys), known.size - 1)
    unmerged = (known[slot] == buddy_keys) & (free.order < MAX_ORDER - 1) & (free.pfn < buddies)
    where = np.flatnonzero(unmerged)
    if not where.size:
        return []
    where = where[np.unique(keys[where], return_index=True)[1]]  # sorted, each pair once
    problems = [f"{snap.view.zones[int(free.zone[i])].name}: order-{int(free.order[i])} buddies "
                f"{int(free.pfn[i]):#x} and {int(buddies[i]):#x} are both free and unmerged"
                for i in where[:MAX_PROBLEMS + 1]]
    if where.size > MAX_PROBLEMS:
        problems[MAX_PROBLEMS:] = [f"... and {where.size - MAX_PROBLEMS} more"]
    return problems


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


def _within(offsets: Int64s, size: int) -> Int64s:
    """offsets clamped to [0, size] (np.clip costs several times a ufunc on small arrays)."""
    return np.minimum(np.maximum(offsets, 0), size)


def _cover(starts: Int64s, ends: Int64s, lo: int, size: int) -> npt.NDArray[np.int32]:
    """How many of the ranges [starts, ends) cover each pfn of [lo, lo + size)."""
    delta = np.zeros(size + 1, dtype=np.int32)
    np.add.at(delta, _within(starts - lo, size), 1)
    np.add.at(delta, _within(ends - lo, size), -1)
    return np.cumsum(delta[:size], dtype=np.int32)


def _members(values: npt.NDArray[np.integer], known: npt.NDArray[np.integer]
             ) -> npt.NDArray[np.bool_]:
    """values in known, which is sorted (a binary search each: np.isin sorts or hashes both
    sides on every call)."""
    if not known.size:
        return np.zeros(values.shape, dtype=bool)
    slot = np.minimum(np.searchsorted(known, values), known.size - 1)
    return np.asarray(known[slot] == values)


def _has_bit(flags: np.ndarray, bit: int) -> npt.NDArray[np.bool_]:
    """flags & (1 << bit) != 0, in flags' own dtype when the bit fits it."""
    if flags.dtype.itemsize * 8 <= bit + 1:
        flags = flags.astype(np.int64)
    return np.asarray(flags & (1 << bit) != 0)


def _page_reporter(found: Findings, lo: int, refcount: np.ndarray, mapcount: np.ndarray,
                   private: np.ndarray) -> Callable[[str, npt.NDArray[np.integer], str], None]:
    """add(kind, offsets in the chunk, what) for page-level problems, with the page's state."""

    def add(kind: str, where: npt.NDArray[np.integer], what: str) -> None:
        found.add(kind, where, lambda i: (
            f"pfn {lo + i:#x}: {what} (refcount {int(refcount[i])}, "
            f"mapcount {int(mapcount[i])}, private {int(private[i])})"))

    return add


@state_invariant("BUDDY-I9", "struct page state matches the lists",
                 needs=[Capability.PAGE_STATE], cost=Cost.PAGES)
def page_state(snap: BuddySnapshot) -> list[str]:
    """The per-page markers (_count, _mapcount sentinel, private order) agree with the lists
    that claim the page: the second path to the same facts.

    Complexity: O(pages) numpy, a chunk at a time, two whole-chunk passes (pages with a
    reference, pages whose _mapcount is not -1); everything else looks at single pages:
    the free heads, the held heads, and the pages those passes found, which are then placed
    against the free blocks and pcp pages by binary search.
    """
    free, pcp = snap.free, snap.pcp
    by_start = np.argsort(free.pfn, kind="stable")
    starts = free.pfn[by_start]
    reach = np.maximum.accumulate(free.ends[by_start]) if starts.size else starts
    on_pcp = np.sort(pcp.pfn)
    held_heads = np.sort(snap.held.heads)

    def unheld(pfns: Int64s) -> npt.NDArray[np.bool_]:
        """On a pcp list, or a tail page of a free block (inside one, not its head)."""
        before = np.searchsorted(starts, pfns) - 1  # the blocks starting below each pfn
        inside = np.zeros(pfns.shape, dtype=bool)
        some = before >= 0
        inside[some] = reach[before[some]] > pfns[some]
        return inside | _members(pfns, on_pcp)

    found = Findings()
    for lo, (refcount, mapcount, private) in snap.chunks("refcount", "mapcount", "private"):
        hi = lo + refcount.shape[0]
        page = _page_reporter(found, lo, refcount, mapcount, private)
        mine = (free.pfn >= lo) & (free.pfn < hi)
        at, order = free.pfn[mine] - lo, free.order[mine]
        page("head-ref", at[refcount[at] != 0], "free block head with a reference")
        page("head-buddy", at[mapcount[at] != PAGE_BUDDY_MAPCOUNT_VALUE],
             "free block head without PageBuddy")
        page("head-order", at[private[at] != order],
             "free block head whose private is not its order")
        referenced = np.flatnonzero(refcount != 0)
        page("unheld-ref", referenced[unheld(referenced + lo)],
             "free or pcp page with a reference")
        mapped = np.flatnonzero(mapcount != -1)
        page("unheld-map", mapped[unheld(mapped + lo)],
             "free-block tail or pcp page with _mapcount != -1")
        marked = mapped[mapcount[mapped] == PAGE_BUDDY_MAPCOUNT_VALUE]
        page("stray-buddy", marked[~_members(marked, np.sort(at))],
             "PageBuddy on a page no list holds")
        if snap.ledger is not None:
            heads = held_heads[np.searchsorted(held_heads, lo):np.searchsorted(held_heads, hi)]
            heads = heads - lo
            page("held-ref", heads[refcount[heads] < 1], "held block head without a reference")
    return found.report()


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
    if snap.ledger is None or snap.ledger.count():
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


def _claim_wording(compound_head: np.ndarray, lo: int) -> Callable[[int], str]:
    def word(pfn: int) -> str:
        return (f"pfn {pfn:#x} claims compound head {int(compound_head[pfn - lo]):#x}, which "
                f"is not a held compound block containing it")

    return word


@state_invariant("BUDDY-I12", "compound pages are well formed", needs_ledger=True,
                 needs=[Capability.PAGE_STATE, Capability.COMPOUND], cost=Cost.PAGES)
def compound_pages(snap: BuddySnapshot) -> list[str]:
    """Tails point at a held compound head that contains them, and PG_head marks only held
    compound heads: put_page on a tail page relies on both.

    Complexity: O(pages) numpy, a chunk at a time.  Per chunk, the compound_head every page
    should have is built from the held compound blocks (a running sum of head + 1 over their
    tail ranges) and compared with the one it has.  Pages that two held blocks both cover
    are left to BUDDY-I2.
    """
    assert snap.ledger is not None
    held = snap.held
    is_compound = held.compound & (held.orders > 0)
    heads = held.heads[is_compound]
    by_head = np.argsort(heads)
    heads = heads[by_head]
    ends = heads + held.sizes[is_compound][by_head]
    reach = int((ends - heads).max()) if heads.size else 1  # a block's tails start this close
    overlapping = bool(heads.size > 1 and (heads[1:] < np.maximum.accumulate(ends)[:-1]).any())
    all_compound = np.sort(held.heads[held.compound])
    # int32 sums halve the memory traffic while every head + 1 fits
    pfn_type = np.int32 if not heads.size or int(ends.max()) < 1 << 31 else np.int64
    found = Findings()
    for lo, (flags, compound_head) in snap.chunks("flags", "compound_head"):
        size = flags.shape[0]
        hi = lo + size
        marked = np.flatnonzero(_has_bit(flags, PG_head)) + lo
        found.add("stray-head", marked[~_members(marked, all_compound)], lambda pfn: (
            f"pfn {pfn:#x} has PG_head but is not a held compound head"))
        near = slice(np.searchsorted(heads, lo - reach), np.searchsorted(heads, hi))
        near_heads, near_ends = heads[near], ends[near]
        mine = near_heads[near_heads >= lo]
        unmarked = mine[~_has_bit(flags[mine - lo], PG_head)]
        found.add("no-head", unmarked, lambda pfn: f"held compound block {pfn:#x} lacks PG_head")
        # head + 1 enters the running sum at a block's first tail and leaves after its last.
        value: npt.NDArray[np.signedinteger[Any]] = (near_heads + 1).astype(pfn_type)
        delta: npt.NDArray[np.signedinteger[Any]] = np.zeros(size + 1, dtype=pfn_type)
        np.add.at(delta, _within(value - lo, size), value)
        np.add.at(delta, _within(near_ends - lo, size), -value)
        expected: npt.NDArray[np.signedinteger[Any]] = np.cumsum(delta[:size], dtype=pfn_type)
        expected -= 1
        wrong = compound_head != expected
        if overlapping:
            wrong &= _cover(near_heads + 1, near_ends, lo, size) <= 1
        wrong_at = np.flatnonzero(wrong)
        if not wrong_at.size:
            continue
        claimed = wrong_at[np.asarray(compound_head)[wrong_at] >= 0]
        found.add("claim", claimed + lo, _claim_wording(compound_head, lo))
        want = expected[wrong_at].astype(np.int64)
        slighted = np.unique(want[want >= 0])
        found.add("tails", slighted, lambda head: (
            f"held compound block {head:#x} has tails not pointing at it"))
    return found.report()
