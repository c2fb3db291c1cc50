"""Operation rules of the object allocator, SLUB-R1 .. SLUB-R4 (``specs/slub.md``).

A rule judges one step from its arguments, its result, the views before and after, and the
caller's ledger before the step, so it holds in contract mode whatever slab an
implementation picks.
"""

from __future__ import annotations

import attrs

from invariants.registry import step_rule
from invariants.slub import SlubLedger, slab_of
from specs import gfp
from specs.buddy import BuddyView
from specs.errno import Errno
from specs.machine import MAX_ORDER
from specs.slub import (
    KMALLOC_MAX_CACHE_SIZE,
    SLAB_CONSISTENCY_CHECKS,
    SLAB_RED_ZONE,
    ZERO_SIZE_PTR,
    Capability,
    SlubReport,
    SlubView,
    get_order,
    kmalloc_cache_name,
    kmalloc_index,
    page_address,
)

EINVAL = -Errno.EINVAL
EFAULT = -Errno.EFAULT


@attrs.frozen
class SlubStep:
    """One operation as a step rule judges it."""

    op: str
    args: dict[str, object]
    result: int | None
    before: SlubView
    after: SlubView
    pages_before: BuddyView
    pages_after: BuddyView
    #: the caller's ledger before the step
    ledger: SlubLedger
    capabilities: frozenset[Capability]


def _int(step: SlubStep, name: str) -> int:
    value = step.args[name]
    assert isinstance(value, int)
    return value


def unchanged(before: SlubView, after: SlubView) -> bool:
    """Equal apart from reports and warnings (the spec's one exception)."""
    return (attrs.evolve(before, reports=(), warnings=0)
            == attrs.evolve(after, reports=(), warnings=0))


@step_rule("SLUB-R1", "kmalloc picks the cache for the size", ops=["kmalloc"])
def kmalloc_cache(step: SlubStep) -> list[str]:
    """kmalloc(0) is ZERO_SIZE_PTR; 1..8192 bytes come from the kmalloc cache kmalloc_slab
    picks (the dma twin under GFP_DMA); above that from the page allocator at get_order(size),
    and beyond MAX_ORDER NULL, with a page-allocator warning unless __GFP_NOWARN."""
    size, mask, result = _int(step, "size"), _int(step, "gfp_mask"), step.result
    if size == 0:
        return [] if result == ZERO_SIZE_PTR else [f"kmalloc(0) returned {result!r}, not "
                                                   f"ZERO_SIZE_PTR (16)"]
    if result is None:
        if size > KMALLOC_MAX_CACHE_SIZE and get_order(size) >= MAX_ORDER:
            warned = step.pages_after.alloc_warnings - step.pages_before.alloc_warnings
            want = 0 if mask & gfp.__GFP_NOWARN else 1
            if warned != want:
                return [f"kmalloc({size}) failed with {warned} page-allocator warnings; "
                        f"gfp {mask:#x} calls for {want}"]
        return []
    if size > KMALLOC_MAX_CACHE_SIZE:
        if get_order(size) >= MAX_ORDER:
            return [f"kmalloc({size}) returned {result:#x}; no page order holds it"]
        listed = {page_address(pfn): order for pfn, order in step.after.large}
        if listed.get(result) != get_order(size):
            return [f"kmalloc({size}) returned {result:#x}, which is not an order-"
                    f"{get_order(size)} block from the page allocator"]
        return []
    name = kmalloc_cache_name(kmalloc_index(size), dma=bool(mask & gfp.GFP_DMA))
    for cache in step.after.caches:
        if slab_of(cache, result) is not None:
            if cache.name != name and name not in cache.aliases:
                return [f"kmalloc({size}) returned {result:#x} from {cache.name}; 4.6 "
                        f"serves {size} bytes from {name}"]
            return []
    return [f"kmalloc({size}) returned {result:#x}, which is in no slab"]


@step_rule("SLUB-R2", "a bad free is refused and changes nothing",
           ops=["kfree", "kmem_cache_free"])
def bad_free(step: SlubStep) -> list[str]:
    """Freeing what the caller does not hold (a double free, a pointer into the middle of an
    object, memory that is no slab) returns -EFAULT or -EINVAL and leaves the state as it was;
    freeing what it holds returns 0 (or, in a debug cache, -EINVAL after a report)."""
    obj = _int(step, "obj")
    ledger = step.ledger
    if step.op == "kfree" and 0 <= obj <= ZERO_SIZE_PTR:
        if step.result != 0 or not unchanged(step.before, step.after):
            return [f"kfree({obj:#x}) must be a no-op returning 0, got {step.result!r}"]
        return []
    cpu = _int(step, "cpu")
    if not 0 <= cpu < step.after.nr_cpus:
        return [] if step.result == EINVAL and unchanged(step.before, step.after) else [
            f"a free on cpu {cpu} must be refused with -EINVAL and change nothing"]
    owner = ledger.held.get(obj)
    held = obj in ledger.large or (owner is not None and (
        step.op == "kfree" or owner == step.args.get("cache")))
    if held:
        if step.result == 0:
            return []
        new_reports = step.after.reports[len(step.before.reports):]
        if step.result == EINVAL and new_reports:
            return []  # a debug check refused it, and said so
        return [f"{step.op} of held object {obj:#x} returned {step.result!r}"]
    if step.result == 0 and _after_a_fix_up(step, obj):
        return []
    if step.result not in (EINVAL, EFAULT):
        return [f"{step.op}({obj:#x}) of an object the caller does not hold returned "
                f"{step.result!r}, not -EINVAL or -EFAULT"]
    if not unchanged(step.before, step.after):
        return [f"{step.op}({obj:#x}) was refused but changed the state"]
    return []


def _after_a_fix_up(step: SlubStep, obj: int) -> bool:
    """obj lies in a slab a debug check has already reported on.

    4.6 does not refuse such a free for good: a failed allocation check marks the whole slab
    in use, and every failed free check restores the bytes it complained about, so a free
    repeated often enough passes the checks and frees the object, whoever holds it [4.6:
    mm/slub.c alloc_debug_processing, check_bytes_and_report restoring the bytes].  After a
    report the slab's accounting is 4.6's fix-up, no longer the caller's.
    """
    for cache in step.before.caches:
        slab = slab_of(cache, obj)
        if slab is not None:
            return any(report.cache == cache.name and slab_of(cache, report.addr) is slab
                       for report in step.before.reports)
    return False


@step_rule("SLUB-R3", "a destroyed cache returns every page", ops=["kmem_cache_destroy"])
def destroy_returns_pages(step: SlubStep) -> list[str]:
    """Destroying a cache whose objects are all freed removes it and gives all its slab pages
    back to the page allocator; with objects still held (or objects a debug check marked
    used) it returns -EBUSY and keeps them."""
    cache_id = _int(step, "cache")
    cache = step.before.cache(cache_id)
    if cache is None:
        return [] if step.result == EINVAL else [
            f"kmem_cache_destroy({cache_id}) of no cache returned {step.result!r}"]
    if cache_id not in step.ledger.created:
        return []  # the kmalloc caches and bad ids are SLUB-R2's and the spec's business
    holding = any(owner == cache_id for owner in step.ledger.held.values())
    checked = any(report.cache == cache.name for report in step.before.reports)
    if step.result == -Errno.EBUSY:
        # A slab a debug check marked used keeps its objects for good (4.6 leaks it).
        return [] if holding or checked else [
            f"kmem_cache_destroy({cache.name}) returned -EBUSY but the caller holds none of "
            f"its objects"]
    if step.result != 0:
        return [f"kmem_cache_destroy({cache.name}) returned {step.result!r}"]
    if holding:
        return [f"kmem_cache_destroy({cache.name}) returned 0 while the caller holds objects"]
    if cache.refcount > 1:
        return [] if step.after.cache(cache_id) is not None else [
            f"destroying one of {cache.refcount} references removed {cache.name}"]
    if step.after.cache(cache_id) is not None:
        return [f"kmem_cache_destroy({cache.name}) returned 0 but the cache is still there"]
    pages = sum(1 << slab.order for slab in cache.slabs)
    freed = step.before.nr_slab_pages - step.after.nr_slab_pages
    if freed != pages:
        return [f"destroying {cache.name} released {freed} slab pages of its {pages}"]
    return []


@step_rule("SLUB-R4", "corruption is reported as 4.6's checks report it",
           ops=["kfree", "kmem_cache_free", "kmem_cache_alloc"], needs=[Capability.DEBUG])
def corruption_reported(step: SlubStep) -> list[str]:
    """A red zone overwritten past a held object of a SLAB_RED_ZONE|SLAB_CONSISTENCY_CHECKS
    cache is reported on free as ``Redzone overwritten`` with the first and last wrong byte, and
    the object is not freed; an object written after it was freed (SLAB_POISON) is never
    handed out again unreported."""
    if step.op == "kmem_cache_alloc":
        if step.result is not None and step.result in step.ledger.dirty_free:
            return [f"object {step.result:#x}, written after it was freed, was handed out "
                    f"again with no Poison report"]
        return []
    obj = _int(step, "obj")
    overrun = _overrun_expected(step, obj)
    if overrun is None:
        return []
    new_reports = step.after.reports[len(step.before.reports):]
    if step.result != EINVAL or overrun not in new_reports:
        return [f"freeing {obj:#x} after its red zone was overwritten: result "
                f"{step.result!r}, reports {list(new_reports)}; 4.6 refuses with the report "
                f"{overrun}"]
    return []


def _overrun_expected(step: SlubStep, obj: int) -> SlubReport | None:
    """The report 4.6 makes on freeing obj, when the caller overran its right red zone."""
    owner = step.ledger.held.get(obj)
    cache = step.before.cache(owner) if owner is not None else None
    marks = step.ledger.overrun.get(obj)
    if cache is None or marks is None:
        return None
    layout = cache.layout
    if layout.flags & (SLAB_RED_ZONE | SLAB_CONSISTENCY_CHECKS) != (
            SLAB_RED_ZONE | SLAB_CONSISTENCY_CHECKS):
        return None
    first, last = marks
    start = obj + layout.object_size
    return SlubReport(cache.name, "Redzone overwritten", obj, start + first, start + last)
