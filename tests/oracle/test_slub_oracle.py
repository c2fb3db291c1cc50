"""The host's /proc/slabinfo agrees with 4.6's calculate_sizes/calculate_order for every
plain kmalloc cache, at the host's nr_cpu_ids (masking table: specs/slub_oracle.md)."""

from __future__ import annotations

import pytest

from stateful_tests.oracle import slabinfo

SAMPLE = """slabinfo - version: 2.1
# name <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables ...
kmalloc-cg-96         10     42     96   42    1 : tunables    0    0    0 : slabdata 1 1 0
kmalloc-8k            12     16   8192    4    8 : tunables    0    0    0 : slabdata 4 4 0
dma-kmalloc-1k         0      0   1024   16    4 : tunables    0    0    0 : slabdata 0 0 0
kmalloc-192          420    420    192   21    1 : tunables    0    0    0 : slabdata 20 20 0
"""


def test_parse_and_rename():
    """k-suffixed names map to 4.6's sizes; cache families 4.6 lacks are left out."""
    caches = slabinfo.kmalloc_caches(slabinfo.parse_slabinfo(SAMPLE))
    assert {(8192, False), (1024, True), (192, False)} == set(caches)
    assert slabinfo.Geometry(1024, 16, 4) == caches[1024, True]


def test_nr_cpu_ids():
    """The possible-CPU mask's highest id plus one."""
    assert [2, 6, 1] == [slabinfo.nr_cpu_ids(t) for t in ("0-1\n", "0,2-5", "0")]


def test_compare_names_a_difference():
    """A wrong objects-per-slab on the host is reported by cache."""
    found = slabinfo.parse_slabinfo(SAMPLE.replace("192   21", "192   20"))
    problems = slabinfo.compare(found, 2)
    assert any(p.startswith("kmalloc-192: host") for p in problems)
    assert not any(p.startswith(("kmalloc-8192", "dma-kmalloc-1024")) for p in problems)


@pytest.mark.oracle
def test_host_kmalloc_geometry_is_46s():
    """Object size, objects per slab and pages per slab of every kmalloc cache on this host."""
    why = slabinfo.readable()
    if why is not None:
        pytest.skip(why)
    found = slabinfo.parse_slabinfo(slabinfo.SLABINFO.read_text(encoding="ascii"))
    cpus = slabinfo.nr_cpu_ids(slabinfo.POSSIBLE_CPUS.read_text(encoding="ascii"))
    assert [] == slabinfo.compare(found, cpus)
