"""fork: duplicating an address space and its page tables [4.6: kernel/fork.c dup_mm,
dup_mmap; mm/memory.c copy_page_range, copy_one_pte].

Two halves.  ``dup_address_space`` gives the child its VMA list: through the address space's
own ``dup_mm()`` when it has one (the contract change ``specs/process.md`` asks of the vma
subsystem), else, for the reference address space, by building the child's ``Mm`` here.
``copy_page_range`` then copies the parent's PTEs for the VMAs 4.6 copies, write-protecting
both sides of every private mapping so that the first write breaks COW.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refmodel.vma import RefAddressSpace
from refmodel.vma_core import File, Mm, Vma, vm_enough_memory
from specs import pte as pt
from specs.errno import Errno
from specs.kernel import RSS_OF
from specs.vma import VM_ACCOUNT, VM_LOCKED, VM_LOCKONFAULT, VM_MAYWRITE, VM_SHARED, AddressSpace

if TYPE_CHECKING:
    from refmodel.kernel import Process, RefKernel

ENOMEM = -Errno.ENOMEM


def can_dup(space: AddressSpace) -> bool:
    """Whether fork can duplicate this address space."""
    return callable(getattr(space, "dup_mm", None)) or isinstance(space, RefAddressSpace)


def dup_address_space(space: AddressSpace) -> AddressSpace | int:
    """The child's address space, or -ENOMEM when a VM_ACCOUNT charge is refused."""
    dup = getattr(space, "dup_mm", None)
    if callable(dup):
        child: AddressSpace | int = dup()
        return child
    assert isinstance(space, RefAddressSpace)
    return dup_ref_space(space)


def dup_ref_space(parent: RefAddressSpace) -> RefAddressSpace | int:
    """dup_mm for the reference address space: the counters, then each VMA in order with
    VM_LOCKED and VM_LOCKONFAULT cleared, charging VM_ACCOUNT ones [4.6: kernel/fork.c
    dup_mmap].  [Simplified: vm_committed_as is per mm in the vma model, so the child's
    charge restarts from its own VM_ACCOUNT VMAs and the shmem objects it maps; each child
    VMA with an anon_vma gets a fresh one numbered in VMA order (anon_vma_clone's reuse of
    an idle anon_vma is not modelled).]"""
    old = parent.mm
    mm = Mm(pconf=old.pconf, total_vm=old.total_vm, data_vm=old.data_vm,
            exec_vm=old.exec_vm, stack_vm=old.stack_vm, locked_vm=0, committed=0,
            start_brk=old.start_brk, brk=old.brk, end_data=old.end_data,
            mmap_base=old.mmap_base, mmap_legacy_base=old.mmap_legacy_base,
            sysctl=dict(old.sysctl), next_file=old.next_file)
    files: dict[int, File] = {}
    for ident, file in old.files.items():
        files[ident] = File(ident=file.ident, fd=file.fd, size=file.size,
                            readable=file.readable, writable=file.writable,
                            shmem=file.shmem, charged=file.charged)
        mm.committed += file.charged
    mm.files = files
    mm.fds = {fd: files[file.ident] for fd, file in old.fds.items()}
    for vma in old.vmas:
        if vma.flags & VM_ACCOUNT and vm_enough_memory(mm, vma.pages):
            return ENOMEM
        anon_vma = mm.new_anon_vma() if vma.anon_vma is not None else None
        copy = Vma(start=vma.start, end=vma.end,
                   flags=vma.flags & ~(VM_LOCKED | VM_LOCKONFAULT), pgoff=vma.pgoff,
                   file=None if vma.file is None else files[vma.file.ident],
                   anon_vma=anon_vma)
        mm.link(copy)
    child = RefAddressSpace.__new__(RefAddressSpace)
    child.config = parent.config
    child.capabilities = parent.capabilities
    child.mm = mm
    child.next_fd = parent.next_fd
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
