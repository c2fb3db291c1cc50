"""The composed-kernel contract: processes, CPUs, page contents, faults, fork, COW and exit.

The normative text is ``specs/fault.md`` (faults, COW, rmap counts, copy_to/from_user) and
``specs/process.md`` (processes, fork, exit, context switches).  A kernel is composed from
the subsystem contracts (a ``specs.buddy.PageAllocator``, ``specs.pagetable.PageTables``,
``specs.tlb.Tlb`` and one ``specs.vma.AddressSpace`` per mm); it adds what only shows up
when they meet: page contents, the page cache, the zero page, mapcounts and RSS counters.
Results are plain values, as in every contract: a pid, a byte count, ``bytes``, a negative
errno, or a :class:`FaultResult` where a user access ends in a signal or VM_FAULT_OOM.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from typing import Final, Protocol, runtime_checkable

import attrs

from specs.buddy import PageAllocator
from specs.machine import MachineConfig
from specs.oom import OomContext, OomResult, Task
from specs.pagetable import PageTables
from specs.tlb import Tlb
from specs.vma import AddressSpace

# -- signals and si_codes [4.6: include/uapi/asm-generic/signal.h, siginfo.h] -----------------
SIGBUS: Final = 7
SIGKILL: Final = 9
SIGSEGV: Final = 11
#: [4.6: include/uapi/asm-generic/siginfo.h] si_code values
SEGV_MAPERR: Final = 1
SEGV_ACCERR: Final = 2
BUS_ADRERR: Final = 2
#: force_sig from a general-protection fault (a non-canonical address) [4.6: SI_KERNEL]
SI_KERNEL: Final = 0x80

# -- handle_mm_fault's result bits [4.6: include/linux/mm.h VM_FAULT_*] -----------------------
VM_FAULT_OOM: Final = 0x0001
VM_FAULT_SIGBUS: Final = 0x0002
VM_FAULT_MAJOR: Final = 0x0004
VM_FAULT_WRITE: Final = 0x0008
VM_FAULT_SIGSEGV: Final = 0x0040
VM_FAULT_NOPAGE: Final = 0x0100
VM_FAULT_ERROR: Final = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

#: [4.6: mm/memory.c fault_around_bytes] 64 KiB: a read fault on a file maps up to 16 pages
FAULT_AROUND_PAGES: Final = 16


class RssMember(enum.IntEnum):
    """[4.6: include/linux/mm_types.h NR_MM_COUNTERS] the RSS counters, in 4.6's order
    (MM_SWAPENTS is always 0: there is no swap)."""

    MM_FILEPAGES = 0
    MM_ANONPAGES = 1
    MM_SWAPENTS = 2
    MM_SHMEMPAGES = 3


class PageKind(enum.Enum):
    """What a user page is, which decides its RSS counter [4.6: include/linux/mm.h
    mm_counter]."""

    ANON = "anon"
    FILE = "file"
    SHMEM = "shmem"


RSS_OF: Final = {PageKind.ANON: RssMember.MM_ANONPAGES, PageKind.FILE: RssMember.MM_FILEPAGES,
                 PageKind.SHMEM: RssMember.MM_SHMEMPAGES}


class Capability(enum.Enum):
    """Optional parts of the contract.  A check needing one a kernel lacks is skipped."""

    #: fork() is implemented (the address-space part can duplicate an mm)
    FORK = "fork"
    #: every part is the reference model's or declares exact placement and flushes, so
    #: lockstep comparison with refmodel (pfns included) is meaningful
    EXACT = "exact"
    #: fail_page_alloc() injects page-allocation failures [4.6: mm/page_alloc.c
    #: should_fail_alloc_page]
    FAIL_PAGE_ALLOC = "fail_page_alloc"
    #: the OOM killer and its reaper (``specs/oom.md``): a genuine allocation failure or a
    #: user fault with VM_FAULT_OOM runs out_of_memory; oom_score_adj, credentials,
    #: oom_score() and oom_reap() are implemented, and the views carry ``oom``
    OOM = "oom"
    #: one machine-wide vm_committed_as and machine-wide vm sysctls: every address space
    #: shares the kernel's ``specs.vma.VmCommit`` (the vma part has SHARED_COMMIT),
    #: set_sysctl() is implemented and the view carries ``committed`` [4.6: mm/util.c
    #: vm_committed_as, __vm_enough_memory; kernel/sysctl.c vm_table]
    OVERCOMMIT = "overcommit"


ALL_CAPABILITIES: Final = frozenset(Capability)


@attrs.frozen
class FaultResult:
    """A user access (or a copy) that did not complete: the signal the task would get, or
    VM_FAULT_OOM (signal 0) where 4.6 runs pagefault_out_of_memory and retries."""

    signal: int
    si_code: int
    #: the faulting address (si_addr)
    addr: int
    #: handle_mm_fault's bits (0 when the fault never got that far)
    vm_fault: int = 0
    #: bytes already transferred before the fault (a prefix of the request)
    done: int = 0


@attrs.frozen
class PageView:
    """One user page the kernel knows [4.6: struct page of an anon, file or shmem page]."""

    pfn: int
    kind: PageKind
    #: page_count(): references from page tables, the page cache and nothing else
    refcount: int
    #: page_mapcount(): the number of PTEs mapping it (the raw _mapcount plus one)
    mapcount: int
    #: page->index: the file page number, or linear_page_index for an anon page
    index: int
    #: the inode of a page-cache page, None for an anon page
    inode: int | None
    #: True when the page is in its inode's page cache
    cached: bool


@attrs.frozen
class InodeView:
    """One file (or shmem object) and its page cache."""

    ident: int
    size: int
    shmem: bool
    #: (page index, pfn), ascending index
    cache: tuple[tuple[int, int], ...]


@attrs.frozen
class OomState:
    """What the OOM killer keeps per process (``specs/oom.md``, "The OOM killer in the
    composed kernel")."""

    #: signal->oom_score_adj and signal->oom_score_adj_min (inherited at fork)
    oom_score_adj: int = 0
    oom_score_adj_min: int = 0
    #: the credentials the OOM killer and the /proc writes test (inherited at fork)
    cap_sys_admin: bool = False
    cap_sys_resource: bool = False
    #: SIGKILL pending: the process never runs user code again
    sigkill: bool = False
    #: TIF_MEMDIE: an OOM victim still holding its memory
    memdie: bool = False
    #: the OOM reaper has unmapped its memory (a model fact; 4.6.0 keeps no such flag)
    reaped: bool = False


@attrs.define
class OomTask:
    """The mutable per-process OOM state a composed kernel keeps; :class:`OomState` is its
    view.  One record for every implementation, like ``specs.vma.VmCommit``: what it holds
    and how fork passes it on are the contract, not a design choice."""

    oom_score_adj: int = 0
    oom_score_adj_min: int = 0
    cap_sys_admin: bool = False
    cap_sys_resource: bool = False
    sigkill: bool = False
    memdie: bool = False
    reaped: bool = False

    def inherit(self) -> OomTask:
        """The child's state at fork: the adjustment, its minimum and the credentials carry
        over; no signal or flag does.  [4.6: kernel/fork.c copy_signal; kernel/cred.c
        copy_creds]"""
        return OomTask(oom_score_adj=self.oom_score_adj,
                       oom_score_adj_min=self.oom_score_adj_min,
                       cap_sys_admin=self.cap_sys_admin, cap_sys_resource=self.cap_sys_resource)

    def view(self) -> OomState:
        return OomState(oom_score_adj=self.oom_score_adj,
                        oom_score_adj_min=self.oom_score_adj_min,
                        cap_sys_admin=self.cap_sys_admin, cap_sys_resource=self.cap_sys_resource,
                        sigkill=self.sigkill, memdie=self.memdie, reaped=self.reaped)


@attrs.frozen
class OomEvent:
    """One out_of_memory call: what called it, the task descriptors it decided on (as they
    were at that moment) and what it decided.  Checkers recompute the decision from
    ``tasks`` and compare ``tasks`` with the views before the step."""

    #: "alloc" (__alloc_pages_may_oom) or "pagefault" (pagefault_out_of_memory)
    trigger: str
    #: the failed allocation's gfp mask and order (0 and 0 for "pagefault")
    gfp_mask: int
    order: int
    ctx: OomContext
    tasks: tuple[Task, ...]
    result: OomResult


@attrs.frozen
class OomView:
    """The OOM killer's machine-wide state."""

    #: totalram_pages + total_swap_pages: every managed page (there is no swap)
    totalpages: int
    #: every out_of_memory call since boot, oldest first
    events: tuple[OomEvent, ...] = ()
    #: oom_reaper_list, the next task to reap first (wake_oom_reaper pushes at the head)
    reap_queue: tuple[int, ...] = ()
    #: the panic() message once an OOM panicked (the model keeps running), else None
    panic: str | None = None


@attrs.frozen
class ProcessView:
    """One task: its mm and the mm's counters."""

    pid: int
    #: parent pid, 0 for the first process
    ppid: int
    #: the page-table mm id (specs.pagetable ids)
    mm: int
    #: the mm id the TLB knows it by
    tlb_mm: int
    #: get_mm_counter for each RssMember, in RssMember order
    rss: tuple[int, int, int, int]
    #: the CPU it runs on, or -1
    cpu: int
    #: address-space file ident -> kernel inode
    files: tuple[tuple[int, int], ...]
    #: the OOM killer's state; None for a kernel without Capability.OOM
    oom: OomState | None = None

    @property
    def get_mm_rss(self) -> int:
        """FILEPAGES + ANONPAGES + SHMEMPAGES [4.6: include/linux/mm.h get_mm_rss]."""
        return (self.rss[RssMember.MM_FILEPAGES] + self.rss[RssMember.MM_ANONPAGES]
                + self.rss[RssMember.MM_SHMEMPAGES])


@attrs.frozen
class KernelView:
    """A snapshot of the composed state the kernel adds to its parts' own views."""

    processes: tuple[ProcessView, ...]
    #: pid running on each CPU, -1 for idle
    running: tuple[int, ...]
    #: every user page, ascending pfn (the zero page is not listed)
    pages: tuple[PageView, ...]
    inodes: tuple[InodeView, ...]
    zero_pfn: int
    #: pfns a user access reached that held no user page (only a stale TLB entry gets there)
    stray: tuple[int, ...] = ()
    #: the OOM killer's state; None for a kernel without Capability.OOM
    oom: OomView | None = None
    #: vm_committed_as in pages, machine-wide; None for a kernel without Capability.OVERCOMMIT
    committed: int | None = None

    @functools.cached_property
    def by_pfn(self) -> dict[int, PageView]:
        """pfn -> page."""
        return {page.pfn: page for page in self.pages}

    @functools.cached_property
    def by_pid(self) -> dict[int, ProcessView]:
        """pid -> process."""
        return {proc.pid: proc for proc in self.processes}


@runtime_checkable
class Kernel(Protocol):
    """One machine running processes.  ``pid`` names a live process; ``cpu`` a CPU, and the
    user accesses and copies run as the process on that CPU."""

    config: MachineConfig
    capabilities: frozenset[Capability]
    pages: PageAllocator
    tables: PageTables
    tlb: Tlb

    def spawn(self) -> int:
        """A freshly exec'd process (stack only): its pid, or -ENOMEM."""
        ...

    def fork(self, pid: int) -> int:
        """The child's pid, or -errno (-ENOMEM when memory runs out; nothing leaks)."""
        ...

    def exit(self, pid: int) -> int:
        """Tear the process down: 0 or -errno."""
        ...

    def switch(self, cpu: int, pid: int) -> int:
        """Run pid on cpu (-1: the idle kernel thread); 0 or -errno."""
        ...

    def read(self, cpu: int, addr: int, n: int) -> bytes | FaultResult | int:
        """User-mode loads of n bytes: the bytes, the fault, or -EINVAL."""
        ...

    def write(self, cpu: int, addr: int, data: bytes) -> int | FaultResult:
        """User-mode stores: len(data), the fault, or -EINVAL."""
        ...

    def copy_from_user(self, cpu: int, addr: int, n: int) -> tuple[int, bytes] | int:
        """(bytes not copied, the kernel buffer with its uncopied tail zeroed), or -EINVAL."""
        ...

    def copy_to_user(self, cpu: int, addr: int, data: bytes) -> int:
        """Bytes not copied (0: all), or -EINVAL."""
        ...

    def open_file(self, pid: int, size: int, mode: int = 2, data: bytes = b"") -> int:
        """Open a new regular file whose first bytes are ``data`` (zeros after): fd or -errno."""
        ...

    def mmap(self, pid: int, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """sys_mmap in pid's mm."""
        ...

    def munmap(self, pid: int, addr: int, length: int) -> int:
        """sys_munmap in pid's mm; the pages go back, the TLBs are flushed."""
        ...

    def mprotect(self, pid: int, addr: int, length: int, prot: int) -> int:
        """sys_mprotect in pid's mm; PTEs follow the new protection."""
        ...

    def mremap(self, pid: int, old_addr: int, old_len: int, new_len: int, flags: int = 0,
               new_addr: int = 0) -> int:
        """sys_mremap in pid's mm; PTEs move with the mapping."""
        ...

    def madvise(self, pid: int, addr: int, length: int, advice: int) -> int:
        """sys_madvise in pid's mm (``specs.vma.MADV_ADVICE``); MADV_DONTNEED also zaps the
        pages of every piece it accepted (``specs/fault.md``).  -ENOSYS when the address
        space lacks ``specs.vma.Capability.MADVISE``."""
        ...

    def brk(self, pid: int, addr: int) -> int:
        """sys_brk in pid's mm."""
        ...

    def space(self, pid: int) -> AddressSpace:
        """The process's address space (for its views; drive it through the kernel)."""
        ...

    def file_contents(self, inode: int, offset: int, n: int) -> bytes:
        """What a read(2) of the file would return: page cache over the disk contents."""
        ...

    def page_contents(self, pfn: int) -> bytes:
        """The 4096 bytes of a user page (or the zero page)."""
        ...

    def view(self) -> KernelView:
        """A snapshot of processes, pages and page caches."""
        ...

    def fail_page_alloc(self, times: int, space: int = 0) -> int:
        """Arm page-allocation fault injection like 4.6's fail_page_alloc (probability
        100, interval 1, no ignored flags): once ``space`` pages are spent, the next
        ``times`` allocations (-1: every one) fail, except __GFP_NOFAIL ones; ``times`` 0
        disarms.  0, or -EINVAL for times < -1 or space < 0.  Needs FAIL_PAGE_ALLOC."""
        ...

    def set_oom_score_adj(self, pid: int, value: int) -> int:
        """The process writes its own /proc/<pid>/oom_score_adj: 0, -EINVAL (outside
        -1000..1000), -EACCES (below its minimum without CAP_SYS_RESOURCE) or -ESRCH.
        Needs OOM."""
        ...

    def set_credentials(self, pid: int, cap_sys_admin: bool, cap_sys_resource: bool) -> int:
        """Give the process these capabilities (commit_creds): 0 or -ESRCH.  Needs OOM."""
        ...

    def oom_score(self, pid: int) -> int:
        """/proc/<pid>/oom_score, or -ESRCH.  Needs OOM."""
        ...

    def oom_reap(self) -> int:
        """The OOM reaper takes the task at the head of its queue and reaps it: that pid,
        or 0 when the queue is empty.  Needs OOM."""
        ...

    def set_sysctl(self, name: str, value: int) -> int:
        """Write one of ``specs.vma.SYSCTL_DEFAULTS``' vm sysctls for the whole machine: every
        live address space and every one created later runs under it.  0, -EINVAL out of
        range (as ``AddressSpace.set_sysctl``), -ENOSYS without OVERCOMMIT."""
        ...


#: ``factory(config)`` for buddy and vma, ``factory(config, pages)`` for page tables,
#: ``factory(config, tables)`` for the TLB: the parts a kernel is composed from.
PartFactory = Callable[..., object]


class KernelFactory(Protocol):
    """What composes a kernel: the machine and a factory per part it should use instead of
    refmodel's (keys ``buddy``, ``pagetable``, ``tlb``, ``vma``)."""

    def __call__(self, config: MachineConfig,
                 parts: Mapping[str, PartFactory] | None = None) -> Kernel: ...

