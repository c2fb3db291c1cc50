"""Interval arithmetic over an address space's mapped ranges, for the unmap side of the
address-space calls (what a call removed, and the free_pgtables floor and ceiling).

Intervals are (start, end) pairs, sorted and disjoint.  Lists are short (one entry per run
of adjacent VMAs), so plain sweeps are enough.
"""

from __future__ import annotations

import bisect

from specs import pte as pt
from specs.vma import (
    PAGE_MASK,
    ULONG_MASK,
    VM_HUGETLB,
    VM_LOCKED,
    VM_PFNMAP,
    MmView,
    page_align,
)

Interval = tuple[int, int]


def coverage(view: MmView) -> list[Interval]:
    """The mapped ranges, touching VMAs joined into one."""
    out: list[Interval] = []
    for vma in view.vmas:
        if out and out[-1][1] == vma.start:
            out[-1] = (out[-1][0], vma.end)
        else:
            out.append((vma.start, vma.end))
    return out


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """The parts of a outside b."""
    out: list[Interval] = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        pos, i = start, j
        while i < len(b) and b[i][0] < end:
            if b[i][0] > pos:
                out.append((pos, b[i][0]))
            pos = max(pos, b[i][1])
            i += 1
        if pos < end:
            out.append((pos, end))
    return out


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """The parts of a inside b."""
    out: list[Interval] = []
    for start, end in a:
        for lo, hi in b:
            if max(start, lo) < min(end, hi):
                out.append((max(start, lo), min(end, hi)))
    return out


def neighbours(mapped: list[Interval], start: int, end: int) -> Interval:
    """free_pgtables' (floor, ceiling) for a hole [start, end): where the mapping below
    ends (FIRST_USER_ADDRESS if none, or if it reaches past start) and where the one above
    begins (USER_PGTABLES_CEILING if none)."""
    starts = [s for s, _ in mapped]
    below = bisect.bisect_right(starts, start) - 1
    floor = pt.FIRST_USER_ADDRESS
    if below >= 0 and mapped[below][1] <= start:
        floor = mapped[below][1]
    above = bisect.bisect_left(starts, end)
    ceiling = mapped[above][0] if above < len(mapped) else pt.USER_PGTABLES_CEILING
    return floor, ceiling


def dontneed_pieces(view: MmView, addr: int, length: int) -> list[Interval]:
    """What madvise(MADV_DONTNEED) zaps, from the VMAs before the call (it changes none):
    the mapped parts of the range up to the first VMA it refuses (VM_LOCKED, VM_HUGETLB,
    VM_PFNMAP), or nothing when the arguments are refused [4.6: mm/madvise.c sys_madvise,
    madvise_dontneed]."""
    start, length = addr & ULONG_MASK, length & ULONG_MASK
    rounded = page_align(length)
    end = start + rounded
    if start & ~PAGE_MASK or (length and not rounded) or end > ULONG_MASK:
        return []
    first = bisect.bisect_right(view.vmas, start, key=lambda v: v.end)
    pieces: list[Interval] = []
    for vma in view.vmas[first:]:
        if vma.start >= end:
            break
        if vma.flags & (VM_LOCKED | VM_HUGETLB | VM_PFNMAP):
            break
        pieces.append((max(vma.start, start), min(vma.end, end)))
    return pieces
