"""Pictures of allocator state for failure messages: a free-area table and a memory strip.

A kernel engineer reads ``show_free_areas`` output at a glance; a failure that prints the
same picture (and a strip of the pages around the pfn in question) is faster to diagnose than
a dump of lists.
"""

from __future__ import annotations

from invariants.ledger import Ledger
from specs.buddy import BuddyView
from specs.gfp import MIGRATETYPE_LETTERS
from specs.machine import MAX_ORDER, PAGE_SIZE

# One character per page in a strip.
FREE, PCP, HELD, UNKNOWN = ".", "p", "#", "?"


def free_area_table(view: BuddyView) -> str:
    """show_free_areas, one line per populated zone: ``count*size (types)`` per order."""
    lines = []
    for zone in view.zones:
        if not zone.managed_pages:
            continue
        cells = []
        for order in range(MAX_ORDER):
            count = zone.nr_free[order]
            types = "".join(MIGRATETYPE_LETTERS[mt] for mt, pfns in
                            enumerate(zone.free_lists[order]) if pfns)
            size_kb = (PAGE_SIZE >> 10) << order
            cells.append(f"{count}*{size_kb}kB" + (f" ({types})" if types else ""))
        pcp = " ".join(f"cpu{cpu}:{p.count}" for cpu, p in enumerate(zone.pcp))
        lines.append(f"  {zone.name:>6} [{zone.start_pfn:#x}-{zone.end_pfn:#x}) "
                     f"free={zone.nr_free_pages} wmark={zone.watermark} pcp[{pcp}]")
        lines.append("         " + " ".join(cells))
    return "\n".join(lines)


def page_classes(view: BuddyView, ledger: Ledger | None, lo: int, hi: int) -> str:
    """One character per pfn in [lo, hi): free, on a pcp list, held, or unaccounted for.

    An overlap (a page claimed twice) shows as the digit of how many claim it.
    """
    claims = [0] * (hi - lo)
    kind = [UNKNOWN] * (hi - lo)

    def mark(start: int, count: int, char: str) -> None:
        for pfn in range(max(start, lo), min(start + count, hi)):
            claims[pfn - lo] += 1
            kind[pfn - lo] = char

    for zone in view.zones:
        for pfn, order, _mt in zone.free_blocks:
            mark(pfn, 1 << order, FREE)
        for pcp in zone.pcp:
            for pfns in pcp.lists:
                for pfn in pfns:
                    mark(pfn, 1, PCP)
    if ledger is not None:
        for pfn, order in ledger.blocks():
            mark(pfn, 1 << order, HELD)
    return "".join(str(min(n, 9)) if n > 1 else k for n, k in zip(claims, kind, strict=True))


def strip_around(view: BuddyView, ledger: Ledger | None, pfn: int, width: int = 64) -> str:
    """The ``width`` pages around pfn, aligned, with a caret under pfn."""
    lo = max(0, (pfn // width) * width)
    hi = min(view.nr_pages, lo + width)
    if lo >= hi:
        return f"  (pfn {pfn:#x} is outside memory)"
    strip = page_classes(view, ledger, lo, hi)
    caret = " " * (pfn - lo) + "^"
    legend = (f"'{FREE}' free  '{PCP}' pcp  '{HELD}' held  '{UNKNOWN}' unaccounted  "
              f"digit: claimed n times")
    return f"  {lo:#07x} {strip}\n          {caret} pfn {pfn:#x}\n  {legend}"
