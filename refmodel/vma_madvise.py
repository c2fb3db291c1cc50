"""madvise on the address space [4.6: mm/madvise.c sys_madvise, madvise_vma,
madvise_behavior, madvise_dontneed], for the advice of ``specs.vma.MADV_ADVICE``.

Only the VMA half lives here: MADV_DONTNEED changes no VMA, so a space without page tables
has nothing to do for it beyond the checks; the composed kernel zaps the PTEs of the pieces
``dontneed_pieces`` finds.
"""

from __future__ import annotations

from typing import Final

from refmodel.vma_core import EINVAL, ENOMEM, Mm, Vma, split_vma, u64, vma_merge
from specs.errno import Errno
from specs.machine import PAGE_SHIFT
from specs.vma import (
    MADV_ADVICE,
    MADV_DONTFORK,
    MADV_DONTNEED,
    PAGE_MASK,
    ULONG_MASK,
    VM_DONTCOPY,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_PFNMAP,
    MmView,
    page_align,
)

EAGAIN: Final = -Errno.EAGAIN
#: MADV_DONTNEED refuses a VMA with any of these [4.6: mm/madvise.c madvise_dontneed]
DONTNEED_REFUSED: Final = VM_LOCKED | VM_HUGETLB | VM_PFNMAP


def madvise_behavior(mm: Mm, vma: Vma, prev: Vma | None, start: int, end: int,
                     advice: int) -> tuple[int, Vma]:
    """(error, the new *prev): the flag change with mprotect_fixup's merge-or-split; a split
    refused at the map_count limit comes back as -EAGAIN, not -ENOMEM."""
    new_flags = vma.flags
    if advice == MADV_DONTFORK:
        new_flags |= VM_DONTCOPY
    else:
        if vma.flags & VM_IO:
            return EINVAL, vma if prev is None else prev
        new_flags &= ~VM_DONTCOPY
    if new_flags == vma.flags:
        return 0, vma
    pgoff = vma.pgoff + ((start - vma.start) >> PAGE_SHIFT)
    merged = vma_merge(mm, prev, start, end, new_flags, vma.anon_vma, vma.file, pgoff)
    if merged is not None:
        merged.flags = new_flags
        return 0, merged
    error = 0
    if start != vma.start:
        error = split_vma(mm, vma, start, True)
    if not error and end != vma.end:
        error = split_vma(mm, vma, end, False)
    if error:
        return (EAGAIN if error == ENOMEM else error), vma
    vma.flags = new_flags
    return 0, vma


def sys_madvise(mm: Mm, start: int, length: int, advice: int) -> int:
    """0 or -errno.  Holes in the range are skipped and reported as -ENOMEM once the rest is
    done; a refused piece stops the walk with the earlier pieces changed.  [Simplified:
    advice outside MADV_ADVICE is -EINVAL, where 4.6 also accepts NORMAL, RANDOM,
    SEQUENTIAL, WILLNEED, FREE, REMOVE, (UN)MERGEABLE, (NO)HUGEPAGE and (DONT|DO)DUMP.]"""
    if advice not in MADV_ADVICE:
        return EINVAL
    if start & ~PAGE_MASK:
        return EINVAL
    rounded = page_align(length)
    if length and not rounded:
        return EINVAL
    end = u64(start + rounded)
    if end < start:
        return EINVAL
    if end == start:
        return 0
    i = mm.find_index(start)
    vma: Vma | None = mm.vmas[i] if i < len(mm.vmas) else None
    prev: Vma | None = mm.vmas[i - 1] if i else None
    if vma is not None and start > vma.start:
        prev = vma
    unmapped_error = 0
    while True:
        if vma is None:
            return ENOMEM
        if start < vma.start:
            unmapped_error = ENOMEM
            start = vma.start
            if start >= end:
                return ENOMEM
        tmp = min(vma.end, end)
        if advice == MADV_DONTNEED:
            prev = vma
            if vma.flags & DONTNEED_REFUSED:
                return EINVAL
        else:
            error, prev = madvise_behavior(mm, vma, prev, start, tmp, advice)
            if error:
                return error
        start = max(tmp, prev.end)
        if start >= end:
            return unmapped_error
        vma = mm.next_of(prev)


def dontneed_pieces(view: MmView, addr: int, length: int) -> list[tuple[int, int]]:
    """The pieces of [addr, addr + length) that madvise(MADV_DONTNEED) zaps, judged from the
    VMAs before the call (the call changes none): every mapped piece in address order up to
    the first VMA it refuses; none when the arguments are refused.  For a caller that sees
    the space only through the contract (the composed kernel)."""
    start, length = addr & ULONG_MASK, length & ULONG_MASK
    rounded = page_align(length)
    end = start + rounded
    if start & ~PAGE_MASK or (length and not rounded) or end > ULONG_MASK:
        return []
    pieces: list[tuple[int, int]] = []
    for vma in view.vmas:
        if vma.end <= start or vma.start >= end:
            continue
        if vma.flags & DONTNEED_REFUSED:
            break
        pieces.append((max(vma.start, start), min(vma.end, end)))
    return pieces
