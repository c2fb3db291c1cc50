"""Hand-computed 4.6 behaviour of the reference SLUB allocator on the tiny preset (2 CPUs).

Expected values were worked out from mm/slub.c by hand: first-fit pfns come from the buddy
allocator, objects from a fresh slab in address order, frees go to the freelist's head.
"""

from __future__ import annotations

import pytest

from invariants.slub import slab_of
from refmodel.buddy import RefBuddy
from refmodel.slub import RefSlub
from specs import gfp
from specs.errno import Errno
from specs.machine import preset
from specs.slub import (
    SLAB_CONSISTENCY_CHECKS,
    SLAB_POISON,
    SLAB_RED_ZONE,
    ZERO_SIZE_PTR,
    SlubReport,
)

GFP = gfp.GFP_KERNEL


@pytest.fixture
def slub():
    config = preset("tiny")
    return RefSlub(config, RefBuddy(config))


def cache_named(slub, name):
    return next(c for c in slub.view().caches if c.name == name)


def test_kmalloc_boundaries_pick_96_and_192(slub):
    """96 -> kmalloc-96, 97 -> kmalloc-128, 192 -> kmalloc-192, 193 -> kmalloc-256."""
    got = {size: slub.kmalloc(size, GFP) for size in (96, 97, 192, 193)}
    for size, name in ((96, "kmalloc-96"), (97, "kmalloc-128"), (192, "kmalloc-192"),
                       (193, "kmalloc-256")):
        assert slab_of(cache_named(slub, name), got[size]) is not None, size


def test_objects_come_in_address_order_and_frees_are_lifo(slub):
    """A fresh kmalloc-64 slab hands out base, base+64, ...; a freed object comes back next."""
    a, b, c = (slub.kmalloc(64, GFP) for _ in range(3))
    assert [a + 64, a + 128] == [b, c]
    assert 0 == slub.kfree(b)
    assert b == slub.kmalloc(64, GFP)


def test_zero_null_and_double_free(slub):
    """kmalloc(0) is ZERO_SIZE_PTR; kfree of it and of NULL is a no-op; a double free is
    refused with -EFAULT and changes nothing."""
    assert ZERO_SIZE_PTR == slub.kmalloc(0, GFP)
    assert (0, 0) == (slub.kfree(0), slub.kfree(ZERO_SIZE_PTR))
    obj = slub.kmalloc(32, GFP)
    assert 0 == slub.kfree(obj)
    before = slub.view()
    assert -Errno.EFAULT == slub.kfree(obj)
    assert -Errno.EINVAL == slub.kfree(obj + 8)
    assert before == slub.view()


def test_large_kmalloc_and_huge_failure(slub):
    """9000 bytes: an order-2 compound block; 5 MiB: NULL, a page-allocator warning unless
    __GFP_NOWARN."""
    obj = slub.kmalloc(9000, GFP)
    assert obj is not None
    assert 16384 == slub.ksize(obj)
    pages = slub.state.pages
    warnings = pages.view().alloc_warnings
    assert slub.kmalloc(5 << 20, GFP) is None
    assert slub.kmalloc(5 << 20, GFP | gfp.__GFP_NOWARN) is None
    assert warnings + 1 == pages.view().alloc_warnings
    assert 0 == slub.kfree(obj)
    assert () == slub.view().large


def test_merge_into_kmalloc_96(slub):
    """90 bytes rounds to 96 = kmalloc-96's stride: the cache is an alias of kmalloc-96."""
    cache = slub.kmem_cache_create("ninety", 90, 0, 0)
    assert cache_named(slub, "kmalloc-96").id == cache
    assert ("ninety",) == cache_named(slub, "kmalloc-96").aliases


def test_red_zone_overrun_reported_on_free(slub):
    """20-byte objects with red zone and checks: writing 2 bytes past the end is reported as
    'Redzone overwritten' with the first and last bad byte, and the free is refused."""
    cache = slub.kmem_cache_create("rz", 20, 0, SLAB_RED_ZONE | SLAB_CONSISTENCY_CHECKS)
    obj = slub.kmem_cache_alloc(cache, GFP)
    assert 0 == slub.write(obj + 20, 0x41, 2)
    assert -Errno.EINVAL == slub.kmem_cache_free(cache, obj)
    assert (SlubReport("rz", "Redzone overwritten", obj, obj + 20, obj + 21),) == \
        slub.view().reports
    assert 0 == slub.kmem_cache_free(cache, obj)  # the bytes were restored


def test_use_after_free_caught_on_reuse(slub):
    """A poisoned object written after free is reported on the next alloc and not reused."""
    cache = slub.kmem_cache_create("p", 64, 0, SLAB_POISON | SLAB_CONSISTENCY_CHECKS)
    obj = slub.kmem_cache_alloc(cache, GFP)
    assert 0 == slub.kmem_cache_free(cache, obj)
    assert 0 == slub.write(obj + 10, 0x41, 1)
    again = slub.kmem_cache_alloc(cache, GFP)
    assert obj != again
    assert "Poison overwritten" == slub.view().reports[-1].what
    assert (obj + 10, obj + 10) == (slub.view().reports[-1].first, slub.view().reports[-1].last)


def test_destroy_with_objects_is_busy_then_succeeds(slub):
    """Objects remaining: -EBUSY and a report; after the free, destroy returns the pages."""
    cache = slub.kmem_cache_create("d", 700, 0, 0)
    obj = slub.kmem_cache_alloc(cache, GFP)
    assert -Errno.EBUSY == slub.kmem_cache_destroy(cache)
    assert 0 == slub.kmem_cache_free(cache, obj)
    assert 0 == slub.kmem_cache_destroy(cache)
    assert 0 == slub.view().nr_slab_pages
