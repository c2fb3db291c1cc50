"""Strategies for buddy-allocator arguments, weighted the way kernel callers are.

Most requests are order 0 with a handful of common masks; a few are high order or carry
modifiers that change the path taken (__GFP_HIGH, __GFP_MEMALLOC, __GFP_NOFAIL, __GFP_COLD).
Bad input has its own rules in the machine, so these strategies stay valid.
"""

from __future__ import annotations

from hypothesis import strategies as st

from specs import gfp
from specs.machine import MAX_ORDER

BASE_MASKS = (
    gfp.GFP_KERNEL,
    gfp.GFP_HIGHUSER_MOVABLE,
    gfp.GFP_ATOMIC,
    gfp.GFP_USER,
    gfp.GFP_TEMPORARY,
    gfp.GFP_NOWAIT,
    gfp.GFP_NOFS,
    gfp.GFP_KERNEL | gfp.__GFP_DMA,
    gfp.GFP_KERNEL | gfp.__GFP_DMA32,
    gfp.GFP_ATOMIC | gfp.__GFP_DMA,
    gfp.GFP_TRANSHUGE,
)

MODIFIERS = (
    gfp.__GFP_COMP,
    gfp.__GFP_ZERO,
    gfp.__GFP_NOWARN,
    gfp.__GFP_COLD,
    gfp.__GFP_HIGH,
    gfp.__GFP_NORETRY,
    gfp.__GFP_MEMALLOC,
    gfp.__GFP_NOMEMALLOC,
    gfp.__GFP_NOFAIL,
)


#: Base masks with no modifier, one modifier, or two different ones.  Drawing one element of
#: a precomputed tuple is much cheaper than composing draws, and shrinks to GFP_KERNEL.
PAIRS = tuple(a | b for i, a in enumerate(MODIFIERS) for b in MODIFIERS[i + 1:])
MASKS: tuple[int, ...] = tuple(base | extra for extra in (0, *MODIFIERS, *PAIRS)
                               for base in BASE_MASKS)


def gfp_masks() -> st.SearchStrategy[int]:
    """A common mask, sometimes with one or two modifiers."""
    return st.sampled_from(MASKS)


def alloc_orders() -> st.SearchStrategy[int]:
    """0..MAX_ORDER-1, with orders 0..3 about six times likelier than the rest."""
    return st.integers(0, 30).map(lambda n: n if n < MAX_ORDER else n % 4)


def any_gfp_masks() -> st.SearchStrategy[int]:
    """Anything, including bits above __GFP_BITS_SHIFT and forbidden zone combinations."""
    return st.one_of(gfp_masks(), st.integers(0, (1 << 27) - 1),
                     st.sampled_from([gfp.__GFP_DMA | gfp.__GFP_DMA32,
                                      gfp.GFP_KERNEL | gfp.__GFP_MOVABLE | gfp.__GFP_RECLAIMABLE,
                                      gfp.__GFP_DMA | gfp.__GFP_HIGHMEM]))


def any_orders() -> st.SearchStrategy[int]:
    """Orders in and around the valid range."""
    return st.integers(-3, MAX_ORDER + 3)
