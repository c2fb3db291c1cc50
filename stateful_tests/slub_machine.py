"""The SLUB state machine, in lockstep and contract modes.

:func:`make_slub_machine` builds a machine that creates caches of odd sizes, alignments and
debug flags, allocates from them and from kmalloc across the size classes, frees in any
order (and frees again, and frees pointers that are not objects), shrinks and destroys, and
plays a buggy caller: it writes past an object's end and into freed objects, so that the
debug checks must report what 4.6's report.  Slab pages come from a page allocator the
machine owns and inspects (SLUB-I4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, consumes, multiple, precondition, rule

from invariants.registry import LOCKSTEP, CheckFailure
from invariants.slub import CacheArgs, SlubLedger, SlubSnapshot, free_objects
from invariants.slub_rules import SlubStep
from refmodel.buddy import RefBuddy
from refmodel.slub import RefSlub
from specs import gfp
from specs import slub as sl
from specs.buddy import PageAllocator
from specs.slub import Capability, SlubView
from stateful_tests.common import ConformanceMachine, Handle, MachineSpec, identifier
from stateful_tests.harness import (
    GuardedImpl,
    describe_call,
    want_instance,
    want_int,
    want_pfn_or_none,
)
from stateful_tests.suites import dependency

RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "kmem_cache_create": want_pfn_or_none, "kmem_cache_alloc": want_pfn_or_none,
    "kmalloc": want_pfn_or_none, "kmem_cache_free": want_int, "kfree": want_int,
    "kmem_cache_destroy": want_int, "kmem_cache_shrink": want_int, "ksize": want_int,
    "write": want_int,
}
OPERATIONS = tuple(RESULT_CHECKS)

GFP_MASKS = (gfp.GFP_KERNEL, gfp.GFP_ATOMIC, gfp.GFP_NOWAIT, gfp.GFP_KERNEL | gfp.__GFP_ZERO,
             gfp.GFP_KERNEL | gfp.__GFP_NOWARN, gfp.GFP_KERNEL | gfp.GFP_DMA,
             gfp.GFP_TEMPORARY)
CACHE_FLAGS = (0, sl.SLAB_HWCACHE_ALIGN, sl.SLAB_RECLAIM_ACCOUNT, sl.SLAB_CACHE_DMA,
               sl.SLAB_DESTROY_BY_RCU, sl.SLAB_POISON, sl.SLAB_RED_ZONE,
               sl.SLAB_RED_ZONE | sl.SLAB_CONSISTENCY_CHECKS,
               sl.SLAB_POISON | sl.SLAB_CONSISTENCY_CHECKS,
               sl.SLAB_RED_ZONE | sl.SLAB_POISON | sl.SLAB_CONSISTENCY_CHECKS,
               sl.SLAB_RED_ZONE | sl.SLAB_POISON | sl.SLAB_CONSISTENCY_CHECKS
               | sl.SLAB_STORE_USER)
CACHE_SIZES = (8, 20, 24, 90, 100, 136, 190, 700, 3000, 5000, 9000)
KMALLOC_SIZES = (0, 1, 8, 9, 64, 65, 96, 128, 129, 192, 256, 1000, 4096, 4097, 8192, 8193,
                 20000, 5 << 20)
#: the sizes where a wrong size_index entry or an off-by-one shows
BOUNDARY_SIZES = (96, 97, 104, 105, 192, 193)
DEBUG_FLAGS = (sl.SLAB_RED_ZONE | sl.SLAB_CONSISTENCY_CHECKS,
               sl.SLAB_RED_ZONE | sl.SLAB_POISON | sl.SLAB_CONSISTENCY_CHECKS,
               sl.SLAB_RED_ZONE | sl.SLAB_POISON | sl.SLAB_CONSISTENCY_CHECKS
               | sl.SLAB_STORE_USER)
CHURN_LIMIT = 48
HUGE_GFP = gfp.GFP_KERNEL | gfp.__GFP_NOWARN
FILLER = 0x41  # what the buggy caller writes: differs from every poison and red-zone byte


@attrs.define(eq=False)
class CacheHandle(Handle):
    """A cache the machine created (or was handed as an alias)."""

    cache: int


@attrs.define(eq=False)
class ObjHandle(Handle):
    """An object or large block the machine was handed; ``cache`` -1 means kmalloc."""

    addr: int
    cache: int


class SlubMachineBase(ConformanceMachine):
    """Shared machinery; :func:`make_slub_machine` adds the rules."""

    spec: ClassVar[MachineSpec]
    caches = Bundle("caches")
    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        spec = self.spec
        self.ledger = SlubLedger()
        self.freed: list[ObjHandle] = []
        self.steps = 0
        self.pages: PageAllocator = dependency(spec, "buddy")
        pages = self.pages
        caps = self.boot(Capability, pages)
        self.caps: frozenset[Capability] = caps
        self.checked = GuardedImpl(self.sut, {**RESULT_CHECKS, "view": want_instance(SlubView)})
        self.ref: RefSlub | None = None
        self.ref_pages: RefBuddy | None = None
        if spec.mode == "lockstep":
            self.ref_pages = RefBuddy(spec.config)
            self.ref = RefSlub(spec.config, self.ref_pages)
        self.select_checks("slub", caps, OPERATIONS)
        self.view = self._sut_view()
        self.pages_view = self.pages.view()
        self._compare("boot", {})

    # -- the step ------------------------------------------------------------------------------

    def step(self, op: str, **args: Any) -> Any:
        """One call, in both models when in lockstep, judged by every enabled rule."""
        before, pages_before, ledger_before = self.view, self.pages_view, self.ledger.copy()
        result = self.sut.call(op, args, RESULT_CHECKS[op])
        if self.ref is not None:
            expected = getattr(self.ref, op)(**args)
            if result != expected and LOCKSTEP in self.spec.enabled:
                self._fail(LOCKSTEP, f"{describe_call(op, args)}: {self.spec.impl_name} "
                                     f"returned {_show(result)}, refmodel {_show(expected)}")
        self.view = self._sut_view()
        self.pages_view = self.pages.view()
        self._compare(op, args)
        record = SlubStep(op=op, args=args, result=result, before=before, after=self.view,
                          pages_before=pages_before, pages_after=self.pages_view,
                          ledger=ledger_before, capabilities=self.caps)
        for check in self.step_checks[op]:
            problems = list(check.fn(record))
            if problems:
                self._fail(check.id, f"{check.title}:\n  " + "\n  ".join(problems))
        self._update_ledger(op, args, result, before)
        self.steps += 1
        return result

    def _update_ledger(self, op: str, args: dict[str, Any], result: Any,
                       before: SlubView) -> None:
        """The ledger follows what the implementation claims; the rules judge the claims."""
        ledger = self.ledger
        if op == "kmem_cache_create" and isinstance(result, int):
            if before.cache(result) is None:
                ledger.created[result] = CacheArgs(args["name"], args["size"], args["align"],
                                                   args["flags"] & sl.CACHE_CREATE_MASK)
        elif op in ("kmem_cache_alloc", "kmalloc") and isinstance(result, int) and result > 16:
            if op == "kmalloc" and args["size"] > sl.KMALLOC_MAX_CACHE_SIZE:
                ledger.large[result] = sl.get_order(args["size"])
            else:
                ledger.held[result] = args["cache"] if op == "kmem_cache_alloc" else -1
        elif op in ("kfree", "kmem_cache_free") and result in (0, -22):
            obj = args["obj"]
            ledger.overrun.pop(obj, None)
            if result == 0:
                ledger.held.pop(obj, None)
                ledger.large.pop(obj, None)
        elif op == "kmem_cache_destroy" and result == 0 and self.view.cache(args["cache"]) is None:
            ledger.created.pop(args["cache"], None)
        still_free = {obj for cache in self.view.caches for obj, _ in free_objects(cache)}
        ledger.dirty_free &= still_free

    def _sut_view(self) -> SlubView:
        view: SlubView = self.sut.call("view", {}, want_instance(SlubView))
        return view

    def _compare(self, op: str, args: dict[str, Any]) -> None:
        if self.ref is None or self.ref_pages is None or LOCKSTEP not in self.spec.enabled:
            return
        ref_view = self.ref.view()
        if ref_view != self.view:
            self._fail(LOCKSTEP, f"after {describe_call(op, args)} the views differ: "
                                 f"{view_difference(ref_view, self.view)}")
        if self.ref_pages.view() != self.pages_view:
            self._fail(LOCKSTEP, f"after {describe_call(op, args)} the page allocator's state "
                                 f"differs from refmodel's")

    # -- invariants ----------------------------------------------------------------------------

    def invariants_hold(self) -> None:
        """Every enabled state invariant, after every step."""
        snap = SlubSnapshot(view=self.view, pages=self.pages_view, config=self.spec.config,
                            ledger=self.ledger)
        for check in self.state_checks:
            problems = list(check.fn(snap))
            if problems:
                self._fail(check.id, f"{check.title}:\n  " + "\n  ".join(problems))

    def teardown(self) -> None:
        """Nothing beyond the per-step checks: every check is O(view)."""

    def _fail(self, check_id: str, message: str) -> None:
        caches = ", ".join(f"{c.name}[{len(c.slabs)} slabs, {len(c.partial)} partial]"
                           for c in self.view.caches if c.slabs)
        raise CheckFailure(check_id, f"{message}\ncaches with slabs: {caches or 'none'}; "
                                     f"{len(self.view.reports)} reports, "
                                     f"{self.view.warnings} warnings")

    # -- rule bodies ---------------------------------------------------------------------------

    def _layout(self, cache: int) -> sl.CacheView | None:
        return self.view.cache(cache)

    def do_create(self, size: int, align: int, flags: int) -> Any:
        """kmem_cache_create; the cache joins the bundle."""
        name = f"c{self.steps}"
        self.trace.rule("create", size=size, align=align, flags=flags)
        cache = self.step("kmem_cache_create", name=name, size=size, align=align, flags=flags)
        if not isinstance(cache, int) or cache < 0:
            return multiple()
        return self.new_handle(CacheHandle, cache=cache)

    def do_cache_alloc(self, cache: CacheHandle, gfp_mask: int, cpu: int) -> Any:
        """kmem_cache_alloc."""
        self.trace.rule("cache_alloc", cache=cache, gfp_mask=gfp_mask, cpu=cpu)
        obj = self.step("kmem_cache_alloc", cache=cache.cache, gfp_mask=gfp_mask, cpu=cpu)
        return self._got(obj, cache.cache)

    def do_kmalloc(self, size: int, gfp_mask: int, cpu: int) -> Any:
        """kmalloc of any size, 0 and huge included."""
        self.trace.rule("kmalloc", size=size, gfp_mask=gfp_mask, cpu=cpu)
        obj = self.step("kmalloc", size=size, gfp_mask=gfp_mask, cpu=cpu)
        return self._got(obj, -1)

    def _got(self, obj: Any, cache: int) -> Any:
        if not isinstance(obj, int) or (obj not in self.ledger.held
                                        and obj not in self.ledger.large):
            return multiple()
        return self.new_handle(ObjHandle, addr=obj, cache=cache)

    def do_free(self, obj: ObjHandle, cpu: int) -> Any:
        """kfree or kmem_cache_free of something the machine holds."""
        self.trace.rule("free", obj=obj, cpu=cpu)
        self._free(obj, cpu)
        if obj.addr in self.ledger.held or obj.addr in self.ledger.large:
            return obj
        self.freed.append(obj)
        return multiple()

    def _free(self, obj: ObjHandle, cpu: int) -> int:
        if obj.cache >= 0:
            result: int = self.step("kmem_cache_free", cache=obj.cache, obj=obj.addr, cpu=cpu)
        else:
            result = self.step("kfree", obj=obj.addr, cpu=cpu)
        return result

    def do_free_again(self, index: int, cpu: int) -> None:
        """Free an object already freed: a double free unless it was handed out again."""
        obj = self.freed[index % len(self.freed)]
        self.trace.rule("free_again", index=index, cpu=cpu)
        self._free(obj, cpu)

    def do_bad_free(self, obj: ObjHandle, delta: int) -> None:
        """kfree of a pointer a few bytes into an object, or of ZERO_SIZE_PTR/NULL."""
        self.trace.rule("bad_free", obj=obj, delta=delta)
        self.step("kfree", obj=obj.addr + delta if delta else sl.ZERO_SIZE_PTR, cpu=0)

    def do_ksize(self, obj: ObjHandle) -> None:
        """ksize of an object the machine holds."""
        self.trace.rule("ksize", obj=obj)
        self.step("ksize", obj=obj.addr)

    def do_shrink(self, cache: CacheHandle) -> None:
        """kmem_cache_shrink."""
        self.trace.rule("shrink", cache=cache)
        self.step("kmem_cache_shrink", cache=cache.cache)

    def do_destroy(self, cache: CacheHandle) -> Any:
        """kmem_cache_destroy; the handle is gone unless the destroy was refused."""
        self.trace.rule("destroy", cache=cache)
        result = self.step("kmem_cache_destroy", cache=cache.cache)
        return cache if result not in (0, -22) else multiple()

    def do_churn(self, cache: CacheHandle, count: int, cpu: int, free_cpu: int,
                 shrink: bool) -> None:
        """Allocate count objects on one CPU and free them all on another: slabs fill, go
        full, come back through the CPU partial lists and are discarded; with shrink, the
        CPU partial lists are then flushed to the node list."""
        self.trace.rule("churn", cache=cache, count=count, cpu=cpu, free_cpu=free_cpu,
                        shrink=shrink)
        got = []
        for _ in range(count):
            obj = self.step("kmem_cache_alloc", cache=cache.cache, gfp_mask=gfp.GFP_KERNEL,
                            cpu=cpu)
            if not isinstance(obj, int) or obj not in self.ledger.held:
                break
            got.append(obj)
        for obj in got:
            self.step("kmem_cache_free", cache=cache.cache, obj=obj, cpu=free_cpu)
        if shrink:
            self.step("kmem_cache_shrink", cache=cache.cache)

    def do_overrun(self, obj: ObjHandle, length: int) -> None:
        """A buggy caller writes past the end of an object into its right red zone."""
        cache = self.view.cache(obj.cache) if obj.cache >= 0 else None
        if cache is None or not cache.layout.flags & sl.SLAB_RED_ZONE:
            return
        self.trace.rule("overrun", obj=obj, length=length)
        self._overrun(obj, length)

    def _overrun(self, obj: ObjHandle, length: int) -> None:
        cache = self.view.cache(obj.cache) if obj.cache >= 0 else None
        if cache is None or not cache.layout.flags & sl.SLAB_RED_ZONE:
            return
        room = cache.layout.inuse - cache.layout.object_size
        length = 1 + (length - 1) % room
        result = self.step("write", addr=obj.addr + cache.layout.object_size,
                           value=FILLER, length=length)
        if result == 0 and obj.addr in self.ledger.held:
            _first, last = self.ledger.overrun.get(obj.addr, (0, -1))
            self.ledger.overrun[obj.addr] = (0, max(last, length - 1))

    def do_debug_scenario(self, size: int, flags: int, count: int, victim: int, length: int,
                          cpu: int) -> Any:
        """A debug cache, count objects, one overrun past its end, then every object freed
        (the overrun one is refused with a report), then one freed object written and the
        cache allocated from again: the whole life of a corruption in one rule."""
        self.trace.rule("debug_scenario", size=size, flags=flags, count=count, victim=victim,
                        length=length, cpu=cpu)
        cache = self.step("kmem_cache_create", name=f"d{self.steps}", size=size, align=0,
                          flags=flags)
        if not isinstance(cache, int) or self.view.cache(cache) is None:
            return multiple()
        handle = self.new_handle(CacheHandle, cache=cache)
        got = []
        for _ in range(count):
            obj = self.step("kmem_cache_alloc", cache=cache, gfp_mask=gfp.GFP_KERNEL, cpu=cpu)
            if isinstance(obj, int) and obj in self.ledger.held:
                got.append(self.new_handle(ObjHandle, addr=obj, cache=cache))
        if not got:
            return handle
        self._overrun(got[victim % len(got)], length)
        kept = [obj for obj in got if self._free(obj, cpu) != 0]
        freed = [obj for obj in got if obj not in kept]
        self.freed.extend(freed)
        if freed:
            self._use_after_free(victim % len(self.freed))
            obj = self.step("kmem_cache_alloc", cache=cache, gfp_mask=gfp.GFP_KERNEL, cpu=cpu)
            if isinstance(obj, int) and obj in self.ledger.held:
                kept.append(self.new_handle(ObjHandle, addr=obj, cache=cache))
        for obj in kept:
            self._free(obj, cpu)
        return handle

    def do_use_after_free(self, index: int) -> None:
        """A buggy caller writes into an object it has freed."""
        obj = self.freed[index % len(self.freed)]
        cache = self.view.cache(obj.cache) if obj.cache >= 0 else None
        if cache is None or obj.addr in self.ledger.held:
            return
        self.trace.rule("use_after_free", index=index)
        self._use_after_free(index)

    def _use_after_free(self, index: int) -> None:
        obj = self.freed[index % len(self.freed)]
        cache = self.view.cache(obj.cache) if obj.cache >= 0 else None
        if cache is None or obj.addr in self.ledger.held:
            return
        at = cache.layout.object_size // 2
        result = self.step("write", addr=obj.addr + at, value=FILLER, length=1)
        layout = cache.layout
        if result == 0 and layout.flags & sl.SLAB_POISON and layout.flags & \
                sl.SLAB_CONSISTENCY_CHECKS and any(o == obj.addr for o, _ in
                                                   free_objects(cache)):
            self.ledger.dirty_free.add(obj.addr)


def _show(value: Any) -> str:
    return hex(value) if isinstance(value, int) and value > 16 else repr(value)


def view_difference(expected: SlubView, actual: SlubView) -> str:
    """The first difference between two views, in words."""
    for field in ("nr_cpus", "large", "reports", "warnings", "nr_slab_pages"):
        if getattr(expected, field) != getattr(actual, field):
            return f"{field}: {getattr(actual, field)!r:.300}, refmodel " \
                   f"{getattr(expected, field)!r:.300}"
    if len(expected.caches) != len(actual.caches):
        return f"{len(actual.caches)} caches, refmodel {len(expected.caches)}"
    for ref, imp in zip(expected.caches, actual.caches, strict=True):
        for field in attrs.fields(type(ref)):
            want, got = getattr(ref, field.name), getattr(imp, field.name)
            if want != got:
                return f"{ref.name}.{field.name}: {got!r:.300}, refmodel {want!r:.300}"
    return "(equal)"


def make_slub_machine(spec: MachineSpec) -> type[SlubMachineBase]:
    """A machine class for one implementation, mode and machine."""
    cpus = st.integers(0, spec.config.nr_cpus - 1)
    gfps = st.sampled_from(GFP_MASKS)
    caches = SlubMachineBase.caches
    objects = SlubMachineBase.objects

    class SlubMachine(SlubMachineBase):
        @rule(target=caches, size=st.sampled_from(CACHE_SIZES) | st.integers(1, 10000),
              align=st.sampled_from([0, 8, 16, 64, 128, 3]), flags=st.sampled_from(CACHE_FLAGS))
        def create(self, size: int, align: int, flags: int) -> Any:
            return self.do_create(size, align, flags)

        @rule(target=objects, cache=caches, gfp_mask=gfps, cpu=cpus)
        def cache_alloc(self, cache: CacheHandle, gfp_mask: int, cpu: int) -> Any:
            return self.do_cache_alloc(cache, gfp_mask, cpu)

        @rule(target=objects, size=st.sampled_from(KMALLOC_SIZES) | st.integers(0, 9000),
              gfp_mask=gfps | st.just(HUGE_GFP), cpu=cpus)
        def kmalloc(self, size: int, gfp_mask: int, cpu: int) -> Any:
            return self.do_kmalloc(size, gfp_mask, cpu)

        @rule(target=objects, obj=consumes(objects), cpu=cpus)
        def free(self, obj: ObjHandle, cpu: int) -> Any:
            return self.do_free(obj, cpu)

        @precondition(lambda self: bool(self.freed))
        @rule(index=st.integers(0, 1 << 16), cpu=cpus)
        def free_again(self, index: int, cpu: int) -> None:
            self.do_free_again(index, cpu)

        @rule(obj=objects, delta=st.sampled_from([0, 1, 4, 8, 24]))
        def bad_free(self, obj: ObjHandle, delta: int) -> None:
            self.do_bad_free(obj, delta)

        @rule(obj=objects)
        def ksize(self, obj: ObjHandle) -> None:
            self.do_ksize(obj)

        @rule(cache=caches)
        def shrink(self, cache: CacheHandle) -> None:
            self.do_shrink(cache)

        @rule(target=caches, cache=consumes(caches))
        def destroy(self, cache: CacheHandle) -> Any:
            return self.do_destroy(cache)

        @rule(cache=caches, count=st.integers(1, CHURN_LIMIT), cpu=cpus, free_cpu=cpus,
              shrink=st.booleans())
        def churn(self, cache: CacheHandle, count: int, cpu: int, free_cpu: int,
                  shrink: bool) -> None:
            self.do_churn(cache, count, cpu, free_cpu, shrink)

        @rule(obj=objects, length=st.integers(1, 16))
        def overrun(self, obj: ObjHandle, length: int) -> None:
            self.do_overrun(obj, length)

        @precondition(lambda self: bool(self.freed))
        @rule(index=st.integers(0, 1 << 16))
        def use_after_free(self, index: int) -> None:
            self.do_use_after_free(index)

        @rule(target=objects, size=st.sampled_from(BOUNDARY_SIZES), cpu=cpus)
        def kmalloc_boundary(self, size: int, cpu: int) -> Any:
            return self.do_kmalloc(size, gfp.GFP_KERNEL, cpu)

        @rule(target=caches, size=st.sampled_from(CACHE_SIZES[:8]),
              flags=st.sampled_from(DEBUG_FLAGS), count=st.integers(1, 6),
              victim=st.integers(0, 5), length=st.integers(1, 8), cpu=cpus)
        def debug_scenario(self, size: int, flags: int, count: int, victim: int, length: int,
                           cpu: int) -> Any:
            return self.do_debug_scenario(size, flags, count, victim, length, cpu)

    SlubMachine.spec = spec
    SlubMachine.__name__ = SlubMachine.__qualname__ = (
        f"Slub{spec.mode.capitalize()}_{identifier(spec.impl_name)}")
    return SlubMachine


__all__ = ["CacheHandle", "ObjHandle", "SlubMachineBase", "make_slub_machine"]
