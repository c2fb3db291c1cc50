"""madvise for the fast address space [4.6: mm/madvise.c sys_madvise, madvise_behavior,
madvise_dontneed]: the reference model's walk (``refmodel/vma_madvise.py``) over the fast
store, with vm_next links instead of list indices."""

from __future__ import annotations

from typing import Final

from fastmodel.vma_mm import EINVAL, ENOMEM, FastMm, u64
from fastmodel.vma_store import FVma
from specs.errno import Errno
from specs.machine import PAGE_SHIFT
from specs.vma import (
    MADV_ADVICE,
    MADV_DONTFORK,
    MADV_DONTNEED,
    PAGE_MASK,
    VM_DONTCOPY,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_PFNMAP,
    page_align,
)

EAGAIN: Final = -Errno.EAGAIN
_DONTNEED_REFUSED: Final = VM_LOCKED | VM_HUGETLB | VM_PFNMAP


class MadviseMixin(FastMm):
    """sys_madvise on a ``FastMm``; the caller drops its cached view."""

    def _madvise_behavior(self, vma: FVma, prev: FVma | None, start: int, end: int,
                          advice: int) -> tuple[int, FVma]:
        """(error, the new *prev); mprotect_fixup's merge-or-split, -EAGAIN for a split
        refused at the map_count limit."""
        new_flags = vma.flags
        if advice == MADV_DONTFORK:
            new_flags |= VM_DONTCOPY
        elif vma.flags & VM_IO:
            return EINVAL, vma if prev is None else prev
        else:
            new_flags &= ~VM_DONTCOPY
        if new_flags == vma.flags:
            return 0, vma
        pgoff = vma.pgoff + ((start - vma.start) >> PAGE_SHIFT)
        merged = self.vma_merge(prev, start, end, new_flags, vma.anon_vma, vma.file, pgoff)
        if merged is not None:
            merged.flags = new_flags
            return 0, merged
        error = 0
        if start != vma.start:
            error = self.split_vma(vma, start, True)
        if not error and end != vma.end:
            error = self.split_vma(vma, end, False)
        if error:
            return (EAGAIN if error == ENOMEM else error), vma
        vma.flags = new_flags
        return 0, vma

    def do_madvise(self, start: int, length: int, advice: int) -> int:
        """0 or -errno, arguments already reduced to 64 bits.  [Simplified: advice outside
        MADV_ADVICE is -EINVAL, as in refmodel.vma_madvise.]"""
        if advice not in MADV_ADVICE or start & ~PAGE_MASK:
            return EINVAL
        rounded = page_align(length)
        if length and not rounded:
            return EINVAL
        end = u64(start + rounded)
        if end < start:
            return EINVAL
        if end == start:
            return 0
        vma = self.vmas.find_vma(start)
        prev = None if vma is None else vma.prev
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
                if vma.flags & _DONTNEED_REFUSED:
                    return EINVAL
            else:
                error, prev = self._madvise_behavior(vma, prev, start, tmp, advice)
                if error:
                    return error
            start = max(tmp, prev.end)
            if start >= end:
                return unmapped_error
            vma = prev.next
