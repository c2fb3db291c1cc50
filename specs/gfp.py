"""GFP flags, zone types, migratetypes and allocation flags, with 4.6's values.

These are pure functions of a gfp mask, shared by every implementation because they are part
of the ABI, not of any placement policy.  [4.6: include/linux/gfp.h, include/linux/mmzone.h,
mm/internal.h, mm/page_alloc.c gfp_to_alloc_flags]
"""

from __future__ import annotations

import enum
from typing import Final

# -- GFP bits [4.6: include/linux/gfp.h] --------------------------------------------------------
__GFP_DMA: Final = 0x01
__GFP_HIGHMEM: Final = 0x02
__GFP_DMA32: Final = 0x04
__GFP_MOVABLE: Final = 0x08
__GFP_RECLAIMABLE: Final = 0x10
__GFP_HIGH: Final = 0x20
__GFP_IO: Final = 0x40
__GFP_FS: Final = 0x80
__GFP_COLD: Final = 0x100
__GFP_NOWARN: Final = 0x200
__GFP_REPEAT: Final = 0x400
__GFP_NOFAIL: Final = 0x800
__GFP_NORETRY: Final = 0x1000
__GFP_MEMALLOC: Final = 0x2000
__GFP_COMP: Final = 0x4000
__GFP_ZERO: Final = 0x8000
__GFP_NOMEMALLOC: Final = 0x10000
__GFP_HARDWALL: Final = 0x20000
__GFP_THISNODE: Final = 0x40000
__GFP_ATOMIC: Final = 0x80000
__GFP_ACCOUNT: Final = 0x100000
__GFP_NOTRACK: Final = 0x200000
__GFP_DIRECT_RECLAIM: Final = 0x400000
__GFP_OTHER_NODE: Final = 0x800000
__GFP_WRITE: Final = 0x1000000
__GFP_KSWAPD_RECLAIM: Final = 0x2000000

__GFP_BITS_SHIFT: Final = 26
__GFP_BITS_MASK: Final = (1 << __GFP_BITS_SHIFT) - 1
__GFP_RECLAIM: Final = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_ZONEMASK: Final = __GFP_DMA | __GFP_HIGHMEM | __GFP_DMA32 | __GFP_MOVABLE
GFP_MOVABLE_MASK: Final = __GFP_RECLAIMABLE | __GFP_MOVABLE
GFP_MOVABLE_SHIFT: Final = 3

# -- composite masks ---------------------------------------------------------------------------
GFP_ATOMIC: Final = __GFP_HIGH | __GFP_ATOMIC | __GFP_KSWAPD_RECLAIM
GFP_KERNEL: Final = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT: Final = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT: Final = __GFP_KSWAPD_RECLAIM
GFP_NOIO: Final = __GFP_RECLAIM
GFP_NOFS: Final = __GFP_RECLAIM | __GFP_IO
GFP_TEMPORARY: Final = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_RECLAIMABLE
GFP_USER: Final = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_DMA: Final = __GFP_DMA
GFP_DMA32: Final = __GFP_DMA32
GFP_HIGHUSER: Final = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE: Final = GFP_HIGHUSER | __GFP_MOVABLE
GFP_TRANSHUGE: Final = (
    GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN
) & ~__GFP_RECLAIM

#: Names for rendering masks in reports, composites first so they win.
GFP_NAMES: Final[dict[str, int]] = {
    "GFP_TRANSHUGE": GFP_TRANSHUGE,
    "GFP_HIGHUSER_MOVABLE": GFP_HIGHUSER_MOVABLE,
    "GFP_HIGHUSER": GFP_HIGHUSER,
    "GFP_USER": GFP_USER,
    "GFP_TEMPORARY": GFP_TEMPORARY,
    "GFP_KERNEL": GFP_KERNEL,
    "GFP_NOFS": GFP_NOFS,
    "GFP_ATOMIC": GFP_ATOMIC,
    "GFP_NOIO": GFP_NOIO,
    "GFP_NOWAIT": GFP_NOWAIT,
    "__GFP_DMA": __GFP_DMA,
    "__GFP_HIGHMEM": __GFP_HIGHMEM,
    "__GFP_DMA32": __GFP_DMA32,
    "__GFP_MOVABLE": __GFP_MOVABLE,
    "__GFP_RECLAIMABLE": __GFP_RECLAIMABLE,
    "__GFP_HIGH": __GFP_HIGH,
    "__GFP_IO": __GFP_IO,
    "__GFP_FS": __GFP_FS,
    "__GFP_COLD": __GFP_COLD,
    "__GFP_NOWARN": __GFP_NOWARN,
    "__GFP_REPEAT": __GFP_REPEAT,
    "__GFP_NOFAIL": __GFP_NOFAIL,
    "__GFP_NORETRY": __GFP_NORETRY,
    "__GFP_MEMALLOC": __GFP_MEMALLOC,
    "__GFP_COMP": __GFP_COMP,
    "__GFP_ZERO": __GFP_ZERO,
    "__GFP_NOMEMALLOC": __GFP_NOMEMALLOC,
    "__GFP_HARDWALL": __GFP_HARDWALL,
    "__GFP_THISNODE": __GFP_THISNODE,
    "__GFP_ATOMIC": __GFP_ATOMIC,
    "__GFP_ACCOUNT": __GFP_ACCOUNT,
    "__GFP_NOTRACK": __GFP_NOTRACK,
    "__GFP_DIRECT_RECLAIM": __GFP_DIRECT_RECLAIM,
    "__GFP_OTHER_NODE": __GFP_OTHER_NODE,
    "__GFP_WRITE": __GFP_WRITE,
    "__GFP_KSWAPD_RECLAIM": __GFP_KSWAPD_RECLAIM,
}


def gfp_name(mask: int) -> str:
    """Spell a mask as kernel source would, e.g. ``GFP_KERNEL|__GFP_ZERO``."""
    parts: list[str] = []
    rest = mask
    for name, bits in GFP_NAMES.items():
        if bits and rest & bits == bits:
            parts.append(name)
            rest &= ~bits
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) if parts else "0"


# -- zones [4.6: include/linux/mmzone.h enum zone_type, x86-64 without HIGHMEM] ---------------
class ZoneType(enum.IntEnum):
    """Zone indices; ZONE_MOVABLE exists but is empty without kernelcore=/movablecore=."""

    ZONE_DMA = 0
    ZONE_DMA32 = 1
    ZONE_NORMAL = 2
    ZONE_MOVABLE = 3


MAX_NR_ZONES: Final = 4
ZONE_NAMES: Final = ("DMA", "DMA32", "Normal", "Movable")

# [4.6: include/linux/gfp.h GFP_ZONE_BAD] combinations of zone modifiers that are a caller bug.
_GFP_ZONE_BAD: Final = frozenset(
    {
        __GFP_DMA | __GFP_HIGHMEM,
        __GFP_DMA | __GFP_DMA32,
        __GFP_DMA32 | __GFP_HIGHMEM,
        __GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM,
        __GFP_MOVABLE | __GFP_HIGHMEM | __GFP_DMA,
        __GFP_MOVABLE | __GFP_DMA32 | __GFP_DMA,
        __GFP_MOVABLE | __GFP_DMA32 | __GFP_HIGHMEM,
        __GFP_MOVABLE | __GFP_DMA32 | __GFP_DMA | __GFP_HIGHMEM,
    }
)


def gfp_zone_bad(gfp_mask: int) -> bool:
    """True for zone-modifier combinations that 4.6 rejects with VM_BUG_ON in gfp_zone()."""
    return (gfp_mask & GFP_ZONEMASK) in _GFP_ZONE_BAD


#: [4.6: include/linux/gfp.h GFP_ZONE_TABLE] zone per combination of the four zone modifiers;
#: combinations absent from the table (the GFP_ZONE_BAD ones) read as 0, i.e. ZONE_DMA.
_GFP_ZONE_TABLE: Final[dict[int, ZoneType]] = {
    0: ZoneType.ZONE_NORMAL,
    __GFP_DMA: ZoneType.ZONE_DMA,
    __GFP_HIGHMEM: ZoneType.ZONE_NORMAL,  # OPT_ZONE_HIGHMEM is ZONE_NORMAL without HIGHMEM
    __GFP_DMA32: ZoneType.ZONE_DMA32,
    __GFP_MOVABLE: ZoneType.ZONE_NORMAL,
    __GFP_MOVABLE | __GFP_DMA: ZoneType.ZONE_DMA,
    __GFP_MOVABLE | __GFP_HIGHMEM: ZoneType.ZONE_MOVABLE,
    __GFP_MOVABLE | __GFP_DMA32: ZoneType.ZONE_DMA32,
}


def gfp_zone(gfp_mask: int) -> ZoneType:
    """The highest zone an allocation may use.  [4.6: include/linux/gfp.h gfp_zone]

    HIGHMEM maps to NORMAL on x86-64; MOVABLE|HIGHMEM (as in GFP_HIGHUSER_MOVABLE) selects
    ZONE_MOVABLE.  A debug kernel BUGs on ``gfp_zone_bad`` masks; callers reject them first.
    """
    return _GFP_ZONE_TABLE.get(gfp_mask & GFP_ZONEMASK, ZoneType.ZONE_DMA)


# -- migratetypes [4.6: include/linux/mmzone.h] -----------------------------------------------
class MigrateType(enum.IntEnum):
    """Pageblock mobility types (CMA and ISOLATE are not configured in this model)."""

    MIGRATE_UNMOVABLE = 0
    MIGRATE_MOVABLE = 1
    MIGRATE_RECLAIMABLE = 2
    MIGRATE_HIGHATOMIC = 3


MIGRATE_PCPTYPES: Final = 3
MIGRATE_TYPES: Final = 4  # [Simplified: no CONFIG_CMA, no CONFIG_MEMORY_ISOLATION]
MIGRATETYPE_LETTERS: Final = "UMEH"  # show_free_areas' letters

#: [4.6: mm/page_alloc.c fallbacks[]] lists tried, in order, when the wanted one is empty.
FALLBACKS: Final[dict[int, tuple[int, ...]]] = {
    MigrateType.MIGRATE_UNMOVABLE: (MigrateType.MIGRATE_RECLAIMABLE, MigrateType.MIGRATE_MOVABLE),
    MigrateType.MIGRATE_RECLAIMABLE: (MigrateType.MIGRATE_UNMOVABLE, MigrateType.MIGRATE_MOVABLE),
    MigrateType.MIGRATE_MOVABLE: (MigrateType.MIGRATE_RECLAIMABLE, MigrateType.MIGRATE_UNMOVABLE),
}


def gfp_migratetype_bad(gfp_mask: int) -> bool:
    """MOVABLE and RECLAIMABLE together: 4.6 warns and would index past the pcp lists."""
    return gfp_mask & GFP_MOVABLE_MASK == GFP_MOVABLE_MASK


def gfpflags_to_migratetype(gfp_mask: int) -> int:
    """[4.6: include/linux/gfp.h gfpflags_to_migratetype]"""
    return (gfp_mask & GFP_MOVABLE_MASK) >> GFP_MOVABLE_SHIFT


# -- allocation flags [4.6: mm/internal.h] ------------------------------------------------------
ALLOC_WMARK_MIN: Final = 0
ALLOC_WMARK_LOW: Final = 1
ALLOC_WMARK_HIGH: Final = 2
ALLOC_NO_WATERMARKS: Final = 0x04
ALLOC_WMARK_MASK: Final = ALLOC_NO_WATERMARKS - 1
ALLOC_HARDER: Final = 0x10
ALLOC_HIGH: Final = 0x20
ALLOC_CPUSET: Final = 0x40
ALLOC_CMA: Final = 0x80
ALLOC_FAIR: Final = 0x100

WMARK_MIN: Final = 0
WMARK_LOW: Final = 1
WMARK_HIGH: Final = 2


def gfp_to_alloc_flags(gfp_mask: int) -> int:
    """Slow-path allocation flags.  [4.6: mm/page_alloc.c gfp_to_alloc_flags]

    [Simplified: the caller is an ordinary task in process context: not real-time, not
    PF_MEMALLOC, not an OOM victim, so only __GFP_MEMALLOC grants ALLOC_NO_WATERMARKS.]
    """
    alloc_flags = ALLOC_WMARK_MIN | ALLOC_CPUSET
    alloc_flags |= gfp_mask & __GFP_HIGH  # __GFP_HIGH == ALLOC_HIGH by construction
    if gfp_mask & __GFP_ATOMIC:
        if not gfp_mask & __GFP_NOMEMALLOC:
            alloc_flags |= ALLOC_HARDER
        alloc_flags &= ~ALLOC_CPUSET
    if not gfp_mask & __GFP_NOMEMALLOC and gfp_mask & __GFP_MEMALLOC:
        alloc_flags |= ALLOC_NO_WATERMARKS
    return alloc_flags


class GfpFlag(enum.IntFlag):
    """The ``__GFP_*`` bits under names that survive Python's class-private name mangling.

    Inside a class body ``gfp.__GFP_ZERO`` would be rewritten to ``gfp._Cls__GFP_ZERO``; code
    in classes uses ``GfpFlag.ZERO`` instead.  Values are identical to the module constants.
    """

    DMA = 0x01
    HIGHMEM = 0x02
    DMA32 = 0x04
    MOVABLE = 0x08
    RECLAIMABLE = 0x10
    HIGH = 0x20
    IO = 0x40
    FS = 0x80
    COLD = 0x100
    NOWARN = 0x200
    REPEAT = 0x400
    NOFAIL = 0x800
    NORETRY = 0x1000
    MEMALLOC = 0x2000
    COMP = 0x4000
    ZERO = 0x8000
    NOMEMALLOC = 0x10000
    HARDWALL = 0x20000
    THISNODE = 0x40000
    ATOMIC = 0x80000
    ACCOUNT = 0x100000
    NOTRACK = 0x200000
    DIRECT_RECLAIM = 0x400000
    OTHER_NODE = 0x800000
    WRITE = 0x1000000
    KSWAPD_RECLAIM = 0x2000000
