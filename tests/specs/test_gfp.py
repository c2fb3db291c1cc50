"""Hand-computed checks of specs/gfp.py against Linux 4.6 include/linux/gfp.h and mm/internal.h.

Every expected value below is written out by hand from the 4.6 source, not computed by the
module under test.
"""

from __future__ import annotations

import pytest

from specs import gfp
from specs.gfp import GfpFlag, MigrateType, ZoneType

# [4.6: include/linux/gfp.h lines 18-43] the ___GFP_* bit values, copied from the header.
GFP_BITS_4_6 = {
    "DMA": 0x01, "HIGHMEM": 0x02, "DMA32": 0x04, "MOVABLE": 0x08, "RECLAIMABLE": 0x10,
    "HIGH": 0x20, "IO": 0x40, "FS": 0x80, "COLD": 0x100, "NOWARN": 0x200, "REPEAT": 0x400,
    "NOFAIL": 0x800, "NORETRY": 0x1000, "MEMALLOC": 0x2000, "COMP": 0x4000, "ZERO": 0x8000,
    "NOMEMALLOC": 0x10000, "HARDWALL": 0x20000, "THISNODE": 0x40000, "ATOMIC": 0x80000,
    "ACCOUNT": 0x100000, "NOTRACK": 0x200000, "DIRECT_RECLAIM": 0x400000,
    "OTHER_NODE": 0x800000, "WRITE": 0x1000000, "KSWAPD_RECLAIM": 0x2000000,
}


def module_constant(name: str) -> int:
    """The module-level ``__GFP_<name>`` constant (getattr avoids any name mangling)."""
    return int(getattr(gfp, f"__GFP_{name}"))


# -- composite masks ---------------------------------------------------------------------------

# Each value is the OR of the 4.6 bits, e.g. GFP_KERNEL = DIRECT_RECLAIM 0x400000 |
# KSWAPD_RECLAIM 0x2000000 | IO 0x40 | FS 0x80 = 0x24000c0.
COMPOSITES = [
    ("GFP_KERNEL", 0x24000C0),            # RECLAIM|IO|FS
    ("GFP_ATOMIC", 0x2080020),            # HIGH 0x20 | ATOMIC 0x80000 | KSWAPD 0x2000000
    ("GFP_USER", 0x24200C0),              # GFP_KERNEL | HARDWALL 0x20000
    ("GFP_HIGHUSER", 0x24200C2),          # GFP_USER | HIGHMEM 0x2
    ("GFP_HIGHUSER_MOVABLE", 0x24200CA),  # GFP_HIGHUSER | MOVABLE 0x8
    # (0x24200ca | COMP 0x4000 | NOMEMALLOC 0x10000 | NORETRY 0x1000 | NOWARN 0x200)
    #   = 0x24352ca, & ~RECLAIM (0x2400000) = 0x352ca
    ("GFP_TRANSHUGE", 0x352CA),
    ("GFP_NOWAIT", 0x2000000),            # KSWAPD_RECLAIM
    ("GFP_NOIO", 0x2400000),              # RECLAIM
    ("GFP_NOFS", 0x2400040),              # RECLAIM|IO
    ("GFP_TEMPORARY", 0x24000D0),         # GFP_KERNEL | RECLAIMABLE 0x10
    ("GFP_KERNEL_ACCOUNT", 0x25000C0),    # GFP_KERNEL | ACCOUNT 0x100000
    ("GFP_DMA", 0x1),
    ("GFP_DMA32", 0x4),
]


@pytest.mark.parametrize(("name", "expected"), COMPOSITES)
def test_composite_mask_value(name, expected):
    """Each composite GFP mask has its 4.6 numeric value."""
    assert expected == getattr(gfp, name)


def test_gfp_bits_mask():
    """__GFP_BITS_SHIFT is 26, so the valid-bit mask is 0x3ffffff."""
    assert (26, 0x3FFFFFF) == (gfp.__GFP_BITS_SHIFT, gfp.__GFP_BITS_MASK)


@pytest.mark.parametrize(("name", "expected"), sorted(GFP_BITS_4_6.items()))
def test_module_constant_matches_4_6_header(name, expected):
    """Each module-level __GFP_* constant has the value of 4.6's ___GFP_* bit."""
    assert expected == module_constant(name)


@pytest.mark.parametrize(("name", "expected"), sorted(GFP_BITS_4_6.items()))
def test_gfpflag_matches_module_constant(name, expected):
    """Each GfpFlag member equals both the 4.6 bit and the module-level constant."""
    assert (expected, expected) == (int(GfpFlag[name]), module_constant(name))


def test_gfpflag_has_exactly_the_4_6_bits():
    """GfpFlag names exactly the 26 bits 4.6 defines, no more and no fewer."""
    assert set(GFP_BITS_4_6) == {member.name for member in GfpFlag}


# -- gfp_zone / gfp_zone_bad ------------------------------------------------------------------

DMA, DMA32, NORMAL, MOVABLE = (ZoneType.ZONE_DMA, ZoneType.ZONE_DMA32, ZoneType.ZONE_NORMAL,
                               ZoneType.ZONE_MOVABLE)

# [4.6: include/linux/gfp.h GFP_ZONE_TABLE] on x86-64 (CONFIG_ZONE_DMA, CONFIG_ZONE_DMA32, no
# HIGHMEM so OPT_ZONE_HIGHMEM = ZONE_NORMAL).  Index = DMA|HIGHMEM<<1|DMA32<<2|MOVABLE<<3.
VALID_ZONES = {
    0x0: NORMAL,   # ZONE_NORMAL << 0
    0x1: DMA,      # OPT_ZONE_DMA
    0x2: NORMAL,   # OPT_ZONE_HIGHMEM == ZONE_NORMAL
    0x4: DMA32,    # OPT_ZONE_DMA32
    0x8: NORMAL,   # ZONE_NORMAL << ___GFP_MOVABLE
    0x9: DMA,      # OPT_ZONE_DMA << (MOVABLE|DMA)
    0xA: MOVABLE,  # ZONE_MOVABLE << (MOVABLE|HIGHMEM)
    0xC: DMA32,    # OPT_ZONE_DMA32 << (MOVABLE|DMA32)
}
# [4.6: GFP_ZONE_BAD] the eight combinations with two of DMA/DMA32/HIGHMEM.
BAD_COMBINATIONS = (0x3, 0x5, 0x6, 0x7, 0xB, 0xD, 0xE, 0xF)


@pytest.mark.parametrize(("bits", "expected"), sorted(VALID_ZONES.items()))
def test_gfp_zone_valid_combination(bits, expected):
    """A valid zone-modifier combination selects the zone GFP_ZONE_TABLE holds for it."""
    assert expected == gfp.gfp_zone(bits)


@pytest.mark.parametrize("bits", sorted(BAD_COMBINATIONS), ids=hex)
def test_gfp_zone_bad_combination_reads_zero_table_entry(bits):
    """A GFP_ZONE_BAD combination reads an all-zero table slot, i.e. ZONE_DMA."""
    # [4.6: gfp_zone] no GFP_ZONE_TABLE term is shifted to a bad index, so the lookup gives 0;
    # only a CONFIG_DEBUG_VM kernel stops at VM_BUG_ON((GFP_ZONE_BAD >> bit) & 1).
    assert DMA == gfp.gfp_zone(bits)


@pytest.mark.parametrize("bits", range(16))
def test_gfp_zone_bad_marks_exactly_the_4_6_bad_set(bits):
    """gfp_zone_bad is true exactly for the eight GFP_ZONE_BAD combinations."""
    assert (bits in BAD_COMBINATIONS) == gfp.gfp_zone_bad(bits)


def test_gfp_zone_ignores_non_zone_bits():
    """gfp_zone looks only at the four zone modifiers: GFP_HIGHUSER_MOVABLE selects ZONE_MOVABLE
    and GFP_KERNEL|__GFP_DMA32 selects ZONE_DMA32."""
    masks = (gfp.GFP_HIGHUSER_MOVABLE, gfp.GFP_KERNEL | gfp.__GFP_DMA32, gfp.GFP_TRANSHUGE,
             gfp.GFP_KERNEL)
    actual = tuple(gfp.gfp_zone(mask) for mask in masks)
    assert (MOVABLE, DMA32, MOVABLE, NORMAL) == actual


# -- migratetypes -------------------------------------------------------------------------------

@pytest.mark.parametrize(("mask", "expected"), [
    (gfp.GFP_KERNEL, MigrateType.MIGRATE_UNMOVABLE),         # no mobility bits -> 0
    (gfp.GFP_ATOMIC, MigrateType.MIGRATE_UNMOVABLE),
    (gfp.GFP_HIGHUSER_MOVABLE, MigrateType.MIGRATE_MOVABLE),  # 0x08 >> 3 = 1
    (gfp.GFP_TRANSHUGE, MigrateType.MIGRATE_MOVABLE),
    (gfp.GFP_TEMPORARY, MigrateType.MIGRATE_RECLAIMABLE),     # 0x10 >> 3 = 2
    (gfp.__GFP_MOVABLE | gfp.__GFP_RECLAIMABLE, 3),           # 0x18 >> 3: 4.6 only VM_WARN_ONs
])
def test_gfpflags_to_migratetype(mask, expected):
    """gfpflags_to_migratetype is (gfp & (RECLAIMABLE|MOVABLE)) >> 3, as in 4.6."""
    assert expected == gfp.gfpflags_to_migratetype(mask)


def test_gfp_migratetype_bad_only_for_both_mobility_bits():
    """Only MOVABLE together with RECLAIMABLE is a bad mobility combination."""
    actual = [gfp.gfp_migratetype_bad(m) for m in (0, gfp.__GFP_MOVABLE, gfp.__GFP_RECLAIMABLE,
                                                    gfp.__GFP_MOVABLE | gfp.__GFP_RECLAIMABLE)]
    assert [False, False, False, True] == actual


def test_fallback_table():
    """The fallback lists are 4.6's fallbacks[] rows, HIGHATOMIC never being a source."""
    u, m, r = (MigrateType.MIGRATE_UNMOVABLE, MigrateType.MIGRATE_MOVABLE,
               MigrateType.MIGRATE_RECLAIMABLE)
    assert {u: (r, m), r: (u, m), m: (r, u)} == gfp.FALLBACKS


# -- gfp_to_alloc_flags [4.6: mm/page_alloc.c gfp_to_alloc_flags, mm/internal.h] ---------------

@pytest.mark.parametrize(("mask", "expected"), [
    # WMARK_MIN 0 | CPUSET 0x40
    (gfp.GFP_KERNEL, 0x40),
    (gfp.GFP_NOWAIT, 0x40),
    # __GFP_HIGH is ALLOC_HIGH (0x20) by construction
    (gfp.GFP_KERNEL | gfp.__GFP_HIGH, 0x60),
    # __GFP_ATOMIC: + HARDER 0x10, CPUSET dropped; __GFP_HIGH: + HIGH 0x20 -> 0x30
    (gfp.GFP_ATOMIC, 0x30),
    # NOMEMALLOC forbids HARDER but CPUSET is still dropped for __GFP_ATOMIC -> HIGH only
    (gfp.GFP_ATOMIC | gfp.__GFP_NOMEMALLOC, 0x20),
    # __GFP_MEMALLOC: + NO_WATERMARKS 0x04
    (gfp.GFP_KERNEL | gfp.__GFP_MEMALLOC, 0x44),
    (gfp.GFP_ATOMIC | gfp.__GFP_MEMALLOC, 0x34),
    # NOMEMALLOC overrides MEMALLOC
    (gfp.GFP_KERNEL | gfp.__GFP_MEMALLOC | gfp.__GFP_NOMEMALLOC, 0x40),
    # __GFP_ATOMIC alone: HARDER, no CPUSET
    (gfp.__GFP_ATOMIC, 0x10),
])
def test_gfp_to_alloc_flags(mask, expected):
    """gfp_to_alloc_flags gives 4.6's slow-path flags for an ordinary process-context caller."""
    assert expected == gfp.gfp_to_alloc_flags(mask)


def test_alloc_flag_values():
    """The ALLOC_* constants have mm/internal.h's values."""
    actual = (gfp.ALLOC_WMARK_MIN, gfp.ALLOC_WMARK_LOW, gfp.ALLOC_WMARK_HIGH,
              gfp.ALLOC_NO_WATERMARKS, gfp.ALLOC_WMARK_MASK, gfp.ALLOC_HARDER, gfp.ALLOC_HIGH,
              gfp.ALLOC_CPUSET, gfp.ALLOC_CMA, gfp.ALLOC_FAIR)
    assert (0, 1, 2, 0x04, 3, 0x10, 0x20, 0x40, 0x80, 0x100) == actual


# -- gfp_name -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mask", "expected"), [
    (0, "0"),
    (gfp.GFP_KERNEL, "GFP_KERNEL"),
    (gfp.GFP_KERNEL | gfp.__GFP_ZERO, "GFP_KERNEL|__GFP_ZERO"),
    (gfp.GFP_ATOMIC, "GFP_ATOMIC"),
    (gfp.GFP_ATOMIC | gfp.__GFP_NOWARN, "GFP_ATOMIC|__GFP_NOWARN"),
    (gfp.GFP_USER, "GFP_USER"),
    (gfp.GFP_TEMPORARY, "GFP_TEMPORARY"),
    (gfp.GFP_HIGHUSER_MOVABLE, "GFP_HIGHUSER_MOVABLE"),
    (gfp.GFP_TRANSHUGE, "GFP_TRANSHUGE"),
    (gfp.__GFP_DMA | gfp.__GFP_MOVABLE, "__GFP_DMA|__GFP_MOVABLE"),
    # GFP_KERNEL claims KSWAPD_RECLAIM first, so GFP_ATOMIC can no longer match
    (gfp.GFP_KERNEL | gfp.__GFP_HIGH | gfp.__GFP_ATOMIC, "GFP_KERNEL|__GFP_HIGH|__GFP_ATOMIC"),
    (1 << 26, "0x4000000"),
    (gfp.GFP_NOFS | (1 << 27), "GFP_NOFS|0x8000000"),
])
def test_gfp_name(mask, expected):
    """gfp_name spells a mask with composites first and unknown bits in hex."""
    assert expected == gfp.gfp_name(mask)
