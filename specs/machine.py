"""Machine configuration: memory size, CPUs, zone layout and the zone tunables 4.6 derives.

A :class:`MachineConfig` is what both models boot from.  :func:`derive_zones` computes each
zone's watermarks, lowmem reserves and per-cpu list sizes with 4.6's boot-time formulas, so
every implementation starts from the same numbers and the numbers can be checked against
hand-computed values in ``tests/specs/test_machine.py``.

[Simplified: one node; memory is one contiguous range of pfns starting at 0 with no holes and
no memblock reservations, so spanned == present == managed for every zone.]
"""

from __future__ import annotations

import functools
import math
from typing import Final

import attrs

from specs.gfp import MAX_NR_ZONES, ZONE_NAMES, ZoneType

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
MAX_ORDER: Final = 11  # [4.6: include/linux/mmzone.h] orders 0..10
MAX_ORDER_NR_PAGES: Final = 1 << (MAX_ORDER - 1)
PAGEBLOCK_ORDER: Final = 9  # [4.6: HUGETLB_PAGE_ORDER on x86-64]
PAGEBLOCK_NR_PAGES: Final = 1 << PAGEBLOCK_ORDER
PAGE_ALLOC_COSTLY_ORDER: Final = 3

#: 4.6's zone boundaries on x86-64: DMA below 16 MiB, DMA32 below 4 GiB.
DMA_END_PFN: Final = (16 << 20) >> PAGE_SHIFT
DMA32_END_PFN: Final = (4 << 30) >> PAGE_SHIFT
THP_MIN_RAM_PAGES: Final = (512 << 20) >> PAGE_SHIFT  # [4.6: mm/huge_memory.c hugepage_init]


@attrs.frozen
class MachineConfig:
    """The knobs a machine is booted with; ``customised`` names every departure from 4.6."""

    name: str
    nr_pages: int
    nr_cpus: int
    dma_end_pfn: int = DMA_END_PFN
    dma32_end_pfn: int = DMA32_END_PFN
    #: None: computed by init_per_zone_wmark_min's formula (the 4.6 boot value).
    min_free_kbytes: int | None = None
    #: Apply mm/huge_memory.c set_recommended_min_free_kbytes (THP enabled, >= 512 MiB RAM).
    thp_min_free_kbytes: bool = False
    watermark_scale_factor: int = 10
    percpu_pagelist_fraction: int = 0
    #: Customised knob: replaces zone_batchsize()'s result for every zone when set.
    pcp_batch_override: int | None = None
    lowmem_reserve_ratio: tuple[int, int, int] = (256, 256, 32)
    #: field name -> why this preset departs from 4.6 there.
    customised: dict[str, str] = attrs.field(factory=dict, eq=False)

    def zone_spans(self) -> tuple[tuple[int, int], ...]:
        """[start, end) pfns of DMA, DMA32, Normal and (always empty) Movable."""
        dma_end = min(self.dma_end_pfn, self.nr_pages)
        dma32_end = min(max(self.dma32_end_pfn, dma_end), self.nr_pages)
        return ((0, dma_end), (dma_end, dma32_end), (dma32_end, self.nr_pages),
                (self.nr_pages, self.nr_pages))


@attrs.frozen
class ZoneGeometry:
    """A zone's boot-time constants, as 4.6 would compute them for this config."""

    index: int
    name: str
    start_pfn: int
    end_pfn: int
    managed_pages: int
    watermark: tuple[int, int, int]  # WMARK_MIN, WMARK_LOW, WMARK_HIGH
    lowmem_reserve: tuple[int, ...]  # indexed by classzone_idx
    pcp_high: int
    pcp_batch: int

    @property
    def populated(self) -> bool:
        """[4.6: populated_zone] a zone with no pages takes part in nothing."""
        return self.managed_pages > 0

    def contains(self, pfn: int) -> bool:
        """zone_spans_pfn."""
        return self.start_pfn <= pfn < self.end_pfn


def zone_batchsize(managed_pages: int) -> int:
    """[4.6: mm/page_alloc.c zone_batchsize] about 1/1000 of the zone, at most 512 KiB."""
    batch = managed_pages // 1024
    if batch * PAGE_SIZE > 512 * 1024:
        batch = (512 * 1024) // PAGE_SIZE
    batch //= 4
    batch = max(batch, 1)
    return rounddown_pow_of_two(batch + batch // 2) - 1


def rounddown_pow_of_two(n: int) -> int:
    """Largest power of two <= n (n >= 1)."""
    return 1 << (n.bit_length() - 1)


def pcp_high_batch(config: MachineConfig, managed_pages: int) -> tuple[int, int]:
    """[4.6: pageset_set_high_and_batch, pageset_set_batch, pageset_set_high]"""
    if config.percpu_pagelist_fraction:
        high = managed_pages // config.percpu_pagelist_fraction
        batch = max(1, high // 4)
        if high // 4 > PAGE_SHIFT * 8:
            batch = PAGE_SHIFT * 8
        return high, batch
    override = config.pcp_batch_override
    batch = zone_batchsize(managed_pages) if override is None else override
    return 6 * batch, max(1, batch)


def boot_min_free_kbytes(lowmem_pages: int) -> int:
    """[4.6: init_per_zone_wmark_min] sqrt(lowmem_kbytes * 16), clamped to [128, 65536]."""
    lowmem_kbytes = lowmem_pages * (PAGE_SIZE >> 10)
    return min(max(math.isqrt(lowmem_kbytes * 16), 128), 65536)


def per_zone_wmarks(
    min_free_kbytes: int, managed: tuple[int, ...], scale_factor: int
) -> tuple[tuple[int, int, int], ...]:
    """[4.6: __setup_per_zone_wmarks] MIN split by size; LOW/HIGH add one/two deltas."""
    pages_min = min_free_kbytes >> (PAGE_SHIFT - 10)
    lowmem_pages = sum(managed)
    marks = []
    for pages in managed:
        low_min = pages_min * pages // lowmem_pages if lowmem_pages else 0
        # mult_frac(managed, scale, 10000) computed without overflow, as the kernel does.
        scaled = (pages // 10000) * scale_factor + (pages % 10000) * scale_factor // 10000
        delta = max(low_min >> 2, scaled)
        marks.append((low_min, low_min + delta, low_min + 2 * delta))
    return tuple(marks)


def nr_free_buffer_pages(managed: tuple[int, ...], high: tuple[int, ...]) -> int:
    """[4.6: nr_free_zone_pages(gfp_zone(GFP_USER))] pages above the high mark, DMA..Normal."""
    return sum(max(m - h, 0) for m, h in list(zip(managed, high, strict=True))[:3])


def thp_recommended_min_free_kbytes(nr_populated: int, free_buffer_pages: int) -> int:
    """[4.6: mm/huge_memory.c set_recommended_min_free_kbytes]

    Two free pageblocks per zone plus MIGRATE_PCPTYPES^2 more, capped at 5% of lowmem; unlike
    the boot value this one is not capped at 65536 KiB.
    """
    pcptypes = 3
    recommended = PAGEBLOCK_NR_PAGES * nr_populated * 2
    recommended += PAGEBLOCK_NR_PAGES * nr_populated * pcptypes * pcptypes
    recommended = min(recommended, free_buffer_pages // 20)
    return recommended << (PAGE_SHIFT - 10)


def lowmem_reserves(
    managed: tuple[int, ...], ratio: tuple[int, int, int]
) -> tuple[tuple[int, ...], ...]:
    """[4.6: setup_per_zone_lowmem_reserve] what a lower zone keeps back from higher callers."""
    reserve = [[0] * MAX_NR_ZONES for _ in range(MAX_NR_ZONES)]
    for j in range(MAX_NR_ZONES):
        pages = managed[j]
        idx = j
        while idx:
            idx -= 1
            reserve[idx][j] = pages // max(ratio[idx], 1)
            pages += managed[idx]
    return tuple(tuple(row) for row in reserve)


def effective_min_free_kbytes(config: MachineConfig) -> int:
    """min_free_kbytes after boot (and after THP start-up when the config enables it)."""
    managed = tuple(end - start for start, end in config.zone_spans())
    if config.min_free_kbytes is not None:
        value = config.min_free_kbytes
    else:
        value = boot_min_free_kbytes(nr_free_buffer_pages(managed, (0,) * MAX_NR_ZONES))
    if config.thp_min_free_kbytes and config.nr_pages >= THP_MIN_RAM_PAGES:
        marks = per_zone_wmarks(value, managed, config.watermark_scale_factor)
        highs = tuple(mark[2] for mark in marks)
        populated = sum(1 for pages in managed if pages)
        value = max(value, thp_recommended_min_free_kbytes(
            populated, nr_free_buffer_pages(managed, highs)))
    return value


@functools.lru_cache(maxsize=64)
def derive_zones(config: MachineConfig) -> tuple[ZoneGeometry, ...]:
    """Every zone's geometry and tunables, in ZoneType order (empty zones included).
    Cached: configs are frozen, and checkers ask for the same one after every step."""
    spans = config.zone_spans()
    managed = tuple(end - start for start, end in spans)
    marks = per_zone_wmarks(effective_min_free_kbytes(config), managed,
                            config.watermark_scale_factor)
    reserves = lowmem_reserves(managed, config.lowmem_reserve_ratio)
    zones = []
    for zone_type in ZoneType:
        start, end = spans[zone_type]
        high, batch = pcp_high_batch(config, managed[zone_type])
        zones.append(ZoneGeometry(
            index=int(zone_type), name=ZONE_NAMES[zone_type], start_pfn=start, end_pfn=end,
            managed_pages=managed[zone_type], watermark=marks[zone_type],
            lowmem_reserve=reserves[zone_type], pcp_high=high, pcp_batch=batch))
    return tuple(zones)


def x86_64(name: str, nr_pages: int, nr_cpus: int) -> MachineConfig:
    """A machine with 4.6's own zone boundaries and tunables (THP on when RAM >= 512 MiB)."""
    return MachineConfig(name=name, nr_pages=nr_pages, nr_cpus=nr_cpus,
                         thp_min_free_kbytes=nr_pages >= THP_MIN_RAM_PAGES)


def _tiny() -> MachineConfig:
    return MachineConfig(
        name="tiny", nr_pages=4096, nr_cpus=2, dma_end_pfn=1536, dma32_end_pfn=2560,
        pcp_batch_override=2,
        customised={
            "dma_end_pfn": "6 MiB instead of 16 MiB, and not 4 MiB aligned, so that buddies "
                           "straddle the DMA/DMA32 boundary and all three zones fit in 16 MiB",
            "dma32_end_pfn": "10 MiB instead of 4 GiB, for the same reasons",
            "pcp_batch_override": "batch 2 (high 12) instead of zone_batchsize()'s 0 for a "
                                  "small zone, so per-cpu lists fill and drain within a test",
        },
    )


def _small() -> MachineConfig:
    return MachineConfig(
        name="small", nr_pages=65536, nr_cpus=4, dma32_end_pfn=32768,
        customised={"dma32_end_pfn": "128 MiB instead of 4 GiB, so a 256 MiB machine has a "
                                     "Normal zone"},
    )


PRESETS: Final[dict[str, MachineConfig]] = {
    "tiny": _tiny(),
    "small": _small(),
    "large": x86_64("large", 4 << 20, 8),
}


def preset(name: str) -> MachineConfig:
    """Look a preset up by name; KeyError lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
