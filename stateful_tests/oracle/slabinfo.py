"""The host kernel's kmalloc caches against 4.6's geometry (``/proc/slabinfo``).

``/proc/slabinfo`` (root only) gives each cache's object size, objects per slab and pages per
slab.  4.6's ``calculate_sizes``/``calculate_order`` still decide these for the plain kmalloc
caches on the host kernel, given the host's ``nr_cpu_ids``; what changed since 4.6 (names,
cache families 4.6 did not have, fields 4.6 computed differently) is masked as
``specs/slub_oracle.md`` lists.  Counts of active objects are never compared: per-CPU slabs
and sheaves make them approximate.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from specs.machine import PAGE_SIZE
from specs.slub import KMALLOC_SIZES, SLAB_CACHE_DMA, calculate_alignment, calculate_sizes

SLABINFO = Path("/proc/slabinfo")
POSSIBLE_CPUS = Path("/sys/devices/system/cpu/possible")
#: 4.6 names kmalloc-1024 what later kernels name kmalloc-1k (since 4.20, "k" suffixes)
HOST_NAME = re.compile(r"^(dma-)?kmalloc-(\d+)(k?)$")


@attrs.frozen
class Geometry:
    """What slabinfo shows of one cache."""

    objsize: int
    objperslab: int
    pagesperslab: int


def readable() -> str | None:
    """None when slabinfo can be read here, else why not."""
    try:
        SLABINFO.read_text(encoding="ascii")
    except OSError as exc:
        return f"{SLABINFO} is not readable here ({exc.strerror}); it is root-only"
    return None


def parse_slabinfo(text: str) -> dict[str, Geometry]:
    """name -> geometry, from slabinfo version 2.1 text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(("slabinfo", "#")):
            continue
        fields = line.split()
        if len(fields) >= 6:
            found[fields[0]] = Geometry(int(fields[3]), int(fields[4]), int(fields[5]))
    return found


def nr_cpu_ids(text: str) -> int:
    """nr_cpu_ids from /sys/devices/system/cpu/possible ("0-1", "0,2-5"): highest id + 1."""
    highest = max(int(part.split("-")[-1]) for part in text.strip().split(","))
    return highest + 1


def kmalloc_caches(found: dict[str, Geometry]) -> dict[tuple[int, bool], Geometry]:
    """(size, dma) -> geometry of every plain kmalloc cache the host lists (the families
    added after 4.6, such as kmalloc-cg-* and kmalloc-rcl-*, do not match)."""
    caches = {}
    for name, geometry in found.items():
        match = HOST_NAME.match(name)
        if match:
            size = int(match.group(2)) * (1024 if match.group(3) else 1)
            caches[size, bool(match.group(1))] = geometry
    return caches


def expected(size: int, dma: bool, cpus: int) -> Geometry:
    """4.6's geometry for a kmalloc cache on a machine with ``cpus`` possible CPUs."""
    flags = SLAB_CACHE_DMA if dma else 0
    layout = calculate_sizes(size, calculate_alignment(flags, 8, size), flags, cpus)
    assert layout is not None
    return Geometry(layout.size, layout.objects, (PAGE_SIZE << layout.order) // PAGE_SIZE)


def compare(found: dict[str, Geometry], cpus: int) -> list[str]:
    """Every kmalloc cache whose geometry differs from 4.6's, in words ([] when all agree).
    A 4.6 size class the host lacks is reported too."""
    host = kmalloc_caches(found)
    problems = []
    for dma in (False, True):
        for size in sorted(KMALLOC_SIZES.values()):
            got = host.get((size, dma))
            if got is None:
                if not dma:
                    problems.append(f"kmalloc-{size}: not on the host")
                continue
            want = expected(size, dma, cpus)
            if got != want:
                problems.append(f"{'dma-' if dma else ''}kmalloc-{size}: host {got}, "
                                f"4.6 {want}")
    return problems
