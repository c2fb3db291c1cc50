"""SLUB's state records and its debug checks: red zones, poison, padding, freelist checks.

The checks read and repair the bytes of a slab exactly as 4.6's ``check_bytes_and_report``
does: the first and the last byte that differ from the expected pattern are reported, and the
bytes between them are restored.  Each report is appended to the allocator's list, which is
what a test compares with 4.6's dmesg.  [4.6: mm/slub.c check_object, check_bytes_and_report,
check_pad_bytes, slab_pad_check, check_slab, on_freelist, check_valid_pointer, init_object,
alloc_debug_processing, free_debug_processing]
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from specs.errno import Errno
from specs.machine import PAGE_SIZE
from specs.slub import (
    __OBJECT_POISON,
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
    Layout,
    SlubReport,
    order_objects,
    page_address,
    virt_to_pfn,
)

__all__ = ["SLUB_RED_ACTIVE", "SLUB_RED_INACTIVE", "Cache", "CpuSlab", "Slab"]

Reports = list[SlubReport]


# ---------------------------------------------------------------------------------------------
# State records
# ---------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class Slab:
    """One slab [4.6: the SLUB fields of struct page]."""

    pfn: int
    order: int
    objects: int
    cache: Cache
    inuse: int = 0
    #: page->freelist, first free object first
    freelist: list[int] = attrs.field(factory=list)
    frozen: bool = False
    where: str = "none"
    cpu: int = -1
    #: page->pages and page->pobjects, as recorded when pushed on a CPU partial list
    pages: int = 0
    pobjects: int = 0
    #: the slab's bytes, for caches whose checks read them (SLAB_RED_ZONE, SLAB_POISON)
    mem: bytearray | None = None


@attrs.define(eq=False)
class CpuSlab:
    """[4.6: struct kmem_cache_cpu] tid is left out: nothing runs concurrently."""

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
    refcount: int = 1
    aliases: list[str] = attrs.field(factory=list)
    #: every slab, by head pfn
    slabs: dict[int, Slab] = attrs.field(factory=dict)
    partial: list[Slab] = attrs.field(factory=list)
    full: list[Slab] = attrs.field(factory=list)


# ---------------------------------------------------------------------------------------------
# Addresses and bytes
# ---------------------------------------------------------------------------------------------


def keeps_bytes(s: Cache) -> bool:
    """Only red zones and poison are ever read back."""
    return bool(s.layout.flags & (SLAB_RED_ZONE | SLAB_POISON))


def initial_bytes(s: Cache, order: int) -> bytearray:
    """[4.6: allocate_slab] a poisoned cache's slab starts as POISON_INUSE throughout.
    [Simplified: other slabs start zeroed; 4.6 leaves whatever the page held]"""
    fill = POISON_INUSE if s.layout.flags & SLAB_POISON else 0
    return bytearray([fill]) * (PAGE_SIZE << order)


def object_address(s: Cache, slab: Slab, index: int) -> int:
    """[4.6: for_each_object, fixup_red_left] objects start after the left red zone."""
    return page_address(slab.pfn) + s.layout.red_left_pad + index * s.layout.size


def _offset(slab: Slab, addr: int) -> int:
    return addr - page_address(slab.pfn)


def set_freepointer(s: Cache, slab: Slab, obj: int, fp: int) -> None:
    """[4.6: set_freepointer] the next free object's address at obj + offset."""
    if slab.mem is not None:
        at = _offset(slab, obj) + s.layout.offset
        slab.mem[at:at + WORD] = fp.to_bytes(WORD, "little")


def get_freepointer(s: Cache, slab: Slab, obj: int) -> int:
    """[4.6: get_freepointer]"""
    assert slab.mem is not None
    at = _offset(slab, obj) + s.layout.offset
    return int.from_bytes(slab.mem[at:at + WORD], "little")


def zero_object(s: Cache, slab: Slab, obj: int) -> None:
    """[4.6: slab_alloc_node] __GFP_ZERO clears object_size bytes."""
    if slab.mem is not None:
        at = _offset(slab, obj)
        slab.mem[at:at + s.object_size] = bytes(s.object_size)


def init_object(s: Cache, slab: Slab, obj: int, val: int) -> None:
    """[4.6: init_object] red zones to val; a poisoned object to 0x6b.. ending in 0xa5."""
    mem = slab.mem
    if mem is None:
        return
    layout, at = s.layout, _offset(slab, obj)
    if layout.flags & SLAB_RED_ZONE:
        mem[at - layout.red_left_pad:at] = bytes([val]) * layout.red_left_pad
    if layout.flags & __OBJECT_POISON:
        mem[at:at + layout.object_size - 1] = bytes([POISON_FREE]) * (layout.object_size - 1)
        mem[at + layout.object_size - 1] = POISON_END
    if layout.flags & SLAB_RED_ZONE:
        mem[at + layout.object_size:at + layout.inuse] = (
            bytes([val]) * (layout.inuse - layout.object_size))


def setup_object_debug(s: Cache, slab: Slab, obj: int) -> None:
    """[4.6: setup_object_debug]"""
    if s.layout.flags & (SLAB_STORE_USER | SLAB_RED_ZONE | __OBJECT_POISON):
        init_object(s, slab, obj, SLUB_RED_INACTIVE)


def check_valid_pointer(s: Cache, slab: Slab, ptr: int) -> bool:
    """[4.6: check_valid_pointer] NULL, or an object start inside the slab."""
    if not ptr:
        return True
    base = page_address(slab.pfn)
    if s.layout.debug and s.layout.flags & SLAB_RED_ZONE:
        ptr -= s.layout.red_left_pad  # restore_red_left
    return base <= ptr < base + slab.objects * s.layout.size and (ptr - base) % s.layout.size == 0


def is_object_start(s: Cache, slab: Slab, obj: int) -> bool:
    """A non-NULL object address of this slab."""
    return bool(obj) and check_valid_pointer(s, slab, obj)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_bytes_and_report(reports: Reports, s: Cache, slab: Slab, obj: int, what: str,
                           start: int, value: int, nbytes: int) -> bool:
    """[4.6: check_bytes_and_report] report the first..last wrong byte and restore them."""
    mem = slab.mem
    if mem is None or nbytes <= 0:
        return True
    at = _offset(slab, start)
    region = mem[at:at + nbytes]
    fault = next((i for i, byte in enumerate(region) if byte != value), None)
    if fault is None:
        return True
    end = nbytes
    while end > fault and region[end - 1] == value:
        end -= 1
    reports.append(SlubReport(s.name, f"{what} overwritten", obj, start + fault,
                              start + end - 1))
    mem[at + fault:at + end] = bytes([value]) * (end - fault)
    return False


def size_from_object(layout: Layout) -> int:
    """[4.6: size_from_object] the stride seen from the object start."""
    return layout.size - layout.red_left_pad if layout.flags & SLAB_RED_ZONE else layout.size


def check_pad_bytes(reports: Reports, s: Cache, slab: Slab, obj: int) -> bool:
    """[4.6: check_pad_bytes] the filler after the free pointer and tracks is POISON_INUSE."""
    layout = s.layout
    off = layout.inuse + (WORD if layout.offset else 0)
    if layout.flags & SLAB_STORE_USER:
        off += 2 * TRACK_SIZE
    if size_from_object(layout) == off:
        return True
    return check_bytes_and_report(reports, s, slab, obj, "Object padding", obj + off,
                                  POISON_INUSE, size_from_object(layout) - off)


def slab_pad_check(reports: Reports, s: Cache, slab: Slab) -> bool:
    """[4.6: slab_pad_check] the slab's tail after the last object is POISON_INUSE.  As in
    4.6, the bytes restored are the remainder's length ending at the last wrong byte."""
    mem = slab.mem
    if not s.layout.flags & SLAB_POISON or mem is None:
        return True
    length = PAGE_SIZE << slab.order
    remainder = length % s.layout.size
    if not remainder:
        return True
    tail = mem[length - remainder:length]
    fault = next((i for i, byte in enumerate(tail) if byte != POISON_INUSE), None)
    if fault is None:
        return True
    end = length
    while end > length - remainder + fault and mem[end - 1] == POISON_INUSE:
        end -= 1
    base = page_address(slab.pfn)
    reports.append(SlubReport(s.name, "Padding overwritten", base,
                              base + length - remainder + fault, base + end - 1))
    mem[end - remainder:end] = bytes([POISON_INUSE]) * remainder
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
        if val != SLUB_RED_ACTIVE and layout.flags & __OBJECT_POISON and (
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


def check_slab(reports: Reports, s: Cache, slab: Slab) -> bool:
    """[4.6: check_slab] counts within bounds; the tail padding checked (and repaired)."""
    maxobj = order_objects(slab.order, s.layout.size)
    if slab.objects > maxobj:
        reports.append(SlubReport(s.name, "objects > max", page_address(slab.pfn)))
        return False
    if slab.inuse > slab.objects:
        reports.append(SlubReport(s.name, "inuse > max", page_address(slab.pfn)))
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
    if not check_valid_pointer(s, slab, obj) or not obj:
        reports.append(SlubReport(s.name, "Invalid object pointer", obj))
        return -Errno.EINVAL
    if obj in slab.freelist:  # on_freelist
        reports.append(SlubReport(s.name, "Object already free", obj))
        return -Errno.EFAULT
    if not check_object(reports, s, slab, obj, SLUB_RED_ACTIVE):
        return -Errno.EINVAL
    return 0


def free_debug_processing(reports: Reports, s: Cache, slab: Slab, obj: int) -> bool:
    """[4.6: free_debug_processing] after the checks (free_precheck): the object's red zones
    back to inactive and the object re-poisoned."""
    del reports
    init_object(s, slab, obj, SLUB_RED_INACTIVE)
    return True


# ---------------------------------------------------------------------------------------------
# A caller's store
# ---------------------------------------------------------------------------------------------


def write(slab_of_pfn: dict[int, Slab], addr: int, data: bytes,
          is_free: Callable[[Slab, int], bool]) -> int:
    """A store into slab memory by a (possibly buggy) caller.  Refused with -EFAULT outside
    slab memory, and with -EINVAL where it would overwrite a free object's free pointer.

    [Simplified: stores that would corrupt a free pointer are refused; 4.6 would follow the
    corrupted pointer unchecked on the fast path, which no model can reproduce]
    """
    if not 1 <= len(data) <= PAGE_SIZE:
        return -Errno.EINVAL
    slab = slab_of_pfn.get(virt_to_pfn(addr))
    if slab is None or slab_of_pfn.get(virt_to_pfn(addr + len(data) - 1)) is not slab:
        return -Errno.EFAULT
    s = slab.cache
    for index in range(slab.objects):
        obj = object_address(s, slab, index)
        fp = obj + s.layout.offset
        if fp < addr + len(data) and addr < fp + WORD and is_free(slab, obj):
            return -Errno.EINVAL
    if slab.mem is not None:
        at = addr - page_address(slab.pfn)
        slab.mem[at:at + len(data)] = data
    return 0


