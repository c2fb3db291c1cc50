"""The reference SLUB allocator: kmem caches, slabs, per-cpu and node lists, kmalloc, debug.

Written to be read beside 4.6's ``mm/slub.c`` and ``mm/slab_common.c``: every function names
the function it models.  The lock-free parts of 4.6 (cmpxchg loops, tids) collapse to plain
updates because the model runs one call at a time; what remains is what a caller can see:
which object comes back, which list a slab is on, which pages go back to the page allocator
and which debug reports are printed.

Slab pages come from the page allocator given to the factory.  Object bytes are kept (one
``bytearray`` per slab) only for caches with SLAB_RED_ZONE or SLAB_POISON, the only ones whose
checks read them.  [Simplified: one node; no NUMA node matching, no pfmemalloc slabs, no
memcg, no constructors, no RCU-delayed slab freeing (SLAB_DESTROY_BY_RCU changes the layout
only), no SLAB_TRACE output, no alloc/free tracks (SLAB_STORE_USER reserves their bytes)]

The debug checks live in :mod:`refmodel.slub_debug`.
"""

from __future__ import annotations

from typing import Final

import attrs

from refmodel import slub_debug as dbg
from refmodel.slub_debug import Cache, CpuSlab, Slab
from specs import gfp
from specs.buddy import PageAllocator
from specs.errno import Errno
from specs.machine import MachineConfig
from specs.slub import (
    ALL_CAPABILITIES,
    CACHE_CREATE_MASK,
    KMALLOC_BOOT_ORDER,
    KMALLOC_MAX_CACHE_SIZE,
    KMALLOC_MAX_SIZE,
    KMALLOC_SIZES,
    SHRINK_PROMOTE_MAX,
    SLAB_CACHE_DMA,
    SLAB_CONSISTENCY_CHECKS,
    SLAB_MERGE_SAME,
    SLAB_NEVER_MERGE,
    SLAB_STORE_USER,
    WORD,
    ZERO_SIZE_PTR,
    CacheView,
    CpuSlabView,
    SlabView,
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
    virt_to_pfn,
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
#: spelled outside the class: inside it, ``gfp.__GFP_COMP`` would be name-mangled
KMALLOC_LARGE_GFP: Final = gfp.__GFP_COMP


@attrs.define
class SlubState:
    """Everything the allocator owns: caches in creation order, large kmallocs, reports."""

    nr_cpus: int
    pages: PageAllocator
    caches: list[Cache] = attrs.field(factory=list)
    next_id: int = 0
    #: pfn -> slab, for every page (head and tail) of every slab
    slab_of_pfn: dict[int, Slab] = attrs.field(factory=dict)
    #: head pfn -> order of every kmalloc_large block
    large: dict[int, int] = attrs.field(factory=dict)
    kmalloc: dict[int, Cache] = attrs.field(factory=dict)
    kmalloc_dma: dict[int, Cache] = attrs.field(factory=dict)
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
    alloc_gfp = (flags | gfp.__GFP_NOWARN | gfp.__GFP_NORETRY) & ~gfp.__GFP_NOFAIL
    if alloc_gfp & gfp.__GFP_DIRECT_RECLAIM and layout.order > layout.min_order:
        alloc_gfp = (alloc_gfp | gfp.__GFP_NOMEMALLOC) & ~(gfp.__GFP_RECLAIM | gfp.__GFP_NOFAIL)
    order, objects = layout.order, layout.objects
    pfn = state.pages.alloc_pages(alloc_gfp | gfp.__GFP_NOTRACK, order, cpu)
    if pfn is None:
        order, objects = layout.min_order, layout.min_objects
        pfn = state.pages.alloc_pages(flags | gfp.__GFP_NOTRACK, order, cpu)
        if pfn is None:
            return None
    slab = Slab(pfn=pfn, order=order, objects=objects, cache=s)
    if dbg.keeps_bytes(s):
        slab.mem = dbg.initial_bytes(s, order)
    for i in range(objects):
        obj = dbg.object_address(s, slab, i)
        dbg.setup_object_debug(s, slab, obj)
        dbg.set_freepointer(s, slab, obj, dbg.object_address(s, slab, i + 1)
                            if i + 1 < objects else 0)
    slab.freelist = [dbg.object_address(s, slab, i) for i in range(objects)]
    slab.inuse = objects
    slab.frozen = True
    for page in range(pfn, pfn + (1 << order)):
        state.slab_of_pfn[page] = slab
    s.slabs[pfn] = slab
    state.nr_slab_pages += 1 << order
    return slab


def new_slab(state: SlubState, s: Cache, flags: int, cpu: int) -> Slab | None:
    """[4.6: mm/slub.c new_slab] only reclaim and constraint bits of the caller's mask reach
    the page allocator (the GFP_SLAB_BUG_MASK check is made on entry, see kmem_cache_alloc)."""
    return allocate_slab(state, s, flags & (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK), cpu)


def discard_slab(state: SlubState, s: Cache, slab: Slab, cpu: int) -> None:
    """[4.6: mm/slub.c discard_slab, free_slab, __free_slab] consistency-checked caches verify
    the slab once more; the pages go back to the page allocator."""
    if s.layout.flags & SLAB_CONSISTENCY_CHECKS:
        dbg.slab_pad_check(state.reports, s, slab)
        for i in range(slab.objects):
            dbg.check_object(state.reports, s, slab, dbg.object_address(s, slab, i),
                             dbg.SLUB_RED_INACTIVE)
    for page in range(slab.pfn, slab.pfn + (1 << slab.order)):
        del state.slab_of_pfn[page]
    del s.slabs[slab.pfn]
    state.nr_slab_pages -= 1 << slab.order
    state.pages.free_pages(slab.pfn, slab.order, cpu)


# ---------------------------------------------------------------------------------------------
# Lists [4.6: mm/slub.c add_partial, remove_partial, add_full, acquire_slab, get_partial_node]
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
    CPU slab (its whole freelist taken); later ones go to the CPU partial list until more than
    cpu_partial / 2 free objects are collected."""
    got: list[int] | None = None
    available = 0
    for slab in list(s.partial):
        objects = slab.objects - slab.inuse
        remove_partial(s, slab)
        slab.frozen = True
        available += objects
        if got is None:
            got = slab.freelist
            slab.freelist = []
            slab.inuse = slab.objects
            if c.page is not None:  # a slab debug checks marked used: 4.6 forgets it, frozen
                c.page.where, c.page.cpu = "none", -1
            c.page = slab
            slab.where, slab.cpu = "cpu", cpu
        else:
            put_cpu_partial(state, s, slab, cpu, drain=False)
        if not has_cpu_partial(s) or available > s.cpu_partial // 2:
            break
    return got


def has_cpu_partial(s: Cache) -> bool:
    """[4.6: kmem_cache_has_cpu_partial] debug caches keep no CPU partial slabs."""
    return not s.layout.debug


# ---------------------------------------------------------------------------------------------
# Per-cpu state [4.6: deactivate_slab, unfreeze_partials, put_cpu_partial, flush_slab]
# ---------------------------------------------------------------------------------------------


def deactivate_slab(state: SlubState, s: Cache, slab: Slab, freelist: list[int],
                    cpu: int) -> None:
    """[4.6: mm/slub.c deactivate_slab] the CPU freelist goes back onto the page freelist one
    object at a time (so in reverse), the slab is unfrozen and filed: freed when empty and the
    node already has min_partial slabs, partial when it has free objects (at the tail if
    remote frees had arrived), full otherwise."""
    tail = bool(slab.freelist)
    for obj in freelist:
        dbg.set_freepointer(s, slab, obj, slab.freelist[0] if slab.freelist else 0)
        slab.freelist.insert(0, obj)
        slab.inuse -= 1
    slab.frozen = False
    slab.where, slab.cpu = "none", -1
    if not slab.inuse and len(s.partial) >= s.min_partial:
        discard_slab(state, s, slab, cpu)
    elif slab.freelist:
        add_partial(s, slab, tail)
    else:
        add_full(s, slab)


def unfreeze_partials(state: SlubState, s: Cache, c: CpuSlab, cpu: int) -> None:
    """[4.6: mm/slub.c unfreeze_partials] every CPU partial slab to the node list tail, except
    empty ones while the node has min_partial slabs: those are freed, after the others."""
    discard: list[Slab] = []
    while c.partial:
        slab = c.partial.pop(0)
        slab.frozen = False
        slab.where, slab.cpu = "none", -1
        if not slab.inuse and len(s.partial) >= s.min_partial:
            discard.insert(0, slab)
        else:
            add_partial(s, slab, tail=True)
    for slab in discard:
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
    assert c.page is not None
    slab, freelist = c.page, c.freelist
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
        obj: int | None = c.freelist.pop(0)
    else:
        obj = slab_alloc_slow(state, s, gfp_mask, cpu)
    if obj is not None and gfp_mask & gfp.__GFP_ZERO:
        dbg.zero_object(s, state.slab_of_pfn[virt_to_pfn(obj)], obj)
    return obj


def slab_alloc_slow(state: SlubState, s: Cache, gfp_mask: int, cpu: int) -> int | None:
    """[4.6: mm/slub.c ___slab_alloc] refill from the CPU slab's page freelist, then the CPU
    partial list, then the node partial list, then a new slab.  A debug cache checks the object
    and deactivates the slab at once, so its every alloc and free takes the slow path."""
    c = s.cpus[cpu]
    retry = False  # True after a debug check failed: 4.6 jumps to new_slab, not redo
    while True:
        if c.page is not None and not retry:
            if c.freelist:  # cannot happen single-threaded, kept for the shape of 4.6
                return c.freelist.pop(0)
            freelist = c.page.freelist  # get_freelist
            c.page.freelist = []
            c.page.inuse = c.page.objects
            c.page.frozen = bool(freelist)
            if freelist:
                c.freelist = freelist[1:]
                return freelist[0]
            c.page.where, c.page.cpu = "none", -1
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
        if not s.layout.debug:
            c.freelist = got[1:]
            return got[0]
        obj = got[0]
        if not dbg.alloc_debug_processing(state.reports, s, page, obj):
            page.inuse, page.freelist = page.objects, []  # "Marking all objects used"
            retry = True
            continue
        c.page, c.freelist = None, []
        deactivate_slab(state, s, page, got[1:], cpu)
        return obj


def new_slab_objects(state: SlubState, s: Cache, gfp_mask: int, cpu: int) -> list[int] | None:
    """[4.6: mm/slub.c new_slab_objects] a node-partial slab, else a fresh one (which replaces
    whatever CPU slab is left)."""
    c = s.cpus[cpu]
    got = get_partial_node(state, s, c, cpu)
    if got is not None:
        return got
    slab = new_slab(state, s, gfp_mask, cpu)
    if slab is None:
        return None
    if c.page is not None:
        flush_slab(state, s, c, cpu)
    got, slab.freelist = slab.freelist, []
    c.page = slab
    slab.where, slab.cpu = "cpu", cpu
    return got


def slab_out_of_memory(state: SlubState, gfp_mask: int) -> None:
    """[4.6: slab_out_of_memory] a report unless __GFP_NOWARN.
    [Simplified: no rate limiting]"""
    if not gfp_mask & gfp.__GFP_NOWARN:
        state.warnings += 1


# ---------------------------------------------------------------------------------------------
# Free [4.6: slab_free, __slab_free]
# ---------------------------------------------------------------------------------------------


def slab_free(state: SlubState, s: Cache, slab: Slab, obj: int, cpu: int) -> bool:
    """[4.6: mm/slub.c slab_free] onto the CPU freelist when the object is in this CPU's slab,
    else __slab_free.  False when a debug check refused the free."""
    c = s.cpus[cpu]
    if c.page is slab:
        dbg.set_freepointer(s, slab, obj, c.freelist[0] if c.freelist else 0)
        c.freelist.insert(0, obj)
        return True
    return slab_free_slow(state, s, slab, obj, cpu)


def slab_free_slow(state: SlubState, s: Cache, slab: Slab, obj: int, cpu: int) -> bool:
    """[4.6: mm/slub.c __slab_free] back on the page freelist.  A full slab that is not frozen
    is frozen onto this CPU's partial list (non-debug caches); a slab that became empty is
    freed if the node already holds min_partial slabs; a debug cache's full slab goes back on
    the node partial list."""
    if s.layout.debug and not dbg.free_debug_processing(state.reports, s, slab, obj):
        return False
    prior = bool(slab.freelist)
    dbg.set_freepointer(s, slab, obj, slab.freelist[0] if slab.freelist else 0)
    slab.freelist.insert(0, obj)
    slab.inuse -= 1
    was_frozen = slab.frozen
    if was_frozen:
        return True
    if has_cpu_partial(s) and not prior:
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
    if not has_cpu_partial(s) and not prior:
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
                  cpus=[CpuSlab() for _ in range(state.nr_cpus)])
    state.next_id += 1
    state.caches.append(cache)
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
    192 after 64 and 128, then their dma-kmalloc twins (CONFIG_ZONE_DMA).

    [Simplified: the bootstrap caches kmem_cache and kmem_cache_node are not modelled (4.6
    never merges them), and cache descriptors themselves take no slab memory]
    """
    for dma in (False, True):
        table = state.kmalloc_dma if dma else state.kmalloc
        for index in KMALLOC_BOOT_ORDER:
            cache = create_cache(state, kmalloc_cache_name(index, dma), KMALLOC_SIZES[index],
                                 8, SLAB_CACHE_DMA if dma else 0)
            assert cache is not None
            table[index] = cache


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
                s.name, "Objects remaining in cache on __kmem_cache_shutdown()",
                page_address(slab.pfn)))
    return not s.partial and not s.slabs


def kmem_cache_shrink(state: SlubState, s: Cache) -> int:
    """[4.6: mm/slub.c __kmem_cache_shrink] flush, free every empty node-partial slab, and
    reorder the rest fullest first (slabs with more than 32 free objects keep their order at
    the end); 1 when slabs remain.

    [Simplified: slabs freed by shrink and destroy go to CPU 0's page lists; 4.6 frees them
    on the calling CPU]
    """
    flush_all(state, s)
    discard: list[Slab] = []
    promote: list[list[Slab]] = [[] for _ in range(SHRINK_PROMOTE_MAX)]
    rest: list[Slab] = []
    for slab in s.partial:
        free = slab.objects - slab.inuse
        if free == slab.objects:
            discard.insert(0, slab)
        elif free <= SHRINK_PROMOTE_MAX:
            promote[free - 1].insert(0, slab)
        else:
            rest.append(slab)
    s.partial = [slab for bucket in promote for slab in bucket] + rest
    for slab in discard:
        slab.where = "none"
        discard_slab(state, s, slab, 0)
    return 1 if s.slabs else 0


# ---------------------------------------------------------------------------------------------
# The adapter: argument checks and results, per specs/slub.md
# ---------------------------------------------------------------------------------------------


class RefSlub:
    """The reference object allocator behind the :class:`specs.slub.ObjectAllocator` contract."""

    def __init__(self, config: MachineConfig, pages: PageAllocator) -> None:
        self.config = config
        self.capabilities = ALL_CAPABILITIES
        self.state = SlubState(nr_cpus=config.nr_cpus, pages=pages)
        create_kmalloc_caches(self.state)

    # -- lookups ----------------------------------------------------------------------------------

    def _cache(self, cache_id: int) -> Cache | None:
        for cache in self.state.caches:
            if cache.id == cache_id:
                return cache
        return None

    def _boot_caches(self) -> list[Cache]:
        return [*self.state.kmalloc.values(), *self.state.kmalloc_dma.values()]

    def _bad_cpu(self, cpu: int) -> bool:
        return not 0 <= cpu < self.config.nr_cpus

    # -- the contract -----------------------------------------------------------------------------

    def kmem_cache_create(self, name: str, size: int, align: int, flags: int) -> int | None:
        """See specs/slub.md kmem_cache_create."""
        state = self.state
        # VALIDATE: kmem_cache_sanity_check (CONFIG_DEBUG_VM), and an alignment ALIGN() can use
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
            return alias.id
        cache = create_cache(state, name, size, align, flags)
        if cache is None:
            state.warnings += 1
            return None  # no slab order below MAX_ORDER holds an object
        return cache.id

    def kmem_cache_alloc(self, cache: int, gfp_mask: int, cpu: int = 0) -> int | None:
        """See specs/slub.md kmem_cache_alloc."""
        s = self._cache(cache)
        if self._bad_cpu(cpu) or s is None:
            return None  # spec: kmem_cache_alloc
        if gfp_mask & GFP_SLAB_BUG_MASK:
            self.state.warnings += 1  # 4.6 BUG()s in new_slab
            return None  # spec: kmem_cache_alloc
        return slab_alloc(self.state, s, gfp_mask, cpu)

    def kmalloc(self, size: int, gfp_mask: int, cpu: int = 0) -> int | None:
        """See specs/slub.md kmalloc.  [4.6: mm/slub.c __kmalloc, kmalloc_large;
        mm/slab_common.c kmalloc_slab, kmalloc_order]"""
        if self._bad_cpu(cpu):
            return None  # SLUB-R1
        size &= SIZE_T
        if size > KMALLOC_MAX_CACHE_SIZE:
            order = get_order(size)
            pfn = self.state.pages.alloc_pages(gfp_mask | KMALLOC_LARGE_GFP, order, cpu)
            if pfn is None:
                return None
            self.state.large[pfn] = order
            return page_address(pfn)
        if size == 0:
            return ZERO_SIZE_PTR
        if gfp_mask & GFP_SLAB_BUG_MASK:
            self.state.warnings += 1
            return None  # SLUB-R1
        index = kmalloc_index(size)
        s = self.state.kmalloc_dma[index] if gfp_mask & gfp.GFP_DMA else self.state.kmalloc[index]
        return slab_alloc(self.state, s, gfp_mask, cpu)

    def kmem_cache_free(self, cache: int, obj: int, cpu: int = 0) -> int:
        """See specs/slub.md kmem_cache_free.

        [Simplified: an object of another cache is refused after cache_from_obj's report;
        4.6 goes on to free it into the named cache with that cache's geometry]
        """
        s = self._cache(cache)
        if self._bad_cpu(cpu) or s is None:
            return EINVAL  # SLUB-R2
        slab = self.state.slab_of_pfn.get(virt_to_pfn(obj))
        if slab is None:
            return EINVAL  # SLUB-R2: not slab memory
        if slab.cache is not s:
            if s.layout.flags & SLAB_CONSISTENCY_CHECKS:  # [4.6: mm/slab.h cache_from_obj]
                self.state.reports.append(SlubReport(s.name, "Wrong slab cache", obj))
            return EINVAL  # SLUB-R2
        return self._free(slab, obj, cpu)

    def kfree(self, obj: int, cpu: int = 0) -> int:
        """See specs/slub.md kfree.  [4.6: mm/slub.c kfree]"""
        if 0 <= obj <= ZERO_SIZE_PTR:
            return 0  # ZERO_OR_NULL_PTR
        if self._bad_cpu(cpu):
            return EINVAL  # SLUB-R2
        pfn = virt_to_pfn(obj)
        if pfn in self.state.large:
            if obj != page_address(pfn):
                return EINVAL  # SLUB-R2: inside a large block, not its start
            order = self.state.large.pop(pfn)
            self.state.pages.free_pages(pfn, order, cpu)
            return 0
        slab = self.state.slab_of_pfn.get(pfn)
        if slab is None:
            return EINVAL  # SLUB-R2: neither a slab nor a large block
        return self._free(slab, obj, cpu)

    def _free(self, slab: Slab, obj: int, cpu: int) -> int:
        """The checks 4.6 makes (consistency-checked caches) or the spec assigns, then free."""
        s = slab.cache
        if s.layout.flags & SLAB_CONSISTENCY_CHECKS:
            verdict = dbg.free_precheck(self.state.reports, s, slab, obj)
            if verdict:
                return verdict
        else:
            if not dbg.is_object_start(s, slab, obj):
                return EINVAL  # SLUB-R2
            if self._is_free(slab, obj):
                return EFAULT  # SLUB-R2: double free
        return 0 if slab_free(self.state, s, slab, obj, cpu) else EINVAL

    def _is_free(self, slab: Slab, obj: int) -> bool:
        if obj in slab.freelist:
            return True
        return any(c.page is slab and obj in c.freelist for c in slab.cache.cpus)

    def kmem_cache_destroy(self, cache: int) -> int:
        """See specs/slub.md kmem_cache_destroy.  [4.6: mm/slab_common.c kmem_cache_destroy]

        [Simplified: after a destroy that failed (objects remain, the cache stays with no
        reference) a later destroy tries the shutdown again; 4.6 drops the count below zero
        and does nothing]
        """
        s = self._cache(cache)
        if s is None:
            return EINVAL  # SLUB-R3
        if s.refcount == 1 and s in self._boot_caches():
            return EINVAL  # SLUB-R3: the kmalloc caches are never destroyed
        s.refcount = max(s.refcount - 1, 0)
        if s.refcount:
            return 0
        if not shutdown_cache(self.state, s):
            self.state.warnings += 1  # "Slab cache still has objects"
            return EBUSY
        self.state.caches.remove(s)
        return 0

    def kmem_cache_shrink(self, cache: int) -> int:
        """See specs/slub.md kmem_cache_shrink."""
        s = self._cache(cache)
        if s is None:
            return EINVAL  # spec: kmem_cache_shrink
        return kmem_cache_shrink(self.state, s)

    def ksize(self, obj: int) -> int:
        """See specs/slub.md ksize.  [4.6: mm/slub.c __ksize]"""
        if obj == ZERO_SIZE_PTR:
            return 0
        pfn = virt_to_pfn(obj)
        if pfn in self.state.large:
            return (1 << self.state.large[pfn]) << 12 if obj == page_address(pfn) else EINVAL
        slab = self.state.slab_of_pfn.get(pfn)
        if slab is None or not dbg.is_object_start(slab.cache, slab, obj):
            return EINVAL  # spec: ksize
        if self._is_free(slab, obj):
            return EFAULT  # spec: ksize
        return slab_ksize(slab.cache.layout)

    def write(self, addr: int, value: int, length: int) -> int:
        """See specs/slub.md write."""
        if not 0 <= value <= 0xFF or not 1 <= length <= 4096:
            return EINVAL
        return dbg.write(self.state.slab_of_pfn, addr, bytes([value]) * length, self._is_free)

    def view(self) -> SlubView:
        """A snapshot: cost O(slabs + free objects)."""
        state = self.state
        return SlubView(
            nr_cpus=state.nr_cpus, caches=tuple(_cache_view(s) for s in state.caches),
            large=tuple(sorted(state.large.items())), reports=tuple(state.reports),
            warnings=state.warnings, nr_slab_pages=state.nr_slab_pages)


def _cache_view(s: Cache) -> CacheView:
    return CacheView(
        id=s.id, name=s.name, aliases=tuple(s.aliases), refcount=s.refcount, layout=s.layout,
        object_size=s.object_size,
        slabs=tuple(SlabView(pfn=slab.pfn, order=slab.order, objects=slab.objects,
                             inuse=slab.inuse, freelist=tuple(slab.freelist),
                             frozen=slab.frozen, where=slab.where, cpu=slab.cpu)
                    for _pfn, slab in sorted(s.slabs.items())),
        cpus=tuple(CpuSlabView(page=c.page.pfn if c.page is not None else -1,
                               freelist=tuple(c.freelist),
                               partial=tuple(slab.pfn for slab in c.partial)) for c in s.cpus),
        partial=tuple(slab.pfn for slab in s.partial),
        full=tuple(slab.pfn for slab in s.full))
