"""fork: duplicating an address space and its page tables [4.6: kernel/fork.c dup_mm,
dup_mmap; mm/memory.c copy_page_range, copy_one_pte].

Two halves.  ``dup_address_space`` gives the child its VMA list through the address space's
own ``dup_mm()`` (``specs/vma.md``).  ``copy_page_range`` then copies the parent's PTEs for
the VMAs 4.6 copies, write-protecting both sides of every private mapping so that the first
write breaks COW.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from specs import pte as pt
from specs.errno import Errno
from specs.kernel import RSS_OF
from specs.vma import VM_MAYWRITE, VM_SHARED, AddressSpace
from specs.vma import Capability as VmaCapability

if TYPE_CHECKING:
    from refmodel.kernel import Process, RefKernel

ENOMEM = -Errno.ENOMEM


def can_dup(space: AddressSpace) -> bool:
    """Whether fork can duplicate this address space: a plug-in that predates dup_mm() or
    does not claim Capability.FORK cannot."""
    return (callable(getattr(space, "dup_mm", None))
            and VmaCapability.FORK in getattr(space, "capabilities", frozenset()))


def dup_address_space(space: AddressSpace) -> AddressSpace | int:
    """The child's address space, or -ENOMEM when a VM_ACCOUNT charge is refused."""
    child: AddressSpace | int = space.dup_mm()
    return child


def is_cow_mapping(flags: int) -> bool:
    """MAP_PRIVATE that may ever be written [4.6: mm/internal.h is_cow_mapping]."""
    return flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE


def copy_page_range(k: RefKernel, child: Process, parent: Process, start: int, end: int,
                    flags: int, anon_vma: int | None) -> int:
    """Copy one VMA's PTEs; 0 or -ENOMEM when a child table cannot be allocated (what was
    copied stays, for exit to undo) [4.6: mm/memory.c copy_page_range, copy_pte_range].

    Skipped, as in 4.6, for a VMA without an anon_vma: its pages are all page-cache or
    zero pages that the child faults in again on demand."""
    if anon_vma is None:
        return 0
    for addr, entry in list(k.present_ptes(parent.mm, start, end)):
        if k.tables.pte_alloc(child.mm, addr):
            return ENOMEM
        copy_one_pte(k, child, parent, addr, entry, flags)
    return 0


def copy_one_pte(k: RefKernel, child: Process, parent: Process, addr: int, entry: int,
                 flags: int) -> None:
    """[4.6: mm/memory.c copy_one_pte] COW mappings lose RW on both sides; a shared
    mapping's copy is clean; every copy is old; a normal page gains a reference and a
    mapping, and the child's RSS counter for its kind."""
    if is_cow_mapping(flags):
        k.tables.ptep_set_wrprotect(parent.mm, addr)
        entry = pt.pte_wrprotect(entry)
    if flags & VM_SHARED:
        entry = pt.pte_mkclean(entry)
    entry = pt.pte_mkold(entry)
    page = k.normal_page(entry)
    if page is not None:
        k.get_page(page)
        page.mapcount += 1  # page_dup_rmap
        child.rss[RSS_OF[page.kind]] += 1
    k.tables.set_pte_at(child.mm, addr, entry)
