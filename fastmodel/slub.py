"""The 4.6 SLUB allocator and kmalloc, with the hot paths in O(1).  [4.6: mm/slub.c,
mm/slab_common.c]

This is ``refmodel.slub`` with the same functions making the same decisions in the same order
(so every result, every view and every call to the page allocator is the reference model's),
over state chosen for speed:

* **Freelists are stacks.**  Page and CPU freelists are Python lists with the head *last*:
  taking or pushing the head, which every allocation and free does, is ``pop``/``append``
  (the reference model shifts the whole list).  Moving a CPU freelist back onto its page is
  one ``extend`` of the reversed list.
* **A double free is found in O(1).**  Each slab keeps the set of its free objects (page
  freelist and its CPU's freelist together), where the reference model searches the lists.
* **Lookups are tables.**  kmalloc sizes map to their cache through a list indexed by size,
  caches by id through a dict, and boot caches carry a flag.
* **Slab bytes are numpy-backed** (only caches with SLAB_RED_ZONE or SLAB_POISON keep them):
  set-up from per-order templates, checks that cost one C call when clean, and a whole-slab
  verification before a consistency-checked slab is freed; see :mod:`fastmodel.slub_debug`.
* **Views are cached per cache** and rebuilt only for caches a call changed.

[Simplified: as in the reference model (specs/slub.md, Known departures): one node; no NUMA
node matching, pfmemalloc slabs, memcg, constructors, RCU-delayed slab freeing, SLAB_TRACE
output or alloc/free tracks]
"""

from __future__ import annotations

from typing import Final

import attrs

from fastmodel import slub_debug as dbg
from fastmodel.slub_debug import Cache, CpuSlab, Geometry, Slab
from specs import gfp
from specs.buddy import PageAllocator
from specs.errno import Errno
from specs.machine import PAGE_SHIFT, MachineConfig
from specs.slub import (
    ALL_CAPABILITIES,
    CACHE_CREATE_MASK,
    KMALLOC_BOOT_ORDER,
    KMALLOC_MAX_CACHE_SIZE,
    KMALLOC_MAX_SIZE,
    KMALLOC_SIZES,
    PAGE_OFFSET,
    SHRINK_PROMOTE_MAX,
    SLAB_CACHE_DMA,
    SLAB_CONSISTENCY_CHECKS,
    SLAB_MERGE_SAME,
    SLAB_NEVER_MERGE,
    SLAB_STORE_USER,
    SLUB_RED_INACTIVE,
    WORD,
    ZERO_SIZE_PTR,
    CacheView,
    CpuSlabView,
    SlubReport,
    SlubView,
    align_up,
    calculate_alignment,
    calculate_sizes,
    get_order,
    kmalloc_cache_name,
    kmalloc_index,
    page_address,
    slab_ksize,
)

EINVAL: Final = -Errno.EINVAL
EFAULT: Final = -Errno.EFAULT
EBUSY: Final = -Errno.EBUSY

#: [4.6: mm/internal.h] the caller's gfp bits new_slab passes on, and the ones it BUG()s on
GFP_RECLAIM_MASK: Final = (gfp.__GFP_RECLAIM | gfp.__GFP_HIGH | gfp.__GFP_IO | gfp.__GFP_FS
                           | gfp.__GFP_NOWARN | gfp.__GFP_REPEAT | gfp.__GFP_NOFAIL
                           | gfp.__GFP_NORETRY | gfp.__GFP_MEMALLOC | gfp.__GFP_NOMEMALLOC)
GFP_CONSTRAINT_MASK: Final = gfp.__GFP_HARDWALL | gfp.__GFP_THISNODE
GFP_SLAB_BUG_MASK: Final = gfp.__GFP_DMA32 | gfp.__GFP_HIGHMEM | ~gfp.__GFP_BITS_MASK
SIZE_T: Final = (1 << 64) - 1
GFP_ZERO: Final = gfp.__GFP_ZERO
GFP_DMA: Final = gfp.GFP_DMA
GFP_COMP: Final = gfp.__GFP_COMP
GFP_NOWARN: Final = gfp.__GFP_NOWARN
GFP_NORETRY: Final = gfp.__GFP_NORETRY
GFP_NOFAIL: Final = gfp.__GFP_NOFAIL
GFP_NOTRACK: Final = gfp.__GFP_NOTRACK
GFP_NOMEMALLOC: Final = gfp.__GFP_NOMEMALLOC
GFP_RECLAIM: Final = gfp.__GFP_RECLAIM
GFP_DIRECT_RECLAIM: Final = gfp.__GFP_DIRECT_RECLAIM
#: kmalloc size -> kmalloc_caches[] index, for 0..8192 (0 unused)
KMALLOC_INDEX: Final = (0, *(kmalloc_index(size) for size in range(1, KMALLOC_MAX_CACHE_SIZE + 1)))


@attrs.define
class SlubState:
    """Everything the allocator owns: caches in creation order, large kmallocs, reports."""

    nr_cpus: int
    pages: PageAllocator
    caches: list[Cache] = attrs.field(factory=list)
    by_id: dict[int, Cache] = attrs.field(factory=dict)
    next_id: int = 0
    #: pfn -> slab, for every page (head and tail) of every slab
    slab_of_pfn: dict[int, Slab] = attrs.field(factory=dict)
    #: head pfn -> order of every kmalloc_large block
    large: dict[int, int] = attrs.field(factory=dict)
    #: kmalloc size -> cache, for 0..8192 (entry 0 unused), plain and dma
    kmalloc: list[Cache] = attrs.field(factory=list)
    kmalloc_dma: list[Cache] = attrs.field(factory=list)
    reports: list[SlubReport] = attrs.field(factory=list)
    warnings: int = 0
    nr_slab_pages: int = 0


# ---------------------------------------------------------------------------------------------
# Slab pages [4.6: mm/slub.c allocate_slab, new_slab, discard_slab]
# ---------------------------------------------------------------------------------------------


def allocate_slab(state: SlubState, s: Cache, flags: int, cpu: int) -> Slab | None:
    """[4.6: mm/slub.c allocate_slab] the preferred order without retries or warnings first,
    then the smallest order that holds one object with the caller's own flags."""
    layout = s.layout
    flags |= layout.allocflags
    alloc_gfp = (flags | GFP_NOWARN | GFP_NORETRY) & ~GFP_NOFAIL
    if alloc_gfp & GFP_DIRECT_RECLAIM and layout.order > layout.min_order:
        alloc_gfp = (alloc_gfp | GFP_NOMEMALLOC) & ~(GFP_RECLAIM | GFP_NOFAIL)
    order, objects = layout.order, layout.objects
    pfn = state.pages.alloc_pages(alloc_gfp | GFP_NOTRACK, order, cpu)
    if pfn is None:
        order, objects = layout.min_order, layout.min_objects
        pfn = state.pages.alloc_pages(flags | GFP_NOTRACK, order, cpu)
        if pfn is None:
            return None
    base = page_address(pfn)
    vbase, vend = dbg.valid_range(layout, base, objects)
    slab = Slab(pfn=pfn, order=order, objects=objects, cache=s, base=base, vbase=vbase,
                vend=vend)
    dbg.fill_slab(s, slab)
    start = base + layout.red_left_pad
    stride = layout.size
    slab.free = list(range(start + (objects - 1) * stride, start - 1, -stride))
    slab.avail = set(slab.free)
    slab.inuse = objects
    slab.frozen = True
    slab_of_pfn = state.slab_of_pfn
    for page in range(pfn, pfn + (1 << order)):
        slab_of_pfn[page] = slab
    s.slabs[pfn] = slab
    state.nr_slab_pages += 1 << order
    return slab


def new_slab(state: SlubState, s: Cache, flags: int, cpu: int) -> Slab | None:
    """[4.6: mm/slub.c new_slab] only reclaim and constraint bits of the caller's mask reach
    the page allocator (the GFP_SLAB_BUG_MASK check is made on entry)."""
    return allocate_slab(state, s, flags & (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK), cpu)


def discard_slab(state: SlubState, s: Cache, slab: Slab, cpu: int) -> None:
    """[4.6: mm/slub.c discard_slab, free_slab, __free_slab] consistency-checked caches verify
    the slab once more; the pages go back to the page allocator."""
    if s.checks:
        dbg.verify_idle_slab(state.reports, s, slab)
    slab_of_pfn = state.slab_of_pfn
    for page in range(slab.pfn, slab.pfn + (1 << slab.order)):
        del slab_of_pfn[page]
    del s.slabs[slab.pfn]
    state.nr_slab_pages -= 1 << slab.order
    state.pages.free_pages(slab.pfn, slab.order, cpu)


# ---------------------------------------------------------------------------------------------
# Lists [4.6: mm/slub.c add_partial, remove_partial, add_full, get_partial_node]
# ---------------------------------------------------------------------------------------------


def add_partial(s: Cache, slab: Slab, tail: bool) -> None:
    """[4.6: __add_partial] DEACTIVATE_TO_TAIL or to the head."""
    if tail:
        s.partial.append(slab)
    else:
        s.partial.insert(0, slab)
    slab.where, slab.cpu = "partial", -1


def remove_partial(s: Cache, slab: Slab) -> None:
    """[4.6: remove_partial]"""
    s.partial.remove(slab)
    slab.where = "none"


def add_full(s: Cache, slab: Slab) -> None:
    """[4.6: add_full] only SLAB_STORE_USER caches track full slabs."""
    slab.where, slab.cpu = "none", -1
    if s.layout.flags & SLAB_STORE_USER:
        s.full.insert(0, slab)
        slab.where = "full"


def remove_full(s: Cache, slab: Slab) -> None:
    """[4.6: remove_full]"""
    if s.layout.flags & SLAB_STORE_USER and slab in s.full:
        s.full.remove(slab)
    slab.where = "none"


def get_partial_node(state: SlubState, s: Cache, c: CpuSlab, cpu: int) -> list[int] | None:
    """[4.6: mm/slub.c get_partial_node, acquire_slab] the first node-partial slab becomes the
    CPU slab (its whole freelist taken, head last); later ones go to the CPU partial list
    until more than cpu_partial / 2 free objects are collected."""
    got: list[int] | None = None
    available = 0
    cpu_partial = not s.debug
    for slab in list(s.partial):
        objects = slab.objects - slab.inuse
        remove_partial(s, slab)
        slab.frozen = True
        available += objects
        if got is None:
            got = slab.free
            slab.free = []
            slab.inuse = slab.objects
            if c.page is not None:  # a slab debug checks marked used: 4.6 forgets it, frozen
                c.page.where, c.page.cpu = "none", -1
            c.page = slab
            slab.where, slab.cpu = "cpu", cpu
        else:
            put_cpu_partial(state, s, slab, cpu, drain=False)
        if not cpu_partial or available > s.cpu_partial // 2:
            break
    return got


# ---------------------------------------------------------------------------------------------
# Per-cpu state [4.6: deactivate_slab, unfreeze_partials, put_cpu_partial, flush_slab]
# ---------------------------------------------------------------------------------------------


def deactivate_slab(state: SlubState, s: Cache, slab: Slab, freelist: list[int],
                    cpu: int) -> None:
    """[4.6: mm/slub.c deactivate_slab] the CPU freelist (head last) goes back onto the page
    freelist one object at a time, the slab is unfrozen and filed: freed when empty and the
    node already has min_partial slabs, partial when it has free objects (at the tail if
    remote frees had arrived), full otherwise."""
    free = slab.free
    tail = bool(free)
    if freelist:
        if slab.mem is not None:
            for obj in reversed(freelist):
                dbg.set_freepointer(s, slab, obj, free[-1] if free else 0)
                free.append(obj)
        else:
            free.extend(reversed(freelist))
        slab.inuse -= len(freelist)
    slab.frozen = False
    slab.where, slab.cpu = "none", -1
    if not slab.inuse and len(s.partial) >= s.min_partial:
        discard_slab(state, s, slab, cpu)
    elif free:
        add_partial(s, slab, tail)
    else:
        add_full(s, slab)


def unfreeze_partials(state: SlubState, s: Cache, c: CpuSlab, cpu: int) -> None:
    """[4.6: mm/slub.c unfreeze_partials] every CPU partial slab to the node list tail, except
    empty ones while the node has min_partial slabs: those are freed, after the others."""
    if not c.partial:
        return
    discard: list[Slab] = []
    for slab in c.partial:
        slab.frozen = False
        slab.where, slab.cpu = "none", -1
        if not slab.inuse and len(s.partial) >= s.min_partial:
            discard.append(slab)
        else:
            add_partial(s, slab, tail=True)
    c.partial = []
    for slab in reversed(discard):
        discard_slab(state, s, slab, cpu)


def put_cpu_partial(state: SlubState, s: Cache, slab: Slab, cpu: int, drain: bool) -> None:
    """[4.6: mm/slub.c put_cpu_partial] push a frozen slab on the CPU partial list; with drain,
    a list already holding more than cpu_partial free objects (as counted when its head was
    pushed) is unfrozen to the node list first."""
    c = s.cpus[cpu]
    pages = pobjects = 0
    if c.partial:
        head = c.partial[0]
        pages, pobjects = head.pages, head.pobjects
        if drain and pobjects > s.cpu_partial:
            unfreeze_partials(state, s, c, cpu)
            pages = pobjects = 0
    slab.pages = pages + 1
    slab.pobjects = pobjects + slab.objects - slab.inuse
    c.partial.insert(0, slab)
    slab.where, slab.cpu = "cpu_partial", cpu
    if not s.cpu_partial:
        unfreeze_partials(state, s, c, cpu)


def flush_slab(state: SlubState, s: Cache, c: CpuSlab, cpu: int) -> None:
    """[4.6: flush_slab]"""
    slab, freelist = c.page, c.freelist
    assert slab is not None
    c.page, c.freelist = None, []
    deactivate_slab(state, s, slab, freelist, cpu)


def flush_all(state: SlubState, s: Cache) -> None:
    """[4.6: flush_all, __flush_cpu_slab] every CPU drops its slab and its partial list."""
    for cpu, c in enumerate(s.cpus):
        if c.page is not None:
            flush_slab(state, s, c, cpu)
        unfreeze_partials(state, s, c, cpu)


# ---------------------------------------------------------------------------------------------
# Allocation [4.6: slab_alloc_node, ___slab_alloc, new_slab_objects, get_freelist]
# ---------------------------------------------------------------------------------------------


def slab_alloc(state: SlubState, s: Cache, gfp_mask: int, cpu: int) -> int | None:
    """[4.6: mm/slub.c slab_alloc_node] the fast path takes the CPU freelist's head."""
    c = s.cpus[cpu]
    if c.freelist:
        obj = c.freelist.pop()
        slab = c.page
        assert slab is not None
        slab.avail.discard(obj)
    else:
        got = slab_alloc_slow(state, s, gfp_mask, cpu)
        if got is None:
            return None
        obj, slab = got
    if gfp_mask & GFP_ZERO and slab.mem is not None:
        dbg.zero_object(s, slab, obj)
    return obj


def slab_alloc_slow(state: SlubState, s: Cache, gfp_mask: int,
                    cpu: int) -> tuple[int, Slab] | None:
    """[4.6: mm/slub.c ___slab_alloc] refill from the CPU slab's page freelist, then the CPU
    partial list, then the node partial list, then a new slab.  A debug cache checks the object
    and deactivates the slab at once, so its every alloc and free takes the slow path."""
    c = s.cpus[cpu]
    retry = False  # True after a debug check failed: 4.6 jumps to new_slab, not redo
    while True:
        page = c.page
        if page is not None and not retry:
            if c.freelist:  # cannot happen single-threaded, kept for the shape of 4.6
                obj = c.freelist.pop()
                page.avail.discard(obj)
                return obj, page
            freelist = page.free  # get_freelist
            page.free = []
            page.inuse = page.objects
            page.frozen = bool(freelist)
            if freelist:
                obj = freelist.pop()
                c.freelist = freelist
                page.avail.discard(obj)
                return obj, page
            page.where, page.cpu = "none", -1
            c.page = None
        if c.partial and not retry:
            slab = c.partial.pop(0)
            c.page, c.freelist = slab, []
            slab.where, slab.cpu = "cpu", cpu
            continue
        got = new_slab_objects(state, s, gfp_mask, cpu)
        if got is None:
            slab_out_of_memory(state, gfp_mask)
            return None
        page = c.page
        assert page is not None
        obj = got.pop()
        if not s.debug:
            c.freelist = got
            page.avail.discard(obj)
            return obj, page
        if not dbg.alloc_debug_processing(state.reports, s, page, obj):
            page.inuse, page.free = page.objects, []  # "Marking all objects used"
            page.avail.difference_update(got)
            page.avail.discard(obj)
            retry = True
            continue
        page.avail.discard(obj)
        c.page, c.freelist = None, []
        deactivate_slab(state, s, page, got, cpu)
        return obj, page


def new_slab_objects(state: SlubState, s: Cache, gfp_mask: int, cpu: int) -> list[int] | None:
    """[4.6: mm/slub.c new_slab_objects] a node-partial slab, else a fresh one (which replaces
    whatever CPU slab is left); the freelist taken, head last."""
    c = s.cpus[cpu]
    got = get_partial_node(state, s, c, cpu)
    if got is not None:
        return got
    slab = new_slab(state, s, gfp_mask, cpu)
    if slab is None:
        return None
    if c.page is not None:
        flush_slab(state, s, c, cpu)
    got, slab.free = slab.free, []
    c.page = slab
    slab.where, slab.cpu = "cpu", cpu
    return got


def slab_out_of_memory(state: SlubState, gfp_mask: int) -> None:
    """[4.6: slab_out_of_memory] a report unless __GFP_NOWARN.
    [Simplified: no rate limiting, as in the reference model]"""
    if not gfp_mask & GFP_NOWARN:
        state.warnings += 1


# ---------------------------------------------------------------------------------------------
# Free [4.6: slab_free, __slab_free]
# ---------------------------------------------------------------------------------------------


def slab_free(state: SlubState, s: Cache, slab: Slab, obj: int, cpu: int) -> bool:
    """[4.6: mm/slub.c slab_free] onto the CPU freelist when the object is in this CPU's slab,
    else __slab_free.  False when a debug check refused the free."""
    c = s.cpus[cpu]
    if c.page is slab:
        if slab.mem is not None:
            dbg.set_freepointer(s, slab, obj, c.freelist[-1] if c.freelist else 0)
        c.freelist.append(obj)
        slab.avail.add(obj)
        return True
    return slab_free_slow(state, s, slab, obj, cpu)


def slab_free_slow(state: SlubState, s: Cache, slab: Slab, obj: int, cpu: int) -> bool:
    """[4.6: mm/slub.c __slab_free] back on the page freelist.  A full slab that is not frozen
    is frozen onto this CPU's partial list (non-debug caches); a slab that became empty is
    freed if the node already holds min_partial slabs; a debug cache's full slab goes back on
    the node partial list."""
    debug = s.debug
    if debug:
        dbg.init_object(s, slab, obj, SLUB_RED_INACTIVE)  # free_debug_processing
    free = slab.free
    prior = bool(free)
    if slab.mem is not None:
        dbg.set_freepointer(s, slab, obj, free[-1] if free else 0)
    free.append(obj)
    slab.avail.add(obj)
    slab.inuse -= 1
    if slab.frozen:
        return True
    if not debug and not prior:
        slab.frozen = True
        put_cpu_partial(state, s, slab, cpu, drain=True)
        return True
    if not slab.inuse and len(s.partial) >= s.min_partial:
        if prior:
            remove_partial(s, slab)
        else:
            remove_full(s, slab)
        discard_slab(state, s, slab, cpu)
        return True
    if debug and not prior:
        remove_full(s, slab)
        add_partial(s, slab, tail=True)
    return True


# ---------------------------------------------------------------------------------------------
# Caches [4.6: mm/slab_common.c kmem_cache_create, find_mergeable, create_kmalloc_caches]
# ---------------------------------------------------------------------------------------------


def create_cache(state: SlubState, name: str, size: int, align: int, flags: int) -> Cache | None:
    """[4.6: create_cache, __kmem_cache_create, kmem_cache_open]"""
    layout = calculate_sizes(size, calculate_alignment(flags, align, size), flags,
                             state.nr_cpus)
    if layout is None:
        return None
    cache = Cache(id=state.next_id, name=name, layout=layout, object_size=size,
                  min_partial=layout.min_partial, cpu_partial=layout.cpu_partial,
                  cpus=[CpuSlab() for _ in range(state.nr_cpus)],
                  geometry=Geometry.of(layout))
    state.next_id += 1
    state.caches.append(cache)
    state.by_id[cache.id] = cache
    return cache


def find_mergeable(state: SlubState, size: int, align: int, flags: int) -> Cache | None:
    """[4.6: mm/slab_common.c find_mergeable, slab_unmergeable] the oldest cache whose stride
    fits the new size with less than a word to spare, with the same MERGE_SAME flags and an
    alignment the stride honours."""
    if flags & SLAB_NEVER_MERGE:
        return None
    size = align_up(size, WORD)
    align = calculate_alignment(flags, align, size)
    size = align_up(size, align)
    for s in state.caches:
        if s.layout.flags & SLAB_NEVER_MERGE or s.refcount < 0:
            continue
        stride = s.layout.size
        if size > stride:
            continue
        if flags & SLAB_MERGE_SAME != s.layout.flags & SLAB_MERGE_SAME:
            continue
        if stride & ~(align - 1) != stride:
            continue
        if stride - size >= WORD:
            continue
        return s
    return None


def create_kmalloc_caches(state: SlubState) -> None:
    """[4.6: mm/slab_common.c create_kmalloc_caches] kmalloc-8 .. kmalloc-8192 with 96 and
    192 after 64 and 128, then their dma-kmalloc twins; then the size -> cache tables.

    [Simplified: as in the reference model, no kmem_cache / kmem_cache_node bootstrap caches,
    and cache descriptors take no slab memory]
    """
    for dma in (False, True):
        by_index: dict[int, Cache] = {}
        for index in KMALLOC_BOOT_ORDER:
            cache = create_cache(state, kmalloc_cache_name(index, dma), KMALLOC_SIZES[index],
                                 8, SLAB_CACHE_DMA if dma else 0)
            assert cache is not None
            cache.boot = True
            by_index[index] = cache
        table = [by_index[KMALLOC_INDEX[size] or 3] for size in range(len(KMALLOC_INDEX))]
        if dma:
            state.kmalloc_dma = table
        else:
            state.kmalloc = table


def shutdown_cache(state: SlubState, s: Cache) -> bool:
    """[4.6: mm/slub.c __kmem_cache_shutdown, free_partial] flush every CPU, free the empty
    partial slabs, report the others; True when no slab is left."""
    flush_all(state, s)
    for slab in list(s.partial):
        if not slab.inuse:
            remove_partial(s, slab)
            discard_slab(state, s, slab, 0)
        else:
            state.reports.append(SlubReport(
                s.name, "Objects remaining in cache on __kmem_cache_shutdown()", slab.base))
    return not s.partial and not s.slabs


def kmem_cache_shrink(state: SlubState, s: Cache) -> int:
    """[4.6: mm/slub.c __kmem_cache_shrink] flush, free every empty node-partial slab, and
    reorder the rest fullest first (slabs with more than 32 free objects keep their order at
    the end); 1 when slabs remain.

    [Simplified: as in the reference model, slabs freed by shrink and destroy go to CPU 0's
    page lists; 4.6 frees them on the calling CPU]
    """
    flush_all(state, s)
    discard: list[Slab] = []
    promote: list[list[Slab]] = [[] for _ in range(SHRINK_PROMOTE_MAX)]
    rest: list[Slab] = []
    for slab in s.partial:
        free = slab.objects - slab.inuse
        if free == slab.objects:
            discard.append(slab)
        elif free <= SHRINK_PROMOTE_MAX:
            promote[free - 1].append(slab)
        else:
            rest.append(slab)
    s.partial = [slab for bucket in promote for slab in reversed(bucket)] + rest
    for slab in reversed(discard):
        slab.where = "none"
        discard_slab(state, s, slab, 0)
    return 1 if s.slabs else 0


# ---------------------------------------------------------------------------------------------
# The adapter: argument checks and results, per specs/slub.md
# ---------------------------------------------------------------------------------------------


class FastSlub:
    """The fast object allocator behind the :class:`specs.slub.ObjectAllocator` contract."""

    def __init__(self, config: MachineConfig, pages: PageAllocator) -> None:
        self.config = config
        self.capabilities = ALL_CAPABILITIES
        self.state = SlubState(nr_cpus=config.nr_cpus, pages=pages)
        create_kmalloc_caches(self.state)
        self._view: SlubView | None = None
        self._reports: tuple[SlubReport, ...] = ()

    def _bad_cpu(self, cpu: int) -> bool:
        return not 0 <= cpu < self.config.nr_cpus

    def _slab(self, obj: int) -> Slab | None:
        if obj < PAGE_OFFSET:
            return None
        return self.state.slab_of_pfn.get((obj - PAGE_OFFSET) >> PAGE_SHIFT)

    def _changed(self, s: Cache | None) -> None:
        """Forget the cached views this call may have changed."""
        self._view = None
        if s is not None:
            s.view = None

    # -- the contract -----------------------------------------------------------------------------

    def kmem_cache_create(self, name: str, size: int, align: int, flags: int) -> int | None:
        """See specs/slub.md kmem_cache_create."""
        state = self.state
        self._view = None
        if (not name or not 8 <= size <= KMALLOC_MAX_SIZE or align < 0
                or align & (align - 1) or align > KMALLOC_MAX_CACHE_SIZE):
            state.warnings += 1  # "kmem_cache_create(%s) failed with error"
            return None  # spec: kmem_cache_create
        flags &= CACHE_CREATE_MASK
        alias = find_mergeable(state, size, align, flags)
        if alias is not None:  # [4.6: __kmem_cache_alias]
            alias.refcount += 1
            alias.object_size = max(alias.object_size, size)
            alias.aliases.append(name)
            alias.view = None
            return alias.id
        cache = create_cache(state, name, size, align, flags)
        if cache is None:
            state.warnings += 1
            return None  # no slab order below MAX_ORDER holds an object
        return cache.id

    def kmem_cache_alloc(self, cache: int, gfp_mask: int, cpu: int = 0) -> int | None:
        """See specs/slub.md kmem_cache_alloc."""
        s = self.state.by_id.get(cache)
        if s is None or not 0 <= cpu < self.config.nr_cpus:
            return None  # spec: kmem_cache_alloc
        self._view = None
        if gfp_mask & GFP_SLAB_BUG_MASK:
            self.state.warnings += 1  # 4.6 BUG()s in new_slab
            return None  # spec: kmem_cache_alloc
        s.view = None
        return slab_alloc(self.state, s, gfp_mask, cpu)

    def kmalloc(self, size: int, gfp_mask: int, cpu: int = 0) -> int | None:
        """See specs/slub.md kmalloc.  [4.6: mm/slub.c __kmalloc, kmalloc_large;
        mm/slab_common.c kmalloc_slab, kmalloc_order]"""
        if not 0 <= cpu < self.config.nr_cpus:
            return None  # SLUB-R1
        state = self.state
        size &= SIZE_T
        if size > KMALLOC_MAX_CACHE_SIZE:
            order = get_order(size)
            pfn = state.pages.alloc_pages(gfp_mask | GFP_COMP, order, cpu)
            if pfn is None:
                return None
            self._view = None
            state.large[pfn] = order
            return page_address(pfn)
        if size == 0:
            return ZERO_SIZE_PTR
        self._view = None
        if gfp_mask & GFP_SLAB_BUG_MASK:
            state.warnings += 1
            return None  # SLUB-R1
        s = state.kmalloc_dma[size] if gfp_mask & GFP_DMA else state.kmalloc[size]
        s.view = None
        return slab_alloc(state, s, gfp_mask, cpu)

    def kmem_cache_free(self, cache: int, obj: int, cpu: int = 0) -> int:
        """See specs/slub.md kmem_cache_free.

        [Simplified: as in the reference model, an object of another cache is refused after
        cache_from_obj's report; 4.6 goes on to free it into the named cache]
        """
        s = self.state.by_id.get(cache)
        if s is None or self._bad_cpu(cpu):
            return EINVAL  # SLUB-R2
        slab = self._slab(obj)
        if slab is None:
            return EINVAL  # SLUB-R2: not slab memory
        if slab.cache is not s:
            if s.layout.flags & SLAB_CONSISTENCY_CHECKS:  # [4.6: mm/slab.h cache_from_obj]
                self._view = None
                self.state.reports.append(SlubReport(s.name, "Wrong slab cache", obj))
            return EINVAL  # SLUB-R2
        return self._free(slab, obj, cpu)

    def kfree(self, obj: int, cpu: int = 0) -> int:
        """See specs/slub.md kfree.  [4.6: mm/slub.c kfree]"""
        if 0 <= obj <= ZERO_SIZE_PTR:
            return 0  # ZERO_OR_NULL_PTR
        if not 0 <= cpu < self.config.nr_cpus:
            return EINVAL  # SLUB-R2
        state = self.state
        pfn = (obj - PAGE_OFFSET) >> PAGE_SHIFT if obj >= PAGE_OFFSET else -1
        order = state.large.get(pfn)
        if order is not None:
            if obj != page_address(pfn):
                return EINVAL  # SLUB-R2: inside a large block, not its start
            del state.large[pfn]
            self._view = None
            state.pages.free_pages(pfn, order, cpu)
            return 0
        slab = state.slab_of_pfn.get(pfn)
        if slab is None:
            return EINVAL  # SLUB-R2: neither a slab nor a large block
        return self._free(slab, obj, cpu)

    def _free(self, slab: Slab, obj: int, cpu: int) -> int:
        """The checks 4.6 makes (consistency-checked caches) or the spec assigns, then free."""
        s = slab.cache
        self._view = None
        if s.checks:
            s.view = None
            verdict = dbg.free_precheck(self.state.reports, s, slab, obj)
            if verdict:
                return verdict
        else:
            if obj in slab.avail:
                return EFAULT  # SLUB-R2: double free
            if not slab.vbase <= obj < slab.vend or (obj - slab.vbase) % s.layout.size:
                return EINVAL  # SLUB-R2: not an object start (check_valid_pointer)
            s.view = None
        return 0 if slab_free(self.state, s, slab, obj, cpu) else EINVAL

    def _is_free(self, slab: Slab, obj: int) -> bool:
        return obj in slab.avail

    def kmem_cache_destroy(self, cache: int) -> int:
        """See specs/slub.md kmem_cache_destroy.  [4.6: mm/slab_common.c kmem_cache_destroy]

        [Simplified: as in the reference model, after a destroy that failed a later destroy
        tries the shutdown again; 4.6 drops the count below zero and does nothing]
        """
        state = self.state
        s = state.by_id.get(cache)
        if s is None:
            return EINVAL  # SLUB-R3
        if s.refcount == 1 and s.boot:
            return EINVAL  # SLUB-R3: the kmalloc caches are never destroyed
        self._changed(s)
        s.refcount = max(s.refcount - 1, 0)
        if s.refcount:
            return 0
        if not shutdown_cache(state, s):
            state.warnings += 1  # "Slab cache still has objects"
            return EBUSY
        state.caches.remove(s)
        del state.by_id[s.id]
        return 0

    def kmem_cache_shrink(self, cache: int) -> int:
        """See specs/slub.md kmem_cache_shrink."""
        s = self.state.by_id.get(cache)
        if s is None:
            return EINVAL  # spec: kmem_cache_shrink
        self._changed(s)
        return kmem_cache_shrink(self.state, s)

    def ksize(self, obj: int) -> int:
        """See specs/slub.md ksize.  [4.6: mm/slub.c __ksize]"""
        if obj == ZERO_SIZE_PTR:
            return 0
        pfn = (obj - PAGE_OFFSET) >> PAGE_SHIFT if obj >= PAGE_OFFSET else -1
        order = self.state.large.get(pfn)
        if order is not None:
            return (1 << order) << PAGE_SHIFT if obj == page_address(pfn) else EINVAL
        slab = self.state.slab_of_pfn.get(pfn)
        if slab is None or not obj or not dbg.check_valid_pointer(slab.cache, slab, obj):
            return EINVAL  # spec: ksize
        if obj in slab.avail:
            return EFAULT  # spec: ksize
        return slab_ksize(slab.cache.layout)

    def write(self, addr: int, value: int, length: int) -> int:
        """See specs/slub.md write."""
        if not 0 <= value <= 0xFF or not 1 <= length <= 4096:
            return EINVAL
        return dbg.write(self.state.slab_of_pfn, addr, bytes([value]) * length, self._is_free)

    def view(self) -> SlubView:
        """A snapshot, cached until the next change; O(slabs + free objects) of the caches
        that changed since the last one."""
        view = self._view
        if view is None:
            state = self.state
            if len(self._reports) != len(state.reports):
                self._reports = tuple(state.reports)
            view = self._view = SlubView(
                nr_cpus=state.nr_cpus, caches=tuple(_cache_view(s) for s in state.caches),
                large=tuple(sorted(state.large.items())), reports=self._reports,
                warnings=state.warnings, nr_slab_pages=state.nr_slab_pages)
        return view


def _cache_view(s: Cache) -> CacheView:
    view = s.view
    if view is None:
        view = s.view = CacheView(
            id=s.id, name=s.name, aliases=tuple(s.aliases), refcount=s.refcount,
            layout=s.layout, object_size=s.object_size,
            slabs=tuple(dbg.slab_view(s.slabs[pfn]) for pfn in sorted(s.slabs)),
            cpus=tuple(CpuSlabView(page=c.page.pfn if c.page is not None else -1,
                                   freelist=tuple(c.freelist[::-1]),
                                   partial=tuple(slab.pfn for slab in c.partial))
                       for c in s.cpus),
            partial=tuple(slab.pfn for slab in s.partial),
            full=tuple(slab.pfn for slab in s.full))
    return view
