"""SLUB's state records and debug checks over numpy-backed slab bytes.

The checks make the same decisions, reports and repairs as 4.6's (and the reference model's),
but find faults without a Python loop over bytes:

* **A clean region costs one C call.**  ``bytearray.count(value, start, end)`` equals the
  region's length exactly when every byte holds the expected pattern; only a dirty region goes
  on to ``np.flatnonzero`` over a numpy view of the same buffer, whose first and last entries
  are the first and last corrupted bytes ``check_bytes_and_report`` reports and restores.
* **A slab is set up from a template.**  The bytes a new slab of one cache and order starts
  with (poison, red zones, padding) are computed once with numpy and copied; the free pointers,
  which depend on the slab's address, are written in one strided store through a uint64 view.
* **A slab about to be freed is verified whole.**  ``discard_slab`` in a consistency-checked
  cache checks every object; here one masked comparison of the slab against its expected
  "every object free" image, and one vectorised validity test of every free pointer, prove
  the common case (nothing corrupted) without touching objects one by one.  Only a slab with
  a fault is checked object by object, in 4.6's order, so the reports are the same.

[4.6: mm/slub.c check_object, check_bytes_and_report, check_pad_bytes, slab_pad_check,
check_slab, on_freelist, check_valid_pointer, init_object, alloc_debug_processing,
free_debug_processing]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from specs.errno import Errno
from specs.machine import PAGE_SIZE
from specs.slub import (
    __OBJECT_POISON,
    PAGE_OFFSET,
    POISON_END,
    POISON_FREE,
    POISON_INUSE,
    SLAB_CONSISTENCY_CHECKS,
    SLAB_POISON,
    SLAB_RED_ZONE,
    SLAB_STORE_USER,
    SLUB_RED_ACTIVE,
    SLUB_RED_INACTIVE,
    TRACK_SIZE,
    WORD,
    CacheView,
    Layout,
    SlabView,
    SlubReport,
    order_objects,
)

Bytes = npt.NDArray[np.uint8]
Reports = list[SlubReport]
PAGE_SHIFT: Final = 12
#: spelled outside the classes: inside one, ``__OBJECT_POISON`` would be name-mangled
OBJECT_POISON: Final = __OBJECT_POISON

# ---------------------------------------------------------------------------------------------
# State records
# ---------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class Slab:
    """One slab [4.6: the SLUB fields of struct page].

    Freelists are stored head *last*, so that taking and pushing the head (what every
    allocation and free does) is ``list.pop``/``list.append`` rather than an O(n) shift.
    """

    pfn: int
    order: int
    objects: int
    cache: Cache
    #: page_address(pfn)
    base: int
    #: check_valid_pointer's range: object starts are vbase + i * size below vend (vbase is
    #: base, or base + red_left_pad in a red-zoned cache)
    vbase: int
    vend: int
    inuse: int = 0
    #: page->freelist, head last
    free: list[int] = attrs.field(factory=list)
    #: every object on ``free`` or on the CPU freelist of the CPU whose slab this is: the
    #: double-free test in O(1), where 4.6's debug code walks the freelist
    avail: set[int] = attrs.field(factory=set)
    frozen: bool = False
    where: str = "none"
    cpu: int = -1
    #: page->pages and page->pobjects, as recorded when pushed on a CPU partial list
    pages: int = 0
    pobjects: int = 0
    #: the slab's bytes (caches with SLAB_RED_ZONE or SLAB_POISON), and a numpy view of them
    mem: bytearray | None = None
    arr: Bytes | None = None


@attrs.define(eq=False)
class CpuSlab:
    """[4.6: struct kmem_cache_cpu]; the freelist is head last, as a slab's."""

    page: Slab | None = None
    freelist: list[int] = attrs.field(factory=list)
    partial: list[Slab] = attrs.field(factory=list)


@attrs.define(eq=False)
class Cache:
    """[4.6: struct kmem_cache with its one struct kmem_cache_node]"""

    id: int
    name: str
    layout: Layout
    object_size: int
    min_partial: int
    cpu_partial: int
    cpus: list[CpuSlab]
    #: the byte patterns of a cache that keeps slab bytes, else None
    geometry: Geometry | None
    refcount: int = 1
    aliases: list[str] = attrs.field(factory=list)
    #: every slab, by head pfn
    slabs: dict[int, Slab] = attrs.field(factory=dict)
    partial: list[Slab] = attrs.field(factory=list)
    full: list[Slab] = attrs.field(factory=list)
    #: one of the kmalloc caches made at boot
    boot: bool = False
    #: the view of this cache, until something in it changes
    view: CacheView | None = None
    #: kmem_cache_debug, and SLAB_CONSISTENCY_CHECKS, read on every free
    debug: bool = attrs.field(init=False)
    checks: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.debug = self.layout.debug
        self.checks = bool(self.layout.flags & SLAB_CONSISTENCY_CHECKS)


# ---------------------------------------------------------------------------------------------
# Byte geometry: what each region of an object holds, precomputed per cache
# ---------------------------------------------------------------------------------------------


def _fill(value: int, length: int) -> bytes:
    return bytes([value]) * length


@attrs.define(eq=False)
class Geometry:
    """The byte patterns of one cache that keeps slab bytes, and its per-order slab images."""

    layout: Layout
    #: init_object's stores, as (offset from the object start, bytes), for each red-zone value
    init: dict[int, tuple[tuple[int, bytes], ...]]
    #: where check_pad_bytes starts, and the stride seen from the object start
    pad_from: int
    size_from_object: int
    #: order -> the bytes a new slab starts with (free pointers aside)
    initial: dict[int, bytes] = attrs.field(factory=dict)
    #: order -> (mask, expected & mask) of a slab whose every object is free
    idle: dict[int, tuple[Bytes, Bytes]] = attrs.field(factory=dict)

    @classmethod
    def of(cls, layout: Layout) -> Geometry | None:
        """None for caches whose checks never read bytes (no red zone, no poison)."""
        if not layout.flags & (SLAB_RED_ZONE | SLAB_POISON):
            return None
        init = {val: _init_stores(layout, val) for val in (SLUB_RED_ACTIVE, SLUB_RED_INACTIVE)}
        pad_from = layout.inuse + (WORD if layout.offset else 0)
        if layout.flags & SLAB_STORE_USER:
            pad_from += 2 * TRACK_SIZE
        sfo = (layout.size - layout.red_left_pad if layout.flags & SLAB_RED_ZONE
               else layout.size)
        return cls(layout=layout, init=init, pad_from=pad_from, size_from_object=sfo)

    def initial_bytes(self, order: int, objects: int) -> bytes:
        """[4.6: allocate_slab, setup_object_debug] a poisoned cache's slab starts as
        POISON_INUSE, then every object is initialised inactive.  [Simplified: other slabs
        start zeroed, as in the reference model; 4.6 leaves whatever the page held]"""
        image = self.initial.get(order)
        if image is None:
            layout = self.layout
            fill = POISON_INUSE if layout.flags & SLAB_POISON else 0
            arr = np.full(PAGE_SIZE << order, fill, dtype=np.uint8)
            if layout.flags & (SLAB_STORE_USER | SLAB_RED_ZONE | OBJECT_POISON):
                strides = arr[:objects * layout.size].reshape(objects, layout.size)
                for at, data in self.init[SLUB_RED_INACTIVE]:
                    start = layout.red_left_pad + at
                    strides[:, start:start + len(data)] = np.frombuffer(data, dtype=np.uint8)
            image = self.initial[order] = arr.tobytes()
        return image

    def idle_image(self, order: int, objects: int) -> tuple[Bytes, Bytes]:
        """The bytes check_object(SLUB_RED_INACTIVE) reads in every object of a slab, and
        their expected values (free pointers excluded: they are checked on their own)."""
        found = self.idle.get(order)
        if found is None:
            layout = self.layout
            mask = np.zeros(layout.size, dtype=np.uint8)
            want = np.zeros(layout.size, dtype=np.uint8)
            obj = layout.red_left_pad
            end_object = obj + layout.object_size

            def expect(start: int, length: int, value: int) -> None:
                if length > 0:
                    mask[start:start + length] = 0xFF
                    want[start:start + length] = value

            if layout.flags & SLAB_RED_ZONE:
                expect(0, layout.red_left_pad, SLUB_RED_INACTIVE)
                expect(end_object, layout.inuse - layout.object_size, SLUB_RED_INACTIVE)
            elif layout.flags & SLAB_POISON:
                expect(end_object, layout.inuse - layout.object_size, POISON_INUSE)
            if layout.flags & SLAB_POISON:
                if layout.flags & OBJECT_POISON:
                    expect(obj, layout.object_size - 1, POISON_FREE)
                    expect(end_object - 1, 1, POISON_END)
                expect(obj + self.pad_from, self.size_from_object - self.pad_from,
                       POISON_INUSE)
            found = self.idle[order] = (np.tile(mask, objects), np.tile(want, objects))
        return found


def _init_stores(layout: Layout, val: int) -> tuple[tuple[int, bytes], ...]:
    """[4.6: init_object] red zones to val; a poisoned object to 0x6b.. ending in 0xa5."""
    stores: list[tuple[int, bytes]] = []
    if layout.flags & SLAB_RED_ZONE:
        stores.append((-layout.red_left_pad, _fill(val, layout.red_left_pad)))
    if layout.flags & OBJECT_POISON:
        stores.append((0, _fill(POISON_FREE, layout.object_size - 1) + bytes([POISON_END])))
    if layout.flags & SLAB_RED_ZONE:
        stores.append((layout.object_size, _fill(val, layout.inuse - layout.object_size)))
    return tuple(stores)


# ---------------------------------------------------------------------------------------------
# Slab set-up and stores
# ---------------------------------------------------------------------------------------------


def fill_slab(s: Cache, slab: Slab) -> None:
    """[4.6: allocate_slab] the slab's bytes (when kept) with every object initialised and
    chained to the next by its free pointer, the last one NULL."""
    geo = s.geometry
    if geo is None:
        return
    layout = s.layout
    mem = bytearray(geo.initial_bytes(slab.order, slab.objects))
    arr = np.frombuffer(mem, dtype=np.uint8)
    words = arr.view(np.uint64)
    first = (layout.red_left_pad + layout.offset) // WORD
    step = layout.size // WORD
    chain = words[first:first + slab.objects * step:step]
    start = slab.base + layout.red_left_pad
    chain[:-1] = np.arange(1, slab.objects, dtype=np.uint64) * np.uint64(layout.size) \
        + np.uint64(start)
    chain[-1] = 0
    slab.mem, slab.arr = mem, arr


def set_freepointer(s: Cache, slab: Slab, obj: int, fp: int) -> None:
    """[4.6: set_freepointer] the next free object's address at obj + offset."""
    mem = slab.mem
    if mem is not None:
        at = obj - slab.base + s.layout.offset
        mem[at:at + WORD] = fp.to_bytes(WORD, "little")


def get_freepointer(s: Cache, slab: Slab, obj: int) -> int:
    """[4.6: get_freepointer]"""
    assert slab.mem is not None
    at = obj - slab.base + s.layout.offset
    return int.from_bytes(slab.mem[at:at + WORD], "little")


def zero_object(s: Cache, slab: Slab, obj: int) -> None:
    """[4.6: slab_alloc_node] __GFP_ZERO clears object_size bytes."""
    mem = slab.mem
    if mem is not None:
        at = obj - slab.base
        mem[at:at + s.object_size] = bytes(s.object_size)


def init_object(s: Cache, slab: Slab, obj: int, val: int) -> None:
    """[4.6: init_object] the precomputed stores for this red-zone value."""
    mem, geo = slab.mem, s.geometry
    if mem is None or geo is None:
        return
    at = obj - slab.base
    for rel, data in geo.init[val]:
        mem[at + rel:at + rel + len(data)] = data


def check_valid_pointer(s: Cache, slab: Slab, ptr: int) -> bool:
    """[4.6: check_valid_pointer] NULL, or an object start inside the slab."""
    if not ptr:
        return True
    return slab.vbase <= ptr < slab.vend and (ptr - slab.vbase) % s.layout.size == 0


def valid_range(layout: Layout, base: int, objects: int) -> tuple[int, int]:
    """[4.6: check_valid_pointer, restore_red_left] where a slab's object starts lie."""
    vbase = base + (layout.red_left_pad if layout.flags & SLAB_RED_ZONE and layout.debug else 0)
    return vbase, vbase + objects * layout.size


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_bytes_and_report(reports: Reports, s: Cache, slab: Slab, obj: int, what: str,
                           start: int, value: int, nbytes: int) -> bool:
    """[4.6: check_bytes_and_report] report the first..last wrong byte and restore them."""
    mem, arr = slab.mem, slab.arr
    if mem is None or arr is None or nbytes <= 0:
        return True
    at = start - slab.base
    if mem.count(value, at, at + nbytes) == nbytes:
        return True
    wrong = np.flatnonzero(arr[at:at + nbytes] != value)
    fault, last = int(wrong[0]), int(wrong[-1])
    reports.append(SlubReport(s.name, f"{what} overwritten", obj, start + fault, start + last))
    mem[at + fault:at + last + 1] = _fill(value, last + 1 - fault)
    return False


def check_pad_bytes(reports: Reports, s: Cache, slab: Slab, obj: int) -> bool:
    """[4.6: check_pad_bytes] the filler after the free pointer and tracks is POISON_INUSE."""
    geo = s.geometry
    if geo is None or geo.size_from_object == geo.pad_from:
        return True
    return check_bytes_and_report(reports, s, slab, obj, "Object padding", obj + geo.pad_from,
                                  POISON_INUSE, geo.size_from_object - geo.pad_from)


def slab_pad_check(reports: Reports, s: Cache, slab: Slab) -> bool:
    """[4.6: slab_pad_check] the slab's tail after the last object is POISON_INUSE.  As in
    4.6, the bytes restored are the remainder's length ending at the last wrong byte."""
    mem, arr = slab.mem, slab.arr
    if not s.layout.flags & SLAB_POISON or mem is None or arr is None:
        return True
    length = PAGE_SIZE << slab.order
    remainder = length % s.layout.size
    if not remainder or mem.count(POISON_INUSE, length - remainder, length) == remainder:
        return True
    wrong = np.flatnonzero(arr[length - remainder:length] != POISON_INUSE)
    fault = int(wrong[0])
    end = length - remainder + int(wrong[-1]) + 1
    base = slab.base
    reports.append(SlubReport(s.name, "Padding overwritten", base,
                              base + length - remainder + fault, base + end - 1))
    mem[end - remainder:end] = _fill(POISON_INUSE, remainder)
    return False


def check_object(reports: Reports, s: Cache, slab: Slab, obj: int, val: int) -> bool:
    """[4.6: check_object] red zones (or alignment padding), poison, padding, free pointer."""
    layout = s.layout
    end_object = obj + layout.object_size
    if layout.flags & SLAB_RED_ZONE:
        if not check_bytes_and_report(reports, s, slab, obj, "Redzone",
                                      obj - layout.red_left_pad, val, layout.red_left_pad):
            return False
        if not check_bytes_and_report(reports, s, slab, obj, "Redzone", end_object, val,
                                      layout.inuse - layout.object_size):
            return False
    elif layout.flags & SLAB_POISON and layout.object_size < layout.inuse:
        check_bytes_and_report(reports, s, slab, obj, "Alignment padding", end_object,
                               POISON_INUSE, layout.inuse - layout.object_size)
    if layout.flags & SLAB_POISON:
        if val != SLUB_RED_ACTIVE and layout.flags & OBJECT_POISON and (
                not check_bytes_and_report(reports, s, slab, obj, "Poison", obj, POISON_FREE,
                                           layout.object_size - 1)
                or not check_bytes_and_report(reports, s, slab, obj, "Poison", end_object - 1,
                                              POISON_END, 1)):
            return False
        check_pad_bytes(reports, s, slab, obj)
    if not layout.offset and val == SLUB_RED_ACTIVE:
        return True  # the free pointer overlays the object while it is allocated
    if slab.mem is not None and not check_valid_pointer(s, slab, get_freepointer(s, slab, obj)):
        reports.append(SlubReport(s.name, "Freepointer corrupt", obj))
        set_freepointer(s, slab, obj, 0)
        return False
    return True


def idle_slab_clean(s: Cache, slab: Slab) -> bool:
    """True when slab_pad_check and check_object(SLUB_RED_INACTIVE) of every object would all
    pass without a report or a repair: the slab's padding, red zones and poison equal the
    idle image and every free pointer is NULL or an object start (one numpy pass each)."""
    mem, arr, geo = slab.mem, slab.arr, s.geometry
    if mem is None or arr is None or geo is None:
        return True
    layout = s.layout
    length = PAGE_SIZE << slab.order
    span = slab.objects * layout.size
    if layout.flags & SLAB_POISON and mem.count(POISON_INUSE, span, length) != length - span:
        return False
    mask, want = geo.idle_image(slab.order, slab.objects)
    if not np.array_equal(arr[:span] & mask, want):
        return False
    words = arr.view(np.uint64)
    first = (layout.red_left_pad + layout.offset) // WORD
    step = layout.size // WORD
    fps = words[first:first + slab.objects * step:step]
    adjust = layout.red_left_pad if layout.flags & SLAB_RED_ZONE and layout.debug else 0
    rel = fps - np.uint64(slab.base + adjust)  # wraps below the slab: out of range
    valid = (fps == 0) | ((rel < np.uint64(span)) & (rel % np.uint64(layout.size) == 0))
    return bool(valid.all())


def verify_idle_slab(reports: Reports, s: Cache, slab: Slab) -> None:
    """[4.6: free_slab with SLAB_CONSISTENCY_CHECKS] the padding and every object, checked as
    free; object by object only when the whole-slab pass found something."""
    if idle_slab_clean(s, slab):
        return
    slab_pad_check(reports, s, slab)
    start = slab.base + s.layout.red_left_pad
    for i in range(slab.objects):
        check_object(reports, s, slab, start + i * s.layout.size, SLUB_RED_INACTIVE)


def check_slab(reports: Reports, s: Cache, slab: Slab) -> bool:
    """[4.6: check_slab] counts within bounds; the tail padding checked (and repaired)."""
    if slab.objects > order_objects(slab.order, s.layout.size):
        reports.append(SlubReport(s.name, "objects > max", slab.base))
        return False
    if slab.inuse > slab.objects:
        reports.append(SlubReport(s.name, "inuse > max", slab.base))
        return False
    slab_pad_check(reports, s, slab)
    return True


def alloc_debug_processing(reports: Reports, s: Cache, slab: Slab, obj: int) -> bool:
    """[4.6: alloc_debug_processing, alloc_consistency_checks] False: the caller marks every
    object of the slab used and takes another slab."""
    if s.layout.flags & SLAB_CONSISTENCY_CHECKS:
        if not check_slab(reports, s, slab):
            return False
        if not check_valid_pointer(s, slab, obj):
            reports.append(SlubReport(s.name, "Freelist Pointer check fails", obj))
            return False
        if not check_object(reports, s, slab, obj, SLUB_RED_INACTIVE):
            return False
    init_object(s, slab, obj, SLUB_RED_ACTIVE)
    return True


def free_precheck(reports: Reports, s: Cache, slab: Slab, obj: int) -> int:
    """[4.6: free_debug_processing, free_consistency_checks] the checks a consistency-checked
    cache makes before a free: 0, or the errno of the refusal (the object is not freed)."""
    check_slab(reports, s, slab)
    if not obj or not check_valid_pointer(s, slab, obj):
        reports.append(SlubReport(s.name, "Invalid object pointer", obj))
        return -Errno.EINVAL
    if obj in slab.free:  # on_freelist walks the page freelist only
        reports.append(SlubReport(s.name, "Object already free", obj))
        return -Errno.EFAULT
    if not check_object(reports, s, slab, obj, SLUB_RED_ACTIVE):
        return -Errno.EINVAL
    return 0


# ---------------------------------------------------------------------------------------------
# A caller's store, and views
# ---------------------------------------------------------------------------------------------


def write(slab_of_pfn: dict[int, Slab], addr: int, data: bytes,
          is_free: Callable[[Slab, int], bool]) -> int:
    """A store into slab memory by a (possibly buggy) caller: -EFAULT outside slab memory,
    -EINVAL where it would overwrite a free object's free pointer.  Only the objects whose
    free-pointer word overlaps the store are looked at, found by arithmetic.

    [Simplified: as in the reference model, stores that would corrupt a free pointer are
    refused; 4.6 would follow the corrupted pointer unchecked on the fast path]
    """
    if not 1 <= len(data) <= PAGE_SIZE:
        return -Errno.EINVAL
    slab = slab_of_pfn.get((addr - PAGE_OFFSET) >> PAGE_SHIFT if addr >= PAGE_OFFSET else -1)
    end = addr + len(data)
    if slab is None or slab_of_pfn.get((end - 1 - PAGE_OFFSET) >> PAGE_SHIFT) is not slab:
        return -Errno.EFAULT
    layout = slab.cache.layout
    fp0 = slab.base + layout.red_left_pad + layout.offset  # object 0's free-pointer word
    low = max(0, -(-(addr - WORD + 1 - fp0) // layout.size))
    high = min(slab.objects - 1, (end - 1 - fp0) // layout.size)
    for index in range(low, high + 1):
        if is_free(slab, slab.base + layout.red_left_pad + index * layout.size):
            return -Errno.EINVAL
    if slab.mem is not None:
        at = addr - slab.base
        slab.mem[at:at + len(data)] = data
    return 0


def slab_view(slab: Slab) -> SlabView:
    """The slab's view; its freelist head first."""
    return SlabView(pfn=slab.pfn, order=slab.order, objects=slab.objects, inuse=slab.inuse,
                    freelist=tuple(slab.free[::-1]), frozen=slab.frozen, where=slab.where,
                    cpu=slab.cpu)
