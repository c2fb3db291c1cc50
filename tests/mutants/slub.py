"""Deliberately broken object allocators: at least one per SLUB check ID.

Each mutant is a small subclass of :class:`refmodel.slub.RefSlub` with one bug, a docstring
naming it, ``target`` (the check that must catch it) and ``subsystem = "slub"``.  Bugs inside
the algorithm are broken copies of one ``refmodel`` function, swapped in by
:class:`MutantSlub` while each contract operation runs (``refmodel`` itself is never
edited); the changed line carries ``# MUTATION:``.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import attrs

from refmodel import slub as rs
from refmodel import slub_debug as dbg
from refmodel.slub import RefSlub
from refmodel.slub_debug import Cache, Slab
from specs.slub import SLUB_RED_ACTIVE, kmalloc_index

#: (module, global name) -> the broken copy used instead
from tests.mutants import PatchedOperations, Patches, swapped

OPERATIONS = ("kmem_cache_create", "kmem_cache_alloc", "kmem_cache_free", "kmem_cache_destroy",
              "kmem_cache_shrink", "kmalloc", "kfree", "ksize", "write")


class MutantSlub(PatchedOperations, RefSlub):
    """RefSlub with some refmodel functions replaced by broken copies during every contract
    operation (restored afterwards, even on an exception)."""

    subsystem: ClassVar[str] = "slub"
    target: ClassVar[str] = ""
    #: (module, global name) -> the broken copy used instead
    patches: ClassVar[Patches] = {}
    operations: ClassVar[tuple[str, ...]] = OPERATIONS

    def _patched(self) -> contextlib.AbstractContextManager[None]:
        return swapped(self.patches)


# ---------------------------------------------------------------------------------------------
# SLUB-I1 .. I5
# ---------------------------------------------------------------------------------------------


class AllocLeavesObjectOnCpuFreelist(MutantSlub):
    """The fast path hands out the CPU freelist's head but leaves it on the list, so the same
    object is handed out twice."""

    target = "SLUB-I1"

    def kmem_cache_alloc(self, cache: int, gfp_mask: int, cpu: int = 0) -> int | None:
        obj = super().kmem_cache_alloc(cache, gfp_mask, cpu)
        s = self._cache(cache)
        if obj is not None and s is not None and s.cpus[cpu].freelist:
            s.cpus[cpu].freelist.append(obj)  # MUTATION: the object stays free
        return obj


def _free_forgets_inuse(state: rs.SlubState, s: Cache, slab: Slab, obj: int, cpu: int) -> bool:
    """rs.slab_free_slow without the inuse decrement on an unfrozen slab."""
    if s.layout.debug and not dbg.free_debug_processing(state.reports, s, slab, obj):
        return False
    slab.freelist.insert(0, obj)
    if slab.frozen:
        slab.inuse -= 1
    return True  # MUTATION: an unfrozen slab keeps its old inuse and is never refiled


class FreeForgetsInuse(MutantSlub):
    """__slab_free does not decrement page->inuse for a slab off the CPU, so in-use counts no
    longer match the freelist."""

    target = "SLUB-I2"
    patches: ClassVar[Patches] = {(rs, "slab_free_slow"): _free_forgets_inuse}


def _deactivate_keeps_frozen(state: rs.SlubState, s: Cache, slab: Slab, freelist: list[int],
                             cpu: int) -> None:
    """rs.deactivate_slab that files the slab without unfreezing it."""
    tail = bool(slab.freelist)
    for obj in freelist:
        slab.freelist.insert(0, obj)
        slab.inuse -= 1
    if not slab.inuse and len(s.partial) >= s.min_partial:
        rs.discard_slab(state, s, slab, cpu)
    elif slab.freelist:
        rs.add_partial(s, slab, tail)  # MUTATION: frozen stays set
    else:
        rs.add_full(s, slab)


class DeactivateKeepsFrozen(MutantSlub):
    """deactivate_slab puts the CPU slab on the node lists without clearing frozen, so no
    free ever refiles it."""

    target = "SLUB-I3"
    patches: ClassVar[Patches] = {(rs, "deactivate_slab"): _deactivate_keeps_frozen}


def _discard_keeps_pages(state: rs.SlubState, s: Cache, slab: Slab, cpu: int) -> None:
    """rs.discard_slab that forgets to give the pages back."""
    for page in range(slab.pfn, slab.pfn + (1 << slab.order)):
        del state.slab_of_pfn[page]
    del s.slabs[slab.pfn]
    state.nr_slab_pages -= 1 << slab.order
    # MUTATION: no free_pages: the slab's pages leak


class DiscardLeaksPages(MutantSlub):
    """discard_slab drops the slab without freeing its pages to the page allocator."""

    target = "SLUB-I4"
    patches: ClassVar[Patches] = {(rs, "discard_slab"): _discard_keeps_pages}


def _create_cache_one_object_short(state: rs.SlubState, name: str, size: int, align: int,
                                   flags: int) -> Cache | None:
    cache = _ORIGINAL_CREATE(state, name, size, align, flags)
    if cache is not None and cache.layout.objects > 1:
        cache.layout = attrs.evolve(cache.layout, objects=cache.layout.objects - 1)  # MUTATION
    return cache


_ORIGINAL_CREATE = rs.create_cache


class WrongObjectsPerSlab(MutantSlub):
    """A created cache gets one object per slab fewer than calculate_sizes allows."""

    target = "SLUB-I5"
    patches: ClassVar[Patches] = {
        (rs, "create_cache"): _create_cache_one_object_short}


# ---------------------------------------------------------------------------------------------
# SLUB-R1 .. R4
# ---------------------------------------------------------------------------------------------


class Kmalloc97FromKmalloc96(MutantSlub):
    """kmalloc's size_index sends 97..104 bytes to kmalloc-96 (as if its entry said 1)."""

    target = "SLUB-R1"

    def kmalloc(self, size: int, gfp_mask: int, cpu: int = 0) -> int | None:
        if 97 <= size <= 104 and 0 <= cpu < self.config.nr_cpus:
            return rs.slab_alloc(self.state, self.state.kmalloc[1], gfp_mask, cpu)  # MUTATION
        return super().kmalloc(size, gfp_mask, cpu)


class Kmalloc193FromKmalloc192(MutantSlub):
    """kmalloc rounds 193 bytes down to kmalloc-192 (an off-by-one in the table's bound)."""

    target = "SLUB-R1"

    def kmalloc(self, size: int, gfp_mask: int, cpu: int = 0) -> int | None:
        if size == 193 and 0 <= cpu < self.config.nr_cpus:
            index = kmalloc_index(192)  # MUTATION: 192, not 193
            return rs.slab_alloc(self.state, self.state.kmalloc[index], gfp_mask, cpu)
        return super().kmalloc(size, gfp_mask, cpu)


class DoubleFreeNotDetected(MutantSlub):
    """A repeated free of an object is not refused: it goes on the freelist a second time."""

    target = "SLUB-R2"

    def _is_free(self, slab: Slab, obj: int) -> bool:
        return False  # MUTATION: never free


class DestroyKeepsSlabs(MutantSlub):
    """kmem_cache_destroy drops the cache but not its empty slabs: their pages never return."""

    target = "SLUB-R3"

    def kmem_cache_destroy(self, cache: int) -> int:
        s = self._cache(cache)
        if s is None or s.refcount != 1 or s in self._boot_caches():
            return super().kmem_cache_destroy(cache)
        rs.flush_all(self.state, s)
        if s.slabs and all(not slab.inuse for slab in s.slabs.values()):
            self.state.caches.remove(s)  # MUTATION: the slabs are not discarded
            return 0
        return super().kmem_cache_destroy(cache)


def _check_object_ignores_active_red_zone(reports: dbg.Reports, s: Cache, slab: Slab, obj: int,
                                          val: int) -> bool:
    if val == SLUB_RED_ACTIVE:
        return True  # MUTATION: an allocated object's red zones are not checked on free
    return _ORIGINAL_CHECK_OBJECT(reports, s, slab, obj, val)


_ORIGINAL_CHECK_OBJECT = dbg.check_object


class RedZoneNotCheckedOnFree(MutantSlub):
    """free_consistency_checks skips check_object, so a red-zone overrun is freed silently."""

    target = "SLUB-R4"
    patches: ClassVar[Patches] = {
        (dbg, "check_object"): _check_object_ignores_active_red_zone}
