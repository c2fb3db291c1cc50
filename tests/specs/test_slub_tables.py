"""Hand-computed 4.6 tables: kmalloc cache selection, slab order and objects per slab.

Every number here was worked out by hand from 4.6's ``calculate_sizes``/``calculate_order``
(``mm/slub.c``) and ``kmalloc_slab`` (``mm/slab_common.c``), not by running the code under
test.  min_objects = 4 * (fls(nr_cpu_ids) + 1): 8, 12, 16 and 32 for 1, 2, 4 and 64 CPUs.
"""

from __future__ import annotations

import pytest

from specs import slub
from specs.slub import (
    SLAB_CONSISTENCY_CHECKS,
    SLAB_HWCACHE_ALIGN,
    SLAB_POISON,
    SLAB_RED_ZONE,
    SLAB_STORE_USER,
    calculate_alignment,
    calculate_sizes,
    kmalloc_index,
)

CPUS = (1, 2, 4, 64)

#: kmalloc size -> (order, objects) at 1, 2, 4 and 64 CPUs.
KMALLOC_GEOMETRY = {
    8: ((0, 512), (0, 512), (0, 512), (0, 512)),
    16: ((0, 256), (0, 256), (0, 256), (0, 256)),
    32: ((0, 128), (0, 128), (0, 128), (0, 128)),
    64: ((0, 64), (0, 64), (0, 64), (0, 64)),
    96: ((0, 42), (0, 42), (0, 42), (0, 42)),  # 4096 % 96 = 64 left over
    128: ((0, 32), (0, 32), (0, 32), (0, 32)),
    192: ((0, 21), (0, 21), (0, 21), (1, 42)),  # 32 objects need 6144 bytes: order 1
    256: ((0, 16), (0, 16), (0, 16), (1, 32)),
    512: ((0, 8), (1, 16), (1, 16), (2, 32)),
    1024: ((1, 8), (2, 16), (2, 16), (3, 32)),
    2048: ((2, 8), (3, 16), (3, 16), (3, 16)),  # 64 CPUs: capped at 16 per order-3 slab
    4096: ((3, 8), (3, 8), (3, 8), (3, 8)),
    8192: ((3, 4), (3, 4), (3, 4), (3, 4)),
}

#: kmalloc size -> (min_partial, cpu_partial): clamp(ilog2(size) / 2, 5, 10) and the
#: per-size cpu_partial of kmem_cache_open.
KMALLOC_PARTIAL = {8: (5, 30), 16: (5, 30), 32: (5, 30), 64: (5, 30), 96: (5, 30),
                   128: (5, 30), 192: (5, 30), 256: (5, 13), 512: (5, 13), 1024: (5, 6),
                   2048: (5, 6), 4096: (6, 2), 8192: (6, 2)}

#: (object size, align, flags) -> stride, then (order, objects) at 1, 2, 4 and 64 CPUs.
ODD_GEOMETRY = {
    (20, 0, 0): (24, ((0, 170), (0, 170), (0, 170), (0, 170))),  # 4096 % 24 = 16
    (700, 0, 0): (704, ((1, 11), (2, 23), (2, 23), (3, 46))),
    # 3000: order 3 leaves 2768 bytes, over 1/16 of the slab, so only fraction 8 accepts it
    (3000, 0, 0): (3000, ((3, 10), (3, 10), (3, 10), (3, 10))),
    (5000, 0, 0): (5000, ((3, 6), (3, 6), (3, 6), (3, 6))),
    (9000, 0, 0): (9000, ((3, 3), (3, 3), (3, 3), (3, 3))),  # only fraction 4 accepts
    (20000, 0, 0): (20000, ((3, 1), (3, 1), (3, 1), (3, 1))),  # one object per slab
    (40000, 0, 0): (40000, ((4, 1), (4, 1), (4, 1), (4, 1))),  # above slub_max_order
    (100, 0, SLAB_HWCACHE_ALIGN): (128, ((0, 32), (0, 32), (0, 32), (0, 32))),
    (64, 0, SLAB_POISON): (72, ((0, 56), (0, 56), (0, 56), (0, 56))),  # free pointer after
    (20, 0, SLAB_RED_ZONE | SLAB_POISON | SLAB_CONSISTENCY_CHECKS | SLAB_STORE_USER):
        (352, ((0, 11), (1, 23), (1, 23), (2, 46))),
    (24, 16, 0): (32, ((0, 128), (0, 128), (0, 128), (0, 128))),
}


@pytest.mark.parametrize("size", sorted(KMALLOC_GEOMETRY))
@pytest.mark.parametrize("cpus_index", range(len(CPUS)))
def test_kmalloc_cache_geometry(size, cpus_index):
    """Each kmalloc cache's order and objects per slab, at 1, 2, 4 and 64 CPUs."""
    layout = calculate_sizes(size, calculate_alignment(0, 8, size), 0, CPUS[cpus_index])
    assert layout is not None
    assert KMALLOC_GEOMETRY[size][cpus_index] == (layout.order, layout.objects)
    assert (size, size) == (layout.size, layout.object_size)
    assert KMALLOC_PARTIAL[size] == (layout.min_partial, layout.cpu_partial)


@pytest.mark.parametrize("key", list(ODD_GEOMETRY), ids=str)
@pytest.mark.parametrize("cpus_index", range(len(CPUS)))
def test_odd_size_geometry(key, cpus_index):
    """Created caches of odd sizes, alignments and debug flags."""
    size, align, flags = key
    stride, table = ODD_GEOMETRY[key]
    layout = calculate_sizes(size, calculate_alignment(flags, align, size), flags,
                             CPUS[cpus_index])
    assert layout is not None
    assert (stride, *table[cpus_index]) == (layout.size, layout.order, layout.objects)


def test_debug_layout_places_red_zones_and_free_pointer():
    """20 bytes with every debug flag: 8 left red zone, object, 4 right red zone, free pointer
    at 24, two 152-byte tracks, one more word, 352 in all."""
    layout = calculate_sizes(20, 8, SLAB_RED_ZONE | SLAB_POISON | SLAB_CONSISTENCY_CHECKS
                             | SLAB_STORE_USER, 2)
    assert layout is not None
    assert (8, 24, 24, 0) == (layout.red_left_pad, layout.inuse, layout.offset,
                              layout.cpu_partial)
    assert layout.flags & slub.__OBJECT_POISON


def test_red_zone_on_a_word_multiple_adds_a_word():
    """64 bytes with SLAB_RED_ZONE: inuse 72 so the right red zone has 8 bytes."""
    layout = calculate_sizes(64, 8, SLAB_RED_ZONE, 1)
    assert layout is not None
    assert (72, 0, 8, 88) == (layout.inuse, layout.offset, layout.red_left_pad, layout.size)


def test_no_order_fits_above_four_mebibytes():
    """An object larger than an order-10 block has no slab order (4.6: -ENOSYS)."""
    assert calculate_sizes(5 << 20, 8, 0, 2) is None


KMALLOC_INDEX = [(1, 3), (8, 3), (9, 4), (16, 4), (17, 5), (24, 5), (32, 5), (33, 6),
                 (64, 6), (65, 1), (72, 1), (96, 1), (97, 7), (128, 7), (129, 2), (192, 2),
                 (193, 8), (256, 8), (257, 9), (512, 9), (513, 10), (1024, 10), (1025, 11),
                 (2048, 11), (2049, 12), (4096, 12), (4097, 13), (8192, 13)]


@pytest.mark.parametrize(("size", "index"), KMALLOC_INDEX)
def test_kmalloc_index(size, index):
    """kmalloc_slab: the size_index table up to 192 (96 and 192 included), fls above."""
    assert index == kmalloc_index(size)


def test_kmalloc_index_names():
    """Index 1 is kmalloc-96 and 2 is kmalloc-192; the rest are powers of two."""
    assert ["kmalloc-96", "kmalloc-192", "kmalloc-8", "dma-kmalloc-8192"] == [
        slub.kmalloc_cache_name(1), slub.kmalloc_cache_name(2), slub.kmalloc_cache_name(3),
        slub.kmalloc_cache_name(13, dma=True)]


def test_hwcache_alignment_halves_for_small_objects():
    """calculate_alignment: 64, halved while the object fits in half: 20 bytes -> 32."""
    assert [64, 32, 16, 8, 128] == [
        calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 100),
        calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 20),
        calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 16),
        calculate_alignment(0, 0, 20),
        calculate_alignment(SLAB_HWCACHE_ALIGN, 128, 20)]
