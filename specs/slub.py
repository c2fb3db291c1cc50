"""The object-allocator contract (SLUB and kmalloc): Protocol, views, capabilities, geometry.

The normative text is ``specs/slub.md``; IDs used here (``SLUB-…``) are defined there.  The
cache geometry (``calculate_sizes``, ``calculate_order``) and the kmalloc size classes are
pure functions of their arguments and the CPU count, so they live here, shared by every
implementation and checked against hand-computed tables in ``tests/specs/test_slub_tables.py``.

Objects are kernel virtual addresses in the direct map: the byte at offset ``off`` of pfn
``pfn`` is ``PAGE_OFFSET + (pfn << PAGE_SHIFT) + off``, as 4.6's ``page_address`` gives it.
Results are plain ints or None: an address or None (NULL) from allocation, a cache id or None
from ``kmem_cache_create``, 0 or a negative errno from everything else.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol, runtime_checkable

import attrs

from specs import gfp
from specs.buddy import PageAllocator
from specs.machine import MAX_ORDER, PAGE_ALLOC_COSTLY_ORDER, PAGE_SHIFT, PAGE_SIZE, MachineConfig

# -- addresses [4.6: arch/x86/include/asm/page_64_types.h, include/linux/slab.h] -----------------
PAGE_OFFSET: Final = 0xFFFF880000000000
ZERO_SIZE_PTR: Final = 16
WORD: Final = 8  # sizeof(void *)

# -- kmalloc [4.6: include/linux/slab.h, x86-64 with SLUB] ---------------------------------------
KMALLOC_SHIFT_LOW: Final = 3
KMALLOC_MIN_SIZE: Final = 1 << KMALLOC_SHIFT_LOW
KMALLOC_SHIFT_HIGH: Final = PAGE_SHIFT + 1
KMALLOC_MAX_CACHE_SIZE: Final = 1 << KMALLOC_SHIFT_HIGH
KMALLOC_SHIFT_MAX: Final = MAX_ORDER + PAGE_SHIFT
KMALLOC_MAX_SIZE: Final = 1 << KMALLOC_SHIFT_MAX
ARCH_SLAB_MINALIGN: Final = 8
CACHE_LINE_SIZE: Final = 64  # cache_line_size() on x86-64

# -- cache flags [4.6: include/linux/slab.h, mm/slab.h, mm/slub.c] -------------------------------
SLAB_CONSISTENCY_CHECKS: Final = 0x00000100
SLAB_RED_ZONE: Final = 0x00000400
SLAB_POISON: Final = 0x00000800
SLAB_HWCACHE_ALIGN: Final = 0x00002000
SLAB_CACHE_DMA: Final = 0x00004000
SLAB_STORE_USER: Final = 0x00010000
SLAB_RECLAIM_ACCOUNT: Final = 0x00020000
SLAB_PANIC: Final = 0x00040000
SLAB_DESTROY_BY_RCU: Final = 0x00080000
SLAB_TRACE: Final = 0x00200000
SLAB_NOLEAKTRACE: Final = 0x00800000
SLAB_NOTRACK: Final = 0x01000000
SLAB_FAILSLAB: Final = 0x02000000
SLAB_ACCOUNT: Final = 0x04000000
__OBJECT_POISON: Final = 0x80000000
__CMPXCHG_DOUBLE: Final = 0x40000000

SLAB_DEBUG_FLAGS: Final = (SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER | SLAB_TRACE
                           | SLAB_CONSISTENCY_CHECKS)
#: [4.6: mm/slab.h CACHE_CREATE_MASK] with SLUB, CONFIG_SLUB_DEBUG, no DEBUG_OBJECTS/KASAN
CACHE_CREATE_MASK: Final = (SLAB_HWCACHE_ALIGN | SLAB_CACHE_DMA | SLAB_PANIC
                            | SLAB_DESTROY_BY_RCU | SLAB_DEBUG_FLAGS | SLAB_NOLEAKTRACE
                            | SLAB_RECLAIM_ACCOUNT | SLAB_NOTRACK | SLAB_ACCOUNT)
#: [4.6: mm/slab_common.c] flags that forbid merging, and flags a merge partner must share
SLAB_NEVER_MERGE: Final = (SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER | SLAB_TRACE
                           | SLAB_DESTROY_BY_RCU | SLAB_NOLEAKTRACE | SLAB_FAILSLAB)
SLAB_MERGE_SAME: Final = SLAB_RECLAIM_ACCOUNT | SLAB_CACHE_DMA | SLAB_NOTRACK | SLAB_ACCOUNT

# -- poison bytes [4.6: include/linux/poison.h] ----------------------------------------------
POISON_INUSE: Final = 0x5A
POISON_FREE: Final = 0x6B
POISON_END: Final = 0xA5
SLUB_RED_INACTIVE: Final = 0xBB
SLUB_RED_ACTIVE: Final = 0xCC

# -- SLUB tunables [4.6: mm/slub.c] ------------------------------------------------------------
MIN_PARTIAL: Final = 5
MAX_PARTIAL: Final = 10
MAX_OBJS_PER_PAGE: Final = 32767
SLUB_MIN_ORDER: Final = 0
SLUB_MAX_ORDER: Final = PAGE_ALLOC_COSTLY_ORDER
SHRINK_PROMOTE_MAX: Final = 32
#: sizeof(struct track) with CONFIG_STACKTRACE: addr, addrs[16], cpu, pid, when
TRACK_SIZE: Final = 8 + 16 * 8 + 4 + 4 + 8

#: kmalloc_caches[] index -> object size [4.6: mm/slab_common.c kmalloc_info]
KMALLOC_SIZES: Final[dict[int, int]] = {1: 96, 2: 192, **{i: 1 << i for i in range(3, 14)}}
#: [4.6: mm/slab_common.c size_index] kmalloc index for sizes 1..192, by (size - 1) // 8
SIZE_INDEX: Final = (3, 4, 5, 5, 6, 6, 6, 6, 1, 1, 1, 1, 7, 7, 7, 7, 2, 2, 2, 2, 2, 2, 2, 2)
#: [4.6: create_kmalloc_caches] the order the boot caches are created in (96 after 64, 192
#: after 128), then the same again as dma-kmalloc-* twins (CONFIG_ZONE_DMA)
KMALLOC_BOOT_ORDER: Final = (3, 4, 5, 6, 1, 7, 2, 8, 9, 10, 11, 12, 13)


class Capability(enum.Enum):
    """Optional parts of the contract.  A check that needs one an implementation lacks is
    reported as skipped, never as failed."""

    #: SLAB_RED_ZONE / SLAB_POISON / SLAB_CONSISTENCY_CHECKS as 4.6 implements them, with
    #: ``write`` (a buggy caller's store) and the ``reports`` of the view
    DEBUG = "debug"
    #: kmem_cache_create may return an existing compatible cache (find_mergeable)
    MERGE = "merge"
    #: slab placement, list order and per-cpu behaviour identical to 4.6, so lockstep
    #: comparison with refmodel is meaningful
    EXACT_PLACEMENT = "exact_placement"


ALL_CAPABILITIES: Final = frozenset(Capability)


# ---------------------------------------------------------------------------------------------
# Geometry: pure functions of the arguments and nr_cpu_ids
# ---------------------------------------------------------------------------------------------


def align_up(value: int, align: int) -> int:
    """ALIGN(value, align) for a power-of-two align."""
    return (value + align - 1) & ~(align - 1)


def fls(value: int) -> int:
    """fls: the 1-based index of the highest set bit, 0 for 0."""
    return value.bit_length()


def get_order(size: int) -> int:
    """[4.6: include/asm-generic/getorder.h get_order] smallest order whose pages hold size."""
    return max(0, fls((size - 1) >> PAGE_SHIFT)) if size > 0 else 0


def calculate_alignment(flags: int, align: int, size: int) -> int:
    """[4.6: mm/slab_common.c calculate_alignment] the cache line halved while the object fits
    twice, but never below the caller's alignment or 8."""
    if flags & SLAB_HWCACHE_ALIGN:
        ralign = CACHE_LINE_SIZE
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, ARCH_SLAB_MINALIGN)
    return align_up(align, WORD)


def order_objects(order: int, size: int, reserved: int = 0) -> int:
    """[4.6: mm/slub.c order_objects]"""
    return ((PAGE_SIZE << order) - reserved) // size


def min_objects_for(nr_cpu_ids: int) -> int:
    """[4.6: calculate_order] slub_min_objects when not given: 4 * (fls(nr_cpu_ids) + 1)."""
    return 4 * (fls(nr_cpu_ids) + 1)


def slab_order(size: int, min_objects: int, max_order: int, fract_leftover: int,
               reserved: int = 0) -> int:
    """[4.6: mm/slub.c slab_order] the smallest order from the one that fits min_objects whose
    leftover is at most 1/fract_leftover of the slab; max_order + 1 when none is."""
    if order_objects(SLUB_MIN_ORDER, size, reserved) > MAX_OBJS_PER_PAGE:
        return get_order(size * MAX_OBJS_PER_PAGE) - 1
    order = max(SLUB_MIN_ORDER, get_order(min_objects * size + reserved))
    while order <= max_order:
        slab_size = PAGE_SIZE << order
        if (slab_size - reserved) % size <= slab_size // fract_leftover:
            break
        order += 1
    return order


def calculate_order(size: int, nr_cpu_ids: int, reserved: int = 0) -> int:
    """[4.6: mm/slub.c calculate_order] the slab order for an object stride; -1 when none
    below MAX_ORDER holds one object (4.6 returns -ENOSYS)."""
    min_objects = min(min_objects_for(nr_cpu_ids),
                      order_objects(SLUB_MAX_ORDER, size, reserved))
    while min_objects > 1:
        fraction = 16
        while fraction >= 4:
            order = slab_order(size, min_objects, SLUB_MAX_ORDER, fraction, reserved)
            if order <= SLUB_MAX_ORDER:
                return order
            fraction //= 2
        min_objects -= 1
    order = slab_order(size, 1, SLUB_MAX_ORDER, 1, reserved)
    if order <= SLUB_MAX_ORDER:
        return order
    order = slab_order(size, 1, MAX_ORDER, 1, reserved)
    return order if order < MAX_ORDER else -1


@attrs.frozen
class Layout:
    """A cache's object layout and slab geometry, as kmem_cache_open leaves them."""

    object_size: int
    #: the stride between objects (object, red zones, free pointer, tracks, padding)
    size: int
    align: int
    #: flags after calculate_sizes (with __OBJECT_POISON where it applies)
    flags: int
    #: where the free pointer sits, from the object start
    offset: int
    #: end of the object proper plus right red zone: where metadata begins
    inuse: int
    red_left_pad: int
    #: the slab order and objects per slab (``oo``), and the fallback (``min``)
    order: int
    objects: int
    min_order: int
    min_objects: int
    min_partial: int
    cpu_partial: int
    #: gfp bits every slab page is allocated with (__GFP_COMP, GFP_DMA, __GFP_RECLAIMABLE)
    allocflags: int

    @property
    def debug(self) -> bool:
        """kmem_cache_debug: any debug flag, so no cpu partial lists and no fast paths."""
        return bool(self.flags & SLAB_DEBUG_FLAGS)


def calculate_sizes(object_size: int, align: int, flags: int, nr_cpu_ids: int) -> Layout | None:
    """[4.6: mm/slub.c kmem_cache_open, calculate_sizes, set_min_partial] the layout of a new
    cache; ``align`` is already calculate_alignment's result.  None when no order fits."""
    size = align_up(object_size, WORD)
    if flags & SLAB_POISON and not flags & SLAB_DESTROY_BY_RCU:
        flags |= __OBJECT_POISON
    else:
        flags &= ~__OBJECT_POISON
    if flags & SLAB_RED_ZONE and size == object_size:
        size += WORD
    inuse = size
    offset = 0
    if flags & (SLAB_DESTROY_BY_RCU | SLAB_POISON):
        offset = size
        size += WORD
    if flags & SLAB_STORE_USER:
        size += 2 * TRACK_SIZE
    red_left_pad = 0
    if flags & SLAB_RED_ZONE:
        size += WORD
        red_left_pad = align_up(WORD, align)
        size += red_left_pad
    size = align_up(size, align)
    order = calculate_order(size, nr_cpu_ids) if size else -1
    if order < 0:
        return None
    allocflags = gfp.__GFP_COMP if order else 0
    if flags & SLAB_CACHE_DMA:
        allocflags |= gfp.GFP_DMA
    if flags & SLAB_RECLAIM_ACCOUNT:
        allocflags |= gfp.__GFP_RECLAIMABLE
    objects = order_objects(order, size)
    if not objects:
        return None
    if flags & (SLAB_CONSISTENCY_CHECKS | SLAB_STORE_USER | SLAB_TRACE) == 0:
        flags |= __CMPXCHG_DOUBLE
    min_partial = min(max((size.bit_length() - 1) // 2, MIN_PARTIAL), MAX_PARTIAL)
    if flags & SLAB_DEBUG_FLAGS:
        cpu_partial = 0
    elif size >= PAGE_SIZE:
        cpu_partial = 2
    elif size >= 1024:
        cpu_partial = 6
    elif size >= 256:
        cpu_partial = 13
    else:
        cpu_partial = 30
    return Layout(object_size=object_size, size=size, align=align, flags=flags, offset=offset,
                  inuse=inuse, red_left_pad=red_left_pad, order=order, objects=objects,
                  min_order=get_order(size), min_objects=order_objects(get_order(size), size),
                  min_partial=min_partial, cpu_partial=cpu_partial, allocflags=allocflags)


def kmalloc_index(size: int) -> int:
    """[4.6: mm/slab_common.c kmalloc_slab] the kmalloc_caches[] index serving 1..8192 bytes:
    the size_index table up to 192 (which is where 96 and 192 come in), fls(size - 1) above."""
    if not 1 <= size <= KMALLOC_MAX_CACHE_SIZE:
        raise ValueError(f"kmalloc size {size} has no cache")
    if size <= 192:
        return SIZE_INDEX[(size - 1) // 8]
    return fls(size - 1)


def kmalloc_cache_name(index: int, dma: bool = False) -> str:
    """``kmalloc-96``, ``dma-kmalloc-8192``."""
    return f"{'dma-' if dma else ''}kmalloc-{KMALLOC_SIZES[index]}"


def slab_ksize(layout: Layout) -> int:
    """[4.6: mm/slab.h slab_ksize] the bytes of an object a caller may use."""
    if layout.flags & (SLAB_RED_ZONE | SLAB_POISON):
        return layout.object_size
    if layout.flags & (SLAB_DESTROY_BY_RCU | SLAB_STORE_USER):
        return layout.inuse
    return layout.size


def page_address(pfn: int) -> int:
    """[4.6: lowmem_page_address] the direct-map address of a page."""
    return PAGE_OFFSET + (pfn << PAGE_SHIFT)


def virt_to_pfn(addr: int) -> int:
    """[4.6: __pa, virt_to_page] the pfn of a direct-map address (-1 below PAGE_OFFSET)."""
    return (addr - PAGE_OFFSET) >> PAGE_SHIFT if addr >= PAGE_OFFSET else -1


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------

#: where a slab is: a CPU's slab, on a CPU's partial list, on the node partial list, on the
#: node full list (debug caches with SLAB_STORE_USER), or on no list (full, not debug)
SLAB_WHERE: Final = ("cpu", "cpu_partial", "partial", "full", "none")


@attrs.frozen
class SlabView:
    """One slab [4.6: struct page of a PG_slab head page]."""

    pfn: int
    order: int
    objects: int
    #: page->inuse: objects not on the page freelist (a CPU freelist's objects count as in use)
    inuse: int
    #: page->freelist as addresses, first free object first
    freelist: tuple[int, ...]
    frozen: bool
    #: one of SLAB_WHERE
    where: str
    #: the CPU for "cpu" and "cpu_partial", else -1
    cpu: int


@attrs.frozen
class CpuSlabView:
    """One CPU's state for one cache [4.6: struct kmem_cache_cpu]."""

    #: pfn of c->page, or -1
    page: int
    #: c->freelist as addresses
    freelist: tuple[int, ...]
    #: c->partial as pfns, list head first
    partial: tuple[int, ...]


@attrs.frozen
class CacheView:
    """One cache [4.6: struct kmem_cache, struct kmem_cache_node]."""

    id: int
    name: str
    #: names of caches merged into this one (kmem_cache_create calls that returned it)
    aliases: tuple[str, ...]
    refcount: int
    layout: Layout
    #: object_size as aliases may have widened it (__kmem_cache_alias)
    object_size: int
    #: every slab of the cache, by pfn
    slabs: tuple[SlabView, ...]
    cpus: tuple[CpuSlabView, ...]
    #: n->partial as pfns, list head first; nr_partial is its length
    partial: tuple[int, ...]
    #: n->full as pfns (only SLAB_STORE_USER caches keep it)
    full: tuple[int, ...]


@attrs.frozen
class SlubReport:
    """One slab_bug/slab_err/object_err report, as dmesg would show it."""

    cache: str
    #: the report's title: ``Redzone overwritten``, ``Object already free``, ...
    what: str
    #: the object (or slab page address) reported on
    addr: int
    #: first and last corrupted byte for ``... overwritten`` reports, else 0
    first: int = 0
    last: int = 0


@attrs.frozen
class SlubView:
    """A snapshot of the object allocator; it never changes after it is taken."""

    nr_cpus: int
    #: live caches (and caches whose destroy failed), in creation order
    caches: tuple[CacheView, ...]
    #: (pfn, order) of every kmalloc_large block, by pfn
    large: tuple[tuple[int, int], ...]
    #: every debug report so far (what dmesg would show)
    reports: tuple[SlubReport, ...]
    #: slab_out_of_memory, kmalloc_slab's WARN_ON_ONCE, kmem_cache_create/destroy failures
    warnings: int
    #: NR_SLAB_RECLAIMABLE + NR_SLAB_UNRECLAIMABLE: pages in slabs
    nr_slab_pages: int

    def cache(self, cache_id: int) -> CacheView | None:
        """The cache with this id, if it is live."""
        for cache in self.caches:
            if cache.id == cache_id:
                return cache
        return None


@runtime_checkable
class ObjectAllocator(Protocol):
    """SLUB and kmalloc as kernel code calls them.  ``cpu`` is the CPU making the call."""

    config: MachineConfig
    capabilities: frozenset[Capability]

    def kmem_cache_create(self, name: str, size: int, align: int, flags: int) -> int | None:
        """A cache id (an existing one when merged), or None (specs/slub.md kmem_cache_create)."""
        ...

    def kmem_cache_alloc(self, cache: int, gfp_mask: int, cpu: int = 0) -> int | None:
        """An object address, or None (specs/slub.md kmem_cache_alloc)."""
        ...

    def kmem_cache_free(self, cache: int, obj: int, cpu: int = 0) -> int:
        """0 or -errno (SLUB-R2)."""
        ...

    def kmem_cache_destroy(self, cache: int) -> int:
        """0, -EBUSY when objects remain, -EINVAL for no such cache (SLUB-R3)."""
        ...

    def kmem_cache_shrink(self, cache: int) -> int:
        """0 when the cache holds no slab afterwards, 1 when some remain; -EINVAL
        (specs/slub.md kmem_cache_shrink)."""
        ...

    def kmalloc(self, size: int, gfp_mask: int, cpu: int = 0) -> int | None:
        """An address, ZERO_SIZE_PTR for size 0, or None (SLUB-R1)."""
        ...

    def kfree(self, obj: int, cpu: int = 0) -> int:
        """0 or -errno; NULL and ZERO_SIZE_PTR are no-ops (SLUB-R2)."""
        ...

    def ksize(self, obj: int) -> int:
        """Usable bytes of a live object, 0 for ZERO_SIZE_PTR, or -errno (specs/slub.md ksize)."""
        ...

    def write(self, addr: int, value: int, length: int) -> int:
        """A caller's store of ``length`` bytes of ``value`` at ``addr`` in slab memory:
        0 or -errno (see specs/slub.md write)."""
        ...

    def view(self) -> SlubView:
        """A snapshot of every cache, slab, per-cpu state and report."""
        ...


class ObjectAllocatorFactory(Protocol):
    """``module:factory`` plug-ins are callables of this shape: slab pages come from
    ``pages``, which the caller owns and may inspect."""

    def __call__(self, config: MachineConfig, pages: PageAllocator) -> ObjectAllocator: ...
