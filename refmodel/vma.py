"""The reference address space: ``RefAddressSpace`` adapts 4.6's functions to the
``AddressSpace`` contract of ``specs/vma.py``.

The machinery lives in ``refmodel/vma_core.py`` (lookup, merge, split, unmap, placement,
accounting) and the system calls in ``refmodel/vma_calls.py``.  This module boots the process
(the exec-time stack and the empty heap) and reduces arguments to their C types.
"""

from __future__ import annotations

from typing import Final

from refmodel import vma_calls, vma_madvise
from refmodel.vma_core import Mm, Vma, dup_mmap, exit_mmap, expand_downwards, vm_enough_memory
from specs.errno import Errno
from specs.machine import PAGE_SHIFT, PAGE_SIZE, MachineConfig
from specs.vma import (
    ALL_CAPABILITIES,
    FIRST_FD,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    STACK_EXPAND_AT_EXEC,
    STACK_TOP,
    ULONG_MASK,
    VM_SOFTDIRTY,
    VM_STACK_FLAGS,
    Capability,
    MmView,
    ProcessConfig,
    VmaView,
    VmCommit,
    process_config,
    write_sysctl,
)

EINVAL: Final = -Errno.EINVAL


def exec_stack(mm: Mm) -> None:
    """What exec leaves: one page of stack at STACK_TOP, then grown by 128 KiB
    [4.6: fs/exec.c __bprm_mm_init, setup_arg_pages; mm/mmap.c insert_vm_struct].
    [Simplified: the arguments fit in the first page and the stack is not randomised.]"""
    start = STACK_TOP - PAGE_SIZE
    vma = Vma(start=start, end=STACK_TOP, flags=VM_SOFTDIRTY | VM_STACK_FLAGS,
              pgoff=start >> PAGE_SHIFT, file=None)
    vm_enough_memory(mm, 1)
    mm.link(vma)
    mm.total_vm = mm.stack_vm = 1
    rlim_stack = mm.pconf.rlimit_stack & ~(PAGE_SIZE - 1)
    if PAGE_SIZE + STACK_EXPAND_AT_EXEC > rlim_stack:
        base = vma.end - rlim_stack
    else:
        base = vma.start - STACK_EXPAND_AT_EXEC
    expand_downwards(mm, vma, base)


def boot(pconf: ProcessConfig, commit: VmCommit | None = None) -> Mm:
    """A freshly exec'd process: the stack, and a break at start_brk with no heap yet;
    ``commit`` is the machine-wide counter to charge (None: a private one)."""
    mm = Mm(pconf=pconf, start_brk=pconf.start_brk, brk=pconf.start_brk,
            end_data=pconf.start_brk, mmap_base=pconf.mmap_base,
            commit=commit if commit is not None else VmCommit())
    if pconf.with_stack:
        exec_stack(mm)
    return mm


def _ul(value: int) -> int:
    return value & ULONG_MASK


class RefAddressSpace:
    """The reference implementation of ``specs.vma.AddressSpace``."""

    def __init__(self, config: MachineConfig, pconf: ProcessConfig | None = None,
                 commit: VmCommit | None = None) -> None:
        self.config = config
        self.capabilities: frozenset[Capability] = ALL_CAPABILITIES
        self.mm = boot(pconf if pconf is not None else process_config(config), commit)
        #: the counter is the machine's (a composed kernel's), not this space's own
        self.shared = commit is not None
        self.next_fd = FIRST_FD

    # -- system calls ----------------------------------------------------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        return vma_calls.sys_mmap(self.mm, _ul(addr), _ul(length), _ul(prot), _ul(flags),
                                  _ul(fd), _ul(offset))

    def munmap(self, addr: int, length: int) -> int:
        return vma_calls.sys_munmap(self.mm, _ul(addr), _ul(length))

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        return vma_calls.sys_mprotect(self.mm, _ul(addr), _ul(length), _ul(prot))

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        return vma_calls.sys_mremap(self.mm, _ul(old_addr), _ul(old_len), _ul(new_len),
                                    _ul(flags), _ul(new_addr))

    def brk(self, addr: int) -> int:
        return vma_calls.sys_brk(self.mm, _ul(addr))

    def madvise(self, addr: int, length: int, advice: int) -> int:
        return vma_madvise.sys_madvise(self.mm, _ul(addr), _ul(length), _ul(advice))

    def touch(self, addr: int, write: bool = True) -> int:
        return vma_calls.touch(self.mm, _ul(addr), bool(write))

    def dup_mm(self) -> RefAddressSpace | int:
        """[4.6: kernel/fork.c dup_mm, dup_mmap] the child's address space: the VMA copies,
        the counters, the layout, the sysctls and the file table (fork copies the fds)."""
        mm = dup_mmap(self.mm, self.shared)
        if isinstance(mm, int):
            return mm
        child = type(self).__new__(type(self))
        child.config = self.config
        child.capabilities = self.capabilities
        child.mm = mm
        child.shared = self.shared
        child.next_fd = self.next_fd
        return child

    def exit_mmap(self) -> int:
        """[4.6: mm/mmap.c exit_mmap] the space empties and its charges are released."""
        exit_mmap(self.mm)
        return 0

    # -- set-up ----------------------------------------------------------------------------------

    def open_file(self, size: int, mode: int = O_RDWR) -> int:
        if size < 0 or mode not in (O_RDONLY, O_WRONLY, O_RDWR):
            return EINVAL
        fd = self.next_fd
        self.next_fd += 1
        file = self.mm.new_file(fd=fd, size=size, readable=mode != O_WRONLY,
                                writable=mode != O_RDONLY, shmem=False)
        self.mm.fds[fd] = file
        return fd

    def set_sysctl(self, name: str, value: int) -> int:
        """``write_sysctl`` on the sysctls in force (the machine's when shared)."""
        return write_sysctl(self.mm.sysctl, name, value)

    # -- views -----------------------------------------------------------------------------------

    def find_vma(self, addr: int) -> VmaView | None:
        vma = self.mm.find_vma(_ul(addr))
        return None if vma is None else vma.view()

    def view(self) -> MmView:
        mm = self.mm
        return MmView(
            vmas=tuple(vma.view() for vma in mm.vmas),
            files=tuple(mm.files[ident].view() for ident in sorted(mm.files)),
            map_count=mm.map_count, total_vm=mm.total_vm, data_vm=mm.data_vm,
            exec_vm=mm.exec_vm, stack_vm=mm.stack_vm, locked_vm=mm.locked_vm,
            committed=mm.committed, start_brk=mm.start_brk, brk=mm.brk,
            mmap_base=mm.mmap_base, max_map_count=mm.sysctl["max_map_count"],
            overcommit_memory=mm.sysctl["overcommit_memory"],
            overcommit_ratio=mm.sysctl["overcommit_ratio"],
            overcommit_kbytes=mm.sysctl["overcommit_kbytes"])

