"""The address-space contract: the Protocol an ``mm`` implementation satisfies and its views.

The normative text is ``specs/vma.md``; the IDs used here (``VMA-…``) are defined there.  One
implementation object is one process address space (``struct mm_struct``) plus the minimal
file table its file-backed mappings need.  Every system call returns exactly what the 4.6
system call returns, as a plain int: an address, 0, or a negative errno, so that an
implementation behind ctypes or cffi can satisfy the contract too.
"""

from __future__ import annotations

import enum
import functools
from typing import Final, Protocol, runtime_checkable

import attrs

from specs.errno import Errno
from specs.machine import PAGE_SHIFT, PAGE_SIZE, MachineConfig, derive_zones

# ---------------------------------------------------------------------------------------------
# Address-space constants [4.6: arch/x86/include/asm/processor.h, include/linux/mm.h]
# ---------------------------------------------------------------------------------------------

PAGE_MASK: Final = ~(PAGE_SIZE - 1)
#: Syscall arguments are C ``unsigned long``; the contract reduces every int argument modulo 2**64.
ULONG_MASK: Final = (1 << 64) - 1
TASK_SIZE: Final = (1 << 47) - PAGE_SIZE
STACK_TOP: Final = TASK_SIZE
TASK_UNMAPPED_BASE: Final = ((TASK_SIZE // 3) + PAGE_SIZE - 1) & PAGE_MASK
#: [4.6: arch/x86/mm/mmap.c] MIN_GAP (no stack randomisation) and MAX_GAP
MIN_GAP: Final = 128 << 20
MAX_GAP: Final = TASK_SIZE // 6 * 5
#: [4.6: include/linux/mm.h] USHRT_MAX - 5
DEFAULT_MAX_MAP_COUNT: Final = 65530
#: [4.6: security/Kconfig DEFAULT_MMAP_MIN_ADDR] the Kconfig default
MMAP_MIN_ADDR: Final = 4096
#: [4.6: fs/exec.c setup_arg_pages] the stack grows by this much at exec
STACK_EXPAND_AT_EXEC: Final = 128 << 10
#: [4.6: include/uapi/asm-generic/resource.h] RLIMIT_STACK 8 MiB, RLIMIT_MEMLOCK 64 KiB
DEFAULT_RLIMIT_STACK: Final = 8 << 20
DEFAULT_RLIMIT_MEMLOCK: Final = 64 << 10
RLIM_INFINITY: Final = ULONG_MASK
#: The program break of the modelled process (no ELF image is loaded) [customised]
DEFAULT_START_BRK: Final = 0x0000_0000_0100_0000
#: [4.6: arch/x86/kernel/sys_x86_64.c find_start_end] the MAP_32BIT window
MAP_32BIT_START: Final = 0x4000_0000
MAP_32BIT_END: Final = 0x8000_0000
#: File descriptors handed out by open_file start here (0, 1 and 2 are the std streams)
FIRST_FD: Final = 3

# ---------------------------------------------------------------------------------------------
# User ABI flags [4.6: include/uapi/asm-generic/mman-common.h, arch/x86/include/uapi/asm/mman.h]
# ---------------------------------------------------------------------------------------------

PROT_NONE: Final = 0x0
PROT_READ: Final = 0x1
PROT_WRITE: Final = 0x2
PROT_EXEC: Final = 0x4
PROT_SEM: Final = 0x8
PROT_GROWSDOWN: Final = 0x0100_0000
PROT_GROWSUP: Final = 0x0200_0000

MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_TYPE: Final = 0x0F
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_32BIT: Final = 0x40
MAP_GROWSDOWN: Final = 0x0100
MAP_DENYWRITE: Final = 0x0800
MAP_EXECUTABLE: Final = 0x1000
MAP_LOCKED: Final = 0x2000
MAP_NORESERVE: Final = 0x4000
MAP_POPULATE: Final = 0x8000
MAP_NONBLOCK: Final = 0x1_0000
MAP_STACK: Final = 0x2_0000
MAP_HUGETLB: Final = 0x4_0000
MAP_HUGE_SHIFT: Final = 26
MAP_HUGE_MASK: Final = 0x3F

MREMAP_MAYMOVE: Final = 1
MREMAP_FIXED: Final = 2

#: madvise advice the contract covers [4.6: include/uapi/asm-generic/mman-common.h]
MADV_DONTNEED: Final = 4
MADV_DONTFORK: Final = 10
MADV_DOFORK: Final = 11
MADV_ADVICE: Final = frozenset({MADV_DONTNEED, MADV_DONTFORK, MADV_DOFORK})

#: open_file modes [4.6: include/uapi/asm-generic/fcntl.h]
O_RDONLY: Final = 0
O_WRONLY: Final = 1
O_RDWR: Final = 2

# ---------------------------------------------------------------------------------------------
# vm_flags [4.6: include/linux/mm.h]
# ---------------------------------------------------------------------------------------------

VM_NONE: Final = 0x0
VM_READ: Final = 0x1
VM_WRITE: Final = 0x2
VM_EXEC: Final = 0x4
VM_SHARED: Final = 0x8
VM_MAYREAD: Final = 0x10
VM_MAYWRITE: Final = 0x20
VM_MAYEXEC: Final = 0x40
VM_MAYSHARE: Final = 0x80
VM_GROWSDOWN: Final = 0x100
VM_PFNMAP: Final = 0x400
VM_DENYWRITE: Final = 0x800
VM_LOCKED: Final = 0x2000
VM_IO: Final = 0x4000
#: [4.6: include/linux/mm.h] set by madvise(MADV_DONTFORK), cleared by MADV_DOFORK
VM_DONTCOPY: Final = 0x2_0000
VM_DONTEXPAND: Final = 0x4_0000
VM_LOCKONFAULT: Final = 0x8_0000
VM_ACCOUNT: Final = 0x10_0000
VM_NORESERVE: Final = 0x20_0000
VM_HUGETLB: Final = 0x40_0000
VM_SOFTDIRTY: Final = 0x800_0000
VM_MIXEDMAP: Final = 0x1000_0000
VM_STACK: Final = VM_GROWSDOWN
VM_SPECIAL: Final = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_LOCKED_CLEAR_MASK: Final = ~(VM_LOCKED | VM_LOCKONFAULT)
#: [4.6: arch/x86/include/asm/page_types.h] without READ_IMPLIES_EXEC
VM_DATA_DEFAULT_FLAGS: Final = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VM_STACK_FLAGS: Final = VM_GROWSDOWN | VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT

#: Flag names in the order /proc/<pid>/smaps prints them, for failure reports.
VM_FLAG_NAMES: Final = (
    (VM_READ, "rd"), (VM_WRITE, "wr"), (VM_EXEC, "ex"), (VM_SHARED, "sh"), (VM_MAYREAD, "mr"),
    (VM_MAYWRITE, "mw"), (VM_MAYEXEC, "me"), (VM_MAYSHARE, "ms"), (VM_GROWSDOWN, "gd"),
    (VM_PFNMAP, "pf"), (VM_DENYWRITE, "dw"), (VM_LOCKED, "lo"), (VM_IO, "io"),
    (VM_DONTCOPY, "dc"), (VM_DONTEXPAND, "de"), (VM_LOCKONFAULT, "lf"), (VM_ACCOUNT, "ac"),
    (VM_NORESERVE, "nr"),
    (VM_HUGETLB, "ht"), (VM_SOFTDIRTY, "sd"), (VM_MIXEDMAP, "mm"),
)

#: sysctl_overcommit_memory values [4.6: include/linux/mman.h]
OVERCOMMIT_GUESS: Final = 0
OVERCOMMIT_ALWAYS: Final = 1
OVERCOMMIT_NEVER: Final = 2

#: The sysctls ``set_sysctl`` accepts, with 4.6's defaults.
SYSCTL_DEFAULTS: Final[dict[str, int]] = {
    "max_map_count": DEFAULT_MAX_MAP_COUNT,
    "overcommit_memory": OVERCOMMIT_GUESS,
    "overcommit_ratio": 50,
    "overcommit_kbytes": 0,
}


def write_sysctl(table: dict[str, int], name: str, value: int) -> int:
    """A sysctl write into ``table`` (a space's own or a machine's ``VmCommit.sysctl``): 0, or
    -EINVAL for an unknown name or a refused value [4.6: kernel/sysctl.c: max_map_count >= 0,
    overcommit_memory 0..2].  Writing the ratio clears the kbytes and the other way round
    [4.6: mm/util.c overcommit_ratio_handler, overcommit_kbytes_handler].  [Simplified:
    negative ratios are refused.]"""
    if name not in SYSCTL_DEFAULTS or value < 0:
        return -Errno.EINVAL
    if name == "overcommit_memory" and value > OVERCOMMIT_NEVER:
        return -Errno.EINVAL
    table[name] = value
    if name == "overcommit_ratio":
        table["overcommit_kbytes"] = 0
    elif name == "overcommit_kbytes":
        table["overcommit_ratio"] = 0
    return 0


def page_align(value: int) -> int:
    """PAGE_ALIGN on an unsigned long: rounds up and wraps to 0 past 2**64."""
    return (value + PAGE_SIZE - 1) & PAGE_MASK & ULONG_MASK


def vm_pages(start: int, end: int) -> int:
    """Pages in [start, end)."""
    return (end - start) >> PAGE_SHIFT


# ---------------------------------------------------------------------------------------------
# Process configuration derived from the machine
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class ProcessConfig:
    """What one address space is booted with: rlimits, reserves and the memory the
    overcommit heuristic sees.  ``customised`` names every departure from 4.6's defaults."""

    totalram_pages: int
    #: NR_FREE_PAGES + NR_FILE_PAGES - NR_SHMEM + swap + NR_SLAB_RECLAIMABLE as GUESS reads it
    guess_free_pages: int
    totalreserve_pages: int
    #: [4.6: mm/util.c init_admin_reserve, init_user_reserve] computed from free memory at boot
    admin_reserve_kbytes: int
    user_reserve_kbytes: int
    total_swap_pages: int = 0
    rlimit_stack: int = DEFAULT_RLIMIT_STACK
    rlimit_memlock: int = DEFAULT_RLIMIT_MEMLOCK
    rlimit_as: int = RLIM_INFINITY
    mmap_min_addr: int = MMAP_MIN_ADDR
    start_brk: int = DEFAULT_START_BRK
    #: the exec-time stack VMA exists (False gives an empty address space)
    with_stack: bool = True
    customised: dict[str, str] = attrs.field(factory=dict, eq=False)

    @property
    def mmap_base(self) -> int:
        """[4.6: arch/x86/mm/mmap.c mmap_base] with randomisation off (rnd = 0)."""
        gap = min(max(self.rlimit_stack, MIN_GAP), MAX_GAP)
        return page_align(TASK_SIZE - gap)


def totalreserve_pages(machine: MachineConfig) -> int:
    """[4.6: mm/page_alloc.c calculate_totalreserve_pages] per zone: the largest lowmem
    reserve it keeps from higher zones plus its high watermark, capped at its size."""
    total = 0
    for zone in derive_zones(machine):
        reserve = max(zone.lowmem_reserve[zone.index:], default=0) + zone.watermark[2]
        total += min(reserve, zone.managed_pages)
    return total


@functools.lru_cache(maxsize=16)
def process_config(machine: MachineConfig) -> ProcessConfig:
    """The process every implementation boots on ``machine``.

    [Simplified: no program image, no page cache, swap or slab; every page of the machine
    counts as free for the reserves and the GUESS heuristic, and nothing ever consumes one.]
    """
    free_kbytes = machine.nr_pages << (PAGE_SHIFT - 10)
    return ProcessConfig(
        totalram_pages=machine.nr_pages,
        guess_free_pages=machine.nr_pages,
        totalreserve_pages=totalreserve_pages(machine),
        admin_reserve_kbytes=min(free_kbytes // 32, 1 << 13),
        user_reserve_kbytes=min(free_kbytes // 32, 1 << 17),
        customised={"start_brk": "no ELF image is loaded; the heap starts at 16 MiB"},
    )


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class VmaView:
    """One VMA [4.6: struct vm_area_struct], as exposed to the checkers."""

    start: int
    end: int
    #: vm_flags, every bit as 4.6 keeps it (VM_SOFTDIRTY and VM_ACCOUNT included)
    flags: int
    #: vm_pgoff, in pages
    pgoff: int
    #: identity of vm_file (FileView.ident), or None for a private anonymous VMA
    file: int | None
    #: identity of the anon_vma, numbered 1, 2, ... in creation order; None when there is none
    anon_vma: int | None

    @property
    def pages(self) -> int:
        """vma_pages()."""
        return (self.end - self.start) >> PAGE_SHIFT


@attrs.frozen
class FileView:
    """One struct file the address space knows: an opened file or a shared-anonymous shmem
    object.  ``ident`` numbers them 1, 2, ... in creation order, over both kinds."""

    ident: int
    #: the fd open_file returned; None for the shmem object of a MAP_SHARED|MAP_ANONYMOUS map
    fd: int | None
    size: int
    readable: bool
    writable: bool
    shmem: bool
    #: pages charged to vm_committed_as for this object (shmem without MAP_NORESERVE), else 0
    charged: int = 0


@attrs.frozen
class MmView:
    """A snapshot of the address space [4.6: struct mm_struct]; never changes once taken."""

    vmas: tuple[VmaView, ...]
    files: tuple[FileView, ...]
    map_count: int
    total_vm: int
    data_vm: int
    exec_vm: int
    stack_vm: int
    locked_vm: int
    #: vm_committed_as in pages, as this space charges it: its own charges when it keeps a
    #: private counter, the machine-wide count when it shares a ``VmCommit``
    committed: int
    start_brk: int
    brk: int
    mmap_base: int
    #: sysctls in force (SYSCTL_DEFAULTS names them)
    max_map_count: int
    overcommit_memory: int
    overcommit_ratio: int
    overcommit_kbytes: int

    def find(self, addr: int) -> VmaView | None:
        """find_vma on the snapshot: the lowest VMA ending above addr (binary search)."""
        lo, hi = 0, len(self.vmas)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.vmas[mid].end > addr:
                hi = mid
            else:
                lo = mid + 1
        return self.vmas[lo] if lo < len(self.vmas) else None


@attrs.define(eq=False)
class VmCommit:
    """The machine-wide half of overcommit accounting [4.6: mm/util.c vm_committed_as,
    sysctl_overcommit_memory, sysctl_overcommit_ratio, sysctl_overcommit_kbytes].

    A standalone address space keeps one of its own; a composed kernel creates one per
    machine and hands it to every space it creates, so that every charge and every
    overcommit test sees the whole machine, as in 4.6.  Mutable on purpose: it is shared.
    """

    #: pages committed (vm_committed_as)
    pages: int = 0
    #: the sysctls of SYSCTL_DEFAULTS, in force for every space sharing this record
    sysctl: dict[str, int] = attrs.Factory(lambda: dict(SYSCTL_DEFAULTS))


class Capability(enum.Enum):
    """Optional parts of the contract; a check that needs one an implementation lacks is
    reported as skipped, never as failed."""

    #: non-fixed placement (get_unmapped_area, mremap moves) identical to 4.6
    EXACT_PLACEMENT = "exact_placement"
    #: touch(): the VMA-level effects of a fault (anon_vma_prepare, stack expansion)
    TOUCH = "touch"
    #: open_file() and file-backed mappings
    FILES = "files"
    #: vm_committed and VM_ACCOUNT charging under the three overcommit modes
    OVERCOMMIT = "overcommit"
    #: dup_mm(): the VMA half of fork
    FORK = "fork"
    #: the factory's ``commit=`` keyword and exit_mmap(): spaces share one machine-wide
    #: ``VmCommit`` (``Shared commit`` in specs/vma.md)
    SHARED_COMMIT = "shared_commit"
    #: madvise() with MADV_DONTNEED, MADV_DONTFORK and MADV_DOFORK (``MadviseSpace``)
    MADVISE = "madvise"


ALL_CAPABILITIES: Final = frozenset(Capability)


@runtime_checkable
class AddressSpace(Protocol):
    """One process address space, driven through its system calls.

    Every int argument is reduced modulo 2**64 first, as the syscall ABI would (so -1 is
    0xffff_ffff_ffff_ffff); ``fd`` is reduced modulo 2**32.
    """

    config: MachineConfig
    capabilities: frozenset[Capability]

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """sys_mmap: the mapped address or -errno (VMA-R1..)."""
        ...

    def munmap(self, addr: int, length: int) -> int:
        """sys_munmap: 0 or -errno."""
        ...

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """sys_mprotect: 0 or -errno (may have changed a prefix of the range on -ENOMEM)."""
        ...

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """sys_mremap: the (new) address or -errno."""
        ...

    def brk(self, addr: int) -> int:
        """sys_brk: the new break, or the old one when refused; never an errno."""
        ...

    def touch(self, addr: int, write: bool = True) -> int:
        """The VMA-level effects of a user fault at addr: 0, or -EFAULT where 4.6 would send
        SIGSEGV (the hook the fault issue replaces with real faults)."""
        ...

    def dup_mm(self) -> AddressSpace | int:
        """The VMA half of fork: a new address space of the same class holding the child's
        copy, or -ENOMEM with this one unchanged (``dup_mm()`` in specs/vma.md)."""
        ...

    def open_file(self, size: int, mode: int = O_RDWR) -> int:
        """Open a regular file of ``size`` bytes: its fd, or -EINVAL."""
        ...

    def set_sysctl(self, name: str, value: int) -> int:
        """Write one of SYSCTL_DEFAULTS' sysctls: 0, or -EINVAL out of range."""
        ...

    def find_vma(self, addr: int) -> VmaView | None:
        """find_vma: the lowest VMA with end > addr, or None."""
        ...

    def view(self) -> MmView:
        """A snapshot of every VMA and counter."""
        ...


@runtime_checkable
class SharedCommitSpace(AddressSpace, Protocol):
    """An address space with Capability.SHARED_COMMIT (``Shared commit`` in specs/vma.md)."""

    def exit_mmap(self) -> int:
        """[4.6: mm/mmap.c exit_mmap] unmap everything and release every charge this mm
        made; the space is empty afterwards.  Returns 0."""
        ...


@runtime_checkable
class MadviseSpace(AddressSpace, Protocol):
    """An address space with Capability.MADVISE (``madvise`` in specs/vma.md)."""

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """sys_madvise for the advice in MADV_ADVICE: 0 or -errno; the VMAs before a refused
        piece keep the change, and a hole in the range gives -ENOMEM after the rest changed."""
        ...


class AddressSpaceFactory(Protocol):
    """``module:factory`` plug-ins are callables of this shape.  A factory of spaces with
    Capability.SHARED_COMMIT also accepts ``commit=VmCommit`` (``SharedCommitFactory``)."""

    def __call__(self, config: MachineConfig) -> AddressSpace: ...


class SharedCommitFactory(Protocol):
    """The factory of a space with Capability.SHARED_COMMIT: ``commit`` is the record it
    charges and reads its sysctls from (None: a private one)."""

    def __call__(self, config: MachineConfig, commit: VmCommit | None = None) -> AddressSpace:
        ...
