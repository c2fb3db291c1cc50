"""fork for fastmodel's kernel [4.6: kernel/fork.c dup_mm, dup_mmap; mm/memory.c
copy_page_range, copy_pte_range, copy_one_pte].

The child's VMAs come from the address space's own ``dup_mm()``; its PTEs are copied a
whole PTE table at a time (``fastmodel.kernel_ptes``), and the struct-page side of the copy
(one more reference and mapping per normal page, the child's RSS counters) is applied to
the copied entries with numpy, once per VMA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from fastmodel.kernel_ptes import U64
from specs import pte as pt
from specs.errno import Errno
from specs.vma import VM_MAYWRITE, VM_SHARED, AddressSpace, VmaView
from specs.vma import Capability as VmaCapability

if TYPE_CHECKING:
    from fastmodel.kernel import FastKernel, Proc

ENOMEM: Final = -Errno.ENOMEM


def can_dup(space: AddressSpace) -> bool:
    """An address-space part can be forked when it has ``dup_mm`` and claims
    Capability.FORK (an older plug-in may have neither)."""
    dup = getattr(space, "dup_mm", None)
    return callable(dup) and VmaCapability.FORK in getattr(space, "capabilities", ())


def dup_space(space: AddressSpace) -> AddressSpace | int:
    """The child's VMAs, or -ENOMEM when the address space refuses a VM_ACCOUNT charge."""
    child: AddressSpace | int = space.dup_mm()
    return child


def copy_vma_ptes(k: FastKernel, child: Proc, parent: Proc, vma: VmaView) -> int:
    """Copy one VMA's PTEs: 0, or -ENOMEM when a child table could not be allocated (the
    entries copied before it stay, for exit to undo) [4.6: mm/memory.c copy_page_range].

    A VMA without an anon_vma is skipped, as 4.6 skips it: all its pages are page-cache or
    zero pages the child can fault in again."""
    if vma.anon_vma is None:
        return 0
    flags = vma.flags
    # [4.6: mm/internal.h is_cow_mapping] private and possibly writable
    cow = flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE
    copied, failed = k.ranges.copy(child.mm, parent.mm, vma.start, vma.end, cow,
                                   bool(flags & VM_SHARED))
    dup_rmap(k, child, copied)
    return ENOMEM if failed else 0


def dup_rmap(k: FastKernel, child: Proc, entries: U64) -> None:
    """For every normal page among the copied entries: get_page, page_dup_rmap and the
    child's RSS counter for its kind [4.6: mm/memory.c copy_one_pte]."""
    if not entries.size:
        return
    normal = (entries & np.uint64(pt._PAGE_SPECIAL)) == 0
    pfns = ((entries[normal] & np.uint64(pt.PTE_PFN_MASK)) >> np.uint64(pt.PAGE_SHIFT)
            ).astype(np.int64)
    pfns = pfns[k.frames.user_mask(pfns)]
    if not pfns.size:
        return
    frames = k.frames
    np.add.at(frames.refcount, pfns, 1)
    np.add.at(frames.mapcount, pfns, 1)
    for member, count in enumerate(frames.rss_counts(pfns).tolist()):
        child.rss[member] += count
    if k.refcounted:
        get_page = k.pages.inner.get_page  # the injector only forwards references
        for pfn in pfns.tolist():
            get_page(pfn)
