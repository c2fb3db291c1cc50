"""State invariants of the object allocator, SLUB-I1 .. SLUB-I5 (``specs/slub.md``).

A snapshot holds the allocator's view, the page allocator's view (slab pages come from it)
and the caller's ledger: which objects and large blocks it holds.  Every check costs
O(slabs + free objects + held objects).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from invariants.registry import state_invariant
from specs.buddy import BuddyView
from specs.machine import MachineConfig
from specs.slub import (
    SLAB_CACHE_DMA,
    CacheView,
    SlabView,
    SlubView,
    calculate_alignment,
    calculate_sizes,
    page_address,
)

MAX_PROBLEMS = 8


@attrs.frozen
class CacheArgs:
    """What kmem_cache_create was called with (the ledger's record of a cache it made)."""

    name: str
    size: int
    align: int
    flags: int


@attrs.define
class SlubLedger:
    """The caller's record: objects and large blocks it holds, caches it created, and the
    objects it corrupted (so a check knows what 4.6 would report)."""

    #: object address -> cache id
    held: dict[int, int] = attrs.field(factory=dict)
    #: kmalloc_large address -> order
    large: dict[int, int] = attrs.field(factory=dict)
    #: cache id -> the arguments that created it (aliases keep the first)
    created: dict[int, CacheArgs] = attrs.field(factory=dict)
    #: freed objects the caller wrote into afterwards (use after free), by address
    dirty_free: set[int] = attrs.field(factory=set)
    #: held objects whose right red zone the caller overran: (first, last) byte offsets
    #: past the object's end that now differ from the active red-zone pattern
    overrun: dict[int, tuple[int, int]] = attrs.field(factory=dict)

    def copy(self) -> SlubLedger:
        """A copy for the 'before' side of a step record."""
        return SlubLedger(dict(self.held), dict(self.large), dict(self.created),
                          set(self.dirty_free), dict(self.overrun))


@attrs.define
class SlubSnapshot:
    """The state after a step."""

    view: SlubView
    pages: BuddyView
    config: MachineConfig
    ledger: SlubLedger | None = None


def boot_args(name: str) -> CacheArgs | None:
    """create_kmalloc_caches' arguments for a kmalloc cache, by its name."""
    dma = name.startswith("dma-")
    size = name.removeprefix("dma-").removeprefix("kmalloc-")
    if not name.removeprefix("dma-").startswith("kmalloc-") or not size.isdigit():
        return None
    return CacheArgs(name, int(size), 8, SLAB_CACHE_DMA if dma else 0)


def capped(problems: list[str]) -> list[str]:
    """At most MAX_PROBLEMS lines, then a count."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]


def free_objects(cache: CacheView) -> Iterator[tuple[int, str]]:
    """(address, where) of every free object: page freelists and CPU freelists."""
    for slab in cache.slabs:
        for obj in slab.freelist:
            yield obj, f"page freelist of slab {slab.pfn:#x}"
    for cpu, c in enumerate(cache.cpus):
        for obj in c.freelist:
            yield obj, f"cpu{cpu} freelist"


def slab_of(cache: CacheView, addr: int) -> SlabView | None:
    """The slab of this cache holding addr."""
    for slab in cache.slabs:
        base = page_address(slab.pfn)
        if base <= addr < base + (4096 << slab.order):
            return slab
    return None


def is_object(cache: CacheView, slab: SlabView, addr: int) -> bool:
    """addr is the start of one of the slab's objects."""
    first = page_address(slab.pfn) + cache.layout.red_left_pad
    offset = addr - first
    return 0 <= offset < slab.objects * cache.layout.size and offset % cache.layout.size == 0


@state_invariant("SLUB-I1", "no object is free twice or both free and held", needs_ledger=True)
def no_double_claims(snap: SlubSnapshot) -> list[str]:
    """Every object is in exactly one state: on one freelist, or held by the caller.  A
    freelist that hands an object out twice, or a double free that went through, shows here."""
    problems: list[str] = []
    held = snap.ledger.held if snap.ledger is not None else {}
    for cache in snap.view.caches:
        seen: dict[int, str] = {}
        for obj, where in free_objects(cache):
            if obj in seen:
                problems.append(f"{cache.name}: object {obj:#x} is on the {where} and on the "
                                f"{seen[obj]}")
            seen[obj] = where
            if obj in held:
                problems.append(f"{cache.name}: object {obj:#x} is on the {where} but the "
                                f"caller holds it")
    return capped(problems)


@state_invariant("SLUB-I2", "freelists hold only objects of their slab and in-use counts match")
def freelists_and_counts(snap: SlubSnapshot) -> list[str]:
    """page->inuse is objects minus the page freelist; a CPU freelist holds objects of that
    CPU's slab only, and every freelist entry is an object start of its slab."""
    problems: list[str] = []
    for cache in snap.view.caches:
        by_pfn = {slab.pfn: slab for slab in cache.slabs}
        for slab in cache.slabs:
            if slab.inuse != slab.objects - len(slab.freelist):
                problems.append(f"{cache.name}: slab {slab.pfn:#x} has inuse {slab.inuse} but "
                                f"{slab.objects} objects and {len(slab.freelist)} free")
            problems.extend(f"{cache.name}: slab {slab.pfn:#x} freelist holds {obj:#x}, not "
                            f"one of its objects" for obj in slab.freelist
                            if not is_object(cache, slab, obj))
        for cpu, c in enumerate(cache.cpus):
            page = by_pfn.get(c.page)
            if c.freelist and page is None:
                problems.append(f"{cache.name}: cpu{cpu} has a freelist but no slab")
            elif page is not None:
                problems.extend(f"{cache.name}: cpu{cpu} freelist holds {obj:#x}, not an "
                                f"object of its slab {page.pfn:#x}" for obj in c.freelist
                                if not is_object(cache, page, obj))
    return capped(problems)


@state_invariant("SLUB-I3", "every slab is on the list its state calls for")
def slab_lists(snap: SlubSnapshot) -> list[str]:
    """Frozen slabs are CPU slabs or on a CPU partial list; node-partial slabs are unfrozen
    with free objects; the lists and the slabs' own record agree.  Caches with debug reports
    are left out: 4.6 abandons a slab that failed a check frozen and on no list."""
    problems: list[str] = []
    reported = {report.cache for report in snap.view.reports}
    for cache in snap.view.caches:
        if cache.name in reported:
            continue
        listed: dict[int, str] = {}
        for cpu, c in enumerate(cache.cpus):
            if c.page >= 0:
                listed[c.page] = f"cpu{cpu}"
            for pfn in c.partial:
                listed[pfn] = f"cpu{cpu}-partial"
        for pfn in cache.partial:
            listed[pfn] = "partial"
        for pfn in cache.full:
            listed[pfn] = "full"
        for slab in cache.slabs:
            on = listed.get(slab.pfn, "none")
            expected = {"cpu": f"cpu{slab.cpu}", "cpu_partial": f"cpu{slab.cpu}-partial"}.get(
                slab.where, slab.where)
            if on != expected:
                problems.append(f"{cache.name}: slab {slab.pfn:#x} says {slab.where} but the "
                                f"lists put it on {on}")
            if slab.frozen != (slab.where in ("cpu", "cpu_partial")):
                problems.append(f"{cache.name}: slab {slab.pfn:#x} on {on} has frozen="
                                f"{slab.frozen}")
            if slab.where in ("partial",) and not slab.freelist:
                problems.append(f"{cache.name}: slab {slab.pfn:#x} is on the node partial "
                                f"list with no free object")
            if slab.where in ("none", "full") and slab.freelist:
                problems.append(f"{cache.name}: slab {slab.pfn:#x} has free objects but is on "
                                f"no partial list")
        if len(set(cache.partial)) != len(cache.partial):
            problems.append(f"{cache.name}: a slab is on the node partial list twice")
    return capped(problems)


@state_invariant("SLUB-I4", "slab pages are accounted in the page allocator", needs_ledger=True)
def pages_accounted(snap: SlubSnapshot) -> list[str]:
    """nr_slab_pages is the sum of the slabs' pages, and free pages + slab pages + large
    kmalloc pages are all the page allocator manages: a slab not returned on discard or
    destroy, or a large block not freed, leaks here."""
    problems: list[str] = []
    slab_pages = sum(1 << slab.order for cache in snap.view.caches for slab in cache.slabs)
    if slab_pages != snap.view.nr_slab_pages:
        problems.append(f"nr_slab_pages is {snap.view.nr_slab_pages} but the slabs have "
                        f"{slab_pages} pages")
    large_pages = sum(1 << order for _pfn, order in snap.view.large)
    pages = snap.pages
    free = sum(z.nr_free_pages + sum(p.count for p in z.pcp) for z in pages.zones)
    managed = sum(z.managed_pages for z in pages.zones)
    if free + slab_pages + large_pages != managed:
        problems.append(f"free {free} + slab {slab_pages} + large {large_pages} pages = "
                        f"{free + slab_pages + large_pages}, but the page allocator manages "
                        f"{managed} ({managed - free - slab_pages - large_pages:+d} leaked)")
    if snap.ledger is not None:
        held_large = sorted((obj, order) for obj, order in snap.ledger.large.items())
        listed = sorted((page_address(pfn), order) for pfn, order in snap.view.large)
        if held_large != listed:
            problems.append(f"large kmalloc blocks {listed} but the caller holds {held_large}")
    return capped(problems)


@state_invariant("SLUB-I5", "objects per slab follow the cache geometry", needs_ledger=True)
def geometry(snap: SlubSnapshot) -> list[str]:
    """A cache's layout is calculate_sizes' for the arguments it was created with, and every
    slab has the objects its order holds: oo for the preferred order, min for the fallback."""
    problems: list[str] = []
    created = snap.ledger.created if snap.ledger is not None else {}
    for cache in snap.view.caches:
        layout = cache.layout
        args = created.get(cache.id) or boot_args(cache.name)
        if args is not None:
            want = calculate_sizes(args.size, calculate_alignment(args.flags, args.align,
                                                                  args.size),
                                   args.flags, snap.config.nr_cpus)
            if want is not None and want != layout:
                problems.append(f"{cache.name}: layout {layout} but 4.6 computes {want}")
        for slab in cache.slabs:
            if (slab.order, slab.objects) not in ((layout.order, layout.objects),
                                                  (layout.min_order, layout.min_objects)):
                problems.append(f"{cache.name}: slab {slab.pfn:#x} is order {slab.order} with "
                                f"{slab.objects} objects; the cache's geometry is order "
                                f"{layout.order} x {layout.objects} (fallback order "
                                f"{layout.min_order} x {layout.min_objects})")
    return capped(problems)
