"""Differential tests: ``fastmodel.slub.FastSlub`` against ``refmodel.slub.RefSlub``, call by call.

Both models boot on identical page allocators (two ``RefBuddy`` of one machine, each behind a
recorder) and receive the same operations, well-formed and not: every result, every ``view()``
and the calls each model made to its page allocator must be equal after every operation, and
so must the page allocators' views.  Operations come from Hypothesis-generated lists and from
long seeded streams that fill memory until slab allocation fails.  They include bad and
double frees, frees into the wrong cache, corrupting writes (red zones, poison, padding, the
slab tail, freed objects) under every combination of the debug flags, shrink, destroy, and
kmalloc across every size class, zero, huge and negative sizes.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmodel.slub import FastSlub
from refmodel.buddy import RefBuddy
from refmodel.slub import RefSlub
from specs import gfp
from specs import slub as sl
from specs.machine import MachineConfig, preset
from specs.slub import ObjectAllocator

#: Flags a cache is created with: every subset of the debug flags, with layout modifiers.
DEBUG_BITS = (sl.SLAB_RED_ZONE, sl.SLAB_POISON, sl.SLAB_CONSISTENCY_CHECKS, sl.SLAB_STORE_USER)
MODIFIERS = (0, sl.SLAB_HWCACHE_ALIGN, sl.SLAB_DESTROY_BY_RCU, sl.SLAB_CACHE_DMA,
             sl.SLAB_RECLAIM_ACCOUNT, sl.SLAB_TRACE, 0x10000000)  # last: outside the mask
ALL_DEBUG_COMBOS = tuple(sum(bit for i, bit in enumerate(DEBUG_BITS) if mask >> i & 1)
                         for mask in range(1 << len(DEBUG_BITS)))
CACHE_SIZES = (8, 12, 16, 20, 24, 40, 64, 90, 100, 136, 190, 256, 700, 1000, 3000, 4096, 5000,
               9000, 70000, 0, 7, 1 << 30)
ALIGNS = (0, 8, 16, 64, 128, 3, 4096, 16384, -8)
GFP_MASKS = (gfp.GFP_KERNEL, gfp.GFP_ATOMIC, gfp.GFP_NOWAIT, gfp.GFP_KERNEL | gfp.__GFP_ZERO,
             gfp.GFP_KERNEL | gfp.__GFP_NOWARN, gfp.GFP_KERNEL | gfp.GFP_DMA,
             gfp.GFP_TEMPORARY, gfp.GFP_KERNEL | gfp.__GFP_HIGHMEM, gfp.GFP_DMA32,
             gfp.GFP_ATOMIC | gfp.__GFP_NOWARN | gfp.__GFP_ZERO)
#: every kmalloc class boundary, either side, and sizes no cache serves
KMALLOC_SIZES = (0, 1, 7, 8, 9, 16, 17, 24, 32, 33, 64, 65, 72, 96, 97, 104, 128, 129, 136,
                 192, 193, 200, 256, 257, 512, 513, 1000, 1024, 2048, 2049, 4096, 4097, 8191,
                 8192, 8193, 16384, 20000, 1 << 22, 5 << 20, 1 << 40, -1, -4096)
WRITE_VALUES = (0x41, sl.POISON_FREE, sl.POISON_INUSE, sl.POISON_END, sl.SLUB_RED_ACTIVE,
                sl.SLUB_RED_INACTIVE, 0, 0xFF, 256, -1)
ODD_CONFIG = MachineConfig(name="odd3", nr_pages=2048 + 300, nr_cpus=3, dma_end_pfn=700,
                           dma32_end_pfn=1500)


@attrs.define
class Recorder:
    """A page allocator that logs every call a model makes to it."""

    inner: RefBuddy
    log: list[tuple[Any, ...]] = attrs.field(factory=list)

    def alloc_pages(self, gfp_mask: int, order: int, cpu: int = 0) -> int | None:
        pfn = self.inner.alloc_pages(gfp_mask, order, cpu)
        self.log.append(("alloc_pages", gfp_mask, order, cpu, pfn))
        return pfn

    def free_pages(self, pfn: int, order: int, cpu: int = 0) -> int:
        result = self.inner.free_pages(pfn, order, cpu)
        self.log.append(("free_pages", pfn, order, cpu, result))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# An operation is (kind, a, b, c, d) of small ints; each kind reads the ones it needs, and
# picks among the caches, held objects and freed objects modulo their number.
Op = tuple[str, int, int, int, int]


@attrs.define
class Lockstep:
    """The two models, and the caller's record of caches, held and freed objects."""

    config: MachineConfig
    ref_pages: Recorder
    fast_pages: Recorder
    ref: RefSlub
    fast: FastSlub
    caches: list[int] = attrs.field(factory=list)
    #: (address, cache id or -1 for kmalloc)
    held: list[tuple[int, int]] = attrs.field(factory=list)
    freed: list[tuple[int, int]] = attrs.field(factory=list)
    steps: int = 0
    #: the length of the page-call log when the page allocators were last compared
    compared: int = -1

    @classmethod
    def boot(cls, config: MachineConfig) -> Lockstep:
        ref_pages, fast_pages = Recorder(RefBuddy(config)), Recorder(RefBuddy(config))
        machine = cls(config, ref_pages, fast_pages, RefSlub(config, ref_pages),
                      FastSlub(config, fast_pages))
        machine.compare("boot")
        return machine

    def call(self, op: str, **args: Any) -> Any:
        """One call in both models; results, views and page-allocator traffic compared."""
        want = getattr(self.ref, op)(**args)
        got = getattr(self.fast, op)(**args)
        assert got == want, f"step {self.steps} {op}({args}): fast {got!r}, ref {want!r}"
        self.steps += 1
        self.compare(f"{op}({args})")
        return want

    def compare(self, what: str) -> None:
        """Views after every call; the page allocators' views whenever either was called
        (nothing else calls them, so equal call logs and equal views go together)."""
        assert self.fast_pages.log == self.ref_pages.log, f"page calls differ after {what}"
        ref_view, fast_view = self.ref.view(), self.fast.view()
        if fast_view != ref_view:
            raise AssertionError(f"views differ after {what}: {difference(ref_view, fast_view)}")
        if len(self.ref_pages.log) != self.compared:
            assert self.fast_pages.inner.view() == self.ref_pages.inner.view(), what
            self.compared = len(self.ref_pages.log)

    # -- operations -----------------------------------------------------------------------------

    def run(self, ops: list[Op]) -> None:
        for op in ops:
            getattr(self, "op_" + op[0])(*op[1:])

    def _cache(self, pick: int) -> int:
        return self.caches[pick % len(self.caches)] if self.caches else pick % 30

    def _took(self, obj: Any, cache: int) -> None:
        if isinstance(obj, int) and obj > sl.ZERO_SIZE_PTR:
            self.held.append((obj, cache))

    def op_create(self, size: int, align: int, flags: int, _d: int) -> None:
        cache = self.call("kmem_cache_create", name=f"c{self.steps}",
                          size=CACHE_SIZES[size % len(CACHE_SIZES)],
                          align=ALIGNS[align % len(ALIGNS)],
                          flags=ALL_DEBUG_COMBOS[flags % 16] | MODIFIERS[flags // 16 % 7])
        if cache is not None:
            self.caches.append(cache)

    def op_alloc(self, pick: int, mask: int, cpu: int, count: int) -> None:
        cache = self._cache(pick)
        for _ in range(1 + count % 40):
            obj = self.call("kmem_cache_alloc", cache=cache,
                            gfp_mask=GFP_MASKS[mask % len(GFP_MASKS)], cpu=cpu % 4)
            self._took(obj, cache)

    def op_kmalloc(self, size: int, mask: int, cpu: int, count: int) -> None:
        for _ in range(1 + count % 20):
            obj = self.call("kmalloc", size=KMALLOC_SIZES[size % len(KMALLOC_SIZES)],
                            gfp_mask=GFP_MASKS[mask % len(GFP_MASKS)], cpu=cpu % 4)
            self._took(obj, -1)

    def op_kmalloc_any(self, size: int, mask: int, cpu: int, _d: int) -> None:
        obj = self.call("kmalloc", size=size % 9000, gfp_mask=GFP_MASKS[mask % 3],
                        cpu=cpu % self.config.nr_cpus)
        self._took(obj, -1)

    def op_free(self, pick: int, cpu: int, count: int, kfree: int) -> None:
        """Free held objects (kmem_cache_free for cache objects unless kfree says kfree)."""
        for _ in range(1 + count % 40):
            if not self.held:
                return
            obj, cache = self.held.pop(pick % len(self.held))
            if cache < 0 or kfree % 3 == 0:
                result = self.call("kfree", obj=obj, cpu=cpu % 4)
            else:
                result = self.call("kmem_cache_free", cache=cache, obj=obj, cpu=cpu % 4)
            (self.freed if result == 0 else self.held).append((obj, cache))
            pick = pick * 7 + 3

    def op_free_again(self, pick: int, cpu: int, wrong: int, _d: int) -> None:
        """A double free (or a free of an object handed out again), or a free into another
        cache."""
        if not self.freed:
            return
        obj, cache = self.freed[pick % len(self.freed)]
        if wrong % 3 == 0 and self.caches:
            self.call("kmem_cache_free", cache=self._cache(wrong), obj=obj, cpu=cpu % 3)
        elif cache < 0 or wrong % 3 == 1:
            self.call("kfree", obj=obj, cpu=cpu % 3)
        else:
            self.call("kmem_cache_free", cache=cache, obj=obj, cpu=cpu % 3)

    def op_bad_free(self, pick: int, delta: int, cpu: int, how: int) -> None:
        """Pointers that are not object starts: inside objects, before slabs, NULL, ..."""
        base = self.held[pick % len(self.held)][0] if self.held else sl.PAGE_OFFSET
        obj = (base + (delta % 64) - 8, 0, sl.ZERO_SIZE_PTR, -5, 12345, base + 4096,
               sl.PAGE_OFFSET - 4096)[how % 7]
        if how % 2:
            self.call("kfree", obj=obj, cpu=cpu % 4)
        else:
            self.call("kmem_cache_free", cache=self._cache(delta), obj=obj, cpu=cpu % 4)

    def op_ksize(self, pick: int, freed: int, _c: int, _d: int) -> None:
        pool = self.freed if freed % 2 and self.freed else self.held
        if pool:
            self.call("ksize", obj=pool[pick % len(pool)][0])
        else:
            self.call("ksize", obj=sl.ZERO_SIZE_PTR)

    def op_write(self, pick: int, offset: int, length: int, value: int) -> None:
        """A buggy caller's store near a held or freed object: past its end, before its
        start, into its poison, its padding or the slab's tail."""
        pool = self.freed if offset % 3 == 0 and self.freed else self.held
        if not pool:
            return
        obj, _cache = pool[pick % len(pool)]
        rel = (offset // 3) % 600 - 64
        self.call("write", addr=obj + rel, value=WRITE_VALUES[value % len(WRITE_VALUES)],
                  length=(1, 1, 2, 4, 8, 16, 40, 300, 4096, 0)[length % 10])

    def op_overrun(self, pick: int, length: int, _c: int, _d: int) -> None:
        """Write just past a held object's object_size: into the red zone or padding."""
        if not self.held:
            return
        obj, cache = self.held[pick % len(self.held)]
        view = self.ref.view().cache(cache) if cache >= 0 else None
        size = view.object_size if view is not None else 8
        self.call("write", addr=obj + size, value=0x41, length=1 + length % 24)

    def op_tail(self, pick: int, back: int, value: int, _d: int) -> None:
        """Corrupt a slab's tail after its last object (slab_pad_check's area)."""
        if not self.held:
            return
        obj = self.held[pick % len(self.held)][0]
        pfn = sl.virt_to_pfn(obj)
        for cache in self.ref.view().caches:
            for slab in cache.slabs:
                if slab.pfn <= pfn < slab.pfn + (1 << slab.order):
                    end = sl.page_address(slab.pfn) + (4096 << slab.order)
                    self.call("write", addr=end - 1 - back % 48,
                              value=WRITE_VALUES[value % 6], length=1 + back % 3)
                    return

    def op_shrink(self, pick: int, _b: int, _c: int, _d: int) -> None:
        self.call("kmem_cache_shrink", cache=self._cache(pick))

    def op_destroy(self, pick: int, release: int, _c: int, _d: int) -> None:
        """Destroy a cache, after freeing what the caller holds of it when release says so."""
        cache = self._cache(pick)
        if release % 2:
            for obj, owner in [h for h in self.held if h[1] == cache]:
                if self.call("kmem_cache_free", cache=cache, obj=obj, cpu=0) == 0:
                    self.held.remove((obj, owner))
        if self.call("kmem_cache_destroy", cache=cache) == 0 and \
                self.ref.view().cache(cache) is None and cache in self.caches:
            self.caches.remove(cache)
            self.held = [h for h in self.held if h[1] != cache]
            self.freed = [h for h in self.freed if h[1] != cache]

    def op_churn(self, pick: int, count: int, cpu: int, free_cpu: int) -> None:
        """Allocate many objects on one CPU, free them all on another."""
        cache = self._cache(pick)
        got = []
        for _ in range(1 + count % 64):
            obj = self.call("kmem_cache_alloc", cache=cache, gfp_mask=gfp.GFP_KERNEL,
                            cpu=cpu % self.config.nr_cpus)
            if not isinstance(obj, int):
                break
            got.append(obj)
        order = random.Random(count).sample(got, len(got))
        for obj in order:
            self.call("kmem_cache_free", cache=cache, obj=obj,
                      cpu=free_cpu % self.config.nr_cpus)
        self.freed.extend((obj, cache) for obj in order)


def difference(want: sl.SlubView, got: sl.SlubView) -> str:
    """The first field that differs, in words."""
    for field in ("nr_cpus", "large", "reports", "warnings", "nr_slab_pages"):
        if getattr(want, field) != getattr(got, field):
            return f"{field}: fast {getattr(got, field)!r:.400}, ref {getattr(want, field)!r:.400}"
    if len(want.caches) != len(got.caches):
        return f"{len(got.caches)} caches, ref {len(want.caches)}"
    for ref, fast in zip(want.caches, got.caches, strict=True):
        for field in attrs.fields(type(ref)):
            a, b = getattr(ref, field.name), getattr(fast, field.name)
            if a != b:
                return f"{ref.name}.{field.name}: fast {b!r:.400}, ref {a!r:.400}"
    return "(equal)"


KINDS = ("create", "alloc", "kmalloc", "kmalloc_any", "free", "free_again", "bad_free", "ksize",
         "write", "overrun", "tail", "shrink", "destroy", "churn")
WEIGHTS = (6, 14, 10, 4, 16, 4, 3, 2, 6, 5, 2, 3, 3, 5)
small = st.integers(0, 1 << 12)
ops_strategy = st.lists(st.tuples(st.sampled_from(KINDS), small, small, small, small),
                        max_size=40)


def random_ops(seed: int, count: int) -> list[Op]:
    rng = random.Random(seed)
    kinds = rng.choices(KINDS, WEIGHTS, k=count)
    draw = rng.randrange
    return [(kind, draw(4096), draw(4096), draw(4096), draw(4096)) for kind in kinds]


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_fastslub_meets_the_protocol() -> None:
    """FastSlub is an ObjectAllocator with every capability, so lockstep is meaningful."""
    config = preset("tiny")
    fast = FastSlub(config, RefBuddy(config))
    assert isinstance(fast, ObjectAllocator)
    assert fast.capabilities == sl.ALL_CAPABILITIES


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, odd=st.booleans())
def test_hypothesis_sequences_agree(ops: list[Op], odd: bool) -> None:
    """Any operation list: same results, views and page-allocator calls after every call."""
    machine = Lockstep.boot(ODD_CONFIG if odd else preset("tiny"))
    machine.run(ops)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=st.sampled_from(ALL_DEBUG_COMBOS), modifier=st.sampled_from(MODIFIERS[:3]),
       size=st.sampled_from(CACHE_SIZES[:16]), ops=ops_strategy)
def test_debug_caches_agree(flags: int, modifier: int, size: int, ops: list[Op]) -> None:
    """A cache with each debug flag combination, then any operations, corruptions included."""
    machine = Lockstep.boot(preset("tiny"))
    cache = machine.call("kmem_cache_create", name="dbg", size=size, align=0,
                         flags=flags | modifier)
    assert cache is not None
    machine.caches.append(cache)
    machine.run([("alloc", 0, 0, 0, 9), ("overrun", 1, 5, 0, 0), ("free", 0, 0, 9, 1),
                 ("write", 0, 3, 0, 0), ("alloc", 0, 0, 1, 12), *ops, ("free", 0, 1, 99, 1),
                 ("destroy", 0, 1, 0, 0)])


@pytest.mark.parametrize("flags", ALL_DEBUG_COMBOS)
def test_every_debug_combination_reports_alike(flags: int) -> None:
    """Each combination of red zone, poison, consistency checks and store-user: overruns,
    use after free, tail corruption and double frees, reported and repaired alike."""
    machine = Lockstep.boot(preset("tiny"))
    for size in (24, 100, 700):
        cache = machine.call("kmem_cache_create", name=f"d{size}", size=size, align=0,
                             flags=flags)
        machine.caches = [cache]
        machine.held, machine.freed = [], []
        machine.run([*random_ops(flags * 1000 + size, 150), ("destroy", 0, 1, 0, 0)])


@pytest.mark.parametrize(("seed", "config"), [(1, "tiny"), (2, "tiny"), (3, "odd")])
def test_long_streams_agree(seed: int, config: str) -> None:
    """Long seeded streams: many caches, memory filled by large kmallocs until slabs fail."""
    machine = Lockstep.boot(ODD_CONFIG if config == "odd" else preset("tiny"))
    rng = random.Random(seed)
    for block in range(6):
        machine.run(random_ops(seed * 100 + block, 160))
        if block in (2, 3):  # fill memory: slab allocation falls back, then fails
            for _ in range(12):
                machine.call("kmalloc", size=rng.choice((1 << 22, 1 << 20, 1 << 18)),
                             gfp_mask=gfp.GFP_KERNEL | gfp.__GFP_NOWARN, cpu=0)
            machine.run(random_ops(seed * 100 + block + 50, 100))
        if block == 4:  # give the large blocks back
            for pfn, _order in list(machine.ref.view().large):
                machine.call("kfree", obj=sl.page_address(pfn), cpu=1)


def test_kmalloc_every_size() -> None:
    """kmalloc and kfree of every size 0..8200 and a few huge ones, on each CPU."""
    machine = Lockstep.boot(preset("tiny"))
    held = []
    for size in [*range(0, 8201), 1 << 13, 1 << 22, 1 << 23, 1 << 60]:
        obj = machine.call("kmalloc", size=size, gfp_mask=gfp.GFP_KERNEL | gfp.__GFP_NOWARN,
                           cpu=size % 2)
        held.append(obj)
        if len(held) > 64:
            machine.call("kfree", obj=held.pop(size * 7 % len(held)), cpu=(size // 3) % 2)
    for obj in held:
        machine.call("kfree", obj=obj if obj is not None else 0, cpu=0)


def test_views_are_cached_and_immutable() -> None:
    """An unchanged allocator returns the same view object; a change gives a new, equal-to-ref
    one, and the old one is not mutated."""
    machine = Lockstep.boot(preset("tiny"))
    before = machine.fast.view()
    assert machine.fast.view() is before
    obj = machine.call("kmalloc", size=64, gfp_mask=gfp.GFP_KERNEL, cpu=0)
    after = machine.fast.view()
    assert after is not before
    assert after != before
    assert before == Lockstep.boot(preset("tiny")).fast.view()
    machine.call("kfree", obj=obj, cpu=0)
    assert machine.fast.view() == machine.ref.view()
